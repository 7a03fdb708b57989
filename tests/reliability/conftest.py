"""Fixtures of the reliability suite: servers that fault tests may stop, kill and restart.

The suite also uses the fixtures of ``tests/conftest.py`` (``backend``, ``store``, ``make_store``,
the domain fixtures).  These servers belong to the fault tests alone, so stopping them never
disturbs the session's shared servers.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.conftest import unavailable
from tests.reliability.servers import (PasswordClickHouseServer, PostgresCluster, find_postgres_bindir,
                                       start_password_clickhouse)
from tests.servers import find_clickhouse_binary


@pytest.fixture(scope="module")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A running PostgreSQL cluster of this module's own (see :class:`PostgresCluster`)."""
    bindir = find_postgres_bindir()
    if bindir is None:
        unavailable("postgres", "no initdb / pg_ctl found (apt-get install postgresql)")
    cluster = PostgresCluster(bindir)
    try:
        cluster.create()
    except Exception as exc:  # noqa: BLE001 - any failure means "cannot run these tests"
        cluster.destroy()
        unavailable("postgres", f"cannot create a private PostgreSQL cluster: {exc}")
    yield cluster
    cluster.destroy()


@pytest.fixture(scope="module")
def fault_clickhouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PasswordClickHouseServer]:
    """A running throwaway ClickHouse server of this module's own, with a password user."""
    if find_clickhouse_binary() is None:
        unavailable("clickhouse", "no clickhouse-server binary (apt-get install clickhouse-server)")
    try:
        server = start_password_clickhouse(tmp_path_factory.mktemp("fault-clickhouse"))
    except Exception as exc:  # noqa: BLE001
        unavailable("clickhouse", f"cannot start a throwaway ClickHouse server: {exc}")
    yield server
    server.stop()
