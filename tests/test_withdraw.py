"""Issue 12, withdraw and forget erase for good.

``withdraw CODE`` works on Telegram, Signal and the console, asks for confirmation, then deletes
the case, its files, its thread and its reply address, tells the assigned lawyer, audits without
content and asks for a ratchet. Every deletion a reporter asks for (withdraw, /forget, stop and
delete) is crypto-erased within TIPLINE_ERASE_WITHIN_MINUTES: a copy of the database taken before
it, attacked with the keyring as it is once the deadline has passed (tests/attacker.py), decrypts
nothing of what was deleted. The same attack on the same copy just before the ratchet recovers
it, so finding nothing means something.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.channels.console import ConsoleChannel
from bot.domain.engine import Engine
from bot.domain.questionnaire import REPORT as QUESTIONNAIRE
from bot.i18n import load_texts
from bot.jobs import erase_job
from bot.services.admin import AdminService
from bot.services.clock import FrozenClock
from bot.services.erasure import due_hour
from storage import migrate
from storage.db import make_engine, make_session_factory
from storage.keyring import KeyFile, Keyring, KeyringFile, KeyVault
from storage.maintenance import Maintenance
from storage.models import Attachment, AuditEntry, Case, CaseMessage
from storage.numbers import CaseNumbering
from storage.repositories import SqlUnitOfWork
from tests.attacker import plaintexts
from tests.conftest import START
from tests.fake_signal import load_swagger
from tests.helpers import CANARY as TYPED
from tests.signal_harness import SignalHarness
from tests.telegram_harness import TelegramHarness, full_report, jpeg_with_gps
from tests.test_console_e2e import FULL_REPORT as CONSOLE_REPORT
from tests.test_console_e2e import env, initialised, tipline
from tests.test_signal import REPORT as SIGNAL_REPORT
from tests.world import World, sequential_numbers

__all__ = ["env", "initialised"]  # fixtures shared with the console tests

CANARY = "CANARY-77c1-withdrawn"
SECRET = "Meet at the office of Nigar at 5"
WITHIN = timedelta(minutes=60)
CODE = re.compile(r"\b[A-Z2-7]{4}(?:-[A-Z2-7]{4}){3}\b")
NEW_CASE = re.compile(r"New case #(\d+)")
HERE = [("press", "d"), ("press", "c:here"), ("press", "c:submit")]
CHAT, LAWYER, OTHER = 5551401, 5551402, 5551403


def last_match(pattern: re.Pattern[str], texts: list[str]) -> str:
    found = [m.group(1 if pattern.groups else 0) for t in texts if (m := pattern.search(t))]
    assert found, f"nothing matches {pattern.pattern}"
    return found[-1]


def snapshot(db_file: Path, dest: Path) -> Path:
    """A copy of the database as a backup would take it (through SQLite, WAL included)."""
    dest.mkdir(parents=True)
    source, copy = sqlite3.connect(db_file), sqlite3.connect(dest / "tipline.db")
    try:
        source.backup(copy)
    finally:
        source.close()
        copy.close()
    return dest


def recovered(copy: Path, keyring: Keyring, needles: tuple[str, ...]) -> set[str]:
    """The needles an attacker with ``keyring`` (and its root key) decrypts from the copy."""
    found: set[str] = set()
    for _, plain in plaintexts(copy, keyring):
        found |= {n for n in needles if n.encode() in plain}
    return found


async def no_sleep(_: float) -> None:
    return None


async def erase_at_deadline(
    db: AsyncEngine, vault: KeyVault, clock: FrozenClock, deleted_at: datetime
) -> None:
    """Run the erase job's rounds up to the deadline of a deletion at ``deleted_at``."""
    admin = AdminService(Maintenance(db, vault), clock)
    async with SqlUnitOfWork(make_session_factory(db), vault.keyring, vault) as uow:
        due = await uow.assignments.erase_due()
    assert due is not None and due <= deleted_at + WITHIN - timedelta(minutes=1)
    assert due == due_hour(deleted_at, WITHIN), "only the hour is kept"
    clock.advance(deleted_at + WITHIN - clock())
    await erase_job(admin, rounds=1, sleep=no_sleep)
    async with SqlUnitOfWork(make_session_factory(db), vault.keyring, vault) as uow:
        assert await uow.assignments.erase_due() is None, "the ratchet ran"


