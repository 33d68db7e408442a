"""Issue 12: nothing on the reporter's phone. After a report the chat ends empty (the receipt goes
once written down, or on time), and a lawyer's message is a notice without content, read once,
deleted on Done or on time, and deleted from the server a day after it was first shown.

Telegram through the fake Bot API, Signal through the fake signal-cli-rest-api; time is the
harnesses' injected clock.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from storage.maintenance import Maintenance
from storage.models import CaseMessage
from tests.fake_signal import load_swagger
from tests.signal_harness import SignalHarness
from tests.telegram_harness import ENDING, TelegramHarness, full_report
from tests.test_signal import REPORT

CHAT = 5551201
LAWYER = 5551202
SECOND = 5551203
SECRET = "Hearing moved to Thursday, room 12, ask for Farid"
CODE = re.compile(r"\b[A-Z2-7]{4}(?:-[A-Z2-7]{4}){3}\b")
NEW_CASE = re.compile(r"New case #(\d+)")
#: The questionnaire's end with "reach me here", then submit.
HERE = [("press", "d"), ("press", "c:here"), ("press", "c:submit")]
NO_SWAGGER = pytest.mark.skipif(
    load_swagger() is None, reason="../shared/contracts/signal-cli-rest-api.swagger.json is absent"
)


@pytest.fixture
async def tg(tmp_path: Path) -> AsyncIterator[TelegramHarness]:
    harness = TelegramHarness(tmp_path)
    await harness.start_all()
    yield harness
    await harness.stop_all()


async def play(tg: TelegramHarness, steps: list[tuple[str, str]], chat: int = CHAT) -> None:
    for kind, value in steps:
        if kind == "text":
            await tg.text(chat, value)
        else:
            await tg.press(chat, value)


def code_sent(texts: list[str]) -> str:
    found = [m.group(0) for t in texts if (m := CODE.search(t))]
    assert found, "no receipt"
    return found[-1]


def texts_to(tg: TelegramHarness, chat: int) -> list[str]:
    return [s.text for s in tg.fake.sent if s.chat_id == chat]


def case_number(texts: list[str]) -> int:
    """The number of the newest case offered to a lawyer (numbers are random)."""
    found = [m.group(1) for t in texts if (m := NEW_CASE.search(t))]
    assert found, "no case offered"
    return int(found[-1])


async def telegram_lawyer(tg: TelegramHarness, chat: int = LAWYER) -> None:
    lawyer_id, code = await tg.lawyers.invite(
        name="L", languages=["en"], regions=["all"], on_call=True
    )
    await tg.text(chat, f"/register {code}")
    await tg.lawyers.verify(lawyer_id, texts_to(tg, chat)[-1].split("\n\n")[1])


async def test_after_the_written_down_press_the_chat_shows_nothing(tg: TelegramHarness) -> None:
    await play(tg, full_report("x") + HERE)
    (receipt,) = tg.fake.visible(CHAT)
    assert code_sent([receipt["text"]]) and "A lawyer will answer you here" in receipt["text"]
    assert tg.fake.buttons(CHAT) == {"I have written it down": "w"}
    await tg.press(CHAT, "w")
    assert tg.fake.visible(CHAT) == [], "0 messages from either side"
    # a replayed press on the deleted receipt changes nothing and shows nothing
    await tg.act(tg.fake.press(CHAT, tg.fake.last_question(CHAT).message_id, "w"))
    assert tg.fake.visible(CHAT) == []


async def test_without_the_press_the_receipt_goes_after_the_configured_minutes(
    tg: TelegramHarness,
) -> None:
    assert tg.channel is not None
    await play(tg, full_report("x") + ENDING)
    tg.clock.advance(timedelta(minutes=14, seconds=59))
    await tg.channel.sender.sweep()
    assert len(tg.fake.visible(CHAT)) == 1, "not before its time"
    tg.clock.advance(timedelta(seconds=1))
    assert await tg.channel.sender.sweep() == 1
    assert tg.fake.visible(CHAT) == []


async def test_a_lawyer_reply_is_a_notice_then_read_once_then_gone(tg: TelegramHarness) -> None:
    await telegram_lawyer(tg)
    await play(tg, [*full_report("x"), *HERE, ("press", "w")])
    code = code_sent(texts_to(tg, CHAT))
    number = case_number(texts_to(tg, LAWYER))
    await tg.text(LAWYER, f"/accept {number}")
    await tg.text(LAWYER, f"/reply {number} {SECRET}")
    delivered = f"Your message on case #{number} was delivered to the reporter."
    assert texts_to(tg, LAWYER)[-1] == delivered
    (notice,) = tg.fake.visible(CHAT)
    assert notice["text"] == "You have a new message."
    assert not any(SECRET in t for t in texts_to(tg, CHAT)), "the notice holds no content"
    assert tg.fake.buttons(CHAT) == {"Read": "r"}
    await tg.press(CHAT, "r")
    (shown,) = tg.fake.visible(CHAT)
    assert shown["text"] == f"A lawyer wrote to you:\n{SECRET}"
    assert tg.fake.buttons(CHAT) == {"Done, delete it": "k"}
    await tg.press(CHAT, "k")
    assert tg.fake.visible(CHAT) == [], "nothing is visible"
    # read once: the code, from another account, shows the status and nothing else
    await tg.text(SECOND, f"/status {code}")
    assert texts_to(tg, SECOND) == ["A lawyer is working on your report."]
    async with tg.db.connect() as conn:
        rows = (await conn.execute(select(CaseMessage.expires_at))).scalars().all()
    # a day after it was first shown, rounded up to the hour (no finer time at rest)
    (expires,) = rows
    assert expires == (tg.clock() + timedelta(hours=25)).replace(minute=0, second=0)
    assert timedelta(hours=24) <= expires - tg.clock() < timedelta(hours=25)
    tg.clock.advance(expires - tg.clock() - timedelta(minutes=1))
    report = await Maintenance(tg.db, tg.vault).purge(tg.clock())
    assert report.expired["case_messages"] == 0, "not before the TTL"
    tg.clock.advance(timedelta(minutes=1))
    report = await Maintenance(tg.db, tg.vault).purge(tg.clock())
    assert report.expired["case_messages"] == 1
    async with tg.db.connect() as conn:
        assert (await conn.execute(select(CaseMessage.id))).first() is None, "the row is gone"
    await tg.text(SECOND + 1, f"/status {code}")
    assert texts_to(tg, SECOND + 1) == ["A lawyer is working on your report."]


async def test_a_read_screen_goes_on_time_without_done(tg: TelegramHarness) -> None:
    assert tg.channel is not None
    await telegram_lawyer(tg)
    await play(tg, [*full_report("x"), *HERE, ("press", "w")])
    number = case_number(texts_to(tg, LAWYER))
    await tg.text(LAWYER, f"/accept {number}")
    await tg.text(LAWYER, f"/reply {number} {SECRET}")
    await tg.text(CHAT, "/read")  # the command works as the button does
    assert [m["text"] for m in tg.fake.visible(CHAT)] == [f"A lawyer wrote to you:\n{SECRET}"]
    tg.clock.advance(timedelta(minutes=10))
    await tg.channel.sender.sweep()
    assert tg.fake.visible(CHAT) == []
    await tg.text(CHAT, "/read")
    assert [m["text"] for m in tg.fake.visible(CHAT)] == ["You have no new messages."]


async def test_status_by_code_is_a_read_once_screen(tg: TelegramHarness) -> None:
    await telegram_lawyer(tg)
    await play(tg, full_report("x") + ENDING + [("press", "w")])  # "I will check back"
    code = code_sent(texts_to(tg, CHAT))
    number = case_number(texts_to(tg, LAWYER))
    await tg.text(LAWYER, f"/accept {number}")
    await tg.text(LAWYER, f"/reply {number} {SECRET}")
    assert "kept until the reporter checks" in texts_to(tg, LAWYER)[-1]
    await tg.text(SECOND, f"/status {code}")
    assert [m["text"] for m in tg.fake.visible(SECOND)] == [
        "A lawyer is working on your report.",
        f"A lawyer wrote to you:\n{SECRET}",
    ]
    assert tg.fake.buttons(SECOND) == {"Done, delete it": "k"}
    await tg.press(SECOND, "k")
    assert tg.fake.visible(SECOND) == []
    await tg.text(SECOND, f"/status {code}")
    assert texts_to(tg, SECOND)[-1] == "A lawyer is working on your report."
    assert [m["text"] for m in tg.fake.visible(SECOND)] == ["A lawyer is working on your report."]


# ---- Signal -------------------------------------------------------------------------------

REPORTER = "5e0c2b7a-1d4f-4a63-9b8e-7c6d5e4f3a21"
OTHER = "6f1d3c8b-2e5a-4b74-8c9f-8d7e6f5a4b32"
SIGNAL_LAWYER = "7a2e4d9c-3f6b-4c85-9dae-9e8f7a6b5c43"


@pytest.fixture
async def sig(tmp_path: Path) -> AsyncIterator[SignalHarness]:
    harness = SignalHarness(tmp_path)
    await harness.start_all()
    yield harness
    await harness.stop_all()


def last_to(sig: SignalHarness, uuid: str) -> dict[str, object]:
    return next(m for m in reversed(sig.fake.sent) if m["to"] == uuid)


@NO_SWAGGER
async def test_signal_remote_deletes_the_receipt_written_down_or_on_time(
    sig: SignalHarness,
) -> None:
    assert sig.channel is not None
    for text in REPORT:
        await sig.say(REPORTER, text)
    receipt = last_to(sig, REPORTER)
    assert str(receipt["text"]).endswith("1 = I have written it down")
    await sig.say(REPORTER, "1")
    assert (REPORTER, receipt["timestamp"]) in sig.fake.remote_deleted
    assert sig.fake.visible(REPORTER) == [], "questions and receipt: remote delete as it goes"
    for text in REPORT:
        await sig.say(OTHER, text)
    receipt = last_to(sig, OTHER)
    sig.clock.advance(timedelta(minutes=15))
    await sig.channel.sender.sweep()
    assert (OTHER, receipt["timestamp"]) in sig.fake.remote_deleted
    assert sig.fake.visible(OTHER) == []
    assert sig.fake.expirations[OTHER] == 86400, "on top of disappearing messages"
    assert sig.fake.invalid == []


@NO_SWAGGER
async def test_signal_reader_sends_read_and_the_message_is_remote_deleted(
    sig: SignalHarness,
) -> None:
    lawyer_id, code = await sig.lawyers.invite(
        name="L", languages=["en"], regions=["all"], on_call=True
    )
    await sig.say(SIGNAL_LAWYER, f"/register {code}")
    await sig.lawyers.verify(lawyer_id, sig.fake.to(SIGNAL_LAWYER)[-1].split("\n\n")[1])
    for text in [*REPORT[:-2], "1", "1", "1"]:  # reach me here, submit, written down
        await sig.say(REPORTER, text)
    number = case_number(sig.fake.to(SIGNAL_LAWYER))
    await sig.say(SIGNAL_LAWYER, f"accept {number}")
    await sig.say(SIGNAL_LAWYER, f"reply {number} {SECRET}")
    notice = last_to(sig, REPORTER)
    assert notice["text"] == "You have a new message. Send read to see it; it is shown once."
    await sig.say(REPORTER, "read")
    shown = last_to(sig, REPORTER)
    assert shown["text"] == f"A lawyer wrote to you:\n{SECRET}\n\n1 = Done, delete it"
    assert (REPORTER, notice["timestamp"]) in sig.fake.remote_deleted, "the notice went"
    await sig.say(REPORTER, "1")
    assert (REPORTER, shown["timestamp"]) in sig.fake.remote_deleted
    assert sig.fake.visible(REPORTER) == []
    assert sig.fake.invalid == []
