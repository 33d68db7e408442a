"""Every service over one database, with in-memory transports behind real outbox senders."""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from bot.deadline_table import load_deadline_table
from bot.domain.engine import Engine
from bot.domain.messages import Event, Notice, Question
from bot.domain.receipt import normalize_receipt
from bot.services.casework import Casework, CaseworkPolicy
from bot.services.clock import FrozenClock
from bot.services.inbound import Inbound, InboundService, Senders
from bot.services.intake import Attachment, IntakePolicy, IntakeService
from bot.services.outbox import OutboxSender, OutgoingFile, Shown
from bot.services.ratelimit import RateLimit
from bot.services.roster import RosterService
from bot.services.routing import LawyerPolicy, Routing
from bot.services.staff import StaffCommands
from storage.db import make_session_factory
from storage.keyring import Keyring
from storage.numbers import CaseNumbering, Draw
from storage.repositories import SqlUnitOfWork

CHANNELS = ("telegram", "signal", "console")


@dataclass
class MemoryTransport:
    """A messenger in memory: what each chat was shown, and what is still on its screen."""

    channel: str
    shown: dict[str, list[Shown]] = field(default_factory=dict)
    screen: dict[str, dict[str, Shown]] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)
    #: Files sent to each chat: (caption, files) per message.
    files: dict[str, list[tuple[str, list[OutgoingFile]]]] = field(default_factory=dict)
    edits: int = 0
    _next: int = 0

    async def send(self, chat: str, messages: Sequence[Shown]) -> list[str]:
        refs = []
        for message in messages:
            self._next += 1
            ref = str(self._next)
            self.shown.setdefault(chat, []).append(message)
            self.screen.setdefault(chat, {})[ref] = message
            refs.append(ref)
        return refs

    async def send_files(self, chat: str, caption: str, files: Sequence[OutgoingFile]) -> list[str]:
        self._next += 1
        self.files.setdefault(chat, []).append((caption, list(files)))
        return [str(self._next)]

    async def edit(self, chat: str, ref: str, messages: Sequence[Shown]) -> bool:
        if len(messages) != 1 or ref not in self.screen.get(chat, {}):
            return False
        self.edits += 1
        self.shown.setdefault(chat, []).append(messages[0])
        self.screen[chat][ref] = messages[0]
        return True

    async def delete(self, chat: str, ref: str) -> None:
        self.screen.get(chat, {}).pop(ref, None)


def sequential_numbers() -> Draw:
    """A draw that ignores its band and counts 1, 2, 3 ... (free numbers only are kept)."""
    counter = itertools.count(1)
    return lambda low, high: next(counter)


class World:
    """Intake, staff, routing and roster over one database, as ``tipline run`` wires them."""

    def __init__(
        self,
        db: AsyncEngine,
        keyring: Keyring,
        engine: Engine,
        clock: FrozenClock,
        *,
        policy: LawyerPolicy | None = None,
        intake_policy: IntakePolicy | None = None,
        choice: Callable[[list[str]], str] = secrets.choice,
        reports_per_day: int = 3,
        limits: RateLimit | None = None,
        casework: CaseworkPolicy | None = None,
        uow: Callable[[], Any] | None = None,
    ) -> None:
        sessions = make_session_factory(db)
        self.db = db
        self.keyring = keyring
        self.engine = engine
        self.clock = clock
        # Cases are numbered 1, 2, 3 ... so tests can name them; tipline draws at random.
        numbering = CaseNumbering(draw=sequential_numbers())
        self.uow = uow or (lambda: SqlUnitOfWork(sessions, keyring, numbering=numbering))
        self.senders = Senders()
        self.routing = Routing(self.uow, engine.texts, clock, policy, wake=self.senders.wake)
        self.roster = RosterService(self.uow, self.routing, clock, policy)
        self.locks = 0
        self.staff = StaffCommands(engine.texts, self.routing, policy, choice, self._lock)
        self.intake = IntakeService(
            engine, intake_policy, self.routing, reports_per_day=reports_per_day
        )
        self.casework = Casework(
            self.uow,
            engine.texts,
            clock,
            load_deadline_table(),
            keyring,
            casework
            or CaseworkPolicy(
                content_over_telegram=policy.content_over_telegram if policy else False
            ),
            wake=self.senders.wake,
        )
        self.staff.casework = self.casework
        self.intake.casework = self.casework
        self.inbound = InboundService(
            self.uow, self.intake, self.staff, engine, clock, limits, self.senders
        )
        self.transports = {c: MemoryTransport(c) for c in CHANNELS}
        self.outboxes = {c: OutboxSender(c, self.uow, t, clock) for c, t in self.transports.items()}

    def _lock(self) -> None:
        self.locks += 1

    async def deliver(self) -> None:
        """Deliver everything due on every channel."""
        for sender in self.outboxes.values():
            while await sender.flush():
                pass

    async def say(
        self,
        address: str,
        text: str | None = None,
        *,
        event: Event | None = None,
        hint: str | None = None,
        attachment: Attachment | None = None,
        update_id: str | None = None,
        ref: str | None = None,
    ) -> list[Shown]:
        """One inbound message from ``channel:chat``; what that chat was shown because of it."""
        channel, _, chat = address.partition(":")
        transport = self.transports[channel]
        before = len(transport.shown.get(chat, []))
        inbound = Inbound(
            channel,
            chat,
            text=text,
            event=event,
            attachment=attachment,
            language_hint=hint,
            numbered=channel != "telegram",
            update_id=update_id,
            message_ref=ref,
        )
        handled = await self.inbound.handle(inbound)
        await self.outboxes[channel].deliver(handled.entries)
        await self.deliver()
        return transport.shown.get(chat, [])[before:]

    async def said(self, address: str, text: str, **kwargs: object) -> str:
        """The texts shown in answer to one message, joined."""
        shown = await self.say(address, text, **kwargs)  # type: ignore[arg-type]
        return "\n".join(m.text for m in shown)

    def sent(self, address: str) -> list[str]:
        """Every text an address was shown, in order."""
        channel, _, chat = address.partition(":")
        return [m.text for m in self.transports[channel].shown.get(chat, [])]

    def on_screen(self, address: str) -> list[Shown]:
        """What the bot's messages on a chat's screen show now."""
        channel, _, chat = address.partition(":")
        return list(self.transports[channel].screen.get(chat, {}).values())

    async def status(self, code: str, language: str = "en") -> str:
        """The status line a receipt code shows."""
        async with self.uow() as uow:
            notice = await self.intake.status(uow, normalize_receipt(code), language)
        return notice.text


def last_question(shown: Sequence[Shown]) -> Question:
    """The question at the end of what a chat was shown."""
    questions = [m for m in shown if isinstance(m, Question)]
    assert questions, f"no question in {shown!r}"
    return questions[-1]


def notices(shown: Sequence[Shown]) -> list[str]:
    """The texts of the notices among what a chat was shown."""
    return [m.text for m in shown if isinstance(m, Notice)]
