"""Every public method of every domain, called with hostile strings, answers with the library's
own errors or succeeds (README *Concurrency, faults, bad input*; *Characters that cannot be stored*).

The methods are discovered by introspection (each public ``@operation`` of each repository class),
so a new method fails :func:`test_every_method_is_covered` until it gets a base call here or an
entry, with its reason, in :data:`NO_STRING_ARGUMENTS`.  Each case starts from a valid base call
and makes ONE string of it hostile (an argument, a list element, a filter or record value, a
dict key); any exception other than ``ValidationError``/``NotFoundError``/``ConflictError``/
``NotSupportedError`` fails, in particular a driver error or a ``StorageError`` of category
``THIRD_PARTY`` (a bare database failure).  In the domains that reject text the databases cannot
hold (agents, datasets, experiments) U+0000 and unpaired surrogates must be refused by a
validation error, with nothing written.
"""

from __future__ import annotations

import inspect
import itertools
from typing import Any, Callable, Iterator

import pytest

from composite_store.agents import AgentsRepository
from composite_store.datasets import DatasetsRepository
from composite_store.errors import ConflictError, NotFoundError, NotSupportedError, ValidationError
from composite_store.experiments import ExperimentsRepository
from composite_store.memory import MemoryRepository
from composite_store.observability import ObservabilityRepository, VNextObservabilityRepository
from composite_store.observability.vnext_sql import VNextSQLObservabilityRepository
from composite_store.scores import ScoresRepository
from composite_store.workflows import WorkflowsRepository
from composite_store.postgres import ObservabilityPG
from composite_store.sqlite import ObservabilitySQLite
from tests.conftest import MATRIX
from tests.reliability import records as R
from tests.reliability.test_sql_injection import CORPUS

REPOSITORIES = {"memory": MemoryRepository, "workflows": WorkflowsRepository, "scores": ScoresRepository,
                "observability": ObservabilityRepository, "agents": AgentsRepository,
                "datasets": DatasetsRepository, "experiments": ExperimentsRepository}
#: Repository classes of a domain's other table layouts (their operations need base calls too).
LAYOUTS = {"observability": (VNextObservabilityRepository, VNextSQLObservabilityRepository)}
#: Domains that refuse U+0000 and unpaired surrogates (the others strip them, as on write).
REJECTING = ("agents", "datasets", "experiments")
#: Strings no driver can send (an unpaired surrogate) or PostgreSQL cannot hold (U+0000).
UNSTORABLE = ("a\x00b", "a\ud800b")
HOSTILE = (CORPUS[0], CORPUS[2], CORPUS[13], "100%_match\\", "line\u2028separator", *UNSTORABLE, "x" * 20_000)
#: Hostile strings per string slot on ClickHouse, where each write costs tens of milliseconds (a
#: part per insert; every string in every slot took 100-160 s of CI over the two engines): each
#: slot takes this many in turn, and every string still reaches every method.
HOSTILE_PER_SLOT_ON_CLICKHOUSE = 2
#: The library's own answers to bad input; anything else (a bare database failure) fails.
LIBRARY_ERRORS = (ValidationError, NotFoundError, ConflictError, NotSupportedError)

#: Public operations that take no string argument, so there is nothing to make hostile.
NO_STRING_ARGUMENTS = {(domain, name): "takes no string argument" for domain in REPOSITORIES
                       for name in ("init", "dangerously_clear_all", "count_rows")}
NO_STRING_ARGUMENTS[("experiments", "get_review_summary")] = "takes no argument"
for _name in ("check_spans_migration_status", "migrate_spans"):
    NO_STRING_ARGUMENTS[("observability", _name)] = "takes no argument"


def public_operations(repository_class: type) -> set[str]:
    """Names of the public methods decorated with ``@operation`` (which sets ``__wrapped__``)."""
    return {name for name, member in inspect.getmembers(repository_class, inspect.isfunction)
            if not name.startswith("_") and hasattr(member, "__wrapped__")}


# --------------------------------------------------------------------------- seeds and base calls

