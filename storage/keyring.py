"""The key hierarchy: a root key (Argon2id or key file) seals a keyring file of versioned KEKs.

The keyring never goes into the database, so that destroying a KEK here erases every copy of
what it wrapped, including old database backups (DESIGN.md section 4).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from storage.crypto import KEY_BYTES, DecryptionError, Key, associated_data, seal, unseal

FORMAT = "tipline-keyring"
FORMAT_VERSION = 1
SALT_BYTES = 16


class KeyringError(Exception):
    """Base class of keyring problems an admin can act on; the message is one clear line."""


class KeyringMissing(KeyringError):
    """There is no keyring file: the instance was never initialised."""


class KeyringExists(KeyringError):
    """A keyring file is already there; initialising again would orphan the data."""


class WrongRootKey(KeyringError):
    """The passphrase or key file does not open this keyring."""


class KeyringCorrupt(KeyringError):
    """The keyring file is not a keyring this version understands."""


class KeyringClosed(KeyringError):
    """The keys were dropped from memory (``tipline lock``); nothing can use them any more."""


def zeroise(buffer: bytearray) -> None:
    """Overwrite a key buffer in place (same length, so the same memory)."""
    buffer[:] = bytes(len(buffer))


@dataclass(frozen=True, slots=True)
class KdfParams:
    """Argon2id cost parameters, stored in the keyring header so unlocking uses the same."""

    salt: bytes
    iterations: int
    memory_kib: int
    lanes: int

    def derive(self, passphrase: bytes) -> bytes:
        """The root key for this passphrase."""
        kdf = Argon2id(
            salt=self.salt,
            length=KEY_BYTES,
            iterations=self.iterations,
            lanes=self.lanes,
            memory_cost=self.memory_kib,
        )
        return kdf.derive(passphrase)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KdfParams:
        """The parameters back from the header form."""
        return cls(
            base64.b64decode(data["salt"]),
            int(data["iterations"]),
            int(data["memory_kib"]),
            int(data["lanes"]),
        )

    def to_json(self) -> dict[str, Any]:
        """Header form (the salt is not secret)."""
        return {
            "type": "argon2id",
            "salt": base64.b64encode(self.salt).decode(),
            "iterations": self.iterations,
            "memory_kib": self.memory_kib,
            "lanes": self.lanes,
        }


@dataclass(frozen=True, slots=True)
class Passphrase:
    """A root key source: an admin passphrase, stretched with Argon2id."""

    secret: bytes


@dataclass(frozen=True, slots=True)
class KeyFile:
    """A root key source for development: 32 random bytes read from a file."""

    key: bytes

    @classmethod
    def read(cls, path: Path) -> KeyFile:
        """Read a key file of 32 raw bytes or 64 hex digits."""
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise KeyringError(f"cannot read the root key file {path}: {exc.strerror}") from exc
        text = raw.strip()
        if len(text) == 2 * KEY_BYTES:
            try:
                return cls(bytes.fromhex(text.decode("ascii")))
            except (UnicodeDecodeError, ValueError):
                pass
        if len(raw) == KEY_BYTES:
            return cls(raw)
        raise KeyringError(f"the root key file {path} must hold 32 bytes or 64 hex digits")


RootSecret = Passphrase | KeyFile


def _hkdf(key: Key, label: str) -> bytearray:
    return bytearray(
        HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=label.encode()).derive(
            key
        )
    )


def _new_signing_key() -> bytearray:
    return bytearray(Ed25519PrivateKey.generate().private_bytes_raw())


def _seal_key(root: Key) -> bytearray:
    """The key that seals the keyring file, derived from the root key."""
    return _hkdf(root, "tipline/keyring-seal/v1")


@dataclass(slots=True)
class Kek:
    """One version of the key-encryption key."""

    id: int
    key: bytearray
    created_at: datetime


#: Keys derived from each KEK, so they ratchet with it and die with it.
LOOKUP_LABEL = "tipline/lookup/v1"
INNER_SEAL_LABEL = "tipline/inner-seal/v1"
AUDIT_LABEL = "tipline/audit/v2"
_INNER_PURPOSE = "tipline/inner/v1"


@dataclass(slots=True, weakref_slot=True)
class Keyring:
    """The unlocked keyring in memory: KEKs by version and the index key for keyed hashes.

    It also holds the instance's Ed25519 signing key (evidence packages): sealed in the keyring
    file with the KEKs, so it is never in the database and is re-sealed with every ratchet.
    Every key is a bytearray this object owns, so that :meth:`forget` can overwrite it.

    Index keys ratchet with the KEK. Whatever finds a row again (a chat's pseudonym, a receipt
    or invite hash, a lawyer's address) is stored as ``lookup(inner)``: an HMAC, under a key
    derived from the row's KEK, of a stable *inner hash* (:meth:`pseudonym`,
    :meth:`receipt_hash`, keyed by ``index_key``, which only a wipe replaces). The inner hash is
    kept inside the row's ciphertext, so the ratchet re-keys a live row without the raw id it
    came from, and once the old KEK is destroyed neither the old lookup key nor the inner hash
    of an old copy's row can be recovered: a chat id or code tried against an old copy matches
    nothing. Epochs (trying the current and the previous key) were the alternative; they keep
    the previous key, and so every old copy linkable, for as long as the longest-lived row
    (a receipt code: up to the retention ceiling), where inner hashes need it only while one
    rotation runs.
    """

    keks: dict[int, Kek]
    current_id: int
    index_key: bytearray
    signing_key: bytearray = field(default_factory=_new_signing_key, repr=False)
    #: The file had no signing key (made before there was one): one was made and must be saved.
    signing_key_added: bool = field(default=False, repr=False)
    _pseudonym_key: bytearray = field(init=False, repr=False)
    _receipt_key: bytearray = field(init=False, repr=False)
    _audit_key: bytearray = field(init=False, repr=False)
    _closed: bool = field(init=False, repr=False, default=False)
    #: Keys derived from a KEK, by (KEK id, label); overwritten with the KEK.
    _derived: dict[tuple[int, str], bytearray] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._pseudonym_key = _hkdf(self.index_key, "tipline/pseudonym/v1")
        self._receipt_key = _hkdf(self.index_key, "tipline/receipt/v1")
        self._audit_key = _hkdf(self.index_key, "tipline/audit/v1")
        self._derived = {}

    @classmethod
    def generate(cls, now: datetime, first_id: int = 1) -> Keyring:
        """A new keyring with one KEK (ids keep rising across a wipe, so none is reused)."""
        kek = Kek(first_id, bytearray(os.urandom(KEY_BYTES)), now)
        return cls({first_id: kek}, first_id, bytearray(os.urandom(KEY_BYTES)))

    def _buffers(self) -> list[bytearray]:
        derived = [self.index_key, self._pseudonym_key, self._receipt_key, self._audit_key]
        per_kek = list(self._derived.values())
        return [k.key for k in self.keks.values()] + derived + per_kek + [self.signing_key]

    def forget(self) -> None:
        """Overwrite every key this keyring holds and drop them; it cannot be used again."""
        for buffer in self._buffers():
            zeroise(buffer)
        self.keks.clear()
        self._closed = True

    def _open(self) -> None:
        if self._closed:
            raise KeyringClosed("the keys were dropped: tipline is locked")

    @property
    def current_kek_id(self) -> int:
        """Id of the KEK that wraps new DEKs."""
        return self.current_id

    def replace_with(self, other: Keyring) -> None:
        """Take over another keyring's keys in place, so every holder sees the change."""
        self._open()
        old = self._buffers()
        self.keks = dict(other.keks)
        self.current_id = other.current_id
        self.index_key = other.index_key
        self.signing_key = other.signing_key
        self.__post_init__()
        kept = {id(buffer) for buffer in self._buffers()}
        for buffer in old:
            if id(buffer) not in kept:
                zeroise(buffer)

    def kek(self, kek_id: int) -> Key:
        """The KEK with this id; a destroyed or unknown id is a decryption failure."""
        found = self.keks.get(kek_id)
        if found is None:
            raise DecryptionError
        return found.key

    def add_kek(self, now: datetime) -> Kek:
        """Make a new KEK the current one (old ones stay until destroyed)."""
        self._open()
        new = Kek(max(self.keks) + 1, bytearray(os.urandom(KEY_BYTES)), now)
        self.keks[new.id] = new
        self.current_id = new.id
        return new

    def destroy(self, kek_ids: Iterable[int]) -> None:
        """Forget KEKs (never the current one); persisted by the next save."""
        for kek_id in kek_ids:
            if kek_id != self.current_id and (gone := self.keks.pop(kek_id, None)) is not None:
                zeroise(gone.key)
                for key in [k for k in self._derived if k[0] == kek_id]:
                    zeroise(self._derived.pop(key))

    def _kek_key(self, kek_id: int, label: str) -> bytearray:
        self._open()
        found = self._derived.get((kek_id, label))
        if found is None:
            found = self._derived[(kek_id, label)] = _hkdf(self.kek(kek_id), label)
        return found

    def lookup(self, inner: bytes, kek_id: int | None = None) -> bytes:
        """The lookup value of an inner hash under a KEK's index key (the current one)."""
        key = self._kek_key(self.current_id if kek_id is None else kek_id, LOOKUP_LABEL)
        return hmac.new(key, inner, hashlib.sha256).digest()

    def lookups(self, inner: bytes) -> list[bytes]:
        """The lookup value under every KEK still held: the current one first. While a rotation
        runs there are two, and a row may be under either."""
        ids = [self.current_id, *sorted(k for k in self.keks if k != self.current_id)]
        return [self.lookup(inner, kek_id) for kek_id in ids]

    def seal_inner(self, table: str, inner: bytes, kek_id: int | None = None) -> bytes:
        """An inner hash sealed for a row without a DEK of its own (handled updates)."""
        kek_id = self.current_id if kek_id is None else kek_id
        ad = associated_data(_INNER_PURPOSE, table, kek_id)
        return seal(self._kek_key(kek_id, INNER_SEAL_LABEL), inner, ad)

    def open_inner(self, table: str, blob: bytes, kek_id: int) -> bytes:
        """The inner hash :meth:`seal_inner` sealed; a destroyed KEK is a DecryptionError."""
        if kek_id not in self.keks:
            raise DecryptionError
        ad = associated_data(_INNER_PURPOSE, table, kek_id)
        return unseal(self._kek_key(kek_id, INNER_SEAL_LABEL), blob, ad)

    def chain_mac(self, message: bytes, kek_id: int) -> str:
        """MAC of an audit entry under a KEK's audit key (re-made under each new KEK)."""
        if kek_id not in self.keks:
            raise DecryptionError
        key = self._kek_key(kek_id, AUDIT_LABEL)
        return hmac.new(key, message, hashlib.sha256).hexdigest()

    def pseudonym(self, channel: str, chat_id: str) -> str:
        """Stable keyed pseudonym of a chat (hex): the inner hash behind its lookups. Stored only
        inside ciphertext."""
        self._open()
        msg = associated_data(channel, chat_id)
        return hmac.new(self._pseudonym_key, msg, hashlib.sha256).hexdigest()

    def receipt_hash(self, normalized_code: str) -> bytes:
        """Stable keyed hash of a code (receipt, invite, phrase): the inner hash behind its
        lookup. Stored only inside ciphertext."""
        self._open()
        return hmac.new(self._receipt_key, normalized_code.encode(), hashlib.sha256).digest()

    def audit_mac(self, message: bytes) -> str:
        """MAC of an audit entry written before index keys ratcheted (verified once, at the
        upgrade that re-MACs the chain under a KEK's audit key)."""
        self._open()
        return hmac.new(self._audit_key, message, hashlib.sha256).hexdigest()

    def sign(self, data: bytes) -> bytes:
        """An Ed25519 signature of ``data`` by this instance (evidence package manifests)."""
        self._open()
        return Ed25519PrivateKey.from_private_bytes(bytes(self.signing_key)).sign(data)

    def public_key(self) -> bytes:
        """The instance's Ed25519 public key (32 bytes), printed by ``tipline keys status``."""
        self._open()
        private = Ed25519PrivateKey.from_private_bytes(bytes(self.signing_key))
        return private.public_key().public_bytes_raw()

    def _payload(self) -> bytes:
        self._open()
        return json.dumps(
            {
                "current": self.current_id,
                "index_key": base64.b64encode(self.index_key).decode(),
                "signing_key": base64.b64encode(self.signing_key).decode(),
                "keks": [
                    {
                        "id": k.id,
                        "key": base64.b64encode(k.key).decode(),
                        "created_at": k.created_at.isoformat(),
                    }
                    for k in sorted(self.keks.values(), key=lambda k: k.id)
                ],
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def _from_payload(cls, raw: bytes) -> Keyring:
        data = json.loads(raw)
        keks = {
            int(k["id"]): Kek(
                int(k["id"]),
                bytearray(base64.b64decode(k["key"])),
                datetime.fromisoformat(k["created_at"]),
            )
            for k in data["keks"]
        }
        index_key = bytearray(base64.b64decode(data["index_key"]))
        if "signing_key" not in data:
            return cls(keks, int(data["current"]), index_key, signing_key_added=True)
        signing = bytearray(base64.b64decode(data["signing_key"]))
        return cls(keks, int(data["current"]), index_key, signing)


@dataclass(frozen=True, slots=True)
class Argon2Cost:
    """Argon2id costs used when sealing with a new passphrase."""

    iterations: int = 4
    memory_kib: int = 262_144
    lanes: int = 4


class KeyringFile:
    """The keyring on disk: a JSON header (KDF parameters) and the sealed KEKs."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def exists(self) -> bool:
        """Whether a keyring file is present."""
        return self.path.exists()

    def destroy(self) -> bool:
        """Overwrite the keyring file (and any temp file a crashed write left), then remove it.

        No passphrase is needed: without the file, no copy of the database can be read. Whether
        there was a keyring to destroy.
        """
        leftovers = sorted(self.path.parent.glob(f".{self.path.name}.*"))
        found = False
        for path in [self.path, *leftovers]:
            try:
                size = path.stat().st_size
                with path.open("r+b") as handle:
                    handle.write(os.urandom(size))
                    handle.flush()
                    os.fsync(handle.fileno())
                path.unlink()
            except FileNotFoundError:
                continue
            found = found or path == self.path
        if found:
            _fsync_dir(self.path.parent)
        return found

    def _header(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_bytes())
        except FileNotFoundError as exc:
            raise KeyringMissing(f"no keyring at {self.path}: run 'tipline init' first") from exc
        except (OSError, ValueError) as exc:
            raise KeyringCorrupt(f"the keyring file {self.path} is unreadable") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise KeyringCorrupt(f"{self.path} is not a tipline keyring")
        if data.get("version") != FORMAT_VERSION:
            raise KeyringCorrupt(f"{self.path} has an unsupported keyring version")
        return data

    @staticmethod
    def _root(kdf: dict[str, Any], secret: RootSecret) -> Key:
        if kdf.get("type") == "argon2id":
            if not isinstance(secret, Passphrase):
                raise WrongRootKey("this keyring is sealed with a passphrase, not a key file")
            return KdfParams.from_json(kdf).derive(secret.secret)
        if kdf.get("type") == "keyfile":
            if not isinstance(secret, KeyFile):
                raise WrongRootKey("this keyring is sealed with a key file, not a passphrase")
            return secret.key
        raise KeyringCorrupt("unknown key derivation in the keyring header")

    @staticmethod
    def _ad(kdf: dict[str, Any]) -> bytes:
        return associated_data(
            "tipline/keyring/v1", FORMAT_VERSION, json.dumps(kdf, sort_keys=True)
        )

    def open(self, secret: RootSecret) -> KeyVault:
        """Unlock the keyring; a wrong passphrase or key file is :class:`WrongRootKey`."""
        header = self._header()
        try:
            kdf = dict(header["kdf"])
            root = self._root(kdf, secret)
        except (KeyError, TypeError, ValueError) as exc:
            raise KeyringCorrupt(f"the keyring file {self.path} is damaged") from exc
        vault = KeyVault(self, self._unseal(header, root, kdf), root, kdf)
        if vault.keyring.signing_key_added:
            # A keyring from before signing keys: keep the one just made, for every process.
            vault.persist()
            vault.keyring.signing_key_added = False
        return vault

    def load(self, secret: RootSecret) -> Keyring:
        """Unlock and return just the keyring."""
        return self.open(secret).keyring

    def _unseal(self, header: dict[str, Any], root: Key, kdf: dict[str, Any]) -> Keyring:
        try:
            sealed = base64.b64decode(header["sealed"])
        except (KeyError, TypeError, ValueError) as exc:
            raise KeyringCorrupt(f"the keyring file {self.path} is damaged") from exc
        if header.get("kdf") != kdf:
            raise WrongRootKey("the keyring was re-sealed under another root key")
        try:
            payload = unseal(_seal_key(root), sealed, self._ad(kdf))
        except DecryptionError as exc:
            raise WrongRootKey("the passphrase or root key does not open the keyring") from exc
        return Keyring._from_payload(payload)

    @staticmethod
    def derive(secret: RootSecret, cost: Argon2Cost | None) -> tuple[bytes, dict[str, Any]]:
        """A root key and its header for a secret (a new salt for a passphrase)."""
        if isinstance(secret, Passphrase):
            cost = cost or Argon2Cost()
            params = KdfParams(os.urandom(SALT_BYTES), cost.iterations, cost.memory_kib, cost.lanes)
            return params.derive(secret.secret), params.to_json()
        return secret.key, {"type": "keyfile"}

    def write(self, keyring: Keyring, root: Key, kdf: dict[str, Any]) -> None:
        """Seal and write atomically (temp file, fsync, rename)."""
        sealed = seal(_seal_key(root), keyring._payload(), self._ad(kdf))
        doc = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "kdf": kdf,
            "sealed": base64.b64encode(sealed).decode(),
        }
        atomic_write(self.path, json.dumps(doc, indent=1).encode())

    def save(self, keyring: Keyring, secret: RootSecret, cost: Argon2Cost | None = None) -> None:
        """Seal under a secret, with a new salt, keeping the file's Argon2 cost unless given."""
        root, kdf = self.derive(secret, cost or self._current_cost())
        self.write(keyring, root, kdf)

    def _current_cost(self) -> Argon2Cost | None:
        if not self.exists():
            return None
        kdf = self._header().get("kdf", {})
        if kdf.get("type") != "argon2id":
            return None
        params = KdfParams.from_json(kdf)
        return Argon2Cost(params.iterations, params.memory_kib, params.lanes)


class KeyVault:
    """An unlocked keyring together with what it takes to write it back.

    The root key stays in memory while the service runs (as the KEKs do), so that a rotation can
    persist the keyring, and other processes can reload it, without asking for the passphrase;
    :meth:`forget` overwrites it and every KEK when the service locks.
    """

    def __init__(self, file: KeyringFile, keyring: Keyring, root: Key, kdf: dict[str, Any]) -> None:
        self.file = file
        self.keyring = keyring
        self._root = bytearray(root)
        self._kdf = kdf
        self._seen = self._stamp()

    def forget(self) -> None:
        """Overwrite the root key, the KEKs and the index keys in memory (``tipline lock``)."""
        zeroise(self._root)
        self.keyring.forget()

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.file.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def changed_on_disk(self) -> bool:
        """Whether another process rewrote the keyring file since this one last read or wrote it."""
        return self._stamp() != self._seen

    @classmethod
    def create(
        cls,
        file: KeyringFile,
        secret: RootSecret,
        cost: Argon2Cost | None,
        now: datetime,
        first_id: int = 1,
    ) -> KeyVault:
        """A new keyring with one KEK, written to ``file``."""
        if file.exists():
            raise KeyringExists(f"a keyring already exists at {file.path}")
        root, kdf = KeyringFile.derive(secret, cost)
        vault = cls(file, Keyring.generate(now, first_id), root, kdf)
        vault.persist()
        return vault

    def persist(self) -> None:
        """Write the keyring as it is in memory (destroyed KEKs are gone from the file)."""
        self.file.write(self.keyring, self._root, self._kdf)
        self._seen = self._stamp()

    def reload(self) -> None:
        """Re-read the file (another process rotated); the keyring object is updated in place."""
        stamp = self._stamp()
        fresh = self.file._unseal(self.file._header(), self._root, self._kdf)
        self.keyring.replace_with(fresh)
        self._seen = stamp

    def rekey(self, secret: RootSecret, cost: Argon2Cost | None) -> None:
        """Seal the same KEKs under a new root key (``tipline keys rotate --root``)."""
        root, kdf = KeyringFile.derive(secret, cost)
        self.file.write(self.keyring, root, kdf)
        zeroise(self._root)
        self._root, self._kdf = bytearray(root), kdf
        self._seen = self._stamp()


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write a file so that a crash leaves either the old or the new content, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
