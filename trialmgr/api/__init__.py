"""JSON adapter under /api/v1: bearer tokens scoped to a trial and role, the same services as the web."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from flask import Blueprint, Flask, g, jsonify, request

from trialmgr.api.db import auth_session
from trialmgr.domain.errors import DomainError
from trialmgr.services import accounts, trials
from trialmgr.web.access import ALL_ROLES, AUTHENTICATED, PUBLIC, Identity, allow
from trialmgr.web.db import read_session

bp = Blueprint("api", __name__, url_prefix="/api/v1")
OPENAPI_PATH = Path(__file__).with_name("openapi.json")
log = logging.getLogger(__name__)


@bp.before_request
def _token() -> None:
    header = request.headers.get("Authorization", "")
    g.identity = None
    if header.startswith("Bearer "):
        session = auth_session()
        # One query: the token, its user and the user's assignments of the token's role in the token's trial.
        # The token acts only in its own trial and role, and only while the user still holds that role.
        who = accounts.token_identity(session, header[7:].strip())
        if who is not None:
            g.identity = Identity(who.user_id, who.username, who.full_name, (who.membership,), via_token=True)
            if accounts.token_needs_touch(who):
                _touch(session, who.token_id)


def _touch(session, token_id: int) -> None:
    """Note the token's last use (shown to admins), committed on its own, whatever becomes of the request;
    best effort: a request must not fail because of it. A write whose token was checked in its write session
    does it there, before its change; otherwise it is a short write transaction of its own (the token was
    checked in the read session, which takes no write lock)."""
    from sqlalchemy.exc import SQLAlchemyError

    from trialmgr.api.db import shares_write_session
    from trialmgr.web.db import transaction

    shared = shares_write_session(session)
    try:
        if shared:
            accounts.touch_token(session, token_id)
            session.commit()
        else:
            with transaction() as s:
                accounts.touch_token(s, token_id)
    except SQLAlchemyError:
        if shared:
            session.rollback()
        log.warning("could not record the last use of API token %s", token_id, exc_info=True)


@bp.errorhandler(DomainError)
def _domain_error(exc: DomainError):
    from trialmgr.api.errors import domain_error_response

    return domain_error_response(exc)


def init_app(app: Flask) -> None:
    from trialmgr.api import audit, db, forms, participants  # noqa: F401  (they register their routes on bp)
    from trialmgr.web import csrf

    db.init_app(app)
    csrf.exempt(bp)  # bearer tokens, not cookies: no ambient authority to forge
    app.register_blueprint(bp)


@bp.get("/openapi.json")
@allow(PUBLIC)
def openapi():
    return jsonify(json.loads(OPENAPI_PATH.read_text(encoding="utf-8")))


@bp.get("/me")
@allow(AUTHENTICATED)
def me():
    actor = g.actor
    ident = g.identity
    return jsonify({
        "username": actor.username,
        "full_name": actor.full_name,
        "roles": [{"trial": m.trial, "role": m.role.value, "sites": list(m.sites)} for m in ident.memberships],
    })


@bp.get("/trials/<trial>")
@allow(*ALL_ROLES)
def trial_detail(trial: str):
    s = read_session()
    row = trials.get_trial(s, trial)
    version = trials.current_version(s, trial)
    proto = trials.protocol_from_version(version)
    body = {
        "id": row.id,
        "title": row.title,
        "data_state": row.data_state.value,
        "protocol": {"version": proto.version, "amendment": version.number, "sha256": version.sha256},
        "target_enrollment": proto.target_enrollment,
        "sites": [{"code": s_.code, "name": s_.name, "active": s_.active} for s_ in trials.sites(s, trial)],
        "visits": [{"code": v.code, "label": v.label, "day": v.day, "window": [v.window_start, v.window_end],
                    "forms": list(v.forms)} for v in proto.visits],
    }
    if not proto.is_blinded(g.actor.role.value):
        body["arms"] = [{"code": a.code, "label": a.label, "ratio": a.ratio} for a in proto.arms]
    return jsonify(body)


