"""The transactional outbox: a use case writes what to show in its own transaction; one sender
per channel delivers it, in order per chat, with backoff.

A crash at any point loses nothing (what was decided is in the outbox) and doubles nothing that
was confirmed (a delivered item is removed together with the screen it left). What stays open is
the moment between a messenger taking a message and the removal of its item: that one item is
sent again after a restart.

The sender also keeps each chat's screen: the refs of the bot's messages still shown, so a later
item can clear them (the questionnaire's chat ends empty) or edit the newest question in place.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from bot.domain.messages import (
    Notice,
    Outbound,
    Question,
    outbound_from_dict,
    outbound_to_dict,
)
from bot.services.clock import Clock
from bot.services.ports import OutboxEntry, OutboxStore, UnitOfWork

log = logging.getLogger(__name__)

#: Undelivered items are given up after this long (Telegram drops undelivered updates after a day).
OUTBOX_TTL = timedelta(days=7)
#: Telegram lets a bot delete its messages for 48 hours; a screen is forgotten after that.
SCREEN_TTL = timedelta(hours=48)
#: The latest deadline a message on a reporter's screen gets: deleted inside Telegram's window.
MAX_KEEP = SCREEN_TTL - timedelta(hours=1)
MAX_BACKOFF = 600.0
#: Items younger than this many seconds are left to the process that wrote them (FRESH below).
FRESH_SECONDS = 1.0
#: With several processes on one database, a process takes a lane's head for this long before
#: it sends it; one that dies meanwhile leaves it to another after that (sent again, as after
#: any crash).
CLAIM_LEASE = timedelta(seconds=60)
#: ... and a process whose claim failed looks at the outbox again after this many seconds (an
#: earlier item of the chat, sent by another process, is being removed: that takes milliseconds);
CLAIM_RETRY = 0.05
#: ... at most this many times while it is fresh (a second's worth).
PARK_TRIES = round(FRESH_SECONDS / CLAIM_RETRY)
#: ... where items younger than this are left to the process that wrote them (it sends them
#: at once): taking them too only makes the two race for them.
FRESH = timedelta(seconds=FRESH_SECONDS)

Shown = Question | Notice


@dataclass(frozen=True, slots=True)
class OnScreen:
    """One of the bot's messages on a chat's screen: when it was first sent, when it must be
    deleted (seconds since the epoch) and what it is (``receipt``, ``read``, ...)."""

    ref: str
    sent: int
    due: int
    tag: str = ""

    def encode(self) -> str:
        """The form kept (encrypted) in the chat's screen."""
        return f"{self.ref}@{self.sent}@{self.due}@{self.tag}"

    @classmethod
    def decode(cls, text: str) -> OnScreen:
        """Inverse of :meth:`encode`; a screen from before deadlines gets the latest one."""
        ref, _, rest = text.partition("@")
        sent, _, rest = rest.partition("@")
        due, _, tag = rest.partition("@")
        first = int(sent) if sent.isdigit() else 0
        latest = first + int(MAX_KEEP.total_seconds())
        return cls(ref, first, int(due) if due.isdigit() else latest, tag)


def _check_hour(screen: Sequence[OnScreen]) -> datetime | None:
    # Floored to the hour: the plaintext column tells nothing finer than the hour, and the
    # deletion job looks early enough; the precise deadline is inside the ciphertext.
    if not screen:
        return None
    first = datetime.fromtimestamp(min(e.due for e in screen), UTC)
    return first.replace(minute=0, second=0, microsecond=0)


def _expiry(now: datetime) -> datetime:
    later = now + SCREEN_TTL
    floor = later.replace(minute=0, second=0, microsecond=0)
    return floor if floor == later else floor + timedelta(hours=1)


def address(channel: str, chat: str) -> str:
    """A messenger address as stored for lawyers and reply addresses (``signal:uuid``)."""
    return f"{channel}:{chat}"


class HasOutbox(Protocol):
    """A transaction that reaches the outbox."""

    @property
    def outbox(self) -> OutboxStore:
        """The outbox in this transaction."""
        ...


