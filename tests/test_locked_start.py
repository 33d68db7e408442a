"""Issue 11 with the real commands in subprocesses: ``tipline run`` starts locked, a person
unlocks it at a terminal, a reporter then completes a report; and every bad input is one line."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import sqlite3
import sys
from pathlib import Path

import pytest

from bot.config import Profile
from bot.control import ControlError
from bot.keypolicy import ARGON2_FLOOR, WeakKey, check_cost, check_passphrase
from bot.runtime import key_source_warning
from bot.supervisor import Supervisor
from storage.keyring import Argon2Cost, Passphrase
from tests.fake_telegram import TOKEN, FakeBotApi, until
from tests.service_harness import (
    PASSPHRASE,
    ask,
    cli,
    cli_env,
    in_pty,
    make_instance,
    one_line_error,
    settings_for,
    supervised,
    tg_play,
)
from tests.telegram_harness import full_report

CHAT = 7730155
CODE = re.compile(r"\b[A-Z2-7]{4}(?:-[A-Z2-7]{4}){3}\b")
ENDING = [("press", "d"), ("press", "c:code"), ("press", "c:submit")]


async def test_locked_start_unlock_at_a_terminal_then_a_report(tmp_path: Path) -> None:
    fake = FakeBotApi()
    root = await fake.start()
    env = cli_env(tmp_path, TIPLINE_TELEGRAM_TOKEN=TOKEN, TIPLINE_TELEGRAM_BASE_URL=root)
    socket_path = tmp_path / "var" / "control.sock"
    # `tipline init` at a terminal: the passphrase typed twice, written nowhere
    code, screen = await in_pty(
        env, "init", typed=[("tipline passphrase: ", PASSPHRASE), ("again: ", PASSPHRASE)]
    )
    assert code == 0 and "tipline: initialised" in screen, screen
    assert PASSPHRASE not in screen, "no echo"
    run = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "run",
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await until(socket_path.exists, limit=30)
        await asyncio.sleep(3)
        assert [m for m, _ in fake.calls if m == "getUpdates"] == []
        assert fake.calls == [], "locked: the Bot API is not even asked who the bot is"

        status = await cli(env, "status")
        assert status[0] == 0, status
        lines = status[1].splitlines()
        assert lines[:2] == ["tipline: locked", "channels: telegram down"]
        assert lines[2].startswith("queues: ") and lines[3].startswith("jobs last ran: ")

        code, screen = await in_pty(env, "unlock", typed=[("tipline passphrase: ", PASSPHRASE)])
        assert code == 0, screen
        assert "tipline: unlocked" in screen and PASSPHRASE not in screen

        await until(lambda: any(m == "getUpdates" for m, _ in fake.calls), limit=30)
        await tg_play(fake, CHAT, full_report("marigold") + ENDING)
        receipts = [m for s in fake.sent if s.chat_id == CHAT for m in CODE.findall(s.text)]
        assert len(set(receipts)) == 1, [s.text for s in fake.sent if s.chat_id == CHAT]
        db = sqlite3.connect(tmp_path / "var" / "tipline.db")
        assert db.execute("SELECT count(*) FROM cases").fetchone() == (1,)
        db.close()

        status = await cli(env, "status")
        lines = status[1].splitlines()
        assert lines[:2] == ["tipline: unlocked", "channels: telegram up"]
        assert re.fullmatch(r"queues: (empty|(\w+ ?)+ \d+(, (\w+ ?)+ \d+)*)", lines[2]), lines[2]
        stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00"
        jobs = f"jobs last ran: expiry {stamp}, erase {stamp}, lawyers {stamp}"
        assert re.fullmatch(jobs, lines[3]), lines[3]
        assert str(CHAT) not in status[1] and "marigold" not in status[1]
        locked = await cli(env, "lock")
        assert locked[0] == 0 and locked[1].startswith("tipline: locked"), locked
        one_line_error(await cli(env, "lock"), "already locked")
        assert (await cli(env, "status"))[1].startswith("tipline: locked\n")
    finally:
        run.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(run.communicate(), 30)
        await fake.stop()
    logs = err.decode()
    assert run.returncode == 0, logs[-2000:]
    assert "Traceback" not in logs and "warning: TIPLINE_" not in logs
    for secret in (PASSPHRASE, str(CHAT), TOKEN, "marigold"):
        assert secret not in logs
    assert not socket_path.exists(), "the socket goes with the service"


async def test_bad_input_is_one_clear_line(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    env = cli_env(tmp_path)
    # a data dir without a keyring
    env_tg = cli_env(tmp_path, TIPLINE_TELEGRAM_TOKEN=TOKEN)
    one_line_error(await cli(env_tg, "run"), "no keyring at")
    await make_instance(settings)
    # a socket left over from a crash: nothing answers it (no running service) ...
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(settings.effective_control_socket))
    stale.close()
    one_line_error(await cli(env, "unlock", stdin=PASSPHRASE), "no running service")
    # ... and a new service replaces it
    async with supervised(settings) as service:
        assert (await ask(settings, "status"))["state"] == "locked"
        with pytest.raises(ControlError, match="another tipline is already running"):
            await Supervisor(settings).run(asyncio.Event())
        # a wrong passphrase: one calm line, and still locked
        one_line_error(await cli(env, "unlock", stdin="not the passphrase\n"), "wrong passphrase")
        assert service.state == "locked"
        one_line_error(await cli(env, "lock"), "already locked")
        assert (await ask(settings, "unlock", passphrase=PASSPHRASE))["ok"]
        one_line_error(await cli(env, "unlock", stdin=PASSPHRASE), "already unlocked")
        assert (await ask(settings, "lock"))["ok"]
        # the keyring vanished while the service waited
        (tmp_path / "var" / "keyring").rename(tmp_path / "var" / "elsewhere")
        answer = await ask(settings, "unlock", passphrase=PASSPHRASE)
        assert answer["state"] == "locked" and "run 'tipline init' first" in answer["error"]


async def test_locked_wipe_destroys_the_keyring_without_the_passphrase(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    env = cli_env(tmp_path)
    await make_instance(settings)
    keyring = tmp_path / "var" / "keyring"
    async with supervised(settings) as service:
        assert (await ask(settings, "unlock", passphrase=PASSPHRASE))["ok"]
        result = await cli(env, "wipe", "--yes")
        assert result[0] == 0, result
        assert "the keyring is destroyed" in result[1]
        assert service.state == "locked", "the running service dropped its keys first"
        assert not keyring.exists() and not list(keyring.parent.glob(".keyring.*"))
        db = sqlite3.connect(tmp_path / "var" / "tipline.db")
        assert db.execute("SELECT count(*) FROM audit_log").fetchone() == (0,)
        db.close()
        one_line_error(await cli(env, "unlock", stdin=PASSPHRASE), "run 'tipline init' first")
    again = await cli(env, "wipe", "--yes")
    assert again[0] == 0 and "there was no keyring" in again[1]
    await make_instance(settings)  # a new start is possible


def test_argon2_floor_is_rfc_9106_outside_the_test_profile() -> None:
    check_cost(Argon2Cost(), Profile.PRODUCTION)  # the default: 256 MiB, t=4, p=4
    check_cost(ARGON2_FLOOR, Profile.PRODUCTION)
    floor = ARGON2_FLOOR
    assert (floor.memory_kib, floor.iterations, floor.lanes) == (65536, 3, 4)
    for weaker in (
        Argon2Cost(floor.iterations, floor.memory_kib - 1, floor.lanes),
        Argon2Cost(floor.iterations - 1, floor.memory_kib, floor.lanes),
        Argon2Cost(floor.iterations, floor.memory_kib, floor.lanes - 1),
    ):
        with pytest.raises(WeakKey, match="RFC 9106"):
            check_cost(weaker, Profile.PRODUCTION)
        check_cost(weaker, Profile.TEST)


@pytest.mark.parametrize(
    ("passphrase", "why"),
    [
        ("password123456", "commonly used password"),
        ("aaaaaaaaaaaaaaaa", 'repeats like "aaa" are easy to guess'),
    ],
)
def test_weak_passphrases_are_refused_with_a_reason(passphrase: str, why: str) -> None:
    with pytest.raises(WeakKey) as refused:
        check_passphrase(Passphrase(passphrase.encode()))
    message = str(refused.value)
    assert message.startswith("the passphrase is too weak (strength ") and why in message.lower()
    assert "\n" not in message
    check_passphrase(Passphrase(PASSPHRASE.encode()))


async def test_init_and_root_rotation_refuse_weak_keys(tmp_path: Path) -> None:
    weak, strong, other = tmp_path / "weak", tmp_path / "strong", tmp_path / "other"
    weak.write_text("password123456\n")
    strong.write_text(PASSPHRASE + "\n")
    other.write_text("copper violin estuary dawn quartz lagoon\n")
    env = cli_env(tmp_path, TIPLINE_PASSPHRASE_FILE=str(weak))
    one_line_error(await cli(env, "init"), "the passphrase is too weak")
    production = dict(env, TIPLINE_PROFILE="production", TIPLINE_PASSPHRASE_FILE=str(strong))
    one_line_error(await cli(production, "init"), "below RFC 9106's recommendation")
    assert not (tmp_path / "var" / "keyring").exists()
    env["TIPLINE_PASSPHRASE_FILE"] = str(strong)
    assert (await cli(env, "init"))[0] == 0
    one_line_error(
        await cli(env, "keys", "rotate", "--root", "--new-passphrase-file", str(weak)),
        "the passphrase is too weak",
    )
    one_line_error(
        await cli(production, "keys", "rotate", "--root", "--new-passphrase-file", str(other)),
        "below RFC 9106's recommendation",
    )


def test_each_key_source_is_named_in_the_warning(tmp_path: Path) -> None:
    assert key_source_warning(settings_for(tmp_path)) is None
    for source, value in (
        ("TIPLINE_ROOT_KEY_FILE", {"root_key_file": tmp_path / "root.key"}),
        ("TIPLINE_PASSPHRASE_FILE", {"passphrase_file": tmp_path / "passphrase"}),
        ("TIPLINE_PASSPHRASE", {"passphrase": PASSPHRASE}),
    ):
        warning = key_source_warning(settings_for(tmp_path, **value))
        assert warning == (
            f"warning: {source} is set: the key source is on this machine, so a seized disk "
            "can be read (development and tests only)"
        )


async def test_make_run_path_warns_once_and_asks_nothing(tmp_path: Path) -> None:
    """`make run`: TIPLINE_ROOT_KEY_FILE, `init --dev`, then the console; no prompt anywhere."""
    env = cli_env(tmp_path, TIPLINE_ROOT_KEY_FILE="var/root.key")
    for key in ("TIPLINE_PROFILE", "TIPLINE_ARGON2_MEMORY_KIB"):
        env.pop(key)
    assert (await cli(env, "init", "--dev", cwd=tmp_path))[0] == 0
    code, out, err = await cli(env, "console", stdin="3\n", cwd=tmp_path)
    assert code == 0 and "This is a confidential" in out, err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert warnings == [
        f"tipline: {key_source_warning(settings_for(tmp_path, root_key_file=Path('k')))}"
    ]
