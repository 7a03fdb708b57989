"""Observability benchmarks of the current ("vNext") ClickHouse layout (issue 18), on the 18.16
server the tests start and on the current engine in-process (``chdb://`` URLs).

1. **Ingest**: ``batch_create_spans`` in batches of 1,000 and of 10,000 against the raw driver
   inserting the same rows (tuples it builds itself from the same records: ``dedupeKey``, the
   end of an open span, tags, the ``metadataSearch`` members, JSON text) into
   ``mastra_span_events``, one native insert per chunk; alternating rounds, best of two each.
   Target: at least 0.7 times the driver's rows per second (on the 18.16 server; the current
   engine's figure, against the same raw path through its in-process client, is reported too).
2. **Reads at scale**: 1,000,000 and 10,000,000 spans (20 per trace, ``make_spans`` of
   :mod:`benchmarks.bench_observability`) loaded by the server itself (``INSERT … SELECT … FROM
   numbers()`` computing the same rows; setup, not measured), then p50/p95 of ``get_trace`` and of the first page of ``list_traces`` per filter
   (``LIST_FILTERS``), each alternating with the raw driver running the same SQL (captured from
   the library's call) and decoding the rows (JSON parsed).  Targets (p50, absolute): current
   engine ``get_trace`` <= 10 ms and every ``list_traces`` <= 30 ms at 1M spans, <= 60 ms at
   10M; 18.16 server <= 20 ms and <= 100 ms at 1M (no absolute target at 10M).  The peak
   ``memory_usage`` of the read queries is read from the server's ``system.query_log`` (the
   server is started here with it enabled), with the count of queries that failed (a memory
   limit); the in-process engine keeps no query log, so its reads run under
   ``max_memory_usage`` = 1 GiB instead (a query above it would fail the benchmark), and its
   rows give the p50 CPU time of the process per call (the engine's threads are the process's:
   less sensitive to the machine's load than latency; the load average is beside it).

Run with ``python -m benchmarks observability-vnext`` or ``python -m benchmarks.bench_observability_vnext
[--spans N ...] [--ingest N] [--skip-reads] [--skip-ingest] [--profile]``.  Sizes follow
``COMPOSITE_STORE_BENCH_SCALE`` (``--scale``: 0.1 reads 100k and 1M spans);
``COMPOSITE_STORE_BENCH_BACKENDS`` picks among ``clickhouse`` (the 18.16 server) and ``chdb``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import random
import resource
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from benchmarks.bench_observability import CHILD_TYPES, LIST_FILTERS, SPANS_PER_TRACE, START, make_spans, p50_p95
from benchmarks.common import (BenchBackend, _clickhouse_connect, latency_row, info_row, paired_times_ms, print_results, profile, rate,
                               scaled, throughput_row, timed)
from composite_store.composite import store_for_url
from composite_store.models.observability_vnext import JSON_COLUMNS, SPAN_COLUMNS, SPAN_EVENTS
from tests.servers import ClickHouseServer, find_clickhouse_binary

#: Ingest target: share of the raw driver's rows per second.
MIN_INGEST_RATIO = 0.7
#: Absolute p50 targets in ms: (backend, spans) → (get_trace, every list_traces filter).
READ_TARGETS = {("chdb", 1_000_000): (10, 30), ("chdb", 10_000_000): (60, 60),
                ("clickhouse", 1_000_000): (20, 100)}
#: Longest wait for the load's background merges before the reads, seconds.
MERGE_WAIT = 300
#: Seconds without a merge (and with the same active parts) that count as at rest.
MERGE_QUIET = 10
#: Spans per server-side INSERT … SELECT while loading the reads' data.
LOAD_CHUNK = 1_000_000
BACKEND_CHOICES = ("clickhouse", "chdb")
#: The memory limit of each read query on the in-process engine (which has no query log).
CHDB_READ_MEMORY_LIMIT = 1 << 30


# --------------------------------------------------------------------------- backends

QUERY_LOG_CONFIG = """<yandex><query_log><database>system</database><table>query_log</table>
<flush_interval_milliseconds>1000</flush_interval_milliseconds></query_log></yandex>"""
LOG_QUERIES_PROFILE = "<yandex><profiles><default><log_queries>1</log_queries></default></profiles></yandex>"


@contextlib.contextmanager
def engines() -> Iterator[list[BenchBackend]]:
    """The 18.16 server (a throwaway one logging its queries, or ``COMPOSITE_STORE_CLICKHOUSE_URL``)
    and the in-process engine on a temporary directory, as chosen by
    ``COMPOSITE_STORE_BENCH_BACKENDS``; ``connect()`` gives the raw client of each (the driver's
    ``Client``; on the engine, the in-process client the library wraps, which has its interface)."""
    chosen = [name.strip() for name in os.environ.get("COMPOSITE_STORE_BENCH_BACKENDS", "").split(",") if name.strip()]
    wanted = [name for name in BACKEND_CHOICES if not chosen or name in chosen]
    available: list[BenchBackend] = []
    with contextlib.ExitStack() as cleanup:
        if "clickhouse" in wanted:
            url = os.environ.get("COMPOSITE_STORE_CLICKHOUSE_URL")
            if not url and find_clickhouse_binary() is not None:
                directory = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="cs-bench-ch-"))
                server = ClickHouseServer(directory)
                # The server's own config has no query log; these files beside it add one.
                for folder, text in (("config.d", QUERY_LOG_CONFIG), ("users.d", LOG_QUERIES_PROFILE)):
                    (Path(directory) / folder).mkdir(exist_ok=True)
                    (Path(directory) / folder / "bench.xml").write_text(text)
                server.start()
                cleanup.callback(server.stop)
                url = server.url
            if url:
                available.append(BenchBackend("clickhouse", url, _clickhouse_connect(url)))
        if "chdb" in wanted:
            from composite_store.backends.chdb import ChdbClient

            directory = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="cs-bench-chdb-"))
            available.append(BenchBackend("chdb", f"chdb://{directory}", lambda: ChdbClient(path=directory)))
        yield available


# --------------------------------------------------------------------------- raw rows

class RawSpans:
    """A hand-written writer of ``mastra_span_events``: its own tuples, one native insert per chunk.

    It reads the table's stored types once (``DateTime64`` or epoch milliseconds, ``Map`` or the
    18.16 ``Nested`` pair) and applies the layout's write rules to the records it knows
    (``make_spans``: no promoted metadata keys, no text needing cleaning)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        types = dict(client.execute("SELECT name, type FROM system.columns WHERE database = currentDatabase() "
                                    f"AND table = '{SPAN_EVENTS}'"))
        self.nested = "metadataSearch.keys" in types
        self.datetime64 = types["startedAt"].startswith("DateTime64")
        names = [column for column, _, _ in SPAN_COLUMNS]
        if self.nested:
            at = names.index("metadataSearch")
            names[at:at + 1] = ["metadataSearch.keys", "metadataSearch.values"]
        self.names = names
        self.sql = f'INSERT INTO "{SPAN_EVENTS}" ({", ".join(f"{chr(34)}{n}{chr(34)}" for n in names)}) VALUES'
        self.fields = [field for _, field, _ in SPAN_COLUMNS]

    def rows(self, records: Sequence[dict[str, Any]]) -> list[tuple]:
        """The tuples of these records, in the insert's column order."""
        dumps, nested, datetime64 = json.dumps, self.nested, self.datetime64
        json_fields = {field for column, field, _ in SPAN_COLUMNS if column in JSON_COLUMNS}
        moment: Callable[[datetime], Any] = (lambda value: value) if datetime64 else \
            (lambda value: int(value.timestamp() * 1000))
        out = []
        for record in records:
            started = record["started_at"]
            ended = started if record.get("is_event") or record.get("ended_at") is None else record["ended_at"]
            metadata = record.get("metadata") or {}
            search = {key: value for key, value in sorted(metadata.items()) if isinstance(value, str)}
            values = []
            for field in self.fields:
                if field == "dedupe_key":
                    values.append(f"{record['trace_id']}:{record['span_id']}")
                elif field == "started_at":
                    values.append(moment(started))
                elif field == "ended_at":
                    values.append(moment(ended))
                elif field == "is_event":
                    values.append(bool(record.get("is_event")) if datetime64 else int(bool(record.get("is_event"))))
                elif field == "tags":
                    values.append(record.get("tags") or [])
                elif field == "metadata_search":
                    values.extend((list(search), list(search.values())) if nested else (search,))
                elif field in json_fields:
                    value = record.get(field)
                    values.append(None if value is None else dumps(value, separators=(",", ":"), ensure_ascii=False))
                else:
                    values.append(record.get(field))
            out.append(tuple(values))
        return out

    def load_sql(self, first: int, count: int, per_trace: int) -> str:
        """``INSERT … SELECT`` of spans ``first`` to ``first + count`` of the :func:`make_spans`
        shape, computed by the server from ``numbers()`` (``load``)."""
        start_ms = int(START.timestamp() * 1000)
        padded = "substring(toString({base} + {value}), 2)"  # zero-padded (18.16 has no leftPad)
        trace_id = "concat('trace-', " + padded.format(base=10**9, value="trace") + ")"
        span_id = "concat('span-', " + padded.format(base=10**4, value="position") + ")"
        started = f"{start_ms} + trace * 10000 + position * 250"
        ended = f"if(position = 0 AND trace % 97 = 0, {started}, {started} + 180 + position)"
        moment = (lambda ms: f"fromUnixTimestamp64Milli(toInt64({ms}), 'UTC')") if self.datetime64 else \
            (lambda ms: f"toInt64({ms})")
        priority = "if(trace % 7 = 0, 'high', 'normal')"
        tenant = "concat('tenant-', toString(trace % 50))"
        child_types = ", ".join(f"'{span_type}'" for span_type in CHILD_TYPES)
        failed = "(position = 3 AND trace % 25 = 0) OR (position = 0 AND trace % 40 = 0)"
        expressions = {
            "dedupeKey": f"concat({trace_id}, ':', {span_id})", "traceId": trace_id, "spanId": span_id,
            "parentSpanId": "if(position = 0, NULL, 'span-0000')",
            "entityType": "if(position = 0, 'agent', 'tool')", "entityId": "concat('agent-', toString(trace % 10))",
            "entityName": "concat('Agent ', toString(trace % 10))", "rootEntityType": "'agent'",
            "rootEntityId": "concat('agent-', toString(trace % 10))",
            "userId": "concat('user-', toString(trace % 1000))", "organizationId": "concat('org-', toString(trace % 20))",
            "resourceId": "concat('resource-', toString(trace % 500))", "runId": "concat('run-', toString(trace))",
            "sessionId": "concat('session-', toString(intDiv(trace, 4)))",
            "threadId": "concat('thread-', toString(intDiv(trace, 2)))",
            "environment": "['production', 'staging', 'development'][trace % 3 + 1]",
            "executionSource": "'cloud'", "serviceName": "'support-bot'",
            "name": "if(position = 0, 'agent run', concat('step ', toString(position)))",
            "spanType": f"if(position = 0, 'agent_run', [{child_types}][cityHash64(n) % {len(CHILD_TYPES)} + 1])",
            "isEvent": "0", "startedAt": moment(started), "endedAt": moment(ended),
            "tags": "if(position = 0, ['support', 'billing'], emptyArrayString())",
            "metadataSearch.keys": "['priority', 'tenant']", "metadataSearch.values": f"[{priority}, {tenant}]",
            "metadataSearch": f"map('priority', {priority}, 'tenant', {tenant})",
            "attributes": "concat('{\"model\":\"gpt-4o-mini\",\"provider\":\"openai\",\"usage\":{\"inputTokens\":', "
                          "toString(120 + position), ',\"outputTokens\":48}}')",
            "input": "concat('{\"messages\":[{\"role\":\"user\",\"content\":\"Summarize ticket #', toString(trace), "
                     "' for the customer\"}]}')",
            "output": "'{\"text\":\"The customer reports a billing issue that was resolved by a refund.\","
                      "\"finishReason\":\"stop\"}'",
            "error": f"if({failed}, '{{\"message\":\"tool timed out\",\"id\":\"TOOL_TIMEOUT\"}}', NULL)",
            "metadataRaw": f"concat('{{\"tenant\":\"', {tenant}, '\",\"priority\":\"', {priority}, '\",\"attempt\":1}}')",
        }
        values = ", ".join(expressions.get(name, "NULL") for name in self.names)
        return (f"{self.sql.removesuffix(' VALUES')} SELECT {values} FROM (SELECT number + {int(first)} AS n, "
                f"intDiv(n, {int(per_trace)}) AS trace, n % {int(per_trace)} AS position FROM numbers({int(count)}))")

    def write(self, records: Sequence[dict[str, Any]]) -> None:
        """One native insert of these records."""
        self.client.execute(self.sql, self.rows(records))


