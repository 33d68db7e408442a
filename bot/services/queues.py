"""Durable, encrypted queues for a channel: what was received and not yet handled, and what
is left from an older version's Signal outbox. Each call is one transaction."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from bot.domain.messages import Notice
from bot.services.clock import Clock
from bot.services.outbox import Outgoing
from bot.services.ports import OutboxStore

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

    async def put_many(
        self, payloads: Sequence[dict[str, Any]], now: datetime, expires_at: datetime
    ) -> Sequence[str]: ...
    async def due(self, now: datetime | None, limit: int = 100) -> Sequence[QueuedItem]: ...
    async def done(self, item_id: str) -> None: ...
    async def retry_at(self, item_id: str, when: datetime, attempts: int) -> None: ...


class QueueUnitOfWork(Protocol):
    """A transaction that reaches the Signal queues."""

    @property
    def signal_inbox(self) -> QueueStore: ...
    @property
    def telegram_inbox(self) -> QueueStore: ...
    @property
    def signal_outbox(self) -> QueueStore: ...
    @property
    def outbox(self) -> OutboxStore: ...
    async def commit(self) -> None: ...
    async def __aenter__(self) -> QueueUnitOfWork: ...
    async def __aexit__(self, *exc: object) -> None: ...


def inbox_of(uow: QueueUnitOfWork, channel: str) -> QueueStore:
    """A channel's durable inbox in this transaction."""
    return uow.telegram_inbox if channel == "telegram" else uow.signal_inbox


class ChannelQueues:
    """A channel's durable inbox (received, not yet handled), and Signal's older outbox."""

    def __init__(self, uow: Callable[[], Any], clock: Clock, channel: str = "signal") -> None:
        self._uow: Callable[[], QueueUnitOfWork] = uow
        self._clock = clock
        self._channel = channel

    async def received(self, messages: Sequence[dict[str, Any]]) -> list[str]:
        """Store received envelopes before anything is done with them."""
        now = self._clock()
        async with self._uow() as uow:
            inbox = inbox_of(uow, self._channel)
            ids = await inbox.put_many([dict(m) for m in messages], now, now + QUEUE_TTL)
            await uow.commit()
        return list(ids)

    async def handled(self, ids: Sequence[str]) -> None:
        """Forget envelopes that have been handled."""
        async with self._uow() as uow:
            for item_id in ids:
                await inbox_of(uow, self._channel).done(item_id)
            await uow.commit()

    async def unhandled(self) -> Sequence[QueuedItem]:
        """Envelopes a crash left behind, oldest first."""
        async with self._uow() as uow:
            return await inbox_of(uow, self._channel).due(None, limit=10_000)

    async def adopt_legacy_outbox(self) -> int:
        """Move messages an older version queued for Signal into the outbox (once, at start)."""
        now = self._clock()
        async with self._uow() as uow:
            items = await uow.signal_outbox.due(None, limit=10_000)
            if not items:
                return 0
            out = Outgoing()
            for item in items:
                to, text = str(item.payload.get("to", "")), str(item.payload.get("text", ""))
                if to and text:
                    out.show("signal", to, [Notice(text)], clear=False, track=False)
                await uow.signal_outbox.done(item.id)
            await out.write(uow, now)
            await uow.commit()
        return len(items)
