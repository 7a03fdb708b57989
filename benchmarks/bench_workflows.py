"""Workflows: ``persist_workflow_snapshot`` and ``load_workflow_snapshot`` latency against the
bare driver doing the same work on the same table.

Per backend, on ``mastra_workflow_snapshot`` as ``init()`` created it (unique key and indexes):
``RUNS`` (200) runs are persisted once (setup), then

* **persist**: p50 of re-persisting a run's snapshot (~3 KB of JSON; the common case: a run saves
  its snapshot at every step). Raw: SQLite and PostgreSQL, one transaction with ``INSERT … ON
  CONFLICT (workflow_name, run_id) DO UPDATE`` keeping ``createdAt``; ClickHouse, read the stored
  ``createdAt`` and ``_version`` (``FINAL``), then insert the new version.
* **load**: p50 of ``load_workflow_snapshot`` of a random run; raw: select the snapshot by key
  (ClickHouse: ``FINAL``, ``_deleted = 0``) and decode the JSON.

Run with ``python -m benchmarks workflows`` or ``python -m benchmarks.bench_workflows``.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

from composite_store.values import format_iso, utc_now

from .common import (BenchBackend, RawDatabase, clickhouse_timestamps, latency_row, library_and_raw, p50_pair_ms,
                     print_results, run_per_backend, scaled)

RUNS = 200
CALLS = 300
WORKFLOW = "support-ticket-triage"
TABLE = "mastra_workflow_snapshot"

#: The raw path's JSON encoding: the library's text (compact, UTF-8), with the standard library.
encode_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def make_snapshot(run_id: str, step: int) -> dict[str, Any]:
    """A suspended run of a five-step workflow, as Mastra stores it (~3 KB of JSON)."""
    steps = ["classify", "lookup-customer", "draft-reply", "human-review", "send-reply"]
    context: dict[str, Any] = {"input": {"ticketId": f"T-{run_id}", "subject": "Refund for a damaged parcel",
                                         "body": "The parcel arrived with a broken seal and the mug inside "
                                                 "was cracked. I would like a refund, please." * 2}}
    for index, name in enumerate(steps[:step + 1]):
        done = index < step
        context[name] = {"status": "success" if done else "suspended", "startedAt": 1_740_000_000_000 + index,
                         "payload": {"ticketId": f"T-{run_id}", "attempt": 1},
                         **({"output": {"category": "refund", "confidence": 0.91, "notes": ["damaged", "refund"],
                                        "draft": "We are sorry about the damaged mug; a refund is on its way."}}
                            if done else {"suspendPayload": {"reason": "needs approval", "reviewer": "team-lead"}}),
                         **({"endedAt": 1_740_000_000_500 + index} if done else {})}
    return {"runId": run_id, "status": "suspended", "value": {steps[step]: "waiting"}, "context": context,
            "serializedStepGraph": [{"type": "step", "step": {"id": name, "description": f"The {name} step"}}
                                    for name in steps],
            "activePaths": [step], "activeStepsPath": {steps[step]: [step]}, "suspendedPaths": {steps[step]: [step]},
            "resumeLabels": {}, "waitingPaths": {}, "requestContext": {"tenant": "acme", "locale": "en-GB"},
            "timestamp": 1_740_000_000_000 + step}


class RawWorkflows:
    """The bare-driver persist and load of one backend."""

    def __init__(self, backend: BenchBackend) -> None:
        self.db = RawDatabase(backend)
        self.name = backend.name
        if self.name == "clickhouse":
            self.ts_to_db, _ = clickhouse_timestamps(self.db.connection, TABLE)

    def close(self) -> None:
        self.db.close()

    def persist(self, run_id: str, snapshot: dict[str, Any], resource_id: str) -> None:
        now = utc_now()
        text = encode_json(snapshot)
        if self.name == "clickhouse":
            client = self.db.connection
            stored = client.execute(f'SELECT "createdAt", "_version" FROM "{TABLE}" FINAL WHERE "workflow_name" = '
                                    '%(workflow)s AND "run_id" = %(run)s AND "_deleted" = 0',
                                    {"workflow": WORKFLOW, "run": run_id})
            created, version = stored[0] if stored else (self.ts_to_db(now), 0)
            client.execute(f'INSERT INTO "{TABLE}" ("workflow_name", "run_id", "resourceId", "snapshot", "createdAt", '
                           '"updatedAt", "id", "_version", "_deleted") VALUES',
                           [(WORKFLOW, run_id, resource_id, text, created, self.ts_to_db(now), run_id,
                             max(time.time_ns() // 1000, version + 1), 0)])
            return
        if self.name == "sqlite":
            columns, values, stamps = '"createdAt", "updatedAt"', "?, ?", (format_iso(now),) * 2
            also = ""
        else:
            naive = now.replace(tzinfo=None)
            columns, values = '"createdAt", "updatedAt", "createdAtZ", "updatedAtZ"', "?, ?, ?, ?"
            stamps, also = (naive, naive, now, now), ', "updatedAtZ" = excluded."updatedAtZ"'
        with self.db.write():
            self.db.execute(f'INSERT INTO "{TABLE}" ("workflow_name", "run_id", "resourceId", "snapshot", {columns}) '
                            f'VALUES (?, ?, ?, ?, {values}) ON CONFLICT ("workflow_name", "run_id") DO UPDATE SET '
                            '"resourceId" = excluded."resourceId", "snapshot" = excluded."snapshot", '
                            f'"updatedAt" = excluded."updatedAt"{also}', (WORKFLOW, run_id, resource_id, text, *stamps))

    def load(self, run_id: str) -> Any:
        if self.name == "clickhouse":
            rows = self.db.connection.execute(
                f'SELECT "snapshot" FROM "{TABLE}" FINAL WHERE "workflow_name" = %(workflow)s AND "run_id" = %(run)s '
                'AND "_deleted" = 0', {"workflow": WORKFLOW, "run": run_id})
        else:
            rows = self.db.query(f'SELECT "snapshot" FROM "{TABLE}" WHERE "workflow_name" = ? AND "run_id" = ?',
                                 (WORKFLOW, run_id))
            if self.name == "postgres":
                self.db.connection.commit()  # end the read's transaction, as the library's call does
        if not rows:
            return None
        value = rows[0][0]
        return value if not isinstance(value, str) else json.loads(value)  # psycopg2 decodes jsonb itself


def bench_backend(backend: BenchBackend) -> list[dict[str, Any]]:
    """Persist and load latency on one backend; returns its result rows."""
    runs = scaled(RUNS, minimum=10)
    calls = max(50, scaled(CALLS))
    run_ids = [f"run-{index:05d}" for index in range(runs)]
    snapshots = [make_snapshot(run_id, index % 5) for index, run_id in enumerate(run_ids)]
    with library_and_raw(backend, "workflows", RawWorkflows) as (workflows, raw):
        for run_id, snapshot in zip(run_ids, snapshots):
            workflows.persist_workflow_snapshot(workflow_name=WORKFLOW, run_id=run_id, snapshot=snapshot,
                                                resource_id="user-1")
        assert raw.load(run_ids[3]) == workflows.load_workflow_snapshot(workflow_name=WORKFLOW, run_id=run_ids[3])

        turn = iter(range(10**9))

        def library_persist() -> None:
            index = next(turn) % runs
            workflows.persist_workflow_snapshot(workflow_name=WORKFLOW, run_id=run_ids[index],
                                                snapshot=snapshots[index], resource_id="user-1")

        def raw_persist() -> None:
            index = next(turn) % runs
            raw.persist(run_ids[index], snapshots[index], "user-1")

        library_ms, raw_ms = p50_pair_ms(library_persist, raw_persist, repeat=calls)
        results = [latency_row("persist_workflow_snapshot (update, ~3 KB)", backend.name,
                               library=library_ms, raw=raw_ms)]
        assert raw.load(run_ids[5]) == snapshots[5]
        picks = random.Random(11)
        library_ms, raw_ms = p50_pair_ms(
            lambda: workflows.load_workflow_snapshot(workflow_name=WORKFLOW, run_id=run_ids[picks.randrange(runs)]),
            lambda: raw.load(run_ids[picks.randrange(runs)]), repeat=calls)
        results.append(latency_row("load_workflow_snapshot", backend.name, library=library_ms, raw=raw_ms))
        print(f"[workflows] {backend.name} done", flush=True)
    return results


def main() -> list[dict[str, Any]]:
    """Run the workflow benchmarks on every available backend; returns the result rows."""
    return run_per_backend(bench_backend)


if __name__ == "__main__":
    print_results(main())
