from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from tests.support import eligible_answers
from trialmgr.db.models_trial import Allocation, Screening

T = "hip-pt-clbp"


@pytest.fixture
def api(client, runner, make_user, trial):
    """api(username, role_spec) -> a function (method, path, json=None, headers=None) -> response."""

    def _for(username: str, spec: str):
        make_user(username, f"{T}:{spec}")
        role = spec.split("@")[0]
        result = runner.invoke(args=["token", "create", "--user", username, "--trial", T, "--role", role,
                                     "--name", "tests"])
        token = result.stdout.splitlines()[0]

        def call(method: str, path: str, json=None, headers=None):
            h = {"Authorization": f"Bearer {token}", **(headers or {})}
            return client.open(f"/api/v1/trials/{T}{path}", method=method, json=json, headers=h)

        return call

    return _for


def _enroll(call, site="DE", sex="F"):
    s = call("POST", "/screenings", {"site": site, "answers": eligible_answers(sex=sex)})
    assert s.status_code == 201, s.get_json()
    p = call("POST", "/participants", {"screening": s.get_json()["id"], "consent_date": dt.date.today().isoformat(),
                                       "consent_version": "1.0"})
    assert p.status_code == 201, p.get_json()
    return p.get_json()["id"]


def test_screen_enroll_randomize_over_the_api(api, allocation_list):
    coord = api("cora", "coordinator@DE")
    bad = coord("POST", "/screenings", {"answers": eligible_answers(back_pain_months="5")})
    body = bad.get_json()
    assert bad.status_code == 201 and body["eligible"] is False
    assert [f["criterion"] for f in body["failures"]] == ["back_pain_6m"]
    code = _enroll(coord)
    assert code == "DE-0001"
    r = coord("POST", f"/participants/{code}/randomize")
    assert r.status_code == 201
    first = r.get_json()
    assert first["status"] == "randomized" and first["arm"]["code"] in ("HIP", "SPINE") and first["created"]
    again = coord("POST", f"/participants/{code}/randomize")
    assert again.status_code == 200 and again.get_json()["arm"] == first["arm"] and not again.get_json()["created"]
    got = coord("GET", f"/participants/{code}").get_json()
    assert got["arm"] == first["arm"]
    listing = coord("GET", "/participants?status=randomized").get_json()["participants"]
    assert [p["id"] for p in listing] == [code]


def test_blinded_roles_never_receive_the_arm(api, allocation_list):
    coord = api("cora", "coordinator@DE")
    code = _enroll(coord)
    coord("POST", f"/participants/{code}/randomize")
    for name, spec in (("asa", "assessor@DE"), ("mona", "monitor")):
        call = api(name, spec)
        for path in (f"/participants/{code}", "/participants"):
            resp = call("GET", path)
            assert resp.status_code == 200
            text = resp.get_data(as_text=True)
            assert "HIP" not in text and "SPINE" not in text and "Hip-focused" not in text


@pytest.mark.parametrize("payload,field", [
    ({"answers": eligible_answers(back_pain_months="five")}, "back_pain_months"),
    ({"answers": eligible_answers(date_of_birth="2999-01-01")}, "date_of_birth"),
    ({"answers": {}}, "sex"),
    ({"answers": "not an object"}, "answers"),
    ({"answers": eligible_answers(), "site": "ZZ"}, "site"),
    ({"answers": eligible_answers(), "screening_date": "yesterday"}, "screening_date"),
])
def test_bad_screenings_get_422_naming_the_field_and_write_nothing(api, db, payload, field):
    coord = api("cora", "coordinator@DE")
    resp = coord("POST", "/screenings", payload)
    assert resp.status_code == 422
    err = resp.get_json()["error"]
    assert err["code"] == "validation_failed" and field in err["fields"]
    with db.session(write=False) as s:
        assert s.scalar(select(func.count()).select_from(Screening)) == 0


def test_enrollment_errors(api):
    coord = api("cora", "coordinator@DE")
    inel = coord("POST", "/screenings", {"answers": eligible_answers(red_flags="yes")}).get_json()["id"]
    resp = coord("POST", "/participants", {"screening": inel, "consent_date": dt.date.today().isoformat(),
                                           "consent_version": "1.0"})
    assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "not_eligible"
    ok = coord("POST", "/screenings", {"answers": eligible_answers()}).get_json()["id"]
    resp = coord("POST", "/participants", {"screening": ok, "consent_version": "1.0"})
    assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "consent_missing"
    resp = coord("POST", "/participants", {"screening": "one"})
    assert resp.status_code == 422 and "screening" in resp.get_json()["error"]["fields"]


def test_randomize_refusals(api, db, allocation_list):
    coord = api("cora", "coordinator@DE")
    other = api("pat", "coordinator@PA")
    code = _enroll(coord)
    assert other("POST", f"/participants/{code}/randomize").status_code == 404
    assert api("asa", "assessor@DE")("POST", f"/participants/{code}/randomize").status_code == 403
    assert coord("POST", "/participants/DE-0999/randomize").status_code == 404
    with db.session(write=False) as s:
        assert s.scalar(select(func.count()).select_from(Allocation)) == 0


def test_idempotency_key_replays_the_first_response(api, db):
    coord = api("cora", "coordinator@DE")
    payload = {"answers": eligible_answers()}
    first = coord("POST", "/screenings", payload, headers={"Idempotency-Key": "abc-123"})
    second = coord("POST", "/screenings", payload, headers={"Idempotency-Key": "abc-123"})
    assert first.status_code == second.status_code == 201
    assert first.get_json() == second.get_json() and second.headers.get("Idempotent-Replayed") == "true"
    with db.session(write=False) as s:
        assert s.scalar(select(func.count()).select_from(Screening)) == 1
    reused = coord("POST", "/screenings", {"answers": eligible_answers(sex="M")},
                   headers={"Idempotency-Key": "abc-123"})
    assert reused.status_code == 422 and reused.get_json()["error"]["code"] == "idempotency_key_reused"


def test_no_list_and_exhausted_are_409(api, db, settings, actor):
    coord = api("cora", "coordinator@DE")
    code = _enroll(coord)
    resp = coord("POST", f"/participants/{code}/randomize")
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "no_allocation_list"


def test_participant_list_is_paged(api, allocation_list):
    coord = api("cora", "coordinator@DE")
    codes = [_enroll(coord) for _ in range(5)]
    first = coord("GET", "/participants?limit=2").get_json()
    assert [p["id"] for p in first["participants"]] == codes[:2] and first["total"] == 5
    rest = coord("GET", "/participants?limit=2&offset=4").get_json()
    assert [p["id"] for p in rest["participants"]] == codes[4:]
    for bad in ("limit=0", "limit=501", "limit=x", "offset=-1", "offset=²"):
        resp = coord("GET", f"/participants?{bad}")
        assert resp.status_code == 422, bad
