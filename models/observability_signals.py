"""Observability signals of the current ("vNext") layout: logs, metrics, score events and
feedback (observability-vnext.md §2.2–2.5, §3.3, §4, §5, §6).

Each signal is one table with the same name on every database.  Its columns are declared once
here, with the exact types of each database's reference DDL:

* ClickHouse, current servers (§3.3): ``ReplacingMergeTree`` without a version column, the
  column order of the framework's ``ddl.ts``; 18.16 takes the downgraded types of §4, derived in
  ``repository/observability/signals_clickhouse.py``.
* PostgreSQL (§5): ``"cursorId" bigserial``, ``"xactId" xid8`` first, then the signal's own
  columns in another order; nullable columns are marked ``?`` in :data:`PG_TYPES`.
* SQLite (§6): PostgreSQL's column list without ``xactId``, its types mapped by
  :func:`sqlite_type`.

The peewee models (:func:`build_observability_signal_models`) carry one field per column, named
after the record key (``metricId`` → ``metric_id``); the DDL is written from the tables here, not
by peewee, since the reference types (``xid8``, ``text[]``, ``Map``, ``LowCardinality``) are
outside peewee's vocabulary.
"""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import peewee

from .base import ClickHouseTable, base_model, named
from .fields import JSONField, TextField

LOG_EVENTS = "mastra_log_events"
METRIC_EVENTS = "mastra_metric_events"
SCORE_EVENTS = "mastra_score_events"
FEEDBACK_EVENTS = "mastra_feedback_events"
#: Signal (the key of ``retention={…}`` and of ``prune`` policies) → its table.
SIGNAL_TABLES = {"logs": LOG_EVENTS, "metrics": METRIC_EVENTS, "scores": SCORE_EVENTS, "feedback": FEEDBACK_EVENTS}
#: Table → the column its PostgreSQL daily partitions (and ClickHouse's) are ranges of.
PARTITION_COLUMNS = {table: "timestamp" for table in SIGNAL_TABLES.values()}
#: Table → the column holding each record's id (the record key is its snake_case name).
ID_COLUMNS = {LOG_EVENTS: "logId", METRIC_EVENTS: "metricId", SCORE_EVENTS: "scoreId", FEEDBACK_EVENTS: "feedbackId"}
#: Table → the attribute of its model on the models namespace.
MODEL_NAMES = {LOG_EVENTS: "log_event", METRIC_EVENTS: "metric_event", SCORE_EVENTS: "score_event",
               FEEDBACK_EVENTS: "feedback_event"}

# ------------------------------------------------------------------ ClickHouse, current servers (§3.1, §3.3)

_NULLABLE = "Nullable(String)"
_LC_NULLABLE = "LowCardinality(Nullable(String))"
CH_ENTITY = (
    ("entityType", _LC_NULLABLE), ("entityId", _NULLABLE), ("entityName", _NULLABLE),
    ("entityVersionId", _NULLABLE), ("parentEntityVersionId", _NULLABLE), ("parentEntityType", _LC_NULLABLE),
    ("parentEntityId", _NULLABLE), ("parentEntityName", _NULLABLE), ("rootEntityVersionId", _NULLABLE),
    ("rootEntityType", _LC_NULLABLE), ("rootEntityId", _NULLABLE), ("rootEntityName", _NULLABLE),
)
CH_CONTEXT = (
    ("userId", _NULLABLE), ("organizationId", _NULLABLE), ("resourceId", _NULLABLE), ("runId", _NULLABLE),
    ("sessionId", _NULLABLE), ("threadId", _NULLABLE), ("requestId", _NULLABLE), ("environment", _LC_NULLABLE),
    ("executionSource", _LC_NULLABLE), ("serviceName", _LC_NULLABLE),
)
_TIMESTAMP = ("timestamp", "DateTime64(3, 'UTC')")
_TAGS = ("tags", "Array(LowCardinality(String)) DEFAULT []")
_JSON_TAIL = (("metadata", _NULLABLE), ("scope", _NULLABLE))

