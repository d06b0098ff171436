"""Typed domain errors.

Every error the core raises on purpose is a ``DomainError`` with a stable ``code``; adapters map the
class (or the code) to an HTTP status or CLI exit status in one place, so new subclasses only need a code.
Messages are plain words meant for staff, never stack traces.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base of every expected, user-facing failure of a domain rule."""

    code: str = "domain_error"
    default_message: str = "the request breaks a rule of the trial"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)


class ProtocolInvalid(DomainError):
    """A protocol definition was refused; ``errors`` lists every mistake as ``"key.path: message"``."""

    code = "protocol_invalid"

    def __init__(self, errors: list[str], *, source: str = "<protocol>") -> None:
        self.errors = list(errors)
        self.source = source
        count = len(self.errors)
        noun = "mistake" if count == 1 else "mistakes"
        lines = "\n".join(f"  {e}" for e in self.errors)
        super().__init__(f"{source}: protocol refused, {count} {noun}:\n{lines}")


class ValidationFailed(DomainError):
    """Submitted values broke field rules; ``errors`` maps field id to a message naming the rule."""

    code = "validation_failed"

    def __init__(self, errors: dict[str, str], message: str | None = None) -> None:
        self.errors = dict(errors)
        summary = "; ".join(f"{k}: {v}" for k, v in self.errors.items())
        super().__init__(message or f"invalid input: {summary}")


class NotFound(DomainError):
    code = "not_found"
    default_message = "no such record"


class PermissionDenied(DomainError):
    code = "permission_denied"
    default_message = "your role does not allow this"


class NotEligible(DomainError):
    code = "not_eligible"
    default_message = "the participant does not meet the eligibility criteria"


class ConsentMissing(DomainError):
    code = "consent_missing"
    default_message = "informed consent has not been recorded"


class AlreadyRandomized(DomainError):
    code = "already_randomized"
    default_message = "the participant has already been randomized"


class ListExhausted(DomainError):
    code = "list_exhausted"
    default_message = "the allocation list for this stratum has no slots left"


class NoAllocationList(DomainError):
    code = "no_allocation_list"
    default_message = "no allocation list has been generated"


class DataLocked(DomainError):
    code = "data_locked"
    default_message = "the data are locked and cannot be changed"


class ReasonRequired(DomainError):
    code = "reason_required"
    default_message = "a reason is required to change a saved value"


class Conflict(DomainError):
    code = "conflict"
    default_message = "the record was changed by someone else; reload and try again"


__all__ = [
    "AlreadyRandomized",
    "Conflict",
    "ConsentMissing",
    "DataLocked",
    "DomainError",
    "ListExhausted",
    "NoAllocationList",
    "NotEligible",
    "NotFound",
    "PermissionDenied",
    "ProtocolInvalid",
    "ReasonRequired",
    "ValidationFailed",
]
