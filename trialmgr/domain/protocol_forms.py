"""Checking the form parts of a protocol: fields, conditions, derived scores, cross-field checks."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from trialmgr.domain.crf import parse_value
from trialmgr.domain.derive import METHODS
from trialmgr.domain.protocol_model import (
    COMPARISON_OPS,
    CONDITION_OPS,
    DEFAULT_TEXT_MAX_LENGTH,
    FIELD_TYPES,
    FORM_KINDS,
    Choice,
    Condition,
    CrossCheck,
    Derived,
    FieldSpec,
    FormDef,
)
from trialmgr.domain.protocol_reader import (
    Checker,
    Table,
    declared_ids,
    duplicates,
    expected,
    join,
    to_decimal,
    type_name,
)

ID_RE = re.compile(r"[a-z][a-z0-9_]{0,62}")
ID_RULE = "is not a valid id (lower-case letters, digits and _, starting with a letter)"
# Codes end up in stored text (";" joins multichoice codes) and in stratum keys ("|" joins levels).
CODE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,31}")
CODE_RULE = "is not a valid code (letters, digits, _ . + -, at most 32 characters)"
FIELD_KEYS = (
    "id", "label", "type", "required", "unit", "min", "max", "precision", "choices", "max_length",
    "condition", "help", "identifier", "future",
)
NUMERIC_TYPES = ("integer", "decimal")
ORDERED_TYPES = ("integer", "decimal", "date")


def _literal_ok(spec: FieldSpec, value: Any) -> str | None:
    """Why a protocol literal has the wrong TOML type for the field, or None."""
    t = spec.type
    ok = {
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "decimal": isinstance(value, int | float) and not isinstance(value, bool)
        and (not isinstance(value, float) or math.isfinite(value)),
        "yesno": isinstance(value, bool),
        "date": isinstance(value, str | date),
    }.get(t, isinstance(value, str))
    if ok:
        return None
    want = {"yesno": "boolean", "decimal": "number", "date": "date", "integer": "integer"}.get(t, "string")
    return expected(want, value)


def typed_value(ck: Checker, path: str, spec: FieldSpec, op: str, value: Any) -> object:
    """A condition or criterion value, parsed by the field's own rules so both sides compare."""
    if op in ("<", "<=", ">", ">=") and spec.type not in ORDERED_TYPES:
        ck.err(path, f"operator '{op}' needs a number or date field; '{spec.id}' is {spec.type}")
        return None
    if spec.type == "multichoice":
        # Multichoice fields are tested with in / not_in (any ticked code), so the values are codes.
        if op in ("==", "!="):
            ck.err(path, f"use 'in' or 'not_in' with multichoice field '{spec.id}'")
            return None
        spec = FieldSpec(spec.id, spec.label, "choice", choices=spec.choices)
    if op in ("in", "not_in"):
        if not isinstance(value, list | tuple) or not value:
            ck.err(path, f"operator '{op}' needs a non-empty array, got {type_name(value)}")
            return None
        parsed = [typed_value(ck, join(path, i), spec, "==", v) for i, v in enumerate(value)]
        return None if any(p is None for p in parsed) else tuple(parsed)
    wrong = _literal_ok(spec, value)
    if wrong:
        ck.err(path, wrong)
        return None
    try:
        return parse_value(spec, value)
    except ValueError as exc:
        ck.err(path, str(exc))
        return None


def _choices(ck: Checker, t: Table, ftype: str | None) -> tuple[Choice, ...]:
    if ftype is None:
        return ()
    if ftype not in ("choice", "multichoice"):
        if t.has("choices"):
            ck.err(t.at("choices"), "only choice and multichoice fields have choices")
        return ()
    if not t.has("choices"):
        ck.err(t.at("choices"), f"required for a {ftype} field")
        return ()
    out: list[Choice] = []
    entries = []
    for path, item in t.items("choices"):
        c = Table(ck, item, path, ("code", "label"))
        code = c.string("code", pattern=CODE_RE, rule=CODE_RULE)
        label = c.string("label")
        entries.append((join(path, "code"), code))
        if code is not None and label is not None:
            out.append(Choice(code, label))
    if not entries and isinstance(t.data.get("choices"), list):
        ck.err(t.at("choices"), f"a {ftype} field needs at least one choice")
    duplicates(ck, entries, "code")
    return tuple(out)


