"""Delivered outbox items are removed in batches: deliveries finishing together share a commit."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from bot.domain.messages import Notice
from bot.services.clock import FrozenClock
from bot.services.outbox import OutboxSender, Outgoing, Shown
from storage.memory import MemoryDatabase, MemoryUnitOfWork
from tests.conftest import START


class Screen:
    """A messenger that takes every message, a little later, and numbers them."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    async def send(self, chat: str, messages: Sequence[Shown]) -> list[str]:
        await asyncio.sleep(0)
        self.sent += [(chat, m.text) for m in messages]
        return [str(len(self.sent))]

    async def edit(self, chat: str, ref: str, messages: Sequence[Shown]) -> bool:
        return False

    async def delete(self, chat: str, ref: str) -> None:
        return None


async def test_deliveries_finishing_together_are_removed_in_few_commits() -> None:
    db, commits = MemoryDatabase(), []

    def uow() -> MemoryUnitOfWork:
        unit = db.uow()
        publish = unit.commit

        async def commit() -> None:
            commits.append(1)
            await publish()

        unit.commit = commit  # type: ignore[method-assign]
        return unit

    clock = FrozenClock(START)
    screen = Screen()
    sender = OutboxSender("telegram", uow, screen, clock)
    out = Outgoing()
    for chat in range(20):
        out.show("telegram", str(chat), [Notice(f"hello {chat}")], clear=False, track=True)
    async with uow() as unit:
        entries = await out.write(unit, clock())
        await unit.commit()
    commits.clear()
    assert await sender.deliver(entries) == 20
    assert sorted(screen.sent) == sorted((str(c), f"hello {c}") for c in range(20))
    assert 1 <= len(commits) < 5  # one per batch, not one per delivery
    async with uow() as unit:
        assert await unit.outbox.depth() == {}  # every delivered item is gone
        assert await unit.outbox.screen(entries[7].lane) != []  # each screen saved with it
    assert await sender.flush() == 0  # nothing is delivered twice
