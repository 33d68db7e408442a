"""A keyed lookup for a case's reply address, so a reporter's /forget finds the chat's cases
without decrypting every case that has one.

``cases.reply_lookup`` holds the HMAC of the reply chat's inner hash under the index key of the
row's KEK, like every lookup column (storage/index.py); the inner hash itself goes inside the
case's ``index_ct``, so the ratchet re-keys it. Filling it for existing cases needs keys: the
running service does it when it is unlocked (``Maintenance.upgrade_lookups``), resumable and
idempotent; until then a column left empty only means /forget has not been indexed yet.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-14
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("cases", sa.Column("reply_lookup", sa.String(64), nullable=True))
    op.create_index("ix_cases_reply_lookup", "cases", ["reply_lookup"])


def downgrade() -> None:
    op.drop_index("ix_cases_reply_lookup", table_name="cases")
    # Plain ALTER TABLE (SQLite 3.35+): a batch copy of ``cases`` would drop the old table, and
    # the foreign keys' ON DELETE CASCADE would empty its children with it. The inner hashes
    # left inside index_ct are ciphertext that nothing reads without this column.
    op.execute("ALTER TABLE cases DROP COLUMN reply_lookup")
