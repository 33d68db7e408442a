"""SQLite's one writer per process: units of work that come together share one transaction.

SQLite has one write transaction at a time, and a commit syncs the WAL to disk. A reporter's
answer is a short unit of work, so per answer the sync and the transaction's begin and end cost
as much CPU as its statements (issue 14). Here the units of work waiting for the database when
one ends join the transaction it ran in, each inside its own SAVEPOINT, and one COMMIT makes all
of them durable: a group commit, as PostgreSQL's ``commit_delay`` does, but with no delay (a
group is whoever was already waiting, at most :data:`GROUP_MOST`).

What each unit of work is promised does not change:
- its ``commit`` returns only once the group's COMMIT has synced: nothing is acknowledged, sent
  or confirmed to a messenger before it is on disk;
- one that fails is rolled back to its savepoint and undoes nothing of the others;
- one that read what an earlier member wrote waits for that to be durable before it returns, so
  nothing not yet on disk is ever acted on;
- if the group's transaction fails as a whole, every member that kept anything is told, as if
  its own commit had failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import weakref
from collections.abc import Coroutine
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

#: The most units of work one COMMIT makes durable: it bounds how long the first of them waits
#: for the others (a few milliseconds of answers).
GROUP_MOST = 16
#: Seconds a unit of work waits for the database before it gives up.
SLOT_TIMEOUT = 60.0


class Group:
    """One write transaction, shared by the units of work that joined it one after another."""

    def __init__(self, connection: AsyncConnection, driver: Any) -> None:
        self.connection = connection
        self.driver = driver
        self.members = 0
        #: Members that released their savepoint: what the COMMIT must make durable.
        self.kept = 0
        self.failed: BaseException | None = None
        self.durable: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Marked as looked at: a failure nobody waits for (every member cancelled) is no news.
        self.durable.add_done_callback(lambda done: done.cancelled() or done.exception())


class Member:
    """One unit of work's part of a group: its savepoint, its end, and its wait for the disk."""

    def __init__(self, writer: SqliteWriter, group: Group) -> None:
        self._writer = writer
        self.group = group
        self._after = group.kept  # work of earlier members this one may have read
        self._open = True

    @property
    def connection(self) -> AsyncConnection:
        """The group's connection (its transaction began IMMEDIATE)."""
        return self.group.connection

    @property
    def driver(self) -> Any:
        """The group's driver connection (storage/sqlite_driver.py)."""
        return self.group.driver

    async def commit(self) -> None:
        """Keep this member's statements; return once the group's COMMIT is on disk."""
        self._end(keep=True)
        await asyncio.shield(self.group.durable)

    async def close(self, exc: BaseException | None) -> None:
        """Undo whatever was not committed. A member that read others' work waits for it to be
        durable before it returns, whether it returns or raises (what it raises may come from
        what it read); only a cancelled one does not wait."""
        if not self._open:
            return
        self._end(keep=False)
        if not self._after or isinstance(exc, asyncio.CancelledError):
            return
        if exc is None:
            await asyncio.shield(self.group.durable)
            return
        with contextlib.suppress(Exception):  # the exception on its way out is the news
            await asyncio.shield(self.group.durable)

    def _end(self, *, keep: bool) -> None:
        if not self._open:
            raise RuntimeError("this unit of work has ended")
        self._open = False
        group = self.group
        try:
            if group.failed is None:
                raw: sqlite3.Connection = group.driver.raw
                if keep:
                    raw.execute("RELEASE uow")
                    group.kept += 1
                else:
                    raw.execute("ROLLBACK TO uow")
                    raw.execute("RELEASE uow")
        except Exception as exc:  # SQLite ended the whole transaction on an error, or worse
            group.failed = exc
        finally:
            self._writer.passed_on(group)


