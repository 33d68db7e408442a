"""Background jobs of ``tipline run``: expiry with crypto-erase on an interval."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from bot.services.admin import AdminService
from bot.services.lawyers import LawyerService

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
    done = 0
    while (rounds is None or done < rounds) and not (stop is not None and stop.is_set()):
        try:
            report = await admin.purge(job=True)
            if any(report.expired.values()):
                log.info("expiry: %s", ", ".join(f"{n} {t}" for t, n in report.expired.items()))
        except Exception as exc:  # a job must outlive one bad round
            log.error("expiry round failed: %s", type(exc).__name__)
        done += 1
        await sleep(interval_seconds)


async def staff_job(
    lawyers: LawyerService,
    interval_seconds: float,
    *,
    sleep: Sleep = asyncio.sleep,
    rounds: int | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Escalate cases not accepted in time, send the daily digest, warn before expiry."""
    done = 0
    while (rounds is None or done < rounds) and not (stop is not None and stop.is_set()):
        for step in (lawyers.escalate, lawyers.digest, lawyers.warn_expiring):
            try:
                await step()
            except Exception as exc:  # the next round tries again
                log.error("lawyer job failed: %s", type(exc).__name__)
        done += 1
        await sleep(interval_seconds)


def stoppable_sleep(stop: asyncio.Event) -> Sleep:
    """A sleep that ends early when ``stop`` is set (so ``tipline run`` exits promptly)."""

    async def sleep(seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=seconds)

    return sleep
