"""Durable queues whose items are encrypted: nothing received or to be sent is lost in a crash."""

from __future__ import annotations

import itertools
import time
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services.ports import QueueEntry
from storage.codec import _dumps, _loads, new_id
from storage.crypto import RecordCipher
from storage.index import hour_up
from storage.models import QueueItem

_sequence = itertools.count()


class SqlQueue:
    """One named queue in the ``queue_items`` table."""

    table = "queue_items"

    def __init__(self, session: AsyncSession, cipher: RecordCipher, name: str) -> None:
        self._session = session
        self._cipher = cipher
        self._name = name

    async def put(self, payload: dict[str, Any], now: datetime, expires_at: datetime) -> str:
        """Store an item (due at once)."""
        # Ids sort in the order items were put, so one recipient's messages keep their order.
        item_id = f"{time.time_ns():019d}{next(_sequence) % 10_000:04d}{new_id()[:9]}"
        dek, wrapped = self._cipher.new_dek(self.table, item_id)
        self._session.add(
            QueueItem(
                id=item_id,
                queue=self._name,
                created_at=now,
                next_attempt_at=now,
                attempts=0,
                expires_at=hour_up(expires_at),
                kek_id=wrapped.kek_id,
                wrapped_dek=wrapped.wrapped,
                payload_ct=self._cipher.encrypt(
                    dek, self.table, item_id, "payload", _dumps(payload)
                ),
            )
        )
        await self._session.flush()
        return item_id

    async def due(self, now: datetime | None, limit: int = 100) -> list[QueueEntry]:
        """Items whose next attempt is due (every item when ``now`` is None), oldest first."""
        query = select(QueueItem).where(QueueItem.queue == self._name)
        if now is not None:
            query = query.where(QueueItem.next_attempt_at <= now)
        # SKIP LOCKED: an item another process is handling right now (its turn holds the row)
        # is that process's; the seen-update claim catches any other overlap.
        query = query.order_by(QueueItem.created_at, QueueItem.id).limit(limit)
        rows = (await self._session.execute(query.with_for_update(skip_locked=True))).scalars()
        items = []
        for row in rows:
            dek = self._cipher.row_dek(self.table, row)
            payload = _loads(
                self._cipher.decrypt(dek, self.table, row.id, "payload", row.payload_ct)
            )
            items.append(QueueEntry(row.id, payload, row.attempts, row.next_attempt_at))
        return items

    async def done(self, item_id: str) -> None:
        """Remove a handled item."""
        await self._session.execute(delete(QueueItem).where(QueueItem.id == item_id))

    async def retry_at(self, item_id: str, when: datetime, attempts: int) -> None:
        """Try an item again later."""
        await self._session.execute(
            update(QueueItem)
            .where(QueueItem.id == item_id)
            .values(next_attempt_at=when, attempts=attempts)
        )
