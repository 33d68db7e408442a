"""The triage table of DESIGN.md section 7."""

from __future__ import annotations

import pytest

from bot.domain.questionnaire import Answer
from bot.domain.triage import Priority, triage

BASE: dict[str, Answer] = {
    "situation": "other_incident",
    "when": "last_month",
    "what_happened": ("threats",),
    "injured": "no",
    "under18": "no",
    "needs_lawyer": "documenting",
}

TABLE: list[tuple[str, dict[str, Answer], Priority, set[str]]] = [
    (
        "detained right now",
        {"situation": "detained_now", "when": None},
        Priority.P1,
        {"detained_now"},
    ),
    ("injured", {"injured": "yes"}, Priority.P1, {"needs_medical"}),
    ("minor detained", {"under18": "yes", "what_happened": ("detained",)}, Priority.P1, {"minor"}),
    ("minor beaten", {"under18": "yes", "what_happened": ("beaten",)}, Priority.P1, {"minor"}),
    ("minor released", {"under18": "yes", "situation": "released"}, Priority.P1, {"minor"}),
    ("minor threatened only", {"under18": "yes"}, Priority.P4, {"minor"}),
    ("beaten today", {"when": "today", "what_happened": ("beaten",)}, Priority.P2, set()),
    (
        "forced test in 3 days",
        {"when": "last_3_days", "what_happened": ("forced_medical",)},
        Priority.P2,
        {"forced_medical"},
    ),
    (
        "contacts taken today",
        {"when": "today", "what_happened": ("phone_searched",)},
        Priority.P2,
        {"network_exposed"},
    ),
    (
        "named others today",
        {"when": "today", "what_happened": ("forced_to_name",)},
        Priority.P2,
        {"network_exposed"},
    ),
    ("summoned", {"situation": "summoned", "when": "last_month"}, Priority.P2, set()),
    (
        "beaten last month, lawyer",
        {"what_happened": ("beaten",), "needs_lawyer": "yes"},
        Priority.P3,
        set(),
    ),
    (
        "contacts taken long ago",
        {"what_happened": ("phone_searched",)},
        Priority.P4,
        {"network_exposed"},
    ),
    ("lawyer urgently", {"needs_lawyer": "urgently"}, Priority.P3, {"lawyer_urgent"}),
    ("documentation only", {}, Priority.P4, set()),
    ("about someone else", {"about": "someone_else"}, Priority.P4, {"third_party"}),
    ("blackmail recent", {"when": "today", "what_happened": ("blackmail",)}, Priority.P4, set()),
]


@pytest.mark.parametrize(("name", "changes", "priority", "flags"), TABLE, ids=[t[0] for t in TABLE])
def test_triage_table(
    name: str, changes: dict[str, Answer], priority: Priority, flags: set[str]
) -> None:
    result = triage(BASE | changes)
    assert result.priority is priority
    assert result.flags == flags


def test_priority_orders_urgent_first() -> None:
    assert sorted([Priority.P4, Priority.P1, Priority.P3]) == [
        Priority.P1,
        Priority.P3,
        Priority.P4,
    ]
