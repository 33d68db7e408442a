"""Every store in memory, behind the same ports: for tests of services and as the reference the
storage contract suite holds SQLite and PostgreSQL to. Nothing here is encrypted or durable.

A unit of work copies the state when it opens and publishes its copy on commit; units of work
run one at a time (like SQLite's single writer), so a commit never loses another's writes.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Self

from bot.services.ports import (
    DOCUMENTATION,
    OPEN,
    WAITING,
    AttachmentContent,
    Bucket,
    CaseContent,
    CaseId,
    CaseRecord,
    CaseStatus,
    Invitation,
    LawyerId,
    LawyerRecord,
    LawyerStatus,
    NewAttachment,
    NewCase,
    OutboxEntry,
    QueueEntry,
    Role,
    ScreenEntry,
    StaffUnitOfWork,
    lawyer_may_become,
)
from storage.numbers import CaseNumbering, free_number


@dataclass
class _Lawyer:
    record: LawyerRecord
    invite: str | None
    invite_expires_at: datetime | None
    phrase: str | None = None
    address: str | None = None


@dataclass
class _Case:
    record: CaseRecord
    receipt: str
    content: CaseContent
    tried: set[int] = field(default_factory=set)
    messages: list[tuple[str, datetime, str]] = field(default_factory=list)
    #: Messages to the reporter already shown (by place in ``messages``), with their expiry.
    shown: dict[int, datetime] = field(default_factory=dict)


@dataclass
class MemoryState:
    """Everything the stores hold."""

    drafts: dict[tuple[str, str], tuple[dict[str, Any], datetime]] = field(default_factory=dict)
    cases: dict[str, _Case] = field(default_factory=dict)
    attachments: dict[str, tuple[AttachmentContent, datetime]] = field(default_factory=dict)
    seen: dict[tuple[str, str], datetime] = field(default_factory=dict)
    stats: dict[tuple[date, str, str], int] = field(default_factory=dict)
    audit: list[tuple[str, str, str | None, datetime]] = field(default_factory=list)
    #: Case numbers out of use until a day (storage/numbers.py).
    held: dict[int, date] = field(default_factory=dict)
    lawyers: dict[int, _Lawyer] = field(default_factory=dict)
    jobs: dict[str, datetime] = field(default_factory=dict)
    outbox: dict[str, OutboxEntry] = field(default_factory=dict)
    screens: dict[str, list[str]] = field(default_factory=dict)
    #: Each screen's channel, chat and when the deletion job looks at it.
    screen_meta: dict[str, tuple[str | None, str | None, datetime | None]] = field(
        default_factory=dict
    )
    queues: dict[str, dict[str, QueueEntry]] = field(default_factory=dict)
    #: Rate-limit buckets by (channel, chat).
    limits: dict[tuple[str, str], Bucket] = field(default_factory=dict)


class MemoryDatabase:
    """One in-memory database shared by the units of work made from it."""

    def __init__(self, numbering: CaseNumbering | None = None) -> None:
        self.state = MemoryState()
        self.lock = asyncio.Lock()
        self._ids = itertools.count(1)
        self.numbering = numbering or CaseNumbering()

    def next_id(self) -> int:
        """A counter for ids that are sequential in SQL too (lawyers)."""
        return next(self._ids)

    def uow(self) -> MemoryUnitOfWork:
        """A new unit of work over this database."""
        return MemoryUnitOfWork(self)


class _Stores:
    def __init__(self, db: MemoryDatabase, state: MemoryState) -> None:
        self.db = db
        self.s = state


class MemoryDraftStore(_Stores):
    """Drafts by (channel, chat)."""

    async def load(self, channel: str, chat_id: str, now: datetime) -> dict[str, Any] | None:
        """The draft, or None when there is none or it expired (an expired one is dropped)."""
        found = self.s.drafts.get((channel, chat_id))
        if found is None:
            return None
        if found[1] <= now:
            del self.s.drafts[(channel, chat_id)]
            return None
        return copy.deepcopy(found[0])

    async def save(
        self, channel: str, chat_id: str, state: Mapping[str, Any], expires_at: datetime
    ) -> None:
        """Create or replace the draft."""
        self.s.drafts[(channel, chat_id)] = (copy.deepcopy(dict(state)), expires_at)

    async def delete(self, channel: str, chat_id: str) -> bool:
        """Delete the draft; whether there was one."""
        return self.s.drafts.pop((channel, chat_id), None) is not None


class MemoryCaseStore(_Stores):
    """Cases by id and receipt."""

    async def add(self, case: NewCase) -> str:
        """Store a case; returns its id."""
        case_id = CaseId(secrets.token_hex(16))

        async def is_free(number: int) -> bool:
            live = any(c.record.number == number for c in self.s.cases.values())
            return not live and self.s.held.get(number, date.min) < case.created_on

        number = await free_number(self.db.numbering.draw, is_free)
        self.s.held[number] = self.db.numbering.held_until(case.created_on)
        record = CaseRecord(
            case_id,
            number,
            case.priority,
            case.status,
            None,
            None,
            case.expires_at,
            case.created_on,
            False,
            False,
        )
        answers = copy.deepcopy(dict(case.answers))
        content = CaseContent(
            case_id, case.status, case.priority, answers, dict(case.meta), case.reply_address
        )
        self.s.cases[case_id] = _Case(record, case.receipt, content)
        return case_id

    def _by_receipt(self, receipt: str) -> _Case | None:
        return next((c for c in self.s.cases.values() if c.receipt == receipt), None)

    async def status_by_receipt(self, receipt: str) -> str | None:
        """The status of the case with this receipt."""
        case = self._by_receipt(receipt)
        return None if case is None else case.record.status

    async def id_by_receipt(self, receipt: str) -> str | None:
        """The id of the case with this receipt."""
        case = self._by_receipt(receipt)
        return None if case is None else case.record.id

    async def shred_reply_address(self, address: str) -> int:
        """Forget an address in every case holding it."""
        count = 0
        for case in self.s.cases.values():
            if case.content.reply_address == address:
                case.content = replace(case.content, reply_address=None)
                count += 1
        return count

    async def get(self, case_id: str) -> CaseContent | None:
        """One case's content."""
        case = self.s.cases.get(case_id)
        if case is None:
            return None
        record = case.record
        return replace(case.content, status=record.status, priority=record.priority)

    async def delete(self, case_id: str) -> bool:
        """Delete a case with its messages."""
        return self.s.cases.pop(case_id, None) is not None


