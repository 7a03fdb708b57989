"""The observability domain: traces and spans of agent runs, tool calls and model calls
(spec: observability.md).

Spans arrive in bulk from tracing exporters, so ``batch_create_spans`` has a fast path: each
record is checked by hand for the common valid case (:class:`SpanRows`) and only a record that
fails those checks goes through the marshmallow :class:`~repository.schemas.SpanSchema`, which
then builds the exact error report (or accepts an unusual but valid record).  The rows are
written with the backend's bulk upsert in one call.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from operator import itemgetter
from typing import Any, Callable, ClassVar, Iterable, Sequence

import marshmallow
import peewee

from ..models.observability import ROOT_ENTRY_FITS, TABLE, build_observability_models

from ..base import DomainRepository, count_prepared, fetch_page, fetch_prepared_page, operation, order_terms
from ..errors import ConflictError, NotFoundError, ValidationError
from ..page import Page
from ..schemas.base import Timestamp, flatten_errors
from ..schemas.observability import ENTITY_TYPES, IGNORED_KEYS, PARENT_IS_SELF, SPAN_TYPES, SpanSchema
from ..validation import Problems, check_id, check_metadata_filter, check_order_by, check_page, join_path
from ..values import JSONText, is_storable_text, json_dumps, to_utc, utc_now

_SPAN_SCHEMA = SpanSchema()
_TIMESTAMP_FIELD = Timestamp()

#: The keys of a returned span, in the spec's order (observability.md §2.2).
SPAN_KEYS = (
    "trace_id", "span_id", "parent_span_id", "name", "span_type", "is_event", "started_at", "ended_at",
    "entity_type", "entity_id", "entity_name", "parent_entity_type", "parent_entity_id", "parent_entity_name",
    "root_entity_type", "root_entity_id", "root_entity_name", "user_id", "organization_id", "resource_id",
    "run_id", "session_id", "thread_id", "request_id", "environment", "service_name", "scope",
    "entity_version_id", "parent_entity_version_id", "root_entity_version_id", "experiment_id", "source",
    "metadata", "tags", "attributes", "links", "input", "output", "error", "request_context",
    "created_at", "updated_at",
)

#: Fields a caller writes (every key but the two storage timestamps).
WRITABLE_KEYS = SPAN_KEYS[:-2]
JSON_KEYS = ("scope", "metadata", "tags", "attributes", "links", "input", "output", "error", "request_context")
ENTITY_TYPE_KEYS = ("entity_type", "parent_entity_type", "root_entity_type")
#: Optional text fields (``parent_span_id`` and the entity types included).
OPTIONAL_TEXT_KEYS = tuple(key for key in WRITABLE_KEYS if key not in JSON_KEYS and key not in (
    "trace_id", "span_id", "name", "span_type", "is_event", "started_at", "ended_at"))
#: Keys ``update_span`` rejects with "Cannot be updated."
KEY_FIELDS = ("trace_id", "span_id")
NOT_NULL_ON_UPDATE = ("name", "span_type", "started_at", "is_event")

STATUSES = ("success", "error", "running")
LIST_ORDER_FIELDS = ("started_at", "ended_at")
#: Equality filters of ``list_traces`` taking any string, and those limited to a value list.
TEXT_FILTERS = (
    "trace_id", "entity_id", "entity_name", "parent_entity_id", "parent_entity_name", "root_entity_id",
    "root_entity_name", "entity_version_id", "parent_entity_version_id", "root_entity_version_id", "experiment_id",
    "user_id", "organization_id", "resource_id", "run_id", "session_id", "thread_id", "request_id",
    "environment", "source", "service_name",
)
CHOICE_FILTERS = {"span_type": SPAN_TYPES, **{key: ENTITY_TYPES for key in ENTITY_TYPE_KEYS}}
RANGE_KEYS = ("start", "end", "start_exclusive", "end_exclusive")
RANGE_FILTERS = ("started_at", "ended_at")
FILTER_KEYS = frozenset({*TEXT_FILTERS, *CHOICE_FILTERS, *RANGE_FILTERS, "status", "has_child_error",
                         "tags", "metadata", "scope"})
#: Filters whose values ``list_traces`` binds as parameters of statements rendered once per
#: shape; tags, metadata and scope build conditions around their values, so they are rendered.
PREPARED_FILTERS = FILTER_KEYS - {"tags", "metadata", "scope"}

#: Tracing strategies (§3.10): what exporters should do, per backend.
STRATEGIES = {
    "SQLITE": ("batch-with-updates", ("batch-with-updates", "realtime", "insert-only")),
    "PG": ("batch-with-updates", ("batch-with-updates", "realtime", "insert-only")),
    "CLICKHOUSE": ("insert-only", ("insert-only", "batch-with-updates")),
}

#: How many invalid records a batch error message names.
MESSAGE_RECORDS = 10
#: Trace ids per delete statement.
DELETE_CHUNK = 500


def _one_of(values: Iterable[str]) -> str:
    return f"Must be one of: {', '.join(values)}."


# --------------------------------------------------------------------------- the fast path

_STR = frozenset({str})
_TEXT_TYPES = frozenset({str, type(None)})
_SCALAR_TYPES = frozenset({str, int, float, bool})
_FLAT_TYPES = frozenset({str, int, float, bool, type(None)})
_SPAN_TYPE_SET = frozenset(SPAN_TYPES)
_ENTITY_TYPES_OR_NONE = frozenset({*ENTITY_TYPES, None})
_REQUIRED = frozenset({"trace_id", "span_id", "name", "span_type", "started_at"})
_IGNORED_WIRE = frozenset({*IGNORED_KEYS, "createdAt", "updatedAt"})
_SNAKE_KEYS = frozenset({*WRITABLE_KEYS, *IGNORED_KEYS})
_CAMEL_TO_SNAKE = {field.data_key or name: name for name, field in SpanSchema().load_fields.items()}
_CAMEL_KEYS = frozenset({*_CAMEL_TO_SNAKE, *_IGNORED_WIRE})
_EMPTY_ROW = {**dict.fromkeys(WRITABLE_KEYS), "is_event": False}
_OBJECT_KEYS = frozenset({"scope", "metadata", "attributes", "error", "request_context"})
_ARRAY_KEYS = frozenset({"tags", "links"})
_SCALARS_FIRST_KEYS = ("metadata", "scope")
_texts_of = itemgetter(*OPTIONAL_TEXT_KEYS)
_entity_types_of = itemgetter(*ENTITY_TYPE_KEYS)


def _str_keys(value: Any) -> bool:
    """Whether every dict inside a JSON-encodable value has only ``str`` keys."""
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            return False
        members = value.values()
    elif isinstance(value, (list, tuple)):
        members = value
    else:
        return True
    return all(_str_keys(member) for member in members if isinstance(member, (dict, list, tuple)))


#: In compact JSON a key follows "{" or "," and precedes ":"; json writes int, float, bool and
#: None keys as such strings, so text without one needs no look at the keys themselves.
_CONVERTED_KEY = re.compile(r'[{,]"(?:-?[0-9][0-9.eE+-]*|true|false|null)":')


def scalars_first(value: Any) -> Any:
    """A JSON object with its top-level scalar members before the nested ones (ClickHouse's
    ``visitParam*`` functions take the first occurrence of a key at any depth, §4.3.4)."""
    if not isinstance(value, dict) or _FLAT_TYPES.issuperset(map(type, value.values())):
        return value
    nested = [key for key, member in value.items() if isinstance(member, (dict, list, tuple))]
    ordered = {key: member for key, member in value.items() if key not in nested}
    ordered.update((key, value[key]) for key in nested)
    return ordered


class SpanRows:
    """Turns input spans into rows ready to store, for one backend.

    A row maps every writable field to its value: strings cleaned for the database, timestamps
    as aware UTC datetimes, JSON as :class:`~repository.values.JSONText`.  :meth:`fast` handles
    the common valid record with plain type checks and returns ``None`` for anything else
    (invalid input, wire-form oddities, values that need cleaning); :meth:`from_loaded` builds the
    row from the schema's output, so both paths store exactly the same thing.
    """

    def __init__(self, *, strip_nul: bool, scalars_first: bool, clean: Any) -> None:
        self.strip_nul = strip_nul
        self.scalars_first = scalars_first
        self.clean = clean

    def fast(self, record: Any) -> dict[str, Any] | None:
        """The row of a common valid record, or ``None`` to let the schema decide."""
        if type(record) is not dict:
            return None
        keys = record.keys()
        if not keys <= _SNAKE_KEYS:
            if not keys <= _CAMEL_KEYS:
                return None
            record = {_CAMEL_TO_SNAKE[key]: value for key, value in record.items() if key not in _IGNORED_WIRE}
            keys = record.keys()
        if not _REQUIRED <= keys:
            return None
        row = {**_EMPTY_ROW, **record}
        if not keys.isdisjoint(IGNORED_KEYS):
            for key in IGNORED_KEYS:
                row.pop(key, None)
        trace_id, span_id, name, span_type = row["trace_id"], row["span_id"], row["name"], row["span_type"]
        if type(trace_id) is not str or type(span_id) is not str or type(name) is not str or not trace_id \
                or not span_id or type(span_type) is not str or span_type not in _SPAN_TYPE_SET \
                or type(row["is_event"]) is not bool:
            return None
        texts = _texts_of(row)
        if not _TEXT_TYPES.issuperset(map(type, texts)) or not _ENTITY_TYPES_OR_NONE.issuperset(_entity_types_of(row)):
            return None
        parent = row["parent_span_id"]
        if parent == "":
            row["parent_span_id"] = None
        elif parent == span_id:
            return None
        if not is_storable_text("".join(filter(None, texts)) + trace_id + span_id + name, self.strip_nul):
            return None
        try:
            started = row["started_at"] = to_utc(row["started_at"])
            if row["ended_at"] is not None:
                row["ended_at"] = to_utc(row["ended_at"])
        except (TypeError, ValueError, OverflowError):
            return None
        if row["is_event"] and row["ended_at"] is None:
            row["ended_at"] = started
        for key in JSON_KEYS:
            value = row[key]
            if value is not None:
                text = self._fast_json(key, value)
                if text is None:
                    return None
                row[key] = text
        return row

    def _fast_json(self, key: str, value: Any) -> JSONText | None:
        kind = type(value)
        if kind is dict:
            if key in _ARRAY_KEYS:
                return None
            if self.scalars_first and key in _SCALARS_FIRST_KEYS:
                value = scalars_first(value)
        elif kind is list or kind is tuple:
            if key in _OBJECT_KEYS or (key == "tags" and not _STR.issuperset(map(type, value))):
                return None
        elif key in _OBJECT_KEYS or key in _ARRAY_KEYS or kind not in _SCALAR_TYPES:
            return None
        try:
            # The C encoder rejects every non-JSON type, NaN, infinity and cycles by itself.
            text = json_dumps(value)
        except (TypeError, ValueError, RecursionError):
            return None
        if _CONVERTED_KEY.search(text) and not _str_keys(value):
            return None
        if not is_storable_text(text, False) or (self.strip_nul and "\\u0000" in text):
            return None
        return JSONText(text)

    def from_loaded(self, loaded: dict[str, Any]) -> dict[str, Any]:
        """The row of a record the schema accepted."""
        row = {**_EMPTY_ROW, **loaded}
        for key in OPTIONAL_TEXT_KEYS + ("trace_id", "span_id", "name"):
            if row[key] is not None:
                row[key] = self.clean(row[key])
        for key in JSON_KEYS:
            if row[key] is not None:
                row[key] = self.json(key, row[key])
        return row

    def json(self, key: str, value: Any) -> JSONText | None:
        """A validated JSON value as stored text."""
        if value is None:
            return None
        value = self.clean(value)
        if self.scalars_first and key in _SCALARS_FIRST_KEYS:
            value = scalars_first(value)
        return JSONText(json_dumps(value))


# --------------------------------------------------------------------------- per-backend SQL

class _Dialect(ABC):
    """What this domain's SQL looks like on one backend: table creation, the root and error
    checks, and the filters that look inside JSON."""

    #: On ClickHouse other clients write ``""`` for a missing parent or error.
    blank_is_null: ClassVar[bool] = False
    #: ``list_traces`` filters that an index of the table serves besides the roots' start-time
    #: index; the count of a list filtered by one of them combines the indexes (bitmap scans).
    indexed_filters: ClassVar[frozenset[str]] = frozenset()

    def create_table(self, repository: "ObservabilityRepository") -> None:
        """Create the table (and check an existing one) before the generic columns and indexes."""

    def after_create(self, repository: "ObservabilityRepository") -> None:
        """DDL that needs the complete table (key constraint, trigger)."""

    def root(self, span: Any) -> peewee.Node:
        """The span has no parent."""
        return span.parent_span_id.is_null()

    def not_root(self, span: Any) -> peewee.Node:
        """The span has a parent."""
        return span.parent_span_id.is_null(False)

    @abstractmethod
    def error_present(self, repository: "ObservabilityRepository", span: Any) -> peewee.Node:
        """The span's ``error`` is neither SQL ``NULL`` nor JSON ``null`` (§2.5)."""

    def has_child_error(self, repository: "ObservabilityRepository", wanted: bool) -> peewee.Node:
        """Some span of the root's trace other than a root has an error (``wanted``), or none has."""
        Span = repository.models.span
        child = Span.alias("child")
        exists = peewee.fn.EXISTS(child.select(peewee.SQL("1")).where(
            (child.trace_id == Span.trace_id) & self.not_root(child) & self.error_present(repository, child)))
        return exists if wanted else ~exists

    @abstractmethod
    def tags_condition(self, repository: "ObservabilityRepository", tags: list[str]) -> peewee.Node:
        """The root's ``tags`` contain every tag."""

    def count_roots(self, count: Callable[..., int], filters: dict[str, Any]) -> int:
        """How many roots match ``filters``: ``count(where=None, bitmap=False)`` counts the roots
        the list selects that also meet ``where``, with bitmap scans when asked."""
        # A filter with an index of its own: the count combines it with the roots' index (bitmap
        # scans) instead of reading every root in start-time order.
        return count(bitmap=not self.indexed_filters.isdisjoint(filters))

    def json_condition(self, repository: "ObservabilityRepository", field: Any, filters: dict[str, Any]) -> peewee.Node:
        """Every top-level member of the JSON object in ``field`` equals the filter's value."""
        return repository.backend.metadata_condition(field, filters)


