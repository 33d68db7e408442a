"""Rate limits shared through the database (issue 14): two processes behind a round-robin proxy
give a flooding chat the limit once, not twice; the erase job forgets refilled buckets; the
ratchet leaves no bucket row behind. On SQLite (a file two engines open) and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.domain.engine import Engine
from bot.jobs import erase_job
from bot.services.clock import FrozenClock
from bot.services.inbound import Inbound
from bot.services.outbox import Shown
from bot.services.ratelimit import RateLimit
from storage.db import make_engine
from storage.keyring import KeyFile, KeyringFile, KeyVault
from storage.maintenance import Maintenance
from storage.models import ChatLimit
from storage.raw import Raw, Sql
from tests.conftest import START
from tests.world import World

LIMIT = 5
LIMITS = RateLimit(limit=LIMIT, window=timedelta(minutes=1))
FLOODER = "telegram:555"


@pytest.fixture
def vault(tmp_path: Path) -> KeyVault:
    """A keyring on disk (a rotation persists it)."""
    return KeyVault.create(KeyringFile(tmp_path / "keyring"), KeyFile(os.urandom(32)), None, START)


@pytest.fixture
async def second_engine(db: AsyncEngine, db_url: str) -> AsyncIterator[AsyncEngine]:
    """Another engine on the same database: what a second ``tipline run`` process opens."""
    engine = make_engine(db_url)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def processes(
    db: AsyncEngine,
    second_engine: AsyncEngine,
    vault: KeyVault,
    engine_: Engine,
    clock: FrozenClock,
) -> tuple[World, World]:
    """Two processes: every service twice, each over its own engine, one database."""
    return (
        World(db, vault.keyring, engine_, clock, limits=LIMITS),
        World(second_engine, vault.keyring, engine_, clock, limits=LIMITS),
    )


def verdict(shown: Sequence[Shown], engine: Engine) -> str:
    """What the limiter decided, as the reporter sees it: an answer, the warning, or nothing."""
    warning = engine.notice("en", "ui.rate_limited").text
    if not shown:
        return "drop"
    return "warn" if [m.text for m in shown] == [warning] else "ok"


async def rows(db: AsyncEngine) -> int:
    async with db.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(ChatLimit))).scalar_one())


async def test_two_processes_flooding_one_chat_get_the_limit_once(
    processes: tuple[World, World], engine_: Engine, db: AsyncEngine
) -> None:
    one, two = processes
    seen = [verdict(await (one, two)[i % 2].say(FLOODER, "/help"), engine_) for i in range(12)]
    assert seen == ["ok"] * LIMIT + ["warn"] + ["drop"] * 6, "together, as one process would"
    assert verdict(await one.say("telegram:556", "/help"), engine_) == "ok", "another chat"
    assert verdict(await two.say("signal:555", "/help"), engine_) == "ok", "same id, other channel"
    assert await rows(db) == 3, "one bucket per chat, whichever process counted it"
    one.clock.advance(LIMITS.window / LIMIT)  # one message's worth refilled
    seen = [verdict(await (two, one)[i % 2].say(FLOODER, "/help"), engine_) for i in range(3)]
    assert seen == ["ok", "drop", "drop"], "no second warning within one flood"


async def test_two_processes_at_once_still_share_one_bucket(
    processes: tuple[World, World], engine_: Engine
) -> None:
    """Both handle the chat's messages at the same moment: the chat's lock orders the turns,
    and each reads the bucket the other wrote."""
    one, two = processes
    channel, _, chat = FLOODER.partition(":")
    warning = engine_.notice("en", "ui.rate_limited").text

    async def send(world: World, n: int) -> list[Any]:
        handled = await world.inbound.handle(Inbound(channel, chat, text="/help", update_id=str(n)))
        return [m for e in handled.entries for m in e.payload.get("messages", [])]

    results = await asyncio.gather(*(send((one, two)[n % 2], n) for n in range(16)))
    texts = [[m["text"] if isinstance(m, dict) else m for m in r] for r in results]
    warned = [t for t in texts if any(warning in str(x) for x in t)]
    answered = [t for t in texts if t and not any(warning in str(x) for x in t)]
    assert len(answered) == LIMIT, f"{len(answered)} answered: the limit is {LIMIT}"
    assert len(warned) == 1


async def test_the_erase_job_forgets_refilled_buckets_only(
    processes: tuple[World, World], engine_: Engine, db: AsyncEngine, clock: FrozenClock
) -> None:
    one, two = processes
    for _ in range(LIMIT + 2):
        await one.say(FLOODER, "/help")
    clock.advance(LIMITS.window / 2)
    await two.say("telegram:556", "/help")
    assert await rows(db) == 2

    class NoErasure:
        async def erase_pending(self) -> None:
            return None

    async def no_sleep(_: float) -> None:
        return None

    clock.advance(LIMITS.window / 2)  # the flooder's bucket is full again; the other's is not
    await erase_job(NoErasure(), rounds=1, sleep=no_sleep, inbound=two.inbound)  # type: ignore[arg-type]
    assert await rows(db) == 1
    # Forgetting a full bucket changes nothing: the chat gets its whole limit, then the warning.
    seen = [verdict(await one.say(FLOODER, "/help"), engine_) for _ in range(LIMIT + 1)]
    assert seen == ["ok"] * LIMIT + ["warn"]
    clock.advance(LIMITS.window)
    assert await two.inbound.forget_full_buckets() == 2
    assert await rows(db) == 0


async def test_no_bucket_row_survives_a_ratchet(
    processes: tuple[World, World],
    engine_: Engine,
    db: AsyncEngine,
    vault: KeyVault,
    clock: FrozenClock,
) -> None:
    one, _ = processes
    for _ in range(LIMIT + 1):
        await one.say(FLOODER, "/help")
    await one.say("signal:777", "/help")
    async with db.connect() as conn:
        before = set((await conn.execute(select(ChatLimit.key))).scalars())
    assert len(before) == 2
    report = await Maintenance(db, vault).rotate(clock())
    assert report.complete and report.destroyed
    assert await rows(db) == 0, "every bucket goes: none keeps a lookup under the old key"
    # The flooder starts again with a full bucket, under the new key.
    assert verdict(await one.say(FLOODER, "/help"), engine_) == "ok"
    async with db.connect() as conn:
        after = set((await conn.execute(select(ChatLimit.key))).scalars())
    assert len(after) == 1 and not after & before


async def test_the_limit_costs_a_turn_no_round_trip_on_postgresql_two_statements_on_sqlite(
    db: AsyncEngine,
    vault: KeyVault,
    engine_: Engine,
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[str] = []

    def count(*args: Any) -> None:
        sent.append(args[2])

    if db.dialect.name == "postgresql":
        # What reaches the server: every call on asyncpg's connection is a round trip.
        for name in ("execute", "fetch", "executemany"):
            original = getattr(asyncpg.Connection, name)

            async def sent_to_server(
                self: Any, query: str, *args: Any, _original: Any = original, **kw: Any
            ) -> Any:
                sent.append(query)
                return await _original(self, query, *args, **kw)

            monkeypatch.setattr(asyncpg.Connection, name, sent_to_server)
    else:
        # Hot statements bypass SQLAlchemy (storage/raw.py): count them where they are run.
        for name in ("rows", "run", "run_many"):
            original = getattr(Raw, name)

            async def traced(self: Raw, sql: Sql, *args: Any, _original: Any = original) -> Any:
                sent.append(sql.sqlite)
                return await _original(self, sql, *args)

            monkeypatch.setattr(Raw, name, traced)

    async def cost(world: World, chat: str) -> list[str]:
        await world.say(chat, "/help")  # a first turn makes the chat's rows
        sent.clear()
        event.listen(db.sync_engine, "before_cursor_execute", count)
        try:
            await world.inbound.handle(
                Inbound("telegram", chat.partition(":")[2], text="/help", update_id=chat)
            )
        finally:
            event.remove(db.sync_engine, "before_cursor_execute", count)
        return list(sent)

    unlimited = await cost(World(db, vault.keyring, engine_, clock), "telegram:1")
    limited = await cost(World(db, vault.keyring, engine_, clock, limits=LIMITS), "telegram:2")
    extra = [s for s in limited if "chat_limits" in s]
    if db.dialect.name == "postgresql":
        # The bucket is read by the statement that claims the update, and written with the
        # turn's other writes: a limited turn takes as many round trips as an unlimited one.
        assert len(limited) == len(unlimited), (limited, unlimited)
        assert any("seen_updates" in s and "LEFT JOIN chat_limits" in s for s in extra), extra
        assert any("INSERT INTO chat_limits" in s and "INSERT INTO outbox" in s for s in extra)
        return
    assert len(limited) == len(unlimited) + 2 and len(extra) == 2, extra
    assert extra[0].lstrip().upper().startswith("SELECT") and "WHERE" in extra[0].upper()
    assert extra[1].lstrip().upper().startswith("INSERT") and "ON CONFLICT" in extra[1].upper()
