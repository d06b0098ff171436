"""The immutable description of a trial protocol.

These dataclasses are built only by ``parse_protocol`` (in ``protocol_parse``), which has already checked
every cross-reference, so the methods here can trust ids and codes. Import them through
``trialmgr.domain.protocol``; this module exists so that ``crf`` and ``derive`` can use the types without
importing the parser (which itself uses ``crf`` and ``derive``).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property
from typing import Any

FIELD_TYPES = ("integer", "decimal", "choice", "multichoice", "date", "yesno", "text")
ROLES = ("admin", "investigator", "coordinator", "assessor", "monitor")
CONDITION_OPS = ("==", "!=", "<", "<=", ">", ">=", "in", "not_in")
COMPARISON_OPS = ("==", "!=", "<", "<=", ">", ">=")
FORM_KINDS = ("visit", "anytime")
CRITERION_KINDS = ("inclusion", "exclusion")
DEFAULT_TEXT_MAX_LENGTH = 500
# Levels of a yes/no stratification factor, in this order.
YESNO_LEVELS = ("yes", "no")
# Key of the single stratum of an unstratified design.
UNSTRATIFIED_KEY = "all"


@dataclass(frozen=True)
class Choice:
    code: str
    label: str


@dataclass(frozen=True)
class Condition:
    """``field op value``; for ``in``/``not_in`` the value is a tuple."""

    field: str
    op: str
    value: object


@dataclass(frozen=True)
class FieldSpec:
    id: str
    label: str
    type: str
    required: bool = True
    unit: str | None = None
    min: int | Decimal | None = None
    max: int | Decimal | None = None
    precision: int | None = None
    choices: tuple[Choice, ...] = ()
    max_length: int | None = None
    condition: Condition | None = None
    help: str | None = None
    # Direct identifiers (date of birth ...) are dropped by de-identified exports.
    identifier: bool = False
    # A date field whose answer may lie in the future (a planned date); other dates describe the past.
    future: bool = False

    def choice_label(self, code: str) -> str:
        for c in self.choices:
            if c.code == code:
                return c.label
        raise KeyError(code)

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(c.code for c in self.choices)


@dataclass(frozen=True)
class Derived:
    id: str
    label: str
    method: str
    inputs: tuple[str, ...]
    # Excluded from hashing: dicts are unhashable and params never distinguish two otherwise-equal specs.
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)
    unit: str | None = None


@dataclass(frozen=True)
class CrossCheck:
    """Holds when ``left op right``; skipped while either side is blank."""

    id: str
    left: str
    op: str
    right: str
    message: str


@dataclass(frozen=True)
class FormDef:
    id: str
    title: str
    fields: tuple[FieldSpec, ...]
    derived: tuple[Derived, ...] = ()
    checks: tuple[CrossCheck, ...] = ()
    kind: str = "visit"
    # Outcome-assessment forms are the ones blinded assessors enter.
    outcome: bool = False
    instructions: str | None = None

    @cached_property
    def _fields_by_id(self) -> dict[str, FieldSpec]:
        return {f.id: f for f in self.fields}

    def field(self, field_id: str) -> FieldSpec:
        return self._fields_by_id[field_id]

    @cached_property
    def field_ids(self) -> tuple[str, ...]:
        return tuple(f.id for f in self.fields)


@dataclass(frozen=True)
class Site:
    code: str
    name: str


@dataclass(frozen=True)
class Arm:
    code: str
    label: str
    ratio: int


@dataclass(frozen=True)
class RandomizationDesign:
    block_sizes: tuple[int, ...]
    block_weights: tuple[float, ...]
    strata: tuple[str, ...]
    slots_per_stratum: int
    method: str = "permuted_blocks"


@dataclass(frozen=True)
class Criterion:
    """An inclusion criterion must hold; an exclusion criterion describes the excluding condition."""

    id: str
    kind: str
    text: str
    field: str
    op: str
    value: object


@dataclass(frozen=True)
class Visit:
    code: str
    label: str
    day: int
    # Offsets in days relative to ``day``; window_start <= 0 <= window_end.
    window_start: int
    window_end: int
    forms: tuple[str, ...]


@dataclass(frozen=True)
class Protocol:
    id: str
    title: str
    version: str
    target_enrollment: int
    sites: tuple[Site, ...]
    arms: tuple[Arm, ...]
    randomization: RandomizationDesign
    screening_fields: tuple[FieldSpec, ...]
    screening_derived: tuple[Derived, ...]
    eligibility: tuple[Criterion, ...]
    visits: tuple[Visit, ...]
    forms: tuple[FormDef, ...]
    blinded_roles: frozenset[str]
    consent_version: str
    sha256: str = ""

    # -- look-ups (KeyError on an unknown id, like a dict) ------------------------------------------
    def form(self, form_id: str) -> FormDef:
        return _index(self.forms, "id")[form_id]

    def visit(self, code: str) -> Visit:
        return _index(self.visits, "code")[code]

    def arm(self, code: str) -> Arm:
        return _index(self.arms, "code")[code]

    def site(self, code: str) -> Site:
        return _index(self.sites, "code")[code]

    def screening_field(self, field_id: str) -> FieldSpec:
        return self.screening_form.field(field_id)

    @cached_property
    def screening_form(self) -> FormDef:
        """The screening questions as a form, so that they validate like any case report form."""
        return FormDef(
            id="screening",
            title="Screening",
            fields=self.screening_fields,
            derived=self.screening_derived,
            kind="anytime",
        )

    @property
    def ratio_sum(self) -> int:
        return sum(a.ratio for a in self.arms)

    @property
    def outcome_forms(self) -> tuple[FormDef, ...]:
        return tuple(f for f in self.forms if f.outcome)

    @property
    def anytime_forms(self) -> tuple[FormDef, ...]:
        return tuple(f for f in self.forms if f.kind == "anytime")

    def is_blinded(self, role: str) -> bool:
        return role in self.blinded_roles

    # -- strata ----------------------------------------------------------------------------------------
    def strata_factors(self) -> list[tuple[str, tuple[str, ...]]]:
        """Each stratification factor with its level codes, in declaration order."""
        factors: list[tuple[str, tuple[str, ...]]] = []
        for name in self.randomization.strata:
            if name == "site":
                factors.append((name, tuple(s.code for s in self.sites)))
                continue
            spec = self.screening_field(name)
            factors.append((name, YESNO_LEVELS if spec.type == "yesno" else spec.codes))
        return factors

    def strata_keys(self) -> list[str]:
        """Every stratum key ("DE|F" ...); ``["all"]`` when the design is not stratified."""
        factors = self.strata_factors()
        if not factors:
            return [UNSTRATIFIED_KEY]
        return ["|".join(combo) for combo in itertools.product(*(levels for _, levels in factors))]

    def stratum_key(self, values: Mapping[str, object]) -> str:
        """The key of the stratum for ``values`` (factor name -> level; yes/no may be given as bool).

        Raises KeyError when a factor is missing and ValueError for a level the factor does not have.
        """
        factors = self.strata_factors()
        if not factors:
            return UNSTRATIFIED_KEY
        parts: list[str] = []
        for name, levels in factors:
            raw = values[name]
            level = ("yes" if raw else "no") if isinstance(raw, bool) else str(raw)
            if level not in levels:
                raise ValueError(f"{name}: '{level}' is not one of {', '.join(levels)}")
            parts.append(level)
        return "|".join(parts)


def _index(items: tuple[Any, ...], attr: str) -> dict[Any, Any]:
    # Protocols are small (tens of items), so a scan beats caching on a frozen instance.
    return {getattr(i, attr): i for i in items}

