"""Observability domain, current ("vNext") layout on ClickHouse: the tracing tables
(observability-vnext.md §3.2).

Spans are written once into ``mastra_span_events``; two materialized views copy the roots into
``mastra_trace_roots`` and the spans of the branch types into ``mastra_trace_branches``.  The
three tables have the same columns (the views are ``SELECT *``), the engine
``ReplacingMergeTree`` without a version column, and are deduplicated when read (``LIMIT 1 BY
dedupeKey``), never with ``FINAL``.  The exact column types of current servers are declared here
(:data:`SPAN_COLUMNS`); the DDL for a server, and the 18.16 types, are built in
``repository/observability/vnext_clickhouse.py``.
"""

from __future__ import annotations

from types import SimpleNamespace

import peewee

from .base import ClickHouseTable, base_model, named
from .fields import JSONField, TextField, TimestampField

SPAN_EVENTS = "mastra_span_events"
TRACE_ROOTS = "mastra_trace_roots"
TRACE_BRANCHES = "mastra_trace_branches"
#: The span types the branches view copies: the framework's literal list of 7 (its core list,
#: ``observability.records.BRANCH_SPAN_TYPES``, also has mcp_server_request and provider_tool_call).
BRANCH_SPAN_TYPES = ("agent_run", "workflow_run", "processor_run", "scorer_run", "rag_ingestion", "tool_call",
                     "mcp_tool_call")
#: Materialized view → (target table, the condition on ``mastra_span_events`` it copies).
VIEWS = {
    "mastra_mv_trace_roots": (TRACE_ROOTS, "parentSpanId IS NULL"),
    "mastra_mv_trace_branches": (TRACE_BRANCHES, "spanType IN ({})".format(
        ", ".join(f"'{span_type}'" for span_type in BRANCH_SPAN_TYPES))),
}
#: The sorting key of each tracing table.
ORDER_BY = {
    SPAN_EVENTS: ("traceId", "endedAt", "spanId", "dedupeKey"),
    TRACE_ROOTS: ("startedAt", "traceId", "dedupeKey"),
    TRACE_BRANCHES: ("spanType", "startedAt", "traceId", "dedupeKey"),
}
PARTITION_COLUMN = "endedAt"
#: The columns picking a row's shard on a cluster, in every tracing table: a trace's rows (its
#: span events, root and branches) on one shard, so one trace is read and deduplicated there.
SHARD_KEY = ("traceId",)

_ENTITY = (
    ("entityType", "entity_type", "LowCardinality(Nullable(String))"),
    ("entityId", "entity_id", "Nullable(String)"),
    ("entityName", "entity_name", "Nullable(String)"),
    ("entityVersionId", "entity_version_id", "Nullable(String)"),
    ("parentEntityVersionId", "parent_entity_version_id", "Nullable(String)"),
    ("parentEntityType", "parent_entity_type", "LowCardinality(Nullable(String))"),
    ("parentEntityId", "parent_entity_id", "Nullable(String)"),
    ("parentEntityName", "parent_entity_name", "Nullable(String)"),
    ("rootEntityVersionId", "root_entity_version_id", "Nullable(String)"),
    ("rootEntityType", "root_entity_type", "LowCardinality(Nullable(String))"),
    ("rootEntityId", "root_entity_id", "Nullable(String)"),
    ("rootEntityName", "root_entity_name", "Nullable(String)"),
)
_CONTEXT = (
    ("userId", "user_id", "Nullable(String)"),
    ("organizationId", "organization_id", "Nullable(String)"),
    ("resourceId", "resource_id", "Nullable(String)"),
    ("runId", "run_id", "Nullable(String)"),
    ("sessionId", "session_id", "Nullable(String)"),
    ("threadId", "thread_id", "Nullable(String)"),
    ("requestId", "request_id", "Nullable(String)"),
    ("environment", "environment", "LowCardinality(Nullable(String))"),
    ("executionSource", "source", "LowCardinality(Nullable(String))"),
    ("serviceName", "service_name", "LowCardinality(Nullable(String))"),
)
#: ``(column, field, type on current servers)`` of the three tracing tables, in column order.
SPAN_COLUMNS = (
    ("dedupeKey", "dedupe_key", "String"),
    ("traceId", "trace_id", "String"),
    ("spanId", "span_id", "String"),
    ("parentSpanId", "parent_span_id", "Nullable(String)"),
    ("experimentId", "experiment_id", "Nullable(String)"),
    *_ENTITY,
    *_CONTEXT,
    ("name", "name", "String"),
    ("spanType", "span_type", "LowCardinality(String)"),
    ("isEvent", "is_event", "Bool DEFAULT false"),
    ("startedAt", "started_at", "DateTime64(3, 'UTC')"),
    ("endedAt", "ended_at", "DateTime64(3, 'UTC')"),
    ("tags", "tags", "Array(LowCardinality(String)) DEFAULT []"),
    ("metadataSearch", "metadata_search", "Map(LowCardinality(String), String) DEFAULT map()"),
    ("attributes", "attributes", "Nullable(String)"),
    ("scope", "scope", "Nullable(String)"),
    ("links", "links", "Nullable(String)"),
    ("input", "input", "Nullable(String)"),
    ("output", "output", "Nullable(String)"),
    ("error", "error", "Nullable(String)"),
    ("metadataRaw", "metadata", "Nullable(String)"),
    ("requestContext", "request_context", "Nullable(String)"),
)
#: Columns that later versions of the layout added (``init()`` adds them to older tables).
ADDED_COLUMNS = ("entityVersionId", "parentEntityVersionId", "rootEntityVersionId")
#: Columns holding JSON text.
JSON_COLUMNS = ("attributes", "scope", "links", "input", "output", "error", "metadataRaw", "requestContext")


def _field(column: str, column_type: str) -> peewee.Field:
    """The peewee field of one column (its type only picks the value conversion)."""
    if column_type.startswith("DateTime64"):
        return TimestampField(column_name=column)
    if column_type.startswith("Bool"):
        return peewee.BooleanField(column_name=column)
    if column_type.startswith(("Array", "Map")):
        return peewee.Field(column_name=column)  # lists and dicts go to the driver as they are
    if column in JSON_COLUMNS:
        return JSONField(column_name=column, null=True)
    return TextField(column_name=column, null=column_type.startswith(("Nullable", "LowCardinality(Nullable")))


def build_observability_vnext_models(database: peewee.DatabaseProxy) -> SimpleNamespace:
    """Declare the three tracing tables bound to ``database``; returns ``span_event``,
    ``trace_root`` and ``trace_branch`` (same fields, in :data:`SPAN_COLUMNS` order)."""
    Base = base_model(database)

    def model(class_name: str, table: str) -> type[peewee.Model]:
        attrs = {field: _field(column, column_type) for column, field, column_type in SPAN_COLUMNS}
        meta = type("Meta", (), {"table_name": table, "primary_key": False,
                                 "clickhouse": ClickHouseTable(order_by=ORDER_BY[table], insert_only=True,
                                                                               shard_key=SHARD_KEY)})
        return named(type(class_name, (Base,), {**attrs, "Meta": meta}), table)

    return SimpleNamespace(span_event=model("SpanEvent", SPAN_EVENTS), trace_root=model("TraceRoot", TRACE_ROOTS),
                           trace_branch=model("TraceBranch", TRACE_BRANCHES))
