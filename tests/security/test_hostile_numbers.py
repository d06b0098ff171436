"""Numbers no column can hold, and digits int() does not read, are refused in words, never a server error.

Found by schemathesis (tests/security/test_api_schemathesis.py): a huge screening id in a JSON body, a huge
integer in a URL and "²" (str.isdigit() says yes, int() raises) each gave a 500 before.
"""

from __future__ import annotations

import pytest

from tests.support import csrf_token
from trialmgr.services import accounts
from trialmgr.services.context import cli_actor

T = "hip-pt-clbp"
HUGE = "9" * 20


@pytest.fixture
def auth(db, make_user, trial):
    make_user("cody", f"{T}:coordinator@DE")
    with db.session() as s:
        token = accounts.create_token(s, cli_actor(), accounts.get_user(s, "cody"), trial_id=T, role="coordinator",
                                      name="t")[1]
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("method,path", [
    ("GET", f"/api/v1/trials/{T}/participants/DE-0001/forms/adverse_event/{HUGE}"),
    ("PUT", f"/api/v1/trials/{T}/participants/DE-0001/forms/adverse_event/{HUGE}"),
    ("POST", f"/api/v1/trials/{T}/screenings/{HUGE}/decline"),
    ("POST", f"/api/v1/trials/{T}/queries/{HUGE}/answer"),
    ("GET", f"/t/{T}/queries/{HUGE}"),
])
def test_huge_ids_in_urls_are_404(client, auth, method, path):
    assert client.open(path, method=method, headers=auth, json={}).status_code == 404


@pytest.mark.parametrize("screening", [int(HUGE), -1, 0, True, "1"])
def test_bad_screening_ids_in_a_body_are_422(client, auth, screening):
    resp = client.post(f"/api/v1/trials/{T}/participants", headers=auth,
                       json={"screening": screening, "consent_date": "2026-01-01", "consent_version": "1.0"})
    assert resp.status_code == 422 and "screening" in resp.get_json()["error"]["fields"]


@pytest.mark.parametrize("query", ["limit=%C2%B2", f"before={HUGE}", "before=%C2%B2", "limit=0"])
def test_audit_paging_numbers(client, make_user, trial, db, query):
    make_user("moe", f"{T}:monitor")
    with db.session() as s:
        token = accounts.create_token(s, cli_actor(), accounts.get_user(s, "moe"), trial_id=T, role="monitor",
                                      name="t")[1]
    resp = client.get(f"/api/v1/trials/{T}/audit?{query}", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 422


def test_token_days_in_other_digits_are_refused_in_words(client, login, make_user, trial):
    make_user("ada", f"{T}:admin")
    login("ada")
    page = f"/t/{T}/admin/tokens"
    resp = client.post(page, data={"username": "ada", "role": "admin", "name": "x", "days": "²",
                                   "csrf_token": csrf_token(client, page)})
    assert resp.status_code == 422 and "whole number" in resp.get_data(as_text=True)
