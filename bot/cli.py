"""The ``tipline`` command line; every failure is one clear line and a non-zero exit."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import getpass
import io
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer

from bot.channels.console import ConsoleChannel
from bot.config import ConfigError, Settings, load_settings
from bot.control import ControlError, NotRunning, request
from bot.deadline_table import load_deadline_table
from bot.domain.deadlines import DeadlineTableError
from bot.domain.questionnaire import LANGUAGES
from bot.keypolicy import check_new_root
from bot.logs import setup_logging
from bot.runtime import (
    DatabaseUnavailable,
    Runtime,
    argon2_cost,
    check_database,
    initialise,
    key_source_warning,
    open_engine,
    open_runtime,
    root_secret,
    upgrade_database,
)
from bot.services.admin import Busy
from bot.services.casework import Casework, CaseworkError
from bot.services.evidence import verify_package
from bot.services.ports import KekUsage
from bot.services.roster import LawyerError
from bot.supervisor import Refused, run_service
from storage.keyring import KeyringError, KeyringFile
from storage.lifecycle import delete_every_row, queue_depths

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
keys_app = typer.Typer(help="Key-encryption keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
audit_app = typer.Typer(help="The audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
lawyers_app = typer.Typer(help="Lawyers (and admins who get alerts).", no_args_is_help=True)
app.add_typer(lawyers_app, name="lawyers")
cases_app = typer.Typer(help="Cases (metadata only).", no_args_is_help=True)
app.add_typer(cases_app, name="cases")
events_app = typer.Typer(
    help="Events (raids): cases grouped, with counts that survive purges.", no_args_is_help=True
)
app.add_typer(events_app, name="events")
export_app = typer.Typer(help="Signed evidence packages.", no_args_is_help=True)
app.add_typer(export_app, name="export")


def _csv(value: str) -> list[str]:
    return [part.strip().lower() for part in value.split(",") if part.strip()]


@lawyers_app.command("invite")
def lawyers_invite(
    name: str = typer.Option("", "--name", help="The lawyer's name (stored encrypted)."),
    languages: str = typer.Option("az,ru", "--languages", help="Languages, e.g. az,ru."),
    regions: str = typer.Option("all", "--regions", help="Regions, e.g. baku,ganja, or all."),
    on_call: bool = typer.Option(False, "--on-call", help="Takes urgent (P1) cases first."),
    admin: bool = typer.Option(False, "--admin", help="An admin who gets alerts, no cases."),
    renew: int | None = typer.Option(
        None, "--renew", help="A new invite for this lawyer id (new phone, changed safety number)."
    ),
) -> None:
    """Print a one-time invite code (valid 72 hours) for /register in Signal or Telegram."""
    settings = _settings()
    if renew is not None:
        renewed = renew
        code = _run(_with_runtime(settings, lambda rt: rt.roster.renew(renewed)))
        typer.echo(f"tipline: lawyer {renew} renewed; invite code (valid 72 hours, once): {code}")
        return
    role = "admin" if admin else "lawyer"
    lawyer_id, code = _run(
        _with_runtime(
            settings,
            lambda rt: rt.roster.invite(
                name=name,
                languages=_csv(languages),
                regions=_csv(regions),
                on_call=on_call,
                role=role,
            ),
        )
    )
    typer.echo(f"tipline: {role} {lawyer_id} invited; invite code (valid 72 hours, once): {code}")
    typer.echo(f"tipline: they send '/register {code}' to the bot, then read you their phrase")


@lawyers_app.command("list")
def lawyers_list() -> None:
    """Lawyers and admins: id, name, role, status, languages, regions, on call, open cases."""
    roster = _admin(lambda rt: rt.roster.roster())
    rows = [
        (
            x.id,
            x.name,
            x.role,
            x.status,
            ",".join(x.languages),
            ",".join(x.regions),
            "yes" if x.on_call else "",
            x.open_cases,
        )
        for x in roster
    ]
    header = ["id", "name", "role", "status", "languages", "regions", "on call", "open"]
    _listing(header, rows, "tipline: no lawyers yet")


def _read_secret_line(prompt: str) -> str:
    """A line from the terminal without echo, or from standard input when it is not one."""
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    return sys.stdin.readline().rstrip("\r\n")


@lawyers_app.command("verify")
def lawyers_verify(
    lawyer_id: int = typer.Argument(..., help="The id from 'tipline lawyers list'."),
) -> None:
    """Verify a registered lawyer after checking their phrase out of band (call, meeting).

    The phrase is typed at the prompt (or piped on standard input), never given as an argument,
    where ps and shell history would keep it.
    """
    settings = _settings()
    phrase = _read_secret_line("phrase the lawyer read out: ")
    _run(_with_runtime(settings, lambda rt: rt.roster.verify(lawyer_id, phrase)))
    typer.echo(f"tipline: lawyer {lawyer_id} verified")


@lawyers_app.command("revoke")
def lawyers_revoke(lawyer_id: int = typer.Argument(..., help="The lawyer's id.")) -> None:
    """Revoke at once; their open cases go back to routing."""
    moved = _admin(lambda rt: rt.roster.revoke(lawyer_id))
    typer.echo(f"tipline: lawyer {lawyer_id} revoked; {moved} open cases re-routed")


@cases_app.command("list")
def cases_list() -> None:
    """Open cases: number, priority, status, lawyer, dates. Never content."""
    cases = _admin(lambda rt: rt.roster.cases())
    rows = [
        (
            f"#{c.number}",
            f"P{c.priority}",
            c.status,
            c.assigned_lawyer_id or "",
            c.created_on.isoformat(),
            c.expires_at.strftime("%Y-%m-%d %H:%M"),
        )
        for c in cases
    ]
    header = ["case", "priority", "status", "lawyer", "created", "expires (UTC)"]
    _listing(header, rows, "tipline: no open cases")


def _casework(runtime: Runtime) -> Casework:
    assert runtime.casework is not None, "open_runtime wires casework"
    return runtime.casework


def _language(language: str) -> str:
    if language not in LANGUAGES:
        _fail(f"--language must be one of {', '.join(LANGUAGES)}", EXIT_USAGE)
    return language


@cases_app.command("export")
def cases_export(
    number: int = typer.Argument(..., help="The case number."),
    to: Path = typer.Option(..., "--to", help="The ZIP file to write (must not exist)."),
    language: str = typer.Option("en", "--language", help="Language of the readable page."),
) -> None:
    """Write a case's signed evidence package (HURIDOCS fields, a page, originals); audited."""
    settings = _settings()
    language = _language(language)
    if to.exists():
        _fail(f"{to} exists already; choose a new file name", EXIT_USAGE)
    package = _run(_with_runtime(settings, lambda rt: _casework(rt).export(number, language)))
    try:
        # Straight to the one file asked for (owner only): no temporary copy anywhere.
        fd = os.open(to, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(package)
    except OSError as exc:
        _fail(f"cannot write {to}: {exc.strerror}")
    typer.echo(f"tipline: evidence package of case #{number} written to {to}")
    typer.echo(f"tipline: check it with 'tipline export verify {to}'")


@export_app.command("verify")
def export_verify(
    file: Path = typer.Argument(..., help="An evidence package (ZIP)."),
    public_key: str | None = typer.Option(
        None,
        "--public-key",
        help="Check against this Ed25519 public key (hex) instead of this instance's key.",
    ),
) -> None:
    """Check a package's signature and every file's SHA-256; names the first file that fails."""
    try:
        data = file.read_bytes()
    except OSError as exc:
        _fail(f"cannot read {file}: {exc.strerror}")
    if public_key is not None:
        try:
            trusted = bytes.fromhex(public_key.strip())
        except ValueError:
            trusted = b""
        if len(trusted) != 32:
            _fail("--public-key must be 64 hex digits (an Ed25519 public key)", EXIT_USAGE)
    else:
        settings = _settings()
        trusted = _run(_with_runtime(settings, lambda rt: _public_key(rt)))
    verdict = verify_package(data, [trusted])
    if not verdict.ok:
        where = f"{verdict.file} " if verdict.file else ""
        _fail(f"{file}: {where}{verdict.problem}")
    typer.echo(
        f"tipline: {file} verified: case #{verdict.case}, {verdict.files} files, signed by "
        f"{verdict.public_key}"
    )


async def _public_key(runtime: Runtime) -> bytes:
    return runtime.vault.keyring.public_key()


@events_app.command("list")
def events_list() -> None:
    """Events: number, city, dates, linked cases, people (small counts suppressed)."""
    summaries = _admin(lambda rt: _casework(rt).list_events())
    rows = [
        (
            s.event.number,
            s.event.city,
            s.event.start.isoformat(),
            s.event.end.isoformat(),
            len(s.cases),
            dict(s.shown)["people"],
        )
        for s in summaries
    ]
    header = ["event", "city", "from", "to", "cases now", "people"]
    typer.echo(_table(header, rows) if rows else "tipline: no events yet")


@events_app.command("show")
def events_show(number: int = typer.Argument(..., help="The event number.")) -> None:
    """One event's counts (small counts suppressed) and the cases linked to it now."""
    summary = _admin(lambda rt: _casework(rt).event_summary(number))
    event = summary.event
    typer.echo(
        f"event {event.number}: {event.city}, {event.start.isoformat()} to {event.end.isoformat()}"
    )
    typer.echo(_table(["count", "shown"], summary.shown))
    linked = ", ".join(f"#{n}" for n in summary.cases) or "none (purged or not linked yet)"
    typer.echo(f"cases linked now: {linked}")


@events_app.command("link")
def events_link(
    number: int = typer.Argument(..., help="The event number."),
    case: int = typer.Argument(..., help="The case number."),
) -> None:
    """Link a case to an event; its counts are added to the event's (audited)."""
    done = _admin(lambda rt: _casework(rt).link(number, case))
    typer.echo(f"tipline: {done}")


class StatsFormat(StrEnum):
    """Output formats of ``tipline stats``."""

    TABLE = "table"
    CSV = "csv"
    PNG = "png"
    PDF = "pdf"


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


async def _with_runtime(settings: Settings, action: Callable[[Runtime], Awaitable[T]]) -> T:
    # In production no key source is on the disk: an admin types the passphrase.
    runtime = await open_runtime(settings, secret=root_secret(settings, interactive=True))
    try:
        return await action(runtime)
    finally:
        await runtime.close()


def _admin(action: Callable[[Runtime], Awaitable[T]]) -> T:
    """Run one admin use case on a runtime opened for it (the passphrase asked if need be)."""
    return _run(_with_runtime(_settings(), action))


def _listing(header: Sequence[str], rows: Sequence[Sequence[object]], empty: str) -> None:
    typer.echo(_table(header, rows) if rows else empty)


def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    body = [[str(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in body]
    return "\n".join(lines)


@keys_app.command("status")
def keys_status() -> None:
    """Key versions, how many records each wraps, and when each was made (no secret)."""
    usage, public = _admin(_key_status)
    tables = sorted({t for k in usage for t in k.records})
    rows = [
        (
            k.kek_id,
            k.created_at.strftime("%Y-%m-%d %H:%M"),
            "yes" if k.current else "",
            *(k.records.get(t, 0) for t in tables),
        )
        for k in usage
    ]
    typer.echo(_table(["KEK", "created (UTC)", "current", *tables], rows))
    typer.echo(f"instance signing key (Ed25519, public; evidence packages): {public.hex()}")


async def _key_status(runtime: Runtime) -> tuple[Sequence[KekUsage], bytes]:
    return await runtime.admin.key_status(), runtime.vault.keyring.public_key()


@keys_app.command("rotate")
def keys_rotate(
    root: bool = typer.Option(False, "--root", help="Seal the KEKs under a new passphrase."),
    new_passphrase_file: Path | None = typer.Option(
        None, "--new-passphrase-file", help="File with the new passphrase (for --root)."
    ),
) -> None:
    """A new KEK, every record re-wrapped in batches, the old KEK destroyed; resumable."""
    settings = _settings()
    if root:
        if new_passphrase_file is None and not sys.stdin.isatty():
            _fail("--root needs --new-passphrase-file (or a terminal to ask)", EXIT_USAGE)
        new = Settings(passphrase_file=new_passphrase_file) if new_passphrase_file else None
        secret = root_secret(new or Settings(), interactive=True, confirm=True)
        cost = argon2_cost(settings)
        check_new_root(secret, cost, settings.profile)
        _run(_with_runtime(settings, lambda rt: rt.admin.rotate_root(secret, cost)))
        typer.echo(
            "tipline: the keyring is sealed with the new passphrase; a running service needs "
            "'tipline lock', then 'tipline unlock' with it"
        )
        return
    report = _run(_with_runtime(settings, lambda rt: rt.admin.rotate()))
    destroyed = ", ".join(str(k) for k in report.destroyed) or "none"
    typer.echo(
        f"tipline: KEK {report.current_kek_id} is current; {report.rewrapped} records "
        f"re-wrapped; destroyed KEK: {destroyed}"
    )
    if report.unreadable_removed:
        typer.echo(f"tipline: {report.unreadable_removed} unreadable records were removed")
    if not report.complete:
        _fail("rotation not finished: some records are in use; run it again")


@app.command()
def purge(
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Count what has expired; delete nothing."
    ),
) -> None:
    """Delete expired drafts and cases, then ratchet the KEK (crypto-erase)."""
    report = _admin(lambda rt: rt.admin.purge(dry_run=dry_run))
    counts = ", ".join(
        f"{n} {table}"
        for table, n in report.expired.items()
        if table not in ("seen_updates", "queue_items")
    )
    if dry_run:
        typer.echo(f"tipline: would purge {counts} (dry run: nothing deleted)")
        return
    if not any(report.expired.values()):
        if report.rotation is None:
            typer.echo("tipline: nothing has expired")
            return
        # A ratchet that deletions were waiting for ran anyway.
        typer.echo("tipline: nothing has expired; deletions waiting for erasure were erased")
    else:
        typer.echo(f"tipline: purged {counts}")
    if report.rotation is not None:
        destroyed = ", ".join(str(k) for k in report.rotation.destroyed) or "none"
        typer.echo(
            f"tipline: KEK {report.rotation.current_kek_id} is current; destroyed KEK: {destroyed}"
        )


@app.command()
def wipe(
    yes: bool = typer.Option(False, "--yes", help="Really destroy every key and every record."),
) -> None:
    """Emergency wipe: destroy every KEK first (all data unreadable at once), then every row."""
    if not yes:
        _fail(
            "wipe destroys every key and every record, for good; run 'tipline wipe --yes' to do it",
            EXIT_USAGE,
        )
    settings = _settings()
    # A running service drops its keys first, so that it cannot write the keyring back.
    with contextlib.suppress(NotRunning):
        _run(request(settings.effective_control_socket, {"op": "wipe"}))
    if settings.key_source is not None:
        _run(_with_runtime(settings, lambda rt: rt.admin.wipe()))
        typer.echo("tipline: wiped: every key destroyed, every record deleted")
        return
    destroyed = KeyringFile(settings.effective_keyring_file).destroy()
    try:
        _run(_delete_every_row(settings))
    except DatabaseUnavailable as exc:
        what = "the keyring is destroyed" if destroyed else "there was no keyring"
        _fail(f"{what}, so nothing in the database can be read; deleting its rows failed: {exc}")
    if destroyed:
        typer.echo("tipline: wiped: the keyring is destroyed (no key left), every record deleted")
    else:
        typer.echo("tipline: wiped: there was no keyring; every record deleted")


async def _delete_every_row(settings: Settings) -> None:
    engine = open_engine(settings)
    try:
        await check_database(engine, settings.effective_database_url)
        await delete_every_row(engine)
    finally:
        await engine.dispose()


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the audit log's hash chain and name the first broken entry."""
    count, problem = _admin(lambda rt: rt.admin.verify_audit())
    if problem is not None:
        _fail(f"audit log broken at entry {problem.entry_id}: it {problem.reason}")
    typer.echo(f"tipline: audit log intact ({count} entries)")


@app.command()
def stats(
    fmt: StatsFormat = typer.Option(StatsFormat.TABLE, "--format", help="table, csv or png."),
    threshold: int | None = typer.Option(
        None, "--threshold", min=3, help="Counts below this are shown as <N (default 5)."
    ),
    output: Path | None = typer.Option(
        None, "--output", help="File to write (png and pdf: required)."
    ),
    event: int | None = typer.Option(None, "--event", help="One event's counts instead."),
    language: str = typer.Option("en", "--language", help="Language of the pdf: en, ru, az."),
) -> None:
    """Counts by week, region and category, each week and region protected as one table.

    Counts under the threshold are shown as <N. Suppression is complementary: where the
    reports, the situations that add up to them and what happened (each at most the reports)
    would still let a <N count be worked out by subtraction, more counts are withheld, shown as
    x (each at least N); a table that cannot be protected so is shown as its total alone. The
    PDF adds up only counts shown here (a sum with a hidden count is shown as >=M, the least it
    can be). Counters are kept by week, never by day.
    """
    settings = _settings()
    threshold = threshold or settings.stats_threshold
    language = _language(language)
    if fmt in (StatsFormat.PNG, StatsFormat.PDF) and output is None:
        _fail(f"--format {fmt.value} needs --output FILE.{fmt.value}", EXIT_USAGE)
    if event is not None or fmt is StatsFormat.PDF:
        _stats_report(settings, threshold, output, event, language, fmt)
        return
    cells = _run(_with_runtime(settings, lambda rt: rt.admin.statistics(threshold)))
    if not cells:
        _fail("no statistics yet: nothing has been submitted")
    if fmt is StatsFormat.PNG:
        assert output is not None
        # matplotlib is most of the CLI's start-up time: only the chart imports it.
        from bot.charts import reports_chart

        reports_chart(cells, threshold, output)
        typer.echo(f"tipline: chart written to {output}")
        return
    header = ["week", "region", "category", "count"]
    rows = [(c.week.isoformat(), c.region, c.category, c.shown) for c in cells]
    _write_rows(header, rows, fmt, output)


def _write_rows(
    header: Sequence[str], rows: Iterable[Sequence[object]], fmt: StatsFormat, output: Path | None
) -> None:
    """Rows as a table or CSV, to a file or standard output."""
    if fmt is StatsFormat.CSV:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        text = buffer.getvalue()
    else:
        text = _table(header, rows) + "\n"
    if output is not None:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"tipline: statistics written to {output}")
    else:
        typer.echo(text, nl=False)


def _stats_report(
    settings: Settings,
    threshold: int,
    output: Path | None,
    event: int | None,
    language: str,
    fmt: StatsFormat,
) -> None:
    """The one-page PDF (statistics or one event), or an event's counts as a table or CSV."""
    from bot.domain.advocacy import event_page, statistics_page

    async def page(runtime: Runtime) -> Any:
        texts, today = runtime.conversation.texts, runtime.clock().date()
        if event is None:
            rows = [
                (r.week, r.region, r.category, r.count)
                for r in await runtime.maintenance.stat_rows()
            ]
            if not rows:
                raise CaseworkError("no statistics yet: nothing has been submitted")
            return statistics_page(texts, language, rows, threshold, today)
        summary = await _casework(runtime).event_summary(event)
        found = summary.event
        return event_page(
            texts,
            language,
            number=found.number,
            city=found.city,
            start=found.start,
            end=found.end,
            counts=dict(summary.counts),
            threshold=threshold,
            generated=today,
        )

    if fmt is StatsFormat.PNG:
        _fail("--event works with --format table, csv or pdf", EXIT_USAGE)
    report = _run(_with_runtime(settings, page))
    if fmt is StatsFormat.PDF:
        assert output is not None
        # matplotlib is most of the CLI's start-up time: only the report imports it.
        from bot.report_pdf import write_pdf

        write_pdf(report, output)
        typer.echo(f"tipline: report written to {output}")
        return
    header, rows = report.header, report.rows
    _write_rows(header, rows, fmt, output)


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
    runtime = await open_runtime(settings, secret=root_secret(settings, interactive=True))
    try:
        await ConsoleChannel(runtime.inbound, runtime.uow, runtime.clock).run()
    finally:
        await runtime.close()


@app.command()
def console() -> None:
    """Walk the reporter questionnaire in this terminal (``help`` lists the commands)."""
    settings = _settings(interactive=True)
    _warn_key_source(settings)
    _run(_console(settings))


def _warn_key_source(settings: Settings) -> None:
    warning = key_source_warning(settings)
    if warning is not None:
        typer.echo(f"tipline: {warning}", err=True)


@app.command()
def run() -> None:
    """Run every configured channel and the jobs in one event loop."""
    settings = _settings()
    load_deadline_table(settings.deadlines_file)  # a malformed table stops the start at once
    if not (settings.telegram_enabled or settings.signal_enabled):
        message = (
            "no messenger is configured: set TIPLINE_TELEGRAM_TOKEN, or TIPLINE_SIGNAL_API_URL "
            "and TIPLINE_SIGNAL_NUMBER (see README.md); 'tipline console' runs the questionnaire "
            "in a terminal"
        )
        if sys.stdin.isatty():
            typer.echo(f"tipline: {message}; starting the console now.", err=True)
            _warn_key_source(settings)
            _run(_console(settings))
            return
        _fail(message)
    _warn_key_source(settings)
    _run(run_service(settings))


def _ask(settings: Settings, op: str, **fields: str) -> dict[str, Any]:
    return _run(request(settings.effective_control_socket, {"op": op, **fields}))


def _ask_ok(settings: Settings, op: str, **fields: str) -> dict[str, Any]:
    """The service's answer, or its error as one line and a non-zero exit."""
    answer = _ask(settings, op, **fields)
    if not answer.get("ok"):
        _fail(str(answer.get("error", f"{op} failed")))
    return answer


@app.command()
def unlock() -> None:
    """Type the passphrase (or pipe it on standard input) to unlock the running service."""
    settings = _settings()
    if _ask(settings, "status").get("state") == "unlocked":
        _fail("already unlocked")
    try:
        passphrase = _read_secret_line("tipline passphrase: ")
    except EOFError:
        passphrase = ""
    if not passphrase:
        _fail("no passphrase given", EXIT_USAGE)
    try:
        _ask_ok(settings, "unlock", passphrase=passphrase)
    finally:
        del passphrase
    typer.echo("tipline: unlocked; the channels and jobs are starting")


@app.command()
def lock() -> None:
    """Drop every key from the running service's memory and stop its channels and jobs."""
    settings = _settings()
    _ask_ok(settings, "lock")
    typer.echo("tipline: locked; every key dropped, channels and jobs stopped")


@app.command()
def status() -> None:
    """Locked or unlocked, the channels, queue depths and the jobs' last rounds; no secret."""
    settings = _settings()
    answer = _ask_ok(settings, "status")
    typer.echo(f"tipline: {answer.get('state')}")
    channels = answer.get("channels") or {}
    listed = ", ".join(f"{name} {state}" for name, state in channels.items())
    typer.echo(f"channels: {listed or 'none configured'}")
    try:
        depths = _run(_queue_depths(settings))
        queues = ", ".join(f"{name} {n}" for name, n in depths.items()) or "empty"
    except DatabaseUnavailable as exc:
        queues = f"unknown ({exc})"
    typer.echo(f"queues: {queues}")
    jobs = answer.get("jobs") or {}
    typer.echo(
        "jobs last ran: "
        + (", ".join(f"{job} {when or 'never'}" for job, when in jobs.items()) or "none yet")
    )


async def _queue_depths(settings: Settings) -> dict[str, int]:
    engine = open_engine(settings)
    try:
        await check_database(engine, settings.effective_database_url, need_head=False)
        return await queue_depths(engine)
    finally:
        await engine.dispose()


def main() -> None:
    """Entry point: runs the app and turns every known failure into one line."""
    try:
        app()
    except (
        ConfigError,
        KeyringError,
        DatabaseUnavailable,
        LawyerError,
        ControlError,
        Refused,
        CaseworkError,
        DeadlineTableError,
        Busy,
    ) as exc:
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
