"""The current ("vNext") observability layout: insert-only tracing (observability-vnext.md §7).

Spans are appended to ``mastra_span_events`` (one native block insert per chunk, no read before
it); the database's materialized views copy roots and branch anchors into their own tables.
Nothing is updated in place: the same span written twice is two rows, and every read keeps the
current one per ``dedupeKey`` (§3.4).  Validation of input spans is the legacy layout's
(:class:`~.records.SpanRows`, :mod:`.filters`); the SQL of this layout per database lives beside
this module (:mod:`.vnext_clickhouse`).  Signals (logs, metrics, scores, feedback) are further
modules beside these.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterator, Mapping, Sequence

import peewee

from ..base import ITER_CHUNK, DomainRepository, check_chunk_size, operation, streaming
from ..errors import NotSupportedError, ValidationError
from ..models.fields import TimestampField
from ..models.observability_signals import build_observability_signal_models
from ..models.observability_vnext import JSON_COLUMNS, SPAN_COLUMNS, build_observability_vnext_models
from ..page import DeltaPage, Page
from ..retention import Prunable, RetentionTable
from ..schemas.observability import ENTITY_TYPES
from ..validation import Problems, check_id
from ..backends.base import keyset_chunks, value_converter, value_tuples
from ..values import json_loads
from .filters import (CHOICE_FILTERS, RANGE_FILTERS, TEXT_FILTERS, check_depth, check_trace_deletion, check_trace_list,
                      check_trace_iteration, range_conditions)
from .records import (ENTITY_TYPE_KEYS, LIGHT_SPAN_KEYS, SPAN_KEYS, SpanRows, anchor_first, branch_span_ids,
                      light_list_record, trace_status, traces_of)
from . import vnext_migration
from .analytics import AnalyticsMixin
from .discovery import DiscoveryMixin
from .signals import DELTA_NOT_SUPPORTED, INVALID_DELTA_CURSOR, SignalsMixin
from .signals_clickhouse import DELTA_COLUMNS
from .vnext_clickhouse import VNextClickHouseSQL

#: Metadata keys that have columns of their own and never enter ``metadataSearch`` (§2.6).
PROMOTED_KEYS = frozenset({
    "experimentId", "entityType", "entityId", "entityName", "entityVersionId", "parentEntityVersionId",
    "rootEntityVersionId", "userId", "organizationId", "resourceId", "runId", "sessionId", "threadId",
    "requestId", "environment", "executionSource", "serviceName",
})
#: ``get_features()`` of this layout on ClickHouse (§11), in the framework's order.
FEATURES = ("metrics", "logs", "entity-type-discovery", "entity-name-discovery", "service-name-discovery",
            "environment-discovery", "tag-discovery", "metric-discovery")
#: Most trace ids one ``batch_delete_traces`` call takes.
MAX_DELETE_TRACES = 1000
UPDATE_SPAN_MESSAGE = "This storage provider does not support updating spans"
BATCH_UPDATE_SPANS_MESSAGE = "This storage provider does not support batch updating spans"

_FIELD_OF = {column: field for column, field, _ in SPAN_COLUMNS}
#: Row keys of 18.16's ``metadataSearch`` arrays (keys, values).
_SEARCH_KEYS, _SEARCH_VALUES = "metadata_search_keys", "metadata_search_values"
#: Columns read back for a full span (all but the write-side dedupe key and search map).
_SPAN_READ = tuple(column for column, _, _ in SPAN_COLUMNS if column not in ("dedupeKey", "metadataSearch"))
_LIGHT_READ = ("traceId", "spanId", "parentSpanId", "name", "spanType", "isEvent", "startedAt", "endedAt", "error",
               "entityType", "entityId", "entityName")
_LIGHT_LIST_READ = (*_LIGHT_READ, "metadataRaw", "input")
_JSON_FIELDS = frozenset(_FIELD_OF[column] for column in JSON_COLUMNS)
_ENTITY_TYPE_SET = frozenset(ENTITY_TYPES)
_LIST_ORDER = {("started_at", True): '"startedAt" DESC, "traceId", "spanId"',
               ("started_at", False): '"startedAt", "traceId", "spanId"',
               ("ended_at", True): '"endedAt" DESC, "traceId", "spanId"',
               ("ended_at", False): '"endedAt", "traceId", "spanId"'}


# --------------------------------------------------------------------------- write normalisation (§2.6)

def normalized_tags(tags: Sequence[str] | None) -> list[str]:
    """Tags stripped, without empty and repeated ones (the first occurrence kept)."""
    return list(dict.fromkeys(tag.strip() for tag in tags or () if tag.strip()))


def metadata_search(metadata: Any) -> dict[str, str]:
    """The searchable members of span metadata: top-level strings, stripped and non-empty,
    outside the promoted keys; sorted by key (the order the 18.16 arrays keep)."""
    if not isinstance(metadata, dict):
        return {}
    found = {key: value.strip() for key, value in metadata.items()
             if isinstance(value, str) and key not in PROMOTED_KEYS and value.strip()}
    return dict(sorted(found.items()))


class VNextObservabilityRepository(AnalyticsMixin, DiscoveryMixin, SignalsMixin, Prunable, DomainRepository):
    """Insert-only traces and spans: appends, read-time dedupe, trace reads and lists (§7).

    Example::

        observability = ObservabilityClickHouse(url="clickhouse://localhost/default", layout="vnext")
        observability.batch_create_spans(records=[...])
        trace = observability.get_trace(trace_id="t-1")
    """

    domain = "observability"
    # Prunable: prune() answers NotSupportedError on ClickHouse, whose retention is TTL (spec §10.1).
    #: The policy keys of this layout's retention (§10.2): spans and the four signals; a store's
    #: ``retention={"observability": …}`` is checked against them (PostgreSQL/SQLite prune them).
    retention_tables = tuple(RetentionTable(key=key, model="span_event", anchor="ended_at")
                             for key in ("spans", "metrics", "logs", "scores", "feedback"))
    #: The table layout this class implements.
    layout = "vnext"
    #: Days kept per retention signal (``None``: no TTL), applied by :meth:`init`; set by the
    #: backend's class from ``retention=``/``ttl_days``.
    retention_days: Mapping[str, int | None] = {}

    def build_models(self, database: peewee.DatabaseProxy) -> Any:
        models = build_observability_vnext_models(database)
        # The signal tables (logs, metrics, scores, feedback) of this layout, written by SignalsMixin.
        vars(models).update(vars(build_observability_signal_models(database, self.backend_class.name)))
        return models

    @property
    def _sql(self) -> VNextClickHouseSQL:
        sql = self.__dict__.get("_vnext_sql")
        if sql is None:
            sql = self.__dict__["_vnext_sql"] = VNextClickHouseSQL(self.backend)
        return sql

    @property
    def _rows(self) -> SpanRows:
        rows = self.__dict__.get("_span_rows")
        if rows is None:
            rows = self.__dict__["_span_rows"] = SpanRows(
                strip_nul=self.backend.features.strips_nul, scalars_first=self.backend.features.json_scalars_first,
                clean=self.backend.clean)
        return rows

    # ------------------------------------------------------------------ schema and capabilities

    @operation
    def init(self) -> None:
        """Create the tracing tables and materialized views (§3.2, §4 on 18.16), add the columns
        later versions added, reconcile the tables' TTL with :attr:`retention_days` (§10.1) and
        warn once about an unmigrated legacy span table (§12).  Idempotent."""

        def create() -> None:
            self._create_layout()
            if vnext_migration.SpanMigration(self.backend).needs_warning():
                vnext_migration.logger.warning(vnext_migration.DETECTED_WARNING)

        self.backend.run_once(f"{self.domain}:{self.layout}", create)

    def _create_layout(self) -> None:
        with self.backend.ddl():
            self._sql.create()
            self.create_signal_tables()
            self.create_discovery_tables()
            self._sql.apply_retention(self.retention_days)

    @operation
    def migrate_spans(self, *, max_days: int | None = None, stop: threading.Event | None = None,
                      progress: Callable[[int, int, dict], None] | None = None) -> dict:
        """Copy the legacy ``mastra_ai_spans`` into this layout, one UTC day per server-side
        ``INSERT … SELECT`` (§12); resumable and idempotent: a day copies only the spans the
        target lacks, and a finished migration is not run again.

        ``max_days`` and ``stop`` (a ``threading.Event``) end the run before the next day (run
        again to continue); ``progress(position, days, report)`` is called after each day.
        Returns ``{"success", "already_migrated", "duplicates_removed": 0, "done", "message",
        "days"}``, ``days`` holding per day ``{"day", "source", "target", "copied", "missing"}``
        (spans of the day in the legacy table and in ``mastra_span_events``, copied now, still
        missing); a day with spans missing after its copy raises
        :class:`~repository.errors.StorageError` (code ``MIGRATION_COUNT_MISMATCH``)."""
        problems = Problems()
        if max_days is not None and (isinstance(max_days, bool) or not isinstance(max_days, int) or max_days < 0):
            problems.add("max_days", "max_days must be a non-negative integer or None")
        if stop is not None and not callable(getattr(stop, "is_set", None)):
            problems.add("stop", "stop must be a threading.Event or None")
        if progress is not None and not callable(progress):
            problems.add("progress", "progress must be callable or None")
        problems.raise_if_any()
        self._signal_sql.migrate_engines()  # step 1: signal tables of another engine (init() refuses them)
        self.backend.run_once(f"{self.domain}:{self.layout}", self._create_layout)
        return vnext_migration.migrate(self.backend, max_days=max_days, stop=stop, progress=progress)

    @operation
    def check_spans_migration_status(self) -> dict:
        """Whether the legacy ``mastra_ai_spans`` still has spans to copy here (§12):
        ``{"needs_migration", "already_migrated", "table_name", "legacy_rows", "legacy_spans",
        "days"}``.  Changes nothing but creating this layout's tables."""
        self.backend.run_once(f"{self.domain}:{self.layout}", self._create_layout)
        return vnext_migration.status(self.backend)

    @operation
    def prune(self, **arguments: Any) -> list[dict]:
        """Not supported: on ClickHouse rows expire by TTL, configured with
        ``retention={"tracing": days}`` or ``ttl_days`` (§10.1)."""
        raise NotSupportedError("prune() is not available on ClickHouse; use retention={\"tracing\": days} "
                                "or ttl_days.")

    @property
    def observability_strategy(self) -> dict[str, Any]:
        """How tracing exporters should write here (§11), as a fresh dict."""
        return {"preferred": "insert-only", "supported": ["insert-only"]}

    def get_features(self) -> tuple[str, ...]:
        """The observability features of this layout (§11); ``delta-polling`` with
        ``delta_polling=True`` on a current server."""
        delta = self.delta_polling and self._signal_sql.delta_supported()
        return (*FEATURES, *(("delta-polling",) if delta else ()))

    @operation
    def count_rows(self) -> dict[str, int | None]:
        """Current rows (after read-time dedupe) per table; ``None`` for a missing table."""
        self._sql.ensure_schema()
        existing = self.backend.server_features.tables
        counts = {model._meta.table_name: self._sql.count_current(model, ()) if model._meta.table_name in existing
                  else None for model in self.tables if "dedupeKey" in model._meta.columns}
        return {**counts, **self.count_signal_rows()}

    # ------------------------------------------------------------------ writes

    @operation
    def create_span(self, *, span: dict) -> None:
        """Append one span (a batch of one)."""
        problems = Problems()
        row = self._rows.row(problems, span, "" if isinstance(span, dict) else "span")
        problems.raise_if_any()
        self._append([row])

    @operation
    def batch_create_spans(self, *, records: list[dict]) -> None:
        """Append spans in bulk, all or nothing: one native insert, no read before it.  Sending
        the same batch again is safe: reads keep one row per span (§3.4)."""
        rows = self._rows.batch(records)
        if rows:
            self._append(rows)

    def _append(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            started = row["started_at"]
            if row["is_event"] or row["ended_at"] is None:
                row["ended_at"] = started  # insert-only: a span without an end reads ended at its start
            tags, metadata = row["tags"], row["metadata"]
            row["tags"] = normalized_tags(json_loads(tags)) if tags is not None else []
            search = row["metadata_search"] = metadata_search(json_loads(metadata)) if metadata is not None else {}
            row[_SEARCH_KEYS], row[_SEARCH_VALUES] = list(search), list(search.values())
            row["dedupe_key"] = f"{row['trace_id']}:{row['span_id']}"
        self._sql.ensure_schema()
        sql, nested = self._sql.insert_sql(self.models.span_event._meta.table_name)
        fields, converters = self._insert_columns(nested)
        self.backend.execute_rows(sql, value_tuples(self.backend, fields, rows, converters=converters))

    def _insert_columns(self, nested: bool) -> tuple[list[Any], list[Any]]:
        """The fields of an insert's columns, in order, and their value converters: only the
        timestamps need one; the rows' other values (checked strings, bools, JSON text, the tags
        list, the ``metadataSearch`` dict) go to the driver as they are, and on 18.16 the map is
        two arrays, keys and values (the row keys :data:`_SEARCH_KEYS`, :data:`_SEARCH_VALUES`)."""
        plans = self.__dict__.setdefault("_insert_plans", {})
        if nested not in plans:
            fields: list[Any] = []
            for field in self.models.span_event._meta.sorted_fields:
                if field.name == "metadata_search" and nested:
                    fields.extend(_named_field(name) for name in (_SEARCH_KEYS, _SEARCH_VALUES))
                else:
                    fields.append(field)
            plans[nested] = fields, [value_converter(self.backend, field) if isinstance(field, TimestampField) else None
                                     for field in fields]
        return plans[nested]

    @operation
    def update_span(self, *, trace_id: str, span_id: str, updates: dict) -> None:
        """Not supported: spans are never changed in place here (use ``layout="legacy"``)."""
        raise _insert_only(UPDATE_SPAN_MESSAGE)

    @operation
    def batch_update_spans(self, *, records: list[dict]) -> None:
        """Not supported: spans are never changed in place here (use ``layout="legacy"``)."""
        raise _insert_only(BATCH_UPDATE_SPANS_MESSAGE)

    @operation
    def batch_delete_traces(self, *, trace_ids: list[str], organization_id: str | None = None,
                            resource_id: str | None = None) -> None:
        """Delete every span of these traces from the three tracing tables, awaited (only the
        tenant's rows when ``organization_id`` or ``resource_id`` is given); ``[]`` does nothing."""
        problems = Problems()
        check_trace_deletion(problems, trace_ids, organization_id, resource_id)
        if not problems and len(trace_ids) > MAX_DELETE_TRACES:
            problems.add("trace_ids", f"trace_ids must hold at most {MAX_DELETE_TRACES} ids")
        problems.raise_if_any()
        ids = list(dict.fromkeys(trace_ids))
        if not ids:
            return
        deletions = []
        for model in self.tables:
            where = model.trace_id.in_(ids)
            if organization_id is not None:
                where &= model.organization_id == organization_id
            if resource_id is not None:
                where &= model.resource_id == resource_id
            deletions.append((model, where))
        self.backend.delete_bulk_each(deletions, operation="BATCH_DELETE_TRACES")

    # ------------------------------------------------------------------ record conversion

    def _record(self, row: dict[str, Any], keys: Sequence[str] = SPAN_KEYS) -> dict[str, Any]:
        """The span dict of a stored row (§2.1): blank texts and unknown entity types read as
        ``None``, JSON decoded, ``created_at`` the start, ``updated_at`` ``None``."""
        database, Event = self.backend.database, self.models.span_event
        values: dict[str, Any] = {}
        for column, value in row.items():
            field = _FIELD_OF[column]
            if field in ("started_at", "ended_at"):
                value = database.timestamp_from_db(getattr(Event, field), value)
            elif field == "is_event":
                value = bool(value)
            elif field == "tags":
                value = list(value or ())
            elif value == "":
                value = None
            elif field in _JSON_FIELDS:
                value = json_loads(value)
            elif field in ENTITY_TYPE_KEYS and value not in _ENTITY_TYPE_SET:
                value = None
            values[field] = value
        values["created_at"], values["updated_at"] = values["started_at"], None
        return {key: values.get(key) for key in keys}

    # ------------------------------------------------------------------ trace reads

    def _trace_spans(self, trace_id: str, columns: Sequence[str], keys: Sequence[str],
                     span_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The current spans of a trace (of ``span_ids`` only, when given) by start, span id."""
        Event = self.models.span_event
        conditions = self._sql.one_trace(Event, trace_id)
        if span_ids is not None:
            conditions.append(Event.span_id.in_(list(span_ids)))
        self._sql.ensure_schema()
        current = self._sql.few_current(Event, columns, conditions, ("spanId",)).values()
        return [self._record(row, keys) for row in sorted(current, key=_start_then_span)]

    @operation
    def get_span(self, *, trace_id: str, span_id: str) -> dict | None:
        """The current row of the span, or ``None``."""
        problems = Problems()
        check_id(problems, "trace_id", trace_id)
        check_id(problems, "span_id", span_id)
        problems.raise_if_any()
        spans = self._trace_spans(trace_id, _SPAN_READ, SPAN_KEYS, [span_id])
        return spans[0] if spans else None

    @operation
    def get_root_span(self, *, trace_id: str) -> dict | None:
        """The trace's current root (the latest ``ended_at`` when there are several), or ``None``."""
        problems = Problems()
        check_id(problems, "trace_id", trace_id)
        problems.raise_if_any()
        Root = self.models.trace_root
        self._sql.ensure_schema()
        rows = self._sql.select_current(Root, _SPAN_READ, [Root.trace_id == trace_id], '"endedAt" DESC, "spanId"',
                                        limit=1)
        return self._record(rows[0]) if rows else None

    @operation
    def get_trace(self, *, trace_id: str) -> dict | None:
        """``{"trace_id", "spans"}``: every current span by ``started_at`` then ``span_id``, or
        ``None`` when the trace has none."""
        return self._trace(trace_id, _SPAN_READ, SPAN_KEYS)

    @operation
    def get_trace_light(self, *, trace_id: str) -> dict | None:
        """:meth:`get_trace` with light spans (the 14 keys of §2.1)."""
        return self._trace(trace_id, _LIGHT_READ, LIGHT_SPAN_KEYS)

    @operation
    def get_structure(self, *, trace_id: str) -> dict | None:
        """The same as :meth:`get_trace_light`."""
        return self._trace(trace_id, _LIGHT_READ, LIGHT_SPAN_KEYS)

    def _trace(self, trace_id: str, columns: Sequence[str], keys: Sequence[str]) -> dict | None:
        problems = Problems()
        check_id(problems, "trace_id", trace_id)
        problems.raise_if_any()
        spans = self._trace_spans(trace_id, columns, keys)
        return {"trace_id": trace_id, "spans": spans} if spans else None

    @streaming
    def iter_spans(self, *, trace_id: str | None = None, chunk_size: int = ITER_CHUNK) -> Iterator[dict]:
        """Every current span (of one trace, or all) as :meth:`get_span` gives them, by trace
        id then span id, read ``chunk_size`` at a time (constant memory)."""
        problems = Problems()
        check_chunk_size(problems, chunk_size)
        if trace_id is not None:
            check_id(problems, "trace_id", trace_id)
        problems.raise_if_any()
        Event = self.models.span_event
        return self._iter_spans([Event.trace_id == trace_id] if trace_id is not None else [], chunk_size)

    def _iter_spans(self, scope: list[peewee.Node], chunk_size: int) -> Iterator[dict]:
        """The current spans meeting ``scope`` by trace id then span id, in chunks."""
        Event = self.models.span_event
        order = [Event.trace_id, Event.span_id]

        def fetch(after: peewee.Node | None, limit: int) -> list[dict[str, Any]]:
            with self.backend.connection():
                self._sql.ensure_schema()
                rows = self._sql.select_current(Event, _SPAN_READ, [*scope, *([] if after is None else [after])],
                                                '"traceId", "spanId"', limit=limit)
            return [self._record(row) for row in rows]  # keyed by field name, as keyset_chunks reads

        return keyset_chunks(fetch, order, chunk_size)

    @streaming
    def iter_traces(self, *, filters: dict | None = None, chunk_size: int = ITER_CHUNK) -> Iterator[dict]:
        """Every trace as :meth:`get_trace` gives it, by trace id, its spans read ``chunk_size``
        at a time (memory: one chunk and one trace); with ``filters`` (those of
        :meth:`list_traces`) the traces whose current root matches them."""
        checked = check_trace_iteration(filters, chunk_size)
        if not checked:
            return traces_of(self._iter_spans([], chunk_size))
        Root = self.models.trace_root
        self._sql.ensure_schema()
        sql, params = self._sql.deduped(Root, ["traceId"], self._conditions(Root, checked))
        matching = peewee.Expression(self.models.span_event.trace_id, "IN",
                                     peewee.SQL(f'(SELECT "traceId" FROM ({sql}))', params))
        return traces_of(self._iter_spans([matching], chunk_size))

    @operation
    def get_spans(self, *, trace_id: str, span_ids: list[str]) -> dict:
        """``{"trace_id", "spans"}`` with the listed spans that exist, by ``started_at``, ``span_id``."""
        problems = Problems()
        check_id(problems, "trace_id", trace_id)
        _check_span_ids(problems, span_ids)
        problems.raise_if_any()
        return {"trace_id": trace_id, "spans": self._trace_spans(trace_id, _SPAN_READ, SPAN_KEYS, span_ids)}

    @operation
    def get_branch(self, *, trace_id: str, span_id: str, depth: int | None = None) -> dict | None:
        """The span and its descendants down to ``depth`` levels (``None``: all; 0: the span
        only): the anchor first, then the others by ``started_at``; ``None`` when the trace or
        the span is missing."""
        problems = Problems()
        check_id(problems, "trace_id", trace_id)
        check_id(problems, "span_id", span_id)
        check_depth(problems, depth)
        problems.raise_if_any()
        chosen = branch_span_ids(self._trace_spans(trace_id, _LIGHT_READ, LIGHT_SPAN_KEYS), span_id, depth)
        if chosen is None:
            return None
        spans = anchor_first(self._trace_spans(trace_id, _SPAN_READ, SPAN_KEYS, chosen), span_id)
        return {"trace_id": trace_id, "spans": spans}

    # ------------------------------------------------------------------ lists

    @operation
    def list_traces(self, *, filters: dict | None = None, page: int | None = None, per_page: int | bool | None = None,
                    order_by: dict | None = None, mode: str = "page", after: str | None = None,
                    limit: int | None = None) -> Page | DeltaPage:
        """A page of current root spans matching every filter (§7), each with its trace
        ``status``; newest first by default.  With ``delta_polling=True`` on a current server,
        ``mode="delta"`` gives the roots written after the cursor ``after`` (§9)."""
        return self._list(self.models.trace_root, filters, page, per_page, order_by, mode, after, limit, _SPAN_READ,
                          self._listed)

    @operation
    def list_traces_light(self, *, filters: dict | None = None, page: int | None = None,
                          per_page: int | bool | None = None, order_by: dict | None = None, mode: str = "page",
                          after: str | None = None, limit: int | None = None) -> Page | DeltaPage:
        """:meth:`list_traces` with light list rows (the 17 keys of §2.1)."""
        return self._list(self.models.trace_root, filters, page, per_page, order_by, mode, after, limit,
                          _LIGHT_LIST_READ, self._light_listed)

    @operation
    def list_branches(self, *, filters: dict | None = None, page: int | None = None,
                      per_page: int | bool | None = None, order_by: dict | None = None, mode: str = "page",
                      after: str | None = None, limit: int | None = None) -> Page | DeltaPage:
        """A page of branch anchors (spans of the seven branch types, roots or nested) matching
        every filter, each with its own ``status``; newest first by default; ``mode="delta"`` as
        :meth:`list_traces` (anchor rows only)."""
        return self._list(self.models.trace_branch, filters, page, per_page, order_by, mode, after, limit, _SPAN_READ,
                          self._listed, child_errors=False)

    def _listed(self, row: dict[str, Any]) -> dict[str, Any]:
        record = self._record(row)
        record["status"] = trace_status(record)
        return record

    def _light_listed(self, row: dict[str, Any]) -> dict[str, Any]:
        return light_list_record(self._record(row, (*LIGHT_SPAN_KEYS, "metadata", "input")), blank_is_null=False)

    def _list(self, model: type[peewee.Model], filters: Any, page: Any, per_page: Any, order_by: Any, mode: Any,
              after: Any, limit: Any, columns: Sequence[str], build: Callable[[dict[str, Any]], dict[str, Any]], *,
              child_errors: bool = True) -> Page | DeltaPage:
        request, checked, ordering = check_trace_list(filters, page, per_page, order_by, mode, after, limit,
                                                      roots=child_errors)
        self._sql.ensure_schema()
        delta = self.delta_polling and self._signal_sql.delta_supported()
        if mode == "delta" and not delta:
            raise NotSupportedError(DELTA_NOT_SUPPORTED)
        conditions = self._conditions(model, checked)
        if mode == "delta":
            return self._delta_anchors(model, columns, conditions, after, 10 if limit is None else limit, build)
        # The stream's position first: a delta call from it sees every row written after the page.
        delta_cursor = self._signal_sql.delta_head(model) if delta else None
        order = _LIST_ORDER[ordering.field, ordering.descending]
        if request.limit:
            rows, total = self._sql.page_current(model, columns, conditions, order, request.limit, request.offset)
        else:
            total = self._sql.count_current(model, conditions)
            rows = [] if request.limit == 0 else self._sql.select_current(model, columns, conditions, order)
        return Page([build(row) for row in rows], total, request.page, request.per_page, request.has_more(total),
                    delta_cursor=delta_cursor)

    def _delta_anchors(self, model: type[peewee.Model], columns: Sequence[str], conditions: list[peewee.Node],
                       after: str | None, limit: int, build: Callable[[dict[str, Any]], dict[str, Any]]) -> DeltaPage:
        """The current anchors (roots or branch anchors) meeting ``conditions`` whose delta rows
        come after the cursor ``after``, in cursor order (§9; the delta key columns are read
        beside ``columns`` for the join, then left out of the records)."""
        sql = self._signal_sql
        if after is None:
            return DeltaPage([], limit, False, sql.delta_head(model))
        position = sql.parse_delta_cursor(after)
        if position is None:
            raise ValidationError(fields={"after": [INVALID_DELTA_CURSOR]})
        keys = [column for column, _ in DELTA_COLUMNS[model._meta.table_name] if column not in columns]
        rows, has_more, head = sql.delta_rows(model, self._sql.deduped(model, [*columns, *keys], conditions),
                                              position, limit)
        hidden = {*keys, "cursorId"}
        return DeltaPage([build({column: value for column, value in row.items() if column not in hidden})
                          for row in rows], limit, has_more, head)

    def _conditions(self, model: type[peewee.Model], filters: dict[str, Any]) -> list[peewee.Node]:
        """The SQL of validated list filters on the anchor row (§7)."""
        backend = self.backend
        conditions: list[peewee.Node] = []
        for key, value in filters.items():
            if key in TEXT_FILTERS or key in CHOICE_FILTERS:
                conditions.append(getattr(model, key) == value)
            elif key in RANGE_FILTERS:
                conditions.extend(range_conditions(getattr(model, key), value))
            elif key == "status":
                error = backend.json_present(model.error)
                # Insert-only: a running trace is never visible (its root reads as ended).
                conditions.append(error if value == "error" else ~error if value == "success" else peewee.SQL("0"))
            elif key == "has_child_error":
                Event = self.models.span_event
                failed = Event.select(Event.trace_id).where(
                    Event.parent_span_id.is_null(False) & backend.json_present(Event.error))
                conditions.append(model.trace_id.in_(failed) if value else model.trace_id.not_in(failed))
            elif key == "tags":
                conditions.extend(peewee.fn.has(model.tags, tag) for tag in value)
            elif key == "metadata":
                conditions.extend(self._sql.search_equals(name, text) for name, text in value.items())
            elif key == "scope":
                conditions.append(backend.json_members_equal(
                    model.scope, value, scalars_first=backend.features.json_scalars_first))
        return conditions


def _start_then_span(row: dict[str, Any]) -> tuple[Any, str]:
    """The order of a trace's spans: ``startedAt``, then ``spanId`` (Python compares text by
    code point, ClickHouse by UTF-8 bytes: the same order)."""
    return row["startedAt"], row["spanId"]


def _named_field(name: str) -> peewee.Field:
    """A field standing for one row key of an insert (its value goes to the driver as it is)."""
    field = peewee.Field()
    field.name = name
    return field


def _check_span_ids(problems: Problems, span_ids: Any) -> None:
    if not isinstance(span_ids, (list, tuple)) or not span_ids \
            or not all(isinstance(span_id, str) and span_id for span_id in span_ids):
        problems.add("span_ids", "span_ids must be a non-empty list of non-empty strings")


def _insert_only(message: str) -> NotSupportedError:
    """The error of an update on this layout: the framework's exact message (§7), and in the
    details the layout that does support updates."""
    return NotSupportedError(message, details={"layout": "vnext", "hint": 'spans are updated in place only with '
                                               'layout="legacy" (the mastra_ai_spans table)'})
