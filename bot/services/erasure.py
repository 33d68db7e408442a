"""Deletion is erasure only once the KEK that wrapped it is gone (DESIGN.md section 4): every
deletion a reporter asks for, or a lawyer or admin makes, schedules a ratchet within
``TIPLINE_ERASE_WITHIN_MINUTES``; deletions in that time share one ratchet.

The pending ratchet is a marker in the database holding only the hour it is due, floored: the
ratchet may come early, never late, and the marker tells nothing finer than the hour about when
anything was deleted. It lives only until the ratchet has run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from bot.services.ports import AssignmentStore

#: How often the erase job looks; the due hour is chosen so that a round inside it is in time.
ERASE_JOB_SECONDS = 60.0


class HasErasure(Protocol):
    """A transaction that reaches the erase marker (kept with the jobs' bookkeeping)."""

    @property
    def assignments(self) -> AssignmentStore:
        """Assignments and job bookkeeping in this transaction."""
        ...


def due_hour(deleted_at: datetime, within: timedelta) -> datetime:
    """The hour a ratchet for a deletion at ``deleted_at`` is due: floored, with room for a job
    round and the ratchet itself before ``within`` has passed."""
    margin = min(within / 2, timedelta(minutes=5))
    latest = deleted_at + within - margin
    return latest.replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True, slots=True)
class Erasure:
    """Schedules the ratchet that makes a deletion final."""

    within: timedelta = timedelta(minutes=60)

    async def schedule(self, uow: HasErasure, now: datetime) -> None:
        """A deletion happened in this transaction: ratchet within the configured time."""
        await uow.assignments.schedule_erase(due_hour(now, self.within))
