"""Test helpers that walk the questionnaire with a script of answers."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from bot.domain.engine import DraftState, Engine
from bot.domain.messages import (
    Choose,
    ChooseMany,
    Done,
    Event,
    Outbound,
    Question,
    Skip,
    Start,
    SubmitReport,
    TextAnswer,
)

CANARY = "CANARY-7f3a9c1e-do-not-store"

#: A complete report of someone detained right now; every free-text step carries the canary.
DETAINED_NOW: dict[str, Event] = {
    "language": Choose("en"),
    "consent": Choose("agree"),
    "about": Choose("someone_else"),
    "situation": Choose("detained_now"),
    "held_place": TextAnswer(f"Police station 9 {CANARY}"),
    "held_since": Choose("under_3h"),
    "city": Choose("baku"),
    "district": TextAnswer(f"Nasimi {CANARY}"),
    "what_happened": ChooseMany(("detained", "phone_searched")),
    "injured": Choose("no"),
    "under18": Choose("no"),
    "needs_lawyer": Choose("urgently"),
    "own_words": TextAnswer(f"They took his phone {CANARY}"),
    "documents": Done(),
    "contact": Choose("here"),
    "review": Choose("submit"),
}

#: A report of an earlier incident, documentation only, optional steps skipped.
DOCUMENTING: dict[str, Event] = {
    "language": Choose("ru"),
    "consent": Choose("agree"),
    "about": Choose("myself"),
    "situation": Choose("other_incident"),
    "when": Choose("last_month"),
    "city": Choose("other"),
    "district": Skip(),
    "what_happened": ChooseMany(("blackmail",)),
    "injured": Choose("no"),
    "under18": Choose("no"),
    "needs_lawyer": Choose("documenting"),
    "own_words": Skip(),
    "documents": Skip(),
    "contact": Choose("code"),
    "review": Choose("submit"),
}


def last_question(outbound: list[Outbound]) -> Question:
    """The question at the end of an engine answer."""
    questions = [m for m in outbound if isinstance(m, Question)]
    assert questions, f"no question in {outbound!r}"
    return questions[-1]


def walk(
    engine: Engine,
    script: Mapping[str, Event],
    now: datetime,
    *,
    hint: str | None = None,
    channel: str = "console",
) -> tuple[list[str], SubmitReport]:
    """Answer each asked step from the script; returns the steps asked and the submission."""
    state: DraftState | None
    state, out = engine.step(None, Start(hint), now, channel=channel)
    asked: list[str] = []
    for _ in range(60):
        question = last_question(out)
        asked.append(question.step)
        assert state is not None
        state, out = engine.step(state, script[question.step], now, channel=channel)
        submitted = [m for m in out if isinstance(m, SubmitReport)]
        if submitted:
            assert state is None
            return asked, submitted[0]
    raise AssertionError("questionnaire did not finish")


class TiplineProcess:
    """``tipline init --dev`` then ``tipline run`` in a subprocess, stopped with SIGTERM."""

    def __init__(self, tmp_path: Path, **settings: str) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TIPLINE_")}
        self.env.update(
            TIPLINE_DATA_DIR=str(tmp_path / "var"),
            TIPLINE_ROOT_KEY_FILE=str(tmp_path / "var" / "root.key"),
            TIPLINE_LOG_LEVEL="DEBUG",
            **settings,
        )
        self.cwd = tmp_path
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> TiplineProcess:
        init = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "init", "--dev", env=self.env, cwd=self.cwd
        )
        assert await init.wait() == 0
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.cli",
            "run",
            env=self.env,
            cwd=self.cwd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(self.proc.communicate(), 30)
        self.returncode = self.proc.returncode
        self.logs = err.decode()


async def keep_chat(
    u: Any, channel: str, chat: str, state: Mapping[str, Any], until: datetime, bucket: Any
) -> None:
    """Give a chat a draft and a rate-limit bucket in unit of work ``u`` (not committed)."""
    await u.drafts.save(channel, chat, state, until)
    await u.limits.put(channel, chat, bucket)
