"""On PostgreSQL, whatever changes the key state first takes the key state's lock alone.

A unit of work's key check holds that advisory lock, shared, until it commits (it held a shared
row lock on ``key_state`` before: storage/repositories.py). A rotation publishes a new KEK by
updating the row, and this trigger makes every such update take the lock alone first, so it
waits for the units of work that checked the key state before it: a process of an earlier
version, which publishes with the same plain UPDATE, included. Nothing on SQLite: one writer at a time, and the keyring file is the published state.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

#: storage.locks.KEY_STATE, written out: a migration must not change if that module does.
KEY_STATE = 6285164768667536416


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "CREATE FUNCTION tipline_key_state_alone() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN PERFORM pg_advisory_xact_lock({KEY_STATE}); RETURN NEW; END $$"
    )
    op.execute(
        "CREATE TRIGGER key_state_alone BEFORE UPDATE ON key_state "
        "FOR EACH ROW EXECUTE FUNCTION tipline_key_state_alone()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER key_state_alone ON key_state")
    op.execute("DROP FUNCTION tipline_key_state_alone()")
