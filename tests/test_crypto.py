"""Envelope encryption: round trips, and every tampering is one DecryptionError."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage.crypto import DecryptionError, RecordCipher, WrappedKey, associated_data, seal, unseal
from storage.keyring import Keyring
from tests.conftest import START


@pytest.fixture
def cipher(keyring: Keyring) -> RecordCipher:
    return RecordCipher(keyring)


def test_round_trip(cipher: RecordCipher) -> None:
    dek, wrapped = cipher.new_dek("cases", "r1")
    blob = cipher.encrypt(dek, "cases", "r1", "answers", b"secret words")
    assert b"secret words" not in blob
    assert (
        cipher.decrypt(cipher.unwrap("cases", "r1", wrapped), "cases", "r1", "answers", blob)
        == b"secret words"
    )


def test_associated_data_is_unambiguous() -> None:
    assert associated_data("ab", "c") != associated_data("a", "bc")
    assert associated_data("a", 1) != associated_data("a1")


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=200)
@given(data=st.data())
def test_any_flipped_byte_fails(cipher: RecordCipher, data: st.DataObject) -> None:
    dek, wrapped = cipher.new_dek("drafts", "d1")
    blob = cipher.encrypt(dek, "drafts", "d1", "state", b'{"answers":{}}')
    target = data.draw(st.sampled_from(["field", "wrapped"]))
    raw = bytearray(blob if target == "field" else wrapped.wrapped)
    index = data.draw(st.integers(0, len(raw) - 1))
    raw[index] ^= data.draw(st.integers(1, 255))
    if target == "field":
        with pytest.raises(DecryptionError):
            cipher.decrypt(dek, "drafts", "d1", "state", bytes(raw))
    else:
        with pytest.raises(DecryptionError):
            cipher.unwrap("drafts", "d1", WrappedKey(wrapped.kek_id, bytes(raw)))


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, 29))  # the whole blob is 30 bytes
def test_truncated_ciphertext_fails(cipher: RecordCipher, cut: int) -> None:
    dek, _ = cipher.new_dek("cases", "x")
    blob = cipher.encrypt(dek, "cases", "x", "meta", b"{}")
    with pytest.raises(DecryptionError):
        cipher.decrypt(dek, "cases", "x", "meta", blob[:cut])


def test_ciphertext_moved_to_another_row_or_field_or_table_fails(cipher: RecordCipher) -> None:
    dek, wrapped = cipher.new_dek("cases", "row-a")
    blob = cipher.encrypt(dek, "cases", "row-a", "answers", b"x")
    for table, row, field in [
        ("cases", "row-b", "answers"),
        ("cases", "row-a", "meta"),
        ("drafts", "row-a", "answers"),
    ]:
        with pytest.raises(DecryptionError):
            cipher.decrypt(dek, table, row, field, blob)
    with pytest.raises(DecryptionError):
        cipher.unwrap("cases", "row-b", wrapped)
    with pytest.raises(DecryptionError):
        cipher.unwrap("drafts", "row-a", wrapped)


def test_wrong_key_id_fails(keyring: Keyring, cipher: RecordCipher) -> None:
    _dek, wrapped = cipher.new_dek("cases", "r")
    keyring.add_kek(START)  # KEK 2 exists now
    with pytest.raises(DecryptionError):
        cipher.unwrap("cases", "r", WrappedKey(2, wrapped.wrapped))
    with pytest.raises(DecryptionError):
        cipher.unwrap("cases", "r", WrappedKey(99, wrapped.wrapped))


def test_rewrap_then_destroy_old_kek(keyring: Keyring, cipher: RecordCipher) -> None:
    dek, old = cipher.new_dek("cases", "r")
    keyring.add_kek(START)
    new = cipher.rewrap("cases", "r", old)
    assert new.kek_id == 2
    keyring.destroy([1])
    assert cipher.unwrap("cases", "r", new) == dek
    with pytest.raises(DecryptionError):
        cipher.unwrap("cases", "r", old)


def test_a_cipher_that_unwrapped_before_a_lock_unwraps_nothing_after(
    keyring: Keyring, cipher: RecordCipher
) -> None:
    dek, wrapped = cipher.new_dek("cases", "r")
    assert cipher.unwrap("cases", "r", wrapped) == dek  # its KEK's AES-GCM context is kept
    keyring.forget()  # tipline lock
    with pytest.raises(DecryptionError):
        cipher.unwrap("cases", "r", wrapped)


def test_destroy_never_drops_the_current_kek(keyring: Keyring) -> None:
    keyring.destroy([keyring.current_kek_id])
    assert keyring.kek(keyring.current_kek_id)


def test_wrong_key_length_and_garbage_are_decryption_errors() -> None:
    with pytest.raises(DecryptionError):
        unseal(b"short", seal(b"k" * 32, b"x", b""), b"")
    with pytest.raises(DecryptionError):
        unseal(b"k" * 32, b"", b"")


def test_keyed_hashes_depend_on_the_key() -> None:
    a, b = Keyring.generate(START), Keyring.generate(START)
    assert a.pseudonym("telegram", "42") == a.pseudonym("telegram", "42")
    assert a.pseudonym("telegram", "42") != b.pseudonym("telegram", "42")
    assert a.pseudonym("telegram", "42") != a.pseudonym("signal", "42")
    assert "987654321" not in a.pseudonym("telegram", "987654321")
    assert a.receipt_hash("AAAA") != b.receipt_hash("AAAA")
