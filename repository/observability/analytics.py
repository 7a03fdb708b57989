"""Analytics over the observability signals: aggregates, breakdowns, time series and percentiles
of metrics, scores and feedback, computed in the database (observability-vnext.md §8.4).

Each question has one query shape, written once here: the signal's current rows meeting the
filters (the signals mixin's deduplicated, filtered select, with the dimensions this question
groups by computed beside the measure) are aggregated by an outer ``SELECT … GROUP BY``.  What a
database spells differently is a small :class:`AnalyticsDialect` per backend: the floor of a
time bucket, ``last``, ``count_distinct``, a metric label's value and a percentile (SQLite has no
percentile function: its ranks are found in SQL, and only the interpolation between the two rows
around each rank is Python).

:class:`AnalyticsMixin` holds the public methods; the vNext repositories of every backend include
it beside the signals mixin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Sequence

import peewee

from ..base import operation
from ..validation import Problems, one_of
from .signals import DEFAULT_REVIEW_STATUS, SIGNAL_KINDS, check_signal_filters

AGGREGATIONS = ("sum", "avg", "min", "max", "count", "last", "count_distinct")
#: Time-series intervals and their length in seconds; buckets are UTC floors of epoch time.
INTERVALS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "1d": 86400}
#: ``compare_period`` → how far back the compared range lies (``None``: the range's own length).
COMPARE_PERIODS = {"previous_period": None, "previous_day": timedelta(days=1), "previous_week": timedelta(weeks=1)}
ORDER_DIRECTIONS = ("ASC", "DESC")
MAX_BREAKDOWN_LIMIT = 1000

#: Columns every signal has, by their API names (the context fields of §2.2).
_CONTEXT = {
    "trace_id": "traceId", "span_id": "spanId", "experiment_id": "experimentId",
    "entity_type": "entityType", "entity_id": "entityId", "entity_name": "entityName",
    "entity_version_id": "entityVersionId", "parent_entity_type": "parentEntityType",
    "parent_entity_id": "parentEntityId", "parent_entity_name": "parentEntityName",
    "parent_entity_version_id": "parentEntityVersionId", "root_entity_type": "rootEntityType",
    "root_entity_id": "rootEntityId", "root_entity_name": "rootEntityName",
    "root_entity_version_id": "rootEntityVersionId", "user_id": "userId", "organization_id": "organizationId",
    "resource_id": "resourceId", "run_id": "runId", "session_id": "sessionId", "thread_id": "threadId",
    "request_id": "requestId", "environment": "environment", "execution_source": "executionSource",
    "service_name": "serviceName",
}
#: The columns ``count_distinct`` counts (metrics only).
DISTINCT_COLUMNS = ("entity_type", "entity_name", "parent_entity_type", "parent_entity_name", "root_entity_type",
                    "root_entity_name", "name", "provider", "model", "environment", "execution_source",
                    "service_name", "thread_id", "resource_id")


@dataclass(frozen=True)
class Signal:
    """What the analytics of one signal read: its table, key, measure and typed columns."""

    #: The signal's name in filters and messages: ``metrics``, ``scores`` or ``feedback``.
    name: str
    table: str
    #: The record key column (ties of ``last``).
    key: str
    #: The measured column.
    measure: str
    #: Typed columns by API name: what ``group_by`` (and ``distinct_column``) may name.
    columns: dict[str, str]
    #: Metrics: estimated cost and its unit beside each value; a ``group_by`` key that is no
    #: column is a label key.
    costs: bool = False


METRICS = Signal("metrics", "mastra_metric_events", "metricId", "value", {
    **_CONTEXT, "metric_id": "metricId", "name": "name", "provider": "provider", "model": "model",
    "cost_unit": "costUnit"}, costs=True)
SCORES = Signal("scores", "mastra_score_events", "scoreId", "score", {
    **_CONTEXT, "timestamp": "timestamp", "score_id": "scoreId", "score_trace_id": "scoreTraceId",
    "scorer_id": "scorerId", "scorer_version": "scorerVersion", "score_source": "scoreSource", "score": "score",
    "reason": "reason"})
FEEDBACK = Signal("feedback", "mastra_feedback_events", "feedbackId", "valueNumber", {
    **_CONTEXT, "timestamp": "timestamp", "feedback_id": "feedbackId", "value_string": "valueString",
    "review_status": "reviewStatus", "feedback_user_id": "feedbackUserId", "source_id": "sourceId",
    "feedback_source": "feedbackSource", "feedback_type": "feedbackType", "value_number": "valueNumber",
    "comment": "comment"})


# --------------------------------------------------------------------------- dialects

class AnalyticsDialect:
    """How one database spells the parts of the analytics queries (standard SQL here:
    PostgreSQL's; the others override what differs).  Expressions name the columns of the
    selected rows by their quoted names; ``param`` is the database's placeholder."""

    def __init__(self, backend: Any, table: str) -> None:
        self.backend = backend
        self.table = table
        self.param: str = backend.database.param

    def bucket(self, seconds: int) -> str:
        """Epoch seconds of the UTC floor of ``"timestamp"`` to ``seconds``."""
        return f'floor(extract(epoch from "timestamp") / {seconds}) * {seconds}'

    def last(self, measure: str, key: str) -> str:
        """The measure of the row with the greatest ``(timestamp, key)``."""
        return f'(array_agg({measure} ORDER BY "timestamp" DESC, {key} DESC))[1]'

    def count_distinct(self, column: str) -> str:
        """How many distinct non-null values ``column`` holds."""
        return f"COUNT(DISTINCT {column})"

    def label(self) -> str:
        """A metric label's value (``NULL`` when absent); the label key is one parameter."""
        return f'("labels" ->> {self.param})'

    def label_key(self, key: str) -> Any:
        """The parameter that :meth:`label` takes for ``key``."""
        return key

    def percentile(self, measure: str) -> str | None:
        """An aggregate giving the percentile (one parameter, in [0, 1]) of ``measure``, or
        ``None`` when the database has none (:meth:`ranked_percentiles` then serves)."""
        return f"percentile_cont({self.param}) WITHIN GROUP (ORDER BY {measure})"


class SQLiteAnalytics(AnalyticsDialect):
    """SQLite: ISO-8601 text timestamps, JSON text labels, no percentile function."""

    def bucket(self, seconds: int) -> str:
        return f"(CAST(strftime('%s', \"timestamp\") AS INTEGER) / {seconds}) * {seconds}"

    def last(self, measure: str, key: str) -> str:
        # The greatest [timestamp, key, measure] array: the ISO-8601 texts have one width, so
        # the arrays compare as their (timestamp, key) do, and the measure is read back from it.
        return f"json_extract(MAX(json_array(\"timestamp\", {key}, {measure})), '$[2]')"

    def label(self) -> str:
        # The member is found by its key (json_each), never through a JSON path: a path cannot
        # name every key (U+0000 makes json_extract fail), as signals_sql's filters say too.
        return f'(SELECT value FROM json_each("labels") WHERE key = {self.param})'

    def percentile(self, measure: str) -> str | None:
        return None


class ClickHouseAnalytics(AnalyticsDialect):
    """ClickHouse: ``DateTime64`` or (18.16) epoch-millisecond timestamps, ``argMax``, ``uniq``,
    ``quantile``, labels as a ``Map`` or a ``Nested`` read through the same subcolumns."""

    def bucket(self, seconds: int) -> str:
        from ..backends.clickhouse import timestamp_kind

        features = self.backend.server_features
        if self.table not in features.columns:  # a new connection has not read the tables yet
            self.backend.database.connection().refresh_schema()
        if timestamp_kind(features.columns.get(self.table, {}).get("timestamp"), features) == "ms":
            return f'intDiv("timestamp", {seconds * 1000}) * {seconds}'
        return f'toUnixTimestamp(toStartOfInterval("timestamp", INTERVAL {seconds} SECOND))'

    def last(self, measure: str, key: str) -> str:
        return f'argMax({measure}, ("timestamp", {key}))'

    def count_distinct(self, column: str) -> str:
        return f"uniq({column})"

    def label(self) -> str:
        # Both layouts have the keys/values subcolumns (§4); an absent key reads as ''.
        return f'nullIf("labels.values"[indexOf("labels.keys", {self.param})], \'\')'

    def percentile(self, measure: str) -> str | None:
        # The level is substituted client-side, so it reaches the server as the literal it must be.
        return f"quantile({self.param})({measure})"


DIALECTS = {"SQLITE": SQLiteAnalytics, "PG": AnalyticsDialect, "CLICKHOUSE": ClickHouseAnalytics}


# --------------------------------------------------------------------------- validation

def check_aggregation(problems: Problems, signal: Signal, aggregation: Any, distinct_column: Any) -> None:
    """``aggregation`` is one of :data:`AGGREGATIONS`; ``count_distinct`` (metrics only) needs a
    ``distinct_column`` of :data:`DISTINCT_COLUMNS`."""
    if aggregation not in AGGREGATIONS:
        problems.add("aggregation", one_of(AGGREGATIONS))
    elif aggregation == "count_distinct" and not signal.costs:
        problems.add("aggregation", f"count_distinct is not supported for {signal.name}")
    elif aggregation == "count_distinct" and distinct_column is None:
        problems.add("distinct_column", "distinct_column is required when aggregation is count_distinct")
    if distinct_column is not None and distinct_column not in DISTINCT_COLUMNS:
        problems.add("distinct_column", one_of(DISTINCT_COLUMNS))


def check_interval(problems: Problems, interval: Any) -> int:
    """The seconds of a time-series ``interval`` (0 after recording a problem)."""
    if interval not in INTERVALS:
        problems.add("interval", one_of(INTERVALS))
        return 0
    return INTERVALS[interval]


def check_percentiles(problems: Problems, percentiles: Any) -> list[float]:
    """A non-empty list of finite numbers in [0, 1]."""
    if not isinstance(percentiles, (list, tuple)) or not percentiles:
        problems.add("percentiles", "percentiles must be a non-empty list of numbers between 0 and 1")
        return []
    for index, value in enumerate(percentiles):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not 0 <= value <= 1:
            problems.add(f"percentiles[{index}]",
                         f"Percentile value must be a finite number between 0 and 1, got {value}")
    return [float(value) for value in percentiles]


def check_group_by(problems: Problems, signal: Signal, group_by: Any, *, required: bool) -> list[str]:
    """``group_by``: a list of typed column names (metrics: or label keys)."""
    if group_by is None and not required:
        return []
    if not isinstance(group_by, (list, tuple)) or not group_by \
            or not all(isinstance(key, str) and key for key in group_by):
        problems.add("group_by", "group_by must be a non-empty list of non-empty strings")
        return []
    if not signal.costs:
        invalid = [key for key in group_by if key not in signal.columns]
        if invalid:
            problems.add("group_by", "Invalid groupBy column(s): " + ", ".join(invalid))
    return list(group_by)


def check_names(problems: Problems, name: Any, *, single: bool = False) -> list[str]:
    """Metric names: a non-empty list of non-empty strings (a string is one name); ``single``:
    exactly one string (percentiles)."""
    if single:
        if isinstance(name, str) and name:
            return [name]
        problems.add("name", "name must be a non-empty string")
        return []
    names = [name] if isinstance(name, str) else name
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(item, str) and item for item in names):
        problems.add("name", "name must be a non-empty list of non-empty strings")
        return []
    return list(names)


