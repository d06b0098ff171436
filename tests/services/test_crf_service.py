from __future__ import annotations

import datetime as dt
import random

import pytest
from sqlalchemy import select, text, update

from trialmgr.db.models_audit import AuditEntry
from trialmgr.db.models_crf import FormRecord, Query, VisitRecord
from trialmgr.domain.errors import Conflict, PermissionDenied, ReasonRequired, ValidationFailed
from trialmgr.domain.schedule import VisitStatus
from trialmgr.domain.vocab import ParticipantStatus, Role
from trialmgr.protocols import default_protocol_path, load_protocol_file
from trialmgr.services import crf, enrollment, integrity, queries, visits
from trialmgr.services.context import Actor
from trialmgr.synthetic import form_values

T = "hip-pt-clbp"
PROTO = load_protocol_file(default_protocol_path())
COORD = Actor(username="cc", role=Role.COORDINATOR, trial=T, sites=("DE",))
ASSESSOR = Actor(username="aa", role=Role.ASSESSOR, trial=T, sites=("DE",))
MONITOR = Actor(username="mm", role=Role.MONITOR, trial=T)
TODAY = visits.today()


def _p(s, code):
    return enrollment.get_participant(s, COORD, T, code)


def perf(usual="8.00", fast="6.00"):
    return {"gait_usual_s": usual, "gait_fast_s": fast, "tug_s": "9.50", "six_mwt_m": "400", "chair_stand_30s": "12"}


def test_schedule_is_created_at_enrollment_and_anchored_at_randomization(db, randomized):
    code = randomized()
    with db.session(write=False) as s:
        vs = visits.list_visits(s, _p(s, code))
    assert [v.record.code for v in vs] == ["BL", "W4", "W8", "W12", "M6"]
    w4 = vs[1]
    assert w4.record.target_date == TODAY + dt.timedelta(days=28)
    assert w4.status is VisitStatus.UPCOMING and vs[0].status is VisitStatus.OPEN
    assert dict(w4.forms) == {"pain": "not_started", "session_log": "not_started"}


def test_baseline_before_randomization_but_not_later_visits(db, enroll):
    code = enroll()
    with db.session() as s:
        crf.save_form(s, COORD, _p(s, code), "pain", {"back_pain": "6", "hip_pain": "3"}, visit_code="BL")
        with pytest.raises(Conflict, match="not randomized"):
            crf.save_form(s, COORD, _p(s, code), "pain", {"back_pain": "6", "hip_pain": "3"}, visit_code="W4")


def test_save_audit_change_needs_reason_and_clears_sdv(db, randomized):
    code = randomized()
    with db.session() as s:
        res = crf.save_form(s, COORD, _p(s, code), "performance", perf(), visit_code="BL")
        assert res.record.status == "complete"
        view = crf.read_form(s, COORD, _p(s, code), "performance", "BL")
        assert view.values["gait_usual_speed"] == "1.250"  # derived by the server: 10 m / 8 s
    with db.session() as s:
        crf.verify_source(s, MONITOR, _p(s, code), "performance", "BL")
    with db.session() as s, pytest.raises(ReasonRequired, match="gait_usual_s"):
        crf.save_form(s, COORD, _p(s, code), "performance", perf(usual="10.00"), visit_code="BL")
    with db.session() as s:
        crf.save_form(s, COORD, _p(s, code), "performance", perf(usual="10.00"), visit_code="BL",
                      reason="transcription error, source says 10.00 s")
    with db.session(write=False) as s:
        rec = s.scalar(select(FormRecord).where(FormRecord.form_id == "performance"))
        assert rec.sdv_at is None and rec.version == 2
        entries = s.scalars(select(AuditEntry).where(AuditEntry.participant == code,
                                                     AuditEntry.field == "gait_usual_s")
                            .order_by(AuditEntry.seq)).all()
        assert [(e.old_value, e.new_value) for e in entries] == [(None, "8.00"), ("8.00", "10.00")]
        assert entries[1].reason == "transcription error, source says 10.00 s" and entries[1].action == "form:update"
        derived = s.scalars(select(AuditEntry).where(AuditEntry.field == "gait_usual_speed")
                            .order_by(AuditEntry.seq)).all()
        assert [e.new_value for e in derived] == ["1.250", "1.000"]
        assert s.scalar(select(AuditEntry).where(AuditEntry.action == "sdv:clear")) is not None


