"""Reads the legal deadline table (``TIPLINE_DEADLINES_FILE`` or the one shipped with tipline)."""

from __future__ import annotations

from pathlib import Path

from bot.domain.deadlines import DeadlineTable, DeadlineTableError, parse_table

SHIPPED = Path(__file__).parent / "domain" / "deadlines.toml"


def load_deadline_table(path: Path | None = None) -> DeadlineTable:
    """The table at ``path`` (the shipped one by default); one clear line on any problem."""
    path = path or SHIPPED
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise DeadlineTableError(f"deadline table {path}: cannot be read ({reason})") from exc
    try:
        return parse_table(text)
    except DeadlineTableError as exc:
        raise DeadlineTableError(f"deadline table {path}: {exc}") from exc