class MemoryAttachmentStore(_Stores):
    """Files by reference."""

    async def add(self, file: NewAttachment) -> str:
        """Store a file; its reference."""
        ref = secrets.token_hex(16)
        content = AttachmentContent(ref, file.original, file.clean, dict(file.meta))
        self.s.attachments[ref] = (content, file.expires_at)
        return ref

    async def set_expiry(self, refs: Iterable[str], expires_at: datetime) -> None:
        """Give files a new expiry."""
        for ref in refs:
            if ref in self.s.attachments:
                self.s.attachments[ref] = (self.s.attachments[ref][0], expires_at)

    async def get(self, ref: str) -> AttachmentContent | None:
        """One file."""
        found = self.s.attachments.get(ref)
        return None if found is None else found[0]

    async def delete(self, refs: Iterable[str]) -> int:
        """Delete files."""
        return sum(self.s.attachments.pop(ref, None) is not None for ref in list(refs))


class MemorySeenStore(_Stores):
    """Handled updates."""

    async def claim(self, channel: str, update_id: str, expires_at: datetime) -> bool:
        """Record an update as handled; False when it already was."""
        if (channel, update_id) in self.s.seen:
            return False
        self.s.seen[(channel, update_id)] = expires_at
        return True


class MemoryChatLimitStore(_Stores):
    """Rate-limit buckets by (channel, chat)."""

    async def get(self, channel: str, chat_id: str) -> Bucket | None:
        """The chat's bucket, or None."""
        return self.s.limits.get((channel, chat_id))

    async def put(self, channel: str, chat_id: str, bucket: Bucket) -> None:
        """Create or replace the chat's bucket."""
        self.s.limits[(channel, chat_id)] = bucket

    async def prune(self, before: datetime) -> int:
        """Forget the buckets last counted at or before ``before``."""
        gone = [key for key, bucket in self.s.limits.items() if bucket.at <= before]
        for key in gone:
            del self.s.limits[key]
        return len(gone)


