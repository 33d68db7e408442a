"""Issue 12, resuming shows nothing earlier: after more than 30 minutes of silence, whatever the
reporter sends is answered with "You have an unfinished report: continue / delete", then the next
unanswered question; the review after such a gap lists no earlier answer. Within one sitting the
review stays as it is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.domain.engine import RESUME_AFTER, DraftState, Engine
from bot.domain.messages import (
    Choose,
    DraftDeleted,
    Notice,
    Outbound,
    Question,
    Reply,
    Start,
)
from storage.models import Case
from tests.conftest import START
from tests.fake_signal import load_swagger
from tests.helpers import DETAINED_NOW
from tests.signal_harness import SignalHarness
from tests.telegram_harness import TelegramHarness, full_report
from tests.test_signal import REPORT
from tests.world import last_question

CANARY = "CANARY-3b1f-first-sitting"
#: Answers of the first sitting that its review shows (option labels, in English).
SHOWN_BEFORE = ("Detained right now", "Baku", "Less than 3 hours", "Yes, urgently")
CHAT = 5551301
GAP = RESUME_AFTER + timedelta(seconds=1)


def _to_review(engine_: Engine) -> tuple[DraftState, list[Outbound]]:
    state, out = engine_.step(None, Start("en"), START)
    script = dict(DETAINED_NOW)
    while (question := last_question(out)).step != "review":
        assert state is not None
        state, out = engine_.step(state, script[question.step], START)
    assert state is not None
    return state, out


def test_within_one_sitting_the_review_lists_the_answers(engine_: Engine) -> None:
    state, out = _to_review(engine_)
    review = last_question(out).text
    assert "Detained right now" in review, "the test would see an earlier answer"
    later = START + RESUME_AFTER  # not more than 30 minutes: the same sitting
    state2, out = engine_.step(state, Start("en"), later)
    assert state2 is not None and not state2.resuming
    assert last_question(out).text == review


def test_after_a_gap_any_message_asks_continue_or_delete_first(engine_: Engine) -> None:
    state, _ = _to_review(engine_)
    # a stale "submit" pressed after the gap submits nothing
    resumed, out = engine_.step(state, Choose("submit"), START + GAP)
    assert resumed is not None and resumed.resuming
    question = last_question(out)
    assert question.step == "resume" and question.text == "You have an unfinished report."
    assert [o.label for o in question.options] == ["Continue", "Delete it"]
    assert not any("Detained" in m.text for m in out if isinstance(m, Question | Notice))
    # the review after the gap: submit, change one answer or delete, and no earlier answer
    review_state, out = engine_.step(resumed, Choose("continue"), START + GAP)
    assert review_state is not None and not review_state.resuming
    review = last_question(out)
    assert review.step == "review"
    assert "Your earlier answers are kept, but not shown here." in review.text
    assert not any(shown in review.text for shown in SHOWN_BEFORE)
    assert [o.id for o in review.options] == ["submit", "change"]
    assert review.labels["stop"] == "Stop and delete"


def test_delete_after_a_gap_deletes_the_draft(engine_: Engine) -> None:
    state, _ = _to_review(engine_)
    resumed, _ = engine_.step(state, Reply("3"), START + GAP)  # anything typed
    assert resumed is not None
    again, out = engine_.step(resumed, Reply("7"), START + GAP)
    assert again is not None and last_question(out).step == "resume", "calmly asked again"
    gone, out = engine_.step(again, Reply("2"), START + GAP)
    assert gone is None and any(isinstance(m, DraftDeleted) for m in out)


def test_an_answer_given_after_the_gap_is_the_only_one_the_review_lists(
    engine_: Engine,
) -> None:
    state, _ = _to_review(engine_)
    resumed, _ = engine_.step(state, Start("en"), START + GAP)
    assert resumed is not None
    state, out = engine_.step(resumed, Choose("continue"), START + GAP)
    assert state is not None
    state, out = engine_.step(state, Choose("change"), START + GAP)
    assert state is not None
    assert "Baku" not in last_question(out).text, "the change list names questions only"
    state, out = engine_.step(state, Choose("city"), START + GAP)
    assert state is not None
    state, out = engine_.step(state, Choose("ganja"), START + GAP)
    assert state is not None
    if last_question(out).step == "district":
        state, out = engine_.step(state, Choose("skip"), START + GAP)
    review = last_question(out)
    assert review.step == "review" and "Ganja" in review.text
    assert not any(shown in review.text for shown in SHOWN_BEFORE if shown != "Baku")


def test_an_old_draft_state_has_no_gap(engine_: Engine) -> None:
    state, _ = _to_review(engine_)
    old = state.to_dict()
    for key in ("active", "resuming", "sitting"):
        old.pop(key)
    restored = DraftState.from_dict(old)
    assert restored.active == 0.0 and restored.sitting is None
    later, out = engine_.step(restored, Start("en"), START + timedelta(hours=5))
    assert later is not None and last_question(out).step == "review"


# ---- over the channels --------------------------------------------------------------------


@pytest.fixture
async def tg(tmp_path: Path) -> AsyncIterator[TelegramHarness]:
    harness = TelegramHarness(tmp_path)
    await harness.start_all()
    yield harness
    await harness.stop_all()


def texts_since(tg: TelegramHarness, index: int, chat: int = CHAT) -> list[str]:
    """Every text the bot sent or edited into the chat since the call at ``index``."""
    return [
        str(params.get("text", ""))
        for method, params in tg.fake.calls[index:]
        if method in ("sendMessage", "editMessageText") and int(params["chat_id"]) == chat
    ]


async def play(tg: TelegramHarness, steps: list[tuple[str, str]]) -> None:
    for kind, value in steps:
        if kind == "text":
            await tg.text(CHAT, value)
        else:
            await tg.press(CHAT, value)


async def test_telegram_resume_after_a_gap_shows_nothing_of_the_first_sitting(
    tg: TelegramHarness,
) -> None:
    await play(tg, [*full_report(CANARY), ("press", "d"), ("press", "c:code")])
    first_review = tg.fake.last_question(CHAT).text
    assert all(shown in first_review for shown in SHOWN_BEFORE), "within the sitting: shown"
    tg.clock.advance(GAP)
    index = len(tg.fake.calls)
    await tg.press(CHAT, "c:submit")  # an old button, pressed after the gap
    assert await tg.cases() == 0, "nothing is submitted by a press from before the gap"
    (screen,) = tg.fake.visible(CHAT)
    assert screen["text"] == "You have an unfinished report."
    assert tg.fake.buttons(CHAT) == {
        "Continue": "c:continue",
        "Delete it": "c:delete",
        "Stop and delete": "x",
    }
    await tg.press(CHAT, "c:continue")
    review = tg.fake.last_question(CHAT).text
    assert "Your earlier answers are kept, but not shown here." in review
    await tg.press(CHAT, "c:submit")
    assert await tg.cases() == 1
    after = texts_since(tg, index)
    assert len(after) >= 3
    for text in after:
        assert CANARY not in text
        assert not any(shown in text for shown in SHOWN_BEFORE), text


async def test_telegram_start_after_a_gap_then_delete(tg: TelegramHarness) -> None:
    await play(tg, full_report(CANARY)[:6])
    tg.clock.advance(GAP)
    await tg.text(CHAT, "/start")
    assert tg.fake.last_question(CHAT).text == "You have an unfinished report."
    await tg.press(CHAT, "c:delete")
    assert await tg.draft(CHAT) is None
    assert tg.fake.sent[-1].text.startswith("Stopped. Your answers have been deleted;")


@pytest.fixture
async def sig(tmp_path: Path) -> AsyncIterator[SignalHarness]:
    if load_swagger() is None:
        pytest.skip("../shared/contracts/signal-cli-rest-api.swagger.json is absent")
    harness = SignalHarness(tmp_path)
    await harness.start_all()
    yield harness
    await harness.stop_all()


async def test_signal_resume_with_numbers(sig: SignalHarness) -> None:
    uuid = "4d3c2b1a-0f9e-4d8c-8b7a-6f5e4d3c2b1a"
    for text in REPORT[:-1]:  # up to the review
        await sig.say(uuid, text)
    assert "Detained right now" in sig.fake.to(uuid)[-1]
    sig.clock.advance(GAP)
    count = len(sig.fake.to(uuid))
    await sig.say(uuid, "1")  # would have submitted before the gap
    async with sig.db.connect() as conn:
        cases: Any = (await conn.execute(select(func.count()).select_from(Case))).scalar_one()
    assert cases == 0
    asked = sig.fake.to(uuid)[-1]
    assert asked.startswith("You have an unfinished report.\n\n1 = Continue\n2 = Delete it")
    await sig.say(uuid, "1")
    review = sig.fake.to(uuid)[-1]
    assert "Your earlier answers are kept, but not shown here." in review
    for text in sig.fake.to(uuid)[count:]:
        assert CANARY not in text and not any(shown in text for shown in SHOWN_BEFORE)
    await sig.say(uuid, "1")  # submit
    assert "1 = I have written it down" in sig.fake.to(uuid)[-1]
