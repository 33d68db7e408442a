"""Tracebacks and stacks pass through the same redaction as messages; no record carries an update.

Every test logs through the service's own handler (``setup_logging``) and reads what reached
stderr, which is what an operator (or whoever seizes the log) would see.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from telegram import Update

from bot.logs import setup_logging
from tests.fake_telegram import TOKEN
from tests.telegram_harness import TelegramHarness

PHONE = "+994501234567"
UUID = "0b6d7a58-4c4c-4b8e-9c1e-5f2e0f6b9a11"
CANARY = "canary-kx93-stonewall"
SECRETS = (PHONE, UUID, TOKEN, TOKEN.split(":")[1])

log = logging.getLogger("tipline.test")


@pytest.fixture
def service_log() -> Iterator[None]:
    """Removes the handler a test installs with ``setup_logging`` (in its body: capsys gives
    each phase its own stderr) and restores the levels it changed."""
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in ("", "telegram", "telegram.ext")}
    yield
    root.handlers[:] = [h for h in root.handlers if h.get_name() != "tipline"]
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def _fail_deep(depth: int) -> None:
    if depth:
        _fail_deep(depth - 1)
        return
    try:
        raise ConnectionError(f"POST https://api.telegram.org/bot{TOKEN}/sendMessage failed")
    except ConnectionError as low:
        raise RuntimeError(f"could not reach {PHONE} ({UUID}) about {TOKEN}") from low


def assert_clean(err: str) -> None:
    for secret in SECRETS:
        assert secret not in err, secret


def test_a_traceback_is_redacted_like_a_message(
    service_log: None, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging("INFO")
    try:
        _fail_deep(3)
    except RuntimeError:
        log.exception("sending failed for %s", PHONE)
    err = capsys.readouterr().err
    # The traceback is still there for the operator, with every frame, only masked.
    assert "Traceback (most recent call last):" in err
    assert "_fail_deep" in err and "RuntimeError: could not reach [redacted]" in err
    assert "The above exception was the direct cause" in err
    assert err.count("[redacted]") >= 5
    assert_clean(err)


def test_a_stack_and_sql_parameters_are_redacted(
    service_log: None, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging("INFO")
    record = log.makeRecord(
        log.name, logging.ERROR, __file__, 1, "insert failed", None, None, sinfo=None
    )
    record.stack_info = f'Stack (most recent call last):\n  File "x.py", line 1, in {UUID}'
    log.handle(record)
    try:
        raise ValueError(
            f"(sqlite3.IntegrityError) UNIQUE failed\n[SQL: INSERT INTO t VALUES (?, ?)]\n"
            f"[parameters: ('{CANARY}', '{PHONE}')]"
        )
    except ValueError:
        log.error("storage error", exc_info=True)
    err = capsys.readouterr().err
    assert "Stack (most recent call last):" in err and "[SQL: INSERT INTO t VALUES (?, ?)]" in err
    assert CANARY not in err
    assert_clean(err)


def test_a_record_never_carries_a_raw_update(
    service_log: None, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging("DEBUG")
    payload = {
        "update_id": 77,
        "message": {
            "message_id": 1,
            "date": 1_770_000_000,
            "chat": {"id": 5550101, "type": "private"},
            "text": f"they took me to station 2 {CANARY}",
        },
    }
    update = Update.de_json(payload, None)
    envelope = {"envelope": {"sourceUuid": UUID, "dataMessage": {"message": CANARY}}}
    log.debug("processing update %s", update)
    log.debug(update)
    log.debug("received %s and %s", envelope, 3)
    log.debug("as a mapping: %(u)s", {"u": payload})
    log.debug("parameters %s", {"chat_id": 5550101, "text": CANARY})  # a flat dict alone
    log.debug("a batch %s", [payload])
    log.info("unformattable %s %s", PHONE)  # too few arguments: no logging error, no phone
    err = capsys.readouterr().err
    assert CANARY not in err and "5550101" not in err
    assert err.count("[payload]") == 6, err
    assert "received [payload] and 3" in err
    assert "--- Logging error ---" not in err
    assert_clean(err)


@pytest.fixture
async def tg(tmp_path: Path) -> AsyncIterator[TelegramHarness]:
    harness = TelegramHarness(tmp_path)
    await harness.start_all()
    yield harness
    await harness.stop_all()


async def test_ptb_debug_logs_of_an_update_carry_no_content(
    tg: TelegramHarness, service_log: None, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging("DEBUG")
    # An operator debugging PTB itself: it logs every update it processes, in full.
    logging.getLogger("telegram").setLevel(logging.DEBUG)
    await tg.text(5550102, f"/start {CANARY}")
    await tg.text(5550102, f"my words {CANARY} {PHONE}")
    err = capsys.readouterr().err
    # PTB logged the updates it fetched (the channel handles them, not PTB's dispatch): replaced
    assert "`getUpdates` finished with return value `[payload]`" in err
    assert CANARY not in err and "5550102" not in err
    assert_clean(err)
