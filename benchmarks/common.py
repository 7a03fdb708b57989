"""Shared helpers for the benchmarks: throwaway databases, timing, result tables.

A benchmark module (``benchmarks/bench_<topic>.py``) defines ``main() -> list[dict]`` and uses:

* :func:`backends` — a context manager giving one :class:`BenchBackend` per available backend
  (SQLite file in a temporary directory, a fresh PostgreSQL database that is dropped afterwards,
  a throwaway ClickHouse server that is stopped afterwards)::

      with backends() as available:
          for name, url, connect in available:
              store = store_for_url(url)      # the library on that database
              raw = connect()                 # the bare driver on the same database

* :func:`library_and_raw` — a domain repository on an initialized store of one backend and the
  module's raw path beside it, both closed afterwards (:func:`run_per_backend` runs a benchmark
  function per backend);
* :func:`timed` / :func:`best_time` — wall-clock seconds of a call; :func:`p50_ms` — median
  latency of repeated calls; :func:`p50_pair_ms` — the same for the library and the raw path,
  called alternately; :func:`paired_rates` — calls per second of both, called alternately;
* :func:`rate` — rows per second; :func:`scaled` — a size times ``COMPOSITE_STORE_BENCH_SCALE``;
* :func:`print_table` — a plain-text table of result dicts;
* :func:`profile` — cProfile a call and print the hottest functions.

Results: ``main()`` of a benchmark module returns its result rows, built with
:func:`throughput_row` (rows/s, library against raw driver), :func:`latency_row` (p50 ms) or
:func:`info_row` (no target, e.g. peak memory); ``python -m benchmarks`` prints the rows of every
module in one table (:func:`print_results`), and running one module alone prints its own.

Environment:

* ``COMPOSITE_STORE_BENCH_SCALE`` — multiplies every benchmark's sizes (:func:`scaled`); ``0.1``
  is a quick run.
* ``COMPOSITE_STORE_BENCH_BACKENDS`` — comma-separated subset of ``sqlite,postgres,clickhouse``.
* ``COMPOSITE_STORE_POSTGRES_URL`` — PostgreSQL server to create the throwaway database on
  (default ``postgresql://postgres@127.0.0.1:5432/postgres``).
* ``COMPOSITE_STORE_CLICKHOUSE_URL`` — use this ClickHouse server instead of starting one.

A backend that cannot be reached is skipped with a note on stderr, so benchmarks run wherever at
least one backend exists.
"""

from __future__ import annotations

import contextlib
import cProfile
import os
import pstats
import sqlite3
import statistics
import sys
import tempfile
import time
from functools import lru_cache
from typing import Any, Callable, Iterator, NamedTuple, Sequence
from urllib.parse import urlsplit

from composite_store.backends.sqlite import MMAP_SIZE
from composite_store.composite import store_for_url
from tests.servers import (
    DEFAULT_POSTGRES_URL,
    create_postgres_database,
    find_clickhouse_binary,
    start_clickhouse,
)

#: Every backend a benchmark can run on, in report order.
BACKEND_NAMES = ("sqlite", "postgres", "clickhouse")

#: Targets: bulk writes reach at least this share of the raw driver's rows/s ...
MIN_THROUGHPUT_RATIO = 0.5
#: ... and single-row calls take at most this multiple of the raw driver's latency.
MAX_LATENCY_RATIO = 2.0


def scale() -> float:
    """The size multiplier ``COMPOSITE_STORE_BENCH_SCALE`` (default 1; ``0.1`` for a quick run)."""
    text = os.environ.get("COMPOSITE_STORE_BENCH_SCALE", "").strip()
    value = float(text) if text else 1.0
    if value <= 0:
        raise ValueError(f"COMPOSITE_STORE_BENCH_SCALE must be positive, not {text!r}")
    return value


def scaled(count: int, *, minimum: int = 1) -> int:
    """``count`` times :func:`scale`, rounded, at least ``minimum``."""
    return max(minimum, round(count * scale()))


class BenchBackend(NamedTuple):
    """One database to benchmark on.

    ``name`` is ``"sqlite"``, ``"postgres"`` or ``"clickhouse"``; ``url`` is the library URL of
    the database (for ``store_for_url`` / ``CompositeStore.from_urls``); ``connect()`` opens a new
    bare driver connection to the same database: a ``sqlite3.Connection`` (WAL,
    ``synchronous=NORMAL``, memory-mapped reads, like the library's), a ``psycopg2`` connection
    (``TimeZone`` UTC) or a ``clickhouse_driver.Client``. The caller closes it.
    """

    name: str
    url: str
    connect: Callable[[], Any]


