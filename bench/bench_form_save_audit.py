"""A form save with its audit entries versus the same save with auditing off (target: overhead <= 30%).

In-process, through trialmgr.services.crf.save_form, each save in its own committed transaction, on a SQLite file
and on a throwaway PostgreSQL database. "Auditing off" replaces services.audit.record with a no-op for the
floor run only (the application has no such switch), and on PostgreSQL the query that locks the visit's form
records does so without the audit chain head it also locks in the application. Forms: pain (2 fields),
performance (5 + 2 derived), qbpds (20 + total): one entry per field, as in production.

Each form is saved once per participant first (so every save measured changes an existing record), then
--rounds paired rounds of --saves saves with and without auditing, in alternating order (ABBA...: drift on a
shared machine, commit latency above all, hits both sides alike); the figure is the median of the rounds'
ratios of median save times.

    python bench/bench_form_save_audit.py [--saves 60] [--rounds 10] [--engine sqlite|postgresql|both] [--json FILE]
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parent))
import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: E402  (bench/common.py: shared table, percentiles, logging)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


T = "hip-pt-clbp"
PG_ADMIN = os.environ.get("TRIALMGR_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def setup(url: str, instance: Path, participants: int):
    from trialmgr import keys
    from trialmgr.config import load_settings
    from trialmgr.db import Database, migrate
    from trialmgr.protocols import default_protocol_path
    from trialmgr.services import enrollment, randomization, trials
    from trialmgr.services.context import cli_actor

    settings = load_settings({"instance_path": instance, "database_url": url, "secret_key": "b"}, environ={})
    keys.ensure_all(settings)
    db = Database(url)
    migrate.upgrade(db.engine)
    actor = cli_actor(trial=T)
    answers = {"sex": "F", "date_of_birth": "1950-01-01", "back_pain_months": "12", "mmse_score": "28",
               "hip_fracture_surgical": "no", "hip_fracture_recent": "no", "total_hip_replacement": "no",
               "spinal_pathology": "no", "needs_wheelchair": "no", "sensory_impairment": "no",
               "reads_speaks_language": "yes", "red_flags": "no", "leg_pain_exceeds_back": "no"}
    with db.session() as s:
        trials.load_protocol(s, actor, default_protocol_path())
        randomization.generate(s, actor, settings, T)
    codes = []
    for i in range(participants):
        with db.session() as s:
            site = ("DE", "NC", "PA")[i % 3]
            sc = enrollment.screen(s, actor, T, dict(answers, sex="FM"[i % 2]), site=site)
            p = enrollment.enroll(s, actor, T, sc.screening.id, consent_date=enrollment.today(), consent_version="1.0")
            codes.append(p.code)
    return settings, db, actor, codes


def run_saves(db, actor, codes, form_id: str, saves: int, seed: int) -> list[float]:
    from trialmgr.protocols import default_protocol_path, load_protocol_file
    from trialmgr.services import crf, enrollment
    from trialmgr.synthetic import form_values

    proto = load_protocol_file(default_protocol_path())
    rng = random.Random(seed)
    times = []
    for i in range(saves):
        code = codes[i % len(codes)]
        raw = form_values(proto.form(form_id), rng, enrollment.today())
        t0 = time.perf_counter()
        with db.session() as s:
            p = enrollment.get_participant(s, actor, T, code)
            crf.save_form(s, actor, p, form_id, raw, visit_code="BL", reason="benchmark re-entry")
        times.append(time.perf_counter() - t0)
    return times


def measure(url: str, instance: Path, saves: int, rounds: int) -> list[dict]:
    from trialmgr.services import audit

    settings, db, actor, codes = setup(url, instance, 60)
    rows = []
    real_record = audit.record
    engine = db.engine.dialect.name
    from sqlalchemy import literal

    from trialmgr.services import crf

    real_records_and_head = crf._VISIT_RECORDS_AND_HEAD
    # The floor reads and locks the visit's records without the audit chain head that the real statement
    # locks with them on PostgreSQL (same columns, so save_form takes it as it is).
    records_only = crf._VISIT_RECORDS.add_columns(literal(0), literal(""))

    def without_audit(seed: int) -> float:
        audit.record = lambda *a, **k: None  # noqa: E731
        crf._VISIT_RECORDS_AND_HEAD = records_only
        try:
            return statistics.median(run_saves(db, actor, codes, form_id, saves, seed))
        finally:
            audit.record = real_record
            crf._VISIT_RECORDS_AND_HEAD = real_records_and_head

    for form_id in ("pain", "performance", "qbpds"):
        run_saves(db, actor, codes, form_id, len(codes), seed=999)  # warm-up: every record exists, as later
        with_audit, without, ratios = [], [], []
        for r in range(rounds):
            # Paired rounds in alternating order (ABBA...), so drift on a shared machine (commit latency above
            # all) hits both sides alike; the figure is the median of the rounds' ratios.
            if r % 2 == 0:
                a = statistics.median(run_saves(db, actor, codes, form_id, saves, seed=r))
                b = without_audit(100 + r)
            else:
                b = without_audit(100 + r)
                a = statistics.median(run_saves(db, actor, codes, form_id, saves, seed=r))
            with_audit.append(a)
            without.append(b)
            ratios.append(a / b)
        ours, floor, ratio = statistics.median(with_audit), statistics.median(without), statistics.median(ratios)
        rows.append({"benchmark": f"form save audit overhead ({engine})", "figure": form_id,
                     "value": round(ours * 1000, 3), "unit": "ms/save", "floor": round(floor * 1000, 3),
                     "ratio": round(ratio, 2), "round_ratios": [round(x, 3) for x in ratios],
                     "target": "overhead <= 30%", "ok": ratio - 1 <= 0.30})
    db.dispose()
    return rows


def run(engine_name: str, saves: int, rounds: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with common.database(engine_name, tmp) as url:
            return measure(url, tmp / "instance", saves, rounds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--saves", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--engine", choices=["sqlite", "postgresql", "both"], default="both")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.quick:
        args.saves, args.rounds = 60, 2
    rows = []
    for e in (["sqlite", "postgresql"] if args.engine == "both" else [args.engine]):
        rows += run(e, args.saves, args.rounds)
    print(f"{'benchmark':<40} {'form':<12} {'ms/save':>8} {'no audit':>9} {'ratio':>6}  target")
    for r in rows:
        print(f"{r['benchmark']:<40} {r['figure']:<12} {r['value']:>8.2f} {r['floor']:>9.2f} {r['ratio']:>6.2f}  "
              f"{r['target']} {'ok' if r['ok'] else 'MISSED'}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
