"""Users, role assignments, logins and API tokens."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.orm import Session

from trialmgr.db.base import utcnow
from trialmgr.db.models_accounts import ApiToken, RoleAssignment, Site, Trial, User
from trialmgr.domain.errors import NotFound, PermissionDenied, ValidationFailed
from trialmgr.domain.vocab import Role
from trialmgr.services import audit
from trialmgr.services.context import Actor
from trialmgr.services.passwords import Hasher, policy_errors

USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{2,63}$")
LOGIN_FAILED = "Unknown user name or wrong password."
TOKEN_PREFIX = "tm_"


class LoginFailed(PermissionDenied):
    """One message for an unknown user, a wrong password, a locked or a deactivated account."""

    code = "login_failed"


def _user_chain(username: str) -> str:
    return audit.chain_name(None, user=username)


def get_user(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound(f"user {username!r} does not exist")
    return user


def create_user(session: Session, actor: Actor, hasher: Hasher, *, username: str, full_name: str,
                password: str, email: str | None = None) -> User:
    errors: dict[str, str] = {}
    username = (username or "").strip()
    full_name = (full_name or "").strip()
    if not USERNAME_RE.match(username):
        errors["username"] = "must be 3-64 characters: lower-case letters, digits, '.', '_' or '-'"
    elif session.scalar(select(User.id).where(User.username == username)) is not None:
        errors["username"] = f"{username!r} is already taken"
    if not full_name:
        errors["full_name"] = "is required: it is the printed name shown with electronic signatures"
    elif len(full_name) > 200:
        errors["full_name"] = "must be at most 200 characters"
    if email and not re.match(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", email):
        errors["email"] = "is not an e-mail address"
    problems = policy_errors(password or "", username)
    if problems:
        errors["password"] = "; ".join(problems)
    if errors:
        raise ValidationFailed(errors)
    user = User(username=username, full_name=full_name, email=email or None, password_hash=hasher.hash(password),
                active=True, failed_logins=0)
    session.add(user)
    session.flush()
    chain = _user_chain(username)
    audit.record(session, actor, "user:create", "user", username, trial=None, chain=chain, field="full_name",
                 new=full_name)
    if email:
        audit.record(session, actor, "user:create", "user", username, trial=None, chain=chain, field="email",
                     new=email)
    return user


def set_password(session: Session, actor: Actor, hasher: Hasher, user: User, password: str) -> None:
    problems = policy_errors(password or "", user.username)
    if problems:
        raise ValidationFailed({"password": "; ".join(problems)})
    user.password_hash = hasher.hash(password)
    user.failed_logins = 0
    user.locked_until = None
    # The hash itself is never written to the audit trail: the entry records that it changed.
    audit.record(session, actor, "user:password_change", "user", user.username, trial=None,
                 chain=_user_chain(user.username), field="password", old="(hidden)", new="(changed)")


def set_active(session: Session, actor: Actor, user: User, active: bool, reason: str) -> None:
    """Accounts are deactivated, never deleted: their history stays attributable."""
    if user.active == active:
        return
    audit.record(session, actor, "user:activate" if active else "user:deactivate", "user", user.username,
                 trial=None, chain=_user_chain(user.username), field="active", old=str(user.active).lower(),
                 new=str(active).lower(), reason=reason, require_reason=True)
    user.active = active


def grant_role(session: Session, actor: Actor, user: User, trial_id: str, role: str,
               site_code: str | None = None) -> RoleAssignment:
    errors: dict[str, str] = {}
    try:
        role_v = Role(role)
    except ValueError:
        raise ValidationFailed({"role": f"unknown role {role!r}; roles: {', '.join(r.value for r in Role)}"}) from None
    if session.get(Trial, trial_id) is None:
        errors["trial"] = f"unknown trial {trial_id!r}"
    site_code = (site_code or "").strip().upper() or None
    if role_v.site_bound and not site_code:
        errors["site"] = f"a {role_v.value} must belong to a site"
    if not role_v.site_bound and site_code:
        errors["site"] = f"a {role_v.value} works across sites; give no site"
    if site_code and "trial" not in errors:
        exists = session.scalar(select(Site.id).where(Site.trial_id == trial_id, Site.code == site_code))
        if exists is None:
            errors["site"] = f"unknown site {site_code!r} in trial {trial_id!r}"
    if errors:
        raise ValidationFailed(errors)
    dup = session.scalar(select(RoleAssignment).where(
        RoleAssignment.user_id == user.id, RoleAssignment.trial_id == trial_id, RoleAssignment.role == role_v,
        RoleAssignment.site_code.is_(None) if site_code is None else RoleAssignment.site_code == site_code))
    if dup is not None:
        raise ValidationFailed({"role": f"{user.username} already has this role in {trial_id}"})
    ra = RoleAssignment(user_id=user.id, trial_id=trial_id, role=role_v, site_code=site_code)
    session.add(ra)
    session.flush()
    audit.record(session, actor, "role:grant", "role_assignment", ra.id, trial=trial_id, field="role",
                 new=f"{user.username}:{role_v.value}" + (f"@{site_code}" if site_code else ""))
    return ra


def revoke_role(session: Session, actor: Actor, assignment: RoleAssignment, reason: str) -> None:
    label = f"{assignment.user.username}:{assignment.role.value}" + (
        f"@{assignment.site_code}" if assignment.site_code else "")
    audit.record(session, actor, "role:revoke", "role_assignment", assignment.id, trial=assignment.trial_id,
                 field="role", old=label, new=None, reason=reason, require_reason=True)
    session.delete(assignment)


@dataclass(frozen=True)
class Membership:
    trial: str
    role: Role
    sites: tuple[str, ...]


def memberships(user: User) -> list[Membership]:
    """The user's (trial, role) pairs with the sites each covers, in a stable order."""
    grouped: dict[tuple[str, Role], list[str]] = {}
    for ra in user.roles:
        grouped.setdefault((ra.trial_id, ra.role), [])
        if ra.site_code:
            grouped[(ra.trial_id, ra.role)].append(ra.site_code)
    order = list(Role)
    return [Membership(t, r, tuple(sorted(s))) for (t, r), s in
            sorted(grouped.items(), key=lambda kv: (kv[0][0], order.index(kv[0][1])))]


