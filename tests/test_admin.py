"""Admin operations: rotation (interrupted and resumed), crypto-erase, wipe, audit, statistics."""

from __future__ import annotations

import asyncio
import os
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.domain.engine import Engine
from bot.jobs import expiry_job
from bot.services.admin import AdminService
from bot.services.clock import FrozenClock
from bot.services.ports import NewCase
from storage import migrate
from storage.crypto import DecryptionError, RecordCipher, WrappedKey
from storage.db import make_engine, make_session_factory
from storage.keyring import KeyFile, KeyringFile, KeyVault
from storage.maintenance import Maintenance, RotationInterrupted
from storage.models import AuditEntry, Case, Draft, KeyState
from storage.repositories import KeyringOutOfDate, SqlUnitOfWork
from tests.conftest import START
from tests.helpers import CANARY, DETAINED_NOW, DOCUMENTING
from tests.test_intake import Harness


@pytest.fixture
def secret(tmp_path: Path) -> KeyFile:
    return KeyFile(os.urandom(32))


@pytest.fixture
def vault(tmp_path: Path, secret: KeyFile) -> KeyVault:
    return KeyVault.create(KeyringFile(tmp_path / "keyring"), secret, None, START)


async def fill(
    db: AsyncEngine,
    vault: KeyVault,
    cases: int,
    drafts: int,
    *,
    expires: timedelta = timedelta(days=30),
) -> list[str]:
    ids = []
    uow = SqlUnitOfWork(make_session_factory(db), vault.keyring, vault)
    for i in range(cases):
        async with uow as u:
            ids.append(
                await u.cases.add(
                    NewCase(
                        receipt=os.urandom(8).hex(),
                        priority=3,
                        status="new",
                        created_on=START.date(),
                        expires_at=START + expires,
                        answers={"own_words": f"case {i} {CANARY}"},
                        meta={"region": "baku"},
                        reply_address=None,
                    )
                )
            )
            await u.commit()
    for i in range(drafts):
        async with uow as u:
            await u.drafts.save("telegram", f"chat{i}", {"n": i}, START + expires)
            await u.commit()
    return ids


async def read_everything(db: AsyncEngine, vault: KeyVault) -> tuple[int, int]:
    async with SqlUnitOfWork(make_session_factory(db), vault.keyring, vault) as u:
        ids = list((await u.session.execute(select(Case.id))).scalars())
        for case_id in ids:
            content = await u.cases.get(case_id)
            assert content is not None and CANARY in content.answers["own_words"]
        drafts = 0
        for i in range(100):
            if await u.drafts.load("telegram", f"chat{i}", START) is not None:
                drafts += 1
    return len(ids), drafts


async def test_rotation_interrupted_then_resumed(
    db: AsyncEngine, vault: KeyVault, secret: KeyFile
) -> None:
    await fill(db, vault, cases=11, drafts=5)
    maintenance = Maintenance(db, vault, batch_size=3)

    def crash_after(k: int):  # type: ignore[no-untyped-def]
        def hook(batches: int) -> None:
            if batches == k:
                raise RotationInterrupted

        return hook

    with pytest.raises(RotationInterrupted):
        await maintenance.rotate(START, after_batch=crash_after(3))  # 2 draft batches, 1 case batch
    # the crash left both KEKs in the file and a mix of wrapped DEKs in the database
    on_disk = KeyringFile(vault.file.path).load(secret)
    assert sorted(on_disk.keks) == [1, 2] and on_disk.current_kek_id == 2
    async with db.connect() as conn:
        kek_ids = set((await conn.execute(select(Case.kek_id))).scalars())
    assert kek_ids == {1, 2}
    assert await read_everything(db, vault) == (11, 5)

    # a fresh process (new vault from the file) resumes with the same new KEK
    fresh = KeyringFile(vault.file.path).open(secret)
    report = await Maintenance(db, fresh, batch_size=3).rotate(START)
    assert report.complete and report.current_kek_id == 2 and report.destroyed == (1,)
    assert sorted(KeyringFile(vault.file.path).load(secret).keks) == [2]
    assert await read_everything(db, fresh) == (11, 5)
    async with db.connect() as conn:
        assert set((await conn.execute(select(Case.kek_id))).scalars()) == {2}
        assert set((await conn.execute(select(Draft.kek_id))).scalars()) == {2}
        assert (await conn.execute(select(KeyState.current_kek_id))).scalar_one() == 2
    with pytest.raises(DecryptionError):
        fresh.keyring.kek(1)


