"""Write primitives of the backends, checked against what a read of the same row gives back."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from composite_store.values import JSONText, truncate_ms


@pytest.mark.backends("sqlite", "postgres", "clickhouse")
def test_insert_returning_gives_the_row_as_a_read_gives_it(memory) -> None:
    backend, Thread = memory.backend, memory.models.thread
    created = datetime(2025, 3, 1, 9, 30, 15, 123456, tzinfo=timezone.utc)  # sub-millisecond digits
    metadata = {"zeta": 1, "alpha": [1.5, "é", None], "nested": {"b": True, "a": {}}}
    row = {"id": "t-returning", "resource_id": "alice", "title": "Order 1042", "metadata": metadata,
           "created_at": created, "updated_at": created}
    with backend.connection(), backend.write():
        returned = backend.insert_returning(Thread, row)
    with backend.connection():
        read = backend.select(Thread).where(Thread.id == "t-returning").get()
    assert returned == read
    assert returned["created_at"] == truncate_ms(created) and returned["metadata"] == metadata


@pytest.mark.backends("sqlite", "postgres", "clickhouse")
def test_insert_returning_decodes_stored_json_text_and_fills_columns_not_given(memory) -> None:
    backend, Resource = memory.backend, memory.models.resource
    stamp = datetime(2025, 3, 1, 9, 30, tzinfo=timezone.utc)
    with backend.connection(), backend.write():
        returned = backend.insert_returning(Resource, {"id": "r-returning", "metadata": JSONText('{"tier":"gold"}'),
                                                       "created_at": stamp, "updated_at": stamp})
    with backend.connection():
        read = backend.select(Resource).where(Resource.id == "r-returning").get()
    assert returned == read
    assert returned["metadata"] == {"tier": "gold"} and returned["working_memory"] is None
