"""Each participant's visits: created at enrollment, anchored on the randomization date once randomized."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from trialmgr import clock
from trialmgr.db.models_crf import FormRecord, VisitRecord
from trialmgr.db.models_trial import Participant
from trialmgr.domain import schedule
from trialmgr.domain.errors import Conflict, NotFound, ValidationFailed
from trialmgr.domain.protocol import Protocol
from trialmgr.domain.schedule import VisitStatus
from trialmgr.domain.vocab import ParticipantStatus, Role
from trialmgr.services import audit, trials
from trialmgr.services.context import Actor

VISIT_EDITORS = (Role.COORDINATOR, Role.INVESTIGATOR, Role.ASSESSOR)


def today() -> dt.date:
    return clock.today()


def anchor_schedule(session: Session, actor: Actor, proto: Protocol, participant: Participant,
                    anchor: dt.date) -> None:
    """Create missing scheduled visits and (re)anchor the windows of those not yet completed.

    Called at enrollment (provisional anchor: the enrollment date, so baseline can be entered) and at
    randomization (the anchor the protocol defines). Each change of a window is audited.
    """
    existing = {v.code: v for v in session.scalars(select(VisitRecord)
                                                   .where(VisitRecord.participant_id == participant.id))}
    for position, w in enumerate(schedule.windows(proto, anchor)):
        row = existing.get(w.code)
        if row is None:
            row = VisitRecord(trial_id=participant.trial_id, participant_id=participant.id, code=w.code,
                              label=w.label, scheduled=True, position=position)
            session.add(row)
        elif row.complete or row.missed:
            continue
        if (row.target_date, row.window_start, row.window_end) != (w.target, w.start, w.end):
            audit.record(session, actor, "visit:schedule", "visit", w.code, trial=participant.trial_id,
                         participant=participant.code, field="window",
                         old=f"{row.window_start} to {row.window_end}" if row.window_start else None,
                         new=w.describe(), reason=f"anchored on {anchor.isoformat()}")
            row.target_date, row.window_start, row.window_end = w.target, w.start, w.end
    session.flush()


@dataclass(frozen=True)
class VisitView:
    record: VisitRecord
    status: VisitStatus
    window: schedule.Window | None
    forms: list[tuple[str, str]]  # (form id, not_started | draft | complete)


def window_of(v: VisitRecord) -> schedule.Window | None:
    if v.window_start is None:
        return None
    return schedule.Window(v.code, v.label, v.target_date, v.window_start, v.window_end)


# A participant in one of these has no more visits to come: a visit not done is "not expected".
FOLLOW_UP_ENDED = frozenset({ParticipantStatus.WITHDRAWN, ParticipantStatus.LOST, ParticipantStatus.COMPLETED})


def visit_status(v: VisitRecord, day: dt.date | None = None, *, participant: Participant | None = None
                 ) -> VisitStatus:
    """The visit's status today (or on `day`); with its participant, "not expected" once their follow-up ended."""
    ended = participant is not None and participant.status in FOLLOW_UP_ENDED
    return schedule.status(window_of(v), today=day or today(), visit_date=v.visit_date, complete=v.complete,
                           missed=v.missed, ended=ended)


def visit_forms(proto: Protocol, v: VisitRecord) -> tuple[str, ...]:
    if v.scheduled:
        return proto.visit(v.code).forms
    return tuple(f.id for f in proto.forms if f.kind == "visit")


def list_visits(session: Session, participant: Participant, day: dt.date | None = None) -> list[VisitView]:
    proto = trials.current_protocol(session, participant.trial_id)
    rows = session.scalars(select(VisitRecord).where(VisitRecord.participant_id == participant.id)
                           .order_by(VisitRecord.position, VisitRecord.id)).all()
    records = session.execute(select(FormRecord.visit_id, FormRecord.form_id, FormRecord.status)
                              .where(FormRecord.participant_id == participant.id,
                                     FormRecord.visit_id.is_not(None))).all()
    by_visit: dict[int, dict[str, str]] = {}
    for visit_id, form_id, st in records:
        by_visit.setdefault(visit_id, {})[form_id] = st
    out = []
    for v in rows:
        forms = [(f, by_visit.get(v.id, {}).get(f, "not_started")) for f in visit_forms(proto, v)]
        out.append(VisitView(v, visit_status(v, day, participant=participant), window_of(v), forms))
    return out


