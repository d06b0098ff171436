"""Fixtures shared by every test: settings, a migrated database per engine, one rolled-back transaction
per test, the app, its test client and CLI runner, and builders for users and trials.

TRIALMGR_TEST_DATABASE_URL selects PostgreSQL; the default is a SQLite file. The same suite runs on both.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.orm import Session, sessionmaker

from tests.support import DEFAULT_PROTOCOL, PASSWORD, csrf_token
from trialmgr import create_app
from trialmgr.config import Settings, load_settings
from trialmgr.db import Database, make_engine
from trialmgr.db import migrate as migrations

PG_URL = os.environ.get("TRIALMGR_TEST_DATABASE_URL", "")


@contextmanager
def throwaway_postgres(admin_url: str, prefix: str = "trialmgr_t") -> Iterator[str]:
    """A new, empty database on the server named by admin_url, dropped afterwards.

    Each test session gets its own, so runs that overlap (a developer's and CI's) never share tables.
    """
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    # pool_pre_ping: the server may be restarted during the session (tests/e2e/test_resilience_pg_restart.py)
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory) -> Iterator[str]:
    if PG_URL:
        with throwaway_postgres(PG_URL) as url:
            yield url
        return
    yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"


@pytest.fixture(scope="session")
def engine(database_url):
    eng = make_engine(database_url)
    migrations.upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def instance_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("instance")
    s = load_settings({"instance_path": path, "database_url": "sqlite://", "secret_key": "x"})
    from trialmgr import keys

    keys.ensure_all(s)
    return path


@pytest.fixture
def settings(database_url, instance_dir) -> Settings:
    return load_settings({"instance_path": instance_dir, "database_url": database_url,
                          "secret_key": secrets.token_hex(16), "testing": True,
                          "checkpoint_interval_seconds": 0}, environ={})


class BoundDatabase(Database):
    """The app's Database, bound to the test's connection: every commit becomes a savepoint release and
    the whole test is rolled back at the end."""

    parallel_readers = False  # nothing is committed: another process would see none of it

    def __init__(self, url: str, connection: Connection) -> None:  # noqa: D107
        self.url = url
        self.engine = connection.engine
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self.connection = connection
        # Writes run in savepoints; reads join the test's transaction without one, so closing a request's
        # read session cannot roll back a write made later in the same request.
        self.write_sessions = sessionmaker(bind=connection, join_transaction_mode="create_savepoint",
                                           expire_on_commit=False)
        self.read_sessions = sessionmaker(bind=connection, join_transaction_mode="rollback_only",
                                          expire_on_commit=False)


@pytest.fixture
def connection(engine) -> Iterator[Connection]:
    conn = engine.connect()
    outer = conn.begin()
    try:
        yield conn
    finally:
        outer.rollback()
        conn.close()


@pytest.fixture
def db(settings, connection) -> BoundDatabase:
    return BoundDatabase(settings.database_url, connection)


@pytest.fixture
def session(db) -> Iterator[Session]:
    with db.write_sessions() as s:
        yield s


@pytest.fixture
def app(settings, db):
    application = create_app(settings)
    state = application.extensions["trialmgr"]
    state.db.dispose()
    state.db = db
    return application


@pytest.fixture
def client(app):
    return app.test_client()


class CliRunner:
    """app.test_cli_runner() driving the real `trialmgr` command group against the test app."""

    def __init__(self, app) -> None:
        self._runner = app.test_cli_runner()

    def invoke(self, args: list[str], **kwargs):
        from trialmgr.cli import main

        return self._runner.invoke(main, args=args, **kwargs)


@pytest.fixture
def runner(app):
    return CliRunner(app)


@pytest.fixture
def actor():
    from trialmgr.services.context import cli_actor

    return cli_actor()


@pytest.fixture
def hasher():
    from trialmgr.services.passwords import Hasher

    return Hasher(fast=True)


@pytest.fixture
def load_trial(db, actor):
    """Load a protocol file (the default trial unless given) and return its trial id."""
    from trialmgr.services import trials

    def _load(path: Path = DEFAULT_PROTOCOL) -> str:
        with db.session() as s:
            version, _ = trials.load_protocol(s, actor, path)
            return version.trial_id

    return _load


@pytest.fixture
def trial(load_trial) -> str:
    return load_trial()


@pytest.fixture
def make_user(db, actor, hasher):
    """make_user("carla", "hip-pt-clbp:coordinator@DE", ...) -> username; the password is PASSWORD."""
    from trialmgr.services import accounts

    def _make(username: str, *roles: str, full_name: str | None = None, password: str = PASSWORD) -> str:
        with db.session() as s:
            user = accounts.create_user(s, actor, hasher, username=username,
                                        full_name=full_name or username.title(), password=password)
            for spec in roles:
                trial_id, _, rest = spec.partition(":")
                role, _, site = rest.partition("@")
                accounts.grant_role(s, actor, user, trial_id, role, site or None)
        return username

    return _make


@pytest.fixture
def login(client):
    """Sign the test client in through the real login form (CSRF included)."""

    def _login(username: str, password: str = PASSWORD, c=None):
        c = c or client
        token = csrf_token(c, "/login") if c.application.config.get("WTF_CSRF_ENABLED", True) else ""
        return c.post("/login", data={"username": username, "password": password, "csrf_token": token})

    return _login


@contextmanager
def raises_field(field: str):
    from trialmgr.domain.errors import ValidationFailed

    with pytest.raises(ValidationFailed) as info:
        yield info
    assert field in info.value.errors, info.value.errors


@pytest.fixture
def enroll(db, actor, trial):
    """enroll(site="DE", sex="F") -> participant code, through screen and enroll with consent."""
    from tests.support import eligible_answers
    from trialmgr.services import enrollment

    def _enroll(site: str = "DE", sex: str = "F", trial_id: str = trial) -> str:
        with db.session() as s:
            res = enrollment.screen(s, actor, trial_id, eligible_answers(sex=sex), site=site)
            p = enrollment.enroll(s, actor, trial_id, res.screening.id, consent_date=enrollment.today(),
                                  consent_version="1.0")
            return p.code

    return _enroll


@pytest.fixture
def allocation_list(db, actor, settings, trial):
    from trialmgr.services import randomization

    with db.session() as s:
        return randomization.generate(s, actor, settings, trial).id


@pytest.fixture
def randomized(db, actor, settings, enroll, allocation_list):
    """randomized(site="DE", sex="F") -> code of an enrolled and randomized participant."""
    from trialmgr.services import randomization

    def _make(site: str = "DE", sex: str = "F") -> str:
        code = enroll(site, sex)
        with db.session() as s:
            randomization.randomize(s, actor, settings, "hip-pt-clbp", code)
        return code

    return _make
