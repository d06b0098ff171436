"""Screening, enrollment and randomization through the HTML pages, as each role would use them."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import func, select, update

from tests.support import csrf_token, eligible_answers
from trialmgr import clock
from trialmgr.db.models_audit import AuditEntry
from trialmgr.db.models_trial import Participant, Screening, StratumCursor
from trialmgr.domain.errors import ConsentMissing
from trialmgr.domain.vocab import ParticipantStatus
from trialmgr.services import enrollment, randomization, visits

T = "/t/hip-pt-clbp"
ARM_WORDS = ("Hip-focused PT", "Spine-focused PT", "HIP", "SPINE")
XSS = "<script>alert(1)</script>"


def post(client, path: str, data: dict, *, token_from: str | None = None):
    body = dict(data)
    body["csrf_token"] = csrf_token(client, token_from or path)
    return client.post(path, data=body)


def count(db, model) -> int:
    with db.session(write=False) as s:
        return s.scalar(select(func.count()).select_from(model))


def field_block(html: str, field_id: str) -> str:
    """The markup of one field's wrapper (div or fieldset), to check an error sits next to its field."""
    chunks = re.split(r'(?=<(?:div|fieldset) class="field)', html)
    found = [c for c in chunks[1:] if f'id="{field_id}"' in c]
    assert found, f"no field {field_id}"
    return found[0]


def screen_as(client, answers: dict, site: str = "DE"):
    return post(client, f"{T}/screen", {**answers, "site": site, "screening_date": enrollment.today().isoformat()})


@pytest.fixture
def coordinator(make_user, login, trial):
    make_user("cora", "hip-pt-clbp:coordinator@DE", full_name="Cora Ortiz")
    login("cora")
    return "cora"


@pytest.fixture
def randomized(db, actor, settings, trial, allocation_list, enroll):
    """A participant randomized through the service: DE-0001."""
    code = enroll("DE", "F")
    with db.session() as s:
        arm = randomization.randomize(s, actor, settings, trial, code).allocation.arm
    return code, arm


# -- the whole path -----------------------------------------------------------------------------------------

def test_the_whole_path_as_a_coordinator(client, coordinator, db, allocation_list):
    page = client.get(f"{T}/screen")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    # Generated from the protocol: labels, units, help, coded choices, numeric input mode, date input.
    for text in ('<label for="mmse_score">MMSE score</label>', "Mini-Mental State Examination, 0-30.", "months",
                 "F — Female", 'inputmode="numeric"', 'type="date"', f'value="{enrollment.today().isoformat()}"'):
        assert text in html, text
    assert 'value="DE"' in html and 'value="PA"' not in html  # only the coordinator's own site

    # An ineligible candidate: every failed criterion, in words, and no way to enroll.
    resp = screen_as(client, eligible_answers(date_of_birth="1975-06-01", mmse_score="20", red_flags="yes"))
    assert resp.status_code == 302
    html = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "NOT ELIGIBLE" in html and "3 criteria not met" in html
    for text in ("Age 65 or older", "MMSE score 24 or higher", "MMSE score is 20",
                 "Red flags (fever, weight loss, night pain)"):
        assert text in html, text
    assert "Record consent and enroll" not in html and "Candidate declined" not in html

    # An eligible one: consent and enroll, with the consent form version prefilled.
    resp = screen_as(client, eligible_answers(sex="F"))
    screening_url = resp.headers["Location"]
    html = client.get(screening_url).get_data(as_text=True)
    assert "ELIGIBLE" in html and "NOT ELIGIBLE" not in html
    assert "Record consent and enroll" in html and "Candidate declined" in html
    assert re.search(r'id="consent_version"[^>]*value="1.0"', html)
    resp = post(client, screening_url + "/enroll", {"consent_date": enrollment.today().isoformat(),
                                                    "consent_version": "1.0"}, token_from=screening_url)
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"{T}/participants/DE-0001")
    html = client.get(f"{T}/participants/DE-0001").get_data(as_text=True)
    assert "Status: enrolled" in html and ">Randomize</button>" in html and "DE|F" in html
    assert "Date of birth" in html and "1950-03-14" in html

    # The confirmation step, then randomization.
    html = client.get(f"{T}/participants/DE-0001/randomize").get_data(as_text=True)
    assert "You are about to randomize DE-0001 (stratum DE|F). This cannot be undone." in html
    resp = post(client, f"{T}/participants/DE-0001/randomize", {}, token_from=f"{T}/participants/DE-0001/randomize")
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/participants/DE-0001/randomized")
    html = client.get(resp.headers["Location"]).get_data(as_text=True)
    today = enrollment.today()
    m = re.search(r"DE-0001 randomized to (Hip-focused PT|Spine-focused PT) on " + today.isoformat(), html)
    assert m, html
    due = f"visit W4 (Week 4) due {(today + dt.timedelta(days=21)).isoformat()} to " \
          f"{(today + dt.timedelta(days=35)).isoformat()}"
    assert due in html

    html = client.get(f"{T}/participants/DE-0001").get_data(as_text=True)
    assert "Status: randomized" in html and m.group(1) in html and ">Randomize</button>" not in html
    # A repeated confirmation page offers nothing more to do.
    assert client.get(f"{T}/participants/DE-0001/randomize").status_code == 302
    with db.session(write=False) as s:
        assert s.scalar(select(func.count()).select_from(Screening)) == 2
        assert s.scalar(select(Participant.status).where(Participant.code == "DE-0001")).value == "randomized"


