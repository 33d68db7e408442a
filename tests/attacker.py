"""An offline attacker with a seized disk image and tipline's source code.

    python tests/attacker.py EVIDENCE_DIR NEEDLE...

It searches every file for each needle as it is, then tries every key source it can find on
the disk against every keyring it finds: each file as a key file (32 bytes or 64 hex digits),
and each line, ``KEY=VALUE`` value, word and printable string of every file as a passphrase.
Whatever keyring opens, it decrypts every encrypted column of the SQLite database and of any
``pg_dump`` in the evidence and searches that too. It prints one JSON object: the needles it
recovered, where, and the key sources that opened a keyring.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from storage.crypto import DecryptionError, RecordCipher, WrappedKey
from storage.keyring import FORMAT, KeyFile, Keyring, KeyringError, KeyringFile, Passphrase

PRINTABLE = re.compile(rb"[\x20-\x7e]{8,200}")
MAX_CANDIDATES = 50_000


def files(root: Path) -> Iterator[Path]:
    yield from sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def keyrings(root: Path) -> list[Path]:
    found = []
    for path in files(root):
        try:
            if json.loads(path.read_bytes()).get("format") == FORMAT:
                found.append(path)
        except (ValueError, AttributeError, UnicodeDecodeError):
            continue
    return found


def candidates(root: Path) -> Iterator[tuple[str, Passphrase | KeyFile]]:
    seen: set[bytes] = set()

    def passphrase(text: bytes, where: str) -> Iterator[tuple[str, Passphrase | KeyFile]]:
        text = text.strip().strip(b"'\"")
        if text and text not in seen and len(seen) < MAX_CANDIDATES:
            seen.add(text)
            yield where, Passphrase(text)

    for path in files(root):
        raw = path.read_bytes()
        where = str(path.relative_to(root))
        stripped = raw.strip()
        if len(raw) == 32:
            yield where, KeyFile(raw)
        if len(stripped) == 64:
            with contextlib.suppress(UnicodeDecodeError, ValueError):
                yield where, KeyFile(bytes.fromhex(stripped.decode("ascii")))
        yield from passphrase(raw, where)
        for line in raw.splitlines():
            yield from passphrase(line, where)
            _, sep, value = line.partition(b"=")
            if sep:
                yield from passphrase(value, where)
            _, sep, value = line.partition(b":")
            if sep:
                yield from passphrase(value, where)
            for word in line.split():
                yield from passphrase(word, where)
        for string in PRINTABLE.findall(raw):
            yield from passphrase(string, where)


def open_keyrings(root: Path) -> list[tuple[str, str, Keyring]]:
    opened = []
    rings = keyrings(root)
    for where, secret in candidates(root):
        for ring in rings:
            try:
                keyring = KeyringFile(ring).open(secret).keyring
            except KeyringError:
                continue
            opened.append((str(ring.relative_to(root)), where, keyring))
    return opened


def _decrypt_row(cipher: RecordCipher, table: str, row: dict[str, Any]) -> Iterator[bytes]:
    try:
        dek = cipher.unwrap(
            table, str(row["id"]), WrappedKey(int(row["kek_id"]), row["wrapped_dek"])
        )
    except (DecryptionError, KeyError, TypeError, ValueError):
        return
    for column, value in row.items():
        if column.endswith("_ct") and isinstance(value, bytes):
            try:
                yield cipher.decrypt(dek, table, str(row["id"]), column[:-3], value)
            except DecryptionError:
                continue


def sqlite_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    except sqlite3.DatabaseError:
        return
    try:
        for table in tables:
            cursor = db.execute(f'SELECT * FROM "{table}"')
            names = [d[0] for d in cursor.description]
            if not {"id", "kek_id", "wrapped_dek"} <= set(names):
                continue
            for values in cursor:
                yield table, dict(zip(names, values, strict=True))
    finally:
        db.close()


COPY = re.compile(r"^COPY public\.(\w+) \(([^)]*)\) FROM stdin;$")


def _pg_value(text: str) -> Any:
    if text == "\\N":
        return None
    if text.startswith("\\\\x"):
        return bytes.fromhex(text[3:])
    return text


def pg_dump_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    table: str | None = None
    names: list[str] = []
    for line in path.read_text(errors="replace").splitlines():
        if table is None:
            match = COPY.match(line)
            if match:
                table, names = (
                    match.group(1),
                    [n.strip().strip('"') for n in match.group(2).split(",")],
                )
            continue
        if line == "\\.":
            table = None
            continue
        if {"id", "kek_id", "wrapped_dek"} <= set(names):
            values = [_pg_value(v) for v in line.split("\t")]
            yield table, dict(zip(names, values, strict=False))


def plaintexts(root: Path, keyring: Keyring) -> Iterator[tuple[str, bytes]]:
    cipher = RecordCipher(keyring)
    for path in files(root):
        head = path.read_bytes()[:16]
        rows = (
            sqlite_rows(path)
            if head.startswith(b"SQLite format 3")
            else pg_dump_rows(path)
            if path.suffix == ".sql"
            else iter(())
        )
        for table, row in rows:
            for plain in _decrypt_row(cipher, table, row):
                yield f"{path.relative_to(root)}:{table}", plain


def attack(root: Path, needles: list[str]) -> dict[str, Any]:
    recovered: dict[str, list[str]] = {}
    for path in files(root):
        raw = path.read_bytes()
        for needle in needles:
            if needle.encode() in raw:
                recovered.setdefault(needle, []).append(f"{path.relative_to(root)} (in clear)")
    opened = open_keyrings(root)
    for _, where, keyring in opened:
        for place, plain in plaintexts(root, keyring):
            for needle in needles:
                if needle.encode() in plain:
                    recovered.setdefault(needle, []).append(f"{place} (key from {where})")
    return {
        "recovered": {k: sorted(set(v)) for k, v in recovered.items()},
        "opened": sorted({f"{ring} with {where}" for ring, where, _ in opened}),
        "keyrings": [str(p.relative_to(root)) for p in keyrings(root)],
    }


if __name__ == "__main__":
    print(json.dumps(attack(Path(sys.argv[1]), sys.argv[2:])))
