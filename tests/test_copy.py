"""Moving data (issue 21): copy_domains, the copy/export/import commands, on real databases.

The source is a SQLite file seeded with every domain; the target is the backend under test
(each default backend of the matrix), so SQLite → SQLite, → PostgreSQL, → ClickHouse 18.16 and
→ a current ClickHouse all run; one test copies PostgreSQL → SQLite.
"""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner

from composite_store import ConflictError, NotSupportedError, ValidationError, copy_domains
from composite_store.cli import cli
from composite_store.composite import store_for_url
from composite_store.moving import WRITE_CHUNK, export_domain, import_file
from tests.conftest import MATRIX

T0 = datetime(2026, 1, 1, 12, 0, 0, 123000, tzinfo=timezone.utc)
MESSAGES = WRITE_CHUNK * 2 + 500  # three write chunks


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def seed(store) -> None:
    """Rows in every domain the store holds, linked as an application links them."""
    memory = store.get_store("memory")
    memory.save_thread(thread={"id": "t-1", "resource_id": "r-1", "title": "Hello", "metadata": {"k": [1, 2]}})
    memory.save_messages(messages=[{"id": f"m-{i:05d}", "thread_id": "t-1", "resource_id": "r-1", "role": "user",
                                    "content": f"message {i}", "created_at": at(i)} for i in range(MESSAGES)])
    memory.save_resource(resource={"id": "r-1", "working_memory": "# notes", "metadata": {"plan": "pro"}})
    store.get_store("workflows").persist_workflow_snapshot(
        workflow_name="wf", run_id="run-1", resource_id="r-1",
        snapshot={"runId": "run-1", "status": "success", "context": {"input": {"x": 1}}})
    store.get_store("scores").save_scores(scores=[
        {"id": f"s-{i}", "scorer_id": "sc", "entity_id": "agent-1", "entity_type": "AGENT", "source": "LIVE",
         "run_id": "run-1", "score": i / 10, "scorer": {"id": "sc"}, "entity": {"id": "agent-1"}, "input": [],
         "output": {"text": str(i)}} for i in range(5)])
    store.get_store("observability").batch_create_spans(records=[
        {"trace_id": f"trace-{i // 4}", "span_id": f"span-{i}", "parent_span_id": None, "name": f"span {i}",
         "span_type": "agent_run", "is_event": False, "started_at": at(i), "ended_at": at(i + 1),
         "metadata": {"n": i}, "tags": ["a"]} for i in range(12)])
    agents = store.get_store("agents")
    agents.create_agent(agent={"id": "a-1", "name": "Helper", "instructions": "Be brief",
                               "model": {"provider": "openai", "name": "gpt-4o"}})
    agents.create_version(agent_id="a-1", version_number=2, name="Second", instructions="Be kind",
                          model={"provider": "openai", "name": "gpt-4o"})
    datasets = store.get_store("datasets")
    datasets.create_dataset(id="ds-1", name="questions")
    items = datasets.batch_insert_items(dataset_id="ds-1", items=[{"input": None}, {"input": {"q": 1},
                                                                                   "ground_truth": None}])
    datasets.delete_item(id=items[0]["id"], dataset_id="ds-1")  # version 2: a tombstone row
    experiments = store.get_store("experiments")
    experiments.create_experiment(id="ex-1", total_items=1, dataset_id="ds-1", dataset_version=2)
    experiments.add_experiment_result(experiment_id="ex-1", item_id=items[1]["id"], input={"q": 1},
                                      started_at=at(1), completed_at=at(2))


