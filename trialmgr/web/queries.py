"""Data query pages: the list (filtered by status, participant and site, with open counts), and one query with
its answer form (site staff) and close form (monitor, investigator). Each query links back to its field."""

from __future__ import annotations

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for
from wtforms import TextAreaField

from trialmgr.db.models_crf import FormRecord, VisitRecord
from trialmgr.domain.errors import Conflict, DataLocked, DomainError, ValidationFailed
from trialmgr.domain.vocab import Role
from trialmgr.services import crf, crf_overview, queries, trials
from trialmgr.web.access import allow
from trialmgr.web.crf import form_url, may_view
from trialmgr.web.db import read_session, transaction
from trialmgr.web.enrollment import domain_error_page, visible_sites
from trialmgr.web.forms import PageForm
from trialmgr.web.monitor import AUDIT_READERS

bp = Blueprint("queries", __name__, url_prefix="/t/<trial>/queries")
bp.register_error_handler(DomainError, domain_error_page)

READERS = (Role.COORDINATOR, Role.INVESTIGATOR, Role.ASSESSOR, Role.MONITOR, Role.ADMIN)
STATUSES = ("open", "answered", "closed")


class AnswerForm(PageForm):
    answer = TextAreaField("Your answer", render_kw={"maxlength": queries.MAX_TEXT},
                           description="Explain the value, or correct it on the form (with a reason for change) "
                                       "and say so here.")


class CloseForm(PageForm):
    note = TextAreaField("Closing note (optional)", render_kw={"maxlength": 500})


def _visible(rows: list[crf_overview.QueryRow], trial: str) -> list[crf_overview.QueryRow]:
    """Outcome assessors see only the queries on forms they may open (see crf.may_view)."""
    if g.actor.role is not Role.ASSESSOR:
        return rows
    proto = trials.current_protocol(read_session(), trial)
    return [r for r in rows if may_view(g.actor.role, proto.form(r.record.form_id))]


def _labels(trial: str) -> dict[tuple[str, str], str]:
    """(form id, field id) -> field label, derived scores included."""
    proto = trials.current_protocol(read_session(), trial)
    out = {}
    for f in proto.forms:
        out.update({(f.id, s.id): s.label for s in f.fields})
        out.update({(f.id, d.id): d.label for d in f.derived})
    return out


@bp.get("")
@allow(*READERS)
def index(trial: str):
    s = read_session()
    status, participant, site = (request.args.get(k, "").strip() for k in ("status", "participant", "site"))
    errors = {}
    try:
        rows = crf_overview.query_rows(s, g.actor, trial, status=status, participant=participant, site=site)
    except ValidationFailed as exc:
        rows, errors = [], exc.errors
    rows = _visible(rows, trial)
    by_site, by_participant = crf_overview.open_counts(_visible(crf_overview.query_rows(s, g.actor, trial), trial))
    proto = trials.current_protocol(s, trial)
    return render_template("queries/index.html", rows=rows, by_site=by_site, by_participant=by_participant,
                           statuses=STATUSES, status=status, participant=participant, site=site,
                           sites=visible_sites(trial), errors=errors, labels=_labels(trial),
                           titles={f.id: f.title for f in proto.forms}, trial_row=trials.get_trial(s, trial))


def _detail(trial: str, query_id: int, *, answer: AnswerForm | None = None, close: CloseForm | None = None,
            status: int = 200):
    s = read_session()
    q, p = queries.get_query(s, g.actor, trial, query_id)
    record = s.get(FormRecord, q.record_id)
    visit = s.get(VisitRecord, record.visit_id) if record.visit_id else None
    proto = trials.current_protocol(s, trial)
    form = proto.form(record.form_id)
    if not may_view(g.actor.role, form):
        abort(404)
    visit_code = visit.code if visit else None
    view = crf.read_form(s, g.actor, p, form.id, visit_code, instance=record.instance)
    spec = form.field(q.field_id) if q.field_id in form.field_ids else None
    label = spec.label if spec else _labels(trial).get((form.id, q.field_id), q.field_id)
    words = crf_overview.value_words(spec, view.values.get(q.field_id), view.missing.get(q.field_id))
    role = g.actor.role
    is_open = q.status != "closed"
    if answer is None and is_open and role in queries.ANSWERERS:
        answer = AnswerForm(formdata=None)
    if close is None and is_open and role in queries.RAISERS:
        close = CloseForm(formdata=None)
    field_url = form_url(trial, p.code, form.id, visit_code, record.instance) + f"#{q.field_id}"
    history = url_for("monitor.history", trial=trial, participant=p.code,
                      entity=crf.entity_id(form.id, visit_code, record.instance), field=q.field_id) \
        if role in AUDIT_READERS else None
    # A refusal (the query was closed meanwhile) is shown even when its form no longer is.
    refused = [e for f in (answer, close) if f is not None for _, e in f.all_errors] if not is_open else []
    return render_template("queries/detail.html", q=q, p=p, form_def=form, visit=visit, record=record, label=label,
                           words=words, field_url=field_url, history=history, refused=refused,
                           answer=answer if is_open and role in queries.ANSWERERS else None,
                           close=close if is_open and role in queries.RAISERS else None,
                           trial_row=trials.get_trial(s, trial)), status


@bp.get("/<int:query_id>")
@allow(*READERS)
def detail(trial: str, query_id: int):
    return _detail(trial, query_id)


def _refused(form: PageForm, exc: DomainError) -> None:
    form.add_error(exc.message[:1].upper() + exc.message[1:].rstrip(".") + ".")


@bp.post("/<int:query_id>/answer")
@allow(*queries.ANSWERERS)
def answer(trial: str, query_id: int):
    form = AnswerForm()
    _detail_guard(trial, query_id)
    if form.validate():
        try:
            with transaction() as s:
                queries.answer_query(s, g.actor, trial, query_id, form.answer.data or "")
        except ValidationFailed as exc:
            form.apply_errors(exc.errors)
            return _detail(trial, query_id, answer=form, status=422)
        except (Conflict, DataLocked) as exc:
            _refused(form, exc)
            return _detail(trial, query_id, answer=form, status=409)
        flash(f"Query {query_id} answered.", "info")
        return redirect(url_for(".detail", trial=trial, query_id=query_id))
    return _detail(trial, query_id, answer=form, status=400)


@bp.post("/<int:query_id>/close")
@allow(*queries.RAISERS)
def close(trial: str, query_id: int):
    form = CloseForm()
    if form.validate():
        try:
            with transaction() as s:
                queries.close_query(s, g.actor, trial, query_id, form.note.data)
        except (Conflict, DataLocked) as exc:
            _refused(form, exc)
            return _detail(trial, query_id, close=form, status=409)
        flash(f"Query {query_id} closed.", "info")
        return redirect(url_for(".detail", trial=trial, query_id=query_id))
    return _detail(trial, query_id, close=form, status=400)


def _detail_guard(trial: str, query_id: int) -> None:
    """An assessor may not answer a query on a form they may not see (404, as for reading it)."""
    if g.actor.role is not Role.ASSESSOR:
        return
    s = read_session()
    q, _ = queries.get_query(s, g.actor, trial, query_id)
    record = s.get(FormRecord, q.record_id)
    if not may_view(g.actor.role, trials.current_protocol(s, trial).form(record.form_id)):
        abort(404)