#: Table → ``(column, type on current servers)`` in column order.
CH_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    METRIC_EVENTS: (
        _TIMESTAMP, ("metricId", "String"), ("traceId", _NULLABLE), ("spanId", _NULLABLE),
        ("experimentId", _NULLABLE), *CH_ENTITY, *CH_CONTEXT,
        ("name", "LowCardinality(String)"), ("value", "Float64"), ("provider", _LC_NULLABLE), ("model", _NULLABLE),
        ("estimatedCost", "Nullable(Float64)"), ("costUnit", _LC_NULLABLE), _TAGS,
        ("labels", "Map(LowCardinality(String), String) DEFAULT map()"), ("costMetadata", _NULLABLE), *_JSON_TAIL,
    ),
    LOG_EVENTS: (
        _TIMESTAMP, ("logId", "String"), ("traceId", _NULLABLE), ("spanId", _NULLABLE), ("experimentId", _NULLABLE),
        *CH_ENTITY, *CH_CONTEXT,
        ("level", "LowCardinality(String)"), ("message", "String"), _TAGS, ("data", _NULLABLE), *_JSON_TAIL,
    ),
    SCORE_EVENTS: (
        _TIMESTAMP, ("scoreId", "String"), ("traceId", _NULLABLE), ("spanId", _NULLABLE),
        ("experimentId", _NULLABLE), ("scoreTraceId", _NULLABLE), *CH_ENTITY, *CH_CONTEXT,
        ("scorerId", "LowCardinality(String)"), ("scorerVersion", _LC_NULLABLE), ("scoreSource", _LC_NULLABLE),
        ("score", "Float64"), ("reason", _NULLABLE), _TAGS, *_JSON_TAIL,
    ),
    FEEDBACK_EVENTS: (
        _TIMESTAMP, ("feedbackId", "String"), ("traceId", _NULLABLE), ("spanId", _NULLABLE),
        ("experimentId", _NULLABLE), *CH_ENTITY, *CH_CONTEXT,
        ("feedbackUserId", _NULLABLE), ("sourceId", _NULLABLE), ("feedbackSource", "LowCardinality(String)"),
        ("feedbackType", "LowCardinality(String)"), ("valueString", _NULLABLE), ("valueNumber", "Nullable(Float64)"),
        ("comment", _NULLABLE), _TAGS, *_JSON_TAIL,
    ),
}
#: Table → its sorting key (§3.3).
CH_ORDER_BY = {
    METRIC_EVENTS: ("name", "timestamp", "metricId"),
    LOG_EVENTS: ("timestamp", "logId"),
    SCORE_EVENTS: ("traceId", "timestamp", "scoreId"),
    FEEDBACK_EVENTS: ("traceId", "timestamp", "feedbackId"),
}
#: Tables whose sorting key holds a ``Nullable`` column (``SETTINGS allow_nullable_key = 1``).
CH_NULLABLE_KEY = (SCORE_EVENTS, FEEDBACK_EVENTS)
#: Columns of ``mastra_metric_events`` with a ``bloom_filter(0.01) GRANULARITY 2`` skip index.
CH_BLOOM_COLUMNS = {METRIC_EVENTS: ("traceId", "threadId", "resourceId", "userId", "organizationId", "experimentId",
                                    "runId", "sessionId", "requestId")}
#: Columns that later versions of the layout added (``init()`` adds them to older tables, §3.2).
CH_ADDED_COLUMNS = ("entityVersionId", "parentEntityVersionId", "rootEntityVersionId")

# ------------------------------------------------------------------ PostgreSQL (§5) and SQLite (§6)

_COMMON = ("traceId", "spanId", "experimentId", "entityType", "entityId", "entityName", "entityVersionId",
           "parentEntityType", "parentEntityId", "parentEntityName", "parentEntityVersionId", "rootEntityType",
           "rootEntityId", "rootEntityName", "rootEntityVersionId", "userId", "organizationId", "resourceId", "runId",
           "sessionId", "threadId", "requestId", "environment", "executionSource", "serviceName")
