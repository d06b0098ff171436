from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.support import PASSWORD, csrf_token
from trialmgr.db.models_audit import AuditEntry

ROLE_HOMES = [
    ("hip-pt-clbp:admin", "/t/hip-pt-clbp/admin", "Administration"),
    ("hip-pt-clbp:investigator", "/t/hip-pt-clbp/investigator", "Investigator"),
    ("hip-pt-clbp:coordinator@DE", "/t/hip-pt-clbp/coordinator", "Coordinator"),
    ("hip-pt-clbp:assessor@DE", "/t/hip-pt-clbp/assessor", "Outcome assessor"),
    ("hip-pt-clbp:monitor", "/t/hip-pt-clbp/monitor", "Monitor"),
]


def test_anonymous_is_sent_to_login(client):
    resp = client.get("/")
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/login")
    resp = client.get("/t/hip-pt-clbp/monitor")
    assert resp.status_code == 302 and "/login?next=" in resp.headers["Location"]


@pytest.mark.parametrize("role,home,heading", ROLE_HOMES)
def test_each_role_lands_on_its_home_page(client, login, make_user, trial, role, home, heading):
    make_user("someone", role)
    resp = login("someone")
    assert resp.status_code == 302
    resp = client.get("/")
    assert resp.status_code == 302 and resp.headers["Location"].endswith(home)
    page = client.get(home)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert heading in html and "hip-pt-clbp" in html and "data open" in html
    blinded = role.split(":")[1].split("@")[0] in ("assessor", "monitor")
    assert ("Hip-focused PT" in html) is (not blinded)


def test_wrong_role_gets_403(client, login, make_user, trial):
    make_user("cora", "hip-pt-clbp:coordinator@DE")
    login("cora")
    assert client.get("/t/hip-pt-clbp/admin").status_code == 403
    assert client.get("/t/hip-pt-clbp/investigator").status_code == 403


def test_login_failure_same_message_and_audited(client, login, make_user, trial, db):
    make_user("vera", "hip-pt-clbp:monitor")
    a = login("vera", "not the password")
    b = login("nobody-here", PASSWORD)
    assert a.status_code == b.status_code == 401
    msg = "Unknown user name or wrong password."
    assert msg in a.get_data(as_text=True) and msg in b.get_data(as_text=True)
    with db.session(write=False) as s:
        actions = s.scalars(select(AuditEntry.action).where(AuditEntry.action.like("login:%"))).all()
    assert actions.count("login:failure") == 2


def test_login_requires_csrf_token(client, make_user, trial):
    make_user("csrf", "hip-pt-clbp:monitor")
    resp = client.post("/login", data={"username": "csrf", "password": PASSWORD})
    assert resp.status_code == 400
    assert "expired" in resp.get_data(as_text=True)


def test_logout_is_audited_and_ends_the_session(client, login, make_user, trial, db):
    make_user("leo", "hip-pt-clbp:monitor")
    login("leo")
    token = csrf_token(client, "/t/hip-pt-clbp/monitor")
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/t/hip-pt-clbp/monitor").status_code == 302
    with db.session(write=False) as s:
        assert s.scalar(select(AuditEntry).where(AuditEntry.action == "login:logout")) is not None


def test_next_parameter_cannot_redirect_off_site(client, login, make_user, trial):
    make_user("nina", "hip-pt-clbp:monitor")
    token = csrf_token(client, "/login")
    resp = client.post("/login?next=//evil.example/x", data={"username": "nina", "password": PASSWORD,
                                                              "csrf_token": token})
    assert resp.headers["Location"] == "/"


def test_switching_between_two_roles(client, login, make_user, trial):
    make_user("dual", "hip-pt-clbp:monitor", "hip-pt-clbp:investigator")
    login("dual")
    first = client.get("/").headers["Location"]
    assert first.endswith("/investigator")
    token = csrf_token(client, "/roles")
    client.post("/roles", data={"csrf_token": token, "trial": "hip-pt-clbp", "role": "monitor"})
    assert client.get("/").headers["Location"].endswith("/monitor")
    # A role the user does not hold cannot be chosen.
    assert client.post("/roles", data={"csrf_token": token, "trial": "hip-pt-clbp",
                                       "role": "admin"}).status_code == 403


def test_security_headers(client):
    resp = client.get("/login")
    assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"] == "same-origin"


def test_every_route_declares_who_may_use_it(app):
    from trialmgr.web.access import check_declarations

    check_declarations(app)  # raises on any route without @allow
    app.add_url_rule("/undeclared", "undeclared", lambda: "x")
    with pytest.raises(RuntimeError, match="undeclared"):
        check_declarations(app)


def test_account_pages_lead_back_to_the_work(client, login, make_user, trial):
    """The password and two-factor pages show no trial menu; the only way back was the small "trialmgr" in the
    corner. Each now has a Cancel (or Back) link to the user's home page."""
    make_user("cora", "hip-pt-clbp:coordinator@DE")
    login("cora")
    for path, link in (("/account/password", "Cancel"), ("/account/two-factor", "Cancel")):
        html = client.get(path).get_data(as_text=True)
        main = html.split('<main id="main"', 1)[1]
        assert f'<a href="/" class="cancel">{link}</a>' in main, (path, main)
    # Home leads on to the role's own page.
    resp = client.get("/")
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/t/hip-pt-clbp/coordinator")
