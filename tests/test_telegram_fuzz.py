"""Fuzzing the Telegram channel: text, callback data and update shapes never crash a handler."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from bot.i18n import load_catalog
from tests.telegram_harness import TelegramHarness

CHAT = 7770001
# Each example is a round trip over HTTP: no shrinking phase (it would replay slow failures).
FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
KNOWN_TEXTS = {t for lang in ("en", "ru", "az") for t in load_catalog(lang).values()}


@pytest.fixture
async def tg(tmp_path: Path) -> AsyncIterator[TelegramHarness]:
    harness = TelegramHarness(tmp_path)
    await harness.start_all()
    await harness.text(CHAT, "/start")
    yield harness
    await harness.stop_all()


def assert_calm(tg: TelegramHarness, sent_before: int) -> None:
    assert tg.channel is not None and tg.channel.failed == 0, "a handler raised"
    for message in tg.fake.sent[sent_before:]:
        assert "Traceback" not in message.text and "Error" not in message.text
        # every message is a catalog text, a question with a summary, or a receipt
        assert message.text in KNOWN_TEXTS or message.reply_markup or "\n" in message.text


@FUZZ
@given(text=st.text(min_size=1, max_size=600))
async def test_fuzzed_text(tg: TelegramHarness, text: str) -> None:
    before = len(tg.fake.sent)
    await tg.text(CHAT, text)
    assert_calm(tg, before)


@FUZZ
@given(
    data=st.one_of(
        st.text(max_size=64),
        st.sampled_from(["c:", "t:", "d", "s", "c:review", "t:x" * 20, "c:submit"]),
    )
)
async def test_fuzzed_callback_data(tg: TelegramHarness, data: str) -> None:
    before = len(tg.fake.sent)
    if not any(s.chat_id == CHAT and s.reply_markup for s in tg.fake.sent):
        await tg.text(CHAT, "/start")
    await tg.press(CHAT, data)
    assert_calm(tg, before)


chat_types = st.sampled_from(["private", "group", "supergroup", "channel"])
message_extras = st.fixed_dictionaries(
    {},
    optional={
        "text": st.text(min_size=1, max_size=50),
        "caption": st.text(max_size=50),
        "contact": st.just({"phone_number": "+994500000000", "first_name": "X"}),
        "location": st.just({"latitude": 40.4, "longitude": 49.8}),
        "voice": st.just({"file_id": "v", "file_unique_id": "uv", "duration": 3}),
        "dice": st.just({"emoji": "🎲", "value": 3}),
    },
)


@FUZZ
@given(
    kind=st.sampled_from(
        ["message", "edited_message", "callback_query", "channel_post", "my_chat_member"]
    ),
    chat_type=chat_types,
    extras=message_extras,
    with_message=st.booleans(),
)
async def test_fuzzed_update_shapes(
    tg: TelegramHarness, kind: str, chat_type: str, extras: dict[str, Any], with_message: bool
) -> None:
    fake = tg.fake
    user = fake._user(CHAT, "en")
    chat = {"id": CHAT if chat_type == "private" else -100123, "type": chat_type}
    base = {"message_id": 999_000 + fake.next_update_id, "date": int(fake.now), "chat": chat}
    message = base | {"from": user} | extras
    update: dict[str, Any] = {"update_id": fake.next_update_id}
    fake.next_update_id += 1
    if kind == "callback_query":
        query: dict[str, Any] = {
            "id": "q1",
            "from": user,
            "chat_instance": "ci",
            "data": extras.get("text", "c:x"),
        }
        if with_message:
            query["message"] = base | {
                "from": {"id": 1, "is_bot": True, "first_name": "B"},
                "text": "q",
            }
        update["callback_query"] = query
    elif kind == "my_chat_member":
        member = {"status": "member", "user": user}
        update["my_chat_member"] = {
            "chat": chat,
            "from": user,
            "date": int(fake.now),
            "old_chat_member": member,
            "new_chat_member": member | {"status": "kicked", "until_date": 0},
        }
    else:
        update[kind] = message
    before = len(fake.sent)
    await tg.act(fake.redeliver(update))
    assert_calm(tg, before)
