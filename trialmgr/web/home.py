"""Landing: each role reaches its own home page."""

from __future__ import annotations

from flask import Blueprint, g, redirect, render_template, session, url_for
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from trialmgr.db.models_accounts import ProtocolVersion, User
from trialmgr.domain.vocab import Role
from trialmgr.services import trials
from trialmgr.web.access import PUBLIC, allow, current_identity
from trialmgr.web.db import read_session

bp = Blueprint("home", __name__)

HOME_ENDPOINT = {
    Role.ADMIN: "home.admin",
    Role.INVESTIGATOR: "home.investigator",
    Role.COORDINATOR: "home.coordinator",
    Role.ASSESSOR: "home.assessor",
    Role.MONITOR: "home.monitor",
}


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


def _trial_context(trial: str) -> dict:
    s = read_session()
    tr = trials.get_trial(s, trial)
    version = trials.current_version(s, trial)
    proto = trials.protocol_from_version(version)
    return {"trial_row": tr, "protocol": proto, "version": version, "sites": trials.sites(s, trial)}


@bp.route("/t/<trial>/coordinator")
@allow(Role.COORDINATOR)
def coordinator(trial: str):
    return render_template("home/coordinator.html", **_trial_context(trial))


@bp.route("/t/<trial>/assessor")
@allow(Role.ASSESSOR)
def assessor(trial: str):
    return render_template("home/assessor.html", **_trial_context(trial))


@bp.route("/t/<trial>/investigator")
@allow(Role.INVESTIGATOR)
def investigator(trial: str):
    return render_template("home/investigator.html", **_trial_context(trial))


@bp.route("/t/<trial>/monitor")
@allow(Role.MONITOR)
def monitor(trial: str):
    return render_template("home/monitor.html", **_trial_context(trial))


@bp.route("/t/<trial>/admin")
@allow(Role.ADMIN)
def admin(trial: str):
    s = read_session()
    ctx = _trial_context(trial)
    users = s.scalars(select(User).options(selectinload(User.roles)).order_by(User.username)).all()
    versions = s.scalars(select(ProtocolVersion).where(ProtocolVersion.trial_id == trial)
                         .order_by(ProtocolVersion.number.desc())).all()
    return render_template("home/admin.html", users=users, versions=versions, **ctx)


@bp.app_context_processor
def _layout_context() -> dict:
    actor = g.get("actor")
    return {"actor": actor, "identity": g.get("identity")}