def test_arm_is_never_shown_to_blinded_roles(client, make_user, login, randomized, db):
    code, _arm = randomized
    with db.session(write=False) as s:
        screening_id = s.scalar(select(Participant.screening_id).where(Participant.code == code))
    pages = [f"{T}/participants", f"{T}/participants/{code}", f"{T}/participants/{code}/randomized",
             f"{T}/participants?status=randomized"]
    make_user("ada", "hip-pt-clbp:assessor@DE")
    make_user("moe", "hip-pt-clbp:monitor")
    for user, extra in (("ada", []), ("moe", [f"{T}/screenings", f"{T}/screenings/{screening_id}"])):
        c = client.application.test_client()
        login(user, c=c)
        for path in pages + extra:
            resp = c.get(path)
            assert resp.status_code == 200, (user, path)
            html = resp.get_data(as_text=True)
            for word in ARM_WORDS:
                assert word not in html, (user, path, word)
        assert f"{code} randomized on" in c.get(f"{T}/participants/{code}/randomized").get_data(as_text=True)
    # The unblinded investigator sees it.
    make_user("ivy", "hip-pt-clbp:investigator")
    c = client.application.test_client()
    login("ivy", c=c)
    html = c.get(f"{T}/participants/{code}").get_data(as_text=True)
    assert "Hip-focused PT" in html or "Spine-focused PT" in html


def _next_visit_facts(html: str) -> dict[str, str]:
    """The participant page's "Next visit" and "Overdue" facts, as plain text."""
    facts = {}
    for term in ("Next visit", "Overdue"):
        m = re.search(rf"<dt>{term}</dt><dd[^>]*>(.*?)</dd>", html, re.S)
        if m:
            facts[term] = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", m.group(1))).strip()
    return facts


def test_next_visit_follows_the_visits_done_not_the_randomization_date(client, coordinator, db, enroll,
                                                                        allocation_list, actor, settings):
    """Randomized 60 days ago: baseline and week 4 are behind (their windows closed), week 8 is open. The page
    named week 4 with its long-closed window as the next visit whatever had been done since."""
    start = clock.now() - dt.timedelta(days=60)
    with clock.travel_to(start):
        code = enroll("DE", "F")
        with db.session() as s:
            randomization.randomize(s, actor, settings, "hip-pt-clbp", code)
    day0 = start.date()

    def window(first: int, last: int) -> str:
        return f"{(day0 + dt.timedelta(days=first)).isoformat()} to {(day0 + dt.timedelta(days=last)).isoformat()}"

    url = f"{T}/participants/{code}"
    facts = _next_visit_facts(client.get(url).get_data(as_text=True))
    assert facts["Next visit"] == f"W8 (Week 8) due {window(49, 70)}", facts
    assert facts["Overdue"] == "BL (Baseline), W4 (Week 4): their windows have closed", facts

    # Baseline and week 4 marked missed: nothing is overdue; week 8 is still next.
    with db.session() as s:
        p = enrollment.get_participant(s, actor, "hip-pt-clbp", code)
        visits.mark_missed(s, actor, p, "BL", "participant in hospital")
        visits.mark_missed(s, actor, p, "W4", "participant in hospital")
    facts = _next_visit_facts(client.get(url).get_data(as_text=True))
    assert facts == {"Next visit": f"W8 (Week 8) due {window(49, 70)}"}, facts

    # Once the participant has withdrawn no visit is due any more.
    with db.session() as s:
        s.execute(update(Participant).where(Participant.code == code).values(status=ParticipantStatus.WITHDRAWN))
    facts = _next_visit_facts(client.get(url).get_data(as_text=True))
    assert facts == {"Next visit": "none: the participant has withdrawn"}, facts


