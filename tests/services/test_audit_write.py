"""The audit write path: entries buffered in the caller's transaction and written in as few statements as the
engine allows, heads advanced with them."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from trialmgr import keys
from trialmgr.db.models_audit import AuditEntry, ChainHead
from trialmgr.domain.vocab import Role
from trialmgr.services import audit, audit_query
from trialmgr.services.context import Actor

T = "hip-pt-clbp"
ACTOR = Actor(username="ana", role=Role.COORDINATOR, trial=T, sites=("DE",), client_addr="127.0.0.1")


def test_a_bulk_transaction_over_several_chains_writes_every_entry_and_head(db, settings):
    # 1,203 entries in one transaction: more than one multi-row statement on PostgreSQL.
    with db.session() as s:
        for i in range(1203):
            audit.record(s, ACTOR, "form_value:create", "form_value", i, participant=f"DE-{i % 3:04d}",
                         field="f", new=str(i))
    with db.session(write=False) as s:
        counts = dict(s.execute(select(AuditEntry.chain, func.count()).where(AuditEntry.trial == T)
                                .group_by(AuditEntry.chain)).all())
        heads = {h.chain: h.chain_seq for h in s.scalars(select(ChainHead).where(ChainHead.trial == T))}
        assert counts == heads == {f"{T}/p/DE-{k:04d}": 401 for k in range(3)}
        report = audit_query.verify(s, keys.audit_public_keys(settings), T)
    assert report.ok and report.entries == 1203, report.problem


def test_entries_recorded_before_a_query_are_visible_to_it_and_written_once(db):
    with db.session() as s:
        audit.record(s, ACTOR, "form_value:create", "form_value", 1, participant="DE-0001", field="f", new="1")
        assert s.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.trial == T)) == 1
        audit.record(s, ACTOR, "form_value:update", "form_value", 1, participant="DE-0001", field="f", old="1",
                     new="2", reason="typo")
    with db.session(write=False) as s:
        rows = s.scalars(select(AuditEntry).where(AuditEntry.trial == T).order_by(AuditEntry.seq)).all()
        assert [(r.chain_seq, r.new_value) for r in rows] == [(1, "1"), (2, "2")]
        assert rows[1].prev_hash == rows[0].hash
        assert s.get(ChainHead, f"{T}/p/DE-0001").hash == rows[1].hash


@pytest.mark.parametrize("bad", [{"new": 3}, {"field": b"f"}, {"old": 1.5}])
def test_values_that_are_not_text_are_refused_before_anything_is_written(db, bad):
    with db.session() as s:
        with pytest.raises(ValueError, match="expected text or None"):
            audit.record(s, ACTOR, "form_value:create", "form_value", 1, participant="DE-0001",
                         **{"field": "f", "new": "1", **bad})
        s.rollback()
    with db.session(write=False) as s:
        assert s.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.trial == T)) == 0


def test_awkward_text_is_stored_exactly_as_hashed(db, settings):
    awkward = ['quote " and \'single\'', "back\\slash \\u0041 \\\\", "new\nline\r\ttab",
               "controls \x01\x08\x0b\x1f\x7f", "ünïcødé — 中文 \u2028\u2029 😀", "",
               " spaced ", "%s %(x)s {} $1", "null", "[1]"]
    with db.session() as s:
        for i, text in enumerate(awkward):
            audit.record(s, ACTOR, "form_value:update", "form_value", text, participant="DE-0009", field=text,
                         old=text, new=text[::-1], reason=text or None)
    with db.session(write=False) as s:
        rows = s.scalars(select(AuditEntry).where(AuditEntry.trial == T).order_by(AuditEntry.seq)).all()
        assert [(r.entity_id, r.field, r.old_value, r.new_value) for r in rows] == \
            [(t, t, t, t[::-1]) for t in awkward]
        report = audit_query.verify(s, keys.audit_public_keys(settings), T)
    assert report.ok and report.entries == len(awkward), report.problem


def test_a_visit_form_save_takes_its_chain_head_with_the_visit_records(db, settings, randomized, monkeypatch):
    """On PostgreSQL the statement that locks the visit's form records also locks and reads the participant's
    chain head, so the save's entries need no separate lock; the head stays locked until commit, and a head
    this transaction already advanced is not replaced by the row's older value."""
    from sqlalchemy import event

    from trialmgr.services import crf, enrollment

    code = randomized()
    chain = f"{T}/p/{code}"
    pg = db.engine.dialect.name == "postgresql"
    locked_apart: list[str] = []
    real = audit._lock_head

    def spy(s, c, t):  # a head not yet held by the transaction is locked by a statement of its own
        if c not in s.info.get(audit._HEADS, {}):
            locked_apart.append(c)
        return real(s, c, t)

    monkeypatch.setattr(audit, "_lock_head", spy)

    def save(s, values, reason=None):
        p = enrollment.get_participant(s, ACTOR, T, code, lock=True)
        return crf.save_form(s, ACTOR, p, "pain", values, visit_code="W4", reason=reason)

    statements: list[str] = []
    listener = lambda *args: statements.append(args[2])  # noqa: E731  (before_cursor_execute: the SQL text)
    event.listen(db.engine, "before_cursor_execute", listener)
    try:
        with db.session() as s:
            save(s, {"back_pain": "6", "hip_pain": "3"})  # the visit's first record
    finally:
        event.remove(db.engine, "before_cursor_execute", listener)
    both = [q for q in statements if "FOR UPDATE OF form_record" in q and "audit_chain_head" in q
            and q.rstrip().endswith(("FOR UPDATE OF h", "FOR UPDATE OF audit_chain_head"))]
    assert len(both) == (1 if pg else 0), statements
    with db.session() as s:
        save(s, {"back_pain": "5", "hip_pain": "3"}, reason="typo")
    assert (chain in locked_apart) is not pg

    with db.session() as s:  # the chain advanced in this transaction before the save: its head is kept
        audit.record(s, ACTOR, "note:create", "note", 1, participant=code, field="f", new="x")
        s.flush()
        save(s, {"back_pain": "4", "hip_pain": "3"}, reason="typo again")
    with db.session(write=False) as s:
        report = audit_query.verify(s, keys.audit_public_keys(settings), T)
        assert report.ok, report.problem
        fields = [e.field for e in s.scalars(select(AuditEntry).where(AuditEntry.chain == chain)
                                             .order_by(AuditEntry.seq.desc()).limit(2))]
        assert fields == ["back_pain", "f"]
