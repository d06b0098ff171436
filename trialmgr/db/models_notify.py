"""The e-mail outbox: a notification is written in the same transaction as the change that caused it and
sent after that transaction commits, so a mail server that is down can neither block nor undo the change."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from trialmgr.db.base import Base, UTCDateTime, intpk, utc, utcnow


class Notification(Base):
    __tablename__ = "notification"
    __table_args__ = (Index("ix_notification_status_next_attempt_at", "status", "next_attempt_at"),)

    id: Mapped[intpk]
    trial_id: Mapped[str] = mapped_column(ForeignKey("trial.id"), index=True)
    kind: Mapped[str] = mapped_column(String(40))  # serious_adverse_event | list_low | list_exhausted | ...
    # One message per event, however often the event is seen (a cron run, a re-saved form).
    dedup_key: Mapped[str] = mapped_column(String(200), unique=True)
    recipients: Mapped[str] = mapped_column(Text)  # comma-separated addresses, fixed when queued
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | sent | failed | skipped
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[utc] = mapped_column(default=utcnow)
    next_attempt_at: Mapped[utc] = mapped_column(default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
