"""Copy the legacy span table into the current layout on ClickHouse (observability-vnext.md §12).

``mastra_ai_spans`` (written by this library's legacy layout, or by the framework) is copied into
``mastra_span_events`` one day at a time, each day by one server-side ``INSERT … SELECT``: no row
passes through Python, on current servers and on 18.16 alike.  The materialized views fill the
roots and branches tables from the inserted rows.

- **Which row of a span.** This library's table is read ``FINAL WHERE _deleted = 0`` (its
  versions and tombstones); a table without ``_deleted`` (the framework's) keeps the latest
  ``updatedAt`` (else ``createdAt``) per span with ``LIMIT 1 BY``.
- **Days.** A span belongs to the UTC day of the ``endedAt`` it gets in the new layout (its start
  for events and running spans), which is also the partition it lands in.
- **Resumable and idempotent.** A day copies only the spans its partition of the target does not
  already hold (``(traceId, spanId) NOT IN`` that partition), so a run stopped anywhere, even in
  the middle of a day's insert, continues where it stopped and never copies a span twice (reads
  deduplicate anyway).  After the last day the marker table ``mastra_legacy_span_migration_done``
  gets a row, and later runs answer "already complete" without reading anything.
- **Count check.** After each day: the legacy spans of the day still missing from the target
  (must be 0), next to the spans of the day on both sides.
- **Mapping** (§12): ``dedupeKey``, ``parentSpanId`` ``''`` → ``NULL``, ``executionSource`` ←
  ``source``, ``metadataRaw`` ← ``metadata``, ``metadataSearch`` and ``tags`` normalised as §2.6
  does on writes, ``endedAt`` of events and running spans their start, absent legacy columns
  ``NULL``, timestamps converted between ``DateTime64`` and epoch milliseconds where the two
  tables differ.  Current servers parse JSON with ``JSONExtract*``; 18.16, which has no JSON
  functions, uses regular expressions over the compact JSON this library writes, unescaping with
  ``visitParamExtractString``: exact for tags, and for metadata members up to the first nested
  object or array (this library writes top-level scalars first, so for its rows: all of them).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import date
from typing import Any, Callable

from ..backends.clickhouse import ClickHouseBackend, escape, timestamp_kind
from ..errors import StorageError
from ..models.observability import TABLE as LEGACY_TABLE
from ..models.observability_vnext import SPAN_COLUMNS, SPAN_EVENTS
from .vnext_clickhouse import SEARCH_KEYS, SEARCH_VALUES

logger = logging.getLogger("composite_store.clickhouse")

#: One row here means the migration finished (the framework's marker table).
DONE_TABLE = "mastra_legacy_span_migration_done"
DETECTED_WARNING = (f"Legacy span table '{LEGACY_TABLE}' detected. Its spans are not read by the current layout: "
                    f"run migrate_spans() (or: composite-store migrate-spans URL) to copy them into {SPAN_EVENTS}.")

# Regular expressions of compact JSON for 18.16 (re2 syntax, as Python text).
_STRING = r'"(?:[^"\\]|\\.)*"'
_MEMBER = _STRING + r':(?:' + _STRING + r'|[^,{}\[\]"]+)'
#: The top-level members of an object before its first nested object or array.
_SCALAR_MEMBERS = r'^\{' + _MEMBER + r'(?:,' + _MEMBER + r')*'
#: Whitespace around a value (Python's ``str.strip`` for ASCII whitespace).
_OUTER_SPACE = r'^\s+|\s+$'


def _unescaped(raw: str) -> str:
    """The text of a JSON string literal (with its quotes) ``raw``, unescaped (18.16 has it)."""
    return f"visitParamExtractString(concat('{{\"v\":', {raw}, '}}'), 'v')"


def _trimmed(value: str) -> str:
    return f"replaceRegexpAll({value}, {escape(_OUTER_SPACE)}, '')"


@dataclass
class DayReport:
    """What one day of the migration found and did."""

    #: ``YYYY-MM-DD`` (UTC).
    day: str
    #: Spans of the day in the legacy table (one per ``(traceId, spanId)``).
    source: int
    #: Spans of the day in ``mastra_span_events`` afterwards (also those written there directly).
    target: int = 0
    #: Spans this run copied.
    copied: int = 0
    #: Legacy spans of the day the target still lacks afterwards (the count check: 0).
    missing: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The report as a plain dict."""
        return {"day": self.day, "source": self.source, "target": self.target, "copied": self.copied,
                "missing": self.missing}


