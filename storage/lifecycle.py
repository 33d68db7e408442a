"""What locking, unlocking and a locked wipe need from the database, without any key.

Nothing here decrypts: it counts rows by their plaintext columns, reads the published KEK
version, and deletes rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, inspect, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import column, table

from storage.maintenance import ALL_TABLES
from storage.models import KeyState, UTCDateTime

#: The Signal outbox in ``queue_items``; every other channel uses the ``outbox`` table.
SIGNAL_OUTBOX = "signal_out"

_queue_items = table("queue_items", column("queue"), column("next_attempt_at", UTCDateTime()))
_outbox = table("outbox", column("channel"), column("due_at", UTCDateTime()))


async def _tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        names: list[str] = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
    return set(names)


async def queue_depths(engine: AsyncEngine) -> dict[str, int]:
    """Rows waiting in each queue (``queue_items`` by queue, the outbox by channel)."""
    tables = await _tables(engine)
    depths: dict[str, int] = {}
    async with engine.connect() as conn:
        if "queue_items" in tables:
            query: Any = select(_queue_items.c.queue, func.count()).group_by(_queue_items.c.queue)
            for name, count in await conn.execute(query):
                depths[str(name)] = int(count)
        if "outbox" in tables:
            query = select(_outbox.c.channel, func.count()).group_by(_outbox.c.channel)
            for name, count in await conn.execute(query):
                depths[f"outbox {name}"] = int(count)
    return dict(sorted(depths.items()))


async def pending_outbound(engine: AsyncEngine, now: datetime) -> int:
    """Messages due to be sent now (what a lock lets the senders deliver first)."""
    tables = await _tables(engine)
    pending = 0
    async with engine.connect() as conn:
        if "queue_items" in tables:
            query: Any = (
                select(func.count())
                .select_from(_queue_items)
                .where(_queue_items.c.queue == SIGNAL_OUTBOX)
                .where(_queue_items.c.next_attempt_at <= now)
            )
            pending += int((await conn.execute(query)).scalar_one())
        if "outbox" in tables:
            query = select(func.count()).select_from(_outbox).where(_outbox.c.due_at <= now)
            pending += int((await conn.execute(query)).scalar_one())
    return pending


async def next_kek_id(engine: AsyncEngine) -> int:
    """The KEK id a new keyring starts at: the published one, so a wipe never goes backwards."""
    async with engine.connect() as conn:
        published = (
            await conn.execute(select(KeyState.current_kek_id).where(KeyState.id == 1))
        ).scalar_one_or_none()
    return max(1, int(published or 1))


async def delete_every_row(engine: AsyncEngine) -> None:
    """Delete every record (a wipe whose keys are already destroyed), then drop the WAL."""
    async with engine.begin() as conn:
        for model in ALL_TABLES:
            await conn.execute(delete(model))
    if engine.dialect.name == "sqlite":
        async with engine.connect() as conn:
            # Outside any transaction (ours all begin IMMEDIATE), straight on the driver.
            raw = await conn.get_raw_connection()
            driver: Any = raw.driver_connection
            cursor = await driver.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            await cursor.close()
