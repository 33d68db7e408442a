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
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
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


async def run(processes: int, reporters: int, rounds: int, url: str, warm: int = 3) -> Measured:
    """Rates and CPU for every reporter giving every answer, cold and warm."""
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
            return await _measure(crew, fake, reporters, rounds, warm)


@dataclass(frozen=True)
class Measured:
    """Answers per second and tipline CPU ms per answer: warm, and on the cold first pass."""

    rate: float
    cpu: float
    cold_rate: float
    cold_cpu: float


async def _rounds(crew: Fleet, fake: FakeBotApi, chats: list[int], rounds: int) -> None:
    """Every reporter gives every answer, a round at a time."""
    reactions = Reactions(fake)
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


async def _measure(
    crew: Fleet, fake: FakeBotApi, reporters: int, rounds: int, warm: int
) -> Measured:
    pids = [p.pid for p in crew.procs if p is not None]
    passes = []
    # A cold pass (each process opens its pooled connections and prepares its statements as
    # the answers come: one-time costs that grow with the processes), then the same answers
    # from other reporters, warm, ``warm`` times: the steady cost of an answer is the median
    # pass's (this machine's speed drifts by half within seconds).
    for first_chat in range(900_000, 900_000 + (warm + 1) * 10_000, 10_000):
        chats = [first_chat + i for i in range(reporters)]
        cpu_before, began = cpu_seconds(pids), time.perf_counter()
        await _rounds(crew, fake, chats, rounds)
        elapsed = time.perf_counter() - began
        await asyncio.sleep(0.5)  # the round's last deliveries are recorded
        passes.append((elapsed, cpu_seconds(pids) - cpu_before))
    if "Traceback" in crew.logs() or " ERROR " in crew.logs():
        raise SystemExit(f"tipline failed:\n{crew.logs()[-3000:]}")
    answers = reporters * rounds
    (cold, cold_cpu), *warm_passes = passes
    elapsed = statistics.median(seconds for seconds, _ in warm_passes)
    cpu = statistics.median(used for _, used in warm_passes)
    return Measured(
        answers / elapsed, 1000 * cpu / answers, answers / cold, 1000 * cold_cpu / answers
    )


async def main(url: str, reporters: int, rounds: int, counts: list[int], warm: int = 3) -> None:
    print(f"reporters x rounds: {reporters} x {rounds}, PostgreSQL, webhook behind a proxy")
    results = {}
    for n in counts:
        results[n] = m = await run(n, reporters, rounds, url, warm)
        label = f"{n} process{'es' if n > 1 else ''}"
        print(
            f"{label:>11}: {m.rate:6.1f} answers/s, {m.cpu:5.2f} CPU ms/answer warm "
            f"(median of {warm}; cold first pass: {m.cold_rate:6.1f} answers/s, "
            f"{m.cold_cpu:5.2f} ms)"
        )
    base = results[counts[0]]
    warm = ", ".join(f"{results[n].cpu / base.cpu:.2f}" for n in counts)
    cold = ", ".join(f"{results[n].cold_cpu / base.cold_cpu:.2f}" for n in counts)
    print(f"CPU per answer relative to {counts[0]} process: {warm} warm; {cold} cold")
    print("(flat is the point: the warm pass is the steady cost of an answer)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", required=True, help="an EMPTY PostgreSQL database")
    parser.add_argument("--reporters", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=len(ROUNDS))
    parser.add_argument("--processes", default="1,2,3")
    parser.add_argument("--warm", type=int, default=3, help="warm passes (median reported)")
    args = parser.parse_args()
    counts = [int(n) for n in args.processes.split(",")]
    rounds = min(args.rounds, len(ROUNDS))
    asyncio.run(main(args.database_url, args.reporters, rounds, counts, max(1, args.warm)))
