"""Writing the audit trail: one entry per change, in the caller's transaction, on a per-chain hash chain.

Chains: `{trial}/p/{participant}` for a participant's data, `{trial}/trial` for trial-level records,
`_system/user/{username}` for accounts and logins. A writer locks only the head rows of the chains it
touches, so data entry on different participants proceeds concurrently. See docs/audit.md.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import orjson
from sqlalchemy import String, case, event, func, literal, select, type_coerce
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from trialmgr import clock
from trialmgr.db.base import utcnow
from trialmgr.db.models_audit import AuditEntry, ChainHead, Checkpoint
from trialmgr.domain import audit as chainlib
from trialmgr.domain.errors import ReasonRequired
from trialmgr.services.context import Actor

_HEADS = "trialmgr.audit_heads"
_PENDING = "trialmgr.audit_pending"


@event.listens_for(Session, "after_transaction_end")
def _forget(session: Session, transaction) -> None:
    if transaction.parent is None:
        session.info.pop(_HEADS, None)
        session.info.pop(_PENDING, None)


@event.listens_for(Session, "before_flush")
def _before_flush(session: Session, _context, _instances) -> None:
    write_pending(session)


@event.listens_for(Session, "do_orm_execute")
def _before_query(state) -> None:
    # A query in the same transaction sees the entries recorded so far, as it would with plain ORM rows.
    if state.session.info.get(_PENDING):
        write_pending(state.session)


@event.listens_for(Session, "before_commit")
def _before_commit(session: Session) -> None:
    write_pending(session)


# Entries are inserted in this column order (the hashed fields, then the chain position and the two hashes).
INSERT_COLUMNS = (*chainlib.HASHED_FIELDS, "chain_seq", "prev_hash", "hash")
_TS = chainlib.HASHED_FIELDS.index("ts")


# Plain driver statements: these run in every audited transaction. SQLite has no row locks (its writers are
# serialized by BEGIN IMMEDIATE); PostgreSQL locks the head row (key: is PostgreSQL).
_LOCK_SQL = {
    True: "SELECT chain_seq, hash FROM audit_chain_head WHERE chain = %s FOR UPDATE",
    False: "SELECT chain_seq, hash FROM audit_chain_head WHERE chain = ?",
}
_SQLITE_HEAD_UPDATE = "UPDATE audit_chain_head SET chain_seq = ?, hash = ? WHERE chain = ?"


_SQLITE_INSERT = (f"INSERT INTO {AuditEntry.__tablename__} ({', '.join(INSERT_COLUMNS)}) "  # noqa: S608
                  f"VALUES ({', '.join(['?'] * len(INSERT_COLUMNS))})")  # (constant names; values are bound)


def write_pending(session: Session) -> None:
    """Insert the buffered entries and advance the chain heads, in the caller's transaction.

    Entries are buffered by record() and written at the next flush or commit: a form save's twenty entries
    cost one INSERT and one head UPDATE, sent as prepared driver statements (bench/bench_form_save_audit.py
    measures what auditing adds to a save).
    """
    rows = session.info.pop(_PENDING, None)
    if not rows:
        return
    conn = session.connection()
    heads = session.info.get(_HEADS, {})
    moved = [(chain, h["chain_seq"], h["hash"]) for chain, h in heads.items() if h.pop("dirty", False)]
    raw = conn.connection.driver_connection  # this transaction's DBAPI connection: no per-call SQLAlchemy work
    if conn.dialect.name != "postgresql":
        raw.executemany(_SQLITE_INSERT, rows)  # the driver loops in C
        if moved:
            raw.executemany(_SQLITE_HEAD_UPDATE, [(s, h, c) for c, s, h in moved])
        return
    # PostgreSQL: the entries and the heads they advance in ONE statement of constant text, so the driver
    # caches it and the server keeps it prepared: one round trip per commit. The rows travel as one JSON
    # parameter each (orjson writes it in C; array parameters cost the driver a Python call per element),
    # read as jsonb (parsed once; ->> on json text would parse each row again for every column).
    if not moved:  # (record() always moves a head)
        raise RuntimeError("audit entries without a chain head to advance")
    raw.execute(_PG_WRITE, (orjson.dumps(rows).decode(), orjson.dumps(moved).decode()))


def _pg_write_sql() -> str:
    casts = {"ts": "timestamptz", "chain_seq": "integer"}
    values = ", ".join(f"(e ->> {k})::{casts.get(c, 'text')}" for k, c in enumerate(INSERT_COLUMNS))
    return (f"WITH entries AS (INSERT INTO {AuditEntry.__tablename__} ({', '.join(INSERT_COLUMNS)}) "  # noqa: S608
            # seq follows the list order (chain_seq order within a chain): ORDER BY the ordinality says so.
            f"SELECT {values} FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS u (e, n) ORDER BY n) "
            "UPDATE audit_chain_head AS h SET chain_seq = (v ->> 1)::integer, hash = v ->> 2 "
            "FROM jsonb_array_elements(%s::jsonb) AS v WHERE h.chain = v ->> 0")  # (constant names; values bound)


_PG_WRITE = _pg_write_sql()


def chain_name(trial: str | None, participant: str | None = None, *, user: str | None = None) -> str:
    if participant:
        return f"{trial}/p/{participant}"
    if trial:
        return f"{trial}/trial"
    return f"_system/user/{user or 'system'}"


def _lock_head(session: Session, chain: str, trial: str | None) -> dict:
    """The chain's head, locked for the rest of the transaction (one upsert: created if new, row-locked)."""
    heads: dict[str, dict] = session.info.setdefault(_HEADS, {})
    head = heads.get(chain)
    if head is not None:
        return head
    table = ChainHead.__table__
    conn = session.connection()
    pg = conn.dialect.name == "postgresql"
    lock = _LOCK_SQL[pg]
    raw = conn.connection.driver_connection  # this transaction's DBAPI connection: no per-call SQLAlchemy work
    row = raw.execute(lock, (chain,)).fetchone()
    if row is None:  # a new chain: create its head (a concurrent creator wins harmlessly), then lock it
        ins = (postgresql.insert if pg else sqlite.insert)(table)
        conn.execute(ins.values(chain=chain, trial=trial, chain_seq=0, hash=chainlib.GENESIS_HASH, checkpointed_seq=0)
                     .on_conflict_do_nothing(index_elements=["chain"]))
        row = raw.execute(lock, (chain,)).fetchone()
    head = {"chain_seq": row[0], "hash": row[1], "sqlite": not pg}
    heads[chain] = head
    return head