@pytest.mark.parametrize("crash_at", [0, 1, 4])
async def test_rotation_resumes_from_any_batch(
    db: AsyncEngine, vault: KeyVault, secret: KeyFile, crash_at: int
) -> None:
    await fill(db, vault, cases=8, drafts=2)
    maintenance = Maintenance(db, vault, batch_size=2)
    if crash_at:
        with pytest.raises(RotationInterrupted):
            await maintenance.rotate(
                START,
                after_batch=lambda b: (
                    (_ for _ in ()).throw(RotationInterrupted) if b == crash_at else None
                ),
            )
    else:
        # crash right after the new KEK reached the file, before anything else
        vault.keyring.add_kek(START)
        vault.persist()
    report = await Maintenance(db, KeyringFile(vault.file.path).open(secret), batch_size=2).rotate(
        START
    )
    assert report.complete and report.current_kek_id == 2
    assert sorted(KeyringFile(vault.file.path).load(secret).keks) == [2]


async def test_running_bot_picks_up_a_rotation(
    db: AsyncEngine, vault: KeyVault, secret: KeyFile
) -> None:
    bot_vault = KeyringFile(vault.file.path).open(secret)  # another process, same keyring
    sessions = make_session_factory(db)
    async with SqlUnitOfWork(sessions, bot_vault.keyring, bot_vault) as u:
        await u.drafts.save("telegram", "early", {"a": 1}, START + timedelta(hours=1))
        await u.commit()
    await Maintenance(db, vault).rotate(START)
    # the bot still holds KEK 1 in memory; its next transaction must reload, not write under KEK 1
    assert bot_vault.keyring.current_kek_id == 1
    async with SqlUnitOfWork(sessions, bot_vault.keyring, bot_vault) as u:
        assert await u.drafts.load("telegram", "early", START) == {"a": 1}
        await u.drafts.save("telegram", "late", {"b": 2}, START + timedelta(hours=1))
        await u.commit()
    assert bot_vault.keyring.current_kek_id == 2
    async with db.connect() as conn:
        assert set((await conn.execute(select(Draft.kek_id))).scalars()) == {2}


async def test_a_bot_with_an_old_keyring_writes_nothing_after_a_rotation(
    db: AsyncEngine, vault: KeyVault, secret: KeyFile
) -> None:
    if db.dialect.name == "sqlite":
        pytest.skip("SQLite: the keyring file is the published state, there is no other")
    stale = KeyringFile(vault.file.path).open(secret).keyring  # a copy from before, no file
    await Maintenance(db, vault).rotate(START)

    async def write() -> None:
        async with SqlUnitOfWork(make_session_factory(db), stale) as u:
            await u.drafts.save("telegram", "late", {"b": 2}, START + timedelta(hours=1))
            await u.commit()

    with pytest.raises(KeyringOutOfDate):
        await write()
    async with db.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(Draft))).scalar_one() == 0


async def test_a_rotation_publishes_only_once_open_writers_have_committed(
    db: AsyncEngine, vault: KeyVault, secret: KeyFile
) -> None:
    if db.dialect.name == "sqlite":
        pytest.skip("SQLite: one writer at a time; the keyring file is the published state")
    bot_vault = KeyringFile(vault.file.path).open(secret)  # another process, same keyring
    sessions = make_session_factory(db)
    async with SqlUnitOfWork(sessions, bot_vault.keyring, bot_vault) as u:
        # Its key check is done: KEK 1 is current, and this transaction writes under it.
        await u.drafts.save("telegram", "open", {"a": 1}, START + timedelta(hours=1))
        rotation = asyncio.create_task(Maintenance(db, vault).rotate(START))
        assert await _key_state_waits(db)
        assert not rotation.done()
        await u.commit()
    await rotation
    # Written under KEK 1 before the publish, re-wrapped by the rotation: readable with KEK 2.
    async with db.connect() as conn:
        assert set((await conn.execute(select(Draft.kek_id))).scalars()) == {2}
    async with SqlUnitOfWork(sessions, vault.keyring, vault) as u:
        assert await u.drafts.load("telegram", "open", START) == {"a": 1}


async def _key_state_waits(db: AsyncEngine) -> bool:
    """Whether some transaction comes to wait for the key state's lock (polled, bounded)."""
    query = text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
    for _ in range(500):
        async with db.connect() as conn:
            if (await conn.execute(query)).scalar_one():
                return True
        await asyncio.sleep(0.01)
    return False


