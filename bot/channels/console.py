"""The console channel: the reporter questionnaire in a terminal, with numbered options."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from bot.domain.messages import Notice, Question, Start
from bot.domain.render import render_notice, render_numbered
from bot.services.clock import Clock
from bot.services.inbound import Inbound, InboundService
from bot.services.outbox import OutboxSender, Shown
from bot.services.ports import UnitOfWork

CHANNEL = "console"
CHAT_ID = "local-terminal"

ReadLine = Callable[[str], Awaitable[str]]
Write = Callable[[str], None]


async def _read_stdin(prompt: str) -> str:
    return await asyncio.to_thread(input, prompt)


def _print(text: str) -> None:
    print(text, flush=True)


class ConsoleTransport:
    """Prints what the outbox holds for the terminal."""

    #: Nothing printed can be deleted, so no screen is kept for the terminal.
    keeps_screen = False

    def __init__(self, write: Write) -> None:
        self._write = write
        self.language = "en"
        self.draft_open = False
        self._sent = 0

    async def send(self, chat: str, messages: Sequence[Shown]) -> list[str]:
        """Print each message; refs are just counters."""
        refs = []
        for message in messages:
            if isinstance(message, Question):
                self.language = message.language
                self._write("\n" + render_numbered(message))
            elif isinstance(message, Notice):
                self._write("\n" + render_notice(message))
            self._sent += 1
            refs.append(str(self._sent))
        self.draft_open = any(isinstance(m, Question) for m in messages)
        return refs

    async def edit(self, chat: str, ref: str, messages: Sequence[Shown]) -> bool:
        """A terminal prints anew."""
        return False

    async def delete(self, chat: str, ref: str) -> None:
        """A terminal cannot take back what it printed."""


class ConsoleChannel:
    """Reads lines, hands them to the inbound service and prints what it answers."""

    def __init__(
        self,
        inbound: InboundService,
        uow: Callable[[], UnitOfWork],
        clock: Clock,
        read: ReadLine = _read_stdin,
        write: Write = _print,
    ) -> None:
        self._inbound = inbound
        self._read = read
        self._write = write
        self._transport = ConsoleTransport(write)
        self._sender = OutboxSender(CHANNEL, uow, self._transport, clock)

    def _goodbye(self) -> str:
        key = "ui.console_bye" if self._transport.draft_open else "ui.console_goodbye"
        return self._inbound.notice(self._transport.language, key)

    async def _say(self, inbound: Inbound) -> None:
        handled = await self._inbound.handle(inbound)
        await self._sender.deliver(handled.entries)

    async def run(self) -> None:
        """Run until ``quit`` or end of input; the draft survives for the next run."""
        await self._sender.flush()  # what a crash left undelivered
        await self._say(Inbound(CHANNEL, CHAT_ID, event=Start(), numbered=True))
        while True:
            try:
                line = await self._read("> ")
            except (EOFError, KeyboardInterrupt):
                self._write("\n" + self._goodbye())
                return
            if line.strip().lower() in ("quit", "exit"):
                self._write(self._goodbye())
                return
            if line.strip() == "?":
                line = "help"
            await self._say(Inbound(CHANNEL, CHAT_ID, text=line, numbered=True))
