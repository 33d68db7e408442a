"""SQLAlchemy repositories that encrypt on the way in and decrypt on the way out."""

from __future__ import annotations

import copy
import hmac
import logging
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from functools import cached_property
from types import TracebackType
from typing import Any, Self

from sqlalchemy import delete, insert, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.util import greenlet_spawn

from bot.services.ports import (
    AttachmentContent,
    AuditProblem,
    CaseContent,
    CaseId,
    NewAttachment,
    NewCase,
)
from storage.audit import (
    GENESIS_MAC,
    INDEX_AUDIT,
    Link,
    first_problem,
    lock_chain,
    new_audit_token,
)
from storage.casework import SqlCaseworkStore
from storage.codec import _dumps, _loads, new_id
from storage.crypto import DecryptionError, RecordCipher, WrappedKey
from storage.index import (
    CASE_RECEIPT,
    CASE_REPLY,
    DRAFT_CHAT,
    floor_hour,
    hour_up,
    open_index,
    reply_inner,
    seal_index,
)
from storage.keyring import Keyring, KeyringError, KeyVault
from storage.lawyers import SqlAssignmentStore, SqlLawyerStore
from storage.limits import SqlChatLimitStore
from storage.locks import KEY_STATE, lock_key, wait_xact_lock
from storage.models import (
    Attachment,
    AuditEntry,
    Case,
    HeldNumber,
    KeyState,
    StatCounter,
)
from storage.numbers import CaseNumbering, free_number
from storage.outbox import SqlOutbox
from storage.queues import SqlQueue
from storage.raw import HELD, Raw, Sql, as_time, watched
from storage.writer import Member, join_orm, writer_of

log = logging.getLogger(__name__)


# Every reporter message runs these: plain statements (storage/raw.py).
_LOAD_DRAFT = Sql.of(
    "SELECT id, expires_at, kek_id, wrapped_dek, state_ct FROM drafts "
    "WHERE chat_pseudonym IN (?...)"
)

