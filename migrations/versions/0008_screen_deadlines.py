"""Screen deadlines and read-once lawyer messages.

A screen row names its channel and the hour its next message is due to be deleted (the
precise deadline of each message lives in the encrypted refs); a message to a reporter gets an
expiry, rounded up to the hour, once it has been shown.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("screens") as batch:
        batch.add_column(sa.Column("channel", sa.String(16), nullable=True))
        batch.add_column(sa.Column("check_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_screens_check_at", ["check_at"])
    with op.batch_alter_table("case_messages") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_case_messages_expires_at", ["expires_at"])


def downgrade() -> None:
    with op.batch_alter_table("case_messages") as batch:
        batch.drop_index("ix_case_messages_expires_at")
        batch.drop_column("expires_at")
    with op.batch_alter_table("screens") as batch:
        batch.drop_index("ix_screens_check_at")
        batch.drop_column("check_at")
        batch.drop_column("channel")
