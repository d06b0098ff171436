"""Screening, consent, enrollment and randomization pages: parse -> service -> commit -> render.

The order of steps is the services' to enforce (screen -> eligible -> consent and enroll -> randomize); the
pages only offer the next valid step, so a user cannot even try them in the wrong order by accident.
"""

from __future__ import annotations

import datetime as dt
import json

from flask import Blueprint, g, redirect, render_template, request, url_for
from sqlalchemy import select
from sqlalchemy.orm import Session
from wtforms import SelectField, StringField, TextAreaField
from wtforms.widgets import DateInput

from trialmgr.db.models_trial import Participant, Screening
from trialmgr.domain import crf
from trialmgr.domain.derive import compute_derived
from trialmgr.domain.errors import ConsentMissing, DomainError, ValidationFailed
from trialmgr.domain.protocol import Protocol, Visit
from trialmgr.domain.vocab import ParticipantStatus, Role, ScreeningOutcome
from trialmgr.services import enrollment, randomization, trials, visits
from trialmgr.state import state
from trialmgr.web.access import allow
from trialmgr.web.db import read_session, transaction
from trialmgr.web.forms import DomainForm, PageForm, form_class, option

bp = Blueprint("enrollment", __name__, url_prefix="/t/<trial>")

ENROLLERS = enrollment.ENROLLERS
RANDOMIZERS = randomization.RANDOMIZERS
READERS = (Role.COORDINATOR, Role.INVESTIGATOR, Role.ASSESSOR, Role.MONITOR, Role.ADMIN)
SCREENING_READERS = (Role.COORDINATOR, Role.INVESTIGATOR, Role.MONITOR)

ERROR_TITLES = {
    403: "Not allowed",
    404: "Not found",
    409: "Cannot be done now",
    422: "Not accepted",
}


# -- shared with the randomization pages ----------------------------------------------------------------

def domain_error_page(exc: DomainError):
    """A refused action as a page in plain words (the API maps the same errors in api/errors.py)."""
    from trialmgr.api.errors import status_for

    status = status_for(exc)
    return render_template("error.html", title=ERROR_TITLES.get(status, "Not accepted"),
                           text=_capital(exc.message), code=status), status


def _capital(text: str) -> str:
    text = text.strip()
    return (text[:1].upper() + text[1:]) if text else text


bp.register_error_handler(DomainError, domain_error_page)


def protocol(trial: str) -> Protocol:
    return trials.current_protocol(read_session(), trial)


def blinded(proto: Protocol) -> bool:
    return proto.is_blinded(g.actor.role.value)


def arm_label(proto: Protocol, code: str) -> str:
    try:
        return proto.arm(code).label
    except KeyError:
        return code


def page_context(trial: str) -> dict:
    s = read_session()
    return {"trial_row": trials.get_trial(s, trial), "protocol": trials.current_protocol(s, trial)}


def next_visit(proto: Protocol, start: dt.date) -> tuple[Visit, dt.date, dt.date] | None:
    """The first visit after randomization and its window, counted in days from the randomization date."""
    later = [v for v in proto.visits if v.day > 0]
    if not later:
        return None
    v = min(later, key=lambda v: v.day)
    return (v, start + dt.timedelta(days=v.day + v.window_start), start + dt.timedelta(days=v.day + v.window_end))


NO_VISIT_DUE = {
    ParticipantStatus.WITHDRAWN: "none: the participant has withdrawn",
    ParticipantStatus.LOST: "none: the participant is lost to follow-up",
    ParticipantStatus.COMPLETED: "none: the participant has completed the study",
}


def visit_outlook(s: Session, p: Participant) -> dict:
    """The participant page's "Next visit" and "Overdue" lines (services.visits.outlook), in words."""
    due = visits.outlook(s, p)
    return {"next": due.next, "overdue": due.overdue,
            "none": NO_VISIT_DUE.get(p.status, "none: every scheduled visit is done or marked missed")}


def visible_sites(trial: str) -> list[tuple[str, str]]:
    """(code, name) of the active sites the acting user works at (every site for roles not bound to one)."""
    actor = g.actor
    return [(s.code, f"{s.code} — {s.name}") for s in trials.sites(read_session(), trial)
            if s.active and actor.sees_site(s.code)]


# -- forms ----------------------------------------------------------------------------------------------

def screening_form(proto: Protocol, trial: str) -> DomainForm:
    extra = {
        "site": SelectField("Site", choices=[], validate_choice=False),
        "screening_date": StringField("Screening date", widget=DateInput(),
                                      default=lambda: enrollment.today().isoformat(),
                                      description="The day the questions were asked (today unless entered "
                                                  "later from paper)."),
    }
    form = form_class(proto.screening_form, extra=extra)()
    sites = visible_sites(trial)
    choices = [option(code, name) for code, name in sites]
    form.site.choices = choices if len(choices) == 1 else [option("", "— choose a site —"), *choices]
    return form