def adopt_locked_head(session: Session, chain: str, chain_seq: int, hash_: str) -> None:
    """A caller's statement locked the chain's head row (PostgreSQL, FOR UPDATE) and read it: record() uses it
    instead of locking it again. A head this transaction already holds is kept (it may be ahead of the row)."""
    heads: dict[str, dict] = session.info.setdefault(_HEADS, {})
    if chain not in heads:
        heads[chain] = {"chain_seq": chain_seq, "hash": hash_, "sqlite": False}


def record(
    session: Session,
    actor: Actor,
    action: str,
    entity_type: str,
    entity_id: Any = None,
    *,
    trial: str | None = None,
    participant: str | None = None,
    field: str | None = None,
    old: str | None = None,
    new: str | None = None,
    reason: str | None = None,
    chain: str | None = None,
    require_reason: bool = False,
    ts: dt.datetime | None = None,
) -> None:
    """Append one audit entry describing a change the caller is making in this same transaction.

    The entry is written at the transaction's next flush or commit (write_pending); it never outlives a rollback.
    """
    if require_reason and not (reason and reason.strip()):
        raise ReasonRequired(f"{field or entity_type}: a reason for the change is required")
    trial = trial if trial is not None else actor.trial
    chain = chain or chain_name(trial, participant, user=actor.username)
    head = _lock_head(session, chain, trial)
    ts = ts or clock.now()
    prev = head["hash"]
    chain_seq = head["chain_seq"] + 1
    values = [prev, chain, trial, actor.username, str(actor.role) if actor.role else None, actor.site, action,
              entity_type, None if entity_id is None else str(entity_id), participant, field, old, new,
              reason.strip() if reason else None, actor.request_id, actor.client_addr, chainlib.utc_text(ts)]
    if not {type(v) for v in values} <= _TEXT_TYPES:
        _plain(values)
    digest = chainlib.hash_values(tuple(values))
    stored = values[1:]
    if head["sqlite"]:  # SQLAlchemy's SQLite storage text of the same instant
        text = stored[_TS]
        stored[_TS] = f"{text[:10]} {text[11:26]}"
    else:
        stored[_TS] = ts
    session.info.setdefault(_PENDING, []).append((*stored, chain_seq, prev, digest))
    head["chain_seq"], head["hash"], head["dirty"] = chain_seq, digest, True


_TEXT_TYPES = frozenset({str, type(None)})


def _plain(values: list) -> None:
    """Hash and store text exactly as the database will hold it: a StrEnum member by its value."""
    for k, value in enumerate(values):
        if value is not None and type(value) is not str:
            if not isinstance(value, str):
                raise ValueError(f"{_NAMES[k]}: expected text or None, got {type(value).__name__}")
            values[k] = str.__str__(value)


_NAMES = ("prev_hash", *chainlib.HASHED_FIELDS)


def record_changes(session: Session, actor: Actor, action: str, entity_type: str, entity_id: Any,
                   changes: dict[str, tuple[str | None, str | None]], **kw: Any) -> None:
    """One entry per changed field (old, new), skipping fields whose value did not change."""
    for name, (old, new) in changes.items():
        if old != new:
            record(session, actor, action, entity_type, entity_id, field=name, old=old, new=new, **kw)


# -- checkpoints ---------------------------------------------------------------------------------------