def _pairs_with_duplicates(table: str) -> str:
    return (f'SELECT count(*) FROM (SELECT 1 FROM {table} GROUP BY "traceId", "spanId" '
            f"HAVING count(*) > 1) AS duplicates")


def _create_table_sql(repository: "ObservabilityRepository", key: str) -> str:
    """``CREATE TABLE IF NOT EXISTS`` with the model's columns in order and the given key."""
    backend, Span = repository.backend, repository.models.span
    context = backend.database.get_sql_context()
    columns, _ = context.sql(peewee.CommaNodeList([field.ddl(context) for field in Span._meta.sorted_fields])).query()
    return f"CREATE TABLE IF NOT EXISTS {backend.table_sql(Span)} ({columns}, {key})"


def _duplicates_conflict(count: int) -> ConflictError:
    return ConflictError(f"Cannot add the unique key of {TABLE}: {count} (traceId, spanId) pairs are stored "
                         "more than once", details={"code": "DUPLICATE_SPANS", "duplicates": count})


class _SQLiteDialect(_Dialect):
    KEY = 'UNIQUE ("spanId", "traceId")'

    def create_table(self, repository: "ObservabilityRepository") -> None:
        database = repository.backend.database
        if not database.table_exists(TABLE):
            database.execute_sql(_create_table_sql(repository, self.KEY))
            return
        # Tables of older versions may lack the unique key; the index that adds it would fail
        # on duplicate pairs, so they are counted first and nothing is changed.
        if not self._has_unique_key(database):
            count = database.execute_sql(_pairs_with_duplicates(f'"{TABLE}"')).fetchone()[0]
            if count:
                raise _duplicates_conflict(count)

    @staticmethod
    def _has_unique_key(database: peewee.Database) -> bool:
        for _, name, unique, _, partial in database.execute_sql(f'PRAGMA index_list("{TABLE}")').fetchall():
            if unique and not partial:
                columns = {row[2] for row in database.execute_sql(f'PRAGMA index_info("{name}")').fetchall()}
                if columns == {"traceId", "spanId"}:
                    return True
        return False

    def error_present(self, repository: "ObservabilityRepository", span: Any) -> peewee.Node:
        # json_type of NULL (also of text that is not JSON) is NULL: that error is present.
        kind = peewee.fn.json_type(repository.backend.json_text(span.error))
        return span.error.is_null(False) & (peewee.fn.coalesce(kind, "") != "null")

    def tags_condition(self, repository: "ObservabilityRepository", tags: list[str]) -> peewee.Node:
        document = repository.backend.json_text(repository.models.span.tags)
        condition = None
        for tag in tags:
            term = peewee.NodeList((
                peewee.SQL("EXISTS (SELECT 1 FROM json_each("), document,
                peewee.SQL(") AS tag WHERE tag.type = 'text' AND tag.value = ?)", [tag]),
            ), glue="")
            condition = term if condition is None else condition & term
        return condition

    def json_condition(self, repository: "ObservabilityRepository", field: Any, filters: dict[str, Any]) -> peewee.Node:
        # json_extract gives a string member as its text, other scalars as numbers or NULL, and
        # objects and arrays as JSON text starting with "{" or "[": for any other string the
        # comparison alone is the typed equality, saving the JSON parse of json_type per row.
        document = repository.backend.json_text(field)
        condition = None
        for key, value in filters.items():
            if isinstance(value, str) and not value.startswith(("{", "[")):
                term = peewee.fn.json_extract(document, f"$.{key}") == value
            else:
                term = repository.backend.metadata_condition(field, {key: value})
            condition = term if condition is None else condition & term
        return condition