_SAVE_DRAFT = Sql.of("UPDATE drafts SET state_ct = ?, expires_at = ? WHERE id = ?")
_NEW_DRAFT = Sql.of(
    "INSERT INTO drafts (id, chat_pseudonym, expires_at, kek_id, wrapped_dek, state_ct, index_ct) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_DROP_DRAFT = Sql.of("DELETE FROM drafts WHERE id = ?")
_DROP_CHAT_DRAFT = Sql.of("DELETE FROM drafts WHERE chat_pseudonym IN (?...)")


class SqlDraftStore:
    """Drafts found by the lookup of a keyed pseudonym of (channel, chat id).

    Every reporter message loads and saves its draft, so this path uses plain statements and
    remembers the DEK it unwrapped for the save that follows within the same transaction.
    """

    table = "drafts"

    def __init__(self, keyring: Keyring, cipher: RecordCipher, raw: Raw) -> None:
        self._keyring = keyring
        self._cipher = cipher
        self._raw = raw
        self._known: dict[str, tuple[str, bytes]] = {}
        # A turn reads its chat's draft more than once (its language, then the state): one
        # query and one decryption per chat and transaction; saves and deletes keep it current.
        self._states: dict[str, tuple[dict[str, Any], datetime] | None] = {}
        self._pseudonyms: dict[tuple[str, str], tuple[str, list[str]]] = {}
        # Rows a statement of the unit of work read for this store (SqlUnitOfWork.claim_turn).
        self._ahead: dict[str, list[Any]] = {}

    def lookups(self, channel: str, chat_id: str) -> list[str]:
        """The lookups a chat's draft may be found under."""
        return self._pseudonym(channel, chat_id)[1]

    def read_ahead(self, channel: str, chat_id: str, rows: list[Any]) -> None:
        """The chat's draft rows as read by another statement of this transaction: the next
        load takes them instead of asking again."""
        pseudonym, _ = self._pseudonym(channel, chat_id)
        if pseudonym not in self._states:
            self._ahead[pseudonym] = rows

    def _pseudonym(self, channel: str, chat_id: str) -> tuple[str, list[str]]:
        # The inner hash and its lookups: computed once per chat and transaction.
        key = (channel, chat_id)
        if key not in self._pseudonyms:
            inner = self._keyring.pseudonym(channel, chat_id)
            lookups = DRAFT_CHAT.candidates(self._keyring, bytes.fromhex(inner))
            self._pseudonyms[key] = (inner, lookups)
        return self._pseudonyms[key]

    async def load(self, channel: str, chat_id: str, now: datetime) -> dict[str, Any] | None:
        """The decrypted state, or None when there is none or it has expired."""
        pseudonym, lookups = self._pseudonym(channel, chat_id)
        if pseudonym in self._states:
            known = self._states[pseudonym]
            if known is None:
                return None
            if known[1] > now:
                return copy.deepcopy(known[0])
        self._states[pseudonym] = found = await self._read(pseudonym, lookups, now)
        return None if found is None else copy.deepcopy(found[0])

    async def _read(
        self, pseudonym: str, lookups: list[str], now: datetime
    ) -> tuple[dict[str, Any], datetime] | None:
        found = self._ahead.pop(pseudonym, None)
        if found is None:
            found = await self._raw.rows(_LOAD_DRAFT.listing(len(lookups)), *lookups)
        if not found:
            return None
        draft_id, expires, kek_id, wrapped_dek, state_ct = found[0]
        expires_at = as_time(expires)
        if expires_at <= now:
            await self._raw.run(_DROP_DRAFT, draft_id)
            return None
        try:
            dek = self._cipher.unwrap(self.table, draft_id, WrappedKey(kek_id, bytes(wrapped_dek)))
            state = _loads(self._cipher.decrypt(dek, self.table, draft_id, "state", state_ct))
        except DecryptionError:
            # A draft is disposable: one that cannot be read (tampered, or its KEK destroyed)
            # is dropped and the reporter starts again, rather than being stuck.
            log.warning("unreadable draft dropped")
            await self._raw.run(_DROP_DRAFT, draft_id)
            return None
        self._known[pseudonym] = (draft_id, dek)
        return state, expires_at

    async def save(
        self, channel: str, chat_id: str, state: Mapping[str, Any], expires_at: datetime
    ) -> None:
        """Create or replace the draft; an existing draft keeps its DEK."""
        pseudonym, lookups = self._pseudonym(channel, chat_id)
        known = self._known.get(pseudonym)
        expires_at = hour_up(expires_at)
        if known is None:  # any draft the chat has, unreadable or expired, goes
            await self._raw.later(_DROP_CHAT_DRAFT.listing(len(lookups)), *lookups)
        self._ahead.pop(pseudonym, None)
        self._states[pseudonym] = (copy.deepcopy(dict(state)), expires_at)
        if known is None:
            draft_id = new_id()
            dek, wrapped = self._cipher.new_dek(self.table, draft_id)
            state_ct = self._cipher.encrypt(dek, self.table, draft_id, "state", _dumps(state))
            index_ct = seal_index(self._cipher, dek, self.table, draft_id, {"chat": pseudonym})
            await self._raw.later(
                _NEW_DRAFT,
                draft_id,
                lookups[0],
                expires_at,
                wrapped.kek_id,
                wrapped.wrapped,
                state_ct,
                index_ct,
            )
            self._known[pseudonym] = (draft_id, dek)
            return
        draft_id, dek = known
        state_ct = self._cipher.encrypt(dek, self.table, draft_id, "state", _dumps(state))
        await self._raw.later(_SAVE_DRAFT, state_ct, expires_at, draft_id)

    async def delete(self, channel: str, chat_id: str) -> bool:
        """Delete the chat's draft, if any."""
        pseudonym, lookups = self._pseudonym(channel, chat_id)
        self._known.pop(pseudonym, None)
        self._ahead.pop(pseudonym, None)
        self._states[pseudonym] = None
        return bool(await self._raw.run(_DROP_CHAT_DRAFT.listing(len(lookups)), *lookups))


def case_values(
    keyring: Keyring, cipher: RecordCipher, case_id: str, number: int | None, case: NewCase
) -> dict[str, Any]:
    """The column values of a new case, encrypted under a fresh DEK (also the bulk path)."""
    table = "cases"
    dek, wrapped = cipher.new_dek(table, case_id)
    enc = cipher.encrypt
    inner = keyring.receipt_hash(case.receipt)
    index = {"receipt": inner.hex(), INDEX_AUDIT: new_audit_token()}
    reply_address = case.reply_address
    reply = None if reply_address is None else reply_inner(keyring, reply_address)
    if reply is not None:
        index[CASE_REPLY.name] = reply.hex()
    return {
        "id": case_id,
        "number": number,
        "created_on": case.created_on,
        "priority": case.priority,
        "status": case.status,
        "expires_at": hour_up(case.expires_at),
        "kek_id": wrapped.kek_id,
        "wrapped_dek": wrapped.wrapped,
        "receipt_hash": CASE_RECEIPT.value(keyring, inner),
        "index_ct": seal_index(cipher, dek, table, case_id, index),
        "answers_ct": enc(dek, table, case_id, "answers", _dumps(case.answers)),
        "meta_ct": enc(dek, table, case_id, "meta", _dumps(case.meta)),
        "reply_address_ct": (
            None
            if reply_address is None
            else enc(dek, table, case_id, "reply_address", reply_address.encode())
        ),
        "reply_lookup": None if reply is None else CASE_REPLY.value(keyring, reply),
    }


class SqlCaseStore:
    """Submitted cases: answers, routing metadata and reply address each encrypted."""

    table = "cases"

    def __init__(
        self,
        session: AsyncSession,
        keyring: Keyring,
        cipher: RecordCipher,
        numbering: CaseNumbering | None = None,
    ) -> None:
        self._session = session
        self._keyring = keyring
        self._cipher = cipher
        self._numbering = numbering or CaseNumbering()

    async def _number(self, today: date) -> int:
        """A short random number no live case has and none held (see storage/numbers.py)."""

        async def is_free(number: int) -> bool:
            # Two processes may draw the same number at once: the second waits, then sees it.
            await wait_xact_lock(await self._session.connection(), f"case-number:{number}")
            live = select(Case.number).where(Case.number == number)
            held = select(HeldNumber.number).where(
                HeldNumber.number == number, HeldNumber.held_until >= today
            )
            taken = await self._session.execute(live.union_all(held).limit(1))
            return taken.first() is None

        number = await free_number(self._numbering.draw, is_free)
        await self._session.execute(delete(HeldNumber).where(HeldNumber.number == number))
        until = self._numbering.held_until(today)
        await self._session.execute(insert(HeldNumber).values(number=number, held_until=until))
        return number

    async def add(self, case: NewCase) -> str:
        """Encrypt and store a case; returns its id."""
        case_id = new_id()
        values = case_values(
            self._keyring, self._cipher, case_id, await self._number(case.created_on), case
        )
        self._session.add(Case(**values))
        return case_id

    async def status_by_receipt(self, receipt: str) -> str | None:
        """Status of the case whose receipt hashes to the same keyed hash."""
        return await self._by_receipt(Case.status, receipt)

    async def id_by_receipt(self, receipt: str) -> str | None:
        """The id of the case with this (normalised) receipt code, or None."""
        return await self._by_receipt(Case.id, receipt)

    async def _by_receipt(self, column: InstrumentedAttribute[str], receipt: str) -> str | None:
        inner = self._keyring.receipt_hash(receipt)
        query = select(column).where(
            Case.receipt_hash.in_(CASE_RECEIPT.candidates(self._keyring, inner))
        )
        return (await self._session.execute(query)).scalar_one_or_none()

    async def shred_reply_address(self, address: str) -> int:
        """Forget a chat address in every case that holds it (the reporter's /forget): found by
        its lookup, never by decrypting other cases; the inner hash goes from ``index_ct`` too."""
        inner = reply_inner(self._keyring, address)
        result = await self._session.execute(
            select(
                Case.id, Case.kek_id, Case.wrapped_dek, Case.reply_address_ct, Case.index_ct
            ).where(Case.reply_lookup.in_(CASE_REPLY.candidates(self._keyring, inner)))
        )
        shredded = []
        for row in result.all():
            try:
                dek = self._cipher.row_dek(self.table, row)
                found = self._cipher.decrypt(
                    dek, self.table, row.id, "reply_address", row.reply_address_ct
                )
                index = (
                    None
                    if row.index_ct is None
                    else open_index(self._cipher, dek, self.table, row.id, row.index_ct)
                )
            except DecryptionError:
                continue
            if not hmac.compare_digest(found, address.encode()):
                continue  # a lookup collision: not this chat
            values: dict[str, Any] = {"id": row.id, "reply_address_ct": None, "reply_lookup": None}
            if index is not None:
                index.pop(CASE_REPLY.name, None)
                values["index_ct"] = seal_index(self._cipher, dek, self.table, row.id, index)
            shredded.append(values)
        if shredded:
            await self._session.execute(update(Case), shredded)
        return len(shredded)

    async def get(self, case_id: str) -> CaseContent | None:
        """Decrypt one case."""
        row = await self._session.get(Case, case_id)
        if row is None:
            return None
        dek = self._cipher.row_dek(self.table, row)
        dec = self._cipher.decrypt
        reply = None
        if row.reply_address_ct is not None:
            reply = dec(dek, self.table, row.id, "reply_address", row.reply_address_ct).decode()
        return CaseContent(
            id=CaseId(row.id),
            status=row.status,
            priority=row.priority,
            answers=_loads(dec(dek, self.table, row.id, "answers", row.answers_ct)),
            meta=_loads(dec(dek, self.table, row.id, "meta", row.meta_ct)),
            reply_address=reply,
        )

    async def delete(self, case_id: str) -> bool:
        """Delete a case; its thread, attempts, event links and deadlines go with it (cascade)."""
        result = await self._session.execute(delete(Case).where(Case.id == case_id))
        return bool(getattr(result, "rowcount", 0))


class SqlAttachmentStore:
    """Files sent by reporters, each under its own DEK."""

    table = "attachments"

    def __init__(self, session: AsyncSession, cipher: RecordCipher) -> None:
        self._session = session
        self._cipher = cipher

    async def add(self, file: NewAttachment) -> str:
        """Encrypt and store a file; returns its opaque reference."""
        ref = new_id()
        dek, wrapped = self._cipher.new_dek(self.table, ref)
        enc = self._cipher.encrypt
        await self._session.execute(
            insert(Attachment).values(
                id=ref,
                expires_at=hour_up(file.expires_at),
                kek_id=wrapped.kek_id,
                wrapped_dek=wrapped.wrapped,
                original_ct=enc(dek, self.table, ref, "original", file.original),
                clean_ct=(
                    None if file.clean is None else enc(dek, self.table, ref, "clean", file.clean)
                ),
                meta_ct=enc(dek, self.table, ref, "meta", _dumps(file.meta)),
            )
        )
        return ref

    async def set_expiry(self, refs: Iterable[str], expires_at: datetime) -> None:
        """Give a case's attachments the case's expiry."""
        refs = list(refs)
        if refs:
            await self._session.execute(
                update(Attachment)
                .where(Attachment.id.in_(refs))
                .values(expires_at=hour_up(expires_at))
            )

    async def get(self, ref: str) -> AttachmentContent | None:
        """Decrypt one attachment."""
        row = await self._session.get(Attachment, ref)
        if row is None:
            return None
        dek = self._cipher.row_dek(self.table, row)
        dec = self._cipher.decrypt
        clean = None if row.clean_ct is None else dec(dek, self.table, ref, "clean", row.clean_ct)
        return AttachmentContent(
            id=row.id,
            original=dec(dek, self.table, ref, "original", row.original_ct),
            clean=clean,
            meta=_loads(dec(dek, self.table, ref, "meta", row.meta_ct)),
        )

    async def delete(self, refs: Iterable[str]) -> int:
        """Delete files with their wrapped DEKs."""
        ids = [str(r) for r in refs]
        if not ids:
            return 0
        result = await self._session.execute(delete(Attachment).where(Attachment.id.in_(ids)))
        return int(getattr(result, "rowcount", 0) or 0)


_CLAIM_UPDATE = Sql.of(
    'INSERT INTO seen_updates ("key", expires_at, kek_id, inner_ct) VALUES (?, ?, ?, ?) '
    "ON CONFLICT DO NOTHING"
)


_SEEN_BEFORE = Sql.of('SELECT 1 FROM seen_updates WHERE "key" IN (?...) LIMIT 1')

# A turn's claim of its update, with the reads the turn makes next (PostgreSQL: one round trip
# for three). The LEFT JOINs give one row when the chat has neither draft nor bucket. Composed
# of this module's constants only: no value is ever formatted into SQL.
_CLAIM_TURN = Sql.of(
    f"WITH claim AS ({_CLAIM_UPDATE.sqlite} RETURNING 1) "  # noqa: S608
    "SELECT (SELECT count(*) FROM claim), d.id, d.expires_at, d.kek_id, d.wrapped_dek, "
    'd.state_ct, b.tokens, b."at", b.warned FROM (SELECT 1) AS one '
    "LEFT JOIN drafts AS d ON d.chat_pseudonym IN (?...) "
    'LEFT JOIN chat_limits AS b ON b."key" = ?'
)


class SqlSeenStore:
    """Keyed hashes of handled messenger updates, so a redelivered update is ignored.

    The key is the lookup of a stable inner hash, which the row keeps sealed (``inner_ct``)
    under an index key of its KEK, so the ratchet can re-key it.
    """

    table = "seen_updates"

    def __init__(self, raw: Raw, keyring: Keyring) -> None:
        self._raw = raw
        self._keyring = keyring

    def claim_values(
        self, channel: str, update_id: str, expires_at: datetime
    ) -> tuple[list[str], tuple[Any, ...]]:
        """The lookups an update's claim may already be under (the current one first), and
        the values of the row that claims it."""
        inner = bytes.fromhex(self._keyring.pseudonym(f"update:{channel}", update_id))
        keys = [d.hex() for d in self._keyring.lookups(inner)]
        values = (
            keys[0],
            hour_up(expires_at),
            self._keyring.current_kek_id,
            self._keyring.seal_inner(self.table, inner),
        )
        return keys, values

    async def claim(self, channel: str, update_id: str, expires_at: datetime) -> bool:
        """Record an update as handled; False when it already was (one statement either way,
        two while a rotation runs)."""
        keys, values = self.claim_values(channel, update_id, expires_at)
        if len(keys) > 1 and await self._raw.rows(_SEEN_BEFORE.listing(len(keys) - 1), *keys[1:]):
            # A rotation is re-keying: the update was recorded under the older key.
            return False
        return await self._raw.run(_CLAIM_UPDATE, *values) == 1


_UPSERT: dict[str, Any] = {"sqlite": sqlite_insert, "postgresql": postgresql_insert}


class SqlStatsStore:
    """Counters by week, region and category."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def increment(self, week: date, region: str, categories: Iterable[str]) -> None:
        """Add one to each counter, creating the ones that do not exist yet (one upsert, safe
        when other processes count at the same time)."""
        # Sorted, so two transactions counting overlapping categories lock rows in one order.
        rows = [
            {"week": week, "region": region, "category": c, "count": 1}
            for c in sorted(set(categories))
        ]
        if not rows:
            return
        connection = await self._session.connection()
        insert_ = _UPSERT[connection.dialect.name](StatCounter).values(rows)
        statement = insert_.on_conflict_do_update(
            index_elements=["week", "region", "category"],
            set_={"count": StatCounter.count + 1},
        )
        await connection.execute(statement)


class SqlAuditLog:
    """Append-only audit entries, each MAC-chained to the previous one (storage/audit.py).

    A case is named by the opaque token kept in its ``index_ct``, never by its id; times are
    whole hours.
    """

    def __init__(self, session: AsyncSession, keyring: Keyring, cipher: RecordCipher) -> None:
        self._session = session
        self._keyring = keyring
        self._cipher = cipher
        self._tokens: dict[str, str | None] = {}

    async def _token(self, case_id: str) -> str | None:
        if case_id not in self._tokens:
            row = (
                await self._session.execute(
                    select(Case.id, Case.kek_id, Case.wrapped_dek, Case.index_ct).where(
                        Case.id == case_id
                    )
                )
            ).first()
            token = None
            if row is not None and row.index_ct is not None:
                try:
                    dek = self._cipher.row_dek("cases", row)
                    index = open_index(self._cipher, dek, "cases", row.id, row.index_ct)
                    token = index.get(INDEX_AUDIT)
                except DecryptionError:
                    token = None
            self._tokens[case_id] = token
        return self._tokens[case_id]

    async def append(self, actor: str, action: str, case_id: str | None, at: datetime) -> None:
        """Add an entry after the current last one."""
        connection = await self._session.connection()
        await lock_chain(connection)
        token = None if case_id is None else await self._token(case_id)
        result = await self._session.execute(
            select(AuditEntry.mac).order_by(AuditEntry.id.desc()).limit(1)
        )
        prev = result.scalar_one_or_none() or GENESIS_MAC
        link = Link(prev, floor_hour(at), actor, action, token)
        kek_id = self._keyring.current_kek_id
        self._session.add(
            AuditEntry(
                at=link.at,
                actor=actor,
                action=action,
                case_token=token,
                prev_mac=prev,
                mac=link.mac(self._keyring, kek_id),
                kek_id=kek_id,
            )
        )
        await self._session.flush()

    async def verify(self) -> AuditProblem | None:
        """The first entry that was changed, removed or reordered, or None if the chain holds."""
        result = await self._session.stream_scalars(select(AuditEntry).order_by(AuditEntry.id))
        return await first_problem(self._keyring, result)


class KeyringOutOfDate(KeyringError):
    """The database was written under a newer KEK than this keyring holds."""


_KEY_STATE = select(KeyState.current_kek_id).where(KeyState.id == 1).with_for_update(read=True)


#: BEGIN and the key check in one round trip (a simple query: no parameters, the values are
#: integers of ours): the key state's lock, shared (a rotation publishing a new KEK takes it
#: alone, :data:`storage.locks.KEY_STATE`), then whether the state names a KEK newer than ours
#: ("SELECT 1"; a statement after the lock reads what any publish before it committed, which
#: holds in READ COMMITTED, named so whatever the server's default). An advisory lock, not a
#: shared row lock: every transaction share-locking the one row made PostgreSQL write that
#: lock and a new multixact into the row each time.
_BEGIN_CHECKED = (
    "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock_shared({keys}); {lock}"
    "SELECT 1 FROM key_state WHERE id = 1 AND current_kek_id > {mine}"
)


class _Begun:
    """A transaction begun on asyncpg directly, which SQLAlchemy's adapter then commits or rolls
    back as if it had begun it (it begins its own only when it holds none)."""

    def __init__(self, pg: Any) -> None:
        self._pg = pg

    async def commit(self) -> None:
        """End the transaction, keeping its work (PostgreSQL answers ROLLBACK, without an
        error, to a COMMIT of a transaction a failed statement aborted)."""
        if await self._pg.execute("COMMIT") != "COMMIT":
            raise RuntimeError("the transaction was rolled back, not committed")

    async def rollback(self) -> None:
        """End the transaction, undoing its work."""
        await self._pg.execute("ROLLBACK")


async def _begin_checked(fairy: Any, mine: int, lock: int | None) -> bool:
    """Begin on PostgreSQL with the key check, and take the advisory lock ``lock`` if given;
    False when the database names a newer KEK.

    BEGIN, the check and a chat's lock were three round trips of the dozen an answer took. A
    connection the server dropped fails here, before anything was done, as SQLAlchemy's own
    first statement would (the unit of work then tries once more on a fresh one).
    """
    adapter, pg = fairy.dbapi_connection, fairy.driver_connection
    # SQLAlchemy's asyncpg adapter keeps its transaction here (pinned: sqlalchemy < 2.2). Set
    # first: if the check fails after BEGIN (a timeout, a cancelled query), closing the
    # connection rolls back, instead of pooling it inside an aborted transaction.
    adapter._transaction = _Begun(pg)
    # One simple query (it takes no parameters): both values are integers.
    take = "" if lock is None else f"SELECT pg_advisory_xact_lock({int(lock)}); "
    status: str = await pg.execute(_BEGIN_CHECKED.format(keys=KEY_STATE, lock=take, mine=int(mine)))
    return status != "SELECT 1"


async def read_key_state(connection: AsyncConnection) -> int | None:
    """The KEK version new records must use, under a shared row lock (PostgreSQL)."""
    return (await connection.execute(_KEY_STATE)).scalar_one_or_none()


class SqlUnitOfWork:
    """One database transaction over every repository.

    It starts by checking the shared key state (PostgreSQL: a row read under a shared lock;
    SQLite: the keyring file, under the database write lock): if another process rotated the
    keyring, this one reloads it before wrapping any new DEK, so that no record is written
    under a KEK that a rotation is about to destroy.

    The transaction is a Core connection's; the ORM session joins it only when a repository
    uses the ORM. An answer's turn uses none (its statements are plain: storage/raw.py), and the
    session's own begin and commit were most of what SQLAlchemy still cost an answer.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        keyring: Keyring,
        vault: KeyVault | None = None,
        numbering: CaseNumbering | None = None,
    ) -> None:
        self._sessions = sessions
        self._keyring = keyring
        self._vault = vault
        self._numbering = numbering
        self._chat: tuple[str, str] | None = None
        #: PostgreSQL: the pool's connection this unit of work holds (``_begin``).
        self._fairy: Any = None

    def locking(self, channel: str, chat_id: str) -> Self:
        """This unit of work, set to take the chat's lock as it begins: on PostgreSQL in the
        round trip of BEGIN and the key check; on SQLite the one writer already serialises.

        The lock's key is a hash of the chat's keyed pseudonym, never of its id: the lock table
        shows nothing that leads back to a chat.
        """
        self._chat = (channel, chat_id)
        return self

    async def __aenter__(self) -> Self:
        """Begin and check the key state; repositories are built as they are first used.

        The key check is the transaction's first statement: a pooled connection the server
        dropped (a restart) fails there, before anything was done, and the check is tried once
        more on a fresh connection. That is what a pre-ping bought, without its round trip on
        every transaction.
        """
        engine: AsyncEngine = self._sessions.kw["bind"]
        self._engine = engine
        self._member: Member | None = None
        self._driver: Any = None
        self._sa: AsyncConnection | None = None
        chat, self._chat = self._chat, None  # for this entry only
        if engine.dialect.name == "sqlite":
            await self._join(engine)
        else:
            lock = None if chat is None else lock_key(f"chat:{self._keyring.pseudonym(*chat)}")
            try:
                await self._begin(engine, lock)
            except DBAPIError as exc:
                if not exc.connection_invalidated:
                    raise
                await self._begin(engine, lock)  # the pool has dropped that connection
        hold = self._member is None and watched(engine)
        self._raw = Raw(self._open_session, self._sa, self._driver, hold=hold)
        # Kept: an invalidated connection (a cancelled or dropped statement) refuses ``info``.
        self._info: dict[Any, Any] | None = None
        if hold:
            self._info = self._fairy.info  # the pooled connection's: SQLAlchemy's hook reads it
            self._info[HELD] = self._raw
        # One cipher per transaction: it keeps KEK contexts for its life (storage/crypto.py).
        self._cipher = RecordCipher(self._keyring)
        for name in _REPOSITORIES:  # a unit of work may be entered again: none from the last
            self.__dict__.pop(name, None)
        return self

    async def _join(self, engine: AsyncEngine) -> None:
        # SQLite: the process's write transaction, shared with the units of work waiting with
        # this one, each in its own savepoint, made durable by one COMMIT (storage/writer.py).
        self._member = member = await writer_of(engine).join()
        self._sa, self._driver = member.connection, member.driver
        try:
            await self._check_keys()
        except BaseException as exc:
            await member.close(exc)
            raise

    async def _begin(self, engine: AsyncEngine, lock: int | None) -> None:
        # The pool's connection itself: SQLAlchemy's Connection around it (its construction,
        # events, transaction objects and a greenlet hop each way) cost a unit of work more CPU
        # than a round trip, and a turn needs it only if it reaches the ORM (``_connection``).
        self._fairy = fairy = await engine.raw_connection()
        self._driver = fairy.driver_connection
        self._sa = None
        try:
            if await _begin_checked(fairy, self._keyring.current_kek_id, lock):
                return
            await self._check_keys()  # a rotation published a newer KEK: reload, or refuse
        except BaseException as exc:
            dropped = isinstance(exc, Exception) and self._driver.is_closed()
            await self._close_pg()
            if dropped:  # by the server (a restart): out of the pool, and tried once more
                raise DBAPIError(None, None, exc, connection_invalidated=True) from exc
            raise

    @property
    def _connection(self) -> AsyncConnection:
        # SQLAlchemy's side of the transaction, for the ORM and the rare paths: on PostgreSQL
        # made on first use around the pooled connection, already in the transaction begun on
        # asyncpg (``begin`` sends nothing: SQLAlchemy's adapter holds ``_Begun``).
        if self._sa is None:
            connection = Connection(self._engine.sync_engine, connection=self._fairy)
            connection.begin()
            self._sa = AsyncConnection(self._engine, connection)
        return self._sa

    async def _close_pg(self) -> None:
        # Back to the pool. SQLAlchemy's Connection ends what is left: a transaction not
        # committed (rolled back), a connection the server dropped (invalidated). A committed
        # one needs nothing: the pool's reset finds no transaction to roll back.
        adapter = self._fairy.dbapi_connection
        try:
            if self._driver.is_closed():
                adapter._transaction = None  # nothing to roll back on a connection that is gone
                await self._connection.invalidate()
                await self._connection.close()
            elif (
                self._sa is not None
                or adapter._transaction is not None
                or self._driver.is_in_transaction()
            ):
                if adapter._transaction is None and self._driver.is_in_transaction():
                    # A COMMIT that never went out: rolled back, never pooled holding its locks
                    # or its writes.
                    adapter._transaction = _Begun(self._driver)
                await self._connection.close()
            else:
                # In SQLAlchemy's greenlet: a pool past its size closes what comes back, and
                # closing awaits the driver (pinned: sqlalchemy < 2.2).
                await greenlet_spawn(self._fairy.close)
        finally:
            self._sa = None

    def _open_session(self) -> AsyncSession:
        if self._member is not None:
            # In a savepoint of its own inside the group's: the group commits, not the session.
            join_orm(self._connection)
            return self._sessions(bind=self._connection, join_transaction_mode="create_savepoint")
        # "rollback_only": the session's commit flushes and leaves the transaction to ours.
        return self._sessions(bind=self._connection, join_transaction_mode="rollback_only")

    @property
    def session(self) -> AsyncSession:
        """The transaction's ORM session (opened on first use)."""
        return self._raw.session

    @cached_property
    def drafts(self) -> SqlDraftStore:
        """Drafts of conversations in progress."""
        return SqlDraftStore(self._keyring, self._cipher, self._raw)

    @cached_property
    def cases(self) -> SqlCaseStore:
        """Submitted cases."""
        return SqlCaseStore(self.session, self._keyring, self._cipher, self._numbering)

    @cached_property
    def stats(self) -> SqlStatsStore:
        """Advocacy counters."""
        return SqlStatsStore(self.session)

    @cached_property
    def limits(self) -> SqlChatLimitStore:
        """Each chat's rate-limit bucket."""
        return SqlChatLimitStore(self._raw, self._keyring)

    @cached_property
    def audit(self) -> SqlAuditLog:
        """The hash-chained audit log."""
        return SqlAuditLog(self.session, self._keyring, self._cipher)

    @cached_property
    def attachments(self) -> SqlAttachmentStore:
        """Attachments of drafts and cases."""
        return SqlAttachmentStore(self.session, self._cipher)

    @cached_property
    def seen(self) -> SqlSeenStore:
        """Claims of handled updates and daily slots."""
        return SqlSeenStore(self._raw, self._keyring)

    @cached_property
    def lawyers(self) -> SqlLawyerStore:
        """Lawyers and their invitations."""
        return SqlLawyerStore(self.session, self._keyring, self._cipher)

    @cached_property
    def assignments(self) -> SqlAssignmentStore:
        """Which lawyer holds which case."""
        return SqlAssignmentStore(self.session, self._cipher)

    @cached_property
    def signal_inbox(self) -> SqlQueue:
        """Signal messages received and not yet handled."""
        return SqlQueue(self._raw, self._cipher, "signal_in")

    @cached_property
    def telegram_inbox(self) -> SqlQueue:
        """Telegram updates received and not yet handled."""
        return SqlQueue(self._raw, self._cipher, "telegram_in")

    @cached_property
    def signal_outbox(self) -> SqlQueue:
        """Signal sends of the old queue (drained at start)."""
        return SqlQueue(self._raw, self._cipher, "signal_out")

    @cached_property
    def outbox(self) -> SqlOutbox:
        """Messages to deliver, in order per chat."""
        return SqlOutbox(self._raw, self._keyring, self._cipher)

    @cached_property
    def casework(self) -> SqlCaseworkStore:
        """Events, decisions and deadlines."""
        return SqlCaseworkStore(self.session, self._cipher)

    async def _check_keys(self) -> None:
        connection = self._connection
        if connection.dialect.name == "sqlite":
            # BEGIN IMMEDIATE holds the database's single write lock, so a rotation cannot
            # destroy a KEK while this transaction runs; it rewrites the keyring file before it
            # publishes, so a look at the file is enough (no extra query on the hot path).
            if self._vault is not None and self._vault.changed_on_disk():
                self._vault.reload()
            return
        published = await read_key_state(connection)
        if published is None or published <= self._keyring.current_kek_id:
            return
        if self._vault is not None:
            self._vault.reload()
        if published > self._keyring.current_kek_id:
            raise KeyringOutOfDate(
                "the database uses a newer key than this keyring: is an old keyring restored?"
            )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Roll back whatever was not committed (closing the connection rolls it back)."""
        try:
            session = self._raw.session_opened
            if session is not None and session.in_transaction():
                await session.close()
        finally:
            if self._member is not None:
                self._raw.end()  # the group's connection is another's from now on
                await self._member.close(exc)
            else:
                try:
                    if self._info is not None:
                        self._info.pop(HELD, None)
                finally:
                    await self._close_pg()

    async def claim_turn(
        self, channel: str, chat_id: str, update_id: str, expires_at: datetime
    ) -> bool:
        """Claim a chat's update as ``seen.claim`` does; on PostgreSQL the same statement
        reads the chat's draft and bucket, which the turn asks for next."""
        keys, values = self.seen.claim_values(channel, update_id, expires_at)
        if self._member is not None or len(keys) > 1:
            # SQLite, where a statement is a call and not a round trip; or a rotation re-keying.
            return await self.seen.claim(channel, update_id, expires_at)
        drafts, limits = self.drafts, self.limits
        lookups = drafts.lookups(channel, chat_id)
        rows = await self._raw.rows(
            _CLAIM_TURN.listing(len(lookups)), *values, *lookups, limits.key(channel, chat_id)
        )
        drafts.read_ahead(channel, chat_id, [row[1:6] for row in rows if row[1] is not None])
        limits.read_ahead(channel, chat_id, [row[6:9] for row in rows[:1] if row[6] is not None])
        return bool(rows[0][0])

    async def commit(self) -> None:
        """Commit the transaction (with whatever the ORM holds back); on SQLite, return once
        the group it joined is on disk."""
        # Writes held back were done before whatever the ORM still holds (storage/raw.py).
        await self._raw.flush()
        session = self._raw.session_opened
        if session is not None and session.in_transaction():
            await session.commit()
        # Nothing of this unit of work may touch the connection again (one use case, one
        # transaction): on SQLite it passes to the next unit of work of the group.
        self._raw.end()
        if self._member is not None:
            await self._member.commit()
        elif self._sa is not None:
            await self._sa.commit()
        else:
            adapter = self._fairy.dbapi_connection
            try:
                await adapter._transaction.commit()
            finally:
                # Ended unless the COMMIT never went out (then ``_close_pg`` rolls back).
                if not self._driver.is_in_transaction():
                    adapter._transaction = None


#: The repositories a unit of work builds on first use.
_REPOSITORIES = tuple(
    name for name, value in vars(SqlUnitOfWork).items() if isinstance(value, cached_property)
)
