"""The quick routes of the bulk paths give exactly what the general routes give.

Several hot paths check and copy their input without marshmallow or without building error paths
(found by the benchmarks, ``python -m benchmarks``), and hand anything unusual to the general
route. Each is compared here with that general route on many generated inputs, valid and not.
"""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta, timezone
from typing import Any

import marshmallow
import pytest

from repository.datasets.payload import PayloadError, _check, checked_payload
from repository.datasets.repository import _ITEM_INPUT_SCHEMA, _fast_item
from repository.memory import _MESSAGE_SCHEMA, _fast_message
from repository.values import normalize_json, parse_iso

SCALARS = [None, True, False, 0, -7, 10**20, 1.5, -0.0, float("nan"), float("inf"), "text", "é", "",
           "bad \ud800 surrogate", "nul \x00 char", datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc),
           date(2025, 1, 2), b"bytes", {1, 2}, object()]
KEYS = ["a", "b", "é", "\udc00k", "nul\x00", 1, None, 2.5]


def json_like(rng: random.Random, depth: int = 0) -> Any:
    """A random value: mostly JSON, sometimes not (bad scalars, odd keys, tuples)."""
    choice = rng.random()
    if depth > 3 or choice < 0.45:
        return rng.choice(SCALARS) if rng.random() < 0.3 else rng.choice(["x", 1, 2.0, True, None, "hello"])
    if choice < 0.75:
        return {rng.choice(KEYS) if rng.random() < 0.2 else rng.choice("abcdef"): json_like(rng, depth + 1)
                for _ in range(rng.randrange(4))}
    items = [json_like(rng, depth + 1) for _ in range(rng.randrange(4))]
    return tuple(items) if rng.random() < 0.2 else items


def outcome(function: Any, *exceptions: type[BaseException]) -> tuple[str, Any]:
    try:
        return "ok", function()
    except exceptions as error:
        return "error", getattr(error, "messages", None) or (getattr(error, "path", None), str(error))


@pytest.mark.parametrize("clean", [True, False])
def test_normalize_json_gives_what_the_full_walk_gives(clean: bool) -> None:
    rng = random.Random(1)
    for _ in range(5000):
        value = json_like(rng)
        quick_errors: dict[str, list[str]] = {}
        full_errors: dict[str, list[str]] = {}
        quick = normalize_json(value, "", quick_errors, clean=clean)
        full = normalize_json(value, "", full_errors, clean=clean, _seen=set())  # the full walk only
        assert quick_errors == full_errors, value
        if not full_errors:
            assert repr(quick) == repr(full), value


def test_normalize_json_reports_a_reference_cycle() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    errors: dict[str, list[str]] = {}
    normalize_json({"a": cycle}, "", errors)
    assert errors == {"a[0]": ["Not JSON-serializable."]}


def test_checked_payload_gives_what_the_full_check_gives() -> None:
    rng = random.Random(2)
    for _ in range(5000):
        value = json_like(rng)
        quick = outcome(lambda: checked_payload(value, "item.input"), PayloadError)
        full = outcome(lambda: _check(value, "item.input", 0, {}), PayloadError)
        assert repr(quick) == repr(full), value


def test_checked_payload_refuses_deep_nesting_and_cycles_with_their_paths() -> None:
    deep: list[Any] = []
    inner = deep
    for _ in range(300):
        inner.append([])
        inner = inner[0]
    with pytest.raises(PayloadError, match="nesting deeper than 256 levels"):
        checked_payload(deep, "item.input")
    cycle: dict[str, Any] = {}
    cycle["self"] = cycle
    with pytest.raises(PayloadError) as error:
        checked_payload(cycle, "item.input")
    assert error.value.path == "item.input.self"


