"""ORM models. Plaintext columns are only what routing and expiry need (DESIGN.md section 4)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    Date,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Store in UTC; naive values are refused so no local time slips in."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        """Always hand back aware UTC datetimes."""
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class HourUTC(UTCDateTime):
    """A time at rest that is never finer than the hour (DESIGN.md section 4, "Times at rest").

    Every value bound to the column is cut to the start of its hour, in writes and in
    comparisons alike, so nothing finer reaches the disk. Expiry times are rounded up to the
    hour by the code that sets them; a comparison ``expires_at <= now`` then reads as "expired
    by the start of this hour".
    """

    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Store the start of the hour, in UTC."""
        if value is not None:
            value = value.replace(minute=0, second=0, microsecond=0)
        return super().process_bind_param(value, dialect)


class Base(DeclarativeBase):
    """Declarative base with a naming convention so migrations name constraints the same."""

    metadata = MetaData(naming_convention=NAMING)


class Sealed:
    """A row whose secrets are under its own DEK, kept wrapped by the KEK named here."""

    kek_id: Mapped[int] = mapped_column(Integer, index=True)
    wrapped_dek: Mapped[bytes] = mapped_column(LargeBinary)


class Indexed(Sealed):
    """A sealed row with lookup columns: their stable inner hashes, encrypted, for the ratchet."""

    index_ct: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class Draft(Indexed, Base):
    """A conversation in progress, found by a keyed pseudonym of the chat."""

    __tablename__ = "drafts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    chat_pseudonym: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column(HourUTC(), index=True)
    state_ct: Mapped[bytes] = mapped_column(LargeBinary)


class Case(Indexed, Base):
    """A submitted report; everything but routing and expiry metadata is ciphertext."""

    __tablename__ = "cases"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_on: Mapped[date] = mapped_column(Date)
    priority: Mapped[int] = mapped_column(SmallInteger, index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    expires_at: Mapped[datetime] = mapped_column(HourUTC(), index=True)
    receipt_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    answers_ct: Mapped[bytes] = mapped_column(LargeBinary)
    meta_ct: Mapped[bytes] = mapped_column(LargeBinary)
    reply_address_ct: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    #: The reply chat's lookup (storage/index.py), so /forget finds its cases by index.
    reply_lookup: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    number: Mapped[int | None] = mapped_column(Integer, unique=True, nullable=True)
    assigned_lawyer_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    #: The hour of the offer; the precise moment (escalation windows) is in ``assigned_ct``.
    assigned_at: Mapped[datetime | None] = mapped_column(HourUTC(), nullable=True)
    assigned_ct: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    admins_alerted: Mapped[bool] = mapped_column(default=False)
    expiry_warned: Mapped[bool] = mapped_column(default=False)


class AuditEntry(Base):
    """One admin or lawyer action, MAC-chained to the entry before it; never content.

    A case is named by an opaque token kept inside the case's ciphertext, never by its id, so
    once the case is gone nothing links the entry to it; ``kek_id`` names the KEK whose audit
    key made the MAC (the ratchet re-MACs the chain under the new one).
    """

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(HourUTC())
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    case_token: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    prev_mac: Mapped[str] = mapped_column(String(64))
    mac: Mapped[str] = mapped_column(String(64))
    kek_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)


class StatCounter(Base):
    """Advocacy counters by week, region and category, with no link to any case."""

    __tablename__ = "stat_counters"

    week: Mapped[date] = mapped_column(Date, primary_key=True)
    region: Mapped[str] = mapped_column(String(16), primary_key=True)
    category: Mapped[str] = mapped_column(String(48), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class KeyState(Base):
    """The KEK version new records must use, shared by every process on this database.

    Not a secret: it lets a running bot notice that an admin rotated the keyring, and lets a
    rotation lock out writers while it checks that no record still needs the old KEK.
    """

    __tablename__ = "key_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    current_kek_id: Mapped[int] = mapped_column(Integer)


class Attachment(Sealed, Base):
    """A file a reporter sent: the original bytes (evidence, lawyers only) and a cleaned copy."""

    __tablename__ = "attachments"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(HourUTC(), index=True)
    original_ct: Mapped[bytes] = mapped_column(LargeBinary)
    clean_ct: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    meta_ct: Mapped[bytes] = mapped_column(LargeBinary)


class SeenUpdate(Base):
    """A keyed hash of a messenger update already handled, so a redelivery changes nothing.

    ``inner_ct`` is the key's stable inner hash sealed under the index key of KEK ``kek_id``,
    so that the ratchet can re-key the row without the update id (None: a row from before).
    """

    __tablename__ = "seen_updates"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(HourUTC(), index=True)
    kek_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    inner_ct: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class ChatLimit(Base):
    """A chat's rate-limit token bucket, shared by every process (bot/services/ratelimit.py).

    Keyed by the lookup of the chat's pseudonym under a label of its own, under the current
    KEK's index key; never re-keyed: the ratchet deletes every row (a bucket is disposable), and
    a job deletes a row once its bucket has refilled. ``at`` is a precise time, the named
    short-lived exception to whole hours at rest: the row lives only until it has refilled.
    """

    __tablename__ = "chat_limits"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    # No index: the prune scans what the last minutes' chats left, once a minute, while an index
    # would be rewritten on every message.
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    warned: Mapped[bool] = mapped_column(default=False)


class Lawyer(Indexed, Base):
    """A lawyer (or an admin who gets alerts): name and messenger address encrypted.

    Languages and regions stay in clear: routing reads them for every case, and they describe
    the lawyer's practice, not any reporter.
    """

    __tablename__ = "lawyers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    role: Mapped[str] = mapped_column(String(8), default="lawyer")
    status: Mapped[str] = mapped_column(String(12), index=True)
    on_call: Mapped[bool] = mapped_column(default=False)
    languages: Mapped[str] = mapped_column(String(32))
    regions: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(HourUTC())
    invite_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32), nullable=True, unique=True)
    invite_expires_at: Mapped[datetime | None] = mapped_column(HourUTC(), nullable=True)
    phrase_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32), nullable=True)
    contact_pseudonym: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    name_ct: Mapped[bytes] = mapped_column(LargeBinary)
    contact_ct: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class CaseAttempt(Base):
    """A lawyer a case was already offered to (declined, timed out or revoked)."""

    __tablename__ = "case_attempts"

    case_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True
    )
    lawyer_id: Mapped[int] = mapped_column(Integer, primary_key=True)


