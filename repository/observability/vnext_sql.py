"""The current ("vNext") observability layout on PostgreSQL and SQLite (observability-vnext.md §5–§7,
§10.2, §11): event-sourced tracing on ``mastra_span_events``, PostgreSQL's daily partitions and
``prune()``.

Event-sourced: a span is appended when it starts (``isPending``, ``endedAt`` a copy of its start)
and again when it ends; the two rows differ in ``endedAt``, part of the key, so both are kept and
reads pick the *current* one — of a span's rows the ended one, then the latest ``endedAt``, then
the latest ``cursorId``; of a trace's root rows the one with the highest ``cursorId`` (§5).  So a
running trace is visible, as ``running``, until its end arrives.

What is shared with ClickHouse's insert-only layout lives in :mod:`.vnext`
(:class:`~.vnext.VNextObservabilityRepository`: validation of spans, of filters and pages, the
trace reads built on ``_trace_spans``, ``get_branch``); this module holds the SQL of these two
databases and PostgreSQL's partitions (:class:`Partitions`).  The signal tables (logs, metrics,
scores, feedback) and their methods come with :mod:`.signals`; they are partitioned here with the span table
(:meth:`VNextSQLObservabilityRepository.partitioned_tables`).
"""

from __future__ import annotations

import logging
import re
import threading
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import peewee

from ..base import ITER_CHUNK, check_chunk_size, operation, streaming
from ..backends.base import keyset_chunks
from ..errors import NotSupportedError, ValidationError
from ..models.observability_signals import PARTITION_COLUMNS as SIGNAL_PARTITION_COLUMNS
from ..models.observability_signals import build_observability_signal_models
from ..models.observability_vnext_sql import (ADDED_COLUMNS, DISCOVERY, DISCOVERY_COLUMNS, SPAN_EVENT_COLUMNS,
                                              SPAN_EVENT_INDEXES, SPAN_EVENTS, SPAN_KEY, SPAN_PARTITION_COLUMN, Index,
                                              build_observability_vnext_sql_models, pg_column_sql, sqlite_column_sql)
from ..page import DeltaPage, Page
from ..retention import check_limits, check_policies
from ..schemas.observability import ENTITY_TYPES
from ..validation import Problems, check_id
from ..values import JSONText, json_dumps, json_loads, utc_now
from .filters import (CHOICE_FILTERS, RANGE_FILTERS, TEXT_FILTERS, check_trace_deletion, check_trace_list,
                      check_trace_iteration, range_conditions)
from .records import (BRANCH_SPAN_TYPES, ENTITY_TYPE_KEYS, LIGHT_SPAN_KEYS, SPAN_KEYS, light_list_record,
                      trace_status, traces_of)
from .signals import DELTA_NOT_SUPPORTED, INVALID_DELTA_CURSOR
from .vnext import MAX_DELETE_TRACES, VNextObservabilityRepository, metadata_search, normalized_tags

logger = logging.getLogger("composite_store")

#: ``prune()`` policy keys → the table each prunes (§10.2), in the framework's order.
PRUNE_TABLES = {"spans": SPAN_EVENTS, "metrics": "mastra_metric_events", "logs": "mastra_log_events",
                "scores": "mastra_score_events", "feedback": "mastra_feedback_events"}
PARTITION_MODES = ("auto", "native", "partman", "timescale")
DEFAULT_PARTITIONING = {"mode": "auto", "future_days": 14, "include_yesterday": True}
DEFAULT_DISCOVERY = {"ttl_seconds": 300, "lookback_seconds": 2592000}
#: Rows one SQLite prune batch deletes (one transaction each, §10.2).
SQLITE_PRUNE_BATCH = 1000
#: Spans per multi-row ``INSERT`` (SQLite binds at most 32,766 values per statement).
INSERT_CHUNK = 500
#: SQLSTATE of a row no partition takes.
NO_PARTITION = "23514"
_ENTITY_TYPE_SET = frozenset(ENTITY_TYPES)
_FIELD_OF = {column.name: column.field for column in SPAN_EVENT_COLUMNS}
#: Columns written by an insert (the cursor and transaction ids are the database's).
_INSERT_COLUMNS = tuple(column for column in SPAN_EVENT_COLUMNS if column.pg_type not in ("bigserial", "xid8"))
_BOUND = re.compile(r"TO \('([^']+)'\)")


# --------------------------------------------------------------------------- options


def check_partitioning(problems: Problems, value: Any) -> dict[str, Any]:
    """``partitioning={"mode", "future_days", "include_yesterday"}`` with the framework's defaults."""
    if value is None:
        return dict(DEFAULT_PARTITIONING)
    if not isinstance(value, Mapping):
        problems.add("partitioning", "partitioning must be a dict (mode, future_days, include_yesterday)")
        return dict(DEFAULT_PARTITIONING)
    options = dict(DEFAULT_PARTITIONING)
    for key, item in value.items():
        path = f"partitioning.{key}"
        if key == "mode" and item in PARTITION_MODES:
            options[key] = item
        elif key == "mode":
            problems.add(path, "mode must be one of " + ", ".join(PARTITION_MODES))
        elif key == "future_days" and not isinstance(item, bool) and isinstance(item, int) and 0 <= item <= 3660:
            options[key] = item
        elif key == "future_days":
            problems.add(path, "future_days must be an integer from 0 to 3660")
        elif key == "include_yesterday" and isinstance(item, bool):
            options[key] = item
        elif key == "include_yesterday":
            problems.add(path, "include_yesterday must be a boolean")
        else:
            problems.add(path, "Unknown field.")
    return options


