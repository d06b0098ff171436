from __future__ import annotations

import pytest

from trialmgr.services.context import cli_actor

T = "hip-pt-clbp"


@pytest.fixture
def call(client, db, make_user):
    from trialmgr.services import accounts

    def _for(username: str, spec: str):
        make_user(username, f"{T}:{spec}")
        with db.session() as s:
            user = accounts.get_user(s, username)
            _, token = accounts.create_token(s, cli_actor(), user, trial_id=T, role=spec.split("@")[0], name="t")

        def call(method, path, json=None):
            return client.open(f"/api/v1/trials/{T}{path}", method=method, json=json,
                               headers={"Authorization": f"Bearer {token}"})

        return call

    return _for


def test_visits_forms_queries_and_sdv_over_the_api(call, randomized):
    code = randomized()
    coord, mon = call("cora", "coordinator@DE"), call("mona", "monitor")
    visits = coord("GET", f"/participants/{code}/visits").get_json()["visits"]
    assert [v["code"] for v in visits] == ["BL", "W4", "W8", "W12", "M6"] and visits[1]["status"] == "upcoming"
    path = f"/participants/{code}/visits/BL/forms/pain"
    bad = coord("PUT", path, {"values": {"back_pain": "12", "hip_pain": "x"}})
    assert bad.status_code == 422 and set(bad.get_json()["error"]["fields"]) == {"back_pain", "hip_pain"}
    ok = coord("PUT", path, {"values": {"back_pain": 7, "hip_pain": "2"}})
    assert ok.status_code == 200, ok.get_json()
    body = ok.get_json()
    assert body["values"] == {"back_pain": "7", "hip_pain": "2"} and body["status"] == "complete"
    no_reason = coord("PUT", path, {"values": {"back_pain": 6, "hip_pain": 2}})
    assert no_reason.status_code == 422 and no_reason.get_json()["error"]["code"] == "reason_required"
    stale = coord("PUT", path, {"values": {"back_pain": 6, "hip_pain": 2}, "reason": "typo", "version": 0})
    assert stale.status_code == 409
    assert coord("PUT", path, {"values": {"back_pain": 6, "hip_pain": 2}, "reason": "typo",
                               "version": body["version"]}).status_code == 200
    q = mon("POST", "/queries", {"participant": code, "visit": "BL", "form": "pain", "field": "back_pain",
                                 "text": "Please confirm 6."})
    assert q.status_code == 201, q.get_json()
    qid = q.get_json()["id"]
    assert coord("POST", f"/queries/{qid}/answer", {"answer": "Confirmed."}).get_json()["status"] == "answered"
    assert coord("POST", f"/queries/{qid}/close").status_code == 403
    assert mon("POST", f"/queries/{qid}/close").get_json()["status"] == "closed"
    assert mon("POST", f"{path}/verify").get_json()["sdv"]["by"] == "mona"
    listing = mon("GET", "/queries").get_json()
    assert listing["queries"][0]["id"] == qid and listing["open_counts"]["by_site"] == {}


def test_anytime_forms_over_the_api(call, randomized):
    import datetime as dt

    code = randomized()
    coord = call("cora", "coordinator@DE")
    today = dt.date.today().isoformat()
    ae = coord("POST", f"/participants/{code}/forms/adverse_event", {"values": {
        "term": "<b>Knee pain</b>", "onset_date": today, "severity": "mild", "serious": "no", "relatedness": "possible",
        "action_taken": "none", "outcome": "recovering"}})
    assert ae.status_code == 201, ae.get_json()
    assert ae.get_json()["instance"] == 1
    got = coord("GET", f"/participants/{code}/forms/adverse_event/1").get_json()
    assert got["values"]["term"] == "<b>Knee pain</b>"
    assert coord("GET", f"/participants/{code}/forms/adverse_event/2").status_code == 404
    wrong = coord("POST", f"/participants/{code}/forms/pain", {"values": {}})
    assert wrong.status_code == 422


def test_assessor_receives_no_arm_in_visits_or_forms(call, randomized):
    code = randomized()
    asa = call("asa", "assessor@DE")
    assert asa("PUT", f"/participants/{code}/visits/BL/forms/pain",
               {"values": {"back_pain": 3, "hip_pain": 1}}).status_code == 200
    for path in (f"/participants/{code}/visits", f"/participants/{code}/visits/BL/forms/pain",
                 f"/participants/{code}"):
        text = asa("GET", path).get_data(as_text=True)
        assert "HIP" not in text and "SPINE" not in text and "arm" not in text
    assert asa("PUT", f"/participants/{code}/visits/W4/forms/session_log", {"values": {}}).status_code == 403
