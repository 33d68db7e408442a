"""Advocacy statistics: small cells suppressed, and suppression that subtraction cannot undo.

Each week and region is one small table: ``reports`` is the total, the ``situation.*`` counts
add up to it (each report has one situation), and each ``what.*`` count is at most it (a
report may name several things). Every count from 1 to ``threshold - 1`` is shown as
``<threshold`` (primary suppression). That alone can be undone: ``reports 6``, ``released 5``
and ``detained_now <5`` give ``detained_now = 1``. So suppression is *complementary*: while an
attacker who knows these relations could still pin a suppressed count to one value, more
counts are withheld (shown as ``x``; each is at least ``threshold``), the smallest first; a
table that even full suppression cannot protect (two situations under a total of 2: every row is
at least 1) is published as its total alone.
Rounding to multiples of 5 was the alternative; it fails here: four situations each rounded
down from 2 to 0 under a total rounded up from 8 to 10 pin every one of them to 2.

The attacker this defends against knows every published table, which rows exist (a count is at
least 1), the relations above, that ``<threshold`` is 1 to ``threshold - 1`` and that ``x`` is
at least ``threshold``. Aggregates elsewhere (the PDF's weekly bars and its table by region) are
computed only from counts shown here, so they tell nothing this table does not.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

DEFAULT_THRESHOLD = 5
#: The smallest threshold suppression can protect: below it ``<2`` would say exactly 1.
MIN_THRESHOLD = 3
#: How a count withheld to protect a small one is shown.
WITHHELD = "x"
TOTAL = "reports"


class Mark(StrEnum):
    """How a count is published."""

    SHOWN = "shown"
    #: 1 to threshold - 1: shown as ``<threshold``.
    SMALL = "small"
    #: Withheld so that a small count cannot be worked out: shown as ``x``.
    WITHHELD = "withheld"
    #: Not published at all: a table no withholding can protect is published as its total.
    OMITTED = "omitted"


@dataclass(frozen=True, slots=True)
class Group:
    """One table's relations: ``parts`` add up to ``total``, each of ``subs`` is at most it."""

    total: str | None
    parts: tuple[str, ...]
    subs: tuple[str, ...]

    def names(self) -> tuple[str, ...]:
        """Every count of the group."""
        return ((self.total,) if self.total else ()) + self.parts + self.subs


#: A range an attacker can narrow a count to; ``None`` as the top: no upper bound.
Range = tuple[int, int | None]


def _box(value: int, mark: Mark, threshold: int) -> Range:
    if mark is Mark.SHOWN:
        return value, value
    if mark is Mark.SMALL:
        return 1, threshold - 1
    return threshold, None


def _add(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else a + b


def _min(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def ranges(
    values: Mapping[str, int], marks: Mapping[str, Mark], group: Group, threshold: int
) -> dict[str, Range]:
    """What an attacker can narrow each count of a group to, from what is published.

    Exact for this shape: boxes for each count, one sum (parts to total), and "at most the
    total" for subs; every integer between the bounds is reachable.
    """
    box = {n: _box(values[n], marks[n], threshold) for n in group.names()}
    sub_floor = max((box[n][0] for n in group.subs), default=0)
    if group.total is None:
        total: Range = (max(1, sub_floor), None)
    else:
        low, high = box[group.total]
        total = (max(low, sub_floor), high)
    if group.parts:
        part_low = sum(box[p][0] for p in group.parts)
        part_high: int | None = 0
        for p in group.parts:
            part_high = _add(part_high, box[p][1])
        total = (max(total[0], part_low), _min(total[1], part_high))
    out: dict[str, Range] = {}
    if group.total is not None:
        out[group.total] = total
    for p in group.parts:
        others_low = sum(box[q][0] for q in group.parts if q != p)
        others_high: int | None = 0
        for q in group.parts:
            if q != p:
                others_high = _add(others_high, box[q][1])
        low = box[p][0] if others_high is None else max(box[p][0], total[0] - others_high)
        high = box[p][1] if total[1] is None else _min(box[p][1], total[1] - others_low)
        out[p] = (low, high)
    for s in group.subs:
        out[s] = (box[s][0], _min(box[s][1], total[1]))
    return out


def _pinned(
    values: Mapping[str, int], marks: Mapping[str, Mark], group: Group, threshold: int
) -> list[str]:
    found = ranges(values, marks, group, threshold)
    return [n for n in group.names() if marks[n] is not Mark.SHOWN and found[n][0] == found[n][1]]


def protect(values: Mapping[str, int], group: Group, threshold: int) -> dict[str, Mark]:
    """Primary suppression of small counts, then complementary until none can be pinned."""
    marks = {n: Mark.SMALL if 0 < values[n] < threshold else Mark.SHOWN for n in group.names()}
    while pinned := _pinned(values, marks, group, threshold):
        shown = sorted(
            (values[n], n) for n in group.names() if marks[n] is Mark.SHOWN and values[n] > 0
        )
        if not shown:
            # Even with everything suppressed, the rows' existence pins a count (two situations
            # under a total of 2): publish the total alone.
            return {n: (marks[n] if n == group.total else Mark.OMITTED) for n in group.names()}
        # The smallest count whose withholding frees the pinned one, else the smallest of all.
        choice = shown[0][1]
        for _, name in shown:
            trial = dict(marks, **{name: Mark.WITHHELD})
            if pinned[0] not in _pinned(values, trial, group, threshold):
                choice = name
                break
        marks[choice] = Mark.WITHHELD
    return marks


def show_mark(count: int, mark: Mark, threshold: int) -> str:
    """A count as published."""
    if mark is Mark.SMALL:
        return f"<{threshold}"
    if mark is Mark.WITHHELD:
        return WITHHELD
    return str(count)


def show(count: int, threshold: int) -> str:
    """A lone count (no relation to others published) as published: ``<threshold`` if small."""
    return f"<{threshold}" if 0 < count < threshold else str(count)


@dataclass(frozen=True, slots=True)
class Cell:
    """One published count: the number, or a suppression mark."""

    week: date
    region: str
    category: str
    shown: str
    suppressed: bool
    mark: Mark = Mark.SHOWN


def stats_group(categories: Iterable[str]) -> Group:
    """The relations among one week's and region's counters."""
    names = sorted(set(categories))
    return Group(
        TOTAL if TOTAL in names else None,
        tuple(n for n in names if n.startswith("situation.")),
        tuple(n for n in names if n != TOTAL and not n.startswith("situation.")),
    )


def cells(rows: Iterable[tuple[date, str, str, int]], threshold: int) -> list[Cell]:
    """Counters as publishable cells, in week, region, category order; each week and region
    protected as one table."""
    grouped: dict[tuple[date, str], dict[str, int]] = defaultdict(dict)
    for week, region, category, count in rows:
        grouped[(week, region)][category] = count
    out: list[Cell] = []
    for (week, region), values in sorted(grouped.items()):
        group = stats_group(values)
        marks = protect(values, group, threshold)
        for category in sorted(values):
            mark = marks[category]
            if mark is Mark.OMITTED:
                continue
            if category == group.total and Mark.OMITTED in marks.values():
                mark = Mark.SMALL if values[category] < threshold else Mark.SHOWN
            shown = show_mark(values[category], mark, threshold)
            out.append(Cell(week, region, category, shown, mark is not Mark.SHOWN, mark))
    return out
