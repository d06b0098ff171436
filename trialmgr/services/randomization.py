"""Allocation lists and randomization: generated or imported, sealed at rest, assigned in list order.

Concealment: each slot's arm, block and block size are encrypted together with AES-GCM under a key kept in
the instance folder (never in the database), bound to (trial, stratum, seq). A salted SHA-256 commitment to
the whole list goes into the audit trail when the list is created; `reveal` proves the list and every
assignment against it after lock.

Assignment order: the participant's row, then the stratum's cursor row are locked (SELECT ... FOR UPDATE on
PostgreSQL; SQLite write transactions begin IMMEDIATE), the next slot is taken and unsealed, the allocation
and its audit entry are written, and the caller commits. Unique constraints on (list, stratum, slot) and on
the participant are the last line of defence, not the mechanism.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from trialmgr.config import Settings
from trialmgr.db.base import utcnow
from trialmgr.db.models_audit import AuditEntry
from trialmgr.db.models_trial import Allocation, AllocationList, AllocationSlot, Participant, StratumCursor
from trialmgr.domain import concealment
from trialmgr.domain import randomization as rnd
from trialmgr.domain.errors import (
    AlreadyRandomized,
    Conflict,
    ListExhausted,
    NoAllocationList,
    NotEligible,
    ValidationFailed,
)
from trialmgr.domain.protocol import Protocol
from trialmgr.domain.vocab import ParticipantStatus, Role
from trialmgr.keys import allocation_key
from trialmgr.services import audit, enrollment, notify, trials, visits
from trialmgr.services.context import Actor

RANDOMIZERS = (Role.COORDINATOR, Role.INVESTIGATOR)
LIST_MANAGERS = (Role.ADMIN, Role.INVESTIGATOR)


def design_of(proto: Protocol) -> rnd.BlockDesign:
    r = proto.randomization
    return rnd.BlockDesign(arms=tuple((a.code, a.ratio) for a in proto.arms), block_sizes=tuple(r.block_sizes),
                           block_weights=tuple(r.block_weights))


def _seal_text(arm: str, block: int, size: int) -> str:
    return f"{arm}|{block}|{size}"


def _unseal(key: bytes, trial: str, stratum: str, seq: int, sealed: bytes) -> tuple[str, int, int]:
    text = concealment.decrypt_arm(key, concealment.slot_aad(trial, stratum, seq), sealed)
    arm, block, size = text.rsplit("|", 2)
    return arm, int(block), int(size)


def active_list(session: Session, trial_id: str) -> AllocationList | None:
    return session.scalar(select(AllocationList).where(AllocationList.trial_id == trial_id,
                                                       AllocationList.active.is_(True)))


def _store(session: Session, actor: Actor, settings: Settings, trial_id: str, proto: Protocol,
           rows: list[tuple[str, int, int, int, str]], *, source: str, method: str, master_entropy: int,
           slots_per_stratum: int) -> AllocationList:
    if active_list(session, trial_id) is not None:
        raise Conflict(f"{trial_id} already has an allocation list; a second one is never generated silently")
    key = allocation_key(settings)
    salt = rnd.new_commitment_salt()
    commitment = rnd.list_commitment(rows, salt)
    number = (session.scalar(select(func.max(AllocationList.number)).where(AllocationList.trial_id == trial_id))
              or 0) + 1
    secret = concealment.encrypt_blob(key, f"{trial_id}|list|{number}".encode(),
                                      concealment.pack_list_secret(salt, master_entropy))
    lst = AllocationList(trial_id=trial_id, number=number, method=method, source=source, created_by=actor.username,
                         commitment=commitment, secret=secret, slots_total=len(rows), active=True,
                         slots_per_stratum=slots_per_stratum)
    session.add(lst)
    session.flush()
    cipher = concealment.ArmCipher(key)
    totals: dict[str, int] = {}
    batch = []
    for stratum, seq, block, size, arm in rows:
        sealed = cipher.encrypt(concealment.slot_aad(trial_id, stratum, seq), _seal_text(arm, block, size))
        batch.append({"list_id": lst.id, "stratum": stratum, "seq": seq, "sealed": sealed})
        totals[stratum] = max(totals.get(stratum, 0), seq)
        if len(batch) >= 5000:
            session.execute(insert(AllocationSlot), batch)
            batch = []
    if batch:
        session.execute(insert(AllocationSlot), batch)
    session.execute(insert(StratumCursor), [{"list_id": lst.id, "stratum": s, "next_seq": 1, "total": n}
                                            for s, n in sorted(totals.items())])
    audit.record(session, actor, f"allocation_list:{source}", "allocation_list", lst.number, trial=trial_id,
                 field="commitment", new=commitment,
                 reason=f"{len(rows)} slots in {len(totals)} strata, method {method}, "
                        f"protocol sha256 {proto.sha256[:16]}")
    return lst


def generate(session: Session, actor: Actor, settings: Settings, trial_id: str) -> AllocationList:
    """Generate the whole list inside the system from the operating system's CSPRNG."""
    actor.require(*LIST_MANAGERS)
    trials.require_open(session, trial_id)
    proto = trials.current_protocol(session, trial_id)
    design = design_of(proto)
    errors = [e for a in proto.arms if len(_seal_text(a.code, 9999, 99).encode()) > concealment.ARM_CODE_MAX_BYTES
              for e in [f"arms: code {a.code!r} is too long to seal"]]
    if errors:
        raise ValidationFailed({"arms": "; ".join(errors)})
    generated = rnd.generate_list(design, proto.strata_keys(), proto.randomization.slots_per_stratum,
                                  method=proto.randomization.method)
    return _store(session, actor, settings, trial_id, proto, list(generated.rows()), source="generated",
                  method=generated.method, master_entropy=generated.master_entropy,
                  slots_per_stratum=proto.randomization.slots_per_stratum)


