"""The backends' JSON predicates (one implementation per database), on every backend of the matrix.

Domains build their JSON filters from these three operations only; each is checked here against
rows stored through the public API, and the SQL-or-Python choice of ``json_members_equal`` is
pinned: SQL wherever the server has the functions to decide it exactly.
"""

from __future__ import annotations

import peewee
import pytest

STORED = {
    "t-int": {"n": 1, "s": "x", "flag": True},
    "t-float": {"n": 1.0, "s": "y", "nested": {"n": 2}},
    "t-text": {"n": "1", "s": "x", "none": None},
    "t-bool": {"n": True, "flag": False},
    "t-empty": {},
}


@pytest.fixture
def threads(memory):
    for thread_id, metadata in STORED.items():
        memory.save_thread(thread={"id": thread_id, "resource_id": "r", "metadata": metadata})
    return memory


def matching(repository, condition) -> set[str]:
    Thread = repository.models.thread
    with repository.backend.connection():
        return {row["id"] for row in repository.backend.select(Thread).where(condition)}


@pytest.mark.parametrize(("filters", "expected"), [
    ({"n": 1}, {"t-int", "t-float"}),
    ({"n": "1"}, {"t-text"}),
    ({"n": True}, {"t-bool"}),
    ({"flag": False}, {"t-bool"}),
    ({"none": None}, {"t-text"}),
    ({"s": "x", "n": 1}, {"t-int"}),
    ({"missing": None}, set()),
])
def test_members_equal_is_type_aware(threads, backend, filters, expected):
    backend_ = threads.backend
    with backend_.connection():
        condition = backend_.json_members_equal(threads.models.thread.metadata, filters)
        in_sql = backend_.name != "CLICKHOUSE" or backend_.server_features.json_functions
    # SQL wherever the server can decide it: SQLite, PostgreSQL and current ClickHouse servers.
    assert (condition is not None) == in_sql
    if condition is not None:
        assert matching(threads, condition) == expected
    assert {t["id"] for t in threads.list_threads(metadata=filters, per_page=False).items} == expected


def test_array_contains_all_and_present(observability, backend):
    spans = [
        {"trace_id": "t1", "span_id": "s", "name": "a", "span_type": "agent_run", "tags": ["a", "b"],
         "error": {"message": "boom"}, "started_at": "2026-01-01T00:00:00Z"},
        {"trace_id": "t2", "span_id": "s", "name": "b", "span_type": "agent_run", "tags": ["a"],
         "started_at": "2026-01-01T00:00:01Z"},
        {"trace_id": "t3", "span_id": "s", "name": "c", "span_type": "agent_run", "tags": ["a,b"],
         "started_at": "2026-01-01T00:00:02Z"},
    ]
    observability.batch_create_spans(records=spans)
    Span = observability.models.span
    backend_ = observability.backend

    def traces(condition: peewee.Node) -> set[str]:
        with backend_.connection():
            return {row["trace_id"] for row in backend_.select(Span).where(condition)}

    with backend_.connection():
        assert traces(backend_.json_array_contains_all(Span.tags, ["a", "b"])) == {"t1"}
        assert traces(backend_.json_array_contains_all(Span.tags, ["a"])) == {"t1", "t2"}
        assert traces(backend_.json_array_contains_all(Span.tags, ["a,b"])) == {"t3"}
        assert traces(backend_.json_present(Span.error)) == {"t1"}


def test_members_equal_finds_text_with_nul(memory, backend):
    """A filter value holding U+0000 finds what the write stored (stripped on PostgreSQL, kept
    elsewhere), also on SQLite, whose json_extract would cut the text at the NUL."""
    memory.save_thread(thread={"id": "t-nul", "resource_id": "r", "metadata": {"k": "a\x00b"}})
    memory.save_thread(thread={"id": "t-a", "resource_id": "r", "metadata": {"k": "a"}})
    found = memory.list_threads(metadata={"k": "a\x00b"}, per_page=False).items
    assert [thread["id"] for thread in found] == ["t-nul"]
