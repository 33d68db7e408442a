"""Lawyers and admins, case assignment and the relay between lawyers and reporters."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services.ports import (
    DOCUMENTATION,
    OPEN,
    WAITING,
    CaseId,
    CaseRecord,
    CaseStatus,
    Invitation,
    LawyerId,
    LawyerRecord,
    LawyerStatus,
    Role,
    lawyer_may_become,
)
from storage.codec import _dumps, _loads, new_id
from storage.crypto import DecryptionError, RecordCipher
from storage.index import (
    INDEXED,
    LAWYER_CONTACT,
    LAWYER_INVITE,
    Lookup,
    open_index,
    rekeyed,
    seal_index,
)
from storage.keyring import Keyring
from storage.locks import try_xact_lock
from storage.models import Case, CaseAttempt, CaseMessage, JobState, Lawyer

_NO_TIME = datetime.min.replace(tzinfo=UTC)
_ERASE_PENDING = "erase.pending"
_ERASE_RUNNING = "erase.running"
_ERASE = (_ERASE_PENDING, _ERASE_RUNNING)


def _hour_up(moment: datetime) -> datetime:
    # Expiry times at rest are whole hours, rounded up so nothing expires early.
    floor = moment.replace(minute=0, second=0, microsecond=0)
    return floor if floor == moment else floor + timedelta(hours=1)


def _case_row(row: Case, assigned_at: datetime | None = None) -> CaseRecord:
    lawyer = row.assigned_lawyer_id
    return CaseRecord(
        CaseId(row.id),
        row.number or 0,
        row.priority,
        row.status,
        None if lawyer is None else LawyerId(lawyer),
        assigned_at or row.assigned_at,
        row.expires_at,
        row.created_on,
        row.admins_alerted,
        row.expiry_warned,
    )


class SqlLawyerStore:
    """Lawyers: invite, register, verify, revoke; addresses found again by keyed pseudonym."""

    table = "lawyers"

    def __init__(self, session: AsyncSession, keyring: Keyring, cipher: RecordCipher) -> None:
        self._session = session
        self._keyring = keyring
        self._cipher = cipher
        self._deks: dict[int, bytes] = {}

    def _dek(self, row: Lawyer) -> bytes:
        # A command reads a lawyer's record and address: unwrap their DEK once per transaction.
        if row.id not in self._deks:
            self._deks[row.id] = self._cipher.row_dek(self.table, row)
        return self._deks[row.id]

    def _record(self, row: Lawyer, open_cases: int = 0, *, with_name: bool = True) -> LawyerRecord:
        name = b""
        if with_name:
            dek = self._dek(row)
            name = self._cipher.decrypt(dek, self.table, str(row.id), "name", row.name_ct)
        return LawyerRecord(
            LawyerId(row.id),
            row.role,
            row.status,
            row.on_call,
            tuple(x for x in row.languages.split(",") if x),
            tuple(x for x in row.regions.split(",") if x),
            name.decode(),
            open_cases,
        )

    def _set_lookups(self, row: Lawyer, **inner: bytes | None) -> None:
        """Change inner hashes (None drops one): ``index_ct`` and the lookup columns follow,
        under the index key of the row's KEK."""
        dek = self._dek(row)
        index: dict[str, str] = {}
        if row.index_ct is not None:
            index = open_index(self._cipher, dek, self.table, str(row.id), row.index_ct)
        for name, value in inner.items():
            if value is None:
                index.pop(name, None)
            else:
                index[name] = value.hex()
        row.index_ct = seal_index(self._cipher, dek, self.table, str(row.id), index)
        for column, value in rekeyed(self._keyring, INDEXED[Lawyer], index, row.kek_id).items():
            setattr(row, column, value)

    def _by(self, lookup: Lookup, inner: bytes) -> Any:
        return select(Lawyer).where(
            getattr(Lawyer, lookup.column).in_(lookup.candidates(self._keyring, inner))
        )

    async def invite(self, invitation: Invitation) -> int:
        """A new invited lawyer; the invite code is stored only as a keyed hash."""
        new = invitation
        row = Lawyer(
            role=new.role,
            status=LawyerStatus.INVITED,
            on_call=new.on_call,
            languages=",".join(new.languages),
            regions=",".join(new.regions),
            created_at=new.now,
            # An invite ends at the start of its hour (the column keeps hours): never later.
            invite_expires_at=new.expires_at,
            kek_id=0,
            wrapped_dek=b"",
            name_ct=b"",
        )
        self._session.add(row)
        await self._session.flush()  # the id binds the ciphertext to its row
        dek, wrapped = self._cipher.new_dek(self.table, str(row.id))
        row.kek_id, row.wrapped_dek = wrapped.kek_id, wrapped.wrapped
        row.name_ct = self._cipher.encrypt(dek, self.table, str(row.id), "name", new.name.encode())
        self._deks[row.id] = dek
        self._set_lookups(row, invite=self._keyring.receipt_hash("invite:" + new.invite_code))
        await self._session.flush()
        return row.id

    async def register(
        self, invite_code: str, address: str, phrase: str, now: datetime
    ) -> LawyerRecord | None:
        """Bind an unexpired, unused invite to a messenger address; None when it fails."""
        digest = self._keyring.receipt_hash("invite:" + invite_code)
        row = (await self._session.execute(self._by(LAWYER_INVITE, digest))).scalar_one_or_none()
        if row is None or not lawyer_may_become(row.status, LawyerStatus.REGISTERED):
            return None
        if row.invite_expires_at is None or row.invite_expires_at <= now:
            return None
        pseudonym = bytes.fromhex(self._keyring.pseudonym("staff", address))
        taken = await self._session.execute(self._by(LAWYER_CONTACT, pseudonym))
        if taken.first() is not None:
            return None
        dek = self._dek(row)
        row.contact_ct = self._cipher.encrypt(
            dek, self.table, str(row.id), "contact", address.encode()
        )
        self._set_lookups(
            row,
            contact=pseudonym,
            phrase=self._keyring.receipt_hash("phrase:" + phrase),
            invite=None,  # single use
        )
        row.status = LawyerStatus.REGISTERED
        return self._record(row)

    async def get(self, lawyer_id: int) -> LawyerRecord | None:
        """One lawyer by id."""
        row = await self._session.get(Lawyer, lawyer_id)
        return None if row is None else self._record(row)

    async def by_address(self, address: str) -> LawyerRecord | None:
        """The lawyer (or admin) registered from this messenger address."""
        pseudonym = bytes.fromhex(self._keyring.pseudonym("staff", address))
        row = (
            await self._session.execute(self._by(LAWYER_CONTACT, pseudonym))
        ).scalar_one_or_none()
        return None if row is None else self._record(row)

    async def verify(self, lawyer_id: int, phrase: str) -> bool:
        """Mark a registered lawyer verified if the phrase matches.

        A suspended lawyer is never verified again with the old phrase: only a new invite, a new
        registration and a new phrase bring them back.
        """
        row = await self._session.get(Lawyer, lawyer_id)
        if row is None or row.phrase_hash is None:
            return False
        if row.status != LawyerStatus.REGISTERED:  # a suspended account needs a new invite
            return False
        inner = self._keyring.receipt_hash("phrase:" + phrase)
        if not hmac.compare_digest(row.phrase_hash, self._keyring.lookup(inner, row.kek_id)):
            return False
        row.status = LawyerStatus.VERIFIED
        return True

    async def set_status(
        self, lawyer_id: int, status: str, *, forget_contact: bool = False
    ) -> bool:
        """Change a lawyer's status (revoke shreds the address too)."""
        row = await self._session.get(Lawyer, lawyer_id)
        if row is None or not (row.status == status or lawyer_may_become(row.status, status)):
            return False
        row.status = status
        if status != LawyerStatus.VERIFIED and row.phrase_hash is not None:
            self._set_lookups(row, phrase=None)  # a phrase proves one registration, once
        if forget_contact:
            row.contact_ct = None
            self._set_lookups(row, contact=None, invite=None)
        return True

    async def renew_invite(self, lawyer_id: int, invite_code: str, expires_at: datetime) -> bool:
        """A fresh invite for an existing lawyer (a new phone or safety number)."""
        row = await self._session.get(Lawyer, lawyer_id)
        if row is None or not lawyer_may_become(row.status, LawyerStatus.INVITED):
            return False
        row.status = LawyerStatus.INVITED
        row.invite_expires_at = expires_at  # the start of its hour: never later
        row.contact_ct = None
        invite = self._keyring.receipt_hash("invite:" + invite_code)
        self._set_lookups(row, invite=invite, contact=None, phrase=None)
        return True

    async def contact(self, lawyer_id: int) -> str | None:
        """The messenger address of a lawyer, decrypted."""
        row = await self._session.get(Lawyer, lawyer_id)
        return None if row is None else self._contact(row)

    def _contact(self, row: Lawyer) -> str | None:
        if row.contact_ct is None:
            return None
        return self._cipher.decrypt(
            self._dek(row), self.table, str(row.id), "contact", row.contact_ct
        ).decode()

    async def all(self, *, with_names: bool = True) -> list[LawyerRecord]:
        """Every lawyer and admin, with accepted case counts (names left empty for routing).

        Only accepted cases count towards a lawyer's cap: a flood of offered, unaccepted
        reports must never keep a real P1 from a lawyer.
        """
        counts = dict(
            (
                await self._session.execute(
                    select(Case.assigned_lawyer_id, func.count())
                    .where(Case.status == CaseStatus.ACCEPTED)
                    .group_by(Case.assigned_lawyer_id)
                )
            ).all()
        )
        rows = (await self._session.execute(select(Lawyer).order_by(Lawyer.id))).scalars()
        return [self._record(row, int(counts.get(row.id, 0)), with_name=with_names) for row in rows]

    async def admin_contacts(self) -> list[str]:
        """Addresses of verified admins (alerts only, never case content)."""
        rows = (
            await self._session.execute(
                select(Lawyer).where(
                    and_(Lawyer.role == Role.ADMIN, Lawyer.status == LawyerStatus.VERIFIED)
                )
            )
        ).scalars()
        return [c for row in rows if (c := self._contact(row))]