def check_discovery(problems: Problems, value: Any) -> dict[str, Any]:
    """``discovery={"ttl_seconds", "lookback_seconds"}`` with the framework's defaults."""
    if value is None:
        return dict(DEFAULT_DISCOVERY)
    if not isinstance(value, Mapping):
        problems.add("discovery", "discovery must be a dict (ttl_seconds, lookback_seconds)")
        return dict(DEFAULT_DISCOVERY)
    options = dict(DEFAULT_DISCOVERY)
    for key, item in value.items():
        if key not in DEFAULT_DISCOVERY:
            problems.add(f"discovery.{key}", "Unknown field.")
        elif isinstance(item, bool) or not isinstance(item, (int, float)) or item < 0:
            problems.add(f"discovery.{key}", f"{key} must be a number >= 0")
        else:
            options[key] = item
    return options


# --------------------------------------------------------------------------- PostgreSQL partitions


def day_bounds(day: datetime) -> tuple[str, str, str]:
    """The partition bounds of a UTC day and its name suffix: ``('2026-01-02 00:00:00+00',
    '2026-01-03 00:00:00+00', '20260102')``."""
    start = datetime(day.year, day.month, day.day)
    end = start + timedelta(days=1)
    return f"{start:%Y-%m-%d} 00:00:00+00", f"{end:%Y-%m-%d} 00:00:00+00", f"{start:%Y%m%d}"


def pg_code(exc: BaseException) -> str | None:
    """The SQLSTATE of a PostgreSQL error (peewee keeps the driver's error as ``orig``)."""
    for error in (getattr(exc, "orig", None), exc.__cause__, exc):
        code = getattr(error, "pgcode", None)
        if code:
            return code
    return None


class Partitions:
    """Daily partitions of the layout's tables on one PostgreSQL backend (§5): the mode
    (``native``, ``partman``, ``timescale``), the tables' partition clause, the days created
    ahead by :meth:`ensure`, on demand by :meth:`create_days`, and dropped by :meth:`prune`."""

    def __init__(self, backend: Any, options: dict[str, Any]) -> None:
        self.backend = backend
        self.options = options
        #: The resolved mode, known after :meth:`resolve` (run by ``init()``).
        self.mode: str | None = None

    @property
    def schema(self) -> str:
        return self.backend.schema_name or "public"

    def qualified(self, name: str) -> str:
        return f'"{self.schema}"."{name}"'

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.backend.database.execute_sql(sql, params)

    def _extension(self, name: str) -> str | None:
        row = self._execute("SELECT extversion FROM pg_extension WHERE extname = %s", (name,)).fetchone()
        return row[0] if row else None

    def resolve(self) -> str:
        """The mode: as configured, or with ``auto`` timescale if the database has the
        ``timescaledb`` extension, else partman if it has ``pg_partman``, else native."""
        if self.mode is None:
            mode = self.options["mode"]
            if mode == "auto":
                mode = ("timescale" if self._extension("timescaledb") else
                        "partman" if self._extension("pg_partman") else "native")
            self.mode = mode
        return self.mode

    def clause(self, column: str) -> str:
        """What follows a partitioned table's column list: ``PARTITION BY RANGE ("<column>")``,
        nothing in timescale mode (hypertables partition themselves)."""
        return "" if self.resolve() == "timescale" else f'PARTITION BY RANGE ("{column}")'

    def ensure(self, tables: Mapping[str, str]) -> None:
        """Partition each table (name → partition column) in the resolved mode: hypertables,
        partman parents, or native children for yesterday … today + ``future_days``."""
        mode = self.resolve()
        for table, column in tables.items():
            if mode == "timescale":
                self._execute(f"SELECT create_hypertable(%s::regclass, '{column}', chunk_time_interval => "
                              "INTERVAL '1 day', if_not_exists => true)", (self.qualified(table),))
            elif mode == "partman":
                self._partman(table, column)
            else:
                first = -1 if self.options["include_yesterday"] else 0
                today = utc_now()
                self.create_days(table, [today + timedelta(days=offset)
                                         for offset in range(first, self.options["future_days"] + 1)])

    def _partman(self, table: str, column: str) -> None:
        registered = self._execute("SELECT 1 FROM partman.part_config WHERE parent_table = %s",
                                   (f"{self.schema}.{table}",)).fetchone()
        if registered:
            return
        version = self._extension("pg_partman") or "5"
        kind = "range" if int(version.split(".")[0]) >= 5 else "native"
        self._execute("SELECT partman.create_parent(p_parent_table := %s, p_control := %s, p_interval := '1 day', "
                      "p_type := %s)", (f"{self.schema}.{table}", column, kind))

    def children(self, table: str) -> list[tuple[str, str | None]]:
        """The child partitions of ``table``: ``(name, bound expression)``."""
        return self._execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent "
            "JOIN pg_namespace n ON n.oid = p.relnamespace WHERE n.nspname = %s AND p.relname = %s",
            (self.schema, table)).fetchall()

    def create_days(self, table: str, days: Iterable[datetime]) -> None:
        """Create and attach the missing daily children ``<table>_pYYYYMMDD`` of ``days``, in the
        framework's two steps (``CREATE TABLE … (LIKE parent INCLUDING ALL)``, ``ATTACH
        PARTITION``); a child a concurrent caller attached first counts as created."""
        existing = {name for name, _ in self.children(table)}
        parent = self.qualified(table)
        for start, end, suffix in sorted({day_bounds(day) for day in days}):
            name = f"{table}_p{suffix}"
            if name in existing:
                continue
            child = self.qualified(name)
            # 23505: two creators racing past IF NOT EXISTS collide in the catalog's own indexes.
            self._tolerant(f"CREATE TABLE IF NOT EXISTS {child} (LIKE {parent} INCLUDING ALL)",
                           lambda code, message: code in ("42P07", "23505"))
            # A concurrent writer attached it first (PostgreSQL 15 says 42809, others 42P17 or 42710).
            self._tolerant(f"ALTER TABLE {parent} ATTACH PARTITION {child} FOR VALUES FROM ('{start}') TO ('{end}')",
                           lambda code, message: "is already a partition" in message)

    def _tolerant(self, sql: str, done: Callable[[str | None, str], bool]) -> None:
        """Run ``sql`` in a savepoint; an error for which ``done(sqlstate, message)`` holds (a
        racing caller did the same) counts as success."""
        try:
            with self.backend.database.atomic():
                self._execute(sql)
        except peewee.DatabaseError as exc:
            if not done(pg_code(exc), str(exc)):
                raise

    def prune(self, table: str, cutoff: datetime, *, max_batches: int | None,
              max_rows: int | None) -> tuple[int, bool]:
        """Drop the children wholly older than ``cutoff``, oldest first, one batch each (detach,
        then drop); returns ``(rows dropped, done)``.  Timescale: ``drop_chunks``."""
        if self.resolve() == "timescale":
            return self._prune_chunks(table, cutoff, max_batches=max_batches)
        bounded = []
        for name, bound in self.children(table):
            match = _BOUND.search(bound or "")
            if not match:
                continue  # DEFAULT or unparseable: its rows cannot be proven old
            try:
                upper = datetime.fromisoformat(match.group(1).replace("+00", "+00:00"))
            except ValueError:
                continue
            if upper <= cutoff:
                bounded.append((upper, name))
        deleted = batches = 0
        for _, name in sorted(bounded):
            if (max_batches is not None and batches >= max_batches) or (max_rows is not None and deleted >= max_rows):
                return deleted, False
            child = self.qualified(name)
            with self.backend.write():
                rows = self._execute(f"SELECT count(*) FROM {child}").fetchone()[0]
                self._execute(f"ALTER TABLE {self.qualified(table)} DETACH PARTITION {child}")
                self._execute(f"DROP TABLE IF EXISTS {child}")
            deleted += rows
            batches += 1
        return deleted, True

    def _prune_chunks(self, table: str, cutoff: datetime, *, max_batches: int | None) -> tuple[int, bool]:
        if max_batches == 0:
            return 0, False
        with self.backend.write():
            chunks = [row[0] for row in self._execute(
                "SELECT show_chunks(%s::regclass, older_than => %s::timestamptz)::text",
                (self.qualified(table), cutoff)).fetchall()]
            deleted = sum(self._execute(f"SELECT count(*) FROM {chunk}").fetchone()[0] for chunk in chunks)
            self._execute("SELECT drop_chunks(%s::regclass, older_than => %s::timestamptz)",
                          (self.qualified(table), cutoff))
        return deleted, True


