"""Event-loop lag during statistics, /forget, the ratchet and purge, at 100,000 cases.

A ticker task on the same event loop asks to wake every 2 ms while each operation runs; the
figure is its latest wake-up, i.e. the longest stretch the loop could serve no chat. Target:
under 50 ms for each operation (issue 14). Beside it, the loop thread's CPU time between two
wake-ups (the same stretch without the time a loaded machine gave to other processes), and
the loop's CPU time over the whole operation.

The cases are seeded encrypted (every second one with a reply address, every second one
expiring), with an audit entry each and their statistics counters; then, as ``tipline run``
wires them: ``tipline stats`` cells, a reporter's /forget, the ratchet it schedules, and a
purge of the expired half (deletion, audit pruning, ratchet).

Run: python bench/bench_stall.py [--cases N] [--database-url postgresql+asyncpg://...]
(the PostgreSQL database is emptied first).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.services.clock import FrozenClock
from storage import migrate
from storage.db import is_sqlite, make_engine
from storage.keyring import KeyFile, KeyringFile, KeyVault
from tests.conftest import reset_postgres
from tests.stall import measure_operations, seed_cases

NOW = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
TARGET_MS = 50.0


async def main(count: int, database_url: str | None) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        url = database_url or f"sqlite+aiosqlite:///{base / 'tipline.db'}"
        engine = make_engine(url)
        if not is_sqlite(url):
            await reset_postgres(engine)
        await migrate.upgrade(engine)
        vault = KeyVault.create(KeyringFile(base / "keyring"), KeyFile(os.urandom(32)), None, NOW)
        backend = "SQLite" if is_sqlite(url) else "PostgreSQL"
        print(f"seeding {count:,} encrypted cases on {backend} ...", flush=True)
        began = time.perf_counter()
        seeded = await seed_cases(engine, vault.keyring, count, NOW)
        print(f"  seeded in {time.perf_counter() - began:.1f} s", flush=True)
        try:
            results = await measure_operations(engine, vault, seeded, FrozenClock(NOW))
        finally:
            if not is_sqlite(url):
                await reset_postgres(engine)
            await engine.dispose()
    ok = True
    for r in results:
        fine = r.lag_ms < TARGET_MS
        ok = ok and fine
        print(
            f"{r.name:<11} {backend:<10} {count:>7,} cases: max loop lag {r.lag_ms:7.1f} ms "
            f"(target < {TARGET_MS:.0f} ms) {'OK' if fine else 'OVER'}; longest loop work "
            f"{r.cpu_ms:6.1f} of {r.total_cpu_ms:8.1f} CPU ms; took {r.seconds:.2f} s"
        )
    return ok


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    raise SystemExit(0 if asyncio.run(main(args.cases, args.database_url)) else 1)