def check_identity(problems: Problems, path: str, value: Any, *, required: bool) -> None:
    """A scorer id, score source, feedback type or feedback source: a non-empty string."""
    if value is None and not required:
        return
    if not isinstance(value, str) or not value:
        problems.add(path, "Not a valid string." if value is not None else "Missing data for required field.")


def _check_compare_period(problems: Problems, compare_period: Any) -> None:
    if compare_period is not None and compare_period not in COMPARE_PERIODS:
        problems.add("compare_period", one_of(COMPARE_PERIODS))


def change_percent(value: float | None, previous: float | None) -> float | None:
    """``(value − previous) / |previous| × 100``; ``None`` when either is ``None`` or previous is 0."""
    if value is None or previous is None or previous == 0:
        return None
    return (value - previous) / abs(previous) * 100


def interpolated(values: dict[int, float], count: int, level: float) -> float:
    """The percentile ``level`` of ``count`` sorted values given by rank (0-based) ``values``,
    interpolated linearly between the two ranks around ``(count − 1) × level`` (as
    ``percentile_cont``)."""
    position = (count - 1) * level
    low = math.floor(position)
    below = values[low]
    return below if position == low else below + (values[low + 1] - below) * (position - low)


def _epoch(seconds: Any) -> datetime:
    return datetime.fromtimestamp(int(seconds), tz=timezone.utc)


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


