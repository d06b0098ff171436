"""Reading the audit trail for monitors: filters, keyset pagination (newest first), per-field history, CSV,
and verification of the whole trail against the public keys."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from trialmgr.db.models_audit import AuditEntry
from trialmgr.domain.errors import ValidationFailed
from trialmgr.services import audit

FILTERS = ("participant", "user", "role", "action", "form", "field", "since", "until")
MAX_PAGE = 500


@dataclass(frozen=True)
class AuditFilter:
    participant: str | None = None
    user: str | None = None
    role: str | None = None
    action: str | None = None
    form: str | None = None
    field: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    @classmethod
    def parse(cls, args: dict[str, str]) -> AuditFilter:
        """From query-string text; bad values are named with the rule they break."""
        errors: dict[str, str] = {}
        values: dict[str, object] = {}
        for name in FILTERS:
            raw = (args.get(name) or "").strip()
            if not raw:
                continue
            if len(raw) > 160:
                errors[name] = "must be at most 160 characters"
            elif name in ("since", "until"):
                try:
                    stamp = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
                except ValueError:
                    errors[name] = "must be a date or time like 2026-11-24 or 2026-11-24T13:05:00Z"
                    continue
                if stamp.tzinfo is None:
                    stamp = stamp.replace(tzinfo=dt.UTC)
                if name == "until" and len(raw) == 10:
                    stamp += dt.timedelta(days=1)  # a bare date means the whole day
                values[name] = stamp
            else:
                values[name] = raw
        if errors:
            raise ValidationFailed(errors)
        return cls(**values)  # type: ignore[arg-type]

    def as_args(self) -> dict[str, str]:
        out = {}
        for name in FILTERS:
            v = getattr(self, name)
            if v is not None:
                out[name] = v.isoformat() if isinstance(v, dt.datetime) else v
        return out


def _filtered(trial: str, f: AuditFilter) -> Select:
    stmt = select(AuditEntry).where(AuditEntry.trial == trial)
    if f.participant:
        stmt = stmt.where(AuditEntry.participant == f.participant)
    if f.user:
        stmt = stmt.where(AuditEntry.actor_user == f.user)
    if f.role:
        stmt = stmt.where(AuditEntry.actor_role == f.role)
    if f.action:
        stmt = stmt.where(AuditEntry.action == f.action)
    if f.form:
        # Form data entries name "{visit}/{form}" as their entity; the form is the last part.
        stmt = stmt.where(AuditEntry.entity_type == "form", AuditEntry.entity_id.like(f"%/{_escape(f.form)}",
                                                                                      escape="\\"))
    if f.field:
        stmt = stmt.where(AuditEntry.field == f.field)
    if f.since:
        stmt = stmt.where(AuditEntry.ts >= f.since)
    if f.until:
        stmt = stmt.where(AuditEntry.ts < f.until)
    return stmt


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def page(session: Session, trial: str, f: AuditFilter, *, before: int | None = None,
         limit: int = 50) -> tuple[list[AuditEntry], int | None]:
    """One page, newest first. Returns the rows and the cursor for the next (older) page, or None."""
    limit = max(1, min(limit, MAX_PAGE))
    stmt = _filtered(trial, f)
    if before is not None:
        stmt = stmt.where(AuditEntry.seq < before)
    order = AuditEntry.seq
    if f.since or f.until:
        # With a time range the planners walk the (trial, seq) index backwards hoping to meet the range soon,
        # which is slow for an old range. Ordering by an expression makes them take the (trial, ts) range and
        # sort it instead (measured in bench/bench_audit_page.py).
        order = AuditEntry.seq + 0
    rows = list(session.scalars(stmt.order_by(order.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].seq if more and rows else None)


def field_history(session: Session, trial: str, participant: str, entity_id: str, field: str) -> list[AuditEntry]:
    """Every entry for one value, oldest first: entered by, changed by, when, why."""
    stmt = (select(AuditEntry).where(AuditEntry.trial == trial, AuditEntry.participant == participant,
                                     AuditEntry.entity_id == entity_id, AuditEntry.field == field)
            .order_by(AuditEntry.seq))
    return list(session.scalars(stmt))


CSV_COLUMNS = ["seq", "ts", "actor_user", "actor_role", "actor_site", "action", "entity_type", "entity_id",
               "participant", "field", "old_value", "new_value", "reason", "request_id", "client_addr", "chain",
               "chain_seq", "prev_hash", "hash"]


def _csv_safe(value: object) -> str:
    """Render one cell; a leading = + - @ would run as a formula in a spreadsheet, so it is quoted away."""
    if value is None:
        return ""
    text = value.isoformat().replace("+00:00", "Z") if isinstance(value, dt.datetime) else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


BLINDED_TEXT = "(blinded)"
# Entries whose values reveal an allocation: hidden from roles the protocol blinds.
ALLOCATION_ENTITIES = frozenset({"allocation", "unblinding"})


def redact(entry: AuditEntry, blinded: bool) -> dict:
    """An entry as a dict for display, with allocation values hidden from blinded roles."""
    row = {c: getattr(entry, c) for c in CSV_COLUMNS}
    if blinded and entry.entity_type in ALLOCATION_ENTITIES:
        for name in ("old_value", "new_value"):
            if row[name] is not None:
                row[name] = BLINDED_TEXT
    return row


def csv_rows(session: Session, trial: str, f: AuditFilter, *, blinded: bool = False,
             batch: int = 2000) -> Iterator[str]:
    """The filtered entries as CSV text chunks, streamed newest first."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CSV_COLUMNS)
    before = None
    while True:
        rows, before = page(session, trial, f, before=before, limit=min(batch, MAX_PAGE))
        for r in rows:
            row = redact(r, blinded)
            writer.writerow([_csv_safe(row[c]) for c in CSV_COLUMNS])
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()
        if before is None:
            return


