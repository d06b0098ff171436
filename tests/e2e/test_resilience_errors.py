"""Database outages are 503s in plain words in both adapters, other database errors stay 500s.

In-process (the Flask test client): a page's service is made to fail the way a driver fails when the server
is gone, restarting, read-only or full, and the answer is checked for each adapter. The live tests in the
other test_resilience_* files show the same answers from a real gunicorn against a real outage.
"""

from __future__ import annotations

import sqlite3

import psycopg
import pytest
from sqlalchemy import exc as sa_exc

from trialmgr.db.availability import refusal


def dbapi(orig: Exception, cls=sa_exc.OperationalError, **kw) -> sa_exc.DBAPIError:
    return cls("SELECT 1", {}, orig, **kw)


def pg(state: str, msg: str) -> Exception:
    """The psycopg exception class the server's SQLSTATE maps to (it carries the SQLSTATE itself)."""
    return psycopg.errors.lookup(state)(msg)


@pytest.mark.parametrize(("exc", "code"), [
    (dbapi(psycopg.OperationalError("connection failed: Connection refused")), "database_unavailable"),
    (dbapi(pg("57P01", "terminating connection due to administrator command")), "database_unavailable"),
    (dbapi(pg("57P03", "the database system is starting up")), "database_unavailable"),
    (dbapi(pg("25006", "cannot execute INSERT in a read-only transaction"), sa_exc.InternalError),
     "database_read_only"),
    (dbapi(pg("53100", "could not extend file: No space left on device")), "database_full"),
    (dbapi(sqlite3.OperationalError("attempt to write a readonly database")), "database_read_only"),
    (dbapi(sqlite3.OperationalError("database or disk is full")), "database_full"),
    (dbapi(sqlite3.OperationalError("database is locked")), "database_busy"),
    (dbapi(sqlite3.OperationalError("unable to open database file")), "database_unavailable"),
    (dbapi(Exception("server closed the connection"), sa_exc.DBAPIError, connection_invalidated=True),
     "database_unavailable"),
    (sa_exc.TimeoutError("QueuePool limit reached"), "database_busy"),
])
def test_outages_are_recognised(exc, code):
    why = refusal(exc)
    assert why is not None and why.code == code


@pytest.mark.parametrize("exc", [
    dbapi(sqlite3.OperationalError("no such table: participant")),
    dbapi(sqlite3.IntegrityError("UNIQUE constraint failed"), sa_exc.IntegrityError),
    dbapi(psycopg.errors.UndefinedTable("relation does not exist"), sa_exc.ProgrammingError),
    ValueError("not a database error"),
])
def test_bugs_are_not_outages(exc):
    assert refusal(exc) is None


@pytest.fixture
def failing(app, monkeypatch):
    """Make the participant list fail with the given exception, in both adapters."""
    from trialmgr.services import enrollment

    def _fail(exc: BaseException) -> None:
        def boom(*_a, **_kw):
            raise exc

        monkeypatch.setattr(enrollment, "list_participants", boom)

    return _fail


@pytest.fixture
def token(db, actor, make_user, trial):
    from trialmgr.services import accounts

    make_user("ivy", f"{trial}:investigator")
    with db.session() as s:
        _, plaintext = accounts.create_token(s, actor, accounts.get_user(s, "ivy"), trial_id=trial,
                                             role="investigator", name="t")
    return plaintext


def test_api_answers_an_outage_with_a_clear_503(client, failing, token, trial):
    failing(dbapi(sqlite3.OperationalError("attempt to write a readonly database")))
    r = client.get(f"/api/v1/trials/{trial}/participants", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 503 and r.headers["Retry-After"] == "5"
    assert r.get_json()["error"]["code"] == "database_read_only"
    assert "refuses writes" in r.get_json()["error"]["message"]

    failing(dbapi(psycopg.OperationalError("server closed the connection unexpectedly")))
    r = client.get(f"/api/v1/trials/{trial}/participants", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 503 and r.get_json()["error"]["code"] == "database_unavailable"
    assert "cannot be reached" in r.get_json()["error"]["message"]


def test_pages_answer_an_outage_with_a_clear_503_page(client, failing, make_user, login, trial):
    make_user("ivy", f"{trial}:investigator")
    assert login("ivy").status_code == 302
    failing(dbapi(psycopg.OperationalError("server closed the connection unexpectedly")))
    r = client.get(f"/t/{trial}/participants")
    assert r.status_code == 503
    page = r.get_data(as_text=True)
    assert "cannot be reached" in page and "Traceback" not in page


def test_other_database_errors_stay_500(app, client, failing, token, trial):
    app.config["PROPAGATE_EXCEPTIONS"] = False  # as in production: the 500 handler answers
    failing(dbapi(sqlite3.OperationalError("no such table: participant")))
    r = client.get(f"/api/v1/trials/{trial}/participants", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 500
    assert r.get_json()["error"]["code"] == "something_went_wrong"
