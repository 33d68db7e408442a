"""Casework end to end through the inbound path, on every database, with an injected clock:
events and their counters (surviving the purge), raid suggestions, legal deadlines with
reminders and retention, the originals and the package reaching the right chat, the role matrix
and fuzzed arguments of every new command."""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.deadline_table import SHIPPED, load_deadline_table
from bot.domain.commands import Answer, Command, Name, parse
from bot.domain.deadlines import DeadlineTableError, add_months, parse_table
from bot.domain.engine import Engine
from bot.domain.messages import Choose, ChooseMany, Start
from bot.services.casework import CaseworkPolicy
from bot.services.clock import FrozenClock
from bot.services.evidence import verify_package
from bot.services.intake import Attachment
from storage.keyring import KeyFile, KeyringFile, KeyVault
from storage.maintenance import Maintenance
from storage.models import Attachment as AttachmentRow
from storage.models import Case, Deadline, EventCase, EventCounter
from tests.conftest import START
from tests.helpers import CANARY, DETAINED_NOW
from tests.world import StaffWorld

GENERIC = "This command is not available."
A, B, ADMIN = "signal:lawyer-a", "signal:lawyer-b", "signal:admin"
RU_DETAINED = DETAINED_NOW | {"language": Choose("ru")}


class World(StaffWorld):
    """Every service over one database, with reporters, lawyers and an admin to drive."""

    regions = ("all",)
    languages = ("en",)

    def __init__(
        self,
        db: AsyncEngine,
        vault: KeyVault,
        engine: Engine,
        clock: FrozenClock,
        *,
        content_over_telegram: bool = False,
        casework: CaseworkPolicy | None = None,
    ) -> None:
        super().__init__(
            db,
            vault.keyring,
            engine,
            clock,
            content_over_telegram=content_over_telegram,
            casework=casework or CaseworkPolicy(content_over_telegram=content_over_telegram),
        )
        self.vault = vault

    async def new_event(self, address: str, text: str = "Baku 2026-11-01 2026-11-02") -> int:
        answer = await self.say_text(address, f"/event new {text}")
        match = re.search(r"Event (\d+) created", answer)
        assert match, answer
        return int(match.group(1))

    def files(self, address: str) -> list[tuple[str, list[object]]]:
        channel, _, chat = address.partition(":")
        return list(self.transports[channel].files.get(chat, []))  # type: ignore[arg-type]


@pytest.fixture
def vault(tmp_path: Path) -> KeyVault:
    return KeyVault.create(KeyringFile(tmp_path / "keyring"), KeyFile(os.urandom(32)), None, START)


@pytest.fixture
async def world(db: AsyncEngine, vault: KeyVault, engine_: Engine, clock: FrozenClock) -> World:
    return World(db, vault, engine_, clock)


async def _rows(world: World, model: object) -> int:
    async with world.uow() as u:
        return int((await u.session.execute(select(func.count()).select_from(model))).scalar_one())  # type: ignore[arg-type]


# ---- the grammar ----------------------------------------------------------------------------


def test_casework_commands_are_strict_so_a_narrative_stays_an_answer() -> None:
    assert parse("event new Baku 2017-09-20") == Command(Name.EVENT, text="new Baku 2017-09-20")
    assert parse("/event add 12 3") == Command(Name.EVENT, text="add 12 3")
    assert parse("decision 4 fine 20.09.2017") == Command(
        Name.DECISION, number=4, text="fine 20.09.2017"
    )
    assert parse("export 4") == Command(Name.EXPORT, number=4)
    for narrative in (
        "event at the club, they came at night",
        "decision was made by the judge yesterday",
        "export 3 photos please",
        "event new year party",
    ):
        assert isinstance(parse(narrative), Answer), narrative
    assert parse("/event whatever") == Command(Name.EVENT, text="whatever", bare=True)


