"""Observability signals of the current ("vNext") layout: logs, metrics, score events and
feedback (observability-vnext.md §2.2–2.6, §8.1–8.3).

:class:`SignalsMixin` holds the write and list methods every backend shares: it checks and
normalises records (§2.6), checks the filters of §8.2 (:func:`check_signal_filters`) and turns
stored rows back into records.  What a database does differently (its DDL, how a batch is written
and retried idempotently, which row of an id is current, how JSON, tags and labels are compared)
lives in one object per backend, ``self._signal_sql``: :class:`~.signals_clickhouse.ClickHouseSignalSQL`
or :class:`~.signals_sql.PostgresSignalSQL` / :class:`~.signals_sql.SQLiteSignalSQL`.

The mixin joins a vNext observability repository (ClickHouse's
:class:`~.vnext.VNextObservabilityRepository`, PostgreSQL's and SQLite's ``vnext_sql``
repositories), whose ``build_models`` merges the signal models of
:func:`~composite_store.models.observability_signals.build_observability_signal_models` into
``self.models`` and whose ``init()`` calls :meth:`SignalsMixin.create_signal_tables`.
"""

from __future__ import annotations

import functools
import math
import operator
import uuid
from copy import copy
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Sequence

from ..backends.base import keyset_chunks
from ..base import ITER_CHUNK, check_chunk_size, operation, streaming
from ..errors import NotFoundError, NotSupportedError, ValidationError
from ..models.observability_signals import (FEEDBACK_EVENTS, LOG_EVENTS, METRIC_EVENTS, MODEL_NAMES, PG_COLUMNS,
                                            SCORE_EVENTS, field_name)
from ..page import DeltaPage, Page
from ..schemas.observability import ENTITY_TYPES
from ..validation import Problems, check_id, check_order_by, check_page, one_of
from ..values import normalize_json, to_utc
from .filters import _check_range, check_list_mode

LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")
REVIEW_STATUSES = ("needs-review", "reviewed")
DEFAULT_REVIEW_STATUS = "needs-review"
#: Most ids one ``delete_scores``/``delete_feedback`` call takes (§8.3).
MAX_DELETE_IDS = 1000
#: Most ``trace_ids`` a metrics filter takes (§8.2).
MAX_TRACE_IDS = 1000
REVIEW_STATUS_MESSAGE = "reviewStatus must be one of: needs-review, reviewed"
DELTA_NOT_SUPPORTED = "This storage provider does not support observability delta polling"
INVALID_DELTA_CURSOR = "Invalid observability delta cursor"

#: Entity-type context keys (validated against the vNext entity types, §2.1).
ENTITY_TYPE_KEYS = ("entity_type", "parent_entity_type", "root_entity_type")
#: Optional text context keys of every signal record (§2.2).
CONTEXT_TEXT_KEYS = (
    "trace_id", "span_id", "entity_id", "entity_name", "parent_entity_id", "parent_entity_name", "root_entity_id",
    "root_entity_name", "user_id", "organization_id", "resource_id", "run_id", "session_id", "thread_id",
    "request_id", "environment", "service_name", "entity_version_id", "parent_entity_version_id",
    "root_entity_version_id", "experiment_id", "execution_source",
)
#: Equality filters every signal takes (§8.2): no ``entity_id``/``parent_entity_id``/``root_entity_id``.
COMMON_EQUALITY_FILTERS = (
    "trace_id", "span_id", "entity_type", "entity_name", "entity_version_id", "parent_entity_version_id",
    "root_entity_version_id", "user_id", "organization_id", "experiment_id", "service_name", "environment",
    "parent_entity_type", "parent_entity_name", "root_entity_type", "root_entity_name", "resource_id", "run_id",
    "session_id", "thread_id", "request_id", "execution_source",
)


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: one object per signal
class SignalKind:
    """What tells one signal from another: its table, id key, record fields and filters."""

    #: ``logs``, ``metrics``, ``scores`` or ``feedback`` (the name in messages and ``retention``).
    name: str
    table: str
    id_key: str
    #: Required keys → their kind (``text``, ``number``, ``level``, ``feedback_value``).
    required: dict[str, str]
    #: Optional keys → their kind (``text``, ``number``, ``json``, ``labels``, ``review_status``).
    optional: dict[str, str]
    #: Keys accepted and ignored (no column holds them).
    ignored: tuple[str, ...]
    #: Filters of this signal beyond the common ones → their kind (``text``, ``texts``, …).
    filters: dict[str, str]
    #: ``order_by.field`` values.
    order_fields: tuple[str, ...]
    #: What replaces a deprecated ``source`` filter (its error message names it).
    source_replacement: str

    @property
    def model_name(self) -> str:
        """The attribute of this signal's model on ``self.models``."""
        return MODEL_NAMES[self.table]


