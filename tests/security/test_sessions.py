from __future__ import annotations

import dataclasses
import datetime as dt

from tests.support import PASSWORD, csrf_token, eligible_answers

T = "hip-pt-clbp"


def _cookie_header(resp) -> str:
    return "; ".join(v for k, v in resp.headers.items() if k.lower() == "set-cookie")


def test_session_cookie_is_httponly_samesite_and_secure_behind_tls(app, settings, db, make_user, trial):
    from trialmgr import create_app

    make_user("sam", f"{T}:monitor")
    client = app.test_client()
    resp = client.post("/login", data={"username": "sam", "password": PASSWORD,
                                       "csrf_token": csrf_token(client, "/login")})
    header = _cookie_header(resp)
    assert "HttpOnly" in header and "SameSite=Lax" in header and "Secure" not in header
    tls_app = create_app(dataclasses.replace(settings, secure_cookies=True))
    tls_app.extensions["trialmgr"].db = db
    tls = tls_app.test_client()
    resp = tls.post("/login", data={"username": "sam", "password": PASSWORD,
                                    "csrf_token": csrf_token(tls, "/login")})
    assert "Secure" in _cookie_header(resp)


def test_idle_session_expires(app, login, make_user, trial):
    make_user("ida", f"{T}:monitor")
    login("ida")
    client = app.test_client()
    login("ida", c=client)
    assert client.get(f"/t/{T}/monitor").status_code == 200
    app.permanent_session_lifetime = dt.timedelta(seconds=-1)  # every session is now past its idle limit
    assert client.get(f"/t/{T}/monitor").status_code == 302


def test_state_changing_forms_need_csrf(client, login, make_user, trial):
    make_user("cora", f"{T}:coordinator@DE")
    login("cora")
    for path in (f"/t/{T}/screen", "/logout", "/roles"):
        resp = client.post(path, data={"site": "DE"})
        assert resp.status_code == 400, path


def test_oversized_bodies_are_refused(client, app, db, make_user, trial):
    from trialmgr.services import accounts
    from trialmgr.services.context import cli_actor

    big = "x" * (app.config["MAX_CONTENT_LENGTH"] + 10)
    resp = client.post("/login", data={"username": big, "password": "x"})
    assert resp.status_code == 413
    make_user("cora", f"{T}:coordinator@DE")
    with db.session() as s:
        _, token = accounts.create_token(s, cli_actor(), accounts.get_user(s, "cora"), trial_id=T,
                                         role="coordinator", name="t")
    resp = client.post(f"/api/v1/trials/{T}/screenings", data=big, content_type="application/json",
                       headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 413 and resp.get_json()["error"]["code"]


def test_markup_is_escaped_where_shown(client, login, make_user, enroll, db, actor):
    from trialmgr.services import enrollment

    code = enroll()
    with db.session() as s:
        sc = enrollment.screen(s, actor, T, eligible_answers(), site="DE")
        enrollment.decline(s, actor, T, sc.screening.id, "<script>alert('x')</script>")
    make_user("mona", f"{T}:monitor")
    login("mona")
    html = client.get(f"/t/{T}/audit/").get_data(as_text=True)
    assert "<script>alert" not in html and "&lt;script&gt;alert" in html
    assert code in html