# -- bad input ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field,value,message", [
    ("back_pain_months", "twelve", "Duration of low back pain must be a whole number."),
    ("back_pain_months", "<b>12</b>", "Duration of low back pain must be a whole number."),
    ("mmse_score", "31", "MMSE score must be between 0 and 30."),
    ("date_of_birth", (enrollment.today() + dt.timedelta(days=3)).isoformat(),
     "Date of birth is after the screening date"),
    ("sex", None, "Sex is required."),
    ("red_flags", None, "Red flags is required."),
])
def test_bad_answers_rerender_with_the_error_next_to_the_field(client, coordinator, db, field, value, message):
    answers = eligible_answers()
    if value is None:
        del answers[field]
    else:
        answers[field] = value
    before = count(db, Screening), count(db, AuditEntry)
    resp = screen_as(client, answers)
    assert resp.status_code == 422
    html = resp.get_data(as_text=True)
    block = field_block(html, field)
    assert message in block and 'aria-invalid="true"' in block
    assert "The screening was not saved" in html and f'href="#{field}"' in html
    # What was typed stays in the form (escaped), the other answers too.
    if value == "<b>12</b>":
        assert "&lt;b&gt;12&lt;/b&gt;" in html and "<b>12</b>" not in html
    elif value is not None:
        assert f'value="{value}"' in html
    if field != "date_of_birth":
        assert 'value="1950-03-14"' in html
    assert (count(db, Screening), count(db, AuditEntry)) == before


def test_an_unknown_site_is_refused_next_to_the_site_field(client, make_user, login, trial, db):
    make_user("inv", "hip-pt-clbp:investigator")
    login("inv")
    html = client.get(f"{T}/screen").get_data(as_text=True)
    assert all(f'value="{s}"' in html for s in ("DE", "PA", "NC"))  # not bound to a site
    resp = post(client, f"{T}/screen", {**eligible_answers(), "site": ""})
    assert resp.status_code == 422
    assert "Site is required." in field_block(resp.get_data(as_text=True), "site")
    assert count(db, Screening) == 0


def test_consent_errors_sit_next_to_their_fields_and_nothing_is_enrolled(client, coordinator, db):
    url = screen_as(client, eligible_answers()).headers["Location"]
    tomorrow = (enrollment.today() + dt.timedelta(days=1)).isoformat()
    resp = post(client, url + "/enroll", {"consent_date": tomorrow, "consent_version": "0.9"}, token_from=url)
    assert resp.status_code == 422
    html = resp.get_data(as_text=True)
    assert "must not be in the future" in field_block(html, "consent_date")
    assert "is not the current consent form version" in field_block(html, "consent_version")
    resp = post(client, url + "/enroll", {"consent_date": "", "consent_version": "1.0"}, token_from=url)
    assert resp.status_code == 422
    assert "Date informed consent was signed is required" in field_block(resp.get_data(as_text=True),
                                                                           "consent_date")
    assert count(db, Participant) == 0


def test_consent_missing_names_each_field(db, actor, trial):
    # Small service addition: ConsentMissing carries {field: message} so pages can place each message.
    with db.session() as s:
        sid = enrollment.screen(s, actor, trial, eligible_answers(), site="DE").screening.id
    with db.session() as s, pytest.raises(ConsentMissing) as info:
        enrollment.enroll(s, actor, trial, sid, consent_date=None, consent_version="")
    assert set(info.value.errors) == {"consent_date", "consent_version"}


# -- order of steps -----------------------------------------------------------------------------------------

