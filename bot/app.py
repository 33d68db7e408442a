"""``tipline run``: every configured channel and the background jobs in one event loop."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Coroutine
from typing import Any

from bot.channels.signal import SignalChannel
from bot.channels.signal_api import SignalApi
from bot.channels.telegram import TelegramChannel, WebhookConfig
from bot.jobs import expiry_job, staff_job, stoppable_sleep
from bot.runtime import Runtime
from bot.services.queues import SignalQueues
from bot.services.ratelimit import ChatRateLimiter

log = logging.getLogger(__name__)


def telegram_channel(runtime: Runtime) -> TelegramChannel:
    """The Telegram adapter as configured (polling, or webhook with a secret token)."""
    settings = runtime.settings
    assert settings.telegram_token is not None
    webhook = None
    if settings.telegram_webhook_url and settings.telegram_webhook_secret:
        webhook = WebhookConfig(
            url=settings.telegram_webhook_url,
            secret=settings.telegram_webhook_secret.get_secret_value(),
            listen=settings.telegram_webhook_listen,
            port=settings.telegram_webhook_port,
        )
    channel = TelegramChannel(
        token=settings.telegram_token.get_secret_value(),
        intake=runtime.intake,
        engine=runtime.conversation,
        limiter=ChatRateLimiter(runtime.vault.keyring.pseudonym, runtime.clock),
        lawyers=runtime.lawyers,
        base_url=settings.telegram_base_url,
        webhook=webhook,
    )
    runtime.notifier.register("telegram", channel.notify)
    return channel


def signal_channel(runtime: Runtime) -> tuple[SignalChannel, SignalApi]:
    """The Signal adapter as configured (normal polling by default, or json-rpc)."""
    settings = runtime.settings
    assert settings.signal_api_url is not None
    assert settings.signal_number is not None
    api = SignalApi(settings.signal_api_url, settings.signal_number.get_secret_value())
    channel = SignalChannel(
        api=api,
        intake=runtime.intake,
        engine=runtime.conversation,
        limiter=ChatRateLimiter(runtime.vault.keyring.pseudonym, runtime.clock),
        queues=SignalQueues(runtime.uow, runtime.clock),
        clock=runtime.clock,
        lawyers=runtime.lawyers,
        mode=settings.signal_mode.value,
        disappearing_seconds=settings.signal_disappearing_seconds,
    )
    runtime.notifier.register("signal", channel.notify)
    return channel, api


async def serve(runtime: Runtime, stop: asyncio.Event | None = None) -> None:
    """Run until SIGINT/SIGTERM (or ``stop``): channels plus the expiry job."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    tasks: list[Coroutine[Any, Any, None]] = []
    if runtime.settings.telegram_enabled:
        tasks.append(telegram_channel(runtime).run(stop))
    signal_api = None
    if runtime.settings.signal_enabled:
        signal_adapter, signal_api = signal_channel(runtime)
        tasks.append(signal_adapter.run(stop))
    interval = runtime.settings.purge_interval_minutes * 60
    sleep = stoppable_sleep(stop)
    tasks.append(expiry_job(runtime.admin, interval, sleep=sleep, stop=stop))
    tasks.append(
        staff_job(
            runtime.lawyers,
            runtime.settings.escalation_interval_seconds,
            sleep=sleep,
            stop=stop,
        )
    )
    log.info("tipline running")
    try:
        await asyncio.gather(*tasks)
    finally:
        if signal_api is not None:
            await signal_api.aclose()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    log.info("tipline stopped")
