"""Observability benchmarks: bulk span ingest against the bare drivers, and trace reads at scale.

1. **Ingest** (every backend): ``batch_create_spans`` of 100,000 spans in batches of 1,000,
   against the bare driver inserting the same rows (same columns, same JSON text, same table and
   indexes, one transaction per batch) in the same run; best of two rounds each.  Target: the
   library reaches at least half the driver's rows per second.
2. **Reads at scale** (SQLite and PostgreSQL): 1,000,000 spans (20 per trace: 50,000 traces) are
   loaded with the fastest raw path (``executemany`` in large transactions on SQLite; ``COPY``
   into the table without its secondary indexes, rebuilt by ``init()`` afterwards, on
   PostgreSQL) — setup, not measured — then the p50 of ``get_trace`` and of the first page of
   ``list_traces`` with one filter (each filter of ``LIST_FILTERS`` in turn), each called
   alternately with the bare driver running the same statements (captured from the library's
   first call: the same SQL, parameters and indexes, in one read transaction) and decoding the
   rows into records (JSON parsed, timestamps aware).  Target: at most twice the driver's
   latency; the observability issue's absolute targets (``get_trace`` under 5 ms,
   ``list_traces`` under 50 ms) are in the notes.  A list's total counts every matching root:
   the roots' partial filter indexes (``SQLITE_LIST_INDEXES``/``POSTGRES_LIST_INDEXES`` of
   :mod:`models.observability`) let the count read an index instead of one table page per root.

Run with ``python -m benchmarks observability`` or ``python -m benchmarks.bench_observability
[--spans N] [--ingest N] [--spans-per-trace N] [--skip-reads] [--skip-ingest] [--profile]``.
Sizes follow ``COMPOSITE_STORE_BENCH_SCALE`` (``--scale`` of ``python -m benchmarks``);
``COMPOSITE_STORE_BENCH_SPANS``, ``COMPOSITE_STORE_BENCH_INGEST`` and
``COMPOSITE_STORE_BENCH_SPANS_PER_TRACE`` set them directly (``COMPOSITE_STORE_BENCH_SPANS=100000``
for a quick run); the other variables are those of :mod:`benchmarks.common`.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import random
import statistics
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator

from benchmarks.common import (BenchBackend, RawDatabase, backends, latency_row, paired_times_ms, print_results,
                               profile, rate, scaled, throughput_row, timed)
from composite_store.backends.sqlite import JSON_TEXT_FUNCTION
from composite_store.composite import store_for_url
from composite_store.jsonb import jsonb_to_json_text

UTC = timezone.utc
BATCH = 1_000
SPANS_PER_TRACE = 20
START = datetime(2025, 1, 1, tzinfo=UTC)

#: Span columns in table order, with the record key each comes from.
COLUMNS = (
    ("traceId", "trace_id"), ("spanId", "span_id"), ("name", "name"), ("spanType", "span_type"),
    ("isEvent", "is_event"), ("startedAt", "started_at"), ("parentSpanId", "parent_span_id"),
    ("entityType", "entity_type"), ("entityId", "entity_id"), ("entityName", "entity_name"),
    ("parentEntityType", "parent_entity_type"), ("parentEntityId", "parent_entity_id"),
    ("parentEntityName", "parent_entity_name"), ("rootEntityType", "root_entity_type"),
    ("rootEntityId", "root_entity_id"), ("rootEntityName", "root_entity_name"), ("userId", "user_id"),
    ("organizationId", "organization_id"), ("resourceId", "resource_id"), ("runId", "run_id"),
    ("sessionId", "session_id"), ("threadId", "thread_id"), ("requestId", "request_id"),
    ("environment", "environment"), ("serviceName", "service_name"), ("scope", "scope"),
    ("entityVersionId", "entity_version_id"), ("parentEntityVersionId", "parent_entity_version_id"),
    ("rootEntityVersionId", "root_entity_version_id"), ("experimentId", "experiment_id"), ("source", "source"),
    ("metadata", "metadata"), ("tags", "tags"), ("attributes", "attributes"), ("links", "links"),
    ("input", "input"), ("output", "output"), ("error", "error"), ("endedAt", "ended_at"),
    ("requestContext", "request_context"),
)
JSON_KEYS = {"scope", "metadata", "tags", "attributes", "links", "input", "output", "error", "request_context"}
TIME_KEYS = {"started_at", "ended_at"}
CHILD_TYPES = ("model_generation", "model_step", "tool_call", "mcp_tool_call", "workflow_step", "processor_run")


# --------------------------------------------------------------------------- data

def make_spans(count: int, *, first_trace: int = 0, per_trace: int = SPANS_PER_TRACE,
               prefix: str = "trace") -> Iterator[dict[str, Any]]:
    """``count`` realistic spans, ``per_trace`` per trace (a root agent run and its steps): 1 trace
    in 25 has a failed step, 1 in 40 a failed root, 1 in 97 is still running."""
    rng = random.Random(first_trace)
    for index in range(count):
        trace, position = divmod(index, per_trace)
        trace += first_trace
        root = position == 0
        started = START + timedelta(seconds=trace * 10 + position * 0.25)
        agent = trace % 10
        record = {
            "trace_id": f"{prefix}-{trace:09d}", "span_id": f"span-{position:04d}",
            "parent_span_id": None if root else "span-0000",
            "name": "agent run" if root else f"step {position}",
            "span_type": "agent_run" if root else rng.choice(CHILD_TYPES),
            "is_event": False, "started_at": started,
            "ended_at": None if root and trace % 97 == 0 else started + timedelta(milliseconds=180 + position),
            "entity_type": "agent" if root else "tool", "entity_id": f"agent-{agent}",
            "entity_name": f"Agent {agent}", "root_entity_type": "agent", "root_entity_id": f"agent-{agent}",
            "user_id": f"user-{trace % 1000}", "organization_id": f"org-{trace % 20}",
            "resource_id": f"resource-{trace % 500}", "run_id": f"run-{trace}", "session_id": f"session-{trace // 4}",
            "thread_id": f"thread-{trace // 2}", "environment": ("production", "staging", "development")[trace % 3],
            "service_name": "support-bot", "source": "cloud",
            "metadata": {"tenant": f"tenant-{trace % 50}", "priority": "high" if trace % 7 == 0 else "normal",
                         "attempt": 1},
            "attributes": {"model": "gpt-4o-mini", "provider": "openai",
                           "usage": {"inputTokens": 120 + position, "outputTokens": 48}},
            "input": {"messages": [{"role": "user", "content": f"Summarize ticket #{trace} for the customer"}]},
            "output": {"text": "The customer reports a billing issue that was resolved by a refund.",
                       "finishReason": "stop"},
            "tags": ["support", "billing"] if root else None,
            "error": {"message": "tool timed out", "id": "TOOL_TIMEOUT"}
            if (position == 3 and trace % 25 == 0) or (root and trace % 40 == 0) else None,
        }
        yield record


# --------------------------------------------------------------------------- raw rows

def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="milliseconds")[:-6] + "Z"


def _naive(value: datetime | None) -> datetime | None:
    return None if value is None else value.replace(tzinfo=None)


def _epoch_ms(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


def raw_rows(records: list[dict[str, Any]], backend: str, now: datetime, *, datetime64: bool = False,
             version: int = 0) -> list[tuple]:
    """The rows a hand-written writer sends for these records, in the library's stored formats."""
    keys = [key for _, key in COLUMNS]
    rows = []
    if backend == "sqlite":
        stamp = _iso(now)
        for record in records:
            rows.append(tuple(
                _json(record.get(key)) if key in JSON_KEYS else _iso(record.get(key)) if key in TIME_KEYS
                else int(record[key]) if key == "is_event" else record.get(key) for key in keys) + (stamp, stamp))
    elif backend == "postgres":
        naive = _naive(now)
        for record in records:
            started, ended = record["started_at"], record.get("ended_at")
            rows.append(tuple(
                _json(record.get(key)) if key in JSON_KEYS else _naive(record.get(key)) if key in TIME_KEYS
                else record.get(key) for key in keys) + (naive, naive, started, ended, now, now))
    else:
        convert = (lambda value: value) if datetime64 else _epoch_ms
        stamp = convert(now)
        for offset, record in enumerate(records):
            rows.append(tuple(
                _json(record.get(key)) if key in JSON_KEYS else convert(record.get(key)) if key in TIME_KEYS
                else int(record[key]) if key == "is_event" else record.get(key) for key in keys)
                + (stamp, stamp, version + offset, 0))
    return rows


