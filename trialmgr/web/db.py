"""The adapters' side of the unit of work: a read session per request, and write transactions that commit
on success and roll back on any exception (DESIGN.md convention 7)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from flask import Flask, g
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from trialmgr import keys
from trialmgr.db.base import utcnow
from trialmgr.services import audit
from trialmgr.state import state

log = logging.getLogger(__name__)


def read_session() -> Session:
    if "db_read" not in g:
        g.db_read = state().db.read_sessions()
    return g.db_read


@contextmanager
def transaction() -> Iterator[Session]:
    with state().db.session(write=True) as session:
        yield session
    maybe_checkpoint()


_last_look = [0.0]


def maybe_checkpoint() -> None:
    """Sign a periodic checkpoint once the interval has passed; never fails or delays the caller's change.

    Checked at most once per interval per worker; the database decides, so several workers or hosts sign
    one checkpoint between them rather than one each.
    """
    st = state()
    interval = st.settings.checkpoint_interval_seconds
    now = time.monotonic()
    if interval <= 0 or now - _last_look[0] < interval:
        return
    _last_look[0] = now
    try:
        with st.db.session() as s:
            last = audit.last_checkpoint_time(s)
            if last is None or (utcnow() - last).total_seconds() >= interval:
                audit.create_checkpoint(s, keys.audit_private_key(st.settings), "periodic")
    except Exception:  # noqa: BLE001  (the change is already committed; the next look retries)
        log.warning("periodic audit checkpoint failed; will retry", exc_info=True)


def init_app(app: Flask) -> None:
    @app.teardown_appcontext
    def _close(_exc: BaseException | None) -> None:
        session = g.pop("db_read", None)
        if session is not None:
            try:
                session.close()
            except DBAPIError as exc:
                # The connection died under the read session (a database restart): its ROLLBACK failed. The
                # response is already made, perhaps for a committed change: never turn it into a 500.
                log.warning("read session could not be closed cleanly: %s",
                            (str(exc.orig or exc).strip().splitlines() or ["?"])[0][:200])
                with suppress(DBAPIError):
                    session.invalidate()
