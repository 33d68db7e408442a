"""Key rotation, expiry with crypto-erase, wipe, key status and statistics (DESIGN.md section 4)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from bot.services.ports import AuditProblem, KekUsage, PurgeReport, RotationReport, StatRow
from storage import slices
from storage.audit import INDEX_AUDIT, TOKEN_HEX, new_audit_token, rechain
from storage.crypto import DecryptionError, RecordCipher
from storage.db import make_session_factory
from storage.index import (
    CASE_REPLY,
    INDEXED,
    LANE,
    Lookup,
    open_index,
    rekeyed,
    reply_inner,
    seal_index,
)
from storage.keyring import Keyring, KeyVault
from storage.locks import exclusive
from storage.models import (
    Attachment,
    AuditEntry,
    Case,
    CaseAttempt,
    CaseMessage,
    ChatLimit,
    Deadline,
    Draft,
    Event,
    EventCase,
    EventCounter,
    GoneCase,
    HeldNumber,
    JobState,
    KeyState,
    Lawyer,
    OutboxItem,
    QueueItem,
    Screen,
    SeenUpdate,
    StatCounter,
)
from storage.raw import Raw, Sql
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
#: Tables with an expiry date, purged by ``purge`` (a case message gets one once it is read).
EXPIRING: tuple[Any, ...] = (
    Draft,
    Case,
    Attachment,
    SeenUpdate,
    QueueItem,
    OutboxItem,
    Screen,
    CaseMessage,
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
    HeldNumber,
    GoneCase,
    ChatLimit,
)
#: Lanes are re-keyed all at once at the end of a rotation (one chat's items keep one lane).
_RELANED: tuple[Any, ...] = (OutboxItem, Screen)
#: Tables with a keyed lookup that is never re-keyed: the ratchet deletes every row (a rate-limit
#: bucket is disposable; a chat starts again with a full one).
DISPOSABLE: tuple[Any, ...] = (ChatLimit,)
#: Tables whose rows refer to a KEK without a wrapped DEK (sealed inner hashes, audit MACs).
_KEYED = (SeenUpdate, AuditEntry)


class RotationInterrupted(Exception):
    """Raised by test hooks to simulate a crash part-way through a rotation."""


@dataclass(slots=True)
class Maintenance:
    """Admin operations over the database and the keyring; each step owns its transaction."""

    engine: AsyncEngine
    vault: KeyVault
    batch_size: int = 500
    #: Audit entries of a gone case are pruned this long after it went.
    audit_retention: timedelta = timedelta(days=90)
    #: No case lives longer than this (the retention ceiling): an audit token silent for longer
    #: than both belongs to a case that is gone, however it went.
    max_retention: timedelta = timedelta(days=365)
    _sessions: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._sessions = make_session_factory(self.engine)

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncSession]:
        """A maintenance transaction; on SQLite its statements run in the driver's thread (a
        purge's DELETE or a ratchet's scan would hold the event loop for as long as they take)."""
        async with self._sessions() as session, session.begin():
            driver: Any = None
            if self.is_sqlite:
                raw = await (await session.connection()).get_raw_connection()
                driver = raw.driver_connection
                driver.offload = True
            try:
                yield session
            finally:
                if driver is not None:
                    driver.offload = False

    @property
    def keyring(self) -> Keyring:
        """The unlocked keyring."""
        return self.vault.keyring

    def uow(self) -> SqlUnitOfWork:
        """A unit of work on the same keys."""
        return SqlUnitOfWork(self._sessions, self.keyring, self.vault)

    def exclusive(self, name: str) -> AbstractAsyncContextManager[bool]:
        """Hold the named advisory lock for the block if it is free (always on SQLite)."""
        return exclusive(self.engine, name)

    @property
    def is_sqlite(self) -> bool:
        """Whether the database is SQLite (checkpoints apply)."""
        return self.engine.dialect.name == "sqlite"

    async def _persist(self) -> None:
        """Write the keyring file; its fsyncs wait on a disk the purge keeps busy, so in a
        worker thread rather than on the event loop."""
        await asyncio.to_thread(self.vault.persist)

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
        """Make the current KEK the one every process must use (on PostgreSQL the update waits
        for open writers: migration 0012's trigger takes the key state's lock alone)."""
        await session.execute(
            update(KeyState)
            .where(KeyState.id == 1)
            .values(current_kek_id=self.keyring.current_kek_id)
        )

    async def rotate(
        self, now: datetime, *, after_batch: Callable[[int], None] | None = None
    ) -> RotationReport:
        """The ratchet: a new KEK, every DEK re-wrapped and every lookup re-keyed in batches,
        the audit chain re-MACed, then the old KEKs destroyed (with their index keys).

        Resumable at any point: a rerun finds the KEK a crashed run made (the keyring holds
        more than one) and carries on with it instead of making another. While it runs, lookups
        try both KEKs' index keys.
        """
        self.vault.reload()
        await self.upgrade_lookups(now)
        if len(self.keyring.keks) == 1:
            self.keyring.add_kek(now)
            # The file first: if we crash now, the unused KEK is adopted by the rerun.
            await self._persist()
        async with self._transaction() as session:
            await self._publish(session)
        current = self.keyring.current_kek_id
        cipher = RecordCipher(self.keyring)
        rewrapped = removed = batches = 0

        def batch_done() -> None:
            nonlocal batches
            batches += 1
            if after_batch is not None:
                after_batch(batches)

        for model in ENCRYPTED:
            while True:
                done, dropped = await self._rewrap_batch(model, current, cipher)
                if not done and not dropped:
                    break
                rewrapped += done
                removed += dropped
                batch_done()
        while True:
            done, dropped = await self._rekey_seen_batch(current)
            if not done and not dropped:
                break
            removed += dropped  # re-keyed, not re-wrapped: a handled update has no DEK
            batch_done()
        await self._relane(cipher)
        async with self._transaction() as session:
            await rechain(session, self.keyring, now)
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
        lookups = () if model in _RELANED else INDEXED.get(model, ())
        columns = [model.id, model.kek_id, model.wrapped_dek]
        if lookups:
            columns.append(model.index_ct)
        async with self._transaction() as session:
            query = (
                select(*columns)
                .where(model.kek_id != current)
                .order_by(model.id)
                .limit(self.batch_size)
                .with_for_update(skip_locked=True)
            )
            rows = (await session.execute(query)).all()
            updates, unreadable = await slices.run(
                _rewrapped(self.keyring, cipher, table, lookups, rows, current)
            )
            await _update_by_id(session, model, updates)
            if unreadable:
                # Nobody can ever read these; keeping them would keep their KEK alive.
                log.warning("rotation removed %d unreadable records", len(unreadable))
                await session.execute(delete(model).where(model.id.in_(unreadable)))
        return len(updates), len(unreadable)

    async def _rekey_seen_batch(self, current: int) -> tuple[int, int]:
        """Re-key a batch of handled updates (their key is their primary key)."""
        table = SeenUpdate.__tablename__
        async with self._transaction() as session:
            query = (
                select(SeenUpdate.key, SeenUpdate.kek_id, SeenUpdate.inner_ct)
                .where(SeenUpdate.kek_id != current)
                .order_by(SeenUpdate.key)
                .limit(self.batch_size)
                .with_for_update(skip_locked=True)
            )
            rows = (await session.execute(query)).all()
            seen_updates, unreadable = await slices.run(
                _rekeyed_seen(self.keyring, table, rows, current)
            )
            if seen_updates:
                seen = cast(Table, SeenUpdate.__table__)
                statement = (
                    update(seen)
                    .where(seen.c.key == bindparam("old"))
                    .values(
                        key=bindparam("key"),
                        kek_id=bindparam("kek_id"),
                        inner_ct=bindparam("inner_ct"),
                    )
                )
                for chunk in slices.per_statement(seen_updates):
                    await session.execute(statement, chunk)
            if unreadable:
                await session.execute(delete(SeenUpdate).where(SeenUpdate.key.in_(unreadable)))
        return len(seen_updates), len(unreadable)

    async def _relane(self, cipher: RecordCipher) -> None:
        """Every outbox and screen lane under the current index key, in one transaction, so a
        chat's waiting messages never sit in two lanes (they are few: only what waits)."""
        async with self._transaction() as session:
            for model in _RELANED:
                table = model.__tablename__
                rows = (
                    await session.execute(
                        select(
                            model.id, model.kek_id, model.wrapped_dek, model.lane, model.index_ct
                        )
                        .where(model.index_ct.is_not(None))
                        .with_for_update()
                    )
                ).all()
                updates = []
                for row in rows:
                    try:
                        dek = cipher.row_dek(table, row)
                        inner = open_index(cipher, dek, table, str(row.id), row.index_ct)
                    except DecryptionError:
                        continue
                    lane = LANE.value(self.keyring, bytes.fromhex(inner["lane"]), row.kek_id)
                    if lane != row.lane:
                        updates.append({"id": row.id, "lane": lane})
                if updates:
                    await session.execute(update(model), updates)

    async def _destroy_unreferenced(self) -> tuple[tuple[int, ...], bool]:
        async with self._transaction() as session:
            # Writing the key state row first takes the lock every writer shares: no record
            # can be written under an old KEK between this check and the destruction.
            await self._publish(session)
            # No lookup under an old index key survives in a table the ratchet does not re-key.
            for model in DISPOSABLE:
                await session.execute(delete(model))
            old = [k for k in self.keyring.keks if k != self.keyring.current_kek_id]
            if not old:
                return (), True
            referenced: set[int] = set()
            for model in (*ENCRYPTED, *_KEYED):
                query = select(model.kek_id).where(model.kek_id.in_(old)).distinct()
                referenced.update(k for k in (await session.execute(query)).scalars() if k)
            doomed = tuple(k for k in old if k not in referenced)
            if doomed:
                self.keyring.destroy(doomed)
                await self._persist()
            return doomed, not referenced

    # ---- rows from before lookups ratcheted (migration 0009) ---------------------------------

    async def upgrade_lookups(self, now: datetime) -> int:
        """Move every lookup value written before index keys ratcheted into its row's
        ciphertext and re-key it; give cases audit tokens; turn case ids in the audit log into
        tokens and its times into hours, re-MACing the chain. Idempotent and resumable; what
        migration 0009 could not do without keys. How many rows it changed."""
        cipher = RecordCipher(self.keyring)
        changed = 0
        for model, lookups in INDEXED.items():
            while done := await self._upgrade_batch(model, lookups, cipher):
                changed += done
        last: str | None = ""
        while last is not None:
            done, last = await self._upgrade_reply_batch(cipher, last)
            changed += done
        while done := await self._upgrade_seen_batch():
            changed += done
        async with self._transaction() as session:
            legacy = select(AuditEntry.id).where(AuditEntry.kek_id.is_(None)).limit(1)
            if (await session.execute(legacy)).first() is not None:
                ids = (
                    await session.execute(
                        select(AuditEntry.case_token)
                        .where(AuditEntry.kek_id.is_(None), AuditEntry.case_token.is_not(None))
                        .distinct()
                    )
                ).scalars()
                tokens = await self._case_tokens(
                    session, cipher, [i for i in ids if i is not None and len(i) != TOKEN_HEX]
                )
                report = await rechain(session, self.keyring, now, case_tokens=tokens)
                changed += report.entries
        return changed

    async def _upgrade_batch(self, model: Any, lookups: Any, cipher: RecordCipher) -> int:
        table = model.__tablename__
        async with self._transaction() as session:
            query = (
                select(model)
                .where(model.index_ct.is_(None), model.kek_id != 0)
                .order_by(model.id)
                .limit(self.batch_size)
                .with_for_update(skip_locked=True)
            )
            rows = list((await session.execute(query)).scalars())
            done = 0
            for row in rows:
                try:
                    dek = cipher.row_dek(table, row)
                except DecryptionError:
                    continue
                inner: dict[str, str | None] = {}
                for lookup in lookups:
                    value = getattr(row, lookup.column)
                    if value is not None:
                        inner[lookup.name] = value.hex() if lookup.binary else value
                if model is Case:
                    inner[INDEX_AUDIT] = new_audit_token()
                found = {k: v for k, v in inner.items() if v is not None}
                for column, value in rekeyed(self.keyring, lookups, found, row.kek_id).items():
                    setattr(row, column, value)
                row.index_ct = seal_index(cipher, dek, table, str(row.id), inner)
                done += 1
        return done

    async def _upgrade_reply_batch(self, cipher: RecordCipher, last: str) -> tuple[int, str | None]:
        """Give a batch of cases written before migration 0010 their reply lookup; how many,
        and the id to go on after (None at the end)."""
        async with self._transaction() as session:
            query = (
                select(Case.id, Case.kek_id, Case.wrapped_dek, Case.reply_address_ct, Case.index_ct)
                .where(
                    Case.reply_address_ct.is_not(None),
                    Case.reply_lookup.is_(None),
                    Case.index_ct.is_not(None),
                    Case.id > last,
                )
                .order_by(Case.id)
                .limit(self.batch_size)
                .with_for_update(skip_locked=True)
            )
            rows = (await session.execute(query)).all()
            updates = await slices.run(_reply_indexed(self.keyring, cipher, rows))
            await _update_by_id(session, Case, updates)
        return len(updates), rows[-1].id if len(rows) == self.batch_size else None

    async def _upgrade_seen_batch(self) -> int:
        table = SeenUpdate.__tablename__
        current = self.keyring.current_kek_id
        async with self._transaction() as session:
            query = (
                select(SeenUpdate.key)
                .where(SeenUpdate.kek_id.is_(None))
                .limit(self.batch_size)
                .with_for_update(skip_locked=True)
            )
            keys = list((await session.execute(query)).scalars())
            for key in keys:
                inner = bytes.fromhex(key)
                await session.execute(
                    update(SeenUpdate)
                    .where(SeenUpdate.key == key)
                    .values(
                        key=self.keyring.lookup(inner, current).hex(),
                        kek_id=current,
                        inner_ct=self.keyring.seal_inner(table, inner, current),
                    )
                )
        return len(keys)

    async def _case_tokens(
        self, session: AsyncSession, cipher: RecordCipher, case_ids: list[str]
    ) -> dict[str, str]:
        """The audit tokens of the cases that still exist among ``case_ids``."""
        tokens: dict[str, str] = {}
        for start in range(0, len(case_ids), self.batch_size):
            chunk = case_ids[start : start + self.batch_size]
            query = select(Case.id, Case.kek_id, Case.wrapped_dek, Case.index_ct).where(
                Case.id.in_(chunk), Case.index_ct.is_not(None)
            )
            for row in (await session.execute(query)).all():
                try:
                    dek = cipher.row_dek("cases", row)
                    index = open_index(cipher, dek, "cases", row.id, row.index_ct)
                except DecryptionError:
                    continue
                if INDEX_AUDIT in index:
                    tokens[row.id] = index[INDEX_AUDIT]
        return tokens

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
        """Delete expired rows with their wrapped DEKs (secure_delete zeroes them on SQLite); a
        deleted case's audit token is noted as gone, for the audit log's pruning."""
        cipher = RecordCipher(self.keyring)
        async with self._transaction() as session:
            rows = await self._index_of_expiring(session, now)
            gone = await slices.run(_audit_tokens(cipher, rows))
            deleted = await self._delete_expiring(session, now)
            # Plain (storage/raw.py): through the ORM, 50k rows cost more than their DELETE.
            raw, today = Raw.over(session), now.date()
            for chunk in slices.per_statement(gone):
                await raw.run_many(_GONE, [(token, today) for token in chunk])
        return deleted

    @staticmethod
    async def _delete_expiring(session: AsyncSession, now: datetime) -> dict[str, int]:
        deleted: dict[str, int] = {}
        for model in EXPIRING:
            result = await session.execute(delete(model).where(model.expires_at <= now))
            deleted[model.__tablename__] = int(getattr(result, "rowcount", 0) or 0)
        # A held number whose hold has ended may be drawn again (storage/numbers.py).
        await session.execute(delete(HeldNumber).where(HeldNumber.held_until < now.date()))
        return deleted

    async def _index_of_expiring(self, session: AsyncSession, now: datetime) -> list[Any]:
        # One statement (paging by id made SQLite sort every expiring case again for each page),
        # streamed: its rows are fetched and decoded a partition at a time, so at 100k cases the
        # fetch does not hold the event loop as one piece.
        query = select(Case.id, Case.kek_id, Case.wrapped_dek, Case.index_ct).where(
            Case.expires_at <= now, Case.index_ct.is_not(None)
        )
        rows: list[Any] = []
        result = await session.stream(query)
        async for part in result.partitions(self.batch_size):
            rows += part
        return rows

    async def prune_audit(self, now: datetime) -> int:
        """Prune the audit entries of every case gone ``audit_retention`` ago (and of any token
        silent for longer than a case can live), behind a checkpoint; how many went."""
        cutoff = now.date() - self.audit_retention
        silent = now - self.audit_retention - self.max_retention
        async with self._transaction() as session:
            gone = set(
                (
                    await session.execute(select(GoneCase.token).where(GoneCase.gone_on <= cutoff))
                ).scalars()
            )
            last = (
                select(AuditEntry.case_token)
                .where(AuditEntry.case_token.is_not(None))
                .group_by(AuditEntry.case_token)
                .having(func.max(AuditEntry.at) <= silent)
            )
            stale = {t for t in (await session.execute(last)).scalars() if t is not None}
            doomed = gone | stale
            if not doomed:
                return 0
            report = await rechain(session, self.keyring, now, drop_tokens=doomed)
            if gone:
                await session.execute(delete(GoneCase).where(GoneCase.token.in_(gone)))
            log.info("audit: %d entries of gone cases pruned", report.pruned)
            return report.pruned

    async def checkpoint(self) -> bool:
        """On SQLite, move the WAL into the database and truncate it; whether it completed."""
        if not self.is_sqlite:
            return False
        async with self.engine.connect() as conn:
            # Outside any transaction (ours all begin IMMEDIATE), straight on the driver.
            raw = await conn.get_raw_connection()
            driver: Any = raw.driver_connection
            # It copies the whole WAL into the database: in the driver's thread, not on the loop.
            driver.offload = True
            try:
                cursor = await driver.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                row = await cursor.fetchone()
                await cursor.close()
            finally:
                driver.offload = False
        return row is not None and row[0] == 0

    async def purge(self, now: datetime, *, dry_run: bool = False) -> PurgeReport:
        """Delete what has expired, then ratchet the KEK so old copies become unreadable."""
        if dry_run:
            return PurgeReport(await self.expired_counts(now), dry_run=True)
        deleted = await self.delete_expired(now)
        pruned = await self.prune_audit(now)
        rotation = await self.rotate(now) if any(deleted.values()) or pruned else None
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
        async with self._transaction() as session:
            await self._publish(session)
            for model in ALL_TABLES:
                await session.execute(delete(model))
        await self.checkpoint()

    # ---- audit and statistics --------------------------------------------------------------

    async def verify_audit(self) -> tuple[int, AuditProblem | None]:
        """The number of audit entries and the first broken one, if any."""
        async with self._sessions() as session:
            count = int((await session.execute(select(func.count(AuditEntry.id)))).scalar_one())
            problem = await SqlAuditLog(session, self.keyring, RecordCipher(self.keyring)).verify()
        return count, problem

    async def stat_rows(self) -> Sequence[StatRow]:
        """Every advocacy counter, by week, region and category."""
        async with self._sessions() as session:
            query = select(
                StatCounter.week, StatCounter.region, StatCounter.category, StatCounter.count
            ).order_by(StatCounter.week, StatCounter.region, StatCounter.category)
            return [StatRow(*r) for r in (await session.execute(query)).all()]


