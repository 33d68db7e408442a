"""Advocacy statistics: small cells are suppressed so that no count points at a person."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

DEFAULT_THRESHOLD = 5


@dataclass(frozen=True, slots=True)
class Cell:
    """One published count: the number, or a suppression mark."""

    week: date
    region: str
    category: str
    shown: str
    suppressed: bool


def show(count: int, threshold: int) -> str:
    """A count as published: ``<threshold`` for small non-zero cells."""
    return f"<{threshold}" if 0 < count < threshold else str(count)


def cells(rows: Iterable[tuple[date, str, str, int]], threshold: int) -> list[Cell]:
    """Counters as publishable cells, in week, region, category order."""
    return [
        Cell(week, region, category, show(count, threshold), 0 < count < threshold)
        for week, region, category, count in sorted(rows)
    ]
