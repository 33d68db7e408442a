"""The evidence package: a fresh one verifies; a changed byte in any file, an added or a removed
file, or a signature by another instance fails and names the file."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import pytest

from bot.services.evidence import (
    MANIFEST,
    SIGNATURE,
    PackageFile,
    build_package,
    verify_package,
)
from storage.keyring import KeyFile, Keyring, KeyringFile, KeyVault
from tests.conftest import START

FILES = [
    PackageFile("case.json", json.dumps({"narrative": "they took his phone"}).encode()),
    PackageFile("case.html", b"<html><body>case</body></html>\n"),
    PackageFile("originals/01.jpg", bytes(range(256)) * 40),
]


@pytest.fixture
def signer() -> Keyring:
    return Keyring.generate(START)


def package(signer: Keyring) -> bytes:
    return build_package(FILES, case_number=7, exported=START, signer=signer)


def members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def rezip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_a_fresh_package_verifies(signer: Keyring) -> None:
    data = package(signer)
    verdict = verify_package(data, [signer.public_key()])
    assert verdict.ok and verdict.case == 7 and verdict.files == 3
    assert verdict.public_key == signer.public_key().hex()
    manifest = json.loads(members(data)[MANIFEST])
    assert manifest["signature"]["public_key"] == signer.public_key().hex(), "key in the package"
    assert manifest["exported"] == "2026-11-02T09:00Z", "the hour only"
    assert [f["path"] for f in manifest["files"]] == [f.name for f in FILES]


@pytest.mark.parametrize("name", [f.name for f in FILES] + [MANIFEST, SIGNATURE])
def test_one_changed_byte_in_any_file_fails_and_names_it(signer: Keyring, name: str) -> None:
    files = members(package(signer))
    changed = bytearray(files[name])
    changed[len(changed) // 2] ^= 0x01
    files[name] = bytes(changed)
    verdict = verify_package(rezip(files), [signer.public_key()])
    assert not verdict.ok
    # the manifest and its signature stand or fall together: both name the manifest
    assert verdict.file == (MANIFEST if name in (MANIFEST, SIGNATURE) else name), verdict


def test_a_flipped_byte_in_the_zip_itself_names_the_damaged_file(signer: Keyring) -> None:
    data = bytearray(package(signer))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        info = archive.getinfo("originals/01.jpg")
    # inside the compressed data of the original, past its local header
    offset = info.header_offset + 30 + len(info.filename) + info.compress_size // 2
    data[offset] ^= 0xFF
    verdict = verify_package(bytes(data), [signer.public_key()])
    assert not verdict.ok and verdict.file == "originals/01.jpg", verdict


def test_an_added_or_removed_file_fails_and_is_named(signer: Keyring) -> None:
    files = members(package(signer))
    added = rezip(files | {"originals/02.jpg": b"planted"})
    verdict = verify_package(added, [signer.public_key()])
    assert not verdict.ok and verdict.file == "originals/02.jpg"
    assert "not in the manifest" in verdict.problem
    removed = rezip({k: v for k, v in files.items() if k != "case.html"})
    verdict = verify_package(removed, [signer.public_key()])
    assert not verdict.ok and verdict.file == "case.html" and "missing" in verdict.problem
    for gone in (MANIFEST, SIGNATURE):
        verdict = verify_package(
            rezip({k: v for k, v in files.items() if k != gone}), [signer.public_key()]
        )
        assert not verdict.ok and verdict.file == gone


def test_a_package_signed_by_another_instance_fails(signer: Keyring) -> None:
    other = Keyring.generate(START)
    data = package(other)
    verdict = verify_package(data, [signer.public_key()])
    assert not verdict.ok and verdict.file == SIGNATURE
    assert "another instance" in verdict.problem
    # re-signed with a stolen manifest: the signature no longer matches this manifest
    files = members(package(signer))
    files[SIGNATURE] = members(data)[SIGNATURE]
    verdict = verify_package(rezip(files), [signer.public_key()])
    assert not verdict.ok and verdict.file == MANIFEST


def test_not_a_package_is_one_clear_problem(signer: Keyring) -> None:
    assert verify_package(b"not a zip", [signer.public_key()]).problem.startswith("not a ZIP")
    duplicate = io.BytesIO()
    with zipfile.ZipFile(duplicate, "w") as archive:
        archive.writestr("case.html", b"a")
        with pytest.warns(UserWarning, match="Duplicate name"):
            archive.writestr("case.html", b"b")
    verdict = verify_package(duplicate.getvalue(), [signer.public_key()])
    assert verdict.file == "case.html" and "twice" in verdict.problem


def test_the_signing_key_lives_in_the_keyring_and_survives_a_ratchet(tmp_path: Path) -> None:
    file = KeyringFile(tmp_path / "keyring")
    secret = KeyFile(os.urandom(32))
    vault = KeyVault.create(file, secret, None, START)
    public = vault.keyring.public_key()
    signing = bytes(vault.keyring.signing_key)
    assert signing not in file.path.read_bytes(), "sealed, never in clear"
    vault.keyring.add_kek(START)
    vault.keyring.destroy([1])
    vault.persist()
    assert file.open(secret).keyring.public_key() == public, "re-sealed with every ratchet"
    vault.keyring.forget()
    assert bytes(vault.keyring.signing_key) == bytes(32), "a lock overwrites it"
    assert Keyring.generate(START).public_key() != public, "a new instance, a new key"


def test_a_keyring_from_before_signing_keys_gets_one_for_good(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = KeyringFile(tmp_path / "keyring")
    secret = KeyFile(os.urandom(32))
    current = Keyring._payload

    def without_signing_key(self: Keyring) -> bytes:
        data = json.loads(current(self))
        del data["signing_key"]
        return json.dumps(data).encode()

    monkeypatch.setattr(Keyring, "_payload", without_signing_key)
    KeyVault.create(file, secret, None, START)
    monkeypatch.undo()
    first = file.open(secret).keyring.public_key()
    assert file.open(secret).keyring.public_key() == first, "made once and saved"
