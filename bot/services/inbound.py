"""The one inbound path: every message of every channel, parsed by one grammar, handled by one
service in one transaction that also writes every answer to the outbox.

Adapters only turn their wire format into an :class:`Inbound` and deliver what the outbox holds.
A redelivered update whose turn committed changes nothing, and nothing is missing, because the
answers of its turn are in the outbox already.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta

from bot.domain.commands import STAFF, Answer, Command, Name, parse
from bot.domain.engine import Engine
from bot.domain.messages import (
    Act,
    ChangeLanguage,
    Event,
    Invalid,
    Notice,
    Question,
    Refused,
    Reply,
    Start,
    Stop,
    TextAnswer,
)
from bot.services.clock import Clock
from bot.services.intake import Attachment, IntakeService, Turn
from bot.services.outbox import Outgoing, address
from bot.services.ports import OutboxEntry, StaffUnitOfWork
from bot.services.ratelimit import RateLimit, Verdict
from bot.services.reporter import ReporterService, Where
from bot.services.staff import StaffCommands, StaffContext

log = logging.getLogger(__name__)

#: How long a handled update id is remembered (Telegram keeps updates for 24 hours).
SEEN_TTL = timedelta(hours=48)
_HELP = {"telegram": "ui.help_telegram", "signal": "ui.help_signal", "console": "ui.console_help"}
_REPORTER_EVENTS: dict[Name, Callable[[str | None], Event]] = {
    Name.START: lambda hint: Start(hint),
    Name.LANGUAGE: lambda _: ChangeLanguage(),
    Name.CANCEL: lambda _: Stop(),
}


@dataclass(frozen=True, slots=True)
class Inbound:
    """One message or button press from a messenger, as its adapter understood it."""

    channel: str
    chat: str
    text: str | None = None
    #: A button press the adapter decoded (Telegram's inline keyboards).
    event: Event | None = None
    attachment: Attachment | None = None
    #: A file that could not be taken (too large, download failed).
    file_refused: bool = False
    update_id: str | None = None
    #: The received message, deleted from the chat once handled (Telegram).
    message_ref: str | None = None
    language_hint: str | None = None
    #: Whether the channel shows numbered options (typed digits answer them).
    numbered: bool = False
    #: An edit of an earlier message: never re-read, only removed from the screen.
    edited: bool = False
    #: The channel's durable inbox item, removed in the same transaction as the turn.
    inbox_id: str | None = None
    #: The messenger's sequence number of the update (Telegram's update id; Signal has one
    #: receiver, which handles envelopes in the order received, and a phone's clock can step
    #: back): a chat's updates are applied in this order.
    order: int | None = None


@dataclass(frozen=True, slots=True)
class Handled:
    """What one inbound message led to."""

    entries: Sequence[OutboxEntry] = ()
    duplicate: bool = False
    lock: bool = False


@dataclass
class Senders:
    """Wakes the running channels' senders for outbox items someone else wrote."""

    wakers: dict[str, Callable[[], None]] = field(default_factory=dict)

    def register(self, channel: str, wake: Callable[[], None]) -> None:
        """A running channel's sender."""
        self.wakers[channel] = wake

    def wake(self, channels: Sequence[str] | None = None) -> None:
        """Wake the senders of these channels (all when None)."""
        for channel, wake in self.wakers.items():
            if channels is None or channel in channels:
                wake()


