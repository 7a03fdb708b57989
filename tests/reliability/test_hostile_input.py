"""Hostile input, generated: invalid records, arguments, filters, orderings and pages for every
write and list method of every domain (README *Concurrency, faults, bad input*: "Bad input gets a
validation error naming each bad field, and nothing is written"; *Input values*, *Pagination*,
*Ordering*, *Metadata filters*, *Tenancy scope*, *Errors*).

Each case starts from a valid call and lets hypothesis make it invalid in one to three ways.  Every
example must raise ``ValidationError`` (any other exception fails), name each bad field, and, for
list methods, carry the status the spec's precedence gives; after all examples the domain's row
counts, and for update methods the target record, are exactly as before.

Example counts are modest and the runs derandomized, so the suite is fast and repeatable.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from composite_store import ValidationError
from composite_store.schemas.agents import AGENT_STATUSES, SKILLS_FORMATS, VISIBILITIES
from composite_store.schemas.datasets import TARGET_TYPES, UNMOCKED_TOOL_POLICIES
from composite_store.schemas.experiments import EXPERIMENT_STATUSES, RESULT_STATUSES
from composite_store.schemas.memory import MESSAGE_ROLES
from composite_store.schemas.observability import ENTITY_TYPES, SPAN_TYPES
from composite_store.schemas.scores import SCORE_ENTITY_TYPES, SCORE_SOURCES
from tests.conftest import MATRIX
from tests.reliability import records as R
from tests.reliability.strategies import (BAD_ID, BAD_JSON, BAD_LIST, BAD_METADATA_KEY, BAD_METADATA_VALUE, BAD_OBJECT,
                                          BAD_OPTIONAL_ID, BAD_PAGE, BAD_PER_PAGE, BAD_REQUIRED_DATETIME,
                                          BAD_REQUIRED_OBJECT, BAD_STRING_LIST, BAD_TENANCY, GOOD_METADATA_KEY,
                                          NOT_A_DICT, NOT_DATETIME, NOT_JSON, NOT_STRING, OBJECT_WITH_BAD_MEMBER,
                                          UNKNOWN_KEY, bad_int, bad_order_by, not_one_of)

pytestmark = pytest.mark.reliability

EXAMPLES = 50
EVERYWHERE = ("memory", "workflows", "scores", "observability")

HYPOTHESIS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))


def tag() -> str:
    return f"hostile-{uuid.uuid4().hex[:12]}"


# --------------------------------------------------------------------------- values used below

BAD_SCORE = st.one_of(st.sampled_from([float("nan"), float("inf"), float("-inf"), True, False, None, "0.8", [0.8]]),
                      st.text(max_size=3))
BAD_BOOL = st.sampled_from(["maybe", 2.5, [], {}, 7, "yes please"])
BAD_CONTENT = st.one_of(st.integers(), st.lists(st.integers(), max_size=2), OBJECT_WITH_BAD_MEMBER,
                        st.builds(lambda: {"format": 3, "parts": []}), st.builds(lambda: {"format": 2, "parts": "x"}))
BAD_INSTRUCTIONS = st.one_of(st.integers(), st.none(), st.builds(dict),
                             st.lists(st.builds(lambda: {"type": "bogus", "content": "x"}), min_size=1, max_size=2),
                             st.lists(st.builds(lambda: {"type": "text"}), min_size=1, max_size=2))
BAD_MODEL = st.one_of(st.none(), st.text(max_size=4), st.just([]), st.builds(lambda: {"provider": "openai"}),
                      st.builds(lambda: {"provider": 1, "name": "m"}))
BAD_SCHEMA = st.one_of(NOT_A_DICT, st.builds(lambda: {"type": "nonsense"}), st.builds(lambda: {"properties": 5}))
BAD_TOOL_MOCKS = st.one_of(st.text(min_size=1, max_size=4), st.builds(dict),
                           st.lists(st.builds(lambda: {"toolName": 1, "args": {}, "output": 1}), min_size=1, max_size=1),
                           st.lists(st.builds(lambda: {"toolName": "t", "args": {}}), min_size=1, max_size=1))
BAD_SOURCE = st.one_of(st.text(min_size=1, max_size=4), st.builds(lambda: {"type": "bogus"}),
                       st.builds(lambda: {"referenceId": "x"}))
#: Strings datasets, agents and experiments reject (README *Characters that cannot be stored*).
UNSTORABLE_TEXT = st.sampled_from(["a\x00b", "\ud800", "x\udfff"])
BAD_PAYLOAD = st.one_of(NOT_JSON, UNSTORABLE_TEXT, st.builds(lambda s: {"q": s}, UNSTORABLE_TEXT))
BAD_PATHS_LIST = st.one_of(st.text(min_size=1, max_size=3), st.builds(lambda: {"a": 1}), st.lists(NOT_JSON, min_size=1,
                                                                                                   max_size=1))
BAD_PATHS_DICT = st.one_of(st.text(min_size=1, max_size=3), st.integers(), OBJECT_WITH_BAD_MEMBER)
BAD_EXPECTED_STATUS = st.one_of(st.just(""), st.just([]), st.lists(st.just(""), min_size=1, max_size=2),
                                st.integers(), st.builds(dict))
BAD_ERROR = st.one_of(NOT_A_DICT, st.builds(lambda: {"stack": "s"}), st.builds(lambda: {"message": 5}))
BAD_ATTESTATION = st.one_of(NOT_A_DICT, st.builds(lambda: {"runnerId": "r"}),
                            st.builds(lambda: {"runnerId": 1, "invocationId": "i"}))
BAD_PROVENANCE = st.one_of(NOT_A_DICT, st.builds(lambda: {"source": 5}), st.builds(lambda: {"metadata": "x"}))
BAD_UPDATES = st.one_of(st.just({}), st.builds(lambda: {"name": None}), st.builds(lambda: {"zz_unknown": 1}),
                        st.builds(lambda m: {"metadata": m}, OBJECT_WITH_BAD_MEMBER), st.text(max_size=3))


# --------------------------------------------------------------------------- write cases

@dataclass(frozen=True)
class WriteCase:
    """A write method, a valid call of it, and how each argument or record field can go bad."""

    domain: str
    method: str
    #: ``(repository, tag) -> kwargs`` of a valid call; creates what the call needs.
    call: Callable[[Any, str], dict[str, Any]]
    #: keyword argument → strategy of invalid values.
    arguments: dict[str, st.SearchStrategy] = field(default_factory=dict)
    #: the keyword argument holding a record (a dict) or records (a list of dicts), if any.
    record: str | None = None
    #: record field → strategy of invalid values.
    fields: dict[str, st.SearchStrategy] = field(default_factory=dict)
    #: record fields whose absence is an error.
    required: tuple[str, ...] = ()
    #: whether the record rejects unknown keys.
    unknown: bool = True
    #: whether the method takes ``**config`` keyword arguments, where unknown names are errors.
    config: bool = False
    #: ``(repository, kwargs) -> value`` that must not change (the target of an update).
    state: Callable[[Any, dict[str, Any]], Any] | None = None
    #: whether one error names every bad field; dataset item payloads report the first bad
    #: payload value alone (datasets.md §5.8, §7.1).
    reports_all: bool = True

    def __str__(self) -> str:
        return f"{self.domain}.{self.method}"


def existing_thread(memory: Any, t: str) -> str:
    memory.save_thread(thread=R.thread(f"{t}-thread"))
    memory.save_messages(messages=[R.message(f"{t}-m0", f"{t}-thread")])
    memory.save_resource(resource=R.resource(f"{t}-resource"))
    return f"{t}-thread"


def existing_run(workflows: Any, t: str) -> dict[str, Any]:
    workflows.persist_workflow_snapshot(workflow_name=t, run_id="run", snapshot=R.snapshot("run"))
    return {"workflow_name": t, "run_id": "run"}


def existing_span(observability: Any, t: str) -> dict[str, Any]:
    observability.batch_create_spans(records=[R.span(t, "root"), R.span(t, "child", "root")])
    return {"trace_id": t, "span_id": "child"}


def existing_item(datasets: Any, t: str) -> dict[str, Any]:
    datasets.create_dataset(**R.dataset(f"{t}-dataset"))
    item = datasets.add_item(dataset_id=f"{t}-dataset", input={"q": 1}, external_id="x0")
    return {"id": item["id"], "dataset_id": f"{t}-dataset"}


def existing_result(experiments: Any, t: str) -> dict[str, Any]:
    experiments.create_experiment(**R.experiment(f"{t}-experiment"))
    result = experiments.add_experiment_result(**R.result(f"{t}-experiment", "item-0"))
    return {"id": result["id"]}


MEMORY_CASES = [
    WriteCase("memory", "save_thread", lambda m, t: {"thread": R.thread(f"{t}-new")}, record="thread",
              fields={"id": BAD_ID, "resource_id": BAD_ID, "title": NOT_STRING, "metadata": BAD_OBJECT,
                      "created_at": NOT_DATETIME, "updated_at": NOT_DATETIME},
              required=("id", "resource_id"),
              arguments={"thread": st.one_of(NOT_A_DICT, st.none())}),
    WriteCase("memory", "save_messages",
              lambda m, t: {"messages": [R.message(f"{t}-new-{k}", existing_thread(m, t)) for k in range(3)]},
              record="messages",
              fields={"id": BAD_ID, "thread_id": BAD_ID, "resource_id": BAD_ID,
                      "role": not_one_of(MESSAGE_ROLES, nullable=False), "type": NOT_STRING, "content": BAD_CONTENT,
                      "created_at": NOT_DATETIME},
              required=("id", "thread_id", "resource_id", "role", "content"),
              arguments={"messages": st.one_of(st.text(max_size=3), st.builds(dict), st.integers())}),
    WriteCase("memory", "save_resource", lambda m, t: {"resource": R.resource(f"{t}-new")}, record="resource",
              fields={"id": BAD_ID, "working_memory": NOT_STRING, "metadata": BAD_OBJECT, "created_at": NOT_DATETIME,
                      "updated_at": NOT_DATETIME},
              required=("id",)),
    WriteCase("memory", "update_thread", lambda m, t: {"id": existing_thread(m, t), "title": "renamed"},
              arguments={"title": st.one_of(NOT_STRING, st.none()), "metadata": st.one_of(BAD_OBJECT, st.none())},
              state=lambda m, kw: m.get_thread_by_id(thread_id=kw["id"])),
    WriteCase("memory", "update_resource",
              lambda m, t: {"resource_id": (existing_thread(m, t), f"{t}-resource")[1], "working_memory": "# new"},
              arguments={"working_memory": NOT_STRING, "metadata": BAD_OBJECT},
              state=lambda m, kw: m.get_resource_by_id(resource_id=kw["resource_id"])),
    WriteCase("memory", "update_messages",
              lambda m, t: {"messages": [{"id": (existing_thread(m, t), f"{t}-m0")[1], "role": "assistant"}]},
              record="messages",
              fields={"id": BAD_ID, "role": not_one_of(MESSAGE_ROLES, nullable=False), "content": BAD_OBJECT,
                      "thread_id": BAD_OPTIONAL_ID},
              required=("id",),
              state=lambda m, kw: m.list_messages_by_id(message_ids=[kw["messages"][0]["id"]])),
]

WORKFLOW_CASES = [
    WriteCase("workflows", "persist_workflow_snapshot",
              lambda w, t: {"workflow_name": t, "run_id": "new", "snapshot": R.snapshot("new")},
              arguments={"workflow_name": BAD_ID, "run_id": BAD_ID, "snapshot": BAD_REQUIRED_OBJECT,
                         "resource_id": BAD_OPTIONAL_ID, "created_at": NOT_DATETIME, "updated_at": NOT_DATETIME}),
    WriteCase("workflows", "update_workflow_results",
              lambda w, t: {**existing_run(w, t), "step_id": "step", "result": {"status": "success", "payload": {}}},
              arguments={"workflow_name": BAD_ID, "run_id": BAD_ID, "step_id": BAD_ID, "result": BAD_REQUIRED_OBJECT,
                         "request_context": BAD_OBJECT},
              state=lambda w, kw: w.load_workflow_snapshot(workflow_name=kw["workflow_name"], run_id="run")),
    WriteCase("workflows", "update_workflow_state", lambda w, t: {**existing_run(w, t), "status": "success"},
              arguments={"status": BAD_ID, "result": BAD_JSON, "error": BAD_JSON, "suspended_paths": BAD_PATHS_DICT,
                         "waiting_paths": BAD_PATHS_DICT, "active_paths": BAD_PATHS_LIST,
                         "tracing_context": BAD_PATHS_DICT, "expected_status": BAD_EXPECTED_STATUS},
              state=lambda w, kw: w.load_workflow_snapshot(workflow_name=kw["workflow_name"], run_id="run")),
]

SCORE_FIELDS = {
    "id": BAD_OPTIONAL_ID, "scorer_id": BAD_ID, "run_id": BAD_ID, "entity_id": BAD_ID, "scorer": BAD_REQUIRED_OBJECT,
    "entity": BAD_REQUIRED_OBJECT, "score": BAD_SCORE, "source": not_one_of(SCORE_SOURCES, nullable=False),
    "entity_type": not_one_of(SCORE_ENTITY_TYPES), "output": BAD_JSON, "input": BAD_JSON, "metadata": BAD_OBJECT,
    "additional_context": BAD_OBJECT, "request_context": BAD_OBJECT, "preprocess_step_result": BAD_OBJECT,
    "analyze_step_result": BAD_OBJECT, "reason": NOT_STRING, "trace_id": NOT_STRING, "organization_id": NOT_STRING,
    "structured_output": BAD_BOOL}
SCORE_REQUIRED = ("scorer_id", "run_id", "scorer", "score", "output", "entity", "entity_id", "source")

SCORE_CASES = [
    WriteCase("scores", "save_score", lambda s, t: {"score": R.score(f"{t}-new")}, record="score",
              fields=SCORE_FIELDS, required=SCORE_REQUIRED),
    WriteCase("scores", "save_scores", lambda s, t: {"scores": [R.score(f"{t}-new-{k}") for k in range(3)]},
              record="scores", fields=SCORE_FIELDS, required=SCORE_REQUIRED,
              arguments={"scores": st.one_of(st.text(max_size=3), st.builds(dict))}),
]

SPAN_FIELDS = {
    "trace_id": BAD_ID, "span_id": BAD_ID, "name": st.one_of(NOT_STRING, st.none()),
    "span_type": not_one_of(SPAN_TYPES, nullable=False), "is_event": BAD_BOOL, "started_at": BAD_REQUIRED_DATETIME,
    "ended_at": NOT_DATETIME, "entity_type": not_one_of(ENTITY_TYPES), "parent_entity_type": not_one_of(ENTITY_TYPES),
    "root_entity_type": not_one_of(ENTITY_TYPES), "user_id": NOT_STRING, "organization_id": NOT_STRING,
    "scope": BAD_OBJECT, "metadata": BAD_OBJECT, "tags": BAD_STRING_LIST, "attributes": BAD_OBJECT, "links": BAD_LIST,
    "input": BAD_JSON, "output": BAD_JSON, "error": BAD_OBJECT, "request_context": BAD_OBJECT}
SPAN_REQUIRED = ("trace_id", "span_id", "name", "span_type", "started_at")

OBSERVABILITY_CASES = [
    WriteCase("observability", "create_span", lambda o, t: {"span": R.span(t, "new")}, record="span",
              fields=SPAN_FIELDS, required=SPAN_REQUIRED),
    WriteCase("observability", "batch_create_spans",
              lambda o, t: {"records": [R.span(t, "new-0"), R.span(t, "new-1", "new-0"), R.span(t, "new-2", "new-0")]},
              record="records", fields=SPAN_FIELDS, required=SPAN_REQUIRED,
              arguments={"records": st.one_of(st.text(max_size=3), st.builds(dict), st.integers())}),
    WriteCase("observability", "update_span", lambda o, t: {**existing_span(o, t), "updates": {"name": "renamed"}},
              record="updates",
              fields={"trace_id": st.text(min_size=1, max_size=3), "span_id": st.text(min_size=1, max_size=3),
                      "name": st.one_of(NOT_STRING, st.none()), "span_type": not_one_of(SPAN_TYPES, nullable=False),
                      "started_at": BAD_REQUIRED_DATETIME, "is_event": st.one_of(BAD_BOOL, st.none()),
                      "metadata": BAD_OBJECT, "tags": BAD_STRING_LIST, "ended_at": NOT_DATETIME},
              arguments={"trace_id": BAD_ID, "span_id": BAD_ID, "updates": st.one_of(st.just({}), NOT_A_DICT)},
              state=lambda o, kw: o.get_trace(trace_id=kw["trace_id"])),
    WriteCase("observability", "batch_update_spans",
              lambda o, t: {"records": [{**existing_span(o, t), "updates": {"name": "renamed"}}]}, record="records",
              fields={"trace_id": BAD_ID, "span_id": BAD_ID, "updates": BAD_UPDATES},
              required=("trace_id", "span_id", "updates"),
              arguments={"records": st.one_of(st.text(max_size=3), st.builds(dict))},
              state=lambda o, kw: o.get_trace(trace_id=kw["records"][0]["trace_id"])),
    WriteCase("observability", "batch_delete_traces", lambda o, t: {"trace_ids": [existing_span(o, t)["trace_id"]]},
              arguments={"trace_ids": st.one_of(st.text(min_size=1, max_size=4), st.integers(),
                                                st.lists(st.one_of(st.just(""), NOT_STRING), min_size=1, max_size=2)),
                         "organization_id": NOT_STRING, "resource_id": NOT_STRING}),
]

CONFIG_FIELDS = {"tools": st.one_of(st.text(min_size=1, max_size=3), st.integers(), OBJECT_WITH_BAD_MEMBER),
                 "skills_format": not_one_of(SKILLS_FORMATS), "default_options": OBJECT_WITH_BAD_MEMBER,
                 "input_processors": NOT_JSON}

AGENT_CASES = [
    WriteCase("agents", "create_agent", lambda a, t: {"agent": R.agent(f"{t}-new")}, record="agent",
              fields={"id": BAD_ID, "name": BAD_ID, "instructions": BAD_INSTRUCTIONS, "model": BAD_MODEL,
                      "visibility": not_one_of(VISIBILITIES), "metadata": BAD_OBJECT, "author_id": NOT_STRING,
                      "status": st.sampled_from(AGENT_STATUSES), "description": NOT_STRING, **CONFIG_FIELDS},
              required=("id", "name", "instructions", "model")),
    WriteCase("agents", "update_agent",
              lambda a, t: {"id": a.create_agent(agent=R.agent(f"{t}-agent"))["id"], "metadata": {"x": 1}},
              arguments={"status": not_one_of(AGENT_STATUSES, nullable=False), "visibility": not_one_of(VISIBILITIES),
                         "metadata": BAD_OBJECT, "author_id": NOT_STRING, "active_version_id": BAD_OPTIONAL_ID,
                         # configuration keys are only checked as JSON values here (agents.md §4.4)
                         "tools": NOT_JSON, "memory": OBJECT_WITH_BAD_MEMBER, "skills_format": NOT_JSON},
              config=True, state=lambda a, kw: a.get_agent_by_id(id=kw["id"])),
    WriteCase("agents", "create_version",
              lambda a, t: {"agent_id": a.create_agent(agent=R.agent(f"{t}-agent"))["id"], "version_number": 2,
                            "name": "v2", "instructions": "Be brief", "model": {"provider": "openai", "name": "gpt"}},
              arguments={"agent_id": BAD_ID, "version_number": bad_int(1, nullable=False), "name": BAD_ID,
                         "instructions": BAD_INSTRUCTIONS, "model": BAD_MODEL, "id": BAD_OPTIONAL_ID,
                         "changed_fields": BAD_STRING_LIST, "change_message": NOT_STRING, **CONFIG_FIELDS},
              config=True),
]

ITEM_FIELDS = {"input": BAD_PAYLOAD, "ground_truth": BAD_PAYLOAD, "expected_trajectory": BAD_PAYLOAD,
               "tool_mocks": BAD_TOOL_MOCKS, "unmocked_tool_policy": not_one_of(UNMOCKED_TOOL_POLICIES),
               "scorer_ids": BAD_STRING_LIST, "request_context": BAD_OBJECT, "metadata": BAD_OBJECT,
               "source": BAD_SOURCE, "external_id": st.one_of(st.just(""), NOT_STRING)}
DATASET_FIELDS = {"name": BAD_ID, "description": NOT_STRING, "metadata": BAD_OBJECT, "input_schema": BAD_SCHEMA,
                  "ground_truth_schema": BAD_SCHEMA, "tags": BAD_STRING_LIST, "target_type": not_one_of(TARGET_TYPES),
                  "target_ids": BAD_STRING_LIST, "scorer_ids": BAD_STRING_LIST}


def new_dataset(datasets: Any, t: str) -> str:
    datasets.create_dataset(**R.dataset(f"{t}-dataset"))
    return f"{t}-dataset"


DATASET_CASES = [
    WriteCase("datasets", "create_dataset", lambda d, t: R.dataset(f"{t}-new"),
              arguments={**DATASET_FIELDS, "id": BAD_OPTIONAL_ID, "organization_id": NOT_STRING,
                         "project_id": NOT_STRING}),
    WriteCase("datasets", "update_dataset", lambda d, t: {"id": new_dataset(d, t), "description": "changed"},
              arguments={**DATASET_FIELDS, "filters": BAD_TENANCY},
              state=lambda d, kw: d.get_dataset_by_id(id=kw["id"])),
    WriteCase("datasets", "add_item", lambda d, t: {"dataset_id": new_dataset(d, t), "input": {"q": 2}},
              arguments={**ITEM_FIELDS, "filters": BAD_TENANCY}, reports_all=False),
    WriteCase("datasets", "batch_insert_items",
              lambda d, t: {"dataset_id": new_dataset(d, t), "items": [R.item(external_id=f"e{k}") for k in range(3)]},
              record="items", fields=ITEM_FIELDS, required=("input",),
              arguments={"items": st.one_of(st.text(max_size=3), st.builds(dict)), "filters": BAD_TENANCY},
              reports_all=False),
    WriteCase("datasets", "update_item", lambda d, t: {**existing_item(d, t), "input": {"q": 3}},
              arguments={**{k: v for k, v in ITEM_FIELDS.items() if k != "external_id"}, "filters": BAD_TENANCY},
              state=lambda d, kw: d.get_item_history(item_id=kw["id"]), reports_all=False),
]

RESULT_ARGUMENTS = {"item_id": BAD_ID, "input": BAD_PAYLOAD, "started_at": BAD_REQUIRED_DATETIME,
                    "completed_at": BAD_REQUIRED_DATETIME, "output": BAD_PAYLOAD, "ground_truth": BAD_PAYLOAD,
                    "metadata": BAD_OBJECT, "error": BAD_ERROR, "retry_count": bad_int(0), "attempt": bad_int(0),
                    "status": not_one_of(RESULT_STATUSES), "tags": BAD_STRING_LIST, "tool_mock_report": BAD_OBJECT,
                    "trace_id": NOT_STRING, "item_dataset_version": bad_int(0), "organization_id": NOT_STRING}


def new_experiment(experiments: Any, t: str) -> str:
    experiments.create_experiment(**R.experiment(f"{t}-experiment"))
    return f"{t}-experiment"


EXPERIMENT_CASES = [
    WriteCase("experiments", "create_experiment", lambda e, t: R.experiment(f"{t}-new"),
              arguments={"total_items": bad_int(0, nullable=False), "id": BAD_OPTIONAL_ID, "dataset_id": NOT_STRING,
                         "dataset_version": bad_int(0), "target_type": not_one_of(TARGET_TYPES),
                         "target_id": NOT_STRING, "name": NOT_STRING, "metadata": BAD_OBJECT,
                         "provenance": BAD_PROVENANCE, "runner_attestation": BAD_ATTESTATION,
                         "trial_index": bad_int(0), "scorer_ids": BAD_STRING_LIST, "organization_id": NOT_STRING}),
    WriteCase("experiments", "update_experiment", lambda e, t: {"id": new_experiment(e, t), "name": "renamed"},
              arguments={"status": not_one_of(EXPERIMENT_STATUSES, nullable=False),
                         "total_items": bad_int(0, nullable=False), "succeeded_count": bad_int(0, nullable=False),
                         "failed_count": bad_int(0, nullable=False), "started_at": NOT_DATETIME,
                         "completed_at": NOT_DATETIME, "metadata": BAD_OBJECT, "name": NOT_STRING},
              state=lambda e, kw: e.get_experiment_by_id(id=kw["id"])),
    WriteCase("experiments", "increment_experiment_counters", lambda e, t: {"id": new_experiment(e, t), "succeeded": 1},
              arguments={"succeeded": bad_int(0), "failed": bad_int(0), "skipped": bad_int(0)},
              state=lambda e, kw: e.get_experiment_by_id(id=kw["id"])),
    WriteCase("experiments", "add_experiment_result", lambda e, t: R.result(new_experiment(e, t), "item-new"),
              arguments={**RESULT_ARGUMENTS, "id": BAD_OPTIONAL_ID}),
    WriteCase("experiments", "upsert_experiment_result", lambda e, t: R.result(new_experiment(e, t), "item-new"),
              arguments=RESULT_ARGUMENTS),
    WriteCase("experiments", "update_experiment_result", lambda e, t: {**existing_result(e, t), "comment": "ok"},
              arguments={"status": not_one_of(RESULT_STATUSES), "tags": BAD_STRING_LIST, "comment": NOT_STRING},
              state=lambda e, kw: e.get_experiment_result_by_id(id=kw["id"])),
]

CASES_EVERYWHERE = MEMORY_CASES + WORKFLOW_CASES + SCORE_CASES + OBSERVABILITY_CASES
CASES_SQL_ONLY = AGENT_CASES + DATASET_CASES + EXPERIMENT_CASES


@st.composite
def invalid_call(draw: st.DrawFn, case: WriteCase, valid: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A copy of the valid call made invalid in one to three ways; returns it and the names that
    the error must report."""
    kwargs = {key: (list(map(dict, value)) if isinstance(value, list) and value and isinstance(value[0], dict)
                    else dict(value) if isinstance(value, dict) else value) for key, value in valid.items()}
    kinds = []
    if case.arguments:
        kinds.append("argument")
    if case.record and case.fields:
        kinds += ["field", "field"]
    if case.record and case.required:
        kinds.append("missing")
    if (case.record and case.unknown) or case.config:
        kinds.append("unknown")
    names: list[str] = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(kinds))
        if kind == "argument":
            name = draw(st.sampled_from(sorted(case.arguments)))
            if case.record == name and names:
                continue  # replacing the whole record would hide the field problems drawn before
            kwargs[name] = draw(case.arguments[name])
            names.append(name)
            if name == case.record:
                break
            continue
        target = kwargs[case.record] if case.record else None
        if isinstance(target, list):
            index = draw(st.integers(0, len(target) - 1))
            record, prefix = target[index], f"[{index}]."
        else:
            record, prefix = target, ""
        if kind == "field":
            name = draw(st.sampled_from(sorted(case.fields)))
            record[name] = draw(case.fields[name])
        elif kind == "missing":
            name = draw(st.sampled_from(case.required))
            record.pop(name, None)
        elif case.config:  # an unknown **config keyword argument
            name = draw(UNKNOWN_KEY)
            kwargs[name] = "x"
            prefix = ""
        else:
            name = draw(UNKNOWN_KEY)
            record[name] = "x"
        names.append(prefix + name if isinstance(target, list) else name)
    if not names:  # every draw was skipped: fall back to one bad argument
        name = draw(st.sampled_from(sorted(case.arguments)))
        kwargs[name] = draw(case.arguments[name])
        names.append(name)
    return kwargs, names


