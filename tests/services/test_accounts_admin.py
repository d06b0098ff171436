"""The account functions behind the admin and own-account pages."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from tests.support import PASSWORD
from trialmgr.db.models_accounts import ApiToken
from trialmgr.db.models_audit import AuditEntry
from trialmgr.domain.errors import Conflict, NotFound, ReasonRequired, ValidationFailed
from trialmgr.domain.vocab import Role
from trialmgr.services import accounts, twofactor

T = "hip-pt-clbp"
NEW = "a different passphrase 42"


def _user(session, actor, hasher, name, *roles):
    user = accounts.create_user(session, actor, hasher, username=name, full_name=name.title(), password=PASSWORD)
    for trial, role, site in roles:
        accounts.grant_role(session, actor, user, trial, role, site)
    session.refresh(user)
    return user


def test_change_own_password(session, actor, hasher, trial):
    user = _user(session, actor, hasher, "olga", (T, "monitor", None))
    assert not accounts.change_own_password(session, actor, hasher, user, "wrong one entirely", NEW,
                                            max_failures=3, lockout_minutes=15)
    assert user.failed_logins == 1 and hasher.verify(user.password_hash, PASSWORD)
    with pytest.raises(ValidationFailed) as info:
        accounts.change_own_password(session, actor, hasher, user, PASSWORD, PASSWORD, max_failures=3,
                                     lockout_minutes=15)
    assert "differ" in info.value.errors["password"]
    with pytest.raises(ValidationFailed) as info:
        accounts.change_own_password(session, actor, hasher, user, PASSWORD, "short", max_failures=3,
                                     lockout_minutes=15)
    assert "12" in info.value.errors["password"]
    assert accounts.change_own_password(session, actor, hasher, user, PASSWORD, NEW, max_failures=3,
                                        lockout_minutes=15)
    assert hasher.verify(user.password_hash, NEW) and user.failed_logins == 0
    actions = session.scalars(select(AuditEntry.action).where(AuditEntry.entity_id == "olga")).all()
    assert "login:failure" in actions and "user:password_change" in actions


def test_wrong_current_passwords_lock_the_account(session, actor, hasher, trial):
    user = _user(session, actor, hasher, "pia")
    for _ in range(3):
        accounts.change_own_password(session, actor, hasher, user, "nope nope nope", NEW, max_failures=3,
                                     lockout_minutes=15)
    assert accounts.is_locked(user)


def test_manageable_only_when_every_role_is_in_the_admins_trials(session, actor, hasher, trial, load_trial):
    from tests.support import MASH_PROTOCOL

    other = load_trial(MASH_PROTOCOL)
    nobody = _user(session, actor, hasher, "nobody")
    here = _user(session, actor, hasher, "here", (T, "monitor", None))
    both = _user(session, actor, hasher, "both", (T, "monitor", None), (other, "admin", None))
    assert accounts.manageable_by(nobody, {T})
    assert accounts.manageable_by(here, {T})
    assert not accounts.manageable_by(both, {T})
    assert accounts.manageable_by(both, {T, other})


def test_lookups_are_scoped_to_the_trial(session, actor, hasher, trial):
    user = _user(session, actor, hasher, "sam", (T, "monitor", None))
    token, _ = accounts.create_token(session, actor, user, trial_id=T, role="monitor", name="x")
    assert accounts.get_token(session, T, token.id) is token
    assert accounts.trial_tokens(session, T) == [token]
    with pytest.raises(NotFound):
        accounts.get_token(session, "other-trial", token.id)
    ra = user.roles[0]
    assert accounts.get_assignment(session, T, ra.id) is ra
    with pytest.raises(NotFound):
        accounts.get_assignment(session, "other-trial", ra.id)


def test_touch_token_records_last_use_at_most_once_a_minute(session, actor, hasher, trial):
    user = _user(session, actor, hasher, "tim", (T, "monitor", None))
    token, _ = accounts.create_token(session, actor, user, trial_id=T, role="monitor", name="x")
    assert accounts.token_needs_touch(token)
    accounts.touch_token(session, token.id)
    session.refresh(token)
    first = token.last_used_at
    assert first is not None and not accounts.token_needs_touch(token)
    accounts.touch_token(session, token.id)
    session.refresh(token)
    assert token.last_used_at == first
    session.execute(ApiToken.__table__.update().where(ApiToken.id == token.id)
                    .values(last_used_at=first - dt.timedelta(minutes=5)))
    session.refresh(token)
    assert accounts.token_needs_touch(token)


def test_totp_reset_needs_a_reason_and_audits(session, actor, hasher, settings):
    import time

    from trialmgr import keys

    key = keys.credentials_key(settings)
    user = _user(session, actor, hasher, "rob")
    with pytest.raises(Conflict):
        twofactor.reset(session, actor, user, "lost phone")
    secret = twofactor.new_secret()
    twofactor.enrol(session, actor, user, secret, twofactor.code_at(secret, time.time()), key)
    with pytest.raises(Conflict):
        twofactor.enrol(session, actor, user, secret, twofactor.code_at(secret, time.time()), key)
    with pytest.raises(ReasonRequired):
        twofactor.reset(session, actor, user, " ")
    assert twofactor.unseal(key, user.id, user.totp_secret) == secret
    twofactor.reset(session, actor, user, "lost phone")
    assert user.totp_secret is None and user.totp_last_step is None
    entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "user:totp_reset"))
    assert entry.reason == "lost phone"


def test_token_identity_is_the_token_user_and_role_in_one_query(session, actor, hasher, trial):
    from sqlalchemy import event

    user = _user(session, actor, hasher, "cora", (T, "coordinator", "PA"), (T, "coordinator", "DE"),
                 (T, "monitor", None))
    token, plaintext = accounts.create_token(session, actor, user, trial_id=T, role="coordinator", name="etl")
    statements = []

    def count(*_args):
        statements.append(1)

    session.flush()
    event.listen(session.get_bind(), "before_cursor_execute", count)
    try:
        who = accounts.token_identity(session, plaintext)
    finally:
        event.remove(session.get_bind(), "before_cursor_execute", count)
    assert len(statements) == 1
    assert (who.token_id, who.user_id, who.username, who.full_name) == (token.id, user.id, "cora", "Cora")
    # Only the token's own trial and role, with every site the user holds that role at (as memberships()).
    assert who.membership == accounts.Membership(T, Role.COORDINATOR, ("DE", "PA"))
    assert [m for m in accounts.memberships(user) if m.role is Role.COORDINATOR] == [who.membership]
    assert accounts.token_needs_touch(who)
    assert accounts.token_identity(session, plaintext + "x") is None
    assert accounts.token_identity(session, "not a token") is None

    # A role revoked at one site narrows the token; revoked everywhere, the token stops acting.
    de = next(ra for ra in user.roles if ra.site_code == "DE")
    accounts.revoke_role(session, actor, de, "moved to Paris")
    session.flush()
    assert accounts.token_identity(session, plaintext).membership.sites == ("PA",)
    pa = next(ra for ra in user.roles if ra.site_code == "PA")
    accounts.revoke_role(session, actor, pa, "left the site")
    session.flush()
    assert accounts.token_identity(session, plaintext) is None
    accounts.grant_role(session, actor, user, T, "coordinator", "PA")
    session.flush()
    assert accounts.token_identity(session, plaintext) is not None

    # Expired, deactivated or revoked: refused.
    token.expires_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    session.flush()
    assert accounts.token_identity(session, plaintext) is None
    token.expires_at = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    accounts.set_active(session, actor, user, False, "left the study team")
    session.flush()
    assert accounts.token_identity(session, plaintext) is None
    accounts.set_active(session, actor, user, True, "back")
    session.flush()
    assert accounts.token_identity(session, plaintext) is not None
    accounts.revoke_token(session, actor, token, "rotated")
    session.flush()
    assert accounts.token_identity(session, plaintext) is None
