"""Case report form values: parsing, rules, canonical text, whole-form validation.

One implementation serves the screening form, every case report form, the HTML forms and the JSON API,
so a value accepted in one place is accepted everywhere with the same message. Parsing is two steps:
``_coerce`` turns input into the field's Python type and ``_check`` applies the field's rules (range,
precision, codes, length). Stored values are read back with the first step only, so a value saved under an
earlier protocol version stays readable after a range is tightened.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from trialmgr.domain.derive import compute_derived
from trialmgr.domain.errors import ValidationFailed
from trialmgr.domain.protocol_model import DEFAULT_TEXT_MAX_LENGTH, Condition, FieldSpec, FormDef

MISSING_CODES = {"ND": "not done", "RF": "refused", "UNK": "unknown"}

_INT_RE = re.compile(r"[+-]?\d+")
_DEC_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_YES = frozenset({"yes", "y", "true", "1", "on"})
_NO = frozenset({"no", "n", "false", "0", "off"})
# Multichoice codes are stored joined by this; protocol validation keeps it out of codes.
MULTI_SEP = ";"
_OP_WORDS = {
    "==": "is", "!=": "is not", "<": "is less than", "<=": "is at most", ">": "is more than",
    ">=": "is at least", "in": "is one of", "not_in": "is not one of",
}


def is_blank(raw: Any) -> bool:
    """No answer: None, an empty or all-space string, or an empty selection."""
    if raw is None:
        return True
    if isinstance(raw, str):
        return raw.strip() == ""
    if isinstance(raw, list | tuple | set | frozenset):
        return all(is_blank(x) for x in raw)
    return False


def _coerce(spec: FieldSpec, raw: Any) -> Any:
    t = spec.type
    if t == "integer":
        if isinstance(raw, bool):
            raise ValueError("must be a whole number")
        if isinstance(raw, int):
            return raw
        if isinstance(raw, float) and math.isfinite(raw) and raw.is_integer():
            return int(raw)
        if isinstance(raw, Decimal) and raw.is_finite() and raw == raw.to_integral_value():
            return int(raw)
        if isinstance(raw, str) and _INT_RE.fullmatch(raw.strip()):
            return int(raw.strip())
        raise ValueError("must be a whole number")
    if t == "decimal":
        if isinstance(raw, bool):
            raise ValueError("must be a number")
        if isinstance(raw, int):
            return Decimal(raw)
        if isinstance(raw, float) and math.isfinite(raw):
            return Decimal(repr(raw))  # the shortest text that round-trips, not the binary expansion
        if isinstance(raw, Decimal) and raw.is_finite():
            return raw
        if isinstance(raw, str) and _DEC_RE.fullmatch(raw.strip()):
            return Decimal(raw.strip())
        raise ValueError("must be a number")
    if t == "choice":
        if isinstance(raw, int) and not isinstance(raw, bool):
            return str(raw)  # JSON clients send numeric codes as numbers
        if isinstance(raw, str):
            return raw.strip()
        raise ValueError("must be one of the codes: " + ", ".join(spec.codes))
    if t == "multichoice":
        items = raw.split(MULTI_SEP) if isinstance(raw, str) else raw
        if not isinstance(items, list | tuple | set | frozenset):
            raise ValueError("must be a list of codes")
        codes: list[str] = []
        for item in items:
            if isinstance(item, int) and not isinstance(item, bool):
                item = str(item)
            if not isinstance(item, str):
                raise ValueError("must be a list of codes")
            if item.strip() and item.strip() not in codes:
                codes.append(item.strip())
        order = {c: i for i, c in enumerate(spec.codes)}
        # Declaration order, so the canonical text does not depend on the order of ticking.
        return tuple(sorted(codes, key=lambda c: (order.get(c, len(order)), c)))
    if t == "date":
        if isinstance(raw, datetime):
            raise ValueError("is not a valid date (YYYY-MM-DD)")
        if isinstance(raw, date):
            return raw
        if isinstance(raw, str) and _DATE_RE.fullmatch(raw.strip()):
            try:
                return date.fromisoformat(raw.strip())
            except ValueError:
                pass
        raise ValueError("is not a valid date (YYYY-MM-DD)")
    if t == "yesno":
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, int) and raw in (0, 1):
            return bool(raw)
        if isinstance(raw, str) and raw.strip().lower() in _YES | _NO:
            return raw.strip().lower() in _YES
        raise ValueError("must be yes or no")
    if t == "text":
        if not isinstance(raw, str):
            raise ValueError("must be text")
        if "\x00" in raw:
            raise ValueError("must not contain control characters")
        return raw.replace("\r\n", "\n").replace("\r", "\n").strip()
    raise ValueError(f"unsupported field type '{t}'")


def _places(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def _range_message(spec: FieldSpec) -> str:
    """The range rule in words, with the field's unit ("must be between 1 and 120 s")."""
    unit = f" {spec.unit}" if spec.unit else ""
    if spec.min is not None and spec.max is not None:
        return f"must be between {spec.min} and {spec.max}{unit}"
    if spec.min is not None:
        return f"must be at least {spec.min}{unit}"
    return f"must be at most {spec.max}{unit}"


