"""Eligibility: screening answers against the protocol's inclusion and exclusion criteria.

Every failed criterion is reported, not just the first, because staff explain the decision to the
person screened and the CONSORT diagram counts exclusions by criterion. Answers that are missing or
invalid are reported separately in ``errors``: an incomplete screening is not a failed criterion, but it is
never eligible either.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from trialmgr.domain.crf import compare, display_value, plain_label, validate_form
from trialmgr.domain.protocol_model import Criterion, FieldSpec, Protocol


@dataclass(frozen=True)
class Failure:
    criterion_id: str
    kind: str  # "inclusion" or "exclusion"
    text: str  # the criterion in plain words, e.g. "Age 65 or older"
    reason: str  # what the answers showed, e.g. "age is 64"

    @property
    def message(self) -> str:
        return f"{self.text}: {self.reason}"

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class EligibilityResult:
    eligible: bool
    failures: tuple[Failure, ...]
    # Parsed answers plus derived values (age ...), for storage and display.
    values: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def messages(self) -> list[str]:
        return [f.message for f in self.failures]


def evaluate(protocol: Protocol, answers: Mapping[str, Any], screening_date: date) -> EligibilityResult:
    """Judge ``answers`` (raw form text or parsed values) as of ``screening_date``."""
    form = protocol.screening_form
    # Screening has no "not done / refused" codes: a criterion cannot be judged on a missing answer.
    # Answers describe the past; a future date (a date of birth after screening) is a typing mistake.
    too_late = f"is after the screening date ({screening_date.isoformat()})"
    result = validate_form(form, answers, reference_date=screening_date, allow_missing_codes=False,
                           latest=screening_date, too_late=too_late)
    values = dict(result.values)
    errors = dict(result.errors)
    derived = result.derived

    specs: dict[str, FieldSpec] = {f.id: f for f in form.fields}
    derived_labels = {d.id: d.label for d in form.derived}
    merged = {**values, **derived}
    failures: list[Failure] = []
    for crit in protocol.eligibility:
        value = merged.get(crit.field)
        if value is None:
            if crit.field in specs and crit.field not in result.applicable:
                continue  # the question did not apply (its condition was not met)
            if crit.field not in errors and not _inputs_have_errors(protocol, crit.field, errors):
                errors[crit.field] = f"needed to judge '{crit.text}'"
            continue
        holds = compare(value, crit.op, crit.value)
        if holds != (crit.kind == "inclusion"):
            failures.append(_failure(crit, specs.get(crit.field), derived_labels.get(crit.field), value))

    return EligibilityResult(
        eligible=not errors and not failures,
        failures=tuple(failures),
        values=merged,
        errors=errors,
    )


def _inputs_have_errors(protocol: Protocol, derived_id: str, errors: Mapping[str, str]) -> bool:
    # A derived value is blank because one of its inputs was refused; that input already carries the error.
    by_id = {d.id: d for d in protocol.screening_derived}
    pending, seen = [derived_id], set()
    while pending:
        current = pending.pop()
        if current in seen or current not in by_id:
            continue
        seen.add(current)
        for name in by_id[current].inputs:
            if name in errors:
                return True
            pending.append(name)
    return False


def _failure(crit: Criterion, spec: FieldSpec | None, derived_label: str | None, value: Any) -> Failure:
    if spec is not None and spec.type == "yesno":
        reason = f"answered {display_value(spec, value)} to '{spec.label}'"
    else:
        label = spec.label if spec is not None else derived_label or crit.field
        unit = f" {spec.unit}" if spec is not None and spec.unit and spec.type in ("integer", "decimal") else ""
        reason = f"{plain_label(label)} is {display_value(spec, value)}{unit}"
    return Failure(crit.id, crit.kind, crit.text, reason)


__all__ = ["EligibilityResult", "Failure", "evaluate"]