LOGS = SignalKind(
    "logs", LOG_EVENTS, "log_id", {"timestamp": "timestamp", "level": "level", "message": "text"},
    {"log_id": "text", "data": "json", "metadata": "json"}, (), {"level": "levels"}, ("timestamp",),
    "execution_source")
METRICS = SignalKind(
    "metrics", METRIC_EVENTS, "metric_id", {"timestamp": "timestamp", "name": "text", "value": "number"},
    {"metric_id": "text", "provider": "text", "model": "text", "estimated_cost": "number", "cost_unit": "text",
     "cost_metadata": "json", "labels": "labels", "metadata": "json"}, (),
    {"trace_ids": "trace_ids", "name": "names", "provider": "text", "model": "text", "cost_unit": "text",
     "labels": "labels"}, ("timestamp",), "execution_source")
SCORES = SignalKind(
    "scores", SCORE_EVENTS, "score_id", {"timestamp": "timestamp", "scorer_id": "text", "score": "number"},
    {"score_id": "text", "scorer_version": "text", "score_source": "text", "reason": "text",
     "score_trace_id": "text", "metadata": "json"}, ("scorer_name", "id", "created_at", "updated_at"),
    {"scorer_id": "texts", "score_source": "text", "metadata": "metadata"}, ("timestamp", "score"),
    "score_source or execution_source")
FEEDBACK = SignalKind(
    "feedback", FEEDBACK_EVENTS, "feedback_id", {"timestamp": "timestamp", "feedback_type": "text",
                                                 "value": "feedback_value"},
    {"feedback_id": "text", "feedback_source": "text", "comment": "text", "feedback_user_id": "text",
     "source_id": "text", "metadata": "json", "review_status": "review_status"}, ("id", "created_at", "updated_at"),
    {"feedback_type": "texts", "feedback_source": "text", "feedback_user_id": "text",
     "review_status": "review_status"}, ("timestamp",), "feedback_source or execution_source")
SIGNAL_KINDS = {kind.name: kind for kind in (LOGS, METRICS, SCORES, FEEDBACK)}

#: Record keys of each signal in the order records list them (§5's column order, without the
#: cursor columns; feedback's two value columns read as one ``value``).
RECORD_KEYS: dict[str, tuple[str, ...]] = {
    kind.table: tuple(dict.fromkeys(
        "value" if column in ("valueString", "valueNumber") else field_name(column)
        for column, _ in PG_COLUMNS[kind.table]))
    for kind in SIGNAL_KINDS.values()
}


# --------------------------------------------------------------------------- record checks (§2)
# One checker per kind of value: (problems, path, value) -> the value to store.  A record's keys
# are looked up in a table per signal built once (bulk writes check every key of every record).

def _timestamp(problems: Problems, path: str, value: Any) -> Any:
    if not isinstance(value, bool):
        try:
            return to_utc(value)
        except (TypeError, ValueError, OverflowError):
            pass
    problems.add(path, "Not a valid datetime.")
    return None


def _text(problems: Problems, path: str, value: Any) -> Any:
    if isinstance(value, str):
        return value
    problems.add(path, "Not a valid string.")
    return None


def _finite(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _number(problems: Problems, path: str, value: Any) -> Any:
    if type(value) is float and math.isfinite(value):  # the usual case, without a call
        return value
    if _finite(value):
        return float(value)
    problems.add(path, "Not a valid finite number.")
    return None


def _level(problems: Problems, path: str, value: Any) -> Any:
    if value in LOG_LEVELS:
        return value
    problems.add(path, one_of(LOG_LEVELS))
    return None


def _feedback_value(problems: Problems, path: str, value: Any) -> Any:
    if isinstance(value, str):
        return value
    if _finite(value):
        return float(value)
    problems.add(path, "Must be a finite number or a string.")
    return None


def _json_object(problems: Problems, path: str, value: Any) -> Any:
    if not isinstance(value, dict):
        problems.add(path, "Not a valid mapping type.")
        return None
    errors: dict[str, list[str]] = {}
    normalized = normalize_json(value, "", errors)
    problems.merge(errors, path)
    return normalized


def _review_status(problems: Problems, path: str, value: Any) -> Any:
    if value in REVIEW_STATUSES:
        return value
    problems.add(path, REVIEW_STATUS_MESSAGE)
    return None


def _entity_type(problems: Problems, path: str, value: Any) -> Any:
    if value not in ENTITY_TYPES:
        problems.add(path, one_of(ENTITY_TYPES))
    return value


def normalized_tags(problems: Problems, path: str, tags: Any) -> list[str]:
    """Tags stripped, without empty and repeated ones (§2.6); a non-list or a non-string tag is
    a problem."""
    if not isinstance(tags, (list, tuple)):
        problems.add(path, "Not a valid list.")
        return []
    kept: dict[str, None] = {}
    for index, tag in enumerate(tags):
        if not isinstance(tag, str):
            problems.add(f"{path}[{index}]", "Not a valid string.")
        elif tag.strip():
            kept.setdefault(tag.strip())
    return list(kept)


def normalized_labels(problems: Problems, path: str, labels: Any) -> dict[str, str]:
    """Labels with keys and values stripped, pairs where either is empty dropped (§2.6); only
    ``str`` → ``str`` pairs are accepted."""
    if not isinstance(labels, dict):
        problems.add(path, "Not a valid mapping type.")
        return {}
    kept = {}
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str):
            problems.add(f"{path}.{key}", "Labels must map strings to strings.")
        elif key.strip() and value.strip():
            kept[key.strip()] = value.strip()
    return kept