def _bound(ck: Checker, t: Table, key: str, ftype: str | None) -> int | Decimal | None:
    if not t.has(key) or ftype is None:  # an unknown type is reported once, not once per key
        return None
    if ftype not in NUMERIC_TYPES:
        ck.err(t.at(key), "only integer and decimal fields have min/max")
        return None
    if ftype == "integer":
        return t.integer(key)
    return t.number(key)


def parse_fields(ck: Checker, owner: Table, key: str = "fields") -> tuple[FieldSpec, ...]:
    """Fields in order; conditions may only name an earlier field, which also rules out cycles."""
    fields: list[FieldSpec] = []
    by_id: dict[str, FieldSpec] = {}
    broken: set[str] = set()  # ids of fields with their own mistakes, not to be reported again
    entries = []
    any_item = False
    for path, item in owner.items(key):
        any_item = True
        mark = ck.mark()
        t = Table(ck, item, path, FIELD_KEYS)
        fid = t.string("id", pattern=ID_RE, rule=ID_RULE)
        entries.append((join(path, "id"), fid))
        label = t.string("label")
        ftype = t.string("type")
        if ftype is not None and ftype not in FIELD_TYPES:
            ck.err(t.at("type"), f"unknown type '{ftype}' (one of {', '.join(FIELD_TYPES)})")
            ftype = None
        lo, hi = _bound(ck, t, "min", ftype), _bound(ck, t, "max", ftype)
        if lo is not None and hi is not None and lo > hi:
            ck.err(t.at("min"), f"min {lo} is greater than max {hi}")
        precision = None
        if t.has("precision") and ftype is not None:
            if ftype != "decimal":
                ck.err(t.at("precision"), "only decimal fields have a precision")
            else:
                precision = t.integer("precision", minimum=0)
                if precision is not None and precision > 10:
                    ck.err(t.at("precision"), f"must be at most 10, got {precision}")
        max_length = DEFAULT_TEXT_MAX_LENGTH if ftype == "text" else None
        if t.has("max_length") and ftype is not None:
            if ftype != "text":
                ck.err(t.at("max_length"), "only text fields have a max_length")
            else:
                max_length = t.integer("max_length", minimum=1)
        choices = _choices(ck, t, ftype)
        required = t.boolean("required", default=True)
        unit = t.string("unit", required=False)
        help_text = t.string("help", required=False)
        identifier = t.boolean("identifier", default=False)
        future = t.boolean("future", default=False)
        if future and ftype is not None and ftype != "date":
            ck.err(t.at("future"), "only date fields have future")
        cond = None
        if t.has("condition"):
            cond = _condition(ck, t.data["condition"], t.at("condition"), by_id, broken, fid)
        if fid is None or label is None or ftype is None or not ck.clean_since(mark):
            broken.add(fid or "")
            continue
        spec = FieldSpec(
            fid, label, ftype, required=required, unit=unit, min=lo, max=hi, precision=precision,
            choices=choices, max_length=max_length, condition=cond, help=help_text, identifier=identifier,
            future=future,
        )
        if fid not in by_id:
            by_id[fid] = spec
            fields.append(spec)
    if not any_item and isinstance(owner.data.get(key), list):
        ck.err(owner.at(key), "needs at least one field")
    duplicates(ck, entries)
    return tuple(fields)


