"""Rate-limit buckets shared by every process: one row per chat that wrote in the last window.

A row is keyed by the lookup of the chat's pseudonym under a label of its own (``limit:``), so it
links to no draft, outbox lane or case; it holds no chat id. The inbound service reads and
writes it under the chat's lock, so two processes never interleave one chat's read and write.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete

from bot.services.ports import Bucket
from storage.keyring import Keyring
from storage.models import ChatLimit
from storage.raw import Raw, Sql, as_time

LABEL = "limit"


# Every reporter message runs both: plain statements (storage/raw.py).
_GET = Sql.of('SELECT tokens, "at", warned FROM chat_limits WHERE "key" = ?')
_PUT = Sql.of(
    'INSERT INTO chat_limits ("key", tokens, "at", warned) VALUES (?, ?, ?, ?) '
    'ON CONFLICT ("key") DO UPDATE SET tokens = excluded.tokens, "at" = excluded."at", '
    "warned = excluded.warned"
)


class SqlChatLimitStore:
    """Each chat's bucket, one short statement to read it and one upsert to write it."""

    def __init__(self, raw: Raw, keyring: Keyring) -> None:
        self._keyring = keyring
        self._raw = raw
        self._keys: dict[tuple[str, str], str] = {}
        # Rows a statement of the unit of work read for this store (SqlUnitOfWork.claim_turn).
        self._ahead: dict[str, list[Any]] = {}

    def read_ahead(self, channel: str, chat_id: str, rows: list[Any]) -> None:
        """The chat's bucket rows as read by another statement of this transaction: the next
        ``get`` takes them instead of asking again."""
        self._ahead[self.key(channel, chat_id)] = rows

    def key(self, channel: str, chat_id: str) -> str:
        """The lookup a chat's bucket is kept under."""
        # Under the current index key only: a row under an older one is a bucket forgotten early
        # (the ratchet deletes it anyway), not worth a second lookup on every message.
        found = self._keys.get((channel, chat_id))
        if found is None:
            inner = bytes.fromhex(self._keyring.pseudonym(f"{LABEL}:{channel}", chat_id))
            found = self._keys[(channel, chat_id)] = self._keyring.lookup(inner).hex()
        return found

    async def get(self, channel: str, chat_id: str) -> Bucket | None:
        """The chat's bucket, or None."""
        key = self.key(channel, chat_id)
        rows = self._ahead.pop(key, None)
        if rows is None:
            rows = await self._raw.rows(_GET, key)
        if not rows:
            return None
        tokens, at, warned = rows[0]
        return Bucket(float(tokens), as_time(at), bool(warned))

    async def put(self, channel: str, chat_id: str, bucket: Bucket) -> None:
        """Create or replace the chat's bucket."""
        key = self.key(channel, chat_id)
        self._ahead.pop(key, None)
        await self._raw.later(_PUT, key, bucket.tokens, bucket.at, bucket.warned)

    async def prune(self, before: datetime) -> int:
        """Delete the buckets last counted at or before ``before``."""
        result = await self._raw.session.execute(delete(ChatLimit).where(ChatLimit.at <= before))
        return int(getattr(result, "rowcount", 0) or 0)
