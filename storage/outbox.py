"""The transactional outbox and each chat's screen, encrypted, found by keyed pseudonyms."""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, func, select, update
from sqlalchemy.orm import aliased

from bot.services.ports import OutboxEntry, ScreenEntry
from storage import slices
from storage.codec import _dumps, _loads, new_id
from storage.crypto import DecryptionError, RecordCipher, WrappedKey
from storage.index import LANE, floor_hour, hour_up, seal_index
from storage.keyring import Keyring
from storage.models import OutboxItem, Screen
from storage.raw import Raw, Sql

_sequence = itertools.count()


def _item_id() -> str:
    # Sorts in the order items were written, so a chat's messages keep their order; the random
    # tail keeps two processes from colliding.
    return f"{time.time_ns():019d}{next(_sequence) % 10_000:04d}{new_id()[:17]}"


_HEAD = aliased(OutboxItem)
# Every answer writes its messages and, once delivered, forgets them: plain statements
# (storage/raw.py).
_PUT = Sql.of(
    "INSERT INTO outbox (id, channel, lane, due_at, attempts, expires_at, kek_id, wrapped_dek, "
    "payload_ct, index_ct) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_DONE = Sql.of("DELETE FROM outbox WHERE id IN (?...)")
# With several processes every delivery is claimed first, and most read their chat's screen.
_CLAIM = Sql.of(
    "UPDATE outbox SET due_at = ? WHERE id = ? AND due_at <= ? AND NOT EXISTS "
    "(SELECT 1 FROM outbox AS earlier WHERE earlier.lane = outbox.lane AND earlier.id < outbox.id)"
)
_SCREEN = Sql.of("SELECT id, kek_id, wrapped_dek, refs_ct FROM screens WHERE lane = ?")
# Most deliveries change their chat's screen: one statement (the row takes a new id, since its
# ciphertext is bound to the id).
_SET_SCREEN = Sql.of(
    "INSERT INTO screens (id, lane, expires_at, channel, check_at, kek_id, wrapped_dek, index_ct, "
    "refs_ct) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (lane) DO UPDATE SET "
    "id = excluded.id, expires_at = excluded.expires_at, channel = excluded.channel, "
    "check_at = excluded.check_at, kek_id = excluded.kek_id, wrapped_dek = excluded.wrapped_dek, "
    "index_ct = excluded.index_ct, refs_ct = excluded.refs_ct"
)
_FORGET_SCREEN = Sql.of("DELETE FROM screens WHERE lane = ?")
# PostgreSQL: the claim and the screen in one round trip (SQLite has no UPDATE in a WITH).
# (Composed of this module's constants only: no value is ever formatted into SQL.)
_CLAIM_SHOWING = Sql.of(
    f"WITH taken AS ({_CLAIM.sqlite} RETURNING 1) "  # noqa: S608
    "SELECT (SELECT count(*) FROM taken), s.id, s.kek_id, s.wrapped_dek, s.refs_ct "
    "FROM (SELECT 1) AS one LEFT JOIN screens AS s ON s.lane = ?"
)


class SqlOutbox:
    """Messages to deliver, in order per chat (lane); only due lane heads are ever decrypted."""

    table = "outbox"
    screen_table = "screens"

    def __init__(self, raw: Raw, keyring: Keyring, cipher: RecordCipher) -> None:
        self._keyring = keyring
        self._cipher = cipher
        self._raw = raw
        self._lanes: dict[tuple[str, str], str] = {}
        # Screens read by a claim, for the ``screen`` call that follows it.
        self._ahead: dict[str, list[Any]] = {}

    def lane(self, channel: str, chat: str) -> str:
        """The lookup that orders one chat's messages, under the current KEK's index key."""
        return str(LANE.candidates(self._keyring, self._inner(channel, chat))[0])

    def _inner(self, channel: str, chat: str) -> bytes:
        return bytes.fromhex(self._keyring.pseudonym(f"lane:{channel}", chat))

    async def _lane(self, channel: str, chat: str) -> str:
        # While a rotation runs, a chat's waiting items may still be under the older key: new
        # items join their lane, so the chat's order holds until the rotation re-lanes it all.
        key = (channel, chat)
        if key not in self._lanes:
            lanes = LANE.candidates(self._keyring, self._inner(channel, chat))
            lane = lanes[0]
            if len(lanes) > 1:
                query = select(OutboxItem.lane).where(OutboxItem.lane.in_(lanes)).limit(1)
                lane = (await self._raw.session.execute(query)).scalar() or lane
            self._lanes[key] = lane
        return self._lanes[key]

    async def put_many(
        self,
        items: Sequence[tuple[str, str, Mapping[str, Any]]],
        now: datetime,
        expires_at: datetime,
    ) -> list[OutboxEntry]:
        """Store ``(channel, chat, payload)`` items, due at once, in this order."""
        if not items:
            return []
        rows = []
        entries = []
        for channel, chat, payload in items:
            item_id = _item_id()
            lane = await self._lane(channel, chat)
            dek, wrapped = self._cipher.new_dek(self.table, item_id)
            body = dict(payload, to=chat)
            rows.append(
                (
                    item_id,
                    channel,
                    lane,
                    now,
                    0,
                    hour_up(expires_at),
                    wrapped.kek_id,
                    wrapped.wrapped,
                    self._cipher.encrypt(dek, self.table, item_id, "payload", _dumps(body)),
                    seal_index(
                        self._cipher,
                        dek,
                        self.table,
                        item_id,
                        {"lane": self._inner(channel, chat).hex()},
                    ),
                )
            )
            entries.append(OutboxEntry(item_id, channel, lane, body, 0, now))
        if len(rows) == 1:
            await self._raw.later(_PUT, *rows[0])
        else:
            await self._raw.run_many(_PUT, rows)
        return entries

    async def due_heads(self, channel: str, now: datetime, limit: int = 100) -> list[OutboxEntry]:
        """The oldest item of each of the channel's lanes, where that item is due."""
        earlier = exists().where(and_(_HEAD.lane == OutboxItem.lane, _HEAD.id < OutboxItem.id))
        query = (
            select(OutboxItem)
            .where(OutboxItem.channel == channel, OutboxItem.due_at <= now, ~earlier)
            .order_by(OutboxItem.id)
            .limit(limit)
        )
        rows = (await self._raw.session.execute(query)).scalars().all()
        return [entry for row in rows if (entry := self._entry(row)) is not None]

    async def lane_items(self, lane: str, limit: int = 50) -> list[OutboxEntry]:
        """A lane's items in order (what follows a head that was just delivered)."""
        query = select(OutboxItem).where(OutboxItem.lane == lane).order_by(OutboxItem.id)
        rows = (await self._raw.session.execute(query.limit(limit))).scalars().all()
        return [entry for row in rows if (entry := self._entry(row)) is not None]

    def _entry(self, row: OutboxItem) -> OutboxEntry | None:
        try:
            dek = self._cipher.row_dek(self.table, row)
            payload = _loads(
                self._cipher.decrypt(dek, self.table, row.id, "payload", row.payload_ct)
            )
        except DecryptionError:
            return None  # its KEK is gone: it can never be sent; purge removes it
        return OutboxEntry(row.id, row.channel, row.lane, payload, row.attempts, row.due_at)

    async def claim(
        self, item_id: str, now: datetime, until: datetime, screen_of: str | None = None
    ) -> bool:
        """Take a due lane head for delivery until ``until`` (one statement: of several
        processes, one gets it; the others see it as not due, or wait and then see that).
        On PostgreSQL the same statement reads the screen of lane ``screen_of``, if given."""
        if screen_of is None or not await self._raw.postgresql():
            return await self._raw.run(_CLAIM, until, item_id, now) == 1
        rows = await self._raw.rows(_CLAIM_SHOWING, until, item_id, now, screen_of)
        self._ahead[screen_of] = [row[1:] for row in rows if row[1] is not None]
        return bool(rows[0][0])

    async def done(self, item_ids: Sequence[str]) -> None:
        """Forget delivered items."""
        for part in slices.per_statement(item_ids):
            await self._raw.run(_DONE.listing(len(part)), *part)

    async def retry_at(self, item_id: str, when: datetime, attempts: int) -> None:
        """Try an item again later (the rest of its lane waits behind it)."""
        await self._raw.session.execute(
            update(OutboxItem)
            .where(OutboxItem.id == item_id)
            .values(due_at=when, attempts=attempts)
        )

    async def depth(self) -> dict[str, int]:
        """Items waiting, by channel (no content)."""
        query = select(OutboxItem.channel, func.count()).group_by(OutboxItem.channel)
        return {channel: int(n) for channel, n in (await self._raw.session.execute(query)).all()}

    # ---- the screen -------------------------------------------------------------------------

    async def screen(self, lane: str) -> list[str]:
        """Refs of the bot's messages still on a chat's screen, oldest first."""
        rows = self._ahead.pop(lane, None)
        if rows is None:
            rows = await self._raw.rows(_SCREEN, lane)
        if not rows:
            return []
        screen_id, kek_id, wrapped, refs_ct = rows[0]
        try:
            dek = self._cipher.unwrap(self.screen_table, screen_id, WrappedKey(kek_id, wrapped))
            data = _loads(self._cipher.decrypt(dek, self.screen_table, screen_id, "refs", refs_ct))
        except DecryptionError:
            return []
        refs = data.get("refs")
        return [str(r) for r in refs] if isinstance(refs, list) else []

    async def set_screen(
        self,
        lane: str,
        refs: Sequence[str],
        expires_at: datetime,
        *,
        channel: str | None = None,
        chat: str | None = None,
        check_at: datetime | None = None,
    ) -> None:
        """Replace what a chat's screen holds (an empty list forgets the chat); the chat id is
        kept inside the ciphertext, for the deletion job."""
        self._ahead.pop(lane, None)
        if not refs:
            await self._raw.later(_FORGET_SCREEN, lane)
            return
        screen_id = new_id()
        dek, wrapped = self._cipher.new_dek(self.screen_table, screen_id)
        data: dict[str, Any] = {"refs": list(refs)}
        if chat is not None:
            data["chat"] = chat
        index = None
        if chat is not None and channel is not None:
            inner = {"lane": self._inner(channel, chat).hex()}
            index = seal_index(self._cipher, dek, self.screen_table, screen_id, inner)
        refs_ct = self._cipher.encrypt(dek, self.screen_table, screen_id, "refs", _dumps(data))
        await self._raw.later(
            _SET_SCREEN,
            screen_id,
            lane,
            hour_up(expires_at),
            channel,
            None if check_at is None else floor_hour(check_at),  # as the column's type did
            wrapped.kek_id,
            wrapped.wrapped,
            index,
            refs_ct,
        )

    async def due_screens(
        self, channel: str, now: datetime, limit: int = 100, after: str = ""
    ) -> list[ScreenEntry]:
        """Screens of a channel whose ``check_at`` has come, by lane after ``after``, decrypted
        (unreadable ones skipped)."""
        query = (
            select(Screen)
            .where(Screen.channel == channel, Screen.check_at <= now, Screen.lane > after)
            .order_by(Screen.lane)
            .limit(limit)
        )
        found = []
        for row in (await self._raw.session.execute(query)).scalars():
            try:
                dek = self._cipher.row_dek(self.screen_table, row)
                data = _loads(
                    self._cipher.decrypt(dek, self.screen_table, row.id, "refs", row.refs_ct)
                )
            except DecryptionError:
                continue
            refs, chat = data.get("refs"), data.get("chat")
            if isinstance(refs, list) and isinstance(chat, str):
                found.append(ScreenEntry(row.lane, chat, tuple(str(r) for r in refs)))
        return found
