"""Intake: step a reporter's conversation, keep the draft encrypted, submit a case."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from bot.domain.engine import CorruptState, DraftState, Engine
from bot.domain.messages import DraftDeleted, Event, Notice, Outbound, SubmitReport
from bot.domain.receipt import RECEIPT_BYTES, MalformedReceipt, format_receipt, normalize_receipt
from bot.domain.triage import triage
from bot.services.clock import Clock
from bot.services.ports import UnitOfWork

log = logging.getLogger(__name__)

STATUS_NEW = "new"


@dataclass(frozen=True, slots=True)
class IntakePolicy:
    """Retention settings that intake applies."""

    draft_ttl: timedelta = timedelta(hours=24)
    retention: timedelta = timedelta(days=30)


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
    ) -> None:
        self._uow = uow
        self._engine = engine
        self._clock = clock
        self._policy = policy or IntakePolicy()

    async def handle(self, channel: str, chat_id: str, event: Event) -> list[Outbound]:
        """Apply one reporter event in one transaction and return what to send back."""
        now = self._clock()
        async with self._uow() as uow:
            raw = await uow.drafts.load(channel, chat_id, now)
            state: DraftState | None = None
            if raw is not None:
                try:
                    state = DraftState.from_dict(raw)
                except CorruptState:
                    log.warning("unreadable draft state discarded")
            new_state, outbound = self._engine.step(state, event, now, channel=channel)
            replies: list[Outbound] = []
            for message in outbound:
                if isinstance(message, SubmitReport):
                    replies.extend(await self._submit(uow, message, chat_id, now))
                elif not isinstance(message, DraftDeleted):
                    replies.append(message)
            if new_state is None:
                await uow.drafts.delete(channel, chat_id)
            else:
                expires = now + self._policy.draft_ttl
                await uow.drafts.save(channel, chat_id, new_state.to_dict(), expires)
            await uow.commit()
        return replies

    async def _submit(
        self, uow: UnitOfWork, report: SubmitReport, chat_id: str, now: datetime
    ) -> list[Outbound]:
        result = triage(report.answers)
        code = format_receipt(secrets.token_bytes(RECEIPT_BYTES))
        reach_here = report.answers.get("contact") == "here"
        region = str(report.answers.get("city") or "unknown")
        answers = {k: list(v) if isinstance(v, tuple) else v for k, v in report.answers.items()}
        await uow.cases.add(
            receipt=normalize_receipt(code),
            priority=int(result.priority),
            status=STATUS_NEW,
            created_on=now.date(),
            expires_at=_round_up_to_hour(now + self._policy.retention),
            answers=answers,
            meta={
                "language": report.language,
                "channel": report.channel,
                "region": region,
                "flags": sorted(result.flags),
            },
            reply_address=f"{report.channel}:{chat_id}" if reach_here else None,
        )
        what = report.answers.get("what_happened")
        categories = ["reports", f"situation.{report.answers.get('situation')}"]
        if isinstance(what, tuple):
            categories += [f"what.{w}" for w in what]
        await uow.stats.increment(week_of(now.date()), region, categories)
        log.info("case submitted", extra={"priority": result.priority.name})
        return self._engine.receipt(report.language, code, reach_here=reach_here)

    async def status(self, code: str, language: str) -> Notice:
        """The status of a case by its receipt code; a malformed and an unknown code look alike."""
        try:
            normalized = normalize_receipt(code)
        except MalformedReceipt:
            return self._engine.status(language, None)
        async with self._uow() as uow:
            status = await uow.cases.status_by_receipt(normalized)
        return self._engine.status(language, status)

    async def forget(self, channel: str, chat_id: str) -> bool:
        """Delete the chat's draft, if there is one."""
        async with self._uow() as uow:
            deleted = await uow.drafts.delete(channel, chat_id)
            await uow.commit()
        return deleted
