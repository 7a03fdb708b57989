"""Round trips of the hot write calls (issue 20), pinned with ``Backend.counting_statements``.

Each call sends the fewest statements its work needs on SQLite and PostgreSQL: one statement
in autocommit where one does the work (no ``BEGIN``/``COMMIT`` around it), a transaction only
where several statements must be atomic.  A later change that adds a round trip fails here.
"""

from __future__ import annotations

import re
import socket
import struct
import threading
import uuid
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import peewee
import pytest

from composite_store import ConflictError, NotFoundError, ValidationError
from composite_store.composite import store_for_url
from composite_store.postgres import ScoresPG

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
    # SQLite: BEGIN, the threads' bump (its RETURNING checks they exist), the upsert RETURNING,
    # COMMIT.  PostgreSQL: one data-modifying CTE locks, checks and bumps the threads and upserts.
    "save_messages": (4, 1),
    "save_messages, stored id": (4, 1),
    # The UPDATE merges the metadata (jsonb ||, SQLite's json_patch for members neither null
    # nor objects; otherwise SQLite reads, merges, writes: BEGIN, SELECT, UPDATE, COMMIT).
    "update_thread": (1, 1),
    "update_thread, null member": (4, 1),
    # One UPDATE sets the step (json_set, jsonb_set).  Where it changed no row (a new run),
    # PostgreSQL reads the run unlocked and inserts it (or writes it back only if its xmin is
    # unchanged); SQLite: BEGIN IMMEDIATE, SELECT, INSERT, SELECT, UPDATE, COMMIT.
    "update_workflow_results": (1, 1),
    "update_workflow_results, new run": (7, 3),
    # SQLite: BEGIN, the dataset's version step as the locked read (UPDATE … RETURNING), the
    # item, the version log, COMMIT.  PostgreSQL: one data-modifying CTE does the three writes,
    # the version step only while the schemas the item was checked against are unchanged.
    "add_item": (5, 1),
    # One INSERT … SELECT … ON CONFLICT DO NOTHING: its WITH reads (PostgreSQL: locks) the
    # experiment, and it inserts only past the purge barrier.
    "add_experiment_result": (1, 1),
}


@SQL
def test_each_hot_call_sends_its_pinned_statements(backend_spec, memory, workflows, scores, datasets, experiments):
    thread(memory, "th-1")
    memory.save_messages(messages=[message("th-1", "m-stored")])
    workflows.persist_workflow_snapshot(workflow_name="wf", run_id="run-1", snapshot=SNAPSHOT)
    dataset = datasets.create_dataset(name="d")
    experiment = experiments.create_experiment(total_items=3)
    now = datetime.now(timezone.utc)
    # The first result also looks, once per repository, for the datasets' tables (the purge barrier).
    experiments.add_experiment_result(experiment_id=experiment["id"], item_id="item-0", input={"q": 1},
                                      started_at=now, completed_at=now)
    calls = {
        "save_score": lambda: scores.save_score(score=SCORE),
        "save_score, given id": lambda: scores.save_score(score={**SCORE, "id": "score-1"}),
        "persist_workflow_snapshot": lambda: workflows.persist_workflow_snapshot(
            workflow_name="wf", run_id="run-1", snapshot=SNAPSHOT),
        "save_thread": lambda: thread(memory, "th-2"),
        "save_messages": lambda: memory.save_messages(messages=[message("th-1")]),
        "save_messages, stored id": lambda: memory.save_messages(messages=[message("th-1", "m-stored")]),
        "update_thread": lambda: memory.update_thread(id="th-1", title="renamed", metadata={"b": 2}),
        "update_thread, null member": lambda: memory.update_thread(id="th-1", metadata={"b": None}),
        "update_workflow_results": lambda: workflows.update_workflow_results(
            workflow_name="wf", run_id="run-1", step_id="step-1", result={"status": "success"}),
        "update_workflow_results, new run": lambda: workflows.update_workflow_results(
            workflow_name="wf", run_id=str(uuid.uuid4()), step_id="step-1", result={"status": "success"}),
        "add_item": lambda: datasets.add_item(dataset_id=dataset["id"], input={"q": 1}),
        "add_experiment_result": lambda: experiments.add_experiment_result(
            experiment_id=experiment["id"], item_id=str(uuid.uuid4()), input={"q": 1}, started_at=now,
            completed_at=now),
    }
    assert set(calls) == set(EXPECTED)
    column = 0 if backend_spec.family == "sqlite" else 1
    for call in calls.values():  # PostgreSQL prepares each statement on a connection's first call (see below)
        call()
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
def test_a_big_save_messages_batch_is_one_statement_on_postgres(backend_spec, memory):
    """1,200 messages of two threads, 3 of them stored already: PostgreSQL sends one statement
    (the rows as one array per column), SQLite one transaction of 500-row statements; both
    report the stored created_at of the stored ones and the given one of the rest."""
    thread(memory, "th-a"), thread(memory, "th-b")
    first = memory.save_messages(messages=[message("th-a", f"m-{i:04d}") for i in range(3)])
    given = datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=timezone.utc)
    batch = [{**message("th-a" if i % 2 else "th-b", f"m-{i:04d}"), "created_at": given} for i in range(1200)]
    batch[0]["thread_id"] = batch[2]["thread_id"] = "th-a"  # the stored ones stay in their thread
    with memory.backend.counting_statements() as log:
        saved = memory.save_messages(messages=batch)
    # SQLite: BEGIN, 3 bumps (the threads, then the messages' old threads 500 ids at a time),
    # 3 upserts, COMMIT.
    assert log.count == (8 if backend_spec.family == "sqlite" else 1), log.statements
    assert [m["created_at"] for m in saved[:3]] == [m["created_at"] for m in first]
    assert {m["created_at"] for m in saved[3:]} == {given}
    assert memory.list_messages(thread_id="th-b", per_page=False).total == 598


