from __future__ import annotations

from decimal import Decimal

from sqlalchemy import func, select

from trialmgr import keys
from trialmgr.db.models_crf import FormRecord, FormValue, Query
from trialmgr.db.models_trial import Screening
from trialmgr.domain.schedule import VisitStatus
from trialmgr.services import audit_query, enrollment, integrity, visits
from trialmgr.services.context import cli_actor

T = "hip-pt-clbp"


def test_demo_data_covers_every_stage_and_is_audited(db, settings, trial):
    from trialmgr.demo import populate

    counts = populate(db, settings, T, 30, seed=5)
    assert counts["screened"] == 30 and counts["ineligible"] > 0 and counts["randomized"] > 10
    assert counts["forms"] > 50
    with db.session(write=False) as s:
        outcomes = dict(s.execute(select(Screening.outcome, func.count()).group_by(Screening.outcome)).all())
        assert len(outcomes) >= 3
        statuses = set()
        for p in enrollment.list_participants(s, cli_actor(), T):
            statuses |= {v.status for v in visits.list_visits(s, p)}
        assert {VisitStatus.COMPLETED, VisitStatus.UPCOMING} <= statuses
        assert s.scalar(select(func.count()).select_from(FormRecord).where(FormRecord.status == "complete")) > 50
        report = audit_query.verify(s, keys.audit_public_keys(settings), T)
        assert report.ok, report.problem
        assert integrity.check_data(s, T) == []

        # Plausible measurements: a fast walk takes less time than a usual one, and a follow-up is near the
        # person's baseline, so the gait-change edit check fires for the occasional slip, not for most visits.
        perf = s.execute(select(FormRecord.id, FormValue.field_id, FormValue.value).join(
            FormValue, FormValue.record_id == FormRecord.id).where(FormRecord.form_id == "performance")).all()
        by_record: dict[int, dict[str, str]] = {}
        for rid, fid, value in perf:
            by_record.setdefault(rid, {})[fid] = value
        timed = [v for v in by_record.values() if "gait_usual_s" in v and "gait_fast_s" in v]
        assert timed and all(Decimal(v["gait_fast_s"]) < Decimal(v["gait_usual_s"]) for v in timed)
        followed = len(timed) - s.scalar(select(func.count(func.distinct(FormRecord.participant_id))).where(
            FormRecord.form_id == "performance"))
        checks = s.scalars(select(Query.text).where(Query.check_id == "gait_speed_change")).all()
        assert followed > 10 and len(checks) <= followed // 4, (len(checks), followed)
        assert all(t.startswith("Gait speed, ") and "Please confirm the timing." in t for t in checks), checks