_CHECKERS: dict[str, Callable[[Problems, str, Any], Any]] = {
    "timestamp": _timestamp, "text": _text, "number": _number, "level": _level, "feedback_value": _feedback_value,
    "json": _json_object, "labels": normalized_labels, "review_status": _review_status,
}


@functools.lru_cache(maxsize=None)
def _record_checks(kind: SignalKind) -> dict[str, Callable[[Problems, str, Any], Any]]:
    """Record key → its checker, for one signal (context keys, then the signal's own)."""
    checks = {key: _text for key in CONTEXT_TEXT_KEYS}
    checks.update({key: _entity_type for key in ENTITY_TYPE_KEYS})
    checks["scope"], checks["tags"] = _json_object, normalized_tags
    checks.update({key: _CHECKERS[value_kind] for key, value_kind in {**kind.optional, **kind.required}.items()})
    return checks


def signal_row(problems: Problems, kind: SignalKind, record: Any, path: str = "",
               checks: dict[str, Callable[[Problems, str, Any], Any]] | None = None,
               clean: Callable[[str], str] | None = None) -> dict[str, Any]:
    """The stored row (field name → value) of one input record, checked (§2) and normalised
    (§2.6): a missing id becomes a new UUID4, ``source`` fills the fields it stands for, tags and
    labels are cleaned, feedback's value goes to its number or string column.  ``clean`` (the
    backend's) removes what the database cannot store from the plain text fields; the signal
    SQL's ``cleaned`` does the rest (:data:`.signals_sql.CLEANED_AFTER`)."""
    prefix = f"{path}." if path else ""
    if not isinstance(record, dict):
        problems.add(path or "record", "Not a valid mapping type.")
        return {}
    if kind is FEEDBACK and isinstance(record.get("user_id"), str) and record.get("feedback_user_id") is None:
        record = {**record, "feedback_user_id": record["user_id"], "user_id": None}  # legacy actor rule (§2.5)
    checks = checks or _record_checks(kind)
    row: dict[str, Any] = {}
    source = None
    for key, value in record.items():
        check = checks.get(key)
        if check is _text and type(value) is str:  # most keys: no checker call
            row[key] = value if clean is None else clean(value)
        elif check is None:
            if key == "source":
                source = value
            elif key not in kind.ignored:
                problems.add(prefix + key, "Unknown field.")
        elif value is None:
            if key in kind.required:
                problems.add(prefix + key, "Field may not be null.")
            row[key] = [] if key == "tags" else None
        else:
            row[key] = check(problems, prefix + key, value)
    for key in kind.required:
        if key not in record:
            problems.add(prefix + key, "Missing data for required field.")
    if source is not None:
        if not isinstance(source, str):
            problems.add(prefix + "source", "Not a valid string.")
        else:  # the deprecated alias (§2.3–2.5)
            if kind is SCORES and row.get("score_source") is None:
                row["score_source"] = source
            if kind is FEEDBACK and row.get("feedback_source") is None:
                row["feedback_source"] = source
            if row.get("execution_source") is None:
                row["execution_source"] = source
    if not row.get(kind.id_key):
        row[kind.id_key] = str(uuid.uuid4())
    row.setdefault("tags", [])
    if kind is METRICS:
        row["labels"] = row.get("labels") or {}
    if kind is FEEDBACK:
        value = row.pop("value", None)
        row["value_number"] = value if isinstance(value, float) else None
        row["value_string"] = value if isinstance(value, str) else None
        row["feedback_source"] = row.get("feedback_source") or ""
        row["review_status"] = row.get("review_status") or DEFAULT_REVIEW_STATUS
    return row


def signal_rows(problems: Problems, kind: SignalKind, records: Any, argument: str,
                clean: Callable[[str], str] | None = None) -> list[dict[str, Any]]:
    """The rows of a batch (problems under ``<argument>[i].<key>``): checked column by column
    when every value is plainly valid (:func:`plain_rows`), else record by record."""
    if not isinstance(records, (list, tuple)):
        problems.add(argument, "Not a valid list.")
        return []
    rows = plain_rows(kind, records, clean)
    if rows is not None:
        return rows
    checks = _record_checks(kind)
    return [signal_row(problems, kind, record, f"{argument}[{index}]", checks, clean)
            for index, record in enumerate(records)]


