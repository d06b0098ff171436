"""Helpers every benchmark shares: nearest-rank percentiles, stderr logging and the result table."""

from __future__ import annotations

import math
import os
import re
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

PG_ADMIN = os.environ.get("TRIALMGR_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
DEFAULT_PROTOCOL = Path(__file__).resolve().parent.parent / "protocols" / "hip-pt-clbp.toml"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def percentile(xs: Sequence[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]  # nearest-rank


def print_table(rows: list[dict], out: Callable[[str], None] = print, *, width: int = 32, places: int = 1) -> None:
    """The rows of bench/README.md's convention as an aligned table with ok / MISSED against each target."""
    out(f"{'figure':<{width}}{'value':>11} {'unit':<18}{'floor':>11}{'ratio':>8}  target")
    for r in rows:
        floor = f"{r['floor']:.{places}f}" if r["floor"] is not None else "-"
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        verdict = "" if r["ok"] is None else ("ok" if r["ok"] else "MISSED")
        out(f"{r['figure']:<{width}}{r['value']:>11.{places}f} {r['unit']:<18}{floor:>11}{ratio:>8}  "
            f"{r['target'] or ''} {verdict}".rstrip())


@contextmanager
def database(engine: str, tmp: Path) -> Iterator[str]:
    """A fresh, empty database URL: a SQLite file in tmp, or a throwaway PostgreSQL database (created on the
    server named by TRIALMGR_BENCH_DATABASE_URL and dropped afterwards)."""
    if engine == "sqlite":
        yield f"sqlite:///{tmp / 'bench.db'}"
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"trialmgr_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def protocol_with_slots(tmp: Path, per_stratum: int) -> Path:
    """The default protocol with a longer allocation list, for benchmarks that randomize many participants."""
    text = DEFAULT_PROTOCOL.read_text(encoding="utf-8")
    text, n = re.subn(r"(?m)^slots_per_stratum\s*=\s*\d+", f"slots_per_stratum = {per_stratum}", text)
    if n != 1:
        raise SystemExit(f"{DEFAULT_PROTOCOL}: cannot find slots_per_stratum")
    path = tmp / "hip-pt-clbp.toml"
    path.write_text(text, encoding="utf-8")
    return path


def row(benchmark: str, figure: str, value: float, unit: str, floor: float | None, target: str | None,
        ok: bool | None) -> dict:
    """One result row in bench/README.md's convention; the ratio is value / floor."""
    ratio = round(value / floor, 3) if floor else None
    return {"benchmark": benchmark, "figure": figure, "value": round(value, 2), "unit": unit,
            "floor": round(floor, 2) if floor is not None else None, "ratio": ratio, "target": target, "ok": ok}


def cpu_seconds_by_process() -> dict[str, float]:
    """Processor seconds (user + system) used so far by the machine's processes, summed by kind: 'postgres'
    (every server process), 'gunicorn <app module>' (arbiter and workers), 'this' (this process) and 'other'.
    Diff two readings around a phase to see where its processor time went (Linux /proc; processes that ended
    in between are not counted)."""
    tick = os.sysconf("SC_CLK_TCK")
    me = str(os.getpid())
    out: dict[str, float] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        used = (int(fields[11]) + int(fields[12])) / tick
        if pid == me:
            kind = "this"
        elif cmd.startswith("postgres"):
            kind = "postgres"
        elif "gunicorn" in cmd:
            app = next((w for w in cmd.split() if ":" in w and not w.startswith("-")), "?")
            kind = f"gunicorn {app}"
        else:
            kind = "other"
        out[kind] = out.get(kind, 0.0) + used
    return out


def cpu_diff(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: round(after.get(k, 0.0) - before.get(k, 0.0), 2) for k in sorted(set(before) | set(after))}
