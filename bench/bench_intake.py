"""Encrypted intake against a plaintext baseline, measured in one run on the same machine.

Both sides run the same inbound path (one grammar, the intake service and questionnaire engine,
the answers written to the outbox) with the same storage pattern (one SQLAlchemy transaction per
answer on the same SQLite settings, the statements every answer runs as plain sqlite3 calls as
storage/raw.py runs ours); the baseline's unit of work stores chat ids, answers and
outbox items as plaintext rows, ours encrypts them. Delivery is not measured (bench_telegram
does that). Run: python bench/bench_intake.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from types import TracebackType
from typing import Any, Self

from sqlalchemy import (
    Column,
    Date,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    insert,
    update,
)
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.domain.engine import Engine
from bot.domain.messages import Start
from bot.domain.questionnaire import REPORT
from bot.i18n import load_texts
from bot.services.clock import FrozenClock
from bot.services.inbound import Inbound, InboundService
from bot.services.intake import IntakeService
from bot.services.ports import NewCase, OutboxEntry
from bot.services.routing import Routing
from bot.services.staff import StaffCommands
from storage import migrate
from storage.db import make_engine, make_session_factory
from storage.keyring import Keyring
from storage.raw import Raw, Sql
from storage.repositories import SqlUnitOfWork, new_id

ANSWERS = {
    "language": "3",
    "consent": "1",
    "about": "1",
    "situation": "2",
    "when": "2",
    "city": "1",
    "district": "Nasimi district, near the metro",
    "what_happened": "1,2,5",
    "injured": "2",
    "under18": "2",
    "needs_lawyer": "2",
    "own_words": "They came to the flat at night and took us to the station. " * 8,
    "documents": "1",
    "contact": "1",
    "review": "1",
}

plain = MetaData()
plain_drafts = Table(
    "plain_drafts",
    plain,
    Column("id", String(32), primary_key=True),
    Column("chat", String(128), unique=True),
    Column("expires_at", String(40)),
    Column("state", Text),
)
plain_cases = Table(
    "plain_cases",
    plain,
    Column("id", String(32), primary_key=True),
    Column("receipt", String(32), unique=True),
    Column("priority", Integer),
    Column("status", String(16)),
    Column("created_on", Date),
    Column("expires_at", String(40)),
    Column("answers", Text),
    Column("meta", Text),
    Column("reply_address", Text),
)
plain_seen = Table(
    "plain_seen",
    plain,
    Column("key", String(200), primary_key=True),
    Column("expires_at", String(40)),
)
plain_outbox = Table(
    "plain_outbox",
    plain,
    Column("id", String(40), primary_key=True),
    Column("channel", String(16)),
    Column("chat", String(128)),
    Column("due_at", String(40)),
    Column("payload", Text),
)
plain_stats = Table(
    "plain_stats",
    plain,
    Column("week", Date, primary_key=True),
    Column("region", String(16), primary_key=True),
    Column("category", String(48), primary_key=True),
    Column("count", Integer),
)

# The statements every answer runs, plain on both sides as ours are (storage/raw.py).
_LOAD = Sql.of("SELECT state, expires_at FROM plain_drafts WHERE chat = ?")
_SAVE = Sql.of("UPDATE plain_drafts SET state = ?, expires_at = ? WHERE chat = ?")
_CLAIM = Sql.of('INSERT INTO plain_seen ("key", expires_at) VALUES (?, ?) ON CONFLICT DO NOTHING')
_PUT = Sql.of(
    "INSERT INTO plain_outbox (id, channel, chat, due_at, payload) VALUES (?, ?, ?, ?, ?)"
)


class PlainUnitOfWork:
    """The baseline: the same repository calls, plaintext rows, no keys."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def __aenter__(self) -> Self:
        self.session = self._sessions()
        await self.session.connection()  # begins, as ours does with its key check
        self.raw = Raw.over(self.session)
        self.drafts = self
        self.cases = self
        self.stats = self
        self.audit = self
        self.outbox = self
        self.seen = self
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.session.close()

    async def commit(self) -> None:
        await self.session.commit()

    async def claim_turn(
        self, channel: str, chat_id: str, update_id: str, expires_at: datetime
    ) -> bool:
        return await self.claim(channel, update_id, expires_at)

    def locking(self, channel: str, chat_id: str) -> Self:
        return self  # SQLite: one writer, as ours

    async def load(self, channel: str, chat_id: str, now: datetime) -> dict[str, Any] | None:
        rows = await self.raw.rows(_LOAD, f"{channel}:{chat_id}")
        return dict(json.loads(rows[0][0])) if rows else None

    async def save(
        self, channel: str, chat_id: str, state: Mapping[str, Any], expires_at: datetime
    ) -> None:
        chat, values = f"{channel}:{chat_id}", (json.dumps(state), expires_at.isoformat())
        if not await self.raw.run(_SAVE, *values, chat):
            await self.session.execute(
                insert(plain_drafts).values(
                    id=new_id(), chat=chat, state=values[0], expires_at=values[1]
                )
            )

    async def delete(self, channel: str, chat_id: str) -> bool:
        result = await self.session.execute(
            delete(plain_drafts).where(plain_drafts.c.chat == f"{channel}:{chat_id}")
        )
        return bool(getattr(result, "rowcount", 0))

    async def add(self, case: NewCase) -> str:
        case_id = new_id()
        await self.session.execute(
            insert(plain_cases).values(
                id=case_id,
                receipt=case.receipt,
                priority=case.priority,
                status=case.status,
                created_on=case.created_on,
                expires_at=case.expires_at.isoformat(),
                answers=json.dumps(case.answers),
                meta=json.dumps(case.meta),
                reply_address=case.reply_address,
            )
        )
        return case_id

    async def status_by_receipt(self, receipt: str) -> str | None:
        return None

    async def increment(self, week: date, region: str, categories: Iterable[str]) -> None:
        for category in categories:
            key = (
                (plain_stats.c.week == week)
                & (plain_stats.c.region == region)
                & (plain_stats.c.category == category)
            )
            result = await self.session.execute(
                update(plain_stats).where(key).values(count=plain_stats.c.count + 1)
            )
            if not getattr(result, "rowcount", 0):
                await self.session.execute(
                    insert(plain_stats).values(week=week, region=region, category=category, count=1)
                )

    async def append(self, actor: str, action: str, case_id: str | None, at: datetime) -> None:
        return None

    async def claim(self, channel: str, update_id: str, expires_at: datetime) -> bool:
        return await self.raw.run(_CLAIM, f"{channel}:{update_id}", expires_at.isoformat()) == 1

    async def put_many(
        self,
        items: list[tuple[str, str, Mapping[str, Any]]],
        now: datetime,
        expires_at: datetime,
    ) -> list[OutboxEntry]:
        entries, rows = [], []
        for channel, chat, payload in items:
            item_id = new_id()
            body = dict(payload, to=chat)
            rows.append((item_id, channel, chat, now.isoformat(), json.dumps(body)))
            entries.append(OutboxEntry(item_id, channel, chat, body, 0, now))
        await self.raw.run_many(_PUT, rows)
        return entries