class SqliteWriter:
    """The process's SQLite write transactions, handed from one unit of work to the next."""

    def __init__(self, engine: AsyncEngine, most: int = GROUP_MOST) -> None:
        self._engine = engine
        self._most = most
        self._slot = asyncio.Lock()
        self._waiting = 0
        self._group: Group | None = None
        self._ending: set[asyncio.Task[None]] = set()

    async def join(self) -> Member:
        """Wait for the database; begin a group or join the open one under a new savepoint."""
        self._waiting += 1
        try:
            # As the pool's timeout did: a unit of work begun inside another one (which waits
            # for it) is an error, not a process that hangs.
            async with asyncio.timeout(SLOT_TIMEOUT):
                await self._slot.acquire()
        except BaseException:
            self._waiting -= 1
            group = self._group
            if group is not None and not self._slot.locked() and not self._waiting:
                # The group was handed to this task, which is cancelled: end it in its stead.
                self._spawn(self._end_orphan(group))
            raise
        self._waiting -= 1
        group = self._group
        if group is None:
            try:
                group = self._group = await self._begin()
            except BaseException:
                self._slot.release()
                raise
        try:
            group.driver.raw.execute("SAVEPOINT uow")
        except sqlite3.Error as exc:
            group.failed = exc
            self.passed_on(group)  # ends the group, which lets the next one in
            raise
        group.members += 1
        return Member(self, group)

    async def _begin(self) -> Group:
        connection = await self._engine.connect()
        driver: Any = connection.sync_connection.connection.driver_connection  # type: ignore[union-attr]
        try:
            # On the driver, not through SQLAlchemy's begin and commit (a third of a short
            # transaction's CPU); SQLAlchemy joins when a member uses the ORM (join_orm).
            await driver.begin_immediate()
        except BaseException:
            # A BEGIN waiting in the driver's thread (another process held the lock) still runs
            # when this is cancelled: let it finish and undo it, or the pooled connection would
            # keep the write lock.
            with contextlib.suppress(BaseException):
                await asyncio.shield(driver.call(_nothing))
                await driver.rollback()
            await connection.close()
            raise
        return Group(connection, driver)

    def passed_on(self, group: Group) -> None:
        """A member has ended: let the next one in, or end the group if none is waiting."""
        if group.failed is None and self._waiting and group.members < self._most:
            self._slot.release()
            return
        self._group = None
        self._spawn(self._end(group))

    async def settle(self) -> None:
        """Wait for the groups that are ending."""
        while self._ending:
            await asyncio.gather(*self._ending, return_exceptions=True)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._ending.add(task)  # held, so the task is not collected before it has run
        task.add_done_callback(self._ending.discard)

    async def _end_orphan(self, group: Group) -> None:
        await self._slot.acquire()
        if self._group is group:
            self._group = None
            await self._end(group)  # releases the slot
        else:
            self._slot.release()

    async def _end(self, group: Group) -> None:
        connection = group.connection
        try:
            if group.failed is not None:
                raise group.failed
            if not group.kept:  # only reads, or only undone work: nothing to keep
                await _rollback(group)
            elif connection.in_transaction():  # a member used the ORM: SQLAlchemy commits
                await connection.commit()
            else:
                await group.driver.commit()  # syncs the WAL in the driver's thread
            group.durable.set_result(None)
        except BaseException as exc:
            # Even when nobody kept anything: a member whose RELEASE failed waits on it.
            group.durable.set_exception(exc)
            # Closing the connection below rolls back as well.
            with contextlib.suppress(Exception):
                await _rollback(group)
        finally:
            try:
                await connection.close()
            finally:
                self._slot.release()


def _nothing() -> None:
    return None


async def settle(engine: AsyncEngine) -> None:
    """Wait until every group of this engine has ended (before the engine is disposed)."""
    writers = engine.sync_engine.__dict__.get("tipline_writers", {})
    writer = writers.get(asyncio.get_running_loop())
    if writer is not None:
        await writer.settle()


async def _rollback(group: Group) -> None:
    connection = group.connection
    if connection.in_transaction():
        await connection.rollback()
    else:
        await group.driver.rollback()


def join_orm(connection: AsyncConnection) -> None:
    """Let SQLAlchemy join the transaction a group began on the driver, before an ORM session
    uses the connection (it issues nothing: storage/db.py), so that the session's savepoint
    nests in it and the session never commits or rolls back the group's transaction."""
    if not connection.in_transaction():
        connection.sync_connection.begin()  # type: ignore[union-attr]


def writer_of(engine: AsyncEngine) -> SqliteWriter:
    """The writer of an engine, in the running event loop (its lock belongs to one loop)."""
    loop = asyncio.get_running_loop()
    # Kept on the engine, so that it goes with it; per loop, as a test may run several.
    writers = engine.sync_engine.__dict__.setdefault("tipline_writers", weakref.WeakKeyDictionary())
    writer: SqliteWriter | None = writers.get(loop)
    if writer is None:
        writer = writers[loop] = SqliteWriter(engine)
    return writer
