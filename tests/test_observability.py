"""Observability domain conformance suite (observability.md §5), run on every backend.

Each test runs on every default backend of the matrix in ``tests/conftest.py`` unless its
markers narrow that: SQLite, PostgreSQL and ClickHouse twice — the session's server (Debian's 18.16
here) and a current one (``DateTime64``, ``Bool``, JSON functions, TTL: the server of
``COMPOSITE_STORE_CLICKHOUSE_CURRENT_URL``, else the engine in-process).  Scenario numbers from observability.md §5 are given in the test docstrings.
"""

from __future__ import annotations

import itertools
import logging
import random
import sqlite3
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from composite_store.models.observability import POSTGRES_INDEXES, POSTGRES_LIST_INDEXES, SQLITE_LIST_INDEXES
from composite_store import ConflictError, NotFoundError, Page, StorageError, ValidationError
from composite_store.clickhouse import ObservabilityClickHouse
from composite_store.jsonb import encode_jsonb
from composite_store.observability import SPAN_KEYS, SpanRows
from composite_store.postgres import ObservabilityPG
from composite_store.schemas import SpanSchema
from composite_store.sqlite import ObservabilitySQLite
from composite_store.values import json_loads
from tests.conftest import MATRIX, clickhouse_client, database_url

UTC = timezone.utc
BASE = datetime(2024, 1, 1, tzinfo=UTC)
#: Scenarios about ClickHouse's own tables and stored formats.
CLICKHOUSE_ONLY = pytest.mark.requires(family="clickhouse")
CURRENT_CLICKHOUSE = pytest.mark.requires(current_clickhouse=True)


def at(seconds: float) -> datetime:
    """``BASE`` plus some seconds."""
    return BASE + timedelta(seconds=seconds)


def span(**overrides):
    """A valid root span (§5 fixture): random ids, an agent run from BASE to BASE+1s."""
    record = {"trace_id": uuid.uuid4().hex, "span_id": uuid.uuid4().hex[:16], "parent_span_id": None,
              "name": "Test Span", "span_type": "agent_run", "entity_type": "agent", "entity_id": "agent-1",
              "entity_name": "Test Agent", "environment": "test", "source": "local",
              "service_name": "test-service", "is_event": False, "started_at": BASE, "ended_at": at(1)}
    record.update(overrides)
    return record


def child(parent, **overrides):
    """A child span of ``parent`` (same trace)."""
    return span(trace_id=parent["trace_id"], parent_span_id=parent["span_id"], **overrides)


def error_id(backend: str, operation: str, status: str) -> str:
    return f"STORAGE_{MATRIX[backend].error_name}_{operation}_{status}"


def trace_ids(page: Page) -> list[str]:
    return [row["trace_id"] for row in page.items]


def page_info(page: Page) -> tuple:
    return page.total, page.page, page.per_page, page.has_more


def clickhouse_sql(repository, sql: str, rows: list | None = None) -> list:
    """Run SQL (a native insert when ``rows`` are given) on the repository's own ClickHouse
    connection, bypassing the library: works on a server and on the in-process engine."""
    with repository.backend.connection():
        client = repository.backend.database.connection().client
        return client.execute(sql, rows) if rows is not None else client.execute(sql)


def open_repository(url: str, **options) -> ObservabilityClickHouse:
    """An extra ``ObservabilityClickHouse`` on ``url`` (the in-process engine's included), in the
    legacy layout this suite is about unless ``layout=`` says otherwise."""
    return ObservabilityClickHouse(url=url, **{"layout": "legacy", **options})


# --------------------------------------------------------------------------- create and read

def test_create_span_then_get_trace(observability):
    """1."""
    root = span()
    assert observability.create_span(span=root) is None
    trace = observability.get_trace(trace_id=root["trace_id"])
    assert trace["trace_id"] == root["trace_id"] and len(trace["spans"]) == 1
    stored = trace["spans"][0]
    assert (stored["trace_id"], stored["span_id"]) == (root["trace_id"], root["span_id"])
    assert stored["created_at"].tzinfo is not None and stored["created_at"].utcoffset() == timedelta(0)
    assert stored["created_at"] <= stored["updated_at"]


def test_fields_round_trip_with_all_keys(observability):
    """2."""
    root = span(name="Generate", span_type="model_generation", entity_type="tool", entity_id="tool-7",
                entity_name="Searcher", user_id="user-9", environment="production",
                input={"messages": [{"role": "user", "content": "hi"}]}, output={"text": "hello"},
                attributes={"model": "gpt", "usage": {"tokens": 12}}, metadata={"team": "a", "n": 1})
    observability.create_span(span=root)
    stored = observability.get_span(trace_id=root["trace_id"], span_id=root["span_id"])
    assert set(stored) == set(SPAN_KEYS) and len(stored) == 42
    for key in ("name", "span_type", "entity_type", "entity_id", "entity_name", "user_id", "environment",
                "input", "output", "attributes", "metadata"):
        assert stored[key] == root[key], key


def test_root_and_child_parents(observability):
    """3."""
    root = span()
    kid = child(root)
    observability.batch_create_spans(records=[root, kid])
    assert observability.get_span(trace_id=root["trace_id"], span_id=root["span_id"])["parent_span_id"] is None
    assert observability.get_span(trace_id=kid["trace_id"], span_id=kid["span_id"])["parent_span_id"] == root["span_id"]


def test_scalar_and_typed_json_round_trip(observability):
    """4."""
    root = span(input="hello", output="world", attributes={"count": 3, "ok": True},
                metadata={"ratio": 1.5, "flag": False})
    observability.create_span(span=root)
    stored = observability.get_span(trace_id=root["trace_id"], span_id=root["span_id"])
    assert stored["input"] == "hello" and stored["output"] == "world"
    assert stored["attributes"] == {"count": 3, "ok": True} and type(stored["attributes"]["ok"]) is bool
    assert stored["metadata"] == {"ratio": 1.5, "flag": False} and type(stored["metadata"]["flag"]) is bool


def test_event_span_ends_when_it_starts(observability):
    """5."""
    event = span(is_event=True, span_type="agent_signal", ended_at=None, started_at=at(3))
    del event["ended_at"]
    observability.create_span(span=event)
    stored = observability.get_span(trace_id=event["trace_id"], span_id=event["span_id"])
    assert stored["is_event"] is True and stored["ended_at"] == at(3)


def test_batch_create_one_or_several_traces(observability):
    """6."""
    root = span()
    observability.batch_create_spans(records=[root, child(root), child(root)])
    assert len(observability.get_trace(trace_id=root["trace_id"])["spans"]) == 3
    roots = [span() for _ in range(3)]
    observability.batch_create_spans(records=roots)
    for record in roots:
        assert len(observability.get_trace(trace_id=record["trace_id"])["spans"]) == 1
    assert observability.batch_create_spans(records=[]) is None
    assert observability.list_traces().total == 4


def test_running_span_in_a_batch(observability):
    """7."""
    root = span(ended_at=None)
    observability.batch_create_spans(records=[root])
    assert observability.get_root_span(trace_id=root["trace_id"])["ended_at"] is None


def test_trace_spans_ordered_by_start(observability):
    """8."""
    root = span()
    late, early = child(root, started_at=at(2)), child(root, started_at=at(1))
    observability.batch_create_spans(records=[late, root, early])
    spans = observability.get_trace(trace_id=root["trace_id"])["spans"]
    assert [s["span_id"] for s in spans] == [root["span_id"], early["span_id"], late["span_id"]]


def test_reads_of_unknown_ids(observability):
    """9."""
    assert observability.get_trace(trace_id="nope") is None
    assert observability.get_span(trace_id="nope", span_id="nope") is None
    assert observability.get_root_span(trace_id="nope") is None
    root = span()
    kid = child(root, name="the child", output={"x": [1, 2]})
    observability.batch_create_spans(records=[root, kid])
    assert observability.get_span(trace_id=root["trace_id"], span_id="nope") is None
    stored = observability.get_span(trace_id=kid["trace_id"], span_id=kid["span_id"])
    assert {key: stored[key] for key in kid} == kid


def test_root_span_of_a_tree(observability):
    """10."""
    root = span()
    first = child(root, started_at=at(0.1))
    grandchild = child(first, started_at=at(0.2))
    second = child(root, started_at=at(0.3))
    observability.batch_create_spans(records=[first, grandchild, second, root])
    assert observability.get_root_span(trace_id=root["trace_id"])["span_id"] == root["span_id"]


def test_trace_without_root(observability):
    """11."""
    orphan_a = span(parent_span_id="missing-parent")
    orphan_b = span(trace_id=orphan_a["trace_id"], parent_span_id="missing-parent", started_at=at(1))
    observability.batch_create_spans(records=[orphan_a, orphan_b])
    assert observability.get_root_span(trace_id=orphan_a["trace_id"]) is None
    assert len(observability.get_trace(trace_id=orphan_a["trace_id"])["spans"]) == 2
    assert observability.list_traces().total == 0


def test_several_roots_earliest_wins(observability):
    """§3.6: with several roots, the earliest started_at, ties by span_id."""
    trace = uuid.uuid4().hex
    observability.batch_create_spans(records=[span(trace_id=trace, span_id="b", started_at=at(1)),
                                              span(trace_id=trace, span_id="c", started_at=at(1)),
                                              span(trace_id=trace, span_id="z", started_at=at(2))])
    assert observability.get_root_span(trace_id=trace)["span_id"] == "b"


def test_wire_form_is_accepted_and_dumped(observability):
    """§2.7: the schema's wire form loads, and a returned span written back changes nothing."""
    root = span(metadata={"k": "v"}, tags=["a"])
    wire = SpanSchema().dump(root)
    assert wire["traceId"] == root["trace_id"] and wire["startedAt"] == "2024-01-01T00:00:00.000Z"
    observability.create_span(span=wire)
    stored = observability.get_span(trace_id=root["trace_id"], span_id=root["span_id"])
    assert stored["metadata"] == {"k": "v"} and stored["tags"] == ["a"]
    listed = observability.list_traces().items[0]
    observability.batch_create_spans(records=[listed, SpanSchema().dump(listed)])
    again = observability.get_span(trace_id=root["trace_id"], span_id=root["span_id"])
    assert {k: v for k, v in again.items() if k != "updated_at"} == {k: v for k, v in stored.items()
                                                                     if k != "updated_at"}
    assert SpanSchema().dump(listed)["status"] == "success"


def test_returned_records_are_fresh(observability):
    root = span(metadata={"a": {"b": 1}})
    observability.create_span(span=root)
    root["metadata"]["a"]["b"] = 2
    first = observability.get_span(trace_id=root["trace_id"], span_id=root["span_id"])
    assert first["metadata"] == {"a": {"b": 1}}
    first["metadata"]["a"]["b"] = 3
    assert observability.get_span(trace_id=root["trace_id"], span_id=root["span_id"])["metadata"] == {"a": {"b": 1}}


def test_unstorable_characters_are_removed(observability, backend):
    """README *Input values*: unpaired surrogates go, and U+0000 on PostgreSQL."""
    root = span(name="a\ud800b", metadata={"k\udc00": "x\x00y"}, tags=["t\ud800"])
    observability.create_span(span=root)
    stored = observability.get_span(trace_id=root["trace_id"], span_id=root["span_id"])
    assert stored["name"] == "ab" and stored["tags"] == ["t"]
    assert stored["metadata"] == {"k": "xy" if backend == "postgres" else "x\x00y"}


# --------------------------------------------------------------------------- updates