def create_checkpoint(session: Session, private_key, reason: str) -> Checkpoint | None:
    """Sign the heads of every chain that moved since the last checkpoint.

    Heads being written right now are skipped (SKIP LOCKED) and caught by the next checkpoint, so signing
    never waits on, or deadlocks with, data entry. Returns None when nothing moved.
    """
    write_pending(session)
    if session.get_bind().dialect.name == "postgresql":
        # One checkpoint writer at a time keeps checkpoint numbers consecutive.
        session.execute(select(func.pg_advisory_xact_lock(0x7472_6961_6C6D)))
    heads = session.scalars(
        select(ChainHead).where(ChainHead.chain_seq > ChainHead.checkpointed_seq)
        .order_by(ChainHead.chain).with_for_update(skip_locked=True)
    ).all()
    last = session.scalars(select(Checkpoint).order_by(Checkpoint.seq.desc()).limit(1)).first()
    if not heads and reason == "periodic":
        return None
    seq = (last.seq + 1) if last else 1
    prev = chainlib.checkpoint_hash(last.body) if last else chainlib.GENESIS_HASH
    cp = chainlib.make_checkpoint(private_key, seq, utcnow(), {h.chain: (h.chain_seq, h.hash) for h in heads}, prev)
    row = Checkpoint(seq=cp["seq"], ts=cp["ts"], body=cp["body"], signature=cp["signature"],
                     key_id=cp["key_id"], reason=reason)
    session.add(row)
    for h in heads:
        h.checkpointed_seq = h.chain_seq
    session.flush()
    return row


def last_checkpoint_time(session: Session) -> dt.datetime | None:
    return session.scalar(select(func.max(Checkpoint.ts)))


# -- reading back -------------------------------------------------------------------------------------

ENTRY_COLUMNS = [c.name for c in AuditEntry.__table__.columns]


def iter_entries(session: Session, trial: str | None = None, batch: int = 5000) -> Iterator[dict]:
    """Every entry in seq order as a plain dict, streamed in keyset batches (bounded memory)."""
    write_pending(session)
    cols = [AuditEntry.__table__.c[name] for name in ENTRY_COLUMNS]
    after = 0
    while True:
        stmt = select(*cols).where(AuditEntry.seq > after).order_by(AuditEntry.seq).limit(batch)
        if trial is not None:
            stmt = stmt.where(AuditEntry.trial == trial)
        rows = session.connection().execute(stmt).all()  # Core rows: no ORM processing per row
        if not rows:
            return
        for r in rows:
            yield dict(zip(ENTRY_COLUMNS, r, strict=True))
        after = rows[-1][0]


def _ts_text(column, dialect: str):
    """The entry time as the canonical text the hash covers (``YYYY-MM-DDTHH:MM:SS.ffffffZ``), formatted by
    the database: a million datetimes parsed and re-formatted in Python would cost more than hashing them."""
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", column), 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
    # SQLite keeps text: SQLAlchemy writes "YYYY-MM-DD HH:MM:SS.ffffff"; a row written by other means may use a
    # "T" or a zone offset (strftime normalises both to UTC) and omits a zero fraction.
    raw = type_coerce(column, String)
    micro = case((func.substr(raw, 20, 1) == ".", func.substr(raw, 21, 6)), else_=literal("000000"))
    return func.strftime("%Y-%m-%dT%H:%M:%S", raw).concat(".").concat(micro).concat("Z")


def iter_verify_rows(session: Session, trial: str | None = None, *, after: int = 0, upto: int | None = None,
                     batch: int = 10_000) -> Iterator[tuple]:
    """Entries with after < seq <= upto (all by default) as tuples in the verifier's column order
    (``audit_verify.VERIFY_COLUMNS``, ``ts`` as canonical text), seq ascending, in keyset batches."""
    from trialmgr.domain.audit_verify import VERIFY_COLUMNS

    write_pending(session)
    conn = session.connection()
    table = AuditEntry.__table__
    cols = [table.c[n] if n != "ts" else _ts_text(table.c.ts, conn.dialect.name) for n in VERIFY_COLUMNS]
    while True:
        stmt = select(*cols).where(table.c.seq > after).order_by(table.c.seq).limit(batch)
        if upto is not None:
            stmt = stmt.where(table.c.seq <= upto)
        if trial is not None:
            stmt = stmt.where(table.c.trial == trial)
        rows = conn.execute(stmt).all()
        if not rows:
            return
        yield from map(tuple, rows)
        after = rows[-1][0]


def seq_quantiles(session: Session, parts: int, trial: str | None = None, *, min_entries: int = 0) -> list[int]:
    """Seq values cutting the (trial's) entries into ``parts`` runs of about equal size, for parallel checks
    (none when there are fewer than ``min_entries``)."""
    table = AuditEntry.__table__
    base = select(table.c.seq)
    if trial is not None:
        base = base.where(table.c.trial == trial)
    total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    if total < max(min_entries, parts):
        return []
    cuts = []
    for k in range(1, parts):
        seq = session.scalar(base.order_by(table.c.seq).offset(total * k // parts).limit(1))
        if seq is not None and (not cuts or seq > cuts[-1]):
            cuts.append(seq)
    return cuts


def iter_checkpoints(session: Session) -> Iterator[dict]:
    for cp in session.scalars(select(Checkpoint).order_by(Checkpoint.seq)):
        yield {"seq": cp.seq, "ts": cp.ts, "body": cp.body, "signature": cp.signature, "key_id": cp.key_id}
