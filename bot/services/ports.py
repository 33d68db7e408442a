"""The vocabulary services and storage share: ids, frozen records, and the store contracts
that ``storage`` implements (storage imports this module and nothing else of ``bot``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import date, datetime
from types import TracebackType
from typing import Any, NewType, Protocol, Self, runtime_checkable

from bot.domain.lifecycle import (
    DOCUMENTATION,
    OPEN,
    WAITING,
    CaseStatus,
    LawyerStatus,
    Role,
    case_may_become,
    gets_cases,
    lawyer_may_become,
    needs_routing,
)

__all__ = [
    "DOCUMENTATION",
    "OPEN",
    "WAITING",
    "CaseStatus",
    "LawyerStatus",
    "Role",
    "case_may_become",
    "gets_cases",
    "lawyer_may_become",
    "needs_routing",
]

#: A case's random record id (never shown to anyone).
CaseId = NewType("CaseId", str)
#: A lawyer's or admin's id, as the admin's CLI shows it.
LawyerId = NewType("LawyerId", int)


@dataclass(frozen=True, slots=True)
class LawyerRecord:
    """A lawyer or admin as services see it (the name only when asked for)."""

    id: LawyerId
    role: str
    status: str
    on_call: bool
    languages: tuple[str, ...]
    regions: tuple[str, ...]
    name: str
    #: Accepted cases: what counts towards the cap.
    open_cases: int = 0


@dataclass(frozen=True, slots=True)
class CaseRecord:
    """A case's plaintext metadata, for routing and lawyer commands."""

    id: CaseId
    number: int
    priority: int
    status: str
    assigned_lawyer_id: LawyerId | None
    assigned_at: datetime | None
    expires_at: datetime
    created_on: date
    admins_alerted: bool
    expiry_warned: bool


@dataclass(frozen=True, slots=True)
class CaseContent:
    """A decrypted case, for lawyers and tests; never logged."""

    id: CaseId
    status: str
    priority: int
    answers: dict[str, Any]
    meta: dict[str, Any]
    reply_address: str | None


@dataclass(frozen=True, slots=True)
class NewAttachment:
    """A file a reporter sent, checked: the original, a cleaned copy if one was made."""

    original: bytes
    clean: bytes | None
    meta: Mapping[str, Any]
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class AttachmentContent:
    """A decrypted attachment, for lawyers and tests; never logged."""

    id: str
    original: bytes
    clean: bytes | None
    meta: dict[str, Any]


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """A decrypted outbox item."""

    id: str
    channel: str
    lane: str
    payload: dict[str, Any]
    attempts: int
    due_at: datetime


@dataclass(frozen=True, slots=True)
class ScreenEntry:
    """A chat screen with a message due for deletion: its lane, its chat and what it shows."""

    lane: str
    chat: str
    refs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """A decrypted item of a durable queue (the Signal inbox)."""

    id: str
    payload: dict[str, Any]
    attempts: int
    next_attempt_at: datetime


@dataclass(frozen=True, slots=True)
class KekUsage:
    """One KEK version and how many records it wraps, per table."""

    kek_id: int
    created_at: datetime
    current: bool
    records: dict[str, int]


@dataclass(frozen=True, slots=True)
class RotationReport:
    """What a rotation did."""

    current_kek_id: int
    rewrapped: int
    destroyed: tuple[int, ...]
    unreadable_removed: int
    complete: bool


@dataclass(frozen=True, slots=True)
class PurgeReport:
    """What a purge found and (unless a dry run) deleted."""

    expired: dict[str, int]
    dry_run: bool
    rotation: RotationReport | None = None
    checkpointed: bool = False


@dataclass(frozen=True, slots=True)
class StatRow:
    """One advocacy counter."""

    week: date
    region: str
    category: str
    count: int


@dataclass(frozen=True, slots=True)
class AuditProblem:
    """Where the audit chain breaks."""

    entry_id: int
    reason: str


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


@dataclass(frozen=True, slots=True)
class NewCase:
    """A case as intake submits it, before storage encrypts it and gives it an id and number."""

    receipt: str
    priority: int
    status: str
    created_on: date
    expires_at: datetime
    answers: Mapping[str, Any]
    meta: Mapping[str, Any]
    reply_address: str | None