def _check(spec: FieldSpec, value: Any) -> Any:
    t = spec.type
    if t in ("integer", "decimal"):
        if t == "decimal" and spec.precision is not None and _places(value) > spec.precision:
            unit = "place" if spec.precision == 1 else "places"
            raise ValueError(f"must have at most {spec.precision} decimal {unit}")
        if (spec.min is not None and value < spec.min) or (spec.max is not None and value > spec.max):
            raise ValueError(_range_message(spec))
        if t == "decimal" and spec.precision is not None:
            try:
                value = value.quantize(Decimal(1).scaleb(-spec.precision))
            except InvalidOperation:
                raise ValueError("is too large") from None
    elif t == "choice":
        if value not in spec.codes:
            raise ValueError(f"'{value}' is not one of the codes: {', '.join(spec.codes)}")
    elif t == "multichoice":
        for code in value:
            if code not in spec.codes:
                raise ValueError(f"'{code}' is not one of the codes: {', '.join(spec.codes)}")
    elif t == "text":
        limit = spec.max_length or DEFAULT_TEXT_MAX_LENGTH
        if len(value) > limit:
            raise ValueError(f"must be at most {limit} characters")
    return value


def parse_value(spec: FieldSpec, raw: Any) -> Any:
    """The typed value of ``raw`` (form text or JSON value); ValueError names the rule it breaks."""
    if is_blank(raw):
        raise ValueError("must not be blank")
    return _check(spec, _coerce(spec, raw))


def serialize_value(spec: FieldSpec, value: Any) -> str:
    """Canonical text for storage and audit; None (no value) is the empty string."""
    if value is None:
        return ""
    t = spec.type
    if t == "integer":
        return str(int(value))
    if t == "decimal":
        d = value if isinstance(value, Decimal) else Decimal(str(value))
        places = spec.precision
        return format(d.normalize() if places is None else d.quantize(Decimal(1).scaleb(-places)), "f")
    if t == "multichoice":
        return MULTI_SEP.join(value)
    if t == "date":
        return value.isoformat()
    if t == "yesno":
        return "yes" if value else "no"
    return str(value)


def deserialize_value(spec: FieldSpec, s: str) -> Any:
    """Inverse of ``serialize_value``; applies no range rules (see the module docstring)."""
    if s == "":
        return None
    if spec.type == "text":
        return s
    value = _coerce(spec, s)
    if spec.type == "multichoice":
        return tuple(c for c in s.split(MULTI_SEP) if c)  # keep stored order, even for retired codes
    return value