def assert_rejects_invalid_writes(repository: Any, case: WriteCase) -> None:
    valid = case.call(repository, tag())
    rows_before = repository.count_rows()
    state_before = case.state(repository, valid) if case.state else None

    @HYPOTHESIS
    @given(st.data())
    def attempt(data: st.DataObject) -> None:
        kwargs, names = data.draw(invalid_call(case, valid))
        with pytest.raises(ValidationError) as caught:
            getattr(repository, case.method)(**kwargs)
        reported = caught.value.details.get("fields", {})
        assert reported, caught.value
        named = [any(name in path for path in reported) or name == case.record for name in names]
        assert all(named) if case.reports_all else any(named), (names, reported)

    attempt()
    assert repository.count_rows() == rows_before, f"{case}: invalid calls wrote rows"
    if case.state:
        assert case.state(repository, valid) == state_before, f"{case}: invalid calls changed the target"
    # The valid call itself is accepted: the errors above came from the changes alone.
    getattr(repository, case.method)(**valid)


@pytest.mark.parametrize("case", CASES_EVERYWHERE, ids=str)
def test_invalid_writes_raise_validation_error_and_write_nothing(case, store, legacy_observability):
    """memory, workflows, scores, observability: on SQLite, PostgreSQL and ClickHouse (span
    updates on the legacy layout: ClickHouse's default one is insert-only)."""
    updates = case.method in ("update_span", "batch_update_spans")
    assert_rejects_invalid_writes(legacy_observability if updates else R.repository_of(store, case.domain), case)


