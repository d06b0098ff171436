"""Sending the e-mail outbox (services.notify queues; this module delivers), after the commit, never inside it.

How a message travels:

1. A service queues it in the same transaction as the change (``notification`` row, status ``pending``) and
   marks the session. When that session commits, an SQLAlchemy ``after_commit`` hook notes it; at the end of
   the web or API request the app's dispatcher is woken. A rolled-back change never wakes it and leaves no row.
2. The dispatcher is one daemon thread per process, started on first use (so after gunicorn forks). It claims
   due rows in a short transaction (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite serializes writers),
   pushing ``next_attempt_at`` out by a lease so a crash mid-send means a later retry, not a loss; it then
   talks SMTP with no transaction open and records the outcome in another short transaction.
3. A failed send is retried with backoff (RETRY_DELAYS); after MAX_ATTEMPTS tries the row is ``failed`` and
   shows on the investigator's and administrator's home pages. Nothing here can raise into a request.
4. ``trialmgr notify send`` delivers whatever is due (cron, as a backstop for messages queued from the console);
   ``trialmgr notify overdue`` queues overdue primary-endpoint visits and sends them (cron, daily).

Under tests (``settings.testing``) the dispatcher sends inline at the end of the request instead of in a thread,
because the test database is one shared connection.
With ``smtp_host`` empty, notifications are switched off: due rows are marked ``skipped`` and nothing is sent.
"""

from __future__ import annotations

import datetime as dt
import logging
import smtplib
import threading
import time
from email.message import EmailMessage
from email.utils import make_msgid

import click
from flask import Flask, current_app, g, has_app_context, has_request_context
from flask.cli import AppGroup
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from trialmgr.config import Settings
from trialmgr.db import Database
from trialmgr.db.base import utcnow
from trialmgr.db.models_notify import Notification
from trialmgr.services.notify import SESSION_FLAG

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
RETRY_DELAYS = (30, 120, 600, 1800)  # seconds after attempt 1, 2, 3, 4
LEASE_SECONDS = 300  # a claimed row is retried after this if its sender died mid-send
SMTP_TIMEOUT = 10
POLL_SECONDS = 60  # an idle web process looks for due rows (queued elsewhere, or retries) at most this often
BATCH = 50
EXTENSION = "trialmgr.outbox"


def retry_delay(attempts: int) -> dt.timedelta:
    return dt.timedelta(seconds=RETRY_DELAYS[min(attempts, len(RETRY_DELAYS)) - 1])


def _message(settings: Settings, row: Notification) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = settings.mail_from
    msg["To"] = row.recipients.replace(",", ", ")
    msg["Subject"] = row.subject
    msg["Message-ID"] = make_msgid(idstring=f"trialmgr-{row.id}")  # one id per send: receivers see each try
    msg["X-Trialmgr-Notification"] = f"{row.trial_id}/{row.id}"
    msg.set_content(row.body)
    return msg


def send_one(settings: Settings, row: Notification) -> None:
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=SMTP_TIMEOUT) as smtp:
        smtp.send_message(_message(settings, row), to_addrs=row.recipients.split(","))


def _claim(db: Database, now: dt.datetime, limit: int) -> list[Notification]:
    with db.session() as s:
        stmt = (select(Notification).where(Notification.status == "pending", Notification.next_attempt_at <= now)
                .order_by(Notification.next_attempt_at, Notification.id).limit(limit))
        if not db.is_sqlite:
            stmt = stmt.with_for_update(skip_locked=True)
        rows = list(s.scalars(stmt))
        for row in rows:
            row.attempts += 1
            row.next_attempt_at = now + dt.timedelta(seconds=LEASE_SECONDS)
        s.flush()
        s.expunge_all()
        return rows


def _record(db: Database, row_id: int, *, error: str | None, now: dt.datetime) -> str:
    with db.session() as s:
        row = s.get(Notification, row_id)
        if error is None:
            row.status, row.sent_at, row.last_error = "sent", now, None
        elif row.attempts >= MAX_ATTEMPTS:
            row.status, row.last_error = "failed", error[:2000]
        else:
            row.next_attempt_at, row.last_error = now + retry_delay(row.attempts), error[:2000]
        return row.status


def deliver_pending(db: Database, settings: Settings, *, now: dt.datetime | None = None,
                    limit: int = BATCH) -> dict[str, int]:
    """Send every due message once; returns counts {sent, retry, failed, skipped}."""
    now = now or utcnow()
    counts = {"sent": 0, "retry": 0, "failed": 0, "skipped": 0}
    if not settings.smtp_host:
        with db.session() as s:
            for row in s.scalars(select(Notification).where(Notification.status == "pending",
                                                            Notification.next_attempt_at <= now).limit(limit)):
                row.status, row.last_error = "skipped", "notifications are switched off (no smtp_host)"
                counts["skipped"] += 1
        return counts
    for row in _claim(db, now, limit):
        try:
            send_one(settings, row)
            error = None
        except (OSError, smtplib.SMTPException) as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.warning("notification %s not sent (attempt %s): %s", row.id, row.attempts, error)
        status = _record(db, row.id, error=error, now=now)
        counts["retry" if status == "pending" else status] += 1
    return counts


