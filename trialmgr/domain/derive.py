"""Derived scores: pure functions over already-validated values.

Arithmetic is done on ``fractions.Fraction`` and rounded once, half away from zero, to a fixed number of
decimal places, so a score is the same on every machine and every re-computation (a float sum of the
same items in another order could differ in the last place and show up as a spurious audit change).
A missing input gives ``None``, never an exception: an incomplete form simply has no score yet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from fractions import Fraction
from typing import Any

from trialmgr.domain.protocol_model import Derived

Number = int | Decimal
Fn = Callable[[Sequence[Any], Mapping[str, Any], date | None], Any]


@dataclass(frozen=True)
class Method:
    """A derived-score method and the shape of its inputs, which protocol validation enforces."""

    fn: Fn
    description: str
    input_kind: str  # "numeric", "date" or "countable" (yes/no or multichoice)
    min_inputs: int = 1
    max_inputs: int | None = None
    # param name -> kind ("places", "positive_number", "count", "date"); required ones listed separately.
    params: Mapping[str, str] = field(default_factory=dict)
    required_params: tuple[str, ...] = ()
    # Whether the result can be a whole number (used to type-check criteria against derived values).
    output: str = "numeric"


def _fraction(value: Any) -> Fraction:
    # Choice codes such as "0".."4" arrive as strings; bools are never numbers here.
    if isinstance(value, bool):
        raise TypeError("a yes/no value is not a number")
    if isinstance(value, int | Decimal):
        return Fraction(value)
    if isinstance(value, float):
        return Fraction(Decimal(repr(value)))
    if isinstance(value, str):
        return Fraction(Decimal(value))
    raise TypeError(f"not a number: {value!r}")


def round_fraction(value: Fraction, places: int) -> Decimal:
    """Round half away from zero to ``places`` decimals, exactly."""
    scale = 10**places
    scaled = abs(value) * scale
    whole = int(scaled + Fraction(1, 2))
    if value < 0:
        whole = -whole
    return Decimal(whole).scaleb(-places)


def _exact(value: Fraction) -> Number:
    """An int when whole, else an exact Decimal (sums of decimals always have a power-of-ten denominator)."""
    if value.denominator == 1:
        return int(value)
    den = value.denominator
    for p in (2, 5):
        while den % p == 0:
            den //= p
    if den == 1:
        return Decimal(value.numerator) / Decimal(value.denominator)
    return round_fraction(value, 6)


def _places(params: Mapping[str, Any], default: int) -> int:
    return int(params.get("places", default))


def _all_present(inputs: Sequence[Any]) -> bool:
    return all(v is not None for v in inputs)


def age_years(inputs: Sequence[Any], params: Mapping[str, Any], reference_date: date | None) -> int | None:
    """Whole years completed; a 29 February birthday is reached on 1 March in common years."""
    (born,) = inputs
    ref = params.get("as_of") or reference_date
    if isinstance(ref, str):
        ref = date.fromisoformat(ref)
    if born is None or ref is None or born > ref:
        return None
    return ref.year - born.year - ((ref.month, ref.day) < (born.month, born.day))


def total(inputs: Sequence[Any], params: Mapping[str, Any], reference_date: date | None) -> Number | None:
    if not _all_present(inputs):
        return None
    return _exact(sum((_fraction(v) for v in inputs), Fraction(0)))


def mean(inputs: Sequence[Any], params: Mapping[str, Any], reference_date: date | None) -> Decimal | None:
    if not _all_present(inputs):
        return None
    return round_fraction(sum((_fraction(v) for v in inputs), Fraction(0)) / len(inputs), _places(params, 2))


def minimum(inputs: Sequence[Any], params: Mapping[str, Any], reference_date: date | None) -> Number | None:
    if not _all_present(inputs):
        return None
    return _exact(min(_fraction(v) for v in inputs))


def maximum(inputs: Sequence[Any], params: Mapping[str, Any], reference_date: date | None) -> Number | None:
    if not _all_present(inputs):
        return None
    return _exact(max(_fraction(v) for v in inputs))


def ratio(inputs: Sequence[Any], params: Mapping[str, Any], reference_date: date | None) -> Decimal | None:
    a, b = inputs
    if a is None or b is None or _fraction(b) == 0:
        return None
    return round_fraction(_fraction(a) / _fraction(b), _places(params, 3))


def count_true(inputs: Sequence[Any], params: Mapping[str, Any], reference_date: date | None) -> int | None:
    """Yes answers, plus ticked codes of multichoice inputs (e.g. Roland-Morris items)."""
    if not _all_present(inputs):
        return None
    count = 0
    for v in inputs:
        if isinstance(v, bool):
            count += v
        elif isinstance(v, tuple | list | frozenset | set):
            count += len(v)
        else:
            raise TypeError(f"count_true needs yes/no or multichoice values, got {v!r}")
    return count


def _answered(inputs: Sequence[Any]) -> list[Fraction]:
    return [_fraction(v) for v in inputs if v is not None]


def odi_percent(
    inputs: Sequence[Any], params: Mapping[str, Any], reference_date: date | None,
) -> Decimal | None:
    """Oswestry: sum / (5 x sections answered) x 100, over answered sections only."""
    answered = _answered(inputs)
    if not answered or len(answered) < int(params.get("min_answered", 1)):
        return None
    return round_fraction(sum(answered, Fraction(0)) / (5 * len(answered)) * 100, _places(params, 1))


def hoos_score(
    inputs: Sequence[Any], params: Mapping[str, Any], reference_date: date | None,
) -> Decimal | None:
    """HOOS/KOOS subscale: 100 - mean/4 x 100 (100 = no problems), from answered items only."""
    answered = _answered(inputs)
    if not answered or len(answered) < int(params.get("min_answered", 5)):
        return None
    item_mean = sum(answered, Fraction(0)) / len(answered)
    return round_fraction(100 - item_mean / 4 * 100, _places(params, 1))


def speed(inputs: Sequence[Any], params: Mapping[str, Any], reference_date: date | None) -> Decimal | None:
    """Metres per second over ``distance_m``, from a time in seconds."""
    (seconds,) = inputs
    if seconds is None or _fraction(seconds) <= 0:
        return None
    return round_fraction(_fraction(params["distance_m"]) / _fraction(seconds), _places(params, 3))


METHODS: dict[str, Method] = {
    "age_years": Method(
        age_years, "whole years from a date to the reference date", "date", 1, 1,
        params={"as_of": "date"}, output="integer",
    ),
    "sum": Method(total, "sum of the inputs (all required)", "numeric"),
    "mean": Method(mean, "mean of the inputs (all required)", "numeric", params={"places": "places"}),
    "min": Method(minimum, "smallest input (all required)", "numeric"),
    "max": Method(maximum, "largest input (all required)", "numeric"),
    "ratio": Method(ratio, "first input / second input", "numeric", 2, 2, params={"places": "places"}),
    "count_true": Method(
        count_true, "number of yes answers / ticked codes", "countable", output="integer",
    ),
    "odi_percent": Method(
        odi_percent, "Oswestry %: sum / (5 x answered) x 100", "numeric",
        params={"places": "places", "min_answered": "count"},
    ),
    "hoos_score": Method(
        hoos_score, "100 - mean/4 x 100 over answered items", "numeric",
        params={"places": "places", "min_answered": "count"},
    ),
    "speed": Method(
        speed, "distance_m / seconds (m/s)", "numeric", 1, 1,
        params={"distance_m": "positive_number", "places": "places"}, required_params=("distance_m",),
    ),
}


def compute_derived(
    derived_specs: Iterable[Derived],
    values: Mapping[str, Any],
    *,
    reference_date: date | None = None,
) -> dict[str, Any]:
    """Every derived value, in declaration order, so a later score may use an earlier one."""
    env = dict(values)
    out: dict[str, Any] = {}
    for spec in derived_specs:
        method = METHODS[spec.method]
        result = method.fn([env.get(i) for i in spec.inputs], spec.params, reference_date)
        env[spec.id] = result
        out[spec.id] = result
    return out


__all__ = ["METHODS", "Method", "compute_derived", "round_fraction"]
