"""Form saves per second through the JSON API (real gunicorn, concurrent clients) against a floor.

    .venv/bin/python bench/bench_form_save_api.py [--participants 200] [--clients 24] [--runs 3] [--quick]
                                                   [--workers 5] [--threads 1] [--json PATH]

One throwaway PostgreSQL database (a new database through TRIALMGR_BENCH_DATABASE_URL, default
postgresql+psycopg://postgres@127.0.0.1:5432/test; dropped at the end), set up through the CLI by
tests/e2e/live_server.py with the default protocol (more allocation slots per stratum), served by gunicorn with
deploy/gunicorn.conf.py. Per run:

* api:   --participants participants, screened, enrolled and randomized in-process before the run (not timed),
         are shared out among --clients threads (keep-alive stdlib clients): each thread works on its OWN
         participants only, so audit chains and rows never contend. For each of its participants a thread sends
         6 PUT /api/v1/trials/{trial}/participants/{code}/visits/BL/forms/{form}, in this order: pain,
         performance and qbpds entered ({"values", "status": "complete"}), then each of them changed
         (new values, with a "reason" for change), as the site coordinator of the participant's site.
         Values come from trialmgr.synthetic.form_values (checked with trialmgr.domain.crf.validate_form first).
         pain writes 2 values (3 audit entries on entry), performance 5 + 2 derived (8), qbpds 20 + 1 derived (22);
         a visit-completion audit entry follows the third form.
* floor: bench/floor_app.py (bare Flask + SQLAlchemy: one INSERT per POST, no authentication, no audit trail)
         under the same gunicorn settings on the same database, hammered the same way: the same number of
         requests from the same threads, each POST carrying the same JSON body as the matching form save.

Figures: saves per second (requests / wall time), p50 and p99 latency seen by the clients; medians over --runs.
Target: form saves/s >= 0.5 x the floor's requests/s.
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parent))
import argparse
import datetime as dt
import json
import math
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import common  # noqa: E402  (bench/common.py: shared table, percentiles, logging)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.e2e.live_server import SITES, TRIAL, ApiClient, LiveServer  # noqa: E402
from tests.support import DEFAULT_PROTOCOL, eligible_answers  # noqa: E402

PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
TARGET_RATIO = 0.5
FORMS = ("pain", "performance", "qbpds")
VISIT = "BL"
STRATA = [(site, sex) for site in SITES for sex in ("F", "M")]

Job = tuple[str, str, dict, str]  # method, path, JSON body, token


log = common.log


percentile = common.percentile


def hammer(client: ApiClient, work: Sequence[Sequence[Job]], deadline_s: float = 600.0,
           ok_status: tuple[int, ...] = (200, 201)) -> tuple[float, list[float]]:
    """One thread per job list, each sending its own jobs in order; returns wall seconds and latencies."""
    lat: list[list[float]] = [[] for _ in work]
    errors: list[str] = []
    stop_at = time.monotonic() + deadline_s
    gate = threading.Barrier(len(work) + 1, timeout=60)

    def worker(i: int) -> None:
        try:
            gate.wait()
        except threading.BrokenBarrierError:
            return
        for method, path, body, token in work[i]:
            if time.monotonic() > stop_at:
                errors.append("deadline passed")
                return
            try:
                r = client.request(method, path, body, token=token)
            except Exception as exc:  # reported by the main thread
                errors.append(f"{method} {path}: {exc!r}")
                return
            if r.status not in ok_status:
                errors.append(f"{method} {path} -> {r.status} {r.body[:300]!r}")
                return
            lat[i].append(r.elapsed)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(len(work))]
    for t in threads:
        t.start()
    gate.wait()
    start = time.perf_counter()
    for t in threads:
        t.join(timeout=deadline_s + 60)
    wall = time.perf_counter() - start
    if errors:
        raise SystemExit(f"{len(errors)} request(s) failed, e.g. {errors[0]}")
    return wall, [x for xs in lat for x in xs]


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        from trialmgr.protocols import load_protocol_file

        self.args = args
        self.tmp = tmp
        self.next_index = 0
        self.rng = random.Random(11)
        self.redraws = 0
        self.proto = load_protocol_file(DEFAULT_PROTOCOL)

    def protocol_with_slots(self, per_stratum: int) -> Path:
        return common.protocol_with_slots(self.tmp, per_stratum)

    def open_app(self, live: LiveServer) -> None:
        from trialmgr.config import load_settings
        from trialmgr.db import Database

        self.settings = load_settings({"instance_path": live.instance_path, "database_url": live.database_url},
                                      environ={})
        self.db = Database(live.database_url)

    def prepare(self, n: int) -> list[tuple[str, str]]:
        """Screen, enroll and randomize n participants in-process, evenly over the strata (not timed)."""
        from trialmgr.services import enrollment, randomization
        from trialmgr.services.context import cli_actor

        actor = cli_actor(trial=TRIAL)
        today = dt.datetime.now(dt.UTC).date()
        out: list[tuple[str, str]] = []
        batch = 25
        for lo in range(0, n, batch):
            with self.db.session() as s:
                for i in range(lo, min(n, lo + batch)):
                    site, sex = STRATA[(self.next_index + i) % len(STRATA)]
                    res = enrollment.screen(s, actor, TRIAL, eligible_answers(sex=sex), site=site)
                    p = enrollment.enroll(s, actor, TRIAL, res.screening.id, consent_date=today,
                                          consent_version="1.0")
                    randomization.randomize(s, actor, self.settings, TRIAL, p.code)
                    out.append((p.code, site))
        self.next_index += n
        return out

    def create_floor_table(self) -> None:
        from bench.floor_app import metadata

        metadata.create_all(self.db.engine)

    def values(self, form_id: str, before: dict | None = None) -> dict:
        """Valid synthetic values for a form (different from `before` when given)."""
        from trialmgr.domain import crf as crflib
        from trialmgr.synthetic import form_values

        form = self.proto.form(form_id)
        today = dt.datetime.now(dt.UTC).date()
        for _ in range(100):
            raw = form_values(form, self.rng, today)
            res = crflib.validate_form(form, raw, reference_date=today)
            if res.errors or not res.complete or raw == before:
                # trialmgr.synthetic.value_for sometimes returns the unrounded narrowed upper bound of a wide
                # decimal range (about 1 in 10,000 draws), which the API rightly refuses: draw again.
                self.redraws += 1
                continue
            return raw
        raise SystemExit(f"cannot draw valid values for {form_id}")

    def form_jobs(self, live: LiveServer, people: Sequence[tuple[str, str]]) -> list[list[Job]]:
        """The PUTs of each client thread, for its own participants (round robin over the threads)."""
        work: list[list[Job]] = [[] for _ in range(min(self.args.clients, len(people)))]
        for i, (code, site) in enumerate(people):
            token = live.tokens[site]
            first = {f: self.values(f) for f in FORMS}
            jobs = work[i % len(work)]
            for f in FORMS:
                jobs.append(("PUT", self.path(code, f), {"values": first[f], "status": "complete"}, token))
            for f in FORMS:
                jobs.append(("PUT", self.path(code, f), {"values": self.values(f, first[f]), "status": "complete",
                                                         "reason": "Transcription error corrected from source"},
                             token))
        return work

    @staticmethod
    def path(code: str, form: str) -> str:
        return f"/api/v1/trials/{TRIAL}/participants/{code}/visits/{VISIT}/forms/{form}"

    def floor_jobs(self, work: list[list[Job]]) -> list[list[Job]]:
        run = self.next_index
        self.next_index += 1
        return [[("POST", f"/floor/F{run}-{t}-{j}", body, "") for j, (_m, _p, body, _t) in enumerate(jobs)]
                for t, jobs in enumerate(work)]

    def check(self, expected_records: int, expected_changes: int) -> dict:
        from sqlalchemy import text

        with self.db.engine.connect() as conn:
            records, versions = conn.execute(text(
                "SELECT count(*), coalesce(sum(version), 0) FROM form_record WHERE form_id IN ('pain', "
                "'performance', 'qbpds')")).one()
            audit = conn.execute(text("SELECT count(*) FROM audit_entry WHERE action IN ('form:create', "
                                      "'form:update')")).scalar_one()
        if records != expected_records or versions - records != expected_changes:
            raise SystemExit(f"expected {expected_records} form records changed {expected_changes} times, found "
                             f"{records} with {versions - records} changes")
        return {"records": records, "form_audit_entries": audit}


def run(args: argparse.Namespace) -> tuple[list[dict], dict]:
    warm = 2 * args.workers * args.threads
    slots = math.ceil((args.participants * args.runs + warm) / len(STRATA) * 1.2) + 20
    keys = ("api_rate", "api_p50", "api_p99", "floor_rate", "floor_p50", "floor_p99")
    samples: dict[str, list[float]] = {k: [] for k in keys}
    cpu: dict[str, list[dict]] = {"api": [], "floor": []}  # processor ms per request, by process kind
    info: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-form-save-") as tmpdir:
        bench = Bench(args, Path(tmpdir))
        t0 = time.perf_counter()
        with LiveServer(workers=args.workers, threads=args.threads, admin_url=args.database_url,
                        protocol=bench.protocol_with_slots(slots)) as live:
            bench.open_app(live)
            try:
                bench.create_floor_table()
                with LiveServer(workers=args.workers, threads=args.threads, admin_url=None,
                                database_url=live.database_url, app="bench.floor_app:app", ready_path="/ready",
                                setup_instance=False) as floor, \
                        live.client() as api, floor.client() as floor_client:
                    log(f"servers up in {time.perf_counter() - t0:.1f} s (postgresql, {args.workers} workers x "
                        f"{args.threads} threads)")
                    # Warm up every worker (imports, pools, protocol caches) on both sides.
                    warm_work = bench.form_jobs(live, bench.prepare(warm))
                    hammer(api, warm_work)
                    hammer(floor_client, bench.floor_jobs(warm_work))
                    done = warm
                    for r in range(args.runs):
                        t1 = time.perf_counter()
                        work = bench.form_jobs(live, bench.prepare(args.participants))
                        n = sum(len(w) for w in work)
                        prep = time.perf_counter() - t1
                        # Alternate which side goes first, so drift on a shared machine hits both alike.
                        order = ("api", "floor") if r % 2 == 0 else ("floor", "api")
                        for side in order:
                            cpu0 = common.cpu_seconds_by_process()
                            if side == "api":
                                wall, lat = hammer(api, work)
                                rate, p50, p99 = n / wall, percentile(lat, 0.5), percentile(lat, 0.99)
                                samples["api_rate"].append(rate)
                                samples["api_p50"].append(p50)
                                samples["api_p99"].append(p99)
                            else:
                                fwall, flat = hammer(floor_client, bench.floor_jobs(work))
                                samples["floor_rate"].append(n / fwall)
                                samples["floor_p50"].append(percentile(flat, 0.5))
                                samples["floor_p99"].append(percentile(flat, 0.99))
                            used = common.cpu_diff(cpu0, common.cpu_seconds_by_process())
                            cpu[side].append({k: round(v / n * 1000, 3) for k, v in used.items() if v})
                        done += args.participants
                        log(f"processor ms per request: api {cpu['api'][-1]}; floor {cpu['floor'][-1]}")
                        log(f"run {r + 1}/{args.runs}: {n} saves from {len(work)} clients: "
                            f"{samples['api_rate'][-1]:.0f}/s p50 {samples['api_p50'][-1] * 1e3:.0f} ms "
                            f"p99 {samples['api_p99'][-1] * 1e3:.0f} ms; floor {samples['floor_rate'][-1]:.0f}/s "
                            f"p99 {samples['floor_p99'][-1] * 1e3:.0f} ms (prepared {args.participants} "
                            f"participants in {prep:.1f} s)")
                    info = bench.check(done * len(FORMS), done * len(FORMS))
                    info["redraws"] = bench.redraws
                    info["cpu_ms_per_request"] = cpu
            finally:
                bench.db.dispose()
    med = {k: statistics.median(v) for k, v in samples.items()}
    return rows_from(med, args), info


def rows_from(m: dict[str, float], args: argparse.Namespace) -> list[dict]:
    clients = min(args.clients, args.participants)
    name = f"form save (postgresql, {clients} clients, {args.workers}w x {args.threads}t)"

    def row(figure: str, value: float, unit: str, floor: float | None, target: str | None,
            ok: bool | None) -> dict:
        return common.row(name, figure, value, unit, floor, target, ok)

    return [
        row("api throughput", m["api_rate"], "saves/s", m["floor_rate"], f"ratio >= {TARGET_RATIO:g}",
            m["api_rate"] >= TARGET_RATIO * m["floor_rate"]),
        row("api p50 latency", m["api_p50"] * 1e3, "ms", m["floor_p50"] * 1e3, None, None),
        row("api p99 latency", m["api_p99"] * 1e3, "ms", m["floor_p99"] * 1e3, None, None),
    ]


def print_table(rows: list[dict], out=print) -> None:
    common.print_table(rows, out, width=20, places=1)


def main(argv: list[str] | None = None) -> int:
    cpus = os.cpu_count() or 1
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--participants", type=int, default=200,
                    help="participants per run, 6 form saves each (default 200: 1,200 saves)")
    ap.add_argument("--clients", type=int, default=24, help="concurrent client threads (default 24)")
    ap.add_argument("--workers", type=int, default=cpus * 2 + 1,
                    help=f"gunicorn workers (default 2 x cores + 1 = {cpus * 2 + 1}, as deploy/gunicorn.conf.py)")
    ap.add_argument("--threads", type=int, default=1, help="threads per gunicorn worker (default 1)")
    ap.add_argument("--runs", type=int, default=3, help="runs; medians are reported (default 3)")
    ap.add_argument("--database-url", default=os.environ.get("TRIALMGR_BENCH_DATABASE_URL", PG_DEFAULT),
                    help="PostgreSQL admin URL used to create and drop the throwaway database "
                         "(env TRIALMGR_BENCH_DATABASE_URL)")
    ap.add_argument("--quick", action="store_true", help="60 participants (360 saves), 1 run")
    ap.add_argument("--json", type=Path, help="also write the result rows as JSON here (see bench/README.md)")
    args = ap.parse_args(argv)
    if args.quick:
        args.participants, args.runs = 60, 1
    for name in ("participants", "clients", "workers", "threads", "runs"):
        if not 1 <= getattr(args, name) <= 10_000:
            ap.error(f"--{name.replace('_', '-')} must be between 1 and 10000")
    if not args.database_url.startswith("postgresql"):
        ap.error("--database-url must be a postgresql URL")
    host = re.search(r"@([^:/]+)", args.database_url)
    if host and host.group(1) not in ("127.0.0.1", "localhost", "::1", "[::1]"):
        ap.error("benchmarks only target loopback databases")

    rows, info = run(args)
    load = os.getloadavg()
    print(f"machine: {platform.machine()} {cpus} cpus, python {platform.python_version()}, load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; median of {args.runs} run(s); {args.participants} participants "
          f"x 6 saves per run ({', '.join(FORMS)} at {VISIT}: entered, then changed with a reason)")
    print(f"{rows[0]['benchmark']}; floor = bench/floor_app.py (one INSERT per POST, same bodies); checked "
          f"{info['records']} form records, {info['form_audit_entries']} form audit entries")
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
