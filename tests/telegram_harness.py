"""A real PTB application (our Telegram channel) against the fake Bot API, on a real database."""

from __future__ import annotations

import asyncio
import io
import os
import socket
import struct
import zlib
from pathlib import Path
from typing import Any

from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.channels.telegram import TelegramChannel, WebhookConfig
from bot.domain.engine import Engine
from bot.domain.questionnaire import REPORT
from bot.i18n import load_texts
from bot.services.clock import FrozenClock
from bot.services.queues import ChannelQueues
from bot.services.ratelimit import RateLimit
from storage import migrate
from storage.db import make_engine, make_session_factory
from storage.keyring import KeyFile, KeyringFile, KeyVault
from storage.models import Case
from storage.numbers import CaseNumbering
from storage.repositories import SqlUnitOfWork
from tests.conftest import START
from tests.fake_telegram import TOKEN, FakeBotApi, until
from tests.world import World, sequential_numbers


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


class TelegramHarness:
    """Starts and restarts the channel; drives a reporter through the fake server."""

    def __init__(
        self, tmp_path: Path, *, rate_limit: int = 1000, database_url: str | None = None
    ) -> None:
        self.database_url = database_url
        self.tmp_path = tmp_path
        self.fake = FakeBotApi()
        self.clock = FrozenClock(START)
        self.slept: list[float] = []
        self.rate_limit = rate_limit
        self.channel: TelegramChannel | None = None
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    async def start_all(self, webhook: WebhookConfig | None = None) -> None:
        self.root = await self.fake.start()
        self.db_path = self.tmp_path / "tipline.db"
        url = self.database_url or f"sqlite+aiosqlite:///{self.db_path}"
        self.db: AsyncEngine = make_engine(url)
        if self.database_url:  # a shared PostgreSQL: start from an empty schema
            from tests.conftest import reset_postgres

            await reset_postgres(self.db)
        await migrate.upgrade(self.db)
        self.vault = KeyVault.create(
            KeyringFile(self.tmp_path / "keyring"), KeyFile(os.urandom(32)), None, START
        )
        self.sessions = make_session_factory(self.db)
        self._numbering = CaseNumbering(draw=sequential_numbers())
        await self.start_bot(webhook)

    def uow(self) -> SqlUnitOfWork:
        # Cases are numbered 1, 2, 3 ... so tests can name them; tipline draws at random.
        return SqlUnitOfWork(
            self.sessions, self.vault.keyring, self.vault, numbering=self._numbering
        )

    async def fake_sleep(self, seconds: float) -> None:
        self.slept.append(seconds)

    async def start_bot(self, webhook: WebhookConfig | None = None) -> None:
        engine = Engine(REPORT, load_texts())
        self.world = World(
            self.db,
            self.vault.keyring,
            engine,
            self.clock,
            limits=RateLimit(limit=self.rate_limit),
            uow=self.uow,
        )
        self.lawyers = self.world.roster
        self.channel = TelegramChannel(
            token=TOKEN,
            inbound=self.world.inbound,
            uow=self.uow,
            clock=self.clock,
            inbox=ChannelQueues(self.uow, self.clock, "telegram"),
            base_url=self.root,
            webhook=webhook,
            sleep=self.fake_sleep,
            poll_timeout=1,
        )
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self.channel.run(self._stop))
        if webhook is None:
            await until(lambda: any(m == "getUpdates" for m, _ in self.fake.calls))
        else:
            # setWebhook may come before the local server listens: wait for both.
            await until(lambda: self.fake.webhook_url is not None and _listening(webhook.port))

    async def stop_bot(self) -> None:
        assert self._stop is not None and self._task is not None
        self._stop.set()
        self.fake._new_update.set()  # release a pending long poll
        await asyncio.wait_for(self._task, 15)

    async def stop_all(self) -> None:
        if self._task is not None and not self._task.done():
            await self.stop_bot()
        await self.fake.stop()
        await self.db.dispose()

    # ---- driving a reporter --------------------------------------------------------------

    async def act(self, coro: Any) -> dict[str, Any]:
        """Run one user action and wait until the bot has fully handled it."""
        assert self.channel is not None
        before = self.channel.handled
        update: dict[str, Any] = await coro
        channel = self.channel
        await until(lambda: channel.handled > before)
        return update

    async def text(self, chat: int, text: str, language: str | None = "en") -> dict[str, Any]:
        return await self.act(self.fake.text(chat, text, language))

    async def press(self, chat: int, data: str) -> dict[str, Any]:
        question = self.fake.last_question(chat)
        return await self.act(self.fake.press(chat, question.message_id, data))

    async def cases(self) -> int:
        async with self.db.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(Case))).scalar_one())

    async def draft(self, chat: int) -> dict[str, Any] | None:
        async with self.uow() as u:
            return await u.drafts.load("telegram", str(chat), self.clock())


#: Button presses and texts for a whole report, by the step asked ({canary} goes into texts).
def full_report(canary: str) -> list[tuple[str, str]]:
    return [
        ("text", "/start"),
        ("press", "c:agree"),
        ("press", "c:myself"),
        ("press", "c:detained_now"),
        ("text", f"Police station 2 {canary}"),
        ("press", "c:under_3h"),
        ("press", "c:baku"),
        ("text", f"Nasimi {canary}"),
        ("press", "t:detained"),
        ("press", "t:beaten"),
        ("press", "d"),
        ("press", "c:no"),
        ("press", "c:no"),
        ("press", "c:urgently"),
        ("text", f"They took everyone {canary}"),
    ]


ENDING = [("press", "d"), ("press", "c:code"), ("press", "c:submit")]


def jpeg_with_gps(marker: str) -> bytes:
    """A small JPEG whose EXIF holds GPS coordinates and a marker string."""
    image = Image.new("RGB", (64, 48), (200, 30, 30))
    exif = Image.Exif()
    exif[0x010E] = f"description {marker}"  # ImageDescription
    gps = exif.get_ifd(0x8825)
    gps.update({1: "N", 2: (40.0, 24.0, 0.0), 3: "E", 4: (49.0, 52.0, 0.0)})
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif)
    return out.getvalue()


def png_bomb(width: int = 60_000, height: int = 60_000) -> bytes:
    """A tiny PNG that claims billions of pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


#: An ELF executable's first bytes, sent as "photo.jpg".
EXECUTABLE = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8 + b"\x02\x00\x3e\x00" + os.urandom(200)
