"""The few statements every reporter answer runs, on the transaction's own driver connection.

A statement through SQLAlchemy (session, compiled cache, execution context, result, a greenlet
hop each way) costs several times what SQLite or PostgreSQL take to run it: measured, it was the
largest part of an answer's CPU after HTTP (issue 14). These statements run as plain sqlite3
calls on the event loop (the unit of work's BEGIN IMMEDIATE holds the write lock, so none waits)
or as asyncpg calls with asyncpg's own prepared-statement cache, inside the transaction the unit
of work began through SQLAlchemy, which still commits or rolls it back. Everything not on the
answer path keeps the ORM.

On PostgreSQL each statement is also a round trip, whose send cost the bot more CPU than the
statement: writes whose row count nobody reads are held back (:meth:`Raw.later`) and travel as
WITH clauses of the next statement, or together at the commit.
"""

from __future__ import annotations

import itertools
import re
import sqlite3
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from storage.sqlite_driver import Connection as SqliteConnection

#: In a statement's text: a list of as many ``?`` as :meth:`Sql.listing` is given.
_LIST = "(?...)"


#: The table a write changes, from its first words.
_WRITES = re.compile(r"\s*(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+(\w+)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Sql:
    """One statement in each dialect's placeholder style (written with ``?``)."""

    sqlite: str
    postgresql: str
    #: The table the statement writes, if it is an INSERT, UPDATE or DELETE.
    table: str | None = None

    @classmethod
    def of(cls, sql: str) -> Sql:
        """The statement as written for SQLite, and numbered ``$n`` for asyncpg."""
        numbers = itertools.count(1)
        writes = _WRITES.match(sql)
        return cls(
            sql,
            re.sub(r"\?", lambda _: f"${next(numbers)}", sql),
            writes.group(1).lower() if writes else None,
        )

    def listing(self, count: int) -> Sql:
        """The statement with its ``(?...)`` holding ``count`` values."""
        return _listing(self.sqlite, count)


@cache
def _listing(sqlite: str, count: int) -> Sql:
    return Sql.of(sqlite.replace(_LIST, "(" + ", ".join("?" * count) + ")"))


@cache
def _numbered(postgresql: str) -> int:
    return max((int(n) for n in re.findall(r"\$(\d+)", postgresql)), default=0)


@cache
def _shifted(postgresql: str, by: int) -> str:
    return re.sub(r"\$(\d+)", lambda m: f"${int(m.group(1)) + by}", postgresql)


@cache
def _together(statements: tuple[str, ...]) -> str:
    """The last statement, with every one before it run as a WITH clause of it, numbered on."""
    *writes, last = statements
    if not writes:
        return last
    clauses, shift = [], 0
    for number, write in enumerate(writes):
        clauses.append(f"held{number} AS ({_shifted(write, shift)})")
        shift += _numbered(write)
    last = _shifted(last, shift)
    if _with(last):  # its own WITH clauses follow the held ones
        return "WITH " + ", ".join(clauses) + ", " + last.lstrip()[4:].lstrip()
    return "WITH " + ", ".join(clauses) + " " + last


def _with(postgresql: str) -> bool:
    return postgresql.lstrip()[:5].upper() in ("WITH ", "WITH\n")


@cache
def _names(postgresql: str, table: str) -> bool:
    return re.search(rf"\b{re.escape(table)}\b", postgresql, re.IGNORECASE) is not None


def _sqlite_value(value: Any) -> Any:
    # As SQLAlchemy's UTCDateTime stores them on SQLite: naive UTC text, always with microseconds
    # (text compares in time order only when every value has the same form).
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    if isinstance(value, date):
        return value.isoformat()  # as SQLAlchemy's Date: YYYY-MM-DD
    return value


def as_time(value: Any) -> datetime:
    """A time column as read back: aware UTC whichever backend stored it."""
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Raw:
    """Plain statements inside one unit of work's transaction.

    It also holds the transaction's ORM session, opened only when a repository first asks for
    it: an answer's turn needs none, and making one cost a tenth of a unit of work.
    """

    def __init__(
        self,
        session: Callable[[], AsyncSession],
        connection: AsyncConnection | None = None,
        driver: Any = None,
        *,
        hold: bool = False,
    ) -> None:
        self._open_session = session
        self._session: AsyncSession | None = None
        self._connection = connection
        self._driver = driver
        self._sqlite: sqlite3.Connection | None = None
        self._pg: Any = None
        self._offload: SqliteConnection | None = None
        self._ended = False
        # PostgreSQL: writes held back (``later``) until a statement or the commit takes them.
        self._hold = hold
        self._held: list[tuple[Sql, tuple[Any, ...]]] = []

    @classmethod
    def over(cls, session: AsyncSession) -> Raw:
        """Plain statements in the transaction of a session already open."""
        raw = cls(lambda: session)
        raw._session = session
        return raw

    @property
    def session(self) -> AsyncSession:
        """The transaction's ORM session (opened on first use)."""
        if self._ended:
            raise RuntimeError("this unit of work has committed: begin another")
        if self._session is None:
            self._session = self._open_session()
        return self._session

    def end(self) -> None:
        """Refuse every later statement, through this or through the session (committed)."""
        self._ended = True
        self._held.clear()
        if self._session is not None:
            self._session.sync_session.bind = None

    @property
    def session_opened(self) -> AsyncSession | None:
        """The session if a repository has opened it, else None."""
        return self._session

    async def _ready(self) -> None:
        if self._ended:
            raise RuntimeError("this unit of work has committed: begin another")
        session = self._session
        # Whatever the ORM holds back must reach the database first, in the order it was done.
        if session is not None and (session.new or session.deleted or session.dirty):
            await session.flush()
        if self._sqlite is not None or self._pg is not None or self._offload is not None:
            return
        driver: Any = self._driver
        if driver is None:
            connection = self._connection or await self.session.connection()
            driver = (await connection.get_raw_connection()).driver_connection
        if isinstance(driver, SqliteConnection):
            if driver.offload:
                self._offload = driver
            else:
                self._sqlite = driver.raw
        elif isinstance(driver, asyncpg.Connection):
            self._pg = driver
        else:  # pragma: no cover - make_engine gives every SQLite engine the driver above
            raise RuntimeError(f"no raw path for {type(driver).__name__}")

    async def postgresql(self) -> bool:
        """Whether the statements run on PostgreSQL (else SQLite)."""
        await self._ready()
        return self._pg is not None

    @property
    def holding(self) -> bool:
        """Whether writes are held back, waiting for a statement to carry them."""
        return bool(self._held)

    async def later(self, sql: Sql, *params: Any) -> None:
        """Run a write whose row count nobody reads, in its turn among the statements.

        On PostgreSQL, in a unit of work, it travels with the next statement (or the commit)
        as a WITH clause of it: one round trip fewer each. Such clauses all see the snapshot the
        statement began with, so a statement that names a held table is not given them: they
        are sent on their own first. SQLAlchemy's statements on the same connection send them
        first too (:func:`watch`).
        """
        await self._ready()
        if self._pg is None or not self._hold or sql.table is None:
            await self.run(sql, *params)
            return
        if any(held.table == sql.table for held, _ in self._held):
            await self.flush()  # two writes to one table in one statement would miss each other
        self._held.append((sql, params))

    async def flush(self) -> None:
        """Send the writes held back, as one statement."""
        if not self._held:
            return
        held, self._held = self._held, []
        await self._pg.execute(*_carry(held))

    async def _carrying(self, sql: Sql, params: tuple[Any, ...]) -> tuple[Any, ...]:
        # The statement, with the held writes as WITH clauses when it may carry them.
        if not self._held:
            return (sql.postgresql, *params)
        main = sql.postgresql
        if any(_names(main, held.table or "") for held, _ in self._held):
            await self.flush()
            return (main, *params)
        held, self._held = self._held, []
        return _carry([*held, (sql, params)])

    async def rows(self, sql: Sql, *params: Any) -> list[Sequence[Any]]:
        """The rows a statement returns."""
        await self._ready()
        if self._pg is not None:
            return list(await self._pg.fetch(*await self._carrying(sql, params)))
        values = tuple(_sqlite_value(p) for p in params)
        if self._offload is not None:
            rows: list[Sequence[Any]] = await self._offload.call(
                _fetch, self._offload.raw, sql, values
            )
            return rows
        assert self._sqlite is not None
        return _fetch(self._sqlite, sql, values)

    async def run(self, sql: Sql, *params: Any) -> int:
        """Run a statement; the rows it changed."""
        await self._ready()
        if self._pg is not None:
            status: str = await self._pg.execute(*await self._carrying(sql, params))
            return int(status.rsplit(" ", 1)[-1]) if status[-1:].isdigit() else 0
        values = tuple(_sqlite_value(p) for p in params)
        if self._offload is not None:
            changed: int = await self._offload.call(_change, self._offload.raw, sql, values)
            return changed
        assert self._sqlite is not None
        return _change(self._sqlite, sql, values)

    async def run_many(self, sql: Sql, rows: Sequence[Sequence[Any]]) -> None:
        """Run a statement once for each row of parameters."""
        if not rows:
            return
        if len(rows) == 1:  # asyncpg's executemany pipeline costs more than one plain execute
            await self.run(sql, *rows[0])
            return
        await self._ready()
        if self._pg is not None:
            await self.flush()
            await self._pg.executemany(sql.postgresql, rows)
            return
        values = [tuple(_sqlite_value(p) for p in row) for row in rows]
        if self._offload is not None:
            await self._offload.call(_change_many, self._offload.raw, sql, values)
            return
        assert self._sqlite is not None
        _change_many(self._sqlite, sql, values)


def _carry(statements: list[tuple[Sql, tuple[Any, ...]]]) -> tuple[Any, ...]:
    # One statement's text and parameters for several (asyncpg takes them as arguments).
    text = _together(tuple(sql.postgresql for sql, _ in statements))
    return (text, *itertools.chain.from_iterable(params for _, params in statements))


#: Where a unit of work's :class:`Raw` sits on its SQLAlchemy connection (``Connection.info``).
HELD = "tipline.raw"


def _send_held(connection: Any, *_: Any) -> None:
    raw = connection.info.get(HELD)
    if raw is not None and raw.holding:
        # Inside SQLAlchemy's greenlet: its documented way to await the driver from a sync hook.
        connection.connection.dbapi_connection.run_async(lambda _: raw.flush())


_WATCHED: weakref.WeakSet[Any] = weakref.WeakSet()


def watch(engine: AsyncEngine) -> None:
    """Make every statement SQLAlchemy runs on the engine send the writes a unit of work holds
    back on that connection first, so the ORM never sees the database without them."""
    if engine.sync_engine not in _WATCHED:
        event.listen(engine.sync_engine, "before_cursor_execute", _send_held)
        _WATCHED.add(engine.sync_engine)


def watched(engine: AsyncEngine) -> bool:
    """Whether units of work on the engine may hold writes back (:func:`watch`)."""
    return engine.sync_engine in _WATCHED


def _fetch(connection: sqlite3.Connection, sql: Sql, values: tuple[Any, ...]) -> list[Any]:
    return connection.execute(sql.sqlite, values).fetchall()


def _change(connection: sqlite3.Connection, sql: Sql, values: tuple[Any, ...]) -> int:
    return connection.execute(sql.sqlite, values).rowcount


def _change_many(connection: sqlite3.Connection, sql: Sql, values: list[tuple[Any, ...]]) -> int:
    return connection.executemany(sql.sqlite, values).rowcount
