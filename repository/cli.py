"""The ``composite-store`` command line (also ``python -m composite_store``).

Commands:

* ``init``: create the tables of every domain (``--default URL`` plus one option per domain);
* ``demo``: simulate an afternoon of an agent application and print what was stored;
* ``stats``: rows per domain and table of one database;
* ``prune``: delete old rows in batches (retention), one line per table;
* ``migrate-spans``: copy ClickHouse's legacy span table into the current layout, day by day.

A failure prints the error's id and message to stderr and exits with status 1.  URLs are only
ever shown with their password masked.  This module only parses arguments and prints; the work
is done by the library (:mod:`repository.composite`, :mod:`repository.demo`).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, NoReturn, Sequence

import click

from .backends.base import mask_password
from .backends.chdb import MEMORY, is_chdb_url, parse_chdb_url
from .backends.sqlite import SQLiteBackend
from .composite import CompositeStore, store_for_url
from .demo import DEMO_URL, SECTIONS, render_report, run_demo
from .errors import NotFoundError, NotSupportedError, StorageError, ValidationError
from .retention import DEFAULT_BATCH_SIZE, retention_tables_by_domain, validated_retention
from .stores import DOMAINS


def fail(error: StorageError) -> NoReturn:
    """Print ``<id>: <message>`` to stderr and exit with status 1."""
    click.echo(f"{error.id}: {mask_password(error.message)}", err=True)
    sys.exit(1)


class _Quiet:
    """Stands in for a progress bar when stderr is not a terminal (logs and pipes stay clean)."""

    def __init__(self, items: Iterable[Any] | None) -> None:
        self.items = items

    def __iter__(self) -> Iterator[Any]:
        return iter(self.items or ())

    def update(self, steps: int) -> None:
        """Nothing to draw."""


@contextmanager
def progress(items: Iterable[Any] | None = None, *, length: int | None = None, label: str) -> Iterator[Any]:
    """``click.progressbar`` on stderr when it is a terminal, else a silent stand-in."""
    if sys.stderr.isatty():
        with click.progressbar(items, length=length, label=label, file=sys.stderr, show_eta=False) as bar:
            yield bar
    else:
        yield _Quiet(items)


def _domain_url_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """One ``--<domain> URL`` option per domain."""
    for key in reversed(DOMAINS):
        command = click.option(f"--{key}", key, metavar="URL", default=None,
                               help=f"Database of the {key} domain (default: --default).")(command)
    return command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True,
              help="Log the library's messages to stderr (-v: info, -vv: debug, -vvv: also the drivers' "
                   "and peewee's debug lines, SQL included).")
def cli(verbose: int) -> None:
    """Storage for AI-agent applications on SQLite, PostgreSQL and ClickHouse.

    URLs: sqlite:///path, file:./path, postgresql://user:pass@host:port/db[?schema_name=app],
    clickhouse://user:pass@host:port/db, chdb:///path/to/dir (ClickHouse in-process).
    """
    configure_logging(verbose=verbose)


def configure_logging(*, verbose: int) -> None:
    """Log to stderr: warnings of everyone, and the library's own (``composite_store.*``) lines at
    INFO with ``-v`` and DEBUG with ``-vv``; ``-vvv`` opens every logger at DEBUG.

    A failing command still prints one ``<id>: <message>`` line and no traceback: the drivers stay
    quiet below ``-vvv`` (the ClickHouse driver logs every failed connection attempt with one).
    """
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    if verbose >= 3:
        logging.getLogger().setLevel(logging.DEBUG)
        logging.getLogger("clickhouse_driver").setLevel(logging.NOTSET)
        return
    logging.getLogger("clickhouse_driver").setLevel(logging.ERROR)
    logging.getLogger("composite_store").setLevel({0: logging.NOTSET, 1: logging.INFO}.get(verbose, logging.DEBUG))


@cli.command()
@click.option("--default", "default", metavar="URL", default=None,
              help="Database of every domain not given its own URL.")
@_domain_url_options
def init(default: str | None, **domain_urls: str | None) -> None:
    """Create the missing tables of every domain (idempotent)."""
    urls = {key: url for key, url in domain_urls.items() if url is not None}
    try:
        with CompositeStore.from_urls(default=default, **urls) as storage:
            storage.init()
            for key in DOMAINS:
                repository = storage.get_store(key)
                where = repository.backend.display_url if repository is not None else "(not available)"
                click.echo(f"{key:<14} {where}")
    except StorageError as error:
        fail(error)
    click.echo("Tables are ready.")


@cli.command()
@click.option("--url", metavar="URL", default=None,
              help=f"Database for every domain (default: {DEMO_URL}, in the current directory).")
def demo(url: str | None) -> None:
    """Simulate one afternoon of an agent application, then print a summary of what was stored.

    Runs again on the same database without clearing it: every run uses fresh ids.
    """
    try:
        with CompositeStore.from_urls(default=url or DEMO_URL) as storage:
            storage.init()
            with progress(length=len(SECTIONS), label="Simulating an afternoon") as bar:
                report = run_demo(storage, on_section=lambda name: bar.update(1))
    except StorageError as error:
        fail(error)
    click.echo(render_report(report))


@cli.command()
@click.argument("url")
def stats(url: str) -> None:
    """Rows per domain and table of the database at URL (creates nothing)."""
    try:
        store = store_for_url(url)
    except StorageError as error:
        fail(error)
    backend = store.backend
    # Opening an embedded database creates it; a mistyped path deserves an error instead.
    if isinstance(backend, SQLiteBackend) and not backend.in_memory and not os.path.exists(backend.path):
        fail(NotFoundError(f"No SQLite database at {os.path.abspath(backend.path)}",
                           id="STORAGE_SQLITE_COUNT_ROWS_NOT_FOUND"))
    if is_chdb_url(url):
        path, _ = parse_chdb_url(url)
        if path != MEMORY and not os.path.isdir(path):
            fail(NotFoundError(f"No chdb directory at {path}", id="STORAGE_CLICKHOUSE_COUNT_ROWS_NOT_FOUND"))
    rows: list[tuple[str, str, int | None]] = []
    try:
        with store:
            with progress(store.domains, label="Counting rows") as domains:
                for key in domains:
                    for table, count in store.get_store(key).count_rows().items():
                        rows.append((key, table, count))
    except StorageError as error:
        fail(error)
    click.echo(render_stats(store.backend.display_url, rows))


@cli.command()
@click.argument("url")
@click.option("--policy", "policies", metavar="[DOMAIN.]TABLE=AGE", multiple=True, required=True,
              help="Delete rows of TABLE older than AGE (30d, 12h, 90m, 1w; a number is milliseconds). Tables: "
                   "messages, resources, threads, workflow_snapshot, scorers, spans, experiments. Repeatable.")
@click.option("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, show_default=True,
              help="Rows (experiments: whole experiments) deleted per transaction.")
@click.option("--max-batches", type=int, default=None, help="Stop each table after this many batches.")
@click.option("--max-rows", type=int, default=None, help="Stop each table after this many rows.")
@click.option("--pause-ms", type=int, default=0, show_default=True,
              help="Sleep between batches, to leave the database to other writers.")
def prune(url: str, policies: tuple[str, ...], batch_size: int, max_batches: int | None, max_rows: int | None,
          pause_ms: int) -> None:
    """Delete old rows of the database at URL in batches, one table at a time (SQLite, PostgreSQL;
    ClickHouse expires rows by TTL instead).  Prints the rows deleted and the rate per table."""
    try:
        plan = [(*_policy_table(text), {"max_age": _age(text.partition("=")[2]), "batch_size": batch_size})
                for text in policies]
        # Every policy is checked before the first row is deleted.
        validated_retention({domain: {table: policy} for domain, table, policy in plan},
                            error_id="STORAGE_CLI_PRUNE_INVALID_INPUT")
        store = store_for_url(url)
    except StorageError as error:
        fail(error)
    try:
        with store:
            for domain, table, policy in plan:
                repository = store.get_store(domain)
                if repository is None:
                    fail(NotSupportedError(f"The {domain} domain is not available on {store.backend.name}.",
                                           id=f"STORAGE_{store.backend.name}_PRUNE_NOT_SUPPORTED"))
                started = time.perf_counter()
                results = repository.prune(policies={table: policy}, max_batches=max_batches, max_rows=max_rows,
                                           pause_ms=pause_ms)
                seconds = time.perf_counter() - started
                for result in results:
                    click.echo(render_pruned(result, seconds))
    except StorageError as error:
        fail(error)


@cli.command("migrate-spans")
@click.argument("url")
@click.option("--max-days", type=int, default=None, help="Stop after this many days (run again to continue).")
def migrate_spans(url: str, max_days: int | None) -> None:
    """Copy the legacy span table (mastra_ai_spans) of the ClickHouse database at URL into the
    current layout (mastra_span_events), one day per server-side INSERT … SELECT.

    Resumable (a run interrupted anywhere continues where it stopped) and idempotent (a span is
    never copied twice; a finished migration is not run again).  Shows a progress bar on a
    terminal, else one line per day on stderr; prints the count check per day and a summary.
    """
    from .clickhouse import ObservabilityClickHouse

    try:
        repository = ObservabilityClickHouse(url=url, layout="vnext")
    except StorageError as error:
        fail(error)
    try:
        total = repository.check_spans_migration_status()["days"]
        with progress(length=max(total, 1), label="Migrating spans, day by day") as bar:
            def advanced(position: int, days: int, report: dict) -> None:
                bar.update(1)
                if not sys.stderr.isatty():  # no bar: one line per day instead
                    click.echo(f"{report['day']}: {report['copied']} of {report['source']} spans copied "
                               f"(day {position} of {days})", err=True)

            result = repository.migrate_spans(max_days=max_days, progress=advanced)
    except StorageError as error:
        fail(error)
    finally:
        repository.close()
    click.echo(render_migrated(result))


def render_migrated(result: dict) -> str:
    """The ``migrate-spans`` report: the count check per day (when days were copied), the message."""
    lines = []
    if result["days"]:
        lines.append(f"{'day':<12} {'legacy spans':>13} {'copied':>7} {'in target':>10} {'missing':>8}")
        lines.extend(f"{day['day']:<12} {day['source']:>13,} {day['copied']:>7,} {day['target']:>10,} "
                     f"{day['missing']:>8,}" for day in result["days"])
        lines.append("Count check passed: every legacy span is in mastra_span_events.")
    lines.append(result["message"])
    return "\n".join(lines)


def _policy_table(text: str) -> tuple[str, str]:
    """The domain and table key of a ``--policy [DOMAIN.]TABLE=AGE``."""
    key, equals, age = text.partition("=")
    domain, _, table = key.rpartition(".")
    keys = retention_tables_by_domain()
    owners = [name for name, tables in keys.items() if any(table in (t.key, *t.aliases) for t in tables)]
    if domain:
        owners = [name for name in owners if name == domain]
    if not equals or not age or len(owners) != 1:
        message = (f"--policy {text!r}: expected [DOMAIN.]TABLE=AGE with TABLE one of "
                   + ", ".join(t.key for tables in keys.values() for t in tables))
        raise ValidationError(message, fields={"policy": [message]}, id="STORAGE_CLI_PRUNE_INVALID_INPUT")
    return owners[0], table


def _age(text: str) -> Any:
    """A ``--policy`` age: a plain number is milliseconds (the library checks the rest)."""
    return int(text) if text.isdigit() else text


def render_pruned(result: dict, seconds: float) -> str:
    """One ``prune`` line: table, rows deleted, rows per second, whether rows remain."""
    rate = result["deleted"] / seconds if seconds > 0 else 0.0
    state = "done" if result["done"] else "more left"
    return (f"{result['domain']:<14} {result['table']:<26} {result['deleted']:>11,} rows deleted "
            f"{rate:>12,.0f} rows/s  ({state})")


def render_stats(display_url: str, rows: Sequence[tuple[str, str, int | None]]) -> str:
    """The ``stats`` table: one line per table, then the total."""
    width = max([len(table) for _, table, _ in rows] + [5])
    lines = [f"Database: {display_url}", "", f"{'domain':<14} {'table':<{width}} {'rows':>9}"]
    for domain, table, count in rows:
        shown = f"{count:>9,}" if count is not None else f"{'-':>9}  (table missing: run composite-store init)"
        lines.append(f"{domain:<14} {table:<{width}} {shown}")
    total = sum(count for _, _, count in rows if count is not None)
    lines.append(f"{'total':<14} {'':<{width}} {total:>9,}")
    return "\n".join(lines)


class PartProgress:
    """The progress of ``copy``, ``export`` and ``import`` (a ``progress`` callback of
    :mod:`repository.moving`): on a terminal one ``click.progressbar`` per table (rows, rows/s,
    ETA: click's own bar, which the other commands use too, so no further dependency); else one
    plain line on stderr per table every few seconds and when it ends."""

    #: Seconds between two plain lines of one table.
    LINE_EVERY_S = 5.0

    def __init__(self) -> None:
        self.bar: Any = None
        self.started = self.last_line = 0.0

    def __call__(self, report: Any, done: int, total: int | None) -> None:
        label = f"{report.domain}.{report.table}"
        now = time.perf_counter()
        if done == 0 and not report.finished:
            self.started = self.last_line = now
            if sys.stderr.isatty():
                self.bar = click.progressbar(length=max(total or 0, 1), label=label, file=sys.stderr, show_pos=True,
                                             show_eta=True, item_show_func=lambda rate: rate)
                self.bar.__enter__()
        rate = f"{done / (now - self.started):,.0f} rows/s" if now > self.started else ""
        if self.bar is not None:
            self.bar.update(done - self.bar.pos, current_item=rate)
            if report.finished:
                self.bar.__exit__(None, None, None)
                self.bar = None
        elif report.finished or now - self.last_line >= self.LINE_EVERY_S:
            self.last_line = now
            shown = f"{done:,}" if total is None else f"{done:,}/{total:,}"
            click.echo(f"{label}: {shown} rows{', ' + rate if rate else ''}", err=True)


def _report_parts(reports: Sequence[Any]) -> None:
    """Print each table's summary and the count check; exit 1 when a target lacks rows."""
    for report in reports:
        click.echo(report.summary())
    short = [f"{r.domain}.{r.table}" for r in reports if (r.target_rows or 0) < (r.source_rows or 0)]
    other = [f"{r.domain}.{r.table}" for r in reports if (r.target_rows or 0) > (r.source_rows or 0)]
    if short:
        click.echo(f"Row counts: the target lacks rows of {', '.join(short)}.", err=True)
        sys.exit(1)
    if other:
        click.echo(f"Row counts: every source row is in the target; {', '.join(other)} held more rows already.")
    else:
        click.echo("Row counts match in every table.")


_ON_CONFLICT = click.option("--on-conflict", type=click.Choice(["fail", "skip", "overwrite"]), default="fail",
                            show_default=True,
                            help="A target row that differs from the source's under the same key: stop with an "
                                 "error, keep the target's, or replace it.")


@cli.command("copy")
@click.option("--from", "source", metavar="URL", required=True, help="Database to copy from.")
@click.option("--to", "target", metavar="URL", required=True, help="Database to copy into (tables are created).")
@click.option("--domains", metavar="DOMAIN[,DOMAIN…]", default=None,
              help="Domains to copy (default: every domain both databases hold).")
@_ON_CONFLICT
def copy_command(source: str, target: str, domains: str | None, on_conflict: str) -> None:
    """Copy domains from one database to another, keeping ids, timestamps, versions and links.

    Run it again after an interruption to finish: rows already copied are skipped.  Prints one
    line per table and the row counts of both sides."""
    from .moving import copy_domains

    wanted = [key.strip() for key in domains.split(",") if key.strip()] if domains else None
    try:
        reports = copy_domains(source, target, wanted, PartProgress(), on_conflict=on_conflict)
    except StorageError as error:
        fail(error)
    _report_parts(reports)


@cli.command("export")
@click.argument("url")
@click.option("--domain", required=True, metavar="DOMAIN", help="The domain to export.")
@click.option("--dataset", "dataset_id", metavar="ID", default=None,
              help="Export this dataset only (its items and versions): --domain datasets.")
@click.option("-o", "--output", type=click.File("w", encoding="utf-8", lazy=True), default="-",
              help="File to write (default: stdout).")
def export_command(url: str, domain: str, dataset_id: str | None, output: Any) -> None:
    """Write a domain of the database at URL as JSON Lines (a header line, then one line per
    row) to stdout or --output: composite-store export URL --domain datasets > datasets.jsonl"""
    from .moving import export_domain

    try:
        with output:
            export_domain(url, domain, output, dataset_id=dataset_id, progress=PartProgress())
    except StorageError as error:
        fail(error)


@cli.command("import")
@click.argument("url")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@_ON_CONFLICT
def import_command(url: str, file: str, on_conflict: str) -> None:
    """Load an export file into the database at URL.  Every line is checked first: a bad file
    is reported by line number and nothing is written."""
    from .moving import import_file

    def lines() -> Iterator[str]:
        with open(file, encoding="utf-8") as handle:
            yield from handle

    try:
        reports = import_file(url, lines, on_conflict=on_conflict, progress=PartProgress())
    except ValidationError as error:
        if error.fields:
            for line, messages in error.fields.items():
                click.echo(f"{line}: {'; '.join(messages)}", err=True)
        fail(error)
    except StorageError as error:
        fail(error)
    _report_parts(reports)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``composite-store`` console script."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="composite-store")


__all__ = ["cli", "main", "fail", "configure_logging", "progress", "render_migrated", "render_pruned",
           "render_stats"]
