"""Rate-limit buckets in the database, so several processes count a chat against one bucket.

``chat_limits.key`` is the lookup of the chat's pseudonym under a label of its own, under the
current KEK's index key (storage/limits.py); ``at`` is a precise time, the named short-lived
exception: a job deletes a row once its bucket has refilled, and the ratchet deletes every row.
Nothing to fill: every chat starts with a full bucket, as after a restart of one process.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "chat_limits",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("warned", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_chat_limits"),
    )


def downgrade() -> None:
    # Buckets are disposable: dropping them only gives every chat a full one.
    op.drop_table("chat_limits")
