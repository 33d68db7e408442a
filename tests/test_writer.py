"""SQLite's group commit (storage/writer.py): units of work that come together share one COMMIT,
and each is promised what a transaction of its own would give it."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from storage import migrate, sqlite_driver, writer
from storage.db import make_engine, make_session_factory
from storage.keyring import Keyring
from storage.repositories import SqlUnitOfWork
from storage.writer import GROUP_MOST, writer_of
from tests.conftest import START

LATER = START.replace(minute=0) + timedelta(hours=1)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'tipline.db'}")
    await migrate.upgrade(engine)
    try:
        yield engine
    finally:
        await engine.dispose()


def uow(db: AsyncEngine, keyring: Keyring) -> SqlUnitOfWork:
    return SqlUnitOfWork(make_session_factory(db), keyring)


def count_commits(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """COMMITs that reach SQLite (the writer commits on the driver, SQLAlchemy sees none)."""
    commits: list[object] = []
    original = sqlite_driver.Connection.commit

    async def commit(connection: sqlite_driver.Connection) -> None:
        if connection.in_transaction:
            commits.append(connection)
        await original(connection)

    monkeypatch.setattr(sqlite_driver.Connection, "commit", commit)
    return commits


class HeldCommit:
    """Holds the driver's COMMIT (the WAL sync) until released, so a test can look in between."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, fail: bool = False) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        original = sqlite_driver.Connection.commit

        async def commit(connection: sqlite_driver.Connection) -> None:
            self.started.set()
            await self.release.wait()
            if fail:
                raise OSError("disk I/O error")
            await original(connection)

        monkeypatch.setattr(sqlite_driver.Connection, "commit", commit)


async def save(db: AsyncEngine, keyring: Keyring, chat: str, *, fail: bool = False) -> None:
    async with uow(db, keyring) as u:
        await u.drafts.save("telegram", chat, {"chat": chat}, LATER)
        for _ in range(5):  # the units of work started with this one come to wait for it
            await asyncio.sleep(0)
        if fail:
            raise ValueError("this use case fails")
        await u.commit()


async def stored(db: AsyncEngine, keyring: Keyring, chats: list[str]) -> set[str]:
    found = set()
    async with uow(db, keyring) as u:
        for chat in chats:
            if await u.drafts.load("telegram", chat, START) is not None:
                found.add(chat)
    return found