_NONE = type(None)
UTC = timezone.utc
_ENTITY_TYPE_VALUES = frozenset((*ENTITY_TYPES, None))
_LEVEL_VALUES = frozenset(LOG_LEVELS)


def plain_rows(kind: SignalKind, records: Sequence[Any], clean: Callable[[str], str] | None = None
               ) -> list[dict[str, Any]] | None:
    """The rows of a batch whose every value is plainly valid, checked a column at a time
    (a type test per column, C-level loops), as :func:`signal_row` would make them; ``None``
    for any other batch (a problem, a ``source`` alias, an ignored key, feedback's legacy
    ``user_id``), which :func:`signal_row` then checks record by record, naming each problem.
    Each row starts as a copy of its record; only columns the checks changed are written into
    the rows (a bulk write's per-row Python was most of its cost)."""
    if len(records) < 2 or set(map(type, records)) != {dict}:
        return None
    checks = _record_checks(kind)
    keys = set().union(*records)
    if not keys.issubset(checks) or not keys.issuperset(kind.required) or (kind is FEEDBACK and "user_id" in keys):
        return None
    count = len(records)
    changed: dict[str, list[Any]] = {}
    for key in keys:
        try:
            values = list(map(operator.itemgetter(key), records))
        except KeyError:  # some records lack it: as None (a write sends NULL/the default either way)
            if key in kind.required:
                return None
            values = [record.get(key) for record in records]
        checked = _plain_column(checks[key], values, key in kind.required, clean)
        if checked is None:
            return None
        if not all(map(operator.is_, checked, values)):
            changed[key] = checked
    if "tags" not in keys:
        changed["tags"] = [[] for _ in range(count)]
    ids = changed.get(kind.id_key) or [record.get(kind.id_key) for record in records]
    if not all(ids):
        changed[kind.id_key] = [value or str(uuid.uuid4()) for value in ids]
    if kind is METRICS:
        labels = changed.get("labels") or [record.get("labels") for record in records]
        if not all(labels):
            changed["labels"] = [value or {} for value in labels]
    rows = list(map(dict.copy, records))
    for key, values in changed.items():
        for row, value in zip(rows, values):
            row[key] = value
    if kind is FEEDBACK:
        for row in rows:  # the value goes to its number or its string column
            value = row.pop("value")
            row["value_number"] = value if type(value) is float else None
            row["value_string"] = value if type(value) is str else None
            row["feedback_source"] = row.get("feedback_source") or ""
            row["review_status"] = row.get("review_status") or DEFAULT_REVIEW_STATUS
    return rows


def _plain_column(check: Callable[[Problems, str, Any], Any], values: list[Any], required: bool,
                  clean: Callable[[str], str] | None) -> list[Any] | None:
    """One column's stored values when each is plainly valid for ``check``, else ``None``;
    a value the check keeps as it is stays the same object."""
    types = set(map(type, values))
    if _NONE in types:
        if required:
            return None
        types.discard(_NONE)
    if check is _text:
        if types - {str}:
            return None
        if clean is not None:
            text = "".join(filter(None, values))
            if not text.isascii() or "\x00" in text:  # else clean() returns every value as it is
                values = [value if value is None else clean(value) for value in values]
        return values
    if check is _entity_type:
        return values if types <= {str} and _ENTITY_TYPE_VALUES.issuperset(values) else None
    if check is _level:
        return values if types <= {str} and _LEVEL_VALUES.issuperset(values) else None
    if check is _number or check is _feedback_value:
        if not types <= ({float, int} if check is _number else {float, int, str}):
            return None
        try:  # float() returns a float as it is
            values = [value if value is None or type(value) is str else float(value) for value in values]
        except OverflowError:
            return None
        numbers = [value for value in values if type(value) is float]
        return values if all(map(math.isfinite, numbers)) else None
    problems = Problems()
    if check is _timestamp:
        if not types <= {datetime, str}:
            return None
        # Aware UTC datetimes in whole milliseconds are stored as they are (to_utc's result).
        values = [value if type(value) is datetime and value.tzinfo is UTC and not value.microsecond % 1000
                  else value if value is None else _timestamp(problems, "", value) for value in values]
    elif check is normalized_tags or check is normalized_labels:
        if not types <= ({list, tuple} if check is normalized_tags else {dict}):
            return None
        # A batch's tags and labels repeat: each distinct one is checked once; one its check
        # keeps as it is (equal) stays the record's own object, others are copies.
        known: dict[Any, Any] = {}
        checked = []
        for value in values:
            if value is None:
                checked.append([] if check is normalized_tags else None)
                continue
            marker = (type(value), tuple(value)) if check is normalized_tags else tuple(value.items())
            try:
                result = known[marker]
            except KeyError:
                result = check(problems, "", value)
                known[marker] = result = None if result == value and type(result) is type(value) else result
            except TypeError:  # an unhashable tag or label: the record checks name it
                return None
            checked.append(value if result is None else copy(result))
        values = checked
    else:  # JSON documents, review status: the record check itself, value by value
        if bool in types:
            return None
        values = [value if value is None else check(problems, "", value) for value in values]
    return None if problems else values


