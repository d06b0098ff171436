"""Design statistics for permuted blocks: predictability (exact) and imbalance (simulated).

Shown to the trial statistician before a list is generated, so that a design with too many strata for its
size, or with a fixed block size that makes allocations predictable, is noticed before it is used.

Imbalance is measured as the spread of the arms' deviations from their target counts,
max_i(n_i - n r_i/R) - min_i(n_i - n r_i/R): for 1:1 that is |n_A - n_B|, for equal ratios max - min of the
arm counts, and it stays meaningful for 2:1.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from itertools import product

import numpy as np

from trialmgr.domain.randomization import BlockDesign, InvalidDesign, design_errors
from trialmgr.domain.randomization_sim import simulate_sequences

# Warn when the worst overall imbalance K*max(b)/2 exceeds this share of the target N. At 10% a 184-person
# 1:1 trial could end 101:83 in the worst case, which is where reviewers start asking about blocking.
WORST_IMBALANCE_WARN_FRACTION = 0.10
QUANTILES = (0.5, 0.9, 0.95, 0.99)

__all__ = [
    "BalanceTable",
    "DesignReport",
    "ImbalanceSummary",
    "balance_table",
    "certain_share",
    "correct_guess_proportion",
    "expected_correct_guesses",
    "expected_forced_allocations",
    "simulate_design",
    "worst_stratum_imbalance",
]


def _block_counts(block_size: int, ratio: Sequence[int]) -> tuple[int, ...]:
    total = sum(ratio)
    if not ratio or any(r < 1 for r in ratio) or block_size < 1 or block_size % total:
        raise ValueError(f"block size {block_size} is not a positive multiple of the ratio sum {total}")
    return tuple(r * block_size // total for r in ratio)


def _multinomial(counts: Sequence[int]) -> int:
    result, n = 1, 0
    for c in counts:
        n += c
        result *= math.comb(n, c)
    return result


@lru_cache(maxsize=256)
def _block_expectations(block_size: int, ratio: tuple[int, ...]) -> tuple[Fraction, Fraction]:
    """Exact (E correct guesses, E forced allocations) in one block.

    Enumerating the block's distinct patterns would be exponential; summing over the count states the
    patterns pass through is the same expectation: every distinct pattern is equally likely, so a state n is
    reached with probability multinomial(n) * multinomial(c - n) / multinomial(c).
    """
    counts = _block_counts(block_size, ratio)
    total_r = sum(ratio)
    n_patterns = _multinomial(counts)
    correct = forced = Fraction(0)
    for state in product(*(range(c + 1) for c in counts)):
        t = sum(state)
        if t == block_size:
            continue
        remaining = [c - n for c, n in zip(counts, state, strict=True)]
        p_state = Fraction(_multinomial(state) * _multinomial(remaining), n_patterns)
        # Convergence strategy: guess the arm furthest behind its target share t*r_i/R (scaled by R so the
        # comparison is exact), a fair draw among ties.
        deficits = [t * r - n * total_r for r, n in zip(ratio, state, strict=True)]
        best = max(deficits)
        guessed = [i for i, d in enumerate(deficits) if d == best]
        left = block_size - t
        correct += p_state * Fraction(sum(remaining[i] for i in guessed), len(guessed) * left)
        if sum(1 for r in remaining if r) == 1:
            forced += p_state
    return correct, forced


def expected_correct_guesses(block_size: int, ratio: Sequence[int] = (1, 1)) -> float:
    """Expected correct guesses per block under the convergence strategy (Blackwell-Hodges).

    1:1 uses the closed form m + 2^(2m-1)/C(2m,m) - 1/2; other ratios are computed exactly over the block's
    patterns. For unequal ratios this strategy (behind the target share) is not the best possible guess,
    but it is the one the literature's figures use.
    """
    ratio = tuple(ratio)
    if len(ratio) == 2 and ratio[0] == ratio[1]:
        _block_counts(block_size, ratio)
        m = block_size // 2
        return m + 2 ** (2 * m - 1) / math.comb(2 * m, m) - 0.5
    return float(_block_expectations(block_size, ratio)[0])


def expected_forced_allocations(block_size: int, ratio: Sequence[int] = (1, 1)) -> float:
    """Expected allocations per block that the block so far forces (only one arm left in it)."""
    return float(_block_expectations(block_size, tuple(ratio))[1])


def _checked(design: BlockDesign) -> BlockDesign:
    errors = design_errors(design)
    if errors:
        raise InvalidDesign(errors)
    return design


def _per_slot(design: BlockDesign, which: int) -> float:
    num = den = 0.0
    for size, weight in zip(design.block_sizes, design.block_weights, strict=True):
        num += weight * float(_block_expectations(size, design.ratios)[which])
        den += weight * size
    return num / den


def correct_guess_proportion(design: BlockDesign) -> float:
    """Long-run share of correct guesses: sum p_b E(G_b) / sum p_b b (0.703 for {2,4,6}, 1:1)."""
    return _per_slot(_checked(design), 0)


def certain_share(design: BlockDesign) -> float:
    """Long-run share of allocations forced by the block so far, for someone who knows the block sizes.

    Random sizes barely lower this; what they remove is certainty for an observer who does not know the
    sizes, which simulate_design reports as observer_certain_share.
    """
    return _per_slot(_checked(design), 1)


def worst_stratum_imbalance(design: BlockDesign) -> float:
    """Largest imbalance a stratum can show mid-block (max(b)/2 for 1:1)."""
    ratio = design.ratios
    total_r = sum(ratio)
    counts = design.arm_counts(max(design.active_sizes()))
    worst = 0.0
    for state in product(*(range(c + 1) for c in counts)):
        n = sum(state)
        dev = [s - n * r / total_r for s, r in zip(state, ratio, strict=True)]
        worst = max(worst, max(dev) - min(dev))
    return worst


@dataclass(frozen=True)
class ImbalanceSummary:
    mean_abs: float
    quantiles: dict[float, float]
    max: float
    p_exceeds: dict[int, float]  # k -> P(imbalance > k)


@dataclass(frozen=True)
class DesignReport:
    arms: tuple[str, ...]
    n_strata: int
    target_n: int
    n_sims: int
    imbalance_measure: str
    stratum: ImbalanceSummary
    overall: ImbalanceSummary
    worst_stratum_imbalance: float
    worst_overall_imbalance: float
    approx_var_overall: float | None  # Hallstrom & Davis K(b+1)/6, size-biased over random sizes; 1:1 only
    simulated_var_overall: float | None  # of the signed n_A - n_B; two arms only
    correct_guess_theory: float
    correct_guess_simulated: float
    forced_share_theory: float
    forced_share_simulated: float
    observer_certain_share_simulated: float
    warnings: tuple[str, ...]


def _spread(counts: np.ndarray, ratio: Sequence[int]) -> np.ndarray:
    n = counts.sum(axis=-1, keepdims=True)
    dev = counts - n * (np.asarray(ratio, dtype=np.float64) / sum(ratio))
    return np.round(dev.max(axis=-1) - dev.min(axis=-1), 9)


def _summary(values: np.ndarray, max_k: int) -> ImbalanceSummary:
    qs = np.quantile(values, QUANTILES)
    return ImbalanceSummary(
        mean_abs=float(values.mean()),
        quantiles={q: float(v) for q, v in zip(QUANTILES, qs, strict=True)},
        max=float(values.max()),
        p_exceeds={k: float((values > k).mean()) for k in range(max_k + 1)},
    )


def simulate_design(
    design: BlockDesign,
    n_strata: int,
    target_n: int,
    n_sims: int = 10_000,
    rng: np.random.Generator | None = None,
) -> DesignReport:
    """Simulate n_sims trials of target_n participants spread over the strata uniformly at random."""
    design = _checked(design)
    if n_strata < 1 or target_n < 1 or n_sims < 1:
        raise ValueError("n_strata, target_n and n_sims must be positive")
    rng = rng if rng is not None else np.random.default_rng()
    k_arms = len(design.arms)
    lengths = rng.multinomial(target_n, np.full(n_strata, 1 / n_strata), size=n_sims)
    sim = simulate_sequences(design, lengths.reshape(-1), rng)
    counts = sim.counts.reshape(n_sims, n_strata, k_arms)
    stratum_spread = _spread(counts, design.ratios).reshape(-1)
    overall_counts = counts.sum(axis=1)
    overall_spread = _spread(overall_counts, design.ratios)

    w = worst_stratum_imbalance(design)
    worst_overall = n_strata * w
    sizes = np.asarray(design.block_sizes, dtype=np.float64)
    weights = np.asarray(design.block_weights, dtype=np.float64)
    approx_var = None
    if design.ratios == (1, 1):
        # The stopping point falls in a block chosen with probability proportional to p_b * b.
        approx_var = n_strata * float(np.dot(weights * sizes, (sizes + 1) / 6) / np.dot(weights, sizes))
    sim_var = None
    if k_arms == 2:
        sim_var = float(np.var(overall_counts[:, 0] - overall_counts[:, 1]))

    report_k = min(int(worst_overall), 10)
    forced_theory = certain_share(design)
    warnings: list[str] = []
    if worst_overall > WORST_IMBALANCE_WARN_FRACTION * target_n:
        warnings.append(
            f"worst-case overall imbalance {worst_overall:g} ({n_strata} strata x {w:g}) is "
            f"{worst_overall / target_n:.0%} of the target N={target_n} (warning above "
            f"{WORST_IMBALANCE_WARN_FRACTION:.0%}): use fewer strata or smaller blocks"
        )
    if target_n / n_strata < max(design.active_sizes()):
        warnings.append(
            f"on average {target_n / n_strata:.1f} participants per stratum, fewer than the largest block "
            f"({max(design.active_sizes())}): most strata will stop mid-block"
        )
    if len(design.active_sizes()) == 1:
        warnings.append(
            f"a single block size lets anyone who knows it predict {sim.observer_certain_share:.0%} of "
            "allocations with certainty: use random block sizes"
        )
    measure = (
        "|n_A - n_B|"
        if design.ratios == (1, 1)
        else ("max - min arm count" if len(set(design.ratios)) == 1 else "spread of deviations from target counts")
    )
    return DesignReport(
        arms=design.arm_codes,
        n_strata=n_strata,
        target_n=target_n,
        n_sims=n_sims,
        imbalance_measure=measure,
        stratum=_summary(stratum_spread, min(int(w), 10)),
        overall=_summary(overall_spread, report_k),
        worst_stratum_imbalance=w,
        worst_overall_imbalance=worst_overall,
        approx_var_overall=approx_var,
        simulated_var_overall=sim_var,
        correct_guess_theory=correct_guess_proportion(design),
        correct_guess_simulated=sim.correct_share,
        forced_share_theory=forced_theory,
        forced_share_simulated=sim.forced_share,
        observer_certain_share_simulated=sim.observer_certain_share,
        warnings=tuple(warnings),
    )


@dataclass(frozen=True)
class BalanceTable:
    """Allocations so far, counted per stratum, per site and overall; `arms` fixes the column order."""

    arms: tuple[str, ...]
    by_stratum: dict[str, dict[str, int]]
    by_site: dict[str, dict[str, int]]
    overall: dict[str, int]

    @staticmethod
    def imbalance(counts: dict[str, int]) -> int:
        """max - min arm count (|n_A - n_B| for two arms); for unequal ratios compare to the ratio instead."""
        return max(counts.values()) - min(counts.values()) if counts else 0


def balance_table(assignments: Iterable[tuple[str, str, str]], arms: Sequence[str] | None = None) -> BalanceTable:
    """Count (stratum, site, arm) assignments; arms with no allocation yet still get a zero column."""
    rows = list(assignments)
    order = list(arms) if arms is not None else []
    for _, _, arm in rows:
        if arm not in order:
            order.append(arm)
    per_stratum: dict[str, Counter[str]] = {}
    per_site: dict[str, Counter[str]] = {}
    overall: Counter[str] = Counter()
    for stratum, site, arm in rows:
        per_stratum.setdefault(stratum, Counter())[arm] += 1
        per_site.setdefault(site, Counter())[arm] += 1
        overall[arm] += 1

    def full(c: Counter[str]) -> dict[str, int]:
        return {arm: c[arm] for arm in order}

    return BalanceTable(
        arms=tuple(order),
        by_stratum={s: full(c) for s, c in sorted(per_stratum.items())},
        by_site={s: full(c) for s, c in sorted(per_site.items())},
        overall=full(overall),
    )
