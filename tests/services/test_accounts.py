from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from tests.support import PASSWORD
from trialmgr.db.models_accounts import RoleAssignment, User
from trialmgr.db.models_audit import AuditEntry
from trialmgr.domain.errors import ValidationFailed
from trialmgr.services import accounts
from trialmgr.services.passwords import policy_errors


def _auth(session, hasher, username, password, **kw):
    return accounts.authenticate(session, hasher, username, password, max_failures=3, lockout_minutes=15, **kw)


def test_create_user_hashes_with_argon2id_and_audits(session, actor, hasher):
    user = accounts.create_user(session, actor, hasher, username="carla", full_name="Carla Díaz",
                                password=PASSWORD, email="carla@example.org")
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash
    entries = session.scalars(select(AuditEntry).where(AuditEntry.entity_id == "carla")).all()
    assert {(e.action, e.field, e.new_value) for e in entries} == {
        ("user:create", "full_name", "Carla Díaz"), ("user:create", "email", "carla@example.org")}
    assert all(e.ts.tzinfo is dt.UTC for e in entries)


@pytest.mark.parametrize("username,full_name,password,email,field", [
    ("ab", "A B", PASSWORD, None, "username"),
    ("Bad Name", "A B", PASSWORD, None, "username"),
    ("okname", "", PASSWORD, None, "full_name"),
    ("okname", "A B", "short", None, "password"),
    ("okname", "A B", "password1234", None, "password"),
    ("okname", "A B", "aaaaaaaaaaaaaaaa", None, "password"),
    ("okname", "A B", "okname-is-my-password", None, "password"),
    ("okname", "A B", PASSWORD, "not-an-email", "email"),
])
def test_bad_user_input_is_refused_with_the_field_named_and_nothing_written(
        session, actor, hasher, username, full_name, password, email, field):
    before = session.scalar(select(AuditEntry.seq).order_by(AuditEntry.seq.desc()).limit(1))
    with pytest.raises(ValidationFailed) as info:
        accounts.create_user(session, actor, hasher, username=username, full_name=full_name, password=password,
                             email=email)
    assert field in info.value.errors
    assert session.scalar(select(User).where(User.username == username)) is None
    assert session.scalar(select(AuditEntry.seq).order_by(AuditEntry.seq.desc()).limit(1)) == before


def test_duplicate_username(session, actor, hasher):
    accounts.create_user(session, actor, hasher, username="dup", full_name="D", password=PASSWORD)
    with pytest.raises(ValidationFailed, match="already taken"):
        accounts.create_user(session, actor, hasher, username="dup", full_name="D2", password=PASSWORD)


def test_password_policy_messages():
    assert policy_errors(PASSWORD) == []
    assert "at least 12" in policy_errors("abc")[0]


def test_roles_need_known_trial_role_and_site(session, actor, hasher, trial):
    user = accounts.create_user(session, actor, hasher, username="rita", full_name="Rita", password=PASSWORD)
    with pytest.raises(ValidationFailed, match="unknown role"):
        accounts.grant_role(session, actor, user, trial, "superuser")
    with pytest.raises(ValidationFailed) as info:
        accounts.grant_role(session, actor, user, "no-such-trial", "monitor")
    assert "trial" in info.value.errors
    with pytest.raises(ValidationFailed, match="must belong to a site"):
        accounts.grant_role(session, actor, user, trial, "coordinator")
    with pytest.raises(ValidationFailed, match="unknown site 'ZZ'"):
        accounts.grant_role(session, actor, user, trial, "coordinator", "ZZ")
    with pytest.raises(ValidationFailed, match="works across sites"):
        accounts.grant_role(session, actor, user, trial, "monitor", "DE")
    accounts.grant_role(session, actor, user, trial, "coordinator", "DE")
    with pytest.raises(ValidationFailed, match="already has this role"):
        accounts.grant_role(session, actor, user, trial, "coordinator", "de")
    assert session.scalars(select(RoleAssignment).where(RoleAssignment.user_id == user.id)).all()


def test_login_same_message_for_unknown_user_and_wrong_password_and_lockout(session, actor, hasher):
    accounts.create_user(session, actor, hasher, username="lena", full_name="Lena", password=PASSWORD)
    assert _auth(session, hasher, "nobody", PASSWORD) is None
    assert _auth(session, hasher, "lena", "wrong password!!") is None
    for _ in range(2):
        assert _auth(session, hasher, "lena", "wrong password!!") is None
    assert _auth(session, hasher, "lena", PASSWORD) is None  # locked now, even with the right password
    actions = session.scalars(select(AuditEntry.action).where(AuditEntry.entity_id == "lena")
                              .order_by(AuditEntry.seq)).all()
    assert actions.count("login:failure") == 4 and "login:lockout" in actions
    user = accounts.get_user(session, "lena")
    user.locked_until = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    assert _auth(session, hasher, "LENA ", PASSWORD).username == "lena"
    assert user.failed_logins == 0


def test_deactivated_user_cannot_log_in_and_needs_a_reason(session, actor, hasher):
    from trialmgr.domain.errors import ReasonRequired

    user = accounts.create_user(session, actor, hasher, username="olga", full_name="Olga", password=PASSWORD)
    with pytest.raises(ReasonRequired):
        accounts.set_active(session, actor, user, False, "")
    accounts.set_active(session, actor, user, False, "left the study team")
    assert _auth(session, hasher, "olga", PASSWORD) is None


def test_tokens_scoped_hashed_expiring_revocable(session, actor, hasher, trial):
    user = accounts.create_user(session, actor, hasher, username="tess", full_name="Tess", password=PASSWORD)
    with pytest.raises(ValidationFailed, match="is not monitor"):
        accounts.create_token(session, actor, user, trial_id=trial, role="monitor", name="x")
    accounts.grant_role(session, actor, user, trial, "monitor")
    session.refresh(user)
    token, plaintext = accounts.create_token(session, actor, user, trial_id=trial, role="monitor", name="etl")
    assert plaintext.startswith("tm_") and plaintext not in token.token_hash
    assert accounts.authenticate_token(session, plaintext).id == token.id
    assert accounts.authenticate_token(session, plaintext + "x") is None
    token.expires_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    assert accounts.authenticate_token(session, plaintext) is None
    token.expires_at = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    accounts.revoke_token(session, actor, token, "rotated")
    assert accounts.authenticate_token(session, plaintext) is None
