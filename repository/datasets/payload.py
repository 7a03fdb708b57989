"""Item payloads: the strict JSON-value check (datasets.md §7.1), JSON equality for item identity
(§6), and the JSON text stored in the payload columns (JSON ``null`` versus absent, §2)."""

from __future__ import annotations

import json
import math
import re
from typing import Any, Callable

from ..errors import ValidationError
from ..values import NotStorable, json_dumps, json_loads, storable_json_copy

#: The payload fields of an item, in the order of datasets.md §4.2.
PAYLOAD_FIELDS = ("input", "ground_truth", "expected_trajectory", "tool_mocks", "unmocked_tool_policy",
                  "scorer_ids", "request_context", "metadata", "source")

#: Payload fields whose ``None`` means absent (SQL NULL); for the others ``None`` is JSON ``null``.
NONE_IS_ABSENT = ("unmocked_tool_policy", "scorer_ids")

#: Deepest nesting of lists and dicts an item payload may have.
MAX_DEPTH = 256

_IDENTIFIER = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")


class PayloadError(ValueError):
    """A payload value that is not plain JSON: ``path`` of the bad value and the ``reason``."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason

    def to_validation_error(self) -> ValidationError:
        """The ``PAYLOAD_NOT_SERIALIZABLE`` validation error of §7.1."""
        return ValidationError(f"Dataset item payload must be JSON-serializable: {self.reason}.",
                               fields={self.path: [self.reason]},
                               details={"code": "PAYLOAD_NOT_SERIALIZABLE", "path": self.path,
                                        "reason": self.reason})


def key_path(path: str, key: str) -> str:
    """``item.input`` + ``name`` → ``item.input.name``; a key that is not identifier-like is quoted:
    ``item.input["my key"]``."""
    return f"{path}.{key}" if _IDENTIFIER.match(key) else f"{path}[{json.dumps(key)}]"


def _bad_text(text: str) -> str | None:
    if "\x00" in text:
        return "U+0000"
    if not text.isascii():
        # Only surrogates fail UTF-8 encoding: far faster than looking at every character.
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "an unpaired surrogate"
    return None


def checked_payload(value: Any, path: str | Callable[[], str]) -> Any:
    """A fresh copy of ``value`` if it is plain JSON, else :class:`PayloadError` for the first bad
    value found.  Nothing is converted: tuples, datetimes and the like are refused, so what is
    stored comes back exactly as given.  ``path`` names ``value`` in errors; bulk callers pass a
    function giving it, built only when there is an error."""
    try:
        return storable_json_copy(value, MAX_DEPTH)
    except NotStorable:
        return _check(value, path if isinstance(path, str) else path(), 0, {})  # finds the problem


def _check(value: Any, path: str, depth: int, ancestors: dict[int, str]) -> Any:
    if value is None or value is True or value is False:
        return value
    if isinstance(value, str):
        problem = _bad_text(value)
        if problem:
            raise PayloadError(path, f"string at {path} contains {problem}")
        return str.__str__(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PayloadError(path, f"non-finite number {value!r} at {path}")
        return float(value)
    if type(value) not in (dict, list):
        raise PayloadError(path, f"{type(value).__name__} at {path} is not a JSON value")
    if id(value) in ancestors:
        raise PayloadError(path, f"circular reference at {path} refers back to {ancestors[id(value)]}")
    if depth + 1 > MAX_DEPTH:
        raise PayloadError(path, f"nesting deeper than {MAX_DEPTH} levels at {path}")
    ancestors[id(value)] = path
    try:
        if isinstance(value, list):
            return [_check(item, f"{path}[{index}]", depth + 1, ancestors) for index, item in enumerate(value)]
        copy = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise PayloadError(path, f"dict key {key!r} at {path} is not a string")
            sub = key_path(path, key)
            problem = _bad_text(key)
            if problem:
                raise PayloadError(sub, f"dict key at {sub} contains {problem}")
            copy[str.__str__(key)] = _check(item, sub, depth + 1, ancestors)
        return copy
    finally:
        del ancestors[id(value)]


def json_equal(left: Any, right: Any) -> bool:
    """Equality of JSON values: numbers by value (``1 == 1.0``), booleans distinct from numbers,
    lists by order, dicts by keys."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if left is None or right is None:
        return left is None and right is None
    if isinstance(left, (int, float)) and isinstance(right, (int, float)):
        return left == right
    if isinstance(left, str) or isinstance(right, str):
        return isinstance(left, str) and isinstance(right, str) and left == right
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(json_equal(a, b) for a, b in zip(left, right))
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(json_equal(left[k], right[k]) for k in left)
    return False


# --------------------------------------------------------------------------- stored form

class _Absent:
    """Marks a payload field without a value (SQL NULL)."""

    def __repr__(self) -> str:
        return "ABSENT"


#: An absent payload field: its key is omitted from records.
ABSENT: Any = _Absent()


def encode_payload(field: str, value: Any) -> str | None:
    """The column value of one payload field: JSON text, or ``None`` (SQL NULL) for an absent
    field (and for ``None`` where it means absent)."""
    if value is ABSENT or (value is None and field in NONE_IS_ABSENT):
        return None
    if field == "unmocked_tool_policy":
        return value  # a plain text column
    return json_dumps(value)


def decode_payload(field: str, stored: Any) -> Any:
    """The value of one payload field read from its column, or :data:`ABSENT`."""
    if stored is None:
        return ABSENT
    if field == "unmocked_tool_policy":
        return stored
    value = json_loads(stored)
    if value is None and field in NONE_IS_ABSENT:
        return ABSENT
    return value


def stored_text(field: str, stored: Any) -> str | None:
    """A stored payload column value as it is carried into a new row of the same item: text as it
    is, a SQLite JSONB blob (written by another client) as JSON text, since this library writes
    JSON only as text."""
    if stored is None or isinstance(stored, str):
        return stored
    return encode_payload(field, decode_payload(field, stored))