def _rewrapped(
    keyring: Keyring,
    cipher: RecordCipher,
    table: str,
    lookups: tuple[Lookup, ...],
    rows: Sequence[Any],
    current: int,
) -> slices.Sliced[tuple[list[dict[str, Any]], list[Any]]]:
    """A batch's DEKs re-wrapped and lookups re-keyed under ``current``, and the ids of rows
    nobody can read."""
    updates: list[dict[str, Any]] = []
    unreadable: list[Any] = []
    for index, row in enumerate(rows):
        if slices.due(index):
            yield
        try:
            dek = cipher.row_dek(table, row)
            values = {"id": row.id, "kek_id": current}
            values["wrapped_dek"] = cipher.wrap(dek, table, str(row.id)).wrapped
            if lookups and row.index_ct is not None:
                inner = open_index(cipher, dek, table, str(row.id), row.index_ct)
                values.update(rekeyed(keyring, lookups, inner, current))
        except DecryptionError:
            unreadable.append(row.id)
            continue
        updates.append(values)
    return updates, unreadable


def _rekeyed_seen(
    keyring: Keyring, table: str, rows: Sequence[Any], current: int
) -> slices.Sliced[tuple[list[dict[str, Any]], list[str]]]:
    """A batch of handled updates re-keyed under ``current``."""
    updates: list[dict[str, Any]] = []
    unreadable: list[str] = []
    for index, row in enumerate(rows):
        if slices.due(index):
            yield
        try:
            inner = keyring.open_inner(table, row.inner_ct, row.kek_id)
        except DecryptionError:
            unreadable.append(row.key)
            continue
        updates.append(
            {
                "old": row.key,
                "key": keyring.lookup(inner, current).hex(),
                "kek_id": current,
                "inner_ct": keyring.seal_inner(table, inner, current),
            }
        )
    return updates, unreadable


