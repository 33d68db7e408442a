"""Receipt codes: 80 random bits shown as four groups of four letters and digits."""

from __future__ import annotations

import base64
import re

RECEIPT_BYTES = 10  # 80 bits
_GROUP = 4
# Base32 has no 0, 1 or 8; people who copy by hand write them for O, I and B.
_CONFUSABLE = str.maketrans({"0": "O", "1": "I", "8": "B"})
_VALID = re.compile(r"^[A-Z2-7]{16}$")


class MalformedReceipt(ValueError):
    """Text that cannot be a receipt code."""


def format_receipt(random_bytes: bytes) -> str:
    """Format 10 random bytes as ``ABCD-EFGH-JKLM-NOPQ``."""
    if len(random_bytes) != RECEIPT_BYTES:
        raise ValueError("a receipt needs exactly 10 random bytes")
    raw = base64.b32encode(random_bytes).decode("ascii")
    return "-".join(raw[i : i + _GROUP] for i in range(0, len(raw), _GROUP))


def normalize_receipt(text: str) -> str:
    """The canonical form of a typed code (case, spaces, dashes and look-alikes forgiven)."""
    compact = re.sub(r"[\s\-_.]", "", text).upper().translate(_CONFUSABLE)
    if not _VALID.match(compact):
        raise MalformedReceipt("not a receipt code")
    return compact
