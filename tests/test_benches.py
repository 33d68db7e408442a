"""Every bench still runs: each at a tiny size, so a change to a port or a harness that breaks a
bench fails here instead of being found when the figures are next needed (bench_intake once
stood broken for a session). The figures themselves are not asserted: they are measured alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Each bench with arguments that make it run in seconds.
TINY = {
    "bench_intake": ["--reports", "4", "--block", "2"],
    "bench_keys": ["--cases", "40"],
    "bench_routing": ["--cases", "50", "--lawyers", "10"],
    "bench_signal": ["--reporters", "2", "--rounds", "3"],
    "bench_stall": ["--cases", "60"],
    "bench_telegram": [
        "--reporters",
        "2",
        "--rounds",
        "3",
        "--repeat",
        "1",
        "--no-memory",
        "--no-breakdown",
    ],
    "bench_telegram_http": ["--calls", "5", "--rounds", "1"],
}


def test_every_bench_is_listed() -> None:
    benches = {p.stem for p in (ROOT / "bench").glob("bench_*.py")}
    # bench_scale needs PostgreSQL and starts processes: tests/test_multiprocess.py drives its
    # harness.
    assert benches - {"bench_scale"} == set(TINY)


@pytest.mark.parametrize("name", sorted(TINY))
def test_the_bench_runs(name: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / f"{name}.py"), *TINY[name]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ratio" in done.stdout or "ms" in done.stdout, done.stdout