class CaseStore(Protocol):
    """Encrypted submitted cases."""

    async def add(self, case: NewCase) -> str:
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

    async def get(self, case_id: str) -> CaseContent | None:
        """Decrypt one case."""
        ...

    async def delete(self, case_id: str) -> bool:
        """Delete a case with its thread, attempts, links and deadlines; whether it existed."""
        ...


class AttachmentStore(Protocol):
    """Encrypted files sent by reporters."""

    async def add(self, file: NewAttachment) -> str:
        """Store a file; returns its opaque reference."""
        ...

    async def set_expiry(self, refs: Iterable[str], expires_at: datetime) -> None:
        """Give files a new expiry (their case's)."""
        ...

    async def get(self, ref: str) -> AttachmentContent | None:
        """Decrypt one file (the original bytes go to lawyers only)."""
        ...

    async def delete(self, refs: Iterable[str]) -> int:
        """Delete files; how many there were."""
        ...


class SeenStore(Protocol):
    """Messenger updates already handled."""

    async def claim(self, channel: str, update_id: str, expires_at: datetime) -> bool:
        """Record an update as handled; False when it already was."""
        ...


@dataclass(frozen=True, slots=True)
class Bucket:
    """A chat's rate-limit token bucket (bot/services/ratelimit.py does the arithmetic)."""

    tokens: float
    #: When the bucket was last counted (a precise time: the row lives only until it refills).
    at: datetime
    #: The reporter was told about this flood already.
    warned: bool = False


class ChatLimitStore(Protocol):
    """Each chat's rate-limit bucket, shared by every process; read and written under the chat's
    lock (``DraftStore.lock``), so a turn's read-modify-write is not interleaved."""

    async def get(self, channel: str, chat_id: str) -> Bucket | None:
        """The chat's bucket, or None (never counted, or forgotten once full)."""
        ...

    async def put(self, channel: str, chat_id: str, bucket: Bucket) -> None:
        """Create or replace the chat's bucket."""
        ...

    async def prune(self, before: datetime) -> int:
        """Forget buckets last counted at or before ``before`` (full again: the same as none);
        how many."""
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


class OutboxStore(Protocol):
    """Messages to deliver, in order per chat, and what each chat's screen still shows."""

    async def put_many(
        self,
        items: Sequence[tuple[str, str, Mapping[str, Any]]],
        now: datetime,
        expires_at: datetime,
    ) -> Sequence[OutboxEntry]:
        """Store ``(channel, chat, payload)`` items, due at once, in this order."""
        ...

    async def due_heads(
        self, channel: str, now: datetime, limit: int = 100
    ) -> Sequence[OutboxEntry]:
        """The oldest item of each of the channel's lanes, where that item is due."""
        ...

    async def claim(
        self, item_id: str, now: datetime, until: datetime, screen_of: str | None = None
    ) -> bool:
        """Take a due item that heads its lane for delivery until ``until`` (it is not due for
        anyone else meanwhile); False when it is not due, not its lane's head, or gone. Given
        ``screen_of``, storage may read that lane's screen in the same round trip."""
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

    async def set_screen(
        self,
        lane: str,
        refs: Sequence[str],
        expires_at: datetime,
        *,
        channel: str | None = None,
        chat: str | None = None,
        check_at: datetime | None = None,
    ) -> None:
        """Replace what a chat's screen holds; ``check_at`` is when the deletion job looks."""
        ...

    async def due_screens(
        self, channel: str, now: datetime, limit: int = 100, after: str = ""
    ) -> Sequence[ScreenEntry]:
        """Screens of a channel whose ``check_at`` has come, in lane order after ``after`` (the
        hour has come for all of them, so the sweep pages through every one)."""
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
    def limits(self) -> ChatLimitStore:
        """Rate-limit buckets in this transaction."""
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

    @property
    def telegram_inbox(self) -> InboxStore:
        """Telegram updates received (and so confirmed to Telegram) and not yet handled."""
        ...

    async def commit(self) -> None:
        """Make the transaction's writes durable."""
        ...

    async def claim_turn(
        self, channel: str, chat_id: str, update_id: str, expires_at: datetime
    ) -> bool:
        """Claim an update of a chat's turn as ``seen.claim`` does (False: handled before).
        Storage may read in the same round trip what a turn reads next: the chat's draft and
        rate-limit bucket."""
        ...

    def locking(self, channel: str, chat_id: str) -> Self:
        """This unit of work, set to hold the chat's lock from its first statement until it
        ends (other processes' turns for the same chat wait), so each chat's updates are
        applied one at a time."""
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


