"""``tipline run``: every configured channel and the background jobs in one event loop."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bot.channels.signal import SignalChannel
from bot.channels.signal_api import SignalApi
from bot.channels.telegram import TelegramChannel, WebhookConfig
from bot.jobs import Sleep, erase_job, expiry_job, staff_job, stoppable_sleep
from bot.runtime import Runtime
from bot.services.queues import ChannelQueues
from storage.locks import SessionLock, listen, notify

#: The advisory lock that elects the one Signal receiver among processes on one database.
SIGNAL_RECEIVER = "signal-receiver"
#: The notification an admin's remote lock sends to every process on the database.
LOCK_CHANNEL = "tipline_lock"

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
    return TelegramChannel(
        token=settings.telegram_token.get_secret_value(),
        inbound=runtime.inbound,
        uow=runtime.uow,
        clock=runtime.clock,
        base_url=settings.telegram_base_url,
        webhook=webhook,
        edit_window=runtime.intake.policy.edit_window,
        inbox=ChannelQueues(runtime.uow, runtime.clock, "telegram"),
        shared_outbox=runtime.shared,
    )


def signal_channel(runtime: Runtime) -> tuple[SignalChannel, SignalApi]:
    """The Signal adapter as configured (normal polling by default, or json-rpc)."""
    settings = runtime.settings
    assert settings.signal_api_url is not None
    assert settings.signal_number is not None
    api = SignalApi(settings.signal_api_url, settings.signal_number.get_secret_value())
    channel = SignalChannel(
        api=api,
        inbound=runtime.inbound,
        uow=runtime.uow,
        queues=ChannelQueues(runtime.uow, runtime.clock),
        clock=runtime.clock,
        on_untrusted=runtime.roster.identity_changed_if_staff,
        mode=settings.signal_mode.value,
        disappearing_seconds=settings.signal_disappearing_seconds,
        role=SessionLock(runtime.engine, SIGNAL_RECEIVER),
        shared_outbox=runtime.shared,
    )
    return channel, api


@dataclass(slots=True)
class RunState:
    """What ``tipline status`` shows of a running instance: its channels and its jobs' rounds."""

    channels: dict[str, str] = field(default_factory=dict)
    jobs: dict[str, datetime | None] = field(default_factory=dict)


async def serve(runtime: Runtime, stop: asyncio.Event | None = None) -> None:
    """Run until SIGINT/SIGTERM (or ``stop``): channels plus the expiry job."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await serve_unlocked(runtime, stop)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    log.info("tipline stopped")


async def serve_unlocked(
    runtime: Runtime, stop: asyncio.Event, state: RunState | None = None
) -> None:
    """Every configured channel and the jobs until ``stop``; one failing sets it for the rest."""
    state = state if state is not None else RunState()
    tasks: list[Coroutine[Any, Any, None]] = []
    if runtime.settings.telegram_enabled:
        tasks.append(_channel(state, "telegram", telegram_channel(runtime).run(stop)))
    signal_api = None
    if runtime.settings.signal_enabled:
        signal_adapter, signal_api = signal_channel(runtime)
        tasks.append(_channel(state, "signal", signal_adapter.run(stop)))
    interval = runtime.settings.purge_interval_minutes * 60
    sleep = stoppable_sleep(stop)
    state.jobs.setdefault("expiry", None)
    state.jobs.setdefault("erase", None)
    state.jobs.setdefault("lawyers", None)
    tasks.append(
        expiry_job(
            runtime.admin, interval, sleep=_rounds(sleep, state, "expiry", runtime.clock), stop=stop
        )
    )
    tasks.append(
        erase_job(
            runtime.admin,
            sleep=_rounds(sleep, state, "erase", runtime.clock),
            stop=stop,
            inbound=runtime.inbound,
        )
    )
    tasks.append(
        staff_job(
            runtime.routing,
            runtime.settings.escalation_interval_seconds,
            sleep=_rounds(sleep, state, "lawyers", runtime.clock),
            stop=stop,
            casework=runtime.casework,
        )
    )
    if runtime.shared:
        tasks.append(_share_remote_lock(runtime, stop))
    log.info("tipline running")
    running = [asyncio.ensure_future(task) for task in tasks]
    try:
        await asyncio.wait(running, return_when=asyncio.FIRST_EXCEPTION)
        stop.set()
        results = await asyncio.gather(*running, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise failed[0]
    finally:
        for task in running:
            task.cancel()
        if signal_api is not None:
            await signal_api.aclose()


async def _share_remote_lock(runtime: Runtime, stop: asyncio.Event) -> None:
    """An admin's ``/lock`` reaches one process: it tells every other one on the database, and
    each locks (a lock is never left half done because the request came through another)."""
    local = runtime.request_lock
    pending: set[asyncio.Task[None]] = set()

    async def tell_others() -> None:
        try:
            await notify(runtime.engine, LOCK_CHANNEL)
        except Exception as exc:  # this process locks all the same
            log.error("could not tell the other processes to lock: %s", type(exc).__name__)

    def request_lock() -> None:
        local()
        task = asyncio.get_running_loop().create_task(tell_others())
        pending.add(task)
        task.add_done_callback(pending.discard)

    runtime.request_lock = request_lock
    try:
        await listen(runtime.engine, LOCK_CHANNEL, local, stop)
    finally:
        runtime.request_lock = local


async def _channel(state: RunState, name: str, run: Coroutine[Any, Any, None]) -> None:
    state.channels[name] = "up"
    try:
        await run
    except BaseException:
        state.channels[name] = "failed"
        raise
    state.channels[name] = "stopped"


def _rounds(sleep: Sleep, state: RunState, job: str, clock: Callable[[], datetime]) -> Sleep:
    """The jobs sleep once after every round: that is when a round has run."""

    async def recorded(seconds: float) -> None:
        state.jobs[job] = clock()
        await sleep(seconds)

    return recorded
