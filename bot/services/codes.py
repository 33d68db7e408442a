"""Fresh codes people copy by hand: receipts for reporters, invites for lawyers."""

from __future__ import annotations

import secrets

from bot.domain.receipt import RECEIPT_BYTES, format_receipt, normalize_receipt


def new_code() -> tuple[str, str]:
    """An 80-bit code as shown (``ABCD-EFGH-...``) and the normalized form that is hashed."""
    shown = format_receipt(secrets.token_bytes(RECEIPT_BYTES))
    return shown, normalize_receipt(shown)
