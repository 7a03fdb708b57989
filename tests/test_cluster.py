"""ClickHouse clusters (issue 22): the layout ``cluster=`` creates, and faults on a real cluster.

The cluster is the session's (tests/conftest.py ``clickhouse_cluster``: ZooKeeper, shard 1 with
replicas ``a`` and ``b``, shard 2 with one server); each test module works in a database of its
own.  The domains' conformance suites run on the same cluster as the backend
``clickhouse-cluster``; these tests are about what only a cluster has: where rows live, a stopped
replica, a stopped shard.  Every test restarts what it stopped.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import pytest

from composite_store import BackendUnavailableError, NotSupportedError, ValidationError
from composite_store.clickhouse import ClickHouseStore, MemoryClickHouse
from tests.servers import ClickHouseCluster, ClickHouseServer

pytestmark = pytest.mark.cluster

TABLES = ("mastra_threads", "mastra_messages", "mastra_resources", "mastra_workflow_snapshot", "mastra_scorers",
          "mastra_span_events", "mastra_trace_roots", "mastra_trace_branches")


def client(server: ClickHouseServer, database: str = "default") -> Any:
    """A raw client of one server of the cluster."""
    from clickhouse_driver import Client

    return Client(host=server.host, port=server.tcp_port, database=database)


@pytest.fixture(scope="module")
def cluster(clickhouse_cluster: ClickHouseCluster) -> ClickHouseCluster:
    return clickhouse_cluster


@pytest.fixture(scope="module")
def database(cluster: ClickHouseCluster) -> str:
    """A database of this module's own on every server of the cluster."""
    name = f"cluster_{uuid.uuid4().hex[:8]}"
    client(cluster.servers[0]).execute(f"CREATE DATABASE {name} ON CLUSTER {cluster.name}")
    return name


def url(cluster: ClickHouseCluster, database: str, server: ClickHouseServer) -> str:
    """The cluster's URL through ``server``, as user ``app`` (who has a password)."""
    return (f"clickhouse://{cluster.user}:{cluster.password}@{server.host}:{server.tcp_port}/{database}"
            f"?cluster={cluster.name}")


@pytest.fixture(scope="module")
def store(cluster: ClickHouseCluster, database: str) -> Iterator[ClickHouseStore]:
    """A whole store through shard 2's server (so shard 1's replicas can stop), initialized."""
    store = ClickHouseStore(url=url(cluster, database, cluster.shards[1][0]))
    store.init()
    yield store
    store.close()


def thread(number: int) -> dict:
    return {"id": f"thread-{number}-{uuid.uuid4().hex[:6]}", "resource_id": "resource", "title": f"t{number}"}


def message(message_id: str, thread_id: str) -> dict:
    return {"id": message_id, "thread_id": thread_id, "resource_id": "resource", "role": "user",
            "content": {"format": 2, "parts": [{"type": "text", "text": message_id}]}}


def local_count(server: ClickHouseServer, database: str, table: str, condition: str = "1") -> int:
    return client(server, database).execute(f"SELECT count() FROM {table}_local WHERE {condition}")[0][0]


def sync_replicas(server: ClickHouseServer, database: str) -> None:
    """Wait until ``server`` has fetched everything its replication queue names."""
    connection = client(server, database)
    for (table,) in connection.execute("SELECT table FROM system.replicas WHERE database = %(d)s", {"d": database}):
        connection.execute(f"SYSTEM SYNC REPLICA {database}.{table}")


def catch_up(replica: ClickHouseServer, other: ClickHouseServer, database: str, tables: tuple[str, ...],
             timeout_s: float = 60) -> None:
    """Wait until ``replica`` holds as many rows of each table as ``other``: a replica just
    restarted reads its queue from ZooKeeper after it starts, and 18.16's ``SYNC REPLICA``
    waits only for what its queue holds already."""
    deadline = time.monotonic() + timeout_s
    while True:
        sync_replicas(replica, database)
        if all(local_count(replica, database, table) == local_count(other, database, table) for table in tables) \
                or time.monotonic() > deadline:
            return
        time.sleep(0.2)


