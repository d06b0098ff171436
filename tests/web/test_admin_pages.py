"""Admin pages (users, roles, password resets, deactivation, API tokens) and the own-password page: errors next
to their field, nothing written on bad input, an audit entry for every change."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from tests.support import MASH_PROTOCOL, PASSWORD, csrf_token
from trialmgr.db.models_accounts import ApiToken, RoleAssignment, User
from trialmgr.db.models_audit import AuditEntry

T = "hip-pt-clbp"
A = f"/t/{T}/admin"
NEW = "a different passphrase 42"


@pytest.fixture
def admin(client, login, make_user, trial):
    make_user("ada", f"{T}:admin")
    login("ada")
    return client


def _audit_count(db) -> int:
    with db.session(write=False) as s:
        return s.scalar(select(func.count()).select_from(AuditEntry))


def _user(db, username):
    with db.session(write=False) as s:
        return s.scalar(select(User).where(User.username == username))


def _actions(db, entity_id=None):
    with db.session(write=False) as s:
        q = select(AuditEntry).order_by(AuditEntry.seq)
        if entity_id is not None:
            q = q.where(AuditEntry.entity_id == entity_id)
        return s.scalars(q).all()


def _post(client, path, data, page=None):
    return client.post(path, data={**data, "csrf_token": csrf_token(client, page or path)})


def _error_of(html: str, field_id: str) -> str:
    m = re.search(rf'<p class="error" id="{re.escape(field_id)}-error-1">([^<]*)</p>', html)
    return m.group(1) if m else ""


NEW_USER = {"username": "nora", "full_name": "Nora Nurse", "email": "", "password": PASSWORD,
            "confirm": PASSWORD, "role": "coordinator", "site": "DE"}


def test_users_page_lists_accounts_with_status(admin, make_user):
    make_user("moe", f"{T}:monitor")
    html = admin.get(f"{A}/users").get_data(as_text=True)
    assert "moe" in html and "Create a user" in html and "Two-factor" in html
    assert f'href="{A}/users"' in admin.get(f"{A}").get_data(as_text=True)  # reachable from the admin home


def test_create_user_with_a_role(admin, db):
    resp = _post(admin, f"{A}/users", NEW_USER)
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"{A}/users/nora")
    user = _user(db, "nora")
    assert user.active and [(r.trial_id, r.role.value, r.site_code) for r in user.roles] == [(T, "coordinator", "DE")]
    actions = [e.action for e in _actions(db)]
    assert "user:create" in actions and "role:grant" in actions
    assert PASSWORD not in " ".join(str(e.new_value) for e in _actions(db))


@pytest.mark.parametrize("change,field_id,words", [
    ({"username": "No Good"}, "username", "lower-case"),
    ({"full_name": ""}, "full_name", "Enter the printed name"),
    ({"password": "short", "confirm": "short"}, "password", "at least 12"),
    ({"confirm": "something else entirely"}, "confirm", "not the same"),
    ({"role": ""}, "role", "Choose a role"),
    ({"role": "coordinator", "site": ""}, "site", "must belong to a site"),
    ({"role": "monitor", "site": "DE"}, "site", "works across sites"),
    ({"email": "not-an-email"}, "email", "not an e-mail"),
])
def test_create_user_refused_with_the_error_next_to_the_field(admin, db, change, field_id, words):
    before = _audit_count(db)
    resp = _post(admin, f"{A}/users", {**NEW_USER, **change}, page=f"{A}/users")
    assert resp.status_code == 422
    html = resp.get_data(as_text=True)
    assert words in _error_of(html, field_id), html[html.find("error-summary"):][:600]
    assert _user(db, "nora") is None and _audit_count(db) == before


def test_grant_and_revoke_a_role_with_a_reason(admin, db, make_user):
    make_user("gus", f"{T}:monitor")
    page = f"{A}/users/gus"
    resp = _post(admin, f"{page}/roles", {"grant-role": "investigator", "grant-site": ""}, page)
    assert resp.status_code == 302
    with db.session(write=False) as s:
        ra = s.scalar(select(RoleAssignment).join(User).where(User.username == "gus",
                                                             RoleAssignment.role == "investigator"))
    before = _audit_count(db)
    resp = _post(admin, f"{page}/roles/{ra.id}/revoke", {f"revoke{ra.id}-reason": ""}, page)
    assert resp.status_code == 422
    assert "Give a reason" in _error_of(resp.get_data(as_text=True), f"revoke{ra.id}-reason")
    assert _audit_count(db) == before
    resp = _post(admin, f"{page}/roles/{ra.id}/revoke", {f"revoke{ra.id}-reason": "left the study team"}, page)
    assert resp.status_code == 302
    revoke = [e for e in _actions(db) if e.action == "role:revoke"]
    assert revoke and revoke[-1].reason == "left the study team" and revoke[-1].old_value == "gus:investigator"
    # A role that is already granted is refused next to the role field.
    resp = _post(admin, f"{page}/roles", {"grant-role": "monitor", "grant-site": ""}, page)
    assert resp.status_code == 422 and "already has this role" in _error_of(resp.get_data(as_text=True), "grant-role")


def test_deactivate_and_reactivate_need_a_reason_and_never_delete(admin, db, app, make_user, login):
    make_user("dan", f"{T}:monitor")
    page = f"{A}/users/dan"
    before = _audit_count(db)
    resp = _post(admin, f"{page}/deactivate", {"active-reason": ""}, page)
    assert resp.status_code == 422 and "Give a reason" in _error_of(resp.get_data(as_text=True), "active-reason")
    assert _user(db, "dan").active and _audit_count(db) == before
    assert _post(admin, f"{page}/deactivate", {"active-reason": "left"}, page).status_code == 302
    assert not _user(db, "dan").active
    assert login("dan", c=app.test_client()).status_code == 401
    assert "deactivated" in admin.get(page).get_data(as_text=True)
    assert _post(admin, f"{page}/reactivate", {"active-reason": "back from leave"}, page).status_code == 302
    assert _user(db, "dan").active
    actions = [e.action for e in _actions(db, "dan") if e.action.startswith("user:")]
    assert actions[-2:] == ["user:deactivate", "user:activate"]


def test_reset_password_enforces_the_policy_and_clears_the_lockout(admin, db, app, make_user, login, settings):
    make_user("lea", f"{T}:monitor")
    other = app.test_client()
    for _ in range(settings.login_max_failures):
        login("lea", "wrong wrong wrong", c=other)
    assert _user(db, "lea").locked_until is not None
    page = f"{A}/users/lea"
    assert "locked until" in admin.get(page).get_data(as_text=True)
    before = _audit_count(db)
    resp = _post(admin, f"{page}/password", {"reset-password": "password1234", "reset-confirm": "password1234"}, page)
    assert resp.status_code == 422
    assert "commonly used" in _error_of(resp.get_data(as_text=True), "reset-password")
    assert _audit_count(db) == before
    resp = _post(admin, f"{page}/password", {"reset-password": NEW, "reset-confirm": NEW + "x"}, page)
    assert resp.status_code == 422 and "not the same" in _error_of(resp.get_data(as_text=True), "reset-confirm")
    resp = _post(admin, f"{page}/password", {"reset-password": NEW, "reset-confirm": NEW}, page)
    assert resp.status_code == 302
    user = _user(db, "lea")
    assert user.locked_until is None and user.failed_logins == 0
    assert login("lea", NEW, c=app.test_client()).status_code == 302
    assert "user:password_change" in [e.action for e in _actions(db, "lea")]


def test_admin_of_one_trial_cannot_take_over_staff_of_another(admin, db, load_trial, make_user):
    other = load_trial(MASH_PROTOCOL)
    make_user("zed", f"{T}:monitor", f"{other}:admin")
    page = f"{A}/users/zed"
    html = admin.get(page).get_data(as_text=True)
    assert "Reset the password" not in html and "trials you do not administer" in html
    for path, data in ((f"{page}/password", {"reset-password": NEW, "reset-confirm": NEW}),
                       (f"{page}/deactivate", {"active-reason": "x"})):
        assert _post(admin, path, data, page).status_code == 403
    assert _user(db, "zed").active
    # Roles in this trial are still this admin's to manage.
    with db.session(write=False) as s:
        ra = s.scalar(select(RoleAssignment).join(User).where(User.username == "zed", RoleAssignment.trial_id == T))
    assert _post(admin, f"{page}/roles/{ra.id}/revoke", {f"revoke{ra.id}-reason": "moved"}, page).status_code == 302


def test_admin_cannot_lock_themselves_out(admin, db):
    page = f"{A}/users/ada"
    with db.session(write=False) as s:
        ra = s.scalar(select(RoleAssignment).join(User).where(User.username == "ada"))
    assert _post(admin, f"{page}/deactivate", {"active-reason": "x"}, page).status_code == 403
    assert _post(admin, f"{page}/roles/{ra.id}/revoke", {f"revoke{ra.id}-reason": "x"}, page).status_code == 403
    assert _user(db, "ada").active


def test_reset_two_factor(admin, db, make_user, settings):
    import time

    from trialmgr import keys
    from trialmgr.services import accounts, twofactor
    from trialmgr.services.context import cli_actor

    key = keys.credentials_key(settings)
    make_user("tom", f"{T}:monitor")
    secret = twofactor.new_secret()
    with db.session() as s:
        twofactor.enrol(s, cli_actor(), accounts.get_user(s, "tom"), secret, twofactor.code_at(secret, time.time()),
                        key)
    page = f"{A}/users/tom"
    resp = _post(admin, f"{page}/two-factor/reset", {"totp-reason": ""}, page)
    assert resp.status_code == 422 and "Give a reason" in _error_of(resp.get_data(as_text=True), "totp-reason")
    stored = _user(db, "tom")
    assert twofactor.unseal(key, stored.id, stored.totp_secret) == secret
    assert _post(admin, f"{page}/two-factor/reset", {"totp-reason": "new phone"}, page).status_code == 302
    assert _user(db, "tom").totp_secret is None
    assert "user:totp_reset" in [e.action for e in _actions(db, "tom")]


def test_unknown_users_and_ids_are_404(admin):
    assert admin.get(f"{A}/users/no-such-user").status_code == 404
    assert _post(admin, f"{A}/tokens/999999/revoke", {}, f"{A}/tokens").status_code == 404


def test_api_tokens_created_once_listed_and_revoked(admin, client, db, make_user):
    make_user("cody", f"{T}:coordinator@DE")
    page = f"{A}/tokens"
    before = _audit_count(db)
    resp = _post(admin, page, {"username": "cody", "role": "monitor", "name": "lab import", "days": "30"})
    assert resp.status_code == 422
    assert "not monitor" in _error_of(resp.get_data(as_text=True), "role")
    resp = _post(admin, page, {"username": "cody", "role": "coordinator", "name": "lab import", "days": "x"})
    assert resp.status_code == 422 and "whole number" in _error_of(resp.get_data(as_text=True), "days")
    resp = _post(admin, page, {"username": "cody", "role": "coordinator", "name": "", "days": "30"})
    assert resp.status_code == 422 and "Say what the token is for" in _error_of(resp.get_data(as_text=True), "name")
    assert _audit_count(db) == before
    resp = _post(admin, page, {"username": "cody", "role": "coordinator", "name": "lab import", "days": "30"})
    assert resp.status_code == 200
    plaintext = re.search(r'id="token-plaintext">(tm_[^<]+)<', resp.get_data(as_text=True)).group(1)
    with db.session(write=False) as s:
        token = s.scalar(select(ApiToken).where(ApiToken.name == "lab import"))
    assert token.token_hash != plaintext and plaintext not in str([e.new_value for e in _actions(db)])
    # Shown once: the list has the prefix only.
    listing = admin.get(page).get_data(as_text=True)
    assert token.prefix in listing and plaintext not in listing and "never" in listing
    # Used: the list shows when.
    assert client.get(f"/api/v1/trials/{T}", headers={"Authorization": f"Bearer {plaintext}"}).status_code == 200
    assert "never" not in admin.get(page).get_data(as_text=True).split("Create a token")[0]
    resp = _post(admin, f"{page}/{token.id}/revoke", {"reason": "rotated"}, page)
    assert resp.status_code == 302
    assert client.get(f"/api/v1/trials/{T}", headers={"Authorization": f"Bearer {plaintext}"}).status_code == 401
    revoke = [e for e in _actions(db) if e.action == "token:revoke"]
    assert revoke and revoke[-1].reason == "rotated"


def test_other_roles_cannot_reach_admin_pages(client, login, make_user, trial):
    make_user("ivo", f"{T}:investigator")
    login("ivo")
    assert client.get(f"{A}/users").status_code == 403
    assert client.get(f"{A}/tokens").status_code == 403


# -- own password ----------------------------------------------------------------------------------------


def test_change_own_password(client, login, make_user, trial, db, app):
    make_user("ona", f"{T}:monitor")
    login("ona")
    page = "/account/password"
    before = _audit_count(db)
    resp = _post(client, page, {"current": PASSWORD, "password": NEW, "confirm": NEW + "!"})
    assert resp.status_code == 422 and "not the same" in _error_of(resp.get_data(as_text=True), "confirm")
    resp = _post(client, page, {"current": PASSWORD, "password": "short", "confirm": "short"})
    assert resp.status_code == 422 and "at least 12" in _error_of(resp.get_data(as_text=True), "password")
    assert _audit_count(db) == before
    resp = _post(client, page, {"current": "not my password", "password": NEW, "confirm": NEW})
    assert resp.status_code == 422 and "not right" in _error_of(resp.get_data(as_text=True), "current")
    assert _user(db, "ona").failed_logins == 1  # a wrong current password is a password guess: counted
    resp = _post(client, page, {"current": PASSWORD, "password": NEW, "confirm": NEW})
    assert resp.status_code == 302
    assert login("ona", NEW, c=app.test_client()).status_code == 302
    assert "user:password_change" in [e.action for e in _actions(db, "ona")]


def test_guessing_the_current_password_locks_and_signs_out(client, login, make_user, trial, db, settings):
    make_user("gil", f"{T}:monitor")
    login("gil")
    for _ in range(settings.login_max_failures):
        resp = _post(client, "/account/password", {"current": "guess guess guess", "password": NEW, "confirm": NEW})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/login")
    assert client.get(f"/t/{T}/monitor").status_code == 302
