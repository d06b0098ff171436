"""TOTP two-factor authentication: enrolment, the second login step, replay, throttling, and the setting that
requires it for some roles."""

from __future__ import annotations

import dataclasses
import re
import time

import pytest
from sqlalchemy import select

from tests.support import PASSWORD, csrf_token
from trialmgr import keys
from trialmgr.db.models_accounts import User
from trialmgr.db.models_audit import AuditEntry
from trialmgr.domain.errors import ValidationFailed
from trialmgr.services import accounts, twofactor

T = "hip-pt-clbp"
KEY: bytes = b""  # the test instance's credentials key (the fixture below)


@pytest.fixture(autouse=True)
def _credentials_key(settings):
    global KEY
    KEY = keys.credentials_key(settings)


def _stored_secret(user: User) -> str | None:
    """The secret a user's row holds, unsealed (and checked to be sealed, never in the clear)."""
    if user.totp_secret is None:
        return None
    assert user.totp_secret.startswith("v1.") and len(user.totp_secret) <= 128, user.totp_secret
    return twofactor.unseal(KEY, user.id, user.totp_secret)


def _actions(db, username):
    with db.session(write=False) as s:
        return s.scalars(select(AuditEntry.action).where(AuditEntry.entity_id == username)
                         .order_by(AuditEntry.seq)).all()


def _user(db, username) -> User:
    with db.session(write=False) as s:
        return s.scalar(select(User).where(User.username == username))


def _enrol_directly(db, username) -> str:
    secret = twofactor.new_secret()
    from trialmgr.services.context import cli_actor

    with db.session() as s:
        # An hour ago, so that a code for "now" in the test is a later, unused step.
        twofactor.enrol(s, cli_actor(), accounts.get_user(s, username), secret,
                        twofactor.code_at(secret, time.time() - 3600), KEY, now=time.time() - 3600)
    return secret


# -- the TOTP arithmetic ---------------------------------------------------------------------------------


def test_secret_uri_and_codes():
    secret = twofactor.new_secret()
    assert re.fullmatch(r"[A-Z2-7]{32}", secret)
    uri = twofactor.provisioning_uri(secret, "irene")
    assert uri.startswith("otpauth://totp/trialmgr:irene?") and f"secret={secret}" in uri and "issuer=trialmgr" in uri
    now = 1_800_000_015.0
    step = int(now) // 30
    code = twofactor.code_at(secret, now)
    assert twofactor.matching_step(secret, code, now) == step
    # One step of clock drift either way is accepted, two are not.
    assert twofactor.matching_step(secret, twofactor.code_at(secret, now - 30), now) == step - 1
    assert twofactor.matching_step(secret, twofactor.code_at(secret, now + 30), now) == step + 1
    assert twofactor.matching_step(secret, twofactor.code_at(secret, now - 60), now) is None
    # A step already used (or an earlier one) is never accepted again.
    assert twofactor.matching_step(secret, code, now, last_step=step) is None
    assert twofactor.matching_step(secret, twofactor.code_at(secret, now - 30), now, last_step=step) is None
    for bad in ("", "12345", "1234567", "abcdef", None):
        assert twofactor.matching_step(secret, bad, now) is None


def test_enrol_needs_the_right_code_and_audits_without_the_secret(session, actor, hasher):
    user = accounts.create_user(session, actor, hasher, username="tess", full_name="Tess", password=PASSWORD)
    secret = twofactor.new_secret()
    with pytest.raises(ValidationFailed) as info:
        twofactor.enrol(session, actor, user, secret, "000000" if twofactor.code_at(secret, time.time()) != "000000"
                        else "111111", KEY)
    assert "code" in info.value.errors and user.totp_secret is None
    twofactor.enrol(session, actor, user, secret, twofactor.code_at(secret, time.time()), KEY)
    assert _stored_secret(user) == secret and secret not in user.totp_secret and user.totp_last_step is not None
    entries = session.scalars(select(AuditEntry).where(AuditEntry.action == "user:totp_enrol")).all()
    assert len(entries) == 1 and entries[0].entity_id == "tess"
    row = entries[0]
    assert secret not in " ".join(str(v) for v in (row.old_value, row.new_value, row.reason, row.field))


