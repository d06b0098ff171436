from __future__ import annotations

import pytest
from sqlalchemy import select, text, update

from tests.support import PASSWORD
from trialmgr.db.models_accounts import Trial
from trialmgr.db.models_audit import AuditEntry
from trialmgr.db.models_trial import Allocation, AllocationList, AllocationSlot, StratumCursor
from trialmgr.domain import concealment
from trialmgr.domain.errors import (
    Conflict,
    DataLocked,
    ListExhausted,
    NoAllocationList,
    NotFound,
    PermissionDenied,
    ValidationFailed,
)
from trialmgr.domain.vocab import DataState, ParticipantStatus, Role
from trialmgr.services import randomization
from trialmgr.services.context import Actor


def test_no_list_is_a_clear_error(db, actor, settings, enroll):
    code = enroll()
    with pytest.raises(NoAllocationList, match="generate or import"), db.session() as s:
        randomization.randomize(s, actor, settings, "hip-pt-clbp", code)


def test_generated_list_is_sealed_and_committed_in_the_audit_trail(db, actor, settings, trial, allocation_list):
    with db.session(write=False) as s:
        lst = s.get(AllocationList, allocation_list)
        slots = s.scalars(select(AllocationSlot).where(AllocationSlot.list_id == lst.id)).all()
        assert len(slots) == lst.slots_total >= 6 * 100
        lengths = {len(x.sealed) for x in slots}
        assert lengths == {concealment.ARM_CIPHERTEXT_BYTES}  # the length never tells the arm
        # No slot holds its arm's block in the clear. (The padded block, not the bare code: b"HIP" turns up in
        # random ciphertext about once in 290,000 slots, and that check failed CI once on an intact list.)
        clear = [concealment._pad_arm(arm) for arm in ("HIP", "SPINE")]
        for x in slots:
            assert not any(block in x.sealed for block in clear)
        entry = s.scalar(select(AuditEntry).where(AuditEntry.action == "allocation_list:generated"))
        assert entry.new_value == lst.commitment
        # The raw table holds no arm in clear, whatever the query.
        dump = " ".join(str(r) for r in s.execute(text("SELECT * FROM allocation_slot")).all()[:200])
        assert "SPINE" not in dump
    with pytest.raises(Conflict, match="already has an allocation list"), db.session() as s:
        randomization.generate(s, actor, settings, trial)


def test_randomize_takes_slots_in_order_and_repeats_return_the_original(db, actor, settings, trial,
                                                                         allocation_list, enroll):
    codes = [enroll("DE", "F") for _ in range(5)]
    arms = []
    with db.session() as s:
        for code in codes:
            a = randomization.randomize(s, actor, settings, trial, code)
            assert a.created
            arms.append(a.allocation.arm)
    with db.session() as s:
        again = randomization.randomize(s, actor, settings, trial, codes[0])
        assert not again.created and again.allocation.arm == arms[0]
        allocations = s.scalars(select(Allocation).order_by(Allocation.id)).all()
        assert [a.slot_seq for a in allocations] == [1, 2, 3, 4, 5]
        assert s.scalar(select(StratumCursor.next_seq).where(StratumCursor.stratum == "DE|F")) == 6
        # The arms follow the sealed list, slot by slot.
        key = settings.key_path("allocation.key").read_bytes()
        for a in allocations:
            sealed = s.scalar(select(AllocationSlot.sealed).where(AllocationSlot.stratum == a.stratum,
                                                                  AllocationSlot.seq == a.slot_seq))
            assert randomization._unseal(key, trial, a.stratum, a.slot_seq, sealed)[0] == a.arm
        entries = s.scalars(select(AuditEntry).where(AuditEntry.action == "allocation:create")).all()
        assert len(entries) == 5 and {e.participant for e in entries} == set(codes)


def test_strata_are_separate_sequences(db, actor, settings, trial, allocation_list, enroll):
    a, b = enroll("DE", "F"), enroll("PA", "M")
    with db.session() as s:
        ra = randomization.randomize(s, actor, settings, trial, a)
        rb = randomization.randomize(s, actor, settings, trial, b)
        assert (ra.allocation.stratum, ra.allocation.slot_seq) == ("DE|F", 1)
        assert (rb.allocation.stratum, rb.allocation.slot_seq) == ("PA|M", 1)


def test_exhausted_stratum_is_a_clear_error_and_an_alert(db, actor, settings, trial, allocation_list, enroll):
    code = enroll("NC", "M")
    with db.session() as s:
        s.execute(update(StratumCursor).where(StratumCursor.stratum == "NC|M")
                  .values(next_seq=StratumCursor.total + 1))
    with pytest.raises(ListExhausted, match="NC\\|M has no slots left"), db.session() as s:
        randomization.randomize(s, actor, settings, trial, code)
    with db.session(write=False) as s:
        assert any("NC|M" in x and "exhausted" in x for x in randomization.alerts(s, trial, low=5))
        assert s.scalar(select(Allocation)) is None


