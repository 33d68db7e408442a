"""Crash harness: the real ``tipline run`` in a subprocess, SIGKILLed at random moments, restarted.

People are simulated the way they use the bot: a reporter reads what is on the screen, answers
the question shown (buttons on Telegram, numbers on Signal) and waits, within a bound, for the
next one; a lawyer types commands and waits for the answers. The messenger APIs are the fakes in
``tests/``, served from the test process on 127.0.0.1, and the bot is the console script in a
process group of its own, killed with SIGKILL and started again at once.

Kills are timed against what the bot does, drawn from a seeded generator: d ms after the API
handed it the message (an update returned by getUpdates or answered 2xx at the webhook, a batch
returned by signal-cli's receive), right after its n-th database commit since the message
(SQLite's ``PRAGMA data_version``, polled by a thread, tells when another process committed; no
table is read), d ms after its k-th request to the messenger API (the fakes report requests as
they arrive), or d seconds after a restart, while it starts, drains and handles what was
redelivered.

Two moments are never chosen, because no program could survive a kill there: between signal-cli
handing a batch over and the commit that records it (normal mode consumes what it hands over, so
the messages are gone whatever tipline does), and between a send request reaching the messenger
API and the commit that records it (the message is out, but nothing could have recorded it yet,
so it is sent again: neither API offers an idempotency key). On SQLite the transactions waiting
for the database commit together (storage/writer.py), so that is the second commit seen, not
always the first: a kill that falls there waits for it, and none falls while signal-cli holds a
batch the bot is about to receive. A send already on the wire when the kill lands (the fake takes
it after the kill), or made in the last moment before it, may likewise arrive twice, and only
that message is allowed to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import secrets
import signal
import socket
import sqlite3
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from bot.i18n import load_catalog
from tests.fake_signal import NUMBER, FakeSignalApi
from tests.fake_telegram import TOKEN, FakeBotApi

ROOT = Path(__file__).resolve().parents[1]
EN = load_catalog("en")

#: How long the bot may take to show its reaction after the last restart before the move is
#: declared lost. Covers a start-up on a loaded machine and a retry loop's period.
STALL_SECONDS = 15.0
#: Kills timed by a request fall up to this long after it.
REQUEST_JITTER = 0.04
#: Kills timed by a hand-over fall up to this long after it: where a message taken but not yet
#: committed is at risk (the turn commits some 10-30 ms after it).
HANDOVER_JITTER = 0.015
#: Kills timed from a restart land within this many seconds of it (start-up, drain, redelivery).
STARTUP_WINDOW = 2.5
PROCESS_TIMEOUT = 60.0
#: A kill waiting for requests that do not come (a quiet or stuck bot) happens after this long.
FORCE_KILL_AFTER = 5.0
#: The bot counts as settled after this long without a commit.
QUIET = 0.05
#: A person answers after the bot has done nothing (commits, requests) for this long...
QUIET_BEFORE = 0.15
#: ... and has been up for this long (its start-up jobs commit just after it is ready).
STARTED_BEFORE = 0.4
#: Requests that deliver a new message to a person (not edits or deletions, which repeat safely).
SENDS = frozenset({"sendMessage", "POST /v2/send"})
#: A guarded window closes at the bot's second commit after it opened, or after this long if
#: none comes. On SQLite the transactions waiting for the database share one COMMIT
#: (storage/writer.py): the commit seen next may be the group that was already committing, and
#: the next one holds what was waiting behind it.
GUARD_COMMITS = 2
GUARD_MAX = 1.0
#: A send this recent when the kill came may not be recorded yet, however many commits were
#: seen since: its record joins the group of transactions waiting when the send returns.
RECORD_WINDOW = 0.05
#: Events of the bot's recent past a failure message shows.
TRACE_LENGTH = 300

#: Catalog prompts by step id; a message shows the step whose (longest) prompt it contains.
PROMPTS = {key.removeprefix("step."): text for key, text in EN.items() if key.startswith("step.")}
HELP_TEXTS = frozenset(text for key, text in EN.items() if key.startswith("ui.help"))
_CODE = re.compile(r"\b[A-Z2-7]{4}(?:-[A-Z2-7]{4}){3}\b")
_RECEIPT_HEAD = EN["ui.receipt"].split("{code}")[0].strip()
_OPTION_LINE = re.compile(r"^\s*(\d+)\s*=\s*(.+?)\s*$")


class LostOrDoubled(AssertionError):
    """Something a person should have received never came, or something happened twice."""


def exactly_once(what: str, count: int, context: str) -> None:
    """Fail with LostOrDoubled unless ``count`` is one."""
    if count != 1:
        raise LostOrDoubled(f"{what}: {count} times instead of once\n{context}")


def kill_seed() -> int:
    """The seed of this run: ``TIPLINE_KILL_SEED`` replays a run, otherwise a fresh one."""
    given = os.environ.get("TIPLINE_KILL_SEED")
    return int(given) if given else secrets.randbits(32)


def shown_step(text: str) -> str | None:
    """The questionnaire step a message asks, recognised by its prompt in the catalog."""
    hits = [step for step, prompt in PROMPTS.items() if prompt in text]
    return max(hits, key=lambda step: len(PROMPTS[step]), default=None)


def receipt_code(text: str) -> str | None:
    """The receipt code in a receipt message, or None for any other message."""
    if _RECEIPT_HEAD not in text:
        return None
    match = _CODE.search(text.split(_RECEIPT_HEAD, 1)[1])
    return match.group(0) if match else None


def template_match(key: str, text: str) -> dict[str, str] | None:
    """The placeholders of catalog text ``key`` as they were filled in ``text``, or None."""
    parts = re.split(r"\{(\w+)\}", EN[key])
    pattern, named = "", set()
    for i, part in enumerate(parts):
        if i % 2 == 0:
            pattern += re.escape(part)
        else:  # a placeholder used twice holds the same value twice
            pattern += f"(?P={part})" if part in named else f"(?P<{part}>.+?)"
            named.add(part)
    match = re.fullmatch(pattern, text.strip(), flags=re.DOTALL)
    return match.groupdict() if match else None


# ---- the report ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """What the reporter answers to one step: an option, ticks, typed words or "done"."""

    step: str
    choose: str | None = None
    ticks: tuple[str, ...] = ()
    text: str | None = None
    done: bool = False

    def labels(self) -> list[str]:
        """The option labels the reporter picks (English catalog)."""
        if self.done:
            return [EN["ui.done"]]
        if self.ticks:
            return [EN[f"opt.{self.step}.{tick}"] for tick in self.ticks]
        return [EN[f"opt.{self.step}.{self.choose}"]]


def report_script(channel: str, *, contact: str = "here") -> list[Answer]:
    """A whole report of someone detained right now, as answered on ``channel``."""
    script = [
        Answer("consent", choose="agree"),
        Answer("about", choose="myself"),
        Answer("situation", choose="detained_now"),
        Answer("held_place", text="Police station 2"),
        Answer("held_since", choose="under_3h"),
        Answer("city", choose="baku"),
        Answer("district", text="Nasimi"),
        Answer("what_happened", ticks=("detained", "beaten")),
        Answer("injured", choose="no"),
        Answer("under18", choose="no"),
        Answer("needs_lawyer", choose="urgently"),
        Answer("own_words", text="They took everyone who was at the party"),
        Answer("documents", done=True),
        Answer("contact", choose=contact),
        Answer("review", choose="submit"),
    ]
    if channel == "signal":  # Telegram knows the language from the client; Signal asks
        script.insert(0, Answer("language", choose="en"))
    return script


def review_lines(script: list[Answer]) -> list[str]:
    """What the review must list: every answer once, as given (typed words never echoed)."""
    lines = []
    for answer in script:
        if answer.step in ("language", "consent", "review"):
            continue
        if answer.text is not None:
            shown = EN["ui.review_text_given"].format(count=len(answer.text))
        elif answer.done:
            shown = EN["ui.review_skipped"]
        else:
            shown = ", ".join(answer.labels())
        lines.append(f"{EN[f'review.{answer.step}']}: {shown}")
    return lines


@dataclass(frozen=True, slots=True)
class Move:
    """One message a person sends, and the reaction of the bot they then wait for."""

    what: str
    act: Callable[[], Awaitable[None]]
    done: Callable[[], bool]
    expect: str


# ---- what one person sees ------------------------------------------------------------------


class Screen(Protocol):
    """One chat with the bot, seen from the person's side."""

    channel: str
    start_word: str
    help_word: str
    read_word: str

    def texts(self) -> list[str]: ...
    def arrivals(self, fragment: str) -> int: ...
    def reactions(self) -> int: ...
    def asked(self) -> list[str]: ...
    def showing(self, step: str) -> bool: ...
    def question_text(self, step: str) -> str: ...
    async def say(self, text: str) -> None: ...
    def moves(self, answer: Answer, done: Callable[[], bool], expect: str) -> list[Move]: ...