def _condition(
    ck: Checker, data: Any, path: str, earlier: dict[str, FieldSpec], broken: set[str], own_id: str | None,
) -> Condition | None:
    t = Table(ck, data, path, ("field", "op", "value"))
    target = t.string("field")
    op = t.string("op")
    if op is not None and op not in CONDITION_OPS:
        ck.err(t.at("op"), f"unknown operator '{op}' (one of {', '.join(CONDITION_OPS)})")
        op = None
    if not t.has("value") and t.ok:
        ck.err(t.at("value"), "required")
    if target is None or target in broken:
        return None
    spec = earlier.get(target)
    if spec is None:
        why = "a field cannot depend on itself" if target == own_id else (
            f"unknown field '{target}' (a condition must name an earlier field of the same form)")
        ck.err(t.at("field"), why)
        return None
    if op is None or not t.has("value"):
        return None
    value = typed_value(ck, t.at("value"), spec, op, t.data["value"])
    return None if value is None else Condition(target, op, value)


@dataclass(frozen=True)
class _Source:
    """What a derived input or a check may refer to: a field, or an earlier derived score."""

    spec: FieldSpec | None  # None for a derived score (always a number)

    @property
    def kind(self) -> str:
        if self.spec is None:
            return "numeric"
        t = self.spec.type
        if t in NUMERIC_TYPES or (t == "choice" and all(_is_number(c) for c in self.spec.codes)):
            return "numeric"
        if t in ("yesno", "multichoice"):
            return "countable"
        return t

    def describe(self, name: str) -> str:
        if self.spec is None:
            return f"'{name}' is a derived score"
        return f"'{name}' is a {self.spec.type} field"


def _is_number(code: str) -> bool:
    return bool(re.fullmatch(r"[+-]?\d+(\.\d+)?", code))


def _param(ck: Checker, path: str, kind: str, value: Any, n_inputs: int) -> object:
    if kind in ("places", "count"):
        if not isinstance(value, int) or isinstance(value, bool):
            ck.err(path, expected("integer", value))
            return None
        hi = 6 if kind == "places" else n_inputs
        lo = 0 if kind == "places" else 1
        if not lo <= value <= hi:
            ck.err(path, f"must be between {lo} and {hi}, got {value}")
            return None
        return value
    if kind == "positive_number":
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            ck.err(path, expected("number", value))
            return None
        if value <= 0:
            ck.err(path, f"must be greater than 0, got {value}")
            return None
        return to_decimal(value)
    # kind == "date"
    if isinstance(value, date) and type_name(value) == "date":
        return value
    try:
        return date.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        pass
    ck.err(path, "is not a valid date (YYYY-MM-DD)")
    return None


def parse_derived(ck: Checker, owner: Table, fields: tuple[FieldSpec, ...]) -> tuple[Derived, ...]:
    sources = {f.id: _Source(f) for f in fields}
    broken = declared_ids(owner.data.get("fields")) - set(sources)
    out: list[Derived] = []
    entries = []
    for path, item in owner.items("derived", required=False):
        mark = ck.mark()
        t = Table(ck, item, path, ("id", "label", "method", "inputs", "params", "unit"))
        did = t.string("id", pattern=ID_RE, rule=ID_RULE)
        entries.append((join(path, "id"), did))
        if did is not None and did in sources and sources[did].spec is not None:
            ck.err(t.at("id"), f"'{did}' is already a field id")
        label = t.string("label")
        unit = t.string("unit", required=False)
        name = t.string("method")
        method = METHODS.get(name) if name is not None else None
        if name is not None and method is None:
            ck.err(t.at("method"), f"unknown method '{name}' (one of {', '.join(METHODS)})")
        inputs = t.strings("inputs")
        if t.has("inputs") and method is not None:
            n, lo, hi = len(inputs), method.min_inputs, method.max_inputs
            if n < lo or (hi is not None and n > hi):
                want = f"exactly {lo}" if lo == hi else f"at least {lo}" if hi is None else f"{lo} to {hi}"
                ck.err(t.at("inputs"), f"method '{name}' needs {want} input(s), got {n}")
        for ipath, ref in inputs:
            src = sources.get(ref)
            if src is None and ref in broken:
                continue
            if src is None:
                ck.err(ipath, f"unknown input '{ref}' (a field or an earlier derived score of this form)")
            elif method is not None and src.kind != method.input_kind:
                ck.err(ipath, f"{src.describe(ref)}; method '{name}' needs {method.input_kind} inputs")
        params: dict[str, object] = {}
        if method is not None:
            ptable = Table(ck, t.data.get("params", {}), t.at("params"), method.params)
            for pname, pkind in method.params.items():
                ppath = ptable.at(pname)
                if pname in ptable.data:
                    params[pname] = _param(ck, ppath, pkind, ptable.data[pname], len(inputs))
                elif pname in method.required_params:
                    ck.err(ppath, f"required by method '{name}'")
        if did is None or label is None or method is None or name is None or not ck.clean_since(mark):
            broken.add(did or "")
            continue
        sources.setdefault(did, _Source(None))
        out.append(Derived(did, label, name, tuple(r for _, r in inputs), params, unit))
    duplicates(ck, entries)
    return tuple(out)


