"""Casework after intake: events (one raid, many victims), legal deadlines with reminders, and
the signed evidence package (DESIGN.md section 7).

Messenger commands run inside the inbound transaction (ownership checked and acted on in it,
every notice to the outbox in it); the reminder job and the CLI use cases own one transaction
each. A lawyer never learns anything about a case that is not theirs: they may link, decide on
and export only their own cases, and a suggestion names only their own cases. Admins see every
suggestion and may link any case; they never read content from a messenger.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from bot.domain.casetext import CaseText
from bot.domain.casework import (
    EVENT_CATEGORIES,
    EventSpan,
    LinkCase,
    NewEvent,
    ShowEvent,
    city_key,
    event_categories,
    parse_decision,
    parse_event,
    reports_detention,
    same_raid,
)
from bot.domain.commands import Command, Name
from bot.domain.deadlines import (
    DeadlineTable,
    Rule,
    Stage,
    due_moment,
    kinds_help,
    label,
    next_stage,
)
from bot.domain.huridocs import EventRef, huridocs_record, render_html
from bot.domain.retention import ceiling as retention_ceiling
from bot.domain.stats import show
from bot.domain.texts import Texts
from bot.services.clock import Clock
from bot.services.evidence import PackageFile, build_package, original_name
from bot.services.notifying import Notifying
from bot.services.outbox import Outgoing, OutgoingFile
from bot.services.ports import (
    OPEN,
    CaseRecord,
    CaseStatus,
    CaseworkUnitOfWork,
    EventRecord,
    LawyerRecord,
    LawyerStatus,
    Role,
    Signer,
    StaffUnitOfWork,
)

#: The commands this service answers.
COMMANDS = frozenset({Name.EVENT, Name.DECISION, Name.DEADLINES, Name.EXPORT})


class CaseworkError(Exception):
    """A CLI casework command that cannot be done; the message is one clear line."""


@dataclass(frozen=True, slots=True)
class CaseworkPolicy:
    """Limits of casework."""

    #: Counts under this are shown as ``<threshold`` (as the statistics are).
    threshold: int = 5
    #: No case is kept longer than this after its submission (the retention ceiling).
    max_retention: timedelta = timedelta(days=365)
    #: A case is kept this long past its latest deadline, for the follow-up.
    deadline_grace: timedelta = timedelta(days=7)
    content_over_telegram: bool = False


@dataclass(frozen=True, slots=True)
class EventSummary:
    """An event with its counters as published (small cells suppressed), for the CLI."""

    event: EventRecord
    counts: tuple[tuple[str, int], ...]
    shown: tuple[tuple[str, str], ...]
    cases: tuple[int, ...]


def _channel(address: str) -> str:
    return address.split(":", 1)[0]


def _span(event: EventRecord) -> EventSpan:
    first = min(event.start, event.first_case or event.start)
    last = max(event.end, event.last_case or event.end)
    return EventSpan(event.city_key, first, last)


_T = TypeVar("_T")


def _found(value: _T | None, missing: str) -> _T:
    """The value, or ``missing`` as the CLI's one clear line."""
    if value is None:
        raise CaseworkError(missing)
    return value


def _store(uow: StaffUnitOfWork) -> CaseworkUnitOfWork:
    if not isinstance(uow, CaseworkUnitOfWork):
        raise CaseworkError("this store keeps no events or deadlines")
    return uow


