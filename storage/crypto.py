"""Envelope encryption: one DEK per record, wrapped by a KEK; every AEAD call binds its context."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
_DEK_PURPOSE = "tipline/dek/v1"
_FIELD_PURPOSE = "tipline/field/v1"

#: A key as the keyring holds it: a bytearray it can overwrite when it locks.
Key = bytes | bytearray


class DecryptionError(Exception):
    """Every failure to decrypt or unwrap, whatever the cause (like Fernet's InvalidToken)."""


def associated_data(*parts: str | int) -> bytes:
    """Unambiguous encoding of the context an AEAD call is bound to (length-prefixed parts)."""
    out: list[bytes] = []
    for part in parts:
        raw = (part if isinstance(part, str) else str(part)).encode("utf-8")
        out += (len(raw).to_bytes(4, "big"), raw)
    return b"".join(out)


def seal(key: Key, plaintext: bytes, ad: bytes) -> bytes:
    """AES-256-GCM with a random nonce; returns nonce || ciphertext || tag."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, ad)


def unseal(key: Key, blob: bytes, ad: bytes) -> bytes:
    """Inverse of :func:`seal`; any failure is a :class:`DecryptionError`."""
    if len(blob) < NONCE_BYTES + TAG_BYTES or len(key) != KEY_BYTES:
        raise DecryptionError
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], ad)
    except (InvalidTag, ValueError) as exc:
        raise DecryptionError from exc


class KeyLookup(Protocol):
    """What envelope encryption needs from a keyring: the current KEK and any KEK by id."""

    @property
    def current_kek_id(self) -> int:
        """Id of the KEK that wraps new DEKs."""
        ...

    def kek(self, kek_id: int) -> Key:
        """The KEK with this id; raises DecryptionError when it does not exist (any more)."""
        ...


class StoredRecord(Protocol):
    """A row with a per-record DEK beside it."""

    @property
    def id(self) -> str | int: ...

    @property
    def kek_id(self) -> int: ...

    @property
    def wrapped_dek(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A DEK as stored beside its record: the KEK id and the wrapped bytes."""

    kek_id: int
    wrapped: bytes


class RecordCipher:
    """Encrypts the fields of one table's records under per-record DEKs.

    A cipher lives for one transaction or one maintenance pass; it keeps each KEK's AES-GCM
    context for that life (building one cost twice the unwrap it served: a purge unwraps a DEK
    per expiring case, all under the same KEK), and asks the keyring for the KEK at every use,
    so a KEK destroyed meanwhile unwraps nothing more.
    """

    def __init__(self, keys: KeyLookup) -> None:
        self._keys = keys
        self._keks: dict[int, tuple[Key, AESGCM]] = {}

    def _kek(self, kek_id: int) -> AESGCM:
        kek = self._keys.kek(kek_id)  # DecryptionError once the KEK is destroyed
        found = self._keks.get(kek_id)
        if found is None or found[0] is not kek:
            if len(kek) != KEY_BYTES:
                raise DecryptionError
            found = self._keks[kek_id] = (kek, AESGCM(kek))
        return found[1]

    def new_dek(self, table: str, record_id: str) -> tuple[bytes, WrappedKey]:
        """A fresh DEK for a record and its wrapped form under the current KEK."""
        dek = AESGCM.generate_key(bit_length=256)
        return dek, self.wrap(dek, table, record_id)

    def wrap(self, dek: bytes, table: str, record_id: str) -> WrappedKey:
        """Wrap a DEK under the current KEK, bound to its record and KEK id."""
        kek_id = self._keys.current_kek_id
        ad = associated_data(_DEK_PURPOSE, table, record_id, kek_id)
        nonce = os.urandom(NONCE_BYTES)
        return WrappedKey(kek_id, nonce + self._kek(kek_id).encrypt(nonce, dek, ad))

    def unwrap(self, table: str, record_id: str, key: WrappedKey) -> bytes:
        """The DEK of a record; fails if the KEK is gone or anything was moved or relabelled."""
        ad = associated_data(_DEK_PURPOSE, table, record_id, key.kek_id)
        blob = key.wrapped
        if len(blob) < NONCE_BYTES + TAG_BYTES:
            raise DecryptionError
        try:
            return self._kek(key.kek_id).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], ad)
        except (InvalidTag, ValueError) as exc:
            raise DecryptionError from exc

    def row_dek(self, table: str, row: StoredRecord) -> bytes:
        """The DEK of a row that carries its own id, KEK id and wrapped DEK."""
        return self.unwrap(table, str(row.id), WrappedKey(row.kek_id, row.wrapped_dek))

    def rewrap(self, table: str, record_id: str, key: WrappedKey) -> WrappedKey:
        """The same DEK wrapped under the current KEK (rotation)."""
        return self.wrap(self.unwrap(table, record_id, key), table, record_id)

    @staticmethod
    def encrypt(dek: bytes, table: str, record_id: str, field: str, plaintext: bytes) -> bytes:
        """Encrypt one field of one record."""
        return seal(dek, plaintext, associated_data(_FIELD_PURPOSE, table, record_id, field))

    @staticmethod
    def decrypt(dek: bytes, table: str, record_id: str, field: str, blob: bytes) -> bytes:
        """Decrypt one field of one record; fails if the ciphertext came from anywhere else."""
        return unseal(dek, blob, associated_data(_FIELD_PURPOSE, table, record_id, field))
