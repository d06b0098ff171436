"""E-mail notifications to the trial's investigators, queued in the outbox (table ``notification``).

A notification is queued in the same transaction as the change that causes it (an adverse event saved as
serious, an allocation list running low or out) and sent only after that transaction commits
(trialmgr.outbox), so a mail server that is slow or down can neither block nor undo the change; a rolled-back
change leaves no message behind. Each event is queued once (``dedup_key``), however often it is seen.

Recipients: every active user with the investigator role in the trial who has an e-mail address, fixed when
the message is queued. The messages carry participant codes and counts, never an arm.

Hooks called from other services (one line each):
- services/crf.py save_form: ``notify.form_saved(session, actor, participant, record)``
- services/randomization.py randomize: ``notify.allocation_taken(session, settings, trial_id, lst, cursor)``
The overdue primary-endpoint visit check runs from ``trialmgr notify overdue`` (cron; see trialmgr.outbox).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from trialmgr.config import Settings
from trialmgr.db.base import utcnow
from trialmgr.db.models_accounts import RoleAssignment, User
from trialmgr.db.models_crf import FormRecord, FormValue
from trialmgr.db.models_notify import Notification
from trialmgr.db.models_trial import AllocationList, Participant, StratumCursor
from trialmgr.domain.vocab import Role
from trialmgr.services import trials
from trialmgr.services.context import Actor

SESSION_FLAG = "trialmgr.outbox"  # set on a session that queued mail; the after-commit hook looks for it
AE_FORM = "adverse_event"


def recipients(session: Session, trial: str) -> list[str]:
    rows = session.scalars(select(User.email).join(RoleAssignment, RoleAssignment.user_id == User.id).where(
        RoleAssignment.trial_id == trial, RoleAssignment.role == Role.INVESTIGATOR, User.active.is_(True),
        User.email.is_not(None)).distinct())
    return sorted({e.strip() for e in rows if e and e.strip() and "@" in e})


def _one_line(text: str, limit: int = 300) -> str:
    """Header-safe: no CR/LF can reach a Subject line."""
    return " ".join(text.split())[:limit]


def enqueue(session: Session, trial: str, kind: str, dedup_key: str, subject: str, body: str) -> bool:
    """Queue one message for the trial's investigators; False if this event was queued before.

    INSERT ... ON CONFLICT DO NOTHING on the dedup key, so two transactions seeing the same event queue it once
    and neither fails.
    """
    to = recipients(session, trial)
    conn = session.connection()
    ins = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(Notification.__table__)
    now = utcnow()
    values = {"trial_id": trial, "kind": kind, "dedup_key": dedup_key[:200], "recipients": ",".join(to),
              "subject": _one_line(f"[trialmgr {trial}] {subject}"), "body": body,
              "status": "pending" if to else "skipped", "attempts": 0, "created_at": now, "next_attempt_at": now,
              "last_error": None if to else "no active investigator of the trial has an e-mail address"}
    stmt = ins.values(**values).on_conflict_do_nothing(index_elements=["dedup_key"])
    # RETURNING tells whether a row went in; rowcount does not, on every driver.
    queued = conn.execute(stmt.returning(Notification.__table__.c.id)).first() is not None
    if queued and to:
        session.info[SESSION_FLAG] = True
    return queued


# -- (a) serious adverse event ------------------------------------------------------------------------------

def form_saved(session: Session, actor: Actor, participant: Participant, record: FormRecord) -> bool:
    """Hook after a form is saved: an adverse event marked serious is reported to the investigators at once
    (as a draft too: the 24-hour SAE clock starts when the site knows, not when the form is complete)."""
    if record.form_id != AE_FORM or not record.serious:
        return False
    proto = trials.current_protocol(session, participant.trial_id)
    form = proto.form(AE_FORM)
    values = {v.field_id: v.value for v in session.scalars(select(FormValue).where(FormValue.record_id == record.id))}
    lines = [f"A serious adverse event was recorded in trial {participant.trial_id}.", "",
             f"Participant: {participant.code} (site {participant.site_code})",
             f"Adverse event: #{record.instance} ({record.status})"]
    for spec in form.fields:
        value = values.get(spec.id)
        if value:
            label = dict((c.code, c.label) for c in (spec.choices or ()))
            shown = "; ".join(label.get(part, part) for part in value.split(";")) if label else value
            lines.append(f"{spec.label}: {shown}")
    lines += [f"Entered by: {actor.full_name or actor.username} at {utcnow():%Y-%m-%d %H:%M} UTC", "",
              f"Open it in trialmgr: /t/{participant.trial_id}/participants/{participant.code}"]
    return enqueue(session, participant.trial_id, "serious_adverse_event", f"{participant.trial_id}:sae:{record.id}",
                   f"Serious adverse event: {participant.code} (AE #{record.instance})", "\n".join(lines))


# -- (b) allocation list running low or exhausted -----------------------------------------------------------

def allocation_taken(session: Session, settings: Settings, trial: str, lst: AllocationList,
                     cursor: StratumCursor) -> bool:
    """Hook after a slot is taken: warn once when a stratum reaches the low mark, and once when it runs out."""
    left = cursor.total - cursor.next_seq + 1
    if left <= 0:
        kind, subject = "list_exhausted", f"Allocation list exhausted in stratum {cursor.stratum}"
        text = (f"The allocation list {lst.number} of trial {trial} has no slots left in stratum {cursor.stratum} "
                f"({cursor.total} used). Nobody more can be randomized in this stratum until a new list is "
                "generated or imported.")
    elif left <= settings.list_low_warning:
        kind, subject = "list_low", f"Allocation list running low in stratum {cursor.stratum}"
        text = (f"The allocation list {lst.number} of trial {trial} has {left} slot(s) left in stratum "
                f"{cursor.stratum} ({cursor.total - left} of {cursor.total} used; warning level "
                f"{settings.list_low_warning}).")
    else:
        return False
    body = text + f"\n\nList status: /t/{trial}/randomization"
    return enqueue(session, trial, kind, f"{trial}:{kind}:{lst.number}:{cursor.stratum}", subject, body)


# -- (c) overdue primary-endpoint visit ---------------------------------------------------------------------

def overdue_primary_visits(session: Session, trial: str, today: dt.date | None = None) -> int:
    """Queue one message per overdue primary-endpoint visit not reported before; returns how many."""
    from trialmgr import clock
    from trialmgr.services import reports

    today = today or clock.today()
    queued = 0
    for d in reports.overdue_primary_visits(session, trial, today):
        body = (f"The primary-endpoint visit {d.visit} ({d.label}) of participant {d.participant} (site {d.site}) "
                f"is overdue: its window was {d.window_start.isoformat()} to {d.window_end.isoformat()} and "
                f"nothing has been recorded.\nForms still to enter: {', '.join(d.pending_forms) or 'none'}.\n\n"
                f"Open it in trialmgr: /t/{trial}/participants/{d.participant}")
        queued += enqueue(session, trial, "primary_visit_overdue", f"{trial}:overdue:{d.participant}:{d.visit}",
                          f"Primary-endpoint visit overdue: {d.participant} {d.visit}", body)
    return queued


def outbox_counts(session: Session, trial: str) -> dict[str, int]:
    from sqlalchemy import func

    return dict(session.execute(select(Notification.status, func.count()).where(Notification.trial_id == trial)
                                .group_by(Notification.status)).all())


def failed(session: Session, trial: str, limit: int = 10) -> list[Notification]:
    return list(session.scalars(select(Notification).where(Notification.trial_id == trial,
                                                           Notification.status.in_(("failed", "skipped")))
                                .order_by(Notification.created_at.desc()).limit(limit)))
