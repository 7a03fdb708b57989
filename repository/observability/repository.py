"""The observability repository: traces and spans of agent runs, tool calls and model calls
(spec: observability.md).

Record conversion lives in :mod:`.records`, the ``list_traces`` filters in :mod:`.filters` and
the SQL of the legacy table per database in :mod:`.legacy_sql`.  The rows of a batch are
written with the backend's bulk upsert in one call.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Iterator
from urllib.parse import parse_qs, urlsplit

import marshmallow
import peewee

from ..base import (ITER_CHUNK, DomainRepository, check_chunk_size, count_prepared, fetch_page, fetch_prepared_page,
                    operation, order_terms, streaming)
from ..errors import NotFoundError, ValidationError
from ..models.observability import build_observability_models
from ..page import Page
from ..retention import Prunable, RetentionTable
from ..schemas.base import flatten_errors
from ..schemas.observability import PARENT_IS_SELF, SpanSchema
from ..validation import Problems, check_id, check_order_by, check_page, join_path
from ..values import chunks, utc_now
from .filters import (BRANCH_FILTER_KEYS, CHOICE_FILTERS, LIST_ORDER_FIELDS, PREPARED_FILTERS, RANGE_FILTERS,
                      TEXT_FILTERS, check_depth, check_filters, check_trace_deletion, filter_shape)
from .legacy_sql import LEGACY_DIALECTS, STRATEGIES, LegacyDialect
from .records import (CAMEL_TO_SNAKE, IGNORED_WIRE_KEYS, JSON_KEYS, KEY_FIELDS, MESSAGE_RECORDS, NOT_NULL_ON_UPDATE,
                      BRANCH_SPAN_TYPES, LIGHT_SPAN_KEYS, SpanRows, anchor_first, branch_span_ids, light_list_record,
                      light_record, span_record, trace_status, traces_of)

_SPAN_SCHEMA = SpanSchema()
#: The table layouts of observability on PostgreSQL and SQLite (observability-vnext.md §1).
LAYOUTS = ("legacy", "vnext")
#: What a light list row is built from: the light span, the root's metadata and its input.
LIGHT_LIST_COLUMNS = (*LIGHT_SPAN_KEYS, "metadata", "input")


class ObservabilityRepository(Prunable, DomainRepository):
    """Traces and spans: bulk ingest, partial updates, trace reads and trace lists.

    Example::

        observability = storage.get_store("observability")
        observability.batch_create_spans(records=[
            {"trace_id": "t-1", "span_id": "s-1", "name": "agent run", "span_type": "agent_run",
             "started_at": "2026-01-31T09:05:01.123Z"},
        ])
        observability.update_span(trace_id="t-1", span_id="s-1",
                                  updates={"ended_at": "2026-01-31T09:05:02Z", "output": {"text": "done"}})
        trace = observability.get_trace(trace_id="t-1")
        page = observability.list_traces(filters={"status": "success"}, per_page=20)
    """

    domain = "observability"
    #: Retention (fidelity-1.71 §5) on SQLite/PostgreSQL, span by span; ClickHouse keeps ``ttl_days``.
    retention_tables = (RetentionTable(key="spans", model="span", anchor="started_at"),)

    def build_models(self, database: peewee.DatabaseProxy) -> Any:
        return build_observability_models(database)

    @property
    def _dialect(self) -> LegacyDialect:
        return LEGACY_DIALECTS[self.backend.name]

    @property
    def _rows(self) -> SpanRows:
        rows = self.__dict__.get("_span_rows")
        if rows is None:
            rows = self.__dict__["_span_rows"] = SpanRows(
                strip_nul=self.backend.features.strips_nul,
                scalars_first=self.backend.features.json_scalars_first,
                clean=self.backend.clean)
        return rows

    # ------------------------------------------------------------------ schema

    @operation
    def init(self) -> None:
        """Create ``mastra_ai_spans`` with its key, indexes and (PostgreSQL) timestamp trigger;
        add missing columns and, to older tables, the missing unique key.  Idempotent."""
        self.backend.run_once(self.domain, self._create_tables)

    def _create_tables(self) -> None:
        with self.backend.ddl():
            self.backend.create_tables(self.tables)
            self._dialect.after_create(self)

    @operation
    def check_spans_migration_status(self) -> dict:
        """Whether ``mastra_ai_spans`` was created before its ``(traceId, spanId)`` key existed:
        ``{"needs_migration", "has_duplicates", "duplicate_count", "constraint_exists",
        "table_name"}`` (``duplicate_count``: pairs stored more than once).  Changes nothing."""
        return self._dialect.migration_status(self)

    @operation
    def migrate_spans(self) -> dict:
        """Give an older ``mastra_ai_spans`` its ``(traceId, spanId)`` key, in one transaction:
        of each repeated pair the ended row is kept (then the latest updated, the latest created),
        the others deleted.  Returns ``{"success", "already_migrated", "duplicates_removed",
        "message"}``; a later :meth:`init` then passes.  ClickHouse: a table sorted by another key
        raises :class:`~repository.errors.NotSupportedError`."""
        dialect = self._dialect
        status = dialect.migration_status(self)
        if not status["needs_migration"]:
            return {"success": True, "already_migrated": True, "duplicates_removed": 0,
                    "message": dialect.already_migrated(status)}
        message = dialect.migrate(self, status)
        return {"success": True, "already_migrated": False, "duplicates_removed": status["duplicate_count"],
                "message": message}

    @property
    def observability_strategy(self) -> dict[str, Any]:
        """How tracing exporters should write to this backend (§3.10), as a fresh dict:
        ``{"preferred": <strategy>, "supported": [<strategies>]}``."""
        preferred, supported = STRATEGIES[self.backend.name]
        return {"preferred": preferred, "supported": list(supported)}

    # ------------------------------------------------------------------ record conversion

    def _span_record(self, row: dict[str, Any]) -> dict[str, Any]:
        return span_record(row, blank_is_null=self._dialect.blank_is_null)

    # ------------------------------------------------------------------ validation of spans

    def _span_row(self, problems: Problems, record: Any, prefix: str) -> dict[str, Any] | None:
        """The stored row of one input span, or ``None`` after recording its problems."""
        return self._rows.row(problems, record, prefix)

    def _batch_rows(self, records: Any) -> list[dict[str, Any]]:
        """Rows of every record of a batch; one error for all invalid records (§3.3)."""
        return self._rows.batch(records)

    # ------------------------------------------------------------------ writes

    @operation
    def create_span(self, *, span: dict) -> None:
        """Write one span (an upsert on ``(trace_id, span_id)``, like a batch of one)."""
        problems = Problems()
        row = self._span_row(problems, span, "" if isinstance(span, dict) else "span")
        problems.raise_if_any()
        self._write_rows([row])

    @operation
    def batch_create_spans(self, *, records: list[dict]) -> None:
        """Write spans in bulk, all or nothing (§3.3).

        Each ``(trace_id, span_id)`` is upserted: a new pair is inserted, an existing one replaced
        whole (its ``created_at`` kept); within the batch the last occurrence of a pair wins.
        """
        rows = self._batch_rows(records)
        if rows:
            self._write_rows(rows)

    def _write_rows(self, rows: list[dict[str, Any]]) -> None:
        now = utc_now()
        unique = {(row["trace_id"], row["span_id"]): row for row in rows}
        if len(unique) != len(rows):
            rows = list(unique.values())
        for row in rows:
            row["created_at"] = row["updated_at"] = now
        traces = {trace_id for trace_id, _ in unique}
        with self.backend.write(*(("trace", trace_id) for trace_id in traces)):
            self.backend.upsert(self.models.span, rows, preserve=("created_at",))

    @operation
    def update_span(self, *, trace_id: str, span_id: str, updates: dict) -> None:
        """Overwrite some fields of one span (``None`` clears an optional field); bumps
        ``updated_at``.  A missing span raises :class:`~repository.errors.NotFoundError`."""
        problems = Problems()
        check_id(problems, "trace_id", trace_id)
        check_id(problems, "span_id", span_id)
        values = self._update_values(problems, updates, "updates", span_id)
        problems.raise_if_any()
        self._apply_updates([(trace_id, span_id, values)], single=True)

    @operation
    def batch_update_spans(self, *, records: list[dict]) -> None:
        """Apply ``{"trace_id", "span_id", "updates"}`` items in list order, all or nothing;
        any missing target raises :class:`~repository.errors.NotFoundError` listing them all."""
        if not isinstance(records, (list, tuple)):
            raise ValidationError(fields={"records": ["records must be a list of updates"]})
        problems = Problems()
        changes = []
        for index, item in enumerate(records):
            prefix = f"records[{index}]"
            if not isinstance(item, dict):
                problems.add(prefix, "Not a valid mapping type.")
                continue
            for key in item:
                if key not in ("trace_id", "span_id", "updates"):
                    problems.add(f"{prefix}.{key}", "Unknown field.")
            trace_id, span_id = item.get("trace_id"), item.get("span_id")
            check_id(problems, f"{prefix}.trace_id", trace_id)
            check_id(problems, f"{prefix}.span_id", span_id)
            values = self._update_values(problems, item.get("updates"), f"{prefix}.updates", span_id)
            changes.append((trace_id, span_id, values))
        problems.raise_if_any()
        if changes:
            self._apply_updates(changes, single=False)

    def _update_values(self, problems: Problems, updates: Any, prefix: str, span_id: Any) -> dict[str, Any]:
        """Validated, store-ready values of one ``updates`` dict (§3.4)."""
        if not isinstance(updates, dict) or not updates:
            problems.add(prefix, "updates must be a non-empty dict of span fields")
            return {}
        data = {}
        for key, value in updates.items():
            name = CAMEL_TO_SNAKE.get(key, key)
            if name in KEY_FIELDS:
                problems.add(join_path(prefix, name), "Cannot be updated.")
            elif name in NOT_NULL_ON_UPDATE and value is None:
                problems.add(join_path(prefix, name), "Field may not be null.")
            elif key not in IGNORED_WIRE_KEYS:
                data[key] = value
        try:
            loaded = _SPAN_SCHEMA.load(data, partial=True)
        except marshmallow.ValidationError as error:
            problems.merge(flatten_errors(error.messages), prefix)
            return {}
        if loaded.get("parent_span_id") is not None and loaded["parent_span_id"] == span_id:
            problems.add(join_path(prefix, "parent_span_id"), PARENT_IS_SELF)
        values = {}
        for key, value in loaded.items():
            if key in JSON_KEYS:
                value = self._rows.json(key, value)
            elif isinstance(value, str):
                value = self.backend.clean(value)
            values[key] = value
        return values

    def _apply_updates(self, changes: list[tuple[str, str, dict[str, Any]]], *, single: bool) -> None:
        Span = self.models.span
        now = utc_now()
        keys = list(dict.fromkeys((trace_id, span_id) for trace_id, span_id, _ in changes))
        with self.backend.write(*(("trace", trace_id) for trace_id, _ in keys)):
            stored = self._stored_spans(keys)
            missing = [key for key in keys if key not in stored]
            if missing:
                if single:
                    trace_id, span_id = missing[0]
                    raise NotFoundError(f"Span not found: trace_id={trace_id}, span_id={span_id}",
                                        details={"trace_id": trace_id, "span_id": span_id})
                raise NotFoundError(
                    f"{len(missing)} span(s) not found: "
                    + ", ".join(f"trace_id={t}, span_id={s}" for t, s in missing[:MESSAGE_RECORDS]),
                    details={"missing": [{"trace_id": t, "span_id": s} for t, s in missing]})
            merged: dict[tuple[str, str], dict[str, Any]] = {}
            for trace_id, span_id, values in changes:
                merged.setdefault((trace_id, span_id), {}).update(values)
            self.backend.replace_many(Span, [(stored[key], {**values, "updated_at": now})
                                             for key, values in merged.items()])

    def _stored_spans(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        Span = self.models.span
        found = {}
        for chunk in chunks(keys):
            query = self.backend.for_update(self.backend.select(Span).where(
                peewee.Tuple(Span.trace_id, Span.span_id).in_(chunk)))
            found.update(((row["trace_id"], row["span_id"]), row) for row in query)
        return found

    @operation
    def batch_delete_traces(self, *, trace_ids: list[str], organization_id: str | None = None,
                            resource_id: str | None = None) -> None:
        """Delete every span of these traces (only those of the tenant when ``organization_id``
        or ``resource_id`` is given); unknown ids are ignored."""
        problems = Problems()
        check_trace_deletion(problems, trace_ids, organization_id, resource_id)
        problems.raise_if_any()
        ids = list(dict.fromkeys(trace_ids))
        if not ids:
            return
        Span = self.models.span
        with self.backend.write(*(("trace", trace_id) for trace_id in ids)):
            for chunk in chunks(ids):
                where = Span.trace_id.in_(chunk)
                if organization_id is not None:
                    where &= Span.organization_id == organization_id
                if resource_id is not None:
                    where &= Span.resource_id == resource_id
                self.backend.delete_bulk(Span, where, operation="BATCH_DELETE_TRACES")

    # ------------------------------------------------------------------ reads

    @operation
    def get_span(self, *, trace_id: str, span_id: str) -> dict | None:
        """The span, or ``None``."""
        problems = Problems()
        check_id(problems, "trace_id", trace_id)
        check_id(problems, "span_id", span_id)
        problems.raise_if_any()
        Span = self.models.span
        row = self.backend.select(Span).where((Span.trace_id == trace_id) & (Span.span_id == span_id)).first()
        return None if row is None else self._span_record(row)

    @operation
    def get_root_span(self, *, trace_id: str) -> dict | None:
        """The trace's root span (the earliest one if there are several), or ``None``."""
        problems = Problems()
        check_id(problems, "trace_id", trace_id)
        problems.raise_if_any()
        Span = self.models.span
        row = (self.backend.select(Span).where((Span.trace_id == trace_id) & self._dialect.root(Span))
               .order_by(Span.started_at.asc(), Span.span_id.asc()).first())
        return None if row is None else self._span_record(row)

    @operation
    def get_trace(self, *, trace_id: str) -> dict | None:
        """``{"trace_id", "spans"}`` with every span of the trace by ``started_at`` (ties by
        ``span_id``), or ``None`` when the trace has no spans."""
        problems = Problems()
        check_id(problems, "trace_id", trace_id)
        problems.raise_if_any()
        Span, backend = self.models.span, self.backend
        # A prepared statement: peewee would spend more rendering this wide select than the
        # database spends finding the trace's spans.
        rows = backend.prepared(Span, lambda: backend.select(Span).where(
            Span.trace_id == backend.param("trace_id")).order_by(Span.started_at.asc(), Span.span_id.asc())
        ).rows(trace_id=backend.clean(trace_id))
        spans = [self._span_record(row) for row in rows]
        return {"trace_id": trace_id, "spans": spans} if spans else None

    @streaming
    def iter_spans(self, *, trace_id: str | None = None, chunk_size: int = ITER_CHUNK) -> Iterator[dict]:
        """Every span (of one trace, or all) as :meth:`get_span` gives them, by trace id then
        span id, read ``chunk_size`` at a time (constant memory)."""
        Span = self.models.span
        return self.iter_matching(Problems(), Span, self._span_record, chunk_size, [Span.trace_id, Span.span_id],
                                  trace_id=trace_id)

    @streaming
    def iter_traces(self, *, filters: dict | None = None, chunk_size: int = ITER_CHUNK) -> Iterator[dict]:
        """Every trace as :meth:`get_trace` gives it, by trace id, its spans read ``chunk_size``
        at a time (memory: one chunk and one trace); with ``filters`` (those of
        :meth:`list_traces`) the traces whose root span matches them."""
        problems = Problems()
        check_chunk_size(problems, chunk_size)
        checked = check_filters(problems, filters)
        problems.raise_if_any()
        Span = self.models.span
        query = self.backend.select(Span)
        if checked:
            roots = self.backend.select(Span, Span.trace_id).where(self._dialect.root(Span),
                                                                     *self._filter_conditions(checked))
            query = query.where(Span.trace_id.in_(roots))
        return traces_of(self.iter_query(query, self._span_record, chunk_size, order=[Span.trace_id, Span.span_id]))

    @operation
    def get_structure(self, *, trace_id: str) -> dict | None:
        """``{"trace_id", "spans"}`` with the trace's light spans (the 14 keys of a span's tree
        shape, timing and error; no payloads), in :meth:`get_trace` order, or ``None``."""
        return self._structure(trace_id)

    @operation
    def get_trace_light(self, *, trace_id: str) -> dict | None:
        """The deprecated name of :meth:`get_structure` (same result)."""
        return self._structure(trace_id)

    def _structure(self, trace_id: Any) -> dict | None:
        problems = Problems()
        check_id(problems, "trace_id", trace_id)
        problems.raise_if_any()
        Span = self.models.span
        rows = self.backend.select(Span, *self._columns(LIGHT_SPAN_KEYS)).where(Span.trace_id == trace_id) \
            .order_by(Span.started_at.asc(), Span.span_id.asc())
        blank_is_null = self._dialect.blank_is_null
        spans = [light_record(row, blank_is_null=blank_is_null) for row in rows]
        return {"trace_id": trace_id, "spans": spans} if spans else None

    @operation
    def get_spans(self, *, trace_id: str, span_ids: list[str]) -> dict:
        """``{"trace_id", "spans"}`` with the listed spans of the trace that exist (full spans,
        each once, by ``started_at`` then ``span_id``); an unknown trace gives no spans."""
        problems = Problems()
        check_id(problems, "trace_id", trace_id)
        if not isinstance(span_ids, (list, tuple)) or not span_ids \
                or not all(isinstance(span_id, str) and span_id for span_id in span_ids):
            problems.add("span_ids", "span_ids must be a non-empty list of non-empty strings")
        problems.raise_if_any()
        return {"trace_id": trace_id, "spans": self._spans(trace_id, list(dict.fromkeys(span_ids)))}

    def _spans(self, trace_id: str, span_ids: list[str]) -> list[dict[str, Any]]:
        """The full spans of ``span_ids`` in one trace, by ``started_at`` then ``span_id``."""
        Span = self.models.span
        spans = []
        for chunk in chunks(span_ids):
            query = self.backend.select(Span).where((Span.trace_id == trace_id) & Span.span_id.in_(chunk))
            spans.extend(self._span_record(row) for row in query)
        return sorted(spans, key=lambda record: (record["started_at"], record["span_id"]))

    @operation
    def get_branch(self, *, trace_id: str, span_id: str, depth: int | None = None) -> dict | None:
        """``{"trace_id", "spans"}``: the span ``span_id`` first, then its descendants (down to
        ``depth`` levels; ``None``: all) by ``started_at``; ``None`` when the trace or the span
        is missing."""
        problems = Problems()
        check_id(problems, "trace_id", trace_id)
        check_id(problems, "span_id", span_id)
        check_depth(problems, depth)
        problems.raise_if_any()
        structure = self._structure(trace_id)
        chosen = None if structure is None else branch_span_ids(structure["spans"], span_id, depth)
        if chosen is None:
            return None
        return {"trace_id": trace_id, "spans": anchor_first(self._spans(trace_id, chosen), span_id)}

    @operation
    def list_traces(self, *, filters: dict | None = None, page: int = 0, per_page: int | bool = 10,
                    order_by: dict | None = None) -> Page:
        """A page of root spans matching every filter (§3.8), each with its trace ``status``;
        newest first by default."""
        rows, total, has_more, request = self._list_roots(filters, page, per_page, order_by, light=False)
        return Page(self._with_status(rows), total, request.page, request.per_page, has_more)

    @operation
    def list_traces_light(self, *, filters: dict | None = None, page: int = 0, per_page: int | bool = 10,
                          order_by: dict | None = None) -> Page:
        """:meth:`list_traces` with light rows: the 14 keys of :meth:`get_structure` plus
        ``status``, ``metadata`` and ``input_preview`` (the root's user input, 100 characters);
        only the columns these need are read."""
        rows, total, has_more, request = self._list_roots(filters, page, per_page, order_by, light=True)
        blank_is_null = self._dialect.blank_is_null
        items = [light_list_record(row, blank_is_null=blank_is_null) for row in rows]
        return Page(items, total, request.page, request.per_page, has_more)

    @operation
    def list_branches(self, *, filters: dict | None = None, page: int = 0, per_page: int | bool = 10,
                      order_by: dict | None = None) -> Page:
        """A page of branch anchors: every span (root or nested) of a branch type (agent, workflow,
        processor, scorer and tool runs, …) matching every filter, each a full span with its own
        ``status``; the filters of :meth:`list_traces` but ``has_child_error``, applied to the
        anchor.  Newest first by default."""
        problems = Problems()
        request = check_page(problems, page, per_page, default_per_page=10)
        checked = check_filters(problems, filters, keys=BRANCH_FILTER_KEYS)
        ordering = check_order_by(problems, order_by, allowed=LIST_ORDER_FIELDS, default_field="started_at",
                                  default_direction="DESC")
        problems.raise_if_any()
        Span = self.models.span
        query = self.backend.select(Span).where(Span.span_type.in_(BRANCH_SPAN_TYPES),
                                                *self._filter_conditions(checked))
        rows, total, has_more = fetch_page(self.backend, query, self._list_order(ordering), request)
        return Page(self._with_status(rows), total, request.page, request.per_page, has_more)

    def _with_status(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The full spans of listed rows, each with the ``status`` of its own error and end."""
        items = []
        for row in rows:
            record = self._span_record(row)
            record["status"] = trace_status(record)
            items.append(record)
        return items

    def _list_roots(self, filters: Any, page: Any, per_page: Any, order_by: Any, *,
                    light: bool) -> tuple[list[dict[str, Any]], int, bool, Any]:
        """The rows of a ``list_traces`` page (of the light list's columns when ``light``),
        its total, ``has_more`` and the page request."""
        problems = Problems()
        request = check_page(problems, page, per_page, default_per_page=10)
        checked = check_filters(problems, filters)
        ordering = check_order_by(problems, order_by, allowed=LIST_ORDER_FIELDS, default_field="started_at",
                                  default_direction="DESC")
        problems.raise_if_any()
        Span, backend, dialect = self.models.span, self.backend, self._dialect
        columns = self._columns(LIGHT_LIST_COLUMNS) if light else ()
        order = self._list_order(ordering)
        if PREPARED_FILTERS.issuperset(checked):
            rows, total, has_more = self._prepared_roots(checked, (ordering.field, ordering.descending, light),
                                                         order, request, columns)
        else:
            query = backend.select(Span, *columns).where(dialect.root(Span), *self._filter_conditions(checked))

            def count(query: peewee.ModelSelect) -> int:
                return dialect.count_roots(lambda where=None, bitmap=False: backend.count(
                    query if where is None else query.where(where), bitmap=bitmap), checked)

            rows, total, has_more = fetch_page(backend, query, order, request, count=count)
        return rows, total, has_more, request

    def _list_order(self, ordering: Any) -> list[Any]:
        """The order of a list of spans by ``started_at`` or ``ended_at``; ties by trace and span id."""
        Span = self.models.span
        field = getattr(Span, ordering.field)
        if ordering.field == "ended_at":
            # Running spans (no end yet) come first newest-first and last oldest-first.
            first = field.desc(nulls="first") if ordering.descending else field.asc(nulls="last")
            return [first, Span.trace_id.asc(), Span.span_id.asc()]
        return order_terms(field, ordering.descending, Span.trace_id, Span.span_id)

    def _columns(self, keys: tuple[str, ...]) -> list[peewee.Field]:
        """The fields of the span keys ``keys``, each with its stored companions (PostgreSQL's
        ``…Z`` timestamps, which reads prefer), for reads that select only what they return."""
        fields = self.models.span._meta.fields
        return [fields[name] for key in keys for name in (key, f"{key}_z") if name in fields]

    def _prepared_roots(self, filters: dict[str, Any], ordering: tuple[str, bool, bool], order: list[Any],
                        request: Any, columns: Any = ()) -> tuple[list[dict[str, Any]], int, bool]:
        """The page of a list whose filters all bind as parameters: its statements are rendered
        once per shape (which filters, ranges and statuses, the order, light or full columns),
        since rendering the wide select of spans cost more than running it."""
        Span, backend, dialect = self.models.span, self.backend, self._dialect
        values: dict[str, Any] = {}

        def bind(name: str, field: peewee.Field, value: Any) -> peewee.Node:
            values[name] = field.db_value(value)
            return backend.param(name)

        conditions = self._filter_conditions(filters, bind)  # fills values

        def build() -> peewee.ModelSelect:
            return backend.select(Span, *columns).where(dialect.root(Span), *conditions)

        key = (Span, ordering, tuple(filter_shape(name, value) for name, value in filters.items()))

        def count(where: peewee.Node | None = None, bitmap: bool = False) -> int:
            with backend.bitmap_scans(bitmap):
                return count_prepared(backend, (key, None if where is None else where.sql),
                                      build if where is None else lambda: build().where(where), values)

        return fetch_prepared_page(backend, key, build, order, request, values,
                                   count=lambda: dialect.count_roots(count, filters))

    def _filter_conditions(self, filters: dict[str, Any],
                           bind: Callable[[str, peewee.Field, Any], peewee.Node] | None = None) -> list[peewee.Node]:
        """The conditions of ``list_traces`` filters; ``bind(name, field, value)``, when given,
        gives the parameter standing for each compared value (tags, metadata and scope filters
        are not bound)."""
        Span, dialect = self.models.span, self._dialect

        def compared(name: str, field: peewee.Field, value: Any) -> Any:
            return value if bind is None else bind(name, field, value)

        conditions = []
        for key, value in filters.items():
            if key in TEXT_FILTERS or key in CHOICE_FILTERS:
                field = getattr(Span, key)
                conditions.append(field == compared(key, field, value))
            elif key in RANGE_FILTERS:
                field = getattr(Span, key)
                if "start" in value:
                    start = compared(f"{key}_start", field, value["start"])
                    conditions.append(field > start if value.get("start_exclusive") else field >= start)
                if "end" in value:
                    end = compared(f"{key}_end", field, value["end"])
                    conditions.append(field < end if value.get("end_exclusive") else field <= end)
                if key == "ended_at":
                    conditions.append(field.is_null(False))
            elif key == "status":
                error = self.backend.json_present(Span.error)
                if value == "error":
                    conditions.append(error)
                else:
                    conditions.append(~error)
                    conditions.append(Span.ended_at.is_null(value == "running"))
            elif key == "has_child_error":
                conditions.append(dialect.has_child_error(self, value))
            elif key == "tags":
                conditions.append(self.backend.json_array_contains_all(Span.tags, value))
            elif key in ("metadata", "scope"):
                conditions.append(self.backend.json_members_equal(
                    getattr(Span, key), value, scalars_first=self.backend.features.json_scalars_first))
        return conditions



# --------------------------------------------------------------------------- layouts (observability-vnext.md §1)


def url_layout(url: Any) -> str | None:
    """The ``layout`` a URL names in its query (``?layout=vnext``), else ``None``."""
    if not isinstance(url, str):
        return None
    values = parse_qs(urlsplit(url).query).get("layout")
    return values[-1] if values else None


class LayoutChoice:
    """The public observability class of PostgreSQL or SQLite, in one of two table layouts fixed
    per object: ``layout="legacy"`` (the default, ``mastra_ai_spans``) or ``layout="vnext"``
    (event-sourced ``mastra_span_events`` and the signal tables,
    :class:`~.vnext_sql.VNextSQLObservabilityRepository`).  Without ``layout=`` the URL's
    ``?layout=`` decides (for ``store=``, the store's URL).  A vnext object is an instance of a
    subclass of the public class made for that layout; ``repr`` shows the layout.

    List it first in the public class's bases, before the legacy repository.
    """

    layout = "legacy"
    #: Constructor keywords only the vnext layout takes (a validation error with ``legacy``).
    vnext_keywords: ClassVar[tuple[str, ...]] = ("delta_polling",)

    def __new__(cls, *, layout: str | None = None, store: Any = None, **options: Any) -> Any:
        public = next(klass for klass in cls.__mro__ if LayoutChoice in klass.__bases__)
        if cls is public:
            if layout is None:
                url = options.get("url", options.get("connection_string")) if store is None else \
                    getattr(getattr(store, "backend", None), "display_url", None)
                layout = url_layout(url) or "legacy"
            if layout not in LAYOUTS:
                raise ValidationError(fields={"layout": [f"layout must be one of {', '.join(LAYOUTS)}"]},
                                      id=f"STORAGE_{cls.backend_class.name}_INIT_INVALID_INPUT", domain=cls.domain)
            if layout == "vnext":
                cls = _vnext_class(public)
        return super().__new__(cls)

    def __init__(self, *, layout: str | None = None, **options: Any) -> None:
        # The layout was chosen by __new__ (it is this object's class).
        given = {key: options.pop(key) for key in self.vnext_keywords if key in options}
        super().__init__(**options)
        try:
            if given and self.layout != "vnext":
                raise ValidationError(fields={key: [f'{key} applies to layout="vnext" only'] for key in given})
            if self.layout == "vnext":
                self.configure_layout(**given)
        except ValidationError as exc:
            raise exc.bind(backend=self.backend_class.name, operation="INIT", domain=self.domain) from None

    def __repr__(self) -> str:
        public = next(klass for klass in type(self).__mro__ if LayoutChoice in klass.__bases__)
        return f"{public.__name__}({self.backend.display_url!r}, layout={self.layout!r})"


def _vnext_class(public: type) -> type:
    """The class of ``layout="vnext"`` for a public class: the vnext repository (with the signal
    methods), then the public class (made once per public class)."""
    made = public.__dict__.get("_vnext_class")
    if made is None:
        from .vnext_sql import VNextSQLObservabilityRepository

        made = type(f"VNext{public.__name__}", (VNextSQLObservabilityRepository, public),
                    {"layout": "vnext", "__module__": public.__module__,
                     "__doc__": f"{public.__name__} in the current layout (layout=\"vnext\")."})
        public._vnext_class = made
    return made
