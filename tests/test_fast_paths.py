"""The quick routes of the bulk paths give exactly what the general routes give.

Several hot paths check and copy their input without marshmallow or without building error paths
(found by the benchmarks, ``python -m benchmarks``), and hand anything unusual to the general
route. Each is compared here with that general route on many generated inputs, valid and not.
"""

from __future__ import annotations

import functools
import random
import types
import uuid
from datetime import date, datetime, timedelta, timezone
from typing import Any

import marshmallow
import pytest

from composite_store.datasets.payload import PayloadError, _check, checked_payload
from composite_store.datasets.repository import _ITEM_INPUT_SCHEMA, _fast_item
from composite_store.backends.base import Backend, BackendFeatures
from composite_store.memory import _MESSAGE_SCHEMA, _fast_message
from composite_store.validation import Problems
from composite_store.schemas.base import JSONObject, JSONValue
from composite_store.values import JSONText, json_dumps, normalize_json, parse_iso, random_id
from composite_store.workflows import fast_run_row, schema_run_row

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


RUN_KEYS = ["wf", "run-1", "é", "", "bad \ud800", "nul \x00", 1, None]


@pytest.mark.parametrize("strip_nul", [False, True])
def test_fast_run_row_gives_what_the_run_schema_gives(strip_nul: bool) -> None:
    rng = random.Random(5)
    clean = functools.partial(Backend.clean, types.SimpleNamespace(features=BackendFeatures(strips_nul=strip_nul)))
    fast = 0
    for _ in range(5000):
        snapshot = {rng.choice("abc"): json_like(rng) for _ in range(rng.randrange(4))} \
            if rng.random() < 0.9 else json_like(rng)
        names = {key: RUN_KEYS[0] if rng.random() < 0.8 else rng.choice(RUN_KEYS)
                 for key in ("workflow_name", "run_id", "resource_id")}
        quick = fast_run_row(**names, snapshot=snapshot, strip_nul=strip_nul)
        problems = Problems()
        full = schema_run_row(problems, clean, **names, snapshot=snapshot)
        if quick is not None:
            fast += 1
            assert not problems and full is not None, (names, snapshot)
            assert type(quick["snapshot"]) is JSONText and str(quick["snapshot"]) == json_dumps(full["snapshot"])
            assert {**quick, "snapshot": None} == {**full, "snapshot": None}, (names, snapshot)
    assert fast > 500  # the quick route does take the common calls


@pytest.mark.parametrize("text", ["2026-01-31T09:05:01.123Z", "0999-12-31T23:59:59.999Z", "2026-02-30T09:05:01.123Z",
                                  "2026-01-31T09:05:01,123Z", "2026-01-31 09:05:01.123Z", "2026-01-31T09:05:01.123+"])
def test_parse_iso_of_the_stored_form_agrees_with_the_pattern(text: str) -> None:
    from composite_store import values

    quick = outcome(lambda: parse_iso(text), ValueError)
    pattern = values._ISO_RE.match(text.strip())
    if pattern is None:
        assert quick[0] == "error"
    else:
        assert quick == outcome(lambda: parse_iso(" " + text), ValueError)  # the leading space skips the quick route


