"""The one-page report advocates can publish, as data: what its chart and table show.

Only counters go in (the statistics by week, region and category, or an event's counters),
never a case. Every count is first protected as ``tipline stats`` publishes it
(bot/domain/stats.py: ``<threshold`` for small counts, ``x`` for counts withheld so that a small
one cannot be worked out). The chart (reports per week, over regions) and the table (what
happened, by region, over weeks) add up only counts published there: a sum with a suppressed
count in it is shown as ``>=N``, the least it can be, which the published counts already tell.
No totals are printed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from bot.domain.casework import EVENT_CATEGORIES
from bot.domain.questionnaire import WHAT_HAPPENED
from bot.domain.stats import TOTAL, Group, Mark, cells, protect, show_mark
from bot.domain.texts import Texts

NONE = "\u2013"  # an en dash: nothing to count


@dataclass(frozen=True, slots=True)
class Bar:
    """One bar of the chart: its label, the count shown, and whether it is suppressed."""

    label: str
    shown: str
    value: int
    suppressed: bool


@dataclass(frozen=True, slots=True)
class Page:
    """Everything the page shows, already translated and suppressed."""

    title: str
    subtitle: str
    chart_title: str
    chart_axis: str
    bars: tuple[Bar, ...]
    table_title: str
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    method: str
    threshold: int


def shown(count: int, threshold: int) -> str:
    """A count as published: a dash for none, ``<threshold`` when small."""
    if count <= 0:
        return NONE
    return f"<{threshold}" if count < threshold else str(count)


def _region(texts: Texts, language: str, region: str) -> str:
    return texts.find(language, f"opt.city.{region}") or region


def _sum(published: list[tuple[int, Mark]], threshold: int) -> tuple[str, int, bool]:
    """A sum of published counts: exact when all are shown, else the least it can be."""
    if all(mark is Mark.SHOWN for _, mark in published):
        total = sum(count for count, _ in published)
        return (NONE if total <= 0 else str(total)), total, False
    least = sum(
        count if mark is Mark.SHOWN else 1 if mark is Mark.SMALL else threshold
        for count, mark in published
    )
    return f"\u2265{least}", least, True


def statistics_page(
    texts: Texts,
    language: str,
    rows: Iterable[tuple[date, str, str, int]],
    threshold: int,
    generated: date,
) -> Page:
    """The report over every counter: reports per week, and what happened by region."""
    t = texts.get
    weekly: dict[date, list[tuple[int, Mark]]] = defaultdict(list)
    table: dict[tuple[str, str], list[tuple[int, Mark]]] = defaultdict(list)
    regions: set[str] = set()
    counts = {(w, r, c): n for w, r, c, n in rows}
    for cell in cells(((w, r, c, n) for (w, r, c), n in counts.items()), threshold):
        count = counts[(cell.week, cell.region, cell.category)]
        if cell.category == TOTAL:
            weekly[cell.week].append((count, cell.mark))
        elif cell.category.startswith("what."):
            table[(cell.category.removeprefix("what."), cell.region)].append((count, cell.mark))
            regions.add(cell.region)
    ordered = sorted(regions)
    header = (
        t(language, "report.col_what"),
        *(_region(texts, language, r) for r in ordered),
    )
    body = tuple(
        (
            t(language, f"opt.what_happened.{what}"),
            *(_sum(table.get((what, r), []), threshold)[0] for r in ordered),
        )
        for what in WHAT_HAPPENED
        if any(table.get((what, r)) for r in ordered)
    )
    weeks = sorted(weekly)
    period = f"{weeks[0].isoformat()} {NONE} {weeks[-1].isoformat()}" if weeks else NONE
    return Page(
        title=t(language, "report.title"),
        subtitle=t(language, "report.subtitle", period=period, generated=generated.isoformat()),
        chart_title=t(language, "report.chart_weeks"),
        chart_axis=t(language, "report.axis_week"),
        bars=tuple(Bar(w.isoformat(), *_sum(weekly[w], threshold)) for w in weeks),
        table_title=t(language, "report.table_what"),
        header=header,
        rows=body,
        method=t(language, "report.method", threshold=threshold),
        threshold=threshold,
    )


def event_page(
    texts: Texts,
    language: str,
    *,
    number: int,
    city: str,
    start: date,
    end: date,
    counts: Mapping[str, int],
    threshold: int,
    generated: date,
) -> Page:
    """The report of one event (raid): its counters as a chart and a table."""
    t = texts.get
    categories: Sequence[str] = EVENT_CATEGORIES
    labels = {c: t(language, f"event.cat.{c}") for c in categories}
    values = {c: counts.get(c, 0) for c in categories}
    # "people" is the event's total; every other count is at most it.
    marks = protect(
        values, Group("people", (), tuple(c for c in categories if c != "people")), threshold
    )

    def published(c: str) -> str:
        return NONE if values[c] <= 0 else show_mark(values[c], marks[c], threshold)

    def bar(c: str) -> Bar:
        mark = marks[c]
        height = values[c] if mark is Mark.SHOWN else threshold
        return Bar(labels[c], published(c), height, mark is not Mark.SHOWN)

    return Page(
        title=t(
            language,
            "report.title_event",
            number=number,
            city=city,
            start=start.isoformat(),
            end=end.isoformat(),
        ),
        subtitle=t(language, "report.subtitle_event", generated=generated.isoformat()),
        chart_title=t(language, "report.chart_event"),
        chart_axis="",
        bars=tuple(bar(c) for c in categories),
        table_title=t(language, "report.table_event"),
        header=(t(language, "report.col_category"), t(language, "report.col_count")),
        rows=tuple((labels[c], published(c)) for c in categories),
        method=t(language, "report.method", threshold=threshold),
        threshold=threshold,
    )