def test_init_creates_replicated_local_tables_under_distributed_ones(store, cluster, database):
    for server in cluster.servers:
        engines = dict(client(server).execute("SELECT name, engine FROM system.tables WHERE database = %(d)s",
                                              {"d": database}))
        for table in TABLES:
            assert engines[f"{table}_local"].startswith("Replicated"), (server, table)
            assert engines[table] == "Distributed", (server, table)
        assert engines["mastra_mv_trace_roots"] == "MaterializedView"
    shard1a = client(cluster.shards[0][0])
    path, replica = shard1a.execute("SELECT zookeeper_path, replica_name FROM system.replicas "
                                    "WHERE database = %(d)s AND table = 'mastra_messages_local'", {"d": database})[0]
    assert (path, replica) == (f"/clickhouse/tables/01/{database}/mastra_messages", "a")
    store.init()  # idempotent


def test_a_threads_messages_live_on_one_shard_and_deletes_reach_every_shard(store, cluster, database):
    memory = store.get_store("memory")
    memory.dangerously_clear_all()
    threads = [memory.save_thread(thread=thread(number)) for number in range(12)]
    for item in threads:
        memory.save_messages(messages=[message(f"{item['id']}-{n}", item["id"]) for n in range(3)])
    shard1, shard2 = cluster.shards[0][0], cluster.shards[1][0]
    for item in threads:
        counts = [local_count(server, database, "mastra_messages", f"thread_id = '{item['id']}'")
                  for server in (shard1, shard2)]
        assert sorted(counts) == [0, 3], (item["id"], counts)
    assert 0 < local_count(shard1, database, "mastra_messages") < 36  # both shards hold some
    assert memory.list_messages(thread_id=threads[0]["id"]).total == 3
    memory.delete_thread(thread_id=threads[0]["id"])
    assert memory.list_messages(thread_id=threads[0]["id"]).total == 0
    memory.dangerously_clear_all()
    assert [local_count(server, database, "mastra_messages") for server in cluster.servers] == [0, 0, 0]


def test_a_stopped_replica_leaves_reads_and_writes_to_the_other_and_catches_up(store, cluster, database):
    memory = store.get_store("memory")
    memory.dangerously_clear_all()
    replica_a, replica_b = cluster.shards[0]
    before = [memory.save_thread(thread=thread(number)) for number in range(6)]
    replica_a.stop()
    try:
        during = [memory.save_thread(thread=thread(number)) for number in range(6, 16)]
        for item in during:
            memory.save_messages(messages=[message(f"{item['id']}-m", item["id"])])
        acknowledged = {item["id"] for item in before + during}
        assert {row["id"] for row in memory.list_threads(resource_id="resource", per_page=False).items} == acknowledged
        on_b = local_count(replica_b, database, "mastra_threads")
        assert on_b > 0
    finally:
        replica_a.start()
    catch_up(replica_a, replica_b, database, ("mastra_threads", "mastra_messages"))
    assert local_count(replica_a, database, "mastra_threads") == on_b
    assert local_count(replica_a, database, "mastra_messages") == local_count(replica_b, database, "mastra_messages")
    # Shard 1 read from replica a alone: it holds every acknowledged write.
    replica_b.stop()
    try:
        assert {row["id"] for row in memory.list_threads(resource_id="resource", per_page=False).items} == acknowledged
        assert all(memory.list_messages(thread_id=item["id"]).total == 1 for item in during)
    finally:
        replica_b.start()
    sync_replicas(replica_b, database)


def test_a_stopped_shard_fails_calls_naming_it_until_it_is_back(cluster, database):
    shard2 = cluster.shards[1][0]
    # Through shard 1's first replica: the stopped server is a shard the query needs, not the one
    # the store talks to.
    memory = MemoryClickHouse(url=url(cluster, database, cluster.shards[0][0]))
    memory.init()
    saved = [memory.save_thread(thread=thread(number)) for number in range(8)]
    shard2.stop()
    try:
        with pytest.raises(BackendUnavailableError) as info:
            memory.list_threads(resource_id="resource", per_page=False)
        error = info.value
        address = f"{shard2.host}:{shard2.tcp_port}"
        assert error.details["code"] == "SHARD_UNAVAILABLE" and error.details["shard"] == address
        assert address in error.message and cluster.name in error.message
        assert cluster.password not in error.message and "***" in error.message
        with pytest.raises(BackendUnavailableError):
            memory.save_thread(thread=thread(99))
    finally:
        shard2.start()
    ids = {row["id"] for row in memory.list_threads(resource_id="resource", per_page=False).items}
    assert {item["id"] for item in saved} <= ids
    memory.close()


