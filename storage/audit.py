"""The audit chain: MACs, verification, and the re-chaining that pruning and the ratchet need.

Each entry's MAC covers the MAC before it, under the audit key of a KEK (``kek_id``), so a
database-only attacker can neither forge an entry nor change, remove or reorder one unseen.

- Pruning: the entries of a case gone ``retention`` ago are removed; a *checkpoint* entry then
  opens the chain, carrying the MAC of the last entry before the pruning (the hash of the pruned
  prefix) as its ``prev_mac``. Verification starts from it.
- The ratchet: the audit key is derived from the KEK, so each rotation re-MACs the chain under
  the new KEK, after checking it under the old one. A chain found broken is never laundered: a
  ``audit.broken`` entry is written just before the first broken entry, and verification names
  that entry from then on.
- Entries written before tokens and hourly times (``kek_id`` is None) are converted once, when
  the running service is upgraded: case ids become the cases' tokens, times become hours.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import AsyncIterable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, Protocol, cast

from sqlalchemy import Table, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from bot.services.ports import AuditProblem
from storage import slices
from storage.crypto import DecryptionError, associated_data
from storage.index import floor_hour
from storage.keyring import Keyring
from storage.locks import wait_xact_lock
from storage.models import AuditEntry

GENESIS_MAC = "0" * 64
#: The name of a case's audit token inside its ``index_ct``.
INDEX_AUDIT = "audit"
CHECKPOINT = "audit.checkpoint"
BROKEN = "audit.broken"
SYSTEM = "system"
#: Tokens are 24 hex digits; a 32-digit value is a case id from before tokens.
TOKEN_HEX = 24


def new_audit_token() -> str:
    """A random opaque token naming one case in the audit log."""
    return secrets.token_hex(TOKEN_HEX // 2)


async def lock_chain(connection: AsyncConnection) -> None:
    """Serialise writers of the chain (DESIGN.md section 10; SQLite's write lock already does)."""
    await wait_xact_lock(connection, "audit-chain")


class ChainEntry(Protocol):
    """An audit entry as read: a mapped row, or the columns of one."""

    @property
    def id(self) -> int: ...
    @property
    def at(self) -> datetime: ...
    @property
    def actor(self) -> str: ...
    @property
    def action(self) -> str: ...
    @property
    def case_token(self) -> str | None: ...
    @property
    def prev_mac(self) -> str: ...
    @property
    def mac(self) -> str: ...
    @property
    def kek_id(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class Link:
    """What an entry's MAC covers."""

    prev: str
    at: datetime
    actor: str
    action: str
    token: str | None

    def mac(self, keyring: Keyring, kek_id: int) -> str:
        """The MAC under the audit key of KEK ``kek_id``."""
        message = associated_data(
            "tipline/audit-entry/v2",
            self.prev,
            self.at.isoformat(),
            self.actor,
            self.action,
            self.token or "",
        )
        return keyring.chain_mac(message, kek_id)

    def legacy_mac(self, keyring: Keyring) -> str:
        """The MAC of an entry written before index keys ratcheted."""
        message = associated_data(
            self.prev, self.at.isoformat(), self.actor, self.action, self.token or ""
        )
        return keyring.audit_mac(message)


def _mac_holds(keyring: Keyring, entry: ChainEntry) -> bool:
    link = Link(entry.prev_mac, entry.at, entry.actor, entry.action, entry.case_token)
    try:
        if entry.kek_id is None:
            expected = link.legacy_mac(keyring)
        else:
            expected = link.mac(keyring, entry.kek_id)
    except DecryptionError:
        return False
    return secrets.compare_digest(expected, entry.mac)


@dataclass(slots=True)
class _Walk:
    """Checks entries in order: the first problem, where it is, and whether a marker said so."""

    keyring: Keyring
    prev: str = GENESIS_MAC
    problem: AuditProblem | None = None
    #: Where the problem is, as an index into the entries walked.
    at_index: int = -1
    #: The problem is one a rotation already found (an ``audit.broken`` entry precedes it).
    known: bool = False
    _seen: int = 0
    _flagged: bool = False

    def step(self, entry: ChainEntry) -> None:
        """Check the next entry."""
        index, self._seen = self._seen, self._seen + 1
        if self.problem is None:
            found = self._check(entry, index == 0)
            if found is not None:
                self.problem, self.at_index = AuditProblem(entry.id, found), index
            elif self._flagged:
                reason = "was changed, removed or reordered before the keys were last rotated"
                self.problem, self.at_index, self.known = (
                    AuditProblem(entry.id, reason),
                    index,
                    True,
                )
        self._flagged = entry.action == BROKEN
        self.prev = entry.mac

    def _check(self, entry: ChainEntry, first: bool) -> str | None:
        opens = first and entry.action == CHECKPOINT
        if not opens and entry.prev_mac != self.prev:
            return "does not follow the entry before it"
        if not _mac_holds(self.keyring, entry):
            return "was changed"
        return None

    def finish(self) -> AuditProblem | None:
        """The problem, also when the log ends with a broken-chain marker."""
        if self.problem is None and self._flagged:
            return AuditProblem(0, "lost its last entries before the keys were last rotated")
        return self.problem


async def first_problem(
    keyring: Keyring, entries: AsyncIterable[AuditEntry]
) -> AuditProblem | None:
    """The first entry that was changed, removed or reordered, or None if the chain holds."""
    walk = _Walk(keyring)
    async for entry in entries:
        walk.step(entry)
        if walk.problem is not None:
            return walk.problem
    return walk.finish()


@dataclass(frozen=True, slots=True)
class RechainReport:
    """What a re-chaining did."""

    entries: int
    pruned: int
    problem: AuditProblem | None


#: Entries read per statement when the chain is re-made: each page is a short stretch of work
#: for the event loop, whatever the length of the chain.
PAGE = 1_000
_COLUMNS = (
    AuditEntry.id,
    AuditEntry.at,
    AuditEntry.actor,
    AuditEntry.action,
    AuditEntry.case_token,
    AuditEntry.prev_mac,
    AuditEntry.mac,
    AuditEntry.kek_id,
)


class _Entry(NamedTuple):
    """An entry's columns, as :data:`_COLUMNS` reads them."""

    id: int
    at: datetime
    actor: str
    action: str
    case_token: str | None
    prev_mac: str
    mac: str
    kek_id: int | None


#: What re-chaining keeps of an entry: (at, actor, action, token). Plain tuples of strings and
#: times, which the cyclic collector stops tracking: a long chain held in memory does not make
#: its full passes longer.
_Kept = tuple[datetime, str, str, str | None]


async def _read_chain(session: AsyncSession, page: int) -> list[list[tuple[Any, ...]]]:
    """Every entry in order as plain tuples, in pages read one statement each (keyset on id)."""
    pages: list[list[tuple[Any, ...]]] = []
    last = 0
    while True:
        query = select(*_COLUMNS).where(AuditEntry.id > last).order_by(AuditEntry.id).limit(page)
        found = (await session.execute(query)).all()
        if found:
            pages.append([tuple(row) for row in found])
        if len(found) < page:
            return pages
        last = found[-1].id


async def rechain(
    session: AsyncSession,
    keyring: Keyring,
    now: datetime,
    *,
    drop_tokens: Iterable[str] = (),
    case_tokens: Mapping[str, str] | None = None,
    page: int = PAGE,
) -> RechainReport:
    """Write the chain anew under the current KEK, without the entries of ``drop_tokens``.

    ``case_tokens`` maps case ids to tokens for entries from before tokens; an id not in it
    (its case already gone) gets a fresh token of its own. Runs in the caller's transaction;
    the MACs are checked and made in slices, and what is read is let go page by page, so a
    long chain does not stall the event loop (freeing it at once took as long as making it).
    """
    await lock_chain(await session.connection())
    pages = await _read_chain(session, page)
    if not pages:
        return RechainReport(0, 0, None)
    chunks, report = await slices.run(
        _rechained(keyring, pages, now, set(drop_tokens), dict(case_tokens or {}))
    )
    await session.execute(delete(AuditEntry))
    connection = await session.connection()
    table = cast(Table, AuditEntry.__table__)
    while chunks:
        await connection.execute(insert(table), chunks.popleft())
    return report


def _rechained(
    keyring: Keyring,
    pages: list[list[tuple[Any, ...]]],
    now: datetime,
    dropped: set[str],
    converted: dict[str, str],
) -> slices.Sliced[tuple[deque[list[dict[str, object]]], RechainReport]]:
    """The new chain in statements' worth of column values, and what re-chaining found and
    pruned; empties ``pages`` as it goes."""
    walk = _Walk(keyring)
    count = 0
    for rows in pages:
        for raw in rows:
            walk.step(_Entry._make(raw))
            if slices.due(count):
                yield
            count += 1
    problem = walk.finish()
    head_mac = _Entry._make(pages[-1][-1]).mac
    kept: deque[_Kept] = deque()
    opening: Link | None = None
    pruned = 0
    index = 0
    for number, rows in enumerate(pages):
        for raw in rows:
            if slices.due(index):
                yield
            row = _Entry._make(raw)
            token = row.case_token
            if row.kek_id is None and token is not None and len(token) != TOKEN_HEX:
                token = converted.setdefault(token, new_audit_token())
            if index == 0 and row.action == CHECKPOINT:
                opening = Link(row.prev_mac, row.at, SYSTEM, CHECKPOINT, None)
            elif token is not None and token in dropped:
                pruned += 1
            else:
                if index == walk.at_index and not walk.known:
                    kept.append((floor_hour(now), SYSTEM, BROKEN, None))
                kept.append((floor_hour(row.at), row.actor, row.action, token))
            index += 1
        pages[number] = []
    if pruned:
        # The checkpoint carries the MAC of the chain's head before pruning: the pruned prefix.
        opening = Link(head_mac, floor_hour(now), SYSTEM, CHECKPOINT, None)
    chunks = yield from _chained(keyring, kept, opening)
    return chunks, RechainReport(count, pruned, problem)


def _chained(
    keyring: Keyring, kept: deque[_Kept], opening: Link | None
) -> slices.Sliced[deque[list[dict[str, object]]]]:
    """Column values of the entries ``kept`` chained in order under the current KEK, after the
    ``opening`` checkpoint if there is one, a statement's worth at a time; empties ``kept``."""
    kek_id = keyring.current_kek_id
    chunks: deque[list[dict[str, object]]] = deque()
    prev = GENESIS_MAC
    if opening is not None:
        kept.appendleft((opening.at, opening.actor, opening.action, opening.token))
        prev = opening.prev
    index = 0
    while kept:
        at, actor, action, token = kept.popleft()
        mac = Link(prev, at, actor, action, token).mac(keyring, kek_id)
        if index % slices.ROWS_PER_STATEMENT == 0:
            chunks.append([])
        chunks[-1].append(
            {
                "at": at,
                "actor": actor,
                "action": action,
                "case_token": token,
                "prev_mac": prev,
                "mac": mac,
                "kek_id": kek_id,
            }
        )
        prev = mac
        if slices.due(index):
            yield
        index += 1
    return chunks
