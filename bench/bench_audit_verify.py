"""Audit-trail verification speed against its floor: SHA-256 over the same canonical bytes.

    .venv/bin/python bench/bench_audit_verify.py [--entries 1000000] [--runs 5] [--workers 2]
                                                  [--database sqlite|postgresql|both|none]

Builds a realistic trail in memory (entries in bursts of one form save each, spread over participant, trial
and user chains, a signed checkpoint every few thousand entries) as the verification query returns it: tuples
in ``audit_verify.VERIFY_COLUMNS`` order with the timestamp as canonical UTC text (the database formats it,
services/audit.iter_verify_rows). Then reports the median of several runs of:

* verify: one ``Verifier`` over every entry and checkpoint, in memory: every hash recomputed, every link,
          position and signed head checked (what every way of verifying comes down to);
* floor:  ``hashlib.sha256(b).hexdigest()`` over the exact bytes each entry hash covers, pre-encoded.

The ratio verify/floor is the figure that counts (target <= 3x).

With ``--database`` (default both) the same trail is also loaded into a fresh SQLite file and a throwaway
PostgreSQL database and verified from there, reading included, as ``trialmgr audit verify`` runs it
(services/audit_query.verify_parallel: ``--workers`` processes over contiguous seq ranges, each with its own
connection, the segments stitched) and as the web page and API run it (one sequential pass). These are
informational: reading a million rows costs more than hashing them, which the floor does not include. (The
parallel split is not timed in memory: forked workers sharing a parent's million Python objects spend their
time copying pages, which reading from the database does not.)
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import platform
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (bench/common.py: throwaway databases)

from trialmgr.domain import audit  # noqa: E402
from trialmgr.domain.audit_verify import VERIFY_COLUMNS, Verifier  # noqa: E402

TRIALS = ("hip-pt-clbp", "mash")
SITES = ("DE", "PA", "NC")
FIELDS = ("nprs_back", "nprs_hip", "qbpds_01", "qbpds_02", "qbpds_03", "gait_usual_s", "tug_s", "six_mwt_m",
          "chair_stand_30s", "hip_abd_l_n", "hip_abd_r_n", "phq9_total", "eq5d_vas")
ROLES = ("coordinator", "assessor", "investigator")


def build_trail(n: int, seed: int = 7) -> tuple[list[dict], list[dict], object]:
    rng = random.Random(seed)
    key = audit.generate_signing_key()
    heads: dict[str, audit.ChainHead] = {}
    moved: set[str] = set()
    entries: list[dict] = []
    checkpoints: list[dict] = []
    prev_cp = audit.GENESIS_HASH
    ts = datetime(2024, 1, 8, 9, 0, tzinfo=UTC)
    participants = [(t, f"{s}-{i:04d}", s) for t in TRIALS for s in SITES for i in range(1, 71)]
    users = [f"{r[:5]}.{s.lower()}{k}" for r in ROLES for s in SITES for k in (1, 2)]
    while len(entries) < n:
        ts += timedelta(seconds=rng.randint(20, 900))
        user = rng.choice(users)
        request_id = f"{rng.getrandbits(64):016x}"
        addr = f"10.0.{rng.randint(0, 9)}.{rng.randint(2, 250)}"
        kind = rng.random()
        if kind < 0.04:  # login on the user's own system chain
            burst = [dict(chain=f"_system/user/{user}", trial=None, action="user:login", entity_type="user",
                          entity_id=user, participant=None, field=None, old_value=None, new_value=None,
                          reason=None)]
        elif kind < 0.08:  # trial-level record (settings, list generation, freeze...)
            trial = rng.choice(TRIALS)
            burst = [dict(chain=f"{trial}/trial", trial=trial, action="trial:update", entity_type="trial",
                          entity_id=trial, participant=None, field="status", old_value="open",
                          new_value="open", reason=None)]
        else:  # a form save: one entry per field, same request, microseconds apart
            trial, pid, _site = rng.choice(participants)
            update = rng.random() < 0.3
            burst = []
            for name in rng.sample(FIELDS, rng.randint(1, 12)):
                burst.append(dict(
                    chain=f"{trial}/p/{pid}", trial=trial,
                    action="form_value:update" if update else "form_value:create", entity_type="form_value",
                    entity_id=f"{rng.randint(1, 10**6)}:{name}", participant=pid, field=name,
                    old_value=str(rng.randint(0, 40)) if update else None, new_value=str(rng.randint(0, 40)),
                    reason="transcription error — corrected from source" if update else None))
        role = rng.choice(ROLES)
        for i, fields in enumerate(burst[:n - len(entries)]):  # exactly n entries, every signed head present
            fields.update(ts=ts + timedelta(microseconds=37 * i), actor_user=user, actor_role=role,
                          actor_site=rng.choice(SITES), request_id=request_id, client_addr=addr)
            row = audit.next_entry(heads.get(fields["chain"]), fields)
            row["seq"] = len(entries) + 1
            entries.append({k: row[k] for k in audit.ENTRY_KEYS})
            heads[row["chain"]] = audit.ChainHead(row["chain"], row["chain_seq"], row["hash"])
            moved.add(row["chain"])
        if len(entries) // 5000 > len(checkpoints):
            cp = audit.make_checkpoint(key, len(checkpoints) + 1, ts + timedelta(seconds=1),
                                       {c: (heads[c].chain_seq, heads[c].hash) for c in sorted(moved)}, prev_cp)
            checkpoints.append(cp)
            prev_cp = audit.checkpoint_hash(cp["body"])
            moved.clear()
    return entries, checkpoints, key.public_key()


def time_verify(rows: list[tuple], checkpoints: list[dict], public_key) -> float:
    t0 = time.perf_counter()
    verifier = Verifier(public_key)
    verifier.add_checkpoints(checkpoints)
    verifier.add_rows(rows)
    report = verifier.finish()
    elapsed = time.perf_counter() - t0
    if not report.ok:
        raise SystemExit(f"benchmark trail does not verify: {report.problem.message}")
    return elapsed


def time_floor(blobs: list[bytes]) -> float:
    sha = hashlib.sha256
    t0 = time.perf_counter()
    for b in blobs:
        sha(b).hexdigest()
    return time.perf_counter() - t0


def load(url: str, rows: list[tuple], checkpoints: list[dict]) -> None:
    """The trail into a fresh database, as the application stores it (driver bulk load: COPY on PostgreSQL)."""
    from trialmgr.db import make_engine, migrate

    engine = make_engine(url)
    migrate.upgrade(engine)
    cols = ", ".join(VERIFY_COLUMNS)
    ts_at = VERIFY_COLUMNS.index("ts")
    with engine.begin() as conn:
        raw = conn.connection.dbapi_connection
        if engine.dialect.name == "postgresql":
            with raw.cursor() as cur, cur.copy(f"COPY audit_entry ({cols}) FROM STDIN") as copy:
                for r in rows:
                    copy.write_row((*r[:ts_at], datetime.fromisoformat(r[ts_at]), *r[ts_at + 1:]))
            conn.exec_driver_sql("SELECT setval(pg_get_serial_sequence('audit_entry', 'seq'), "
                                 "(SELECT MAX(seq) FROM audit_entry))")
        else:
            sql = f"INSERT INTO audit_entry ({cols}) VALUES ({', '.join(['?'] * len(VERIFY_COLUMNS))})"
            raw.cursor().executemany(sql, ((*r[:ts_at], r[ts_at][:10] + " " + r[ts_at][11:26], *r[ts_at + 1:])
                                           for r in rows))
        for cp in checkpoints:
            conn.exec_driver_sql(
                "INSERT INTO audit_checkpoint (seq, ts, body, signature, key_id, reason) VALUES "
                + ("(%s, %s, %s, %s, %s, %s)" if engine.dialect.name == "postgresql" else "(?, ?, ?, ?, ?, ?)"),
                (cp["seq"], cp["ts"] if engine.dialect.name == "postgresql" else audit.utc_text(cp["ts"])[:26]
                 .replace("T", " "), cp["body"], cp["signature"], cp["key_id"], "periodic"))
        conn.exec_driver_sql("ANALYZE")
    engine.dispose()


def time_database(engine_name: str, rows: list[tuple], checkpoints: list[dict], public_key, workers: int,
                  runs: int) -> tuple[float, float]:
    """(parallel, sequential) seconds to verify the trail stored in a fresh database, read included."""
    import tempfile

    from trialmgr.db import Database
    from trialmgr.services import audit_query

    keys = {audit.key_id(public_key): public_key}
    with tempfile.TemporaryDirectory() as tmp, common.database(engine_name, Path(tmp)) as url:
        t0 = time.perf_counter()
        load(url, rows, checkpoints)
        print(f"  {engine_name}: loaded {len(rows):,} entries in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        db = Database(url)
        par, seq = [], []
        try:
            for _ in range(runs):
                t0 = time.perf_counter()
                report = audit_query.verify_parallel(db, keys, workers=workers, min_entries=0)
                par.append(time.perf_counter() - t0)
                assert report.ok and report.entries == len(rows), report
                t0 = time.perf_counter()
                with db.session(write=False) as s:
                    report = audit_query.verify(s, keys)
                seq.append(time.perf_counter() - t0)
                assert report.ok and report.entries == len(rows), report
        finally:
            db.dispose()
    return statistics.median(par), statistics.median(seq)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2,
                        help="processes for trialmgr audit verify from a database (default 2)")
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both", "none"], default="both",
                        help="also verify the trail stored in a fresh database, reading included (informational)")
    parser.add_argument("--quick", action="store_true", help="100,000 entries, 1 run")
    parser.add_argument("--json", type=Path, help="also write the result rows as JSON here (bench/README.md)")
    args = parser.parse_args(argv)
    if args.quick:
        args.entries, args.runs = 100_000, 1

    t0 = time.perf_counter()
    entries, checkpoints, public_key = build_trail(args.entries)
    blobs = [audit.entry_bytes(e["prev_hash"], e) for e in entries]
    build = time.perf_counter() - t0
    chains = len({e["chain"] for e in entries})
    mean_bytes = sum(map(len, blobs)) / len(blobs)

    # As the verification query returns them: tuples in VERIFY_COLUMNS order, ts as canonical text.
    rows = [tuple(audit.utc_text(e[c]) if c == "ts" else e[c] for c in VERIFY_COLUMNS) for e in entries]
    del entries
    engines = {"both": ["sqlite", "postgresql"], "none": []}.get(args.database, [args.database])
    stored = {name: time_database(name, rows, checkpoints, public_key, args.workers, args.runs) for name in engines}

    gc.collect()
    gc.disable()  # neither side allocates cycles; collector pauses would only add noise
    verify, floor = [], []
    for _ in range(args.runs):
        floor.append(time_floor(blobs))
        verify.append(time_verify(rows, checkpoints, public_key))
    gc.enable()
    v, f = statistics.median(verify), statistics.median(floor)

    print(f"python {platform.python_version()} on {platform.machine()}, {platform.processor() or '?'}, "
          f"{os.cpu_count()} CPUs; built in {build:.1f} s")
    print(f"{len(rows):,} entries, {chains:,} chains, {len(checkpoints):,} checkpoints, "
          f"{mean_bytes:.0f} hashed bytes per entry; median of {args.runs} runs")
    print()
    print(f"{'measure':<44}{'seconds':>10}{'us/entry':>11}{'entries/s':>13}{'ratio':>8}")
    for label, secs in (("verify (one Verifier, in memory)", v), ("floor (sha256 of the same bytes)", f)):
        print(f"{label:<44}{secs:>10.3f}{secs / len(rows) * 1e6:>11.3f}{len(rows) / secs:>13,.0f}"
              f"{secs / f:>7.2f}x")
    print(f"ratio verify / floor: {v / f:.2f}x (target <= 3x)")
    for name, (p, sq) in stored.items():
        print(f"from a {name} database, reading included: trialmgr audit verify {p:.2f} s ({args.workers} "
              f"processes), one sequential pass {sq:.2f} s (web/API)")
    if args.json:
        import json

        common_keys = {"unit": "s", "floor": round(f, 4), "target": "ratio <= 3x"}
        args.json.write_text(json.dumps([
            {"benchmark": f"audit verify ({len(rows):,} entries, in memory)", "figure": "verify time",
             "value": round(v, 4), "ratio": round(v / f, 3), "ok": v / f <= 3, **common_keys},
            *({"benchmark": f"audit verify from {name} ({len(rows):,} entries, reading included)",
               "figure": f"{label} time", "value": round(secs, 3), "unit": "s", "floor": round(f, 4),
               "ratio": round(secs / f, 2), "target": None, "ok": None}
              for name, pair in stored.items()
              for label, secs in zip((f"{args.workers} processes", "one pass"), pair, strict=True)),
        ], indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
