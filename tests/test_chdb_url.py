"""``chdb://`` URLs: the ClickHouse backend on chdb, the current engine in-process.

chdb runs one engine per process, on one directory: every in-process test here uses the run's
directory (the ``chdb_url`` fixture, the same one the ``clickhouse-current`` backend uses), each in
its own database (``?database=``); what needs another directory runs in a child process.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from composite_store import BackendUnavailableError, CompositeStore, NotSupportedError, StorageError, ValidationError
from composite_store.backends.chdb import parse_chdb_url
from composite_store.clickhouse import ClickHouseStore, MemoryClickHouse, ObservabilityClickHouse, ScoresClickHouse
from composite_store.composite import store_for_url
from tests.conftest import clickhouse_client


def fresh_url(chdb_url: str) -> str:
    """A new database of the run's chdb directory."""
    return f"{chdb_url}?database=urls_{uuid.uuid4().hex[:8]}"


def run_python(code: str, *, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``code`` in a child Python (its own chdb engine)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd=cwd,
                          env=dict(os.environ))


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``composite-store <args>`` in a child process."""
    return subprocess.run([sys.executable, "-m", "composite_store", *args], capture_output=True, text=True,
                          timeout=180, cwd=cwd, env=dict(os.environ))


def score(id: str, scorer_id: str = "relevance") -> dict:
    return {"id": id, "scorer_id": scorer_id, "run_id": "run-1", "entity_id": "agent-1", "entity_type": "AGENT",
            "source": "LIVE", "score": 0.9, "scorer": {"name": scorer_id}, "entity": {"id": "agent-1"},
            "input": {"q": "hi"}, "output": {"a": "hello"}}


# ---------------------------------------------------------------------------- URL forms

def test_url_forms(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse_chdb_url("chdb:///abs/dir") == ("/abs/dir", "default")
    assert parse_chdb_url("chdb://./rel/dir") == (f"{tmp_path}/rel/dir", "default")
    assert parse_chdb_url("chdb://rel") == (f"{tmp_path}/rel", "default")
    assert parse_chdb_url("chdb:///abs/dir/?database=analytics") == ("/abs/dir", "analytics")
    assert parse_chdb_url("chdb:///with%20space") == ("/with space", "default")
    assert parse_chdb_url("chdb://:memory:") == parse_chdb_url("chdb:///:memory:") == (":memory:", "default")


@pytest.mark.parametrize("url", ["chdb://", "chdb://?database=x", "chdb:///dir?database="])
def test_a_url_without_a_directory_or_database_is_invalid(url):
    with pytest.raises(ValidationError) as caught:
        store_for_url(url)
    assert caught.value.id == "STORAGE_CLICKHOUSE_INIT_INVALID_INPUT"
    assert "chdb:///abs/dir" in str(caught.value) or "database" in str(caught.value)


# ---------------------------------------------------------------------------- in this process

@pytest.fixture
def storage(chdb_url):
    """A composite store on a fresh database of the run's chdb directory, initialized."""
    with CompositeStore.from_urls(default=fresh_url(chdb_url)) as storage:
        storage.init()
        yield storage


def test_from_urls_init_memory_round_trip_and_scores(storage):
    memory, scores = storage.get_store("memory"), storage.get_store("scores")
    assert isinstance(memory, MemoryClickHouse) and isinstance(scores, ScoresClickHouse)
    assert isinstance(storage.get_store("observability"), ObservabilityClickHouse)
    assert storage.get_store("agents") is None
    thread = memory.save_thread(thread={"id": "t-1", "resource_id": "alice", "title": "Refund",
                                        "metadata": {"plan": "pro"}})
    assert memory.get_thread_by_id(thread_id="t-1") == thread
    memory.save_messages(messages=[{"id": f"m-{i}", "thread_id": "t-1", "resource_id": "alice", "role": "user",
                                    "content": f"message {i}"} for i in range(3)])
    listed = memory.list_messages(thread_id="t-1")
    assert [message["id"] for message in listed.items] == ["m-0", "m-1", "m-2"] and listed.total == 3
    for index in range(3):
        scores.save_score(score=score(f"s-{index}"))
    scores.save_score(score=score("s-other", scorer_id="tone"))
    page = scores.list_scores_by_scorer_id(scorer_id="relevance")
    assert page.total == 3 and sorted(item["id"] for item in page.items) == ["s-0", "s-1", "s-2"]


