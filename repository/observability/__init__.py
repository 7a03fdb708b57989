"""The observability domain: traces and spans of agent runs, tool calls and model calls
(spec: observability.md).  The public names are importable from ``composite_store.observability``."""

from .repository import (CHOICE_FILTERS, DELETE_CHUNK, ENTITY_TYPE_KEYS, FILTER_KEYS, JSON_KEYS, KEY_FIELDS,
                         LIST_ORDER_FIELDS, MESSAGE_RECORDS, NOT_NULL_ON_UPDATE, OPTIONAL_TEXT_KEYS, PREPARED_FILTERS,
                         RANGE_FILTERS, RANGE_KEYS, SPAN_KEYS, STATUSES, STRATEGIES, TEXT_FILTERS, WRITABLE_KEYS,
                         ObservabilityRepository, SpanRows, scalars_first)

__all__ = [
    "CHOICE_FILTERS", "DELETE_CHUNK", "ENTITY_TYPE_KEYS", "FILTER_KEYS", "JSON_KEYS", "KEY_FIELDS", "LIST_ORDER_FIELDS",
    "MESSAGE_RECORDS", "NOT_NULL_ON_UPDATE", "OPTIONAL_TEXT_KEYS", "PREPARED_FILTERS", "RANGE_FILTERS", "RANGE_KEYS",
    "SPAN_KEYS", "STATUSES", "STRATEGIES", "TEXT_FILTERS", "WRITABLE_KEYS", "ObservabilityRepository", "SpanRows",
    "scalars_first",
]
