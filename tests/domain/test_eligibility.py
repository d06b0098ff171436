"""Eligibility against the shipped protocols: every failure listed, in plain words."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from trialmgr.domain.eligibility import evaluate
from trialmgr.domain.protocol import Protocol
from trialmgr.protocols import default_protocol_path, load_protocol_file, protocol_dir

TODAY = date(2026, 1, 15)


@pytest.fixture(scope="module")
def protocol() -> Protocol:
    return load_protocol_file(default_protocol_path())


@pytest.fixture(scope="module")
def mash() -> Protocol:
    return load_protocol_file(protocol_dir() / "mash.toml")


def answers(**overrides: Any) -> dict[str, Any]:
    """An eligible person, as the HTML form would send it."""
    base = {
        "sex": "F", "date_of_birth": "1950-06-01", "back_pain_months": "24", "mmse_score": "28",
        "hip_fracture_surgical": "no", "hip_fracture_recent": "no", "total_hip_replacement": "no",
        "spinal_pathology": "no", "needs_wheelchair": "no", "sensory_impairment": "no",
        "reads_speaks_language": "yes", "red_flags": "no", "leg_pain_exceeds_back": "no",
    }
    return base | overrides


def test_eligible(protocol: Protocol) -> None:
    result = evaluate(protocol, answers(), TODAY)
    assert result.eligible and result.failures == () and result.errors == {}
    assert result.values["age"] == 75 and result.values["date_of_birth"] == date(1950, 6, 1)


def test_parsed_answers_work_too(protocol: Protocol) -> None:
    parsed = answers(date_of_birth=date(1950, 6, 1), back_pain_months=24, mmse_score=28, red_flags=False)
    assert evaluate(protocol, parsed, TODAY).eligible


def test_64_and_11_months_fails(protocol: Protocol) -> None:
    result = evaluate(protocol, answers(date_of_birth="1961-02-15"), TODAY)
    assert not result.eligible and result.errors == {}
    assert [f.message for f in result.failures] == ["Age 65 or older: age is 64"]
    assert result.failures[0].criterion_id == "age_65" and result.failures[0].kind == "inclusion"


def test_65_today_passes(protocol: Protocol) -> None:
    assert evaluate(protocol, answers(date_of_birth="1961-01-15"), TODAY).eligible
    assert not evaluate(protocol, answers(date_of_birth="1961-01-16"), TODAY).eligible


def test_leap_day_birthday(protocol: Protocol) -> None:
    born = "1960-02-29"
    assert not evaluate(protocol, answers(date_of_birth=born), date(2025, 2, 28)).eligible
    assert evaluate(protocol, answers(date_of_birth=born), date(2025, 3, 1)).eligible
    assert evaluate(protocol, answers(date_of_birth=born), date(2024, 2, 29)).values["age"] == 64


def test_back_pain_duration(protocol: Protocol) -> None:
    five = evaluate(protocol, answers(back_pain_months="5"), TODAY)
    assert [f.message for f in five.failures] == [
        "Low back pain for at least 6 months: duration of low back pain is 5 months",
    ]
    assert evaluate(protocol, answers(back_pain_months="6"), TODAY).eligible


def test_future_date_of_birth(protocol: Protocol) -> None:
    result = evaluate(protocol, answers(date_of_birth="2030-01-01"), TODAY)
    assert not result.eligible
    assert result.errors == {"date_of_birth": "is after the screening date (2026-01-15)"}
    assert result.failures == ()  # age cannot be judged, which is an error, not a failed criterion


def test_missing_answers(protocol: Protocol) -> None:
    raw = answers(mmse_score="")
    del raw["red_flags"]
    result = evaluate(protocol, raw, TODAY)
    assert not result.eligible
    assert result.errors == {"mmse_score": "required", "red_flags": "required"}


def test_missing_reason_codes_do_not_count_at_screening(protocol: Protocol) -> None:
    from trialmgr.domain.crf import validate_form

    result = validate_form(protocol.screening_form, answers(mmse_score=""), missing={"mmse_score": "RF"},
                           allow_missing_codes=False, reference_date=TODAY)
    assert "mmse_score" in result.errors


def test_text_where_a_number_belongs(protocol: Protocol) -> None:
    result = evaluate(protocol, answers(back_pain_months="two years", mmse_score="27.5"), TODAY)
    assert not result.eligible
    assert result.errors == {"back_pain_months": "must be a whole number", "mmse_score": "must be a whole number"}


def test_impossible_date(protocol: Protocol) -> None:
    result = evaluate(protocol, answers(date_of_birth="1950-02-30"), TODAY)
    assert result.errors == {"date_of_birth": "is not a valid date (YYYY-MM-DD)"}


def test_unknown_answer(protocol: Protocol) -> None:
    assert evaluate(protocol, answers(name="Jane"), TODAY).errors == {"name": "is not a field of this form"}


def test_several_failures_are_listed_together(protocol: Protocol) -> None:
    result = evaluate(protocol, answers(
        date_of_birth="1970-01-01", back_pain_months="2", mmse_score="20", total_hip_replacement="yes",
        reads_speaks_language="no", leg_pain_exceeds_back="yes",
    ), TODAY)
    assert [f.message for f in result.failures] == [
        "Age 65 or older: age is 56",
        "Low back pain for at least 6 months: duration of low back pain is 2 months",
        "MMSE score 24 or higher: MMSE score is 20",
        "Total hip replacement: answered yes to 'Total hip replacement'",
        "Cannot read or speak the study language: answered no to 'Can read and speak the study language (English)'",
        "Leg pain greater than back pain: answered yes to 'Leg pain greater than back pain'",
    ]
    assert [f.kind for f in result.failures] == ["inclusion"] * 3 + ["exclusion"] * 3


def test_each_exclusion_excludes(protocol: Protocol) -> None:
    for crit in protocol.eligibility:
        if crit.kind != "exclusion":
            continue
        result = evaluate(protocol, answers(**{crit.field: "yes" if crit.value else "no"}), TODAY)
        assert [f.criterion_id for f in result.failures] == [crit.id]


# -- MASH: derived hip pain and hip weakness --------------------------------------------------------------


def mash_answers(**overrides: Any) -> dict[str, Any]:
    base = answers(date_of_birth="1955-03-10", back_pain_months="4") | {
        "back_pain_half_days": "yes", "back_pain_intensity": "5",
        "hoos_p4": "1", "hoos_p5": "2", "hoos_p6": "1", "hoos_p7": "1", "hoos_p8": "1",  # sum 6
        "body_weight_kg": "80.0", "ir_strength_left_kg": "24.0", "ir_strength_right_kg": "20.0",  # 0.300, 0.250
    }
    return base | overrides


def test_mash_eligible(mash: Protocol) -> None:
    result = evaluate(mash, mash_answers(), TODAY)
    assert result.errors == {} and result.failures == ()
    assert str(result.values["ir_ratio_weaker"]) == "0.25" and result.values["hip_pain_p4_p8"] == 6


def test_mash_failures(mash: Protocol) -> None:
    result = evaluate(mash, mash_answers(
        date_of_birth="1939-01-01", hoos_p8="0", ir_strength_right_kg="20.8", back_pain_intensity="3",
    ), TODAY)
    assert [f.criterion_id for f in result.failures] == ["age_85", "back_pain_intensity", "hip_pain", "hip_weakness"]
    assert result.failures[-1].reason == "IR strength / body weight, weaker hip is 0.26"
