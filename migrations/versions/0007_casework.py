"""Casework: events with counters that survive purges, case links, legal deadlines.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("created_on", sa.Date(), nullable=False),
        sa.Column("kek_id", sa.Integer(), nullable=False),
        sa.Column("wrapped_dek", sa.LargeBinary(), nullable=False),
        sa.Column("data_ct", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sa.UniqueConstraint("number", name="uq_events_number"),
    )
    op.create_index("ix_events_kek_id", "events", ["kek_id"])
    op.create_table(
        "event_counters",
        sa.Column("event_id", sa.String(32), nullable=False),
        sa.Column("category", sa.String(48), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["events.id"],
            name="fk_event_counters_event_id_events",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("event_id", "category", name="pk_event_counters"),
    )
    op.create_table(
        "event_cases",
        sa.Column("case_id", sa.String(32), nullable=False),
        sa.Column("event_id", sa.String(32), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.id"], name="fk_event_cases_case_id_cases", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["event_id"], ["events.id"], name="fk_event_cases_event_id_events", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("case_id", name="pk_event_cases"),
    )
    op.create_index("ix_event_cases_event_id", "event_cases", ["event_id"])
    op.create_table(
        "deadlines",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("case_id", sa.String(32), nullable=False),
        sa.Column("due_on", sa.Date(), nullable=False),
        sa.Column("stage", sa.SmallInteger(), nullable=False),
        sa.Column("kek_id", sa.Integer(), nullable=False),
        sa.Column("wrapped_dek", sa.LargeBinary(), nullable=False),
        sa.Column("data_ct", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.id"], name="fk_deadlines_case_id_cases", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_deadlines"),
    )
    op.create_index("ix_deadlines_case_id", "deadlines", ["case_id"])
    op.create_index("ix_deadlines_due_on", "deadlines", ["due_on"])
    op.create_index("ix_deadlines_kek_id", "deadlines", ["kek_id"])


def downgrade() -> None:
    for name in ("ix_deadlines_kek_id", "ix_deadlines_due_on", "ix_deadlines_case_id"):
        op.drop_index(name, table_name="deadlines")
    op.drop_table("deadlines")
    op.drop_index("ix_event_cases_event_id", table_name="event_cases")
    op.drop_table("event_cases")
    op.drop_table("event_counters")
    op.drop_index("ix_events_kek_id", table_name="events")
    op.drop_table("events")
