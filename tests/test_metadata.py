"""Issue 13: old copies and metadata tell nothing, on SQLite and PostgreSQL.

- An old copy of the database, taken before a purge, matches no known chat id, Signal UUID,
  receipt code, invite code or lawyer address once the index key has ratcheted, with every key
  that remains (today's keyring, opened with the root key).
- After a full journey no plaintext time has minutes or seconds (delivery rows excepted, by
  name, in the inventory).
- The audit log names cases by tokens, forgets a gone case after its retention, and its chain
  still verifies across the pruned prefix and still names a changed, removed or reordered entry.
- Case numbers are never reused while live or held (hypothesis, every backend and memory).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.domain.engine import Engine
from bot.services.clock import FrozenClock
from bot.services.ports import AuditProblem
from bot.services.ratelimit import RateLimit
from storage.keyring import KeyFile, Keyring, KeyringFile, KeyVault
from storage.maintenance import Maintenance
from storage.models import AuditEntry, Base, Case
from tests.conftest import START
from tests.helpers import DETAINED_NOW
from tests.test_inventory import DELIVERY, INVENTORY, Kind
from tests.world import StaffWorld as World

UUID = "signal:0b6d7a58-4c4c-4b8e-9c1e-5f2e0f6b9a11"
CHAT = "4815162342"
DRAFTING = "2718281828"
OTHER_LAWYER = "signal:9f1e2d3c-0000-4b8e-9c1e-5f2e0f6b9a22"


@pytest.fixture
def vault(tmp_path: Path) -> KeyVault:
    """A keyring on disk (a rotation persists it)."""
    return KeyVault.create(KeyringFile(tmp_path / "keyring"), KeyFile(os.urandom(32)), None, START)


async def snapshot(db: AsyncEngine) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table: a copy of the database as a backup would hold it."""
    copy: dict[str, list[dict[str, Any]]] = {}
    async with db.connect() as conn:
        for table in Base.metadata.sorted_tables:
            rows = await conn.execute(select(table))
            copy[table.name] = [dict(r._mapping) for r in rows]
    return copy


def needles(keyring: Keyring, raw: dict[str, list[str]]) -> set[bytes]:
    """Everything an attacker holding ``keyring`` can derive from known ids and codes: the
    stable inner hashes and their lookups under every KEK the keyring still holds."""
    found: set[bytes] = set()
    inner: list[bytes] = []
    for channel, ids in raw.items():
        for value in ids:
            labels = (channel, f"update:{channel}", f"lane:{channel}", f"limit:{channel}")
            for label in (*labels, "staff", "reports"):
                inner.append(bytes.fromhex(keyring.pseudonym(label, value)))
            for prefix in ("", "invite:", "phrase:"):
                inner.append(keyring.receipt_hash(prefix + value))
    for value in inner:
        found.add(value)
        for kek_id in keyring.keks:
            found.add(keyring.lookup(value, kek_id))
    return found


def matches(copy: dict[str, list[dict[str, Any]]], found: set[bytes]) -> list[str]:
    """Where any needle (raw or as hex) appears in the copy."""
    hexes = {n.hex() for n in found}
    hits = []
    for table, rows in copy.items():
        for row in rows:
            for column, value in row.items():
                if (isinstance(value, bytes | memoryview) and bytes(value) in found) or (
                    isinstance(value, str) and value in hexes
                ):
                    hits.append(f"{table}.{column}")
    return hits


async def journey(world: World) -> tuple[str, str]:
    """A lawyer over Signal, a report from a Telegram chat, another chat mid-report, and an
    invite not yet used; the receipt and the invite code."""
    await world.lawyer("A", UUID)
    code = await world.report(DETAINED_NOW, chat=CHAT)
    number = (await world.case_row_any()).number
    await world.say_text(UUID, f"/accept {number}")
    await world.say_text(UUID, f"/reply {number} We are on our way")
    await world.say(f"telegram:{DRAFTING}", "/start")
    _, invite = await world.lawyers.invite(
        name="B", languages=["en"], regions=["baku"], on_call=False
    )
    return code, invite


