"""ClickHouse, current observability layout: migration from the legacy span table (observability-vnext.md
§12) and retention by TTL (§10.1), on Debian's 18.16 server and on the current engine in-process.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone

import pytest

from composite_store import NotSupportedError, ValidationError
from composite_store.backends.chdb import is_chdb_url
from composite_store.clickhouse import ObservabilityClickHouse
from composite_store.observability.vnext import normalized_tags
from tests.conftest import clickhouse_client, database_url

pytestmark = pytest.mark.requires(family="clickhouse")
CURRENT_ONLY = pytest.mark.requires(family="clickhouse", current_clickhouse=True)
OLD_ONLY = pytest.mark.requires(family="clickhouse", current_clickhouse=False)

UTC = timezone.utc
DAY1 = datetime(2026, 1, 2, 12, tzinfo=UTC)
TRACING_TABLES = ("mastra_span_events", "mastra_trace_roots", "mastra_trace_branches")
DATABASE = "cs_vnext_migration"


@pytest.fixture
def url(backend_url):
    """A database of its own, empty, on the ClickHouse backend under test."""
    admin = clickhouse_client(backend_url)
    admin.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
    admin.execute(f"CREATE DATABASE {DATABASE}")
    yield database_url(backend_url, DATABASE)
    admin.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
    admin.disconnect()


@pytest.fixture
def repositories(url):
    """``(legacy, vnext)``: both layouts on that database, the legacy one initialized."""
    legacy = ObservabilityClickHouse(url=url, layout="legacy")
    vnext = ObservabilityClickHouse(url=url, layout="vnext")
    legacy.init()
    yield legacy, vnext
    legacy.close()
    vnext.close()


def raw_sql(repository, sql: str) -> list:
    with repository.backend.connection():
        return repository.backend.database.connection().client.execute(sql)


def span(trace_id: str, span_id: str, day: int, parent: str | None = None, **overrides) -> dict:
    started = DAY1 + timedelta(days=day, seconds=len(span_id))
    record = {"trace_id": trace_id, "span_id": span_id, "parent_span_id": parent, "name": f"{span_id}-name",
              "span_type": "agent_run" if parent is None else "tool_call", "is_event": False,
              "started_at": started, "ended_at": started + timedelta(seconds=1)}
    record.update(overrides)
    return record


def fill_legacy(legacy) -> list[str]:
    """Three days of traces written through the legacy layout: roots and children, tags, metadata,
    errors, an event, a running span, an updated span and a deleted trace; the trace ids kept."""
    legacy.batch_create_spans(records=[
        span("t1", "root", 0, tags=[" prod ", "prod", "", "beta"], user_id="u-1", environment="production",
             metadata={"team": " a ", "userId": "u", "tier": 2, "nested": {"deep": "x"}, "empty": " "},
             input=[{"role": "user", "content": "hello"}], output={"text": "done"}, attributes={"k": 1}),
        span("t1", "child", 0, "root", error={"message": "boom"}, entity_type="tool", entity_name="search"),
        span("t1", "event", 0, "child", is_event=True, ended_at=None, span_type="generic"),
        span("t2", "root", 1, ended_at=None, metadata={"quote": 'say "hi" \\ é'}, tags=['x"y', "ü"]),
        span("t2", "child", 1, "root", span_type="model_generation"),
        span("t3", "root", 2, request_context={"r": 1}, scope={"core": "1.0"}, source="cloud"),
        span("gone", "root", 2),
    ])
    legacy.update_span(trace_id="t1", span_id="child", updates={"output": {"result": 42}})
    legacy.batch_delete_traces(trace_ids=["gone"])
    return ["t1", "t2", "t3"]


def expected(span_record: dict) -> dict:
    """A legacy span as the current layout reads it (§2.1): created at its start, never updated,
    events and running spans ended at their start, tags normalised."""
    record = dict(span_record)
    if record["is_event"] or record["ended_at"] is None:
        record["ended_at"] = record["started_at"]
    record.update(created_at=record["started_at"], updated_at=None, tags=normalized_tags(record["tags"]))
    return record


def ids(page, key: str = "trace_id") -> list[str]:
    return [row[key] for row in page.items]


def days(result: dict) -> list[tuple]:
    return [(day["day"], day["source"], day["copied"], day["missing"]) for day in result["days"]]


# --------------------------------------------------------------------------- migration (§12)

def test_migration_copies_every_span_as_the_legacy_reads_gave_it(repositories, caplog):
    """§12, scenario 35: init() warns once; per day one INSERT … SELECT; reads equal the legacy
    reads (the current layout's rules applied); the count check; a second run copies nothing."""
    legacy, vnext = repositories
    traces = fill_legacy(legacy)
    before = {trace_id: legacy.get_trace(trace_id=trace_id)["spans"] for trace_id in traces}
    with caplog.at_level(logging.WARNING, logger="composite_store.clickhouse"):
        vnext.init()
    assert [r.message for r in caplog.records].count(
        "Legacy span table 'mastra_ai_spans' detected. Its spans are not read by the current layout: run "
        "migrate_spans() (or: composite-store migrate-spans URL) to copy them into mastra_span_events.") == 1
    status = vnext.check_spans_migration_status()
    assert status == {"needs_migration": True, "already_migrated": False, "table_name": "mastra_ai_spans",
                      "legacy_rows": 6, "legacy_spans": 6, "days": 3}
    seen = []
    result = vnext.migrate_spans(progress=lambda position, total, report: seen.append((position, total,
                                                                                       report["day"])))
    assert result["success"] is True and result["already_migrated"] is False and result["done"] is True
    assert result["message"] == "Migration complete. Migrated 6 legacy spans in 3 batches."
    assert days(result) == [("2026-01-02", 3, 3, 0), ("2026-01-03", 2, 2, 0), ("2026-01-04", 1, 1, 0)]
    assert [day["target"] for day in result["days"]] == [3, 2, 1]
    assert seen == [(1, 3, "2026-01-02"), (2, 3, "2026-01-03"), (3, 3, "2026-01-04")]
    for trace_id, spans in before.items():
        assert vnext.get_trace(trace_id=trace_id)["spans"] == [expected(s) for s in spans], trace_id
    assert vnext.get_trace(trace_id="gone") is None
    root = vnext.get_span(trace_id="t1", span_id="root")
    assert root["parent_span_id"] is None and root["tags"] == ["prod", "beta"]
    assert root["metadata"] == {"team": " a ", "userId": "u", "tier": 2, "nested": {"deep": "x"}, "empty": " "}
    assert vnext.get_span(trace_id="t1", span_id="child")["output"] == {"result": 42}
    running = vnext.get_span(trace_id="t2", span_id="root")
    assert running["ended_at"] == running["started_at"] and running["tags"] == ['x"y', "ü"]
    assert vnext.get_span(trace_id="t3", span_id="root")["source"] == "cloud"
    # metadataSearch (§2.6): string members only, stripped, without promoted keys and empty values.
    assert ids(vnext.list_traces(filters={"metadata": {"team": "a"}})) == ["t1"]
    assert ids(vnext.list_traces(filters={"metadata": {"userId": "u"}})) == []
    assert ids(vnext.list_traces(filters={"metadata": {"quote": 'say "hi" \\ é'}})) == ["t2"]
    assert ids(vnext.list_traces(filters={"tags": ["beta"]})) == ["t1"]
    assert ids(vnext.list_traces(filters={"has_child_error": True})) == ["t1"]
    assert ids(vnext.list_traces()) == ["t3", "t2", "t1"]
    assert ids(vnext.list_branches(filters={"span_type": "tool_call"}), "span_id") == ["child"]
    counts = vnext.count_rows()
    assert {table: counts[table] for table in TRACING_TABLES} == {
        "mastra_span_events": 6, "mastra_trace_roots": 3, "mastra_trace_branches": 4}

    again = vnext.migrate_spans()
    assert again == {"success": True, "already_migrated": True, "duplicates_removed": 0, "done": True,
                     "days": [], "message": "Migration already complete."}
    assert raw_sql(vnext, "SELECT count() FROM mastra_span_events")[0][0] == 6
    assert vnext.check_spans_migration_status()["needs_migration"] is False


def test_interrupted_migration_resumes_without_copying_twice(repositories):
    """§12: ``max_days`` and ``stop`` end a run between days; the next run continues; a day
    partly copied (here: by hand) gets only its missing spans."""
    legacy, vnext = repositories
    fill_legacy(legacy)
    vnext.init()
    first = vnext.migrate_spans(max_days=1)
    assert first["done"] is False and days(first) == [("2026-01-02", 3, 3, 0)]
    assert first["message"] == "Migration paused after 1 of 3 days; run migrate_spans() again to continue."
    assert vnext.check_spans_migration_status()["needs_migration"] is True
    # Half of day two already there, as if the previous run stopped inside its insert.
    vnext.batch_create_spans(records=[legacy.get_span(trace_id="t2", span_id="child")])
    stop = threading.Event()
    second = vnext.migrate_spans(progress=lambda position, total, report: position == 2 and stop.set(), stop=stop)
    assert second["done"] is False and days(second) == [("2026-01-02", 3, 0, 0), ("2026-01-03", 2, 1, 0)]
    third = vnext.migrate_spans()
    assert third["done"] is True and third["message"] == "Migration complete. Migrated 6 legacy spans in 3 batches."
    assert days(third) == [("2026-01-02", 3, 0, 0), ("2026-01-03", 2, 0, 0), ("2026-01-04", 1, 1, 0)]
    assert raw_sql(vnext, "SELECT count() FROM mastra_span_events")[0][0] == 6
    assert vnext.migrate_spans()["already_migrated"] is True
    with pytest.raises(ValidationError) as error:
        vnext.migrate_spans(max_days=-1, stop="no")
    assert set(error.value.fields) == {"max_days", "stop"}


def test_nothing_to_migrate(url):
    """§12: without a legacy table (or with an empty one) nothing is copied and no marker is written."""
    vnext = ObservabilityClickHouse(url=url, layout="vnext")
    try:
        assert vnext.check_spans_migration_status()["needs_migration"] is False
        result = vnext.migrate_spans()
        assert result["already_migrated"] is True and result["message"] == (
            "Nothing to migrate: mastra_ai_spans is absent or empty.")
        assert raw_sql(vnext, "SELECT count() FROM system.tables WHERE database = currentDatabase() "
                              "AND name = 'mastra_legacy_span_migration_done'")[0][0] == 0
    finally:
        vnext.close()


@CURRENT_ONLY
def test_migration_of_a_table_the_framework_wrote(url):
    """§12: the framework's legacy table (no _version/_deleted, zone-less DateTime64, '' for no
    parent, two versions of one span, tags and metadata as JSON text) migrates too."""
    vnext = ObservabilityClickHouse(url=url, layout="vnext")
    try:
        raw_sql(vnext, "CREATE TABLE mastra_ai_spans (traceId String, spanId String, parentSpanId Nullable(String), "
                       "name String, spanType String, isEvent Bool, startedAt DateTime64(3), "
                       "endedAt Nullable(DateTime64(3)), metadata Nullable(String) DEFAULT '{}', "
                       "tags Nullable(String), error Nullable(String), createdAt DateTime64(3), "
                       "updatedAt DateTime64(3)) ENGINE = ReplacingMergeTree() ORDER BY (traceId, spanId)")
        raw_sql(vnext, "INSERT INTO mastra_ai_spans VALUES "
                       "('t', 'r', '', 'root', 'agent_run', false, '2026-01-02 12:00:00.000', NULL, "
                       "'{\"userId\":\"u\",\"team\":\" a \"}', '[\" x \",\"x\"]', '_null_', "
                       "'2026-01-02 12:00:00.000', '2026-01-02 12:00:00.000'), "
                       "('t', 'c', 'r', 'child', 'tool_call', false, '2026-01-02 12:00:01.000', NULL, NULL, NULL, "
                       "NULL, '2026-01-02 12:00:01.000', '2026-01-02 12:00:01.000')")
        # The later version in an insert of its own: an insert merges the versions it holds.
        raw_sql(vnext, "INSERT INTO mastra_ai_spans VALUES "
                       "('t', 'c', 'r', 'child', 'tool_call', false, '2026-01-02 12:00:01.000', "
                       "'2026-01-02 12:00:02.000', NULL, NULL, '{\"m\":1}', '2026-01-02 12:00:01.000', "
                       "'2026-01-02 12:00:03.000')")
        vnext.init()
        result = vnext.migrate_spans()
        assert result["message"] == "Migration complete. Migrated 3 legacy spans in 1 batches."
        assert raw_sql(vnext, "SELECT spanId, parentSpanId, tags, metadataSearch FROM mastra_span_events "
                              "ORDER BY spanId") == [("c", "r", [], {}), ("r", None, ["x"], {"team": "a"})]
        child = vnext.get_span(trace_id="t", span_id="c")
        assert child["error"] == {"m": 1} and child["ended_at"] - child["started_at"] == timedelta(seconds=1)
        root = vnext.get_root_span(trace_id="t")
        assert root["span_id"] == "r" and root["error"] is None and root["metadata"] == {"userId": "u", "team": " a "}
    finally:
        vnext.close()


def test_cli_migrate_spans(url, repositories):
    """``composite-store migrate-spans URL`` in a subprocess: a line per day, the count check, the
    summary; again: already complete."""
    if is_chdb_url(url):
        pytest.skip("the in-process engine opens its directory in one process only (this one)")
    legacy, _ = repositories
    fill_legacy(legacy)
    command = [sys.executable, "-m", "composite_store", "migrate-spans", url]
    environment = {**os.environ, "COLUMNS": "120"}
    done = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "day           legacy spans  copied  in target  missing",
        "2026-01-02               3       3          3        0",
        "2026-01-03               2       2          2        0",
        "2026-01-04               1       1          1        0",
        "Count check passed: every legacy span is in mastra_span_events.",
        "Migration complete. Migrated 6 legacy spans in 3 batches.",
    ]
    assert done.stderr.splitlines() == ["2026-01-02: 3 of 3 spans copied (day 1 of 3)",
                                        "2026-01-03: 2 of 2 spans copied (day 2 of 3)",
                                        "2026-01-04: 1 of 1 spans copied (day 3 of 3)"]
    again = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=120)
    assert again.returncode == 0 and again.stdout == "Migration already complete.\n"


