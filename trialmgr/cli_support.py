"""Helpers shared by the CLI modules: the app state, failing with a clear line, error handling."""

from __future__ import annotations

import functools
import sys

import click
from flask import current_app
from sqlalchemy.exc import OperationalError

from trialmgr.config import SettingsError
from trialmgr.db import DatabaseUnavailable
from trialmgr.domain.errors import DomainError, ProtocolInvalid, ValidationFailed
from trialmgr.keys import KeyMissing
from trialmgr.state import AppState


def st() -> AppState:
    return current_app.extensions["trialmgr"]


def fail(message: str, code: int = 1):
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def handle_errors(fn):
    """Bad input and unreachable databases end in clear lines and an exit status, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ProtocolInvalid as exc:
            for line in exc.errors:
                click.echo(line, err=True)
            sys.exit(2)
        except ValidationFailed as exc:
            for name, message in exc.errors.items():
                click.echo(f"error: {name}: {message}", err=True)
            sys.exit(2)
        except DomainError as exc:
            fail(str(exc), 2)
        except (DatabaseUnavailable, SettingsError, KeyMissing) as exc:
            fail(str(exc))
        except OperationalError as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            fail(f"database error: {reason}")

    return wrapper
