"""Automatic edit checks: run after a form changes; each raises a query rather than refusing the data, because
the value may be right (a participant can get much faster) and only the site can tell."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from trialmgr.db.models_crf import FormRecord, FormValue, Query, VisitRecord
from trialmgr.db.models_trial import Participant
from trialmgr.domain.crf import FormResult
from trialmgr.domain.protocol import Protocol
from trialmgr.services.context import SYSTEM, Actor

GAIT_FIELDS = ("gait_usual_speed", "gait_fast_speed")
GAIT_CHANGE_LIMIT = Decimal("0.5")


def _baseline_value(session: Session, participant: Participant, form_id: str, field_id: str) -> Decimal | None:
    value = session.scalar(select(FormValue.value).join(FormRecord, FormRecord.id == FormValue.record_id)
                           .join(VisitRecord, VisitRecord.id == FormRecord.visit_id)
                           .where(FormRecord.participant_id == participant.id, FormRecord.form_id == form_id,
                                  VisitRecord.code == "BL", FormValue.field_id == field_id))
    return Decimal(value) if value else None


def _label(proto: Protocol, derived_id: str) -> str:
    """The protocol's label of a derived score of the performance form (its id if it has none)."""
    return next((d.label for d in proto.form("performance").derived if d.id == derived_id), derived_id)


def run(session: Session, actor: Actor, proto: Protocol, participant: Participant, record: FormRecord,
        visit: VisitRecord | None, result: FormResult) -> list[int]:
    from trialmgr.services import queries

    opened = []
    if record.form_id == "performance" and visit is not None and visit.code != "BL":
        for name in GAIT_FIELDS:
            now = result.derived.get(name)
            base = _baseline_value(session, participant, "performance", name)
            if now is None or not base:
                continue
            change = abs(Decimal(now) - base) / base
            if change > GAIT_CHANGE_LIMIT:
                exists = session.scalar(select(Query.id).where(Query.record_id == record.id, Query.field_id == name,
                                                               Query.status != "closed",
                                                               Query.check_id == "gait_speed_change"))
                if exists:
                    continue
                checker = Actor(username=SYSTEM.username, trial=participant.trial_id, full_name="edit check",
                                request_id=actor.request_id, client_addr=SYSTEM.client_addr, console=True)
                q = queries.open_query(
                    session, checker, participant, record, name,
                    f"{_label(proto, name)} changed by {change * 100:.0f}% since baseline (from {base} to {now} "
                    "m/s). Please confirm the timing.", check_id="gait_speed_change")
                opened.append(q.id)
    return opened