@pytest.mark.backends("sqlite", "postgres")
@pytest.mark.parametrize("case", CASES_SQL_ONLY, ids=str)
def test_invalid_writes_raise_validation_error_and_write_nothing_sql_domains(case, store):
    """agents, datasets, experiments: on SQLite and PostgreSQL (not available on ClickHouse)."""
    assert_rejects_invalid_writes(R.repository_of(store, case.domain), case)


# --------------------------------------------------------------------------- list cases

@dataclass(frozen=True)
class ListCase:
    """A list method, its required arguments, and the arguments that can go bad."""

    domain: str
    method: str
    call: Callable[[str], dict[str, Any]] = lambda t: {}
    #: allowed ``order_by`` fields, when the method takes ``order_by``.
    order_fields: tuple[str, ...] = ()
    #: where metadata filters go: ``"metadata"`` or ``"filters.metadata"`` (and ``"filters.scope"``).
    metadata: tuple[str, ...] = ()
    #: other arguments and their invalid values (status ``INVALID_INPUT``).
    arguments: dict[str, st.SearchStrategy] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.domain}.{self.method}"


def not_one_of_filter(allowed: tuple[str, ...]) -> st.SearchStrategy:
    """A filter value outside ``allowed`` (``""`` excluded: filters may take it as "no filter")."""
    return not_one_of(allowed).filter(lambda value: value != "")