class MemoryStatsStore(_Stores):
    """Advocacy counters."""

    async def increment(self, week: date, region: str, categories: Iterable[str]) -> None:
        """Add one to each counter."""
        for category in categories:
            key = (week, region, category)
            self.s.stats[key] = self.s.stats.get(key, 0) + 1


class MemoryAuditLog(_Stores):
    """Audit entries in order (the chain is storage's concern: nothing to tamper with here)."""

    async def append(self, actor: str, action: str, case_id: str | None, at: datetime) -> None:
        """Record one action."""
        self.s.audit.append((actor, action, case_id, at.replace(microsecond=0)))


class MemoryLawyerStore(_Stores):
    """Lawyers and admins."""

    def _record(self, lawyer: _Lawyer, *, with_name: bool = True) -> LawyerRecord:
        accepted = sum(
            1
            for c in self.s.cases.values()
            if c.record.assigned_lawyer_id == lawyer.record.id
            and c.record.status == CaseStatus.ACCEPTED
        )
        name = lawyer.record.name if with_name else ""
        return replace(lawyer.record, name=name, open_cases=accepted)

    async def invite(self, invitation: Invitation) -> int:
        """A new invited account."""
        lawyer_id = LawyerId(self.db.next_id())
        new = invitation
        record = LawyerRecord(
            lawyer_id,
            new.role,
            LawyerStatus.INVITED,
            new.on_call,
            new.languages,
            new.regions,
            new.name,
        )
        self.s.lawyers[lawyer_id] = _Lawyer(record, new.invite_code, new.expires_at)
        return lawyer_id

    async def register(
        self, invite_code: str, address: str, phrase: str, now: datetime
    ) -> LawyerRecord | None:
        """Bind an unexpired, unused invite to an address."""
        lawyer = next((x for x in self.s.lawyers.values() if x.invite == invite_code), None)
        if lawyer is None or not lawyer_may_become(lawyer.record.status, LawyerStatus.REGISTERED):
            return None
        if lawyer.invite_expires_at is None or lawyer.invite_expires_at <= now:
            return None
        if any(x.address == address for x in self.s.lawyers.values()):
            return None
        lawyer.address, lawyer.phrase, lawyer.invite = address, phrase, None
        lawyer.record = replace(lawyer.record, status=LawyerStatus.REGISTERED)
        return self._record(lawyer)

    async def get(self, lawyer_id: int) -> LawyerRecord | None:
        """One account."""
        lawyer = self.s.lawyers.get(lawyer_id)
        return None if lawyer is None else self._record(lawyer)

    async def by_address(self, address: str) -> LawyerRecord | None:
        """The account registered from an address."""
        lawyer = next((x for x in self.s.lawyers.values() if x.address == address), None)
        return None if lawyer is None else self._record(lawyer)

    async def verify(self, lawyer_id: int, phrase: str) -> bool:
        """Verify a registered account whose phrase matches."""
        lawyer = self.s.lawyers.get(lawyer_id)
        if lawyer is None or lawyer.phrase is None or lawyer.phrase != phrase:
            return False
        if lawyer.record.status != LawyerStatus.REGISTERED:
            return False
        lawyer.record = replace(lawyer.record, status=LawyerStatus.VERIFIED)
        return True

    async def set_status(
        self, lawyer_id: int, status: str, *, forget_contact: bool = False
    ) -> bool:
        """Move an account to another status, where the domain allows it."""
        lawyer = self.s.lawyers.get(lawyer_id)
        current = None if lawyer is None else lawyer.record.status
        if lawyer is None or not (current == status or lawyer_may_become(str(current), status)):
            return False
        lawyer.record = replace(lawyer.record, status=status)
        if status != LawyerStatus.VERIFIED:
            lawyer.phrase = None
        if forget_contact:
            lawyer.address, lawyer.invite = None, None
        return True

    async def renew_invite(self, lawyer_id: int, invite_code: str, expires_at: datetime) -> bool:
        """A fresh invite for an existing account."""
        lawyer = self.s.lawyers.get(lawyer_id)
        if lawyer is None or not lawyer_may_become(lawyer.record.status, LawyerStatus.INVITED):
            return False
        lawyer.record = replace(lawyer.record, status=LawyerStatus.INVITED)
        lawyer.invite, lawyer.invite_expires_at = invite_code, expires_at
        lawyer.address, lawyer.phrase = None, None
        return True

    async def contact(self, lawyer_id: int) -> str | None:
        """An account's address."""
        lawyer = self.s.lawyers.get(lawyer_id)
        return None if lawyer is None else lawyer.address

    async def all(self, *, with_names: bool = True) -> Sequence[LawyerRecord]:
        """Every account, by id."""
        return [self._record(x, with_name=with_names) for _, x in sorted(self.s.lawyers.items())]

    async def admin_contacts(self) -> list[str]:
        """Addresses of verified admins."""
        return [
            x.address
            for _, x in sorted(self.s.lawyers.items())
            if x.address
            and x.record.role == Role.ADMIN
            and x.record.status == LawyerStatus.VERIFIED
        ]