def seed(domain: str, repository: Any) -> dict[str, Any]:
    """Records the base calls refer to, so that updates and reads reach their write or query."""
    if domain == "memory":
        repository.save_thread(thread=R.thread("t1", "r1"))
        repository.save_messages(messages=[R.message("m1", "t1", "r1", content={"format": 2, "parts": [{"type": "text", "text": "hi"}], "metadata": {"k": "v"}})])
        repository.save_resource(resource=R.resource("r1"))
    elif domain == "workflows":
        repository.persist_workflow_snapshot(workflow_name="wf", run_id="run1", snapshot=R.snapshot("run1"))
    elif domain == "scores":
        repository.save_score(score=R.score("s1", trace_id="tr1", span_id="sp1"))
    elif domain == "observability":
        repository.batch_create_spans(records=[R.span("tr1", "root"), R.span("tr1", "child", "root")])
        if hasattr(repository, "batch_create_metrics"):  # the current layout's signals
            for name in ("batch_create_logs", "batch_create_metrics", "create_score", "create_feedback"):
                getattr(repository, name)(**BASE_CALLS[("observability", name)]({}, "0"))
    elif domain == "agents":
        repository.create_agent(agent=R.agent("a1"))
        return {"version_id": repository.get_latest_version(agent_id="a1")["id"]}
    elif domain == "datasets":
        repository.create_dataset(**R.dataset("d1"))
        return {"item_id": repository.add_item(dataset_id="d1", input={"q": 1})["id"]}
    elif domain == "experiments":
        repository.create_experiment(**R.experiment("e1", dataset_id="d1"))
        return {"result_id": repository.add_experiment_result(**R.result("e1", "i1"))["id"]}
    return {}


ORDER = {"field": "created_at", "direction": "DESC"}
TENANCY = {"organization_id": "org", "project_id": "project"}
AGENT_LIST = lambda s, u: {"author_id": "author", "metadata": {"team": "a"}, "entity_ids": ["a1"],  # noqa: E731
                           "pin_favorited_for": "u1"}
AGENT_UPDATE = lambda s, u: {"id": "a1", "author_id": "author", "metadata": {"k": "v"}}  # noqa: E731