def test_traces_spread_over_shards_feed_each_shards_views_and_discovery(store, cluster, database):
    observability = store.get_store("observability")
    observability.dangerously_clear_all()
    started = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for number in range(10):
        root = {"trace_id": f"trace-{number}", "span_id": "root", "parent_span_id": None, "name": "run",
                "span_type": "agent_run", "is_event": False, "started_at": started,
                "ended_at": started + timedelta(seconds=1), "service_name": f"service-{number % 3}"}
        tool = {**root, "span_id": "tool", "parent_span_id": "root", "span_type": "tool_call"}
        observability.batch_create_spans(records=[root, tool])
    counts = [local_count(server, database, "mastra_span_events") for server in (cluster.shards[0][0],
                                                                                 cluster.shards[1][0])]
    assert sum(counts) == 20 and 0 not in counts  # both shards hold traces
    for server in (cluster.shards[0][0], cluster.shards[1][0]):  # each shard's views fed its own tables
        assert local_count(server, database, "mastra_trace_roots") * 2 == local_count(
            server, database, "mastra_span_events")
    assert observability.list_traces().total == 10
    assert len(observability.get_trace(trace_id="trace-4")["spans"]) == 2
    assert observability.get_service_names() == ["service-0", "service-1", "service-2"]
    observability.dangerously_clear_all()
    assert observability.list_traces().total == 0 and observability.get_service_names() == []


def fresh_database(cluster: ClickHouseCluster) -> str:
    name = f"cluster_{uuid.uuid4().hex[:8]}"
    client(cluster.servers[0]).execute(f"CREATE DATABASE {name} ON CLUSTER {cluster.name}")
    return name


def test_init_from_many_threads_and_store_objects(cluster):
    """init() racing itself on a cluster (four store objects, eight threads) ends in one layout."""
    name = fresh_database(cluster)
    stores = [ClickHouseStore(url=url(cluster, name, cluster.servers[index % 3])) for index in range(4)]
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda index: stores[index % 4].init(), range(8)))
        saved = stores[0].get_store("scores").save_score(score={
            "scorer_id": "s", "entity_id": "e", "entity_type": "AGENT", "run_id": "r", "score": 1,
            "scorer": {"id": "s", "name": "s"}, "entity": {"id": "e"}, "source": "LIVE", "output": {}})
        assert stores[3].get_store("scores").get_score_by_id(id=saved["id"]) == saved
    finally:
        for store in stores:
            store.close()


def test_init_refuses_a_table_of_one_server_by_a_logical_name(cluster):
    name = fresh_database(cluster)
    raw = client(cluster.servers[0], name)
    raw.execute("CREATE TABLE mastra_resources (id String, createdAt Int64) ENGINE = MergeTree() ORDER BY id")
    raw.execute("INSERT INTO mastra_resources VALUES", [("kept", 1)])
    memory = MemoryClickHouse(url=url(cluster, name, cluster.servers[0]))
    with pytest.raises(NotSupportedError) as info:
        memory.init()
    assert "mastra_resources" in info.value.message and "Distributed" in info.value.message
    assert raw.execute("SELECT * FROM mastra_resources") == [("kept", 1)]
    assert raw.execute("SELECT count() FROM system.tables WHERE database = %(d)s", {"d": name}) == [(1,)]
    memory.close()


@pytest.mark.parametrize("options, field", [
    ({"cluster": "bad name;"}, "cluster"),
    ({"cluster": "c", "zookeeper_path": ""}, "zookeeper_path"),
    ({"cluster": "c", "replica_name": 5}, "replica_name"),
])
def test_bad_cluster_options_name_the_field(options, field):
    with pytest.raises(ValidationError) as info:
        MemoryClickHouse(url="clickhouse://localhost:9000/default", **options)
    assert field in info.value.details["fields"]


def test_the_url_names_the_cluster():
    memory = MemoryClickHouse(url="clickhouse://u:secret@localhost:9000/db?cluster=analytics")
    assert memory.backend.cluster == "analytics"
    assert MemoryClickHouse(url="clickhouse://localhost:9000/db").backend.cluster is None