def test_the_deadline_table_is_data_and_a_bad_one_is_one_clear_line(tmp_path: Path) -> None:
    table = load_deadline_table()
    assert table.kind("штраф") is not None and table.kind("FINE") is table.kind("fine")
    appeal = table.opened_by(table.kind("fine"))  # type: ignore[arg-type]
    assert [r.id for r in appeal] == ["appeal_administrative"] and appeal[0].days == 10
    assert appeal[0].check_with_counsel
    echr = table.opened_by(table.kind("appeal"))  # type: ignore[arg-type]
    assert [(r.id, r.months) for r in echr] == [("echr_application", 4)]
    assert add_months(datetime(2026, 10, 31).date(), 4) == datetime(2027, 2, 28).date()
    # an edited table is what tipline uses: a 15-day appeal
    edited = tmp_path / "deadlines.toml"
    edited.write_text(SHIPPED.read_text().replace("days = 10", "days = 15"))
    assert load_deadline_table(edited).rule("appeal_administrative").days == 15  # type: ignore[union-attr]
    for text, fragment in [
        ("[kinds.fine\nwords = 1", "not valid TOML"),
        ('[kinds.fine]\nwords = ["fine"]\nlabel = {en = "x"}\n', "no [[deadlines]]"),
        (
            '[kinds.fine]\nwords = ["fine"]\nlabel = {en = "x"}\n[[deadlines]]\nid = "a"\n'
            'after = ["nope"]\ndays = 3\nlabel = {en = "y"}\n',
            "after must list known kinds",
        ),
        (
            '[kinds.fine]\nwords = ["fine"]\nlabel = {en = "x"}\n[[deadlines]]\nid = "a"\n'
            'after = ["fine"]\ndays = 3\nmonths = 1\nlabel = {en = "y"}\n',
            "either days or months",
        ),
        ('[kinds.fine]\nwords = ["fine"]\nlabel = {ru = "x"}\n', "needs an English text"),
    ]:
        with pytest.raises(DeadlineTableError, match=re.escape(fragment)) as caught:
            parse_table(text)
        assert "\n" not in str(caught.value)
    broken = tmp_path / "broken.toml"
    broken.write_text("[kinds.fine\n")
    with pytest.raises(DeadlineTableError, match=r"deadline table .*broken.toml: not valid TOML"):
        load_deadline_table(broken)


# ---- events ---------------------------------------------------------------------------------


async def test_events_link_count_suppress_and_survive_the_purge(
    world: World, db: AsyncEngine
) -> None:
    await world.lawyer("A", A)
    await world.report(DETAINED_NOW)  # detained, phone searched
    await world.report(
        DETAINED_NOW
        | {"under18": Choose("yes"), "what_happened": ChooseMany(("detained", "beaten"))}
    )
    assert (await world.case_row(1)).assigned_lawyer_id == (
        await world.case_row(2)
    ).assigned_lawyer_id
    number = await world.new_event(A, "Bakı 2026-11-01 2026-11-02")
    assert 100 <= number <= 9999
    assert "is now linked to event" in await world.say_text(A, f"/event add {number} 1")
    assert "is now linked to event" in await world.say_text(A, f"/event add #{number} #2")
    assert "already linked to event" in await world.say_text(A, f"/event add {number} 2")
    summary = await world.casework.event_summary(number)
    assert dict(summary.counts) == {
        "people": 2,
        "detained": 2,
        "beaten": 1,
        "forced_medical": 0,
        "phone_searched": 1,
        "forced_to_name": 0,
        "fined_charged": 0,
        "outed": 0,
        "under18": 1,
    }
    assert summary.cases == (1, 2) and summary.event.city_key == "baku"
    shown = await world.say_text(A, f"/event {number}")
    assert "People: <5" in shown and "Detained: <5" in shown and "Under 18: <5" in shown
    assert "Your cases in it: #1, #2" in shown
    assert not re.search(r": [1-4]\b", shown), "no count under the threshold is shown"
    assert f"There is no event {number + 1 if number < 9999 else 100}." in await world.say_text(
        A, f"/event {number + 1 if number < 9999 else 100}"
    )
    # every linked case expires and is purged (with a ratchet of the KEK): the counts stay
    world.clock.advance(timedelta(days=31))
    report = await Maintenance(db, world.vault).purge(world.clock())
    assert report.expired["cases"] == 2 and report.rotation is not None
    assert await _rows(world, Case) == 0 and await _rows(world, EventCase) == 0
    after = await world.casework.event_summary(number)
    assert after.counts == summary.counts and after.cases == ()
    assert after.event.city == "Bakı", "the event itself is re-wrapped, not erased"
    assert await _rows(world, EventCounter) == 5
    listed = await world.casework.list_events()
    assert [(s.event.number, dict(s.shown)["people"]) for s in listed] == [(number, "<5")]


