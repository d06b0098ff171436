"""/api/v1/trials/{trial}/screenings, /participants and /randomize."""

from __future__ import annotations

from flask import g, request

from trialmgr.api import bp
from trialmgr.api.db import transaction
from trialmgr.api.idempotency import idempotent, respond
from trialmgr.api.params import is_id
from trialmgr.domain.errors import ValidationFailed
from trialmgr.domain.vocab import Role
from trialmgr.services import enrollment, randomization, trials
from trialmgr.services.randomization import RANDOMIZERS
from trialmgr.state import state
from trialmgr.web.access import allow
from trialmgr.web.db import read_session

READERS = (Role.COORDINATOR, Role.INVESTIGATOR, Role.ASSESSOR, Role.MONITOR, Role.ADMIN)


def _body() -> dict:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValidationFailed({"body": "must be a JSON object"})
    return body


def participant_json(session, participant, role: Role, *, proto=None, arms: dict[int, str] | None = None) -> dict:
    """One participant; a list passes the protocol and the arms (by participant id) it read once."""
    proto = proto or trials.current_protocol(session, participant.trial_id)
    out = {
        "id": participant.code,
        "site": participant.site_code,
        "status": participant.status.value,
        "strata": randomization.strata_json(participant),
        "stratum": participant.stratum,
        "consent_date": participant.consent_date.isoformat(),
        "consent_version": participant.consent_version,
        "enrolled_at": participant.enrolled_at.isoformat().replace("+00:00", "Z"),
        "randomized_at": participant.randomized_at.isoformat().replace("+00:00", "Z")
        if participant.randomized_at else None,
    }
    if not proto.is_blinded(role.value):
        if arms is not None:
            arm = arms.get(participant.id)
        else:
            allocation = randomization.allocation_of(session, participant)
            arm = allocation.arm if allocation is not None else None
        if arm is not None:
            out["arm"] = {"code": arm, "label": proto.arm(arm).label}
    return out


@bp.post("/trials/<trial>/screenings")
@allow(*RANDOMIZERS)
@idempotent
def create_screening(trial: str):
    body = _body()
    answers = body.get("answers")
    if not isinstance(answers, dict):
        raise ValidationFailed({"answers": "must be an object of screening answers"})
    with transaction() as s:
        res = enrollment.screen(s, g.actor, trial, answers, site=body.get("site"),
                                screening_date=body.get("screening_date"))
        out = {
            "id": res.screening.id,
            "site": res.screening.site_code,
            "screening_date": res.screening.screening_date.isoformat(),
            "eligible": res.result.eligible,
            "failures": [{"criterion": f.criterion_id, "kind": f.kind, "text": f.text, "reason": f.reason}
                         for f in res.result.failures],
        }
        return respond(s, out, 201)


@bp.post("/trials/<trial>/screenings/<int:screening>/decline")
@allow(*RANDOMIZERS)
def decline_screening(trial: str, screening: int):
    body = _body()
    with transaction() as s:
        row = enrollment.decline(s, g.actor, trial, screening, body.get("reason") or "")
        return respond(s, {"id": row.id, "outcome": row.outcome.value})


@bp.post("/trials/<trial>/participants")
@allow(*RANDOMIZERS)
@idempotent
def create_participant(trial: str):
    body = _body()
    screening = body.get("screening")
    if not is_id(screening):
        raise ValidationFailed({"screening": "must be the id (a whole number) of an eligible screening"})
    with transaction() as s:
        p = enrollment.enroll(s, g.actor, trial, screening, consent_date=body.get("consent_date"),
                              consent_version=body.get("consent_version"))
        return respond(s, participant_json(s, p, g.actor.role), 201)


MAX_PAGE = 500


@bp.get("/trials/<trial>/participants")
@allow(*READERS)
def list_participants(trial: str):
    """One page of participants (limit/offset), in site and number order, with the total."""
    from sqlalchemy import select

    from trialmgr.db.models_trial import Allocation

    s = read_session()
    trials.get_trial(s, trial)
    errors = {}
    limit, offset = request.args.get("limit", "100"), request.args.get("offset", "0")
    if not (limit.isascii() and limit.isdigit() and 1 <= int(limit) <= MAX_PAGE):
        errors["limit"] = f"must be a whole number from 1 to {MAX_PAGE}"
    if not (offset.isascii() and offset.isdigit() and len(offset) <= 9):
        errors["offset"] = "must be a whole number, 0 or more"
    if errors:
        raise ValidationFailed(errors)
    site, status = request.args.get("site"), request.args.get("status")
    rows = enrollment.list_participants(s, g.actor, trial, site=site, status=status, limit=int(limit),
                                        offset=int(offset))
    total = enrollment.count_participants(s, g.actor, trial, site=site, status=status)
    proto = trials.current_protocol(s, trial)
    arms = {pid: arm for pid, arm in s.execute(select(Allocation.participant_id, Allocation.arm).where(
        Allocation.participant_id.in_([p.id for p in rows])))} if rows else {}
    return respond(s, {"participants": [participant_json(s, p, g.actor.role, proto=proto, arms=arms) for p in rows],
                       "total": total, "limit": int(limit), "offset": int(offset)})


@bp.get("/trials/<trial>/participants/<participant>")
@allow(*READERS)
def get_participant(trial: str, participant: str):
    s = read_session()
    p = enrollment.get_participant(s, g.actor, trial, participant)
    return respond(s, participant_json(s, p, g.actor.role))


@bp.post("/trials/<trial>/participants/<participant>/randomize")
@allow(*RANDOMIZERS)
@idempotent
def randomize(trial: str, participant: str):
    with transaction() as s:
        result = randomization.randomize(s, g.actor, state().settings, trial, participant)
        body = participant_json(s, result.participant, g.actor.role)
        body["created"] = result.created  # the slot number is never returned: it hints at block positions
        return respond(s, body, 201 if result.created else 200)
