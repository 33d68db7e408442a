"""Case numbers: short and random, unique among live cases, never reused while held.

A number max+1 told anyone who saw it how many reports there were, and came back as soon as
the highest case was purged, so a lawyer's ``/reply N`` could reach another reporter. Numbers
are drawn at random from four digits (five and more once collisions pile up) and held for
``hold`` after submission: a case lives at most the retention ceiling, so holding a number for
two ceilings keeps it out of use for at least one ceiling after its case is gone.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, timedelta

#: ``draw(low, high)``: a number in ``[low, high)``.
Draw = Callable[[int, int], int]
#: Attempts in one band of digits before the next, wider band is tried.
_PER_BAND = 16
_FIRST_DIGITS = 4
_MAX_DIGITS = 9


def random_draw(low: int, high: int) -> int:
    """A uniformly random number in ``[low, high)`` from the system's CSPRNG."""
    return low + secrets.randbelow(high - low)


@dataclass(frozen=True, slots=True)
class CaseNumbering:
    """How case numbers are drawn and how long each is held."""

    #: Two retention ceilings (365 days by default), from submission.
    hold: timedelta = timedelta(days=730)
    draw: Draw = field(default=random_draw)

    def held_until(self, created_on: date) -> date:
        """The last day a number drawn on ``created_on`` stays out of use."""
        return created_on + self.hold


class NumbersExhausted(Exception):
    """No free number was found (every band up to nine digits collided)."""


async def free_number(draw: Draw, is_free: Callable[[int], Awaitable[bool]]) -> int:
    """A number for which ``is_free`` holds, from the narrowest band of digits that has one."""
    for digits in range(_FIRST_DIGITS, _MAX_DIGITS + 1):
        low, high = 10 ** (digits - 1), 10**digits
        for _ in range(_PER_BAND):
            number = draw(low, high)
            if await is_free(number):
                return number
    raise NumbersExhausted("no free case number")
