"""Durable, encrypted queues for a channel: what was received and not yet handled, and what
is waiting to be sent. Each call is one transaction."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from bot.services.clock import Clock

QUEUE_TTL = timedelta(days=7)


class QueuedItem(Protocol):
    """A decrypted queue item."""

    @property
    def id(self) -> str: ...
    @property
    def payload(self) -> dict[str, Any]: ...
    @property
    def attempts(self) -> int: ...
    @property
    def next_attempt_at(self) -> datetime: ...


class QueueStore(Protocol):
    """One named queue (storage implements it)."""

    async def put(self, payload: dict[str, Any], now: datetime, expires_at: datetime) -> str: ...
    async def due(self, now: datetime | None, limit: int = 100) -> Sequence[QueuedItem]: ...
    async def done(self, item_id: str) -> None: ...
    async def retry_at(self, item_id: str, when: datetime, attempts: int) -> None: ...


class QueueUnitOfWork(Protocol):
    """A transaction that reaches the Signal queues."""

    @property
    def signal_inbox(self) -> QueueStore: ...
    @property
    def signal_outbox(self) -> QueueStore: ...
    async def commit(self) -> None: ...
    async def __aenter__(self) -> QueueUnitOfWork: ...
    async def __aexit__(self, *exc: object) -> None: ...


class SignalQueues:
    """The Signal channel's inbox and outbox."""

    def __init__(self, uow: Callable[[], Any], clock: Clock) -> None:
        self._uow: Callable[[], QueueUnitOfWork] = uow
        self._clock = clock

    async def received(self, messages: Sequence[dict[str, Any]]) -> list[str]:
        """Store received envelopes before anything is done with them."""
        now = self._clock()
        async with self._uow() as uow:
            ids = [await uow.signal_inbox.put(dict(m), now, now + QUEUE_TTL) for m in messages]
            await uow.commit()
        return ids

    async def handled(self, ids: Sequence[str]) -> None:
        """Forget envelopes that have been handled."""
        async with self._uow() as uow:
            for item_id in ids:
                await uow.signal_inbox.done(item_id)
            await uow.commit()

    async def unhandled(self) -> Sequence[QueuedItem]:
        """Envelopes a crash left behind, oldest first."""
        async with self._uow() as uow:
            return await uow.signal_inbox.due(None, limit=10_000)

    async def enqueue(self, recipient: str, text: str) -> None:
        """Keep a message to send until Signal has taken it."""
        now = self._clock()
        async with self._uow() as uow:
            await uow.signal_outbox.put({"to": recipient, "text": text}, now, now + QUEUE_TTL)
            await uow.commit()

    async def outgoing(self) -> Sequence[QueuedItem]:
        """Every message waiting to be sent, in the order it was queued."""
        async with self._uow() as uow:
            return await uow.signal_outbox.due(None, limit=500)

    async def sent(self, item_id: str) -> None:
        """Forget a message Signal took (or that can never be sent)."""
        async with self._uow() as uow:
            await uow.signal_outbox.done(item_id)
            await uow.commit()

    async def later(self, item_id: str, delay: timedelta, attempts: int) -> None:
        """Try a message again after ``delay``."""
        async with self._uow() as uow:
            await uow.signal_outbox.retry_at(item_id, self._clock() + delay, attempts)
            await uow.commit()
