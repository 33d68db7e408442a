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
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from telegram import InputFile
from telegram._utils.defaultvalue import DEFAULT_NONE

# PTB's own alias for its timeout parameters, to override get_updates with the same signature.
from telegram._utils.types import JSONDict, ODVInput, TimePeriod
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError
from telegram.ext import Application, ApplicationBuilder, ExtBot
from telegram.warnings import PTBUserWarning

from bot.channels.telegram_http import AiohttpRequest
from bot.channels.telegram_polling import WatchedPollingRequest, polling_error_callback
from bot.channels.telegram_webhook import WebhookServer
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
#: Deliveries Telegram may have open at once to one webhook (the Bot API's default).
WEBHOOK_CONNECTIONS = 40
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
    """PTB with the channel's HTTP: API URLs and a small connection pool on aiohttp
    (bot/channels/telegram_http.py)."""
    api, files = api_urls(base_url)
    return (
        ApplicationBuilder()
        .token(token)
        .base_url(api)
        .base_file_url(files)
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


class ChatOrder:
    """Runs updates of different chats concurrently and each chat's updates in arrival order.

    Updates are started in the order they arrive and none yields before asking for its chat's
    lock; asyncio locks are granted first come, first served. At most ``workers`` updates are
    handled at once, counted inside the chat locks: updates waiting behind their own chat (one
    chat flooding the bot) take no place from other chats.
    """

    def __init__(self, workers: int) -> None:
        self._workers = asyncio.Semaphore(workers)
        self._locks: dict[int, asyncio.Lock] = {}
        self._users: dict[int, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, chat: int | None, coroutine: Coroutine[Any, Any, None]) -> None:
        """Handle an update in a task of its own, after its chat's earlier updates."""
        task = asyncio.create_task(self._run(chat, coroutine))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, chat: int | None, coroutine: Coroutine[Any, Any, None]) -> None:
        if chat is None:
            async with self._workers:
                await coroutine
            return
        lock = self._locks.setdefault(chat, asyncio.Lock())
        self._users[chat] = self._users.get(chat, 0) + 1
        try:
            async with lock, self._workers:
                await coroutine
        finally:
            self._users[chat] -= 1
            if not self._users[chat]:  # forget idle chats: no per-chat memory between turns
                del self._users[chat], self._locks[chat]

    async def join(self) -> None:
        """Wait for every update started so far."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def chats_in_flight(self) -> int:
        """Chats with an update being handled or waiting (none are remembered after)."""
        return len(self._locks)


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


@dataclass(frozen=True, slots=True)
class Received:
    """An update as the Bot API sent it; PTB's Updater reads nothing of it but its id."""

    update_id: int
    data: JSONDict


class ReceivingBot(ExtBot[None]):
    """PTB's bot, whose ``getUpdates`` hands over each update as the Bot API sent it.

    PTB builds its objects from every update received (``Update.de_json``), which cost more
    CPU than the poll's request; the channel reads a few fields of the update's stored form.
    """

    __slots__ = ("_poll_read",)

    def __init__(self, *, get_updates_request: AiohttpRequest, **kwargs: Any) -> None:
        self._poll_read = get_updates_request.read_timeout or 0
        super().__init__(get_updates_request=get_updates_request, **kwargs)

    async def get_updates(  # type: ignore[override]
        self,
        offset: int | None = None,
        limit: int | None = None,
        timeout: TimePeriod | None = None,  # noqa: ASYNC109 - PTB's signature
        allowed_updates: Sequence[str] | None = None,
        *,
        read_timeout: ODVInput[float] = DEFAULT_NONE,
        write_timeout: ODVInput[float] = DEFAULT_NONE,
        connect_timeout: ODVInput[float] = DEFAULT_NONE,
        pool_timeout: ODVInput[float] = DEFAULT_NONE,
        api_kwargs: JSONDict | None = None,
    ) -> tuple[Received, ...]:
        """The updates after ``offset``, as sent (a long poll of ``timeout`` seconds)."""
        wait = _seconds(timeout) if timeout is not None else 0.0
        read = read_timeout if isinstance(read_timeout, (int, float)) else self._poll_read
        data: JSONDict = {"offset": offset, "limit": limit}
        if timeout is not None:
            data["timeout"] = int(wait)
        if allowed_updates is not None:
            data["allowed_updates"] = json.dumps(list(allowed_updates))
        result = await self.do_api_request(
            "getUpdates",
            {k: v for k, v in data.items() if v is not None} | (api_kwargs or {}),
            read_timeout=read + wait,
            write_timeout=write_timeout,
            connect_timeout=connect_timeout,
            pool_timeout=pool_timeout,
        )
        return tuple(Received(update["update_id"], update) for update in result)