# --------------------------------------------------------------------------- filters (§8.2)

def check_signal_filters(problems: Problems, signal: str, filters: Any) -> dict[str, Any]:
    """The validated filters of one signal (``logs``, ``metrics``, ``scores``, ``feedback``):
    keys with ``None`` dropped, ``level``/``scorer_id``/``feedback_type`` as lists, tags and
    labels cleaned as writes clean them, the timestamp range as aware datetimes; feedback's
    legacy ``user_id`` moved to ``feedback_user_id`` (§2.5).  Problems are recorded, not raised."""
    kind = SIGNAL_KINDS[signal]
    if filters is None:
        return {}
    if not isinstance(filters, dict):
        problems.add("filters", "Not a valid mapping type.")
        return {}
    filters = dict(filters)
    if kind is FEEDBACK and isinstance(filters.get("user_id"), str) and filters.get("feedback_user_id") is None:
        filters["feedback_user_id"] = filters.pop("user_id")
    checked: dict[str, Any] = {}
    for key, value in filters.items():
        path = f"filters.{key}"
        filter_kind = kind.filters.get(key, "text" if key in COMMON_EQUALITY_FILTERS else None)
        if key == "source":
            problems.add(path, f"Deprecated `source` filter is not supported for {kind.name}; use "
                               f"`{kind.source_replacement}` instead.")
        elif key == "timestamp":
            if value is not None:
                bounds = _check_range(problems, path, value)
                if bounds:
                    checked[key] = bounds
        elif key == "tags":
            if value is not None:
                tags = normalized_tags(problems, path, value)
                if tags:
                    checked[key] = tags
        elif filter_kind is None:
            problems.add(path, "Unknown field.")
        elif value is None:
            continue
        elif filter_kind == "metadata":
            if not isinstance(value, dict):
                problems.add(path, "Not a valid mapping type.")
            elif value:
                errors: dict[str, list[str]] = {}
                checked[key] = normalize_json(value, "", errors)
                problems.merge(errors, path)
        elif filter_kind == "labels":
            labels = normalized_labels(problems, path, value)
            if labels:
                checked[key] = labels
        elif filter_kind in ("levels", "texts", "names", "trace_ids"):
            values = [value] if isinstance(value, str) and filter_kind in ("levels", "texts") else value
            if not isinstance(values, (list, tuple)) or not all(isinstance(item, str) for item in values):
                problems.add(path, "Not a valid string or list of strings.")
            elif not values and filter_kind in ("names", "trace_ids"):
                problems.add(path, f"{key} must be a non-empty list")
            elif filter_kind == "trace_ids" and len(values) > MAX_TRACE_IDS:
                problems.add(path, f"{key} must hold at most {MAX_TRACE_IDS} ids")
            elif filter_kind == "levels" and not set(values) <= set(LOG_LEVELS):
                problems.add(path, one_of(LOG_LEVELS))
            elif values:
                checked[key] = list(dict.fromkeys(values))
        elif key in ENTITY_TYPE_KEYS:
            if value not in ENTITY_TYPES:
                problems.add(path, one_of(ENTITY_TYPES))
            else:
                checked[key] = value
        elif filter_kind == "review_status":
            if value not in REVIEW_STATUSES:
                problems.add(path, REVIEW_STATUS_MESSAGE)
            else:
                checked[key] = value
        elif not isinstance(value, str):
            problems.add(path, "Not a valid string.")
        else:
            checked[key] = value
    return checked


def _check_ids(problems: Problems, argument: str, ids: Any) -> list[str]:
    """``score_ids``/``feedback_ids``: a list of at most :data:`MAX_DELETE_IDS` non-empty strings."""
    if not isinstance(ids, (list, tuple)) or not all(isinstance(item, str) and item for item in ids):
        problems.add(argument, f"{argument} must be a list of non-empty strings")
        return []
    if len(ids) > MAX_DELETE_IDS:
        problems.add(argument, f"{argument} must hold at most {MAX_DELETE_IDS} ids")
    return list(dict.fromkeys(ids))


# --------------------------------------------------------------------------- the mixin

