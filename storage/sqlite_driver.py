"""SQLite for SQLAlchemy's aiosqlite dialect, with statements run on the event loop.

aiosqlite runs SQLite in a worker thread and crosses to it for every cursor call. A crossing
(queue, thread wake-up, GIL hand-back, loop wake-up) costs far more CPU than a small SQLite
statement: measured, it was the largest part of a reporter's answer after HTTP. Here a statement
runs where it is called, on the loop, and only what can wait crosses to the thread: a COMMIT
(it syncs the WAL to disk) and a BEGIN IMMEDIATE that finds another process holding the write
lock (it waits there, under the busy timeout, instead of blocking the loop). Inside a
transaction begun IMMEDIATE nothing waits on a lock: statements never block the loop. Everything
else is aiosqlite as it is; the storage contract tests run on this driver.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from functools import partial
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.engine import make_url

#: Rows fetched together with the statement; a larger result is fetched in chunks.
CHUNK = 512
#: How long BEGIN IMMEDIATE waits for another process's write lock (also the connection's).
BUSY_TIMEOUT_MS = 10_000

_Description = tuple[tuple[Any, ...], ...] | None
_Outcome = tuple[sqlite3.Cursor | None, _Description, int, int | None, list[Any]]


class Cursor:
    """The slice of aiosqlite's cursor that SQLAlchemy uses, with results fetched eagerly."""

    arraysize = 1

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._open: sqlite3.Cursor | None = None
        self._rows: list[Any] = []
        self.description: _Description = None
        self.rowcount = -1
        self.lastrowid: int | None = None

    async def __aenter__(self) -> Cursor:
        """Nothing to open: the sqlite3 cursor is made in the worker thread with the statement."""
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Close whatever is still open."""
        await self.close()

    def _run(self, sql: str, parameters: Any, many: bool) -> _Outcome:
        cursor = self._connection.raw.cursor()
        try:
            if many:
                cursor.executemany(sql, parameters)
            else:
                cursor.execute(sql, parameters)
            rows = cursor.fetchmany(CHUNK) if cursor.description else []
        except BaseException:
            cursor.close()
            raise
        description, rowcount, lastrowid = cursor.description, cursor.rowcount, cursor.lastrowid
        more = len(rows) == CHUNK
        if not more:
            cursor.close()
        return (cursor if more else None), description, rowcount, lastrowid, rows

    async def _execute(self, sql: str, parameters: Any, many: bool) -> Cursor:
        await self.close()
        outcome: _Outcome
        if not sql.startswith("BEGIN") and not self._connection.offload:
            outcome = self._run(sql, parameters, many)
        elif not sql.startswith("BEGIN"):
            outcome = await self._connection.call(self._run, sql, parameters, many)
        elif self._connection.begin_now(sql):
            outcome = None, None, -1, None, []
        else:
            outcome = await self._connection.call(self._run, sql, parameters, many)
        self._open, self.description, self.rowcount, self.lastrowid, self._rows = outcome
        return self

    async def execute(self, sql: str, parameters: Any = None) -> Cursor:
        """Execute one statement and fetch its first rows, in one crossing."""
        return await self._execute(sql, () if parameters is None else parameters, False)

    async def executemany(self, sql: str, parameters: Sequence[Any]) -> Cursor:
        """Execute a statement for each parameter set, in one crossing."""
        return await self._execute(sql, parameters, True)

    @staticmethod
    def _next_chunk(cursor: sqlite3.Cursor) -> tuple[list[Any], int]:
        rows = cursor.fetchmany(CHUNK)
        rowcount = cursor.rowcount  # DML ... RETURNING counts only once it has run to the end
        if len(rows) < CHUNK:
            cursor.close()
        return rows, rowcount

    async def _refill(self) -> None:
        if not self._rows and self._open is not None:
            if self._connection.offload:  # a long scan's later rows: in the thread as well
                self._rows, self.rowcount = await self._connection.call(
                    self._next_chunk, self._open
                )
            else:
                self._rows, self.rowcount = self._next_chunk(self._open)
            if len(self._rows) < CHUNK:
                self._open = None

    async def fetchone(self) -> Any:
        """The next row, or None."""
        await self._refill()
        return self._rows.pop(0) if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        """``size`` more rows (``arraysize`` when not given), fewer only at the end."""
        count = self.arraysize if size is None else size
        rows: list[Any] = []
        while len(rows) < count:
            await self._refill()
            if not self._rows:
                break
            taken = count - len(rows)
            rows += self._rows[:taken]
            self._rows = self._rows[taken:]
        return rows

    async def fetchall(self) -> list[Any]:
        """Every remaining row."""
        rows: list[Any] = []
        while True:
            await self._refill()
            if not self._rows:
                return rows
            rows += self._rows
            self._rows = []

    async def __aiter__(self) -> AsyncIterator[Any]:
        while (row := await self.fetchone()) is not None:
            yield row

    async def close(self) -> None:
        """Drop buffered rows and close a cursor left open by a large result."""
        self._rows = []
        if self._open is not None:
            cursor, self._open = self._open, None
            cursor.close()


class Connection(aiosqlite.Connection):
    """An aiosqlite connection whose cursors run statements on the loop."""

    #: Run every statement in the worker thread instead: set by maintenance for its own
    #: transactions, whose statements (a purge's DELETE, a ratchet's scan) are too long for the
    #: loop. The pool holds one connection, so no other transaction sees it set.
    offload = False

    @property
    def raw(self) -> sqlite3.Connection:
        """The sqlite3 connection (opened for use from the loop and the worker thread)."""
        return self._conn

    def begin_now(self, sql: str) -> bool:
        """Begin without waiting; False (nothing begun) when another process holds the lock."""
        raw = self._conn
        raw.execute("PRAGMA busy_timeout=0")
        try:
            raw.execute(sql)
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                return False
            raise
        finally:
            raw.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        return True

    async def begin_immediate(self) -> None:
        """BEGIN IMMEDIATE on the loop, or in the worker thread (waiting under the busy timeout)
        when another process holds the write lock."""
        if not self.begin_now("BEGIN IMMEDIATE"):
            await self.call(self._conn.execute, "BEGIN IMMEDIATE")

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open on the connection."""
        return self._conn.in_transaction

    async def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run ``function(*args)`` in the connection's worker thread."""
        return await self._execute(function, *args)  # type: ignore[no-untyped-call]

    def cursor(self) -> Cursor:  # type: ignore[override]
        """A cursor that opens nothing until it executes."""
        return Cursor(self)

    async def commit(self) -> None:
        """Commit in the worker thread (the WAL is synced), unless there is nothing to commit."""
        if self._connection is not None and self._connection.in_transaction:
            await super().commit()

    async def rollback(self) -> None:
        """Roll back on the loop (nothing to sync), unless there is nothing to roll back."""
        if self._connection is not None and self._connection.in_transaction:
            self._connection.rollback()


def async_creator(url: str) -> Callable[[], Connection]:
    """A connection factory for ``create_async_engine(url, async_creator=...)``."""
    args, kwargs = SQLiteDialect_aiosqlite().create_connect_args(make_url(url))
    # Used from the loop and, for commits, from the worker thread; never both at once.
    kwargs["check_same_thread"] = False
    open_database: Callable[[], sqlite3.Connection] = partial(sqlite3.connect, *args, **kwargs)

    def connect() -> Connection:
        connection = Connection(open_database, 64)
        # As SQLAlchemy does for aiosqlite: a forgotten connection must not keep Python alive.
        connection._thread.daemon = True
        return connection

    return connect
