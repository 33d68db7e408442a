"""The Telegram channel end to end: a real PTB application against the fake Bot API."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import socket
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from PIL import Image
from sqlalchemy import select

from bot.channels.telegram import (
    ChatOrder,
    WebhookConfig,
    api_urls,
    callback_event,
    combine,
    keyboard,
)
from bot.domain.engine import Engine
from bot.domain.messages import (
    Choose,
    ChooseMany,
    Done,
    Invalid,
    Notice,
    Question,
    Skip,
    Start,
    Stop,
    Toggle,
)
from bot.domain.questionnaire import REPORT
from bot.i18n import load_texts
from bot.logs import setup_logging
from storage.models import Attachment, Case
from tests.conftest import START
from tests.fake_telegram import TOKEN
from tests.helpers import CANARY, DETAINED_NOW
from tests.telegram_harness import (
    ENDING,
    EXECUTABLE,
    TelegramHarness,
    full_report,
    jpeg_with_gps,
    png_bomb,
)

CHAT = 5550001
#: "I have written it down": the receipt goes.
WRITTEN = [("press", "w")]
CODE = re.compile(r"\b[A-Z2-7]{4}(?:-[A-Z2-7]{4}){3}\b")


@pytest.fixture
async def tg(tmp_path: Path) -> AsyncIterator[TelegramHarness]:
    harness = TelegramHarness(tmp_path)
    await harness.start_all()
    yield harness
    await harness.stop_all()


async def play(
    tg: TelegramHarness, steps: list[tuple[str, str]], chat: int = CHAT
) -> dict[str, object]:
    update: dict[str, object] = {}
    for kind, value in steps:
        if kind == "text":
            update = await tg.text(chat, value)
        else:
            update = await tg.press(chat, value)
    return update


def screen(tg: TelegramHarness, chat: int = CHAT) -> str:
    """The text of the one message on the reporter's screen (a notice joins the question)."""
    (message,) = tg.fake.visible(chat)
    assert message["reply_markup"], "the question's buttons stay under the notice"
    return str(message["text"])


def receipt_code(tg: TelegramHarness, chat: int = CHAT) -> str:
    for sent in reversed(tg.fake.sent):
        found = CODE.search(sent.text) if sent.chat_id == chat else None
        if found:
            return found.group(0)
    raise AssertionError("no receipt sent")


async def test_full_report_clears_the_chat_as_it_goes(tg: TelegramHarness) -> None:
    await play(tg, full_report("zebra42") + ENDING)
    assert await tg.cases() == 1
    # Every button's spinner was stopped (answerCallbackQuery), each press once.
    assert tg.fake.presses and tg.fake.answered == tg.fake.presses
    code = receipt_code(tg)
    visible = tg.fake.visible(CHAT)
    # only the final message stays: the receipt, what happens next, "I have written it down"
    (receipt,) = visible
    assert receipt["text"].startswith("Your report has been received.")
    assert code in receipt["text"] and "send: status and your code" in receipt["text"]
    assert tg.fake.buttons(CHAT) == {"I have written it down": "w"}
    await tg.press(CHAT, "w")
    user_messages = [k for k, m in tg.fake.messages.items() if not m["from"]["is_bot"]]
    assert user_messages and all(k in tg.fake.deleted for k in user_messages)
    questions = [s for s in tg.fake.sent if s.reply_markup and s.text != receipt["text"]]
    # each answer replaces the question on screen in place (edit) or by delete and send
    assert tg.fake.edits + len(questions) == 17  # one question per step asked
    assert tg.fake.visible(CHAT) == [], "written down: the chat ends empty"
    assert all((s.chat_id, s.message_id) in tg.fake.deleted for s in questions)
    assert all(s.protect_content for s in tg.fake.sent), "protect_content on every message"
    assert all("zebra42" not in s.text for s in tg.fake.sent), "typed words are never echoed"
    assert await tg.draft(CHAT) is None


