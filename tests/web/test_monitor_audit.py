from __future__ import annotations

import csv
import io

from sqlalchemy import select

from tests.support import csrf_token
from trialmgr.db.models_audit import AuditEntry

T = "hip-pt-clbp"


def test_monitor_audit_log_filters_paging_history_and_csv(client, login, make_user, enroll, db):
    codes = [enroll("DE", "F") for _ in range(3)]
    make_user("mona", f"{T}:monitor")
    login("mona")
    page = client.get(f"/t/{T}/audit/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "participant:create" in html and "Not verified yet" in html
    # Filter by participant: only that participant's entries.
    html = client.get(f"/t/{T}/audit/?participant={codes[1]}").get_data(as_text=True)
    assert codes[1] in html and codes[0] not in html
    # The participant's own entries name it once in the record column; a form's entries name the form, then it.
    assert f"participant {codes[1]}</td>" in html and f"{codes[1]} · {codes[1]}" not in html
    # Keyset paging through the API, newest first, no entry twice.
    from trialmgr.services import accounts

    with db.session() as s:
        user = accounts.get_user(s, "mona")
        _, token = accounts.create_token(s, accounts_actor(), user, trial_id=T, role="monitor", name="t")
    auth = {"Authorization": f"Bearer {token}"}
    seen, before = [], None
    while True:
        url = f"/api/v1/trials/{T}/audit?limit=7" + (f"&before={before}" if before else "")
        body = client.get(url, headers=auth).get_json()
        seen += [e["seq"] for e in body["entries"]]
        before = body["next_before"]
        if before is None:
            break
    assert seen == sorted(seen, reverse=True) and len(seen) == len(set(seen))
    with db.session(write=False) as s:
        assert len(seen) == len(s.scalars(select(AuditEntry.seq).where(AuditEntry.trial == T)).all())
    # Per-field history.
    hist = client.get(f"/t/{T}/audit/history?participant={codes[0]}&entity={codes[0]}&field=consent_date")
    assert hist.status_code == 200 and "participant:create" in hist.get_data(as_text=True)
    # CSV of the filtered entries.
    resp = client.get(f"/t/{T}/audit/export.csv?participant={codes[2]}&field=status")
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(resp.get_data(as_text=True))))
    assert rows and all(r["participant"] == codes[2] and r["field"] == "status" for r in rows)
    assert rows[0]["ts"].endswith("Z")


def accounts_actor():
    from trialmgr.services.context import cli_actor

    return cli_actor()


def test_bad_filters_are_named(client, login, make_user, trial):
    make_user("mona", f"{T}:monitor")
    login("mona")
    html = client.get(f"/t/{T}/audit/?since=last+tuesday").get_data(as_text=True)
    assert "must be a date or time" in html
    assert client.get(f"/t/{T}/audit/export.csv?until=nope").status_code == 422


def test_sql_metacharacters_in_filters_are_just_text(client, login, make_user, trial):
    make_user("mona", f"{T}:monitor")
    login("mona")
    for value in ("' OR 1=1 --", "%", "_", "x\\"):
        resp = client.get(f"/t/{T}/audit/", query_string={"participant": value, "form": value})
        assert resp.status_code == 200 and "No entries match." in resp.get_data(as_text=True)


def test_verify_now_records_the_result_on_the_page(client, login, make_user, enroll, db):
    enroll()
    make_user("mona", f"{T}:monitor")
    login("mona")
    resp = client.post(f"/t/{T}/audit/verify", data={"csrf_token": csrf_token(client, f"/t/{T}/audit/")})
    assert resp.status_code == 302
    html = client.get(f"/t/{T}/audit/").get_data(as_text=True)
    assert "Audit trail verified" in html and "verified (" in html
    with db.session(write=False) as s:
        assert s.scalar(select(AuditEntry).where(AuditEntry.action == "audit:verify")).actor_user == "mona"


def test_blinded_monitor_sees_no_arm_in_the_audit_log(client, login, make_user, enroll, db, actor, settings,
                                                     allocation_list):
    from trialmgr.services import randomization

    code = enroll()
    with db.session() as s:
        randomization.randomize(s, actor, settings, T, code)
    make_user("mona", f"{T}:monitor")
    login("mona")
    html = client.get(f"/t/{T}/audit/").get_data(as_text=True)
    assert "allocation:create" in html and "(blinded)" in html
    assert ">HIP<" not in html and ">SPINE<" not in html
    text = client.get(f"/t/{T}/audit/export.csv").get_data(as_text=True)
    assert ",HIP," not in text and ",SPINE," not in text


def test_coordinators_cannot_read_the_audit_log(client, login, make_user, trial):
    make_user("cora", f"{T}:coordinator@DE")
    login("cora")
    assert client.get(f"/t/{T}/audit/").status_code == 403


def test_periodic_checkpoint_after_a_write(app, client, login, make_user, trial, db, monkeypatch):
    import dataclasses

    from trialmgr.db.models_audit import Checkpoint
    from trialmgr.web import db as webdb

    st = app.extensions["trialmgr"]
    monkeypatch.setattr(st, "settings", dataclasses.replace(st.settings, checkpoint_interval_seconds=1))
    monkeypatch.setattr(webdb, "_last_look", [0.0])
    make_user("mona", f"{T}:monitor")
    login("mona")  # a write transaction (the login is audited), then the periodic look
    with db.session(write=False) as s:
        cp = s.scalar(select(Checkpoint).order_by(Checkpoint.seq.desc()).limit(1))
    assert cp is not None and cp.reason == "periodic"