def selected_backends() -> tuple[str, ...]:
    """Backend names chosen by ``COMPOSITE_STORE_BENCH_BACKENDS`` (all of them by default)."""
    chosen = os.environ.get("COMPOSITE_STORE_BENCH_BACKENDS", "")
    names = [name.strip() for name in chosen.split(",") if name.strip()]
    return tuple(name for name in BACKEND_NAMES if not names or name in names)


def _sqlite_connect(path: str) -> Callable[[], sqlite3.Connection]:
    def connect() -> sqlite3.Connection:
        # isolation_level=None: the caller issues BEGIN/COMMIT itself, as the library does.
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=wal")
        connection.execute("PRAGMA synchronous=normal")
        connection.execute(f"PRAGMA mmap_size={MMAP_SIZE}")
        return connection

    return connect


def _postgres_connect(url: str) -> Callable[[], Any]:
    def connect() -> Any:
        import psycopg2

        connection = psycopg2.connect(url)
        with connection.cursor() as cursor:
            cursor.execute("SET TimeZone = 'UTC'")
        connection.commit()
        return connection

    return connect


def _clickhouse_connect(url: str) -> Callable[[], Any]:
    def connect() -> Any:
        from clickhouse_driver import Client

        parts = urlsplit(url)
        return Client(host=parts.hostname or "localhost", port=parts.port or 9000,
                      user=parts.username or "default", password=parts.password or "",
                      database=parts.path.lstrip("/") or "default")

    return connect


def _note(message: str) -> None:
    print(f"[benchmarks] {message}", file=sys.stderr)


@contextlib.contextmanager
def backends(names: Sequence[str] | None = None) -> Iterator[list[BenchBackend]]:
    """Set up throwaway databases for ``names`` (default: :func:`selected_backends`).

    Yields the list of backends that could be set up, in the order of :data:`BACKEND_NAMES`;
    everything is torn down on exit (temporary SQLite directory removed, PostgreSQL database
    dropped, ClickHouse server stopped).
    """
    wanted = tuple(names) if names is not None else selected_backends()
    available: list[BenchBackend] = []
    with contextlib.ExitStack() as cleanup:
        if "sqlite" in wanted:
            directory = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="cs-bench-sqlite-"))
            path = os.path.join(directory, "bench.db")
            available.append(BenchBackend("sqlite", f"sqlite:///{path}", _sqlite_connect(path)))
        if "postgres" in wanted:
            server = os.environ.get("COMPOSITE_STORE_POSTGRES_URL", DEFAULT_POSTGRES_URL)
            try:
                url, drop = create_postgres_database(server, prefix="csbench")
            except Exception as exc:  # noqa: BLE001 - any failure means "not available here"
                _note(f"postgres skipped: {exc}")
            else:
                cleanup.callback(drop)
                available.append(BenchBackend("postgres", url, _postgres_connect(url)))
        if "clickhouse" in wanted:
            url = os.environ.get("COMPOSITE_STORE_CLICKHOUSE_URL")
            if not url:
                if find_clickhouse_binary() is None:
                    _note("clickhouse skipped: no clickhouse-server binary")
                else:
                    directory = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="cs-bench-ch-"))
                    try:
                        server = start_clickhouse(directory)
                    except Exception as exc:  # noqa: BLE001
                        _note(f"clickhouse skipped: {exc}")
                    else:
                        cleanup.callback(server.stop)
                        url = server.url
            if url:
                available.append(BenchBackend("clickhouse", url, _clickhouse_connect(url)))
        yield available


def run_per_backend(bench: Callable[[BenchBackend], list[dict[str, Any]]], *,
                    sql_only: bool = False) -> list[dict[str, Any]]:
    """``bench(backend)`` on every available backend (only SQLite and PostgreSQL with
    ``sql_only``, for the domains ClickHouse does not hold); returns all result rows."""
    names = [name for name in selected_backends() if name != "clickhouse"] if sql_only else None
    results: list[dict[str, Any]] = []
    with backends(names) as available:
        for backend in available:
            results += bench(backend)
    return results


