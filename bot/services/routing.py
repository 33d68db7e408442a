"""Routing and the lawyer jobs: offer a case, escalate, the daily digest, expiry warnings.

``route`` runs inside the caller's transaction (a submission, a decline, a revocation), so the
case's assignment and the lawyer's notice are committed together; each job owns one transaction
and writes its notices to the outbox in it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.domain.routing import DEFAULT_CAP, CaseNeeds, LawyerSlot, Roster, overdue
from bot.domain.texts import Texts
from bot.domain.triage import Priority
from bot.services.clock import Clock
from bot.services.notifying import Notifying
from bot.services.outbox import Outgoing
from bot.services.ports import (
    CaseStatus,
    LawyerStatus,
    StaffUnitOfWork,
    gets_cases,
    needs_routing,
)

log = logging.getLogger(__name__)

Wake = Callable[[], None]


@dataclass(frozen=True, slots=True)
class LawyerPolicy:
    """Limits of the lawyer side."""

    invite_ttl: timedelta = timedelta(hours=72)
    cap: int = DEFAULT_CAP
    max_extend_days: int = 90
    content_over_telegram: bool = False
    text_max: int = 4000
    expiry_warning: timedelta = timedelta(hours=72)
    digest_every: timedelta = timedelta(days=1)
    #: No extension keeps a case longer than this after its submission (the ceiling).
    max_retention: timedelta = timedelta(days=365)


class Routing(Notifying):
    """Offers cases to lawyers and runs the escalation, digest and warning jobs."""

    def __init__(
        self,
        uow: Callable[[], StaffUnitOfWork],
        texts: Texts,
        clock: Clock,
        policy: LawyerPolicy | None = None,
        wake: Wake = lambda: None,
    ) -> None:
        super().__init__(uow, texts, clock, wake)
        self._policy = policy or LawyerPolicy()

    async def _slots(self, uow: StaffUnitOfWork) -> list[LawyerSlot]:
        return [
            LawyerSlot(x.id, frozenset(x.languages), frozenset(x.regions), x.on_call, x.open_cases)
            for x in await uow.lawyers.all(with_names=False)
            if gets_cases(x.role, x.status)
        ]

    async def route(
        self, uow: StaffUnitOfWork, out: Outgoing, case_id: str, now: datetime
    ) -> int | None:
        """Offer a case to the best lawyer not tried yet; alert admins when nobody is left."""
        case = await uow.assignments.by_id(case_id)
        if case is None or not needs_routing(case.priority) or case.status != CaseStatus.NEW:
            return None  # decided on plaintext columns: nothing decrypted for P4
        content = await uow.cases.get(case_id)
        if content is None:
            return None
        needs = CaseNeeds(
            Priority(case.priority),
            str(content.meta.get("language", "en")),
            str(content.meta.get("region", "other")),
        )
        tried = await uow.assignments.tried(case_id)
        lawyer = Roster(await self._slots(uow)).choose(needs, tried=tried, cap=self._policy.cap)
        if lawyer is not None:
            await uow.assignments.assign(case_id, lawyer.id, now)
            await uow.audit.append("system", "case.assign", case_id, now)
            address = await uow.lawyers.contact(lawyer.id)
            record = await uow.lawyers.get(lawyer.id)
            if address and record is not None:
                text = self._t(
                    record.languages[0],
                    "staff.case_notice",
                    number=case.number,
                    priority=f"P{case.priority}",
                )
                out.notify(address, text)
            return lawyer.id
        if not case.admins_alerted:
            await uow.assignments.update(case_id, admins_alerted=True)
            text = self._t(
                "en", "staff.alert_unassigned", number=case.number, priority=f"P{case.priority}"
            )
            for admin in await uow.lawyers.admin_contacts():
                out.notify(admin, text)
            await uow.audit.append("system", "case.unassigned.alert", case_id, now)
        return None

    async def _job(
        self,
        body: Callable[[StaffUnitOfWork, Outgoing, datetime], object],
        job: str | None = None,
    ) -> int:
        now = self._clock()
        out = Outgoing()
        async with self._uow() as uow:
            if job is not None and not await uow.assignments.try_job(job):
                return 0  # another process is running this job's round right now
            result = await body(uow, out, now)  # type: ignore[misc]
            written = await out.write(uow, now)
            await uow.commit()
        if written:
            self.wake()
        return int(result or 0)

    async def route_one(self, case_id: str) -> int | None:
        """Route one case in its own transaction (tests, the CLI)."""
        chosen: list[int | None] = []

        async def body(uow: StaffUnitOfWork, out: Outgoing, now: datetime) -> int:
            chosen.append(await self.route(uow, out, case_id, now))
            return 0

        await self._job(body)
        return chosen[0]

    async def escalate(self) -> int:
        """Move cases not accepted in time to the next lawyer; route any still waiting."""

        async def body(uow: StaffUnitOfWork, out: Outgoing, now: datetime) -> int:
            moved = 0
            for case in await uow.assignments.waiting():
                late = case.status == CaseStatus.ASSIGNED and case.assigned_at is not None
                if late and overdue(Priority(case.priority), case.assigned_at, now):  # type: ignore[arg-type]
                    await uow.assignments.release(case.id)
                    await uow.audit.append("system", "case.escalate", case.id, now)
                    moved += 1
                    await self.route(uow, out, case.id, now)
                elif case.status == CaseStatus.NEW:
                    await self.route(uow, out, case.id, now)
            return moved

        return await self._job(body, "escalate")

    async def digest(self) -> bool:
        """Once a day: documentation-only cases nobody took, to every verified lawyer."""

        async def body(uow: StaffUnitOfWork, out: Outgoing, now: datetime) -> int:
            last = await uow.assignments.last_run("digest")
            if last is not None and now - last < self._policy.digest_every:
                return 0
            since = (last or now - self._policy.digest_every).date()
            cases = await uow.assignments.unassigned_documentation(since)
            await uow.assignments.mark_run("digest", now)
            if not cases:
                return 0
            numbers = ", ".join(f"#{c.number}" for c in cases)
            sent = 0
            for lawyer in await uow.lawyers.all(with_names=False):
                if gets_cases(lawyer.role, lawyer.status):
                    address = await uow.lawyers.contact(lawyer.id)
                    if address:
                        out.notify(
                            address, self._t(lawyer.languages[0], "staff.digest", numbers=numbers)
                        )
                        sent += 1
            return sent

        return bool(await self._job(body, "digest"))

    async def warn_expiring(self) -> int:
        """Warn each assigned lawyer 72 hours before their case expires (once)."""

        async def body(uow: StaffUnitOfWork, out: Outgoing, now: datetime) -> int:
            sent = 0
            for case in await uow.assignments.expiring(now + self._policy.expiry_warning):
                await uow.assignments.update(case.id, expiry_warned=True)
                if case.assigned_lawyer_id is None:
                    continue
                address = await uow.lawyers.contact(case.assigned_lawyer_id)
                lawyer = await uow.lawyers.get(case.assigned_lawyer_id)
                if address and lawyer and lawyer.status == LawyerStatus.VERIFIED:
                    text = self._t(
                        lawyer.languages[0],
                        "staff.expiry_warning",
                        number=case.number,
                        date=case.expires_at.strftime("%Y-%m-%d %H:%M UTC"),
                    )
                    out.notify(address, text)
                    sent += 1
            return sent

        return await self._job(body, "warn_expiring")
