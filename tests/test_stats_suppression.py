"""The differencing attack on published statistics fails for every table shape.

The attacker here is written independently of bot/domain/stats.py: it works on sets of values,
not intervals. It knows what the published table says, which rows exist (a count is at least
1), that ``<T`` is 1 to T-1 and ``x`` at least T, that the situations of a week and region add
up to its reports and that each ``what`` count is at most its reports. For every suppressed
count it must be left with at least two values.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import date, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.domain.advocacy import NONE, event_page, statistics_page
from bot.domain.casework import EVENT_CATEGORIES
from bot.domain.stats import WITHHELD, Cell, Mark, cells
from bot.i18n import load_texts

WEEK = date(2026, 11, 2)
SITUATIONS = ("detained_now", "released", "summoned", "other")
WHAT = ("detained", "beaten", "forced_medical", "phone_searched")
REGIONS = ("baku", "ganja", "sumgait")
TEXTS = load_texts()

Report = tuple[int, str, str, frozenset[str]]
reports = st.lists(
    st.tuples(
        st.integers(0, 2),
        st.sampled_from(REGIONS),
        st.sampled_from(SITUATIONS),
        st.frozensets(st.sampled_from(WHAT)),
    ),
    min_size=1,
    max_size=40,
)


def counters(found: list[Report]) -> list[tuple[date, str, str, int]]:
    """What intake's counters hold after these reports."""
    counts: dict[tuple[date, str, str], int] = defaultdict(int)
    for week, region, situation, what in found:
        day = WEEK + timedelta(weeks=week)
        for category in ("reports", f"situation.{situation}", *(f"what.{w}" for w in what)):
            counts[(day, region, category)] += 1
    return [(w, r, c, n) for (w, r, c), n in counts.items()]


def domain(shown: str, threshold: int, cap: int) -> set[int]:
    """The values a published count can have, as far as the attacker knows."""
    if shown == f"<{threshold}":
        return set(range(1, threshold))
    if shown == WITHHELD:
        return set(range(threshold, cap + 1))
    return {int(shown)}


def sums(domains: list[set[int]]) -> set[int]:
    out = {0}
    for values in domains:
        out = {a + b for a in out for b in values}
    return out


def attack(published: dict[str, str], threshold: int, cap: int) -> dict[str, set[int]]:
    """Every value each count of one week and region can still have."""
    dom = {name: domain(shown, threshold, cap) for name, shown in published.items()}
    if set(dom) == {"reports"}:
        return {"reports": dom["reports"]}  # rolled up: nothing but the total is known
    parts = [n for n in dom if n.startswith("situation.")]
    subs = [n for n in dom if n.startswith("what.")]
    floor = max((min(dom[s]) for s in subs), default=0)
    totals = {t for t in dom["reports"] & sums([dom[p] for p in parts]) if t >= floor}
    found = {"reports": totals}
    for p in parts:
        others = sums([dom[q] for q in parts if q != p])
        found[p] = {v for v in dom[p] if any(t - v in others for t in totals)}
    for s in subs:
        found[s] = {w for w in dom[s] if any(w <= t for t in totals)}
    return found


def by_group(shown: list[Cell]) -> dict[tuple[date, str], dict[str, Cell]]:
    groups: dict[tuple[date, str], dict[str, Cell]] = defaultdict(dict)
    for cell in shown:
        groups[(cell.week, cell.region)][cell.category] = cell
    return groups