async def test_status_command_deletes_the_code_message(tg: TelegramHarness) -> None:
    await play(tg, full_report("x") + ENDING)
    code = receipt_code(tg)
    update = await tg.text(CHAT, f"/status {code.lower()}")
    assert (CHAT, update["message"]["message_id"]) in tg.fake.deleted
    assert tg.fake.sent[-1].text == "Your report has been received and is waiting for a lawyer."
    await tg.text(CHAT, "/status")
    assert tg.fake.sent[-1].text.startswith("To check a report, send /status")


async def test_restart_mid_conversation_resumes(tg: TelegramHarness) -> None:
    steps = full_report("x")
    await play(tg, steps[:6])
    await tg.stop_bot()
    await tg.start_bot()  # a new PTB application: nothing in memory survives
    await play(tg, steps[6:] + ENDING + WRITTEN)
    assert await tg.cases() == 1
    questions = [s for s in tg.fake.sent if s.reply_markup]
    assert all((s.chat_id, s.message_id) in tg.fake.deleted for s in questions)


async def test_duplicate_update_is_ingested_once(tg: TelegramHarness) -> None:
    steps = full_report("x")
    await play(tg, steps[:4])
    update = await tg.text(CHAT, "Station 7")  # held_place
    before = (len(tg.fake.sent), await tg.draft(CHAT))
    await tg.act(tg.fake.redeliver(update))
    assert (len(tg.fake.sent), await tg.draft(CHAT)) == before
    submit = await play(tg, steps[5:] + ENDING)
    sent = len(tg.fake.sent)
    await tg.act(tg.fake.redeliver(submit))  # the submit button press, delivered again
    assert await tg.cases() == 1
    assert len(tg.fake.sent) == sent


async def test_photo_with_gps_is_stored_without_it(tg: TelegramHarness) -> None:
    await play(tg, full_report("x"))
    original = jpeg_with_gps("EXIFMARKER")
    await tg.act(tg.fake.photo(CHAT, original, caption=f"caption {CANARY}"))
    # the notice and the question after it are one message, which replaced the question
    (screen,) = tg.fake.visible(CHAT)
    assert screen["text"].startswith("File received (1). Send another, or continue.\n\n")
    assert screen["reply_markup"] and screen.get("edit_date")
    await play(tg, ENDING)
    async with tg.uow() as u:
        refs = list((await u.session.execute(select(Attachment.id))).scalars())
        assert len(refs) == 1
        stored = await u.attachments.get(refs[0])
    assert stored is not None
    assert stored.original == original, "the original goes to the lawyer unchanged"
    assert stored.clean is not None and b"EXIFMARKER" not in stored.clean
    with Image.open(io.BytesIO(stored.clean)) as clean:
        assert not clean.getexif() and clean.size == (64, 48)
    assert stored.meta["caption"] == f"caption {CANARY}"


@pytest.mark.parametrize(
    ("payload", "name", "mime"),
    [
        (png_bomb(), "bomb.png", "image/png"),
        (EXECUTABLE, "photo.jpg", "image/jpeg"),
        (b"MZ" + bytes(300), "a.jpg", "image/jpeg"),
    ],
    ids=["decompression-bomb", "elf-as-jpg", "exe-as-jpg"],
)
async def test_dangerous_files_are_refused_calmly(
    tg: TelegramHarness, payload: bytes, name: str, mime: str
) -> None:
    await play(tg, full_report("x"))
    update = await tg.act(tg.fake.document(CHAT, payload, name, mime))
    assert (CHAT, update["message"]["message_id"]) in tg.fake.deleted
    assert screen(tg).startswith("This file cannot be accepted.")
    async with tg.uow() as u:
        assert (await u.session.execute(select(Attachment.id))).first() is None
    await play(tg, ENDING)
    assert await tg.cases() == 1


async def test_files_outside_the_documents_step_are_not_stored(tg: TelegramHarness) -> None:
    await play(tg, full_report("x")[:3])
    await tg.act(tg.fake.photo(CHAT, jpeg_with_gps("m")))
    assert screen(tg).startswith("Sorry, I did not understand")
    async with tg.uow() as u:
        assert (await u.session.execute(select(Attachment.id))).first() is None