def test_refusals_ineligible_roles_sites_and_locked_data(db, actor, settings, trial, allocation_list, enroll):
    code = enroll("DE")
    de = Actor(username="c1", role=Role.COORDINATOR, trial=trial, sites=("DE",))
    pa = Actor(username="c2", role=Role.COORDINATOR, trial=trial, sites=("PA",))
    assessor = Actor(username="a1", role=Role.ASSESSOR, trial=trial, sites=("DE",))
    with db.session() as s:
        with pytest.raises(NotFound):
            randomization.randomize(s, pa, settings, trial, code)
        with pytest.raises(PermissionDenied):
            randomization.randomize(s, assessor, settings, trial, code)
        with pytest.raises(NotFound):
            randomization.randomize(s, de, settings, trial, "DE-9999")
        s.execute(update(Trial).values(data_state=DataState.FROZEN))
        with pytest.raises(DataLocked):
            randomization.randomize(s, de, settings, trial, code)
        s.execute(update(Trial).values(data_state=DataState.OPEN))
        assert randomization.randomize(s, de, settings, trial, code).participant.status is \
            ParticipantStatus.RANDOMIZED


IMPORT_OK = "stratum,sequence,arm,block\n" + "".join(
    f"{s},{i},{arm},{(i + 1) // 2}\n" for s in ["DE|F", "DE|M", "PA|F", "PA|M", "NC|F", "NC|M"]
    for i, arm in enumerate(["HIP", "SPINE", "SPINE", "HIP"], 1))


def test_import_a_statisticians_list(db, actor, settings, trial, enroll):
    with db.session() as s:
        lst = randomization.import_list(s, actor, settings, trial, IMPORT_OK)
        assert lst.source == "imported" and lst.slots_total == 24
    code = enroll("DE", "F")
    with db.session() as s:
        assert randomization.randomize(s, actor, settings, trial, code).allocation.arm == "HIP"


def test_import_refuses_an_unbalanced_block_and_lists_every_error(db, actor, settings, trial):
    bad = IMPORT_OK.replace("DE|F,2,SPINE,1", "DE|F,2,HIP,1").replace("PA|M,3,SPINE", "PA|M,3,PLACEBO")
    with pytest.raises(ValidationFailed) as info, db.session() as s:
        randomization.import_list(s, actor, settings, trial, bad)
    message = info.value.errors["file"]
    assert "DE|F" in message and "PLACEBO" in message
    with db.session(write=False) as s:
        assert s.scalar(select(AllocationList)) is None
    with pytest.raises(ValidationFailed, match="missing column"), db.session() as s:
        randomization.import_list(s, actor, settings, trial, "stratum,arm\nDE|F,HIP\n")


def test_reveal_only_after_lock_and_proves_the_list(db, actor, settings, trial, allocation_list, enroll):
    codes = [enroll("DE", "F"), enroll("DE", "M"), enroll("PA", "F")]
    with db.session() as s:
        for c in codes:
            randomization.randomize(s, actor, settings, trial, c)
    with pytest.raises(DataLocked), db.session() as s:
        randomization.reveal(s, actor, settings, trial)
    with db.session() as s:
        s.execute(update(Trial).values(data_state=DataState.LOCKED))
        report = randomization.reveal(s, actor, settings, trial)
    assert report["ok"]
    only = report["lists"][0]
    assert only["commitment_matches"] and only["reproduced_from_seed"] and only["assignments"] == 3
    # A direct edit of an allocation is caught by the proof.
    with db.session() as s:
        s.execute(update(Allocation).where(Allocation.slot_seq == 1, Allocation.stratum == "DE|F")
                  .values(arm="SPINE" if s.scalar(select(Allocation.arm).where(Allocation.stratum == "DE|F"))
                          == "HIP" else "HIP"))
        bad = randomization.reveal(s, actor, settings, trial)
    assert not bad["ok"] and bad["lists"][0]["assignment_problems"]


def test_emergency_unblinding_needs_reason_and_password(db, settings, trial, allocation_list, enroll, make_user,
                                                        hasher):
    make_user("ines", "hip-pt-clbp:investigator", full_name="Ines Investigator")
    code = enroll()
    with db.session() as s:
        from trialmgr.services.accounts import get_user

        uid = get_user(s, "ines").id
        inv = Actor(username="ines", role=Role.INVESTIGATOR, trial=trial, user_id=uid, full_name="Ines Investigator")
        randomization.randomize(s, inv, settings, trial, code)
    with pytest.raises(ValidationFailed) as info, db.session() as s:
        randomization.unblind(s, inv, hasher, trial, code, reason="", password="wrong")
    assert set(info.value.errors) == {"reason", "password"}
    with db.session() as s:
        arm = randomization.unblind(s, inv, hasher, trial, code, reason="serious adverse event", password=PASSWORD)
    assert arm in ("HIP", "SPINE")
    with db.session(write=False) as s:
        e = s.scalar(select(AuditEntry).where(AuditEntry.action == "unblinding:create"))
        assert e.participant == code and "Ines Investigator" in e.reason