class TelegramScreen:
    """A private chat in the fake Bot API: messages as they are now, edits applied."""

    channel = "telegram"
    start_word = "/start"
    help_word = "/help"
    read_word = "/read"

    def __init__(self, fake: FakeBotApi, chat: int) -> None:
        self.fake = fake
        self.chat = chat

    def texts(self) -> list[str]:
        """Every text the bot showed in this chat, oldest first: each send and each edit."""
        return [text for chat, _, text in self.fake.shown if chat == self.chat]

    def arrivals(self, fragment: str) -> int:
        """How often ``fragment`` reached the screen (an edit of the same message adds none)."""
        most: dict[int, int] = {}
        for chat, message_id, text in self.fake.shown:
            if chat == self.chat:
                most[message_id] = max(most.get(message_id, 0), text.count(fragment))
        return sum(most.values())

    def reactions(self) -> int:
        """How many messages the bot sent, edited or deleted in this chat so far."""
        changes = ("sendMessage", "editMessageText", "deleteMessage")
        return sum(
            1
            for method, params in self.fake.calls
            if method in changes and str(params.get("chat_id")) == str(self.chat)
        )

    def asked(self) -> list[str]:
        """The questions on the screen now, with the options shown ticked."""
        shown = []
        for message in self.fake.visible(self.chat):
            step = shown_step(str(message.get("text", "")))
            if message["from"]["is_bot"] and message.get("reply_markup") and step:
                ticked = self.ticked(step)
                shown.append(f"{step} (ticked: {sorted(ticked)})" if ticked else step)
        return shown

    def _question(self, step: str) -> dict[str, Any] | None:
        for message in reversed(self.fake.visible(self.chat)):
            question = message["from"]["is_bot"] and message.get("reply_markup")
            if question and shown_step(str(message.get("text", ""))) == step:
                return message
        return None

    def showing(self, step: str) -> bool:
        """Whether a question of this step is on the screen."""
        return self._question(step) is not None

    def question_text(self, step: str) -> str:
        """The text of the question of this step on the screen."""
        message = self._question(step)
        return "" if message is None else str(message.get("text", ""))

    def _buttons(self, step: str) -> list[dict[str, str]]:
        message = self._question(step)
        rows = (message or {}).get("reply_markup", {}).get("inline_keyboard", [])
        return [button for row in rows for button in row]

    def ticked(self, step: str) -> set[str]:
        """Labels of the options shown as ticked (the label with a mark added)."""
        labels = {EN[key] for key in EN if key.startswith(f"opt.{step}.")}
        return {
            label
            for button in self._buttons(step)
            for label in labels
            if button["text"] != label and button["text"].endswith(label)
        }

    async def say(self, text: str) -> None:
        """The person types and sends a message."""
        await self.fake.text(self.chat, text, "en")

    async def press(self, step: str, label: str) -> None:
        """The person presses the button with this label under the question of ``step``."""
        message = self._question(step)
        if message is None:
            raise LostOrDoubled(f"the question '{step}' is no longer on the screen")
        for button in self._buttons(step):
            if button["text"] == label or button["text"].endswith(label):
                await self.fake.press(self.chat, message["message_id"], button["callback_data"])
                return
        raise LostOrDoubled(f"no button '{label}' under the question '{step}'")

    def moves(self, answer: Answer, done: Callable[[], bool], expect: str) -> list[Move]:
        """Buttons for choices and ticks, typing for free text."""
        step = answer.step
        if answer.text is not None:
            text = answer.text
            return [Move(f"type the answer to '{step}'", lambda: self.say(text), done, expect)]
        labels = answer.labels()
        if not answer.ticks:
            label = labels[0]
            what = f"press '{label}' at '{step}'"
            return [Move(what, lambda: self.press(step, label), done, expect)]
        moves = []
        for i, label in enumerate(labels):
            wanted = set(labels[: i + 1])
            moves.append(
                Move(
                    f"tick '{label}' at '{step}'",
                    lambda label=label: self.press(step, label),
                    lambda wanted=wanted: self.ticked(step) == wanted,
                    f"'{step}' showing exactly {sorted(wanted)} ticked",
                )
            )
        done_label = EN["ui.done"]
        moves.append(
            Move(
                f"press '{done_label}' at '{step}'",
                lambda: self.press(step, done_label),
                done,
                expect,
            )
        )
        return moves