async def test_units_of_work_waiting_together_share_one_commit(
    db: AsyncEngine, keyring: Keyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    commits = count_commits(monkeypatch)
    chats = [str(n) for n in range(8)]
    await asyncio.gather(*(save(db, keyring, chat) for chat in chats))
    assert len(commits) < len(chats), "the ones that waited joined one transaction"
    assert await stored(db, keyring, chats) == set(chats)


async def test_a_group_holds_at_most_group_most(
    db: AsyncEngine, keyring: Keyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    commits = count_commits(monkeypatch)
    chats = [str(n) for n in range(3 * GROUP_MOST)]
    await asyncio.gather(*(save(db, keyring, chat) for chat in chats))
    assert len(commits) >= 3
    assert await stored(db, keyring, chats) == set(chats)


async def test_a_commit_returns_only_once_the_group_is_on_disk(
    db: AsyncEngine, keyring: Keyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = HeldCommit(monkeypatch)
    saves = [asyncio.create_task(save(db, keyring, chat)) for chat in ("a", "b", "c")]
    await held.started.wait()
    for _ in range(20):  # every task has all the turns it could want
        await asyncio.sleep(0)
    assert not any(task.done() for task in saves), "acknowledged before the COMMIT synced"
    held.release.set()
    await asyncio.gather(*saves)
    assert await stored(db, keyring, ["a", "b", "c"]) == {"a", "b", "c"}


async def test_a_failing_member_undoes_only_its_own_work(
    db: AsyncEngine, keyring: Keyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    commits = count_commits(monkeypatch)
    results = await asyncio.gather(
        save(db, keyring, "a"),
        save(db, keyring, "b", fail=True),
        save(db, keyring, "c"),
        return_exceptions=True,
    )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], ValueError)
    assert len(commits) == 1, "all three were one group"
    assert await stored(db, keyring, ["a", "b", "c"]) == {"a", "c"}


async def test_a_reader_of_work_not_yet_on_disk_waits_for_it(
    db: AsyncEngine, keyring: Keyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = HeldCommit(monkeypatch)
    seen: list[Any] = []

    async def read() -> None:
        async with uow(db, keyring) as u:
            seen.append(await u.drafts.load("telegram", "a", START))

    writing = asyncio.create_task(save(db, keyring, "a"))
    reading = asyncio.create_task(read())
    await held.started.wait()
    for _ in range(20):
        await asyncio.sleep(0)
    assert seen == [{"chat": "a"}], "the reader saw the writer's work in the shared transaction"
    assert not reading.done(), "and may not act on it before it is on disk"
    held.release.set()
    await asyncio.gather(writing, reading)


async def test_a_failed_group_commit_fails_every_member_that_kept_work(
    db: AsyncEngine, keyring: Keyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = HeldCommit(monkeypatch, fail=True)
    saves = [asyncio.create_task(save(db, keyring, chat)) for chat in ("a", "b", "c")]
    await held.started.wait()
    held.release.set()
    results = await asyncio.gather(*saves, return_exceptions=True)
    assert all(isinstance(r, OSError) for r in results), results
    monkeypatch.undo()
    assert await stored(db, keyring, ["a", "b", "c"]) == set()
    await save(db, keyring, "d")  # the writer goes on after a failed group
    assert await stored(db, keyring, ["d"]) == {"d"}


async def test_a_unit_of_work_is_over_once_committed(db: AsyncEngine, keyring: Keyring) -> None:
    async with uow(db, keyring) as u:
        await u.stats.increment(START.date(), "baku", ["reports"])
        await u.commit()
        with pytest.raises(RuntimeError, match="committed"):
            await u.drafts.load("telegram", "a", START)
    async with uow(db, keyring) as u:  # the next one is unaffected
        await u.drafts.save("telegram", "a", {"chat": "a"}, LATER)
        await u.commit()
    assert await stored(db, keyring, ["a"]) == {"a"}


async def test_a_group_handed_to_a_cancelled_unit_of_work_still_ends(
    db: AsyncEngine, keyring: Keyring
) -> None:
    writer = writer_of(db)
    first = await writer.join()
    first.driver.raw.execute("CREATE TEMP TABLE IF NOT EXISTS probe (n)")
    waiting = asyncio.create_task(writer.join())
    await asyncio.sleep(0)  # it waits for the database
    committing = asyncio.create_task(first.commit())  # hands the open group to the waiting one
    await asyncio.sleep(0)
    waiting.cancel()  # ... which is cancelled before it takes it
    await asyncio.wait_for(committing, 5)  # a hang guard: without it nobody ends the group
    assert waiting.cancelled()
    await save(db, keyring, "a")  # and the database is free for the next
    assert await stored(db, keyring, ["a"]) == {"a"}


async def test_a_reader_that_fails_after_reading_unsynced_work_waits_for_it(
    db: AsyncEngine, keyring: Keyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = HeldCommit(monkeypatch)

    async def read_then_fail() -> None:
        async with uow(db, keyring) as u:
            found = await u.drafts.load("telegram", "a", START)
            raise LookupError(f"found {found}")  # built from what it read

    writing = asyncio.create_task(save(db, keyring, "a"))
    reading = asyncio.create_task(read_then_fail())
    await held.started.wait()
    for _ in range(20):
        await asyncio.sleep(0)
    assert not reading.done(), "its error may not leave before what it read is on disk"
    held.release.set()
    await writing
    with pytest.raises(LookupError):
        await reading


class FailingRelease:
    """The group's sqlite3 connection, except that RELEASE fails (as when SQLite has ended the
    transaction on an error)."""

    def __init__(self, raw: sqlite3.Connection) -> None:
        self._raw = raw

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.startswith("RELEASE"):
            raise sqlite3.OperationalError("no such savepoint: uow")
        return self._raw.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


async def test_a_failed_release_fails_that_commit_with_the_error(
    db: AsyncEngine, keyring: Keyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = sqlite_driver.Connection.raw
    monkeypatch.setattr(
        sqlite_driver.Connection,
        "raw",
        property(lambda self: FailingRelease(original.fget(self))),  # type: ignore[attr-defined]
    )
    with pytest.raises(sqlite3.OperationalError, match="savepoint"):
        await save(db, keyring, "a")  # an error it can handle, not a stray cancellation
    monkeypatch.undo()
    assert await stored(db, keyring, ["a"]) == set()
    await save(db, keyring, "b")
    assert await stored(db, keyring, ["b"]) == {"b"}


async def test_a_unit_of_work_begun_inside_another_is_an_error_not_a_hang(
    db: AsyncEngine, keyring: Keyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer, "SLOT_TIMEOUT", 0.05)
    async with uow(db, keyring) as outer:
        await outer.drafts.save("telegram", "a", {"chat": "a"}, LATER)
        with pytest.raises(TimeoutError):
            async with uow(db, keyring):
                pass
        await outer.commit()
    assert await stored(db, keyring, ["a"]) == {"a"}