def test_pages_offer_only_the_next_valid_step(client, coordinator, db):
    bad = screen_as(client, eligible_answers(mmse_score="10")).headers["Location"]
    resp = post(client, bad + "/enroll", {"consent_date": enrollment.today().isoformat(), "consent_version": "1.0"},
                token_from=bad)
    assert resp.status_code == 422 and "not eligible" in resp.get_data(as_text=True)
    assert count(db, Participant) == 0
    # Declined: no enrollment afterwards.
    good = screen_as(client, eligible_answers()).headers["Location"]
    assert post(client, good + "/decline", {"reason": "moving away"}, token_from=good).status_code == 302
    html = client.get(good).get_data(as_text=True)
    assert "moving away" in html and "Record consent and enroll" not in html
    resp = post(client, good + "/enroll", {"consent_date": enrollment.today().isoformat(),
                                           "consent_version": "1.0"}, token_from=f"{T}/screen")
    assert resp.status_code == 409 and "declined" in resp.get_data(as_text=True)
    # Enrolled but no allocation list yet: the randomization is refused with a clear message.
    ok = screen_as(client, eligible_answers()).headers["Location"]
    post(client, ok + "/enroll", {"consent_date": enrollment.today().isoformat(), "consent_version": "1.0"},
         token_from=ok)
    resp = post(client, f"{T}/participants/DE-0001/randomize", {}, token_from=f"{T}/screen")
    assert resp.status_code == 409 and "has no allocation list yet" in resp.get_data(as_text=True)


def test_decline_needs_a_reason(client, coordinator, db):
    url = screen_as(client, eligible_answers()).headers["Location"]
    resp = post(client, url + "/decline", {"reason": "  "}, token_from=url)
    assert resp.status_code == 422
    assert "Why the candidate declined is required" in field_block(resp.get_data(as_text=True), "reason")
    with db.session(write=False) as s:
        assert s.scalar(select(Screening.outcome)).value == "eligible"


def test_exhausted_stratum_shows_a_clear_message(client, coordinator, db, enroll, allocation_list):
    code = enroll("DE", "F")
    with db.session() as s:
        s.execute(update(StratumCursor).where(StratumCursor.stratum == "DE|F")
                  .values(next_seq=StratumCursor.total + 1))
    resp = post(client, f"{T}/participants/{code}/randomize", {}, token_from=f"{T}/participants/{code}/randomize")
    assert resp.status_code == 409
    html = resp.get_data(as_text=True)
    assert "The allocation list for stratum DE|F has no slots left; DE-0001 was not randomized." in html
    with db.session(write=False) as s:
        assert s.scalar(select(Participant.status).where(Participant.code == code)).value == "enrolled"


# -- access ------------------------------------------------------------------------------------------------

def test_csrf_is_required_on_every_post(client, coordinator, db, enroll, actor, trial):
    code = enroll("DE", "F")
    with db.session(write=False) as s:
        sid = s.scalar(select(Participant.screening_id).where(Participant.code == code))
    with db.session() as s:
        other = enrollment.screen(s, actor, trial, eligible_answers(), site="DE").screening.id
    for path, data in [(f"{T}/screen", eligible_answers(site="DE")),
                       (f"{T}/screenings/{other}/enroll", {"consent_date": "2020-01-01", "consent_version": "1.0"}),
                       (f"{T}/screenings/{other}/decline", {"reason": "no"}),
                       (f"{T}/participants/{code}/randomize", {})]:
        resp = client.post(path, data=data)
        assert resp.status_code == 400 and "expired" in resp.get_data(as_text=True), path
    assert sid and count(db, Participant) == 1


def test_wrong_role_gets_403(client, make_user, login, trial, enroll):
    code = enroll("DE", "F")
    make_user("ada", "hip-pt-clbp:assessor@DE")
    make_user("adm", "hip-pt-clbp:admin")
    make_user("moe", "hip-pt-clbp:monitor")
    cases = {
        "ada": [("get", f"{T}/screen"), ("get", f"{T}/screenings"), ("get", f"{T}/participants/{code}/randomize")],
        "adm": [("get", f"{T}/screen"), ("get", f"{T}/screenings")],
        "moe": [("get", f"{T}/screen"), ("get", f"{T}/participants/{code}/randomize")],
    }
    for user, requests in cases.items():
        c = client.application.test_client()
        login(user, c=c)
        token = csrf_token(c, f"{T}/participants")
        for method, path in requests:
            assert c.get(path).status_code == 403, (user, path)
        resp = c.post(f"{T}/participants/{code}/randomize", data={"csrf_token": token})
        assert resp.status_code == 403, user
        resp = c.post(f"{T}/screen", data={**eligible_answers(), "site": "DE", "csrf_token": token})
        assert resp.status_code == 403, user
    c = client.application.test_client()
    make_user("stranger")
    login("stranger", c=c)
    assert c.get(f"{T}/participants").status_code == 403


