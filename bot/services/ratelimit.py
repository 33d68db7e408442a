"""Per-chat rate limiting, in memory, keyed by a pseudonym (never the raw chat id)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from datetime import timedelta
from enum import Enum

from bot.services.clock import Clock

_PRUNE_AT = 10_000


class Verdict(Enum):
    """What to do with one more event from a chat."""

    OK = "ok"
    WARN = "warn"  # first event over the limit: tell the reporter calmly, once
    DROP = "drop"  # still over the limit: ignore silently


class ChatRateLimiter:
    """At most ``limit`` events per chat in any ``window``."""

    def __init__(
        self,
        pseudonym: Callable[[str, str], str],
        clock: Clock,
        limit: int = 30,
        window: timedelta = timedelta(minutes=1),
    ) -> None:
        self._pseudonym = pseudonym
        self._clock = clock
        self._limit = limit
        self._window = window
        self._events: dict[str, deque[float]] = {}
        self._warned: set[str] = set()

    def check(self, channel: str, chat_id: str) -> Verdict:
        """Count one event and say whether to handle it."""
        now = self._clock().timestamp()
        key = self._pseudonym(channel, chat_id)
        events = self._events.setdefault(key, deque())
        horizon = now - self._window.total_seconds()
        while events and events[0] <= horizon:
            events.popleft()
        if len(self._events) > _PRUNE_AT:
            self._prune(horizon)
        if len(events) >= self._limit:
            if key in self._warned:
                return Verdict.DROP
            self._warned.add(key)
            return Verdict.WARN
        self._warned.discard(key)
        events.append(now)
        return Verdict.OK

    def _prune(self, horizon: float) -> None:
        for key in [k for k, v in self._events.items() if not v or v[-1] <= horizon]:
            del self._events[key]
            self._warned.discard(key)
