"""The SVG drawings: well-formed XML, accessible, every number shown, markup in data escaped."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET

from trialmgr.services.reports import POOLED, POOLED_LABEL, ArmFlow, Consort, EnrollmentSeries, Reason
from trialmgr.web import charts

SVG = "{http://www.w3.org/2000/svg}"
XSS = "<script>alert('x')</script> & \"quoted\""


def _consort(blinded=False) -> Consort:
    a = ArmFlow(key="HIP", label="Hip-focused PT", allocated=91, received=89, not_received=2,
                not_received_reasons=[Reason("Withdrew consent: moved", 2)], lost=4,
                lost_reasons=[Reason(XSS, 3), Reason("no reason recorded", 1)], discontinued=1,
                discontinued_reasons=[Reason("Knee surgery", 1)], withdrew=2, withdrew_reasons=[Reason("moved", 2)],
                analysed=89, excluded_from_analysis=2, excluded_reasons=[Reason("Withdrew consent", 2)])
    b = ArmFlow(key="SPINE", label="Spine-focused PT", allocated=93, received=93, analysed=93)
    arms = [a, b]
    if blinded:  # as services.reports.consort pools them for a blinded reader
        arms = [ArmFlow(key=POOLED, label=POOLED_LABEL, allocated=184, received=182, not_received=2,
                        not_received_reasons=[Reason("Withdrew consent: moved", 2)], lost=4, withdrew=2,
                        lost_reasons=[Reason(XSS, 3), Reason("no reason recorded", 1)], analysed=182,
                        excluded_from_analysis=2, excluded_reasons=[Reason("Withdrew consent", 2)])]
    return Consort(trial="hip-pt-clbp", blinded=blinded, assessed=300, excluded=115, not_meeting_criteria=90,
                   by_criterion=[Reason("Age 65 or older", 50), Reason("MMSE score 24 or higher", 41)], declined=20,
                   other=5, other_reasons=[Reason("Eligible, not enrolled", 5)], awaiting_randomization=1,
                   randomized=184, arms=arms)


def _texts(root) -> str:
    return " ".join("".join(t.itertext()) for t in root.iter(f"{SVG}text"))


def test_consort_svg_is_valid_accessible_and_complete():
    svg = charts.consort_svg(_consort())
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg" and root.get("role") == "img"
    title, desc = root.find(f"{SVG}title"), root.find(f"{SVG}desc")
    assert "CONSORT" in title.text and "Randomized: 184." in desc.text
    assert root.get("aria-labelledby") == f"{title.get('id')} {desc.get('id')}"
    text = _texts(root)
    for phrase in ("Assessed for eligibility (n=300)", "Excluded (n=115)", "Not meeting inclusion criteria (n=90)",
                   "Age 65 or older (n=50)", "Declined to participate (n=20)", "Other reasons (n=5)",
                   "Randomized (n=184)", "Allocated to Hip-focused PT (n=91)", "Allocated to Spine-focused PT (n=93)",
                   "Received allocated intervention (n=89)", "Lost to follow-up (n=4)", "Knee surgery (n=1)",
                   "Analysed (n=89)", "Analysed (n=93)", "Excluded from analysis (n=2)",
                   "awaiting randomization (n=1)"):
        assert phrase in text, phrase
    for phase in ("Enrollment", "Allocation", "Follow-up", "Analysis"):
        assert phase in text
    assert root.find(f"{SVG}defs/{SVG}marker") is not None  # arrows


def test_markup_in_reasons_is_escaped_not_interpreted():
    svg = charts.consort_svg(_consort())
    assert "<script" not in svg and "&lt;script&gt;" in svg
    root = ET.fromstring(svg)
    assert not list(root.iter(f"{SVG}script"))
    assert "<script>alert('x')</script> & \"quoted\" (n=3)" in _texts(root)


def test_blinded_diagram_draws_one_pooled_column():
    svg = charts.consort_svg(_consort(blinded=True))
    assert "HIP" not in svg and "SPINE" not in svg and "focused" not in svg and "Group" not in svg
    texts = _texts(ET.fromstring(svg))
    assert "Allocated, arms pooled (n=184)" in texts and "Lost to follow-up (n=4)" in texts
    assert not [t for t in texts if t.startswith("Allocated to")]
    assert "arms are pooled" in charts.consort_description(_consort(blinded=True))


def test_enrollment_chart():
    d0 = dt.date(2026, 1, 5)
    series = EnrollmentSeries([(d0, 3), (d0 + dt.timedelta(days=10), 10), (d0 + dt.timedelta(days=40), 25)], 184,
                              d0 + dt.timedelta(days=300))
    svg = charts.enrollment_svg(series, today=d0 + dt.timedelta(days=45), id_prefix="e1")
    root = ET.fromstring(svg)
    text = _texts(root)
    assert "Target 184" in text and "25 randomized" in text and "2026-01-05" in text
    assert "25 of a target of 184" in root.find(f"{SVG}desc").text
    assert root.find(f"{SVG}title").get("id") == "e1-title"
    empty = ET.fromstring(charts.enrollment_svg(EnrollmentSeries([], 184, None)))
    assert "No participants randomized yet" in _texts(empty)
