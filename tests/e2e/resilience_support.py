"""Helpers of the resilience tests: enrol participants in-process, find and kill gunicorn workers, a client
that retries the way a careful API client does, and the database checks every resilience test ends with.

Only 127.0.0.1 is contacted; every retry loop is bounded in count and in time.
"""

from __future__ import annotations

import datetime as dt
import http.client
import os
import signal
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text

from tests.e2e.live_server import HOST, SITES, TRIAL, ApiClient, LiveServer, Response
from tests.support import eligible_answers

BASE = f"/api/v1/trials/{TRIAL}"
STRATA = [(site, sex) for site in SITES for sex in ("F", "M")]
PG_URL = os.environ.get("TRIALMGR_TEST_DATABASE_URL") or None
# Collection-time engine list: PostgreSQL-only tests are parametrized with ENGINES_PG_ONLY, which is empty
# (no test at all, not a skip) on a SQLite-only run.
ENGINES = ["postgresql" if PG_URL else "sqlite"]
ENGINES_PG_ONLY = ["postgresql"] if PG_URL else []


def pain_values(i: int) -> dict[str, int]:
    return {"back_pain": i % 11, "hip_pain": (i * 3 + 1) % 11}


def enroll(live: LiveServer, n: int, *, randomize: int = 0) -> list[str]:
    """Screen and enroll n participants in-process (evenly over the 6 strata), randomizing the first
    `randomize` of them; returns their codes. Much faster than the API, and not what is under test."""
    from trialmgr.config import load_settings
    from trialmgr.db import Database
    from trialmgr.services import enrollment, randomization
    from trialmgr.services.context import cli_actor

    settings = load_settings({"instance_path": live.instance_path, "database_url": live.database_url}, environ={})
    db = Database(live.database_url)
    actor = cli_actor(trial=TRIAL)
    today = dt.datetime.now(dt.UTC).date()
    codes: list[str] = []
    try:
        for lo in range(0, n, 20):
            with db.session() as s:
                for i in range(lo, min(n, lo + 20)):
                    site, sex = STRATA[i % len(STRATA)]
                    res = enrollment.screen(s, actor, TRIAL, eligible_answers(sex=sex), site=site)
                    p = enrollment.enroll(s, actor, TRIAL, res.screening.id, consent_date=today,
                                          consent_version="1.0")
                    codes.append(p.code)
        for code in codes[:randomize]:
            with db.session() as s:
                randomization.randomize(s, actor, settings, TRIAL, code)
    finally:
        db.dispose()
    return codes


# -- gunicorn workers ----------------------------------------------------------------------------------------


def worker_pids(live: LiveServer) -> list[int]:
    """The live gunicorn master's children (its workers), read from /proc."""
    assert live._proc is not None
    master = live._proc.pid
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                stat = fh.read()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may contain spaces, so split after the last ')'
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and int(fields[1]) == master:
            pids.append(int(entry))
    return sorted(pids)


