"""Triage (DESIGN.md section 7): a priority and flags from the answers, as a pure function."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum

from bot.domain.questionnaire import Answer


class Priority(IntEnum):
    """P1 urgent to P4 documentation only; lower is more urgent."""

    P1 = 1
    P2 = 2
    P3 = 3
    P4 = 4


@dataclass(frozen=True, slots=True)
class Triage:
    """The outcome of triage: a priority and the flags that travel with the case."""

    priority: Priority
    flags: frozenset[str]


_RECENT_WHEN = frozenset({"today", "last_3_days"})
_SERIOUS = frozenset({"beaten", "forced_medical", "phone_searched", "forced_to_name"})


def _many(answers: Mapping[str, Answer], key: str) -> frozenset[str]:
    value = answers.get(key)
    return frozenset(value) if isinstance(value, tuple) else frozenset()


def triage(answers: Mapping[str, Answer]) -> Triage:
    """Priority and flags for a submitted report."""
    what = _many(answers, "what_happened")
    situation = answers.get("situation")
    detained_now = situation == "detained_now"
    detention = detained_now or situation == "released" or "detained" in what
    violence = "beaten" in what
    injured = answers.get("injured") == "yes"
    minor = answers.get("under18") == "yes"
    recent = detained_now or answers.get("when") in _RECENT_WHEN
    needs = answers.get("needs_lawyer")

    flags = set()
    if "phone_searched" in what or "forced_to_name" in what:
        flags.add("network_exposed")
    if detained_now:
        flags.add("detained_now")
    if injured:
        flags.add("needs_medical")
    if minor:
        flags.add("minor")
    if "forced_medical" in what:
        flags.add("forced_medical")
    if needs == "urgently":
        flags.add("lawyer_urgent")
    if answers.get("about") == "someone_else":
        flags.add("third_party")

    if detained_now or injured or (minor and (detention or violence)):
        priority = Priority.P1
    elif (recent and what & _SERIOUS) or situation == "summoned":
        priority = Priority.P2
    elif needs in ("urgently", "yes"):
        priority = Priority.P3
    else:
        priority = Priority.P4
    return Triage(priority, frozenset(flags))
