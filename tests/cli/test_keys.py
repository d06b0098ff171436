"""`trialmgr keys rotate-audit` and `trialmgr keys rotate-allocation`: old signatures keep verifying, the
allocation list keeps working and proving itself, and a failed rotation changes nothing.

Each test has an instance folder of its own: rotating the suite's shared keys would disturb other tests.
"""

from __future__ import annotations

import dataclasses
import json
import stat
import zipfile

import pytest
from sqlalchemy import select, update

from tests.conftest import CliRunner
from tests.support import eligible_answers
from trialmgr import create_app, keys
from trialmgr.db.models_accounts import Trial
from trialmgr.db.models_audit import AuditEntry, Checkpoint
from trialmgr.db.models_trial import AllocationList, AllocationSlot
from trialmgr.domain import concealment
from trialmgr.domain.vocab import DataState
from trialmgr.services import enrollment, randomization

T = "hip-pt-clbp"


@pytest.fixture
def private(settings, db, tmp_path):
    own = dataclasses.replace(settings, instance_path=tmp_path / "instance")
    keys.ensure_all(own)
    app = create_app(own)
    state = app.extensions["trialmgr"]
    state.db.dispose()
    state.db = db
    return own, CliRunner(app)


def _enroll(db, actor, sex="F"):
    with db.session() as s:
        res = enrollment.screen(s, actor, T, eligible_answers(sex=sex), site="DE")
        return enrollment.enroll(s, actor, T, res.screening.id, consent_date=enrollment.today(),
                                 consent_version="1.0").code


def test_rotate_audit_keeps_old_checkpoints_verifiable(private, db, make_user, trial, tmp_path):
    own, runner = private
    make_user("before", f"{T}:monitor")
    assert runner.invoke(["audit", "checkpoint"]).exit_code == 0
    old_id = keys.audit_public_keys(own).keys() - set()
    result = runner.invoke(["keys", "rotate-audit"])
    assert result.exit_code == 0, result.output
    folder = own.instance_path / keys.AUDIT_PUBLIC_DIR
    assert len(list(folder.glob("*.pem"))) == 2
    assert stat.S_IMODE((own.instance_path / keys.AUDIT_KEY_FILE).stat().st_mode) == 0o600
    make_user("after", f"{T}:monitor")
    assert runner.invoke(["audit", "checkpoint"]).exit_code == 0
    with db.session(write=False) as s:
        signers = {cp.key_id for cp in s.scalars(select(Checkpoint))}
        rotation = s.scalar(select(AuditEntry).where(AuditEntry.action == "audit_key:rotate"))
    assert len(signers) == 2 and old_id <= signers
    assert rotation.old_value in old_id and rotation.new_value in signers
    verify = runner.invoke(["audit", "verify"])
    assert verify.exit_code == 0, verify.output
    # The export bundle carries the retired public key and verifies with no instance at all.
    out = tmp_path / "bundle.zip"
    assert runner.invoke(["export", "--trial", T, "--out", str(out)]).exit_code == 0
    with zipfile.ZipFile(out) as z:
        retired = [n for n in z.namelist() if n.startswith("audit/retired_keys/")]
        cps = [json.loads(line) for line in z.read("audit/checkpoints.jsonl").splitlines() if line.strip()]
    assert len(retired) == 1 and len({cp["key_id"] for cp in cps}) == 2
    checked = runner.invoke(["export", "verify", str(out)])
    assert checked.exit_code == 0, checked.output
    # With the retired key taken out, the bundle no longer verifies (the manifest lists it).
    stripped = tmp_path / "stripped.zip"
    with zipfile.ZipFile(out) as src, zipfile.ZipFile(stripped, "w") as dst:
        for item in src.infolist():
            if item.filename not in retired:
                dst.writestr(item, src.read(item.filename))
    assert runner.invoke(["export", "verify", str(stripped)]).exit_code == 1


