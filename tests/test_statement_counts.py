"""Round trips of the hot write calls (issue 20), pinned with ``Backend.counting_statements``.

Each call sends the fewest statements its work needs on SQLite and PostgreSQL: one statement
in autocommit where one does the work (no ``BEGIN``/``COMMIT`` around it), a transaction only
where several statements must be atomic.  A later change that adds a round trip fails here.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest

from composite_store import NotFoundError

SQL = pytest.mark.backends("sqlite", "postgres")

SCORE = {"scorer_id": "sc-1", "run_id": "run-1", "entity_id": "agent-1", "entity_type": "AGENT", "source": "LIVE",
         "score": 0.5, "scorer": {"id": "sc-1"}, "entity": {"id": "agent-1"}, "output": {"text": "4"}}
SNAPSHOT = {"runId": "run-1", "status": "running", "context": {"input": {}}, "value": {}, "activePaths": [],
            "serializedStepGraph": [], "suspendedPaths": {}, "waitingPaths": {}, "timestamp": 1}


def message(thread_id: str, message_id: str | None = None) -> dict:
    return {"id": message_id or str(uuid.uuid4()), "thread_id": thread_id, "resource_id": "res-1", "role": "user",
            "content": {"format": 2, "parts": [{"type": "text", "text": "hi"}]}}


#: When the test threads were last updated: any bump is later.
LONG_AGO = datetime(2020, 1, 1, tzinfo=timezone.utc)


def thread(memory, thread_id: str) -> dict:
    return memory.save_thread(thread={"id": thread_id, "resource_id": "res-1", "title": "t", "metadata": {"a": 1},
                                      "created_at": LONG_AGO, "updated_at": LONG_AGO})


#: Statements per call: (SQLite, PostgreSQL).  BEGIN and COMMIT count.
EXPECTED = {
    # One INSERT (an upsert for a given id), autocommit.
    "save_score": (1, 1),
    "save_score, given id": (1, 1),
    "persist_workflow_snapshot": (1, 1),
    "save_thread": (1, 1),
    # BEGIN, the threads' bump (its RETURNING checks they exist), the upsert RETURNING, COMMIT.
    "save_messages": (4, 4),
    "save_messages, stored id": (4, 4),
    # PostgreSQL merges the metadata in the UPDATE (jsonb ||); SQLite reads, merges, writes.
    "update_thread": (4, 1),
    "update_workflow_results": (4, 4),
    "add_item": (6, 6),
    "add_experiment_result": (5, 5),
}


@SQL
def test_each_hot_call_sends_its_pinned_statements(backend_spec, memory, workflows, scores, datasets, experiments):
    thread(memory, "th-1")
    memory.save_messages(messages=[message("th-1", "m-stored")])
    workflows.persist_workflow_snapshot(workflow_name="wf", run_id="run-1", snapshot=SNAPSHOT)
    dataset = datasets.create_dataset(name="d")
    experiment = experiments.create_experiment(total_items=3)
    now = datetime.now(timezone.utc)
    calls = {
        "save_score": lambda: scores.save_score(score=SCORE),
        "save_score, given id": lambda: scores.save_score(score={**SCORE, "id": "score-1"}),
        "persist_workflow_snapshot": lambda: workflows.persist_workflow_snapshot(
            workflow_name="wf", run_id="run-1", snapshot=SNAPSHOT),
        "save_thread": lambda: thread(memory, "th-2"),
        "save_messages": lambda: memory.save_messages(messages=[message("th-1")]),
        "save_messages, stored id": lambda: memory.save_messages(messages=[message("th-1", "m-stored")]),
        "update_thread": lambda: memory.update_thread(id="th-1", title="renamed", metadata={"b": 2}),
        "update_workflow_results": lambda: workflows.update_workflow_results(
            workflow_name="wf", run_id="run-1", step_id="step-1", result={"status": "success"}),
        "add_item": lambda: datasets.add_item(dataset_id=dataset["id"], input={"q": 1}),
        "add_experiment_result": lambda: experiments.add_experiment_result(
            experiment_id=experiment["id"], item_id=str(uuid.uuid4()), input={"q": 1}, started_at=now,
            completed_at=now),
    }
    assert set(calls) == set(EXPECTED)
    column = 0 if backend_spec.family == "sqlite" else 1
    for name, call in calls.items():
        with scores.backend.counting_statements() as log:
            call()
        expected = EXPECTED[name][column]
        assert log.count == expected, (name, log.statements)
        if expected == 1:  # autocommit: no transaction around the one statement
            assert not log.statements[0].startswith(("BEGIN", "SAVEPOINT")), (name, log.statements)


@SQL
def test_a_batch_of_one_statement_per_row_is_one_transaction(backend_spec, scores):
    """Several rows are several statements on SQLite (executemany): atomic only in a transaction."""
    with scores.backend.counting_statements() as log:
        scores.save_scores(scores=[SCORE, SCORE, {**SCORE, "id": "given"}])
    assert log.statements[0].startswith("BEGIN") and log.statements[-1] == "COMMIT", log.statements


@SQL
def test_save_messages_bumps_the_threads_a_message_leaves_and_keeps_created_at(memory):
    thread(memory, "th-a")
    stored = memory.save_messages(messages=[message("th-a", "m-1")])[0]
    thread(memory, "th-a"), thread(memory, "th-b")
    moved = memory.save_messages(messages=[message("th-b", "m-1")])[0]
    assert moved["created_at"] == stored["created_at"] and moved["thread_id"] == "th-b"
    for thread_id in ("th-a", "th-b"):  # the thread left and the thread joined
        assert memory.get_thread_by_id(thread_id=thread_id)["updated_at"] > LONG_AGO, thread_id
    assert memory.list_messages_by_id(message_ids=["m-1"])[0]["created_at"] == stored["created_at"]


@SQL
def test_save_messages_to_a_missing_thread_changes_nothing(memory):
    thread(memory, "th-a")
    memory.save_messages(messages=[message("th-a", "m-1")])
    thread(memory, "th-a")  # updated_at back to LONG_AGO
    with pytest.raises(NotFoundError) as caught:
        memory.save_messages(messages=[message("th-a", "m-1"), message("th-missing", "m-2")])
    assert caught.value.details["thread_id"] == "th-missing"
    # Neither the thread's bump nor the message write stayed.
    assert memory.get_thread_by_id(thread_id="th-a")["updated_at"] == LONG_AGO
    assert [m["id"] for m in memory.list_messages_by_id(message_ids=["m-1", "m-2"])] == ["m-1"]


@SQL
def test_update_thread_merges_top_level_members(memory):
    thread(memory, "th-a")
    updated = memory.update_thread(id="th-a", metadata={"b": {"c": 1}, "n": None})
    assert updated["metadata"] == {"a": 1, "b": {"c": 1}, "n": None} and updated["title"] == "t"
    assert memory.update_thread(id="th-a", metadata={"b": 2})["metadata"] == {"a": 1, "b": 2, "n": None}
    renamed = memory.update_thread(id="th-a", title="x")
    assert renamed == memory.get_thread_by_id(thread_id="th-a") and renamed["metadata"] == {"a": 1, "b": 2, "n": None}
    with pytest.raises(NotFoundError):
        memory.update_thread(id="th-missing", title="x")


@SQL
def test_statement_logs_nest_and_see_only_their_block(scores):
    backend = scores.backend
    with backend.counting_statements() as outer:
        scores.save_score(score=SCORE)
        with backend.counting_statements() as inner:
            scores.get_score_by_id(id="missing")
    scores.save_score(score=SCORE)
    assert (outer.count, inner.count) == (2, 1)
    assert inner.statements == outer.statements[1:]
