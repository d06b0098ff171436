"""A database that refuses writes gives clear errors, loses nothing already acknowledged, and reads go on.

PostgreSQL: `ALTER DATABASE <throwaway> SET default_transaction_read_only = on`, then the app's connections
are terminated so that the pool reconnects (pool_pre_ping) into read-only sessions, as after a failover to a
read-only standby. SQLite: the tests run as root here, so chmod cannot take write access away; the same
database file is served again through a read-only URI (`file:...?mode=ro`), which SQLite enforces itself.

Then: writes get 503 with error code `database_read_only` and a message saying so (HTML pages the same
message), reads and /healthz keep answering 200, and once writes are allowed again the refused requests,
retried with their Idempotency-Key, succeed exactly once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.e2e.live_server import LiveServer
from tests.e2e.resilience_support import (
    BASE,
    ENGINES,
    audit_verifies,
    check_allocations,
    enroll,
    no_tracebacks,
    pain_values,
    stored_form,
)
from tests.support import eligible_answers


@contextmanager
def read_only(live: LiveServer) -> Iterator[LiveServer]:
    """The same instance and database, refusing writes for the duration of the block."""
    if live.is_postgres:
        name = make_url(live.database_url).database
        assert live.admin_url is not None and name and name.startswith("trialmgr_")
        admin = create_engine(live.admin_url, isolation_level="AUTOCOMMIT")

        def set_read_only(on: bool) -> None:
            with admin.connect() as conn:
                flag = "on" if on else "off"
                conn.execute(text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = {flag}'))
                # The setting applies to new sessions: end the app's, its pool reconnects on the next checkout.
                conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  "WHERE datname = :d AND pid <> pg_backend_pid()"), {"d": name})

        try:
            set_read_only(True)
            yield live
        finally:
            try:
                set_read_only(False)
            finally:
                admin.dispose()
        return
    path = make_url(live.database_url).database
    live._stop_gunicorn()
    ro = LiveServer(workers=2, threads=2, tmp=live.tmp, setup_instance=False,
                    database_url=f"sqlite:///file:{path}?mode=ro&uri=true")
    try:
        with ro:
            ro.tokens = live.tokens
            yield ro
    finally:
        live._start_gunicorn()


@pytest.fixture(params=ENGINES)
def live(request) -> Iterator[LiveServer]:
    with LiveServer(workers=2, threads=2) as server:
        yield server


def test_read_only_database_refuses_writes_clearly_and_loses_nothing(live):
    codes = enroll(live, 8)
    inv = live.tokens["investigator"]
    acknowledged: dict[str, str] = {}
    with live.client() as api:
        for code in codes[:4]:
            r = api.post(f"{BASE}/participants/{code}/randomize", token=inv, headers={"Idempotency-Key": f"ro-{code}"})
            assert r.status == 201, r.body
            acknowledged[code] = r.json()["arm"]["code"]
        r = api.request("PUT", f"{BASE}/participants/{codes[0]}/visits/BL/forms/pain", {"values": pain_values(0)},
                        token=live.tokens[codes[0][:2]])
        assert r.status == 200, r.body

    keys = {code: f"ro-{uuid.uuid4()}" for code in codes[4:]}
    with read_only(live) as ro, ro.client() as api:
        for code in codes[4:]:
            r = api.post(f"{BASE}/participants/{code}/randomize", token=inv, headers={"Idempotency-Key": keys[code]})
            assert r.status == 503, (r.status, r.body)
            err = r.json()["error"]
            assert err["code"] == "database_read_only" and "refuses writes" in err["message"], err
            assert r.header("Retry-After")
        r = api.request("PUT", f"{BASE}/participants/{codes[1]}/visits/BL/forms/pain", {"values": pain_values(1)},
                        token=ro.tokens[codes[1][:2]])
        assert r.status == 503 and r.json()["error"]["code"] == "database_read_only", r.body
        r = api.post(f"{BASE}/screenings", {"answers": eligible_answers(), "site": "DE"}, token=ro.tokens["DE"])
        assert r.status == 503 and r.json()["error"]["code"] == "database_read_only", r.body
        # Reads go on: participants, their arms, forms, and the health check (the database answers).
        for code, arm in acknowledged.items():
            r = api.get(f"{BASE}/participants/{code}", token=inv)
            assert r.status == 200 and r.json()["arm"]["code"] == arm, r.body
        r = api.get(f"{BASE}/participants/{codes[0]}/visits/BL/forms/pain", token=inv)
        assert r.status == 200 and r.json()["values"] == {k: str(v) for k, v in pain_values(0).items()}, r.body
        r = api.get(f"{BASE}/participants", token=inv)
        assert r.status == 200 and len(r.json()["participants"]) == len(codes)
        health = api.get("/healthz")
        assert health.status == 200 and health.json()["checks"]["database"] == "ok", health.body
        no_tracebacks(ro)

    # Nothing acknowledged was lost, nothing refused was half-written.
    check_allocations(live, acknowledged)
    assert stored_form(live, codes[1])[0] == 0
    with live.client() as api:
        for code in codes[4:]:
            r = api.post(f"{BASE}/participants/{code}/randomize", token=inv, headers={"Idempotency-Key": keys[code]})
            assert r.status == 201 and r.header("Idempotent-Replayed") != "true", (r.status, r.body)
            acknowledged[code] = r.json()["arm"]["code"]
    check_allocations(live, acknowledged)
    audit_verifies(live)
    no_tracebacks(live)

