"""Concurrent randomization through a real gunicorn (several workers, dozens of client threads).

The allocation invariants are checked by reading the live database directly afterwards: no slot used twice,
no participant allocated twice, each stratum's slots taken 1..n without gaps and in allocation order, the
arms the API answered equal to the stored ones, block balance kept, and `trialmgr audit verify` passes.
Runs on SQLite by default and on a throwaway PostgreSQL database when TRIALMGR_TEST_DATABASE_URL is set.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text

from tests.e2e.live_server import SITES, TRIAL, ApiClient, LiveServer, Response
from tests.support import eligible_answers

BASE = f"/api/v1/trials/{TRIAL}"
CLIENT_THREADS = 32
PER_STRATUM = 50            # 6 strata -> 300 participants; the default list has ~100 slots per stratum
DUPLICATED = 6              # participants randomized by DUP_REQUESTS simultaneous plain requests
DUP_REQUESTS = 4
KEYED = 6                   # participants randomized by KEY_REQUESTS simultaneous requests with one key
KEY_REQUESTS = 3
MAX_BLOCK = 6               # the default protocol's largest block: |HIP - SPINE| <= 3 in every stratum


def today() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    # 4 workers x 4 threads: up to 16 requests inside the app at once, all contending for 6 cursor rows.
    with LiveServer(workers=4, threads=4) as server:
        yield server


@pytest.fixture
def api(live) -> Iterator[ApiClient]:
    with live.client() as client:
        yield client


def run_all(tasks: list[Callable[[], Response]], threads: int = CLIENT_THREADS) -> list[Response]:
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return [f.result(timeout=120) for f in [pool.submit(t) for t in tasks]]


def simultaneously(n: int, fn: Callable[[int], Response]) -> list[Response]:
    """n threads released together by a barrier: the closest to simultaneous requests a test can get."""
    barrier = threading.Barrier(n, timeout=30)
    out: list[Response | BaseException | None] = [None] * n

    def go(i: int) -> None:
        try:
            barrier.wait()
            out[i] = fn(i)
        except BaseException as exc:  # re-raised in the main thread below
            out[i] = exc

    workers = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    for r in out:
        if not isinstance(r, Response):
            raise AssertionError(f"simultaneous request failed: {r!r}")
    return out  # type: ignore[return-value]


def screen_and_enroll(api: ApiClient, live: LiveServer, site: str, sex: str) -> tuple[str, str]:
    token = live.tokens[site]  # coordinators are site-bound: each site's own coordinator
    r = api.post(f"{BASE}/screenings", {"answers": eligible_answers(sex=sex), "site": site}, token=token)
    assert r.status == 201 and r.json()["eligible"], r.body
    r = api.post(f"{BASE}/participants", {"screening": r.json()["id"], "consent_date": today(),
                                          "consent_version": "1.0"}, token=token)
    assert r.status == 201, r.body
    body = r.json()
    return body["id"], body["stratum"]


def no_server_errors(live: LiveServer) -> None:
    log = live.log_text()
    assert "Traceback" not in log, live.log_tail(80)


def test_concurrent_randomization_follows_the_list(live, api):
    strata = [(site, sex) for site in SITES for sex in ("F", "M")]
    # One enrollment per site first, alone: the first enrollment at a site creates its counter row, and
    # doing that concurrently is a separate (known) race, see test_first_enrollments_at_a_site_race.
    people = [screen_and_enroll(api, live, site, "F") for site in SITES]
    tasks = [(lambda s=s: screen_and_enroll(api, live, *s)) for s in strata for _ in range(PER_STRATUM)]
    people += run_all(tasks[len(SITES):])
    codes = [code for code, _ in people]
    assert len(set(codes)) == len(codes) == PER_STRATUM * len(strata)

    dup, keyed, plain = codes[:DUPLICATED], codes[DUPLICATED:DUPLICATED + KEYED], codes[DUPLICATED + KEYED:]
    def token_for(code: str, i: int = 0) -> str:
        # Alternate the site's coordinator (DE-0007 -> DE) and the investigator, who works across sites.
        return live.tokens[code[:2]] if (int(code[-4:]) + i) % 2 else live.tokens["investigator"]

    def randomize(code: str, i: int = 0, headers: dict | None = None) -> Response:
        return api.post(f"{BASE}/participants/{code}/randomize", token=token_for(code, i), headers=headers)

    keys = {code: f"rand-{uuid.uuid4()}" for code in keyed}
    groups: dict[str, list[Response]] = {}

    def dup_group(code: str) -> None:
        groups[code] = simultaneously(DUP_REQUESTS, lambda i: randomize(code, i))

    def key_group(code: str) -> None:
        groups[code] = simultaneously(KEY_REQUESTS, lambda _i: randomize(code, 0, {"Idempotency-Key": keys[code]}))

    side = [threading.Thread(target=dup_group, args=(c,)) for c in dup]
    side += [threading.Thread(target=key_group, args=(c,)) for c in keyed]
    for t in side:
        t.start()
    main = run_all([(lambda c=c: randomize(c)) for c in plain])
    for t in side:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in side)
    assert set(groups) == set(dup) | set(keyed)

    arms: dict[str, str] = {}
    bad = [(c, r.status, r.body[:200]) for c, r in zip(plain, main, strict=True) if r.status != 201]
    assert not bad, bad
    for code, r in zip(plain, main, strict=True):
        body = r.json()
        assert body["id"] == code and body["created"] is True and body["status"] == "randomized"
        arms[code] = body["arm"]["code"]
    for code in dup:
        rs = groups[code]
        assert sorted(r.status for r in rs) == [200] * (DUP_REQUESTS - 1) + [201], [(r.status, r.body) for r in rs]
        assert sum(r.json()["created"] for r in rs) == 1
        assert len({r.json()["arm"]["code"] for r in rs}) == 1, "duplicate requests answered different arms"
        arms[code] = rs[0].json()["arm"]["code"]
    for code in keyed:
        rs = groups[code]
        assert {r.status for r in rs} == {201}, [(r.status, r.body) for r in rs]
        assert len({r.body for r in rs}) == 1, "a retry with the same Idempotency-Key got a different answer"
        assert sum(r.header("Idempotent-Replayed") != "true" for r in rs) == 1
        again = randomize(code, 0, {"Idempotency-Key": keys[code]})
        assert again.status == 201 and again.body == rs[0].body and again.header("Idempotent-Replayed") == "true"
        arms[code] = rs[0].json()["arm"]["code"]
    # A plain repeat now reports the existing allocation, unchanged.
    again = randomize(plain[0])
    assert again.status == 200 and again.json()["created"] is False and again.json()["arm"]["code"] == arms[plain[0]]

    with live.engine() as engine, engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT a.id, a.list_id, a.stratum, a.slot_seq, a.arm, a.randomized_at, p.code, "
            "p.stratum AS participant_stratum "
            "FROM allocation a JOIN participant p ON p.id = a.participant_id ORDER BY a.id")).all()
        cursors = dict(conn.execute(text("SELECT stratum, next_seq FROM stratum_cursor")).all())
        randomized = {c for (c,) in conn.execute(text("SELECT code FROM participant WHERE status = 'randomized'"))}

    assert len(rows) == len(codes), "allocation count != randomized participants"
    assert len({r.code for r in rows}) == len(rows), "a participant was allocated twice"
    assert len({(r.list_id, r.stratum, r.slot_seq) for r in rows}) == len(rows), "a slot was used twice"
    assert {r.code for r in rows} == set(codes) == randomized
    by_stratum: dict[str, list] = defaultdict(list)
    for r in rows:
        assert r.stratum == r.participant_stratum, f"{r.code}: allocated in {r.stratum}, not its own stratum"
        assert arms[r.code] == r.arm, f"{r.code}: the API answered {arms[r.code]}, the database holds {r.arm}"
        by_stratum[r.stratum].append(r)
    assert len(by_stratum) == len(strata)
    for stratum, allocs in by_stratum.items():
        seqs = [a.slot_seq for a in allocs]  # in allocation-id order
        assert seqs == list(range(1, len(allocs) + 1)), f"{stratum}: slots taken out of order or with gaps: {seqs}"
        times = [a.randomized_at for a in allocs]
        assert times == sorted(times), f"{stratum}: allocation times disagree with the slot order"
        assert cursors[stratum] == len(allocs) + 1
        counts = Counter(a.arm for a in allocs)
        assert abs(counts["HIP"] - counts["SPINE"]) <= MAX_BLOCK // 2, f"{stratum}: {counts} breaks block balance"

    verify = live.cli("audit", "verify")
    assert verify.returncode == 0, verify.stderr + verify.stdout
    assert verify.stdout.startswith("ok:")
    no_server_errors(live)


def test_same_idempotency_key_twice_concurrently_creates_one_screening(live, api):
    token = live.tokens["DE"]
    key = f"scr-{uuid.uuid4()}"
    payload = {"answers": eligible_answers(sex="M"), "site": "DE"}

    with live.engine() as engine, engine.connect() as conn:
        before = conn.execute(text("SELECT count(*) FROM screening")).scalar_one()
    responses = simultaneously(6, lambda _i: api.post(f"{BASE}/screenings", payload, token=token,
                                                      headers={"Idempotency-Key": key}))
    with live.engine() as engine, engine.connect() as conn:
        after = conn.execute(text("SELECT count(*) FROM screening")).scalar_one()
        records = conn.execute(text("SELECT count(*) FROM idempotency_record WHERE key = :k"), {"k": key}).scalar_one()

    assert {r.status for r in responses} == {201}, [(r.status, r.body) for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert len({r.body for r in responses}) == 1
    assert after == before + 1, f"{after - before} screenings for one Idempotency-Key"
    assert records == 1
    assert sum(r.header("Idempotent-Replayed") != "true" for r in responses) == 1
    no_server_errors(live)


def test_first_enrollments_at_a_site_race():
    with LiveServer(workers=4, threads=4) as fresh, fresh.client() as api:
        screenings = []
        for i in range(8 * len(SITES)):
            site = SITES[i % len(SITES)]
            r = api.post(f"{BASE}/screenings", {"answers": eligible_answers(), "site": site},
                         token=fresh.tokens[site])
            assert r.status == 201, r.body
            screenings.append((site, r.json()["id"]))
        responses = simultaneously(len(screenings), lambda i: api.post(
            f"{BASE}/participants", {"screening": screenings[i][1], "consent_date": today(),
                                     "consent_version": "1.0"}, token=fresh.tokens[screenings[i][0]]))
        assert [r.status for r in responses] == [201] * len(responses), [(r.status, r.body[:120]) for r in responses]
        numbers = sorted(r.json()["id"] for r in responses)
        assert numbers == sorted(f"{s}-{n:04d}" for s in SITES for n in range(1, 9))
