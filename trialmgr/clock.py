"""The server's clock: UTC now and today, in one place.

`travel_to` exists for `trialmgr demo` only, which builds a synthetic trial whose participants were enrolled
over past months; nothing else moves the clock.
"""

from __future__ import annotations

import contextvars
import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

_offset: contextvars.ContextVar[dt.timedelta | None] = contextvars.ContextVar("trialmgr_clock_offset", default=None)


def now() -> dt.datetime:
    moment = dt.datetime.now(dt.UTC)
    offset = _offset.get()
    return moment + offset if offset is not None else moment


def today() -> dt.date:
    return now().date()


@contextmanager
def travel_to(moment: dt.datetime) -> Iterator[None]:
    token = _offset.set(moment - dt.datetime.now(dt.UTC))
    try:
        yield
    finally:
        _offset.reset(token)
