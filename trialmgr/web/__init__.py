"""HTML adapter: blueprints, templates, WTForms. parse -> service -> commit -> render."""

from __future__ import annotations

import uuid

from flask import Flask, g, request
from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect

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


def init_app(app: Flask) -> None:
    from trialmgr import outbox
    from trialmgr.web import auth, db, errors, home, monitor, ops, report_pages
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
