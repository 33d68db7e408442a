"""Casework after intake, as pure functions: events (one raid, many victims), their counters,
the "possibly the same raid" rule, and the arguments of the casework commands.

An event holds a city, a date range and its linked cases, never a name. Its counters are kept
apart from the cases (like the advocacy statistics), so they survive the cases' purge.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

#: What an event counts, in the order it is shown. ``people`` counts the linked cases.
EVENT_CATEGORIES: tuple[str, ...] = (
    "people",
    "detained",
    "beaten",
    "forced_medical",
    "phone_searched",
    "forced_to_name",
    "fined_charged",
    "outed",
    "under18",
)
#: Answers of the ``what_happened`` step that are event categories of the same name.
_WHAT = frozenset(EVENT_CATEGORIES) - {"people", "under18"}

#: "Possibly the same raid": a detention in the event's city within this of its cases.
SAME_RAID_WINDOW = timedelta(hours=48)

#: City names as typed by staff (English, Azerbaijani, Russian) to the questionnaire's cities.
CITY_KEYS: dict[str, str] = {
    "baku": "baku",
    "bakı": "baku",  # noqa: RUF001
    "baki": "baku",
    "баку": "baku",
    "ganja": "ganja",
    "gəncə": "ganja",
    "gence": "ganja",
    "гянджа": "ganja",
    "гяндже": "ganja",
    "sumgait": "sumgait",
    "sumqayıt": "sumgait",  # noqa: RUF001
    "sumqayit": "sumgait",
    "сумгаит": "sumgait",
    "сумгайыт": "sumgait",
}

_CITY = re.compile(r"^[^\W\d_](?:[^\W\d_]|[-' ]){0,38}[^\W\d_]$")
_ISO = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$")
_DOTTED = re.compile(r"^(\d{1,2})[./](\d{1,2})[./](\d{4})$")
_NUMBER = re.compile(r"^#?(\d{1,9})$")
#: The oldest date a decision or event may carry (the Baku raids of 2017 are well after it).
EARLIEST = date(2000, 1, 1)


def parse_date(text: str) -> date | None:
    """A date typed as ``2017-09-20`` or ``20.09.2017`` (or ``20/09/2017``); None otherwise."""
    text = text.strip()
    if match := _ISO.match(text):
        year, month, day = (int(g) for g in match.groups())
    elif match := _DOTTED.match(text):
        day, month, year = (int(g) for g in match.groups())
    else:
        return None
    try:
        found = date(year, month, day)
    except ValueError:
        return None
    return found if found >= EARLIEST else None


def parse_number(text: str) -> int | None:
    """A case or event number (``12`` or ``#12``); None otherwise."""
    match = _NUMBER.match(text.strip())
    return int(match.group(1)) if match else None


def city_key(city: str) -> str | None:
    """The questionnaire's city a typed name stands for (``Baku`` -> ``baku``), if any."""
    return CITY_KEYS.get(unicodedata.normalize("NFC", city).strip().casefold())


def clean_city(text: str) -> str | None:
    """A city name as staff typed it, checked: letters, spaces and hyphens, 2 to 40 long."""
    text = unicodedata.normalize("NFC", " ".join(text.split()))
    return text if _CITY.match(text) else None


@dataclass(frozen=True, slots=True)
class NewEvent:
    """``event new CITY DATE [END]``."""

    city: str
    start: date
    end: date


@dataclass(frozen=True, slots=True)
class LinkCase:
    """``event add E N``."""

    event: int
    case: int


@dataclass(frozen=True, slots=True)
class ShowEvent:
    """``event E``."""

    event: int


EventArgs = NewEvent | LinkCase | ShowEvent


def parse_event(text: str) -> EventArgs | None:
    """The arguments of ``event``; None when they have none of its shapes."""
    words = text.split()
    if not words:
        return None
    head = words[0].casefold()
    if head == "new" and len(words) >= 3:
        dates = [parse_date(w) for w in words[-2:]]
        if len(words) >= 4 and dates[0] is not None and dates[1] is not None:
            city, start, end = " ".join(words[1:-2]), dates[0], dates[1]
        elif dates[1] is not None:
            city, start, end = " ".join(words[1:-1]), dates[1], dates[1]
        else:
            return None
        cleaned = clean_city(city)
        if cleaned is None or end < start or end - start > timedelta(days=366):
            return None
        return NewEvent(cleaned, start, end)
    if head == "add" and len(words) == 3:
        event, case = parse_number(words[1]), parse_number(words[2])
        return None if event is None or case is None else LinkCase(event, case)
    if len(words) == 1 and (number := parse_number(words[0])) is not None:
        return ShowEvent(number)
    return None


@dataclass(frozen=True, slots=True)
class DecisionArgs:
    """``decision N KIND DATE``: KIND still as typed (the deadline table knows the kinds)."""

    case: int
    kind: str
    decided_on: date


def parse_decision(number: int | None, rest: str) -> DecisionArgs | None:
    """The arguments of ``decision`` after its case number; None when they do not fit."""
    words = rest.split()
    if number is None or len(words) != 2:
        return None
    decided = parse_date(words[1])
    return None if decided is None else DecisionArgs(number, words[0].casefold(), decided)


def event_categories(answers: Mapping[str, Any]) -> list[str]:
    """The event counters one linked case adds to (``people`` always)."""
    what = answers.get("what_happened")
    chosen = {str(w) for w in what} if isinstance(what, list | tuple) else set()
    found = {"people"} | (chosen & _WHAT)
    if answers.get("situation") in ("detained_now", "released"):
        found.add("detained")
    if answers.get("under18") == "yes":
        found.add("under18")
    return [c for c in EVENT_CATEGORIES if c in found]


def reports_detention(answers: Mapping[str, Any]) -> bool:
    """Whether a report tells of a detention (the only reports a raid suggestion looks at)."""
    what = answers.get("what_happened")
    detained = isinstance(what, list | tuple) and "detained" in what
    return detained or answers.get("situation") in ("detained_now", "released")


@dataclass(frozen=True, slots=True)
class EventSpan:
    """What the suggestion rule knows of an event: its city and the days its cases span."""

    city: str | None
    first: date
    last: date


def same_raid(span: EventSpan, city: str, reported_on: date) -> bool:
    """Whether a detention reported in ``city`` on ``reported_on`` may belong to the event.

    Dates at rest are whole days, so "within 48 hours" of the event's days is within two days.
    """
    if span.city is None or span.city != city:
        return False
    days = SAME_RAID_WINDOW.days
    return span.first - timedelta(days=days) <= reported_on <= span.last + timedelta(days=days)


def widen(span: EventSpan, day: date) -> EventSpan:
    """The span once a case reported on ``day`` is linked."""
    return EventSpan(span.city, min(span.first, day), max(span.last, day))