class SpanMigration:
    """The SQL of one migration from ``mastra_ai_spans`` on one ClickHouse backend (whose
    schema is read: call after ``init()`` created the current layout)."""

    def __init__(self, backend: ClickHouseBackend) -> None:
        self.backend = backend
        backend.database.connection().refresh_schema()
        features = backend.server_features
        self.source_columns = features.columns.get(LEGACY_TABLE, {})
        self.target_columns = features.columns[SPAN_EVENTS]
        self.json_functions = features.json_functions

    # ------------------------------------------------------------------ state

    def legacy_present(self) -> bool:
        """Whether the legacy table exists and has a row."""
        return bool(self.source_columns) and bool(self._rows(f'SELECT 1 FROM "{LEGACY_TABLE}" LIMIT 1'))

    def finished(self) -> bool:
        """Whether a migration completed here (the marker table has a row)."""
        return DONE_TABLE in self.backend.server_features.tables and bool(
            self._rows(f'SELECT 1 FROM "{DONE_TABLE}" LIMIT 1'))

    def needs_warning(self) -> bool:
        """Whether ``init()`` should say that legacy spans wait to be copied."""
        return self.legacy_present() and not self.finished()

    def days(self) -> list[tuple[str, int, int]]:
        """``(day, legacy rows, spans)`` per UTC day of the legacy table, oldest first."""
        query = self._select(f'{self._source_day()} AS day, count(), uniqExact("traceId", "spanId")')
        return [(str(day), rows, spans) for day, rows, spans in self._rows(f"{query} GROUP BY day ORDER BY day")]

    def mark_finished(self) -> None:
        """Create the marker table and write its row."""
        current = timestamp_kind(self.target_columns["startedAt"], self.backend.server_features) != "ms"
        column_type, now = ("DateTime64(3, 'UTC')", "now64(3)") if current else \
            ("Int64", "toInt64(toUnixTimestamp(now())) * 1000")
        self._run(f'CREATE TABLE IF NOT EXISTS "{DONE_TABLE}" ("completedAt" {column_type}) ENGINE = MergeTree '
                  'ORDER BY "completedAt"')
        self._run(f'INSERT INTO "{DONE_TABLE}" ("completedAt") SELECT {now}')
        self.backend.database.connection().refresh_schema()

    # ------------------------------------------------------------------ one day

    def copy_day(self, day: str, source: int) -> DayReport:
        """Copy the spans of ``day`` the target lacks; the day's counts afterwards."""
        held = self._target_count(day)
        condition = self._day_condition(day)
        columns = ", ".join(f'"{name}"' for name in self._target_names())
        self._run(f'INSERT INTO "{SPAN_EVENTS}" ({columns}) {self._select(", ".join(self._mapped()), condition)}'
                  f"{self._latest()}")
        target = self._target_count(day)
        missing = self._rows(self._select('uniqExact("traceId", "spanId")', condition))[0][0]
        return DayReport(day=day, source=source, target=target, copied=target - held, missing=missing)

    def _target_count(self, day: str) -> int:
        """Spans of ``day`` in the target (one partition)."""
        return self._rows(f'SELECT uniqExact("dedupeKey") FROM "{SPAN_EVENTS}" WHERE {self._target_day(day)}')[0][0]

    def _day_condition(self, day: str) -> str:
        held = f'SELECT "traceId", "spanId" FROM "{SPAN_EVENTS}" WHERE {self._target_day(day)}'
        return f'{self._source_day()} = {escape(day)} AND ("traceId", "spanId") NOT IN ({held})'

    def _target_day(self, day: str) -> str:
        """The target's rows of ``day``, as its partition key reads them (pruned partitions)."""
        if timestamp_kind(self.target_columns["endedAt"], self.backend.server_features) == "ms":
            return f'intDiv("endedAt", 86400000) = {(date.fromisoformat(day) - date(1970, 1, 1)).days}'
        return f'toDate("endedAt") = {escape(day)}'

    # ------------------------------------------------------------------ the source rows

    def _select(self, what: str, condition: str | None = None) -> str:
        """``SELECT what`` from the legacy table's current rows meeting ``condition``: this
        library's table is read ``FINAL`` without tombstones, as its reads do."""
        versioned = "_deleted" in self.source_columns
        conditions = [text for text in ('"_deleted" = 0' if versioned else None, condition) if text]
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        return f'SELECT {what} FROM "{LEGACY_TABLE}"{" FINAL" if versioned else ""}{where}'

    def _latest(self) -> str:
        """The framework's table keeps versions unmerged: its latest row per span."""
        if "_deleted" in self.source_columns:
            return ""
        updated = 'COALESCE("updatedAt", "createdAt")' if "updatedAt" in self.source_columns else '"createdAt"'
        return f' ORDER BY "traceId", "spanId", {updated} DESC LIMIT 1 BY "traceId", "spanId"'

    def _ended(self) -> str:
        """The source's ``endedAt`` in the new layout: events and running spans end at their start."""
        return 'if("isEvent" = 1, "startedAt", COALESCE("endedAt", "startedAt"))'

    def _source_day(self) -> str:
        """The UTC day of the mapped ``endedAt`` of a source row, as ``Date``."""
        ended = self._ended()
        if timestamp_kind(self.source_columns.get("startedAt"), self.backend.server_features) == "ms":
            return f"toDate(toDateTime(intDiv({ended}, 1000), 'UTC'))"
        return f"toDate(toTimeZone({ended}, 'UTC'))"

    def _timestamp(self, expression: str) -> str:
        """A source timestamp expression in the target's stored form."""
        features = self.backend.server_features
        source = timestamp_kind(self.source_columns.get("startedAt"), features)
        target = timestamp_kind(self.target_columns["startedAt"], features)
        if source == target:
            return expression
        if target == "ms":
            return f"toUnixTimestamp64Milli(toDateTime64({expression}, 3))"
        if source == "ms":
            return f"fromUnixTimestamp64Milli(toInt64({expression}), 'UTC')"
        return expression

    def _target_names(self) -> list[str]:
        names = []
        for column, _, _ in SPAN_COLUMNS:
            names.extend((SEARCH_KEYS, SEARCH_VALUES) if column == "metadataSearch" and self._nested() else (column,))
        return names

    def _nested(self) -> bool:
        return SEARCH_KEYS in self.target_columns

    def _mapped(self) -> list[str]:
        """The select list: one expression per target column, in :meth:`_target_names` order."""
        expressions = []
        for column, _, _ in SPAN_COLUMNS:
            if column == "dedupeKey":
                expressions.append("concat(\"traceId\", ':', \"spanId\")")
            elif column == "startedAt":
                expressions.append(self._timestamp('"startedAt"'))
            elif column == "endedAt":
                expressions.append(self._timestamp(self._ended()))
            elif column == "isEvent":
                expressions.append('toUInt8("isEvent")')
            elif column == "tags":
                expressions.append(self._tags())
            elif column == "metadataSearch":
                expressions.extend(self._metadata_search())
            else:
                expressions.append(self._text(column, {"executionSource": "source",
                                                       "metadataRaw": "metadata"}.get(column, column)))
        return expressions

    def _text(self, target: str, source: str) -> str:
        """A text column copied by name; absent → ``NULL``; ``''`` and the ``_null_`` placeholder
        other clients write → ``NULL`` where the target takes it (else ``''``)."""
        nullable = "Nullable" in self.target_columns[target]
        if source not in self.source_columns:
            return "NULL" if nullable else "''"
        if nullable:
            blank = "nullIf(nullIf({}, ''), '_null_')" if target == "parentSpanId" else "nullIf({}, '_null_')"
            return blank.format(f'"{source}"')
        return f'ifNull("{source}", \'\')' if "Nullable" in self.source_columns[source] else f'"{source}"'

    def _tags(self) -> str:
        """The tags as §2.6 writes them: stripped, without empty and repeated ones."""
        source_type = self.source_columns.get("tags")
        if source_type is None:
            return "emptyArrayString()"
        if "Array" in source_type:
            raw = '"tags"'
        elif self.json_functions:
            raw = "JSONExtract(COALESCE(\"tags\", '[]'), 'Array(String)')"
        else:
            raw = f"arrayMap(x -> {_unescaped('x')}, extractAll(COALESCE(\"tags\", ''), {escape(_STRING)}))"
        return f"arrayDistinct(arrayFilter(x -> x != '', arrayMap(x -> {_trimmed('x')}, {raw})))"

    def _metadata_search(self) -> list[str]:
        """``metadataSearch`` (§2.6): top-level string members, stripped, non-empty, outside the
        promoted keys, sorted by key; a ``Map`` or (18.16) its keys and values arrays."""
        if "metadata" not in self.source_columns:
            return ["emptyArrayString()", "emptyArrayString()"] if self._nested() else ["map()"]
        metadata = "COALESCE(\"metadata\", '{}')"
        if self.json_functions:
            pairs = f"JSONExtractKeysAndValues({metadata}, 'String')"
        else:
            members = (f"extractAll(extract({metadata}, {escape(_SCALAR_MEMBERS)}), "
                       f"{escape('[{,](' + _MEMBER + ')')})")
            key = f"extract(m, {escape('^(' + _STRING + '):')})"
            value = f"extract(m, {escape('^' + _STRING + ':(' + _STRING + ')$')})"
            pairs = (f"arrayMap(m -> ({_unescaped(key)}, {_unescaped(value)}), "
                     f"arrayFilter(m -> match(m, {escape('^' + _STRING + ':' + chr(34))}), {members}))")
        from .vnext import PROMOTED_KEYS  # (vnext imports this module)

        promoted = ", ".join(escape(key) for key in sorted(PROMOTED_KEYS))
        kept = (f"arraySort(p -> p.1, arrayFilter(p -> p.1 NOT IN ({promoted}) AND p.2 != '', "
                f"arrayMap(p -> (p.1, {_trimmed('p.2')}), {pairs})))")
        if self._nested():
            return [f"arrayMap(p -> p.1, {kept})", f"arrayMap(p -> p.2, {kept})"]
        return [f"CAST({kept}, 'Map(String, String)')"]

    # ------------------------------------------------------------------ plumbing

    def _rows(self, sql: str) -> list[tuple]:
        return self.backend.database.execute_sql(sql).fetchall()

    def _run(self, sql: str) -> None:
        self.backend.database.execute_sql(sql)


