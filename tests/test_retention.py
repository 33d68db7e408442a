"""The retention ceiling: no /extend and no lawyer reply keeps a case past
MAX_RETENTION_DAYS from its submission; each extension is audited, the lawyer is told."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.domain.engine import Engine
from bot.domain.retention import ceiling, extend, round_up_to_hour
from bot.services.clock import FrozenClock
from bot.services.routing import LawyerPolicy
from storage.keyring import Keyring
from storage.models import AuditEntry, Case
from tests.helpers import DETAINED_NOW
from tests.world import StaffWorld as LawyerWorld

A = "signal:lawyer-a"
LIMIT = timedelta(days=60)


class World(LawyerWorld):
    """The lawyers' world with a short retention ceiling."""

    def __init__(self, db: AsyncEngine, keyring: Keyring, engine: Engine, clock: FrozenClock):
        super().__init__(db, keyring, engine, clock, policy=LawyerPolicy(max_retention=LIMIT))

    async def only_case(self) -> Case:
        async with self.uow() as u:
            return (await u.session.execute(select(Case))).scalar_one()

    async def actions(self) -> list[str]:
        async with self.uow() as u:
            query = select(AuditEntry.action).order_by(AuditEntry.id)
            return list((await u.session.execute(query)).scalars())


async def test_repeated_extend_and_replies_stop_at_the_ceiling(
    db: AsyncEngine, keyring: Keyring, engine_: Engine, clock: FrozenClock
) -> None:
    world = World(db, keyring, engine_, clock)
    await world.lawyer("A", A)
    await world.report(DETAINED_NOW, chat="r1")
    number = (await world.only_case()).number
    assert "is yours" in await world.say_text(A, f"/accept {number}")
    row = await world.case_row(number)
    limit = ceiling(row.created_on, LIMIT)

    first = await world.say_text(A, f"/extend {number} 20")
    assert "kept until" in first and "no longer" not in first
    told = ""
    for _ in range(5):
        told = await world.say_text(A, f"/extend {number} 30")
        assert (await world.case_row(number)).expires_at <= limit
    assert (await world.case_row(number)).expires_at == limit
    assert "no case is kept more than 60 days" in told
    assert limit.strftime("%Y-%m-%d %H:%M UTC") in told

    # a reply late in the case's life would add 30 days: the ceiling holds there too
    clock.advance(timedelta(days=50))
    answer = await world.say_text(A, f"/reply {number} We filed the appeal")
    assert "no case is kept more than 60 days" in answer
    assert (await world.case_row(number)).expires_at == limit

    actions = await world.actions()
    assert "case.extend.20d" in actions and "case.extend.30d" in actions
    assert actions.count("case.extend.ceiling") >= 2, "each capped extension is audited"
    async with world.uow() as u:
        assert await u.audit.verify() is None


async def test_a_reply_extends_within_the_ceiling_and_is_audited(
    db: AsyncEngine, keyring: Keyring, engine_: Engine, clock: FrozenClock
) -> None:
    world = World(db, keyring, engine_, clock)
    await world.lawyer("A", A)
    await world.report(DETAINED_NOW, chat="r1")
    number = (await world.only_case()).number
    await world.say_text(A, f"/accept {number}")
    clock.advance(timedelta(days=20, minutes=17))
    answer = await world.say_text(A, f"/reply {number} Hello")
    assert "no longer" not in answer
    row = await world.case_row(number)
    assert row.expires_at == round_up_to_hour(clock() + timedelta(days=30))
    assert row.expires_at.minute == 0 and row.expires_at.second == 0
    assert "case.extend.reply" in await world.actions()


def _moment(days: int, minutes: int) -> datetime:
    return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=days, minutes=minutes)


@given(
    created=st.dates(min_value=date(2025, 1, 1), max_value=date(2027, 1, 1)),
    limit_days=st.integers(min_value=1, max_value=3650),
    steps=st.lists(
        st.tuples(st.integers(0, 4000), st.integers(0, 24 * 60)), min_size=1, max_size=20
    ),
)
def test_no_sequence_of_extensions_passes_the_ceiling(
    created: date, limit_days: int, steps: list[tuple[int, int]]
) -> None:
    limit = timedelta(days=limit_days)
    top = ceiling(created, limit)
    expires = round_up_to_hour(datetime.combine(created, datetime.min.time(), UTC))
    expires = min(expires + timedelta(days=1), top)
    for days, minutes in steps:
        wanted = _moment(days, minutes)
        result = extend(expires, wanted, created, limit)
        assert expires <= result.expires_at <= top
        assert result.expires_at.minute == 0 and result.expires_at.second == 0
        assert result.capped == (round_up_to_hour(wanted) > top)
        expires = result.expires_at
