"""Retention: ``prune()`` of the five domains with retention, of whole stores and of the composite
store (fidelity-1.71 §5), on SQLite and PostgreSQL; ClickHouse answers with its TTL."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from datetime import timedelta

import pytest

from composite_store import CompositeStore, NotSupportedError, ValidationError
from composite_store.sqlite import ScoresSQLite, SQLiteStore
from composite_store.values import utc_now
from tests.conftest import MATRIX

SQL_BACKENDS = pytest.mark.backends("sqlite", "postgres")
CLICKHOUSE = pytest.mark.requires(family="clickhouse")
CONTENT = {"format": 2, "parts": [{"type": "text", "text": "hi"}]}


# prune() creates the anchor indexes it needs; on the session's shared database they would show in
# the layout tests of other modules, so this module's stores live in a database of their own.

@pytest.fixture(scope="module")
def session_store(own_store):
    """This module's own initialized store (conftest's ``own_store``)."""
    return own_store


@pytest.fixture(scope="module")
def legacy_observability(session_store):
    """The observability repository of this module's store (SQL backends: the legacy layout)."""
    return session_store.get_store("observability")


def days_ago(days: float):
    return utc_now() - timedelta(days=days)


def error_id(backend: str, operation: str, status: str = "INVALID_INPUT") -> str:
    return f"STORAGE_{MATRIX[backend].error_name}_{operation}_{status}"


def backdate(repository, model: str, field: str, value, where=None) -> None:
    """Set a timestamp the API does not take (``updatedAt`` of runs, ``createdAt`` of scores)."""
    table = getattr(repository.models, model)
    with repository.backend.connection(), repository.backend.write():
        repository.backend.update(table, where if where is not None else True, {field: value})


def spans(count: int, *, days: float, prefix: str = "old") -> list[dict]:
    started = days_ago(days)
    return [{"trace_id": f"{prefix}-{index // 10}", "span_id": f"s{index}", "name": "n", "span_type": "tool_call",
             "started_at": started} for index in range(count)]


def old_message(memory, *, days: float, id: str = "old") -> None:
    """A message of thread ``t`` (saved with it) created ``days`` ago."""
    memory.save_thread(thread={"id": "t", "resource_id": "r", "title": "x", "created_at": utc_now(),
                               "updated_at": utc_now()})
    memory.save_messages(messages=[{"id": id, "thread_id": "t", "resource_id": "r", "role": "user",
                                    "content": CONTENT, "created_at": days_ago(days)}])


def rows(repository, table: str) -> int:
    return repository.count_rows()[table]


def result(domain: str, table: str, deleted: int, done: bool) -> dict:
    return {"domain": domain, "table": table, "deleted": deleted, "done": done}


# --------------------------------------------------------------------------- the domains


@SQL_BACKENDS
def test_old_messages_go_recent_stay(memory):
    """§5.2 accept: a message 40 days old goes, one of yesterday stays; threads are not touched."""
    memory.save_thread(thread={"id": "t", "resource_id": "r", "title": "x", "created_at": days_ago(40),
                               "updated_at": days_ago(40)})
    memory.save_messages(messages=[
        {"id": "old", "thread_id": "t", "resource_id": "r", "role": "user", "content": CONTENT,
         "created_at": days_ago(40)},
        {"id": "new", "thread_id": "t", "resource_id": "r", "role": "user", "content": CONTENT,
         "created_at": days_ago(1)}])
    assert memory.prune(policies={"messages": {"max_age": "30d"}}) == [result("memory", "mastra_messages", 1, True)]
    assert [message["id"] for message in memory.list_messages(thread_id="t", per_page=False).items] == ["new"]
    assert memory.get_thread_by_id(thread_id="t") is not None


