from __future__ import annotations

from tests.support import REPO


def _token(runner, user, role, trial="hip-pt-clbp"):
    result = runner.invoke(args=["token", "create", "--user", user, "--trial", trial, "--role", role,
                                 "--name", "test"])
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[0]


def test_openapi_document_is_served_and_lists_every_api_route(client, app):
    doc = client.get("/api/v1/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    documented = set(doc["paths"])
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("api."):
            import re

            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule.removeprefix("/api/v1"))
            assert path in documented, f"{rule.rule} is not in openapi.json"


def test_requests_without_a_valid_token_get_401_json(client, trial):
    for headers in ({}, {"Authorization": "Bearer tm_wrong"}, {"Authorization": "Basic abc"}):
        resp = client.get("/api/v1/me", headers=headers)
        assert resp.status_code == 401
        assert resp.get_json()["error"]["code"]


def test_token_acts_in_its_trial_and_role(client, runner, make_user, trial, load_trial):
    make_user("ivy", "hip-pt-clbp:investigator", "hip-pt-clbp:monitor")
    token = _token(runner, "ivy", "monitor")
    auth = {"Authorization": f"Bearer {token}"}
    me = client.get("/api/v1/me", headers=auth).get_json()
    assert me["username"] == "ivy" and [r["role"] for r in me["roles"]] == ["monitor"]
    body = client.get("/api/v1/trials/hip-pt-clbp", headers=auth).get_json()
    assert body["id"] == "hip-pt-clbp" and "arms" not in body  # monitors are blinded in this protocol
    inv = {"Authorization": f"Bearer {_token(runner, 'ivy', 'investigator')}"}
    assert [a["code"] for a in client.get("/api/v1/trials/hip-pt-clbp", headers=inv).get_json()["arms"]] == [
        "HIP", "SPINE"]
    mash = load_trial(REPO / "protocols" / "mash.toml")
    assert client.get(f"/api/v1/trials/{mash}", headers=auth).status_code == 403


def test_revoked_token_stops_working(client, runner, make_user, trial):
    make_user("rex", "hip-pt-clbp:monitor")
    token = _token(runner, "rex", "monitor")
    auth = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/me", headers=auth).status_code == 200
    result = runner.invoke(args=["token", "revoke", token[:10], "--reason", "test"])
    assert result.exit_code == 0, result.output
    assert client.get("/api/v1/me", headers=auth).status_code == 401


def test_unknown_trial_is_a_json_404_or_403(client, runner, make_user, trial):
    make_user("uma", "hip-pt-clbp:monitor")
    auth = {"Authorization": f"Bearer {_token(runner, 'uma', 'monitor')}"}
    resp = client.get("/api/v1/trials/nope", headers=auth)
    assert resp.status_code == 403 and resp.get_json()["error"]["message"]


def test_a_token_notes_its_last_use_on_reads_and_on_writes_that_fail(client, runner, make_user, trial, db):
    import datetime as dt

    from sqlalchemy import select, update

    from trialmgr.db.models_accounts import ApiToken

    make_user("tia", "hip-pt-clbp:coordinator@DE")
    token = _token(runner, "tia", "coordinator")
    auth = {"Authorization": f"Bearer {token}"}

    def last_used():
        with db.session() as s:
            return s.scalar(select(ApiToken.last_used_at).where(ApiToken.prefix == token[:10]))

    def age_it():
        with db.session() as s:
            s.execute(update(ApiToken).where(ApiToken.prefix == token[:10])
                      .values(last_used_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)))

    assert last_used() is None
    assert client.get("/api/v1/me", headers=auth).status_code == 200
    first = last_used()
    assert first is not None and (dt.datetime.now(dt.UTC) - first).total_seconds() < 60
    age_it()
    # A write that fails (no such participant) is rolled back, but the token's use is still noted.
    resp = client.put("/api/v1/trials/hip-pt-clbp/participants/DE-9999/visits/BL/forms/pain", headers=auth,
                      json={"values": {"back_pain": 1, "hip_pain": 1}})
    assert resp.status_code == 404
    assert (dt.datetime.now(dt.UTC) - last_used()).total_seconds() < 60


def test_on_sqlite_a_write_with_a_wrong_token_neither_waits_for_nor_takes_the_write_lock(tmp_path):
    """SQLite has one write lock per database: a PUT whose token is wrong (or missing) is answered 401 while
    another writer holds it, instead of queueing for it (up to the 30 s busy timeout) before its token is read;
    with a valid token the write waits its turn and then goes through."""
    import sqlite3
    import subprocess
    import sys
    import threading
    import time

    from trialmgr import create_app
    from trialmgr.config import load_settings

    instance = tmp_path / "inst"
    env = {"TRIALMGR_INSTANCE": str(instance), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-m", "trialmgr.cli", "demo", "--participants", "0"], capture_output=True,
                   env=env, timeout=120, check=True)
    token = subprocess.run([sys.executable, "-m", "trialmgr.cli", "token", "create", "--user", "coordinator",
                            "--trial", "hip-pt-clbp", "--role", "coordinator", "--name", "t"], capture_output=True,
                           text=True, env=env, timeout=60, check=True).stdout.strip().splitlines()[0]
    app = create_app(load_settings({"instance_path": instance}, environ={}))
    client = app.test_client()
    url = "/api/v1/trials/hip-pt-clbp/participants/DE-0001/visits/BL/forms/pain"
    body = {"values": {"back_pain": 3, "hip_pain": 1}}

    holder = sqlite3.connect(instance / "trialmgr.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer, mid-transaction
    try:
        for headers in ({"Authorization": "Bearer tm_wrong"}, {}):
            started = time.monotonic()
            resp = client.put(url, json=body, headers=headers)
            assert resp.status_code == 401 and time.monotonic() - started < 5
        answered: list[int] = []
        valid = threading.Thread(target=lambda: answered.append(client.put(
            url, json=body, headers={"Authorization": f"Bearer {token}"}).status_code))
        valid.start()
        valid.join(1.0)
        assert valid.is_alive() and not answered  # a real write waits for the lock ...
    finally:
        holder.execute("COMMIT")
        holder.close()
    valid.join(30)
    assert answered == [404]  # ... and then runs (no participant DE-0001 in an empty trial)