def test_the_tables_are_a_current_servers(storage):
    """DateTime64 timestamps and TTL-capable tables: the engine is a current ClickHouse."""
    backend = storage.get_store("scores").backend
    with backend.connection():
        features = backend.server_features
        assert features.version >= (24,) and features.datetime64 and features.json_functions
        types = features.columns["mastra_scorers"]
    assert types["createdAt"] == "DateTime64(3, 'UTC')"


def test_agents_on_a_chdb_url_is_not_supported(chdb_url):
    with pytest.raises(NotSupportedError) as caught:
        CompositeStore.from_urls(default="sqlite:///:memory:", agents=fresh_url(chdb_url))
    assert caught.value.id == "STORAGE_CLICKHOUSE_INIT_NOT_SUPPORTED"


def test_databases_of_one_directory_are_separate_and_threads_share_the_engine(chdb_url):
    """Stores on two databases of the directory, written from many threads at once: each query
    runs in its own store's database (the engine's current database is switched under its lock)."""
    first, second = ClickHouseStore(url=fresh_url(chdb_url)), ClickHouseStore(url=fresh_url(chdb_url))
    first.init()
    second.init()
    errors: list[BaseException] = []

    def work(store: ClickHouseStore, worker: int) -> None:
        try:
            memory = store.get_store("memory")
            for index in range(5):
                memory.save_thread(thread={"id": f"t-{worker}-{index}", "resource_id": f"r-{worker}"})
                assert memory.get_thread_by_id(thread_id=f"t-{worker}-{index}") is not None
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(store, worker))
               for worker in range(8) for store in ([first] if worker % 2 else [second])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert first.get_store("memory").list_threads().total == 20
    assert second.get_store("memory").list_threads().total == 20
    first.close()
    second.close()


def test_a_second_directory_in_this_process_is_unavailable_and_constructors_never_open(chdb_url, tmp_path):
    with store_for_url(fresh_url(chdb_url)) as opened:
        opened.init()  # this process's engine now runs on the run's directory
    other = ClickHouseStore(url=f"chdb://{tmp_path}/other")  # constructing opens nothing
    with pytest.raises(BackendUnavailableError) as caught:
        other.get_store("memory").list_threads()
    error = caught.value
    assert error.id == "STORAGE_CLICKHOUSE_LIST_THREADS_FAILED"
    assert error.details["code"] == "CHDB_ENGINE_ON_OTHER_DIRECTORY"
    assert error.details["open"] == parse_chdb_url(chdb_url)[0]
    assert "one engine per process" in str(error)
    assert not (tmp_path / "other").exists()


