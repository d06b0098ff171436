"""/api/v1/trials/{trial}/audit: the monitor's log and the integrity check, as JSON."""

from __future__ import annotations

from flask import g, jsonify, request

from trialmgr.api import bp
from trialmgr.api.db import transaction
from trialmgr.api.params import MAX_BIGINT as MAX_SEQ
from trialmgr.api.params import whole as _whole
from trialmgr.keys import audit_public_keys
from trialmgr.services import audit_query, integrity_status, trials
from trialmgr.state import state
from trialmgr.web.access import allow
from trialmgr.web.db import read_session
from trialmgr.web.monitor import AUDIT_READERS


def _entry_json(row: dict) -> dict:
    out = dict(row)
    out["ts"] = row["ts"].isoformat().replace("+00:00", "Z")
    return out


@bp.get("/trials/<trial>/audit")
@allow(*AUDIT_READERS)
def audit_log(trial: str):
    s = read_session()
    trials.get_trial(s, trial)
    f = audit_query.AuditFilter.parse(request.args)
    before = request.args.get("before")
    limit = request.args.get("limit", "50")
    errors = {}
    if before is not None and not _whole(before, MAX_SEQ):
        errors["before"] = "must be a whole number (the next_before of the previous page)"
    if not _whole(limit, audit_query.MAX_PAGE) or int(limit) < 1:
        errors["limit"] = f"must be a whole number from 1 to {audit_query.MAX_PAGE}"
    if errors:
        from trialmgr.domain.errors import ValidationFailed

        raise ValidationFailed(errors)
    rows, cursor = audit_query.page(s, trial, f, before=int(before) if before else None, limit=int(limit))
    blinded = trials.current_protocol(s, trial).is_blinded(g.actor.role.value)
    return jsonify({"entries": [_entry_json(audit_query.redact(r, blinded)) for r in rows], "next_before": cursor})


@bp.get("/trials/<trial>/audit/verify")
@allow(*AUDIT_READERS)
def audit_verify(trial: str):
    with transaction() as s:
        trials.get_trial(s, trial)
        result = integrity_status.run(s, g.actor, audit_public_keys(state().settings), trial)
    return jsonify(result)
