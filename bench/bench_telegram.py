"""Answers per second through the fake Bot API: tipline's channel against a bare PTB echo bot.

Both bots run on the same fake server in one run. Simulated reporters answer in rounds (one
answer per reporter per round, so each chat stays in order). tipline makes about three API calls
per answer (delete the answer, delete the old question, send the next) plus two encrypted
transactions; the echo bot makes one call. Then the bot's memory per open conversation is
measured with tracemalloc (bot, storage and PTB frames only), after a few answers and again
after more answers: state lives in the database, so it must not grow.

Run: python bench/bench_telegram.py [--reporters 50 --rounds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import httpx
from telegram import Update
from telegram.ext import ApplicationBuilder, ContextTypes, TypeHandler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fake_telegram import TOKEN, FakeBotApi, until
from tests.telegram_harness import TelegramHarness

#: One round per answer; every reporter gives the same answers.
ROUNDS = [
    ("text", "/start"),
    ("press", "c:agree"),
    ("press", "c:myself"),
    ("press", "c:released"),
    ("press", "c:today"),
    ("press", "c:baku"),
    ("text", "Nasimi"),
    ("press", "t:detained"),
    ("press", "t:beaten"),
    ("press", "d"),
    ("press", "c:no"),
    ("press", "c:no"),
]


class RemoteFake:
    """The fake Bot API in its own process, so its work is not counted as the bot's."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        root = Path(__file__).resolve().parents[1]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fake_telegram", str(port)],
            cwd=root,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        self.proc.stdout.readline()  # "ready"
        self.root = f"http://127.0.0.1:{port}"
        self.client = httpx.AsyncClient(timeout=60)
        return self.root

    async def act(self, chats: list[int], kind: str, value: str) -> None:
        if kind == "text":
            await self.client.post(
                f"{self.root}/control/text", json={"chats": chats, "text": value}
            )
        else:
            await self.client.post(
                f"{self.root}/control/press", json={"chats": chats, "data": value}
            )

    async def stop(self) -> None:
        await self.client.aclose()
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait()


async def send_round(fake: FakeBotApi, chats: list[int], kind: str, value: str) -> None:
    for chat in chats:
        if kind == "text":
            await fake.text(chat, value)
        else:
            await fake.press(chat, fake.last_question(chat).message_id, value)


async def ours(reporters: int, rounds: int, database_url: str | None = None) -> tuple[float, int]:
    remote = RemoteFake()
    with tempfile.TemporaryDirectory() as tmp:
        harness = TelegramHarness(Path(tmp), database_url=database_url)
        harness.fake.start = _remote_start(remote)  # type: ignore[method-assign]
        harness.fake.stop = remote.stop  # type: ignore[method-assign]
        harness.fake.calls.append(("getUpdates", {}))  # polling starts in the other process
        await harness.start_all()
        chats = [900_000 + i for i in range(reporters)]
        channel = harness.channel
        assert channel is not None
        began = time.perf_counter()
        for kind, value in ROUNDS[:rounds]:
            target = channel.handled + reporters
            await remote.act(chats, kind, value)
            await until(lambda t=target: channel.handled >= t, limit=600)
        elapsed = time.perf_counter() - began
        assert channel.failed == 0
        await harness.stop_all()
    return elapsed, reporters * rounds


def _remote_start(remote: RemoteFake) -> Any:
    async def start() -> str:
        return remote.start()

    return start


