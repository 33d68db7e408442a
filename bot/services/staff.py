"""Lawyer and admin commands from a messenger, and the reporter's side of the relay.

Each runs inside the inbound transaction: ownership of a case is checked and acted on in the same
transaction, and every notice it causes goes to the outbox in it. Every account that is not a
verified lawyer gets the same answer to every lawyer command, so nobody learns whether a case, a
number or an account exists. Every lawyer and admin action is audited, never with content.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.domain.casetext import CaseText, render_case
from bot.domain.commands import Command, Name
from bot.domain.phrase import make_phrase
from bot.domain.retention import REPLY_KEEPS, extend, round_up_to_hour
from bot.domain.texts import Texts
from bot.services.casework import COMMANDS as CASEWORK_COMMANDS
from bot.services.casework import Casework
from bot.services.outbox import Outgoing
from bot.services.ports import (
    DOCUMENTATION,
    CaseRecord,
    CaseStatus,
    LawyerRecord,
    LawyerStatus,
    Role,
    StaffUnitOfWork,
)
from bot.services.reporter import ReporterService
from bot.services.routing import LawyerPolicy, Routing


def _channel(address: str) -> str:
    return address.split(":", 1)[0]


@dataclass(frozen=True, slots=True)
class StaffContext:
    """One staff command being handled, inside the inbound transaction."""

    uow: StaffUnitOfWork
    out: Outgoing
    address: str
    language: str
    now: datetime


class StaffCommands:
    """Answers lawyer and admin commands; everyone else gets the generic answer."""

    def __init__(
        self,
        texts: Texts,
        routing: Routing,
        policy: LawyerPolicy | None = None,
        choice: Callable[[list[str]], str] = secrets.choice,
        request_lock: Callable[[], None] | None = None,
        casework: Casework | None = None,
        reporter: ReporterService | None = None,
    ) -> None:
        self._texts = texts
        self._routing = routing
        self._policy = policy or LawyerPolicy()
        self._choice = choice
        #: Asks the running service to lock once this transaction is committed.
        self.request_lock = request_lock
        #: Events, deadlines and evidence packages (their commands answer generically without).
        self.casework = casework
        #: The reporter's side of the relay: read-once messages, held ones.
        self.reporter = reporter or ReporterService(texts)

    def _t(self, language: str, key: str, **params: object) -> str:
        return self._texts.get(language, key, **params)

    def generic(self, language: str) -> list[str]:
        """The one answer to a command nobody may use here (or that does not exist)."""
        return [self._t(language, "staff.unavailable")]

    async def handle(self, ctx: StaffContext, command: Command) -> tuple[list[str], bool]:
        """Answers to send back, and whether the service must lock after the commit."""
        if command.name is Name.REGISTER:
            return (await self._register(ctx, command) or self.generic(ctx.language)), False
        lawyer = await ctx.uow.lawyers.by_address(ctx.address)
        if lawyer is None or lawyer.status != LawyerStatus.VERIFIED:
            return self.generic(ctx.language), False
        language = lawyer.languages[0]
        if command.name is Name.LOCK:
            if lawyer.role != Role.ADMIN or self.request_lock is None:
                return self.generic(language), False
            text = self._t("en", "staff.locked_by_admin")
            for admin in await ctx.uow.lawyers.admin_contacts():
                ctx.out.notify(admin, text)
            await ctx.uow.audit.append(f"admin:{lawyer.id}", "service.lock", None, ctx.now)
            return [], True
        if command.name in CASEWORK_COMMANDS:
            answers = None
            if self.casework is not None:
                answers = await self.casework.handle(
                    ctx.uow, ctx.out, ctx.address, lawyer, command, ctx.now
                )
            return (self.generic(language) if answers is None else answers), False
        if lawyer.role != Role.LAWYER:
            return self.generic(language), False
        if command.name is Name.CASES:
            return await self._list_cases(ctx, lawyer, language), False
        if command.number is None:
            return [self._t(language, "staff.usage")], False
        case = await ctx.uow.assignments.by_number(command.number)
        mine = case is not None and case.assigned_lawyer_id == lawyer.id
        # An unassigned documentation-only case may be claimed from the digest.
        claimable = (
            case is not None
            and command.name is Name.ACCEPT
            and case.status == CaseStatus.NEW
            and case.priority == DOCUMENTATION
        )
        if case is None or not (mine or claimable) or case.status == CaseStatus.CLOSED:
            return self.generic(language), False
        handler = {
            Name.CASE: self._show,
            Name.ACCEPT: self._accept,
            Name.DECLINE: self._decline,
            Name.REPLY: self._reply,
            Name.CLOSE: self._close,
            Name.EXTEND: self._extend,
        }.get(command.name)
        if handler is None:
            return self.generic(language), False
        return await handler(ctx, lawyer, case, command.text.strip(), language), False

    async def _register(self, ctx: StaffContext, command: Command) -> list[str] | None:
        if command.code is None:
            return None
        phrase = make_phrase(self._choice)
        lawyer = await ctx.uow.lawyers.register(command.code, ctx.address, phrase, ctx.now)
        if lawyer is None:
            return None
        await ctx.uow.audit.append(f"{lawyer.role}:{lawyer.id}", "lawyer.register", None, ctx.now)
        return [self._t(ctx.language, "staff.registered", phrase=phrase)]

    async def _list_cases(
        self, ctx: StaffContext, lawyer: LawyerRecord, language: str
    ) -> list[str]:
        cases = await ctx.uow.assignments.assigned_to(lawyer.id)
        if not cases:
            return [self._t(language, "staff.cases_none")]
        lines = [
            f"#{c.number} P{c.priority} {c.status} "
            f"({(c.assigned_at or c.expires_at).strftime('%Y-%m-%d %H:%M')})"
            for c in cases
        ]
        return ["\n".join(lines)]

    def _actor(self, lawyer: LawyerRecord) -> str:
        return f"lawyer:{lawyer.id}"

    async def _show(
        self, ctx: StaffContext, lawyer: LawyerRecord, case: CaseRecord, _: str, language: str
    ) -> list[str]:
        if _channel(ctx.address) == "telegram" and not self._policy.content_over_telegram:
            return [self._t(language, "staff.content_signal_only")]
        content = await ctx.uow.cases.get(case.id)
        messages = await ctx.uow.assignments.messages(case.id)
        await ctx.uow.audit.append(self._actor(lawyer), "case.read", case.id, ctx.now)
        if content is None:
            return self.generic(language)
        flags = [str(f) for f in content.meta.get("flags", [])]
        text = render_case(
            self._texts, language, CaseText(case.number, case.priority, flags, content.answers)
        )
        shown = [text, *(f"[{d}] {t}" for d, _, t in messages)]
        files = await self.casework.originals(ctx.uow, content.answers) if self.casework else []
        if not files:
            return shown
        # The originals follow the text they belong to, in the same chat.
        for line in shown:
            ctx.out.notify(ctx.address, line)
        caption = self._t(language, "export.originals", number=case.number, count=len(files))
        ctx.out.send_files(ctx.address, caption, files)
        return []

    async def _accept(
        self, ctx: StaffContext, lawyer: LawyerRecord, case: CaseRecord, _: str, language: str
    ) -> list[str]:
        if case.assigned_lawyer_id != lawyer.id:
            await ctx.uow.assignments.assign(case.id, lawyer.id, ctx.now)
        await ctx.uow.assignments.update(case.id, status=CaseStatus.ACCEPTED)
        await ctx.uow.audit.append(self._actor(lawyer), "case.accept", case.id, ctx.now)
        return [self._t(language, "staff.accepted", number=case.number)]

    async def _decline(
        self, ctx: StaffContext, lawyer: LawyerRecord, case: CaseRecord, _: str, language: str
    ) -> list[str]:
        await ctx.uow.assignments.release(case.id)
        await ctx.uow.audit.append(self._actor(lawyer), "case.decline", case.id, ctx.now)
        await self._routing.route(ctx.uow, ctx.out, case.id, ctx.now)
        return [self._t(language, "staff.declined", number=case.number)]

    async def _reply(
        self, ctx: StaffContext, lawyer: LawyerRecord, case: CaseRecord, text: str, language: str
    ) -> list[str]:
        if not text or len(text) > self._policy.text_max:
            return [self._t(language, "staff.usage")]
        content = await ctx.uow.cases.get(case.id)
        await ctx.uow.assignments.add_message(case.id, "to_reporter", text, ctx.now)
        await ctx.uow.audit.append(self._actor(lawyer), "case.reply", case.id, ctx.now)
        wanted = ctx.now + REPLY_KEEPS
        kept = await self._keep(ctx, lawyer, case, wanted, "case.extend.reply")
        if content is not None and content.reply_address:
            # The chat gets a notice without content; the message is read once.
            notified = await self.reporter.lawyer_wrote(
                ctx.uow, ctx.out, case.id, content.reply_address, ctx.now
            )
            key = "staff.reply_delivered" if notified else "staff.reply_held"
            answer = self._t(language, key, number=case.number)
        else:
            answer = self._t(language, "staff.reply_stored", number=case.number)
        return [answer, *kept]

    async def _keep(
        self,
        ctx: StaffContext,
        lawyer: LawyerRecord,
        case: CaseRecord,
        wanted: datetime,
        action: str,
    ) -> list[str]:
        """Keep a case (and its files) until ``wanted``, within the retention ceiling; the
        extension is audited, and the lawyer hears when the ceiling stopped it."""
        limit = self._policy.max_retention
        extension = extend(case.expires_at, wanted, case.created_on, limit)
        if extension.changed(case.expires_at):
            await ctx.uow.assignments.update(
                case.id, expires_at=extension.expires_at, expiry_warned=False
            )
            content = await ctx.uow.cases.get(case.id)
            documents = content.answers.get("documents") if content else None
            if isinstance(documents, list):
                await ctx.uow.attachments.set_expiry(documents, extension.expires_at)
            await ctx.uow.audit.append(self._actor(lawyer), action, case.id, ctx.now)
        if not extension.capped:
            return []
        await ctx.uow.audit.append(self._actor(lawyer), "case.extend.ceiling", case.id, ctx.now)
        return [
            self._t(
                lawyer.languages[0],
                "staff.extend_ceiling",
                number=case.number,
                date=extension.expires_at.strftime("%Y-%m-%d %H:%M UTC"),
                days=limit.days,
            )
        ]

    async def _close(
        self, ctx: StaffContext, lawyer: LawyerRecord, case: CaseRecord, outcome: str, language: str
    ) -> list[str]:
        if outcome:
            await ctx.uow.assignments.add_message(case.id, "outcome", outcome[:500], ctx.now)
        await ctx.uow.assignments.update(case.id, status=CaseStatus.CLOSED)
        await ctx.uow.audit.append(self._actor(lawyer), "case.close", case.id, ctx.now)
        return [self._t(language, "staff.closed", number=case.number)]

    async def _extend(
        self, ctx: StaffContext, lawyer: LawyerRecord, case: CaseRecord, days: str, language: str
    ) -> list[str]:
        maximum = self._policy.max_extend_days
        if not days.isdigit() or not 1 <= int(days) <= maximum:
            return [self._t(language, "staff.extend_bounds", max=maximum)]
        wanted = max(case.expires_at, ctx.now) + timedelta(days=int(days))
        capped = await self._keep(ctx, lawyer, case, wanted, f"case.extend.{days}d")
        if capped:
            return capped
        date = round_up_to_hour(wanted).strftime("%Y-%m-%d %H:%M UTC")
        return [self._t(language, "staff.extended", number=case.number, date=date)]

    # ---- the reporter's side of the relay --------------------------------------------------

    async def reporter_reply(
        self,
        uow: StaffUnitOfWork,
        out: Outgoing,
        code: str,
        text: str,
        language: str,
        now: datetime,
    ) -> str:
        """A reporter answers the lawyer; the lawyer never learns who or where from."""
        text = text.strip()
        if not text or len(text) > self._policy.text_max:
            return self._t(language, "ui.reply_usage")
        case_id = await uow.cases.id_by_receipt(code)
        case = await uow.assignments.by_id(case_id) if case_id else None
        if case is None or case.status == CaseStatus.CLOSED:
            return self._t(language, "status.unknown")
        await uow.assignments.add_message(case.id, "to_lawyer", text, now)
        if case.assigned_lawyer_id is not None:
            address = await uow.lawyers.contact(case.assigned_lawyer_id)
            lawyer = await uow.lawyers.get(case.assigned_lawyer_id)
            if address and lawyer and lawyer.status == LawyerStatus.VERIFIED:
                staff_language = lawyer.languages[0]
                if _channel(address) == "telegram" and not self._policy.content_over_telegram:
                    body = self._t(
                        staff_language, "staff.reporter_message_notice", number=case.number
                    )
                else:
                    body = self._t(
                        staff_language, "staff.reporter_message", number=case.number, text=text
                    )
                out.notify(address, body)
        return self._t(language, "ui.reply_sent")
