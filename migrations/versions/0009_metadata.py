"""Old copies and metadata tell nothing: inner hashes for re-keying, coarse times, audit tokens,
held case numbers.

What this migration does without keys: the columns for the encrypted inner hashes (``index_ct``,
``seen_updates.inner_ct``), the audit log's ``case_token`` (renamed from ``case_id``) and
``kek_id``, the encrypted precise offer time of a case, ``held_numbers`` (every existing case
number held), a case message's place in its thread instead of its time, and every plaintext
time but the audit log's cut to the hour (expiry times rounded up). What needs keys (moving a
lookup value into ciphertext and re-keying it, case ids in the audit log into tokens, the audit
log's times to the hour, which changes their MACs) is done by the running service when it is
unlocked: ``Maintenance.upgrade_lookups`` (storage/maintenance.py), resumable and idempotent.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-11
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

#: (table, key column, time column, round up?) for every plaintext time cut to the hour here.
COARSE = (
    ("drafts", "id", "expires_at", True),
    ("cases", "id", "expires_at", True),
    ("cases", "id", "assigned_at", False),
    ("attachments", "id", "expires_at", True),
    ("seen_updates", "key", "expires_at", True),
    ("lawyers", "id", "created_at", False),
    ("lawyers", "id", "invite_expires_at", True),
    ("job_state", "name", "last_run", False),
    ("queue_items", "id", "created_at", False),
    ("queue_items", "id", "expires_at", True),
    ("outbox", "id", "expires_at", True),
    ("screens", "id", "expires_at", True),
    ("screens", "id", "check_at", False),
    ("case_messages", "id", "expires_at", True),
)
INDEX_CT = ("drafts", "cases", "lawyers", "outbox", "screens")
#: Two retention ceilings of the default 365 days (storage/numbers.py).
HOLD = timedelta(days=730)


def _coarse(value: datetime, up: bool) -> datetime:
    floor = value.replace(minute=0, second=0, microsecond=0)
    return floor + timedelta(hours=1) if up and floor != value else floor


def _coarsen_times(bind: Any) -> None:
    for table_name, key, column, up in COARSE:
        table = sa.table(table_name, sa.column(key), sa.column(column, sa.DateTime(timezone=True)))
        rows = bind.execute(sa.select(table.c[key], table.c[column])).all()
        for row_key, value in rows:
            if value is None:
                continue
            coarse = _coarse(value, up)
            if coarse != value:
                bind.execute(
                    sa.update(table).where(table.c[key] == row_key).values({column: coarse})
                )


def upgrade() -> None:
    bind = op.get_bind()
    _coarsen_times(bind)
    for table in INDEX_CT:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("index_ct", sa.LargeBinary(), nullable=True))
    with op.batch_alter_table("cases") as batch:
        batch.add_column(sa.Column("assigned_ct", sa.LargeBinary(), nullable=True))
    with op.batch_alter_table("seen_updates") as batch:
        batch.add_column(sa.Column("kek_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("inner_ct", sa.LargeBinary(), nullable=True))
        batch.create_index("ix_seen_updates_kek_id", ["kek_id"])
    with op.batch_alter_table("audit_log") as batch:
        batch.alter_column("case_id", new_column_name="case_token", existing_type=sa.String(32))
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("kek_id", sa.Integer(), nullable=True))
        batch.create_index("ix_audit_log_case_token", ["case_token"])
        batch.create_index("ix_audit_log_kek_id", ["kek_id"])

    # A message's place in its thread replaces its time (the time goes inside the body).
    with op.batch_alter_table("case_messages") as batch:
        batch.add_column(sa.Column("seq", sa.Integer(), nullable=True))
    messages = sa.table(
        "case_messages",
        sa.column("id"),
        sa.column("case_id"),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("seq", sa.Integer()),
    )
    rows = bind.execute(
        sa.select(messages.c.id, messages.c.case_id).order_by(
            messages.c.case_id, messages.c.created_at, messages.c.id
        )
    ).all()
    place: dict[str, int] = {}
    for message_id, case_id in rows:
        place[case_id] = place.get(case_id, 0) + 1
        bind.execute(
            sa.update(messages).where(messages.c.id == message_id).values(seq=place[case_id])
        )
    with op.batch_alter_table("case_messages") as batch:
        batch.alter_column("seq", existing_type=sa.Integer(), nullable=False)
        batch.drop_column("created_at")

    held = op.create_table(
        "held_numbers",
        sa.Column("number", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("held_until", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("number", name="pk_held_numbers"),
    )
    op.create_index("ix_held_numbers_held_until", "held_numbers", ["held_until"])
    op.create_table(
        "audit_gone",
        sa.Column("token", sa.String(32), nullable=False),
        sa.Column("gone_on", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("token", name="pk_audit_gone"),
    )
    op.create_index("ix_audit_gone_gone_on", "audit_gone", ["gone_on"])
    cases = sa.table("cases", sa.column("number", sa.Integer()), sa.column("created_on", sa.Date()))
    numbered = bind.execute(
        sa.select(cases.c.number, cases.c.created_on).where(cases.c.number.is_not(None))
    ).all()
    if numbered:
        bind.execute(
            sa.insert(held),
            [{"number": number, "held_until": day + HOLD} for number, day in numbered],
        )


def downgrade() -> None:
    bind = op.get_bind()
    op.drop_index("ix_audit_gone_gone_on", table_name="audit_gone")
    op.drop_table("audit_gone")
    op.drop_index("ix_held_numbers_held_until", table_name="held_numbers")
    op.drop_table("held_numbers")

    with op.batch_alter_table("case_messages") as batch:
        batch.add_column(sa.Column("created_at", sa.DateTime(timezone=True), nullable=True))
    messages = sa.table(
        "case_messages",
        sa.column("id"),
        sa.column("case_id"),
        sa.column("seq", sa.Integer()),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    cases = sa.table("cases", sa.column("id"), sa.column("created_on", sa.Date()))
    rows = bind.execute(
        sa.select(messages.c.id, messages.c.seq, cases.c.created_on).join(
            cases, cases.c.id == messages.c.case_id
        )
    ).all()
    for message_id, seq, day in rows:
        # The precise time is inside the body now: keep the thread's order under the case's day.
        at = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(seconds=int(seq))
        bind.execute(sa.update(messages).where(messages.c.id == message_id).values(created_at=at))
    with op.batch_alter_table("case_messages") as batch:
        batch.alter_column("created_at", existing_type=sa.DateTime(timezone=True), nullable=False)
        batch.drop_column("seq")

    with op.batch_alter_table("audit_log") as batch:
        batch.drop_index("ix_audit_log_kek_id")
        batch.drop_index("ix_audit_log_case_token")
        batch.drop_column("kek_id")
    with op.batch_alter_table("audit_log") as batch:
        batch.alter_column("case_token", new_column_name="case_id", existing_type=sa.String(32))
    with op.batch_alter_table("seen_updates") as batch:
        batch.drop_index("ix_seen_updates_kek_id")
        batch.drop_column("inner_ct")
        batch.drop_column("kek_id")
    # Plain ALTER TABLE (SQLite 3.35+): a batch copy of ``cases`` would drop the old table, and
    # the foreign keys' ON DELETE CASCADE would empty its children with it.
    op.execute("ALTER TABLE cases DROP COLUMN assigned_ct")
    for table in reversed(INDEX_CT):
        op.execute(f"ALTER TABLE {table} DROP COLUMN index_ct")