#: (domain, method) → ``(seeded ids, unique suffix) -> kwargs`` of a valid call.
BASE_CALLS: dict[tuple[str, str], Callable[[dict[str, Any], str], dict[str, Any]]] = {
    ("memory", "clone_thread"): lambda s, u: {"source_thread_id": "t1", "new_thread_id": f"clone-{u}",
                                              "resource_id": "r1", "title": "copy", "metadata": {"k": "v"},
                                              "message_ids": ["m1"]},
    ("memory", "copy_thread"): lambda s, u: {"source_thread_id": "t1", "new_thread_id": f"copy-{u}",
                                             "resource_id": "r1", "title": "copy", "metadata": {"k": "v"},
                                             "message_ids": ["m1"]},
    ("memory", "delete_messages"): lambda s, u: {"message_ids": [f"gone-{u}"]},
    ("memory", "delete_thread"): lambda s, u: {"thread_id": f"gone-{u}"},
    ("memory", "get_resource_by_id"): lambda s, u: {"resource_id": "r1"},
    ("memory", "get_thread_by_id"): lambda s, u: {"thread_id": "t1", "resource_id": "r1"},
    ("memory", "list_messages"): lambda s, u: {"thread_id": "t1", "resource_id": "r1", "metadata": {"k": "v"},
                                               "include": [{"id": "m1", "thread_id": "t1"}], "order_by": ORDER},
    ("memory", "list_messages_by_id"): lambda s, u: {"message_ids": ["m1"]},
    ("memory", "list_messages_by_resource_id"): lambda s, u: {"resource_id": "r1", "metadata": {"k": "v"},
                                                              "order_by": ORDER},
    ("memory", "list_threads"): lambda s, u: {"resource_id": "r1", "metadata": {"topic": "load"}, "order_by": ORDER},
    ("memory", "save_messages"): lambda s, u: {"messages": [R.message(f"m-{u}", "t1", "r1", type="text")]},
    ("memory", "save_resource"): lambda s, u: {"resource": R.resource(f"r-{u}")},
    ("memory", "save_thread"): lambda s, u: {"thread": R.thread(f"t-{u}", "r1")},
    ("memory", "update_messages"): lambda s, u: {"messages": [{"id": "m1", "content": {
        "format": 2, "parts": [{"type": "text", "text": "changed"}], "metadata": {"k": "v"}}}]},
    ("memory", "update_resource"): lambda s, u: {"resource_id": "r1", "working_memory": "notes", "metadata": {"k": "v"}},
    ("memory", "update_thread"): lambda s, u: {"id": "t1", "title": "title", "metadata": {"k": "v"}},
    ("memory", "patch_thread"): lambda s, u: {"id": "t1", "title": "title", "metadata": {"k": "v"}},
    ("memory", "update_thread_resource_id"): lambda s, u: {"thread_id": "t1", "resource_id": f"r-{u}"},
    ("memory", "update_thread_metadata"): lambda s, u: {"id": "t1", "resource_id": "r1",
                                                        "update": lambda metadata: {**metadata, "k": "v"}},
    ("workflows", "delete_workflow_run_by_id"): lambda s, u: {"workflow_name": "wf", "run_id": f"gone-{u}"},
    ("workflows", "get_workflow_run_by_id"): lambda s, u: {"workflow_name": "wf", "run_id": "run1"},
    ("workflows", "list_workflow_runs"): lambda s, u: {"workflow_name": "wf", "status": "running",
                                                       "resource_id": "r1", "thread_id": "t1"},
    ("workflows", "load_workflow_snapshot"): lambda s, u: {"workflow_name": "wf", "run_id": "run1"},
    ("workflows", "persist_workflow_snapshot"): lambda s, u: {"workflow_name": "wf", "run_id": f"run-{u}",
                                                              "resource_id": "r1", "snapshot": R.snapshot(f"run-{u}")},
    ("workflows", "update_workflow_results"): lambda s, u: {"workflow_name": "wf", "run_id": "run1", "step_id": "step",
                                                            "result": {"status": "success"},
                                                            "request_context": {"k": "v"}},
    ("workflows", "update_workflow_state"): lambda s, u: {"workflow_name": "wf", "run_id": "run1", "status": "running"},
    ("scores", "get_score_by_id"): lambda s, u: {"id": "s1"},
    ("scores", "list_scores"): lambda s, u: {"filters": TENANCY, "order_by": ORDER},
    ("scores", "list_scores_by_entity_id"): lambda s, u: {"entity_id": "agent-1", "entity_type": "AGENT",
                                                          "filters": TENANCY},
    ("scores", "list_scores_by_run_id"): lambda s, u: {"run_id": "run-1", "filters": TENANCY},
    ("scores", "list_scores_by_scorer_id"): lambda s, u: {"scorer_id": "scorer-1", "entity_id": "agent-1",
                                                          "entity_type": "AGENT", "source": "TEST", "filters": TENANCY},
    ("scores", "list_scores_by_span"): lambda s, u: {"trace_id": "tr1", "span_id": "sp1", "filters": TENANCY},
    ("scores", "save_score"): lambda s, u: {"score": R.score(f"s-{u}", trace_id="tr1", span_id="sp1", **TENANCY)},
    ("scores", "save_scores"): lambda s, u: {"scores": [R.score(f"s-{u}", reason="why")]},
    ("observability", "batch_create_spans"): lambda s, u: {"records": [R.span(f"tr-{u}", "root", tags=["tag"],
                                                                              entity_id="agent-1")]},
    ("observability", "batch_delete_traces"): lambda s, u: {"trace_ids": [f"gone-{u}"], "organization_id": "org",
                                                            "resource_id": "r1"},
    ("observability", "batch_update_spans"): lambda s, u: {"records": [{"trace_id": "tr1", "span_id": "child",
                                                                        "updates": {"name": "renamed"}}]},
    ("observability", "create_span"): lambda s, u: {"span": R.span(f"tr-{u}", "root", attributes={"k": "v"})},
    ("observability", "get_root_span"): lambda s, u: {"trace_id": "tr1"},
    ("observability", "get_span"): lambda s, u: {"trace_id": "tr1", "span_id": "child"},
    ("observability", "get_trace"): lambda s, u: {"trace_id": "tr1"},
    ("observability", "list_traces"): lambda s, u: {"filters": {"entity_id": "agent-1", "tags": ["tag"],
                                                                "metadata": {"env": "test"}},
                                                    "order_by": {"field": "started_at", "direction": "DESC"}},
    ("observability", "update_span"): lambda s, u: {"trace_id": "tr1", "span_id": "child", "updates": {"name": "x"}},
    ("observability", "get_structure"): lambda s, u: {"trace_id": "tr1"},
    ("observability", "get_trace_light"): lambda s, u: {"trace_id": "tr1"},
    ("observability", "get_spans"): lambda s, u: {"trace_id": "tr1", "span_ids": ["root", "child"]},
    ("observability", "get_branch"): lambda s, u: {"trace_id": "tr1", "span_id": "root", "depth": 1},
    ("observability", "list_traces_light"): lambda s, u: {"filters": {"entity_id": "agent-1", "tags": ["tag"]}},
    ("observability", "list_branches"): lambda s, u: {"filters": {"trace_id": "tr1", "span_type": "agent_run"}},
    ("agents", "count_versions"): lambda s, u: {"agent_id": "a1"},
    ("agents", "create_agent"): lambda s, u: {"agent": R.agent(f"a-{u}", author_id="author")},
    ("agents", "create_version"): lambda s, u: {"agent_id": "a1", "version_number": 100 + int(u), "name": "v",
                                                "instructions": "be brief", "change_message": "why",
                                                "model": {"provider": "openai", "name": "gpt-4o"},
                                                "changed_fields": ["name"]},
    ("agents", "delete_agent"): lambda s, u: {"id": f"gone-{u}"},
    ("agents", "delete_version"): lambda s, u: {"version_id": f"gone-{u}"},
    ("agents", "delete_versions_by_parent_id"): lambda s, u: {"agent_id": f"gone-{u}"},
    ("agents", "get_agent_by_id"): lambda s, u: {"id": "a1"},
    ("agents", "get_agent_by_id_resolved"): lambda s, u: {"id": "a1", "version_id": s["version_id"]},
    ("agents", "get_latest_version"): lambda s, u: {"agent_id": "a1"},
    ("agents", "get_version"): lambda s, u: {"version_id": s["version_id"]},
    ("agents", "get_version_by_number"): lambda s, u: {"agent_id": "a1", "version_number": 1},
    ("agents", "get_versions"): lambda s, u: {"version_ids": [s["version_id"], "v-unknown"]},
    ("agents", "list_agents"): AGENT_LIST,
    ("agents", "list_agents_resolved"): AGENT_LIST,
    ("agents", "list_versions"): lambda s, u: {"agent_id": "a1"},
    ("agents", "update_agent"): AGENT_UPDATE,
    ("datasets", "add_item"): lambda s, u: {"dataset_id": "d1", "input": {"q": "x"}, "external_id": f"x-{u}",
                                            "metadata": {"k": "v"}, "scorer_ids": ["scorer"]},
    ("datasets", "batch_delete_items"): lambda s, u: {"dataset_id": "d1", "item_ids": [f"gone-{u}"]},
    ("datasets", "batch_insert_items"): lambda s, u: {"dataset_id": "d1", "items": [R.item(external_id=f"x-{u}")]},
    ("datasets", "create_dataset"): lambda s, u: {**R.dataset(f"d-{u}"), "tags": ["tag"], "organization_id": "org"},
    ("datasets", "create_dataset_version"): lambda s, u: {"dataset_id": "d1", "version": 100 + int(u)},
    ("datasets", "delete_dataset"): lambda s, u: {"id": f"gone-{u}", "filters": TENANCY},
    ("datasets", "delete_item"): lambda s, u: {"id": f"gone-{u}", "dataset_id": "d1"},
    ("datasets", "get_dataset_by_id"): lambda s, u: {"id": "d1", "filters": TENANCY},
    ("datasets", "get_item_by_id"): lambda s, u: {"id": s["item_id"]},
    ("datasets", "get_item_history"): lambda s, u: {"item_id": s["item_id"]},
    ("datasets", "get_items_by_version"): lambda s, u: {"dataset_id": "d1", "version": 1},
    ("datasets", "list_dataset_versions"): lambda s, u: {"dataset_id": "d1"},
    ("datasets", "list_datasets"): lambda s, u: {"filters": TENANCY, "order_by": ORDER},
    ("datasets", "list_items"): lambda s, u: {"dataset_id": "d1", "search": "q", "order_by": ORDER},
    ("datasets", "purge_item"): lambda s, u: {"id": f"gone-{u}", "dataset_id": "d1"},
    ("datasets", "update_dataset"): lambda s, u: {"id": "d1", "name": "n", "description": "d", "metadata": {"k": "v"},
                                                  "tags": ["tag"]},
    ("datasets", "update_item"): lambda s, u: {"id": s["item_id"], "dataset_id": "d1", "input": {"q": "y"},
                                               "metadata": {"k": "v"}},
    ("experiments", "add_experiment_result"): lambda s, u: {**R.result("e1", f"i-{u}"), "trace_id": "tr1",
                                                            "tags": ["tag"], "metadata": {"k": "v"}},
    ("experiments", "create_experiment"): lambda s, u: {**R.experiment(f"e-{u}"), "target_id": "agent-1",
                                                        "scorer_ids": ["scorer"], "organization_id": "org"},
    ("experiments", "delete_experiment"): lambda s, u: {"id": f"gone-{u}", "filters": TENANCY},
    ("experiments", "delete_experiment_results"): lambda s, u: {"experiment_id": f"gone-{u}"},
    ("experiments", "detach_dataset"): lambda s, u: {"dataset_id": f"gone-{u}"},
    ("experiments", "get_experiment_by_id"): lambda s, u: {"id": "e1", "filters": TENANCY},
    ("experiments", "get_experiment_result_by_id"): lambda s, u: {"id": s["result_id"]},
    ("experiments", "increment_experiment_counters"): lambda s, u: {"id": "e1", "succeeded": 1},
    ("experiments", "list_experiment_results"): lambda s, u: {"experiment_id": "e1", "trace_id": "tr1",
                                                              "tags": ["tag"], "filters": TENANCY},
    ("experiments", "list_experiments"): lambda s, u: {"dataset_id": "d1", "target_id": "agent-1",
                                                       "agent_version": "v1", "experiment_set_id": "set",
                                                       "comparison_id": "c", "variant_id": "v", "filters": TENANCY},
    ("experiments", "redact_item_results"): lambda s, u: {"dataset_id": "d1", "item_id": "i1"},
    ("experiments", "update_experiment"): lambda s, u: {"id": "e1", "name": "n", "description": "d",
                                                        "metadata": {"k": "v"}},
    ("experiments", "update_experiment_result"): lambda s, u: {"id": s["result_id"], "experiment_id": "e1",
                                                               "tags": ["tag"], "comment": "c"},
    ("experiments", "upsert_experiment_result"): lambda s, u: {**R.result("e1", f"u-{u}"), "tags": ["tag"]},
}

