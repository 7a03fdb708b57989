"""Observability domain, current ("vNext") layout on PostgreSQL and SQLite: the span event table
and PostgreSQL's discovery cache (observability-vnext.md §5, §6).

Unlike ClickHouse, these databases keep one table of spans, ``mastra_span_events``, written
event-sourced: a span's start row (``isPending``) and its end row coexist, told apart by
``endedAt`` (part of the key), and reads pick the current row.  Roots and branch anchors are
rows of the same table (PostgreSQL serves them with partial indexes).  :data:`SPAN_EVENT_COLUMNS`
is the one description of the table: the DDL of both databases, the peewee fields and the
catalog test are built from it; its order and types are the framework's (``@mastra/pg`` 1.27.1
``signal-schema.ts``).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, NamedTuple

import peewee

from ..values import JSONText, format_iso, json_dumps, json_loads, parse_iso, to_utc, truncate_ms
from .base import base_model, named

SPAN_EVENTS = "mastra_span_events"
DISCOVERY = "mastra_observability_discovery"
#: The column the span table is partitioned on by day (PostgreSQL).
SPAN_PARTITION_COLUMN = "endedAt"
#: The span table's key: a PostgreSQL primary key, a SQLite ``UNIQUE`` constraint.
SPAN_KEY = ("traceId", "spanId", "endedAt")


class Column(NamedTuple):
    """One column of a table of this layout."""

    #: The column name (camelCase, as the framework names it).
    name: str
    #: The record field it holds (``""``: bookkeeping only).
    field: str
    #: The PostgreSQL type (``text``, ``boolean``, ``timestamptz``, ``jsonb``, ``text[]``, …).
    pg_type: str
    nullable: bool = False
    #: The PostgreSQL default clause, verbatim (``None``: none).
    default: str | None = None


def _text(name: str, field: str, nullable: bool = True) -> Column:
    return Column(name, field, "text", nullable)


#: The columns of ``mastra_span_events`` in the framework's order (§5).
SPAN_EVENT_COLUMNS = (
    Column("cursorId", "cursor_id", "bigserial"),
    Column("xactId", "xact_id", "xid8", default="pg_current_xact_id()"),
    _text("traceId", "trace_id", False),
    _text("spanId", "span_id", False),
    _text("parentSpanId", "parent_span_id"),
    _text("experimentId", "experiment_id"),
    _text("entityType", "entity_type"),
    _text("entityId", "entity_id"),
    _text("entityName", "entity_name"),
    _text("entityVersionId", "entity_version_id"),
    _text("parentEntityType", "parent_entity_type"),
    _text("parentEntityId", "parent_entity_id"),
    _text("parentEntityName", "parent_entity_name"),
    _text("parentEntityVersionId", "parent_entity_version_id"),
    _text("rootEntityType", "root_entity_type"),
    _text("rootEntityId", "root_entity_id"),
    _text("rootEntityName", "root_entity_name"),
    _text("rootEntityVersionId", "root_entity_version_id"),
    _text("userId", "user_id"),
    _text("organizationId", "organization_id"),
    _text("resourceId", "resource_id"),
    _text("runId", "run_id"),
    _text("sessionId", "session_id"),
    _text("threadId", "thread_id"),
    _text("requestId", "request_id"),
    _text("environment", "environment"),
    _text("executionSource", "source"),
    _text("serviceName", "service_name"),
    _text("name", "name", False),
    _text("spanType", "span_type", False),
    Column("isEvent", "is_event", "boolean", default="false"),
    Column("isPending", "is_pending", "boolean", default="false"),
    Column("startedAt", "started_at", "timestamptz"),
    Column("endedAt", "ended_at", "timestamptz"),
    Column("tags", "tags", "text[]", default="'{}'"),
    Column("metadataSearch", "metadata_search", "jsonb", default="'{}'::jsonb"),
    Column("attributes", "attributes", "jsonb", True),
    Column("scope", "scope", "jsonb", True),
    Column("links", "links", "jsonb", True),
    Column("input", "input", "jsonb", True),
    Column("output", "output", "jsonb", True),
    Column("error", "error", "jsonb", True),
    Column("metadataRaw", "metadata", "jsonb", True),
    Column("requestContext", "request_context", "jsonb", True),
)
#: The discovery cache of PostgreSQL (§5; SQLite computes discovery on every call).
DISCOVERY_COLUMNS = (
    Column("cacheKey", "cache_key", "text"),
    Column("refreshedAt", "refreshed_at", "timestamptz"),
    Column("values", "values", "jsonb", default="'[]'::jsonb"),
)


class Index(NamedTuple):
    """One index of §5 (SQLite keeps the btree ones, same names)."""

    name: str
    #: The parenthesized column list, verbatim.
    columns: str
    using: str | None = None
    where: str | None = None


_ROOT = '"parentSpanId" IS NULL'
#: The indexes of ``mastra_span_events`` (§5), in the framework's order.
SPAN_EVENT_INDEXES = (
    Index("mastra_span_events_traceid_idx", '("traceId", "endedAt" DESC)'),
    Index("mastra_span_events_parentspan_idx", '("parentSpanId", "endedAt" DESC)'),
    Index("mastra_span_events_name_idx", '("name")'),
    Index("mastra_span_events_spantype_idx", '("spanType", "startedAt" DESC)'),
    Index("mastra_span_events_entity_idx", '("entityType", "entityId")'),
    Index("mastra_span_events_orgid_userid_idx", '("organizationId", "userId")'),
    Index("mastra_span_events_metadatasearch_gin", '("metadataSearch" jsonb_path_ops)', "gin"),
    Index("mastra_span_events_tags_gin", '("tags")', "gin"),
    Index("mastra_span_events_root_startedat_idx", '("startedAt" DESC)', where=_ROOT),
    Index("mastra_span_events_root_endedat_idx", '("endedAt" DESC)', where=_ROOT),
    Index("mastra_span_events_root_spantype_idx", '("spanType", "startedAt" DESC)', where=_ROOT),
    Index("mastra_span_events_root_entityname_idx", '("entityType", "entityName", "startedAt" DESC)', where=_ROOT),
    Index("mastra_span_events_root_traceid_idx", '("traceId")', where=_ROOT),
    Index("mastra_span_events_cursor_idx", '("xactId", "cursorId")'),
)
#: Columns added to tables an older framework version created (probed first, §5).
ADDED_COLUMNS = ((SPAN_EVENTS, "isPending", 'boolean NOT NULL DEFAULT false'),)


def pg_column_sql(column: Column) -> str:
    """A column definition as the framework writes it: ``"<name>" <type>[ NOT NULL][ DEFAULT …]``."""
    return (f'"{column.name}" {column.pg_type}' + ("" if column.nullable else " NOT NULL")
            + (f" DEFAULT {column.default}" if column.default else ""))


#: SQLite's type of each PostgreSQL type (§6).
_SQLITE_TYPES = {"text": "TEXT", "boolean": "INTEGER", "timestamptz": "TEXT", "double precision": "REAL",
                 "jsonb": "TEXT", "text[]": "TEXT"}
#: SQLite's default of each PostgreSQL default (§6).
_SQLITE_DEFAULTS = {"false": "0", "'{}'": "'[]'", "'{}'::jsonb": "'{}'", "'[]'::jsonb": "'[]'",
                    "'needs-review'": "'needs-review'"}


def sqlite_column_sql(column: Column) -> str | None:
    """The SQLite definition of a column (§6), ``None`` for one SQLite has not (``xactId``)."""
    if column.pg_type == "xid8":
        return None
    if column.pg_type == "bigserial":
        return f'"{column.name}" INTEGER PRIMARY KEY AUTOINCREMENT'
    default = _SQLITE_DEFAULTS[column.default] if column.default else None
    return (f'"{column.name}" {_SQLITE_TYPES[column.pg_type]}' + ("" if column.nullable else " NOT NULL")
            + (f" DEFAULT {default}" if default else ""))


# --------------------------------------------------------------------------- peewee fields per database


class InstantField(peewee.Field):
    """``timestamptz`` (PostgreSQL: aware datetimes both ways) or ISO text with ``Z`` (SQLite)."""

    field_type = "TIMESTAMPTZ"

    def __init__(self, *, text: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.text = text

    def db_value(self, value: Any) -> Any:
        if value is None or (self.text and isinstance(value, str)):
            return value
        return format_iso(to_utc(value)) if self.text else to_utc(value)

    def python_value(self, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, str):
            return parse_iso(value)
        return truncate_ms(to_utc(value))


class JSONValueField(peewee.Field):
    """``jsonb`` (PostgreSQL) or compact JSON text (SQLite); reads decode text (the driver decodes
    ``jsonb`` itself).  Written values are :class:`~composite_store.values.JSONText` already."""

    field_type = "JSON"

    def db_value(self, value: Any) -> Any:
        if value is None or isinstance(value, str):
            return value
        return json_dumps(value)

    def python_value(self, value: Any) -> Any:
        return json_loads(value) if isinstance(value, (str, bytes)) else value


class TagsField(peewee.Field):
    """``text[]`` (PostgreSQL: a list both ways) or a JSON array as text (SQLite)."""

    field_type = "TAGS"

    def __init__(self, *, text: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.text = text

    def db_value(self, value: Any) -> Any:
        value = list(value or ())
        return JSONText(json_dumps(value)) if self.text else value

    def python_value(self, value: Any) -> Any:
        if isinstance(value, (str, bytes)):
            value = json_loads(value)
        return list(value) if isinstance(value, (list, tuple)) else []


def _field(column: Column, text: bool) -> peewee.Field:
    """The peewee field of one column on PostgreSQL (``text=False``) or SQLite (``text=True``)."""
    options = {"column_name": column.name, "null": column.nullable}
    if column.pg_type == "timestamptz":
        return InstantField(text=text, **options)
    if column.pg_type == "boolean":
        return peewee.BooleanField(**options)
    if column.pg_type == "text[]":
        return TagsField(text=text, **options)
    if column.pg_type == "jsonb":
        return JSONValueField(**options)
    if column.pg_type in ("bigserial", "xid8"):
        return peewee.BigIntegerField(**options)
    return peewee.TextField(**options)


def build_observability_vnext_sql_models(database: peewee.DatabaseProxy, *, postgres: bool) -> SimpleNamespace:
    """Declare the tables of this layout bound to ``database``: ``span_event`` and, on PostgreSQL,
    ``discovery``.  The fields convert values for that database (``postgres``); the tables are
    created by hand-written DDL (partitions, exact types), never by peewee."""
    Base = base_model(database)
    text = not postgres

    def model(class_name: str, table: str, columns: tuple[Column, ...], key: tuple[str, ...]) -> type[peewee.Model]:
        attrs: dict[str, Any] = {column.field: _field(column, text) for column in columns
                                 if postgres or column.pg_type != "xid8"}
        meta = type("Meta", (), {"table_name": table, "primary_key": peewee.CompositeKey(*key)})
        return named(type(class_name, (Base,), {**attrs, "Meta": meta}), table)

    models = SimpleNamespace(span_event=model("SpanEventSQL", SPAN_EVENTS, SPAN_EVENT_COLUMNS,
                                              ("trace_id", "span_id", "ended_at")))
    if postgres:
        models.discovery = model("ObservabilityDiscovery", DISCOVERY, DISCOVERY_COLUMNS, ("cache_key",))
    return models