def _user(user: JSONDict | None) -> JSONDict | None:
    if user is None:
        return None
    # The Bot API requires a first name; the reporter's is never kept (DESIGN.md section 5).
    kept: JSONDict = {"id": user.get("id"), "is_bot": user.get("is_bot", False), "first_name": "-"}
    if user.get("language_code"):
        kept["language_code"] = user["language_code"]
    return kept


def _file(sent: JSONDict) -> JSONDict:
    kept: JSONDict = {name: sent[name] for name in ("file_id", "file_unique_id") if name in sent}
    for name in ("file_size", "width", "height"):
        if sent.get(name) is not None:
            kept[name] = sent[name]
    return kept


def _message(message: JSONDict | None) -> JSONDict | None:
    if message is None:
        return None
    # Read leniently, as PTB did: an update this cannot store would be fetched again for ever.
    chat = message.get("chat") or {}
    kept: JSONDict = {
        "message_id": message.get("message_id"),
        "date": message.get("date", 0),
        "chat": {"id": chat.get("id"), "type": chat.get("type")},
    }
    if not kept["date"]:
        return kept  # inaccessible: its date is 0, as the Bot API sends it
    for name in ("text", "caption"):
        if message.get(name) is not None:
            kept[name] = message[name]
    if message.get("document") is not None:
        kept["document"] = _file(message["document"])
    if message.get("photo"):
        kept["photo"] = [_file(message["photo"][-1])]
    return kept


def stored_form(update: JSONDict) -> JSONDict:
    """What the inbox keeps of an update (as the Bot API sent it): what the channel reads, in
    the Bot API's shape, without names or usernames."""
    kept: JSONDict = {"update_id": update["update_id"]}
    for name in ("message", "edited_message"):
        if (message := _message(update.get(name))) is not None:
            kept[name] = message | {"from": _user(update[name].get("from"))}
    if (query := update.get("callback_query")) is not None:
        kept["callback_query"] = {
            "id": query.get("id"),
            "from": _user(query.get("from")),
            "chat_instance": query.get("chat_instance"),
            "data": query.get("data"),
            "message": _message(query.get("message")),
        }
    return kept


def _sent_by(form: JSONDict) -> JSONDict | None:
    # The message or button press an update carries (what has a chat and a sender).
    found: JSONDict | None = (
        form.get("message") or form.get("edited_message") or form.get("callback_query")
    )
    return found


def chat_of(form: JSONDict) -> JSONDict | None:
    """The chat an update (stored form) comes from; None for a press on an inline message."""
    sent = _sent_by(form)
    if sent is None:
        return None
    message = sent.get("message") if "callback_query" in form else sent
    chat: JSONDict | None = message.get("chat") if message else None
    return chat


def language_of(form: JSONDict) -> str:
    """The sender's language code (its first part), ``en`` when the messenger gives none."""
    sent = _sent_by(form)
    user = (sent or {}).get("from") or {}
    code = user.get("language_code") or "en"
    return str(code).split("-")[0].lower()


#: What the channel does with an update once it is stored: its stored form and inbox item.
Handle = Callable[[JSONDict, str], None]