class MemoryAssignmentStore(_Stores):
    """Case numbers, assignment, relayed messages, job bookkeeping."""

    def _sorted(self, keep: Any, key: Any) -> list[CaseRecord]:
        return sorted((c.record for c in self.s.cases.values() if keep(c.record)), key=key)

    async def by_number(self, number: int) -> CaseRecord | None:
        """A case by number."""
        return next((c.record for c in self.s.cases.values() if c.record.number == number), None)

    async def by_id(self, case_id: str) -> CaseRecord | None:
        """A case by id."""
        case = self.s.cases.get(case_id)
        return None if case is None else case.record

    async def assigned_to(self, lawyer_id: int) -> Sequence[CaseRecord]:
        """A lawyer's open cases, most urgent first."""
        return self._sorted(
            lambda r: r.assigned_lawyer_id == lawyer_id and r.status in OPEN,
            lambda r: (r.priority, r.number),
        )

    async def waiting(self) -> Sequence[CaseRecord]:
        """Cases routing still has to place."""
        return self._sorted(
            lambda r: r.status in WAITING and r.priority < DOCUMENTATION,
            lambda r: (r.priority, r.number),
        )

    async def unassigned_documentation(self, since_created: date) -> Sequence[CaseRecord]:
        """Documentation-only cases nobody took."""
        return self._sorted(
            lambda r: (
                r.status == CaseStatus.NEW
                and r.priority == DOCUMENTATION
                and r.created_on >= since_created
            ),
            lambda r: r.number,
        )

    async def expiring(self, before: datetime) -> Sequence[CaseRecord]:
        """Open cases expiring before a moment, not warned yet."""
        return self._sorted(
            lambda r: r.expires_at <= before and r.status in OPEN and not r.expiry_warned,
            lambda r: r.number,
        )

    async def all_open(self) -> Sequence[CaseRecord]:
        """Every case not closed."""
        return self._sorted(lambda r: r.status != CaseStatus.CLOSED, lambda r: r.number)

    async def tried(self, case_id: str) -> set[int]:
        """Lawyers a case was offered to."""
        return set(self.s.cases[case_id].tried) if case_id in self.s.cases else set()

    async def assign(self, case_id: str, lawyer_id: int, now: datetime) -> None:
        """Offer a case to a lawyer."""
        await self.update(
            case_id,
            status=CaseStatus.ASSIGNED,
            assigned_lawyer_id=LawyerId(lawyer_id),
            assigned_at=now,
        )
        if case_id in self.s.cases:
            self.s.cases[case_id].tried.add(lawyer_id)

    async def release(self, case_id: str) -> None:
        """Take a case back from its lawyer."""
        await self.update(case_id, status=CaseStatus.NEW, assigned_lawyer_id=None, assigned_at=None)

    async def update(self, case_id: str, **values: Any) -> None:
        """Set plaintext fields of a case."""
        case = self.s.cases.get(case_id)
        if case is not None:
            case.record = replace(case.record, **values)

    async def add_message(self, case_id: str, direction: str, body: str, now: datetime) -> None:
        """Keep a relayed message."""
        if case_id in self.s.cases:
            self.s.cases[case_id].messages.append((direction, now, body))

    async def messages(self, case_id: str) -> list[tuple[str, datetime, str]]:
        """A case's relayed messages, oldest first."""
        case = self.s.cases.get(case_id)
        return sorted(case.messages, key=lambda m: m[1]) if case else []

    async def unread(self, case_id: str) -> list[tuple[str, str]]:
        """Messages to the reporter never shown: (id, text), oldest first."""
        case = self.s.cases.get(case_id)
        if case is None:
            return []
        return [
            (f"{case_id}/{n}", text)
            for n, (direction, _, text) in enumerate(case.messages)
            if direction == "to_reporter" and n not in case.shown
        ]

    async def mark_shown(self, message_ids: Sequence[str], expires_at: datetime) -> None:
        """Shown once: never shown again."""
        for message_id in message_ids:
            case_id, _, place = message_id.rpartition("/")
            case = self.s.cases.get(case_id)
            if case is not None and place.isdigit():
                case.shown[int(place)] = expires_at

    async def last_run(self, job: str) -> datetime | None:
        """When a job last ran."""
        return self.s.jobs.get(job)

    async def try_job(self, job: str) -> bool:
        """One process: the job is always this one's to run."""
        return True

    async def mark_run(self, job: str, now: datetime) -> None:
        """Record a job's run (the hour, as at rest in SQL)."""
        self.s.jobs[job] = now.replace(minute=0, second=0, microsecond=0)

    async def schedule_erase(self, due: datetime) -> None:
        """Ask for a ratchet by ``due`` (an earlier request stands)."""
        self.s.jobs["erase.pending"] = min(due, self.s.jobs.get("erase.pending", due))

    async def erase_due(self) -> datetime | None:
        """When the pending (or interrupted) ratchet is due."""
        found = [self.s.jobs[k] for k in ("erase.pending", "erase.running") if k in self.s.jobs]
        return min(found) if found else None

    async def claim_erase(self) -> datetime | None:
        """Move the pending request to the running one; its due hour."""
        due = self.s.jobs.pop("erase.pending", None)
        if due is None:
            return self.s.jobs.get("erase.running")
        self.s.jobs["erase.running"] = min(due, self.s.jobs.get("erase.running", due))
        return due

    async def release_erase(self) -> None:
        """The claimed ratchet has run."""
        self.s.jobs.pop("erase.running", None)


