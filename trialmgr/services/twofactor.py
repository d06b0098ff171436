"""TOTP two-factor authentication (RFC 6238, `cryptography`'s TOTP): enrolment, the second login step, reset.

Codes are 6 digits over 30-second steps with HMAC-SHA1, the parameters every authenticator app supports. One
step either side of now is accepted for clock drift, and a step once accepted is never accepted again (the
last accepted step is kept per user), so a code seen over a shoulder cannot be replayed.

The shared secret is sealed in user_account.totp_secret: AES-256-GCM under the instance's credentials key
(`instance/credentials.key`, outside the database), bound to the user's id through the associated data, so
someone who can read the database cannot mint codes, and a sealed secret copied onto another account does not
open. It is never written to the audit trail or a log: entries record only that a second factor was enrolled
or reset. Secrets stored in the clear by versions before sealing are accepted and sealed at the user's next
sign-in, or all at once by `trialmgr init` (seal_legacy_secrets).
"""

from __future__ import annotations

import base64
import logging
import secrets
import time
from collections.abc import Iterable

from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor import InvalidToken
from cryptography.hazmat.primitives.twofactor.totp import TOTP
from sqlalchemy import select
from sqlalchemy.orm import Session

from trialmgr.db.models_accounts import User
from trialmgr.domain import concealment
from trialmgr.domain.errors import Conflict, ValidationFailed
from trialmgr.services import audit
from trialmgr.services.accounts import _user_chain, is_locked, record_failure, record_success
from trialmgr.services.context import Actor

log = logging.getLogger(__name__)

ISSUER = "trialmgr"
DIGITS = 6
STEP_SECONDS = 30
DRIFT_STEPS = 1
SECRET_BYTES = 20  # 160 bits, the length RFC 4226 recommends


SEALED_PREFIX = "v1."


def _aad(user_id: int) -> bytes:
    return f"trialmgr totp secret|user:{user_id}".encode()


def seal(key: bytes, user_id: int, secret: str) -> str:
    """The stored form of a user's shared secret: v1.<base64url of nonce || ciphertext || tag>."""
    blob = concealment.encrypt_blob(key, _aad(user_id), secret.encode("ascii"))
    return SEALED_PREFIX + base64.urlsafe_b64encode(blob).decode("ascii").rstrip("=")


def unseal(key: bytes, user_id: int, stored: str) -> str | None:
    """The shared secret from its stored form (a legacy clear base32 secret as it is); None when the stored
    value does not open with this key for this user (another key, another account's secret, altered bytes)."""
    if not stored.startswith(SEALED_PREFIX):
        return stored
    body = stored[len(SEALED_PREFIX):]
    try:
        blob = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        return concealment.decrypt_blob(key, _aad(user_id), blob).decode("ascii")
    except (ValueError, concealment.ConcealmentError):
        return None


def is_sealed(stored: str | None) -> bool:
    return bool(stored) and stored.startswith(SEALED_PREFIX)


def seal_legacy_secrets(session: Session, key: bytes) -> int:
    """Seal every secret still stored in the clear (from before sealing); returns how many. Not audited: the
    factor itself does not change, only how it is stored."""
    users = session.scalars(select(User).where(User.totp_secret.is_not(None)).with_for_update()).all()
    count = 0
    for user in users:
        if not is_sealed(user.totp_secret):
            user.totp_secret = seal(key, user.id, user.totp_secret)
            count += 1
    return count


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


def enrol(session: Session, actor: Actor, user: User, secret: str, code: str, key: bytes,
          now: float | None = None) -> None:
    """Turn TOTP on for `user` once they prove their app holds `secret` by typing its current code; the secret
    is stored sealed with the credentials `key`."""
    if user.totp_secret:
        raise Conflict("two-factor authentication is already set up for this account")
    step = matching_step(secret, code, now)
    if step is None:
        raise ValidationFailed({"code": "is not right: type the 6-digit code your authenticator app shows now"})
    user.totp_secret = seal(key, user.id, secret)
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


def verify_login(session: Session, user_id: int, code: str, *, key: bytes, max_failures: int, lockout_minutes: int,
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
    secret = unseal(key, user.id, user.totp_secret)
    if secret is None:  # sealed with another key or for another account, or altered: no code can match
        log.error("the stored TOTP secret of user %s does not open with this instance's credentials key",
                  user.username)
    step = matching_step(secret, code, now, user.totp_last_step) if user.active and secret else None
    if step is None:
        why = "account deactivated" if not user.active else "wrong or already used authenticator code"
        record_failure(session, who, user, why, max_failures=max_failures, lockout_minutes=lockout_minutes,
                       action="login:totp_failure")
        return None
    user.totp_last_step = step
    if not is_sealed(user.totp_secret):  # stored in the clear by an earlier version: sealed from now on
        user.totp_secret = seal(key, user.id, secret)
    record_success(session, who, user, reason="password and authenticator code")
    return user
