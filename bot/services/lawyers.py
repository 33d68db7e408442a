"""Lawyers: invites and verification, routing and escalation, commands, the anonymous relay.

Every account that is not a verified lawyer gets the same answer to every lawyer command, so
nobody learns whether a case, a number or an account exists. Every lawyer and admin action is
audited (actor, action, case id, time), never with content.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from bot.domain.casetext import render_case
from bot.domain.commands import command_name
from bot.domain.phrase import make_phrase, normalize_phrase
from bot.domain.questionnaire import LANGUAGES
from bot.domain.receipt import MalformedReceipt, normalize_receipt
from bot.domain.routing import DEFAULT_CAP, CaseNeeds, LawyerSlot, Roster, overdue
from bot.domain.texts import Texts
from bot.domain.triage import Priority
from bot.services.clock import Clock
from bot.services.codes import new_code
from bot.services.ports import CaseInfo, LawyerInfo, Notifier, StaffUnitOfWork

log = logging.getLogger(__name__)

STAFF_COMMANDS = frozenset(
    {"register", "cases", "case", "accept", "decline", "reply", "close", "extend"}
)
_NUMBER = re.compile(r"^#?(\d{1,9})$")


class LawyerError(Exception):
    """An admin command that cannot be done; the message is one clear line."""


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


def _channel(address: str) -> str:
    return address.split(":", 1)[0]


class LawyerService:
    """The lawyer and admin use cases, shared by the CLI, the jobs and every channel."""

    def __init__(
        self,
        uow: Callable[[], StaffUnitOfWork],
        texts: Texts,
        notifier: Notifier,
        clock: Clock,
        policy: LawyerPolicy | None = None,
        choice: Callable[[list[str]], str] = secrets.choice,
    ) -> None:
        self._uow = uow
        self._texts = texts
        self._notifier = notifier
        self._clock = clock
        self._policy = policy or LawyerPolicy()
        self._choice = choice

    def _t(self, language: str, key: str, **params: object) -> str:
        return self._texts.get(language, key, **params)

    # ---- admin (CLI) ---------------------------------------------------------------------

    async def invite(
        self,
        *,
        name: str,
        languages: Sequence[str],
        regions: Sequence[str],
        on_call: bool = False,
        role: str = "lawyer",
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
            lawyer_id = await uow.lawyers.invite(
                name=name,
                role=role,
                languages=list(languages),
                regions=list(regions),
                on_call=on_call,
                invite_code=normalized,
                expires_at=now + self._policy.invite_ttl,
                now=now,
            )
            await uow.audit.append("admin", f"{role}.invite", None, now)
            await uow.commit()
        return lawyer_id, code

    async def roster(self) -> Sequence[LawyerInfo]:
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

    async def revoke(self, lawyer_id: int) -> int:
        """Revoke at once: the address is shredded and open cases go back to routing."""
        now = self._clock()
        async with self._uow() as uow:
            if not await uow.lawyers.set_status(lawyer_id, "revoked", forget_contact=True):
                raise LawyerError(f"no lawyer with id {lawyer_id}")
            open_cases = await uow.assignments.assigned_to(lawyer_id)
            for case in open_cases:
                await uow.assignments.release(case.id)
            await uow.audit.append("admin", "lawyer.revoke", None, now)
            await uow.commit()
        for case in open_cases:
            await self.route(case.id)
        return len(open_cases)

    async def identity_changed(self, address: str) -> None:
        """A lawyer's safety number changed: suspend at once, move their cases, tell admins.

        The new device may not be the lawyer's. An admin checks with them out of band and
        renews their invite (``tipline lawyers invite --renew ID``); they register again.
        """
        now = self._clock()
        async with self._uow() as uow:
            lawyer = await uow.lawyers.by_address(address)
            if lawyer is None or lawyer.status not in ("verified", "registered"):
                return
            await uow.lawyers.set_status(lawyer.id, "suspended")
            open_cases = await uow.assignments.assigned_to(lawyer.id)
            for case in open_cases:
                await uow.assignments.release(case.id)
            admins = await uow.lawyers.admin_contacts()
            await uow.audit.append(f"lawyer:{lawyer.id}", "lawyer.suspend.identity", None, now)
            await uow.commit()
        for admin in admins:
            await self._notifier.send(admin, self._t("en", "staff.alert_identity", id=lawyer.id))
        for case in open_cases:
            await self.route(case.id)

    async def renew(self, lawyer_id: int) -> str:
        """A new invite code for an existing lawyer (new phone, changed safety number)."""
        code, normalized = new_code()
        now = self._clock()
        async with self._uow() as uow:
            renewed = await uow.lawyers.renew_invite(
                lawyer_id, normalized, now + self._policy.invite_ttl
            )
            if not renewed:
                raise LawyerError(f"no lawyer with id {lawyer_id} that can be renewed")
            await uow.audit.append("admin", "lawyer.renew", None, now)
            await uow.commit()
        return code

    async def cases(self) -> Sequence[CaseInfo]:
        """Metadata of every case not closed (``tipline cases list``)."""
        async with self._uow() as uow:
            return await uow.assignments.all_open()

    # ---- routing and jobs ----------------------------------------------------------------

    async def _slots(self, uow: StaffUnitOfWork) -> list[LawyerSlot]:
        return [
            LawyerSlot(x.id, frozenset(x.languages), frozenset(x.regions), x.on_call, x.open_cases)
            for x in await uow.lawyers.all(with_names=False)
            if x.role == "lawyer" and x.status == "verified"
        ]

    async def route(self, case_id: str) -> int | None:
        """Offer a case to the best lawyer not tried yet; alert admins when nobody is left."""
        now = self._clock()
        notify: list[tuple[str, str]] = []
        chosen: int | None = None
        async with self._uow() as uow:
            case = await uow.assignments.by_id(case_id)
            if case is None or case.priority >= Priority.P4:
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
            roster = Roster(await self._slots(uow))
            lawyer = roster.choose(needs, tried=tried, cap=self._policy.cap)
            if lawyer is not None:
                chosen = lawyer.id
                await uow.assignments.assign(case_id, lawyer.id, now)
                await uow.audit.append("system", "case.assign", case_id, now)
                address = await uow.lawyers.contact(lawyer.id)
                record = await uow.lawyers.get(lawyer.id)
                if address and record is not None:
                    language = record.languages[0]
                    text = self._t(
                        language,
                        "staff.case_notice",
                        number=case.number,
                        priority=f"P{case.priority}",
                    )
                    notify.append((address, text))
            elif not case.admins_alerted:
                await uow.assignments.update(case_id, admins_alerted=True)
                for address in await uow.lawyers.admin_contacts():
                    text = self._t(
                        "en",
                        "staff.alert_unassigned",
                        number=case.number,
                        priority=f"P{case.priority}",
                    )
                    notify.append((address, text))
                await uow.audit.append("system", "case.unassigned.alert", case_id, now)
            await uow.commit()
        for address, text in notify:
            await self._notifier.send(address, text)
        return chosen

    async def escalate(self) -> int:
        """Move cases not accepted in time to the next lawyer; route any still waiting."""
        now = self._clock()
        async with self._uow() as uow:
            waiting = await uow.assignments.waiting()
            overdue_ids = []
            for case in waiting:
                late = case.status == "assigned" and case.assigned_at is not None
                if late and overdue(Priority(case.priority), case.assigned_at, now):  # type: ignore[arg-type]
                    await uow.assignments.release(case.id)
                    await uow.audit.append("system", "case.escalate", case.id, now)
                    overdue_ids.append(case.id)
            unrouted = [c.id for c in waiting if c.status == "new"]
            await uow.commit()
        for case_id in [*overdue_ids, *unrouted]:
            await self.route(case_id)
        return len(overdue_ids)

    async def digest(self) -> bool:
        """Once a day: documentation-only cases nobody took, to every verified lawyer."""
        now = self._clock()
        async with self._uow() as uow:
            last = await uow.assignments.last_run("digest")
            if last is not None and now - last < self._policy.digest_every:
                return False
            since = (last or now - self._policy.digest_every).date()
            cases = await uow.assignments.unassigned_documentation(since)
            await uow.assignments.mark_run("digest", now)
            recipients = []
            if cases:
                numbers = ", ".join(f"#{c.number}" for c in cases)
                for lawyer in await uow.lawyers.all(with_names=False):
                    if lawyer.role == "lawyer" and lawyer.status == "verified":
                        address = await uow.lawyers.contact(lawyer.id)
                        if address:
                            language = lawyer.languages[0]
                            text = self._t(language, "staff.digest", numbers=numbers)
                            recipients.append((address, text))
            await uow.commit()
        for address, text in recipients:
            await self._notifier.send(address, text)
        return bool(recipients)

    async def warn_expiring(self) -> int:
        """Warn each assigned lawyer 72 hours before their case expires (once)."""
        now = self._clock()
        notify = []
        async with self._uow() as uow:
            for case in await uow.assignments.expiring(now + self._policy.expiry_warning):
                await uow.assignments.update(case.id, expiry_warned=True)
                if case.assigned_lawyer_id is None:
                    continue
                address = await uow.lawyers.contact(case.assigned_lawyer_id)
                lawyer = await uow.lawyers.get(case.assigned_lawyer_id)
                if address and lawyer:
                    text = self._t(
                        lawyer.languages[0],
                        "staff.expiry_warning",
                        number=case.number,
                        date=case.expires_at.strftime("%Y-%m-%d %H:%M UTC"),
                    )
                    notify.append((address, text))
            await uow.commit()
        for address, text in notify:
            await self._notifier.send(address, text)
        return len(notify)

    # ---- messenger commands ----------------------------------------------------------------

    async def is_staff(self, address: str) -> bool:
        """Whether a messenger address belongs to a lawyer or admin (in any state)."""
        async with self._uow() as uow:
            return await uow.lawyers.by_address(address) is not None

    @staticmethod
    def is_staff_command(text: str) -> bool:
        """Whether a message is one of the lawyer commands (``/register CODE`` and the rest)."""
        head = text.strip().split(maxsplit=1)[0] if text.strip() else ""
        return command_name(head) in STAFF_COMMANDS

    async def command(self, address: str, text: str, language: str = "en") -> list[str]:
        """Answer a lawyer command from a messenger address; others get the generic answer."""
        head, _, rest = text.strip().partition(" ")
        command = command_name(head)
        rest = rest.strip()
        generic = [self._t(language, "staff.unavailable")]
        if command == "register":
            return await self._register(address, rest, language) or generic
        async with self._uow() as uow:
            lawyer = await uow.lawyers.by_address(address)
        if lawyer is None or lawyer.status != "verified" or lawyer.role != "lawyer":
            return generic
        language = lawyer.languages[0]
        if command == "cases":
            return await self._list_cases(lawyer, language)
        number_text, _, argument = rest.partition(" ")
        match = _NUMBER.match(number_text)
        if match is None:
            return [self._t(language, "staff.usage")]
        number = int(match.group(1))
        async with self._uow() as uow:
            case = await uow.assignments.by_number(number)
        mine = case is not None and case.assigned_lawyer_id == lawyer.id
        # An unassigned documentation-only case may be claimed from the digest.
        claimable = (
            case is not None
            and command == "accept"
            and case.status == "new"
            and case.priority == Priority.P4
        )
        if case is None or not (mine or claimable) or case.status == "closed":
            return generic
        handler = {
            "case": self._show,
            "accept": self._accept,
            "decline": self._decline,
            "reply": self._reply,
            "close": self._close,
            "extend": self._extend,
        }[command]
        return await handler(lawyer, case, argument.strip(), address, language)

    async def _register(self, address: str, code: str, language: str) -> list[str] | None:
        try:
            normalized = normalize_receipt(code)
        except MalformedReceipt:
            return None
        phrase = make_phrase(self._choice)
        now = self._clock()
        async with self._uow() as uow:
            lawyer = await uow.lawyers.register(normalized, address, phrase, now)
            if lawyer is None:
                return None
            await uow.audit.append(f"{lawyer.role}:{lawyer.id}", "lawyer.register", None, now)
            await uow.commit()
        return [self._t(language, "staff.registered", phrase=phrase)]

    async def _list_cases(self, lawyer: LawyerInfo, language: str) -> list[str]:
        async with self._uow() as uow:
            cases = await uow.assignments.assigned_to(lawyer.id)
        if not cases:
            return [self._t(language, "staff.cases_none")]
        lines = [
            f"#{c.number} P{c.priority} {c.status} "
            f"({(c.assigned_at or c.expires_at).strftime('%Y-%m-%d %H:%M')})"
            for c in cases
        ]
        return ["\n".join(lines)]

    async def _show(
        self, lawyer: LawyerInfo, case: CaseInfo, _: str, address: str, language: str
    ) -> list[str]:
        if _channel(address) == "telegram" and not self._policy.content_over_telegram:
            return [self._t(language, "staff.content_signal_only")]
        async with self._uow() as uow:
            content = await uow.cases.get(case.id)
            messages = await uow.assignments.messages(case.id)
            await uow.audit.append(f"lawyer:{lawyer.id}", "case.read", case.id, self._clock())
            await uow.commit()
        assert content is not None
        flags = [str(f) for f in content.meta.get("flags", [])]
        text = render_case(
            self._texts, language, case.number, case.priority, flags, content.answers
        )
        thread = [f"[{d}] {t}" for d, _, t in messages]
        return [text, *thread]

    async def _accept(
        self, lawyer: LawyerInfo, case: CaseInfo, _: str, address: str, language: str
    ) -> list[str]:
        now = self._clock()
        async with self._uow() as uow:
            if case.assigned_lawyer_id != lawyer.id:
                await uow.assignments.assign(case.id, lawyer.id, now)
            await uow.assignments.update(case.id, status="accepted")
            await uow.audit.append(f"lawyer:{lawyer.id}", "case.accept", case.id, now)
            await uow.commit()
        return [self._t(language, "staff.accepted", number=case.number)]

    async def _decline(
        self, lawyer: LawyerInfo, case: CaseInfo, _: str, address: str, language: str
    ) -> list[str]:
        now = self._clock()
        async with self._uow() as uow:
            await uow.assignments.release(case.id)
            await uow.audit.append(f"lawyer:{lawyer.id}", "case.decline", case.id, now)
            await uow.commit()
        await self.route(case.id)
        return [self._t(language, "staff.declined", number=case.number)]

    async def _reply(
        self, lawyer: LawyerInfo, case: CaseInfo, text: str, address: str, language: str
    ) -> list[str]:
        if not text or len(text) > self._policy.text_max:
            return [self._t(language, "staff.usage")]
        now = self._clock()
        async with self._uow() as uow:
            content = await uow.cases.get(case.id)
            await uow.assignments.add_message(case.id, "to_reporter", text, now)
            await uow.assignments.update(
                case.id, expires_at=max(case.expires_at, now + timedelta(days=30))
            )
            await uow.audit.append(f"lawyer:{lawyer.id}", "case.reply", case.id, now)
            await uow.commit()
        delivered = False
        if content is not None and content.reply_address:
            reporter_language = str(content.meta.get("language", "en"))
            body = self._t(reporter_language, "ui.lawyer_message", text=text)
            delivered = await self._notifier.send(content.reply_address, body)
        key = "staff.reply_delivered" if delivered else "staff.reply_stored"
        return [self._t(language, key, number=case.number)]

    async def _close(
        self, lawyer: LawyerInfo, case: CaseInfo, outcome: str, address: str, language: str
    ) -> list[str]:
        now = self._clock()
        async with self._uow() as uow:
            if outcome:
                await uow.assignments.add_message(case.id, "outcome", outcome[:500], now)
            await uow.assignments.update(case.id, status="closed")
            await uow.audit.append(f"lawyer:{lawyer.id}", "case.close", case.id, now)
            await uow.commit()
        return [self._t(language, "staff.closed", number=case.number)]

    async def _extend(
        self, lawyer: LawyerInfo, case: CaseInfo, days_text: str, address: str, language: str
    ) -> list[str]:
        maximum = self._policy.max_extend_days
        if not days_text.isdigit() or not 1 <= int(days_text) <= maximum:
            return [self._t(language, "staff.extend_bounds", max=maximum)]
        now = self._clock()
        new_expiry = max(case.expires_at, now) + timedelta(days=int(days_text))
        async with self._uow() as uow:
            content = await uow.cases.get(case.id)
            await uow.assignments.update(case.id, expires_at=new_expiry, expiry_warned=False)
            documents = content.answers.get("documents") if content else None
            if isinstance(documents, list):
                await uow.attachments.set_expiry(documents, new_expiry)
            await uow.audit.append(f"lawyer:{lawyer.id}", f"case.extend.{days_text}d", case.id, now)
            await uow.commit()
        return [
            self._t(
                language,
                "staff.extended",
                number=case.number,
                date=new_expiry.strftime("%Y-%m-%d %H:%M UTC"),
            )
        ]

    # ---- the reporter's side of the relay --------------------------------------------------

    async def reporter_messages(self, code: str, language: str) -> list[str]:
        """Lawyer messages for the holder of a receipt code (shown with ``status CODE``)."""
        try:
            normalized = normalize_receipt(code)
        except MalformedReceipt:
            return []
        async with self._uow() as uow:
            case_id = await uow.cases.id_by_receipt(normalized)
            if case_id is None:
                return []
            messages = await uow.assignments.messages(case_id)
        return [
            self._t(language, "ui.lawyer_message", text=text)
            for direction, _, text in messages
            if direction == "to_reporter"
        ]

    async def reporter_reply(self, code: str, text: str, language: str) -> str:
        """A reporter answers the lawyer; the lawyer never learns who or where from."""
        text = text.strip()
        try:
            normalized = normalize_receipt(code)
        except MalformedReceipt:
            return self._t(language, "status.unknown")
        if not text or len(text) > self._policy.text_max:
            return self._t(language, "ui.reply_usage")
        now = self._clock()
        notify = None
        async with self._uow() as uow:
            case_id = await uow.cases.id_by_receipt(normalized)
            case = await uow.assignments.by_id(case_id) if case_id else None
            if case is None or case.status == "closed":
                return self._t(language, "status.unknown")
            await uow.assignments.add_message(case.id, "to_lawyer", text, now)
            if case.assigned_lawyer_id is not None:
                address = await uow.lawyers.contact(case.assigned_lawyer_id)
                lawyer = await uow.lawyers.get(case.assigned_lawyer_id)
                if address and lawyer and lawyer.status == "verified":
                    staff_language = lawyer.languages[0]
                    if _channel(address) == "telegram" and not self._policy.content_over_telegram:
                        body = self._t(
                            staff_language, "staff.reporter_message_notice", number=case.number
                        )
                    else:
                        body = self._t(
                            staff_language, "staff.reporter_message", number=case.number, text=text
                        )
                    notify = (address, body)
            await uow.commit()
        if notify:
            await self._notifier.send(*notify)
        return self._t(language, "ui.reply_sent")
