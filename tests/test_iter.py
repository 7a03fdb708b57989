"""Streaming reads (issue 21): every domain's ``iter_*`` methods on every backend of the matrix.

Each iterator must give the list methods' records, in a stable key order, in chunks (the tests
use chunks smaller than the data, so the keyset continuation is exercised), and release what it
holds when it is closed early.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from composite_store import ValidationError
from tests.conftest import MATRIX
from tests.test_agents import favourite

T0 = datetime(2026, 1, 1, 12, 0, 0, 123000, tzinfo=timezone.utc)
SQL_ONLY = pytest.mark.backends("sqlite", "postgres")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def by_id(records: list[dict], key: str = "id") -> list[dict]:
    return sorted(records, key=lambda record: record[key])


def key_order(backend: str, records: list[dict], *key: str) -> list[dict]:
    """``records`` in the order ``iter_*`` walks their table: its key (``key``, default the id);
    on ClickHouse its sorting key, ``created_at`` first."""
    key = key or ("id",)
    if MATRIX[backend].family == "clickhouse":
        key = ("created_at", *key)
    return sorted(records, key=lambda record: tuple(record[name] for name in key))


def save_conversation(memory, thread_id: str, resource_id: str, count: int) -> None:
    memory.save_thread(thread={"id": thread_id, "resource_id": resource_id, "title": thread_id,
                               "metadata": {"kind": resource_id}})
    memory.save_messages(messages=[
        {"id": f"{thread_id}-m{index:03d}", "thread_id": thread_id, "resource_id": resource_id, "role": "user",
         "content": f"message {index}", "created_at": at(index)} for index in range(count)])


# --------------------------------------------------------------------------- memory

def test_iter_messages_of_a_thread_a_resource_and_all(memory, backend):
    save_conversation(memory, "t-1", "r-1", 13)
    save_conversation(memory, "t-2", "r-1", 4)
    save_conversation(memory, "t-3", "r-2", 6)

    listed = memory.list_messages(thread_id="t-1", per_page=False).items
    streamed = list(memory.iter_messages(thread_id="t-1", chunk_size=5))
    assert streamed == key_order(backend, listed)
    of_resource = list(memory.iter_messages(resource_id="r-1", chunk_size=3))
    assert of_resource == key_order(backend, of_resource)
    assert sorted(m["id"] for m in of_resource) == sorted(
        [f"t-1-m{i:03d}" for i in range(13)] + [f"t-2-m{i:03d}" for i in range(4)])
    everything = list(memory.iter_messages(chunk_size=4))
    assert len(everything) == 23 and everything == key_order(backend, everything)
    assert list(memory.iter_messages(thread_id="t-1", resource_id="r-2")) == []
    assert list(memory.iter_messages(thread_id="unknown")) == []


def test_iter_messages_takes_the_list_filters(memory, backend):
    """Threads (one or a list), a date range and a metadata filter, as list_messages takes them."""
    memory.save_thread(thread={"id": "t-1", "resource_id": "r-1"})
    memory.save_thread(thread={"id": "t-2", "resource_id": "r-1"})
    memory.save_messages(messages=[
        {"id": f"m-{index:02d}", "thread_id": "t-1" if index % 2 else "t-2", "resource_id": "r-1", "role": "user",
         "content": {"format": 2, "parts": [{"type": "text", "text": str(index)}], "metadata": {"n": index % 3}},
         "created_at": at(index)} for index in range(20)])
    arguments = [{"thread_id": ["t-1", "t-2"], "metadata": {"n": 1}},
                 {"thread_id": "t-1", "date_range": {"start": at(5), "end": at(11), "end_exclusive": True}},
                 {"thread_id": ["t-2"], "metadata": {"n": 0}, "date_range": {"end": at(10)}}]
    for filters in arguments:
        listed = memory.list_messages(**filters, per_page=False).items
        streamed = list(memory.iter_messages(**filters, chunk_size=2))
        assert streamed == key_order(backend, listed) and streamed, filters
    assert [m["id"] for m in memory.iter_messages(metadata={"n": 2}, date_range={"start": at(15)})] == [
        m["id"] for m in key_order(backend, memory.list_messages_by_resource_id(
            resource_id="r-1", metadata={"n": 2}, date_range={"start": at(15)}, per_page=False).items)]
    with pytest.raises(ValidationError) as caught:
        memory.iter_messages(thread_id=[], date_range={"start": "soon"}, metadata=5)
    assert set(caught.value.fields) == {"thread_id", "date_range.start", "metadata"}


def test_iter_threads_and_resources(memory, backend):
    for index in range(7):
        save_conversation(memory, f"t-{index}", f"r-{index % 2}", 0)
    memory.save_resource(resource={"id": "r-0", "working_memory": "notes"})

    listed = memory.list_threads(resource_id="r-1", per_page=False).items
    assert list(memory.iter_threads(resource_id="r-1", chunk_size=2)) == key_order(backend, listed)
    assert sorted(t["id"] for t in memory.iter_threads(metadata={"kind": "r-0"}, chunk_size=1)) == [
        "t-0", "t-2", "t-4", "t-6"]
    every = list(memory.iter_threads(chunk_size=3))
    assert sorted(t["id"] for t in every) == [f"t-{i}" for i in range(7)] and every == key_order(backend, every)
    assert list(memory.iter_resources()) == [memory.get_resource_by_id(resource_id="r-0")]


def test_arguments_are_checked_at_the_call(memory, backend):
    with pytest.raises(ValidationError) as caught:
        memory.iter_messages(thread_id=5, chunk_size=0)
    assert caught.value.id == f"STORAGE_{MATRIX[backend].error_name}_ITER_MESSAGES_INVALID_INPUT"
    assert set(caught.value.fields) == {"thread_id", "chunk_size"}


def test_closing_early_releases_the_connection_and_writes_go_on(memory, make_store, backend):
    save_conversation(memory, "t-1", "r-1", 10)
    database = memory.backend.database
    in_use = len(getattr(database, "_in_use", ()))
    messages = memory.iter_messages(chunk_size=3)
    next(messages)
    # A write while iterating commits at once: another connection sees it.
    memory.save_messages(messages=[{"id": "t-1-new", "thread_id": "t-1", "resource_id": "r-1", "role": "user",
                                    "content": "written meanwhile"}])
    other = make_store().get_store("memory")
    assert other.list_messages_by_id(message_ids=["t-1-new"])[0]["id"] == "t-1-new"
    messages.close()
    assert len(getattr(database, "_in_use", ())) == in_use  # PostgreSQL: the cursor's connection is back
    assert not database.in_transaction()
    assert len(list(memory.iter_messages(chunk_size=4))) == 11


@pytest.mark.backends("postgres")
def test_postgres_reads_through_a_named_cursor(memory):
    save_conversation(memory, "t-1", "r-1", 5)
    database = memory.backend.database
    in_use_before = set(database._in_use)  # the backend is shared: earlier tests may hold this thread's connection
    messages = memory.iter_messages(chunk_size=2)
    next(messages)
    [conn] = [pooled.connection for key, pooled in database._in_use.items() if key not in in_use_before]
    with conn.cursor() as cursor:  # no statement runs between chunks: ask the connection itself
        cursor.execute("SELECT name FROM pg_cursors")
        assert [name for (name,) in cursor.fetchall()][0].startswith("composite_store_iter_")
    messages.close()
    assert set(database._in_use) == in_use_before


# --------------------------------------------------------------------------- workflows and scores

def test_iter_workflow_runs(workflows, backend):
    for index in range(9):
        workflows.persist_workflow_snapshot(workflow_name=f"wf-{index % 2}", run_id=f"run-{index}",
                                            resource_id="r-1" if index < 3 else None,
                                            snapshot={"runId": f"run-{index}", "status": "success", "context": {}})
    listed = workflows.list_workflow_runs(workflow_name="wf-1").items
    streamed = list(workflows.iter_workflow_runs(workflow_name="wf-1", chunk_size=2))
    assert by_id(streamed, "run_id") == by_id(listed, "run_id")
    of_resource = list(workflows.iter_workflow_runs(resource_id="r-1", chunk_size=1))
    assert sorted(run["run_id"] for run in of_resource) == ["run-0", "run-1", "run-2"]
    every = list(workflows.iter_workflow_runs(chunk_size=4))
    assert len(every) == 9
    if MATRIX[backend].family != "clickhouse":  # the key: workflow name, then run id
        assert [run["run_id"] for run in of_resource] == ["run-0", "run-2", "run-1"]
        assert every == key_order(backend, every, "workflow_name", "run_id")


def test_iter_workflow_runs_takes_the_list_filters(workflows, backend):
    for index in range(8):
        workflows.persist_workflow_snapshot(
            workflow_name="wf", run_id=f"run-{index}", resource_id="r-1",
            snapshot={"runId": f"run-{index}", "status": "failed" if index % 3 == 0 else "success", "context": {}})
    [third] = [run for run in workflows.list_workflow_runs().items if run["run_id"] == "run-3"]
    for filters in ({"status": "failed"}, {"status": "success", "resource_id": "r-1"},
                    {"from_date": third["created_at"]}, {"to_date": third["created_at"], "workflow_name": "wf"}):
        listed = workflows.list_workflow_runs(**filters).items
        streamed = list(workflows.iter_workflow_runs(**filters, chunk_size=2))
        assert by_id(streamed, "run_id") == by_id(listed, "run_id") and streamed, filters
    with pytest.raises(ValidationError) as caught:
        workflows.iter_workflow_runs(status=5, from_date="soon")
    assert set(caught.value.fields) == {"status", "from_date"}


def score(scorer_id: str, run_id: str, **overrides) -> dict:
    record = {"scorer_id": scorer_id, "entity_id": "agent-1", "entity_type": "AGENT", "source": "LIVE",
              "run_id": run_id, "score": 0.5, "scorer": {"id": scorer_id}, "entity": {"id": "agent-1"},
              "input": [], "output": {}}
    record.update(overrides)
    return record


def test_iter_scores_by_scorer_run_entity_and_all(scores, backend):
    scores.save_scores(scores=[score(f"sc-{i % 3}", f"run-{i % 2}", id=f"s-{i:02d}",
                                     source="TEST" if i % 2 == 0 else "LIVE") for i in range(11)])
    listed = scores.list_scores_by_scorer_id(scorer_id="sc-1", per_page=False).items
    assert list(scores.iter_scores(scorer_id="sc-1", chunk_size=2)) == key_order(backend, listed)
    tested = scores.list_scores_by_scorer_id(scorer_id="sc-0", source="TEST", per_page=False).items
    assert len(tested) == 2
    assert list(scores.iter_scores(scorer_id="sc-0", source="TEST", chunk_size=1)) == key_order(backend, tested)
    with pytest.raises(ValidationError) as caught:
        scores.iter_scores(source="SOMETIMES")
    assert caught.value.fields == {"source": ["Must be one of: LIVE, TEST."]}
    assert sorted(s["id"] for s in scores.iter_scores(run_id="run-0", chunk_size=3)) == [
        f"s-{i:02d}" for i in range(0, 11, 2)]
    assert len(list(scores.iter_scores(entity_id="agent-1", entity_type="AGENT", chunk_size=5))) == 11
    every = list(scores.iter_scores(chunk_size=4))
    assert sorted(s["id"] for s in every) == [f"s-{i:02d}" for i in range(11)]
    assert every == key_order(backend, every)


# --------------------------------------------------------------------------- observability

def span(trace_id: str, span_id: str, started: float, parent: str | None = None) -> dict:
    return {"trace_id": trace_id, "span_id": span_id, "parent_span_id": parent, "name": span_id,
            "span_type": "agent_run", "entity_type": "agent", "entity_id": "agent-1", "is_event": False,
            "started_at": at(started), "ended_at": at(started + 1)}


def spans_of_three_traces() -> list[dict]:
    spans = []
    for offset, trace in enumerate(("trace-a", "trace-b", "trace-c")):
        spans.append(span(trace, "root", offset * 10))  # roots start 10 s apart
        spans.extend(span(trace, f"child-{i}", 5 - i, parent="root") for i in range(4))
    return spans


@pytest.fixture(scope="module")
def vnext_observability(backend, own_url):
    """Observability of the current layout on SQLite or PostgreSQL (ClickHouse's store has it)."""
    if MATRIX[backend].family == "clickhouse":
        pytest.skip("the store's own layout on ClickHouse")
    from composite_store.postgres import ObservabilityPG
    from composite_store.sqlite import ObservabilitySQLite

    repository = (ObservabilitySQLite(url=own_url, layout="vnext") if MATRIX[backend].family == "sqlite"
                  else ObservabilityPG(connection_string=own_url, layout="vnext"))
    repository.init()
    yield repository
    repository.close()


@pytest.mark.parametrize("layout", ["store", "legacy", "vnext"])
def test_iter_spans_and_traces(layout, store, observability, request):
    """The store's own layout (ClickHouse: the current one), the legacy one on every backend and
    the current one on SQLite and PostgreSQL."""
    repository = {"store": lambda: store.get_store("observability"), "legacy": lambda: observability,
                  "vnext": lambda: request.getfixturevalue("vnext_observability")}[layout]()
    repository.dangerously_clear_all()
    repository.batch_create_spans(records=spans_of_three_traces())

    streamed = list(repository.iter_spans(chunk_size=4))
    assert [(s["trace_id"], s["span_id"]) for s in streamed] == sorted(
        (s["trace_id"], s["span_id"]) for s in spans_of_three_traces())
    assert streamed[0] == repository.get_span(trace_id="trace-a", span_id="child-0")
    assert [s["span_id"] for s in repository.iter_spans(trace_id="trace-b", chunk_size=2)] == [
        "child-0", "child-1", "child-2", "child-3", "root"]
    traces = list(repository.iter_traces(chunk_size=3))
    assert [trace["trace_id"] for trace in traces] == ["trace-a", "trace-b", "trace-c"]
    assert traces[1] == repository.get_trace(trace_id="trace-b")
    # The list_traces filters pick traces by their root; every span of a picked trace comes.
    later = {"started_at": {"start": at(10)}}
    assert [trace["trace_id"] for trace in repository.list_traces(filters=later, per_page=False).items] == [
        "trace-c", "trace-b"]
    assert list(repository.iter_traces(filters=later, chunk_size=2)) == traces[1:]
    assert list(repository.iter_traces(filters={"entity_name": "nobody"})) == []
    with pytest.raises(ValidationError) as caught:
        repository.iter_traces(filters={"started_at": "yesterday"}, chunk_size=0)
    assert set(caught.value.fields) == {"filters.started_at", "chunk_size"}


# --------------------------------------------------------------------------- agents, datasets, experiments

@SQL_ONLY
def test_iter_agents_with_versions(agents):
    for index in range(5):
        agents.create_agent(agent={"id": f"a-{index}", "name": "Helper", "instructions": "Be brief",
                                   "model": {"provider": "openai", "name": "gpt-4o"}})
    agents.create_version(agent_id="a-3", version_number=2, name="Second", instructions="Be kind",
                          model={"provider": "openai", "name": "gpt-4o"})
    listed = agents.list_agents(per_page=False).items
    assert list(agents.iter_agents(chunk_size=2)) == by_id(listed)
    [fourth] = [agent for agent in agents.iter_agents(with_versions=True, chunk_size=2) if agent["id"] == "a-3"]
    assert fourth["versions"] == sorted(agents.list_versions(agent_id="a-3").items,
                                        key=lambda version: version["version_number"])
    assert [v["version_number"] for v in fourth["versions"]] == [1, 2]
    assert [v["agent_id"] for v in agents.iter_versions(agent_id="a-3", chunk_size=1)] == ["a-3", "a-3"]
    with agents.backend.counting_statements() as log:  # the versions of a chunk in one query, not one per agent
        every = list(agents.iter_agents(with_versions=True, chunk_size=5))
    assert [len(agent["versions"]) for agent in every] == [1, 1, 1, 2, 1]
    assert log.count <= 3, log.statements


@SQL_ONLY
def test_iter_agents_takes_the_filters_of_list_agents(agents):
    """Per filter of ``list_agents``, ``iter_agents`` reads the same records (in id order), and
    refuses the same bad values with the same fields."""
    model = {"provider": "openai", "name": "gpt-4o"}
    for index, (author, visibility, team) in enumerate([("ann", "private", "a"), ("bob", "public", "b"),
                                                        (None, "public", "a"), ("ann", "public", "b")]):
        agents.create_agent(agent={"id": f"f-{index}", "name": "Helper", "instructions": "Be brief", "model": model,
                                   "author_id": author, "visibility": visibility, "metadata": {"team": team}})
    agents.update_agent(id="f-2", status="published")
    favourite(agents, "u1", "f-3")
    favourite(agents, "u1", "f-1")
    favourite(agents, "u1", "f-0", entity_type="skill")  # not an agent favourite
    for arguments, expected in [
        ({}, ["f-0", "f-1", "f-2", "f-3"]), ({"status": "published"}, ["f-2"]),
        ({"author_id": "ann"}, ["f-0", "f-3"]), ({"visibility": "public", "metadata": {"team": "a"}}, ["f-2"]),
        ({"entity_ids": ["f-3", "f-0", "f-3"]}, ["f-0", "f-3"]), ({"entity_ids": []}, []),
        ({"pin_favorited_for": "u1"}, ["f-0", "f-1", "f-2", "f-3"]),
        ({"pin_favorited_for": "u1", "favorited_only": True}, ["f-1", "f-3"]), ({"favorited_only": True}, []),
        ({"pin_favorited_for": "u1", "favorited_only": True, "author_id": "ann"}, ["f-3"]),
    ]:
        streamed = list(agents.iter_agents(**arguments, chunk_size=1))
        assert streamed == by_id(agents.list_agents(**arguments, per_page=False).items), arguments
        assert [agent["id"] for agent in streamed] == expected, arguments
    [published] = agents.iter_agents(status="published", with_versions=True)
    assert [version["version_number"] for version in published["versions"]] == [1]
    bad = {"status": "gone", "visibility": "team", "author_id": "", "metadata": {"team": object()},
           "entity_ids": "f-1", "pin_favorited_for": 5, "favorited_only": "yes"}
    with pytest.raises(ValidationError) as listed:
        agents.list_agents(**bad)
    with pytest.raises(ValidationError) as streamed:
        agents.iter_agents(**bad)
    assert streamed.value.fields == listed.value.fields and len(listed.value.fields) == len(bad)
    assert streamed.value.id == listed.value.id.replace("LIST_AGENTS", "ITER_AGENTS")


@SQL_ONLY
def test_iter_dataset_items_of_a_version(datasets):
    dataset = datasets.create_dataset(id="ds-1", name="d")
    first = datasets.batch_insert_items(dataset_id="ds-1", items=[{"input": i} for i in range(7)])
    datasets.delete_item(id=first[0]["id"], dataset_id="ds-1")
    datasets.add_item(dataset_id="ds-1", input="late")

    current = list(datasets.iter_dataset_items(dataset_id="ds-1", chunk_size=2))
    assert current == by_id(datasets.list_items(dataset_id="ds-1", per_page=False).items)
    assert len(current) == 7
    at_one = list(datasets.iter_dataset_items(dataset_id="ds-1", version=1, chunk_size=3))
    assert by_id(at_one) == by_id(datasets.get_items_by_version(dataset_id="ds-1", version=1))
    assert {item["input"] for item in at_one} == set(range(7))
    assert [d["id"] for d in datasets.iter_datasets()] == [dataset["id"]]
    datasets.create_dataset(id="ds-2", name="other", target_ids=["agent-1"])
    for filters in ({"name": "OTH"}, {"target_ids": ["agent-1", "agent-2"]}):
        assert [d["id"] for d in datasets.iter_datasets(filters=filters, chunk_size=1)] == [
            d["id"] for d in datasets.list_datasets(filters=filters).items] == ["ds-2"]
    # The list's search (in the input's or ground truth's JSON text, any case) and version.
    for arguments in ({"search": "LATE"}, {"search": "3", "version": 1}):
        listed = datasets.list_items(dataset_id="ds-1", per_page=False, **arguments).items
        streamed = list(datasets.iter_dataset_items(dataset_id="ds-1", chunk_size=1, **arguments))
        assert streamed == by_id(listed) and len(streamed) == 1, arguments
    with pytest.raises(ValidationError) as caught:
        datasets.iter_dataset_items(dataset_id="ds-1", search=3, filters={"organization_id": 5})
    assert {"search", "filters.organization_id"} <= set(caught.value.fields)


@SQL_ONLY
def test_iter_experiment_results(experiments):
    experiment = experiments.create_experiment(total_items=9, id="ex-1")
    experiments.create_experiment(total_items=1, id="ex-2")
    for index in range(9):
        experiments.add_experiment_result(experiment_id="ex-1", item_id=f"item-{index}", input={"n": index},
                                          started_at=at(index), completed_at=at(index + 1),
                                          trace_id=f"trace-{index % 2}", tags=["a", "b"] if index % 3 else ["a"],
                                          status="reviewed" if index < 4 else "complete")
    experiments.add_experiment_result(experiment_id="ex-2", item_id="item-0", input={}, started_at=T0,
                                      completed_at=at(1))
    listed = experiments.list_experiment_results(experiment_id="ex-1", per_page=False).items
    assert list(experiments.iter_experiment_results(experiment_id="ex-1", chunk_size=4)) == by_id(listed)
    assert len(list(experiments.iter_experiment_results(chunk_size=3))) == 10
    # The list's filters: a trace, a status, every one of the tags.
    for filters in ({"trace_id": "trace-1"}, {"status": "reviewed", "tags": ["b"]}, {"tags": ["a"]}):
        listed = experiments.list_experiment_results(experiment_id="ex-1", per_page=False, **filters).items
        streamed = list(experiments.iter_experiment_results(experiment_id="ex-1", chunk_size=2, **filters))
        assert streamed == by_id(listed) and streamed, filters
    with pytest.raises(ValidationError) as caught:
        experiments.iter_experiment_results(status="done", tags="a", chunk_size=0)
    assert set(caught.value.fields) == {"status", "tags", "chunk_size"}
    assert [e["id"] for e in experiments.iter_experiments(chunk_size=1)] == [experiment["id"], "ex-2"]
    experiments.update_experiment(id="ex-2", status="running")
    assert [e["id"] for e in experiments.iter_experiments(status="running", chunk_size=1)] == [
        e["id"] for e in experiments.list_experiments(status="running").items] == ["ex-2"]
    with pytest.raises(ValidationError) as caught:
        experiments.iter_experiments(status="sleeping", trial_index=-1)
    assert set(caught.value.fields) == {"status", "trial_index"}


def test_a_chunk_of_one_row_walks_every_key(memory, backend):
    """chunk_size=1: every continuation starts right after the previous key (no row twice or lost)."""
    ids = [str(uuid.uuid4()) for _ in range(6)]
    memory.save_thread(thread={"id": "t", "resource_id": "r"})
    memory.save_messages(messages=[{"id": i, "thread_id": "t", "resource_id": "r", "role": "user", "content": "x"}
                                   for i in ids])
    streamed = list(memory.iter_messages(thread_id="t", chunk_size=1))
    assert sorted(m["id"] for m in streamed) == sorted(ids) and streamed == key_order(backend, streamed)