class SignalsMixin:
    """The signal methods of §8.1 (writes, lists, reads by id, deletes) for a vNext
    observability repository of any backend.

    Example::

        observability.batch_create_metrics(metrics=[
            {"timestamp": now, "name": "mastra_agent_duration_ms", "value": 120.0, "labels": {"status": "ok"}}])
        page = observability.list_metrics(filters={"name": ["mastra_agent_duration_ms"]})
    """

    #: Whether delta polling (§9) was asked for; the repositories' constructors set it.
    delta_polling: bool = False

    @property
    def _signal_sql(self) -> Any:
        """This backend's signal SQL (one object per repository)."""
        sql = self.__dict__.get("_signal_sql_object")
        if sql is None:
            sql = self.__dict__["_signal_sql_object"] = _signal_sql_for(self)
        return sql

    def create_signal_tables(self) -> None:
        """Create the four signal tables and their indexes, add the columns later versions added
        (called by ``init()`` inside its DDL transaction)."""
        self._signal_sql.create()

    def _signal_model(self, kind: SignalKind) -> Any:
        return getattr(self.models, kind.model_name)

    def count_signal_rows(self) -> dict[str, int | None]:
        """Current rows per signal table (as lists read them); ``None`` for a missing table."""
        counts: dict[str, int | None] = {}
        for kind in SIGNAL_KINDS.values():
            model = self._signal_model(kind)
            exists = self._signal_sql.exists(model)
            counts[kind.table] = self._signal_sql.page(model, kind, [], '"timestamp"', 0, 0)[1] if exists else None
        return counts

    # ------------------------------------------------------------------ writes

    @operation
    def batch_create_logs(self, *, logs: list[dict]) -> None:
        """Write log records, all or nothing; re-sending one (same ``log_id`` and ``timestamp``)
        never makes a second row in any read."""
        self._write_signal_batch(LOGS, logs, "logs")

    @operation
    def batch_create_metrics(self, *, metrics: list[dict]) -> None:
        """Write metric records, all or nothing; idempotent per (``metric_id``, ``timestamp``)."""
        self._write_signal_batch(METRICS, metrics, "metrics")

    @operation
    def create_score(self, *, score: dict) -> None:
        """Write one score event (a batch of one)."""
        self._write_signal(SCORES, score, "score")

    @operation
    def batch_create_scores(self, *, scores: list[dict]) -> None:
        """Write score events, all or nothing; a ``score_id`` written again replaces its row
        (with another ``timestamp``: the latest one is read)."""
        self._write_signal_batch(SCORES, scores, "scores")

    @operation
    def create_feedback(self, *, feedback: dict) -> None:
        """Write one feedback record (a batch of one)."""
        self._write_signal(FEEDBACK, feedback, "feedback")

    @operation
    def batch_create_feedback(self, *, feedbacks: list[dict]) -> None:
        """Write feedback records, all or nothing; a ``feedback_id`` written again replaces its row."""
        self._write_signal_batch(FEEDBACK, feedbacks, "feedbacks")

    def _write_signal(self, kind: SignalKind, record: Any, argument: str) -> None:
        problems = Problems()
        row = signal_row(problems, kind, record, "" if isinstance(record, dict) else argument,
                         clean=self.backend.clean)
        problems.raise_if_any()
        self._signal_sql.write(self._signal_model(kind), kind, [row])

    def _write_signal_batch(self, kind: SignalKind, records: Any, argument: str) -> None:
        problems = Problems()
        rows = signal_rows(problems, kind, records, argument, self.backend.clean)
        problems.raise_if_any()
        if rows:
            self._signal_sql.write(self._signal_model(kind), kind, rows)

    # ------------------------------------------------------------------ lists

    @operation
    def list_logs(self, *, filters: dict | None = None, page: int | None = None, per_page: int | bool | None = None,
                  order_by: dict | None = None, mode: str = "page", after: str | None = None,
                  limit: int | None = None) -> Page | DeltaPage:
        """A page of logs matching every filter (§8.2), newest first by default; with
        ``mode="delta"`` (``delta_polling=True``) the logs written after the ``after`` cursor, at
        most ``limit`` (§9)."""
        return self._list_signal(LOGS, filters, page, per_page, order_by, mode, after, limit)

    @operation
    def list_metrics(self, *, filters: dict | None = None, page: int | None = None,
                     per_page: int | bool | None = None, order_by: dict | None = None, mode: str = "page",
                     after: str | None = None, limit: int | None = None) -> Page | DeltaPage:
        """A page of metric events matching every filter (§8.2), newest first by default."""
        return self._list_signal(METRICS, filters, page, per_page, order_by, mode, after, limit)

    @operation
    def list_scores(self, *, filters: dict | None = None, page: int | None = None,
                    per_page: int | bool | None = None, order_by: dict | None = None, mode: str = "page",
                    after: str | None = None, limit: int | None = None) -> Page | DeltaPage:
        """A page of current score events matching every filter (§8.2); ``order_by.field`` is
        ``timestamp`` (default, newest first) or ``score``."""
        return self._list_signal(SCORES, filters, page, per_page, order_by, mode, after, limit)

    @operation
    def list_feedback(self, *, filters: dict | None = None, page: int | None = None,
                      per_page: int | bool | None = None, order_by: dict | None = None, mode: str = "page",
                      after: str | None = None, limit: int | None = None) -> Page | DeltaPage:
        """A page of feedback matching every filter (§8.2), newest first by default."""
        return self._list_signal(FEEDBACK, filters, page, per_page, order_by, mode, after, limit)

    def _list_signal(self, kind: SignalKind, filters: Any, page: Any, per_page: Any, order_by: Any, mode: Any,
                     after: Any, limit: Any) -> Page | DeltaPage:
        problems = Problems()
        check_list_mode(problems, mode, page=page, per_page=per_page, order_by=order_by, after=after, limit=limit)
        request = check_page(problems, page, per_page, default_per_page=10)
        checked = check_signal_filters(problems, kind.name, filters)
        ordering = check_order_by(problems, order_by, allowed=kind.order_fields, default_field="timestamp",
                                  default_direction="DESC")
        problems.raise_if_any()
        model, sql = self._signal_model(kind), self._signal_sql
        delta = self.delta_polling and sql.delta_supported()
        if mode == "delta" and not delta:
            raise NotSupportedError(DELTA_NOT_SUPPORTED)
        conditions = sql.conditions(model, kind, checked)
        if mode == "delta":
            return self._signal_delta_page(kind, model, conditions, after, 10 if limit is None else limit)
        id_column = model._meta.fields[kind.id_key].column_name
        direction = " DESC" if ordering.descending else ""
        order = f'"{ordering.field}"{direction}, "{id_column}"'
        # The stream's position first: a delta call from it sees every row written after the page.
        delta_cursor = sql.delta_head(model) if delta else None
        rows, total = sql.page(model, kind, conditions, order, request.limit, request.offset)
        return Page([self._signal_record(kind, row) for row in rows], total, request.page, request.per_page,
                    request.has_more(total), delta_cursor=delta_cursor)

    def _signal_delta_page(self, kind: SignalKind, model: Any, conditions: list[Any], after: str | None,
                    limit: int) -> DeltaPage:
        """The rows that became visible after ``after`` (§9), in stream order."""
        sql = self._signal_sql
        if after is None:
            return DeltaPage([], limit, False, sql.delta_head(model))
        position = sql.parse_delta_cursor(after)
        if position is None:
            raise ValidationError(fields={"after": [INVALID_DELTA_CURSOR]})
        rows, has_more, cursor = sql.delta(model, conditions, position, limit)
        return DeltaPage([self._signal_record(kind, row) for row in rows], limit, has_more, cursor)

    # ------------------------------------------------------------------ iteration

    @streaming
    def iter_logs(self, *, filters: dict | None = None, chunk_size: int = ITER_CHUNK) -> Iterator[dict]:
        """Every log matching the filters :meth:`list_logs` takes, as it gives them, by
        ``log_id`` then ``timestamp``, read ``chunk_size`` at a time (constant memory)."""
        return self._iter_signal(LOGS, filters, chunk_size)

    @streaming
    def iter_metrics(self, *, filters: dict | None = None, chunk_size: int = ITER_CHUNK) -> Iterator[dict]:
        """Every metric event matching the filters of :meth:`list_metrics`, by ``metric_id``
        then ``timestamp``."""
        return self._iter_signal(METRICS, filters, chunk_size)

    @streaming
    def iter_scores(self, *, filters: dict | None = None, chunk_size: int = ITER_CHUNK) -> Iterator[dict]:
        """Every current score event matching the filters of :meth:`list_scores`, by ``score_id``."""
        return self._iter_signal(SCORES, filters, chunk_size)

    @streaming
    def iter_feedback(self, *, filters: dict | None = None, chunk_size: int = ITER_CHUNK) -> Iterator[dict]:
        """Every feedback record matching the filters of :meth:`list_feedback`, by
        ``feedback_id`` then ``timestamp``."""
        return self._iter_signal(FEEDBACK, filters, chunk_size)

    def _iter_signal(self, kind: SignalKind, filters: Any, chunk_size: Any) -> Iterator[dict]:
        """The records of a list of ``kind`` without its page: the list's filter checks and
        conditions, walked by keyset over the table's current-row key (never ``OFFSET``)."""
        problems = Problems()
        check_chunk_size(problems, chunk_size)
        checked = check_signal_filters(problems, kind.name, filters)
        problems.raise_if_any()
        model, sql = self._signal_model(kind), self._signal_sql
        conditions = sql.conditions(model, kind, checked)

        def fetch(after: Any, limit: int) -> list[dict[str, Any]]:
            with self.backend.connection():
                if not sql.exists(model):
                    return []
                rows = sql.iteration_chunk(model, kind, conditions, after, limit)
            return [self._signal_record(kind, row) for row in rows]

        return keyset_chunks(fetch, sql.iteration_key(model, kind), chunk_size)

    # ------------------------------------------------------------------ reads, updates, deletes

    @operation
    def get_score_by_id(self, *, score_id: str) -> dict | None:
        """The current row of the score event, or ``None``."""
        problems = Problems()
        check_id(problems, "score_id", score_id)
        problems.raise_if_any()
        model = self._signal_model(SCORES)
        rows, _ = self._signal_sql.page(model, SCORES, [model.score_id == score_id], '"timestamp" DESC', 1, 0,
                                        counted=False)
        return self._signal_record(SCORES, rows[0]) if rows else None

    @operation
    def update_feedback_review_status(self, *, feedback_id: str, review_status: str) -> dict:
        """Set ``review_status`` (``needs-review`` or ``reviewed``) on every row of the feedback
        and return the record (the latest ``timestamp`` when there are several); an unknown id
        raises :class:`~repository.errors.NotFoundError`.  ClickHouse has no such column:
        :class:`~repository.errors.NotSupportedError` there."""
        problems = Problems()
        check_id(problems, "feedback_id", feedback_id)
        if review_status not in REVIEW_STATUSES:
            problems.add("review_status", REVIEW_STATUS_MESSAGE)
        problems.raise_if_any()
        row = self._signal_sql.update_review_status(self._signal_model(FEEDBACK), feedback_id, review_status)
        if row is None:
            raise NotFoundError("Feedback record not found", details={"feedback_id": feedback_id})
        return self._signal_record(FEEDBACK, row)

    @operation
    def delete_scores(self, *, score_ids: list[str], organization_id: str | None = None,
                      resource_id: str | None = None) -> None:
        """Delete the score events of these ids (only the tenant's when ``organization_id`` or
        ``resource_id`` is given); ``[]`` does nothing; at most 1,000 ids."""
        self._delete_signal(SCORES, score_ids, "score_ids", organization_id, resource_id)

    @operation
    def delete_feedback(self, *, feedback_ids: list[str], organization_id: str | None = None,
                        resource_id: str | None = None) -> None:
        """Delete the feedback of these ids (tenant scope as :meth:`delete_scores`)."""
        self._delete_signal(FEEDBACK, feedback_ids, "feedback_ids", organization_id, resource_id)

    def _delete_signal(self, kind: SignalKind, ids: Any, argument: str, organization_id: Any,
                       resource_id: Any) -> None:
        problems = Problems()
        ids = _check_ids(problems, argument, ids)
        for name, value in (("organization_id", organization_id), ("resource_id", resource_id)):
            if value is not None and not isinstance(value, str):
                problems.add(name, "Not a valid string.")
        problems.raise_if_any()
        if not ids:
            return
        model = self._signal_model(kind)
        where = getattr(model, kind.id_key).in_(ids)
        if organization_id is not None:
            where &= model.organization_id == organization_id
        if resource_id is not None:
            where &= model.resource_id == resource_id
        self._signal_sql.delete(model, where, f"DELETE_{kind.name.upper()}")

    # ------------------------------------------------------------------ records

    def _signal_record(self, kind: SignalKind, row: dict[str, Any]) -> dict[str, Any]:
        """The record of a stored row (keyed by column): blank texts read as ``None``, JSON
        decoded, unknown entity types ``None`` (§2.1), feedback's ``value`` from its two columns
        (§2.5)."""
        values = self._signal_sql.row_values(self._signal_model(kind), row)
        if kind is FEEDBACK:
            number, text = values.pop("value_number", None), values.pop("value_string", None)
            values["value"] = number if number is not None else text if text is not None else ""
            values["feedback_source"] = values.get("feedback_source") or None  # stored '' when absent
            if values.get("review_status") not in REVIEW_STATUSES:
                values["review_status"] = DEFAULT_REVIEW_STATUS
        for key in ENTITY_TYPE_KEYS:
            if values.get(key) not in ENTITY_TYPES:
                values[key] = None
        values["tags"] = list(values.get("tags") or ())
        return {key: values.get(key) for key in RECORD_KEYS[kind.table]}


def _signal_sql_for(repository: Any) -> Any:
    """The signal SQL object of the repository's backend."""
    name = repository.backend.name
    if name == "CLICKHOUSE":
        from .signals_clickhouse import ClickHouseSignalSQL

        return ClickHouseSignalSQL(repository)
    from .signals_sql import PostgresSignalSQL, SQLiteSignalSQL

    return (PostgresSignalSQL if name == "PG" else SQLiteSignalSQL)(repository)


__all__ = ["FEEDBACK", "LOGS", "METRICS", "SCORES", "SIGNAL_KINDS", "SignalKind", "SignalsMixin",
           "check_signal_filters", "signal_row"]
