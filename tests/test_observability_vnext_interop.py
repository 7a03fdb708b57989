"""Scenario 34 P of observability-vnext.md: the vNext layout on PostgreSQL against the framework's
own ``ObservabilityStoragePostgresVNext`` (``@mastra/pg`` 1.27.1, the observability domain of
``PostgresStoreVNext``), run through ``tests/interop/vnext.mjs`` as the interop tests of
tests/test_interop_mastra.py run the framework's other stores.

* The tables: the framework's ``init()`` in one schema and the library's in another make the same
  catalog — every table (spans, the four signals, the discovery cache), column (name, type, NOT
  NULL, default, order), constraint, index (name and definition) and partition key, and the same
  daily children; the library's ``init()`` on the framework's schema changes nothing.
* The rows, both ways: spans written by one side (running roots, ended roots written again, events,
  children with payloads) read back through the other equal to what the writer itself reads —
  ``get_trace``, ``get_root_span`` and ``list_traces`` — after one normalization
  (tests/test_interop_mastra.py's ``as_record``: snake_case keys, ISO timestamps, ``None`` left out).
"""

from __future__ import annotations

import json
import subprocess
from typing import Any, Iterator

import psycopg2
import pytest

from composite_store.postgres import ObservabilityPG
from composite_store.values import utc_now
from tests.conftest import unavailable
from tests.servers import create_postgres_database
from tests.test_interop_mastra import INTEROP_DIR, NODE_TIMEOUT, as_record, as_records, framework_ready

pytestmark = [pytest.mark.interop, pytest.mark.backends("postgres")]

SCRIPT = INTEROP_DIR / "vnext.mjs"
TODAY = utc_now().strftime("%Y-%m-%d")


def at(clock: str) -> str:
    """An ISO time of today (inside the partitions both sides create ahead)."""
    return f"{TODAY}T{clock}Z"


#: Spans in the framework's wire form (the library takes the same camelCase records).
SPANS = [
    # A trace whose root is written running, then ended.
    {"traceId": "t-ended", "spanId": "root", "name": "agent run", "spanType": "agent_run", "isEvent": False,
     "startedAt": at("10:00:00.000"), "endedAt": None, "entityType": "agent", "entityId": "a-1",
     "entityName": "Support", "environment": "production", "source": "cloud", "tags": [" prod ", "prod", "v2"],
     "metadata": {"team": " core ", "userId": "u-1", "tier": 2}, "input": [{"role": "user", "content": "hi"}]},
    {"traceId": "t-ended", "spanId": "tool", "parentSpanId": "root", "name": "search", "spanType": "tool_call",
     "isEvent": False, "startedAt": at("10:00:01.000"), "endedAt": at("10:00:02.500"), "entityType": "tool",
     "input": {"q": "refund"}, "output": {"hits": 3}, "attributes": {"toolType": "function"},
     "error": {"message": "partial"}},
    {"traceId": "t-ended", "spanId": "note", "parentSpanId": "root", "name": "checkpoint", "spanType": "generic",
     "isEvent": True, "startedAt": at("10:00:03.000"), "endedAt": None, "scope": {"core": "1.71.0"}},
    {"traceId": "t-ended", "spanId": "root", "name": "agent run", "spanType": "agent_run", "isEvent": False,
     "startedAt": at("10:00:00.000"), "endedAt": at("10:00:05.000"), "entityType": "agent", "entityId": "a-1",
     "entityName": "Support", "environment": "production", "source": "cloud", "tags": ["prod", "v2"],
     "metadata": {"team": " core ", "userId": "u-1", "tier": 2}, "output": {"text": "done"},
     "input": [{"role": "user", "content": "hi"}]},
    # A running trace (its root never ends here).
    {"traceId": "t-running", "spanId": "wf", "name": "workflow", "spanType": "workflow_run", "isEvent": False,
     "startedAt": at("11:00:00.000"), "endedAt": None, "threadId": "th-1", "resourceId": "r-1",
     "organizationId": "org-1", "userId": "u-2"},
]
TRACES = ["t-ended", "t-running"]


def run_framework(url: str, schema: str, *, init: bool, spans: list[dict]) -> dict:
    """One node process on ``schema``: the framework's ``init()`` when asked, its writes, its reads."""
    request = {"init": init, "spans": spans, "read": {"traces": TRACES, "roots": TRACES}}
    completed = subprocess.run(["node", str(SCRIPT), url, schema], input=json.dumps(request), capture_output=True,
                               text=True, timeout=NODE_TIMEOUT, cwd=INTEROP_DIR)
    assert completed.returncode == 0, f"the framework failed:\n{completed.stderr[-4000:]}"
    return json.loads(completed.stdout)


