"""One Signal receiver among processes on one PostgreSQL database (DESIGN.md section 10): the
receiver role is a session advisory lock; when its holder is SIGKILLed another process takes it
over within 10 s, and every message is answered exactly once."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest

from bot.channels.signal import ROLE_RETRY
from tests.conftest import PG_SKIP_REASON, PG_URL
from tests.fake_signal import NUMBER, FakeSignalApi
from tests.kill_harness import EN
from tests.multi_harness import Fleet, fleet

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(PG_URL is None, reason=PG_SKIP_REASON),
]

TAKEN = "signal receiver role taken"
TAKEOVER_LIMIT = 10.0
HELP = EN["ui.help_signal"]


def _holders(crew: Fleet) -> list[int]:
    return [i for i in range(crew.processes) if TAKEN in crew.log(i)]


async def _poll(predicate: object, limit: float) -> bool:
    deadline = time.monotonic() + limit
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_receiver_role_moves_when_its_holder_dies(tmp_path: Path) -> None:
    assert PG_URL is not None
    assert ROLE_RETRY * 2 < TAKEOVER_LIMIT  # a loser looks often enough to take over in time
    fake = FakeSignalApi(mode="normal")
    root = await fake.start()
    extra = {
        "TIPLINE_SIGNAL_API_URL": root,
        "TIPLINE_SIGNAL_NUMBER": NUMBER,
        "TIPLINE_SIGNAL_MODE": "normal",
    }
    people = [str(uuid.uuid4()) for _ in range(8)]

    def answered(who: str) -> int:
        return sum(text.count(HELP) for text in fake.to(who))

    try:
        async with fleet(tmp_path, PG_URL, 2, extra=extra, with_telegram=False) as crew:
            assert await _poll(lambda: len(_holders(crew)) == 1, 90), crew.logs()[-3000:]
            await asyncio.sleep(2 * ROLE_RETRY)  # the other has tried meanwhile, and lost
            (holder,) = _holders(crew)
            other = 1 - holder

            for who in people[:4]:
                await fake.deliver(fake.envelope(who, "help", f"+99450{people.index(who):07d}"))
            assert await _poll(lambda: all(answered(w) == 1 for w in people[:4]), 30)

            crew.kill(holder)
            killed = time.monotonic()
            dead = crew.procs[holder]
            assert dead is not None
            await dead.wait()
            # signal-cli hands a batch to a receive whose client has just died: no program can
            # save those (the kill harness never kills there); give the fake a moment to see
            # the connection gone. Written while nobody receives: they wait for the new one.
            await asyncio.sleep(0.3)
            for who in people[4:]:
                await fake.deliver(fake.envelope(who, "help", f"+99450{people.index(who):07d}"))
            assert await _poll(lambda: TAKEN in crew.log(other), TAKEOVER_LIMIT), (
                f"no takeover within {TAKEOVER_LIMIT:.0f} s\n{crew.log(other)[-2000:]}"
            )
            took = time.monotonic() - killed
            assert took < TAKEOVER_LIMIT
            print(f"signal receiver taken over {took:.2f} s after its holder was killed")
            assert await _poll(lambda: all(answered(w) >= 1 for w in people), 30)
            await asyncio.sleep(1.0)
            assert [answered(w) for w in people] == [1] * len(people)
            assert "Traceback" not in crew.logs()
    finally:
        await fake.stop()
