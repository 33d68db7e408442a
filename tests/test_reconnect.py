"""A transaction survives a pooled PostgreSQL connection the server dropped, without pre-ping."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from storage import migrate
from storage.db import make_engine, make_session_factory
from storage.keyring import Keyring
from storage.repositories import SqlUnitOfWork
from tests.conftest import PG_SKIP_REASON, PG_URL, START, reset_postgres

pytestmark = [pytest.mark.postgres, pytest.mark.skipif(PG_URL is None, reason=PG_SKIP_REASON)]


async def test_a_dropped_connection_is_replaced_at_the_first_statement() -> None:
    assert PG_URL is not None
    engine = make_engine(PG_URL, pool_size=1, max_overflow=0)
    await reset_postgres(engine)
    await migrate.upgrade(engine)
    keyring = Keyring.generate(START)
    sessions = make_session_factory(engine)
    try:
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
    finally:
        await reset_postgres(engine)
        await engine.dispose()