async def test_a_raid_suggestion_reaches_the_lawyer_holding_both_and_no_other(
    world: World,
) -> None:
    a = await world.lawyer("A", A, languages=("en",))
    b = await world.lawyer("B", B, languages=("ru",))
    await world.lawyer("Admin", ADMIN, role="admin")
    await world.report(DETAINED_NOW)  # 1 -> A
    await world.report(RU_DETAINED, hint="ru")  # 2 -> B
    assert (await world.case_row(1)).assigned_lawyer_id == a
    assert (await world.case_row(2)).assigned_lawyer_id == b
    event = await world.new_event(A, "Baku 2026-11-02")
    await world.say_text(A, f"/event add {event} 1")
    await world.say_text(B, f"/event add {event} 2")
    before = {address: len(world.sent(address)) for address in (A, B, ADMIN)}
    world.clock.advance(timedelta(days=2))  # 48 hours later, still the same raid
    await world.report(DETAINED_NOW)  # 3 -> A, who holds case 1 of the event
    assert (await world.case_row(3)).assigned_lawyer_id == a
    new_for_a = world.sent(A)[before[A] :]
    assert (
        f"Case #3 may be from the same raid as event {event} (your cases #1 are in it). "
        f"If so, send /event add {event} 3." in new_for_a
    )
    assert sum("same raid" in t for t in new_for_a) == 1
    assert not any("#2" in t for t in new_for_a), "nothing of B's case"
    assert not any("same raid" in t for t in world.sent(B)[before[B] :]), "B holds only case 2"
    assert world.sent(ADMIN)[before[ADMIN] :] == [
        f"Suggestion: case #3 may be from the same raid as event {event}."
    ]
    reporter = world.sent("telegram:reporter-3")
    assert not any("same raid" in t or f"event {event}" in t for t in reporter)
    # another city, no detention, or three days on: no suggestion
    counted = len(world.sent(ADMIN))
    await world.report(DETAINED_NOW | {"city": Choose("ganja")})
    await world.report(
        DETAINED_NOW
        | {
            "situation": Choose("other_incident"),
            "when": Choose("today"),
            "what_happened": ChooseMany(("threats",)),
        }
    )
    world.clock.advance(timedelta(days=1))
    await world.report(DETAINED_NOW)
    assert len(world.sent(ADMIN)) == counted, world.sent(ADMIN)[counted:]


# ---- deadlines --------------------------------------------------------------------------------