# -- signing in ------------------------------------------------------------------------------------------


def _login_code(client, code):
    return client.post("/login/code", data={"code": code, "csrf_token": csrf_token(client, "/login/code")})


def test_login_asks_for_the_code_after_the_password(client, login, make_user, trial, db):
    make_user("ivy", f"{T}:investigator")
    secret = _enrol_directly(db, "ivy")
    resp = login("ivy")
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/login/code")
    # Not signed in yet: a page needing a login sends back to the login page.
    assert "/login" in client.get(f"/t/{T}/investigator").headers["Location"]
    page = client.get("/login/code").get_data(as_text=True)
    assert "Authenticator code" in page
    resp = _login_code(client, twofactor.code_at(secret, time.time()))
    assert resp.status_code == 302
    assert client.get(f"/t/{T}/investigator").status_code == 200
    actions = _actions(db, "ivy")
    assert actions[-2:] == ["login:password_ok", "login:success"]


def test_a_code_cannot_be_replayed(app, client, login, make_user, trial, db):
    make_user("rex", f"{T}:monitor")
    secret = _enrol_directly(db, "rex")
    code = twofactor.code_at(secret, time.time())
    login("rex")
    assert _login_code(client, code).status_code == 302
    other = app.test_client()
    login("rex", c=other)
    resp = _login_code(other, code)
    assert resp.status_code == 401 and "already used" in resp.get_data(as_text=True)
    assert other.get(f"/t/{T}/monitor").status_code == 302
    assert _actions(db, "rex")[-1] == "login:totp_failure"


def test_wrong_codes_count_as_failed_logins_and_lock_the_account(app, client, login, make_user, trial, db, settings):
    make_user("lou", f"{T}:monitor")
    secret = _enrol_directly(db, "lou")
    good = twofactor.code_at(secret, time.time())
    wrong = "000000" if good != "000000" else "111111"
    login("lou")
    for _ in range(settings.login_max_failures):
        assert _login_code(client, wrong).status_code == 401
    user = _user(db, "lou")
    assert accounts.is_locked(user)
    # Locked: even the right code and the right password are refused now.
    assert _login_code(client, good).status_code == 401
    fresh = app.test_client()
    assert login("lou", c=fresh).status_code == 401
    actions = _actions(db, "lou")
    assert actions.count("login:totp_failure") == settings.login_max_failures + 1
    assert "login:lockout" in actions


def _set_stored(db, username, stored):
    with db.session() as s:
        accounts.get_user(s, username).totp_secret = stored


def test_a_secret_stored_in_the_clear_by_an_earlier_version_still_works_and_is_sealed_at_sign_in(
        client, login, make_user, trial, db):
    make_user("old", f"{T}:monitor")
    secret = twofactor.new_secret()
    _set_stored(db, "old", secret)  # as versions before sealing stored it
    login("old")
    assert _login_code(client, twofactor.code_at(secret, time.time())).status_code == 302
    user = _user(db, "old")
    assert _stored_secret(user) == secret and secret not in user.totp_secret
    assert not [e for e in _actions(db, "old") if e.startswith("user:totp")]  # the factor itself did not change


def test_a_sealed_secret_opens_only_for_its_own_account_and_key(client, login, make_user, trial, db, caplog):
    make_user("ann", f"{T}:monitor")
    make_user("bob", f"{T}:monitor")
    secret = _enrol_directly(db, "ann")
    ann = _user(db, "ann")
    # Someone with write access to the database copies ann's sealed secret onto bob's account: the code from
    # ann's app must not sign bob in (the associated data binds the secret to ann's id).
    _set_stored(db, "bob", ann.totp_secret)
    login("bob")
    with caplog.at_level("ERROR", logger="trialmgr.services.twofactor"):
        resp = _login_code(client, twofactor.code_at(secret, time.time()))
    assert resp.status_code == 401 and _actions(db, "bob")[-1] == "login:totp_failure"
    assert "does not open" in caplog.text and secret not in caplog.text
    assert twofactor.unseal(KEY, _user(db, "bob").id, ann.totp_secret) is None
    assert twofactor.unseal(bytes(32), ann.id, ann.totp_secret) is None  # another instance's key
    flipped = ann.totp_secret[:-2] + ("A" if ann.totp_secret[-2] != "A" else "B") + ann.totp_secret[-1]
    assert twofactor.unseal(KEY, ann.id, flipped) is None  # an altered byte
    assert twofactor.unseal(KEY, ann.id, "v1.!!not base64!!") is None


