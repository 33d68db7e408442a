"""Routing (DESIGN.md section 7): which lawyer gets a case, and when it escalates. Pure."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.domain.triage import Priority

ANY_REGION = "all"
#: Not accepted within this window, a case moves on to the next lawyer.
ESCALATION = {
    Priority.P1: timedelta(minutes=15),
    Priority.P2: timedelta(hours=2),
    Priority.P3: timedelta(hours=24),
}
DEFAULT_CAP = 10


@dataclass(frozen=True, slots=True)
class LawyerSlot:
    """What routing needs to know of a lawyer."""

    id: int
    languages: frozenset[str]
    regions: frozenset[str]
    on_call: bool
    open_cases: int


@dataclass(frozen=True, slots=True)
class CaseNeeds:
    """What routing needs to know of a case."""

    priority: Priority
    language: str
    region: str


def matches(lawyer: LawyerSlot, case: CaseNeeds) -> bool:
    """Whether the lawyer speaks the reporter's language and covers the region."""
    return case.language in lawyer.languages and (
        case.region in lawyer.regions or ANY_REGION in lawyer.regions
    )


def choose_lawyer(
    case: CaseNeeds,
    lawyers: Iterable[LawyerSlot],
    *,
    tried: Collection[int] = (),
    cap: int = DEFAULT_CAP,
) -> LawyerSlot | None:
    """The matching lawyer with the fewest open cases (on call first for P1), under the cap."""
    best: LawyerSlot | None = None
    best_key: tuple[int, int, int] | None = None
    urgent = case.priority is Priority.P1
    for lawyer in lawyers:
        if lawyer.id in tried or lawyer.open_cases >= cap or not matches(lawyer, case):
            continue
        key = (0 if (lawyer.on_call or not urgent) else 1, lawyer.open_cases, lawyer.id)
        if best_key is None or key < best_key:
            best, best_key = lawyer, key
    return best


class Roster:
    """Lawyers indexed by language and region, each bucket pre-sorted by routing preference.

    ``choose`` gives the same answer as :func:`choose_lawyer` but looks only at matching
    lawyers, best first, so a decision costs about as much as finding the first match.
    """

    def __init__(self, lawyers: Iterable[LawyerSlot], regions: Iterable[str] = ()) -> None:
        lawyers = list(lawyers)
        known = set(regions) | {r for x in lawyers for r in x.regions} - {ANY_REGION}
        buckets: dict[tuple[str, str], list[LawyerSlot]] = {}
        for lawyer in lawyers:
            covered = known if ANY_REGION in lawyer.regions else lawyer.regions
            for language in lawyer.languages:
                for region in covered:
                    buckets.setdefault((language, region), []).append(lawyer)
                buckets.setdefault((language, ANY_REGION), []).append(lawyer)
        self._normal = {
            k: sorted(v, key=lambda x: (x.open_cases, x.id)) for k, v in buckets.items()
        }
        self._urgent = {
            k: sorted(v, key=lambda x: (not x.on_call, x.open_cases, x.id))
            for k, v in buckets.items()
        }
        self._anywhere = {
            language: [x for x in lawyers if ANY_REGION in x.regions and language in x.languages]
            for language in {lang for x in lawyers for lang in x.languages}
        }

    def choose(
        self, case: CaseNeeds, *, tried: Collection[int] = (), cap: int = DEFAULT_CAP
    ) -> LawyerSlot | None:
        """The lawyer :func:`choose_lawyer` would pick."""
        table = self._urgent if case.priority is Priority.P1 else self._normal
        bucket = table.get((case.language, case.region))
        if bucket is None:  # a region no lawyer names: only those covering all regions match
            return choose_lawyer(case, self._anywhere.get(case.language, ()), tried=tried, cap=cap)
        for lawyer in bucket:
            if lawyer.id not in tried and lawyer.open_cases < cap:
                return lawyer
        return None


def first_match(case: CaseNeeds, lawyers: Sequence[LawyerSlot]) -> LawyerSlot | None:
    """The naive baseline: the first lawyer that matches (for the routing benchmark)."""
    return next((lawyer for lawyer in lawyers if matches(lawyer, case)), None)


def overdue(priority: Priority, assigned_at: datetime, now: datetime) -> bool:
    """Whether an assigned, unaccepted case has waited past its priority's window."""
    window = ESCALATION.get(priority)
    return window is not None and now - assigned_at >= window
