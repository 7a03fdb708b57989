"""Datasets: adding items, one call per item and in one batch, against the bare driver doing the
same versioned writes on the same tables (SQLite and PostgreSQL; ClickHouse does not hold this
domain).

Every item-changing call is one version step (datasets.md §3). Per backend, into an empty
dataset (no JSON Schemas) on the tables ``init()`` created:

* **add_item**: ``ITEMS`` (1,000) items (input, ground truth, metadata), one per call, the
  library into one dataset and the raw path into another, called alternately in blocks (so both
  see the same load on a shared machine); rows/s over all the calls. Raw, per item, in one
  transaction: read the dataset's version and tenancy (``FOR UPDATE`` on PostgreSQL), store
  version + 1 on the dataset, insert the item row of that version and the version-log row —
  what keeps the versioned layout consistent.
* **batch_insert_items**: the same ``ITEMS`` in one call, best of ``ROUNDS`` into an emptied
  dataset: raw, the same transaction with one batch insert of the item rows (``executemany`` /
  ``execute_values``).

The payload columns hold the same JSON text (compact, UTF-8), absent fields NULL.

Run with ``python -m benchmarks datasets`` or ``python -m benchmarks.bench_datasets``.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from composite_store.values import format_iso, utc_now

from .common import (BenchBackend, RawDatabase, best_time, library_and_raw, paired_rates, print_results, rate,
                     run_per_backend, scaled, throughput_row)

ITEMS = 1_000
ROUNDS = 5
WARMUP = 10

#: The raw path's JSON encoding: the library's text (compact, UTF-8), with the standard library.
encode_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode

ITEM_COLUMNS = ('"id", "datasetId", "datasetVersion", "externalId", "organizationId", "projectId", "validTo", '
                '"isDeleted", "input", "groundTruth", "requestContext", "metadata", "source", "expectedTrajectory", '
                '"toolMocks", "unmockedToolPolicy", "scorerIds", "createdAt", "updatedAt"')


def make_items(count: int) -> list[dict[str, Any]]:
    """``count`` support questions with their expected answers."""
    return [{"input": {"question": f"Where is my order #{10_000 + index}?", "locale": "en-GB",
                       "history": [{"role": "user", "content": "Hello"}]},
             "ground_truth": {"answer": "It left the warehouse yesterday and arrives within two days.",
                              "mustMention": ["tracking link"]},
             "metadata": {"source": "support-tickets", "difficulty": ("easy", "medium", "hard")[index % 3]}}
            for index in range(count)]


class RawDatasets:
    """The bare-driver version step of one backend."""

    def __init__(self, backend: BenchBackend) -> None:
        self.db = RawDatabase(backend)
        self.name = backend.name
        postgres = self.name == "postgres"
        columns = ITEM_COLUMNS + (', "createdAtZ", "updatedAtZ"' if postgres else "")
        row = "(" + ", ".join("?" * (21 if postgres else 19)) + ")"
        self.insert_item = f'INSERT INTO "mastra_dataset_items" ({columns}) VALUES {row}'
        # execute_values expands one "?" into the rows; executemany repeats the row's placeholders.
        self.insert_items = self.insert_item.replace(row, "?") if postgres else self.insert_item
        versions = '"id", "datasetId", "version", "createdAt"' + (', "createdAtZ"' if postgres else "")
        self.insert_version = (f'INSERT INTO "mastra_dataset_versions" ({versions}) '
                               f'VALUES ({", ".join("?" * (5 if postgres else 4))})')

    def close(self) -> None:
        self.db.close()

    def add(self, dataset_id: str, items: list[dict[str, Any]]) -> None:
        """One version step adding ``items``."""
        now = utc_now()
        if self.name == "sqlite":
            stamps, deleted, logged = (format_iso(now),) * 2, 0, (format_iso(now),)
        else:
            naive = now.replace(tzinfo=None)
            stamps, deleted, logged = (naive, naive, now, now), False, (naive, now)
        db = self.db
        with db.write():
            found = db.query('SELECT "version", "organizationId", "projectId" FROM "mastra_datasets" '
                             f'WHERE "id" = ?{db.for_update}', (dataset_id,))
            if not found:
                raise LookupError(f"Dataset not found: {dataset_id}")
            version, organization, project = found[0]
            version += 1
            db.execute('UPDATE "mastra_datasets" SET "version" = ? WHERE "id" = ?', (version, dataset_id))
            rows = [(str(uuid.uuid4()), dataset_id, version, None, organization, project, None, deleted,
                     encode_json(item["input"]), encode_json(item["ground_truth"]), None,
                     encode_json(item["metadata"]), None, None, None, None, None, *stamps)
                    for item in items]
            if len(rows) == 1:
                db.execute(self.insert_item, rows[0])
            else:
                db.insert_many(self.insert_items, rows)
            db.execute(self.insert_version, (str(uuid.uuid4()), dataset_id, version, *logged))


def bench_backend(backend: BenchBackend) -> list[dict[str, Any]]:
    """add_item and batch_insert_items on one backend; returns its result rows."""
    items = make_items(scaled(ITEMS, minimum=WARMUP + 10))
    count = len(items)
    with library_and_raw(backend, "datasets", RawDatasets) as (datasets, raw):
        library_id, raw_id = (datasets.create_dataset(name=f"support-questions-{side}", organization_id="org-a",
                                                      project_id="proj-1")["id"] for side in ("library", "raw"))
        library_items, raw_items = iter(items), iter(items)
        library_single, raw_single = paired_rates(
            lambda: datasets.add_item(dataset_id=library_id, **next(library_items)),
            lambda: raw.add(raw_id, [next(raw_items)]), repeat=count - WARMUP, warmup=WARMUP)
        assert raw.db.count("mastra_dataset_items") == 2 * count

        def reset() -> None:
            raw.db.truncate("mastra_dataset_items", "mastra_dataset_versions")
            with raw.db.write():
                raw.db.execute('UPDATE "mastra_datasets" SET "version" = 0 WHERE "id" = ?', (library_id,))

        library_batch = raw_batch = float("inf")
        for _ in range(ROUNDS):
            library_batch = min(library_batch, best_time(
                lambda: datasets.batch_insert_items(dataset_id=library_id, items=items), repeat=1, setup=reset))
            assert raw.db.count("mastra_dataset_items") == count
            raw_batch = min(raw_batch, best_time(lambda: raw.add(library_id, items), repeat=1, setup=reset))
            assert raw.db.count("mastra_dataset_items") == count
        results = [
            throughput_row(f"add_item ({count:,} calls)", backend.name, library=library_single, raw=raw_single,
                           note="one version step per item"),
            throughput_row(f"batch_insert_items ({count:,} in one call)", backend.name,
                           library=rate(count, library_batch), raw=rate(count, raw_batch)),
        ]
        print(f"[datasets] {backend.name} done", flush=True)
    return results


def main() -> list[dict[str, Any]]:
    """Run the datasets benchmarks on SQLite and PostgreSQL; returns the result rows."""
    return run_per_backend(bench_backend, sql_only=True)


if __name__ == "__main__":
    print_results(main())
