"""Encoding shared by the repositories: record ids and the JSON inside ciphertexts."""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from typing import Any

from storage.crypto import DecryptionError


def new_id() -> str:
    """A random record id (128 bits), so ids reveal neither order nor count."""
    return secrets.token_hex(16)


def _dumps(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _loads(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise DecryptionError from exc
    if not isinstance(value, dict):
        raise DecryptionError
    return value
