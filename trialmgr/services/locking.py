"""Data states: open -> frozen (no new data; queries may still be answered) -> locked (nothing changes), and
per-participant and per-form locks. Each transition is signed by an investigator and audited; a lock also
signs an audit checkpoint whose hash the lock signature is bound to."""

from __future__ import annotations

from sqlalchemy.orm import Session

from trialmgr.config import Settings
from trialmgr.db.models_crf import FormRecord
from trialmgr.db.models_trial import Participant
from trialmgr.domain import audit as chainlib
from trialmgr.domain.errors import Conflict, ValidationFailed
from trialmgr.domain.vocab import DataState, Role
from trialmgr.keys import audit_private_key
from trialmgr.services import audit, signatures, trials
from trialmgr.services.context import Actor

TRANSITIONS = {
    # action: (allowed from, to, signature meaning, reason required)
    "freeze": ((DataState.OPEN,), DataState.FROZEN, "frozen", False),
    "unfreeze": ((DataState.FROZEN,), DataState.OPEN, "unfrozen", True),
    "lock": ((DataState.OPEN, DataState.FROZEN), DataState.LOCKED, "locked", False),
    "unlock": ((DataState.LOCKED,), DataState.FROZEN, "unlocked", True),
}


def change_state(session: Session, actor: Actor, hasher, settings: Settings, trial_id: str, action: str, *,
                 password: str, reason: str | None = None):
    """Freeze, unfreeze, lock or unlock a trial's data, with the investigator's signature."""
    actor.require(Role.INVESTIGATOR)
    allowed, target, meaning, needs_reason = TRANSITIONS[action]
    trial = trials.get_trial(session, trial_id)
    if trial.data_state not in allowed:
        raise Conflict(f"the data of {trial_id} are {trial.data_state.value}; they cannot be {meaning} now")
    if needs_reason and not (reason or "").strip():
        raise ValidationFailed({"reason": f"is required to {action} the data"})
    old = trial.data_state
    audit.record(session, actor, f"trial:{action}", "trial", trial_id, trial=trial_id, field="data_state",
                 old=old.value, new=target.value, reason=(reason or "").strip() or None)
    trial.data_state = target
    record_hash = None
    if action == "lock":
        # The checkpoint signs every chain head as locked; the lock signature is bound to that checkpoint.
        cp = audit.create_checkpoint(session, audit_private_key(settings), "lock")
        if cp is not None:
            record_hash = chainlib.checkpoint_hash(cp.body)
    sig = signatures.sign(session, actor, hasher, password=password, meaning=meaning, trial=trial_id,
                          record_type="trial", record_id=trial_id, record_hash=record_hash, reason=reason)
    return trial, sig


def set_participant_lock(session: Session, actor: Actor, hasher, participant: Participant, locked: bool, *,
                         password: str, reason: str | None = None):
    actor.require(Role.INVESTIGATOR)
    if participant.locked == locked:
        raise Conflict(f"{participant.code} is already {'locked' if locked else 'unlocked'}")
    if not locked and not (reason or "").strip():
        raise ValidationFailed({"reason": "is required to unlock"})
    audit.record(session, actor, "participant:lock" if locked else "participant:unlock", "participant",
                 participant.code, trial=participant.trial_id, participant=participant.code, field="locked",
                 old=str(participant.locked).lower(), new=str(locked).lower(), reason=(reason or "").strip() or None)
    participant.locked = locked
    return signatures.sign(session, actor, hasher, password=password, meaning="locked" if locked else "unlocked",
                           trial=participant.trial_id, record_type="participant", record_id=participant.code,
                           reason=reason)


def set_form_lock(session: Session, actor: Actor, hasher, participant: Participant, record: FormRecord,
                  entity: str, locked: bool, *, password: str, reason: str | None = None):
    actor.require(Role.INVESTIGATOR)
    if record.locked == locked:
        raise Conflict(f"{entity} of {participant.code} is already {'locked' if locked else 'unlocked'}")
    if not locked and not (reason or "").strip():
        raise ValidationFailed({"reason": "is required to unlock"})
    audit.record(session, actor, "form:lock" if locked else "form:unlock", "form", entity, trial=participant.trial_id,
                 participant=participant.code, field="_locked", old=str(record.locked).lower(),
                 new=str(locked).lower(), reason=(reason or "").strip() or None)
    record.locked = locked
    return signatures.sign(session, actor, hasher, password=password, meaning="locked" if locked else "unlocked",
                           trial=participant.trial_id, record_type="form", record_id=f"{participant.code} {entity}",
                           reason=reason)