# --------------------------------------------------------------------------- the mixin

#: The ``aggregation`` of a percentiles question, which takes none.
_NO_AGGREGATION = object()


@dataclass
class _Query:
    """One analytics question, checked: the rows it reads and how it aggregates them."""

    signal: Signal
    #: Conditions naming the signal (metric names, scorer, feedback type), as peewee nodes.
    identity: list[peewee.Node]
    #: The name of the question's one time series (without ``group_by``).
    name: str
    #: The checked filters of the signals mixin.
    filters: dict[str, Any]
    #: ``None`` for percentiles.
    aggregation: str | None = None
    distinct_column: str | None = None


class AnalyticsMixin:
    """Aggregates, breakdowns, time series and percentiles of metrics, scores and feedback
    (§8.4), each one database query (two with a comparison period).

    Example::

        observability.get_metric_aggregate(name=["mastra_model_total_tokens"], aggregation="sum",
                                           filters={"timestamp": {"start": monday, "end": sunday}},
                                           compare_period="previous_week")
        observability.get_score_time_series(scorer_id="relevance", interval="1h", aggregation="avg",
                                            group_by=["experiment_id"])
    """

    # The signals mixin provides ``self._signal_sql``: its filters as conditions and its current
    # rows (the deduplicated set its lists read) as a select.

    @property
    def _analytics(self) -> dict[str, AnalyticsDialect]:
        dialects = self.__dict__.get("_analytics_dialects")
        if dialects is None:
            dialect = DIALECTS[self.backend.name]
            dialects = self.__dict__["_analytics_dialects"] = {
                signal.name: dialect(self.backend, signal.table) for signal in (METRICS, SCORES, FEEDBACK)}
        return dialects

    # ------------------------------------------------------------------ metrics

    @operation
    def get_metric_aggregate(self, *, name: list[str], aggregation: str, distinct_column: str | None = None,
                             filters: dict | None = None, compare_period: str | None = None) -> dict:
        """One value over the metrics named ``name`` meeting ``filters``: ``{"value",
        "estimated_cost", "cost_unit"}``, with ``compare_period`` (and a timestamp range in the
        filters) also ``previous_value``, ``change_percent``, ``previous_estimated_cost`` and
        ``cost_change_percent``."""
        problems = Problems()
        query = self._metric_query(problems, name, filters, aggregation, distinct_column)
        _check_compare_period(problems, compare_period)
        problems.raise_if_any()
        return self._aggregate(query, compare_period)

    @operation
    def get_metric_breakdown(self, *, name: list[str], group_by: list[str], aggregation: str,
                             distinct_column: str | None = None, filters: dict | None = None,
                             limit: int | None = None, order_direction: str = "DESC") -> dict:
        """``{"groups": [{"dimensions", "value", "estimated_cost", "cost_unit"}]}``: one group per
        distinct value of the ``group_by`` columns or label keys (rows lacking a label are left
        out), by value (``order_direction``), at most ``limit`` (1–1000)."""
        problems = Problems()
        query = self._metric_query(problems, name, filters, aggregation, distinct_column)
        keys = check_group_by(problems, METRICS, group_by, required=True)
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or not 1 <= limit <= MAX_BREAKDOWN_LIMIT):
            problems.add("limit", f"limit must be an integer between 1 and {MAX_BREAKDOWN_LIMIT}")
        if order_direction not in ORDER_DIRECTIONS:
            problems.add("order_direction", one_of(ORDER_DIRECTIONS))
        problems.raise_if_any()
        return self._breakdown(query, keys, order_direction, limit)

    @operation
    def get_metric_time_series(self, *, name: list[str], interval: str, aggregation: str,
                               distinct_column: str | None = None, filters: dict | None = None,
                               group_by: list[str] | None = None) -> dict:
        """``{"series": [{"name", "cost_unit", "points": [{"timestamp", "value", "estimated_cost"}]}]}``
        with UTC buckets of ``interval`` (``1m``, ``5m``, ``15m``, ``1h``, ``1d``): one series
        (named after the metrics), or one per distinct ``group_by`` tuple."""
        problems = Problems()
        query = self._metric_query(problems, name, filters, aggregation, distinct_column)
        seconds = check_interval(problems, interval)
        keys = check_group_by(problems, METRICS, group_by, required=False)
        problems.raise_if_any()
        return self._time_series(query, seconds, keys)

    @operation
    def get_metric_percentiles(self, *, name: str, percentiles: list[float], interval: str,
                               filters: dict | None = None) -> dict:
        """``{"series": [{"percentile", "points": [{"timestamp", "value"}]}]}``: per UTC bucket of
        ``interval``, each requested percentile of the values of the metric ``name``."""
        problems = Problems()
        query = self._metric_query(problems, name, filters, single=True)
        levels = check_percentiles(problems, percentiles)
        seconds = check_interval(problems, interval)
        problems.raise_if_any()
        return self._percentiles(query, levels, seconds)

    def _metric_query(self, problems: Problems, name: Any, filters: Any, aggregation: Any = None,
                      distinct_column: Any = None, *, single: bool = False) -> _Query:
        """A metric question: the rows of the metrics ``name`` (``single``: one name, for
        percentiles, which take no ``aggregation``)."""
        names = check_names(problems, name, single=single)
        if not single:
            check_aggregation(problems, METRICS, aggregation, distinct_column)
        return _Query(METRICS, [self._column(METRICS, "name").in_(names)], "|".join(names),
                      check_signal_filters(problems, METRICS.name, filters), aggregation, distinct_column)

    # ------------------------------------------------------------------ scores

    @operation
    def get_score_aggregate(self, *, scorer_id: str, aggregation: str, score_source: str | None = None,
                            filters: dict | None = None, compare_period: str | None = None) -> dict:
        """One value over the scores of ``scorer_id`` (and ``score_source``): ``{"value"}``, with
        ``compare_period`` also ``previous_value`` and ``change_percent``."""
        problems = Problems()
        query = self._score_query(problems, scorer_id, score_source, filters, aggregation)
        _check_compare_period(problems, compare_period)
        problems.raise_if_any()
        return self._aggregate(query, compare_period)

    @operation
    def get_score_breakdown(self, *, scorer_id: str, group_by: list[str], aggregation: str,
                            score_source: str | None = None, filters: dict | None = None) -> dict:
        """``{"groups": [{"dimensions", "value"}]}`` per distinct ``group_by`` tuple, by value, descending."""
        problems = Problems()
        query = self._score_query(problems, scorer_id, score_source, filters, aggregation)
        keys = check_group_by(problems, SCORES, group_by, required=True)
        problems.raise_if_any()
        return self._breakdown(query, keys, "DESC", None)

    @operation
    def get_score_time_series(self, *, scorer_id: str, interval: str, aggregation: str,
                              score_source: str | None = None, filters: dict | None = None,
                              group_by: list[str] | None = None) -> dict:
        """``{"series": [{"name", "points": [{"timestamp", "value"}]}]}`` with UTC buckets of
        ``interval``; one series (``scorer_id`` or ``"<scorer_id>|<score_source>"``), or one per
        distinct ``group_by`` tuple."""
        problems = Problems()
        query = self._score_query(problems, scorer_id, score_source, filters, aggregation)
        seconds = check_interval(problems, interval)
        keys = check_group_by(problems, SCORES, group_by, required=False)
        problems.raise_if_any()
        return self._time_series(query, seconds, keys)

    @operation
    def get_score_percentiles(self, *, scorer_id: str, percentiles: list[float], interval: str,
                              score_source: str | None = None, filters: dict | None = None) -> dict:
        """``{"series": [{"percentile", "points"}]}``: each percentile of the scores per bucket."""
        problems = Problems()
        query = self._score_query(problems, scorer_id, score_source, filters)
        levels = check_percentiles(problems, percentiles)
        seconds = check_interval(problems, interval)
        problems.raise_if_any()
        return self._percentiles(query, levels, seconds)

    def _score_query(self, problems: Problems, scorer_id: Any, score_source: Any, filters: Any,
                     aggregation: Any = _NO_AGGREGATION) -> _Query:
        return self._identity_query(problems, SCORES, ("scorer_id", scorer_id), ("score_source", score_source),
                                    filters, aggregation)

    # ------------------------------------------------------------------ feedback

    @operation
    def get_feedback_aggregate(self, *, feedback_type: str, aggregation: str, feedback_source: str | None = None,
                               filters: dict | None = None, compare_period: str | None = None) -> dict:
        """One value over the numeric feedback of ``feedback_type`` (and ``feedback_source``);
        string feedback is left out.  As :meth:`get_score_aggregate`."""
        problems = Problems()
        query = self._feedback_query(problems, feedback_type, feedback_source, filters, aggregation)
        _check_compare_period(problems, compare_period)
        problems.raise_if_any()
        return self._aggregate(query, compare_period)

    @operation
    def get_feedback_breakdown(self, *, feedback_type: str, group_by: list[str], aggregation: str,
                               feedback_source: str | None = None, filters: dict | None = None) -> dict:
        """As :meth:`get_score_breakdown`, over numeric feedback."""
        problems = Problems()
        query = self._feedback_query(problems, feedback_type, feedback_source, filters, aggregation)
        keys = check_group_by(problems, FEEDBACK, group_by, required=True)
        problems.raise_if_any()
        return self._breakdown(query, keys, "DESC", None)

    @operation
    def get_feedback_time_series(self, *, feedback_type: str, interval: str, aggregation: str,
                                 feedback_source: str | None = None, filters: dict | None = None,
                                 group_by: list[str] | None = None) -> dict:
        """As :meth:`get_score_time_series`, over numeric feedback."""
        problems = Problems()
        query = self._feedback_query(problems, feedback_type, feedback_source, filters, aggregation)
        seconds = check_interval(problems, interval)
        keys = check_group_by(problems, FEEDBACK, group_by, required=False)
        problems.raise_if_any()
        return self._time_series(query, seconds, keys)

    @operation
    def get_feedback_percentiles(self, *, feedback_type: str, percentiles: list[float], interval: str,
                                 feedback_source: str | None = None, filters: dict | None = None) -> dict:
        """As :meth:`get_score_percentiles`, over numeric feedback."""
        problems = Problems()
        query = self._feedback_query(problems, feedback_type, feedback_source, filters)
        levels = check_percentiles(problems, percentiles)
        seconds = check_interval(problems, interval)
        problems.raise_if_any()
        return self._percentiles(query, levels, seconds)

    def _feedback_query(self, problems: Problems, feedback_type: Any, feedback_source: Any, filters: Any,
                        aggregation: Any = _NO_AGGREGATION) -> _Query:
        return self._identity_query(problems, FEEDBACK, ("feedback_type", feedback_type),
                                    ("feedback_source", feedback_source), filters, aggregation)

    def _identity_query(self, problems: Problems, signal: Signal, required: tuple[str, Any],
                        optional: tuple[str, Any], filters: Any, aggregation: Any) -> _Query:
        """A score or feedback question: the rows of one scorer (feedback type) and, when given,
        one source, named ``"<scorer>[|<source>]"``; feedback only its numeric values."""
        check_identity(problems, required[0], required[1], required=True)
        check_identity(problems, optional[0], optional[1], required=False)
        if aggregation is not _NO_AGGREGATION:
            check_aggregation(problems, signal, aggregation, None)
        present = [(key, value) for key, value in (required, optional) if value is not None]
        identity = [self._column(signal, key) == value for key, value in present]
        if signal is FEEDBACK:
            identity.append(self._column(signal, "value_number").is_null(False))
        return _Query(signal, identity, "|".join(str(value) for _, value in present),
                      check_signal_filters(problems, signal.name, filters),
                      None if aggregation is _NO_AGGREGATION else aggregation)

    def _column(self, signal: Signal, key: str) -> peewee.Field:
        return getattr(self._signal_model(SIGNAL_KINDS[signal.name]), key)


    # ------------------------------------------------------------------ the query shapes

    def _measured_rows(self, query: _Query, dimensions: Sequence[tuple[str, str, list[Any]]],
              filters: dict[str, Any] | None = None) -> tuple[str, list[Any]]:
        """The select the outer query reads: the signal's current rows (§3.4, §5) meeting the
        identity conditions and the filters, with the measure (``m``), ``timestamp``, the key, the
        costs and the ``dimensions`` (``(alias, expression, params)``) as columns."""
        signal = query.signal
        model = self._signal_model(SIGNAL_KINDS[signal.name])
        conditions = [*query.identity, *self._signal_sql.conditions(
            model, SIGNAL_KINDS[signal.name], query.filters if filters is None else filters)]
        current, params = self._signal_sql.current_rows(model, conditions)
        columns = [f'"{signal.measure}" AS "m"', '"timestamp"', f'"{signal.key}"']
        if signal.costs:
            columns += ['"estimatedCost"', '"costUnit"']
        if query.distinct_column:
            columns.append(f'{self._dimension_sql(signal, query.distinct_column)[0]} AS "distinct"')
        columns += [f'{expression} AS "{alias}"' for alias, expression, _ in dimensions]
        selected = [param for _, _, expression_params in dimensions for param in expression_params]
        return f'SELECT {", ".join(columns)} FROM ({current}) AS "current"', [*selected, *params]

    def _dimension_sql(self, signal: Signal, key: str) -> tuple[str, list[Any]]:
        """A ``group_by`` key as an expression of the selected row: its column, else (metrics)
        the value of the label ``key``."""
        if key in signal.columns:
            column = signal.columns[key]
            if key == "review_status" and column not in self._signal_model(SIGNAL_KINDS[signal.name])._meta.columns:
                # ClickHouse's feedback has no reviewStatus column: its records read the
                # default, "needs-review" (§8.3), so that is the dimension's one value.
                return f"'{DEFAULT_REVIEW_STATUS}'", []
            return f'"{column}"', []
        dialect = self._analytics[signal.name]
        return dialect.label(), [dialect.label_key(key)]

    def _dimensions(self, signal: Signal, keys: Sequence[str]) -> list[tuple[str, str, list[Any]]]:
        return [(f"d{index}", *self._dimension_sql(signal, key)) for index, key in enumerate(keys)]

    def _measures(self, query: _Query) -> str:
        """The aggregated value, the count of measured rows and (metrics) the costs' sum and the
        least and greatest cost unit (one unit when they are equal)."""
        dialect = self._analytics[query.signal.name]
        aggregation = query.aggregation
        value = (dialect.count_distinct('"distinct"') if aggregation == "count_distinct"
                 else dialect.last('"m"', f'"{query.signal.key}"') if aggregation == "last"
                 else f'{aggregation.upper()}("m")')
        sql = f'{value} AS "value", COUNT("m") AS "measured"'
        if query.signal.costs:
            sql += ', SUM("estimatedCost") AS "cost", MIN("costUnit") AS "unit_min", MAX("costUnit") AS "unit_max"'
        return sql

    def _select(self, query: _Query, keys: Sequence[str], bucket: int | None, *, order: str,
                filters: dict[str, Any] | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """``SELECT <dimensions>[, <bucket>], <measures> FROM (<rows>) GROUP BY …`` as dicts."""
        dimensions = self._dimensions(query.signal, keys)
        grouped = [f'"{alias}"' for alias, _, _ in dimensions]
        if bucket:
            dimensions.append(("bucket", self._analytics[query.signal.name].bucket(bucket), []))
            grouped.append('"bucket"')
        rows_sql, params = self._measured_rows(query, dimensions, filters)
        labels = [f'"d{index}" IS NOT NULL' for index, key in enumerate(keys) if key not in query.signal.columns]
        sql = (f'SELECT {"".join(column + ", " for column in grouped)}{self._measures(query)} '
               f'FROM ({rows_sql}) AS "rows"{" WHERE " + " AND ".join(labels) if labels else ""}'
               f'{" GROUP BY " + ", ".join(grouped) if grouped else ""}{" ORDER BY " + order if order else ""}'
               f'{f" LIMIT {int(limit)}" if limit else ""}')
        return self._analytics_rows(sql, params)

    def _analytics_rows(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        cursor = self.backend.database.execute_sql(sql, list(params))
        names = [column[0] for column in cursor.description or ()]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    @staticmethod
    def _value(query: _Query, row: dict[str, Any]) -> float | None:
        """The aggregated value of a row: ``None`` over no measured rows (``count``: 0)."""
        if query.aggregation in ("count", "count_distinct"):
            return float(row["value"] or 0)
        return _number(row["value"]) if row["measured"] else None

    @staticmethod
    def _costs(row: dict[str, Any]) -> tuple[float | None, str | None]:
        unit = row["unit_min"] if row["unit_min"] == row["unit_max"] else None
        return _number(row["cost"]), unit

    def _aggregate(self, query: _Query, compare_period: str | None) -> dict:
        row = self._select(query, (), None, order="")[0]
        result: dict[str, Any] = {"value": self._value(query, row)}
        if query.signal.costs:
            result["estimated_cost"], result["cost_unit"] = self._costs(row)
        previous_filters = self._previous_filters(query.filters, compare_period)
        if previous_filters is not None:
            previous = self._select(query, (), None, order="", filters=previous_filters)[0]
            result["previous_value"] = self._value(query, previous)
            result["change_percent"] = change_percent(result["value"], result["previous_value"])
            if query.signal.costs:
                result["previous_estimated_cost"] = self._costs(previous)[0]
                result["cost_change_percent"] = change_percent(result["estimated_cost"],
                                                               result["previous_estimated_cost"])
        return result

    @staticmethod
    def _previous_filters(filters: dict[str, Any], compare_period: str | None) -> dict[str, Any] | None:
        """The filters with their timestamp range moved back by the compared period, or ``None``
        without a period or a range with both ends."""
        bounds = filters.get("timestamp") or {}
        if compare_period is None or "start" not in bounds or "end" not in bounds:
            return None
        shift = COMPARE_PERIODS[compare_period] or bounds["end"] - bounds["start"]
        return {**filters, "timestamp": {**bounds, "start": bounds["start"] - shift, "end": bounds["end"] - shift}}

    def _breakdown(self, query: _Query, keys: list[str], direction: str, limit: int | None) -> dict:
        ties = ", ".join(f'("d{index}" IS NULL), "d{index}"' for index in range(len(keys)))
        rows = self._select(query, keys, None, order=f'"value" {direction}, {ties}', limit=limit)
        groups = []
        for row in rows:
            group = {"dimensions": {key: row[f"d{index}"] for index, key in enumerate(keys)},
                     "value": self._value(query, row)}
            if query.signal.costs:
                group["estimated_cost"], group["cost_unit"] = self._costs(row)
            groups.append(group)
        return {"groups": groups}

    def _time_series(self, query: _Query, seconds: int, keys: list[str]) -> dict:
        order = ", ".join([*(f'("d{index}" IS NULL), "d{index}"' for index in range(len(keys))), '"bucket"'])
        rows = self._select(query, keys, seconds, order=order)
        series: dict[tuple, dict[str, Any]] = {}
        units: dict[tuple, set[str]] = {}
        for row in rows:
            values = tuple(row[f"d{index}"] for index in range(len(keys)))
            if values not in series:
                series[values] = {"name": "|".join(value or "" for value in values) if keys else query.name,
                                  "points": []}
                units[values] = set()
            point = {"timestamp": _epoch(row["bucket"]), "value": self._value(query, row)}
            if query.signal.costs:
                point["estimated_cost"] = _number(row["cost"])
                units[values].update(unit for unit in (row["unit_min"], row["unit_max"]) if unit is not None)
            series[values]["points"].append(point)
        if not keys and not series:
            series[()] = {"name": query.name, "points": []}
            units[()] = set()
        if query.signal.costs:
            for values, found in units.items():
                series[values]["cost_unit"] = next(iter(found)) if len(found) == 1 else None
        # Series in the order of their first bucket (ties: their values, as the rows came).
        ordered = sorted(series.values(), key=lambda item: item["points"][0]["timestamp"] if item["points"]
                         else datetime.min.replace(tzinfo=timezone.utc))
        return {"series": ordered}

    def _percentiles(self, query: _Query, levels: list[float], seconds: int) -> dict:
        dialect = self._analytics[query.signal.name]
        bucket, percentile = dialect.bucket(seconds), dialect.percentile('"m"')
        if percentile is None:
            points = self._ranked_percentiles(query, levels, bucket)
        else:
            rows_sql, params = self._measured_rows(query, [("bucket", bucket, [])])
            columns = ", ".join(f'{percentile} AS "p{index}"' for index in range(len(levels)))
            rows = self._analytics_rows(f'SELECT "bucket", {columns} FROM ({rows_sql}) AS "rows" '
                                        f'GROUP BY "bucket" ORDER BY "bucket"', [*levels, *params])
            points = [[{"timestamp": _epoch(row["bucket"]), "value": _number(row[f"p{index}"])} for row in rows]
                      for index in range(len(levels))]
        return {"series": [{"percentile": level, "points": points[index]} for index, level in enumerate(levels)]}

    def _ranked_percentiles(self, query: _Query, levels: list[float], bucket: str) -> list[list[dict[str, Any]]]:
        """Percentiles without a percentile function: SQL ranks each bucket's values and returns
        only the (at most two) rows around each level's position; Python interpolates."""
        rows_sql, params = self._measured_rows(query, [("bucket", bucket, [])])
        param = self._analytics[query.signal.name].param
        levels_sql = " UNION ALL ".join(f"SELECT {index} AS \"level\", {param} AS \"p\"" for index in range(len(levels)))
        sql = (f'SELECT "ranked"."bucket", "levels"."level", "ranked"."rank", "ranked"."n", "ranked"."m" '
               f'FROM (SELECT "bucket", "m", ROW_NUMBER() OVER (PARTITION BY "bucket" ORDER BY "m") - 1 AS "rank", '
               f'COUNT(*) OVER (PARTITION BY "bucket") AS "n" FROM ({rows_sql}) AS "rows") AS "ranked" '
               f'JOIN ({levels_sql}) AS "levels" ON "ranked"."rank" BETWEEN CAST(("ranked"."n" - 1) * "levels"."p" '
               f'AS INTEGER) AND CAST(("ranked"."n" - 1) * "levels"."p" AS INTEGER) + 1 '
               f'ORDER BY "ranked"."bucket", "levels"."level", "ranked"."rank"')
        found: dict[tuple[int, Any], dict[int, float]] = {}
        counts: dict[Any, int] = {}
        for row in self._analytics_rows(sql, [*params, *levels]):
            found.setdefault((row["level"], row["bucket"]), {})[row["rank"]] = float(row["m"])
            counts[row["bucket"]] = row["n"]
        return [[{"timestamp": _epoch(bucket_value), "value": interpolated(found[index, bucket_value], count, level)}
                 for bucket_value, count in counts.items()] for index, level in enumerate(levels)]
