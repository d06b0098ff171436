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
    # Dates describe the past: an onset after today (UTC) is a typing mistake, refused by name; nothing is written.
    tomorrow = (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)).isoformat()
    future = coord("POST", f"/participants/{code}/forms/adverse_event", {"values": {
        "term": "Fall", "onset_date": tomorrow, "severity": "mild", "serious": "no", "relatedness": "possible",
        "action_taken": "none", "outcome": "recovering"}})
    assert future.status_code == 422
    assert future.get_json()["error"]["fields"] == {"onset_date": "must not be in the future"}
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


def _statements(db):
    """Count the SQL statements (not BEGIN/SAVEPOINT bookkeeping) run while the block runs."""
    from contextlib import contextmanager

    from sqlalchemy import event

    @contextmanager
    def counting():
        seen: list[str] = []

        def listener(_conn, _cursor, statement, *_args):
            if statement.split(None, 1)[0].upper() in ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH"):
                seen.append(statement)

        event.listen(db.engine, "before_cursor_execute", listener)
        try:
            yield seen
        finally:
            event.remove(db.engine, "before_cursor_execute", listener)

    return counting()


def _valid(form_id: str, seed: int = 1) -> dict:
    import datetime as dt
    import random

    from tests.support import DEFAULT_PROTOCOL
    from trialmgr.domain import crf as crflib
    from trialmgr.protocols import load_protocol_file
    from trialmgr.synthetic import form_values

    form = load_protocol_file(DEFAULT_PROTOCOL).form(form_id)
    rng = random.Random(seed)
    while True:
        raw = form_values(form, rng, dt.date.today())
        if not crflib.validate_form(form, raw, reference_date=dt.date.today()).errors:
            return raw


def test_a_form_save_is_few_statements_and_keeps_every_rule(call, randomized, db):
    from sqlalchemy import func, select

    from trialmgr.db.models_accounts import Trial
    from trialmgr.db.models_audit import AuditEntry
    from trialmgr.db.models_crf import FormRecord, VisitRecord
    from trialmgr.db.models_trial import Participant
    from trialmgr.domain.vocab import DataState

    code, elsewhere = randomized(), randomized(site="PA")
    coord = call("cora", "coordinator@DE")
    pain = f"/participants/{code}/visits/BL/forms/pain"
    values = {"back_pain": 7, "hip_pain": 2}

    def entries() -> int:
        with db.session() as s:
            return s.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.participant == code))

    # Other sites' participants are not confirmed to exist; unknown visits and forms of another visit are 404.
    assert coord("PUT", f"/participants/{elsewhere}/visits/BL/forms/pain", {"values": values}).status_code == 404
    assert coord("PUT", f"/participants/{code}/visits/XX/forms/pain", {"values": values}).status_code == 404
    assert coord("PUT", f"/participants/{code}/visits/BL/forms/session_log", {"values": {}}).status_code == 404

    before = entries()
    with _statements(db) as first:
        created = coord("PUT", pain, {"values": values})
    assert created.status_code == 200, created.get_json()
    assert created.get_json()["version"] == 1 and created.get_json()["changed"] == ["back_pain", "hip_pain"]
    # token, participant (+ trial, protocol, visit), the visit's records, record, values, chain head, audit
    # entries, chain head, visit date: no read-backs, no second write of the same row.
    assert len(first) <= 10, "\n".join(first)
    assert entries() == before + 4  # two values, the status, the visit date

    with _statements(db) as change:
        changed = coord("PUT", pain, {"values": {"back_pain": 6, "hip_pain": 2}, "reason": "typo"})
    assert changed.status_code == 200 and changed.get_json()["version"] == 2
    assert changed.get_json()["changed"] == ["back_pain"]
    assert len(change) <= 8, "\n".join(change)
    assert entries() == before + 5

    # Saving the same values again changes nothing and writes nothing (no audit entry, no version).
    with _statements(db) as same:
        again = coord("PUT", pain, {"values": {"back_pain": 6, "hip_pain": 2}})
    assert again.status_code == 200 and again.get_json()["changed"] == [] and again.get_json()["version"] == 2
    assert not [s for s in same if s.split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE")], same
    assert entries() == before + 5

    # A locked form, a locked participant and a trial whose data are not open refuse changes; nothing is written.
    def set_(model, key, **values_):
        with db.session() as s:
            row = s.get(model, key) if not isinstance(key, dict) else s.scalar(select(model).filter_by(**key))
            for k, v in values_.items():
                setattr(row, k, v)

    change_again = {"values": {"back_pain": 5, "hip_pain": 2}, "reason": "typo"}
    set_(FormRecord, {"form_id": "pain", "version": 2}, locked=True)
    assert coord("PUT", pain, change_again).status_code == 409
    set_(FormRecord, {"form_id": "pain", "version": 2}, locked=False)
    set_(Participant, {"code": code}, locked=True)
    assert coord("PUT", pain, change_again).status_code == 409
    set_(Participant, {"code": code}, locked=False)
    for state in (DataState.FROZEN, DataState.LOCKED):
        set_(Trial, T, data_state=state)
        assert coord("PUT", pain, change_again).status_code == 409
    set_(Trial, T, data_state=DataState.OPEN)
    assert entries() == before + 5
    assert coord("PUT", pain, change_again).get_json()["version"] == 3

    # Completing a visit's last form completes the visit; out of its window, a deviation is recorded.
    w4 = f"/participants/{code}/visits/W4/forms"
    assert coord("PUT", f"{w4}/pain", {"values": values}).get_json()["deviation_created"] is False
    done = coord("PUT", f"{w4}/session_log", {"values": _valid("session_log")})
    assert done.status_code == 200, done.get_json()
    assert done.get_json()["deviation_created"] is True
    with db.session() as s:
        visit = s.scalar(select(VisitRecord).join(Participant, Participant.id == VisitRecord.participant_id)
                         .where(Participant.code == code, VisitRecord.code == "W4"))
        assert visit.complete and visit.deviation_recorded
    draft = coord("PUT", f"{w4}/session_log", {"values": _valid("session_log"), "status": "draft",
                                                  "reason": "not finished after all"})
    assert draft.status_code == 200 and draft.get_json()["status"] == "draft"
    with db.session() as s:
        assert not s.get(VisitRecord, visit.id).complete