TRACE_FILTERS = st.one_of(
    st.builds(lambda k: {k: "x"}, UNKNOWN_KEY),
    st.builds(lambda v: {"span_type": v}, not_one_of_filter(SPAN_TYPES)),
    st.builds(lambda v: {"status": v}, not_one_of_filter(("success", "error", "running"))),
    st.builds(lambda v: {"entity_type": v}, not_one_of_filter(ENTITY_TYPES)),
    st.builds(lambda v: {"started_at": {"start": v}}, NOT_DATETIME.filter(lambda v: v not in ("",))),
    st.builds(lambda k: {"ended_at": {k: 1}}, UNKNOWN_KEY),
    st.builds(lambda v: {"tags": v}, BAD_STRING_LIST),
    st.builds(lambda v: {"has_child_error": v}, st.sampled_from(["maybe", [], {}, 2.5])),
    st.builds(lambda v: {"trace_id": v}, NOT_STRING),
    NOT_A_DICT.filter(lambda v: v not in ({}, [], "", 0, False)),
)
DATASET_FILTERS = st.one_of(BAD_TENANCY, st.builds(lambda v: {"target_type": v}, NOT_STRING),
                            st.builds(lambda v: {"target_ids": v}, BAD_STRING_LIST),
                            st.builds(lambda v: {"name": v}, NOT_STRING))