async def test_an_older_process_publishing_with_a_plain_update_waits_too(
    db: AsyncEngine, vault: KeyVault
) -> None:
    # A process of an earlier version publishes a KEK by updating the row alone (it took a
    # shared row lock at BEGIN); the trigger of migration 0012 makes it wait as a new one does.
    if db.dialect.name == "sqlite":
        pytest.skip("SQLite: one writer at a time; the keyring file is the published state")

    async def publish_as_before() -> None:
        async with db.begin() as conn:
            await conn.execute(text("UPDATE key_state SET current_kek_id = current_kek_id + 1"))

    async with SqlUnitOfWork(make_session_factory(db), vault.keyring, vault) as u:
        await u.drafts.save("telegram", "open", {"a": 1}, START + timedelta(hours=1))
        publish = asyncio.create_task(publish_as_before())
        assert await _key_state_waits(db)
        assert not publish.done()
        await u.commit()
    await publish
    async with db.connect() as conn:
        published = (await conn.execute(select(KeyState.current_kek_id))).scalar_one()
    assert published == vault.keyring.current_kek_id + 1


async def test_key_status_counts_records(db: AsyncEngine, vault: KeyVault) -> None:
    await fill(db, vault, cases=3, drafts=2)
    status = await Maintenance(db, vault).key_status()
    assert [(k.kek_id, k.current, k.records) for k in status] == [
        (1, True, {"cases": 3, "drafts": 2})
    ]


async def test_purge_deletes_expired_and_ratchets(db: AsyncEngine, vault: KeyVault) -> None:
    await fill(db, vault, cases=4, drafts=2, expires=timedelta(days=1))
    await fill(db, vault, cases=3, drafts=0, expires=timedelta(days=40))
    maintenance = Maintenance(db, vault)
    later = START + timedelta(days=2)
    dry = await maintenance.purge(later, dry_run=True)
    assert dry.expired["drafts"] == 2 and dry.expired["cases"] == 4
    assert sum(dry.expired.values()) == 6
    assert dry.rotation is None
    report = await maintenance.purge(later)
    assert report.expired["drafts"] == 2 and report.expired["cases"] == 4
    assert report.rotation is not None and report.rotation.destroyed == (1,)
    async with db.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(Case))).scalar_one() == 3
    again = await maintenance.purge(later)
    assert not any(again.expired.values()) and again.rotation is None


async def test_crypto_erase_old_copy_is_unreadable(
    tmp_path: Path, vault: KeyVault, secret: KeyFile
) -> None:
    """Copy the database and its WAL before a purge; afterwards the purged cases in the copy
    cannot be decrypted with the keys that remain, and the live files hold none of their bytes."""
    live = tmp_path / "live"
    live.mkdir()
    db = make_engine(f"sqlite+aiosqlite:///{live / 'tipline.db'}")
    await migrate.upgrade(db)
    doomed = await fill(db, vault, cases=5, drafts=0, expires=timedelta(days=1))
    kept = await fill(db, vault, cases=2, drafts=0, expires=timedelta(days=60))
    async with db.connect() as conn:
        rows = (
            await conn.execute(
                select(Case.id, Case.answers_ct, Case.wrapped_dek).where(Case.id.in_(doomed))
            )
        ).all()
    assert any(p.name.endswith("-wal") for p in live.iterdir())
    backup = tmp_path / "backup"
    shutil.copytree(live, backup)  # database file and WAL, as a seized backup would hold them

    report = await Maintenance(db, vault).purge(START + timedelta(days=2))
    assert report.checkpointed
    await db.dispose()

    remaining = KeyringFile(vault.file.path).load(secret)  # current keyring + root key
    cipher = RecordCipher(remaining)
    old = make_engine(f"sqlite+aiosqlite:///{backup / 'tipline.db'}")
    async with old.connect() as conn:
        old_rows = (
            await conn.execute(
                select(Case.id, Case.kek_id, Case.wrapped_dek).where(Case.id.in_(doomed))
            )
        ).all()
    await old.dispose()
    assert len(old_rows) == 5, "the old copy still holds the purged rows"
    for row in old_rows:
        with pytest.raises(DecryptionError):
            cipher.unwrap("cases", row.id, WrappedKey(row.kek_id, row.wrapped_dek))
        for kek_id in remaining.keks:  # not under any key that remains either
            with pytest.raises(DecryptionError):
                cipher.unwrap("cases", row.id, WrappedKey(kek_id, row.wrapped_dek))

    live_bytes = b"".join(p.read_bytes() for p in live.iterdir())
    for row in rows:
        assert row.answers_ct not in live_bytes and row.wrapped_dek not in live_bytes
        assert row.id.encode() not in live_bytes
    assert CANARY.encode() not in live_bytes
    check = make_engine(f"sqlite+aiosqlite:///{live / 'tipline.db'}")
    assert await read_everything(check, KeyringFile(vault.file.path).open(secret)) == (2, 0)
    await check.dispose()
    assert set(kept).isdisjoint(doomed)


