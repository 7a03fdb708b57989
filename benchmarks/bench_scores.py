"""``save_scores`` of 20,000 scores against the bare driver inserting the same rows.

Per backend, into the same ``mastra_scorers`` table (created by ``init()``, with its indexes),
truncated before every run:

* **library**: ``scores.save_scores(scores=payloads)`` — validation, cleaning, JSON encoding,
  ids, timestamps, the upsert, and the returned records;
* **raw**: what a hand-written job does with the bare driver for the same payload dicts: a UUID4
  per score, the JSON fields encoded to the same text as the library's (compact, UTF-8; with the
  standard library's ``json.JSONEncoder``, built once), the timestamps in the stored form, then
  one batch insert of the same columns — sqlite3 ``executemany`` in one transaction, psycopg2
  ``execute_values`` (1,000 rows per statement, as the library), or one clickhouse-driver native
  block insert;
* **driver only**: the raw batch insert alone, rows already built (for reference);
* **library, caller ids**: ``save_scores`` of the same payloads with ids chosen by the caller (an
  upsert, plus the read-back of ``created_at`` for those ids), into the empty table (for
  reference).

``ratio`` is library rows/s over raw rows/s (target: at least 0.5). Each figure is the best of
``REPEAT`` runs. ``COMPOSITE_STORE_BENCH_PROFILE=1`` also prints a cProfile of one library run
per backend. Run with ``python -m benchmarks scores`` or ``python -m benchmarks.bench_scores``.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any

from composite_store.composite import store_for_url
from composite_store.values import epoch_ms, format_iso, utc_now

from .common import BenchBackend, backends, best_time, print_results, profile, rate, scaled, throughput_row

ROWS = 20_000
REPEAT = 3

#: Columns in table order and which of them hold JSON (scores.md §4).
COLUMNS = (
    ("id", "id"), ("scorer_id", "scorerId"), ("trace_id", "traceId"), ("span_id", "spanId"), ("run_id", "runId"),
    ("scorer", "scorer"), ("preprocess_step_result", "preprocessStepResult"),
    ("extract_step_result", "extractStepResult"), ("analyze_step_result", "analyzeStepResult"),
    ("score", "score"), ("reason", "reason"), ("metadata", "metadata"), ("preprocess_prompt", "preprocessPrompt"),
    ("extract_prompt", "extractPrompt"), ("generate_score_prompt", "generateScorePrompt"),
    ("generate_reason_prompt", "generateReasonPrompt"), ("analyze_prompt", "analyzePrompt"),
    ("reason_prompt", "reasonPrompt"), ("input", "input"), ("output", "output"),
    ("additional_context", "additionalContext"), ("request_context", "requestContext"),
    ("entity_type", "entityType"), ("entity", "entity"), ("entity_id", "entityId"), ("source", "source"),
    ("resource_id", "resourceId"), ("thread_id", "threadId"), ("organization_id", "organizationId"),
    ("project_id", "projectId"), ("batch_id", "batchId"), ("dataset_id", "datasetId"),
    ("dataset_item_id", "datasetItemId"),
)
JSON_FIELDS = frozenset({"scorer", "preprocess_step_result", "extract_step_result", "analyze_step_result",
                         "metadata", "input", "output", "additional_context", "request_context", "entity"})
#: JSON columns that are NOT NULL on PostgreSQL and ClickHouse: ``None`` is stored as JSON ``null``.
JSON_NOT_NULL = frozenset({"input", "output"})
#: The raw path's JSON encoding: the library's text (compact, UTF-8), with the standard library.
encode_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def payloads(count: int) -> list[dict[str, Any]]:
    """``count`` realistic score payloads of one batch evaluation (no ids: the library makes them)."""
    batch = str(uuid.uuid4())
    return [{
        "scorer_id": f"scorer-{i % 5}", "run_id": f"run-{i // 10}", "entity_id": "eval-agent",
        "entity_type": "AGENT", "source": "TEST", "score": (i % 100) / 100, "reason": "the answer is correct",
        "scorer": {"id": f"scorer-{i % 5}", "name": "answer-relevancy", "description": "checks answers"},
        "entity": {"id": "eval-agent", "name": "Eval Agent"},
        "input": [{"role": "user", "content": f"What is {i} + 2?"}], "output": {"text": str(i + 2)},
        "preprocess_step_result": {"facts": [f"{i}+2={i + 2}"]}, "preprocess_prompt": "extract the facts",
        "analyze_step_result": {"verdict": "yes", "confidence": 0.93}, "analyze_prompt": "judge the answer",
        "generate_score_prompt": "score it", "generate_reason_prompt": "explain the score", "request_context": {},
        "metadata": {"scorerVersion": "1.0.0", "item": i}, "trace_id": f"trace-{i // 10}", "span_id": f"span-{i}",
        "batch_id": batch, "dataset_id": "ds-1", "dataset_item_id": f"item-{i}", "organization_id": "org-a",
        "project_id": "proj-1",
    } for i in range(count)]


# --------------------------------------------------------------------------- raw driver paths

def _tuples(items: list[dict[str, Any]], *, json_null: bool) -> list[list[Any]]:
    """Payloads as row values in column order: new ids, JSON text, one ``None`` for absent values."""
    rows = []
    for item in items:
        row = []
        for name, _ in COLUMNS:
            value = item.get(name)
            if name == "id":
                value = str(uuid.uuid4())
            elif name in JSON_FIELDS:
                value = encode_json(value) if value is not None or (json_null and name in JSON_NOT_NULL) else None
            row.append(value)
        rows.append(row)
    return rows


class RawWriter:
    """The bare-driver insert of one backend: ``build(payloads)`` makes rows, ``insert(rows)`` writes."""

    def __init__(self, backend: BenchBackend) -> None:
        self.name = backend.name
        self.connection = backend.connect()
        columns = [column for _, column in COLUMNS] + ["createdAt", "updatedAt"]
        if self.name == "postgres":
            columns += ["createdAtZ", "updatedAtZ"]
        if self.name == "clickhouse":
            columns += ["_version", "_deleted"]
        self.columns = ", ".join(f'"{column}"' for column in columns)
        self.placeholders = ", ".join("?" * len(columns))

    def build(self, items: list[dict[str, Any]]) -> list[list[Any]]:
        now = utc_now()
        if self.name == "sqlite":
            stamps = [format_iso(now)] * 2
            rows = _tuples(items, json_null=False)
        elif self.name == "postgres":
            naive = now.replace(tzinfo=None)
            stamps = [naive, naive, now, now]
            rows = _tuples(items, json_null=True)
        else:
            stamps = [epoch_ms(now), epoch_ms(now), time.time_ns() // 1000, 0]  # _version in µs, _deleted
            rows = _tuples(items, json_null=True)
        for row in rows:
            row.extend(stamps)
        return rows

    def insert(self, rows: list[list[Any]]) -> None:
        if self.name == "sqlite":
            self.connection.execute("BEGIN IMMEDIATE")
            self.connection.executemany(
                f'INSERT INTO "mastra_scorers" ({self.columns}) VALUES ({self.placeholders})', rows)
            self.connection.execute("COMMIT")
        elif self.name == "postgres":
            from psycopg2.extras import execute_values

            with self.connection.cursor() as cursor:
                execute_values(cursor, f'INSERT INTO "mastra_scorers" ({self.columns}) VALUES %s', rows,
                               page_size=1000)
            self.connection.commit()
        else:
            self.connection.execute(f'INSERT INTO "mastra_scorers" ({self.columns}) VALUES', rows)

    def write(self, items: list[dict[str, Any]]) -> None:
        self.insert(self.build(items))

    def truncate(self) -> None:
        if self.name == "sqlite":
            self.connection.execute('DELETE FROM "mastra_scorers"')
        elif self.name == "postgres":
            with self.connection.cursor() as cursor:
                cursor.execute('TRUNCATE "mastra_scorers"')
            self.connection.commit()
        else:
            self.connection.execute('TRUNCATE TABLE "mastra_scorers"')

    def count(self) -> int:
        if self.name == "sqlite":
            return self.connection.execute('SELECT count(*) FROM "mastra_scorers"').fetchone()[0]
        if self.name == "postgres":
            with self.connection.cursor() as cursor:
                cursor.execute('SELECT count(*) FROM "mastra_scorers"')
                count = cursor.fetchone()[0]
            self.connection.commit()
            return count
        return self.connection.execute('SELECT count() FROM "mastra_scorers"')[0][0]

    def close(self) -> None:
        if self.name == "clickhouse":
            self.connection.disconnect()
        else:
            self.connection.close()


# --------------------------------------------------------------------------- benchmark

def bench_backend(backend: BenchBackend, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Time the library and the raw driver on one backend; returns its result rows."""
    with_ids = [{**item, "id": f"score-{index}"} for index, item in enumerate(items)]
    store = store_for_url(backend.url)
    raw = RawWriter(backend)
    try:
        store.init()
        scores = store.get_store("scores")
        library_s = best_time(lambda: scores.save_scores(scores=items), repeat=REPEAT, setup=raw.truncate)
        assert raw.count() == len(items), "library run did not store every score"
        raw_s = best_time(lambda: raw.write(items), repeat=REPEAT, setup=raw.truncate)
        assert raw.count() == len(items), "raw run did not store every row"
        ids_s = best_time(lambda: scores.save_scores(scores=with_ids), repeat=REPEAT, setup=raw.truncate)
        assert raw.count() == len(items), "library run with ids did not store every score"
        prebuilt: list[list[Any]] = []

        def build_untimed() -> None:
            raw.truncate()
            prebuilt[:] = raw.build(items)

        driver_s = best_time(lambda: raw.insert(prebuilt), repeat=REPEAT, setup=build_untimed)
        if os.environ.get("COMPOSITE_STORE_BENCH_PROFILE"):
            raw.truncate()
            print(f"\n--- cProfile: save_scores of {len(items):,} scores on {backend.name} ---")
            profile(lambda: scores.save_scores(scores=items), limit=30, sort="tottime")
        raw.truncate()
    finally:
        raw.close()
        store.close()
    count = len(items)
    library = rate(count, library_s)
    return [
        throughput_row(f"save_scores ({count:,} in one call)", backend.name, library=library,
                       raw=rate(count, raw_s)),
        throughput_row(f"save_scores ({count:,}), caller ids", backend.name, library=rate(count, ids_s),
                       raw=rate(count, raw_s), min_ratio=None, note="an upsert; for reference"),
        throughput_row(f"save_scores ({count:,}) vs prebuilt rows", backend.name, library=library,
                       raw=rate(count, driver_s), min_ratio=None, note="raw: the driver's insert alone"),
    ]


def main() -> list[dict[str, Any]]:
    """Run the benchmark on every available backend; returns the result rows."""
    items = payloads(scaled(ROWS))
    results = []
    with backends() as available:
        for backend in available:
            print(f"[scores] {backend.name} ...", flush=True)
            results += bench_backend(backend, items)
    return results


if __name__ == "__main__":
    print_results(main())