@SQL_BACKENDS
def test_memory_tables_in_mastras_order_each_on_its_anchor(memory):
    """§5.2: messages, resources, threads (whatever the policies' order); pruning threads leaves
    their messages."""
    memory.save_thread(thread={"id": "t", "resource_id": "r", "title": "x", "created_at": days_ago(10),
                               "updated_at": days_ago(10)})
    memory.save_messages(messages=[{"id": "m", "thread_id": "t", "resource_id": "r", "role": "user",
                                    "content": CONTENT, "created_at": days_ago(1)}])
    results = memory.prune(policies={"threads": {"maxAge": 5 * 86_400_000}, "messages": {"max_age": timedelta(days=5)},
                                     "resources": {"max_age": "1w", "batchSize": 10}})
    assert results == [result("memory", "mastra_messages", 0, True), result("memory", "mastra_resources", 0, True),
                       result("memory", "mastra_threads", 1, True)]
    assert memory.get_thread_by_id(thread_id="t") is None
    assert rows(memory, "mastra_messages") == 1


@SQL_BACKENDS
def test_spans_in_batches_bounded_by_max_batches(observability):
    """§5.2 accept: 2,500 old spans, batches of 1,000, two batches → 2,000 and not done; again → done."""
    observability.batch_create_spans(records=spans(2500, days=10) + spans(5, days=1, prefix="new"))
    policies = {"spans": {"max_age": "7d", "batch_size": 1000}}
    assert observability.prune(policies=policies, max_batches=2) == [
        result("observability", "mastra_ai_spans", 2000, False)]
    assert observability.prune(policies=policies, max_batches=2) == [
        result("observability", "mastra_ai_spans", 500, True)]
    assert rows(observability, "mastra_ai_spans") == 5


@SQL_BACKENDS
def test_max_rows_shrinks_the_last_batch(observability):
    """§5.2: ``max_rows`` per table, the last batch cut to fit."""
    observability.batch_create_spans(records=spans(250, days=10))
    assert observability.prune(policies={"spans": {"max_age": "1d", "batch_size": 100}}, max_rows=130) == [
        result("observability", "mastra_ai_spans", 130, False)]
    assert rows(observability, "mastra_ai_spans") == 120


@SQL_BACKENDS
def test_cutoff_is_strict_and_null_never_eligible(experiments):
    """§5.2: a running experiment (no ``completedAt``) is never pruned, even at max_age 0."""
    experiments.create_experiment(id="running", total_items=1)
    assert experiments.prune(policies={"experiments": {"max_age": 0}}) == [
        result("experiments", "mastra_experiment_results", 0, True),
        result("experiments", "mastra_experiments", 0, True)]
    assert experiments.get_experiment_by_id(id="running") is not None


@SQL_BACKENDS
def test_experiments_go_whole(experiments):
    """§5.2 accept: an experiment completed 100 days ago goes with its 3 results; a running one stays."""
    for name in ("done", "running", "recent"):
        experiments.create_experiment(id=name, total_items=3)
        for index in range(3):
            experiments.add_experiment_result(experiment_id=name, item_id=f"i{index}", input={"q": index},
                                              started_at=days_ago(101), completed_at=days_ago(100))
    experiments.update_experiment(id="done", status="completed", completed_at=days_ago(100))
    experiments.update_experiment(id="recent", status="completed", completed_at=days_ago(10))
    assert experiments.prune(policies={"experiments": {"max_age": "90d"}}) == [
        result("experiments", "mastra_experiment_results", 3, True),
        result("experiments", "mastra_experiments", 1, True)]
    assert experiments.get_experiment_by_id(id="done") is None
    assert {experiment["id"] for experiment in experiments.list_experiments(per_page=False).items} == {"running",
                                                                                                       "recent"}
    assert rows(experiments, "mastra_experiment_results") == 6


