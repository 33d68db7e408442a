"""Events (raids), their counters and case links, and legal deadlines (DESIGN.md section 7).

An event's city and dates are encrypted under its own DEK; its counters are plain numbers with
no link to any case, so they survive the purge of the cases that made them. A case's link to an
event and its deadlines go with the case (foreign keys cascade). A deadline's last day stays in
clear, a date only, so the reminder job finds what is due without decrypting anything else.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services.ports import OPEN, CaseId, DeadlineRecord, EventRecord, LawyerId, LinkedCase
from storage.codec import _dumps, _loads, new_id
from storage.crypto import DecryptionError, RecordCipher
from storage.models import Case, Deadline, Event, EventCase, EventCounter

#: Event numbers are short and random (never max+1): 100 to 9999.
_NUMBERS = (100, 10_000)


def _day(value: Any) -> date | None:
    return date.fromisoformat(value) if isinstance(value, str) else None


class SqlCaseworkStore:
    """Events, links, counters and deadlines in one transaction."""

    events_table = "events"
    deadlines_table = "deadlines"

    def __init__(self, session: AsyncSession, cipher: RecordCipher) -> None:
        self._session = session
        self._cipher = cipher

    # ---- events --------------------------------------------------------------------------

    def _event(self, row: Event) -> EventRecord | None:
        try:
            dek = self._cipher.row_dek(self.events_table, row)
            data = _loads(self._cipher.decrypt(dek, self.events_table, row.id, "data", row.data_ct))
        except DecryptionError:
            return None
        return EventRecord(
            row.id,
            row.number,
            str(data["city"]),
            data.get("city_key"),
            date.fromisoformat(data["start"]),
            date.fromisoformat(data["end"]),
            _day(data.get("first_case")),
            _day(data.get("last_case")),
        )

    def _write(self, row: Event, event: EventRecord, dek: bytes | None = None) -> None:
        data = {
            "city": event.city,
            "city_key": event.city_key,
            "start": event.start.isoformat(),
            "end": event.end.isoformat(),
            "first_case": event.first_case.isoformat() if event.first_case else None,
            "last_case": event.last_case.isoformat() if event.last_case else None,
        }
        dek = dek or self._cipher.row_dek(self.events_table, row)
        row.data_ct = self._cipher.encrypt(dek, self.events_table, row.id, "data", _dumps(data))

    async def _free_number(self) -> int:
        while True:
            number = _NUMBERS[0] + secrets.randbelow(_NUMBERS[1] - _NUMBERS[0])
            taken = await self._session.execute(select(Event.id).where(Event.number == number))
            if taken.first() is None:
                return number

    async def new_event(
        self, *, city: str, city_key: str | None, start: date, end: date, created_on: date
    ) -> EventRecord:
        """Create an event with a short random number."""
        event_id = new_id()
        dek, wrapped = self._cipher.new_dek(self.events_table, event_id)
        record = EventRecord(
            event_id, await self._free_number(), city, city_key, start, end, None, None
        )
        row = Event(
            id=event_id,
            number=record.number,
            created_on=created_on,
            kek_id=wrapped.kek_id,
            wrapped_dek=wrapped.wrapped,
            data_ct=b"",
        )
        self._write(row, record, dek)
        self._session.add(row)
        await self._session.flush()
        return record

    async def event(self, number: int) -> EventRecord | None:
        """One event by its number."""
        row = (
            await self._session.execute(select(Event).where(Event.number == number))
        ).scalar_one_or_none()
        return None if row is None else self._event(row)

    async def events(self) -> list[EventRecord]:
        """Every readable event, by number."""
        rows = (await self._session.execute(select(Event).order_by(Event.number))).scalars()
        return [e for row in rows if (e := self._event(row)) is not None]

    async def event_of(self, case_id: str) -> EventRecord | None:
        """The event a case is linked to, if any."""
        row = (
            await self._session.execute(
                select(Event)
                .join(EventCase, EventCase.event_id == Event.id)
                .where(EventCase.case_id == case_id)
            )
        ).scalar_one_or_none()
        return None if row is None else self._event(row)

    async def link(
        self, event: EventRecord, case_id: str, categories: Sequence[str], reported_on: date
    ) -> EventRecord:
        """Link a case (not linked anywhere yet) and count it; the event's span widens."""
        self._session.add(EventCase(case_id=case_id, event_id=event.id))
        for category in categories:
            result = await self._session.execute(
                update(EventCounter)
                .where(EventCounter.event_id == event.id, EventCounter.category == category)
                .values(count=EventCounter.count + 1)
            )
            if not getattr(result, "rowcount", 0):
                self._session.add(EventCounter(event_id=event.id, category=category, count=1))
        row = await self._session.get(Event, event.id)
        assert row is not None
        first = min(event.first_case or reported_on, reported_on)
        last = max(event.last_case or reported_on, reported_on)
        widened = EventRecord(
            event.id, event.number, event.city, event.city_key, event.start, event.end, first, last
        )
        self._write(row, widened)
        await self._session.flush()
        return widened

    async def counts(self, event_id: str) -> dict[str, int]:
        """An event's counters by category."""
        rows = await self._session.execute(
            select(EventCounter.category, EventCounter.count).where(
                EventCounter.event_id == event_id
            )
        )
        return {str(category): int(count) for category, count in rows.all()}

    async def linked(self, event_id: str) -> list[LinkedCase]:
        """The cases still linked to an event (purged ones are gone), by number."""
        rows = await self._session.execute(
            select(Case.id, Case.number, Case.status, Case.assigned_lawyer_id)
            .join(EventCase, EventCase.case_id == Case.id)
            .where(EventCase.event_id == event_id)
            .order_by(Case.number)
        )
        return [
            LinkedCase(
                CaseId(r.id),
                r.number or 0,
                r.status,
                None if r.assigned_lawyer_id is None else LawyerId(r.assigned_lawyer_id),
            )
            for r in rows
        ]

    # ---- deadlines -------------------------------------------------------------------------

    async def add_deadline(self, case_id: str, due_on: date, data: Mapping[str, Any]) -> None:
        """Store a deadline of a case (what it is, encrypted)."""
        deadline_id = new_id()
        dek, wrapped = self._cipher.new_dek(self.deadlines_table, deadline_id)
        self._session.add(
            Deadline(
                id=deadline_id,
                case_id=case_id,
                due_on=due_on,
                stage=0,
                kek_id=wrapped.kek_id,
                wrapped_dek=wrapped.wrapped,
                data_ct=self._cipher.encrypt(
                    dek, self.deadlines_table, deadline_id, "data", _dumps(data)
                ),
            )
        )
        await self._session.flush()

    def _deadline(self, row: Deadline, number: int | None) -> DeadlineRecord | None:
        try:
            dek = self._cipher.row_dek(self.deadlines_table, row)
            data = _loads(
                self._cipher.decrypt(dek, self.deadlines_table, row.id, "data", row.data_ct)
            )
        except DecryptionError:
            return None
        return DeadlineRecord(row.id, CaseId(row.case_id), number or 0, row.due_on, row.stage, data)

    async def _deadlines(self, *where: Any) -> list[DeadlineRecord]:
        rows = await self._session.execute(
            select(Deadline, Case.number)
            .join(Case, Case.id == Deadline.case_id)
            .where(*where)
            .order_by(Deadline.due_on, Case.number, Deadline.id)
        )
        return [d for row, number in rows.all() if (d := self._deadline(row, number)) is not None]

    async def case_deadlines(self, case_id: str) -> list[DeadlineRecord]:
        """Every deadline of one case, soonest first."""
        return await self._deadlines(Deadline.case_id == case_id)

    async def lawyer_deadlines(self, lawyer_id: int, since: date) -> list[DeadlineRecord]:
        """Deadlines not passed before ``since`` on a lawyer's open cases, soonest first."""
        return await self._deadlines(
            Case.assigned_lawyer_id == lawyer_id,
            Case.status.in_(OPEN),
            Deadline.due_on >= since,
        )

    async def due_deadlines(self, until: date, below_stage: int) -> list[DeadlineRecord]:
        """Deadlines whose last day is at most ``until`` and whose stage is below a stage."""
        return await self._deadlines(Deadline.due_on <= until, Deadline.stage < below_stage)

    async def set_stage(self, deadline_id: str, stage: int) -> None:
        """Record how far a deadline's reminders went."""
        await self._session.execute(
            update(Deadline).where(Deadline.id == deadline_id).values(stage=stage)
        )

    async def latest_due(self, case_id: str) -> date | None:
        """The last day of a case's latest deadline."""
        query = select(func.max(Deadline.due_on)).where(Deadline.case_id == case_id)
        result: date | None = (await self._session.execute(query)).scalar()
        return result