def snapshot(store) -> dict[str, list]:
    """Every record of every domain the store holds, through the iter_* methods, by key."""
    def keyed(records, *key):
        return sorted(records, key=lambda record: tuple(record[name] for name in key or ("id",)))

    out = {}
    memory = store.get_store("memory")
    out["threads"] = keyed(memory.iter_threads())
    out["messages"] = keyed(memory.iter_messages())
    out["resources"] = keyed(memory.iter_resources())
    out["runs"] = keyed(store.get_store("workflows").iter_workflow_runs(), "workflow_name", "run_id")
    out["scores"] = keyed(store.get_store("scores").iter_scores())
    # Spans without created/updated: PostgreSQL's span table stamps them (Mastra's trigger), the
    # current ClickHouse layout reads created_at as the start.
    out["spans"] = keyed([{k: v for k, v in span.items() if k not in ("created_at", "updated_at")}
                          | {"tags": span["tags"] or []} for span in store.get_store("observability").iter_spans()],
                         "trace_id", "span_id")
    if store.get_store("agents") is not None:
        out["agents"] = keyed(store.get_store("agents").iter_agents(with_versions=True))
        datasets = store.get_store("datasets")
        out["items"] = keyed(datasets.iter_dataset_items(dataset_id="ds-1", version=1))
        out["items_now"] = keyed(datasets.iter_dataset_items(dataset_id="ds-1"))
        out["history"] = [datasets.get_item_history(item_id=item["id"]) for item in out["items"]]
        out["datasets"] = keyed(datasets.iter_datasets())
        out["experiments"] = keyed(store.get_store("experiments").iter_experiments())
        out["results"] = keyed(store.get_store("experiments").iter_experiment_results())
    return out


@pytest.fixture(scope="module")
def source_url(tmp_path_factory) -> str:
    """A SQLite file holding rows of every domain."""
    url = f"sqlite:///{tmp_path_factory.mktemp('source')}/source.db"
    with store_for_url(url) as source:
        source.init()
        seed(source)
    return url


@pytest.fixture
def target(store):
    """The backend under test's store, emptied."""
    store.dangerously_clear_all()
    return store


def is_clickhouse(backend: str) -> bool:
    return MATRIX[backend].family == "clickhouse"


def test_copy_keeps_ids_timestamps_versions_and_links(source_url, target, backend, caplog):
    reports = copy_domains(source_url, target)
    # Nothing stays behind: the spans move as the legacy table (SQLite, PostgreSQL) or as records.
    assert "stay in the source" not in caplog.text
    copied = {report.domain for report in reports}
    assert copied == ({"memory", "workflows", "scores", "observability"} if is_clickhouse(backend)
                      else {"memory", "workflows", "scores", "observability", "agents", "datasets", "experiments"})
    assert all(report.counts_match and report.finished for report in reports), [r.summary() for r in reports]
    with store_for_url(source_url) as source:
        expected = snapshot(source)
    got = snapshot(target)
    assert got == {key: value for key, value in expected.items() if key in got}
    assert len(got["messages"]) == MESSAGES
    if not is_clickhouse(backend):
        assert [v["version_number"] for v in got["agents"][0]["versions"]] == [1, 2]
        assert got["datasets"][0]["version"] == 2 and len(got["items"]) == 2 and len(got["items_now"]) == 1


def test_a_rerun_after_an_interruption_finishes_without_duplicates(source_url, target):
    class Interrupted(Exception):
        pass

    def stop_after_first_chunk(report, done, total):
        if report.table == "mastra_messages" and done >= WRITE_CHUNK:
            raise Interrupted

    with pytest.raises(Interrupted):
        copy_domains(source_url, target, domains=["memory"], progress=stop_after_first_chunk)
    assert target.get_store("memory").count_rows()["mastra_messages"] == WRITE_CHUNK

    [threads, messages, resources] = copy_domains(source_url, target, domains=["memory"])
    assert (messages.skipped, messages.written) == (WRITE_CHUNK, MESSAGES - WRITE_CHUNK)
    assert threads.skipped == 1 and messages.counts_match and resources.counts_match
    assert len(list(target.get_store("memory").iter_messages())) == MESSAGES


def test_different_rows_under_the_same_ids_follow_the_policy(source_url, target):
    memory = target.get_store("memory")
    memory.save_thread(thread={"id": "t-1", "resource_id": "r-1", "title": "Hello", "metadata": {"k": [1, 2]}})
    memory.save_messages(messages=[{"id": "m-00001", "thread_id": "t-1", "resource_id": "r-1", "role": "user",
                                    "content": "newer text"}])

    with pytest.raises(ConflictError) as caught:
        copy_domains(source_url, target, domains=["memory"])
    # The thread differs (its times), the first table: the copy stops before writing anything.
    assert caught.value.details == {"code": "COPY_CONFLICT", "table": "memory.mastra_threads", "keys": [["t-1"]]}
    assert "on_conflict='skip'" in caught.value.message
    assert memory.count_rows()["mastra_messages"] == 1

    reports = copy_domains(source_url, target, domains=["memory"], on_conflict="skip")
    assert memory.list_messages_by_id(message_ids=["m-00001"])[0]["content"]["content"] == "newer text"
    assert all(report.counts_match for report in reports)

    copy_domains(source_url, target, domains=["memory"], on_conflict="overwrite")
    assert memory.list_messages_by_id(message_ids=["m-00001"])[0]["content"]["content"] == "message 1"


