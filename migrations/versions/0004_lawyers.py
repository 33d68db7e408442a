"""Lawyers and admins, case assignment and numbers, relayed messages, job state.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lawyers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("role", sa.String(8), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("on_call", sa.Boolean(), nullable=False),
        sa.Column("languages", sa.String(32), nullable=False),
        sa.Column("regions", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("invite_hash", sa.LargeBinary(32), nullable=True),
        sa.Column("invite_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("phrase_hash", sa.LargeBinary(32), nullable=True),
        sa.Column("contact_pseudonym", sa.String(64), nullable=True),
        sa.Column("kek_id", sa.Integer(), nullable=False),
        sa.Column("wrapped_dek", sa.LargeBinary(), nullable=False),
        sa.Column("name_ct", sa.LargeBinary(), nullable=False),
        sa.Column("contact_ct", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_lawyers"),
        sa.UniqueConstraint("invite_hash", name="uq_lawyers_invite_hash"),
        sa.UniqueConstraint("contact_pseudonym", name="uq_lawyers_contact_pseudonym"),
    )
    op.create_index("ix_lawyers_status", "lawyers", ["status"])
    op.create_index("ix_lawyers_kek_id", "lawyers", ["kek_id"])
    with op.batch_alter_table("cases") as batch:
        batch.add_column(sa.Column("number", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("assigned_lawyer_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("admins_alerted", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(
            sa.Column("expiry_warned", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.create_unique_constraint("uq_cases_number", ["number"])
        batch.create_index("ix_cases_assigned_lawyer_id", ["assigned_lawyer_id"])
    # Cases made before lawyers existed get numbers in the order they were created.
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT id FROM cases ORDER BY created_on, id")).all()
    for number, (case_id,) in enumerate(rows, start=1):
        conn.execute(
            sa.text("UPDATE cases SET number = :n WHERE id = :i"), {"n": number, "i": case_id}
        )
    op.create_table(
        "case_attempts",
        sa.Column("case_id", sa.String(32), nullable=False),
        sa.Column("lawyer_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.id"], name="fk_case_attempts_case_id_cases", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("case_id", "lawyer_id", name="pk_case_attempts"),
    )
    op.create_table(
        "case_messages",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("case_id", sa.String(32), nullable=False),
        sa.Column("direction", sa.String(12), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kek_id", sa.Integer(), nullable=False),
        sa.Column("wrapped_dek", sa.LargeBinary(), nullable=False),
        sa.Column("body_ct", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.id"], name="fk_case_messages_case_id_cases", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_case_messages"),
    )
    op.create_index("ix_case_messages_case_id", "case_messages", ["case_id"])
    op.create_index("ix_case_messages_kek_id", "case_messages", ["kek_id"])
    op.create_table(
        "job_state",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("last_run", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_job_state"),
    )


def downgrade() -> None:
    op.drop_table("job_state")
    op.drop_index("ix_case_messages_kek_id", table_name="case_messages")
    op.drop_index("ix_case_messages_case_id", table_name="case_messages")
    op.drop_table("case_messages")
    op.drop_table("case_attempts")
    with op.batch_alter_table("cases") as batch:
        batch.drop_index("ix_cases_assigned_lawyer_id")
        batch.drop_constraint("uq_cases_number", type_="unique")
        for column in (
            "expiry_warned",
            "admins_alerted",
            "assigned_at",
            "assigned_lawyer_id",
            "number",
        ):
            batch.drop_column(column)
    op.drop_index("ix_lawyers_kek_id", table_name="lawyers")
    op.drop_index("ix_lawyers_status", table_name="lawyers")
    op.drop_table("lawyers")