async def test_canary_and_token_never_reach_disk_or_logs(
    tg: TelegramHarness, caplog: pytest.LogCaptureFixture
) -> None:
    setup_logging("DEBUG")
    caplog.set_level(logging.DEBUG)
    await play(tg, full_report(CANARY))
    await tg.act(tg.fake.photo(CHAT, jpeg_with_gps("m"), caption=f"look {CANARY}"))
    for name in [p for p in tg.tmp_path.iterdir() if p.is_file()]:
        assert CANARY.encode() not in name.read_bytes(), name.name
    await play(tg, ENDING)
    files = {p.name: p.read_bytes() for p in tg.tmp_path.iterdir() if p.is_file()}
    assert "tipline.db-wal" in files
    for name, data in files.items():
        assert CANARY.encode() not in data, name
        assert str(CHAT).encode() not in data, name
    text = "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records)
    assert caplog.records
    assert CANARY not in text
    assert TOKEN not in text and TOKEN.split(":")[1] not in text
    assert str(CHAT) not in text
    assert logging.getLogger("httpx").getEffectiveLevel() >= logging.WARNING
    assert logging.getLogger("httpcore").getEffectiveLevel() >= logging.WARNING


async def test_retry_after_is_honoured(tg: TelegramHarness) -> None:
    tg.fake.rate_limit["sendMessage"] = [3, 2]
    await tg.text(CHAT, "/start")
    assert tg.slept == [3.0, 2.0]
    assert tg.fake.sent and tg.fake.sent[-1].reply_markup is not None


async def test_delete_failures_are_carried_past_quietly(tg: TelegramHarness) -> None:
    steps = full_report("x")
    await play(tg, steps[:3])
    tg.fake.now += 49 * 3600  # the previous question is now too old to delete
    await play(tg, steps[3:] + ENDING)
    assert await tg.cases() == 1
    assert tg.fake.delete_failures >= 1


async def test_questions_stay_deletable_when_a_report_takes_days(tg: TelegramHarness) -> None:
    steps = full_report("x")
    await play(tg, steps[:3])
    first = tg.fake.last_question(CHAT)  # one message, edited in place answer after answer
    for step in steps[3:5]:  # two answers, each a day less an hour after the last
        tg.clock.advance(timedelta(hours=23))
        tg.fake.now += 23 * 3600
        # after such a gap the reporter is asked "continue / delete" first
        await play(tg, [("text", "/start"), ("press", "c:continue"), step])
    # an edit keeps the first send time, and Telegram deletes only for 48 hours after it:
    # the 46-hour-old message was replaced rather than edited, while it could still be deleted
    assert (CHAT, first.message_id) in tg.fake.deleted
    await play(tg, steps[5:] + ENDING + WRITTEN)
    assert await tg.cases() == 1
    assert tg.fake.delete_failures == 0
    questions = [s for s in tg.fake.sent if s.reply_markup]
    assert all((s.chat_id, s.message_id) in tg.fake.deleted for s in questions)


async def test_commands_cancel_language_forget_help(tg: TelegramHarness) -> None:
    await tg.text(CHAT, "/start", language="ru")
    # the greeting and the consent question are one message
    assert "\n\nЭто конфиденциальная линия" in tg.fake.last_question(CHAT).text
    await tg.text(CHAT, "/language")
    assert tg.fake.last_question(CHAT).text == "Выберите язык."
    await tg.press(CHAT, "c:en")
    assert tg.fake.last_question(CHAT).text.startswith("This is a confidential")
    await tg.text(CHAT, "/help")
    assert tg.fake.sent[-1].text.startswith("Commands: /start")
    await tg.text(CHAT, "/cancel")
    assert tg.fake.sent[-1].text.startswith("Stopped. Your answers have been deleted; within")
    assert await tg.draft(CHAT) is None
    await tg.text(CHAT, "/start")
    await tg.text(CHAT, "/forget")
    assert tg.fake.sent[-1].text.startswith("Everything linked to this chat has been deleted;")
    assert await tg.draft(CHAT) is None
    questions = [s for s in tg.fake.sent if s.reply_markup]
    assert all((s.chat_id, s.message_id) in tg.fake.deleted for s in questions)


