"""Moving data (issue 21): streaming reads and copies between backends.

* **iterate**: ``memory.iter_messages()`` over ``ITERATE`` messages against the bare driver
  doing the same work: the same scan of the same table in the same order, fetched in chunks
  (SQLite: a cursor; PostgreSQL: a named cursor; ClickHouse: ``execute_iter``), each row turned
  by hand into the dict ``iter_messages`` yields (content JSON decoded, an aware
  ``created_at``: the least any reader of these records does), rows/s, best of two alternating
  rounds (target: at least 0.7).  Beside it, for reference, the driver's bare tuples, with no
  conversion at all: the ceiling of the scan, which no reader returning records reaches (the
  hand-written conversion alone runs at a fifth to a half of it).  Then the memory the iteration takes
  above what the process held before it: tracemalloc's peak and the resident set's (sampled
  every 5 ms; target: at most 50 MiB each).
* **copy**: ``copy_domains`` of ``COPY_MESSAGES`` messages and ``COPY_SPANS`` spans from SQLite
  to PostgreSQL and to ClickHouse (its current span layout), rows/s against the target's own
  bulk writes of the same records (``save_messages``, ``batch_create_spans`` in chunks of the
  copy's size; target: at least 0.5).

Run with ``python -m benchmarks move`` (``--scale 0.02`` for a quick run).
"""

from __future__ import annotations

import gc
import itertools
import json
import os
import tempfile
import threading
import time
import tracemalloc
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable

from composite_store import copy_domains
from composite_store.composite import store_for_url
from composite_store.moving import WRITE_CHUNK

from .common import (BenchBackend, backends, info_row, paired_times_ms, print_results, rate, scaled,
                     throughput_row)

ITERATE = 1_000_000
COPY_MESSAGES = 100_000
COPY_SPANS = 1_000_000
MIN_ITERATE_RATIO = 0.7
MIN_COPY_RATIO = 0.5
MAX_MEMORY_MIB = 50
#: Rows per fill call.
FILL_CHUNK = 10_000
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def messages(count: int) -> Iterable[list[dict[str, Any]]]:
    """``count`` messages of 100 threads, in chunks."""
    for start in range(0, count, FILL_CHUNK):
        yield [{"id": f"m-{i:08d}", "thread_id": f"t-{i % 100}", "resource_id": "r-1", "role": "user",
                "content": f"message number {i} with a few words of text", "created_at": T0 + timedelta(seconds=i)}
               for i in range(start, min(count, start + FILL_CHUNK))]


def spans(count: int) -> Iterable[list[dict[str, Any]]]:
    """``count`` spans, ten a trace, in chunks."""
    for start in range(0, count, FILL_CHUNK):
        yield [{"trace_id": f"trace-{i // 10:07d}", "span_id": f"span-{i:08d}",
                "parent_span_id": None if i % 10 == 0 else f"span-{i - i % 10:08d}", "name": "tool call",
                "span_type": "tool_call", "is_event": False, "started_at": T0 + timedelta(milliseconds=i),
                "ended_at": T0 + timedelta(milliseconds=i + 5), "attributes": {"tool": "search"}}
               for i in range(start, min(count, start + FILL_CHUNK))]


def fill(store: Any, *, message_count: int = 0, span_count: int = 0) -> None:
    memory, observability = store.get_store("memory"), store.get_store("observability")
    for thread in range(100 if message_count else 0):
        memory.save_thread(thread={"id": f"t-{thread}", "resource_id": "r-1"})
    for chunk in messages(message_count):
        memory.save_messages(messages=chunk)
    for chunk in spans(span_count):
        observability.batch_create_spans(records=chunk)


# --------------------------------------------------------------------------- iterate

def raw_scan(backend: BenchBackend, *, records: bool = False) -> Callable[[], int]:
    """The bare driver's chunked scan of ``mastra_messages`` in the library's order: the rows as
    the driver gives them (tuples), or with ``records`` turned by hand into the dicts
    ``iter_messages`` yields (:func:`message_records`): the least any library can do per row."""
    if backend.name == "clickhouse":  # as the library reads: live rows, in the sorting key's order
        sql = 'SELECT * FROM mastra_messages FINAL WHERE _deleted = 0 ORDER BY "createdAt", id'
    else:
        sql = "SELECT * FROM mastra_messages ORDER BY id"

    def scan() -> int:
        connection = backend.connect()
        count = 0
        try:
            if backend.name == "clickhouse":
                rows = connection.execute_iter(sql, with_column_types=True, settings={"max_block_size": 2000})
                names = [name for name, _ in next(rows)]
            elif backend.name == "postgres":
                cursor = connection.cursor(name="raw_scan")
                cursor.itersize = 2000
                cursor.execute(sql)
                first = cursor.fetchone()  # a named cursor describes its columns after a fetch
                names = [column[0] for column in cursor.description]
                rows = itertools.chain([first] if first is not None else [], cursor)
            else:
                cursor = connection.execute(sql)
                names = [column[0] for column in cursor.description]
                rows = cursor
            if records:
                build = message_records(backend.name, names)
                for row in rows:
                    build(row)
                    count += 1
            else:
                for _ in rows:
                    count += 1
            if backend.name == "postgres":
                connection.rollback()
        finally:
            if backend.name == "clickhouse":
                connection.disconnect()
            else:
                connection.close()
        return count

    return scan


