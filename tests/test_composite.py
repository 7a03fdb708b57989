"""The composite store and the whole stores: construction, init, routing, closing."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from composite_store import BackendUnavailableError, CompositeStore, ValidationError
from composite_store.backends.base import mask_password
from composite_store.postgres import MemoryPG, PostgresStore
from composite_store.sqlite import MemorySQLite, SQLiteStore


def sqlite_url(tmp_path, name="db"):
    return f"sqlite:///{tmp_path}/{name}.db"


def test_domains_win_over_default_and_false_disables(tmp_path):
    default = SQLiteStore(id="default", url=sqlite_url(tmp_path, "default"))
    memory = MemorySQLite(url=sqlite_url(tmp_path, "memory"))
    storage = CompositeStore(id="c", default=default, domains={"memory": memory, "scores": False})
    assert storage.get_store("memory") is memory
    assert storage.get_store("scores") is None


def test_get_store_is_none_when_the_source_lacks_the_domain(tmp_path):
    storage = CompositeStore(domains={"memory": MemorySQLite(url=sqlite_url(tmp_path))})
    assert storage.get_store("workflows") is None


@pytest.mark.parametrize("key", ["score", "unknown", "", None, "Memory"])
def test_get_store_of_an_unknown_domain_lists_the_domain_keys(tmp_path, key):
    storage = CompositeStore(id="c", default=SQLiteStore(url=sqlite_url(tmp_path)), domains={"scores": False})
    with pytest.raises(ValidationError) as info:
        storage.get_store(key)
    assert info.value.id == "STORAGE_COMPOSITE_GET_STORE_INVALID_INPUT"
    assert info.value.fields == {"key": [str(info.value)]}
    assert f"Unknown domain {key!r}" in str(info.value)
    assert "memory, workflows, scores, observability, agents, datasets, experiments" in str(info.value)


def test_get_store_of_a_typo_names_the_nearest_domain(tmp_path):
    storage = CompositeStore(default=SQLiteStore(url=sqlite_url(tmp_path)))
    with pytest.raises(ValidationError, match=r"Unknown domain 'score' \(did you mean 'scores'\?\)"):
        storage.get_store("score")


def test_whole_store_get_store_follows_the_same_rule(tmp_path):
    store = SQLiteStore(url=sqlite_url(tmp_path))
    assert isinstance(store.get_store("memory"), MemorySQLite)
    with pytest.raises(ValidationError) as info:
        store.get_store("threads")
    assert info.value.id == "STORAGE_SQLITE_GET_STORE_INVALID_INPUT"
    assert "domains are memory, workflows" in str(info.value)


@pytest.mark.parametrize("kwargs, domain", [
    ({"domains": {"bogus": False}}, "bogus"),
    ({}, None),
    ({"domains": {"memory": False}}, None),
    ({"domains": {"memory": "sqlite:///x.db"}}, "memory"),
])
def test_invalid_construction(kwargs, domain):
    with pytest.raises(ValidationError) as info:
        CompositeStore(id="c", **kwargs)
    assert info.value.id == "STORAGE_COMPOSITE_INIT_INVALID_INPUT"
    assert info.value.domain == domain


def test_from_urls_rejects_unknown_scheme_and_key():
    with pytest.raises(ValidationError) as info:
        CompositeStore.from_urls(default="mysql://root@localhost/db")
    assert info.value.id == "STORAGE_COMPOSITE_INIT_INVALID_INPUT" and info.value.domain is None
    with pytest.raises(ValidationError) as info:
        CompositeStore.from_urls(default="sqlite:///:memory:", memory="redis://localhost")
    assert info.value.domain == "memory"
    with pytest.raises(ValidationError) as info:
        CompositeStore.from_urls(default="sqlite:///:memory:", colour="sqlite:///:memory:")
    assert info.value.domain == "colour"


def test_from_urls_routes_each_domain(tmp_path, postgres_url):
    storage = CompositeStore.from_urls(default=postgres_url, memory=sqlite_url(tmp_path))
    with storage:
        assert isinstance(storage.get_store("memory"), MemorySQLite)
        storage.init()
        memory = storage.get_store("memory")
        memory.save_thread(thread={"id": "t", "resource_id": "r"})
        assert memory.get_thread_by_id(thread_id="t")["resource_id"] == "r"


def test_constructors_never_connect():
    # An unreachable server is only noticed by the first operation that needs it.
    storage = CompositeStore.from_urls(default="postgresql://user:secret@127.0.0.1:1/db")
    with pytest.raises(BackendUnavailableError) as info:
        storage.init()
    assert info.value.id == "STORAGE_PG_INIT_FAILED"
    assert "secret" not in str(info.value) and "***" in str(info.value)
    assert "secret" not in repr(storage.get_store("memory"))


def test_validation_runs_before_connecting():
    memory = MemoryPG(connection_string="postgresql://user:secret@127.0.0.1:1/db")
    with pytest.raises(ValidationError) as info:
        memory.list_threads(per_page=-5)
    assert info.value.id == "STORAGE_PG_LIST_THREADS_INVALID_PAGE"


def test_init_from_many_threads_runs_ddl_once(tmp_path, postgres_url):
    for url in (sqlite_url(tmp_path), postgres_url):
        storage = CompositeStore.from_urls(default=url)
        backend = storage.get_store("memory").backend
        calls = []
        original = backend.create_tables

        def counting(models, original=original):
            calls.append(threading.get_ident())
            original(models)

        backend.create_tables = counting
        barrier = threading.Barrier(8)

        def init():
            barrier.wait()
            storage.init()

        with ThreadPoolExecutor(8) as pool:
            for future in [pool.submit(init) for _ in range(8)]:
                future.result()
        domains = len(storage._repositories())
        assert len(calls) == domains
        storage.close()


def test_init_again_after_a_failure(tmp_path):
    storage = CompositeStore.from_urls(default=f"sqlite:///{tmp_path}/missing/dir.db")
    with pytest.raises(BackendUnavailableError):
        storage.init()
    (tmp_path / "missing").mkdir()
    storage.init()
    storage.get_store("memory").save_thread(thread={"id": "t", "resource_id": "r"})


def test_disable_init_does_nothing(tmp_path):
    storage = CompositeStore.from_urls(default=sqlite_url(tmp_path), disable_init=True)
    storage.init()
    with pytest.raises(Exception):
        storage.get_store("memory").get_thread_by_id(thread_id="t")  # no tables


def test_close_closes_each_pool_once(postgres_url):
    store = PostgresStore(id="pg", connection_string=postgres_url)
    storage = CompositeStore(default=store, domains={"memory": MemoryPG(store=store)})
    closed = []
    original = store.backend.close
    store.backend.close = lambda: (closed.append(1), original())
    storage.init()
    storage.close()
    assert closed == [1]


def test_two_stores_on_different_databases_side_by_side(tmp_path, postgres_url):
    # Each store owns its model classes: saving into one never lands in the other.
    sqlite, pg = SQLiteStore(url=sqlite_url(tmp_path)), PostgresStore(connection_string=postgres_url)
    with sqlite, pg:
        for store in (sqlite, pg):
            store.init()
            store.get_store("memory").save_thread(thread={"id": "same", "resource_id": type(store).__name__})
        assert sqlite.get_store("memory").get_thread_by_id(thread_id="same")["resource_id"] == "SQLiteStore"
        assert pg.get_store("memory").get_thread_by_id(thread_id="same")["resource_id"] == "PostgresStore"


def test_store_argument_shares_the_backend(tmp_path):
    store = SQLiteStore(url=sqlite_url(tmp_path))
    memory = MemorySQLite(store=store)
    assert memory.backend is store.backend
    with pytest.raises(ValidationError):
        MemorySQLite(store=store, url=sqlite_url(tmp_path))
    with pytest.raises(ValidationError):
        MemoryPG(store=store)


def test_unknown_constructor_option_is_a_validation_error(tmp_path):
    with pytest.raises(ValidationError) as info:
        MemorySQLite(url=sqlite_url(tmp_path), colour="red")
    assert info.value.id == "STORAGE_SQLITE_INIT_INVALID_INPUT"
    with pytest.raises(TypeError):
        MemorySQLite()


def test_in_memory_sqlite_is_private_and_shared_by_threads():
    first, second = SQLiteStore(url="sqlite:///:memory:"), SQLiteStore(url="sqlite:///:memory:")
    for store in (first, second):
        store.init()
    memory = first.get_store("memory")
    memory.save_thread(thread={"id": "t", "resource_id": "r"})
    assert second.get_store("memory").get_thread_by_id(thread_id="t") is None

    def read(_):
        return memory.get_thread_by_id(thread_id="t")["id"]

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(read, range(64))) == {"t"}


def test_postgres_pool_is_not_exhausted_by_many_threads(postgres_url):
    store = PostgresStore(connection_string=postgres_url, max_connections=2)
    store.init()
    memory = store.get_store("memory")

    def work(i):
        memory.save_thread(thread={"id": f"pool-{i}", "resource_id": "r"})
        return memory.get_thread_by_id(thread_id=f"pool-{i}")["id"]

    with ThreadPoolExecutor(16) as pool:
        assert len(set(pool.map(work, range(64)))) == 64
    store.close()


@pytest.mark.parametrize("url, masked", [
    ("postgresql://user:s3cr%40t@host:5432/db", "postgresql://user:***@host:5432/db"),
    ("clickhouse://default:pw@localhost:9000/default", "clickhouse://default:***@localhost:9000/default"),
    ("sqlite:///x.db", "sqlite:///x.db"),
])
def test_mask_password(url, masked):
    assert mask_password(url) == masked