# --------------------------------------------------------------------------- the repository


class VNextSQLObservabilityRepository(VNextObservabilityRepository):
    """Event-sourced traces and spans on PostgreSQL or SQLite (§5–§7).

    Example::

        observability = ObservabilityPG(connection_string="postgresql://localhost/app", layout="vnext")
        observability.init()
        observability.create_span(span={"trace_id": "t-1", "span_id": "root", "name": "run",
                                        "span_type": "agent_run", "started_at": "2026-01-02T12:00:00Z"})
        observability.get_root_span(trace_id="t-1")["ended_at"]     # None: running
    """

    #: The constructor's options of this layout (set by :meth:`configure_layout`).
    partitioning: dict[str, Any] = DEFAULT_PARTITIONING
    discovery: dict[str, Any] = DEFAULT_DISCOVERY
    delta_polling: bool = False

    def configure_layout(self, *, partitioning: Any = None, discovery: Any = None, delta_polling: Any = False) -> None:
        """Check and keep the layout's constructor options (§1): PostgreSQL's ``partitioning`` and
        ``discovery``, and ``delta_polling``."""
        problems = Problems()
        self.partitioning = check_partitioning(problems, partitioning)
        self.discovery = check_discovery(problems, discovery)
        if not isinstance(delta_polling, bool):
            problems.add("delta_polling", "delta_polling must be a boolean")
        problems.raise_if_any()
        self.delta_polling = delta_polling
        self.partitions = Partitions(self.backend, self.partitioning) if self.postgres else None

    @property
    def postgres(self) -> bool:
        """Whether this is PostgreSQL (else SQLite)."""
        return self.backend.name == "PG"

    def build_models(self, database: peewee.DatabaseProxy) -> Any:
        models = build_observability_vnext_sql_models(database, postgres=self.backend.name == "PG")
        vars(models).update(vars(build_observability_signal_models(database, self.backend.name)))
        return models

    # ------------------------------------------------------------------ schema

    def partitioned_tables(self) -> dict[str, str]:
        """Every table partitioned by day on PostgreSQL → its partition column."""
        return {SPAN_EVENTS: SPAN_PARTITION_COLUMN, **SIGNAL_PARTITION_COLUMNS}

    def partition_clause(self, column: str) -> str:
        """What follows the column list of a partitioned table's ``CREATE TABLE`` (``""`` on SQLite)."""
        return self.partitions.clause(column) if self.partitions is not None else ""

    def table(self, name: str) -> str:
        """A table's quoted (PostgreSQL: schema-qualified) name."""
        return f'"{self.backend.schema_name or "public"}"."{name}"' if self.postgres else f'"{name}"'

    @operation
    def init(self) -> None:
        """Create the tables of §5 (PostgreSQL: partitioned by day, with their indexes and the
        discovery cache) or §6 (SQLite), add the columns later versions added, and create the
        daily partitions of the partition mode.  Idempotent; tables another client (the framework
        itself) created are kept as they are."""
        self.backend.run_once(f"{self.domain}:{self.layout}", self._create_layout)

    def _create_layout(self) -> None:
        database = self.backend.database
        with self.backend.ddl():
            if self.postgres:
                self.partitions.resolve()
                columns = ", ".join(map(pg_column_sql, SPAN_EVENT_COLUMNS))
                key = ", ".join(f'"{name}"' for name in SPAN_KEY)
                database.execute_sql(f"CREATE TABLE IF NOT EXISTS {self.table(SPAN_EVENTS)} ({columns}, "
                                     f"PRIMARY KEY ({key})) {self.partition_clause(SPAN_PARTITION_COLUMN)}")
                database.execute_sql(f"CREATE TABLE IF NOT EXISTS {self.table(DISCOVERY)} ("
                                     + ", ".join(map(pg_column_sql, DISCOVERY_COLUMNS))
                                     + ', PRIMARY KEY ("cacheKey"))')
            else:
                columns = ", ".join(filter(None, map(sqlite_column_sql, SPAN_EVENT_COLUMNS)))
                key = ", ".join(f'"{name}"' for name in SPAN_KEY)
                database.execute_sql(f'CREATE TABLE IF NOT EXISTS "{SPAN_EVENTS}" ({columns}, UNIQUE ({key}))')
            creating_signals = getattr(self, "create_signal_tables", None)
            if creating_signals is not None:
                creating_signals()
            self.add_missing_columns(ADDED_COLUMNS)
            self.create_indexes(SPAN_EVENTS, SPAN_EVENT_INDEXES)
            if self.postgres:
                self.partitions.ensure(self.partitioned_tables())

    def add_missing_columns(self, columns: Iterable[tuple[str, str, str]]) -> None:
        """Add ``(table, column, definition)`` columns a table created by an older version lacks
        (probed first: ``ALTER TABLE`` locks a partitioned parent)."""
        database = self.backend.database
        for table, column, definition in columns:
            if self.postgres:
                present = database.execute_sql(
                    "SELECT 1 FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
                    "AND column_name = %s", (self.backend.schema_name or "public", table, column)).fetchone()
            else:
                present = any(row[1] == column for row in database.execute_sql(f'PRAGMA table_info("{table}")'))
            if not present:
                definition = definition if self.postgres else definition.replace("boolean", "INTEGER").replace(
                    "DEFAULT false", "DEFAULT 0")
                database.execute_sql(f'ALTER TABLE {self.table(table)} ADD COLUMN "{column}" {definition}')

    def create_indexes(self, table: str, indexes: Iterable[Index]) -> None:
        """Create a table's indexes (§5); SQLite keeps the btree ones, without ``_cursor_idx``."""
        for index in indexes:
            if not self.postgres and (index.using == "gin" or index.name.endswith("_cursor_idx")):
                continue
            using = f" USING {index.using}" if index.using and self.postgres else ""
            where = f" WHERE {index.where}" if index.where else ""
            self.backend.database.execute_sql(
                f'CREATE INDEX IF NOT EXISTS "{index.name}" ON {self.table(table)}{using} {index.columns}{where}')

    def _all_tables(self) -> list[str]:
        """The layout's tables (the partitioned ones, then PostgreSQL's discovery cache)."""
        return [*self.partitioned_tables(), *([DISCOVERY] if self.postgres else [])]

    @operation
    def dangerously_clear_all(self) -> None:
        """Empty every table of the layout and restart its cursor sequence (tests).  Rows are
        deleted rather than truncated: ``TRUNCATE`` of tables with daily partitions replaces the
        files of every child and index, seconds for a few rows."""
        database = self.backend.database
        existing = self._existing_tables()
        tables = [name for name in self._all_tables() if name in existing]
        with self.backend.write():
            for name in tables:
                database.execute_sql(f"DELETE FROM {self.table(name)}")
                if name == DISCOVERY:
                    continue
                if self.postgres:
                    database.execute_sql("SELECT setval(pg_get_serial_sequence(%s, 'cursorId'), 1, false)",
                                         (self.table(name),))
                else:
                    database.execute_sql("DELETE FROM sqlite_sequence WHERE name = ?", (name,))

    def _existing_tables(self) -> set[str]:
        if self.postgres:
            return {row[0] for row in self.backend.database.execute_sql(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s", (self.backend.schema_name or "public",))}
        return {row[0] for row in self.backend.database.execute_sql(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}

    @operation
    def count_rows(self) -> dict[str, int | None]:
        """Current rows (one per span, §5; a score's latest row) per table of the layout but the
        discovery cache; ``None`` for a table ``init()`` has not made."""
        existing = self._existing_tables()
        row = self._alias("r")
        counts: dict[str, int | None] = {
            SPAN_EVENTS: row.select(row.trace_id).where(~self._newer_span(row)).count()
            if SPAN_EVENTS in existing else None}
        for model in vars(self.models).values():
            name = model._meta.table_name
            if name in SIGNAL_PARTITION_COLUMNS:
                if name not in existing:
                    counts[name] = None
                    continue
                current, params = self._signal_sql.current_rows(model, [])
                counts[name] = self.backend.database.execute_sql(f'SELECT count(*) FROM ({current}) AS "current"',
                                                                 params).fetchone()[0]
        return counts

    @operation
    def migrate_spans(self, **arguments: Any) -> dict:
        """Not available here: the legacy table of PostgreSQL and SQLite (``layout="legacy"``)
        is the framework's default, and it has no migration either (§12)."""
        raise NotSupportedError("migrate_spans() is only available on ClickHouse's current layout")

    @operation
    def check_spans_migration_status(self) -> dict:
        """Not available here (see :meth:`migrate_spans`)."""
        raise NotSupportedError("check_spans_migration_status() is only available on ClickHouse's current layout")

    @property
    def observability_strategy(self) -> dict[str, Any]:
        """How tracing exporters should write here (§11): event-sourced, as a fresh dict."""
        return {"preferred": "event-sourced", "supported": ["event-sourced"]}

    def get_features(self) -> tuple[str, ...]:
        """The observability features of this layout (§11), in the framework's order: ClickHouse's
        and ``feedback`` (the framework's PostgreSQL list without the ``trace-query*`` and
        ``thread-query`` features, which this library does not implement)."""
        return (*super().get_features(), "feedback")

    # ------------------------------------------------------------------ writes

    def write_partitioned(self, table: str, days: Iterable[datetime], write: Callable[[], Any]) -> Any:
        """Run ``write()`` (inserts into ``table``); on PostgreSQL a row whose day has no
        partition makes this create the daily partitions of ``days`` and retry once (§5)."""
        if not self.postgres:
            return write()
        try:
            with self.backend.database.atomic():  # a savepoint inside the caller's transaction
                return write()
        except Exception as exc:  # the driver's own error (execute_values) or peewee's
            if pg_code(exc) != NO_PARTITION or self.partitions.resolve() == "timescale":
                raise
        logger.info("Creating the missing daily partitions of %s", table)
        self.partitions.create_days(table, days)
        return write()

    def _append(self, rows: list[dict[str, Any]]) -> None:
        """Store input span rows (:class:`~.records.SpanRows`): the event-sourced rows of §2.1,
        collapsed per key within the batch (the first wins, an ended row beats a pending one),
        one multi-row ``INSERT … ON CONFLICT`` per chunk in one transaction."""
        collapsed: dict[tuple[Any, ...], dict[str, Any]] = {}
        for row in rows:
            pending = not row["is_event"] and row["ended_at"] is None
            row["is_pending"] = pending
            if row["is_event"] or pending:
                row["ended_at"] = row["started_at"]
            tags, metadata = row["tags"], row["metadata"]
            row["tags"] = normalized_tags(json_loads(tags)) if tags is not None else []
            search = metadata_search(json_loads(metadata)) if metadata is not None else {}
            row["metadata_search"] = JSONText(json_dumps(search))
            key = (row["trace_id"], row["span_id"], row["ended_at"])
            stored = collapsed.get(key)
            if stored is None or (stored["is_pending"] and not pending):
                collapsed[key] = row
        Event = self.models.span_event
        fields = [getattr(Event, column.field) for column in _INSERT_COLUMNS]
        values = [tuple(field.db_value(row[field.name]) for field in fields) for row in collapsed.values()]
        days = {row["ended_at"] for row in collapsed.values()}
        with self.backend.write():
            self.write_partitioned(SPAN_EVENTS, days, lambda: self._insert_spans(values))

    def _insert_spans(self, values: list[tuple[Any, ...]]) -> None:
        for start in range(0, len(values), INSERT_CHUNK):
            chunk = values[start:start + INSERT_CHUNK]
            if self.postgres:
                self.backend.execute_rows(self._insert_sql(None), chunk)
            else:
                self.backend.database.execute_sql(self._insert_sql(len(chunk)),
                                                  [value for row in chunk for value in row])

    def _insert_sql(self, rows: int | None) -> str:
        """The span ``INSERT`` (§5): PostgreSQL's for ``execute_values``, SQLite's for ``rows``
        rows; an end row replaces the pending row of its key, any other conflict does nothing."""
        statements = self.__dict__.setdefault("_insert_statements", {})
        if rows not in statements:
            names = [column.name for column in _INSERT_COLUMNS]
            updates = ", ".join(f'"{name}" = EXCLUDED."{name}"' for name in names if name not in SPAN_KEY)
            if self.postgres:
                values = "%s"
            else:
                row = "(" + ", ".join("?" * len(names)) + ")"
                values = ", ".join([row] * rows)
            key = ", ".join(f'"{name}"' for name in SPAN_KEY)
            statements[rows] = (
                f"INSERT INTO {self.table(SPAN_EVENTS)} (" + ", ".join(f'"{name}"' for name in names)
                + f") VALUES {values} ON CONFLICT ({key}) DO UPDATE SET {updates} "
                f'WHERE {SPAN_EVENTS}."isPending" AND NOT EXCLUDED."isPending"')
        return statements[rows]

    @operation
    def batch_delete_traces(self, *, trace_ids: list[str], organization_id: str | None = None,
                            resource_id: str | None = None) -> None:
        """Delete every span of these traces and every log, metric, score and feedback row whose
        ``trace_id`` is listed (only the tenant's rows when ``organization_id`` or
        ``resource_id`` is given), in one transaction; ``[]`` does nothing."""
        problems = Problems()
        check_trace_deletion(problems, trace_ids, organization_id, resource_id)
        if not problems and len(trace_ids) > MAX_DELETE_TRACES:
            problems.add("trace_ids", f"trace_ids must hold at most {MAX_DELETE_TRACES} ids")
        problems.raise_if_any()
        ids = list(dict.fromkeys(trace_ids))
        if not ids:
            return
        param = self.backend.database.param
        where = '"traceId" IN (' + ", ".join([param] * len(ids)) + ")"
        params: list[Any] = list(ids)
        for column, value in (("organizationId", organization_id), ("resourceId", resource_id)):
            if value is not None:
                where += f' AND "{column}" = {param}'
                params.append(value)
        existing = self._existing_tables()
        with self.backend.write():
            for name in self.partitioned_tables():
                if name in existing:
                    self.backend.database.execute_sql(f"DELETE FROM {self.table(name)} WHERE {where}", params)

    # ------------------------------------------------------------------ record conversion

    def _span(self, row: dict[str, Any], keys: Sequence[str] = SPAN_KEYS) -> dict[str, Any]:
        """The span dict of a row read by field name (§2.1): a pending row reads unended, blank
        texts and unknown entity types as ``None``, ``created_at`` the start, ``updated_at``
        ``None``."""
        values = dict(row)
        for field, value in row.items():
            if value == "" and field not in ("tags",):
                values[field] = None
            elif field in ENTITY_TYPE_KEYS and value not in _ENTITY_TYPE_SET:
                values[field] = None
        if values.get("is_pending"):
            values["ended_at"] = None
        values["is_event"] = bool(values.get("is_event"))
        if "tags" in values:
            values["tags"] = list(values["tags"] or ())
        values["created_at"], values["updated_at"] = values.get("started_at"), None
        return {key: values.get(key) for key in keys}

    # ------------------------------------------------------------------ queries

    def _alias(self, name: str) -> Any:
        return self.models.span_event.alias(name)

    def _fields(self, alias: Any, columns: Iterable[str]) -> list[peewee.Field]:
        """The fields of ``alias`` for column names (as :mod:`.vnext` lists them), plus ``isPending``."""
        names = dict.fromkeys([*(_FIELD_OF[column] for column in columns), "is_pending"])
        return [getattr(alias, name) for name in names]

    def _newer_span(self, row: Any) -> peewee.Node:
        """A row of the same span that is more current than ``row`` exists (§5's order)."""
        newer = self._alias("newer")
        ranked = ((newer.is_pending < row.is_pending)
                  | ((newer.is_pending == row.is_pending) & (newer.ended_at > row.ended_at))
                  | ((newer.is_pending == row.is_pending) & (newer.ended_at == row.ended_at)
                     & (newer.cursor_id > row.cursor_id)))
        return _exists(newer.select(peewee.SQL("1")).where(
            (newer.trace_id == row.trace_id) & (newer.span_id == row.span_id) & ranked))

    def _newer_root(self, row: Any) -> peewee.Node:
        """A root row of the same trace written after ``row`` exists (§5)."""
        newer = self._alias("newer")
        return _exists(newer.select(peewee.SQL("1")).where(
            (newer.trace_id == row.trace_id) & newer.parent_span_id.is_null() & (newer.cursor_id > row.cursor_id)))

    def _trace_spans(self, trace_id: str, columns: Sequence[str], keys: Sequence[str],
                     span_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The current spans of a trace (of ``span_ids`` only, when given) by start, span id."""
        row = self._alias("r")
        conditions = [row.trace_id == trace_id, ~self._newer_span(row)]
        if span_ids is not None:
            conditions.append(row.span_id.in_(list(span_ids)))
        query = row.select(*self._fields(row, columns)).where(*conditions).order_by(row.started_at, row.span_id)
        return [self._span(found, keys) for found in query.dicts()]

    @operation
    def get_root_span(self, *, trace_id: str) -> dict | None:
        """The trace's current root (its root row written last), or ``None``."""
        problems = Problems()
        check_id(problems, "trace_id", trace_id)
        problems.raise_if_any()
        row = self._alias("r")
        found = (row.select(*self._fields(row, _SPAN_COLUMNS))
                 .where((row.trace_id == trace_id) & row.parent_span_id.is_null())
                 .order_by(row.cursor_id.desc()).limit(1).dicts().first())
        return None if found is None else self._span(found)

    @streaming
    def iter_spans(self, *, trace_id: str | None = None, chunk_size: int = ITER_CHUNK) -> Iterator[dict]:
        """Every current span (of one trace, or all) as :meth:`get_span` gives them, by trace
        id then span id, read ``chunk_size`` at a time (constant memory)."""
        problems = Problems()
        check_chunk_size(problems, chunk_size)
        if trace_id is not None:
            check_id(problems, "trace_id", trace_id)
        problems.raise_if_any()
        return self._iter_spans(lambda row: [row.trace_id == trace_id] if trace_id is not None else [], chunk_size)

    def _iter_spans(self, scope: Callable[[Any], list[peewee.Node]], chunk_size: int) -> Iterator[dict]:
        """The current spans meeting ``scope(row)`` by trace id then span id, in chunks."""
        row = self._alias("r")
        order = [row.trace_id, row.span_id]
        conditions = [*scope(row), ~self._newer_span(row)]

        def fetch(after: peewee.Node | None, limit: int) -> list[dict[str, Any]]:
            with self.backend.connection():
                query = row.select(*self._fields(row, _SPAN_COLUMNS)).where(*conditions,
                                                                          *([] if after is None else [after]))
                return [self._span(found) for found in query.order_by(*order).limit(limit).dicts()]

        return keyset_chunks(fetch, order, chunk_size)

    @streaming
    def iter_traces(self, *, filters: dict | None = None, chunk_size: int = ITER_CHUNK) -> Iterator[dict]:
        """Every trace as :meth:`get_trace` gives it, by trace id; with ``filters`` (those of
        :meth:`list_traces`) the traces whose current root matches them."""
        checked = check_trace_iteration(filters, chunk_size)
        if not checked:
            return traces_of(self._iter_spans(lambda row: [], chunk_size))
        root = self._alias("root")
        matching = root.select(root.trace_id).where(root.parent_span_id.is_null(), ~self._newer_root(root),
                                                    *self._conditions(root, checked))
        return traces_of(self._iter_spans(lambda row: [row.trace_id.in_(matching)], chunk_size))

    # ------------------------------------------------------------------ lists

    @operation
    def list_traces(self, *, filters: dict | None = None, page: int | None = None, per_page: int | bool | None = None,
                    order_by: dict | None = None, mode: str = "page", after: str | None = None,
                    limit: int | None = None) -> Page | DeltaPage:
        """A page of current root spans matching every filter (§7), each with its trace
        ``status`` (``running`` while the root has not ended); newest first by default.  With
        ``delta_polling=True``, ``mode="delta"`` gives the roots written after the cursor
        ``after`` (a trace seen running comes again when it ends; §9)."""
        return self._list(filters, page, per_page, order_by, mode, after, limit, roots=True, build=self._listed_span)

    @operation
    def list_traces_light(self, *, filters: dict | None = None, page: int | None = None,
                          per_page: int | bool | None = None, order_by: dict | None = None, mode: str = "page",
                          after: str | None = None, limit: int | None = None) -> Page | DeltaPage:
        """:meth:`list_traces` with light list rows (the 17 keys of §2.1)."""
        return self._list(filters, page, per_page, order_by, mode, after, limit, roots=True,
                          build=self._light_listed_span, columns=_LIGHT_LIST_COLUMNS)

    @operation
    def list_branches(self, *, filters: dict | None = None, page: int | None = None,
                      per_page: int | bool | None = None, order_by: dict | None = None, mode: str = "page",
                      after: str | None = None, limit: int | None = None) -> Page | DeltaPage:
        """A page of branch anchors (current spans of the nine branch types, roots or nested)
        matching every filter, each with its own ``status``; newest first by default; ``mode="delta"``
        as :meth:`list_traces` (anchors only)."""
        return self._list(filters, page, per_page, order_by, mode, after, limit, roots=False,
                          build=self._listed_span)

    def _listed_span(self, row: dict[str, Any]) -> dict[str, Any]:
        record = self._span(row)
        record["status"] = trace_status(record)
        return record

    def _light_listed_span(self, row: dict[str, Any]) -> dict[str, Any]:
        return light_list_record(self._span(row, (*LIGHT_SPAN_KEYS, "metadata", "input")), blank_is_null=False)

    def _list(self, filters: Any, page: Any, per_page: Any, order_by: Any, mode: Any, after: Any, limit: Any, *,
              roots: bool, build: Callable[[dict[str, Any]], dict[str, Any]],
              columns: Sequence[str] | None = None) -> Page | DeltaPage:
        request, checked, ordering = check_trace_list(filters, page, per_page, order_by, mode, after, limit,
                                                      roots=roots)
        if mode == "delta" and not self.delta_polling:
            raise NotSupportedError(DELTA_NOT_SUPPORTED)
        row = self._alias("r")
        if roots:
            conditions = [row.parent_span_id.is_null(), ~self._newer_root(row)]
        else:
            span_type = checked.get("span_type")
            if span_type is not None and span_type not in BRANCH_SPAN_TYPES:
                conditions = [peewee.SQL("1 = 0")]  # a non-branch type: nothing
            else:
                conditions = [row.span_type.in_(BRANCH_SPAN_TYPES), ~self._newer_span(row)]
        conditions.extend(self._conditions(row, checked))
        fields = self._fields(row, columns or _SPAN_COLUMNS)
        if mode == "delta":
            return self._delta_page(row, fields, conditions, after, 10 if limit is None else limit, build)
        # The stream's position first: a delta call from it sees every row written after the page.
        delta_cursor = self._signal_sql.delta_head(self.models.span_event) if self.delta_polling else None
        query = row.select(*fields).where(*conditions)
        total = query.count()
        rows: list[dict[str, Any]] = []
        if total and request.limit != 0:
            ordered = query.order_by(*self._order(row, ordering))
            if request.limit:
                ordered = ordered.limit(request.limit).offset(request.offset)
            rows = list(ordered.dicts())
        return Page([build(found) for found in rows], total, request.page, request.per_page, request.has_more(total),
                    delta_cursor=delta_cursor)

    def _delta_page(self, row: Any, fields: list[peewee.Field], conditions: list[peewee.Node], after: str | None,
                    limit: int, build: Callable[[dict[str, Any]], dict[str, Any]]) -> DeltaPage:
        """The anchors written after ``after`` (§9), in stream order; the cursor positions are
        the signals' (PostgreSQL ``"<xactId>:<cursorId>"`` below the oldest running
        transaction, SQLite ``cursorId``)."""
        sql = self._signal_sql
        if after is None:
            return DeltaPage([], limit, False, sql.delta_head(self.models.span_event))
        position = sql.parse_delta_cursor(after)
        if position is None:
            raise ValidationError(fields={"after": [INVALID_DELTA_CURSOR]})
        cursor = [row.cursor_id.alias("cursorId")]
        if self.postgres:
            cursor.append(peewee.Cast(row.xact_id, "text").alias("xactId"))
        found = list(row.select(*fields, *cursor).where(*conditions, *sql.after_position(position))
                     .order_by(peewee.SQL(sql.stream_order)).limit(limit + 1).dicts())
        page = found[:limit]
        head = sql.row_cursor(page[-1]) if page else sql.delta_head(self.models.span_event)
        return DeltaPage([build(item) for item in page], limit, len(found) > limit, head)

    def _order(self, row: Any, ordering: Any) -> list[Any]:
        """``started_at`` or ``ended_at`` (unended rows first newest-first, last oldest-first),
        ties by trace and span id."""
        field = getattr(row, ordering.field)
        terms = []
        if ordering.field == "ended_at":
            terms.append(row.is_pending.desc() if ordering.descending else row.is_pending.asc())
        terms.append(field.desc() if ordering.descending else field.asc())
        return [*terms, row.trace_id.asc(), row.span_id.asc()]

    def _conditions(self, row: Any, filters: dict[str, Any]) -> list[peewee.Node]:
        """The SQL of validated list filters on the anchor row ``row`` (§7)."""
        backend = self.backend
        conditions: list[peewee.Node] = []
        for key, value in filters.items():
            if key in TEXT_FILTERS or key in CHOICE_FILTERS:
                conditions.append(getattr(row, key) == value)
            elif key in RANGE_FILTERS:
                conditions.extend(range_conditions(getattr(row, key), value))
                if key == "ended_at":
                    conditions.append(~row.is_pending)  # an unended span has no end to match
            elif key == "status":
                error = backend.json_present(row.error)
                conditions.append(error if value == "error" else row.is_pending & ~error if value == "running"
                                  else ~error & ~row.is_pending)
            elif key == "has_child_error":
                child = self._alias("c")
                failed = _exists(child.select(peewee.SQL("1")).where(
                    (child.trace_id == row.trace_id) & child.parent_span_id.is_null(False)
                    & backend.json_present(child.error)))
                conditions.append(failed if value else ~failed)
            elif key == "tags":
                tags = [backend.clean(tag) for tag in value]  # an array parameter: mapped as stored tags are
                conditions.append(peewee.Expression(row.tags, "@>", peewee.Cast(peewee.Value(tags, unpack=False),
                                                                                "text[]"))
                                  if self.postgres else backend.json_array_contains_all(row.tags, value))
            elif key in ("metadata", "scope"):
                condition = backend.json_members_equal(row.metadata_search if key == "metadata" else row.scope, value)
                # None: SQLite cannot compare a value holding U+0000 (json_extract cuts it there).
                conditions.append(condition if condition is not None else peewee.SQL("1 = 0"))
        return conditions

    # ------------------------------------------------------------------ retention (§10.2)

    @operation
    def prune(self, *, policies: dict, max_batches: int | None = None, max_rows: int | None = None,
              pause_ms: int = 0, stop: threading.Event | None = None) -> list[dict]:
        """Remove rows older than each policy's ``max_age`` (``"7d"``, milliseconds, …): on
        PostgreSQL by dropping whole daily partitions (detach, then drop; one batch each; a
        day goes once all of it is older), on SQLite by deleting 1,000 rows per transaction.
        ``policies`` is keyed ``spans``, ``metrics``, ``logs``, ``scores``, ``feedback``;
        ``max_batches``/``max_rows`` bound the work per table, ``stop`` ends it.  Returns
        ``{"domain", "table", "deleted", "done"}`` per configured table; nothing is pruned
        automatically."""
        problems = Problems()
        plans = check_policies(problems, "policies", policies, _PRUNE_POLICIES)
        check_limits(problems, max_batches=max_batches, max_rows=max_rows, pause_ms=pause_ms, stop=stop)
        problems.raise_if_any()
        now, existing, columns = utc_now(), self._existing_tables(), self.partitioned_tables()
        results = []
        for plan in plans:
            table = PRUNE_TABLES[plan.table.key]
            cutoff = now - timedelta(milliseconds=plan.max_age_ms)
            if table not in existing or (stop is not None and stop.is_set()):
                deleted, done = 0, table not in existing
            elif self.postgres:
                deleted, done = self.partitions.prune(table, cutoff, max_batches=max_batches, max_rows=max_rows)
            else:
                deleted, done = self._delete_older(table, columns[table], cutoff, max_batches=max_batches,
                                                   max_rows=max_rows, stop=stop)
            results.append({"domain": self.domain, "table": table, "deleted": deleted, "done": done})
        return results

    def _delete_older(self, table: str, column: str, cutoff: datetime, *, max_batches: int | None,
                      max_rows: int | None, stop: Any) -> tuple[int, bool]:
        """SQLite: delete rows older than ``cutoff`` in batches, each its own transaction."""
        bound = self.models.span_event.started_at.db_value(cutoff)  # ISO text, as every time column
        sql = (f'DELETE FROM "{table}" WHERE rowid IN (SELECT rowid FROM "{table}" WHERE "{column}" < ? LIMIT ?)')
        deleted = batches = 0
        while True:
            limit = SQLITE_PRUNE_BATCH if max_rows is None else min(SQLITE_PRUNE_BATCH, max_rows - deleted)
            if limit <= 0 or (max_batches is not None and batches >= max_batches) or (stop and stop.is_set()):
                return deleted, False
            with self.backend.write():
                count = self.backend.database.execute_sql(sql, (bound, limit)).rowcount
            deleted += count
            batches += 1
            if count < limit:
                return deleted, True


def _exists(query: peewee.SelectQuery) -> peewee.Node:
    """``EXISTS (<query>)``."""
    return peewee.NodeList((peewee.SQL("EXISTS"), query))


#: Columns read for a full span and for a light list row (column names, as :mod:`.vnext`).
_SPAN_COLUMNS = tuple(column.name for column in SPAN_EVENT_COLUMNS
                      if column.name not in ("cursorId", "xactId", "metadataSearch"))
_LIGHT_LIST_COLUMNS = ("traceId", "spanId", "parentSpanId", "name", "spanType", "isEvent", "startedAt", "endedAt",
                       "error", "entityType", "entityId", "entityName", "metadataRaw", "input")
#: The policy keys of :meth:`VNextSQLObservabilityRepository.prune` (checked by :mod:`..retention`).
_PRUNE_POLICIES = VNextSQLObservabilityRepository.retention_tables
