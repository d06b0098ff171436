"""Data queries through the HTML pages: raised by a monitor on a field, answered by the site, closed by the
monitor; the list with its filters and open counts; who sees which query."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from tests.support import csrf_token
from trialmgr.db.models_crf import Query
from trialmgr.services import crf, enrollment, queries
from trialmgr.services.context import cli_actor

T = "/t/hip-pt-clbp"


def page(client, url: str) -> str:
    resp = client.get(url)
    assert resp.status_code == 200, (url, resp.status_code)
    return resp.get_data(as_text=True)


def client_for(client, login, make_user, username: str, role: str):
    make_user(username, role)
    c = client.application.test_client()
    login(username, c=c)
    return c


def field_block(html: str, field_id: str) -> str:
    chunks = re.split(r'(?=<(?:div|fieldset) class="field)', html)
    found = [c for c in chunks[1:] if f'id="{field_id}"' in c]
    assert found, f"no field {field_id}"
    return found[0]


def enter(db, code: str, form: str, values: dict, visit: str | None = "BL") -> None:
    with db.session() as s:
        p = enrollment.get_participant(s, cli_actor(), "hip-pt-clbp", code)
        crf.save_form(s, cli_actor(), p, form, values, visit_code=visit)


def query_on(db, code: str, form: str, field: str, text: str, visit: str = "BL") -> int:
    with db.session() as s:
        actor = cli_actor()
        p = enrollment.get_participant(s, actor, "hip-pt-clbp", code)
        rec = crf.read_form(s, actor, p, form, visit).record
        return queries.open_query(s, actor, p, rec, field, text).id


@pytest.fixture
def site_data(db, randomized):
    """DE-0001 with baseline pain entered, and PA-0001 with a query on its pain form."""
    de, pa = randomized("DE", "F"), randomized("PA", "M")
    enter(db, de, "pain", {"back_pain": "6", "hip_pain": "3"})
    enter(db, pa, "pain", {"back_pain": "2", "hip_pain": "2"})
    query_on(db, pa, "pain", "hip_pain", "Please confirm hip pain.")
    return de, pa


def test_query_raised_answered_and_closed(client, login, make_user, site_data, db):
    de, _pa = site_data
    moe = client_for(client, login, make_user, "moe", "hip-pt-clbp:monitor")
    cora = client_for(client, login, make_user, "cora", "hip-pt-clbp:coordinator@DE")
    form_url = f"{T}/participants/{de}/visits/BL/forms/pain"

    html = page(moe, form_url)
    token = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
    resp = moe.post(form_url + "/queries", data={"csrf_token": token, "field_id": "back_pain",
                                                 "text": "Source document says 5 <b>not</b> 6."})
    assert resp.status_code == 302
    with db.session(write=False) as s:
        qid = s.scalar(select(Query.id).where(Query.field_id == "back_pain"))

    # The monitor's list: every site, counts per site and participant.
    html = page(moe, f"{T}/queries")
    assert f"Query {qid}" in html and "Low back pain" in html and "Hip pain" in html
    assert "Pain intensity (NPRS), visit BL" in html
    assert re.search(r">DE</a></td><td>1<", html) and re.search(r">PA</a></td><td>1<", html)
    assert re.search(rf">{de}</a></td><td>1<", html)
    assert "Source document says 5 &lt;b&gt;not&lt;/b&gt; 6." in html

    # The coordinator sees only the own site's query, answers it; cannot close it.
    html = page(cora, f"{T}/queries")
    assert f"Query {qid}" in html and "Please confirm hip pain" not in html and ">PA</a>" not in html
    detail = f"{T}/queries/{qid}"
    html = page(cora, detail)
    assert "Send answer" in html and "Close query" not in html
    assert f'href="{form_url}#back_pain"' in html and "Value saved now" in html
    resp = cora.post(detail + "/answer", data={"csrf_token": csrf_token(cora, detail), "answer": " "})
    assert resp.status_code == 422
    assert "Your answer is required." in field_block(resp.get_data(as_text=True), "answer")
    resp = cora.post(detail + "/answer", data={"csrf_token": csrf_token(cora, detail),
                                               "answer": "Corrected from the source."})
    assert resp.status_code == 302
    html = page(cora, detail)
    assert "query-answered" in html and "Corrected from the source." in html and "Answered" in html
    assert cora.post(detail + "/close", data={"csrf_token": csrf_token(cora, detail)}).status_code == 403

    # The monitor closes it; the counts drop.
    html = page(moe, detail)
    assert "Close query" in html and "Send answer" not in html
    assert f"{T}/audit/history?participant={de}" in html  # monitors may read the field's history
    resp = moe.post(detail + "/close", data={"csrf_token": csrf_token(moe, detail), "note": "ok"})
    assert resp.status_code == 302
    html = page(moe, detail)
    assert "query-closed" in html and "Close query" not in html and "Closed" in html
    html = page(moe, f"{T}/queries")
    assert not re.search(r">DE</a></td><td>", html)
    resp = moe.post(detail + "/close", data={"csrf_token": csrf_token(moe, f"{T}/queries")})
    assert resp.status_code == 409 and f"Query {qid} is already closed." in resp.get_data(as_text=True)


def test_answering_a_closed_query_is_refused_in_words(client, login, make_user, site_data, db):
    ivy = client_for(client, login, make_user, "ivy", "hip-pt-clbp:investigator")
    with db.session(write=False) as s:
        qid = s.scalar(select(Query.id))
    detail = f"{T}/queries/{qid}"
    token = csrf_token(ivy, detail)
    assert ivy.post(detail + "/close", data={"csrf_token": token}).status_code == 302
    # An answer sent from a page opened before the query was closed.
    resp = ivy.post(detail + "/answer", data={"csrf_token": token, "answer": "x"})
    assert resp.status_code == 409 and f"query {qid} is closed" in resp.get_data(as_text=True).lower()


def test_list_filters(client, login, make_user, site_data, db):
    de, pa = site_data
    moe = client_for(client, login, make_user, "moe", "hip-pt-clbp:monitor")
    assert "1 query." in page(moe, f"{T}/queries?status=open")
    assert "0 queries." in page(moe, f"{T}/queries?status=closed")
    assert "1 query." in page(moe, f"{T}/queries?site=PA") and "0 queries." in page(moe, f"{T}/queries?site=DE")
    assert "0 queries." in page(moe, f"{T}/queries?participant={de}")
    assert "1 query." in page(moe, f"{T}/queries?participant={pa}")
    html = page(moe, f"{T}/queries?status=bogus")
    assert "Status must be open, answered or closed." in html and 'aria-invalid="true"' in html


def test_other_sites_and_blinded_assessors_see_only_their_queries(client, login, make_user, randomized, db):
    de = randomized("DE", "F")
    enter(db, de, "pain", {"back_pain": "6", "hip_pain": "3"}, visit="W4")
    enter(db, de, "session_log", {"sessions_planned": "8", "sessions_attended": "7", "home_program": "most",
                                  "notes": "hip strengthening going well"}, visit="W4")
    pain_q = query_on(db, de, "pain", "back_pain", "Check pain.", visit="W4")
    log_q = query_on(db, de, "session_log", "notes", "Check notes.", visit="W4")

    ada = client_for(client, login, make_user, "ada", "hip-pt-clbp:assessor@DE")
    html = page(ada, f"{T}/queries")
    assert f"Query {pain_q}" in html and f"Query {log_q}" not in html
    assert ada.get(f"{T}/queries/{log_q}").status_code == 404
    token = csrf_token(ada, f"{T}/queries/{pain_q}")
    assert ada.post(f"{T}/queries/{log_q}/answer", data={"csrf_token": token, "answer": "x"}).status_code == 404
    html = page(ada, f"{T}/queries/{pain_q}")
    assert "Send answer" in html and "/audit/history" not in html  # assessors do not read the audit trail

    pat = client_for(client, login, make_user, "pat", "hip-pt-clbp:coordinator@PA")
    assert "0 queries." in page(pat, f"{T}/queries")
    assert pat.get(f"{T}/queries/{pain_q}").status_code == 404


def test_csrf_is_required(client, login, make_user, site_data, db):
    ivy = client_for(client, login, make_user, "ivy", "hip-pt-clbp:investigator")
    with db.session(write=False) as s:
        qid = s.scalar(select(Query.id))
    for path, data in ((f"{T}/queries/{qid}/answer", {"answer": "x"}), (f"{T}/queries/{qid}/close", {})):
        resp = ivy.post(path, data=data)
        assert resp.status_code == 400 and "expired" in resp.get_data(as_text=True)
    with db.session(write=False) as s:
        assert s.scalar(select(Query.status)) == "open"
