"""The console channel: the reporter questionnaire in a terminal, with numbered options."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from bot.domain.engine import Engine
from bot.domain.messages import (
    ChangeLanguage,
    Event,
    Notice,
    Outbound,
    Question,
    Reply,
    Start,
    Stop,
)
from bot.domain.render import render_numbered
from bot.services.intake import IntakeService
from bot.services.lawyers import LawyerService
from bot.services.reporter import status_texts

CHANNEL = "console"
CHAT_ID = "local-terminal"

ReadLine = Callable[[str], Awaitable[str]]
Write = Callable[[str], None]


async def _read_stdin(prompt: str) -> str:
    return await asyncio.to_thread(input, prompt)


def _print(text: str) -> None:
    print(text, flush=True)


class ConsoleChannel:
    """Reads lines, turns them into domain events and prints what the service answers."""

    def __init__(
        self,
        intake: IntakeService,
        engine: Engine,
        read: ReadLine = _read_stdin,
        write: Write = _print,
        lawyers: LawyerService | None = None,
    ) -> None:
        self._intake = intake
        self._engine = engine
        self._lawyers = lawyers
        self._read = read
        self._write = write
        self._language = "en"
        self._draft_open = False

    def _show(self, messages: list[Outbound]) -> None:
        self._draft_open = any(isinstance(m, Question) for m in messages)
        for message in messages:
            if isinstance(message, Question):
                self._language = message.language
                self._write("\n" + render_numbered(message))
            elif isinstance(message, Notice):
                self._write("\n" + message.text)

    def _goodbye(self) -> str:
        key = "ui.console_bye" if self._draft_open else "ui.console_goodbye"
        return self._engine.notice(self._language, key).text

    def _event(self, line: str) -> Event:
        word = line.strip().lower()
        if word in ("stop", "cancel"):
            return Stop()
        if word == "language":
            return ChangeLanguage()
        if word == "start":
            return Start()
        return Reply(line)

    async def run(self) -> None:
        """Run until ``quit`` or end of input; the draft survives for the next run."""
        self._show(await self._intake.handle(CHANNEL, CHAT_ID, Start()))
        while True:
            try:
                line = await self._read("> ")
            except (EOFError, KeyboardInterrupt):
                self._write("\n" + self._goodbye())
                return
            word = line.strip().lower()
            if word in ("quit", "exit"):
                self._write(self._goodbye())
                return
            if word in ("help", "?"):
                self._write(self._engine.notice(self._language, "ui.console_help").text)
                continue
            if word.startswith("status"):
                code = line.strip()[len("status") :]
                for text in await status_texts(self._intake, self._lawyers, code, self._language):
                    self._write("\n" + text)
                continue
            if word.startswith("reply ") and self._lawyers is not None:
                _, code, body = ([*line.strip().split(maxsplit=2), "", ""])[:3]
                self._write("\n" + await self._lawyers.reporter_reply(code, body, self._language))
                continue
            self._show(await self._intake.handle(CHANNEL, CHAT_ID, self._event(line)))