async def test_deadline_reminders_72h_24h_and_the_admin_alert_after(world: World) -> None:
    await world.lawyer("A", A)
    await world.lawyer("Admin", ADMIN, role="admin")
    await world.report(DETAINED_NOW)
    await world.say_text(A, "/accept 1")
    answer = await world.say_text(A, "/decision 1 fine 2026-11-02")
    assert answer.startswith("Decision recorded on case #1.")
    assert (
        "2026-11-12: appeal against the decision (Code of Administrative Offences: 10 days from "
        "receipt of the decision) (check with counsel)" in answer
    )
    assert "2026-11-12" in await world.say_text(A, "/deadlines")
    remind = world.casework.remind_deadlines

    async def job() -> int:
        sent = await remind()
        await world.deliver()
        return sent

    world.clock.now = datetime(2026, 11, 9, 23, 59, tzinfo=UTC)
    assert await job() == 0
    world.clock.now = datetime(2026, 11, 10, 0, 0, tzinfo=UTC)  # 72 hours before the end of 12th
    assert await job() == 1
    assert world.sent(A)[-1] == (
        "Deadline in 72 hours on case #1: appeal against the decision (Code of Administrative "
        "Offences: 10 days from receipt of the decision) (check with counsel). "
        "Last day: 2026-11-12."
    )
    assert await job() == 0, "once"
    world.clock.now = datetime(2026, 11, 12, 0, 0, tzinfo=UTC)
    assert await job() == 1
    assert world.sent(A)[-1].startswith("Deadline in 24 hours on case #1")
    admin_before = len(world.sent(ADMIN))
    world.clock.now = datetime(2026, 11, 12, 23, 59, tzinfo=UTC)
    assert await job() == 0 and len(world.sent(ADMIN)) == admin_before
    world.clock.now = datetime(2026, 11, 13, 0, 0, tzinfo=UTC)
    assert await job() == 1
    assert world.sent(ADMIN)[-1] == (
        "Alert: a deadline on case #1 passed on 2026-11-12 and the case is still open."
    )
    assert await job() == 0, "alerted once"
    assert await world.say_text(A, "/deadlines") == "You have no upcoming deadlines."


async def test_a_late_job_skips_to_the_latest_reminder_and_a_closed_case_alerts_nobody(
    world: World,
) -> None:
    await world.lawyer("A", A)
    await world.lawyer("Admin", ADMIN, role="admin")
    await world.report(DETAINED_NOW)
    await world.report(DETAINED_NOW)
    await world.say_text(A, "/decision 1 arrest 2026-11-01")
    await world.say_text(A, "/decision 2 court 2026-11-01")
    world.clock.now = datetime(2026, 11, 11, 6, 0, tzinfo=UTC)  # within 24 h of the 11th's end
    assert await world.casework.remind_deadlines() == 2
    await world.deliver()
    assert [t[:27] for t in world.sent(A)[-2:]] == ["Deadline in 24 hours on cas"] * 2
    await world.say_text(A, "/close 2 appealed")
    admin_before = len(world.sent(ADMIN))
    world.clock.now = datetime(2026, 11, 12, 0, 0, tzinfo=UTC)
    assert await world.casework.remind_deadlines() == 1
    await world.deliver()
    assert world.sent(ADMIN)[admin_before:] == [
        "Alert: a deadline on case #1 passed on 2026-11-11 and the case is still open."
    ]


async def test_retention_covers_an_open_deadline_within_the_ceiling(
    db: AsyncEngine, vault: KeyVault, engine_: Engine, clock: FrozenClock
) -> None:
    world = World(
        db, vault, engine_, clock, casework=CaseworkPolicy(max_retention=timedelta(days=100))
    )
    await world.lawyer("A", A)
    photo = Attachment(b"%PDF-1.4 original " + CANARY.encode())
    await world.report(DETAINED_NOW, attachment=photo)
    await world.report(DETAINED_NOW)
    original = (await world.case_row(1)).expires_at
    assert original == datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    # a fine decided today: its appeal ends well inside the 30 days kept anyway
    answer = await world.say_text(A, "/decision 1 fine 2026-11-02")
    assert (await world.case_row(1)).expires_at == original
    assert "kept until 2026-12-02 10:00 UTC" in answer
    # the final domestic decision: four months for Strasbourg, so the case is kept past them
    answer = await world.say_text(A, "/decision 1 appeal 2026-11-01")
    assert "2027-03-01: application to the European Court of Human Rights" in answer
    # with a ceiling of 100 days from submission, the case can only be kept until then
    ceiling = datetime(2027, 2, 10, 0, 0, tzinfo=UTC)
    assert (await world.case_row(1)).expires_at == ceiling
    assert "can be kept only until 2027-02-10 00:00 UTC" in answer and "/export 1" in answer
    async with world.uow() as u:
        files = (await u.session.execute(select(AttachmentRow.expires_at))).scalars().all()
    assert files == [ceiling], "its files are kept as long as the case"
    # under a higher ceiling, an open deadline is covered with a week's grace
    roomy = World(db, vault, engine_, clock)
    answer = await roomy.say_text(A, "/decision 2 appeal 2026-11-01")
    assert (await roomy.case_row(2)).expires_at == datetime(2027, 3, 9, 0, 0, tzinfo=UTC)
    assert "kept until 2027-03-09 00:00 UTC" in answer
    assert await _rows(world, Deadline) == 3
    for bad in (
        "/decision 1 fine 2030-01-01",
        "/decision 1 lunch 2026-11-01",
        "/decision 1 fine 31.02.2026",
        "/decision 1",
    ):
        answer = await world.say_text(A, bad)
        assert "cannot be in the future" in answer or answer.startswith("Record a decision"), bad
    assert await _rows(world, Deadline) == 3


