"""Restart PostgreSQL under load: the app reports the outage clearly meanwhile and recovers by itself.

PostgreSQL only (collected only when TRIALMGR_TEST_DATABASE_URL is set; there is no SQLite server to
restart). The server on this machine is shared with other test runs, so the restart is the one
`pg_ctlcluster <version> main restart` this test needs, and the test waits for the server to accept
connections again before it finishes.

During the restart: /healthz answers 503 with "database": "unreachable"; API requests get 503 with a JSON
error naming the outage (never a 500 or a traceback). Afterwards, with no restart of gunicorn: the pools
reconnect (pool_pre_ping), /healthz is 200 again, the clients' retries (same Idempotency-Key) complete every
randomization exactly once, and the audit trail verifies.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from tests.e2e.live_server import LiveServer
from tests.e2e.resilience_support import (
    BASE,
    ENGINES_PG_ONLY,
    PG_URL,
    audit_verifies,
    background,
    check_allocations,
    enroll,
    no_tracebacks,
    with_retries,
)

# Collected only in the PostgreSQL pass: on a SQLite-only run this module holds no test (not a skipped one).
__test__ = bool(PG_URL)

PARTICIPANTS = 90
CLIENTS = 6
OUTAGE_CODES = {"database_unavailable", "database_busy"}
RECOVERED_WITHIN = 3.0  # seconds after the server accepts connections again


def traceback_in(live: LiveServer) -> str:
    log = live.log_text()
    at = log.find("Traceback")
    return log[max(0, at - 2000):at + 6000] if at >= 0 else "(no traceback in the log)"


def restart_postgres() -> float:
    versions = sorted(os.listdir("/etc/postgresql"))
    assert versions, "no PostgreSQL cluster in /etc/postgresql"
    start = time.monotonic()
    proc = subprocess.run(["pg_ctlcluster", versions[-1], "main", "restart"], capture_output=True, text=True,
                          timeout=90)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return time.monotonic() - start


def wait_for_postgres(url: str, timeout: float = 60.0) -> None:
    engine = create_engine(url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
                return
            except OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        engine.dispose()


@pytest.fixture(params=ENGINES_PG_ONLY)
def live(request) -> Iterator[LiveServer]:
    with LiveServer(workers=3, threads=2) as server:
        yield server


def test_postgresql_restart_during_load(live):
    codes = enroll(live, PARTICIPANTS)
    inv = live.tokens["investigator"]
    health: list[tuple[float, int, dict]] = []
    outage_answers: list[tuple[int, dict]] = []
    results: dict[str, object] = {}
    lock = threading.Lock()
    queue = list(codes)
    t0 = time.monotonic()

    def poll_health(stop: threading.Event, _i: int) -> None:
        with live.client(timeout=10) as api:
            for _ in range(3000):  # bounded: ~20 polls a second for at most a few minutes
                if stop.is_set():
                    return
                r = api.get("/healthz")
                with lock:
                    health.append((time.monotonic() - t0, r.status, r.json()))
                stop.wait(0.05)

    def randomize(stop: threading.Event, _i: int) -> None:
        with live.client(timeout=10) as api:
            while not stop.is_set():
                with lock:
                    if not queue:
                        return
                    code = queue.pop()
                a = with_retries(api, "POST", f"{BASE}/participants/{code}/randomize", {}, token=inv,
                                 key=f"restart-{uuid.uuid4()}", attempts=60, deadline_s=45)
                with lock:
                    results[code] = a
                    for s in a.seen:
                        if s == 503:
                            outage_answers.append((s, {}))
                if stop.wait(0.03):  # paced, so that the load spans the restart
                    return

    def read(stop: threading.Event, _i: int) -> None:
        with live.client(timeout=10) as api:
            for n in range(3000):
                if stop.is_set():
                    return
                r = api.get(f"{BASE}/participants/{codes[n % len(codes)]}", token=inv)
                with lock:
                    if r.status != 200:
                        outage_answers.append((r.status, r.json()))
                stop.wait(0.05)

    with background(poll_health, threads=2, name="health"), background(read, threads=2, name="read"), \
            background(randomize, threads=CLIENTS, name="randomize") as stop:
        time.sleep(1.0)
        try:
            took = restart_postgres()
        finally:
            wait_for_postgres(PG_URL)  # whatever happened, leave the shared server up
        back_at = time.monotonic() - t0
        # Let the load run on against the restarted server until every randomization is through.
        # Then a few more seconds of health checks and reads to show that it stays recovered.
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and len(results) < len(codes):
            time.sleep(0.2)
        time.sleep(max(0.0, back_at + RECOVERED_WITHIN + 2 - (time.monotonic() - t0)))
        stop.set()

    print(f"restart took {took:.1f} s; {len(outage_answers)} outage answers; "
          f"{sum(1 for _, s, _ in health if s == 503)} of {len(health)} health checks said 503")
    # The outage was reported clearly.
    down = [(t, body) for t, status, body in health if status == 503]
    assert down, "no /healthz answer reported the restart"
    assert all(body["checks"]["database"] == "unreachable" and body["status"] == "unavailable" for _, body in down)
    assert all(status in (200, 503) for _, status, _ in health)
    for status, body in outage_answers:
        assert status == 503, (status, body)
        if body:
            assert body["error"]["code"] in OUTAGE_CODES and body["error"]["message"], body
    # ... and the app recovered by itself: healthy again soon after the server came back, and stays so.
    after = [(t, s) for t, s, _ in health if t > back_at + RECOVERED_WITHIN]
    assert after and all(s == 200 for _, s in after), after[:20]
    # Every randomization went through once, with the arm its client was told.
    failed = {c: a.seen for c, a in results.items() if not a.ok}
    assert len(results) == len(codes) and not failed, (failed, traceback_in(live))
    told = {c: a.final.json()["arm"]["code"] for c, a in results.items()}
    assert sum(check_allocations(live, told).values()) == len(codes)
    audit_verifies(live)
    no_tracebacks(live)
