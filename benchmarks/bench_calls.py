"""Hot single-row calls against the fewest statements that do the same work by hand (issue 20).

Per backend (SQLite, PostgreSQL), on the tables ``init()`` created, p50 milliseconds of each call,
the library and the raw path called alternately:

* **library**: the public call (validation, cleaning, JSON, timestamps, the statements, the
  returned record);
* **raw**: what a hand-written app sends with the bare driver for the same work, in as few
  statements as the database allows, not the library's sequence replayed: one autocommit
  ``INSERT`` for ``save_score``, one ``INSERT … ON CONFLICT`` for a snapshot, one ``UPDATE …
  RETURNING`` merging a thread's metadata or storing a step result (``jsonb ||``/``jsonb_set``,
  SQLite's ``json_patch``/``json_set``), data-modifying CTEs on PostgreSQL where a call writes
  two tables (a message and its thread's bump, an item, its dataset's version and the version
  log), and on SQLite, which has no such CTEs, one ``BEGIN IMMEDIATE`` batch for those.

Targets (issue 20): PostgreSQL within 1.3x of raw, SQLite within 1.5x.  The ``statements``
note is what the library sent for one call after a first one (:meth:`Backend.counting_statements`;
PostgreSQL's first run of a statement on a connection also sends its ``PREPARE``).
Run with ``python -m benchmarks calls``; ``COMPOSITE_STORE_BENCH_SCALE`` scales the repeats.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Any, Callable

from composite_store.composite import store_for_url
from composite_store.values import format_iso

from .common import BenchBackend, latency_row, p50_pair_ms, print_results, run_per_backend, scaled

#: Calls per side and call.
REPEAT = 400
#: Issue 20's targets: library p50 over raw p50.
MAX_RATIO = {"postgres": 1.3, "sqlite": 1.5}

encode_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode

SCORE = {"scorer_id": "scorer-1", "run_id": "run-1", "entity_id": "agent-1", "entity_type": "AGENT", "source": "LIVE",
         "score": 0.75, "reason": "relevant", "scorer": {"id": "scorer-1", "name": "relevancy"},
         "entity": {"id": "agent-1", "name": "Agent"}, "input": [{"role": "user", "content": "hi"}],
         "output": {"text": "hello"}, "metadata": {"v": 1}}
SCORE_JSON = ("scorer", "entity", "input", "output", "metadata")
SNAPSHOT = {"runId": "run-1", "status": "running", "value": {}, "context": {"input": {"q": "hi"}},
            "activePaths": [], "serializedStepGraph": [], "suspendedPaths": {}, "waitingPaths": {},
            "timestamp": 1700000000000}
STEP_RESULT = {"status": "success", "output": {"answer": 42}, "startedAt": 1700000000000, "endedAt": 1700000000100}
CONTENT = {"format": 2, "parts": [{"type": "text", "text": "hello there"}]}


class Raw:
    """The bare driver's minimal statements for each call, on one backend."""

    def __init__(self, backend: BenchBackend) -> None:
        self.postgres = backend.name == "postgres"
        self.connection = backend.connect()
        if self.postgres:
            self.connection.autocommit = True
        self.cursor = self.connection.cursor()
        self.p = "%s" if self.postgres else "?"

    def close(self) -> None:
        self.connection.close()

    def stamps(self) -> list[Any]:
        """The values of one timestamp column pair (PostgreSQL) or column (SQLite)."""
        now = datetime.now(timezone.utc)
        return [now.replace(tzinfo=None), now] if self.postgres else [format_iso(now)]

    def names(self, *columns: str, stamped: tuple[str, ...] = ()) -> str:
        """Quoted column names, each of ``stamped`` followed by its ``…Z`` twin on PostgreSQL."""
        names = list(columns)
        for column in stamped:
            names += [column, f"{column}Z"] if self.postgres else [column]
        return ", ".join(f'"{name}"' for name in names)

    def marks(self, count: int) -> str:
        return ", ".join([self.p] * count)

    def run(self, sql: str, params: list[Any]) -> list[tuple]:
        self.cursor.execute(sql, params)
        return self.cursor.fetchall() if self.cursor.description else []

    def batch(self, statements: list[tuple[str, list[Any]]]) -> None:
        """SQLite: statements in one ``BEGIN IMMEDIATE`` transaction."""
        self.cursor.execute("BEGIN IMMEDIATE")
        for sql, params in statements:
            self.run(sql, params)
        self.cursor.execute("COMMIT")

    # -- the calls ------------------------------------------------------------------------

    def save_score(self) -> None:
        stamps = self.stamps()
        values = [str(uuid.uuid4())] + [encode_json(SCORE[k]) if k in SCORE_JSON else SCORE[k] for k in (
            "scorer_id", "run_id", "entity_id", "entity_type", "source", "score", "reason", *SCORE_JSON)]
        columns = self.names("id", "scorerId", "runId", "entityId", "entityType", "source", "score", "reason",
                             *SCORE_JSON, stamped=("createdAt", "updatedAt"))
        self.run(f'INSERT INTO "mastra_scorers" ({columns}) VALUES ({self.marks(len(values) + 2 * len(stamps))})',
                 values + stamps + stamps)

    def save_message(self, thread_id: str, resource_id: str) -> None:
        stamps = self.stamps()
        message = [str(uuid.uuid4()), resource_id, encode_json(CONTENT), "user", "v2"]
        columns = self.names("id", "resourceId", "content", "role", "type", "thread_id", stamped=("createdAt",))
        upsert = ('ON CONFLICT ("id") DO UPDATE SET "thread_id" = excluded."thread_id", "resourceId" = '
                  'excluded."resourceId", "content" = excluded."content", "role" = excluded."role", '
                  '"type" = excluded."type" RETURNING "createdAt"')
        if self.postgres:
            self.run(f'WITH "bumped" AS (UPDATE "mastra_threads" SET "updatedAt" = %s, "updatedAtZ" = %s '
                     f'WHERE "id" = %s RETURNING "id") INSERT INTO "mastra_messages" ({columns}) '
                     f'SELECT %s, %s, %s, %s, %s, "id", %s, %s FROM "bumped" {upsert}',
                     [*stamps, thread_id, *message, *stamps])
        else:
            self.batch([('UPDATE "mastra_threads" SET "updatedAt" = ? WHERE "id" = ?', [*stamps, thread_id]),
                        (f'INSERT INTO "mastra_messages" ({columns}) VALUES ({self.marks(7)}) {upsert}',
                         [*message, thread_id, *stamps])])

    def update_thread(self, thread_id: str) -> None:
        stamps = self.stamps()
        merge = ('COALESCE("metadata", \'{}\'::jsonb) || %s::jsonb' if self.postgres
                 else 'json_patch(COALESCE("metadata", \'{}\'), ?)')
        sets = '"updatedAt" = %s, "updatedAtZ" = %s' if self.postgres else '"updatedAt" = ?'
        self.run(f'UPDATE "mastra_threads" SET "title" = {self.p}, "metadata" = {merge}, {sets} WHERE "id" = {self.p} '
                 'RETURNING "id", "resourceId", "title", "metadata", "createdAt", "updatedAt"',
                 ["renamed", encode_json({"pinned": True}), *stamps, thread_id])

    def persist_snapshot(self, run_id: str) -> None:
        stamps = self.stamps()
        columns = self.names("workflow_name", "run_id", "resourceId", "snapshot", stamped=("createdAt", "updatedAt"))
        updated = '"updatedAt" = excluded."updatedAt"' + (', "updatedAtZ" = excluded."updatedAtZ"' if self.postgres
                                                           else "")
        self.run(f'INSERT INTO "mastra_workflow_snapshot" ({columns}) VALUES ({self.marks(4 + 2 * len(stamps))}) '
                 'ON CONFLICT ("workflow_name", "run_id") DO UPDATE SET "snapshot" = excluded."snapshot", '
                 f'"resourceId" = COALESCE(excluded."resourceId", "mastra_workflow_snapshot"."resourceId"), {updated}',
                 ["bench-workflow", run_id, None, encode_json({**SNAPSHOT, "runId": run_id}), *stamps, *stamps])

    def update_results(self, run_id: str) -> None:
        stamps = self.stamps()
        if self.postgres:
            self.run('UPDATE "mastra_workflow_snapshot" SET "snapshot" = jsonb_set("snapshot", ARRAY[\'context\', %s], '
                     '%s::jsonb), "updatedAt" = %s, "updatedAtZ" = %s WHERE "workflow_name" = %s AND "run_id" = %s '
                     'RETURNING "snapshot"->\'context\'',
                     ["step-1", encode_json(STEP_RESULT), *stamps, "bench-workflow", run_id])
        else:
            self.run('UPDATE "mastra_workflow_snapshot" SET "snapshot" = json_set("snapshot", \'$.context.step-1\', '
                     'json(?)), "updatedAt" = ? WHERE "workflow_name" = ? AND "run_id" = ? '
                     'RETURNING json_extract("snapshot", \'$.context\')',
                     [encode_json(STEP_RESULT), *stamps, "bench-workflow", run_id])

    def add_item(self, dataset_id: str) -> None:
        stamps = self.stamps()
        item = [str(uuid.uuid4()), dataset_id, False, encode_json({"question": "2 + 2?"}), encode_json({"answer": 4})]
        item_columns = self.names("id", "datasetId", "isDeleted", "input", "groundTruth", "datasetVersion",
                                  stamped=("createdAt", "updatedAt"))
        version_columns = self.names("id", "datasetId", "version", stamped=("createdAt",))
        if self.postgres:
            self.run('WITH "bumped" AS (UPDATE "mastra_datasets" SET "version" = "version" + 1 WHERE "id" = %s '
                     'RETURNING "version"), "item" AS (INSERT INTO "mastra_dataset_items" '
                     f'({item_columns}) SELECT %s, %s, %s, %s, %s, "version", %s, %s, %s, %s FROM "bumped" '
                     f'RETURNING "id") INSERT INTO "mastra_dataset_versions" ({version_columns}) '
                     'SELECT %s, %s, "version", %s, %s FROM "bumped"',
                     [dataset_id, *item, *stamps, *stamps, str(uuid.uuid4()), dataset_id, *stamps])
        else:
            self.cursor.execute("BEGIN IMMEDIATE")
            version = self.run('UPDATE "mastra_datasets" SET "version" = "version" + 1 WHERE "id" = ? '
                               'RETURNING "version"', [dataset_id])[0][0]
            self.run(f'INSERT INTO "mastra_dataset_items" ({item_columns}) VALUES ({self.marks(8)})',
                     [*item, version, *stamps, *stamps])
            self.run(f'INSERT INTO "mastra_dataset_versions" ({version_columns}) VALUES (?, ?, ?, ?)',
                     [str(uuid.uuid4()), dataset_id, version, *stamps])
            self.cursor.execute("COMMIT")

    def add_result(self, experiment_id: str) -> None:
        stamps = self.stamps()
        columns = self.names("id", "experimentId", "itemId", "input", "output", "retryCount", "attempt",
                             "organizationId", "projectId", stamped=("startedAt", "completedAt", "createdAt"))
        p = self.p
        self.run(f'INSERT INTO "mastra_experiment_results" ({columns}) SELECT {p}, "id", {p}, {p}, {p}, 0, 0, '
                 f'"organizationId", "projectId", {self.marks(3 * len(stamps))} FROM "mastra_experiments" '
                 f'WHERE "id" = {p} RETURNING *',
                 [str(uuid.uuid4()), str(uuid.uuid4()), encode_json({"q": 1}), encode_json({"a": 2}),
                  *stamps, *stamps, *stamps, experiment_id])


