"""HTML adapter: blueprints, templates, WTForms. parse -> service -> commit -> render."""

from __future__ import annotations

import uuid

from flask import Flask, g, request
from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect
from werkzeug.routing import IntegerConverter

csrf = CSRFProtect()
login_manager = LoginManager()

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


class BoundedInt(IntegerConverter):
    """<int:...> in URLs: at most 9 digits, so every value fits an INTEGER id. A longer number is a 404 rather
    than a database overflow (SQLite raises OverflowError, PostgreSQL "out of range"). Limited in the pattern,
    not with `max`: a value refused after matching makes werkzeug answer 405 for a rule with other methods."""

    regex = r"\d{1,9}"


def init_app(app: Flask) -> None:
    app.url_map.converters["int"] = BoundedInt
    from trialmgr import outbox
    from trialmgr.web import account, admin, auth, db, errors, home, monitor, ops, report_pages
    from trialmgr.web import crf as crf_pages
    from trialmgr.web import data as data_pages
    from trialmgr.web import enrollment as enrollment_pages
    from trialmgr.web import queries as query_pages
    from trialmgr.web import randomization as randomization_pages
    from trialmgr.web import visits as visit_pages

    db.init_app(app)
    csrf.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please sign in to continue."
    login_manager.session_protection = "basic"
    auth.init_login(login_manager)

    @app.before_request
    def _request_id() -> None:
        supplied = request.headers.get("X-Request-ID", "")
        g.request_id = supplied if 8 <= len(supplied) <= 64 and supplied.isalnum() else uuid.uuid4().hex

    @app.after_request
    def _headers(response):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        response.headers["X-Request-ID"] = g.get("request_id", "")
        return response

    app.register_blueprint(auth.bp)
    app.register_blueprint(account.bp)
    app.register_blueprint(admin.bp)
    account.init_app(app)
    app.register_blueprint(home.bp)
    app.register_blueprint(monitor.bp)
    app.register_blueprint(enrollment_pages.bp)
    app.register_blueprint(randomization_pages.bp)
    app.register_blueprint(report_pages.bp)
    app.register_blueprint(crf_pages.bp)
    app.register_blueprint(visit_pages.bp)
    app.register_blueprint(query_pages.bp)
    app.register_blueprint(data_pages.bp)
    app.register_blueprint(ops.bp)
    ops.init_app(app)
    errors.init_app(app)
    outbox.install(app)  # e-mail notifications: sent after commit, at the end of the request