class SignalScreen:
    """A Signal conversation in the fake signal-cli-rest-api: every message as it arrived."""

    channel = "signal"
    start_word = "start"
    help_word = "help"
    read_word = "read"

    def __init__(self, fake: FakeSignalApi, uuid_: str, phone: str) -> None:
        self.fake = fake
        self.uuid = uuid_
        self.phone = phone

    def texts(self) -> list[str]:
        """Every message the bot sent to this person, oldest first (remotely deleted too)."""
        return self.fake.to(self.uuid)

    def arrivals(self, fragment: str) -> int:
        """How often ``fragment`` reached this person."""
        return sum(text.count(fragment) for text in self.texts())

    def reactions(self) -> int:
        """How many messages the bot sent to this person so far."""
        return len(self.texts())

    def asked(self) -> list[str]:
        """The question asked last."""
        steps = [step for text in self.texts() if (step := shown_step(text))]
        return steps[-1:]

    def showing(self, step: str) -> bool:
        """Whether a question of this step has arrived."""
        return any(shown_step(text) == step for text in self.texts())

    def question_text(self, step: str) -> str:
        """The newest question of this step."""
        return next((t for t in reversed(self.texts()) if shown_step(t) == step), "")

    async def say(self, text: str) -> None:
        """The person sends a message; it waits in signal-cli until the bot receives it."""
        await self.fake.deliver(self.fake.envelope(self.uuid, text, self.phone))

    def number(self, step: str, label: str) -> str:
        """The number the question of ``step`` gives the option with this label."""
        for line in self.question_text(step).splitlines():
            match = _OPTION_LINE.match(line)
            if match and match.group(2) == label:
                return match.group(1)
        raise LostOrDoubled(f"no option '{label}' in the question '{step}'")

    def moves(self, answer: Answer, done: Callable[[], bool], expect: str) -> list[Move]:
        """Numbers for choices (several, comma-separated, for ticks), typing for free text."""
        step = answer.step
        if answer.text is not None:
            text = answer.text
            return [Move(f"type the answer to '{step}'", lambda: self.say(text), done, expect)]
        labels = answer.labels()

        async def act() -> None:
            await self.say(",".join(self.number(step, label) for label in labels))

        return [Move(f"answer {labels} to '{step}'", act, done, expect)]


