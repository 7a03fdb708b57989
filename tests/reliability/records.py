"""Valid records of every domain, as the reliability tests write them.

Each builder returns a fresh, valid input for one write method; tests vary ids to make rows
distinct and mutate copies to make them invalid.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from composite_store.stores import WholeStore

UTC = timezone.utc
T0 = datetime(2026, 1, 31, 9, 5, 1, 123000, tzinfo=UTC)

#: Domains each backend holds (ClickHouse: the four of README *ClickHouse servers and domains*).
DOMAINS_ON = {
    "sqlite": ("memory", "workflows", "scores", "observability", "agents", "datasets", "experiments"),
    "postgres": ("memory", "workflows", "scores", "observability", "agents", "datasets", "experiments"),
    "clickhouse": ("memory", "workflows", "scores", "observability"),
}


def repository_of(store: WholeStore, domain: str) -> Any:
    """The store's repository of ``domain``; fails when the store does not hold it."""
    repository = store.get_store(domain)
    assert repository is not None, f"{store!r} holds no {domain} domain"
    return repository


def span_table(repository: Any) -> str:
    """The table with one (current) row per span in the observability repository's layout: the
    insert-only layout's span events (ClickHouse's default), else ``mastra_ai_spans``."""
    return "mastra_span_events" if getattr(repository, "layout", "legacy") == "vnext" else "mastra_ai_spans"


def live_rows(repository: Any) -> dict[str, int | None]:
    """Live rows per table of the repository's domain."""
    return repository.count_rows()


def thread(thread_id: str, resource_id: str = "user-1", **overrides: Any) -> dict[str, Any]:
    """A memory thread."""
    return {"id": thread_id, "resource_id": resource_id, "title": "A thread", "metadata": {"topic": "load"},
            **overrides}


def message(message_id: str, thread_id: str, resource_id: str = "user-1", **overrides: Any) -> dict[str, Any]:
    """A memory message of ``thread_id``."""
    return {"id": message_id, "thread_id": thread_id, "resource_id": resource_id, "role": "user",
            "content": f"hello from {message_id}", **overrides}


def resource(resource_id: str, **overrides: Any) -> dict[str, Any]:
    """A memory resource."""
    return {"id": resource_id, "working_memory": "# Notes", "metadata": {"plan": "free"}, **overrides}


def snapshot(run_id: str, status: str = "running") -> dict[str, Any]:
    """A workflow snapshot."""
    return {"runId": run_id, "status": status, "value": {}, "context": {"input": {"q": 1}},
            "serializedStepGraph": [], "activePaths": [], "suspendedPaths": {}, "timestamp": 1769850301123}


def score(score_id: str | None, **overrides: Any) -> dict[str, Any]:
    """A score (``score_id`` ``None``: the library generates the id)."""
    record = {"scorer_id": "scorer-1", "run_id": "run-1", "scorer": {"id": "scorer-1", "name": "Relevance"},
              "score": 0.75, "output": {"text": "answer"}, "entity": {"id": "agent-1", "name": "Helper"},
              "entity_id": "agent-1", "entity_type": "AGENT", "source": "TEST", "metadata": {"k": "v"}}
    if score_id is not None:
        record["id"] = score_id
    return {**record, **overrides}


def span(trace_id: str, span_id: str, parent_span_id: str | None = None, **overrides: Any) -> dict[str, Any]:
    """An ended observability span (a root when ``parent_span_id`` is ``None``)."""
    return {"trace_id": trace_id, "span_id": span_id, "parent_span_id": parent_span_id, "name": "step",
            "span_type": "agent_run" if parent_span_id is None else "tool_call", "started_at": T0,
            "ended_at": T0 + timedelta(seconds=1), "metadata": {"env": "test"}, **overrides}


def agent(agent_id: str, **overrides: Any) -> dict[str, Any]:
    """An agent with its required configuration."""
    return {"id": agent_id, "name": "Helper", "instructions": "Be brief",
            "model": {"provider": "openai", "name": "gpt-4o"}, "metadata": {"team": "a"}, **overrides}


def dataset(dataset_id: str, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments of ``create_dataset``."""
    return {"id": dataset_id, "name": "Questions", "description": "d", "metadata": {"k": 1}, **overrides}


def item(**overrides: Any) -> dict[str, Any]:
    """A dataset item for ``batch_insert_items``."""
    return {"input": {"question": "2+2"}, "ground_truth": {"answer": "4"}, **overrides}


def experiment(experiment_id: str, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments of ``create_experiment``."""
    return {"id": experiment_id, "total_items": 10, "name": "Run", "metadata": {"k": 1}, **overrides}


def result(experiment_id: str, item_id: str, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments of ``add_experiment_result`` / ``upsert_experiment_result``."""
    return {"experiment_id": experiment_id, "item_id": item_id, "input": {"question": "2+2"},
            "started_at": T0, "completed_at": T0 + timedelta(seconds=1), **overrides}