# Streaming reads (issue 21): the iterators are read to their end (consumed).
BASE_CALLS.update({
    ("memory", "iter_threads"): lambda s, u: {"resource_id": "r1", "metadata": {"k": "v"}},
    ("memory", "iter_messages"): lambda s, u: {"thread_id": "t1", "resource_id": "r1", "metadata": {"k": "v"},
                                               "date_range": {"start": "2026-01-01T00:00:00Z"}},
    ("workflows", "iter_workflow_runs"): lambda s, u: {"workflow_name": "wf", "status": "running",
                                                       "resource_id": "r1", "thread_id": "t1"},
    ("scores", "iter_scores"): lambda s, u: {"scorer_id": "scorer", "run_id": "run", "entity_id": "e",
                                             "entity_type": "AGENT", "trace_id": "tr1", "span_id": "sp1",
                                             "source": "LIVE", "filters": TENANCY},
    ("observability", "iter_spans"): lambda s, u: {"trace_id": "tr1"},
    ("observability", "iter_traces"): lambda s, u: {"filters": {"entity_id": "agent-1", "tags": ["tag"],
                                                                "metadata": {"env": "test"}}},
    ("agents", "iter_versions"): lambda s, u: {"agent_id": "a1"},
    ("datasets", "iter_dataset_items"): lambda s, u: {"dataset_id": "d1", "search": "q", "filters": TENANCY},
    ("experiments", "iter_experiments"): lambda s, u: {"dataset_id": "d1", "target_type": "agent", "status": "running",
                                                       "trial_index": 0, "filters": TENANCY},
    ("experiments", "iter_experiment_results"): lambda s, u: {"experiment_id": "e1", "trace_id": "tr1",
                                                              "status": "reviewed", "tags": ["tag"],
                                                              "filters": TENANCY},
})
# The current ("vNext") layout's signals, analytics and discovery (observability-vnext.md §8).
_AT = "2026-01-02T12:00:00.000Z"
_CONTEXT = {"trace_id": "tr1", "entity_type": "agent", "entity_name": "agent-1", "organization_id": "org",
            "environment": "prod", "service_name": "svc"}
