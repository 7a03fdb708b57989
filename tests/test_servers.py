"""Tests of the test-infrastructure helpers in ``tests/servers.py``.

They start a real throwaway ClickHouse server and use the real PostgreSQL
server.  A missing backend is a skip, unless it is listed in
``COMPOSITE_STORE_REQUIRED_BACKENDS`` (as in CI), where it is a failure.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

try:
    from tests.servers import (
        DEFAULT_POSTGRES_URL,
        ClickHouseServer,
        ClickHouseServerError,
        create_postgres_database,
        find_clickhouse_binary,
        postgres_reachable,
        start_clickhouse,
    )
except ImportError:  # tests/ is on sys.path but not importable as a package
    from servers import (  # type: ignore[no-redef]
        DEFAULT_POSTGRES_URL,
        ClickHouseServer,
        ClickHouseServerError,
        create_postgres_database,
        find_clickhouse_binary,
        postgres_reachable,
        start_clickhouse,
    )

POSTGRES_URL = os.environ.get("COMPOSITE_STORE_POSTGRES_URL", DEFAULT_POSTGRES_URL)


def _unavailable(backend: str, reason: str) -> None:
    required = {
        name.strip().lower()
        for name in os.environ.get("COMPOSITE_STORE_REQUIRED_BACKENDS", "").split(",")
        if name.strip()
    }
    if backend in required:
        pytest.fail(f"{backend} is required but unavailable: {reason}")
    pytest.skip(f"{backend} unavailable: {reason}")


@pytest.fixture
def clickhouse_binary() -> str:
    binary = find_clickhouse_binary()
    if binary is None:
        _unavailable("clickhouse", "no clickhouse-server binary found")
    assert binary is not None
    return binary


@pytest.fixture
def postgres_url() -> str:
    reason = postgres_reachable(POSTGRES_URL)
    if reason is not None:
        _unavailable("postgres", reason)
    return POSTGRES_URL


def _client(server: ClickHouseServer):  # type: ignore[no-untyped-def]
    from clickhouse_driver import Client

    return Client(host=server.host, port=server.port, user="default", password="", database="default")


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def test_clickhouse_data_survives_restart_on_same_port(clickhouse_binary: str, tmp_path: Path) -> None:
    with start_clickhouse(tmp_path, binary=clickhouse_binary) as server:
        port = server.port
        assert server.url == f"clickhouse://default:@127.0.0.1:{port}/default"
        assert server.host == "127.0.0.1"
        assert len({server.tcp_port, server.http_port, server.interserver_port}) == 3
        assert server.data_dir.is_relative_to(tmp_path.resolve())

        client = _client(server)
        assert client.execute("SELECT 1") == [(1,)]
        assert client.execute("SELECT timezone()")[0][0] in ("UTC", "Etc/UTC")
        client.execute("CREATE TABLE kv (k UInt32, v String) ENGINE = MergeTree() ORDER BY k")
        client.execute("INSERT INTO kv (k, v) VALUES", [(1, "one"), (2, "two")])
        client.disconnect()

        server.stop()
        assert not server.is_running
        assert not _port_open(port)
        server.stop()  # stopping a stopped server is a no-op

        server.start()
        assert server.port == port
        client = _client(server)
        assert client.execute("SELECT k, v FROM kv ORDER BY k") == [(1, "one"), (2, "two")]
        client.disconnect()
    assert not server.is_running


def test_clickhouse_restarts_after_crash(clickhouse_binary: str, tmp_path: Path) -> None:
    server = start_clickhouse(tmp_path, binary=clickhouse_binary)
    try:
        client = _client(server)
        client.execute("CREATE TABLE t (x UInt8) ENGINE = MergeTree() ORDER BY x")
        client.execute("INSERT INTO t (x) VALUES", [(7,)])
        client.disconnect()
        with pytest.raises(ClickHouseServerError, match="already running"):
            server.start()

        server.kill()
        assert not server.is_running
        server.start()
        assert _client(server).execute("SELECT x FROM t") == [(7,)]
    finally:
        server.stop()


def test_clickhouse_start_failure_shows_server_log(clickhouse_binary: str, tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        server = ClickHouseServer(tmp_path, binary=clickhouse_binary, http_port=taken, startup_timeout=20)
        with pytest.raises(ClickHouseServerError, match="(?s)address already in use.*err.log"):
            server.start()
    assert not server.is_running


def test_postgres_database_create_and_drop(postgres_url: str) -> None:
    import psycopg2

    url, drop = create_postgres_database(postgres_url)
    name = url.rsplit("/", 1)[1]
    assert name.startswith(f"cstest_{os.getpid()}_")
    try:
        assert postgres_reachable(url) is None
        conn = psycopg2.connect(url)  # left open on purpose: drop() must cope
        with conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE t (s text)")
            cur.execute("INSERT INTO t VALUES (%s)", ("héllo ✓",))
            cur.execute("SELECT s, pg_encoding_to_char(encoding) FROM t, pg_database WHERE datname = %s", (name,))
            assert cur.fetchone() == ("héllo ✓", "UTF8")
    finally:
        drop()
    assert "does not exist" in (postgres_reachable(url) or "")
    drop()  # idempotent


def test_postgres_database_keeps_sqlalchemy_scheme(postgres_url: str) -> None:
    url, drop = create_postgres_database(postgres_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    try:
        assert url.startswith("postgresql+psycopg2://")
        assert postgres_reachable(url) is None
    finally:
        drop()


def test_postgres_reachable_gives_reason() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free_port = sock.getsockname()[1]
    reason = postgres_reachable(f"postgresql://postgres@127.0.0.1:{free_port}/postgres", timeout=2)
    assert reason is not None and "OperationalError" in reason