def receipts(screen: Screen) -> list[str]:
    """Receipt codes the bot sent to this chat (each delivery counts)."""
    return [code for text in screen.texts() if (code := receipt_code(text))]


def has_receipt(screen: Screen) -> bool:
    """Whether a receipt has arrived."""
    return bool(receipts(screen))


def walk_moves(screen: Screen, script: list[Answer]) -> list[Move]:
    """Start, then answer every question in order until the receipt arrives."""
    first = script[0].step
    moves = [
        Move(
            f"send '{screen.start_word}'",
            lambda: screen.say(screen.start_word),
            lambda: screen.showing(first),
            f"the question '{first}'",
        )
    ]
    expected = review_lines(script)
    for i, answer in enumerate(script):
        if i + 1 < len(script):
            following = script[i + 1].step
            done = partial(screen.showing, following)
            expect = f"the question '{following}'"
        else:
            done, expect = partial(has_receipt, screen), "the receipt"
        step_moves = screen.moves(answer, done, expect)
        if answer.step == "review":
            step_moves = [_checked_review(screen, move, expected) for move in step_moves]
        moves += step_moves
    return moves


def _checked_review(screen: Screen, move: Move, expected: list[str]) -> Move:
    async def act() -> None:
        review = screen.question_text("review")
        missing = [line for line in expected if review.count(line) != 1]
        if missing:
            raise LostOrDoubled(f"the review lacks or repeats {missing}:\n{review}")
        await move.act()

    return Move(move.what, act, move.done, move.expect)


async def barrier(screen: Screen, *, limit: float = STALL_SECONDS) -> None:
    """Ask for help and wait for the answer: what was queued for this chat before it is out."""
    before = len(screen.texts())
    await screen.say(screen.help_word)
    if not await until(lambda: any(t in HELP_TEXTS for t in screen.texts()[before:]), limit):
        raise LostOrDoubled(f"'{screen.help_word}' got no answer within {limit:.0f} s")


async def until(predicate: Callable[[], bool], limit: float) -> bool:
    """Poll a condition the bot brings about over HTTP; False when ``limit`` passes first."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


# ---- kills ---------------------------------------------------------------------------------


class After(StrEnum):
    """What a kill is timed from."""

    COMMIT = "commit"  # the bot's n-th database commit
    REQUEST = "request"  # the bot's n-th request to the messenger API
    HANDOVER = "hand-over"  # the messenger API handing the message to the bot
    START = "start"  # the process starting again


@dataclass(frozen=True, slots=True)
class Kill:
    """When to kill: ``delay`` after the ``count``-th event of a kind, counted from the move
    (a move's first kill) or from the restart (later kills of the same move)."""

    after: After
    count: int = 1
    delay: float = 0.0

    def __str__(self) -> str:
        return f"{self.delay * 1000:.0f} ms after {self.after} {self.count}"


class KillPlan:
    """Which moves get how many kills and when, all drawn up front from one seeded generator.

    A move's first kill falls just after the bot took the message, or after one of the first
    transactions or API requests its handling causes; a further kill of the same move falls in
    the restarted process, while it starts, drains or handles the redelivered message.
    """

    def __init__(self, rng: random.Random, moves: int, kills: int) -> None:
        self.total = kills
        self._plan: dict[int, list[Kill]] = {}
        for index in sorted(rng.randrange(moves) for _ in range(kills)):
            here = self._plan.setdefault(index, [])
            kinds = [After.HANDOVER, After.COMMIT, After.REQUEST]
            if here:
                kinds.append(After.START)
            after = rng.choice(kinds)
            if after is After.START:
                here.append(Kill(after, delay=rng.uniform(0, STARTUP_WINDOW)))
            elif after is After.COMMIT:
                here.append(Kill(after, rng.randint(1, 3)))  # right after it: no delay
            elif after is After.HANDOVER:
                here.append(Kill(after, rng.randint(1, 2), rng.uniform(0, HANDOVER_JITTER)))
            else:
                here.append(Kill(after, rng.randint(1, 2), rng.uniform(0, REQUEST_JITTER)))

    def at(self, move: int) -> list[Kill]:
        """The kills planned while this move is handled."""
        return self._plan.get(move, [])


NO_KILLS = KillPlan(random.Random(0), 1, 0)


class CommitWatch:
    """Counts commits other processes make to the SQLite file, through ``PRAGMA data_version``.

    It reads a counter SQLite keeps for exactly this, never a table; a thread polls it every
    fraction of a millisecond, so a kill can follow a commit before the bot takes its next step.
    """

    def __init__(self, path: Path, on_commit: Callable[[int], None]) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._on_commit = on_commit
        self.commits = 0
        self.last_commit = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="commit-watch", daemon=True)
        self._thread.start()

    def _version(self) -> int:
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def _run(self) -> None:
        seen = self._version()
        while not self._stop.wait(0.0002):
            try:
                version = self._version()
            except sqlite3.Error:
                continue
            if version != seen:
                seen = version
                self.commits += 1
                self.last_commit = time.monotonic()
                self._on_commit(self.commits)

    def close(self) -> None:
        """Stop polling and close the connection."""
        self._stop.set()
        self._thread.join(5)
        self._db.close()


