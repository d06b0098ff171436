"""Users, trials, protocol versions, sites, role assignments and API tokens."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Boolean, Enum, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from trialmgr.db.base import Base, UTCDateTime, intpk, utc, utcnow
from trialmgr.domain.vocab import DataState, Role


def enum_col(enum_cls, length: int = 24) -> Enum:
    return Enum(enum_cls, native_enum=False, length=length, values_callable=lambda e: [m.value for m in e],
                validate_strings=True, create_constraint=False)


class User(Base):
    __tablename__ = "user_account"

    id: Mapped[intpk]
    username: Mapped[str] = mapped_column(String(64), unique=True)
    full_name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    totp_secret: Mapped[str | None] = mapped_column(String(128))  # sealed (services/twofactor.py)
    # The last TOTP time step accepted: a code is never accepted twice (RFC 6238 section 5.2).
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[utc] = mapped_column(default=utcnow)

    roles: Mapped[list[RoleAssignment]] = relationship(back_populates="user", cascade="all, delete-orphan",
                                                       lazy="selectin")


class Trial(Base):
    __tablename__ = "trial"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    title: Mapped[str] = mapped_column(String(300))
    data_state: Mapped[DataState] = mapped_column(enum_col(DataState), default=DataState.OPEN)
    created_at: Mapped[utc] = mapped_column(default=utcnow)


class ProtocolVersion(Base):
    __tablename__ = "protocol_version"
    __table_args__ = (UniqueConstraint("trial_id", "number"), UniqueConstraint("trial_id", "sha256"))

    id: Mapped[intpk]
    trial_id: Mapped[str] = mapped_column(ForeignKey("trial.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(String(40))
    sha256: Mapped[str] = mapped_column(String(64))
    source_name: Mapped[str] = mapped_column(String(300))
    source_text: Mapped[str] = mapped_column(Text)
    loaded_at: Mapped[utc] = mapped_column(default=utcnow)
    loaded_by: Mapped[str] = mapped_column(String(64))


class Site(Base):
    __tablename__ = "site"
    __table_args__ = (UniqueConstraint("trial_id", "code"),)

    id: Mapped[intpk]
    trial_id: Mapped[str] = mapped_column(ForeignKey("trial.id"), index=True)
    code: Mapped[str] = mapped_column(String(8))
    name: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class RoleAssignment(Base):
    __tablename__ = "role_assignment"
    __table_args__ = (UniqueConstraint("user_id", "trial_id", "role", "site_code"),)

    id: Mapped[intpk]
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"), index=True)
    trial_id: Mapped[str] = mapped_column(ForeignKey("trial.id"), index=True)
    role: Mapped[Role] = mapped_column(enum_col(Role))
    site_code: Mapped[str | None] = mapped_column(String(8))

    user: Mapped[User] = relationship(back_populates="roles")


class ApiToken(Base):
    __tablename__ = "api_token"

    id: Mapped[intpk]
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"), index=True)
    trial_id: Mapped[str] = mapped_column(ForeignKey("trial.id"))
    role: Mapped[Role] = mapped_column(enum_col(Role))
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[utc] = mapped_column(default=utcnow)
    expires_at: Mapped[utc]
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    user: Mapped[User] = relationship(lazy="joined")


class Signature(Base):
    """An electronic signature (21 CFR 11.50/11.70): who (printed name), when (UTC), what it means, and the
    record it is bound to, including a hash of that record's content at signing."""

    __tablename__ = "signature"

    id: Mapped[intpk]
    trial_id: Mapped[str] = mapped_column(ForeignKey("trial.id"), index=True)
    username: Mapped[str] = mapped_column(String(64))
    printed_name: Mapped[str] = mapped_column(String(200))
    meaning: Mapped[str] = mapped_column(String(40))
    signed_at: Mapped[utc] = mapped_column(default=utcnow)
    record_type: Mapped[str] = mapped_column(String(40))
    record_id: Mapped[str] = mapped_column(String(120))
    record_hash: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
