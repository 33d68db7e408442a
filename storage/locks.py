"""PostgreSQL advisory locks: several ``tipline run`` processes on one database (DESIGN.md
section 10). On SQLite there is one process and ``BEGIN IMMEDIATE`` already serialises every
writer, so each lock here is granted at once.

Keys are 64-bit hashes of a name. A chat's key is a hash of its keyed pseudonym, never of its
id: the lock table shows nothing that leads back to a chat.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Callable

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger(__name__)

_XACT_LOCK = text("SELECT pg_advisory_xact_lock(:key)")
_TRY_XACT_LOCK = text("SELECT pg_try_advisory_xact_lock(:key)")
_TRY_LOCK = text("SELECT pg_try_advisory_lock(:key)")
_UNLOCK = text("SELECT pg_advisory_unlock(:key)")


def lock_key(name: str) -> int:
    """A signed 64-bit advisory lock key for a name."""
    digest = hashlib.sha256(b"tipline/lock/" + name.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


#: The key state's lock: shared by every unit of work from its key check to its commit, taken
#: alone by whatever updates key_state, a rotation publishing a new KEK (a trigger, migration
#: 0012), so that none writes under a KEK about to go.
KEY_STATE = lock_key("key-state")


def shared(connection: AsyncConnection) -> bool:
    """Whether other processes may share this database (it is not SQLite)."""
    return connection.dialect.name != "sqlite"


async def wait_xact_lock(connection: AsyncConnection, name: str) -> None:
    """Hold the named lock until the transaction ends, waiting for it if need be."""
    if shared(connection):
        await connection.execute(_XACT_LOCK, {"key": lock_key(name)})


async def try_xact_lock(connection: AsyncConnection, name: str) -> bool:
    """Hold the named lock until the transaction ends; False when another process holds it."""
    if not shared(connection):
        return True
    result = await connection.execute(_TRY_XACT_LOCK, {"key": lock_key(name)})
    return bool(result.scalar_one())


class SessionLock:
    """A named lock held by a dedicated connection for as long as this process wants it (a
    role such as the Signal receiver, or a run of maintenance that spans transactions).

    PostgreSQL releases it when the connection ends, so a process that dies gives it up at once.
    """

    def __init__(self, engine: AsyncEngine, name: str) -> None:
        self._engine = engine
        self._name = name
        self._connection: AsyncConnection | None = None

    @property
    def held(self) -> bool:
        """Whether this process holds the lock (as far as it knows)."""
        return self._connection is not None or self._engine.dialect.name == "sqlite"

    async def acquire(self) -> bool:
        """Take the lock if it is free; whether this process holds it now."""
        if self._engine.dialect.name == "sqlite":
            return True
        if self._connection is not None:
            return await self.check()
        connection = await self._engine.connect()
        try:
            got = (await connection.execute(_TRY_LOCK, {"key": lock_key(self._name)})).scalar()
            # Out of any transaction: the lock belongs to the session, not to a transaction.
            await connection.commit()
        except BaseException:
            await connection.close()
            raise
        if not got:
            await connection.close()
            return False
        self._connection = connection
        return True

    async def check(self) -> bool:
        """Whether the lock's connection is still alive (a dead one has lost the lock)."""
        if self._engine.dialect.name == "sqlite":
            return True
        connection = self._connection
        if connection is None:
            return False
        try:
            await connection.execute(text("SELECT 1"))
            await connection.commit()
            return True
        except (DBAPIError, InterfaceError, OperationalError, OSError) as exc:
            log.warning("lost the %s lock: %s", self._name, type(exc).__name__)
            self._connection = None
            with contextlib.suppress(Exception):
                await connection.close()
            return False

    async def release(self) -> None:
        """Give the lock up (closing the connection would too)."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            await connection.execute(_UNLOCK, {"key": lock_key(self._name)})
            await connection.commit()
        except Exception as exc:  # the connection's end releases it all the same
            log.info("releasing the %s lock: %s", self._name, type(exc).__name__)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(connection.close())


@contextlib.asynccontextmanager
async def exclusive(engine: AsyncEngine, name: str) -> AsyncIterator[bool]:
    """Hold the named session lock for the block if it is free; yields whether it is held."""
    lock = SessionLock(engine, name)
    got = await lock.acquire()
    try:
        yield got
    finally:
        if got:
            await lock.release()


async def notify(engine: AsyncEngine, channel: str) -> None:
    """Tell every process listening on ``channel`` (PostgreSQL; nothing to do on SQLite)."""
    if engine.dialect.name == "sqlite":
        return
    async with engine.begin() as connection:
        await connection.execute(text("SELECT pg_notify(:channel, '')"), {"channel": channel})


async def listen(
    engine: AsyncEngine, channel: str, heard: Callable[[], None], stop: asyncio.Event
) -> None:
    """Call ``heard`` whenever some process notifies ``channel``, until ``stop`` (PostgreSQL;
    returns at once on SQLite, where there is one process). Reconnects after a failure."""
    if engine.dialect.name == "sqlite":
        return

    def on_notify(*_: object) -> None:
        heard()

    while not stop.is_set():
        try:
            async with engine.connect() as connection:
                raw = await connection.get_raw_connection()
                driver = raw.driver_connection
                assert driver is not None
                await driver.add_listener(channel, on_notify)
                try:
                    while not stop.is_set():
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), 5.0)
                        await connection.execute(text("SELECT 1"))  # still connected?
                finally:
                    with contextlib.suppress(Exception):
                        await driver.remove_listener(channel, on_notify)
        except Exception as exc:  # the database is away: listen again shortly
            log.warning("listening for %s failed: %s", channel, type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 2.0)
