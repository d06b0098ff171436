"""The audit trail: append-only entries in per-chain hash chains, chain heads and signed checkpoints."""

from __future__ import annotations

from sqlalchemy import Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from trialmgr.db.base import Base, bigpk, utc


class AuditEntry(Base):
    __tablename__ = "audit_entry"
    __table_args__ = (
        UniqueConstraint("chain", "chain_seq"),
        # Monitor filters, newest first with keyset pagination on seq.
        Index("ix_audit_entry_trial_seq", "trial", "seq"),
        Index("ix_audit_entry_trial_participant_seq", "trial", "participant", "seq"),
        Index("ix_audit_entry_trial_actor_seq", "trial", "actor_user", "seq"),
        Index("ix_audit_entry_trial_action_seq", "trial", "action", "seq"),
        Index("ix_audit_entry_trial_ts", "trial", "ts"),
    )

    seq: Mapped[bigpk]
    trial: Mapped[str | None] = mapped_column(String(64))
    chain: Mapped[str] = mapped_column(String(160))
    chain_seq: Mapped[int] = mapped_column(Integer)
    ts: Mapped[utc]
    actor_user: Mapped[str | None] = mapped_column(String(64))
    actor_role: Mapped[str | None] = mapped_column(String(24))
    actor_site: Mapped[str | None] = mapped_column(String(8))
    action: Mapped[str] = mapped_column(String(64))
    entity_type: Mapped[str] = mapped_column(String(40))
    entity_id: Mapped[str | None] = mapped_column(String(120))
    participant: Mapped[str | None] = mapped_column(String(32))
    field: Mapped[str | None] = mapped_column(String(120))
    old_value: Mapped[str | None] = mapped_column(Text)
    new_value: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(String(64))
    client_addr: Mapped[str | None] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class ChainHead(Base):
    """The lockable head of one chain: writers on different chains never wait on each other."""

    __tablename__ = "audit_chain_head"

    chain: Mapped[str] = mapped_column(String(160), primary_key=True)
    trial: Mapped[str | None] = mapped_column(String(64))
    chain_seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))
    checkpointed_seq: Mapped[int] = mapped_column(Integer, default=0)


class Checkpoint(Base):
    __tablename__ = "audit_checkpoint"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    ts: Mapped[utc]
    body: Mapped[str] = mapped_column(Text)
    signature: Mapped[str] = mapped_column(String(200))
    key_id: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(String(40))
