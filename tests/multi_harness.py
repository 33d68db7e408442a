"""Several real ``tipline run`` processes on one PostgreSQL database, Telegram in webhook mode
behind a small round-robin proxy (what Caddy does in deploy/compose.yaml), fed by the fake Bot
API on 127.0.0.1. Used by tests/test_multiprocess.py and bench/bench_scale.py.

The proxy can inject what a real network and a real Bot API do: a delivery sent twice to two
processes at once, and two updates of one chat handed over in the reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import secrets
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.fake_telegram import TOKEN, FakeBotApi
from tests.service_harness import free_port

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class RoundRobin:
    """An HTTP proxy that hands each webhook delivery to the next process in turn."""

    backends: list[int]
    rng: random.Random = field(default_factory=random.Random)
    #: Share of deliveries also sent, at the same moment, to the next process.
    duplicate: float = 0.0
    #: Chats whose next two deliveries are handed over in the reverse order.
    reverse: set[int] = field(default_factory=set)
    port: int = 0
    forwarded: int = 0
    duplicated: int = 0
    reversed: int = 0
    _next: int = 0
    _held: dict[int, tuple[str, bytes, dict[str, str]]] = field(default_factory=dict)
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None

    async def start(self) -> int:
        """Listen on a free port of 127.0.0.1; returns it."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        return self.port

    async def stop(self) -> None:
        """Stop listening."""
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def _pick(self) -> int:
        port = self.backends[self._next % len(self.backends)]
        self._next += 1
        return port

    async def _forward(
        self, port: int, path: str, body: bytes, headers: dict[str, str]
    ) -> web.Response:
        """The backend's answer, passed back whole (it may carry a Bot API call)."""
        assert self._session is not None
        self.forwarded += 1
        for _ in range(50):  # a process still starting: try the next one
            try:
                url = f"http://127.0.0.1:{port}{path}"
                async with self._session.post(url, data=body, headers=headers) as response:
                    answer = await response.read()
                    if response.status < 500:
                        kind = response.headers.get("Content-Type")
                        return web.Response(
                            status=response.status,
                            body=answer,
                            headers={"Content-Type": kind} if kind else None,
                        )
            except aiohttp.ClientError:
                pass
            port = self._pick()
            await asyncio.sleep(0.1)
        return web.Response(status=502)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() in ("content-type", "x-telegram-bot-api-secret-token")
        }
        path = request.path_qs
        chat = _chat_of(body)
        if chat in self.reverse:
            held = self._held.pop(chat, None)
            if held is None:
                # The first of two: kept back until the second has been handed over.
                self._held[chat] = (path, body, headers)
                return web.Response(status=200)
            self.reverse.discard(chat)
            self.reversed += 1
            answer = await self._forward(self._pick(), path, body, headers)
            await self._forward(self._pick(), *held)  # its answer went out when it was held
            return answer
        if self.duplicate and self.rng.random() < self.duplicate:
            self.duplicated += 1
            first, second = self._pick(), self._pick()
            answers = await asyncio.gather(
                self._forward(first, path, body, headers),
                self._forward(second, path, body, headers),
            )
            return min(answers, key=lambda a: a.status)
        return await self._forward(self._pick(), path, body, headers)


def _chat_of(body: bytes) -> int | None:
    try:
        update = json.loads(body)
    except ValueError:
        return None
    for kind in ("message", "edited_message"):
        if kind in update:
            return int(update[kind]["chat"]["id"])
    if "callback_query" in update:
        return int(update["callback_query"]["message"]["chat"]["id"])
    return None


