"""Statuses of lawyers and cases, and the transitions between them: rules, not storage."""

from __future__ import annotations

from enum import StrEnum

from bot.domain.triage import Priority


class Role(StrEnum):
    """What an account on the staff side is for."""

    LAWYER = "lawyer"
    #: Gets alerts and may lock the service; never gets cases.
    ADMIN = "admin"


class LawyerStatus(StrEnum):
    """Where a lawyer or admin account stands."""

    INVITED = "invited"
    REGISTERED = "registered"
    VERIFIED = "verified"
    SUSPENDED = "suspended"
    REVOKED = "revoked"


#: Every status an account may move to from each status. A suspended account comes back only
#: through a new invite (a new registration and a new phrase); a revoked one never does.
LAWYER_TRANSITIONS: dict[LawyerStatus, frozenset[LawyerStatus]] = {
    LawyerStatus.INVITED: frozenset({LawyerStatus.REGISTERED, LawyerStatus.REVOKED}),
    LawyerStatus.REGISTERED: frozenset(
        {LawyerStatus.VERIFIED, LawyerStatus.SUSPENDED, LawyerStatus.REVOKED, LawyerStatus.INVITED}
    ),
    LawyerStatus.VERIFIED: frozenset(
        {LawyerStatus.SUSPENDED, LawyerStatus.REVOKED, LawyerStatus.INVITED}
    ),
    LawyerStatus.SUSPENDED: frozenset({LawyerStatus.INVITED, LawyerStatus.REVOKED}),
    LawyerStatus.REVOKED: frozenset(),
}


def lawyer_may_become(current: str, new: str) -> bool:
    """Whether an account in status ``current`` may move to ``new``."""
    try:
        return LawyerStatus(new) in LAWYER_TRANSITIONS[LawyerStatus(current)]
    except ValueError:
        return False


def gets_cases(role: str, status: str) -> bool:
    """Only verified lawyers are offered cases (admins get alerts, never cases)."""
    return role == Role.LAWYER and status == LawyerStatus.VERIFIED


class CaseStatus(StrEnum):
    """Where a submitted case stands."""

    NEW = "new"
    ASSIGNED = "assigned"
    ACCEPTED = "accepted"
    CLOSED = "closed"


#: Cases a lawyer holds.
OPEN = (CaseStatus.ASSIGNED, CaseStatus.ACCEPTED)
#: Cases routing still has to place: not offered yet, or offered and not accepted.
WAITING = (CaseStatus.NEW, CaseStatus.ASSIGNED)
#: The priority of reports that only document: they go to the daily digest, not to routing.
DOCUMENTATION = Priority.P4

CASE_TRANSITIONS: dict[CaseStatus, frozenset[CaseStatus]] = {
    CaseStatus.NEW: frozenset({CaseStatus.ASSIGNED, CaseStatus.ACCEPTED, CaseStatus.CLOSED}),
    CaseStatus.ASSIGNED: frozenset({CaseStatus.NEW, CaseStatus.ACCEPTED, CaseStatus.CLOSED}),
    CaseStatus.ACCEPTED: frozenset({CaseStatus.NEW, CaseStatus.ACCEPTED, CaseStatus.CLOSED}),
    CaseStatus.CLOSED: frozenset(),
}


def case_may_become(current: str, new: str) -> bool:
    """Whether a case in status ``current`` may move to ``new``."""
    try:
        return CaseStatus(new) in CASE_TRANSITIONS[CaseStatus(current)]
    except ValueError:
        return False


def needs_routing(priority: int) -> bool:
    """Whether a case goes to a lawyer (documentation-only reports wait for the digest)."""
    return priority < DOCUMENTATION
