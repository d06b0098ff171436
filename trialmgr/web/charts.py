"""SVG drawings for the reports: the CONSORT flow diagram and enrollment over time against the target.

Plain SVG 1.1 with presentation attributes only (no CSS, no script), so that the same text works inline
under the pages' Content-Security-Policy, as a downloaded file, and in print: black text on white boxes.
Every drawing has a <title> and a <desc> that says in words what the picture shows, and every piece of
text that came from the database goes through xml.sax.saxutils.escape.
"""

from __future__ import annotations

import datetime as dt
import textwrap
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from trialmgr.services.reports import POOLED, ArmFlow, Consort, EnrollmentSeries, Reason

FONT = "DejaVu Sans, Arial, Helvetica, sans-serif"
FONT_SIZE = 12
LINE_H = 16
PAD = 8
CHAR_W = 6.6  # average glyph width at FONT_SIZE, for wrapping
BOLD_CHAR_W = 8.0  # the widest a bold label's glyphs run on average at FONT_SIZE (DejaVu Sans Bold)
MAX_REASONS = 8
XML_DECL = '<?xml version="1.0" encoding="UTF-8"?>\n'


def _attr(value) -> str:
    return quoteattr(str(value))


def _fmt(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


@dataclass
class _Line:
    text: str
    bold: bool = False
    indent: int = 0


def _wrap(line: _Line, width: float) -> list[_Line]:
    chars = max(12, int((width - 2 * PAD - line.indent * 12) / CHAR_W))
    parts = textwrap.wrap(line.text, chars, max_lines=3, placeholder=" …") or [""]
    return [_Line(p, line.bold, line.indent + (1 if i else 0)) for i, p in enumerate(parts)]


class _Canvas:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.parts: list[str] = []

    def box(self, x: float, y: float, w: float, lines: list[_Line], *, min_h: float = 0,
            fill: str = "#ffffff") -> float:
        wrapped = [piece for line in lines for piece in _wrap(line, w)]
        h = max(min_h, 2 * PAD + LINE_H * len(wrapped))
        self.parts.append(f'<rect x="{_fmt(x)}" y="{_fmt(y)}" width="{_fmt(w)}" height="{_fmt(h)}" '
                          f'fill="{fill}" stroke="#222222" stroke-width="1"/>')
        for i, line in enumerate(wrapped):
            ty = y + PAD + LINE_H * (i + 1) - 4
            weight = ' font-weight="bold"' if line.bold else ""
            self.parts.append(f'<text x="{_fmt(x + PAD + 12 * line.indent)}" y="{_fmt(ty)}"{weight}>'
                              f"{escape(line.text)}</text>")
        return h

    @staticmethod
    def height(w: float, lines: list[_Line]) -> float:
        return 2 * PAD + LINE_H * sum(len(_wrap(line, w)) for line in lines)

    def line(self, x1: float, y1: float, x2: float, y2: float, *, arrow: bool = False, dash: bool = False,
             color: str = "#222222", width: float = 1) -> None:
        extra = f' marker-end="url(#{self.prefix}-arrow)"' if arrow else ""
        extra += ' stroke-dasharray="6 4"' if dash else ""
        self.parts.append(f'<line x1="{_fmt(x1)}" y1="{_fmt(y1)}" x2="{_fmt(x2)}" y2="{_fmt(y2)}" '
                          f'stroke="{color}" stroke-width="{_fmt(width)}"{extra}/>')

    def text(self, x: float, y: float, text: str, *, anchor: str = "start", bold: bool = False,
             size: int = FONT_SIZE, color: str = "#111111", rotate: int = 0) -> None:
        weight = ' font-weight="bold"' if bold else ""
        turn = f' transform="rotate({rotate} {_fmt(x)} {_fmt(y)})"' if rotate else ""
        self.parts.append(f'<text x="{_fmt(x)}" y="{_fmt(y)}" text-anchor="{anchor}" font-size="{size}" '
                          f'fill="{color}"{weight}{turn}>{escape(text)}</text>')

    def document(self, width: float, height: float, title: str, desc: str) -> str:
        p = self.prefix
        head = (f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" role="img" width="{_fmt(width)}" '
                f'height="{_fmt(height)}" viewBox="0 0 {_fmt(width)} {_fmt(height)}" '
                f'aria-labelledby={_attr(f"{p}-title {p}-desc")} font-family={_attr(FONT)} '
                f'font-size="{FONT_SIZE}" fill="#111111" class="chart">'
                f'<title id={_attr(p + "-title")}>{escape(title)}</title>'
                f'<desc id={_attr(p + "-desc")}>{escape(desc)}</desc>'
                f'<defs><marker id={_attr(p + "-arrow")} viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
                f'markerHeight="7" orient="auto"><path d="M 0 0 L 10 5 L 0 10 z" fill="#222222"/></marker></defs>'
                f'<rect x="0" y="0" width="{_fmt(width)}" height="{_fmt(height)}" fill="#ffffff"/>')
        return head + "".join(self.parts) + "</svg>"


def _reason_lines(reasons: list[Reason], indent: int = 1) -> list[_Line]:
    lines = [_Line(f"{r.text} (n={r.n})", indent=indent) for r in reasons[:MAX_REASONS]]
    if len(reasons) > MAX_REASONS:
        rest = sum(r.n for r in reasons[MAX_REASONS:])
        lines.append(_Line(f"… {len(reasons) - MAX_REASONS} more reasons (n={rest})", indent=indent))
    return lines


def consort_description(c: Consort) -> str:
    """The whole diagram in sentences: the <desc>, and the text equivalent under the picture."""
    parts = [f"Assessed for eligibility: {c.assessed}.",
             f"Excluded: {c.excluded} ({c.not_meeting_criteria} not meeting inclusion criteria, "
             f"{c.declined} declined to participate, {c.other} other reasons).",
             f"Enrolled and awaiting randomization: {c.awaiting_randomization}.",
             f"Randomized: {c.randomized}."]
    for a in c.arms:
        parts.append(f"{a.label}: allocated {a.allocated}, received allocated intervention {a.received}, did not "
                     f"receive {a.not_received}; lost to follow-up {a.lost}, discontinued intervention "
                     f"{a.discontinued}, withdrew consent {a.withdrew}; analysed {a.analysed}, excluded from "
                     f"analysis {a.excluded_from_analysis}.")
    if c.blinded:
        parts.append("The arms are pooled: the reader is blinded to the allocation.")
    return " ".join(parts)


def _arm_phase_lines(a: ArmFlow) -> dict[str, list[_Line]]:
    head = "Allocated, arms pooled" if a.key == POOLED else f"Allocated to {a.label}"
    allocation = [_Line(f"{head} (n={a.allocated})", bold=True),
                  _Line(f"Received allocated intervention (n={a.received})", indent=1),
                  _Line(f"Did not receive allocated intervention (n={a.not_received})", indent=1)]
    allocation += _reason_lines(a.not_received_reasons, 2)
    follow = [_Line(f"Lost to follow-up (n={a.lost})", bold=True)] + _reason_lines(a.lost_reasons)
    follow += [_Line(f"Discontinued intervention (n={a.discontinued})", bold=True)]
    follow += _reason_lines(a.discontinued_reasons)
    follow += [_Line(f"Withdrew consent (n={a.withdrew})", bold=True)] + _reason_lines(a.withdrew_reasons)
    analysis = [_Line(f"Analysed (n={a.analysed})", bold=True),
                _Line(f"Excluded from analysis (n={a.excluded_from_analysis})", indent=1)]
    analysis += _reason_lines(a.excluded_reasons, 2)
    return {"Allocation": allocation, "Follow-up": follow, "Analysis": analysis}


def consort_svg(c: Consort, *, id_prefix: str = "consort") -> str:
    n_arms = max(1, len(c.arms))
    col_w, gap, margin, band_w = 300.0, 30.0, 16.0, 26.0
    left = margin + band_w + 10
    arms_w = n_arms * col_w + (n_arms - 1) * gap
    # Enrollment: assessed and randomized centred over the arms, excluded to their right, as CONSORT draws it.
    main_w = 280.0
    main_x = left + max(0.0, arms_w / 2 - main_w / 2)
    ex_x, ex_w = main_x + main_w + 40, 320.0
    width = max(left + arms_w, ex_x + ex_w) + margin
    cv = _Canvas(id_prefix)
    y = margin
    phases: list[tuple[str, float, float]] = []
    start = y
    h = cv.box(main_x, y, main_w, [_Line(f"Assessed for eligibility (n={c.assessed})", bold=True)])
    cx = main_x + main_w / 2
    y_mid = y + h + 20
    excluded = [_Line(f"Excluded (n={c.excluded})", bold=True),
                _Line(f"Not meeting inclusion criteria (n={c.not_meeting_criteria})", indent=1)]
    excluded += _reason_lines(c.by_criterion, 2)
    excluded += [_Line(f"Declined to participate (n={c.declined})", indent=1),
                 _Line(f"Other reasons (n={c.other})", indent=1)]
    excluded += _reason_lines(c.other_reasons, 2)
    ex_h = cv.box(ex_x, y_mid, ex_w, excluded)
    cv.line(cx, y + h, cx, y_mid + ex_h + 30, arrow=False)
    cv.line(cx, y_mid + ex_h / 2, ex_x, y_mid + ex_h / 2, arrow=True)
    y = y_mid + ex_h + 30
    wait_h = cv.box(ex_x, y, ex_w, [_Line(f"Enrolled, awaiting randomization (n={c.awaiting_randomization})")])
    cv.line(cx, y + wait_h / 2, ex_x, y + wait_h / 2, arrow=True)
    cv.line(cx, y, cx, y + wait_h + 20, arrow=True)
    y += wait_h + 20
    rh = cv.box(main_x, y, main_w, [_Line(f"Randomized (n={c.randomized})", bold=True)])
    y += rh
    phases.append(("Enrollment", start, y))

    cols = [left + i * (col_w + gap) for i in range(n_arms)]
    if n_arms == 1:
        cols = [left]
    lines = [_arm_phase_lines(a) for a in c.arms] or [{"Allocation": [_Line("No arms")], "Follow-up": [],
                                                        "Analysis": []}]
    # Branch from Randomized to every column.
    y_branch = y + 18
    cv.line(cx, y, cx, y_branch)
    centers = [x + col_w / 2 for x in cols]
    if len(centers) > 1:
        cv.line(min(centers), y_branch, max(centers), y_branch)
    y = y_branch + 22
    for phase in ("Allocation", "Follow-up", "Analysis"):
        start = y - (22 if phase == "Allocation" else 0)
        h = max(cv.height(col_w, ln[phase]) for ln in lines)
        for x, ln in zip(cols, lines, strict=False):
            cv.line(x + col_w / 2, y - 22, x + col_w / 2, y, arrow=True)
            cv.box(x, y, col_w, ln[phase], min_h=h)
        y += h
        phases.append((phase, start, y))
        y += 22
    height = y - 22 + margin
    for name, top, bottom in phases:
        cv.parts.append(f'<rect x="{_fmt(margin)}" y="{_fmt(top)}" width="{_fmt(band_w)}" '
                        f'height="{_fmt(bottom - top)}" rx="4" fill="#dbe6f4" stroke="#1f5fa8" stroke-width="1"/>')
        mx, my = margin + band_w / 2 + 4, (top + bottom) / 2
        # A label longer than its band (a short phase: one line per arm) is fitted into it, not let overflow.
        room, wanted = bottom - top - 2 * PAD, len(name) * BOLD_CHAR_W
        fit = (f' textLength="{_fmt(room)}" lengthAdjust="spacingAndGlyphs"' if wanted > room else "")
        cv.parts.append(f'<text x="{_fmt(mx)}" y="{_fmt(my)}" text-anchor="middle" font-weight="bold"{fit} '
                        f'transform="rotate(-90 {_fmt(mx)} {_fmt(my)})">{escape(name)}</text>')
    title = f"CONSORT flow diagram, trial {c.trial}"
    return cv.document(width, height, title, consort_description(c))


# -- enrollment over time ---------------------------------------------------------------------------------------

def enrollment_description(s: EnrollmentSeries, today: dt.date | None = None) -> str:
    total = s.points[-1][1] if s.points else 0
    text = f"Cumulative participants randomized: {total} of a target of {s.target}"
    if s.points:
        text += f", from {s.points[0][0].isoformat()} to {s.points[-1][0].isoformat()}"
    text += "."
    if s.projected_date:
        text += f" At the average rate so far the target is reached about {s.projected_date.isoformat()}."
    elif s.points and total >= s.target:
        text += " The target has been reached."
    return text


def _nice_step(top: int) -> int:
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000):
        if top / step <= 6:
            return step
    return max(1, top // 5)


def enrollment_svg(s: EnrollmentSeries, *, today: dt.date | None = None, id_prefix: str = "enrollment") -> str:
    width, height = 680.0, 320.0
    ml, mr, mt, mb = 56.0, 120.0, 24.0, 48.0
    pw, ph = width - ml - mr, height - mt - mb
    cv = _Canvas(id_prefix)
    total = s.points[-1][1] if s.points else 0
    top = max(s.target, total, 1)
    step = _nice_step(top)
    y_max = ((top + step - 1) // step) * step
    if y_max == top:
        y_max += step

    def ypos(v: float) -> float:
        return mt + ph - v / y_max * ph

    # Axes and horizontal grid with labels.
    for v in range(0, y_max + 1, step):
        cv.line(ml, ypos(v), ml + pw, ypos(v), color="#d7dbe3")
        cv.text(ml - 6, ypos(v) + 4, str(v), anchor="end", size=11)
    cv.line(ml, mt, ml, mt + ph)
    cv.line(ml, mt + ph, ml + pw, mt + ph)
    cv.text(16, mt + ph / 2, "Randomized (cumulative)", anchor="middle", size=11, rotate=-90)
    # Target line.
    cv.line(ml, ypos(s.target), ml + pw, ypos(s.target), dash=True, color="#b42318", width=1.5)
    cv.text(ml + pw + 6, ypos(s.target) + 4, f"Target {s.target}", size=11, color="#b42318")
    if not s.points:
        cv.text(ml + pw / 2, mt + ph / 2, "No participants randomized yet", anchor="middle")
    else:
        first = s.points[0][0]
        last = max(s.points[-1][0], today or s.points[-1][0])
        span = max(1, (last - first).days)

        def xpos(d: dt.date) -> float:
            return ml + (d - first).days / span * pw

        path = [f"M {_fmt(xpos(first))} {_fmt(ypos(0))}"]
        prev = 0
        for d, n in s.points:
            path.append(f"L {_fmt(xpos(d))} {_fmt(ypos(prev))} L {_fmt(xpos(d))} {_fmt(ypos(n))}")
            prev = n
        path.append(f"L {_fmt(xpos(last))} {_fmt(ypos(prev))}")
        cv.parts.append(f'<path d="{" ".join(path)}" fill="none" stroke="#1f5fa8" stroke-width="2.5"/>')
        cv.text(ml + pw + 6, ypos(prev) + 4, f"{prev} randomized", size=11, color="#1f5fa8")
        for d in sorted({first, first + (last - first) / 2, last}):
            cv.line(xpos(d), mt + ph, xpos(d), mt + ph + 5)
            cv.text(xpos(d), mt + ph + 18, d.isoformat(), anchor="middle", size=11)
    cv.text(ml + pw / 2, height - 8, "Date of randomization", anchor="middle", size=11)
    desc = enrollment_description(s, today)
    return cv.document(width, height, "Enrollment over time against the target", desc)
