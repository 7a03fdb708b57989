"""The observability domain: traces and spans of agent runs, tool calls and model calls
(spec: observability.md).

The package's modules, each along one seam:

* :mod:`.repository`: :class:`ObservabilityRepository`, the public operations;
* :mod:`.records`: record conversion (input spans to stored rows and the fast path of bulk
  ingest; stored rows to records);
* :mod:`.filters`: the ``list_traces`` filters and their checks;
* :mod:`.legacy_sql`: the SQL of the legacy table (``mastra_ai_spans``) per database and the
  tracing strategies it supports;
* :mod:`.vnext`: :class:`VNextObservabilityRepository`, the current ("vNext") layout's tracing
  operations (insert-only, read-time dedupe; spec observability-vnext.md);
* :mod:`.vnext_clickhouse`: that layout's ClickHouse tables, views and read SQL.
* :mod:`.analytics` and :mod:`.discovery`: that layout's aggregates, breakdowns, time series and
  percentiles over metrics, scores and feedback, and what exists (entity types, metric names…).

A further table layout or signal adds a module beside these; the names below are the
package's public ones, importable from ``composite_store.observability``.
"""

from .filters import (CHOICE_FILTERS, FILTER_KEYS, LIST_ORDER_FIELDS, PREPARED_FILTERS, RANGE_FILTERS, RANGE_KEYS,
                      STATUSES, TEXT_FILTERS)
from .legacy_sql import STRATEGIES
from .records import (ENTITY_TYPE_KEYS, JSON_KEYS, KEY_FIELDS, MESSAGE_RECORDS, NOT_NULL_ON_UPDATE, OPTIONAL_TEXT_KEYS,
                      SPAN_KEYS, WRITABLE_KEYS, SpanRows, scalars_first)
from .repository import ObservabilityRepository
from .vnext import VNextObservabilityRepository

__all__ = [
    "CHOICE_FILTERS", "ENTITY_TYPE_KEYS", "FILTER_KEYS", "JSON_KEYS", "KEY_FIELDS",
    "LIST_ORDER_FIELDS",
    "MESSAGE_RECORDS", "NOT_NULL_ON_UPDATE", "OPTIONAL_TEXT_KEYS", "PREPARED_FILTERS", "RANGE_FILTERS", "RANGE_KEYS",
    "SPAN_KEYS", "STATUSES", "STRATEGIES", "TEXT_FILTERS", "WRITABLE_KEYS", "ObservabilityRepository", "SpanRows",
    "VNextObservabilityRepository", "scalars_first",
]
