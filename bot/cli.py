"""The ``tipline`` command line; every failure is one clear line and a non-zero exit."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Coroutine
from typing import Any, NoReturn, TypeVar

import typer

from bot.channels.console import ConsoleChannel
from bot.config import ConfigError, Settings, load_settings
from bot.logs import setup_logging
from bot.runtime import DatabaseUnavailable, initialise, open_runtime, upgrade_database
from storage.keyring import KeyringError

log = logging.getLogger("tipline")
T = TypeVar("T")

EXIT_USAGE = 2
EXIT_FAILURE = 1
EXIT_INTERNAL = 70

app = typer.Typer(
    help="tipline: a secure tip line inside messengers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")


class CliError(Exception):
    """A failure to report as one line with a chosen exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


def _fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    typer.echo(f"tipline: {message}", err=True)
    raise typer.Exit(code)


def _settings(*, interactive: bool = False) -> Settings:
    os.umask(0o077)  # the database, keyring and any temp file: owner only
    settings = load_settings()
    level = settings.log_level
    if interactive and "TIPLINE_LOG_LEVEL" not in os.environ:
        level = "WARNING"  # keep the terminal for the reporter
    setup_logging(level)
    return settings


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@app.command()
def init(
    dev: bool = typer.Option(
        False, "--dev", help="Create the TIPLINE_ROOT_KEY_FILE if missing (development only)."
    ),
) -> None:
    """Create the data directory, the sealed keyring and the database schema."""
    settings = _settings()
    typer.echo(f"tipline: {_run(initialise(settings, dev=dev))}")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration."""
    settings = _settings()
    revision = _run(upgrade_database(settings))
    typer.echo(f"tipline: database at revision {revision}")


async def _console(settings: Settings) -> None:
    runtime = await open_runtime(settings)
    try:
        await ConsoleChannel(runtime.intake, runtime.conversation).run()
    finally:
        await runtime.close()


@app.command()
def console() -> None:
    """Walk the reporter questionnaire in this terminal (``help`` lists the commands)."""
    settings = _settings(interactive=True)
    _run(_console(settings))


@app.command()
def run() -> None:
    """Run every configured channel and the jobs in one event loop."""
    settings = _settings()
    if not (settings.telegram_enabled or settings.signal_enabled):
        message = (
            "no messenger is configured: set TIPLINE_TELEGRAM_TOKEN, or TIPLINE_SIGNAL_API_URL "
            "and TIPLINE_SIGNAL_NUMBER (see README.md); 'tipline console' runs the questionnaire "
            "in a terminal"
        )
        if sys.stdin.isatty():
            typer.echo(f"tipline: {message}; starting the console now.", err=True)
            _run(_console(settings))
            return
        _fail(message)
    _fail("the Telegram and Signal channels are not available in this version yet")


def main() -> None:
    """Entry point: runs the app and turns every known failure into one line."""
    try:
        app()
    except (ConfigError, KeyringError, DatabaseUnavailable) as exc:
        typer.echo(f"tipline: {exc}", err=True)
        sys.exit(EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILURE)
    except KeyboardInterrupt:
        typer.echo("tipline: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # the last line of defence: never a traceback
        log.error("internal error: %s", type(exc).__name__)
        typer.echo(
            f"tipline: internal error ({type(exc).__name__})",
            err=True,
        )
        sys.exit(EXIT_INTERNAL)


if __name__ == "__main__":
    main()
