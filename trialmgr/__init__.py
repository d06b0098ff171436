"""trialmgr: randomized-trial management and concealed randomization.

`create_app(settings=None)` builds the Flask application; nothing else runs at import time.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from trialmgr.config import Settings


def create_app(settings: Settings | None = None, *, cli: bool = False) -> Flask:
    from flask import Flask

    from trialmgr import api, web
    from trialmgr.config import SettingsError, load_settings
    from trialmgr.state import AppState

    settings = settings or load_settings()
    if not settings.secret_key and not cli:
        raise SettingsError(
            f"no secret key: run `trialmgr init` to create one in {settings.instance_path}, "
            "or set TRIALMGR_SECRET_KEY"
        )
    app = Flask(__name__, instance_path=str(settings.instance_path), instance_relative_config=False,
                template_folder="web/templates", static_folder="web/static")
    app.config.update(
        SECRET_KEY=settings.secret_key or None,
        TESTING=settings.testing,
        MAX_CONTENT_LENGTH=settings.max_content_length,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SECURE=settings.secure_cookies,
        PERMANENT_SESSION_LIFETIME=dt.timedelta(minutes=settings.session_idle_minutes),
        SESSION_REFRESH_EACH_REQUEST=True,
        WTF_CSRF_TIME_LIMIT=None,  # the session's idle timeout bounds a form's life instead
    )
    AppState(settings).init_app(app)
    web.init_app(app)
    api.init_app(app)
    from trialmgr.web.access import check_declarations

    check_declarations(app)
    return app