def test_drafts_missing_codes_and_completeness(db, randomized):
    code = randomized()
    with db.session() as s:
        with pytest.raises(ValidationFailed) as info:
            crf.save_form(s, COORD, _p(s, code), "pain", {"back_pain": "6"}, visit_code="BL")
        assert "hip_pain" in info.value.errors and "ND" in info.value.errors["hip_pain"]
        crf.save_form(s, COORD, _p(s, code), "pain", {"back_pain": "6"}, visit_code="BL", status="draft")
        assert crf.read_form(s, COORD, _p(s, code), "pain", "BL").status == "draft"
        crf.save_form(s, COORD, _p(s, code), "pain", {"back_pain": "6"}, missing={"hip_pain": "RF"}, visit_code="BL")
        view = crf.read_form(s, COORD, _p(s, code), "pain", "BL")
        assert view.status == "complete" and view.missing == {"hip_pain": "RF"}


@pytest.mark.parametrize("values,field", [
    ({"back_pain": "11", "hip_pain": "0"}, "back_pain"),
    ({"back_pain": "six", "hip_pain": "0"}, "back_pain"),
    ({"back_pain": "5", "hip_pain": "0", "mood": "x"}, "mood"),
])
def test_bad_values_write_nothing(db, randomized, values, field):
    code = randomized()
    with db.session() as s:
        before = s.scalar(select(AuditEntry.seq).order_by(AuditEntry.seq.desc()).limit(1))
        with pytest.raises(ValidationFailed) as info:
            crf.save_form(s, COORD, _p(s, code), "pain", values, visit_code="BL")
        assert field in info.value.errors
        assert s.scalar(select(FormRecord)) is None
        assert s.scalar(select(AuditEntry.seq).order_by(AuditEntry.seq.desc()).limit(1)) == before


def test_assessor_enters_outcome_forms_only(db, randomized):
    code = randomized()
    with db.session() as s:
        crf.save_form(s, ASSESSOR, _p(s, code), "pain", {"back_pain": "4", "hip_pain": "2"}, visit_code="BL")
        with pytest.raises(PermissionDenied, match="outcome"):
            crf.save_form(s, ASSESSOR, _p(s, code), "session_log", {}, visit_code="W4")
        with pytest.raises(PermissionDenied):
            crf.save_form(s, MONITOR, _p(s, code), "pain", {"back_pain": "4", "hip_pain": "2"}, visit_code="BL")


def test_query_round_trip_and_counts(db, randomized):
    code = randomized()
    with db.session() as s:
        rec = crf.save_form(s, COORD, _p(s, code), "pain", {"back_pain": "9", "hip_pain": "0"}, visit_code="BL").record
        q = queries.open_query(s, MONITOR, _p(s, code), rec, "back_pain", "9/10 with no hip pain? Please confirm.")
        with pytest.raises(PermissionDenied):
            queries.open_query(s, COORD, _p(s, code), rec, "back_pain", "x")
        assert queries.open_counts(s, T) == {"by_site": {"DE": 1}, "by_participant": {code: 1}}
        crf.save_form(s, COORD, _p(s, code), "pain", {"back_pain": "6", "hip_pain": "0"}, visit_code="BL",
                      reason="query: source says 6")
        queries.answer_query(s, COORD, T, q.id, "Corrected to 6 per source.")
        with pytest.raises(PermissionDenied):
            queries.close_query(s, COORD, T, q.id)
        queries.close_query(s, MONITOR, T, q.id)
        assert queries.open_counts(s, T)["by_site"] == {}
        actions = s.scalars(select(AuditEntry.action).where(AuditEntry.entity_type == "query")).all()
        assert actions == ["query:open", "query:answer", "query:close"]