def as_csv(shown: list[Cell]) -> list[list[str]]:
    """The CSV ``tipline stats --format csv`` writes, read back."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["week", "region", "category", "count"])
    writer.writerows((c.week.isoformat(), c.region, c.category, c.shown) for c in shown)
    return list(csv.reader(io.StringIO(buffer.getvalue())))[1:]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(found=reports, threshold=st.sampled_from([3, 5, 10]))
def test_no_suppressed_count_can_be_worked_out(found: list[Report], threshold: int) -> None:
    rows = counters(found)
    truth = {(w, r, c): n for w, r, c, n in rows}
    shown = cells(rows, threshold)
    published = {(c.week, c.region) for c in shown}
    assert published == {(w, r) for w, r, _, _ in rows}, "every week and region is published"
    # the table, the CSV and the chart all read these cells
    assert [tuple(r) for r in as_csv(shown)] == [
        (c.week.isoformat(), c.region, c.category, c.shown) for c in shown
    ]
    cap = len(found) + threshold  # more than any count: the attacker's search is complete
    for (week, region), group in by_group(shown).items():
        left = attack({n: c.shown for n, c in group.items()}, threshold, cap)
        for name, cell in group.items():
            true = truth[(week, region, name)]
            assert true in left[name], "the attack is sound"
            if cell.suppressed:
                assert len(left[name]) >= 2, f"{name}={true} worked out in {group}"
            else:
                assert cell.shown == str(true) and true >= threshold


@settings(max_examples=200, deadline=None)
@given(found=reports, threshold=st.sampled_from([3, 5]))
def test_the_pdf_adds_up_only_what_the_table_shows(found: list[Report], threshold: int) -> None:
    rows = counters(found)
    shown = cells(rows, threshold)
    page = statistics_page(TEXTS, "en", rows, threshold, WEEK)
    weekly: dict[str, list[Cell]] = defaultdict(list)
    for cell in shown:
        if cell.category == "reports":
            weekly[cell.week.isoformat()].append(cell)
    assert [b.label for b in page.bars] == sorted(weekly)
    for bar in page.bars:
        contributors = weekly[bar.label]
        least = sum(
            int(c.shown) if not c.suppressed else 1 if c.mark is Mark.SMALL else threshold
            for c in contributors
        )
        if any(c.suppressed for c in contributors):
            assert bar.shown == f"\u2265{least}" and bar.suppressed, "the least it can be"
        else:
            assert bar.shown == str(least) and not bar.suppressed, "a sum of shown counts"
    numbers = [v for row in page.rows for v in row[1:]]
    for value in numbers:
        assert value == NONE or value.startswith("\u2265") or value.isdigit()


def test_the_example_from_the_issue_no_longer_gives_detained_now_away() -> None:
    rows = [
        (WEEK, "baku", "reports", 6),
        (WEEK, "baku", "situation.released", 5),
        (WEEK, "baku", "situation.detained_now", 1),
    ]
    shown = {c.category: c.shown for c in cells(rows, 5)}
    assert shown["situation.detained_now"] == "<5"
    assert WITHHELD in (shown["reports"], shown["situation.released"])
    left = attack(shown, 5, 100)
    assert len(left["situation.detained_now"]) >= 2


@given(
    counts=st.fixed_dictionaries(
        {"people": st.integers(1, 30)},
        optional={c: st.integers(1, 30) for c in EVENT_CATEGORIES if c != "people"},
    ),
    threshold=st.sampled_from([3, 5]),
)
def test_an_event_page_hides_its_small_counts(counts: dict[str, int], threshold: int) -> None:
    counts = {c: min(n, counts["people"]) for c, n in counts.items()}
    page = event_page(
        TEXTS,
        "en",
        number=17,
        city="Baku",
        start=WEEK,
        end=WEEK,
        counts=counts,
        threshold=threshold,
        generated=WEEK,
    )
    published = dict(zip(EVENT_CATEGORIES, (r[1] for r in page.rows), strict=True))
    cap = counts["people"] + threshold
    dom = {c: domain(v, threshold, cap) for c, v in published.items() if v != NONE}
    floor = max(min(v) for v in dom.values())
    totals = {t for t in dom["people"] if t >= floor}
    for category, values in dom.items():
        left = totals if category == "people" else {w for w in values if w <= max(totals)}
        assert counts.get(category, 0) in left
        if published[category] in (f"<{threshold}", WITHHELD):
            assert len(left) >= 2, f"{category} worked out from {published}"