# --------------------------------------------------------------------------- retention (§10.1)

def ttls(repository) -> dict[str, str]:
    """The TTL part of each tracing table's engine_full, as the server shows it."""
    rows = raw_sql(repository, "SELECT name, engine_full FROM system.tables WHERE database = currentDatabase()")
    found = {name: full.partition(" TTL ")[2].partition(" SETTINGS ")[0] for name, full in rows}
    return {table: found.get(table, "") for table in TRACING_TABLES}


@CURRENT_ONLY
def test_retention_sets_changes_and_removes_the_ttl(url):
    """§10.1, scenario 32: TTL endedAt + toIntervalDay(N) on the three tracing tables, set,
    unchanged (no ALTER on a second init), changed, kept when not configured, removed by None."""

    def initialized(**options) -> ObservabilityClickHouse:
        repository = ObservabilityClickHouse(url=url, layout="vnext", **options)
        repository.init()
        repository.close()
        return repository

    repository = initialized(retention={"tracing": 7, "logs": 3})
    assert ttls(repository) == dict.fromkeys(TRACING_TABLES, "endedAt + toIntervalDay(7)")
    again = ObservabilityClickHouse(url=url, layout="vnext", retention={"tracing": 7.9})
    statements = []
    with again.backend.connection():
        client = again.backend.database.connection().client
        original = client.execute
        client.execute = lambda sql, *args, **kwargs: statements.append(sql) or original(sql, *args, **kwargs)
        again.init()
    again.close()
    assert statements and not [sql for sql in statements if sql.lstrip().upper().startswith("ALTER")]
    assert ttls(initialized(ttl_days=30)) == dict.fromkeys(TRACING_TABLES, "endedAt + toIntervalDay(30)")
    assert ttls(initialized()) == dict.fromkeys(TRACING_TABLES, "endedAt + toIntervalDay(30)")
    assert ttls(initialized(retention={"tracing": 0})) == dict.fromkeys(TRACING_TABLES, "endedAt + toIntervalDay(30)")
    assert ttls(initialized(retention={"tracing": None}, ttl_days=30)) == dict.fromkeys(TRACING_TABLES, "")


