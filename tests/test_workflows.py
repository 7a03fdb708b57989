"""Workflows domain conformance suite (workflows.md §6), run on every backend.

Each test runs on every default backend of the matrix in ``tests/conftest.py`` (SQLite,
PostgreSQL, the session's ClickHouse server — Debian's 18.16 here — and a current ClickHouse,
scenario 44, in-process when no server URL is given) unless its markers narrow that.  Each test
names the spec scenario it covers; the headings follow §6.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import marshmallow
import pytest

from composite_store import UNSET, ConflictError, ValidationError
from composite_store.jsonb import encode_jsonb
from composite_store.schemas import WorkflowRunSchema
from composite_store.values import format_iso, utc_now
from tests.conftest import MATRIX, clickhouse_client

UTC = timezone.utc


def sample_snapshot(status: str, run_id: str | None = None, step: str | None = None) -> dict:
    """The spec's sample snapshot for status ``status`` (§6)."""
    run_id = run_id or f"run-{uuid.uuid4()}"
    step = step or f"step-{uuid.uuid4()}"
    t = int(time.time() * 1000)
    return {"runId": run_id, "status": status, "value": {}, "result": {"success": True},
            "context": {"input": {}, step: {"status": status, "payload": {}, "startedAt": t, "endedAt": t + 15000}},
            "serializedStepGraph": [], "activePaths": [], "suspendedPaths": {}, "timestamp": t}


def persist(workflows, workflow_name: str = "wf", status: str = "success", **kwargs) -> str:
    """Persist a sample run; returns its run id."""
    run_id = kwargs.pop("run_id", None) or f"run-{uuid.uuid4()}"
    snapshot = kwargs.pop("snapshot", None) or sample_snapshot(status, run_id)
    workflows.persist_workflow_snapshot(workflow_name=workflow_name, run_id=run_id, snapshot=snapshot, **kwargs)
    return run_id


def error_id(backend: str, operation: str, status: str) -> str:
    return f"STORAGE_{MATRIX[backend].error_name}_{operation}_{status}"


def run_ids(page) -> list[str]:
    return [item["run_id"] for item in page.items]


def with_thread(status: str, thread_id: str, *, at_input: bool = False) -> dict:
    """A snapshot whose thread id sits at a step's stream state (with that step's ``status``) or
    at the input's message list."""
    snapshot = {"status": "suspended", "context": {"input": {}}}
    if at_input:
        snapshot["context"]["input"] = {"messageListState": {"memoryInfo": {"threadId": thread_id}}}
    else:
        snapshot["context"]["agent-step"] = {
            "status": status, "payload": {},
            "suspendPayload": {"__streamState": {"messageList": {"memoryInfo": {"threadId": thread_id}}}}}
    return snapshot


# =========================================================================== listing and reading

def test_list_on_empty_table_returns_nothing(workflows):  # scenario 1
    page = workflows.list_workflow_runs()
    assert (page.items, page.total, page.has_more) == ([], 0, False)


def test_list_returns_runs_newest_first_with_decoded_snapshots(workflows):  # scenario 2
    first = persist(workflows, status="success")
    time.sleep(0.01)
    step = f"step-{uuid.uuid4()}"
    second = f"run-{uuid.uuid4()}"
    workflows.persist_workflow_snapshot(workflow_name="wf", run_id=second,
                                        snapshot=sample_snapshot("failed", second, step))
    page = workflows.list_workflow_runs()
    assert run_ids(page) == [second, first]
    assert (page.total, page.has_more, page.page, page.per_page) == (2, False, 0, False)
    assert page.items[0]["snapshot"]["context"][step]["status"] == "failed"


def test_list_filters_by_workflow_name(workflows):  # scenario 3
    wanted = persist(workflows, "wf-a")
    persist(workflows, "wf-b")
    page = workflows.list_workflow_runs(workflow_name="wf-a")
    assert (run_ids(page), page.total) == ([wanted], 1)


def test_list_filters_by_top_level_status_only(workflows):  # scenarios 4 and 43 (nested statuses)
    succeeded = f"run-{uuid.uuid4()}"
    snapshot = sample_snapshot("success", succeeded)
    snapshot["context"]["failed-step"] = {"status": "failed", "payload": {}}
    workflows.persist_workflow_snapshot(workflow_name="wf", run_id=succeeded, snapshot=snapshot)
    failed = persist(workflows, status="failed")
    page = workflows.list_workflow_runs(status="success")
    assert (run_ids(page), page.total) == ([succeeded], 1)
    assert page.items[0]["snapshot"]["status"] == "success"
    page = workflows.list_workflow_runs(status="failed")
    assert (run_ids(page), page.total) == ([failed], 1)


def test_list_date_range_is_inclusive_to_the_millisecond(workflows):  # scenario 5
    now = utc_now()
    yesterday, two_days_ago = now - timedelta(days=1), now - timedelta(days=2)
    oldest = persist(workflows, created_at=two_days_ago)
    middle = persist(workflows, created_at=yesterday)
    newest = persist(workflows, created_at=now)
    page = workflows.list_workflow_runs(from_date=yesterday, to_date=now)
    assert (run_ids(page), page.total) == ([newest, middle], 2)
    one_ms = timedelta(milliseconds=1)
    page = workflows.list_workflow_runs(from_date=yesterday + one_ms, to_date=now - one_ms)
    assert page.items == [] and page.total == 0
    assert run_ids(workflows.list_workflow_runs(to_date=format_iso(two_days_ago))) == [oldest]
    assert workflows.list_workflow_runs(from_date=now, to_date=yesterday).total == 0


def test_list_pagination(workflows):  # scenario 6
    runs = [persist(workflows, created_at=utc_now() - timedelta(seconds=i)) for i in range(3)]
    first = workflows.list_workflow_runs(per_page=2, page=0)
    assert (run_ids(first), first.total, first.has_more) == (runs[:2], 3, True)
    second = workflows.list_workflow_runs(per_page=2, page=1)
    assert (run_ids(second), second.total, second.has_more) == (runs[2:], 3, False)
    none = workflows.list_workflow_runs(per_page=0)
    assert (none.items, none.total, none.has_more) == ([], 3, True)
    past_end = workflows.list_workflow_runs(per_page=2, page=5)
    assert (past_end.items, past_end.total, past_end.has_more) == ([], 3, False)


def test_list_ties_are_ordered_by_workflow_name_then_run_id(workflows):
    created = utc_now()
    for name, run_id in (("wf-b", "run-1"), ("wf-a", "run-2"), ("wf-a", "run-1")):
        persist(workflows, name, run_id=run_id, created_at=created)
    page = workflows.list_workflow_runs()
    assert [(item["workflow_name"], item["run_id"]) for item in page.items] == \
        [("wf-a", "run-1"), ("wf-a", "run-2"), ("wf-b", "run-1")]