def parse_checks(ck: Checker, owner: Table, fields: tuple[FieldSpec, ...]) -> tuple[CrossCheck, ...]:
    by_id = {f.id: f for f in fields}
    broken = declared_ids(owner.data.get("fields")) - set(by_id)
    out: list[CrossCheck] = []
    entries = []
    for path, item in owner.items("checks", required=False):
        mark = ck.mark()
        t = Table(ck, item, path, ("id", "left", "op", "right", "message"))
        cid = t.string("id", pattern=ID_RE, rule=ID_RULE)
        entries.append((join(path, "id"), cid))
        op = t.string("op")
        if op is not None and op not in COMPARISON_OPS:
            ck.err(t.at("op"), f"unknown operator '{op}' (one of {', '.join(COMPARISON_OPS)})")
        message = t.string("message")
        sides = []
        for side in ("left", "right"):
            ref = t.string(side)
            if ref is not None and ref not in by_id and ref not in broken:
                ck.err(t.at(side), f"unknown field '{ref}'")
            sides.append(by_id.get(ref) if ref is not None else None)
        left, right = sides
        if left is not None and right is not None and op is not None:
            same = left.type == right.type or {left.type, right.type} <= set(NUMERIC_TYPES)
            if not same:
                ck.err(path, f"cannot compare {left.type} field '{left.id}' with "
                             f"{right.type} field '{right.id}'")
            elif op not in ("==", "!=") and left.type not in ORDERED_TYPES:
                ck.err(t.at("op"), f"operator '{op}' needs number or date fields")
        if ck.clean_since(mark) and cid and op and message and left and right:
            out.append(CrossCheck(cid, left.id, op, right.id, message))
    duplicates(ck, entries)
    return tuple(out)


FORM_KEYS = ("id", "title", "kind", "outcome", "instructions", "fields", "derived", "checks")
RESERVED_FORM_IDS = ("screening",)


def parse_form(ck: Checker, data: Any, path: str) -> FormDef | None:
    mark = ck.mark()
    t = Table(ck, data, path, FORM_KEYS)
    fid = t.string("id", pattern=ID_RE, rule=ID_RULE)
    if fid in RESERVED_FORM_IDS:
        ck.err(t.at("id"), f"'{fid}' is reserved for the screening questions")
    title = t.string("title")
    kind = t.string("kind", required=False, default="visit")
    if kind is not None and kind not in FORM_KINDS:
        ck.err(t.at("kind"), f"unknown kind '{kind}' (one of {', '.join(FORM_KINDS)})")
    outcome = t.boolean("outcome")
    instructions = t.string("instructions", required=False)
    fields = parse_fields(ck, t)
    derived = parse_derived(ck, t, fields)
    checks = parse_checks(ck, t, fields)
    if not ck.clean_since(mark) or fid is None or title is None or kind is None:
        return None
    return FormDef(fid, title, fields, derived, checks, kind, outcome, instructions)


__all__ = [
    "CODE_RE", "CODE_RULE", "ID_RE", "ID_RULE", "parse_derived", "parse_fields", "parse_form", "typed_value",
]
