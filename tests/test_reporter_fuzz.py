"""Issue 12, fuzzing and bad input: withdraw, read and the new buttons (written down, Read, Done,
continue / delete, the withdrawal's confirmation), typed or pressed, in any order, on deleted or
foreign messages, replayed. Each gets a calm answer, nothing crashes, and nothing stored is lost;
a wrong code in ``withdraw`` gets the same answer as an unknown code.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.domain.engine import Engine
from bot.domain.messages import (
    DONE_READING,
    READ,
    WITHDRAW_NO,
    WITHDRAW_YES,
    WRITTEN,
    Act,
    Choose,
    Event,
    Notice,
    Question,
)
from bot.domain.receipt import MalformedReceipt, normalize_receipt
from bot.i18n import load_catalog
from bot.services.clock import FrozenClock
from storage.keyring import Keyring
from storage.models import Case, CaseMessage
from tests.helpers import DETAINED_NOW
from tests.telegram_harness import TelegramHarness, full_report
from tests.world import World

#: How each catalog text begins (before any placeholder); every message starts with one.
OPENINGS = {
    opening
    for lang in ("en", "ru", "az")
    for text in load_catalog(lang).values()
    if len(opening := text.split("{")[0][:30].strip()) >= 8
}
UNKNOWN = "No report was found for this code. Please check the code and try again."
CODE = re.compile(r"\b[A-Z2-7]{4}(?:-[A-Z2-7]{4}){3}\b")
REPORTER = "telegram:r1"
CHATS = ["telegram:r1", "telegram:r2", "signal:s1", "console:c1"]
#: Fast: each example is a few in-memory turns over SQLite.
FAST = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)


def calm(text: str) -> bool:
    """A message that begins with a catalog text (a lawyer's words or a summary may follow)."""
    if "Traceback" in text or "Error" in text:
        return False
    return any(text.startswith(opening) for opening in OPENINGS)


@pytest.fixture
async def world(db: AsyncEngine, keyring: Keyring, engine_: Engine, clock: FrozenClock) -> World:
    """A submitted "reach me here" report, accepted, with a lawyer's message waiting."""
    world = World(db, keyring, engine_, clock)
    lawyer_id, invite = await world.roster.invite(
        name="L", languages=["en"], regions=["all"], on_call=True
    )
    phrase = (await world.said("signal:lawyer", f"/register {invite}")).split("\n\n")[1]
    await world.roster.verify(lawyer_id, phrase)
    await world.say(REPORTER, "/start", hint="en")
    script: dict[str, Event] = dict(DETAINED_NOW)
    for _ in range(30):
        shown = world.on_screen(REPORTER)
        question = next((m for m in reversed(shown) if isinstance(m, Question)), None)
        if question is None:
            break
        event = Choose("submit") if question.step == "review" else script[question.step]
        await world.say(REPORTER, event=event)
    world.code = CODE.search("\n".join(world.sent(REPORTER))).group(0)  # type: ignore[attr-defined, union-attr]
    await world.say("signal:lawyer", "/accept 1")
    await world.say("signal:lawyer", "/reply 1 The hearing is on Monday")
    return world


async def stored(world: World) -> tuple[int, int]:
    async with world.db.connect() as conn:
        cases = (await conn.execute(select(func.count()).select_from(Case))).scalar_one()
        messages = (await conn.execute(select(func.count()).select_from(CaseMessage))).scalar_one()
    return int(cases), int(messages)


async def kept(world: World) -> tuple[set[str], set[str]]:
    """The ids of every stored case and case message."""
    async with world.db.connect() as conn:
        cases = set((await conn.execute(select(Case.id))).scalars())
        messages = set((await conn.execute(select(CaseMessage.id))).scalars())
    return cases, messages


def confirmations(world: World) -> list[str]:
    """Every confirmation button ever shown (to replay it anywhere)."""
    found = []
    for transport in world.transports.values():
        for shown in transport.shown.values():
            for message in shown:
                if isinstance(message, Notice):
                    found += [a.id for a in message.actions if a.id.startswith(WITHDRAW_YES)]
    return found


def not_the_code(world: World, typed: str) -> bool:
    try:
        return normalize_receipt(typed) != normalize_receipt(world.code)  # type: ignore[attr-defined]
    except MalformedReceipt:
        return True


press = st.sampled_from([WRITTEN, READ, DONE_READING, WITHDRAW_NO, WITHDRAW_YES, "y:0", "y:"])
typed = st.one_of(
    st.sampled_from(["read", "/read", "withdraw", "/withdraw", "1", "2", "0", "9", "прочитать"]),
    st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ234567-", min_size=4, max_size=24).map(
        lambda c: f"withdraw {c}"
    ),
    st.text(max_size=40).map(lambda c: f"/withdraw {c}"),
    st.text(max_size=40),
)
action = st.tuples(
    st.sampled_from(CHATS),
    st.one_of(press.map(lambda p: ("press", p)), typed.map(lambda t: ("text", t))),
)


