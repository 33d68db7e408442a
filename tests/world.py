"""Every service over one database, with in-memory transports behind real outbox senders."""

from __future__ import annotations

import itertools
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.deadline_table import load_deadline_table
from bot.domain.engine import Engine
from bot.domain.messages import Event, Notice, Question, Start
from bot.domain.phrase import WORDS
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
from storage.models import Case
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


#: A receipt code as the chat shows it.
CODE = re.compile(r"\b[A-Z2-7]{4}(?:-[A-Z2-7]{4}){3}\b")


class Inbox:
    """What each address was shown, read from the in-memory messengers."""

    def __init__(self, world: World) -> None:
        self._world = world

    @property
    def sent(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for channel, transport in self._world.transports.items():
            for chat, shown in transport.shown.items():
                out[f"{channel}:{chat}"] = [m.text for m in shown]
        return out

    def last(self, address: str) -> str:
        return self._world.sent(address)[-1]


class Lawyers:
    """The lawyer use cases as the tests drive them: CLI, jobs, and messenger commands."""

    def __init__(self, world: World) -> None:
        self._w = world
        self._replies = 0

    async def _then_deliver(self, result: object) -> object:
        await self._w.deliver()
        return result

    async def invite(self, **kwargs: object) -> tuple[int, str]:
        return await self._w.roster.invite(**kwargs)  # type: ignore[arg-type]

    async def verify(self, lawyer_id: int, phrase: str) -> None:
        await self._w.roster.verify(lawyer_id, phrase)

    async def revoke(self, lawyer_id: int) -> int:
        moved = await self._w.roster.revoke(lawyer_id)
        await self._w.deliver()
        return moved

    async def renew(self, lawyer_id: int) -> str:
        code = await self._w.roster.renew(lawyer_id)
        await self._w.deliver()
        return code

    async def identity_changed(self, address: str) -> None:
        await self._w.roster.identity_changed(address)
        await self._w.deliver()

    async def escalate(self) -> int:
        moved = await self._w.routing.escalate()
        await self._w.deliver()
        return moved

    async def digest(self) -> bool:
        sent = await self._w.routing.digest()
        await self._w.deliver()
        return sent

    async def warn_expiring(self) -> int:
        sent = await self._w.routing.warn_expiring()
        await self._w.deliver()
        return sent

    async def command(self, address: str, text: str) -> list[str]:
        return [m.text for m in await self._w.say(address, text)]

    async def reporter_reply(self, code: str, text: str, language: str) -> str:
        self._replies += 1
        chat = f"telegram:someone-{self._replies}"
        return await self._w.said(chat, f"/reply {code} {text}", hint=language)

    async def reporter_messages(self, code: str, language: str) -> list[str]:
        self._replies += 1
        chat = f"telegram:someone-{self._replies}"
        return [m.text for m in await self._w.say(chat, f"/status {code}", hint=language)][1:]


class StaffWorld(World):
    """A World with lawyers to drive: verification phrases drawn in a known order, reports
    enough for every test, and reporters who walk a script to their receipt."""

    #: Where and in which languages ``lawyer`` registers a lawyer unless told.
    regions: tuple[str, ...] = ("baku",)
    languages: tuple[str, ...] = ("en", "az")

    def __init__(
        self,
        db: AsyncEngine,
        keyring: Keyring,
        engine: Engine,
        clock: FrozenClock,
        *,
        content_over_telegram: bool = False,
        policy: LawyerPolicy | None = None,
        limits: RateLimit | None = None,
        casework: CaseworkPolicy | None = None,
    ) -> None:
        words = iter(WORDS * 100)
        super().__init__(
            db,
            keyring,
            engine,
            clock,
            policy=policy or LawyerPolicy(content_over_telegram=content_over_telegram),
            choice=lambda options: next(words),
            reports_per_day=100,
            limits=limits,
            casework=casework,
        )
        self.inbox = Inbox(self)
        self.lawyers = Lawyers(self)
        self._chats = 0

    async def report(
        self,
        script: dict[str, Event],
        chat: str | None = None,
        hint: str = "en",
        attachment: Attachment | None = None,
    ) -> str:
        """Walk a reporter through ``script`` (a new chat unless named); the receipt code."""
        if chat is None:
            self._chats += 1
            chat = f"reporter-{self._chats}"
        address = f"telegram:{chat}"
        shown = await self.say(address, event=Start(hint))
        for _ in range(40):
            question = last_question(shown)
            if question.step == "documents" and attachment is not None:
                await self.say(address, attachment=attachment)
            shown = await self.say(address, event=script[question.step])
            for message in shown:
                if isinstance(message, Notice) and (found := CODE.search(message.text)):
                    return found.group(0)
        raise AssertionError("no receipt")

    async def lawyer(
        self,
        name: str,
        address: str,
        *,
        regions: Iterable[str] | None = None,
        on_call: bool = False,
        languages: Iterable[str] | None = None,
        role: str = "lawyer",
    ) -> int:
        """Invite, register and verify a lawyer at ``address``; their id."""
        lawyer_id, code = await self.lawyers.invite(
            name=name,
            languages=list(languages or self.languages),
            regions=list(regions or self.regions),
            on_call=on_call,
            role=role,
        )
        answer = await self.lawyers.command(address, f"/register {code}")
        phrase = answer[0].split("\n\n")[1]
        await self.lawyers.verify(lawyer_id, phrase.upper())  # spacing and case are forgiven
        return lawyer_id

    async def case_row(self, number: int) -> Case:
        """The stored row of case ``number``."""
        async with self.uow() as u:
            found: Case = (
                await u.session.execute(select(Case).where(Case.number == number))
            ).scalar_one()
            return found

    async def say_text(self, address: str, text: str) -> str:
        """What a lawyer's command was answered, as one text."""
        return "\n".join(await self.lawyers.command(address, text))
