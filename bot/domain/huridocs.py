"""A case in the HURIDOCS Events Standard Formats (event, act, victim), and as a page to read.

The mapping is from the questionnaire's answers only: act types, dates, location, victim
characteristics, method of violence, detention and consequences. Dates in tipline are coarse,
so every date says how precise it is. Pure: the evidence package wraps these in a signed ZIP.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from bot.domain.casetext import CaseText, render_case
from bot.domain.texts import Texts

FORMAT = "tipline-huridocs/1"
STANDARD = "HURIDOCS Events Standard Formats (2001)"

#: what_happened -> (act type, method of violence or None)
_ACTS: dict[str, tuple[str, str | None]] = {
    "detained": ("arbitrary arrest or detention", None),
    "beaten": ("torture or ill-treatment", "beating"),
    "threats": ("threats or intimidation", "verbal threats and insults"),
    "forced_medical": (
        "forced medical examination",
        "forced medical examination or HIV/STI test",
    ),
    "phone_searched": ("violation of privacy", "phone searched or contacts taken"),
    "forced_to_name": ("coercion", "forced to name other people"),
    "fined_charged": ("administrative or criminal sanction", None),
    "outed": ("disclosure of sexual orientation or gender identity", None),
    "blackmail": ("extortion or blackmail", None),
    "other": ("other violation", None),
}
_CONSEQUENCES: dict[str, str] = {
    "fined_charged": "fined or charged",
    "outed": "outed to family or employer",
    "phone_searched": "contacts of other people exposed",
    "forced_to_name": "other people named under coercion",
}
#: when -> (earliest days before the report, latest days before it)
_WHEN: dict[str, tuple[int, int]] = {
    "today": (0, 0),
    "last_3_days": (3, 0),
    "last_week": (7, 0),
    "last_month": (31, 0),
}
_HELD_SINCE: dict[str, tuple[int, int]] = {
    "under_3h": (0, 0),
    "today": (0, 0),
    "days_1_3": (3, 1),
    "over_3_days": (365, 3),
}
_CITIES = {"baku": "Baku", "ganja": "Ganja", "sumgait": "Sumgait"}


@dataclass(frozen=True, slots=True)
class EventRef:
    """The event (raid) a case is linked to, as the package names it."""

    number: int
    city: str
    start: date
    end: date


def _many(answers: Mapping[str, Any], key: str) -> list[str]:
    value = answers.get(key)
    return [str(v) for v in value] if isinstance(value, list | tuple) else []


def _date_range(answers: Mapping[str, Any], reported_on: date) -> dict[str, Any]:
    situation = answers.get("situation")
    table, key = (
        (_HELD_SINCE, answers.get("held_since"))
        if situation == "detained_now"
        else (_WHEN, answers.get("when"))
    )
    span = table.get(str(key))
    if span is None:
        return {"initial_date": None, "final_date": reported_on.isoformat(), "type": "before"}
    earliest, latest = span
    return {
        "initial_date": (reported_on - timedelta(days=earliest)).isoformat(),
        "final_date": (reported_on - timedelta(days=latest)).isoformat(),
        "type": "exact day" if earliest == latest else "range (approximate)",
    }


def huridocs_record(
    case: CaseText, *, created_on: date, event: EventRef | None, originals: Sequence[str]
) -> dict[str, Any]:
    """The case as HURIDOCS ESF fields (JSON-ready); typed words are kept as the reporter wrote."""
    number, priority, flags, answers = case.number, case.priority, case.flags, case.answers
    what = _many(answers, "what_happened")
    situation = answers.get("situation")
    city = str(answers.get("city") or "other")
    acts = [
        {
            "act_type": _ACTS[w][0],
            "method_of_violence": _ACTS[w][1],
            "date": _date_range(answers, created_on),
        }
        for w in what
        if w in _ACTS
    ]
    detained = situation in ("detained_now", "released") or "detained" in what
    consequences = [_CONSEQUENCES[w] for w in what if w in _CONSEQUENCES]
    if answers.get("injured") == "yes":
        consequences.insert(0, "injured, needs medical help")
    return {
        "format": FORMAT,
        "standard": STANDARD,
        "case": {
            "number": number,
            "priority": f"P{priority}",
            "reported_on": created_on.isoformat(),
        },
        "event": None
        if event is None
        else {
            "event_number": event.number,
            "geographical_term": event.city,
            "initial_date": event.start.isoformat(),
            "final_date": event.end.isoformat(),
        },
        "acts": acts,
        "date_of_events": _date_range(answers, created_on),
        "location": {
            "geographical_term": _CITIES.get(city, "other (not listed)"),
            "local_geographical_area": answers.get("district"),
        },
        "victim": {
            "characteristics": (["minor (under 18)"] if answers.get("under18") == "yes" else []),
            "reported_by": "third party" if answers.get("about") == "someone_else" else "victim",
            "needs_lawyer": answers.get("needs_lawyer"),
        },
        "method_of_violence": [m for w in what if w in _ACTS and (m := _ACTS[w][1])],
        "detention": {
            "detained": detained,
            "status_at_report": {
                "detained_now": "detained at the time of the report",
                "released": "released",
                "summoned": "summoned or searched for",
                "other_incident": "other incident",
            }.get(str(situation), "unknown"),
            "place": answers.get("held_place"),
            "held_since": answers.get("held_since"),
        },
        "consequences": consequences,
        "flags": list(flags),
        "narrative": answers.get("own_words"),
        "originals": list(originals),
    }


def render_html(
    texts: Texts, language: str, case: CaseText, *, event: EventRef | None, originals: Sequence[str]
) -> str:
    """A readable page of the case in the lawyer's language (every value escaped)."""
    t = texts.get
    lines = render_case(texts, language, case).split("\n")
    title = t(language, "evidence.title", number=case.number)
    rows = "\n".join(
        f"<tr><th>{html.escape(head)}</th><td>{html.escape(value)}</td></tr>"
        for head, _, value in (line.partition(": ") for line in lines[1:])
    )
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="{html.escape(language)}"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{html.escape(lines[0])}</p>",
    ]
    if event is not None:
        where = t(
            language,
            "evidence.event",
            event=event.number,
            city=event.city,
            start=event.start.isoformat(),
            end=event.end.isoformat(),
        )
        parts.append(f"<p>{html.escape(where)}</p>")
    parts.append(f"<table>\n{rows}\n</table>")
    if originals:
        parts.append(f"<h2>{html.escape(t(language, 'evidence.originals'))}</h2><ul>")
        parts += [f"<li>{html.escape(name)}</li>" for name in originals]
        parts.append("</ul>")
    parts.append(f"<p>{html.escape(t(language, 'evidence.how_to_verify'))}</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