# ---- originals and the package: only to the lawyer's chat, and over Telegram only if allowed --


async def test_case_and_export_send_files_to_a_signal_lawyer_only(
    db: AsyncEngine, vault: KeyVault, engine_: Engine, clock: FrozenClock
) -> None:
    for allowed in (False, True):
        world = World(db, vault, engine_, clock, content_over_telegram=allowed)
        telegram = f"telegram:{5050 + allowed}"
        lawyer = await world.lawyer(f"T{allowed}", telegram)
        original = b"%PDF-1.4 evidence " + CANARY.encode()
        await world.report(DETAINED_NOW, attachment=Attachment(original))
        async with world.uow() as u:
            number = (
                await u.session.execute(
                    select(Case.number).where(Case.assigned_lawyer_id == lawyer)
                )
            ).scalar_one()
        await world.say_text(telegram, f"/case {number}")
        shown = await world.say_text(telegram, f"/export {number}")
        if not allowed:
            assert world.files(telegram) == []
            assert shown == (
                "Case contents are sent over Signal only. Please use Signal to read this case."
            )
        else:
            captions = [caption for caption, _ in world.files(telegram)]
            assert (
                captions[0] == f"Original files of case #{number} (1), as the reporter sent them."
            )
            assert captions[1].startswith(f"Evidence package of case #{number}:")
            (_, (package,)) = world.files(telegram)[1]
            assert package.name == f"tipline-case-{number}.zip"  # type: ignore[attr-defined]
        await world.roster.revoke(lawyer)
    # the Signal lawyer gets the originals with /case and the package with /export
    signal_id = await world.lawyer("S", "signal:lawyer-s")
    await world.report(DETAINED_NOW, attachment=Attachment(b"%PDF-1.4 the original bytes"))
    async with world.uow() as u:
        number = (
            await u.session.execute(select(Case.number).where(Case.assigned_lawyer_id == signal_id))
        ).scalar_one()
    texts = await world.say_text("signal:lawyer-s", f"/case {number}")
    assert "Detained right now" in texts
    (caption, files) = world.files("signal:lawyer-s")[0]
    assert [(f.name, f.mime, f.data) for f in files] == [  # type: ignore[attr-defined]
        ("originals/01.pdf", "application/pdf", b"%PDF-1.4 the original bytes")
    ]
    await world.say_text("signal:lawyer-s", f"/export {number}")
    caption, (package,) = world.files("signal:lawyer-s")[1]
    data = package.data  # type: ignore[attr-defined]
    verdict = verify_package(data, [world.vault.keyring.public_key()])
    assert verdict.ok and verdict.case == number and verdict.files == 3, verdict
    assert world.vault.keyring.public_key().hex() in caption
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        record = json.loads(archive.read("case.json"))
        assert archive.read("originals/01.pdf") == b"%PDF-1.4 the original bytes"
    assert record["detention"]["detained"] is True
    assert record["location"]["geographical_term"] == "Baku"
    assert [a["act_type"] for a in record["acts"]] == [
        "arbitrary arrest or detention",
        "violation of privacy",
    ]
    async with world.uow() as u:
        from storage.models import AuditEntry

        actions = (await u.session.execute(select(AuditEntry.actor, AuditEntry.action))).all()
    assert (f"lawyer:{signal_id}", "case.export") in [tuple(a) for a in actions]
    assert all(CANARY not in a for _, a in actions)