class DurableUpdates(asyncio.Queue[object]):
    """PTB's update queue, where an update is stored (encrypted) before it is handled.

    PTB confirms updates to Telegram with the next ``getUpdates`` offset as soon as they are
    queued, long before their turn commits (and so did its webhook server, with its 200): a
    crash in between lost them for good. Handed to the channel only once stored, an update
    survives any crash; it leaves the inbox in the transaction of its own turn, and a restart
    handles what is left. PTB's own dispatch never sees an update: the channel handles the
    stored form. Webhook deliveries come here from bot/channels/telegram_webhook.py.

    Updates are stored in batches, one transaction for all that arrived while the last one
    committed: a poll's updates together, concurrent webhook deliveries together. A webhook
    delivery is answered only once its batch is stored (``wait``); a poll hands its updates over
    at once, and the next poll, which confirms them, waits for :meth:`settled` first.
    """

    def __init__(self, inbox: ChannelQueues, handle: Handle, *, wait: bool = False) -> None:
        super().__init__()
        self._inbox = inbox
        self._handle = handle
        self._wait = wait
        self._pending: list[JSONDict] = []
        self._stored: asyncio.Future[None] | None = None
        self._storing: asyncio.Task[None] | None = None

    async def put(self, item: object) -> None:
        """Store an update, then hand it to the channel (anything else is queued for PTB)."""
        if isinstance(item, Received):  # a poll's update, or a webhook delivery
            form = stored_form(item.data)
        else:
            await super().put(item)
            return
        if self._stored is None:
            self._stored = asyncio.get_running_loop().create_future()
        stored = self._stored
        self._pending.append(form)
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
                ids = await self._inbox.received(batch)
            except Exception as exc:
                if stored is not None and not stored.done():
                    stored.set_exception(exc)
                    stored.exception()  # a poll has no waiter: retrieved here, not logged
                if not self._wait:  # not confirmed to Telegram yet: the next poll tries again
                    self._pending = batch + self._pending
                    log.warning("storing received updates failed: %s", type(exc).__name__)
                return
            for form, item_id in zip(batch, ids, strict=True):
                self._handle(form, item_id)
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
    """Runs PTB's updater and bot; every update goes, once stored, to the inbound service."""

    def __init__(
        self,
        *,
        token: str,
        inbound: InboundService,
        uow: Callable[[], UnitOfWork],
        clock: Clock,
        inbox: ChannelQueues,
        base_url: str | None = None,
        webhook: WebhookConfig | None = None,
        sleep: Sleep = asyncio.sleep,
        poll_timeout: int = 10,
        edit_window: timedelta = timedelta(hours=23),
        shared_outbox: bool = False,
    ) -> None:
        self._token = token
        self._inbox = inbox
        self._order = ChatOrder(MAX_CONCURRENT_UPDATES)
        self._updates = DurableUpdates(inbox, self._received, wait=webhook is not None)
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
        api, files = api_urls(self._base_url)
        polling = WatchedPollingRequest(self.outage, before=self._updates.settled)
        bot = ReceivingBot(
            token=self._token,
            base_url=api,
            base_file_url=files,
            request=AiohttpRequest(CONNECTION_POOL_SIZE),
            get_updates_request=polling,
        )
        return ApplicationBuilder().bot(bot).update_queue(self._updates).build()

    async def run(self, stop: asyncio.Event) -> None:
        """Poll (or serve the webhook) and deliver the outbox until ``stop`` is set."""
        app = self.application
        async with app:
            await app.start()
            sender = asyncio.create_task(self.sender.run(stop))
            await self.drain()
            updater = app.updater
            assert updater is not None
            server = None
            if self._webhook is not None:
                hook = self._webhook
                server = WebhookServer(hook.path, hook.secret, self._delivered)
                await server.start(hook.listen, hook.port)  # listening before Telegram is told
                try:
                    await app.bot.set_webhook(
                        url=hook.url,
                        secret_token=hook.secret,
                        allowed_updates=ALLOWED_UPDATES,
                        max_connections=WEBHOOK_CONNECTIONS,
                    )
                except BaseException:
                    await server.stop()
                    raise
            else:
                await updater.start_polling(
                    timeout=self._poll_timeout,
                    allowed_updates=ALLOWED_UPDATES,
                    error_callback=polling_error_callback(self.outage),
                )
            log.info("telegram channel running (%s)", "webhook" if self._webhook else "polling")
            await stop.wait()
            if server is not None:
                await server.stop()
            else:
                await updater.stop()
            await self._order.join()
            await app.stop()
            await sender

    async def drain(self) -> int:
        """Handle the updates a crash left in the inbox (stored, so confirmed to Telegram)."""
        items = await self._inbox.unhandled()
        for item in items:
            await self._one(item.payload, item.id)
        return len(items)

    async def _delivered(self, update: JSONDict) -> JSONDict | None:
        # A webhook delivery, as Telegram sent it: returns once stored (DurableUpdates, wait).
        await self._updates.put(Received(update["update_id"], update))
        query = update.get("callback_query")
        if isinstance(query, dict) and isinstance(query.get("id"), str):
            # The button's spinner stops with the answer to the delivery (a call Telegram makes
            # on our behalf): no request of our own. Stored first, so a crash before this answer
            # leaves the delivery to come again, and be answered then.
            return {"method": "answerCallbackQuery", "callback_query_id": query["id"]}
        return None

    def _received(self, form: JSONDict, item_id: str) -> None:
        chat = chat_of(form)
        self._order.start(chat["id"] if chat else None, self._one(form, item_id))

    async def _one(self, form: JSONDict, inbox_id: str | None) -> None:
        chat = chat_of(form)
        try:
            if chat is None or chat.get("type") != "private" or chat.get("id") is None:
                if inbox_id is not None:
                    await self._inbox.handled([inbox_id])
                return
            chat_id = str(chat["id"])
            try:
                await self._handle(form, chat_id, inbox_id)
            except Exception as exc:  # the reporter gets a calm message, never a traceback
                self.failed += 1
                log.error("telegram update failed: %s", type(exc).__name__)
                notice = Notice(self._inbound.notice(language_of(form), "ui.error"))
                with contextlib.suppress(Exception):
                    await self.transport.send(chat_id, [notice])
        finally:
            self.handled += 1

    async def _handle(self, form: JSONDict, chat_id: str, inbox_id: str | None) -> None:
        query = form.get("callback_query")
        if query is None or self._webhook is not None:  # a webhook's press is answered already
            await self._handle_update(form, chat_id, inbox_id)
            return
        # The button's spinner stops while the press is handled, not one round trip before.
        await asyncio.gather(
            self._answer(str(query["id"])), self._handle_update(form, chat_id, inbox_id)
        )

    async def _answer(self, query_id: str) -> None:
        try:
            await self.application.bot.do_api_request(
                "answerCallbackQuery", {"callback_query_id": query_id}
            )
        except Exception as exc:  # never ends the turn early: the press is handled beside it
            log.info("answering a button press failed: %s", type(exc).__name__)

    async def _handle_update(self, form: JSONDict, chat_id: str, inbox_id: str | None) -> None:
        inbound = replace(await self._inbound_of(form, chat_id), inbox_id=inbox_id)
        handled = await self._inbound.handle(inbound)
        if not handled.duplicate:
            await self.sender.deliver(handled.entries)

    async def _inbound_of(self, form: JSONDict, chat_id: str) -> Inbound:
        message: JSONDict | None = form.get("message") or form.get("edited_message")
        update_id = int(form["update_id"])
        base = Inbound(
            CHANNEL,
            chat_id,
            update_id=str(update_id),
            order=update_id,
            message_ref=str(message["message_id"]) if message is not None else None,
            language_hint=language_of(form),
        )
        if form.get("edited_message") is not None:
            return replace(base, edited=True)
        if (query := form.get("callback_query")) is not None:
            return replace(base, event=callback_event(query.get("data")))
        if message is None:
            return replace(base, event=Invalid())
        if message.get("text") is not None:
            return replace(base, text=message["text"])
        if message.get("photo") or message.get("document"):
            data = await self._download(message)
            if data is None:
                return replace(base, file_refused=True)
            return replace(base, attachment=Attachment(data, message.get("caption")))
        return replace(base, event=Invalid())

    async def _download(self, message: JSONDict) -> bytes | None:
        sent: JSONDict = message["photo"][-1] if message.get("photo") else message["document"]
        size = sent.get("file_size")
        if size is not None and size > MAX_FILE_BYTES:
            return None
        try:
            telegram_file = await self.application.bot.get_file(sent["file_id"])
            data = bytes(await telegram_file.download_as_bytearray())
        except TelegramError as exc:
            log.info("file download failed: %s", type(exc).__name__)
            return None
        return data if len(data) <= MAX_FILE_BYTES else None
