"""The SQL of the observability signals (observability-vnext.md §5, §6, §8): what every
database shares (:class:`SignalSQL`: filters as conditions, pages of the current rows, stored
rows read back) and what PostgreSQL (:class:`PostgresSignalSQL`) and SQLite
(:class:`SQLiteSignalSQL`) do their own way: the DDL, idempotent batch writes with the
framework's conflict rules, which score row is current, JSON and tag comparisons.  ClickHouse's
is :class:`~.signals_clickhouse.ClickHouseSignalSQL`.
"""

from __future__ import annotations

import functools
import operator
from itertools import chain
from typing import Any, Sequence

import peewee

from ..backends.base import value_converter, value_tuples
from ..models.fields import JSONField
from ..models.observability_signals import (ID_COLUMNS, MODEL_NAMES, PG_ADDED_COLUMNS, PG_COLUMNS, PG_CURSOR, PG_INDEXES,
                                            PARTITION_COLUMNS, EventTimestampField, pg_column_sql, sqlite_type)
from ..values import json_dumps, json_loads
from .filters import range_conditions

#: Row keys whose text the record checks do not clean (lists, dicts, aliases, feedback values):
#: :meth:`SignalSQL.cleaned` does, before a write.
CLEANED_AFTER = ("tags", "labels", "value_string", "data", "metadata", "scope", "cost_metadata", "execution_source",
                 "score_source", "feedback_source")
#: Field types whose checked values the driver takes as they are (no per-value call).
_AS_CHECKED = (peewee.DoubleField, peewee.FloatField, peewee.Field)
#: Fields the database fills itself (never sent by writes).
CURSOR_FIELDS = ("cursor_id", "xact_id")