def raw_columns(backend: str) -> list[str]:
    columns = [column for column, _ in COLUMNS] + ["createdAt", "updatedAt"]
    if backend == "postgres":
        columns += ["startedAtZ", "endedAtZ", "createdAtZ", "updatedAtZ"]
    if backend == "clickhouse":
        columns += ["_version", "_deleted"]
    return columns


def raw_writer(bench: BenchBackend, datetime64: bool) -> tuple[Callable[[list[dict]], None], Callable[[], None]]:
    """A function writing one batch of records with the bare driver (one transaction), and a closer."""
    connection = bench.connect()
    columns = ", ".join(f'"{column}"' for column in raw_columns(bench.name))
    if bench.name == "sqlite":
        sql = f"INSERT INTO mastra_ai_spans ({columns}) VALUES ({', '.join('?' * len(raw_columns('sqlite')))})"

        def write(records: list[dict]) -> None:
            rows = raw_rows(records, "sqlite", datetime.now(UTC))
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany(sql, rows)
            connection.execute("COMMIT")
    elif bench.name == "postgres":
        from psycopg2.extras import execute_values

        sql = f"INSERT INTO mastra_ai_spans ({columns}) VALUES %s"

        def write(records: list[dict]) -> None:
            with connection.cursor() as cursor:
                execute_values(cursor, sql, raw_rows(records, "postgres", datetime.now(UTC)), page_size=1000)
            connection.commit()
    else:
        sql = f"INSERT INTO mastra_ai_spans ({columns}) VALUES"

        def write(records: list[dict]) -> None:
            version = time.time_ns() // 1000
            connection.execute(sql, raw_rows(records, "clickhouse", datetime.now(UTC).replace(microsecond=0),
                                             datetime64=datetime64, version=version))

    close = connection.disconnect if bench.name == "clickhouse" else connection.close
    return write, close


