"""Composition root: unlock the keys, open the database, wire services for CLI, jobs, channels."""

from __future__ import annotations

import asyncio
import getpass
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.config import Settings
from bot.deadline_table import load_deadline_table
from bot.domain.engine import Engine
from bot.domain.questionnaire import REPORT
from bot.domain.retention import number_hold
from bot.i18n import load_texts
from bot.keypolicy import check_cost, check_new_root
from bot.services.admin import AdminService
from bot.services.casework import Casework, CaseworkPolicy
from bot.services.clock import Clock, system_clock
from bot.services.erasure import Erasure
from bot.services.inbound import InboundService, Senders
from bot.services.intake import IntakePolicy, IntakeService
from bot.services.ratelimit import RateLimit
from bot.services.reporter import ReporterService, ScreenPolicy
from bot.services.roster import RosterService
from bot.services.routing import LawyerPolicy, Routing
from bot.services.staff import StaffCommands
from storage import migrate
from storage.db import dispose, make_engine, make_session_factory
from storage.keyring import (
    Argon2Cost,
    KeyFile,
    KeyringError,
    KeyringFile,
    KeyVault,
    Passphrase,
    RootSecret,
)
from storage.lifecycle import next_kek_id
from storage.maintenance import Maintenance
from storage.numbers import CaseNumbering
from storage.repositories import SqlUnitOfWork

MIN_PASSPHRASE = 12


class Locked(KeyringError):
    """No root key source is configured: the service stays locked."""


class DatabaseUnavailable(Exception):
    """The database does not answer or is not migrated; the message is one clear line."""


def describe_url(url: str) -> str:
    """A database URL safe to print (no password)."""
    return make_url(url).render_as_string(hide_password=True)


def root_secret(
    settings: Settings, *, interactive: bool = False, confirm: bool = False
) -> RootSecret:
    """The configured root key source; a terminal may be asked for the passphrase."""
    if settings.root_key_file is not None:
        return KeyFile.read(settings.root_key_file)
    if settings.passphrase_file is not None:
        try:
            text = settings.passphrase_file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise KeyringError(
                f"cannot read TIPLINE_PASSPHRASE_FILE {settings.passphrase_file}: {exc.strerror}"
            ) from exc
        return _passphrase(text)
    if settings.passphrase is not None:
        return _passphrase(settings.passphrase.get_secret_value())
    if interactive and sys.stdin.isatty():
        first = getpass.getpass("tipline passphrase: ")
        if confirm and getpass.getpass("again: ") != first:
            raise KeyringError("the two passphrases differ")
        return _passphrase(first)
    raise Locked(
        "locked: no root key; run this in a terminal to type the passphrase "
        "(TIPLINE_PASSPHRASE_FILE or TIPLINE_ROOT_KEY_FILE only for development)"
    )


def _passphrase(text: str) -> Passphrase:
    if len(text) < MIN_PASSPHRASE:
        raise KeyringError(f"the passphrase must have at least {MIN_PASSPHRASE} characters")
    return Passphrase(text.encode("utf-8"))


def key_source_warning(settings: Settings) -> str | None:
    """The one warning line for a root key source kept on this machine, if one is set."""
    if settings.key_source is None:
        return None
    return (
        f"warning: {settings.key_source} is set: the key source is on this machine, so a seized "
        "disk can be read (development and tests only)"
    )


def _no_lock() -> None:
    """What ``request_lock`` is when no supervisor runs (the CLI, tests)."""


def argon2_cost(settings: Settings) -> Argon2Cost:
    """Argon2id costs from the settings."""
    return Argon2Cost(settings.argon2_iterations, settings.argon2_memory_kib, settings.argon2_lanes)


async def check_database(engine: AsyncEngine, url: str, *, need_head: bool = True) -> None:
    """Fail with one clear line when the database does not answer or is behind the code."""
    try:
        revision = await migrate.current(engine)
    except (DBAPIError, OSError, TimeoutError) as exc:
        raise DatabaseUnavailable(f"database does not answer: {describe_url(url)}") from exc
    except SQLAlchemyError as exc:
        raise DatabaseUnavailable(f"database error at {describe_url(url)}") from exc
    if need_head and revision not in migrate.heads():
        raise DatabaseUnavailable("the database schema is not current: run 'tipline db upgrade'")