# -- login --------------------------------------------------------------------------------------------


def authenticate(session: Session, hasher: Hasher, username: str, password: str, *, max_failures: int,
                 lockout_minutes: int, client_addr: str | None = None, request_id: str | None = None) -> User | None:
    """Check a password; None when the login fails (show LOGIN_FAILED, whatever the cause).

    Failures are counted and audited, and repeated failures lock the account for a while. It returns rather
    than raises so that the caller commits those records: a failed login must leave its trace.
    """
    now = utcnow()
    username = (username or "").strip().lower()
    user = session.scalar(select(User).where(User.username == username).with_for_update())
    ok = hasher.verify(user.password_hash if user else None, password or "")
    who = Actor(username=username or "(blank)", client_addr=client_addr, request_id=request_id or "")
    if user is None:
        audit.record(session, who, "login:failure", "user", username or None, trial=None,
                     chain="_system/logins", reason="unknown user")
        return None
    chain = _user_chain(user.username)
    if user.locked_until and user.locked_until > now:
        audit.record(session, who, "login:failure", "user", user.username, trial=None, chain=chain,
                     reason="account temporarily locked")
        return None
    if not ok or not user.active:
        record_failure(session, who, user, "wrong password" if not ok else "account deactivated",
                       max_failures=max_failures, lockout_minutes=lockout_minutes)
        return None
    if hasher.needs_rehash(user.password_hash):
        user.password_hash = hasher.hash(password)
    if user.totp_secret:
        # Half a login: the failure count is kept until the code is right too, so that knowing the password
        # does not reset the throttle on guessing codes (services/twofactor.py finishes the login).
        audit.record(session, who, "login:password_ok", "user", user.username, trial=None, chain=chain,
                     reason="authenticator code still needed")
        return user
    record_success(session, who, user)
    return user


