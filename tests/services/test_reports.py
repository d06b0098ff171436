"""Report numbers (CONSORT, enrollment over time, visits due, SDV, adverse events) against data the test makes."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from tests.support import eligible_answers
from trialmgr.db.models_trial import Allocation, Participant
from trialmgr.domain.vocab import Role
from trialmgr.services import crf, enrollment, randomization, reports
from trialmgr.services.context import Actor

T = "hip-pt-clbp"
TODAY = enrollment.today()
COORD_DE = Actor(username="cc", role=Role.COORDINATOR, trial=T, sites=("DE",))
MONITOR = Actor(username="mm", role=Role.MONITOR, trial=T)


def _participant(s, code) -> Participant:
    return s.scalar(select(Participant).where(Participant.code == code))


def _arm(s, code) -> str:
    return s.scalar(select(Allocation.arm).join(Participant, Participant.id == Allocation.participant_id)
                    .where(Participant.code == code))


def withdraw(db, actor, code, kind, reason):
    with db.session() as s:
        crf.save_form(s, actor, _participant(s, code), "withdrawal",
                      {"withdrawal_date": TODAY.isoformat(), "type": kind, "reason": reason}, status="complete")


@pytest.fixture
def flow(db, actor, trial, enroll, randomized):
    """Screened: 3 ineligible (age; MMSE; age and MMSE), 1 declined, 1 eligible not enrolled, 1 enrolled and
    awaiting randomization, 6 randomized: one withdrew consent, one lost, one discontinued the intervention."""
    with db.session() as s:
        enrollment.screen(s, actor, T, eligible_answers(date_of_birth="1970-01-01"), site="DE")
        enrollment.screen(s, actor, T, eligible_answers(mmse_score="20"), site="DE")
        enrollment.screen(s, actor, T, eligible_answers(date_of_birth="1970-01-01", mmse_score="20"), site="PA")
        declined = enrollment.screen(s, actor, T, eligible_answers(), site="DE").screening
        enrollment.decline(s, actor, T, declined.id, "Too far to travel")
        enrollment.screen(s, actor, T, eligible_answers(), site="NC")
    waiting = enroll("DE", "M")
    codes = [randomized("DE", "F"), randomized("DE", "F"), randomized("PA", "M"), randomized("PA", "F"),
             randomized("NC", "F"), randomized("DE", "M")]
    withdraw(db, actor, codes[0], "withdrawal", "Moved away")
    withdraw(db, actor, codes[1], "lost_to_follow_up", "No answer to calls")
    withdraw(db, actor, codes[2], "discontinued_intervention", "Knee surgery")
    with db.session(write=False) as s:
        arms = {c: _arm(s, c) for c in codes}
    return {"codes": codes, "arms": arms, "waiting": waiting}


def test_consort_numbers_from_live_data(db, flow):
    with db.session(write=False) as s:
        c = reports.consort(s, T, blinded=False)
    assert c.assessed == 3 + 1 + 1 + 1 + 6
    assert (c.not_meeting_criteria, c.declined, c.other) == (3, 1, 1)
    assert c.excluded == 5
    assert {r.text: r.n for r in c.by_criterion} == {"Age 65 or older": 2, "MMSE score 24 or higher": 2}
    assert [(r.text, r.n) for r in c.other_reasons] == [("Eligible, not enrolled", 1)]
    assert c.awaiting_randomization == 1 and c.randomized == 6
    assert c.assessed == c.excluded + c.awaiting_randomization + c.randomized
    by_arm = {a.key: a for a in c.arms}
    assert set(by_arm) == {"HIP", "SPINE"} and {a.label for a in c.arms} == {"Hip-focused PT", "Spine-focused PT"}
    arms = flow["arms"]
    codes = flow["codes"]
    for code in ("HIP", "SPINE"):
        a = by_arm[code]
        assert a.allocated == sum(1 for c_ in codes if arms[c_] == code)
        # Nobody has post-baseline data, so every withdrawal form means "did not receive".
        assert a.not_received == sum(1 for c_ in codes[:3] if arms[c_] == code)
        assert a.received == a.allocated - a.not_received
        assert a.withdrew == (arms[codes[0]] == code) and a.lost == (arms[codes[1]] == code)
        assert a.discontinued == (arms[codes[2]] == code)
        assert a.analysed == a.allocated - a.withdrew and a.excluded_from_analysis == a.withdrew
    assert [(r.text, r.n) for r in by_arm[arms[codes[0]]].withdrew_reasons] == [("Moved away", 1)]
    assert [(r.text, r.n) for r in by_arm[arms[codes[1]]].lost_reasons] == [("No answer to calls", 1)]
    assert [(r.text, r.n) for r in by_arm[arms[codes[2]]].discontinued_reasons] == [("Knee surgery", 1)]
    assert ("Withdrew consent: Moved away", 1) in [(r.text, r.n) for r in by_arm[arms[codes[0]]].not_received_reasons]
    assert sum(a.allocated for a in c.arms) == c.randomized


def test_post_baseline_data_means_the_intervention_was_received(db, actor, flow):
    code = flow["codes"][2]  # discontinued the intervention, follow-up continues
    with db.session() as s:
        p = _participant(s, code)
        crf.save_form(s, actor, p, "pain", {"back_pain": "3", "hip_pain": "1"}, visit_code="W4")
    with db.session(write=False) as s:
        a = next(a for a in reports.consort(s, T, blinded=False).arms if a.key == flow["arms"][code])
    assert a.discontinued == 1 and "Knee surgery" not in str(a.not_received_reasons)


def test_ineligible_after_randomization_is_excluded_from_analysis(db, actor, flow):
    code = flow["codes"][4]
    with db.session() as s:
        crf.save_form(s, actor, _participant(s, code), "deviation", {
            "deviation_date": TODAY.isoformat(), "category": "eligibility", "major": "yes",
            "description": "MMSE was 22 on review", "corrective_action": "Retrain"}, status="complete")
    with db.session(write=False) as s:
        a = next(a for a in reports.consort(s, T, blinded=False).arms if a.key == flow["arms"][code])
    assert ("Found ineligible after randomization", 1) in [(r.text, r.n) for r in a.excluded_reasons]


def test_blinded_consort_pools_the_arms_so_no_event_can_be_tied_to_a_group(db, actor, flow):
    with db.session(write=False) as s:
        c = reports.consort(s, T, blinded=True)
        unblinded = reports.consort(s, T, blinded=False)
    # One column for everyone randomized: no arm, and no per-group numbers a blinded reader could watch move.
    assert [(a.key, a.label) for a in c.arms] == [(reports.POOLED, reports.POOLED_LABEL)]
    text = repr(c)
    assert "HIP" not in text and "SPINE" not in text and "focused" not in text and "Group" not in text
    pooled = c.arms[0]
    for name in ("allocated", "received", "not_received", "lost", "discontinued", "withdrew", "analysed",
                 "excluded_from_analysis"):
        assert getattr(pooled, name) == sum(getattr(a, name) for a in unblinded.arms), name
    assert (pooled.allocated, pooled.withdrew, pooled.lost, pooled.discontinued) == (6, 1, 1, 1)
    assert [(r.text, r.n) for r in pooled.withdrew_reasons] == [("Moved away", 1)]
    assert c.randomized == unblinded.randomized == 6
    # The enrolment phase is the same for everyone.
    assert (c.assessed, c.excluded, c.by_criterion) == (unblinded.assessed, unblinded.excluded, unblinded.by_criterion)

    # A new randomization and a new withdrawal move the pooled numbers only: which arm they were in stays unknown.
    code = flow["codes"][5]
    withdraw(db, actor, code, "withdrawal", "Moved away")
    with db.session(write=False) as s:
        after = reports.consort(s, T, blinded=True)
    assert len(after.arms) == 1 and after.arms[0].withdrew == 2
    assert [(r.text, r.n) for r in after.arms[0].withdrew_reasons] == [("Moved away", 2)]


def test_enrollment_over_time(db, randomized, trial):
    with db.session(write=False) as s:
        empty = reports.enrollment_over_time(s, T)
    assert empty.points == [] and empty.target == 184 and empty.projected_date is None
    randomized("DE", "F")
    randomized("PA", "M")
    with db.session(write=False) as s:
        series = reports.enrollment_over_time(s, T)
    assert series.points == [(TODAY, 2)]
    assert series.projected_date == TODAY + dt.timedelta(days=91)  # 2 a day, 182 to go


def test_visits_due_are_site_scoped_and_classified(db, actor, randomized):
    de, pa = randomized("DE", "F"), randomized("PA", "F")
    with db.session(write=False) as s:
        now = reports.visits_due(s, COORD_DE, T, TODAY)
        later = reports.visits_due(s, COORD_DE, T, TODAY + dt.timedelta(days=25))
        everyone = reports.visits_due(s, MONITOR, T, TODAY + dt.timedelta(days=25))
    assert [(d.participant, d.visit) for d in now.today] == [(de, "BL")]  # window open, target is today
    assert now.overdue == [] and now.this_week == []
    assert [(d.participant, d.visit) for d in later.overdue] == [(de, "BL")]
    assert [(d.participant, d.visit) for d in later.this_week] == [(de, "W4")]
    assert {d.participant for d in everyone.this_week} == {de, pa}
    assert "pain" in later.this_week[0].pending_forms
    with db.session() as s:
        crf.save_form(s, actor, _participant(s, de), "pain", {"back_pain": "3", "hip_pain": "1"}, visit_code="BL")
    with db.session(write=False) as s:
        assessor = Actor(username="aa", role=Role.ASSESSOR, trial=T, sites=("DE",))
        out = reports.visits_due(s, assessor, T, TODAY, outcome_only=True)
    assert out.today[0].pending_forms == ("qbpds", "performance", "hip_impairment", "pros")  # outcome forms only


def test_overdue_primary_visits(db, randomized):
    code = randomized()
    with db.session(write=False) as s:
        assert reports.overdue_primary_visits(s, T, TODAY) == []
        late = reports.overdue_primary_visits(s, T, TODAY + dt.timedelta(days=84 + 15))
    assert [(d.participant, d.visit) for d in late] == [(code, "W12")]


def test_sdv_progress_and_adverse_events(db, actor, randomized):
    code = randomized()
    with db.session() as s:
        p = _participant(s, code)
        crf.save_form(s, actor, p, "pain", {"back_pain": "3", "hip_pain": "1"}, visit_code="BL")
        crf.save_form(s, actor, p, "session_log", {"sessions_planned": "8", "sessions_attended": "7",
                                                   "home_program": "most"}, visit_code="W4")
        crf.verify_source(s, MONITOR, p, "pain", "BL")
        base = {"onset_date": TODAY.isoformat(), "severity": "mild", "relatedness": "not", "action_taken": "none",
                "outcome": "recovered"}
        crf.save_form(s, actor, p, "adverse_event", {**base, "term": "Bruise", "serious": "no"})
        crf.save_form(s, actor, p, "adverse_event", {**base, "term": "Fall", "serious": "yes",
                                                     "serious_criteria": "hospitalization", "severity": "severe"})
        crf.save_form(s, actor, p, "adverse_event", {**base, "term": "Sore", "serious": "no"})
    with db.session(write=False) as s:
        sdv = reports.sdv_progress(s, T)
        aes = reports.adverse_events(s, actor, T)
        saes = reports.serious_adverse_events(s, actor, T)
        other_site = reports.adverse_events(s, Actor(username="x", role=Role.COORDINATOR, trial=T, sites=("PA",)), T)
    assert [(r.key, r.complete, r.verified) for r in sdv["by_site"]] == [("DE", 5, 1)]
    forms = {r.key: (r.complete, r.verified) for r in sdv["by_form"]}
    assert forms["pain"] == (1, 1) and forms["session_log"] == (1, 0) and forms["adverse_event"] == (3, 0)
    assert sdv["total"][0].percent == 20
    assert aes[0].serious and aes[0].values["term"] == "Fall" and [a.values["term"] for a in aes[1:]] == ["Sore",
                                                                                                           "Bruise"]
    assert [a.values["term"] for a in saes] == ["Fall"] and other_site == []


def test_list_status_balance_unaffected(db, randomized, trial):
    randomized()
    with db.session(write=False) as s:
        assert sum(r["used"] for r in randomization.list_status(s, T)) == 1
