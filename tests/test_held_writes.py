"""Writes held back to travel with a later statement (storage/raw.py), and a turn's claim that
reads its chat's draft and bucket in the same statement, on SQLite and on PostgreSQL."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.services.ports import Bucket
from storage.db import make_session_factory
from storage.keyring import Keyring
from storage.models import ChatLimit, Draft
from storage.raw import Sql, _together
from storage.repositories import SqlUnitOfWork
from tests.conftest import START
from tests.helpers import keep_chat

LATER = START + timedelta(hours=5)


def uow(db: AsyncEngine, keyring: Keyring) -> SqlUnitOfWork:
    return SqlUnitOfWork(make_session_factory(db), keyring)


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every statement sent to PostgreSQL through asyncpg (each is a round trip)."""
    sent: list[str] = []
    for name in ("execute", "fetch", "executemany", "prepare"):
        original = getattr(asyncpg.Connection, name)

        async def counted(self: Any, query: str, *args: Any, _o: Any = original, **kw: Any) -> Any:
            sent.append(query)
            return await _o(self, query, *args, **kw)

        monkeypatch.setattr(asyncpg.Connection, name, counted)
    return sent


def test_held_writes_become_with_clauses_numbered_on() -> None:
    composed = _together(
        (
            "DELETE FROM a WHERE id = $1",
            "UPDATE b SET x = $1 WHERE id = $2",
            "WITH c AS (INSERT INTO d VALUES ($1) RETURNING 1) SELECT $2, (SELECT 1 FROM c)",
        )
    )
    assert composed == (
        "WITH held0 AS (DELETE FROM a WHERE id = $1), "
        "held1 AS (UPDATE b SET x = $2 WHERE id = $3), "
        "c AS (INSERT INTO d VALUES ($4) RETURNING 1) SELECT $5, (SELECT 1 FROM c)"
    )
    assert _together(("DELETE FROM a WHERE id = $1",)) == "DELETE FROM a WHERE id = $1"
    assert Sql.of('INSERT INTO chat_limits ("key") VALUES (?)').table == "chat_limits"
    assert Sql.of("SELECT 1 FROM drafts").table is None


async def test_held_writes_are_kept_by_the_commit_and_dropped_without_it(
    db: AsyncEngine, keyring: Keyring
) -> None:
    async with uow(db, keyring) as u:
        await keep_chat(u, "telegram", "1", {"step": 1}, LATER, Bucket(2.0, START, False))
        await u.commit()
    async with uow(db, keyring) as u:
        await keep_chat(u, "telegram", "2", {"step": 1}, LATER, Bucket(1.0, START, True))
        # no commit: rolled back, held or not
    async with uow(db, keyring) as u:
        assert await u.limits.get("telegram", "1") == Bucket(2.0, START, False)
        assert await u.drafts.load("telegram", "1", START) == {"step": 1}
        assert await u.limits.get("telegram", "2") is None
        assert await u.drafts.load("telegram", "2", START) is None


async def test_every_later_statement_sees_what_was_held_back(
    db: AsyncEngine, keyring: Keyring
) -> None:
    async with uow(db, keyring) as u:
        # A new draft: the delete of any old one and the insert touch one table, so the
        # second sends the first; then an update of the row just inserted.
        await keep_chat(u, "signal", "u1", {"step": 1}, LATER, Bucket(3.0, START, False))
        # SQLAlchemy's statements (the ORM here) see the held writes.
        assert await u.session.scalar(select(func.count()).select_from(ChatLimit)) == 1
        assert await u.session.scalar(select(func.count()).select_from(Draft)) == 1
        await u.drafts.save("signal", "u1", {"step": 2}, LATER)
        # A plain statement on a held table sees them too.
        assert await u.drafts.delete("signal", "u1") is True
        await u.drafts.save("signal", "u1", {"step": 3}, LATER)
        await u.commit()
    async with uow(db, keyring) as u:
        assert await u.drafts.load("signal", "u1", START) == {"step": 3}
        assert await u.session.scalar(select(func.count()).select_from(Draft)) == 1


