"""Configuration from ``TIPLINE_*`` environment variables and ``.env`` (DESIGN.md section 8)."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.domain.questionnaire import LANGUAGES
from bot.domain.stats import DEFAULT_THRESHOLD, MIN_THRESHOLD

_WEBHOOK_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")


class SignalMode(StrEnum):
    """How signal-cli-rest-api hands over received messages."""

    NORMAL = "normal"
    JSON_RPC = "json-rpc"


class Profile(StrEnum):
    """``test`` allows Argon2id costs below the production floor; nothing else."""

    PRODUCTION = "production"
    TEST = "test"


class ConfigError(Exception):
    """The configuration is invalid; the message is one line naming the variable."""


class Settings(BaseSettings):
    """All settings of a tipline instance; frozen once read."""

    model_config = SettingsConfigDict(
        env_prefix="TIPLINE_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,
    )

    data_dir: Path = Path("./var")
    database_url: str | None = None
    passphrase: SecretStr | None = None
    passphrase_file: Path | None = None
    root_key_file: Path | None = None
    keyring_file: Path | None = None
    control_socket: Path | None = None
    health_addr: str | None = None
    profile: Profile = Profile.PRODUCTION

    telegram_token: SecretStr | None = None
    telegram_base_url: str | None = None
    telegram_webhook_url: str | None = None
    telegram_webhook_secret: SecretStr | None = None
    telegram_webhook_listen: str = "127.0.0.1"
    telegram_webhook_port: int = Field(default=8443, ge=1, le=65535)

    signal_api_url: str | None = None
    signal_number: SecretStr | None = None
    signal_mode: SignalMode = SignalMode.NORMAL
    signal_disappearing_seconds: int = Field(default=86400, ge=0, le=4 * 7 * 86400)

    retention_days: int = Field(default=30, ge=1, le=3650)
    draft_ttl_hours: int = Field(default=24, ge=1, le=24 * 30)
    languages: Annotated[tuple[str, ...], NoDecode] = LANGUAGES
    log_level: str = "INFO"

    allow_case_content_over_telegram: bool = False
    lawyer_cap: int = Field(default=10, ge=1, le=1000)
    reports_per_day: int = Field(default=3, ge=1, le=100)
    escalation_interval_seconds: int = Field(default=60, ge=5, le=3600)
    purge_interval_minutes: int = Field(default=60, ge=1, le=24 * 60)
    #: The receipt leaves the reporter's screen this long after it was sent, if not before.
    receipt_screen_minutes: int = Field(default=15, ge=1, le=24 * 60)
    #: A lawyer's message (and a status answer) leaves the screen this long after it was read.
    read_screen_minutes: int = Field(default=10, ge=1, le=24 * 60)
    #: A lawyer's message is deleted from the server this long after it was first shown.
    read_message_ttl_hours: int = Field(default=24, ge=1, le=24 * 30)
    #: A deletion is crypto-erased (the KEK ratchets) within this many minutes.
    erase_within_minutes: int = Field(default=60, ge=1, le=24 * 60)
    stats_threshold: int = Field(default=DEFAULT_THRESHOLD, ge=MIN_THRESHOLD, le=1000)
    #: Audit entries of a gone case are pruned this many days after it went.
    audit_retention_days: int = Field(default=90, ge=1, le=3650)
    #: No case is kept longer than this after submission, whatever extends it.
    max_retention_days: int = Field(default=365, ge=1, le=3650)
    #: The legal deadline table (default: the one shipped in bot/domain/deadlines.toml).
    deadlines_file: Path | None = None

    argon2_iterations: int = Field(default=4, ge=1, le=100)
    argon2_memory_kib: int = Field(default=262_144, ge=8, le=8 * 1024 * 1024)
    argon2_lanes: int = Field(default=4, ge=1, le=64)

    @field_validator("languages", mode="before")
    @classmethod
    def _split_languages(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip().lower() for part in value.split(",") if part.strip())
        return value

    @field_validator("languages")
    @classmethod
    def _known_languages(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [lang for lang in value if lang not in LANGUAGES]
        if unknown or not value:
            raise ValueError("must be a comma-separated list of az, ru, en")
        return value

    @field_validator("health_addr")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError("must be HOST:PORT, for example 127.0.0.1:8081")
        return value

    @field_validator("telegram_webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        # What setWebhook accepts for secret_token; an empty one would let anyone deliver.
        if value is not None and not _WEBHOOK_SECRET.fullmatch(value.get_secret_value()):
            raise ValueError("must be 1-256 characters of A-Z, a-z, 0-9, _ and -")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return level

    @model_validator(mode="after")
    def _one_root_source(self) -> Settings:
        sources = [self.passphrase, self.passphrase_file, self.root_key_file]
        if sum(s is not None for s in sources) > 1:
            raise ValueError(
                "set only one of TIPLINE_PASSPHRASE, TIPLINE_PASSPHRASE_FILE, TIPLINE_ROOT_KEY_FILE"
            )
        if (self.telegram_webhook_url is None) != (self.telegram_webhook_secret is None):
            raise ValueError(
                "set TIPLINE_TELEGRAM_WEBHOOK_URL and TIPLINE_TELEGRAM_WEBHOOK_SECRET together"
            )
        if self.argon2_memory_kib < 8 * self.argon2_lanes:
            raise ValueError("TIPLINE_ARGON2_MEMORY_KIB must be at least 8 x TIPLINE_ARGON2_LANES")
        return self

    @property
    def effective_database_url(self) -> str:
        """The configured database, or the embedded SQLite file in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'tipline.db').resolve()}"

    @property
    def effective_keyring_file(self) -> Path:
        """Where the sealed keyring lives (never inside the database)."""
        return self.keyring_file or self.data_dir / "keyring"

    @property
    def effective_control_socket(self) -> Path:
        """Where ``tipline run`` listens for unlock, lock, status and wipe."""
        return self.control_socket or self.data_dir / "control.sock"

    @property
    def health_host_port(self) -> tuple[str, int] | None:
        """The health endpoint's address, or None when it is off."""
        if self.health_addr is None:
            return None
        host, _, port = self.health_addr.rpartition(":")
        return host.strip("[]"), int(port)

    @property
    def key_source(self) -> str | None:
        """The variable naming a root key source on this machine, if any (development only)."""
        for name, value in (
            ("TIPLINE_PASSPHRASE", self.passphrase),
            ("TIPLINE_PASSPHRASE_FILE", self.passphrase_file),
            ("TIPLINE_ROOT_KEY_FILE", self.root_key_file),
        ):
            if value is not None:
                return name
        return None

    @property
    def telegram_enabled(self) -> bool:
        """Whether a Telegram bot token is configured."""
        return self.telegram_token is not None

    @property
    def signal_enabled(self) -> bool:
        """Whether a signal-cli-rest-api endpoint and number are configured."""
        return bool(self.signal_api_url and self.signal_number)


def load_settings() -> Settings:
    """Read settings; a bad value becomes one ConfigError line naming the variable."""
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = first.get("loc") or ()
        name = f"TIPLINE_{str(loc[0]).upper()}" if loc else "configuration"
        message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
        raise ConfigError(f"{name}: {message}") from None