@SQL_BACKENDS
def test_workflow_runs_by_updated_at_and_scores_by_created_at(workflows, scores):
    """§5.2: runs go by ``updatedAt`` whatever their status (``workflowSnapshot`` is accepted too);
    scores by ``createdAt``."""
    for run in ("old", "new"):
        workflows.persist_workflow_snapshot(workflow_name="wf", run_id=run, snapshot={"status": "running"})
    Run = workflows.models.snapshot
    backdate(workflows, "snapshot", "updated_at", days_ago(3), Run.run_id == "old")
    assert workflows.prune(policies={"workflowSnapshot": {"max_age": "2d"}}) == [
        result("workflows", "mastra_workflow_snapshot", 1, True)]
    assert workflows.get_workflow_run_by_id(run_id="old") is None
    assert workflows.get_workflow_run_by_id(run_id="new") is not None

    from tests.test_scores import sample

    kept = scores.save_score(score=sample())
    gone = scores.save_score(score=sample())
    Score = scores.models.score
    backdate(scores, "score", "created_at", days_ago(40), Score.id == gone["id"])
    assert scores.prune(policies={"scorers": {"max_age": "30d"}}) == [result("scores", "mastra_scorers", 1, True)]
    assert scores.get_score_by_id(id=gone["id"]) is None and scores.get_score_by_id(id=kept["id"]) is not None


@SQL_BACKENDS
def test_anchor_index_is_created(memory, backend):
    """§5.2: the anchor index exists after a prune (Mastra's names)."""
    memory.prune(policies={"messages": {"max_age": "30d"}})
    database = memory.backend.database
    with memory.backend.connection():
        names = {index.name for index in database.get_indexes("mastra_messages", memory.models.message._meta.schema)}
    schema = getattr(memory.backend, "schema_name", None)  # index names outside public carry it
    expected = ("idx_retention_mastra_messages_createdAt" if backend == "sqlite"
                else f"{schema + '_' if schema else ''}mastra_messages_retention_idx")
    assert expected in names


@SQL_BACKENDS
@pytest.mark.parametrize("policies, field, message", [
    ({"messages": {"max_age": "30 days"}}, "policies.messages.max_age",
     'Invalid retention duration: "30 days". Expected a number of milliseconds or a "<number><unit>" string '
     "(ms, s, m, h, d, w)."),
    ({"messages": {"max_age": -1}}, "policies.messages.max_age", None),
    ({"messages": {"max_age": True}}, "policies.messages.max_age", None),
    ({"messages": {}}, "policies.messages.max_age", "Missing data for required field."),
    ({"messages": {"max_age": "1d", "batch_size": 0}}, "policies.messages.batch_size",
     "batch_size must be a positive integer"),
    ({"messages": {"max_age": "1d", "keep": 1}}, "policies.messages.keep", "Unknown field."),
    ({"spans": {"max_age": "1d"}}, "policies.spans", "Unknown field."),
    ({"messages": "30d"}, "policies.messages", "Not a valid mapping type."),
    ([], "policies", "Not a valid mapping type."),
])
def test_bad_policy_deletes_nothing(memory, backend, policies, field, message):
    """§5.2: a bad policy is a validation error naming it, raised before anything is deleted."""
    old_message(memory, days=400)
    good = {"threads": {"max_age": "1d"}, "messages": {"max_age": "1d"}}
    with pytest.raises(ValidationError) as info:
        memory.prune(policies={**good, **policies} if isinstance(policies, dict) else policies)
    assert info.value.id == error_id(backend, "PRUNE")
    assert field in info.value.fields
    if message is not None:
        assert info.value.fields[field] == [message]
    assert rows(memory, "mastra_messages") == 1


@SQL_BACKENDS
@pytest.mark.parametrize("arguments, field", [
    ({"max_batches": 0}, "max_batches"), ({"max_rows": 1.5}, "max_rows"), ({"pause_ms": -1}, "pause_ms"),
    ({"stop": True}, "stop"),
])
def test_bad_limits(observability, backend, arguments, field):
    observability.batch_create_spans(records=spans(3, days=10))
    with pytest.raises(ValidationError) as info:
        observability.prune(policies={"spans": {"max_age": "1d"}}, **arguments)
    assert info.value.id == error_id(backend, "PRUNE") and field in info.value.fields
    assert rows(observability, "mastra_ai_spans") == 3


