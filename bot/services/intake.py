"""Intake: step a reporter's conversation, keep the draft encrypted, submit a case."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta

from bot.domain.engine import MAX_ATTACHMENTS, CorruptState, DraftState, Engine
from bot.domain.messages import (
    AttachmentAdded,
    DraftDeleted,
    Event,
    Invalid,
    Notice,
    Outbound,
    Refused,
    SubmitReport,
)
from bot.domain.triage import triage
from bot.media import MAX_FILE_BYTES, CleanFile, MediaRefused, inspect_file_off_loop
from bot.services.casework import Casework
from bot.services.codes import new_code
from bot.services.erasure import Erasure
from bot.services.outbox import Outgoing
from bot.services.ports import CaseStatus, NewAttachment, NewCase, StaffUnitOfWork
from bot.services.routing import Routing

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file as received from a messenger, and what the check made of it."""

    data: bytes
    caption: str | None = None
    #: The checked (cleaned) file; None until :meth:`IntakeService.check` ran or when refused.
    checked: CleanFile | None = None


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
    """The outcome of one reporter event, inside the inbound transaction."""

    replies: list[Outbound]
    #: Whether a draft is still open afterwards.
    draft_open: bool = False
    #: Cases submitted by this turn.
    submitted: tuple[str, ...] = ()


#: Telegram lets a bot delete a message for 48 hours after it was sent, and an edit keeps that
#: first send time.
DELETE_WINDOW = timedelta(hours=48)
#: Room for a send time recorded late (after rate-limit waits) and for the turn's own work.
_MARGIN = timedelta(hours=1)


def _files(state: DraftState) -> list[str]:
    """The files a draft holds: sent at the documents step, or already answered."""
    documents = state.answers.get("documents")
    answered = list(documents) if isinstance(documents, tuple) else []
    return [*answered, *state.pending]


def week_of(day: date) -> date:
    """The Monday of a date's week (statistics are weekly, never daily)."""
    return day - timedelta(days=day.weekday())


def _round_up_to_hour(moment: datetime) -> datetime:
    # A coarse expiry date does not pin down the minute a report came in.
    floor = moment.replace(minute=0, second=0, microsecond=0)
    return floor if floor == moment else floor + timedelta(hours=1)


