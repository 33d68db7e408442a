"""Issue 11, seized disk: a deployment used for real (reports, a lawyer registered, a lawyer's
reply) and then switched off gives an offline attacker nothing, whatever key source they try.

The service runs as deployed: `tipline run` with no key source, unlocked by a person through the
control socket (`tipline unlock` on a terminal), the admin commands asking for the passphrase
on the terminal too. Then everything the deployment leaves on the machine is collected and
tests/attacker.py does its worst. The same attacker, given the passphrase file the old
deployment kept, recovers every needle: so finding nothing means something.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from storage.db import make_engine
from tests.conftest import BACKENDS, PG_URL, reset_postgres
from tests.fake_telegram import TOKEN, FakeBotApi, until
from tests.service_harness import PASSPHRASE, ROOT, cli_env, in_pty, settle, tg_play
from tests.telegram_harness import full_report

REPORTER = 918273645
LAWYER = 564738291
CANARY = "CANARY-d41f-seized-disk"
LAWYER_NAME = "Leyla Qasimzade-Sahil"
LAWYER_MESSAGE = "Your hearing is on Tuesday at 10, bring the summons"
HERE = [("press", "d"), ("press", "c:here"), ("press", "c:submit")]
CASE = re.compile(r"New case #(\d+)")


async def _said(fake: FakeBotApi, chat: int, text: str) -> str:
    """A staff member sends a command; the bot's answer to it."""
    before = len(fake.sent)
    await fake.text(chat, text)
    await until(lambda: any(s.chat_id == chat for s in fake.sent[before:]), limit=30)
    await settle(fake)
    return "\n".join(s.text for s in fake.sent[before:] if s.chat_id == chat)


async def _use_the_deployment(fake: FakeBotApi, env: dict[str, str], cwd: Path) -> None:
    typed = [("tipline passphrase: ", PASSPHRASE)]
    code, screen = await in_pty(
        env,
        "lawyers",
        "invite",
        "--name",
        LAWYER_NAME,
        "--languages",
        "en",
        "--regions",
        "all",
        "--on-call",
        typed=typed,
        cwd=cwd,
    )
    assert code == 0, screen
    invite = re.search(r"\(valid 72 hours, once\): (\S+)", screen)
    assert invite is not None, screen
    registered = await _said(fake, LAWYER, f"/register {invite.group(1)}")
    phrase = registered.split("\n\n")[1]
    code, screen = await in_pty(
        env,
        "lawyers",
        "verify",
        "1",
        typed=[("phrase the lawyer read out: ", phrase), *typed],
        cwd=cwd,
    )
    assert code == 0 and "lawyer 1 verified" in screen, screen

    report = full_report(CANARY)
    await tg_play(fake, REPORTER, report + HERE)
    await until(lambda: any(CASE.search(s.text) for s in fake.sent if s.chat_id == LAWYER))
    notice = next(
        CASE.search(s.text) for s in fake.sent if s.chat_id == LAWYER and CASE.search(s.text)
    )
    assert notice is not None
    number = notice.group(1)
    assert "is yours" in await _said(fake, LAWYER, f"/accept {number}")
    await _said(fake, LAWYER, f"/reply {number} {LAWYER_MESSAGE}")
    # the reporter's chat gets a notice without content; Read shows the message once
    await until(lambda: fake.buttons(REPORTER) == {"Read": "r"}, limit=30)
    await fake.press(REPORTER, fake.last_question(REPORTER).message_id, "r")
    await until(lambda: any(LAWYER_MESSAGE in s.text for s in fake.sent if s.chat_id == REPORTER))


def _attack(evidence: Path, *needles: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "attacker.py"), str(evidence), *needles],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    return dict(json.loads(done.stdout))


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_seized_disk_gives_nothing(tmp_path: Path, backend: str) -> None:
    fake = FakeBotApi()
    root = await fake.start()
    machine = tmp_path / "machine"  # the deployment's working directory
    machine.mkdir()
    env = cli_env(machine)
    env.pop("TIPLINE_DATA_DIR")
    (machine / ".env").write_text(
        f"TIPLINE_DATA_DIR={machine / 'var'}\n"
        f"TIPLINE_TELEGRAM_TOKEN={TOKEN}\n"
        f"TIPLINE_TELEGRAM_BASE_URL={root}\n"
    )
    if backend == "postgres":
        assert PG_URL is not None
        if shutil.which("pg_dump") is None:
            pytest.skip("pg_dump is not installed")
        engine = make_engine(PG_URL)
        await reset_postgres(engine)
        await engine.dispose()
        env["TIPLINE_DATABASE_URL"] = PG_URL
    code, screen = await in_pty(
        env,
        "init",
        typed=[("tipline passphrase: ", PASSPHRASE), ("again: ", PASSPHRASE)],
        cwd=machine,
    )
    assert code == 0, screen
    run = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "run",
        env=env,
        cwd=machine,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await until((machine / "var" / "control.sock").exists, limit=30)
        code, screen = await in_pty(
            env, "unlock", typed=[("tipline passphrase: ", PASSPHRASE)], cwd=machine
        )
        assert code == 0 and "tipline: unlocked" in screen, screen
        await until(lambda: any(m == "getUpdates" for m, _ in fake.calls), limit=30)
        await _use_the_deployment(fake, env, machine)
    finally:
        run.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(run.communicate(), 30)
        await fake.stop()
    assert run.returncode == 0, err.decode()[-2000:]

    # every file the deployment leaves on the machine
    evidence = tmp_path / "evidence"
    shutil.copytree(machine, evidence / "srv")
    shutil.copytree(ROOT / "deploy", evidence / "deploy")
    if backend == "postgres":
        assert PG_URL is not None
        url = make_url(PG_URL).set(drivername="postgresql").render_as_string(hide_password=False)
        pg_dump = await asyncio.create_subprocess_exec(
            "pg_dump", "--no-owner", url, stdout=asyncio.subprocess.PIPE
        )
        dump, _ = await asyncio.wait_for(pg_dump.communicate(), 120)
        assert pg_dump.returncode == 0
        (evidence / "backup.sql").write_bytes(dump)
        assert b"COPY public.cases" in dump
    needles = [CANARY, str(REPORTER), str(LAWYER), LAWYER_NAME, LAWYER_MESSAGE]
    seen = await asyncio.to_thread(_attack, evidence, *needles)
    assert seen["keyrings"] == ["srv/var/keyring"]
    assert seen["opened"] == [], seen
    assert seen["recovered"] == {}, seen

    # control: the passphrase file the old deployment kept opens everything
    (evidence / "etc").mkdir()
    (evidence / "etc" / "passphrase").write_text(PASSPHRASE + "\n")
    leaked = await asyncio.to_thread(_attack, evidence, *needles)
    assert leaked["opened"] == ["srv/var/keyring with etc/passphrase"], leaked
    recovered = leaked["recovered"]
    assert isinstance(recovered, dict)
    for needle in (CANARY, str(REPORTER), LAWYER_NAME, LAWYER_MESSAGE):
        assert needle in recovered, (needle, leaked)
