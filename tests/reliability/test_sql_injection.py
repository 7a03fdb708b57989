"""SQL injection: a corpus of hostile strings used as ids, names, titles, metadata keys and values,
filter values and ``order_by`` in every domain is stored verbatim or rejected verbatim, never
executed (README *Concurrency, faults, bad input*: "Every value reaches SQL as a parameter,
including keys of metadata filters").

After each domain's run every table still exists and holds exactly the rows stored, and every
stored value reads back identical.
"""

from __future__ import annotations

import pytest

from composite_store import ValidationError
from tests.reliability import records as R
from tests.reliability.strategies import VALID_METADATA_KEY

pytestmark = pytest.mark.reliability

#: Strings that would change a statement if they were spliced into SQL on any of the three
#: databases (quotes, comments, statement separators, parameter markers, escapes, JSON paths,
#: LIKE wildcards).  Distinct, so each can be an id.
CORPUS = (
    "'; DROP TABLE mastra_threads; --",
    '"; DROP TABLE mastra_messages; --',
    "' OR '1'='1",
    "' OR 1=1 --",
    "1; DELETE FROM mastra_scorers",
    "Robert'); DROP TABLE mastra_ai_spans;--",
    "%s",
    "%(id)s",
    "{0}",
    "?",
    "$1",
    ":name",
    "\\'; DROP TABLE mastra_workflow_snapshot; --",
    "\\\\'",
    "' UNION ALL SELECT name FROM system.tables --",
    "' || (SELECT version()) || '",
    "$$; DROP TABLE mastra_threads; $$",
    "E'\\x27'",
    "/* comment */ SELECT 1",
    "line1\nline2\r\n\t; DROP",
    "100%_match",
    "ʼ OR ʼ1ʼ=ʼ1",
    "'); ATTACH DATABASE '/tmp/x.db' AS x; --",
    '" OR ""="',
    "`id`",
    "$.a') OR ('1'='1",
    "a'b\"c\\d",
    "') FINAL WHERE 1 --",
)

#: Characters that JSON text escapes: a search term holding one does not occur in the stored text.
JSON_ESCAPED = set('"\\\n\r\t')


def assert_rejected_verbatim(call, path: str) -> None:
    """``call`` raises a validation error naming ``path`` (the bad value is never run)."""
    with pytest.raises(ValidationError) as caught:
        call()
    assert any(name == path or name.startswith(f"{path}.") for name in caught.value.fields), caught.value.fields


def assert_bad_filter_keys_rejected(call) -> None:
    """Each corpus string as a metadata filter key is refused with status INVALID_METADATA_KEY,
    the key quoted verbatim in the message."""
    for value in CORPUS:
        assert not VALID_METADATA_KEY.fullmatch(value)
        with pytest.raises(ValidationError) as caught:
            call(value)
        assert caught.value.id.endswith("_INVALID_METADATA_KEY")
        assert f'"{value}"' in str(caught.value)


def assert_bad_order_rejected(call) -> None:
    """Each corpus string as ``order_by`` field or direction is refused."""
    for value in CORPUS:
        assert_rejected_verbatim(lambda value=value: call({"field": value}), "order_by.field")
        assert_rejected_verbatim(lambda value=value: call({"direction": value}), "order_by.direction")


# --------------------------------------------------------------------------- memory

def test_memory_stores_hostile_strings_verbatim(memory):
    for value in CORPUS:
        memory.save_thread(thread={"id": value, "resource_id": value, "title": value,
                                   "metadata": {value: value, "k": value}})
        memory.save_messages(messages=[{"id": value, "thread_id": value, "resource_id": value, "role": "user",
                                        "content": value, "type": value}])
        memory.save_resource(resource={"id": value, "working_memory": value, "metadata": {value: value}})
    for value in CORPUS:
        thread = memory.get_thread_by_id(thread_id=value, resource_id=value)
        assert (thread["id"], thread["title"], thread["metadata"]) == (value, value, {value: value, "k": value})
        assert [t["id"] for t in memory.list_threads(resource_id=value).items] == [value]
        assert [t["id"] for t in memory.list_threads(metadata={"k": value}).items] == [value]
        [message] = memory.list_messages(thread_id=value, resource_id=value).items
        assert (message["id"], message["type"], message["content"]["content"]) == (value, value, value)
        assert message["content"]["parts"] == [{"type": "text", "text": value}]
        assert [m["id"] for m in memory.list_messages_by_id(message_ids=[value])] == [value]
        resource = memory.get_resource_by_id(resource_id=value)
        assert (resource["working_memory"], resource["metadata"]) == (value, {value: value})
    assert_bad_filter_keys_rejected(lambda key: memory.list_threads(metadata={key: "x"}))
    assert_bad_order_rejected(lambda order_by: memory.list_threads(order_by=order_by))
    assert memory.count_rows() == {"mastra_threads": len(CORPUS), "mastra_messages": len(CORPUS),
                                   "mastra_resources": len(CORPUS)}


