"""Data tables checked against the audit trail: a direct UPDATE that bypassed the app is caught here.

Each stored value must equal the newest value the audit trail recorded for it. Checkers for each kind of
record register themselves in CHECKS; `trialmgr audit verify` and the monitor's integrity status run them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sqlalchemy.orm import Session

Check = Callable[[Session, str | None], Iterable[str]]
CHECKS: list[Check] = []


def register(check: Check) -> Check:
    CHECKS.append(check)
    return check


def check_data(session: Session, trial: str | None = None, limit: int = 100) -> list[str]:
    problems: list[str] = []
    for check in CHECKS:
        for line in check(session, trial):
            problems.append(line)
            if len(problems) >= limit:
                return problems
    return problems


@register
def _accounts(session: Session, trial: str | None) -> Iterable[str]:
    """User names, e-mail addresses and active flags equal what the audit trail last recorded."""
    from sqlalchemy import select

    from trialmgr.db.models_accounts import User
    from trialmgr.db.models_audit import AuditEntry

    if trial is not None:
        return  # accounts are instance-wide; a trial's verification covers its own records
    fields = ("full_name", "email", "active")
    latest: dict[tuple[str, str], str | None] = {}
    rows = session.execute(select(AuditEntry.entity_id, AuditEntry.field, AuditEntry.new_value)
                           .where(AuditEntry.entity_type == "user", AuditEntry.field.in_(fields))
                           .order_by(AuditEntry.seq))
    for entity_id, field, new in rows:
        latest[(entity_id, field)] = new
    for user in session.scalars(select(User).order_by(User.id)):
        stored = {"full_name": user.full_name, "email": user.email, "active": str(user.active).lower()}
        for field in fields:
            audited = latest.get((user.username, field), "true" if field == "active" else None)
            if stored[field] != audited:
                yield (f"user {user.username}: {field} is {stored[field]!r} in the database but the audit trail "
                       f"last recorded {audited!r} (changed outside the application)")


@register
def _form_values(session: Session, trial: str | None) -> Iterable[str]:
    """Every stored form value equals the newest value the audit trail recorded for it."""
    from sqlalchemy import select

    from trialmgr.db.models_audit import AuditEntry
    from trialmgr.db.models_crf import FormRecord, FormValue, VisitRecord
    from trialmgr.db.models_trial import Participant
    from trialmgr.services.crf import entity_id, stored_text

    latest: dict[tuple[str, str, str], str | None] = {}
    stmt = (select(AuditEntry.participant, AuditEntry.entity_id, AuditEntry.field, AuditEntry.new_value)
            .where(AuditEntry.entity_type == "form").order_by(AuditEntry.seq))
    if trial is not None:
        stmt = stmt.where(AuditEntry.trial == trial)
    for participant, eid, field, new in session.execute(stmt):
        if not field.startswith("_"):  # _status, _sdv: record state, not stored values
            latest[(participant, eid, field)] = new
    stmt = (select(Participant.code, VisitRecord.code, FormRecord.form_id, FormRecord.instance, FormValue)
            .join(FormRecord, FormRecord.id == FormValue.record_id)
            .join(Participant, Participant.id == FormRecord.participant_id)
            .outerjoin(VisitRecord, VisitRecord.id == FormRecord.visit_id))
    if trial is not None:
        stmt = stmt.where(FormRecord.trial_id == trial)
    seen = set()
    for code, visit_code, form_id, instance, fv in session.execute(stmt):
        key = (code, entity_id(form_id, visit_code, instance), fv.field_id)
        seen.add(key)
        stored = stored_text(fv.value, fv.missing_code)
        if latest.get(key, "\0absent") != stored:
            yield (f"{code} {key[1]} {fv.field_id}: stored value {stored!r} differs from the audit trail's "
                   f"{latest.get(key)!r} (changed outside the application)")
    for key, value in latest.items():
        if key not in seen and value is not None:
            yield f"{key[0]} {key[1]} {key[2]}: the audit trail records {value!r} but no value is stored (deleted)"