class InboundService:
    """Handles every reporter and staff message of every channel."""

    def __init__(
        self,
        uow: Callable[[], StaffUnitOfWork],
        intake: IntakeService,
        staff: StaffCommands,
        engine: Engine,
        clock: Clock,
        limits: RateLimit | None = None,
        senders: Senders | None = None,
        reporter: ReporterService | None = None,
    ) -> None:
        self._uow = uow
        self._intake = intake
        self._staff = staff
        #: Receipts, read-once messages, status, withdrawal (the staff commands' instance).
        self.reporter = reporter or staff.reporter
        self._engine = engine
        self._clock = clock
        #: Each chat's bucket is in the database, counted under the chat's lock: every process
        #: counts against the same one.
        self._limits = limits
        self.senders = senders or Senders()
        self._languages = tuple(engine.questionnaire.languages)

    def notice(self, language: str, key: str) -> str:
        """A translated text for an adapter (errors, goodbyes)."""
        return self._engine.notice(language, key).text

    def _hint(self, inbound: Inbound) -> str | None:
        hint = (inbound.language_hint or "").split("-")[0].lower()
        return hint if hint in self._languages else None

    async def reporter_identity_changed(self, address: str, private: bool) -> bool:
        """A reporter's Signal safety number changed (a send was refused): lawyer messages to
        it are held and its lawyers told; whether this send may trust the new identity (a
        questionnaire message may; a lawyer's message may not)."""
        now, out = self._clock(), Outgoing()
        async with self._uow() as uow:
            await self.reporter.identity_changed(uow, out, address, now)
            entries = await out.write(uow, now)
            await uow.commit()
        if entries:
            self.senders.wake(sorted({e.channel for e in entries}))
        return not private

    async def forget_full_buckets(self) -> int:
        """Delete the rate-limit buckets that have refilled (the same as none); how many.

        A bucket row keeps a precise time: the named short-lived exception to whole hours at
        rest (DESIGN.md section 4, "Times at rest", like the outbox), so it must go as soon as
        it is full again, one window after the chat's last message; the erase job runs this
        every minute.
        """
        if self._limits is None:
            return 0
        async with self._uow() as uow:
            count = await uow.limits.prune(self._clock() - self._limits.window)
            await uow.commit()
        return count

    async def handle(self, inbound: Inbound) -> Handled:
        """Apply one inbound message in one transaction; its answers are in the outbox."""
        if inbound.attachment is not None:
            # Decoding takes a worker process up to seconds: never inside a transaction.
            inbound = replace(inbound, attachment=await self._intake.check(inbound.attachment))
        now = self._clock()
        out = Outgoing()
        lock = False
        # First of all (so no two transactions wait on each other's rows): the chat's turns go
        # one at a time, whichever process handles them.
        async with self._uow().locking(inbound.channel, inbound.chat) as uow:
            if inbound.inbox_id is not None:
                inbox = uow.telegram_inbox if inbound.channel == "telegram" else uow.signal_inbox
                await inbox.done(inbound.inbox_id)
            if (
                inbound.update_id is not None
                and not await uow.claim_turn(
                    inbound.channel, inbound.chat, inbound.update_id, now + SEEN_TTL
                )
            ) or await self._intake.stale(uow, inbound.channel, inbound.chat, inbound.order, now):
                await uow.commit()
                return Handled(duplicate=True)
            lock = await self._dispatch(uow, out, inbound)
            entries = await out.write(uow, now)
            await uow.commit()
        others = sorted({e.channel for e in entries if e.channel != inbound.channel})
        if others:
            self.senders.wake(others)
        if lock and self._staff.request_lock is not None:
            self._staff.request_lock()
        return Handled(entries=entries, lock=lock)

    async def _dispatch(self, uow: StaffUnitOfWork, out: Outgoing, inbound: Inbound) -> bool:
        now = self._clock()
        channel, chat = inbound.channel, inbound.chat
        mine = [inbound.message_ref] if inbound.message_ref else []
        if inbound.edited:
            out.delete(channel, chat, mine)
            return False
        draft_language = await self._intake.language(uow, channel, chat, now)
        language = draft_language or self._hint(inbound) or "en"
        if self._limits is not None:
            # The chat's lock is held (``handle``): this read and write are not interleaved
            # with another process's turn for the same chat.
            bucket, verdict = self._limits.step(await uow.limits.get(channel, chat), now)
            await uow.limits.put(channel, chat, bucket)
            if verdict is not Verdict.OK:
                notice = [self._engine.notice(language, "ui.rate_limited")]
                out.show(
                    channel,
                    chat,
                    notice if verdict is Verdict.WARN else [],
                    clear=False,
                    track=True,
                    delete=mine,
                    keep=self.reporter.policy.read,
                )
                return False
        at = Where(channel, chat, language, inbound.numbered)
        if isinstance(inbound.event, Act):
            await self.reporter.act(uow, out, at, inbound.event, now)
            out.delete(channel, chat, mine)
            return False
        if (
            inbound.numbered
            and inbound.event is None
            and inbound.text is not None
            and await self.reporter.answer_prompt(uow, out, at, inbound.text, now)
        ):
            out.delete(channel, chat, mine)
            return False
        parsed = parse(inbound.text, self._languages) if inbound.text is not None else None
        if isinstance(parsed, Command) and inbound.event is None:
            language = draft_language or parsed.language or language
            return await self._command(uow, out, inbound, parsed, language, mine)
        event = self._event(inbound, parsed)
        turn = await self._intake.turn(
            uow, out, channel, chat, event, now, attachment=inbound.attachment, order=inbound.order
        )
        await self._show_turn(uow, out, at, turn, mine)
        return False

    async def _show_turn(
        self, uow: StaffUnitOfWork, out: Outgoing, at: Where, turn: Turn, mine: list[str]
    ) -> None:
        """A questionnaire turn replaces what the chat shows; a submission leaves the receipt."""
        if turn.submitted:
            await self.reporter.show_receipt(uow, out, at, turn.replies, self._clock(), mine)
            return
        policy = self.reporter.policy
        question = any(isinstance(m, Question) for m in turn.replies)
        keep = policy.question if question else policy.read
        self.reporter.show(out, at, turn.replies, keep=keep, clear=True, delete=mine)

    def _event(self, inbound: Inbound, parsed: Command | Answer | None) -> Event:
        if inbound.event is not None:
            return inbound.event
        if inbound.file_refused:
            return Refused()
        if inbound.attachment is not None or not isinstance(parsed, Answer):
            return Invalid()
        return Reply(parsed.text) if inbound.numbered else TextAnswer(parsed.text)

    async def _command(
        self,
        uow: StaffUnitOfWork,
        out: Outgoing,
        inbound: Inbound,
        command: Command,
        language: str,
        mine: list[str],
    ) -> bool:
        now = self._clock()
        channel, chat = inbound.channel, inbound.chat
        name = command.name
        at = Where(channel, chat, language, inbound.numbered)
        if name in _REPORTER_EVENTS:
            hint = command.language or self._hint(inbound)
            turn = await self._intake.turn(
                uow, out, channel, chat, _REPORTER_EVENTS[name](hint), now, order=inbound.order
            )
            await self._show_turn(uow, out, at, turn, mine)
            return False
        if name in STAFF or name is Name.UNKNOWN or (name is Name.REPLY and command.number):
            ctx = StaffContext(uow, out, address(channel, chat), language, now)
            if name is Name.UNKNOWN:
                answers, lock = self._staff.generic(language), False
            else:
                answers, lock = await self._staff.handle(ctx, command)
            notices = [Notice(a) for a in answers]
            out.show(channel, chat, notices, clear=False, track=False, delete=mine)
            return lock
        notices = await self._reporter_command(uow, out, inbound, command, at)
        if notices or name is Name.FORGET:
            self.reporter.show(out, at, notices, clear=name is Name.FORGET, delete=mine)
        else:
            out.delete(channel, chat, mine)
        return False

    async def _reporter_command(
        self,
        uow: StaffUnitOfWork,
        out: Outgoing,
        inbound: Inbound,
        command: Command,
        at: Where,
    ) -> list[Notice]:
        name, now, language = command.name, self._clock(), at.language
        notice = self._engine.notice
        if name in (Name.STATUS, Name.WITHDRAW):
            if command.code is None and not command.text:
                usage = "ui.status_usage" if name is Name.STATUS else "ui.withdraw_usage"
                return [notice(language, usage)]
            # A malformed code answers like an unknown one: nothing tells them apart.
            if name is Name.STATUS:
                await self.reporter.status(uow, out, at, command.code, now)
            else:
                await self.reporter.withdraw(uow, out, at, command.code, now)
            return []
        if name is Name.READ:
            await self.reporter.read(uow, out, at, now)
            return []
        if name is Name.REPLY:
            if command.code is None or command.bare:
                return [notice(language, "ui.reply_usage")]
            text = await self._staff.reporter_reply(
                uow, out, command.code, command.text, language, now
            )
            return [Notice(text)]
        if name is Name.FORGET:
            await self._intake.forget(uow, inbound.channel, inbound.chat, now)
            await self.reporter.forget(uow, inbound.channel, inbound.chat)
            await self.reporter.erasure.schedule(uow, now)
            return [notice(language, "ui.forgotten")]
        if name is Name.HELP:
            return [notice(language, _HELP.get(inbound.channel, "ui.help_signal"))]
        return [Notice(t) for t in self._staff.generic(language)]