async def echo(reporters: int, rounds: int) -> tuple[float, int]:
    fake = RemoteFake()
    root = fake.start()
    handled = 0

    async def reply(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        nonlocal handled
        chat = update.effective_chat
        if chat is not None:
            query = update.callback_query
            text = update.message.text if update.message else (query.data if query else "")
            await context.bot.send_message(chat.id, text or ".", reply_markup=_markup())
        handled += 1

    app = ApplicationBuilder().token(TOKEN).base_url(f"{root}/bot").build()
    app.add_handler(TypeHandler(Update, reply))
    stop = asyncio.Event()

    async def run() -> None:
        async with app:
            await app.start()
            assert app.updater is not None
            await app.updater.start_polling(timeout=1)
            await stop.wait()
            await app.updater.stop()
            await app.stop()

    task = asyncio.create_task(run())
    chats = [900_000 + i for i in range(reporters)]
    began = time.perf_counter()
    for kind, value in ROUNDS[:rounds]:
        target = handled + reporters
        await fake.act(chats, kind, value)
        await until(lambda t=target: handled >= t, limit=600)
    elapsed = time.perf_counter() - began
    stop.set()
    await task
    await fake.stop()
    return elapsed, reporters * rounds


def _markup() -> Any:
    from telegram import InlineKeyboardButton, InlineKeyboardMarkup

    return InlineKeyboardMarkup([[InlineKeyboardButton("ok", callback_data="c:agree")]])


def _traced(snapshot: tracemalloc.Snapshot) -> int:
    keep = [
        tracemalloc.Filter(True, "*/bot/*"),
        tracemalloc.Filter(True, "*/storage/*"),
        tracemalloc.Filter(True, "*/telegram/*"),
        tracemalloc.Filter(True, "*/sqlalchemy/*"),
    ]
    return sum(stat.size for stat in snapshot.filter_traces(keep).statistics("filename"))


async def memory(reporters: int) -> tuple[float, float]:
    """Bytes per open conversation after 3 answers, and growth per conversation by answer 10."""
    with tempfile.TemporaryDirectory() as tmp:
        harness = TelegramHarness(Path(tmp))
        await harness.start_all()
        channel = harness.channel
        assert channel is not None
        chats = [800_000 + i for i in range(reporters)]
        tracemalloc.start()
        gc.collect()  # count live state only, not garbage waiting for the cycle collector
        base = _traced(tracemalloc.take_snapshot())
        checkpoints = []
        for number, (kind, value) in enumerate(ROUNDS[:10], start=1):
            target = channel.handled + reporters
            await send_round(harness.fake, chats, kind, value)
            await until(lambda t=target: channel.handled >= t, limit=600)
            if number in (3, 10):
                gc.collect()
                checkpoints.append(_traced(tracemalloc.take_snapshot()))
        tracemalloc.stop()
        await harness.stop_all()
    per_conversation = (checkpoints[0] - base) / reporters
    growth = (checkpoints[1] - checkpoints[0]) / reporters
    return per_conversation, growth


async def main(reporters: int, rounds: int, database_url: str | None) -> None:
    t_echo, n_echo = await echo(reporters, rounds)
    t_ours, n_ours = await ours(reporters, rounds, database_url)
    rate_echo, rate_ours = n_echo / t_echo, n_ours / t_ours
    ratio = rate_ours / rate_echo
    print(f"reporters x rounds:        {reporters} x {rounds}")
    print(f"database:                  {'PostgreSQL' if database_url else 'SQLite (default)'}")
    print(f"bare PTB echo bot:         {rate_echo:.1f} answers/s")
    print(f"tipline Telegram channel:  {rate_ours:.1f} answers/s")
    print(
        f"ratio ours / echo:         {ratio:.2f} (target >= 0.33) "
        f"{'OK' if ratio >= 1 / 3 else 'UNDER'}"
    )
    per, growth = await memory(reporters)
    print(f"memory per open conversation (after 3 answers): {per / 1024:.1f} KiB")
    print(f"growth per conversation from answer 3 to 10:     {growth / 1024:.1f} KiB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reporters", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=len(ROUNDS))
    parser.add_argument(
        "--database-url", default=None, help="an EMPTY PostgreSQL database (it is reset)"
    )
    args = parser.parse_args()
    asyncio.run(main(args.reporters, min(args.rounds, len(ROUNDS)), args.database_url))
