"""Every tampering a person with database access could try, made with direct SQL on the real engine, is
caught by verification, which names the first bad entry and what is wrong with it."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text

from trialmgr import keys
from trialmgr.db.models_audit import AuditEntry, Checkpoint
from trialmgr.domain import audit as chainlib
from trialmgr.services import audit, audit_query, integrity

T = "hip-pt-clbp"


def _disable_append_only(conn) -> None:
    """What an attacker with the database owner's rights would do first."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("ALTER TABLE audit_entry DISABLE TRIGGER audit_entry_append_only"))
        conn.execute(text("ALTER TABLE audit_checkpoint DISABLE TRIGGER audit_checkpoint_append_only"))
    else:
        for name in ("audit_entry_no_update", "audit_entry_no_delete", "audit_checkpoint_no_update",
                     "audit_checkpoint_no_delete"):
            conn.execute(text(f"DROP TRIGGER {name}"))


@pytest.fixture
def trail(db, actor, settings, enroll, allocation_list):
    """Three participants with several entries each, a signed checkpoint, then more entries."""
    from trialmgr.services import randomization

    codes = [enroll("DE", "F"), enroll("PA", "M"), enroll("NC", "F")]
    with db.session() as s:
        audit.create_checkpoint(s, keys.audit_private_key(settings), "test")
    with db.session() as s:
        for c in codes:
            randomization.randomize(s, actor, settings, T, c)
    with db.session() as s:
        audit.create_checkpoint(s, keys.audit_private_key(settings), "test")
    _disable_append_only(db.connection)
    return codes


def _verify(db, settings, trial=T):
    with db.session(write=False) as s:
        return audit_query.verify(s, keys.audit_public_keys(settings), trial)


def _chain(db, code):
    with db.session(write=False) as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.chain == f"{T}/p/{code}")
                              .order_by(AuditEntry.chain_seq)))


def test_untouched_trail_verifies(db, settings, trail):
    report = _verify(db, settings)
    assert report.ok, report.problem
    assert report.entries > 30 and report.checkpoints == 2
    full = _verify(db, settings, trial=None)
    assert full.ok and full.entries >= report.entries


def test_changed_value(db, settings, trail):
    victim = _chain(db, trail[1])[3]
    db.connection.execute(text("UPDATE audit_entry SET new_value = 'forged' WHERE seq = :s"), {"s": victim.seq})
    report = _verify(db, settings)
    assert not report.ok and report.problem.kind == "changed" and report.problem.seq == victim.seq
    assert str(victim.seq) in report.problem.message


def test_deleted_entry_from_the_middle(db, settings, trail):
    entries = _chain(db, trail[0])
    db.connection.execute(text("DELETE FROM audit_entry WHERE seq = :s"), {"s": entries[2].seq})
    report = _verify(db, settings)
    assert not report.ok and report.problem.kind == "missing"
    assert report.problem.chain == f"{T}/p/{trail[0]}"


def test_inserted_entry_with_a_correct_hash(db, settings, trail):
    conn = db.connection
    entries = _chain(db, trail[2])
    k = entries[1]
    # Make room: spread the global numbering, shift later chain positions, then insert a well-formed forgery.
    conn.execute(text("UPDATE audit_entry SET seq = -seq * 10"))
    conn.execute(text("UPDATE audit_entry SET seq = -seq"))
    conn.execute(text("UPDATE audit_entry SET chain_seq = -(chain_seq + 1) WHERE chain = :c AND chain_seq > :n"),
                 {"c": k.chain, "n": k.chain_seq})
    conn.execute(text("UPDATE audit_entry SET chain_seq = -chain_seq WHERE chain = :c AND chain_seq < 0"),
                 {"c": k.chain})
    fields = {f: getattr(k, f) for f in chainlib.HASHED_FIELDS}
    fields.update(new_value="forged consent", field="consent_date")
    forged = chainlib.next_entry(chainlib.ChainHead(k.chain, k.chain_seq, k.hash), fields)
    forged_seq = k.seq * 10 + 5
    cols = ["seq"] + list(forged)
    conn.execute(text(f"INSERT INTO audit_entry ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)})"),
                 {"seq": forged_seq, **forged})
    report = _verify(db, settings)
    assert not report.ok and report.problem.kind == "inserted" and report.problem.seq == forged_seq


