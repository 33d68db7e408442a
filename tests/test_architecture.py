"""Imports point one way (DESIGN.md section 3): the domain is pure, services never see storage."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest

from bot.logs import RedactingFilter

ROOT = Path(__file__).resolve().parents[1]
#: Storage shares the services' vocabulary (records, ids, statuses) and nothing else of bot.
ALLOWED = {"storage": {"bot.services.ports"}}
FORBIDDEN = {
    "bot/domain": {
        "storage",
        "sqlalchemy",
        "telegram",
        "httpx",
        "aiosqlite",
        "asyncpg",
        "bot.services",
        "bot.channels",
        "os",
        "socket",
        "asyncio",
        "babel",
    },
    "bot/services": {"storage", "sqlalchemy", "telegram", "httpx", "bot.channels"},
    "storage": {"bot"},
    "bot/channels": {"storage", "sqlalchemy"},
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layers_import_one_way(package: str) -> None:
    files = list((ROOT / package).rglob("*.py"))
    assert files
    for path in files:
        for module in imported_modules(path):
            if module in ALLOWED.get(package, set()):
                continue
            for banned in FORBIDDEN[package]:
                assert not (module == banned or module.startswith(banned + ".")), (
                    f"{path.relative_to(ROOT)} imports {module}"
                )


def test_no_plaintext_persistence_anywhere() -> None:
    for path in [*ROOT.joinpath("bot").rglob("*.py"), *ROOT.joinpath("storage").rglob("*.py")]:
        text = path.read_text()
        assert "PicklePersistence" not in text and "import pickle" not in text, path


@pytest.mark.parametrize(
    "secret",
    [
        "1234567:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0",
        "+994501234567",
        "0b6d7a58-4c4c-4b8e-9c1e-5f2e0f6b9a11",
    ],
)
def test_log_filter_masks_secret_shapes(secret: str) -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "value %s here", (secret,), None)
    RedactingFilter().filter(record)
    assert secret not in record.getMessage()
    assert "[redacted]" in record.getMessage()
