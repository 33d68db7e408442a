"""CPU per Bot API call for each way PTB can talk HTTP, in one run against the fake Bot API.

PTB's default (httpx), httpx on the httpx-aiohttp transport (when that package is installed),
and tipline's own ``BaseRequest`` on aiohttp (bot/channels/telegram_http.py). Rounds alternate
between them so a busy machine weighs on each alike; the median round is printed. The fake runs
in its own process, so the CPU counted is the client's.

Run: python bench/bench_telegram_http.py [--calls 600 --rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

from telegram import Bot
from telegram.request import BaseRequest, HTTPXRequest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_telegram import RemoteFake
from bot.channels.telegram import CONNECTION_POOL_SIZE, MAX_CONCURRENT_UPDATES
from bot.channels.telegram_http import AiohttpRequest
from tests.fake_telegram import TOKEN

CHAT = 900_001


def clients() -> dict[str, Callable[[], BaseRequest]]:
    """Each way to build the request object, by name."""
    found: dict[str, Callable[[], BaseRequest]] = {
        "httpx (PTB default)": lambda: HTTPXRequest(connection_pool_size=CONNECTION_POOL_SIZE),
        "AiohttpRequest (ours)": lambda: AiohttpRequest(CONNECTION_POOL_SIZE),
    }
    try:
        import httpx
        from httpx_aiohttp import AiohttpTransport
    except ImportError:
        return found

    def transport() -> BaseRequest:
        limits = httpx.Limits(max_connections=CONNECTION_POOL_SIZE)
        return HTTPXRequest(
            connection_pool_size=CONNECTION_POOL_SIZE,
            httpx_kwargs={"transport": AiohttpTransport(limits=limits)},
        )

    found["httpx + httpx-aiohttp"] = transport
    return found


async def measure(root: str, make: Callable[[], BaseRequest], calls: int) -> tuple[float, float]:
    """CPU milliseconds per call and calls per second, sending as the channel does (at once)."""
    bot = Bot(TOKEN, base_url=f"{root}/bot", request=make())
    gate = asyncio.Semaphore(MAX_CONCURRENT_UPDATES)

    async def one() -> None:
        async with gate:
            await bot.send_message(CHAT, "hello")

    async with bot:
        await asyncio.gather(*(one() for _ in range(50)))  # connections open, caches warm
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(one() for _ in range(calls)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return 1000 * cpu / calls, calls / wall


async def main(calls: int, rounds: int) -> None:
    fake = RemoteFake()
    root = fake.start()
    await fake.act([CHAT], "text", "/start")
    makers = clients()
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in makers}
    for _ in range(rounds):
        for name, make in makers.items():
            results[name].append(await measure(root, make, calls))
    await fake.stop()
    for name, runs in results.items():
        cpu = sorted(r[0] for r in runs)[len(runs) // 2]
        rate = sorted(r[1] for r in runs)[len(runs) // 2]
        print(f"{name:24s} {cpu:.3f} ms CPU per call, {rate:.0f} calls/s (medians)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.rounds))