class MetaWorld(World):
    """The lawyers' world, rate-limited as ``tipline run`` is, with a way to find its one case."""

    def __init__(
        self, db: AsyncEngine, keyring: Keyring, engine: Engine, clock: FrozenClock
    ) -> None:
        super().__init__(db, keyring, engine, clock, limits=RateLimit(limit=1000))

    async def case_row_any(self) -> Case:
        async with self.uow() as u:
            return (await u.session.execute(select(Case))).scalars().first()  # type: ignore[return-value]


async def test_an_old_copy_matches_nothing_after_the_ratchet(
    db: AsyncEngine, vault: KeyVault, engine_: Engine, clock: FrozenClock
) -> None:
    world = MetaWorld(db, vault.keyring, engine_, clock)
    code, invite = await journey(world)
    old = await snapshot(db)
    raw = {
        "telegram": [CHAT, DRAFTING, f"telegram:{CHAT}"],
        "signal": [UUID, UUID.removeprefix("signal:")],
        "": [code.replace("-", ""), code, invite, OTHER_LAWYER],
    }
    # today, with today's keys, the copy is linkable: the test can see a match
    found = matches(old, needles(vault.keyring, raw))
    assert "chat_limits.key" in found, "the attack finds the live rows, rate limits too"
    report = await Maintenance(db, vault).rotate(clock())
    assert report.complete and report.destroyed
    reopened = KeyringFile(vault.file.path).load(KeyFile(bytes(vault._root)))
    assert matches(old, needles(reopened, raw)) == [], "an old copy matches nothing"
    # and the live database still finds every one of them under the new key
    async with world.uow() as u:
        assert await u.cases.status_by_receipt(code.replace("-", "")) is not None
        assert await u.lawyers.by_address(UUID) is not None
        assert await u.drafts.load("telegram", DRAFTING, clock()) is not None


TIME_TYPES = (datetime,)


