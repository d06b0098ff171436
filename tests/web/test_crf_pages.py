"""Visits and case report forms through the HTML pages: entry, drafts, reasons for change, missing values,
conflicts, source data verification, queries raised from a field, blinding and escaping."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import select

from tests.support import csrf_token
from trialmgr.db.models_audit import AuditEntry
from trialmgr.db.models_crf import FormRecord, Query, VisitRecord
from trialmgr.services import visits

T = "/t/hip-pt-clbp"
ARM_WORDS = ("Hip-focused PT", "Spine-focused PT", "HIP", "SPINE")
XSS = "<script>alert(1)</script>"


def page(client, url: str) -> str:
    resp = client.get(url)
    assert resp.status_code == 200, (url, resp.status_code)
    return resp.get_data(as_text=True)


def hidden(html: str, name: str) -> str:
    m = re.search(rf'name="{name}"[^>]*value="([^"]*)"', html) or re.search(rf'value="([^"]*)"[^>]*name="{name}"', html)
    assert m, f"no {name} on the page"
    return m.group(1)


def save(client, url: str, values: dict, *, action: str = "complete", version: str | None = None, **extra):
    """Post a form page as a browser would: CSRF token and form version from the page as it was opened."""
    html = page(client, url)
    body = {"csrf_token": hidden(html, "csrf_token"), "form_version": version or hidden(html, "form_version"),
            "action": action, **values, **extra}
    if 'name="visit_date"' in html:
        body.setdefault("visit_date", visits.today().isoformat())
    return client.post(url, data=body)


def field_block(html: str, field_id: str) -> str:
    chunks = re.split(r'(?=<(?:div|fieldset) class="field)', html)
    found = [c for c in chunks[1:] if f'id="{field_id}"' in c]
    assert found, f"no field {field_id}"
    return found[0]


def record(db, form_id: str) -> FormRecord:
    with db.session(write=False) as s:
        return s.scalar(select(FormRecord).where(FormRecord.form_id == form_id))


@pytest.fixture
def coordinator(make_user, login, trial):
    make_user("cora", "hip-pt-clbp:coordinator@DE", full_name="Cora Ortiz")
    login("cora")
    return "cora"


def other_client(client, login, make_user, username: str, role: str):
    make_user(username, role)
    c = client.application.test_client()
    login(username, c=c)
    return c


# -- entering forms ---------------------------------------------------------------------------------------------

def test_baseline_entry_with_error_then_draft_then_complete(client, coordinator, enroll, db):
    code = enroll("DE", "F")
    html = page(client, f"{T}/participants/{code}")
    assert 'id="visits-h"' in html and "BL — Baseline" in html and "not started" in html
    url = f"{T}/participants/{code}/visits/BL/forms/pain"
    assert f'href="{url}"' in html

    html = page(client, url)
    for text in ('<label for="back_pain">Low back pain</label>', 'name="back_pain-missing"', "RF — refused",
                 'name="visit_date"', 'type="date"', ">Save draft</button>", ">Save as complete</button>",
                 'name="form_version" type="hidden" value="0"'):
        assert text in html, text
    assert "Reason for change" not in html  # nothing saved yet

    # A value out of range: the error sits next to its field, both typed values come back.
    resp = save(client, url, {"back_pain": "11", "hip_pain": "3"})
    assert resp.status_code == 422
    html = resp.get_data(as_text=True)
    block = field_block(html, "back_pain")
    assert "Low back pain must be between 0 and 10." in block and 'aria-invalid="true"' in block
    assert 'value="11"' in block and 'value="3"' in field_block(html, "hip_pain")
    assert 'href="#back_pain"' in html and record(db, "pain") is None

    # A draft may be incomplete.
    resp = save(client, url, {"back_pain": "6"}, action="draft")
    assert resp.status_code == 302 and resp.headers["Location"].endswith(url)
    html = page(client, url)
    assert "Pain intensity (NPRS) saved as a draft." in html and "form-draft" in html
    assert 'value="6"' in field_block(html, "back_pain")
    assert 'name="form_version" type="hidden" value="1"' in html

    # "Complete" needs every field, or a coded reason it is missing.
    resp = save(client, url, {"back_pain": "6"})
    assert resp.status_code == 422
    assert "Hip pain is required" in field_block(resp.get_data(as_text=True), "hip_pain")
    resp = save(client, url, {"back_pain": "6", "hip_pain-missing": "RF"})
    assert resp.status_code == 302
    html = page(client, url)
    assert "Pain intensity (NPRS) saved as complete." in html and "form-complete" in html
    assert re.search(r'<option selected value="RF">|<option value="RF" selected', html)
    rec = record(db, "pain")
    assert rec.status == "complete"
    # The timeline shows the form complete.
    assert "complete" in page(client, f"{T}/participants/{code}")


def test_a_value_and_a_missing_reason_together_are_refused(client, coordinator, enroll):
    code = enroll()
    url = f"{T}/participants/{code}/visits/BL/forms/pain"
    resp = save(client, url, {"back_pain": "4", "back_pain-missing": "ND", "hip_pain": "2"})
    assert resp.status_code == 422
    block = field_block(resp.get_data(as_text=True), "back_pain")
    assert "either a value or a reason it is missing, not both" in block


def test_changing_a_saved_value_needs_a_reason(client, coordinator, enroll, db):
    code = enroll()
    url = f"{T}/participants/{code}/visits/BL/forms/pain"
    assert save(client, url, {"back_pain": "6", "hip_pain": "3"}).status_code == 302
    html = page(client, url)
    assert '<label for="change_reason">Reason for change</label>' in html

    resp = save(client, url, {"back_pain": "7", "hip_pain": "3"})
    assert resp.status_code == 422
    html = resp.get_data(as_text=True)
    block = field_block(html, "change_reason")
    assert "Reason for change is required to change saved values (you changed Low back pain)" in block
    assert 'value="7"' in field_block(html, "back_pain")  # what was typed is kept

    resp = save(client, url, {"back_pain": "7", "hip_pain": "3"}, change_reason="transcription error")
    assert resp.status_code == 302
    with db.session(write=False) as s:
        entry = s.scalars(select(AuditEntry).where(AuditEntry.field == "back_pain")
                          .order_by(AuditEntry.seq.desc())).first()
    assert (entry.old_value, entry.new_value, entry.reason) == ("6", "7", "transcription error")


def test_derived_scores_are_shown_read_only(client, coordinator, randomized):
    code = randomized()
    url = f"{T}/participants/{code}/visits/BL/forms/performance"
    resp = save(client, url, {"gait_usual_s": "8.00", "gait_fast_s": "6.00", "tug_s": "9.50", "six_mwt_m": "400",
                              "chair_stand_30s": "12"})
    assert resp.status_code == 302
    html = page(client, url)
    assert "Scores worked out by the server" in html and "Gait speed, usual pace" in html
    assert re.search(r'id="gait_usual_speed">1\.25', html)
    assert 'name="gait_usual_speed"' not in html  # never an input


def test_stale_version_gives_a_clear_conflict_and_keeps_the_values(client, coordinator, enroll, make_user, login,
                                                                    db):
    code = enroll()
    url = f"{T}/participants/{code}/visits/BL/forms/pain"
    assert save(client, url, {"back_pain": "6", "hip_pain": "3"}).status_code == 302
    opened_version = hidden(page(client, url), "form_version")
    other = other_client(client, login, make_user, "ian", "hip-pt-clbp:investigator")
    assert save(other, url, {"back_pain": "5", "hip_pain": "3"}, change_reason="source says 5").status_code == 302

    resp = save(client, url, {"back_pain": "8", "hip_pain": "3"}, version=opened_version, change_reason="typo")
    assert resp.status_code == 409
    html = resp.get_data(as_text=True)
    assert "Pain intensity (NPRS) was changed by ian after you opened it, so your entries were not saved." in html
    assert 'value="8"' in field_block(html, "back_pain")
    assert "Saved now (by someone else): 5" in html
    assert 'name="form_version" type="hidden" value="2"' in html
    assert record(db, "pain").version == 2
    with db.session(write=False) as s:
        assert s.scalar(select(AuditEntry.new_value).where(AuditEntry.field == "back_pain")
                        .order_by(AuditEntry.seq.desc())) == "5"


def test_later_visits_wait_for_randomization(client, coordinator, enroll):
    code = enroll()
    resp = save(client, f"{T}/participants/{code}/visits/W4/forms/pain", {"back_pain": "4", "hip_pain": "2"})
    assert resp.status_code == 409
    assert "is not randomized yet: only baseline can be entered" in resp.get_data(as_text=True)


# -- visits: unscheduled and missed --------------------------------------------------------------------------

def test_add_unscheduled_visit_and_mark_a_visit_missed(client, coordinator, randomized, db):
    code = randomized()
    purl = f"{T}/participants/{code}"
    html = page(client, purl)
    assert "Add unscheduled visit" in html and "Mark visit W4 missed" in html
    token = csrf_token(client, purl)
    resp = client.post(f"{purl}/visits/new", data={"csrf_token": token, "label": " ",
                                                   "visit_date": visits.today().isoformat()})
    assert resp.status_code == 422
    assert "Why the visit took place is required" in field_block(resp.get_data(as_text=True), "label")
    tomorrow = (visits.today() + dt.timedelta(days=1)).isoformat()
    resp = client.post(f"{purl}/visits/new", data={"csrf_token": token, "label": "AE follow-up",
                                                   "visit_date": tomorrow})
    assert resp.status_code == 422
    html = resp.get_data(as_text=True)
    assert "must not be in the future" in field_block(html, "visit_date") and 'value="AE follow-up"' in html
    resp = client.post(f"{purl}/visits/new", data={"csrf_token": token, "label": "AE follow-up",
                                                   "visit_date": visits.today().isoformat()})
    assert resp.status_code == 302
    html = page(client, purl)
    assert "Unscheduled visit UNS1 added." in html and "UNS1 — AE follow-up" in html

    missed = f"{purl}/visits/W4/missed"
    resp = client.post(missed, data={"csrf_token": csrf_token(client, missed), "reason": ""})
    assert resp.status_code == 422
    assert "Why the visit did not take place is required" in field_block(resp.get_data(as_text=True), "reason")
    resp = client.post(missed, data={"csrf_token": csrf_token(client, missed), "reason": "in hospital"})
    assert resp.status_code == 302
    html = page(client, purl)
    assert re.search(r'visit-status visit-missed">missed<', html) and "missed: in hospital" in html
    with db.session(write=False) as s:
        assert s.scalar(select(VisitRecord.missed).where(VisitRecord.code == "W4"))


def test_after_withdrawal_the_visits_not_done_are_not_expected(client, coordinator, randomized, actor, db):
    from trialmgr.db.models_trial import Participant
    from trialmgr.services import crf as crf_service

    code = randomized()
    purl = f"{T}/participants/{code}"
    assert re.search(r'visit-status visit-upcoming">upcoming<', page(client, purl))
    with db.session() as s:
        p = s.scalar(select(Participant).where(Participant.code == code))
        crf_service.save_form(s, actor, p, "withdrawal", {"withdrawal_date": visits.today().isoformat(),
                                                          "type": "withdrawal", "reason": "Moved away"})
    html = page(client, purl)
    # No visit is upcoming, open or overdue any more, and none is offered to be marked missed.
    assert re.search(r'visit-status visit-not_expected">not expected<', html)
    assert not re.search(r'visit-status visit-(upcoming|open|overdue)"', html)
    assert "Mark visit" not in html
    assert 'visit-not_expected">not expected<' in page(client, f"{purl}/visits/W4/forms/pain")
    api = {v["code"]: v["status"] for v in visits_json(client, db, code)}
    assert set(api.values()) == {"not_expected"}, api


def visits_json(client, db, code: str) -> list[dict]:
    """The participant's visits through the JSON API, with a token of the signed-in coordinator's."""
    from trialmgr.services import accounts
    from trialmgr.services.context import cli_actor

    with db.session() as s:
        _row, token = accounts.create_token(s, cli_actor(), accounts.get_user(s, "cora"), trial_id="hip-pt-clbp",
                                            role="coordinator", name="test", days=1)
    resp = client.get(f"/api/v1/trials/hip-pt-clbp/participants/{code}/visits",
                      headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()["visits"]


# -- any-time forms and escaping ------------------------------------------------------------------------------

def test_adverse_event_markup_is_escaped_and_serious_events_are_flagged(client, coordinator, randomized):
    code = randomized()
    purl = f"{T}/participants/{code}"
    html = page(client, purl)
    assert "Report adverse event" in html and "None recorded." in html
    new = f"{purl}/forms/adverse_event"
    values = {"term": XSS, "onset_date": visits.today().isoformat(), "severity": "severe", "serious": "yes",
              "serious_criteria": "hospitalization", "relatedness": "unlikely", "action_taken": "interrupted",
              "outcome": "recovering"}
    resp = save(client, new, {**values, "end_date": "2000-01-01"})
    assert resp.status_code == 422
    html = resp.get_data(as_text=True)
    assert "must be on or after the onset date" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and XSS not in html
    resp = save(client, new, values)
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"{purl}/forms/adverse_event/1")
    for url in (purl, f"{purl}/forms/adverse_event/1"):
        html = page(client, url)
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and XSS not in html, url
    html = page(client, purl)
    assert "Adverse event #1" in html and "SERIOUS" in html


# -- roles and blinding --------------------------------------------------------------------------------------

def test_assessor_enters_outcomes_only_and_never_sees_the_arm(client, make_user, login, randomized, db):
    code = randomized()
    make_user("ada", "hip-pt-clbp:assessor@DE")
    login("ada")
    purl = f"{T}/participants/{code}"
    pain = f"{purl}/visits/W4/forms/pain"
    assert save(client, pain, {"back_pain": "3", "hip_pain": "1"}).status_code == 302

    log = f"{purl}/visits/W4/forms/session_log"
    resp = client.get(log)
    assert resp.status_code == 403
    assert "outcome assessors see and enter outcome forms only" in resp.get_data(as_text=True).lower()
    resp = client.post(log, data={"csrf_token": csrf_token(client, pain), "sessions_planned": "8",
                                  "sessions_attended": "8", "home_program": "all", "action": "complete"})
    assert resp.status_code == 403 and record(db, "session_log") is None
    assert client.get(f"{purl}/forms/adverse_event").status_code == 403

    html = page(client, purl)
    assert "Treatment session log review <span class=\"muted\">(entered by site staff)" in html
    assert "Not shown to outcome assessors" in html and "Report adverse event" not in html
    for url in (purl, pain, f"{purl}/visits/BL/forms/qbpds", f"{T}/queries"):
        html = page(client, url)
        for word in ARM_WORDS:
            assert word not in html, (url, word)


def test_monitor_pages_show_no_arm_and_no_entry_form(client, make_user, login, randomized):
    code = randomized()
    make_user("moe", "hip-pt-clbp:monitor")
    login("moe")
    for url in (f"{T}/participants/{code}", f"{T}/participants/{code}/visits/BL/forms/pain"):
        html = page(client, url)
        for word in ARM_WORDS:
            assert word not in html, (url, word)
    html = page(client, f"{T}/participants/{code}/visits/BL/forms/pain")
    assert "This form has not been entered yet." in html and ">Save draft<" not in html
    assert "Add unscheduled visit" not in page(client, f"{T}/participants/{code}")


# -- source data verification and queries from the form ------------------------------------------------------

def test_monitor_sdv_then_a_change_clears_it(client, coordinator, randomized, make_user, login, db):
    code = randomized()
    url = f"{T}/participants/{code}/visits/BL/forms/pain"
    assert save(client, url, {"back_pain": "6", "hip_pain": "3"}, action="draft").status_code == 302
    moe = other_client(client, login, make_user, "moe", "hip-pt-clbp:monitor")
    html = page(moe, url)
    assert "SDV: mark verified" not in html  # a draft cannot be verified
    assert save(client, url, {"back_pain": "6", "hip_pain": "3"}).status_code == 302

    html = page(moe, url)
    assert "not source-verified" in html and "SDV: mark verified" in html
    assert f'href="{T}/audit/history?participant={code}&amp;entity=BL/pain&amp;field=back_pain"' in html
    resp = moe.post(url + "/verify", data={"csrf_token": hidden(html, "csrf_token")})
    assert resp.status_code == 302
    html = page(moe, url)
    assert "source verified</span> by moe" in html and "SDV: mark verified" not in html
    assert "source verified" in page(moe, f"{T}/participants/{code}")

    assert save(client, url, {"back_pain": "5", "hip_pain": "3"}, change_reason="source says 5").status_code == 302
    html = page(client, url)
    assert "not source-verified" in html
    assert record(db, "pain").sdv_at is None
    assert "source verified</span>" not in page(moe, url)


def test_monitor_raises_a_query_on_a_field(client, coordinator, randomized, make_user, login, db):
    code = randomized()
    url = f"{T}/participants/{code}/visits/BL/forms/pain"
    assert save(client, url, {"back_pain": "6", "hip_pain": "3"}).status_code == 302
    moe = other_client(client, login, make_user, "moe", "hip-pt-clbp:monitor")
    html = page(moe, url)
    assert '<label for="query-text-back_pain">Query about Low back pain</label>' in html
    token = hidden(html, "csrf_token")
    resp = moe.post(url + "/queries", data={"csrf_token": token, "field_id": "back_pain", "text": "  "})
    assert resp.status_code == 422
    html = resp.get_data(as_text=True)
    assert "Query text on Low back pain is required." in html and "<details class=\"raise\" open>" in html
    resp = moe.post(url + "/queries", data={"csrf_token": token, "field_id": "back_pain",
                                            "text": "Source says 5; please check."})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("#back_pain")
    with db.session(write=False) as s:
        q = s.scalar(select(Query))
    assert (q.field_id, q.status, q.opened_by) == ("back_pain", "open", "moe")
    # The coordinator sees it next to the field and on the timeline.
    html = page(client, url)
    block = field_block(html, "back_pain")
    assert f'href="/t/hip-pt-clbp/queries/{q.id}"' in block and "1 open query" in block
    assert "1 open query" in page(client, f"{T}/participants/{code}")


def test_field_history_names_the_field_and_leads_back_to_the_form(client, coordinator, randomized, make_user,
                                                                  login):
    """The page was headed with the field's code ("History of back_pain"), named the record twice ("Participant
    DE-0001, BL/pain") and offered no way back to the form it was opened from."""
    code = randomized()
    url = f"{T}/participants/{code}/visits/BL/forms/pain"
    assert save(client, url, {"back_pain": "6", "hip_pain": "3"}).status_code == 302
    moe = other_client(client, login, make_user, "moe", "hip-pt-clbp:monitor")
    link = re.search(r'href="([^"]*/audit/history\?[^"]*field=back_pain[^"]*)"', page(moe, url)).group(1)
    html = page(moe, link.replace("&amp;", "&"))
    assert "<h1>History of Low back pain</h1>" in html
    assert f"Participant {code}: Pain intensity (NPRS) at visit BL, field back_pain." in html
    assert f'<a href="{url}#back_pain">Back to Pain intensity (NPRS)</a>' in html
    assert ">6<" in html
    # A value of the participant record itself (no form to go back to).
    html = page(moe, f"{T}/audit/history?participant={code}&entity={code}&field=status")
    assert "<h1>History of status</h1>" in html and f"Participant {code}: the participant record." in html
    assert f'<a href="{T}/participants/{code}">Back to participant {code}</a>' in html


# -- CSRF ---------------------------------------------------------------------------------------------------

def test_csrf_is_required_on_every_post(client, coordinator, randomized, db):
    code = randomized()
    purl = f"{T}/participants/{code}"
    for path, data in [(f"{purl}/visits/BL/forms/pain", {"back_pain": "1", "hip_pain": "1", "action": "complete"}),
                       (f"{purl}/forms/adverse_event", {"term": "fall"}),
                       (f"{purl}/visits/BL/forms/pain/verify", {}),
                       (f"{purl}/visits/BL/forms/pain/queries", {"field_id": "back_pain", "text": "x"}),
                       (f"{purl}/visits/new", {"label": "x", "visit_date": visits.today().isoformat()}),
                       (f"{purl}/visits/W4/missed", {"reason": "x"})]:
        resp = client.post(path, data=data)
        assert resp.status_code == 400 and "expired" in resp.get_data(as_text=True), path
    assert record(db, "pain") is None and record(db, "adverse_event") is None
