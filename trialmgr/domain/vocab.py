"""Closed vocabularies, stored by value."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    INVESTIGATOR = "investigator"
    COORDINATOR = "coordinator"
    ASSESSOR = "assessor"
    MONITOR = "monitor"

    @property
    def site_bound(self) -> bool:
        """Coordinators and assessors work for sites and see only their sites' participants."""
        return self in (Role.COORDINATOR, Role.ASSESSOR)


class DataState(StrEnum):
    OPEN = "open"
    FROZEN = "frozen"
    LOCKED = "locked"


class ScreeningOutcome(StrEnum):
    ELIGIBLE = "eligible"
    INELIGIBLE = "ineligible"
    DECLINED = "declined"
    ENROLLED = "enrolled"


class ParticipantStatus(StrEnum):
    ENROLLED = "enrolled"
    RANDOMIZED = "randomized"
    WITHDRAWN = "withdrawn"
    LOST = "lost_to_follow_up"
    COMPLETED = "completed"