def test_list_filters_by_resource_id(workflows):  # scenario 7
    shared = [persist(workflows, resource_id="resource-shared", created_at=utc_now() - timedelta(seconds=i))
              for i in range(2)]
    persist(workflows, resource_id="resource-other")
    page = workflows.list_workflow_runs(resource_id="resource-shared")
    assert (run_ids(page), page.total) == (shared, 2)
    assert workflows.list_workflow_runs(resource_id="resource-unknown").total == 0


def test_list_filters_by_thread_id(workflows):  # scenario 8
    suspended = persist(workflows, snapshot=with_thread("suspended", "t-1"), created_at=utc_now())
    from_input = persist(workflows, snapshot=with_thread("suspended", "t-1", at_input=True),
                         created_at=utc_now() - timedelta(seconds=1))
    persist(workflows, snapshot=with_thread("suspended", "t-2"))
    persist(workflows, snapshot=with_thread("success", "t-1"))
    page = workflows.list_workflow_runs(thread_id="t-1")
    assert (run_ids(page), page.total) == ([suspended, from_input], 2)
    assert workflows.list_workflow_runs(thread_id="t-1", status="running").total == 0


def test_get_run_by_id_and_delete(workflows):  # scenario 9
    run_id = persist(workflows, "wf-get", status="success", resource_id="res-9")
    run = workflows.get_workflow_run_by_id(run_id=run_id)
    assert (run["workflow_name"], run["run_id"], run["resource_id"]) == ("wf-get", run_id, "res-9")
    step = next(key for key in run["snapshot"]["context"] if key != "input")
    assert run["snapshot"]["context"][step]["status"] == "success"
    assert run["created_at"].tzinfo is not None and run["updated_at"].tzinfo is not None
    workflows.delete_workflow_run_by_id(run_id=run_id, workflow_name="wf-get")
    assert workflows.get_workflow_run_by_id(run_id=run_id) is None
    assert workflows.get_workflow_run_by_id(run_id="run-unknown") is None
    workflows.delete_workflow_run_by_id(run_id="run-unknown", workflow_name="wf-get")  # no error


def test_same_run_id_in_two_workflows(workflows):  # scenario 10
    run_id = f"run-{uuid.uuid4()}"
    now = utc_now()
    persist(workflows, "wf-old", run_id=run_id, created_at=now - timedelta(seconds=1))
    persist(workflows, "wf-new", run_id=run_id, created_at=now)
    assert workflows.get_workflow_run_by_id(run_id=run_id)["workflow_name"] == "wf-new"
    assert workflows.get_workflow_run_by_id(run_id=run_id, workflow_name="wf-old")["workflow_name"] == "wf-old"
    workflows.delete_workflow_run_by_id(run_id=run_id, workflow_name="wf-new")
    assert workflows.get_workflow_run_by_id(run_id=run_id)["workflow_name"] == "wf-old"
    assert workflows.get_workflow_run_by_id(run_id=run_id, workflow_name="wf-new") is None


def test_same_created_at_picks_smallest_workflow_name(workflows):
    run_id, now = f"run-{uuid.uuid4()}", utc_now()
    persist(workflows, "wf-b", run_id=run_id, created_at=now)
    persist(workflows, "wf-a", run_id=run_id, created_at=now)
    assert workflows.get_workflow_run_by_id(run_id=run_id)["workflow_name"] == "wf-a"


def test_timestamps_are_aware_utc_to_the_millisecond(workflows):  # scenario 11
    created = datetime(2026, 1, 31, 9, 5, 1, 123456, tzinfo=UTC)
    updated = datetime(2026, 1, 31, 11, 5, 2, 987654, tzinfo=timezone(timedelta(hours=2)))
    run_id = persist(workflows, created_at=created, updated_at=updated)
    expected = (created.replace(microsecond=123000), updated.replace(microsecond=987000).astimezone(UTC))
    for run in (workflows.get_workflow_run_by_id(run_id=run_id), workflows.list_workflow_runs().items[0]):
        assert (run["created_at"], run["updated_at"]) == expected
        assert run["created_at"].utcoffset() == timedelta(0) and run["updated_at"].utcoffset() == timedelta(0)


# =========================================================================== persisting and loading

def test_persist_then_load_returns_equal_snapshot(workflows):  # scenario 12
    run_id = f"run-{uuid.uuid4()}"
    snapshot = sample_snapshot("running", run_id)
    workflows.persist_workflow_snapshot(workflow_name="wf", run_id=run_id, snapshot=snapshot)
    assert workflows.load_workflow_snapshot(workflow_name="wf", run_id=run_id) == snapshot
    minimal = {"status": "running", "context": {}}
    workflows.persist_workflow_snapshot(workflow_name="wf", run_id="minimal", snapshot=minimal)
    assert workflows.load_workflow_snapshot(workflow_name="wf", run_id="minimal") == minimal
    assert workflows.load_workflow_snapshot(workflow_name="wf", run_id="run-unknown") is None
    assert workflows.load_workflow_snapshot(workflow_name="wf-other", run_id=run_id) is None


def test_persist_again_replaces_snapshot_and_keeps_created_at(workflows):  # scenario 13
    run_id = persist(workflows, status="running")
    before = workflows.get_workflow_run_by_id(run_id=run_id)
    time.sleep(0.01)
    replacement = sample_snapshot("success", run_id)
    workflows.persist_workflow_snapshot(workflow_name="wf", run_id=run_id, snapshot=replacement)
    after = workflows.get_workflow_run_by_id(run_id=run_id)
    assert after["snapshot"] == replacement
    assert after["created_at"] == before["created_at"] and after["updated_at"] > before["updated_at"]
    assert workflows.list_workflow_runs().total == 1
    workflows.persist_workflow_snapshot(workflow_name="wf", run_id=run_id, snapshot=replacement)  # idempotent
    assert workflows.list_workflow_runs().total == 1
    assert workflows.load_workflow_snapshot(workflow_name="wf", run_id=run_id) == replacement


def test_snapshot_values_round_trip_exactly(workflows):  # scenario 14
    snapshot = {
        "status": "success",
        "context": {"input": {"nested": [1, [2, {"x": None, "y": [True, False]}], {"deep": {"deeper": []}}]}},
        "floats": [0.1, -2.5, 3.141592653589793, 1e-10, 2.0],
        "integers": [0, -7, 2 ** 53],
        "unicode": "héllo wörld — 日本語 🎉 \u2028",
        "date": "2026-01-31T09:05:01.123Z",
        "json": '{"a": [1, 2], "b": "c"}',
        "quotes": "it's \"quoted\" \\ back\\slash\n\ttab",
        "empty": {"object": {}, "list": [], "string": ""},
    }
    workflows.persist_workflow_snapshot(workflow_name="wf", run_id="exact", snapshot=snapshot)
    loaded = workflows.load_workflow_snapshot(workflow_name="wf", run_id="exact")
    assert loaded == snapshot
    assert isinstance(loaded["floats"][4], float) and isinstance(loaded["integers"][2], int)


