"""Visit windows from the randomization date, and each visit's status on a given day.

Dates are dates: windows are whole calendar days computed with date arithmetic, so month ends, leap years and
time zones cannot shift them. "Today" is the caller's business (the service passes the UTC date).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

from trialmgr.domain.protocol_model import Protocol, Visit


class VisitStatus(StrEnum):
    UPCOMING = "upcoming"  # the window has not opened yet
    OPEN = "open"  # today is inside the window
    OVERDUE = "overdue"  # the window has closed and nothing was recorded
    MISSED = "missed"  # staff recorded that the visit did not take place
    COMPLETED = "completed"
    COMPLETED_OUT_OF_WINDOW = "completed_out_of_window"
    NOT_EXPECTED = "not_expected"  # the participant's follow-up ended (withdrew, lost, completed) before it


@dataclass(frozen=True)
class Window:
    code: str
    label: str
    target: dt.date
    start: dt.date
    end: dt.date

    def contains(self, day: dt.date) -> bool:
        return self.start <= day <= self.end

    def describe(self) -> str:
        return f"{self.start.isoformat()} to {self.end.isoformat()}"


def window(visit: Visit, anchor: dt.date) -> Window:
    target = anchor + dt.timedelta(days=visit.day)
    return Window(visit.code, visit.label, target, target + dt.timedelta(days=visit.window_start),
                  target + dt.timedelta(days=visit.window_end))


def windows(protocol: Protocol, anchor: dt.date) -> list[Window]:
    """Every scheduled visit's window, anchored on the randomization date."""
    return [window(v, anchor) for v in protocol.visits]


def status(w: Window | None, *, today: dt.date, visit_date: dt.date | None, complete: bool,
           missed: bool = False, ended: bool = False) -> VisitStatus:
    """A visit's status. Unscheduled visits (no window) are open until complete. `ended`: the participant's
    follow-up is over (withdrawn, lost, completed), so a visit not done is no longer expected, not upcoming or
    overdue."""
    if missed:
        return VisitStatus.MISSED
    if complete and visit_date is not None:
        if w is None or w.contains(visit_date):
            return VisitStatus.COMPLETED
        return VisitStatus.COMPLETED_OUT_OF_WINDOW
    if ended:
        return VisitStatus.NOT_EXPECTED
    if w is None:
        return VisitStatus.OPEN
    if today < w.start:
        return VisitStatus.UPCOMING
    if today <= w.end:
        return VisitStatus.OPEN
    return VisitStatus.OVERDUE


def next_due(ws: list[Window], today: dt.date) -> Window | None:
    """The first visit whose window has not closed yet."""
    return next((w for w in ws if w.end >= today), None)
