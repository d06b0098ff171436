from __future__ import annotations

import datetime as dt

import pytest

from trialmgr.domain.schedule import VisitStatus, status, window, windows
from trialmgr.protocols import default_protocol_path, load_protocol_file

PROTO = load_protocol_file(default_protocol_path())
D = dt.date


def test_default_windows_from_the_randomization_date():
    ws = {w.code: w for w in windows(PROTO, D(2026, 11, 24))}
    assert (ws["W4"].start, ws["W4"].target, ws["W4"].end) == (D(2026, 12, 15), D(2026, 12, 22), D(2026, 12, 29))
    assert (ws["BL"].start, ws["BL"].end) == (D(2026, 11, 10), D(2026, 11, 24))
    assert ws["M6"].target == D(2027, 5, 25)


@pytest.mark.parametrize("anchor,visit,target", [
    (D(2024, 1, 31), "W4", D(2024, 2, 28)),      # across a month end in a leap year
    (D(2024, 2, 1), "W4", D(2024, 2, 29)),       # lands on 29 February
    (D(2023, 2, 1), "W4", D(2023, 3, 1)),        # no 29 February in 2023
    (D(2027, 12, 10), "W12", D(2028, 3, 3)),     # across a year end into a leap year
])
def test_window_arithmetic_is_exact(anchor, visit, target):
    assert window(PROTO.visit(visit), anchor).target == target


def test_status_at_the_window_edges():
    w = window(PROTO.visit("W4"), D(2026, 11, 24))  # 2026-12-15 .. 2026-12-29
    assert status(w, today=D(2026, 12, 14), visit_date=None, complete=False) is VisitStatus.UPCOMING
    assert status(w, today=D(2026, 12, 15), visit_date=None, complete=False) is VisitStatus.OPEN
    assert status(w, today=D(2026, 12, 29), visit_date=None, complete=False) is VisitStatus.OPEN  # last day in
    assert status(w, today=D(2026, 12, 30), visit_date=None, complete=False) is VisitStatus.OVERDUE  # first day out
    assert status(w, today=D(2027, 1, 5), visit_date=D(2026, 12, 29), complete=True) is VisitStatus.COMPLETED
    assert status(w, today=D(2027, 1, 5), visit_date=D(2026, 12, 30),
                  complete=True) is VisitStatus.COMPLETED_OUT_OF_WINDOW
    assert status(w, today=D(2027, 1, 5), visit_date=None, complete=False, missed=True) is VisitStatus.MISSED
    assert status(None, today=D(2027, 1, 5), visit_date=D(2027, 1, 5), complete=False) is VisitStatus.OPEN


def test_visits_not_done_are_not_expected_once_follow_up_ended():
    w = window(PROTO.visit("W4"), D(2026, 11, 24))  # 2026-12-15 .. 2026-12-29
    for today in (D(2026, 12, 1), D(2026, 12, 20), D(2027, 1, 5)):  # before, inside and after the window
        assert status(w, today=today, visit_date=None, complete=False, ended=True) is VisitStatus.NOT_EXPECTED
    assert status(w, today=D(2026, 12, 20), visit_date=D(2026, 12, 16), complete=False,
                  ended=True) is VisitStatus.NOT_EXPECTED  # begun, never finished
    assert status(None, today=D(2027, 1, 5), visit_date=D(2027, 1, 5), complete=False,
                  ended=True) is VisitStatus.NOT_EXPECTED  # an unscheduled visit left open
    # What was done or recorded as missed keeps its status.
    assert status(w, today=D(2027, 1, 5), visit_date=D(2026, 12, 29), complete=True,
                  ended=True) is VisitStatus.COMPLETED
    assert status(w, today=D(2027, 1, 5), visit_date=D(2026, 12, 30), complete=True,
                  ended=True) is VisitStatus.COMPLETED_OUT_OF_WINDOW
    assert status(w, today=D(2027, 1, 5), visit_date=None, complete=False, missed=True,
                  ended=True) is VisitStatus.MISSED