#: The predicates of PostgreSQL's root filter index and of its oversized-roots index.
_ROOT_ENTRY_FITS = peewee.SQL(ROOT_ENTRY_FITS)
_ROOT_ENTRY_TOO_BIG = peewee.SQL(f"NOT ({ROOT_ENTRY_FITS})")


class _PostgresDialect(_Dialect):
    indexed_filters = frozenset({"trace_id", "span_type", "entity_type", "entity_id", "entity_name",
                                 "organization_id", "user_id", "metadata", "tags"})
    #: Filters whose columns the roots' filter index holds (models.observability.ROOT_FILTER_COLUMNS).
    root_index_filters = frozenset({"entity_type", "entity_id", "entity_name", "user_id", "organization_id",
                                    "environment", "span_type", "tags", "started_at", "ended_at"})
    HAS_PRIMARY_KEY = "SELECT count(*) FROM pg_constraint WHERE conrelid = to_regclass(%s) AND contype = 'p'"
    FUNCTION = """CREATE FUNCTION {schema}.trigger_set_timestamps() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW."createdAt" := timezone('UTC', now());
        NEW."updatedAt" := timezone('UTC', now());
        NEW."createdAtZ" := now();
        NEW."updatedAtZ" := now();
    ELSIF TG_OP = 'UPDATE' THEN
        NEW."updatedAt" := timezone('UTC', now());
        NEW."updatedAtZ" := now();
        NEW."createdAt" := OLD."createdAt";
        NEW."createdAtZ" := OLD."createdAtZ";
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql"""

    def _key_name(self, repository: "ObservabilityRepository") -> str:
        return f"{repository.backend.schema_name or 'public'}_{TABLE}_traceid_spanid_pk"

    def create_table(self, repository: "ObservabilityRepository") -> None:
        backend = repository.backend
        table = backend.table_sql(repository.models.span)
        exists = backend.database.execute_sql("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()[0]
        if not exists:
            key = f'CONSTRAINT "{self._key_name(repository)}" PRIMARY KEY ("traceId", "spanId")'
            backend.database.execute_sql(_create_table_sql(repository, key))
            return
        if not backend.database.execute_sql(self.HAS_PRIMARY_KEY, (table,)).fetchone()[0]:
            count = backend.database.execute_sql(_pairs_with_duplicates(table)).fetchone()[0]
            if count:
                raise _duplicates_conflict(count)

    def after_create(self, repository: "ObservabilityRepository") -> None:
        backend = repository.backend
        database = backend.database
        table = backend.table_sql(repository.models.span)
        schema = f'"{backend.schema_name or "public"}"'
        if not database.execute_sql(self.HAS_PRIMARY_KEY, (table,)).fetchone()[0]:
            database.execute_sql(f'ALTER TABLE {table} ADD CONSTRAINT "{self._key_name(repository)}" '
                                 'PRIMARY KEY ("traceId", "spanId")')
        if database.execute_sql("SELECT to_regprocedure(%s) IS NULL",
                                (f"{schema}.trigger_set_timestamps()",)).fetchone()[0]:
            database.execute_sql(self.FUNCTION.format(schema=schema))
        trigger = database.execute_sql("SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass(%s) "
                                       "AND tgname = 'mastra_ai_spans_timestamps'", (table,)).fetchone()[0]
        if not trigger:
            database.execute_sql(f"CREATE TRIGGER mastra_ai_spans_timestamps BEFORE INSERT OR UPDATE ON {table} "
                                 f"FOR EACH ROW EXECUTE FUNCTION {schema}.trigger_set_timestamps()")

    def error_present(self, repository: "ObservabilityRepository", span: Any) -> peewee.Node:
        return span.error.is_null(False) & (span.error != peewee.Cast(peewee.Value("null", converter=str), "jsonb"))

    def count_roots(self, count: Callable[..., int], filters: dict[str, Any]) -> int:
        if not filters or not self.root_index_filters.issuperset(filters):
            return super().count_roots(count, filters)
        # Index-only scans: the roots whose entry fits the filter index are counted there, the
        # others (normally none) through the oversized-roots index.  Both conditions are the
        # indexes' predicates word for word, which is how the planner matches them.
        return count(where=_ROOT_ENTRY_FITS) + count(where=_ROOT_ENTRY_TOO_BIG)

    def tags_condition(self, repository: "ObservabilityRepository", tags: list[str]) -> peewee.Node:
        return _contains(repository.models.span.tags, tags)

    def json_condition(self, repository: "ObservabilityRepository", field: Any, filters: dict[str, Any]) -> peewee.Node:
        # Containment of {key: scalar} is the type-aware equality of that top-level member (a
        # nested array never contains a bare scalar), and the GIN index on metadata serves it.
        return _contains(field, filters)


def _contains(field: Any, value: Any) -> peewee.Node:
    """PostgreSQL: ``field @> value::jsonb``, the JSON text bound as a parameter."""
    return peewee.Expression(field, "@>", peewee.Cast(peewee.Value(json_dumps(value), converter=str), "jsonb"))


class _ClickHouseDialect(_Dialect):
    blank_is_null = True
    #: Texts other clients write for "no value" (README *Stored formats*, §2.5).
    NO_PARENT = ("", "_null_")
    NO_ERROR = ("", "null", "_null_")

    def root(self, span: Any) -> peewee.Node:
        return span.parent_span_id.is_null() | span.parent_span_id.in_(self.NO_PARENT)

    def not_root(self, span: Any) -> peewee.Node:
        return span.parent_span_id.is_null(False) & span.parent_span_id.not_in(self.NO_PARENT)

    def error_present(self, repository: "ObservabilityRepository", span: Any) -> peewee.Node:
        # The texts are compared as stored, not encoded as JSON like values of the column.
        blanks = [peewee.Value(text, converter=str) for text in self.NO_ERROR]
        return span.error.is_null(False) & span.error.not_in(blanks)

    def has_child_error(self, repository: "ObservabilityRepository", wanted: bool) -> peewee.Node:
        # 18.16 has no correlated subqueries: one FINAL subquery of the traces with a failed child.
        Span = repository.models.span
        failed = repository.backend.select(Span, Span.trace_id).where(self.not_root(Span) & self.error_present(repository, Span))
        return Span.trace_id.in_(failed) if wanted else Span.trace_id.not_in(failed)

    def tags_condition(self, repository: "ObservabilityRepository", tags: list[str]) -> peewee.Node:
        tags_field = repository.models.span.tags
        condition = None
        for tag in tags:
            if repository.backend.features.json_functions:
                # JSONExtract cannot return a Nullable array: a NULL column reads as no tags.
                tags_array = peewee.fn.JSONExtract(peewee.fn.ifNull(tags_field, "[]"), "Array(String)")
                term = peewee.fn.has(tags_array, tag)
            else:
                # Exact for compact JSON: the encoded tag between "[" or "," and "," or "]".
                encoded = json_dumps(tag)
                term = None
                for text in (f"[{encoded},", f"[{encoded}]", f",{encoded},", f",{encoded}]"):
                    found = peewee.fn.position(tags_field, text) > 0
                    term = found if term is None else term | found
            condition = term if condition is None else condition & term
        return condition

    def json_condition(self, repository: "ObservabilityRepository", field: Any, filters: dict[str, Any]) -> peewee.Node:
        json_functions = repository.backend.features.json_functions
        condition = None
        for key, value in filters.items():
            term = (self._member_equals(field, key, value) if json_functions
                    else self._visit_param_equals(field, key, value))
            condition = term if condition is None else condition & term
        return condition

    @staticmethod
    def _member_equals(field: Any, key: str, value: Any) -> peewee.Node:
        kind = peewee.fn.JSONType(field, key)
        has = peewee.fn.JSONHas(field, key) == 1
        if value is None:
            return has & (kind == "Null")
        if isinstance(value, bool):
            return has & (kind == "Bool") & (peewee.fn.JSONExtractBool(field, key) == int(value))
        if isinstance(value, str):
            return has & (kind == "String") & (peewee.fn.JSONExtractString(field, key) == value)
        return has & kind.in_(["Int64", "UInt64", "Double"]) & (peewee.fn.JSONExtractFloat(field, key) == value)

    @staticmethod
    def _visit_param_equals(field: Any, key: str, value: Any) -> peewee.Node:
        # 18.16: visitParam* find the first occurrence of the key at any depth; top-level
        # scalars are written first, so for this library's rows that is the top-level member.
        raw = peewee.fn.visitParamExtractRaw(field, key)
        has = peewee.fn.visitParamHas(field, key) == 1
        if value is None:
            return has & (raw == "null")
        if isinstance(value, bool):
            return has & (raw == ("true" if value else "false"))
        first = peewee.fn.substring(raw, 1, 1)
        if isinstance(value, str):
            return has & (first == '"') & (peewee.fn.visitParamExtractString(field, key) == value)
        return has & first.not_in(['"', "t", "f", "n", "{", "["]) & (peewee.fn.visitParamExtractFloat(field, key) == value)


_DIALECTS: dict[str, _Dialect] = {"SQLITE": _SQLiteDialect(), "PG": _PostgresDialect(),
                                  "CLICKHOUSE": _ClickHouseDialect()}


# --------------------------------------------------------------------------- the repository

class ObservabilityRepository(DomainRepository):
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

    def build_models(self, database: peewee.DatabaseProxy) -> Any:
        return build_observability_models(database, clickhouse=self.backend.name == "CLICKHOUSE")

    @property
    def _dialect(self) -> _Dialect:
        return _DIALECTS[self.backend.name]

    @property
    def _rows(self) -> SpanRows:
        rows = self.__dict__.get("_span_rows")
        if rows is None:
            rows = self.__dict__["_span_rows"] = SpanRows(
                strip_nul=self.backend.strips_nul, scalars_first=self.backend.name == "CLICKHOUSE",
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
            self._dialect.create_table(self)
            self.backend.create_tables(self.tables)
            self._dialect.after_create(self)

    @property
    def observability_strategy(self) -> dict[str, Any]:
        """How tracing exporters should write to this backend (§3.10), as a fresh dict:
        ``{"preferred": <strategy>, "supported": [<strategies>]}``."""
        preferred, supported = STRATEGIES[self.backend.name]
        return {"preferred": preferred, "supported": list(supported)}

    # ------------------------------------------------------------------ record conversion

    def _span_record(self, row: dict[str, Any]) -> dict[str, Any]:
        record = {key: row.get(key) for key in SPAN_KEYS}
        record["is_event"] = bool(record["is_event"])
        if self._dialect.blank_is_null:
            for key in ("parent_span_id", "error"):
                if record[key] == "":
                    record[key] = None
        return record

    @staticmethod
    def _status(record: dict[str, Any]) -> str:
        if record["error"] is not None:
            return "error"
        return "running" if record["ended_at"] is None else "success"

    # ------------------------------------------------------------------ validation of spans

    def _span_row(self, problems: Problems, record: Any, prefix: str) -> dict[str, Any] | None:
        """The stored row of one input span, or ``None`` after recording its problems."""
        row = self._rows.fast(record)
        return row if row is not None else self._checked_row(problems, record, prefix)

    def _checked_row(self, problems: Problems, record: Any, prefix: str) -> dict[str, Any] | None:
        """The schema's verdict on a span the fast path did not accept."""
        if not isinstance(record, dict):
            problems.add(prefix, "Not a valid mapping type.")
            return None
        try:
            loaded = _SPAN_SCHEMA.load(record)
        except marshmallow.ValidationError as error:
            problems.merge(flatten_errors(error.messages), prefix)
            return None
        return self._rows.from_loaded(loaded)

    def _batch_rows(self, records: Any) -> list[dict[str, Any]]:
        """Rows of every record of a batch; one error for all invalid records (§3.3)."""
        if not isinstance(records, (list, tuple)):
            raise ValidationError(fields={"records": ["records must be a list of spans"]})
        rows, errors = [], {}
        fast = self._rows.fast
        for index, record in enumerate(records):
            row = fast(record)
            if row is None:
                problems = Problems()
                row = self._checked_row(problems, record, "")
                if problems:
                    errors[index] = problems.fields
            rows.append(row)
        if errors:
            raise _batch_error(records, errors)
        return rows

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
            name = _CAMEL_TO_SNAKE.get(key, key)
            if name in KEY_FIELDS:
                problems.add(join_path(prefix, name), "Cannot be updated.")
            elif name in NOT_NULL_ON_UPDATE and value is None:
                problems.add(join_path(prefix, name), "Field may not be null.")
            elif key not in _IGNORED_WIRE:
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
        for chunk in peewee.chunked(keys, DELETE_CHUNK):
            query = self.backend.for_update(self.backend.select(Span).where(
                peewee.Tuple(Span.trace_id, Span.span_id).in_(list(chunk))))
            found.update(((row["trace_id"], row["span_id"]), row) for row in query)
        return found

    @operation
    def batch_delete_traces(self, *, trace_ids: list[str], organization_id: str | None = None,
                            resource_id: str | None = None) -> None:
        """Delete every span of these traces (only those of the tenant when ``organization_id``
        or ``resource_id`` is given); unknown ids are ignored."""
        problems = Problems()
        if not isinstance(trace_ids, (list, tuple)) or not all(isinstance(t, str) and t for t in trace_ids):
            problems.add("trace_ids", "trace_ids must be a list of non-empty strings")
        for name, value in (("organization_id", organization_id), ("resource_id", resource_id)):
            if value is not None and not isinstance(value, str):
                problems.add(name, "Not a valid string.")
        problems.raise_if_any()
        ids = list(dict.fromkeys(trace_ids))
        if not ids:
            return
        Span = self.models.span
        with self.backend.write(*(("trace", trace_id) for trace_id in ids)):
            for chunk in peewee.chunked(ids, DELETE_CHUNK):
                where = Span.trace_id.in_(list(chunk))
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
        rows = backend.prepared((Span, "trace"), lambda: backend.select(Span).where(
            Span.trace_id == backend.param("trace_id")).order_by(Span.started_at.asc(), Span.span_id.asc())
        ).rows(trace_id=backend.clean(trace_id))
        spans = [self._span_record(row) for row in rows]
        return {"trace_id": trace_id, "spans": spans} if spans else None

    @operation
    def list_traces(self, *, filters: dict | None = None, page: int = 0, per_page: int | bool = 10,
                    order_by: dict | None = None) -> Page:
        """A page of root spans matching every filter (§3.8), each with its trace ``status``;
        newest first by default."""
        problems = Problems()
        request = check_page(problems, page, per_page, default_per_page=10)
        checked = _check_filters(problems, filters)
        ordering = check_order_by(problems, order_by, allowed=LIST_ORDER_FIELDS, default_field="started_at",
                                  default_direction="DESC")
        problems.raise_if_any()
        Span, backend, dialect = self.models.span, self.backend, self._dialect
        field = getattr(Span, ordering.field)
        if ordering.field == "ended_at":
            # Running roots (no end yet) come first newest-first and last oldest-first.
            first = field.desc(nulls="first") if ordering.descending else field.asc(nulls="last")
            order = [first, Span.trace_id.asc(), Span.span_id.asc()]
        else:
            order = order_terms(field, ordering.descending, Span.trace_id, Span.span_id)
        if PREPARED_FILTERS.issuperset(checked):
            rows, total, has_more = self._prepared_roots(checked, (ordering.field, ordering.descending), order,
                                                         request)
        else:
            query = backend.select(Span).where(dialect.root(Span), *self._filter_conditions(checked))

            def count(query: peewee.ModelSelect) -> int:
                return dialect.count_roots(lambda where=None, bitmap=False: backend.count(
                    query if where is None else query.where(where), bitmap=bitmap), checked)

            rows, total, has_more = fetch_page(backend, query, order, request, count=count)
        items = []
        for row in rows:
            record = self._span_record(row)
            record["status"] = self._status(record)
            items.append(record)
        return Page(items, total, request.page, request.per_page, has_more)

    def _prepared_roots(self, filters: dict[str, Any], ordering: tuple[str, bool], order: list[Any],
                        request: Any) -> tuple[list[dict[str, Any]], int, bool]:
        """The page of a list whose filters all bind as parameters: its statements are rendered
        once per shape (which filters, ranges and statuses, the order), since rendering the
        wide select of spans cost more than running it."""
        Span, backend, dialect = self.models.span, self.backend, self._dialect
        values: dict[str, Any] = {}

        def bind(name: str, field: peewee.Field, value: Any) -> peewee.Node:
            values[name] = field.db_value(value)
            return backend.param(name)

        conditions = self._filter_conditions(filters, bind)  # fills values

        def build() -> peewee.ModelSelect:
            return backend.select(Span).where(dialect.root(Span), *conditions)

        key = (Span, "roots", ordering, tuple(_filter_shape(name, value) for name, value in filters.items()))

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
                error = dialect.error_present(self, Span)
                if value == "error":
                    conditions.append(error)
                else:
                    conditions.append(~error)
                    conditions.append(Span.ended_at.is_null(value == "running"))
            elif key == "has_child_error":
                conditions.append(dialect.has_child_error(self, value))
            elif key == "tags":
                conditions.append(dialect.tags_condition(self, value))
            elif key in ("metadata", "scope"):
                conditions.append(dialect.json_condition(self, getattr(Span, key), value))
        return conditions


def _filter_shape(name: str, value: Any) -> Any:
    """What of a ``list_traces`` filter decides the SQL of its conditions (the rest is bound)."""
    if name in RANGE_FILTERS:
        return (name, "start" in value, "end" in value, bool(value.get("start_exclusive")),
                bool(value.get("end_exclusive")))
    if name in ("status", "has_child_error"):
        return (name, value)
    return name


# --------------------------------------------------------------------------- argument checks

def _check_filters(problems: Problems, filters: Any) -> dict[str, Any]:
    """Validated ``list_traces`` filters (keys with ``None`` and empty lists/dicts dropped)."""
    if filters is None:
        return {}
    if not isinstance(filters, dict):
        problems.add("filters", "Not a valid mapping type.")
        return {}
    checked: dict[str, Any] = {}
    for key, value in filters.items():
        path = f"filters.{key}"
        if key not in FILTER_KEYS:
            problems.add(path, "Unknown field.")
        elif key in ("metadata", "scope"):
            members = check_metadata_filter(problems, path, value)
            if members:
                checked[key] = members
        elif value is None:
            continue
        elif key in TEXT_FILTERS:
            if isinstance(value, str):
                checked[key] = value
            else:
                problems.add(path, "Not a valid string.")
        elif key in CHOICE_FILTERS or key == "status":
            choices = CHOICE_FILTERS.get(key, STATUSES)
            if isinstance(value, str) and value in choices:
                checked[key] = value
            else:
                problems.add(path, _one_of(choices))
        elif key in ("started_at", "ended_at"):
            bounds = _check_range(problems, path, value)
            if bounds:
                checked[key] = bounds
        elif key == "has_child_error":
            flag = {True: True, False: False, "true": True, "false": False}.get(value) \
                if isinstance(value, (bool, str)) else None
            if flag is None:
                problems.add(path, "Not a valid boolean.")
            else:
                checked[key] = flag
        elif key == "tags":
            if not isinstance(value, (list, tuple)):
                problems.add(path, "Not a valid list.")
            else:
                for index, tag in enumerate(value):
                    if not isinstance(tag, str):
                        problems.add(f"{path}[{index}]", "Not a valid string.")
                if value:
                    checked[key] = list(dict.fromkeys(value))
    return checked


def _check_range(problems: Problems, path: str, value: Any) -> dict[str, Any]:
    """A ``{"start", "end", "start_exclusive", "end_exclusive"}`` range of datetimes."""
    if not isinstance(value, dict):
        problems.add(path, "Not a valid mapping type.")
        return {}
    bounds: dict[str, Any] = {}
    for key, item in value.items():
        if key not in RANGE_KEYS:
            problems.add(f"{path}.{key}", "Unknown field.")
        elif item is None:
            continue
        elif key in ("start", "end"):
            try:
                bounds[key] = _TIMESTAMP_FIELD.deserialize(item)
            except marshmallow.ValidationError:
                problems.add(f"{path}.{key}", "Not a valid datetime.")
        elif not isinstance(item, bool):
            problems.add(f"{path}.{key}", "Not a valid boolean.")
        else:
            bounds[key] = item
    if "start" in bounds and "end" in bounds and bounds["start"] > bounds["end"]:
        problems.add(path, "start must not be later than end")
    return bounds


def _batch_error(records: Sequence[Any], errors: dict[int, dict[str, list[str]]]) -> ValidationError:
    """The validation error of a batch with invalid records (§3.3)."""
    fields: dict[str, list[str]] = {}
    invalid, parts = [], []
    for index, messages in errors.items():
        record = records[index]
        ids = {key: _given_id(record, key) for key in ("trace_id", "span_id")}
        invalid.append({"index": index, **ids})
        for path, texts in messages.items():
            fields[join_path(f"records[{index}]", path)] = texts
        if len(parts) < MESSAGE_RECORDS:
            described = ", ".join(f"{path or 'record'}: {' '.join(texts)}" for path, texts in messages.items())
            parts.append(f"records[{index}] (trace_id={ids['trace_id']!r}, span_id={ids['span_id']!r}): {described}")
    more = f"; … {len(errors) - MESSAGE_RECORDS} more" if len(errors) > MESSAGE_RECORDS else ""
    message = f"{len(errors)} of {len(records)} spans are invalid: " + "; ".join(parts) + more
    return ValidationError(message, fields=fields,
                           details={"errors": {index: dict(messages) for index, messages in errors.items()},
                                    "invalid": invalid})


def _given_id(record: Any, key: str) -> Any:
    """An id as the caller gave it (snake_case or wire key), ``None`` when missing."""
    if not isinstance(record, dict):
        return None
    camel = "traceId" if key == "trace_id" else "spanId"
    return record.get(key, record.get(camel))