@dataclass
class Fleet:
    """N ``tipline run`` processes sharing one database, one data directory and one keyring."""

    data_dir: Path
    database_url: str
    telegram: FakeBotApi | None
    api_root: str
    processes: int
    extra: dict[str, str] = field(default_factory=dict)
    ports: list[int] = field(default_factory=list)
    procs: list[asyncio.subprocess.Process | None] = field(default_factory=list)
    proxy: RoundRobin | None = None
    path: str = field(default_factory=lambda: "/" + secrets.token_hex(8))
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    def env(self, index: int | None = None) -> dict[str, str]:
        """The environment of a ``tipline`` command (process ``index`` for ``run``)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIPLINE_")}
        path = os.environ.get("PYTHONPATH")
        env.update(
            PYTHONPATH=f"{ROOT}{os.pathsep}{path}" if path else str(ROOT),
            TIPLINE_DATA_DIR=str(self.data_dir),
            TIPLINE_ROOT_KEY_FILE=str(self.data_dir / "root.key"),
            TIPLINE_DATABASE_URL=self.database_url,
            TIPLINE_LOG_LEVEL="INFO",
            **self.extra,
        )
        if self.telegram is not None:
            assert self.proxy is not None
            env.update(
                TIPLINE_TELEGRAM_TOKEN=TOKEN,
                TIPLINE_TELEGRAM_BASE_URL=self.api_root,
                TIPLINE_TELEGRAM_WEBHOOK_URL=f"http://127.0.0.1:{self.proxy.port}{self.path}",
                TIPLINE_TELEGRAM_WEBHOOK_SECRET=self.secret,
                TIPLINE_TELEGRAM_WEBHOOK_LISTEN="127.0.0.1",
            )
        if index is not None:
            env["TIPLINE_TELEGRAM_WEBHOOK_PORT"] = str(self.ports[index])
            env["TIPLINE_CONTROL_SOCKET"] = str(self.data_dir / f"control-{index}.sock")
        return env

    async def cli(self, *args: str, stdin: str = "") -> tuple[int, str, str]:
        """Run ``tipline ARGS``; exit code, standard output and standard error."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.cli",
            *args,
            env=self.env(),
            cwd=self.data_dir.parent,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 120)
        return proc.returncode or 0, out.decode(), err.decode()

    async def start(self, index: int) -> asyncio.subprocess.Process:
        """Start process ``index`` (its output appended to ``tipline-INDEX.log``)."""
        with (self.data_dir.parent / f"tipline-{index}.log").open("ab") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot.cli",
                "run",
                env=self.env(index),
                cwd=self.data_dir.parent,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self.procs[index] = proc
        return proc

    def kill(self, index: int) -> None:
        """SIGKILL process ``index`` and whatever it started."""
        proc = self.procs[index]
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    async def close(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL)."""
        for proc in self.procs:
            if proc is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for index, proc in enumerate(self.procs):
            if proc is None:
                continue
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                self.kill(index)
                await proc.wait()

    def log(self, index: int) -> str:
        """What process ``index`` wrote."""
        path = self.data_dir.parent / f"tipline-{index}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> str:
        """Everything the processes wrote."""
        return "\n".join(
            p.read_text(errors="replace")
            for p in sorted(self.data_dir.parent.glob("tipline-*.log"))
        )


async def reset_database(url: str) -> None:
    """An empty public schema (the test database is shared between test runs)."""
    from sqlalchemy import text

    from storage.db import make_engine

    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("DROP SCHEMA public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def fleet(
    tmp_path: Path,
    database_url: str,
    processes: int,
    *,
    rng: random.Random | None = None,
    extra: dict[str, str] | None = None,
    telegram: FakeBotApi | None = None,
    with_telegram: bool = True,
) -> AsyncIterator[Fleet]:
    """The fake Bot API (unless ``with_telegram`` is False: ``extra`` configures another
    messenger), a proxy, ``tipline init --dev`` and N ``tipline run`` processes."""
    await reset_database(database_url)
    fake = (telegram or FakeBotApi()) if with_telegram else None
    root = await fake.start() if fake is not None else ""
    ports = [free_port() for _ in range(processes)]
    proxy = RoundRobin(ports, rng or random.Random(0))
    await proxy.start()
    data_dir = tmp_path / "var"
    crew = Fleet(
        data_dir, database_url, fake, root, processes, extra or {}, ports, [None] * processes
    )
    crew.proxy = proxy
    try:
        code, out, err = await crew.cli("init", "--dev")
        assert code == 0, f"tipline init failed: {out}{err}"
        for index in range(processes):
            await crew.start(index)
        yield crew
    finally:
        await crew.close()
        await proxy.stop()
        if fake is not None:
            await fake.stop()


def ready(fake: FakeBotApi, processes: int) -> bool:
    """Whether every process has set its webhook (each does once it is up)."""
    return sum(1 for method, _ in fake.calls if method == "setWebhook") >= processes


def payload(data: dict[str, Any]) -> str:
    """JSON text (for logs of a failure)."""
    return json.dumps(data, sort_keys=True)
