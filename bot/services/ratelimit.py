"""Per-chat rate limiting: a token bucket per chat, as pure arithmetic over a stored
:class:`~bot.services.ports.Bucket` (the inbound service keeps it in the database, under the
chat's lock, so every process counts against one bucket)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from bot.services.ports import Bucket


class Verdict(Enum):
    """What to do with one more event from a chat."""

    OK = "ok"
    WARN = "warn"  # first event over the limit: tell the reporter calmly, once
    DROP = "drop"  # still over the limit: ignore silently


def step(bucket: Bucket | None, now: datetime, limit: float, rate: float) -> tuple[Bucket, Verdict]:
    """Count one event at ``now`` against a bucket of ``limit`` tokens refilled at ``rate`` a
    second (None: a chat never counted, or forgotten once full); the bucket after, and the
    verdict.

    Over any span of time T a chat gets at most ``limit + rate * T`` events through.
    """
    if bucket is None:
        tokens, warned = limit, False
    else:
        # A clock stepped back refills nothing (and takes nothing away).
        elapsed = max(0.0, (now - bucket.at).total_seconds())
        tokens, warned = min(limit, bucket.tokens + elapsed * rate), bucket.warned
    if tokens >= limit:
        warned = False  # calm again: a new flood gets a new warning
    if tokens < 1:
        # Once per flood, not at every refilled token.
        return Bucket(tokens, now, True), Verdict.DROP if warned else Verdict.WARN
    return Bucket(tokens - 1, now, warned), Verdict.OK


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Up to ``limit`` events from a chat at once, refilled at ``limit`` a ``window``.

    Two numbers and a flag per chat, however long the conversation: no log of events is kept.
    A bucket untouched for a ``window`` is full again, the same as none, so it may be forgotten.
    """

    limit: int = 30
    window: timedelta = timedelta(minutes=1)

    def step(self, bucket: Bucket | None, now: datetime) -> tuple[Bucket, Verdict]:
        """:func:`step` with this limit."""
        return step(bucket, now, float(self.limit), self.limit / self.window.total_seconds())
