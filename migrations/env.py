"""Alembic environment: the URL comes from trialmgr's Settings, or a connection handed in by trialmgr init."""

from __future__ import annotations

from alembic import context

from trialmgr.db import Base, make_engine
from trialmgr.db.base import UTCDateTime

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        from trialmgr.config import load_settings

        engine = make_engine(load_settings().database_url)
        with engine.connect() as conn:
            _run(conn)
        engine.dispose()
    else:
        _run(connection)


def _render_item(type_, obj, autogen_context):
    # Migrations must not import application types: UTCDateTime is stored as a plain timestamptz.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _run(connection) -> None:
    context.configure(
        render_item=_render_item,
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported: run `trialmgr init` against the database")
run_migrations_online()