def migrate(backend: ClickHouseBackend, *, max_days: int | None = None, stop: threading.Event | None = None,
            progress: Callable[[int, int, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run (or continue) the migration; the result of ``migrate_spans()`` (see the module)."""
    migration = SpanMigration(backend)
    result = {"success": True, "already_migrated": True, "duplicates_removed": 0, "done": True, "days": []}
    if migration.finished():
        return {**result, "message": "Migration already complete."}
    if not migration.legacy_present():
        return {**result, "message": f"Nothing to migrate: {LEGACY_TABLE} is absent or empty."}
    days = migration.days()
    reports = []
    for position, (day, _, spans) in enumerate(days, 1):
        if (stop is not None and stop.is_set()) or (max_days is not None and len(reports) >= max_days):
            break
        report = migration.copy_day(day, spans).as_dict()
        reports.append(report)
        if progress is not None:
            progress(position, len(days), report)
    result = {**result, "already_migrated": False, "days": reports}
    wrong = [report for report in reports if report["missing"]]
    if wrong:
        raise StorageError(f"The count check failed: {sum(r['missing'] for r in wrong)} legacy spans of "
                           f"{len(wrong)} days are missing from {SPAN_EVENTS}; run migrate_spans() again.",
                           details={"code": "MIGRATION_COUNT_MISMATCH", "days": wrong})
    if len(reports) < len(days):
        return {**result, "done": False, "message": f"Migration paused after {len(reports)} of {len(days)} days; "
                                                    "run migrate_spans() again to continue."}
    migration.mark_finished()
    return {**result, "message": f"Migration complete. Migrated {sum(rows for _, rows, _ in days)} legacy spans "
                                 f"in {len(days)} batches."}


def status(backend: ClickHouseBackend) -> dict[str, Any]:
    """``check_spans_migration_status()`` of the current layout."""
    migration = SpanMigration(backend)
    finished = migration.finished()
    days = [] if finished or not migration.source_columns else migration.days()
    return {"needs_migration": not finished and bool(days), "already_migrated": finished,
            "table_name": LEGACY_TABLE, "legacy_rows": sum(rows for _, rows, _ in days),
            "legacy_spans": sum(spans for _, _, spans in days), "days": len(days)}
