"""Case numbers are short, random, never two live cases alike, and never given out again while
held (two retention ceilings from submission), across purges: on memory, SQLite and
PostgreSQL, with hypothesis choosing the submissions, lifetimes and purges."""

from __future__ import annotations

import random
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.services.ports import CaseStatus, NewCase, StaffUnitOfWork
from storage import migrate
from storage.db import is_sqlite, make_engine, make_session_factory
from storage.keyring import KeyFile, KeyringFile, KeyVault
from storage.maintenance import Maintenance
from storage.memory import MemoryDatabase
from storage.numbers import CaseNumbering
from storage.repositories import SqlUnitOfWork
from tests.conftest import BACKENDS, START, backend_url, reset_postgres

HOLD = timedelta(days=20)
Op = tuple[str, int, int]
ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 6), st.integers(1, 15)),
        st.tuples(st.just("purge"), st.integers(0, 9), st.just(0)),
    ),
    min_size=5,
    max_size=40,
)


class Store:
    """A unit-of-work factory and a purge, on one backend."""

    def __init__(self, uow: object, purge: object) -> None:
        self.uow, self.purge = uow, purge


@asynccontextmanager
async def store(backend: str, numbering: CaseNumbering) -> AsyncIterator[Store]:
    if backend == "memory":
        db = MemoryDatabase(numbering)

        async def purge_memory(now: object) -> None:
            for case_id, case in list(db.state.cases.items()):
                if case.record.expires_at <= now:  # type: ignore[operator]
                    del db.state.cases[case_id]

        yield Store(db.uow, purge_memory)
        return
    with tempfile.TemporaryDirectory() as tmp:
        url = backend_url(backend, Path(tmp))
        engine = make_engine(url)
        if not is_sqlite(url):
            await reset_postgres(engine)
        await migrate.upgrade(engine)
        vault = KeyVault.create(KeyringFile(Path(tmp) / "keyring"), KeyFile(bytes(32)), None, START)
        sessions = make_session_factory(engine)
        maintenance = Maintenance(engine, vault)
        try:
            yield Store(
                lambda: SqlUnitOfWork(sessions, vault.keyring, numbering=numbering),
                maintenance.delete_expired,
            )
        finally:
            if not is_sqlite(url):
                await reset_postgres(engine)
            await engine.dispose()


async def walk(backend: str, steps: list[Op], seed: int) -> None:
    rng = random.Random(seed)
    # A draw from three numbers of each band: collisions and wider bands are common.
    numbering = CaseNumbering(hold=HOLD, draw=lambda low, high: low + rng.randrange(3))
    issued: dict[int, list] = {}
    now = START
    async with store(backend, numbering) as s:
        for kind, days, life in steps:
            now += timedelta(days=days)
            if kind == "purge":
                await s.purge(now)  # type: ignore[operator]
                continue
            uow: StaffUnitOfWork
            async with s.uow() as uow:  # type: ignore[operator]
                live = {c.number for c in await uow.assignments.all_open()}
                case_id = await uow.cases.add(
                    NewCase(
                        receipt=f"R{rng.getrandbits(64):016X}",
                        priority=3,
                        status=CaseStatus.NEW,
                        created_on=now.date(),
                        expires_at=now + timedelta(days=life),
                        answers={},
                        meta={},
                        reply_address=None,
                    )
                )
                record = await uow.assignments.by_id(case_id)
                await uow.commit()
            assert record is not None
            number = record.number
            assert number not in live, "two live cases alike"
            assert len(str(number)) >= 4, "short, but never a count"
            for earlier in issued.get(number, []):
                assert now.date() - earlier >= HOLD, f"#{number} reused within its hold"
            issued.setdefault(number, []).append(now.date())


@pytest.mark.parametrize("backend", [pytest.param("memory", id="memory"), *BACKENDS])
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=ops, seed=st.integers(0, 2**32))
async def test_no_number_is_reused_while_live_or_held(
    backend: str, steps: list[Op], seed: int
) -> None:
    await walk(backend, steps, seed)