_SIGNAL_FILTERS = {"entity_name": "agent-1", "organization_id": "org", "tags": ["tag"]}
BASE_CALLS.update({
    ("observability", "batch_create_logs"): lambda s, u: {"logs": [{"log_id": f"log-{u}", "timestamp": _AT,
                                                                    "level": "info", "message": "hello",
                                                                    "tags": ["tag"], "data": {"k": "v"}, **_CONTEXT}]},
    ("observability", "batch_create_metrics"): lambda s, u: {"metrics": [{
        "metric_id": f"metric-{u}", "timestamp": _AT, "name": "latency", "value": 1.5, "provider": "openai",
        "model": "gpt", "cost_unit": "usd", "labels": {"region": "eu"}, **_CONTEXT}]},
    ("observability", "create_score"): lambda s, u: {"score": {"score_id": f"score-{u}", "timestamp": _AT,
                                                               "scorer_id": "relevance", "score": 0.5,
                                                               "reason": "fine", "metadata": {"k": "v"}, **_CONTEXT}},
    ("observability", "create_feedback"): lambda s, u: {"feedback": {"feedback_id": f"fb-{u}", "timestamp": _AT,
                                                                     "feedback_type": "rating", "value": 4,
                                                                     "feedback_source": "user", "comment": "ok",
                                                                     **_CONTEXT}},
    ("observability", "list_logs"): lambda s, u: {"filters": {**_SIGNAL_FILTERS, "level": "info"}},
    ("observability", "list_metrics"): lambda s, u: {"filters": {**_SIGNAL_FILTERS, "name": ["latency"],
                                                                 "labels": {"region": "eu"}}},
    ("observability", "list_scores"): lambda s, u: {"filters": {**_SIGNAL_FILTERS, "scorer_id": "relevance",
                                                                "metadata": {"k": "v"}}},
    ("observability", "list_feedback"): lambda s, u: {"filters": {**_SIGNAL_FILTERS, "feedback_type": "rating"}},
    ("observability", "get_score_by_id"): lambda s, u: {"score_id": "score-0"},
    ("observability", "update_feedback_review_status"): lambda s, u: {"feedback_id": "fb-0",
                                                                      "review_status": "reviewed"},
    ("observability", "delete_scores"): lambda s, u: {"score_ids": [f"gone-{u}"], "organization_id": "org"},
    ("observability", "delete_feedback"): lambda s, u: {"feedback_ids": [f"gone-{u}"], "resource_id": "r1"},
    ("observability", "get_metric_aggregate"): lambda s, u: {"name": ["latency"], "aggregation": "avg",
                                                             "filters": _SIGNAL_FILTERS},
    ("observability", "get_metric_breakdown"): lambda s, u: {"name": ["latency"], "group_by": ["region"],
                                                             "aggregation": "sum"},
    ("observability", "get_metric_time_series"): lambda s, u: {"name": ["latency"], "interval": "1h",
                                                               "aggregation": "count_distinct",
                                                               "distinct_column": "model", "group_by": ["region"]},
    ("observability", "get_metric_percentiles"): lambda s, u: {"name": "latency", "percentiles": [0.5],
                                                               "interval": "1h", "filters": _SIGNAL_FILTERS},
    ("observability", "get_entity_names"): lambda s, u: {"entity_type": "agent"},
    ("observability", "get_tags"): lambda s, u: {"entity_type": "agent"},
    ("observability", "get_metric_names"): lambda s, u: {"prefix": "lat", "limit": 10},
    ("observability", "get_metric_label_keys"): lambda s, u: {"metric_name": "latency"},
    ("observability", "get_metric_label_values"): lambda s, u: {"metric_name": "latency", "label_key": "region",
                                                                "prefix": "e", "limit": 10},
})
for _signal, _identity in (("score", {"scorer_id": "relevance", "score_source": "live"}),
                           ("feedback", {"feedback_type": "rating", "feedback_source": "user"})):
    BASE_CALLS.update({
        ("observability", f"get_{_signal}_aggregate"): (lambda i: lambda s, u: {
            **i, "aggregation": "avg", "filters": _SIGNAL_FILTERS})(_identity),
        ("observability", f"get_{_signal}_breakdown"): (lambda i: lambda s, u: {
            **i, "group_by": ["entity_name"], "aggregation": "max"})(_identity),
        ("observability", f"get_{_signal}_time_series"): (lambda i: lambda s, u: {
            **i, "interval": "1d", "aggregation": "last", "group_by": ["environment"]})(_identity),
        ("observability", f"get_{_signal}_percentiles"): (lambda i: lambda s, u: {
            **i, "percentiles": [0.9], "interval": "1h", "filters": _SIGNAL_FILTERS})(_identity),
    })
