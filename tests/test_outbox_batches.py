"""Delivered outbox items are removed in batches: deliveries finishing together share a commit."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta

from bot.domain.messages import Notice
from bot.services.clock import FrozenClock
from bot.services.outbox import FRESH, PARK_TRIES, OutboxSender, Outgoing, Shown
from bot.services.ports import OutboxEntry
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


class Gate(Screen):
    """A messenger whose sends to one chat wait until the gate opens."""

    def __init__(self, held: str) -> None:
        super().__init__()
        self.held = held
        self.open = asyncio.Event()
        self.waiting = asyncio.Event()

    async def send(self, chat: str, messages: Sequence[Shown]) -> list[str]:
        if chat == self.held and not self.open.is_set():
            self.waiting.set()
            await self.open.wait()
        return await super().send(chat, messages)


async def test_an_item_written_to_a_busy_lane_goes_out_when_the_lane_frees() -> None:
    """A turn delivers its own items; an item another use case writes to the same chat while
    that delivery runs (the lawyer's "device changed" notice, written when the reporter's copy
    of their reply is refused) was left for the outbox loop's next timed round: the round it was
    woken for saw the lane busy and passed it over, and nothing woke it again. The Signal tests
    run that loop hourly, and test_identity failed under load."""
    db, clock = MemoryDatabase(), FrozenClock(START)
    gate = Gate("lawyer")
    sender = OutboxSender("signal", db.uow, gate, clock)
    stop = asyncio.Event()
    loop = asyncio.create_task(sender.run(stop, every=3600))

    async def written(text: str) -> list[OutboxEntry]:
        out = Outgoing()
        out.show("signal", "lawyer", [Notice(text)], clear=False, track=False)
        async with db.uow() as unit:
            entries = await out.write(unit, clock())
            await unit.commit()
        return entries

    for _ in range(50):  # the loop's first round finds nothing and it waits to be woken
        await asyncio.sleep(0)
    first = asyncio.create_task(sender.deliver(await written("delivered")))
    await gate.waiting.wait()  # the turn's own delivery is under way, its lane held
    await written("device changed")
    sender.wake()
    for _ in range(200):  # the loop's round runs, finds the lane busy and passes it over
        await asyncio.sleep(0)
    gate.open.set()
    assert await first == 1
    for _ in range(50):
        if len(gate.sent) == 2:
            break
        await asyncio.sleep(0)
    stop.set()
    await loop
    assert gate.sent == [("lawyer", "delivered"), ("lawyer", "device changed")]


async def test_an_item_whose_claim_failed_goes_again_soon_behind_its_lane_and_not_for_ever() -> (
    None
):
    db, clock, screen = MemoryDatabase(), FrozenClock(START), Screen()
    sender = OutboxSender("telegram", db.uow, screen, clock, shared=True)
    out = Outgoing()
    out.show("telegram", "7", [Notice("first")], clear=False, track=False)
    out.show("telegram", "7", [Notice("second")], clear=False, track=False)
    async with db.uow() as unit:
        first, second = await out.write(unit, clock())
        # Another process holds the first (claimed, and sending it).
        assert await unit.outbox.claim(first.id, clock(), clock() + timedelta(seconds=60))
        await unit.commit()
    assert await sender.deliver([second]) == 0  # waits behind the first: parked
    assert await sender.flush() == 0  # tried again (fresh: no round of heads finds it)
    async with db.uow() as unit:  # the other process has sent the first and removed it
        await unit.outbox.done([first.id])
        await unit.commit()
    assert await sender.flush() == 1
    assert screen.sent == [("7", "second")]

    # One that can never be claimed (another process took it) is tried a second's worth, or
    # until its deadline, and then left to the rounds every process makes.
    out = Outgoing()
    out.show("telegram", "8", [Notice("third")], clear=False, track=False)
    async with db.uow() as unit:
        (third,) = await out.write(unit, clock())
        assert await unit.outbox.claim(third.id, clock(), clock() + timedelta(seconds=60))
        await unit.commit()
    assert await sender.deliver([third]) == 0
    tries = 0
    while await sender.flush() == 0 and sender.parked and tries < 100:
        tries += 1
    assert not sender.parked and tries <= PARK_TRIES
    # Its deadline is set when it is first parked, never pushed back by a try.
    assert await sender.deliver([third]) == 0 and sender.parked
    clock.advance(FRESH * 0.6)
    assert await sender.flush() == 0 and sender.parked
    clock.advance(FRESH * 0.6)
    assert await sender.flush() == 0 and not sender.parked
    assert screen.sent == [("7", "second")]
