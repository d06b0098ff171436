"""Screenings, participants, allocation lists (encrypted slots, stratum cursors), allocations, unblindings
and idempotency records."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, Date, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from trialmgr.db.base import Base, UTCDateTime, intpk, utc, utcnow
from trialmgr.db.models_accounts import enum_col
from trialmgr.domain.vocab import ParticipantStatus, ScreeningOutcome


class Screening(Base):
    __tablename__ = "screening"

    id: Mapped[intpk]
    trial_id: Mapped[str] = mapped_column(ForeignKey("trial.id"), index=True)
    site_code: Mapped[str] = mapped_column(String(8))
    screening_date: Mapped[dt.date] = mapped_column(Date)
    screened_at: Mapped[utc] = mapped_column(default=utcnow)
    screened_by: Mapped[str] = mapped_column(String(64))
    protocol_number: Mapped[int] = mapped_column(Integer)
    answers: Mapped[str] = mapped_column(Text)  # canonical JSON {field: canonical text}
    eligible: Mapped[bool] = mapped_column(Boolean)
    failures: Mapped[str] = mapped_column(Text)  # JSON [{criterion, kind, text, reason}]
    outcome: Mapped[ScreeningOutcome] = mapped_column(enum_col(ScreeningOutcome))
    decline_reason: Mapped[str | None] = mapped_column(Text)


class SiteCounter(Base):
    """The last participant number given at a site: locked while enrolling, so numbers have no gaps."""

    __tablename__ = "site_counter"

    trial_id: Mapped[str] = mapped_column(ForeignKey("trial.id"), primary_key=True)
    site_code: Mapped[str] = mapped_column(String(8), primary_key=True)
    last_number: Mapped[int] = mapped_column(Integer, default=0)


class Participant(Base):
    __tablename__ = "participant"
    __table_args__ = (UniqueConstraint("trial_id", "code"), UniqueConstraint("trial_id", "site_code", "number"))

    id: Mapped[intpk]
    trial_id: Mapped[str] = mapped_column(ForeignKey("trial.id"), index=True)
    site_code: Mapped[str] = mapped_column(String(8))
    number: Mapped[int] = mapped_column(Integer)
    code: Mapped[str] = mapped_column(String(16))
    screening_id: Mapped[int] = mapped_column(ForeignKey("screening.id"), unique=True)
    consent_date: Mapped[dt.date] = mapped_column(Date)
    consent_version: Mapped[str] = mapped_column(String(40))
    strata: Mapped[str] = mapped_column(Text)  # JSON {factor: level}, frozen at randomization
    stratum: Mapped[str] = mapped_column(String(120))
    status: Mapped[ParticipantStatus] = mapped_column(enum_col(ParticipantStatus), default=ParticipantStatus.ENROLLED)
    enrolled_at: Mapped[utc] = mapped_column(default=utcnow)
    enrolled_by: Mapped[str] = mapped_column(String(64))
    randomized_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    locked: Mapped[bool] = mapped_column(Boolean, default=False)


class AllocationList(Base):
    __tablename__ = "allocation_list"
    __table_args__ = (UniqueConstraint("trial_id", "number"),)

    id: Mapped[intpk]
    trial_id: Mapped[str] = mapped_column(ForeignKey("trial.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    method: Mapped[str] = mapped_column(String(40))
    source: Mapped[str] = mapped_column(String(20))  # generated | imported
    created_at: Mapped[utc] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(64))
    commitment: Mapped[str] = mapped_column(String(64))
    secret: Mapped[bytes] = mapped_column(LargeBinary)  # encrypted salt (+ seed when generated)
    slots_total: Mapped[int] = mapped_column(Integer)
    slots_per_stratum: Mapped[int] = mapped_column(Integer)  # as requested; each stratum ends at a block end
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class AllocationSlot(Base):
    """One slot; arm, block and block size are encrypted together so the database shows no block edges."""

    __tablename__ = "allocation_slot"

    list_id: Mapped[int] = mapped_column(ForeignKey("allocation_list.id"), primary_key=True)
    stratum: Mapped[str] = mapped_column(String(120), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)


class StratumCursor(Base):
    """The next slot of one stratum: the row every randomization in that stratum locks."""

    __tablename__ = "stratum_cursor"

    list_id: Mapped[int] = mapped_column(ForeignKey("allocation_list.id"), primary_key=True)
    stratum: Mapped[str] = mapped_column(String(120), primary_key=True)
    next_seq: Mapped[int] = mapped_column(Integer, default=1)
    total: Mapped[int] = mapped_column(Integer)


class Allocation(Base):
    __tablename__ = "allocation"
    __table_args__ = (UniqueConstraint("list_id", "stratum", "slot_seq"),)

    id: Mapped[intpk]
    trial_id: Mapped[str] = mapped_column(ForeignKey("trial.id"), index=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participant.id"), unique=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("allocation_list.id"))
    stratum: Mapped[str] = mapped_column(String(120))
    slot_seq: Mapped[int] = mapped_column(Integer)
    arm: Mapped[str] = mapped_column(String(32))
    randomized_at: Mapped[utc] = mapped_column(default=utcnow)
    randomized_by: Mapped[str] = mapped_column(String(64))


class Unblinding(Base):
    __tablename__ = "unblinding"

    id: Mapped[intpk]
    trial_id: Mapped[str] = mapped_column(ForeignKey("trial.id"), index=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participant.id"))
    by_user: Mapped[str] = mapped_column(String(64))
    by_name: Mapped[str] = mapped_column(String(200))
    at: Mapped[utc] = mapped_column(default=utcnow)
    reason: Mapped[str] = mapped_column(Text)


class IdempotencyRecord(Base):
    """The first response to a request carrying an Idempotency-Key, replayed for retries of it."""

    __tablename__ = "idempotency_record"

    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[utc] = mapped_column(default=utcnow)