def _result_submission(rng: random.Random) -> dict[str, Any]:
    """An add_experiment_result submission (snake_case): mostly valid, sometimes not."""
    def maybe(value: Any, odd: list[Any]) -> Any:
        return rng.choice(odd) if rng.random() < 0.15 else value

    stamp = datetime(2025, 3, 1, 9, 0, 0, 123456, tzinfo=timezone.utc)
    submission: dict[str, Any] = {
        "experiment_id": maybe("exp-1", ["", None, 5, "nul\x00"]),
        "item_id": maybe("item-1", ["", None, b"x", "\ud800"]),
        "input": json_like(rng),
        "started_at": maybe(stamp, ["2025-03-01T09:00:00Z", "yesterday", None, stamp.replace(tzinfo=None)]),
        "completed_at": maybe(stamp + timedelta(seconds=1), [stamp.date(), True]),
    }
    optional = {
        "id": maybe("r-1", ["", 3, "é"]),
        "item_dataset_version": maybe(3, [None, -1, True, 2.0]),
        "output": json_like(rng), "ground_truth": json_like(rng),
        "metadata": maybe({"k": json_like(rng)}, [None, [], "x", {1: 2}]),
        "tool_mock_report": maybe(None, [{"a": json_like(rng)}, 3]),
        "error": maybe({"message": "boom", "code": "E1"}, [None, {"message": 1}, {"code": "x"}, {"message": "m",
                                                                                                 "stack": None}]),
        "retry_count": maybe(0, [1, -1, None, False]), "attempt": maybe(2, [0, -3, 1.0]),
        "trace_id": maybe("trace-1", [None, 7, "bad \x00"]),
        "status": maybe(None, ["reviewed", "bogus", 1]),
        "tags": maybe(["a", "b"], [None, ("a",), ["a", 1], ["\udc00"]]),
        "organization_id": maybe("org", [None, 1]), "project_id": maybe(None, ["p", []]),
    }
    for key, value in optional.items():
        if rng.random() < 0.6:
            submission[key] = value
    if rng.random() < 0.05:
        submission["unknown"] = 1
    return submission


def test_fast_result_load_gives_what_the_schema_gives() -> None:
    from composite_store.experiments import _RESULT_SCHEMA, _load, fast_load_result
    from composite_store.validation import Problems

    rng = random.Random(4)
    quick_count = 0
    for _ in range(5000):
        submission = _result_submission(rng)
        quick = fast_load_result(dict(submission))
        problems = Problems()
        full = _load(problems, _RESULT_SCHEMA, dict(submission))
        if quick is not None:
            quick_count += 1
            assert not problems, submission
            # Same keys and values (key order is not used: the columns are picked by name).
            assert {k: repr(v) for k, v in quick.items()} == {k: repr(v) for k, v in full.items()}, submission
    assert quick_count > 200  # the common valid submission takes the quick route


def test_fast_result_load_takes_the_benchmark_submission() -> None:
    from composite_store.experiments import fast_load_result

    submission = {"experiment_id": "e", "item_id": "i", "item_dataset_version": 3, "input": {"q": "é"},
                  "output": {"text": "x", "calls": [{"n": 1, "f": 0.5}]}, "ground_truth": None,
                  "metadata": {"latencyMs": 900}, "started_at": datetime(2025, 1, 1, tzinfo=timezone.utc),
                  "completed_at": datetime(2025, 1, 1, 0, 0, 1, tzinfo=timezone.utc), "retry_count": 0,
                  "attempt": 0, "trace_id": "t", "status": None, "tags": None, "error": None,
                  "tool_mock_report": None}
    loaded = fast_load_result(submission)
    assert loaded is not None and loaded["output"] == submission["output"]
    assert loaded["output"] is not submission["output"]  # a copy: the caller's value is not stored


@pytest.mark.parametrize("field", [JSONValue(), JSONValue(allow_none=True), JSONObject(), JSONObject(allow_none=True)],
                         ids=["value", "value-or-none", "object", "object-or-none"])
def test_json_field_load_gives_what_deserialize_gives(field: JSONValue) -> None:
    rng = random.Random(7)
    for _ in range(5000):
        value = json_like(rng) if rng.random() < 0.7 else {rng.choice("abc"): json_like(rng) for _ in range(3)}
        quick = outcome(lambda: field.load(value), marshmallow.ValidationError)
        full = outcome(lambda: field.deserialize(value), marshmallow.ValidationError)
        assert repr(quick) == repr(full), value
        if quick[0] == "ok" and isinstance(value, (dict, list)):
            assert quick[1] is not value  # a copy: the caller's value is not stored


def test_random_id_is_a_version_4_uuid() -> None:
    ids = [random_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122
