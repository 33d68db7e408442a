"""The intake service over a real database: drafts, submission, receipts, status, canaries."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.domain.engine import Engine
from bot.domain.messages import Notice, Outbound, Question, Reply, Start, Stop, TextAnswer
from bot.domain.receipt import normalize_receipt
from bot.services.clock import FrozenClock
from bot.services.intake import IntakePolicy
from bot.services.outbox import OutboxSender
from storage import migrate
from storage.db import make_engine
from storage.keyring import Keyring
from storage.models import Case, Draft, StatCounter
from tests.conftest import START
from tests.helpers import CANARY, DETAINED_NOW, DOCUMENTING
from tests.world import World

CHAT = "CHATID-555123987"
RECEIPT_LINE = "Your code is:"
CODE = re.compile(r"\b[A-Z2-7]{4}(?:-[A-Z2-7]{4}){3}\b")


class Harness:
    def __init__(
        self, db: AsyncEngine, keyring: Keyring, engine: Engine, clock: FrozenClock
    ) -> None:
        self.world = World(db, keyring, engine, clock)
        self.keyring = keyring
        self.clock = clock
        self.uow = self.world.uow

    async def say(
        self, event: object, chat: str = CHAT, channel: str = "telegram"
    ) -> list[Outbound]:
        return list(await self.world.say(f"{channel}:{chat}", event=event))  # type: ignore[arg-type]

    async def status(self, code: str, language: str) -> str:
        return await self.world.said(f"telegram:{CHAT}", f"/status {code}", hint=language)

    async def complete(
        self, script: dict[str, object], chat: str = CHAT, hint: str | None = "en"
    ) -> str:
        out = await self.say(Start(hint), chat)
        for _ in range(40):
            question = next(m for m in reversed(out) if isinstance(m, Question))
            out = await self.say(script[question.step], chat)
            for message in out:
                found = CODE.search(message.text) if isinstance(message, Notice) else None
                if found:
                    return found.group(0)
        raise AssertionError("no receipt")


@pytest.fixture
async def harness(
    db: AsyncEngine, keyring: Keyring, engine_: Engine, clock: FrozenClock
) -> Harness:
    return Harness(db, keyring, engine_, clock)


async def test_complete_report_stores_an_encrypted_case(harness: Harness) -> None:
    code = await harness.complete(DETAINED_NOW)
    async with harness.uow() as u:
        assert await u.cases.status_by_receipt(normalize_receipt(code)) == "new"
        rows = (await u.session.execute(select(Case))).scalars().all()
        assert len(rows) == 1
        row = rows[0]
        assert row.priority == 1
        assert row.created_on == START.date()
        assert row.expires_at == START.replace(minute=0) + timedelta(days=30, hours=1)
        content = await u.cases.get(row.id)
        assert (await u.session.execute(select(Draft))).first() is None
        stats = {
            (s.region, s.category): s.count
            for s in (await u.session.execute(select(StatCounter))).scalars()
        }
    assert content is not None
    assert content.answers["own_words"] == f"They took his phone {CANARY}"
    assert content.meta["flags"] == [
        "detained_now",
        "lawyer_urgent",
        "network_exposed",
        "third_party",
    ]
    assert content.meta["region"] == "baku"
    assert content.reply_address == f"telegram:{CHAT}"
    assert stats[("baku", "reports")] == 1
    assert stats[("baku", "what.phone_searched")] == 1


async def test_check_back_stores_no_reply_address(harness: Harness) -> None:
    code = await harness.complete(DOCUMENTING, hint="ru")
    async with harness.uow() as u:
        row = (await u.session.execute(select(Case))).scalar_one()
        content = await u.cases.get(row.id)
    assert content is not None and content.reply_address is None
    assert row.priority == 4
    status = await harness.status(code.lower().replace("-", " "), "ru")
    assert status == "Ваше сообщение получено и ждёт юриста."


async def test_unknown_and_malformed_codes_look_alike(harness: Harness) -> None:
    a = await harness.status("AAAA-AAAA-AAAA-AAAA", "en")
    b = await harness.status("not a code at all", "en")
    assert a == b and a.startswith("No report was found")


async def test_draft_survives_between_messages_and_expires(harness: Harness) -> None:
    await harness.say(Start("en"))
    await harness.say(Reply("1"))  # consent
    out = await harness.say(Start("en"))
    assert any(isinstance(m, Notice) and m.text.startswith("Welcome back") for m in out)
    # 24 hours, and the expiry at rest is rounded up to the hour
    harness.clock.advance(timedelta(hours=25))
    out = await harness.say(Start("en"))
    assert next(m.text for m in out if isinstance(m, Notice)).startswith("Hello.")


async def test_stop_deletes_the_draft_row(harness: Harness) -> None:
    await harness.say(Start("en"))
    await harness.say(Reply("1"))
    async with harness.uow() as u:
        assert (await u.session.execute(select(Draft))).first() is not None
    await harness.say(Stop())
    async with harness.uow() as u:
        assert (await u.session.execute(select(Draft))).first() is None


async def test_chats_do_not_share_drafts(harness: Harness) -> None:
    await harness.say(Start("en"), chat="a")
    await harness.say(Reply("1"), chat="a")
    out = await harness.say(Start("en"), chat="b")
    assert next(m.text for m in out if isinstance(m, Notice)).startswith("Hello.")


async def test_tampered_draft_starts_over_calmly(harness: Harness) -> None:
    await harness.say(Start("en"))
    await harness.say(Reply("1"))
    async with harness.uow() as u:
        await u.session.execute(update(Draft).values(state_ct=b"\x00" * 40))
        await u.commit()
    out = await harness.say(Reply("1"))
    assert any(isinstance(m, Question) for m in out)
    assert any(isinstance(m, Notice) and m.text.startswith("Hello.") for m in out)


async def test_bad_input_loses_nothing(harness: Harness) -> None:
    await harness.say(Start("en"))
    await harness.say(Reply("1"))  # consent
    await harness.say(Reply("2"))  # about: someone else
    for bad in ("99", "", "x" * 100_000):
        out = await harness.say(Reply(bad))
        assert any(isinstance(m, Notice) and m.text.startswith("Sorry") for m in out)
    async with harness.uow() as u:
        state = await u.drafts.load("telegram", CHAT, harness.clock())
    assert state is not None and state["answers"]["about"] == "someone_else"


# ---- the canary: nothing typed reaches the disk or the logs in clear -------------------------


@pytest.fixture
async def sqlite_file(tmp_path: Path) -> AsyncIterator[tuple[AsyncEngine, Path]]:
    path = tmp_path / "canary.db"
    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    await migrate.upgrade(engine)
    yield engine, path
    await engine.dispose()


def _all_bytes(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.rglob("*") if p.is_file()}


async def test_canary_never_reaches_database_wal_or_logs(
    sqlite_file: tuple[AsyncEngine, Path],
    keyring: Keyring,
    engine_: Engine,
    clock: FrozenClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    db, path = sqlite_file
    caplog.set_level(logging.DEBUG)
    # caplog restores each level it set when the test ends; other tests count log lines
    for name in ("sqlalchemy", "sqlalchemy.engine", "aiosqlite", "alembic", "bot", "storage"):
        caplog.set_level(logging.DEBUG, logger=name)
    harness = Harness(db, keyring, engine_, clock)
    script = dict(DETAINED_NOW)
    chat = f"chat-{CANARY}"
    # Scan while the connection is open so the WAL still holds the latest pages.
    out = await harness.say(Start("en"), chat)
    codes = []
    for _ in range(40):
        question = next(m for m in reversed(out) if isinstance(m, Question))
        out = await harness.say(script[question.step], chat)
        files = _all_bytes(path.parent)
        assert any(name.endswith("-wal") for name in files)
        for name, data in files.items():
            assert CANARY.encode() not in data, f"canary in {name} after {question.step}"
        receipt = [m.text for m in out if isinstance(m, Notice) and RECEIPT_LINE in m.text]
        if receipt:
            codes.append(receipt[0].split("\n\n")[1].strip())
            break
    assert codes, "report was not submitted"
    files = _all_bytes(path.parent)
    for name, data in files.items():
        for secret in (CANARY, codes[0], normalize_receipt(codes[0])):
            assert secret.encode() not in data, f"{secret!r} in {name}"
    assert caplog.records, "logging was captured"
    log_text = "\n".join(r.getMessage() for r in caplog.records)
    assert CANARY not in log_text
    assert codes[0] not in log_text
    assert normalize_receipt(codes[0]) not in log_text


async def test_text_answers_in_drafts_are_ciphertext(harness: Harness) -> None:
    await harness.say(Start("en"))
    for reply in ("1", "1", "1"):
        await harness.say(Reply(reply))
    await harness.say(TextAnswer(f"station {CANARY}"))
    async with harness.uow() as u:
        row = (await u.session.execute(select(Draft))).scalar_one()
        assert CANARY.encode() not in row.state_ct
        state = await u.drafts.load("telegram", CHAT, harness.clock())
    assert state is not None and state["answers"]["held_place"] == f"station {CANARY}"


@pytest.mark.parametrize(("ttl_hours", "edited"), [(24, True), (36, False)])
async def test_a_question_is_edited_only_while_it_stays_deletable(
    db: AsyncEngine,
    keyring: Keyring,
    engine_: Engine,
    clock: FrozenClock,
    ttl_hours: int,
    edited: bool,
) -> None:
    # Telegram deletes for 48 hours after the first send; the next answer may come a whole
    # draft lifetime later: with drafts of 36 hours, a 12-hour-old question is replaced.
    policy = IntakePolicy(draft_ttl=timedelta(hours=ttl_hours))
    assert policy.edit_window == timedelta(hours=48 - ttl_hours - 1)
    world = World(db, keyring, engine_, clock, intake_policy=policy)
    world.outboxes["telegram"] = OutboxSender(
        "telegram", world.uow, world.transports["telegram"], clock, edit_window=policy.edit_window
    )
    chat = f"telegram:{CHAT}"
    await world.say(chat, event=Start("en"), update_id="1")
    first = list(world.transports["telegram"].screen[CHAT])
    clock.advance(timedelta(hours=12))
    await world.say(chat, event=Reply("1"), update_id="2")
    now_on_screen = list(world.transports["telegram"].screen[CHAT])
    # edited in place: the same message shows the next question; replaced: a new message
    assert (now_on_screen == first[-1:]) is edited
    assert world.transports["telegram"].edits == (1 if edited else 0)
    assert len(now_on_screen) == 1
