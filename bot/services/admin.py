"""Admin use cases: key status and rotation, purge, wipe, audit verification, statistics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import date, datetime
from typing import Any

from bot.domain.stats import Cell, cells
from bot.services.clock import Clock
from bot.services.ports import AuditProblem, KekUsage, MaintenanceStore, PurgeReport, RotationReport

log = logging.getLogger(__name__)
ADMIN = "admin"
#: Purge, the ratchet and rotation run in one process at a time (several share a database).
MAINTENANCE = "maintenance"


class Busy(Exception):
    """Another process is purging or ratcheting right now."""


class AdminService:
    """What ``tipline`` admin commands and the expiry job call; every action is audited."""

    def __init__(self, store: MaintenanceStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def _audit(self, action: str) -> None:
        async with self._store.uow() as uow:
            await uow.audit.append(ADMIN, action, None, self._clock())
            await uow.commit()

    async def key_status(self) -> Sequence[KekUsage]:
        """KEK versions with their record counts; no secret."""
        return await self._store.key_status()

    async def rotate(self) -> RotationReport:
        """Rotate the KEK (resumable)."""
        async with self._store.exclusive(MAINTENANCE) as mine:
            if not mine:
                raise Busy("another tipline process is purging or rotating keys: try again soon")
            report = await self._store.rotate(self._clock())
        await self._audit("keys.rotate" if report.complete else "keys.rotate.partial")
        return report

    async def rotate_root(self, secret: Any, cost: Any) -> None:
        """Move the KEKs under a new root key."""
        await self._store.rekey_root(secret, cost)
        await self._audit("keys.rotate.root")

    async def purge(self, *, dry_run: bool = False, job: bool = False) -> PurgeReport:
        """Delete expired drafts and cases, then ratchet the KEK; a ratchet that deletions are
        waiting for runs too, even when nothing has expired."""
        if dry_run:
            return await self._store.purge(self._clock(), dry_run=True)
        async with self._store.exclusive(MAINTENANCE) as mine:
            if mine:
                return await self._purge(job)
        if job:
            return PurgeReport({}, dry_run=False)  # another process is doing this round
        raise Busy("another tipline process is purging or rotating keys: try again soon")

    async def _purge(self, job: bool) -> PurgeReport:
        claimed = await self._claim_erase()
        report = await self._store.purge(self._clock(), dry_run=False)
        if claimed is not None:
            rotation = report.rotation or await self._store.rotate(self._clock())
            report = replace(report, rotation=rotation)
            await self._erased(rotation)
        if any(report.expired.values()) or claimed is not None or not job:
            await self._audit("purge.job" if job else "purge")
        return report

    async def erase_pending(self) -> RotationReport | None:
        """Run the ratchet that deletions are waiting for, once it is due (the erase job)."""
        async with self._store.uow() as uow:
            due = await uow.assignments.erase_due()
        if due is None or due > self._clock():
            return None
        async with self._store.exclusive(MAINTENANCE) as mine:
            if not mine or await self._claim_erase() is None:
                return None  # another process is ratcheting now
            report = await self._store.rotate(self._clock())
            await self._erased(report)
        await self._audit("erase" if report.complete else "erase.partial")
        return report

    async def _claim_erase(self) -> datetime | None:
        async with self._store.uow() as uow:
            due = await uow.assignments.claim_erase()
            await uow.commit()
        return due

    async def _erased(self, report: RotationReport) -> None:
        # An incomplete ratchet left an old KEK alive: the claim stays, the next round retries.
        if not report.complete:
            log.warning("erase: an old key is still in use; trying again next round")
            return
        async with self._store.uow() as uow:
            await uow.assignments.release_erase()
            await uow.commit()

    async def wipe(self) -> None:
        """Destroy every key, then every row; the audit log starts again with the wipe."""
        await self._store.wipe(self._clock())
        await self._audit("wipe")

    async def verify_audit(self) -> tuple[int, AuditProblem | None]:
        """Check the audit chain."""
        return await self._store.verify_audit()

    async def statistics(self, threshold: int) -> list[Cell]:
        """Counters by week, region and category, small cells suppressed."""
        tables: dict[tuple[date, str], list[tuple[date, str, str, int]]] = {}
        for r in await self._store.stat_rows():
            tables.setdefault((r.week, r.region), []).append(
                (r.week, r.region, r.category, r.count)
            )
        out: list[Cell] = []
        # Each week and region is protected as one table: one at a time, so that suppression
        # over years of counters leaves the event loop a turn between tables.
        for key in sorted(tables):
            out += cells(tables[key], threshold)
            await asyncio.sleep(0)
        return out
