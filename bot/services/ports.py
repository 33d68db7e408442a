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

    async def id_by_receipt(self, receipt: str) -> str | None:
        """The id of the case with this (normalised) receipt code, or None."""
        ...

    async def shred_reply_address(self, address: str) -> int:
        """Forget a chat address in every case holding it; how many there were."""
        ...

    async def get(self, case_id: str) -> CaseContentInfo | None:
        """Decrypt one case."""
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


class InboxStore(Protocol):
    """A channel's durable inbox of received messages not yet handled."""

    async def done(self, item_id: str) -> None:
        """Remove a handled item."""
        ...


class OutboxEntryInfo(Protocol):
    """A decrypted outbox item."""

    @property
    def id(self) -> str: ...
    @property
    def channel(self) -> str: ...
    @property
    def lane(self) -> str: ...
    @property
    def payload(self) -> dict[str, Any]: ...
    @property
    def attempts(self) -> int: ...


class OutboxStore(Protocol):
    """Messages to deliver, in order per chat, and what each chat's screen still shows."""

    async def put_many(
        self,
        items: Sequence[tuple[str, str, Mapping[str, Any]]],
        now: datetime,
        expires_at: datetime,
    ) -> Sequence[OutboxEntryInfo]:
        """Store ``(channel, chat, payload)`` items, due at once, in this order."""
        ...

    async def due_heads(
        self, channel: str, now: datetime, limit: int = 100
    ) -> Sequence[OutboxEntryInfo]:
        """The oldest item of each of the channel's lanes, where that item is due."""
        ...

    async def done(self, item_ids: Sequence[str]) -> None:
        """Forget delivered items."""
        ...

    async def retry_at(self, item_id: str, when: datetime, attempts: int) -> None:
        """Try an item again later."""
        ...

    async def screen(self, lane: str) -> list[str]:
        """Refs of the bot's messages still on a chat's screen."""
        ...

    async def set_screen(self, lane: str, refs: Sequence[str], expires_at: datetime) -> None:
        """Replace what a chat's screen holds."""
        ...

    async def depth(self) -> dict[str, int]:
        """Items waiting, by channel."""
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

    @property
    def outbox(self) -> OutboxStore:
        """The outbox in this transaction."""
        ...

    @property
    def signal_inbox(self) -> InboxStore:
        """Signal envelopes received and not yet handled."""
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


class LawyerInfo(Protocol):
    """A lawyer or admin as stored."""

    @property
    def id(self) -> int: ...
    @property
    def role(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def on_call(self) -> bool: ...
    @property
    def languages(self) -> tuple[str, ...]: ...
    @property
    def regions(self) -> tuple[str, ...]: ...
    @property
    def name(self) -> str: ...
    @property
    def open_cases(self) -> int: ...


class CaseInfo(Protocol):
    """A case's plaintext metadata."""

    @property
    def id(self) -> str: ...
    @property
    def number(self) -> int: ...
    @property
    def priority(self) -> int: ...
    @property
    def status(self) -> str: ...
    @property
    def assigned_lawyer_id(self) -> int | None: ...
    @property
    def assigned_at(self) -> datetime | None: ...
    @property
    def expires_at(self) -> datetime: ...
    @property
    def created_on(self) -> date: ...
    @property
    def admins_alerted(self) -> bool: ...
    @property
    def expiry_warned(self) -> bool: ...


class CaseContentInfo(Protocol):
    """A decrypted case."""

    @property
    def answers(self) -> dict[str, Any]: ...
    @property
    def meta(self) -> dict[str, Any]: ...
    @property
    def reply_address(self) -> str | None: ...


class LawyerStore(Protocol):
    """Lawyers and admins."""

    async def invite(
        self,
        *,
        name: str,
        role: str,
        languages: Sequence[str],
        regions: Sequence[str],
        on_call: bool,
        invite_code: str,
        expires_at: datetime,
        now: datetime,
    ) -> int: ...
    async def register(
        self, invite_code: str, address: str, phrase: str, now: datetime
    ) -> LawyerInfo | None: ...
    async def get(self, lawyer_id: int) -> LawyerInfo | None: ...
    async def by_address(self, address: str) -> LawyerInfo | None: ...
    async def verify(self, lawyer_id: int, phrase: str) -> bool: ...
    async def set_status(
        self, lawyer_id: int, status: str, *, forget_contact: bool = False
    ) -> bool: ...
    async def renew_invite(
        self, lawyer_id: int, invite_code: str, expires_at: datetime
    ) -> bool: ...
    async def contact(self, lawyer_id: int) -> str | None: ...
    async def all(self, *, with_names: bool = True) -> Sequence[LawyerInfo]: ...
    async def admin_contacts(self) -> list[str]: ...


class AssignmentStore(Protocol):
    """Case numbers, assignment, relayed messages, job bookkeeping."""

    async def by_number(self, number: int) -> CaseInfo | None: ...
    async def by_id(self, case_id: str) -> CaseInfo | None: ...
    async def assigned_to(self, lawyer_id: int) -> Sequence[CaseInfo]: ...
    async def waiting(self) -> Sequence[CaseInfo]: ...
    async def unassigned_documentation(self, since_created: date) -> Sequence[CaseInfo]: ...
    async def expiring(self, before: datetime) -> Sequence[CaseInfo]: ...
    async def all_open(self) -> Sequence[CaseInfo]: ...
    async def tried(self, case_id: str) -> set[int]: ...
    async def assign(self, case_id: str, lawyer_id: int, now: datetime) -> None: ...
    async def release(self, case_id: str) -> None: ...
    async def update(self, case_id: str, **values: Any) -> None: ...
    async def add_message(self, case_id: str, direction: str, body: str, now: datetime) -> None: ...
    async def messages(self, case_id: str) -> list[tuple[str, datetime, str]]: ...
    async def last_run(self, job: str) -> datetime | None: ...
    async def mark_run(self, job: str, now: datetime) -> None: ...


class StaffUnitOfWork(UnitOfWork, Protocol):
    """A unit of work that also reaches lawyers and assignments."""

    @property
    def lawyers(self) -> LawyerStore:
        """Lawyers in this transaction."""
        ...

    @property
    def assignments(self) -> AssignmentStore:
        """Assignments in this transaction."""
        ...


class Notifier(Protocol):
    """Sends a text to a messenger address (``telegram:…``, ``signal:…``) through its channel."""

    async def send(self, address: str, text: str) -> bool:
        """Deliver; False when the address's channel is not running or refuses."""
        ...
