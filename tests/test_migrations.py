"""The migrations and the models agree, on whichever engine the suite runs."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from trialmgr.db import migrate


def test_schema_at_head_and_models_match(engine):
    assert migrate.current_revision(engine) == migrate.head_revision()
    assert migrate.model_differences(engine) == []


def test_audit_tables_are_append_only(connection):
    connection.execute(text(
        "INSERT INTO audit_entry (trial, chain, chain_seq, ts, action, entity_type, prev_hash, hash) "
        "VALUES ('t', 'c', 1, CURRENT_TIMESTAMP, 'x:y', 'x', 'p', 'h')"))
    for stmt in ("UPDATE audit_entry SET action = 'forged' WHERE chain = 'c'",
                 "DELETE FROM audit_entry WHERE chain = 'c'"):
        with pytest.raises(Exception, match="append-only"), connection.begin_nested():
            connection.execute(text(stmt))
