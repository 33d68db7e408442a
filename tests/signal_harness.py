"""Our Signal channel against the fake signal-cli-rest-api, on a real database."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from bot.channels.signal import SignalChannel
from bot.channels.signal_api import SignalApi
from bot.domain.engine import Engine
from bot.domain.questionnaire import REPORT
from bot.i18n import load_texts
from bot.services.clock import FrozenClock
from bot.services.queues import ChannelQueues
from bot.services.ratelimit import RateLimit
from storage import migrate
from storage.db import make_engine, make_session_factory
from storage.keyring import KeyFile, KeyringFile, KeyVault
from storage.numbers import CaseNumbering
from storage.repositories import SqlUnitOfWork
from tests.conftest import START
from tests.fake_signal import NUMBER, FakeSignalApi
from tests.fake_telegram import until
from tests.world import World, sequential_numbers


class SignalHarness:
    """Starts, crashes and restarts the channel; acts as Signal users."""

    def __init__(self, tmp_path: Path, mode: str = "normal", *, use_inbox: bool = True) -> None:
        self.tmp_path = tmp_path
        self.fake = FakeSignalApi(mode=mode)
        self.mode = mode
        self.clock = FrozenClock(START)
        self.slept: list[float] = []
        self.use_inbox = use_inbox
        self.channel: SignalChannel | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None

    async def start_all(self) -> None:
        self.root = await self.fake.start()
        self.db: AsyncEngine = make_engine(f"sqlite+aiosqlite:///{self.tmp_path / 'tipline.db'}")
        await migrate.upgrade(self.db)
        self.vault = KeyVault.create(
            KeyringFile(self.tmp_path / "keyring"), KeyFile(os.urandom(32)), None, START
        )
        self.sessions = make_session_factory(self.db)
        self._numbering = CaseNumbering(draw=sequential_numbers())
        await self.start_bot()

    def uow(self) -> SqlUnitOfWork:
        # Cases are numbered 1, 2, 3 ... so tests can name them; tipline draws at random.
        return SqlUnitOfWork(
            self.sessions, self.vault.keyring, self.vault, numbering=self._numbering
        )

    async def fake_sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        await asyncio.sleep(0.01)  # let the loop breathe; time itself is the injected clock

    async def start_bot(self, after_store: Any = None) -> None:
        engine = Engine(REPORT, load_texts())
        self.world = World(
            self.db,
            self.vault.keyring,
            engine,
            self.clock,
            limits=RateLimit(limit=1000),
            uow=self.uow,
        )
        self.lawyers = self.world.roster
        self.api = SignalApi(self.root, NUMBER)
        self.channel = SignalChannel(
            api=self.api,
            inbound=self.world.inbound,
            uow=self.uow,
            queues=ChannelQueues(self.uow, self.clock),
            clock=self.clock,
            on_untrusted=self.world.roster.identity_changed_if_staff,
            mode=self.mode,
            sleep=self.fake_sleep,
            use_inbox=self.use_inbox,
            after_store=after_store,
        )
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self.channel.run(self._stop, outbox_every=3600))
        if self.mode == "json-rpc":
            await until(lambda: bool(self.fake.sockets))

    async def stop_bot(self) -> None:
        assert self._stop is not None and self._task is not None
        self._stop.set()
        try:
            await asyncio.wait_for(self._task, 15)
        finally:
            await self.api.aclose()

    async def stop_all(self) -> None:
        if self._task is not None and not self._task.done():
            await self.stop_bot()
        await self.fake.stop()
        await self.db.dispose()

    async def say(
        self, uuid: str, text: str | None, number: str | None = None, **kwargs: Any
    ) -> None:
        """A user sends a message; wait until the bot has handled it."""
        assert self.channel is not None
        channel = self.channel
        before = channel.handled
        await self.fake.deliver(self.fake.envelope(uuid, text, number, **kwargs))
        await until(lambda: channel.handled > before)
