"""Record conversion of the observability domain: input spans to stored rows, rows to records.

Spans arrive in bulk from tracing exporters, so :class:`SpanRows` has a fast path: each record is
checked by hand for the common valid case and only a record that fails those checks goes through
the marshmallow :class:`~composite_store.schemas.SpanSchema`, which then builds the exact error
report (or accepts an unusual but valid record).  Both paths store exactly the same row.
"""

from __future__ import annotations

import itertools
import json
import re
from operator import itemgetter
from typing import Any, Iterable, Iterator, Sequence

import marshmallow

from ..errors import ValidationError
from ..schemas.base import flatten_errors
from ..schemas.observability import ENTITY_TYPES, IGNORED_KEYS, SPAN_TYPES, SpanSchema
from ..validation import Problems, join_path
from ..values import JSONText, is_storable_text, json_dumps, to_utc

#: The keys of a returned span, in the spec's order (observability.md §2.2).
SPAN_KEYS = (
    "trace_id", "span_id", "parent_span_id", "name", "span_type", "is_event", "started_at", "ended_at",
    "entity_type", "entity_id", "entity_name", "parent_entity_type", "parent_entity_id", "parent_entity_name",
    "root_entity_type", "root_entity_id", "root_entity_name", "user_id", "organization_id", "resource_id",
    "run_id", "session_id", "thread_id", "request_id", "environment", "service_name", "scope",
    "entity_version_id", "parent_entity_version_id", "root_entity_version_id", "experiment_id", "source",
    "metadata", "tags", "attributes", "links", "input", "output", "error", "request_context",
    "created_at", "updated_at",
)

#: Fields a caller writes (every key but the two storage timestamps).
WRITABLE_KEYS = SPAN_KEYS[:-2]
JSON_KEYS = ("scope", "metadata", "tags", "attributes", "links", "input", "output", "error", "request_context")
ENTITY_TYPE_KEYS = ("entity_type", "parent_entity_type", "root_entity_type")
#: Optional text fields (``parent_span_id`` and the entity types included).
OPTIONAL_TEXT_KEYS = tuple(key for key in WRITABLE_KEYS if key not in JSON_KEYS and key not in (
    "trace_id", "span_id", "name", "span_type", "is_event", "started_at", "ended_at"))
#: Keys ``update_span`` rejects with "Cannot be updated."
KEY_FIELDS = ("trace_id", "span_id")
NOT_NULL_ON_UPDATE = ("name", "span_type", "started_at", "is_event")

#: How many invalid records a batch error message names.
MESSAGE_RECORDS = 10


# --------------------------------------------------------------------------- the fast path

_STR = frozenset({str})
_TEXT_TYPES = frozenset({str, type(None)})
_SCALAR_TYPES = frozenset({str, int, float, bool})
_FLAT_TYPES = frozenset({str, int, float, bool, type(None)})
_SPAN_TYPE_SET = frozenset(SPAN_TYPES)
_ENTITY_TYPES_OR_NONE = frozenset({*ENTITY_TYPES, None})
_SPAN_SCHEMA = SpanSchema()
_REQUIRED = frozenset({"trace_id", "span_id", "name", "span_type", "started_at"})
#: Wire keys an input span may carry that are not stored (the storage timestamps among them).
IGNORED_WIRE_KEYS = frozenset({*IGNORED_KEYS, "createdAt", "updatedAt"})
_SNAKE_KEYS = frozenset({*WRITABLE_KEYS, *IGNORED_KEYS})
#: The snake_case field of each wire (camelCase) key of a span.
CAMEL_TO_SNAKE = {field.data_key or name: name for name, field in SpanSchema().load_fields.items()}
_CAMEL_KEYS = frozenset({*CAMEL_TO_SNAKE, *IGNORED_WIRE_KEYS})
_EMPTY_ROW = {**dict.fromkeys(WRITABLE_KEYS), "is_event": False}
_OBJECT_KEYS = frozenset({"scope", "metadata", "attributes", "error", "request_context"})
_ARRAY_KEYS = frozenset({"tags", "links"})
_SCALARS_FIRST_KEYS = ("metadata", "scope")
_texts_of = itemgetter(*OPTIONAL_TEXT_KEYS)
_entity_types_of = itemgetter(*ENTITY_TYPE_KEYS)


def _str_keys(value: Any) -> bool:
    """Whether every dict inside a JSON-encodable value has only ``str`` keys."""
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            return False
        members = value.values()
    elif isinstance(value, (list, tuple)):
        members = value
    else:
        return True
    return all(_str_keys(member) for member in members if isinstance(member, (dict, list, tuple)))