def message_records(backend: str, names: list[str]) -> Callable[[tuple], dict[str, Any]]:
    """A hand-written conversion of a ``mastra_messages`` row (columns ``names``) to the record
    ``iter_messages`` yields: content JSON decoded, an aware ``created_at``."""
    at = {name: index for index, name in enumerate(names)}
    id_, thread, resource, role, kind_at, content, created = (
        at[name] for name in ("id", "thread_id", "resourceId", "role", "type", "content", "createdAt"))
    moment: Callable[[Any], datetime]
    if backend == "sqlite":
        moment = datetime.fromisoformat
    elif backend == "postgres":
        moment = lambda value: value.replace(tzinfo=timezone.utc)  # noqa: E731
    else:
        moment = lambda value: EPOCH + timedelta(milliseconds=value)  # noqa: E731
    loads = json.loads

    def build(row: tuple) -> dict[str, Any]:
        kind = row[kind_at]
        return {"id": row[id_], "thread_id": row[thread], "resource_id": row[resource], "role": row[role],
                "type": None if kind in ("v2", None) else kind, "content": loads(row[content]),
                "created_at": moment(row[created])}

    return build


class RssPeak:
    """The resident set's peak above its level at the start, sampled every 5 ms in a thread."""

    def __init__(self) -> None:
        self.start = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss())

    def __enter__(self) -> "RssPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())

    @property
    def above_start_mib(self) -> float:
        return (self.peak - self.start) / 2**20


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def bench_iterate(backend: BenchBackend) -> list[dict[str, Any]]:
    count = scaled(ITERATE)
    with store_for_url(backend.url) as store:
        store.init()
        store.get_store("memory").dangerously_clear_all()
        fill(store, message_count=count)
        memory = store.get_store("memory")

        def library() -> None:
            assert sum(1 for _ in memory.iter_messages()) == count

        scan, by_hand = raw_scan(backend), raw_scan(backend, records=True)

        def records_by_hand() -> None:
            assert by_hand() == count

        # Warmed (caches, pages, connections), then the best of two alternating rounds each.
        library_ms, by_hand_ms = paired_times_ms(library, records_by_hand, repeat=2, warmup=1)
        library_s, by_hand_s = min(library_ms) / 1000, min(by_hand_ms) / 1000
        started = time.perf_counter()
        assert scan() == count
        raw_s = time.perf_counter() - started

        gc.collect()
        with RssPeak() as rss:
            library()
        tracemalloc.start()
        library()
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        memory.dangerously_clear_all()
    note = f"{count:,} messages"
    return [
        throughput_row("iterate messages", backend.name, library=rate(count, library_s), raw=rate(count, by_hand_s),
                       min_ratio=MIN_ITERATE_RATIO,
                       note=f"{note}; raw: the driver's rows made into the same dicts by hand"),
        throughput_row("iterate messages vs bare tuples", backend.name, library=rate(count, library_s),
                       raw=rate(count, raw_s), min_ratio=None,
                       note=f"{note}; raw: the driver's tuples, not converted (reference)"),
        _memory_row("iterate: tracemalloc peak", backend.name, traced_peak / 2**20, note),
        _memory_row("iterate: RSS above start", backend.name, rss.above_start_mib, note),
    ]


def _memory_row(operation: str, backend: str, mib: float, note: str) -> dict[str, Any]:
    row = info_row(operation, backend, unit="MiB", library=mib, note=note)
    row.update(target=f"<= {MAX_MEMORY_MIB}", result="ok" if mib <= MAX_MEMORY_MIB else "MISSED")
    return row


# --------------------------------------------------------------------------- copy

def bench_copy(source_url: str, backend: BenchBackend, *, message_count: int, span_count: int) -> list[dict]:
    results = []
    with store_for_url(source_url) as source, store_for_url(backend.url) as target:
        target.init()
        for domain, count, write in (
                ("memory", message_count, lambda store, chunk: store.get_store("memory").save_messages(messages=chunk)),
                ("observability", span_count,
                 lambda store, chunk: store.get_store("observability").batch_create_spans(records=chunk))):
            records = (list(source.get_store("memory").iter_messages()) if domain == "memory"
                       else list(source.get_store("observability").iter_spans()))
            target.get_store(domain).dangerously_clear_all()
            if domain == "memory":  # the messages' threads, as the copy writes them too
                for thread in range(100):
                    target.get_store("memory").save_thread(thread={"id": f"t-{thread}", "resource_id": "r-1"})
            started = time.perf_counter()
            for start in range(0, len(records), WRITE_CHUNK):
                write(target, records[start:start + WRITE_CHUNK])
            bulk_s = time.perf_counter() - started
            del records
            target.get_store(domain).dangerously_clear_all()
            started = time.perf_counter()
            reports = copy_domains(source, target, domains=[domain])
            copy_s = time.perf_counter() - started
            assert all(report.counts_match for report in reports), [report.summary() for report in reports]
            rows = sum(report.read for report in reports)
            what = "messages" if domain == "memory" else "spans"
            results.append(throughput_row(f"copy {what} from sqlite", backend.name, library=rate(rows, copy_s),
                                          raw=rate(count, bulk_s), min_ratio=MIN_COPY_RATIO,
                                          note=f"{count:,} {what}; raw: the target's own bulk writes"))
            target.get_store(domain).dangerously_clear_all()
    return results


def main() -> list[dict[str, Any]]:
    """Run the iterate and copy benchmarks on every available backend; print and return the results."""
    results: list[dict[str, Any]] = []
    with backends() as available:
        for backend in available:
            results += bench_iterate(backend)
        with tempfile.TemporaryDirectory(prefix="cs-bench-move-") as directory:
            source_url = f"sqlite:///{directory}/source.db"
            message_count, span_count = scaled(COPY_MESSAGES), scaled(COPY_SPANS)
            with store_for_url(source_url) as source:
                source.init()
                fill(source, message_count=message_count, span_count=span_count)
            for backend in available:
                if backend.name != "sqlite":
                    results += bench_copy(source_url, backend, message_count=message_count, span_count=span_count)
    print_results(results, title="moving data")
    return results


if __name__ == "__main__":
    main()
