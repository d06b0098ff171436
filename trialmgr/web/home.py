"""Landing: each role reaches its own home page, with the work and the state of the trial that role needs.

Blinding: every page asks protocol.is_blinded(role) before it shows anything arm-related; blinded roles get
the CONSORT diagram with the arms pooled and no balance table. Site-bound roles see their sites only.
"""

from __future__ import annotations

from flask import Blueprint, g, redirect, render_template, session, url_for
from sqlalchemy import select
from sqlalchemy.orm import selectinload
from werkzeug.routing import BuildError

from trialmgr import clock
from trialmgr.db.models_accounts import ProtocolVersion, User
from trialmgr.domain.vocab import Role
from trialmgr.services import integrity_status, notify, queries, randomization, reports, signatures, trials
from trialmgr.state import state
from trialmgr.web import charts
from trialmgr.web.access import PUBLIC, allow, current_identity
from trialmgr.web.crf import form_url
from trialmgr.web.db import read_session
from trialmgr.web.report_pages import consort_for, inline

bp = Blueprint("home", __name__)

HOME_ENDPOINT = {
    Role.ADMIN: "home.admin",
    Role.INVESTIGATOR: "home.investigator",
    Role.COORDINATOR: "home.coordinator",
    Role.ASSESSOR: "home.assessor",
    Role.MONITOR: "home.monitor",
}
RECENT = 10


@bp.route("/")
@allow(PUBLIC)
def index():
    ident = current_identity()
    if ident is None:
        return redirect(url_for("auth.login"))
    if not ident.memberships:
        return render_template("home/no_role.html")
    active = session.get("active") or {}
    chosen = next((m for m in ident.memberships
                   if m.trial == active.get("trial") and m.role.value == active.get("role")), ident.memberships[0])
    return redirect(url_for(HOME_ENDPOINT[chosen.role], trial=chosen.trial))


def maybe_url(endpoint: str, **values) -> str | None:
    """A link to a page another part of the app may or may not provide (yet): None when there is no such page."""
    try:
        return url_for(endpoint, **values)
    except BuildError:
        return None


def _trial_context(trial: str) -> dict:
    s = read_session()
    tr = trials.get_trial(s, trial)
    version = trials.current_version(s, trial)
    proto = trials.protocol_from_version(version)
    return {"trial_row": tr, "protocol": proto, "version": version, "sites": trials.sites(s, trial),
            "blinded": proto.is_blinded(g.actor.role.value), "today": clock.today(), "maybe_url": maybe_url}


def _consort_context(trial: str) -> dict:
    c = consort_for(trial)
    return {"consort": c, "consort_svg": inline(charts.consort_svg(c)), "consort_text": charts.consort_description(c)}


@bp.route("/t/<trial>/coordinator")
@allow(Role.COORDINATOR)
def coordinator(trial: str):
    s = read_session()
    ctx = _trial_context(trial)
    return render_template(
        "home/coordinator.html", due=reports.visits_due(s, g.actor, trial, ctx["today"]),
        to_answer=queries.list_queries(s, g.actor, trial, status="open"),
        answered=len(queries.list_queries(s, g.actor, trial, status="answered")),
        recent=reports.recent_enrollments(s, g.actor, trial, RECENT),
        awaiting=reports.awaiting_randomization(s, g.actor, trial), **ctx)


@bp.route("/t/<trial>/assessor")
@allow(Role.ASSESSOR)
def assessor(trial: str):
    s = read_session()
    ctx = _trial_context(trial)
    return render_template("home/assessor.html",
                           due=reports.visits_due(s, g.actor, trial, ctx["today"], outcome_only=True), **ctx)


@bp.route("/t/<trial>/investigator")
@allow(Role.INVESTIGATOR)
def investigator(trial: str):
    s = read_session()
    ctx = _trial_context(trial)
    settings = state().settings
    series = reports.enrollment_over_time(s, trial)
    return render_template(
        "home/investigator.html", series=series,
        enrollment_svg=inline(charts.enrollment_svg(series, today=ctx["today"])),
        enrollment_text=charts.enrollment_description(series, ctx["today"]),
        balance=None if ctx["blinded"] else randomization.balance(s, trial),
        adverse_events=reports.adverse_events(s, g.actor, trial, limit=20),
        unblindings=len(randomization.list_unblindings(s, trial)),
        alerts=randomization.alerts(s, trial, settings.list_low_warning),
        has_list=randomization.active_list(s, trial) is not None,
        overdue_primary=reports.overdue_primary_visits(s, trial, ctx["today"]),
        primary=reports.primary_visit(ctx["protocol"]),
        signatures=signatures.for_record(s, trial, "trial"), describe=signatures.describe,
        outbox=notify.outbox_counts(s, trial), undelivered=notify.failed(s, trial), mail_on=bool(settings.smtp_host),
        **_consort_context(trial), **ctx)


@bp.route("/t/<trial>/monitor")
@allow(Role.MONITOR)
def monitor(trial: str):
    s = read_session()
    ctx = _trial_context(trial)
    counts = queries.open_counts(s, trial)
    return render_template(
        "home/monitor.html", integrity=integrity_status.last(s, trial), queries_by_site=counts["by_site"],
        sdv=reports.sdv_progress(s, trial), form_title=lambda f: _form_title(ctx["protocol"], f),
        awaiting_sdv=reports.awaiting_sdv(s, trial), form_url=form_url, **_consort_context(trial), **ctx)


def _form_title(proto, form_id: str) -> str:
    try:
        return proto.form(form_id).title
    except KeyError:
        return form_id


@bp.route("/t/<trial>/admin")
@allow(Role.ADMIN)
def admin(trial: str):
    s = read_session()
    ctx = _trial_context(trial)
    users = s.scalars(select(User).options(selectinload(User.roles)).order_by(User.username)).all()
    versions = s.scalars(select(ProtocolVersion).where(ProtocolVersion.trial_id == trial)
                         .order_by(ProtocolVersion.number.desc())).all()
    return render_template(
        "home/admin.html", users=users, versions=versions, lst=randomization.active_list(s, trial),
        list_rows=randomization.list_status(s, trial),
        alerts=randomization.alerts(s, trial, state().settings.list_low_warning),
        outbox=notify.outbox_counts(s, trial), undelivered=notify.failed(s, trial),
        mail_on=bool(state().settings.smtp_host), **ctx)


@bp.app_context_processor
def _layout_context() -> dict:
    actor = g.get("actor")
    return {"actor": actor, "identity": g.get("identity")}