class Casework(Notifying):
    """Events, deadlines and evidence packages, for messengers, the job and the CLI."""

    def __init__(
        self,
        uow: Callable[[], StaffUnitOfWork],
        texts: Texts,
        clock: Clock,
        table: DeadlineTable,
        signer: Signer,
        policy: CaseworkPolicy | None = None,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(uow, texts, clock, wake)
        self.table = table
        self._signer = signer
        self._policy = policy or CaseworkPolicy()

    def _content_allowed(self, address: str) -> bool:
        return _channel(address) != "telegram" or self._policy.content_over_telegram

    # ---- messenger commands (inside the inbound transaction) -------------------------------

    async def handle(
        self,
        uow: StaffUnitOfWork,
        out: Outgoing,
        address: str,
        staff: LawyerRecord,
        command: Command,
        now: datetime,
    ) -> list[str] | None:
        """Answers to a casework command of a verified lawyer or admin; None: the generic one."""
        language = staff.languages[0]
        if not isinstance(uow, CaseworkUnitOfWork):
            return None
        if command.name is Name.EVENT:
            return await self._event(uow, staff, command, language, now)
        if staff.role != Role.LAWYER:
            return None  # admins group cases; they hold none to decide on or export
        if command.name is Name.DEADLINES:
            return await self._deadlines(uow, staff, address, language, now)
        if command.bare or command.number is None:
            key = "decision.usage" if command.name is Name.DECISION else "export.usage"
            return [self._t(language, key, kinds=kinds_help(self.table, language))]
        case = await self._mine(uow, staff, command.number)
        if case is None:
            return None
        if command.name is Name.DECISION:
            return await self._decision(uow, staff, case, command.text, language, now)
        return await self._export(uow, out, address, staff, case, language, now)

    async def _mine(
        self, uow: StaffUnitOfWork, staff: LawyerRecord, number: int
    ) -> CaseRecord | None:
        case = await uow.assignments.by_number(number)
        if case is None or case.status == CaseStatus.CLOSED:
            return None
        if staff.role == Role.ADMIN or case.assigned_lawyer_id == staff.id:
            return case
        return None

    @staticmethod
    def _actor(staff: LawyerRecord) -> str:
        return f"{staff.role}:{staff.id}"

    async def _event(
        self,
        uow: CaseworkUnitOfWork,
        staff: LawyerRecord,
        command: Command,
        language: str,
        now: datetime,
    ) -> list[str] | None:
        args = None if command.bare else parse_event(command.text)
        if args is None:
            return [self._t(language, "event.usage")]
        if isinstance(args, NewEvent):
            created = await uow.casework.new_event(
                city=args.city,
                city_key=city_key(args.city),
                start=args.start,
                end=args.end,
                created_on=now.date(),
            )
            await uow.audit.append(self._actor(staff), "event.new", None, now)
            return [self._t(language, "event.created", **self._where(created))]
        event = await uow.casework.event(args.event)
        if event is None:
            return [self._t(language, "event.unknown", number=args.event)]
        if isinstance(args, ShowEvent):
            return [await self._summary(uow, event, staff, language)]
        assert isinstance(args, LinkCase)
        case = await self._mine(uow, staff, args.case)
        if case is None:
            return None
        answer = await self._link(uow, event, case, self._actor(staff), now)
        return [self._t(language, answer[0], case=case.number, event=answer[1])]

    @staticmethod
    def _where(event: EventRecord) -> dict[str, object]:
        return {
            "number": event.number,
            "city": event.city,
            "start": event.start.isoformat(),
            "end": event.end.isoformat(),
        }

    async def _link(
        self,
        uow: CaseworkUnitOfWork,
        event: EventRecord,
        case: CaseRecord,
        actor: str,
        now: datetime,
    ) -> tuple[str, int]:
        linked = await uow.casework.event_of(case.id)
        if linked is not None:
            return "event.already", linked.number
        content = await uow.cases.get(case.id)
        if content is None:
            raise CaseworkError(f"case #{case.number} cannot be read")
        categories = event_categories(content.answers)
        await uow.casework.link(event, case.id, categories, case.created_on)
        await uow.audit.append(actor, "event.link", case.id, now)
        return "event.linked", event.number

    async def _summary(
        self, uow: CaseworkUnitOfWork, event: EventRecord, staff: LawyerRecord, language: str
    ) -> str:
        counts = await uow.casework.counts(event.id)
        threshold = self._policy.threshold
        lines = [self._t(language, "event.summary", threshold=threshold, **self._where(event))]
        for category in EVENT_CATEGORIES:
            count = counts.get(category, 0)
            lines.append(f"{self._t(language, f'event.cat.{category}')}: {show(count, threshold)}")
        linked = await uow.casework.linked(event.id)
        if staff.role == Role.ADMIN:
            numbers = [c.number for c in linked]
            key = "event.all_cases"
        else:
            numbers = [c.number for c in linked if c.assigned_lawyer_id == staff.id]
            key = "event.your_cases"
        if numbers:
            lines.append(self._t(language, key, numbers=", ".join(f"#{n}" for n in numbers)))
        return "\n".join(lines)

    async def _decision(
        self,
        uow: CaseworkUnitOfWork,
        staff: LawyerRecord,
        case: CaseRecord,
        text: str,
        language: str,
        now: datetime,
    ) -> list[str]:
        usage = [self._t(language, "decision.usage", kinds=kinds_help(self.table, language))]
        args = parse_decision(case.number, text)
        kind = None if args is None else self.table.kind(args.kind)
        if args is None or kind is None:
            return usage
        if args.decided_on > now.date():
            return [self._t(language, "decision.future")]
        rules = [(rule, rule.due_on(args.decided_on)) for rule in self.table.opened_by(kind)]
        for rule, due in rules:
            await uow.casework.add_deadline(
                case.id,
                due,
                {"rule": rule.id, "kind": kind.id, "decided_on": args.decided_on.isoformat()},
            )
        await uow.audit.append(self._actor(staff), "case.decision", case.id, now)
        lines = [self._t(language, "decision.recorded", number=case.number)]
        lines += [self._deadline_line(rule, due, language) for rule, due in rules]
        if rules:
            lines.append(await self._cover(uow, case, max(d for _, d in rules), language))
        return ["\n".join(lines)]

    def _deadline_line(self, rule: Rule, due: Any, language: str) -> str:
        line = f"{due.isoformat()}: {label(rule.labels, language)}"
        if rule.check_with_counsel:
            line += f" ({self._t(language, 'deadline.counsel')})"
        return line

    async def _cover(
        self, uow: CaseworkUnitOfWork, case: CaseRecord, latest: Any, language: str
    ) -> str:
        """Keep the case (and its files) past its latest deadline, within the ceiling."""
        needed = due_moment(latest) + self._policy.deadline_grace
        ceiling = retention_ceiling(case.created_on, self._policy.max_retention)
        keep = max(case.expires_at, min(needed, ceiling))
        if keep != case.expires_at:
            await uow.assignments.update(case.id, expires_at=keep, expiry_warned=False)
            content = await uow.cases.get(case.id)
            documents = content.answers.get("documents") if content else None
            if isinstance(documents, list):
                await uow.attachments.set_expiry([str(d) for d in documents], keep)
        date = keep.strftime("%Y-%m-%d %H:%M UTC")
        if needed > ceiling:
            return self._t(language, "decision.ceiling", date=date, number=case.number)
        return self._t(language, "decision.kept", date=date)

    async def _deadlines(
        self,
        uow: CaseworkUnitOfWork,
        staff: LawyerRecord,
        address: str,
        language: str,
        now: datetime,
    ) -> list[str]:
        found = await uow.casework.lawyer_deadlines(staff.id, now.date())
        lines = []
        for deadline in found:
            if deadline.stage >= Stage.PASSED:
                continue
            rule = self.table.rule(str(deadline.data.get("rule")))
            if rule is None or not self._content_allowed(address):
                lines.append(f"#{deadline.case_number} {deadline.due_on.isoformat()}")
            else:
                line = self._deadline_line(rule, deadline.due_on, language)
                lines.append(f"#{deadline.case_number} {line}")
        return ["\n".join(lines) if lines else self._t(language, "deadline.none")]

    async def _export(
        self,
        uow: CaseworkUnitOfWork,
        out: Outgoing,
        address: str,
        staff: LawyerRecord,
        case: CaseRecord,
        language: str,
        now: datetime,
    ) -> list[str]:
        if not self._content_allowed(address):
            return [self._t(language, "staff.content_signal_only")]
        package = await self.package(uow, case, language, now)
        await uow.audit.append(self._actor(staff), "case.export", case.id, now)
        caption = self._t(
            language,
            "export.caption",
            number=case.number,
            public_key=self._signer.public_key().hex(),
            sha256=hashlib.sha256(package).hexdigest(),
        )
        name = f"tipline-case-{case.number}.zip"
        out.send_files(address, caption, [OutgoingFile(name, "application/zip", package)])
        return []

    # ---- the package --------------------------------------------------------------------

    async def originals(self, uow: StaffUnitOfWork, answers: dict[str, Any]) -> list[OutgoingFile]:
        """The original bytes of a case's files, as the reporter sent them (lawyers only)."""
        documents = answers.get("documents")
        files: list[OutgoingFile] = []
        for ref in documents if isinstance(documents, list) else []:
            found = await uow.attachments.get(str(ref))
            if found is not None:
                mime = str(found.meta.get("mime") or "application/octet-stream")
                files.append(
                    OutgoingFile(original_name(len(files) + 1, mime), mime, found.original)
                )
        return files

    async def package(
        self, uow: CaseworkUnitOfWork, case: CaseRecord, language: str, now: datetime
    ) -> bytes:
        """The signed evidence package of a case, built in memory."""
        content = await uow.cases.get(case.id)
        if content is None:
            raise CaseworkError(f"case #{case.number} cannot be read")
        event = await uow.casework.event_of(case.id)
        ref = None if event is None else EventRef(event.number, event.city, event.start, event.end)
        originals = await self.originals(uow, content.answers)
        names = [f.name for f in originals]
        flags = [str(f) for f in content.meta.get("flags", [])]
        text = CaseText(case.number, case.priority, flags, content.answers)
        record = huridocs_record(
            text,
            created_on=case.created_on,
            event=ref,
            originals=names,
        )
        record["legal_deadlines"] = [
            {
                "rule": d.data.get("rule"),
                "decision": d.data.get("kind"),
                "decided_on": d.data.get("decided_on"),
                "last_day": d.due_on.isoformat(),
            }
            for d in await uow.casework.case_deadlines(case.id)
        ]
        page = render_html(self._texts, language, text, event=ref, originals=names)
        files = [
            PackageFile("case.json", json.dumps(record, indent=1, ensure_ascii=False).encode()),
            PackageFile("case.html", page.encode()),
            *(PackageFile(f.name, f.data) for f in originals),
        ]
        return build_package(files, case_number=case.number, exported=now, signer=self._signer)

    # ---- raid suggestions (inside the submission's transaction) ----------------------------

    async def suggest(
        self,
        uow: StaffUnitOfWork,
        out: Outgoing,
        case_id: str,
        answers: dict[str, Any],
        now: datetime,
    ) -> int:
        """A new detention in an event's city within 48 hours of it: tell the lawyer who holds
        both (naming only their cases) and every admin; how many events it may belong to."""
        if not isinstance(uow, CaseworkUnitOfWork) or not reports_detention(answers):
            return 0
        city = str(answers.get("city") or "")
        reported_on = now.date()
        events = [e for e in await uow.casework.events() if same_raid(_span(e), city, reported_on)]
        if not events:
            return 0
        case = await uow.assignments.by_id(case_id)
        if case is None:
            return 0
        holder = case.assigned_lawyer_id if case.status in OPEN else None
        lawyer = await uow.lawyers.get(holder) if holder is not None else None
        contact = await uow.lawyers.contact(holder) if holder is not None else None
        admins = await uow.lawyers.admin_contacts()
        for event in events:
            if lawyer is not None and contact and lawyer.status == LawyerStatus.VERIFIED:
                mine = [
                    c.number
                    for c in await uow.casework.linked(event.id)
                    if c.assigned_lawyer_id == lawyer.id and c.status in OPEN
                ]
                if mine:
                    text = self._t(
                        lawyer.languages[0],
                        "event.suggest",
                        case=case.number,
                        event=event.number,
                        numbers=", ".join(f"#{n}" for n in mine),
                    )
                    out.notify(contact, text)
            admin_text = self._t("en", "event.suggest_admin", case=case.number, event=event.number)
            for admin in admins:
                out.notify(admin, admin_text)
            await uow.audit.append("system", "event.suggest", case.id, now)
        return len(events)

    # ---- the reminder job ----------------------------------------------------------------

    async def remind_deadlines(self) -> int:
        """Reminders 72 h and 24 h before a deadline; admins alerted when one passes while its
        case is still open. One transaction; how many notices were written."""
        now = self._clock()
        out = Outgoing()
        sent = 0
        async with self._uow() as plain:
            uow = _store(plain)
            if not await uow.assignments.try_job("remind_deadlines"):
                return 0  # another process is running this round
            until = (now + timedelta(hours=72)).date()
            for deadline in await uow.casework.due_deadlines(until, Stage.PASSED):
                stage = next_stage(deadline.due_on, Stage(deadline.stage), now)
                if stage == deadline.stage:
                    continue
                await uow.casework.set_stage(deadline.id, int(stage))
                case = await uow.assignments.by_id(deadline.case_id)
                if case is None:
                    continue
                if stage == Stage.PASSED:
                    if case.status != CaseStatus.CLOSED:
                        text = self._t(
                            "en",
                            "deadline.passed_admin",
                            number=case.number,
                            date=deadline.due_on.isoformat(),
                        )
                        for admin in await uow.lawyers.admin_contacts():
                            out.notify(admin, text)
                            sent += 1
                        await uow.audit.append("system", "deadline.passed", case.id, now)
                    continue
                sent += await self._remind(uow, out, case, deadline.due_on, deadline.data, stage)
            written = await out.write(uow, now)
            await uow.commit()
        if written:
            self.wake()
        return sent

    async def _remind(
        self,
        uow: CaseworkUnitOfWork,
        out: Outgoing,
        case: CaseRecord,
        due_on: Any,
        data: dict[str, Any],
        stage: Stage,
    ) -> int:
        if case.status not in OPEN or case.assigned_lawyer_id is None:
            return 0
        lawyer = await uow.lawyers.get(case.assigned_lawyer_id)
        address = await uow.lawyers.contact(case.assigned_lawyer_id)
        if lawyer is None or not address or lawyer.status != LawyerStatus.VERIFIED:
            return 0
        language = lawyer.languages[0]
        hours = 72 if stage == Stage.REMINDED_72H else 24
        rule = self.table.rule(str(data.get("rule")))
        date = due_on.isoformat()
        if rule is None or not self._content_allowed(address):
            text = self._t(
                language, "deadline.reminder_notice", hours=hours, number=case.number, date=date
            )
        else:
            what = self._deadline_line(rule, due_on, language).partition(": ")[2]
            text = self._t(
                language, "deadline.reminder", hours=hours, number=case.number, date=date, what=what
            )
        out.notify(address, text)
        return 1

    # ---- CLI use cases (one transaction each) -------------------------------------------

    async def _summaries(
        self, uow: CaseworkUnitOfWork, events: Sequence[EventRecord]
    ) -> list[EventSummary]:
        result = []
        for event in events:
            counts = await uow.casework.counts(event.id)
            ordered = tuple((c, counts.get(c, 0)) for c in EVENT_CATEGORIES)
            shown = tuple((c, show(n, self._policy.threshold)) for c, n in ordered)
            linked = tuple(c.number for c in await uow.casework.linked(event.id))
            result.append(EventSummary(event, ordered, shown, linked))
        return result

    async def list_events(self) -> list[EventSummary]:
        """Every event with its published counts (``tipline events list``)."""
        async with self._uow() as plain:
            uow = _store(plain)
            return await self._summaries(uow, await uow.casework.events())

    async def event_summary(self, number: int) -> EventSummary:
        """One event (``tipline events show E``, ``tipline stats --event E``)."""
        async with self._uow() as plain:
            uow = _store(plain)
            return (
                await self._summaries(
                    uow, [_found(await uow.casework.event(number), f"there is no event {number}")]
                )
            )[0]

    async def link(self, number: int, case_number: int) -> str:
        """An admin links a case to an event (``tipline events link E N``); what was done."""
        now = self._clock()
        async with self._uow() as plain:
            uow = _store(plain)
            event = _found(await uow.casework.event(number), f"there is no event {number}")
            case = _found(
                await uow.assignments.by_number(case_number), f"there is no case #{case_number}"
            )
            key, linked_to = await self._link(uow, event, case, "admin", now)
            await uow.commit()
        if key == "event.already":
            raise CaseworkError(f"case #{case_number} is already linked to event {linked_to}")
        return f"case #{case_number} linked to event {number}"

    async def export(self, case_number: int, language: str) -> bytes:
        """The evidence package of a case for the admin's CLI (audited)."""
        now = self._clock()
        async with self._uow() as plain:
            uow = _store(plain)
            case = _found(
                await uow.assignments.by_number(case_number), f"there is no case #{case_number}"
            )
            package = await self.package(uow, case, language, now)
            await uow.audit.append("admin", "case.export", case.id, now)
            await uow.commit()
        return package

    def public_key(self) -> bytes:
        """The key packages are signed with."""
        return self._signer.public_key()