# --------------------------------------------------------------------------- workflows

def test_workflows_store_hostile_strings_verbatim(workflows):
    for value in CORPUS:
        workflows.persist_workflow_snapshot(workflow_name=value, run_id=value, resource_id=value,
                                            snapshot={"runId": value, "status": value, "context": {value: value}})
    for value in CORPUS:
        run = workflows.get_workflow_run_by_id(run_id=value, workflow_name=value)
        assert (run["resource_id"], run["snapshot"]) == (value, {"runId": value, "status": value,
                                                                 "context": {value: value}})
        for filters in ({"workflow_name": value}, {"status": value}, {"resource_id": value}):
            assert [r["run_id"] for r in workflows.list_workflow_runs(**filters).items] == [value]
        assert workflows.list_workflow_runs(thread_id=value).total == 0
        context = workflows.update_workflow_results(workflow_name=value, run_id=value, step_id=value,
                                                    result={"status": "success", value: value})
        assert context[value] == {"status": "success", value: value}
    assert workflows.count_rows() == {"mastra_workflow_snapshot": len(CORPUS)}


# --------------------------------------------------------------------------- scores

def test_scores_store_hostile_strings_verbatim(scores):
    for value in CORPUS:
        scores.save_score(score=R.score(value, scorer_id=value, run_id=value, entity_id=value, trace_id=value,
                                        span_id=value, reason=value, organization_id=value, metadata={value: value},
                                        scorer={"id": value, value: value}))
    for value in CORPUS:
        score = scores.get_score_by_id(id=value)
        assert (score["scorer_id"], score["reason"], score["metadata"], score["scorer"]) == \
            (value, value, {value: value}, {"id": value, value: value})
        pages = [scores.list_scores_by_scorer_id(scorer_id=value, entity_id=value, entity_type="AGENT"),
                 scores.list_scores_by_run_id(run_id=value, filters={"organization_id": value}),
                 scores.list_scores_by_entity_id(entity_id=value, entity_type="AGENT"),
                 scores.list_scores_by_span(trace_id=value, span_id=value)]
        assert [[s["id"] for s in page.items] for page in pages] == [[value]] * 4
        assert scores.list_scores_by_scorer_id(scorer_id=value, entity_type=value).total == 0
    assert scores.count_rows() == {"mastra_scorers": len(CORPUS)}


# --------------------------------------------------------------------------- observability

def test_observability_stores_hostile_strings_verbatim(observability):
    observability.batch_create_spans(records=[
        R.span(value, value, name=value, entity_id=value, tags=[value], input=value, attributes={value: value},
               metadata={value: value, "k": value}) for value in CORPUS])
    for value in CORPUS:
        span = observability.get_span(trace_id=value, span_id=value)
        assert (span["name"], span["tags"], span["input"], span["attributes"], span["metadata"]) == \
            (value, [value], value, {value: value}, {value: value, "k": value})
        for filters in ({"trace_id": value}, {"entity_id": value}, {"tags": [value]}, {"metadata": {"k": value}}):
            assert [t["trace_id"] for t in observability.list_traces(filters=filters).items] == [value], filters
    assert_bad_filter_keys_rejected(lambda key: observability.list_traces(filters={"metadata": {key: 1}}))
    assert_bad_order_rejected(lambda order_by: observability.list_traces(order_by=order_by))
    observability.batch_delete_traces(trace_ids=[CORPUS[0]], organization_id=None)
    assert observability.get_trace(trace_id=CORPUS[0]) is None
    assert observability.count_rows() == {"mastra_ai_spans": len(CORPUS) - 1}


# --------------------------------------------------------------------------- agents

