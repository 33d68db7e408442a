"""Three ``tipline run`` processes on one PostgreSQL database behind a round-robin proxy
(DESIGN.md section 10): each chat's answers applied in order, one case per reporter, each
lawyer notice sent once, the audit chain whole, no case number twice."""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from storage.db import make_engine
from storage.models import Case, JobState
from tests.conftest import PG_SKIP_REASON, PG_URL
from tests.kill_harness import (
    EN,
    LostOrDoubled,
    TelegramScreen,
    receipts,
    report_script,
    template_match,
    walk_moves,
)
from tests.multi_harness import Fleet, fleet, ready

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(PG_URL is None, reason=PG_SKIP_REASON),
]

PROCESSES = 3
REPORTERS = 50
#: Reporters who send one answer twice, the two handed over in reverse order.
REVERSED = 10
STALL = 30.0
#: Every process runs the lawyer jobs this often (the shortest the settings allow).
JOB_SECONDS = 5
DIGESTED = 5


def _values(screen: TelegramScreen, key: str, name: str) -> list[str]:
    found = []
    for text in screen.texts():
        values = template_match(key, text)
        if values:
            found.append(values[name])
    return found


async def _lawyer(crew: Fleet, screen: TelegramScreen, name: str) -> None:
    code, out, err = await crew.cli(
        "lawyers", "invite", "--name", name, "--languages", "en", "--regions", "all",
    )  # fmt: skip
    lawyer_id = re.search(r"lawyer (\d+)", out)
    invite = re.search(r"\b[A-Z2-7]{4}(?:-[A-Z2-7]{4}){3}\b", out)
    assert code == 0 and lawyer_id and invite, f"invite failed: {out}{err}"
    await screen.say(f"/register {invite.group(0)}")
    assert await until_true(lambda: bool(_values(screen, "staff.registered", "phrase")))
    phrase = _values(screen, "staff.registered", "phrase")[0]
    code, out, err = await crew.cli("lawyers", "verify", lawyer_id.group(1), stdin=phrase + "\n")
    assert code == 0, f"verify failed: {out}{err}"


async def until_true(predicate: Callable[[], bool], limit: float = STALL) -> bool:
    """Whether the condition came about within ``limit`` seconds (looked at every 50 ms: the
    fake's screens are scanned whole, and 50 people look at once)."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def _walk(crew: Fleet, screen: TelegramScreen, stray: bool) -> None:
    moves = walk_moves(screen, report_script("telegram"))
    assert crew.proxy is not None
    for move in moves:
        act = move.act
        if stray and "held_place" in move.what:
            # The answer sent twice (a double tap), the two handed over newest first: whichever
            # a process applies first, the other must not answer the next question with it.
            crew.proxy.reverse.add(screen.chat)
            await act()
        await act()
        if not await until_true(move.done):
            raise LostOrDoubled(f"chat {screen.chat}: {move.expect} never came ({move.what})")


async def test_three_processes_share_one_database(tmp_path: Path) -> None:
    assert PG_URL is not None
    rng = random.Random(14)
    extra = {
        "TIPLINE_ESCALATION_INTERVAL_SECONDS": str(JOB_SECONDS),
        "TIPLINE_LAWYER_CAP": "1000",
        "TIPLINE_REPORTS_PER_DAY": "3",
    }
    async with fleet(tmp_path, PG_URL, PROCESSES, rng=rng, extra=extra) as crew:
        fake, proxy = crew.telegram, crew.proxy
        assert proxy is not None
        assert await until_true(lambda: ready(fake, PROCESSES), 90), crew.logs()[-3000:]
        lawyers = [TelegramScreen(fake, 880_000_001), TelegramScreen(fake, 880_000_002)]
        await asyncio.gather(*(_lawyer(crew, s, f"Lawyer {i}") for i, s in enumerate(lawyers)))

        proxy.duplicate = 0.2
        reporters = [TelegramScreen(fake, 730_000_000 + 7 * i) for i in range(REPORTERS)]
        strays = set(rng.sample(range(REPORTERS), REVERSED))
        await asyncio.gather(
            *(_walk(crew, screen, i in strays) for i, screen in enumerate(reporters))
        )
        proxy.duplicate = 0.0
        assert proxy.duplicated > 0 and proxy.reversed == REVERSED

        # Exactly one receipt per reporter, one case each, no number twice.
        for screen in reporters:
            assert len(set(receipts(screen))) == 1, screen.texts()[-3:]
        engine = make_engine(PG_URL)
        try:
            async with engine.connect() as conn:
                count = (await conn.execute(select(func.count()).select_from(Case))).scalar()
                numbers = (await conn.execute(select(Case.number))).scalars().all()
            assert count == REPORTERS
            assert len(set(numbers)) == REPORTERS and None not in numbers

            def offers() -> list[str]:
                return [n for s in lawyers for n in _values(s, "staff.case_notice", "number")]

            await until_true(lambda: len(offers()) >= REPORTERS)
            notices = offers()
            assert sorted(notices) == sorted(str(n) for n in numbers), "one offer per case"

            # Time moves on for every process at once, through the database they share: every
            # offer is overdue, every case expires within the warning, and the digest is due
            # with a few documentation-only cases nobody took.
            now = datetime.now(UTC)
            digested = sorted(int(n) for n in numbers)[:DIGESTED]
            async with engine.begin() as conn:
                await conn.execute(
                    update(Case)
                    .where(Case.number.in_(digested))
                    .values(priority=4, status="new", assigned_lawyer_id=None, assigned_at=None)
                )
                await conn.execute(
                    update(Case)
                    .where(Case.number.not_in(digested))
                    # The precise moment is encrypted; without it the hour column counts.
                    .values(assigned_at=now - timedelta(days=3), assigned_ct=None)
                )
                await conn.execute(update(Case).values(expires_at=now + timedelta(days=1)))
                await conn.execute(
                    update(JobState)
                    .where(JobState.name == "digest")
                    .values(last_run=now - timedelta(days=2))
                )
        finally:
            await engine.dispose()

        routed = REPORTERS - DIGESTED

        def counts() -> tuple[int, int, int]:
            offers = sum(len(_values(s, "staff.case_notice", "number")) for s in lawyers)
            warnings = sum(len(_values(s, "staff.expiry_warning", "number")) for s in lawyers)
            digests = sum(len(_values(s, "staff.digest", "numbers")) for s in lawyers)
            return offers - REPORTERS, warnings, digests

        expected = (routed, routed, len(lawyers))
        assert await until_true(lambda: counts() >= expected, 60), counts()
        await asyncio.sleep(1.5 * JOB_SECONDS)  # another round of every process: nothing more
        assert counts() == expected
        escalated = [n for s in lawyers for n in _values(s, "staff.case_notice", "number")]
        assert all(escalated.count(str(n)) == 2 for n in numbers if n not in digested)
        for screen in lawyers:
            (listed,) = _values(screen, "staff.digest", "numbers")
            assert listed == ", ".join(f"#{n}" for n in digested)

        code, out, err = await crew.cli("audit", "verify")
        assert code == 0, f"the audit chain is broken: {out}{err}"
        logs = crew.logs()
        assert "Traceback" not in logs, logs[-4000:]
        assert EN["ui.error"] not in [t for s in reporters for t in s.texts()]