@SQL_BACKENDS
def test_stop_already_set_deletes_nothing(memory):
    """§5.2: ``stop`` set before the call → ``deleted 0, done False`` for each table."""
    old_message(memory, days=40)
    stop = threading.Event()
    stop.set()
    assert memory.prune(policies={"messages": {"max_age": "1d"}, "threads": {"max_age": "1d"}}, stop=stop) == [
        result("memory", "mastra_messages", 0, False), result("memory", "mastra_threads", 0, False)]
    assert rows(memory, "mastra_messages") == 1


@SQL_BACKENDS
def test_stop_mid_prune_keeps_every_committed_batch(observability, store):
    """§5.2: a ``stop`` set from another thread while batches run ends the prune before its next
    batch: every batch deleted so far is committed (another connection sees it), the rest untouched."""
    total, batch = 3000, 100
    observability.batch_create_spans(records=spans(total, days=10))
    stop, results = threading.Event(), []
    worker = threading.Thread(target=lambda: results.extend(observability.prune(
        policies={"spans": {"max_age": "1d", "batch_size": batch}}, pause_ms=20, stop=stop)))
    worker.start()
    deadline = time.monotonic() + 30
    while rows(observability, "mastra_ai_spans") == total and time.monotonic() < deadline:
        time.sleep(0.005)  # the first batch is committed: another connection sees fewer rows
    stop.set()
    worker.join(30)
    assert not worker.is_alive()
    [pruned] = results
    left = rows(observability, "mastra_ai_spans")
    assert pruned["done"] is False and 0 < pruned["deleted"] < total
    assert pruned["deleted"] % batch == 0 and left == total - pruned["deleted"]


@SQL_BACKENDS
def test_writers_go_on_while_a_prune_runs(observability):
    """Batches are short transactions: a writer in another thread is never held for the whole prune."""
    observability.batch_create_spans(records=spans(4000, days=10))
    done = threading.Event()
    pauses: list[float] = []

    def write() -> None:
        index = 0
        while not done.is_set():
            started = time.monotonic()
            observability.create_span(span={"trace_id": "live", "span_id": f"w{index}", "name": "n",
                                            "span_type": "tool_call", "started_at": utc_now()})
            pauses.append(time.monotonic() - started)
            index += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        pruned = observability.prune(policies={"spans": {"max_age": "1d", "batch_size": 200}}, pause_ms=5)
    finally:
        done.set()
        writer.join(30)
    assert pruned == [result("observability", "mastra_ai_spans", 4000, True)]
    assert pauses and max(pauses) < 5
    assert rows(observability, "mastra_ai_spans") == len(pauses)


@CLICKHOUSE
def test_clickhouse_points_to_its_ttl(scores, memory, workflows):
    """§5.2: ClickHouse domains raise NotSupportedError naming ttl_days."""
    for repository in (scores, memory, workflows):
        with pytest.raises(NotSupportedError) as info:
            repository.prune(policies={})
        assert info.value.id == "STORAGE_CLICKHOUSE_PRUNE_NOT_SUPPORTED"
        assert info.value.message == "prune() is not available on ClickHouse; use ttl_days."


# --------------------------------------------------------------------------- stores