def test_gait_speed_edit_check_opens_a_query(db, randomized):
    code = randomized()
    with db.session() as s:
        crf.save_form(s, COORD, _p(s, code), "performance", perf(usual="10.00"), visit_code="BL")
        s.execute(update(VisitRecord).where(VisitRecord.code == "W8").values(window_start=TODAY - dt.timedelta(1)))
        res = crf.save_form(s, COORD, _p(s, code), "performance", perf(usual="5.00"), visit_code="W8")
        assert len(res.queries_opened) == 1
        q = s.get(Query, res.queries_opened[0])
        assert q.check_id == "gait_speed_change" and q.field_id == "gait_usual_speed"
        assert q.text == ("Gait speed, usual pace changed by 100% since baseline (from 1.000 to 2.000 m/s). "
                          "Please confirm the timing.")


def test_out_of_window_completion_records_a_deviation(db, randomized):
    code = randomized()
    rng = random.Random(3)
    with db.session() as s:
        p = _p(s, code)
        late = TODAY
        s.execute(update(VisitRecord).where(VisitRecord.participant_id == p.id, VisitRecord.code == "W4")
                  .values(window_start=TODAY - dt.timedelta(days=30), window_end=TODAY - dt.timedelta(days=2),
                          target_date=TODAY - dt.timedelta(days=9)))
        crf.save_form(s, COORD, p, "pain", {"back_pain": "5", "hip_pain": "1"}, visit_code="W4", visit_date=late)
        res = crf.save_form(s, COORD, p, "session_log", form_values(PROTO.form("session_log"), rng, TODAY,
                                                                    sessions_planned="8", sessions_attended="7"),
                            visit_code="W4", visit_date=late)
        assert res.deviation_created
        vs = {v.record.code: v for v in visits.list_visits(s, p)}
        assert vs["W4"].status is VisitStatus.COMPLETED_OUT_OF_WINDOW
        dev = crf.read_form(s, COORD, p, "deviation", None, instance=1)
        assert dev.values["category"] == "visit_window" and "2 day(s) after" in dev.values["description"]


def test_withdrawal_and_serious_adverse_event(db, randomized):
    code = randomized()
    with db.session() as s:
        p = _p(s, code)
        ae = crf.save_form(s, COORD, p, "adverse_event", {
            "term": "Fall with wrist fracture", "onset_date": TODAY.isoformat(), "severity": "severe",
            "serious": "yes", "serious_criteria": "hospitalization", "relatedness": "possible",
            "action_taken": "interrupted", "outcome": "recovering"})
        assert ae.record.serious and ae.record.instance == 1
        with pytest.raises(ValidationFailed) as info:
            crf.save_form(s, COORD, p, "adverse_event", {
                "term": "x", "onset_date": TODAY.isoformat(), "end_date": (TODAY - dt.timedelta(1)).isoformat(),
                "severity": "mild", "serious": "no", "relatedness": "not", "action_taken": "none",
                "outcome": "recovered"})
        assert "end_date" in info.value.errors
        crf.save_form(s, COORD, p, "withdrawal", {"withdrawal_date": TODAY.isoformat(), "type": "lost_to_follow_up",
                                                  "reason": "moved away"})
        assert p.status is ParticipantStatus.LOST


def test_direct_update_of_a_form_value_is_caught(db, randomized):
    code = randomized()
    with db.session() as s:
        crf.save_form(s, COORD, _p(s, code), "pain", {"back_pain": "6", "hip_pain": "3"}, visit_code="BL")
        assert integrity.check_data(s, T) == []
    db.connection.execute(text("UPDATE form_value SET value = '2' WHERE field_id = 'back_pain'"))
    with db.session(write=False) as s:
        problems = integrity.check_data(s, T)
    assert len(problems) == 1 and "back_pain" in problems[0] and "'2'" in problems[0]