PG_COMMON = tuple((column, "text?") for column in _COMMON)
_PG_TAGS = ("tags", "text[] DEFAULT '{}'")
_PG_JSON_TAIL = (("metadata", "jsonb?"), ("scope", "jsonb?"))
#: The two columns every PostgreSQL signal table starts with (SQLite: ``cursorId`` only).
PG_CURSOR = (("cursorId", "bigserial"), ("xactId", "xid8 DEFAULT pg_current_xact_id()"))
#: Table → ``(column, PostgreSQL type)`` after :data:`PG_CURSOR`; ``?`` marks a nullable column,
#: every other column is ``NOT NULL``.
PG_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    METRIC_EVENTS: (
        ("metricId", "text"), ("timestamp", "timestamptz"), ("name", "text"), ("value", "double precision"),
        *PG_COMMON, ("provider", "text?"), ("model", "text?"), ("estimatedCost", "double precision?"),
        ("costUnit", "text?"), _PG_TAGS, ("labels", "jsonb DEFAULT '{}'::jsonb"), ("costMetadata", "jsonb?"),
        *_PG_JSON_TAIL,
    ),
    LOG_EVENTS: (
        ("logId", "text"), ("timestamp", "timestamptz"), ("level", "text"), ("message", "text"), *PG_COMMON,
        _PG_TAGS, ("data", "jsonb?"), *_PG_JSON_TAIL,
    ),
    SCORE_EVENTS: (
        ("scoreId", "text"), ("timestamp", "timestamptz"), ("scorerId", "text"), ("scorerVersion", "text?"),
        ("scoreSource", "text?"), ("score", "double precision"), ("reason", "text?"), *PG_COMMON,
        ("scoreTraceId", "text?"), _PG_TAGS, *_PG_JSON_TAIL,
    ),
    FEEDBACK_EVENTS: (
        ("feedbackId", "text"), ("timestamp", "timestamptz"), ("feedbackSource", "text"), ("feedbackType", "text"),
        ("valueString", "text?"), ("valueNumber", "double precision?"), ("comment", "text?"),
        ("feedbackUserId", "text?"), ("sourceId", "text?"), ("reviewStatus", "text DEFAULT 'needs-review'"),
        *PG_COMMON, _PG_TAGS, *_PG_JSON_TAIL,
    ),
}
#: Columns ``init()`` adds to an older PostgreSQL/SQLite table that lacks them (§5).
PG_ADDED_COLUMNS = {FEEDBACK_EVENTS: ("reviewStatus",)}
#: Table → ``(index suffix, column SQL, method)``: the indexes of §5, named ``<table>_<suffix>``.
#: SQLite creates the btree ones only (no GIN, no cursor index: §6).
PG_INDEXES: dict[str, tuple[tuple[str, str, str | None], ...]] = {
    METRIC_EVENTS: (
        ("name_ts_idx", '"name", "timestamp" DESC', None),
        ("entity_idx", '"entityType", "entityId", "timestamp" DESC', None),
        ("traceid_idx", '"traceId"', None),
        ("labels_gin", '"labels"', "gin"),
        ("tags_gin", '"tags"', "gin"),
        ("cursor_idx", '"xactId", "cursorId"', None),
    ),
    LOG_EVENTS: (
        ("ts_idx", '"timestamp" DESC', None),
        ("level_ts_idx", '"level", "timestamp" DESC', None),
        ("traceid_idx", '"traceId"', None),
        ("entity_idx", '"entityType", "entityId", "timestamp" DESC', None),
        ("tags_gin", '"tags"', "gin"),
        ("cursor_idx", '"xactId", "cursorId"', None),
    ),
    SCORE_EVENTS: (
        ("traceid_idx", '"traceId", "timestamp" DESC', None),
        ("scorerid_idx", '"scorerId", "timestamp" DESC', None),
        ("entity_idx", '"entityType", "entityId", "timestamp" DESC', None),
        ("tags_gin", '"tags"', "gin"),
        ("scoreid_cursor_idx", '"scoreId", "cursorId" DESC', None),
        ("cursor_idx", '"xactId", "cursorId"', None),
    ),
    FEEDBACK_EVENTS: (
        ("traceid_idx", '"traceId", "timestamp" DESC', None),
        ("type_idx", '"feedbackType", "timestamp" DESC', None),
        ("entity_idx", '"entityType", "entityId", "timestamp" DESC', None),
        ("tags_gin", '"tags"', "gin"),
        ("cursor_idx", '"xactId", "cursorId"', None),
    ),
}


def pg_column_sql(column: str, spec: str) -> str:
    """``"<column>" <type>[ NOT NULL][ DEFAULT …]`` of one :data:`PG_COLUMNS` entry (§5)."""
    column_type, _, default = spec.partition(" DEFAULT ")
    nullable = column_type.endswith("?")
    sql = f'"{column}" {column_type.rstrip("?")}' + ("" if nullable else " NOT NULL")
    return f"{sql} DEFAULT {default}" if default else sql


def sqlite_type(spec: str) -> str:
    """The SQLite form of a :data:`PG_COLUMNS` type (§6): ``text[]`` a JSON array, ``jsonb``
    JSON text, timestamps ISO text, ``NOT NULL``/``DEFAULT`` as on PostgreSQL."""
    column_type, _, default = spec.partition(" DEFAULT ")
    base = column_type.rstrip("?")
    mapped = {"text": "TEXT", "timestamptz": "TEXT", "double precision": "REAL", "jsonb": "TEXT", "boolean": "INTEGER",
              "text[]": "TEXT"}[base]
    if base == "text[]":
        default = "'[]'"
    elif base == "jsonb" and default:
        default = "'{}'"
    sql = mapped + ("" if column_type.endswith("?") else " NOT NULL")
    return f"{sql} DEFAULT {default}" if default else sql