class MemoryOutbox(_Stores):
    """The outbox and the screens."""

    _sequence = itertools.count()

    async def put_many(
        self,
        items: Sequence[tuple[str, str, Mapping[str, Any]]],
        now: datetime,
        expires_at: datetime,
    ) -> Sequence[OutboxEntry]:
        """Store items, due at once, in order."""
        entries = []
        for channel, chat, payload in items:
            item_id = f"{next(self._sequence):020d}"
            entry = OutboxEntry(
                item_id, channel, f"{channel}:{chat}", dict(payload, to=chat), 0, now
            )
            self.s.outbox[item_id] = entry
            entries.append(entry)
        return entries

    async def due_heads(
        self, channel: str, now: datetime, limit: int = 100
    ) -> Sequence[OutboxEntry]:
        """The oldest item of each lane of a channel, where it is due."""
        heads: dict[str, OutboxEntry] = {}
        for item_id in sorted(self.s.outbox):
            entry = self.s.outbox[item_id]
            heads.setdefault(entry.lane, entry)
        due = [e for e in heads.values() if e.channel == channel and e.due_at <= now]
        return sorted(due, key=lambda e: e.id)[:limit]

    async def claim(
        self, item_id: str, now: datetime, until: datetime, screen_of: str | None = None
    ) -> bool:
        """Take a due lane head for delivery until ``until``."""
        entry = self.s.outbox.get(item_id)
        if entry is None or entry.due_at > now:
            return False
        if any(e.lane == entry.lane and e.id < item_id for e in self.s.outbox.values()):
            return False
        self.s.outbox[item_id] = replace(entry, due_at=until)
        return True

    async def done(self, item_ids: Sequence[str]) -> None:
        """Forget delivered items."""
        for item_id in item_ids:
            self.s.outbox.pop(item_id, None)

    async def retry_at(self, item_id: str, when: datetime, attempts: int) -> None:
        """Try an item again later."""
        if item_id in self.s.outbox:
            self.s.outbox[item_id] = replace(self.s.outbox[item_id], due_at=when, attempts=attempts)

    async def screen(self, lane: str) -> list[str]:
        """What a chat's screen holds."""
        return list(self.s.screens.get(lane, []))

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
        """Replace what a chat's screen holds."""
        if refs:
            self.s.screens[lane] = list(refs)
            self.s.screen_meta[lane] = (channel, chat, check_at)
        else:
            self.s.screens.pop(lane, None)
            self.s.screen_meta.pop(lane, None)

    async def due_screens(
        self, channel: str, now: datetime, limit: int = 100, after: str = ""
    ) -> Sequence[ScreenEntry]:
        """Screens of a channel whose ``check_at`` has come, by lane after ``after``."""
        due = [
            (lane, chat)
            for lane, (kind, chat, check_at) in self.s.screen_meta.items()
            if kind == channel
            and chat is not None
            and check_at is not None
            and check_at <= now
            and lane > after
        ]
        return [
            ScreenEntry(lane, chat, tuple(self.s.screens[lane]))
            for lane, chat in sorted(due)[:limit]
        ]

    async def depth(self) -> dict[str, int]:
        """Items waiting, by channel."""
        depth: dict[str, int] = {}
        for entry in self.s.outbox.values():
            depth[entry.channel] = depth.get(entry.channel, 0) + 1
        return depth


