"""Memory: ``save_messages``, the first page of ``list_messages`` and a full ``list_messages`` of a
long thread, against the bare driver doing the same work on the same tables.

Per backend, on the tables ``init()`` created (with their indexes):

* **save_messages**: ``MESSAGES`` (10,000) messages in threads of 50, one ``save_messages`` call
  per thread, alternating in blocks of 10 calls with the raw path saving 50 other new messages
  of the same thread (so both see the same load on a shared machine). Raw, per thread: SQLite and PostgreSQL, in one transaction, bump the thread's
  ``updatedAt`` (its row count says the thread exists) and upsert the 50 rows (``ON CONFLICT (id)
  DO UPDATE`` keeping ``createdAt``; ``executemany`` / ``execute_values``); ClickHouse, read the
  stored ``createdAt`` of those ids and the thread row (``FINAL``), insert the messages in one
  block and the thread's new version. The content is the same JSON text (compact, UTF-8).
  The library also reads the stored messages to handle moves between threads, which the raw
  path (all new messages) does not need: that read is part of the overhead measured.
* **list_messages, first page**: p50 of ``list_messages(thread_id=…)`` (40 of 50 messages, with
  the total) over random threads; raw: count and page query in one read transaction, rows turned
  into the same dicts (content decoded, ``createdAt`` as an aware datetime).
* **list_messages(per_page=False)** of one thread of ``LONG_THREAD`` (100,000) messages, loaded by
  the raw driver: rows/s of the read, and the peak memory (``tracemalloc``) of the call against
  the raw driver fetching and converting the same rows.

Run with ``python -m benchmarks memory`` or ``python -m benchmarks.bench_memory``.
"""

from __future__ import annotations

import gc
import json
import random
import time
import tracemalloc
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from composite_store.values import format_iso, utc_now

from .common import (BenchBackend, RawDatabase, best_time, clickhouse_timestamps, info_row, latency_row,
                     library_and_raw, p50_pair_ms, paired_rates, print_results, rate, run_per_backend, scaled,
                     throughput_row)

MESSAGES = 10_000
PER_THREAD = 50
LONG_THREAD = 100_000
PAGE_CALLS = 300
#: save_messages: calls of each side before timing, and calls per turn when alternating.
SAVE_WARMUP = 5
SAVE_BLOCK = 10
UTC = timezone.utc
START = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)

#: The raw path's JSON encoding: the library's text (compact, UTF-8), with the standard library.
encode_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode

MESSAGE_COLUMNS = '"id", "thread_id", "content", "role", "type", "createdAt", "resourceId"'


# --------------------------------------------------------------------------- data

def thread_id(index: int) -> str:
    return f"thread-{index:05d}"


def make_messages(thread: str, resource: str, count: int, *, first: int = 0) -> list[dict[str, Any]]:
    """``count`` messages of one conversation: user questions and assistant answers with a tool call."""
    messages = []
    for position in range(first, first + count):
        if position % 2 == 0:
            text = f"Hi, my order #{10_000 + position} has not arrived yet. Can you check where it is?"
            content = {"format": 2, "parts": [{"type": "text", "text": text}], "content": text}
            role = "user"
        else:
            text = ("Your order left our warehouse yesterday and is now with the carrier; it should arrive "
                    "within two business days. I have sent the tracking link to your e-mail address.")
            content = {"format": 2, "parts": [
                {"type": "step-start"},
                {"type": "tool-invocation", "toolInvocation": {
                    "state": "result", "toolCallId": f"call-{position}", "toolName": "lookupOrder",
                    "args": {"orderId": 10_000 + position}, "result": {"status": "in_transit"}}},
                {"type": "text", "text": text}],
                "content": text, "metadata": {"model": "gpt-4o-mini", "latencyMs": 812}}
            role = "assistant"
        messages.append({"id": f"{thread}-msg-{position:06d}", "thread_id": thread, "resource_id": resource,
                         "role": role, "content": content,
                         "created_at": START + timedelta(seconds=position)})
    return messages


# --------------------------------------------------------------------------- raw paths

