"""Legal deadlines computed from a decision, from a table shipped as data (``deadlines.toml``).

The table is editable without code: decision kinds (with the words lawyers may type for them)
and the deadlines each kind opens, as a number of days or calendar months from the decision.
Parsing is pure; reading the file is the caller's job. Every problem is one line naming where.
"""

from __future__ import annotations

import calendar
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import IntEnum
from typing import Any

#: Reminders before a deadline, latest first as stages rise.
REMINDERS = (timedelta(hours=72), timedelta(hours=24))
_WORD = re.compile(r"^[^\W\d_][\w-]{0,39}$")
_ID = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


class DeadlineTableError(Exception):
    """The deadline table cannot be used; the message is one clear line."""


class Stage(IntEnum):
    """How far a deadline's reminders have gone."""

    OPEN = 0
    REMINDED_72H = 1
    REMINDED_24H = 2
    PASSED = 3


@dataclass(frozen=True, slots=True)
class DecisionKind:
    """A kind of decision a lawyer records, with the words that name it."""

    id: str
    words: tuple[str, ...]
    labels: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Rule:
    """A deadline a decision kind opens."""

    id: str
    after: tuple[str, ...]
    days: int
    months: int
    labels: Mapping[str, str]
    check_with_counsel: bool

    def due_on(self, decided_on: date) -> date:
        """The last day to act."""
        if self.months:
            return add_months(decided_on, self.months)
        return decided_on + timedelta(days=self.days)


@dataclass(frozen=True, slots=True)
class DeadlineTable:
    """Decision kinds and the deadlines they open."""

    kinds: tuple[DecisionKind, ...]
    rules: tuple[Rule, ...]

    def kind(self, word: str) -> DecisionKind | None:
        """The kind a typed word names (case does not matter)."""
        word = word.casefold()
        return next((k for k in self.kinds if word in k.words), None)

    def rule(self, rule_id: str) -> Rule | None:
        """A rule by id."""
        return next((r for r in self.rules if r.id == rule_id), None)

    def opened_by(self, kind: DecisionKind) -> list[Rule]:
        """The deadlines a decision of this kind opens."""
        return [r for r in self.rules if kind.id in r.after]


def label(labels: Mapping[str, str], language: str) -> str:
    """A label in a language, English when it has none."""
    return labels.get(language) or labels["en"]


def add_months(day: date, months: int) -> date:
    """The same day ``months`` calendar months later (the month's last day when it is shorter)."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def due_moment(due_on: date) -> datetime:
    """When a deadline has passed: the end of its last day (UTC; dates are all that is kept)."""
    return datetime.combine(due_on + timedelta(days=1), time(0), UTC)


def next_stage(due_on: date, stage: Stage, now: datetime) -> Stage:
    """The stage a deadline has reached at ``now`` (a late job skips straight to the latest)."""
    due = due_moment(due_on)
    if now >= due:
        return Stage.PASSED
    if now >= due - REMINDERS[1]:
        return max(stage, Stage.REMINDED_24H)
    if now >= due - REMINDERS[0]:
        return max(stage, Stage.REMINDED_72H)
    return stage


def _labels(where: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in value.items()
    ):
        raise DeadlineTableError(f"{where}: label must map languages to texts")
    if "en" not in value:
        raise DeadlineTableError(f"{where}: label needs an English text (en)")
    return {k: v.strip() for k, v in value.items()}


def _positive(where: str, value: Any, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise DeadlineTableError(f"{where}: must be a whole number from 0 to {maximum}")
    return value


def parse_table(text: str) -> DeadlineTable:
    """The table from its TOML text; raises DeadlineTableError with one line on any problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DeadlineTableError(f"not valid TOML ({exc})") from exc
    kinds_data = data.get("kinds")
    if not isinstance(kinds_data, dict) or not kinds_data:
        raise DeadlineTableError("no [kinds.*] tables: at least one decision kind is needed")
    kinds: list[DecisionKind] = []
    taken: dict[str, str] = {}
    for kind_id, body in kinds_data.items():
        where = f"kinds.{kind_id}"
        if not _ID.match(kind_id) or not isinstance(body, dict):
            raise DeadlineTableError(f"{where}: ids are lowercase letters, digits and _")
        words = body.get("words")
        if not isinstance(words, list) or not words:
            raise DeadlineTableError(f"{where}: words must list what lawyers may type")
        folded: list[str] = []
        for word in words:
            if not isinstance(word, str) or not _WORD.match(word):
                raise DeadlineTableError(f"{where}: {word!r} is not one word")
            word = word.casefold()
            if word in taken:
                raise DeadlineTableError(f"{where}: {word!r} already names {taken[word]}")
            taken[word] = kind_id
            folded.append(word)
        kinds.append(DecisionKind(kind_id, tuple(folded), _labels(where, body.get("label"))))
    rules_data = data.get("deadlines")
    if not isinstance(rules_data, list) or not rules_data:
        raise DeadlineTableError("no [[deadlines]]: at least one deadline is needed")
    rules: list[Rule] = []
    known = {k.id for k in kinds}
    for index, body in enumerate(rules_data, 1):
        where = f"deadlines #{index}"
        if not isinstance(body, dict):
            raise DeadlineTableError(f"{where}: must be a table")
        rule_id = body.get("id")
        if not isinstance(rule_id, str) or not _ID.match(rule_id):
            raise DeadlineTableError(f"{where}: id must be lowercase letters, digits and _")
        if any(r.id == rule_id for r in rules):
            raise DeadlineTableError(f"{where}: id {rule_id!r} is used twice")
        after = body.get("after")
        if not isinstance(after, list) or not after or not all(a in known for a in after):
            raise DeadlineTableError(f"{where} ({rule_id}): after must list known kinds")
        days = _positive(f"{where} ({rule_id}) days", body.get("days", 0), 3650)
        months = _positive(f"{where} ({rule_id}) months", body.get("months", 0), 120)
        if bool(days) == bool(months):
            raise DeadlineTableError(f"{where} ({rule_id}): give either days or months")
        counsel = body.get("check_with_counsel", False)
        if not isinstance(counsel, bool):
            raise DeadlineTableError(f"{where} ({rule_id}): check_with_counsel is true or false")
        rules.append(
            Rule(
                rule_id,
                tuple(str(a) for a in after),
                days,
                months,
                _labels(f"{where} ({rule_id})", body.get("label")),
                counsel,
            )
        )
    return DeadlineTable(tuple(kinds), tuple(rules))


def kinds_help(table: DeadlineTable, language: str) -> str:
    """The kinds a lawyer may type, for a usage answer (``fine`` = administrative fine, …)."""
    return "; ".join(f"{k.words[0]} = {label(k.labels, language)}" for k in table.kinds)