def open_engine(settings: Settings) -> AsyncEngine:
    """The database engine; the data directory is made private first for SQLite."""
    url = settings.effective_database_url
    if settings.database_url is None:
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    kwargs = (
        {} if make_url(url).get_backend_name() == "sqlite" else {"connect_args": {"timeout": 10}}
    )
    return make_engine(url, **kwargs)


def units_of_work(
    sessions: async_sessionmaker[AsyncSession],
    vault: KeyVault,
    numbering: CaseNumbering | None = None,
) -> Callable[[], SqlUnitOfWork]:
    """The factory every service gets: one unit of work per call, keys checked on entry."""
    return partial(SqlUnitOfWork, sessions, vault.keyring, vault, numbering)


def case_numbering(settings: Settings) -> CaseNumbering:
    """Case numbers held for two retention ceilings (storage/numbers.py)."""
    return CaseNumbering(hold=number_hold(timedelta(days=settings.max_retention_days)))


def maintenance(settings: Settings, engine: AsyncEngine, vault: KeyVault) -> Maintenance:
    """Storage-level admin operations with this instance's retention settings."""
    return Maintenance(
        engine,
        vault,
        audit_retention=timedelta(days=settings.audit_retention_days),
        max_retention=timedelta(days=settings.max_retention_days),
    )


