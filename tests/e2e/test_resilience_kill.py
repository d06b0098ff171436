"""SIGKILL gunicorn workers at random moments while clients randomize and save forms.

Clients behave as a careful API client does: a request whose connection broke (its worker was killed) is
sent again, randomizations with the same Idempotency-Key, form saves as the same PUT of the same values.
What every client was told is recorded; afterwards the live database must hold every acknowledged change,
exactly once, no allocation slot may be half-used, and `trialmgr audit verify` must pass.

Runs on the suite's engine: SQLite (a killed writer leaves its WAL frames uncommitted and its lock released)
or, when TRIALMGR_TEST_DATABASE_URL is set, a throwaway PostgreSQL database (the killed worker's backend
rolls back and releases the stratum cursor's row lock).
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.live_server import LiveServer
from tests.e2e.resilience_support import (
    BASE,
    ENGINES,
    Attempts,
    audit_count,
    audit_verifies,
    check_allocations,
    enroll,
    pain_values,
    sigkill_worker,
    stored_form,
    wait_for_workers,
    with_retries,
    worker_pids,
)

WORKERS = 4
RANDOMIZE = 72          # 12 per stratum, randomized under fire
FORMS = 48              # baseline pain forms entered under fire (on participants randomized beforehand)
CLIENTS = 12            # more clients than the 8 request slots: the workers are busy whenever one is killed
MAX_KILLS = 8
LOAD_DEADLINE_S = 45.0


@pytest.fixture(params=ENGINES)
def live(request) -> Iterator[LiveServer]:
    with LiveServer(workers=WORKERS, threads=2) as server:
        yield server


def test_sigkill_workers_during_randomizations_and_form_saves(live):
    codes = enroll(live, RANDOMIZE + FORMS, randomize=0)
    to_randomize, to_fill = codes[:RANDOMIZE], codes[RANDOMIZE:]
    rng = random.Random(20240609)
    tokens = live.tokens

    def randomize(code: str) -> tuple[str, Attempts]:
        # The investigator may randomize anywhere; a fresh key per participant, reused by every retry.
        return code, with_retries(api, "POST", f"{BASE}/participants/{code}/randomize", {},
                                  token=tokens["investigator"], key=f"kill-{uuid.uuid4()}")

    def fill(i: int, code: str) -> tuple[str, Attempts]:
        return code, with_retries(api, "PUT", f"{BASE}/participants/{code}/visits/BL/forms/pain",
                                  {"values": pain_values(i)}, token=tokens[code[:2]])

    kills: list[tuple[float, int]] = []
    done = threading.Event()
    finished = [0]
    lock = threading.Lock()

    def counted(task):
        def run():
            try:
                return task()
            finally:
                with lock:
                    finished[0] += 1
        return run

    tasks = [lambda c=c: randomize(c) for c in to_randomize] + [lambda i=i, c=c: fill(i, c)
                                                                for i, c in enumerate(to_fill)]
    rng.shuffle(tasks)
    tasks = [counted(t) for t in tasks]
    # Kill at points of progress rather than of time, so a fast machine cannot finish the load first.
    marks = sorted(rng.uniform(lo, lo + 0.1) for lo in (0.02, 0.15, 0.3, 0.45, 0.6, 0.75))[:MAX_KILLS]

    def killer() -> None:
        start = time.monotonic()
        pending = list(marks)
        while pending and not done.is_set() and time.monotonic() - start < LOAD_DEADLINE_S:
            if finished[0] < pending[0] * len(tasks):
                done.wait(0.005)
                continue
            pending.pop(0)
            pids = worker_pids(live)
            if pids and sigkill_worker(live, (pid := rng.choice(pids))):
                kills.append((time.monotonic() - start, pid))

    with live.client(timeout=20) as api:
        wait_for_workers(live, WORKERS)
        k = threading.Thread(target=killer, name="killer", daemon=True)
        k.start()
        try:
            with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
                results = [f.result(timeout=LOAD_DEADLINE_S + 30) for f in [pool.submit(t) for t in tasks]]
        finally:
            done.set()
            k.join(timeout=10)
        wait_for_workers(live, WORKERS)

    randomized = {code: a for code, a in results if a.path.endswith("/randomize")}
    filled = {code: a for code, a in results if a.path.endswith("/pain")}
    interrupted = sum(1 for a in randomized.values() if len(a.seen) > 1) + sum(
        1 for a in filled.values() if len(a.seen) > 1)
    print(f"{len(kills)} workers killed at {[round(t, 2) for t, _ in kills]} s; {interrupted} requests needed "
          f"a retry")
    assert len(kills) >= 3, f"only {len(kills)} kills: the load ended too early to test anything"
    assert interrupted >= 1, "no request was ever interrupted: the kills missed the load"
    # Nothing but success or a broken connection (named by its exception: reset, incomplete read...): never a
    # 500 and never an error that blames the client.
    for a in [*randomized.values(), *filled.values()]:
        assert all(isinstance(s, str) or s in (200, 201, 503) for s in a.seen), \
            f"{a.path}: {a.seen}\n{live.log_tail(120)}"
    not_done = {c: a.seen for c, a in [*randomized.items(), *filled.items()] if not a.ok}
    assert not not_done, f"requests never succeeded within their retries: {not_done}"

    # What the clients were told is what the database holds, once.
    told = {code: a.final.json()["arm"]["code"] for code, a in randomized.items()}
    created = sum(a.final.json()["created"] and a.final.header("Idempotent-Replayed") != "true"
                  for a in randomized.values())
    replayed = sum(a.final.header("Idempotent-Replayed") == "true" for a in randomized.values())
    assert created + replayed == RANDOMIZE, (created, replayed)
    per_stratum = check_allocations(live, told)
    assert sum(per_stratum.values()) == RANDOMIZE
    for code in to_randomize:
        assert audit_count(live, "participant = :c AND action = 'allocation:create'", {"c": code}) == 1, code
    for i, code in enumerate(to_fill):
        n, values = stored_form(live, code)
        assert n == 1, f"{code}: {n} pain records"
        assert values == {k: str(v) for k, v in pain_values(i).items()}, (code, values)
        assert audit_count(live, "participant = :c AND action = 'form:create'", {"c": code}) == 3, code
        assert audit_count(live, "participant = :c AND action = 'form:update'", {"c": code}) == 0, code
    audit_verifies(live)
    log = live.log_text()
    assert "Traceback" not in log, live.log_tail(80)
    assert log.count("SIGKILL") >= len(kills) or "was sent SIGKILL" in log
