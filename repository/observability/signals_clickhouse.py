"""The ClickHouse SQL of the observability signals (observability-vnext.md §3.3, §3.4, §4, §8).

Signal tables are insert-only ``ReplacingMergeTree`` tables without a version column: a batch is
one native block insert, a record sent again is a second row until a merge, and every read keeps
one row per id (the latest ``timestamp``) with ``LIMIT 1 BY`` (§3.4), never ``FINAL``.  18.16
gets the downgraded types of §4 (epoch-millisecond timestamps, ``labels`` as a ``Nested`` pair of
arrays, a plain ``String`` trace id in the score and feedback sorting keys), decided at create
time and read back from ``system.columns`` afterwards.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Sequence

import peewee

from ..errors import NotSupportedError
from ..models.observability_signals import (CH_ADDED_COLUMNS, CH_BLOOM_COLUMNS, CH_COLUMNS, CH_NULLABLE_KEY,
                                            CH_ORDER_BY, ID_COLUMNS)
from ..values import json_dumps
from .signals_sql import SignalSQL
from .vnext_clickhouse import current_layout, downgraded_type

logger = logging.getLogger("composite_store.clickhouse")

#: Table → the key columns its delta table copies (§3.3), with their types, after ``cursorId``
#: and ``ingestedAt``.
DELTA_COLUMNS = {
    "mastra_metric_events": (("name", "LowCardinality(String)"), ("timestamp", "DateTime64(3, 'UTC')"),
                             ("metricId", "String")),
    "mastra_log_events": (("timestamp", "DateTime64(3, 'UTC')"), ("logId", "String")),
    "mastra_score_events": (("traceId", "Nullable(String)"), ("timestamp", "DateTime64(3, 'UTC')"),
                            ("scoreId", "String")),
    "mastra_feedback_events": (("traceId", "Nullable(String)"), ("timestamp", "DateTime64(3, 'UTC')"),
                               ("feedbackId", "String")),
    # Traces emit their root rows only, branches their anchor rows (§9).
    "mastra_trace_roots": (("startedAt", "DateTime64(3, 'UTC')"), ("traceId", "String"), ("dedupeKey", "String")),
    "mastra_trace_branches": (("spanType", "LowCardinality(String)"), ("startedAt", "DateTime64(3, 'UTC')"),
                              ("traceId", "String"), ("spanId", "String"), ("dedupeKey", "String")),
}
#: The cursor of the "fallback" strategy (§3.3): ingest milliseconds since 2026-05-04 shifted
#: left 26 bits, the low bits a fingerprint of the row's id.
FALLBACK_CURSOR = ("bitOr(bitShiftLeft(toUInt64(toUnixTimestamp64Milli(ingestedAt) - 1777852800000), 26), "
                   "bitAnd(farmFingerprint64(toString({key})), toUInt64(67108863)))")
SERIAL_CURSOR = "generateSerialID('{counter}')"
#: The columns of 18.16's ``labels`` (a ``Nested``; the ``Map`` subcolumns of current servers).
LABEL_KEYS, LABEL_VALUES = "labels.keys", "labels.values"
#: Row keys of 18.16's label arrays in a write.
_LABEL_KEYS_FIELD, _LABEL_VALUES_FIELD = "labels_keys", "labels_values"


def signal_type(table: str, column: str, column_type: str, current: bool) -> str:
    """The type of a signal column on a current server, or on 18.16 (§4: a ``String`` trace id
    where it is in the sorting key)."""
    if current:
        return column_type
    if column == "traceId" and table in CH_NULLABLE_KEY:
        return "String DEFAULT ''"
    return downgraded_type(column_type)


class ClickHouseSignalSQL(SignalSQL):
    """The signal tables on one ClickHouse backend."""

    #: Mastra's feedback table has no ``reviewStatus`` column: records read ``needs-review`` (§8.3).
    holds_review_status = False

    # ------------------------------------------------------------------ DDL

    def table_definition(self, table: str) -> tuple[str, dict[str, Any]]:
        """The column list of a signal table on this server and the other arguments of
        :meth:`~composite_store.backends.clickhouse.ClickHouseBackend.create_table`."""
        current = current_layout(self.backend.server_features)
        definitions = [f'"{column}" {signal_type(table, column, column_type, current)}'
                       for column, column_type in CH_COLUMNS[table]]
        if current:
            definitions += [f"INDEX idx_{column} {column} TYPE bloom_filter(0.01) GRANULARITY 2"
                            for column in CH_BLOOM_COLUMNS.get(table, ())]
        return ", ".join(definitions), {
            "engine": "ReplacingMergeTree", "order_by": CH_ORDER_BY[table],
            "partition_by": "toDate(timestamp)" if current else "intDiv(timestamp, 86400000)",
            "settings": "allow_nullable_key = 1" if current and table in CH_NULLABLE_KEY else None}

    def tables_to_migrate(self) -> list[dict[str, str]]:
        """The signal tables whose engine is not a ``ReplacingMergeTree`` (made by older
        versions of the framework): ``[{"table", "engine"}]`` (§12)."""
        self.backend.database.connection().refresh_schema()
        tables = self.backend.server_features.tables
        # On a cluster the rows (and the engine that matters) are in each server's local table.
        stored = {table: self.backend.storage_table(table) for table in CH_COLUMNS}
        return [{"table": table, "engine": tables[stored[table]][0]} for table in CH_COLUMNS
                if stored[table] in tables and not tables[stored[table]][0].endswith("ReplacingMergeTree")]

    def create(self) -> None:
        """Create the missing signal tables (§3.3, on 18.16 §4) and add the columns later
        versions added; signal tables of another engine are refused until
        ``migrate_spans()`` has migrated them (§12)."""
        backend = self.backend
        stale = self.tables_to_migrate()
        if stale:
            raise NotSupportedError(
                "Observability signal tables use an engine other than ReplacingMergeTree: "
                + ", ".join(f"{item['table']} ({item['engine']})" for item in stale)
                + ". Run migrate_spans() to migrate them.",
                id="STORAGE_CLICKHOUSE_INIT_NOT_SUPPORTED", details={"code": "MIGRATION_REQUIRED", "tables": stale})
        for table in CH_COLUMNS:
            columns, options = self.table_definition(table)
            backend.create_table(table, columns, **options)
        backend.database.connection().refresh_schema()
        for table in CH_COLUMNS:
            for column in CH_ADDED_COLUMNS:
                backend.add_column(table, column, "Nullable(String)")
        backend.database.connection().refresh_schema()
        for table in CH_COLUMNS:
            backend.create_distributed(table, (ID_COLUMNS[table],))  # on a cluster: a record's rows on one shard
        if current_layout(backend.server_features) and self.repository.delta_polling and not backend.cluster:
            self._create_delta()

    def migrate_engines(self) -> list[dict[str, str]]:
        """Step 1 of ``migrate_spans()`` (§12): copy each signal table of another engine into a
        new table of the current layout (a missing id made a new UUID, missing columns ``NULL``
        or their default), swap the two and drop the old one.  Returns the tables migrated."""
        stale = self.tables_to_migrate()
        database = self.backend.database
        for item in stale:
            table = item["table"]
            stored = self.backend.server_features.columns.get(table, {})
            target = f"{table}_migrating_{int(time.time() * 1000)}"
            columns, options = self.table_definition(table)
            self.backend.create_table(target, columns, **options)
            id_column = ID_COLUMNS[table]
            # Columns the old table lacks are left out: NULL, or the column's default where it
            # cannot be NULL (tags [], labels map()).
            names = [column for column, _ in CH_COLUMNS[table] if column in stored or column == id_column]
            values = [f"COALESCE(nullIf(\"{column}\", ''), toString(generateUUIDv4()))" if column == id_column
                      else f'"{column}"' for column in names]
            database.execute_sql(f'INSERT INTO "{target}" ({", ".join(f"{chr(34)}{c}{chr(34)}" for c in names)}) '
                                 f'SELECT {", ".join(values)} FROM "{table}"')
            if current_layout(self.backend.server_features):
                database.execute_sql(f'EXCHANGE TABLES "{table}" AND "{target}"')
                database.execute_sql(f'DROP TABLE "{target}"')
            else:  # 18.16 has no EXCHANGE: one RENAME moves both
                database.execute_sql(f'RENAME TABLE "{table}" TO "{target}_old", "{target}" TO "{table}"')
                database.execute_sql(f'DROP TABLE "{target}_old"')
        database.connection().refresh_schema()
        return stale

    # ------------------------------------------------------------------ delta polling (§3.3, §9)

    def _create_delta(self) -> None:
        """The delta table and materialized view of each signal table, with the cursor of the
        strategy the existing views use, else ``serial`` when the server has
        ``generateSerialID`` (Keeper), else ``fallback``."""
        from clickhouse_driver.errors import ServerException

        backend, database = self.backend, self.backend.database
        strategy = self.strategy() or self._probe_strategy()
        if strategy == "mixed":
            return
        for table, columns in DELTA_COLUMNS.items():
            base = table.removeprefix("mastra_")
            delta = f"{table}_delta"
            definitions = ", ".join(f'"{column}" {column_type}' for column, column_type in
                                    (("cursorId", "UInt64"), ("ingestedAt", "DateTime64(9, 'UTC')"), *columns))
            settings = "allow_nullable_key = 1" if table in CH_NULLABLE_KEY else None
            try:
                backend.create_table(delta, definitions, engine="MergeTree", order_by=("cursorId",),
                                     partition_by="toDate(ingestedAt)", ttl="ingestedAt + toIntervalDay(2)",
                                     settings=settings)
            except ServerException:  # a server refusing TTL on DateTime64(9) (framework issue #20684)
                backend.create_table(delta, definitions, engine="MergeTree", order_by=("cursorId",),
                                     partition_by="toDate(ingestedAt)", ttl="toDateTime(ingestedAt) + toIntervalDay(2)",
                                     settings=settings)
            names = ", ".join(f'"{column}"' for column, _ in columns)
            cursor = (SERIAL_CURSOR.format(counter=f"mastra_{base}_delta_cursor") if strategy == "serial"
                      else FALLBACK_CURSOR.format(key=columns[-1][0]))  # the row's key comes last
            database.execute_sql(
                f'CREATE MATERIALIZED VIEW IF NOT EXISTS "mastra_mv_{base}_delta" TO "{delta}" AS SELECT {cursor} AS '
                f'"cursorId", ingestedAt, {names} FROM (SELECT now64(9, \'UTC\') AS ingestedAt, {names} FROM "{table}")')
            if strategy == "serial":
                database.execute_sql(f"SELECT generateSerialID('mastra_{base}_delta_cursor')")  # burn value 0
        database.connection().refresh_schema()
        self.__dict__.pop("_strategy", None)

    def _probe_strategy(self) -> str:
        from clickhouse_driver.errors import ServerException

        try:
            self.backend.database.execute_sql("SELECT generateSerialID('mastra_observability_delta_cursor_probe')")
        except ServerException:
            return "fallback"
        return "serial"

    def strategy(self) -> str | None:
        """The cursor strategy of the existing delta views: ``serial``, ``fallback``, ``mixed``
        (both: delta polling stays off, with one error logged), or ``None`` without views."""
        if "_strategy" not in self.__dict__:
            rows = self.rows("SELECT create_table_query FROM system.tables WHERE database = currentDatabase() "
                             "AND name LIKE 'mastra_mv_%%_delta'", [])
            kinds = {"serial" if "generateSerialID(" in row["create_table_query"] else "fallback" for row in rows}
            strategy = None if not kinds else kinds.pop() if len(kinds) == 1 else "mixed"
            if strategy == "mixed":
                logger.error("The observability delta views mix the serial and fallback cursors; delta polling is "
                             "off until they are made again with one of them.")
            self.__dict__["_strategy"] = strategy
        return self.__dict__["_strategy"]

    def delta_supported(self) -> bool:
        return current_layout(self.backend.server_features) and self.strategy() in ("serial", "fallback")

    def delta_head(self, model: type[peewee.Model]) -> str:
        head = self.rows(f'SELECT max("cursorId") AS "head" FROM "{model._meta.table_name}_delta"', [])
        return str(head[0]["head"] if head else 0)

    def parse_delta_cursor(self, cursor: str) -> Any:
        return int(cursor) if cursor.isdigit() and int(cursor) < 2 ** 64 else None

    def delta(self, model: type[peewee.Model], conditions: Sequence[peewee.Node], position: Any,
              limit: int) -> tuple[list[dict[str, Any]], bool, str]:
        return self.delta_rows(model, self.current_rows(model, conditions), position, limit)

    def delta_rows(self, model: type[peewee.Model], current: tuple[str, list[Any]], position: Any,
                   limit: int) -> tuple[list[dict[str, Any]], bool, str]:
        """The ``current`` rows (``(sql, params)`` selecting the delta key columns) written after
        ``position``, joined to the delta table, in cursor order, each with its ``cursorId``;
        whether more follow; the cursor to continue from (§9)."""
        table = model._meta.table_name
        sql, params = current
        keys = [column for column, _ in DELTA_COLUMNS[table] if column != "traceId"]
        joined = " AND ".join(f'x."{column}" = d."{column}"' for column in keys)
        rows = self.rows(
            f'SELECT x.*, d."cursorId" AS "cursorId" FROM ({sql}) AS x INNER JOIN (SELECT "cursorId", '
            f'{", ".join(f"{chr(34)}{column}{chr(34)}" for column in keys)} FROM "{table}_delta" WHERE "cursorId" > %s) '
            f'AS d ON {joined} ORDER BY d."cursorId" LIMIT {limit + 1}', [*params, position])
        page = rows[:limit]
        return page, len(rows) > limit, str(page[-1]["cursorId"]) if page else self.delta_head(model)

    def ensure_schema(self) -> None:
        """Read the tables' columns when this connection has not yet: the stored types decide
        how timestamps, labels and trace ids are written and read."""
        if "mastra_log_events" not in self.backend.server_features.columns:
            self.backend.database.connection().refresh_schema()

    def exists(self, model: type[peewee.Model]) -> bool:
        self.ensure_schema()
        return model._meta.table_name in self.backend.server_features.tables

    def _nested_labels(self, table: str) -> bool:
        return LABEL_KEYS in self.backend.server_features.columns.get(table, {})

    # ------------------------------------------------------------------ filters

    def has_tag(self, model: type[peewee.Model], tag: str) -> peewee.Node:
        return peewee.fn.has(model.tags, tag)

    def label_value(self, model: type[peewee.Model], key: str) -> peewee.Node:
        # The keys/values subcolumns exist for the Map of current servers and the Nested of 18.16.
        return peewee.SQL(f'"{LABEL_VALUES}"[indexOf("{LABEL_KEYS}", %s)]', [key])

    def review_status_is(self, model: type[peewee.Model], status: str) -> peewee.Node:
        # No reviewStatus column in this layout: every record reads as needing review (§8.3).
        return peewee.SQL("1" if status == "needs-review" else "0")

    def metadata_equals(self, model: type[peewee.Model], key: str, value: Any) -> peewee.Node:
        if self.backend.server_features.json_functions:
            return super().metadata_equals(model, key, value)
        # 18.16: the first member named key at any depth, compared as compact JSON text (§4).
        return peewee.fn.visitParamExtractRaw(model.metadata, key) == json_dumps(value)

    def json_type_is(self, field: peewee.Field, path: tuple, kind: str) -> peewee.Node:
        return peewee.fn.JSONType(field, *_ch_path(path)) == {"object": "Object", "array": "Array"}[kind]

    def json_length_is(self, field: peewee.Field, path: tuple, kind: str, length: int) -> peewee.Node:
        return peewee.fn.JSONLength(field, *_ch_path(path)) == length

    def json_scalar_is(self, field: peewee.Field, path: tuple, value: Any) -> peewee.Node:
        return peewee.fn.JSONExtractRaw(field, *_ch_path(path)) == json_dumps(value)

    # ------------------------------------------------------------------ reads

    def read_columns(self, model: type[peewee.Model]) -> list[str]:
        self.ensure_schema()
        table = model._meta.table_name
        nested = self._nested_labels(table)
        columns = []
        for column, _ in CH_COLUMNS[table]:
            columns.extend((LABEL_KEYS, LABEL_VALUES) if nested and column == "labels" else (column,))
        return columns

    def current_rows(self, model: type[peewee.Model], conditions: Sequence[peewee.Node], *,
                     cursor: bool = False) -> tuple[str, list[Any]]:
        # One row per id, the latest timestamp (§3.4); every filter inside.
        sql, params = super().current_rows(model, conditions, cursor=cursor)
        id_column = ID_COLUMNS[model._meta.table_name]
        return f'{sql} ORDER BY "{id_column}", "timestamp" DESC LIMIT 1 BY "{id_column}"', params

    def iteration_chunk(self, model: type[peewee.Model], kind: Any, conditions: Sequence[peewee.Node],
                        after: peewee.Node | None, limit: int) -> list[dict[str, Any]]:
        # ClickHouse cannot bound the sort that feeds LIMIT 1 BY: a page would sort and dedupe
        # every row after the position, for each chunk.  A top-n sort of the id alone finds the
        # chunk's last id first, and only the rows up to it are deduped.  The first rows may
        # hold fewer ids than the chunk (an id's rows until a merge): the bound moves on until
        # the chunk has ``limit`` ids or the rows end, so only the last chunk is short.
        key = getattr(model, kind.id_key)
        column = f'"{key.column_name}"'
        window = 2 * limit  # rows per look: an id written twice still fills a chunk in one
        start = [] if after is None else [after]
        position, bound, found = start, None, 0
        while found < limit:
            wanted = limit - found
            query = model.select(peewee.SQL(column))
            matching = [*conditions, *position]
            sql, params = (query.where(*matching) if matching else query).sql()
            # The window's row count, its distinct ids, and the wanted-th of them (else its last).
            [look] = self.rows(
                f'SELECT "rows", length("sorted") AS "ids", "sorted"[least(length("sorted"), {wanted})] AS "last" '
                f'FROM (SELECT count() AS "rows", arraySort(groupUniqArray({column})) AS "sorted" '
                f'FROM ({sql} ORDER BY {column} LIMIT {window}))', params)
            if not look["rows"]:
                break
            found, bound, position = found + min(look["ids"], wanted), look["last"], [key > look["last"]]
            if look["rows"] < window:
                break
        if bound is None:
            return []
        rows, _ = self.page(model, kind, [*conditions, *start, key <= bound], column, limit, 0, counted=False)
        return rows

    def limit_sql(self, limit: int | None, offset: int) -> str:
        if limit is None:
            return f" LIMIT {int(offset)}, 18446744073709551615" if offset else ""
        return f" LIMIT {int(offset)}, {int(limit)}"

    def row_values(self, model: type[peewee.Model], row: dict[str, Any]) -> dict[str, Any]:
        if LABEL_KEYS in row:
            row = dict(row)
            row["labels"] = dict(zip(row.pop(LABEL_KEYS), row.pop(LABEL_VALUES)))
        return super().row_values(model, row)

    # ------------------------------------------------------------------ writes

    def write(self, model: type[peewee.Model], kind: Any, rows: list[dict[str, Any]]) -> None:
        """One native block insert per chunk of the columns the batch's records mention; nothing
        is read first (a record sent again is deduplicated when read)."""
        self.ensure_schema()
        rows = self.cleaned(rows)
        table = model._meta.table_name
        nested = self._nested_labels(table)
        plain_trace = table in CH_NULLABLE_KEY and not self.backend.server_features.columns.get(
            table, {}).get("traceId", "Nullable").startswith("Nullable")
        if nested or plain_trace:
            nested_of: dict[tuple, tuple[list[str], list[str]]] = {}  # a batch's labels repeat: split once each
            for row in rows:
                if nested:
                    pairs = tuple(row["labels"].items())
                    split = nested_of.get(pairs)
                    if split is None:
                        ordered = sorted(pairs)
                        split = nested_of[pairs] = ([key for key, _ in ordered], [value for _, value in ordered])
                    row[_LABEL_KEYS_FIELD], row[_LABEL_VALUES_FIELD] = split
                if plain_trace and row.get("trace_id") is None:
                    row["trace_id"] = ""  # 18.16's key column: '' stands for no trace
        fields, names = [], []
        for field in self.insert_fields(model, rows):
            if nested and field.name == "labels":
                fields += [_row_key(_LABEL_KEYS_FIELD), _row_key(_LABEL_VALUES_FIELD)]
                names += [LABEL_KEYS, LABEL_VALUES]
            else:
                fields.append(field)
                names.append(field.column_name)
        quoted = ", ".join(f'"{name}"' for name in names)
        self.backend.execute_rows(f'INSERT INTO "{table}" ({quoted}) VALUES', self.tuples(fields, rows))

    def update_review_status(self, model: type[peewee.Model], feedback_id: str,
                             review_status: str) -> dict[str, Any] | None:
        raise NotSupportedError("This storage provider does not support updating feedback review status",
                                details={"hint": "ClickHouse's feedback table has no reviewStatus column"})


def _ch_path(path: tuple) -> list[Any]:
    """JSON function arguments of a path: keys as they are, indexes 1-based."""
    return [part + 1 if isinstance(part, int) else part for part in path]


def _row_key(name: str) -> peewee.Field:
    """A field standing for one row key of an insert (its value goes to the driver as it is)."""
    field = peewee.Field()
    field.name = name
    return field
