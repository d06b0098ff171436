"""Error pages: clear words, no tracebacks, nothing about the allocation list."""

from __future__ import annotations

import logging

from flask import Flask, g, render_template, request
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

log = logging.getLogger("trialmgr.errors")

MESSAGES = {
    400: ("Bad request", "The request could not be understood."),
    401: ("Sign in required", "Please sign in to continue."),
    403: ("Not allowed", "Your role does not allow this page or action."),
    404: ("Not found", "There is nothing at this address."),
    405: ("Not allowed", "This address does not accept that kind of request."),
    413: ("Too large", "The submitted data is larger than this server accepts."),
    500: ("Something went wrong", "The server could not complete the request. Nothing was saved."),
    503: ("Unavailable", "The database cannot be reached at the moment. Nothing was saved; please retry."),
}


def init_app(app: Flask) -> None:
    def render(code: int, detail: str | None = None):
        if request.path.startswith("/api/"):
            from trialmgr.api.errors import json_error

            title, text = MESSAGES.get(code, MESSAGES[500])
            return json_error(code, title.lower().replace(" ", "_"), detail or text)
        title, text = MESSAGES.get(code, MESSAGES[500])
        return render_template("error.html", title=title, text=detail or text, code=code), code

    for code in MESSAGES:
        app.register_error_handler(code, lambda exc, code=code: render(code))

    @app.errorhandler(CSRFError)
    def _csrf(exc: CSRFError):
        return render(400, "The form expired or was not sent by this site. Please reload the page and try again.")

    def _database(exc: Exception):
        """An outage (lost connection, restart, read-only or full database) is a 503 in plain words, logged
        as one line; any other database error is a bug and goes on to the 500 handler with its traceback."""
        from trialmgr.db.availability import refusal

        why = refusal(exc)
        if why is None:
            raise exc
        detail = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        log.warning("database refused the request: %s (%s)", why.code, detail,
                    extra={"fields": {"request_id": g.get("request_id"), "path": request.path, "error": why.code}})
        if request.path.startswith("/api/"):
            from trialmgr.api.errors import json_error

            response = json_error(503, why.code, why.message)
        else:
            response = app.make_response((render_template("error.html", title=MESSAGES[503][0], text=why.message,
                                                          code=503), 503))
        response.headers["Retry-After"] = "5"
        return response

    app.register_error_handler(DBAPIError, _database)
    app.register_error_handler(PoolTimeout, _database)