async def test_wipe_destroys_keys_before_rows(
    db: AsyncEngine, vault: KeyVault, secret: KeyFile
) -> None:
    ids = await fill(db, vault, cases=3, drafts=2)
    maintenance = Maintenance(db, vault)

    def stop_here() -> None:
        raise RotationInterrupted

    with pytest.raises(RotationInterrupted):
        await maintenance.wipe(START, after_destroy=stop_here)
    async with db.connect() as conn:
        rows = (await conn.execute(select(Case.id, Case.kek_id, Case.wrapped_dek))).all()
    assert len(rows) == 3, "rows are still there"
    for keyring in (vault.keyring, KeyringFile(vault.file.path).load(secret)):
        cipher = RecordCipher(keyring)
        for row in rows:
            with pytest.raises(DecryptionError):
                cipher.unwrap("cases", row.id, WrappedKey(row.kek_id, row.wrapped_dek))
    async with SqlUnitOfWork(make_session_factory(db), vault.keyring, vault) as u:
        assert await u.drafts.load("telegram", "chat0", START) is None
        with pytest.raises(DecryptionError):
            await u.cases.get(ids[0])

    await maintenance.wipe(START)
    async with db.connect() as conn:
        for model in (Case, Draft, AuditEntry):
            assert (await conn.execute(select(func.count()).select_from(model))).scalar_one() == 0


async def test_admin_service_audits_and_verifies(
    db: AsyncEngine, vault: KeyVault, clock: FrozenClock
) -> None:
    admin = AdminService(Maintenance(db, vault), clock)
    await admin.rotate()
    await admin.purge()
    count, problem = await admin.verify_audit()
    assert count == 2 and problem is None
    async with db.begin() as conn:
        first = (await conn.execute(select(func.min(AuditEntry.id)))).scalar_one()
        await conn.execute(update(AuditEntry).where(AuditEntry.id == first).values(actor="lawyer"))
    count, problem = await admin.verify_audit()
    assert problem is not None and problem.entry_id == first
    await admin.wipe()
    count, problem = await admin.verify_audit()
    assert count == 1 and problem is None, "the wipe starts a new chain"


async def test_statistics_survive_purge_and_suppress_small_cells(
    db: AsyncEngine, vault: KeyVault, engine_: Engine, clock: FrozenClock
) -> None:
    harness = Harness(db, vault.keyring, engine_, clock)
    for i in range(6):
        await harness.complete(DETAINED_NOW, chat=f"baku{i}")
    for i in range(2):
        await harness.complete(
            dict(DOCUMENTING) | {"city": DETAINED_NOW["city"].__class__("ganja")}, chat=f"ganja{i}"
        )
    admin = AdminService(Maintenance(db, vault), clock)
    clock.advance(timedelta(days=31))
    report = await admin.purge()
    assert report.expired["cases"] == 8
    cells = {(c.region, c.category): c for c in await admin.statistics(5)}
    assert cells[("baku", "reports")].shown == "6"
    assert cells[("ganja", "reports")].shown == "<5" and cells[("ganja", "reports")].suppressed
    assert cells[("baku", "what.phone_searched")].shown == "6"
    assert all(c.week == START.date() - timedelta(days=START.weekday()) for c in cells.values())


async def test_expiry_job_runs_on_interval_with_injected_sleep(
    db: AsyncEngine, vault: KeyVault, clock: FrozenClock
) -> None:
    # 11:00 at rest (expiry times are whole hours): gone in the third round, at 11:30
    await fill(db, vault, cases=2, drafts=1, expires=timedelta(hours=1, minutes=30))
    admin = AdminService(Maintenance(db, vault), clock)
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(timedelta(seconds=seconds))

    await expiry_job(admin, 3600, sleep=fake_sleep, rounds=3)
    assert slept == [3600, 3600, 3600]
    async with db.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(Case))).scalar_one() == 0
    count, problem = await admin.verify_audit()
    assert problem is None and count == 1, "only the round that purged something is audited"
