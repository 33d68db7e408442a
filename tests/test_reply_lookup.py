"""Migration 0010 over data written before it, on SQLite and PostgreSQL: cases with a reply
address get their keyed reply lookup when the service is unlocked (``upgrade_lookups``), the
ratchet re-keys it, /forget finds the chat's cases by it and shreds the address together with
its lookup and the inner hash in ``index_ct``; downgrade and upgrade again keep the data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.services.ports import NewCase
from storage import migrate
from storage.audit import INDEX_AUDIT, new_audit_token
from storage.crypto import RecordCipher, WrappedKey
from storage.db import make_engine, make_session_factory
from storage.index import CASE_REPLY, open_index, seal_index
from storage.keyring import KeyFile, KeyringFile, KeyVault
from storage.maintenance import Maintenance
from storage.models import Case
from storage.repositories import SqlUnitOfWork, case_values
from tests.conftest import START

CHAT = "telegram:4815162342"
OTHER = "signal:0b6d7a58-4c4c-4b8e-9c1e-5f2e0f6b9a11"


def legacy_case(vault: KeyVault, case_id: str, number: int, address: str | None) -> dict[str, Any]:
    """A case as the code before 0010 wrote it: no reply lookup, no reply inner hash."""
    ring, cipher = vault.keyring, RecordCipher(vault.keyring)
    case = NewCase(
        receipt=f"CODE{number:012d}",
        priority=2,
        status="new",
        created_on=START.date(),
        expires_at=START.replace(year=2027),
        answers={"own_words": "they came at night"},
        meta={"region": "baku"},
        reply_address=address,
    )
    values = case_values(ring, cipher, case_id, number, case)
    del values["reply_lookup"]
    dek = cipher.unwrap("cases", case_id, WrappedKey(values["kek_id"], values["wrapped_dek"]))
    index = open_index(cipher, dek, "cases", case_id, values["index_ct"])
    values["index_ct"] = seal_index(
        cipher, dek, "cases", case_id, {"receipt": index["receipt"], INDEX_AUDIT: new_audit_token()}
    )
    return values


async def lookups(engine: AsyncEngine) -> dict[str, str | None]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(Case.id, Case.reply_lookup))).all()
    return {r.id: r.reply_lookup for r in rows}


async def reply_inner_sealed(engine: AsyncEngine, vault: KeyVault, case_id: str) -> bool:
    cipher = RecordCipher(vault.keyring)
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(Case.id, Case.kek_id, Case.wrapped_dek, Case.index_ct).where(
                    Case.id == case_id
                )
            )
        ).one()
    dek = cipher.row_dek("cases", row)
    return CASE_REPLY.name in open_index(cipher, dek, "cases", case_id, row.index_ct)


async def test_old_cases_get_reply_lookups_and_forget_finds_them(
    db_url: str, tmp_path: Path
) -> None:
    engine = make_engine(db_url)
    vault = KeyVault.create(
        KeyringFile(tmp_path / "keyring"), KeyFile(bytes(range(32))), None, START
    )
    try:
        await migrate.upgrade(engine, "0009")
        async with engine.begin() as conn:
            for case_id, number, address in (("a", 1, CHAT), ("b", 2, OTHER), ("c", 3, None)):
                await conn.execute(
                    insert(Case).values(legacy_case(vault, case_id, number, address))
                )
        await migrate.upgrade(engine)
        assert await lookups(engine) == {"a": None, "b": None, "c": None}

        maintenance = Maintenance(engine, vault)
        assert await maintenance.upgrade_lookups(START) == 2, "the two with a reply address"
        assert await maintenance.upgrade_lookups(START) == 0, "idempotent"
        before = await lookups(engine)
        assert before["a"] and before["b"] and before["a"] != before["b"]
        assert before["c"] is None
        assert await reply_inner_sealed(engine, vault, "a")

        report = await maintenance.rotate(START)
        assert report.complete
        after = await lookups(engine)
        assert after["a"] and after["a"] != before["a"], "the ratchet re-keys the reply lookup"

        sessions = make_session_factory(engine)
        async with SqlUnitOfWork(sessions, vault.keyring, vault) as u:
            assert await u.cases.shred_reply_address(CHAT) == 1
            await u.commit()
        async with SqlUnitOfWork(sessions, vault.keyring, vault) as u:
            one, two = await u.cases.get("a"), await u.cases.get("b")
            assert one is not None and one.reply_address is None
            assert two is not None and two.reply_address == OTHER
            assert await u.cases.shred_reply_address(CHAT) == 0
        shredded = await lookups(engine)
        assert shredded["a"] is None and shredded["b"] == after["b"]
        assert not await reply_inner_sealed(engine, vault, "a"), "no inner hash left to match"
        assert await reply_inner_sealed(engine, vault, "b")

        await migrate.downgrade(engine, "0009")
        await migrate.upgrade(engine)
        async with engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(Case))).scalar() == 3
        assert await maintenance.upgrade_lookups(START) == 1, "b again: its lookup was dropped"
        async with SqlUnitOfWork(sessions, vault.keyring, vault) as u:
            assert await u.cases.shred_reply_address(OTHER) == 1
    finally:
        await engine.dispose()