async def count(db: AsyncEngine, model: object) -> int:
    async with db.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(model))).scalar_one())  # type: ignore[arg-type]


async def assert_gone_and_audited(db: AsyncEngine) -> None:
    assert await count(db, Case) == 0
    assert await count(db, CaseMessage) == 0, "the thread went with the case"
    assert await count(db, Attachment) == 0, "its files too"
    async with db.connect() as conn:
        rows = (await conn.execute(select(AuditEntry))).all()
    withdrawals = [r for r in rows if r.action == "case.withdraw"]
    assert len(withdrawals) == 1 and withdrawals[0].actor == "reporter"
    assert all(CANARY not in str(tuple(r)) and SECRET not in str(tuple(r)) for r in rows)


# ---- Telegram -----------------------------------------------------------------------------


@pytest.fixture
async def tg(tmp_path: Path) -> AsyncIterator[TelegramHarness]:
    harness = TelegramHarness(tmp_path / "instance")
    (tmp_path / "instance").mkdir()
    await harness.start_all()
    yield harness
    await harness.stop_all()


def texts_to(tg: TelegramHarness, chat: int) -> list[str]:
    return [s.text for s in tg.fake.sent if s.chat_id == chat]


async def play(tg: TelegramHarness, steps: list[tuple[str, str]], chat: int = CHAT) -> None:
    for kind, value in steps:
        await (tg.text(chat, value) if kind == "text" else tg.press(chat, value))


async def telegram_lawyer(tg: TelegramHarness) -> None:
    lawyer_id, code = await tg.lawyers.invite(
        name="L", languages=["en"], regions=["all"], on_call=True
    )
    await tg.text(LAWYER, f"/register {code}")
    await tg.lawyers.verify(lawyer_id, texts_to(tg, LAWYER)[-1].split("\n\n")[1])


async def telegram_case(tg: TelegramHarness) -> tuple[str, int]:
    """A reach-me-here report with a photo, accepted and answered by a lawyer."""
    steps = full_report(CANARY)
    await play(tg, steps)
    await tg.act(tg.fake.photo(CHAT, jpeg_with_gps(CANARY), caption=CANARY))
    await play(tg, [*HERE, ("press", "w")])
    code = last_match(CODE, texts_to(tg, CHAT))
    number = int(last_match(NEW_CASE, texts_to(tg, LAWYER)))
    await tg.text(LAWYER, f"/accept {number}")
    await tg.text(LAWYER, f"/reply {number} {SECRET}")
    return code, number


async def test_withdraw_on_telegram_asks_first_tells_the_lawyer_and_erases_old_copies(
    tg: TelegramHarness, tmp_path: Path
) -> None:
    await telegram_lawyer(tg)
    code, number = await telegram_case(tg)
    before = snapshot(tg.db_path, tmp_path / "before")
    assert recovered(before, tg.vault.keyring, (CANARY, SECRET)) == {CANARY, SECRET}
    await tg.text(CHAT, f"/withdraw {code}")
    question = tg.fake.visible(CHAT)[-1]  # below "You have a new message."
    assert question["text"].startswith("Withdraw this report?")
    buttons = tg.fake.buttons(CHAT)
    assert set(buttons) == {"Yes, withdraw and delete", "No, keep it"}
    assert CODE.search(str(buttons)) is None, "no code and no case in the buttons"
    assert await tg.cases() == 1, "nothing happens before the confirmation"
    await tg.press(CHAT, buttons["Yes, withdraw and delete"])
    withdrawn_at = tg.clock()
    assert texts_to(tg, LAWYER)[-1] == (
        f"Case #{number} was withdrawn by the reporter and has been deleted."
    )
    assert [m["text"] for m in tg.fake.visible(CHAT)] == [
        "Your report was withdrawn and deleted; within the hour it cannot be recovered, "
        "not even from a backup."
    ]
    await assert_gone_and_audited(tg.db)
    # a replayed confirmation finds nothing to withdraw
    await tg.act(
        tg.fake.press(
            CHAT, tg.fake.last_question(CHAT).message_id, buttons["Yes, withdraw and delete"]
        )
    )
    assert tg.fake.sent[-1].text.startswith("This question has expired.")
    assert recovered(before, tg.vault.keyring, (CANARY, SECRET)) == {CANARY, SECRET}, (
        "deleting rows alone is not erasure"
    )
    await erase_at_deadline(tg.db, tg.vault, tg.clock, withdrawn_at)
    assert recovered(before, tg.vault.keyring, (CANARY, SECRET)) == set()
    # the code is now unknown, and says so like any unknown code
    await tg.text(OTHER, f"/status {code}")
    assert texts_to(tg, OTHER) == [
        "No report was found for this code. Please check the code and try again."
    ]