@contextlib.contextmanager
def library_and_raw(backend: BenchBackend, domain: str, raw_class: Callable[[BenchBackend], Any]
                    ) -> Iterator[tuple[Any, Any]]:
    """The ``domain`` repository of an initialized store on ``backend``, and ``raw_class(backend)``
    made after ``init()`` (raw paths read the column types it created).  The domain's tables are
    emptied when the block ends normally; both are closed in any case."""
    store = store_for_url(backend.url)
    try:
        store.init()
        repository = store.get_store(domain)
        raw = raw_class(backend)
        try:
            yield repository, raw
            repository.dangerously_clear_all()
        finally:
            raw.close()
    finally:
        store.close()


def timed(function: Callable[[], Any]) -> tuple[Any, float]:
    """Call ``function()`` once; return ``(its result, elapsed wall-clock seconds)``."""
    started = time.perf_counter()
    result = function()
    return result, time.perf_counter() - started


def best_time(function: Callable[[], Any], *, repeat: int = 3,
              setup: Callable[[], Any] | None = None) -> float:
    """The fastest of ``repeat`` timed calls of ``function()``; ``setup()`` runs untimed before each."""
    best = float("inf")
    for _ in range(repeat):
        if setup is not None:
            setup()
        best = min(best, timed(function)[1])
    return best


def p50_ms(function: Callable[[], Any], *, repeat: int, warmup: int = 1) -> float:
    """Median wall-clock milliseconds of ``repeat`` calls of ``function()``, after ``warmup`` calls."""
    for _ in range(warmup):
        function()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def paired_times_ms(library: Callable[[], Any], raw: Callable[[], Any], *, repeat: int, warmup: int = 3,
                    block: int = 1) -> tuple[list[float], list[float]]:
    """Milliseconds of each call of ``library()`` and of ``raw()``, ``repeat`` calls each (after
    ``warmup`` calls of each), alternating every ``block`` calls, so both see the same load on a
    shared machine."""
    for _ in range(warmup):
        library()
        raw()
    samples: tuple[list[float], list[float]] = ([], [])
    for start in range(0, repeat, block):
        for function, times in ((library, samples[0]), (raw, samples[1])):
            for _ in range(min(block, repeat - start)):
                started = time.perf_counter()
                function()
                times.append((time.perf_counter() - started) * 1000)
    return samples


def p50_pair_ms(library: Callable[[], Any], raw: Callable[[], Any], *, repeat: int,
                warmup: int = 3) -> tuple[float, float]:
    """Median milliseconds of ``library()`` and of ``raw()`` (:func:`paired_times_ms`)."""
    library_ms, raw_ms = paired_times_ms(library, raw, repeat=repeat, warmup=warmup)
    return statistics.median(library_ms), statistics.median(raw_ms)


def paired_rates(library: Callable[[], Any], raw: Callable[[], Any], *, repeat: int, warmup: int = 3,
                 block: int = 100) -> tuple[float, float]:
    """Calls per second of ``library()`` and of ``raw()`` (:func:`paired_times_ms`): the whole
    time of each side's calls, so the occasional slow call (a WAL checkpoint) counts, as it does
    for a job making thousands of them.  Alternating in blocks, each side's connection keeps its
    page cache between its calls (SQLite drops a connection's cache when another one wrote)."""
    library_ms, raw_ms = paired_times_ms(library, raw, repeat=repeat, warmup=warmup, block=block)
    return rate(repeat, sum(library_ms) / 1000), rate(repeat, sum(raw_ms) / 1000)


def rate(rows: int, seconds: float) -> float:
    """Rows per second (``inf`` for a zero duration)."""
    return rows / seconds if seconds > 0 else float("inf")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value >= 100:
            return f"{value:,.0f}"
        return f"{value:.3f}" if value < 10 else f"{value:.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def print_table(rows: Sequence[dict[str, Any]], *, title: str | None = None) -> None:
    """Print result dicts as an aligned text table; columns in first-seen key order."""
    if title:
        print(f"\n{title}")
    if not rows:
        print("(no results)")
        return
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    cells = [[_cell(row.get(column, "")) for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)]
    print("  ".join(column.ljust(width) for column, width in zip(columns, widths)))
    print("  ".join("-" * width for width in widths))
    for line in cells:
        print("  ".join(cell.rjust(width) if i else cell.ljust(width)
                        for i, (cell, width) in enumerate(zip(line, widths))))


