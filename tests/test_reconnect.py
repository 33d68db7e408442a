"""A transaction survives a pooled PostgreSQL connection the server dropped, without pre-ping."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from storage import migrate
from storage.db import make_engine, make_session_factory
from storage.keyring import Keyring
from storage.repositories import SqlUnitOfWork
from tests.conftest import PG_SKIP_REASON, PG_URL, START, reset_postgres

pytestmark = [pytest.mark.postgres, pytest.mark.skipif(PG_URL is None, reason=PG_SKIP_REASON)]


@pytest.fixture
async def engine() -> AsyncIterator[AsyncEngine]:
    """A migrated PostgreSQL database behind a pool of one connection."""
    assert PG_URL is not None
    engine = make_engine(PG_URL, pool_size=1, max_overflow=0)
    await reset_postgres(engine)
    await migrate.upgrade(engine)
    try:
        yield engine
    finally:
        await reset_postgres(engine)
        await engine.dispose()


async def test_a_dropped_connection_is_replaced_at_the_first_statement(engine: AsyncEngine) -> None:
    keyring = Keyring.generate(START)
    sessions = make_session_factory(engine)
    async with SqlUnitOfWork(sessions, keyring) as uow:
        pid = (await uow.session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    # The server ends the pooled connection (a restart, an idle timeout, an admin).
    killer = make_engine(PG_URL)
    async with killer.connect() as conn:
        await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    await killer.dispose()
    async with SqlUnitOfWork(sessions, keyring) as uow:
        assert await uow.seen.claim("telegram", "1", START)
        other = (await uow.session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        await uow.commit()
    assert other != pid
    async with SqlUnitOfWork(sessions, keyring) as uow:
        assert not await uow.seen.claim("telegram", "1", START)  # committed once


async def test_a_failure_after_begin_does_not_leave_the_connection_in_a_dead_transaction(
    engine: AsyncEngine,
) -> None:
    keyring = Keyring.generate(START)
    sessions = make_session_factory(engine)
    async with engine.begin() as conn:  # the key check's table is gone: BEGIN works, it fails
        await conn.execute(text("ALTER TABLE key_state RENAME TO key_state_away"))
    with pytest.raises(asyncpg.UndefinedTableError):
        async with SqlUnitOfWork(sessions, keyring):
            pass
    async with engine.begin() as conn:  # the one pooled connection: usable at once
        await conn.execute(text("ALTER TABLE key_state_away RENAME TO key_state"))
    async with SqlUnitOfWork(sessions, keyring) as uow:
        assert await uow.seen.claim("telegram", "1", START)
        await uow.commit()
    async with SqlUnitOfWork(sessions, keyring) as uow:
        assert not await uow.seen.claim("telegram", "1", START)


async def test_a_connection_past_the_pool_size_is_closed_when_it_comes_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A unit of work holds the pool's connection itself (not SQLAlchemy's Connection): one
    # opened past the pool's size is closed on return, which awaits the driver.
    assert PG_URL is not None
    engine = make_engine(PG_URL, pool_size=1, max_overflow=1)
    await reset_postgres(engine)
    await migrate.upgrade(engine)
    keyring = Keyring.generate(START)
    sessions = make_session_factory(engine)
    try:
        with caplog.at_level(logging.ERROR):
            async with SqlUnitOfWork(sessions, keyring) as first:
                async with SqlUnitOfWork(sessions, keyring) as second:
                    assert await second.seen.claim("telegram", "2", START)
                    await second.commit()
                assert await first.seen.claim("telegram", "1", START)
                await first.commit()
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        pool = engine.sync_engine.pool
        assert pool.checkedout() == 0 and pool.overflow() <= 0  # type: ignore[attr-defined]
        async with SqlUnitOfWork(sessions, keyring) as uow:
            assert not await uow.seen.claim("telegram", "1", START)
            assert not await uow.seen.claim("telegram", "2", START)
    finally:
        await reset_postgres(engine)
        await engine.dispose()