class Tipline:
    """``tipline run`` in a process group of its own; the CLI beside it; kills on cue."""

    def __init__(
        self,
        tmp_path: Path,
        settings: dict[str, str],
        *,
        ready: str,
        context: str,
        consuming_handover: bool,
        handover_imminent: Callable[[], bool],
        delivered: Callable[[], int],
    ) -> None:
        self.cwd = tmp_path  # no .env of the checkout is read
        self.data_dir = tmp_path / "var"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TIPLINE_")}
        path = os.environ.get("PYTHONPATH")
        self.env.update(
            PYTHONPATH=f"{ROOT}{os.pathsep}{path}" if path else str(ROOT),
            TIPLINE_DATA_DIR=str(self.data_dir),
            TIPLINE_ROOT_KEY_FILE=str(self.data_dir / "root.key"),
            TIPLINE_LOG_LEVEL="INFO",
            **settings,
        )
        self.log_path = tmp_path / "tipline.log"
        self.context = context
        self.proc: asyncio.subprocess.Process | None = None
        self.watch: CommitWatch | None = None
        self.kills = 0
        self.events: list[str] = []
        self.last_activity = time.monotonic()  # of requests and hand-overs (commits: the watch)
        self.ready_at = time.monotonic()
        #: What the bot did, as the fakes and the database saw it (failure messages show the end).
        self.trace: deque[str] = deque(maxlen=TRACE_LENGTH)
        self._began = time.monotonic()
        self._ready_request = ready
        self._consuming_handover = consuming_handover
        self._handover_imminent = handover_imminent
        self._delivered = delivered
        #: Index ranges of deliveries the killed process may not have recorded: from the commit
        #: before the last one it was seen to make, to the next process's first request.
        self.in_flight: list[range] = []
        self._in_flight_from: int | None = None
        #: Deliveries the fake had taken when each of the last two commits was seen. The watch
        #: sees a commit a moment late (its thread waits for the GIL that the fakes hold), and the
        #: bot may have sent what that commit decided before then; a send it made after its last
        #: commit it cannot have recorded (DESIGN: "sent again after the restart").
        self._delivered_at_commits: deque[int] = deque([0, 0], maxlen=2)
        self._ready = asyncio.Event()
        self._killed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        # Shared with the commit watch's thread, under the lock.
        self._lock = threading.Lock()
        self._dead = False
        self._commit_target: int | None = None
        self._events_left: tuple[After, int] | None = None  # requests or hand-overs to go
        self._event_delay = 0.0
        self._guard: tuple[int, float] | None = None  # (commits then, when)
        self._sends: deque[tuple[float, int]] = deque(maxlen=64)  # (when, delivery index)
        self._deferred = False

    # ---- processes -------------------------------------------------------------------------

    async def cli(self, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
        """Run a ``tipline`` command; returns exit code, standard output and standard error."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.cli",
            *args,
            env=self.env,
            cwd=self.cwd,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # no terminal: a prompt reads standard input
        )
        try:
            out, err = await asyncio.wait_for(
                proc.communicate((stdin or "").encode()), PROCESS_TIMEOUT
            )
        except TimeoutError:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise AssertionError(f"tipline {' '.join(args)} did not finish") from None
        return proc.returncode or 0, out.decode(), err.decode()

    async def init(self) -> None:
        """``tipline init --dev`` (data directory, development key, keyring, schema), then watch."""
        code, out, err = await self.cli("init", "--dev")
        assert code == 0, f"tipline init failed: {out}{err}"
        self._loop = asyncio.get_running_loop()
        self.watch = CommitWatch(self.data_dir / "tipline.db", self._on_commit)

    async def start(self) -> None:
        """Start ``tipline run`` (stdout and stderr appended to the log)."""
        self._ready.clear()
        self._killed.clear()
        with self._lock:
            self._dead = self._deferred = False
            self._commit_target = self._events_left = self._guard = None
        self.note("start")
        with self.log_path.open("ab") as log:
            log.write(f"--- start after {self.kills} kills ---\n".encode())
            log.flush()
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot.cli",
                "run",
                env=self.env,
                cwd=self.cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # a group of its own: a kill takes any helper along
            )

    async def ready(self) -> None:
        """Wait until the process talks to the messenger API (polls, or has set its webhook)."""
        try:
            await asyncio.wait_for(self._ready.wait(), PROCESS_TIMEOUT)
        except TimeoutError:
            raise AssertionError(f"tipline run never got ready\n{self.describe()}") from None

    async def quiet(self) -> None:
        """Wait until the bot is up and has done nothing for a moment (people read first).

        Its bookkeeping after the last reply (a sent message recorded) or its start-up jobs must
        not make the commit that closes the guard of the next hand-over.
        """
        await self.ready()
        watch = self.watch
        assert watch is not None

        def idle() -> bool:
            now = time.monotonic()
            busy = max(watch.last_commit, self.last_activity)
            return now - busy > QUIET_BEFORE and now - self.ready_at > STARTED_BEFORE

        await until(idle, PROCESS_TIMEOUT)

    async def close(self) -> None:
        """Kill whatever is still running of ours and stop watching."""
        if self._timer is not None:
            self._timer.cancel()
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        if self.watch is not None:
            self.watch.close()

    def logs(self) -> str:
        """Everything the runs wrote to stdout and stderr."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # ---- what the fakes and the database report --------------------------------------------

    def note(self, event: str) -> None:
        """Add an event to the trace (any thread)."""
        self.trace.append(f"{time.monotonic() - self._began:8.3f} {event}")

    def saw(self, request: str) -> None:
        """A request from the bot reached a fake (``receive`` is Signal's receive)."""
        # The first request of the new process closes the window of what the killed one may
        # not have recorded. One that arrives before the restart is the killed process's own,
        # on the wire as it died: it falls inside the window, it does not close it.
        if self._in_flight_from is not None and not self._dead:
            self.in_flight.append(range(self._in_flight_from, self._delivered()))
            self._in_flight_from = None
            with self._lock:
                self._delivered_at_commits.extend([self._delivered()] * 2)
        if request == self._ready_request and not self._ready.is_set():
            self.note(f"ready ({request})")
            self.ready_at = time.monotonic()
            self._ready.set()
        if request == "receive":
            return  # a long poll: waiting, not acting
        self.last_activity = time.monotonic()
        # A send is numbered as the fake will number its delivery, so a failure can tell when
        # each copy of a message went out.
        self.note(f"request {request}" + (f" #{self._delivered()}" if request in SENDS else ""))
        if request in SENDS:
            with self._lock:
                self._sends.append((time.monotonic(), self._delivered()))
            self._guard_until_commit()
        self._count(After.REQUEST)

    def handed_over(self, messages: int) -> None:
        """The API handed messages to the bot; signal-cli forgets them as it does so."""
        self.last_activity = time.monotonic()
        self.note(f"hand-over of {messages}")
        if self._consuming_handover:
            self._guard_until_commit()  # nothing the bot does can save them before it commits
        self._count(After.HANDOVER)

    def _count(self, event: After) -> None:
        with self._lock:
            left = self._events_left
            if left is None or left[0] is not event:
                return
            self._events_left = (event, left[1] - 1) if left[1] > 1 else None
            if self._events_left is not None:
                return
        self._later(self._event_delay)

    def _guard_until_commit(self) -> None:
        assert self.watch is not None
        with self._lock:
            self._guard = (self.watch.commits, time.monotonic())

    def _on_commit(self, commits: int) -> None:  # the watch's thread
        self.note(f"commit {commits}")
        with self._lock:
            self._delivered_at_commits.append(self._delivered())
            target = self._commit_target
            if self._deferred or (target is not None and commits >= target):
                self._commit_target = None
                self._kill_locked()

    # ---- killing -----------------------------------------------------------------------------

    def _later(self, delay: float) -> None:
        assert self._loop is not None
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(delay, self._try_kill)

    def _try_kill(self, *, force: bool = False) -> None:
        with self._lock:
            self._kill_locked(force=force)

    def _kill_locked(self, *, force: bool = False) -> None:
        proc, watch = self.proc, self.watch
        if proc is None or proc.returncode is not None or self._dead or watch is None:
            return
        if not force:
            guard = self._guard
            if (
                guard is not None
                and watch.commits - guard[0] < GUARD_COMMITS
                and time.monotonic() < guard[1] + GUARD_MAX
            ):
                self._deferred = True  # a window no program survives: kill at the next commit
                return
            if self._consuming_handover and self._handover_imminent():
                self._deferred = True  # signal-cli is about to hand a batch over: after that
                return
        self._deferred = False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        now = time.monotonic()
        recent = [index for when, index in self._sends if now - when < RECORD_WINDOW]
        self._in_flight_from = min(self._delivered(), self._delivered_at_commits[0], *recent)
        self.note(f"SIGKILL (deliveries from #{self._in_flight_from} may come twice)")
        self._dead = True
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._killed.set)

    async def kill(self, kill: Kill, move: Move, index: int) -> None:
        """Kill as planned (or once the bot is done with the move), then start again at once."""
        assert self.watch is not None
        with self._lock:
            if kill.after is After.COMMIT:
                self._commit_target = self.watch.commits + kill.count
            elif kill.after is not After.START:
                self._events_left, self._event_delay = (kill.after, kill.count), kill.delay
        if kill.after is After.START:
            self._later(kill.delay)
        began = time.monotonic()
        deadline = began + PROCESS_TIMEOUT
        timed = kill.after is After.START
        fallback = forced = False
        while not self._killed.is_set():
            now = time.monotonic()
            if self._ready.is_set():
                deadline = min(deadline, now + FORCE_KILL_AFTER)
                settled = now - self.watch.last_commit > QUIET
                if not (timed or fallback) and move.done() and settled:
                    fallback = True  # done in fewer steps than drawn: kill in the quiet after
                    self._later(kill.delay)
            if self._deferred:
                self._try_kill()  # the guarded window may have run out without a commit
            if now > deadline:  # the bot went quiet or stuck: kill it anyway
                forced = True
                self._try_kill(force=True)
            await asyncio.sleep(0.002)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        assert self.proc is not None
        try:
            await asyncio.wait_for(self.proc.wait(), PROCESS_TIMEOUT)
        except TimeoutError:
            raise AssertionError(f"tipline run survived SIGKILL\n{self.describe()}") from None
        self.kills += 1
        how = "forced: the bot went quiet" if forced else str(kill)
        how += ", or once settled" if fallback and not forced else ""
        self.events.append(
            f"{time.monotonic() - self._began:7.2f} s  kill {self.kills} ({how}; "
            f"{time.monotonic() - began:.3f} s after it was armed) during move {index}: {move.what}"
        )
        await self.start()

    def flight_windows(self) -> list[range]:
        """Deliveries taken from dying processes (the last window may still be open)."""
        start = self._in_flight_from
        still_open = [] if start is None else [range(start, self._delivered())]
        return [*self.in_flight, *still_open]

    def describe(self) -> str:
        """The run's seed and what happened, for a failure message."""
        kills = "\n  ".join(self.events[-30:]) or "(no kills yet)"
        trace = "\n  ".join(self.trace)
        return f"{self.context}\nkills so far:\n  {kills}\nthe bot's last steps:\n  {trace}"

    # ---- the CLI as an admin uses it ---------------------------------------------------------

    async def open_cases(self) -> list[str]:
        """Rows of ``tipline cases list`` (one per open case)."""
        code, out, err = await self.cli("cases", "list")
        assert code == 0, f"tipline cases list failed: {out}{err}"
        return [line for line in out.splitlines() if line.startswith("#")]

    async def invite_lawyer(self) -> tuple[str, str]:
        """``tipline lawyers invite``: the new lawyer's id and invite code."""
        code, out, err = await self.cli(
            "lawyers", "invite", "--name", "Kill Test", "--languages", "en", "--regions", "all",
            "--on-call",
        )  # fmt: skip
        ids = re.search(r"lawyer (\d+)", out)
        invite = _CODE.search(out)
        assert code == 0 and ids and invite, f"tipline lawyers invite failed: {out}{err}"
        return ids.group(1), invite.group(0)

    async def verify_lawyer(self, lawyer_id: str, phrase: str) -> None:
        """``tipline lawyers verify``: the phrase typed at its prompt (older CLIs: ``--phrase``)."""
        code, out, err = await self.cli("lawyers", "verify", lawyer_id, stdin=phrase + "\n")
        if code == 2 and "--phrase" in err:
            code, out, err = await self.cli("lawyers", "verify", lawyer_id, "--phrase", phrase)
        assert code == 0, f"tipline lawyers verify failed: {out}{err}"