def profile(function: Callable[[], Any], *, limit: int = 25, sort: str = "cumulative") -> Any:
    """Run ``function()`` under cProfile, print the ``limit`` top entries by ``sort``; return its result."""
    profiler = cProfile.Profile()
    result = profiler.runcall(function)
    pstats.Stats(profiler, stream=sys.stdout).strip_dirs().sort_stats(sort).print_stats(limit)
    return result


# --------------------------------------------------------------------------- result rows

def _row(operation: str, backend: str, unit: str, library: float, raw: float | None, ratio: float | None,
         target: str, met: bool | None, note: str | None) -> dict[str, Any]:
    return {"operation": operation, "backend": backend, "unit": unit, "library": library,
            "raw": "" if raw is None else raw, "ratio": "" if ratio is None else ratio, "target": target,
            "result": "" if met is None else "ok" if met else "MISSED", "note": note or ""}


def throughput_row(operation: str, backend: str, *, library: float, raw: float | None,
                   min_ratio: float | None = MIN_THROUGHPUT_RATIO, note: str | None = None) -> dict[str, Any]:
    """A result in rows/s: ``ratio`` is library / raw (higher is better; target ``>= min_ratio``)."""
    ratio = library / raw if raw else None
    met = None if ratio is None or min_ratio is None else ratio >= min_ratio
    target = f">= {min_ratio:g}" if ratio is not None and min_ratio is not None else ""
    return _row(operation, backend, "rows/s", library, raw, ratio, target, met, note)


def latency_row(operation: str, backend: str, *, library: float, raw: float | None = None,
                max_ratio: float | None = MAX_LATENCY_RATIO, limit_ms: float | None = None,
                note: str | None = None) -> dict[str, Any]:
    """A result in p50 milliseconds: ``ratio`` is library / raw (lower is better; target
    ``<= max_ratio``); without a raw figure, ``limit_ms`` is an absolute target."""
    ratio = library / raw if raw else None
    if ratio is not None and max_ratio is not None:
        target, met = f"<= {max_ratio:g}", ratio <= max_ratio
    elif limit_ms is not None:
        target, met = f"< {limit_ms:g} ms", library < limit_ms
    else:
        target, met = "", None
    return _row(operation, backend, "p50 ms", library, raw, ratio, target, met, note)


def info_row(operation: str, backend: str, *, unit: str, library: float, raw: float | None = None,
             note: str | None = None) -> dict[str, Any]:
    """A figure without a target (peak memory, for example); ``ratio`` is library / raw."""
    return _row(operation, backend, unit, library, raw, library / raw if raw else None, "", None, note)


def print_results(rows: Sequence[dict[str, Any]], *, title: str = "library against the raw driver") -> None:
    """Print result rows (:func:`throughput_row`, :func:`latency_row`, :func:`info_row`) as one
    table, grouped by operation in first-seen order, backends in report order."""
    operations = list(dict.fromkeys(row["operation"] for row in rows))
    order = {name: index for index, name in enumerate(BACKEND_NAMES)}
    ordered = sorted(rows, key=lambda row: (operations.index(row["operation"]), order.get(row["backend"], 99)))
    print_table(ordered, title=title)
    missed = [f"{row['operation']} on {row['backend']}" for row in ordered if row.get("result") == "MISSED"]
    print(f"\ntargets missed: {', '.join(missed)}" if missed else "\nevery target met")


# --------------------------------------------------------------------------- ClickHouse raw values