def test_seal_legacy_secrets_seals_each_clear_secret_once(session, actor, hasher, make_user):
    for name in ("cyd", "dia", "eds"):
        make_user(name)
    secrets_ = {}
    for name in ("cyd", "dia"):
        secrets_[name] = twofactor.new_secret()
        accounts.get_user(session, name).totp_secret = secrets_[name]
    sealed_before = twofactor.seal(KEY, accounts.get_user(session, "eds").id, twofactor.new_secret())
    accounts.get_user(session, "eds").totp_secret = sealed_before
    assert twofactor.seal_legacy_secrets(session, KEY) == 2
    for name, secret in secrets_.items():
        assert _stored_secret(accounts.get_user(session, name)) == secret
    assert accounts.get_user(session, "eds").totp_secret == sealed_before
    assert twofactor.seal_legacy_secrets(session, KEY) == 0


def test_the_password_step_does_not_reset_the_failure_count(app, client, login, make_user, trial, db):
    """Otherwise whoever knows the password could guess codes for ever, signing in again every few tries."""
    make_user("max", f"{T}:monitor")
    secret = _enrol_directly(db, "max")
    wrong = "000000" if twofactor.code_at(secret, time.time()) != "000000" else "111111"
    login("max")
    _login_code(client, wrong)
    _login_code(client, wrong)
    login("max")
    assert _user(db, "max").failed_logins == 2


def test_the_code_step_expires_and_needs_a_password_first(client, login, make_user, trial, db):
    assert client.get("/login/code").headers["Location"].endswith("/login")
    make_user("eve", f"{T}:monitor")
    _enrol_directly(db, "eve")
    login("eve")
    with client.session_transaction() as sess:
        sess["totp_pending"] = {**sess["totp_pending"], "since": time.time() - 3600}
    assert client.get("/login/code").headers["Location"].endswith("/login")


# -- enrolment -------------------------------------------------------------------------------------------


def _enrol_page(client):
    html = client.get("/account/two-factor").get_data(as_text=True)
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', html).group(1)
    return html, secret


def test_enrolment_page_shows_the_key_and_turns_totp_on(client, login, make_user, trial, db):
    make_user("una", f"{T}:monitor")
    login("una")
    html, secret = _enrol_page(client)
    assert "otpauth://totp/trialmgr:una?" in html
    # The same address as a QR code to scan: exactly segno's drawing of it, with an accessible title.
    import html as html_lib

    import segno

    uri = html_lib.unescape(re.search(r'id="totp-uri">([^<]+)<', html).group(1))
    assert uri == twofactor.provisioning_uri(secret, "una")
    qr = re.search(r'id="totp-qr">(<svg.*?</svg>)</p>', html, re.S).group(1)
    assert "<title>QR code of the set-up address" in qr
    assert qr == segno.make(uri, error="m").svg_inline(
        scale=4, border=4, dark="#000", light="#fff", title="QR code of the set-up address, for your authenticator app")
    token = csrf_token(client, "/account/two-factor")
    resp = client.post("/account/two-factor", data={"code": "12", "csrf_token": token})
    assert resp.status_code == 422
    assert 'class="error" id="code-error-1">Code from your app is not right' in resp.get_data(as_text=True)
    assert _user(db, "una").totp_secret is None
    assert "user:totp_enrol" not in _actions(db, "una")
    resp = client.post("/account/two-factor", data={"code": twofactor.code_at(secret, time.time()),
                                                   "csrf_token": token})
    assert resp.status_code == 302
    assert _stored_secret(_user(db, "una")) == secret
    assert "user:totp_enrol" in _actions(db, "una")
    assert "is on for your account" in client.get("/account/two-factor").get_data(as_text=True)