NOT_EMPTY_STRING = NOT_STRING.filter(lambda v: v not in (0, False, [], {}, b""))
#: Not an ``int`` at all (filters that compare integers exactly).
NOT_INT = bad_int(0).filter(lambda v: not isinstance(v, int) or isinstance(v, bool))


LIST_CASES_EVERYWHERE = [
    ListCase("memory", "list_threads", order_fields=("created_at", "updated_at"), metadata=("metadata",),
             arguments={"resource_id": NOT_EMPTY_STRING}),
    ListCase("memory", "list_messages", lambda t: {"thread_id": f"{t}-thread"}, order_fields=("created_at",),
             arguments={"thread_id": st.one_of(BAD_ID, st.just([""]), st.lists(st.integers(), min_size=1, max_size=2)),
                        "include": st.one_of(st.text(min_size=1, max_size=3), st.integers(),
                                             st.lists(st.builds(lambda: {"zz_unknown": 1}), min_size=1, max_size=1)),
                        "date_range": st.one_of(st.text(min_size=1, max_size=3),
                                                st.builds(lambda v: {"start": v}, NOT_DATETIME.filter(lambda v: v != "")),
                                                st.builds(lambda k: {k: 1}, UNKNOWN_KEY)),
                        "resource_id": NOT_EMPTY_STRING}),
    ListCase("memory", "list_messages_by_resource_id", lambda t: {"resource_id": f"{t}-user"},
             order_fields=("created_at",), arguments={"resource_id": BAD_ID}),
    ListCase("workflows", "list_workflow_runs",
             arguments={"workflow_name": NOT_EMPTY_STRING, "status": NOT_EMPTY_STRING, "resource_id": NOT_EMPTY_STRING,
                        "thread_id": NOT_EMPTY_STRING, "from_date": NOT_DATETIME.filter(lambda v: v != ""),
                        "to_date": NOT_DATETIME.filter(lambda v: v != "")}),
    ListCase("scores", "list_scores_by_scorer_id", lambda t: {"scorer_id": "scorer-1"},
             arguments={"scorer_id": BAD_ID, "entity_id": BAD_OPTIONAL_ID, "entity_type": BAD_OPTIONAL_ID,
                        "source": not_one_of_filter(SCORE_SOURCES), "filters": BAD_TENANCY}),
    ListCase("scores", "list_scores_by_run_id", lambda t: {"run_id": "run-1"},
             arguments={"run_id": BAD_ID, "filters": BAD_TENANCY}),
    ListCase("scores", "list_scores_by_entity_id", lambda t: {"entity_id": "agent-1", "entity_type": "AGENT"},
             arguments={"entity_id": BAD_ID, "entity_type": BAD_ID, "filters": BAD_TENANCY}),
    ListCase("scores", "list_scores_by_span", lambda t: {"trace_id": "t", "span_id": "s"},
             arguments={"trace_id": BAD_ID, "span_id": BAD_ID, "filters": BAD_TENANCY}),
    ListCase("observability", "list_traces", order_fields=("started_at", "ended_at"),
             metadata=("filters.metadata", "filters.scope"), arguments={"filters": TRACE_FILTERS}),
]