def import_list(session: Session, actor: Actor, settings: Settings, trial_id: str, csv_text: str) -> AllocationList:
    """Import a statistician's list (CSV: stratum, sequence, arm, block); every error is listed."""
    actor.require(*LIST_MANAGERS)
    trials.require_open(session, trial_id)
    proto = trials.current_protocol(session, trial_id)
    reader = csv.DictReader(io.StringIO(csv_text))
    missing = [c for c in ("stratum", "sequence", "arm", "block") if c not in (reader.fieldnames or [])]
    if missing:
        raise ValidationFailed({"file": f"missing column(s): {', '.join(missing)} (need stratum, sequence, arm, "
                                        "block)"})
    slots, errors = rnd.validate_imported_rows(list(reader), design_of(proto), proto.strata_keys())
    if errors:
        raise ValidationFailed({"file": "\n".join(errors)}, message=f"the list was refused: {len(errors)} problem(s)")
    rows = [s.row() for s in slots]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r[0]] = counts.get(r[0], 0) + 1
    return _store(session, actor, settings, trial_id, proto, rows, source="imported", method="imported",
                  master_entropy=0, slots_per_stratum=min(counts.values()))


@dataclass(frozen=True)
class Assignment:
    allocation: Allocation
    participant: Participant
    created: bool


def allocation_of(session: Session, participant: Participant) -> Allocation | None:
    return session.scalar(select(Allocation).where(Allocation.participant_id == participant.id))


def randomize(session: Session, actor: Actor, settings: Settings, trial_id: str, code: str) -> Assignment:
    """Assign the next slot of the participant's stratum; a repeat returns the original allocation."""
    actor.require(*RANDOMIZERS)
    participant = enrollment.get_participant(session, actor, trial_id, code, lock=True)
    existing = allocation_of(session, participant)
    if existing is not None:
        return Assignment(existing, participant, created=False)
    trials.require_open(session, trial_id)
    if participant.locked:
        from trialmgr.domain.errors import DataLocked

        raise DataLocked(f"the data of {code} are locked")
    if participant.status is not ParticipantStatus.ENROLLED:
        raise NotEligible(f"{code} is {participant.status.value}; only an enrolled participant can be randomized")
    lst = active_list(session, trial_id)
    if lst is None:
        raise NoAllocationList(f"{trial_id} has no allocation list yet: an investigator or admin must generate "
                               "or import one before anyone can be randomized")
    cursor = session.scalar(select(StratumCursor).where(StratumCursor.list_id == lst.id,
                                                        StratumCursor.stratum == participant.stratum)
                            .with_for_update())
    if cursor is None or cursor.next_seq > cursor.total:
        # Deliberately no fallback to another stratum or method: the investigator must act (see list status).
        raise ListExhausted(f"the allocation list for stratum {participant.stratum} has no slots left; "
                            f"{code} was not randomized. The investigators have been alerted.")
    seq = cursor.next_seq
    sealed = session.scalar(select(AllocationSlot.sealed).where(
        AllocationSlot.list_id == lst.id, AllocationSlot.stratum == participant.stratum, AllocationSlot.seq == seq))
    arm, _block, _size = _unseal(allocation_key(settings), trial_id, participant.stratum, seq, sealed)
    now = utcnow()
    allocation = Allocation(trial_id=trial_id, participant_id=participant.id, list_id=lst.id,
                            stratum=participant.stratum, slot_seq=seq, arm=arm, randomized_at=now,
                            randomized_by=actor.username)
    session.add(allocation)
    cursor.next_seq = seq + 1
    notify.allocation_taken(session, settings, trial_id, lst, cursor)  # list low or exhausted: mail investigators
    participant.status = ParticipantStatus.RANDOMIZED
    participant.randomized_at = now
    session.flush()
    common = {"trial": trial_id, "participant": code, "ts": now}
    audit.record(session, actor, "allocation:create", "allocation", code, field="arm", new=arm,
                 reason=f"list {lst.number}, stratum {participant.stratum}, slot {seq}", **common)
    audit.record(session, actor, "participant:randomize", "participant", code, field="status",
                 old=ParticipantStatus.ENROLLED.value, new=ParticipantStatus.RANDOMIZED.value, **common)
    visits.anchor_schedule(session, actor, trials.current_protocol(session, trial_id), participant, now.date())
    return Assignment(allocation, participant, created=True)


