"""The one-page report advocates can publish, as data: what its chart and table show.

Only counters go in (the statistics by week, region and category, or an event's counters),
never a case. Every count from 1 to ``threshold - 1`` is shown as ``<threshold``, zero as a
dash, and no totals are printed: the chart (reports per week) and the table (what happened, by
region) never add up to one another, so a hidden count cannot be worked out by subtraction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from bot.domain.casework import EVENT_CATEGORIES
from bot.domain.questionnaire import WHAT_HAPPENED
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


def _bar(label: str, count: int, threshold: int) -> Bar:
    small = 0 < count < threshold
    # A suppressed bar is drawn at the threshold's height: its height must tell nothing either.
    return Bar(label, shown(count, threshold), threshold if small else count, small)


def _region(texts: Texts, language: str, region: str) -> str:
    return texts.find(language, f"opt.city.{region}") or region


def statistics_page(
    texts: Texts,
    language: str,
    rows: Iterable[tuple[date, str, str, int]],
    threshold: int,
    generated: date,
) -> Page:
    """The report over every counter: reports per week, and what happened by region."""
    t = texts.get
    weekly: dict[date, int] = defaultdict(int)
    table: dict[tuple[str, str], int] = defaultdict(int)
    regions: set[str] = set()
    for week, region, category, count in rows:
        if category == "reports":
            weekly[week] += count
        elif category.startswith("what."):
            table[(category.removeprefix("what."), region)] += count
            regions.add(region)
    ordered = sorted(regions)
    header = (
        t(language, "report.col_what"),
        *(_region(texts, language, r) for r in ordered),
    )
    body = tuple(
        (
            t(language, f"opt.what_happened.{what}"),
            *(shown(table.get((what, r), 0), threshold) for r in ordered),
        )
        for what in WHAT_HAPPENED
        if any(table.get((what, r), 0) for r in ordered)
    )
    weeks = sorted(weekly)
    period = f"{weeks[0].isoformat()} {NONE} {weeks[-1].isoformat()}" if weeks else NONE
    return Page(
        title=t(language, "report.title"),
        subtitle=t(language, "report.subtitle", period=period, generated=generated.isoformat()),
        chart_title=t(language, "report.chart_weeks"),
        chart_axis=t(language, "report.axis_week"),
        bars=tuple(_bar(w.isoformat(), weekly[w], threshold) for w in weeks),
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
        bars=tuple(_bar(labels[c], counts.get(c, 0), threshold) for c in categories),
        table_title=t(language, "report.table_event"),
        header=(t(language, "report.col_category"), t(language, "report.col_count")),
        rows=tuple((labels[c], shown(counts.get(c, 0), threshold)) for c in categories),
        method=t(language, "report.method", threshold=threshold),
        threshold=threshold,
    )