@FAST
@given(actions=st.lists(action, min_size=1, max_size=8), replay=st.booleans())
async def test_any_order_of_new_buttons_and_commands_is_calm_and_loses_nothing(
    world: World, actions: list[tuple[str, tuple[str, str]]], replay: bool
) -> None:
    before = await kept(world)
    for address, (kind, value) in actions:
        channel = address.partition(":")[0]
        if kind == "press":
            # a button on a numbered channel arrives as its action all the same (a replay)
            if value == WITHDRAW_YES and replay and confirmations(world):
                value = confirmations(world)[-1]  # a confirmation shown somewhere before
            action_, _, nonce = value.partition(":")
            shown = await world.say(address, event=Act(action_, nonce))
        else:
            if value.lower().startswith(("withdraw", "/withdraw")) and not not_the_code(
                world, value.split(" ", 1)[-1]
            ):
                continue  # the real code is not for the fuzzer
            shown = await world.say(address, value, hint="en")
        for message in shown:
            assert calm(message.text), (channel, value, message.text)
    # Examples share the world, so typed numbers on a numbered channel may walk a new report
    # through to its submission: a case added is fine, one lost is not.
    cases, messages = await kept(world)
    assert cases >= before[0] and messages >= before[1], "nothing stored is lost"


@FAST
@given(code=st.one_of(st.text(max_size=30), st.from_regex(CODE, fullmatch=True)))
async def test_a_wrong_code_in_withdraw_answers_like_an_unknown_one(
    world: World, code: str
) -> None:
    if not code.strip() or not not_the_code(world, code):
        return
    for address in ("telegram:other", "signal:other"):
        answer = await world.said(address, f"/withdraw {code}", hint="en")
        assert answer == UNKNOWN, (code, answer)
        status = await world.said(address, f"/status {code}", hint="en")
        assert status.startswith(UNKNOWN), "and like status does"
    assert await stored(world) == (1, 1)


async def test_a_confirmation_is_bound_to_its_chat_and_its_question(world: World) -> None:
    code = world.code  # type: ignore[attr-defined]
    await world.say("telegram:r2", f"/withdraw {code}")
    (foreign,) = confirmations(world)
    # pressed in another chat: nothing to confirm there
    shown = await world.say("telegram:r3", event=Act(*foreign.split(":")))
    assert [m.text for m in shown] == [
        "This question has expired. To withdraw a report, send withdraw and your code again."
    ]
    # an older question's button after a newer question was asked: refused too
    await world.say("telegram:r2", f"/withdraw {code}")
    newer = confirmations(world)[-1]
    assert newer != foreign
    shown = await world.say("telegram:r2", event=Act(*foreign.split(":")))
    assert shown[-1].text.startswith("This question has expired.")
    assert await stored(world) == (1, 1)
    # its own button works once; replayed, it finds nothing
    shown = await world.say("telegram:r2", event=Act(*newer.split(":")))
    assert shown[-1].text.startswith("Your report was withdrawn and deleted")
    shown = await world.say("telegram:r2", event=Act(*newer.split(":")))
    assert shown[-1].text.startswith("This question has expired.")
    assert await stored(world) == (0, 0)


# ---- over the fake Bot API ----------------------------------------------------------------

CHAT = 5551501
HTTP = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)


@pytest.fixture
async def tg(tmp_path: Path) -> AsyncIterator[TelegramHarness]:
    harness = TelegramHarness(tmp_path)
    await harness.start_all()
    steps = [*full_report("x"), ("press", "d"), ("press", "c:here"), ("press", "c:submit")]
    for kind, value in steps:
        await (harness.text(CHAT, value) if kind == "text" else harness.press(CHAT, value))
    await harness.press(CHAT, WRITTEN)
    yield harness
    await harness.stop_all()


async def telegram_stored(tg: TelegramHarness) -> int:
    return await tg.cases()


@HTTP
@given(
    data=st.one_of(
        st.sampled_from(
            [WRITTEN, READ, DONE_READING, WITHDRAW_NO, "y:", "y:abc", "c:continue", "c:delete"]
        ),
        st.text(max_size=70),
    ),
    target=st.sampled_from(["deleted", "own", "question", "unknown"]),
)
async def test_presses_on_deleted_or_foreign_messages_are_calm(
    tg: TelegramHarness, data: str, target: str
) -> None:
    assert tg.channel is not None
    fake = tg.fake
    bot = [k for k, m in fake.messages.items() if k[0] == CHAT and m["from"]["is_bot"]]
    mine = [k for k, m in fake.messages.items() if k[0] == CHAT and not m["from"]["is_bot"]]
    deleted = [k for k in bot if k in fake.deleted]
    key: Any = {
        "deleted": deleted[-1] if deleted else bot[0],
        "own": mine[0],
        "question": bot[0],
        "unknown": None,
    }[target]
    before = (len(fake.sent), await telegram_stored(tg), tg.channel.failed)
    if key is None:  # a message the fake never saw: build the press by hand
        message = {
            "message_id": 987654,
            "date": int(fake.now),
            "chat": {"id": CHAT, "type": "private"},
        }
        fake.messages[(CHAT, 987654)] = message | {
            "from": {"id": 1, "is_bot": True, "first_name": "B"}
        }
        key = (CHAT, 987654)
    await tg.act(fake.press(CHAT, key[1], data))
    assert tg.channel.failed == before[2], "a handler raised"
    for sent in fake.sent[before[0] :]:
        assert calm(sent.text), sent.text
    assert await telegram_stored(tg) == before[1], "nothing stored is lost"
