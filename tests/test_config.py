"""Configuration: the stable TIPLINE_* names of DESIGN.md section 8, validated and frozen."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from bot.config import ConfigError, Profile, Settings, SignalMode, load_settings

CONTRACT = [
    "DATABASE_URL",
    "DATA_DIR",
    "PASSPHRASE",
    "PASSPHRASE_FILE",
    "ROOT_KEY_FILE",
    "KEYRING_FILE",
    "TELEGRAM_TOKEN",
    "TELEGRAM_BASE_URL",
    "TELEGRAM_WEBHOOK_URL",
    "TELEGRAM_WEBHOOK_SECRET",
    "SIGNAL_API_URL",
    "SIGNAL_NUMBER",
    "SIGNAL_MODE",
    "RETENTION_DAYS",
    "DRAFT_TTL_HOURS",
    "LANGUAGES",
    "LOG_LEVEL",
    "CONTROL_SOCKET",
    "HEALTH_ADDR",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("TIPLINE_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_every_contract_name_is_a_setting() -> None:
    assert {name.lower() for name in CONTRACT} <= set(Settings.model_fields)


def test_defaults() -> None:
    s = load_settings()
    assert s.retention_days == 30 and s.draft_ttl_hours == 24
    assert s.languages == ("az", "ru", "en")
    assert s.signal_mode is SignalMode.NORMAL
    assert s.effective_database_url.startswith("sqlite+aiosqlite:///")
    assert s.effective_database_url.endswith("var/tipline.db")
    assert s.effective_keyring_file == Path("var/keyring")
    assert not s.telegram_enabled and not s.signal_enabled


def test_environment_and_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TIPLINE_RETENTION_DAYS=60\nTIPLINE_LANGUAGES=ru, en\n")
    monkeypatch.setenv("TIPLINE_SIGNAL_MODE", "json-rpc")
    monkeypatch.setenv("TIPLINE_SIGNAL_API_URL", "http://127.0.0.1:8080")
    monkeypatch.setenv("TIPLINE_SIGNAL_NUMBER", "+10000000000")
    s = load_settings()
    assert s.retention_days == 60 and s.languages == ("ru", "en")
    assert s.signal_mode is SignalMode.JSON_RPC and s.signal_enabled
    assert "+10000000000" not in repr(s), "secrets are not shown in reprs"


def test_lifecycle_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings()
    assert s.effective_control_socket == Path("var/control.sock")
    assert s.health_host_port is None and s.key_source is None
    assert s.profile is Profile.PRODUCTION
    monkeypatch.setenv("TIPLINE_HEALTH_ADDR", "127.0.0.1:8081")
    monkeypatch.setenv("TIPLINE_CONTROL_SOCKET", "/run/tipline/control.sock")
    monkeypatch.setenv("TIPLINE_PASSPHRASE_FILE", "/etc/tipline/passphrase")
    s = load_settings()
    assert s.health_host_port == ("127.0.0.1", 8081)
    assert s.effective_control_socket == Path("/run/tipline/control.sock")
    assert s.key_source == "TIPLINE_PASSPHRASE_FILE"


def test_frozen() -> None:
    s = load_settings()
    with pytest.raises(ValidationError):
        s.retention_days = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("RETENTION_DAYS", "0", "TIPLINE_RETENTION_DAYS"),
        ("DRAFT_TTL_HOURS", "x", "TIPLINE_DRAFT_TTL_HOURS"),
        ("SIGNAL_MODE", "fast", "TIPLINE_SIGNAL_MODE"),
        ("LANGUAGES", "fr", "TIPLINE_LANGUAGES"),
        ("LOG_LEVEL", "chatty", "TIPLINE_LOG_LEVEL"),
        ("HEALTH_ADDR", "8081", "TIPLINE_HEALTH_ADDR: must be HOST:PORT"),
        ("HEALTH_ADDR", "127.0.0.1:99999", "TIPLINE_HEALTH_ADDR"),
        ("PROFILE", "lenient", "TIPLINE_PROFILE"),
        ("TELEGRAM_WEBHOOK_SECRET", "", "TIPLINE_TELEGRAM_WEBHOOK_SECRET: must be 1-256"),
        ("TELEGRAM_WEBHOOK_SECRET", "no spaces", "TIPLINE_TELEGRAM_WEBHOOK_SECRET"),
    ],
)
def test_bad_values_are_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, fragment: str
) -> None:
    monkeypatch.setenv(f"TIPLINE_{name}", value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value).startswith(fragment)
    assert "\n" not in str(info.value)


def test_two_root_key_sources_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIPLINE_PASSPHRASE", "a long passphrase here")
    monkeypatch.setenv("TIPLINE_ROOT_KEY_FILE", "var/root.key")
    with pytest.raises(ConfigError, match="only one of"):
        load_settings()
