"""Observability signal benchmarks (issue 23 item 5): metric ingest and metric analytics at scale,
on SQLite and PostgreSQL (``layout="vnext"``), the 18.16 server and the current engine in-process.

1. **Ingest**: ``batch_create_metrics`` in batches of 1,000 and of 10,000 against the raw driver
   writing the same records itself (ClickHouse: one native insert of its own tuples per batch;
   PostgreSQL: one ``execute_values`` ``INSERT … ON CONFLICT DO NOTHING`` and a commit; SQLite:
   ``executemany`` of ``INSERT OR IGNORE`` between ``BEGIN IMMEDIATE`` and ``COMMIT``); alternating
   rounds, best of two each.  Target: at least 0.7 times the driver's rows per second.
2. **Analytics at scale**: 10,000,000 metric events on ClickHouse (both engines) and 1,000,000 on
   PostgreSQL and SQLite, loaded by the database itself (``INSERT … SELECT`` over ``numbers()``,
   ``generate_series`` or a recursive CTE; setup, not measured): 10 metric names, 10 entities, ten
   days.  Then p50 of a one-day ``get_metric_time_series`` (1h buckets, one name, one entity
   filter) and of ``get_metric_percentiles`` (p50, p95) against the raw driver running the same
   SQL (captured from the library's call) and reading the same rows.  Targets: p50 at most 2 times
   the driver's, and at most 100 ms on the current engine.

Run with ``python -m benchmarks signals`` or ``python -m benchmarks.bench_signals [--events N]
[--clickhouse-events N] [--ingest N] [--skip-ingest] [--skip-reads]``.  Sizes follow
``COMPOSITE_STORE_BENCH_SCALE``; ``COMPOSITE_STORE_BENCH_BACKENDS`` picks among ``sqlite``,
``postgres``, ``clickhouse`` (the 18.16 server) and ``chdb``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator, Sequence

from benchmarks.bench_observability_vnext import engines, settle
from benchmarks.common import (BenchBackend, backends, latency_row, paired_times_ms, print_results, print_table, rate,
                               scaled, throughput_row, timed)
from composite_store.clickhouse import ObservabilityClickHouse
from composite_store.postgres import ObservabilityPG
from composite_store.sqlite import ObservabilitySQLite

MIN_INGEST_RATIO = 0.7
MAX_READ_RATIO = 2.0
#: Absolute p50 target of the reads on the current engine, ms.
CURRENT_ENGINE_LIMIT_MS = 100
METRICS = "mastra_metric_events"
NAMES, ENTITIES, DAYS = 10, 10, 10
#: Events per server-side ``INSERT … SELECT`` while loading.
LOAD_CHUNK = 1_000_000
UTC = timezone.utc


# --------------------------------------------------------------------------- backends

@contextlib.contextmanager
def signal_backends() -> Iterator[list[BenchBackend]]:
    """SQLite and PostgreSQL (:func:`benchmarks.common.backends`), the 18.16 server and the
    current engine (:func:`benchmarks.bench_observability_vnext.engines`), as chosen by
    ``COMPOSITE_STORE_BENCH_BACKENDS``."""
    chosen = [name.strip() for name in os.environ.get("COMPOSITE_STORE_BENCH_BACKENDS", "").split(",") if name.strip()]
    sql = [name for name in ("sqlite", "postgres") if not chosen or name in chosen]
    with contextlib.ExitStack() as stack:
        found = stack.enter_context(backends(sql)) if sql else []
        if not chosen or {"clickhouse", "chdb"} & set(chosen):
            found = [*found, *stack.enter_context(engines())]
        yield found


def open_observability(bench: BenchBackend) -> Any:
    """The vNext observability repository of ``bench``, initialized."""
    if bench.name == "sqlite":
        repository = ObservabilitySQLite(url=bench.url, layout="vnext")
    elif bench.name == "postgres":
        repository = ObservabilityPG(connection_string=bench.url, layout="vnext")
    else:
        repository = ObservabilityClickHouse(url=bench.url, layout="vnext")
    repository.init()
    return repository


def family(bench: BenchBackend) -> str:
    return "clickhouse" if bench.name in ("clickhouse", "chdb") else bench.name


# --------------------------------------------------------------------------- ingest

def make_metrics(count: int, first: int = 0) -> list[dict[str, Any]]:
    """``count`` metric records of a model-call dashboard: ids, names, entity, cost, one label, one tag."""
    now = datetime.now(UTC).replace(microsecond=0)
    return [{"metric_id": str(uuid.UUID(int=first + index)), "timestamp": now + timedelta(milliseconds=index),
             "name": f"metric_{index % NAMES}", "value": float(index % 1000), "entity_type": "agent",
             "entity_name": f"agent-{index // NAMES % ENTITIES}", "provider": "openai", "model": "gpt-4o",
             "estimated_cost": (index % 1000) / 1e6, "cost_unit": "usd", "labels": {"status": "ok"},
             "tags": ["prod"]} for index in range(count)]


#: Record keys the raw writers send, and their columns.
RAW_COLUMNS = {"metric_id": "metricId", "timestamp": "timestamp", "name": "name", "value": "value",
               "entity_type": "entityType", "entity_name": "entityName", "provider": "provider", "model": "model",
               "estimated_cost": "estimatedCost", "cost_unit": "costUnit", "labels": "labels", "tags": "tags"}


class RawMetrics:
    """A hand-written writer of ``mastra_metric_events`` for one backend."""

    def __init__(self, bench: BenchBackend) -> None:
        self.kind = family(bench)
        self.connection = bench.connect()
        columns = list(RAW_COLUMNS.values())
        if self.kind == "clickhouse":
            types = dict(self.connection.execute("SELECT name, type FROM system.columns WHERE database = "
                                                 f"currentDatabase() AND table = '{METRICS}'"))
            self.nested = "labels.keys" in types
            self.epoch_ms = not types["timestamp"].startswith("DateTime64")
            if self.nested:
                columns[columns.index("labels"):columns.index("labels") + 1] = ["labels.keys", "labels.values"]
        names = ", ".join(f'"{column}"' for column in columns)
        if self.kind == "clickhouse":
            self.sql = f'INSERT INTO "{METRICS}" ({names}) VALUES'
        elif self.kind == "postgres":
            template = "(" + ", ".join("%s::jsonb" if column == "labels" else "%s" for column in columns) + ")"
            self.sql, self.template = f'INSERT INTO "{METRICS}" ({names}) VALUES %s ON CONFLICT DO NOTHING', template
        else:
            self.sql = f'INSERT OR IGNORE INTO "{METRICS}" ({names}) VALUES ({", ".join("?" * len(columns))})'

    def write(self, records: Sequence[dict[str, Any]]) -> None:
        if self.kind == "clickhouse":
            self.connection.execute(self.sql, [self._clickhouse_row(record) for record in records])
        elif self.kind == "postgres":
            from psycopg2.extras import execute_values

            with self.connection.cursor() as cursor:
                execute_values(cursor, self.sql, [tuple(json.dumps(record[key]) if key == "labels" else record[key]
                                                        for key in RAW_COLUMNS) for record in records],
                               template=self.template, page_size=1000)
            self.connection.commit()
        else:
            rows = [tuple(record[key].isoformat(timespec="milliseconds").replace("+00:00", "Z") if key == "timestamp"
                          else json.dumps(record[key], separators=(",", ":")) if key in ("labels", "tags")
                          else record[key] for key in RAW_COLUMNS) for record in records]
            self.connection.execute("BEGIN IMMEDIATE")
            self.connection.executemany(self.sql, rows)
            self.connection.execute("COMMIT")

    def _clickhouse_row(self, record: dict[str, Any]) -> tuple:
        row: list[Any] = []
        for key in RAW_COLUMNS:
            value = record[key]
            if key == "timestamp" and self.epoch_ms:
                value = int(value.timestamp() * 1000)
            if key == "labels" and self.nested:
                row += [list(value), list(value.values())]
            else:
                row.append(value)
        return tuple(row)

    def close(self) -> None:
        (self.connection.disconnect if self.kind == "clickhouse" else self.connection.close)()


def ingest(bench: BenchBackend, count: int, batch: int, *, rounds: int = 2) -> dict[str, Any]:
    """Best-of-``rounds`` rows/s of ``batch_create_metrics`` and of the raw writer, alternating."""
    observability = open_observability(bench)
    raw = RawMetrics(bench)
    try:
        batches = [make_metrics(min(batch, count - start), start) for start in range(0, count, batch)]
        gc.collect()
        gc.freeze()  # the test data is not garbage: keep the collector from walking it
        best_library = best_raw = float("inf")
        try:
            for _ in range(rounds):
                observability.dangerously_clear_all()
                best_raw = min(best_raw, timed(lambda: [raw.write(records) for records in batches])[1])
                observability.dangerously_clear_all()
                best_library = min(best_library, timed(
                    lambda: [observability.batch_create_metrics(metrics=records) for records in batches])[1])
            assert observability.list_metrics(per_page=0).total == count
        finally:
            gc.unfreeze()
            observability.dangerously_clear_all()
    finally:
        raw.close()
        observability.close()
    return throughput_row(f"batch_create_metrics ({count:,} events, batches of {batch:,})", bench.name,
                          library=rate(count, best_library), raw=rate(count, best_raw), min_ratio=MIN_INGEST_RATIO)


# --------------------------------------------------------------------------- analytics at scale

def load_sql(kind: str, epoch_ms: bool, first: int, count: int, total: int, start_ms: int) -> str:
    """One server-side ``INSERT … SELECT`` of events ``first`` … ``first + count`` of ``total``
    spread evenly over :data:`DAYS` days from ``start_ms``: name ``n % 10``, entity
    ``n / 10 % 10``, value ``n * 7919 % 1000``, cost value / 10⁶ USD."""
    span = DAYS * 86_400_000
    columns = '"metricId", "timestamp", "name", "value", "entityType", "entityName", "provider", "model", ' \
              '"estimatedCost", "costUnit"'
    if kind == "clickhouse":
        moment = f"toInt64({start_ms} + intDiv(number * {span}, {total}))"
        timestamp = moment if epoch_ms else f"fromUnixTimestamp64Milli({moment}, 'UTC')"
        return (f'INSERT INTO "{METRICS}" ({columns}) SELECT concat(\'m-\', toString(number)), {timestamp}, '
                f"concat('metric_', toString(number % {NAMES})), toFloat64((number * 7919) % 1000), 'agent', "
                f"concat('agent-', toString(intDiv(number, {NAMES}) % {ENTITIES})), 'openai', 'gpt-4o', "
                f"((number * 7919) % 1000) / 1e6, 'usd' FROM numbers({first}, {count})")
    value = "((n * 7919) % 1000)"
    if kind == "postgres":
        return (f'INSERT INTO "{METRICS}" ({columns}) SELECT \'m-\' || n, to_timestamp(({start_ms} + n * {span} / '
                f"{total}) / 1000.0), 'metric_' || (n % {NAMES}), {value}, 'agent', 'agent-' || (n / {NAMES} % "
                f"{ENTITIES}), 'openai', 'gpt-4o', {value} / 1e6, 'usd' FROM generate_series({first}::bigint, "
                f"{first + count - 1}) AS n")
    return (f"WITH RECURSIVE numbers(n) AS (SELECT {first} UNION ALL SELECT n + 1 FROM numbers WHERE n < "
            f'{first + count - 1}) INSERT INTO "{METRICS}" ({columns}) SELECT \'m-\' || n, '
            f"strftime('%Y-%m-%dT%H:%M:%fZ', ({start_ms} + n * {span} / {total}) / 1000.0, 'unixepoch'), "
            f"'metric_' || (n % {NAMES}), {value}, 'agent', 'agent-' || (n / {NAMES} % {ENTITIES}), 'openai', "
            f"'gpt-4o', {value} / 1e6, 'usd' FROM numbers")


def load(bench: BenchBackend, raw: RawMetrics, total: int, start: datetime) -> None:
    """``total`` events written by the database itself (PostgreSQL: inside the daily partitions
    ``init()`` made, yesterday onwards)."""
    start_ms = int(start.timestamp() * 1000)
    for first in range(0, total, LOAD_CHUNK):
        sql = load_sql(raw.kind, getattr(raw, "epoch_ms", False), first, min(LOAD_CHUNK, total - first), total,
                       start_ms)
        if raw.kind == "clickhouse":
            raw.connection.execute(sql)
        elif raw.kind == "postgres":
            with raw.connection.cursor() as cursor:
                cursor.execute(sql)
            raw.connection.commit()
        else:
            raw.connection.execute("BEGIN IMMEDIATE")
            raw.connection.execute(sql)
            raw.connection.execute("COMMIT")
    if raw.kind == "clickhouse":
        settle(raw.connection)
    elif raw.kind == "postgres":
        raw.connection.autocommit = True
        with raw.connection.cursor() as cursor:
            cursor.execute(f'ANALYZE "{METRICS}"')
        raw.connection.autocommit = False
    else:
        raw.connection.execute("ANALYZE")


def captured(observability: Any, call: Callable[[], Any]) -> tuple[str, list[Any]]:
    """The one statement ``call`` sends and its parameters."""
    database = observability.backend.database
    sent: list[tuple[str, list[Any]]] = []
    execute_sql = database.execute_sql

    def recording(sql: str, params: Any = None, *args: Any, **kwargs: Any) -> Any:
        sent.append((sql, list(params or ())))
        return execute_sql(sql, params, *args, **kwargs)

    database.execute_sql = recording
    try:
        call()
    finally:
        del database.execute_sql
    assert len(sent) == 1, sent
    return sent[0]


def raw_reader(raw: RawMetrics, sql: str, params: list[Any]) -> Callable[[], list[tuple]]:
    """The raw driver running ``sql`` with ``params`` and fetching every row."""
    if raw.kind == "clickhouse":
        # The library's ClickHouse statements use %s placeholders substituted client-side: the
        # raw client is given the same text with its parameters as a dict.
        names = {f"p{index}": value for index, value in enumerate(params)}
        text = sql % tuple(f"%(p{index})s" for index in range(len(params)))
        return lambda: raw.connection.execute(text, names)
    if raw.kind == "postgres":
        def run() -> list[tuple]:
            with raw.connection.cursor() as cursor:
                cursor.execute(sql, params)
                rows = cursor.fetchall()
            raw.connection.rollback()  # end the read transaction, as the library's autocommit read
            return rows
        return run
    return lambda: raw.connection.execute(sql, params).fetchall()


def reads_at_scale(bench: BenchBackend, total: int, *, calls: int = 30) -> list[dict[str, Any]]:
    """Load ``total`` events, then time the one-day series and percentiles against the raw driver."""
    observability = open_observability(bench)
    raw = RawMetrics(bench)
    results: list[dict[str, Any]] = []
    try:
        observability.dangerously_clear_all()
        start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
        _, seconds = timed(lambda: load(bench, raw, total, start))
        print(f"[{bench.name}] loaded {total:,} metric events in {seconds:.0f} s (setup)", flush=True)
        day = {"start": start + timedelta(days=3), "end": start + timedelta(days=4), "end_exclusive": True}
        filters = {"timestamp": day, "entity_name": "agent-7"}
        calls_by_name = {
            "get_metric_time_series (1 day, 1h buckets, one name, one filter)": lambda: observability.get_metric_time_series(
                name=["metric_3"], interval="1h", aggregation="avg", filters=filters),
            "get_metric_percentiles p50/p95 (1 day, 1h buckets, one name, one filter)":
                lambda: observability.get_metric_percentiles(name="metric_3", percentiles=[0.5, 0.95], interval="1h",
                                                             filters=filters),
        }
        limit = CURRENT_ENGINE_LIMIT_MS if bench.name == "chdb" else None
        for label, call in calls_by_name.items():
            points = call()["series"][0]["points"]
            assert points, label
            sql, params = captured(observability, call)
            read_raw = raw_reader(raw, sql, params)
            assert read_raw()  # the same rows the library read (SQLite percentiles: the ranks around each level)
            library_ms, raw_ms = paired_times_ms(call, read_raw, repeat=calls, warmup=2)
            p50, raw_p50 = statistics.median(library_ms), statistics.median(raw_ms)
            row = latency_row(f"{label} ({total:,} events)", bench.name, library=p50, raw=raw_p50,
                              max_ratio=MAX_READ_RATIO, note=f"p95 {sorted(library_ms)[int(len(library_ms) * 0.95) - 1]:.1f} ms")
            if limit is not None:
                row["target"] += f", <= {limit} ms"
                row["result"] = "ok" if row["result"] == "ok" and p50 <= limit else "MISSED"
            results.append(row)
        observability.dangerously_clear_all()
    finally:
        raw.close()
        observability.close()
    return results


# --------------------------------------------------------------------------- entry point

def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run both benchmarks; return their result rows (``python -m benchmarks`` prints them)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_signals", description=__doc__)
    parser.add_argument("--events", type=int, default=scaled(1_000_000, minimum=1000),
                        help="metric events loaded on SQLite and PostgreSQL (default 1M times the scale)")
    parser.add_argument("--clickhouse-events", type=int, default=scaled(10_000_000, minimum=1000),
                        help="metric events loaded on ClickHouse (default 10M times the scale)")
    parser.add_argument("--ingest", type=int, default=scaled(100_000, minimum=10_000),
                        help="events written per ingest measurement (default 100,000 times the scale)")
    parser.add_argument("--skip-reads", action="store_true", help="only the ingest benchmark")
    parser.add_argument("--skip-ingest", action="store_true", help="only the analytics at scale")
    arguments = parser.parse_args(argv if argv is not None else [])
    results: list[dict[str, Any]] = []
    with signal_backends() as available:
        for bench in available:
            rows: list[dict[str, Any]] = []
            if not arguments.skip_ingest:
                rows += [ingest(bench, arguments.ingest, batch) for batch in (1_000, 10_000)]
            if not arguments.skip_reads:
                total = arguments.clickhouse_events if family(bench) == "clickhouse" else arguments.events
                rows += reads_at_scale(bench, total)
            print_table(rows, title=f"signals on {bench.name}")  # each backend's figures as soon as they exist
            results += rows
    return results


if __name__ == "__main__":
    import sys

    print_results(main(sys.argv[1:]), title="observability signals: library against the raw driver")