def test_messages_of_many_threads_cost_as_many_statements_as_of_few(memory):
    """save_messages, update_messages and delete_messages of 30 messages bump every thread they
    touch in one statement per chunk of threads: 30 threads cost what 3 do (ClickHouse read and
    re-inserted each thread alone: 102 statements for 1,000 messages of 100 threads)."""
    sent = {}
    for threads in (3, 30):
        ids = [f"th-{threads}-{i:02d}" for i in range(threads)]
        messages = [f"m-{threads}-{i:02d}" for i in range(30)]
        counts = []
        for call in (
                lambda: memory.save_messages(messages=[message(ids[i % threads], m) for i, m in enumerate(messages)]),
                lambda: memory.update_messages(messages=[{"id": m, "role": "assistant"} for m in messages]),
                lambda: memory.delete_messages(message_ids=messages)):
            for thread_id in ids:
                thread(memory, thread_id)  # updated_at back to LONG_AGO
            with memory.backend.counting_statements() as log:
                call()
            # (PostgreSQL prepares a statement on its first run on a connection: not a round trip per thread.)
            counts.append(sum(1 for statement in log.statements if not statement.startswith("PREPARE")))
            assert all(memory.get_thread_by_id(thread_id=t)["updated_at"] > LONG_AGO for t in ids)
        sent[threads] = counts
    assert sent[30] == sent[3], sent


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


@pytest.mark.backends("postgres")
def test_one_message_is_saved_through_the_keys_whatever_the_plan(memory):
    """A prepared statement runs a generic plan after five runs; for one message it reads the
    stored message and its thread through their keys even on tables never analyzed (the
    array form of a batch scanned the whole messages table there), and it still refuses a
    missing thread."""
    thread(memory, "th-a")
    for _ in range(6):
        memory.save_messages(messages=[message("th-a")])
    database = memory.backend.database
    [sql] = [sql for sql in database._statements if sql.startswith('WITH "stored"') and "unnest" not in sql]
    numbers = iter(range(1, sql.count("%s") + 1))
    with memory.backend.connection():
        cursor = database.cursor()
        cursor.execute("SET plan_cache_mode = force_generic_plan")
        try:
            cursor.execute("PREPARE one_message AS " + re.sub("%s", lambda _: f"${next(numbers)}", sql))
            try:
                cursor.execute(f"EXPLAIN EXECUTE one_message({', '.join(['NULL'] * sql.count('%s'))})")
                plan = "\n".join(row[0] for row in cursor.fetchall())
            finally:
                cursor.execute("DEALLOCATE one_message")  # (the library's own stay prepared)
        finally:
            cursor.execute("RESET plan_cache_mode")
    assert "Seq Scan" not in plan and "mastra_messages_pkey" in plan and "mastra_threads_pkey" in plan, plan
    with pytest.raises(NotFoundError):
        memory.save_messages(messages=[message("th-missing", "m-lost")])
    assert memory.list_messages_by_id(message_ids=["m-lost"]) == []


