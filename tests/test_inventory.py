"""Every column of every table, classified once (in the manner of Hush Line's encrypted-field
inventory): encrypted, keyed lookup, coarse time, or plain, each with a one-line reason. A new
column fails until it is classified here.

Rows that live only until they are delivered may keep a precise time: they are named in
``DELIVERY`` (DESIGN.md section 4, "Times at rest"), as is the one other short-lived row, a
chat's rate-limit bucket, which a job deletes once it has refilled.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import Date, DateTime, LargeBinary
from sqlalchemy.dialects import sqlite

from storage.index import INDEXED
from storage.maintenance import DISPOSABLE
from storage.models import Base, HourUTC, SeenUpdate, UTCDateTime


class Kind(StrEnum):
    """How a column is kept at rest."""

    ENCRYPTED = "encrypted"
    LOOKUP = "keyed lookup"
    COARSE = "coarse time"
    PLAIN = "plain"


E, L, C, P = Kind.ENCRYPTED, Kind.LOOKUP, Kind.COARSE, Kind.PLAIN
ID = "a random id: no order, no count"
KEK = "which KEK wraps the row's DEK: a version number"
DEK = "the row's DEK, wrapped by a KEK kept outside the database"

INVENTORY: dict[tuple[str, str], tuple[Kind, str]] = {
    ("attachments", "id"): (P, ID),
    ("attachments", "expires_at"): (C, "expiry, rounded up to the hour"),
    ("attachments", "kek_id"): (P, KEK),
    ("attachments", "wrapped_dek"): (E, DEK),
    ("attachments", "original_ct"): (E, "the file as sent (evidence)"),
    ("attachments", "clean_ct"): (E, "the re-encoded copy"),
    ("attachments", "meta_ct"): (E, "kind, type, caption"),
    ("audit_gone", "token"): (P, "the opaque audit token of a gone case, pruned with its entries"),
    ("audit_gone", "gone_on"): (C, "the day the case went"),
    ("audit_log", "id"): (P, "the chain's order"),
    ("audit_log", "at"): (C, "the hour of the action"),
    ("audit_log", "actor"): (P, "admin, system, or a lawyer's id: staff, never a reporter"),
    ("audit_log", "action"): (P, "what was done, never content"),
    ("audit_log", "case_token"): (P, "an opaque per-case token, never the case id"),
    ("audit_log", "prev_mac"): (P, "the chain link"),
    ("audit_log", "mac"): (P, "MAC under a KEK's audit key"),
    ("audit_log", "kek_id"): (P, "which KEK's audit key made the MAC"),
    ("chat_limits", "key"): (L, "HMAC of the chat's own inner hash; deleted at every ratchet"),
    ("chat_limits", "tokens"): (P, "what is left of the chat's bucket"),
    ("chat_limits", "at"): (P, "short-lived exception: the row goes once the bucket refills"),
    ("chat_limits", "warned"): (P, "a flag"),
    ("cases", "id"): (P, ID),
    ("cases", "created_on"): (C, "the day of submission"),
    ("cases", "priority"): (P, "routing reads it for every case"),
    ("cases", "status"): (P, "routing and expiry read it"),
    ("cases", "expires_at"): (C, "expiry, rounded up to the hour"),
    ("cases", "kek_id"): (P, KEK),
    ("cases", "wrapped_dek"): (E, DEK),
    ("cases", "receipt_hash"): (L, "HMAC of the receipt's inner hash under the KEK's index key"),
    ("cases", "index_ct"): (E, "the inner hashes of the receipt and reply chat; the audit token"),
    ("cases", "answers_ct"): (E, "the report"),
    ("cases", "meta_ct"): (E, "language, channel, region, flags"),
    ("cases", "reply_address_ct"): (E, "the reporter's chat, if they chose it"),
    ("cases", "reply_lookup"): (L, "HMAC of the reply chat's own inner hash: /forget by index"),
    ("cases", "number"): (P, "short and random, held for two ceilings: tells no count"),
    ("cases", "assigned_lawyer_id"): (P, "routing and a lawyer's cap read it"),
    ("cases", "assigned_at"): (C, "the hour of the offer"),
    ("cases", "assigned_ct"): (E, "the offer's precise moment (escalation windows)"),
    ("cases", "admins_alerted"): (P, "a flag"),
    ("cases", "expiry_warned"): (P, "a flag"),
    ("drafts", "id"): (P, ID),
    ("drafts", "chat_pseudonym"): (L, "HMAC of the chat's inner hash under the KEK's index key"),
    ("drafts", "expires_at"): (C, "expiry, rounded up to the hour"),
    ("drafts", "kek_id"): (P, KEK),
    ("drafts", "wrapped_dek"): (E, DEK),
    ("drafts", "state_ct"): (E, "the conversation so far"),
    ("drafts", "index_ct"): (E, "the chat's inner hash"),
    ("events", "id"): (P, ID),
    ("events", "number"): (P, "short and random"),
    ("events", "created_on"): (C, "the day the event was made"),
    ("events", "kek_id"): (P, KEK),
    ("events", "wrapped_dek"): (E, DEK),
    ("events", "data_ct"): (E, "city and dates"),
    ("held_numbers", "number"): (P, "a case number out of use: what lawyers see anyway"),
    ("held_numbers", "held_until"): (C, "the day it may be drawn again"),
    ("job_state", "name"): (P, "which job"),
    ("job_state", "last_run"): (C, "the hour it last ran, or the hour an erasure is due"),
    ("key_state", "id"): (P, "the one row"),
    ("key_state", "current_kek_id"): (P, "the KEK version in use: not a secret"),
    ("lawyers", "id"): (P, "the number the admin's CLI shows"),
    ("lawyers", "role"): (P, "lawyer or admin"),
    ("lawyers", "status"): (P, "invited, registered, verified, suspended, revoked"),
    ("lawyers", "on_call"): (P, "routing reads it"),
    ("lawyers", "languages"): (P, "routing reads it; the lawyer's practice, not a reporter"),
    ("lawyers", "regions"): (P, "routing reads it; the lawyer's practice, not a reporter"),
    ("lawyers", "created_at"): (C, "the hour of the invite"),
    ("lawyers", "invite_hash"): (L, "HMAC of the invite's inner hash under the KEK's index key"),
    ("lawyers", "invite_expires_at"): (C, "an invite's end, cut to the hour: never later"),
    ("lawyers", "phrase_hash"): (L, "HMAC of the phrase's inner hash under the KEK's index key"),
    ("lawyers", "contact_pseudonym"): (L, "HMAC of the address's inner hash, index key"),
    ("lawyers", "kek_id"): (P, KEK),
    ("lawyers", "wrapped_dek"): (E, DEK),
    ("lawyers", "name_ct"): (E, "the lawyer's name"),
    ("lawyers", "contact_ct"): (E, "the lawyer's messenger address"),
    ("lawyers", "index_ct"): (E, "the inner hashes of invite, phrase and address"),
    ("outbox", "id"): (P, "delivery exception: orders a chat's messages (holds the time put)"),
    ("outbox", "channel"): (P, "which sender delivers it"),
    ("outbox", "lane"): (L, "HMAC of the chat's inner hash under the current index key"),
    ("outbox", "due_at"): (P, "delivery exception: the row lives only until delivered"),
    ("outbox", "attempts"): (P, "retries"),
    ("outbox", "expires_at"): (C, "expiry, rounded up to the hour"),
    ("outbox", "kek_id"): (P, KEK),
    ("outbox", "wrapped_dek"): (E, DEK),
    ("outbox", "payload_ct"): (E, "the message and its chat"),
    ("outbox", "index_ct"): (E, "the lane's inner hash"),
    ("queue_items", "id"): (P, "delivery exception: orders a queue (holds the time put)"),
    ("queue_items", "queue"): (P, "which queue"),
    ("queue_items", "created_at"): (C, "the hour it was put"),
    ("queue_items", "next_attempt_at"): (P, "delivery exception: retry backoff until handled"),
    ("queue_items", "attempts"): (P, "retries"),
    ("queue_items", "expires_at"): (C, "expiry, rounded up to the hour"),
    ("queue_items", "kek_id"): (P, KEK),
    ("queue_items", "wrapped_dek"): (E, DEK),
    ("queue_items", "payload_ct"): (E, "the envelope or message"),
    ("screens", "id"): (P, ID),
    ("screens", "lane"): (L, "HMAC of the chat's inner hash under the current index key"),
    ("screens", "expires_at"): (C, "expiry, rounded up to the hour"),
    ("screens", "channel"): (P, "which deletion job looks at it"),
    ("screens", "check_at"): (C, "the hour the next message is due for deletion"),
    ("screens", "kek_id"): (P, KEK),
    ("screens", "wrapped_dek"): (E, DEK),
    ("screens", "refs_ct"): (E, "message refs, deadlines and the chat"),
    ("screens", "index_ct"): (E, "the lane's inner hash"),
    ("seen_updates", "key"): (L, "HMAC of the update's inner hash under the KEK's index key"),
    ("seen_updates", "expires_at"): (C, "expiry, rounded up to the hour"),
    ("seen_updates", "kek_id"): (P, "which KEK's index keys seal and key it"),
    ("seen_updates", "inner_ct"): (E, "the inner hash, sealed under the KEK's index key"),
    ("stat_counters", "week"): (C, "the Monday of the week: statistics are never daily"),
    ("stat_counters", "region"): (P, "one of the questionnaire's cities"),
    ("stat_counters", "category"): (P, "reports, a situation or what happened"),
    ("stat_counters", "count"): (P, "published only through suppression"),
    ("case_attempts", "case_id"): (P, "goes with the case"),
    ("case_attempts", "lawyer_id"): (P, "who it was offered to"),
    ("case_messages", "id"): (P, ID),
    ("case_messages", "case_id"): (P, "goes with the case"),
    ("case_messages", "direction"): (P, "to the reporter or to the lawyer"),
    ("case_messages", "seq"): (P, "its place in the thread; the time is inside body_ct"),
    ("case_messages", "expires_at"): (C, "expiry once read, rounded up to the hour"),
    ("case_messages", "kek_id"): (P, KEK),
    ("case_messages", "wrapped_dek"): (E, DEK),
    ("case_messages", "body_ct"): (E, "the text and its time"),
    ("deadlines", "id"): (P, ID),
    ("deadlines", "case_id"): (P, "goes with the case"),
    ("deadlines", "due_on"): (C, "the last day, for the reminder job"),
    ("deadlines", "stage"): (P, "how far the reminders went"),
    ("deadlines", "kek_id"): (P, KEK),
    ("deadlines", "wrapped_dek"): (E, DEK),
    ("deadlines", "data_ct"): (E, "the rule and the decision"),
    ("event_cases", "case_id"): (P, "goes with the case"),
    ("event_cases", "event_id"): (P, "which event"),
    ("event_counters", "event_id"): (P, "which event"),
    ("event_counters", "category"): (P, "what is counted"),
    ("event_counters", "count"): (P, "published only through suppression"),
}

#: Columns that may keep a precise time: rows that live only until they are delivered, and a
#: rate-limit bucket, which lives only until it has refilled (a minute after the chat's last
#: message; the erase job deletes it).
DELIVERY = {
    ("chat_limits", "at"),
    ("outbox", "due_at"),
    ("outbox", "id"),
    ("queue_items", "next_attempt_at"),
    ("queue_items", "id"),
}


def columns() -> dict[tuple[str, str], object]:
    return {(t.name, c.name): c for t in Base.metadata.sorted_tables for c in t.columns}


def test_every_column_of_every_table_is_classified_once() -> None:
    found = columns()
    missing = sorted(set(found) - set(INVENTORY))
    stale = sorted(set(INVENTORY) - set(found))
    assert not missing, f"classify these columns in tests/test_inventory.py: {missing}"
    assert not stale, f"these columns are gone: {stale}"
    assert {t for t, _ in INVENTORY} == {t.name for t in Base.metadata.sorted_tables}
    for (table, column), (kind, reason) in INVENTORY.items():
        assert reason and "\n" not in reason, (table, column)
        assert isinstance(kind, Kind)


def test_the_classification_matches_the_column_types() -> None:
    found = columns()
    for key, (kind, reason) in INVENTORY.items():
        column_type = found[key].type  # type: ignore[attr-defined]
        is_time = isinstance(column_type, DateTime | Date | UTCDateTime)
        if kind is Kind.COARSE:
            assert isinstance(column_type, HourUTC | Date), f"{key} must cut times to the hour"
        elif is_time:  # a precise time
            assert key in DELIVERY and reason.startswith(
                ("delivery exception", "short-lived exception")
            ), f"{key} keeps a precise time: only delivery and short-lived rows may"
        if kind is Kind.ENCRYPTED:
            assert isinstance(column_type, LargeBinary), key
    precise = {k for k in DELIVERY if isinstance(found[k].type, UTCDateTime)}  # type: ignore[attr-defined]
    assert precise == {
        ("chat_limits", "at"),
        ("outbox", "due_at"),
        ("queue_items", "next_attempt_at"),
    }


def test_every_keyed_lookup_is_re_keyed_or_deleted_by_the_ratchet() -> None:
    rekeyed = {
        (model.__tablename__, lookup.column)
        for model, lookups in INDEXED.items()
        for lookup in lookups
    }
    rekeyed.add((SeenUpdate.__tablename__, "key"))
    # Or deleted by it, every row (tests/test_shared_limits.py shows none survives a ratchet).
    deleted = {(model.__tablename__, "key") for model in DISPOSABLE}
    lookups = {k for k, (kind, _) in INVENTORY.items() if kind is Kind.LOOKUP}
    assert lookups == rekeyed | deleted and not rekeyed & deleted


def test_a_coarse_column_refuses_minutes_at_rest() -> None:
    coarse = HourUTC()
    moment = datetime(2026, 11, 2, 9, 31, 7, tzinfo=UTC)
    stored = coarse.process_bind_param(moment, sqlite.dialect())
    assert stored == datetime(2026, 11, 2, 9, 0)
