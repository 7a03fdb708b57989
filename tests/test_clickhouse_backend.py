"""ClickHouse-specific behaviour: capability detection, existing tables, mutations, reconnects."""

from __future__ import annotations

import logging

import clickhouse_driver
import pytest

from composite_store import BackendUnavailableError, NotSupportedError, StorageError
from composite_store.backends.clickhouse import ClickHouseBackend, escape, parse_clickhouse_url, timestamp_kind
from composite_store.clickhouse import ClickHouseStore, MemoryClickHouse

pytestmark = pytest.mark.backends("clickhouse")


@pytest.fixture
def client(backend, clickhouse_url):
    params = parse_clickhouse_url(clickhouse_url)
    client = clickhouse_driver.Client(**params)
    yield client
    client.disconnect()


@pytest.fixture
def fresh_database(client, clickhouse_url):
    """A ClickHouse database of its own, for tests that lay out tables by hand."""
    name = "cs_backend_test"
    client.execute(f"DROP DATABASE IF EXISTS {name}")
    client.execute(f"CREATE DATABASE {name}")
    yield clickhouse_url.rsplit("/", 1)[0] + f"/{name}"
    client.execute(f"DROP DATABASE IF EXISTS {name}")


def test_capabilities_are_detected_from_the_server(store):
    features = store.backend.server_features
    assert features.version >= (18, 16)
    assert features.datetime64 == ("DateTime64" in {r[0] for r in store.backend.database.connection().client.execute(
        "SELECT name FROM system.data_type_families")})
    assert features.ttl == (features.version >= (19, 6))


def test_reads_use_final_and_skip_tombstones(store):
    thread = store.get_store("memory").models.thread
    sql, _ = store.backend.select(thread).where(thread.id == "x").sql()
    assert '"mastra_threads" AS "t1" FINAL' in sql and '"_deleted" = %s' in sql and "PREWHERE" not in sql


def test_a_plain_merge_tree_table_is_refused_and_left_alone(client, fresh_database):
    database = fresh_database.rsplit("/", 1)[1]
    client.execute(f"CREATE TABLE {database}.mastra_threads (id String, createdAt Int64) "
                   "ENGINE = MergeTree() ORDER BY (createdAt, id)")
    memory = MemoryClickHouse(url=fresh_database)
    with pytest.raises(NotSupportedError) as info:
        memory.init()
    assert info.value.id == "STORAGE_CLICKHOUSE_INIT_NOT_SUPPORTED"
    assert "mastra_threads" in info.value.message and "MergeTree" in info.value.message
    columns = [r[0] for r in client.execute(f"SELECT name FROM system.columns WHERE database = '{database}' "
                                            "AND table = 'mastra_threads'")]
    assert columns == ["id", "createdAt"]
    memory.close()


def test_missing_version_columns_are_added_and_old_rows_read_as_version_zero(client, fresh_database):
    database = fresh_database.rsplit("/", 1)[1]
    client.execute(f"CREATE TABLE {database}.mastra_threads (id String, resourceId String, title String, "
                   "metadata Nullable(String), createdAt Int64, updatedAt Int64, extra String DEFAULT 'x') "
                   "ENGINE = ReplacingMergeTree() ORDER BY (createdAt, id)")
    client.execute(f"INSERT INTO {database}.mastra_threads (id, resourceId, title, metadata, createdAt, updatedAt) "
                   "VALUES", [("old", "r", "Old", "_null_", 1_700_000_000_000, 1_700_000_000_000)])
    memory = MemoryClickHouse(url=fresh_database)
    memory.init()
    columns = {r[0] for r in client.execute(f"SELECT name FROM system.columns WHERE database = '{database}' "
                                            "AND table = 'mastra_threads'")}
    assert {"_version", "_deleted", "extra"} <= columns
    thread = memory.get_thread_by_id(thread_id="old")
    assert thread["title"] == "Old" and thread["metadata"] == {}
    updated = memory.update_thread(id="old", title="New")
    assert memory.get_thread_by_id(thread_id="old") == updated
    memory.close()