@SQL
def test_add_item_checks_the_schemas_stored_now_when_another_store_changed_them(backend_url, datasets):
    """PostgreSQL's one-statement add_item checks the item against the schemas it last read; a
    schema changed through another store is found by the statement (no version step), and the
    call then gives the locked read's answer, after which one statement is enough again."""
    dataset = datasets.create_dataset(name="d", input_schema={"type": "object"})
    datasets.add_item(dataset_id=dataset["id"], input={"q": 1})
    other = store_for_url(backend_url)
    try:
        other.get_store("datasets").update_dataset(
            id=dataset["id"], input_schema={"type": "object", "properties": {"q": {"type": "integer"}}})
    finally:
        other.close()
    with pytest.raises(ValidationError):  # accepted by the schema read before, not by the stored one
        datasets.add_item(dataset_id=dataset["id"], input={"q": "one"})
    with datasets.backend.counting_statements() as log:
        added = datasets.add_item(dataset_id=dataset["id"], input={"q": 2})
    assert added["dataset_version"] == 2 and log.count == EXPECTED["add_item"][datasets.backend.name == "PG"]
    items = datasets.list_items(dataset_id=dataset["id"]).items
    assert sorted(item["input"]["q"] for item in items) == [1, 2]


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
def test_update_thread_merge_in_sql_keeps_key_order_and_replaces_non_objects(memory):
    # As {**stored, **members}: stored keys in place (changed ones too), new ones after them;
    # stored metadata that is not an object is merged as {} (the read-merge-write path's rule).
    memory.save_thread(thread={"id": "th-o", "resource_id": "res-1", "metadata": {"a": 1, "b": [1], "c": "x"}})
    updated = memory.update_thread(id="th-o", metadata={"d": 0.30000000000000004, "b": [2, {"n": None}], "a": True})
    expected = {"a": True, "b": [2, {"n": None}], "c": "x", "d": 0.30000000000000004}
    assert list(updated["metadata"].items()) == list(expected.items())
    assert list(memory.get_thread_by_id(thread_id="th-o")["metadata"].items()) == list(expected.items())
    Thread = memory.models.thread
    with memory.backend.connection():
        Thread.update({Thread.metadata: peewee.SQL("'[1, 2]'")}).where(Thread.id == "th-o").execute()
    assert memory.update_thread(id="th-o", metadata={"z": 1})["metadata"] == {"z": 1}
    assert memory.get_thread_by_id(thread_id="th-o")["metadata"] == {"z": 1}


