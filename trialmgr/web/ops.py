"""Operations: /healthz for load balancers and monitoring, and structured request logs with request ids."""

from __future__ import annotations

import json
import logging
import time

from flask import Blueprint, Flask, g, jsonify, request

from trialmgr.state import state
from trialmgr.web.access import PUBLIC, allow

bp = Blueprint("ops", __name__)
log = logging.getLogger("trialmgr.request")


@bp.get("/healthz")
@allow(PUBLIC)
def healthz():
    """200 when the database answers, the schema is at head and the keys are present; 503 otherwise.

    The body names what is wrong but never a secret or a path to one.
    """
    from sqlalchemy.exc import DBAPIError

    from trialmgr import keys
    from trialmgr.db import DatabaseUnavailable, migrate

    st = state()
    checks: dict[str, str] = {}
    try:
        st.db.check()
        checks["database"] = "ok"
        current, head = migrate.current_revision(st.db.engine), migrate.head_revision()
        checks["migrations"] = "ok" if current == head else f"at {current}, head is {head}: run trialmgr init"
    except (DatabaseUnavailable, DBAPIError):  # DBAPIError: the server went away between the two queries
        checks["database"] = "unreachable"
        checks["migrations"] = "unknown"
    for name, path in (("audit_signing_key", keys.AUDIT_KEY_FILE), ("allocation_key", keys.ALLOCATION_KEY_FILE),
                       ("credentials_key", keys.CREDENTIALS_KEY_FILE)):
        checks[name] = "ok" if st.settings.key_path(path).exists() else "missing"
    ok = all(v == "ok" for v in checks.values())
    response = jsonify({"status": "ok" if ok else "unavailable", "checks": checks})
    response.status_code = 200 if ok else 503
    return response


class JsonFormatter(logging.Formatter):
    """One JSON object per line: easy to ship, grep and aggregate."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
               "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        doc.update(getattr(record, "fields", {}))
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def init_app(app: Flask) -> None:
    if not app.testing and not logging.getLogger("trialmgr").handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        handler.formatter.converter = time.gmtime
        root = logging.getLogger("trialmgr")
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False

    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def _log(response):
        if request.path.startswith("/static/"):
            return response
        actor = g.get("actor")
        log.info("%s %s %s", request.method, request.path, response.status_code, extra={"fields": {
            "request_id": g.get("request_id"), "method": request.method, "path": request.path,
            "status": response.status_code, "ms": round((time.perf_counter() - g.get("started", time.perf_counter()))
                                                        * 1000, 1),
            "user": actor.username if actor else None, "role": str(actor.role) if actor and actor.role else None,
            "client": request.remote_addr}})
        return response
