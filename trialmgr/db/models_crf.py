"""Visits, case report form records and their values, queries, source data verification."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, Date, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from trialmgr.db.base import Base, UTCDateTime, intpk, utc, utcnow


class VisitRecord(Base):
    """One scheduled or unscheduled visit of a participant; the window is frozen when it is created."""

    __tablename__ = "visit"
    __table_args__ = (UniqueConstraint("participant_id", "code"),)

    id: Mapped[intpk]
    trial_id: Mapped[str] = mapped_column(ForeignKey("trial.id"), index=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participant.id"), index=True)
    code: Mapped[str] = mapped_column(String(24))
    label: Mapped[str] = mapped_column(String(120))
    scheduled: Mapped[bool] = mapped_column(Boolean, default=True)
    position: Mapped[int] = mapped_column(Integer)
    target_date: Mapped[dt.date | None] = mapped_column(Date)
    window_start: Mapped[dt.date | None] = mapped_column(Date)
    window_end: Mapped[dt.date | None] = mapped_column(Date)
    visit_date: Mapped[dt.date | None] = mapped_column(Date)
    complete: Mapped[bool] = mapped_column(Boolean, default=False)
    missed: Mapped[bool] = mapped_column(Boolean, default=False)
    missed_reason: Mapped[str | None] = mapped_column(Text)
    deviation_recorded: Mapped[bool] = mapped_column(Boolean, default=False)


class FormRecord(Base):
    """One form of one visit (or one any-time form instance: adverse event #2) of one participant."""

    __tablename__ = "form_record"
    __table_args__ = (UniqueConstraint("participant_id", "visit_id", "form_id", "instance"),)

    id: Mapped[intpk]
    trial_id: Mapped[str] = mapped_column(ForeignKey("trial.id"), index=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participant.id"), index=True)
    visit_id: Mapped[int | None] = mapped_column(ForeignKey("visit.id"), index=True)
    form_id: Mapped[str] = mapped_column(String(64))
    instance: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(16))  # draft | complete
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[utc] = mapped_column(default=utcnow)
    updated_at: Mapped[utc] = mapped_column(default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(64))
    sdv_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    sdv_by: Mapped[str | None] = mapped_column(String(64))
    locked: Mapped[bool] = mapped_column(Boolean, default=False)
    serious: Mapped[bool] = mapped_column(Boolean, default=False)  # adverse events: flagged at once


class FormValue(Base):
    __tablename__ = "form_value"

    record_id: Mapped[int] = mapped_column(ForeignKey("form_record.id"), primary_key=True)
    field_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str | None] = mapped_column(Text)  # canonical text (crf.serialize_value)
    missing_code: Mapped[str | None] = mapped_column(String(8))
    derived: Mapped[bool] = mapped_column(Boolean, default=False)


class Query(Base):
    __tablename__ = "data_query"

    id: Mapped[intpk]
    trial_id: Mapped[str] = mapped_column(ForeignKey("trial.id"), index=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participant.id"), index=True)
    record_id: Mapped[int] = mapped_column(ForeignKey("form_record.id"), index=True)
    field_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # open | answered | closed
    text: Mapped[str] = mapped_column(Text)
    check_id: Mapped[str | None] = mapped_column(String(64))  # automatic edit check that raised it
    opened_by: Mapped[str] = mapped_column(String(64))
    opened_at: Mapped[utc] = mapped_column(default=utcnow)
    answer: Mapped[str | None] = mapped_column(Text)
    answered_by: Mapped[str | None] = mapped_column(String(64))
    answered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    closed_by: Mapped[str | None] = mapped_column(String(64))
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
