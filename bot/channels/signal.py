"""Signal adapter over signal-cli-rest-api: numbered questions, nothing lost on crashes.

Every received envelope is stored encrypted before it is handled, and leaves that inbox in the
transaction of its turn, which also writes the turn's answers to the outbox: a crash between
receive and handling loses nothing (signal-cli has already consumed it), and a crash after the
turn finds its answers waiting in the outbox, delivered with backoff until Signal takes them.
Senders are keyed by ``sourceUuid`` (``sourceNumber`` may be null); numbers and UUIDs are
never stored in clear nor logged.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any, Protocol

from bot.channels.signal_api import SignalApiError, UntrustedIdentity
from bot.domain.messages import Notice, Outbound, Question
from bot.domain.render import render_notice, render_numbered
from bot.media import MAX_FILE_BYTES
from bot.outage import Outage
from bot.services.clock import Clock
from bot.services.inbound import Inbound, InboundService
from bot.services.intake import Attachment
from bot.services.outbox import Deferred, OutboxSender, OutgoingFile, Shown, Undeliverable
from bot.services.ports import UnitOfWork
from bot.services.queues import ChannelQueues

log = logging.getLogger(__name__)

CHANNEL = "signal"
MAX_BACKOFF = 600.0
STOP_GRACE = 10.0

Sleep = Callable[[float], Awaitable[None]]


#: A process without the receiver role tries for it this often (a takeover within 10 s).
ROLE_RETRY = 3.0
#: The receiver looks this often whether it still holds the role (its connection may be gone).
ROLE_CHECK = 5.0


class Crash(Exception):
    """Raised by test hooks to stop the channel where a real crash would."""


class ReceiverRole(Protocol):
    """The right to receive: signal-cli hands each message to whoever asks first, so of several
    processes on one database exactly one receives (the others deliver the outbox)."""

    async def acquire(self) -> bool:
        """Take the role if nobody holds it; whether this process holds it now."""
        ...

    async def check(self) -> bool:
        """Whether this process still holds it."""
        ...

    async def release(self) -> None:
        """Give it up."""
        ...


class AlwaysReceiver:
    """The role of a process that is alone on its database (SQLite, tests)."""

    async def acquire(self) -> bool:
        """Always held."""
        return True

    async def check(self) -> bool:
        """Always held."""
        return True

    async def release(self) -> None:
        """Nothing to give up."""


class SignalChannel:
    """Receives (normal polling or json-rpc websocket), handles, and sends through an outbox."""

    def __init__(
        self,
        *,
        api: Any,
        inbound: InboundService,
        uow: Callable[[], UnitOfWork],
        queues: ChannelQueues,
        clock: Clock,
        on_untrusted: Callable[[str], Awaitable[bool]] | None = None,
        mode: str = "normal",
        disappearing_seconds: int = 86400,
        sleep: Sleep = asyncio.sleep,
        use_inbox: bool = True,
        after_store: Callable[[], None] | None = None,
        role: ReceiverRole | None = None,
        shared_outbox: bool = False,
        role_retry: float = ROLE_RETRY,
        role_check: float = ROLE_CHECK,
    ) -> None:
        self._api = api
        self._role = role or AlwaysReceiver()
        self._role_retry = role_retry
        self._role_check = role_check
        #: Whether this process receives now (tests, status).
        self.receiving = False
        self._inbound = inbound
        self._queues = queues
        self._clock = clock
        transport = SignalTransport(api, on_untrusted, inbound.reporter_identity_changed)
        self.sender = OutboxSender(CHANNEL, uow, transport, clock, shared=shared_outbox)
        inbound.senders.register(CHANNEL, self.sender.wake)
        self._mode = mode
        self._disappearing = disappearing_seconds
        self._sleep = sleep
        self._use_inbox = use_inbox
        self._after_store = after_store
        self._configured: set[str] = set()
        #: Envelopes handled and handlers that failed (tests, benchmarks).
        self.handled = 0
        self.failed = 0
        self.reconnects = 0
        #: Logs where a receive outage starts and ends, instead of a line per attempt.
        self.outage = Outage("signal receive")

    # ---- running -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, *, outbox_every: float = 5.0) -> None:
        """Deliver the outbox until ``stop`` is set; holding the receiver role, drain what a
        crash left, then receive."""
        receive = asyncio.create_task(self._receiver(stop))
        retry = asyncio.create_task(self.sender.run(stop, outbox_every))
        stopped = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait(
                {receive, retry, stopped}, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                if task is not stopped and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            # Let the loops finish the step they are in (a transaction must not be cut in
            # half); only a websocket still waiting for messages gets cancelled.
            await asyncio.wait({receive, retry}, timeout=STOP_GRACE)
            for task in (receive, retry, stopped):
                task.cancel()
            for task in (receive, retry, stopped):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _receiver(self, stop: asyncio.Event) -> None:
        """Wait for the receiver role, then receive until ``stop`` or until the role is lost."""
        while not stop.is_set():
            try:
                held = await self._role.acquire()
            except Exception as exc:  # the database is away: try again
                log.warning("signal receiver election failed: %s", type(exc).__name__)
                held = False
            if not held:
                await _wait(stop, self._role_retry)
                continue
            log.info("signal receiver role taken")
            self.receiving = True
            lost = asyncio.Event()
            watch = asyncio.create_task(self._watch_role(stop, lost))
            try:
                await self._queues.adopt_legacy_outbox()
                await self.drain()
                await self._receive_loop(lost)
            finally:
                self.receiving = False
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await watch
                with contextlib.suppress(Exception):
                    await self._role.release()

    async def _watch_role(self, stop: asyncio.Event, lost: asyncio.Event) -> None:
        """Set ``lost`` at ``stop``, or when the role's connection is found gone."""
        try:
            while not await _wait(stop, self._role_check):
                if not await self._role.check():
                    log.warning("signal receiver role lost; electing again")
                    break
        finally:
            lost.set()

    async def _receive_loop(self, stop: asyncio.Event) -> None:
        backoff = 0.5
        while not stop.is_set():
            try:
                if self._mode == "json-rpc":
                    # A dropped websocket loses whatever arrives until we are back: reconnect
                    # at once, then back off only if connecting keeps failing.
                    async for message in _until_stopped(self._api.receive_ws(), stop):
                        backoff = 0.5
                        await self.ingest(message)
                        self.outage.answered()
                    if not stop.is_set():
                        self.reconnects += 1
                    continue
                messages = await self._api.receive(wait_seconds=1)
                if messages:
                    await self.ingest_batch(messages)
                backoff = 0.5
                self.outage.answered()
            except Crash:
                raise
            except Exception as exc:
                self.outage.failed(exc)  # one line per outage, not one per attempt
                self.reconnects += 1
                await self._sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    # ---- inbox ---------------------------------------------------------------------------

    async def ingest(self, message: dict[str, Any]) -> None:
        """Store an envelope (encrypted) before handling it; remove it once handled."""
        await self.ingest_batch([message])

    async def ingest_batch(self, messages: list[dict[str, Any]]) -> None:
        """Store a received batch in one transaction, then handle each.

        Each envelope leaves the inbox in the transaction of its own turn, together with the
        answers that turn wrote to the outbox: a crash at any point loses nothing and doubles
        nothing.
        """
        if not self._use_inbox:
            for message in messages:
                await self._process(message, None)
            return
        ids = await self._queues.received(messages)
        if self._after_store is not None:
            self._after_store()
        for item_id, message in zip(ids, messages, strict=True):
            await self._process(message, item_id)

    async def drain(self) -> int:
        """Handle envelopes a crash left in the inbox; returns how many."""
        items = await self._queues.unhandled()
        for item in items:
            await self._process(item.payload, item.id)
        return len(items)

    async def _process(self, message: dict[str, Any], inbox_id: str | None) -> None:
        try:
            await self.handle_envelope(message, inbox_id)
        except Crash:
            raise
        except Exception as exc:  # a poison envelope must not block the others
            self.failed += 1
            log.error("signal envelope failed: %s", type(exc).__name__)
        self.handled += 1

    # ---- handling ------------------------------------------------------------------------

    async def handle_envelope(self, message: dict[str, Any], inbox_id: str | None = None) -> None:
        """Turn one received envelope into an inbound message; deliver what it led to."""
        inbound = await self._inbound_of(message, inbox_id)
        if inbound is None:
            if inbox_id is not None:
                await self._queues.handled([inbox_id])
            return
        handled = await self._inbound.handle(inbound)
        if not handled.duplicate:
            await self.sender.deliver(handled.entries)

    async def _inbound_of(self, message: dict[str, Any], inbox_id: str | None) -> Inbound | None:
        envelope = message.get("envelope")
        if not isinstance(envelope, dict):
            return None
        uuid = envelope.get("sourceUuid")
        data = envelope.get("dataMessage")
        if not isinstance(uuid, str) or not uuid or not isinstance(data, dict):
            return None  # receipts, typing, sync messages, or no sender to answer
        if data.get("groupInfo"):
            return None  # tipline never takes reports in groups
        text = data.get("message")
        text = text if isinstance(text, str) else ""
        attachments = [a for a in data.get("attachments") or [] if isinstance(a, dict)]
        await self._configure(uuid)
        inbound = Inbound(
            CHANNEL,
            uuid,
            update_id=f"{uuid}:{envelope.get('timestamp')}",
            numbered=True,
            inbox_id=inbox_id,
        )
        if attachments:
            attachment = await self._download(attachments, text)
            if not attachment.data:
                return replace(inbound, file_refused=True)
            return replace(inbound, attachment=attachment)
        return replace(inbound, text=text)

    async def _configure(self, uuid: str) -> None:
        """Disappearing messages for every reporter's conversation (once per process)."""
        if uuid in self._configured:
            return
        try:
            await self._api.set_disappearing(uuid, self._disappearing)
            self._configured.add(uuid)
        except Exception as exc:
            log.warning("could not set disappearing messages: %s", type(exc).__name__)

    async def _download(self, attachments: list[dict[str, Any]], caption: str) -> Attachment:
        first = attachments[0]
        data = b""
        for item in attachments:
            attachment_id = item.get("id")
            if not isinstance(attachment_id, str) or not attachment_id.strip():
                continue
            size = item.get("size")
            try:
                if item is first and not (isinstance(size, int) and size > MAX_FILE_BYTES):
                    data = await self._api.attachment(attachment_id)
            except SignalApiError as exc:
                log.info("attachment download failed: %s", type(exc).__name__)
            finally:
                # Nothing a reporter sent stays on the signal-cli server.
                with contextlib.suppress(Exception):
                    await self._api.delete_attachment(attachment_id)
        return Attachment(data, caption or None)

    async def flush(self) -> int:
        """Deliver what is due in the outbox (tests, the retry loop)."""
        return await self.sender.flush()