async def test_no_keeps_the_report_and_a_wrong_code_looks_unknown(tg: TelegramHarness) -> None:
    await telegram_lawyer(tg)
    code, _ = await telegram_case(tg)
    await tg.text(CHAT, f"/withdraw {code}")
    await tg.press(CHAT, "n")
    assert tg.fake.sent[-1].text == "Nothing was withdrawn."
    assert await tg.cases() == 1
    unknown = "No report was found for this code. Please check the code and try again."
    wrong = code[:-1] + ("A" if code[-1] != "A" else "B")
    for typed in (f"/withdraw {wrong}", "/withdraw AAAA-AAAA-AAAA-AAAA", "/withdraw not-a-code"):
        await tg.text(OTHER, typed)
        assert texts_to(tg, OTHER)[-1] == unknown, typed
    assert await tg.cases() == 1
    await tg.text(OTHER, "/withdraw")
    assert texts_to(tg, OTHER)[-1].startswith("To withdraw a report")


async def test_forget_and_stop_are_erased_from_old_copies_by_the_deadline(
    tg: TelegramHarness, tmp_path: Path
) -> None:
    # /forget: the reply address in a submitted case, and a draft in progress
    await play(tg, [*full_report(CANARY), *HERE, ("press", "w")])
    await play(tg, full_report(f"{CANARY}-draft")[:6])
    before = snapshot(tg.db_path, tmp_path / "forget")
    address = f"telegram:{CHAT}"
    needles = (CANARY, f"{CANARY}-draft", address)
    assert recovered(before, tg.vault.keyring, needles) == set(needles)
    await tg.text(CHAT, "/forget")
    forgot_at = tg.clock()
    assert tg.fake.sent[-1].text.startswith(
        "Everything linked to this chat has been deleted; within the hour"
    )
    await erase_at_deadline(tg.db, tg.vault, tg.clock, forgot_at)
    assert recovered(before, tg.vault.keyring, needles) == set()
    # stop and delete: a draft with a photo
    await play(tg, full_report(f"{CANARY}-stop"), chat=OTHER)
    await tg.act(tg.fake.photo(OTHER, jpeg_with_gps(f"{CANARY}-photo")))
    stop_copy = snapshot(tg.db_path, tmp_path / "stop")
    needles = (f"{CANARY}-stop", f"{CANARY}-photo")
    assert recovered(stop_copy, tg.vault.keyring, needles) == set(needles)
    await tg.press(OTHER, "x")
    stopped_at = tg.clock()
    assert tg.fake.sent[-1].text.startswith("Stopped. Your answers have been deleted; within")
    assert await count(tg.db, Attachment) == 0, "the draft's files went with it"
    await erase_at_deadline(tg.db, tg.vault, tg.clock, stopped_at)
    assert recovered(stop_copy, tg.vault.keyring, needles) == set()


# ---- Signal -------------------------------------------------------------------------------