def test_resource_id_kept_unless_given(workflows):  # scenario 15
    run_id = persist(workflows, resource_id="res-1")
    persist(workflows, run_id=run_id)
    assert workflows.get_workflow_run_by_id(run_id=run_id)["resource_id"] == "res-1"
    persist(workflows, run_id=run_id, resource_id="res-2")
    assert workflows.get_workflow_run_by_id(run_id=run_id)["resource_id"] == "res-2"
    assert workflows.get_workflow_run_by_id(run_id=persist(workflows))["resource_id"] is None


def test_given_created_at_only_for_new_runs_and_updated_at_always(workflows):  # scenario 16
    created = datetime(2025, 6, 1, 12, 0, 0, 500000, tzinfo=UTC)
    updated = datetime(2025, 6, 2, 12, 0, 0, 250000, tzinfo=UTC)
    run_id = persist(workflows, created_at=created, updated_at=updated)
    run = workflows.get_workflow_run_by_id(run_id=run_id)
    assert (run["created_at"], run["updated_at"]) == (created, updated)
    later = datetime(2025, 7, 1, tzinfo=UTC)
    persist(workflows, run_id=run_id, created_at="2025-07-01T00:00:00Z", updated_at=later)
    run = workflows.get_workflow_run_by_id(run_id=run_id)
    assert (run["created_at"], run["updated_at"]) == (created, later)


def test_loaded_snapshot_is_a_fresh_object(workflows):  # scenario 17
    snapshot = sample_snapshot("running")
    run_id = persist(workflows, snapshot=snapshot)
    loaded = workflows.load_workflow_snapshot(workflow_name="wf", run_id=run_id)
    loaded["status"] = "mutated"
    loaded["context"]["input"]["x"] = 1
    snapshot["status"] = "mutated too"
    again = workflows.load_workflow_snapshot(workflow_name="wf", run_id=run_id)
    assert again["status"] == "running" and again["context"]["input"] == {}


def test_wire_form_of_a_run(workflows):
    run_id = persist(workflows, resource_id="res-w", created_at="2026-01-31T09:05:01.123Z")
    run = workflows.get_workflow_run_by_id(run_id=run_id)
    wire = WorkflowRunSchema().dump(run)
    assert set(wire) == {"workflowName", "runId", "resourceId", "snapshot", "createdAt", "updatedAt"}
    assert (wire["runId"], wire["resourceId"], wire["createdAt"]) == (run_id, "res-w", "2026-01-31T09:05:01.123Z")
    assert WorkflowRunSchema().load(wire) == run
    with pytest.raises(marshmallow.ValidationError) as info:
        WorkflowRunSchema().load({**wire, "colour": "red"})
    assert info.value.messages == {"colour": ["Unknown field."]}


# =========================================================================== atomic updates

def test_update_workflow_results_stores_and_replaces_step_results(workflows):  # scenario 18
    run_id = persist(workflows, status="running")
    r1 = {"status": "success", "payload": {}, "output": {"v": 1}}
    context = workflows.update_workflow_results(workflow_name="wf", run_id=run_id, step_id="step-1", result=r1,
                                                request_context={})
    assert context["step-1"] == r1 and "input" in context
    r1_again = {"status": "success", "payload": {}, "output": {"v": 2}}
    workflows.update_workflow_results(workflow_name="wf", run_id=run_id, step_id="step-1", result=r1_again,
                                      request_context={})
    r2 = {"status": "running", "payload": {"p": 1}}
    context = workflows.update_workflow_results(workflow_name="wf", run_id=run_id, step_id="step-2", result=r2,
                                                request_context={})
    stored = workflows.load_workflow_snapshot(workflow_name="wf", run_id=run_id)["context"]
    assert stored["step-1"] == r1_again and stored["step-2"] == r2 and context == stored


def test_update_workflow_results_creates_a_missing_run(workflows):  # scenario 19
    result = {"status": "success", "payload": {}}
    context = workflows.update_workflow_results(workflow_name="wf", run_id="run-new", step_id="step-1",
                                                result=result)
    assert context == {"step-1": result}
    run = workflows.get_workflow_run_by_id(run_id="run-new", workflow_name="wf")
    assert run["resource_id"] is None and run["created_at"] == run["updated_at"]
    snapshot = run["snapshot"]
    assert (snapshot["status"], snapshot["runId"], snapshot["context"]) == ("pending", "run-new", {"step-1": result})
    assert snapshot["requestContext"] == {} and isinstance(snapshot["timestamp"], int)


def test_request_context_is_merged(workflows):  # scenario 20
    run_id = persist(workflows, status="running")
    for step, extra in (("s1", {"a": 1}), ("s2", {"b": 2})):
        workflows.update_workflow_results(workflow_name="wf", run_id=run_id, step_id=step,
                                          result={"status": "success"}, request_context=extra)
    assert workflows.load_workflow_snapshot(workflow_name="wf", run_id=run_id)["requestContext"] == {"a": 1, "b": 2}


def _merge_outputs(workflows, stored_output, incoming: dict, *, stored_status: str = "running") -> dict:
    """Store a step with ``stored_output``, apply ``incoming`` and return the stored step entry."""
    run_id = f"run-{uuid.uuid4()}"
    snapshot = {"status": "running", "context": {"each": {"status": stored_status, "payload": {"keep": True},
                                                          "output": stored_output}}}
    workflows.persist_workflow_snapshot(workflow_name="wf", run_id=run_id, snapshot=snapshot)
    workflows.update_workflow_results(workflow_name="wf", run_id=run_id, step_id="each", result=incoming)
    return workflows.load_workflow_snapshot(workflow_name="wf", run_id=run_id)["context"]["each"]


def test_list_outputs_merge_slot_by_slot(workflows):  # scenario 21
    entry = _merge_outputs(workflows, ["a", None, None], {"status": "running", "output": [None, "b", None]})
    assert entry == {"status": "running", "payload": {"keep": True}, "output": ["a", "b", None]}
    assert _merge_outputs(workflows, ["a", "b", "c"], {"status": "success", "output": ["x"]})["output"] == \
        ["x", "b", "c"]
    entry = _merge_outputs(workflows, ["a"], {"status": "success", "output": [None, "b"], "endedAt": 5})
    assert entry == {"status": "success", "payload": {"keep": True}, "output": ["a", "b"], "endedAt": 5}


def test_pending_marker_keeps_stored_slots_and_status(workflows):  # scenario 22
    pending = {"__mastra_pending__": True}
    entry = _merge_outputs(workflows, ["a", None], {"status": "suspended", "output": [pending, "z"]})
    assert entry["output"] == ["a", None] and entry["status"] == "running"
    suspended_slot = {"status": "suspended", "suspendPayload": {}}
    entry = _merge_outputs(workflows, [None, suspended_slot, pending, "kept"],
                           {"status": "running", "output": [pending, pending, pending, pending, pending]})
    assert entry["output"] == [None, None, None, "kept", None]


