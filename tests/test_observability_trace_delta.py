"""Delta polling of trace and branch lists (observability-vnext.md §9) on every vNext backend:
traces emit their root rows only, branches their anchor rows; ClickHouse current servers read
the ``mastra_trace_roots_delta`` / ``mastra_trace_branches_delta`` tables of §3.3, 18.16 has no
delta polling."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from composite_store import NotSupportedError, ValidationError
from composite_store.clickhouse import ObservabilityClickHouse
from composite_store.postgres import ObservabilityPG
from composite_store.sqlite import ObservabilitySQLite
from tests.conftest import MATRIX
from tests.test_observability_signals import eventually

BASE = datetime(2026, 1, 2, 12, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def delta_repository(backend, own_url):
    """The vNext repository with ``delta_polling=True`` on the module's database."""
    family = MATRIX[backend].family
    if family == "sqlite":
        repository = ObservabilitySQLite(url=own_url, layout="vnext", delta_polling=True)
    elif family == "postgres":
        repository = ObservabilityPG(connection_string=own_url, layout="vnext", delta_polling=True)
    else:
        repository = ObservabilityClickHouse(url=own_url, layout="vnext", delta_polling=True)
    repository.init()
    yield repository
    repository.close()


def span(span_id: str, trace_id: str, parent_span_id: str | None = None, span_type: str = "agent_run") -> dict:
    return {"trace_id": trace_id, "span_id": span_id, "parent_span_id": parent_span_id, "name": span_id,
            "span_type": span_type, "is_event": False, "started_at": BASE, "ended_at": BASE + timedelta(seconds=1)}


def delta_ids(page) -> list[tuple[str, str]]:
    return sorted((item["trace_id"], item["span_id"]) for item in page.items)


@pytest.mark.requires(cluster=False)  # the cluster has no delta tables
def test_trace_and_branch_delta(delta_repository):
    """§9: a page's cursor, then the roots (traces) or anchors (branches) written after it,
    ``limit`` and ``has_more``, filters; a new child never re-emits its trace; bad cursors."""
    obs = delta_repository
    obs.dangerously_clear_all()
    if obs.backend.name == "CLICKHOUSE" and not obs.backend.server_features.bool_type:
        with pytest.raises(NotSupportedError):
            obs.list_traces(mode="delta")
        assert obs.list_branches().delta_cursor is None
        return
    traces, branches = obs.list_traces().delta_cursor, obs.list_branches().delta_cursor
    assert isinstance(traces, str) and isinstance(branches, str)
    obs.batch_create_spans(records=[span("a", "t-a"), span("a-agent", "t-a", "a"),
                                    span("a-model", "t-a", "a", "model_generation"), span("b", "t-b")])
    page = eventually(lambda: obs.list_traces(mode="delta", after=traces), lambda page: len(page.items) == 2)
    assert delta_ids(page) == [("t-a", "a"), ("t-b", "b")] and page.has_more is False
    assert all(item["status"] == "success" for item in page.items)
    anchors = eventually(lambda: obs.list_branches(mode="delta", after=branches), lambda page: len(page.items) == 3)
    assert delta_ids(anchors) == [("t-a", "a"), ("t-a", "a-agent"), ("t-b", "b")]
    first = obs.list_traces(mode="delta", after=traces, limit=1)
    second = obs.list_traces(mode="delta", after=first.delta_cursor, limit=1)
    assert (first.has_more, second.has_more) == (True, False)
    assert delta_ids(first) + delta_ids(second) in ([("t-a", "a"), ("t-b", "b")], [("t-b", "b"), ("t-a", "a")])
    assert delta_ids(obs.list_traces(mode="delta", after=traces, filters={"trace_id": "t-b"})) == [("t-b", "b")]
    light = obs.list_traces_light(mode="delta", after=traces, filters={"trace_id": "t-a"})
    assert [item["span_id"] for item in light.items] == ["a"]
    # A later child is no root: the trace is not emitted again.
    head = second.delta_cursor
    obs.batch_create_spans(records=[span("a-late", "t-a", "a", "model_generation")])
    assert obs.list_traces(mode="delta", after=head).items == []
    with pytest.raises(ValidationError) as error:
        obs.list_traces(mode="delta", after="not a cursor")
    assert error.value.fields == {"after": ["Invalid observability delta cursor"]}
    with pytest.raises(ValidationError) as error:
        obs.list_branches(mode="delta", page=1, limit=101)
    assert set(error.value.fields) == {"page", "limit"}
