"""Lawyers end to end with in-process channels and an injected clock, on every database."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.domain.engine import Engine
from bot.domain.messages import Choose
from bot.services.clock import FrozenClock
from bot.services.roster import LawyerError
from storage.keyring import Keyring
from storage.models import AuditEntry
from tests.helpers import DETAINED_NOW, DOCUMENTING
from tests.world import StaffWorld as World

COMMANDS = [
    "/cases",
    "/case 1",
    "/accept 1",
    "/decline 1",
    "/reply 1 hello",
    "/close 1 done",
    "/extend 1 10",
]


@pytest.fixture
async def world(db: AsyncEngine, keyring: Keyring, engine_: Engine, clock: FrozenClock) -> World:
    return World(db, keyring, engine_, clock)


A, B, C = "signal:lawyer-a", "signal:lawyer-b", "telegram:3030"
GENERIC = "This command is not available."


async def test_invite_register_verify_and_p1_reaches_on_call_lawyer(world: World) -> None:
    a = await world.lawyer("Aysel", A, on_call=False)
    b = await world.lawyer("Bahruz", B, on_call=True)
    code = await world.report(DETAINED_NOW, chat="r1")
    assert "New case #1, priority P1" in world.inbox.last(B)
    assert not any("New case" in t for t in world.inbox.sent.get(A, []))
    row = await world.case_row(1)
    assert row.assigned_lawyer_id == b and row.status == "assigned"
    # the case content is over Signal for the lawyer, and names nobody
    content = await world.say_text(B, "/case 1")
    assert "Detained right now" in content and "Police station 9" in content
    assert "r1" not in content and "telegram" not in content
    assert await world.status(code, "en") == "Your report has been passed to a lawyer."
    assert a != b


async def test_unaccepted_case_moves_on_after_15_minutes(world: World) -> None:
    first = await world.lawyer("One", A, on_call=True)
    second = await world.lawyer("Two", B, on_call=True)
    await world.report(DETAINED_NOW, chat="r1")
    assert (await world.case_row(1)).assigned_lawyer_id == first  # fewest open cases, lowest id
    world.clock.advance(timedelta(minutes=14))
    assert await world.lawyers.escalate() == 0
    world.clock.advance(timedelta(minutes=1))
    assert await world.lawyers.escalate() == 1
    assert (await world.case_row(1)).assigned_lawyer_id == second
    assert "New case #1" in world.inbox.last(B)
    # nobody left: the admins are alerted, once
    admin_id, admin_code = await world.lawyers.invite(
        name="Admin", languages=["en"], regions=["all"], role="admin"
    )
    phrase = (await world.lawyers.command("signal:admin", f"/register {admin_code}"))[0].split(
        "\n\n"
    )[1]
    await world.lawyers.verify(admin_id, phrase)
    world.clock.advance(timedelta(minutes=15))
    await world.lawyers.escalate()
    await world.lawyers.escalate()
    assert world.inbox.sent["signal:admin"][1:] == [
        "Alert: case #1 (P1) has no lawyer available to take it."
    ]
    assert (await world.case_row(1)).status == "new"
    # admins get alerts only: lawyer commands are generic for them
    assert await world.say_text("signal:admin", "/cases") == GENERIC


async def test_decline_and_revoke_reroute(world: World) -> None:
    a = await world.lawyer("A", A)
    b = await world.lawyer("B", B)
    await world.report(DETAINED_NOW, chat="r1")
    assert (await world.case_row(1)).assigned_lawyer_id == a
    assert "passed on" in await world.say_text(A, "/decline 1")
    assert (await world.case_row(1)).assigned_lawyer_id == b
    await world.report(DETAINED_NOW, chat="r2")  # case 2 goes to A (fewest open)
    assert (await world.case_row(2)).assigned_lawyer_id == a
    moved = await world.lawyers.revoke(b)
    assert moved == 1
    row = await world.case_row(1)
    assert row.assigned_lawyer_id is None and row.status == "new", "A declined it before"
    assert await world.say_text(B, "/cases") == GENERIC, "revoked at once"


async def test_reply_reporter_answer_close_and_extend(world: World) -> None:
    await world.lawyer("A", A)
    code = await world.report(DETAINED_NOW, chat="r1")  # contact: here
    assert "is yours" in await world.say_text(A, "/accept 1")
    assert await world.status(code, "en") == "A lawyer is working on your report."
    assert "delivered to the reporter" in await world.say_text(A, "/reply 1 Call me at the office")
    assert world.inbox.last("telegram:r1") == "You have a new message."
    await world.say_text("telegram:r1", "/read")
    assert world.inbox.last("telegram:r1") == "A lawyer wrote to you:\nCall me at the office"
    # the reporter answers with the code; the lawyer sees the case number only
    assert (
        await world.lawyers.reporter_reply(code, "I am at station 9", "en")
        == "Your message was passed to the lawyer."
    )
    assert world.inbox.last(A) == "Message from the reporter on case #1:\nI am at station 9"
    thread = await world.say_text(A, "/case 1")
    assert (
        "[to_reporter] Call me at the office" in thread
        and "[to_lawyer] I am at station 9" in thread
    )
    before = (await world.case_row(1)).expires_at
    assert "kept until" in await world.say_text(A, "/extend 1 60")
    assert (await world.case_row(1)).expires_at == before + timedelta(days=60)
    assert "1 to 90 days" in await world.say_text(A, "/extend 1 400")
    assert "is closed" in await world.say_text(A, "/close 1 released without charge")
    assert await world.say_text(A, "/case 1") == GENERIC
    assert await world.status(code, "en") == "Your report has been closed."
    async with world.uow() as u:
        actions = list(
            (await u.session.execute(select(AuditEntry.action).order_by(AuditEntry.id))).scalars()
        )
        assert await u.audit.verify() is None
    for action in (
        "lawyer.invite",
        "lawyer.register",
        "lawyer.verify",
        "case.assign",
        "case.accept",
        "case.reply",
        "case.extend.60d",
        "case.close",
    ):
        assert action in actions
    assert not any("office" in a or "station" in a for a in actions), "audit never holds content"


async def test_check_back_reporter_reads_replies_with_status(world: World) -> None:
    await world.lawyer("A", A, regions=("all",), languages=("ru",))
    code = await world.report(
        dict(DOCUMENTING) | {"needs_lawyer": Choose("yes")}, chat="r9", hint="ru"
    )
    assert world.inbox.last(A).startswith("Новое дело #1, приоритет P3")  # the lawyer's language
    answer = await world.say_text(A, "/reply 1 Позвоните нам")
    assert answer == "Ваше сообщение по делу #1 сохранено до проверки заявителем по коду."
    messages = await world.lawyers.reporter_messages(code, "ru")
    assert messages == ["Юрист написал вам:\nПозвоните нам"]
    assert not any("Позвоните" in t for t in world.inbox.sent.get("telegram:r9", []))


async def test_role_matrix_everyone_else_gets_the_same_answer(world: World) -> None:
    await world.lawyer("A", A)
    await world.report(DETAINED_NOW, chat="r1")
    unverified_id, code = await world.lawyers.invite(name="U", languages=["en"], regions=["baku"])
    assert "verification phrase" in await world.say_text("signal:unverified", f"/register {code}")
    revoked = await world.lawyer("R", "signal:revoked")
    await world.lawyers.revoke(revoked)
    accounts = ["telegram:r1", "signal:stranger", "signal:unverified", "signal:revoked"]
    for account in accounts:
        for command in [*COMMANDS, "/case 999", "/accept 2", "/register AAAA-AAAA-AAAA-AAAA"]:
            assert await world.say_text(account, command) == GENERIC, (account, command)
    assert (await world.case_row(1)).status == "assigned"
    with pytest.raises(LawyerError, match="phrase does not match"):
        await world.lawyers.verify(unverified_id, "wrong words here now")


async def test_lawyer_a_cannot_touch_lawyer_bs_case(world: World) -> None:
    a = await world.lawyer("A", A)
    await world.lawyer("B", B, regions=("ganja",))
    await world.report(DETAINED_NOW, chat="r1")  # Baku: A's case
    assert (await world.case_row(1)).assigned_lawyer_id == a
    for command in COMMANDS[1:]:
        assert await world.say_text(B, command) == GENERIC, command
    row = await world.case_row(1)
    assert row.status == "assigned" and row.assigned_lawyer_id == a
    assert await world.say_text(B, "/cases") == "You have no open cases."


async def test_expired_and_reused_invites_fail(world: World) -> None:
    _, code = await world.lawyers.invite(name="L", languages=["en"], regions=["all"])
    world.clock.advance(timedelta(hours=72, seconds=1))
    assert await world.say_text("signal:late", f"/register {code}") == GENERIC
    _, code2 = await world.lawyers.invite(name="M", languages=["en"], regions=["all"])
    assert "verification phrase" in await world.say_text("signal:first", f"/register {code2}")
    assert await world.say_text("signal:second", f"/register {code2}") == GENERIC


async def test_case_content_over_telegram_only_when_allowed(
    db: AsyncEngine, keyring: Keyring, engine_: Engine, clock: FrozenClock
) -> None:
    for allowed in (False, True):
        world = World(db, keyring, engine_, clock, content_over_telegram=allowed)
        address = f"telegram:{4040 + allowed}"
        lawyer_id = await world.lawyer(f"T{allowed}", address)
        code = await world.report(DETAINED_NOW, chat=f"rep{allowed}")
        number = int(re.search(r"#(\d+)", world.inbox.last(address)).group(1))  # type: ignore[union-attr]
        content = await world.say_text(address, f"/case {number}")
        await world.lawyers.reporter_reply(code, "secret detail", "en")
        if allowed:
            assert "Police station 9" in content
            assert "secret detail" in world.inbox.last(address)
        else:
            assert (
                content
                == "Case contents are sent over Signal only. Please use Signal to read this case."
            )
            assert all(
                "Police station" not in t and "secret detail" not in t
                for t in world.inbox.sent[address]
            )
        await world.lawyers.revoke(lawyer_id)  # the next round's case goes to the next lawyer


async def test_p4_goes_to_the_daily_digest_and_can_be_claimed(world: World) -> None:
    await world.lawyer("A", A, regions=("all",))
    await world.report(DOCUMENTING | {"language": Choose("en")}, chat="r1")
    assert "New case" not in "".join(world.inbox.sent.get(A, []))
    assert await world.lawyers.digest()
    assert (
        world.inbox.last(A) == "Documentation-only reports waiting: #1. Send /accept N to take one."
    )
    assert not await world.lawyers.digest(), "once a day"
    assert "is yours" in await world.say_text(A, "/accept 1")
    world.clock.advance(timedelta(days=1))
    assert not await world.lawyers.digest(), "nothing left waiting"


async def test_expiry_warning_72_hours_before(world: World) -> None:
    await world.lawyer("A", A)
    await world.report(DETAINED_NOW, chat="r1")
    await world.say_text(A, "/accept 1")
    assert await world.lawyers.warn_expiring() == 0
    world.clock.advance(timedelta(days=27, hours=1))
    assert await world.lawyers.warn_expiring() == 1
    assert "will be deleted on" in world.inbox.last(A)
    assert await world.lawyers.warn_expiring() == 0, "warned once"


async def test_admin_input_errors(world: World) -> None:
    for kwargs, fragment in [
        ({"name": "", "languages": ["en"], "regions": ["all"]}, "--name"),
        ({"name": "X", "languages": ["fr"], "regions": ["all"]}, "--languages"),
        ({"name": "X", "languages": ["en"], "regions": ["Baku!"]}, "--regions"),
    ]:
        with pytest.raises(LawyerError, match=fragment):
            await world.lawyers.invite(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(LawyerError, match="no lawyer with id 99"):
        await world.lawyers.revoke(99)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    command=st.sampled_from(
        [
            "register",
            "cases",
            "case",
            "accept",
            "decline",
            "reply",
            "close",
            "extend",
            "CASE",
            "reply@tipline_bot",
        ]
    ),
    args=st.text(max_size=80),
)
async def test_fuzzed_lawyer_commands_never_crash(world: World, command: str, args: str) -> None:
    if not hasattr(world, "ready"):
        await world.lawyer("A", A)
        await world.report(DETAINED_NOW, chat="r1")
        world.ready = True  # type: ignore[attr-defined]
    answer = await world.lawyers.command(A, f"/{command} {args}")
    assert answer and all(isinstance(a, str) and a for a in answer)


async def test_identity_change_suspends_reroutes_and_renew_restores(world: World) -> None:
    a = await world.lawyer("A", A, on_call=True)
    b = await world.lawyer("B", B, on_call=True)
    admin_id, admin_code = await world.lawyers.invite(
        name="Admin", languages=["en"], regions=["all"], role="admin"
    )
    phrase = (await world.lawyers.command("signal:admin", f"/register {admin_code}"))[0].split(
        "\n\n"
    )[1]
    await world.lawyers.verify(admin_id, phrase)
    await world.report(DETAINED_NOW, chat="r1")
    assert (await world.case_row(1)).assigned_lawyer_id == a
    await world.lawyers.identity_changed(A)
    assert (await world.case_row(1)).assigned_lawyer_id == b, "A's open case moved on"
    assert "safety number of lawyer 1 changed" in world.inbox.last("signal:admin")
    assert await world.say_text(A, "/cases") == GENERIC, "suspended at once"
    with pytest.raises(LawyerError):
        await world.lawyers.verify(a, "any words at all")
    code = await world.lawyers.renew(a)
    phrase = (await world.lawyers.command(A, f"/register {code}"))[0].split("\n\n")[1]
    await world.lawyers.verify(a, phrase)
    assert await world.say_text(A, "/cases") == "You have no open cases."
    with pytest.raises(LawyerError, match="can be renewed"):
        await world.lawyers.renew(99)
