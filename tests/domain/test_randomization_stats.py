"""Design statistics: exact predictability figures, and the simulation agreeing with them."""

from __future__ import annotations

from fractions import Fraction
from itertools import permutations

import numpy as np
import pytest

from trialmgr.domain.randomization import BlockDesign, InvalidDesign
from trialmgr.domain.randomization_stats import (
    balance_table,
    certain_share,
    correct_guess_proportion,
    expected_correct_guesses,
    expected_forced_allocations,
    simulate_design,
    worst_stratum_imbalance,
)


def one_to_one(*sizes: int, weights=None) -> BlockDesign:
    return BlockDesign.of([("A", 1), ("B", 1)], sizes, weights)


def brute_force(block_size: int, ratio: tuple[int, ...]) -> tuple[Fraction, Fraction]:
    """Expected correct guesses and forced allocations over every distinct pattern of the block."""
    pattern = [i for i, r in enumerate(ratio) for _ in range(r * block_size // sum(ratio))]
    patterns = set(permutations(pattern))
    correct = forced = Fraction(0)
    for p in patterns:
        counts = [0] * len(ratio)
        for t, arm in enumerate(p):
            deficits = [t * r - n * sum(ratio) for r, n in zip(ratio, counts, strict=True)]
            guessed = [i for i, d in enumerate(deficits) if d == max(deficits)]
            correct += Fraction(arm in guessed, len(guessed))
            forced += len(set(p[t:])) == 1
            counts[arm] += 1
    return correct / len(patterns), forced / len(patterns)


@pytest.mark.parametrize(("b", "share"), [(2, 0.750), (4, 0.708), (6, 0.683), (8, 0.666)])
def test_blackwell_hodges_proportions(b, share):
    assert round(expected_correct_guesses(b) / b, 3) == share
    assert round(correct_guess_proportion(one_to_one(b)), 3) == share


def test_random_block_sizes_proportion():
    assert round(correct_guess_proportion(one_to_one(2, 4, 6)), 3) == 0.703


@pytest.mark.parametrize(
    ("b", "ratio"), [(2, (1, 1)), (6, (1, 1)), (3, (2, 1)), (6, (2, 1)), (3, (1, 1, 1)), (6, (1, 1, 1)), (5, (3, 2))]
)
def test_exact_values_match_enumeration_of_every_pattern(b, ratio):
    correct, forced = brute_force(b, ratio)
    assert expected_correct_guesses(b, ratio) == pytest.approx(float(correct), abs=1e-12)
    assert expected_forced_allocations(b, ratio) == pytest.approx(float(forced), abs=1e-12)


def test_closed_form_and_pattern_sum_agree_for_larger_blocks():
    from trialmgr.domain.randomization_stats import _block_expectations

    for b in range(2, 21, 2):
        assert expected_correct_guesses(b) == pytest.approx(float(_block_expectations(b, (1, 1))[0]), abs=1e-12)


def test_forced_share_exact_values():
    assert certain_share(one_to_one(2)) == pytest.approx(1 / 2)
    assert certain_share(one_to_one(4)) == pytest.approx(1 / 3)
    assert certain_share(one_to_one(6)) == pytest.approx(1 / 4)
    assert certain_share(one_to_one(2, 4, 6)) == pytest.approx((1 + 4 / 3 + 3 / 2) / 12)


def test_invalid_designs_are_refused():
    with pytest.raises(ValueError, match="not a positive multiple"):
        expected_correct_guesses(3)
    with pytest.raises(InvalidDesign):
        correct_guess_proportion(one_to_one(3))


@pytest.mark.parametrize("sizes", [(2,), (4,), (6,), (8,), (2, 4, 6)])
def test_simulated_correct_guesses_match_the_formula(sizes):
    design = one_to_one(*sizes)
    report = simulate_design(design, n_strata=1, target_n=1200, n_sims=500, rng=np.random.default_rng(31))
    # 600k allocations: Monte Carlo SE < 0.001; stopping mid-block shifts the share by < 0.001 at this N.
    assert report.correct_guess_simulated == pytest.approx(report.correct_guess_theory, abs=0.004)
    assert report.forced_share_simulated == pytest.approx(report.forced_share_theory, abs=0.004)
    if len(sizes) == 1:
        # With one block size the observer knows every block boundary: certain = forced.
        assert report.observer_certain_share_simulated == pytest.approx(report.forced_share_simulated)
    else:
        # Random sizes keep the share of correct guesses but take away most certain ones.
        assert report.observer_certain_share_simulated < report.forced_share_simulated / 4


@pytest.mark.parametrize(
    "design",
    [BlockDesign.of([("A", 2), ("B", 1)], [3, 6]), BlockDesign.of([("A", 1), ("B", 1), ("C", 1)], [3, 6])],
    ids=["2:1", "1:1:1"],
)
def test_unequal_ratios_and_three_arms(design):
    report = simulate_design(design, n_strata=1, target_n=900, n_sims=500, rng=np.random.default_rng(8))
    assert report.correct_guess_simulated == pytest.approx(report.correct_guess_theory, abs=0.005)
    assert report.forced_share_simulated == pytest.approx(report.forced_share_theory, abs=0.005)
    assert report.simulated_var_overall is None or len(design.arms) == 2
    assert report.stratum.max <= report.worst_stratum_imbalance + 1e-9


def test_imbalance_bounds_and_default_trial_report():
    design = one_to_one(2, 4, 6)
    report = simulate_design(design, n_strata=6, target_n=184, n_sims=10_000, rng=np.random.default_rng(1))
    assert report.worst_stratum_imbalance == 3 and report.worst_overall_imbalance == 18
    assert report.stratum.max <= 3
    assert report.overall.max <= 18
    # N = 184 is even, so n_A - n_B is even.
    assert report.overall.p_exceeds[0] == report.overall.p_exceeds[1]
    assert report.overall.quantiles[0.5] <= report.overall.quantiles[0.99] <= report.overall.max
    assert report.warnings == ()  # 18 < 10% of 184
    assert report.imbalance_measure == "|n_A - n_B|"


def test_variance_matches_hallstrom_davis():
    design = one_to_one(2, 4, 6)
    rng = np.random.default_rng(77)
    # The approximation averages over where each stratum stops; D's parity follows N, so average N and N+1.
    reports = [simulate_design(design, 4, n, n_sims=6000, rng=rng) for n in (800, 801)]
    simulated = (reports[0].simulated_var_overall + reports[1].simulated_var_overall) / 2
    assert reports[0].approx_var_overall == pytest.approx(4 * 68 / 72)
    assert simulated == pytest.approx(reports[0].approx_var_overall, rel=0.06)


def test_warnings_for_many_strata_and_fixed_blocks():
    report = simulate_design(one_to_one(4), n_strata=24, target_n=100, n_sims=500, rng=np.random.default_rng(2))
    text = " ".join(report.warnings)
    assert "worst-case overall imbalance 48 (24 strata x 2) is 48% of the target N=100" in text
    assert "4.2 participants per stratum" not in text  # 100/24 = 4.2 is not below the largest block 4
    assert "single block size" in text
    report = simulate_design(one_to_one(2, 4, 6), n_strata=60, target_n=184, n_sims=200, rng=np.random.default_rng(2))
    assert any("3.1 participants per stratum, fewer than the largest block (6)" in w for w in report.warnings)


def test_worst_stratum_imbalance_for_other_ratios():
    assert worst_stratum_imbalance(one_to_one(2, 4, 8)) == 4
    assert worst_stratum_imbalance(BlockDesign.of([("A", 1), ("B", 1), ("C", 1)], [3, 6])) == 2
    # 2:1, block of 6 (AAAABB): after AAAA the deviations are +4/3 and -4/3.
    assert worst_stratum_imbalance(BlockDesign.of([("A", 2), ("B", 1)], [6])) == pytest.approx(8 / 3)


def test_balance_table_counts_so_far():
    table = balance_table(
        [("DE|F", "DE", "HIP"), ("DE|F", "DE", "SPINE"), ("DE|M", "DE", "HIP"), ("PA|F", "PA", "HIP")],
        arms=["HIP", "SPINE"],
    )
    assert table.by_stratum["DE|M"] == {"HIP": 1, "SPINE": 0}
    assert table.by_site == {"DE": {"HIP": 2, "SPINE": 1}, "PA": {"HIP": 1, "SPINE": 0}}
    assert table.overall == {"HIP": 3, "SPINE": 1}
    assert table.imbalance(table.overall) == 2
    assert balance_table([]).overall == {}
