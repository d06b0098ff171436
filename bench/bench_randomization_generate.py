"""Generate 1,000,000 slots across 100 strata and compare with a numpy floor measured in the same run.

Floor: the irreducible work of the same size -- one uniform key per slot and an argsort of each block's keys
(blocks of 4, 250,000 x 4), i.e. drawing the permutations and nothing else; a flat argsort of 1,000,000 keys
is shown for reference. Target: < 1 s for ours.

    .venv/bin/python bench/bench_randomization_generate.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from trialmgr.domain.randomization import BlockDesign, generate_list
from trialmgr.domain.randomization_stats import simulate_design

N_STRATA = 100
SLOTS_PER_STRATUM = 10_000
TARGET_SECONDS = 1.0


def median_seconds(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1 run")
    parser.add_argument("--json", type=Path, help="also write the result rows as JSON here (bench/README.md)")
    args = parser.parse_args()
    if args.quick:
        args.runs = 1

    design = BlockDesign.of([("HIP", 1), ("SPINE", 1)], [2, 4, 6])
    strata = [f"S{i:03d}|{'F' if i % 2 else 'M'}" for i in range(N_STRATA)]
    total = N_STRATA * SLOTS_PER_STRATUM
    rng = np.random.default_rng(1)

    def ours() -> object:
        return generate_list(design, strata, SLOTS_PER_STRATUM, master_entropy=12345)

    def floor() -> object:
        keys = rng.random((total // 4, 4))
        return np.argsort(keys, axis=1)

    def floor_flat() -> object:
        return np.argsort(rng.random(total))

    generated = ours()
    assert len(generated) >= total
    t_ours = median_seconds(ours, args.runs)
    t_floor = median_seconds(floor, args.runs)
    t_flat = median_seconds(floor_flat, args.runs)
    t_bytes = median_seconds(generated.canonical_bytes, args.runs)
    t_sim = median_seconds(
        lambda: simulate_design(design, 6, 184, n_sims=10_000, rng=np.random.default_rng(2)), args.runs
    )

    print(
        f"machine: {platform.machine()} {platform.processor() or ''} python {platform.python_version()} "
        f"numpy {np.__version__}; median of {args.runs} runs"
    )
    print(f"{'measure':<52}{'seconds':>10}")
    print(f"{'generate_list: 1,000,000 slots, 100 strata':<52}{t_ours:>10.3f}")
    print(f"{'floor: argsort of 1,000,000 random keys in blocks of 4':<52}{t_floor:>10.3f}")
    print(f"{'ratio ours / floor':<52}{t_ours / t_floor:>10.1f}")
    print(f"{'(info) argsort of 1,000,000 random keys, one array':<52}{t_flat:>10.3f}")
    print(f"{'target for generate_list':<52}{'< ' + str(TARGET_SECONDS):>10}")
    print(f"{'(info) canonical bytes of the 1,000,000 slots':<52}{t_bytes:>10.3f}")
    print(f"{'(info) simulate_design 10,000 trials, 6 strata, N=184':<52}{t_sim:>10.3f}")
    if args.json:
        args.json.write_text(json.dumps([{
            "benchmark": "randomization list generation (1,000,000 slots, 100 strata)", "figure": "generate_list",
            "value": round(t_ours, 4), "unit": "s", "floor": round(t_floor, 4), "ratio": round(t_ours / t_floor, 3),
            "target": f"< {TARGET_SECONDS} s", "ok": t_ours < TARGET_SECONDS}], indent=1), encoding="utf-8")
    if t_ours >= TARGET_SECONDS:
        raise SystemExit(f"generate_list took {t_ours:.3f} s, over the {TARGET_SECONDS} s target")


if __name__ == "__main__":
    main()