def record_failure(session: Session, who: Actor, user: User, why: str, *, max_failures: int, lockout_minutes: int,
                   action: str = "login:failure") -> None:
    """Count one failed attempt (password or second factor), audit it, and lock the account after too many."""
    chain = _user_chain(user.username)
    user.failed_logins = (user.failed_logins or 0) + 1
    audit.record(session, who, action, "user", user.username, trial=None, chain=chain, reason=why,
                 field="failed_logins", old=str(user.failed_logins - 1), new=str(user.failed_logins))
    if user.failed_logins >= max_failures:
        user.locked_until = utcnow() + dt.timedelta(minutes=lockout_minutes)
        audit.record(session, who, "login:lockout", "user", user.username, trial=None, chain=chain,
                     field="locked_until", new=user.locked_until.isoformat(),
                     reason=f"{user.failed_logins} failed logins")


def record_success(session: Session, who: Actor, user: User, reason: str | None = None) -> None:
    if user.failed_logins:
        user.failed_logins = 0
    user.locked_until = None
    audit.record(session, who, "login:success", "user", user.username, trial=None, chain=_user_chain(user.username),
                 reason=reason)


def is_locked(user: User) -> bool:
    return bool(user.locked_until and user.locked_until > utcnow())


def record_logout(session: Session, actor: Actor) -> None:
    audit.record(session, actor, "login:logout", "user", actor.username, trial=None,
                 chain=_user_chain(actor.username))


# -- API tokens ---------------------------------------------------------------------------------------


def _token_digest(plaintext: str) -> str:
    # Tokens carry 256 bits of randomness, so a fast hash is safe here; passwords get Argon2id.
    return hashlib.sha256(plaintext.encode()).hexdigest()


def create_token(session: Session, actor: Actor, user: User, *, trial_id: str, role: str, name: str,
                 days: int = 90) -> tuple[ApiToken, str]:
    """Create a token scoped to one trial and one of the user's roles there; the plaintext is returned once."""
    errors: dict[str, str] = {}
    try:
        role_v = Role(role)
    except ValueError:
        raise ValidationFailed({"role": f"unknown role {role!r}"}) from None
    if not any(m.trial == trial_id and m.role == role_v for m in memberships(user)):
        errors["role"] = f"{user.username} is not {role_v.value} in {trial_id!r}"
    if not (name or "").strip():
        errors["name"] = "is required (what the token is for)"
    if not 1 <= days <= 366:
        errors["days"] = "must be between 1 and 366"
    if errors:
        raise ValidationFailed(errors)
    secret = secrets.token_urlsafe(32)
    plaintext = f"{TOKEN_PREFIX}{secret}"
    token = ApiToken(user_id=user.id, trial_id=trial_id, role=role_v, name=name.strip(), prefix=plaintext[:10],
                     token_hash=_token_digest(plaintext), expires_at=utcnow() + dt.timedelta(days=days))
    session.add(token)
    session.flush()
    audit.record(session, actor, "token:create", "api_token", token.id, trial=trial_id, field="token",
                 new=f"{token.prefix}… for {user.username}:{role_v.value}, expires {token.expires_at:%Y-%m-%d}")
    return token, plaintext


def revoke_token(session: Session, actor: Actor, token: ApiToken, reason: str | None = None) -> None:
    if token.revoked_at is not None:
        return
    token.revoked_at = utcnow()
    audit.record(session, actor, "token:revoke", "api_token", token.id, trial=token.trial_id, field="revoked_at",
                 new=token.revoked_at.isoformat(), reason=reason)


def authenticate_token(session: Session, plaintext: str) -> ApiToken | None:
    if not plaintext or not plaintext.startswith(TOKEN_PREFIX):
        return None
    token = session.scalar(select(ApiToken).where(ApiToken.token_hash == _token_digest(plaintext)))
    if token is None or token.revoked_at is not None or token.expires_at <= utcnow() or not token.user.active:
        return None
    return token


@dataclass(frozen=True)
class TokenIdentity:
    """Who a valid API token acts as: its one trial and role, with the sites the user holds that role at."""

    token_id: int
    user_id: int
    username: str
    full_name: str
    membership: Membership
    last_used_at: dt.datetime | None