def test_stale_version_is_refused(db, randomized):
    code = randomized()
    with db.session() as s:
        rec = crf.save_form(s, COORD, _p(s, code), "pain", {"back_pain": "6", "hip_pain": "3"}, visit_code="BL").record
        version = rec.version
        crf.save_form(s, COORD, _p(s, code), "pain", {"back_pain": "5", "hip_pain": "3"}, visit_code="BL",
                      reason="r", expected_version=version)
        with pytest.raises(Conflict, match="changed by"):
            crf.save_form(s, COORD, _p(s, code), "pain", {"back_pain": "4", "hip_pain": "3"}, visit_code="BL",
                          reason="r", expected_version=version)


def test_values_added_changed_and_removed_reach_the_database(db, randomized):
    """A save writes the record and its values without the unit of work (one statement on PostgreSQL): the
    rows the database holds afterwards, and the loaded rows of the same transaction, agree with what was saved."""
    code = randomized()

    def stored(s, form_id):
        rows = s.execute(text("SELECT v.field_id, v.value, v.missing_code FROM form_value v "
                              "JOIN form_record r ON r.id = v.record_id JOIN participant p ON p.id = r.participant_id "
                              "WHERE p.code = :code AND r.form_id = :form"), {"code": code, "form": form_id}).all()
        record = s.execute(text("SELECT r.status, r.version FROM form_record r JOIN participant p "
                                "ON p.id = r.participant_id WHERE p.code = :code AND r.form_id = :form"),
                           {"code": code, "form": form_id}).one()
        return {f: (v, m) for f, v, m in rows}, tuple(record)

    with db.session() as s:
        crf.save_form(s, COORD, _p(s, code), "pain", {"back_pain": "6"}, visit_code="BL", status="draft")
    with db.session() as s:
        assert stored(s, "pain") == ({"back_pain": ("6", None)}, ("draft", 1))
        # A missing code added (new row, no reason needed: nothing saved before), the status completed.
        crf.save_form(s, COORD, _p(s, code), "pain", {"back_pain": "6"}, missing={"hip_pain": "RF"}, visit_code="BL")
        assert stored(s, "pain") == ({"back_pain": ("6", None), "hip_pain": (None, "RF")}, ("complete", 2))
    with db.session() as s:
        # The missing code replaced by a value and another value changed in the same save.
        res = crf.save_form(s, COORD, _p(s, code), "pain", {"back_pain": "5", "hip_pain": "3"}, visit_code="BL",
                            reason="source found")
        assert sorted(res.changed) == ["back_pain", "hip_pain"]
        assert stored(s, "pain") == ({"back_pain": ("5", None), "hip_pain": ("3", None)}, ("complete", 3))
        view = crf.read_form(s, COORD, _p(s, code), "pain", "BL")  # same transaction: the loaded rows agree
        assert (view.values, view.missing, view.record.version) == ({"back_pain": "5", "hip_pain": "3"}, {}, 3)

    log = {"sessions_planned": "12", "sessions_attended": "4", "home_program": "some"}
    with db.session() as s:
        crf.save_form(s, COORD, _p(s, code), "session_log", log, visit_code="W4")
    with db.session() as s:
        # An optional value added while another changes; then removed again.
        crf.save_form(s, COORD, _p(s, code), "session_log", {**log, "sessions_attended": "5", "notes": "knee ok"},
                      visit_code="W4", reason="miscounted")
        values, record = stored(s, "session_log")
        assert values["notes"] == ("knee ok", None) and values["sessions_attended"] == ("5", None)
        assert values["attendance"] == ("0.42", None) and record == ("complete", 2)
    with db.session() as s:
        crf.save_form(s, COORD, _p(s, code), "session_log", {**log, "sessions_attended": "5"}, visit_code="W4",
                      reason="note belonged to another participant")
        values, record = stored(s, "session_log")
        assert "notes" not in values and record == ("complete", 3)
        entries = s.scalars(select(AuditEntry).where(AuditEntry.participant == code, AuditEntry.field == "notes")
                            .order_by(AuditEntry.seq)).all()
        assert [(e.old_value, e.new_value) for e in entries] == [(None, "knee ok"), ("knee ok", None)]
