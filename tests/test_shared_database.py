"""What lets several ``tipline run`` processes share one database (DESIGN.md section 10), one
piece at a time, on every backend: a chat's late update is not applied, a lane's head is sent
by one sender only and in order, a job's round and the Signal receiver role have one holder."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.domain.engine import Engine
from bot.domain.messages import Notice, Start, Stop
from bot.services.clock import FrozenClock
from bot.services.inbound import Inbound
from bot.services.outbox import CLAIM_LEASE, FRESH, OutboxSender, Outgoing
from storage.db import make_session_factory
from storage.keyring import Keyring
from storage.locks import SessionLock, listen, notify
from storage.repositories import SqlUnitOfWork
from tests.world import MemoryTransport, World


@pytest.fixture
async def world(db: AsyncEngine, keyring: Keyring, engine_: Engine, clock: FrozenClock) -> World:
    return World(db, keyring, engine_, clock)


async def test_an_update_older_than_the_last_applied_is_not_applied(world: World) -> None:
    first = await world.inbound.handle(Inbound("telegram", "41", event=Start(None), order=10))
    assert first.entries and not first.duplicate
    # A cancel sent before the start, handed over late (another process, a slow proxy).
    late = await world.inbound.handle(Inbound("telegram", "41", event=Stop(), order=9))
    assert late.duplicate and not late.entries
    async with world.uow() as uow:
        state = await uow.drafts.load("telegram", "41", world.clock())
    assert state is not None and state["order"] == 10
    newer = await world.inbound.handle(Inbound("telegram", "41", event=Stop(), order=11))
    assert not newer.duplicate and newer.entries


def _senders(world: World, transport: MemoryTransport) -> list[OutboxSender]:
    return [
        OutboxSender("telegram", world.uow, transport, world.clock, shared=True) for _ in range(2)
    ]


async def _write(world: World, *texts: str) -> list[str]:
    out = Outgoing()
    for text in texts:
        out.show("telegram", "77", [Notice(text)], clear=False, track=True)
    async with world.uow() as uow:
        entries = await out.write(uow, world.clock())
        await uow.commit()
    return [e.id for e in entries]


async def test_two_senders_deliver_each_item_once_and_in_order(world: World) -> None:
    transport = MemoryTransport("telegram")
    one, two = _senders(world, transport)
    await _write(world, "first", "second", "third")
    async with world.uow() as uow:
        heads = list(await uow.outbox.due_heads("telegram", world.clock()))
        lane = heads[0].lane
    async with world.uow() as uow:
        items = [e for e in await uow.outbox.due_heads("telegram", world.clock())]
    assert len(items) == 1
    # Both try the head at once; then both flush until nothing is left.
    await asyncio.gather(one.deliver(items), two.deliver(items))
    world.clock.advance(FRESH)  # what is left is anyone's to send
    while await one.flush() + await two.flush():
        pass
    assert [m.text for m in transport.shown["77"]] == ["first", "second", "third"]
    assert one.delivered + two.delivered == 3
    async with world.uow() as uow:
        assert await uow.outbox.screen(lane)  # the screen lists what both sent


async def test_a_claimed_head_waits_for_the_lease(world: World, clock: FrozenClock) -> None:
    (item,) = await _write(world, "only")
    async with world.uow() as uow:
        assert await uow.outbox.claim(item, clock(), clock() + CLAIM_LEASE)
        await uow.commit()
    async with world.uow() as uow:
        assert not await uow.outbox.claim(item, clock(), clock() + CLAIM_LEASE)
        assert not await uow.outbox.due_heads("telegram", clock())
    clock.advance(CLAIM_LEASE + timedelta(seconds=1))  # its sender died: another takes it
    async with world.uow() as uow:
        assert await uow.outbox.claim(item, clock(), clock() + CLAIM_LEASE)


async def test_a_job_round_has_one_holder(db: AsyncEngine, keyring: Keyring) -> None:
    sessions = make_session_factory(db)
    async with SqlUnitOfWork(sessions, keyring) as first:
        assert await first.assignments.try_job("escalate")
        if db.dialect.name == "sqlite":
            return  # one process, and its transaction holds the only write lock
        async with SqlUnitOfWork(sessions, keyring) as second:
            assert not await second.assignments.try_job("escalate")
            assert await second.assignments.try_job("digest")
    async with SqlUnitOfWork(sessions, keyring) as third:
        assert await third.assignments.try_job("escalate")  # released at the end of the first


async def test_the_receiver_role_has_one_holder(db: AsyncEngine) -> None:
    first, second = SessionLock(db, "signal-receiver"), SessionLock(db, "signal-receiver")
    try:
        assert await first.acquire()
        alone = db.dialect.name == "sqlite"
        assert await second.acquire() is alone
        assert await first.check()
        await first.release()
        assert await second.acquire()
        assert await second.check()
    finally:
        await first.release()
        await second.release()


async def test_a_remote_lock_reaches_every_process(db: AsyncEngine) -> None:
    heard = [0, 0]
    stop = asyncio.Event()

    def hearing(index: int) -> Callable[[], None]:
        return lambda: heard.__setitem__(index, heard[index] + 1)

    listeners = [asyncio.create_task(listen(db, "tipline_lock", hearing(i), stop)) for i in (0, 1)]
    try:
        if db.dialect.name == "sqlite":
            await asyncio.wait_for(asyncio.gather(*listeners), 5)  # alone: nobody to tell
            return
        for _ in range(100):  # until both listen (bounded)
            await notify(db, "tipline_lock")
            await asyncio.sleep(0.1)
            if all(heard):
                break
        assert all(heard), heard
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*listeners), 15)


async def test_a_sweep_goes_through_the_chat_lane(world: World, clock: FrozenClock) -> None:
    transport = MemoryTransport("telegram")
    one, two = _senders(world, transport)
    out = Outgoing()
    out.show("telegram", "78", [Notice("receipt")], clear=False, keep=timedelta(minutes=15))
    async with world.uow() as uow:
        entries = await out.write(uow, clock())
        await uow.commit()
    assert await one.deliver(entries) == 1
    assert list(transport.screen["78"].values()) == [Notice("receipt")]
    clock.advance(timedelta(hours=1))
    # The other process sweeps: it has never seen this screen, and must not act on a copy.
    assert await two.sweep() == 1  # one sweep item, delivered in the lane
    assert transport.screen["78"] == {}
    async with world.uow() as uow:
        assert await uow.outbox.due_screens("telegram", clock()) == []
        assert await uow.outbox.depth() == {}
