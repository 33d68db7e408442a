"""Telegram's webhook deliveries, served on aiohttp: each update is stored before it is answered.

PTB's webhook server (tornado) parsed every delivery into an ``Update`` that the channel turned
straight back into a dict to store it: in a profile of ``tipline run`` behind the proxy that
round trip and tornado's request handling were a sixth of the process's CPU. Its handler also
logs each delivery's body at DEBUG. This server hands the JSON, as Telegram sent it, to the
channel's durable queue and answers 200 only once the update is stored, so that Telegram keeps
(and sends again) whatever a crash would otherwise lose. The answer may carry one Bot API call,
as Telegram allows: the channel stops a pressed button's spinner that way, one request fewer.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

#: The header that carries the secret given to ``setWebhook`` (Bot API).
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 (a header name)
#: The largest delivery accepted: updates are a few KiB (files come by reference, not inline).
MAX_BODY = 1024 * 1024
#: How long a stop waits for deliveries being stored before it closes their connections.
STOP_GRACE = 10.0

#: Stores an update; returns a Bot API call to make in the answer (``{"method": ...}``), or None.
Accept = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]


class WebhookServer:
    """One POST route that takes Telegram's deliveries: the secret token checked in constant
    time, a JSON object with an integer ``update_id`` handed to ``accept``, 200 once it
    returned (the update is stored; with the call it returned, if any), 500 if it failed
    (Telegram delivers it again)."""

    def __init__(self, path: str, secret: str, accept: Accept) -> None:
        if not secret:
            raise ValueError("a webhook needs a secret token")
        self._path = "/" + path.lstrip("/")
        self._secret = secret.encode()
        self._accept = accept
        self._runner: web.AppRunner | None = None

    async def start(self, listen: str, port: int) -> None:
        """Listen on ``listen:port`` (behind the reverse proxy)."""
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post(self._path, self._post)
        # No access log: a line per delivery would say when each reporter wrote.
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=STOP_GRACE
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, listen, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner

    async def stop(self) -> None:
        """Stop listening; deliveries already being stored finish first."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _post(self, request: web.Request) -> web.Response:
        # Header bytes that are not UTF-8 come as surrogates: kept, so they compare unequal.
        token = request.headers.get(SECRET_HEADER, "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(token, self._secret):
            return web.Response(status=403)
        if request.content_type != "application/json":
            return web.Response(status=415)
        try:
            update = json.loads(await request.read())
        except ValueError:  # not JSON, or not UTF-8
            return web.Response(status=400)
        update_id = update.get("update_id") if isinstance(update, dict) else None
        if type(update_id) is not int:
            return web.Response(status=400)
        try:
            call = await self._accept(update)
        except Exception as exc:  # not stored: Telegram keeps it and delivers it again
            log.warning("a webhook delivery could not be stored: %s", type(exc).__name__)
            return web.Response(status=500)
        if call is None:
            return web.Response(status=200)
        return web.json_response(call)
