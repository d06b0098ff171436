"""Field values and whole-form validation, shared by the screening form, CRFs, web forms and the API."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trialmgr.domain.crf import (
    MISSING_CODES,
    deserialize_value,
    parse_value,
    serialize_value,
    validate_form,
)
from trialmgr.domain.errors import ValidationFailed
from trialmgr.domain.protocol import FIELD_TYPES, Choice, Condition, CrossCheck, FieldSpec, FormDef, Protocol
from trialmgr.protocols import default_protocol_path, load_protocol_file

NPRS = FieldSpec("back_pain", "Back pain", "integer", min=0, max=10)
SECONDS = FieldSpec("tug_s", "TUG", "decimal", min=Decimal(1), max=Decimal(120), precision=1)
LEVEL = FieldSpec("level", "Level", "choice", choices=(Choice("0", "none"), Choice("1", "mild"), Choice("2", "bad")))
RACE = FieldSpec("race", "Race", "multichoice", choices=(Choice("A", "a"), Choice("B", "b"), Choice("C", "c")))
ONSET = FieldSpec("onset", "Onset", "date")
SERIOUS = FieldSpec("serious", "Serious", "yesno")
TERM = FieldSpec("term", "Term", "text", max_length=20)
NOTES = FieldSpec("notes", "Notes", "text")  # no max_length: the default 500 applies


@pytest.fixture(scope="module")
def protocol() -> Protocol:
    return load_protocol_file(default_protocol_path())


# -- one field at a time ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "raw", "value"),
    [
        (NPRS, "7", 7), (NPRS, 7, 7), (NPRS, " 0 ", 0), (NPRS, 10.0, 10),
        (SECONDS, "12.5", Decimal("12.5")), (SECONDS, 12.5, Decimal("12.5")), (SECONDS, 12, Decimal("12.0")),
        (SECONDS, "12.50", Decimal("12.5")),
        (LEVEL, "1", "1"), (LEVEL, 2, "2"),
        (RACE, ["C", "A", "A"], ("A", "C")), (RACE, "B;A", ("A", "B")),
        (ONSET, "2026-02-28", date(2026, 2, 28)), (ONSET, date(2024, 2, 29), date(2024, 2, 29)),
        (SERIOUS, "yes", True), (SERIOUS, "No", False), (SERIOUS, True, True), (SERIOUS, "y", True),
        (TERM, "  Fall \r\nat home ", "Fall \nat home"),
    ],
)
def test_parse_value_accepts(spec: FieldSpec, raw: Any, value: Any) -> None:
    parsed = parse_value(spec, raw)
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize(
    ("spec", "raw", "message"),
    [
        (NPRS, "seven", "must be a whole number"),
        (NPRS, "7.5", "must be a whole number"),
        (NPRS, 7.5, "must be a whole number"),
        (NPRS, True, "must be a whole number"),
        (NPRS, "11", "must be between 0 and 10"),
        (NPRS, -1, "must be between 0 and 10"),
        (SECONDS, "abc", "must be a number"),
        (SECONDS, "1e3", "must be a number"),
        (SECONDS, float("nan"), "must be a number"),
        (SECONDS, "12.25", "must have at most 1 decimal place"),
        (SECONDS, "0.5", "must be between 1 and 120"),
        (LEVEL, "3", "'3' is not one of the codes: 0, 1, 2"),
        (LEVEL, "X", "'X' is not one of the codes: 0, 1, 2"),
        (RACE, ["A", "Z"], "'Z' is not one of the codes: A, B, C"),
        (RACE, 5.5, "must be a list of codes"),
        (ONSET, "2026-02-30", "is not a valid date (YYYY-MM-DD)"),
        (ONSET, "2025-02-29", "is not a valid date (YYYY-MM-DD)"),
        (ONSET, "01/02/2026", "is not a valid date (YYYY-MM-DD)"),
        (ONSET, "20260102", "is not a valid date (YYYY-MM-DD)"),
        (ONSET, 20260102, "is not a valid date (YYYY-MM-DD)"),
        (SERIOUS, "maybe", "must be yes or no"),
        (SERIOUS, 2, "must be yes or no"),
        (TERM, "x" * 21, "must be at most 20 characters"),
        (NOTES, "x" * 501, "must be at most 500 characters"),
        (TERM, 12, "must be text"),
    ],
)
def test_parse_value_refuses_with_the_rule(spec: FieldSpec, raw: Any, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_value(spec, raw)
    assert str(info.value) == message


def test_canonical_text() -> None:
    assert serialize_value(SECONDS, Decimal("12")) == "12.0"
    assert serialize_value(FieldSpec("x", "X", "decimal"), Decimal("12.500")) == "12.5"
    assert serialize_value(FieldSpec("x", "X", "decimal"), Decimal("100")) == "100"
    assert serialize_value(SERIOUS, False) == "no"
    assert serialize_value(RACE, ("A", "C")) == "A;C"
    assert serialize_value(ONSET, date(2026, 1, 2)) == "2026-01-02"
    assert serialize_value(NPRS, None) == "" and deserialize_value(NPRS, "") is None


def test_stored_values_stay_readable_after_a_range_changes() -> None:
    tightened = FieldSpec("back_pain", "Back pain", "integer", min=0, max=5)
    assert deserialize_value(tightened, "7") == 7
    retired = FieldSpec("race", "Race", "multichoice", choices=(Choice("A", "a"),))
    assert deserialize_value(retired, "A;OLD") == ("A", "OLD")


_INTEGERS = FieldSpec("i", "I", "integer", min=-1000, max=1000)
_DECIMALS = FieldSpec("d", "D", "decimal", min=Decimal(-1000), max=Decimal(1000), precision=2)
_ROUND_TRIP = [
    (_INTEGERS, st.integers(-1000, 1000)),
    (_DECIMALS, st.decimals(-1000, 1000, places=2, allow_nan=False, allow_infinity=False)),
    (LEVEL, st.sampled_from(LEVEL.codes)),
    (RACE, st.lists(st.sampled_from(RACE.codes), min_size=1, unique=True).map(lambda c: tuple(sorted(c)))),
    (ONSET, st.dates()),
    (SERIOUS, st.booleans()),
    (FieldSpec("t", "T", "text", max_length=50), st.text(
        st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=50,
    ).map(str.strip).filter(bool)),
]


@settings(max_examples=300)
@given(st.data())
def test_serialize_round_trips_for_every_type(data: st.DataObject) -> None:
    spec, values = data.draw(st.sampled_from(_ROUND_TRIP))
    value = data.draw(values)
    text = serialize_value(spec, value)
    assert deserialize_value(spec, text) == value
    assert parse_value(spec, text) == value  # the canonical text is also valid input
    assert serialize_value(spec, parse_value(spec, text)) == text


def test_round_trip_covers_every_field_type() -> None:
    assert {spec.type for spec, _ in _ROUND_TRIP} == set(FIELD_TYPES)


# -- whole forms ------------------------------------------------------------------------------------------

AE = FormDef(
    "ae", "Adverse event",
    fields=(
        FieldSpec("onset", "Onset date", "date"),
        FieldSpec("end", "End date", "date", required=False),
        SERIOUS,
        FieldSpec("criteria", "Criteria", "multichoice", choices=(Choice("death", "Death"), Choice("hosp", "Hosp")),
                  condition=Condition("serious", "==", True)),
        FieldSpec("severity", "Severity", "integer", min=1, max=3),
    ),
    checks=(CrossCheck("end_after", "end", ">=", "onset", "must be on or after the onset date"),),
    kind="anytime",
)
GOOD_AE = {"onset": "2026-03-01", "end": "2026-03-05", "serious": "yes", "criteria": ["hosp"], "severity": "2"}


def test_a_complete_valid_form() -> None:
    result = validate_form(AE, GOOD_AE)
    assert result.errors == {} and result.complete and result.valid
    assert result.values["criteria"] == ("hosp",) and result.values["end"] == date(2026, 3, 5)
    result.raise_for_errors()


def test_conditional_field_is_required_only_when_it_applies() -> None:
    result = validate_form(AE, {**GOOD_AE, "criteria": ""})
    assert result.errors == {"criteria": "required; give a value or a reason it is missing (ND, RF, UNK)"}
    not_serious = validate_form(AE, {**GOOD_AE, "serious": "no", "criteria": ""})
    assert not_serious.errors == {} and not_serious.complete
    assert "criteria" not in not_serious.applicable


def test_value_for_a_field_that_does_not_apply_is_an_error() -> None:
    result = validate_form(AE, {**GOOD_AE, "serious": "no"})
    assert result.errors == {"criteria": "only applies when serious is yes"}


def test_cross_field_check() -> None:
    result = validate_form(AE, {**GOOD_AE, "end": "2026-02-27"})
    assert result.errors == {"end": "must be on or after the onset date"}
    open_ended = validate_form(AE, {**GOOD_AE, "end": ""})
    assert open_ended.errors == {} and open_ended.complete  # the check waits for both sides


def test_a_date_after_the_latest_allowed_is_refused_unless_the_field_looks_ahead() -> None:
    latest = date(2026, 3, 5)
    assert validate_form(AE, GOOD_AE, latest=latest).errors == {}  # the last allowed day itself is fine
    late = validate_form(AE, {**GOOD_AE, "onset": "2026-03-06", "end": ""}, latest=latest)
    assert late.errors == {"onset": "must not be in the future"} and "onset" not in late.values
    both = validate_form(AE, {**GOOD_AE, "onset": "2027-03-01", "end": "2027-03-02"}, latest=latest,
                         too_late="is after the visit")
    assert both.errors == {"onset": "is after the visit", "end": "is after the visit"}
    assert validate_form(AE, {**GOOD_AE, "onset": "2027-03-01", "end": ""}).errors == {}  # no latest: no rule
    planned = FormDef("plan", "Plan", fields=(FieldSpec("next_visit", "Next visit", "date", future=True),))
    assert validate_form(planned, {"next_visit": "2027-01-01"}, latest=latest).errors == {}


def test_required_blank_needs_a_missing_code() -> None:
    raw = {**GOOD_AE, "severity": ""}
    assert validate_form(AE, raw).errors == {
        "severity": "required; give a value or a reason it is missing (ND, RF, UNK)",
    }
    result = validate_form(AE, raw, missing={"severity": "ND"})
    assert result.errors == {} and result.missing == {"severity": "ND"} and result.complete
    assert set(MISSING_CODES) == {"ND", "RF", "UNK"}


def test_missing_code_mistakes() -> None:
    assert validate_form(AE, GOOD_AE, missing={"severity": "ND"}).errors == {
        "severity": "give either a value or a reason it is missing, not both",
    }
    assert validate_form(AE, {**GOOD_AE, "severity": ""}, missing={"severity": "XX"}).errors == {
        "severity": "'XX' is not a missing-reason code (ND, RF, UNK)",
    }


def test_unknown_fields_are_errors() -> None:
    result = validate_form(AE, {**GOOD_AE, "colour": "red"})
    assert result.errors == {"colour": "is not a field of this form"}
    assert validate_form(AE, GOOD_AE, missing={"ghost": "ND"}).errors == {"ghost": "is not a field of this form"}


def test_partial_draft_skips_required_but_not_rules() -> None:
    draft = validate_form(AE, {"onset": "2026-03-01"}, partial=True)
    assert draft.errors == {} and not draft.complete and draft.values == {"onset": date(2026, 3, 1)}
    bad_draft = validate_form(AE, {"onset": "2026-02-30"}, partial=True)
    assert bad_draft.errors == {"onset": "is not a valid date (YYYY-MM-DD)"}


def test_every_bad_field_is_reported() -> None:
    result = validate_form(AE, {"onset": "yesterday", "end": "", "serious": "perhaps", "severity": "9"})
    assert result.errors == {
        "onset": "is not a valid date (YYYY-MM-DD)",
        "serious": "must be yes or no",
        "severity": "must be between 1 and 3",
    }
    with pytest.raises(ValidationFailed) as info:
        result.raise_for_errors()
    assert info.value.errors == result.errors


def test_derived_cannot_be_entered(protocol: Protocol) -> None:
    result = validate_form(protocol.form("pain"), {"back_pain": 3, "hip_pain": 2})
    assert result.complete
    form = protocol.form("qbpds")
    assert validate_form(form, {"qbpds_total": 5}, partial=True).errors == {
        "qbpds_total": "is computed from other answers and cannot be entered",
    }


# -- derived scores through the real forms, against hand-computed values ---------------------------------


def test_qbpds_total(protocol: Protocol) -> None:
    answers = {f"q{i:02d}": i % 6 for i in range(1, 21)}  # 3 x (1+2+3+4+5+0) + 1 + 2 = 48
    result = validate_form(protocol.form("qbpds"), answers)
    assert result.complete and result.derived == {"qbpds_total": 48}
    incomplete = validate_form(protocol.form("qbpds"), {**answers, "q07": ""}, missing={"q07": "RF"})
    assert incomplete.complete and incomplete.derived == {"qbpds_total": None}  # the total needs every item


def _pros(**overrides: Any) -> dict[str, Any]:
    answers: dict[str, Any] = {f"phq{i:02d}": 1 for i in range(1, 10)}
    answers |= {"eq_mobility": 2, "eq_self_care": 1, "eq_usual_activities": 2, "eq_pain_discomfort": 3,
                "eq_anxiety_depression": 1, "eq_vas": 70}
    answers |= dict(zip([f"odi{i:02d}" for i in range(1, 11)], [2, 1, 3, 2, 2, 1, 2, 1, 2, 1], strict=True))
    answers |= dict(zip([f"hoos_p{i}" for i in range(1, 11)], [1, 2, 1, 0, 2, 1, 2, 1, 2, 1], strict=True))
    answers |= {f"rmdq{i:02d}": "yes" if i % 3 == 0 else "no" for i in range(1, 25)}
    return answers | overrides


def test_pros_scores(protocol: Protocol) -> None:
    result = validate_form(protocol.form("pros"), _pros())
    assert result.errors == {}
    assert result.derived == {
        "phq9_total": 9,
        "odi_percent": Decimal("34.0"),  # 17 / 50 x 100
        "hoos_pain": Decimal("67.5"),  # 100 - 1.3 / 4 x 100
        "rmdq_total": 8,  # items 3, 6, ..., 24
    }


def test_odi_with_a_refused_section(protocol: Protocol) -> None:
    result = validate_form(protocol.form("pros"), _pros(odi08=""), missing={"odi08": "RF"})
    assert result.complete and result.derived["odi_percent"] == Decimal("35.6")  # 16 / 45 x 100


def test_gait_speed(protocol: Protocol) -> None:
    raw = {"gait_usual_s": "8.00", "gait_fast_s": "6.25", "tug_s": "9.8", "six_mwt_m": "420", "chair_stand_30s": "11"}
    result = validate_form(protocol.form("performance"), raw)
    assert result.errors == {}
    assert result.derived == {"gait_usual_speed": Decimal("1.250"), "gait_fast_speed": Decimal("1.600")}
    slow = validate_form(protocol.form("performance"), {**raw, "gait_usual_s": "250"})
    assert slow.errors == {"gait_usual_s": "must be between 3.34 and 200 s"}  # with the unit, as on the page
