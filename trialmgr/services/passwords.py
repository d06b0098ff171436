"""Password hashing (Argon2id via argon2-cffi) and the password policy."""

from __future__ import annotations

from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 12
MAX_LENGTH = 256

# The policy also refuses passwords made of one or two repeated characters or containing the user name.
COMMON = frozenset(
    line.strip().lower()
    for line in (Path(__file__).resolve().parent.parent / "data" / "common_passwords.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
)


def policy_errors(password: str, username: str = "") -> list[str]:
    problems = []
    if len(password) < MIN_LENGTH:
        problems.append(f"must be at least {MIN_LENGTH} characters long")
    if len(password) > MAX_LENGTH:
        problems.append(f"must be at most {MAX_LENGTH} characters long")
    lowered = password.lower()
    if lowered in COMMON:
        problems.append("is one of the most commonly used passwords")
    if password and len(set(password)) <= 2:
        problems.append("must not repeat one or two characters")
    if username and len(username) >= 3 and username.lower() in lowered:
        problems.append("must not contain the user name")
    return problems


class Hasher:
    """Argon2id. Tests pass `fast=True` for a cheaper (still Argon2id) parameter set."""

    def __init__(self, fast: bool = False) -> None:
        self._ph = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1) if fast else PasswordHasher()
        # A fixed hash to verify against when the user does not exist, so both cases take the same time.
        self._dummy = self._ph.hash("timing-equaliser-not-a-password")

    def hash(self, password: str) -> str:
        return self._ph.hash(password)

    def verify(self, stored: str | None, password: str) -> bool:
        try:
            return self._ph.verify(stored or self._dummy, password) and stored is not None
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        return self._ph.check_needs_rehash(stored)