async def test_forget_shreds_reply_address_of_submitted_case(tg: TelegramHarness) -> None:
    await play(tg, [*full_report("x"), ("press", "d"), ("press", "c:here"), ("press", "c:submit")])
    async with tg.uow() as u:
        case_id = (await u.session.execute(select(Case.id))).scalar_one()
        content = await u.cases.get(case_id)
    assert content is not None and content.reply_address == f"telegram:{CHAT}"
    await tg.text(CHAT, "/forget")
    async with tg.uow() as u:
        content = await u.cases.get(case_id)
    assert content is not None and content.reply_address is None


async def test_stray_content_gets_a_calm_answer(tg: TelegramHarness) -> None:
    await tg.text(CHAT, "/start")
    update = await tg.act(tg.fake.sticker(CHAT))
    assert (CHAT, update["message"]["message_id"]) in tg.fake.deleted
    assert screen(tg).startswith("Sorry, I did not understand")
    await tg.press(CHAT, "c:not-an-option")
    assert screen(tg).startswith("Sorry, I did not understand")


async def test_rate_limit_is_calm_and_per_chat(tmp_path: Path) -> None:
    harness = TelegramHarness(tmp_path, rate_limit=5)
    await harness.start_all()
    try:
        for i in range(8):
            await harness.text(CHAT, f"hello {i}")
        warnings = [
            s for s in harness.fake.sent if s.text.startswith("You are sending messages very fast")
        ]
        assert len(warnings) == 1
        await harness.text(CHAT + 1, "/start")
        assert "\n\nThis is a confidential" in harness.fake.last_question(CHAT + 1).text
        harness.clock.advance(timedelta(minutes=2))
        answers = harness.fake.edits + len(harness.fake.sent)
        await harness.text(CHAT, "/start")
        assert harness.fake.edits + len(harness.fake.sent) == answers + 1  # answered again
        assert any(m.get("reply_markup") for m in harness.fake.visible(CHAT))
    finally:
        await harness.stop_all()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_webhook_mode_with_secret_token(tmp_path: Path) -> None:
    harness = TelegramHarness(tmp_path)
    port = _free_port()
    hook = WebhookConfig(url=f"http://127.0.0.1:{port}/tg-hook", secret="s3cret-token_1", port=port)
    await harness.start_all(webhook=hook)
    try:
        assert harness.fake.webhook_secret == "s3cret-token_1"
        await play(harness, full_report("x") + ENDING)
        assert await harness.cases() == 1
        assert set(harness.fake.webhook_statuses) == {200}
        # Each press is answered in the answer to its delivery: no request of the bot's own.
        fake = harness.fake
        assert fake.presses and fake.answered == fake.presses
        assert [m for m, _ in fake.replied] == ["answerCallbackQuery"] * len(fake.presses)
        assert "answerCallbackQuery" not in [m for m, _ in fake.calls]
        update = {
            "update_id": 1,
            "message": {
                "message_id": 1,
                "date": 0,
                "chat": {"id": 1, "type": "private"},
                "text": "hi",
            },
        }
        async with aiohttp.ClientSession() as session:
            for secret in ("wrong", None):
                headers = {"Content-Type": "application/json"}
                if secret:
                    headers["X-Telegram-Bot-Api-Secret-Token"] = secret
                async with session.post(hook.url, json=update, headers=headers) as response:
                    assert response.status == 403
    finally:
        await harness.stop_all()


