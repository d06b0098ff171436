"""Engine and session factory for both engines.

SQLite runs in WAL mode with foreign keys on. Its transactions begin DEFERRED for reads and IMMEDIATE for
writes (`write_session`), so two writers serialize at BEGIN instead of failing late on a lock upgrade.
PostgreSQL takes row locks (SELECT ... FOR UPDATE) where order matters.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from trialmgr.db import models_accounts, models_audit, models_crf, models_notify, models_trial  # noqa: F401  (register tables on Base.metadata)
from trialmgr.db.base import Base

__all__ = ["Base", "Database", "make_engine"]


class DatabaseUnavailable(Exception):
    """The database cannot be reached; the message is one clear line."""


def make_engine(url: str, **kwargs) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseUnavailable(f"TRIALMGR_DATABASE_URL is not a database URL: {url!r}") from None
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn, _record):  # pragma: no cover - exercised on every connection
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves, below
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 5)
    kwargs.setdefault("max_overflow", 10)
    return create_engine(url, **kwargs)


@contextmanager
def unit_of_work(session: Session) -> Iterator[Session]:
    """Use `session` for one unit of work: commit on success, roll back on any exception, close at the end."""
    with session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


class Database:
    # Other connections, other processes included, see what this Database commits (a test double bound to one
    # uncommitted connection says no): parallel readers such as audit verification rely on it.
    parallel_readers = True

    def __init__(self, url: str, **engine_kwargs) -> None:
        self.url = url
        self.engine = make_engine(url, **engine_kwargs)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        writer = self.engine.execution_options(sqlite_begin="IMMEDIATE") if self.is_sqlite else self.engine
        self.read_sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.write_sessions = sessionmaker(writer, expire_on_commit=False)

    @contextmanager
    def session(self, *, write: bool = True) -> Iterator[Session]:
        """A unit of work: commit on success, roll back on any exception."""
        factory = self.write_sessions if write else self.read_sessions
        with unit_of_work(factory()) as session:
            yield session

    def check(self) -> None:
        """Raise DatabaseUnavailable with one readable line if the server cannot be reached."""
        from sqlalchemy import text
        from sqlalchemy.exc import OperationalError

        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except OperationalError as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            raise DatabaseUnavailable(f"cannot reach the database at {self.safe_url()}: {reason}") from None

    def safe_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    def dispose(self) -> None:
        self.engine.dispose()