class ConsentForm(PageForm):
    consent_date = StringField("Date informed consent was signed", widget=DateInput())
    consent_version = StringField("Consent form version", render_kw={"maxlength": 40},
                                  description="As printed on the signed consent form.")


class DeclineForm(PageForm):
    reason = TextAreaField("Why the candidate declined", render_kw={"maxlength": 500})


# -- screening ---------------------------------------------------------------------------------------------

@bp.route("/screen", methods=["GET", "POST"])
@allow(*ENROLLERS)
def screen(trial: str):
    proto = protocol(trial)
    trials.require_open(read_session(), trial)
    form = screening_form(proto, trial)
    if request.method == "POST" and form.validate():
        try:
            with transaction() as s:
                res = enrollment.screen(s, g.actor, trial, form.answers(), site=form.site.data,
                                        screening_date=form.screening_date.data)
                screening_id = res.screening.id
        except ValidationFailed as exc:
            form.apply_errors(exc.errors)
        else:
            return redirect(url_for(".screening", trial=trial, screening_id=screening_id))
    status = 422 if form.all_errors else 200
    return render_template("enrollment/screen.html", form=form, **page_context(trial)), status


def _answers_summary(proto: Protocol, row: Screening) -> list[tuple[str, str]]:
    """(label, value in words) for each stored answer, then the derived values (age ...)."""
    stored = json.loads(row.answers)
    form = proto.screening_form
    values, out = {}, []
    for spec in form.fields:
        if spec.id not in stored:
            continue
        try:
            values[spec.id] = crf.deserialize_value(spec, stored[spec.id])
        except ValueError:  # a value stored under an older protocol version: shown as it was kept
            out.append((spec.label, stored[spec.id]))
            continue
        unit = f" {spec.unit}" if spec.unit and spec.type in ("integer", "decimal") else ""
        out.append((spec.label, crf.display_value(spec, values[spec.id]) + unit))
    try:
        derived = compute_derived(form.derived, values, reference_date=row.screening_date)
    except (ValueError, ArithmeticError):
        derived = {}
    for d in form.derived:
        if derived.get(d.id) is not None:
            out.append((f"{d.label} (worked out)", crf.display_value(None, derived[d.id])
                        + (f" {d.unit}" if d.unit else "")))
    return out


def _screening_page(trial: str, screening_id: int, *, consent: ConsentForm | None = None,
                    decline: DeclineForm | None = None, status: int = 200):
    s = read_session()
    row = enrollment.get_screening(s, g.actor, trial, screening_id)
    ctx = page_context(trial)
    proto = ctx["protocol"]
    can_act = g.actor.role in ENROLLERS and row.outcome is ScreeningOutcome.ELIGIBLE
    if can_act and consent is None:
        consent = ConsentForm(formdata=None, consent_date=enrollment.today().isoformat(),
                              consent_version=proto.consent_version)
    if can_act and decline is None:
        decline = DeclineForm(formdata=None)
    return render_template(
        "enrollment/screening.html", row=row, failures=json.loads(row.failures),
        answers=_answers_summary(proto, row), participant=enrollment.participant_for_screening(s, row.id),
        can_act=can_act, consent=consent, decline=decline, **ctx), status


@bp.get("/screenings/<int:screening_id>")
@allow(*SCREENING_READERS)
def screening(trial: str, screening_id: int):
    return _screening_page(trial, screening_id)


@bp.post("/screenings/<int:screening_id>/enroll")
@allow(*ENROLLERS)
def enroll(trial: str, screening_id: int):
    form = ConsentForm()
    if form.validate():
        try:
            with transaction() as s:
                participant = enrollment.enroll(s, g.actor, trial, screening_id,
                                                consent_date=(form.consent_date.data or "").strip() or None,
                                                consent_version=form.consent_version.data)
                code = participant.code
        except (ValidationFailed, ConsentMissing) as exc:
            if getattr(exc, "errors", None):
                form.apply_errors(exc.errors)
            else:
                form.add_error(_capital(exc.message))
        else:
            return redirect(url_for(".participant", trial=trial, code=code))
    return _screening_page(trial, screening_id, consent=form, status=422)


@bp.post("/screenings/<int:screening_id>/decline")
@allow(*ENROLLERS)
def decline(trial: str, screening_id: int):
    form = DeclineForm()
    if form.validate():
        try:
            with transaction() as s:
                enrollment.decline(s, g.actor, trial, screening_id, form.reason.data or "")
        except ValidationFailed as exc:
            form.apply_errors(exc.errors)
        else:
            return redirect(url_for(".screening", trial=trial, screening_id=screening_id))
    return _screening_page(trial, screening_id, decline=form, status=422)


