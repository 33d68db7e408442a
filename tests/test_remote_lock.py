"""A verified admin locks the service from a messenger during a raid; nobody else can."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.domain.engine import Engine
from bot.domain.messages import Start
from bot.services.clock import FrozenClock
from storage.keyring import Keyring
from storage.models import AuditEntry
from tests.world import World

GENERIC = "This command is not available."
LOCKED = "tipline was locked by an admin; unlock it on the server."


@pytest.fixture
async def world(db: AsyncEngine, keyring: Keyring, engine_: Engine, clock: FrozenClock) -> World:
    words = iter(["alpha", "bravo", "charlie", "delta"] * 20)
    return World(db, keyring, engine_, clock, choice=lambda options: next(words))


async def staff(world: World, address: str, *, admin: bool) -> None:
    staff_id, code = await world.roster.invite(
        name="Admin" if admin else "Lawyer",
        languages=["en"],
        regions=["all"],
        role="admin" if admin else "lawyer",
    )
    phrase = (await world.said(address, f"/register {code}")).split("\n\n")[1]
    await world.roster.verify(staff_id, phrase)


@pytest.mark.parametrize("channel", ["telegram", "signal"])
async def test_a_verified_admin_locks_and_every_admin_is_told_first(
    world: World, channel: str
) -> None:
    await staff(world, f"{channel}:admin", admin=True)
    await staff(world, "signal:other-admin", admin=True)
    text = "/lock" if channel == "telegram" else "lock"
    shown = await world.said(f"{channel}:admin", text)
    assert world.locks == 1, "the service was asked to lock"
    # the notice went through the outbox to every admin, before the keys go
    assert world.sent("signal:other-admin")[-1] == LOCKED
    assert LOCKED in shown
    async with world.uow() as uow:
        actions = (await uow.session.execute(select(AuditEntry.action))).scalars().all()  # type: ignore[attr-defined]
    assert "service.lock" in actions


@pytest.mark.parametrize("who", ["reporter", "lawyer", "stranger", "unverified-admin"])
@pytest.mark.parametrize("channel", ["telegram", "signal"])
async def test_anyone_else_gets_the_generic_answer_and_nothing_changes(
    world: World, who: str, channel: str
) -> None:
    address = f"{channel}:{who}"
    if who == "reporter":
        await world.say(address, event=Start("en"))
    if who == "lawyer":
        await staff(world, address, admin=False)
    if who == "unverified-admin":
        _, code = await world.roster.invite(
            name="U", languages=["en"], regions=["all"], role="admin"
        )
        await world.said(address, f"/register {code}")
    shown = await world.said(address, "/lock" if channel == "telegram" else "lock")
    assert shown == GENERIC
    assert world.locks == 0
    unknown = await world.said(address, "/no-such-command")
    assert unknown == shown, "the same answer as any unknown command"
