"""Error pages: clear words, no tracebacks, nothing about the allocation list."""

from __future__ import annotations

from flask import Flask, render_template, request
from flask_wtf.csrf import CSRFError

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
