"""The one inbound path: one grammar, the same meaning on every channel, one transaction per
use case, and floods that cannot starve a real report."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.domain.commands import Answer, Command, Name, parse
from bot.domain.engine import Engine
from bot.domain.messages import READ, Act, Start
from bot.services.clock import FrozenClock
from bot.services.inbound import Inbound
from bot.services.routing import LawyerPolicy
from storage.keyring import Keyring
from storage.models import Case
from tests.helpers import DETAINED_NOW
from tests.world import World, last_question

CODE = re.compile(r"\b[A-Z2-7]{4}(?:-[A-Z2-7]{4}){3}\b")
UNKNOWN_CODE = "ABCD-EFGH-JKLM-NOPQ"


def test_a_narrative_that_starts_with_a_keyword_is_an_answer() -> None:
    assert parse("stop") == Command(Name.CANCEL)
    assert parse("/stop") == Command(Name.CANCEL)
    assert isinstance(parse("stop hitting him, they said, and then took his phone"), Answer)
    assert isinstance(parse("help me, they are outside"), Answer)
    assert isinstance(parse("status of my brother is unknown"), Answer)
    assert parse("/Start@tipline_bot") == Command(Name.START)
    assert parse("статус ABCD EFGH JKLM NOPQ").code == "ABCDEFGHJKLMNOPQ"  # type: ignore[union-attr]
    assert parse("reply 12 hello").number == 12  # type: ignore[union-attr]
    assert parse("reply 1 Bring the summons").number == 1  # type: ignore[union-attr]
    assert parse("reply ABCD EFGH JKLM NOPQ thanks").code == "ABCDEFGHJKLMNOPQ"  # type: ignore[union-attr]
    assert parse("/nonsense") == Command(Name.UNKNOWN)
    assert isinstance(parse("1"), Answer)


#: Each command as typed, per language, and a fragment of the answer in that language.
PARITY = [
    ("help", {"en": "help", "ru": "помощь", "az": "kömək"}, {"en": "", "ru": "", "az": ""}),
    (
        "status",
        {
            "en": f"status {UNKNOWN_CODE}",
            "ru": f"статус {UNKNOWN_CODE}",
            "az": f"status {UNKNOWN_CODE}",
        },
        {"en": "No report was found", "ru": "", "az": ""},
    ),
    (
        "reply",
        {
            "en": f"reply {UNKNOWN_CODE} hello",
            "ru": f"ответ {UNKNOWN_CODE} привет",
            "az": f"cavab {UNKNOWN_CODE} salam",
        },
        {"en": "No report was found", "ru": "", "az": ""},
    ),
    ("forget", {"en": "forget", "ru": "забыть", "az": "unut"}, {"en": "", "ru": "", "az": ""}),
    ("cases", {"en": "cases", "ru": "cases", "az": "cases"}, {"en": "", "ru": "", "az": ""}),
    ("lock", {"en": "lock", "ru": "lock", "az": "lock"}, {"en": "", "ru": "", "az": ""}),
]


@pytest.fixture
async def world(db: AsyncEngine, keyring: Keyring, engine_: Engine, clock: FrozenClock) -> World:
    return World(db, keyring, engine_, clock)


@pytest.mark.parametrize("command", [p[0] for p in PARITY])
async def test_every_command_means_the_same_on_every_channel_in_every_language(
    world: World, command: str
) -> None:
    _, typed, _ = next(p for p in PARITY if p[0] == command)
    for language in ("en", "ru", "az"):
        answers = {}
        for channel in ("telegram", "signal", "console"):
            text = typed[language]
            if channel == "telegram":
                text = "/" + text if language == "en" else text
            # a reporter in a conversation in this language
            address = f"{channel}:{command}-{language}"
            await world.say(address, event=Start(language))
            shown = await world.say(address, text, hint=language)
            answers[channel] = [m.text for m in shown]
        assert answers["telegram"], f"{command} in {language} got no answer"
        expected_texts = {
            "help": {"ui.help_telegram", "ui.help_signal", "ui.console_help"},
        }
        if command in expected_texts:  # help is worded per channel, in the same language
            for channel, texts in answers.items():
                key = f"ui.help_{channel}" if channel != "console" else "ui.console_help"
                assert texts == [world.engine.texts.get(language, key)]
        else:
            assert answers["telegram"] == answers["signal"] == answers["console"], (
                command,
                language,
            )
            if command in ("status", "reply"):
                assert answers["telegram"] == [world.engine.texts.get(language, "status.unknown")]
            if command in ("cases", "lock"):  # nobody's staff here: the generic answer
                assert answers["telegram"] == [
                    world.engine.texts.get(language, "staff.unavailable")
                ]
            if command == "forget":
                assert answers["telegram"] == [world.engine.texts.get(language, "ui.forgotten")]


async def test_a_lawyer_reply_is_one_transaction(world: World, db: AsyncEngine) -> None:
    words = iter(["alpha", "bravo", "charlie", "delta"] * 10)
    world.staff._choice = lambda options: next(words)  # type: ignore[assignment]
    lawyer_id, code = await world.roster.invite(name="L", languages=["en"], regions=["all"])
    phrase = (await world.said("signal:lawyer", f"/register {code}")).split("\n\n")[1]
    await world.roster.verify(lawyer_id, phrase)
    shown = await world.say("telegram:r1", event=Start("en"))
    for _ in range(40):
        step = last_question(shown).step
        shown = await world.say("telegram:r1", event=DETAINED_NOW[step])
        if any(CODE.search(m.text) for m in shown):
            break
    await world.said("signal:lawyer", "/accept 1")
    commits: list[object] = []
    begins: list[object] = []
    sync_engine = db.sync_engine

    def on_commit(conn: object) -> None:
        commits.append(conn)

    def on_begin(conn: object) -> None:
        begins.append(conn)

    event.listen(sync_engine, "commit", on_commit)
    event.listen(sync_engine, "begin", on_begin)
    try:
        handled = await world.inbound.handle(
            Inbound("signal", "lawyer", text="/reply 1 We are on our way", numbered=True)
        )
    finally:
        event.remove(sync_engine, "commit", on_commit)
        event.remove(sync_engine, "begin", on_begin)
    assert len(commits) == 1 and len(begins) == 1, "ownership check, message, notice: one"
    # the lawyer's confirmation and the reporter's notice were written in that transaction
    assert {e.channel for e in handled.entries} == {"signal", "telegram"}
    await world.outboxes["signal"].deliver(handled.entries)
    await world.deliver()
    # the reporter's chat gets a notice without content; the words are read once, with Read
    assert world.sent("telegram:r1")[-1] == "You have a new message."
    read = await world.say("telegram:r1", event=Act(READ))
    assert read[-1].text.endswith("We are on our way")


async def test_a_flood_from_one_chat_never_starves_a_real_p1(
    db: AsyncEngine, keyring: Keyring, engine_: Engine, clock: FrozenClock
) -> None:
    world = World(db, keyring, engine_, clock, policy=LawyerPolicy(cap=2))
    words = iter(["alpha", "bravo", "charlie", "delta"] * 10)
    world.staff._choice = lambda options: next(words)  # type: ignore[assignment]
    lawyer_id, code = await world.roster.invite(
        name="L", languages=["en"], regions=["all"], on_call=True
    )
    phrase = (await world.said("signal:lawyer", f"/register {code}")).split("\n\n")[1]
    await world.roster.verify(lawyer_id, phrase)

    async def report(address: str) -> list[str]:
        shown = await world.say(address, event=Start("en"))
        for _ in range(40):
            question = last_question(shown)
            shown = await world.say(address, event=DETAINED_NOW[question.step])
            texts = [m.text for m in shown]
            if any(CODE.search(t) for t in texts) or any("cannot take more" in t for t in texts):
                return texts
        raise AssertionError("no end")

    refused = 0
    for _ in range(30):
        texts = await report("telegram:flood")
        refused += any("cannot take more reports" in t for t in texts)
        if refused:
            break
    async with world.uow() as uow:
        flood = (await uow.session.execute(select(Case))).scalars().all()
    assert len(flood) == 3 and refused == 1, "the flooding chat is stopped calmly at the limit"
    # the real P1 from another reporter is offered to the lawyer at once
    await report("signal:real")
    async with world.uow() as uow:
        cases = (await uow.session.execute(select(Case).order_by(Case.number))).scalars().all()
    assert len(cases) == 4
    real = next(c for c in cases if c.number == 4)
    assert real.assigned_lawyer_id == lawyer_id and real.status == "assigned"
    assert any("New case #4" in t for t in world.sent("signal:lawyer"))
