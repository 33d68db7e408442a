"""Attachments (encrypted originals and cleaned copies) and seen messenger updates.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "attachments",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kek_id", sa.Integer(), nullable=False),
        sa.Column("wrapped_dek", sa.LargeBinary(), nullable=False),
        sa.Column("original_ct", sa.LargeBinary(), nullable=False),
        sa.Column("clean_ct", sa.LargeBinary(), nullable=True),
        sa.Column("meta_ct", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_attachments"),
    )
    op.create_index("ix_attachments_expires_at", "attachments", ["expires_at"])
    op.create_index("ix_attachments_kek_id", "attachments", ["kek_id"])
    op.create_table(
        "seen_updates",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_seen_updates"),
    )
    op.create_index("ix_seen_updates_expires_at", "seen_updates", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_seen_updates_expires_at", table_name="seen_updates")
    op.drop_table("seen_updates")
    op.drop_index("ix_attachments_kek_id", table_name="attachments")
    op.drop_index("ix_attachments_expires_at", table_name="attachments")
    op.drop_table("attachments")
