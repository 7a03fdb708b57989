"""Experiments: ``add_experiment_result`` against the bare driver doing the same write on the same
table (SQLite and PostgreSQL; ClickHouse does not hold this domain).

Per backend, for one experiment over a dataset, on the tables ``init()`` created (with the unique
natural-key index on (experimentId, itemId, attempt)):

* **add_experiment_result**: ``RESULTS`` (5,000) calls, one result each (input, output, ground
  truth, metadata, timings, trace id, status). Raw, per result, in one transaction: read the
  experiment's tenancy (``FOR UPDATE`` on PostgreSQL: it must exist, and results take its
  organization and project), then insert the row; the unique index rejects a repeated natural
  key. The library also checks that the dataset item was not purged and returns the stored
  record; that is part of the overhead measured.

The JSON columns hold the same text (compact, UTF-8).

Run with ``python -m benchmarks experiments`` or ``python -m benchmarks.bench_experiments``.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from repository.composite import store_for_url
from repository.values import format_iso, utc_now

from .common import BenchBackend, RawDatabase, best_time, print_results, rate, run_per_backend, scaled, throughput_row

RESULTS = 5_000
ROUNDS = 2
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

    def close(self) -> None:
        self.db.close()

    def add(self, experiment_id: str, result: dict[str, Any]) -> None:
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
            found = db.query(f'SELECT "organizationId", "projectId" FROM "mastra_experiments" WHERE "id" = ?'
                             f'{db.for_update}', (experiment_id,))
            if not found:
                raise LookupError(f"Experiment not found: {experiment_id}")
            organization, project = found[0]
            db.execute(self.insert, (
                str(uuid.uuid4()), experiment_id, result["item_id"], result["item_dataset_version"],
                encode_json(result["input"]), encode_json(result["output"]), encode_json(result["ground_truth"]),
                encode_json(result["metadata"]), None, *stamps, 0, 0, result["trace_id"], result["status"], None,
                None, None, organization, project, *created, *zoned))


def bench_backend(backend: BenchBackend) -> list[dict[str, Any]]:
    """add_experiment_result on one backend; returns its result rows."""
    results = make_results(scaled(RESULTS, minimum=10))
    count = len(results)
    store = store_for_url(backend.url)
    raw: RawExperiments | None = None
    try:
        store.init()
        experiments = store.get_store("experiments")
        raw = RawExperiments(backend)
        experiment_id = experiments.create_experiment(
            total_items=count, dataset_id="support-questions", dataset_version=3, target_type="agent",
            target_id="support-agent", organization_id="org-a", project_id="proj-1")["id"]

        def library() -> None:
            for result in results:
                experiments.add_experiment_result(experiment_id=experiment_id, **result)

        def raw_add() -> None:
            for result in results:
                raw.add(experiment_id, result)

        library_s = raw_s = float("inf")
        for _ in range(ROUNDS):
            library_s = min(library_s, best_time(library, repeat=1,
                                                 setup=lambda: raw.db.truncate("mastra_experiment_results")))
            assert raw.db.count("mastra_experiment_results") == count
            raw_s = min(raw_s, best_time(raw_add, repeat=1,
                                         setup=lambda: raw.db.truncate("mastra_experiment_results")))
            assert raw.db.count("mastra_experiment_results") == count
        print(f"[experiments] {backend.name} done", flush=True)
        experiments.dangerously_clear_all()
    finally:
        if raw is not None:
            raw.close()
        store.close()
    return [throughput_row(f"add_experiment_result ({count:,} calls)", backend.name, library=rate(count, library_s),
                           raw=rate(count, raw_s), note="one result per call")]


def main() -> list[dict[str, Any]]:
    """Run the experiments benchmark on SQLite and PostgreSQL; returns the result rows."""
    return run_per_backend(bench_backend, sql_only=True)


if __name__ == "__main__":
    print_results(main())