def test_update_completes_a_running_span(observability):
    """12."""
    root = span(ended_at=None)
    observability.create_span(span=root)
    before = observability.get_span(trace_id=root["trace_id"], span_id=root["span_id"])
    observability.update_span(trace_id=root["trace_id"], span_id=root["span_id"],
                              updates={"output": {"text": "done"}, "ended_at": at(5)})
    after = observability.get_span(trace_id=root["trace_id"], span_id=root["span_id"])
    assert after["output"] == {"text": "done"} and after["ended_at"] == at(5)
    assert after["updated_at"] >= before["updated_at"]


def test_update_changes_only_given_fields(observability):
    """13."""
    root = span(input={"q": 1}, metadata={"m": True})
    observability.create_span(span=root)
    before = observability.get_span(trace_id=root["trace_id"], span_id=root["span_id"])
    observability.update_span(trace_id=root["trace_id"], span_id=root["span_id"], updates={"name": "Renamed"})
    after = observability.get_span(trace_id=root["trace_id"], span_id=root["span_id"])
    assert after["name"] == "Renamed"
    for key in ("entity_type", "entity_id", "entity_name", "input", "metadata", "created_at"):
        assert after[key] == before[key], key


def test_update_replaces_json_whole(observability):
    """14."""
    root = span(metadata={"a": 1})
    observability.create_span(span=root)
    observability.update_span(trace_id=root["trace_id"], span_id=root["span_id"], updates={"metadata": {"b": 2}})
    assert observability.get_span(trace_id=root["trace_id"], span_id=root["span_id"])["metadata"] == {"b": 2}


def test_update_none_clears_optional_field(observability):
    root = span(user_id="u", output={"x": 1})
    observability.create_span(span=root)
    observability.update_span(trace_id=root["trace_id"], span_id=root["span_id"],
                              updates={"user_id": None, "output": None, "updated_at": "ignored"})
    stored = observability.get_span(trace_id=root["trace_id"], span_id=root["span_id"])
    assert stored["user_id"] is None and stored["output"] is None


def test_update_missing_span(observability, backend):
    """15."""
    with pytest.raises(NotFoundError) as info:
        observability.update_span(trace_id="t-x", span_id="s-x", updates={"name": "x"})
    assert info.value.id == error_id(backend, "UPDATE_SPAN", "NOT_FOUND")
    assert info.value.message == "Span not found: trace_id=t-x, span_id=s-x"
    assert info.value.details == {"trace_id": "t-x", "span_id": "s-x"}
    assert observability.get_trace(trace_id="t-x") is None


@pytest.mark.parametrize("updates, field, message", [
    ({"span_id": "other"}, "updates.span_id", "Cannot be updated."),
    ({"trace_id": "other"}, "updates.trace_id", "Cannot be updated."),
    ({"name": None}, "updates.name", "Field may not be null."),
    ({"is_event": None}, "updates.is_event", "Field may not be null."),
    ({}, "updates", None),
    ({"colour": "red"}, "updates.colour", "Unknown field."),
    ({"span_type": "nope"}, "updates.span_type", None),
])
def test_bad_updates_change_nothing(observability, backend, updates, field, message):
    """16."""
    root = span()
    observability.create_span(span=root)
    before = observability.get_span(trace_id=root["trace_id"], span_id=root["span_id"])
    with pytest.raises(ValidationError) as info:
        observability.update_span(trace_id=root["trace_id"], span_id=root["span_id"], updates=updates)
    assert info.value.id == error_id(backend, "UPDATE_SPAN", "INVALID_INPUT")
    assert field in info.value.fields
    if message:
        assert info.value.fields[field] == [message]
    assert observability.get_span(trace_id=root["trace_id"], span_id=root["span_id"]) == before


def test_batch_update_spans(observability):
    """17."""
    root = span()
    a, b = child(root), child(root)
    other = span()
    observability.batch_create_spans(records=[root, a, b, other])
    observability.batch_update_spans(records=[
        {"trace_id": root["trace_id"], "span_id": a["span_id"], "updates": {"output": "out-1"}},
        {"trace_id": root["trace_id"], "span_id": b["span_id"], "updates": {"output": "out-2"}}])
    assert observability.get_span(trace_id=root["trace_id"], span_id=a["span_id"])["output"] == "out-1"
    assert observability.get_span(trace_id=root["trace_id"], span_id=b["span_id"])["output"] == "out-2"
    observability.batch_update_spans(records=[
        {"trace_id": root["trace_id"], "span_id": root["span_id"], "updates": {"name": "first"}},
        {"trace_id": other["trace_id"], "span_id": other["span_id"], "updates": {"name": "second"}},
        {"trace_id": root["trace_id"], "span_id": root["span_id"], "updates": {"name": "third", "user_id": "u"}}])
    assert observability.get_span(trace_id=root["trace_id"], span_id=root["span_id"])["name"] == "third"
    assert observability.get_span(trace_id=root["trace_id"], span_id=root["span_id"])["user_id"] == "u"
    assert observability.get_span(trace_id=other["trace_id"], span_id=other["span_id"])["name"] == "second"
    assert observability.batch_update_spans(records=[]) is None


def test_batch_update_with_a_missing_target(observability, backend):
    """18."""
    root = span()
    observability.create_span(span=root)
    before = observability.get_span(trace_id=root["trace_id"], span_id=root["span_id"])
    with pytest.raises(NotFoundError) as info:
        observability.batch_update_spans(records=[
            {"trace_id": root["trace_id"], "span_id": root["span_id"], "updates": {"name": "changed"}},
            {"trace_id": "t-missing", "span_id": "s-missing", "updates": {"name": "x"}}])
    assert info.value.id == error_id(backend, "BATCH_UPDATE_SPANS", "NOT_FOUND")
    assert info.value.details["missing"] == [{"trace_id": "t-missing", "span_id": "s-missing"}]
    assert observability.get_span(trace_id=root["trace_id"], span_id=root["span_id"]) == before


def test_batch_update_validation_reports_every_item(observability):
    with pytest.raises(ValidationError) as info:
        observability.batch_update_spans(records=[{"trace_id": "t", "span_id": "", "updates": {"name": 1}},
                                                  {"trace_id": "t", "span_id": "s", "updates": {"spanId": "x"}}])
    assert set(info.value.fields) == {"records[0].span_id", "records[0].updates.name", "records[1].updates.span_id"}


# --------------------------------------------------------------------------- deletes

def test_batch_delete_traces(observability):
    """19."""
    t1, t2, t3 = span(trace_id="t1"), span(trace_id="t2"), span(trace_id="t3")
    observability.batch_create_spans(records=[t1, child(t1), t2, child(t2), t3])
    observability.batch_delete_traces(trace_ids=["t1", "t3"])
    assert observability.get_span(trace_id="t1", span_id=t1["span_id"]) is None
    assert observability.get_trace(trace_id="t1") is None and observability.get_trace(trace_id="t3") is None
    assert len(observability.get_trace(trace_id="t2")["spans"]) == 2
    assert observability.list_traces().total == 1
    # A span of a deleted trace written later is stored normally.
    observability.create_span(span=t1)
    assert observability.get_trace(trace_id="t1") is not None


def test_batch_delete_argument_rules(observability, backend):
    """20."""
    root = span(trace_id="t1")
    observability.create_span(span=root)
    assert observability.batch_delete_traces(trace_ids=["unknown"]) is None
    assert observability.batch_delete_traces(trace_ids=[]) is None
    with pytest.raises(ValidationError) as info:
        observability.batch_delete_traces(trace_ids="t1")
    assert info.value.id == error_id(backend, "BATCH_DELETE_TRACES", "INVALID_INPUT")
    assert "trace_ids" in info.value.fields
    assert observability.get_trace(trace_id="t1") is not None


def test_batch_delete_within_a_tenant(observability):
    """21."""
    t1 = span(trace_id="t1", organization_id="org-1", resource_id="res-1")
    t2 = span(trace_id="t2", organization_id="org-2", resource_id="res-2")
    observability.batch_create_spans(records=[t1, child(t1, organization_id="org-1"), t2, child(t2, organization_id="org-2")])
    observability.batch_delete_traces(trace_ids=["t1", "t2"], organization_id="org-1")
    assert observability.get_trace(trace_id="t1") is None
    assert len(observability.get_trace(trace_id="t2")["spans"]) == 2
    observability.batch_delete_traces(trace_ids=["t2"], resource_id="res-9")
    assert len(observability.get_trace(trace_id="t2")["spans"]) == 2


# --------------------------------------------------------------------------- listing traces

@pytest.fixture
def listed(observability):
    """The listing fixture of §5: roots t1–t4 (t1 with a failed child, t4 with a healthy one)."""
    t1 = span(trace_id="t1", span_id="r1", span_type="agent_run", entity_type="agent", entity_id="agent-1",
              entity_name="Agent One", started_at=at(0), ended_at=at(1), environment="production",
              user_id="user-1", run_id="run-1", session_id="sess-1", thread_id="thread-1", request_id="req-1",
              organization_id="org-1", resource_id="res-1", source="cloud", service_name="svc-a",
              tags=["important", "customer"], metadata={"priority": "high", "tier": 2, "beta": True},
              scope={"app_version": "1.2.0"}, input={"q": "in"}, output={"a": "out"}, attributes={"k": 1})
    t2 = span(trace_id="t2", span_id="r2", span_type="workflow_run", entity_type="workflow_run", entity_id="wf-1",
              entity_name="Workflow One", started_at=at(2), ended_at=at(3), error={"message": "failed"},
              environment="staging", user_id="user-2", run_id="run-2", session_id="sess-2", thread_id="thread-2",
              request_id="req-2", organization_id="org-2", resource_id="res-2", source="local",
              service_name="svc-b", metadata={"priority": "low", "beta": 1})
    t3 = span(trace_id="t3", span_id="r3", span_type="agent_run", entity_type="agent", entity_id="agent-2",
              entity_name="Agent Two", started_at=at(4), ended_at=None, environment="production",
              user_id="user-1", run_id="run-3", session_id="sess-1", thread_id="thread-3", request_id="req-3",
              organization_id="org-1", resource_id="res-3", source="local", service_name="svc-a",
              tags=["important"], metadata={"gone": None})
    t4 = span(trace_id="t4", span_id="r4", span_type="tool_call", entity_type="tool", entity_id="tool-1",
              entity_name="Tool One", started_at=at(6), ended_at=at(7), environment="production",
              user_id="user-3", run_id="run-4", session_id="sess-4", thread_id="thread-4", request_id="req-4",
              organization_id="org-3", resource_id="res-4", source="local", service_name="svc-c")
    failed = child(t1, span_id="c1", span_type="tool_call", entity_type="tool", started_at=at(0.5),
                   error={"message": "boom"})
    healthy = child(t4, span_id="c4", span_type="tool_call", entity_type="tool", started_at=at(6.5))
    observability.batch_create_spans(records=[t1, t2, failed, t3, t4, healthy])
    return observability


def listing(observability, **filters):
    return trace_ids(observability.list_traces(filters=filters, per_page=False))


def test_empty_store_lists_nothing(observability):
    """22."""
    page = observability.list_traces()
    assert page.items == [] and page.total == 0 and page.has_more is False


def test_list_without_arguments(listed):
    """23."""
    page = listed.list_traces()
    assert trace_ids(page) == ["t4", "t3", "t2", "t1"] and page_info(page) == (4, 0, 10, False)
    row = page.items[-1]
    assert row["input"] == {"q": "in"} and row["output"] == {"a": "out"} and row["attributes"] == {"k": 1}
    assert set(row) == {*SPAN_KEYS, "status"}


def test_list_pages(listed):
    """24."""
    first = listed.list_traces(per_page=2)
    assert trace_ids(first) == ["t4", "t3"] and first.has_more is True
    second = listed.list_traces(per_page=2, page=1)
    assert trace_ids(second) == ["t2", "t1"] and second.has_more is False