LIST_CASES_SQL_ONLY = [
    ListCase("agents", "list_agents", order_fields=("created_at", "updated_at"), metadata=("metadata",),
             arguments={"status": NOT_STRING, "visibility": NOT_STRING,
                        "author_id": NOT_STRING, "entity_ids": BAD_STRING_LIST}),
    ListCase("agents", "list_versions", lambda t: {"agent_id": f"{t}-agent"},
             order_fields=("version_number", "created_at"), arguments={"agent_id": BAD_ID}),
    ListCase("datasets", "list_datasets", order_fields=("created_at", "updated_at", "name"),
             arguments={"filters": DATASET_FILTERS}),
    ListCase("datasets", "list_items", lambda t: {"dataset_id": f"{t}-dataset"}, order_fields=("created_at", "updated_at"),
             arguments={"dataset_id": BAD_ID, "version": NOT_INT, "search": NOT_STRING, "filters": BAD_TENANCY}),
    ListCase("datasets", "list_dataset_versions", lambda t: {"dataset_id": f"{t}-dataset"},
             arguments={"dataset_id": BAD_ID}),
    ListCase("experiments", "list_experiments", order_fields=("created_at", "status"),
             arguments={"status": NOT_STRING, "target_type": NOT_STRING, "trial_index": NOT_INT,
                        "dataset_id": NOT_STRING, "filters": BAD_TENANCY}),
    ListCase("experiments", "list_experiment_results", lambda t: {"experiment_id": f"{t}-experiment"},
             order_fields=("started_at", "created_at"),
             arguments={"experiment_id": BAD_ID, "status": NOT_STRING, "tags": BAD_STRING_LIST,
                        "trace_id": NOT_STRING, "filters": BAD_TENANCY}),
]