def _session_of(app, client) -> dict:
    """The Flask session the test client's cookie carries, as the server reads it."""
    cookie = client.get_cookie(app.config.get("SESSION_COOKIE_NAME", "session"))
    return app.session_interface.get_signing_serializer(app).loads(cookie.value)


def test_the_pending_secret_travels_sealed_and_opens_only_for_its_user(app, client, login, make_user, trial, db):
    from trialmgr.web.account import ENROL_SECRET

    make_user("una", f"{T}:monitor")
    make_user("ugo", f"{T}:monitor")
    login("una")
    _html, secret = _enrol_page(client)
    pending = _session_of(app, client)[ENROL_SECRET]
    # The cookie is signed, not encrypted: it must not carry the secret in any readable form.
    assert pending.startswith("v1.") and secret not in pending
    assert secret not in client.get_cookie("session").value
    assert twofactor.unseal(KEY, _user(db, "una").id, pending) == secret
    assert twofactor.unseal(KEY, _user(db, "ugo").id, pending) is None
    # The same page again shows the same pending key (it opens for una).
    assert _enrol_page(client)[1] == secret
    # A pending value that does not open for this user (here, una's, in ugo's session) is replaced by a new key.
    other_client = app.test_client()
    login("ugo", c=other_client)
    with other_client.session_transaction() as sess:
        sess[ENROL_SECRET] = pending
    _html, other = _enrol_page(other_client)
    assert other != secret
    token = csrf_token(other_client, "/account/two-factor")
    resp = other_client.post("/account/two-factor", data={"code": twofactor.code_at(secret, time.time()),
                                                         "csrf_token": token})
    assert resp.status_code == 422 and _user(db, "ugo").totp_secret is None


@pytest.fixture
def totp_required(app):
    st = app.extensions["trialmgr"]
    st.settings = dataclasses.replace(st.settings, require_totp_roles=("investigator", "admin"))
    return st.settings


def test_required_roles_must_enrol_before_anything_else(app, client, login, make_user, trial, db, totp_required):
    make_user("ian", f"{T}:investigator")
    login("ian")
    checked = 0
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods or rule.endpoint in ("static", "account.two_factor", "ops.healthz") \
                or rule.rule.startswith("/api/") or rule.endpoint.startswith("auth.login"):
            continue
        url = re.sub(r"<(int:)?(\w+)>", lambda m: T if m.group(2) == "trial" else "1", rule.rule)
        resp = client.get(url)
        assert resp.status_code == 302 and resp.headers["Location"].endswith("/account/two-factor"), url
        checked += 1
    assert checked > 20
    # State-changing requests are refused the same way.
    token = csrf_token(client, "/account/two-factor")
    resp = client.post(f"/t/{T}/screen", data={"csrf_token": token})
    assert resp.headers["Location"].endswith("/account/two-factor")
    html, secret = _enrol_page(client)
    assert "Your role requires two-factor authentication" in html
    client.post("/account/two-factor", data={"code": twofactor.code_at(secret, time.time()), "csrf_token": token})
    assert client.get(f"/t/{T}/investigator").status_code == 200


def test_roles_not_listed_are_not_forced(client, login, make_user, trial, totp_required):
    make_user("cody", f"{T}:coordinator@DE")
    login("cody")
    assert client.get(f"/t/{T}/coordinator").status_code == 200


def test_api_tokens_are_not_affected(client, make_user, trial, db, totp_required):
    from trialmgr.services.context import cli_actor

    make_user("ina", f"{T}:investigator")
    with db.session() as s:
        _, token = accounts.create_token(s, cli_actor(), accounts.get_user(s, "ina"), trial_id=T,
                                         role="investigator", name="t")
    assert client.get(f"/api/v1/trials/{T}", headers={"Authorization": f"Bearer {token}"}).status_code == 200