def display_value(spec: FieldSpec | None, value: Any) -> str:
    """Plain words for a value, for messages and read-only pages."""
    if value is None:
        return "blank"
    if spec is not None and spec.type == "choice":
        return _label(spec, value)
    if spec is not None and spec.type == "multichoice":
        return ", ".join(_label(spec, c) for c in value) or "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, tuple):
        return ", ".join(display_value(spec, v) for v in value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def _label(spec: FieldSpec, code: str) -> str:
    try:
        return spec.choice_label(code)
    except KeyError:
        return code


def plain_label(label: str) -> str:
    """A label as it reads inside a sentence ("Age" -> "age", "MMSE score" stays)."""
    if len(label) > 1 and label[0].isupper() and not label[1].isupper():
        return label[0].lower() + label[1:]
    return label


def compare(actual: Any, op: str, expected: Any) -> bool:
    """``actual op expected``; for a multichoice value ``in`` means any ticked code is listed."""
    if op in ("in", "not_in"):
        hit = any(a in expected for a in actual) if isinstance(actual, tuple) else actual in expected
        return hit if op == "in" else not hit
    if op == "==":
        return bool(actual == expected)
    if op == "!=":
        return bool(actual != expected)
    if op == "<":
        return bool(actual < expected)
    if op == "<=":
        return bool(actual <= expected)
    if op == ">":
        return bool(actual > expected)
    if op == ">=":
        return bool(actual >= expected)
    raise ValueError(f"unknown operator '{op}'")


def condition_holds(cond: Condition, values: Mapping[str, Any]) -> bool:
    """A condition on a blank field does not hold: the dependent question is not asked."""
    actual = values.get(cond.field)
    return actual is not None and compare(actual, cond.op, cond.value)


def describe_condition(cond: Condition, spec: FieldSpec | None) -> str:
    name = plain_label(spec.label) if spec is not None else cond.field
    return f"{name} {_OP_WORDS.get(cond.op, cond.op)} {display_value(spec, cond.value)}"


@dataclass(frozen=True)
class FormResult:
    values: dict[str, Any]
    derived: dict[str, Any]
    errors: dict[str, str]
    missing: dict[str, str]
    # No errors and every applicable required field has a value or a missing-reason code.
    complete: bool
    applicable: frozenset[str] = field(default_factory=frozenset)

    @property
    def valid(self) -> bool:
        return not self.errors

    def raise_for_errors(self) -> None:
        if self.errors:
            raise ValidationFailed(self.errors)


def required_message(allow_missing_codes: bool = True) -> str:
    if not allow_missing_codes:
        return "required"
    return f"required; give a value or a reason it is missing ({', '.join(MISSING_CODES)})"


def validate_form(
    form: FormDef,
    raw: Mapping[str, Any],
    *,
    missing: Mapping[str, str] | None = None,
    partial: bool = False,
    reference_date: date | None = None,
    allow_missing_codes: bool = True,
    latest: date | None = None,
    too_late: str = "must not be in the future",
) -> FormResult:
    """Validate a whole submission; ``partial=True`` is a draft, where blanks are not yet errors.

    ``latest``: answers describe the past, so a date after it is refused with ``too_late`` (a typing mistake: an
    onset next year), except in a date field the protocol marks ``future = true``."""
    missing = missing or {}
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    missing_out: dict[str, str] = {}
    applicable: set[str] = set()
    incomplete = False
    derived_ids = {d.id for d in form.derived}
    for key in list(raw) + [k for k in missing if k not in raw]:
        if key in derived_ids:
            errors[key] = "is computed from other answers and cannot be entered"
        elif key not in form.field_ids:
            errors[key] = "is not a field of this form"

    for spec in form.fields:
        present = spec.id in raw and not is_blank(raw[spec.id])
        code = missing.get(spec.id)
        cond = spec.condition
        # When the controlling answer is itself invalid we cannot tell whether the field applies, so
        # only what was given is judged.
        known = cond is None or cond.field not in errors
        applies = cond is None or (known and condition_holds(cond, values))
        if known and not applies:
            if present or code:
                errors[spec.id] = "only applies when " + describe_condition(cond, _find(form, cond.field))
            continue
        applicable.add(spec.id)
        if code is not None:
            if code not in MISSING_CODES:
                errors[spec.id] = f"'{code}' is not a missing-reason code ({', '.join(MISSING_CODES)})"
            elif present:
                errors[spec.id] = "give either a value or a reason it is missing, not both"
            elif not allow_missing_codes:
                errors[spec.id] = "a reason for a missing value is not accepted here; give a value"
            else:
                missing_out[spec.id] = code
            continue
        if not present:
            if spec.required and applies:
                incomplete = True
                if not partial:
                    errors[spec.id] = required_message(allow_missing_codes)
            continue
        try:
            value = parse_value(spec, raw[spec.id])
        except ValueError as exc:
            errors[spec.id] = str(exc)
            continue
        if latest is not None and spec.type == "date" and not spec.future and value > latest:
            errors[spec.id] = too_late
            continue
        values[spec.id] = value

    for check in form.checks:
        left, right = values.get(check.left), values.get(check.right)
        if left is None or right is None or check.left in errors or check.right in errors:
            continue
        if not compare(left, check.op, right):
            errors[check.left] = check.message

    derived = compute_derived(form.derived, values, reference_date=reference_date)
    return FormResult(
        values=values,
        derived=derived,
        errors=errors,
        missing=missing_out,
        complete=not errors and not incomplete,
        applicable=frozenset(applicable),
    )


def _find(form: FormDef, field_id: str) -> FieldSpec | None:
    try:
        return form.field(field_id)
    except KeyError:
        return None


__all__ = [
    "MISSING_CODES",
    "FormResult",
    "compare",
    "condition_holds",
    "describe_condition",
    "deserialize_value",
    "display_value",
    "is_blank",
    "parse_value",
    "plain_label",
    "required_message",
    "serialize_value",
    "validate_form",
]