def test_rotate_allocation_reencrypts_and_randomization_and_reveal_still_work(private, db, actor, trial):
    own, runner = private
    with db.session() as s:
        lst_id = randomization.generate(s, actor, own, T).id
    first = _enroll(db, actor)
    with db.session() as s:
        randomization.randomize(s, actor, own, T, first)
    old_key = keys.allocation_key(own)
    with db.session(write=False) as s:
        before = dict(((r.stratum, r.seq), r.sealed) for r in s.scalars(
            select(AllocationSlot).where(AllocationSlot.list_id == lst_id)))
    result = runner.invoke(["keys", "rotate-allocation"])
    assert result.exit_code == 0, result.output
    new_key = keys.allocation_key(own)
    assert new_key != old_key and len(new_key) == 32
    retired = list(own.instance_path.glob("allocation.key.retired-*"))
    assert len(retired) == 1 and retired[0].read_bytes() == old_key
    assert stat.S_IMODE((own.instance_path / keys.ALLOCATION_KEY_FILE).stat().st_mode) == 0o600
    assert not (own.instance_path / "allocation.key.new").exists()
    with db.session(write=False) as s:
        slots = s.scalars(select(AllocationSlot).where(AllocationSlot.list_id == lst_id)).all()
        lst = s.get(AllocationList, lst_id)
        rekey = s.scalar(select(AuditEntry).where(AuditEntry.action == "allocation_list:rekey"))
    assert len(slots) == len(before) and all(sl.sealed != before[(sl.stratum, sl.seq)] for sl in slots)
    probe = slots[0]
    aad = concealment.slot_aad(T, probe.stratum, probe.seq)
    with pytest.raises(concealment.ConcealmentError):
        concealment.decrypt_arm(old_key, aad, probe.sealed)
    assert concealment.decrypt_arm(new_key, aad, probe.sealed)
    assert concealment.decrypt_blob(new_key, f"{T}|list|{lst.number}".encode(), lst.secret)
    assert rekey.new_value == keys.allocation_key_id(new_key) and rekey.old_value == keys.allocation_key_id(old_key)
    # Randomization goes on with the new key, and reveal proves the whole list and both assignments.
    second = _enroll(db, actor, sex="F")
    with db.session() as s:
        randomization.randomize(s, actor, own, T, second)
        s.execute(update(Trial).values(data_state=DataState.LOCKED))
        report = randomization.reveal(s, actor, own, T)
    assert report["ok"], report
    only = report["lists"][0]
    assert only["commitment_matches"] and only["reproduced_from_seed"] and only["assignments"] == 2
    assert runner.invoke(["audit", "verify"]).exit_code == 0


def test_a_failed_allocation_rotation_changes_nothing(private, db, actor, trial):
    own, runner = private
    with db.session() as s:
        lst_id = randomization.generate(s, actor, own, T).id
    with db.session(write=False) as s:
        before = {(r.stratum, r.seq): r.sealed for r in s.scalars(select(AllocationSlot)
                                                                   .where(AllocationSlot.list_id == lst_id))}
    key_file = own.instance_path / keys.ALLOCATION_KEY_FILE
    right = key_file.read_bytes()
    key_file.write_bytes(concealment.new_allocation_key())  # the wrong key: nothing decrypts
    result = runner.invoke(["keys", "rotate-allocation"])
    assert result.exit_code == 1 and "nothing was changed" in result.output
    assert not (own.instance_path / "allocation.key.new").exists()
    assert not list(own.instance_path.glob("allocation.key.retired-*"))
    with db.session(write=False) as s:
        after = {(r.stratum, r.seq): r.sealed for r in s.scalars(select(AllocationSlot)
                                                                  .where(AllocationSlot.list_id == lst_id))}
        assert s.scalar(select(AuditEntry).where(AuditEntry.action == "allocation_list:rekey")) is None
    assert after == before
    key_file.write_bytes(right)
    # An interrupted earlier rotation (a staged key left behind) is refused until the operator settles it.
    (own.instance_path / "allocation.key.new").write_bytes(b"x" * 32)
    result = runner.invoke(["keys", "rotate-allocation"])
    assert result.exit_code == 1 and "did not finish" in result.output