def test_concurrent_init_of_separate_stores_adds_each_column_once(client, fresh_database):
    import threading

    database = fresh_database.rsplit("/", 1)[1]
    client.execute(f"CREATE TABLE {database}.mastra_messages (id String, thread_id String, content String, "
                   "role String, type String, createdAt Int64) ENGINE = ReplacingMergeTree() ORDER BY (createdAt, id)")
    stores = [ClickHouseStore(url=fresh_database) for _ in range(4)]
    barrier, errors = threading.Barrier(4), []

    def init(store):
        barrier.wait()
        try:
            store.init()
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=init, args=(s,)) for s in stores]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == []
    columns = [r[0] for r in client.execute(f"SELECT name FROM system.columns WHERE database = '{database}' "
                                            "AND table = 'mastra_messages'")]
    assert columns.count("resourceId") == 1 and columns.count("_version") == 1
    for store in stores:
        store.close()


def test_ttl_on_a_server_without_ttl_logs_one_warning(fresh_database, caplog):
    backend = ClickHouseBackend(url=fresh_database, ttl_days=7)
    if backend.server_features.ttl:
        pytest.skip("this server supports TTL")
    from composite_store.models.base import ClickHouseTable
    import peewee

    class Event(peewee.Model):
        id = peewee.TextField(primary_key=True)

        class Meta:
            database = backend.database
            table_name = "events_with_ttl"
            clickhouse = ClickHouseTable(order_by=("id",), ttl_column="createdAt")

    from composite_store.models.fields import TimestampField
    Event._meta.add_field("created_at", TimestampField(column_name="createdAt"))
    backend.prepare_models([Event])
    with caplog.at_level(logging.WARNING, logger="composite_store.clickhouse"):
        backend.create_tables([Event])
    warnings = [r for r in caplog.records if r.name == "composite_store.clickhouse"]
    assert len(warnings) == 1 and "TTL" in warnings[0].getMessage()
    backend.close()


def test_bulk_delete_waits_for_its_mutation_and_times_out_clearly(client, fresh_database):
    database = fresh_database.rsplit("/", 1)[1]
    memory = MemoryClickHouse(url=fresh_database, mutation_timeout_s=2)
    memory.init()
    memory.save_thread(thread={"id": "t", "resource_id": "r"})
    memory.save_messages(messages=[{"id": f"m{i}", "thread_id": "t", "resource_id": "r", "role": "user",
                                    "content": f"hello {i}"} for i in range(20)])
    memory.delete_thread(thread_id="t")
    assert client.execute(f"SELECT count() FROM {database}.mastra_messages WHERE thread_id = 't'") == [(0,)]
    # A mutation that can never finish makes the next bulk delete time out with its id.
    memory.save_thread(thread={"id": "t2", "resource_id": "r"})
    memory.save_messages(messages=[{"id": "x", "thread_id": "t2", "resource_id": "r", "role": "user",
                                    "content": "stuck"}])
    client.execute(f"ALTER TABLE {database}.mastra_messages DELETE WHERE throwIf(id = 'x')")
    with pytest.raises(StorageError) as info:
        memory.delete_thread(thread_id="t2")
    assert info.value.id == "STORAGE_CLICKHOUSE_DELETE_THREAD_FAILED"
    assert info.value.details["code"] == "MUTATION_TIMEOUT" and info.value.details["mutation_ids"]
    memory.close()


def test_a_restarted_server_is_reconnected_without_a_new_store(clickhouse_server, fresh_database):
    if clickhouse_server is None:
        pytest.skip("the server is external")
    memory = MemoryClickHouse(url=fresh_database)
    memory.init()
    memory.save_thread(thread={"id": "before", "resource_id": "r"})
    clickhouse_server.stop()
    try:
        with pytest.raises(BackendUnavailableError) as info:
            memory.get_thread_by_id(thread_id="before")
        assert info.value.id == "STORAGE_CLICKHOUSE_GET_THREAD_BY_ID_FAILED"
    finally:
        clickhouse_server.start()
    assert memory.get_thread_by_id(thread_id="before")["id"] == "before"
    memory.close()


@pytest.mark.parametrize("value, literal", [
    (None, "NULL"), (True, "1"), (False, "0"), (5, "5"), (1.5, "1.5"),
    ("it's \\ a\nb\x00", "'it\\'s \\\\ a\\nb\\0'"), (["a", 1], "('a', 1)"),
])
def test_escape(value, literal):
    assert escape(value) == literal


def test_timestamp_kind_from_column_type(store):
    features = store.backend.server_features
    assert timestamp_kind("DateTime64(3, 'UTC')", features) == "datetime64"
    assert timestamp_kind("DateTime", features) == "datetime"
    assert timestamp_kind("Int64", features) == "ms"
    assert timestamp_kind("Nullable(Int64)", features) == "ms"