@dataclass(frozen=True, slots=True)
class OutgoingFile:
    """A file to send as an attachment."""

    name: str
    mime: str
    data: bytes


@runtime_checkable
class FileTransport(Protocol):
    """A channel that can send files (Signal attachments, Telegram documents)."""

    async def send_files(self, chat: str, caption: str, files: Sequence[OutgoingFile]) -> list[str]:
        """Send the files with a caption; refs of what was sent."""
        ...


@dataclass(slots=True)
class Outgoing:
    """What one use case sends, written into the outbox by the transaction that decided it."""

    items: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def show(
        self,
        channel: str,
        chat: str,
        messages: Sequence[Outbound],
        *,
        clear: bool = True,
        track: bool = True,
        delete: Sequence[str] = (),
        keep: timedelta | None = None,
        tag: str = "",
        dismiss: Sequence[str] = (),
    ) -> None:
        """Show ``messages`` in a chat: first clear what the bot left there (or edit its newest
        question in place), and delete ``delete`` (the message just received).

        Tracked messages are deleted ``keep`` after they are sent (at the latest inside
        Telegram's 48 hours); ``tag`` names them for a later ``dismiss``, which deletes the
        messages on screen with those tags first.
        """
        payload: dict[str, Any] = {
            "messages": [outbound_to_dict(m) for m in messages if isinstance(m, Question | Notice)],
            "clear": clear,
            "track": track,
            "delete": list(delete),
        }
        if keep is not None:
            payload["keep"] = int(keep.total_seconds())
        if tag:
            payload["tag"] = tag
        if dismiss:
            payload["dismiss"] = list(dismiss)
        self.items.append((channel, chat, payload))

    def dismiss(self, channel: str, chat: str, tags: Sequence[str]) -> None:
        """Delete the bot's messages on a chat's screen that carry one of ``tags``."""
        self.show(channel, chat, [], clear=False, track=False, dismiss=tags)

    def notify(self, to: str, text: str) -> None:
        """A notice to a messenger address (``channel:chat``) that stays on screen."""
        channel, _, chat = to.partition(":")
        if channel and chat:
            self.show(channel, chat, [Notice(text)], clear=False, track=False)

    def send_files(self, to: str, caption: str, files: Sequence[OutgoingFile]) -> None:
        """Files with a caption to a messenger address (an evidence package, a case's originals);
        the bytes stay encrypted in the outbox like every payload."""
        channel, _, chat = to.partition(":")
        if channel and chat and files:
            payload = {
                "messages": [],
                "caption": caption,
                "files": [
                    {"name": f.name, "mime": f.mime, "data": base64.b64encode(f.data).decode()}
                    for f in files
                ],
                "clear": False,
                "track": False,
                "delete": [],
            }
            self.items.append((channel, chat, payload))

    def delete(self, channel: str, chat: str, refs: Sequence[str]) -> None:
        """Delete messages (a reporter's own) without showing anything."""
        if refs:
            self.show(channel, chat, [], clear=False, track=False, delete=refs)

    async def write(self, uow: HasOutbox, now: datetime) -> list[OutboxEntry]:
        """Put everything into the outbox of ``uow`` (the caller commits)."""
        if not self.items:
            return []
        written = await uow.outbox.put_many(self.items, now, now + OUTBOX_TTL)
        self.items = []
        return list(written)


class Deferred(Exception):
    """The messenger cannot take the message now (down, rate limit): try again later."""

    def __init__(self, retry_after: float | None = None) -> None:
        super().__init__("deferred")
        self.retry_after = retry_after


class Undeliverable(Exception):
    """The messenger refuses the message for good (blocked, gone): drop it."""


class Transport(Protocol):
    """A channel's way of showing messages; adapters implement it."""

    async def send(self, chat: str, messages: Sequence[Shown]) -> list[str]:
        """Send, in order; refs of what was sent (for deleting it later)."""
        ...

    async def edit(self, chat: str, ref: str, messages: Sequence[Shown]) -> bool:
        """Replace a sent message's content with ``messages``; False when it cannot."""
        ...

    async def delete(self, chat: str, ref: str) -> None:
        """Delete a message; quietly nothing when it is gone or too old."""
        ...