# --------------------------------------------------------------------------- ingest

def ingest(bench: BenchBackend, count: int, batch: int, *, rounds: int = 2,
           show_profile: bool = False) -> dict[str, Any]:
    """Best-of-``rounds`` rows/s of ``batch_create_spans`` and of the raw writer, alternating."""
    store = store_for_url(bench.url)
    client = bench.connect()
    try:
        store.init()
        observability = store.get_store("observability")
        raw = RawSpans(client)
        batches = [list(make_spans(min(batch, count - start), first_trace=start // SPANS_PER_TRACE))
                   for start in range(0, count, batch)]
        gc.collect()
        gc.freeze()  # the test data is not garbage: keep the collector from walking it
        best_library = best_raw = float("inf")
        try:
            for _ in range(rounds):
                observability.dangerously_clear_all()
                best_raw = min(best_raw, timed(lambda: [raw.write(records) for records in batches])[1])
                observability.dangerously_clear_all()
                best_library = min(best_library, timed(
                    lambda: [observability.batch_create_spans(records=records) for records in batches])[1])
            assert observability.count_rows()[SPAN_EVENTS] == count
            if show_profile:
                observability.dangerously_clear_all()
                profile(lambda: [observability.batch_create_spans(records=records) for records in batches[:5]],
                        limit=25, sort="tottime")
        finally:
            gc.unfreeze()
            observability.dangerously_clear_all()
    finally:
        client.disconnect()
        store.close()
    target = MIN_INGEST_RATIO if bench.name == "clickhouse" else None
    return throughput_row(f"vnext batch_create_spans ({count:,} spans, batches of {batch:,})", bench.name,
                          library=rate(count, best_library), raw=rate(count, best_raw), min_ratio=target)


# --------------------------------------------------------------------------- reads at scale

def load(raw: RawSpans, count: int, per_trace: int) -> None:
    """``count`` spans of the ``make_spans`` shape written by the server itself: one
    ``INSERT … SELECT … FROM numbers()`` per :data:`LOAD_CHUNK` spans (10M spans in about a
    minute, where tuples built in Python take most of an hour); the materialized views fill the
    roots and branches tables as they do for any insert.

    Every column is :func:`make_spans`'s except a child's span type, which is picked by a hash
    of its position instead of Python's random generator (children are never listed)."""
    for start in range(0, count, LOAD_CHUNK):
        raw.client.execute(raw.load_sql(start, min(LOAD_CHUNK, count - start), per_trace))


def settle(client: Any, *, timeout: float = MERGE_WAIT, quiet: float = MERGE_QUIET) -> None:
    """Wait (at most ``timeout`` seconds) until the background merges the load started are done,
    so the reads are timed on a table at rest rather than beside merges of gigabytes: no merge
    running and the count of active parts unchanged for ``quiet`` seconds (right after an insert
    the engine may not have scheduled its first merge yet)."""
    deadline = time.monotonic() + timeout
    calm_since, parts = time.monotonic(), None
    while time.monotonic() < deadline:
        merging, active = client.execute("SELECT (SELECT count() FROM system.merges), (SELECT count() FROM "
                                         "system.parts WHERE active AND database = currentDatabase())")[0]
        now = time.monotonic()
        if merging or active != parts:
            calm_since, parts = now, active
        elif now - calm_since >= quiet:
            return
        time.sleep(1)


def captured_sql(observability: Any, call: Callable[[], Any]) -> list[str]:
    """The statements ``call`` sends, as the client received them (parameters substituted)."""
    client = observability.backend.database.connection().client
    sent: list[str] = []
    execute = client.execute

    def recording(query: str, *args: Any, **kwargs: Any) -> Any:
        sent.append(query)
        return execute(query, *args, **kwargs)

    client.execute = recording
    try:
        call()
    finally:
        del client.execute
    return sent


def raw_run(client: Any, statements: Sequence[str]) -> list[dict[str, Any]]:
    """The raw driver running ``statements``: the last one's rows as dicts, JSON parsed."""
    rows: list[dict[str, Any]] = []
    for sql in statements:
        data, columns = client.execute(sql, with_column_types=True)
        names = [name for name, _ in columns]
        rows = [dict(zip(names, row)) for row in data]
    for row in rows:
        for column in JSON_COLUMNS:
            if isinstance(row.get(column), str):
                row[column] = json.loads(row[column])
    return rows


def cpu_ms() -> float:
    """CPU time of this process so far (user and system, every thread), in milliseconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return (usage.ru_utime + usage.ru_stime) * 1000


def with_cpu(call: Callable[[], Any], spent: list[float]) -> Callable[[], Any]:
    """``call`` appending the process CPU milliseconds of each of its runs to ``spent``."""
    def measured() -> Any:
        started = cpu_ms()
        result = call()
        spent.append(cpu_ms() - started)
        return result
    return measured


def cpu_note(spent: list[float]) -> str:
    """The p50 CPU of the calls in ``spent`` (the first, a warm-up, left out), with the load."""
    return f"process CPU p50 {statistics.median(spent[1:] or spent):.1f} ms, load {os.getloadavg()[0]:.1f}"


def peak_read_memory(client: Any, since: float) -> tuple[int, int, int, int]:
    """``(peak memory_usage in bytes, most bytes one query read, queries, failed queries)`` of the
    benchmark's reads of the tracing tables in the server's query log since ``since`` (epoch
    seconds); the bytes read do not depend on the machine's load."""
    client.execute("SYSTEM FLUSH LOGS")
    sql = ("SELECT max(memory_usage), max(read_bytes), countIf(type = 2), countIf(type > 2) FROM system.query_log "
           f"WHERE event_time >= toDateTime({int(since)}) AND query LIKE 'SELECT%' "
           "AND (query LIKE '%mastra_trace_roots%' OR query LIKE '%mastra_span_events%')")
    return tuple(client.execute(sql)[0])  # type: ignore[return-value]


def reads_at_scale(bench: BenchBackend, count: int, *, per_trace: int = SPANS_PER_TRACE,
                   trace_calls: int = 200, list_calls: int = 30) -> list[dict[str, Any]]:
    """Load ``count`` spans raw, then time ``get_trace`` and the first page of ``list_traces``
    per filter, alternating with the raw driver running the same SQL."""
    store = store_for_url(bench.url)
    client = bench.connect()
    results: list[dict[str, Any]] = []
    try:
        store.init()
        observability = store.get_store("observability")
        observability.dangerously_clear_all()
        _, seconds = timed(lambda: load(RawSpans(client), count, per_trace))
        traces = count // per_trace
        _, settling = timed(lambda: settle(client))
        print(f"[{bench.name}] loaded {count:,} spans ({traces:,} traces) in {seconds:.0f} s, merges settled in "
              f"{settling:.0f} s (setup)", flush=True)
        if bench.name == "chdb":
            # The in-process engine keeps no query log: its reads run under a memory limit instead.
            client.execute(f"SET max_memory_usage = {CHDB_READ_MEMORY_LIMIT}")
        at_scale = f"vnext, {count:,} spans"
        get_target, list_target = READ_TARGETS.get((bench.name, count), (None, None))
        since = time.time() - 1
        rng = random.Random(3)
        trace_ids = [f"trace-{rng.randrange(traces):09d}" for _ in range(trace_calls)]
        first = trace_ids[0]
        statements = captured_sql(observability, lambda: observability.get_trace(trace_id=first))
        assert len(raw_run(client, statements)) == per_trace
        library_picks, raw_picks = iter(trace_ids * 2), iter(trace_ids * 2)
        # In-process, the engine's CPU is this process's: each library call's is kept for the note.
        in_process = bench.name == "chdb"
        spent: list[float] = []
        library_ms, raw_ms = paired_times_ms(
            with_cpu(lambda: observability.get_trace(trace_id=next(library_picks)), spent),
            lambda: raw_run(client, [sql.replace(first, next(raw_picks)) for sql in statements]),
            repeat=trace_calls, warmup=1)
        results.append(_latency(f"get_trace ({at_scale})", bench.name, library_ms, raw_ms, get_target,
                                note=cpu_note(spent) if in_process else ""))
        for label, filters in LIST_FILTERS:
            page = observability.list_traces(filters=filters)
            statements = captured_sql(observability, lambda: observability.list_traces(filters=filters))
            # The same rows (the library puts the page's rows in the keys' order itself).
            assert sorted(row["traceId"] for row in raw_run(client, statements)) == \
                sorted(item["trace_id"] for item in page.items)
            spent = []
            library_ms, raw_ms = paired_times_ms(with_cpu(lambda: observability.list_traces(filters=filters), spent),
                                                 lambda: raw_run(client, statements), repeat=list_calls, warmup=1)
            notes = [f"total {page.total:,} of {traces:,}", *([cpu_note(spent)] if in_process else [])]
            results.append(_latency(f"list_traces first page, {label} ({at_scale})", bench.name, library_ms, raw_ms,
                                    list_target, note=", ".join(notes)))
        if in_process:
            results.append(info_row(f"peak memory_usage of the reads ({at_scale})", bench.name, unit="MiB",
                                    library=float("nan"), note=f"no query log in-process; every read ran under "
                                    f"max_memory_usage = {CHDB_READ_MEMORY_LIMIT // 2**20} MiB"))
            client.execute("SET max_memory_usage = 0")
        else:
            try:
                peak, read, queries, failed = peak_read_memory(client, since)
            except Exception as exc:  # noqa: BLE001 - a server without a query log: say so
                results.append(info_row(f"peak memory_usage of the reads ({at_scale})", bench.name, unit="MiB",
                                        library=float("nan"), note=f"no query log: {str(exc).splitlines()[0][:80]}"))
            else:
                results.append(info_row(f"peak memory_usage of the reads ({at_scale})", bench.name, unit="MiB",
                                        library=(peak or 0) / 2**20,
                                        note=f"{queries:,} read queries logged, {failed} failed, at most "
                                             f"{(read or 0) / 2**20:.1f} MiB read by one"))
        observability.dangerously_clear_all()
    finally:
        client.disconnect()
        store.close()
    return results


def _latency(operation: str, backend: str, library_ms: list[float], raw_ms: list[float], limit_ms: float | None,
             note: str = "") -> dict[str, Any]:
    """A p50 row with the absolute target (the raw driver's p50 beside it, the ratio informative)."""
    (p50, p95), raw_p50 = p50_p95(library_ms), statistics.median(raw_ms)
    row = latency_row(operation, backend, library=p50, raw=raw_p50, max_ratio=None, limit_ms=None,
                      note=", ".join(filter(None, [f"p95 {p95:.1f} ms", note])))
    if limit_ms is not None:
        row["target"], row["result"] = f"<= {limit_ms:g} ms", "ok" if p50 <= limit_ms else "MISSED"
    return row


# --------------------------------------------------------------------------- entry point

def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run both benchmarks; return their result rows (``python -m benchmarks`` prints them)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_observability_vnext", description=__doc__)
    parser.add_argument("--spans", type=int, nargs="+", default=[scaled(1_000_000), scaled(10_000_000)],
                        help="span counts loaded for the reads (default 1M and 10M times the scale)")
    parser.add_argument("--ingest", type=int, default=scaled(200_000, minimum=20_000),
                        help="spans written per ingest measurement (default 200,000 times the scale)")
    parser.add_argument("--skip-reads", action="store_true", help="only the ingest benchmark")
    parser.add_argument("--skip-ingest", action="store_true", help="only the reads at scale")
    parser.add_argument("--profile", action="store_true", default=bool(os.environ.get("COMPOSITE_STORE_BENCH_PROFILE")),
                        help="cProfile 5 library batches per ingest (also COMPOSITE_STORE_BENCH_PROFILE=1)")
    arguments = parser.parse_args(argv if argv is not None else [])
    results: list[dict[str, Any]] = []
    with engines() as available:
        for bench in available:
            if not arguments.skip_ingest:
                results += [ingest(bench, arguments.ingest, batch, show_profile=arguments.profile)
                            for batch in (1_000, 10_000)]
            if not arguments.skip_reads:
                for count in arguments.spans:
                    results += reads_at_scale(bench, count)
    return results


if __name__ == "__main__":
    import sys

    print_results(main(sys.argv[1:]), title="observability, current layout: library against the raw driver")