@dataclass(frozen=True)
class Outlook:
    """What is due for a participant: the first scheduled visit whose window is open or still to come (in
    schedule order), and the visits whose window closed with nothing recorded."""
    next: VisitView | None
    overdue: list[VisitView]


def outlook(session: Session, participant: Participant, day: dt.date | None = None) -> Outlook:
    """Read from the visits as they stand, so it moves on as visits are done or marked missed; nothing is due
    once the participant's follow-up ended (their visits not done are "not expected")."""
    scheduled = [v for v in list_visits(session, participant, day) if v.window is not None]
    coming = [v for v in scheduled if v.status in (VisitStatus.OPEN, VisitStatus.UPCOMING)]
    return Outlook(coming[0] if coming else None, [v for v in scheduled if v.status is VisitStatus.OVERDUE])


_KNOWN = "trialmgr.visits"  # session.info: (participant id, code) -> VisitRecord, for this transaction only


@event.listens_for(Session, "after_transaction_end")
def _forget(session: Session, transaction) -> None:
    if transaction.parent is None:
        session.info.pop(_KNOWN, None)


def remember_visit(session: Session, visit: VisitRecord) -> None:
    """Keep a visit read together with its participant (crf.participant_for_entry) for get_visit."""
    session.info.setdefault(_KNOWN, {})[(visit.participant_id, visit.code)] = visit


def get_visit(session: Session, participant: Participant, code: str) -> VisitRecord:
    row = session.info.get(_KNOWN, {}).get((participant.id, code))
    if row is not None:
        return row
    row = session.scalar(select(VisitRecord).where(VisitRecord.participant_id == participant.id,
                                                   VisitRecord.code == code))
    if row is None:
        raise NotFound(f"{participant.code} has no visit {code!r}")
    return row


def add_unscheduled(session: Session, actor: Actor, participant: Participant, label: str,
                    visit_date) -> VisitRecord:
    actor.require(*VISIT_EDITORS)
    trials.require_open(session, participant.trial_id)
    if not (label or "").strip():
        raise ValidationFailed({"label": "is required (why the visit took place)"})
    try:
        when = visit_date if isinstance(visit_date, dt.date) else dt.date.fromisoformat(str(visit_date))
    except ValueError:
        raise ValidationFailed({"visit_date": "is not a valid date (YYYY-MM-DD)"}) from None
    if when > today():
        raise ValidationFailed({"visit_date": "must not be in the future"})
    n = (session.scalar(select(func.count()).select_from(VisitRecord).where(
        VisitRecord.participant_id == participant.id, VisitRecord.scheduled.is_(False))) or 0) + 1
    code = f"UNS{n}"
    row = VisitRecord(trial_id=participant.trial_id, participant_id=participant.id, code=code,
                      label=label.strip()[:120], scheduled=False, position=1000 + n, visit_date=when)
    session.add(row)
    session.flush()
    audit.record(session, actor, "visit:create", "visit", code, trial=participant.trial_id,
                 participant=participant.code, field="visit_date", new=when.isoformat(), reason=label.strip())
    return row


def mark_missed(session: Session, actor: Actor, participant: Participant, code: str, reason: str) -> VisitRecord:
    actor.require(Role.COORDINATOR, Role.INVESTIGATOR)
    trials.require_open(session, participant.trial_id)
    v = get_visit(session, participant, code)
    if v.complete:
        raise Conflict(f"visit {code} is complete; it cannot be marked missed")
    if not (reason or "").strip():
        raise ValidationFailed({"reason": "is required (why the visit did not take place)"})
    audit.record(session, actor, "visit:missed", "visit", code, trial=participant.trial_id,
                 participant=participant.code, field="missed", old="false", new="true", reason=reason.strip())
    v.missed, v.missed_reason = True, reason.strip()
    return v
