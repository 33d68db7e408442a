"""Initial schema: drafts, cases, audit log, statistics counters.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "drafts",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("chat_pseudonym", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kek_id", sa.Integer(), nullable=False),
        sa.Column("wrapped_dek", sa.LargeBinary(), nullable=False),
        sa.Column("state_ct", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_drafts"),
        sa.UniqueConstraint("chat_pseudonym", name="uq_drafts_chat_pseudonym"),
    )
    op.create_index("ix_drafts_expires_at", "drafts", ["expires_at"])
    op.create_index("ix_drafts_kek_id", "drafts", ["kek_id"])

    op.create_table(
        "cases",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("created_on", sa.Date(), nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kek_id", sa.Integer(), nullable=False),
        sa.Column("wrapped_dek", sa.LargeBinary(), nullable=False),
        sa.Column("receipt_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("answers_ct", sa.LargeBinary(), nullable=False),
        sa.Column("meta_ct", sa.LargeBinary(), nullable=False),
        sa.Column("reply_address_ct", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_cases"),
        sa.UniqueConstraint("receipt_hash", name="uq_cases_receipt_hash"),
    )
    op.create_index("ix_cases_priority", "cases", ["priority"])
    op.create_index("ix_cases_status", "cases", ["status"])
    op.create_index("ix_cases_expires_at", "cases", ["expires_at"])
    op.create_index("ix_cases_kek_id", "cases", ["kek_id"])

    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("case_id", sa.String(32), nullable=True),
        sa.Column("prev_mac", sa.String(64), nullable=False),
        sa.Column("mac", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )

    op.create_table(
        "stat_counters",
        sa.Column("week", sa.Date(), nullable=False),
        sa.Column("region", sa.String(16), nullable=False),
        sa.Column("category", sa.String(48), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("week", "region", "category", name="pk_stat_counters"),
    )


def downgrade() -> None:
    op.drop_table("stat_counters")
    op.drop_table("audit_log")
    for index in ("kek_id", "expires_at", "status", "priority"):
        op.drop_index(f"ix_cases_{index}", table_name="cases")
    op.drop_table("cases")
    op.drop_index("ix_drafts_kek_id", table_name="drafts")
    op.drop_index("ix_drafts_expires_at", table_name="drafts")
    op.drop_table("drafts")