def next_due(db: Database) -> dt.datetime | None:
    with db.session(write=False) as s:
        return s.scalar(select(Notification.next_attempt_at).where(Notification.status == "pending")
                        .order_by(Notification.next_attempt_at).limit(1))


class Dispatcher:
    """Wakes on kick(); sends what is due; sleeps until the next retry is due or the next kick."""

    def __init__(self, app: Flask, *, inline: bool) -> None:
        self.app = app
        self.inline = inline
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.last_look = 0.0

    def kick(self) -> None:
        self.last_look = time.monotonic()
        if self.inline:
            self.run_once()
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="trialmgr-outbox", daemon=True)
                self._thread.start()
        self._wake.set()

    def run_once(self) -> dict[str, int] | None:
        from trialmgr.state import state

        try:
            with self.app.app_context():
                return deliver_pending(state().db, state().settings)
        except Exception:  # noqa: BLE001  (the change is committed; the message waits for the next look)
            log.warning("sending queued notifications failed; will retry", exc_info=True)
            return None

    def _seconds_to_next(self) -> float | None:
        from trialmgr.state import state

        try:
            with self.app.app_context():
                due = next_due(state().db)
        except Exception:  # noqa: BLE001
            return POLL_SECONDS
        if due is None:
            return None
        return max(1.0, (due - utcnow()).total_seconds())

    def _loop(self) -> None:
        while True:
            self._wake.clear()
            self.run_once()
            self._wake.wait(timeout=self._seconds_to_next())


def dispatcher() -> Dispatcher:
    return current_app.extensions[EXTENSION]


def _after_commit(session: Session) -> None:
    if not session.info.pop(SESSION_FLAG, False):
        return
    if has_request_context():
        g.outbox_queued = True  # sent once the request is over, not in the middle of it
    elif has_app_context() and EXTENSION in current_app.extensions and not current_app.extensions[EXTENSION].inline:
        current_app.extensions[EXTENSION].kick()


def _after_rollback(session: Session, _previous_transaction) -> None:
    session.info.pop(SESSION_FLAG, None)


_installed = threading.Lock()


def install(app: Flask) -> None:
    """Wire the outbox into an app: the commit hook, the end-of-request kick and the `notify` commands."""
    with _installed:
        if not event.contains(Session, "after_commit", _after_commit):
            event.listen(Session, "after_commit", _after_commit)
            event.listen(Session, "after_soft_rollback", _after_rollback)
    disp = Dispatcher(app, inline=app.extensions["trialmgr"].settings.testing)
    app.extensions[EXTENSION] = disp

    @app.teardown_request
    def _kick(_exc: BaseException | None) -> None:
        queued = g.pop("outbox_queued", False)
        idle = not disp.inline and time.monotonic() - disp.last_look > POLL_SECONDS
        if queued or idle:
            try:
                disp.kick()
            except Exception:  # noqa: BLE001  (never let mail trouble reach a response)
                log.warning("could not wake the notification sender", exc_info=True)

    app.cli.add_command(notify_group)


@click.group("notify", cls=AppGroup)
def notify_group() -> None:
    """E-mail notifications to investigators (outbox)."""


@notify_group.command("send")
def send_cmd() -> None:
    """Send every queued notification that is due (retries included)."""
    from trialmgr.state import state

    counts = deliver_pending(state().db, state().settings)
    click.echo(", ".join(f"{k} {v}" for k, v in counts.items()))


@notify_group.command("overdue")
@click.option("--trial", "trial_ids", multiple=True, help="Trial id (repeatable); default: every trial.")
def overdue_cmd(trial_ids: tuple[str, ...]) -> None:
    """Queue a message for each overdue primary-endpoint visit not reported before, then send. For cron."""
    from trialmgr.db.models_accounts import Trial
    from trialmgr.services import notify
    from trialmgr.state import state

    db = state().db
    with db.session() as s:
        ids = list(trial_ids) or list(s.scalars(select(Trial.id).order_by(Trial.id)))
        queued = {t: notify.overdue_primary_visits(s, t) for t in ids}
    for t, n in queued.items():
        click.echo(f"{t}: {n} overdue primary-endpoint visit(s) newly reported")
    counts = deliver_pending(db, state().settings)
    click.echo(", ".join(f"{k} {v}" for k, v in counts.items()))
