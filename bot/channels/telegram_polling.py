"""Telegram polling that reports outages to ``bot.outage`` instead of a traceback per poll.

PTB retries a failed ``getUpdates`` for ever, logging each failure through the polling error
callback (with a traceback by default) and telling nobody when a poll works again. This module
watches the polling connection itself: every poll's outcome goes to an ``Outage``, which logs
the first failure and the first success after it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

# PTB's own alias for its timeout parameters, to override do_request with the same signature.
from telegram._utils.types import ODVInput
from telegram.error import BadRequest, NetworkError, TelegramError
from telegram.request import BaseRequest, RequestData

from bot.channels.telegram_http import AiohttpRequest
from bot.outage import Outage

__all__ = ["WatchedPollingRequest", "polling_error_callback"]


class WatchedPollingRequest(AiohttpRequest):
    """The ``getUpdates`` connection (one, as PTB's default), telling an Outage how polls go.

    ``before`` runs ahead of every poll: a poll confirms the updates of the one before it, so
    it waits there until they are stored.
    """

    def __init__(self, outage: Outage, before: Callable[[], Awaitable[None]] | None = None) -> None:
        super().__init__(connection_pool_size=1)
        self._outage = outage
        self._before = before

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        write_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        connect_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        pool_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        """Send as AiohttpRequest does; a network error or a 5xx counts as a failed poll."""
        try:
            if self._before is not None:
                await self._before()
            status, body = await super().do_request(
                url,
                method,
                request_data,
                read_timeout=read_timeout,
                write_timeout=write_timeout,
                connect_timeout=connect_timeout,
                pool_timeout=pool_timeout,
            )
        except NetworkError as exc:  # TimedOut included
            self._outage.failed(exc)
            raise
        if status >= 500:
            self._outage.failed(f"HTTP {status}")
        elif status < 300:
            self._outage.answered()
        # Other answers (409 conflict, 429, 401) reach PTB and the error callback as they are.
        return status, body


def polling_error_callback(outage: Outage) -> Callable[[TelegramError], None]:
    """An ``error_callback`` for ``start_polling`` that logs through ``outage``, not a traceback."""

    def on_error(exc: TelegramError) -> None:
        # Network errors and 5xx were counted by the request already; the rest (409, 400) not.
        if not isinstance(exc, NetworkError) or isinstance(exc, BadRequest):
            outage.failed(exc)

    return on_error