@SQL_BACKENDS
def test_whole_store_retention(store, backend, own_url):
    """§5.3: ``retention=`` at construction is what ``prune()`` applies; ``retention=`` of a call
    replaces it; neither → []; bad retention is refused at construction and at the call."""
    memory = store.get_store("memory")
    memory.dangerously_clear_all()
    old_message(memory, days=40)
    assert store.prune() == []
    assert store.prune(retention={"memory": {"messages": {"max_age": "60d"}}}) == [
        result("memory", "mastra_messages", 0, True)]
    connect = {"url": own_url} if backend == "sqlite" else {"connection_string": own_url}
    configured = type(store)(**connect, retention={"memory": {"messages": {"max_age": "30d"}}, "workflows": {}})
    try:
        assert configured.prune() == [result("memory", "mastra_messages", 1, True)]
    finally:
        configured.close()
    with pytest.raises(ValidationError) as info:
        type(store)(**connect, retention={"agents": {"x": {"max_age": "1d"}}})
    assert info.value.id == error_id(backend, "INIT") and info.value.fields == {"retention.agents": ["Unknown field."]}
    with pytest.raises(ValidationError) as info:
        store.prune(retention={"memory": {"messages": {"max_age": "soon"}}})
    assert info.value.id == error_id(backend, "PRUNE") and "retention.memory.messages.max_age" in info.value.fields


@SQL_BACKENDS
def test_whole_store_retention_of_the_vnext_signals(store, backend, own_url):
    """observability-vnext.md §10.2: a store whose observability has the vNext layout takes
    ``metrics``, ``logs``, ``scores`` and ``feedback`` policies beside ``spans`` and prunes them;
    the legacy layout refuses them, naming the key (at construction and at the call)."""
    connect = {"url": own_url} if backend == "sqlite" else {"connection_string": own_url}
    vnext_url = f"{own_url}{'&' if '?' in own_url else '?'}layout=vnext"
    retention = {"observability": {"spans": {"max_age": "1d"}, "metrics": {"max_age": "1d"},
                                   "logs": {"max_age": "1d"}, "scores": {"max_age": "1d"},
                                   "feedback": {"max_age": "1d"}}}
    vnext = type(store)(**{key: vnext_url for key in connect}, retention=retention)
    try:
        vnext.init()
        observability = vnext.get_store("observability")
        observability.dangerously_clear_all()
        observability.batch_create_metrics(metrics=[{"timestamp": days_ago(days), "name": "m", "value": 1.0}
                                                    for days in (3, 0)])
        observability.batch_create_logs(logs=[{"timestamp": days_ago(3), "level": "info", "message": "old"}])
        assert vnext.prune() == [result("observability", table, deleted, True) for table, deleted in (
            ("mastra_span_events", 0), ("mastra_metric_events", 1), ("mastra_log_events", 1),
            ("mastra_score_events", 0), ("mastra_feedback_events", 0))]
        assert observability.list_metrics().total == 1 and observability.list_logs().total == 0
    finally:
        vnext.close()
    with pytest.raises(ValidationError) as info:
        type(store)(**connect, retention={"observability": {"metrics": {"max_age": "1d"}}})
    assert info.value.id == error_id(backend, "INIT")
    assert info.value.fields == {"retention.observability.metrics": ["Unknown field."]}
    with pytest.raises(ValidationError) as info:
        store.prune(retention={"observability": {"spans": {"max_age": "1d"}, "logs": {"max_age": "1d"}}})
    assert info.value.id == error_id(backend, "PRUNE")
    assert info.value.fields == {"retention.observability.logs": ["Unknown field."]}