def coarse_violations(copy: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Plaintext times with minutes or seconds, outside the inventory's delivery exceptions."""
    bad = []
    for table, rows in copy.items():
        for row in rows:
            for column, value in row.items():
                if (table, column) in DELIVERY:
                    continue
                if isinstance(value, datetime) and (
                    value.minute or value.second or value.microsecond
                ):
                    bad.append(f"{table}.{column}={value.isoformat()}")
                if isinstance(value, str) and len(value) >= 16 and value[:4].isdigit():
                    try:
                        parsed = datetime.fromisoformat(value)
                    except ValueError:
                        continue
                    if parsed.minute or parsed.second:
                        bad.append(f"{table}.{column}={value}")
    return bad


async def test_no_plaintext_time_finer_than_the_hour_after_a_journey(
    db: AsyncEngine, vault: KeyVault, engine_: Engine, clock: FrozenClock
) -> None:
    clock.advance(timedelta(minutes=17, seconds=43, microseconds=5))
    world = MetaWorld(db, vault.keyring, engine_, clock)
    await world.lawyer("A", UUID)
    await world.lawyer("B", OTHER_LAWYER)
    await world.report(DETAINED_NOW, chat=CHAT)
    number = (await world.case_row_any()).number
    clock.advance(timedelta(minutes=23, seconds=7))
    await world.lawyers.escalate()  # P1 not accepted in 15 minutes: the next lawyer
    clock.advance(timedelta(minutes=3, seconds=1))
    holder = UUID if (await world.case_row(number)).assigned_lawyer_id == 1 else OTHER_LAWYER
    await world.say_text(holder, f"/accept {number}")
    await world.say_text(holder, f"/reply {number} Call the office")
    await world.say_text(holder, f"/extend {number} 11")
    mid = await snapshot(db)
    assert coarse_violations(mid) == []
    clock.advance(timedelta(days=400, minutes=9))
    await Maintenance(db, vault).purge(clock())
    assert coarse_violations(await snapshot(db)) == []
    assert [k for k in INVENTORY if k[0] == "audit_log" and INVENTORY[k][0] is Kind.COARSE]


async def test_audit_names_tokens_prunes_gone_cases_and_still_verifies(
    db: AsyncEngine, vault: KeyVault, engine_: Engine, clock: FrozenClock
) -> None:
    world = MetaWorld(db, vault.keyring, engine_, clock)
    await world.lawyer("A", UUID)
    await world.report(DETAINED_NOW, chat=CHAT)
    case = await world.case_row_any()
    await world.say_text(UUID, f"/accept {case.number}")
    await world.report(DETAINED_NOW, chat="1111")  # a second case that outlives the first
    keep = next(c for c in await all_cases(world) if c.id != case.id)
    await world.say_text(UUID, f"/accept {keep.number}")
    async with db.connect() as conn:
        rows = (await conn.execute(select(AuditEntry))).all()
    assert rows and all(r.case_token != case.id and r.case_token != keep.id for r in rows)
    tokens = {r.case_token for r in rows if r.case_token}
    assert len(tokens) == 2, "one opaque token per case"
    token = next(r.case_token for r in rows if r.action == "case.accept")
    maintenance = Maintenance(db, vault, audit_retention=timedelta(days=90))

    # the first case expires and is purged; the second is kept for litigation
    await world.say_text(UUID, f"/extend {keep.number} 90")
    clock.advance(timedelta(days=31))
    await maintenance.purge(clock())
    assert await count(db, AuditEntry.case_token == token) > 0, "kept while it may matter"
    clock.advance(timedelta(days=91))
    await maintenance.purge(clock())
    assert await count(db, AuditEntry.case_token == token) == 0, "gone 90 days after the case"
    assert await count(db, AuditEntry.action == "audit.checkpoint") == 1
    assert await count(db, AuditEntry.case_token.is_not(None)) > 0, "the live case's entries stay"
    entries, problem = await maintenance.verify_audit()
    assert problem is None and entries > 0

    # after the checkpoint, a changed, a removed and a reordered entry are each named
    async with db.connect() as conn:
        rows = [
            dict(r._mapping) for r in await conn.execute(select(AuditEntry).order_by(AuditEntry.id))
        ]
    assert rows[0]["action"] == "audit.checkpoint" and len(rows) >= 5
    first, second, third = rows[2], rows[3], rows[4]

    async def put(row: dict[str, Any], **values: Any) -> None:
        async with db.begin() as conn:
            await conn.execute(
                update(AuditEntry).where(AuditEntry.id == row["id"]).values(**values)
            )

    await put(first, actor="admin")
    assert (await maintenance.verify_audit())[1] == AuditProblem(first["id"], "was changed")
    await put(first, actor=first["actor"])
    assert (await maintenance.verify_audit())[1] is None
    async with db.begin() as conn:
        await conn.execute(delete(AuditEntry).where(AuditEntry.id == second["id"]))
    problem = (await maintenance.verify_audit())[1]
    assert problem is not None and problem.entry_id == third["id"], "removed: the next is named"
    async with db.begin() as conn:
        await conn.execute(insert(AuditEntry).values(**second))
    assert (await maintenance.verify_audit())[1] is None
    swap = ("at", "actor", "action", "case_token", "prev_mac", "mac", "kek_id")
    await put(second, **{k: third[k] for k in swap})
    await put(third, **{k: second[k] for k in swap})
    problem = (await maintenance.verify_audit())[1]
    assert problem is not None and problem.entry_id == second["id"], "reordered"


async def all_cases(world: World) -> list[Case]:
    async with world.uow() as u:
        return list((await u.session.execute(select(Case))).scalars())


async def count(db: AsyncEngine, *where: Any) -> int:
    async with db.connect() as conn:
        query = select(AuditEntry.id).where(*where)
        return len((await conn.execute(query)).all())
