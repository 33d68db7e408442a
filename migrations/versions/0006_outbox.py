"""Transactional outbox for every channel, and each chat's messages on screen.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("lane", sa.String(64), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kek_id", sa.Integer(), nullable=False),
        sa.Column("wrapped_dek", sa.LargeBinary(), nullable=False),
        sa.Column("payload_ct", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
    )
    op.create_index("ix_outbox_lane_id", "outbox", ["lane", "id"])
    op.create_index("ix_outbox_channel_due_at", "outbox", ["channel", "due_at"])
    op.create_index("ix_outbox_expires_at", "outbox", ["expires_at"])
    op.create_index("ix_outbox_kek_id", "outbox", ["kek_id"])
    op.create_table(
        "screens",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("lane", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kek_id", sa.Integer(), nullable=False),
        sa.Column("wrapped_dek", sa.LargeBinary(), nullable=False),
        sa.Column("refs_ct", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_screens"),
        sa.UniqueConstraint("lane", name="uq_screens_lane"),
    )
    op.create_index("ix_screens_expires_at", "screens", ["expires_at"])
    op.create_index("ix_screens_kek_id", "screens", ["kek_id"])


def downgrade() -> None:
    for name in ("ix_screens_kek_id", "ix_screens_expires_at"):
        op.drop_index(name, table_name="screens")
    op.drop_table("screens")
    for name in (
        "ix_outbox_kek_id",
        "ix_outbox_expires_at",
        "ix_outbox_channel_due_at",
        "ix_outbox_lane_id",
    ):
        op.drop_index(name, table_name="outbox")
    op.drop_table("outbox")
