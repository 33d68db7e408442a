"""Background jobs of ``tipline run``: expiry with crypto-erase on an interval."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from bot.services.admin import AdminService

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


async def expiry_job(
    admin: AdminService,
    interval_seconds: float,
    *,
    sleep: Sleep = asyncio.sleep,
    rounds: int | None = None,
) -> None:
    """Purge expired drafts and cases, then ratchet the KEK, every ``interval_seconds``.

    A failed round is logged (by exception type only) and retried at the next interval.
    """
    done = 0
    while rounds is None or done < rounds:
        try:
            report = await admin.purge(job=True)
            if any(report.expired.values()):
                log.info("expiry: %s", ", ".join(f"{n} {t}" for t, n in report.expired.items()))
        except Exception as exc:  # a job must outlive one bad round
            log.error("expiry round failed: %s", type(exc).__name__)
        done += 1
        await sleep(interval_seconds)