REPORTER = "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
SIGNAL_LAWYER = "2d3e4f5a-6b7c-4d8e-9fa0-1b2c3d4e5f6a"
NO_SWAGGER = pytest.mark.skipif(
    load_swagger() is None, reason="../shared/contracts/signal-cli-rest-api.swagger.json is absent"
)


@pytest.fixture
async def sig(tmp_path: Path) -> AsyncIterator[SignalHarness]:
    harness = SignalHarness(tmp_path / "instance")
    (tmp_path / "instance").mkdir()
    await harness.start_all()
    yield harness
    await harness.stop_all()


@NO_SWAGGER
async def test_withdraw_on_signal(sig: SignalHarness, tmp_path: Path) -> None:
    lawyer_id, invite = await sig.lawyers.invite(
        name="L", languages=["en"], regions=["all"], on_call=True
    )
    await sig.say(SIGNAL_LAWYER, f"register {invite}")
    await sig.lawyers.verify(lawyer_id, sig.fake.to(SIGNAL_LAWYER)[-1].split("\n\n")[1])
    for text in [*SIGNAL_REPORT[:-2], "1", "1"]:  # reach me here, submit
        await sig.say(REPORTER, text)
    code = last_match(CODE, sig.fake.to(REPORTER))
    number = int(last_match(NEW_CASE, sig.fake.to(SIGNAL_LAWYER)))
    await sig.say(SIGNAL_LAWYER, f"accept {number}")
    await sig.say(SIGNAL_LAWYER, f"reply {number} {SECRET}")
    before = snapshot(sig.tmp_path / "tipline.db", tmp_path / "before")
    assert recovered(before, sig.vault.keyring, (TYPED, SECRET)) == {TYPED, SECRET}
    await sig.say(REPORTER, f"withdraw {code}")
    asked = sig.fake.to(REPORTER)[-1]
    assert asked.startswith("Withdraw this report?")
    assert asked.endswith("1 = Yes, withdraw and delete\n2 = No, keep it")
    await sig.say(REPORTER, "1")
    withdrawn_at = sig.clock()
    assert sig.fake.to(SIGNAL_LAWYER)[-1] == (
        f"Case #{number} was withdrawn by the reporter and has been deleted."
    )
    assert sig.fake.to(REPORTER)[-1].startswith("Your report was withdrawn and deleted")
    await assert_gone_and_audited(sig.db)
    await erase_at_deadline(sig.db, sig.vault, sig.clock, withdrawn_at)
    assert recovered(before, sig.vault.keyring, (TYPED, SECRET)) == set()
    assert sig.fake.invalid == []


# ---- the console --------------------------------------------------------------------------


