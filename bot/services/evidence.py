"""The evidence package for courts: a ZIP with the case in HURIDOCS fields (JSON), a readable
page, the original files, and a manifest of SHA-256 hashes signed with the instance's Ed25519 key.

Built and checked in memory only: the package never touches the disk on its way out (the outbox
keeps it encrypted until Signal takes it), and ``tipline export verify`` reads it whole.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bot.services.ports import Signer

FORMAT = "tipline-evidence/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
#: Packages are bounded: a case holds at most ten files of 10 MB each.
MAX_PACKAGE_BYTES = 200 * 1024 * 1024
_EXTENSIONS = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/webp": "webp",
    "application/pdf": "pdf",
}


@dataclass(frozen=True, slots=True)
class PackageFile:
    """One file of a package."""

    name: str
    data: bytes


def original_name(index: int, mime: str) -> str:
    """The name of a reporter's original file inside a package (no name of theirs is kept)."""
    return f"originals/{index:02d}.{_EXTENSIONS.get(mime, 'bin')}"


def _zip_time(moment: datetime) -> tuple[int, int, int, int, int, int]:
    # The hour only, as everywhere else at rest.
    return (moment.year, moment.month, moment.day, moment.hour, 0, 0)


def build_package(
    files: Sequence[PackageFile], *, case_number: int, exported: datetime, signer: Signer
) -> bytes:
    """The ZIP: the files, then the manifest of their hashes and its signature."""
    public = signer.public_key()
    manifest = {
        "format": FORMAT,
        "case": case_number,
        "exported": exported.strftime("%Y-%m-%dT%H:00Z"),
        "signature": {"algorithm": "Ed25519", "public_key": public.hex(), "file": SIGNATURE},
        "files": [
            {"path": f.name, "sha256": hashlib.sha256(f.data).hexdigest(), "bytes": len(f.data)}
            for f in files
        ],
    }
    manifest_bytes = json.dumps(manifest, indent=1, ensure_ascii=False).encode()
    signature = base64.b64encode(signer.sign(manifest_bytes)) + b"\n"
    buffer = io.BytesIO()
    stamp = _zip_time(exported)
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in [
            *((f.name, f.data) for f in files),
            (MANIFEST, manifest_bytes),
            (SIGNATURE, signature),
        ]:
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return buffer.getvalue()


@dataclass(frozen=True, slots=True)
class Verdict:
    """What ``tipline export verify`` found: ok, or the first file that fails and why."""

    ok: bool
    problem: str
    file: str | None = None
    case: int | None = None
    files: int = 0
    public_key: str | None = None


def _fail(file: str | None, problem: str, **extra: Any) -> Verdict:
    return Verdict(False, problem, file, **extra)


def _read(archive: zipfile.ZipFile, name: str) -> bytes | None:
    try:
        return archive.read(name)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError, zlib.error):
        return None


def verify_package(data: bytes, trusted: Sequence[bytes]) -> Verdict:
    """Check the signature (by one of the ``trusted`` public keys) and every file's hash."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError):
        return _fail(None, "not a ZIP file (or a damaged one)")
    with archive:
        names = [i.filename for i in archive.infolist()]
        for name in names:
            if names.count(name) > 1:
                return _fail(name, "appears twice in the package")
        for required in (MANIFEST, SIGNATURE):
            if required not in names:
                return _fail(required, "is missing")
        manifest_bytes = _read(archive, MANIFEST)
        if manifest_bytes is None:
            return _fail(MANIFEST, "is damaged")
        try:
            manifest = json.loads(manifest_bytes)
            public = bytes.fromhex(str(manifest["signature"]["public_key"]))
            listed = [(str(f["path"]), str(f["sha256"])) for f in manifest["files"]]
            case = int(manifest["case"])
        except (ValueError, KeyError, TypeError):
            return _fail(MANIFEST, "is not a tipline evidence manifest")
        raw_signature = _read(archive, SIGNATURE)
        try:
            signature = base64.b64decode((raw_signature or b"").strip(), validate=True)
            Ed25519PublicKey.from_public_bytes(public).verify(signature, manifest_bytes)
        except (binascii.Error, ValueError, InvalidSignature):
            return _fail(MANIFEST, "does not match its signature (changed after signing)")
        if public not in trusted:
            return _fail(
                SIGNATURE,
                f"is by another instance (key {public.hex()[:16]}…), not by the key checked "
                f"against ({', '.join(k.hex()[:16] + '…' for k in trusted) or 'none'})",
            )
        expected: Mapping[str, str] = dict(listed)
        for name, digest in listed:
            if name not in names:
                return _fail(name, "is listed in the manifest but missing from the package")
            content = _read(archive, name)
            if content is None:
                return _fail(name, "is damaged")
            if hashlib.sha256(content).hexdigest() != digest:
                return _fail(name, "does not match its SHA-256 hash in the manifest")
        for name in names:
            if name not in expected and name not in (MANIFEST, SIGNATURE):
                return _fail(name, "is not in the manifest (added after signing)")
    return Verdict(True, "", None, case, len(listed), public.hex())