_GONE = Sql.of("INSERT INTO audit_gone (token, gone_on) VALUES (?, ?)")


def _audit_tokens(cipher: RecordCipher, rows: Sequence[Any]) -> slices.Sliced[list[str]]:
    """The audit tokens inside a page of cases' ``index_ct``."""
    tokens: list[str] = []
    for index, row in enumerate(rows):
        if slices.due(index):
            yield
        try:
            dek = cipher.row_dek("cases", row)
            token = open_index(cipher, dek, "cases", row.id, row.index_ct).get(INDEX_AUDIT)
        except DecryptionError:
            continue  # the fallback in prune_audit covers a case that went unread
        if token is not None:
            tokens.append(token)
    return tokens


def _reply_indexed(
    keyring: Keyring, cipher: RecordCipher, rows: Sequence[Any]
) -> slices.Sliced[list[dict[str, Any]]]:
    """Reply lookups for a batch of cases that have none, under each row's KEK, with the inner
    hash sealed into ``index_ct``."""
    updates: list[dict[str, Any]] = []
    for position, row in enumerate(rows):
        if slices.due(position):
            yield
        try:
            dek = cipher.row_dek("cases", row)
            address = cipher.decrypt(dek, "cases", row.id, "reply_address", row.reply_address_ct)
            index = open_index(cipher, dek, "cases", row.id, row.index_ct)
        except DecryptionError:
            continue  # unreadable: the next ratchet removes it
        inner = reply_inner(keyring, address.decode())
        index[CASE_REPLY.name] = inner.hex()
        updates.append(
            {
                "id": row.id,
                "reply_lookup": CASE_REPLY.value(keyring, inner, row.kek_id),
                "index_ct": seal_index(cipher, dek, "cases", row.id, index),
            }
        )
    return updates


async def _update_by_id(session: AsyncSession, model: Any, rows: Sequence[dict[str, Any]]) -> None:
    """Update rows by primary key with Core statements of a bounded size (the ORM's bulk update
    costs the event loop several times as much per row)."""
    table = cast(Table, model.__table__)
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(sorted(row)), []).append(row)
    for keys, group in groups.items():
        statement = (
            update(table)
            .where(table.c.id == bindparam("key_id"))
            .values({k: bindparam(f"new_{k}") for k in keys if k != "id"})
        )
        params = [{f"new_{k}" if k != "id" else "key_id": v for k, v in r.items()} for r in group]
        for chunk in slices.per_statement(params):
            await session.execute(statement, chunk)