class MaintenanceStore(Protocol):
    """Key and lifecycle operations that storage carries out, each in its own transactions."""

    def uow(self) -> StaffUnitOfWork:
        """A unit of work on the same database and keys."""
        ...

    async def key_status(self) -> Sequence[KekUsage]:
        """Every KEK version with its record counts."""
        ...

    async def rotate(self, now: datetime) -> RotationReport:
        """The ratchet: new KEK, re-wrap, destroy the old."""
        ...

    async def rekey_root(self, secret: Any, cost: Any) -> None:
        """Seal the KEKs under a new root key."""
        ...

    async def purge(self, now: datetime, *, dry_run: bool = False) -> PurgeReport:
        """Delete what expired, then ratchet."""
        ...

    def exclusive(self, name: str) -> AbstractAsyncContextManager[bool]:
        """Hold a named lock for the block if no other process holds it; yields whether this
        one does (several processes share one database)."""
        ...

    async def wipe(self, now: datetime) -> None:
        """Destroy every KEK, then delete every row."""
        ...

    async def verify_audit(self) -> tuple[int, AuditProblem | None]:
        """Entry count and the first broken audit entry."""
        ...

    async def stat_rows(self) -> Sequence[StatRow]:
        """Every advocacy counter."""
        ...


@dataclass(frozen=True, slots=True)
class Invitation:
    """A new staff account as an admin invites it; the code is stored only as a keyed hash."""

    name: str
    role: str
    languages: tuple[str, ...]
    regions: tuple[str, ...]
    on_call: bool
    invite_code: str
    expires_at: datetime
    now: datetime


class LawyerStore(Protocol):
    """Lawyers and admins."""

    async def invite(self, invitation: Invitation) -> int: ...
    async def register(
        self, invite_code: str, address: str, phrase: str, now: datetime
    ) -> LawyerRecord | None: ...
    async def get(self, lawyer_id: int) -> LawyerRecord | None: ...
    async def by_address(self, address: str) -> LawyerRecord | None: ...
    async def verify(self, lawyer_id: int, phrase: str) -> bool: ...
    async def set_status(
        self, lawyer_id: int, status: str, *, forget_contact: bool = False
    ) -> bool: ...
    async def renew_invite(
        self, lawyer_id: int, invite_code: str, expires_at: datetime
    ) -> bool: ...
    async def contact(self, lawyer_id: int) -> str | None: ...
    async def all(self, *, with_names: bool = True) -> Sequence[LawyerRecord]: ...
    async def admin_contacts(self) -> list[str]: ...


