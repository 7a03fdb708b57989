"""The queries of the legacy span table (``mastra_ai_spans``, Mastra's layout) per database.

One :class:`LegacyDialect` per backend says what the domain's SQL looks like there: table
creation and key checks, the root conditions and the count of roots; the JSON predicates
they use are the backend's own (``Backend.json_present`` and friends).
:data:`STRATEGIES` are the tracing strategies (§3.10) this layout supports per backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, ClassVar

import peewee

from ..errors import NotSupportedError
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

    def after_create(self, repository: "ObservabilityRepository") -> None:
        """DDL that needs the complete table (PostgreSQL's timestamp trigger); the table, its key
        (``Meta.table_key``), columns and indexes are the backend's (``create_tables``)."""

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

    # -- the span key of older tables (migrate_spans) -------------------------------------

    #: The physical row address that tells duplicate rows apart (``rowid``, ``ctid``).
    row_id: ClassVar[str] = "rowid"
    #: How Mastra's messages call the key.
    key_kind: ClassVar[str] = "unique index"

    def table_name(self, repository: "ObservabilityRepository") -> str:
        """The table's name as Mastra's migration reports print it."""
        return TABLE

    def migration_status(self, repository: "ObservabilityRepository") -> dict[str, Any]:
        """``check_spans_migration_status``: whether the table lacks its ``(traceId, spanId)``
        key and how many pairs repeat (a missing table needs nothing)."""
        backend, Span = repository.backend, repository.models.span
        key = Span._meta.table_key
        status = {"needs_migration": False, "has_duplicates": False, "duplicate_count": 0,
                  "constraint_exists": True, "table_name": self.table_name(repository)}
        if not backend.database.table_exists(TABLE, Span._meta.schema):
            return {**status, "constraint_exists": False}
        if backend.has_key(Span, key):
            return status
        count = backend.repeated_keys(Span, key)
        return {**status, "needs_migration": True, "has_duplicates": count > 0, "duplicate_count": count,
                "constraint_exists": False}

    def migrate(self, repository: "ObservabilityRepository", status: dict[str, Any]) -> str:
        """Delete the repeated pairs but one row each and add the key, in one transaction; the
        message of ``migrate_spans``."""
        backend, Span = repository.backend, repository.models.span
        table, row_id = backend.table_sql(Span), self.row_id
        with backend.ddl():
            # The row kept: the ended one, then the latest updated, the latest created, the first stored.
            backend.database.execute_sql(
                f"DELETE FROM {table} WHERE {row_id} IN (SELECT {row_id} FROM (SELECT {row_id}, row_number() "
                f'OVER (PARTITION BY "traceId", "spanId" ORDER BY ("endedAt" IS NULL), "updatedAt" DESC NULLS LAST, '
                f'"createdAt" DESC NULLS LAST, {row_id}) AS position FROM {table}) AS ranked WHERE position > 1)')
            backend.add_key(Span, Span._meta.table_key)
        removed = "Removed duplicates and added" if status["has_duplicates"] else "Added"
        return f"Migration complete. {removed} {self.key_kind} to {status['table_name']}."

    def already_migrated(self, status: dict[str, Any]) -> str:
        """The message of ``migrate_spans`` on a table that has its key."""
        return f"Migration already complete. {self.key_kind[0].upper()}{self.key_kind[1:]} exists on " \
               f"{status['table_name']}."

    def count_roots(self, count: Callable[..., int], filters: dict[str, Any]) -> int:
        """How many roots match ``filters``: ``count(where=None, bitmap=False)`` counts the roots
        the list selects that also meet ``where``, with bitmap scans when asked."""
        # A filter with an index of its own: the count combines it with the roots' index (bitmap
        # scans) instead of reading every root in start-time order.
        return count(bitmap=not self.indexed_filters.isdisjoint(filters))


#: The predicates of PostgreSQL's root filter index and of its oversized-roots index.
_ROOT_ENTRY_FITS = peewee.SQL(ROOT_ENTRY_FITS)
_ROOT_ENTRY_TOO_BIG = peewee.SQL(f"NOT ({ROOT_ENTRY_FITS})")


class _PostgresDialect(LegacyDialect):
    indexed_filters = frozenset({"trace_id", "span_type", "entity_type", "entity_id", "entity_name",
                                 "organization_id", "user_id", "metadata", "tags"})
    #: Filters whose columns the roots' filter index holds (models.observability.ROOT_FILTER_COLUMNS).
    root_index_filters = frozenset({"entity_type", "entity_id", "entity_name", "user_id", "organization_id",
                                    "environment", "span_type", "tags", "started_at", "ended_at"})
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

    def after_create(self, repository: "ObservabilityRepository") -> None:
        backend = repository.backend
        database = backend.database
        table = backend.table_sql(repository.models.span)
        schema = f'"{backend.schema_name or "public"}"'
        if database.execute_sql("SELECT to_regprocedure(%s) IS NULL",
                                (f"{schema}.trigger_set_timestamps()",)).fetchone()[0]:
            database.execute_sql(self.FUNCTION.format(schema=schema))
        trigger = database.execute_sql("SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass(%s) "
                                       "AND tgname = 'mastra_ai_spans_timestamps'", (table,)).fetchone()[0]
        if not trigger:
            database.execute_sql(f"CREATE TRIGGER mastra_ai_spans_timestamps BEFORE INSERT OR UPDATE ON {table} "
                                 f"FOR EACH ROW EXECUTE FUNCTION {schema}.trigger_set_timestamps()")

    row_id = "ctid"
    key_kind = "PRIMARY KEY constraint"

    def table_name(self, repository: "ObservabilityRepository") -> str:
        schema = repository.backend.schema_name
        return f'"{schema}"."{TABLE}"' if schema else TABLE

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

    key_kind = "sorting key (traceId, spanId)"

    def migration_status(self, repository: "ObservabilityRepository") -> dict[str, Any]:
        # The sorting key deduplicates (FINAL): a table sorted by the pair needs nothing.
        rows = repository.backend.database.execute_sql(
            "SELECT sorting_key FROM system.tables WHERE database = currentDatabase() AND name = %s",
            [repository.backend.storage_table(TABLE)]).fetchall()  # a cluster's: the local table
        keyed = not rows or rows[0][0].replace(" ", "") == "traceId,spanId"
        return {"needs_migration": not keyed, "has_duplicates": False, "duplicate_count": 0,
                "constraint_exists": bool(rows) and keyed, "table_name": TABLE}

    def migrate(self, repository: "ObservabilityRepository", status: dict[str, Any]) -> str:
        raise NotSupportedError(f"{TABLE} is sorted by another key; migrate_spans() cannot change a ClickHouse "
                                "table's sorting key (copy the rows into a table created by init()).")


#: The dialect of each backend, by ``Backend.name``.
LEGACY_DIALECTS: dict[str, LegacyDialect] = {"SQLITE": LegacyDialect(), "PG": _PostgresDialect(),
                                             "CLICKHOUSE": _ClickHouseDialect()}
