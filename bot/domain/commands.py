"""Messenger commands as typed: ``/Start@tipline_bot`` is the command ``start``."""

from __future__ import annotations


def command_name(word: str) -> str:
    """The command named by a message's first word, lowercased; empty when it is not one."""
    return word[1:].split("@")[0].lower() if word.startswith("/") else ""
