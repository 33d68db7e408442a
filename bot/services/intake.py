"""Intake: step a reporter's conversation, keep the draft encrypted, submit a case."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta

from bot.domain.engine import CorruptState, DraftState, Engine
from bot.domain.messages import (
    AttachmentAdded,
    DraftDeleted,
    Event,
    Invalid,
    Notice,
    Outbound,
    Refused,
    SubmitReport,
    notices_then_question,
)
from bot.domain.receipt import MalformedReceipt, normalize_receipt
from bot.domain.triage import triage
from bot.media import MediaRefused, inspect_file
from bot.services.clock import Clock
from bot.services.codes import new_code
from bot.services.ports import UnitOfWork

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file as received from a messenger, before any check."""

    data: bytes
    caption: str | None = None


STATUS_NEW = "new"


@dataclass(frozen=True, slots=True)
class IntakePolicy:
    """Retention settings that intake applies."""

    draft_ttl: timedelta = timedelta(hours=24)
    retention: timedelta = timedelta(days=30)
    #: How long a handled update id is remembered (Telegram keeps updates for 24 hours).
    seen_ttl: timedelta = timedelta(hours=48)

    @property
    def edit_window(self) -> timedelta:
        """How long a question may be edited in place and still be deletable at the next answer.

        The next answer may come up to ``draft_ttl`` later; an older question is replaced
        instead (none is edited when drafts outlive Telegram's delete window).
        """
        return DELETE_WINDOW - self.draft_ttl - _MARGIN


@dataclass(frozen=True, slots=True)
class Turn:
    """The outcome of one reporter event for a messenger channel."""

    replies: list[Outbound]
    #: References of earlier messages (questions on screen) to delete now.
    to_delete: tuple[str, ...] = ()
    #: The update was handled before: send nothing, change nothing.
    duplicate: bool = False
    #: Whether a draft is still open afterwards (new messages should be tracked).
    draft_open: bool = False
    #: The newest message on screen, which the replies (notices, then a question) may replace
    #: in place, as one message: fewer API calls, the same clean screen. Still tracked. A
    #: channel that cannot edit it deletes it with the others and tracks what it sends.
    edit: str | None = None


#: Telegram lets a bot delete a message for 48 hours after it was sent, and an edit keeps that
#: first send time.
DELETE_WINDOW = timedelta(hours=48)
#: Room for a send time recorded late (after rate-limit waits) and for the turn's own work.
_MARGIN = timedelta(hours=1)


def _message(ref: str) -> str:
    """The message id of a tracked ref (``id@sent``)."""
    return ref.partition("@")[0]


def _editable(ref: str, now: datetime, window: timedelta) -> bool:
    _, _, sent = ref.partition("@")
    return sent.isdigit() and now.timestamp() - int(sent) < window.total_seconds()


def week_of(day: date) -> date:
    """The Monday of a date's week (statistics are weekly, never daily)."""
    return day - timedelta(days=day.weekday())


def _round_up_to_hour(moment: datetime) -> datetime:
    # A coarse expiry date does not pin down the minute a report came in.
    floor = moment.replace(minute=0, second=0, microsecond=0)
    return floor if floor == moment else floor + timedelta(hours=1)


