"""Case report forms: entering, changing and reading a form's values, with the audit trail, reasons for
change, source data verification, automatic edit checks and the side effects some forms have.

One place for every rule of a form: trialmgr.domain.crf validates; this service decides who may change what,
when, and records it. The web pages and the JSON API both call save_form.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import ARRAY, Boolean, String, Text, and_, bindparam, insert, select, text, update
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from trialmgr.db.base import utcnow
from trialmgr.db.models_accounts import Trial
from trialmgr.db.models_audit import ChainHead
from trialmgr.db.models_crf import FormRecord, FormValue, VisitRecord
from trialmgr.db.models_trial import Participant
from trialmgr.domain import crf as crflib
from trialmgr.domain.errors import Conflict, DataLocked, NotFound, PermissionDenied, ReasonRequired, ValidationFailed
from trialmgr.domain.protocol import FormDef, Protocol
from trialmgr.domain.vocab import ParticipantStatus, Role
from trialmgr.services import audit, notify, trials, visits
from trialmgr.services.context import Actor

EDITORS = (Role.COORDINATOR, Role.INVESTIGATOR, Role.ASSESSOR)
STATUSES = ("draft", "complete")
WITHDRAWAL_STATUS = {"withdrawal": ParticipantStatus.WITHDRAWN, "lost_to_follow_up": ParticipantStatus.LOST}


def entity_id(form_id: str, visit_code: str | None, instance: int = 1) -> str:
    """How the audit trail names a form record: "{visit}/{form}" or "#{instance}/{form}"."""
    return f"{visit_code}/{form_id}" if visit_code else f"#{instance}/{form_id}"


def stored_text(value: str | None, missing: str | None) -> str | None:
    """A stored value as the audit trail writes it: the canonical text, or [missing: CODE]."""
    if missing:
        return f"[missing: {missing}]"
    return value


def _derived_text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


@dataclass
class FormView:
    form: FormDef
    record: FormRecord | None
    visit: VisitRecord | None
    values: dict[str, str] = field(default_factory=dict)  # canonical text by field id (entered and derived)
    missing: dict[str, str] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return self.record.status if self.record else "not_started"


def _form_for(proto: Protocol, form_id: str) -> FormDef:
    try:
        return proto.form(form_id)
    except KeyError:
        raise NotFound(f"the protocol has no form {form_id!r}") from None


def _check_may_enter(actor: Actor, form: FormDef) -> None:
    actor.require(*EDITORS)
    if actor.role is Role.ASSESSOR and not actor.console and not form.outcome:
        raise PermissionDenied(f"outcome assessors enter outcome forms only; {form.title} is not one")


def _locate(session: Session, proto: Protocol, participant: Participant, form: FormDef, visit_code: str | None,
            instance: int | None, *, lock: bool) -> tuple[VisitRecord | None, FormRecord | None, int]:
    visit = None
    if form.kind == "anytime":
        if visit_code:
            raise ValidationFailed({"visit": f"{form.title} is an any-time form, not part of a visit"})
        stmt = select(FormRecord).where(FormRecord.participant_id == participant.id, FormRecord.visit_id.is_(None),
                                        FormRecord.form_id == form.id)
        if instance is None:  # a new instance
            count = len(session.scalars(stmt).all())
            return None, None, count + 1
        stmt = stmt.where(FormRecord.instance == instance)
    else:
        if not visit_code:
            raise ValidationFailed({"visit": f"{form.title} belongs to a visit; name the visit"})
        visit = visits.get_visit(session, participant, visit_code)
        if form.id not in visits.visit_forms(proto, visit):
            raise NotFound(f"visit {visit_code} has no form {form.id!r}")
        stmt = select(FormRecord).where(FormRecord.participant_id == participant.id, FormRecord.visit_id == visit.id,
                                        FormRecord.form_id == form.id)
        instance = 1
    record = session.scalar(stmt.with_for_update() if lock else stmt)
    if record is None and form.kind == "anytime" and instance is not None:
        raise NotFound(f"{participant.code} has no {form.title} #{instance}")
    return visit, record, instance


# The statements of a save are built once: building a select with its joins cost more than running it.
def _entry_statement(with_visit: bool):
    stmt = (select(Participant, Trial, trials.current_sha_column(Participant.trial_id))
            .join(Trial, Trial.id == Participant.trial_id)
            .where(Participant.trial_id == bindparam("trial_id"), Participant.code == bindparam("code")))
    if with_visit:
        stmt = stmt.add_columns(VisitRecord).outerjoin(VisitRecord, and_(
            VisitRecord.participant_id == Participant.id, VisitRecord.code == bindparam("visit_code")))
    return stmt.with_for_update(of=Participant)


_ENTRY, _ENTRY_WITH_VISIT = _entry_statement(False), _entry_statement(True)
# The form records of a visit (locked), with the stored values of one of them.
_VISIT_RECORDS = (select(FormRecord, FormValue)
                  .outerjoin(FormValue, and_(FormValue.record_id == FormRecord.id,
                                             FormRecord.form_id == bindparam("form_id")))
                  .where(FormRecord.participant_id == bindparam("participant_id"),
                         FormRecord.visit_id == bindparam("visit_id"))
                  .with_for_update(of=FormRecord))
# PostgreSQL: the same rows with the participant's audit chain head, locked in the same statement (the records
# are locked first, inside the lateral subquery, then the head, the order audit.record would take them in), so
# the save's audit entries need no round trip of their own to lock it. No row: the chain has no head yet.
# Textual, with its result columns named: an aliased() entity over a lateral subquery raised NoSuchColumnError
# now and then when two threads of a new worker ran it first at the same time (tests/e2e/test_resilience_kill).
def _visit_records_and_head():
    record, value = FormRecord.__table__, FormValue.__table__
    columns = [f"{t.name}.{c.name}" for t in (record, value) for c in t.c]
    sql = (f"SELECT x.*, h.chain_seq, h.hash FROM audit_chain_head AS h LEFT JOIN LATERAL ("  # noqa: S608
           f"SELECT {', '.join(columns)} FROM form_record LEFT JOIN form_value "
           "ON form_value.record_id = form_record.id AND form_record.form_id = :form_id "
           "WHERE form_record.participant_id = :participant_id AND form_record.visit_id = :visit_id "
           "FOR UPDATE OF form_record) AS x ON true WHERE h.chain = :chain FOR UPDATE OF h")  # (constant names)
    head = ChainHead.__table__
    textual = text(sql).columns(*record.c, *value.c, head.c.chain_seq, head.c.hash)
    return select(FormRecord, FormValue, ChainHead.chain_seq, ChainHead.hash).from_statement(textual)


_VISIT_RECORDS_AND_HEAD = _visit_records_and_head()


_INSERT_VALUE = insert(FormValue.__table__)
_UPDATE_VALUE = (update(FormValue.__table__)
                 .where(FormValue.record_id == bindparam("b_record"), FormValue.field_id == bindparam("b_field"))
                 .values(value=bindparam("value"), missing_code=bindparam("missing_code")))


_INSERT_RECORD = insert(FormRecord.__table__).returning(FormRecord.__table__.c.id)
_RECORD_COLUMNS = ("status", "version", "updated_at", "updated_by", "sdv_at", "sdv_by", "serious")
_UPDATE_RECORD = (update(FormRecord.__table__).where(FormRecord.id == bindparam("b_id"))
                  .values({name: bindparam(name) for name in _RECORD_COLUMNS}))


# PostgreSQL: a new record with its values, and a changed record with its new and changed values, each in one
# statement (data-modifying CTEs; the values travel as arrays). SQLite takes the statements above one by one.
_VALUE_ARRAYS = {"field": ARRAY(String), "value": ARRAY(Text), "missing": ARRAY(String), "derived": ARRAY(Boolean)}


def _arrays(prefix: str, rows: list[tuple]) -> dict[str, list]:
    """Columns of value rows (field, value, missing code[, derived]) as arrays named {prefix}_field, ..."""
    names = ("field", "value", "missing", "derived")
    columns = list(zip(*rows, strict=True)) if rows else [()] * (4 if prefix == "i" else 3)
    return {f"{prefix}_{name}": list(col) for name, col in zip(names, columns, strict=False)}


def _typed(stmt, prefixes: str):
    binds = [bindparam(f"{p}_{name}", type_=t) for p in prefixes for name, t in _VALUE_ARRAYS.items()
             if not (p == "u" and name == "derived")]
    binds += [bindparam(n, type_=FormRecord.__table__.c[n].type) for n in ("created_at", "updated_at", "sdv_at")
              if f":{n}" in stmt]
    return text(stmt).bindparams(*binds)


_INSERT_NEW_VALUES = """
    INSERT INTO form_value (record_id, field_id, value, missing_code, derived)
    SELECT {record}, v.field_id, v.value, v.missing_code, v.derived
    FROM unnest(CAST(:i_field AS varchar[]), CAST(:i_value AS text[]), CAST(:i_missing AS varchar[]),
                CAST(:i_derived AS boolean[])) AS v(field_id, value, missing_code, derived)"""
_PG_CREATE = _typed(f"""
WITH rec AS (
    INSERT INTO form_record (trial_id, participant_id, visit_id, form_id, instance, status, version, created_at,
                             updated_at, updated_by, sdv_at, sdv_by, locked, serious)
    VALUES (:trial_id, :participant_id, :visit_id, :form_id, :instance, :status, :version, :created_at,
            :updated_at, :updated_by, :sdv_at, :sdv_by, :locked, :serious)
    RETURNING id),