# The signals' iterators take their lists' filters.
for _signal in ("logs", "metrics", "scores", "feedback"):
    BASE_CALLS[("observability", f"iter_{_signal}")] = BASE_CALLS[("observability", f"list_{_signal}")]
BASE_CALLS[("observability", "batch_create_scores")] = lambda s, u: {
    "scores": [BASE_CALLS[("observability", "create_score")](s, u)["score"]]}
BASE_CALLS[("observability", "batch_create_feedback")] = lambda s, u: {
    "feedbacks": [BASE_CALLS[("observability", "create_feedback")](s, u)["feedback"]]}
for _name in ("get_entity_types", "get_service_names", "get_environments", "refresh_discovery"):
    NO_STRING_ARGUMENTS[("observability", _name)] = "takes no argument"
BASE_CALLS[("datasets", "iter_datasets")] = lambda s, u: {"filters": {**TENANCY, "name": "n", "target_ids": ["t"]}}
BASE_CALLS[("agents", "iter_agents")] = lambda s, u: {**AGENT_LIST(s, u), "status": "draft", "visibility": "private",
                                                      "favorited_only": True, "with_versions": True}
NO_STRING_ARGUMENTS[("memory", "iter_resources")] = "takes no string argument"
# Retention (SQLite, PostgreSQL; NotSupportedError on ClickHouse): a policy old enough to delete
# nothing the seeds wrote, so the hostile variants reach the policy checks and the DELETE.
for _domain, _table in (("memory", "messages"), ("workflows", "workflow_snapshot"), ("scores", "scorers"),
                        ("observability", "spans"), ("experiments", "experiments")):
    BASE_CALLS[(_domain, "prune")] = (lambda table: lambda s, u: {"policies": {table: {"max_age": "3650d"}}})(_table)