# ---- one messenger, one bot ------------------------------------------------------------------


@dataclass
class Rig:
    """A fake messenger API, ``tipline run`` pointed at it, and the people who use it."""

    mode: str
    tipline: Tipline
    telegram: FakeBotApi | None = None
    signal: FakeSignalApi | None = None
    people: dict[str, Screen] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)

    def person(self, name: str) -> Screen:
        """The chat of the reporter, the lawyer, ... (made on first use)."""
        if name not in self.people:
            if self.telegram is not None:
                chat = 730_150_000 + 101 * (len(self.people) + 1)
                self.people[name] = TelegramScreen(self.telegram, chat)
                self.secrets.append(str(chat))
            else:
                assert self.signal is not None
                who, phone = str(uuid.uuid4()), f"+99450{secrets.randbelow(10**7):07d}"
                self.people[name] = SignalScreen(self.signal, who, phone)
                self.secrets += [who, phone]
        return self.people[name]

    def delivered(self) -> list[str]:
        """Every text the fake took from the bot, in order (a delivery's number is its index)."""
        if self.signal is not None:
            return [m["text"] for m in self.signal.sent]
        if self.telegram is not None:
            return [text for _, _, text in self.telegram.shown]
        return []

    def in_flight(self) -> list[str]:
        """Texts the fake took from a process as it was killed (a send already on the wire)."""
        texts = self.delivered()
        return [texts[i] for window in self.tipline.flight_windows() for i in window]

    def once(self, screen: Screen, fragment: str) -> None:
        """``fragment`` reached the person exactly once; or twice, if one send was on the wire
        when a kill came (the process died before it could record it: any design sends again).
        """
        copies = screen.arrivals(fragment)
        allowed = 2 if any(fragment in text for text in self.in_flight()) else 1
        if not 1 <= copies <= allowed:
            where = [i for i, text in enumerate(self.delivered()) if fragment in text]
            windows = ", ".join(f"#{w.start}-#{w.stop - 1}" for w in self.tipline.flight_windows())
            exactly_once(
                f"'{fragment}' reached the person",
                copies,
                f"deliveries #{where}; allowed twice: {windows or 'none'}\n"
                + self.tipline.describe(),
            )

    def check_logs(self, *more: str) -> None:
        """Logs hold no token, chat id, uuid, phone number or code, and no traceback."""
        logs = self.tipline.logs()
        for secret in [*self.secrets, *more]:
            assert secret not in logs, f"the logs hold a secret ({secret[:3]}...)"
        assert "Traceback" not in logs, logs[-4000:]