def test_other_sites_participants_are_not_found(client, coordinator, db, enroll, allocation_list):
    code = enroll("PA", "M")
    with db.session(write=False) as s:
        sid = s.scalar(select(Participant.screening_id).where(Participant.code == code))
    for path in (f"{T}/participants/{code}", f"{T}/participants/{code}/randomize",
                 f"{T}/participants/{code}/randomized", f"{T}/screenings/{sid}"):
        assert client.get(path).status_code == 404, path
    token = csrf_token(client, f"{T}/participants")
    assert client.post(f"{T}/participants/{code}/randomize", data={"csrf_token": token}).status_code == 404
    assert client.post(f"{T}/screenings/{sid}/decline", data={"csrf_token": token, "reason": "x"}).status_code == 404
    assert code not in client.get(f"{T}/participants").get_data(as_text=True)
    assert code not in client.get(f"{T}/participants?site=PA").get_data(as_text=True)
    with db.session(write=False) as s:
        assert s.scalar(select(Participant.status).where(Participant.code == code)).value == "enrolled"


# -- lists and escaping -----------------------------------------------------------------------------------

def test_screening_log_shows_only_the_coordinators_sites(client, coordinator, db, actor, trial):
    with db.session() as s:
        enrollment.screen(s, actor, trial, eligible_answers(mmse_score="12"), site="PA")
    screen_as(client, eligible_answers(back_pain_months="2"))
    html = client.get(f"{T}/screenings").get_data(as_text=True)
    assert "1 screening," in html and "<td>DE</td>" in html and "<td>PA</td>" not in html
    assert "Low back pain for at least 6 months: duration of low back pain is 2 months" in html
    assert "MMSE" not in html.split("<table")[1]
    resp = client.get(f"{T}/screenings?outcome=maybe")
    assert resp.status_code == 200 and "unknown outcome" in resp.get_data(as_text=True)


def test_participant_list_filters(client, coordinator, enroll, allocation_list, db, actor, settings, trial):
    a, b = enroll("DE", "F"), enroll("DE", "M")
    with db.session() as s:
        randomization.randomize(s, actor, settings, trial, b)
    html = client.get(f"{T}/participants?status=enrolled").get_data(as_text=True)
    assert a in html and b not in html
    html = client.get(f"{T}/participants?status=randomized").get_data(as_text=True)
    assert b in html and a not in html
    assert "unknown status" in client.get(f"{T}/participants?status=zzz").get_data(as_text=True)


def test_markup_typed_into_text_is_escaped_everywhere(client, coordinator, db):
    url = screen_as(client, eligible_answers()).headers["Location"]
    assert post(client, url + "/decline", {"reason": XSS}, token_from=url).status_code == 302
    for path in (url, f"{T}/screenings", f"{T}/screenings?outcome=declined"):
        html = client.get(path).get_data(as_text=True)
        assert XSS not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html, path
    # And in a re-rendered form.
    html = screen_as(client, eligible_answers(mmse_score=XSS)).get_data(as_text=True)
    assert XSS not in html and "&lt;script&gt;" in html


def test_nav_links_for_each_role(client, make_user, login, trial):
    expected = {
        "hip-pt-clbp:coordinator@DE": (["/screen", "/screenings", "/participants"], ["/randomization"]),
        "hip-pt-clbp:investigator": (["/screen", "/screenings", "/participants", "/randomization", "/unblinding"], []),
        "hip-pt-clbp:assessor@DE": (["/participants"], ["/screen", "/randomization", "/screenings"]),
        "hip-pt-clbp:monitor": (["/screenings", "/participants", "/audit/"], ["/screen\"", "/randomization"]),
        "hip-pt-clbp:admin": (["/participants", "/randomization", "/unblinding"], ["/screen\""]),
    }
    for n, (role, (present, absent)) in enumerate(expected.items()):
        make_user(f"user{n}", role)
        c = client.application.test_client()
        login(f"user{n}", c=c)
        home = c.get(c.get("/").headers["Location"]).get_data(as_text=True)
        nav = home.split('<nav class="main"')[1].split("</nav>")[0]
        for p in present:
            assert f'href="{T}{p}' in nav, (role, p)
            target = f"{T}{p}"
            assert c.get(target).status_code == 200, (role, target)
        for p in absent:
            assert f'href="{T}{p}' not in nav, (role, p)