def test_non_list_outputs_replace_the_step_result(workflows):  # scenario 23
    entry = _merge_outputs(workflows, {"a": 1}, {"status": "success", "output": {"b": 2}})
    assert entry == {"status": "success", "output": {"b": 2}}
    entry = _merge_outputs(workflows, ["a"], {"status": "failed", "error": "boom"})
    assert entry == {"status": "failed", "error": "boom"}


def test_update_workflow_state_merges_run_fields(workflows):  # scenario 24
    run_id = persist(workflows, status="running")
    before = workflows.get_workflow_run_by_id(run_id=run_id)
    time.sleep(0.005)
    snapshot = workflows.update_workflow_state(workflow_name="wf", run_id=run_id, status="suspended",
                                               waiting_paths={"s2": [0]})
    assert snapshot["status"] == "suspended" and snapshot["waitingPaths"] == {"s2": [0]}
    assert snapshot["context"] == before["snapshot"]["context"]
    snapshot = workflows.update_workflow_state(workflow_name="wf", run_id=run_id, status="success",
                                               result={"ok": True}, error=None, tracing_context={"traceId": "t"})
    assert snapshot["waitingPaths"] == {"s2": [0]} and snapshot["result"] == {"ok": True}
    assert snapshot["error"] is None and snapshot["tracingContext"] == {"traceId": "t"}
    assert "expectedStatus" not in snapshot
    loaded = workflows.load_workflow_snapshot(workflow_name="wf", run_id=run_id)
    assert loaded == snapshot
    after = workflows.get_workflow_run_by_id(run_id=run_id)
    assert after["created_at"] == before["created_at"] and after["updated_at"] > before["updated_at"]


def test_update_workflow_state_writes_every_run_field(workflows):
    run_id = persist(workflows, status="running")
    snapshot = workflows.update_workflow_state(
        workflow_name="wf", run_id=run_id, status="waiting", suspended_paths={"a": [1, 2]}, waiting_paths=None,
        resume_labels={"approve": {"stepId": "a", "foreachIndex": 0}}, active_paths=[0, 1],
        active_steps_path={"a": [0]}, error={"message": "m", "name": "Error"})
    assert {key: snapshot[key] for key in ("status", "suspendedPaths", "waitingPaths", "resumeLabels",
                                           "activePaths", "activeStepsPath", "error")} == {
        "status": "waiting", "suspendedPaths": {"a": [1, 2]}, "waitingPaths": None,
        "resumeLabels": {"approve": {"stepId": "a", "foreachIndex": 0}}, "activePaths": [0, 1],
        "activeStepsPath": {"a": [0]}, "error": {"message": "m", "name": "Error"}}
    assert snapshot["result"] == {"success": True}  # left UNSET: kept
    assert workflows.update_workflow_state(workflow_name="wf", run_id=run_id, status="x", result=UNSET)["result"] \
        == {"success": True}


def test_update_workflow_state_of_unknown_run_returns_none(workflows):  # scenario 25
    assert workflows.update_workflow_state(workflow_name="wf", run_id="run-unknown", status="success") is None
    assert workflows.get_workflow_run_by_id(run_id="run-unknown") is None


def test_expected_status_guards_the_update(workflows):  # scenario 26
    run_id = persist(workflows, status="suspended")
    before = workflows.load_workflow_snapshot(workflow_name="wf", run_id=run_id)
    assert workflows.update_workflow_state(workflow_name="wf", run_id=run_id, status="running",
                                           expected_status="running") is None
    assert workflows.load_workflow_snapshot(workflow_name="wf", run_id=run_id) == before
    snapshot = workflows.update_workflow_state(workflow_name="wf", run_id=run_id, status="running",
                                               expected_status=["suspended", "waiting"])
    assert snapshot["status"] == "running" and "expectedStatus" not in snapshot
    assert "expectedStatus" not in workflows.load_workflow_snapshot(workflow_name="wf", run_id=run_id)


def test_snapshot_without_context_is_a_conflict(workflows, backend):  # scenario 27
    workflows.persist_workflow_snapshot(workflow_name="wf", run_id="no-context", snapshot={"status": "running"})
    before = workflows.get_workflow_run_by_id(run_id="no-context")
    calls = {
        "UPDATE_WORKFLOW_RESULTS": lambda: workflows.update_workflow_results(
            workflow_name="wf", run_id="no-context", step_id="s", result={"status": "success"}),
        "UPDATE_WORKFLOW_STATE": lambda: workflows.update_workflow_state(
            workflow_name="wf", run_id="no-context", status="success"),
    }
    for operation, call in calls.items():
        with pytest.raises(ConflictError) as info:
            call()
        error = info.value
        assert (error.id, error.category, error.domain) == (error_id(backend, operation, "CONFLICT"), "USER",
                                                            "workflows")
        assert error.details["code"] == "INVALID_SNAPSHOT"
        assert error.message == "Snapshot not found for runId no-context"
    assert workflows.get_workflow_run_by_id(run_id="no-context") == before


def test_supports_concurrent_updates(workflows, backend):  # scenario 28
    assert workflows.supports_concurrent_updates() is MATRIX[backend].transactions


# =========================================================================== concurrency

def _add_steps(workflows, run_id: str, step_numbers: list[int]) -> None:
    """Each number in its own thread: ``update_workflow_results`` of ``step-<n>``, started together."""
    barrier = threading.Barrier(len(step_numbers))

    def add(number: int) -> None:
        barrier.wait()
        workflows.update_workflow_results(workflow_name="wf", run_id=run_id, step_id=f"step-{number}",
                                          result={"status": "success", "output": number},
                                          request_context={f"step{number}": True})

    with ThreadPoolExecutor(len(step_numbers)) as pool:
        list(pool.map(add, step_numbers))  # re-raises any error


def _running_run(workflows) -> str:
    """A persisted run whose context holds only the input."""
    return persist(workflows, snapshot={"status": "running", "context": {"input": {}}})


def _assert_all_steps(workflows, run_id: str, count: int) -> None:
    snapshot = workflows.load_workflow_snapshot(workflow_name="wf", run_id=run_id)
    assert {key for key in snapshot["context"] if key != "input"} == {f"step-{i}" for i in range(count)}
    assert snapshot["requestContext"] == {f"step{i}": True for i in range(count)}


def test_threads_adding_step_results_lose_nothing(workflows):  # scenarios 29 and 34
    run_id = _running_run(workflows)
    _add_steps(workflows, run_id, list(range(8)))
    _assert_all_steps(workflows, run_id, 8)


def test_threads_racing_to_create_a_run_make_one_row(workflows):  # scenario 30
    run_id = f"run-{uuid.uuid4()}"
    _add_steps(workflows, run_id, list(range(8)))
    _assert_all_steps(workflows, run_id, 8)
    assert workflows.list_workflow_runs().total == 1


