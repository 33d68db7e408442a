"""The keyring file: sealed by the root key, atomic, and never readable with a wrong secret."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from storage.crypto import DecryptionError
from storage.keyring import (
    Argon2Cost,
    KeyFile,
    Keyring,
    KeyringClosed,
    KeyringCorrupt,
    KeyringError,
    KeyringFile,
    KeyringMissing,
    KeyVault,
    Passphrase,
    WrongRootKey,
    atomic_write,
)
from tests.conftest import START

CHEAP = Argon2Cost(iterations=1, memory_kib=64, lanes=1)


def test_passphrase_round_trip_and_wrong_passphrase(tmp_path: Path) -> None:
    ring = Keyring.generate(START)
    ring.add_kek(START)
    kf = KeyringFile(tmp_path / "keyring")
    kf.save(ring, Passphrase(b"correct horse battery"), CHEAP)
    loaded = kf.load(Passphrase(b"correct horse battery"))
    assert loaded.current_kek_id == 2
    assert loaded.kek(1) == ring.kek(1) and loaded.kek(2) == ring.kek(2)
    assert loaded.pseudonym("c", "1") == ring.pseudonym("c", "1")
    with pytest.raises(WrongRootKey):
        kf.load(Passphrase(b"wrong horse battery"))
    with pytest.raises(WrongRootKey):
        kf.load(KeyFile(os.urandom(32)))
    assert (tmp_path / "keyring").stat().st_mode & 0o777 == 0o600


def test_file_holds_no_key_material_in_clear(tmp_path: Path) -> None:
    ring = Keyring.generate(START)
    kf = KeyringFile(tmp_path / "keyring")
    kf.save(ring, KeyFile(os.urandom(32)))
    raw = (tmp_path / "keyring").read_bytes()
    import base64

    assert ring.kek(1) not in raw
    assert base64.b64encode(ring.kek(1)) not in raw
    assert base64.b64encode(ring.index_key) not in raw


def test_every_save_uses_a_new_salt_and_keeps_the_cost(tmp_path: Path) -> None:
    ring = Keyring.generate(START)
    kf = KeyringFile(tmp_path / "keyring")
    kf.save(ring, Passphrase(b"a long passphrase"), CHEAP)
    first = json.loads((tmp_path / "keyring").read_text())["kdf"]
    kf.save(ring, Passphrase(b"a long passphrase"))
    second = json.loads((tmp_path / "keyring").read_text())["kdf"]
    assert first["salt"] != second["salt"]
    assert (
        (first["memory_kib"], first["iterations"])
        == (second["memory_kib"], second["iterations"])
        == (64, 1)
    )


def test_tampered_header_or_body_fails(tmp_path: Path) -> None:
    kf = KeyringFile(tmp_path / "keyring")
    kf.save(Keyring.generate(START), Passphrase(b"a long passphrase"), CHEAP)
    doc = json.loads((tmp_path / "keyring").read_text())
    doc["kdf"]["iterations"] = 2  # a downgraded or changed header is bound into the seal
    (tmp_path / "keyring").write_text(json.dumps(doc))
    with pytest.raises(WrongRootKey):
        kf.load(Passphrase(b"a long passphrase"))
    (tmp_path / "keyring").write_text("not json")
    with pytest.raises(KeyringCorrupt):
        kf.load(Passphrase(b"a long passphrase"))
    (tmp_path / "keyring").write_text(json.dumps({"format": "other"}))
    with pytest.raises(KeyringCorrupt):
        kf.load(Passphrase(b"a long passphrase"))


def test_missing_keyring(tmp_path: Path) -> None:
    with pytest.raises(KeyringMissing, match="tipline init"):
        KeyringFile(tmp_path / "nope").load(KeyFile(os.urandom(32)))


@pytest.mark.parametrize(
    "content", [os.urandom(32), os.urandom(32).hex().encode() + b"\n"], ids=["raw", "hex"]
)
def test_key_file_formats(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "root.key").write_bytes(content)
    assert len(KeyFile.read(tmp_path / "root.key").key) == 32


@pytest.mark.parametrize("content", [b"", b"too short", b"z" * 64])
def test_bad_key_files(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "root.key").write_bytes(content)
    with pytest.raises(KeyringError, match="32 bytes or 64 hex"):
        KeyFile.read(tmp_path / "root.key")
    with pytest.raises(KeyringError, match="cannot read"):
        KeyFile.read(tmp_path / "absent.key")


def test_atomic_write_leaves_old_content_when_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "keyring"
    atomic_write(target, b"old")

    def boom(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["keyring"]


def test_forget_overwrites_every_key_and_closes_the_keyring(tmp_path: Path) -> None:
    vault = KeyVault.create(
        KeyringFile(tmp_path / "keyring"), Passphrase(b"a long passphrase"), CHEAP, START
    )
    ring = vault.keyring
    ring.add_kek(START)
    buffers = [k.key for k in ring.keks.values()] + [ring.index_key]
    derived = ring.pseudonym("telegram", "42")
    root = vault._root
    assert all(any(b) for b in [*buffers, root])
    vault.forget()
    assert all(b == bytearray(len(b)) for b in [*buffers, root]), "overwritten in place"
    assert ring.keks == {}
    with pytest.raises(DecryptionError):
        ring.kek(1)
    for use in (
        lambda: ring.pseudonym("telegram", "42"),
        lambda: ring.receipt_hash("AAAA"),
        lambda: ring.audit_mac(b"x"),
        lambda: ring.replace_with(Keyring.generate(START)),
        lambda: ring.add_kek(START),
    ):
        with pytest.raises(KeyringClosed):
            use()
    # the file is untouched: the same passphrase opens it again, with the same keys
    again = KeyringFile(tmp_path / "keyring").load(Passphrase(b"a long passphrase"))
    assert again.pseudonym("telegram", "42") == derived


def test_destroyed_and_replaced_keys_are_overwritten() -> None:
    ring = Keyring.generate(START)
    old = ring.kek(1)
    ring.add_kek(START)
    ring.destroy([1])
    assert old == bytearray(len(old)) and 1 not in ring.keks
    index_key, current = ring.index_key, ring.kek(2)
    fresh = Keyring.generate(START, first_id=3)
    ring.replace_with(fresh)
    assert index_key == bytearray(32) and current == bytearray(32)
    assert ring.kek(3) == fresh.kek(3) and any(ring.kek(3))


def test_destroy_removes_the_keyring_file_without_a_secret(tmp_path: Path) -> None:
    kf = KeyringFile(tmp_path / "keyring")
    kf.save(Keyring.generate(START), KeyFile(os.urandom(32)))
    leftover = tmp_path / ".keyring.tmp1234"  # what a crashed atomic write leaves
    leftover.write_bytes(b"half a keyring")
    other = tmp_path / "tipline.db"
    other.write_bytes(b"not a keyring")
    assert kf.destroy() is True
    assert not kf.exists() and not leftover.exists() and other.exists()
    assert kf.destroy() is False
