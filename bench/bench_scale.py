"""Answers per second with 1, 2 and 3 ``tipline run`` processes on one PostgreSQL database.

Telegram runs in webhook mode: the fake Bot API delivers each update to a round-robin proxy
(the role Caddy plays in deploy/compose.yaml), which hands it to the next process. Simulated
reporters answer in rounds, every reporter at once, one answer each per round (so each chat
stays in order); a round ends when every chat has seen the bot react. CPU is the user and
system time of the tipline processes alone (from /proc), divided by the answers: it should stay
flat as processes are added. The fake and the proxy run in this process; on a 2-core machine
they and the bots share the cores, so the total rate is bounded and the flat cost per answer is
the point.

Run: python bench/bench_scale.py --database-url postgresql+asyncpg://...  (an EMPTY database:
it is reset) [--reporters 40 --rounds 12 --processes 1,2,3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_telegram import ROUNDS
from tests.fake_telegram import FakeBotApi
from tests.multi_harness import Fleet, fleet, ready

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User plus system time of these processes so far."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


class Reactions:
    """Counts the bot's sends and edits per chat as the fake records them."""

    def __init__(self, fake: FakeBotApi) -> None:
        self.fake = fake
        self.seen = 0
        self.per_chat: dict[int, int] = {}

    def update(self) -> None:
        shown = self.fake.shown
        for chat, _, _ in shown[self.seen :]:
            self.per_chat[chat] = self.per_chat.get(chat, 0) + 1
        self.seen = len(shown)


async def act(fake: FakeBotApi, chat: int, kind: str, value: str) -> None:
    """One reporter's answer, delivered through the webhook (and so the proxy)."""
    if kind == "text":
        await fake.text(chat, value)
    else:
        await fake.press(chat, fake.last_question(chat).message_id, value)


async def run(processes: int, reporters: int, rounds: int, url: str) -> tuple[float, float, int]:
    """Seconds, tipline CPU seconds and answers for every reporter giving every answer."""
    with tempfile.TemporaryDirectory() as tmp:
        async with fleet(Path(tmp), url, processes) as crew:
            fake = crew.telegram
            assert fake is not None
            deadline = time.monotonic() + 120
            while not ready(fake, processes):
                if time.monotonic() > deadline:
                    raise SystemExit(f"tipline did not start:\n{crew.logs()[-3000:]}")
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)  # start-up jobs settle
            return await _measure(crew, fake, reporters, rounds)


async def _measure(
    crew: Fleet, fake: FakeBotApi, reporters: int, rounds: int
) -> tuple[float, float, int]:
    pids = [p.pid for p in crew.procs if p is not None]
    chats = [910_000 + i for i in range(reporters)]
    reactions = Reactions(fake)
    cpu_before, began = cpu_seconds(pids), time.perf_counter()
    for kind, value in ROUNDS[:rounds]:
        reactions.update()
        before = {chat: reactions.per_chat.get(chat, 0) for chat in chats}
        await asyncio.gather(*(act(fake, chat, kind, value) for chat in chats))
        limit = time.monotonic() + 120
        while True:
            reactions.update()
            if all(reactions.per_chat.get(c, 0) > before[c] for c in chats):
                break
            if time.monotonic() > limit:
                raise SystemExit(f"a round never finished:\n{crew.logs()[-3000:]}")
            await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - began
    await asyncio.sleep(0.5)  # the round's last deliveries are recorded
    cpu = cpu_seconds(pids) - cpu_before
    if "Traceback" in crew.logs() or " ERROR " in crew.logs():
        raise SystemExit(f"tipline failed:\n{crew.logs()[-3000:]}")
    return elapsed, cpu, reporters * rounds


async def main(url: str, reporters: int, rounds: int, counts: list[int]) -> None:
    print(f"reporters x rounds: {reporters} x {rounds}, PostgreSQL, webhook behind a proxy")
    results = {}
    for n in counts:
        elapsed, cpu, answers = await run(n, reporters, rounds, url)
        results[n] = (answers / elapsed, 1000 * cpu / answers)
        rate, per = results[n]
        label = f"{n} process{'es' if n > 1 else ''}"
        print(f"{label:>11}: {rate:6.1f} answers/s, {per:5.2f} CPU ms/answer")
    first = results[counts[0]][1]
    flat = ", ".join(f"{results[n][1] / first:.2f}" for n in counts)
    print(f"CPU per answer relative to {counts[0]} process: {flat} (flat is the point)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", required=True, help="an EMPTY PostgreSQL database")
    parser.add_argument("--reporters", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=len(ROUNDS))
    parser.add_argument("--processes", default="1,2,3")
    args = parser.parse_args()
    counts = [int(n) for n in args.processes.split(",")]
    asyncio.run(main(args.database_url, args.reporters, min(args.rounds, len(ROUNDS)), counts))
