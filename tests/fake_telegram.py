"""A fake Telegram Bot API on 127.0.0.1 that behaves like the real one where tipline relies on it.

It follows the Bot API's wire format: JSON, form-urlencoded or multipart requests (a nested
value may come as a JSON string, which the real server parses in a JSON body too), ``{"ok":
true, "result": ...}`` answers with full Message objects, ``getUpdates`` offsets that confirm
(and drop) earlier updates, ``deleteMessage`` rules and error texts (48 hours, "message to
delete not found"), 429 with ``parameters.retry_after``, callback query ids that
``answerCallbackQuery`` must name, and webhook delivery with ``X-Telegram-Bot-Api-Secret-Token``,
whose 2xx answer may carry one Bot API call (``method`` and its parameters), which it makes.
With ``webhook_retry`` an update stays queued until the webhook answers 2xx and is retried in
order, as the real Bot API does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

TOKEN = "1234567:TESTtokenTESTtokenTESTtokenTESTtoken"
BOT_USER = {"id": 123456789, "is_bot": True, "first_name": "Tipline", "username": "tipline_bot"}
DELETE_WINDOW = 48 * 3600


@dataclass
class SentMessage:
    """A message the bot sent, as the server keeps it."""

    chat_id: int
    message_id: int
    text: str
    protect_content: bool
    reply_markup: dict[str, Any] | None
    date: int


@dataclass
class FakeBotApi:
    """State of the fake server; tests drive users through it and inspect what the bot did."""

    token: str = TOKEN
    now: float = field(default_factory=lambda: 1_770_000_000.0)
    updates: list[dict[str, Any]] = field(default_factory=list)
    next_update_id: int = 1000
    next_message_id: dict[int, int] = field(default_factory=lambda: defaultdict(lambda: 1))
    messages: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    deleted: set[tuple[int, int]] = field(default_factory=set)
    sent: list[SentMessage] = field(default_factory=list)
    #: Every text a bot message showed, in order: (chat_id, message_id, text) on each send and
    #: each edit (``sent`` keeps only the latest text of a message).
    shown: list[tuple[int, int, str]] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    #: Documents the bot uploaded (sendDocument): chat_id, name, data, caption, protect.
    documents: list[dict[str, Any]] = field(default_factory=list)
    rate_limit: dict[str, list[int]] = field(default_factory=dict)
    webhook_url: str | None = None
    webhook_secret: str | None = None
    users: dict[int, dict[str, Any]] = field(default_factory=dict)
    confirmed: int = 0
    webhook_statuses: list[int] = field(default_factory=list)
    delete_failures: int = 0
    edits: int = 0
    #: Button presses sent to the bot, and those it answered (its spinner stopped), by query id.
    presses: list[str] = field(default_factory=list)
    answered: list[str] = field(default_factory=list)
    #: Bot API calls the bot made in its answer to a webhook delivery (as Telegram allows).
    replied: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    _new_update: asyncio.Event = field(default_factory=asyncio.Event)
    runner: web.AppRunner | None = None
    port: int = 0
    #: Keep each update until the webhook answers 2xx and retry it, in order (the real Bot API's
    #: behaviour). Off by default: other tests look at the status of a single delivery.
    webhook_retry: bool = False
    #: Pause between failed deliveries (the real API backs off for longer; tests need speed).
    webhook_retry_delay: float = 0.05
    #: Deliveries that got no answer at all (connection refused or dropped).
    webhook_unreachable: int = 0
    #: Called with the method name as each Bot API request arrives (crash tests time kills).
    on_request: Callable[[str], None] | None = None
    #: Called with the number of updates handed to the bot: returned by getUpdates, or a
    #: webhook delivery answered 2xx (after which the server forgets it).
    on_handover: Callable[[int], None] | None = None
    _webhook_wake: asyncio.Event = field(default_factory=asyncio.Event)
    _webhook_task: asyncio.Task[None] | None = None

    # ---- server --------------------------------------------------------------------------

    async def start(self) -> str:
        """Serve on a free port of 127.0.0.1; returns the server root URL."""
        app = web.Application(client_max_size=30 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._api)
        app.router.add_get("/file/bot{token}/{path:.*}", self._file)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        sockets = site._server.sockets  # type: ignore[union-attr]
        self.port = sockets[0].getsockname()[1]
        if self.webhook_retry:
            self._webhook_task = asyncio.create_task(self._webhook_loop())
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        """Shut the server down."""
        if self._webhook_task is not None:
            self._webhook_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._webhook_task
        if self.runner is not None:
            await self.runner.cleanup()

    @staticmethod
    def _ok(result: Any) -> web.Response:
        return web.json_response({"ok": True, "result": result})

    @staticmethod
    def _error(code: int, description: str, **parameters: Any) -> web.Response:
        body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
        if parameters:
            body["parameters"] = parameters
        return web.json_response(body, status=code)

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            ctype = request.content_type
            if ctype == "application/json":
                params.update(await request.json())
            else:
                form = await request.post()
                params.update({k: v for k, v in form.items() if isinstance(v, str)})
                uploads = {
                    k: (v.filename, v.file.read())
                    for k, v in form.items()
                    if isinstance(v, web.FileField)
                }
                if uploads:
                    params["_uploads"] = uploads
        for key in ("reply_markup", "allowed_updates"):
            if isinstance(params.get(key), str):
                params[key] = json.loads(params[key])
        return params

    async def _api(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return self._error(401, "Unauthorized")
        method = request.match_info["method"]
        params = await self._params(request)
        self.calls.append((method, params))
        if self.on_request is not None:
            self.on_request(method)
        pending = self.rate_limit.get(method)
        if pending:
            retry_after = pending.pop(0)
            return self._error(
                429, f"Too Many Requests: retry after {retry_after}", retry_after=retry_after
            )
        handler = getattr(self, f"_m_{method}", None)
        if handler is None:
            return self._error(404, "Not Found")
        result: web.StreamResponse = await handler(params)
        return result

    async def _file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.Response(status=401)
        data = self.files.get(request.match_info["path"])
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data)

    # ---- methods -------------------------------------------------------------------------

    async def _m_getMe(self, params: dict[str, Any]) -> web.Response:
        return self._ok(BOT_USER | {"can_join_groups": False, "supports_inline_queries": False})

    async def _m_deleteWebhook(self, params: dict[str, Any]) -> web.Response:
        self.webhook_url = None
        return self._ok(True)

    async def _m_setWebhook(self, params: dict[str, Any]) -> web.Response:
        self.webhook_url = params["url"]
        self.webhook_secret = params.get("secret_token")
        self._webhook_wake.set()
        return self._ok(True)

    async def _m_getUpdates(self, params: dict[str, Any]) -> web.Response:
        if self.webhook_url:
            return self._error(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        offset = int(params.get("offset", 0) or 0)
        if offset:
            self.updates = [u for u in self.updates if u["update_id"] >= offset]
            self.confirmed = max(self.confirmed, offset - 1)
        limit = int(params.get("limit", 100) or 100)
        timeout = float(params.get("timeout", 0) or 0)
        if not self.updates and timeout > 0:
            self._new_update.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_update.wait(), timeout=min(timeout, 2.0))
        handed = self.updates[:limit]
        if handed and self.on_handover is not None:
            self.on_handover(len(handed))
        return self._ok(handed)

    def _message(self, chat_id: int, **fields: Any) -> dict[str, Any]:
        message_id = self.next_message_id[chat_id]
        self.next_message_id[chat_id] += 1
        chat = {"id": chat_id, "type": "private", "first_name": "R"}
        message = {"message_id": message_id, "date": int(self.now), "chat": chat} | fields
        self.messages[(chat_id, message_id)] = message
        return message

    async def _m_sendMessage(self, params: dict[str, Any]) -> web.Response:
        chat_id = int(params["chat_id"])
        text = params.get("text", "")
        if chat_id not in self.users:
            return self._error(400, "Bad Request: chat not found")
        if not text:
            return self._error(400, "Bad Request: message text is empty")
        if len(text) > 4096:
            return self._error(400, "Bad Request: message is too long")
        markup = params.get("reply_markup")
        protect = str(params.get("protect_content", "false")).lower() == "true"
        message = self._message(chat_id, **{"from": BOT_USER, "text": text})
        if markup:
            message["reply_markup"] = markup
        self.sent.append(
            SentMessage(chat_id, message["message_id"], text, protect, markup, int(self.now))
        )
        self.shown.append((chat_id, message["message_id"], text))
        return self._ok(message)

    async def _m_deleteMessage(self, params: dict[str, Any]) -> web.Response:
        key = (int(params["chat_id"]), int(params["message_id"]))
        message = self.messages.get(key)
        if message is None or key in self.deleted:
            self.delete_failures += 1
            return self._error(400, "Bad Request: message to delete not found")
        if self.now - message["date"] > DELETE_WINDOW:
            self.delete_failures += 1
            return self._error(400, "Bad Request: message can't be deleted")
        self.deleted.add(key)
        return self._ok(True)

    async def _m_editMessageText(self, params: dict[str, Any]) -> web.Response:
        key = (int(params["chat_id"]), int(params["message_id"]))
        message = self.messages.get(key)
        if message is None or key in self.deleted:
            return self._error(400, "Bad Request: message to edit not found")
        if not message["from"]["is_bot"]:
            return self._error(400, "Bad Request: message can't be edited")
        text = params.get("text", "")
        if not text:
            return self._error(400, "Bad Request: message text is empty")
        markup = params.get("reply_markup")
        if text == message.get("text") and markup == message.get("reply_markup"):
            return self._error(
                400,
                "Bad Request: message is not modified: specified new message content and reply "
                "markup are exactly the same as a current content and reply markup of the message",
            )
        message["text"] = text
        message["edit_date"] = int(self.now)
        message.pop("reply_markup", None)  # an edit without a keyboard removes the old one
        if markup:
            message["reply_markup"] = markup
        for sent in self.sent:
            if (sent.chat_id, sent.message_id) == key:
                sent.text, sent.reply_markup = text, markup
        self.shown.append((*key, text))
        self.edits += 1
        return self._ok(message)

    async def _m_sendDocument(self, params: dict[str, Any]) -> web.Response:
        """A file uploaded as multipart/form-data (``document``), with an optional caption."""
        chat_id = int(params["chat_id"])
        if chat_id not in self.users:
            return self._error(400, "Bad Request: chat not found")
        upload = params.get("_uploads", {}).get("document")
        if upload is None:
            return self._error(400, "Bad Request: there is no document in the request")
        caption = params.get("caption", "")
        if len(caption) > 1024:
            return self._error(400, "Bad Request: message caption is too long")
        name, data = upload
        protect = str(params.get("protect_content", "false")).lower() == "true"
        message = self._message(
            chat_id,
            **{
                "from": BOT_USER,
                "document": {
                    "file_id": f"doc{len(self.documents)}",
                    "file_unique_id": f"udoc{len(self.documents)}",
                    "file_name": name,
                    "file_size": len(data),
                },
            },
        )
        if caption:
            message["caption"] = caption
        self.documents.append(
            {"chat_id": chat_id, "name": name, "data": data, "caption": caption, "protect": protect}
        )
        return self._ok(message)

    async def _m_answerCallbackQuery(self, params: dict[str, Any]) -> web.Response:
        query = str(params.get("callback_query_id", ""))
        if query not in self.presses:
            return self._error(
                400,
                "Bad Request: query is too old and response timeout expired or query ID is invalid",
            )
        self.answered.append(query)
        return self._ok(True)

    async def _m_getFile(self, params: dict[str, Any]) -> web.Response:
        file_id = params["file_id"]
        data = self.files.get(file_id)
        if data is None:
            return self._error(400, "Bad Request: invalid file_id")
        if len(data) > 20 * 1024 * 1024:
            return self._error(400, "Bad Request: file is too big")
        return self._ok(
            {
                "file_id": file_id,
                "file_unique_id": f"u{file_id}",
                "file_size": len(data),
                "file_path": file_id,
            }
        )

    # ---- users ---------------------------------------------------------------------------

    def _user(self, chat_id: int, language: str | None) -> dict[str, Any]:
        user = {
            "id": chat_id,
            "is_bot": False,
            "first_name": "Reporter",
            "username": f"user{chat_id}",
        }
        if language:
            user["language_code"] = language
        self.users[chat_id] = user
        return user

    async def _deliver(self, update: dict[str, Any]) -> None:
        if self.webhook_retry:
            # Queued as for getUpdates; the delivery loop hands it to the webhook while one is
            # set, and getUpdates still answers 409 meanwhile.
            self.updates.append(update)
            self._new_update.set()
            self._webhook_wake.set()
            return
        if self.webhook_url:
            headers = {"Content-Type": "application/json"}
            if self.webhook_secret:
                headers["X-Telegram-Bot-Api-Secret-Token"] = self.webhook_secret
            async with (
                aiohttp.ClientSession() as session,
                session.post(self.webhook_url, data=json.dumps(update), headers=headers) as r,
            ):
                self.webhook_statuses.append(r.status)
                await self._reply_call(r)
        else:
            self.updates.append(update)
            self._new_update.set()

    async def _reply_call(self, response: aiohttp.ClientResponse) -> None:
        """Make the Bot API call a 2xx webhook answer carries (``method`` and its parameters,
        as JSON), as Telegram does; its result goes nowhere."""
        if not 200 <= response.status < 300 or response.content_type != "application/json":
            return
        params = await response.json()
        method = params.pop("method", None) if isinstance(params, dict) else None
        handler = getattr(self, f"_m_{method}", None) if isinstance(method, str) else None
        if handler is not None:
            self.replied.append((str(method), params))
            await handler(params)

    async def _webhook_loop(self) -> None:
        """Deliver queued updates one at a time, oldest first, until the webhook answers 2xx."""
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                url = self.webhook_url
                if not self.updates or url is None:
                    self._webhook_wake.clear()
                    await self._webhook_wake.wait()
                    continue
                update = self.updates[0]
                headers = {"Content-Type": "application/json"}
                if self.webhook_secret:
                    headers["X-Telegram-Bot-Api-Secret-Token"] = self.webhook_secret
                status = 0
                try:
                    async with session.post(url, data=json.dumps(update), headers=headers) as r:
                        status = r.status
                        await self._reply_call(r)
                except (aiohttp.ClientError, TimeoutError):
                    self.webhook_unreachable += 1
                if status:
                    self.webhook_statuses.append(status)
                if 200 <= status < 300:
                    if self.updates and self.updates[0] is update:
                        self.updates.pop(0)
                    self.confirmed = max(self.confirmed, update["update_id"])
                    if self.on_handover is not None:
                        self.on_handover(1)
                else:
                    await asyncio.sleep(self.webhook_retry_delay)

    def _update(self, **fields: Any) -> dict[str, Any]:
        update = {"update_id": self.next_update_id} | fields
        self.next_update_id += 1
        return update

    async def text(self, chat_id: int, text: str, language: str | None = "en") -> dict[str, Any]:
        """The user sends a text message; returns the update."""
        user = self._user(chat_id, language)
        message = self._message(chat_id, **{"from": user, "text": text})
        if text.startswith("/"):
            length = len(text.split()[0])
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": length}]
        update = self._update(message=message)
        await self._deliver(update)
        return update

    async def press(
        self, chat_id: int, message_id: int, data: str, language: str | None = "en"
    ) -> dict[str, Any]:
        """The user presses an inline button under one of the bot's messages."""
        user = self._user(chat_id, language)
        message = self.messages[(chat_id, message_id)]
        query = {
            "id": str(self.next_update_id),
            "from": user,
            "chat_instance": "ci",
            "data": data,
            "message": message,
        }
        update = self._update(callback_query=query)
        self.presses.append(str(query["id"]))
        await self._deliver(update)
        return update

    async def photo(self, chat_id: int, data: bytes, caption: str | None = None) -> dict[str, Any]:
        """The user sends a photo (the server keeps the bytes for getFile)."""
        user = self._user(chat_id, "en")
        file_id = f"photo{len(self.files)}"
        self.files[file_id] = data
        sizes = [
            {
                "file_id": file_id,
                "file_unique_id": f"u{file_id}",
                "width": 10,
                "height": 10,
                "file_size": len(data),
            }
        ]
        fields: dict[str, Any] = {"from": user, "photo": sizes}
        if caption:
            fields["caption"] = caption
        update = self._update(message=self._message(chat_id, **fields))
        await self._deliver(update)
        return update

    async def document(self, chat_id: int, data: bytes, name: str, mime: str) -> dict[str, Any]:
        """The user sends a file as a document."""
        user = self._user(chat_id, "en")
        file_id = f"doc{len(self.files)}"
        self.files[file_id] = data
        doc = {
            "file_id": file_id,
            "file_unique_id": f"u{file_id}",
            "file_name": name,
            "mime_type": mime,
            "file_size": len(data),
        }
        update = self._update(message=self._message(chat_id, **{"from": user, "document": doc}))
        await self._deliver(update)
        return update

    async def sticker(self, chat_id: int) -> dict[str, Any]:
        """The user sends something tipline does not take."""
        user = self._user(chat_id, "en")
        sticker = {
            "file_id": "s",
            "file_unique_id": "us",
            "type": "regular",
            "width": 1,
            "height": 1,
            "is_animated": False,
            "is_video": False,
        }
        update = self._update(message=self._message(chat_id, **{"from": user, "sticker": sticker}))
        await self._deliver(update)
        return update

    async def redeliver(self, update: dict[str, Any]) -> None:
        """Deliver the same update (same update_id) again, as Telegram may after a restart."""
        await self._deliver(update)

    # ---- inspection ----------------------------------------------------------------------

    def visible(self, chat_id: int) -> list[dict[str, Any]]:
        """Messages still on the user's screen, oldest first."""
        return [
            m
            for (c, mid), m in sorted(self.messages.items())
            if c == chat_id and (c, mid) not in self.deleted
        ]

    def last_question(self, chat_id: int) -> SentMessage:
        """The newest bot message that has buttons."""
        return next(s for s in reversed(self.sent) if s.chat_id == chat_id and s.reply_markup)

    def buttons(self, chat_id: int) -> dict[str, str]:
        """Label -> callback data of the newest question's buttons."""
        markup = self.last_question(chat_id).reply_markup or {}
        return {b["text"]: b["callback_data"] for row in markup["inline_keyboard"] for b in row}

    def updates_handed_over(self) -> bool:
        """Whether the bot has confirmed every update queued so far."""
        return not self.updates or self.confirmed >= self.updates[-1]["update_id"]


async def until(predicate: Any, limit: float = 10.0) -> None:
    """Wait for a condition the bot brings about over HTTP (bounded, never for a clock)."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.005)


async def _serve(port: int) -> None:
    """Run the fake alone (for benchmarks), with control routes to act as many users."""
    fake = FakeBotApi()

    async def text(request: web.Request) -> web.Response:
        body = await request.json()
        for chat in body["chats"]:
            await fake.text(int(chat), body["text"])
        return web.json_response(True)

    async def press(request: web.Request) -> web.Response:
        body = await request.json()
        for chat in body["chats"]:
            question = fake.last_question(int(chat))
            await fake.press(int(chat), question.message_id, body["data"])
        return web.json_response(True)

    app = web.Application()
    app.router.add_route("*", "/bot{token}/{method}", fake._api)
    app.router.add_post("/control/text", text)
    app.router.add_post("/control/press", press)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    import sys

    asyncio.run(_serve(int(sys.argv[1])))