def test_callback_data_and_keyboards() -> None:
    assert callback_event("c:baku") == Choose("baku")
    assert callback_event("t:beaten") == Toggle("beaten")
    assert (
        callback_event("d") == Done()
        and callback_event("s") == Skip()
        and callback_event("x") == Stop()
    )
    for junk in (None, "", "c:", "t:", "zz", "t", "x:1", "d:"):
        assert callback_event(junk) == Invalid(), junk
    assert api_urls(None) == ("https://api.telegram.org/bot", "https://api.telegram.org/file/bot")
    assert api_urls("http://127.0.0.1:9/bot") == (
        "http://127.0.0.1:9/bot",
        "http://127.0.0.1:9/file/bot",
    )


def test_every_keyboard_offers_stop_and_fits_callback_limits(engine_: Engine) -> None:
    state, _ = engine_.step(None, Start("en"), START)
    seen = set()
    while state is not None:
        question = engine_.question(state)
        rows = keyboard(question)["inline_keyboard"]
        assert rows[-1][0]["callback_data"] == "x"
        assert all(len(b["callback_data"].encode()) <= 64 for row in rows for b in row)
        seen.add(question.step)
        event = DETAINED_NOW[question.step]
        if isinstance(event, ChooseMany):
            event = Done() if state.pending else Toggle(event.options[0])
        state, _ = engine_.step(state, event, START)
    assert "what_happened" in seen and "review" in seen


async def test_tipline_run_serves_telegram_until_sigterm(tmp_path: Path) -> None:
    """The real command: `tipline run` with a token polls the (fake) Bot API and stops cleanly."""
    from tests.fake_telegram import FakeBotApi, until
    from tests.helpers import TiplineProcess

    fake = FakeBotApi()
    root = await fake.start()
    try:
        async with TiplineProcess(
            tmp_path, TIPLINE_TELEGRAM_TOKEN=TOKEN, TIPLINE_TELEGRAM_BASE_URL=root
        ) as run:
            await until(lambda: any(m == "getUpdates" for m, _ in fake.calls), limit=30)
            await fake.text(CHAT, "/start")
            await until(lambda: any(s.reply_markup for s in fake.sent), limit=30)
            assert "This is a confidential tip line" in fake.sent[-1].text
            fake._new_update.set()
    finally:
        await fake.stop()
    assert run.returncode == 0, run.logs
    assert "Traceback" not in run.logs
    assert TOKEN not in run.logs and TOKEN.split(":")[1] not in run.logs
    assert str(CHAT) not in run.logs


async def test_chats_run_concurrently_and_each_chat_in_order() -> None:
    order = ChatOrder(2)
    events: list[str] = []
    release = asyncio.Event()

    async def work(name: str, wait: bool = False) -> None:
        events.append(f"start {name}")
        if wait:
            await release.wait()
        events.append(f"end {name}")

    # one chat floods the bot while its first update is stuck: more waiting than workers
    order.start(CHAT, work("a1", wait=True))
    for n in range(2, 12):
        order.start(CHAT, work(f"a{n}"))
    order.start(CHAT + 1, work("b1"))
    for _ in range(20):
        await asyncio.sleep(0)
    # the other chat went ahead while a1 waited; a2 and later wait for a1
    assert events == ["start a1", "start b1", "end b1"]
    assert order.chats_in_flight == 1
    release.set()
    await order.join()
    expected = [step for n in range(1, 12) for step in (f"start a{n}", f"end a{n}")]
    assert [e for e in events if " a" in e] == expected
    assert order.chats_in_flight == 0


def test_notices_join_the_question_that_follows() -> None:
    language = Engine(REPORT, load_texts())
    _, out = language.step(None, Start("en"), START, channel="telegram")
    notice, question = out
    assert isinstance(notice, Notice) and isinstance(question, Question)
    (joined,) = combine(out)
    assert isinstance(joined, Question) and joined.text == f"{notice.text}\n\n{question.text}"
    assert joined.options == question.options  # the buttons stay the question's
    assert combine([notice]) == [notice]  # no question: nothing to join
    long = Notice("x" * 4096)
    assert combine([long, question]) == [long, question]  # too long for one message