def add_steps_in_process(url: str, run_id: str, step_numbers: list[int]) -> str | None:
    """Worker of the multi-process test: its own store from ``url``; returns an error or ``None``."""
    from composite_store.composite import store_for_url

    try:
        with store_for_url(url) as store:
            store.init()
            _add_steps(store.get_store("workflows"), run_id, step_numbers)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as text
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.mark.requires(transactions=True)  # ClickHouse's write lock holds within one process only
def test_processes_adding_step_results_lose_nothing(workflows, backend_url):  # scenario 31
    run_id = _running_run(workflows)
    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        errors = pool.starmap(add_steps_in_process, [(backend_url, run_id, [2 * p, 2 * p + 1]) for p in range(4)])
    assert errors == [None] * 4
    _assert_all_steps(workflows, run_id, 8)


def test_concurrent_state_updates_both_survive(workflows):  # scenario 32
    run_id = persist(workflows, status="running")
    barrier = threading.Barrier(2)

    def update(**fields) -> None:
        barrier.wait()
        workflows.update_workflow_state(workflow_name="wf", run_id=run_id, status="running", **fields)

    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(update, waiting_paths={"s2": [0]}), pool.submit(update, result={"ok": True})]
        for future in futures:
            future.result()
    snapshot = workflows.load_workflow_snapshot(workflow_name="wf", run_id=run_id)
    assert snapshot["waitingPaths"] == {"s2": [0]} and snapshot["result"] == {"ok": True}


def test_threads_persisting_many_runs(workflows):  # scenario 33
    def persist_runs(worker: int) -> None:
        for index in range(100):
            run_id = f"run-{worker}-{index}"
            workflows.persist_workflow_snapshot(workflow_name="wf", run_id=run_id,
                                                snapshot=sample_snapshot("success", run_id))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(persist_runs, range(8)))
    page = workflows.list_workflow_runs(per_page=0)
    assert page.total == 800
    assert len(workflows.list_workflow_runs().items) == 800


# =========================================================================== bad input

def test_persist_with_bad_arguments_writes_nothing(workflows, backend):  # scenario 35
    with pytest.raises(ValidationError) as info:
        workflows.persist_workflow_snapshot(workflow_name="", run_id="r", snapshot="x")
    assert set(info.value.fields) == {"workflow_name", "snapshot"}
    assert info.value.id == error_id(backend, "PERSIST_WORKFLOW_SNAPSHOT", "INVALID_INPUT")
    assert info.value.domain == "workflows"
    with pytest.raises(ValidationError) as info:
        workflows.persist_workflow_snapshot(workflow_name="wf", run_id=5, snapshot={}, resource_id="",
                                            created_at="yesterday", updated_at=object())
    assert set(info.value.fields) == {"run_id", "resource_id", "created_at", "updated_at"}
    assert info.value.fields["created_at"] == ["Not a valid datetime."]
    assert workflows.list_workflow_runs().total == 0


def test_persist_of_a_snapshot_that_is_not_json_writes_nothing(workflows):  # scenario 36
    for bad in ({"status": "running", "s": {1, 2}}, {"status": "running", "context": {"x": object()}},
                {"n": float("nan")}, {1: "non-string key"}):
        with pytest.raises(ValidationError) as info:
            workflows.persist_workflow_snapshot(workflow_name="wf", run_id="r", snapshot=bad)
        assert all(path == "snapshot" or path.startswith("snapshot.") for path in info.value.fields), info.value
        assert info.value.fields
    with pytest.raises(ValidationError) as info:
        workflows.persist_workflow_snapshot(workflow_name="wf", run_id="r", snapshot={"s": {1, 2}})
    assert info.value.fields == {"snapshot.s": ["Not JSON-serializable."]}
    assert workflows.list_workflow_runs().total == 0


def test_updates_with_bad_arguments_write_nothing(workflows, backend):  # scenario 37
    run_id = persist(workflows, status="running")
    before = workflows.get_workflow_run_by_id(run_id=run_id)
    with pytest.raises(ValidationError) as info:
        workflows.update_workflow_results(workflow_name="wf", run_id=run_id, step_id="", result={})
    assert set(info.value.fields) == {"step_id"}
    with pytest.raises(ValidationError) as info:
        workflows.update_workflow_results(workflow_name="wf", run_id=run_id, step_id="s", result=5,
                                          request_context=[1])
    assert set(info.value.fields) == {"result", "request_context"}
    assert info.value.id == error_id(backend, "UPDATE_WORKFLOW_RESULTS", "INVALID_INPUT")
    with pytest.raises(TypeError):
        workflows.update_workflow_state(workflow_name="wf", run_id=run_id)
    with pytest.raises(ValidationError) as info:
        workflows.update_workflow_state(workflow_name="wf", run_id=run_id, status="")
    assert set(info.value.fields) == {"status"}
    with pytest.raises(ValidationError) as info:
        workflows.update_workflow_state(workflow_name="wf", run_id=run_id, status=None, waiting_paths={"s": ["x"]},
                                        active_paths=[True], resume_labels={"l": 1}, tracing_context=[],
                                        result={"bad": {1, 2}}, expected_status=[])
    assert set(info.value.fields) == {"status", "waiting_paths", "active_paths", "resume_labels", "tracing_context",
                                      "result.bad", "expected_status"}
    assert workflows.get_workflow_run_by_id(run_id=run_id) == before
    assert workflows.list_workflow_runs().total == 1


def test_list_with_bad_pagination(workflows, backend):  # scenario 38
    with pytest.raises(ValidationError) as info:
        workflows.list_workflow_runs(per_page=-1)
    assert info.value.fields == {"per_page": ["per_page must be >= 0"]}
    assert info.value.id == error_id(backend, "LIST_WORKFLOW_RUNS", "INVALID_PAGE")
    with pytest.raises(ValidationError) as info:
        workflows.list_workflow_runs(per_page=False, page=2)
    assert info.value.fields == {"page": ["page must be 0 when per_page is False"]}
    with pytest.raises(ValidationError) as info:
        workflows.list_workflow_runs(per_page=True)
    assert "per_page" in info.value.fields
    with pytest.raises(ValidationError) as info:
        workflows.list_workflow_runs(status=5, from_date="not a date", thread_id=["t"])
    assert set(info.value.fields) == {"status", "from_date", "thread_id"}
    assert info.value.id == error_id(backend, "LIST_WORKFLOW_RUNS", "INVALID_INPUT")


def test_filter_values_are_bound_parameters(workflows):  # scenario 39
    persist(workflows, status="success", resource_id="res")
    for filters in ({"status": "x' OR '1'='1"}, {"thread_id": "x' OR '1'='1"}, {"resource_id": "x' OR 1=1 --"},
                    {"workflow_name": "wf' OR '1'='1"}):
        assert workflows.list_workflow_runs(**filters).total == 0


def test_empty_string_filters_mean_no_filter(workflows):
    persist(workflows)
    assert workflows.list_workflow_runs(workflow_name="", status="", resource_id="", thread_id="").total == 1


# =========================================================================== backend specifics