MESSAGE_VALUES = {
    "id": ["m-1", "", 1, None, "id \ud800"],
    "thread_id": ["t-1", "", None],
    "resource_id": ["r-1", "", None, 5],
    "role": ["user", "assistant", "system", "tool", "signal", None, 1],
    "type": [None, "v2", "custom", 3],
    "content": ["plain text", {"format": 2, "parts": []},
                {"format": 2, "parts": [{"type": "text", "text": "x \ud800"}], "metadata": {"k": (1, 2)}},
                {"format": True, "parts": []}, {"format": 2.0, "parts": []}, {"format": 2, "parts": ()},
                {"format": 2}, {"format": 2, "parts": [], 1: 2}, {"format": 2, "parts": [float("nan")]},
                {"format": 2, "parts": [datetime(2020, 1, 1)]}, [], None],
    "created_at": [datetime(2025, 1, 1, 1, 1, 1, 123456),
                   datetime(2025, 1, 1, tzinfo=timezone(timedelta(hours=2))), "2025-01-01T00:00:00Z", None, True],
    "threadId": ["t-1"],
    "extra": [1],
}


def random_record(rng: random.Random, values: dict[str, list[Any]], common: set[str],
                  rare: set[str]) -> dict[str, Any]:
    """Keys in ``common`` are nearly always there, ``rare`` ones seldom, the others often; values are
    mostly the first (valid) option."""
    record = {}
    for key, options in values.items():
        if rng.random() < (0.95 if key in common else 0.03 if key in rare else 0.35):
            record[key] = options[0] if rng.random() < 0.7 else rng.choice(options)
    return record


def test_fast_message_loads_what_the_message_schema_loads() -> None:
    rng = random.Random(3)
    fast = 0
    for _ in range(5000):
        message = random_record(rng, MESSAGE_VALUES, {"id", "thread_id", "resource_id", "role", "content"},
                                {"threadId", "extra"})
        quick = _fast_message(message)
        full = outcome(lambda: _MESSAGE_SCHEMA.load(message), marshmallow.ValidationError)
        if quick is not None:
            fast += 1
            assert full[0] == "ok" and repr(sorted(quick.items())) == repr(sorted(full[1].items())), message
    assert fast > 500  # the quick route does take the common messages


ITEM_VALUES = {
    "input": [{"question": "q"}, None, "text", [1], (1,)],
    "ground_truth": [{"answer": "a"}, None, 3],
    "expected_trajectory": [[{"step": 1}], None],
    "request_context": [{"user": "u"}, None, "x", [1]],
    "metadata": [{"source": "s"}, None, "x"],
    "external_id": ["e-1", "", None, 3],
    "tool_mocks": [[]],
    "scorer_ids": [["s"]],
    "source": [{"type": "csv"}],
    "groundTruth": [1],
}


def test_fast_item_loads_what_the_item_schema_loads() -> None:
    rng = random.Random(4)
    fast = 0
    for _ in range(5000):
        item = random_record(rng, ITEM_VALUES, {"input"}, {"tool_mocks", "scorer_ids", "source", "groundTruth"})
        quick = _fast_item(item)
        full = outcome(lambda: _ITEM_INPUT_SCHEMA.load(item), marshmallow.ValidationError)
        if quick is not None:
            fast += 1
            assert full[0] == "ok" and repr(sorted(quick.items())) == repr(sorted(full[1].items())), item
    assert fast > 500


@pytest.mark.parametrize("text", ["2026-01-31T09:05:01.123Z", "0999-12-31T23:59:59.999Z", "2026-02-30T09:05:01.123Z",
                                  "2026-01-31T09:05:01,123Z", "2026-01-31 09:05:01.123Z", "2026-01-31T09:05:01.123+"])
def test_parse_iso_of_the_stored_form_agrees_with_the_pattern(text: str) -> None:
    from repository import values

    quick = outcome(lambda: parse_iso(text), ValueError)
    pattern = values._ISO_RE.match(text.strip())
    if pattern is None:
        assert quick[0] == "error"
    else:
        assert quick == outcome(lambda: parse_iso(" " + text), ValueError)  # the leading space skips the quick route