def test_list_page_sizes(listed, backend):
    """25."""
    assert page_info(listed.list_traces(per_page=0)) == (4, 0, 0, True)
    assert listed.list_traces(per_page=0).items == []
    everything = listed.list_traces(per_page=False)
    assert len(everything.items) == 4 and page_info(everything) == (4, 0, False, False)
    with pytest.raises(ValidationError) as info:
        listed.list_traces(per_page=False, page=1)
    assert info.value.id == error_id(backend, "LIST_TRACES", "INVALID_PAGE")
    far = listed.list_traces(page=9, per_page=2)
    assert far.items == [] and page_info(far) == (4, 9, 2, False)


def test_list_by_type_and_entity(listed):
    """26."""
    assert listing(listed, span_type="workflow_run") == ["t2"]
    assert set(listing(listed, entity_type="agent")) == {"t1", "t3"}
    assert listing(listed, entity_id="agent-1") == ["t1"]
    assert listing(listed, entity_name="Workflow One") == ["t2"]


def test_list_by_user_and_environment(listed):
    """27."""
    assert set(listing(listed, user_id="user-1")) == {"t1", "t3"}
    assert set(listing(listed, environment="production")) == {"t1", "t3", "t4"}
    page = listed.list_traces(filters={"environment": "nowhere"})
    assert page.items == [] and page.total == 0


def test_list_by_status(listed):
    """28."""
    success = listed.list_traces(filters={"status": "success"}).items
    assert {row["trace_id"] for row in success} == {"t1", "t4"}
    assert all(row["error"] is None and row["ended_at"] is not None for row in success)
    assert listing(listed, status="error") == ["t2"]
    assert listing(listed, status="running") == ["t3"]


def test_row_status(listed):
    """29."""
    statuses = {row["trace_id"]: row["status"] for row in listed.list_traces().items}
    assert statuses == {"t1": "success", "t2": "error", "t3": "running", "t4": "success"}


def test_list_by_started_at(listed):
    """30."""
    assert listing(listed, started_at={"start": at(1), "end": at(3)}) == ["t2"]
    assert set(listing(listed, started_at={"start": at(4)})) == {"t3", "t4"}
    assert set(listing(listed, started_at={"start": at(2), "start_exclusive": True})) == {"t3", "t4"}
    assert listing(listed, started_at={"end": at(2), "end_exclusive": True}) == ["t1"]


def test_list_by_ended_at(listed):
    """31."""
    assert set(listing(listed, ended_at={"end": at(3)})) == {"t1", "t2"}
    assert listing(listed, ended_at={"end": at(3)}, started_at={"end": at(1)}) == ["t1"]
    assert listing(listed, started_at={"end": at(1)}, ended_at={"end": at(3)}) == ["t1"]
    assert "t3" not in listing(listed, ended_at={"start": at(0)})


def test_list_combined_filters(listed):
    """32."""
    assert listing(listed, entity_type="agent", environment="production", status="success") == ["t1"]


def test_list_by_correlation_ids(listed):
    """33."""
    assert listing(listed, run_id="run-1") == ["t1"]
    assert set(listing(listed, session_id="sess-1")) == {"t1", "t3"}
    assert listing(listed, thread_id="thread-1") == ["t1"]
    assert listing(listed, request_id="req-1") == ["t1"]
    assert listing(listed, source="cloud") == ["t1"]
    assert set(listing(listed, service_name="svc-a")) == {"t1", "t3"}
    assert listing(listed, trace_id="t2") == ["t2"]


def test_list_by_tenant(listed):
    """34."""
    assert set(listing(listed, organization_id="org-1")) == {"t1", "t3"}
    assert listing(listed, resource_id="res-1") == ["t1"]


def test_list_by_child_error(listed):
    """35, as fidelity-1.71 §3.1 (B1) amends it: the root's own error counts too (t2's root failed)."""
    assert listing(listed, has_child_error=True) == ["t2", "t1"]
    assert set(listing(listed, has_child_error=False)) == {"t3", "t4"}
    assert listing(listed, has_child_error="true") == ["t2", "t1"]
    assert listed.list_traces(filters={"has_child_error": True}).total == 2


def test_list_by_tags(listed):
    """36."""
    assert set(listing(listed, tags=["important"])) == {"t1", "t3"}
    assert listing(listed, tags=["important", "customer"]) == ["t1"]
    assert listing(listed, tags=["customer", "x"]) == []
    assert len(listing(listed, tags=[])) == 4
    assert listing(listed, tags=["Important"]) == [] and listing(listed, tags=["import"]) == []


def test_list_by_metadata(listed):
    """37."""
    assert listing(listed, metadata={"priority": "high"}) == ["t1"]
    assert listing(listed, metadata={"priority": "high", "tier": 2}) == ["t1"]
    assert listing(listed, metadata={"tier": 2.0}) == ["t1"]
    assert listing(listed, metadata={"tier": "2"}) == []
    assert listing(listed, metadata={"priority": "HIGH"}) == []


def test_list_by_metadata_string_is_not_json_text(observability):
    """37: a string filter matches only a string member, not the JSON text of another member."""
    observability.batch_create_spans(records=[
        span(trace_id="obj", metadata={"k": {"a": 1}}), span(trace_id="arr", metadata={"k": [1]}),
        span(trace_id="num", metadata={"k": 1}), span(trace_id="yes", metadata={"k": True}),
        span(trace_id="str", metadata={"k": "1"})])
    assert listing(observability, metadata={"k": '{"a":1}'}) == []
    assert listing(observability, metadata={"k": "[1]"}) == []
    assert listing(observability, metadata={"k": "1"}) == ["str"]
    assert listing(observability, metadata={"k": "true"}) == []


def test_list_counts_roots_too_big_for_the_filter_index(observability):
    """§3.8: roots whose filter values exceed an index entry (PostgreSQL counts them through a
    second index) are stored, listed and counted like the others."""
    big_tags = ["billing", *(f"tag-{number:05d}" for number in range(400))]
    observability.batch_create_spans(records=[
        span(trace_id="big", tags=big_tags, entity_name="n" * 3000, environment="prod"),
        span(trace_id="small", tags=["billing"], environment="prod"),
        span(trace_id="child", span_id="c", parent_span_id="s", tags=["billing"], environment="prod")])
    for filters in ({"tags": ["billing"]}, {"environment": "prod"}, {"tags": ["billing"], "environment": "prod"}):
        page = observability.list_traces(filters=filters, per_page=1)
        assert page.total == 2 and page.has_more is True
    assert listing(observability, entity_name="n" * 3000) == ["big"]
    assert observability.list_traces(filters={"tags": ["tag-00399"]}).total == 1


def test_list_by_metadata_types_and_scope(listed):
    """38."""
    assert listing(listed, metadata={"beta": True}) == ["t1"]
    assert listing(listed, metadata={"gone": None}) == ["t3"]
    assert listing(listed, scope={"app_version": "1.2.0"}) == ["t1"]
    assert listing(listed, scope={"app_version": "1.2"}) == []
    assert listing(listed, metadata={"missing": None}) == []


@pytest.mark.parametrize("filters, field, status", [
    ({"metadata": {"a.b": "x"}}, "filters.metadata", "INVALID_METADATA_KEY"),
    ({"metadata": {"k": {"x": 1}}}, "filters.metadata", "INVALID_METADATA_VALUE"),
    ({"scope": {"k": [1]}}, "filters.scope", "INVALID_METADATA_VALUE"),
    ({"colour": "red"}, "filters.colour", "INVALID_INPUT"),
    ({"status": "done"}, "filters.status", "INVALID_INPUT"),
    ({"span_type": "agent"}, "filters.span_type", "INVALID_INPUT"),
    ({"entity_type": "robot"}, "filters.entity_type", "INVALID_INPUT"),
    ({"started_at": {"start": at(5), "end": BASE}}, "filters.started_at", "INVALID_INPUT"),
    ({"started_at": {"start": "yesterday"}}, "filters.started_at.start", "INVALID_INPUT"),
    ({"ended_at": {"after": BASE}}, "filters.ended_at.after", "INVALID_INPUT"),
    ({"tags": "important"}, "filters.tags", "INVALID_INPUT"),
    ({"has_child_error": "maybe"}, "filters.has_child_error", "INVALID_INPUT"),
    ({"user_id": 7}, "filters.user_id", "INVALID_INPUT"),
])
def test_bad_filters(listed, backend, filters, field, status):
    """39."""
    with pytest.raises(ValidationError) as info:
        listed.list_traces(filters=filters)
    assert field in info.value.fields
    assert info.value.id == error_id(backend, "LIST_TRACES", status)


def test_bad_order_and_every_problem_at_once(listed):
    with pytest.raises(ValidationError) as info:
        listed.list_traces(filters={"colour": 1, "metadata": {"bad key": 1}}, per_page=-1,
                           order_by={"field": "name", "direction": "up", "x": 1})
    assert info.value.status == "INVALID_PAGE"
    assert set(info.value.fields) == {"per_page", "filters.colour", "filters.metadata", "order_by.field",
                                      "order_by.direction", "order_by.x"}
    assert info.value.fields["order_by.field"] == ["order_by.field must be one of started_at, ended_at"]


def test_list_order_by_started_at(listed):
    """40."""
    assert trace_ids(listed.list_traces()) == ["t4", "t3", "t2", "t1"]
    assert trace_ids(listed.list_traces(order_by={"field": "started_at", "direction": "ASC"})) == ["t1", "t2", "t3", "t4"]
    assert trace_ids(listed.list_traces(order_by={"field": "started_at", "direction": "desc"})) == ["t4", "t3", "t2", "t1"]


def test_list_order_by_ended_at(listed):
    """41."""
    assert trace_ids(listed.list_traces(order_by={"field": "ended_at", "direction": "DESC"})) == ["t3", "t4", "t2", "t1"]
    assert trace_ids(listed.list_traces(order_by={"field": "ended_at", "direction": "ASC"})) == ["t1", "t2", "t4", "t3"]


