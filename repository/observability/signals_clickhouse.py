"""The ClickHouse SQL of the observability signals (observability-vnext.md §3.3, §3.4, §4, §8).

Signal tables are insert-only ``ReplacingMergeTree`` tables without a version column: a batch is
one native block insert, a record sent again is a second row until a merge, and every read keeps
one row per id (the latest ``timestamp``) with ``LIMIT 1 BY`` (§3.4), never ``FINAL``.  18.16
gets the downgraded types of §4 (epoch-millisecond timestamps, ``labels`` as a ``Nested`` pair of
arrays, a plain ``String`` trace id in the score and feedback sorting keys), decided at create
time and read back from ``system.columns`` afterwards.
"""

from __future__ import annotations

from typing import Any, Sequence

import peewee

from ..errors import NotSupportedError
from ..models.observability_signals import (CH_ADDED_COLUMNS, CH_BLOOM_COLUMNS, CH_COLUMNS, CH_NULLABLE_KEY,
                                            CH_ORDER_BY, ID_COLUMNS)
from ..backends.base import value_tuples
from ..values import json_dumps
from .signals_sql import SignalSQL
from .vnext_clickhouse import current_layout, downgraded_type

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

    # ------------------------------------------------------------------ DDL

    def create(self) -> None:
        """Create the missing signal tables (§3.3, on 18.16 §4) and add the columns later
        versions added."""
        backend = self.backend
        current = current_layout(backend.server_features)
        for table, columns in CH_COLUMNS.items():
            definitions = [f'"{column}" {signal_type(table, column, column_type, current)}'
                           for column, column_type in columns]
            if current:
                definitions += [f"INDEX idx_{column} {column} TYPE bloom_filter(0.01) GRANULARITY 2"
                                for column in CH_BLOOM_COLUMNS.get(table, ())]
            backend.create_table(table, ", ".join(definitions), engine="ReplacingMergeTree",
                                 order_by=CH_ORDER_BY[table],
                                 partition_by="toDate(timestamp)" if current else "intDiv(timestamp, 86400000)",
                                 settings="allow_nullable_key = 1" if current and table in CH_NULLABLE_KEY else None)
        for table in CH_COLUMNS:
            for column in CH_ADDED_COLUMNS:
                backend.add_column(table, column, "Nullable(String)")
        backend.database.connection().refresh_schema()

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

    def current_rows(self, model: type[peewee.Model], conditions: Sequence[peewee.Node]) -> tuple[str, list[Any]]:
        # One row per id, the latest timestamp (§3.4); every filter inside.
        sql, params = super().current_rows(model, conditions)
        id_column = ID_COLUMNS[model._meta.table_name]
        return f'{sql} ORDER BY "{id_column}", "timestamp" DESC LIMIT 1 BY "{id_column}"', params

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
        """One native block insert per chunk; nothing is read first (a record sent again is
        deduplicated when read)."""
        self.ensure_schema()
        table = model._meta.table_name
        nested = self._nested_labels(table)
        fields, names = [], []
        for field in self.insert_fields(model):
            if nested and field.name == "labels":
                fields += [_row_key(_LABEL_KEYS_FIELD), _row_key(_LABEL_VALUES_FIELD)]
                names += [LABEL_KEYS, LABEL_VALUES]
            else:
                fields.append(field)
                names.append(field.column_name)
        plain_trace = table in CH_NULLABLE_KEY and not self.backend.server_features.columns.get(
            table, {}).get("traceId", "Nullable").startswith("Nullable")
        if nested or plain_trace:
            for row in rows:
                if nested:
                    labels = dict(sorted(row["labels"].items()))
                    row[_LABEL_KEYS_FIELD], row[_LABEL_VALUES_FIELD] = list(labels), list(labels.values())
                if plain_trace and row.get("trace_id") is None:
                    row["trace_id"] = ""  # 18.16's key column: '' stands for no trace
        quoted = ", ".join(f'"{name}"' for name in names)
        self.backend.execute_rows(f'INSERT INTO "{table}" ({quoted}) VALUES', value_tuples(self.backend, fields, rows))

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
