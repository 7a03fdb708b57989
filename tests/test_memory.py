"""Memory domain conformance suite (memory.md §6), run on every backend."""

from __future__ import annotations

import uuid

import pytest

from repository import NotFoundError, ValidationError


def make_thread(**overrides):
    thread = {"id": f"thread-{uuid.uuid4()}", "resource_id": f"resource-{uuid.uuid4()}", "title": "Test Thread",
              "metadata": {"key": "value"}}
    thread.update(overrides)
    return thread


def test_save_and_get_thread(memory):
    thread = make_thread()
    saved = memory.save_thread(thread=thread)
    assert saved["title"] == "Test Thread" and saved["metadata"] == {"key": "value"}
    assert memory.get_thread_by_id(thread_id=thread["id"]) == saved


def test_update_missing_thread_raises(memory, backend):
    with pytest.raises(NotFoundError) as info:
        memory.update_thread(id="missing", title="x")
    assert info.value.message == "Thread missing not found"
    assert info.value.id == f"STORAGE_{ {'sqlite': 'SQLITE', 'postgres': 'PG', 'clickhouse': 'CLICKHOUSE'}[backend]}_UPDATE_THREAD_NOT_FOUND"


def test_save_thread_validation_names_fields(memory):
    with pytest.raises(ValidationError) as info:
        memory.save_thread(thread={"id": "", "resource_id": 5})
    assert set(info.value.fields) == {"id", "resource_id"}
