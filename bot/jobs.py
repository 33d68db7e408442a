"""Background jobs of ``tipline run``: expiry with crypto-erase on an interval, the ratchet
deletions wait for, and the lawyers' escalations and reminders."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from bot.services.admin import AdminService
from bot.services.casework import Casework
from bot.services.erasure import ERASE_JOB_SECONDS
from bot.services.inbound import InboundService
from bot.services.routing import Routing

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


async def expiry_job(
    admin: AdminService,
    interval_seconds: float,
    *,
    sleep: Sleep = asyncio.sleep,
    rounds: int | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Purge expired drafts and cases, then ratchet the KEK, every ``interval_seconds``.

    A failed round is logged (by exception type only) and retried at the next interval.
    """

    async def purge() -> None:
        report = await admin.purge(job=True)
        if any(report.expired.values()):
            log.info("expiry: %s", ", ".join(f"{n} {t}" for t, n in report.expired.items()))

    await _repeat("expiry round", [purge], interval_seconds, sleep, rounds, stop)


async def erase_job(
    admin: AdminService,
    interval_seconds: float = ERASE_JOB_SECONDS,
    *,
    sleep: Sleep = asyncio.sleep,
    rounds: int | None = None,
    stop: asyncio.Event | None = None,
    inbound: InboundService | None = None,
) -> None:
    """Run the ratchet that deletions wait for once it is due (it is due within the hour), and
    forget the rate-limit buckets that have refilled (each keeps a precise time only that long:
    the named short-lived exception of DESIGN.md section 4, "Times at rest")."""
    steps: list[Callable[[], Awaitable[object]]] = [admin.erase_pending]
    if inbound is not None:
        steps.append(inbound.forget_full_buckets)
    await _repeat("erase round", steps, interval_seconds, sleep, rounds, stop)


async def staff_job(
    lawyers: Routing,
    interval_seconds: float,
    *,
    sleep: Sleep = asyncio.sleep,
    rounds: int | None = None,
    stop: asyncio.Event | None = None,
    casework: Casework | None = None,
) -> None:
    """Escalate cases not accepted in time, send the daily digest, warn before expiry, remind
    lawyers of legal deadlines."""
    steps = [lawyers.escalate, lawyers.digest, lawyers.warn_expiring]
    if casework is not None:
        steps.append(casework.remind_deadlines)
    await _repeat("lawyer job", steps, interval_seconds, sleep, rounds, stop)


async def _repeat(
    what: str,
    steps: Sequence[Callable[[], Awaitable[object]]],
    interval_seconds: float,
    sleep: Sleep,
    rounds: int | None,
    stop: asyncio.Event | None,
) -> None:
    done = 0
    while (rounds is None or done < rounds) and not (stop is not None and stop.is_set()):
        for step in steps:
            try:
                await step()
            except Exception as exc:  # a job must outlive one bad round; the next one retries
                log.error("%s failed: %s", what, type(exc).__name__)
        done += 1
        await sleep(interval_seconds)


def stoppable_sleep(stop: asyncio.Event) -> Sleep:
    """A sleep that ends early when ``stop`` is set (so ``tipline run`` exits promptly)."""

    async def sleep(seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=seconds)

    return sleep
