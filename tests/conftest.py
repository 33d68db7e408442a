"""Shared fixtures: an injected clock, keys, and one database fixture over every backend."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.domain.engine import Engine
from bot.domain.questionnaire import REPORT
from bot.i18n import load_texts
from bot.services.clock import FrozenClock
from storage import migrate
from storage.db import is_sqlite, make_engine
from storage.keyring import Keyring


def _worker_database(url: str | None) -> str | None:
    """Under pytest-xdist each worker gets its own PostgreSQL database, made from the given one."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if url is None or not worker:
        return url
    import asyncio

    import asyncpg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    name = f"{parsed.database}_{worker}"

    async def create() -> None:
        plain = parsed.set(drivername="postgresql", database="postgres")
        conn = await asyncpg.connect(plain.render_as_string(hide_password=False))
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return parsed.set(database=name).render_as_string(hide_password=False)


PG_URL = _worker_database(os.environ.get("TIPLINE_TEST_DATABASE_URL"))
#: Tests that measure time or start many processes: run alone (``make test`` runs them last).
SERIAL = {
    "test_kill",
    "test_lifecycle",
    "test_media_worker",
    "test_multiprocess",
    "test_outage",
    "test_signal_election",
    "test_stall",
    "test_locked_start",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests of the SERIAL modules."""
    for item in items:
        if item.module is not None and item.module.__name__.rsplit(".", 1)[-1] in SERIAL:
            item.add_marker(pytest.mark.serial)


PG_SKIP_REASON = "TIPLINE_TEST_DATABASE_URL is not set: PostgreSQL tests skipped"
START = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param(
        "postgres",
        id="postgres",
        marks=[pytest.mark.postgres, pytest.mark.skipif(PG_URL is None, reason=PG_SKIP_REASON)],
    ),
]


@pytest.fixture
def clock() -> FrozenClock:
    """A clock that only moves when a test moves it."""
    return FrozenClock(START)


@pytest.fixture
def engine_() -> Engine:
    """The questionnaire engine with the real catalogs."""
    return Engine(REPORT, load_texts())


@pytest.fixture
def keyring() -> Keyring:
    """A fresh in-memory keyring."""
    return Keyring.generate(START)


def backend_url(backend: str, tmp_path: Path) -> str:
    """A database URL for a backend: a file under tmp_path, or the CI PostgreSQL."""
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'tipline.db'}"
    assert PG_URL is not None
    return PG_URL


async def reset_postgres(engine: AsyncEngine) -> None:
    """Leave the shared PostgreSQL database empty for the next test."""
    async with engine.begin() as conn:
        await conn.execute(text("DROP SCHEMA public CASCADE"))
        await conn.execute(text("CREATE SCHEMA public"))


@pytest.fixture(params=BACKENDS)
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database on every backend (PostgreSQL skipped with a reason when unset)."""
    url = backend_url(request.param, tmp_path)
    if not is_sqlite(url):
        engine = make_engine(url)
        await reset_postgres(engine)
        await engine.dispose()
    return url


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated database engine on every backend."""
    engine = make_engine(db_url)
    await migrate.upgrade(engine)
    try:
        yield engine
    finally:
        if not is_sqlite(db_url):
            await reset_postgres(engine)
        await engine.dispose()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A worker drops the PostgreSQL database it made for itself."""
    base = os.environ.get("TIPLINE_TEST_DATABASE_URL")
    if PG_URL is None or base == PG_URL:
        return
    import asyncio

    import asyncpg
    from sqlalchemy.engine import make_url

    parsed = make_url(PG_URL)

    async def drop() -> None:
        plain = parsed.set(drivername="postgresql", database="postgres")
        conn = await asyncpg.connect(plain.render_as_string(hide_password=False))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())
