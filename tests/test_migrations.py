"""Migrations: one linear history, upgrade and downgrade with data present, on both databases."""

from __future__ import annotations

from datetime import UTC, date, datetime

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from storage import migrate
from storage.db import make_engine
from storage.models import Base

#: Rows to load at each revision before moving on, so every step runs over real data.
SAMPLE_ROWS: dict[str, list[str]] = {
    "0001": [
        "INSERT INTO drafts (id, chat_pseudonym, expires_at, kek_id, wrapped_dek, state_ct) "
        "VALUES ('d1', 'p1', :t, 1, :b, :b)",
        "INSERT INTO cases (id, created_on, priority, status, expires_at, kek_id, wrapped_dek, "
        "receipt_hash, answers_ct, meta_ct) VALUES ('c1', :d, 1, 'new', :t, 1, :b, :b, :b, :b)",
        "INSERT INTO audit_log (at, actor, action, prev_mac, mac) VALUES (:t, 'admin', 'init', 'x', 'y')",
        "INSERT INTO stat_counters (week, region, category, count) VALUES (:d, 'baku', 'reports', 3)",
    ],
    "0002": ["UPDATE key_state SET current_kek_id = 1 WHERE id = 1"],
    "0003": [
        "INSERT INTO attachments (id, expires_at, kek_id, wrapped_dek, original_ct, meta_ct) "
        "VALUES ('a1', :t, 1, :b, :b, :b)",
        "INSERT INTO seen_updates (key, expires_at) VALUES ('k1', :t)",
    ],
    "0004": [
        "INSERT INTO lawyers (role, status, on_call, languages, regions, created_at, kek_id, "
        "wrapped_dek, name_ct) VALUES ('lawyer', 'verified', true, 'az', 'baku', :t, 1, :b, :b)",
        "UPDATE cases SET assigned_lawyer_id = 1, assigned_at = :t WHERE id = 'c1'",
    ],
    "0005": [
        "INSERT INTO queue_items (id, queue, created_at, next_attempt_at, attempts, expires_at, "
        "kek_id, wrapped_dek, payload_ct) VALUES ('q1', 'signal_in', :t, :t, 0, :t, 1, :b, :b)",
    ],
    "0006": [
        "INSERT INTO outbox (id, channel, lane, due_at, attempts, expires_at, kek_id, "
        "wrapped_dek, payload_ct) VALUES ('o1', 'telegram', 'l1', :t, 0, :t, 1, :b, :b)",
        "INSERT INTO screens (id, lane, expires_at, kek_id, wrapped_dek, refs_ct) "
        "VALUES ('s1', 'l1', :t, 1, :b, :b)",
    ],
    "0007": [
        "INSERT INTO events (id, number, created_on, kek_id, wrapped_dek, data_ct) "
        "VALUES ('e1', 17, :d, 1, :b, :b)",
        "INSERT INTO event_counters (event_id, category, count) VALUES ('e1', 'people', 2)",
        "INSERT INTO event_cases (case_id, event_id) VALUES ('c1', 'e1')",
        "INSERT INTO deadlines (id, case_id, due_on, stage, kek_id, wrapped_dek, data_ct) "
        "VALUES ('l1', 'c1', :d, 0, 1, :b, :b)",
    ],
    "0008": [
        "UPDATE screens SET channel = 'telegram', check_at = :t WHERE id = 's1'",
        "INSERT INTO case_messages (id, case_id, direction, created_at, expires_at, kek_id, "
        "wrapped_dek, body_ct) VALUES ('m1', 'c1', 'to_reporter', :t, :t, 1, :b, :b)",
    ],
    "0009": [
        "INSERT INTO held_numbers (number, held_until) VALUES (4242, :d)",
        "INSERT INTO case_messages (id, case_id, direction, seq, kek_id, wrapped_dek, body_ct) "
        "VALUES ('m2', 'c1', 'to_lawyer', 2, 1, :b, :b)",
        "UPDATE audit_log SET kek_id = 1, case_token = 'aa' WHERE case_token IS NULL",
        "UPDATE seen_updates SET kek_id = 1, inner_ct = :b",
    ],
    "0010": [
        "INSERT INTO cases (id, created_on, priority, status, expires_at, kek_id, wrapped_dek, "
        "receipt_hash, answers_ct, meta_ct, reply_address_ct, reply_lookup, number) VALUES "
        "('c2', :d, 1, 'new', :t, 1, :b, :c, :b, :b, :b, 'r1', 2)",
    ],
    "0011": [
        "INSERT INTO chat_limits (key, tokens, at, warned) VALUES ('k1', 2.5, :t, true)",
    ],
    "0012": [
        "UPDATE key_state SET current_kek_id = current_kek_id",  # through the trigger
    ],
}
PARAMS = {
    "t": datetime(2026, 11, 2, tzinfo=UTC).replace(tzinfo=None),
    "b": b"\x00\x01",
    "c": b"\x00\x02",
    "d": date(2026, 11, 2),
}


def revisions() -> list[str]:
    script = ScriptDirectory.from_config(migrate.alembic_config())
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def test_single_head_and_linear_history() -> None:
    assert len(migrate.heads()) == 1
    script = ScriptDirectory.from_config(migrate.alembic_config())
    for rev in script.walk_revisions():
        assert not isinstance(rev.down_revision, tuple), f"{rev.revision} is a merge"
    assert set(SAMPLE_ROWS) == set(revisions()), "every revision needs sample rows"


async def _count(engine: AsyncEngine, table: str) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())


async def test_upgrade_and_downgrade_step_by_step_with_data(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        revs = revisions()
        for rev in revs:
            await migrate.upgrade(engine, rev)
            assert await migrate.current(engine) == rev
            async with engine.begin() as conn:
                for statement in SAMPLE_ROWS[rev]:
                    await conn.execute(text(statement), PARAMS)
        assert await _count(engine, "cases") == 2
        assert await _count(engine, "stat_counters") == 1
        assert await _count(engine, "drafts") == 1
        assert await _count(engine, "key_state") == 1
        assert await _count(engine, "attachments") == 1
        assert await _count(engine, "lawyers") == 1
        assert await _count(engine, "chat_limits") == 1
        async with engine.connect() as conn:
            number = (await conn.execute(text("SELECT number FROM cases WHERE id = 'c1'"))).scalar()
        assert number == 1, "cases from before 0004 were numbered"
        for rev in reversed(revs):
            index = revs.index(rev)
            target = revs[index - 1] if index else "base"
            await migrate.downgrade(engine, target)
            assert await migrate.current(engine) == (None if target == "base" else target)
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
        assert set(tables) <= {"alembic_version"}
        await migrate.upgrade(engine)
        assert await migrate.current(engine) == migrate.heads()[0]
    finally:
        await engine.dispose()


async def test_models_match_migrations(db: AsyncEngine) -> None:
    def diff(conn: Connection) -> list[object]:
        return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))

    async with db.connect() as conn:
        assert await conn.run_sync(diff) == []
