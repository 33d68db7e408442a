"""Telegram adapter (python-telegram-bot 22): updates to domain events, outbound to API calls.

Thin by design: no conversation state lives here or in PTB (no persistence at all); every
update goes through the intake service, which keeps the encrypted draft. The chat is cleared as
the conversation goes: the reporter's messages at once, the bot's questions at the next turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import warnings
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from telegram import (
    CallbackQuery,
    InputFile,
    MaybeInaccessibleMessage,
    Message,
    PhotoSize,
    Update,
    User,
)
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    BaseUpdateProcessor,
    ContextTypes,
    TypeHandler,
)
from telegram.warnings import PTBUserWarning

from bot.channels.telegram_http import AiohttpRequest
from bot.channels.telegram_polling import WatchedPollingRequest, polling_error_callback
from bot.domain.messages import (
    Choose,
    Done,
    Event,
    Invalid,
    Notice,
    Outbound,
    Question,
    Skip,
    Stop,
    Toggle,
    action_of,
    notices_then_question,
)
from bot.media import MAX_FILE_BYTES
from bot.outage import Outage
from bot.services.clock import Clock
from bot.services.inbound import Inbound, InboundService
from bot.services.intake import Attachment
from bot.services.outbox import Deferred, OutboxSender, OutgoingFile, Shown, Undeliverable
from bot.services.ports import UnitOfWork
from bot.services.queues import ChannelQueues

log = logging.getLogger(__name__)
# The transport asks for raw results (do_api_request) where PTB has a typed method: building PTB's
# Message from every answer cost more CPU than the request, and only the message id is kept.
warnings.filterwarnings("ignore", r"Please use 'Bot\.", PTBUserWarning)
# Opt in to PTB's coming behaviour (durations as timedelta) instead of its deprecation warning.
os.environ.setdefault("PTB_TIMEDELTA", "true")

CHANNEL = "telegram"
ALLOWED_UPDATES = ["message", "edited_message", "callback_query"]
SEND_ATTEMPTS = 4
#: The Bot API's limit on a message's text, in characters.
MAX_TEXT = 4096
#: ... and on a document's caption.
MAX_CAPTION = 1024
#: Updates handled at once across chats (each chat's own updates still go one at a time):
#: enough to keep the Bot API's round trips overlapping for many reporters at once.
MAX_CONCURRENT_UPDATES = 16
#: Connections to the Bot API: enough to overlap the round trips of many chats at once.
CONNECTION_POOL_SIZE = 8
DEFAULT_API = "https://api.telegram.org"

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """Where Telegram delivers updates, and where we listen behind the reverse proxy."""

    url: str
    secret: str
    listen: str = "127.0.0.1"
    port: int = 8443

    @property
    def path(self) -> str:
        """The URL path the local server answers on."""
        return urlsplit(self.url).path.lstrip("/")


def api_urls(base: str | None) -> tuple[str, str]:
    """Bot API and file URLs for a server root (``https://api.telegram.org`` by default)."""
    root = (base or DEFAULT_API).rstrip("/").removesuffix("/bot")
    return f"{root}/bot", f"{root}/file/bot"


def application_builder(token: str, base_url: str | None) -> ApplicationBuilder:  # type: ignore[type-arg]
    """PTB as the channel runs it: API URLs, updates ordered per chat, a small connection pool
    on aiohttp (bot/channels/telegram_http.py)."""
    api, files = api_urls(base_url)
    return (
        ApplicationBuilder()
        .token(token)
        .base_url(api)
        .base_file_url(files)
        .concurrent_updates(ChatOrderedProcessor(MAX_CONCURRENT_UPDATES))
        .request(AiohttpRequest(CONNECTION_POOL_SIZE))
    )


def callback_event(data: str | None) -> Event:
    """A button press as a domain event; unknown or stale data is simply invalid."""
    if not data:
        return Invalid()
    act = action_of(data)
    if act is not None:
        return act
    kind, _, option = data.partition(":")
    if kind == "c" and option:
        return Choose(option)
    if kind == "t" and option:
        return Toggle(option)
    simple: dict[str, Event] = {"d": Done(), "s": Skip(), "x": Stop()}
    return simple.get(data, Invalid())


#: An inline keyboard as the Bot API takes it (``reply_markup``), built as JSON-ready rows: PTB's
#: keyboard objects were built and then turned back into dicts for every message sent.
Markup = dict[str, list[list[dict[str, str]]]]


def _button(label: str, data: str) -> dict[str, str]:
    return {"text": label, "callback_data": data}


def keyboard(question: Question) -> Markup:
    """Buttons for a question: options (toggles with ✓ on multi-select), then Done, Skip, Stop."""
    labels = question.labels
    rows: list[list[dict[str, str]]] = []
    if not question.free_text and labels.get("kind") != "attachments":
        for option in question.options:
            if question.multi:
                mark = "✓ " if option.selected else ""
                rows.append([_button(mark + option.label, f"t:{option.id}")])
            else:
                rows.append([_button(option.label, f"c:{option.id}")])
    if question.multi or labels.get("kind") == "attachments":
        rows.append([_button(labels["done"], "d")])
    if question.can_skip and labels.get("kind") != "attachments":
        rows.append([_button(labels["skip"], "s")])
    rows.append([_button(labels["stop"], "x")])
    return {"inline_keyboard": rows}


def notice_keyboard(notice: Notice) -> Markup | None:
    """Buttons for a notice's actions (written down, read, done, confirm), one per row."""
    if not notice.actions:
        return None
    return {"inline_keyboard": [[_button(a.label, a.id)] for a in notice.actions]}


def _markup(markup: Markup | None) -> str | None:
    # Form-encoded, a nested value is a JSON string (DESIGN.md section 5).
    return None if markup is None else json.dumps(markup)


def _length(text: str) -> int:
    # Telegram counts in UTF-16 code units: a character outside the BMP counts twice.
    return len(text.encode("utf-16-le")) // 2


def combine(replies: list[Outbound]) -> list[Outbound]:
    """Notices followed by a question, as one message that carries the question's buttons.

    One message instead of several: the buttons sit under the text they answer, and the next
    answer can replace it in place. Left as they are when the joined text would be too long.
    """
    split = notices_then_question(replies)
    if split is None or not split[0] or any(n.actions for n in split[0]):
        return replies
    notices, question = split
    text = "\n\n".join([*(n.text for n in notices), question.text])
    return replies if _length(text) > MAX_TEXT else [replace(question, text=text)]


def _seconds(value: int | float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class ChatOrderedProcessor(BaseUpdateProcessor):
    """Runs updates of different chats concurrently and each chat's updates in arrival order.

    PTB starts one task per update in the order they arrive and none of them yields before
    asking for its chat's lock; asyncio locks are granted first come, first served. At most
    ``workers`` updates are handled at once, counted inside the chat locks: updates waiting
    behind their own chat (one chat flooding the bot) take no place from other chats.
    """

    #: Updates PTB may hand over at once; waiting ones cost a task each, nothing more.
    QUEUED = 1024

    def __init__(self, workers: int) -> None:
        super().__init__(self.QUEUED)
        self._workers = asyncio.Semaphore(workers)
        self._locks: dict[int, asyncio.Lock] = {}
        self._users: dict[int, int] = {}

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        """Await the update's handling while holding its chat's lock and a worker."""
        chat = update.effective_chat if isinstance(update, Update) else None
        if chat is None:
            async with self._workers:
                await coroutine
            return
        key = chat.id
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] = self._users.get(key, 0) + 1
        try:
            async with lock, self._workers:
                await coroutine
        finally:
            self._users[key] -= 1
            if not self._users[key]:  # forget idle chats: no per-chat memory between turns
                del self._users[key], self._locks[key]

    @property
    def chats_in_flight(self) -> int:
        """Chats with an update being handled or waiting (none are remembered after)."""
        return len(self._locks)

    async def initialize(self) -> None:
        """Nothing to set up."""

    async def shutdown(self) -> None:
        """Nothing to release."""


class TelegramTransport:
    """The outbox's way into the Bot API: send, edit in place, delete."""

    def __init__(self, application: Application, sleep: Sleep) -> None:  # type: ignore[type-arg]
        self._application = application
        self._sleep = sleep

    async def send(self, chat: str, messages: Sequence[Shown]) -> list[str]:
        """Send each message (notices before a question joined to it); their message ids."""
        refs = []
        for message in combine(list(messages)):
            markup: Markup | None
            if isinstance(message, Question):
                text, markup = message.text, keyboard(message)
            elif isinstance(message, Notice):
                text, markup = message.text, notice_keyboard(message)
            else:
                continue
            refs.append(await self._send(chat, text, markup))
        return refs

    async def _send(self, chat: str, text: str, markup: Markup | None) -> str:
        bot = self._application.bot
        for _ in range(SEND_ATTEMPTS):
            try:
                sent = await bot.do_api_request(
                    "sendMessage",
                    {
                        "chat_id": int(chat),
                        "text": text,
                        "reply_markup": _markup(markup),
                        "protect_content": True,
                    },
                )
                return str(sent["message_id"])
            except RetryAfter as exc:
                await self._sleep(_seconds(exc.retry_after))
            except (Forbidden, BadRequest) as exc:
                raise Undeliverable from exc
            except TelegramError as exc:  # network errors, timeouts: the outbox retries
                raise Deferred from exc
        raise Deferred

    async def send_files(self, chat: str, caption: str, files: Sequence[OutgoingFile]) -> list[str]:
        """Each file as a protected document, the caption on the first; their message ids."""
        refs = []
        for index, file in enumerate(files):
            document = InputFile(file.data, filename=file.name.replace("/", "-"))
            text = caption[:MAX_CAPTION] if index == 0 and caption else None
            for _ in range(SEND_ATTEMPTS):
                try:
                    sent = await self._application.bot.send_document(
                        chat_id=int(chat), document=document, caption=text, protect_content=True
                    )
                    refs.append(str(sent.message_id))
                    break
                except RetryAfter as exc:
                    await self._sleep(_seconds(exc.retry_after))
                except (Forbidden, BadRequest) as exc:
                    raise Undeliverable from exc
                except TelegramError as exc:
                    raise Deferred from exc
            else:
                raise Deferred
        return refs

    async def edit(self, chat: str, ref: str, messages: Sequence[Shown]) -> bool:
        """Replace a question on screen with the next one (notices joined to it)."""
        combined = combine(list(messages))
        if len(combined) != 1 or not isinstance(question := combined[0], Question):
            return False
        for _ in range(2):
            try:
                await self._application.bot.do_api_request(
                    "editMessageText",
                    {
                        "chat_id": int(chat),
                        "message_id": int(ref),
                        "text": question.text,
                        "reply_markup": _markup(keyboard(question)),
                    },
                )
                return True
            except RetryAfter as exc:
                await self._sleep(_seconds(exc.retry_after))
            except BadRequest as exc:
                return "not modified" in str(exc).lower()
            except (Forbidden, ValueError):
                return False
            except TelegramError as exc:
                raise Deferred from exc
        return False

    async def delete(self, chat: str, ref: str) -> None:
        """Delete a message; older than 48 hours, gone or not ours: quietly nothing."""
        for _ in range(2):
            try:
                await self._application.bot.delete_message(chat_id=int(chat), message_id=int(ref))
                return
            except RetryAfter as exc:
                await self._sleep(_seconds(exc.retry_after))
            except (TelegramError, ValueError):
                return


def _user(user: User | None) -> dict[str, Any] | None:
    if user is None:
        return None
    # The Bot API requires a first name; the reporter's is never kept (DESIGN.md section 5).
    kept: dict[str, Any] = {"id": user.id, "is_bot": user.is_bot, "first_name": "-"}
    if user.language_code:
        kept["language_code"] = user.language_code
    return kept


def _message(message: MaybeInaccessibleMessage | None) -> dict[str, Any] | None:
    if message is None:
        return None
    kept: dict[str, Any] = {
        "message_id": message.message_id,
        "date": int(message.date.timestamp()),
        "chat": {"id": message.chat.id, "type": message.chat.type},
    }
    if not isinstance(message, Message):
        return kept  # inaccessible: its date is 0, as the Bot API sends it
    for name in ("text", "caption"):
        if (value := getattr(message, name)) is not None:
            kept[name] = value
    files = [("document", message.document)] + [("photo", p) for p in message.photo[-1:]]
    for name, file in files:
        if file is not None:
            sent: dict[str, Any] = {"file_id": file.file_id, "file_unique_id": file.file_unique_id}
            if file.file_size is not None:
                sent["file_size"] = file.file_size
            if isinstance(file, PhotoSize):
                sent |= {"width": file.width, "height": file.height}
            kept[name] = [sent] if name == "photo" else sent
    return kept


def stored_form(update: Update) -> dict[str, Any]:
    """What the inbox keeps of an update: what the channel reads, in the Bot API's shape (so
    ``Update.de_json`` reads it back), without names or usernames. Built field by field: PTB's
    ``to_dict`` walked every attribute of every object, a measurable share of an answer."""
    kept: dict[str, Any] = {"update_id": update.update_id}
    for name in ("message", "edited_message"):
        if (message := _message(getattr(update, name))) is not None:
            kept[name] = message | {"from": _user(getattr(update, name).from_user)}
    if (query := update.callback_query) is not None:
        kept["callback_query"] = {
            "id": query.id,
            "from": _user(query.from_user),
            "chat_instance": query.chat_instance,
            "data": query.data,
            "message": _message(query.message),
        }
    return kept


class DurableUpdates(asyncio.Queue[object]):
    """PTB's update queue, where an update is stored (encrypted) before it is queued.

    PTB confirms updates to Telegram with the next ``getUpdates`` offset, and answers a webhook
    delivery with 200, as soon as they are queued, long before their turn commits: a crash in
    between lost them for good. Queued here only once stored, an update survives any crash; it
    leaves the inbox in the transaction of its own turn, and a restart handles what is left.

    Updates are stored in batches, one transaction for all that arrived while the last one
    committed: a poll's updates together, concurrent webhook deliveries together. A webhook
    delivery is answered only once its batch is stored (``wait``); a poll hands its updates over
    at once, and the next poll, which confirms them, waits for :meth:`settled` first.
    """

    def __init__(self, inbox: ChannelQueues, *, wait: bool = False) -> None:
        super().__init__()
        self._inbox = inbox
        self._wait = wait
        self._pending: list[Update] = []
        self._stored: asyncio.Future[None] | None = None
        self._storing: asyncio.Task[None] | None = None
        #: The inbox item of each queued update, by update id.
        self.items: dict[int, str] = {}

    async def put(self, item: object) -> None:
        """Store an update, then queue it (anything else is queued as it is)."""
        if not isinstance(item, Update):
            await super().put(item)
            return
        if self._stored is None:
            self._stored = asyncio.get_running_loop().create_future()
        stored = self._stored
        self._pending.append(item)
        self._store_soon()
        if self._wait:
            await stored

    def _store_soon(self) -> None:
        if self._storing is None or self._storing.done():
            self._storing = asyncio.create_task(self._store())

    async def _store(self) -> None:
        while self._pending:
            batch, stored = self._pending, self._stored
            self._pending, self._stored = [], None
            try:
                ids = await self._inbox.received([stored_form(u) for u in batch])
            except Exception as exc:
                if stored is not None and not stored.done():
                    stored.set_exception(exc)
                    stored.exception()  # a poll has no waiter: retrieved here, not logged
                if not self._wait:  # not confirmed to Telegram yet: the next poll tries again
                    self._pending = batch + self._pending
                    log.warning("storing received updates failed: %s", type(exc).__name__)
                return
            for update, item_id in zip(batch, ids, strict=True):
                self.items[update.update_id] = item_id
                self.put_nowait(update)
            if stored is not None and not stored.done():
                stored.set_result(None)

    async def settled(self) -> None:
        """Wait until every update handed over is stored; NetworkError when storing fails (the
        next poll must not confirm what is not stored)."""
        while self._storing is not None and not self._storing.done():
            await asyncio.shield(self._storing)
        if self._pending:
            self._store_soon()
            assert self._storing is not None
            await asyncio.shield(self._storing)
            if self._pending:
                raise NetworkError("received updates could not be stored")


class TelegramChannel:
    """Runs a PTB application whose only handler hands every update to the inbound service."""

    def __init__(
        self,
        *,
        token: str,
        inbound: InboundService,
        uow: Callable[[], UnitOfWork],
        clock: Clock,
        base_url: str | None = None,
        webhook: WebhookConfig | None = None,
        sleep: Sleep = asyncio.sleep,
        poll_timeout: int = 10,
        edit_window: timedelta = timedelta(hours=23),
        inbox: ChannelQueues | None = None,
        shared_outbox: bool = False,
    ) -> None:
        self._token = token
        self._inbox = inbox
        self._updates = (
            DurableUpdates(inbox, wait=webhook is not None) if inbox is not None else None
        )
        self._inbound = inbound
        self._base_url = base_url
        self._webhook = webhook
        self._sleep = sleep
        self._poll_timeout = poll_timeout
        #: Updates fully handled so far, and those whose handling failed (tests, benchmarks).
        self.handled = 0
        self.failed = 0
        #: Logs where a polling outage starts and ends, instead of a traceback per poll.
        self.outage = Outage("telegram polling")
        self.application = self._build()
        self.transport = TelegramTransport(self.application, sleep)
        self.sender = OutboxSender(
            CHANNEL, uow, self.transport, clock, edit_window=edit_window, shared=shared_outbox
        )
        inbound.senders.register(CHANNEL, self.sender.wake)

    def _build(self) -> Application:  # type: ignore[type-arg]
        builder = application_builder(self._token, self._base_url)
        if self._updates is not None:
            builder = builder.update_queue(self._updates)
        before = self._updates.settled if self._updates is not None else None
        polling = WatchedPollingRequest(self.outage, before=before)
        application = builder.get_updates_request(polling).build()
        application.add_handler(TypeHandler(Update, self._on_update))
        application.add_error_handler(self._on_error)
        return application

    async def run(self, stop: asyncio.Event) -> None:
        """Poll (or serve the webhook) and deliver the outbox until ``stop`` is set."""
        app = self.application
        async with app:
            await app.start()
            sender = asyncio.create_task(self.sender.run(stop))
            await self.drain()
            updater = app.updater
            assert updater is not None
            if self._webhook is not None:
                await updater.start_webhook(
                    listen=self._webhook.listen,
                    port=self._webhook.port,
                    url_path=self._webhook.path,
                    webhook_url=self._webhook.url,
                    secret_token=self._webhook.secret,
                    allowed_updates=ALLOWED_UPDATES,
                )
            else:
                await updater.start_polling(
                    timeout=self._poll_timeout,
                    allowed_updates=ALLOWED_UPDATES,
                    error_callback=polling_error_callback(self.outage),
                )
            log.info("telegram channel running (%s)", "webhook" if self._webhook else "polling")
            await stop.wait()
            await updater.stop()
            await app.stop()
            await sender

    async def drain(self) -> int:
        """Handle the updates a crash left in the inbox (stored, so confirmed to Telegram)."""
        if self._inbox is None:
            return 0
        items = await self._inbox.unhandled()
        for item in items:
            update = Update.de_json(item.payload, self.application.bot)
            await self._one(update, item.id)
        return len(items)

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("telegram error: %s", type(context.error).__name__)

    async def _on_update(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        item = self._updates.items.pop(update.update_id, None) if self._updates else None
        await self._one(update, item)

    async def _one(self, update: Update, inbox_id: str | None) -> None:
        chat = update.effective_chat
        try:
            if chat is None or chat.type != "private":
                if inbox_id is not None and self._inbox is not None:
                    await self._inbox.handled([inbox_id])
                return
            chat_id = str(chat.id)
            try:
                await self._handle(update, chat_id, inbox_id)
            except Exception as exc:  # the reporter gets a calm message, never a traceback
                self.failed += 1
                log.error("telegram update failed: %s", type(exc).__name__)
                notice = Notice(self._inbound.notice(self._language(update), "ui.error"))
                with contextlib.suppress(Exception):
                    await self.transport.send(chat_id, [notice])
        finally:
            self.handled += 1

    @staticmethod
    def _language(update: Update) -> str:
        user = update.effective_user
        code = (user.language_code if user else None) or "en"
        return code.split("-")[0].lower()

    async def _handle(self, update: Update, chat_id: str, inbox_id: str | None) -> None:
        query = update.callback_query
        if query is None:
            await self._handle_update(update, chat_id, inbox_id)
            return
        # The button's spinner stops while the press is handled, not one round trip before.
        await asyncio.gather(self._answer(query), self._handle_update(update, chat_id, inbox_id))

    @staticmethod
    async def _answer(query: CallbackQuery) -> None:
        try:
            await query.answer()
        except Exception as exc:  # never ends the turn early: the press is handled beside it
            log.info("answering a button press failed: %s", type(exc).__name__)

    async def _handle_update(self, update: Update, chat_id: str, inbox_id: str | None) -> None:
        inbound = replace(await self._inbound_of(update, chat_id), inbox_id=inbox_id)
        handled = await self._inbound.handle(inbound)
        if not handled.duplicate:
            await self.sender.deliver(handled.entries)

    async def _inbound_of(self, update: Update, chat_id: str) -> Inbound:
        message = update.message or update.edited_message
        base = Inbound(
            CHANNEL,
            chat_id,
            update_id=str(update.update_id),
            order=update.update_id,
            message_ref=str(message.message_id) if message is not None else None,
            language_hint=self._language(update),
        )
        if update.edited_message is not None:
            return replace(base, edited=True)
        if update.callback_query is not None:
            return replace(base, event=callback_event(update.callback_query.data))
        if message is None:
            return replace(base, event=Invalid())
        if message.text is not None:
            return replace(base, text=message.text)
        if message.photo or message.document:
            data = await self._download(message)
            if data is None:
                return replace(base, file_refused=True)
            return replace(base, attachment=Attachment(data, message.caption))
        return replace(base, event=Invalid())

    async def _download(self, message: Message) -> bytes | None:
        size: int | None
        if message.photo:
            file_id, size = message.photo[-1].file_id, message.photo[-1].file_size
        elif message.document is not None:
            file_id, size = message.document.file_id, message.document.file_size
        else:
            return None
        if size is not None and size > MAX_FILE_BYTES:
            return None
        try:
            telegram_file = await message.get_bot().get_file(file_id)
            data = bytes(await telegram_file.download_as_bytearray())
        except TelegramError as exc:
            log.info("file download failed: %s", type(exc).__name__)
            return None
        return data if len(data) <= MAX_FILE_BYTES else None
