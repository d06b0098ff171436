"""The API's unit of work: a request that writes checks its token and makes its change in ONE session.

On PostgreSQL a PUT, POST, PATCH or DELETE opens its write session when its bearer token is checked
(trialmgr.api._token), and `transaction()` hands that same session to the view, which commits it on success and
rolls it back on any exception (DESIGN.md convention 7). One pooled connection and one transaction per API write
instead of a read session for the token and a second connection for the change: fewer round trips (pool ping,
BEGIN, ROLLBACK) on the hot path of form saves (bench/bench_form_save_api.py). Reads (GET) keep the request's
read session.

On SQLite a write session takes the database's one write lock at BEGIN (IMMEDIATE), so the token is checked in
the read session instead: a request with a wrong token, or none, never waits for the write lock nor holds it.
There are no round trips to save there.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress

from flask import Flask, g, request
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from trialmgr.db import unit_of_work
from trialmgr.state import state
from trialmgr.web import db as web_db

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_KEY = "api_write_session"


def auth_session() -> Session:
    """The session the bearer token is checked in: the request's write session for a write on PostgreSQL, else
    the read one."""
    if request.method not in WRITE_METHODS or state().db.is_sqlite:
        return web_db.read_session()
    session = g.get(_KEY)
    if session is None:
        session = state().db.write_sessions()
        setattr(g, _KEY, session)
    return session


def shares_write_session(session: Session) -> bool:
    """Whether `session` is the write session the request's change will be made in (see the module's doc)."""
    return g.get(_KEY) is session


@contextmanager
def transaction() -> Iterator[Session]:
    """The write transaction of an API request: the session its token was checked in, or a new one."""
    session = g.pop(_KEY, None)
    if session is None:
        with web_db.transaction() as fresh:
            yield fresh
        return
    with unit_of_work(session):
        yield session
    web_db.maybe_checkpoint()


def init_app(app: Flask) -> None:
    @app.teardown_appcontext
    def _close(_exc: BaseException | None) -> None:
        session = g.pop(_KEY, None)
        if session is not None:  # authenticated (or refused) but never used for a change: nothing to keep
            try:
                session.close()
            except DBAPIError:  # the connection died under it (a database restart): never turn that into a 500
                with suppress(DBAPIError):
                    session.invalidate()