STATUS_ORDER = ("INVALID_PAGE", "INVALID_METADATA_KEY", "INVALID_METADATA_VALUE", "INVALID_INPUT")


@st.composite
def invalid_list_call(draw: st.DrawFn, case: ListCase, valid: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The valid call with one to three bad aspects; returns it and ``{reported path prefix: status}``."""
    kinds = ["page", "per_page", "page_with_all"]
    if case.order_fields:
        kinds.append("order_by")
    if case.metadata:
        kinds += ["metadata_key", "metadata_value"]
    if case.arguments:
        kinds += ["argument", "argument"]
    kwargs = dict(valid)
    expected: dict[str, str] = {}
    for kind in draw(st.lists(st.sampled_from(kinds), min_size=1, max_size=3, unique=True)):
        if kind == "page":
            kwargs["page"] = draw(BAD_PAGE)
            expected["page"] = "INVALID_PAGE"
        elif kind == "per_page":
            if kwargs.get("per_page") is False:
                continue  # keeps the page problem of "page_with_all"
            kwargs["per_page"] = draw(BAD_PER_PAGE)
            expected["per_page"] = "INVALID_PAGE"
        elif kind == "page_with_all":
            if "page" in expected or "per_page" in expected:
                continue
            kwargs["per_page"], kwargs["page"] = False, draw(st.integers(1, 10**6))
            expected["page"] = "INVALID_PAGE"
        elif kind == "order_by":
            kwargs["order_by"] = draw(bad_order_by(case.order_fields))
            expected["order_by"] = "INVALID_INPUT"
        elif kind in ("metadata_key", "metadata_value"):
            path = draw(st.sampled_from(case.metadata))
            if any(name.startswith(path.split(".")[0]) for name in expected):
                continue  # one bad filter per argument keeps the expected status unambiguous
            key = draw(BAD_METADATA_KEY) if kind == "metadata_key" else draw(GOOD_METADATA_KEY)
            value = draw(BAD_METADATA_VALUE) if kind == "metadata_value" else draw(st.text(max_size=4))
            if "." in path:
                argument, member = path.split(".")
                kwargs[argument] = {member: {key: value}}
            else:
                kwargs[path] = {key: value}
            expected[path] = "INVALID_METADATA_KEY" if kind == "metadata_key" else "INVALID_METADATA_VALUE"
        else:
            name = draw(st.sampled_from(sorted(case.arguments)))
            if any(name == known.split(".")[0] for known in expected):
                continue
            kwargs[name] = draw(case.arguments[name])
            expected[name] = "INVALID_INPUT"
    if not expected:
        kwargs["per_page"] = draw(BAD_PER_PAGE)
        expected["per_page"] = "INVALID_PAGE"
    return kwargs, expected


def assert_rejects_invalid_lists(repository: Any, case: ListCase, backend: str) -> None:
    valid = case.call(tag())
    getattr(repository, case.method)(**valid)  # the valid call is accepted
    rows_before = repository.count_rows()

    @HYPOTHESIS
    @given(st.data())
    def attempt(data: st.DataObject) -> None:
        kwargs, expected = data.draw(invalid_list_call(case, valid))
        with pytest.raises(ValidationError) as caught:
            getattr(repository, case.method)(**kwargs)
        error = caught.value
        status = min(expected.values(), key=STATUS_ORDER.index)
        assert error.id == f"STORAGE_{MATRIX[backend].error_name}_{case.method.upper()}_{status}", (error.id, expected)
        reported = error.details.get("fields", {})
        for path in expected:
            assert any(name == path or name.startswith((f"{path}.", f"{path}[")) for name in reported), \
                (path, reported)

    attempt()
    assert repository.count_rows() == rows_before


@pytest.mark.parametrize("case", LIST_CASES_EVERYWHERE, ids=str)
def test_invalid_list_arguments_raise_validation_error_with_status(case, store, backend):
    """Pages, orderings, metadata and tenancy filters: the error names each bad argument and has
    the status of README *Errors*' precedence."""
    assert_rejects_invalid_lists(R.repository_of(store, case.domain), case, backend)


@pytest.mark.backends("sqlite", "postgres")
@pytest.mark.parametrize("case", LIST_CASES_SQL_ONLY, ids=str)
def test_invalid_list_arguments_raise_validation_error_with_status_sql_domains(case, store, backend):
    """As above for agents, datasets and experiments (SQLite and PostgreSQL)."""
    assert_rejects_invalid_lists(R.repository_of(store, case.domain), case, backend)