def test_two_entries_swapped(db, settings, trail):
    entries = _chain(db, trail[0])
    a, b = entries[1].seq, entries[4].seq
    conn = db.connection
    conn.execute(text("UPDATE audit_entry SET seq = -1 WHERE seq = :a"), {"a": a})
    conn.execute(text("UPDATE audit_entry SET seq = :a WHERE seq = :b"), {"a": a, "b": b})
    conn.execute(text("UPDATE audit_entry SET seq = :b WHERE seq = -1"), {"b": b})
    report = _verify(db, settings)
    assert not report.ok and report.problem.kind == "reordered"


def test_checkpoint_body_changed(db, settings, trail):
    db.connection.execute(text("UPDATE audit_checkpoint SET body = replace(body, :a, :b) WHERE seq = 1"),
                          {"a": '"type"', "b": ' "type"'})
    report = _verify(db, settings)
    assert not report.ok and report.problem.kind == "signature_invalid" and report.problem.checkpoint == 1


def test_tail_truncated_after_a_checkpoint(db, settings, trail):
    entries = _chain(db, trail[1])
    db.connection.execute(text("DELETE FROM audit_entry WHERE chain = :c AND chain_seq >= :n"),
                          {"c": entries[0].chain, "n": entries[-2].chain_seq})
    report = _verify(db, settings)
    assert not report.ok and report.problem.kind == "truncated" and report.problem.chain == entries[0].chain


def test_checkpoint_deleted(db, settings, trail):
    with db.session() as s:
        from tests.support import eligible_answers
        from trialmgr.services import enrollment
        from trialmgr.services.context import cli_actor

        enrollment.screen(s, cli_actor(), T, eligible_answers(), site="DE")
        audit.create_checkpoint(s, keys.audit_private_key(settings), "test")
    db.connection.execute(text("DELETE FROM audit_checkpoint WHERE seq = 2"))
    report = _verify(db, settings)
    assert not report.ok and report.problem.kind == "checkpoint_missing"


def test_signature_from_another_key_is_refused(db, settings, trail):
    other = chainlib.generate_signing_key()
    report_keys = {chainlib.key_id(other.public_key()): other.public_key()}
    with db.session(write=False) as s:
        report = audit_query.verify(s, report_keys, T)
    assert not report.ok and report.problem.kind == "signature_invalid"


def test_data_changed_behind_the_apps_back(db, settings, trail, make_user):
    make_user("olivia", full_name="Olivia Original")
    with db.session(write=False) as s:
        assert integrity.check_data(s) == []
    db.connection.execute(text("UPDATE user_account SET full_name = 'Mallory' WHERE username = 'olivia'"))
    with db.session(write=False) as s:
        problems = integrity.check_data(s)
    assert problems and "olivia" in problems[0] and "Mallory" in problems[0]


def test_cli_verify_exit_codes(db, runner, trail, settings, tmp_path):
    ok = runner.invoke(args=["audit", "verify", "--trial", T])
    assert ok.exit_code == 0 and "ok:" in ok.output and "checkpoints" in ok.output
    pem = tmp_path / "pub.pem"
    pem.write_text(runner.invoke(args=["audit", "public-key"]).output)
    assert runner.invoke(args=["audit", "verify", "--trial", T, "--public-key", str(pem)]).exit_code == 0
    victim = _chain(db, trail[0])[2]
    db.connection.execute(text("UPDATE audit_entry SET reason = 'edited' WHERE seq = :s"), {"s": victim.seq})
    bad = runner.invoke(args=["audit", "verify", "--trial", T])
    assert bad.exit_code == 1
    assert f"entry {victim.seq}" in bad.output and "changed" in bad.output


def test_checkpoint_covers_only_moved_chains(db, settings, trail):
    with db.session() as s:
        assert audit.create_checkpoint(s, keys.audit_private_key(settings), "periodic") is None
        last = s.scalar(select(Checkpoint).order_by(Checkpoint.seq.desc()).limit(1))
        assert last.seq == 2