# The agents domain's short aliases (Mastra's names) run the same code as the long names.
for _alias, _name in (("create", "create_agent"), ("delete", "delete_agent"), ("get_by_id", "get_agent_by_id"),
                      ("get_by_id_resolved", "get_agent_by_id_resolved"), ("list", "list_agents"),
                      ("list_resolved", "list_agents_resolved"), ("update", "update_agent")):
    BASE_CALLS[("agents", _alias)] = BASE_CALLS[("agents", _name)]


# --------------------------------------------------------------------------- hostile variants

def string_slots(value: Any, path: tuple = ()) -> Iterator[tuple]:
    """Paths of every string in ``value`` (a step is a dict key, a list index, or ``("key", k)``
    for the dict key itself)."""
    if isinstance(value, str):
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str):
                yield (*path, ("key", key))
            yield from string_slots(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from string_slots(item, (*path, index))


def replaced(value: Any, path: tuple, hostile: str) -> Any:
    """A copy of ``value`` with the string at ``path`` replaced by ``hostile``."""
    if not path:
        return hostile
    step, rest = path[0], path[1:]
    if isinstance(step, tuple):  # the dict key itself
        return {(hostile if key == step[1] else key): item for key, item in value.items()}
    if isinstance(value, dict):
        return {**value, step: replaced(value[step], rest, hostile)}
    return [replaced(item, rest, hostile) if index == step else item for index, item in enumerate(value)]


def run_hostile_calls(domain: str, repository: Any) -> list[str]:
    """Run every hostile variant of every base call of ``domain``; return the failures."""
    seeded = seed(domain, repository)
    counter = itertools.count()
    per_slot = HOSTILE_PER_SLOT_ON_CLICKHOUSE if repository.backend.name == "CLICKHOUSE" else None
    failures = []
    for name in sorted(public_operations(type(repository)) - {n for d, n in NO_STRING_ARGUMENTS if d == domain}):
        method, build = getattr(repository, name), BASE_CALLS[(domain, name)]
        try:  # the base call itself must be valid (deleting what is not there may say so, and an
            # operation the table layout rules out, such as update_span on ClickHouse's insert-only one)
            consumed(method(**build(seeded, str(next(counter)))))
        except (NotFoundError, NotSupportedError):
            pass
        slots = [slot for argument, value in build(seeded, "0").items() for slot in string_slots(value, (argument,))]
        for path, hostile in hostile_plan(slots, per_slot):
            kwargs = replaced(build(seeded, str(next(counter))), path, hostile)
            failure = hostile_failure(domain, repository, method, kwargs, unstorable=hostile in UNSTORABLE)
            if failure:
                failures.append(f"{name} {_describe(path)}={hostile[:30]!r}: {failure}")
    return failures


def hostile_plan(slots: list[tuple], per_slot: int | None) -> list[tuple[tuple, str]]:
    """The (slot, hostile string) calls of one method: every string in every slot, or
    ``per_slot`` strings per slot in turn, each string in one slot at least."""
    if per_slot is None or not slots:
        return [(slot, hostile) for slot in slots for hostile in HOSTILE]
    chosen = {(index, (index * per_slot + step) % len(HOSTILE)) for index in range(len(slots))
              for step in range(per_slot)}
    chosen |= {(number % len(slots), number) for number in range(len(HOSTILE))}
    return [(slots[index], HOSTILE[number]) for index, number in sorted(chosen)]


def hostile_failure(domain: str, repository: Any, method: Callable[..., Any], kwargs: dict[str, Any], *,
                    unstorable: bool) -> str | None:
    """What is wrong with the answer to one hostile call (``None``: nothing)."""
    must_reject = unstorable and domain in REJECTING
    before = repository.count_rows() if must_reject else None
    try:
        consumed(method(**kwargs))
    except LIBRARY_ERRORS as exc:
        answer = exc
    except Exception as exc:  # noqa: BLE001 - any other answer is the failure under test
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    else:
        answer = None
    if must_reject:
        if type(answer) is not ValidationError:
            return f"answered {answer!r} instead of a validation error"
        if repository.count_rows() != before:
            return "wrote rows although the call was refused"
    return None


def consumed(result: Any) -> Any:
    """The result of a call, an ``iter_*`` method's iterator read to its end (its reads run then)."""
    return list(result) if isinstance(result, Iterator) else result


def _describe(path: tuple) -> str:
    return ".".join(f"<key {step[1]}>" if isinstance(step, tuple) else str(step) for step in path)


# --------------------------------------------------------------------------- tests

def test_every_method_is_covered():
    """Each public operation has a base call or an explicit reason to be left out."""
    for domain, repository_class in REPOSITORIES.items():
        discovered = {(domain, name) for cls in (repository_class, *LAYOUTS.get(domain, ()))
                      for name in public_operations(cls)}
        covered = {key for key in BASE_CALLS if key[0] == domain} | \
            {key for key in NO_STRING_ARGUMENTS if key[0] == domain}
        assert discovered == covered, (f"{domain}: without a base call: {sorted(discovered - covered)}; "
                                       f"no longer public: {sorted(covered - discovered)}")


@pytest.fixture(scope="module")
def store(own_store):
    """A database of this module's own: the prune base calls create anchor indexes, which the
    shared database's layout tests must not find."""
    return own_store


@pytest.mark.parametrize("domain", ["memory", "workflows", "scores", "observability"])
def test_hostile_strings_in_domains_everywhere(store, domain):
    repository = R.repository_of(store, domain)
    repository.dangerously_clear_all()
    assert run_hostile_calls(domain, repository) == []


@pytest.mark.backends("sqlite", "postgres")
def test_hostile_strings_in_the_current_observability_layout(own_url, backend):
    """SQLite's and PostgreSQL's ``layout="vnext"`` (ClickHouse's default, covered above)."""
    if MATRIX[backend].family == "sqlite":
        repository = ObservabilitySQLite(url=own_url, layout="vnext")
    else:
        repository = ObservabilityPG(connection_string=own_url, layout="vnext")
    repository.init()
    try:
        repository.dangerously_clear_all()
        assert run_hostile_calls("observability", repository) == []
    finally:
        repository.close()


@pytest.mark.backends("sqlite", "postgres")
@pytest.mark.parametrize("domain", REJECTING)
def test_hostile_strings_in_domains_that_reject_unstorable_text(store, domain):
    repository = R.repository_of(store, domain)
    repository.dangerously_clear_all()
    assert run_hostile_calls(domain, repository) == []


# --------------------------------------------------------------------------- reads map as writes do

def test_memory_reads_find_ids_written_with_unstorable_characters(memory):
    memory.save_thread(thread=R.thread("a\x00b\ud800", "r\x00"))
    memory.save_messages(messages=[R.message("m\x00", "a\x00b\ud800", "r\x00", content={
        "format": 2, "parts": [{"type": "text", "text": "hi"}], "metadata": {"k": "v\ud800"}})])
    thread = memory.get_thread_by_id(thread_id="a\x00b\ud800", resource_id="r\x00")
    assert thread is not None and thread["id"] == memory.backend.clean("a\x00b\ud800")
    [message] = memory.list_messages(thread_id="a\x00b\ud800").items
    assert message["id"] == memory.backend.clean("m\x00")
    assert [t["id"] for t in memory.list_threads(resource_id="r\x00").items] == [thread["id"]]


def test_score_and_trace_reads_find_ids_written_with_unstorable_characters(scores, observability):
    scores.save_score(score=R.score("s\x00", run_id="run\x00\ud800"))
    assert scores.get_score_by_id(id="s\x00") is not None
    assert scores.list_scores_by_run_id(run_id="run\x00\ud800").total == 1
    observability.batch_create_spans(records=[R.span("tr\x00", "root\ud800", metadata={"env": "a\ud800"})])
    assert observability.get_trace(trace_id="tr\x00") is not None
    assert observability.get_span(trace_id="tr\x00", span_id="root\ud800") is not None
    assert observability.list_traces(filters={"metadata": {"env": "a\ud800"}}).total == 1


@pytest.mark.backends("sqlite", "postgres")
def test_rejecting_domains_name_the_field_holding_unstorable_text(agents, datasets, experiments):
    for call, field in ((lambda: agents.get_agent_by_id(id="a\x00b"), "id"),
                        (lambda: agents.list_agents(author_id="\ud800"), "author_id"),
                        (lambda: datasets.get_dataset_by_id(id="d", filters={"organization_id": "o\x00"}),
                         "filters.organization_id"),
                        (lambda: experiments.list_experiments(dataset_id="d\x00"), "dataset_id")):
        with pytest.raises(ValidationError) as caught:
            call()
        assert field in caught.value.fields, caught.value.fields


@pytest.mark.backends("postgres")
def test_metadata_filters_with_nul_find_what_postgres_stored(memory, observability):
    """PostgreSQL strips U+0000 from JSON written and from JSON filter values alike.  (SQLite keeps
    U+0000 in stored JSON, but its ``json_extract`` ends such a string at the U+0000, so a metadata
    filter value holding one finds nothing there.)"""
    memory.save_thread(thread=R.thread("t", metadata={"k": "v\x00"}))
    assert [t["id"] for t in memory.list_threads(metadata={"k": "v\x00"}).items] == ["t"]
    observability.batch_create_spans(records=[R.span("tr", "root", tags=["a\x00"], metadata={"env": "a\x00"})])
    assert observability.list_traces(filters={"metadata": {"env": "a\x00"}, "tags": ["a\x00"]}).total == 1