class _KilledClients(logging.Filter):
    """Drops aiohttp's report of a request cut off by a killed bot: expected here, not news."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, ConnectionResetError)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.asynccontextmanager
async def rig(mode: str, tmp_path: Path, context: str) -> AsyncIterator[Rig]:
    """Start the fake for ``mode``, ``tipline init --dev`` and ``tipline run`` against it."""
    telegram: FakeBotApi | None = None
    signal_api: FakeSignalApi | None = None
    if mode.startswith("telegram"):
        webhook = mode == "telegram-webhook"
        telegram = FakeBotApi(webhook_retry=webhook)
        root = await telegram.start()
        settings = {"TIPLINE_TELEGRAM_TOKEN": TOKEN, "TIPLINE_TELEGRAM_BASE_URL": root}
        if webhook:
            port = _free_port()
            settings |= {
                "TIPLINE_TELEGRAM_WEBHOOK_URL": f"http://127.0.0.1:{port}/{secrets.token_hex(8)}",
                "TIPLINE_TELEGRAM_WEBHOOK_SECRET": secrets.token_urlsafe(24),
                "TIPLINE_TELEGRAM_WEBHOOK_LISTEN": "127.0.0.1",
                "TIPLINE_TELEGRAM_WEBHOOK_PORT": str(port),
            }
        ready = "setWebhook" if webhook else "getUpdates"
        hidden = [TOKEN, TOKEN.split(":")[1]]
    else:
        signal_api = FakeSignalApi(mode="normal")
        root = await signal_api.start()
        settings = {
            "TIPLINE_SIGNAL_API_URL": root,
            "TIPLINE_SIGNAL_NUMBER": NUMBER,
            "TIPLINE_SIGNAL_MODE": "normal",
        }
        ready, hidden = "receive", [NUMBER]

    def imminent() -> bool:
        return signal_api is not None and bool(signal_api.inbox)

    def delivered() -> int:
        return len(signal_api.sent) if signal_api is not None else len(telegram.shown or [])

    tipline = Tipline(
        tmp_path,
        settings,
        ready=ready,
        context=context,
        consuming_handover=signal_api is not None,
        handover_imminent=imminent,
        delivered=delivered,
    )
    if telegram is not None:
        telegram.on_request = tipline.saw
        telegram.on_handover = tipline.handed_over
    if signal_api is not None:
        signal_api.on_request = lambda method, path: tipline.saw(
            "receive" if path.startswith("/v1/receive/") else f"{method} {path}"
        )
        signal_api.on_handover = tipline.handed_over
    quiet = _KilledClients()
    logging.getLogger("aiohttp.server").addFilter(quiet)
    try:
        await tipline.init()
        await tipline.start()
        yield Rig(mode, tipline, telegram, signal_api, secrets=hidden)
    finally:
        logging.getLogger("aiohttp.server").removeFilter(quiet)
        await tipline.close()
        if telegram is not None:
            await telegram.stop()
        if signal_api is not None:
            await signal_api.stop()


async def play(
    rig_: Rig, moves: list[Move], plan: KillPlan, *, diagnose: Screen | None = None
) -> None:
    """Send each move, kill as planned, and wait (bounded) for the bot's reaction to it."""
    tipline = rig_.tipline
    for index, move in enumerate(moves):
        kills = plan.at(index)
        if kills:
            await tipline.quiet()  # kills land while the bot handles this move, not the last
        tipline.note(f"move {index}: {move.what}")
        await move.act()
        for kill in kills:
            await tipline.kill(kill, move, index)
        if not await until(move.done, STALL_SECONDS):
            found = await _diagnose(diagnose) if diagnose is not None else ""
            raise LostOrDoubled(
                f"move {index} ({move.what}): {move.expect} never came, {STALL_SECONDS:.0f} s "
                f"after the last restart.{found}\n{tipline.describe()}"
            )


async def _diagnose(screen: Screen) -> str:
    """Where the conversation stands: the reporter sends start, as a person would."""
    before = screen.reactions()
    await screen.say(screen.start_word)
    if not await until(lambda: screen.reactions() > before, STALL_SECONDS):
        return f" '{screen.start_word}' got no answer either."
    seen = [screen.reactions()]
    while await until(lambda: screen.reactions() > seen[-1], QUIET * 4):
        seen.append(screen.reactions())  # let the answer finish arriving
    return f" After '{screen.start_word}' the bot asks {screen.asked()}."
