"""Fault injection: a crash at every transaction boundary and every messenger call of a reporter
turn, a submission with its routing, a lawyer command, the relay and an escalation step.

After each crash the process "restarts" (every in-memory state is dropped: senders, caches,
services) over the same database and the same messenger, and the messenger redelivers what was
in flight, as Telegram (unconfirmed offsets) and the Signal inbox do. Then:
- every question reaches the reporter and the walk finishes;
- exactly one case is stored, and the relayed messages are stored once;
- every message reaches its chat exactly once, except the one message whose delivery the crash
  cut between the messenger taking it and the outbox recording it (a messenger has no way to ask
  "did you get this?"); that one may arrive twice, never more, and nothing else does.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bot.domain.engine import Engine
from bot.domain.messages import Notice, Question, Start
from bot.services.clock import FrozenClock
from bot.services.outbox import OutboxSender, Shown
from storage import migrate
from storage.db import make_engine
from storage.keyring import Keyring
from storage.models import Case, CaseMessage
from storage.numbers import CaseNumbering
from storage.repositories import SqlUnitOfWork
from tests.conftest import START
from tests.helpers import DETAINED_NOW
from tests.world import MemoryTransport, World, last_question, sequential_numbers

CODE = re.compile(r"\b[A-Z2-7]{4}(?:-[A-Z2-7]{4}){3}\b")


class Crash(Exception):
    """The process dies here."""


@dataclass
class Faults:
    """Counts boundaries and crashes at one of them."""

    crash_at: int | None = None
    #: Setting up the lawyer (admin commands at a shell) is not part of what is crashed.
    armed: bool = False
    seen: int = 0
    where: list[str] = field(default_factory=list)
    #: Messages the messenger took in the step that crashed (they may be sent again).
    cut: list[str] = field(default_factory=list)
    step_sent: list[str] = field(default_factory=list)

    def boundary(self, name: str) -> None:
        if not self.armed:
            return
        self.seen += 1
        self.where.append(name)
        if self.crash_at is not None and self.seen == self.crash_at:
            self.crash_at = None
            raise Crash(name)


class FaultyUnitOfWork(SqlUnitOfWork):
    """A unit of work that may crash just before or just after its commit."""

    faults: Faults

    async def commit(self) -> None:
        self.faults.boundary("before commit")
        await super().commit()
        self.faults.boundary("after commit")


@dataclass
class FaultyTransport:
    """A messenger that keeps its state across restarts; the process may die around a call."""

    inner: MemoryTransport
    faults: Faults

    async def send(self, chat: str, messages: Any) -> list[str]:
        self.faults.boundary("before send")
        refs = await self.inner.send(chat, messages)
        self.faults.step_sent.extend(m.text for m in messages)
        self.faults.boundary("after send")
        return refs

    async def edit(self, chat: str, ref: str, messages: Any) -> bool:
        self.faults.boundary("before edit")
        done = await self.inner.edit(chat, ref, messages)
        if done:
            self.faults.step_sent.extend(m.text for m in messages)
        self.faults.boundary("after edit")
        return done

    async def delete(self, chat: str, ref: str) -> None:
        self.faults.boundary("before delete")
        await self.inner.delete(chat, ref)
        self.faults.boundary("after delete")


class Process:
    """A 'tipline run' over one database and one messenger world, restartable."""

    def __init__(self, db: Any, keyring: Keyring, engine: Engine, clock: FrozenClock) -> None:
        self.db, self.keyring, self.engine, self.clock = db, keyring, engine, clock
        self.faults = Faults()
        self.messengers = {c: MemoryTransport(c) for c in ("telegram", "signal", "console")}
        self.restarts = 0
        self.start()

    def start(self) -> None:
        """A fresh process: nothing of the last one survives but the database and messengers."""
        words = iter(["alpha", "bravo", "charlie", "delta"] * 50)
        self.world = World(
            self.db, self.keyring, self.engine, self.clock, choice=lambda o: next(words)
        )
        sessions = self.world.uow().__dict__["_sessions"]
        faults = self.faults

        numbering = CaseNumbering(draw=sequential_numbers())  # the case is #1

        def uow() -> SqlUnitOfWork:
            unit = FaultyUnitOfWork(sessions, self.keyring, numbering=numbering)
            unit.faults = faults
            return unit

        world = self.world
        world.uow = uow
        for service in (world.routing, world.roster, world.inbound, world.casework):
            service._uow = uow  # type: ignore[attr-defined]
        world.transports = self.messengers
        world.outboxes = {
            c: OutboxSender(c, uow, FaultyTransport(t, faults), self.clock)  # type: ignore[arg-type]
            for c, t in self.messengers.items()
        }

    async def step(self, action: Callable[[World], Awaitable[object]]) -> None:
        """Run one step; on a crash restart and let the messenger redeliver it."""
        for _ in range(10):
            self.faults.step_sent = []
            try:
                await action(self.world)
                await self.world.deliver()
                return
            except Crash:
                self.faults.cut.extend(self.faults.step_sent)
                self.restarts += 1
                self.start()
        raise AssertionError("a step kept crashing")


async def scenario(process: Process) -> str:
    """Report (routed to a lawyer), accept, reply, the reporter answers, escalation runs."""
    invite: dict[str, Any] = {}

    async def invite_lawyer(world: World) -> None:
        if not invite:
            invite["id"], invite["code"] = await world.roster.invite(
                name="L", languages=["en"], regions=["all"], on_call=True
            )

    await process.step(invite_lawyer)
    await process.step(
        lambda w: w.say("signal:lawyer", f"/register {invite['code']}", update_id="reg")
    )
    phrase = next(t.split("\n\n")[1] for t in process.world.sent("signal:lawyer") if "phrase" in t)

    async def verify(world: World) -> None:
        lawyer = await world.roster.roster()
        if lawyer[0].status != "verified":
            await world.roster.verify(invite["id"], phrase)

    await process.step(verify)
    process.faults.armed = True
    chat = "telegram:reporter"
    await process.step(lambda w: w.say(chat, event=Start("en"), update_id="start"))
    code = ""
    for answered in range(40):
        shown = process.messengers["telegram"].shown.get("reporter", [])
        receipts = [m.text for m in shown if isinstance(m, Notice) and "code is" in m.text]
        if receipts:
            code = receipts[-1].split("code is:")[1].split()[0]
            break
        question = last_question(shown)
        update = f"a{answered}:{question.step}"
        event = DETAINED_NOW[question.step]
        await process.step(lambda w, e=event, u=update: w.say(chat, event=e, update_id=u))
    assert code, "the walk finished with a receipt"
    await process.step(lambda w: w.say("signal:lawyer", "/accept 1", update_id="acc"))
    await process.step(lambda w: w.say("signal:lawyer", "/reply 1 We are coming", update_id="rep"))
    await process.step(lambda w: w.say("signal:someone", f"reply {code} Thank you", update_id="rr"))
    process.clock.advance(timedelta(hours=3))
    await process.step(lambda w: w.routing.escalate())
    return code


def _plain(text: str) -> str:
    # receipt codes are random in every run
    return CODE.sub("<code>", text)


def questions_asked(shown: list[Shown]) -> list[str]:
    steps: list[str] = []
    for message in shown:
        if isinstance(message, Question) and (not steps or steps[-1] != message.step):
            steps.append(message.step)
    return steps


async def run(tmp_path: Path, keyring: Keyring, engine_: Engine, crash_at: int | None) -> Process:
    template = tmp_path / "template.db"
    if not template.exists():  # migrate once; every run starts from a copy
        engine = make_engine(f"sqlite+aiosqlite:///{template}")
        await migrate.upgrade(engine)
        await engine.dispose()
    path = tmp_path / f"crash{crash_at}.db"
    shutil.copyfile(template, path)
    db = make_engine(f"sqlite+aiosqlite:///{path}")
    process = Process(db, keyring, engine_, FrozenClock(START))
    process.faults.crash_at = crash_at
    try:
        await scenario(process)
        async with process.world.uow() as uow:
            process.cases = (await uow.session.execute(select(func.count(Case.id)))).scalar()  # type: ignore[attr-defined]
            process.relayed = (  # type: ignore[attr-defined]
                await uow.session.execute(select(func.count(CaseMessage.id)))
            ).scalar()
    finally:
        await db.dispose()
    return process


async def test_a_crash_at_any_boundary_loses_nothing_and_doubles_nothing(
    tmp_path: Path, keyring: Keyring, engine_: Engine
) -> None:
    clean = await run(tmp_path, keyring, engine_, None)
    boundaries = clean.faults.seen
    kinds = Counter(clean.faults.where)
    assert kinds["before commit"] > 30 and kinds["before edit"] > 10, kinds
    assert kinds["before send"] > 5 and kinds["before delete"] > 0, kinds
    expected = {
        address: [_plain(m.text) for m in shown]
        for channel, t in clean.messengers.items()
        for address, shown in ((f"{channel}:{c}", s) for c, s in t.shown.items())
    }
    reporter_steps = questions_asked(clean.messengers["telegram"].shown["reporter"])
    assert clean.cases == 1 and clean.relayed == 2  # type: ignore[attr-defined]
    for crash_at in range(1, boundaries + 1):
        process = await run(tmp_path, keyring, engine_, crash_at)
        where = clean.faults.where[crash_at - 1]
        assert process.restarts == 1, (crash_at, where)
        assert process.cases == 1, (crash_at, where)  # type: ignore[attr-defined]
        assert process.relayed == 2, (crash_at, where)  # type: ignore[attr-defined]
        shown = process.messengers["telegram"].shown["reporter"]
        assert questions_asked(shown) == reporter_steps, (crash_at, where)
        for address, texts in expected.items():
            channel, _, chat = address.partition(":")
            got = [_plain(m.text) for m in process.messengers[channel].shown.get(chat, [])]
            extra = Counter(got) - Counter(texts)
            missing = Counter(texts) - Counter(got)
            assert not missing, (crash_at, where, address, missing)
            # only the message the crash cut after the messenger took it may come twice
            cut = {_plain(t) for t in process.faults.cut}
            assert set(extra) <= cut, (crash_at, where, address, extra)
            assert all(n == 1 for n in extra.values()), (crash_at, where, address, extra)
