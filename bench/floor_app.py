"""The floor for API benchmarks: a bare Flask + SQLAlchemy app that inserts one row per POST.

    gunicorn -c deploy/gunicorn.conf.py bench.floor_app:app     (TRIALMGR_DATABASE_URL names the database)

Same web server, same gunicorn settings, same database and driver, same engine pool settings as trialmgr, but
no authentication, no locking, no audit trail: what one write transaction over HTTP costs at the least. The
table is created by the benchmark before the server starts (workers racing to CREATE TABLE would fail).
"""

from __future__ import annotations

import datetime as dt
import json
import os

from flask import Flask, Response, request
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, create_engine, insert

metadata = MetaData()
floor_rows = Table("bench_floor_row", metadata,
                   Column("id", Integer, primary_key=True),
                   Column("participant", String(32), nullable=False),
                   Column("arm", String(16), nullable=False),
                   Column("created_at", DateTime(timezone=True), nullable=False))


def make_engine(url: str):
    if url.startswith("sqlite"):
        return create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)  # as trialmgr.db.make_engine


def create_app(url: str | None = None) -> Flask:
    engine = make_engine(url or os.environ["TRIALMGR_DATABASE_URL"])
    app = Flask(__name__)

    @app.get("/ready")
    def ready():
        return Response('{"ok": true}', mimetype="application/json")

    @app.post("/floor/<participant>")
    def floor(participant: str):
        body = request.get_json(silent=True) or {}
        with engine.begin() as conn:
            new_id = conn.execute(insert(floor_rows).values(
                participant=participant, arm=str(body.get("arm", "HIP"))[:16],
                created_at=dt.datetime.now(dt.UTC)).returning(floor_rows.c.id)).scalar_one()
        return Response(json.dumps({"id": new_id, "participant": participant}), status=201,
                        mimetype="application/json")

    return app


def __getattr__(name: str):
    # `gunicorn bench.floor_app:app` looks `app` up in each worker (preload_app = False): one engine per
    # worker, after the fork; importing the module for its table does not connect anywhere.
    if name == "app":
        globals()["app"] = application = create_app()
        return application
    raise AttributeError(name)
