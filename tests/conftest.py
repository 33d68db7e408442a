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

PG_URL = os.environ.get("TIPLINE_TEST_DATABASE_URL")
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