def test_list_ties_by_trace_id(listed):
    """42."""
    listed.batch_create_spans(records=[span(trace_id="tb", started_at=at(10)), span(trace_id="ta", started_at=at(10))])
    for direction in ("ASC", "DESC"):
        order = {"field": "started_at", "direction": direction}
        full = trace_ids(listed.list_traces(order_by=order, per_page=False))
        assert full.index("ta") + 1 == full.index("tb")
        for size in (1, 2, 3, 4):
            walked = []
            for number in range(0, 6 // size + 1):
                walked += trace_ids(listed.list_traces(order_by=order, per_page=size, page=number))
            assert walked == full


# --------------------------------------------------------------------------- strategy and capabilities

def test_observability_strategy(observability, backend):
    """43."""
    strategy = observability.observability_strategy
    if MATRIX[backend].family == "clickhouse":
        assert strategy == {"preferred": "insert-only", "supported": ["insert-only", "batch-with-updates"]}
    else:
        assert strategy["preferred"] == "batch-with-updates"
        assert set(strategy["supported"]) == {"batch-with-updates", "realtime", "insert-only"}
    strategy["supported"].clear()
    strategy["preferred"] = "x"
    assert observability.observability_strategy["preferred"] != "x"
    assert observability.observability_strategy["supported"]


def test_supports_concurrent_updates(observability, backend):
    """44."""
    assert observability.supports_concurrent_updates() is MATRIX[backend].transactions


# --------------------------------------------------------------------------- bulk ingest and retries

def ten_thousand_spans(output: str = "out") -> list[dict]:
    """100 traces × (1 root + 99 children)."""
    records = []
    for trace in range(100):
        root = span(trace_id=f"bulk-{trace:03d}", span_id="root", output=output, attributes={"n": trace})
        records.append(root)
        records.extend(child(root, span_id=f"c{index:02d}", started_at=at(index / 100), output=output)
                       for index in range(99))
    return records


def assert_bulk_stored(observability, output: str = "out", *, per_trace: bool = False) -> dict:
    """The 10,000 spans of :func:`ten_thousand_spans` are stored once each, with ``output``;
    their ``created_at`` by (trace id, span id).  Read with ``get_trace`` per trace when
    ``per_trace``, else in one iteration (a hundred reads of a trace cost ClickHouse seconds)."""
    page = observability.list_traces(per_page=False)
    assert page.total == 100 and len(page.items) == 100
    if per_trace:
        traces = [observability.get_trace(trace_id=row["trace_id"])["spans"] for row in page.items]
    else:
        traces = [list(spans) for _, spans in itertools.groupby(observability.iter_spans(),
                                                                key=lambda stored: stored["trace_id"])]
    assert [len(spans) for spans in traces] == [100] * 100
    pairs, created = set(), {}
    for spans in traces:
        for stored in spans:
            pairs.add((stored["trace_id"], stored["span_id"]))
            created[(stored["trace_id"], stored["span_id"])] = stored["created_at"]
            assert stored["output"] == output
    assert len(pairs) == 10_000
    assert observability.count_rows() == {"mastra_ai_spans": 10_000}
    return created


def test_ten_thousand_spans_in_one_call(observability):
    """45."""
    observability.batch_create_spans(records=ten_thousand_spans())
    assert_bulk_stored(observability, per_trace=True)


def test_same_batch_twice_leaves_one_copy(observability, backend, backend_url):
    """46 and 47."""
    records = ten_thousand_spans()
    observability.batch_create_spans(records=records)
    created = assert_bulk_stored(observability)
    observability.batch_create_spans(records=records)
    assert assert_bulk_stored(observability) == created
    if MATRIX[backend].family == "clickhouse" and not MATRIX[backend].cluster:  # (a Distributed table has no OPTIMIZE)
        clickhouse_sql(observability, "OPTIMIZE TABLE mastra_ai_spans FINAL")
        assert assert_bulk_stored(observability) == created
    observability.batch_create_spans(records=ten_thousand_spans(output="changed"))
    assert assert_bulk_stored(observability, output="changed") == created


def test_same_pair_twice_in_one_batch(observability):
    """48."""
    first = span(name="first")
    second = dict(first, name="second")
    observability.batch_create_spans(records=[first, second])
    trace = observability.get_trace(trace_id=first["trace_id"])
    assert [s["name"] for s in trace["spans"]] == ["second"]


def test_eight_threads_share_one_object(observability):
    """49."""
    def send(number: int) -> None:
        records = []
        for trace in range(10):
            root = span(trace_id=f"thread-{number}-{trace}", span_id="root")
            records.append(root)
            records.extend(child(root, span_id=f"c{index}") for index in range(99))
        observability.batch_create_spans(records=records)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(send, range(8)))
    assert observability.count_rows() == {"mastra_ai_spans": 8_000}
    assert observability.list_traces(per_page=0).total == 80


# --------------------------------------------------------------------------- bad input

def test_one_invalid_span_writes_nothing(observability, backend):
    """50."""
    records = [span(trace_id=f"t-{index // 10}", span_id=f"s-{index}") for index in range(100)]
    records[57]["span_type"] = "not_a_type"
    with pytest.raises(ValidationError) as info:
        observability.batch_create_spans(records=records)
    error = info.value
    assert error.id == error_id(backend, "BATCH_CREATE_SPANS", "INVALID_INPUT")
    assert "records[57]" in error.message and "trace_id='t-5'" in error.message and "span_id='s-57'" in error.message
    assert error.message.startswith("1 of 100 spans are invalid: records[57]")
    assert set(error.details["errors"]) == {57} and "span_type" in error.details["errors"][57]
    assert error.details["invalid"] == [{"index": 57, "trace_id": "t-5", "span_id": "s-57"}]
    assert set(error.fields) == {"records[57].span_type"}
    assert observability.count_rows() == {"mastra_ai_spans": 0}


def test_every_invalid_span_is_reported(observability):
    """51."""
    records = [span() for _ in range(12)]
    del records[3]["trace_id"]
    records[9]["attributes"] = {"o": object()}
    with pytest.raises(ValidationError) as info:
        observability.batch_create_spans(records=records)
    error = info.value
    assert set(error.details["errors"]) == {3, 9}
    assert error.details["errors"][3] == {"trace_id": ["Missing data for required field."]}
    assert error.details["errors"][9] == {"attributes.o": ["Not JSON-serializable."]}
    assert error.details["invalid"][0] == {"index": 3, "trace_id": None, "span_id": records[3]["span_id"]}
    assert set(error.fields) == {"records[3].trace_id", "records[9].attributes.o"}
    assert observability.count_rows() == {"mastra_ai_spans": 0}


@pytest.mark.parametrize("change, field", [
    (lambda s: s.pop("started_at"), "started_at"),
    (lambda s: s.update(parent_span_id=s["span_id"]), "parent_span_id"),
    (lambda s: s.update(entity_type="robot"), "entity_type"),
    (lambda s: s.update(tags="a"), "tags"),
    (lambda s: s.update(tags=["a", 1]), "tags[1]"),
    (lambda s: s.update(metadata=["not", "a", "dict"]), "metadata"),
    (lambda s: s.update(input={"x": float("nan")}), "input.x"),
    (lambda s: s.update(output={1: "int key"}), "output.1"),
    (lambda s: s.update(links={"a": 1}), "links"),
    (lambda s: s.update(is_event=None), "is_event"),
    (lambda s: s.update(ended_at="not a date"), "ended_at"),
    (lambda s: s.update(colour="red"), "colour"),
    (lambda s: s.update(trace_id=""), "trace_id"),
    (lambda s: s.update(error="boom"), "error"),
    (lambda s: s.update(scope={"v": Decimal("1")}), "scope.v"),
])
def test_create_span_rejects(observability, backend, change, field):
    """52."""
    record = span()
    change(record)
    with pytest.raises(ValidationError) as info:
        observability.create_span(span=record)
    assert info.value.id == error_id(backend, "CREATE_SPAN", "INVALID_INPUT")
    assert field in info.value.fields and "errors" not in info.value.details
    assert observability.list_traces().total == 0


def test_records_must_be_a_list(observability, backend):
    """52."""
    with pytest.raises(ValidationError) as info:
        observability.batch_create_spans(records=span())
    assert info.value.id == error_id(backend, "BATCH_CREATE_SPANS", "INVALID_INPUT")
    with pytest.raises(ValidationError) as info:
        observability.batch_create_spans(records=[span(), "not a span"])
    assert info.value.details["errors"] == {1: {"": ["Not a valid mapping type."]}}
    with pytest.raises(TypeError):
        observability.batch_create_spans()


def test_naive_and_text_datetimes(observability):
    """53."""
    root = span(started_at=datetime(2024, 1, 1), ended_at="2024-01-01T02:00:00.123456+02:00")
    observability.create_span(span=root)
    stored = observability.get_span(trace_id=root["trace_id"], span_id=root["span_id"])
    assert stored["started_at"] == datetime(2024, 1, 1, tzinfo=UTC) and stored["started_at"].tzinfo is not None
    assert stored["ended_at"] == datetime(2024, 1, 1, 0, 0, 0, 123000, tzinfo=UTC)


def test_ignored_keys_are_accepted(observability):
    root = span(created_at="whatever", updated_at=BASE, status="running")
    observability.create_span(span=root)
    assert observability.get_span(trace_id=root["trace_id"], span_id=root["span_id"])["created_at"] > BASE


# --------------------------------------------------------------------------- the fast path

FAST_PATH_CASES = [
    span(),
    span(parent_span_id="", tags=("a", "b"), links=[{"traceId": "x"}], input=[1, 2.5, None, True], output=3),
    span(is_event=True, ended_at=None, metadata={"nested": {"deep": [1, {"k": "v"}]}, "top": 1}),
    span(started_at="2024-01-01T00:00:00.123456Z", ended_at=datetime(2024, 1, 1, 5, 0, 0, 999999)),
    span(name="日本語", attributes={"emoji": "🙂", "é": "ü"}),
    span(name="bad\ud800surrogate", metadata={"k": "nul\x00inside"}),
    span(input={"when": datetime(2024, 1, 1, tzinfo=UTC)}),
    span(scope={"version": "1", "deps": {"a": "1"}, "n": 2}),
    {**SpanSchema().dump(span(metadata={"a": 1})), "status": "success"},
    span(attributes={"200": 5, "true": {"-1": [1.5, "null"]}}, output=["a", {"b": None}]),
]


def test_is_event_must_be_a_real_boolean(observability):
    """``1`` is not ``True``: both the fast path and the schema refuse it, and nothing is written."""
    with pytest.raises(ValidationError) as info:
        observability.batch_create_spans(records=[span(is_event=1)])
    assert "records[0].is_event" in info.value.fields
    assert observability.list_traces().total == 0


@pytest.mark.parametrize("strip_nul, scalars_first", [(False, False), (True, False), (False, True)])
def test_fast_path_stores_what_the_schema_would(strip_nul, scalars_first):
    """The hand-written checks accept only records the schema accepts, and build the same row."""
    from composite_store.values import clean_text

    def clean(value):
        if isinstance(value, str):
            return clean_text(value, strip_nul=strip_nul)
        if strip_nul and isinstance(value, (dict, list)):
            from composite_store.backends.base import _strip_nul_deep
            return _strip_nul_deep(value)
        return value

    rows = SpanRows(strip_nul=strip_nul, scalars_first=scalars_first, clean=clean)
    accepted = 0
    for record in FAST_PATH_CASES:
        fast = rows.fast(record)
        slow = rows.from_loaded(SpanSchema().load(record))
        if fast is not None:
            accepted += 1
            assert fast == slow
            assert {key: type(value) for key, value in fast.items()} == {key: type(value) for key, value in slow.items()}
    assert accepted >= 5


def test_fast_path_writes_scalars_first_for_clickhouse():
    rows = SpanRows(strip_nul=False, scalars_first=True, clean=lambda value: value)
    row = rows.fast(span(metadata={"nested": {"k": 1}, "k": 2}))
    assert row["metadata"] == '{"k":2,"nested":{"k":1}}'


def test_fast_path_declines_what_it_cannot_check():
    rows = SpanRows(strip_nul=True, scalars_first=False, clean=lambda value: value)
    for record in [span(span_type="nope"), span(metadata={1: "x"}), span(input=float("inf")),
                   span(name="a\x00b"), span(parent_span_id="self", span_id="self"), [], span(output={"s": {1, 2}}),
                   span(colour=1), span(is_event="true"), span(tags=["a", 2]), span(input=[{"a": {2: "b"}}]),
                   span(attributes={"k": {None: 1}}), span(metadata={"k": {True: 1}})]:
        assert rows.fast(record) is None


# --------------------------------------------------------------------------- backend specifics

@CLICKHOUSE_ONLY
def test_clickhouse_batch_with_updates(observability):
    """54."""
    root = span(ended_at=None)
    observability.create_span(span=root)
    assert listing(observability, status="running") == [root["trace_id"]]
    observability.update_span(trace_id=root["trace_id"], span_id=root["span_id"], updates={"ended_at": at(9)})
    assert observability.get_span(trace_id=root["trace_id"], span_id=root["span_id"])["ended_at"] == at(9)
    assert listing(observability, status="running") == []
    assert listing(observability, status="success") == [root["trace_id"]]
    assert observability.list_traces().total == 1