class AssignmentStore(Protocol):
    """Case numbers, assignment, relayed messages, job bookkeeping."""

    async def by_number(self, number: int) -> CaseRecord | None: ...
    async def by_id(self, case_id: str) -> CaseRecord | None: ...
    async def assigned_to(self, lawyer_id: int) -> Sequence[CaseRecord]: ...
    async def waiting(self) -> Sequence[CaseRecord]: ...
    async def unassigned_documentation(self, since_created: date) -> Sequence[CaseRecord]: ...
    async def expiring(self, before: datetime) -> Sequence[CaseRecord]: ...
    async def all_open(self) -> Sequence[CaseRecord]: ...
    async def tried(self, case_id: str) -> set[int]: ...
    async def assign(self, case_id: str, lawyer_id: int, now: datetime) -> None: ...
    async def release(self, case_id: str) -> None: ...
    async def update(self, case_id: str, **values: Any) -> None: ...
    async def add_message(self, case_id: str, direction: str, body: str, now: datetime) -> None: ...
    async def messages(self, case_id: str) -> list[tuple[str, datetime, str]]: ...
    async def unread(self, case_id: str) -> list[tuple[str, str]]:
        """Messages to the reporter never shown yet: (message id, text), oldest first."""
        ...

    async def mark_shown(self, message_ids: Sequence[str], expires_at: datetime) -> None:
        """Messages shown to the reporter: read once, purged at ``expires_at``."""
        ...

    async def last_run(self, job: str) -> datetime | None: ...
    async def mark_run(self, job: str, now: datetime) -> None: ...
    async def try_job(self, job: str) -> bool:
        """Hold the job's lock until the transaction ends; False when another process runs the
        job right now (it handles what is due, so this round skips it)."""
        ...

    async def schedule_erase(self, due: datetime) -> None:
        """Ask for a ratchet by ``due``, an hour (an earlier request stands)."""
        ...

    async def erase_due(self) -> datetime | None:
        """When the pending (or interrupted) ratchet is due, if one is."""
        ...

    async def claim_erase(self) -> datetime | None:
        """Take the pending request for a ratchet about to start; its due hour, or None.
        Deletions after the claim ask for another ratchet."""
        ...

    async def release_erase(self) -> None:
        """The claimed ratchet has run."""
        ...


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


# ---- casework: events, deadlines, evidence (issue 15) --------------------------------------


@dataclass(frozen=True, slots=True)
class EventRecord:
    """An event (one raid, many victims), decrypted: a city and days, never a name."""

    id: str
    number: int
    city: str
    #: The questionnaire's city it stands for (``baku``), when it is one of them.
    city_key: str | None
    start: date
    end: date
    #: The days the linked cases were reported on (None until one is linked).
    first_case: date | None
    last_case: date | None


@dataclass(frozen=True, slots=True)
class LinkedCase:
    """A case linked to an event: its number and who holds it."""

    id: CaseId
    number: int
    status: str
    assigned_lawyer_id: LawyerId | None


@dataclass(frozen=True, slots=True)
class DeadlineRecord:
    """A legal deadline of a case, decrypted (``data``: rule, decision kind and date)."""

    id: str
    case_id: CaseId
    case_number: int
    due_on: date
    stage: int
    data: dict[str, Any]


class CaseworkStore(Protocol):
    """Events with counters that survive purges, case links, and legal deadlines."""

    async def new_event(
        self, *, city: str, city_key: str | None, start: date, end: date, created_on: date
    ) -> EventRecord: ...
    async def event(self, number: int) -> EventRecord | None: ...
    async def events(self) -> Sequence[EventRecord]: ...
    async def event_of(self, case_id: str) -> EventRecord | None: ...
    async def link(
        self, event: EventRecord, case_id: str, categories: Sequence[str], reported_on: date
    ) -> EventRecord: ...
    async def counts(self, event_id: str) -> dict[str, int]: ...
    async def linked(self, event_id: str) -> Sequence[LinkedCase]: ...
    async def add_deadline(self, case_id: str, due_on: date, data: Mapping[str, Any]) -> None: ...
    async def case_deadlines(self, case_id: str) -> Sequence[DeadlineRecord]: ...
    async def lawyer_deadlines(self, lawyer_id: int, since: date) -> Sequence[DeadlineRecord]: ...
    async def due_deadlines(self, until: date, below_stage: int) -> Sequence[DeadlineRecord]: ...
    async def set_stage(self, deadline_id: str, stage: int) -> None: ...


@runtime_checkable
class CaseworkUnitOfWork(StaffUnitOfWork, Protocol):
    """A staff unit of work that also reaches events and deadlines."""

    @property
    def casework(self) -> CaseworkStore:
        """Events and deadlines in this transaction."""
        ...


class Signer(Protocol):
    """The instance's Ed25519 key, sealed in the keyring (evidence packages)."""

    def sign(self, data: bytes) -> bytes:
        """A signature of ``data``."""
        ...

    def public_key(self) -> bytes:
        """The 32-byte public key."""
        ...
