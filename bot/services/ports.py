"""The storage contracts services rely on; ``storage`` implements them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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