# ---- who may use the new commands ---------------------------------------------------------


COMMANDS = [
    "/event new Baku 2026-11-01",
    "/event add 100 1",
    "/event 100",
    "/event",
    "/decision 1 fine 2026-11-01",
    "/decision",
    "/deadlines",
    "/export 1",
    "/export",
]


async def test_role_matrix_everyone_else_gets_the_generic_answer(world: World) -> None:
    a = await world.lawyer("A", A)
    await world.report(DETAINED_NOW)
    assert (await world.case_row(1)).assigned_lawyer_id == a
    _, code = await world.roster.invite(name="U", languages=["en"], regions=["all"])
    assert "verification phrase" in await world.say_text("signal:unverified", f"/register {code}")
    revoked = await world.lawyer("R", "signal:revoked")
    await world.roster.revoke(revoked)
    await world.say("telegram:reporter-x", event=Start("en"))
    for account in (
        "telegram:reporter-x",
        "signal:stranger",
        "signal:unverified",
        "signal:revoked",
    ):
        for command in COMMANDS:
            assert await world.say_text(account, command) == GENERIC, (account, command)
    # another lawyer learns nothing of A's case; an admin decides and exports nothing
    await world.lawyer("B", B)
    await world.lawyer("Admin", ADMIN, role="admin")
    event = await world.new_event(B)
    for command in (f"/event add {event} 1", "/decision 1 fine 2026-11-01", "/export 1"):
        assert await world.say_text(B, command) == GENERIC, command
    for command in ("/decision 1 fine 2026-11-01", "/export 1", "/deadlines"):
        assert await world.say_text(ADMIN, command) == GENERIC, command
    assert world.files(B) == [] and world.files(ADMIN) == []
    assert await _rows(world, EventCase) == 0 and await _rows(world, Deadline) == 0
    # an admin may group any case into an event, and sees every case in it
    assert "is now linked" in await world.say_text(ADMIN, f"/event add {event} 1")
    assert "Cases in it now: #1" in await world.say_text(ADMIN, f"/event {event}")
    assert "Your cases in it" not in await world.say_text(B, f"/event {event}")


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    command=st.sampled_from(
        ["event", "event new", "event add", "decision", "decision 1", "deadlines", "export"]
    ),
    args=st.one_of(
        st.text(max_size=60),
        st.builds(
            "{} {} {}".format,
            st.sampled_from(["1", "#1", "2", "0", "999999999", "-1", "new", "add", "Baku"]),
            st.sampled_from(["fine", "ARREST", "appeal", "штраф", "court", "1", "Bakı", "x"]),
            st.one_of(st.dates().map(str), st.dates().map(lambda d: d.strftime("%d.%m.%Y"))),
        ),
    ),
    slash=st.booleans(),
)
async def test_fuzzed_casework_arguments_never_crash(
    world: World, command: str, args: str, slash: bool
) -> None:
    if not hasattr(world, "ready"):
        await world.lawyer("A", A)
        await world.report(DETAINED_NOW)
        world.ready = True  # type: ignore[attr-defined]
    text = f"{'/' if slash else ''}{command} {args}"
    for address in (A, "signal:stranger"):
        shown = await world.say(address, text)
        assert all(isinstance(m.text, str) and m.text for m in shown), (address, text)
        if address == A and slash:
            assert shown or world.files(A), text
    assert (await world.case_row(1)).status in ("assigned", "accepted")
