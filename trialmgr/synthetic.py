"""Synthetic but valid form answers, generated from the protocol's field definitions (demo data, benchmarks)."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

from trialmgr.domain import crf
from trialmgr.domain.protocol import FieldSpec, FormDef


def value_for(spec: FieldSpec, rng: random.Random, today: dt.date) -> str | None:
    t = spec.type
    if t == "integer":
        lo, hi = int(spec.min if spec.min is not None else 0), int(spec.max if spec.max is not None else 100)
        return str(rng.randint(lo, hi))
    if t == "decimal":
        lo = float(spec.min if spec.min is not None else 0)
        hi = float(spec.max if spec.max is not None else 100)
        hi = min(hi, lo + (hi - lo) * 0.3) if hi - lo > 50 else hi  # keep times plausible
        places = spec.precision if spec.precision is not None else 1
        step = Decimal(1).scaleb(-places)
        value = Decimal(str(rng.uniform(lo, hi))).quantize(step)
        # Both bounds rounded inwards to the field's precision, so the clamped value is itself valid.
        value = max(Decimal(str(lo)).quantize(step, rounding="ROUND_CEILING"),
                    min(value, Decimal(str(hi)).quantize(step, rounding="ROUND_FLOOR")))
        return format(value, "f")
    if t == "choice":
        return rng.choice(spec.codes)
    if t == "multichoice":
        return crf.MULTI_SEP.join(rng.sample(list(spec.codes), k=1))
    if t == "date":
        return (today - dt.timedelta(days=rng.randint(0, 20))).isoformat()
    if t == "yesno":
        return "yes" if rng.random() < 0.2 else "no"
    return rng.choice(["Reviewed with participant.", "No concerns.", "As planned."])[: spec.max_length or 500]


def value_near(spec: FieldSpec, text: str, rng: random.Random, spread: float) -> str:
    """A number within +-spread (a fraction) of an earlier answer, inside the field's range and precision: the
    same person measured again."""
    old = Decimal(text)
    places = 0 if spec.type == "integer" else (spec.precision if spec.precision is not None else 1)
    step = Decimal(1).scaleb(-places)
    value = (old * Decimal(str(1 + rng.uniform(-spread, spread)))).quantize(step)
    if spec.min is not None:
        value = max(value, Decimal(str(spec.min)).quantize(step, rounding="ROUND_CEILING"))
    if spec.max is not None:
        value = min(value, Decimal(str(spec.max)).quantize(step, rounding="ROUND_FLOOR"))
    return format(value, "f")


def form_values(form: FormDef, rng: random.Random, today: dt.date, *, near: dict[str, str] | None = None,
                spread: float = 0.15, **fixed: str) -> dict[str, str]:
    """Answers for every field whose condition holds (conditions only name earlier fields). `near`: earlier
    answers of the same participant (canonical text by field id): numbers are drawn within +-spread of them."""
    raw: dict[str, str] = {}
    for spec in form.fields:
        if spec.id in fixed:
            raw[spec.id] = fixed[spec.id]
            continue
        if spec.condition is not None:
            parsed = {k: crf.parse_value(form.field(k), v) for k, v in raw.items()}
            if not crf.condition_holds(spec.condition, parsed):
                continue
        earlier = (near or {}).get(spec.id)
        if earlier is not None and spec.type in ("integer", "decimal"):
            raw[spec.id] = value_near(spec, earlier, rng, spread)
            continue
        value = value_for(spec, rng, today)
        if value is not None:
            raw[spec.id] = value
    for check in form.checks:  # e.g. end date not before onset: make it hold
        left, right = raw.get(check.left), raw.get(check.right)
        if left is not None and right is not None:
            lv = crf.parse_value(form.field(check.left), left)
            rv = crf.parse_value(form.field(check.right), right)
            if not crf.compare(lv, check.op, rv):
                raw[check.left] = right
    return raw