#: In compact JSON a key follows "{" or "," and precedes ":"; json writes int, float, bool and
#: None keys as such strings, so text without one needs no look at the keys themselves.
_CONVERTED_KEY = re.compile(r'[{,]"(?:-?[0-9][0-9.eE+-]*|true|false|null)":')


def scalars_first(value: Any) -> Any:
    """A JSON object with its top-level scalar members before the nested ones (ClickHouse's
    ``visitParam*`` functions take the first occurrence of a key at any depth, §4.3.4)."""
    if not isinstance(value, dict) or _FLAT_TYPES.issuperset(map(type, value.values())):
        return value
    nested = [key for key, member in value.items() if isinstance(member, (dict, list, tuple))]
    ordered = {key: member for key, member in value.items() if key not in nested}
    ordered.update((key, value[key]) for key in nested)
    return ordered


class SpanRows:
    """Turns input spans into rows ready to store, for one backend.

    A row maps every writable field to its value: strings cleaned for the database, timestamps
    as aware UTC datetimes, JSON as :class:`~repository.values.JSONText`.  :meth:`fast` handles
    the common valid record with plain type checks and returns ``None`` for anything else
    (invalid input, wire-form oddities, values that need cleaning); :meth:`from_loaded` builds the
    row from the schema's output, so both paths store exactly the same thing.
    """

    def __init__(self, *, strip_nul: bool, scalars_first: bool, clean: Any) -> None:
        self.strip_nul = strip_nul
        self.scalars_first = scalars_first
        self.clean = clean

    def fast(self, record: Any) -> dict[str, Any] | None:
        """The row of a common valid record, or ``None`` to let the schema decide."""
        if type(record) is not dict:
            return None
        keys = record.keys()
        if not keys <= _SNAKE_KEYS:
            if not keys <= _CAMEL_KEYS:
                return None
            record = {CAMEL_TO_SNAKE[key]: value for key, value in record.items() if key not in IGNORED_WIRE_KEYS}
            keys = record.keys()
        if not _REQUIRED <= keys:
            return None
        row = {**_EMPTY_ROW, **record}
        if not keys.isdisjoint(IGNORED_KEYS):
            for key in IGNORED_KEYS:
                row.pop(key, None)
        trace_id, span_id, name, span_type = row["trace_id"], row["span_id"], row["name"], row["span_type"]
        if type(trace_id) is not str or type(span_id) is not str or type(name) is not str or not trace_id \
                or not span_id or type(span_type) is not str or span_type not in _SPAN_TYPE_SET \
                or type(row["is_event"]) is not bool:
            return None
        texts = _texts_of(row)
        if not _TEXT_TYPES.issuperset(map(type, texts)) or not _ENTITY_TYPES_OR_NONE.issuperset(_entity_types_of(row)):
            return None
        parent = row["parent_span_id"]
        if parent == "":
            row["parent_span_id"] = None
        elif parent == span_id:
            return None
        if not is_storable_text("".join(filter(None, texts)) + trace_id + span_id + name, self.strip_nul):
            return None
        try:
            started = row["started_at"] = to_utc(row["started_at"])
            if row["ended_at"] is not None:
                row["ended_at"] = to_utc(row["ended_at"])
        except (TypeError, ValueError, OverflowError):
            return None
        if row["is_event"] and row["ended_at"] is None:
            row["ended_at"] = started
        for key in JSON_KEYS:
            value = row[key]
            if value is not None:
                text = self._fast_json(key, value)
                if text is None:
                    return None
                row[key] = text
        return row

    def _fast_json(self, key: str, value: Any) -> JSONText | None:
        kind = type(value)
        if kind is dict:
            if key in _ARRAY_KEYS:
                return None
            if self.scalars_first and key in _SCALARS_FIRST_KEYS:
                value = scalars_first(value)
        elif kind is list or kind is tuple:
            if key in _OBJECT_KEYS or (key == "tags" and not _STR.issuperset(map(type, value))):
                return None
        elif key in _OBJECT_KEYS or key in _ARRAY_KEYS or kind not in _SCALAR_TYPES:
            return None
        try:
            # The C encoder rejects every non-JSON type, NaN, infinity and cycles by itself.
            text = json_dumps(value)
        except (TypeError, ValueError, RecursionError):
            return None
        if _CONVERTED_KEY.search(text) and not _str_keys(value):
            return None
        if not is_storable_text(text, False) or (self.strip_nul and "\\u0000" in text):
            return None
        return JSONText(text)

    def from_loaded(self, loaded: dict[str, Any]) -> dict[str, Any]:
        """The row of a record the schema accepted."""
        row = {**_EMPTY_ROW, **loaded}
        for key in OPTIONAL_TEXT_KEYS + ("trace_id", "span_id", "name"):
            if row[key] is not None:
                row[key] = self.clean(row[key])
        for key in JSON_KEYS:
            if row[key] is not None:
                row[key] = self.json(key, row[key])
        return row

    def row(self, problems: Problems, record: Any, prefix: str) -> dict[str, Any] | None:
        """The stored row of one input span, or ``None`` after recording its problems."""
        row = self.fast(record)
        return row if row is not None else self.checked(problems, record, prefix)

    def checked(self, problems: Problems, record: Any, prefix: str) -> dict[str, Any] | None:
        """The schema's verdict on a span the fast path did not accept."""
        if not isinstance(record, dict):
            problems.add(prefix, "Not a valid mapping type.")
            return None
        try:
            loaded = _SPAN_SCHEMA.load(record)
        except marshmallow.ValidationError as error:
            problems.merge(flatten_errors(error.messages), prefix)
            return None
        return self.from_loaded(loaded)

    def batch(self, records: Any) -> list[dict[str, Any]]:
        """Rows of every record of a batch; one error for all invalid records (§3.3)."""
        if not isinstance(records, (list, tuple)):
            raise ValidationError(fields={"records": ["records must be a list of spans"]})
        rows, errors = [], {}
        fast = self.fast
        for index, record in enumerate(records):
            row = fast(record)
            if row is None:
                problems = Problems()
                row = self.checked(problems, record, "")
                if problems:
                    errors[index] = problems.fields
            rows.append(row)
        if errors:
            raise batch_error(records, errors)
        return rows

    def json(self, key: str, value: Any) -> JSONText | None:
        """A validated JSON value as stored text."""
        if value is None:
            return None
        value = self.clean(value)
        if self.scalars_first and key in _SCALARS_FIRST_KEYS:
            value = scalars_first(value)
        return JSONText(json_dumps(value))



