"""``prune`` of 1,000,000 old spans out of 2,000,000 against the bare driver running the same
batched ``DELETE``s, and the longest pause a concurrent writer sees (fidelity-1.71 §5).

Per backend (SQLite, PostgreSQL; ClickHouse expires rows by TTL), on ``mastra_ai_spans`` as
``init()`` creates it (every index included):

* the table is filled inside the database (a recursive CTE on SQLite, ``generate_series`` on
  PostgreSQL): every other span started 40 days ago, the others yesterday, ten spans a trace;
* the anchor index is created once beforehand (a prune that deletes nothing), so both paths
  delete through it;
* **library**: ``observability.prune(policies={"spans": {"max_age": "30d", "batch_size": 1000}})``;
* **raw**: the same statement with the bare driver, each batch its own transaction, until a batch
  deletes fewer rows than its limit — SQLite ``DELETE … WHERE rowid IN (SELECT rowid … LIMIT ?)``
  (``BEGIN IMMEDIATE``), PostgreSQL the same by ``ctid`` on ``startedAtZ``;
* **writer pause**: while each prune runs, another thread writes one span after another through
  the library (``create_span``) and records its longest call: how long a batch holds writers up.

``ratio`` is library rows/s over raw rows/s (target: at least 0.8), each the best of ``REPEAT``
runs made alternately; the pause is the longest of all runs. Run with
``python -m benchmarks prune`` or ``python -m benchmarks.bench_prune``.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any, Callable

from composite_store.composite import store_for_url
from composite_store.values import format_iso, utc_now

from .common import BenchBackend, info_row, print_results, rate, run_per_backend, scaled, throughput_row

TOTAL = 2_000_000
BATCH = 1000
MAX_AGE = "30d"
MIN_RATIO = 0.8
#: Runs of each path (alternating); the best time and the longest writer pause are reported.
REPEAT = 2

SQLITE_FILL = """
WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < ? - 1)
INSERT INTO mastra_ai_spans ("traceId", "spanId", name, "spanType", "isEvent", "startedAt", "createdAt", "updatedAt")
SELECT 'trace-' || (i / 10), 'span-' || i, 'tool call', 'tool_call', 0, CASE WHEN i % 2 = 0 THEN ? ELSE ? END, ?, ?
FROM seq
"""
POSTGRES_FILL = """
INSERT INTO mastra_ai_spans ("traceId", "spanId", name, "spanType", "isEvent", "startedAt", "startedAtZ",
                             "createdAt", "updatedAt")
SELECT 'trace-' || (i / 10), 'span-' || i, 'tool call', 'tool_call', false, timezone('UTC', started), started,
       timezone('UTC', now()), timezone('UTC', now())
FROM generate_series(0, %s - 1) AS i,
     LATERAL (SELECT CASE WHEN i %% 2 = 0 THEN now() - interval '40 days' ELSE now() - interval '1 day' END)
       AS s(started)
