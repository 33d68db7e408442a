"""Telegram adapter (python-telegram-bot 22): updates to domain events, outbound to API calls.

Thin by design: no conversation state lives here or in PTB (no persistence at all); every
update goes through the intake service, which keeps the encrypted draft. The chat is cleared as
the conversation goes: the reporter's messages at once, the bot's questions at the next turn.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from telegram import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message, Update
from telegram.error import BadRequest, Forbidden, RetryAfter, TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    BaseUpdateProcessor,
    ContextTypes,
    TypeHandler,
)

from bot.domain.commands import command_name
from bot.domain.engine import Engine
from bot.domain.messages import (
    ChangeLanguage,
    Choose,
    Done,
    Event,
    Invalid,
    Notice,
    Outbound,
    Question,
    Refused,
    Skip,
    Start,
    Stop,
    TextAnswer,
    Toggle,
    notices_then_question,
)
from bot.domain.receipt import MalformedReceipt, normalize_receipt
from bot.media import MAX_FILE_BYTES
from bot.services.intake import Attachment, IntakeService
from bot.services.lawyers import LawyerService
from bot.services.ratelimit import ChatRateLimiter, Verdict
from bot.services.reporter import status_texts

log = logging.getLogger(__name__)
# Opt in to PTB's coming behaviour (durations as timedelta) instead of its deprecation warning.
os.environ.setdefault("PTB_TIMEDELTA", "true")

CHANNEL = "telegram"
ALLOWED_UPDATES = ["message", "edited_message", "callback_query"]
SEND_ATTEMPTS = 4
#: The Bot API's limit on a message's text, in characters.
MAX_TEXT = 4096
#: Updates handled at once across chats (each chat's own updates still go one at a time):
#: enough to keep the Bot API's round trips overlapping for many reporters at once.
MAX_CONCURRENT_UPDATES = 16
#: Connections to the Bot API. Few on purpose: httpcore checks every idle connection on each
#: request, which cost more CPU than the extra parallelism bought (bench/bench_telegram.py).
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
    """PTB as the channel runs it: API URLs, updates ordered per chat, a small connection pool."""
    api, files = api_urls(base_url)
    return (
        ApplicationBuilder()
        .token(token)
        .base_url(api)
        .base_file_url(files)
        .concurrent_updates(ChatOrderedProcessor(MAX_CONCURRENT_UPDATES))
        .connection_pool_size(CONNECTION_POOL_SIZE)
    )


def callback_event(data: str | None) -> Event:
    """A button press as a domain event; unknown or stale data is simply invalid."""
    if not data:
        return Invalid()
    kind, _, option = data.partition(":")
    if kind == "c" and option:
        return Choose(option)
    if kind == "t" and option:
        return Toggle(option)
    simple: dict[str, Event] = {"d": Done(), "s": Skip(), "x": Stop()}
    return simple.get(data, Invalid())


def keyboard(question: Question) -> InlineKeyboardMarkup:
    """Buttons for a question: options (toggles with ✓ on multi-select), then Done, Skip, Stop."""
    labels = question.labels
    rows: list[list[InlineKeyboardButton]] = []
    if not question.free_text and labels.get("kind") != "attachments":
        for option in question.options:
            if question.multi:
                mark = "✓ " if option.selected else ""
                rows.append(
                    [InlineKeyboardButton(mark + option.label, callback_data=f"t:{option.id}")]
                )
            else:
                rows.append([InlineKeyboardButton(option.label, callback_data=f"c:{option.id}")])
    if question.multi or labels.get("kind") == "attachments":
        rows.append([InlineKeyboardButton(labels["done"], callback_data="d")])
    if question.can_skip and labels.get("kind") != "attachments":
        rows.append([InlineKeyboardButton(labels["skip"], callback_data="s")])
    rows.append([InlineKeyboardButton(labels["stop"], callback_data="x")])
    return InlineKeyboardMarkup(rows)


def _length(text: str) -> int:
    # Telegram counts in UTF-16 code units: a character outside the BMP counts twice.
    return len(text.encode("utf-16-le")) // 2


def combine(replies: list[Outbound]) -> list[Outbound]:
    """Notices followed by a question, as one message that carries the question's buttons.

    One message instead of several: the buttons sit under the text they answer, and the next
    answer can replace it in place. Left as they are when the joined text would be too long.
    """
    split = notices_then_question(replies)
    if split is None or not split[0]:
        return replies
    notices, question = split
    text = "\n\n".join([*(n.text for n in notices), question.text])
    return replies if _length(text) > MAX_TEXT else [replace(question, text=text)]


def _is_receipt(text: str) -> bool:
    try:
        normalize_receipt(text)
    except MalformedReceipt:
        return False
    return True


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


class TelegramChannel:
    """Runs a PTB application whose only handler hands every update to the intake service."""

    def __init__(
        self,
        *,
        token: str,
        intake: IntakeService,
        engine: Engine,
        limiter: ChatRateLimiter,
        lawyers: LawyerService | None = None,
        base_url: str | None = None,
        webhook: WebhookConfig | None = None,
        sleep: Sleep = asyncio.sleep,
        poll_timeout: int = 10,
    ) -> None:
        self._token = token
        self._intake = intake
        self._engine = engine
        self._lawyers = lawyers
        self._limiter = limiter
        self._base_url = base_url
        self._webhook = webhook
        self._sleep = sleep
        self._poll_timeout = poll_timeout
        #: Updates fully handled so far, and those whose handling failed (tests, benchmarks).
        self.handled = 0
        self.failed = 0
        self.application = self._build()

    def _build(self) -> Application:  # type: ignore[type-arg]
        application = application_builder(self._token, self._base_url).build()
        application.add_handler(TypeHandler(Update, self._on_update))
        application.add_error_handler(self._on_error)
        return application

    async def run(self, stop: asyncio.Event) -> None:
        """Poll (or serve the webhook) until ``stop`` is set."""
        app = self.application
        async with app:
            await app.start()
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
                    timeout=self._poll_timeout, allowed_updates=ALLOWED_UPDATES
                )
            log.info("telegram channel running (%s)", "webhook" if self._webhook else "polling")
            await stop.wait()
            await updater.stop()
            await app.stop()

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("telegram error: %s", type(context.error).__name__)

    async def _on_update(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        chat = update.effective_chat
        try:
            if chat is None or chat.type != "private":
                return
            chat_id = str(chat.id)
            try:
                await self._handle(update, chat_id)
            except Exception as exc:  # the reporter gets a calm message, never a traceback
                self.failed += 1
                log.error("telegram update failed: %s", type(exc).__name__)
                notice = self._engine.notice(self._language(update), "ui.error")
                await self._send(chat_id, notice)
        finally:
            self.handled += 1

    @staticmethod
    def _language(update: Update) -> str:
        user = update.effective_user
        code = (user.language_code if user else None) or "en"
        return code.split("-")[0].lower()

    async def _handle(self, update: Update, chat_id: str) -> None:
        query = update.callback_query
        if query is None:
            await self._handle_update(update, chat_id)
            return
        # The button's spinner stops while the press is handled, not one round trip before.
        await asyncio.gather(self._answer(query), self._handle_update(update, chat_id))

    @staticmethod
    async def _answer(query: CallbackQuery) -> None:
        try:
            await query.answer()
        except Exception as exc:  # never ends the turn early: the press is handled beside it
            log.info("answering a button press failed: %s", type(exc).__name__)

    async def _handle_update(self, update: Update, chat_id: str) -> None:
        message = update.message or update.edited_message
        incoming = str(message.message_id) if message is not None else None
        verdict = self._limiter.check(CHANNEL, chat_id)
        if verdict is not Verdict.OK:
            await self._delete(chat_id, incoming)
            if verdict is Verdict.WARN:
                await self._send(
                    chat_id, self._engine.notice(self._language(update), "ui.rate_limited")
                )
            return
        if update.edited_message is not None:
            # An edited answer is not re-read; the edit itself must not linger on screen.
            await self._delete(chat_id, incoming)
            return
        is_command = message is not None and (message.text or "").startswith("/")
        if is_command and message is not None and await self._command(update, message, chat_id):
            return
        event, attachment = await self._event(update, message)
        turn = await self._intake.turn(
            CHANNEL, chat_id, event, update_id=str(update.update_id), attachment=attachment
        )
        if turn.duplicate:
            await self._delete(chat_id, incoming)
            return
        replies = combine(turn.replies)
        stale = [incoming, *turn.to_delete]
        if turn.edit is not None:
            if len(replies) == 1 and isinstance(replies[0], Question):
                edited, *_ = await asyncio.gather(
                    self._edit(chat_id, turn.edit, replies[0]),
                    *(self._delete(chat_id, ref) for ref in stale),
                )
                if edited:
                    return
                stale = []  # deleted already
            stale.append(turn.edit)  # could not edit (too old, gone): replace it instead
        # Replies go out in order; the deletions run alongside them.
        deletions = [self._delete(chat_id, ref) for ref in stale]
        results = await asyncio.gather(self._send_all(chat_id, replies), *deletions)
        sent: list[str] = results[0] or []
        if turn.draft_open:
            await self._intake.track(CHANNEL, chat_id, sent)

    async def _edit(self, chat_id: str, ref: str, question: Question) -> bool:
        for _ in range(2):
            try:
                await self.application.bot.edit_message_text(
                    chat_id=int(chat_id),
                    message_id=int(ref),
                    text=question.text,
                    reply_markup=keyboard(question),
                )
                return True
            except RetryAfter as exc:
                await self._sleep(_seconds(exc.retry_after))
            except BadRequest as exc:
                return "not modified" in str(exc).lower()
            except TelegramError:
                return False
        return False

    async def _send_all(self, chat_id: str, replies: list[Outbound]) -> list[str]:
        return [ref for reply in replies if (ref := await self._send(chat_id, reply))]

    async def _command(self, update: Update, message: Message, chat_id: str) -> bool:
        """Handle commands that are not questionnaire events; False lets the others through."""
        text = message.text or ""
        head, _, rest = text.partition(" ")
        command = command_name(head)
        language = self._language(update)
        if self._lawyers is not None and command == "reply" and _is_receipt(rest.split(" ")[0]):
            await self._delete(chat_id, str(message.message_id))
            code, _, body = rest.partition(" ")
            answer = await self._lawyers.reporter_reply(code, body, language)
            await self._reply_tracked(chat_id, Notice(answer))
            return True
        if self._lawyers is not None and self._lawyers.is_staff_command(text):
            await self._delete(chat_id, str(message.message_id))
            for reply in await self._lawyers.command(f"{CHANNEL}:{chat_id}", text, language):
                await self._send(chat_id, Notice(reply))
            return True
        if command == "status":
            await self._delete(chat_id, str(message.message_id))  # the code must not stay
            if not rest.strip():
                await self._reply_tracked(chat_id, self._engine.notice(language, "ui.status_usage"))
                return True
            for text in await status_texts(self._intake, self._lawyers, rest, language):
                await self._reply_tracked(chat_id, Notice(text))
            return True
        if command == "forget":
            await self._delete(chat_id, str(message.message_id))
            for ref in await self._intake.forget(CHANNEL, chat_id):
                await self._delete(chat_id, ref)
            await self._send(chat_id, self._engine.notice(language, "ui.forgotten"))
            return True
        if command == "help":
            await self._delete(chat_id, str(message.message_id))
            await self._reply_tracked(chat_id, self._engine.notice(language, "ui.help_telegram"))
            return True
        return False

    async def notify(self, chat_id: str, text: str) -> bool:
        """Deliver a text from the lawyer side (a case notice, a lawyer's reply)."""
        return await self._send(chat_id, Notice(text)) is not None

    async def _reply_tracked(self, chat_id: str, notice: Notice) -> None:
        ref = await self._send(chat_id, notice)
        if ref:
            await self._intake.track(CHANNEL, chat_id, [ref])

    async def _event(
        self, update: Update, message: Message | None
    ) -> tuple[Event, Attachment | None]:
        if update.callback_query is not None:
            return callback_event(update.callback_query.data), None
        if message is None:
            return Invalid(), None
        if message.text is not None:
            if message.text.startswith("/"):
                command = command_name(message.text.split()[0])
                commands: dict[str, Event] = {
                    "start": Start(self._language(update)),
                    "language": ChangeLanguage(),
                    "cancel": Stop(),
                    "stop": Stop(),
                }
                return commands.get(command, Invalid()), None
            return TextAnswer(message.text), None
        if message.photo or message.document:
            data = await self._download(message)
            if data is None:
                return Refused(), None
            return Invalid(), Attachment(data, message.caption)
        return Invalid(), None

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

    async def _send(self, chat_id: str, message: Outbound) -> str | None:
        if isinstance(message, Question):
            text, markup = message.text, keyboard(message)
        elif isinstance(message, Notice):
            text, markup = message.text, None
        else:
            return None
        bot = self.application.bot
        for _ in range(SEND_ATTEMPTS):
            try:
                sent = await bot.send_message(
                    chat_id=int(chat_id), text=text, reply_markup=markup, protect_content=True
                )
                return str(sent.message_id)
            except RetryAfter as exc:
                await self._sleep(_seconds(exc.retry_after))
            except (Forbidden, BadRequest) as exc:
                log.info("send refused: %s", type(exc).__name__)
                return None
        log.warning("send gave up after %d rate limits", SEND_ATTEMPTS)
        return None

    async def _delete(self, chat_id: str, ref: str | None) -> None:
        if ref is None:
            return
        bot = self.application.bot
        for _ in range(2):
            try:
                await bot.delete_message(chat_id=int(chat_id), message_id=int(ref))
                return
            except RetryAfter as exc:
                await self._sleep(_seconds(exc.retry_after))
            except (TelegramError, ValueError):
                # Older than 48 hours, already gone, or not ours: carry on quietly.
                return
