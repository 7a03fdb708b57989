"""The ClickHouse SQL of the current ("vNext") tracing layout (observability-vnext.md §3.2, §3.4, §4).

:class:`VNextClickHouseSQL` creates the three tracing tables and the two materialized views, in
the exact types of current servers or, where the server lacks them (18.16), the nearest ones
(§4); and it wraps a filtered select of one table in the read-time dedupe of §3.4 (``LIMIT 1 BY
dedupeKey``, the latest ``endedAt`` first), never ``FINAL``.  Retention (§10.1) is a ``TTL`` per
table, reconciled by :meth:`VNextClickHouseSQL.apply_retention`.  A signal table of the layout adds
its DDL beside these.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping, Sequence

import peewee

from ..backends.clickhouse import ClickHouseBackend, ClickHouseFeatures
from ..models.observability_signals import PARTITION_COLUMNS, SIGNAL_TABLES
from ..models.observability_vnext import (ADDED_COLUMNS, ORDER_BY, PARTITION_COLUMN, SHARD_KEY, SPAN_COLUMNS, SPAN_EVENTS,
                                         VIEWS)
from ..validation import Problems

#: Column of the 18.16 layout standing for ``metadataSearch`` (a ``Nested``: keys and values).
SEARCH_KEYS, SEARCH_VALUES = "metadataSearch.keys", "metadataSearch.values"
#: A column named in an ``ORDER BY`` clause.
_ORDER_COLUMN = re.compile(r'"(\w+)"')
#: Columns that every row of one span holds alike: duplicates are retries, or a start row and
#: its end row (§3.4).
_SPAN_CONSTANT = frozenset({"dedupeKey", "traceId", "spanId", "startedAt"})
#: The first server version whose parts store a mark after their last granule (adaptive index
#: granularity).
FINAL_MARK_VERSION = (19, 6)


#: The signals of ``retention={…}`` (§10.1) → (their tables, the column their TTL counts from).
RETENTION_SIGNALS: dict[str, tuple[tuple[str, ...], str]] = {
    "tracing": (tuple(ORDER_BY), PARTITION_COLUMN),
    **{signal: ((table,), PARTITION_COLUMNS[table]) for signal, table in SIGNAL_TABLES.items()},
}


def retention_days(retention: Any, ttl_days: int | None) -> dict[str, int | None]:
    """The days each signal's rows are kept (``None``: remove its TTL), from ``retention``
    (``{"tracing": 7, …}``) and the ``ttl_days`` shorthand for every signal ``retention`` does not
    name.  As the framework does, non-positive and non-finite days are ignored (the signal keeps
    its TTL) and fractions are floored.  Raises :class:`~repository.errors.ValidationError` naming
    each bad key (``retention.<signal>``)."""
    days: dict[str, int | None] = {signal: ttl_days for signal in RETENTION_SIGNALS} if ttl_days else {}
    if retention is None:
        return days
    problems = Problems()
    if not isinstance(retention, Mapping):
        problems.add("retention", "retention must be a dict of days per signal ("
                     + ", ".join(RETENTION_SIGNALS) + ")")
        problems.raise_if_any()
    for signal, value in retention.items():
        path = f"retention.{signal}"
        if signal not in RETENTION_SIGNALS:
            problems.add(path, f"unknown signal {signal!r}; one of " + ", ".join(RETENTION_SIGNALS))
        elif value is None:
            days[signal] = None
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.add(path, f"{path} must be a number of days or None (no TTL)")
        elif math.isfinite(value) and value >= 1:
            days[signal] = int(value)
        else:
            days.pop(signal, None)  # ignored: the table keeps whatever TTL it has
    problems.raise_if_any()
    return days


def current_layout(features: ClickHouseFeatures) -> bool:
    """Whether the server takes the exact types of §3 (``DateTime64``, ``Bool``, ``Map`` and a
    production ``LowCardinality`` all come with the ``Bool`` type's 21.12), else §4's."""
    return features.datetime64 and features.bool_type


def downgraded_type(column_type: str) -> str:
    """The 18.16 type of a column of current servers (§4's table)."""
    if column_type.startswith("DateTime64"):
        return "Int64"
    if column_type.startswith("Bool"):
        return "UInt8 DEFAULT 0"
    if column_type.startswith("Map("):
        return "Nested(keys String, values String)"
    column_type = column_type.replace(" DEFAULT []", " DEFAULT emptyArrayString()")
    return re.sub(r"LowCardinality\(((?:Nullable\()?String\)?)\)", r"\1", column_type)


class VNextClickHouseSQL:
    """DDL and read SQL of the tracing tables on one ClickHouse backend."""

    def __init__(self, backend: ClickHouseBackend) -> None:
        self.backend = backend

    # ------------------------------------------------------------------ DDL

    def columns_sql(self) -> str:
        """The column list of the three tracing tables on this server."""
        current = current_layout(self.backend.server_features)
        return ", ".join(f'"{column}" {column_type if current else downgraded_type(column_type)}'
                         for column, _, column_type in SPAN_COLUMNS)

    def create(self) -> None:
        """Create the missing tables, add the columns later versions added, create the missing
        views (§3.2); on a cluster (the backend's ``cluster``) the views join the local tables of
        each server and a ``Distributed`` table per table is sharded by :data:`SHARD_KEY`."""
        backend = self.backend
        current = current_layout(backend.server_features)
        partition = f"toDate({PARTITION_COLUMN})" if current else f"intDiv({PARTITION_COLUMN}, 86400000)"
        columns = self.columns_sql()
        backend.check_cluster_tables(list(ORDER_BY))
        for table, order_by in ORDER_BY.items():
            backend.create_table(table, columns, engine="ReplacingMergeTree", order_by=order_by, partition_by=partition)
        # Columns before views: a view made now copies the columns of tables that already agree.
        # The views' targets first: the views copy every column of mastra_span_events.
        backend.database.connection().refresh_schema()
        for table in reversed(ORDER_BY):
            for column in ADDED_COLUMNS:
                backend.add_column(table, column, "Nullable(String)")
        backend.database.connection().refresh_schema()
        for view, (table, condition) in VIEWS.items():
            backend.create_materialized_view(view, table, SPAN_EVENTS, f"SELECT * FROM {{source}} WHERE {condition}")
        for table in ORDER_BY:
            backend.create_distributed(table, SHARD_KEY)
        backend.database.connection().refresh_schema()

    def apply_retention(self, days: Mapping[str, int | None]) -> None:
        """Give each configured signal's tables ``TTL <column> + toIntervalDay(N)`` (§10.1), or no
        TTL for ``None``; an ``ALTER`` runs only where the server's TTL differs.  A server without
        TTL (18.16) logs one warning and keeps everything."""
        backend = self.backend
        wanted = {table: (column, days[signal]) for signal, (tables, column) in RETENTION_SIGNALS.items()
                  if signal in days for table in tables}
        setting = "retention " + ", ".join(f"{signal}={days[signal]}" for signal in days
                                           if RETENTION_SIGNALS[signal][0])
        if not wanted or not backend.ttl_supported(setting, list(wanted)):
            return
        for table, (column, kept) in wanted.items():
            if kept is None:
                backend.reconcile_ttl(table, None)
                continue
            interval = f" + toIntervalDay({kept})"
            backend.reconcile_ttl(table, backend.ttl_moment(table, column, as_stored=True) + interval,
                                  fallback=backend.ttl_moment(table, column) + interval)
        backend.database.connection().refresh_schema()

    def ensure_schema(self) -> None:
        """Read the tables' columns when this connection has not yet (a new thread's connection):
        the stored types decide how timestamps and ``metadataSearch`` are written and compared."""
        if SPAN_EVENTS not in self.backend.server_features.columns:
            self.backend.database.connection().refresh_schema()

    # ------------------------------------------------------------------ writes

    def insert_sql(self, table: str) -> tuple[str, bool]:
        """``INSERT INTO <table> (<columns>) VALUES`` and whether ``metadataSearch`` is two
        columns there (keys, values: the 18.16 layout, read back from ``system.columns``)."""
        nested = SEARCH_KEYS in self.backend.server_features.columns.get(table, {})
        names = []
        for column, _, _ in SPAN_COLUMNS:
            names.extend((SEARCH_KEYS, SEARCH_VALUES) if nested and column == "metadataSearch" else (column,))
        return f'INSERT INTO "{table}" ({", ".join(f"{chr(34)}{name}{chr(34)}" for name in names)}) VALUES', nested

    # ------------------------------------------------------------------ reads

    @staticmethod
    def search_equals(key: str, value: str) -> peewee.Node:
        """``metadataSearch[key] = value``, written with the ``keys``/``values`` subcolumns that
        both the ``Map`` of current servers and the ``Nested`` of 18.16 have (absent: ``''``)."""
        return peewee.SQL(f'"{SEARCH_VALUES}"[indexOf("{SEARCH_KEYS}", %s)] = %s', [key, value])

    def deduped(self, model: type[peewee.Model], columns: Sequence[str],
                conditions: Sequence[peewee.Node]) -> tuple[str, list[Any]]:
        """The current rows (one per ``dedupeKey``, the latest ``endedAt``) of ``model`` meeting
        ``conditions``, as ``(sql, params)`` of a select of ``columns`` to wrap (§3.4)."""
        query = model.select(peewee.SQL(", ".join(f'"{column}"' for column in columns)))
        if conditions:
            query = query.where(*conditions)
        sql, params = query.sql()
        return f'{sql} ORDER BY "dedupeKey", "endedAt" DESC LIMIT 1 BY "dedupeKey"', list(params)

    def rows(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        """The rows of a query as dicts keyed by column name."""
        cursor = self.backend.database.execute_sql(sql, params)
        names = [column[0] for column in cursor.description or ()]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    def select_current(self, model: type[peewee.Model], columns: Sequence[str], conditions: Sequence[peewee.Node],
                       order: str, limit: int | None = None, offset: int = 0) -> list[dict[str, Any]]:
        """The current rows meeting ``conditions`` in ``order`` (SQL), a page of them when
        ``limit`` is given (:meth:`page_current`)."""
        if limit is not None:
            keys, _ = self._page_keys(model, conditions, order, limit, offset, counted=False)
            return self._rows_of(model, columns, conditions, order, keys)
        inner, params = self.deduped(model, columns, conditions)
        return self.rows(f"SELECT * FROM ({inner}) ORDER BY {order}", params)

    def page_current(self, model: type[peewee.Model], columns: Sequence[str], conditions: Sequence[peewee.Node],
                     order: str, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        """A page of the current rows meeting ``conditions`` in ``order``, and how many there are.

        The page's rows are picked first by their sorting key (a few small columns: memory stays
        bounded however many rows match), with the count beside them in the same query, then
        only they are read in full (two queries; a third counts when the page is empty)."""
        keys, total = self._page_keys(model, conditions, order, limit, offset, counted=True)
        if not keys:
            return [], self.count_current(model, conditions)
        return self._rows_of(model, columns, conditions, order, keys), total

    def _page_keys(self, model: type[peewee.Model], conditions: Sequence[peewee.Node], order: str, limit: int,
                   offset: int, *, counted: bool) -> tuple[list[tuple], int]:
        """The sorting keys of the current rows ``offset`` to ``offset + limit`` in ``order`` with
        their ``endedAt`` (the columns of :func:`_picked`), and (``counted``) the number of
        current rows, else 0.

        When ``order`` ranks every row of one span alike (its columns are all among
        :data:`_SPAN_CONSTANT`), or starts with the latest end, ordering the rows (the latest end
        first among equals) and keeping each ``dedupeKey``'s first one is the dedupe of §3.4
        itself: the current engine then reads in the table's order and stops at the page.  Any
        other order dedupes first (``endedAt`` ascending would rank a span by its start row)."""
        key_columns = _picked(model)
        key = ", ".join(f'"{column}"' for column in key_columns)
        page = f" LIMIT {int(offset)}, {int(limit)}"  # 18.16 takes no OFFSET after LIMIT BY
        named = _ORDER_COLUMN.findall(order)
        if set(named) <= _SPAN_CONSTANT or order.startswith('"endedAt" DESC'):
            query = model.select(peewee.SQL(key))
            sql, params = (query.where(*conditions) if conditions else query).sql()
            sql = f'{sql} ORDER BY {order}, "endedAt" DESC LIMIT 1 BY "dedupeKey"{page}'
        else:
            picked, params = self.deduped(model, dict.fromkeys([*key_columns, *named]), conditions)
            sql = f"SELECT {key} FROM ({picked}) ORDER BY {order}{page}"
        if counted:
            count_sql, count_params = self._count_sql(model, conditions)
            sql, params = f"SELECT *, ({count_sql}) AS total FROM ({sql})", [*count_params, *params]
        rows = self.rows(sql, params)
        return [tuple(row[column] for column in key_columns) for row in rows], rows[0]["total"] if counted and rows \
            else 0

    def _rows_of(self, model: type[peewee.Model], columns: Sequence[str], conditions: Sequence[peewee.Node],
                 order: str, picked: list[tuple]) -> list[dict[str, Any]]:
        """The current rows with these sorting keys (with their ``endedAt``, as :meth:`_page_keys`
        gives them), in their order, found through the primary index by the keys sent as
        literals (a subquery there makes 18.16 and the current engine read more), within the
        rows' ``endedAt`` values where parts need that bound (:meth:`unbounded_last_granule`),
        and deduped here (:meth:`few_current`)."""
        if not picked:
            return []
        key_columns = ORDER_BY[model._meta.table_name]
        keys = [row[:len(key_columns)] for row in picked]
        key = ", ".join(f'"{column}"' for column in key_columns)
        one = f"({', '.join(['%s'] * len(key_columns))})"
        found = [*conditions, peewee.SQL(f"({key}) IN ({', '.join([one] * len(keys))})",
                                         [value for row in keys for value in row])]
        if self.unbounded_last_granule():
            at = _picked(model).index("endedAt")
            ended = sorted({row[at] for row in picked})
            found.append(peewee.SQL(f'"endedAt" IN ({", ".join(["%s"] * len(ended))})', ended))
        latest = self.few_current(model, dict.fromkeys([*columns, *key_columns]), found, key_columns)
        return [latest[key] for key in keys if key in latest]

    def unbounded_last_granule(self) -> bool:
        """Whether this server's parts store no mark after their last granule (before 19.6's
        adaptive granularity: 18.16).  There, a part cannot rule out a key above its last mark,
        so a read by sorting key also takes that last granule, every column read of it, from every
        part whose keys all sort below the one sought (a part per day and table); such reads add a
        bound on ``endedAt``, the partition column, whose minmax index rules those parts out."""
        return self.backend.server_features.version < FINAL_MARK_VERSION

    def one_trace(self, model: type[peewee.Model], trace_id: str) -> list[peewee.Node]:
        """The conditions reading one trace's rows of ``model``: its ``traceId`` and, where the
        last granule of a part is unbounded (:meth:`unbounded_last_granule`), its rows' ``endedAt``
        values, found by a subquery reading only those two columns (300 MB read for a 20-span
        trace at 10M spans on 18.16 without it, 1 MB with it; on current servers it only costs)."""
        trace = model.trace_id == trace_id
        if not self.unbounded_last_granule():
            return [trace]
        return [trace, model.ended_at.in_(model.select(model.ended_at).where(trace))]

    def few_current(self, model: type[peewee.Model], columns: Sequence[str], conditions: Sequence[peewee.Node],
                    identity: Sequence[str]) -> dict[tuple, dict[str, Any]]:
        """The current rows meeting ``conditions``, by the values of the ``identity`` columns
        (among ``columns``: one span's rows share them), for reads that match few rows (a
        trace, a page's keys): the rows are read as stored and deduped here, the latest
        ``endedAt`` kept (§3.4).  The same result as ``LIMIT 1 BY dedupeKey``, whose sort of
        every wide column costs the current engine a third of such a read."""
        query = model.select(peewee.SQL(", ".join(f'"{column}"' for column in columns)))
        sql, params = (query.where(*conditions) if conditions else query).sql()
        latest: dict[tuple, dict[str, Any]] = {}
        for row in self.rows(sql, params):
            identified = tuple(row[column] for column in identity)
            kept = latest.get(identified)
            if kept is None or row["endedAt"] > kept["endedAt"]:
                latest[identified] = row
        return latest

    def _count_sql(self, model: type[peewee.Model], conditions: Sequence[peewee.Node]) -> tuple[str, list[Any]]:
        """How many current rows meet ``conditions``: the distinct ``dedupeKey`` values among the
        rows meeting them (the size of the deduped set of §3.4, without sorting it)."""
        query = model.select(peewee.SQL('uniqExact("dedupeKey")'))
        sql, params = (query.where(*conditions) if conditions else query).sql()
        return sql, list(params)

    def count_current(self, model: type[peewee.Model], conditions: Sequence[peewee.Node]) -> int:
        """How many current rows meet ``conditions``."""
        sql, params = self._count_sql(model, conditions)
        return self.backend.database.execute_sql(sql, params).fetchone()[0]


def _picked(model: type[peewee.Model]) -> list[str]:
    """The columns a page's rows are picked by: the table's sorting key, then ``endedAt`` where
    the key lacks it (the current row's end, bounding the read of the rows' partitions)."""
    return list(dict.fromkeys([*ORDER_BY[model._meta.table_name], "endedAt"]))
