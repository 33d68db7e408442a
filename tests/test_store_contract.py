"""One contract for every repository, through the ports only, on memory, SQLite and PostgreSQL.

What only SQL can show (ciphertext at rest, swapped rows, the audit chain's MACs) lives in
tests/test_storage_contract.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.services.ports import (
    Bucket,
    CaseStatus,
    Invitation,
    LawyerStatus,
    NewAttachment,
    NewCase,
    Role,
    StaffUnitOfWork,
)
from storage import migrate
from storage.db import is_sqlite, make_engine, make_session_factory
from storage.keyring import Keyring
from storage.memory import MemoryDatabase
from storage.repositories import SqlUnitOfWork
from tests.conftest import BACKENDS, START, backend_url, reset_postgres

#: On the hour: expiry times at rest are whole hours (rounded up).
LATER = START.replace(minute=0) + timedelta(hours=1)
Factory = Callable[[], StaffUnitOfWork]


@pytest.fixture(params=[pytest.param("memory", id="memory"), *BACKENDS])
async def uow(
    request: pytest.FixtureRequest, tmp_path: Path, keyring: Keyring
) -> AsyncIterator[Factory]:
    """A unit-of-work factory on every backend, over an empty store."""
    if request.param == "memory":
        database = MemoryDatabase()
        yield database.uow
        return
    url = backend_url(request.param, tmp_path)
    engine = make_engine(url)
    if not is_sqlite(url):
        await reset_postgres(engine)
    await migrate.upgrade(engine)
    sessions = make_session_factory(engine)
    try:
        yield lambda: SqlUnitOfWork(sessions, keyring)
    finally:
        if not is_sqlite(url):
            await reset_postgres(engine)
        await engine.dispose()


async def add_case(uow: Factory, receipt: str, **overrides: Any) -> str:
    fields: dict[str, Any] = {
        "receipt": receipt,
        "priority": 2,
        "status": CaseStatus.NEW,
        "created_on": date(2026, 11, 2),
        "expires_at": START + timedelta(days=30),
        "answers": {"own_words": "they came at night"},
        "meta": {"region": "baku", "language": "az"},
        "reply_address": "telegram:12345",
    }
    fields.update(overrides)
    async with uow() as u:
        case_id = await u.cases.add(NewCase(**fields))
        await u.commit()
    return case_id


async def test_drafts_save_load_expire_delete_and_roll_back(uow: Factory) -> None:
    async with uow() as u:
        await u.drafts.save("telegram", "42", {"step": 1}, LATER)
        await u.drafts.save("signal", "9", {"lost": True}, LATER)
    async with uow() as u:
        assert await u.drafts.load("signal", "9", START) is None, "not committed"
        await u.drafts.save("telegram", "42", {"step": 1}, LATER)
        await u.commit()
    async with uow() as u:
        assert await u.drafts.load("telegram", "42", START) == {"step": 1}
        assert await u.drafts.load("signal", "42", START) is None
        await u.drafts.save("telegram", "42", {"step": 2, "text": "ü"}, LATER)
        await u.commit()
    async with uow() as u:
        assert await u.drafts.load("telegram", "42", START) == {"step": 2, "text": "ü"}
        assert await u.drafts.load("telegram", "42", LATER) is None, "expired"
        assert await u.drafts.delete("telegram", "42") is False, "an expired draft is gone"


async def test_cases_by_receipt_content_and_shredded_address(uow: Factory) -> None:
    first = await add_case(uow, "AAAABBBBCCCCDDDD")
    second = await add_case(uow, "EEEEFFFFGGGGHHHH", reply_address=None, priority=4)
    async with uow() as u:
        assert await u.cases.status_by_receipt("AAAABBBBCCCCDDDD") == CaseStatus.NEW
        assert await u.cases.id_by_receipt("EEEEFFFFGGGGHHHH") == second
        assert await u.cases.id_by_receipt("ZZZZZZZZZZZZZZZZ") is None
        content = await u.cases.get(first)
        assert content is not None and content.answers == {"own_words": "they came at night"}
        assert content.reply_address == "telegram:12345" and content.meta["region"] == "baku"
        assert await u.cases.shred_reply_address("telegram:12345") == 1
        await u.commit()
    async with uow() as u:
        content = await u.cases.get(first)
        assert content is not None and content.reply_address is None
        one, two = await u.assignments.by_id(first), await u.assignments.by_id(second)
        assert one is not None and two is not None and one.number != two.number
        assert all(1000 <= n <= 9999 for n in (one.number, two.number)), "four random digits"
        assert await u.assignments.by_number(two.number) == two


async def test_attachments_seen_updates_and_stats(uow: Factory) -> None:
    async with uow() as u:
        ref = await u.attachments.add(
            NewAttachment(b"\x89PNG raw", b"jpeg", {"kind": "image"}, LATER)
        )
        await u.attachments.set_expiry([ref], LATER + timedelta(days=1))
        assert await u.seen.claim("telegram", "1001", LATER) is True
        assert await u.seen.claim("telegram", "1001", LATER) is False
        assert await u.seen.claim("signal", "1001", LATER) is True
        await u.stats.increment(date(2026, 11, 2), "baku", ["reports", "what.detained"])
        await u.stats.increment(date(2026, 11, 2), "baku", ["reports"])
        await u.commit()
    async with uow() as u:
        assert await u.seen.claim("telegram", "1001", LATER) is False, "claims are durable"
        found = await u.attachments.get(ref)  # type: ignore[attr-defined]
        assert found is not None and found.original == b"\x89PNG raw" and found.clean == b"jpeg"


async def test_rate_limit_buckets_round_trip_replace_prune_and_roll_back(uow: Factory) -> None:
    # A precise time with microseconds and a fraction of a token: both come back exactly.
    moment = START + timedelta(seconds=7, microseconds=123456)
    async with uow() as u:
        assert await u.limits.get("telegram", "42") is None
        await u.limits.put("signal", "9", Bucket(1.0, START, False))
    async with uow() as u:
        assert await u.limits.get("signal", "9") is None, "not committed"
        await u.limits.put("telegram", "42", Bucket(2.75, moment, True))
        await u.limits.put("signal", "42", Bucket(4.5, START, False))  # same id, other channel
        await u.commit()
    async with uow() as u:
        assert await u.limits.get("telegram", "42") == Bucket(2.75, moment, True)
        assert await u.limits.get("signal", "42") == Bucket(4.5, START, False)
        assert await u.limits.get("telegram", "43") is None
        later = Bucket(0.125, moment + timedelta(seconds=1), False)
        await u.limits.put("telegram", "42", later)
        assert await u.limits.get("telegram", "42") == later, "replaced in the transaction"
        await u.commit()
    async with uow() as u:
        assert await u.limits.get("telegram", "42") == later
        assert await u.limits.prune(START - timedelta(microseconds=1)) == 0
        assert await u.limits.prune(START) == 1, "counted at or before: forgotten"
        assert await u.limits.get("signal", "42") is None
        assert await u.limits.get("telegram", "42") == later
    async with uow() as u:
        assert await u.limits.get("signal", "42") == Bucket(4.5, START, False), "rolled back"


async def test_lawyer_lifecycle_follows_the_domain(uow: Factory) -> None:
    async with uow() as u:
        lawyer = await u.lawyers.invite(
            Invitation(
                name="Aysel",
                role=Role.LAWYER,
                languages=("az", "en"),
                regions=("baku",),
                on_call=True,
                invite_code="INVITE0000000001",
                expires_at=LATER,
                now=START,
            )
        )
        admin = await u.lawyers.invite(
            Invitation(
                name="Admin",
                role=Role.ADMIN,
                languages=("en",),
                regions=("all",),
                on_call=False,
                invite_code="INVITE0000000002",
                expires_at=LATER,
                now=START,
            )
        )
        assert await u.lawyers.register("INVITE0000000001", "signal:a", "one two", LATER) is None
        record = await u.lawyers.register("INVITE0000000001", "signal:a", "one two", START)
        assert record is not None and record.status == LawyerStatus.REGISTERED
        assert await u.lawyers.register("INVITE0000000001", "signal:b", "x", START) is None
        assert await u.lawyers.register("INVITE0000000002", "signal:a", "x", START) is None
        assert await u.lawyers.register("INVITE0000000002", "signal:adm", "x y", START)
        assert await u.lawyers.verify(lawyer, "wrong words") is False
        assert await u.lawyers.verify(lawyer, "one two") is True
        assert await u.lawyers.verify(admin, "x y") is True
        await u.commit()
    async with uow() as u:
        found = await u.lawyers.by_address("signal:a")
        assert found is not None and found.id == lawyer and found.name == "Aysel"
        assert found.languages == ("az", "en") and found.on_call
        assert await u.lawyers.contact(lawyer) == "signal:a"
        assert await u.lawyers.admin_contacts() == ["signal:adm"]
        names = [x.name for x in await u.lawyers.all(with_names=False)]
        assert names == ["", ""]
        assert await u.lawyers.set_status(lawyer, LawyerStatus.SUSPENDED)
        assert await u.lawyers.verify(lawyer, "one two") is False, "suspension needs a new invite"
        assert await u.lawyers.renew_invite(lawyer, "INVITE0000000003", LATER)
        assert await u.lawyers.by_address("signal:a") is None
        assert await u.lawyers.set_status(lawyer, LawyerStatus.REVOKED, forget_contact=True)
        assert not await u.lawyers.renew_invite(lawyer, "INVITE0000000004", LATER)
        assert not await u.lawyers.set_status(lawyer, LawyerStatus.VERIFIED)
        assert await u.lawyers.get(999) is None


async def test_assignment_waiting_expiring_and_the_relay(uow: Factory) -> None:
    urgent = await add_case(uow, "AAAABBBBCCCCDDDD", priority=1)
    documenting = await add_case(uow, "EEEEFFFFGGGGHHHH", priority=4)
    async with uow() as u:
        lawyer = await u.lawyers.invite(
            Invitation(
                name="L",
                role=Role.LAWYER,
                languages=("en",),
                regions=("all",),
                on_call=False,
                invite_code="INVITE0000000001",
                expires_at=LATER,
                now=START,
            )
        )
        assert [c.id for c in await u.assignments.waiting()] == [urgent]
        assert [c.id for c in await u.assignments.unassigned_documentation(date(2026, 11, 1))] == [
            documenting
        ]
        await u.assignments.assign(urgent, lawyer, START)
        assert await u.assignments.tried(urgent) == {lawyer}
        assigned = await u.assignments.assigned_to(lawyer)
        assert [c.status for c in assigned] == [CaseStatus.ASSIGNED]
        assert [x.open_cases for x in await u.lawyers.all()] == [0], "only accepted cases count"
        await u.assignments.update(urgent, status=CaseStatus.ACCEPTED)
        assert [x.open_cases for x in await u.lawyers.all()] == [1]
        await u.assignments.add_message(urgent, "to_reporter", "hello", START)
        await u.assignments.add_message(urgent, "to_lawyer", "thanks", LATER)
        await u.assignments.mark_run("digest", START)
        await u.commit()
    async with uow() as u:
        assert [m[2] for m in await u.assignments.messages(urgent)] == ["hello", "thanks"]
        assert await u.assignments.last_run("digest") == START.replace(minute=0), "the hour"
        expiring = await u.assignments.expiring(START + timedelta(days=31))
        assert [c.id for c in expiring] == [urgent]
        await u.assignments.release(urgent)
        released = await u.assignments.by_id(urgent)
        assert released is not None and released.status == CaseStatus.NEW
        assert released.assigned_lawyer_id is None
        assert await u.assignments.tried(urgent) == {lawyer}, "never offered to them again"
        everything = await u.assignments.all_open()
        assert {c.id for c in everything} == {urgent, documenting}
        assert [c.number for c in everything] == sorted(c.number for c in everything)


async def test_outbox_keeps_order_per_chat_and_waits_behind_a_retry(uow: Factory) -> None:
    async with uow() as u:
        written = await u.outbox.put_many(
            [
                ("telegram", "1", {"n": 1}),
                ("telegram", "2", {"n": 2}),
                ("telegram", "1", {"n": 3}),
                ("signal", "1", {"n": 4}),
            ],
            START,
            LATER,
        )
        await u.commit()
    assert [e.payload["n"] for e in written] == [1, 2, 3, 4]
    assert all(e.payload["to"] in ("1", "2") for e in written)
    async with uow() as u:
        heads = await u.outbox.due_heads("telegram", START)
        assert [h.payload["n"] for h in heads] == [1, 2], "one head per chat, in order"
        await u.outbox.retry_at(heads[0].id, LATER, 1)
        await u.commit()
    async with uow() as u:
        assert [h.payload["n"] for h in await u.outbox.due_heads("telegram", START)] == [2]
        later = await u.outbox.due_heads("telegram", LATER)
        assert [(h.payload["n"], h.attempts) for h in later] == [(1, 1), (2, 0)]
        await u.outbox.done([later[0].id])
        await u.commit()
    async with uow() as u:
        assert [h.payload["n"] for h in await u.outbox.due_heads("telegram", LATER)] == [2, 3]
        assert await u.outbox.depth() == {"telegram": 2, "signal": 1}
        lane = written[0].lane
        await u.outbox.set_screen(lane, ["7@1", "8@2"], LATER)
        await u.commit()
    async with uow() as u:
        assert await u.outbox.screen(lane) == ["7@1", "8@2"]
        await u.outbox.set_screen(lane, [], LATER)
        assert await u.outbox.screen(lane) == []


async def test_the_signal_inbox_keeps_envelopes_until_done(uow: Factory) -> None:
    async with uow() as u:
        first, _ = await u.signal_inbox.put_many(  # type: ignore[attr-defined]
            [{"envelope": 1}, {"envelope": 2}], START, LATER
        )
        await u.commit()
    async with uow() as u:
        items = await u.signal_inbox.due(None)  # type: ignore[attr-defined]
        assert [i.payload for i in items] == [{"envelope": 1}, {"envelope": 2}]
        await u.signal_inbox.done(first)
        await u.commit()
    async with uow() as u:
        assert [i.payload for i in await u.signal_inbox.due(None)] == [{"envelope": 2}]  # type: ignore[attr-defined]


async def test_an_inbox_takes_a_whole_poll_at_once_in_order(uow: Factory) -> None:
    async with uow() as u:
        ids = await u.telegram_inbox.put_many(  # type: ignore[attr-defined]
            [{"update_id": n} for n in (5, 3, 9)], START, LATER
        )
        assert await u.telegram_inbox.put_many([], START, LATER) == []  # type: ignore[attr-defined]
        await u.commit()
    async with uow() as u:
        items = await u.telegram_inbox.due(None)  # type: ignore[attr-defined]
        assert [i.id for i in items] == ids
        assert [i.payload for i in items] == [{"update_id": 5}, {"update_id": 3}, {"update_id": 9}]
        assert await u.signal_inbox.due(None) == []  # type: ignore[attr-defined]