def test_bad_input_is_refused_before_anything_is_written(source_url, target, backend):
    with pytest.raises(ValidationError) as caught:
        copy_domains(source_url, target, domains=["memroy"])
    assert "did you mean 'memory'" in str(caught.value.fields)
    with pytest.raises(ValidationError):
        copy_domains(source_url, target, on_conflict="merge")
    if is_clickhouse(backend):
        with pytest.raises(NotSupportedError) as refused:
            copy_domains(source_url, target, domains=["memory", "agents"])
        assert "agents" in refused.value.message
    assert target.get_store("memory").count_rows()["mastra_messages"] == 0


@pytest.mark.backends("postgres")
def test_copy_postgres_to_sqlite(source_url, target, tmp_path):
    copy_domains(source_url, target)
    back = f"sqlite:///{tmp_path}/back.db"
    reports = copy_domains(target, back)
    assert all(report.counts_match for report in reports)
    with store_for_url(back) as copied:
        assert snapshot(copied) == snapshot(target)


# --------------------------------------------------------------------------- export and import

def test_export_and_import_a_domain(source_url, target, backend):
    domain = "memory" if is_clickhouse(backend) else "datasets"
    out = io.StringIO()
    export_domain(source_url, domain, out, dataset_id=None if domain == "memory" else "ds-1")
    lines = out.getvalue().splitlines()
    header = json.loads(lines[0])
    assert (header["domain"], header["library_version"]) == (domain, "0.1.0") and header["layout"]
    reports = import_file(target, lambda: iter(lines))
    assert all(report.counts_match for report in reports)
    with store_for_url(source_url) as source:
        expected = snapshot(source)
    got = snapshot(target)
    keys = ("threads", "messages", "resources") if domain == "memory" else ("datasets", "items", "items_now",
                                                                            "history")
    assert {key: got[key] for key in keys} == {key: expected[key] for key in keys}
    # Importing again changes nothing.
    assert {report.written for report in import_file(target, lambda: iter(lines))} == {0}


def test_observability_exports_as_spans_either_layout_imports(source_url, target):
    out = io.StringIO()
    export_domain(source_url, "observability", out)
    lines = out.getvalue().splitlines()
    assert list(json.loads(lines[0])["tables"]) == ["spans"]
    [report] = import_file(target, lambda: iter(lines))
    assert report.written == 12 and report.counts_match
    with store_for_url(source_url) as source:
        assert snapshot(target)["spans"] == snapshot(source)["spans"]


def test_a_bad_file_is_reported_by_line_and_nothing_is_written(source_url, target):
    out = io.StringIO()
    export_domain(source_url, "memory", out)
    lines = out.getvalue().splitlines()
    lines[2] = lines[2].replace('"role":"user"', '"role":5')
    lines[3] = lines[3].replace('"role":"user"', '"role":"robot"')  # a string, but not a role
    lines[5] = "not json"
    lines.append(json.dumps({"table": "mastra_messages", "row": {"id": "x", "unknown": 1}}))
    with pytest.raises(ValidationError) as caught:
        import_file(target, lambda: iter(lines))
    fields = caught.value.fields
    assert set(fields) == {"line 3", "line 4", "line 6", f"line {len(lines)}"}
    assert fields["line 3"] == ["role: Not a valid string."]
    assert fields["line 4"] == ["role: Must be one of: system, user, assistant, tool, signal."]
    assert "unknown: Unknown field." in fields[f"line {len(lines)}"]
    assert target.get_store("memory").count_rows()["mastra_messages"] == 0


# --------------------------------------------------------------------------- the commands

