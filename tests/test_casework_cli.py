"""Casework from the admin's command line, in subprocesses: the evidence package written and
verified (and refused when another instance signed it or a file changed), events listed, shown
and linked, the advocacy report as a PDF in the chosen language with no small count in it, and a
malformed deadline table stopping the start with one line."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import re
import sqlite3
import stat
import subprocess
import sys
import zipfile
from contextlib import redirect_stderr, redirect_stdout
from datetime import date
from pathlib import Path

import matplotlib
import numpy as np
import pypdfium2
from PIL import Image
from pypdf import PdfReader

from bot.cli import main
from bot.config import Settings
from bot.i18n import load_texts
from bot.report_pdf import FONT
from bot.runtime import open_runtime
from tests.test_console_e2e import FULL_REPORT, assert_one_line_error, env, initialised, tipline
from tests.test_console_e2e import tipline as subprocess_tipline

matplotlib.use("Agg")
from matplotlib import pyplot as plt

__all__ = ["env", "initialised"]  # fixtures shared with the console tests


def tipline(  # noqa: F811 - in-process here: a subprocess per command costs two seconds
    environ: dict[str, str], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``tipline ARGS`` run in this process through the real entry point (one-line errors)."""
    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_argv, saved_umask = dict(os.environ), sys.argv, os.umask(0o077)
    root = logging.getLogger()
    saved_level, saved_handlers = root.level, list(root.handlers)
    os.environ.clear()
    os.environ.update(environ)
    sys.argv = ["tipline", *args]
    code = 0
    try:
        with contextlib.chdir(cwd or Path.cwd()), redirect_stdout(out), redirect_stderr(err):
            try:
                main()
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        sys.argv = saved_argv
        os.umask(saved_umask)
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def _settings(environ: dict[str, str]) -> Settings:
    return Settings(
        data_dir=Path(environ["TIPLINE_DATA_DIR"]),
        root_key_file=Path(environ["TIPLINE_ROOT_KEY_FILE"]),
    )


def new_event(environ: dict[str, str], city: str, start: date) -> int:
    """An event as a lawyer's ``/event new`` makes it (the CLI has no command for it)."""

    async def make() -> int:
        runtime = await open_runtime(_settings(environ))
        try:
            async with runtime.uow() as uow:
                event = await uow.casework.new_event(
                    city=city, city_key=None, start=start, end=start, created_on=start
                )
                await uow.commit()
            return event.number
        finally:
            await runtime.close()

    return asyncio.run(make())


def only_case(initialised: dict[str, str], tmp_path: Path) -> str:
    """The number of the one case (numbers are random): from ``tipline cases list``."""
    listing = tipline(initialised, "cases", "list", cwd=tmp_path).stdout.splitlines()
    assert len(listing) == 2, listing
    return listing[1].split()[0].removeprefix("#")


