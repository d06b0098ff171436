"""A participant's visits on the participant page (a timeline drawn by ``crf/_timeline.html``), adding an
unscheduled visit and marking a visit missed.

The participant page itself belongs to web/enrollment.py; the timeline is reached from its template through
the ``visit_timeline(p)`` template global, so the two pages stay independent.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from wtforms import StringField, TextAreaField
from wtforms.widgets import DateInput

from trialmgr.db.models_trial import Participant
from trialmgr.domain.errors import Conflict, DataLocked, DomainError, ValidationFailed
from trialmgr.domain.protocol import FormDef
from trialmgr.domain.schedule import VisitStatus
from trialmgr.domain.vocab import Role
from trialmgr.services import crf, crf_overview, enrollment, trials, visits
from trialmgr.web.access import allow
from trialmgr.web.crf import may_view
from trialmgr.web.db import read_session, transaction
from trialmgr.web.enrollment import domain_error_page
from trialmgr.web.forms import PageForm

bp = Blueprint("visits", __name__, url_prefix="/t/<trial>/participants/<code>/visits")
bp.register_error_handler(DomainError, domain_error_page)

MISSED_MARKERS = (Role.COORDINATOR, Role.INVESTIGATOR)
FINAL = (VisitStatus.COMPLETED, VisitStatus.COMPLETED_OUT_OF_WINDOW, VisitStatus.MISSED, VisitStatus.NOT_EXPECTED)


class UnscheduledForm(PageForm):
    label = StringField("Why the visit took place", render_kw={"maxlength": 120},
                        description="For example: follow-up of an adverse event.")
    visit_date = StringField("Visit date", widget=DateInput())


class MissedForm(PageForm):
    reason = TextAreaField("Why the visit did not take place", render_kw={"maxlength": 500})


# -- the timeline on the participant page ---------------------------------------------------------------------

@dataclass(frozen=True)
class TimelineForm:
    form: FormDef
    status: str  # not_started | draft | complete
    info: crf_overview.RecordInfo | None
    url: str | None  # None when the acting role may not open it


@dataclass(frozen=True)
class TimelineVisit:
    view: visits.VisitView
    forms: list[TimelineForm]
    missed_url: str | None

    @property
    def record(self):
        return self.view.record


@dataclass(frozen=True)
class AnytimeSection:
    form: FormDef
    entries: list[crf_overview.AnytimeEntry]
    new_url: str | None


@bp.app_template_global("visit_timeline")
def visit_timeline(p: Participant) -> dict:
    s = read_session()
    role = g.actor.role
    trial, code = p.trial_id, p.code
    proto = trials.current_protocol(s, trial)
    infos = crf_overview.record_infos(s, p)
    rows = []
    for v in visits.list_visits(s, p):
        forms = []
        for form_id, status in v.forms:
            fd = proto.form(form_id)
            url = url_for("crf.visit_form", trial=trial, code=code, visit=v.record.code, form=form_id) \
                if may_view(role, fd) else None
            forms.append(TimelineForm(fd, status, infos.get((v.record.id, form_id, 1)), url))
        missed = url_for("visits.missed", trial=trial, code=code, visit=v.record.code) \
            if role in MISSED_MARKERS and v.status not in FINAL and not p.locked else None
        rows.append(TimelineVisit(v, forms, missed))
    anytime = []
    if role is not Role.ASSESSOR:
        entries = crf_overview.anytime_entries(s, proto, p)
        for fd in proto.anytime_forms:
            new = url_for("crf.new_anytime_form", trial=trial, code=code, form=fd.id) \
                if role in crf.EDITORS and not p.locked else None
            anytime.append(AnytimeSection(fd, entries.get(fd.id, []), new))
    can_add = role in visits.VISIT_EDITORS and not p.locked
    return {"visits": rows, "anytime": anytime, "today": visits.today(),
            "add_form": UnscheduledForm(formdata=None, visit_date=visits.today().isoformat()) if can_add else None,
            "hidden_anytime": role is Role.ASSESSOR}


# -- unscheduled visits ---------------------------------------------------------------------------------------

@bp.route("/new", methods=["GET", "POST"])
@allow(*visits.VISIT_EDITORS)
def add_unscheduled(trial: str, code: str):
    p = enrollment.get_participant(read_session(), g.actor, trial, code)
    form = UnscheduledForm(formdata=None, visit_date=visits.today().isoformat()) \
        if request.method == "GET" else UnscheduledForm()
    status = 200
    if request.method == "POST" and form.validate():
        try:
            with transaction() as s:
                wp = enrollment.get_participant(s, g.actor, trial, code, lock=True)
                row = visits.add_unscheduled(s, g.actor, wp, form.label.data or "",
                                             (form.visit_date.data or "").strip())
                new_code = row.code
        except ValidationFailed as exc:
            form.apply_errors(exc.errors)
            status = 422
        except DataLocked as exc:
            form.add_error(exc.message[:1].upper() + exc.message[1:] + ".")
            status = 409
        else:
            flash(f"Unscheduled visit {new_code} added.", "info")
            return redirect(url_for("enrollment.participant", trial=trial, code=code) + "#visits-h")
    return render_template("crf/unscheduled.html", p=p, form=form,
                           trial_row=trials.get_trial(read_session(), trial)), status


# -- missed visits --------------------------------------------------------------------------------------------

@bp.route("/<visit>/missed", methods=["GET", "POST"])
@allow(*MISSED_MARKERS)
def missed(trial: str, code: str, visit: str):
    s = read_session()
    p = enrollment.get_participant(s, g.actor, trial, code)
    row = visits.get_visit(s, p, visit)
    form = MissedForm(formdata=None) if request.method == "GET" else MissedForm()
    status = 200
    if request.method == "POST" and form.validate():
        try:
            with transaction() as ws:
                wp = enrollment.get_participant(ws, g.actor, trial, code, lock=True)
                visits.mark_missed(ws, g.actor, wp, visit, form.reason.data or "")
        except ValidationFailed as exc:
            form.apply_errors(exc.errors)
            status = 422
        except (Conflict, DataLocked) as exc:
            form.add_error(exc.message[:1].upper() + exc.message[1:] + ".")
            status = 409
        else:
            flash(f"Visit {visit} recorded as missed.", "info")
            return redirect(url_for("enrollment.participant", trial=trial, code=code) + "#visits-h")
    return render_template("crf/missed.html", p=p, visit=row, window=visits.window_of(row), form=form,
                           trial_row=trials.get_trial(s, trial)), status