def field_name(column: str) -> str:
    """The record key (and model field) of a column: ``metricId`` → ``metric_id``."""
    return re.sub(r"(?<!^)([A-Z])", r"_\1", column).lower()


#: Columns holding a JSON document (text on ClickHouse/SQLite, ``jsonb`` on PostgreSQL).
JSON_COLUMNS = frozenset({"data", "metadata", "scope", "costMetadata"})
#: Columns holding a number.
NUMBER_COLUMNS = frozenset({"value", "estimatedCost", "score", "valueNumber"})


class EventTimestampField(peewee.Field):
    """A signal's UTC timestamp, stored once: ``DateTime64(3, 'UTC')`` (18.16: epoch ms) on
    ClickHouse, ``timestamptz`` on PostgreSQL (no ``…Z`` companion column, unlike
    :class:`~.fields.TimestampField`), ISO text with ``Z`` on SQLite."""

    def db_value(self, value: Any) -> Any:
        return None if value is None else self.model._meta.database.timestamp_to_db(self, value)

    def python_value(self, value: Any) -> Any:
        return None if value is None else self.model._meta.database.timestamp_from_db(self, value)


def _field(column: str, flavor: str, nullable: bool) -> peewee.Field:
    """The peewee field of one column; its class only picks the value conversion."""
    if column == "timestamp":
        return EventTimestampField(column_name=column)
    if column in ("tags", "labels"):
        # Lists and dicts go to ClickHouse's Array/Map and PostgreSQL's text[] as they are;
        # labels are jsonb there, and both are JSON text on SQLite.
        if flavor == "sqlite" or (flavor == "postgres" and column == "labels"):
            return JSONField(column_name=column)
        return peewee.Field(column_name=column)
    if column in JSON_COLUMNS:
        return JSONField(column_name=column, null=True)
    if column in NUMBER_COLUMNS:
        return peewee.DoubleField(column_name=column, null=nullable)
    if column == "cursorId":
        return peewee.BigIntegerField(column_name=column)
    if column == "xactId":
        return peewee.Field(column_name=column)
    return TextField(column_name=column, null=nullable)


def columns_of(table: str, flavor: str) -> tuple[str, ...]:
    """The column names of ``table`` in order on a database of ``flavor`` (``clickhouse``,
    ``postgres`` or ``sqlite``)."""
    if flavor == "clickhouse":
        return tuple(column for column, _ in CH_COLUMNS[table])
    cursor = ("cursorId", "xactId") if flavor == "postgres" else ("cursorId",)
    return (*cursor, *(column for column, _ in PG_COLUMNS[table]))


def flavor_of(backend_name: str) -> str:
    """The column layout family of a backend (its ``name``: ``CLICKHOUSE``, ``PG``, ``SQLITE``)."""
    return {"CLICKHOUSE": "clickhouse", "PG": "postgres", "SQLITE": "sqlite"}[backend_name]


def build_observability_signal_models(database: peewee.DatabaseProxy, backend_name: str) -> SimpleNamespace:
    """Declare the four signal tables for a backend (``name``: ``CLICKHOUSE``, ``PG``,
    ``SQLITE``) bound to ``database``; returns ``log_event``, ``metric_event``, ``score_event``
    and ``feedback_event`` (fields in the table's column order, named by :func:`field_name`)."""
    flavor = flavor_of(backend_name)
    Base = base_model(database)
    nullable = {table: {column for column, spec in (CH_COLUMNS[table] if flavor == "clickhouse" else PG_COLUMNS[table])
                        if spec.endswith("?") or spec.startswith(("Nullable", "LowCardinality(Nullable"))}
                for table in ID_COLUMNS}
    models = {}
    for table, attribute in MODEL_NAMES.items():
        attrs: dict[str, Any] = {field_name(column): _field(column, flavor, column in nullable[table])
                                 for column in columns_of(table, flavor)}
        meta = type("Meta", (), {"table_name": table, "primary_key": False,
                                 "clickhouse": ClickHouseTable(order_by=CH_ORDER_BY[table], insert_only=True)})
        class_name = "".join(part.title() for part in attribute.split("_"))
        models[attribute] = named(type(class_name, (Base,), {**attrs, "Meta": meta}), table)
    return SimpleNamespace(**models)
