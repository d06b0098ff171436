"""Helpers every benchmark shares: nearest-rank percentiles, stderr logging and the result table."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence


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
