"""A locked-start ``tipline run`` in this process (the Supervisor) or in a subprocess, and a pty.

The instance is made with a passphrase and the cheap Argon2id test profile, then started with no
key source at all, as in production: it waits on its control socket for ``tipline unlock``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import select
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bot.config import Settings
from bot.control import request
from bot.runtime import initialise
from bot.services.clock import FrozenClock
from bot.supervisor import Supervisor
from tests.conftest import START
from tests.fake_telegram import until

#: Strong enough for zxcvbn's top score; typed into ``tipline unlock`` through a pty.
PASSPHRASE = "lantern quietly orbit saffron meadow ninety"
CHEAP_ARGON2 = {
    "TIPLINE_ARGON2_MEMORY_KIB": "64",
    "TIPLINE_ARGON2_ITERATIONS": "1",
    "TIPLINE_ARGON2_LANES": "1",
    "TIPLINE_PROFILE": "test",
}
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def settings_for(tmp_path: Path, **values: Any) -> Settings:
    """Settings of a production-like instance: no key source, cheap Argon2id (test profile)."""
    base: dict[str, Any] = {
        "data_dir": tmp_path / "var",
        "argon2_memory_kib": 64,
        "argon2_iterations": 1,
        "argon2_lanes": 1,
        "profile": "test",
        "escalation_interval_seconds": 3600,
    }
    return Settings(**(base | values))


async def make_instance(settings: Settings) -> None:
    """``tipline init`` with the passphrase (which is then nowhere on the disk)."""
    with_key = settings.model_copy(update={"passphrase": SecretStr(PASSPHRASE)})
    assert await initialise(with_key, dev=False) == "initialised"


class Monotonic:
    """A monotonic clock that moves only when the test moves it (the unlock throttle)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def supervised(
    settings: Settings, *, monotonic: Monotonic | None = None, lock_grace: float = 5.0
) -> AsyncIterator[Supervisor]:
    """A running Supervisor (locked); stopped, and its keys dropped, on the way out."""
    supervisor = Supervisor(
        settings,
        clock=FrozenClock(START),
        monotonic=monotonic or time.monotonic,
        lock_grace=lock_grace,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(supervisor.run(stop))
    await until(lambda: supervisor.control.listening or task.done())
    if task.done():
        await task  # raises what stopped it
    try:
        yield supervisor
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def ask(settings: Settings, op: str, **fields: str) -> dict[str, Any]:
    """One control request, as ``tipline lock``, ``unlock`` and ``status`` send it."""
    return await request(settings.effective_control_socket, {"op": op, **fields})


def cli_env(tmp_path: Path, **values: str) -> dict[str, str]:
    """The environment of a ``tipline`` subprocess for this instance (no key source)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIPLINE_")}
    env.update(
        TIPLINE_DATA_DIR=str(tmp_path / "var"),
        TIPLINE_LOG_LEVEL="INFO",
        PYTHONPATH=str(ROOT),
        **CHEAP_ARGON2,
        **values,
    )
    return env


async def cli(
    env: dict[str, str], *args: str, stdin: str = "", cwd: Path | None = None
) -> tuple[int, str, str]:
    """Run ``tipline ARGS`` in a subprocess without blocking the loop (a service may be in it)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        *args,
        env=env,
        cwd=cwd,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def one_line_error(result: tuple[int, str, str], fragment: str) -> None:
    """A failure is one ``tipline:`` line on stderr, a non-zero exit and no traceback."""
    code, out, err = result
    assert code != 0, (out, err)
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.startswith("tipline:")]
    assert len(lines) == 1, err
    assert fragment in lines[0], lines[0]


def _pty_session(
    argv: Sequence[str], env: dict[str, str], typed: Sequence[tuple[str, str]], cwd: Path
) -> tuple[int, str]:
    """Run argv on a new pseudo-terminal (its controlling tty); answer each prompt as typed."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec at once
        os.chdir(cwd)
        os.execve(argv[0], list(argv), env)
    output = b""
    pending = list(typed)
    deadline = time.monotonic() + 120
    status = None
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:  # EIO: the child closed the terminal
                    chunk = b""
                if not chunk:
                    break
                output += chunk
            if pending and pending[0][0].encode() in output:
                prompt, text = pending.pop(0)
                output = output.replace(prompt.encode(), f"<{prompt.strip()}>".encode(), 1)
                os.write(fd, text.encode() + b"\r")
        _, status = os.waitpid(pid, 0)
    finally:
        if status is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status) if status is not None else -9, output.decode(
        errors="replace"
    )


async def in_pty(
    env: dict[str, str], *args: str, typed: Sequence[tuple[str, str]], cwd: Path = ROOT
) -> tuple[int, str]:
    """``tipline ARGS`` on a terminal, a person typing at each prompt (in a thread)."""
    argv = [sys.executable, "-m", "bot.cli", *args]
    return await asyncio.to_thread(_pty_session, argv, env, typed, cwd)


async def settle(fake: Any, quiet: float = 0.15, limit: float = 30.0) -> None:
    """Wait until the bot has made no call to the fake Bot API for ``quiet`` seconds."""
    deadline = time.monotonic() + limit
    seen, since = len(fake.calls), time.monotonic()
    while time.monotonic() - since < quiet:
        if time.monotonic() > deadline:
            raise TimeoutError("the bot kept calling")
        await asyncio.sleep(0.02)
        if len(fake.calls) != seen:
            seen, since = len(fake.calls), time.monotonic()


async def tg_play(fake: Any, chat: int, steps: Sequence[tuple[str, str]]) -> None:
    """A person in a Telegram chat, one step at a time, each answered before the next."""
    for kind, value in steps:
        before = (len(fake.sent), fake.edits)
        if kind == "text":
            await fake.text(chat, value)
        else:
            await fake.press(chat, fake.last_question(chat).message_id, value)
        await until(lambda then=before: (len(fake.sent), fake.edits) != then, limit=30)
        await settle(fake)
