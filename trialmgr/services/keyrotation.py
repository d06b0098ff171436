"""Key rotation, the database side: re-encrypting the sealed allocation lists under a new key, and the audit
entries that record both rotations. The key files themselves are handled by trialmgr/keys.py and the order of
steps by `trialmgr keys ...` (trialmgr/cli_keys.py); docs/keys.md is the operator's procedure."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from trialmgr.db.models_trial import AllocationList, AllocationSlot, StratumCursor
from trialmgr.domain import concealment
from trialmgr.keys import allocation_key_id
from trialmgr.services import audit
from trialmgr.services.context import Actor

BATCH = 2000


@dataclass(frozen=True)
class Reencrypted:
    lists: int
    slots: int


def _secret_aad(lst: AllocationList) -> bytes:
    # The same associated data services/randomization.py seals the list secret with.
    return f"{lst.trial_id}|list|{lst.number}".encode()


def reencrypt_allocation(session: Session, actor: Actor, old_key: bytes, new_key: bytes) -> Reencrypted:
    """Re-encrypt every slot and list secret of every allocation list, in the caller's transaction.

    Every stratum cursor is locked first, so no randomization interleaves (on SQLite the write transaction
    already excludes them). Each ciphertext is authenticated with the old key before it is replaced: one that
    fails raises ConcealmentError and the caller's rollback leaves everything as it was.
    """
    session.execute(select(StratumCursor.list_id).with_for_update()).all()
    old, new = concealment.ArmCipher(old_key), concealment.ArmCipher(new_key)
    lists = session.scalars(select(AllocationList).order_by(AllocationList.id).with_for_update()).all()
    total = 0
    for lst in lists:
        secret = concealment.decrypt_blob(old_key, _secret_aad(lst), lst.secret)
        lst.secret = concealment.encrypt_blob(new_key, _secret_aad(lst), secret)
        rows = session.execute(select(AllocationSlot.stratum, AllocationSlot.seq, AllocationSlot.sealed)
                               .where(AllocationSlot.list_id == lst.id)
                               .order_by(AllocationSlot.stratum, AllocationSlot.seq)).all()
        batch = []
        for stratum, seq, sealed in rows:
            aad = concealment.slot_aad(lst.trial_id, stratum, seq)
            batch.append({"list_id": lst.id, "stratum": stratum, "seq": seq,
                          "sealed": new.encrypt(aad, old.decrypt(aad, sealed))})
            if len(batch) >= BATCH:
                session.execute(update(AllocationSlot), batch)
                batch = []
        if batch:
            session.execute(update(AllocationSlot), batch)
        total += len(rows)
        audit.record(session, actor, "allocation_list:rekey", "allocation_list", lst.number, trial=lst.trial_id,
                     field="allocation_key", old=allocation_key_id(old_key), new=allocation_key_id(new_key),
                     reason=f"allocation key rotation: {len(rows)} slots and the list secret re-encrypted")
    session.flush()
    return Reencrypted(len(lists), total)


def record_audit_key_rotation(session: Session, actor: Actor, old_key_id: str, new_key_id: str) -> None:
    """The signing key changed: recorded in the trail, then covered by the first checkpoint the new key signs."""
    audit.record(session, actor, "audit_key:rotate", "audit_key", new_key_id, trial=None, chain="_system/keys",
                 field="key_id", old=old_key_id, new=new_key_id,
                 reason="audit signing key rotated; the old public key stays on file for older checkpoints")
