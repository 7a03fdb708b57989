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

from .base import ClickHouseTable, Index, TableKey, base_model
from .fields import JSONField, TextField, TimestampField

TABLE = "mastra_ai_spans"

#: Roots are the spans without a parent; both SQL databases index them for ``list_traces``.
ROOT_PREDICATE = '"parentSpanId" IS NULL'

#: Columns of ``list_traces`` filters held by the roots' filter index: counting the roots that
#: match such a filter reads only that index (50,000 entries at 1M spans) instead of one table
#: page per root.
ROOT_FILTER_COLUMNS = ('"entityType", "entityId", "entityName", "userId", "organizationId", "environment", '
                       '"spanType", "endedAt", "tags"')
#: PostgreSQL: the root's filter-index entry fits a btree entry (at most 2,704 bytes), counting
#: jsonb at six times its text (its binary form of small numbers is that much bigger).  Roots
#: that do not fit are in the oversized-roots index instead; a count adds both parts.
ROOT_ENTRY_FITS = ('''octet_length(coalesce("entityType", '') || coalesce("entityId", '') '''
                   '''|| coalesce("entityName", '') || coalesce("userId", '') || coalesce("organizationId", '') '''
                   '''|| coalesce("environment", '') || coalesce("spanType", '')) '''
                   '''+ 6 * coalesce(octet_length("tags"::text), 0) <= 2400''')
#: PostgreSQL: the root has an error (``error_present``), for counts of ``status: "error"``.
ROOT_ERROR_PREDICATE = f'''{ROOT_PREDICATE} AND "error" IS NOT NULL AND "error" <> 'null'::jsonb'''

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

# The indexes above are Mastra's layout (§4.1/§4.2); init() adds these to it, also on databases
# Mastra created, so that counting the roots of a filtered list_traces reads a small index.
#: SQLite has no size limit on index entries: one index holds every root filter's columns.
SQLITE_LIST_INDEXES = (
    Index("mastra_ai_spans_roots_filters_idx",
          f'"startedAt" DESC, "parentSpanId", {ROOT_FILTER_COLUMNS}, "error", "metadata"', where=ROOT_PREDICATE),
)
POSTGRES_LIST_INDEXES = (
    Index("mastra_ai_spans_roots_filters_idx", '"startedAt" DESC', include=ROOT_FILTER_COLUMNS,
          where=f"{ROOT_PREDICATE} AND {ROOT_ENTRY_FITS}"),
    Index("mastra_ai_spans_roots_oversized_idx", '"startedAt" DESC',
          where=f"{ROOT_PREDICATE} AND NOT ({ROOT_ENTRY_FITS})"),
    Index("mastra_ai_spans_roots_error_idx", '"startedAt" DESC', where=ROOT_ERROR_PREDICATE),
)


def build_observability_models(database: peewee.DatabaseProxy) -> SimpleNamespace:
    """Declare the span model bound to ``database``; returns ``span``.

    Fields follow the column order of the reference ``CREATE TABLE`` (observability.md §4.1).
    ``updatedAt`` is nullable in the SQL layouts but a plain timestamp on ClickHouse
    (``ClickHouseTable.not_null``), like ``createdAt``.
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
        updated_at = TimestampField(column_name="updatedAt", null=True)

        class Meta:
            table_name = TABLE
            primary_key = peewee.CompositeKey("trace_id", "span_id")
            sqlite_indexes = SQLITE_INDEXES + SQLITE_LIST_INDEXES
            postgres_indexes = POSTGRES_INDEXES + POSTGRES_LIST_INDEXES
            table_key = TableKey(("traceId", "spanId"), name="{schema}_mastra_ai_spans_traceid_spanid_pk",
                                 primary=True, sqlite_constraint='UNIQUE ("spanId", "traceId")',
                                 sqlite_index="mastra_ai_spans_spanid_traceid_idx",
                                 duplicates_code="DUPLICATE_SPANS",
                                 duplicates_remedy="migrate_spans() keeps one row per span and adds the key")
            clickhouse = ClickHouseTable(order_by=("traceId", "spanId"), partition_by_month="createdAt",
                                         defaults={"metadata": "'{}'"}, ttl_column="createdAt",
                                         not_null=("updatedAt",), shard_key=("traceId",))

    return SimpleNamespace(span=Span)
