from __future__ import annotations

from sqlalchemy import func, select

from trialmgr import keys
from trialmgr.db.models_crf import FormRecord
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
