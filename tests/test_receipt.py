"""Receipt codes: 80 random bits, hand-copyable, forgiving of look-alike characters."""

from __future__ import annotations

import secrets

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.domain.receipt import MalformedReceipt, format_receipt, normalize_receipt


@given(st.binary(min_size=10, max_size=10))
def test_every_80_bit_value_round_trips(raw: bytes) -> None:
    code = format_receipt(raw)
    assert len(code) == 19 and code.count("-") == 3
    assert normalize_receipt(code) == code.replace("-", "")
    assert normalize_receipt(code.lower().replace("-", " ")) == code.replace("-", "")


def test_distinct_codes_for_distinct_bytes() -> None:
    codes = {format_receipt(secrets.token_bytes(10)) for _ in range(1000)}
    assert len(codes) == 1000


def test_look_alikes_are_forgiven() -> None:
    code = format_receipt(bytes(10))  # AAAA-AAAA-AAAA-AAAA
    assert normalize_receipt("aaaa aaaa aaaa aaaa") == "A" * 16
    assert normalize_receipt("OOOO-IIII-BBBB-AAAA") == normalize_receipt("0000-1111-8888-aaaa")
    assert code == "AAAA-AAAA-AAAA-AAAA"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "status",
        "AAAA-AAAA-AAAA",
        "AAAA-AAAA-AAAA-AAAA-A",
        "ÄÄÄÄ-AAAA-AAAA-AAAA",
        "9999-9999-9999-9999",
    ],
)
def test_malformed_codes(bad: str) -> None:
    with pytest.raises(MalformedReceipt):
        normalize_receipt(bad)


def test_wrong_length_bytes_refused() -> None:
    with pytest.raises(ValueError, match="10 random bytes"):
        format_receipt(b"short")
