"""The SQL generated for current ClickHouse servers (24.x and later), run in chdb.

Only Debian's 18.16 server can be installed here; chdb embeds a current ClickHouse engine, so
the DDL (``DateTime64(3, 'UTC')`` timestamps, TTL) and the reads and writes generated for such
servers are executed for real.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from composite_store.clickhouse import ClickHouseStore

from tests.chdb_client import ChdbClient
from tests.conftest import CHDB_URL


@pytest.fixture(scope="module")
def current_store(chdb_engine):
    store = ClickHouseStore(id="current", url=CHDB_URL)
    store.backend.database.client_factory = lambda **kwargs: ChdbClient(chdb_engine, **kwargs)
    store.init()
    yield store
    store.close()


def test_current_servers_get_datetime64_columns(current_store):
    features = current_store.backend.features
    assert features.datetime64 and features.ttl
    columns = features.columns["mastra_threads"]
    assert columns["createdAt"] == "DateTime64(3, 'UTC')"
    assert columns["_version"] == "UInt64" and columns["_deleted"] == "UInt8"
    engine, full = features.tables["mastra_threads"]
    assert engine == "ReplacingMergeTree" and "_version" in full


def test_memory_round_trip_on_a_current_server(current_store):
    memory = current_store.get_store("memory")
    memory.dangerously_clear_all()
    base = datetime(2026, 1, 31, 9, 5, 1, 123000, tzinfo=timezone.utc)
    memory.save_thread(thread={"id": "t", "resource_id": "r", "title": "It's", "metadata": {"k": "v"},
                               "created_at": base})
    memory.save_messages(messages=[
        {"id": f"m{i}", "thread_id": "t", "resource_id": "r", "role": "user", "content": f"hello {i}",
         "created_at": base + timedelta(milliseconds=i)} for i in range(5)])
    memory.update_thread(id="t", title="first")
    updated = memory.update_thread(id="t", title="second", metadata={"n": 1})
    assert memory.get_thread_by_id(thread_id="t") == updated
    assert updated["created_at"] == base and updated["metadata"] == {"k": "v", "n": 1}
    page = memory.list_messages(thread_id="t", date_range={"start": base + timedelta(milliseconds=1),
                                                           "end": base + timedelta(milliseconds=3)})
    assert [m["id"] for m in page.items] == ["m1", "m2", "m3"] and page.total == 3
    assert page.items[0]["created_at"] == base + timedelta(milliseconds=1)
    assert memory.list_threads(metadata={"n": 1}).total == 1
    memory.delete_thread(thread_id="t")
    assert memory.get_thread_by_id(thread_id="t") is None
    assert memory.list_messages(thread_id="t").total == 0