@CLICKHOUSE_ONLY
def test_clickhouse_18_16_types_and_fallback_filters(listed, backend_url):
    """55 (36–38 ran through the visitParam fallback on this server)."""
    features = listed.backend.server_features
    if features.version >= (19, 8):
        pytest.skip("not an 18.16 server")
    assert not features.json_functions
    columns = dict(clickhouse_sql(
        listed, "SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = 'mastra_ai_spans'"))
    assert columns["startedAt"] == columns["createdAt"] == columns["updatedAt"] == "Int64"
    assert columns["endedAt"] == "Nullable(Int64)" and columns["isEvent"] == "UInt8"
    assert columns["traceId"] == "String" and columns["metadata"] == "Nullable(String)"
    # A key that exists only inside a nested object (written after the top-level scalars).
    listed.create_span(span=span(trace_id="t5", metadata={"outer": {"priority": "high"}, "priority": "low"}))
    assert listing(listed, metadata={"priority": "high"}) == ["t1"]


@pytest.mark.requires(family="clickhouse", current_clickhouse=False)
def test_clickhouse_ttl_on_an_old_server(backend_url, caplog):
    """56 (18.16: one warning, init succeeds)."""
    repository = open_repository(backend_url, ttl_days=30)
    try:
        if repository.backend.server_features.ttl:
            pytest.skip("the server supports TTL")
        with caplog.at_level(logging.WARNING, logger="composite_store.clickhouse"):
            repository.init()
        warnings = [r for r in caplog.records if "TTL" in r.getMessage() and "mastra_ai_spans" in r.getMessage()]
        assert len(warnings) == 1
    finally:
        repository.close()


# A ClickHouse server: the in-process engine runs mutations synchronously, so none stays unfinished.
@pytest.mark.backends("clickhouse")
def test_clickhouse_delete_timeout(backend_url):
    """§3.2: a delete that waits on a mutation which never finishes times out with the ids."""
    database = f"obs_timeout_{uuid.uuid4().hex[:8]}"
    client = clickhouse_client(backend_url)
    client.execute(f"CREATE DATABASE {database}")
    repository = open_repository(backend_url.rsplit("/", 1)[0] + f"/{database}", mutation_timeout_s=0.3)
    try:
        repository.init()
        repository.create_span(span=span(trace_id="t1"))
        # A mutation that fails on every attempt stays unfinished (is_done = 0).
        client.execute(f"ALTER TABLE {database}.mastra_ai_spans UPDATE name = toString(throwIf(length(spanId) > 0)) WHERE 1")
        with pytest.raises(StorageError) as info:
            repository.batch_delete_traces(trace_ids=["t1"])
        assert info.value.id == "STORAGE_CLICKHOUSE_BATCH_DELETE_TRACES_FAILED"
        assert info.value.details["code"] == "MUTATION_TIMEOUT" and len(info.value.details["mutation_ids"]) >= 1
    finally:
        repository.close()
        client.execute(f"DROP DATABASE {database}")


@CLICKHOUSE_ONLY
def test_clickhouse_rows_of_other_clients(observability, backend_url):
    """§2.5/§2.6: "" and "_null_" mean no parent and no error; "null" means no error."""
    from composite_store.values import epoch_ms

    datetime64 = observability.backend.server_features.datetime64
    stamp = (lambda moment: moment) if datetime64 else epoch_ms
    columns = ["traceId", "spanId", "parentSpanId", "name", "spanType", "isEvent", "startedAt", "endedAt", "error",
               "createdAt", "updatedAt"]
    rows = [("ox", "a", "", "root", "agent_run", 0, stamp(at(0)), stamp(at(1)), "", stamp(at(0)), stamp(at(0))),
            ("ox", "b", "a", "kid", "tool_call", 0, stamp(at(0.5)), stamp(at(0.6)), "null", stamp(at(0)), stamp(at(0))),
            ("oy", "c", "_null_", "root", "agent_run", 0, stamp(at(2)), None, "_null_", stamp(at(0)), stamp(at(0))),
            ("oy", "d", "c", "kid", "tool_call", 0, stamp(at(2.5)), stamp(at(3)), '{"message":"x"}', stamp(at(0)),
             stamp(at(0)))]
    clickhouse_sql(observability, f"INSERT INTO mastra_ai_spans ({', '.join(columns)}) VALUES", rows)
    root = observability.get_root_span(trace_id="ox")
    assert root["span_id"] == "a" and root["parent_span_id"] is None and root["error"] is None
    assert observability.get_span(trace_id="ox", span_id="b")["error"] is None
    assert observability.get_root_span(trace_id="oy")["parent_span_id"] is None
    statuses = {row["trace_id"]: row["status"] for row in observability.list_traces().items}
    assert statuses == {"ox": "success", "oy": "running"}
    assert listing(observability, status="error") == []
    assert listing(observability, has_child_error=True) == ["oy"]
    assert listing(observability, has_child_error=False) == ["ox"]


MASTRA_SQLITE_DDL = [
    'CREATE TABLE IF NOT EXISTS mastra_ai_spans ("traceId" TEXT NOT NULL, "spanId" TEXT NOT NULL, '
    '"name" TEXT NOT NULL, "spanType" TEXT NOT NULL, "isEvent" INTEGER NOT NULL, "startedAt" TEXT NOT NULL, '
    '"parentSpanId" TEXT, "entityType" TEXT, "entityId" TEXT, "entityName" TEXT, "parentEntityType" TEXT, '
    '"parentEntityId" TEXT, "parentEntityName" TEXT, "rootEntityType" TEXT, "rootEntityId" TEXT, '
    '"rootEntityName" TEXT, "userId" TEXT, "organizationId" TEXT, "resourceId" TEXT, "runId" TEXT, '
    '"sessionId" TEXT, "threadId" TEXT, "requestId" TEXT, "environment" TEXT, "serviceName" TEXT, '
    '"scope" TEXT, "entityVersionId" TEXT, "parentEntityVersionId" TEXT, "rootEntityVersionId" TEXT, '
    '"experimentId" TEXT, "source" TEXT, "metadata" TEXT, "tags" TEXT, "attributes" TEXT, "links" TEXT, '
    '"input" TEXT, "output" TEXT, "error" TEXT, "endedAt" TEXT, "requestContext" TEXT, '
    '"createdAt" TEXT NOT NULL, "updatedAt" TEXT, UNIQUE ("spanId", "traceId"))',
    'CREATE UNIQUE INDEX IF NOT EXISTS mastra_ai_spans_spanid_traceid_idx ON mastra_ai_spans ("spanId", "traceId")',
    'CREATE INDEX IF NOT EXISTS mastra_ai_spans_trace_started_at_idx ON mastra_ai_spans ("traceId", "startedAt")',
    'CREATE INDEX IF NOT EXISTS mastra_ai_spans_roots_started_at_idx ON mastra_ai_spans ("startedAt" DESC) '
    'WHERE "parentSpanId" IS NULL',
]


#: The indexes init() adds to Mastra's layout for list_traces counts.
LIST_INDEX_NAMES = {index.name for index in SQLITE_LIST_INDEXES}


def sqlite_schema(path) -> list:
    with sqlite3.connect(path) as connection:
        return sorted(connection.execute("SELECT type, name, sql FROM sqlite_master").fetchall(), key=str)


@pytest.mark.backends("sqlite")
def test_sqlite_database_laid_out_by_mastra(tmp_path):
    """57 (SQLite) and 60: nothing changes; raw rows, JSONB blobs included, read back."""
    path = tmp_path / "mastra.db"
    with sqlite3.connect(path) as connection:
        for statement in MASTRA_SQLITE_DDL:
            connection.execute(statement)
        connection.execute(
            'INSERT INTO mastra_ai_spans ("traceId", "spanId", "name", "spanType", "isEvent", "startedAt", '
            '"parentSpanId", "metadata", "tags", "error", "endedAt", "createdAt", "updatedAt") '
            "VALUES (?, ?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?, ?)",
            ("mt", "ms", "From Mastra", "agent_run", 0, "2024-01-01T00:00:00.000Z",
             encode_jsonb({"priority": "high", "n": 1}), encode_jsonb(["x"]), encode_jsonb(None),
             "2024-01-01 00:00:01.5", "2024-01-01T00:00:02.000Z", "2024-01-01T00:00:02.000+00:00"))
    before = sqlite_schema(path)
    repository = ObservabilitySQLite(url=f"sqlite:///{path}")
    try:
        repository.init()
        after = sqlite_schema(path)
        assert [row for row in after if row[1] not in LIST_INDEX_NAMES] == before
        assert {row[1] for row in after if row not in before} == LIST_INDEX_NAMES
        stored = repository.get_span(trace_id="mt", span_id="ms")
        assert stored["metadata"] == {"priority": "high", "n": 1} and stored["tags"] == ["x"]
        assert stored["error"] is None and stored["ended_at"] == datetime(2024, 1, 1, 0, 0, 1, 500000, tzinfo=UTC)
        assert stored["created_at"] == stored["updated_at"] == datetime(2024, 1, 1, 0, 0, 2, tzinfo=UTC)
        assert listing(repository, metadata={"priority": "high"}) == ["mt"]
        assert listing(repository, metadata={"n": 1.0}) == ["mt"]
        assert listing(repository, tags=["x"]) == ["mt"]
        assert listing(repository, status="success") == ["mt"]
        repository.create_span(span=span(trace_id="mt", span_id="ms", name="rewritten"))
        assert repository.get_span(trace_id="mt", span_id="ms")["name"] == "rewritten"
        with sqlite3.connect(path) as connection:
            assert connection.execute("SELECT count(*) FROM mastra_ai_spans").fetchone()[0] == 1
    finally:
        repository.close()


