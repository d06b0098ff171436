"""``parse_protocol``: plain data (from TOML or JSON) -> a checked ``Protocol``.

The whole protocol is refused when anything is wrong, with every mistake listed under its key path,
so whoever writes the file fixes it in one round instead of one error per attempt.
"""

from __future__ import annotations

import math
import re
from typing import Any

from trialmgr.domain.errors import ProtocolInvalid
from trialmgr.domain.protocol_forms import (
    ID_RE,
    ID_RULE,
    parse_derived,
    parse_fields,
    parse_form,
    typed_value,
)
from trialmgr.domain.protocol_model import (
    CONDITION_OPS,
    CRITERION_KINDS,
    ROLES,
    Arm,
    Criterion,
    Derived,
    FieldSpec,
    FormDef,
    Protocol,
    RandomizationDesign,
    Site,
    Visit,
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

TOP_KEYS = (
    "id", "title", "version", "target_enrollment", "consent_version", "blinded_roles", "sites", "arms",
    "randomization", "screening", "eligibility", "visits", "forms",
)
PROTOCOL_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
SITE_RE = re.compile(r"[A-Z]{2,4}")
ARM_RE = re.compile(r"[A-Z][A-Z0-9_]{0,15}")
VISIT_RE = re.compile(r"[A-Z][A-Z0-9]{0,7}")
WEIGHT_TOLERANCE = 1e-6


def parse_protocol(data: dict[str, Any], *, source: str = "<protocol>") -> Protocol:
    """Check ``data`` completely; raise ``ProtocolInvalid`` listing every mistake."""
    ck = Checker()
    top = Table(ck, data, "", TOP_KEYS)
    pid = top.string("id", pattern=PROTOCOL_ID_RE, rule="is not a valid protocol id (a-z, 0-9 and -)")
    title = top.string("title")
    version = top.string("version")
    target = top.integer("target_enrollment", minimum=1)
    consent_version = top.string("consent_version")
    roles = set()
    for path, role in top.strings("blinded_roles"):
        if role not in ROLES:
            ck.err(path, f"'{role}' is not a role (one of {', '.join(ROLES)})")
        roles.add(role)
    sites = _sites(ck, top)
    arms = _arms(ck, top)
    s_fields: tuple[FieldSpec, ...] = ()
    s_derived: tuple[Derived, ...] = ()
    s_data = top.data.get("screening")
    s_declared = declared_ids(s_data.get("fields")) | declared_ids(s_data.get("derived")) \
        if isinstance(s_data, dict) else set()
    if top.has("screening"):
        screening = Table(ck, top.data["screening"], "screening", ("fields", "derived"))
        s_fields = parse_fields(ck, screening)
        s_derived = parse_derived(ck, screening, s_fields)
    elif top.ok:
        ck.err("screening", "required")
    forms = _forms(ck, top)
    design = _randomization(ck, top, arms, sites, s_fields, s_derived, target, s_declared)
    criteria = _criteria(ck, top, s_fields, s_derived, s_declared)
    visits = _visits(ck, top, forms)
    if ck.errors:
        raise ProtocolInvalid(ck.errors, source=source)
    assert pid and title and version and target and consent_version and design  # narrowing only
    return Protocol(
        id=pid, title=title, version=version, target_enrollment=target, sites=sites, arms=arms,
        randomization=design, screening_fields=s_fields, screening_derived=s_derived, eligibility=criteria,
        visits=visits, forms=tuple(forms.values()), blinded_roles=frozenset(roles),
        consent_version=consent_version,
    )


def _sites(ck: Checker, top: Table) -> tuple[Site, ...]:
    out, entries = [], []
    for path, item in top.items("sites"):
        t = Table(ck, item, path, ("code", "name"))
        code = t.string("code", pattern=SITE_RE, rule="is not a valid site code (2-4 upper-case letters)")
        name = t.string("name")
        entries.append((t.at("code"), code))
        if code and name:
            out.append(Site(code, name))
    if not entries and isinstance(top.data.get("sites"), list):
        ck.err("sites", "needs at least one site")
    duplicates(ck, entries, "site code")
    return tuple(out)


def _arms(ck: Checker, top: Table) -> tuple[Arm, ...]:
    out, entries = [], []
    for path, item in top.items("arms"):
        t = Table(ck, item, path, ("code", "label", "ratio"))
        code = t.string("code", pattern=ARM_RE, rule="is not a valid arm code (A-Z, 0-9, _)")
        label = t.string("label")
        ratio = t.integer("ratio", minimum=1)
        entries.append((t.at("code"), code))
        if code and label and ratio:
            out.append(Arm(code, label, ratio))
    if len(entries) < 2 and isinstance(top.data.get("arms"), list):
        ck.err("arms", f"needs at least two arms, got {len(entries)}")
    duplicates(ck, entries, "arm code")
    return tuple(out)


def _forms(ck: Checker, top: Table) -> dict[str, FormDef]:
    forms: dict[str, FormDef] = {}
    entries = []
    for path, item in top.items("forms"):
        form = parse_form(ck, item, path)
        fid = item.get("id") if isinstance(item, dict) else None
        entries.append((join(path, "id"), fid if isinstance(fid, str) else None))
        if form is not None and form.id not in forms:
            forms[form.id] = form
    duplicates(ck, entries)
    return forms


def _randomization(
    ck: Checker, top: Table, arms: tuple[Arm, ...], sites: tuple[Site, ...],
    s_fields: tuple[FieldSpec, ...], s_derived: tuple[Derived, ...], target: int | None, declared: set[str],
) -> RandomizationDesign | None:
    if not top.has("randomization"):
        if top.ok:
            ck.err("randomization", "required")
        return None
    mark = ck.mark()
    t = Table(ck, top.data["randomization"], "randomization",
              ("method", "block_sizes", "block_weights", "strata", "slots_per_stratum"))
    method = t.string("method", required=False, default="permuted_blocks")
    if method is not None and method != "permuted_blocks":
        ck.err(t.at("method"), f"unknown method '{method}' (only permuted_blocks)")
    ratio_sum = sum(a.ratio for a in arms)
    raw_arms = top.data.get("arms")
    # Only a fully readable set of arms gives a ratio sum worth checking block sizes against.
    arms_ok = isinstance(raw_arms, list) and len(arms) == len(raw_arms) >= 2
    sizes: list[int] = []
    for path, size in t.items("block_sizes"):
        if not isinstance(size, int) or isinstance(size, bool):
            ck.err(path, expected("integer", size))
        elif size < 1:
            ck.err(path, f"must be at least 1, got {size}")
        elif arms_ok and size % ratio_sum:
            ck.err(t.at("block_sizes"), f"{size} is not a multiple of the ratio sum {ratio_sum}")
        elif size in sizes:
            ck.err(path, f"duplicate block size {size}")
        else:
            sizes.append(size)
    if t.has("block_sizes") and not t.data["block_sizes"] and isinstance(t.data["block_sizes"], list):
        ck.err(t.at("block_sizes"), "needs at least one block size")
    weights = _weights(ck, t)
    raw_sizes = t.data.get("block_sizes")
    if weights is not None and isinstance(raw_sizes, list) and len(weights) != len(raw_sizes):
        ck.err(t.at("block_weights"), f"has {len(weights)} weights for {len(raw_sizes)} block sizes")
    strata = _strata(ck, t, s_fields, s_derived, declared)
    slots = t.integer("slots_per_stratum", minimum=1)
    if slots is not None and sizes and slots < max(sizes):
        ck.err(t.at("slots_per_stratum"), f"must be at least the largest block size {max(sizes)}")
    raw_strata = t.data.get("strata", [])
    strata_ok = isinstance(raw_strata, list) and len(strata) == len(raw_strata)
    levels = _level_count(strata, sites, s_fields) if strata_ok else 0
    if slots and target and levels and slots * levels < target:
        ck.err(t.at("slots_per_stratum"),
               f"{levels} strata x {slots} slots = {levels * slots} is less than target_enrollment {target}")
    if not ck.clean_since(mark) or not t.ok or not slots or not sizes:
        return None
    if weights is None:
        weights = [1.0 / len(sizes)] * len(sizes)
    total = math.fsum(weights)
    return RandomizationDesign(
        block_sizes=tuple(sizes), block_weights=tuple(w / total for w in weights), strata=tuple(strata),
        slots_per_stratum=slots,
    )


def _weights(ck: Checker, t: Table) -> list[float] | None:
    if not t.has("block_weights"):
        return None
    weights: list[float] = []
    clean = True
    for path, w in t.items("block_weights"):
        if not isinstance(w, int | float) or isinstance(w, bool) or not math.isfinite(w):
            ck.err(path, expected("number", w))
            clean = False
        elif w <= 0:
            ck.err(path, f"must be greater than 0, got {w}")
            clean = False
        else:
            weights.append(float(w))
    if not isinstance(t.data["block_weights"], list | tuple):
        return None
    if clean and weights and abs(math.fsum(weights) - 1) > WEIGHT_TOLERANCE:
        ck.err(t.at("block_weights"), f"probabilities sum to {math.fsum(weights):g}, not 1")
    return weights if clean else None


def _strata(
    ck: Checker, t: Table, s_fields: tuple[FieldSpec, ...], s_derived: tuple[Derived, ...], declared: set[str],
) -> list[str]:
    by_id = {f.id: f for f in s_fields}
    derived_ids = {d.id for d in s_derived}
    out: list[str] = []
    for path, name in t.strings("strata", required=False):
        if name in out:
            ck.err(path, f"duplicate factor '{name}'")
            continue
        if name != "site":
            spec = by_id.get(name)
            if spec is None and name in declared and name not in derived_ids:
                continue  # a screening field with mistakes of its own
            if spec is None:
                why = "is a derived score" if name in derived_ids else "unknown screening field"
                ck.err(path, f"{why} '{name}'; strata are 'site' or choice / yes-no screening fields")
                continue
            if spec.type not in ("choice", "yesno"):
                ck.err(path, f"'{name}' is a {spec.type} field; strata need a choice or yes/no field")
                continue
            if not spec.required or spec.condition is not None:
                ck.err(path, f"'{name}' must be a required, unconditional field to stratify on")
                continue
        out.append(name)
    return out


def _level_count(strata: list[str], sites: tuple[Site, ...], s_fields: tuple[FieldSpec, ...]) -> int:
    by_id = {f.id: f for f in s_fields}
    count = 1
    for name in strata:
        if name == "site":
            count *= len(sites)
        elif name in by_id:
            count *= 2 if by_id[name].type == "yesno" else len(by_id[name].choices)
    return count


def _criteria(
    ck: Checker, top: Table, s_fields: tuple[FieldSpec, ...], s_derived: tuple[Derived, ...], declared: set[str],
) -> tuple[Criterion, ...]:
    by_id = {f.id: f for f in s_fields}
    derived_ids = {d.id for d in s_derived}
    out, entries = [], []
    for path, item in top.items("eligibility", required=False):
        mark = ck.mark()
        t = Table(ck, item, path, ("id", "kind", "text", "field", "op", "value"))
        cid = t.string("id", pattern=ID_RE, rule=ID_RULE)
        entries.append((t.at("id"), cid))
        kind = t.string("kind")
        if kind is not None and kind not in CRITERION_KINDS:
            ck.err(t.at("kind"), f"unknown kind '{kind}' (inclusion or exclusion)")
        text = t.string("text")
        field_id = t.string("field")
        op = t.string("op")
        if op is not None and op not in CONDITION_OPS:
            ck.err(t.at("op"), f"unknown operator '{op}' (one of {', '.join(CONDITION_OPS)})")
            op = None
        if not t.has("value") and t.ok:
            ck.err(t.at("value"), "required")
        value: object = None
        if field_id is not None and field_id not in by_id and field_id not in derived_ids:
            if field_id not in declared:
                ck.err(t.at("field"), f"unknown screening field '{field_id}'")
        elif field_id is not None and op is not None and t.has("value"):
            if field_id in by_id:
                value = typed_value(ck, t.at("value"), by_id[field_id], op, t.data["value"])
            else:
                value = _number_value(ck, t.at("value"), op, t.data["value"])
        if ck.clean_since(mark) and cid and kind and text and field_id and op:
            out.append(Criterion(cid, kind, text, field_id, op, value))
    duplicates(ck, entries)
    return tuple(out)


def _number_value(ck: Checker, path: str, op: str, value: Any) -> object:
    """Derived scores are numbers, so a criterion on one compares with a number."""
    if op in ("in", "not_in"):
        if not isinstance(value, list | tuple) or not value:
            ck.err(path, f"operator '{op}' needs a non-empty array, got {type_name(value)}")
            return None
        parsed = [_number_value(ck, join(path, i), "==", v) for i, v in enumerate(value)]
        return None if any(p is None for p in parsed) else tuple(parsed)
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        ck.err(path, expected("number", value))
        return None
    return value if isinstance(value, int) else to_decimal(value)


def _visits(ck: Checker, top: Table, forms: dict[str, FormDef]) -> tuple[Visit, ...]:
    declared_forms = _declared_form_ids(top)
    out: list[Visit] = []
    entries = []
    previous: Visit | None = None
    for path, item in top.items("visits"):
        mark = ck.mark()
        t = Table(ck, item, path, ("code", "label", "day", "window", "forms"))
        code = t.string("code", pattern=VISIT_RE, rule="is not a valid visit code (A-Z, 0-9)")
        entries.append((t.at("code"), code))
        label = t.string("label")
        day = t.integer("day")
        window = _window(ck, t)
        form_ids: list[str] = []
        for fpath, fid in t.strings("forms"):
            if fid in form_ids:
                ck.err(fpath, f"duplicate form '{fid}'")
            elif fid in forms and forms[fid].kind == "anytime":
                ck.err(fpath, f"'{fid}' is an any-time form and cannot be scheduled at a visit")
            elif fid not in forms and fid not in declared_forms:
                ck.err(fpath, f"unknown form '{fid}'")
            form_ids.append(fid)
        if previous is not None and day is not None:
            if day <= previous.day:
                ck.err(t.at("day"), f"must be after the previous visit {previous.code} (day {previous.day})")
            elif window is not None and day + window[0] <= previous.day + previous.window_end:
                ck.err(t.at("window"), f"overlaps the window of the previous visit {previous.code}")
        if ck.clean_since(mark) and code and label and day is not None and window is not None:
            previous = Visit(code, label, day, window[0], window[1], tuple(form_ids))
            out.append(previous)
    if not entries and isinstance(top.data.get("visits"), list):
        ck.err("visits", "needs at least one visit")
    duplicates(ck, entries, "visit code")
    return tuple(out)


def _declared_form_ids(top: Table) -> set[str]:
    # Forms that exist but have mistakes of their own: a visit naming one is not a second mistake.
    items = top.data.get("forms")
    if not isinstance(items, list):
        return set()
    return {f["id"] for f in items if isinstance(f, dict) and isinstance(f.get("id"), str)}


def _window(ck: Checker, t: Table) -> tuple[int, int] | None:
    raw = t.get("window", "array")
    if raw is None:
        return None
    if len(raw) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in raw):
        ck.err(t.at("window"), f"expected [start, end] as two integers, got {raw!r}")
        return None
    start, end = raw
    if start > end:
        ck.err(t.at("window"), "start after end")
    elif start > 0 or end < 0:
        ck.err(t.at("window"), f"must include the visit day (start <= 0 <= end), got [{start}, {end}]")
    else:
        return start, end
    return None


__all__ = ["parse_protocol"]
