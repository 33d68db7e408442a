"""Issue 12, screen deadlines: every message the bot leaves on a reporter's screen has a deadline,
kept encrypted; a sweep deletes what is due (remote delete on Signal), inside Telegram's 48 hours.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.domain.engine import Engine
from bot.domain.messages import Notice
from bot.services.clock import FrozenClock
from bot.services.outbox import MAX_KEEP, OnScreen, Outgoing
from storage.keyring import Keyring
from storage.models import Screen
from tests.conftest import START
from tests.fake_signal import load_swagger
from tests.signal_harness import SignalHarness
from tests.test_store_contract import Factory, uow  # noqa: F401  (the fixture over every backend)
from tests.world import World

SECRET = "CHAT-ID-7781-screen"


async def test_due_screens_are_found_by_hour_and_hold_the_chat_encrypted(
    uow: Factory,  # noqa: F811
) -> None:
    hour = START.replace(minute=0)
    async with uow() as u:
        await u.outbox.set_screen("lane-a", ["1@0@0@"], START, channel="telegram", chat="11")
        await u.outbox.set_screen(
            "lane-b", ["2@0@0@"], START, channel="telegram", chat="22", check_at=hour
        )
        await u.outbox.set_screen(
            "lane-c", ["3@0@0@"], START, channel="signal", chat="33", check_at=hour
        )
        await u.outbox.set_screen(
            "lane-d",
            ["4@0@0@"],
            START,
            channel="telegram",
            chat="44",
            check_at=hour + timedelta(hours=1),
        )
        await u.commit()
    async with uow() as u:
        due = await u.outbox.due_screens("telegram", START)
        assert [(s.lane, s.chat, s.refs) for s in due] == [("lane-b", "22", ("2@0@0@",))]
        later = await u.outbox.due_screens("telegram", hour + timedelta(hours=1))
        assert [s.chat for s in later] == ["22", "44"]
        await u.outbox.set_screen("lane-b", [], START)
        await u.commit()
    async with uow() as u:
        assert [s.chat for s in await u.outbox.due_screens("telegram", START)] == []


def test_a_screen_entry_keeps_its_deadline_and_reads_old_entries() -> None:
    entry = OnScreen("17", 1000, 1900, "receipt")
    assert OnScreen.decode(entry.encode()) == entry
    old = OnScreen.decode("17@1000")  # written before deadlines: the latest one
    assert old == OnScreen("17", 1000, 1000 + int(MAX_KEEP.total_seconds()), "")


@pytest.fixture
async def world(db: AsyncEngine, keyring: Keyring, engine_: Engine, clock: FrozenClock) -> World:
    return World(db, keyring, engine_, clock)


async def show(world: World, chat: str, text: str, **kwargs: object) -> None:
    out = Outgoing()
    out.show("telegram", chat, [Notice(text)], clear=False, **kwargs)  # type: ignore[arg-type]
    async with world.uow() as u:
        await out.write(u, world.clock())
        await u.commit()
    await world.deliver()


async def test_a_message_is_deleted_when_its_deadline_comes_and_not_before(
    world: World, db: AsyncEngine
) -> None:
    sender = world.outboxes["telegram"]
    await show(world, SECRET, "receipt", keep=timedelta(minutes=15), tag="receipt")
    await show(world, SECRET, "help", keep=timedelta(minutes=40))
    assert len(world.on_screen(f"telegram:{SECRET}")) == 2
    async with db.connect() as conn:
        row = (await conn.execute(select(Screen))).one()
    assert SECRET.encode() not in row.refs_ct, "the chat id is kept encrypted"
    assert row.check_at == START.replace(minute=0), "the plaintext hint is only the hour"
    world.clock.advance(timedelta(minutes=14, seconds=59))
    assert await sender.sweep() == 0
    assert len(world.on_screen(f"telegram:{SECRET}")) == 2
    world.clock.advance(timedelta(seconds=1))
    assert await sender.sweep() == 1
    assert [m.text for m in world.on_screen(f"telegram:{SECRET}")] == ["help"]
    world.clock.advance(timedelta(minutes=25))
    assert await sender.sweep() == 1
    assert world.on_screen(f"telegram:{SECRET}") == []
    async with db.connect() as conn:
        assert (await conn.execute(select(Screen))).first() is None, "an empty screen is forgotten"


async def test_no_message_outlives_telegrams_delete_window(world: World) -> None:
    await show(world, "42", "no deadline given")
    world.clock.advance(MAX_KEEP - timedelta(seconds=1))
    assert await world.outboxes["telegram"].sweep() == 0
    world.clock.advance(timedelta(seconds=1))
    assert await world.outboxes["telegram"].sweep() == 1
    assert world.on_screen("telegram:42") == []
    assert timedelta(hours=48) > MAX_KEEP


async def test_dismiss_deletes_only_the_messages_with_that_tag(world: World) -> None:
    await show(world, "42", "receipt", tag="receipt")
    await show(world, "42", "other")
    out = Outgoing()
    out.dismiss("telegram", "42", ["receipt"])
    async with world.uow() as u:
        await out.write(u, world.clock())
        await u.commit()
    await world.deliver()
    assert [m.text for m in world.on_screen("telegram:42")] == ["other"]


@pytest.fixture
async def sig(tmp_path: Path) -> AsyncIterator[SignalHarness]:
    if load_swagger() is None:
        pytest.skip("../shared/contracts/signal-cli-rest-api.swagger.json is absent")
    harness = SignalHarness(tmp_path)
    await harness.start_all()
    yield harness
    await harness.stop_all()


async def test_signal_deletes_with_a_swagger_valid_remote_delete(sig: SignalHarness) -> None:
    uuid = "0f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"
    out = Outgoing()
    out.show("signal", uuid, [Notice("your code is ...")], clear=False, keep=timedelta(minutes=15))
    async with sig.uow() as u:
        entries = await out.write(u, sig.clock())
        await u.commit()
    assert sig.channel is not None
    await sig.channel.sender.deliver(entries)
    assert sig.fake.visible(uuid) == ["your code is ..."]
    sig.clock.advance(timedelta(minutes=15))
    assert await sig.channel.sender.sweep() == 1
    sent = next(m for m in sig.fake.sent if m["to"] == uuid)
    assert sig.fake.remote_deleted == [(uuid, sent["timestamp"])]
    assert sig.fake.visible(uuid) == []
    assert sig.fake.invalid == [], "the remote delete follows the swagger schema"


async def test_the_sweep_pages_through_every_screen_of_the_hour(world: World) -> None:
    # screens due later in the hour come first by lane order in some pages: none may block
    for n in range(7):
        keep = timedelta(minutes=15 if n % 2 else 25)  # all due within the same hour
        await show(world, f"chat-{n}", f"receipt {n}", keep=keep)
    world.clock.advance(timedelta(minutes=15))
    assert await world.outboxes["telegram"].sweep(limit=2) == 3
    left = sorted(m.text for n in range(7) for m in world.on_screen(f"telegram:chat-{n}"))
    assert left == ["receipt 0", "receipt 2", "receipt 4", "receipt 6"]