def verify(session: Session, public_keys: dict, trial: str | None = None, *, known_checkpoint=None):
    """Verify every entry (of one trial, or all) and every checkpoint; the report names the first problem.

    Checkpoints are read first: each signed head is then checked as the entries stream past, so memory grows
    with the number of chains, not entries.
    """
    from trialmgr.domain.audit import trial_filter
    from trialmgr.domain.audit_verify import Verifier

    verifier = Verifier(public_keys, chain_filter=trial_filter(trial) if trial is not None else None,
                        known_checkpoint=known_checkpoint)
    verifier.add_checkpoints(audit.iter_checkpoints(session))
    verifier.add_rows(audit.iter_verify_rows(session, trial))
    return verifier.finish()


def _segment_worker(url: str, after: int, upto: int | None, trial: str | None, checkpoints: list[dict],
                    key_pems: dict[str, bytes]):
    """One process's share of verify_parallel: its own connection, one contiguous seq range."""
    from trialmgr.db import Database
    from trialmgr.domain.audit import load_public_key_pem, trial_filter
    from trialmgr.domain.audit_verify import verify_segment

    keys = {kid: load_public_key_pem(pem) for kid, pem in key_pems.items()}
    db = Database(url)
    try:
        with db.session(write=False) as s:
            rows = audit.iter_verify_rows(s, trial, after=after, upto=upto)
            return verify_segment(rows, checkpoints, keys, trial_filter(trial) if trial is not None else None)
    finally:
        db.dispose()


def verify_parallel(database, public_keys: dict, trial: str | None = None, *, workers: int | None = None,
                    known_checkpoint=None, min_entries: int = 200_000):
    """verify(), with the entries split into ``workers`` seq ranges checked in parallel processes.

    An intact trail is proved by the segments joining up (domain.audit_verify.verify_in_segments); if they do
    not, the sequential verify() runs and names the first problem, so the report is always the same as
    verify()'s. Runs verify() alone for fewer than ``min_entries`` entries (starting processes and connections
    costs more than it saves), an in-memory database, one worker, or no fork on this platform.
    """
    import multiprocessing
    import os

    from cryptography.hazmat.primitives import serialization

    from trialmgr.domain.audit import trial_filter
    from trialmgr.domain.audit_verify import verify_in_segments

    workers = workers or min(os.cpu_count() or 1, 8)
    with database.session(write=False) as s:
        checkpoints = list(audit.iter_checkpoints(s))
        cuts = audit.seq_quantiles(s, workers, trial, min_entries=min_entries) \
            if workers > 1 and database.parallel_readers else []
    in_memory = database.engine.url.get_backend_name() == "sqlite" and database.engine.url.database in (None, "",
                                                                                                        ":memory:")
    report = None
    if cuts and not in_memory and database.parallel_readers and "fork" in multiprocessing.get_all_start_methods():
        pems = {kid: key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
                for kid, key in public_keys.items()}
        bounds = [0, *cuts, None]
        jobs = [(database.url, a, b, trial, checkpoints, pems) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        # Children must not share the parent's open connections: close them before forking (they reopen on use).
        database.engine.dispose()
        with multiprocessing.get_context("fork").Pool(len(jobs)) as pool:
            report = verify_in_segments(checkpoints, public_keys, lambda: pool.starmap(_segment_worker, jobs),
                                        chain_filter=trial_filter(trial) if trial is not None else None,
                                        known_checkpoint=known_checkpoint)
    if report is None:
        with database.session(write=False) as s:
            report = verify(s, public_keys, trial, known_checkpoint=known_checkpoint)
    return report