def span_record(row: dict[str, Any], *, blank_is_null: bool) -> dict[str, Any]:
    """The record of a stored row: the spec's keys in order; with ``blank_is_null`` (tables
    other clients write ``""`` into) a blank parent or error reads as ``None``."""
    return _record(row, SPAN_KEYS, blank_is_null)


def _record(row: dict[str, Any], keys: Sequence[str], blank_is_null: bool) -> dict[str, Any]:
    """The ``keys`` of a stored row as a record (see :func:`span_record`)."""
    record = {key: row.get(key) for key in keys}
    record["is_event"] = bool(record["is_event"])
    if blank_is_null:
        for key in ("parent_span_id", "error"):
            if record[key] == "":
                record[key] = None
    return record


def trace_status(record: dict[str, Any]) -> str:
    """A root span's trace status (§3.8): ``error``, ``running`` or ``success``."""
    if record["error"] is not None:
        return "error"
    return "running" if record["ended_at"] is None else "success"


def batch_error(records: Sequence[Any], errors: dict[int, dict[str, list[str]]]) -> ValidationError:
    """The validation error of a batch with invalid records (§3.3)."""
    fields: dict[str, list[str]] = {}
    invalid, parts = [], []
    for index, messages in errors.items():
        record = records[index]
        ids = {key: _given_id(record, key) for key in ("trace_id", "span_id")}
        invalid.append({"index": index, **ids})
        for path, texts in messages.items():
            fields[join_path(f"records[{index}]", path)] = texts
        if len(parts) < MESSAGE_RECORDS:
            described = ", ".join(f"{path or 'record'}: {' '.join(texts)}" for path, texts in messages.items())
            parts.append(f"records[{index}] (trace_id={ids['trace_id']!r}, span_id={ids['span_id']!r}): {described}")
    more = f"; … {len(errors) - MESSAGE_RECORDS} more" if len(errors) > MESSAGE_RECORDS else ""
    message = f"{len(errors)} of {len(records)} spans are invalid: " + "; ".join(parts) + more
    return ValidationError(message, fields=fields,
                           details={"errors": {index: dict(messages) for index, messages in errors.items()},
                                    "invalid": invalid})


def _given_id(record: Any, key: str) -> Any:
    """An id as the caller gave it (snake_case or wire key), ``None`` when missing."""
    if not isinstance(record, dict):
        return None
    camel = "traceId" if key == "trace_id" else "spanId"
    return record.get(key, record.get(camel))


# --------------------------------------------------------------------------- light records (fidelity-1.71 §2)