# --------------------------------------------------------------------------- ingest

def ingest(bench: BenchBackend, count: int, *, rounds: int = 2, show_profile: bool = False) -> dict[str, Any]:
    """Best-of-``rounds`` rows/s of the library and of the bare driver, on the same table."""
    store = store_for_url(legacy_url(bench))
    try:
        store.init()
        observability = store.get_store("observability")
        batches = [list(make_spans(BATCH, first_trace=start // SPANS_PER_TRACE))
                   for start in range(0, count, BATCH)]
        # The test data is not garbage: keep the collector from walking it during the timings.
        gc.collect()
        gc.freeze()
        datetime64 = bench.name == "clickhouse" and observability.backend.server_features.datetime64
        write_raw, close_raw = raw_writer(bench, datetime64)
        best_library = best_raw = float("inf")
        try:
            for _ in range(rounds):
                observability.dangerously_clear_all()
                _, seconds = timed(lambda: [write_raw(batch) for batch in batches])
                best_raw = min(best_raw, seconds)
                observability.dangerously_clear_all()
                _, seconds = timed(lambda: [observability.batch_create_spans(records=batch) for batch in batches])
                best_library = min(best_library, seconds)
            assert observability.count_rows()["mastra_ai_spans"] == count
            if show_profile:
                observability.dangerously_clear_all()
                profile(lambda: [observability.batch_create_spans(records=batch) for batch in batches[:20]],
                        limit=25, sort="tottime")
        finally:
            gc.unfreeze()
            close_raw()
            observability.dangerously_clear_all()
    finally:
        store.close()
    return throughput_row(f"batch_create_spans ({count:,} spans, batches of {BATCH:,})", bench.name,
                          library=rate(count, best_library), raw=rate(count, best_raw))


# --------------------------------------------------------------------------- reads at scale

def load_sqlite(bench: BenchBackend, count: int, per_trace: int) -> None:
    connection = bench.connect()
    columns = raw_columns("sqlite")
    quoted = ", ".join(f'"{column}"' for column in columns)
    sql = f"INSERT INTO mastra_ai_spans ({quoted}) VALUES ({', '.join('?' * len(columns))})"
    now = datetime.now(UTC)
    chunk = 50_000
    for start in range(0, count, chunk):
        records = list(make_spans(min(chunk, count - start), first_trace=start // per_trace, per_trace=per_trace))
        connection.execute("BEGIN")
        connection.executemany(sql, raw_rows(records, "sqlite", now))
        connection.execute("COMMIT")
    connection.execute("ANALYZE")
    connection.close()


def load_postgres(bench: BenchBackend, count: int, per_trace: int, observability: Any) -> None:
    """COPY into the table without secondary indexes and trigger, then let ``init()`` rebuild them."""
    connection = bench.connect()
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'mastra_ai_spans' "
                       "AND indexname NOT LIKE '%%_pk'")
        for (name,) in cursor.fetchall():
            cursor.execute(f'DROP INDEX "{name}"')
        cursor.execute("SET session_replication_role = replica")  # no trigger during the load
        columns = ", ".join(f'"{column}"' for column in raw_columns("postgres"))
        now = datetime.now(UTC)
        chunk = 50_000
        for start in range(0, count, chunk):
            records = list(make_spans(min(chunk, count - start), first_trace=start // per_trace,
                                      per_trace=per_trace))
            buffer = io.StringIO()
            for row in raw_rows(records, "postgres", now):
                buffer.write("\t".join(_copy_text(value) for value in row))
                buffer.write("\n")
            buffer.seek(0)
            cursor.copy_expert(f"COPY mastra_ai_spans ({columns}) FROM STDIN", buffer)
        cursor.execute("SET session_replication_role = origin")
    connection.commit()
    observability.backend._initialized.discard("observability")
    observability.init()  # recreates the dropped indexes
    with connection.cursor() as cursor:
        connection.autocommit = True
        cursor.execute("VACUUM ANALYZE mastra_ai_spans")
    connection.close()


def _copy_text(value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "t" if value else "f"
    text = str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def p50_p95(samples: list[float]) -> tuple[float, float]:
    """Median and 95th percentile of latencies."""
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.95) - 1]


class RawReads:
    """The bare driver replaying the statements of a library read, decoding rows into records."""

    def __init__(self, bench: BenchBackend, observability: Any) -> None:
        self.db = RawDatabase(bench)
        self.database = observability.backend.database
        self.postgres = bench.name == "postgres"
        if not self.postgres:
            # The library's JSON filters read JSONB blobs (other clients' rows) through this
            # function; the rows here are text, so it is declared but never called.
            self.db.connection.create_function(JSON_TEXT_FUNCTION, 1, jsonb_to_json_text, deterministic=True)

    def capture(self, call: Callable[[], Any]) -> list[tuple[str, tuple]]:
        """The statements (SQL with the driver's placeholders, parameters) ``call`` executes,
        without its transaction control (:meth:`run` brings its own)."""
        statements: list[tuple[str, tuple]] = []

        def hook(event: Any) -> None:
            statements.append((event.sql, tuple(event.params or ())))

        self.database.query_hooks.append(hook)
        try:
            call()
        finally:
            self.database.query_hooks.remove(hook)
        return [(sql, params) for sql, params in statements
                if not sql.lstrip().upper().startswith(("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE"))]

    def run(self, statements: list[tuple[str, tuple]]) -> list[dict[str, Any]]:
        """Run ``statements`` in one read transaction; the last one's rows as records."""
        with self.db.read():
            for sql, params in statements:
                if self.postgres:
                    with self.db.connection.cursor() as cursor:
                        cursor.execute(sql, params)
                        rows = cursor.fetchall() if cursor.description else []
                        names = [column[0] for column in cursor.description or ()]
                else:
                    cursor = self.db.connection.execute(sql, params)
                    rows = cursor.fetchall()
                    names = [column[0] for column in cursor.description or ()]
        return [self.record(dict(zip(names, row))) for row in rows]

    def record(self, row: dict[str, Any]) -> dict[str, Any]:
        """A span row as a record: JSON parsed (psycopg2 parses ``jsonb`` itself), timestamps aware."""
        for column, value in row.items():
            if isinstance(value, str) and column in JSON_COLUMNS:
                row[column] = json.loads(value)
            elif isinstance(value, str) and column in TIME_COLUMNS:
                row[column] = datetime.fromisoformat(value)
            elif isinstance(value, datetime) and value.tzinfo is None:
                row[column] = value.replace(tzinfo=UTC)
        return row

    def close(self) -> None:
        self.db.close()


JSON_COLUMNS = {column for column, key in COLUMNS if key in JSON_KEYS}
TIME_COLUMNS = {column for column, key in COLUMNS if key in TIME_KEYS} | {"createdAt", "updatedAt"}


LIST_FILTERS = (
    ("none", None),
    ("entity_id", {"entity_id": "agent-3"}),
    ("environment", {"environment": "production"}),
    ("user_id", {"user_id": "user-42"}),
    ("status", {"status": "error"}),
    ("span_type", {"span_type": "agent_run"}),
    ("metadata", {"metadata": {"priority": "high"}}),
    ("tags", {"tags": ["billing"]}),
    ("started_at", {"started_at": {"start": START + timedelta(hours=1), "end": START + timedelta(hours=2)}}),
)


def reads_at_scale(bench: BenchBackend, count: int, per_trace: int = SPANS_PER_TRACE) -> list[dict[str, Any]]:
    """Load ``count`` spans raw, then time ``get_trace`` and ``list_traces`` through the library,
    alternately with the bare driver running the same statements."""
    store = store_for_url(legacy_url(bench))
    raw: RawReads | None = None
    results = []
    try:
        store.init()
        observability = store.get_store("observability")
        observability.dangerously_clear_all()
        _, seconds = timed(lambda: load_sqlite(bench, count, per_trace) if bench.name == "sqlite"
                           else load_postgres(bench, count, per_trace, observability))
        traces = count // per_trace
        print(f"[{bench.name}] loaded {count:,} spans ({traces:,} traces) in {seconds:.0f} s (setup)", flush=True)
        raw = RawReads(bench, observability)
        at_scale = f"{count:,} spans"
        rng = random.Random(3)
        trace_ids = [f"trace-{rng.randrange(traces):09d}" for _ in range(200)]
        (sql, _), = raw.capture(lambda: observability.get_trace(trace_id=trace_ids[0]))
        assert len(raw.run([(sql, (trace_ids[0],))])) == per_trace
        library_picks, raw_picks = iter(trace_ids * 2), iter(trace_ids * 2)
        library_ms, raw_ms = paired_times_ms(lambda: observability.get_trace(trace_id=next(library_picks)),
                                             lambda: raw.run([(sql, (next(raw_picks),))]), repeat=200, warmup=1)
        (p50, p95), (raw_p50, _) = p50_p95(library_ms), p50_p95(raw_ms)
        results.append(latency_row(f"get_trace ({at_scale}, {per_trace} per trace)", bench.name, library=p50,
                                   raw=raw_p50, note=f"p95 {p95:.1f} ms"))
        for label, filters in LIST_FILTERS:
            page = observability.list_traces(filters=filters)
            statements = raw.capture(lambda: observability.list_traces(filters=filters))
            assert [row["spanId"] for row in raw.run(statements)] == [item["span_id"] for item in page.items]
            library_ms, raw_ms = paired_times_ms(lambda: observability.list_traces(filters=filters),
                                                 lambda: raw.run(statements), repeat=30, warmup=1)
            (p50, p95), (raw_p50, _) = p50_p95(library_ms), p50_p95(raw_ms)
            results.append(latency_row(f"list_traces first page, {label} ({at_scale})", bench.name, library=p50,
                                       raw=raw_p50, note=f"p95 {p95:.1f} ms, total {page.total:,} of {traces:,}"))
        observability.dangerously_clear_all()
    finally:
        if raw is not None:
            raw.close()
        store.close()
    return results


# --------------------------------------------------------------------------- entry point

def _count(name: str, default: int) -> int:
    """An integer from the environment variable ``name``, else ``default``."""
    value = os.environ.get(name, "").replace("_", "").strip()
    return int(value) if value else default


def legacy_url(bench: Any) -> str:
    """The URL of the legacy span table (``mastra_ai_spans``) this module measures: ClickHouse's
    default is the current layout (``layout="vnext"``)."""
    return bench.url + "?layout=legacy" if bench.name == "clickhouse" else bench.url


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run both benchmarks; return their result rows (``python -m benchmarks`` prints them)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_observability", description=__doc__)
    parser.add_argument("--spans", type=int, default=_count("COMPOSITE_STORE_BENCH_SPANS", scaled(1_000_000)),
                        help="spans loaded for the reads at scale (default 1,000,000 times the scale)")
    parser.add_argument("--ingest", type=int, default=_count("COMPOSITE_STORE_BENCH_INGEST", scaled(100_000)),
                        help="spans written by the ingest benchmark (default 100,000 times the scale)")
    parser.add_argument("--spans-per-trace", type=int,
                        default=_count("COMPOSITE_STORE_BENCH_SPANS_PER_TRACE", SPANS_PER_TRACE),
                        help=f"trace size for the reads at scale (default {SPANS_PER_TRACE})")
    parser.add_argument("--skip-reads", action="store_true", help="only the ingest benchmark")
    parser.add_argument("--skip-ingest", action="store_true", help="only the reads at scale")
    parser.add_argument("--profile", action="store_true", help="cProfile 20 library batches per backend")
    arguments = parser.parse_args(argv if argv is not None else [])
    results: list[dict[str, Any]] = []
    with backends() as available:
        if not arguments.skip_ingest:
            results += [ingest(bench, arguments.ingest, show_profile=arguments.profile) for bench in available]
        if not arguments.skip_reads:
            for bench in available:
                if bench.name in ("sqlite", "postgres"):
                    results += reads_at_scale(bench, arguments.spans, arguments.spans_per_trace)
    return results


if __name__ == "__main__":
    import sys

    print_results(main(sys.argv[1:]), title="observability: library against the raw driver")