@pytest.mark.backends("sqlite")
def test_sqlite_old_table_with_duplicates(tmp_path):
    """59."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as connection:
        connection.execute(MASTRA_SQLITE_DDL[0].replace(', UNIQUE ("spanId", "traceId")', ""))
        row = ("t", "s", "n", "agent_run", 0, "2024-01-01T00:00:00.000Z", "2024-01-01T00:00:00.000Z")
        connection.executemany('INSERT INTO mastra_ai_spans ("traceId", "spanId", "name", "spanType", "isEvent", '
                               '"startedAt", "createdAt") VALUES (?, ?, ?, ?, ?, ?, ?)',
                               [row, row, row, ("u", *row[1:]), ("u", *row[1:]), ("v", *row[1:])])
    before = sqlite_schema(path)
    repository = ObservabilitySQLite(url=f"sqlite:///{path}")
    try:
        with pytest.raises(ConflictError) as info:
            repository.init()
        assert info.value.id == "STORAGE_SQLITE_INIT_CONFLICT"
        assert info.value.details["code"] == "DUPLICATE_SPANS" and info.value.details["duplicates"] == 2
        assert sqlite_schema(path) == before
        with sqlite3.connect(path) as connection:
            assert connection.execute("SELECT count(*) FROM mastra_ai_spans").fetchone()[0] == 6
            connection.execute("DELETE FROM mastra_ai_spans WHERE rowid NOT IN "
                               '(SELECT min(rowid) FROM mastra_ai_spans GROUP BY "traceId", "spanId")')
        repository.init()  # succeeds after a failure, now that the pairs are unique
        assert repository.get_trace(trace_id="t")["spans"][0]["name"] == "n"
        assert "mastra_ai_spans_spanid_traceid_idx" in str(sqlite_schema(path))
    finally:
        repository.close()


MASTRA_PG_DDL = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE {schema}.mastra_ai_spans ("traceId" text NOT NULL, "spanId" text NOT NULL, name text NOT NULL,
  "spanType" text NOT NULL, "isEvent" boolean NOT NULL, "startedAt" timestamp NOT NULL, "parentSpanId" text,
  "entityType" text, "entityId" text, "entityName" text, "parentEntityType" text, "parentEntityId" text,
  "parentEntityName" text, "rootEntityType" text, "rootEntityId" text, "rootEntityName" text, "userId" text,
  "organizationId" text, "resourceId" text, "runId" text, "sessionId" text, "threadId" text, "requestId" text,
  environment text, "serviceName" text, scope jsonb, "entityVersionId" text, "parentEntityVersionId" text,
  "rootEntityVersionId" text, "experimentId" text, source text, metadata jsonb, tags jsonb, attributes jsonb,
  links jsonb, input jsonb, output jsonb, error jsonb, "endedAt" timestamp, "requestContext" jsonb,
  "createdAt" timestamp NOT NULL, "updatedAt" timestamp, "startedAtZ" timestamptz DEFAULT now(),
  "endedAtZ" timestamptz DEFAULT now(), "createdAtZ" timestamptz DEFAULT now(),
  "updatedAtZ" timestamptz DEFAULT now(),
  CONSTRAINT {schema}_mastra_ai_spans_traceid_spanid_pk PRIMARY KEY ("traceId", "spanId"));
CREATE INDEX {schema}_mastra_ai_spans_traceid_startedat_idx ON {schema}.mastra_ai_spans ("traceId", "startedAt" DESC);
CREATE INDEX {schema}_mastra_ai_spans_root_spans_idx ON {schema}.mastra_ai_spans ("startedAt" DESC)
  WHERE "parentSpanId" IS NULL;
CREATE OR REPLACE FUNCTION {schema}.trigger_set_timestamps() RETURNS trigger AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN NEW."createdAt" = NOW(); NEW."updatedAt" = NOW();
  ELSIF TG_OP = 'UPDATE' THEN NEW."updatedAt" = NOW(); NEW."createdAt" = OLD."createdAt"; END IF;
  RETURN NEW;
END; $$ LANGUAGE plpgsql;
CREATE TRIGGER mastra_ai_spans_timestamps BEFORE INSERT OR UPDATE ON {schema}.mastra_ai_spans
  FOR EACH ROW EXECUTE FUNCTION {schema}.trigger_set_timestamps();
"""

PG_CATALOG = """
SELECT 'column', column_name || ' ' || data_type FROM information_schema.columns
 WHERE table_schema = %(schema)s AND table_name = 'mastra_ai_spans'
UNION ALL SELECT 'constraint', conname || ' ' || contype::text FROM pg_constraint
 WHERE conrelid = to_regclass(%(table)s)
UNION ALL SELECT 'index', indexname::text || ' ' || indexdef FROM pg_indexes
 WHERE schemaname = %(schema)s AND tablename = 'mastra_ai_spans'
UNION ALL SELECT 'trigger', tgname::text FROM pg_trigger WHERE tgrelid = to_regclass(%(table)s) AND NOT tgisinternal
ORDER BY 1, 2
"""


def pg_catalog(connection, schema: str) -> list:
    with connection.cursor() as cursor:
        cursor.execute(PG_CATALOG, {"schema": schema, "table": f"{schema}.mastra_ai_spans"})
        return cursor.fetchall()


@pytest.mark.backends("postgres")
def test_postgres_database_laid_out_by_mastra(postgres_url):
    """57 (PostgreSQL) and 58."""
    import psycopg2

    schema = f"mastra_{uuid.uuid4().hex[:8]}"
    connection = psycopg2.connect(postgres_url)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(MASTRA_PG_DDL.format(schema=schema))
            for index in POSTGRES_INDEXES:  # the rest of §4.2's indexes, as Mastra names them
                using = f" USING {index.method}" if index.method else ""
                where = f" WHERE {index.where}" if index.where else ""
                cursor.execute(f'CREATE INDEX IF NOT EXISTS "{schema}_{index.name}" ON {schema}.mastra_ai_spans'
                               f"{using} ({index.columns}){where}")
            cursor.execute(f'INSERT INTO {schema}.mastra_ai_spans ("traceId", "spanId", name, "spanType", "isEvent", '
                           '"startedAt", "startedAtZ", metadata, "endedAt", "createdAt") '
                           "VALUES ('mt', 'ms', 'From Mastra', 'agent_run', false, '2024-01-01 00:00:00', "
                           "'2024-01-01 00:00:00+00', '{\"k\": \"v\"}', NULL, now())")
        before = pg_catalog(connection, schema)
        repository = ObservabilityPG(connection_string=postgres_url, schema_name=schema)
        try:
            repository.init()
            after = pg_catalog(connection, schema)
            added = {f"{schema}_{index.name}" for index in POSTGRES_LIST_INDEXES}
            assert [row for row in after if row[1].split(" ")[0] not in added] == before
            assert {row[1].split(" ")[0] for row in after if row not in before} == added
            stored = repository.get_span(trace_id="mt", span_id="ms")
            assert stored["ended_at"] is None and stored["metadata"] == {"k": "v"}
            assert stored["started_at"] == BASE
            assert listing(repository, status="running") == ["mt"]
            assert listing(repository, metadata={"k": "v"}) == ["mt"]
        finally:
            repository.close()
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP SCHEMA {schema} CASCADE")
        connection.close()


@pytest.fixture
def pg_schema(postgres_url):
    """``(connection, schema)``: a new PostgreSQL schema and an autocommit psycopg2 connection to
    it, dropped afterwards."""
    import psycopg2

    schema = f"s_{uuid.uuid4().hex[:8]}"
    connection = psycopg2.connect(postgres_url)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE SCHEMA {schema}")
    yield connection, schema
    with connection.cursor() as cursor:
        cursor.execute(f"DROP SCHEMA {schema} CASCADE")
    connection.close()


@pytest.mark.backends("postgres")
def test_postgres_layout_and_old_table(postgres_url, pg_schema):
    """§4.2 names and §4.4: a table without primary key gets it, unless pairs are duplicated."""
    connection, schema = pg_schema
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE TABLE {schema}.mastra_ai_spans ("traceId" text NOT NULL, "spanId" text NOT NULL, '
                       'name text NOT NULL, "spanType" text NOT NULL, "isEvent" boolean NOT NULL, '
                       '"startedAt" timestamp NOT NULL, "createdAt" timestamp NOT NULL)')
        cursor.execute(f"INSERT INTO {schema}.mastra_ai_spans VALUES "
                       "('t', 's', 'n', 'agent_run', false, now(), now()), "
                       "('t', 's', 'n', 'agent_run', false, now(), now())")
    before = pg_catalog(connection, schema)
    repository = ObservabilityPG(connection_string=postgres_url, schema_name=schema)
    try:
        with pytest.raises(ConflictError) as info:
            repository.init()
        assert info.value.id == "STORAGE_PG_INIT_CONFLICT"
        assert info.value.details == {"code": "DUPLICATE_SPANS", "duplicates": 1}
        assert pg_catalog(connection, schema) == before
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {schema}.mastra_ai_spans WHERE ctid NOT IN "
                           f"(SELECT min(ctid) FROM {schema}.mastra_ai_spans)")
        repository.init()
        catalog = pg_catalog(connection, schema)
        assert ("constraint", f"{schema}_mastra_ai_spans_traceid_spanid_pk p") in catalog
        assert ("trigger", "mastra_ai_spans_timestamps") in catalog
        names = {row[1].split(" ")[0] for row in catalog if row[0] == "index"}
        assert f"{schema}_mastra_ai_spans_root_spans_idx" in names
        assert f"{schema}_mastra_ai_spans_tags_gin_idx" in names
        assert ("column", "endedAtZ timestamp with time zone") in catalog
        repository.create_span(span=span(trace_id="t", span_id="s", name="upserted"))
        assert repository.get_trace(trace_id="t")["spans"][0]["name"] == "upserted"
    finally:
        repository.close()


@pytest.mark.backends("sqlite", "postgres")  # their query plans
def test_sql_query_plans_use_the_indexes(listed, backend):
    """§4.1/§4.2: trace reads use the trace index, root lists the partial root index."""
    Span = listed.models.span
    database = listed.backend.database
    trace_query = listed.backend.select(Span).where(Span.trace_id == "t1").order_by(Span.started_at, Span.span_id)
    root_query = (listed.backend.select(Span).where(Span.parent_span_id.is_null())
                  .order_by(Span.started_at.desc(), Span.trace_id, Span.span_id).limit(10))
    explain = "EXPLAIN QUERY PLAN " if backend == "sqlite" else "EXPLAIN "
    with listed.backend.connection():
        if backend == "postgres":
            database.execute_sql("SET enable_seqscan = off")
        plans = []
        for query in (trace_query, root_query):
            sql, params = query.sql()
            plans.append(" ".join(str(row) for row in database.execute_sql(explain + sql, params).fetchall()))
        if backend == "postgres":
            database.execute_sql("RESET enable_seqscan")
    trace_index = "mastra_ai_spans_trace_started_at_idx" if backend == "sqlite" else "mastra_ai_spans_traceid_startedat_idx"
    root_index = "mastra_ai_spans_roots_started_at_idx" if backend == "sqlite" else "mastra_ai_spans_root_spans_idx"
    assert trace_index in plans[0]
    assert root_index in plans[1]


@pytest.mark.backends("postgres")
@pytest.mark.parametrize("filters, index", [
    ({"environment": "production"}, "mastra_ai_spans_roots_filters_idx"),
    ({"tags": ["important"]}, "mastra_ai_spans_roots_filters_idx"),
    ({"status": "error"}, "mastra_ai_spans_roots_error_idx"),
])
def test_postgres_filtered_counts_are_index_only_scans(listed, caplog, filters, index):
    """§3.8 at scale: the total of a filtered list reads a partial index of the roots, not the table."""
    with caplog.at_level(logging.DEBUG, logger="peewee"):
        listed.list_traces(filters=filters)
    counts = [record.msg for record in caplog.records
              if isinstance(record.msg, tuple) and record.msg[0].startswith("SELECT COUNT")]
    assert counts
    database = listed.backend.database
    with listed.backend.connection():
        # Index-only scans need the visibility map that VACUUM sets (autovacuum may not have run
        # yet).  On this small table the planner may also prefer another index by cost, so only
        # the plans that read no table pages are left to it: the count must be servable by them.
        database.execute_sql("VACUUM ANALYZE mastra_ai_spans")
        database.execute_sql("SET enable_seqscan = off")
        database.execute_sql("SET enable_bitmapscan = off")
        try:
            sql, params = counts[0]
            plan = " ".join(row[0] for row in database.execute_sql("EXPLAIN " + sql, params).fetchall())
        finally:
            database.execute_sql("RESET enable_seqscan")
            database.execute_sql("RESET enable_bitmapscan")
    assert f"Index Only Scan using {index}" in plan


# --------------------------------------------------------------------------- current ClickHouse

@CURRENT_CLICKHOUSE
def test_current_clickhouse_layout_and_ttl(observability, backend_url):
    """55/56 on a current server: DateTime64 and Bool columns; ``ttl_days=30`` shows in SHOW CREATE
    TABLE and a second ``init()`` issues no ALTER."""
    columns = observability.backend.server_features.columns["mastra_ai_spans"]
    assert columns["startedAt"] == "DateTime64(3, 'UTC')" and columns["endedAt"] == "Nullable(DateTime64(3, 'UTC'))"
    assert columns["isEvent"] == "Bool" and columns["updatedAt"] == "DateTime64(3, 'UTC')"
    assert observability.backend.server_features.json_functions
    repository = open_repository(backend_url, ttl_days=30)
    try:
        repository.init()
        create = clickhouse_sql(repository, "SHOW CREATE TABLE mastra_ai_spans")[0][0]
        assert "TTL" in create and ("toIntervalDay(30)" in create or "INTERVAL 30 DAY" in create)
        statements = []
        with repository.backend.connection():
            client = repository.backend.database.connection().client
        original = client.execute

        def recording(sql, *args, **kwargs):
            statements.append(sql)
            return original(sql, *args, **kwargs)

        client.execute = recording
        try:
            repository.backend._initialized.discard("observability")
            repository.init()
        finally:
            del client.execute
        assert statements and not [sql for sql in statements if sql.lstrip().upper().startswith("ALTER")]
    finally:
        clickhouse_sql(repository, "ALTER TABLE mastra_ai_spans REMOVE TTL")
        repository.close()