"""


class RawPrune:
    """The bare driver on one backend: fill the table, and prune it with the library's statements."""

    def __init__(self, backend: BenchBackend) -> None:
        self.name = backend.name
        self.connection = backend.connect()

    def fill(self, count: int) -> None:
        """Empty the table, then store ``count`` spans, half of them old."""
        if self.name == "sqlite":
            now = utc_now()
            old, recent = format_iso(now - timedelta(days=40)), format_iso(now - timedelta(days=1))
            self.connection.execute("BEGIN IMMEDIATE")
            self.connection.execute("DELETE FROM mastra_ai_spans")
            self.connection.execute(SQLITE_FILL, (count, old, recent, format_iso(now), format_iso(now)))
            self.connection.execute("COMMIT")
        else:
            with self.connection.cursor() as cursor:
                cursor.execute("TRUNCATE mastra_ai_spans")
                cursor.execute(POSTGRES_FILL, (count,))
            self.connection.commit()
            self.connection.autocommit = True
            with self.connection.cursor() as cursor:
                cursor.execute("VACUUM ANALYZE mastra_ai_spans")
            self.connection.autocommit = False

    def prune(self) -> int:
        """Delete the spans older than 30 days in batches of :data:`BATCH`; the rows deleted."""
        cutoff = utc_now() - timedelta(days=30)
        deleted = 0
        if self.name == "sqlite":
            sql = ('DELETE FROM "mastra_ai_spans" WHERE rowid IN (SELECT rowid FROM "mastra_ai_spans" '
                   'WHERE "startedAt" < ? LIMIT ?)')
            bound = format_iso(cutoff)
            while True:
                self.connection.execute("BEGIN IMMEDIATE")
                count = self.connection.execute(sql, (bound, BATCH)).rowcount
                self.connection.execute("COMMIT")
                deleted += count
                if count < BATCH:
                    return deleted
        sql = ('DELETE FROM "mastra_ai_spans" WHERE ctid IN (SELECT ctid FROM "mastra_ai_spans" '
               'WHERE "startedAtZ" < %s LIMIT %s)')
        while True:
            with self.connection.cursor() as cursor:
                cursor.execute(sql, (cutoff, BATCH))
                count = cursor.rowcount
            self.connection.commit()
            deleted += count
            if count < BATCH:
                return deleted

    def close(self) -> None:
        self.connection.close()


def with_writer(observability: Any, work: Callable[[], int]) -> tuple[int, float, float]:
    """Run ``work()`` while another thread writes spans through the library: ``(rows deleted,
    seconds, the writer's longest call in ms)``."""
    done = threading.Event()
    longest = [0.0]

    def write() -> None:
        index = 0
        while not done.is_set():
            started = time.perf_counter()
            observability.create_span(span={"trace_id": "writer", "span_id": f"w{index}", "name": "live",
                                            "span_type": "tool_call", "started_at": utc_now()})
            longest[0] = max(longest[0], time.perf_counter() - started)
            index += 1
            time.sleep(0.001)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        started = time.perf_counter()
        deleted = work()
        seconds = time.perf_counter() - started
    finally:
        done.set()
        writer.join()
    return deleted, seconds, longest[0] * 1000


def bench_backend(backend: BenchBackend) -> list[dict[str, Any]]:
    """Prune with the library and with the raw driver on one backend; returns its result rows."""
    total = scaled(TOTAL, minimum=2 * BATCH)
    store = store_for_url(backend.url)
    raw = RawPrune(backend)
    try:
        store.init()
        observability = store.get_store("observability")
        policies = {"spans": {"max_age": MAX_AGE, "batch_size": BATCH}}
        observability.prune(policies={"spans": {"max_age": "3650d"}})  # creates the anchor index

        def library() -> int:
            [result] = observability.prune(policies=policies)
            assert result["done"], result
            return result["deleted"]

        runs: dict[str, list[tuple[int, float, float]]] = {"raw": [], "library": []}
        for _ in range(REPEAT):  # alternately, so both meet the same state of the files
            for name, work in (("raw", raw.prune), ("library", library)):
                raw.fill(total)
                runs[name].append(with_writer(observability, work))
        (raw_deleted, raw_s, raw_pause), (deleted, library_s, library_pause) = (
            (runs[name][0][0], min(run[1] for run in runs[name]), max(run[2] for run in runs[name]))
            for name in ("raw", "library"))
        assert deleted == raw_deleted == total // 2, (deleted, raw_deleted, total)
    finally:
        raw.close()
        store.close()
    operation = f"prune {deleted:,} of {total:,} spans"
    return [throughput_row(operation, backend.name, library=rate(deleted, library_s), raw=rate(raw_deleted, raw_s),
                           min_ratio=MIN_RATIO, note=f"batches of {BATCH}"),
            info_row("prune: longest pause of a concurrent writer", backend.name, unit="ms", library=library_pause,
                     raw=raw_pause, note="create_span in another thread")]


def main() -> list[dict[str, Any]]:
    """Run on SQLite and PostgreSQL; returns the result rows."""
    return run_per_backend(bench_backend, sql_only=True)


if __name__ == "__main__":
    print_results(main())