def test_characters_that_cannot_be_stored_are_removed(workflows, backend):  # scenario 40 (+ README)
    snapshot = {"status": "success", "context": {"st\x00ep": {"text": "a\x00b\ud800c"}},
                "literal": "\\u0000", "k\udc00ey": "v"}
    workflows.persist_workflow_snapshot(workflow_name="wf", run_id="chars", snapshot=snapshot)
    nul = "" if MATRIX[backend].strips_nul else "\x00"
    expected = {"status": "success", "context": {f"st{nul}ep": {"text": f"a{nul}bc"}}, "literal": "\\u0000",
                "key": "v"}
    assert workflows.load_workflow_snapshot(workflow_name="wf", run_id="chars") == expected
    assert run_ids(workflows.list_workflow_runs(status="success")) == ["chars"]


@contextmanager
def pg_connection(url: str):
    """An autocommit psycopg2 connection (``with connection`` would open a transaction that
    holds locks the store under test then waits for)."""
    import psycopg2

    connection = psycopg2.connect(url.split("?", 1)[0])
    connection.autocommit = True
    try:
        yield connection
    finally:
        connection.close()


def _pg_layout(connection, schema: str) -> tuple:
    """Columns, indexes and constraints of the snapshot table in ``schema``."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT column_name, data_type, is_nullable FROM information_schema.columns "
                       "WHERE table_schema = %s AND table_name = 'mastra_workflow_snapshot' ORDER BY column_name",
                       (schema,))
        columns = cursor.fetchall()
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s "
                       "AND tablename = 'mastra_workflow_snapshot' ORDER BY indexname", (schema,))
        indexes = cursor.fetchall()
        cursor.execute("SELECT conname, contype FROM pg_constraint WHERE conrelid = to_regclass(%s) ORDER BY conname",
                       (f'"{schema}"."mastra_workflow_snapshot"',))
        constraints = cursor.fetchall()
    return columns, indexes, constraints


def _pg_replica_index(connection, schema: str) -> str | None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT c.relreplident, (SELECT i.relname FROM pg_index x "
                       "JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = c.oid AND x.indisreplident) "
                       "FROM pg_class c "
                       "WHERE c.oid = to_regclass(%s)", (f'"{schema}"."mastra_workflow_snapshot"',))
        kind, index = cursor.fetchone()
    return index if kind == "i" else None


@pytest.mark.backends("postgres")
def test_postgres_public_layout(workflows, postgres_url):
    with pg_connection(postgres_url) as connection:
        columns, indexes, constraints = _pg_layout(connection, "public")
        assert ("public_mastra_workflow_snapshot_workflow_name_run_id_key", "u") in constraints
        assert not any(kind == "p" for _, kind in constraints)
        assert {name for name, _ in indexes} == {
            "public_mastra_workflow_snapshot_workflow_name_run_id_key", "mastra_workflow_snapshot_name_createdat_idx",
            "mastra_workflow_snapshot_name_status_createdat_idx", "mastra_workflow_snapshot_threadid_idx"}
        assert {name: (kind, nullable) for name, kind, nullable in columns} == {
            "workflow_name": ("text", "NO"), "run_id": ("text", "NO"), "resourceId": ("text", "YES"),
            "snapshot": ("jsonb", "NO"), "createdAt": ("timestamp without time zone", "NO"),
            "updatedAt": ("timestamp without time zone", "NO"), "createdAtZ": ("timestamp with time zone", "YES"),
            "updatedAtZ": ("timestamp with time zone", "YES")}
        assert _pg_replica_index(connection, "public") == "public_mastra_workflow_snapshot_workflow_name_run_id_key"


@pytest.mark.backends("postgres")
def test_postgres_schema_name(workflows, postgres_url, make_store):  # scenario 41
    store = make_store(f"{postgres_url}?schema_name=app")
    store.init()
    with pg_connection(postgres_url) as connection:
        layout = _pg_layout(connection, "app")
        columns, indexes, constraints = layout
        assert ("app_mastra_workflow_snapshot_workflow_name_run_id_key", "u") in constraints
        assert {name for name, _ in indexes} == {
            "app_mastra_workflow_snapshot_workflow_name_run_id_key", "app_mastra_workflow_snapshot_name_createdat_idx",
            "app_mastra_workflow_snapshot_name_status_createdat_idx", "app_mastra_workflow_snapshot_threadid_idx"}
        assert _pg_replica_index(connection, "app") == "app_mastra_workflow_snapshot_workflow_name_run_id_key"
        store.init()
        again = make_store(f"{postgres_url}?schema_name=app")
        again.init()
        assert _pg_layout(connection, "app") == layout
    apps = store.get_store("workflows")
    apps.dangerously_clear_all()
    persist(apps, "wf-app", status="suspended", snapshot=with_thread("suspended", "t-app"))
    assert run_ids(apps.list_workflow_runs(status="suspended", thread_id="t-app")) != []
    assert workflows.list_workflow_runs(workflow_name="wf-app").total == 0  # public is another table


# The reference system's PostgreSQL layout, with the key named as older databases name it.
MASTRA_PG_DDL = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE {schema}.mastra_workflow_snapshot (
  workflow_name TEXT NOT NULL, run_id TEXT NOT NULL, "resourceId" TEXT, snapshot JSONB NOT NULL,
  "createdAt" TIMESTAMP NOT NULL, "updatedAt" TIMESTAMP NOT NULL,
  "createdAtZ" TIMESTAMPTZ DEFAULT NOW(), "updatedAtZ" TIMESTAMPTZ DEFAULT NOW());
ALTER TABLE {schema}.mastra_workflow_snapshot
  ADD CONSTRAINT mastra_workflow_snapshot_workflow_name_run_id_key UNIQUE (workflow_name, run_id);
CREATE INDEX {schema}_mastra_workflow_snapshot_name_createdat_idx
  ON {schema}.mastra_workflow_snapshot (workflow_name, "createdAt" DESC);
CREATE INDEX {schema}_mastra_workflow_snapshot_name_status_createdat_idx
  ON {schema}.mastra_workflow_snapshot (workflow_name, (snapshot ->> 'status'), "createdAt" DESC);
CREATE INDEX {schema}_mastra_workflow_snapshot_threadid_idx ON {schema}.mastra_workflow_snapshot
  ((snapshot #>> '{{context,input,messageListState,memoryInfo,threadId}}'));
"""