def list_status(session: Session, trial_id: str) -> list[dict]:
    """Per stratum: slots in all, used, left. Never the content."""
    lst = active_list(session, trial_id)
    if lst is None:
        return []
    cursors = session.scalars(select(StratumCursor).where(StratumCursor.list_id == lst.id)
                              .order_by(StratumCursor.stratum))
    return [{"stratum": c.stratum, "total": c.total, "used": c.next_seq - 1, "left": c.total - c.next_seq + 1}
            for c in cursors]


def alerts(session: Session, trial_id: str, low: int) -> list[str]:
    out = []
    for s in list_status(session, trial_id):
        if s["left"] == 0:
            out.append(f"Stratum {s['stratum']}: the allocation list is exhausted; nobody more can be randomized "
                       "in it.")
        elif s["left"] <= low:
            out.append(f"Stratum {s['stratum']}: only {s['left']} allocation slot(s) left.")
    return out


def ensure_not_randomized(participant: Participant) -> None:
    if participant.status is not ParticipantStatus.ENROLLED:
        raise AlreadyRandomized(f"{participant.code} is already randomized; its strata are frozen")


def reveal(session: Session, actor: Actor, settings: Settings, trial_id: str) -> dict:
    """After lock: decrypt the list, prove it matches the commitment and that every assignment followed it."""
    from trialmgr.domain.errors import DataLocked
    from trialmgr.domain.vocab import DataState

    actor.require(Role.INVESTIGATOR)
    trial = trials.get_trial(session, trial_id)
    if trial.data_state is not DataState.LOCKED:
        raise DataLocked(f"{trial_id} is {trial.data_state.value}: the list is revealed only after database lock")
    key = allocation_key(settings)
    lists = session.scalars(select(AllocationList).where(AllocationList.trial_id == trial_id)
                            .order_by(AllocationList.number)).all()
    report = {"trial": trial_id, "lists": []}
    for lst in lists:
        salt, entropy = concealment.unpack_list_secret(
            concealment.decrypt_blob(key, f"{trial_id}|list|{lst.number}".encode(), lst.secret))
        rows = []
        for stratum, seq, sealed in session.execute(
                select(AllocationSlot.stratum, AllocationSlot.seq, AllocationSlot.sealed)
                .where(AllocationSlot.list_id == lst.id).order_by(AllocationSlot.stratum, AllocationSlot.seq)):
            arm, block, size = _unseal(key, trial_id, stratum, seq, sealed)
            rows.append((stratum, seq, block, size, arm))
        matches = rnd.list_commitment(rows, salt) == lst.commitment
        committed = session.scalar(select(func.count()).select_from(AuditEntry).where(
            AuditEntry.trial == trial_id, AuditEntry.action.like("allocation_list:%"),
            AuditEntry.new_value == lst.commitment))
        slots = {}
        for stratum, seq, block, size, arm in rows:
            slots.setdefault(stratum, []).append(rnd.Slot(stratum, seq, block, size, arm))
        assignments = [(a.stratum, a.slot_seq, a.arm, p.code) for a, p in session.execute(
            select(Allocation, Participant).join(Participant, Participant.id == Allocation.participant_id)
            .where(Allocation.list_id == lst.id).order_by(Allocation.randomized_at, Allocation.id))]
        problems = rnd.verify_assignments(slots, assignments)
        regenerated = None
        if lst.source == "generated":
            again = rnd.generate_list(design_of(trials.current_protocol(session, trial_id)), sorted(slots),
                                      lst.slots_per_stratum, master_entropy=entropy, method=lst.method)
            regenerated = list(again.rows()) == rows
        report["lists"].append({
            "number": lst.number, "source": lst.source, "slots": len(rows), "commitment": lst.commitment,
            "commitment_matches": matches, "commitment_in_audit_trail": bool(committed),
            "assignments": len(assignments), "assignment_problems": problems,
            "reproduced_from_seed": regenerated, "salt": salt.hex(),
            "rows": rows,
        })
    audit.record(session, actor, "allocation_list:reveal", "allocation_list", trial_id, trial=trial_id,
                 field="revealed", new="; ".join(
                     f"list {x['number']}: commitment {'ok' if x['commitment_matches'] else 'MISMATCH'}, "
                     f"{x['assignments']} assignments, {len(x['assignment_problems'])} problem(s)"
                     for x in report["lists"]))
    report["ok"] = bool(lists) and all(x["commitment_matches"] and x["commitment_in_audit_trail"]
                                       and not x["assignment_problems"] for x in report["lists"])
    return report