MASTRA_CLICKHOUSE_DDL = (
    "CREATE TABLE mastra_ai_spans (traceId String, spanId String, parentSpanId Nullable(String), name String, "
    "spanType String, isEvent Bool, startedAt DateTime64(3), endedAt Nullable(DateTime64(3)), "
    "entityType Nullable(String), entityId Nullable(String), entityName Nullable(String), "
    "userId Nullable(String), organizationId Nullable(String), resourceId Nullable(String), "
    "environment Nullable(String), metadata Nullable(String) DEFAULT '{}', tags Nullable(String), "
    "attributes Nullable(String), input Nullable(String), output Nullable(String), error Nullable(String), "
    "createdAt DateTime64(3), updatedAt DateTime64(3)) ENGINE = ReplacingMergeTree() ORDER BY (traceId, spanId)")


@CURRENT_CLICKHOUSE
def test_current_clickhouse_table_laid_out_by_mastra(observability, caplog):
    """57 on a current server: Mastra's table (no version columns, zone-less DateTime64) is used
    with one warning; its rows, with the placeholders other clients write, read back."""
    # Recent rows, in case the table has a TTL.
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)

    def text(moment: datetime) -> str:
        return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]

    clickhouse_sql(observability, "DROP TABLE mastra_ai_spans")
    try:
        clickhouse_sql(observability, MASTRA_CLICKHOUSE_DDL)
        clickhouse_sql(
            observability,
            "INSERT INTO mastra_ai_spans (traceId, spanId, parentSpanId, name, spanType, isEvent, startedAt, "
            "endedAt, metadata, tags, error, createdAt, updatedAt) VALUES "
            f"('mt', 'root', '', 'From Mastra', 'agent_run', false, '{text(base)}', NULL, "
            f"'{{\"k\":\"v\"}}', '[\"x\"]', '_null_', '{text(base + timedelta(seconds=1))}', "
            f"'{text(base + timedelta(seconds=1))}'), "
            f"('mt', 'child', 'root', 'step', 'tool_call', false, '{text(base + timedelta(milliseconds=500))}', "
            f"'{text(base + timedelta(milliseconds=700))}', '_null_', NULL, '', "
            f"'{text(base + timedelta(seconds=1))}', '{text(base + timedelta(seconds=1))}')")
        observability.backend._initialized.discard("observability")
        with caplog.at_level(logging.WARNING, logger="composite_store.clickhouse"):
            observability.init()
        assert [r for r in caplog.records if "mastra_ai_spans" in r.getMessage() and "_version" in r.getMessage()]
        columns = observability.backend.server_features.columns["mastra_ai_spans"]
        assert "_version" in columns and "_deleted" in columns and columns["startedAt"] == "DateTime64(3)"
        root = observability.get_root_span(trace_id="mt")
        assert root["span_id"] == "root" and root["parent_span_id"] is None and root["error"] is None
        assert root["metadata"] == {"k": "v"} and root["tags"] == ["x"] and root["started_at"] == base
        spans = observability.get_trace(trace_id="mt")["spans"]
        assert [s["span_id"] for s in spans] == ["root", "child"]
        assert spans[1]["metadata"] is None and spans[1]["error"] is None
        assert spans[1]["ended_at"] == base + timedelta(milliseconds=700)
        assert listing(observability, status="running") == ["mt"] and listing(observability, has_child_error=True) == []
        observability.update_span(trace_id="mt", span_id="root", updates={"ended_at": base + timedelta(seconds=2)})
        assert listing(observability, status="success") == ["mt"]
        assert observability.get_span(trace_id="mt", span_id="root")["created_at"] == base + timedelta(seconds=1)
    finally:
        clickhouse_sql(observability, "DROP TABLE IF EXISTS mastra_ai_spans")
        observability.backend._initialized.discard("observability")
        observability.init()


# --------------------------------------------------------------------------- randomized round trip

def test_random_batches_round_trip(observability):
    """Random spans (mixed fields, duplicate pairs) read back exactly as the last write of each pair."""
    rng = random.Random(7)
    expected = {}
    records = []
    for index in range(300):
        trace = f"rt-{rng.randrange(20)}"
        record = span(trace_id=trace, span_id=f"s-{rng.randrange(40)}", name=f"n{index}",
                      parent_span_id=rng.choice([None, "p"]), ended_at=rng.choice([None, at(rng.randrange(9))]),
                      metadata=rng.choice([None, {"i": index, "nested": {"i": [index]}}]),
                      tags=rng.choice([None, ["a"], ["a", "b"]]), input=rng.choice(["x", 1, None, [1, {"y": 2}]]))
        records.append(record)
        expected[(record["trace_id"], record["span_id"])] = record
    observability.batch_create_spans(records=records)
    for (trace, span_id), record in expected.items():
        stored = observability.get_span(trace_id=trace, span_id=span_id)
        assert {key: stored[key] for key in record} == record
    assert sum(len(observability.get_trace(trace_id=t)["spans"]) for t in {k[0] for k in expected}) == len(expected)
    roots = [r for r in expected.values() if r["parent_span_id"] is None]
    assert observability.list_traces(per_page=0).total == len(roots)


def test_stored_json_is_compact_text(observability, backend, backend_url):
    """§2.6: compact JSON; on ClickHouse top-level scalars of metadata and scope come first."""
    root = span(trace_id="json-t", metadata={"nested": {"a": 1}, "z": "é"}, scope={"deps": [1], "v": "1"})
    observability.create_span(span=root)
    if backend == "sqlite":
        path = backend_url[len("sqlite:///"):]
        with sqlite3.connect(path) as connection:
            metadata, scope = connection.execute(
                "SELECT metadata, scope FROM mastra_ai_spans WHERE \"traceId\" = 'json-t'").fetchone()
        assert metadata == '{"nested":{"a":1},"z":"é"}' and scope == '{"deps":[1],"v":"1"}'
    elif MATRIX[backend].family == "clickhouse":
        metadata, scope = clickhouse_sql(
            observability, "SELECT metadata, scope FROM mastra_ai_spans WHERE traceId = 'json-t'")[0]
        assert metadata == '{"z":"é","nested":{"a":1}}' and scope == '{"v":"1","deps":[1]}'
    assert json_loads(SpanSchema().dumps(root))["metadata"] == root["metadata"]


# --------------------------------------------------------------------------- Mastra 1.71 reads (fidelity-1.71 §2)

LIGHT_KEYS = ["trace_id", "span_id", "parent_span_id", "name", "span_type", "is_event", "started_at", "ended_at",
              "error", "entity_type", "entity_id", "entity_name", "created_at", "updated_at"]


def selects(caplog) -> list[str]:
    """The SELECT statements peewee logged."""
    return [record.msg[0] for record in caplog.records
            if isinstance(record.msg, tuple) and record.msg[0].lstrip().upper().startswith("SELECT")]


@pytest.fixture
def tree(observability):
    """§2.3's 7-span tree: r → a, b; a → a1, a2; a1 → a1x; b → b1, started in that order."""
    parents = {"r": None, "a": "r", "b": "r", "a1": "a", "a2": "a", "a1x": "a1", "b1": "b"}
    records = [span(trace_id="tree", span_id=name, parent_span_id=parent, name=name, started_at=at(index),
                    span_type="agent_run" if parent is None else "tool_call", input={"i": index})
               for index, (name, parent) in enumerate(parents.items())]
    observability.batch_create_spans(records=records)
    return observability


def span_ids(result) -> list[str]:
    return [record["span_id"] for record in result["spans"]]


def test_get_structure_light_spans(tree):
    """§2.1: the trace's spans in get_trace order, each exactly the 14 light keys."""
    structure = tree.get_structure(trace_id="tree")
    assert structure["trace_id"] == "tree"
    assert span_ids(structure) == span_ids(tree.get_trace(trace_id="tree"))
    assert all(list(light) == LIGHT_KEYS for light in structure["spans"])
    full = {record["span_id"]: record for record in tree.get_trace(trace_id="tree")["spans"]}
    assert all(light == {key: full[light["span_id"]][key] for key in LIGHT_KEYS} for light in structure["spans"])
    assert tree.get_trace_light(trace_id="tree") == structure
    assert tree.get_structure(trace_id="nope") is None


def test_get_structure_errors_and_ids(observability, backend):
    """§2.1: ids are checked; the deprecated name has its own operation id."""
    root = span(error={"message": "boom"})
    observability.create_span(span=root)
    assert observability.get_structure(trace_id=root["trace_id"])["spans"][0]["error"] == {"message": "boom"}
    for name in ("get_structure", "get_trace_light"):
        with pytest.raises(ValidationError) as info:
            getattr(observability, name)(trace_id="")
        assert info.value.id == error_id(backend, name.upper(), "INVALID_INPUT")
        assert info.value.fields == {"trace_id": ["trace_id must be a non-empty string"]}


def test_get_spans(tree, backend):
    """§2.2: the listed spans that exist, full, each once, by start; unknown trace → no spans."""
    result = tree.get_spans(trace_id="tree", span_ids=["a2", "nope", "a", "a2"])
    assert result["trace_id"] == "tree" and span_ids(result) == ["a", "a2"]
    assert all(set(record) == set(SPAN_KEYS) for record in result["spans"])
    assert result["spans"][0]["input"] == {"i": 1}
    assert tree.get_spans(trace_id="zz", span_ids=["a"]) == {"trace_id": "zz", "spans": []}
    for bad in ([], "a", [""], [1], None):
        with pytest.raises(ValidationError) as info:
            tree.get_spans(trace_id="tree", span_ids=bad)
        assert info.value.id == error_id(backend, "GET_SPANS", "INVALID_INPUT")
        assert info.value.fields == {"span_ids": ["span_ids must be a non-empty list of non-empty strings"]}


def test_get_spans_of_many_ids(observability):
    """§2.2: long lists are chunked."""
    trace = [span(trace_id="many", span_id=f"s{index:04}", started_at=at(index)) for index in range(1200)]
    observability.batch_create_spans(records=trace)
    ids = [record["span_id"] for record in trace]
    assert span_ids(observability.get_spans(trace_id="many", span_ids=ids[::-1])) == ids


def test_get_branch(tree, backend):
    """§2.3: the anchor first, then its descendants by start, down to depth levels."""
    assert span_ids(tree.get_branch(trace_id="tree", span_id="a")) == ["a", "a1", "a2", "a1x"]
    assert span_ids(tree.get_branch(trace_id="tree", span_id="a", depth=0)) == ["a"]
    assert span_ids(tree.get_branch(trace_id="tree", span_id="a", depth=1)) == ["a", "a1", "a2"]
    assert span_ids(tree.get_branch(trace_id="tree", span_id="r")) == ["r", "a", "b", "a1", "a2", "a1x", "b1"]
    branch = tree.get_branch(trace_id="tree", span_id="b")
    assert branch["trace_id"] == "tree" and set(branch["spans"][0]) == set(SPAN_KEYS)
    assert tree.get_branch(trace_id="tree", span_id="nope") is None
    assert tree.get_branch(trace_id="nope", span_id="a") is None
    for depth in (-1, True, 1.5):
        with pytest.raises(ValidationError) as info:
            tree.get_branch(trace_id="tree", span_id="a", depth=depth)
        assert info.value.id == error_id(backend, "GET_BRANCH", "INVALID_INPUT")
        assert info.value.fields == {"depth": ["depth must be an integer >= 0"]}