async def test_a_held_write_that_fails_fails_the_commit_and_keeps_nothing(
    db: AsyncEngine, keyring: Keyring
) -> None:
    async with uow(db, keyring) as u:
        await u.drafts.save("telegram", "9", {"step": 1}, LATER)
        await u.commit()
    bad = Sql.of('INSERT INTO chat_limits ("key", tokens, "at", warned) VALUES (?, NULL, ?, ?)')

    # PostgreSQL fails it at the commit, which carries it; SQLite as it runs.
    async def turn() -> None:
        async with uow(db, keyring) as u:
            await u.drafts.save("telegram", "9", {"step": 2}, LATER)
            await u._raw.later(bad, "k", START, False)
            await u.commit()

    with pytest.raises((asyncpg.NotNullViolationError, sqlite3.IntegrityError)) as caught:
        await turn()
    assert "null" in str(caught.value).lower()
    async with uow(db, keyring) as u:
        assert await u.drafts.load("telegram", "9", START) == {"step": 1}
        assert await u.session.scalar(select(func.count()).select_from(ChatLimit)) == 0


async def test_a_turn_claims_its_update_and_reads_its_chat_in_one_statement(
    db: AsyncEngine, keyring: Keyring, trips: list[str]
) -> None:
    async with uow(db, keyring) as u:
        await keep_chat(u, "telegram", "5", {"step": 4}, LATER, Bucket(1.5, START, True))
        await u.commit()
    async with uow(db, keyring).locking("telegram", "5") as u:
        trips.clear()
        assert await u.claim_turn("telegram", "5", "1001", LATER) is True
        assert await u.drafts.load("telegram", "5", START) == {"step": 4}
        assert await u.limits.get("telegram", "5") == Bucket(1.5, START, True)
        if db.dialect.name == "postgresql":
            assert len(trips) == 1, trips  # the claim, the draft and the bucket
        await keep_chat(u, "telegram", "5", {"step": 5}, LATER, Bucket(0.5, START, True))
        await u.commit()
        if db.dialect.name == "postgresql":
            assert len(trips) == 3, trips  # then the writes together, and COMMIT
    async with uow(db, keyring).locking("telegram", "5") as u:
        assert await u.claim_turn("telegram", "5", "1001", LATER) is False  # handled before
        assert await u.drafts.load("telegram", "5", START) == {"step": 5}
        assert await u.limits.get("telegram", "5") == Bucket(0.5, START, True)
    async with uow(db, keyring).locking("telegram", "6") as u:  # a chat with neither
        assert await u.claim_turn("telegram", "6", "1002", LATER) is True
        assert await u.drafts.load("telegram", "6", START) is None
        assert await u.limits.get("telegram", "6") is None


async def test_an_expired_draft_read_with_the_claim_is_gone(
    db: AsyncEngine, keyring: Keyring
) -> None:
    async with uow(db, keyring) as u:
        await u.drafts.save("telegram", "8", {"step": 1}, START + timedelta(minutes=30))
        await u.commit()
    async with uow(db, keyring).locking("telegram", "8") as u:
        assert await u.claim_turn("telegram", "8", "2001", LATER) is True
        assert await u.drafts.load("telegram", "8", LATER) is None
        await u.commit()
    async with uow(db, keyring) as u:
        assert await u.session.scalar(select(func.count()).select_from(Draft)) == 0


async def test_a_claim_reads_the_screen_of_its_lane_in_the_same_statement(
    db: AsyncEngine, keyring: Keyring, trips: list[str]
) -> None:
    async with uow(db, keyring) as u:
        first, second = await u.outbox.put_many(
            [("telegram", "5", {"n": 1}), ("telegram", "5", {"n": 2})], START, LATER
        )
        await u.outbox.set_screen(first.lane, ["11@1"], LATER, channel="telegram", chat="5")
        await u.commit()
    async with uow(db, keyring) as u:
        trips.clear()
        # The second waits behind the first: not claimed, whatever it read.
        assert not await u.outbox.claim(second.id, START, LATER, screen_of=second.lane)
        assert await u.outbox.claim(first.id, START, LATER, screen_of=first.lane)
        assert await u.outbox.screen(first.lane) == ["11@1"]
        if db.dialect.name == "postgresql":
            assert len(trips) == 2, trips  # each claim read the screen with it
        await u.commit()
    async with uow(db, keyring) as u:
        assert not await u.outbox.claim(first.id, START, LATER)  # taken until LATER
        await u.outbox.done([first.id])
        await u.outbox.set_screen(first.lane, ["11@1", "12@2"], LATER, channel="telegram", chat="5")
        assert await u.outbox.claim(second.id, START, LATER, screen_of=second.lane)
        assert await u.outbox.screen(second.lane) == ["11@1", "12@2"]
        await u.commit()