@pytest.mark.backends("sqlite", "postgres")
def test_copy_export_and_import_commands(source_url, target, backend_url, tmp_path):
    runner = CliRunner()
    copied = runner.invoke(cli, ["copy", "--from", source_url, "--to", backend_url, "--domains", "memory,scores"])
    assert copied.exit_code == 0, copied.output
    assert "memory.mastra_messages: 2,500 read, 2,500 written" in copied.output
    assert "Row counts match in every table." in copied.output

    exported = runner.invoke(cli, ["export", source_url, "--domain", "datasets", "--dataset", "ds-1"])
    assert exported.exit_code == 0
    path = tmp_path / "ds.jsonl"
    path.write_text(exported.stdout)
    imported = runner.invoke(cli, ["import", backend_url, str(path)])
    assert imported.exit_code == 0, imported.output
    assert "datasets.mastra_dataset_items: 3 read, 3 written" in imported.output

    path.write_text(exported.stdout.replace('"name":"questions"', '"name":5'))
    refused = runner.invoke(cli, ["import", backend_url, str(path)])
    assert refused.exit_code == 1
    assert "line 2: name: Not a valid string." in refused.output

    unknown = runner.invoke(cli, ["copy", "--from", source_url, "--to", backend_url, "--domains", "memroy"])
    assert unknown.exit_code == 1 and "did you mean 'memory'" in unknown.output


@pytest.mark.backends("postgres")
def test_a_source_that_goes_down_mid_copy_fails_clearly_and_a_rerun_finishes(source_url, target, postgres_url,
                                                                            tmp_path):
    import psycopg2

    from composite_store import BackendUnavailableError

    copy_domains(source_url, target, domains=["memory"])
    copy_url = f"sqlite:///{tmp_path}/copy.db"

    def drop_the_source_connections(report, done, total):
        if report.table == "mastra_messages" and done == WRITE_CHUNK:
            with psycopg2.connect(postgres_url) as admin, admin.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                               "WHERE datname = current_database() AND pid <> pg_backend_pid()")
            admin.close()

    with pytest.raises(BackendUnavailableError) as caught:
        copy_domains(target, copy_url, domains=["memory"], progress=drop_the_source_connections,
                     chunk_size=WRITE_CHUNK)
    assert caught.value.id == "STORAGE_PG_COPY_DOMAINS_FAILED"
    assert caught.value.message.startswith("Cannot reach database postgresql://")
    with store_for_url(copy_url) as copied:
        assert copied.get_store("memory").count_rows()["mastra_messages"] == WRITE_CHUNK

    reports = copy_domains(target, copy_url, domains=["memory"])
    assert all(report.counts_match for report in reports)
    with store_for_url(copy_url) as copied:
        assert list(copied.get_store("memory").iter_messages()) == sorted(
            target.get_store("memory").iter_messages(), key=lambda message: message["id"])


# --------------------------------------------------------------------------- observability signals

SIGNAL_METHODS = ("logs", "metrics", "scores", "feedback")
LOGS = WRITE_CHUNK + 10  # two write chunks


def seed_signals(observability) -> None:
    """Spans and every signal of the current layout, with the values each kind keeps."""
    observability.batch_create_spans(records=[
        {"trace_id": "trace-1", "span_id": f"span-{i}", "parent_span_id": None if i == 0 else "span-0",
         "name": f"span {i}", "span_type": "agent_run", "is_event": False, "started_at": at(i),
         "ended_at": at(i + 1), "entity_type": "agent", "entity_name": "helper", "tags": ["a"]} for i in range(3)])
    observability.batch_create_logs(logs=[
        {"log_id": f"log-{i:05d}", "timestamp": at(i), "level": "info" if i % 3 else "error", "message": f"log {i}",
         "data": {"n": i}, "entity_type": "agent", "entity_name": "helper", "tags": ["x", "y"], "trace_id": "trace-1"}
        for i in range(LOGS)])
    # The last metric is recent: PostgreSQL's discovery looks back a day (spec 8.5).
    recent = datetime.now(timezone.utc).replace(microsecond=0)
    observability.batch_create_metrics(metrics=[
        {"metric_id": f"metric-{i}", "timestamp": at(i) if i < 19 else recent, "name": "latency_ms", "value": i * 1.5,
         "labels": {"status": "ok" if i % 2 else "error"}, "estimated_cost": 0.25, "cost_unit": "usd",
         "environment": "production", "entity_type": "agent", "entity_name": "helper"} for i in range(20)])
    observability.batch_create_scores(scores=[
        {"score_id": f"score-{i}", "timestamp": at(i), "scorer_id": "relevance", "score": i / 10,
         "metadata": {"judge": {"model": "m"}}, "reason": "fine"} for i in range(5)])
    # A score rewritten later: one current row (the rewrite) on every backend.
    observability.create_score(score={"score_id": "score-0", "timestamp": at(60), "scorer_id": "relevance",
                                      "score": 0.9})
    observability.batch_create_feedback(feedbacks=[
        {"feedback_id": f"feedback-{i}", "timestamp": at(i), "feedback_type": "thumbs",
         "value": "up" if i % 2 else 1, "comment": f"comment {i}", "feedback_user_id": "u-1",
         "review_status": "reviewed" if i == 2 else "needs-review"} for i in range(4)])