# --------------------------------------------------------------------------- the benchmark

def bench(backend: BenchBackend) -> list[dict[str, Any]]:
    """Every call's p50 on ``backend``, library against :class:`Raw`."""
    store = store_for_url(backend.url)
    store.init()
    raw = Raw(backend)
    try:
        memory, workflows, scores = (store.get_store(key) for key in ("memory", "workflows", "scores"))
        datasets, experiments = store.get_store("datasets"), store.get_store("experiments")
        thread = memory.save_thread(thread={"id": "bench-thread", "resource_id": "bench-user", "title": "t",
                                            "metadata": {"topic": "bench"}})
        workflows.persist_workflow_snapshot(workflow_name="bench-workflow", run_id="run-1", snapshot=SNAPSHOT)
        dataset = datasets.create_dataset(name="bench")
        experiment = experiments.create_experiment(total_items=10)
        pairs: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
            "save_score": (lambda: scores.save_score(score=SCORE), raw.save_score),
            "save_messages (one)": (
                lambda: memory.save_messages(messages=[{
                    "id": str(uuid.uuid4()), "thread_id": thread["id"], "resource_id": "bench-user",
                    "role": "user", "type": "v2", "content": CONTENT}]),
                lambda: raw.save_message(thread["id"], "bench-user")),
            "update_thread": (lambda: memory.update_thread(id=thread["id"], title="renamed",
                                                           metadata={"pinned": True}),
                              lambda: raw.update_thread(thread["id"])),
            "persist_workflow_snapshot": (
                lambda: workflows.persist_workflow_snapshot(workflow_name="bench-workflow", run_id="run-1",
                                                            snapshot=SNAPSHOT),
                lambda: raw.persist_snapshot("run-1")),
            "update_workflow_results": (
                lambda: workflows.update_workflow_results(workflow_name="bench-workflow", run_id="run-1",
                                                          step_id="step-1", result=STEP_RESULT),
                lambda: raw.update_results("run-1")),
            "add_item": (lambda: datasets.add_item(dataset_id=dataset["id"], input={"question": "2 + 2?"},
                                                   ground_truth={"answer": 4}),
                         lambda: raw.add_item(dataset["id"])),
            "add_experiment_result": (
                lambda: experiments.add_experiment_result(
                    experiment_id=experiment["id"], item_id=str(uuid.uuid4()), input={"q": 1}, output={"a": 2},
                    started_at=datetime.now(timezone.utc), completed_at=datetime.now(timezone.utc)),
                lambda: raw.add_result(experiment["id"])),
        }
        rows = []
        for name, (library, by_hand) in pairs.items():
            library()  # once first: PostgreSQL prepares a statement on its first run on a connection
            with scores.backend.counting_statements() as log:
                library()
            library_ms, raw_ms = p50_pair_ms(library, by_hand, repeat=scaled(REPEAT, minimum=5))
            rows.append(latency_row(name, backend.name, library=library_ms, raw=raw_ms,
                                    max_ratio=MAX_RATIO[backend.name], note=f"{log.count} statements"))
        return rows
    finally:
        raw.close()
        store.close()


def main() -> list[dict[str, Any]]:
    """Run on SQLite and PostgreSQL; return the result rows."""
    return run_per_backend(bench, sql_only=True)


if __name__ == "__main__":
    print_results(main(), title="hot calls against the fewest statements by hand (p50 ms)")