def test_export_verify_and_refusals(initialised: dict[str, str], tmp_path: Path) -> None:
    report = subprocess_tipline(
        initialised, "console", stdin="\n".join(FULL_REPORT) + "\n", cwd=tmp_path
    )
    assert report.returncode == 0, report.stderr
    case = only_case(initialised, tmp_path)
    package = tmp_path / "case.zip"
    written = tipline(initialised, "cases", "export", case, "--to", str(package), cwd=tmp_path)
    assert written.returncode == 0, written.stderr
    assert stat.S_IMODE(package.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.zip", "var"], "no temp file"
    verified = tipline(initialised, "export", "verify", str(package), cwd=tmp_path)
    assert verified.returncode == 0, verified.stderr
    assert f"verified: case #{case}, 2 files" in verified.stdout
    status = tipline(initialised, "keys", "status", cwd=tmp_path)
    key = re.search(
        r"instance signing key \(Ed25519, public; evidence packages\): (\w{64})", status.stdout
    )
    assert key, status.stdout
    with zipfile.ZipFile(package) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        members = {n: archive.read(n) for n in archive.namelist()}
    assert manifest["signature"]["public_key"] == key.group(1)
    # another instance does not vouch for it; with this instance's key given, anyone can check
    other = dict(initialised, TIPLINE_DATA_DIR=str(tmp_path / "other"))
    other["TIPLINE_ROOT_KEY_FILE"] = str(tmp_path / "other" / "root.key")
    assert subprocess_tipline(other, "init", "--dev", cwd=tmp_path).returncode == 0
    refused = tipline(other, "export", "verify", str(package), cwd=tmp_path)
    assert_one_line_error(refused, "manifest.sig is by another instance")
    by_key = tipline(
        other, "export", "verify", str(package), "--public-key", key.group(1), cwd=tmp_path
    )
    assert by_key.returncode == 0, by_key.stderr
    # one changed byte in the page
    tampered = tmp_path / "tampered.zip"
    page = bytearray(members["case.html"])
    page[100] ^= 0x20
    with zipfile.ZipFile(tampered, "w") as archive:
        for name, data in (members | {"case.html": bytes(page)}).items():
            archive.writestr(name, data)
    assert_one_line_error(
        tipline(initialised, "export", "verify", str(tampered), cwd=tmp_path),
        "case.html does not match its SHA-256 hash",
    )
    assert_one_line_error(
        tipline(initialised, "cases", "export", case, "--to", str(package), cwd=tmp_path),
        "exists already",
    )
    assert_one_line_error(
        tipline(initialised, "cases", "export", "9", "--to", str(tmp_path / "x"), cwd=tmp_path),
        "there is no case #9",
    )
    assert not (tmp_path / "x").exists()


def test_events_list_show_link(initialised: dict[str, str], tmp_path: Path) -> None:
    report = subprocess_tipline(
        initialised, "console", stdin="\n".join(FULL_REPORT) + "\n", cwd=tmp_path
    )
    assert report.returncode == 0, report.stderr
    assert tipline(initialised, "events", "list", cwd=tmp_path).stdout.strip() == (
        "tipline: no events yet"
    )
    number = new_event(initialised, "Baku", date(2026, 11, 2))
    case = only_case(initialised, tmp_path)
    linked = tipline(initialised, "events", "link", str(number), case, cwd=tmp_path)
    assert linked.returncode == 0 and f"case #{case} linked to event {number}" in linked.stdout
    assert_one_line_error(
        tipline(initialised, "events", "link", str(number), case, cwd=tmp_path),
        f"case #{case} is already linked to event {number}",
    )
    listed = tipline(initialised, "events", "list", cwd=tmp_path).stdout.splitlines()
    assert listed[1].split() == [str(number), "Baku", "2026-11-02", "2026-11-02", "1", "<5"]
    shown = tipline(initialised, "events", "show", str(number), cwd=tmp_path).stdout
    assert "people          <5" in shown and f"cases linked now: #{case}" in shown
    assert_one_line_error(
        tipline(initialised, "events", "show", "1", cwd=tmp_path), "there is no event 1"
    )


# ---- the advocacy report -----------------------------------------------------------------


def _gray(pdf: bytes, scale: float = 2.0) -> np.ndarray:
    document = pypdfium2.PdfDocument(pdf)
    try:
        assert len(document) == 1, "one page"
        image = document[0].render(scale=scale).to_pil().convert("L")
    finally:
        document.close()
    return np.asarray(image, dtype=np.float64)


def _ink(gray: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(gray < 128)
    assert rows.size, "nothing drawn there"
    return gray[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def _title_alone(title: str) -> np.ndarray:
    """The title rendered the same way on its own: the picture it should make on the page."""
    buffer = io.BytesIO()
    with plt.rc_context({"pdf.fonttype": 42, "font.family": FONT}):
        fig = plt.figure(figsize=(8.27, 0.6))
        fig.text(0.5, 0.5, title, ha="center", va="center", fontsize=15, weight="bold")
        fig.savefig(buffer, format="pdf")
        plt.close(fig)
    return _ink(_gray(buffer.getvalue()))


def _likeness(a: np.ndarray, b: np.ndarray) -> float:
    resized = np.asarray(
        Image.fromarray(b.astype(np.uint8)).resize((a.shape[1], a.shape[0])), dtype=np.float64
    )
    return float(np.corrcoef(a.ravel(), resized.ravel())[0, 1])


def assert_title_drawn(pdf: Path, title: str, others: list[str]) -> None:
    page = _gray(pdf.read_bytes())
    drawn = _ink(page[: int(page.shape[0] * 0.07)])  # the band above the subtitle
    likeness = _likeness(drawn, _title_alone(title))
    assert likeness > 0.9, likeness
    for other in others:
        assert _likeness(drawn, _title_alone(other)) < likeness - 0.2, other


def small_counts_in_text(pdf: Path, threshold: int) -> list[str]:
    text = "\n".join(page.extract_text() or "" for page in PdfReader(pdf).pages)
    return [t for t in text.split() if t.isdigit() and 0 < int(t) < threshold]


def test_stats_pdf_in_the_chosen_language_with_no_small_count(
    initialised: dict[str, str], tmp_path: Path
) -> None:
    db = sqlite3.connect(tmp_path / "var" / "tipline.db")
    rows = [
        ("2026-10-26", "baku", "reports", 7),
        ("2026-11-02", "baku", "reports", 2),
        ("2026-11-02", "ganja", "reports", 1),
        ("2026-10-26", "baku", "what.detained", 9),
        ("2026-11-02", "baku", "what.detained", 3),
        ("2026-10-26", "baku", "what.forced_medical", 4),
        ("2026-11-02", "ganja", "what.beaten", 1),
    ]
    db.executemany(
        "INSERT INTO stat_counters (week, region, category, count) VALUES (?, ?, ?, ?)", rows
    )
    db.commit()
    db.close()
    texts = load_texts()
    titles = {lang: texts.get(lang, "report.title") for lang in ("en", "ru", "az")}
    for language in ("ru", "az"):
        pdf = tmp_path / f"report-{language}.pdf"
        made = tipline(
            initialised,
            "stats",
            "--format",
            "pdf",
            "--output",
            str(pdf),
            "--language",
            language,
            cwd=tmp_path,
        )
        assert made.returncode == 0, made.stderr
        assert pdf.read_bytes().startswith(b"%PDF")
        assert_title_drawn(pdf, titles[language], [t for k, t in titles.items() if k != language])
        text = " ".join(page.extract_text() or "" for page in PdfReader(pdf).pages)
        assert titles[language] in text and "<5" in text
        assert texts.get(language, "opt.what_happened.detained") in text
        assert "7" in text.split(), "counts at the threshold are shown"
        # detained in Baku: 9 and <5 over the weeks; a sum with a hidden count is its least
        assert "\u226510" in text.split() and "12" not in text.split()
        assert small_counts_in_text(pdf, 5) == []
    assert_one_line_error(
        tipline(initialised, "stats", "--format", "pdf", cwd=tmp_path), "needs --output"
    )
    assert_one_line_error(
        tipline(
            initialised,
            "stats",
            "--format",
            "pdf",
            "--output",
            "x.pdf",
            "--language",
            "de",
            cwd=tmp_path,
        ),
        "--language must be one of",
    )


def test_stats_pdf_of_one_event(initialised: dict[str, str], tmp_path: Path) -> None:
    number = new_event(initialised, "Bakı", date(2017, 9, 12))
    db = sqlite3.connect(tmp_path / "var" / "tipline.db")
    (event_id,) = db.execute("SELECT id FROM events WHERE number = ?", (number,)).fetchone()
    db.executemany(
        "INSERT INTO event_counters (event_id, category, count) VALUES (?, ?, ?)",
        [(event_id, "people", 50), (event_id, "detained", 50), (event_id, "under18", 2)],
    )
    db.commit()
    db.close()
    pdf = tmp_path / "event.pdf"
    made = tipline(
        initialised,
        "stats",
        "--format",
        "pdf",
        "--event",
        str(number),
        "--output",
        str(pdf),
        "--language",
        "en",
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr
    title = f"Event {number}: Bakı, 2017-09-12 to 2017-09-12"
    assert_title_drawn(pdf, title, ["Reports of police abuse against LGBTI people"])
    text = " ".join(page.extract_text() or "" for page in PdfReader(pdf).pages)
    assert "50" in text.split() and "Under 18" in text and "<5" in text
    assert small_counts_in_text(pdf, 5) == []
    table = tipline(initialised, "stats", "--event", str(number), cwd=tmp_path)
    assert table.returncode == 0 and "People" in table.stdout and "<5" in table.stdout


def test_a_malformed_deadline_table_stops_the_start_with_one_line(
    env: dict[str, str], tmp_path: Path
) -> None:
    bad = tmp_path / "deadlines.toml"
    bad.write_text('[kinds.fine]\nwords = ["fine"]\nlabel = { en = "fine" }\n')
    result = subprocess_tipline(dict(env, TIPLINE_DEADLINES_FILE=str(bad)), "run", cwd=tmp_path)
    assert_one_line_error(result, f"deadline table {bad}: no [[deadlines]]")