def framework_view(view: dict) -> dict:
    """The framework's reads in the comparable form."""
    return {"traces": {trace_id: as_records(found["spans"]) if found else None
                       for trace_id, found in view["traces"].items()},
            "roots": {trace_id: as_record(root) for trace_id, root in view["roots"].items()},
            "listed": as_records(view["listed"])}


def library_view(repository: ObservabilityPG) -> dict:
    """The library's reads in the comparable form."""
    def trace(trace_id: str) -> list[dict] | None:
        found = repository.get_trace(trace_id=trace_id)
        return as_records(found["spans"]) if found else None

    return {"traces": {trace_id: trace(trace_id) for trace_id in TRACES},
            "roots": {trace_id: as_record(repository.get_root_span(trace_id=trace_id)) for trace_id in TRACES},
            "listed": as_records(repository.list_traces(per_page=100).items)}


def catalog(url: str, schema: str) -> dict[str, Any]:
    """What the catalog says of every table of ``schema`` (children apart), names of the schema
    replaced by ``S``: columns, constraints, indexes, partition key and daily children."""
    tables: dict[str, Any] = {}
    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        def rows(sql: str, *params: Any) -> list[tuple]:
            cursor.execute(sql, params)
            return [tuple(str(value).replace(f"{schema}.", "S.") if isinstance(value, str) else value
                          for value in row) for row in cursor.fetchall()]

        for table, kind in rows("SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = "
                                "c.relnamespace WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT "
                                "c.relispartition", schema):
            tables[table] = {
                "kind": kind,
                "columns": rows("""SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                    pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
                    JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid
                    AND d.adnum = a.attnum WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0
                    AND NOT a.attisdropped ORDER BY a.attnum""", schema, table),
                "constraints": rows("""SELECT o.conname, pg_get_constraintdef(o.oid) FROM pg_constraint o
                    JOIN pg_class c ON c.oid = o.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE n.nspname = %s AND c.relname = %s ORDER BY 1""", schema, table),
                "indexes": rows("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = %s "
                                "ORDER BY 1", schema, table),
                "partition_key": rows("SELECT pg_get_partkeydef(c.oid) FROM pg_class c JOIN pg_namespace n ON "
                                      "n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s", schema, table),
                "children": rows("""SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                    JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace
                    WHERE n.nspname = %s AND p.relname = %s ORDER BY 1""", schema, table),
            }
    return tables


@pytest.fixture
def database(backend: str) -> Iterator[str]:
    """A new, empty PostgreSQL database (each side works in a schema of its own)."""
    reason = framework_ready()
    if reason is not None:
        unavailable(backend, reason)
    url, drop = create_postgres_database(prefix="csvnext")
    try:
        yield url
    finally:
        drop()


def open_library(url: str, schema: str) -> ObservabilityPG:
    repository = ObservabilityPG(connection_string=f"{url}?schema_name={schema}", layout="vnext")
    repository.init()
    return repository


def test_tables_equal_the_frameworks(database: str) -> None:
    """34 P: the library's init() makes the framework's catalog; on the framework's schema it
    changes nothing."""
    # Both sides create daily partitions named by the UTC day they run on: a run that crosses
    # midnight compares different days, and runs again in new schemas.
    for attempt in ("first", "again"):
        day = utc_now().date()
        run_framework(database, f"framework_{attempt}", init=True, spans=[])
        made_by_framework = catalog(database, f"framework_{attempt}")
        library = open_library(database, f"library_{attempt}")
        library.close()
        made_by_library = catalog(database, f"library_{attempt}")
        open_library(database, f"framework_{attempt}").close()
        framework_after_init = catalog(database, f"framework_{attempt}")
        if utc_now().date() == day:
            break
    assert {"mastra_span_events", "mastra_observability_discovery"} <= set(made_by_framework)
    assert made_by_library == made_by_framework
    assert framework_after_init == made_by_framework


def test_framework_writes_library_reads(database: str) -> None:
    """34 P: the library reads the framework's rows as the framework reads them."""
    theirs = framework_view(run_framework(database, "shared", init=True, spans=SPANS))
    assert theirs["roots"]["t-running"]["span_id"] == "wf" and "ended_at" not in theirs["roots"]["t-running"]
    assert len(theirs["traces"]["t-ended"]) == 3 and theirs["roots"]["t-ended"]["ended_at"] == at("10:00:05.000")
    library = open_library(database, "shared")
    try:
        assert library_view(library) == theirs
    finally:
        library.close()


def test_library_writes_framework_reads(database: str) -> None:
    """34 P: the framework reads the library's rows as the library reads them."""
    library = open_library(database, "shared")
    try:
        for record in SPANS:
            library.create_span(span=record)
        mine = library_view(library)
    finally:
        library.close()
    assert [(row["trace_id"], row["status"]) for row in mine["listed"]] == [("t-running", "running"),
                                                                             ("t-ended", "success")]
    assert framework_view(run_framework(database, "shared", init=False, spans=[])) == mine