class CaseMessage(Sealed, Base):
    """A relayed message between a lawyer and a reporter; the body is encrypted."""

    __tablename__ = "case_messages"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    case_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("cases.id", ondelete="CASCADE"), index=True
    )
    direction: Mapped[str] = mapped_column(String(12))
    #: The message's place in its case's thread; its time is inside ``body_ct``.
    seq: Mapped[int] = mapped_column(Integer, default=0)
    #: Set (rounded up to the hour) once a message to the reporter has been shown: read once,
    #: then purged. None while it is unread.
    expires_at: Mapped[datetime | None] = mapped_column(HourUTC(), nullable=True, index=True)
    body_ct: Mapped[bytes] = mapped_column(LargeBinary)


class JobState(Base):
    """When a periodic job last ran (the daily digest)."""

    __tablename__ = "job_state"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_run: Mapped[datetime] = mapped_column(HourUTC())


class QueueItem(Sealed, Base):
    """An encrypted item of a durable queue: Signal envelopes received, messages to send."""

    __tablename__ = "queue_items"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    queue: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[datetime] = mapped_column(HourUTC())
    #: Precise: a retry's backoff, on a row that lives only until it is handled or delivered.
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[datetime] = mapped_column(HourUTC(), index=True)
    payload_ct: Mapped[bytes] = mapped_column(LargeBinary)


class OutboxItem(Indexed, Base):
    """A message to send, edit or delete, written in the transaction that decided it.

    It lives only until its channel delivers it, so its due time may be precise (the one kind of
    row DESIGN.md section 4 lets keep a time finer than the hour). ``lane`` is a keyed pseudonym
    of the recipient chat: each lane is delivered in ``id`` order.
    """

    __tablename__ = "outbox"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    lane: Mapped[str] = mapped_column(String(64))
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[datetime] = mapped_column(HourUTC(), index=True)
    payload_ct: Mapped[bytes] = mapped_column(LargeBinary)

    __table_args__ = (
        Index("ix_outbox_lane_id", "lane", "id"),
        Index("ix_outbox_channel_due_at", "channel", "due_at"),
    )


class Screen(Indexed, Base):
    """The bot's messages still on one chat's screen (encrypted refs), to clear them later."""

    __tablename__ = "screens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    lane: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column(HourUTC(), index=True)
    channel: Mapped[str | None] = mapped_column(String(16), nullable=True)
    #: The hour the screen's next message is due to be deleted (floored, so the deletion job
    #: looks in time); each message's precise deadline is inside ``refs_ct``.
    check_at: Mapped[datetime | None] = mapped_column(HourUTC(), nullable=True, index=True)
    refs_ct: Mapped[bytes] = mapped_column(LargeBinary)


class Event(Sealed, Base):
    """A raid or other event grouping cases: its city and dates are encrypted, no names at all."""

    __tablename__ = "events"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, unique=True)
    created_on: Mapped[date] = mapped_column(Date)
    data_ct: Mapped[bytes] = mapped_column(LargeBinary)


class EventCounter(Base):
    """An event's count of one category; no link to any case, so it survives their purge."""

    __tablename__ = "event_counters"

    event_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("events.id", ondelete="CASCADE"), primary_key=True
    )
    category: Mapped[str] = mapped_column(String(48), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class EventCase(Base):
    """A case linked to an event; gone with the case, while the event's counters stay."""

    __tablename__ = "event_cases"

    case_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True
    )
    event_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("events.id", ondelete="CASCADE"), index=True
    )


class Deadline(Sealed, Base):
    """A legal deadline of a case: its last day in clear (for the reminder job), the decision
    and the rule encrypted."""

    __tablename__ = "deadlines"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    case_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("cases.id", ondelete="CASCADE"), index=True
    )
    due_on: Mapped[date] = mapped_column(Date, index=True)
    stage: Mapped[int] = mapped_column(SmallInteger, default=0)
    data_ct: Mapped[bytes] = mapped_column(LargeBinary)


class HeldNumber(Base):
    """A case number out of use until a day (two retention ceilings after its submission).

    Held numbers say no more than the case numbers lawyers see: which numbers were given out
    and, to the day, until when they stay out of use.
    """

    __tablename__ = "held_numbers"

    number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    held_until: Mapped[date] = mapped_column(Date, index=True)


class GoneCase(Base):
    """The audit token of a case that is gone, and the day it went: its audit entries are pruned
    ``TIPLINE_AUDIT_RETENTION_DAYS`` later, with this row."""

    __tablename__ = "audit_gone"

    token: Mapped[str] = mapped_column(String(32), primary_key=True)
    gone_on: Mapped[date] = mapped_column(Date, index=True)
