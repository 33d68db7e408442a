"""Lookup columns and the inner hashes behind them (see :class:`storage.keyring.Keyring`).

A lookup column holds ``lookup(inner)`` under the index key of the row's KEK; the row keeps the
inner hashes in ``index_ct``, a field encrypted under its own DEK, so the ratchet can re-key
the column when it re-wraps the DEK, without the chat id or code the hash came from.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from storage.crypto import DecryptionError, RecordCipher
from storage.keyring import Keyring
from storage.models import Case, Draft, Lawyer, OutboxItem, Screen

FIELD = "index"


@dataclass(frozen=True, slots=True)
class Lookup:
    """One lookup column: its attribute, its name in ``index_ct``, and how it is stored."""

    column: str
    name: str
    #: Stored as raw bytes (a LargeBinary column) rather than hex text.
    binary: bool

    def value(self, keyring: Keyring, inner: bytes, kek_id: int | None = None) -> str | bytes:
        """The column's value for an inner hash under a KEK (the current one)."""
        digest = keyring.lookup(inner, kek_id)
        return digest if self.binary else digest.hex()

    def candidates(self, keyring: Keyring, inner: bytes) -> list[Any]:
        """The column's value under every KEK held (one, or two while a rotation runs)."""
        return [d if self.binary else d.hex() for d in keyring.lookups(inner)]


DRAFT_CHAT = Lookup("chat_pseudonym", "chat", binary=False)
CASE_RECEIPT = Lookup("receipt_hash", "receipt", binary=True)
CASE_REPLY = Lookup("reply_lookup", "reply", binary=False)
LAWYER_INVITE = Lookup("invite_hash", "invite", binary=True)
LAWYER_PHRASE = Lookup("phrase_hash", "phrase", binary=True)
LAWYER_CONTACT = Lookup("contact_pseudonym", "contact", binary=False)
LANE = Lookup("lane", "lane", binary=False)

#: Every table with lookup columns and a DEK per row, with its lookups.
INDEXED: dict[Any, tuple[Lookup, ...]] = {
    Draft: (DRAFT_CHAT,),
    Case: (CASE_RECEIPT, CASE_REPLY),
    Lawyer: (LAWYER_INVITE, LAWYER_PHRASE, LAWYER_CONTACT),
    OutboxItem: (LANE,),
    Screen: (LANE,),
}


def reply_inner(keyring: Keyring, address: str) -> bytes:
    """The inner hash behind a case's reply lookup: the chat's pseudonym under a label of its
    own, so a case cannot be matched to the chat's draft, notes or outbox lane."""
    channel, _, chat = address.partition(":")
    return bytes.fromhex(keyring.pseudonym(f"reply:{channel}", chat))


def seal_index(
    cipher: RecordCipher, dek: bytes, table: str, row_id: str, inner: Mapping[str, str | None]
) -> bytes:
    """``index_ct``: the inner hashes (hex) and any other values kept for the ratchet."""
    data = {k: v for k, v in inner.items() if v is not None}
    raw = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    return cipher.encrypt(dek, table, row_id, FIELD, raw)


def open_index(
    cipher: RecordCipher, dek: bytes, table: str, row_id: str, blob: bytes
) -> dict[str, str]:
    """The values :func:`seal_index` sealed."""
    try:
        data = json.loads(cipher.decrypt(dek, table, row_id, FIELD, blob))
    except ValueError as exc:
        raise DecryptionError from exc
    if not isinstance(data, dict):
        raise DecryptionError
    return {str(k): str(v) for k, v in data.items()}


def rekeyed(
    keyring: Keyring, lookups: tuple[Lookup, ...], inner: Mapping[str, str], kek_id: int
) -> dict[str, Any]:
    """The lookup columns of a row whose inner hashes are ``inner``, under KEK ``kek_id``."""
    values: dict[str, Any] = {}
    for lookup in lookups:
        found = inner.get(lookup.name)
        values[lookup.column] = (
            None if found is None else lookup.value(keyring, bytes.fromhex(found), kek_id)
        )
    return values


def floor_hour(moment: datetime) -> datetime:
    """The start of the moment's hour: times at rest are no finer."""
    return moment.replace(minute=0, second=0, microsecond=0)


def hour_up(moment: datetime) -> datetime:
    """An expiry time at rest: rounded up to the hour, so nothing is deleted early."""
    floor = moment.replace(minute=0, second=0, microsecond=0)
    return floor if floor == moment else floor + timedelta(hours=1)
