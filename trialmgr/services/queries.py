"""Data queries: a monitor (or an automatic edit check) asks about a field; site staff answer or correct the
value; the monitor closes the query."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from trialmgr.db.base import utcnow
from trialmgr.db.models_crf import FormRecord, Query, VisitRecord
from trialmgr.db.models_trial import Participant
from trialmgr.domain.errors import Conflict, DataLocked, NotFound, ValidationFailed
from trialmgr.domain.vocab import Role
from trialmgr.services import audit, crf, trials
from trialmgr.services.context import Actor

RAISERS = (Role.MONITOR, Role.INVESTIGATOR)
ANSWERERS = (Role.COORDINATOR, Role.INVESTIGATOR, Role.ASSESSOR)
MAX_TEXT = 2000


def _text(name: str, value: str | None) -> str:
    value = (value or "").strip()
    if not value:
        raise ValidationFailed({name: "is required"})
    if len(value) > MAX_TEXT:
        raise ValidationFailed({name: f"must be at most {MAX_TEXT} characters"})
    return value


def _writable(session: Session, participant: Participant) -> None:
    """Queries live on while the data are frozen, not once they are locked."""
    trials.require_not_locked(session, participant.trial_id)
    if participant.locked:
        raise DataLocked(f"the data of {participant.code} are locked")


def _entity(session: Session, record: FormRecord) -> str:
    visit = session.get(VisitRecord, record.visit_id) if record.visit_id else None
    return crf.entity_id(record.form_id, visit.code if visit else None, record.instance)


def open_query(session: Session, actor: Actor, participant: Participant, record: FormRecord, field_id: str,
               text: str, *, check_id: str | None = None) -> Query:
    if check_id is None:
        actor.require(*RAISERS)
    _writable(session, participant)
    proto = trials.current_protocol(session, participant.trial_id)
    form = proto.form(record.form_id)
    if field_id not in form.field_ids and field_id not in {d.id for d in form.derived}:
        raise ValidationFailed({"field": f"{field_id!r} is not a field of {form.title}"})
    q = Query(trial_id=participant.trial_id, participant_id=participant.id, record_id=record.id, field_id=field_id,
              status="open", text=_text("text", text), check_id=check_id, opened_by=actor.username)
    session.add(q)
    session.flush()
    audit.record(session, actor, "query:open", "query", q.id, trial=participant.trial_id, participant=participant.code,
                 field=field_id, new=q.text, reason=f"on {_entity(session, record)}"
                 + (f" (automatic check {check_id})" if check_id else ""))
    return q


def get_query(session: Session, actor: Actor, trial_id: str, query_id: int, *, lock: bool = False
              ) -> tuple[Query, Participant]:
    stmt = select(Query, Participant).join(Participant, Participant.id == Query.participant_id).where(
        Query.trial_id == trial_id, Query.id == query_id)
    row = session.execute(stmt.with_for_update() if lock else stmt).first()
    if row is None or not actor.sees_site(row[1].site_code):
        raise NotFound(f"no query {query_id}")
    return row[0], row[1]


def answer_query(session: Session, actor: Actor, trial_id: str, query_id: int, answer: str) -> Query:
    actor.require(*ANSWERERS)
    q, p = get_query(session, actor, trial_id, query_id, lock=True)
    _writable(session, p)
    if q.status == "closed":
        raise Conflict(f"query {query_id} is closed")
    q.answer, q.answered_by, q.answered_at, q.status = _text("answer", answer), actor.username, utcnow(), "answered"
    audit.record(session, actor, "query:answer", "query", q.id, trial=trial_id, participant=p.code, field=q.field_id,
                 new=q.answer)
    return q


def close_query(session: Session, actor: Actor, trial_id: str, query_id: int, note: str | None = None) -> Query:
    actor.require(*RAISERS)
    q, p = get_query(session, actor, trial_id, query_id, lock=True)
    _writable(session, p)
    if q.status == "closed":
        raise Conflict(f"query {query_id} is already closed")
    audit.record(session, actor, "query:close", "query", q.id, trial=trial_id, participant=p.code, field=q.field_id,
                 old=q.status, new="closed", reason=(note or "").strip() or None)
    q.status, q.closed_by, q.closed_at = "closed", actor.username, utcnow()
    return q


def list_queries(session: Session, actor: Actor, trial_id: str, *, status: str | None = None,
                 participant: str | None = None) -> list[tuple[Query, Participant, FormRecord]]:
    stmt = (select(Query, Participant, FormRecord).join(Participant, Participant.id == Query.participant_id)
            .join(FormRecord, FormRecord.id == Query.record_id).where(Query.trial_id == trial_id))
    if status:
        if status not in ("open", "answered", "closed"):
            raise ValidationFailed({"status": "must be open, answered or closed"})
        stmt = stmt.where(Query.status == status)
    if participant:
        stmt = stmt.where(Participant.code == participant)
    if actor.role is not None and actor.role.site_bound and not actor.console:
        stmt = stmt.where(Participant.site_code.in_(actor.sites))
    return [tuple(r) for r in session.execute(stmt.order_by(Query.id.desc()))]


def open_counts(session: Session, trial_id: str) -> dict[str, dict[str, int]]:
    """Open (not closed) query counts per site and per participant."""
    rows = session.execute(select(Participant.site_code, Participant.code, func.count()).join(
        Query, Query.participant_id == Participant.id).where(Query.trial_id == trial_id, Query.status != "closed")
        .group_by(Participant.site_code, Participant.code)).all()
    by_site: dict[str, int] = {}
    by_participant: dict[str, int] = {}
    for site, code, n in rows:
        by_site[site] = by_site.get(site, 0) + n
        by_participant[code] = n
    return {"by_site": by_site, "by_participant": by_participant}
