"""The queries of the legacy span table (``mastra_ai_spans``, Mastra's layout) per database.

One :class:`LegacyDialect` per backend says what the domain's SQL looks like there: table
creation and key checks, the root conditions and the count of roots; the JSON predicates
they use are the backend's own (``Backend.json_present`` and friends).
:data:`STRATEGIES` are the tracing strategies (§3.10) this layout supports per backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, ClassVar

import peewee

from ..errors import ConflictError
from ..models.observability import ROOT_ENTRY_FITS, TABLE

if TYPE_CHECKING:
    from .repository import ObservabilityRepository

#: Tracing strategies (§3.10): what exporters should do, per backend.
STRATEGIES = {
    "SQLITE": ("batch-with-updates", ("batch-with-updates", "realtime", "insert-only")),
    "PG": ("batch-with-updates", ("batch-with-updates", "realtime", "insert-only")),
    "CLICKHOUSE": ("insert-only", ("insert-only", "batch-with-updates")),
}


class LegacyDialect:
    """What this domain's SQL looks like on one backend: table creation and key checks, the
    root checks, and the count of roots (the JSON predicates are the backend's own)."""

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

    def has_child_error(self, repository: "ObservabilityRepository", wanted: bool) -> peewee.Node:
        """Some span of the root's trace, the root included, has an error (``wanted``), or none
        has: Mastra's legacy adapters count the root too (fidelity-1.71 §3.1)."""
        Span = repository.models.span
        span = Span.alias("failed")
        exists = peewee.fn.EXISTS(span.select(peewee.SQL("1")).where(
            (span.trace_id == Span.trace_id) & repository.backend.json_present(span.error)))
        return exists if wanted else ~exists

    def count_roots(self, count: Callable[..., int], filters: dict[str, Any]) -> int:
        """How many roots match ``filters``: ``count(where=None, bitmap=False)`` counts the roots
        the list selects that also meet ``where``, with bitmap scans when asked."""
        # A filter with an index of its own: the count combines it with the roots' index (bitmap
        # scans) instead of reading every root in start-time order.
        return count(bitmap=not self.indexed_filters.isdisjoint(filters))


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


class _SQLiteDialect(LegacyDialect):
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


#: The predicates of PostgreSQL's root filter index and of its oversized-roots index.
_ROOT_ENTRY_FITS = peewee.SQL(ROOT_ENTRY_FITS)
_ROOT_ENTRY_TOO_BIG = peewee.SQL(f"NOT ({ROOT_ENTRY_FITS})")


class _PostgresDialect(LegacyDialect):
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

    def count_roots(self, count: Callable[..., int], filters: dict[str, Any]) -> int:
        if not filters or not self.root_index_filters.issuperset(filters):
            return super().count_roots(count, filters)
        # Index-only scans: the roots whose entry fits the filter index are counted there, the
        # others (normally none) through the oversized-roots index.  Both conditions are the
        # indexes' predicates word for word, which is how the planner matches them.
        return count(where=_ROOT_ENTRY_FITS) + count(where=_ROOT_ENTRY_TOO_BIG)


class _ClickHouseDialect(LegacyDialect):
    blank_is_null = True
    #: Texts other clients write for "no value" (README *Stored formats*, §2.5).
    NO_PARENT = ("", "_null_")

    def root(self, span: Any) -> peewee.Node:
        return span.parent_span_id.is_null() | span.parent_span_id.in_(self.NO_PARENT)

    def has_child_error(self, repository: "ObservabilityRepository", wanted: bool) -> peewee.Node:
        # 18.16 has no correlated subqueries: one FINAL subquery of the traces with a failed span.
        Span = repository.models.span
        failed = repository.backend.select(Span, Span.trace_id).where(repository.backend.json_present(Span.error))
        return Span.trace_id.in_(failed) if wanted else Span.trace_id.not_in(failed)


#: The dialect of each backend, by ``Backend.name``.
LEGACY_DIALECTS: dict[str, LegacyDialect] = {"SQLITE": _SQLiteDialect(), "PG": _PostgresDialect(),
                                             "CLICKHOUSE": _ClickHouseDialect()}
