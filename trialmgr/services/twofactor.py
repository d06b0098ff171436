"""TOTP two-factor authentication (RFC 6238, `cryptography`'s TOTP): enrolment, the second login step, reset.

Codes are 6 digits over 30-second steps with HMAC-SHA1, the parameters every authenticator app supports. One
step either side of now is accepted for clock drift, and a step once accepted is never accepted again (the
last accepted step is kept per user), so a code seen over a shoulder cannot be replayed.

The shared secret is stored base32 in user_account.totp_secret. It is never written to the audit trail or a
log: entries record only that a second factor was enrolled or reset.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Iterable

from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor import InvalidToken
from cryptography.hazmat.primitives.twofactor.totp import TOTP
from sqlalchemy import select
from sqlalchemy.orm import Session

from trialmgr.db.models_accounts import User
from trialmgr.domain.errors import Conflict, ValidationFailed
from trialmgr.services import audit
from trialmgr.services.accounts import _user_chain, is_locked, record_failure, record_success
from trialmgr.services.context import Actor

ISSUER = "trialmgr"
DIGITS = 6
STEP_SECONDS = 30
DRIFT_STEPS = 1
SECRET_BYTES = 20  # 160 bits, the length RFC 4226 recommends


def new_secret() -> str:
    """A fresh shared secret, base32 without padding (32 characters), as authenticator apps expect."""
    return base64.b32encode(secrets.token_bytes(SECRET_BYTES)).decode().rstrip("=")


def _totp(secret: str) -> TOTP:
    padded = secret.upper() + "=" * (-len(secret) % 8)
    return TOTP(base64.b32decode(padded), DIGITS, SHA1(), STEP_SECONDS)  # noqa: S303  (RFC 6238 default)


def provisioning_uri(secret: str, username: str) -> str:
    """otpauth://totp/trialmgr:<user>?secret=...&issuer=trialmgr, for typing or pasting into an app."""
    return _totp(secret).get_provisioning_uri(username, ISSUER)


def code_at(secret: str, when: float) -> str:
    """The code for a moment (tests, and nothing else, need this)."""
    return _totp(secret).generate(int(when)).decode()


def matching_step(secret: str, code: str, now: float | None = None, last_step: int | None = None) -> int | None:
    """The time step whose code this is (within the drift window and after `last_step`), or None."""
    code = (code or "").replace(" ", "").strip()
    if len(code) != DIGITS or not (code.isascii() and code.isdigit()):
        return None
    now = time.time() if now is None else now
    current = int(now) // STEP_SECONDS
    totp = _totp(secret)
    found = None
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        # Every candidate is checked (no early exit) so the time taken does not depend on which one matched.
        try:
            totp.verify(code.encode(), step * STEP_SECONDS)
        except InvalidToken:
            continue
        if (last_step is None or step > last_step) and found is None:
            found = step
    return found


def required(user: User, roles: Iterable[str]) -> bool:
    """Whether the configuration requires this user to use a second factor (a role listed in any trial)."""
    wanted = {r.strip() for r in roles}
    return any(ra.role.value in wanted for ra in user.roles)


def enrol(session: Session, actor: Actor, user: User, secret: str, code: str, now: float | None = None) -> None:
    """Turn TOTP on for `user` once they prove their app holds `secret` by typing its current code."""
    if user.totp_secret:
        raise Conflict("two-factor authentication is already set up for this account")
    step = matching_step(secret, code, now)
    if step is None:
        raise ValidationFailed({"code": "is not right: type the 6-digit code your authenticator app shows now"})
    user.totp_secret = secret
    user.totp_last_step = step
    audit.record(session, actor, "user:totp_enrol", "user", user.username, trial=None,
                 chain=_user_chain(user.username), field="totp", old="off", new="on")


def reset(session: Session, actor: Actor, user: User, reason: str) -> None:
    """An administrator turns the second factor off (a lost phone); the user enrols again at next sign-in
    when their role requires it."""
    if not user.totp_secret:
        raise Conflict(f"{user.username} has no second factor to reset")
    audit.record(session, actor, "user:totp_reset", "user", user.username, trial=None,
                 chain=_user_chain(user.username), field="totp", old="on", new="off", reason=reason,
                 require_reason=True)
    user.totp_secret = None
    user.totp_last_step = None


def verify_login(session: Session, user_id: int, code: str, *, max_failures: int, lockout_minutes: int,
                 client_addr: str | None = None, request_id: str | None = None,
                 now: float | None = None) -> User | None:
    """The second login step, after the password (accounts.authenticate). None when it fails.

    A wrong or replayed code is a failed login: counted, audited as "login:totp_failure", and locking the
    account after too many, exactly as a wrong password. Returns rather than raises so the caller commits.
    """
    user = session.scalar(select(User).where(User.id == user_id).with_for_update())
    if user is None or not user.totp_secret:
        return None
    who = Actor(username=user.username, client_addr=client_addr, request_id=request_id or "")
    chain = _user_chain(user.username)
    if is_locked(user):
        audit.record(session, who, "login:totp_failure", "user", user.username, trial=None, chain=chain,
                     reason="account temporarily locked")
        return None
    step = matching_step(user.totp_secret, code, now, user.totp_last_step) if user.active else None
    if step is None:
        why = "account deactivated" if not user.active else "wrong or already used authenticator code"
        record_failure(session, who, user, why, max_failures=max_failures, lockout_minutes=lockout_minutes,
                       action="login:totp_failure")
        return None
    user.totp_last_step = step
    record_success(session, who, user, reason="password and authenticator code")
    return user