class IntakeService:
    """The reporter side of tipline, the same for every channel."""

    def __init__(
        self,
        uow: Callable[[], UnitOfWork],
        engine: Engine,
        clock: Clock,
        policy: IntakePolicy | None = None,
        on_submitted: Callable[[str], Awaitable[object]] | None = None,
    ) -> None:
        self._uow = uow
        self._engine = engine
        self._clock = clock
        self._policy = policy or IntakePolicy()
        #: Called with each new case id after its transaction commits (routing to a lawyer).
        self.on_submitted = on_submitted

    async def handle(self, channel: str, chat_id: str, event: Event) -> list[Outbound]:
        """Apply one reporter event and return what to send back (channels without cleanup)."""
        return (await self.turn(channel, chat_id, event)).replies

    async def turn(
        self,
        channel: str,
        chat_id: str,
        event: Event,
        *,
        update_id: str | None = None,
        attachment: Attachment | None = None,
    ) -> Turn:
        """Apply one reporter event in one transaction.

        ``update_id`` makes a redelivered update a no-op; ``attachment`` is stored (encrypted)
        only when the conversation is at the documents step.
        """
        now = self._clock()
        async with self._uow() as uow:
            if update_id is not None and not await uow.seen.claim(
                channel, update_id, now + self._policy.seen_ttl
            ):
                return Turn([], duplicate=True)
            state = await self._load(uow, channel, chat_id, now)
            on_screen = state.refs if state else ()
            to_delete = tuple(_message(ref) for ref in on_screen)
            if state is not None:
                state = replace(state, refs=())
            if attachment is not None:
                event = await self._store_attachment(uow, state, attachment, now)
            new_state, outbound = self._engine.step(state, event, now, channel=channel)
            replies: list[Outbound] = []
            submitted: list[str] = []
            for message in outbound:
                if isinstance(message, SubmitReport):
                    case_id, receipt = await self._submit(uow, message, chat_id, now)
                    submitted.append(case_id)
                    replies.extend(receipt)
                elif not isinstance(message, DraftDeleted):
                    replies.append(message)
            edit = None
            if (
                new_state is not None
                and on_screen
                and notices_then_question(replies) is not None
                and _editable(on_screen[-1], now, self._policy.edit_window)
            ):
                edit, to_delete = to_delete[-1], to_delete[:-1]
                new_state = replace(new_state, refs=(on_screen[-1],))  # its first send time
            if new_state is None:
                await uow.drafts.delete(channel, chat_id)
            else:
                expires = now + self._policy.draft_ttl
                await uow.drafts.save(channel, chat_id, new_state.to_dict(), expires)
            await uow.commit()
        if self.on_submitted is not None:
            for case_id in submitted:
                try:
                    await self.on_submitted(case_id)
                except Exception as exc:  # the case is stored; the escalation job retries
                    log.error("routing after submission failed: %s", type(exc).__name__)
        return Turn(replies, to_delete, draft_open=new_state is not None, edit=edit)

    async def _load(
        self, uow: UnitOfWork, channel: str, chat_id: str, now: datetime
    ) -> DraftState | None:
        raw = await uow.drafts.load(channel, chat_id, now)
        if raw is None:
            return None
        try:
            return DraftState.from_dict(raw)
        except CorruptState:
            log.warning("unreadable draft state discarded")
            return None

    async def _store_attachment(
        self, uow: UnitOfWork, state: DraftState | None, attachment: Attachment, now: datetime
    ) -> Event:
        if state is None or self._engine.question(state).step != "documents":
            return Invalid()
        try:
            checked = inspect_file(attachment.data)
        except MediaRefused as exc:
            log.info("file refused: %s", exc)
            return Refused()
        ref = await uow.attachments.add(
            original=attachment.data,
            clean=checked.clean,
            meta={"kind": checked.kind, "mime": checked.mime, "caption": attachment.caption},
            expires_at=now + self._policy.draft_ttl,
        )
        return AttachmentAdded(ref)

    async def track(self, channel: str, chat_id: str, refs: list[str]) -> None:
        """Remember messages just sent, to delete them at the next turn (if a draft is open)."""
        if not refs:
            return
        now = self._clock()
        async with self._uow() as uow:
            state = await self._load(uow, channel, chat_id, now)
            if state is None:
                return
            stamp = int(now.timestamp())
            state = replace(state, refs=(*state.refs, *(f"{ref}@{stamp}" for ref in refs)))
            await uow.drafts.save(channel, chat_id, state.to_dict(), now + self._policy.draft_ttl)
            await uow.commit()

    async def _submit(
        self, uow: UnitOfWork, report: SubmitReport, chat_id: str, now: datetime
    ) -> tuple[str, list[Outbound]]:
        result = triage(report.answers)
        code, normalized = new_code()
        reach_here = report.answers.get("contact") == "here"
        region = str(report.answers.get("city") or "unknown")
        answers = {k: list(v) if isinstance(v, tuple) else v for k, v in report.answers.items()}
        expires_at = _round_up_to_hour(now + self._policy.retention)
        case_id = await uow.cases.add(
            receipt=normalized,
            priority=int(result.priority),
            status=STATUS_NEW,
            created_on=now.date(),
            expires_at=expires_at,
            answers=answers,
            meta={
                "language": report.language,
                "channel": report.channel,
                "region": region,
                "flags": sorted(result.flags),
            },
            reply_address=f"{report.channel}:{chat_id}" if reach_here else None,
        )
        documents = report.answers.get("documents")
        if isinstance(documents, tuple):
            await uow.attachments.set_expiry(documents, expires_at)
        what = report.answers.get("what_happened")
        categories = ["reports", f"situation.{report.answers.get('situation')}"]
        if isinstance(what, tuple):
            categories += [f"what.{w}" for w in what]
        await uow.stats.increment(week_of(now.date()), region, categories)
        log.info("case submitted", extra={"priority": result.priority.name})
        return case_id, self._engine.receipt(report.language, code, reach_here=reach_here)

    async def status(self, code: str, language: str) -> Notice:
        """The status of a case by its receipt code; a malformed and an unknown code look alike."""
        try:
            normalized = normalize_receipt(code)
        except MalformedReceipt:
            return self._engine.status(language, None)
        async with self._uow() as uow:
            status = await uow.cases.status_by_receipt(normalized)
        return self._engine.status(language, status)

    async def forget(self, channel: str, chat_id: str) -> tuple[str, ...]:
        """Delete the chat's draft and its address in any case; returns messages to delete."""
        now = self._clock()
        async with self._uow() as uow:
            state = await self._load(uow, channel, chat_id, now)
            await uow.drafts.delete(channel, chat_id)
            await uow.cases.shred_reply_address(f"{channel}:{chat_id}")
            await uow.commit()
        return tuple(_message(ref) for ref in state.refs) if state else ()