class Console:
    """The real console adapter over a SQLite file, a keyring file and the other services."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.clock = FrozenClock(START)
        self.printed: list[str] = []

    async def start(self) -> None:
        self.db = make_engine(f"sqlite+aiosqlite:///{self.root / 'tipline.db'}")
        await migrate.upgrade(self.db)
        self.vault = KeyVault.create(
            KeyringFile(self.root / "keyring"), KeyFile(os.urandom(32)), None, START
        )
        sessions = make_session_factory(self.db)
        numbering = CaseNumbering(draw=sequential_numbers())
        keyring = self.vault.keyring

        def uow() -> SqlUnitOfWork:
            return SqlUnitOfWork(sessions, keyring, self.vault, numbering=numbering)

        self.uow: Callable[[], SqlUnitOfWork] = uow
        engine = Engine(QUESTIONNAIRE, load_texts())
        self.world = World(self.db, keyring, engine, self.clock, uow=uow)

    async def type(self, lines: list[str]) -> list[str]:
        """One console session: the lines typed, what it printed."""
        typed: Iterator[str] = iter(lines)

        async def read(_: str) -> str:
            try:
                return next(typed)
            except StopIteration:
                raise EOFError from None

        start = len(self.printed)
        channel = ConsoleChannel(
            self.world.inbound, self.uow, self.clock, read=read, write=self.printed.append
        )
        await channel.run()
        return self.printed[start:]


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[Console]:
    (tmp_path / "instance").mkdir()
    rig = Console(tmp_path / "instance")
    await rig.start()
    yield rig
    await rig.db.dispose()


async def test_withdraw_on_the_console(console: Console, tmp_path: Path) -> None:
    world = console.world
    lawyer_id, invite = await world.roster.invite(
        name="L", languages=["en"], regions=["all"], on_call=True
    )
    phrase = (await world.said("signal:lawyer", f"/register {invite}")).split("\n\n")[1]
    await world.roster.verify(lawyer_id, phrase)
    printed = await console.type(CONSOLE_REPORT)
    code = last_match(CODE, printed)
    await world.deliver()
    await world.say("signal:lawyer", "/accept 1")
    await world.say("signal:lawyer", f"/reply 1 {SECRET}")
    before = snapshot(console.root / "tipline.db", tmp_path / "before")
    assert recovered(before, console.vault.keyring, (TYPED, SECRET)) == {TYPED, SECRET}
    printed = await console.type([f"withdraw {code}", "1"])
    withdrawn_at = console.clock()
    assert any(p.strip().startswith("Withdraw this report?") for p in printed)
    assert any("Your report was withdrawn and deleted" in p for p in printed)
    await world.deliver()
    assert world.sent("signal:lawyer")[-1] == (
        "Case #1 was withdrawn by the reporter and has been deleted."
    )
    await assert_gone_and_audited(console.db)
    await erase_at_deadline(console.db, console.vault, console.clock, withdrawn_at)
    assert recovered(before, console.vault.keyring, (TYPED, SECRET)) == set()


# ---- the deadline and its batching ---------------------------------------------------------


async def test_deletions_in_the_window_share_one_ratchet_and_purge_runs_a_pending_one(
    console: Console,
) -> None:
    world = console.world
    admin = AdminService(Maintenance(console.db, console.vault), console.clock)
    await world.say("telegram:a", "/forget")
    console.clock.advance(timedelta(minutes=20))
    await world.say("telegram:b", "/start")
    await world.say("telegram:b", "/cancel")
    assert await admin.erase_pending() is None, "not due yet: the deletions wait together"
    console.clock.advance(timedelta(minutes=40))
    report = await admin.erase_pending()
    assert report is not None and report.complete and report.destroyed == (1,)
    assert await admin.erase_pending() is None, "one ratchet for both"
    # a later deletion asks for another; tipline purge runs it at once, though nothing expired
    await world.say("telegram:c", "/forget")
    purged = await admin.purge()
    assert not any(purged.expired.values())
    assert purged.rotation is not None and purged.rotation.destroyed == (2,)
    assert await admin.erase_pending() is None
    async with console.uow() as uow:
        assert await uow.assignments.erase_due() is None


async def test_an_admin_revoking_a_lawyer_asks_for_the_ratchet(console: Console) -> None:
    world = console.world
    lawyer_id, _ = await world.roster.invite(name="L", languages=["en"], regions=["all"])
    async with console.uow() as uow:
        assert await uow.assignments.erase_due() is None
    await world.roster.revoke(lawyer_id)  # the lawyer's address is shredded
    async with console.uow() as uow:
        assert await uow.assignments.erase_due() == due_hour(console.clock(), WITHIN)


def test_tipline_purge_runs_the_ratchet_a_forget_waits_for(
    initialised: dict[str, str], tmp_path: Path
) -> None:
    forgot = tipline(initialised, "console", stdin="forget\n", cwd=tmp_path)
    assert "Everything linked to this chat has been deleted; within the hour" in forgot.stdout
    purge = tipline(initialised, "purge", cwd=tmp_path)
    assert purge.returncode == 0, purge.stderr
    assert purge.stdout.splitlines() == [
        "tipline: nothing has expired; deletions waiting for erasure were erased",
        "tipline: KEK 2 is current; destroyed KEK: 1",
    ]
    again = tipline(initialised, "purge", cwd=tmp_path)
    assert again.stdout.strip() == "tipline: nothing has expired"