class SqlAssignmentStore:
    """Case numbers, assignment, attempts, relayed messages and job bookkeeping."""

    def __init__(self, session: AsyncSession, cipher: RecordCipher) -> None:
        self._session = session
        self._cipher = cipher

    def _record(self, row: Case) -> CaseRecord:
        # The offer's precise moment (escalation windows) is encrypted; the column has the hour.
        if row.assigned_ct is None:
            return _case_row(row)
        try:
            dek = self._cipher.row_dek("cases", row)
            raw = self._cipher.decrypt(dek, "cases", row.id, "assigned_at", row.assigned_ct)
            return _case_row(row, datetime.fromisoformat(raw.decode()))
        except (DecryptionError, ValueError):
            return _case_row(row)

    async def by_number(self, number: int) -> CaseRecord | None:
        """A case by the number lawyers use."""
        row = (
            await self._session.execute(select(Case).where(Case.number == number))
        ).scalar_one_or_none()
        return None if row is None else self._record(row)

    async def by_id(self, case_id: str) -> CaseRecord | None:
        """A case by id."""
        row = await self._session.get(Case, case_id)
        return None if row is None else self._record(row)

    async def assigned_to(self, lawyer_id: int) -> list[CaseRecord]:
        """Open cases of one lawyer, most urgent first."""
        rows = (
            await self._session.execute(
                select(Case)
                .where(Case.assigned_lawyer_id == lawyer_id, Case.status.in_(OPEN))
                .order_by(Case.priority, Case.number)
            )
        ).scalars()
        return [self._record(r) for r in rows]

    async def waiting(self) -> list[CaseRecord]:
        """Cases that need a lawyer: new and not documentation-only, or assigned, not accepted."""
        rows = (
            await self._session.execute(
                select(Case)
                .where(Case.status.in_(WAITING), Case.priority < DOCUMENTATION)
                .order_by(Case.priority, Case.number)
            )
        ).scalars()
        return [self._record(r) for r in rows]

    async def unassigned_documentation(self, since_created: Any) -> list[CaseRecord]:
        """Documentation-only cases nobody has taken yet (the daily digest)."""
        rows = (
            await self._session.execute(
                select(Case)
                .where(
                    Case.status == CaseStatus.NEW,
                    Case.priority == DOCUMENTATION,
                    Case.created_on >= since_created,
                )
                .order_by(Case.number)
            )
        ).scalars()
        return [self._record(r) for r in rows]

    async def expiring(self, before: datetime) -> list[CaseRecord]:
        """Open cases expiring before a moment whose lawyer has not been warned yet."""
        rows = (
            await self._session.execute(
                select(Case).where(
                    Case.expires_at <= before,
                    Case.status.in_(OPEN),
                    Case.expiry_warned.is_(False),
                )
            )
        ).scalars()
        return [self._record(r) for r in rows]

    async def all_open(self) -> list[CaseRecord]:
        """Every case not closed, by number."""
        rows = (
            await self._session.execute(
                select(Case).where(Case.status != CaseStatus.CLOSED).order_by(Case.number)
            )
        ).scalars()
        return [self._record(r) for r in rows]

    async def tried(self, case_id: str) -> set[int]:
        """Lawyers this case was already offered to."""
        rows = await self._session.execute(
            select(CaseAttempt.lawyer_id).where(CaseAttempt.case_id == case_id)
        )
        return set(rows.scalars())

    async def assign(self, case_id: str, lawyer_id: int, now: datetime) -> None:
        """Offer a case to a lawyer (remembered as tried, so escalation moves on)."""
        keys = select(Case.id, Case.kek_id, Case.wrapped_dek).where(Case.id == case_id)
        row = (await self._session.execute(keys)).first()
        if row is None:
            return
        dek = self._cipher.row_dek("cases", row)
        when = self._cipher.encrypt(dek, "cases", case_id, "assigned_at", now.isoformat().encode())
        await self._session.execute(
            update(Case)
            .where(Case.id == case_id)
            .values(
                status=CaseStatus.ASSIGNED,
                assigned_lawyer_id=lawyer_id,
                assigned_at=now,
                assigned_ct=when,
            )
        )
        if await self._session.get(CaseAttempt, (case_id, lawyer_id)) is None:
            self._session.add(CaseAttempt(case_id=case_id, lawyer_id=lawyer_id))
            await self._session.flush()

    async def release(self, case_id: str) -> None:
        """Take a case back from its lawyer (declined, overdue, revoked)."""
        await self._session.execute(
            update(Case)
            .where(Case.id == case_id)
            .values(
                status=CaseStatus.NEW, assigned_lawyer_id=None, assigned_at=None, assigned_ct=None
            )
        )

    async def update(self, case_id: str, **values: Any) -> None:
        """Set plaintext columns of a case (status, expiry, flags); an expiry is rounded up to
        the hour, the finest time at rest."""
        if isinstance(values.get("expires_at"), datetime):
            values["expires_at"] = _hour_up(values["expires_at"])
        await self._session.execute(update(Case).where(Case.id == case_id).values(**values))

    async def add_message(self, case_id: str, direction: str, body: str, now: datetime) -> None:
        """Store a relayed message, encrypted under its own DEK."""
        message_id = new_id()
        dek, wrapped = self._cipher.new_dek("case_messages", message_id)
        # The time is inside the ciphertext; the row keeps only its place in the thread.
        body_ct = self._cipher.encrypt(
            dek, "case_messages", message_id, "body", _dumps({"text": body, "at": now.isoformat()})
        )
        last = select(func.max(CaseMessage.seq)).where(CaseMessage.case_id == case_id)
        seq = int((await self._session.execute(last)).scalar() or 0) + 1
        self._session.add(
            CaseMessage(
                id=message_id,
                case_id=case_id,
                direction=direction,
                seq=seq,
                kek_id=wrapped.kek_id,
                wrapped_dek=wrapped.wrapped,
                body_ct=body_ct,
            )
        )
        await self._session.flush()

    async def _bodies(self, *where: Any) -> list[tuple[CaseMessage, dict[str, Any]]]:
        """A case's messages that match, oldest first, each with its decrypted body."""
        query = select(CaseMessage).where(*where).order_by(CaseMessage.seq, CaseMessage.id)
        found = []
        for row in (await self._session.execute(query)).scalars():
            dek = self._cipher.row_dek("case_messages", row)
            body = _loads(self._cipher.decrypt(dek, "case_messages", row.id, "body", row.body_ct))
            found.append((row, body))
        return found

    async def messages(self, case_id: str) -> list[tuple[str, datetime, str]]:
        """Relayed messages of a case: (direction, time, text), oldest first."""
        result = []
        for row, body in await self._bodies(CaseMessage.case_id == case_id):
            # A message from before times were encrypted has none: it sorts by its place.
            at = body.get("at")
            when = datetime.fromisoformat(at) if isinstance(at, str) else _NO_TIME
            result.append((row.direction, when, str(body["text"])))
        return result

    async def unread(self, case_id: str) -> list[tuple[str, str]]:
        """Messages to the reporter never shown: (id, text), oldest first."""
        unread = await self._bodies(
            CaseMessage.case_id == case_id,
            CaseMessage.direction == "to_reporter",
            CaseMessage.expires_at.is_(None),
        )
        return [(row.id, str(body["text"])) for row, body in unread]

    async def mark_shown(self, message_ids: Sequence[str], expires_at: datetime) -> None:
        """Shown once: never shown again, purged at ``expires_at``."""
        if message_ids:
            await self._session.execute(
                update(CaseMessage)
                .where(CaseMessage.id.in_(list(message_ids)))
                .values(expires_at=expires_at)
            )

    async def last_run(self, job: str) -> datetime | None:
        """When a periodic job last ran."""
        row = await self._session.get(JobState, job)
        return None if row is None else row.last_run

    async def try_job(self, job: str) -> bool:
        """Hold the job's advisory lock until the transaction ends; False when another process
        holds it (PostgreSQL; on SQLite the transaction already holds the only write lock)."""
        return await try_xact_lock(await self._session.connection(), f"job:{job}")

    async def mark_run(self, job: str, now: datetime) -> None:
        """Record that a periodic job ran."""
        row = await self._session.get(JobState, job)
        if row is None:
            self._session.add(JobState(name=job, last_run=now))
        else:
            row.last_run = now

    # ---- the ratchet deletions wait for (a job_state row that lives until it has run) ------

    async def schedule_erase(self, due: datetime) -> None:
        """Ask for a ratchet by ``due`` (an earlier request stands); safe under concurrency."""
        await self._upsert_earliest(_ERASE_PENDING, due)

    async def erase_due(self) -> datetime | None:
        """When the pending (or interrupted) ratchet is due."""
        query = select(func.min(JobState.last_run)).where(JobState.name.in_(_ERASE))
        due: datetime | None = (await self._session.execute(query)).scalar_one_or_none()
        return None if due is None else due.replace(tzinfo=UTC) if due.tzinfo is None else due

    async def claim_erase(self) -> datetime | None:
        """Move the pending request to the running one; its due hour."""
        pending = await self._session.get(JobState, _ERASE_PENDING, with_for_update=True)
        if pending is None:
            running = await self._session.get(JobState, _ERASE_RUNNING)
            return None if running is None else running.last_run
        due = pending.last_run
        await self._session.delete(pending)
        await self._upsert_earliest(_ERASE_RUNNING, due)
        return due

    async def release_erase(self) -> None:
        """The claimed ratchet has run."""
        await self._session.execute(delete(JobState).where(JobState.name == _ERASE_RUNNING))

    async def _upsert_earliest(self, name: str, due: datetime) -> None:
        connection = await self._session.connection()
        statement: Any
        if connection.dialect.name == "postgresql":
            pg = postgresql_insert(JobState).values(name=name, last_run=due)
            earliest = func.least(JobState.last_run, pg.excluded.last_run)
            statement = pg.on_conflict_do_update(
                index_elements=["name"], set_={"last_run": earliest}
            )
        else:
            lite = sqlite_insert(JobState).values(name=name, last_run=due)
            earliest = func.min(JobState.last_run, lite.excluded.last_run)
            statement = lite.on_conflict_do_update(
                index_elements=["name"], set_={"last_run": earliest}
            )
        await self._session.execute(statement)