def test_a_directory_another_process_has_open_is_unavailable(chdb_url, tmp_path):
    url = fresh_url(chdb_url)
    store_for_url(url).init()  # this process holds the directory
    result = run_cli("stats", url, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == (f"STORAGE_CLICKHOUSE_COUNT_ROWS_FAILED: Cannot open {chdb_url}: process {os.getpid()} "
                             "has this chdb directory open, and one process opens a chdb directory at a time\n")


def test_an_engine_error_is_a_storage_error_with_the_engines_words(chdb_url):
    memory = MemoryClickHouse(url=fresh_url(chdb_url))  # no init(): no tables
    with pytest.raises(StorageError) as caught:
        memory.list_threads()
    error = caught.value
    assert error.id == "STORAGE_CLICKHOUSE_LIST_THREADS_FAILED" and error.details["server_code"] == 60
    assert "mastra_threads" in str(error) and str(error).endswith("(code 60)")
    assert "Stack trace" not in str(error) and "\n" not in str(error)


def test_raw_clients_of_the_tests_reach_the_same_engine(storage, chdb_url):
    url = storage.get_store("memory").backend.display_url
    storage.get_store("memory").save_thread(thread={"id": "t-raw", "resource_id": "r"})
    client = clickhouse_client(url)
    assert client.execute("SELECT id FROM mastra_threads FINAL") == [("t-raw",)]
    assert client.execute("SELECT currentDatabase()") == [(parse_chdb_url(url)[1],)]


def test_the_client_reads_back_what_it_inserts(chdb_url):
    """Inserted rows travel as JSON lines and results as typed JSON: values come back as the driver
    returns them, timestamps at the same instant whatever their offset and the column's zone."""
    client = clickhouse_client(fresh_url(chdb_url))
    client.execute("CREATE TABLE kinds (f Float64, d DateTime64(3, 'UTC'), micro DateTime64(6, 'UTC'), "
                   "paris Array(DateTime64(3, 'Europe/Paris')), m Map(String, String), b Bool, "
                   "n Nullable(Int64), s String) ENGINE = MergeTree ORDER BY tuple()")
    moment = datetime(2026, 1, 2, 3, 4, 5, 678123, tzinfo=timezone.utc)
    tokyo = moment.astimezone(timezone(timedelta(hours=9)))
    text = "quote ' \\ \" NUL \0 tab \t émoji 😀"
    client.execute("INSERT INTO kinds (f, d, micro, paris, m, b, n, s) VALUES",
                   [(float("inf"), moment, tokyo, [tokyo], {"k": text}, True, None, text)])
    [(f, d, micro, paris, m, b, n, s)] = client.execute("SELECT * FROM kinds")
    assert (f, m, b, n, s) == (float("inf"), {"k": text}, True, None, text)
    assert d == moment.replace(microsecond=678000) and micro == moment and paris == [moment.replace(microsecond=678000)]
    assert str(paris[0].tzinfo) == "Europe/Paris"
    assert client.execute("SELECT count() FROM kinds WHERE s = %(s)s", {"s": text}) == [(1,)]


# ---------------------------------------------------------------------------- child processes

def test_cli_init_and_stats_on_a_relative_chdb_url(tmp_path):
    result = run_cli("init", "--default", "chdb://./analytics", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Tables are ready." in result.stdout
    assert (tmp_path / "analytics").is_dir()
    code = ("from composite_store import CompositeStore\n"
            "with CompositeStore.from_urls(default='chdb://./analytics') as storage:\n"
            "    storage.get_store('memory').save_thread(thread={'id': 't-1', 'resource_id': 'r'})\n")
    written = run_python(code, cwd=tmp_path)
    assert written.returncode == 0, written.stderr
    stats = run_cli("stats", f"chdb://{tmp_path}/analytics", cwd=tmp_path)
    assert stats.returncode == 0, stats.stderr
    assert f"Database: chdb://{tmp_path}/analytics" in stats.stdout
    assert re.search(r"^memory\s+mastra_threads\s+1$", stats.stdout, re.M), stats.stdout
    assert re.search(r"^scores\s+mastra_scorers\s+0$", stats.stdout, re.M), stats.stdout


def test_cli_stats_of_a_missing_directory_creates_nothing(tmp_path):
    result = run_cli("stats", f"chdb://{tmp_path}/nothing-here", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == f"STORAGE_CLICKHOUSE_COUNT_ROWS_NOT_FOUND: No chdb directory at {tmp_path}/nothing-here\n"
    assert not (tmp_path / "nothing-here").exists()


def test_a_memory_url_is_a_temporary_engine():
    code = ("from composite_store.clickhouse import ClickHouseStore\n"
            "with ClickHouseStore(url='chdb://:memory:') as store:\n"
            "    store.init()\n"
            "    memory = store.get_store('memory')\n"
            "    memory.save_thread(thread={'id': 't-1', 'resource_id': 'r'})\n"
            "    print(memory.list_threads().total)\n")
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "1\n"


def test_without_the_chdb_package_one_error_names_the_extra(tmp_path):
    code = ("import sys\nsys.modules['chdb'] = None\n"
            "from composite_store.clickhouse import ClickHouseStore\n"
            "from composite_store import StorageError\n"
            "try:\n"
            f"    ClickHouseStore(url='chdb://{tmp_path}/x')\n"
            "except StorageError as error:\n"
            "    print(type(error).__name__, error.id, error.details['code'], error.__cause__)\n"
            "    print(error)\n")
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    kind, message = result.stdout.splitlines()
    assert kind == "StorageError STORAGE_CLICKHOUSE_INIT_FAILED DRIVER_MISSING None"
    assert message.startswith("The chdb package cannot be imported")
    assert message.endswith("install it with: pip install 'composite-store[chdb]'")
    assert not (tmp_path / "x").exists()