def signals_of(observability, *, review_status: bool = True) -> dict[str, list]:
    """Every signal record by its iter_* method (feedback's review status only where the store
    keeps it: ClickHouse reads needs-review) and the spans."""
    out = {name: list(getattr(observability, f"iter_{name}")()) for name in SIGNAL_METHODS}
    if not review_status:
        out["feedback"] = [record | {"review_status": "needs-review"} for record in out["feedback"]]
    out["spans"] = [{k: v for k, v in span.items() if k not in ("created_at", "updated_at")}
                    for span in observability.iter_spans()]
    return out


def keeps_review_status(observability) -> bool:
    return observability.backend.name != "CLICKHOUSE"


@pytest.fixture(scope="module")
def vnext_source_url(tmp_path_factory) -> str:
    """A SQLite file of the current observability layout holding spans and every signal."""
    url = f"sqlite:///{tmp_path_factory.mktemp('vnext_source')}/source.db?layout=vnext"
    with store_for_url(url) as source:
        source.init()
        seed_signals(source.get_store("observability"))
    return url


@pytest.fixture(scope="module")
def vnext_store(own_url):
    """A store of the backend under test whose observability has the current layout."""
    store = store_for_url(f"{own_url}{'&' if '?' in own_url else '?'}layout=vnext")
    store.init()
    yield store
    store.close()


@pytest.fixture
def vnext_target(vnext_store):
    """:func:`vnext_store`'s observability, emptied."""
    observability = vnext_store.get_store("observability")
    observability.dangerously_clear_all()
    return observability


def test_signals_move_between_current_layouts(vnext_source_url, vnext_store, vnext_target):
    reports = copy_domains(vnext_source_url, vnext_store, domains=["observability"])
    assert [report.table for report in reports] == ["spans", "mastra_log_events", "mastra_metric_events",
                                                    "mastra_score_events", "mastra_feedback_events"]
    assert all(report.counts_match for report in reports), [report.summary() for report in reports]
    assert [report.source_rows for report in reports] == [3, LOGS, 20, 5, 4]
    keeps = keeps_review_status(vnext_target)
    with store_for_url(vnext_source_url) as source:
        expected = signals_of(source.get_store("observability"), review_status=keeps)
    assert signals_of(vnext_target) == expected
    # Discovery is derived from the copied rows, up to date at the end of the copy.
    assert vnext_target.get_metric_names() == ["latency_ms"]
    assert vnext_target.get_entity_names(entity_type="agent") == ["helper"]
    # A re-run writes nothing.
    again = copy_domains(vnext_source_url, vnext_store, domains=["observability"])
    assert [(report.written, report.skipped) for report in again] == [(0, report.read) for report in again]


def test_different_signal_rows_under_the_same_ids_follow_the_policy(vnext_source_url, vnext_store, vnext_target):
    vnext_target.batch_create_logs(logs=[{"log_id": "log-00001", "timestamp": at(1), "level": "info",
                                          "message": "another text"}])
    with pytest.raises(ConflictError) as caught:
        copy_domains(vnext_source_url, vnext_store, domains=["observability"])
    assert caught.value.details["table"] == "observability.mastra_log_events"
    assert caught.value.details["keys"][0][0] == "log-00001"

    copy_domains(vnext_source_url, vnext_store, domains=["observability"], on_conflict="skip")
    [kept] = [log for log in vnext_target.iter_logs() if log["log_id"] == "log-00001"]
    assert kept["message"] == "another text"

    reports = copy_domains(vnext_source_url, vnext_store, domains=["observability"], on_conflict="overwrite")
    assert [report.overwritten for report in reports] == [0, 1, 0, 0, 0]
    [replaced] = [log for log in vnext_target.iter_logs() if log["log_id"] == "log-00001"]
    assert replaced["message"] == "log 1" and replaced["data"] == {"n": 1}
    assert all(report.counts_match for report in reports)


