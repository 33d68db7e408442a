"""Migration 0009 over data written before it, on SQLite and PostgreSQL: the migration cuts
plaintext times to the hour; the keyed step the service runs at unlock (``upgrade_lookups``)
moves every lookup value into its row's ciphertext and re-keys it, gives cases audit tokens and
re-MACs the audit log with tokens and hours. Everything is still found afterwards; downgrade
and upgrade again work with the data present."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from storage import migrate
from storage.audit import GENESIS_MAC, TOKEN_HEX, Link
from storage.crypto import RecordCipher
from storage.db import make_engine, make_session_factory
from storage.keyring import KeyFile, KeyringFile, KeyVault
from storage.maintenance import Maintenance
from storage.models import AuditEntry, Case, Draft, Lawyer, SeenUpdate
from storage.repositories import SqlUnitOfWork
from tests.conftest import START

CODE = "ABCDEFGHIJKLMNOP"
CHAT = "4815162342"
UUID = "signal:0b6d7a58-4c4c-4b8e-9c1e-5f2e0f6b9a11"
PHRASE = "maple river coffee tiger"
FINE = datetime(2026, 11, 2, 9, 31, 17, tzinfo=UTC)
GONE = "f" * 32  # a case purged before the upgrade: its audit entries keep only its id


def naive(moment: datetime, url: str) -> datetime:
    return moment.replace(tzinfo=None) if url.startswith("sqlite") else moment


async def legacy_rows(engine: AsyncEngine, vault: KeyVault, url: str) -> None:
    """Rows as the code before 0009 wrote them: lookups were the stable hashes themselves,
    times were precise, the audit log named case ids under the old audit key."""
    ring, cipher = vault.keyring, RecordCipher(vault.keyring)
    t = naive(FINE, url)
    case_dek, case_key = cipher.new_dek("cases", "c1")
    draft_dek, draft_key = cipher.new_dek("drafts", "d1")
    lawyer_dek, lawyer_key = cipher.new_dek("lawyers", "1")
    msg_dek, msg_key = cipher.new_dek("case_messages", "m1")
    entries = []
    prev = GENESIS_MAC
    for actor, action, case in (
        ("admin", "init", None),
        ("system", "case.assign", GONE),
        ("lawyer:1", "case.accept", "c1"),
    ):
        link = Link(prev, FINE, actor, action, case)
        mac = link.legacy_mac(ring)
        entries.append((actor, action, case, prev, mac))
        prev = mac
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO cases (id, created_on, priority, status, expires_at, kek_id, "
                "wrapped_dek, receipt_hash, answers_ct, meta_ct, number, assigned_lawyer_id, "
                "assigned_at, admins_alerted, expiry_warned) VALUES ('c1', :d, 1, 'accepted', "
                ":t, :k, :w, :r, :a, :m, 1, 1, :t, false, false)"
            ),
            {
                "d": FINE.date(),
                "t": t,
                "k": case_key.kek_id,
                "w": case_key.wrapped,
                "r": ring.receipt_hash(CODE),
                "a": cipher.encrypt(case_dek, "cases", "c1", "answers", b"{}"),
                "m": cipher.encrypt(case_dek, "cases", "c1", "meta", b'{"region":"baku"}'),
            },
        )
        await conn.execute(
            text(
                "INSERT INTO drafts (id, chat_pseudonym, expires_at, kek_id, wrapped_dek, "
                "state_ct) VALUES ('d1', :p, :t, :k, :w, :s)"
            ),
            {
                "p": ring.pseudonym("telegram", CHAT),
                "t": naive(FINE.replace(year=2027), url),
                "k": draft_key.kek_id,
                "w": draft_key.wrapped,
                "s": cipher.encrypt(draft_dek, "drafts", "d1", "state", b'{"step":3}'),
            },
        )
        await conn.execute(
            text(
                "INSERT INTO lawyers (id, role, status, on_call, languages, regions, created_at, "
                "phrase_hash, contact_pseudonym, kek_id, wrapped_dek, name_ct, contact_ct) "
                "VALUES (1, 'lawyer', 'registered', true, 'en', 'baku', :t, :ph, :cp, :k, :w, "
                ":n, :c)"
            ),
            {
                "t": t,
                "ph": ring.receipt_hash("phrase:" + PHRASE),
                "cp": ring.pseudonym("staff", UUID),
                "k": lawyer_key.kek_id,
                "w": lawyer_key.wrapped,
                "n": cipher.encrypt(lawyer_dek, "lawyers", "1", "name", b"L"),
                "c": cipher.encrypt(lawyer_dek, "lawyers", "1", "contact", UUID.encode()),
            },
        )
        await conn.execute(
            text("INSERT INTO seen_updates (key, expires_at) VALUES (:k, :t)"),
            {
                "k": ring.pseudonym("update:telegram", "777"),
                "t": naive(FINE.replace(year=2027), url),
            },
        )
        await conn.execute(
            text(
                "INSERT INTO case_messages (id, case_id, direction, created_at, kek_id, "
                "wrapped_dek, body_ct) VALUES ('m1', 'c1', 'to_reporter', :t, :k, :w, :b)"
            ),
            {
                "t": t,
                "k": msg_key.kek_id,
                "w": msg_key.wrapped,
                "b": cipher.encrypt(
                    msg_dek, "case_messages", "m1", "body", json.dumps({"text": "hi"}).encode()
                ),
            },
        )
        for actor, action, case, prev_mac, mac in entries:
            await conn.execute(
                text(
                    "INSERT INTO audit_log (at, actor, action, case_id, prev_mac, mac) "
                    "VALUES (:t, :actor, :action, :case, :prev, :mac)"
                ),
                {
                    "t": t,
                    "actor": actor,
                    "action": action,
                    "case": case,
                    "prev": prev_mac,
                    "mac": mac,
                },
            )


async def test_migration_and_the_keyed_step_over_old_data(db_url: str, tmp_path: Path) -> None:
    engine = make_engine(db_url)
    vault = KeyVault.create(
        KeyringFile(tmp_path / "keyring"), KeyFile(bytes(range(32))), None, START
    )
    try:
        await migrate.upgrade(engine, "0008")
        await legacy_rows(engine, vault, db_url)
        await migrate.upgrade(engine)
        async with engine.connect() as conn:
            case = (await conn.execute(select(Case))).one()
            assert (case.expires_at.minute, case.assigned_at.minute) == (0, 0)
            assert case.expires_at == FINE.replace(hour=10, minute=0, second=0), "rounded up"
            assert case.assigned_at == FINE.replace(minute=0, second=0), "the hour"
            columns = (await conn.execute(text("SELECT * FROM case_messages"))).keys()
            assert "created_at" not in columns and "seq" in columns
            held = (await conn.execute(text("SELECT number FROM held_numbers"))).scalars().all()
            assert list(held) == [1], "numbers given out before stay held"

        changed = await Maintenance(engine, vault).upgrade_lookups(START)
        assert changed > 0
        assert await Maintenance(engine, vault).upgrade_lookups(START) == 0, "idempotent"
        ring = vault.keyring
        async with engine.connect() as conn:
            receipt = (await conn.execute(select(Case.receipt_hash))).scalar_one()
            chat = (await conn.execute(select(Draft.chat_pseudonym))).scalar_one()
            contact = (await conn.execute(select(Lawyer.contact_pseudonym))).scalar_one()
            seen = (await conn.execute(select(SeenUpdate.key))).scalar_one()
            audit = (await conn.execute(select(AuditEntry).order_by(AuditEntry.id))).all()
        assert receipt != ring.receipt_hash(CODE), "re-keyed: the stable hash is inside"
        assert chat != ring.pseudonym("telegram", CHAT)
        assert contact != ring.pseudonym("staff", UUID)
        assert seen != ring.pseudonym("update:telegram", "777")
        assert [a.action for a in audit] == ["init", "case.assign", "case.accept"]
        tokens = [a.case_token for a in audit if a.case_token]
        assert len(tokens) == 2 and all(len(t) == TOKEN_HEX for t in tokens)
        assert "c1" not in tokens and GONE not in tokens, "no case id is left"
        assert all(a.at.minute == 0 and a.at.second == 0 for a in audit)

        uow = SqlUnitOfWork(make_session_factory(engine), ring, vault)
        async with uow as u:
            assert await u.cases.status_by_receipt(CODE) == "accepted"
            assert await u.drafts.load("telegram", CHAT, START) == {"step": 3}
            assert await u.lawyers.by_address(UUID) is not None
            assert await u.lawyers.verify(1, PHRASE)
            assert not await u.seen.claim("telegram", "777", FINE.replace(year=2027))
            assert [m[2] for m in await u.assignments.messages("c1")] == ["hi"]
            assert await u.audit.verify() is None
            await u.commit()

        await migrate.downgrade(engine, "0008")
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM case_messages"))).scalar() == 1
        await migrate.upgrade(engine)
        assert await migrate.current(engine) == migrate.heads()[0]
    finally:
        await engine.dispose()
