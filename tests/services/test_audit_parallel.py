"""`trialmgr audit verify` checks the trail in parallel processes: on a committed database (SQLite file or a
throwaway PostgreSQL database) it gives exactly the sequential report, intact or tampered."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import text

from tests.conftest import PG_URL, throwaway_postgres
from tests.services.test_audit_tamper import _disable_append_only
from trialmgr import keys
from trialmgr.db import Database
from trialmgr.db import migrate as migrations
from trialmgr.domain.vocab import Role
from trialmgr.services import audit, audit_query
from trialmgr.services.context import Actor

T = "hip-pt-clbp"


@pytest.fixture
def committed(tmp_path, settings):
    """A database of its own, with a trail of 12 chains over 60 committed transactions and 3 checkpoints."""
    if PG_URL:
        with throwaway_postgres(PG_URL, "trialmgr_par") as url:
            db = _fill(url, settings)
            yield db
            db.dispose()
        return
    db = _fill(f"sqlite:///{tmp_path / 'par.db'}", settings)
    yield db
    db.dispose()


def _fill(url: str, settings) -> Database:
    db = Database(url)
    migrations.upgrade(db.engine)
    actor = Actor(username="ana", role=Role.COORDINATOR, trial=T, sites=("DE",), request_id="r1",
                  client_addr="127.0.0.1")
    t0 = dt.datetime(2025, 2, 28, 23, 59, 59, tzinfo=dt.UTC)
    for i in range(60):
        with db.session() as s:
            for k in range(5):
                audit.record(s, actor, "form_value:update", "form_value", f"{i}:{k}", participant=f"DE-{i % 12:04d}",
                             field=f"f{k}", old=str(i) if i % 2 else None, new=f"{i}-{k}",
                             reason="correction" if i % 2 else None,
                             ts=t0 + dt.timedelta(seconds=i, microseconds=0 if k == 0 else k * 1001))
            if i in (10, 35, 59):
                audit.create_checkpoint(s, keys.audit_private_key(settings), "test")
    return db


def _both(db, settings, **kw):
    pub = keys.audit_public_keys(settings)
    with db.session(write=False) as s:
        sequential = audit_query.verify(s, pub, kw.get("trial"))
    kw.setdefault("min_entries", 0)
    return sequential, audit_query.verify_parallel(db, pub, **kw)


@pytest.mark.parametrize("workers", [2, 3, 7])
def test_an_intact_trail_is_proved_in_parallel_without_the_sequential_pass(committed, settings, monkeypatch,
                                                                            workers):
    pub = keys.audit_public_keys(settings)
    with committed.session(write=False) as s:
        sequential = audit_query.verify(s, pub, T)
    assert sequential.ok and sequential.entries == 300 and sequential.checkpoints == 3 and sequential.chains == 12

    def no_fallback(*_a, **_k):
        raise AssertionError("the sequential pass ran although the segments proved the trail")

    monkeypatch.setattr(audit_query, "verify", no_fallback)
    assert audit_query.verify_parallel(committed, pub, T, workers=workers, min_entries=0) == sequential
    # (one trial only in this database: all chains are the trial's)
    assert audit_query.verify_parallel(committed, pub, None, workers=workers, min_entries=0) == sequential


@pytest.mark.parametrize("tamper, kind", [
    ("UPDATE audit_entry SET new_value = 'forged' WHERE seq = 150", "changed"),
    ("DELETE FROM audit_entry WHERE seq = 151", "missing"),
    ("DELETE FROM audit_entry WHERE seq > 290", "truncated"),
    ("UPDATE audit_entry SET chain_seq = chain_seq + 100 WHERE seq = 200", "changed"),
])
def test_a_tampered_trail_gets_the_sequential_report_naming_the_entry(committed, settings, tamper, kind):
    with committed.engine.begin() as conn:
        _disable_append_only(conn)
        conn.execute(text(tamper))
    sequential, parallel = _both(committed, settings, trial=T, workers=3)
    assert not sequential.ok and sequential.problem.kind == kind
    assert parallel == sequential


def test_timestamps_formatted_by_the_database_match_the_hashed_text(committed, settings):
    # Whole seconds (fraction .000000) and month ends are in the trail; a row written by other means with a
    # "T" and a zone offset is read as the same instant.
    sequential, parallel = _both(committed, settings, workers=2)
    assert sequential.ok and parallel.ok
    if committed.engine.dialect.name == "sqlite":
        with committed.engine.begin() as conn:
            _disable_append_only(conn)
            conn.execute(text("UPDATE audit_entry SET ts = replace(ts, ' ', 'T') || '+00:00' WHERE seq = 7"))
        assert _both(committed, settings, workers=2)[1].ok


def test_a_small_trail_is_verified_in_one_pass_without_starting_processes(committed, settings, monkeypatch):
    import multiprocessing

    def no_processes(*_a, **_k):
        raise AssertionError("processes started for 300 entries")

    monkeypatch.setattr(multiprocessing, "get_context", no_processes)
    sequential, parallel = _both(committed, settings, workers=4, min_entries=301)
    assert parallel == sequential and parallel.ok
