"""The adapters' side of the unit of work: a read session per request, and write transactions that commit
on success and roll back on any exception (DESIGN.md convention 7)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask, g
from sqlalchemy.orm import Session

from trialmgr.state import state


def read_session() -> Session:
    if "db_read" not in g:
        g.db_read = state().db.read_sessions()
    return g.db_read


@contextmanager
def transaction() -> Iterator[Session]:
    with state().db.session(write=True) as session:
        yield session


def init_app(app: Flask) -> None:
    @app.teardown_appcontext
    def _close(_exc: BaseException | None) -> None:
        session = g.pop("db_read", None)
        if session is not None:
            session.close()
