"""Derived scores against values worked out by hand."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from fractions import Fraction

import pytest

from trialmgr.domain.derive import METHODS, compute_derived, round_fraction
from trialmgr.domain.protocol import Derived


def run(method: str, inputs: list[object], params: dict[str, object] | None = None,
        reference_date: date | None = None) -> object:
    return METHODS[method].fn(inputs, params or {}, reference_date)


@pytest.mark.parametrize(
    ("born", "on", "age"),
    [
        (date(1961, 2, 1), date(2026, 1, 1), 64),  # 64 and 11 months
        (date(1961, 1, 1), date(2026, 1, 1), 65),  # 65 today
        (date(1961, 1, 2), date(2026, 1, 1), 64),  # 65 tomorrow
        (date(1960, 2, 29), date(2025, 2, 28), 64),  # leap-day birthday, common year: not yet
        (date(1960, 2, 29), date(2025, 3, 1), 65),  # ... reached on 1 March
        (date(1960, 2, 29), date(2024, 2, 29), 64),  # leap year: on the day itself
        (date(1960, 2, 29), date(2024, 2, 28), 63),
        (date(2026, 1, 1), date(2026, 1, 1), 0),
    ],
)
def test_age_years(born: date, on: date, age: int) -> None:
    assert run("age_years", [born], reference_date=on) == age


def test_age_years_missing_or_future() -> None:
    assert run("age_years", [None], reference_date=date(2026, 1, 1)) is None
    assert run("age_years", [date(1950, 1, 1)]) is None  # no reference date
    assert run("age_years", [date(2030, 1, 1)], reference_date=date(2026, 1, 1)) is None
    assert run("age_years", [date(1950, 6, 1)], {"as_of": date(2020, 6, 1)}) == 70


def test_sum_mean_min_max() -> None:
    assert run("sum", [1, 2, 3]) == 6
    assert run("sum", [Decimal("1.5"), 2]) == Decimal("3.5")
    assert run("sum", [1, None, 3]) is None  # all inputs required
    assert run("sum", ["2", "3"]) == 5  # numeric choice codes
    assert run("mean", [1, 2, 2]) == Decimal("1.67")
    assert run("mean", [1, 2], {"places": 0}) == Decimal("2")  # 1.5 rounds half away from zero
    assert run("min", [Decimal("0.25"), Decimal("0.3")]) == Decimal("0.25")
    assert run("max", [3, 7, 5]) == 7
    assert run("min", [None, 1]) is None


def test_ratio() -> None:
    assert run("ratio", [Decimal("18.2"), Decimal("70.0")]) == Decimal("0.260")
    assert run("ratio", [1, 3]) == Decimal("0.333")
    assert run("ratio", [2, 3], {"places": 2}) == Decimal("0.67")
    assert run("ratio", [1, 0]) is None
    assert run("ratio", [None, 2]) is None


def test_count_true() -> None:
    assert run("count_true", [True, False, True]) == 2
    assert run("count_true", [("1", "4", "9")]) == 3  # a multichoice of ticked items
    assert run("count_true", [()]) == 0
    assert run("count_true", [True, None]) is None


def test_odi_percent_uses_answered_sections_only() -> None:
    # 10 sections, sum 17: 17 / 50 x 100 = 34 %
    assert run("odi_percent", [2, 1, 3, 2, 2, 1, 2, 1, 2, 1]) == Decimal("34.0")
    # sex life not answered: 16 / 45 x 100 = 35.555... -> 35.6
    assert run("odi_percent", [2, 1, 3, 2, 2, 1, 2, None, 2, 1]) == Decimal("35.6")
    assert run("odi_percent", [None] * 10) is None
    assert run("odi_percent", [5, None], {"min_answered": 2}) is None


def test_hoos_score() -> None:
    # sum 13 over 10 items: mean 1.3, 100 - 1.3/4 x 100 = 67.5
    assert run("hoos_score", [1, 2, 1, 0, 2, 1, 2, 1, 2, 1]) == Decimal("67.5")
    assert run("hoos_score", [0] * 10) == Decimal("100.0")
    assert run("hoos_score", [4] * 10) == Decimal("0.0")
    # five answered is enough: mean 2 -> 50
    assert run("hoos_score", [2, 2, 2, 2, 2, None, None, None, None, None]) == Decimal("50.0")
    # four is not
    assert run("hoos_score", [2, 2, 2, 2, None, None, None, None, None, None]) is None
    # 9 answered, sum 10: 100 - 10/9 x 25 = 72.222... -> 72.2
    assert run("hoos_score", [1, 1, 1, 1, 1, 1, 1, 1, 2, None]) == Decimal("72.2")


def test_speed() -> None:
    assert run("speed", [Decimal("8.00")], {"distance_m": Decimal(10)}) == Decimal("1.250")
    assert run("speed", [Decimal("7.5")], {"distance_m": Decimal(10)}) == Decimal("1.333")
    assert run("speed", [Decimal("6.00")], {"distance_m": Decimal(10)}) == Decimal("1.667")
    assert run("speed", [None], {"distance_m": Decimal(10)}) is None
    assert run("speed", [0], {"distance_m": Decimal(10)}) is None


def test_round_fraction_is_exact_half_away_from_zero() -> None:
    assert round_fraction(Fraction(5, 2), 0) == Decimal("3")
    assert round_fraction(Fraction(-5, 2), 0) == Decimal("-3")
    assert round_fraction(Fraction(2675, 1000), 2) == Decimal("2.68")  # a float would give 2.67
    assert str(round_fraction(Fraction(1, 8), 3)) == "0.125"


def test_compute_derived_in_declaration_order() -> None:
    specs = [
        Derived("left", "Left", "ratio", ("l", "w"), {"places": 3}),
        Derived("right", "Right", "ratio", ("r", "w"), {"places": 3}),
        Derived("weaker", "Weaker", "min", ("left", "right")),
    ]
    out = compute_derived(specs, {"l": Decimal("20.0"), "r": Decimal("17.5"), "w": Decimal("70.0")})
    assert out == {"left": Decimal("0.286"), "right": Decimal("0.250"), "weaker": Decimal("0.25")}
    assert compute_derived(specs, {"l": Decimal("20.0"), "w": Decimal("70.0")})["weaker"] is None


def test_every_method_is_registered_with_its_shape() -> None:
    assert set(METHODS) == {
        "age_years", "sum", "mean", "min", "max", "ratio", "count_true", "odi_percent", "hoos_score", "speed",
    }
    assert METHODS["speed"].required_params == ("distance_m",)
    assert METHODS["ratio"].min_inputs == METHODS["ratio"].max_inputs == 2
