"""Rotation and purge with 100,000 cases on SQLite, each against a bare baseline in one run.

- Rotation: ``Maintenance.rotate`` (new KEK, every DEK unwrapped and re-wrapped and every
  receipt lookup re-keyed from the inner hash in the row's ciphertext, in batches; old KEK
  destroyed) against a bare rewrite of the same rows' key and lookup columns in the same batches
  (same SELECT, same UPDATE by primary key, no crypto).
- Purge: the deletion part of ``Maintenance.purge`` on half of the rows (each deleted case's
  audit token noted as gone) against a bare ``DELETE`` of the same rows (the ratchet that
  follows a purge is a rotation: first figure).

Each side runs on its own copy of the same database file; purge runs three such pairs (median
ratio). Run: python bench/bench_keys.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from storage import migrate
from storage.crypto import RecordCipher
from storage.db import make_engine, make_session_factory
from storage.index import CASE_RECEIPT, seal_index
from storage.keyring import KeyFile, KeyringFile, KeyVault
from storage.maintenance import Maintenance
from storage.models import Case
from storage.repositories import new_id

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
BATCH = 500


def url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


async def build(path: Path, vault: KeyVault, count: int) -> None:
    engine = make_engine(url(path))
    await migrate.upgrade(engine)
    cipher = RecordCipher(vault.keyring)
    answers = b'{"own_words":"' + b"x" * 400 + b'"}'
    rows: list[dict[str, Any]] = []
    for i in range(count):
        case_id = new_id()
        dek, wrapped = cipher.new_dek("cases", case_id)
        # As SqlCaseStore.add writes it: the lookup column under the KEK's index key, the
        # receipt's inner hash and the audit token inside the ciphertext.
        inner = vault.keyring.receipt_hash(os.urandom(10).hex())
        index = {"receipt": inner.hex(), "audit": os.urandom(12).hex()}
        rows.append(
            {
                "id": case_id,
                "created_on": NOW.date(),
                "priority": 3,
                "status": "new",
                # half expire tomorrow, half in 60 days
                "expires_at": NOW + timedelta(days=1 if i % 2 else 60),
                "kek_id": wrapped.kek_id,
                "wrapped_dek": wrapped.wrapped,
                "receipt_hash": CASE_RECEIPT.value(vault.keyring, inner),
                "index_ct": seal_index(cipher, dek, "cases", case_id, index),
                "answers_ct": cipher.encrypt(dek, "cases", case_id, "answers", answers),
                "meta_ct": cipher.encrypt(dek, "cases", case_id, "meta", b'{"region":"baku"}'),
                "reply_address_ct": None,
            }
        )
    async with engine.begin() as conn:
        for start in range(0, count, 5000):
            await conn.execute(insert(Case), rows[start : start + 5000])
    await engine.dispose()  # checkpoints the WAL into the file


async def bare_rotation(engine: AsyncEngine, new_kek: int) -> None:
    sessions = make_session_factory(engine)
    while True:
        async with sessions() as session, session.begin():
            query = (
                select(Case.id, Case.kek_id, Case.wrapped_dek, Case.index_ct)
                .where(Case.kek_id != new_kek)
                .order_by(Case.id)
                .limit(BATCH)
            )
            rows = (await session.execute(query)).all()
            if not rows:
                return
            await session.execute(
                update(Case),
                [
                    {
                        "id": r.id,
                        "kek_id": new_kek,
                        "wrapped_dek": r.wrapped_dek,
                        "receipt_hash": r.wrapped_dek[:32],
                    }
                    for r in rows
                ],
            )


async def timed(coro: Any) -> float:
    began = time.perf_counter()
    await coro
    return time.perf_counter() - began


#: Purge pairs (ours, then the bare DELETE) measured; the median ratio is reported.
PURGE_PAIRS = 3


async def purge_pair(base: Path, vault: KeyVault) -> tuple[float, float]:
    """Seconds for ``delete_expired`` and for a bare DELETE of the same cases, on fresh copies."""
    later = NOW + timedelta(days=2)
    for name in ("ours-purge", "bare-purge"):
        shutil.copy(base / "seed.db", base / f"{name}.db")
    ours = make_engine(url(base / "ours-purge.db"))
    t_ours = await timed(Maintenance(ours, vault, batch_size=BATCH).delete_expired(later))
    await ours.dispose()
    bare = make_engine(url(base / "bare-purge.db"))

    async def bare_delete() -> None:
        async with bare.begin() as conn:
            await conn.execute(delete(Case).where(Case.expires_at <= later))

    t_bare = await timed(bare_delete())
    await bare.dispose()
    return t_ours, t_bare


async def main(count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        secret = KeyFile(os.urandom(32))
        vault = KeyVault.create(KeyringFile(base / "keyring"), secret, None, NOW)
        print(f"building {count:,} encrypted cases ...", flush=True)
        await build(base / "seed.db", vault, count)
        for name in ("ours", "bare"):
            shutil.copy(base / "seed.db", base / f"{name}.db")
        shutil.copy(base / "keyring", base / "keyring.seed")

        ours = make_engine(url(base / "ours.db"))
        t_rotate = await timed(Maintenance(ours, vault, batch_size=BATCH).rotate(NOW))
        await ours.dispose()
        bare = make_engine(url(base / "bare.db"))
        t_bare_rotate = await timed(bare_rotation(bare, 2))
        await bare.dispose()

        # Purge takes a few seconds: three pairs, each on fresh copies, and the median ratio (the
        # machine's speed drifts by a tenth between two such runs, about the target's margin).
        purges: list[tuple[float, float]] = []
        for _ in range(PURGE_PAIRS):
            shutil.copy(base / "keyring.seed", base / "keyring")
            vault = KeyringFile(base / "keyring").open(secret)
            purges.append(await purge_pair(base, vault))

    r_rotate = t_rotate / t_bare_rotate
    t_purge, t_bare_purge = (statistics.median(t) for t in zip(*purges, strict=True))
    ratios = sorted(ours_s / bare_s for ours_s, bare_s in purges)
    r_purge = statistics.median(ratios)
    print(
        f"rotation of {count:,} cases:   {t_rotate:.2f} s; bare key-column rewrite "
        f"{t_bare_rotate:.2f} s; ratio {r_rotate:.2f}x (target <= 3x) "
        f"{'OK' if r_rotate <= 3 else 'OVER'}"
    )
    print(
        f"purge of {count // 2:,} cases:      {t_purge:.2f} s; bare DELETE {t_bare_purge:.2f} s; "
        f"ratio {r_purge:.2f}x (median of {', '.join(f'{r:.2f}' for r in ratios)}; "
        f"target <= 2x) {'OK' if r_purge <= 2 else 'OVER'}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=100_000)
    args = parser.parse_args()
    asyncio.run(main(args.cases))
