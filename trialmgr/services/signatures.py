"""Electronic signatures (21 CFR 11.50, 11.70, 11.200): the signer's password again, printed name, UTC time and
meaning, bound to the record signed (and a hash of its content); every signature is an audit entry too."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from trialmgr.db.models_accounts import Signature, User
from trialmgr.domain.errors import ValidationFailed
from trialmgr.services import audit
from trialmgr.services.context import Actor

MEANINGS = ("frozen", "unfrozen", "locked", "unlocked", "approved", "unblinded")


def sign(session: Session, actor: Actor, hasher, *, password: str, meaning: str, trial: str, record_type: str,
         record_id: str, record_hash: str | None = None, reason: str | None = None) -> Signature:
    """Check the signer's password and record the signature. Bad password: ValidationFailed on 'password'."""
    if meaning not in MEANINGS:
        raise ValueError(f"unknown signature meaning {meaning!r}")
    user = session.get(User, actor.user_id) if actor.user_id else None
    if user is None or not user.active or not hasher.verify(user.password_hash, password or ""):
        raise ValidationFailed({"password": "is not your current password: a signature needs your own password"})
    sig = Signature(trial_id=trial, username=user.username, printed_name=user.full_name, meaning=meaning,
                    record_type=record_type, record_id=str(record_id), record_hash=record_hash,
                    reason=(reason or "").strip() or None)
    session.add(sig)
    session.flush()
    audit.record(session, actor, "signature:create", "signature", sig.id, trial=trial, field=meaning,
                 new=f"{user.full_name} ({user.username}) signed {record_type} {record_id} as {meaning} at "
                     f"{sig.signed_at.isoformat().replace('+00:00', 'Z')}"
                     + (f"; content sha256 {record_hash}" if record_hash else ""),
                 reason=sig.reason)
    return sig


def for_record(session: Session, trial: str, record_type: str, record_id: str | None = None) -> list[Signature]:
    stmt = select(Signature).where(Signature.trial_id == trial, Signature.record_type == record_type)
    if record_id is not None:
        stmt = stmt.where(Signature.record_id == str(record_id))
    return list(session.scalars(stmt.order_by(Signature.signed_at, Signature.id)))


def describe(sig: Signature) -> str:
    """How a signature reads wherever its record is shown."""
    return (f"Signed by {sig.printed_name} on {sig.signed_at:%Y-%m-%d %H:%M:%S} UTC — meaning: {sig.meaning}"
            + (f" — {sig.reason}" if sig.reason else ""))