async def one_report(service: InboundService, chat: str) -> None:
    handled = await service.handle(Inbound("bench", chat, event=Start("en"), numbered=True))
    for _ in range(40):
        shown = handled.entries[-1].payload["messages"] if handled.entries else []
        questions = [m for m in shown if m.get("k") == "q"]
        if not questions:
            return
        text = ANSWERS[str(questions[-1]["step"])]
        handled = await service.handle(Inbound("bench", chat, text=text, numbered=True))
    raise RuntimeError("report did not finish")


async def timed(service: InboundService, start: int, count: int) -> float:
    began = time.perf_counter()
    for i in range(start, start + count):
        await one_report(service, f"chat-{i}")
    return time.perf_counter() - began


def inbound(uow: Any, engine: Engine, clock: FrozenClock) -> InboundService:
    """The inbound path as ``tipline run`` wires it, without lawyers to route to."""
    routing = Routing(uow, engine.texts, clock)
    intake = IntakeService(engine, reports_per_day=10**9)
    return InboundService(uow, intake, StaffCommands(engine.texts, routing), engine, clock)


async def main(reports: int, block: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ours_db: AsyncEngine = make_engine(f"sqlite+aiosqlite:///{tmp}/ours.db")
        base_db: AsyncEngine = make_engine(f"sqlite+aiosqlite:///{tmp}/plain.db")
        await migrate.upgrade(ours_db)
        async with base_db.begin() as conn:
            await conn.run_sync(plain.create_all)
        clock = FrozenClock(datetime(2026, 11, 2, 9, 0, tzinfo=UTC))
        engine = Engine(REPORT, load_texts())
        keyring = Keyring.generate(clock())
        ours_sessions = make_session_factory(ours_db)
        base_sessions = make_session_factory(base_db)
        ours = inbound(lambda: SqlUnitOfWork(ours_sessions, keyring), engine, clock)
        base = inbound(lambda: PlainUnitOfWork(base_sessions), engine, clock)
        await timed(ours, -20, 20)  # warm-up: imports, statement caches
        await timed(base, -20, 20)
        t_ours = t_base = 0.0
        # Alternate blocks so drift in the machine's load hits both sides alike.
        for start in range(0, reports, block):
            n = min(block, reports - start)
            t_base += await timed(base, start, n)
            t_ours += await timed(ours, start, n)
        await ours_db.dispose()
        await base_db.dispose()
    per_ours = t_ours / reports * 1000
    per_base = t_base / reports * 1000
    ratio = t_ours / t_base
    print(f"reports per side:        {reports} ({len(ANSWERS)} answers each, a transaction each)")
    print(f"plaintext baseline:          {per_base:.2f} ms per report")
    print(f"encrypted intake (ours):     {per_ours:.2f} ms per report")
    print(
        f"ratio ours / baseline:   {ratio:.2f}x (target <= 1.5x) {'OK' if ratio <= 1.5 else 'OVER'}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reports", type=int, default=1000)
    parser.add_argument("--block", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(main(args.reports, args.block))