@pytest.mark.backends("clickhouse", "clickhouse-current")
def test_signals_move_from_clickhouse_to_sqlite(vnext_source_url, vnext_store, vnext_target, tmp_path):
    copy_domains(vnext_source_url, vnext_store, domains=["observability"])
    back = f"sqlite:///{tmp_path}/back.db?layout=vnext"
    reports = copy_domains(vnext_store, back, domains=["observability"])
    assert all(report.counts_match for report in reports) and len(reports) == 5
    with store_for_url(back) as copied:
        assert signals_of(copied.get_store("observability")) == signals_of(vnext_target)


def test_signals_export_and_import(vnext_source_url, vnext_store, vnext_target):
    out = io.StringIO()
    export_domain(vnext_source_url, "observability", out)
    lines = out.getvalue().splitlines()
    assert list(json.loads(lines[0])["tables"]) == ["spans", "mastra_log_events", "mastra_metric_events",
                                                    "mastra_score_events", "mastra_feedback_events"]
    assert len(lines) == 1 + 3 + LOGS + 20 + 5 + 4

    bad = list(lines)
    bad[4] = bad[4].replace('"level":"error"', '"level":"loud"')
    bad[-1] = bad[-1].replace('"feedback_type":"thumbs"', '"feedback_type":7')
    with pytest.raises(ValidationError) as caught:
        import_file(vnext_store, lambda: iter(bad))
    assert caught.value.fields == {"line 5": ["level: Must be one of: debug, info, warn, error, fatal."],
                                   "line " + str(len(bad)): ["feedback_type: Not a valid string."]}
    assert vnext_target.count_signal_rows()["mastra_log_events"] == 0

    reports = import_file(vnext_store, lambda: iter(lines))
    assert all(report.counts_match for report in reports), [report.summary() for report in reports]
    with store_for_url(vnext_source_url) as source:
        expected = signals_of(source.get_store("observability"), review_status=keeps_review_status(vnext_target))
    assert signals_of(vnext_target) == expected
    assert {report.written for report in import_file(vnext_store, lambda: iter(lines))} == {0}


def test_signals_stay_behind_when_the_target_has_the_legacy_layout(vnext_source_url, tmp_path, caplog):
    legacy = f"sqlite:///{tmp_path}/legacy.db"
    reports = copy_domains(vnext_source_url, legacy, domains=["observability"])
    assert [report.table for report in reports] == ["spans"]
    assert "the target's legacy layout cannot hold mastra_log_events, mastra_metric_events" in caplog.text
    out = io.StringIO()
    export_domain(vnext_source_url, "observability", out)
    lines = out.getvalue().splitlines()
    with pytest.raises(ValidationError) as caught:
        import_file(legacy, lambda: iter(lines))
    assert "mastra_log_events" in str(caught.value.fields["line 1"])


def test_the_move_benchmark_runs_at_smoke_size(monkeypatch):
    """``python -m benchmarks move`` at a few thousand rows on SQLite and PostgreSQL: the
    iteration against the driver's records by hand and its bare tuples, the memory rows, and the
    copy against the target's own bulk writes all run.  Timings are the benchmark's business."""
    from benchmarks import bench_move

    monkeypatch.setenv("COMPOSITE_STORE_BENCH_SCALE", "0.002")
    monkeypatch.setenv("COMPOSITE_STORE_BENCH_BACKENDS", "sqlite,postgres")
    rows = bench_move.main()
    measured = {(row["operation"], row["backend"]) for row in rows}
    for backend in ("sqlite", "postgres"):
        assert {("iterate messages", backend), ("iterate messages vs bare tuples", backend),
                ("iterate: tracemalloc peak", backend), ("iterate: RSS above start", backend)} <= measured
    assert {("copy messages from sqlite", "postgres"), ("copy spans from sqlite", "postgres")} <= measured
    assert all(row["library"] > 0 for row in rows), rows
    assert all(row["raw"] > 0 for row in rows if row["operation"].startswith(("iterate messages", "copy"))), rows
