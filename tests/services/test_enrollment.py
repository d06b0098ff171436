from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import func, select

from tests.support import eligible_answers
from trialmgr.db.models_audit import AuditEntry
from trialmgr.db.models_trial import Participant, Screening
from trialmgr.domain.errors import Conflict, ConsentMissing, NotEligible, NotFound, PermissionDenied, ValidationFailed
from trialmgr.domain.vocab import Role, ScreeningOutcome
from trialmgr.services import enrollment
from trialmgr.services.context import Actor

TODAY = enrollment.today()


def _years_ago(years: int, days: int = 0) -> str:
    d = TODAY.replace(year=TODAY.year - years) if not (TODAY.month == 2 and TODAY.day == 29) else \
        TODAY.replace(year=TODAY.year - years, day=28)
    return (d + dt.timedelta(days=days)).isoformat()


def coordinator(site="DE"):
    return Actor(username="cc", role=Role.COORDINATOR, trial="hip-pt-clbp", sites=(site,))


def test_eligible_screening_is_logged_with_its_answers(session, trial):
    res = enrollment.screen(session, coordinator(), trial, eligible_answers(), site="DE")
    assert res.result.eligible and res.screening.outcome is ScreeningOutcome.ELIGIBLE
    stored = json.loads(res.screening.answers)
    assert stored["back_pain_months"] == "12" and stored["sex"] == "F"
    fields = set(session.scalars(select(AuditEntry.field).where(AuditEntry.entity_type == "screening")))
    assert {"date_of_birth", "back_pain_months", "outcome", "site"} <= fields


def test_every_failed_criterion_is_listed_in_plain_words(session, trial):
    answers = eligible_answers(date_of_birth=_years_ago(65, days=31), back_pain_months="5",
                               total_hip_replacement="yes", mmse_score="20")
    res = enrollment.screen(session, coordinator(), trial, answers, site="DE")
    assert not res.result.eligible
    failures = json.loads(res.screening.failures)
    ids = {f["criterion"] for f in failures}
    assert ids == {"age_65", "back_pain_6m", "total_hip_replacement", "mmse_24"}
    age = next(f for f in failures if f["criterion"] == "age_65")
    assert "64" in age["reason"]
    assert res.screening.outcome is ScreeningOutcome.INELIGIBLE
    # Kept in the screening log for CONSORT.
    assert session.scalar(select(func.count()).select_from(Screening)) == 1


def test_age_is_computed_from_date_of_birth_on_the_screening_date(session, trial):
    exactly_65 = enrollment.screen(session, coordinator(), trial, eligible_answers(date_of_birth=_years_ago(65)),
                                   site="DE")
    assert exactly_65.result.eligible
    day_before = enrollment.screen(session, coordinator(), trial,
                                   eligible_answers(date_of_birth=_years_ago(65, days=1)), site="DE")
    assert not day_before.result.eligible


@pytest.mark.parametrize("answers,field", [
    (eligible_answers(date_of_birth=(TODAY + dt.timedelta(days=1)).isoformat()), "date_of_birth"),
    (eligible_answers(back_pain_months="six"), "back_pain_months"),
    (eligible_answers(back_pain_months=""), "back_pain_months"),
    (eligible_answers(sex="X"), "sex"),
    (eligible_answers(date_of_birth="1950-02-30"), "date_of_birth"),
    ({k: v for k, v in eligible_answers().items() if k != "mmse_score"}, "mmse_score"),
])
def test_bad_or_missing_answers_are_refused_and_nothing_is_written(session, trial, answers, field):
    before = session.scalar(select(func.count()).select_from(AuditEntry))
    with pytest.raises(ValidationFailed) as info:
        enrollment.screen(session, coordinator(), trial, answers, site="DE")
    assert field in info.value.errors
    assert session.scalar(select(func.count()).select_from(Screening)) == 0
    assert session.scalar(select(func.count()).select_from(AuditEntry)) == before


def test_screening_date_rules_and_site_rules(session, trial):
    with pytest.raises(ValidationFailed, match="future"):
        enrollment.screen(session, coordinator(), trial, eligible_answers(), site="DE",
                          screening_date=TODAY + dt.timedelta(days=1))
    with pytest.raises(ValidationFailed, match="do not work at site PA"):
        enrollment.screen(session, coordinator("DE"), trial, eligible_answers(), site="PA")
    with pytest.raises(ValidationFailed, match="unknown or closed site"):
        enrollment.screen(session, coordinator(), trial, eligible_answers(), site="ZZ")
    monitor = Actor(username="mm", role=Role.MONITOR, trial=trial)
    with pytest.raises(PermissionDenied):
        enrollment.screen(session, monitor, trial, eligible_answers(), site="DE")


