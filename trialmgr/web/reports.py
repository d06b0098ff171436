"""Text for the randomization design report: shared by its web page and `trialmgr randomization report`."""

from __future__ import annotations


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def design_report_lines(rep: dict, balance: dict) -> list[str]:
    d = rep["design"]
    lines = [
        f"Design: {len(d.arms)} arms ({', '.join(d.arms)}), {d.n_strata} strata, target N {d.target_n}; "
        f"{d.n_sims:,} simulated trials.",
        f"Imbalance measure: {d.imbalance_measure}.",
        f"Per stratum at the target N: mean {d.stratum.mean_abs:.2f}, "
        + ", ".join(f"{int(q * 100)}th percentile {v:g}" for q, v in sorted(d.stratum.quantiles.items()))
        + f", largest seen {d.stratum.max:g}; worst possible {d.worst_stratum_imbalance:g}.",
        f"Overall at the target N: mean {d.overall.mean_abs:.2f}, "
        + ", ".join(f"{int(q * 100)}th percentile {v:g}" for q, v in sorted(d.overall.quantiles.items()))
        + f", largest seen {d.overall.max:g}; worst possible {d.worst_overall_imbalance:g}.",
        "P(overall imbalance > k): " + ", ".join(f"k={k}: {_pct(p)}" for k, p in sorted(d.overall.p_exceeds.items())),
    ]
    if d.approx_var_overall is not None:
        sim = f"{d.simulated_var_overall:.2f}" if d.simulated_var_overall is not None else "n/a"
        lines.append(f"Variance of the overall imbalance: {sim} simulated, about {d.approx_var_overall:.2f} by "
                     "Hallstrom & Davis (1988).")
    lines += [
        f"Selection bias (convergence strategy): {_pct(d.correct_guess_theory)} correct guesses exactly, "
        f"{_pct(d.correct_guess_simulated)} simulated.",
        f"Allocations certain for someone who knows the block sizes: {_pct(d.forced_share_theory)} exactly, "
        f"{_pct(d.forced_share_simulated)} simulated; for an observer who does not: "
        f"{_pct(d.observer_certain_share_simulated)}.",
    ]
    for w in d.warnings:
        lines.append(f"WARNING: {w}")
    lines.append("Assignments so far: " + (", ".join(f"{arm} {n}" for arm, n in balance["overall"].items())
                                           or "none"))
    for stratum, counts in sorted(balance["by_stratum"].items()):
        lines.append(f"  stratum {stratum}: " + ", ".join(f"{arm} {n}" for arm, n in counts.items()))
    for site, counts in sorted(balance["by_site"].items()):
        lines.append(f"  site {site}: " + ", ".join(f"{arm} {n}" for arm, n in counts.items()))
    return lines
