"""Key rotation, expiry with crypto-erase, wipe, key status and statistics (DESIGN.md section 4)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from bot.services.ports import AuditProblem, KekUsage, PurgeReport, RotationReport, StatRow
from storage.crypto import DecryptionError, RecordCipher, WrappedKey
from storage.db import make_session_factory
from storage.keyring import Keyring, KeyVault
from storage.models import (
    Attachment,
    AuditEntry,
    Case,
    CaseAttempt,
    CaseMessage,
    Deadline,
    Draft,
    Event,
    EventCase,
    EventCounter,
    JobState,
    KeyState,
    Lawyer,
    OutboxItem,
    QueueItem,
    Screen,
    SeenUpdate,
    StatCounter,
)
from storage.repositories import SqlAuditLog, SqlUnitOfWork

log = logging.getLogger(__name__)

#: Every table whose rows carry a wrapped DEK (id, kek_id, wrapped_dek).
ENCRYPTED: tuple[Any, ...] = (
    Draft,
    Case,
    Attachment,
    Lawyer,
    CaseMessage,
    QueueItem,
    OutboxItem,
    Screen,
    Event,
    Deadline,
)
#: Tables with an expiry date, purged by ``purge``.
EXPIRING: tuple[Any, ...] = (
    Draft,
    Case,
    Attachment,
    SeenUpdate,
    QueueItem,
    OutboxItem,
    Screen,
)
#: Everything ``wipe`` empties, children before parents.
ALL_TABLES: tuple[Any, ...] = (
    EventCase,
    EventCounter,
    Deadline,
    Event,
    CaseMessage,
    CaseAttempt,
    Draft,
    Case,
    Attachment,
    SeenUpdate,
    AuditEntry,
    StatCounter,
    Lawyer,
    JobState,
    QueueItem,
    OutboxItem,
    Screen,
)


class RotationInterrupted(Exception):
    """Raised by test hooks to simulate a crash part-way through a rotation."""


@dataclass(slots=True)
class Maintenance:
    """Admin operations over the database and the keyring; each step owns its transaction."""

    engine: AsyncEngine
    vault: KeyVault
    batch_size: int = 500
    _sessions: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._sessions = make_session_factory(self.engine)

    @property
    def keyring(self) -> Keyring:
        """The unlocked keyring."""
        return self.vault.keyring

    def uow(self) -> SqlUnitOfWork:
        """A unit of work on the same keys."""
        return SqlUnitOfWork(self._sessions, self.keyring, self.vault)

    @property
    def is_sqlite(self) -> bool:
        """Whether the database is SQLite (checkpoints apply)."""
        return self.engine.dialect.name == "sqlite"

    # ---- key status ----------------------------------------------------------------------

    async def key_status(self) -> list[KekUsage]:
        """Every KEK version with the number of records it wraps."""
        self.vault.reload()
        counts: dict[int, dict[str, int]] = {k: {} for k in self.keyring.keks}
        async with self._sessions() as session:
            for model in ENCRYPTED:
                query = select(model.kek_id, func.count()).group_by(model.kek_id)
                for kek_id, count in (await session.execute(query)).all():
                    counts.setdefault(kek_id, {})[model.__tablename__] = count
        return [
            KekUsage(
                kek_id,
                self.keyring.keks[kek_id].created_at
                if kek_id in self.keyring.keks
                else datetime.min,
                kek_id == self.keyring.current_kek_id,
                counts[kek_id],
            )
            for kek_id in sorted(counts)
        ]

    # ---- rotation ------------------------------------------------------------------------

    async def _publish(self, session: AsyncSession) -> None:
        """Make the current KEK the one every process must use (waits for open writers)."""
        await session.execute(
            update(KeyState)
            .where(KeyState.id == 1)
            .values(current_kek_id=self.keyring.current_kek_id)
        )

    async def rotate(
        self, now: datetime, *, after_batch: Callable[[int], None] | None = None
    ) -> RotationReport:
        """The ratchet: a new KEK, every DEK re-wrapped in batches, then the old KEKs destroyed.

        Resumable at any point: a rerun finds the KEK a crashed run made (the keyring holds
        more than one) and carries on with it instead of making another.
        """
        self.vault.reload()
        if len(self.keyring.keks) == 1:
            self.keyring.add_kek(now)
            # The file first: if we crash now, the unused KEK is adopted by the rerun.
            self.vault.persist()
        async with self._sessions() as session, session.begin():
            await self._publish(session)
        current = self.keyring.current_kek_id
        cipher = RecordCipher(self.keyring)
        rewrapped = removed = batches = 0
        for model in ENCRYPTED:
            while True:
                done, dropped = await self._rewrap_batch(model, current, cipher)
                if not done and not dropped:
                    break
                rewrapped += done
                removed += dropped
                batches += 1
                if after_batch is not None:
                    after_batch(batches)
        destroyed, complete = await self._destroy_unreferenced()
        report = RotationReport(current, rewrapped, destroyed, removed, complete)
        log.info(
            "rotation: %d re-wrapped, %d KEKs destroyed, complete=%s",
            rewrapped,
            len(destroyed),
            complete,
        )
        return report

    async def _rewrap_batch(
        self, model: Any, current: int, cipher: RecordCipher
    ) -> tuple[int, int]:
        table = model.__tablename__
        async with self._sessions() as session, session.begin():
            query = (
                select(model.id, model.kek_id, model.wrapped_dek)
                .where(model.kek_id != current)
                .order_by(model.id)
                .limit(self.batch_size)
                .with_for_update(skip_locked=True)
            )
            rows = (await session.execute(query)).all()
            updates: list[dict[str, Any]] = []
            unreadable: list[str] = []
            for row in rows:
                try:
                    key = WrappedKey(row.kek_id, row.wrapped_dek)
                    new = cipher.rewrap(table, str(row.id), key)
                except DecryptionError:
                    unreadable.append(row.id)
                    continue
                updates.append({"id": row.id, "kek_id": new.kek_id, "wrapped_dek": new.wrapped})
            if updates:
                await session.execute(update(model), updates)
            if unreadable:
                # Nobody can ever read these; keeping them would keep their KEK alive.
                log.warning("rotation removed %d unreadable records", len(unreadable))
                await session.execute(delete(model).where(model.id.in_(unreadable)))
        return len(updates), len(unreadable)

    async def _destroy_unreferenced(self) -> tuple[tuple[int, ...], bool]:
        async with self._sessions() as session, session.begin():
            # Writing the key state row first takes the lock every writer shares: no record
            # can be written under an old KEK between this check and the destruction.
            await self._publish(session)
            old = [k for k in self.keyring.keks if k != self.keyring.current_kek_id]
            if not old:
                return (), True
            referenced: set[int] = set()
            for model in ENCRYPTED:
                query = select(model.kek_id).where(model.kek_id.in_(old)).distinct()
                referenced.update((await session.execute(query)).scalars())
            doomed = tuple(k for k in old if k not in referenced)
            if doomed:
                self.keyring.destroy(doomed)
                self.vault.persist()
            return doomed, not referenced

    async def rekey_root(self, secret: Any, cost: Any) -> None:
        """Seal the KEKs under a new root key (a new passphrase)."""
        self.vault.reload()
        self.vault.rekey(secret, cost)

    # ---- expiry --------------------------------------------------------------------------

    async def expired_counts(self, now: datetime) -> dict[str, int]:
        """How many rows of each expiring table are past their expiry."""
        async with self._sessions() as session:
            result: dict[str, int] = {}
            for model in EXPIRING:
                query = select(func.count()).select_from(model).where(model.expires_at <= now)
                result[model.__tablename__] = int((await session.execute(query)).scalar_one())
        return result

    async def delete_expired(self, now: datetime) -> dict[str, int]:
        """Delete expired rows with their wrapped DEKs (secure_delete zeroes them on SQLite)."""
        deleted: dict[str, int] = {}
        async with self._sessions() as session, session.begin():
            for model in EXPIRING:
                result = await session.execute(delete(model).where(model.expires_at <= now))
                deleted[model.__tablename__] = int(getattr(result, "rowcount", 0) or 0)
        return deleted

    async def checkpoint(self) -> bool:
        """On SQLite, move the WAL into the database and truncate it; whether it completed."""
        if not self.is_sqlite:
            return False
        async with self.engine.connect() as conn:
            # Outside any transaction (ours all begin IMMEDIATE), straight on the driver.
            raw = await conn.get_raw_connection()
            driver: Any = raw.driver_connection
            cursor = await driver.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            row = await cursor.fetchone()
            await cursor.close()
        return row is not None and row[0] == 0

    async def purge(self, now: datetime, *, dry_run: bool = False) -> PurgeReport:
        """Delete what has expired, then ratchet the KEK so old copies become unreadable."""
        if dry_run:
            return PurgeReport(await self.expired_counts(now), dry_run=True)
        deleted = await self.delete_expired(now)
        rotation = await self.rotate(now) if any(deleted.values()) else None
        checkpointed = await self.checkpoint()
        return PurgeReport(deleted, False, rotation, checkpointed)

    # ---- wipe ----------------------------------------------------------------------------

    async def wipe(self, now: datetime, *, after_destroy: Callable[[], None] | None = None) -> None:
        """Destroy every KEK first (all data unreadable at once), then delete every row."""
        self.vault.reload()
        fresh = Keyring.generate(now, first_id=max(self.keyring.keks) + 1)
        self.keyring.replace_with(fresh)
        self.vault.persist()
        if after_destroy is not None:
            after_destroy()
        async with self._sessions() as session, session.begin():
            await self._publish(session)
            for model in ALL_TABLES:
                await session.execute(delete(model))
        await self.checkpoint()

    # ---- audit and statistics --------------------------------------------------------------

    async def verify_audit(self) -> tuple[int, AuditProblem | None]:
        """The number of audit entries and the first broken one, if any."""
        async with self._sessions() as session:
            count = int((await session.execute(select(func.count(AuditEntry.id)))).scalar_one())
            problem = await SqlAuditLog(session, self.keyring).verify()
        return count, problem

    async def stat_rows(self) -> Sequence[StatRow]:
        """Every advocacy counter, by week, region and category."""
        async with self._sessions() as session:
            query = select(StatCounter).order_by(
                StatCounter.week, StatCounter.region, StatCounter.category
            )
            return [
                StatRow(r.week, r.region, r.category, r.count)
                for r in (await session.execute(query)).scalars()
            ]