class MemoryQueue(_Stores):
    """One named durable queue."""

    def __init__(self, db: MemoryDatabase, state: MemoryState, name: str) -> None:
        super().__init__(db, state)
        self._items = state.queues.setdefault(name, {})

    _sequence = itertools.count()

    async def put_many(
        self, payloads: Sequence[dict[str, Any]], now: datetime, expires_at: datetime
    ) -> list[str]:
        """Store items, due at once, in this order."""
        ids = []
        for payload in payloads:
            item_id = f"{next(self._sequence):020d}"
            self._items[item_id] = QueueEntry(item_id, dict(payload), 0, now)
            ids.append(item_id)
        return ids

    async def due(self, now: datetime | None, limit: int = 100) -> list[QueueEntry]:
        """Items due (all when ``now`` is None), oldest first."""
        items = [self._items[k] for k in sorted(self._items)]
        return [i for i in items if now is None or i.next_attempt_at <= now][:limit]

    async def done(self, item_id: str) -> None:
        """Remove an item."""
        self._items.pop(item_id, None)

    async def retry_at(self, item_id: str, when: datetime, attempts: int) -> None:
        """Try an item again later."""
        if item_id in self._items:
            item = self._items[item_id]
            self._items[item_id] = replace(item, next_attempt_at=when, attempts=attempts)


class MemoryUnitOfWork:
    """One transaction over every in-memory store."""

    def __init__(self, db: MemoryDatabase) -> None:
        self._db = db

    async def __aenter__(self) -> Self:
        """Wait for the writer's turn, then work on a copy of the state."""
        await self._db.lock.acquire()
        self._state = copy.deepcopy(self._db.state)
        state, db = self._state, self._db
        self.drafts = MemoryDraftStore(db, state)
        self.cases = MemoryCaseStore(db, state)
        self.attachments = MemoryAttachmentStore(db, state)
        self.seen = MemorySeenStore(db, state)
        self.stats = MemoryStatsStore(db, state)
        self.limits = MemoryChatLimitStore(db, state)
        self.audit = MemoryAuditLog(db, state)
        self.lawyers = MemoryLawyerStore(db, state)
        self.assignments = MemoryAssignmentStore(db, state)
        self.outbox = MemoryOutbox(db, state)
        self.signal_inbox = MemoryQueue(db, state, "signal_in")
        self.telegram_inbox = MemoryQueue(db, state, "telegram_in")
        self.signal_outbox = MemoryQueue(db, state, "signal_out")
        return self

    async def claim_turn(
        self, channel: str, chat_id: str, update_id: str, expires_at: datetime
    ) -> bool:
        """Claim a chat's update as ``seen.claim`` does."""
        return await self.seen.claim(channel, update_id, expires_at)

    def locking(self, channel: str, chat_id: str) -> Self:
        """One process, one transaction at a time: no chat waits for another."""
        return self

    async def commit(self) -> None:
        """Publish this transaction's state."""
        self._db.state = copy.deepcopy(self._state)

    async def __aexit__(self, *exc_info: object) -> None:
        """Drop what was not committed and let the next unit of work in."""
        self._db.lock.release()


if TYPE_CHECKING:  # mypy holds the memory stores to the same ports as the SQL ones
    _CHECK: StaffUnitOfWork = MemoryUnitOfWork(MemoryDatabase())
