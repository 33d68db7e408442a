"""Durable queues whose items are encrypted: nothing received or to be sent is lost in a crash."""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from bot.services.ports import QueueEntry
from storage.codec import _dumps, _loads, new_id
from storage.crypto import RecordCipher
from storage.index import floor_hour, hour_up
from storage.models import QueueItem
from storage.raw import Raw, Sql

_sequence = itertools.count()
# Every Telegram update is put and then done: plain statements (storage/raw.py).
_PUT = Sql.of(
    "INSERT INTO queue_items (id, queue, created_at, next_attempt_at, attempts, expires_at, "
    "kek_id, wrapped_dek, payload_ct) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_DONE = Sql.of("DELETE FROM queue_items WHERE id = ?")


class SqlQueue:
    """One named queue in the ``queue_items`` table."""

    table = "queue_items"

    def __init__(self, raw: Raw, cipher: RecordCipher, name: str) -> None:
        self._raw = raw
        self._cipher = cipher
        self._name = name

    async def put_many(
        self, payloads: Sequence[dict[str, Any]], now: datetime, expires_at: datetime
    ) -> list[str]:
        """Store items (due at once) in this order, in one statement (a round trip on
        PostgreSQL: a poll or a receive hands over many at once)."""
        ids, rows = [], []
        for payload in payloads:
            # Ids sort in the order items were put, so one recipient's messages keep their order.
            item_id = f"{time.time_ns():019d}{next(_sequence) % 10_000:04d}{new_id()[:9]}"
            dek, wrapped = self._cipher.new_dek(self.table, item_id)
            ids.append(item_id)
            rows.append(
                (
                    item_id,
                    self._name,
                    floor_hour(now),
                    now,
                    0,
                    hour_up(expires_at),
                    wrapped.kek_id,
                    wrapped.wrapped,
                    self._cipher.encrypt(dek, self.table, item_id, "payload", _dumps(payload)),
                )
            )
        await self._raw.run_many(_PUT, rows)
        return ids

    async def due(self, now: datetime | None, limit: int = 100) -> list[QueueEntry]:
        """Items whose next attempt is due (every item when ``now`` is None), oldest first."""
        query = select(QueueItem).where(QueueItem.queue == self._name)
        if now is not None:
            query = query.where(QueueItem.next_attempt_at <= now)
        # SKIP LOCKED: an item another process is handling right now (its turn holds the row)
        # is that process's; the seen-update claim catches any other overlap.
        query = query.order_by(QueueItem.created_at, QueueItem.id).limit(limit)
        rows = (await self._raw.session.execute(query.with_for_update(skip_locked=True))).scalars()
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
        await self._raw.later(_DONE, item_id)

    async def retry_at(self, item_id: str, when: datetime, attempts: int) -> None:
        """Try an item again later."""
        await self._raw.session.execute(
            update(QueueItem)
            .where(QueueItem.id == item_id)
            .values(next_attempt_at=when, attempts=attempts)
        )