@SQL
def test_update_workflow_results_sets_the_step_as_the_read_merge_write_does(backend_spec, workflows):
    # Whichever path a call takes (SQLite's json_set, or reading, merging and writing), the
    # snapshot changes alike: a stored step replaced in place, a new one last, requestContext
    # merged (a stored non-object replaced), other members kept in order (where stored JSON
    # keeps it: jsonb orders an object's keys itself).
    def same(got: dict, wanted: dict) -> bool:
        return list(got.items()) == list(wanted.items()) if backend_spec.family == "sqlite" else got == wanted

    snapshot = {**SNAPSHOT, "context": {"a.b[0] é": {"status": "running"}, "input": {"q": 1}},
                "requestContext": [1]}
    workflows.persist_workflow_snapshot(workflow_name="wf-o", run_id="run-o", snapshot=snapshot)
    steps = {"a.b[0] é": {"status": "success", "output": {"x": 1.5}}, "back\\slash": {"status": "success"},
             "new step": {"status": "failed", "output": [1, None]}}
    for context_name, (step_id, result) in enumerate(steps.items()):
        context = workflows.update_workflow_results(workflow_name="wf-o", run_id="run-o", step_id=step_id,
                                                    result=result, request_context={f"k{context_name}": [context_name]})
    expected = {"a.b[0] é": steps["a.b[0] é"], "input": {"q": 1}, "back\\slash": steps["back\\slash"],
                "new step": steps["new step"]}
    assert same(context, expected)
    stored = workflows.load_workflow_snapshot(workflow_name="wf-o", run_id="run-o")
    assert same(stored, {**SNAPSHOT, "context": expected, "requestContext": {"k0": [0], "k1": [1], "k2": [2]}})
    assert same(stored["context"], expected) and same(stored["requestContext"], {"k0": [0], "k1": [1], "k2": [2]})
    workflows.persist_workflow_snapshot(workflow_name="wf-o", run_id="run-o", snapshot={**SNAPSHOT, "context": []})
    with pytest.raises(ConflictError):
        workflows.update_workflow_results(workflow_name="wf-o", run_id="run-o", step_id="s", result={})


@SQL
def test_statement_logs_nest_and_see_only_their_block(scores):
    backend = scores.backend
    scores.save_score(score=SCORE), scores.get_score_by_id(id="missing")  # PostgreSQL: prepared first
    with backend.counting_statements() as outer:
        scores.save_score(score=SCORE)
        with backend.counting_statements() as inner:
            scores.get_score_by_id(id="missing")
    scores.save_score(score=SCORE)
    assert (outer.count, inner.count) == (2, 1)
    assert inner.statements == outer.statements[1:]


# --------------------------------------------------------------------------- dead pooled connections

