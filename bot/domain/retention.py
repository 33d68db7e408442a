"""How long a case may be kept: coarse expiry times and the retention ceiling (DESIGN.md s. 4).

Every extension (a lawyer's ``/extend``, a reply, an open legal deadline) goes through
:func:`extend`, so none keeps a case past ``max_retention`` from the day it was submitted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

#: A reply from a lawyer keeps the case at least this long after it.
REPLY_KEEPS = timedelta(days=30)


def round_up_to_hour(moment: datetime) -> datetime:
    """The next whole hour (or the moment itself when it is one): expiry times at rest."""
    floor = moment.replace(minute=0, second=0, microsecond=0)
    return floor if floor == moment else floor + timedelta(hours=1)


def floor_to_hour(moment: datetime) -> datetime:
    """The start of the moment's hour: times at rest that record when something happened."""
    return moment.replace(minute=0, second=0, microsecond=0)


def ceiling(created_on: date, max_retention: timedelta) -> datetime:
    """The last moment a case submitted on ``created_on`` may be kept."""
    return datetime.combine(created_on, time(0), UTC) + max_retention


@dataclass(frozen=True, slots=True)
class Extension:
    """A case's new expiry and whether the ceiling cut the extension short."""

    expires_at: datetime
    capped: bool

    def changed(self, before: datetime) -> bool:
        """Whether the expiry moved."""
        return self.expires_at != before


def extend(
    current: datetime, wanted: datetime, created_on: date, max_retention: timedelta
) -> Extension:
    """Keep a case until ``wanted`` (rounded up to the hour), never shorter than it already is
    and never past the ceiling."""
    limit = ceiling(created_on, max_retention)
    target = round_up_to_hour(wanted)
    capped = target > limit
    return Extension(max(current, min(target, limit)), capped)


def number_hold(max_retention: timedelta) -> timedelta:
    """How long a case number stays out of use after submission: a case lives at most one
    ceiling, so two keep its number unused for at least one ceiling after it is gone."""
    return 2 * max_retention