@pytest.mark.backends("postgres")
def test_postgres_database_created_by_the_reference_system(workflows, postgres_url, make_store):  # scenario 42
    schema = f"ref_{uuid.uuid4().hex[:8]}"
    suspended = {"status": "suspended", "context": {"input": {"messageListState": {"memoryInfo": {"threadId": "t-r"}}},
                                                    "s1": {"status": "success", "output": 1}}}
    with pg_connection(postgres_url) as connection:
        with connection.cursor() as cursor:
            cursor.execute(MASTRA_PG_DDL.format(schema=schema))
            cursor.execute(f'INSERT INTO {schema}.mastra_workflow_snapshot (workflow_name, run_id, "resourceId", '
                           'snapshot, "createdAt", "updatedAt", "createdAtZ", "updatedAtZ") VALUES '
                           "('wf', 'ref-1', 'res', %s::jsonb, '2026-01-31 09:05:01.123456', "
                           "'2026-01-31 09:05:02.5', '2026-01-31 09:05:01.123456+00', '2026-01-31 09:05:02.5+00')",
                           (__import__("json").dumps(suspended),))
        layout = _pg_layout(connection, schema)
        store = make_store(f"{postgres_url}?schema_name={schema}")
        store.init()
        assert _pg_layout(connection, schema) == layout  # init changed nothing
        reference = store.get_store("workflows")
        page = reference.list_workflow_runs(status="suspended", thread_id="t-r")
        assert run_ids(page) == ["ref-1"]
        run = page.items[0]
        assert run["created_at"] == datetime(2026, 1, 31, 9, 5, 1, 123000, tzinfo=UTC)
        assert (run["resource_id"], run["snapshot"]) == ("res", suspended)
        context = reference.update_workflow_results(workflow_name="wf", run_id="ref-1", step_id="s2",
                                                    result={"status": "success"})
        assert set(context) == {"input", "s1", "s2"}
        assert reference.update_workflow_state(workflow_name="wf", run_id="ref-1", status="success")["status"] == \
            "success"
        # Runs this library writes read back there in the reference formats.
        created = datetime(2026, 2, 1, 8, 0, 0, 250000, tzinfo=UTC)
        reference.persist_workflow_snapshot(workflow_name="wf", run_id="ours", snapshot={"status": "running",
                                                                                          "context": {}},
                                            resource_id="res-2", created_at=created)
        with connection.cursor() as cursor:
            cursor.execute(f'SELECT snapshot ->> \'status\', "resourceId", "createdAt", "createdAtZ" '
                           f"FROM {schema}.mastra_workflow_snapshot WHERE run_id = 'ours'")
            assert cursor.fetchone() == ("running", "res-2", created.replace(tzinfo=None), created)
            cursor.execute(f"SELECT snapshot ->> 'status' FROM {schema}.mastra_workflow_snapshot "
                           "WHERE run_id = 'ref-1'")
            assert cursor.fetchone() == ("success",)


@pytest.mark.backends("postgres")
def test_postgres_older_table_with_text_snapshots(workflows, postgres_url, make_store):
    schema = f"old_{uuid.uuid4().hex[:8]}"
    with pg_connection(postgres_url) as connection:
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE SCHEMA {schema}; CREATE TABLE {schema}.mastra_workflow_snapshot ('
                           'workflow_name TEXT NOT NULL, run_id TEXT NOT NULL, snapshot TEXT NOT NULL, '
                           '"createdAt" TIMESTAMP NOT NULL, "updatedAt" TIMESTAMP NOT NULL, '
                           'UNIQUE (workflow_name, run_id))')
            cursor.execute(f'INSERT INTO {schema}.mastra_workflow_snapshot VALUES '
                           """('wf', 'old-1', '{"status": "failed", "context": {"s": {"status": "success"}}}', """
                           "'2026-01-01 00:00:00', '2026-01-01 00:00:00')")
        store = make_store(f"{postgres_url}?schema_name={schema}")
        store.init()
        columns, _, constraints = _pg_layout(connection, schema)
        assert ("snapshot", "text", "NO") in columns and ("resourceId", "text", "YES") in columns
        assert sum(kind == "u" for _, kind in constraints) == 1  # no second unique key
        old = store.get_store("workflows")
        assert run_ids(old.list_workflow_runs(status="failed")) == ["old-1"]
        assert old.list_workflow_runs(status="success").total == 0
        assert old.load_workflow_snapshot(workflow_name="wf", run_id="old-1")["status"] == "failed"
        old.update_workflow_results(workflow_name="wf", run_id="old-1", step_id="t", result={"status": "success"})
        old.persist_workflow_snapshot(workflow_name="wf", run_id="old-2", snapshot={"status": "running",
                                                                                   "context": {}})
        assert old.list_workflow_runs().total == 2


@pytest.mark.backends("sqlite")
def test_sqlite_layout(workflows, backend_url):
    path = backend_url[len("sqlite:///"):]
    with sqlite3.connect(path) as connection:
        sql, = connection.execute("SELECT sql FROM sqlite_master WHERE name = 'mastra_workflow_snapshot'").fetchone()
        indexes = connection.execute("SELECT name FROM sqlite_master WHERE type = 'index' "
                                     "AND tbl_name = 'mastra_workflow_snapshot'").fetchall()
    assert sql == ('CREATE TABLE "mastra_workflow_snapshot" ("workflow_name" TEXT, "run_id" TEXT, "resourceId" TEXT, '
                   '"snapshot" TEXT, "createdAt" TEXT, "updatedAt" TEXT, UNIQUE (workflow_name, run_id))')
    assert [name for name, in indexes] == ["sqlite_autoindex_mastra_workflow_snapshot_1"]
    persist(workflows, run_id="stored-form", created_at="2026-01-31T09:05:01.123456Z")
    with sqlite3.connect(path) as connection:
        created, snapshot = connection.execute('SELECT "createdAt", snapshot FROM mastra_workflow_snapshot').fetchone()
    assert created == "2026-01-31T09:05:01.123Z" and snapshot.startswith('{"runId":"stored-form"')


@pytest.mark.backends("sqlite")
def test_sqlite_database_created_by_the_reference_system(workflows, tmp_path, make_store):  # scenario 42
    path = tmp_path / "mastra.db"
    suspended = with_thread("suspended", "t-r")
    failed = {"status": "failed", "context": {"input": {"messageListState": {"memoryInfo": {"threadId": "t-x"}}},
                                              "s1": {"status": "suspended"}}}
    with sqlite3.connect(path) as connection:
        connection.execute('CREATE TABLE mastra_workflow_snapshot (workflow_name TEXT, run_id TEXT, '
                           '"resourceId" TEXT, snapshot TEXT, "createdAt" TEXT, "updatedAt" TEXT, '
                           'UNIQUE (workflow_name, run_id))')
        rows = [("wf", "ref-1", "res", encode_jsonb(suspended), "2026-01-31T09:05:01.123Z", "2026-01-31T09:05:01.123Z"),
                ("wf", "ref-2", None, encode_jsonb(failed), "2026-01-30 09:05:01", "2026-01-30 09:05:01"),
                ("wf", "broken", None, "{not json", "2026-01-29T00:00:00.000Z", "2026-01-29T00:00:00.000Z")]
        connection.executemany("INSERT INTO mastra_workflow_snapshot VALUES (?, ?, ?, ?, ?, ?)", rows)
    with sqlite3.connect(path) as connection:
        before = connection.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
    store = make_store(f"sqlite:///{path}")
    store.init()
    reference = store.get_store("workflows")
    with sqlite3.connect(path) as connection:
        after = connection.execute("SELECT type, name, sql FROM sqlite_master WHERE name LIKE '%workflow%' "
                                   "ORDER BY name").fetchall()
    assert after == [row for row in before if "workflow" in row[1]]  # init changed nothing of this table
    assert run_ids(reference.list_workflow_runs(status="suspended", thread_id="t-r")) == ["ref-1"]
    assert run_ids(reference.list_workflow_runs(thread_id="t-x")) == ["ref-2"]
    assert reference.list_workflow_runs(status="failed").items[0]["snapshot"] == failed
    assert reference.load_workflow_snapshot(workflow_name="wf", run_id="ref-1") == suspended
    assert reference.get_workflow_run_by_id(run_id="ref-2")["created_at"] == datetime(2026, 1, 30, 9, 5, 1, tzinfo=UTC)
    assert reference.load_workflow_snapshot(workflow_name="wf", run_id="broken") == "{not json"
    assert reference.list_workflow_runs().total == 3
    # Resuming rewrites the run as JSON text that the reference system reads.
    context = reference.update_workflow_results(workflow_name="wf", run_id="ref-1", step_id="s2",
                                                result={"status": "success"})
    assert set(context) == {"input", "agent-step", "s2"}
    with sqlite3.connect(path) as connection:
        text, created = connection.execute("SELECT snapshot, \"createdAt\" FROM mastra_workflow_snapshot "
                                           "WHERE run_id = 'ref-1'").fetchone()
    assert __import__("json").loads(text)["context"]["s2"] == {"status": "success"}
    assert created == "2026-01-31T09:05:01.123Z"


