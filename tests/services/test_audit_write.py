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