class RawMemory:
    """The bare-driver ``save_messages`` and ``list_messages`` of one backend."""

    def __init__(self, backend: BenchBackend) -> None:
        self.db = RawDatabase(backend)
        self.name = backend.name
        if self.name == "clickhouse":
            self.ts_to_db, self.ts_from_db = clickhouse_timestamps(self.db.connection, "mastra_messages")

    def close(self) -> None:
        self.db.close()

    # -- writes

    def message_rows(self, messages: list[dict[str, Any]]) -> list[tuple]:
        """Rows in ``MESSAGE_COLUMNS`` order (plus ``createdAtZ`` / ``_version``, ``_deleted``)."""
        if self.name == "sqlite":
            return [(m["id"], m["thread_id"], encode_json(m["content"]), m["role"], "v2",
                     format_iso(m["created_at"]), m["resource_id"]) for m in messages]
        if self.name == "postgres":
            return [(m["id"], m["thread_id"], encode_json(m["content"]), m["role"], "v2",
                     m["created_at"].replace(tzinfo=None), m["resource_id"], m["created_at"]) for m in messages]
        version = time.time_ns() // 1000
        return [(m["id"], m["thread_id"], encode_json(m["content"]), m["role"], "v2",
                 self.ts_to_db(m["created_at"]), m["resource_id"], version, 0) for m in messages]

    def save_messages(self, thread: str, messages: list[dict[str, Any]]) -> None:
        now = utc_now()
        db = self.db
        if self.name == "clickhouse":
            self._save_messages_clickhouse(thread, messages, now)
            return
        if self.name == "sqlite":
            bump, stamps = 'UPDATE "mastra_threads" SET "updatedAt" = ? WHERE "id" = ?', (format_iso(now),)
            columns, row = MESSAGE_COLUMNS, "(?, ?, ?, ?, ?, ?, ?)"
        else:
            bump = 'UPDATE "mastra_threads" SET "updatedAt" = ?, "updatedAtZ" = ? WHERE "id" = ?'
            stamps = (now.replace(tzinfo=None), now)
            columns, row = MESSAGE_COLUMNS + ', "createdAtZ"', "?"
        upsert = (f'INSERT INTO "mastra_messages" ({columns}) VALUES {row} ON CONFLICT ("id") DO UPDATE SET '
                  '"thread_id" = excluded."thread_id", "content" = excluded."content", "role" = excluded."role", '
                  '"type" = excluded."type", "resourceId" = excluded."resourceId"')
        rows = self.message_rows(messages)
        with db.write():
            if db.execute(bump, (*stamps, thread)) != 1:
                raise LookupError(f"Thread {thread} not found")
            db.insert_many(upsert, rows)

    def _save_messages_clickhouse(self, thread: str, messages: list[dict[str, Any]], now: datetime) -> None:
        client = self.db.connection
        # Existing ids keep their createdAt (the sorting key); the thread row is re-inserted whole.
        stored = dict(client.execute('SELECT "id", "createdAt" FROM "mastra_messages" FINAL '
                                     'WHERE "id" IN %(ids)s AND "_deleted" = 0',
                                     {"ids": tuple(m["id"] for m in messages)}))
        found = client.execute('SELECT "id", "resourceId", "title", "metadata", "createdAt", "_version" '
                               'FROM "mastra_threads" FINAL WHERE "id" = %(id)s AND "_deleted" = 0', {"id": thread})
        if not found:
            raise LookupError(f"Thread {thread} not found")
        rows = self.message_rows(messages)
        if stored:
            rows = [row[:5] + (stored.get(row[0], row[5]),) + row[6:] for row in rows]
        client.execute(f'INSERT INTO "mastra_messages" ({MESSAGE_COLUMNS}, "_version", "_deleted") VALUES', rows)
        *fields, version = found[0]
        client.execute('INSERT INTO "mastra_threads" ("id", "resourceId", "title", "metadata", "createdAt", '
                       '"updatedAt", "_version", "_deleted") VALUES',
                       [(*fields, self.ts_to_db(now), max(time.time_ns() // 1000, version + 1), 0)])

    def load(self, messages: list[dict[str, Any]]) -> None:
        """Bulk load (setup): one transaction, plain inserts."""
        if self.name == "clickhouse":
            sql = f'INSERT INTO "mastra_messages" ({MESSAGE_COLUMNS}, "_version", "_deleted") VALUES'
        elif self.name == "sqlite":
            sql = f'INSERT INTO "mastra_messages" ({MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)'
        else:
            sql = f'INSERT INTO "mastra_messages" ({MESSAGE_COLUMNS}, "createdAtZ") VALUES ?'
        with self.db.write():
            for start in range(0, len(messages), 10_000):
                self.db.insert_many(sql, self.message_rows(messages[start:start + 10_000]))

    # -- reads

    def list_messages(self, thread: str, limit: int | None = 40) -> tuple[int, list[dict[str, Any]]]:
        """Total and one page of a thread, oldest first, as record dicts (all rows for ``None``)."""
        page = "" if limit is None else f" LIMIT {int(limit)}"
        if self.name == "clickhouse":
            client = self.db.connection
            where = 'WHERE "thread_id" = %(thread)s AND "_deleted" = 0'
            total = client.execute(f'SELECT count() FROM "mastra_messages" FINAL {where}', {"thread": thread})[0][0]
            rows = client.execute(f'SELECT {MESSAGE_COLUMNS} FROM "mastra_messages" FINAL {where} '
                                  f'ORDER BY "createdAt", "id"{page}', {"thread": thread})
            parse = self.ts_from_db
        else:
            created = '"createdAtZ"' if self.name == "postgres" else '"createdAt"'
            columns = MESSAGE_COLUMNS.replace('"createdAt"', created)
            with self.db.read():
                total = self.db.query('SELECT count(*) FROM "mastra_messages" WHERE "thread_id" = ?', (thread,))[0][0]
                rows = self.db.query(f'SELECT {columns} FROM "mastra_messages" WHERE "thread_id" = ? '
                                     f'ORDER BY "createdAt", "id"{page}', (thread,))
            parse = datetime.fromisoformat if self.name == "sqlite" else _same
        loads = json.loads
        return total, [{"id": id_, "thread_id": thread_, "resource_id": resource, "role": role,
                        "type": None if type_ == "v2" else type_, "content": loads(content),
                        "created_at": parse(created_at)}
                       for id_, thread_, content, role, type_, created_at, resource in rows]


def _same(value: Any) -> Any:
    return value


# --------------------------------------------------------------------------- benchmark

def peak_mib(function: Callable[[], Any]) -> float:
    """Peak memory traced while ``function()`` runs and its result is alive, in MiB."""
    gc.collect()
    tracemalloc.start()
    try:
        result = function()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    del result
    return peak / 2**20


def bench_backend(backend: BenchBackend) -> list[dict[str, Any]]:
    """Every memory measurement on one backend; returns its result rows."""
    threads = max(1, scaled(MESSAGES) // PER_THREAD)
    batches = [make_messages(thread_id(t), f"user-{t % 20}", PER_THREAD) for t in range(threads)]
    count = threads * PER_THREAD
    results = []
    with library_and_raw(backend, "memory", RawMemory) as (memory, raw):
        for t in range(threads):
            memory.save_thread(thread={"id": thread_id(t), "resource_id": f"user-{t % 20}",
                                       "title": f"Order question {t}", "metadata": {"channel": "chat"}})

        # Alternating in blocks (so both see the same load): the library saves each thread's 50
        # messages, the raw path 50 others of the same thread (fresh ids on both sides).
        raw_batches = [make_messages(thread_id(t), f"user-{t % 20}", PER_THREAD, first=PER_THREAD)
                       for t in range(threads)]
        library_calls, raw_calls = iter(batches), iter(raw_batches)

        def raw_save(batch: list[dict[str, Any]]) -> None:
            raw.save_messages(batch[0]["thread_id"], batch)

        library_rate, raw_rate = paired_rates(lambda: memory.save_messages(messages=next(library_calls)),
                                              lambda: raw_save(next(raw_calls)), repeat=threads - SAVE_WARMUP,
                                              warmup=SAVE_WARMUP, block=SAVE_BLOCK)
        assert raw.db.count("mastra_messages") == 2 * count
        results.append(throughput_row(f"save_messages ({count:,}, calls of {PER_THREAD})", backend.name,
                                      library=library_rate * PER_THREAD, raw=raw_rate * PER_THREAD))
        raw.db.truncate("mastra_messages")  # the reads below list the library's 50 per thread
        for batch in batches:
            memory.save_messages(messages=batch)
        print(f"[memory] {backend.name}: save_messages done", flush=True)

        # First page of a thread: both sides return the same 40 records and total.
        sample = thread_id(threads // 2)
        page = memory.list_messages(thread_id=sample)
        total, rows = raw.list_messages(sample)
        assert page.total == total == PER_THREAD and page.items == rows, "raw page differs from the library's"
        picks = random.Random(7)
        library_ms, raw_ms = p50_pair_ms(lambda: memory.list_messages(thread_id=thread_id(picks.randrange(threads))),
                                         lambda: raw.list_messages(thread_id(picks.randrange(threads))),
                                         repeat=PAGE_CALLS)
        results.append(latency_row(f"list_messages, first page (40 of {PER_THREAD})", backend.name,
                                   library=library_ms, raw=raw_ms))
        print(f"[memory] {backend.name}: list_messages first page done", flush=True)

        # One long thread, read whole.
        long_count = scaled(LONG_THREAD)
        memory.save_thread(thread={"id": "thread-long", "resource_id": "user-long", "title": "A long one"})
        raw.load(make_messages("thread-long", "user-long", long_count))
        library_s = best_time(lambda: memory.list_messages(thread_id="thread-long", per_page=False), repeat=2)
        raw_s = best_time(lambda: raw.list_messages("thread-long", None), repeat=2)
        operation = f"list_messages(per_page=False), {long_count:,}"
        results.append(throughput_row(operation, backend.name, library=rate(long_count, library_s),
                                      raw=rate(long_count, raw_s), min_ratio=None, note="a bulk read; no target"))
        library_peak = peak_mib(lambda: memory.list_messages(thread_id="thread-long", per_page=False))
        raw_peak = peak_mib(lambda: raw.list_messages("thread-long", None))
        results.append(info_row(f"{operation}: peak memory", backend.name, unit="peak MiB",
                                library=library_peak, raw=raw_peak, note="tracemalloc"))
        print(f"[memory] {backend.name}: long thread done", flush=True)
    return results


def main() -> list[dict[str, Any]]:
    """Run the memory benchmarks on every available backend; returns the result rows."""
    return run_per_backend(bench_backend)


if __name__ == "__main__":
    print_results(main())
