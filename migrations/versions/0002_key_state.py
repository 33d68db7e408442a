"""Key state: the current KEK version, shared by every process.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "key_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("current_kek_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_key_state"),
    )
    # Databases made before this revision were written under the keyring's first KEK.
    op.execute("INSERT INTO key_state (id, current_kek_id) VALUES (1, 1)")


def downgrade() -> None:
    op.drop_table("key_state")
