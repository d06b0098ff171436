"""Whole numbers from requests, checked before they reach the database.

Python's int() takes "²" (str.isdigit() says yes, int() raises) and numbers no database column can hold
(SQLite raises OverflowError, PostgreSQL "out of range"): both were server errors before these checks.
"""

from __future__ import annotations

MAX_ID = 2**31 - 1  # INTEGER primary keys
MAX_BIGINT = 2**63 - 1


def whole(text: str, maximum: int) -> bool:
    """Whether `text` is an ASCII whole number from 0 to `maximum`."""
    return text.isascii() and text.isdigit() and len(text) <= len(str(maximum)) and int(text) <= maximum


def is_id(value: object) -> bool:
    """A JSON value usable as a row id: an int (not a bool) from 1 to MAX_ID."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_ID