class SignalTransport:
    """The outbox's way into signal-cli-rest-api: one Signal message per outbound message."""

    def __init__(
        self,
        api: Any,
        on_untrusted: Callable[[str], Awaitable[bool]] | None,
        on_reporter_changed: Callable[[str, bool], Awaitable[bool]] | None = None,
    ) -> None:
        self._api = api
        self._on_untrusted = on_untrusted
        self._on_reporter_changed = on_reporter_changed

    async def send(self, chat: str, messages: Sequence[Shown]) -> list[str]:
        """Send each message; their timestamps (Signal's message refs)."""
        refs = []
        for message in messages:
            private = isinstance(message, Notice) and message.private
            refs.append(await self._send(chat, _render(message), private=private))
        return refs

    async def send_files(self, chat: str, caption: str, files: Sequence[OutgoingFile]) -> list[str]:
        """One Signal message with the files as attachments (``base64_attachments``)."""
        attachments = [
            f"data:{f.mime};filename={f.name.replace('/', '-')};base64,"
            + base64.b64encode(f.data).decode()
            for f in files
        ]
        return [await self._send(chat, caption, attachments)]

    async def _send(
        self,
        recipient: str,
        text: str,
        attachments: Sequence[str] = (),
        *,
        private: bool = False,
    ) -> str:
        for _ in range(2):
            try:
                if attachments:
                    return str(await self._api.send(recipient, text, attachments) or "")
                return str(await self._api.send(recipient, text) or "")
            except UntrustedIdentity as exc:
                address = f"{CHANNEL}:{recipient}"
                if self._on_untrusted is not None and await self._on_untrusted(address):
                    # Never silently for a lawyer: suspended until an admin re-verifies.
                    log.warning("a lawyer's safety number changed; lawyer suspended")
                    raise Undeliverable from exc
                # A reporter: the questionnaire trusts on first use; a lawyer's message is held
                # (it is kept unread) until the receipt code is proved from the new identity.
                if self._on_reporter_changed is not None and not await self._on_reporter_changed(
                    address, private
                ):
                    raise Undeliverable from exc
                await self._api.trust(recipient)
            except SignalApiError as exc:
                log.info("signal send deferred: %s", type(exc).__name__)
                if exc.retryable:
                    raise Deferred from exc
                raise Undeliverable from exc
        raise Deferred

    async def edit(self, chat: str, ref: str, messages: Sequence[Shown]) -> bool:
        """Signal messages are not edited in place."""
        return False

    async def delete(self, chat: str, ref: str) -> None:
        """Remote delete of a message we sent (its ref is its timestamp), on top of the
        disappearing-message timer; a refusal is quietly nothing, a network error is retried."""
        if not ref.isdigit():
            return
        try:
            await self._api.remote_delete(chat, int(ref))
        except SignalApiError as exc:
            log.info("signal remote delete failed: %s", type(exc).__name__)
            if exc.retryable:
                raise Deferred from exc


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` or until ``stop``; whether it was stopped."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


async def _until_stopped(
    stream: AsyncIterator[dict[str, Any]], stop: asyncio.Event
) -> AsyncIterator[dict[str, Any]]:
    """Items of ``stream`` until it ends or ``stop`` is set (checked between items)."""
    iterator = aiter(stream)
    stopped = asyncio.create_task(stop.wait())
    try:
        while True:
            item = asyncio.ensure_future(anext(iterator))
            await asyncio.wait({item, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not item.done():
                item.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await item
                return
            if isinstance(item.exception(), StopAsyncIteration):
                return
            yield item.result()
    finally:
        stopped.cancel()
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


def _render(message: Outbound) -> str:
    if isinstance(message, Question):
        return render_numbered(message)
    if isinstance(message, Notice):
        return render_notice(message)
    return ""