def unblind(session: Session, actor: Actor, hasher, trial_id: str, code: str, *, reason: str,
            password: str) -> str:
    """Emergency unblinding of one participant: investigator, reason and password again; on the ledger."""
    from trialmgr.db.models_accounts import User
    from trialmgr.db.models_trial import Unblinding
    from trialmgr.domain.errors import PermissionDenied

    actor.require(Role.INVESTIGATOR)
    errors = {}
    if not (reason or "").strip():
        errors["reason"] = "is required: why this participant must be unblinded"
    user = session.get(User, actor.user_id) if actor.user_id else None
    if not actor.console and (user is None or not hasher.verify(user.password_hash, password or "")):
        errors["password"] = "is not your current password (unblinding needs your signature)"
    if errors:
        raise ValidationFailed(errors)
    participant = enrollment.get_participant(session, actor, trial_id, code)
    allocation = allocation_of(session, participant)
    if allocation is None:
        raise PermissionDenied(f"{code} is not randomized: there is no allocation to unblind")
    session.add(Unblinding(trial_id=trial_id, participant_id=participant.id, by_user=actor.username,
                           by_name=actor.full_name, reason=reason.strip()))
    audit.record(session, actor, "unblinding:create", "unblinding", code, trial=trial_id, participant=code,
                 field="arm", new=allocation.arm, reason=f"{reason.strip()} (signed: {actor.full_name}, meaning: "
                                                          "unblinded)")
    return allocation.arm


def balance(session: Session, trial_id: str) -> dict:
    rows = session.execute(select(Allocation.stratum, Participant.site_code, Allocation.arm)
                           .join(Participant, Participant.id == Allocation.participant_id)
                           .where(Allocation.trial_id == trial_id)).all()
    proto = trials.current_protocol(session, trial_id)
    from trialmgr.domain.randomization_stats import balance_table

    table = balance_table([(r[0], r[1], r[2]) for r in rows], arms=[a.code for a in proto.arms])
    return {"arms": list(table.arms), "by_stratum": {k: dict(v) for k, v in table.by_stratum.items()},
            "by_site": {k: dict(v) for k, v in table.by_site.items()}, "overall": dict(table.overall)}


def design_report(session: Session, trial_id: str, n_sims: int = 10_000) -> dict:
    from trialmgr.domain.randomization_stats import simulate_design

    proto = trials.current_protocol(session, trial_id)
    report = simulate_design(design_of(proto), len(proto.strata_keys()), proto.target_enrollment, n_sims=n_sims)
    return {"design": report, "strata": proto.strata_keys()}


def strata_json(participant: Participant) -> dict:
    return json.loads(participant.strata)


# -- unblinding ledger (web pages) ---------------------------------------------------------------------------

def list_unblindings(session: Session, trial_id: str) -> list[tuple]:
    """(Unblinding, participant code) rows of a trial, newest first."""
    from trialmgr.db.models_trial import Unblinding

    return [tuple(r) for r in session.execute(
        select(Unblinding, Participant.code).join(Participant, Participant.id == Unblinding.participant_id)
        .where(Unblinding.trial_id == trial_id).order_by(Unblinding.at.desc(), Unblinding.id.desc()))]