@pytest.mark.backends("sqlite", "postgres")
def test_agents_store_hostile_strings_verbatim(agents):
    for value in CORPUS:
        agents.create_agent(agent={"id": value, "name": value, "instructions": value, "author_id": value,
                                   "model": {"provider": value, "name": value}, "metadata": {value: value, "k": value}})
        agents.create_version(agent_id=value, version_number=2, name=value, instructions=value,
                              model={"provider": value, "name": value}, change_message=value)
    for value in CORPUS:
        agent = agents.get_agent_by_id(id=value)
        assert (agent["author_id"], agent["metadata"]) == (value, {value: value, "k": value})
        assert [a["id"] for a in agents.list_agents(metadata={"k": value}).items] == [value]
        assert [a["id"] for a in agents.list_agents(author_id=value).items] == [value]
        version = agents.get_version_by_number(agent_id=value, version_number=2)
        assert (version["name"], version["instructions"], version["change_message"]) == (value, value, value)
        updated = agents.update_agent(id=value, metadata={value: "changed"})
        assert updated["metadata"] == {value: "changed", "k": value}
    assert_bad_filter_keys_rejected(lambda key: agents.list_agents(metadata={key: True}))
    assert_bad_order_rejected(lambda order_by: agents.list_agents(order_by=order_by))
    assert agents.count_rows() == {"mastra_agents": len(CORPUS), "mastra_agent_versions": 2 * len(CORPUS),
                                  "mastra_favorites": 0}


# --------------------------------------------------------------------------- datasets

@pytest.mark.backends("sqlite", "postgres")
def test_datasets_store_hostile_strings_verbatim(datasets):
    for value in CORPUS:
        datasets.create_dataset(id=value, name=value, description=value, metadata={value: value}, tags=[value],
                                organization_id=value)
    datasets.create_dataset(id="all", name="all")
    items = datasets.batch_insert_items(dataset_id="all", items=[
        {"input": {"q": value}, "external_id": value, "metadata": {value: value}} for value in CORPUS])
    for value, item in zip(CORPUS, items, strict=True):
        dataset = datasets.get_dataset_by_id(id=value, filters={"organization_id": value})
        assert (dataset["name"], dataset["description"], dataset["metadata"], dataset["tags"]) == \
            (value, value, {value: value}, [value])
        assert (item["external_id"], item["input"], item["metadata"]) == (value, {"q": value}, {value: value})
        assert datasets.get_item_by_id(id=item["id"]) == item
        named = {d["id"] for d in datasets.list_datasets(filters={"name": value}, per_page=False).items}
        assert named == {other for other in CORPUS if value.lower() in other.lower()}
        if not JSON_ESCAPED & set(value):
            found = {i["external_id"] for i in datasets.list_items(dataset_id="all", search=value, per_page=False).items}
            assert found == {other for other in CORPUS if value.lower() in other.lower()}, value
    assert_bad_order_rejected(lambda order_by: datasets.list_datasets(order_by=order_by))
    assert datasets.count_rows() == {"mastra_datasets": len(CORPUS) + 1, "mastra_dataset_items": len(CORPUS),
                                     "mastra_dataset_versions": 1}


# --------------------------------------------------------------------------- experiments

@pytest.mark.backends("sqlite", "postgres")
def test_experiments_store_hostile_strings_verbatim(experiments):
    for value in CORPUS:
        experiments.create_experiment(**R.experiment(value, name=value, description=value, metadata={value: value},
                                                     dataset_id=value, target_id=value, agent_version=value,
                                                     organization_id=value))
        experiments.add_experiment_result(**R.result(value, value, input={value: value}, trace_id=value,
                                                     tags=[value], output=value))
    for value in CORPUS:
        experiment = experiments.get_experiment_by_id(id=value, filters={"organization_id": value})
        assert (experiment["name"], experiment["metadata"], experiment["agent_version"]) == \
            (value, {value: value}, value)
        for filters in ({"dataset_id": value}, {"target_id": value}, {"agent_version": value}):
            assert [e["id"] for e in experiments.list_experiments(**filters).items] == [value]
        [result] = experiments.list_experiment_results(experiment_id=value, trace_id=value, tags=[value],
                                                       filters={"organization_id": value}).items
        assert (result["item_id"], result["input"], result["output"]) == (value, {value: value}, value)
    assert_bad_order_rejected(lambda order_by: experiments.list_experiments(order_by=order_by))
    assert experiments.count_rows() == {"mastra_experiments": len(CORPUS),
                                        "mastra_experiment_results": len(CORPUS)}
