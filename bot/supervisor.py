"""``tipline run``: locked until a person unlocks it, unlocked until someone locks it.

Locked, the service holds no key and consumes nothing: no messenger is polled, the Telegram
webhook answers 503 (Telegram delivers again later), no job runs. It answers the control socket
(unlock, lock, status, wipe) and, when configured, a health endpoint that says only
``locked`` or ``unlocked``. Unlocked, it runs the channels and jobs of :mod:`bot.app`; locking
stops them after their current step, then overwrites and drops every key.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import signal
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from bot.app import RunState, serve_unlocked
from bot.config import Settings
from bot.control import ControlError, ControlServer, Throttle
from bot.runtime import (
    DatabaseUnavailable,
    Runtime,
    check_database,
    open_engine,
    open_runtime,
    root_secret,
)
from bot.services.clock import Clock, system_clock
from storage.keyring import (
    KeyringError,
    KeyringFile,
    KeyringMissing,
    Passphrase,
    RootSecret,
    WrongRootKey,
)
from storage.lifecycle import pending_outbound

log = logging.getLogger(__name__)

LOCKED = "locked"
UNLOCKED = "unlocked"
ADMIN = "admin"
#: How often a remote lock looks whether the outbox has gone out.
POLL_OUTBOX = 0.05


class Refused(Exception):
    """A control request that cannot be done now; the message is one clear line."""


class Supervisor:
    """Owns the locked/unlocked state, the control socket and the health endpoint."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock = system_clock,
        monotonic: Callable[[], float] = time.monotonic,
        lock_grace: float = 5.0,
        stop_timeout: float = 20.0,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._monotonic = monotonic
        self._lock_grace = lock_grace
        self._stop_timeout = stop_timeout
        self.throttle = Throttle(monotonic)
        self.run_state = RunState()
        self.control = ControlServer(settings.effective_control_socket, self.handle)
        self._runtime: Runtime | None = None
        self._serving: asyncio.Task[None] | None = None
        self._stop_serving: asyncio.Event | None = None
        self._transition = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()
        self._placeholder: web.AppRunner | None = None
        self._health: web.AppRunner | None = None
        #: A development instance (key source on disk) ends on a channel failure, as before.
        self._halt = asyncio.Event()
        self._fatal: BaseException | None = None

    # ---- state ---------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """``locked`` or ``unlocked``."""
        return LOCKED if self._runtime is None else UNLOCKED

    @property
    def runtime(self) -> Runtime | None:
        """The unlocked runtime (None while locked)."""
        return self._runtime

    def status(self) -> dict[str, Any]:
        """State, channels and the jobs' last rounds; never a secret, an id or a count."""
        configured = [
            name
            for name, on in (
                ("telegram", self.settings.telegram_enabled),
                ("signal", self.settings.signal_enabled),
            )
            if on
        ]
        locked = self._runtime is None
        channels = {
            name: "down" if locked else self.run_state.channels.get(name, "starting")
            for name in configured
        }
        jobs = {
            name: None if when is None else when.isoformat(timespec="seconds")
            for name, when in self.run_state.jobs.items()
        }
        return {"state": self.state, "channels": channels, "jobs": jobs}

    # ---- running -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop``; unlock at once only when a development key source is set."""
        await self.control.start()
        try:
            await self._start_health()
            if self.settings.key_source is not None:
                await self.unlock(root_secret(self.settings))
            else:
                await self._start_placeholder()
                log.info("tipline is locked: waiting for 'tipline unlock'")
            stopped = asyncio.ensure_future(stop.wait())
            halted = asyncio.ensure_future(self._halt.wait())
            await asyncio.wait({stopped, halted}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            halted.cancel()
        finally:
            async with self._transition:
                if self._runtime is not None:
                    await self._drop_keys(audit=None)
            await self._stop_placeholder()
            if self._health is not None:
                await self._health.cleanup()
            await self.control.close()
            for task in list(self._background):
                task.cancel()
        if self._fatal is not None:
            fatal, self._fatal = self._fatal, None
            raise fatal

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer one control request."""
        op = request["op"]
        try:
            if op == "status":
                return {"ok": True, **self.status()}
            if op == "unlock":
                passphrase = request.get("passphrase")
                if not isinstance(passphrase, str) or not passphrase:
                    raise Refused("no passphrase was given")
                await self.unlock(Passphrase(passphrase.encode("utf-8")))
            elif op == "lock":
                await self.lock()
            elif op == "wipe":
                await self.drop_for_wipe()
            else:
                raise Refused(f"unknown request {op[:20]!r}")
        except (Refused, KeyringError, DatabaseUnavailable) as exc:
            return {"ok": False, "error": str(exc), "state": self.state}
        except Exception as exc:  # the service stays up, and says what kind of failure
            log.error("%s failed: %s", op, type(exc).__name__)
            return {"ok": False, "error": f"internal error ({type(exc).__name__})"}
        return {"ok": True, "state": self.state}

    async def unlock(self, secret: RootSecret) -> None:
        """Open the keyring, then start the channels and jobs."""
        async with self._transition:
            if self._runtime is not None:
                raise Refused("already unlocked")
            wait = self.throttle.wait()
            if wait > 0:
                raise Refused(f"too many wrong passphrases: try again in {math.ceil(wait)} seconds")
            try:
                runtime = await open_runtime(
                    self.settings,
                    clock=self._clock,
                    secret=secret,
                    request_lock=self.request_lock,
                )
            except WrongRootKey as exc:
                self.throttle.failed()
                log.warning("unlock refused: wrong passphrase")
                raise Refused("wrong passphrase: tipline stays locked") from exc
            del secret
            self.throttle.succeeded()
            await self._stop_placeholder()
            self._runtime = runtime
            await self._audit(runtime, "unlock")
            self._stop_serving = asyncio.Event()
            self.run_state.channels.clear()
            self._serving = asyncio.create_task(
                serve_unlocked(runtime, self._stop_serving, self.run_state)
            )
            self._serving.add_done_callback(self._served)
            log.info("tipline unlocked")

    async def lock(self) -> None:
        """Stop the channels and jobs after their current step, then drop every key."""
        async with self._transition:
            if self._runtime is None:
                raise Refused("already locked")
            await self._drop_keys(audit="lock")

    async def drop_for_wipe(self) -> None:
        """A wipe is under way: drop the keys now (nothing more is written under them)."""
        async with self._transition:
            if self._runtime is not None:
                await self._drop_keys(audit=None)

    def request_lock(self) -> None:
        """Lock soon (a verified admin's ``/lock``), the outbox given ``lock_grace`` s first."""
        if any(not task.done() for task in self._background):
            return
        task = asyncio.get_running_loop().create_task(self._remote_lock())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _remote_lock(self) -> None:
        deadline = self._monotonic() + self._lock_grace
        for _ in range(int(self._lock_grace / POLL_OUTBOX) + 1):
            if self._monotonic() >= deadline or not await self._outbound_pending():
                break
            await asyncio.sleep(POLL_OUTBOX)
        async with self._transition:
            if self._runtime is not None:
                await self._drop_keys(audit=None)
        log.info("tipline locked on a messenger request")

    async def _outbound_pending(self) -> bool:
        """Whether messages are due to go out (False once locked, or when it cannot tell)."""
        runtime = self._runtime
        if runtime is None:
            return False
        try:
            return await pending_outbound(runtime.engine, runtime.clock()) > 0
        except Exception as exc:  # the lock matters more than the last notice
            log.warning("could not read the outbox before locking: %s", type(exc).__name__)
            return False

    def _served(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is None or task is not self._serving:
            return
        if self.settings.key_source is not None:
            self._fatal = error
            self._halt.set()
            return
        log.error("channels stopped on an error; locking: %s", type(error).__name__)
        self._spawn_lock()

    def _spawn_lock(self) -> None:
        async def lock_after_failure() -> None:
            async with self._transition:
                if self._runtime is not None:
                    await self._drop_keys(audit=None)

        task = asyncio.get_running_loop().create_task(lock_after_failure())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _drop_keys(self, *, audit: str | None) -> None:
        """Under the transition lock: stop serving, overwrite every key, forget the runtime."""
        runtime, serving, stop = self._runtime, self._serving, self._stop_serving
        assert runtime is not None
        assert serving is not None
        assert stop is not None
        if audit is not None:
            await self._audit(runtime, audit)
        stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(serving), self._stop_timeout)
        except TimeoutError:
            log.warning("channels did not stop in %.0f s; cancelling them", self._stop_timeout)
            serving.cancel()
            with contextlib.suppress(BaseException):
                await serving
        except Exception as exc:  # a failed channel: the keys go all the same
            log.info("channels ended with %s", type(exc).__name__)
        runtime.vault.forget()
        await runtime.close()
        self._runtime = self._serving = self._stop_serving = None
        del runtime, serving, stop
        # The runtime's objects refer to each other: free them now, not at some later pass
        # (nothing else runs while locked, so the pause stalls no chat).
        gc.collect()
        for name in self.run_state.channels:
            self.run_state.channels[name] = "down"
        await self._start_placeholder()
        log.info("tipline locked: every key dropped")

    async def _audit(self, runtime: Runtime, action: str) -> None:
        try:
            async with runtime.uow() as uow:
                await uow.audit.append(ADMIN, action, None, runtime.clock())
                await uow.commit()
        except Exception as exc:  # locking and unlocking never wait on the audit log
            log.error("audit of %s failed: %s", action, type(exc).__name__)

    # ---- what answers while locked -------------------------------------------------------

    async def _start_placeholder(self) -> None:
        """In webhook mode, answer Telegram 503 so it keeps the updates and tries again."""
        settings = self.settings
        if not (settings.telegram_enabled and settings.telegram_webhook_url):
            return
        if self._placeholder is not None:
            return

        async def unavailable(request: web.Request) -> web.Response:
            return web.Response(status=503, text="locked", headers={"Retry-After": "60"})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", unavailable)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, settings.telegram_webhook_listen, settings.telegram_webhook_port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            log.warning("the locked webhook answer cannot listen: %s", type(exc).__name__)
            return
        self._placeholder = runner

    async def _stop_placeholder(self) -> None:
        if self._placeholder is not None:
            await self._placeholder.cleanup()
            self._placeholder = None

    async def _start_health(self) -> None:
        address = self.settings.health_host_port
        if address is None:
            return

        async def healthz(request: web.Request) -> web.Response:
            return web.json_response({"state": self.state})

        app = web.Application()
        app.router.add_get("/healthz", healthz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, *address).start()
        except OSError as exc:
            await runner.cleanup()
            raise ControlError(
                f"cannot listen on TIPLINE_HEALTH_ADDR {self.settings.health_addr}: "
                f"{exc.strerror or type(exc).__name__}"
            ) from exc
        self._health = runner


async def run_service(settings: Settings) -> None:
    """``tipline run``: check what can be checked without a key, then supervise until a signal."""
    keyring = KeyringFile(settings.effective_keyring_file)
    if not keyring.exists():
        raise KeyringMissing(f"no keyring at {keyring.path}: run 'tipline init' first")
    engine = open_engine(settings)
    try:
        await check_database(engine, settings.effective_database_url)
    finally:
        await engine.dispose()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    # What start-up made (modules, settings) lives as long as the process: out of the cyclic
    # collector, whose full passes over it (180,000 objects) stalled every chat for ~90 ms.
    gc.freeze()
    try:
        await Supervisor(settings).run(stop)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    log.info("tipline stopped")
