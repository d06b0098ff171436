from __future__ import annotations

import re

from sqlalchemy import select

from tests.support import PASSWORD, csrf_token, eligible_answers
from trialmgr.db.models_accounts import Trial
from trialmgr.domain.bundle import verify_bundle
from trialmgr.domain.vocab import DataState

T = "hip-pt-clbp"


def _sign(client, action, password=PASSWORD, reason=""):
    token = csrf_token(client, f"/t/{T}/data/")
    return client.post(f"/t/{T}/data/state", data={"csrf_token": token, "action": action, "password": password,
                                                    "reason": reason})


def test_lock_with_signature_then_export_and_download(client, login, make_user, randomized, db, settings, tmp_path):
    randomized()
    make_user("ines", f"{T}:investigator", full_name="Ines Investigator")
    login("ines")
    bad = _sign(client, "lock", password="wrong password here")
    assert bad.status_code == 422 and "not your current password" in bad.get_data(as_text=True)
    with db.session(write=False) as s:
        assert s.get(Trial, T).data_state is DataState.OPEN
    assert _sign(client, "lock").status_code == 302
    page = client.get(f"/t/{T}/data/").get_data(as_text=True)
    assert "Signed by Ines Investigator" in page and "meaning: locked" in page and "UTC" in page
    # The header shows the data state on every page.
    assert "data locked" in client.get(f"/t/{T}/investigator").get_data(as_text=True)
    resp = client.post(f"/t/{T}/data/export", data={"csrf_token": csrf_token(client, f"/t/{T}/data/")})
    assert resp.status_code == 302
    job_page = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "bundle is ready" in job_page
    link = re.search(r'href="([^"]+/download)"', job_page).group(1)
    download = client.get(link)
    assert download.status_code == 200 and download.mimetype == "application/zip"
    zpath = tmp_path / "dl.zip"
    zpath.write_bytes(download.data)
    download.close()
    report = verify_bundle(zpath)
    assert report.ok and report.kind == "locked", report.problems
    # Another investigator cannot fetch someone else's export.
    make_user("ivan", f"{T}:investigator")
    login("ivan", c=(other := client.application.test_client()))
    assert other.get(link).status_code == 404


def test_unlock_needs_a_reason_and_interim_exports_are_labelled(client, login, make_user, trial, db):
    make_user("ines", f"{T}:investigator")
    login("ines")
    _sign(client, "lock")
    resp = _sign(client, "unlock")
    assert resp.status_code == 422 and "reason" in resp.get_data(as_text=True).lower()
    assert _sign(client, "unlock", reason="late laboratory results").status_code == 302
    with db.session(write=False) as s:
        assert s.get(Trial, T).data_state is DataState.FROZEN
    resp = client.post(f"/t/{T}/data/export", data={"csrf_token": csrf_token(client, f"/t/{T}/data/"),
                                                    "blinded": "y"})
    assert "INTERIM" in client.get(resp.headers["Location"]).get_data(as_text=True)


def test_roles(client, login, make_user, trial):
    make_user("mona", f"{T}:monitor")
    login("mona")
    assert client.get(f"/t/{T}/data/").status_code == 200
    assert client.post(f"/t/{T}/data/state", data={"csrf_token": csrf_token(client, f"/t/{T}/data/"),
                                                    "action": "lock", "password": PASSWORD}).status_code == 403
    make_user("cora", f"{T}:coordinator@DE")
    c2 = client.application.test_client()
    login("cora", c=c2)
    assert c2.get(f"/t/{T}/data/").status_code == 403


def test_locked_data_are_refused_on_every_adapter(client, login, make_user, randomized, runner, db, actor, hasher,
                                                  settings):
    """The same services refuse behind the web page, the JSON API and the CLI."""
    from trialmgr.services import accounts, locking
    from trialmgr.services.context import Actor, cli_actor

    code = randomized()
    make_user("ines", f"{T}:investigator")
    make_user("cora", f"{T}:coordinator@DE")
    with db.session() as s:
        ines = accounts.get_user(s, "ines")
        inv = Actor(username="ines", role=ines.roles[0].role, trial=T, user_id=ines.id, full_name=ines.full_name)
        locking.change_state(s, inv, hasher, settings, T, "lock", password=PASSWORD)
        _, token = accounts.create_token(s, cli_actor(), accounts.get_user(s, "cora"), trial_id=T,
                                         role="coordinator", name="t")
    auth = {"Authorization": f"Bearer {token}"}
    api = client.put(f"/api/v1/trials/{T}/participants/{code}/visits/BL/forms/pain",
                     json={"values": {"back_pain": 3, "hip_pain": 1}}, headers=auth)
    assert api.status_code == 409 and api.get_json()["error"]["code"] == "data_locked"
    api = client.post(f"/api/v1/trials/{T}/screenings", json={"answers": eligible_answers()}, headers=auth)
    assert api.status_code == 409 and "locked" in api.get_json()["error"]["message"]
    args = ["participant", "screen", "--trial", T, "--site", "DE"]
    for k, v in eligible_answers().items():
        args += ["--answer", f"{k}={v}"]
    cli = runner.invoke(args=args)
    assert cli.exit_code == 2 and "locked" in cli.output
    login("cora")
    token = csrf_token(client, f"/t/{T}/screen")
    web = client.post(f"/t/{T}/screen", data={"csrf_token": token, "site": "DE", **eligible_answers()})
    assert web.status_code == 409 and "locked" in web.get_data(as_text=True)
    with db.session(write=False) as s:
        assert s.scalar(select(Trial.data_state)) is DataState.LOCKED


def test_a_refused_signature_keeps_the_chosen_action_and_reason(client, login, make_user, trial):
    """After a wrong password the page came back with "Choose…" selected again: the investigator had to notice
    and pick the action a second time (the reason was kept)."""
    make_user("ines", f"{T}:investigator")
    login("ines")
    resp = _sign(client, "lock", password="not my password at all", reason="database lock for analysis")
    assert resp.status_code == 422
    html = resp.get_data(as_text=True)
    select = re.search(r'<select id="action"[^>]*>(.*?)</select>', html, re.S).group(1)
    assert re.findall(r'<option value="([^"]*)" selected>', select) == ["lock"], select
    assert "database lock for analysis" in html
    # Nothing chosen: the message names the actions open in this state, not every action there is.
    resp = _sign(client, "", reason="")
    assert resp.status_code == 422
    html = resp.get_data(as_text=True)
    assert "Action must be chosen: freeze or lock." in html
    assert "unfreeze" not in html.split('id="action-error"')[1].split("</p>")[0]