def test_get_branch_cuts_a_parent_cycle(observability):
    """§2.3: a parent cycle ends the walk; the anchor never reappears."""
    observability.batch_create_spans(records=[
        span(trace_id="cyc", span_id="x", parent_span_id="y", started_at=at(0)),
        span(trace_id="cyc", span_id="y", parent_span_id="x", started_at=at(1))])
    assert span_ids(observability.get_branch(trace_id="cyc", span_id="x")) == ["x", "y"]


def test_list_traces_light(listed):
    """§2.4: same order and page info as list_traces; 17 keys; status, metadata, input_preview."""
    full, light = listed.list_traces(per_page=3), listed.list_traces_light(per_page=3)
    assert trace_ids(light) == trace_ids(full) and page_info(light) == page_info(full)
    everything = listed.list_traces_light(per_page=False)
    t1 = everything.items[-1]
    assert list(t1) == [*LIGHT_KEYS, "status", "metadata", "input_preview"]
    assert t1["status"] == "success" and t1["metadata"] == {"priority": "high", "tier": 2, "beta": True}
    assert t1["input_preview"] == '{"q":"in"}'
    assert [row["status"] for row in everything.items] == ["success", "running", "error", "success"]
    for filters in ({"status": "error"}, {"has_child_error": True}, {"metadata": {"priority": "high"}},
                    {"tags": ["important"]}, {"environment": "production"}):
        assert trace_ids(listed.list_traces_light(filters=filters)) == trace_ids(listed.list_traces(filters=filters))
    with pytest.raises(ValidationError):
        listed.list_traces_light(filters={"nope": 1})


def test_list_traces_light_input_preview(observability):
    """§2.4: the preview of a root's input (observability-vnext.md §2.1's algorithm)."""
    inputs = {"chat": {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                                    {"role": "user", "content": [{"type": "text", "text": "and"}, "more"]}]},
              "long": "x" * 150, "blank": "   ", "none": None}
    observability.batch_create_spans(records=[span(trace_id=name, input=value) for name, value in inputs.items()])
    previews = {row["trace_id"]: row["input_preview"] for row in observability.list_traces_light().items}
    assert previews == {"chat": "hi | and more", "long": "x" * 100 + "…", "blank": None, "none": None}


@pytest.mark.backends("sqlite", "postgres")
def test_light_reads_select_only_their_columns(listed, caplog):
    """§2.1/§2.4: no payload column is read by the light reads (``input`` only for the preview)."""
    with caplog.at_level(logging.DEBUG, logger="peewee"):
        listed.get_structure(trace_id="t1")
    structure_sql = selects(caplog)
    assert structure_sql and not any(f'"{column}"' in sql for sql in structure_sql
                                     for column in ("input", "output", "metadata", "attributes", "tags", "links"))
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="peewee"):
        listed.list_traces_light(filters={"environment": "production"})
        listed.list_traces_light(filters={"tags": ["important"]})
    list_sql = [sql for sql in selects(caplog) if "COUNT" not in sql.upper()]
    assert len(list_sql) == 2 and all('"input"' in sql and '"output"' not in sql and '"attributes"' not in sql
                                      for sql in list_sql)


@pytest.fixture
def branches(observability):
    """§2.5: r(agent_run) → m(model_step) → t1, t2 (tool_call); w, the root of a workflow trace."""
    r = span(trace_id="br", span_id="r", span_type="agent_run", entity_id="agent-1", started_at=at(0), ended_at=at(9))
    m = child(r, span_id="m", span_type="model_step", started_at=at(1))
    t1 = child(m, span_id="t1", span_type="tool_call", entity_type="tool", entity_id="tool-x", started_at=at(2),
               error={"message": "tool failed"})
    t2 = child(m, span_id="t2", span_type="tool_call", entity_type="tool", entity_id="tool-y", started_at=at(3))
    w = span(trace_id="wf", span_id="w", span_type="workflow_run", entity_type="workflow_run", started_at=at(1.5))
    observability.batch_create_spans(records=[r, m, t1, t2, w])
    return observability


def test_list_branches(branches, backend):
    """§2.5: every anchor span, root or nested, with its own status; filters on the anchor."""
    page = branches.list_branches()
    assert [row["span_id"] for row in page.items] == ["t2", "t1", "w", "r"] and page_info(page) == (4, 0, 10, False)
    assert all(set(row) == {*SPAN_KEYS, "status"} for row in page.items)
    statuses = {row["span_id"]: row["status"] for row in page.items}
    assert statuses["t1"] == "error" and statuses["r"] == "success"

    def ids(**filters):
        return [row["span_id"] for row in branches.list_branches(filters=filters, per_page=False).items]

    assert ids(span_type="tool_call") == ["t2", "t1"]
    assert ids(span_type="model_step") == []
    assert ids(entity_id="tool-x") == ["t1"]
    assert ids(status="error") == ["t1"]
    assert ids(trace_id="br") == ["t2", "t1", "r"]
    oldest_first = branches.list_branches(order_by={"field": "started_at", "direction": "ASC"})
    assert [row["span_id"] for row in oldest_first.items] == ["r", "w", "t1", "t2"]
    assert [row["span_id"] for row in branches.list_branches(per_page=2, page=1).items] == ["w", "r"]
    with pytest.raises(ValidationError) as info:
        branches.list_branches(filters={"has_child_error": True})
    assert info.value.id == error_id(backend, "LIST_BRANCHES", "INVALID_INPUT")
    assert info.value.fields == {"filters.has_child_error": ["Unknown field."]}
    with pytest.raises(ValidationError):
        branches.list_branches(filters={"span_type": "robot"})


# --------------------------------------------------------------------------- migrate_spans (fidelity-1.71 §2.6)

OLD_SPAN_ROWS = [  # (traceId, spanId, name, endedAt, updatedAt): the ended row of (t, s) is the one kept
    ("t", "s", "running", None, "2024-01-01T00:00:05.000Z"),
    ("t", "s", "ended", "2024-01-01T00:00:01.000Z", "2024-01-01T00:00:01.000Z"),
    ("t", "other", "single", None, "2024-01-01T00:00:01.000Z"),
]


@pytest.mark.backends("sqlite")
def test_sqlite_migrate_spans(tmp_path):
    """§2.6: an older table without the key → status, migrate (the ended row kept), init passes."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as connection:
        connection.execute(MASTRA_SQLITE_DDL[0].replace(', UNIQUE ("spanId", "traceId")', ""))
        connection.executemany('INSERT INTO mastra_ai_spans ("traceId", "spanId", "name", "spanType", "isEvent", '
                               '"startedAt", "endedAt", "createdAt", "updatedAt") VALUES (?, ?, ?, \'agent_run\', 0, '
                               "'2024-01-01T00:00:00.000Z', ?, '2024-01-01T00:00:00.000Z', ?)", OLD_SPAN_ROWS)
    repository = ObservabilitySQLite(url=f"sqlite:///{path}")
    try:
        with pytest.raises(ConflictError, match=r"migrate_spans\(\) keeps one row per span"):
            repository.init()
        assert repository.check_spans_migration_status() == {
            "needs_migration": True, "has_duplicates": True, "duplicate_count": 1, "constraint_exists": False,
            "table_name": "mastra_ai_spans"}
        assert repository.migrate_spans() == {
            "success": True, "already_migrated": False, "duplicates_removed": 1,
            "message": "Migration complete. Removed duplicates and added unique index to mastra_ai_spans."}
        repository.init()
        assert [record["name"] for record in repository.get_trace(trace_id="t")["spans"]] == ["single", "ended"]
        assert repository.check_spans_migration_status()["constraint_exists"] is True
        assert repository.migrate_spans() == {
            "success": True, "already_migrated": True, "duplicates_removed": 0,
            "message": "Migration already complete. Unique index exists on mastra_ai_spans."}
    finally:
        repository.close()


@pytest.mark.backends("postgres")
def test_postgres_migrate_spans(postgres_url, pg_schema):
    """§2.6 on PostgreSQL: schema-qualified table name, PRIMARY KEY constraint, ctid tie-break."""
    connection, schema = pg_schema
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE TABLE {schema}.mastra_ai_spans ("traceId" text NOT NULL, "spanId" text NOT NULL, '
                       'name text NOT NULL, "spanType" text NOT NULL, "isEvent" boolean NOT NULL, '
                       '"startedAt" timestamp NOT NULL, "endedAt" timestamp, "createdAt" timestamp NOT NULL, '
                       '"updatedAt" timestamp)')
        cursor.executemany(f"INSERT INTO {schema}.mastra_ai_spans VALUES (%s, %s, %s, 'agent_run', false, "
                           "'2024-01-01', %s, '2024-01-01', %s)", OLD_SPAN_ROWS)
    repository = ObservabilityPG(connection_string=postgres_url, schema_name=schema)
    try:
        table = f'"{schema}"."mastra_ai_spans"'
        assert repository.check_spans_migration_status() == {
            "needs_migration": True, "has_duplicates": True, "duplicate_count": 1, "constraint_exists": False,
            "table_name": table}
        assert repository.migrate_spans() == {
            "success": True, "already_migrated": False, "duplicates_removed": 1,
            "message": f"Migration complete. Removed duplicates and added PRIMARY KEY constraint to {table}."}
        repository.init()
        assert [record["name"] for record in repository.get_trace(trace_id="t")["spans"]] == ["single", "ended"]
        assert repository.migrate_spans()["message"] == \
            f"Migration already complete. PRIMARY KEY constraint exists on {table}."
    finally:
        repository.close()


def test_migration_status_of_a_keyed_table(observability):
    """§2.6: a table init() created has its key on every backend (ClickHouse: its sorting key)."""
    status = observability.check_spans_migration_status()
    assert {key: status[key] for key in ("needs_migration", "has_duplicates", "duplicate_count",
                                         "constraint_exists")} == {
        "needs_migration": False, "has_duplicates": False, "duplicate_count": 0, "constraint_exists": True}
    assert status["table_name"].endswith("mastra_ai_spans")
    result = observability.migrate_spans()
    assert result["success"] is True and result["already_migrated"] is True and result["duplicates_removed"] == 0


@CLICKHOUSE_ONLY
@pytest.mark.requires(cluster=False)  # one server's layout (the cluster's: tests/test_cluster.py)
def test_clickhouse_migrate_spans_with_another_sorting_key(observability, backend_url):
    """§2.6: a ClickHouse table sorted by another key needs migration that migrate_spans refuses."""
    name = f"mig_{uuid.uuid4().hex[:8]}"
    clickhouse_sql(observability, f"CREATE DATABASE {name}")
    clickhouse_sql(observability, f"CREATE TABLE {name}.mastra_ai_spans (traceId String, spanId String, "
                                  "createdAt DateTime) ENGINE = MergeTree() ORDER BY (createdAt, traceId)")
    repository = open_repository(database_url(backend_url, name))
    try:
        status = repository.check_spans_migration_status()
        assert status["needs_migration"] is True and status["constraint_exists"] is False
        with pytest.raises(StorageError) as info:
            repository.migrate_spans()
        assert info.value.id == "STORAGE_CLICKHOUSE_MIGRATE_SPANS_NOT_SUPPORTED"
    finally:
        repository.close()
        clickhouse_sql(observability, f"DROP DATABASE {name}")
