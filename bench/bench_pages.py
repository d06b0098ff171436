"""Page latency at 10,000 participants: participant list, visit dashboard and audit page, p95, against floors.

    .venv/bin/python bench/bench_pages.py [--participants 10000] [--requests 30] [--engine sqlite|postgresql|both]
                                          [--quick] [--json PATH]

One throwaway database per engine (a SQLite file; a new PostgreSQL database `trialmgr_bench_*` through
TRIALMGR_BENCH_DATABASE_URL, default postgresql+psycopg://postgres@127.0.0.1:5432/test; dropped afterwards),
migrated, with the default trial loaded, then bulk-loaded with SQLAlchemy Core: --participants participants over
3 sites (90% randomized, 2% awaiting randomization, the rest withdrawn or lost), their screenings, allocations,
5 scheduled visits each (past ones complete, ~4% overdue), a form record per visit form entered (two values
each) and ~20 audit entries per participant. Then, through the real app (create_app + the Flask test client,
signed in through the login form, every page rendered), --requests GETs per page:

* participant list   /t/<trial>/participants as the investigator (every site) and as a site's coordinator;
* visit dashboard    /t/<trial>/coordinator: the coordinator's home page (visits due today, this week, overdue);
* audit page         /t/<trial>/audit/ as the monitor (newest 50 entries).

Floor (same run, same database): each page's main query in raw SQL on one connection, its rows fetched.
Figure: p95 milliseconds; target < 250 ms per page.
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parent))
import argparse
import datetime as dt
import json
import os
import platform
import random
import re
import sys
import tempfile
import time
import uuid
from pathlib import Path

import common  # noqa: E402  (bench/common.py: shared table, percentiles, logging)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import insert, text  # noqa: E402

T = "hip-pt-clbp"
PG_ADMIN = os.environ.get("TRIALMGR_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SITES = ("DE", "PA", "NC")
TARGET_MS = 250.0
PASSWORD = "bench pages password 1"
BATCH = 5000


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def p95(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]


# -- bulk load ----------------------------------------------------------------------------------------------


class Loader:
    """Batched Core INSERTs (executemany): 10,000 participants and ~0.5M rows in seconds to a minute."""

    def __init__(self, conn) -> None:
        self.conn = conn
        self.pending: dict[object, list[dict]] = {}
        self.rows = 0

    def add(self, table, row: dict) -> None:
        rows = self.pending.setdefault(table, [])
        rows.append(row)
        if len(rows) >= BATCH:
            self.flush()

    def flush(self) -> None:
        # Every table, in the order first seen (parents before children): foreign keys hold at each flush.
        for t in list(self.pending):
            rows = self.pending.get(t)
            if rows:
                self.conn.execute(insert(t), rows)
                self.rows += len(rows)
                self.pending[t] = []


def build(url: str, n: int) -> None:
    from sqlalchemy.orm import Session

    from tests.support import eligible_answers
    from trialmgr.db import make_engine, migrate
    from trialmgr.db.models_audit import AuditEntry
    from trialmgr.db.models_crf import FormRecord, FormValue, VisitRecord
    from trialmgr.db.models_trial import Allocation, AllocationList, Participant, Screening
    from trialmgr.protocols import default_protocol_path
    from trialmgr.services import trials
    from trialmgr.services.context import cli_actor

    engine = make_engine(url)
    migrate.upgrade(engine)
    with Session(engine) as s:
        trials.load_protocol(s, cli_actor(), default_protocol_path())
        s.commit()
        proto = trials.current_protocol(s, T)
        version = trials.current_version(s, T)
    rng = random.Random(17)
    today = dt.datetime.now(dt.UTC).date()
    answers = json.dumps(eligible_answers(), sort_keys=True)
    counters = dict.fromkeys(SITES, 0)
    t0 = time.perf_counter()
    with engine.begin() as conn:
        list_id = conn.execute(insert(AllocationList).values(
            trial_id=T, number=1, method="bench", source="generated", created_by="bench", commitment="0" * 64,
            secret=b"", slots_total=n, slots_per_stratum=n, active=True).returning(AllocationList.id)).scalar_one()
        load = Loader(conn)
        slot: dict[str, int] = {}
        audit_seq = conn.execute(text("SELECT COALESCE(MAX(seq), 0) FROM audit_entry")).scalar_one()
        chain_seq: dict[str, int] = {}

        def audit(code: str, when: dt.datetime, action: str, etype: str, eid: str, field: str | None,
                  new: str | None, user: str) -> None:
            nonlocal audit_seq
            audit_seq += 1
            chain = f"{T}/p/{code}"
            chain_seq[chain] = chain_seq.get(chain, 0) + 1
            load.add(AuditEntry.__table__, {
                "seq": audit_seq, "trial": T, "chain": chain, "chain_seq": chain_seq[chain], "ts": when,
                "actor_user": user, "actor_role": "coordinator", "actor_site": code[:2], "action": action,
                "entity_type": etype, "entity_id": eid, "participant": code, "field": field, "old_value": None,
                "new_value": new, "reason": None, "request_id": uuid.UUID(int=rng.getrandbits(128)).hex,
                "client_addr": "127.0.0.1", "prev_hash": "0" * 64, "hash": f"{rng.getrandbits(256):064x}"})

        for i in range(n):
            pid = i + 1
            site = SITES[i % len(SITES)]
            counters[site] += 1
            code = f"{site}-{counters[site]:04d}"
            sex = rng.choice("FM")
            stratum = f"{site}|{sex}"
            enrolled = dt.datetime.combine(today - dt.timedelta(days=int(700 * (n - i) / n) + 1), dt.time(10),
                                           tzinfo=dt.UTC)
            r = rng.random()
            status = ("enrolled" if r < 0.02 else "withdrawn" if r < 0.06 else "lost_to_follow_up" if r < 0.08
                      else "randomized")
            randomized = enrolled + dt.timedelta(days=rng.randrange(0, 10)) if status != "enrolled" else None
            if randomized is not None and randomized.date() > today:
                randomized = enrolled
            user = f"coord_{site.lower()}"
            load.add(Screening.__table__, {
                "id": pid, "trial_id": T, "site_code": site, "screening_date": enrolled.date(), "screened_at": enrolled,
                "screened_by": user, "protocol_number": version.number, "answers": answers, "eligible": True,
                "failures": "[]", "outcome": "enrolled", "decline_reason": None})
            load.add(Participant.__table__, {
                "id": pid, "trial_id": T, "site_code": site, "number": counters[site], "code": code,
                "screening_id": pid, "consent_date": enrolled.date(), "consent_version": "1.0",
                "strata": json.dumps({"sex": sex, "site": site}), "stratum": stratum, "status": status,
                "enrolled_at": enrolled, "enrolled_by": user, "randomized_at": randomized, "locked": False})
            audit(code, enrolled, "participant:enroll", "participant", code, "status", "enrolled", user)
            anchor = (randomized or enrolled).date()
            if randomized is not None:
                slot[stratum] = slot.get(stratum, 0) + 1
                load.add(Allocation.__table__, {
                    "id": pid, "trial_id": T, "participant_id": pid, "list_id": list_id, "stratum": stratum,
                    "slot_seq": slot[stratum], "arm": rng.choice(("HIP", "SPINE")), "randomized_at": randomized,
                    "randomized_by": user})
                audit(code, randomized, "allocation:create", "allocation", code, "arm", "(sealed)", user)
            for pos, v in enumerate(proto.visits):
                vid = pid * 10 + pos
                target = anchor + dt.timedelta(days=v.day)
                w0, w1 = target + dt.timedelta(days=v.window_start), target + dt.timedelta(days=v.window_end)
                gone = status in ("withdrawn", "lost_to_follow_up") and v.day > 30
                done = (w1 < today or (w0 <= today and rng.random() < 0.5)) and not gone and rng.random() > 0.04
                done = done and (randomized is not None or v.day == 0)
                load.add(VisitRecord.__table__, {
                    "id": vid, "trial_id": T, "participant_id": pid, "code": v.code, "label": v.label,
                    "scheduled": True, "position": pos, "target_date": target, "window_start": w0, "window_end": w1,
                    "visit_date": target if done else None, "complete": done, "missed": gone,
                    "missed_reason": "withdrawn" if gone else None, "deviation_recorded": False})
                if not done:
                    continue
                when = dt.datetime.combine(target, dt.time(11), tzinfo=dt.UTC)
                for k, form in enumerate(v.forms):
                    rid = vid * 10 + k
                    load.add(FormRecord.__table__, {
                        "id": rid, "trial_id": T, "participant_id": pid, "visit_id": vid, "form_id": form,
                        "instance": 1, "status": "complete", "version": 1, "created_at": when, "updated_at": when,
                        "updated_by": user, "sdv_at": None, "sdv_by": None, "locked": False, "serious": False})
                    for f in ("item_1", "item_2"):
                        value = str(rng.randrange(11))
                        load.add(FormValue.__table__, {"record_id": rid, "field_id": f, "value": value,
                                                       "missing_code": None, "derived": False})
                    audit(code, when, "form:create", "form", f"{v.code}/{form}", "item_1", value, user)
                    audit(code, when, "form:create", "form", f"{v.code}/{form}", "_status", "complete", user)
        load.flush()
        for site, last in counters.items():
            conn.execute(text("INSERT INTO site_counter (trial_id, site_code, last_number) VALUES (:t, :s, :n)"),
                         {"t": T, "s": site, "n": last})
        if engine.dialect.name == "postgresql":
            for table, col in (("screening", "id"), ("participant", "id"), ("allocation", "id"), ("visit", "id"),
                               ("form_record", "id"), ("audit_entry", "seq")):
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', '{col}'), "
                                  f"(SELECT MAX({col}) FROM {table}))"))
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()
    log(f"  loaded {n:,} participants ({load.rows:,} rows, {audit_seq:,} audit entries) in "
        f"{time.perf_counter() - t0:.1f} s")
    engine.dispose()


# -- measurement --------------------------------------------------------------------------------------------


FLOORS = {
    # The pages' main queries, as the app issues them (a page of rows where the page pages).
    "participant list (investigator)": (
        "SELECT * FROM participant WHERE trial_id = :t ORDER BY site_code, number LIMIT :limit", {}),
    "participant list (coordinator)": (
        "SELECT * FROM participant WHERE trial_id = :t AND site_code IN ('DE') ORDER BY site_code, number "
        "LIMIT :limit", {}),
    "visit dashboard (coordinator)": (
        "SELECT v.*, p.code, p.site_code FROM visit v JOIN participant p ON p.id = v.participant_id "
        "WHERE v.trial_id = :t AND v.scheduled AND NOT v.complete AND NOT v.missed AND v.window_start IS NOT NULL "
        "AND v.window_start <= :horizon AND p.status = 'randomized' AND p.site_code IN ('DE')", {}),
    "audit page (monitor)": ("SELECT * FROM audit_entry WHERE trial = :t ORDER BY seq DESC LIMIT 51", {}),
}


def signed_in(app, username: str):
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)
    data = {"username": username, "password": PASSWORD}
    if token:
        data["csrf_token"] = token.group(1)
    r = client.post("/login", data=data)
    if r.status_code != 302:
        raise SystemExit(f"could not sign in as {username}: {r.status_code}")
    return client


def page_size(body: str) -> int:
    return body.count("<tr>") - 1  # data rows (minus the header row)


def measure(url: str, instance: Path, requests: int) -> list[dict]:
    from trialmgr import create_app, keys
    from trialmgr.config import load_settings
    from trialmgr.services import accounts
    from trialmgr.services.context import cli_actor

    settings = load_settings({"instance_path": instance, "database_url": url, "secret_key": "bench",
                              "testing": True, "checkpoint_interval_seconds": 0}, environ={})
    keys.ensure_all(settings)
    app = create_app(settings)
    st = app.extensions["trialmgr"]
    with st.db.session() as s:
        for name, role in (("ines", "investigator"), ("coord_de", "coordinator@DE"), ("mona", "monitor")):
            u = accounts.create_user(s, cli_actor(), st.hasher, username=name, full_name=name.title(),
                                     password=PASSWORD)
            r, _, site = role.partition("@")
            accounts.grant_role(s, cli_actor(), u, T, r, site_code=site or None)
    clients = {"ines": signed_in(app, "ines"), "coord_de": signed_in(app, "coord_de"), "mona": signed_in(app, "mona")}
    pages = {
        "participant list (investigator)": ("ines", f"/t/{T}/participants"),
        "participant list (coordinator)": ("coord_de", f"/t/{T}/participants"),
        "visit dashboard (coordinator)": ("coord_de", f"/t/{T}/coordinator"),
        "audit page (monitor)": ("mona", f"/t/{T}/audit/"),
    }
    engine_name = st.db.engine.dialect.name
    horizon = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=7)
    out = []
    for name, (who, path) in pages.items():
        client = clients[who]
        first = client.get(path)  # warm: templates, protocol cache, pool
        if first.status_code != 200:
            raise SystemExit(f"{path} as {who}: {first.status_code} {first.get_data(as_text=True)[:300]}")
        rows_shown = page_size(first.get_data(as_text=True))
        times = []
        for _ in range(requests):
            t0 = time.perf_counter()
            r = client.get(path)
            r.get_data()
            times.append(time.perf_counter() - t0)
            assert r.status_code == 200
        sql, _ = FLOORS[name]
        floor_times = []
        with st.db.engine.connect() as conn:
            for _ in range(requests):
                t0 = time.perf_counter()
                conn.execute(text(sql), {"t": T, "limit": max(rows_shown, 1), "horizon": horizon}).all()
                floor_times.append(time.perf_counter() - t0)
        value, floor = p95(times) * 1000, p95(floor_times) * 1000
        log(f"  {name}: p95 {value:.1f} ms ({rows_shown} table rows), floor {floor:.2f} ms")
        out.append({"benchmark": f"pages at 10k participants ({engine_name})", "figure": f"{name} p95",
                    "value": round(value, 2), "unit": "ms", "floor": round(floor, 3),
                    "ratio": round(value / floor, 1) if floor else None, "target": f"< {TARGET_MS:.0f} ms",
                    "ok": value < TARGET_MS, "rows_shown": rows_shown})
    st.db.dispose()
    return out


def run(engine_name: str, n: int, requests: int) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="bench-pages-") as tmpdir:
        tmp = Path(tmpdir)
        with common.database(engine_name, tmp) as url:
            log(f"{engine_name}: building {n:,} participants")
            build(url, n)
            return measure(url, tmp / "instance", requests)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--participants", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=30, help="GETs per page (p95 over them)")
    ap.add_argument("--engine", choices=["sqlite", "postgresql", "both"], default="both")
    ap.add_argument("--quick", action="store_true", help="SQLite only, 10 requests per page")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = ap.parse_args()
    if args.quick:
        args.requests, args.engine = 10, "sqlite"
    engines = ["sqlite", "postgresql"] if args.engine == "both" else [args.engine]
    rows: list[dict] = []
    for e in engines:
        rows += run(e, args.participants, args.requests)
    print(f"machine: {platform.machine()}  {os.cpu_count()} cpus, python {platform.python_version()}; "
          f"{args.participants:,} participants, p95 of {args.requests} requests per page")
    print(f"{'benchmark':<38} {'page':<34} {'p95 ms':>8} {'floor ms':>9} {'ratio':>7} {'rows':>6}  target")
    for r in rows:
        print(f"{r['benchmark']:<38} {r['figure'][:-4]:<34} {r['value']:>8.1f} {r['floor']:>9.2f} "
              f"{r['ratio'] or 0:>7.1f} {r['rows_shown']:>6}  {r['target']} {'ok' if r['ok'] else 'MISSED'}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
