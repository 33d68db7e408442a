"""Answers per second through the fake signal-cli-rest-api (normal mode), and what the encrypted
inbox costs: the same run handled with the inbox and without it, as a ratio (target <= 1.3).

Run: python bench/bench_signal.py [--reporters 20 --rounds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fake_telegram import until
from tests.signal_harness import SignalHarness

ANSWERS = ["start", "3", "1", "2", "2", "2", "1", "Nasimi", "1,2", "2", "2", "2"]


async def run(use_inbox: bool, reporters: int, rounds: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        harness = SignalHarness(Path(tmp), use_inbox=use_inbox)
        await harness.start_all()
        channel = harness.channel
        assert channel is not None
        uuids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(reporters)]
        began = time.perf_counter()
        for answer in ANSWERS[:rounds]:
            target = channel.handled + reporters
            for uuid in uuids:
                await harness.fake.deliver(harness.fake.envelope(uuid, answer))
            await until(lambda t=target: channel.handled >= t, limit=600)
        elapsed = time.perf_counter() - began
        assert channel.failed == 0
        await harness.stop_all()
    return elapsed


async def main(reporters: int, rounds: int) -> None:
    await run(True, 2, 2)  # warm-up
    without = await run(False, reporters, rounds)
    with_inbox = await run(True, reporters, rounds)
    answers = reporters * rounds
    ratio = with_inbox / without
    print(f"reporters x rounds:           {reporters} x {rounds}")
    print(f"without inbox:                {answers / without:.1f} answers/s")
    print(f"with encrypted inbox (ours):  {answers / with_inbox:.1f} answers/s")
    print(
        f"time ratio inbox / none:      {ratio:.2f} (target <= 1.3) "
        f"{'OK' if ratio <= 1.3 else 'OVER'}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reporters", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=len(ANSWERS))
    args = parser.parse_args()
    asyncio.run(main(args.reporters, min(args.rounds, len(ANSWERS))))