@pytest.mark.backends("sqlite")
def test_composite_prune_skips_clickhouse_and_survives_a_failing_domain(tmp_path, caplog):
    """§5.3 accept: a failing domain is logged and the others still run; domains in the mapping's order."""
    default = SQLiteStore(url=f"sqlite:///{tmp_path}/main.db")
    default.init()
    broken = ScoresSQLite(url=f"sqlite:///{tmp_path}/never-initialized.db")  # no table: its prune fails
    composite = CompositeStore(default=default, domains={"scores": broken}, retention={
        "scores": {"scorers": {"max_age": "1d"}}, "memory": {"messages": {"max_age": "30d"}}})
    memory = composite.get_store("memory")
    old_message(memory, days=40)
    try:
        with caplog.at_level(logging.ERROR, logger="composite_store"):
            assert composite.prune() == [result("memory", "mastra_messages", 1, True)]
        assert any("prune of scores failed" in record.getMessage() for record in caplog.records)
        with pytest.raises(ValidationError) as info:
            composite.prune(retention={"datasets": {}})
        assert info.value.id == "STORAGE_COMPOSITE_PRUNE_INVALID_INPUT"
        with pytest.raises(ValidationError) as info:
            CompositeStore(default=default, retention={"memory": {"messages": {"max_age": "30 days"}}})
        assert info.value.id == "STORAGE_COMPOSITE_INIT_INVALID_INPUT"
    finally:
        composite.close()


@CLICKHOUSE
def test_composite_with_observability_on_clickhouse(make_store, tmp_path):
    """§5.3 accept: observability on ClickHouse is skipped; only memory's result comes back."""
    default = SQLiteStore(url=f"sqlite:///{tmp_path}/main.db")
    default.init()
    clickhouse = make_store()
    composite = CompositeStore(default=default, domains={"observability": clickhouse}, retention={
        "memory": {"messages": {"max_age": "30d"}}, "observability": {"spans": {"max_age": "7d"}}})
    try:
        assert composite.prune() == [result("memory", "mastra_messages", 0, True)]
        assert clickhouse.prune(retention={"scores": {"scorers": {"max_age": "1d"}}}) == []
    finally:
        default.close()


def test_sqlite_prune_sql_is_mastras(tmp_path):
    """§5.2: SQLite deletes by rowid in batches, comparing the ISO text of the anchor."""
    store = SQLiteStore(url=f"sqlite:///{tmp_path}/mastra.db")
    store.init()
    memory = store.get_store("memory")
    old_message(memory, days=40)
    with sqlite3.connect(tmp_path / "mastra.db") as connection:  # a row another client wrote, text as Mastra's
        connection.execute("INSERT INTO mastra_messages (id, thread_id, content, role, type, \"createdAt\", "
                           "\"resourceId\") VALUES ('raw', 't', '{}', 'user', 'v2', '2020-01-01T00:00:00.000Z', 'r')")
    try:
        assert memory.prune(policies={"messages": {"max_age": "30d"}}) == [result("memory", "mastra_messages", 2, True)]
    finally:
        store.close()


def test_command_line_prune(tmp_path):
    """``composite-store prune URL --policy …``: one line per table; a bad policy deletes nothing."""
    from click.testing import CliRunner

    from composite_store.cli import cli

    url = f"sqlite:///{tmp_path}/cli.db"
    store = SQLiteStore(url=url)
    store.init()
    old_message(store.get_store("memory"), days=40)
    try:
        bad = CliRunner().invoke(cli, ["prune", url, "--policy", "threads=1d", "--policy", "messages=30 days"])
        assert bad.exit_code == 1 and "STORAGE_CLI_PRUNE_INVALID_INPUT" in bad.output
        assert "retention.memory.messages.max_age" in bad.output
        unknown = CliRunner().invoke(cli, ["prune", url, "--policy", "mesages=30d"])
        assert unknown.exit_code == 1 and "TABLE one of messages" in unknown.output
        assert store.get_store("memory").count_rows()["mastra_threads"] == 1
        ran = CliRunner().invoke(cli, ["prune", url, "--policy", "messages=30d", "--policy", "experiments=90d",
                                       "--batch-size", "10"])
        assert ran.exit_code == 0, ran.output
        lines = ran.output.splitlines()
        assert [line.split()[:3] for line in lines] == [["memory", "mastra_messages", "1"],
                                                        ["experiments", "mastra_experiment_results", "0"],
                                                        ["experiments", "mastra_experiments", "0"]]
        assert all("rows/s" in line and line.endswith("(done)") for line in lines)
    finally:
        store.close()