def _token_identity_statement():
    t, u, ra = ApiToken.__table__.c, User.__table__.c, RoleAssignment.__table__.c
    return (select(t.id, t.trial_id, t.role, t.expires_at, t.revoked_at, t.last_used_at, u.id, u.username,
                   u.full_name, u.active, ra.id, ra.site_code)
            .select_from(ApiToken.__table__.join(User.__table__, u.id == t.user_id)
                         .outerjoin(RoleAssignment.__table__,
                                    (ra.user_id == u.id) & (ra.trial_id == t.trial_id) & (ra.role == t.role)))
            .where(t.token_hash == bindparam("token_hash")))


_TOKEN_IDENTITY = _token_identity_statement()


def token_identity(session: Session, plaintext: str) -> TokenIdentity | None:
    """authenticate_token and the user's matching role assignments in ONE query (the API's per-request check).

    None for an unknown, revoked or expired token, a deactivated user, or a user who no longer holds the
    token's role in the token's trial (a token acts only while its user still holds that role).
    """
    if not plaintext or not plaintext.startswith(TOKEN_PREFIX):
        return None
    # Core rows: no ORM objects for a per-request check; the statement is built once (building it cost more
    # than running it).
    rows = session.connection().execute(_TOKEN_IDENTITY, {"token_hash": _token_digest(plaintext)}).all()
    if not rows:
        return None
    (token_id, trial, role, expires_at, revoked_at, last_used_at, user_id, username, full_name, active,
     _ra, _site) = rows[0]
    if revoked_at is not None or expires_at <= utcnow() or not active or all(r[10] is None for r in rows):
        return None
    sites = tuple(sorted({r[11] for r in rows if r[10] is not None and r[11]}))
    return TokenIdentity(token_id, user_id, username, full_name, Membership(trial, role, sites), last_used_at)


TOKEN_TOUCH_SECONDS = 60


def touch_token(session: Session, token_id: int) -> None:
    """Record that a token was used (to the minute: not one write per API call). Not audited: it changes
    no record, and an entry per call would drown the trail; the token's creation and revocation are audited."""
    now = utcnow()
    session.execute(update(ApiToken).where(
        ApiToken.id == token_id,
        or_(ApiToken.last_used_at.is_(None),
            ApiToken.last_used_at < now - dt.timedelta(seconds=TOKEN_TOUCH_SECONDS))).values(last_used_at=now))


def token_needs_touch(token: ApiToken | TokenIdentity) -> bool:
    return token.last_used_at is None or (utcnow() - token.last_used_at).total_seconds() >= TOKEN_TOUCH_SECONDS


def trial_tokens(session: Session, trial_id: str) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).where(ApiToken.trial_id == trial_id)
                                .order_by(ApiToken.created_at.desc(), ApiToken.id.desc())))


def get_token(session: Session, trial_id: str, token_id: int) -> ApiToken:
    token = session.get(ApiToken, token_id)
    if token is None or token.trial_id != trial_id:
        raise NotFound(f"no API token {token_id} in {trial_id}")
    return token


def get_assignment(session: Session, trial_id: str, assignment_id: int) -> RoleAssignment:
    ra = session.get(RoleAssignment, assignment_id)
    if ra is None or ra.trial_id != trial_id:
        raise NotFound(f"no role assignment {assignment_id} in {trial_id}")
    return ra


def manageable_by(user: User, admin_trials: set[str] | frozenset[str]) -> bool:
    """Whether an administrator of `admin_trials` may reset, deactivate or reactivate this account.

    Accounts are shared between trials, so an admin of one trial must not take over (reset the password of)
    someone who works in a trial they do not administer: every role the user holds must be in one of theirs.
    """
    return all(ra.trial_id in admin_trials for ra in user.roles)


def change_own_password(session: Session, actor: Actor, hasher: Hasher, user: User, current: str, new: str, *,
                        max_failures: int, lockout_minutes: int) -> bool:
    """A signed-in user's own change. A wrong current password counts as a failed login (it is a password
    guess like any other) and returns False so that the caller commits that record; bad new passwords raise."""
    if not hasher.verify(user.password_hash, current or ""):
        record_failure(session, actor, user, "wrong current password on password change",
                       max_failures=max_failures, lockout_minutes=lockout_minutes)
        return False
    if new and hasher.verify(user.password_hash, new):
        raise ValidationFailed({"password": "must differ from the current password"})
    set_password(session, actor, hasher, user, new)
    return True
