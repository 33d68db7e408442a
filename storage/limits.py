"""Rate-limit buckets shared by every process: one row per chat that wrote in the last window.

A row is keyed by the lookup of the chat's pseudonym under a label of its own (``limit:``), so it
links to no draft, outbox lane or case; it holds no chat id. The inbound service reads and
writes it under the chat's lock, so two processes never interleave one chat's read and write.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services.ports import Bucket
from storage.keyring import Keyring
from storage.models import ChatLimit

LABEL = "limit"


def _put(insert: Any) -> Any:
    statement = insert(ChatLimit).values(
        key=bindparam("key"),
        tokens=bindparam("tokens"),
        at=bindparam("at"),
        warned=bindparam("warned"),
    )
    excluded = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=[ChatLimit.key],
        set_={"tokens": excluded.tokens, "at": excluded.at, "warned": excluded.warned},
    )


# Built once: every reporter message runs both.
_GET = select(ChatLimit.tokens, ChatLimit.at, ChatLimit.warned).where(
    ChatLimit.key == bindparam("key")
)
_PUT = {"sqlite": _put(sqlite_insert), "postgresql": _put(postgresql_insert)}


class SqlChatLimitStore:
    """Each chat's bucket, one short statement to read it and one upsert to write it."""

    def __init__(self, session: AsyncSession, keyring: Keyring) -> None:
        self._session = session
        self._keyring = keyring
        self._keys: dict[tuple[str, str], str] = {}

    def _key(self, channel: str, chat_id: str) -> str:
        # Under the current index key only: a row under an older one is a bucket forgotten early
        # (the ratchet deletes it anyway), not worth a second lookup on every message.
        found = self._keys.get((channel, chat_id))
        if found is None:
            inner = bytes.fromhex(self._keyring.pseudonym(f"{LABEL}:{channel}", chat_id))
            found = self._keys[(channel, chat_id)] = self._keyring.lookup(inner).hex()
        return found

    async def get(self, channel: str, chat_id: str) -> Bucket | None:
        """The chat's bucket, or None."""
        connection = await self._session.connection()
        row = (await connection.execute(_GET, {"key": self._key(channel, chat_id)})).first()
        return None if row is None else Bucket(row.tokens, row.at, row.warned)

    async def put(self, channel: str, chat_id: str, bucket: Bucket) -> None:
        """Create or replace the chat's bucket."""
        connection = await self._session.connection()
        params = {
            "key": self._key(channel, chat_id),
            "tokens": bucket.tokens,
            "at": bucket.at,
            "warned": bucket.warned,
        }
        await connection.execute(_PUT[connection.dialect.name], params)

    async def prune(self, before: datetime) -> int:
        """Delete the buckets last counted at or before ``before``."""
        result = await self._session.execute(delete(ChatLimit).where(ChatLimit.at <= before))
        return int(getattr(result, "rowcount", 0) or 0)