@dataclass(slots=True)
class Runtime:
    """Everything an unlocked instance needs, built once."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    vault: KeyVault
    intake: IntakeService
    conversation: Engine
    clock: Clock
    senders: Senders
    routing: Routing
    roster: RosterService
    inbound: InboundService
    #: Ask the running service to lock (deliver the outbox, stop, drop every key); a no-op
    #: outside ``tipline run``.
    request_lock: Callable[[], None] = _no_lock
    #: Events, legal deadlines and evidence packages.
    casework: Casework | None = None

    def uow(self) -> SqlUnitOfWork:
        """A new unit of work."""
        return units_of_work(self.sessions, self.vault, case_numbering(self.settings))()

    @property
    def shared(self) -> bool:
        """Whether other ``tipline run`` processes may share the database (not SQLite)."""
        return self.engine.dialect.name != "sqlite"

    @property
    def maintenance(self) -> Maintenance:
        """Storage-level admin operations on this instance."""
        return maintenance(self.settings, self.engine, self.vault)

    @property
    def admin(self) -> AdminService:
        """Admin use cases (audited)."""
        return AdminService(self.maintenance, self.clock)

    async def close(self) -> None:
        """Release database connections."""
        await dispose(self.engine)


async def open_runtime(
    settings: Settings,
    *,
    clock: Clock = system_clock,
    secret: RootSecret | None = None,
    request_lock: Callable[[], None] | None = None,
) -> Runtime:
    """Unlock the keyring and open the database; raises Locked, KeyringError or
    DatabaseUnavailable with a clear message."""
    table = load_deadline_table(settings.deadlines_file)  # a bad table fails before any key
    keyring_file = KeyringFile(settings.effective_keyring_file)
    # Argon2id takes about a second: off the event loop, so a running service stays responsive.
    vault = await asyncio.to_thread(keyring_file.open, secret or root_secret(settings))
    engine = open_engine(settings)
    try:
        await check_database(engine, settings.effective_database_url)
    except BaseException:
        await dispose(engine)
        vault.forget()
        raise
    sessions = make_session_factory(engine)
    engine_ = Engine(REPORT, load_texts(settings.languages))
    policy = IntakePolicy(
        draft_ttl=timedelta(hours=settings.draft_ttl_hours),
        retention=timedelta(days=settings.retention_days),
    )
    try:
        # Rows from before index keys ratcheted (migration 0009) are re-keyed first, once.
        await maintenance(settings, engine, vault).upgrade_lookups(clock())
    except BaseException:
        await dispose(engine)
        vault.forget()
        raise
    uow = units_of_work(sessions, vault, case_numbering(settings))
    senders = Senders()
    lawyer_policy = LawyerPolicy(
        cap=settings.lawyer_cap,
        content_over_telegram=settings.allow_case_content_over_telegram,
        max_retention=timedelta(days=settings.max_retention_days),
    )
    routing = Routing(uow, engine_.texts, clock, lawyer_policy, wake=senders.wake)
    roster = RosterService(uow, routing, clock, lawyer_policy)
    casework = Casework(
        uow,
        engine_.texts,
        clock,
        table,
        vault.keyring,
        CaseworkPolicy(
            threshold=settings.stats_threshold,
            max_retention=timedelta(days=settings.max_retention_days),
            content_over_telegram=settings.allow_case_content_over_telegram,
        ),
        wake=senders.wake,
    )
    erasure = Erasure(timedelta(minutes=settings.erase_within_minutes))
    reporter = ReporterService(
        engine_.texts,
        ScreenPolicy(
            receipt=timedelta(minutes=settings.receipt_screen_minutes),
            read=timedelta(minutes=settings.read_screen_minutes),
            read_ttl=timedelta(hours=settings.read_message_ttl_hours),
            question=policy.draft_ttl,
            mailbox=policy.retention,
        ),
        erasure,
    )
    staff = StaffCommands(
        engine_.texts, routing, lawyer_policy, casework=casework, reporter=reporter
    )
    intake = IntakeService(engine_, policy, routing, reports_per_day=settings.reports_per_day)
    intake.casework = casework
    intake.erasure = erasure
    roster.erasure = erasure
    inbound = InboundService(uow, intake, staff, engine_, clock, RateLimit(), senders)
    runtime = Runtime(
        settings,
        engine,
        sessions,
        vault,
        intake,
        engine_,
        clock,
        senders,
        routing,
        roster,
        inbound,
        request_lock or _no_lock,
        casework=casework,
    )
    # Looked up at the time of the command: a supervisor may set it after the runtime is built.
    staff.request_lock = lambda: runtime.request_lock()
    return runtime


async def initialise(settings: Settings, *, dev: bool, clock: Clock = system_clock) -> str:
    """Create the data directory, the keyring and the schema; safe to run again."""
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if dev and settings.root_key_file is not None and not settings.root_key_file.exists():
        _write_dev_key(settings.root_key_file)
    keyring_file = KeyringFile(settings.effective_keyring_file)
    created = not keyring_file.exists()
    cost = argon2_cost(settings)
    if created and settings.root_key_file is None:
        check_cost(cost, settings.profile)  # before anyone types a passphrase
    secret = root_secret(settings, interactive=True, confirm=True)
    if created:
        check_new_root(secret, cost, settings.profile)
    else:
        vault = await asyncio.to_thread(keyring_file.open, secret)
    engine = open_engine(settings)
    try:
        url = settings.effective_database_url
        await check_database(engine, url, need_head=False)
        await migrate.upgrade(engine)
        if created:
            first_id = await next_kek_id(engine)
            vault = await asyncio.to_thread(
                KeyVault.create, keyring_file, secret, cost, clock(), first_id
            )
        async with units_of_work(make_session_factory(engine), vault)() as uow:
            await uow.audit.append("admin", "init" if created else "init.again", None, clock())
            await uow.commit()
    finally:
        await dispose(engine)
    return "initialised" if created else "already initialised; schema is current"


def _write_dev_key(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(os.urandom(32).hex() + "\n")


async def upgrade_database(settings: Settings) -> str | None:
    """Bring the schema to the latest revision; returns the revision reached."""
    engine = open_engine(settings)
    try:
        await check_database(engine, settings.effective_database_url, need_head=False)
        await migrate.upgrade(engine)
        return await migrate.current(engine)
    finally:
        await dispose(engine)
