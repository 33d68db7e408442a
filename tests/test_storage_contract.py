"""One storage contract, run on SQLite and on PostgreSQL (the ``db`` fixture)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.services.ports import Bucket, NewCase
from storage.crypto import DecryptionError
from storage.db import make_session_factory
from storage.keyring import Keyring
from storage.models import AuditEntry, Case, ChatLimit, Draft, StatCounter
from storage.repositories import SqlUnitOfWork
from tests.conftest import START
from tests.helpers import keep_chat

#: On the hour: expiry times at rest are whole hours (rounded up).
LATER = START.replace(minute=0) + timedelta(hours=1)


def uow(db: AsyncEngine, keyring: Keyring) -> SqlUnitOfWork:
    return SqlUnitOfWork(make_session_factory(db), keyring)


async def add_case(db: AsyncEngine, keyring: Keyring, receipt: str, **overrides: object) -> str:
    fields: dict[str, object] = {
        "receipt": receipt,
        "priority": 2,
        "status": "new",
        "created_on": date(2026, 11, 2),
        "expires_at": START + timedelta(days=30),
        "answers": {"own_words": "they came at night", "what_happened": ["detained"]},
        "meta": {"region": "baku", "language": "az"},
        "reply_address": "telegram:12345",
    }
    fields.update(overrides)
    async with uow(db, keyring) as u:
        case_id = await u.cases.add(NewCase(**fields))
        await u.commit()
    return case_id


async def test_draft_save_load_replace_delete(db: AsyncEngine, keyring: Keyring) -> None:
    async with uow(db, keyring) as u:
        assert await u.drafts.load("telegram", "42", START) is None
        await u.drafts.save("telegram", "42", {"step": 1}, LATER)
        await u.commit()
    async with uow(db, keyring) as u:
        assert await u.drafts.load("telegram", "42", START) == {"step": 1}
        assert await u.drafts.load("signal", "42", START) is None
        await u.drafts.save("telegram", "42", {"step": 2, "text": "ü"}, LATER)
        await u.commit()
    async with uow(db, keyring) as u:
        assert await u.drafts.load("telegram", "42", START) == {"step": 2, "text": "ü"}
        assert (await u.session.execute(select(Draft))).scalars().all().__len__() == 1
        assert await u.drafts.delete("telegram", "42") is True
        assert await u.drafts.delete("telegram", "42") is False
        await u.commit()
    async with uow(db, keyring) as u:
        assert await u.drafts.load("telegram", "42", START) is None


async def test_uncommitted_work_is_rolled_back(db: AsyncEngine, keyring: Keyring) -> None:
    async with uow(db, keyring) as u:
        await u.drafts.save("telegram", "7", {"a": 1}, LATER)
    async with uow(db, keyring) as u:
        assert await u.drafts.load("telegram", "7", START) is None


async def test_expired_draft_is_gone(db: AsyncEngine, keyring: Keyring) -> None:
    async with uow(db, keyring) as u:
        await u.drafts.save("signal", "u1", {"a": 1}, LATER)
        await u.commit()
    async with uow(db, keyring) as u:
        assert await u.drafts.load("signal", "u1", LATER) is None
        await u.commit()
    async with uow(db, keyring) as u:
        assert (await u.session.execute(select(Draft))).first() is None


async def test_draft_columns_hold_no_chat_id_or_content(db: AsyncEngine, keyring: Keyring) -> None:
    async with uow(db, keyring) as u:
        await u.drafts.save("telegram", "987654321", {"words": "secret words"}, LATER)
        await u.commit()
    async with uow(db, keyring) as u:
        row = (await u.session.execute(select(Draft))).scalar_one()
        values = [row.id, row.chat_pseudonym, row.state_ct, row.wrapped_dek]
    assert not any(b"987654321" in (v if isinstance(v, bytes) else v.encode()) for v in values)
    assert b"secret words" not in values[2]


async def test_a_rate_limit_row_holds_no_chat_id_and_links_to_nothing_else(
    db: AsyncEngine, keyring: Keyring
) -> None:
    async with uow(db, keyring) as u:
        await keep_chat(u, "telegram", "987654321", {"step": 1}, LATER, Bucket(3.0, START, False))
        await u.commit()
    async with uow(db, keyring) as u:
        key = (await u.session.execute(select(ChatLimit.key))).scalar_one()
        draft = (await u.session.execute(select(Draft.chat_pseudonym))).scalar_one()
    assert "987654321" not in key
    # The lookup of the chat's pseudonym under the limit label, under the current index key:
    # not the draft's lookup, not the pseudonym itself.
    inner = bytes.fromhex(keyring.pseudonym("limit:telegram", "987654321"))
    assert key == keyring.lookup(inner).hex()
    assert key not in {draft, keyring.pseudonym("telegram", "987654321"), inner.hex()}


async def test_case_add_status_and_decrypt(db: AsyncEngine, keyring: Keyring) -> None:
    case_id = await add_case(db, keyring, "AAAABBBBCCCCDDDD")
    async with uow(db, keyring) as u:
        assert await u.cases.status_by_receipt("AAAABBBBCCCCDDDD") == "new"
        assert await u.cases.status_by_receipt("AAAABBBBCCCCDDDE") is None
        content = await u.cases.get(case_id)
        assert await u.cases.get("missing") is None
        row = await u.session.get(Case, case_id)
        assert row is not None
        expires_at, receipt_hash = row.expires_at, row.receipt_hash
    assert content is not None
    assert content.answers["own_words"] == "they came at night"
    assert content.meta["region"] == "baku"
    assert content.reply_address == "telegram:12345"
    assert expires_at == START.replace(minute=0) + timedelta(days=30, hours=1), "rounded up"
    assert receipt_hash != b"AAAABBBBCCCCDDDD" and len(receipt_hash) == 32
    assert receipt_hash != keyring.receipt_hash("AAAABBBBCCCCDDDD"), "the stable hash is inside"


async def test_case_without_reply_address(db: AsyncEngine, keyring: Keyring) -> None:
    case_id = await add_case(db, keyring, "AAAABBBBCCCCEEEE", reply_address=None)
    async with uow(db, keyring) as u:
        content = await u.cases.get(case_id)
    assert content is not None and content.reply_address is None


async def test_swapped_ciphertext_between_rows_fails(db: AsyncEngine, keyring: Keyring) -> None:
    a = await add_case(db, keyring, "AAAAAAAAAAAAAAAA")
    b = await add_case(db, keyring, "BBBBBBBBBBBBBBBB", answers={"own_words": "other"})
    async with db.begin() as conn:
        row_a = (await conn.execute(select(Case.answers_ct).where(Case.id == a))).scalar_one()
        await conn.execute(update(Case).where(Case.id == b).values(answers_ct=row_a))
    async with uow(db, keyring) as u:
        with pytest.raises(DecryptionError):
            await u.cases.get(b)
        assert (await u.cases.get(a)) is not None


async def test_swapped_wrapped_dek_and_relabelled_key_id_fail(
    db: AsyncEngine, keyring: Keyring
) -> None:
    a = await add_case(db, keyring, "CCCCCCCCCCCCCCCC")
    b = await add_case(db, keyring, "DDDDDDDDDDDDDDDD")
    keyring.add_kek(START)
    async with db.begin() as conn:
        dek_a = (await conn.execute(select(Case.wrapped_dek).where(Case.id == a))).scalar_one()
        await conn.execute(update(Case).where(Case.id == b).values(wrapped_dek=dek_a))
        await conn.execute(update(Case).where(Case.id == a).values(kek_id=2))
    async with uow(db, keyring) as u:
        for case_id in (a, b):
            with pytest.raises(DecryptionError):
                await u.cases.get(case_id)


async def test_stats_counters_accumulate(db: AsyncEngine, keyring: Keyring) -> None:
    week = date(2026, 11, 2)
    for _ in range(3):
        async with uow(db, keyring) as u:
            await u.stats.increment(week, "baku", ["reports", "what.detained"])
            await u.commit()
    async with uow(db, keyring) as u:
        await u.stats.increment(week, "ganja", ["reports"])
        await u.commit()
    async with uow(db, keyring) as u:
        query = select(StatCounter).order_by(StatCounter.region, StatCounter.category)
        rows = [(r.region, r.category, r.count) for r in (await u.session.execute(query)).scalars()]
    assert rows == [
        ("baku", "reports", 3),
        ("baku", "what.detained", 3),
        ("ganja", "reports", 1),
    ]


async def test_audit_chain_detects_change_removal_and_reorder(
    db: AsyncEngine, keyring: Keyring
) -> None:
    async with uow(db, keyring) as u:
        for i, action in enumerate(["init", "lawyer.invite", "case.extend", "keys.rotate"]):
            await u.audit.append(
                "admin", action, "c1" if i == 2 else None, START + timedelta(minutes=i)
            )
        await u.commit()
    async with uow(db, keyring) as u:
        assert await u.audit.verify() is None
        ids = list(
            (await u.session.execute(select(AuditEntry.id).order_by(AuditEntry.id))).scalars()
        )

    async with db.begin() as conn:
        await conn.execute(
            update(AuditEntry).where(AuditEntry.id == ids[1]).values(action="lawyer.verify")
        )
    async with uow(db, keyring) as u:
        problem = await u.audit.verify()
    assert problem is not None and problem.entry_id == ids[1] and "changed" in problem.reason

    async with db.begin() as conn:
        await conn.execute(
            update(AuditEntry).where(AuditEntry.id == ids[1]).values(action="lawyer.invite")
        )
        await conn.execute(text("DELETE FROM audit_log WHERE id = :i"), {"i": ids[2]})
    async with uow(db, keyring) as u:
        problem = await u.audit.verify()
    assert problem is not None and problem.entry_id == ids[3]


async def test_audit_reorder_detected(db: AsyncEngine, keyring: Keyring) -> None:
    async with uow(db, keyring) as u:
        for i, action in enumerate(["a", "b", "c"]):
            await u.audit.append("admin", action, None, START + timedelta(minutes=i))
        await u.commit()
    async with db.begin() as conn:
        rows = (
            await conn.execute(select(AuditEntry.id, AuditEntry.action).order_by(AuditEntry.id))
        ).all()
        await conn.execute(update(AuditEntry).where(AuditEntry.id == rows[0].id).values(action="b"))
        await conn.execute(update(AuditEntry).where(AuditEntry.id == rows[1].id).values(action="a"))
    async with uow(db, keyring) as u:
        problem = await u.audit.verify()
    assert problem is not None and problem.entry_id == rows[0].id


async def test_another_keyring_reads_nothing(db: AsyncEngine, keyring: Keyring) -> None:
    case_id = await add_case(db, keyring, "EEEEEEEEEEEEEEEE")
    async with uow(db, keyring) as u:
        await u.drafts.save("telegram", "1", {"a": 1}, LATER)
        await u.commit()
    stranger = Keyring.generate(START)
    async with uow(db, stranger) as u:
        with pytest.raises(DecryptionError):
            await u.cases.get(case_id)
        assert await u.cases.status_by_receipt("EEEEEEEEEEEEEEEE") is None
        assert await u.drafts.load("telegram", "1", START) is None
