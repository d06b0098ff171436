"""Case report form pages: one visit form or one any-time form instance, entered by site staff, read and
source-verified by monitors, queried field by field. parse -> service -> commit -> render.

The fields come from the protocol through web/forms.py; every rule is the domain's (services/crf.py). A page
that fails keeps everything that was typed. A saved form carries its version in a hidden field so that two
people editing the same form cannot silently overwrite each other (the service raises Conflict).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for
from wtforms import HiddenField, StringField, TextAreaField
from wtforms.widgets import DateInput

from trialmgr.db.models_crf import Query
from trialmgr.domain.errors import Conflict, DataLocked, DomainError, PermissionDenied, ReasonRequired, ValidationFailed
from trialmgr.domain.protocol import FieldSpec, FormDef
from trialmgr.domain.vocab import Role
from trialmgr.services import crf, crf_overview, enrollment, queries, trials, visits
from trialmgr.web.access import allow
from trialmgr.web.db import read_session, transaction
from trialmgr.web.enrollment import READERS, domain_error_page
from trialmgr.web.forms import DomainForm, PageForm, fill, form_class, sentence
from trialmgr.web.monitor import AUDIT_READERS

bp = Blueprint("crf", __name__, url_prefix="/t/<trial>/participants/<code>")
bp.register_error_handler(DomainError, domain_error_page)

EDITORS = crf.EDITORS
VISIT_FORM = "/visits/<visit>/forms/<form>"
ANYTIME_FORM = "/forms/<form>/<int:instance>"


# -- who may see what --------------------------------------------------------------------------------------

def may_view(role: Role | None, form: FormDef) -> bool:
    """Blinded outcome assessors see and enter outcome forms only: a session log or an adverse event report
    can tell which treatment a participant receives."""
    return role is not Role.ASSESSOR or form.outcome


def _formdef(trial: str, form_id: str, *, anytime: bool) -> FormDef:
    proto = trials.current_protocol(read_session(), trial)
    try:
        form = proto.form(form_id)
    except KeyError:
        abort(404)
    if (form.kind == "anytime") != anytime:
        abort(404)
    if not may_view(g.actor.role, form):
        raise PermissionDenied(f"outcome assessors see and enter outcome forms only; {form.title} is not one")
    return form


def form_url(trial: str, code: str, form_id: str, visit_code: str | None, instance: int | None) -> str:
    if visit_code:
        return url_for("crf.visit_form", trial=trial, code=code, visit=visit_code, form=form_id)
    if instance is None:
        return url_for("crf.new_anytime_form", trial=trial, code=code, form=form_id)
    return url_for("crf.anytime_form", trial=trial, code=code, form=form_id, instance=instance)


# -- forms --------------------------------------------------------------------------------------------------

class QueryForm(PageForm):
    field_id = HiddenField()
    text = TextAreaField("Query text", render_kw={"maxlength": queries.MAX_TEXT})


def _has_saved(view: crf.FormView) -> bool:
    return view.record is not None and bool(view.values or view.missing)


def _form_cls(form: FormDef, view: crf.FormView) -> type[DomainForm]:
    extra = {"form_version": HiddenField()}
    if form.kind != "anytime":
        extra["visit_date"] = StringField(
            "Visit date", widget=DateInput(),
            description="The day the assessments were done; it decides whether the visit was within its window.")
    return form_class(form, missing_codes=True, reason_for_change=_has_saved(view), extra=extra)


def _blank_form(form: FormDef, view: crf.FormView) -> DomainForm:
    page = _form_cls(form, view)(formdata=None)
    fill(page, view.values, view.missing)
    page.form_version.data = str(view.record.version) if view.record else "0"
    if view.visit is not None:
        page.visit_date.data = (view.visit.visit_date or visits.today()).isoformat()
    return page


# -- what the template draws ----------------------------------------------------------------------------------

@dataclass
class FieldRow:
    """One protocol field (or derived score) with its saved value, history link and queries."""

    id: str
    label: str
    unit: str | None
    words: str  # the saved value in words; "" when nothing is saved
    history: str | None
    queries: list[Query] = field(default_factory=list)
    now_saved: str | None = None  # after a conflict: the value someone else saved, when it differs

    @property
    def open_queries(self) -> list[Query]:
        return [q for q in self.queries if q.status != "closed"]


def _rows(trial: str, code: str, form: FormDef, view: crf.FormView,
          entity: str) -> tuple[list[FieldRow], list[FieldRow]]:
    by_field = crf_overview.queries_by_field(read_session(), view.record) if view.record else {}
    history = g.actor.role in AUDIT_READERS and view.record is not None

    def row(fid: str, label: str, unit: str | None, spec: FieldSpec | None) -> FieldRow:
        words = crf_overview.value_words(spec, view.values.get(fid), view.missing.get(fid))
        link = url_for("monitor.history", trial=trial, participant=code, entity=entity, field=fid) \
            if history and words else None
        return FieldRow(fid, label, unit, words, link, by_field.get(fid, []))

    fields = [row(s.id, s.label, s.unit if s.type in ("integer", "decimal") else None, s) for s in form.fields]
    derived = [row(d.id, d.label, d.unit, None) for d in form.derived]
    return fields, derived


def _render(trial: str, code: str, form: FormDef, view: crf.FormView, *, page: DomainForm | None = None,
            status: int = 200, conflict: dict | None = None, query_form: QueryForm | None = None):
    s = read_session()
    p = enrollment.get_participant(s, g.actor, trial, code)
    visit_code = view.visit.code if view.visit else None
    instance = view.record.instance if view.record else None
    entity = crf.entity_id(form.id, visit_code, instance or 1)
    fields, derived = _rows(trial, code, form, view, entity)
    role = g.actor.role
    can_edit = role in EDITORS and not p.locked
    if can_edit and page is None:
        page = _blank_form(form, view)
    if conflict:
        for r in fields:
            if r.id in conflict["differs"]:
                r.now_saved = r.words or "nothing"
    here = form_url(trial, code, form.id, visit_code, instance)
    return render_template(
        "crf/form.html", p=p, form_def=form, view=view, page=page if can_edit else None,
        fields=fields, fields_by_id={r.id: r for r in fields}, derived=derived, here=here,
        visit_status=visits.visit_status(view.visit, participant=p) if view.visit else None,
        window=visits.window_of(view.visit) if view.visit else None,
        can_verify=role is Role.MONITOR and view.record is not None and view.record.status == "complete"
        and view.record.sdv_at is None,
        can_query=role in queries.RAISERS and view.record is not None,
        conflict=conflict, query_form=query_form, entity=entity,
        trial_row=trials.get_trial(s, trial)), status


# -- reading and saving -------------------------------------------------------------------------------------

def _read(trial: str, code: str, form: FormDef, visit_code: str | None, instance: int | None) -> crf.FormView:
    s = read_session()
    p = enrollment.get_participant(s, g.actor, trial, code)
    return crf.read_form(s, g.actor, p, form.id, visit_code, instance=instance)


def _version(text: str | None) -> int | None:
    try:
        return int((text or "").strip())
    except ValueError:
        return None


def _reason_message(form: FormDef, exc: ReasonRequired) -> str:
    _, _, ids = exc.message.partition(": ")
    labels = []
    for fid in (i.strip() for i in ids.split(",") if i.strip()):
        try:
            labels.append(form.field(fid).label)
        except KeyError:
            labels.append(fid)
    changed = f" (you changed {', '.join(labels)})" if labels else ""
    return f"Reason for change is required to change saved values{changed}. Say why; it is kept in the audit trail."


def _save(trial: str, code: str, form: FormDef, visit_code: str | None, instance: int | None):
    view = _read(trial, code, form, visit_code, instance)
    page = _form_cls(form, view)()
    if not page.validate():  # the CSRF token; every other rule is the domain's
        return _render(trial, code, form, view, page=page, status=400)
    status = "complete" if request.form.get("action") == "complete" else "draft"
    try:
        with transaction() as s:
            p = enrollment.get_participant(s, g.actor, trial, code, lock=True)
            res = crf.save_form(
                s, g.actor, p, form.id, page.answers(), visit_code=visit_code, instance=instance,
                missing=page.missing(), status=status, reason=page.reason_text() or None,
                visit_date=page.visit_date.data if visit_code else None,
                expected_version=_version(page.form_version.data) if instance is not None else None)
            saved = res.record.instance, res.record.status, res.queries_opened, res.deviation_created
    except ValidationFailed as exc:
        errors = dict(exc.errors)
        if "status" in errors:
            page.add_error(sentence("Not saved as complete", errors.pop("status")))
        page.apply_errors(errors)
        return _render(trial, code, form, view, page=page, status=422)
    except ReasonRequired as exc:
        if page.reason_for_change:
            page.change_reason.errors = [*page.change_reason.errors, _reason_message(form, exc)]
        else:
            page.add_error(_reason_message(form, exc))
        return _render(trial, code, form, view, page=page, status=422)
    except Conflict as exc:
        if view.record is not None and view.record.version != _version(page.form_version.data):
            # Someone saved since the page was opened: keep what this user typed, show what is saved now,
            # and take the new version so that saving again (deliberately) replaces it.
            page.form_version.data = str(view.record.version)
            conflict = {"message": f"{form.title} was changed by {view.record.updated_by} after you opened it, "
                                   "so your entries were not saved. They are kept below; the value saved now is "
                                   "shown under each field where it differs from yours. Check them, then save "
                                   "again to replace them.",
                        "differs": _differences(form, page, view)}
            return _render(trial, code, form, view, page=page, status=409, conflict=conflict)
        page.add_error(_capital(exc.message) + ". Nothing was saved.")
        return _render(trial, code, form, view, page=page, status=409)
    except DataLocked as exc:
        page.add_error(_capital(exc.message) + ". Nothing was saved.")
        return _render(trial, code, form, view, page=page, status=409)
    new_instance, new_status, opened, deviation = saved
    flash(f"{form.title} saved as {'complete' if new_status == 'complete' else 'a draft'}.", "info")
    if opened:
        flash(f"An automatic check opened {len(opened)} quer{'y' if len(opened) == 1 else 'ies'} on this form; "
              "please review.", "warning")
    if deviation:
        flash("The visit was done outside its window: a protocol deviation was recorded.", "warning")
    return redirect(form_url(trial, code, form.id, visit_code, new_instance if form.kind == "anytime" else None))


def _differences(form: FormDef, page: DomainForm, view: crf.FormView) -> set[str]:
    """Fields whose saved value differs from what was typed (compared as text, so "5" and "5.0" differ: the
    page only points at them, it decides nothing)."""
    typed, missing = page.answers(), page.missing()
    out = set()
    for spec in form.fields:
        value = typed.get(spec.id)
        text = ";".join(value) if isinstance(value, list) else (str(value) if value is not None else None)
        if (text, missing.get(spec.id)) != (view.values.get(spec.id), view.missing.get(spec.id)):
            out.add(spec.id)
    return out


def _capital(text: str) -> str:
    text = text.strip().rstrip(".")
    return text[:1].upper() + text[1:]


# -- routes: visit forms --------------------------------------------------------------------------------------

@bp.get(VISIT_FORM)
@allow(*READERS)
def visit_form(trial: str, code: str, visit: str, form: str):
    fd = _formdef(trial, form, anytime=False)
    return _render(trial, code, fd, _read(trial, code, fd, visit, 1))


@bp.post(VISIT_FORM)
@allow(*EDITORS)
def save_visit_form(trial: str, code: str, visit: str, form: str):
    return _save(trial, code, _formdef(trial, form, anytime=False), visit, 1)


# -- routes: any-time forms -----------------------------------------------------------------------------------

@bp.get("/forms/<form>")
@allow(*EDITORS)
def new_anytime_form(trial: str, code: str, form: str):
    fd = _formdef(trial, form, anytime=True)
    return _render(trial, code, fd, _read(trial, code, fd, None, None))


@bp.post("/forms/<form>")
@allow(*EDITORS)
def create_anytime_form(trial: str, code: str, form: str):
    return _save(trial, code, _formdef(trial, form, anytime=True), None, None)


@bp.get(ANYTIME_FORM)
@allow(*READERS)
def anytime_form(trial: str, code: str, form: str, instance: int):
    fd = _formdef(trial, form, anytime=True)
    return _render(trial, code, fd, _read(trial, code, fd, None, instance))


@bp.post(ANYTIME_FORM)
@allow(*EDITORS)
def save_anytime_form(trial: str, code: str, form: str, instance: int):
    return _save(trial, code, _formdef(trial, form, anytime=True), None, instance)


# -- source data verification and queries --------------------------------------------------------------------

def _verify(trial: str, code: str, form: FormDef, visit_code: str | None, instance: int):
    try:
        with transaction() as s:
            p = enrollment.get_participant(s, g.actor, trial, code)
            crf.verify_source(s, g.actor, p, form.id, visit_code, instance=instance)
    except (Conflict, DataLocked) as exc:
        flash(_capital(exc.message) + ".", "error")
    else:
        flash(f"{form.title} marked as source-verified.", "info")
    return redirect(form_url(trial, code, form.id, visit_code, instance if form.kind == "anytime" else None))


@bp.post(VISIT_FORM + "/verify")
@allow(Role.MONITOR)
def verify_visit_form(trial: str, code: str, visit: str, form: str):
    return _verify(trial, code, _formdef(trial, form, anytime=False), visit, 1)


@bp.post(ANYTIME_FORM + "/verify")
@allow(Role.MONITOR)
def verify_anytime_form(trial: str, code: str, form: str, instance: int):
    return _verify(trial, code, _formdef(trial, form, anytime=True), None, instance)


def _raise_query(trial: str, code: str, form: FormDef, visit_code: str | None, instance: int):
    qf = QueryForm()
    view = _read(trial, code, form, visit_code, instance)
    if view.record is None:
        abort(404)
    fid = (qf.field_id.data or "").strip()
    if fid not in form.field_ids and fid not in {d.id for d in form.derived}:
        abort(400)
    label = form.field(fid).label if fid in form.field_ids else next(d.label for d in form.derived if d.id == fid)
    try:
        with transaction() as s:
            p = enrollment.get_participant(s, g.actor, trial, code)
            record = crf.read_form(s, g.actor, p, form.id, visit_code, instance=instance).record
            q = queries.open_query(s, g.actor, p, record, fid, qf.text.data or "")
            qid = q.id
    except ValidationFailed as exc:
        for key, message in exc.errors.items():
            qf.text.errors = [*qf.text.errors, sentence(f"Query text on {label}" if key == "text" else key, message)]
        return _render(trial, code, form, view, status=422, query_form=qf)
    except DataLocked as exc:
        qf.text.errors = [_capital(exc.message) + "; no query can be raised."]
        return _render(trial, code, form, view, status=409, query_form=qf)
    flash(f"Query {qid} raised on {label}.", "info")
    return redirect(form_url(trial, code, form.id, visit_code, instance if form.kind == "anytime" else None)
                    + f"#{fid}")


@bp.post(VISIT_FORM + "/queries")
@allow(*queries.RAISERS)
def query_visit_form(trial: str, code: str, visit: str, form: str):
    return _raise_query(trial, code, _formdef(trial, form, anytime=False), visit, 1)


@bp.post(ANYTIME_FORM + "/queries")
@allow(*queries.RAISERS)
def query_anytime_form(trial: str, code: str, form: str, instance: int):
    return _raise_query(trial, code, _formdef(trial, form, anytime=True), None, instance)
