"""The console and the commands end to end, in subprocesses, as an admin or reporter runs them."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import CANARY

CODE = re.compile(r"\b[A-Z2-7]{4}(?:-[A-Z2-7]{4}){3}\b")

#: Numbered answers for a full report (detained right now), with the canary in every text step.
FULL_REPORT = [
    "3",  # English
    "1",  # consent
    "1",  # about me
    "1",  # detained right now
    f"Station 4 {CANARY}",
    "2",  # held since earlier today
    "1",  # Baku
    f"Yasamal {CANARY}",
    "1,2,5",
    "2",  # injured: no
    "2",  # under 18: no
    "1",  # lawyer urgently
    f"They took my phone {CANARY}",
    "1",  # documents: continue
    "2",  # contact: check back with code
    "1",  # submit
]


def tipline(
    env: dict[str, str], *args: str, stdin: str = "", cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
        check=False,
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TIPLINE_")}
    base.update(
        TIPLINE_DATA_DIR=str(tmp_path / "var"),
        TIPLINE_ROOT_KEY_FILE=str(tmp_path / "var" / "root.key"),
        TIPLINE_LOG_LEVEL="DEBUG",
        PYTHONPATH=str(Path(__file__).resolve().parents[1]),
    )
    return base


@pytest.fixture
def initialised(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    result = tipline(env, "init", "--dev", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "initialised" in result.stdout
    return env


def assert_one_line_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = [
        line
        for line in result.stderr.splitlines()
        if line.startswith("tipline:") and not line.startswith("tipline: warning:")
    ]
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0]


def test_full_report_then_status(initialised: dict[str, str], tmp_path: Path) -> None:
    run = tipline(initialised, "console", stdin="\n".join(FULL_REPORT) + "\n", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    codes = CODE.findall(run.stdout)
    assert len(codes) == 1, run.stdout
    assert CANARY not in run.stdout, "typed words are never echoed back"
    assert run.stdout.rstrip().endswith("Goodbye.")
    for secret in (CANARY, codes[0]):
        assert secret not in run.stderr, "logs at DEBUG hold no content or receipt"
    for path in (tmp_path / "var").iterdir():
        data = path.read_bytes()
        assert CANARY.encode() not in data, path.name
        assert codes[0].replace("-", "").encode() not in data, path.name

    status = tipline(
        initialised, "console", stdin=f"status {codes[0].lower()}\nquit\n", cwd=tmp_path
    )
    assert status.returncode == 0
    assert "Your report has been received and is waiting for a lawyer." in status.stdout
    unknown = tipline(
        initialised, "console", stdin="status AAAA-BBBB-CCCC-DDDD\nquit\n", cwd=tmp_path
    )
    assert "No report was found for this code." in unknown.stdout


def test_bad_answers_get_calm_messages_and_lose_nothing(
    initialised: dict[str, str], tmp_path: Path
) -> None:
    lines = ["3", "1", "1", "7", "", "1", "x" * 100_000, "   "]
    run = tipline(initialised, "console", stdin="\n".join(lines) + "\n", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    out = run.stdout
    assert out.count("Sorry, I did not understand that.") == 2  # "7" and ""
    assert "That is longer than 300 characters." in out
    assert "The answer is empty." in out
    # Ctrl-D (end of input) in the middle: the draft is kept and resumes next time.
    assert "Your unfinished answers are kept for 24 hours." in out
    again = tipline(initialised, "console", stdin="Station 1\n", cwd=tmp_path)
    assert "Welcome back." in again.stdout
    assert "Since when?" in again.stdout


def test_stop_deletes_and_help_and_language(initialised: dict[str, str], tmp_path: Path) -> None:
    run = tipline(initialised, "console", stdin="3\nhelp\nlanguage\n2\nstop\n", cwd=tmp_path)
    assert run.returncode == 0
    assert "Commands: status CODE" in run.stdout
    assert "Это конфиденциальная линия" in run.stdout
    assert "Остановлено. Ваши ответы удалены;" in run.stdout
    again = tipline(initialised, "console", stdin="", cwd=tmp_path)
    assert "Welcome back" not in again.stdout


def test_missing_root_key_is_one_line(env: dict[str, str], tmp_path: Path) -> None:
    tipline(env, "init", "--dev", cwd=tmp_path)
    del env["TIPLINE_ROOT_KEY_FILE"]
    assert_one_line_error(tipline(env, "console", cwd=tmp_path), "locked: no root key")


def test_wrong_passphrase_is_one_line(env: dict[str, str], tmp_path: Path) -> None:
    del env["TIPLINE_ROOT_KEY_FILE"]
    env.update(
        TIPLINE_ARGON2_MEMORY_KIB="64",
        TIPLINE_ARGON2_ITERATIONS="1",
        TIPLINE_ARGON2_LANES="1",
        TIPLINE_PROFILE="test",
    )
    secret = tmp_path / "passphrase"
    secret.write_text("a long and good passphrase\n")
    env["TIPLINE_PASSPHRASE_FILE"] = str(secret)
    assert tipline(env, "init", cwd=tmp_path).returncode == 0
    ok = tipline(env, "console", stdin="3\n1\n", cwd=tmp_path)
    assert ok.returncode == 0 and "Who is this report about?" in ok.stdout
    secret.write_text("a long and WRONG passphrase\n")
    assert_one_line_error(tipline(env, "console", cwd=tmp_path), "does not open the keyring")
    secret.write_text("short\n")
    assert_one_line_error(tipline(env, "console", cwd=tmp_path), "at least 12 characters")
    # the draft made with the right passphrase is still there
    secret.write_text("a long and good passphrase\n")
    assert "Welcome back." in tipline(env, "console", stdin="", cwd=tmp_path).stdout


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_database_that_does_not_answer(initialised: dict[str, str], tmp_path: Path) -> None:
    initialised["TIPLINE_DATABASE_URL"] = (
        f"postgresql+asyncpg://tipline:hunter2@127.0.0.1:{_closed_port()}/tipline"
    )
    result = tipline(initialised, "console", cwd=tmp_path)
    assert_one_line_error(result, "database does not answer")
    assert "hunter2" not in result.stderr
    assert_one_line_error(
        tipline(initialised, "db", "upgrade", cwd=tmp_path), "database does not answer"
    )


def test_bad_configuration_is_one_line(env: dict[str, str], tmp_path: Path) -> None:
    env["TIPLINE_RETENTION_DAYS"] = "forever"
    assert_one_line_error(tipline(env, "console", cwd=tmp_path), "TIPLINE_RETENTION_DAYS")
    env["TIPLINE_RETENTION_DAYS"] = "30"
    env["TIPLINE_LANGUAGES"] = "az,de"
    assert_one_line_error(tipline(env, "console", cwd=tmp_path), "TIPLINE_LANGUAGES")


def test_uninitialised_instance(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "root.key").write_text(os.urandom(32).hex())
    assert_one_line_error(tipline(env, "console", cwd=tmp_path), "run 'tipline init' first")


def test_init_is_idempotent_and_db_upgrade(initialised: dict[str, str], tmp_path: Path) -> None:
    again = tipline(initialised, "init", "--dev", cwd=tmp_path)
    assert again.returncode == 0 and "already initialised" in again.stdout
    upgrade = tipline(initialised, "db", "upgrade", cwd=tmp_path)
    from storage.migrate import heads

    assert upgrade.returncode == 0 and f"database at revision {heads()[0]}" in upgrade.stdout
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "var").iterdir()}
    assert modes["keyring"] == 0o600 and modes["root.key"] == 0o600 and modes["tipline.db"] == 0o600


def test_run_without_messenger_says_how_to_configure(
    initialised: dict[str, str], tmp_path: Path
) -> None:
    result = tipline(initialised, "run", cwd=tmp_path)
    assert_one_line_error(result, "no messenger is configured: set TIPLINE_TELEGRAM_TOKEN")
