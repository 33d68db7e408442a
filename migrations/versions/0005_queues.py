"""Durable encrypted queues (Signal inbox and outbox).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "queue_items",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("queue", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kek_id", sa.Integer(), nullable=False),
        sa.Column("wrapped_dek", sa.LargeBinary(), nullable=False),
        sa.Column("payload_ct", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_queue_items"),
    )
    for column in ("queue", "next_attempt_at", "expires_at", "kek_id"):
        op.create_index(f"ix_queue_items_{column}", "queue_items", [column])


def downgrade() -> None:
    for column in ("kek_id", "expires_at", "next_attempt_at", "queue"):
        op.drop_index(f"ix_queue_items_{column}", table_name="queue_items")
    op.drop_table("queue_items")
