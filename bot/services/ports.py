"""The storage contracts services rely on; ``storage`` implements them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from types import TracebackType
from typing import Any, Protocol, Self


class DraftStore(Protocol):
    """Encrypted drafts of conversations in progress, found by chat."""

    async def load(self, channel: str, chat_id: str, now: datetime) -> dict[str, Any] | None:
        """The draft state of a chat, or None (none, or expired)."""
        ...

    async def save(
        self, channel: str, chat_id: str, state: Mapping[str, Any], expires_at: datetime
    ) -> None:
        """Create or replace a chat's draft."""
        ...

    async def delete(self, channel: str, chat_id: str) -> bool:
        """Delete a chat's draft; whether there was one."""
        ...


class CaseStore(Protocol):
    """Encrypted submitted cases."""

    async def add(
        self,
        *,
        receipt: str,
        priority: int,
        status: str,
        created_on: date,
        expires_at: datetime,
        answers: Mapping[str, Any],
        meta: Mapping[str, Any],
        reply_address: str | None,
    ) -> str:
        """Store a case and return its id."""
        ...

    async def status_by_receipt(self, receipt: str) -> str | None:
        """The status of the case with this (normalised) receipt code, or None."""
        ...

    async def shred_reply_address(self, address: str) -> int:
        """Forget a chat address in every case holding it; how many there were."""
        ...


class AttachmentStore(Protocol):
    """Encrypted files sent by reporters."""

    async def add(
        self,
        *,
        original: bytes,
        clean: bytes | None,
        meta: Mapping[str, Any],
        expires_at: datetime,
    ) -> str:
        """Store a file; returns its opaque reference."""
        ...

    async def set_expiry(self, refs: Iterable[str], expires_at: datetime) -> None:
        """Give files a new expiry (their case's)."""
        ...


class SeenStore(Protocol):
    """Messenger updates already handled."""

    async def claim(self, channel: str, update_id: str, expires_at: datetime) -> bool:
        """Record an update as handled; False when it already was."""
        ...


class StatsStore(Protocol):
    """Advocacy counters that hold no link to any case."""

    async def increment(self, week: date, region: str, categories: Iterable[str]) -> None:
        """Add one to each category's counter for this week and region."""
        ...


class AuditLog(Protocol):
    """Append-only, MAC-chained log of admin and lawyer actions."""

    async def append(self, actor: str, action: str, case_id: str | None, at: datetime) -> None:
        """Record one action (never content)."""
        ...


class UnitOfWork(Protocol):
    """One transaction over every store; nothing is written unless ``commit`` is called."""

    @property
    def drafts(self) -> DraftStore:
        """Drafts in this transaction."""
        ...

    @property
    def cases(self) -> CaseStore:
        """Cases in this transaction."""
        ...

    @property
    def stats(self) -> StatsStore:
        """Statistics counters in this transaction."""
        ...

    @property
    def audit(self) -> AuditLog:
        """The audit log in this transaction."""
        ...

    @property
    def attachments(self) -> AttachmentStore:
        """Attachments in this transaction."""
        ...

    @property
    def seen(self) -> SeenStore:
        """Handled messenger updates in this transaction."""
        ...

    async def commit(self) -> None:
        """Make the transaction's writes durable."""
        ...

    async def __aenter__(self) -> Self:
        """Open the transaction."""
        ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Roll back anything not committed and release the connection."""
        ...


class KekInfo(Protocol):
    """One KEK version and how many records it wraps."""

    @property
    def kek_id(self) -> int: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def current(self) -> bool: ...
    @property
    def records(self) -> Mapping[str, int]: ...


class RotationInfo(Protocol):
    """What a rotation did."""

    @property
    def current_kek_id(self) -> int: ...
    @property
    def rewrapped(self) -> int: ...
    @property
    def destroyed(self) -> tuple[int, ...]: ...
    @property
    def unreadable_removed(self) -> int: ...
    @property
    def complete(self) -> bool: ...


class PurgeInfo(Protocol):
    """What a purge found or deleted."""

    @property
    def expired(self) -> Mapping[str, int]: ...
    @property
    def dry_run(self) -> bool: ...
    @property
    def rotation(self) -> RotationInfo | None: ...
    @property
    def checkpointed(self) -> bool: ...


class StatInfo(Protocol):
    """One advocacy counter."""

    @property
    def week(self) -> date: ...
    @property
    def region(self) -> str: ...
    @property
    def category(self) -> str: ...
    @property
    def count(self) -> int: ...


class AuditBreak(Protocol):
    """Where the audit chain breaks."""

    @property
    def entry_id(self) -> int: ...
    @property
    def reason(self) -> str: ...


class MaintenanceStore(Protocol):
    """Key and lifecycle operations that storage carries out, each in its own transactions."""

    def uow(self) -> UnitOfWork:
        """A unit of work on the same database and keys."""
        ...

    async def key_status(self) -> Sequence[KekInfo]:
        """Every KEK version with its record counts."""
        ...

    async def rotate(self, now: datetime) -> RotationInfo:
        """The ratchet: new KEK, re-wrap, destroy the old."""
        ...

    async def rekey_root(self, secret: Any, cost: Any) -> None:
        """Seal the KEKs under a new root key."""
        ...

    async def purge(self, now: datetime, *, dry_run: bool = False) -> PurgeInfo:
        """Delete what expired, then ratchet."""
        ...

    async def wipe(self, now: datetime) -> None:
        """Destroy every KEK, then delete every row."""
        ...

    async def verify_audit(self) -> tuple[int, AuditBreak | None]:
        """Entry count and the first broken audit entry."""
        ...

    async def stat_rows(self) -> Sequence[StatInfo]:
        """Every advocacy counter."""
        ...
