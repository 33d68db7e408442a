"""An unreachable messenger API: one warning when it starts, one line when it ends, no traceback.

The line to each fake runs through a relay (tests/netswitch.py) that the tests cut and mend.
The issue's outage lasts 30 s; PTB's polling loop sleeps on the wall clock between attempts
(1 s, then 1.5 times more each time), so the Telegram test cuts the line for three failed polls
(about 3 s) instead: what it shows does not depend on how long the outage lasts.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from bot.logs import setup_logging
from bot.outage import Outage
from tests.fake_telegram import until
from tests.netswitch import NetSwitch
from tests.signal_harness import SignalHarness
from tests.telegram_harness import TelegramHarness

CHAT = 5550077
SENDER = str(uuid.UUID(int=0x5EED))


class Ticks:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def service_log() -> Iterator[None]:
    """Removes the service's log handler that a test installs with ``setup_logging``.

    (Installed in the test body: capsys gives each test phase its own stderr.)
    """
    root = logging.getLogger()
    level = root.level
    yield
    root.handlers[:] = [h for h in root.handlers if h.get_name() != "tipline"]
    root.setLevel(level)


# ---- the helper itself -----------------------------------------------------------------------


def test_one_line_when_an_outage_starts_and_one_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ticks = Ticks()
    outage = Outage("example API", clock=ticks)
    caplog.set_level(logging.INFO, logger="bot.outage")
    outage.answered()  # all well: nothing to say
    assert not caplog.records
    for _ in range(50):
        try:
            raise OSError("connect to https://api.example/bot123:secret failed")
        except OSError as low:
            try:
                raise RuntimeError("wrapped") from low
            except RuntimeError as exc:
                outage.failed(exc)
        ticks.now += 1
    assert outage.down and outage.failures == 50
    outage.answered()
    outage.answered()
    assert not outage.down and outage.failures == 0
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "example API failing (OSError); retrying quietly until it works again"),
        ("WARNING", "example API working again after 50 s (50 failed attempts)"),
    ]
    assert all(r.exc_info is None and r.stack_info is None for r in caplog.records)
    # A second outage is a new pair of lines.
    outage.failed("HTTP 502")
    outage.answered()
    assert [r.getMessage() for r in caplog.records[2:]] == [
        "example API failing (HTTP 502); retrying quietly until it works again",
        "example API working again after 0 s (1 failed attempts)",
    ]


# ---- Telegram: the polling loop --------------------------------------------------------------


H = TypeVar("H", TelegramHarness, SignalHarness)


@contextlib.asynccontextmanager
async def switched(harness: H) -> AsyncIterator[tuple[H, NetSwitch]]:
    """The harness running, with a switch between it and its fake messenger."""
    switch = NetSwitch()
    switch.in_front_of(harness.fake)
    await harness.start_all()
    try:
        yield harness, switch
    finally:
        await harness.stop_all()
        await switch.stop()


@pytest.fixture
async def tg(tmp_path: Path) -> AsyncIterator[tuple[TelegramHarness, NetSwitch]]:
    async with switched(TelegramHarness(tmp_path)) as running:
        yield running


async def test_telegram_outage_leaves_two_lines_and_the_conversation_resumes(
    tg: tuple[TelegramHarness, NetSwitch], service_log: None, capsys: pytest.CaptureFixture[str]
) -> None:
    harness, switch = tg
    await harness.text(CHAT, "/start")
    await harness.press(CHAT, "c:agree")
    channel = harness.channel
    assert channel is not None
    setup_logging("INFO")

    await switch.cut()
    await until(lambda: channel.outage.failures >= 3, limit=20)
    # The reporter answers during the outage: Telegram keeps the update until the bot is back.
    handled = channel.handled
    question = harness.fake.last_question(CHAT)
    assert "c:myself" in harness.fake.buttons(CHAT).values()
    await harness.fake.press(CHAT, question.message_id, "c:myself")
    await switch.mend()
    await until(lambda: not channel.outage.down, limit=20)
    await until(lambda: channel.handled > handled)

    # The next question (what is the situation now) replaced the one answered.
    assert "c:detained_now" in harness.fake.buttons(CHAT).values()
    assert channel.failed == 0
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 2, err
    assert " WARNING bot.outage: telegram polling failing (" in lines[0]
    assert " WARNING bot.outage: telegram polling working again after " in lines[1]
    assert "Traceback" not in err
    # The conversation goes on as before.
    asked = harness.fake.last_question(CHAT).text
    await harness.press(CHAT, "c:detained_now")
    assert harness.fake.last_question(CHAT).text.startswith("Where is the person held")
    assert asked != harness.fake.last_question(CHAT).text
    assert capsys.readouterr().err == ""


# ---- Signal: the receive loop ----------------------------------------------------------------


@pytest.fixture
async def sig(tmp_path: Path) -> AsyncIterator[tuple[SignalHarness, NetSwitch]]:
    async with switched(SignalHarness(tmp_path)) as running:
        yield running


async def test_signal_outage_leaves_two_lines_and_messages_are_answered_after(
    sig: tuple[SignalHarness, NetSwitch], service_log: None, capsys: pytest.CaptureFixture[str]
) -> None:
    harness, switch = sig
    channel = harness.channel
    assert channel is not None
    await harness.say(SENDER, "start")
    answered = len(harness.fake.to(SENDER))
    assert answered
    setup_logging("INFO")

    await switch.cut()
    # The receive loop backs off on the injected sleep: many failed attempts, quickly.
    await until(lambda: channel.outage.failures >= 10, limit=20)
    # A message reaches signal-cli while tipline cannot: it waits there.
    handled = channel.handled
    await harness.fake.deliver(harness.fake.envelope(SENDER, "1"))
    await switch.mend()
    await until(lambda: channel.handled > handled, limit=20)
    await until(lambda: len(harness.fake.to(SENDER)) > answered)
    await until(lambda: not channel.outage.down)

    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 2, err
    assert " WARNING bot.outage: signal receive failing (" in lines[0]
    assert " WARNING bot.outage: signal receive working again after " in lines[1]
    assert "Traceback" not in err
    assert SENDER not in err
