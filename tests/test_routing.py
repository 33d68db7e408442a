"""Routing decisions (DESIGN.md section 7) and the index that makes them fast."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from bot.domain.routing import CaseNeeds, LawyerSlot, Roster, choose_lawyer, overdue
from bot.domain.triage import Priority


def slot(
    i: int, langs: str = "az", regions: str = "baku", on_call: bool = False, open_cases: int = 0
) -> LawyerSlot:
    return LawyerSlot(
        i, frozenset(langs.split(",")), frozenset(regions.split(",")), on_call, open_cases
    )


def test_language_region_load_and_cap() -> None:
    lawyers = [
        slot(1, open_cases=3),
        slot(2, open_cases=1),
        slot(3, "ru", open_cases=0),
        slot(4, regions="ganja"),
    ]
    case = CaseNeeds(Priority.P3, "az", "baku")
    assert choose_lawyer(case, lawyers) == lawyers[1]
    assert choose_lawyer(case, lawyers, tried={2}) == lawyers[0]
    assert choose_lawyer(case, lawyers, tried={2}, cap=3) is None
    assert (
        choose_lawyer(CaseNeeds(Priority.P3, "az", "other"), [*lawyers, slot(5, regions="all")]).id
        == 5
    )


def test_p1_goes_on_call_first_then_anyone() -> None:
    lawyers = [slot(1, open_cases=0), slot(2, on_call=True, open_cases=5)]
    assert choose_lawyer(CaseNeeds(Priority.P1, "az", "baku"), lawyers).id == 2  # type: ignore[union-attr]
    assert choose_lawyer(CaseNeeds(Priority.P2, "az", "baku"), lawyers).id == 1  # type: ignore[union-attr]
    assert choose_lawyer(CaseNeeds(Priority.P1, "az", "baku"), lawyers, tried={2}).id == 1  # type: ignore[union-attr]


def test_escalation_windows() -> None:
    t = datetime(2026, 11, 1, tzinfo=UTC)
    assert not overdue(Priority.P1, t, t + timedelta(minutes=14, seconds=59))
    assert overdue(Priority.P1, t, t + timedelta(minutes=15))
    assert overdue(Priority.P2, t, t + timedelta(hours=2)) and not overdue(
        Priority.P2, t, t + timedelta(hours=1)
    )
    assert overdue(Priority.P3, t, t + timedelta(hours=24))
    assert not overdue(Priority.P4, t, t + timedelta(days=30)), "P4 goes to the digest"


lawyer_st = st.builds(
    LawyerSlot,
    st.integers(0, 40),
    st.frozensets(st.sampled_from(["az", "ru", "en"]), min_size=1),
    st.frozensets(st.sampled_from(["baku", "ganja", "sumgait", "other", "all"]), min_size=1),
    st.booleans(),
    st.integers(0, 12),
)


@given(
    lawyers=st.lists(lawyer_st, max_size=30, unique_by=lambda x: x.id),
    priority=st.sampled_from(list(Priority)),
    language=st.sampled_from(["az", "ru", "en"]),
    region=st.sampled_from(["baku", "ganja", "sumgait", "other", "mingachevir"]),
    tried=st.frozensets(st.integers(0, 40)),
    cap=st.integers(1, 12),
)
def test_index_agrees_with_the_definition(
    lawyers: list[LawyerSlot],
    priority: Priority,
    language: str,
    region: str,
    tried: frozenset[int],
    cap: int,
) -> None:
    case = CaseNeeds(priority, language, region)
    expected = choose_lawyer(case, lawyers, tried=tried, cap=cap)
    assert Roster(lawyers).choose(case, tried=tried, cap=cap) == expected