class SignalSQL:
    """What the signal queries of every database share; a backend overrides only its own
    spelling (tags, labels, JSON, dedupe, writes, DDL)."""

    #: Whether feedback keeps its ``review_status`` (else every record reads ``needs-review``).
    holds_review_status = True

    def __init__(self, repository: Any) -> None:
        self.repository = repository
        self.backend = repository.backend

    # ------------------------------------------------------------------ filters (§8.2)

    def conditions(self, model: type[peewee.Model], kind: Any, filters: dict[str, Any]) -> list[peewee.Node]:
        """The SQL of validated filters (:func:`~.signals.check_signal_filters`), to be ANDed."""
        conditions: list[peewee.Node] = []
        for key, value in filters.items():
            if key == "timestamp":
                conditions.extend(range_conditions(model.timestamp, value))
            elif key == "tags":
                conditions.extend(self.has_tag(model, tag) for tag in value)
            elif key == "labels":
                conditions.extend(self.label_value(model, name) == text for name, text in value.items())
            elif key == "metadata":
                conditions.extend(self.metadata_equals(model, name, member) for name, member in value.items())
            elif key == "trace_ids":
                conditions.append(model.trace_id.in_(value))
            elif key == "review_status":
                conditions.append(self.review_status_is(model, value))
            elif isinstance(value, list):
                conditions.append(getattr(model, key).in_(value))
            else:
                conditions.append(getattr(model, key) == value)
        return conditions

    def has_tag(self, model: type[peewee.Model], tag: str) -> peewee.Node:
        """The row's tags hold ``tag``."""
        raise NotImplementedError

    def label_value(self, model: type[peewee.Model], key: str) -> peewee.Node:
        """The value of metric label ``key`` (``''`` or ``NULL`` when absent)."""
        raise NotImplementedError

    def review_status_is(self, model: type[peewee.Model], status: str) -> peewee.Node:
        """Feedback whose review status is ``status``."""
        return model.review_status == status

    def metadata_equals(self, model: type[peewee.Model], key: str, value: Any) -> peewee.Node:
        """The top-level member ``key`` of the row's metadata equals ``value`` as JSON (§8.2:
        type-aware scalars, objects regardless of key order, arrays in order, no partial match).
        Written here from three primitives of the database (:meth:`json_type_is`,
        :meth:`json_length_is`, :meth:`json_scalar_is`)."""
        return self._json_equals(model.metadata, (key,), value)

    def _json_equals(self, field: peewee.Field, path: tuple, value: Any) -> peewee.Node:
        if isinstance(value, dict):
            terms = [self.json_type_is(field, path, "object"), self.json_length_is(field, path, "object", len(value))]
            terms += [self._json_equals(field, (*path, key), member) for key, member in value.items()]
        elif isinstance(value, list):
            terms = [self.json_type_is(field, path, "array"), self.json_length_is(field, path, "array", len(value))]
            terms += [self._json_equals(field, (*path, index), member) for index, member in enumerate(value)]
        else:
            terms = [self.json_scalar_is(field, path, value)]
        return functools.reduce(operator.and_, terms)

    def json_type_is(self, field: peewee.Field, path: tuple, kind: str) -> peewee.Node:
        """The JSON value at ``path`` (keys and 0-based indexes) is an ``object`` or ``array``."""
        raise NotImplementedError

    def json_length_is(self, field: peewee.Field, path: tuple, kind: str, length: int) -> peewee.Node:
        """The object or array at ``path`` has ``length`` members."""
        raise NotImplementedError

    def json_scalar_is(self, field: peewee.Field, path: tuple, value: Any) -> peewee.Node:
        """The JSON value at ``path`` is the scalar ``value`` (of the same JSON type)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ reads

    def exists(self, model: type[peewee.Model]) -> bool:
        """Whether the table of ``model`` exists."""
        return self.backend.database.table_exists(model._meta.table_name, model._meta.schema)

    def read_columns(self, model: type[peewee.Model]) -> list[str]:
        """The stored columns a read selects."""
        return [field.column_name for field in model._meta.sorted_fields if field.name not in CURSOR_FIELDS]

    def current_rows(self, model: type[peewee.Model], conditions: Sequence[peewee.Node], *,
                     cursor: bool = False) -> tuple[str, list[Any]]:
        """``(sql, params)`` of a select of every column of the current rows meeting
        ``conditions`` (every row here; scores override), with ``cursor`` the stream position
        columns of delta polling too."""
        selected = [peewee.SQL(f'"{column}"') for column in self.read_columns(model)]
        query = model.select(*selected, *(self.cursor_columns() if cursor else ()))
        sql, params = (query.where(*conditions) if conditions else query).sql()
        return sql, list(params)

    def cursor_columns(self) -> list[peewee.Node]:
        """The columns holding a row's position in the change stream (§9)."""
        return []

    def iteration_key(self, model: type[peewee.Model], kind: Any) -> list[peewee.Field]:
        """The unique key of the current rows that iteration walks: the id, where reads keep
        one row per id (ClickHouse's read-time dedupe).  A keyset condition on it keeps or drops
        every row of an id alike, so the dedupe still sees them all."""
        return [getattr(model, kind.id_key)]

    def iteration_chunk(self, model: type[peewee.Model], kind: Any, conditions: Sequence[peewee.Node],
                        after: peewee.Node | None, limit: int) -> list[dict[str, Any]]:
        """One chunk of an iteration: up to ``limit`` current rows meeting ``conditions`` after
        the keyset position ``after`` (``None``: from the start), in :meth:`iteration_key`
        order; fewer only at the end."""
        order = ", ".join(f'"{field.column_name}"' for field in self.iteration_key(model, kind))
        rows, _ = self.page(model, kind, [*conditions, *([] if after is None else [after])], order, limit, 0,
                            counted=False)
        return rows

    def limit_sql(self, limit: int | None, offset: int) -> str:
        """The ``LIMIT``/``OFFSET`` clause of a page (``limit`` ``None``: every row)."""
        if limit is None:
            return f" LIMIT -1 OFFSET {int(offset)}" if offset else ""
        return f" LIMIT {int(limit)} OFFSET {int(offset)}"

    def page(self, model: type[peewee.Model], kind: Any, conditions: Sequence[peewee.Node], order: str,
             limit: int | None, offset: int, *, counted: bool = True) -> tuple[list[dict[str, Any]], int]:
        """The current rows meeting ``conditions`` in ``order`` (SQL over column names),
        ``limit`` of them from ``offset``, and how many there are (0 unless ``counted``)."""
        inner, params = self.current_rows(model, conditions)
        total = self.rows(f'SELECT count(*) AS "total" FROM ({inner}) AS "current"', params)[0]["total"] \
            if counted else 0
        if limit == 0 or (counted and offset >= total):
            return [], total
        rows = self.rows(f'SELECT * FROM ({inner}) AS "current" ORDER BY {order}{self.limit_sql(limit, offset)}',
                         params)
        return rows, total

    def rows(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        """The rows of a query as dicts keyed by column name."""
        cursor = self.backend.database.execute_sql(sql, params)
        names = [column[0] for column in cursor.description or ()]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    def row_values(self, model: type[peewee.Model], row: dict[str, Any]) -> dict[str, Any]:
        """A stored row (keyed by column) as field name → Python value: timestamps aware UTC
        datetimes, JSON decoded, blank nullable texts ``None``."""
        columns = model._meta.columns
        database = self.backend.database
        values: dict[str, Any] = {}
        for column, value in row.items():
            field = columns.get(column)
            if field is None:
                continue
            if isinstance(field, EventTimestampField):
                value = None if value is None else database.timestamp_from_db(field, value)
            elif isinstance(field, JSONField) or column in ("tags", "labels"):
                value = json_loads(value)
            elif value == "" and field.null:
                value = None
            values[field.name] = value
        return values

    # ------------------------------------------------------------------ delta polling (§9)

    def delta_supported(self) -> bool:
        """Whether this database can follow the signal tables' changes."""
        return True

    def delta_head(self, model: type[peewee.Model]) -> str:
        """The cursor of the stream's present position."""
        raise NotImplementedError

    def parse_delta_cursor(self, cursor: str) -> Any:
        """The position a cursor names, or ``None`` for a string that is not a cursor here."""
        raise NotImplementedError

    def delta(self, model: type[peewee.Model], conditions: Sequence[peewee.Node], position: Any,
              limit: int) -> tuple[list[dict[str, Any]], bool, str]:
        """Up to ``limit`` current rows meeting ``conditions`` that became visible after
        ``position``, in stream order; whether more follow; the cursor to continue from."""
        raise NotImplementedError

    # ------------------------------------------------------------------ writes

    def insert_fields(self, model: type[peewee.Model], rows: Sequence[dict[str, Any]] | None = None
                      ) -> list[peewee.Field]:
        """The fields a write sends, in column order (the cursor columns are the database's);
        with ``rows``, only those some row has a key for: the columns no record of the batch
        mentions are left to the table's default (``NULL``, ``[]``, ``{}``), which spares the
        driver encoding a column of nulls (records carry a few of the 40-odd context fields)."""
        fields = [field for field in model._meta.sorted_fields if field.name not in CURSOR_FIELDS]
        if rows is None:
            return fields
        present = set().union(*rows)
        return [field for field in fields if field.name in present]

    def write(self, model: type[peewee.Model], kind: Any, rows: list[dict[str, Any]]) -> None:
        """Write a batch of checked rows, all or nothing (one transaction)."""
        raise NotImplementedError

    def tuples(self, fields: Sequence[peewee.Field], rows: Sequence[dict[str, Any]]) -> list[tuple]:
        """The rows as driver tuples in the order of ``fields``; the timestamp's conversion is
        the database's bulk converter, picked once (its column kind looked up once).  Numbers
        (floats once checked) and plain fields (ClickHouse's tags and labels) go as they are."""
        converters = [self.backend.database.timestamp_converter(field) if isinstance(field, EventTimestampField)
                      else None if type(field) in _AS_CHECKED else value_converter(self.backend, field)
                      for field in fields]
        return value_tuples(self.backend, fields, rows, converters=converters)

    def cleaned(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows with the characters this database cannot store removed (README *Characters
        that cannot be stored*: unpaired surrogates, and U+0000 on PostgreSQL) from the values
        the record checks left (:data:`CLEANED_AFTER`).  Column by column: a column whose text,
        joined, is ASCII without U+0000 (the usual case) is only looked at, once."""
        clean, strips_nul = self.backend.clean, self.backend.features.strips_nul
        keys = set().union(*rows).intersection(CLEANED_AFTER)
        for key in keys:
            values = [row.get(key) for row in rows]
            text = _column_text(key, values)
            if text.isascii() and "\x00" not in text:
                continue
            for row, value in zip(rows, values):
                if value is None:
                    continue
                if type(value) is str:
                    if not value.isascii() or (strips_nul and "\x00" in value):
                        row[key] = clean(value)
                elif type(value) is list:  # tags
                    if not all(tag.isascii() for tag in value):
                        value = row[key] = [clean(tag) for tag in value]
                    if strips_nul:
                        row[key] = clean(value)
                elif type(value) is dict:  # labels; JSON documents lost their surrogates when checked
                    if key == "labels" and not all(name.isascii() and text.isascii() for name, text in value.items()):
                        value = row[key] = {clean(name): clean(text) for name, text in value.items()}
                    if strips_nul:
                        row[key] = clean(value)
        return rows

    def delete(self, model: type[peewee.Model], where: peewee.Expression, operation: str) -> None:
        """Delete the rows matching ``where`` (ClickHouse: an awaited mutation; ``operation``
        names the method in its errors)."""
        with self.backend.write():
            self.backend.delete_bulk(model, where, operation=operation)

    def update_review_status(self, model: type[peewee.Model], feedback_id: str,
                             review_status: str) -> dict[str, Any] | None:
        """Set the review status of every row of the feedback; its latest row after the
        change, or ``None`` when there is none."""
        with self.backend.write():
            updated = model.update({model.review_status: review_status}).where(
                model.feedback_id == feedback_id).execute()
            if not updated:
                return None
            rows, _ = self.page(model, None, [model.feedback_id == feedback_id], '"timestamp" DESC', 1, 0,
                                counted=False)
        return rows[0] if rows else None


def _column_text(key: str, values: list[Any]) -> str:
    """All the text of a column's values, joined, as :meth:`SignalSQL.cleaned` may skip it:
    strings, tags, labels' keys and values; for any other column (JSON documents) U+0000, which
    sends it through the value-by-value cleaning."""
    kinds = set(map(type, values)) - {type(None)}
    try:
        if kinds <= {str}:
            return "".join(filter(None, values))
        if kinds == {list}:
            return "".join(chain.from_iterable(values))
        if kinds == {dict} and key == "labels":
            present = list(filter(None, values))
            return "".join(chain.from_iterable(present)) + "".join(chain.from_iterable(map(dict.values, present)))
    except TypeError:  # not text throughout
        pass
    return "\x00"


def last_per_key(rows: list[dict[str, Any]], *keys: str) -> list[dict[str, Any]]:
    """One row per value of ``keys``, the last one winning, in first-seen order."""
    kept: dict[tuple, dict[str, Any]] = {}
    for row in rows:
        kept[tuple(row[key] for key in keys)] = row
    return list(kept.values())


class RelationalSignalSQL(SignalSQL):
    """PostgreSQL and SQLite (§5, §6): event-sourced tables keyed (id, ``timestamp``), with a
    ``cursorId`` per row; a score's current row is its latest ``cursorId``."""

    #: The order of the change stream.
    stream_order = '"cursorId"'

    def current_rows(self, model: type[peewee.Model], conditions: Sequence[peewee.Node], *,
                     cursor: bool = False) -> tuple[str, list[Any]]:
        if model._meta.table_name == "mastra_score_events":
            newer = model.alias("newer")
            conditions = [*conditions, ~peewee.fn.EXISTS(newer.select(peewee.SQL("1")).where(
                (newer.score_id == model.score_id) & (newer.cursor_id > model.cursor_id)))]
        return super().current_rows(model, conditions, cursor=cursor)

    def cursor_columns(self) -> list[peewee.Node]:
        return [peewee.SQL('"cursorId"')]

    def iteration_key(self, model: type[peewee.Model], kind: Any) -> list[peewee.Field]:
        # Rows are unique per (id, timestamp); scores keep one current row per id.
        key = super().iteration_key(model, kind)
        return key if kind.name == "scores" else [*key, model.timestamp]

    def delta(self, model: type[peewee.Model], conditions: Sequence[peewee.Node], position: Any,
              limit: int) -> tuple[list[dict[str, Any]], bool, str]:
        inner, params = self.current_rows(model, [*conditions, *self.after_position(position)], cursor=True)
        rows = self.rows(f'SELECT * FROM ({inner}) AS "current" ORDER BY {self.stream_order} LIMIT {limit + 1}',
                         params)
        page = rows[:limit]
        return page, len(rows) > limit, self.row_cursor(page[-1]) if page else self.delta_head(model)

    def after_position(self, position: Any) -> list[peewee.Node]:
        """The conditions of rows visible after ``position`` (and, on PostgreSQL, whose
        transaction no running one precedes)."""
        raise NotImplementedError

    def row_cursor(self, row: dict[str, Any]) -> str:
        """The cursor of a row read with its cursor columns."""
        raise NotImplementedError

    def conflict_sql(self, model: type[peewee.Model], kind: Any, fields: Sequence[peewee.Field]) -> str:
        """The ``ON CONFLICT`` clause of a batch (§5): logs and metrics keep the first row,
        scores and feedback take the new one."""
        id_column = ID_COLUMNS[model._meta.table_name]
        target = f'ON CONFLICT ("{id_column}", "timestamp")'
        if kind.name in ("logs", "metrics"):
            return f"{target} DO NOTHING"
        sets = [f'"{field.column_name}" = excluded."{field.column_name}"' for field in fields
                if field.column_name not in (id_column, "timestamp")]
        return f"{target} DO UPDATE SET {', '.join(sets)}"

    def collapsed(self, kind: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows of a batch as one statement may write them: scores one per (id,
        ``timestamp``), feedback one per id, the last winning (§5)."""
        if kind.name == "scores":
            return last_per_key(rows, "score_id", "timestamp")
        if kind.name == "feedback":
            return last_per_key(rows, "feedback_id")
        return rows

    def write(self, model: type[peewee.Model], kind: Any, rows: list[dict[str, Any]]) -> None:
        rows = self.collapsed(kind, self.cleaned(rows))
        # Scores and feedback replace a stored row: every column is sent, so none keeps an old value.
        fields = self.insert_fields(model, rows if kind.name in ("logs", "metrics") else None)
        columns = ", ".join(f'"{field.column_name}"' for field in fields)
        sql = (f"INSERT INTO {self.backend.table_sql(model)} ({columns}) VALUES "
               f"{self.backend.row_placeholder(len(fields))} {self.conflict_sql(model, kind, fields)}")
        values = self.tuples(fields, rows)
        table = model._meta.table_name

        def write() -> None:
            self.before_insert(model, kind, rows)
            self.backend.execute_rows(sql, values)

        with self.backend.write():
            partitioned = getattr(self.repository, "write_partitioned", None)
            if partitioned is None:
                write()
            else:
                partitioned(table, [row[field_of(model, PARTITION_COLUMNS[table])] for row in rows], write)

    def before_insert(self, model: type[peewee.Model], kind: Any, rows: list[dict[str, Any]]) -> None:
        """What runs in the write's transaction before its insert."""

    # ------------------------------------------------------------------ DDL

    def column_definitions(self, table: str) -> list[str]:
        """The column definitions of ``table`` on this database."""
        raise NotImplementedError

    def create(self) -> None:
        """Create the missing tables with their keys, add the columns later versions added,
        create the missing indexes."""
        for table, columns in PG_COLUMNS.items():
            model = getattr(self.repository.models, MODEL_NAMES[table])
            self.backend.database.execute_sql(
                f"CREATE TABLE IF NOT EXISTS {self.backend.table_sql(model)} ({', '.join(self.column_definitions(table))})"
                f"{self.partition_clause(table)}")
            existing = self.existing_columns(model)
            for column in PG_ADDED_COLUMNS.get(table, ()):
                if column not in existing:
                    spec = dict(columns)[column]
                    self.backend.database.execute_sql(
                        f"ALTER TABLE {self.backend.table_sql(model)} ADD COLUMN {self.added_column_sql(column, spec)}")
            for suffix, column_sql, method in PG_INDEXES[table]:
                if self.has_index(suffix, method):
                    using = f" USING {method}" if method else ""
                    self.backend.database.execute_sql(
                        f'CREATE INDEX IF NOT EXISTS "{table}_{suffix}" ON {self.backend.table_sql(model)}{using} '
                        f"({column_sql})")

    def partition_clause(self, table: str) -> str:
        """What follows a table's column list (PostgreSQL's partitioning)."""
        return ""

    def existing_columns(self, model: type[peewee.Model]) -> set[str]:
        """The columns the stored table has."""
        return {column.name for column in self.backend.database.get_columns(model._meta.table_name,
                                                                            model._meta.schema)}

    def added_column_sql(self, column: str, spec: str) -> str:
        """The definition of a column added to an older table."""
        raise NotImplementedError

    def has_index(self, suffix: str, method: str | None) -> bool:
        """Whether this database has the index of §5 named ``<table>_<suffix>``."""
        return True


class PostgresSignalSQL(RelationalSignalSQL):
    """PostgreSQL (§5): ``jsonb`` documents and labels, ``text[]`` tags, ``xid8`` cursors."""

    def has_tag(self, model: type[peewee.Model], tag: str) -> peewee.Node:
        return peewee.SQL('"tags" @> %s::text[]', [[self.backend.clean(tag)]])

    def label_value(self, model: type[peewee.Model], key: str) -> peewee.Node:
        return peewee.SQL('("labels" ->> %s)', [key])

    def metadata_equals(self, model: type[peewee.Model], key: str, value: Any) -> peewee.Node:
        # jsonb equality is the deep, type-aware equality of §8.2.
        return peewee.SQL('("metadata" -> %s) = %s::jsonb', [key, json_dumps(self.backend.clean(value))])

    def column_definitions(self, table: str) -> list[str]:
        key = f'PRIMARY KEY ("{ID_COLUMNS[table]}", "timestamp")'
        return [pg_column_sql(column, spec) for column, spec in (*PG_CURSOR, *PG_COLUMNS[table])] + [key]

    def partition_clause(self, table: str) -> str:
        # The repository's partitioning (vnext_sql.py) says how: PARTITION BY RANGE, or nothing.
        clause = getattr(self.repository, "partition_clause", None)
        sql = clause(PARTITION_COLUMNS[table]) if clause is not None else ""
        return f" {sql}" if sql else ""

    def added_column_sql(self, column: str, spec: str) -> str:
        return pg_column_sql(column, spec)

    # Delta polling (§9): a row's position is (its transaction, its cursorId); only transactions
    # older than every running one are read, so a later commit never lands behind a cursor.

    stream_order = '"xactId", "cursorId"'
    _HORIZON = "pg_snapshot_xmin(pg_current_snapshot())"

    def cursor_columns(self) -> list[peewee.Node]:
        return [peewee.SQL('"cursorId"'), peewee.SQL('"xactId"::text AS "xactId"')]

    def delta_head(self, model: type[peewee.Model]) -> str:
        return f"{self.backend.database.execute_sql(f'SELECT {self._HORIZON}::text').fetchone()[0]}:0"

    def parse_delta_cursor(self, cursor: str) -> Any:
        parts = cursor.split(":")
        if len(parts) != 2 or not all(part.isdigit() and int(part) < 2 ** 63 for part in parts):
            return None
        return int(parts[0]), int(parts[1])

    def after_position(self, position: Any) -> list[peewee.Node]:
        return [peewee.SQL('("xactId", "cursorId") > (%s::text::xid8, %s::bigint)', [str(position[0]), position[1]]),
                peewee.SQL(f'"xactId" < {self._HORIZON}')]

    def row_cursor(self, row: dict[str, Any]) -> str:
        return f"{row['xactId']}:{row['cursorId']}"


class SQLiteSignalSQL(RelationalSignalSQL):
    """SQLite (§6): JSON text for documents, tags and labels, ``cursorId`` the rowid."""

    def has_tag(self, model: type[peewee.Model], tag: str) -> peewee.Node:
        return peewee.SQL('EXISTS (SELECT 1 FROM json_each("tags") WHERE value = ?)', [tag])

    # JSON members are reached through json_each (key = ?), never through a JSON path: a path
    # cannot name a key holding '"' or U+0000, which records may have.

    @staticmethod
    def _member_sql(field: peewee.Field, path: tuple, column: str) -> tuple[str, list[Any]]:
        """``(sql, params)`` of the ``value`` or ``type`` of the JSON member at ``path`` (keys,
        0-based indexes) of ``field``."""
        parent, params = f'"{field.column_name}"', []
        for part in path[:-1]:
            parent = f"(SELECT value FROM json_each({parent}) WHERE key = ?)"
            params.append(part)
        return f"(SELECT {column} FROM json_each({parent}) WHERE key = ?)", [*params, path[-1]]

    def _member(self, field: peewee.Field, path: tuple, column: str) -> peewee.Node:
        return peewee.SQL(*self._member_sql(field, path, column))

    def label_value(self, model: type[peewee.Model], key: str) -> peewee.Node:
        return self._member(model.labels, (key,), "value")

    def json_type_is(self, field: peewee.Field, path: tuple, kind: str) -> peewee.Node:
        return self._member(field, path, "type") == kind

    def json_length_is(self, field: peewee.Field, path: tuple, kind: str, length: int) -> peewee.Node:
        sql, params = self._member_sql(field, path, "value")
        return peewee.SQL(f"(SELECT count(*) FROM json_each({sql}))", params) == length

    def json_scalar_is(self, field: peewee.Field, path: tuple, value: Any) -> peewee.Node:
        json_type = self._member(field, path, "type")
        if value is None or isinstance(value, bool):
            return json_type == {None: "null", True: "true", False: "false"}[value]
        types = ["text"] if isinstance(value, str) else ["integer"] if isinstance(value, int) else ["real", "integer"]
        return json_type.in_(types) & (self._member(field, path, "value") == value)

    def column_definitions(self, table: str) -> list[str]:
        key = f'UNIQUE ("{ID_COLUMNS[table]}", "timestamp")'
        return ['"cursorId" INTEGER PRIMARY KEY AUTOINCREMENT'] + [
            f'"{column}" {sqlite_type(spec)}' for column, spec in PG_COLUMNS[table]] + [key]

    def added_column_sql(self, column: str, spec: str) -> str:
        return f'"{column}" {sqlite_type(spec)}'

    def has_index(self, suffix: str, method: str | None) -> bool:
        return method is None and not suffix.endswith("cursor_idx")  # §6: no GIN, no cursor indexes

    # Delta polling (§9): one writer at a time, so rowids become visible in order.

    def delta_head(self, model: type[peewee.Model]) -> str:
        head = self.backend.database.execute_sql(f'SELECT max("cursorId") FROM {self.backend.table_sql(model)}')
        return str(head.fetchone()[0] or 0)

    def parse_delta_cursor(self, cursor: str) -> Any:
        return int(cursor) if cursor.isdigit() and int(cursor) < 2 ** 63 else None

    def after_position(self, position: Any) -> list[peewee.Node]:
        return [peewee.SQL('"cursorId" > ?', [position])]

    def row_cursor(self, row: dict[str, Any]) -> str:
        return str(row["cursorId"])

    def before_insert(self, model: type[peewee.Model], kind: Any, rows: list[dict[str, Any]]) -> None:
        # A score written again gets a new cursorId (the current one): its old row goes first (§6).
        if kind.name == "scores":
            timestamp = model.timestamp
            self.backend.database.connection().executemany(
                f'DELETE FROM {self.backend.table_sql(model)} WHERE "scoreId" = ? AND "timestamp" = ?',
                [(row["score_id"], timestamp.db_value(row["timestamp"])) for row in rows])


def field_of(model: type[peewee.Model], column: str) -> str:
    """The field name of ``column`` in ``model``."""
    return model._meta.columns[column].name