def test_enrollment_needs_consent_and_eligibility_and_gives_gap_free_site_ids(session, trial):
    actor = coordinator()
    ok = enrollment.screen(session, actor, trial, eligible_answers(), site="DE").screening
    bad = enrollment.screen(session, actor, trial, eligible_answers(back_pain_months="2"), site="DE").screening
    with pytest.raises(NotEligible, match="at least 6 months"):
        enrollment.enroll(session, actor, trial, bad.id, consent_date=TODAY, consent_version="1.0")
    with pytest.raises(ConsentMissing):
        enrollment.enroll(session, actor, trial, ok.id, consent_date=None, consent_version="1.0")
    with pytest.raises(ConsentMissing):
        enrollment.enroll(session, actor, trial, ok.id, consent_date=TODAY, consent_version="")
    with pytest.raises(ValidationFailed) as info:
        enrollment.enroll(session, actor, trial, ok.id, consent_date=TODAY, consent_version="0.9")
    assert "consent_version" in info.value.errors
    with pytest.raises(ValidationFailed, match="future"):
        enrollment.enroll(session, actor, trial, ok.id, consent_date=TODAY + dt.timedelta(days=2),
                          consent_version="1.0")
    first = enrollment.enroll(session, actor, trial, ok.id, consent_date=TODAY, consent_version="1.0")
    assert first.code == "DE-0001" and first.stratum == "DE|F"
    with pytest.raises(Conflict, match="already enrolled"):
        enrollment.enroll(session, actor, trial, ok.id, consent_date=TODAY, consent_version="1.0")
    second = enrollment.screen(session, actor, trial, eligible_answers(sex="M"), site="DE").screening
    assert enrollment.enroll(session, actor, trial, second.id, consent_date=TODAY,
                             consent_version="1.0").code == "DE-0002"
    other = enrollment.screen(session, coordinator("PA"), trial, eligible_answers(), site="PA").screening
    assert enrollment.enroll(session, coordinator("PA"), trial, other.id, consent_date=TODAY,
                             consent_version="1.0").code == "PA-0001"


def test_failed_enrollment_does_not_use_up_a_number(db, actor, trial):
    with db.session() as s:
        a = enrollment.screen(s, actor, trial, eligible_answers(), site="NC").screening.id
        b = enrollment.screen(s, actor, trial, eligible_answers(), site="NC").screening.id
    with pytest.raises(ValidationFailed), db.session() as s:
        enrollment.enroll(s, actor, trial, a, consent_date=TODAY, consent_version="1.0")
        raise ValidationFailed({"x": "simulated failure after the number was taken"})
    with db.session() as s:
        assert enrollment.enroll(s, actor, trial, b, consent_date=TODAY, consent_version="1.0").code == "NC-0001"


def test_declined_candidates_are_kept_and_cannot_be_enrolled(session, trial):
    actor = coordinator()
    row = enrollment.screen(session, actor, trial, eligible_answers(), site="DE").screening
    with pytest.raises(ValidationFailed):
        enrollment.decline(session, actor, trial, row.id, "")
    enrollment.decline(session, actor, trial, row.id, "time commitment")
    assert row.outcome is ScreeningOutcome.DECLINED
    with pytest.raises(Conflict, match="declined"):
        enrollment.enroll(session, actor, trial, row.id, consent_date=TODAY, consent_version="1.0")


def test_other_sites_participants_are_invisible(session, trial):
    row = enrollment.screen(session, coordinator("PA"), trial, eligible_answers(), site="PA").screening
    with pytest.raises(NotFound):
        enrollment.enroll(session, coordinator("DE"), trial, row.id, consent_date=TODAY, consent_version="1.0")
    p = enrollment.enroll(session, coordinator("PA"), trial, row.id, consent_date=TODAY, consent_version="1.0")
    with pytest.raises(NotFound):
        enrollment.get_participant(session, coordinator("DE"), trial, p.code)
    assert [x.code for x in enrollment.list_participants(session, coordinator("DE"), trial)] == []
    assert session.scalar(select(func.count()).select_from(Participant)) == 1