#: The keys of a light span (``get_structure``), in the spec's order: no payloads but ``error``.
LIGHT_SPAN_KEYS = ("trace_id", "span_id", "parent_span_id", "name", "span_type", "is_event", "started_at",
                   "ended_at", "error", "entity_type", "entity_id", "entity_name", "created_at", "updated_at")
#: The keys of a light list row (``list_traces_light``).
LIGHT_LIST_KEYS = (*LIGHT_SPAN_KEYS, "status", "metadata", "input_preview")
#: Span types that anchor a branch (``list_branches``), Mastra's ``BRANCH_SPAN_TYPES``.
BRANCH_SPAN_TYPES = ("agent_run", "workflow_run", "processor_run", "scorer_run", "rag_ingestion", "tool_call",
                     "mcp_tool_call", "mcp_server_request", "provider_tool_call")
#: Characters of an ``input_preview`` before it is cut (with "…").
PREVIEW_CHARS = 100


def light_record(row: dict[str, Any], *, blank_is_null: bool) -> dict[str, Any]:
    """The light span of a row that holds (at least) the :data:`LIGHT_SPAN_KEYS` columns."""
    return _record(row, LIGHT_SPAN_KEYS, blank_is_null)


def light_list_record(row: dict[str, Any], *, blank_is_null: bool) -> dict[str, Any]:
    """The light list row of a root's row: the light span plus ``status``, ``metadata`` and the
    ``input_preview`` of its ``input``."""
    record = light_record(row, blank_is_null=blank_is_null)
    record["status"] = trace_status(record)
    record["metadata"] = row["metadata"]
    record["input_preview"] = input_preview(row["input"])
    return record


def input_preview(value: Any) -> str | None:
    """What a trace list shows of a root's input (observability-vnext.md §2.1, Mastra's
    ``buildInputPreview``): the user messages' texts, else the text or compact JSON, cut at
    :data:`PREVIEW_CHARS` characters."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if text[0] in "{[\"":
            try:
                value = json.loads(text)
            except ValueError:
                if text[0] != '"':
                    return None
                value = text
    messages = value if isinstance(value, list) else \
        value.get("messages") if isinstance(value, dict) and isinstance(value.get("messages"), list) else None
    if messages is not None:
        preview = " | ".join(text for text in (_user_text(message) for message in messages) if text)
    else:
        preview = value if isinstance(value, str) else json_dumps(value)
    if not preview:
        return None
    return preview[:PREVIEW_CHARS] + "…" if len(preview) > PREVIEW_CHARS else preview


def _user_text(message: Any) -> str:
    """The text of a user message (its string content, or its string and text parts)."""
    if not isinstance(message, dict) or message.get("role") != "user":
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [part if isinstance(part, str) else part.get("text") if isinstance(part, dict)
                 and part.get("type") == "text" and isinstance(part.get("text"), str) else None for part in content]
        return " ".join(part for part in parts if part)
    return ""


def branch_span_ids(structure: Sequence[dict[str, Any]], span_id: str, depth: int | None) -> list[str] | None:
    """The anchor ``span_id`` and its descendants down to ``depth`` levels in the light spans of a
    trace (breadth first; a visited set cuts a parent cycle), or ``None`` when the anchor is not
    among them."""
    if not any(light["span_id"] == span_id for light in structure):
        return None
    children: dict[str, list[str]] = {}
    for light in structure:
        if light["parent_span_id"] is not None:
            children.setdefault(light["parent_span_id"], []).append(light["span_id"])
    chosen, level, visited = [span_id], [span_id], {span_id}
    remaining = depth
    while level and (remaining is None or remaining > 0):
        level = [kid for parent in level for kid in children.get(parent, ()) if kid not in visited]
        visited.update(level)
        chosen.extend(level)
        remaining = None if remaining is None else remaining - 1
    return chosen


def anchor_first(spans: list[dict[str, Any]], span_id: str) -> list[dict[str, Any]]:
    """A branch's spans with its anchor first, the others in their order."""
    return [span for span in spans if span["span_id"] == span_id] + [span for span in spans
                                                                      if span["span_id"] != span_id]


def traces_of(spans: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """``{"trace_id", "spans"}`` per trace of ``spans`` (span records in trace id order), each
    trace's spans by ``started_at`` then ``span_id`` as ``get_trace`` gives them; one trace at a
    time is held (``iter_traces``)."""
    for trace_id, group in itertools.groupby(spans, key=itemgetter("trace_id")):
        yield {"trace_id": trace_id, "spans": sorted(group, key=itemgetter("started_at", "span_id"))}