class IntakeService:
    """The reporter side of tipline, the same for every channel; runs in the caller's
    transaction (the inbound service owns it)."""

    def __init__(
        self,
        engine: Engine,
        policy: IntakePolicy | None = None,
        routing: Routing | None = None,
        inspect: Callable[[bytes], Awaitable[CleanFile]] | None = None,
        reports_per_day: int = 3,
    ) -> None:
        self._engine = engine
        self._policy = policy or IntakePolicy()
        self._routing = routing
        self._inspect = inspect or inspect_file_off_loop
        self._reports_per_day = reports_per_day
        #: Suggests the event (raid) a new detention may belong to; wired by the runtime.
        self.casework: Casework | None = None
        #: Schedules the ratchet that makes "stop and delete" final.
        self.erasure = Erasure()

    @property
    def policy(self) -> IntakePolicy:
        """Retention settings."""
        return self._policy

    async def turn(
        self,
        uow: StaffUnitOfWork,
        out: Outgoing,
        channel: str,
        chat_id: str,
        event: Event,
        now: datetime,
        *,
        attachment: Attachment | None = None,
        order: int | None = None,
    ) -> Turn:
        """Apply one reporter event; an ``attachment`` (already checked with :meth:`check`) is
        stored encrypted only when the conversation is at the documents step and has room;
        ``order`` is the update's sequence number, kept in the draft (see :meth:`stale`)."""
        state = await self._load(uow, channel, chat_id, now)
        if attachment is not None:
            event = await self._store_attachment(uow, state, attachment, now)
        new_state, outbound = self._engine.step(state, event, now, channel=channel)
        replies: list[Outbound] = []
        submitted: list[str] = []
        for message in outbound:
            if isinstance(message, SubmitReport):
                if not await self._within_limit(uow, channel, chat_id, now):
                    new_state = state
                    language = message.language
                    replies.append(self._engine.notice(language, "ui.report_limit"))
                    if state is not None:
                        replies.append(self._engine.question(state))
                    continue
                case_id, receipt = await self._submit(uow, out, message, chat_id, now)
                submitted.append(case_id)
                replies.extend(receipt)
            elif isinstance(message, DraftDeleted):
                if state is not None:  # stop and delete: its files too, erased within the hour
                    await uow.attachments.delete(_files(state))
                    await self.erasure.schedule(uow, now)
            else:
                replies.append(message)
        if new_state is None:
            await uow.drafts.delete(channel, chat_id)
        else:
            new_state = replace(new_state, refs=(), order=max(order or 0, new_state.order))
            expires = now + self._policy.draft_ttl
            await uow.drafts.save(channel, chat_id, new_state.to_dict(), expires)
        return Turn(replies, draft_open=new_state is not None, submitted=tuple(submitted))

    async def check(self, attachment: Attachment) -> Attachment:
        """Check and clean a file in a capped worker process; call it before the transaction,
        so no other chat waits on the database while a file is decoded."""
        if not attachment.data or len(attachment.data) > MAX_FILE_BYTES:
            return attachment
        try:
            return replace(attachment, checked=await self._inspect(attachment.data))
        except MediaRefused as exc:
            log.info("file refused: %s", exc)
            return attachment

    async def language(
        self, uow: StaffUnitOfWork, channel: str, chat_id: str, now: datetime
    ) -> str | None:
        """The language of the chat's conversation in progress, if there is one."""
        state = await self._load(uow, channel, chat_id, now)
        return state.language if state is not None else None

    async def stale(
        self, uow: StaffUnitOfWork, channel: str, chat_id: str, order: int | None, now: datetime
    ) -> bool:
        """Whether an update is not newer than the last one applied to the chat's draft (one
        delivered late, or handled late by another process): applying it would answer the
        question on screen with an older message."""
        if order is None:
            return False
        state = await self._load(uow, channel, chat_id, now)
        return state is not None and order <= state.order

    async def _within_limit(
        self, uow: StaffUnitOfWork, channel: str, chat_id: str, now: datetime
    ) -> bool:
        # A slot per report and day, claimed like a handled update: a keyed hash that tells
        # nothing about the chat, and expires with the day.
        day = now.date().isoformat()
        expires = _round_up_to_hour(now + timedelta(days=1))
        for slot in range(self._reports_per_day):
            if await uow.seen.claim("reports", f"{channel}:{chat_id}:{day}:{slot}", expires):
                return True
        return False

    async def _load(
        self, uow: StaffUnitOfWork, channel: str, chat_id: str, now: datetime
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
        self,
        uow: StaffUnitOfWork,
        state: DraftState | None,
        attachment: Attachment,
        now: datetime,
    ) -> Event:
        if state is None or self._engine.question(state).step != "documents":
            return Invalid()
        if len(state.pending) >= MAX_ATTACHMENTS:
            return AttachmentAdded("")  # the engine answers "too many files"; nothing stored
        checked = attachment.checked
        if checked is None:
            return Refused()
        meta = {"kind": checked.kind, "mime": checked.mime, "caption": attachment.caption}
        expires_at = now + self._policy.draft_ttl
        ref = await uow.attachments.add(
            NewAttachment(attachment.data, checked.clean, meta, expires_at)
        )
        return AttachmentAdded(ref)

    async def _submit(
        self,
        uow: StaffUnitOfWork,
        out: Outgoing,
        report: SubmitReport,
        chat_id: str,
        now: datetime,
    ) -> tuple[str, list[Outbound]]:
        result = triage(report.answers)
        code, normalized = new_code()
        reach_here = report.answers.get("contact") == "here"
        region = str(report.answers.get("city") or "unknown")
        answers = {k: list(v) if isinstance(v, tuple) else v for k, v in report.answers.items()}
        expires_at = _round_up_to_hour(now + self._policy.retention)
        new = NewCase(
            receipt=normalized,
            priority=int(result.priority),
            status=CaseStatus.NEW,
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
        case_id = await uow.cases.add(new)
        documents = report.answers.get("documents")
        if isinstance(documents, tuple):
            await uow.attachments.set_expiry(documents, expires_at)
        what = report.answers.get("what_happened")
        categories = ["reports", f"situation.{report.answers.get('situation')}"]
        if isinstance(what, tuple):
            categories += [f"what.{w}" for w in what]
        await uow.stats.increment(week_of(now.date()), region, categories)
        if self._routing is not None:
            await self._routing.route(uow, out, case_id, now)
        if self.casework is not None:
            await self.casework.suggest(uow, out, case_id, answers, now)
        log.info("case submitted", extra={"priority": result.priority.name})
        return case_id, self._engine.receipt(report.language, code, reach_here=reach_here)

    async def status(self, uow: StaffUnitOfWork, code: str, language: str) -> Notice:
        """The status of a case by its (normalised) receipt code; unknown codes look alike."""
        return self._engine.status(language, await uow.cases.status_by_receipt(code))

    async def forget(self, uow: StaffUnitOfWork, channel: str, chat_id: str, now: datetime) -> None:
        """Delete the chat's draft (with its files) and its address in any case."""
        state = await self._load(uow, channel, chat_id, now)
        if state is not None:
            await uow.attachments.delete(_files(state))
        await uow.drafts.delete(channel, chat_id)
        await uow.cases.shred_reply_address(f"{channel}:{chat_id}")
