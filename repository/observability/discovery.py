"""Discovery over observability data: which entity types, entity names, services, environments,
tags, metric names and metric labels exist (observability-vnext.md §8.5).

Each question is asked of the data where the backend keeps its answer:

* ClickHouse reads two small tables, ``mastra_discovery_values`` and ``mastra_discovery_pairs``
  (§3.3), filled from the span, metric and log events.  Current servers fill them with the
  framework's refreshable views (every minute and five minutes; :meth:`DiscoveryMixin.
  refresh_discovery` refreshes at once); 18.16, which has none, and a server refusing them
  use ordinary materialized views, so the database adds the discovery rows of every batch as
  it is inserted (§4's writer-maintained discovery).
* PostgreSQL asks the base tables (rows newer than ``lookback_seconds``) and keeps the answer in
  the ``mastra_observability_discovery`` cache: fresh answers are served, stale ones are served
  and recomputed on a daemon thread by the one caller that claims the row.
* SQLite asks the base tables on every call (``SELECT DISTINCT``, no lookback).

:class:`DiscoveryMixin` holds the public methods; the vNext repositories of every backend include it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Sequence

from ..base import operation
from ..schemas.observability import ENTITY_TYPES
from ..validation import Problems
from ..values import json_dumps
from .analytics import DIALECTS

logger = logging.getLogger("composite_store.observability.discovery")

SPAN_EVENTS, METRIC_EVENTS, LOG_EVENTS = "mastra_span_events", "mastra_metric_events", "mastra_log_events"
SCORE_EVENTS, FEEDBACK_EVENTS = "mastra_score_events", "mastra_feedback_events"
#: The time column each source table's lookback (PostgreSQL) counts on.
TIME_COLUMNS = {SPAN_EVENTS: "endedAt", METRIC_EVENTS: "timestamp", LOG_EVENTS: "timestamp",
                SCORE_EVENTS: "timestamp", FEEDBACK_EVENTS: "timestamp"}
#: Tables that entity types, names and tags are discovered in (service names and environments:
#: all five on PostgreSQL and SQLite; ClickHouse's views read these three, as the framework's).
ENTITY_SOURCES = (SPAN_EVENTS, METRIC_EVENTS, LOG_EVENTS)
VALUES_TABLE, PAIRS_TABLE = "mastra_discovery_values", "mastra_discovery_pairs"
#: The framework's refreshable views: name → (target, seconds between refreshes).
REFRESHED_VIEWS = {"mastra_mv_discovery_values": (VALUES_TABLE, 60), "mastra_mv_discovery_pairs": (PAIRS_TABLE, 300)}
_KNOWN_ENTITY_TYPES = frozenset(ENTITY_TYPES)
_NON_EMPTY = "{0} IS NOT NULL AND {0} <> ''"


@dataclass(frozen=True)
class Question:
    """One discovery question: its PostgreSQL cache key, and where its answer lives."""

    cache_key: str
    #: ClickHouse: the discovery table, the ``kind`` and the ``key1``/``key2`` values required.
    table: str
    kind: str
    keys: tuple[str | None, ...]
    #: PostgreSQL/SQLite: the source tables, the value (``column``, ``"tag"`` or ``"label_key"``
    #: or ``("label", key)``) and ``(column, value)`` equalities (``value`` ``None``: non-empty).
    sources: tuple[str, ...]
    value: Any
    equal: tuple[tuple[str, str | None], ...] = ()


def check_text(problems: Problems, name: str, value: Any, *, required: bool) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str) or not value:
        problems.add(name, "Missing data for required field." if value is None else "Not a valid string.")


def check_limit(problems: Problems, limit: Any) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        problems.add("limit", "limit must be a positive integer")


def narrowed(values: Sequence[str], prefix: str | None, limit: int | None) -> list[str]:
    """The values starting with ``prefix`` (taken literally), at most ``limit``."""
    found = [value for value in values if prefix is None or value.startswith(prefix)]
    return found[:limit] if limit is not None else found


def like_prefix(prefix: str) -> str:
    """A ``LIKE`` pattern matching what starts with ``prefix``: ``%``, ``_`` and ``\\`` escaped."""
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


# --------------------------------------------------------------------------- ClickHouse DDL

def _source_select(table: str, pairs: bool) -> str:
    """The discovery rows (``kind, key1, value`` or ``kind, key1, key2, value``) of the rows of
    ``table``, one ``ARRAY JOIN`` over their tuples.  Columns used inside a lambda are passed in
    as arrays (``arrayResize``): 18.16 does not find a column named only inside one."""
    entity = "CAST(ifNull(\"entityType\", '') AS String)"
    name, label_keys, tags = 'CAST("name" AS String)', 'CAST("labels.keys" AS Array(String))', 'CAST("tags" AS Array(String))'

    def repeated(value: str, array: str) -> str:
        return f"arrayResize(emptyArrayString(), length({array}), {value})"

    if pairs:
        parts = [f"[('entityTypeName', {entity}, '', CAST(ifNull(\"entityName\", '') AS String))]"]
        if table == METRIC_EVENTS:
            parts.append(f"arrayMap((n, k, v) -> ('metricLabelValue', n, k, v), {repeated(name, label_keys)}, "
                         f'{label_keys}, "labels.values")')
        columns, keep = "kind, key1, key2, value", "tupleElement(t, 2) != '' AND tupleElement(t, 4) != ''"
    else:
        plain = [f"('{kind}', '', CAST(ifNull(\"{column}\", '') AS String))"
                 for kind, column in (("entityType", "entityType"), ("serviceName", "serviceName"),
                                      ("environment", "environment"))]
        if table == METRIC_EVENTS:
            plain.append("('metricName', '', CAST(\"name\" AS String))")
        parts = [f"[{', '.join(plain)}]",
                 f"arrayMap((e, tag) -> ('tag', e, tag), {repeated(entity, tags)}, {tags})"]
        if table == METRIC_EVENTS:
            parts.append(f"arrayMap((n, k) -> ('metricLabelKey', n, k), {repeated(name, label_keys)}, {label_keys})")
        columns, keep = ("kind, key1, value",
                         "tupleElement(t, 3) != '' AND (tupleElement(t, 1) != 'tag' OR tupleElement(t, 2) != '')")
    # The conditions name the tuple's members: "value" is also a column of the metric events.
    names = columns.split(", ")
    selected = ", ".join(f"tupleElement(t, {index}) AS {name}" for index, name in enumerate(names, 1))
    return f'SELECT DISTINCT {selected} FROM "{table}" ARRAY JOIN arrayConcat({", ".join(parts)}) AS t WHERE {keep}'


def create_clickhouse_discovery(backend: Any) -> None:
    """The discovery tables and the views filling them (§3.3; §4 on 18.16).  Idempotent."""
    from clickhouse_driver.errors import ServerException

    from .vnext_clickhouse import current_layout

    database = backend.database
    kind_type = "LowCardinality(String)" if current_layout(backend.server_features) else "String"
    # On a cluster (backend.cluster) replicated tables on every server, under Distributed ones.
    keys = {VALUES_TABLE: ("kind", "key1", "value"), PAIRS_TABLE: ("kind", "key1", "key2", "value")}
    for target, key in keys.items():
        backend.create_table(target, ", ".join(f'"{name}" {kind_type if name == "kind" else "String"}' for name in key),
                             engine="ReplacingMergeTree", order_by=key)
        backend.create_distributed(target, key)
    if current_layout(backend.server_features):
        try:
            for view, (target, seconds) in REFRESHED_VIEWS.items():
                union = " UNION ALL ".join(_source_select(table, target == PAIRS_TABLE) for table in ENTITY_SOURCES)
                columns = "kind, key1, key2, value" if target == PAIRS_TABLE else "kind, key1, value"
                database.execute_sql(f'CREATE MATERIALIZED VIEW IF NOT EXISTS "{view}" REFRESH EVERY {seconds} '
                                     f'SECOND APPEND TO "{target}" AS SELECT DISTINCT {columns} FROM ({union})')
            refresh_clickhouse_discovery(backend)
            return
        except ServerException as exc:
            logger.warning("Refreshable discovery views refused (%s); discovery rows are added on insert",
                           str(exc).splitlines()[0])
    for table in ENTITY_SOURCES:
        for target in (VALUES_TABLE, PAIRS_TABLE):
            # A server's view reads its own shard's rows; reads take DISTINCT values of all shards.
            select = _source_select(table, target == PAIRS_TABLE).replace(f'FROM "{table}"', "FROM {source}", 1)
            backend.create_materialized_view(f"{target}_{table}", target, table, select)
    database.connection().refresh_schema()


def refresh_clickhouse_discovery(backend: Any) -> None:
    """Refresh the refreshable views now and wait for them (failures ignored, as the framework's)."""
    from clickhouse_driver.errors import ServerException

    for view in REFRESHED_VIEWS:
        try:
            backend.database.execute_sql(f'SYSTEM REFRESH VIEW "{view}"')
            backend.database.execute_sql(f'SYSTEM WAIT VIEW "{view}"')
        except ServerException as exc:
            logger.debug("Discovery view %s not refreshed: %s", view, str(exc).splitlines()[0])


# --------------------------------------------------------------------------- where answers come from

class TableDiscovery:
    """SQLite: each answer asked of the base tables, every time (``SELECT DISTINCT``)."""

    #: The joins giving one row per tag and per label key, and the value each row stands for.
    tag_join = ('CROSS JOIN json_each("tags") AS "tag"', '"tag"."value"')
    label_key_join = ('CROSS JOIN json_each("labels") AS "label"', '"label"."key"')

    def __init__(self, backend: Any, models: Any, settings: dict[str, Any] | None) -> None:
        self.backend, self.models, self.settings = backend, models, settings

    def answer(self, question: Question, prefix: str | None, limit: int | None) -> list[str]:
        return narrowed(self.values(question), prefix, limit)

    def values(self, question: Question) -> list[str]:
        return self.base_values(question)

    def refresh(self) -> None:
        """Nothing to bring up to date: every answer is asked of the tables."""

    def clear(self) -> None:
        """Nothing kept beside the tables."""

    def base_values(self, question: Question, lookback: float | None = None) -> list[str]:
        """The distinct non-empty values of ``question`` in its source tables (rows newer than
        ``lookback`` seconds on their time column, when given), sorted."""
        database = self.backend.database
        param = database.param
        selects, params = [], []
        for table in question.sources:
            joined, value = "", f'"{question.value}"'
            expression_params: list[Any] = []
            if question.value == "tag":
                joined, value = self.tag_join
            elif question.value == "label_key":
                joined, value = self.label_key_join
            elif isinstance(question.value, tuple):
                dialect = DIALECTS[self.backend.name](self.backend, METRIC_EVENTS)  # label access as analytics'
                value, expression_params = dialect.label(), [dialect.label_key(question.value[1])]
            conditions, condition_params = [], []
            for column, wanted in question.equal:
                if wanted is None:
                    conditions.append(_NON_EMPTY.format(f'"{column}"'))
                else:
                    conditions.append(f'"{column}" = {param}')
                    condition_params.append(wanted)
            if lookback is not None:
                conditions.append(f'"{TIME_COLUMNS[table]}" >= NOW() - make_interval(secs => {param})')
                condition_params.append(lookback)
            where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
            selects.append(f'SELECT {value} AS "value" FROM {self.table_sql(table)}{" " + joined if joined else ""}'
                           f"{where}")
            params += [*expression_params, *condition_params]
        sql = (f'SELECT DISTINCT "value" FROM ({" UNION ALL ".join(selects)}) AS "found" '
               f'WHERE {_NON_EMPTY.format(chr(34) + "value" + chr(34))} ORDER BY "value"')
        return [row[0] for row in database.execute_sql(sql, params).fetchall()]

    def table_sql(self, table: str) -> str:
        schema = getattr(self.backend, "schema_name", None)
        return f'"{schema}"."{table}"' if schema else f'"{table}"'


class CachedDiscovery(TableDiscovery):
    """PostgreSQL: answers of rows newer than ``lookback_seconds``, kept in
    ``mastra_observability_discovery``: fresh → served; stale → served, and recomputed on a
    daemon thread by the caller whose conditional update claims the row; missing → computed now."""

    tag_join = ('CROSS JOIN LATERAL unnest("tags") AS "tag"("value")', '"tag"."value"')
    label_key_join = ('CROSS JOIN LATERAL jsonb_object_keys("labels") AS "label"("key")', '"label"."key"')

    @property
    def cache(self) -> str:
        return self.backend.table_sql(self.models.discovery)

    def values(self, question: Question) -> list[str]:
        database, ttl = self.backend.database, self.settings["ttl_seconds"]
        row = database.execute_sql(
            f'SELECT "values", "refreshedAt" > NOW() - make_interval(secs => %s) FROM {self.cache} '
            f'WHERE "cacheKey" = %s', [ttl, question.cache_key]).fetchone()
        if row is None:
            return self.store(question)
        values, fresh = row
        if not fresh:
            with self.backend.write():
                claimed = database.execute_sql(
                    f'UPDATE {self.cache} SET "refreshedAt" = NOW() WHERE "cacheKey" = %s AND '
                    f'"refreshedAt" <= NOW() - make_interval(secs => %s) RETURNING 1', [question.cache_key, ttl]
                ).fetchone()
            if claimed:
                threading.Thread(target=self.store_in_background, args=(question,), daemon=True,
                                 name=f"discovery-{question.cache_key}").start()
        return list(values)

    def store(self, question: Question) -> list[str]:
        values = self.base_values(question, self.settings["lookback_seconds"])
        with self.backend.write():
            self.backend.database.execute_sql(
                f'INSERT INTO {self.cache} ("cacheKey", "refreshedAt", "values") VALUES (%s, NOW(), %s::jsonb) '
                f'ON CONFLICT ("cacheKey") DO UPDATE SET "refreshedAt" = EXCLUDED."refreshedAt", '
                f'"values" = EXCLUDED."values"', [question.cache_key, json_dumps(values)])
        return values

    def store_in_background(self, question: Question) -> None:
        try:
            with self.backend.connection():
                self.store(question)
        except Exception:  # a daemon thread has no caller to tell: the stale answer stays
            logger.exception("Refreshing discovery %r failed", question.cache_key)

    def refresh(self) -> None:
        """Empty the cache: the next questions are asked of the tables."""
        with self.backend.write():
            self.backend.database.execute_sql(f"DELETE FROM {self.cache}")


class ClickHouseDiscovery(TableDiscovery):
    """ClickHouse: answers read from the discovery tables (``SELECT DISTINCT value``), prefix and
    limit applied there."""

    def answer(self, question: Question, prefix: str | None, limit: int | None) -> list[str]:
        conditions, params = ["kind = %s"], [question.kind]
        for column, value in zip(("key1", "key2"), question.keys):
            if value is not None:
                conditions.append(f"{column} = %s")
                params.append(value)
        if prefix is not None:
            conditions.append("value LIKE %s")
            params.append(like_prefix(prefix))
        sql = (f'SELECT DISTINCT value FROM "{question.table}" WHERE {" AND ".join(conditions)} ORDER BY value'
               f'{f" LIMIT {int(limit)}" if limit is not None else ""}')
        return [row[0] for row in self.backend.database.execute_sql(sql, params).fetchall()]

    def refresh(self) -> None:
        refresh_clickhouse_discovery(self.backend)

    def clear(self) -> None:
        self.backend.clear_tables([VALUES_TABLE, PAIRS_TABLE])


SOURCES = {"SQLITE": TableDiscovery, "PG": CachedDiscovery, "CLICKHOUSE": ClickHouseDiscovery}


class DiscoveryMixin:
    """The discovery methods of §8.5: each returns a sorted list of strings.

    Example::

        observability.get_metric_names(prefix="mastra_")
        observability.get_metric_label_values(metric_name="mastra_agent_runs", label_key="status")
    """

    # ------------------------------------------------------------------ public questions

    @operation
    def get_entity_types(self) -> list[str]:
        """The known entity types spans, metrics and logs name."""
        found = self._discover(Question("entity_types", VALUES_TABLE, "entityType", ("",), ENTITY_SOURCES,
                                        "entityType"))
        return [value for value in found if value in _KNOWN_ENTITY_TYPES]

    @operation
    def get_entity_names(self, *, entity_type: str | None = None) -> list[str]:
        """The entity names (of one entity type, or of all)."""
        self._check(("entity_type", entity_type, False))
        return self._discover(Question("entity_names" + (f":{entity_type}" if entity_type else ""), PAIRS_TABLE,
                                       "entityTypeName", (entity_type, ""), ENTITY_SOURCES, "entityName",
                                       (("entityType", entity_type),)))

    @operation
    def get_service_names(self) -> list[str]:
        """The service names the data names."""
        return self._discover(Question("service_names", VALUES_TABLE, "serviceName", ("",), tuple(TIME_COLUMNS),
                                       "serviceName"))

    @operation
    def get_environments(self) -> list[str]:
        """The environments the data names."""
        return self._discover(Question("environments", VALUES_TABLE, "environment", ("",), tuple(TIME_COLUMNS),
                                       "environment"))

    @operation
    def get_tags(self, *, entity_type: str | None = None) -> list[str]:
        """The tags of spans, metrics and logs that name an entity type (this one, when given)."""
        self._check(("entity_type", entity_type, False))
        return self._discover(Question("tags" + (f":{entity_type}" if entity_type else ""), VALUES_TABLE, "tag",
                                       (entity_type,), ENTITY_SOURCES, "tag", (("entityType", entity_type),)))

    @operation
    def get_metric_names(self, *, prefix: str | None = None, limit: int | None = None) -> list[str]:
        """The metric names (starting with ``prefix``, taken literally), at most ``limit``."""
        self._check(("prefix", prefix, False), limit=limit)
        return self._discover(Question("metric_names", VALUES_TABLE, "metricName", ("",), (METRIC_EVENTS,), "name"),
                              prefix, limit)

    @operation
    def get_metric_label_keys(self, *, metric_name: str) -> list[str]:
        """The label keys of the metric ``metric_name``."""
        self._check(("metric_name", metric_name, True))
        return self._discover(Question(f"metric_label_keys:{metric_name}", VALUES_TABLE, "metricLabelKey",
                                       (metric_name,), (METRIC_EVENTS,), "label_key", (("name", metric_name),)))

    @operation
    def get_metric_label_values(self, *, metric_name: str, label_key: str, prefix: str | None = None,
                                limit: int | None = None) -> list[str]:
        """The values of label ``label_key`` of the metric ``metric_name`` (starting with
        ``prefix``), at most ``limit``."""
        self._check(("metric_name", metric_name, True), ("label_key", label_key, True), ("prefix", prefix, False),
                    limit=limit)
        return self._discover(Question(f"metric_label_values:{metric_name}:{label_key}", PAIRS_TABLE,
                                       "metricLabelValue", (metric_name, label_key), (METRIC_EVENTS,),
                                       ("label", label_key), (("name", metric_name),)), prefix, limit)

    @operation
    def refresh_discovery(self) -> None:
        """Bring discovery up to date now: ClickHouse refreshes its refreshable views and waits
        for them, PostgreSQL empties its cache (the next question is asked of the tables);
        SQLite always asks the tables."""
        self._discovery.refresh()

    def create_discovery_tables(self) -> None:
        """ClickHouse: create the discovery tables and views (run by ``init()``)."""
        create_clickhouse_discovery(self.backend)

    @operation
    def dangerously_clear_all(self) -> None:
        """Delete every row of this domain's tables, discovery's included (for tests)."""
        super().dangerously_clear_all()  # type: ignore[misc]
        self._discovery.clear()

    # ------------------------------------------------------------------ answering

    @property
    def _discovery(self) -> TableDiscovery:
        source = self.__dict__.get("_discovery_source")
        if source is None:
            source = self.__dict__["_discovery_source"] = SOURCES[self.backend.name](
                self.backend, self.models, getattr(self, "discovery", None))
        return source

    @staticmethod
    def _check(*arguments: tuple[str, Any, bool], limit: Any = None) -> None:
        problems = Problems()
        for name, value, required in arguments:
            check_text(problems, name, value, required=required)
        check_limit(problems, limit)
        problems.raise_if_any()

    def _discover(self, question: Question, prefix: str | None = None, limit: int | None = None) -> list[str]:
        return self._discovery.answer(question, prefix, limit)
