"""Audit page with filters at 1,000,000 entries: p95 latency on SQLite and PostgreSQL.

Builds a throwaway database (a SQLite file; a new PostgreSQL database on the local server), migrates it, bulk
loads N realistic entries (10,000 participants, forms, users, actions), then times the monitor's audit page
(the real Flask view, rendered, through the test client) for each filter, against a floor measured in the same
run: the same page's raw SQL (newest 50 rows of the trial) executed directly.

    python bench/bench_audit_page.py [--entries 1000000] [--requests 40] [--engine sqlite|postgresql|both]
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parent))
import argparse
import datetime as dt
import json
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

import common  # noqa: E402  (bench/common.py: shared table, percentiles, logging)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert, text  # noqa: E402

T = "hip-pt-clbp"
PG_ADMIN = os.environ.get("TRIALMGR_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
FORMS = ["pain", "qbpds", "performance", "hip_impairment", "pros"]
VISITS = ["BL", "W4", "W8", "W12", "M6"]
USERS = [f"coord{i}" for i in range(12)] + ["mona", "ines", "asa1", "asa2"]


def p95(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]


def make_rows(n: int, rng: random.Random):
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    step = dt.timedelta(days=600) / n
    chain_seq: dict[str, int] = {}
    for i in range(n):
        p = f"{rng.choice('DPN')}{'EAC'[0]}-{rng.randrange(1, 3400):04d}"
        chain = f"{T}/p/{p}"
        chain_seq[chain] = chain_seq.get(chain, 0) + 1
        r = rng.random()
        if r < 0.85:
            action, etype = rng.choice(["form:update", "form:create"]), "form"
            eid, field = f"{rng.choice(VISITS)}/{rng.choice(FORMS)}", f"item_{rng.randrange(1, 25)}"
        elif r < 0.95:
            action, etype, eid, field = "query:open", "query", str(i), "status"
        else:
            action, etype, eid, field = "participant:update", "participant", p, "status"
        yield {
            "seq": i + 1, "trial": T, "chain": chain, "chain_seq": chain_seq[chain], "ts": start + step * i,
            "actor_user": rng.choice(USERS), "actor_role": rng.choice(["coordinator", "assessor", "monitor"]),
            "actor_site": "DE", "action": action, "entity_type": etype, "entity_id": eid, "participant": p,
            "field": field, "old_value": str(rng.randrange(10)), "new_value": str(rng.randrange(10)),
            "reason": None, "request_id": uuid.UUID(int=rng.getrandbits(128)).hex, "client_addr": "127.0.0.1",
            "prev_hash": "0" * 64, "hash": f"{rng.getrandbits(256):064x}",
        }


def build(url: str, n: int) -> None:
    from sqlalchemy.orm import Session

    from trialmgr.db import make_engine, migrate
    from trialmgr.db.models_audit import AuditEntry
    from trialmgr.protocols import default_protocol_path
    from trialmgr.services import trials
    from trialmgr.services.context import cli_actor

    engine = make_engine(url)
    migrate.upgrade(engine)
    with Session(engine) as s:
        trials.load_protocol(s, cli_actor(), default_protocol_path())
        s.commit()
    rng = random.Random(7)
    batch = []
    t0 = time.perf_counter()
    with engine.begin() as conn:
        base = conn.execute(text("SELECT COALESCE(MAX(seq), 0) FROM audit_entry")).scalar()
        for row in make_rows(n, rng):
            row["seq"] += base
            batch.append(row)
            if len(batch) == 20000:
                conn.execute(insert(AuditEntry.__table__), batch)
                batch = []
        if batch:
            conn.execute(insert(AuditEntry.__table__), batch)
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT setval(pg_get_serial_sequence('audit_entry', 'seq'), "
                              "(SELECT MAX(seq) FROM audit_entry))"))
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("ANALYZE"))
        else:
            conn.execute(text("ANALYZE"))
        conn.commit()
    print(f"  loaded {n:,} entries in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    engine.dispose()


def measure(url: str, instance: Path, requests: int) -> list[dict]:
    from trialmgr import create_app
    from trialmgr.config import load_settings
    from trialmgr.services import accounts
    from trialmgr.services.context import cli_actor

    settings = load_settings({"instance_path": instance, "database_url": url, "secret_key": "bench",
                              "testing": True, "checkpoint_interval_seconds": 0}, environ={})
    from trialmgr import keys

    keys.ensure_all(settings)
    app = create_app(settings)
    st = app.extensions["trialmgr"]
    with st.db.session() as s:
        u = accounts.create_user(s, cli_actor(), st.hasher, username="benchmon", full_name="Bench Monitor",
                                 password="bench monitor password")
        accounts.grant_role(s, cli_actor(), u, T, "monitor")
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    import re

    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    client.post("/login", data={"username": "benchmon", "password": "bench monitor password", "csrf_token": token})
    rng = random.Random(11)
    cases = {
        "no filter": lambda: {},
        "participant": lambda: {"participant": f"DE-{rng.randrange(1, 3400):04d}"},
        "user": lambda: {"user": rng.choice(USERS)},
        "action": lambda: {"action": "participant:update"},
        "form": lambda: {"form": rng.choice(FORMS)},
        "form + field": lambda: {"form": rng.choice(FORMS), "field": f"item_{rng.randrange(1, 25)}"},
        "time range": lambda: {"since": "2025-06-01", "until": "2025-06-07"},
        "participant + page 2": None,
    }
    engine = st.db.engine
    rows = []
    floor_times = []
    with engine.connect() as conn:
        for _ in range(requests):
            t0 = time.perf_counter()
            conn.execute(text("SELECT * FROM audit_entry WHERE trial = :t ORDER BY seq DESC LIMIT 51"), {"t": T}).all()
            floor_times.append(time.perf_counter() - t0)
    floor = p95(floor_times)
    for name, make in cases.items():
        times = []
        for _ in range(requests):
            if make is None:
                q = {"participant": f"DE-{rng.randrange(1, 3400):04d}"}
                first = client.get(f"/t/{T}/audit/", query_string=q).get_data(as_text=True)
                m = re.search(r'before=(\d+)', first)
                if m:
                    q["before"] = m.group(1)
            else:
                q = make()
            t0 = time.perf_counter()
            resp = client.get(f"/t/{T}/audit/", query_string=q)
            times.append(time.perf_counter() - t0)
            assert resp.status_code == 200, resp.status_code
        value = p95(times) * 1000
        rows.append({"benchmark": f"audit page p95 ({st.db.engine.dialect.name})", "figure": name,
                     "value": round(value, 2), "unit": "ms", "floor": round(floor * 1000, 2),
                     "ratio": round(value / (floor * 1000), 1), "target": "< 100 ms", "ok": value < 100})
    st.db.dispose()
    return rows


def run(engine_name: str, n: int, requests: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with common.database(engine_name, tmp) as url:
            build(url, n)
            return measure(url, tmp / "instance", requests)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--engine", choices=["sqlite", "postgresql", "both"], default="both")
    ap.add_argument("--quick", action="store_true", help="100,000 entries, 20 requests")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = ap.parse_args()
    if args.quick:
        args.entries, args.requests = 100_000, 20
    engines = ["sqlite", "postgresql"] if args.engine == "both" else [args.engine]
    rows = []
    for e in engines:
        print(f"{e}: building {args.entries:,} entries", file=sys.stderr)
        rows += run(e, args.entries, args.requests)
    print(f"{'benchmark':<32} {'filter':<22} {'p95 ms':>8} {'floor ms':>9} {'ratio':>6}  target")
    for r in rows:
        print(f"{r['benchmark']:<32} {r['figure']:<22} {r['value']:>8.1f} {r['floor']:>9.2f} {r['ratio']:>6.1f}  "
              f"{r['target']} {'ok' if r['ok'] else 'MISSED'}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