class SeveringProxy:
    """A TCP proxy to a PostgreSQL server that can sever its connections silently: the server
    side is closed, the client side stays open with nothing to read (as after a network fault
    or a firewall's timeout), and is reset when the client next sends."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.severed: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self.pairs.append((client, server))
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, from_client: bool) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if from_client and source in self.severed:
                # Reset (no FIN): the client learns of the fault only from the statement it sent.
                source.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                source.close()
                return
            if not data:
                return
            try:
                target.sendall(data)
            except OSError:
                return

    def sever(self) -> None:
        """Cut every open connection from the server, telling the clients nothing."""
        for client, server in self.pairs:
            self.severed.add(client)
            server.close()

    def close(self) -> None:
        self.listener.close()
        for client, server in self.pairs:
            client.close()
            server.close()


@pytest.mark.backends("postgres")
def test_a_pooled_connection_that_died_silently_fails_its_first_statement_which_runs_again(postgres_url):
    """No ping when a call takes a pooled connection: a dead one is found by the statement it
    fails, which runs once more on a new connection, so the call succeeds."""
    parts = urlsplit(postgres_url)
    proxy = SeveringProxy(parts.hostname, parts.port or 5432)
    url = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
    store = store_for_url(url)
    try:
        store.init()
        scores = store.get_store("scores")
        scores.save_score(score=SCORE)  # the pool now holds an idle connection
        proxy.sever()
        with scores.backend.counting_statements() as log:
            saved = scores.save_score(score=SCORE)  # autocommit: the INSERT is the first statement
        # It runs again on the new connection, which has not prepared it yet: it prepares it and runs.
        executed = log.statements[0]
        assert executed.startswith("EXECUTE ") and log.statements[1] == executed, log.statements
        assert log.statements[2].startswith("PREPARE ") and log.statements[3:] == [executed], log.statements
        with scores.backend.counting_statements() as log:
            assert scores.get_score_by_id(id=saved["id"])["id"] == saved["id"]
        assert log.count == 1, log.statements  # the new connection went back to the pool alive
        proxy.sever()
        memory = store.get_store("memory")
        with pytest.raises(NotFoundError):  # its one statement runs again, then finds no thread
            memory.save_messages(messages=[message("th-missing")])
    finally:
        store.close()
        proxy.close()


# --------------------------------------------------------------------------- prepared statements (PostgreSQL)

@pytest.mark.backends("postgres")
def test_postgres_prepares_each_statement_once_per_connection(postgres_url):
    """A hot call's statement is planned once per connection: ``PREPARE`` on the first call,
    then one ``EXECUTE`` per call; ``prepared_statements=false`` (behind a pooler that hands
    each statement to another server connection) sends the plain statement."""
    for url, first in ((postgres_url, ["PREPARE", "EXECUTE"]), (f"{postgres_url}?prepared_statements=false",
                                                                ["INSERT"])):
        store = store_for_url(url)
        try:
            store.init()
            scores = store.get_store("scores")
            logged = []
            for _ in range(3):
                with scores.backend.counting_statements() as log:
                    saved = scores.save_score(score=SCORE)
                logged.append([statement.split(" ", 1)[0] for statement in log.statements])
                assert scores.get_score_by_id(id=saved["id"])["score"] == SCORE["score"]
            assert logged == [first, first[-1:], first[-1:]], logged
        finally:
            store.close()
    for bad in (f"{postgres_url}?prepared_statements=maybe", {"prepared_statements": "no"}):
        with pytest.raises(ValidationError) as error:
            if isinstance(bad, str):
                store_for_url(bad)
            else:
                ScoresPG(connection_string=postgres_url, **bad)
        assert "prepared_statements must be true or false" in str(error.value)


@pytest.mark.backends("postgres")
def test_postgres_runs_what_it_cannot_prepare_or_lost_as_plain_statements(memory):
    """A statement the server will not prepare (a parameter of no inferable type) runs as it is
    from then on; statements the connection lost (``DEALLOCATE ALL``, as a pooler's reset does)
    are prepared again."""
    backend = memory.backend

    def untyped(value: Any) -> list:
        return backend.prepared("untyped parameter", lambda: peewee.Select(columns=[peewee.SQL("1")]).where(
            peewee.NodeList([backend.param("x"), peewee.SQL("IS NULL")]))).rows(x=value)

    with backend.connection():
        for _ in range(2):
            with backend.counting_statements() as log:
                assert len(untyped(None)) == 1 and untyped("a") == []
            assert not any(statement.startswith("EXECUTE") for statement in log.statements), log.statements
        thread(memory, "th-prepared")
        memory.update_thread(id="th-prepared", title="one")  # prepared on this connection
        backend.database.execute_sql("DEALLOCATE ALL")
        with backend.counting_statements() as log:
            assert memory.update_thread(id="th-prepared", title="two")["title"] == "two"
        assert [statement.split(" ", 1)[0] for statement in log.statements] == ["EXECUTE", "PREPARE", "EXECUTE"]


@pytest.mark.backends("postgres")
def test_postgres_prepares_again_a_statement_whose_result_changed_type(postgres_url):
    """A column of a prepared statement's result that another program changes (``ALTER TABLE …
    TYPE``) makes its next ``EXECUTE`` fail ("cached plan must not change result type"): the
    statement is prepared again and the call answers."""
    store = store_for_url(postgres_url)
    try:
        store.init()
        memory = store.get_store("memory")
        thread(memory, "th-altered")
        memory.update_thread(id="th-altered", title="one")
        with memory.backend.connection():
            memory.backend.database.execute_sql('ALTER TABLE "mastra_threads" ALTER COLUMN "title" TYPE varchar')
        try:
            with memory.backend.counting_statements() as log:
                assert memory.update_thread(id="th-altered", title="two")["title"] == "two"
            assert [statement.split(" ", 1)[0] for statement in log.statements] == [
                "EXECUTE", "DEALLOCATE", "PREPARE", "EXECUTE"], log.statements
        finally:
            with memory.backend.connection():
                memory.backend.database.execute_sql('ALTER TABLE "mastra_threads" ALTER COLUMN "title" TYPE text')
    finally:
        store.close()


# --------------------------------------------------------------------------- the benchmark's raw paths

@pytest.mark.backends("sqlite")
def test_the_calls_benchmark_runs_at_smoke_size(backend, monkeypatch):
    """``python -m benchmarks calls`` at a few calls per side: every raw path runs, on SQLite
    and (where the server is reachable) PostgreSQL.  Timings are the benchmark's business."""
    from benchmarks import bench_calls

    monkeypatch.setenv("COMPOSITE_STORE_BENCH_SCALE", "0.01")
    monkeypatch.setenv("COMPOSITE_STORE_BENCH_BACKENDS", "sqlite,postgres")
    rows = bench_calls.main()
    assert {row["backend"] for row in rows} >= {"sqlite"}
    for backend_name in {row["backend"] for row in rows}:
        measured = [row for row in rows if row["backend"] == backend_name]
        assert len(measured) == 7 and all(row["library"] > 0 and row["raw"] > 0 for row in measured), measured
        assert all(row["note"].endswith(" statements") for row in measured), measured


