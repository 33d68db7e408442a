"""A chart of the advocacy statistics that an advocate can put in a report."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window

from matplotlib import pyplot as plt

from bot.domain.stats import Cell


def reports_chart(cells: Sequence[Cell], threshold: int, path: Path) -> None:
    """Bars of reports per week and region; suppressed cells hatched and marked ``<N``."""
    reports = [c for c in cells if c.category == "reports"]
    weeks = sorted({c.week for c in reports})
    regions = sorted({c.region for c in reports})
    width = 0.8 / max(len(regions), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(weeks) + 2), 4.5), dpi=150)
    for index, region in enumerate(regions):
        for w, week in enumerate(weeks):
            cell = next((c for c in reports if c.week == week and c.region == region), None)
            if cell is None:
                continue
            x = w + (index - (len(regions) - 1) / 2) * width
            colour = f"C{index % 10}"
            if cell.suppressed:
                ax.bar(x, threshold, width, color="white", edgecolor=colour, hatch="//")
            else:
                ax.bar(x, int(cell.shown), width, color=colour)
            ax.annotate(
                cell.shown,
                (x, threshold if cell.suppressed else int(cell.shown)),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        ax.bar(0, 0, 0, color=f"C{index % 10}", label=region.capitalize())
    ax.set_xticks(range(len(weeks)), [w.isoformat() for w in weeks], rotation=30, ha="right")
    ax.set_ylabel("reports")
    ax.set_xlabel("week starting")
    ax.set_title(f"Reports per week and region (counts under {threshold} shown as <{threshold})")
    if regions:
        ax.legend(title="region")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
