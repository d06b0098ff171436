"""Randomizations per second through the JSON API (real gunicorn, concurrent clients) against a floor.

    .venv/bin/python bench/bench_randomize_api.py [--participants 1000] [--clients 32] [--runs 3] [--quick]
                                                   [--engine postgresql|sqlite] [--json PATH]

One throwaway database (PostgreSQL: a new database through TRIALMGR_BENCH_DATABASE_URL, default
postgresql+psycopg://postgres@127.0.0.1:5432/test; dropped at the end), set up through the CLI by
tests/e2e/live_server.py with the default protocol (more slots per stratum). Per run:

* api:     POST /participants/{id}/randomize for --participants enrolled participants spread over the 6
           strata, from --clients threads (keep-alive stdlib clients) against gunicorn with deploy/gunicorn.conf.py;
* service: trialmgr.services.randomization.randomize in a loop in this process, one transaction each;
* floor:   bench/floor_app.py (bare Flask + SQLAlchemy, one INSERT per POST) under the same gunicorn settings
           and the same database, hammered the same way; and its in-process twin (one INSERT per transaction)
           as the floor of the service figure.

Participants are screened and enrolled in-process before each run (not timed). Medians over --runs.
Targets: >= 200 randomizations/s on 2 cores and p99 < 250 ms through the API.
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

from tests.e2e.live_server import SITES, TRIAL, ApiClient, LiveServer, Response  # noqa: E402
from tests.support import eligible_answers  # noqa: E402

PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
TARGET_RATE = 200.0
TARGET_P99_MS = 250.0
STRATA = [(site, sex) for site in SITES for sex in ("F", "M")]


percentile = common.percentile


def hammer(client: ApiClient, paths: Sequence[str], clients: int, token: str | None = None,
           deadline_s: float = 600.0) -> tuple[float, list[float], list[Response]]:
    """POST every path once from `clients` threads; returns wall seconds, latencies, responses."""
    lock = threading.Lock()
    it = iter(range(len(paths)))
    out: list[Response | None] = [None] * len(paths)
    errors: list[BaseException] = []
    stop_at = time.monotonic() + deadline_s

    def worker() -> None:
        while time.monotonic() < stop_at:
            with lock:
                i = next(it, None)
            if i is None:
                return
            try:
                out[i] = client.post(paths[i], token=token)
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)
                return

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=deadline_s + 60)
    wall = time.perf_counter() - start
    if errors:
        raise SystemExit(f"client error: {errors[0]!r}")
    if any(r is None for r in out):
        raise SystemExit("a request was not sent before the deadline")
    responses: list[Response] = out  # type: ignore[assignment]
    bad = [r for r in responses if r.status not in (200, 201)]
    if bad:
        raise SystemExit(f"{len(bad)} requests failed, e.g. {bad[0].status} {bad[0].body[:300]!r}")
    return wall, [r.elapsed for r in responses], responses


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.next_index = 0

    # -- setup

    def protocol_with_slots(self, per_stratum: int) -> Path:
        return common.protocol_with_slots(self.tmp, per_stratum)

    def open_app(self, live: LiveServer) -> None:
        from trialmgr.config import load_settings
        from trialmgr.db import Database

        self.settings = load_settings({"instance_path": live.instance_path, "database_url": live.database_url},
                                      environ={})
        self.db = Database(live.database_url)

    def prepare(self, n: int) -> list[str]:
        """Screen and enroll n participants in-process, evenly over the strata (not timed)."""
        from trialmgr.services import enrollment
        from trialmgr.services.context import cli_actor

        actor = cli_actor(trial=TRIAL)
        today = dt.datetime.now(dt.UTC).date()
        codes: list[str] = []
        batch = 25
        for lo in range(0, n, batch):
            with self.db.session() as s:
                for i in range(lo, min(n, lo + batch)):
                    site, sex = STRATA[(self.next_index + i) % len(STRATA)]
                    res = enrollment.screen(s, actor, TRIAL, eligible_answers(sex=sex), site=site)
                    p = enrollment.enroll(s, actor, TRIAL, res.screening.id, consent_date=today,
                                          consent_version="1.0")
                    codes.append(p.code)
        self.next_index += n
        return codes

    def create_floor_table(self) -> None:
        from bench.floor_app import metadata

        metadata.create_all(self.db.engine)

    # -- measurements

    def api(self, live: LiveServer, client: ApiClient, codes: list[str]) -> tuple[float, list[float]]:
        paths = [f"/api/v1/trials/{TRIAL}/participants/{c}/randomize" for c in codes]
        wall, lat, responses = hammer(client, paths, self.args.clients, live.tokens["investigator"])
        if not all(r.status == 201 and r.json()["created"] for r in responses):
            raise SystemExit("a randomization was not created")
        return len(paths) / wall, lat

    def floor_api(self, client: ApiClient, n: int) -> tuple[float, list[float]]:
        paths = [f"/floor/F-{self.next_index}-{i}" for i in range(n)]
        self.next_index += 1
        wall, lat, _ = hammer(client, paths, self.args.clients)
        return n / wall, lat

    def service(self, codes: list[str]) -> tuple[float, list[float]]:
        from trialmgr.services import randomization
        from trialmgr.services.context import cli_actor

        actor = cli_actor(trial=TRIAL)
        lat = []
        start = time.perf_counter()
        for code in codes:
            t0 = time.perf_counter()
            with self.db.session() as s:
                if not randomization.randomize(s, actor, self.settings, TRIAL, code).created:
                    raise SystemExit(f"{code} was already randomized")
            lat.append(time.perf_counter() - t0)
        return len(codes) / (time.perf_counter() - start), lat

    def floor_service(self, n: int) -> tuple[float, list[float]]:
        from sqlalchemy import insert

        from bench.floor_app import floor_rows

        lat = []
        start = time.perf_counter()
        for i in range(n):
            t0 = time.perf_counter()
            with self.db.engine.begin() as conn:
                conn.execute(insert(floor_rows).values(participant=f"S-{i}", arm="HIP",
                                                       created_at=dt.datetime.now(dt.UTC)))
            lat.append(time.perf_counter() - t0)
        return n / (time.perf_counter() - start), lat


def run(args: argparse.Namespace) -> tuple[list[dict], dict]:
    admin = None if args.engine == "sqlite" else args.database_url
    per_run = args.participants + args.service_participants
    warm = 4 * args.workers * args.threads
    slots = math.ceil((per_run * args.runs + warm) / len(STRATA) * 1.2) + 20  # blocks may run past the target
    samples: dict[str, list[float]] = {k: [] for k in ("api_rate", "api_p50", "api_p99", "floor_rate", "floor_p50",
                                                      "floor_p99", "svc_rate", "svc_p50", "svc_floor_rate",
                                                      "svc_floor_p50")}
    with tempfile.TemporaryDirectory(prefix="bench-randomize-") as tmpdir:
        bench = Bench(args, Path(tmpdir))
        t0 = time.perf_counter()
        with LiveServer(workers=args.workers, threads=args.threads, admin_url=admin,
                        protocol=bench.protocol_with_slots(slots)) as live:
            bench.open_app(live)
            try:
                bench.create_floor_table()
                with LiveServer(workers=args.workers, threads=args.threads, admin_url=None,
                                database_url=live.database_url, app="bench.floor_app:app", ready_path="/ready",
                                setup_instance=False) as floor, \
                        live.client() as api, floor.client() as floor_client:
                    print(f"servers up in {time.perf_counter() - t0:.1f} s ({live.database_url.split('://')[0]}, "
                          f"{args.workers} workers x {args.threads} threads)", file=sys.stderr)
                    # Warm up every worker (imports, pools, protocol caches) on both sides.
                    bench.api(live, api, bench.prepare(warm))
                    bench.floor_api(floor_client, warm)
                    for r in range(args.runs):
                        t1 = time.perf_counter()
                        codes = bench.prepare(per_run)
                        api_codes, svc_codes = codes[:args.participants], codes[args.participants:]
                        prep = time.perf_counter() - t1
                        rate, lat = bench.api(live, api, api_codes)
                        frate, flat = bench.floor_api(floor_client, args.participants)
                        srate, slat = bench.service(svc_codes)
                        sfrate, sflat = bench.floor_service(args.service_participants)
                        for key, value in (("api_rate", rate), ("api_p50", percentile(lat, 0.5)),
                                           ("api_p99", percentile(lat, 0.99)), ("floor_rate", frate),
                                           ("floor_p50", percentile(flat, 0.5)), ("floor_p99", percentile(flat, 0.99)),
                                           ("svc_rate", srate), ("svc_p50", percentile(slat, 0.5)),
                                           ("svc_floor_rate", sfrate), ("svc_floor_p50", percentile(sflat, 0.5))):
                            samples[key].append(value)
                        print(f"run {r + 1}/{args.runs}: api {rate:.0f}/s p99 {percentile(lat, 0.99) * 1e3:.0f} ms, "
                              f"floor {frate:.0f}/s, service {srate:.0f}/s, service floor {sfrate:.0f}/s "
                              f"(prepared {per_run} in {prep:.1f} s)", file=sys.stderr)
                    check_allocations(bench, warm + per_run * args.runs)
            finally:
                bench.db.dispose()
    med = {k: statistics.median(v) for k, v in samples.items()}
    return rows_from(med, args), med


def check_allocations(bench: Bench, expected: int) -> None:
    from sqlalchemy import text

    with bench.db.engine.connect() as conn:
        n, distinct = conn.execute(text("SELECT count(*), count(DISTINCT participant_id) FROM allocation")).one()
    if n != expected or distinct != expected:
        raise SystemExit(f"expected {expected} allocations, found {n} ({distinct} participants)")


def rows_from(m: dict[str, float], args: argparse.Namespace) -> list[dict]:
    name = f"randomize ({args.engine}, {args.clients} clients, {args.workers}w x {args.threads}t)"

    def row(figure: str, value: float, unit: str, floor: float | None, target: str | None,
            ok: bool | None) -> dict:
        return common.row(name, figure, value, unit, floor, target, ok)

    return [
        row("api throughput", m["api_rate"], "randomizations/s", m["floor_rate"], f">= {TARGET_RATE:.0f}/s",
            m["api_rate"] >= TARGET_RATE),
        row("api p50 latency", m["api_p50"] * 1e3, "ms", m["floor_p50"] * 1e3, None, None),
        row("api p99 latency", m["api_p99"] * 1e3, "ms", m["floor_p99"] * 1e3, f"< {TARGET_P99_MS:.0f} ms",
            m["api_p99"] * 1e3 < TARGET_P99_MS),
        row("service in-process throughput", m["svc_rate"], "randomizations/s", m["svc_floor_rate"], None, None),
        row("service in-process p50 latency", m["svc_p50"] * 1e3, "ms", m["svc_floor_p50"] * 1e3, None, None),
    ]


def print_table(rows: list[dict], out=print) -> None:
    common.print_table(rows, out, width=32, places=1)


def main(argv: list[str] | None = None) -> int:
    cpus = os.cpu_count() or 1
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--participants", type=int, default=1000, help="API randomizations per run (default 1000)")
    ap.add_argument("--service-participants", type=int, default=300,
                    help="in-process service randomizations per run (default 300)")
    ap.add_argument("--clients", type=int, default=32, help="concurrent client threads (default 32)")
    ap.add_argument("--workers", type=int, default=cpus * 2 + 1,
                    help=f"gunicorn workers (default 2 x cores + 1 = {cpus * 2 + 1}, as deploy/gunicorn.conf.py)")
    ap.add_argument("--threads", type=int, default=1, help="threads per gunicorn worker (default 1)")
    ap.add_argument("--runs", type=int, default=3, help="runs; medians are reported (default 3)")
    ap.add_argument("--engine", choices=["postgresql", "sqlite"], default="postgresql")
    ap.add_argument("--database-url", default=os.environ.get("TRIALMGR_BENCH_DATABASE_URL", PG_DEFAULT),
                    help="PostgreSQL admin URL used to create and drop the throwaway database "
                         "(env TRIALMGR_BENCH_DATABASE_URL)")
    ap.add_argument("--quick", action="store_true", help="300 API + 100 service randomizations, 1 run")
    ap.add_argument("--json", type=Path, help="also write the result rows as JSON here (see bench/README.md)")
    args = ap.parse_args(argv)
    if args.quick:
        args.participants, args.service_participants, args.runs = 300, 100, 1
    for name in ("participants", "service_participants", "clients", "workers", "threads", "runs"):
        if not 1 <= getattr(args, name) <= 100_000:
            ap.error(f"--{name.replace('_', '-')} must be between 1 and 100000")
    if args.engine == "postgresql" and not args.database_url.startswith("postgresql"):
        ap.error("--database-url must be a postgresql URL")
    host = re.search(r"@([^:/]+)", args.database_url)
    if args.engine == "postgresql" and host and host.group(1) not in ("127.0.0.1", "localhost", "::1", "[::1]"):
        ap.error("benchmarks only target loopback databases")

    rows, _ = run(args)
    print(f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus, "
          f"python {platform.python_version()}; median of {args.runs} run(s); {args.participants} API and "
          f"{args.service_participants} in-process randomizations per run")
    print(f"{rows[0]['benchmark']}; floor = bench/floor_app.py (one INSERT per POST) / one INSERT per transaction")
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
