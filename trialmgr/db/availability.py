"""Which database failures are an outage (503, retry later) rather than a bug (500).

Both adapters ask `refusal(exc)` in their one error handler: a lost connection, a server that is restarting,
a database that refuses writes (read-only, disk full) or a pool that is exhausted is the operator's problem,
reported in plain words with 503; anything else is a bug and stays a 500 with its traceback in the log.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import exc as sa_exc

# PostgreSQL SQLSTATEs (https://www.postgresql.org/docs/current/errcodes-appendix.html)
_READ_ONLY_STATES = {"25006"}                    # read_only_sql_transaction
_FULL_STATES = {"53100", "53200", "53300"}       # disk_full, out_of_memory, too_many_connections
_BUSY_STATES = {"40001", "40P01", "55P03", "57014"}  # serialization, deadlock, lock not available, cancelled

# SQLite reports these as OperationalError with a message and no SQLSTATE.
_SQLITE_READ_ONLY = ("readonly database", "read-only", "query_only")
_SQLITE_FULL = ("database or disk is full", "disk i/o error")
_SQLITE_BUSY = ("database is locked", "database table is locked")


@dataclass(frozen=True)
class Refusal:
    code: str       # machine-readable, for the JSON error body
    message: str    # one sentence a user or an operator can act on


UNREACHABLE = Refusal("database_unavailable", "The database cannot be reached at the moment; the request was not "
                      "completed. Please retry in a few seconds (API clients: with the same Idempotency-Key).")
READ_ONLY = Refusal("database_read_only", "The database refuses writes at the moment (it is read-only); nothing was "
                    "saved. Reading still works.")
FULL = Refusal("database_full", "The database refuses writes: its storage is full. Nothing was saved; "
               "tell the administrator.")
BUSY = Refusal("database_busy", "The database is too busy to answer now; nothing was saved. Please retry.")


def refusal(exc: BaseException) -> Refusal | None:
    """The outage `exc` stands for, or None when it is not one (a bug: let it be a 500)."""
    if isinstance(exc, sa_exc.TimeoutError):  # no pooled connection became free in time
        return BUSY
    if not isinstance(exc, sa_exc.DBAPIError):
        return None
    orig = exc.orig
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    text = str(orig).lower()
    if state in _READ_ONLY_STATES or (state is None and any(s in text for s in _SQLITE_READ_ONLY)):
        return READ_ONLY
    if state in _FULL_STATES or (state is None and any(s in text for s in _SQLITE_FULL)):
        return FULL
    if state in _BUSY_STATES or (state is None and any(s in text for s in _SQLITE_BUSY)):
        return BUSY
    if exc.connection_invalidated:
        return UNREACHABLE
    if type(orig).__module__.startswith("sqlite3"):
        # Other SQLite OperationalErrors ("no such table") are bugs or a schema not migrated: not an outage.
        return UNREACHABLE if "unable to open database" in text else None
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):  # lost connection, server restarting
        return UNREACHABLE
    return None