@OLD_ONLY
def test_retention_without_ttl_warns_once_and_changes_nothing(url, caplog):
    """§4, §10.1 scenario 32 (O): one warning, init() passes, the tables have no TTL."""
    repository = ObservabilityClickHouse(url=url, layout="vnext", retention={"tracing": 7}, ttl_days=3)
    with caplog.at_level(logging.WARNING, logger="composite_store.clickhouse"):
        repository.init()
    warnings = [r.getMessage() for r in caplog.records if "TTL" in r.getMessage()]
    assert warnings == ["ClickHouse 18.16.1 has no TTL support: retention tracing=7, logs=3, metrics=3, scores=3, "
                        "feedback=3 is ignored for mastra_span_events, mastra_trace_roots, mastra_trace_branches, "
                        "mastra_log_events, mastra_metric_events, mastra_score_events, mastra_feedback_events."]
    assert ttls(repository) == dict.fromkeys(TRACING_TABLES, "")
    repository.close()


def test_retention_options_are_checked(backend_url):
    """Bad values name their key; the legacy layout keeps ttl_days; prune() points to retention."""
    with pytest.raises(ValidationError) as error:
        ObservabilityClickHouse(url=backend_url, layout="vnext", retention={"tracing": "7", "spans": 3, "logs": True})
    assert error.value.id == "STORAGE_CLICKHOUSE_INIT_INVALID_INPUT"
    assert set(error.value.fields) == {"retention.tracing", "retention.spans", "retention.logs"}
    with pytest.raises(ValidationError) as error:
        ObservabilityClickHouse(url=backend_url, layout="vnext", retention=[7])
    assert set(error.value.fields) == {"retention"}
    with pytest.raises(ValidationError) as error:
        ObservabilityClickHouse(url=backend_url, layout="legacy", retention={"tracing": 7})
    assert set(error.value.fields) == {"retention"}
    repository = ObservabilityClickHouse(url=backend_url, layout="vnext", ttl_days=5,
                                         retention={"logs": float("inf"), "metrics": -1, "scores": 2.5})
    # Non-positive and non-finite days are ignored (the signal keeps its TTL), fractions floored.
    assert repository.retention_days == {"tracing": 5, "scores": 2, "feedback": 5}
    with pytest.raises(NotSupportedError) as error:
        repository.prune(policies={"spans": {"max_age": "1d"}})
    assert error.value.id == "STORAGE_CLICKHOUSE_PRUNE_NOT_SUPPORTED"
    assert "retention=" in error.value.message and "ttl_days" in error.value.message
    repository.close()
