"""Issue 10, "Kill test": SIGKILL ``tipline run`` at random moments; nothing lost, nothing doubled.

Over each fake (Telegram polling, Telegram webhook, Signal normal mode) the real console script
runs in a subprocess and is killed 20 times while a reporter walks the whole questionnaire, and
again while a lawyer accepts the case and writes to the reporter. Each kill is followed by an
immediate restart. Every question must reach the reporter, in order, within a bound; exactly one
receipt code and one case must come of it; every lawyer message must arrive exactly once.

The kill moments come from a seeded generator; a failure prints the seed, and
``TIPLINE_KILL_SEED=<seed>`` replays the same plan (timings of real processes still vary).
Deselect with ``-m "not slow"``.
"""

from __future__ import annotations

import random
import secrets
from pathlib import Path

import pytest

from tests.kill_harness import (
    EN,
    NO_KILLS,
    KillPlan,
    LostMessage,
    Move,
    Screen,
    barrier,
    kill_seed,
    play,
    receipts,
    report_script,
    rig,
    template_match,
    until,
    walk_moves,
)

pytestmark = pytest.mark.slow

#: Kills per channel while the reporter walks the questionnaire (the issue asks for 20).
WALK_KILLS = 20
#: Kills while the lawyer accepts and replies (on top of the walk's 20).
LAWYER_KILLS = 6
LAWYER_MESSAGES = 3

SEED = kill_seed()

#: Modes that lose messages today; the outbox of issue 10 is meant to fix them.
NOT_YET = pytest.mark.xfail(strict=True, raises=LostMessage, reason="outbox not yet landed")

WALK_MODES = [
    pytest.param("telegram-polling", marks=NOT_YET),
    pytest.param("telegram-webhook", marks=NOT_YET),
    pytest.param("signal", marks=NOT_YET),
]
LAWYER_MODES = [
    pytest.param("telegram-polling", marks=NOT_YET),
    pytest.param("telegram-webhook", marks=NOT_YET),
    pytest.param("signal", marks=NOT_YET),
]


def _context(test: str, mode: str) -> str:
    return f"{test}[{mode}]: replay with TIPLINE_KILL_SEED={SEED}"


@pytest.mark.parametrize("mode", WALK_MODES)
async def test_reporter_walk_survives_kills(mode: str, tmp_path: Path) -> None:
    """20 kills during a whole report: every question shown in order, one receipt, one case."""
    rng = random.Random(f"{SEED}:walk:{mode}")
    async with rig(mode, tmp_path, _context("walk", mode)) as r:
        reporter = r.person("reporter")
        moves = walk_moves(reporter, report_script(reporter.channel))
        await play(r, moves, KillPlan(rng, len(moves), WALK_KILLS), diagnose=reporter)
        await barrier(reporter)  # anything still queued for the reporter has gone out now
        codes = receipts(reporter)
        assert len(set(codes)) == 1, f"receipt codes {codes}\n{r.tipline.describe()}"
        cases = await r.tipline.open_cases()
        assert len(cases) == 1, f"cases stored: {cases}\n{r.tipline.describe()}"
        assert r.tipline.kills == WALK_KILLS
        await r.tipline.stop()
        r.check_logs(codes[0], codes[0].replace("-", ""))


@pytest.mark.parametrize("mode", LAWYER_MODES)
async def test_lawyer_messages_survive_kills(mode: str, tmp_path: Path) -> None:
    """Kills while a lawyer accepts and replies: each message reaches the reporter exactly once."""
    rng = random.Random(f"{SEED}:lawyer:{mode}")
    async with rig(mode, tmp_path, _context("lawyer", mode)) as r:
        reporter, lawyer = r.person("reporter"), r.person("lawyer")
        lawyer_id, invite = await r.tipline.invite_lawyer()
        await lawyer.say(f"/register {invite}")
        phrase = await _wait_for(lawyer, "staff.registered", "phrase")
        await r.tipline.verify_lawyer(lawyer_id, phrase)

        await play(r, walk_moves(reporter, report_script(reporter.channel)), NO_KILLS)
        number = await _wait_for(lawyer, "staff.case_notice", "number")

        notes = [f"Lawyer note {i} {secrets.token_hex(4)}" for i in range(1, LAWYER_MESSAGES + 1)]
        moves = _lawyer_moves(lawyer, reporter, number, notes)
        await play(r, moves, KillPlan(rng, len(moves), LAWYER_KILLS))
        await barrier(reporter)

        arrived = reporter.texts()
        for note in notes:
            copies = arrived.count(EN["ui.lawyer_message"].format(text=note))
            assert copies == 1, (
                f"'{note}' reached the reporter {copies} times\n{r.tipline.describe()}"
            )
        cases = await r.tipline.open_cases()
        assert len(cases) == 1 and "accepted" in cases[0], f"cases: {cases}"
        assert r.tipline.kills == LAWYER_KILLS
        await r.tipline.stop()
        r.check_logs(invite, phrase, *receipts(reporter))


def _lawyer_moves(lawyer: Screen, reporter: Screen, number: str, notes: list[str]) -> list[Move]:
    """Accept the case, then write each note to the reporter and wait until it is confirmed."""
    accepted = EN["staff.accepted"].format(number=number)
    delivered = EN["staff.reply_delivered"].format(number=number)
    moves = [
        Move(
            f"/accept {number}",
            lambda: lawyer.say(f"/accept {number}"),
            lambda: accepted in lawyer.texts(),
            "the lawyer's confirmation that the case is theirs",
        )
    ]
    for i, note in enumerate(notes, start=1):
        shown = EN["ui.lawyer_message"].format(text=note)
        moves.append(
            Move(
                f"/reply {number} <note {i}>",
                lambda note=note: lawyer.say(f"/reply {number} {note}"),
                lambda shown=shown, i=i: (
                    shown in reporter.texts() and lawyer.texts().count(delivered) >= i
                ),
                f"note {i} at the reporter and its delivery confirmed to the lawyer",
            )
        )
    return moves


async def _wait_for(screen: Screen, key: str, placeholder: str) -> str:
    """The value the bot filled into catalog text ``key`` in a message to this person."""

    def found() -> str | None:
        for text in screen.texts():
            values = template_match(key, text)
            if values:
                return values[placeholder]
        return None

    if not await until(lambda: found() is not None, 30):
        raise LostMessage(f"no '{key}' message arrived; got {screen.texts()[-3:]}")
    value = found()
    assert value is not None
    return value
