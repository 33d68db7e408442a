"""The advocacy report as a one-page PDF (matplotlib's PDF backend): title, chart, table, and
how small counts were suppressed. Text is embedded as TrueType, so the page can be searched and
read aloud; the chart's axis carries no numbers, only the (suppressed) values on the bars."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window

from matplotlib import pyplot as plt
from matplotlib.figure import Figure

from bot.domain.advocacy import Page

A4 = (8.27, 11.69)
#: DejaVu Sans (matplotlib's own) has the Azerbaijani and Cyrillic letters.
FONT = "DejaVu Sans"


def write_pdf(page: Page, path: Path) -> None:
    """Write ``page`` as a one-page PDF."""
    with plt.rc_context({"pdf.fonttype": 42, "font.family": FONT}):
        fig = plt.figure(figsize=A4)
        try:
            _draw(fig, page)
            fig.savefig(path, format="pdf", metadata={"Creator": "tipline", "Producer": None})
        finally:
            plt.close(fig)


def _draw(fig: Figure, page: Page) -> None:
    fig.text(0.5, 0.955, page.title, ha="center", va="top", fontsize=15, weight="bold")
    fig.text(0.5, 0.925, page.subtitle, ha="center", va="top", fontsize=9, color="0.3")
    chart = fig.add_axes((0.12, 0.56, 0.8, 0.31))
    chart.set_title(page.chart_title, fontsize=11)
    positions = range(len(page.bars))
    for x, bar in zip(positions, page.bars, strict=True):
        if bar.suppressed:
            chart.bar(x, bar.value, 0.7, color="white", edgecolor="C0", hatch="//")
        else:
            chart.bar(x, bar.value, 0.7, color="C0")
        chart.annotate(bar.shown, (x, bar.value), ha="center", va="bottom", fontsize=8)
    rotate = len(page.bars) > 4
    chart.set_xticks(
        list(positions),
        [b.label for b in page.bars],
        rotation=30 if rotate else 0,
        ha="right" if rotate else "center",
        fontsize=8,
    )
    chart.set_yticks([])  # the axis would print every small number up to the tallest bar
    chart.set_xlabel(page.chart_axis, fontsize=9)
    top = max((b.value for b in page.bars), default=0)
    chart.set_ylim(0, max(top, page.threshold) * 1.2)
    for side in ("top", "right", "left"):
        chart.spines[side].set_visible(False)
    table_axes = fig.add_axes((0.08, 0.14, 0.84, 0.3))
    table_axes.axis("off")
    table_axes.set_title(page.table_title, fontsize=11)
    if page.rows:
        table = table_axes.table(
            cellText=[list(r) for r in page.rows],
            colLabels=list(page.header),
            loc="upper center",
            cellLoc="left",
        )
        table.auto_set_font_size(False)
        table.set_fontsize(8)
        table.scale(1, 1.3)
    method = "\n".join(textwrap.wrap(page.method, 110))
    fig.text(0.08, 0.08, method, ha="left", va="top", fontsize=8, color="0.2")
