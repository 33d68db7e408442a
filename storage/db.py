"""Engine and session factory for SQLite (the default) and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from storage import raw, sqlite_driver, writer

# secure_delete zeroes freed pages so deleted ciphertext does not linger in the file;
# temp_store=MEMORY keeps sorts and temporary tables out of temp files.
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA secure_delete=ON",
    "PRAGMA temp_store=MEMORY",
    "PRAGMA synchronous=FULL",
    f"PRAGMA busy_timeout={sqlite_driver.BUSY_TIMEOUT_MS}",
)


def is_sqlite(url: str) -> bool:
    """Whether a database URL points at SQLite."""
    return make_url(url).get_backend_name() == "sqlite"


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (see _sqlite_begin).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _sqlite_begin(connection: Any) -> None:
    # Take the write lock when a transaction starts: a transaction that read first and wrote
    # later would fail at once (SQLITE_BUSY on a stale snapshot) when another connection had
    # written in between; BEGIN IMMEDIATE waits its turn under busy_timeout instead (in the
    # driver's thread: storage/sqlite_driver.py).
    if connection.connection.driver_connection.in_transaction:
        return  # the writer began it on the driver (storage/writer.py): SQLAlchemy joins it
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine with the pragmas and pool settings tipline relies on."""
    if is_sqlite(url):
        # One connection per process: SQLite has one writer at a time anyway, and waiting in
        # the pool's queue wakes at once, where SQLite's busy handler sleeps in steps.
        kwargs.setdefault("pool_size", 1)
        kwargs.setdefault("max_overflow", 0)
        kwargs.setdefault("pool_timeout", 60)
        kwargs.setdefault("async_creator", sqlite_driver.async_creator(url))
        engine = create_async_engine(url, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    # No pre-ping (a round trip before every transaction): SqlUnitOfWork retries its first
    # statement once when the server dropped the pooled connection.
    # Enough kept connections for the transactions a process runs at once: the chats handled at
    # once (bot/channels/telegram.py: MAX_CONCURRENT_UPDATES) and the outbox's. Past the pool,
    # every extra transaction opened a connection and closed it again (a TLS attempt, type
    # introspection, a fresh prepared-statement cache): with 12, 60 such connects in 480 answers
    # cost a sixth of an answer's CPU. Three replicas use at most 60 connections, under
    # PostgreSQL's default of 100.
    kwargs.setdefault("pool_size", 16)
    kwargs.setdefault("max_overflow", 4)
    engine = create_async_engine(url, **kwargs)
    raw.watch(engine)
    return engine


def make_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


async def dispose(engine: AsyncEngine) -> None:
    """Close the engine's connections, once the SQLite groups still committing have ended."""
    await writer.settle(engine)
    await engine.dispose()
