"""Per-application resources (settings, database, password hasher), kept in app.extensions."""

from __future__ import annotations

from flask import Flask, current_app

from trialmgr.config import Settings
from trialmgr.db import Database
from trialmgr.services.passwords import Hasher


class AppState:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.database_url)
        self.hasher = Hasher(fast=settings.testing)

    def init_app(self, app: Flask) -> None:
        app.extensions["trialmgr"] = self


def state() -> AppState:
    return current_app.extensions["trialmgr"]