ins AS ({_INSERT_NEW_VALUES.format(record="(SELECT id FROM rec)")})
SELECT id FROM rec""", "i")  # noqa: S608  (constant SQL; every value is a bound parameter)
_PG_UPDATE = _typed(f"""
WITH rec AS (
    UPDATE form_record SET status = :status, version = :version, updated_at = :updated_at,
                           updated_by = :updated_by, sdv_at = :sdv_at, sdv_by = :sdv_by, serious = :serious
    WHERE id = :b_id),
ins AS ({_INSERT_NEW_VALUES.format(record=":b_id")})
UPDATE form_value SET value = u.value, missing_code = u.missing_code
FROM unnest(CAST(:u_field AS varchar[]), CAST(:u_value AS text[]), CAST(:u_missing AS varchar[]))
     AS u(field_id, value, missing_code)
WHERE form_value.record_id = :b_id AND form_value.field_id = u.field_id""", "iu")  # noqa: S608


def participant_for_entry(session: Session, actor: Actor, trial_id: str, code: str,
                          visit_code: str | None = None) -> Participant:
    """enrollment.get_participant(..., lock=True) for data entry, in one round trip.

    The participant's row is locked (FOR UPDATE OF participant: data entry on one participant is serialized, as
    with get_participant) and read together with its trial, the hash of the trial's current protocol and the
    visit named. The session keeps them for save_form: trials.get_trial finds the trial in the identity map
    (its data state is checked there), trials.current_protocol the hash, visits.get_visit the visit.
    """
    params = {"trial_id": trial_id, "code": code, "visit_code": visit_code}
    row = session.execute(_ENTRY_WITH_VISIT if visit_code else _ENTRY, params).first()
    if row is None or not actor.sees_site(row[0].site_code):
        raise NotFound(f"no participant {code!r} at your sites")
    trials.remember(session, row[1], row[2])
    if visit_code and row[3] is not None:
        visits.remember_visit(session, row[3])
    return row[0]


_Located = tuple[VisitRecord | None, FormRecord | None, int, dict[str, FormValue], dict[str, str] | None]


def _locate_for_save(session: Session, proto: Protocol, participant: Participant, form: FormDef,
                     visit_code: str | None, instance: int | None) -> _Located:
    """_locate(lock=True), the record's stored values and, for a visit form, the status of each form of the
    visit: for a visit form all in one query, which locks the visit's form records (the participant's row is
    locked by the callers already, so this adds no waiting between data entry on different participants)."""
    if form.kind == "anytime":
        visit, record, instance = _locate(session, proto, participant, form, visit_code, instance, lock=True)
        old_rows = {} if record is None else {
            v.field_id: v for v in session.scalars(select(FormValue).where(FormValue.record_id == record.id))}
        return visit, record, instance, old_rows, None
    if not visit_code:
        raise ValidationFailed({"visit": f"{form.title} belongs to a visit; name the visit"})
    visit = visits.get_visit(session, participant, visit_code)
    if form.id not in visits.visit_forms(proto, visit):
        raise NotFound(f"visit {visit_code} has no form {form.id!r}")
    params = {"form_id": form.id, "participant_id": participant.id, "visit_id": visit.id}
    rows = None
    if session.get_bind().dialect.name == "postgresql":
        chain = audit.chain_name(participant.trial_id, participant.code)
        found = session.execute(_VISIT_RECORDS_AND_HEAD, {**params, "chain": chain}).all()
        if found:  # (the chain has a head once the participant is enrolled)
            audit.adopt_locked_head(session, chain, found[0][2], found[0][3])
            rows = [(rec, value) for rec, value, _, _ in found if rec is not None]
    if rows is None:
        rows = session.execute(_VISIT_RECORDS, params).all()
    record, old_rows, statuses = None, {}, {}
    for rec, value in rows:
        statuses[rec.form_id] = rec.status
        if rec.form_id == form.id:
            record = rec
            if value is not None:
                old_rows[value.field_id] = value
    return visit, record, 1, old_rows, statuses


def read_form(session: Session, actor: Actor, participant: Participant, form_id: str, visit_code: str | None = None,
              instance: int | None = 1) -> FormView:
    proto = trials.current_protocol(session, participant.trial_id)
    form = _form_for(proto, form_id)
    visit, record, _ = _locate(session, proto, participant, form, visit_code, instance, lock=False)
    view = FormView(form, record, visit)
    if record is not None:
        for v in session.scalars(select(FormValue).where(FormValue.record_id == record.id)):
            if v.missing_code:
                view.missing[v.field_id] = v.missing_code
            elif v.value is not None:
                view.values[v.field_id] = v.value
    return view


@dataclass(frozen=True)
class SaveResult:
    record: FormRecord
    changed: list[str]
    queries_opened: list[int]
    deviation_created: bool
    view: FormView | None = None  # the form as stored now, so callers need not read it back


def save_form(session: Session, actor: Actor, participant: Participant, form_id: str, raw: dict, *,
              visit_code: str | None = None, instance: int | None = None, missing: dict | None = None,
              status: str = "complete", reason: str | None = None, visit_date=None,
              expected_version: int | None = None) -> SaveResult:
    """Validate and store a form. Every changed value gets its audit entry; a changed saved value needs a
    reason; a change clears source data verification; nothing is written unless everything is valid."""
    from trialmgr.services import edit_checks

    proto = trials.current_protocol(session, participant.trial_id)
    form = _form_for(proto, form_id)
    _check_may_enter(actor, form)
    trials.require_open(session, participant.trial_id)
    if participant.locked:
        raise DataLocked(f"the data of {participant.code} are locked")
    if status not in STATUSES:
        raise ValidationFailed({"status": f"must be one of {', '.join(STATUSES)}"})
    if participant.status in (ParticipantStatus.WITHDRAWN,) and form.kind != "anytime":
        raise Conflict(f"{participant.code} has withdrawn; no more visit data can be entered")
    visit, record, instance, old_rows, statuses = _locate_for_save(session, proto, participant, form, visit_code,
                                                                   instance)
    if visit is not None and visit.code != "BL" and visit.scheduled and participant.randomized_at is None:
        raise Conflict(f"{participant.code} is not randomized yet: only baseline can be entered")
    if record is not None and record.locked:
        raise DataLocked(f"{form.title} of {participant.code} is locked")
    if record is not None and expected_version is not None and record.version != expected_version:
        raise Conflict(f"{form.title} of {participant.code} was changed by {record.updated_by} since you opened it; "
                       "reload it to see the current values")
    when = None
    if visit is not None:
        when = _visit_date(visit, visit_date)
    today = visits.today()
    result = crflib.validate_form(form, raw, missing=missing or {}, partial=(status == "draft"),
                                  reference_date=when or today, latest=today)
    if result.errors:
        raise ValidationFailed(result.errors)
    if status == "complete" and not result.complete:
        raise ValidationFailed({"status": "the form is not complete: fill every required field or give a reason "
                                          "it is missing, or save it as a draft"})

    new: dict[str, tuple[str | None, str | None, bool]] = {}  # field -> (value text, missing code, derived)
    for spec in form.fields:
        if spec.id in result.missing:
            new[spec.id] = (None, result.missing[spec.id], False)
        elif spec.id in result.values:
            new[spec.id] = (crflib.serialize_value(spec, result.values[spec.id]), None, False)
    derived_ids = {d.id for d in form.derived}
    for d in form.derived:
        text = _derived_text(result.derived.get(d.id))
        if text is not None:
            new[d.id] = (text, None, True)

    changes: dict[str, tuple[str | None, str | None]] = {}
    for name in sorted(set(new) | set(old_rows)):
        before = stored_text(old_rows[name].value, old_rows[name].missing_code) if name in old_rows else None
        after = stored_text(*new[name][:2]) if name in new else None
        if before != after:
            changes[name] = (before, after)
    entered_changes = [n for n, (b, _) in changes.items() if b is not None and n not in derived_ids]
    if entered_changes and not (reason and reason.strip()):
        raise ReasonRequired("a reason for change is required to change saved values: " + ", ".join(entered_changes))

    # What the save writes: new value rows, changed value rows (both written below in one statement with the
    # record on PostgreSQL), rows of values no longer given (deleted at commit).
    added = [(name, *new[name]) for name in changes if name in new and name not in old_rows]
    altered = [(name, *new[name][:2]) for name in changes if name in new and name in old_rows]
    conn = session.connection()
    pg = conn.dialect.name == "postgresql"
    creating = record is None
    if creating:
        # Written whole in one INSERT with its values: no UPDATE of the same row follows.
        now = utcnow()
        columns = {"trial_id": participant.trial_id, "participant_id": participant.id,
                   "visit_id": visit.id if visit else None, "form_id": form.id, "instance": instance,
                   "status": status, "version": 1, "created_at": now, "updated_at": now,
                   "updated_by": actor.username, "sdv_at": None, "sdv_by": None, "locked": False,
                   "serious": form.id == "adverse_event" and result.values.get("serious") is True}
        if pg:
            record_id = conn.execute(_PG_CREATE, {**columns, **_arrays("i", added)}).scalar_one()
        else:
            record_id = conn.execute(_INSERT_RECORD, columns).scalar_one()
            if added:
                conn.execute(_INSERT_VALUE, [{"record_id": record_id, "field_id": n, "value": v, "missing_code": m,
                                              "derived": d} for n, v, m, d in added])
        record = FormRecord(id=record_id, **columns)
        make_transient_to_detached(record)  # as if loaded: in the session, nothing left to flush
        session.add(record)

    eid = entity_id(form.id, visit.code if visit else None, instance)
    action = "form:create" if creating else "form:update"
    common = {"trial": participant.trial_id, "participant": participant.code}
    clean_reason = reason.strip() if reason else None
    for name, (before, after) in changes.items():
        audit.record(session, actor, action, "form", eid, field=name, old=before, new=after,
                     reason=clean_reason if before is not None else None, **common)
        if name not in new:
            session.delete(old_rows[name])
    if creating:
        audit.record(session, actor, action, "form", eid, field="_status", old=None, new=status, **common)
    else:
        changed_cols: dict = {}
        if record.status != status:
            audit.record(session, actor, action, "form", eid, field="_status", old=record.status, new=status,
                         **common)
            changed_cols["status"] = status
        if changes and record.sdv_at is not None:
            audit.record(session, actor, "sdv:clear", "form", eid, field="_sdv", old=f"verified by {record.sdv_by}",
                         new=None, reason="a value changed after verification", **common)
            changed_cols.update(sdv_at=None, sdv_by=None)
        if changes:
            changed_cols.update(version=(record.version or 0) + 1, updated_at=utcnow(), updated_by=actor.username)
        if form.id == "adverse_event" and record.serious != (result.values.get("serious") is True):
            changed_cols["serious"] = result.values.get("serious") is True
        if changed_cols:  # (any changed value changes the record's version)
            params = {"b_id": record.id, **{name: changed_cols.get(name, getattr(record, name))
                                            for name in _RECORD_COLUMNS}}
            if pg:  # the record, its new values and its changed values in one statement
                conn.execute(_PG_UPDATE, {**params, **_arrays("i", added), **_arrays("u", altered)})
            else:
                conn.execute(_UPDATE_RECORD, params)
                if added:
                    conn.execute(_INSERT_VALUE, [{"record_id": record.id, "field_id": n, "value": v,
                                                  "missing_code": m, "derived": d} for n, v, m, d in added])
                if altered:
                    conn.execute(_UPDATE_VALUE, [{"b_record": record.id, "b_field": n, "value": v,
                                                  "missing_code": m} for n, v, m in altered])
            # The loaded rows say what the database now holds (nothing is left for the unit of work to flush).
            for name, value in changed_cols.items():
                set_committed_value(record, name, value)
            for name, value, missing_code in altered:
                set_committed_value(old_rows[name], "value", value)
                set_committed_value(old_rows[name], "missing_code", missing_code)
    # No flush here: the changes, and the audit entries describing them, are written together at the next
    # query (autoflush) or at commit, in the same transaction.
    notify.form_saved(session, actor, participant, record)  # a serious adverse event mails the investigators

    deviation = False
    if visit is not None:
        if statuses is not None:
            statuses[form.id] = status
        deviation = _update_visit(session, actor, proto, participant, visit, when, statuses)
    if form.id == "withdrawal" and status == "complete":
        _apply_withdrawal(session, actor, participant, result.values.get("type"))
    opened = edit_checks.run(session, actor, proto, participant, record, visit, result) if changes else []
    view = FormView(form, record, visit,
                    values={k: v[0] for k, v in new.items() if v[0] is not None},
                    missing={k: v[1] for k, v in new.items() if v[1]})
    return SaveResult(record, list(changes), opened, deviation, view)


def _visit_date(visit: VisitRecord, raw) -> dt.date:
    if raw in (None, ""):
        return visit.visit_date or visits.today()
    try:
        when = raw if isinstance(raw, dt.date) else dt.date.fromisoformat(str(raw).strip())
    except ValueError:
        raise ValidationFailed({"visit_date": "is not a valid date (YYYY-MM-DD)"}) from None
    if when > visits.today():
        raise ValidationFailed({"visit_date": "must not be in the future"})
    return when


def _update_visit(session: Session, actor: Actor, proto: Protocol, participant: Participant, visit: VisitRecord,
                  when: dt.date, statuses: dict[str, str] | None = None) -> bool:
    """The visit's date and completeness after a save; `statuses` (form id -> status of each form record of
    the visit, as saved now) when the caller has them, else they are read."""
    common = {"trial": participant.trial_id, "participant": participant.code}
    if visit.visit_date != when:
        audit.record(session, actor, "visit:update", "visit", visit.code, field="visit_date",
                     old=visit.visit_date.isoformat() if visit.visit_date else None, new=when.isoformat(), **common)
        visit.visit_date = when
    if statuses is None:
        statuses = dict(session.execute(select(FormRecord.form_id, FormRecord.status).where(
            FormRecord.visit_id == visit.id)).all())
    complete = all(statuses.get(f) == "complete" for f in visits.visit_forms(proto, visit)) if visit.scheduled \
        else bool(statuses) and all(s == "complete" for s in statuses.values())
    if complete != visit.complete:
        audit.record(session, actor, "visit:update", "visit", visit.code, field="complete",
                     old=str(visit.complete).lower(), new=str(complete).lower(), **common)
        visit.complete = complete
    w = visits.window_of(visit)
    if complete and w is not None and not w.contains(when) and not visit.deviation_recorded:
        visit.deviation_recorded = True
        _record_window_deviation(session, actor, participant, visit, w, when)
        return True
    return False


def _record_window_deviation(session: Session, actor: Actor, participant: Participant, visit: VisitRecord, w,
                             when: dt.date) -> None:
    """A visit completed out of its window records a protocol deviation by itself (category visit window)."""
    from trialmgr.services.context import SYSTEM

    system = Actor(username=SYSTEM.username, role=None, trial=participant.trial_id, full_name=SYSTEM.full_name,
                   request_id=actor.request_id, client_addr=SYSTEM.client_addr, console=True)
    days = (when - w.end).days if when > w.end else (w.start - when).days
    side = "after" if when > w.end else "before"
    save_form(session, system, participant, "deviation", {
        "deviation_date": when.isoformat(), "category": "visit_window", "major": "no",
        "description": f"Visit {visit.code} done on {when.isoformat()}, {days} day(s) {side} its window "
                       f"({w.describe()}). Recorded automatically.",
        "corrective_action": "Review scheduling with the site.",
    }, status="complete")


def _apply_withdrawal(session: Session, actor: Actor, participant: Participant, kind: str | None) -> None:
    target = WITHDRAWAL_STATUS.get(kind or "")
    if target is None or participant.status == target:
        return
    audit.record(session, actor, "participant:update", "participant", participant.code, trial=participant.trial_id,
                 participant=participant.code, field="status", old=participant.status.value, new=target.value,
                 reason=f"withdrawal form: {kind}")
    participant.status = target


# -- source data verification ---------------------------------------------------------------------------------


def verify_source(session: Session, actor: Actor, participant: Participant, form_id: str,
                  visit_code: str | None = None, instance: int | None = 1) -> FormRecord:
    """A monitor marks a form as checked against the source documents; any later change clears the mark."""
    actor.require(Role.MONITOR)
    trials.require_not_locked(session, participant.trial_id)
    if participant.locked:
        raise DataLocked(f"the data of {participant.code} are locked")
    proto = trials.current_protocol(session, participant.trial_id)
    form = _form_for(proto, form_id)
    visit, record, instance = _locate(session, proto, participant, form, visit_code, instance, lock=True)
    if record is None or record.status != "complete":
        raise Conflict("only a complete form can be source-verified")
    if record.sdv_at is None:
        record.sdv_at, record.sdv_by = utcnow(), actor.username
        audit.record(session, actor, "sdv:verify", "form", entity_id(form.id, visit.code if visit else None, instance),
                     trial=participant.trial_id, participant=participant.code, field="_sdv",
                     new=f"verified by {actor.username}")
    return record
