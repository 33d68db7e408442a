"""Event-loop lag while an operation runs, and a bulk path that seeds many encrypted cases.

The lag meter is a ticker task: it asks to wake every ``tick`` seconds and records how late
each wake-up came. A stretch of synchronous work on the loop (decrypting many rows, building a
large statement) shows as a late wake-up; waiting for the database or a thread does not.

The seeder writes cases exactly as ``SqlCaseStore.add`` encodes them (``case_values``), with
reply addresses, audit entries chained as ``SqlAuditLog.append`` chains them, and the statistics
counters submission increments, in a few large inserts instead of one transaction per case.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import random
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Self

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.domain.engine import Engine
from bot.domain.questionnaire import REPORT
from bot.i18n import load_texts
from bot.services.admin import AdminService
from bot.services.clock import FrozenClock
from bot.services.intake import week_of
from bot.services.ports import NewCase
from storage.audit import GENESIS_MAC, INDEX_AUDIT, Link, floor_hour
from storage.crypto import RecordCipher, WrappedKey
from storage.index import open_index
from storage.keyring import Keyring, KeyVault
from storage.maintenance import Maintenance
from storage.models import AuditEntry, Case, StatCounter
from storage.repositories import case_values, new_id
from tests.world import World

REGIONS = ("baku", "ganja", "sumgait", "other")
SITUATIONS = ("detained_now", "released", "fined", "other")
WHAT = ("beaten", "tested", "phone", "outed", "fined", "threatened")
CHUNK = 2_000


@dataclass
class LagMeter:
    """The largest delay of a ticker's wake-ups while the ``async with`` body runs.

    ``max_lag`` is wall time: what a chat waits, including the time the machine gave to other
    processes. ``max_cpu`` is the event loop thread's CPU time between two wake-ups: the longest
    stretch of work the loop did without a turn for anything else, whatever the machine's load.
    """

    tick: float = 0.002
    max_lag: float = 0.0
    max_cpu: float = 0.0
    #: The loop thread's CPU time over the whole body.
    total_cpu: float = 0.0
    ticks: int = 0
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        cpu = time.thread_time()
        while True:
            due = loop.time() + self.tick
            await asyncio.sleep(self.tick)
            self.max_lag = max(self.max_lag, loop.time() - due)
            now = time.thread_time()
            self.max_cpu = max(self.max_cpu, now - cpu)
            cpu = now
            self.ticks += 1

    async def __aenter__(self) -> Self:
        self.total_cpu = -time.thread_time()
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0)  # let it take its first time
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        await asyncio.sleep(0)  # a wake-up due now is counted
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.total_cpu += time.thread_time()

    @property
    def ms(self) -> float:
        """The largest lag in milliseconds."""
        return self.max_lag * 1000

    @property
    def cpu_ms(self) -> float:
        """The longest stretch of loop work in CPU milliseconds."""
        return self.max_cpu * 1000


@dataclass(frozen=True, slots=True)
class Seeded:
    """What the seeder wrote."""

    cases: int
    #: Chat addresses of the cases with a reply address, in the order written.
    addresses: tuple[str, ...]
    #: How many cases expire at ``expiring_at`` (the rest later).
    expiring: int
    expiring_at: datetime


def _case_rows(
    keyring: Keyring,
    count: int,
    now: datetime,
    reply_every: int,
    expire_every: int,
    rng: random.Random,
) -> tuple[list[dict[str, Any]], list[str], Counter[tuple[date, str, str]]]:
    cipher = RecordCipher(keyring)
    numbers = rng.sample(range(1, max(10 * count, 1000)), count)
    rows: list[dict[str, Any]] = []
    addresses: list[str] = []
    counters: Counter[tuple[date, str, str]] = Counter()
    for i in range(count):
        case_id = new_id()
        created = now - timedelta(days=rng.randrange(365))
        region, situation = rng.choice(REGIONS), rng.choice(SITUATIONS)
        what = rng.sample(WHAT, rng.randrange(1, 3))
        address = f"telegram:{7_000_000_000 + i}" if i % reply_every == 0 else None
        if address is not None:
            addresses.append(address)
        answers = {"situation": situation, "what_happened": what, "own_words": "x" * 300}
        expires = now + (timedelta(days=1) if i % expire_every == 0 else timedelta(days=60))
        rows.append(
            case_values(
                keyring,
                cipher,
                case_id,
                numbers[i],
                NewCase(
                    receipt=os.urandom(10).hex().upper(),
                    priority=rng.randrange(1, 5),
                    status="new",
                    created_on=created.date(),
                    expires_at=expires,
                    answers=answers,
                    meta={"language": "en", "channel": "telegram", "region": region},
                    reply_address=address,
                ),
            )
        )
        week = week_of(created.date())
        for category in ("reports", f"situation.{situation}", *(f"what.{w}" for w in what)):
            counters[(week, region, category)] += 1
    return rows, addresses, counters


def _audit_rows(
    keyring: Keyring, rows: list[dict[str, Any]], now: datetime
) -> list[dict[str, Any]]:
    """One ``case.assign`` entry per case, chained under the current KEK."""
    cipher = RecordCipher(keyring)
    kek_id = keyring.current_kek_id
    out: list[dict[str, Any]] = []
    prev = GENESIS_MAC
    at = floor_hour(now)
    for row in rows:
        dek = cipher.unwrap("cases", row["id"], WrappedKey(row["kek_id"], row["wrapped_dek"]))
        token = open_index(cipher, dek, "cases", row["id"], row["index_ct"])[INDEX_AUDIT]
        link = Link(prev, at, "system", "case.assign", token)
        mac = link.mac(keyring, kek_id)
        out.append(
            {
                "at": at,
                "actor": "system",
                "action": "case.assign",
                "case_token": token,
                "prev_mac": prev,
                "mac": mac,
                "kek_id": kek_id,
            }
        )
        prev = mac
    return out


async def seed_cases(
    engine: AsyncEngine,
    keyring: Keyring,
    count: int,
    now: datetime,
    *,
    reply_every: int = 2,
    expire_every: int = 2,
    seed: int = 14,
) -> Seeded:
    """Write ``count`` encrypted cases (every ``reply_every``-th with a reply address, every
    ``expire_every``-th expiring a day after ``now``), an audit entry each, and their counters."""
    rng = random.Random(seed)
    rows, addresses, counters = await asyncio.to_thread(
        _case_rows, keyring, count, now, reply_every, expire_every, rng
    )
    audit = await asyncio.to_thread(_audit_rows, keyring, rows, now)
    stats = [
        {"week": w, "region": r, "category": c, "count": n} for (w, r, c), n in counters.items()
    ]
    async with engine.begin() as conn:
        for table, values in ((Case, rows), (AuditEntry, audit), (StatCounter, stats)):
            for start in range(0, len(values), CHUNK):
                await conn.execute(insert(table), values[start : start + CHUNK])
    expiring = len(range(0, count, expire_every))
    return Seeded(count, tuple(addresses), expiring, now + timedelta(days=1))


@dataclass(frozen=True, slots=True)
class Measured:
    """One operation: the largest event-loop lag while it ran, and how long it took."""

    name: str
    lag_ms: float
    cpu_ms: float
    total_cpu_ms: float
    seconds: float


async def measure(name: str, operation: Awaitable[object], tick: float = 0.002) -> Measured:
    """Run ``operation`` under a lag meter."""
    loop = asyncio.get_running_loop()
    async with LagMeter(tick) as meter:
        began = loop.time()
        await operation
        took = loop.time() - began
    return Measured(name, meter.ms, meter.cpu_ms, meter.total_cpu * 1000, took)


async def measure_operations(
    engine: AsyncEngine, vault: KeyVault, seeded: Seeded, clock: FrozenClock
) -> list[Measured]:
    """Statistics, a reporter's /forget, the ratchet it asks for, and a purge of the expired
    half, each under a lag meter, as ``tipline run`` wires them."""
    # As ``tipline run`` does at start: what start-up made is out of the cyclic collector's
    # full passes; what unlocking makes (services, catalogs, engine) is not.
    gc.collect()
    gc.freeze()
    maintenance = Maintenance(engine, vault)
    admin = AdminService(maintenance, clock)
    world = World(engine, vault.keyring, Engine(REPORT, load_texts()), clock)
    address = seeded.addresses[len(seeded.addresses) // 2]
    try:
        results = [await measure("statistics", admin.statistics(5))]
        results.append(await measure("/forget", world.say(address, "/forget")))
        clock.advance(timedelta(hours=1))
        results.append(await measure("ratchet", admin.erase_pending()))
        clock.now = seeded.expiring_at + timedelta(hours=1)
        results.append(await measure("purge", admin.purge(job=True)))
    finally:
        gc.unfreeze()
    return results