def clickhouse_timestamps(client: Any, table: str, column: str = "createdAt") -> tuple[Callable[[Any], Any],
                                                                                        Callable[[Any], Any]]:
    """``(to_db, from_db)`` for a timestamp column of a ClickHouse table as the library created it:
    epoch milliseconds (``Int64``, servers before 20.1) or ``DateTime64`` (aware UTC datetimes)."""
    from datetime import datetime, timedelta, timezone

    kind = client.execute("SELECT type FROM system.columns WHERE database = currentDatabase() "
                          "AND table = %(table)s AND name = %(column)s", {"table": table, "column": column})[0][0]
    if "DateTime" in kind:
        return (lambda value: value), (lambda value: value.replace(tzinfo=timezone.utc) if value.tzinfo is None
                                       else value)
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    return ((lambda value: (value - epoch) // timedelta(milliseconds=1)),
            (lambda value: epoch + timedelta(milliseconds=value)))


# --------------------------------------------------------------------------- raw driver access

@lru_cache(maxsize=None)
def _pyformat(sql: str) -> str:
    return sql.replace("?", "%s")


class RawDatabase:
    """The bare driver of one backend, with the little every raw path needs.

    SQLite and PostgreSQL statements are written once with ``?`` placeholders (sent as ``%s`` to
    psycopg2); ClickHouse statements use clickhouse-driver's ``%(name)s`` with a dict. Nothing
    here adds work a hand-written job would not do: :meth:`write` is ``BEGIN IMMEDIATE`` …
    ``COMMIT`` on SQLite (as the library), one transaction on PostgreSQL, nothing on ClickHouse.
    """

    def __init__(self, backend: BenchBackend) -> None:
        self.name = backend.name
        self.connection = backend.connect()
        #: ``" FOR UPDATE"`` where a read-modify-write locks the row it reads (PostgreSQL).
        self.for_update = " FOR UPDATE" if self.name == "postgres" else ""

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        """One write transaction (committed, or rolled back on an exception)."""
        yield from self._transaction("BEGIN IMMEDIATE")

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        """One read transaction (count and rows agree)."""
        yield from self._transaction("BEGIN")

    def _transaction(self, begin: str) -> Iterator[None]:
        if self.name == "clickhouse":
            yield
            return
        if self.name == "sqlite":
            self.connection.execute(begin)
        try:
            yield
        except BaseException:
            if self.name == "sqlite":
                self.connection.execute("ROLLBACK")
            else:
                self.connection.rollback()
            raise
        if self.name == "sqlite":
            self.connection.execute("COMMIT")
        else:
            self.connection.commit()

    def query(self, sql: str, params: Any = ()) -> list[tuple]:
        """Rows of a ``SELECT``."""
        if self.name == "sqlite":
            return self.connection.execute(sql, params).fetchall()
        if self.name == "postgres":
            with self.connection.cursor() as cursor:
                cursor.execute(_pyformat(sql), params)
                return cursor.fetchall()
        return self.connection.execute(sql, params or None)

    def execute(self, sql: str, params: Any = ()) -> int:
        """Run one statement; returns the rows it changed (where the driver says)."""
        if self.name == "sqlite":
            return self.connection.execute(sql, params).rowcount
        if self.name == "postgres":
            with self.connection.cursor() as cursor:
                cursor.execute(_pyformat(sql), params)
                return cursor.rowcount
        self.connection.execute(sql, params or None)
        return -1

    def insert_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """One batch insert: sqlite3 ``executemany``, psycopg2 ``execute_values`` (1,000 rows per
        statement, as the library; ``sql`` has one ``VALUES ?`` for the row), or one
        clickhouse-driver native block (``sql`` ends with ``VALUES``)."""
        if self.name == "sqlite":
            self.connection.executemany(sql, rows)
        elif self.name == "postgres":
            from psycopg2.extras import execute_values

            with self.connection.cursor() as cursor:
                execute_values(cursor, _pyformat(sql), rows, page_size=1000)
        else:
            self.connection.execute(sql, rows)

    def truncate(self, *tables: str) -> None:
        """Remove every row of these tables."""
        for table in tables:
            if self.name == "sqlite":
                self.connection.execute(f'DELETE FROM "{table}"')
            elif self.name == "postgres":
                with self.connection.cursor() as cursor:
                    cursor.execute(f'TRUNCATE "{table}"')
                self.connection.commit()
            else:
                self.connection.execute(f'TRUNCATE TABLE "{table}"')

    def count(self, table: str) -> int:
        """Rows of a table (on ClickHouse: live rows, ``FINAL`` and ``_deleted = 0``)."""
        if self.name == "clickhouse":
            return self.query(f'SELECT count() FROM "{table}" FINAL WHERE "_deleted" = 0')[0][0]
        with self.read():
            return self.query(f'SELECT count(*) FROM "{table}"')[0][0]

    def close(self) -> None:
        """Close the connection."""
        if self.name == "clickhouse":
            self.connection.disconnect()
        else:
            self.connection.close()
