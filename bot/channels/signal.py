"""Signal adapter over signal-cli-rest-api: numbered questions, nothing lost on crashes.

Every received envelope is stored encrypted before it is handled and removed afterwards, so a
crash between receive and handling loses nothing (signal-cli has already consumed it). Every
outgoing message goes through an encrypted outbox and is retried with backoff until Signal takes
it. Senders are keyed by ``sourceUuid`` (``sourceNumber`` may be null); numbers and UUIDs are
never stored in clear nor logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

from bot.channels.signal_api import SignalApiError, UntrustedIdentity
from bot.domain.engine import Engine
from bot.domain.messages import (
    ChangeLanguage,
    Event,
    Notice,
    Outbound,
    Question,
    Reply,
    Start,
    Stop,
)
from bot.domain.render import render_numbered
from bot.media import MAX_FILE_BYTES
from bot.services.clock import Clock
from bot.services.intake import Attachment, IntakeService
from bot.services.lawyers import LawyerService
from bot.services.queues import SignalQueues
from bot.services.ratelimit import ChatRateLimiter, Verdict
from bot.services.reporter import status_texts

log = logging.getLogger(__name__)

CHANNEL = "signal"
MAX_BACKOFF = 600.0
STOP_GRACE = 10.0

Sleep = Callable[[float], Awaitable[None]]


class Crash(Exception):
    """Raised by test hooks to stop the channel where a real crash would."""


class SignalChannel:
    """Receives (normal polling or json-rpc websocket), handles, and sends through an outbox."""

    def __init__(
        self,
        *,
        api: Any,
        intake: IntakeService,
        engine: Engine,
        limiter: ChatRateLimiter,
        queues: SignalQueues,
        clock: Clock,
        lawyers: LawyerService | None = None,
        mode: str = "normal",
        disappearing_seconds: int = 86400,
        sleep: Sleep = asyncio.sleep,
        use_inbox: bool = True,
        after_store: Callable[[], None] | None = None,
    ) -> None:
        self._api = api
        self._intake = intake
        self._engine = engine
        self._limiter = limiter
        self._queues = queues
        self._clock = clock
        self._lawyers = lawyers
        self._mode = mode
        self._disappearing = disappearing_seconds
        self._sleep = sleep
        self._use_inbox = use_inbox
        self._after_store = after_store
        self._configured: set[str] = set()
        self._flush_lock = asyncio.Lock()
        #: Envelopes handled and handlers that failed (tests, benchmarks).
        self.handled = 0
        self.failed = 0
        self.reconnects = 0

    # ---- running -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, *, outbox_every: float = 5.0) -> None:
        """Drain what a crash left, then receive and retry sends until ``stop`` is set."""
        await self.drain()
        receive = asyncio.create_task(self._receive_loop(stop))
        retry = asyncio.create_task(self._outbox_loop(stop, outbox_every))
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
                    if not stop.is_set():
                        self.reconnects += 1
                    continue
                messages = await self._api.receive(wait_seconds=1)
                if messages:
                    await self.ingest_batch(messages)
                backoff = 0.5
            except Crash:
                raise
            except Exception as exc:
                log.warning("signal receive failed: %s", type(exc).__name__)
                self.reconnects += 1
                await self._sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    async def _outbox_loop(self, stop: asyncio.Event, every: float) -> None:
        while not stop.is_set():
            waiter = asyncio.create_task(stop.wait())
            await asyncio.wait(
                {asyncio.ensure_future(self._sleep(every)), waiter},
                return_when=asyncio.FIRST_COMPLETED,
            )
            waiter.cancel()
            if not stop.is_set():
                await self.flush()

    # ---- inbox ---------------------------------------------------------------------------

    async def ingest(self, message: dict[str, Any]) -> None:
        """Store an envelope (encrypted) before handling it; remove it once handled."""
        await self.ingest_batch([message])

    async def ingest_batch(self, messages: list[dict[str, Any]]) -> None:
        """Store a received batch in one transaction, handle each, then remove them together.

        A crash part-way leaves the batch in the inbox; handled envelopes are recognised on
        the rerun (their updates were claimed), so nothing is lost and nothing doubles.
        """
        if not self._use_inbox:
            for message in messages:
                await self._process(message)
            return
        ids = await self._queues.received(messages)
        if self._after_store is not None:
            self._after_store()
        for message in messages:
            await self._process(message)
        await self._queues.handled(ids)

    async def drain(self) -> int:
        """Handle envelopes a crash left in the inbox; returns how many."""
        items = await self._queues.unhandled()
        for item in items:
            await self._process(item.payload)
            await self._queues.handled([item.id])
        return len(items)

    async def _process(self, message: dict[str, Any]) -> None:
        try:
            await self.handle_envelope(message)
        except Crash:
            raise
        except Exception as exc:  # a poison envelope must not block the others
            self.failed += 1
            log.error("signal envelope failed: %s", type(exc).__name__)
        self.handled += 1

    # ---- handling ------------------------------------------------------------------------

    async def handle_envelope(self, message: dict[str, Any]) -> None:
        """Turn one received envelope into domain events and answers."""
        envelope = message.get("envelope")
        if not isinstance(envelope, dict):
            return
        uuid = envelope.get("sourceUuid")
        data = envelope.get("dataMessage")
        if not isinstance(uuid, str) or not uuid or not isinstance(data, dict):
            return  # receipts, typing, sync messages, or no sender to answer
        if data.get("groupInfo"):
            return  # tipline never takes reports in groups
        text = data.get("message")
        text = text if isinstance(text, str) else ""
        attachments = [a for a in data.get("attachments") or [] if isinstance(a, dict)]
        verdict = self._limiter.check(CHANNEL, uuid)
        if verdict is Verdict.DROP:
            return
        if verdict is Verdict.WARN:
            await self.send(uuid, self._engine.notice("en", "ui.rate_limited").text)
            return
        await self._configure(uuid)
        update_id = f"{uuid}:{envelope.get('timestamp')}"
        word = text.strip().lower()
        if await self._command(uuid, text, word):
            return
        attachment = await self._download(attachments, text) if attachments else None
        event: Event
        if word == "start":
            event = Start()
        elif word == "language":
            event = ChangeLanguage()
        elif word in ("cancel", "stop"):
            event = Stop()
        else:
            event = Reply(text)
        turn = await self._intake.turn(
            CHANNEL, uuid, event, update_id=update_id, attachment=attachment
        )
        if turn.duplicate:
            return
        for reply in turn.replies:
            await self.send(uuid, _render(reply))

    async def _command(self, uuid: str, text: str, word: str) -> bool:
        lawyers = self._lawyers
        address = f"{CHANNEL}:{uuid}"
        language = "en"
        if lawyers is not None and lawyers.is_staff_command(text):
            for answer in await lawyers.command(address, text, language):
                await self.send(uuid, answer)
            return True
        head, _, rest = text.strip().partition(" ")
        if head.lower() == "status" and rest.strip():
            for message in await status_texts(self._intake, lawyers, rest, language):
                await self.send(uuid, message)
            return True
        if head.lower() == "reply" and lawyers is not None and rest.strip():
            code, _, body = rest.strip().partition(" ")
            await self.send(uuid, await lawyers.reporter_reply(code, body, language))
            return True
        if word == "forget":
            await self._intake.forget(CHANNEL, uuid)
            await self.send(uuid, self._engine.notice(language, "ui.forgotten").text)
            return True
        if word == "help":
            await self.send(uuid, self._engine.notice(language, "ui.help_signal").text)
            return True
        return False

    async def _configure(self, uuid: str) -> None:
        """Disappearing messages for every reporter's conversation (once per process)."""
        if uuid in self._configured:
            return
        try:
            await self._api.set_disappearing(uuid, self._disappearing)
            self._configured.add(uuid)
        except Exception as exc:
            log.warning("could not set disappearing messages: %s", type(exc).__name__)

    async def _download(self, attachments: list[dict[str, Any]], caption: str) -> Attachment | None:
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

    # ---- outbox --------------------------------------------------------------------------

    async def notify(self, uuid: str, text: str) -> bool:
        """Deliver a lawyer-side text (case notice, lawyer reply) through the outbox."""
        await self.send(uuid, text)
        return True

    async def send(self, uuid: str, text: str) -> None:
        """Queue a message (encrypted) and try to deliver everything due, in order."""
        await self._queues.enqueue(uuid, text)
        await self.flush()

    async def flush(self) -> int:
        """Send what is due; failures wait with exponential backoff. Returns messages sent."""
        async with self._flush_lock:
            now = self._clock()
            items = await self._queues.outgoing()
            sent = 0
            blocked: set[str] = set()
            for item in items:
                recipient = str(item.payload["to"])
                if recipient in blocked or item.next_attempt_at > now:
                    blocked.add(recipient)  # one recipient's messages go out in order
                    continue
                outcome = await self._deliver(recipient, str(item.payload["text"]))
                if outcome in ("sent", "dropped"):
                    await self._queues.sent(item.id)
                    sent += outcome == "sent"
                else:
                    blocked.add(recipient)
                    delay = min(2.0 ** (item.attempts + 1), MAX_BACKOFF)
                    await self._queues.later(item.id, timedelta(seconds=delay), item.attempts + 1)
            return sent

    async def _deliver(self, recipient: str, text: str) -> str:
        for _ in range(2):
            try:
                await self._api.send(recipient, text)
                return "sent"
            except UntrustedIdentity:
                address = f"{CHANNEL}:{recipient}"
                if self._lawyers is not None and await self._lawyers.is_staff(address):
                    # Never silently for a lawyer: suspend until an admin re-verifies.
                    await self._lawyers.identity_changed(address)
                    log.warning("a lawyer's safety number changed; lawyer suspended")
                    return "dropped"
                await self._api.trust(recipient)  # reporters: trust on first use
            except SignalApiError as exc:
                log.info("signal send deferred: %s", type(exc).__name__)
                return "retry" if exc.retryable else "dropped"
        return "retry"


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
        return message.text
    return ""
