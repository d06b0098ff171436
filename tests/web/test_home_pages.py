"""Role home pages and the report pages: what each role finds there, and what blinded roles never see."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest
from sqlalchemy import select

from trialmgr.db.models_trial import Participant
from trialmgr.services import crf, enrollment

T = "hip-pt-clbp"
ARM_WORDS = re.compile(r"\bHIP\b|\bSPINE\b|Hip-focused PT|Spine-focused PT")


@pytest.fixture
def data(db, actor, trial, randomized, enroll):
    """Two randomized at DE (one with a serious adverse event), one at PA, one enrolled at DE, one declined."""
    from tests.support import eligible_answers

    de, pa = randomized("DE", "F"), randomized("PA", "M")
    randomized("DE", "M")
    waiting = enroll("DE", "F")
    with db.session() as s:
        p = s.scalar(select(Participant).where(Participant.code == de))
        crf.save_form(s, actor, p, "adverse_event", {
            "term": "Fall <b>at home</b>", "onset_date": enrollment.today().isoformat(), "severity": "severe",
            "serious": "yes", "serious_criteria": "hospitalization", "relatedness": "unlikely",
            "action_taken": "interrupted", "outcome": "recovering"})
        crf.save_form(s, actor, p, "adverse_event", {
            "term": "Bruise", "onset_date": enrollment.today().isoformat(), "severity": "mild", "serious": "no",
            "relatedness": "not", "action_taken": "none", "outcome": "recovered"})
        res = enrollment.screen(s, actor, T, eligible_answers(), site="DE")
        enrollment.decline(s, actor, T, res.screening.id, "No time")
    return {"de": de, "pa": pa, "waiting": waiting}


def page(client, login, make_user, spec, path, name="uma"):
    make_user(name, f"{T}:{spec}")
    login(name)
    resp = client.get(f"/t/{T}/{path}")
    assert resp.status_code == 200, resp.status_code
    return resp.get_data(as_text=True)


def test_coordinator_home(client, login, make_user, data):
    html = page(client, login, make_user, "coordinator@DE", "coordinator")
    assert f'href="/t/{T}/screen"' in html and "Screen a candidate" in html
    assert "Visits due today" in html and "Due this week" in html and "Overdue visits" in html
    assert data["de"] in html and data["pa"] not in html  # own site only
    assert "Recent enrollments" in html and data["waiting"] in html and "awaiting randomization" in html
    assert "Open queries" in html and f'href="/t/{T}/queries"' in html


def test_assessor_home_never_shows_an_arm(client, login, make_user, data):
    html = page(client, login, make_user, "assessor@DE", "assessor")
    assert "Assessments due now" in html and data["de"] in html and data["pa"] not in html
    assert "pain" in html and "demographics" not in html.split("Assessments due now")[1].split("</section>")[0]
    assert not ARM_WORDS.search(html)


def test_investigator_home(client, login, make_user, data):
    html = page(client, login, make_user, "investigator", "investigator")
    assert "Enrollment progress" in html and "3 of a target of 184" in html
    assert html.count("<svg") == 2 and "CONSORT flow diagram" in html
    assert f'href="/t/{T}/reports/consort.svg"' in html
    assert "Allocated to Hip-focused PT" in html  # the investigator is not blinded in this trial
    assert "Balance by arm" in html and "Site DE" in html and "Stratum DE|F" in html
    ae = html.split('id="ae-h"')[1].split("</section>")[0]
    assert ae.index("SAE") < ae.index("Bruise") and "Fall &lt;b&gt;at home&lt;/b&gt;" in ae
    assert "<b>at home</b>" not in html
    assert f'href="/t/{T}/unblinding"' in html and f'href="/t/{T}/data/"' in html
    assert "The data are <strong" in html and "No signatures" in html
    assert "Declined to participate (n=1)" in html
    assert "E-mail notifications" in html


def test_investigator_sees_list_alerts(client, login, make_user, trial, db, actor, settings, enroll):
    import io

    from tests.support import csrf_token

    make_user("ivan", f"{T}:investigator")
    login("ivan")
    csv = "stratum,sequence,arm,block\n" + "".join(
        f"{s},{i},{arm},{(i + 1) // 2}\n" for s in ["DE|F", "DE|M", "PA|F", "PA|M", "NC|F", "NC|M"]
        for i, arm in enumerate(["HIP", "SPINE"], 1))
    token = csrf_token(client, f"/t/{T}/randomization")
    client.post(f"/t/{T}/randomization/import", content_type="multipart/form-data",
                data={"csrf_token": token, "file": (io.BytesIO(csv.encode()), "l.csv")})
    html = client.get(f"/t/{T}/investigator").get_data(as_text=True)
    assert "only 2 allocation slot(s) left" in html


def test_monitor_home_is_blinded(client, login, make_user, data, db):
    html = page(client, login, make_user, "monitor", "monitor")
    assert "Audit trail integrity" in html and "has not been verified yet" in html and f'href="/t/{T}/audit/"' in html
    assert "Open queries by site" in html and "Source data verification" in html
    # It counts the queries not closed yet, and says so in the queries page's words.
    assert '<th scope="col">Open or answered</th>' in html
    assert "By site" in html and "Adverse event" in html  # SDV by form, with the form's title
    assert "CONSORT flow diagram" in html and "Allocated, arms pooled" in html and "shown pooled" in html
    assert "Allocated to" not in html and "Group 1" not in html
    assert not ARM_WORDS.search(html), ARM_WORDS.search(html)


def test_monitor_worklist_links_the_forms_awaiting_verification(client, login, make_user, data, db):
    from trialmgr.domain.vocab import Role
    from trialmgr.services.context import Actor

    html = page(client, login, make_user, "monitor", "monitor")
    waiting = html.split('id="sdv-waiting-h"')[1].split("</section>")[0]
    assert "Awaiting verification (2)" in html
    link = f'href="/t/{T}/participants/{data["de"]}/forms/adverse_event/1"'
    assert link in waiting and '/forms/adverse_event/2"' in waiting and "any time" in waiting
    assert f'<a href="/t/{T}/participants/{data["de"]}">{data["de"]}</a>' in waiting  # the participant, too
    assert client.get(f"/t/{T}/participants/{data['de']}/forms/adverse_event/1").status_code == 200
    monitor = Actor(username="uma", role=Role.MONITOR, trial=T)
    with db.session() as s:
        p = s.scalar(select(Participant).where(Participant.code == data["de"]))
        crf.verify_source(s, monitor, p, "adverse_event", None, 1)
    waiting = client.get(f"/t/{T}/monitor").get_data(as_text=True).split('id="sdv-waiting-h"')[1]
    assert "Awaiting verification (1)" in waiting and link not in waiting.split("</section>")[0]
    with db.session() as s:
        p = s.scalar(select(Participant).where(Participant.code == data["de"]))
        crf.verify_source(s, monitor, p, "adverse_event", None, 2)
    html = client.get(f"/t/{T}/monitor").get_data(as_text=True)
    assert "Every complete form is verified." in html and "Awaiting verification (" not in html


def test_admin_home_shows_list_counts_never_content(client, login, make_user, data):
    html = page(client, login, make_user, "admin", "admin")
    assert "Administration" in html and "Randomization list status" in html and "Protocol versions" in html
    assert re.search(r"<td>DE\|F</td><td>1</td><td>\d+</td><td>\d+</td>", html)
    list_section = html.split('id="list-h"')[1].split("</section>")[0]
    assert not ARM_WORDS.search(list_section)


@pytest.mark.parametrize("spec,status", [("investigator", 200), ("monitor", 200), ("admin", 200),
                                         ("coordinator@DE", 403), ("assessor@DE", 403)])
def test_consort_download_roles(client, login, make_user, data, spec, status):
    make_user("uma", f"{T}:{spec}")
    login("uma")
    resp = client.get(f"/t/{T}/reports/consort.svg")
    assert resp.status_code == status
    if status == 200:
        assert resp.mimetype == "image/svg+xml"
        assert resp.headers["Content-Disposition"] == f'attachment; filename="{T}-consort.svg"'
        body = resp.get_data(as_text=True)
        root = ET.fromstring(body)
        text = " ".join("".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text"))
        assert "Randomized (n=3)" in text and "Assessed for eligibility (n=5)" in text
        assert bool(ARM_WORDS.search(body)) == (spec != "monitor")  # monitors are blinded by the protocol


def test_reports_page_and_enrollment_download(client, login, make_user, data):
    html = page(client, login, make_user, "monitor", "reports/")
    assert "Enrollment over time" in html and "How the numbers are counted" in html
    assert not ARM_WORDS.search(html)
    resp = client.get(f"/t/{T}/reports/enrollment.svg")
    assert resp.status_code == 200 and "attachment" in resp.headers["Content-Disposition"]
    ET.fromstring(resp.get_data(as_text=True))
    assert client.get(f"/t/{T}/coordinator").status_code == 403


def test_nav_links_to_reports(client, login, make_user, trial):
    html = page(client, login, make_user, "monitor", "monitor")
    nav = html.split('<nav class="main"')[1].split("</nav>")[0]
    assert f'href="/t/{T}/reports/"' in nav
