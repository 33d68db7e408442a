"""The SQLite driver: statements on the loop, a COMMIT (and a BEGIN that must wait for another
process) in aiosqlite's thread, same results."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from storage import sqlite_driver
from storage.db import make_engine

meta = MetaData()
rows = Table("rows", meta, Column("id", Integer, primary_key=True), Column("name", String(20)))


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'driver.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(meta.create_all)
    yield engine
    await engine.dispose()


@pytest.fixture
def crossings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the functions run in the worker thread, in order."""
    seen: list[str] = []
    original = sqlite_driver.Connection._execute

    async def counted(self: sqlite_driver.Connection, fn: object, *args: object) -> object:
        seen.append(getattr(fn, "__name__", type(fn).__name__))
        return await original(self, fn, *args)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(sqlite_driver.Connection, "_execute", counted)
    return seen


async def test_the_engine_uses_this_driver(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        assert isinstance(raw.driver_connection, sqlite_driver.Connection)


async def test_only_the_commit_crosses(engine: AsyncEngine, crossings: list[str]) -> None:
    async with engine.connect() as conn:
        crossings.clear()
        await conn.execute(insert(rows), {"id": 1, "name": "one"})
        assert (await conn.execute(select(rows.c.name))).scalar_one() == "one"
        await conn.commit()
        assert crossings == ["commit"]  # BEGIN, INSERT and SELECT ran on the loop
        crossings.clear()
        await conn.execute(insert(rows), {"id": 2, "name": "two"})
        await conn.rollback()
    assert crossings == []  # a rollback has nothing to sync: no crossing either


async def test_a_locked_database_is_waited_for_off_the_loop(
    engine: AsyncEngine, tmp_path: Path, crossings: list[str]
) -> None:
    other = sqlite3.connect(tmp_path / "driver.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    crossings.clear()

    async def write() -> None:
        async with engine.begin() as conn:
            await conn.execute(insert(rows), {"id": 3, "name": "three"})

    writer = asyncio.create_task(write())
    ticks = 0
    while ticks < 20:  # the loop keeps running while the writer waits for the lock
        await asyncio.sleep(0.01)
        ticks += 1
    assert not writer.done()
    assert crossings == ["_run"]  # the BEGIN, waiting in the worker thread
    other.execute("COMMIT")
    await asyncio.wait_for(writer, 10)
    other.close()
    async with engine.connect() as conn:
        assert (await conn.execute(select(rows.c.name))).scalar_one() == "three"


async def test_large_results_arrive_whole_in_chunks(engine: AsyncEngine) -> None:
    count = sqlite_driver.CHUNK * 3 + 7
    async with engine.begin() as conn:
        result = await conn.execute(
            insert(rows), [{"id": i, "name": f"n{i}"} for i in range(count)]
        )
        assert result.rowcount == count
    async with engine.connect() as conn:
        fetched = (await conn.execute(select(rows.c.id).order_by(rows.c.id))).scalars().all()
        assert fetched == list(range(count))
        streamed = [r async for r in await conn.stream(select(rows.c.id).order_by(rows.c.id))]
        assert [r.id for r in streamed] == list(range(count))
        exact = (await conn.execute(select(rows.c.id).limit(sqlite_driver.CHUNK))).all()
        assert len(exact) == sqlite_driver.CHUNK
        stream = await conn.stream(select(rows.c.id).order_by(rows.c.id))
        batch = await stream.fetchmany(1000)  # more than one chunk, asked for at once
        assert [r.id for r in batch] == list(range(1000))
        await stream.close()
    async with engine.begin() as conn:
        changed = await conn.execute(rows.update().values(name="renamed").returning(rows.c.id))
        assert len(changed.all()) == count
        assert changed.rowcount == count  # counted once the statement ran to its end


async def test_an_offloaded_scan_fetches_every_chunk_in_the_thread(
    engine: AsyncEngine, crossings: list[str]
) -> None:
    """Maintenance marks its transactions ``offload``: a purge streamed 100k rows a partition at
    a time, and each chunk after the first was fetched on the loop (a 174 ms stall)."""
    count = sqlite_driver.CHUNK * 3 + 7
    async with engine.begin() as conn:
        await conn.execute(insert(rows), [{"id": i, "name": f"n{i}"} for i in range(count)])
    async with engine.connect() as conn:
        driver = (await conn.get_raw_connection()).driver_connection
        driver.offload = True
        try:
            crossings.clear()
            stream = await conn.stream(select(rows.c.id).order_by(rows.c.id))
            got = [r.id async for part in stream.partitions(100) for r in part]
        finally:
            driver.offload = False
    assert got == list(range(count))
    assert crossings.count("_next_chunk") == 3, crossings  # the statement's first chunk: "_run"


async def test_errors_surface_and_leave_the_connection_usable(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(insert(rows), {"id": 1, "name": "one"})
    with pytest.raises(IntegrityError):
        async with engine.begin() as conn:
            await conn.execute(insert(rows), {"id": 1, "name": "again"})
    with pytest.raises(Exception, match="syntax error"):
        async with engine.connect() as conn:
            await conn.execute(text("SELEC nothing"))
    async with engine.begin() as conn:
        await conn.execute(insert(rows), {"id": 2, "name": "two"})
    async with engine.connect() as conn:
        assert (await conn.execute(select(rows.c.name).order_by(rows.c.id))).scalars().all() == [
            "one",
            "two",
        ]


async def test_rollback_discards_and_lastrowid_is_reported(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        result = await conn.execute(insert(rows).values(name="auto"))
        assert result.lastrowid == 1
        await conn.rollback()
    async with engine.connect() as conn:
        assert (await conn.execute(select(rows.c.id))).first() is None
