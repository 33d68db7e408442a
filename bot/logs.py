"""Logging set-up: no content, ids, phone numbers or tokens ever reach a log line.

Messages, tracebacks and stack traces pass through the same redaction, and a record never
carries a raw update: a messenger object or payload among a record's arguments is replaced by
a placeholder before anything formats it.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any

from telegram import TelegramObject

# Defence in depth: the code never logs these, but a library might.
_PATTERNS = (
    re.compile(r"\d{5,12}:[A-Za-z0-9_-]{30,}"),  # Telegram bot tokens
    re.compile(r"bot[^/\s]*:[^/\s]+/"),  # Bot API URLs carrying the token
    re.compile(r"\+\d{7,15}"),  # phone numbers
    re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I),  # UUIDs
    re.compile(r"\[parameters: [^\n]*"),  # SQL parameters that SQLAlchemy puts in its errors
)
RAW_UPDATE = "[payload]"
#: Loggers that would print URLs (with tokens), SQL parameters or driver internals.
QUIET_LOGGERS = (
    "httpx",
    "httpcore",
    "aiohttp",
    "sqlalchemy",
    "aiosqlite",
    "asyncpg",
    "alembic",
    "telegram",
)


def redact(text: str) -> str:
    """``text`` with anything shaped like a token, phone number, UUID or SQL parameters masked."""
    for pattern in _PATTERNS:
        text = pattern.sub("[redacted]", text)
    return text


def _is_payload(value: object) -> bool:
    # Structured data in a log call is a messenger object or a request/response body (an
    # update, an envelope, a sendMessage's parameters): ids and words, never for a log.
    if isinstance(value, TelegramObject | Mapping):
        return True
    return isinstance(value, list | tuple | set | frozenset) and any(
        isinstance(item, TelegramObject | Mapping | list | tuple) for item in value
    )


def _without_payloads(msg: object, args: Any) -> Any:
    if isinstance(args, tuple):
        return tuple(RAW_UPDATE if _is_payload(arg) else arg for arg in args)
    if isinstance(args, Mapping):
        if "%(" in str(msg):  # logging's "%(name)s" style: one mapping of named arguments
            return {key: RAW_UPDATE if _is_payload(v) else v for key, v in args.items()}
        return (RAW_UPDATE,)  # a single dict argument, which logging unpacked
    return args


_EXCEPTIONS = logging.Formatter()


def sanitize(record: logging.LogRecord) -> None:
    """Mask secrets in a record's message, traceback and stack; replace raw updates in it."""
    if record.args:
        record.args = _without_payloads(record.msg, record.args)
    if _is_payload(record.msg):
        record.msg = RAW_UPDATE
    try:
        message = record.getMessage()
    except (TypeError, ValueError, KeyError):
        # logging's own error report would print the arguments unredacted: never get there.
        message = f"{record.msg} [arguments did not fit the message]"
    record.msg, record.args = redact(message), None
    if record.exc_info and not record.exc_text:
        # Formatted once here, so that every handler prints the redacted text.
        record.exc_text = _EXCEPTIONS.formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


class RedactingFilter(logging.Filter):
    """Sanitizes every record a handler is given (see ``sanitize``); never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; always keep it."""
        sanitize(record)
        return True


_installed_factory: Callable[..., logging.LogRecord] | None = None


def install_record_factory() -> None:
    """Sanitize every record as it is made, before any handler (ours or a library's) sees it."""
    global _installed_factory
    current = logging.getLogRecordFactory()
    if current is _installed_factory:
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = current(*args, **kwargs)
        sanitize(record)
        return record

    _installed_factory = factory
    logging.setLogRecordFactory(factory)


class RedactingFormatter(logging.Formatter):
    """A formatter whose whole output (message, traceback, stack) is redacted once more."""

    def format(self, record: logging.LogRecord) -> str:
        """Format as usual, then mask secrets in the result."""
        return redact(super().format(record))


def setup_logging(level: str = "INFO") -> None:
    """Log to stderr at ``level``, with redaction, and third-party chatter at WARNING."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    handler.set_name("tipline")
    install_record_factory()
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if h.get_name() != "tipline"] + [handler]
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