@pytest.mark.backends("sqlite")
def test_sqlite_older_table_gets_resource_id_column(workflows, tmp_path, make_store):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as connection:
        connection.execute('CREATE TABLE mastra_workflow_snapshot (workflow_name TEXT, run_id TEXT, snapshot TEXT, '
                           '"createdAt" TEXT, "updatedAt" TEXT, "extra" TEXT, UNIQUE (workflow_name, run_id))')
        connection.execute("INSERT INTO mastra_workflow_snapshot VALUES ('wf', 'old-1', '{\"status\":\"running\"}', "
                           "'2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z', 'kept')")
    store = make_store(f"sqlite:///{path}")
    store.init()
    old = store.get_store("workflows")
    assert old.get_workflow_run_by_id(run_id="old-1")["resource_id"] is None
    persist(old, run_id="old-1", resource_id="res-1")
    assert old.get_workflow_run_by_id(run_id="old-1")["resource_id"] == "res-1"
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT extra FROM mastra_workflow_snapshot").fetchall() == [("kept",)]


@pytest.mark.backends("sqlite", "postgres")
def test_older_table_without_the_key_gets_it(workflows, backend, backend_url, tmp_path, make_store):
    """The key of Meta.table_key is added to an older table that lacks it (SQLite: a unique index,
    PostgreSQL: the named constraint), and then an upsert keyed by it works."""
    columns = ('workflow_name TEXT NOT NULL, run_id TEXT NOT NULL, snapshot TEXT NOT NULL, '
               '"createdAt" TIMESTAMP NOT NULL, "updatedAt" TIMESTAMP NOT NULL')
    values = ("('wf', 'old-1', '{\"status\":\"running\"}', '2026-01-01T00:00:00.000Z', "
              "'2026-01-01T00:00:00.000Z')")
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path}/old.db"
        with sqlite3.connect(tmp_path / "old.db") as connection:
            connection.execute(f"CREATE TABLE mastra_workflow_snapshot ({columns})")
            connection.execute(f"INSERT INTO mastra_workflow_snapshot VALUES {values}")
    else:
        schema = f"old_{uuid.uuid4().hex[:8]}"
        url = f"{backend_url}?schema_name={schema}"
        with pg_connection(backend_url) as connection, connection.cursor() as cursor:
            cursor.execute(f"CREATE SCHEMA {schema}; CREATE TABLE {schema}.mastra_workflow_snapshot ({columns})")
            cursor.execute(f"INSERT INTO {schema}.mastra_workflow_snapshot VALUES {values}")
    store = make_store(url)
    store.init()
    old = store.get_store("workflows")
    model = old.models.snapshot
    with old.backend.connection():
        assert old.backend.has_key(model, model._meta.table_key)
        indexes = {index.name: index for index in old.backend.database.get_indexes(
            model._meta.table_name, model._meta.schema)}
    expected = ("mastra_workflow_snapshot_workflow_name_run_id_key" if backend == "sqlite"
                else f"{schema}_mastra_workflow_snapshot_workflow_name_run_id_key")
    assert indexes[expected].unique and sorted(indexes[expected].columns) == ["run_id", "workflow_name"]
    persist(old, run_id="old-1", snapshot={"status": "success", "context": {}})
    assert old.load_workflow_snapshot(workflow_name="wf", run_id="old-1")["status"] == "success"
    assert old.list_workflow_runs().total == 1
    store.init()  # idempotent: the key is found, not added twice
    with old.backend.connection():
        assert sum(index.unique for index in old.backend.database.get_indexes(
            model._meta.table_name, model._meta.schema)) == 1


@pytest.mark.requires(cluster=False)  # one server's layout (the cluster's: tests/test_cluster.py)
@pytest.mark.requires(family="clickhouse")
def test_clickhouse_table_and_row_versions(workflows, backend, backend_url):  # scenarios 43 and 44
    client = clickhouse_client(backend_url)
    try:
        engine, sorting_key = client.execute(
            "SELECT engine_full, sorting_key FROM system.tables "
            "WHERE database = currentDatabase() AND name = 'mastra_workflow_snapshot'")[0]
        columns = dict(client.execute("SELECT name, type FROM system.columns WHERE database = currentDatabase() "
                                      "AND table = 'mastra_workflow_snapshot'"))
        datetime64 = client.execute("SELECT count() FROM system.data_type_families WHERE name = 'DateTime64'")[0][0]
        assert datetime64 or not MATRIX[backend].current_clickhouse
        assert engine.startswith("ReplacingMergeTree(_version)") and "index_granularity = 8192" in engine
        assert "PARTITION BY" not in engine
        assert sorting_key.replace(" ", "") == "createdAt,run_id,workflow_name"
        timestamp = "DateTime64(3, 'UTC')" if datetime64 else "Int64"
        assert columns == {"id": "String", "workflow_name": "String", "run_id": "String",
                           "resourceId": "Nullable(String)", "snapshot": "String", "createdAt": timestamp,
                           "updatedAt": timestamp, "_version": "UInt64", "_deleted": "UInt8"}
        for status in ("running", "suspended", "success"):
            persist(workflows, "wf", run_id="versioned", status=status)
        page = workflows.list_workflow_runs()
        assert (page.total, run_ids(page), page.items[0]["snapshot"]["status"]) == (1, ["versioned"], "success")
        assert client.execute("SELECT id FROM mastra_workflow_snapshot FINAL WHERE run_id = 'versioned'") == \
            [("versioned",)]
        workflows.delete_workflow_run_by_id(run_id="versioned", workflow_name="wf")
        assert workflows.list_workflow_runs().total == 0
        assert workflows.get_workflow_run_by_id(run_id="versioned") is None
    finally:
        client.disconnect()