@pytest.mark.backends("postgres")
def test_a_step_result_over_a_run_changed_since_it_was_read_takes_the_locked_path(workflows):
    """The unlocked write of update_workflow_results applies only to the row version it read."""
    workflows.persist_workflow_snapshot(workflow_name="wf", run_id="run-1", snapshot=SNAPSHOT)
    Run = workflows.models.snapshot
    with workflows.backend.connection():  # (a connection left open here would outlive the test)
        read = workflows._run_row("wf", "run-1", versioned=True)
    workflows.update_workflow_results(workflow_name="wf", run_id="run-1", step_id="step-1", result={"n": 1})
    stale = {**read["snapshot"], "context": {"overwritten": True}}
    with workflows.backend.connection():
        assert not workflows.backend.replace(Run, read, {"snapshot": stale}, unchanged=True)
        current = workflows._run_row("wf", "run-1", versioned=True)
        assert current["row_version"] != read["row_version"]
        assert workflows.backend.replace(Run, current, {"snapshot": current["snapshot"]}, unchanged=True)
    assert workflows.load_workflow_snapshot(workflow_name="wf", run_id="run-1")["context"]["step-1"] == {"n": 1}


@pytest.mark.backends("postgres")
def test_a_result_written_while_its_item_is_purged_is_stored_redacted(backend_url, datasets, experiments,
                                                                      monkeypatch):
    """The purge barrier with add_experiment_result's one statement: a purge that holds the
    experiment's lock (its marks written, its redaction done, not committed) makes the waiting
    statement's snapshot older than the marks; the statement must see that and not write the
    result as given, so the call takes the locked path, which stores it redacted."""
    from composite_store.datasets import repository as datasets_module

    dataset = datasets.create_dataset(name="d")
    item = datasets.add_item(dataset_id=dataset["id"], input={"q": 1})
    experiment = experiments.create_experiment(total_items=1, dataset_id=dataset["id"])
    now = datetime.now(timezone.utc)
    experiments.add_experiment_result(experiment_id=experiment["id"], item_id="warm-up", input=1,
                                      started_at=now, completed_at=now)
    locked, release = threading.Event(), threading.Event()
    redact = datasets_module.redact_item_result_rows

    def redact_then_wait(*args: object) -> int:
        count = redact(*args)
        locked.set()
        assert release.wait(30)
        return count

    monkeypatch.setattr(datasets_module, "redact_item_result_rows", redact_then_wait)
    purge = threading.Thread(target=datasets.purge_item, kwargs={"id": item["id"], "dataset_id": dataset["id"]})
    purge.start()
    assert locked.wait(30)
    added: list[dict] = []
    add = threading.Thread(target=lambda: added.append(experiments.add_experiment_result(
        experiment_id=experiment["id"], item_id=item["id"], input={"secret": 1}, started_at=now,
        completed_at=now)))
    add.start()
    watcher = store_for_url(backend_url).get_store("scores").backend
    try:
        for _ in range(300):  # until the statement waits for the purge's lock
            with watcher.connection():
                waiting = watcher.database.execute_sql(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database() "
                    "AND (query LIKE %s OR query LIKE 'EXECUTE %%')",  # (or its prepared statement)
                    ["%mastra_experiment_results%"]).fetchone()[0]
            if waiting:
                break
            threading.Event().wait(0.05)
        assert waiting
    finally:
        release.set()
        purge.join(30)
        add.join(30)
        watcher.close()
    assert added and added[0]["input"] is None and added[0]["metadata"]["__purged"] is True, added
