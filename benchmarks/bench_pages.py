"""Pages of big tables (issue 20): list pages at up to a million messages and scores, and the
bulk writes that load them, on SQLite and PostgreSQL.

Data, for ``--rows N`` (default 20,000 times the scale; the issue's figures are for 1,000,000):
N messages in threads of 200 (5,000 threads at 1M), 100 threads per resource (50 resources),
and N scores of 10 scorers over 7 entities.

* **Bulk writes**: the rows are loaded in batches of 10,000, alternately by the library
  (``save_messages`` of 50 threads' messages, ``save_scores``) and by the raw driver writing
  the same kind of rows (fresh ids) with the same effect: one transaction bumping the threads'
  ``updatedAt`` and upserting the messages; one batch insert of the scores.  Alternating, both
  sides write into a table of the same size.  rows/s per side (target: library >= 0.7x raw).
* **Pages**: p50 of ``CALLS`` calls through the public API with random picks: ``list_messages``
  (a thread, first page of 40), ``list_threads`` (a resource, 20), ``list_messages_by_resource_id``
  (first page of 40), ``list_scores_by_scorer_id`` and ``list_scores_by_entity_id`` (first page of
  100), each with the exact ``total``; target 10 ms.  A deep page: page 5,000 of 10 of a
  scorer's scores by page number, and the same page through ``after=`` the cursor of the row
  before it (target 20 ms).  The first pages of scores and the cursor page are also timed against
  the raw driver's one statement for the same page and total (:class:`RawScorePages`, target
  1.5x), alternating call by call.
* **A page's shape**: the raw driver's one statement (the total as a subquery, as the library
  sends it) against a ``COUNT`` statement then the rows, alternating; ``ratio`` < 1 favours
  the one statement.

After the load, PostgreSQL's tables are vacuumed and analyzed (what autovacuum does to a table
at rest) and SQLite's are analyzed.  ``init()`` runs before the pages are read: its time is
reported (on tables loaded by an older version it creates the indexes that are missing).

``--sqlite PATH`` and ``--postgres URL`` use databases that outlive the run: they are loaded
only when empty, so a second run (another version of the library) reads the same rows.  Run
with ``python -m benchmarks pages`` or ``python -m benchmarks.bench_pages --rows 1000000``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from datetime import datetime
from typing import Any, Callable

from composite_store.composite import store_for_url
from composite_store.page import decode_cursor
from composite_store.values import format_iso, utc_now

from .bench_memory import MESSAGE_COLUMNS, RawMemory, make_messages
from .bench_scores import COLUMNS, JSON_FIELDS, RawWriter, payloads
from .common import (BenchBackend, RawDatabase, _postgres_connect, _sqlite_connect, backends, info_row, latency_row,
                     p50_ms, p50_pair_ms, print_results, scaled, selected_backends, throughput_row)

ROWS = 20_000
BATCH = 10_000
PER_THREAD = 200
THREADS_PER_RESOURCE = 100
SCORERS = 10
ENTITIES = 7
CALLS = 100
DEEP_PAGE, DEEP_PER_PAGE = 5_000, 10
FIRST_PAGE_MS, DEEP_PAGE_MS = 10.0, 20.0
MIN_WRITE_RATIO = 0.7
#: A list page against the raw driver's one statement (issue 20 item 4).
MAX_PAGE_RATIO = 1.5


def thread_id(index: int) -> str:
    return f"thread-{index:05d}"


def resource_id(index: int) -> str:
    return f"user-{index:03d}"


def scorer_id(index: int) -> str:
    return f"scorer-{index}"


def entity_id(index: int) -> str:
    return f"agent-{index}"


# --------------------------------------------------------------------------- loading

def raw_save_messages(raw: RawMemory, messages: list[dict[str, Any]]) -> None:
    """What the library's ``save_messages`` does to a batch of several threads, by hand: one
    transaction bumping the threads' ``updatedAt`` (all must exist) and upserting the rows."""
    now = utc_now()
    threads = sorted({message["thread_id"] for message in messages})
    marks = ", ".join("?" * len(threads))
    if raw.name == "sqlite":
        bump, stamps = f'UPDATE "mastra_threads" SET "updatedAt" = ? WHERE "id" IN ({marks})', (format_iso(now),)
        columns, row = MESSAGE_COLUMNS, "(?, ?, ?, ?, ?, ?, ?)"
    else:
        bump = f'UPDATE "mastra_threads" SET "updatedAt" = ?, "updatedAtZ" = ? WHERE "id" IN ({marks})'
        stamps = (now.replace(tzinfo=None), now)
        columns, row = MESSAGE_COLUMNS + ', "createdAtZ"', "?"
    upsert = (f'INSERT INTO "mastra_messages" ({columns}) VALUES {row} ON CONFLICT ("id") DO UPDATE SET '
              '"thread_id" = excluded."thread_id", "content" = excluded."content", "role" = excluded."role", '
              '"type" = excluded."type", "resourceId" = excluded."resourceId"')
    with raw.db.write():
        if raw.db.execute(bump, (*stamps, *threads)) != len(threads):
            raise LookupError("a thread is missing")
        raw.db.insert_many(upsert, raw.message_rows(messages))


