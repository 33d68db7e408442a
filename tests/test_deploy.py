"""Issue 11: the deployment keeps no key on the disk, and deploy/unlock does the steps in order."""

from __future__ import annotations

import re
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
#: What a key source looks like in a setting, a path or a secret.
KEY_SOURCE = re.compile(r"passphrase|root[._-]?key|secret|credential", re.IGNORECASE)


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)
    elif node is not None:
        yield str(node)


def compose_key_sources(text: str) -> list[str]:
    """Every key, value or path in a compose file that names a key source (comments aside)."""
    return [s for s in _strings(yaml.safe_load(text)) if KEY_SOURCE.search(s)]


def unit_settings(text: str) -> list[tuple[str, str]]:
    """``(key, value)`` of every directive of a systemd unit (comments aside)."""
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        pairs.append((key.strip(), value.strip()))
    return pairs


def unit_key_sources(text: str) -> list[str]:
    """Directives of a unit that name a key source or hand the service a credential."""
    return [
        f"{key}={value}"
        for key, value in unit_settings(text)
        if KEY_SOURCE.search(key) or KEY_SOURCE.search(value)
    ]


def test_compose_file_names_no_passphrase_or_key_file() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    assert compose_key_sources(text) == []
    doc = yaml.safe_load(text)
    assert "secrets" not in doc
    tipline = doc["services"]["tipline"]
    assert "secrets" not in tipline
    assert "/healthz" in " ".join(tipline["healthcheck"]["test"])
    signal = doc["services"]["signal"]
    assert signal["restart"] == "no", "signal-cli starts only once its volume is open"
    (mount,) = signal["volumes"]
    assert mount.startswith("/"), "a bind mount of the opened encrypted volume"
    # the check itself catches what the old file did
    leaked = text.replace(
        "TIPLINE_SIGNAL_MODE: normal",
        "TIPLINE_SIGNAL_MODE: normal\n      TIPLINE_PASSPHRASE_FILE: /run/secrets/p",
    )
    assert compose_key_sources(leaked) == ["TIPLINE_PASSPHRASE_FILE", "/run/secrets/p"]


def test_systemd_unit_names_no_passphrase_or_key_file() -> None:
    text = (DEPLOY / "tipline.service").read_text()
    assert unit_key_sources(text) == []
    settings = dict(unit_settings(text))
    assert settings["ExecStart"].endswith("tipline run")
    assert settings["MemorySwapMax"] == "0" and settings["LimitCORE"] == "0"
    for leak in (
        "Environment=TIPLINE_PASSPHRASE_FILE=/etc/tipline/passphrase",
        "Environment=TIPLINE_ROOT_KEY_FILE=/etc/tipline/root.key",
        "LoadCredential=tipline:/etc/tipline/p",
    ):
        assert unit_key_sources(text.replace("[Service]", f"[Service]\n{leak}")) == [leak]


def test_container_image_holds_no_key_source() -> None:
    lines = [
        line
        for line in (DEPLOY / "Containerfile").read_text().splitlines()
        if not line.startswith("#")
    ]
    assert not [line for line in lines if KEY_SOURCE.search(line)]


STUBS = {
    # a mount point is "mounted" once the stub gocryptfs (or mount) has made this file
    "mountpoint": '[ -e "$STUB_DIR/mounted" ]',
    "gocryptfs": 'echo "gocryptfs $*" >>"$STUB_LOG"; touch "$STUB_DIR/mounted"',
    "cryptsetup": 'echo "cryptsetup $*" >>"$STUB_LOG"',
    "mount": 'echo "mount $*" >>"$STUB_LOG"; touch "$STUB_DIR/mounted"',
    "docker": 'echo "docker $*" >>"$STUB_LOG"',
    "systemctl": 'echo "systemctl $*" >>"$STUB_LOG"',
    "curl": 'echo "curl $*" >>"$STUB_LOG"',
    "sudo": 'echo "sudo $*" >>"$STUB_LOG"',
    "sleep": "true",
}


def _unlock(
    tmp_path: Path, *args: str, stubs_: dict[str, str] = STUBS, **env: str
) -> tuple[int, list[str], str]:
    stubs = tmp_path / "bin"
    stubs.mkdir(exist_ok=True)
    for name, body in stubs_.items():
        path = stubs / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    log = tmp_path / "calls"
    log.write_text("")
    full = {
        "PATH": f"{stubs}:/usr/bin:/bin",
        "STUB_DIR": str(tmp_path),
        "STUB_LOG": str(log),
        "COMPOSE_FILE": "/srv/compose.yaml",
        **env,
    }
    done = subprocess.run(
        ["bash", str(DEPLOY / "unlock"), *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.returncode, log.read_text().splitlines(), done.stderr


def test_unlock_script_is_executable_bash() -> None:
    script = DEPLOY / "unlock"
    assert script.stat().st_mode & stat.S_IXUSR
    assert script.read_text().startswith("#!/usr/bin/env bash\n")
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_unlock_script_opens_the_volume_starts_signal_then_unlocks(tmp_path: Path) -> None:
    code, calls, err = _unlock(tmp_path)
    assert code == 0, err
    assert calls[0] == "gocryptfs /srv/tipline/signal.crypt /srv/tipline/signal"
    assert calls[1] == "docker compose -f /srv/compose.yaml up -d signal"
    assert calls[2].startswith("docker compose -f /srv/compose.yaml exec -T tipline python -c")
    assert "http://signal:8080/v1/about" in calls[2]
    assert calls[3:] == ["docker compose -f /srv/compose.yaml exec tipline tipline unlock"]


def test_unlock_script_systemd_and_luks(tmp_path: Path) -> None:
    code, calls, err = _unlock(tmp_path, "systemd", SIGNAL_LUKS_DEVICE="/dev/vdb")
    assert code == 0, err
    assert calls == [
        "cryptsetup open /dev/vdb tipline-signal",
        "mount /dev/mapper/tipline-signal /srv/tipline/signal",
        "systemctl start signal-cli-rest-api",
        "curl -fsS --max-time 3 http://127.0.0.1:8080/v1/about",
        "sudo -u tipline TIPLINE_DATA_DIR=/var/lib/tipline /opt/tipline/venv/bin/tipline unlock",
    ]


def test_unlock_script_never_starts_signal_on_a_plain_disk(tmp_path: Path) -> None:
    # a gocryptfs that "succeeds" without mounting anything
    broken = dict(STUBS, gocryptfs='echo "gocryptfs $*" >>"$STUB_LOG"')
    code, calls, err = _unlock(tmp_path, stubs_=broken)
    assert code == 1
    assert calls == ["gocryptfs /srv/tipline/signal.crypt /srv/tipline/signal"]
    assert "refusing to start signal-cli on a plain disk" in err


@pytest.mark.parametrize("usage", [["--help"], ["swarm"]])
def test_unlock_script_refuses_unknown_modes(tmp_path: Path, usage: list[str]) -> None:
    code, calls, err = _unlock(tmp_path, *usage)
    assert code == 1 and calls == [] and "usage: deploy/unlock" in err
