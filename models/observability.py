"""Observability domain model: ``mastra_ai_spans``, one row per span of a trace.

A span is keyed by ``(traceId, spanId)``.  peewee knows that pair as the model's composite
primary key (the conflict target of upserts, the record key on ClickHouse); the table itself
carries the key the reference layout gives it, which the repository creates: ``UNIQUE ("spanId",
"traceId")`` on SQLite, the named primary key ``<schema>_mastra_ai_spans_traceid_spanid_pk`` on
PostgreSQL, the sorting key ``(traceId, spanId)`` on ClickHouse.
"""

from __future__ import annotations

from types import SimpleNamespace

import peewee

from .base import ClickHouseTable, Index, base_model
from .fields import JSONField, TextField, TimestampField

TABLE = "mastra_ai_spans"

#: Roots are the spans without a parent; both SQL databases index them for ``list_traces``.
ROOT_PREDICATE = '"parentSpanId" IS NULL'

SQLITE_INDEXES = (
    Index("mastra_ai_spans_spanid_traceid_idx", '"spanId", "traceId"', unique=True),
    Index("mastra_ai_spans_trace_started_at_idx", '"traceId", "startedAt"'),
    Index("mastra_ai_spans_roots_started_at_idx", '"startedAt" DESC', where=ROOT_PREDICATE),
)

POSTGRES_INDEXES = (
    Index("mastra_ai_spans_traceid_startedat_idx", '"traceId", "startedAt" DESC'),
    Index("mastra_ai_spans_parentspanid_startedat_idx", '"parentSpanId", "startedAt" DESC'),
    Index("mastra_ai_spans_name_idx", "name"),
    Index("mastra_ai_spans_spantype_startedat_idx", '"spanType", "startedAt" DESC'),
    Index("mastra_ai_spans_root_spans_idx", '"startedAt" DESC', where=ROOT_PREDICATE),
    Index("mastra_ai_spans_entitytype_entityid_idx", '"entityType", "entityId"'),
    Index("mastra_ai_spans_entitytype_entityname_idx", '"entityType", "entityName"'),
    Index("mastra_ai_spans_orgid_userid_idx", '"organizationId", "userId"'),
    Index("mastra_ai_spans_metadata_gin_idx", "metadata", method="gin"),
    Index("mastra_ai_spans_tags_gin_idx", "tags", method="gin"),
)


def build_observability_models(database: peewee.DatabaseProxy, *, clickhouse: bool = False) -> SimpleNamespace:
    """Declare the span model bound to ``database``; returns ``span``.

    Fields follow the column order of the reference ``CREATE TABLE`` (observability.md §4.1).
    ``updatedAt`` is nullable in the SQL layouts but a plain timestamp on ClickHouse
    (``clickhouse=True``), like ``createdAt``.
    """
    Base = base_model(database)

    class Span(Base):
        trace_id = TextField(column_name="traceId")
        span_id = TextField(column_name="spanId")
        name = TextField(column_name="name")
        span_type = TextField(column_name="spanType")
        is_event = peewee.BooleanField(column_name="isEvent")
        started_at = TimestampField(column_name="startedAt")
        parent_span_id = TextField(column_name="parentSpanId", null=True)
        entity_type = TextField(column_name="entityType", null=True)
        entity_id = TextField(column_name="entityId", null=True)
        entity_name = TextField(column_name="entityName", null=True)
        parent_entity_type = TextField(column_name="parentEntityType", null=True)
        parent_entity_id = TextField(column_name="parentEntityId", null=True)
        parent_entity_name = TextField(column_name="parentEntityName", null=True)
        root_entity_type = TextField(column_name="rootEntityType", null=True)
        root_entity_id = TextField(column_name="rootEntityId", null=True)
        root_entity_name = TextField(column_name="rootEntityName", null=True)
        user_id = TextField(column_name="userId", null=True)
        organization_id = TextField(column_name="organizationId", null=True)
        resource_id = TextField(column_name="resourceId", null=True)
        run_id = TextField(column_name="runId", null=True)
        session_id = TextField(column_name="sessionId", null=True)
        thread_id = TextField(column_name="threadId", null=True)
        request_id = TextField(column_name="requestId", null=True)
        environment = TextField(column_name="environment", null=True)
        service_name = TextField(column_name="serviceName", null=True)
        scope = JSONField(column_name="scope", null=True)
        entity_version_id = TextField(column_name="entityVersionId", null=True)
        parent_entity_version_id = TextField(column_name="parentEntityVersionId", null=True)
        root_entity_version_id = TextField(column_name="rootEntityVersionId", null=True)
        experiment_id = TextField(column_name="experimentId", null=True)
        source = TextField(column_name="source", null=True)
        metadata = JSONField(column_name="metadata", null=True)
        tags = JSONField(column_name="tags", null=True)
        attributes = JSONField(column_name="attributes", null=True)
        links = JSONField(column_name="links", null=True)
        input = JSONField(column_name="input", null=True)
        output = JSONField(column_name="output", null=True)
        error = JSONField(column_name="error", null=True)
        ended_at = TimestampField(column_name="endedAt", null=True)
        request_context = JSONField(column_name="requestContext", null=True)
        created_at = TimestampField(column_name="createdAt")
        updated_at = TimestampField(column_name="updatedAt", null=not clickhouse)

        class Meta:
            table_name = TABLE
            primary_key = peewee.CompositeKey("trace_id", "span_id")
            sqlite_indexes = SQLITE_INDEXES
            postgres_indexes = POSTGRES_INDEXES
            clickhouse = ClickHouseTable(order_by=("traceId", "spanId"), partition_by_month="createdAt",
                                         defaults={"metadata": "'{}'"}, ttl_column="createdAt")

    return SimpleNamespace(span=Span)
