"""Experiments: ``add_experiment_result`` latency against the bare driver doing the same write on
the same table (SQLite and PostgreSQL; ClickHouse does not hold this domain).

Per backend, on the tables ``init()`` created (with the unique natural-key index on
(experimentId, itemId, attempt)), two experiments over one dataset, one written by the library
and one by the raw path:

* **add_experiment_result**: ``RESULTS`` (5,000) results (input, output, ground truth, metadata,
  timings, trace id, status), one per call, the library and the raw path called alternately (so
  both see the same load on a shared machine); rows/s over all the calls. Raw, per result, in one transaction:
  read the experiment's tenancy and dataset (``FOR UPDATE`` on PostgreSQL: it must exist, and
  results take its organization and project), look whether the item was purged
  (experiments.md §6: with the datasets tables in the same database, a writer must store a
  purged item's result redacted), then insert the row; the unique index rejects a repeated
  natural key. The library also returns the stored record; that is part of the overhead measured.

The JSON columns hold the same text (compact, UTF-8).

Run with ``python -m benchmarks experiments`` or ``python -m benchmarks.bench_experiments``.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from composite_store.values import format_iso, utc_now

from .common import (BenchBackend, RawDatabase, library_and_raw, paired_rates, print_results, run_per_backend,
                     scaled, throughput_row)

RESULTS = 5_000
WARMUP = 20
START = datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc)

#: The raw path's JSON encoding: the library's text (compact, UTF-8), with the standard library.
encode_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode

RESULT_COLUMNS = ('"id", "experimentId", "itemId", "itemDatasetVersion", "input", "output", "groundTruth", '
                  '"metadata", "error", "startedAt", "completedAt", "retryCount", "attempt", "traceId", "status", '
                  '"tags", "comment", "toolMockReport", "organizationId", "projectId", "createdAt"')


def make_results(count: int) -> list[dict[str, Any]]:
    """``count`` results of an agent answering support questions (keyword arguments of the call)."""
    return [{"item_id": f"item-{index:06d}", "item_dataset_version": 3,
             "input": {"question": f"Where is my order #{10_000 + index}?"},
             "output": {"text": "Your order left the warehouse yesterday and arrives within two days.",
                        "toolCalls": [{"toolName": "lookupOrder", "args": {"orderId": 10_000 + index}}]},
             "ground_truth": {"answer": "It arrives within two days."},
             "metadata": {"latencyMs": 900 + index % 300, "model": "gpt-4o-mini"},
             "started_at": START + timedelta(seconds=index),
             "completed_at": START + timedelta(seconds=index, milliseconds=900 + index % 300),
             "trace_id": f"trace-{index:06d}", "status": "needs-review" if index % 10 == 0 else None}
            for index in range(count)]


class RawExperiments:
    """The bare-driver result insert of one backend."""

    def __init__(self, backend: BenchBackend) -> None:
        self.db = RawDatabase(backend)
        self.name = backend.name
        postgres = self.name == "postgres"
        columns = RESULT_COLUMNS + (', "startedAtZ", "completedAtZ", "createdAtZ"' if postgres else "")
        self.insert = (f'INSERT INTO "mastra_experiment_results" ({columns}) '
                       f'VALUES ({", ".join("?" * (24 if postgres else 21))})')
        purged = """"metadata" -> '__purged' = 'true'::jsonb""" if postgres else \
            """json_type("metadata", '$.__purged') = 'true'"""
        self.purged = f'SELECT 1 FROM "mastra_dataset_items" WHERE "id" = ? AND "datasetId" = ? AND {purged} LIMIT 1'

    def close(self) -> None:
        self.db.close()

    def add(self, experiment_id: str, result: dict[str, Any]) -> None:
        """Store one result, as a hand-written job would."""
        now = utc_now()
        started, completed = result["started_at"], result["completed_at"]
        if self.name == "sqlite":
            stamps: tuple = (format_iso(started), format_iso(completed))
            created: tuple = (format_iso(now),)
            zoned: tuple = ()
        else:
            stamps = (started.replace(tzinfo=None), completed.replace(tzinfo=None))
            created, zoned = (now.replace(tzinfo=None),), (started, completed, now)
        db = self.db
        with db.write():
            found = db.query(f'SELECT "datasetId", "organizationId", "projectId" FROM "mastra_experiments" '
                             f'WHERE "id" = ?{db.for_update}', (experiment_id,))
            if not found:
                raise LookupError(f"Experiment not found: {experiment_id}")
            dataset, organization, project = found[0]
            if db.query(self.purged, (result["item_id"], dataset)):
                raise LookupError(f"Item {result['item_id']} was purged: the benchmark never purges")
            db.execute(self.insert, (
                str(uuid.uuid4()), experiment_id, result["item_id"], result["item_dataset_version"],
                encode_json(result["input"]), encode_json(result["output"]), encode_json(result["ground_truth"]),
                encode_json(result["metadata"]), None, *stamps, 0, 0, result["trace_id"], result["status"], None,
                None, None, organization, project, *created, *zoned))


def bench_backend(backend: BenchBackend) -> list[dict[str, Any]]:
    """add_experiment_result on one backend; returns its result rows."""
    results = make_results(scaled(RESULTS, minimum=WARMUP + 10))
    count = len(results)
    with library_and_raw(backend, "experiments", RawExperiments) as (experiments, raw):
        library_id, raw_id = (experiments.create_experiment(
            total_items=count, dataset_id="support-questions", dataset_version=3, target_type="agent",
            target_id="support-agent", organization_id="org-a", project_id="proj-1")["id"] for _ in range(2))
        library_results, raw_results = iter(results), iter(results)
        library_rate, raw_rate = paired_rates(
            lambda: experiments.add_experiment_result(experiment_id=library_id, **next(library_results)),
            lambda: raw.add(raw_id, next(raw_results)), repeat=count - WARMUP, warmup=WARMUP)
        for experiment_id in (library_id, raw_id):
            assert experiments.list_experiment_results(experiment_id=experiment_id, per_page=1).total == count
        print(f"[experiments] {backend.name} done", flush=True)
    return [throughput_row(f"add_experiment_result ({count:,} calls)", backend.name, library=library_rate,
                           raw=raw_rate, note="one result per call")]


def main() -> list[dict[str, Any]]:
    """Run the experiments benchmark on SQLite and PostgreSQL; returns the result rows."""
    return run_per_backend(bench_backend, sql_only=True)


if __name__ == "__main__":
    print_results(main())