@dataclass(frozen=True, slots=True)
class _Completion:
    """A delivered item, to be removed together with the screen it left."""

    item: str
    lane: str
    chat: str
    screen: Sequence[OnScreen] | None
    now: datetime


class OutboxSender:
    """Delivers one channel's outbox: lanes (chats) concurrently, each lane in order.

    Delivered items are removed in batches: every delivery that completes while one batch
    commits joins the next, so many deliveries share one transaction (a lane has at most one
    item waiting, so the order within a batch does not matter). Each delivery still waits for
    its own removal to commit before its lane goes on.
    """

    def __init__(
        self,
        channel: str,
        uow: Callable[[], UnitOfWork],
        transport: Transport,
        clock: Clock,
        *,
        edit_window: timedelta = timedelta(hours=23),
        screens_cached: int = 10_000,
        shared: bool = False,
    ) -> None:
        self.channel = channel
        #: Other processes deliver from the same outbox: each item is claimed before it is
        #: sent, and a chat's screen is read afresh (another process may have changed it).
        self.shared = shared
        self._retrying = False
        self._uow = uow
        self._transport = transport
        self._clock = clock
        self._edit_window = edit_window
        self._lanes: dict[str, asyncio.Lock] = {}
        self._lane_users: dict[str, int] = {}
        self._screens: OrderedDict[str, list[OnScreen]] = OrderedDict()
        self._screens_cached = screens_cached
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._wake = asyncio.Event()
        #: Lanes a round passed over because they were busy (see ``flush``).
        self._skipped: set[str] = set()
        #: Items whose claim failed, by lane, tried again at the next round (soon) until the
        #: lane's deadline, set when it was first parked, or its last try: then any process's
        #: round finds them.
        self._parked: dict[str, list[OutboxEntry]] = {}
        self._park_until: dict[str, tuple[datetime, int]] = {}
        self._unclaimed: set[str] = set()
        self._completions: list[tuple[_Completion, asyncio.Future[None]]] = []
        self._completing: asyncio.Task[None] | None = None
        #: Items delivered and items that failed for now (tests, benchmarks, status).
        self.delivered = 0
        self.deferred = 0

    # ---- running -------------------------------------------------------------------------

    @property
    def parked(self) -> int:
        """Lanes whose item is to be tried again at the next round (tests, status)."""
        return len(self._parked)

    def wake(self) -> None:
        """Look at the outbox now (something was written that no caller delivers itself)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event, every: float = 2.0, sweep_every: float = 30.0) -> None:
        """Deliver whatever is due until ``stop`` is set; wakes on :meth:`wake` or ``every``.
        Every ``sweep_every`` seconds it also deletes the messages whose deadline has come."""
        loop = asyncio.get_running_loop()
        swept = loop.time()
        while not stop.is_set():
            try:
                while await self.flush():
                    pass
                if loop.time() - swept >= sweep_every:
                    swept = loop.time()
                    await self.sweep()
            except Exception as exc:  # the next round retries; nothing is lost
                log.warning("outbox round failed: %s", type(exc).__name__)
            waiter = asyncio.ensure_future(self._wake.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({waiter, stopper}, timeout=every, return_when="FIRST_COMPLETED")
            for task in (waiter, stopper):
                task.cancel()
            self._wake.clear()

    async def flush(self, limit: int = 100) -> int:
        """One pass over the due head of every lane; how many items were delivered."""
        now = self._clock() - FRESH if self.shared else self._clock()
        async with self._uow() as uow:
            heads = await uow.outbox.due_heads(self.channel, now, limit)
        busy = {lane for lane, lock in self._lanes.items() if lock.locked()}
        # A lane busy now (a turn delivering its own items) is looked at again when it frees:
        # whatever was written to it meanwhile would otherwise wait for the next round.
        self._skipped.update(h.lane for h in heads if h.lane in busy)
        heads = [h for h in heads if h.lane not in busy and h.id not in self._recent]
        # Fresh items are left out of ``heads`` (FRESH): those this process could not claim yet
        # go again here, not a second later, unless their lane has a head due (it goes first).
        clock = self._clock()
        self._park_until = {lane: d for lane, d in self._park_until.items() if d[0] > clock}
        parked, self._parked = self._parked, {}
        retry = [
            items
            for lane, items in parked.items()
            if lane in self._park_until and lane not in busy and all(h.lane != lane for h in heads)
        ]
        results = await asyncio.gather(
            *(self.deliver([h]) for h in heads), *(self.deliver(items) for items in retry)
        )
        return sum(results)

    # ---- delivery ------------------------------------------------------------------------

    async def deliver(self, entries: Sequence[OutboxEntry]) -> int:
        """Deliver items just written (in order per lane); how many were delivered."""
        by_lane: dict[str, list[OutboxEntry]] = {}
        for entry in entries:
            if entry.channel == self.channel:
                by_lane.setdefault(entry.lane, []).append(entry)
        counts = await asyncio.gather(*(self._lane(lane, items) for lane, items in by_lane.items()))
        return sum(counts)

    @contextlib.asynccontextmanager
    async def _hold(self, lane: str) -> AsyncIterator[None]:
        """One lane at a time: its deliveries and its sweep never interleave."""
        lock = self._lanes.setdefault(lane, asyncio.Lock())
        self._lane_users[lane] = self._lane_users.get(lane, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._lane_users[lane] -= 1
            if not self._lane_users[lane]:  # forget idle lanes
                del self._lane_users[lane], self._lanes[lane]
            if lane in self._skipped:
                self._skipped.discard(lane)
                self._wake.set()

    async def _lane(self, lane: str, items: list[OutboxEntry]) -> int:
        async with self._hold(lane):
            done = 0
            for index, item in enumerate(items):
                if item.id in self._recent:
                    continue
                if not await self._one(item):
                    if item.id in self._unclaimed:
                        self._unclaimed.discard(item.id)
                        self._park(lane, items[index:])
                    break  # the rest of the lane waits behind it
                self._park_until.pop(lane, None)
                done += 1
            return done

    def _park(self, lane: str, items: list[OutboxEntry]) -> None:
        # Another process has the item, or an earlier item of its chat is pending there (being
        # removed, most often): look again soon, until the lane's deadline (never renewed).
        now = self._clock()
        until, tries = self._park_until.get(lane, (now + FRESH, 0))
        if until > now and tries < PARK_TRIES:
            self._park_until[lane] = (until, tries + 1)
            known = {item.id: item for item in self._parked.get(lane, [])}
            known.update((item.id, item) for item in items)
            self._parked[lane] = [known[key] for key in sorted(known)]
            delay = CLAIM_RETRY
        else:  # every process's rounds see it now
            self._park_until.pop(lane, None)
            delay = CLAIM_RETRY + FRESH.total_seconds()
        if not self._retrying:
            self._retrying = True
            asyncio.get_running_loop().call_later(delay, self._retry)

    async def _screen(self, lane: str) -> list[OnScreen]:
        if lane in self._screens:
            self._screens.move_to_end(lane)
            return list(self._screens[lane])
        async with self._uow() as uow:
            refs = await uow.outbox.screen(lane)
        screen = [OnScreen.decode(r) for r in refs]
        self._remember_screen(lane, screen)
        return list(screen)

    def _remember_screen(self, lane: str, screen: Sequence[OnScreen]) -> None:
        self._screens[lane] = list(screen)
        self._screens.move_to_end(lane)
        while len(self._screens) > self._screens_cached:
            self._screens.popitem(last=False)

    async def _save_screen(
        self, lane: str, chat: str, screen: Sequence[OnScreen], now: datetime
    ) -> None:
        async with self._uow() as uow:
            await self._write_screen(uow, lane, chat, screen, now)
            await uow.commit()
        self._remember_screen(lane, screen)

    async def _write_screen(
        self, uow: UnitOfWork, lane: str, chat: str, screen: Sequence[OnScreen], now: datetime
    ) -> None:
        await uow.outbox.set_screen(
            lane,
            [e.encode() for e in screen],
            _expiry(now),
            channel=self.channel,
            chat=chat,
            check_at=_check_hour(screen),
        )

    def _editable(self, entry: OnScreen, now: datetime) -> bool:
        return now.timestamp() - entry.sent < self._edit_window.total_seconds()

    # ---- deadlines -----------------------------------------------------------------------

    async def sweep(self, limit: int = 200) -> int:
        """Delete every message on a screen whose deadline has come; how many were deleted."""
        if not getattr(self._transport, "keeps_screen", True):
            return 0
        now = self._clock()
        deleted, after = 0, ""
        while True:
            # Every screen of the hour is looked at: the hour is all the index knows.
            async with self._uow() as uow:
                screens = await uow.outbox.due_screens(self.channel, now, limit, after)
            if not screens:
                return deleted
            counts = await asyncio.gather(*(self._sweep(s.lane, s.chat, now) for s in screens))
            deleted += sum(counts)
            after = screens[-1].lane

    async def _sweep(self, lane: str, chat: str, now: datetime) -> int:
        if self.shared:
            # Another process may be delivering to this chat: the sweep goes through the lane
            # like any item, so the chat's screen has one writer at a time.
            out = Outgoing()
            out.items.append((self.channel, chat, {"messages": [], "sweep": True}))
            async with self._uow() as uow:
                entries = await out.write(uow, now)
                await uow.commit()
            return await self.deliver(entries)
        stamp = int(now.timestamp())
        async with self._hold(lane):
            screen = await self._screen(lane)
            kept, deleted = await self._expire(chat, screen, stamp)
            if kept != screen:
                await self._save_screen(lane, chat, kept, now)
            return deleted

    async def _expire(
        self, chat: str, screen: Sequence[OnScreen], stamp: int
    ) -> tuple[list[OnScreen], int]:
        """Delete the messages whose deadline has come; what stays on screen, how many went."""
        kept = [e for e in screen if e.due > stamp]
        deleted = 0
        for entry in (e for e in screen if e.due <= stamp):
            try:
                await self._transport.delete(chat, entry.ref)
                deleted += 1
            except Deferred:
                if entry.sent + SCREEN_TTL.total_seconds() > stamp:
                    kept.append(replace(entry, due=stamp + 60))  # the next round tries again
            except Undeliverable:
                pass  # gone already, or too old to delete
        return kept, deleted

    def _deadline(self, now: datetime, payload: dict[str, Any]) -> int:
        keep = payload.get("keep")
        seconds = MAX_KEEP.total_seconds()
        if isinstance(keep, int) and keep >= 0:
            seconds = min(seconds, keep)
        return int(now.timestamp() + seconds)

    async def _one(self, item: OutboxEntry) -> bool:
        """Deliver one item and record it; False when it must wait (the lane stops)."""
        payload = item.payload
        chat = str(payload.get("to", ""))
        try:
            messages = [outbound_from_dict(m) for m in payload.get("messages", [])]
        except ValueError:
            messages = []
        clear, track = bool(payload.get("clear")), bool(payload.get("track"))
        dismiss = {str(t) for t in payload.get("dismiss", [])}
        sweep = bool(payload.get("sweep"))
        if not getattr(self._transport, "keeps_screen", True):
            clear = track = sweep = False  # a terminal cannot take back what it printed
            dismiss = set()
        deletes = [str(r) for r in payload.get("delete", [])]
        now = self._clock()
        shows = clear or track or sweep or bool(dismiss)
        if self.shared and not await self._claim(item, now, shows):
            self._unclaimed.add(item.id)  # the lane parks it (``_park``)
            return False
        due, tag = self._deadline(now, payload), str(payload.get("tag", ""))
        before = await self._screen(item.lane) if shows else []
        screen = [e for e in before if e.tag not in dismiss]
        deletes += [e.ref for e in before if e.tag in dismiss]
        if sweep:
            screen, _ = await self._expire(chat, screen, int(now.timestamp()))
        remaining = list(screen)
        try:
            sent: list[str] = []
            if payload.get("files"):
                sent = await self._send_files(chat, payload)
            elif clear:
                kept = None
                newest = screen[-1] if screen else None
                if (
                    track
                    and messages
                    and newest is not None
                    and self._editable(newest, now)
                    and await self._transport.edit(chat, newest.ref, messages)
                ):
                    # An edit keeps the first send time, so its deadline cannot move past it.
                    latest = newest.sent + int(MAX_KEEP.total_seconds())
                    kept = replace(newest, due=min(due, latest), tag=tag)
                deletes += [e.ref for e in screen if kept is None or e is not newest]
                screen = [kept] if kept else []
                if kept is None and messages:
                    sent = await self._transport.send(chat, messages)
            elif messages:
                sent = await self._transport.send(chat, messages)
        except Deferred as exc:
            await self._later(item, exc.retry_after)
            return False
        except Undeliverable:
            log.info("%s message refused for good; dropped", self.channel)
            sent, screen = [], remaining if not clear else []
        if deletes:
            await asyncio.gather(*(self._delete(chat, ref) for ref in deletes))
        if track:
            stamp = int(now.timestamp())
            screen += [OnScreen(ref, stamp, due, tag) for ref in sent]
        changed = screen if screen != before else None
        await self._complete(_Completion(item.id, item.lane, chat, changed, now))
        if shows:
            self._remember_screen(item.lane, screen)
        self._recent[item.id] = None
        while len(self._recent) > 10_000:
            self._recent.popitem(last=False)
        self.delivered += 1
        return True

    async def _complete(self, completion: _Completion) -> None:
        """Remove a delivered item (and save its screen) in the next batch; wait for it."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._completions.append((completion, done))
        if self._completing is None or self._completing.done():
            self._completing = asyncio.create_task(self._complete_batches())
        await done

    async def _complete_batches(self) -> None:
        while self._completions:
            batch, self._completions = self._completions, []
            try:
                async with self._uow() as uow:
                    await uow.outbox.done([c.item for c, _ in batch])
                    for c, _ in batch:
                        if c.screen is not None:
                            await self._write_screen(uow, c.lane, c.chat, c.screen, c.now)
                    await uow.commit()
            except Exception as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for _, done in batch:
                if not done.done():
                    done.set_result(None)

    def _retry(self) -> None:
        self._retrying = False
        self._wake.set()

    async def _claim(self, item: OutboxEntry, now: datetime, screen: bool) -> bool:
        """Take the item for this process, and read its chat's screen as it stands."""
        async with self._uow() as uow:
            lane = item.lane if screen else None
            if not await uow.outbox.claim(item.id, now, now + CLAIM_LEASE, screen_of=lane):
                return False
            refs = await uow.outbox.screen(item.lane) if screen else None
            await uow.commit()
        if refs is not None:
            self._remember_screen(item.lane, [OnScreen.decode(r) for r in refs])
        return True

    async def _send_files(self, chat: str, payload: dict[str, Any]) -> list[str]:
        caption = str(payload.get("caption", ""))
        try:
            files = [
                OutgoingFile(str(f["name"]), str(f["mime"]), base64.b64decode(f["data"]))
                for f in payload["files"]
            ]
        except (KeyError, TypeError, binascii.Error) as exc:
            raise Undeliverable from exc
        if not isinstance(self._transport, FileTransport):
            # A channel without files (the console) shows what it could not send.
            log.info("%s cannot send files; the caption alone was shown", self.channel)
            return await self._transport.send(chat, [Notice(caption)]) if caption else []
        return await self._transport.send_files(chat, caption, files)

    async def _delete(self, chat: str, ref: str) -> None:
        with contextlib.suppress(Deferred, Undeliverable):
            await self._transport.delete(chat, ref)

    async def _later(self, item: OutboxEntry, retry_after: float | None) -> None:
        self.deferred += 1
        delay = retry_after if retry_after is not None else min(2.0 ** (item.attempts + 1), 60)
        delay = min(delay, MAX_BACKOFF)
        async with self._uow() as uow:
            await uow.outbox.retry_at(
                item.id, self._clock() + timedelta(seconds=delay), item.attempts + 1
            )
            await uow.commit()
