"""The admin commands in subprocesses: output, refusals and one-line errors."""

from __future__ import annotations

import base64
import re
import sqlite3
from pathlib import Path

import pytest

from storage.keyring import KeyFile, KeyringFile
from tests.test_console_e2e import FULL_REPORT, assert_one_line_error, env, initialised, tipline

__all__ = ["env", "initialised"]  # fixtures shared with the console tests


def test_keys_status_and_rotate_print_no_secret(
    initialised: dict[str, str], tmp_path: Path
) -> None:
    tipline(initialised, "console", stdin="\n".join(FULL_REPORT) + "\n", cwd=tmp_path)
    status = tipline(initialised, "keys", "status", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    # the case, and the prompt the console's next line answers ("1 = I have written it down")
    assert lines[0].split() == ["KEK", "created", "(UTC)", "current", "cases", "drafts"]
    assert lines[1].split()[0] == "1" and lines[1].split()[-2:] == ["1", "1"]
    keyring = KeyringFile(tmp_path / "var" / "keyring").load(
        KeyFile.read(tmp_path / "var" / "root.key")
    )
    for secret in (keyring.kek(1), keyring.index_key):
        for shape in (secret.hex(), base64.b64encode(secret).decode()):
            assert shape not in status.stdout + status.stderr
    rotate = tipline(initialised, "keys", "rotate", cwd=tmp_path)
    assert rotate.returncode == 0
    assert "KEK 2 is current; 2 records re-wrapped; destroyed KEK: 1" in rotate.stdout
    assert (
        "Welcome"
        not in tipline(
            initialised, "console", stdin="status AAAA-AAAA-AAAA-AAAA\n", cwd=tmp_path
        ).stdout
    )


def test_purge_dry_run_and_nothing_to_do(initialised: dict[str, str], tmp_path: Path) -> None:
    tipline(initialised, "console", stdin="3\n1\n", cwd=tmp_path)  # a draft
    dry = tipline(initialised, "purge", "--dry-run", cwd=tmp_path)
    assert (
        dry.returncode == 0
        and "would purge 0 drafts, 0 cases, 0 attachments, 0 outbox, 0 screens, 0 case_messages "
        "(dry run"
        in dry.stdout
    )
    real = tipline(initialised, "purge", cwd=tmp_path)
    assert real.returncode == 0 and "nothing has expired" in real.stdout


def test_wipe_refuses_without_yes_then_wipes(initialised: dict[str, str], tmp_path: Path) -> None:
    tipline(initialised, "console", stdin="\n".join(FULL_REPORT) + "\n", cwd=tmp_path)
    refused = tipline(initialised, "wipe", cwd=tmp_path)
    assert_one_line_error(refused, "run 'tipline wipe --yes'")
    assert refused.returncode == 2
    db = sqlite3.connect(tmp_path / "var" / "tipline.db")
    assert db.execute("SELECT count(*) FROM cases").fetchone() == (1,)
    db.close()
    done = tipline(initialised, "wipe", "--yes", cwd=tmp_path)
    assert done.returncode == 0 and "every key destroyed" in done.stdout
    db = sqlite3.connect(tmp_path / "var" / "tipline.db")
    assert db.execute("SELECT count(*) FROM cases").fetchone() == (0,)
    db.close()
    assert "intact (1 entries)" in tipline(initialised, "audit", "verify", cwd=tmp_path).stdout


def test_audit_verify_names_the_broken_entry(initialised: dict[str, str], tmp_path: Path) -> None:
    tipline(initialised, "keys", "rotate", cwd=tmp_path)
    ok = tipline(initialised, "audit", "verify", cwd=tmp_path)
    assert ok.returncode == 0 and "audit log intact (2 entries)" in ok.stdout
    db = sqlite3.connect(tmp_path / "var" / "tipline.db")
    db.execute("UPDATE audit_log SET action = 'nothing' WHERE id = 1")
    db.commit()
    db.close()
    assert_one_line_error(
        tipline(initialised, "audit", "verify", cwd=tmp_path), "broken at entry 1: it was changed"
    )


def test_stats_formats(initialised: dict[str, str], tmp_path: Path) -> None:
    assert_one_line_error(tipline(initialised, "stats", cwd=tmp_path), "no statistics yet")
    tipline(initialised, "console", stdin="\n".join(FULL_REPORT) + "\n", cwd=tmp_path)
    table = tipline(initialised, "stats", cwd=tmp_path)
    assert table.returncode == 0
    assert table.stdout.splitlines()[0].split() == ["week", "region", "category", "count"]
    assert "baku    reports" in table.stdout and "<5" in table.stdout
    assert " 1\n" not in table.stdout, "a single report is never shown as 1"
    csv_out = tipline(initialised, "stats", "--format", "csv", "--threshold", "3", cwd=tmp_path)
    assert "2026" in csv_out.stdout and ",baku,reports,<3" in csv_out.stdout
    # below 3, "<2" would say exactly 1: refused
    assert tipline(initialised, "stats", "--threshold", "2", cwd=tmp_path).returncode != 0
    assert_one_line_error(
        tipline(initialised, "stats", "--format", "png", cwd=tmp_path), "needs --output"
    )
    png = tmp_path / "chart.png"
    made = tipline(initialised, "stats", "--format", "png", "--output", str(png), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


@pytest.mark.parametrize(
    "command",
    [
        ["keys", "status"],
        ["keys", "rotate"],
        ["purge"],
        ["audit", "verify"],
        ["stats"],
    ],
)
def test_locked_instance_is_one_line_for_every_command(
    env: dict[str, str], tmp_path: Path, command: list[str]
) -> None:
    assert tipline(env, "init", "--dev", cwd=tmp_path).returncode == 0
    del env["TIPLINE_ROOT_KEY_FILE"]
    assert_one_line_error(tipline(env, *command, cwd=tmp_path), "locked: no root key")


def test_root_rotation_moves_keys_under_a_new_passphrase(
    env: dict[str, str], tmp_path: Path
) -> None:
    del env["TIPLINE_ROOT_KEY_FILE"]
    env.update(
        TIPLINE_ARGON2_MEMORY_KIB="64",
        TIPLINE_ARGON2_ITERATIONS="1",
        TIPLINE_ARGON2_LANES="1",
        TIPLINE_PROFILE="test",
    )
    old, new = tmp_path / "old", tmp_path / "new"
    old.write_text("the first long passphrase\n")
    new.write_text("the second long passphrase\n")
    env["TIPLINE_PASSPHRASE_FILE"] = str(old)
    assert tipline(env, "init", cwd=tmp_path).returncode == 0
    tipline(env, "console", stdin="\n".join(FULL_REPORT) + "\n", cwd=tmp_path)
    assert_one_line_error(
        tipline(env, "keys", "rotate", "--root", cwd=tmp_path), "needs --new-passphrase-file"
    )
    moved = tipline(
        env, "keys", "rotate", "--root", "--new-passphrase-file", str(new), cwd=tmp_path
    )
    assert moved.returncode == 0, moved.stderr
    assert_one_line_error(tipline(env, "keys", "status", cwd=tmp_path), "does not open the keyring")
    env["TIPLINE_PASSPHRASE_FILE"] = str(new)
    status = tipline(env, "keys", "status", cwd=tmp_path)
    assert status.returncode == 0 and status.stdout.splitlines()[1].split()[-1] == "1"
    assert (
        "intact (3 entries)" in tipline(env, "audit", "verify", cwd=tmp_path).stdout
    )  # init, root rotation


def test_lawyer_commands_in_the_cli(initialised: dict[str, str], tmp_path: Path) -> None:
    invite = tipline(
        initialised,
        "lawyers",
        "invite",
        "--name",
        "Leyla M.",
        "--languages",
        "az,ru",
        "--regions",
        "baku",
        "--on-call",
        cwd=tmp_path,
    )
    assert invite.returncode == 0, invite.stderr
    assert "lawyer 1 invited" in invite.stdout
    listing = tipline(initialised, "lawyers", "list", cwd=tmp_path)
    assert listing.stdout.splitlines()[1].split()[:5] == ["1", "Leyla", "M.", "lawyer", "invited"]
    db = sqlite3.connect(tmp_path / "var" / "tipline.db")
    assert b"Leyla" not in b"".join(r[0] for r in db.execute("SELECT name_ct FROM lawyers"))
    db.close()
    assert_one_line_error(
        # the phrase is read from the terminal or standard input, never from the command line
        tipline(initialised, "lawyers", "verify", "1", stdin="not the phrase\n", cwd=tmp_path),
        "phrase does not match",
    )
    assert_one_line_error(
        tipline(initialised, "lawyers", "revoke", "7", cwd=tmp_path), "no lawyer with id 7"
    )
    assert_one_line_error(
        tipline(initialised, "lawyers", "invite", "--name", "X", "--languages", "de", cwd=tmp_path),
        "--languages",
    )
    revoke = tipline(initialised, "lawyers", "revoke", "1", cwd=tmp_path)
    assert revoke.returncode == 0 and "revoked; 0 open cases re-routed" in revoke.stdout
    tipline(initialised, "console", stdin="\n".join(FULL_REPORT) + "\n", cwd=tmp_path)
    cases = tipline(initialised, "cases", "list", cwd=tmp_path)
    assert cases.returncode == 0
    number, *rest = cases.stdout.splitlines()[1].split()[:3]
    assert rest == ["P1", "new"] and re.fullmatch(r"#\d{4}", number), "four random digits"
    assert "Station" not in cases.stdout
