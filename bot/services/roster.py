"""The admin's lawyer roster (CLI): invite, verify, revoke, renew, list; and a changed identity.

Each use case is one transaction; cases a lawyer can no longer hold go back to routing in it,
and every notice it causes is written to the outbox in it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime

from bot.domain.phrase import normalize_phrase
from bot.domain.questionnaire import LANGUAGES
from bot.services.clock import Clock
from bot.services.codes import new_code
from bot.services.erasure import Erasure
from bot.services.outbox import Outgoing
from bot.services.ports import (
    CaseRecord,
    Invitation,
    LawyerRecord,
    LawyerStatus,
    Role,
    StaffUnitOfWork,
    lawyer_may_become,
)
from bot.services.routing import LawyerPolicy, Routing


class LawyerError(Exception):
    """An admin command that cannot be done; the message is one clear line."""


class RosterService:
    """Admin use cases over lawyers and admins."""

    def __init__(
        self,
        uow: Callable[[], StaffUnitOfWork],
        routing: Routing,
        clock: Clock,
        policy: LawyerPolicy | None = None,
    ) -> None:
        self._uow = uow
        self._routing = routing
        self._clock = clock
        self._policy = policy or LawyerPolicy()
        #: Schedules the ratchet that makes a shredded address final.
        self.erasure = Erasure()

    async def invite(
        self,
        *,
        name: str,
        languages: Sequence[str],
        regions: Sequence[str],
        on_call: bool = False,
        role: str = Role.LAWYER,
    ) -> tuple[int, str]:
        """A one-time invite code (shown once, stored only hashed) and the new lawyer's id."""
        name = name.strip()
        if not name or len(name) > 200:
            raise LawyerError("--name must be 1 to 200 characters")
        if not languages or any(x not in LANGUAGES for x in languages):
            raise LawyerError("--languages must be a comma-separated list of az, ru, en")
        if not regions or any(not re.fullmatch(r"[a-z_]{2,20}", r) for r in regions):
            raise LawyerError("--regions must be a comma-separated list such as baku,ganja or all")
        code, normalized = new_code()
        now = self._clock()
        async with self._uow() as uow:
            invitation = Invitation(
                name=name,
                role=role,
                languages=tuple(languages),
                regions=tuple(regions),
                on_call=on_call,
                invite_code=normalized,
                expires_at=now + self._policy.invite_ttl,
                now=now,
            )
            lawyer_id = await uow.lawyers.invite(invitation)
            await uow.audit.append("admin", f"{role}.invite", None, now)
            await uow.commit()
        return lawyer_id, code

    async def roster(self) -> Sequence[LawyerRecord]:
        """Every lawyer and admin (names decrypted for the admin's terminal)."""
        async with self._uow() as uow:
            return await uow.lawyers.all()

    async def verify(self, lawyer_id: int, phrase: str) -> None:
        """Confirm the phrase the lawyer read out; raises LawyerError when it does not match."""
        now = self._clock()
        async with self._uow() as uow:
            if not await uow.lawyers.verify(lawyer_id, normalize_phrase(phrase)):
                raise LawyerError(
                    f"lawyer {lawyer_id} cannot be verified: unknown id, not registered, "
                    "or the phrase does not match"
                )
            await uow.audit.append("admin", "lawyer.verify", None, now)
            await uow.commit()

    async def _take_back(
        self, uow: StaffUnitOfWork, out: Outgoing, lawyer_id: int, now: datetime
    ) -> int:
        """Every open case of a lawyer goes back to routing (never to this lawyer again)."""
        open_cases = await uow.assignments.assigned_to(lawyer_id)
        for case in open_cases:
            await uow.assignments.release(case.id)
        for case in open_cases:
            await self._routing.route(uow, out, case.id, now)
        return len(open_cases)

    async def _change(
        self,
        lawyer_id: int,
        apply: Callable[[StaffUnitOfWork], object],
        action: str,
        missing: str,
    ) -> int:
        now = self._clock()
        out = Outgoing()
        async with self._uow() as uow:
            if not await apply(uow):  # type: ignore[misc]
                raise LawyerError(missing)
            moved = await self._take_back(uow, out, lawyer_id, now)
            await uow.audit.append("admin", action, None, now)
            await self.erasure.schedule(uow, now)  # the address is shredded: erase it for good
            written = await out.write(uow, now)
            await uow.commit()
        if written:
            self._routing.wake()
        return moved

    async def revoke(self, lawyer_id: int) -> int:
        """Revoke at once: the address is shredded and open cases go back to routing."""

        async def apply(uow: StaffUnitOfWork) -> bool:
            return await uow.lawyers.set_status(
                lawyer_id, LawyerStatus.REVOKED, forget_contact=True
            )

        return await self._change(
            lawyer_id, apply, "lawyer.revoke", f"no lawyer with id {lawyer_id}"
        )

    async def renew(self, lawyer_id: int) -> str:
        """A new invite code for an existing lawyer (new phone, changed safety number).

        The account stops being verified at once, so its open cases go back to routing and
        nothing more reaches it until it registers and is verified again.
        """
        code, normalized = new_code()
        expires = self._clock() + self._policy.invite_ttl

        async def apply(uow: StaffUnitOfWork) -> bool:
            return await uow.lawyers.renew_invite(lawyer_id, normalized, expires)

        await self._change(
            lawyer_id,
            apply,
            "lawyer.renew",
            f"no lawyer with id {lawyer_id} that can be renewed",
        )
        return code

    async def identity_changed(self, address: str) -> None:
        """A lawyer's safety number changed: suspend at once, move their cases, tell admins.

        The new device may not be the lawyer's. An admin checks with them out of band and
        renews their invite (``tipline lawyers invite --renew ID``); they register again.
        """
        now = self._clock()
        out = Outgoing()
        async with self._uow() as uow:
            lawyer = await uow.lawyers.by_address(address)
            if lawyer is None or not lawyer_may_become(lawyer.status, LawyerStatus.SUSPENDED):
                return
            await uow.lawyers.set_status(lawyer.id, LawyerStatus.SUSPENDED)
            await self._take_back(uow, out, lawyer.id, now)
            text = self._routing._t("en", "staff.alert_identity", id=lawyer.id)
            for admin in await uow.lawyers.admin_contacts():
                out.notify(admin, text)
            await uow.audit.append(f"lawyer:{lawyer.id}", "lawyer.suspend.identity", None, now)
            await out.write(uow, now)
            await uow.commit()
        self._routing.wake()

    async def identity_changed_if_staff(self, address: str) -> bool:
        """For a changed safety number: suspend the lawyer or admin at this address, if any;
        whether there was one (a reporter's number is trusted on first use instead)."""
        if not await self.is_staff(address):
            return False
        await self.identity_changed(address)
        return True

    async def is_staff(self, address: str) -> bool:
        """Whether a messenger address belongs to a lawyer or admin (in any state)."""
        async with self._uow() as uow:
            return await uow.lawyers.by_address(address) is not None

    async def cases(self) -> Sequence[CaseRecord]:
        """Metadata of every case not closed (``tipline cases list``)."""
        async with self._uow() as uow:
            return await uow.assignments.all_open()