@bp.get("/screenings")
@allow(*SCREENING_READERS)
def screenings(trial: str):
    s = read_session()
    site, outcome = request.args.get("site", ""), request.args.get("outcome", "")
    errors = {}
    try:
        rows = enrollment.list_screenings(s, g.actor, trial, site=site or None, outcome=outcome or None)
    except ValidationFailed as exc:
        rows, errors = [], exc.errors
    codes = dict(s.execute(select(Participant.screening_id, Participant.code).where(
        Participant.trial_id == trial, Participant.screening_id.in_([r.id for r in rows]))).all())
    return render_template("enrollment/screenings.html", rows=rows, codes=codes, loads=json.loads,
                           sites=visible_sites(trial), outcomes=[o.value for o in ScreeningOutcome],
                           site=site, outcome=outcome, errors=errors, **page_context(trial))


# -- participants ---------------------------------------------------------------------------------------

PAGE_SIZE = 100  # rows per page of the participant list: a trial may have thousands

@bp.get("/participants")
@allow(*READERS)
def participants(trial: str):
    s = read_session()
    site, status = request.args.get("site", ""), request.args.get("status", "")
    page = max(1, request.args.get("page", 1, type=int))
    errors = {}
    try:
        total = enrollment.count_participants(s, g.actor, trial, site=site or None, status=status or None)
        pages = max(1, -(-total // PAGE_SIZE))
        page = min(page, pages)
        rows = enrollment.list_participants(s, g.actor, trial, site=site or None, status=status or None,
                                            limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    except ValidationFailed as exc:
        rows, errors, total, pages = [], exc.errors, 0, 1
    return render_template("enrollment/participants.html", rows=rows, sites=visible_sites(trial),
                           statuses=[x.value for x in ParticipantStatus], site=site, status=status,
                           errors=errors, total=total, page=page, pages=pages, first=(page - 1) * PAGE_SIZE + 1,
                           **page_context(trial))


@bp.get("/participants/<code>")
@allow(*READERS)
def participant(trial: str, code: str):
    s = read_session()
    p = enrollment.get_participant(s, g.actor, trial, code)
    ctx = page_context(trial)
    proto = ctx["protocol"]
    allocation = randomization.allocation_of(s, p)
    screening_row = s.get(Screening, p.screening_id)
    outlook = visit_outlook(s, p) if allocation is not None else None
    show_arm = allocation is not None and not blinded(proto)
    return render_template(
        "enrollment/participant.html", p=p, strata=randomization.strata_json(p),
        arm=arm_label(proto, allocation.arm) if show_arm else None, allocation=allocation,
        randomized_on=allocation.randomized_at.date() if allocation is not None else None, outlook=outlook,
        answers=_answers_summary(proto, screening_row) if screening_row is not None else [],
        can_randomize=g.actor.role in RANDOMIZERS and p.status is ParticipantStatus.ENROLLED,
        can_unblind=g.actor.role is Role.INVESTIGATOR and allocation is not None, **ctx)


@bp.get("/participants/<code>/randomize")
@allow(*RANDOMIZERS)
def randomize_confirm(trial: str, code: str):
    p = enrollment.get_participant(read_session(), g.actor, trial, code)
    if p.status is not ParticipantStatus.ENROLLED:
        return redirect(url_for(".participant", trial=trial, code=code))
    return render_template("enrollment/randomize_confirm.html", p=p, error=None, **page_context(trial))


@bp.post("/participants/<code>/randomize")
@allow(*RANDOMIZERS)
def randomize(trial: str, code: str):
    from trialmgr.domain.errors import DataLocked, ListExhausted, NoAllocationList, NotEligible

    try:
        with transaction() as s:
            randomization.randomize(s, g.actor, state().settings, trial, code)
    except (ListExhausted, NoAllocationList, DataLocked, NotEligible) as exc:
        p = enrollment.get_participant(read_session(), g.actor, trial, code)
        return render_template("enrollment/randomize_confirm.html", p=p, error=_capital(exc.message),
                               **page_context(trial)), 409
    return redirect(url_for(".randomized", trial=trial, code=code))


@bp.get("/participants/<code>/randomized")
@allow(*READERS)
def randomized(trial: str, code: str):
    s = read_session()
    p = enrollment.get_participant(s, g.actor, trial, code)
    allocation = randomization.allocation_of(s, p)
    if allocation is None:
        return redirect(url_for(".participant", trial=trial, code=code))
    ctx = page_context(trial)
    proto = ctx["protocol"]
    on = allocation.randomized_at.date()
    arm = None if blinded(proto) else arm_label(proto, allocation.arm)
    return render_template("enrollment/randomized.html", p=p, arm=arm, on=on, visit=next_visit(proto, on), **ctx)