def message_batch(first_thread: int, threads: int) -> list[dict[str, Any]]:
    """The messages of ``threads`` threads from ``first_thread``, ``PER_THREAD`` each."""
    batch = []
    for t in range(first_thread, first_thread + threads):
        batch += make_messages(thread_id(t), resource_id(t // THREADS_PER_RESOURCE), PER_THREAD)
    return batch


def score_batch(first: int, count: int) -> list[dict[str, Any]]:
    """``count`` score payloads numbered from ``first``: scorers and entities in turn."""
    batch = payloads(count)
    for offset, item in enumerate(batch):
        number = first + offset
        item.update(scorer_id=scorer_id(number % SCORERS), entity_id=entity_id(number % ENTITIES),
                    entity_type="AGENT")
        item["scorer"]["id"] = item["scorer_id"]
    return batch


def alternate(batches: int, make: Callable[[int], list[dict[str, Any]]], library: Callable[[list], Any],
              raw: Callable[[list], Any]) -> tuple[list[int], list[float]]:
    """Write batch ``make(b)`` (built untimed) with ``library`` when ``b`` is even, ``raw`` when
    odd; returns the rows and the seconds of each side."""
    written, spent = [0, 0], [0.0, 0.0]
    for number in range(batches):
        batch = make(number)
        started = time.perf_counter()
        (raw if number % 2 else library)(batch)
        spent[number % 2] += time.perf_counter() - started
        written[number % 2] += len(batch)
    return written, spent


def load(backend: BenchBackend, store: Any, rows: int) -> list[dict[str, Any]]:
    """Load ``rows`` messages and ``rows`` scores; returns the bulk-write result rows."""
    memory, scores = store.get_store("memory"), store.get_store("scores")
    threads = max(1, rows // PER_THREAD)
    for t in range(threads):
        memory.save_thread(thread={"id": thread_id(t), "resource_id": resource_id(t // THREADS_PER_RESOURCE),
                                   "title": f"Order question {t}", "metadata": {"channel": "chat"}})
    per_batch = max(1, BATCH // PER_THREAD)
    raw_memory, raw_scores = RawMemory(backend), RawWriter(backend)
    try:
        messages, messages_s = alternate(
            -(-threads // per_batch),
            lambda b: message_batch(b * per_batch, min(per_batch, threads - b * per_batch)),
            lambda batch: memory.save_messages(messages=batch), lambda batch: raw_save_messages(raw_memory, batch))
        print(f"[pages] {backend.name}: {sum(messages):,} messages loaded", flush=True)
        scored, scores_s = alternate(-(-rows // BATCH), lambda b: score_batch(b * BATCH, min(BATCH, rows - b * BATCH)),
                                     lambda batch: scores.save_scores(scores=batch), raw_scores.write)
        print(f"[pages] {backend.name}: {sum(scored):,} scores loaded", flush=True)
    finally:
        raw_memory.close()
        raw_scores.close()

    def rates(written: list[int], spent: list[float]) -> dict[str, float | None]:
        return {"library": written[0] / spent[0], "raw": written[1] / spent[1] if spent[1] else None}

    return [
        throughput_row(f"save_messages, batches of {BATCH:,} up to {sum(messages):,}", backend.name,
                       **rates(messages, messages_s), min_ratio=MIN_WRITE_RATIO),
        throughput_row(f"save_scores, batches of {BATCH:,} up to {sum(scored):,}", backend.name,
                       **rates(scored, scores_s), min_ratio=MIN_WRITE_RATIO),
    ]


def settle(backend: BenchBackend) -> None:
    """Statistics and visibility as a database at rest has them (autovacuum; SQLite's ANALYZE)."""
    connection = backend.connect()
    try:
        if backend.name == "postgres":
            connection.autocommit = True
            with connection.cursor() as cursor:
                for table in ("mastra_threads", "mastra_messages", "mastra_scorers"):
                    cursor.execute(f'VACUUM ANALYZE "{table}"')
        else:
            connection.execute("ANALYZE")
    finally:
        connection.close()


# --------------------------------------------------------------------------- reading

class RawScorePages:
    """The fewest statements a hand-written app sends for a page of a scorer's scores with its
    total: one ``SELECT`` of the rows with the count as a scalar subquery, the rows made into
    dicts keyed by field name (JSON decoded: by the application on SQLite, by psycopg2 for
    ``jsonb``; timestamps parsed on SQLite)."""

    def __init__(self, backend: BenchBackend) -> None:
        self.db = RawDatabase(backend)
        self.sqlite = backend.name == "sqlite"
        fields = [*COLUMNS, ("created_at", "createdAt"), ("updated_at", "updatedAt")]
        self.names = [name for name, _ in fields]
        self.json = [index for index, name in enumerate(self.names) if name in JSON_FIELDS]
        self.times = [len(fields) - 2, len(fields) - 1]
        self.columns = ", ".join(f'"{column}"' for _, column in fields)

    def page(self, equal: dict[str, str], limit: int, after: tuple[Any, str] | None = None, *,
             separate: bool = False) -> tuple[int, list]:
        """``(total, rows)`` of the first ``limit`` rows whose columns have the ``equal`` values,
        newest first, behind ``after`` (``createdAt``, ``id``) when given.  ``separate``: the
        other shape, a ``COUNT`` statement then the rows (for the choice between the two)."""
        where = " AND ".join(f'"{column}" = ?' for column in equal)
        values = tuple(equal.values())
        params: tuple = values if separate else values + values
        keyset = ""
        if after is not None:
            keyset = ' AND "createdAt" <= ? AND ("createdAt" < ? OR "id" > ?)'
            params += (after[0], after[0], after[1])
        count = f'SELECT count(*) FROM "mastra_scorers" WHERE {where}'
        if separate:
            total = self.db.query(count, values)[0][0]
        rows = self.db.query(f'SELECT {self.columns}{"" if separate else f", ({count})"} '
                             f'FROM "mastra_scorers" WHERE {where}{keyset} '
                             f'ORDER BY "createdAt" DESC, "id" LIMIT {int(limit)}', params)
        if not separate:
            total = rows[0][-1] if rows else 0
            rows = [row[:-1] for row in rows]
        loads, names = json.loads, self.names
        records = []
        for row in rows:
            values = list(row)
            if self.sqlite:
                for index in self.json:
                    if values[index] is not None:
                        values[index] = loads(values[index])
                for index in self.times:
                    values[index] = datetime.fromisoformat(values[index])
            records.append(dict(zip(names, values)))
        return total, records

    def close(self) -> None:
        self.db.close()


def read_pages(backend: BenchBackend, store: Any, threads: int) -> list[dict[str, Any]]:
    """p50 of each page through the public API; returns the result rows."""
    memory, scores = store.get_store("memory"), store.get_store("scores")
    resources = max(1, -(-threads // THREADS_PER_RESOURCE))
    picks = random.Random(20)
    name = backend.name
    results = []

    def first_page(operation: str, call: Callable[[], Any]) -> None:
        results.append(latency_row(operation, name, library=p50_ms(call, repeat=CALLS, warmup=3),
                                   limit_ms=FIRST_PAGE_MS))

    first_page("list_messages (a thread, 40)",
               lambda: memory.list_messages(thread_id=thread_id(picks.randrange(threads)), per_page=40))
    first_page("list_threads (a resource, 20)",
               lambda: memory.list_threads(resource_id=resource_id(picks.randrange(resources)), per_page=20))
    first_page("list_messages_by_resource_id (40)", lambda: memory.list_messages_by_resource_id(
        resource_id=resource_id(picks.randrange(resources)), per_page=40))
    raw = RawScorePages(backend)
    try:
        def scorer() -> dict[str, str]:
            return {"scorerId": scorer_id(picks.randrange(SCORERS))}

        def entity() -> dict[str, str]:
            return {"entityId": entity_id(picks.randrange(ENTITIES)), "entityType": "AGENT"}

        library_ms, raw_ms = p50_pair_ms(
            lambda: scores.list_scores_by_entity_id(entity_id=entity()["entityId"], entity_type="AGENT"),
            lambda: raw.page(entity(), 100), repeat=CALLS)
        results.append(latency_row("list_scores_by_entity_id (100)", name, library=library_ms, raw=raw_ms,
                                   max_ratio=MAX_PAGE_RATIO, note=f"p50 {library_ms:.1f} ms, target 10 ms"))
        library_ms, raw_ms = p50_pair_ms(
            lambda: scores.list_scores_by_scorer_id(scorer_id=scorer()["scorerId"]),
            lambda: raw.page(scorer(), 100), repeat=CALLS)
        results.append(latency_row("list_scores_by_scorer_id (100)", name, library=library_ms, raw=raw_ms,
                                   max_ratio=MAX_PAGE_RATIO, note=f"p50 {library_ms:.1f} ms, target 10 ms"))
        # The page's shape (issue 20 item 2): the total as a subquery of the rows' statement
        # (what the library sends), against a COUNT statement then the rows, both raw.
        for label, equal in (("scorer", scorer), ("entity", entity)):
            one_ms, two_ms = p50_pair_ms(lambda: raw.page(equal(), 100), lambda: raw.page(equal(), 100, separate=True),
                                         repeat=CALLS)
            results.append(info_row(f"raw {label} page: total in the rows' statement / COUNT apart", name,
                                    unit="p50 ms", library=one_ms, raw=two_ms))
        results += deep_pages(name, scores, raw, picks)
    finally:
        raw.close()
    return results


def deep_pages(name: str, scores: Any, raw: RawScorePages, picks: random.Random) -> list[dict[str, Any]]:
    """Page ``DEEP_PAGE`` of a scorer's scores by number and by ``after=`` cursor (against the raw
    keyset query); returns the result rows."""
    results = []
    per_scorer = scores.list_scores_by_scorer_id(scorer_id=scorer_id(0), per_page=0).total
    deep = min(DEEP_PAGE, max(1, per_scorer // DEEP_PER_PAGE - 1))
    operation = f"list_scores_by_scorer_id, page {deep:,} of {DEEP_PER_PAGE}"
    results.append(latency_row(operation, name, limit_ms=DEEP_PAGE_MS, library=p50_ms(
        lambda: scores.list_scores_by_scorer_id(scorer_id=scorer_id(picks.randrange(SCORERS)), page=deep,
                                                per_page=DEEP_PER_PAGE), repeat=CALLS // 4, warmup=1)))
    cursors = {}
    for number in range(SCORERS):
        cursors[number] = scores.list_scores_by_scorer_id(scorer_id=scorer_id(number), page=deep - 1,
                                                          per_page=DEEP_PER_PAGE).cursor
    if all(cursors.values()):
        positions = {number: raw_position(raw, cursors[number]) for number in cursors}
        library_ms, raw_ms = p50_pair_ms(
            lambda: scores.list_scores_by_scorer_id(scorer_id=scorer_id(number := picks.randrange(SCORERS)),
                                                    per_page=DEEP_PER_PAGE, after=cursors[number]),
            lambda: raw.page({"scorerId": scorer_id(number := picks.randrange(SCORERS))}, DEEP_PER_PAGE + 1,
                             after=positions[number]), repeat=CALLS)
        results.append(latency_row(f"{operation}, after= cursor", name, library=library_ms, raw=raw_ms,
                                   max_ratio=MAX_PAGE_RATIO, note=f"p50 {library_ms:.1f} ms, target 20 ms"))
    return results


def raw_position(raw: RawScorePages, cursor: str) -> tuple[Any, str]:
    """The stored ``createdAt`` and the id a library cursor points after, as the raw query binds them."""
    _, created_at, last_id = decode_cursor(cursor)
    moment = datetime.fromisoformat(created_at)
    return (format_iso(moment) if raw.sqlite else moment.replace(tzinfo=None)), last_id


def bench_backend(backend: BenchBackend, rows: int) -> list[dict[str, Any]]:
    """Load (when empty) and read one backend; returns its result rows."""
    store = store_for_url(backend.url)
    results = []
    try:
        started = time.perf_counter()
        store.init()
        results.append(info_row("init() (tables loaded: indexes created)", backend.name, unit="s",
                                library=time.perf_counter() - started))
        if store.get_store("memory").count_rows()["mastra_messages"] == 0:
            results += load(backend, store, rows)
            settle(backend)
        threads = store.get_store("memory").list_threads(per_page=0).total
        results += read_pages(backend, store, threads)
    finally:
        store.close()
    return results


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the pages benchmark (``argv``: ``--rows``, ``--sqlite``, ``--postgres``); returns the result rows."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_pages", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=None, help=f"messages and scores (default {ROWS:,} x scale)")
    parser.add_argument("--sqlite", metavar="PATH", help="a SQLite file kept between runs")
    parser.add_argument("--postgres", metavar="URL", help="a PostgreSQL database kept between runs")
    arguments = parser.parse_args(argv or [])
    rows = arguments.rows or scaled(ROWS)
    results: list[dict[str, Any]] = []
    kept = [BenchBackend("sqlite", f"sqlite:///{arguments.sqlite}", _sqlite_connect(arguments.sqlite))
            ] if arguments.sqlite else []
    if arguments.postgres:
        kept.append(BenchBackend("postgres", arguments.postgres, _postgres_connect(arguments.postgres)))
    if kept:
        for backend in kept:
            results += bench_backend(backend, rows)
        return results
    with backends([name for name in selected_backends() if name != "clickhouse"]) as available:
        for backend in available:
            print(f"[pages] {backend.name} ...", flush=True)
            results += bench_backend(backend, rows)
    return results


if __name__ == "__main__":
    print_results(main(sys.argv[1:]))
