"""Logging set-up: no content, ids, phone numbers or tokens ever reach a log line."""

from __future__ import annotations

import logging
import re
import sys

# Defence in depth: the code never logs these, but a library might.
_PATTERNS = (
    re.compile(r"\d{5,12}:[A-Za-z0-9_-]{30,}"),  # Telegram bot tokens
    re.compile(r"bot[^/\s]*:[^/\s]+/"),  # Bot API URLs carrying the token
    re.compile(r"\+\d{7,15}"),  # phone numbers
    re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I),  # UUIDs
)
#: Loggers that would print URLs (with tokens), SQL parameters or driver internals.
QUIET_LOGGERS = (
    "httpx",
    "httpcore",
    "sqlalchemy",
    "aiosqlite",
    "asyncpg",
    "alembic",
    "telegram",
    "tornado",
)


class RedactingFilter(logging.Filter):
    """Masks anything shaped like a token, phone number or UUID in a formatted record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message with secrets masked; never drops a record."""
        message = record.getMessage()
        for pattern in _PATTERNS:
            message = pattern.sub("[redacted]", message)
        record.msg, record.args = message, None
        return True


def setup_logging(level: str = "INFO") -> None:
    """Log to stderr at ``level``, with redaction, and third-party chatter at WARNING."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    handler.set_name("tipline")
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if h.get_name() != "tipline"] + [handler]
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
