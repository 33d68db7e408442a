"""Per-chat rate limiting, in memory, keyed by a pseudonym (never the raw chat id)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum

from bot.services.clock import Clock

_PRUNE_AT = 10_000


class Verdict(Enum):
    """What to do with one more event from a chat."""

    OK = "ok"
    WARN = "warn"  # first event over the limit: tell the reporter calmly, once
    DROP = "drop"  # still over the limit: ignore silently


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float
    warned: bool = False


class ChatRateLimiter:
    """A token bucket per chat: up to ``limit`` events at once, refilled at ``limit`` a ``window``.

    Two numbers per chat, however long the conversation: no log of events is kept. Over any span
    of time T a chat gets at most ``limit + limit * T / window`` events through.
    """

    def __init__(
        self,
        pseudonym: Callable[[str, str], str],
        clock: Clock,
        limit: int = 30,
        window: timedelta = timedelta(minutes=1),
        prune_at: int = _PRUNE_AT,
    ) -> None:
        self._pseudonym = pseudonym
        self._prune_at = self._prune_floor = prune_at
        self._clock = clock
        self._limit = float(limit)
        self._rate = limit / window.total_seconds()
        self._buckets: dict[str, _Bucket] = {}

    def check(self, channel: str, chat_id: str) -> Verdict:
        """Count one event and say whether to handle it."""
        now = self._clock().timestamp()
        key = self._pseudonym(channel, chat_id)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._prune_at:
                self._prune(now)
            bucket = self._buckets[key] = _Bucket(self._limit, now)
        bucket.tokens = min(self._limit, self._refilled(bucket, now))
        bucket.at = now
        if bucket.tokens >= self._limit:
            bucket.warned = False  # calm again: a new flood gets a new warning
        if bucket.tokens < 1:
            if bucket.warned:
                return Verdict.DROP
            bucket.warned = True  # once per flood, not at every refilled token
            return Verdict.WARN
        bucket.tokens -= 1
        return Verdict.OK

    def _prune(self, now: float) -> None:
        # A bucket that has refilled is the same as none: forget the chat.
        full = [k for k, b in self._buckets.items() if self._refilled(b, now) >= self._limit]
        for key in full:
            del self._buckets[key]
        # Many chats active at once: look again only when they have doubled, not on every chat.
        self._prune_at = max(self._prune_floor, 2 * len(self._buckets))

    def _refilled(self, bucket: _Bucket, now: float) -> float:
        # A clock stepped back refills nothing (and takes nothing away).
        return bucket.tokens + max(0.0, now - bucket.at) * self._rate

    def __len__(self) -> int:
        """Chats currently remembered."""
        return len(self._buckets)