def sigkill_worker(live: LiveServer, pid: int) -> bool:
    """SIGKILL one worker, never the master; False if it had already gone."""
    assert live._proc is not None and pid != live._proc.pid
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def wait_for_workers(live: LiveServer, n: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(worker_pids(live)) >= n:
            return
        time.sleep(0.1)
    raise AssertionError(f"gunicorn did not bring back {n} workers in {timeout:.0f} s:\n{live.log_tail()}")


# -- a client that retries like a careful one ----------------------------------------------------------------


TRANSIENT = (OSError, http.client.HTTPException)  # reset, refused, timed out, remote disconnected


@dataclass
class Attempts:
    """Everything one logical request saw: each attempt's status (or exception name), and the final answer."""

    method: str
    path: str
    seen: list[Any] = field(default_factory=list)
    final: Response | None = None

    @property
    def ok(self) -> bool:
        return self.final is not None and self.final.status in (200, 201)


def with_retries(api: ApiClient, method: str, path: str, body: Any, *, token: str, key: str | None = None,
                 attempts: int = 15, deadline_s: float = 40.0, retry_on: tuple[int, ...] = (502, 503, 504)
                 ) -> Attempts:
    """Send until an answer that is not an outage comes back, at most `attempts` times and `deadline_s` seconds.

    Only requests that cannot create a second record are retried: an Idempotency-Key, or a PUT of the same
    values (a repeat changes nothing).
    """
    assert key is not None or method in ("GET", "PUT"), "only idempotent requests may be retried"
    headers = {"Idempotency-Key": key} if key else None
    out = Attempts(method, path)
    stop = time.monotonic() + deadline_s
    for n in range(attempts):
        try:
            r = api.request(method, path, body, headers=headers, token=token)
        except TRANSIENT as exc:
            out.seen.append(type(exc).__name__)
        else:
            out.seen.append(r.status)
            if r.status not in retry_on:
                out.final = r
                return out
        if time.monotonic() > stop:
            break
        time.sleep(min(0.05 * (n + 1), 0.5))
    return out


def send_and_hang_up(port: int, method: str, path: str, body: bytes, headers: dict[str, str]) -> None:
    """Send a complete request and close the connection without reading a byte of the answer: the client
    that timed out."""
    hdrs = {"Host": f"{HOST}:{port}", "Content-Length": str(len(body)), "Connection": "close", **headers}
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(head.encode("latin-1") + body)
        sock.shutdown(socket.SHUT_WR)


# -- background load ----------------------------------------------------------------------------------------


@contextmanager
def background(fn, *, threads: int, name: str) -> Iterator[threading.Event]:
    """Run fn(stop_event, i) in `threads` threads until the block ends; exceptions re-raised at the end."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            fn(stop, i)
        except BaseException as exc:  # re-raised in the main thread
            errors.append(exc)

    ts = [threading.Thread(target=run, args=(i,), name=f"{name}-{i}", daemon=True) for i in range(threads)]
    for t in ts:
        t.start()
    try:
        yield stop
    finally:
        stop.set()
        for t in ts:
            t.join(timeout=60)
    assert not any(t.is_alive() for t in ts), f"{name} threads did not stop"
    if errors:
        raise errors[0]


# -- what the database must hold afterwards -----------------------------------------------------------------


def check_allocations(live: LiveServer, acknowledged: dict[str, str]) -> dict[str, int]:
    """Every acknowledged randomization is stored with the arm the client was told; no slot is half-used:
    per stratum, slots 1..n are taken without gaps and the cursor stands at n + 1. Returns n per stratum."""
    with live.engine() as engine, engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT p.code, a.stratum, a.slot_seq, a.arm, a.list_id FROM allocation a "
            "JOIN participant p ON p.id = a.participant_id ORDER BY a.id")).all()
        cursors = {(lst, st): n for lst, st, n in conn.execute(text(
            "SELECT list_id, stratum, next_seq FROM stratum_cursor"))}
        randomized = {c for (c,) in conn.execute(text("SELECT code FROM participant WHERE status = 'randomized'"))}
    stored = {r.code: r.arm for r in rows}
    assert len(stored) == len(rows), "a participant holds two allocations"
    assert set(stored) == randomized, "participant status and allocations disagree"
    lost = {c: arm for c, arm in acknowledged.items() if stored.get(c) != arm}
    assert not lost, f"acknowledged randomizations missing or with another arm in the database: {lost}"
    by: dict[tuple[int, str], list[int]] = defaultdict(list)
    for r in rows:
        by[(r.list_id, r.stratum)].append(r.slot_seq)
    for key, next_seq in cursors.items():
        seqs = sorted(by.get(key, []))
        assert seqs == list(range(1, len(seqs) + 1)), f"{key}: slots not contiguous: {seqs}"
        assert next_seq - 1 == len(seqs), f"{key}: cursor at {next_seq} but {len(seqs)} allocations"
    assert set(by) <= set(cursors)
    return {st: len(v) for (_, st), v in by.items()}


def stored_form(live: LiveServer, code: str, form: str = "pain", visit: str = "BL") -> tuple[int, dict[str, str]]:
    """(number of records, values of the first) of one participant's visit form."""
    with live.engine() as engine, engine.connect() as conn:
        recs = conn.execute(text(
            "SELECT r.id FROM form_record r JOIN participant p ON p.id = r.participant_id "
            "JOIN visit v ON v.id = r.visit_id WHERE p.code = :c AND v.code = :v AND r.form_id = :f"),
            {"c": code, "v": visit, "f": form}).scalars().all()
        values = {} if not recs else dict(conn.execute(text(
            "SELECT field_id, value FROM form_value WHERE record_id = :r AND NOT derived"), {"r": recs[0]}).all())
    return len(recs), values


def audit_count(live: LiveServer, where: str, params: dict) -> int:
    with live.engine() as engine, engine.connect() as conn:
        return conn.execute(text(f"SELECT count(*) FROM audit_entry WHERE {where}"), params).scalar_one()


def audit_verifies(live: LiveServer) -> None:
    verify = live.cli("audit", "verify", timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout.startswith("ok:"), verify.stdout


def no_tracebacks(live: LiveServer) -> None:
    assert "Traceback" not in live.log_text(), live.log_tail(80)
