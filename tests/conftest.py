"""Shared fixtures: one store per backend, on real databases.

* SQLite: a file in a temporary directory.
* PostgreSQL: ``COMPOSITE_STORE_POSTGRES_URL`` (a server URL), else 127.0.0.1:5432 user
  ``postgres``; each test run works in a fresh database it creates and drops.
* ClickHouse: ``COMPOSITE_STORE_CLICKHOUSE_URL``, else a throwaway ``clickhouse-server``
  started in a temporary directory on free ports and stopped at the end.

``COMPOSITE_STORE_REQUIRED_BACKENDS`` (``sqlite,postgres,clickhouse``) lists the backends that
must run: a required backend that cannot be reached fails the run; any other is skipped.

A test that takes the ``backend`` fixture (directly or through ``store`` / a domain fixture)
runs once per backend; ``@pytest.mark.backends("sqlite", "postgres")`` narrows that.  Besides the
three required backends, a module may name these in its marker:

* ``postgres-app``: PostgreSQL with ``schema_name="app"``;
* ``clickhouse-current``: the current (24.x+) server named by
  ``COMPOSITE_STORE_CLICKHOUSE_CURRENT_URL`` (skipped when it is not set);
* ``clickhouse-chdb``: a current ClickHouse engine in-process (chdb), reached through
  :class:`tests.chdb_client.ChdbClient`.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator

import pytest

from composite_store.composite import store_for_url
from composite_store.stores import WholeStore
from tests.servers import DEFAULT_POSTGRES_URL, create_postgres_database, find_clickhouse_binary, start_clickhouse

BACKENDS = ("sqlite", "postgres", "clickhouse")
REQUIRED = {name.strip() for name in os.environ.get("COMPOSITE_STORE_REQUIRED_BACKENDS", "").split(",")
            if name.strip()}


def unavailable(backend: str, reason: str) -> None:
    """Fail when ``backend`` is required, else skip."""
    if backend in REQUIRED:
        pytest.fail(f"{backend} is required but unavailable: {reason}", pytrace=False)
    pytest.skip(f"{backend} unavailable: {reason}")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("backends")
        names = marker.args if marker else BACKENDS
        metafunc.parametrize("backend", names, indirect=True, scope="session")


@pytest.fixture(scope="session")
def backend(request: pytest.FixtureRequest) -> str:
    """The backend under test: ``sqlite``, ``postgres`` or ``clickhouse``."""
    return request.param


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a fresh PostgreSQL database for this test run."""
    server = os.environ.get("COMPOSITE_STORE_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    try:
        url, drop = create_postgres_database(server)
    except Exception as exc:  # noqa: BLE001 - any failure means "unreachable"
        unavailable("postgres", str(exc))
    yield url
    drop()


@pytest.fixture(scope="session")
def clickhouse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A throwaway ClickHouse server (``None`` when a URL is configured instead)."""
    if os.environ.get("COMPOSITE_STORE_CLICKHOUSE_URL"):
        yield None
        return
    if find_clickhouse_binary() is None:
        unavailable("clickhouse", "no clickhouse-server binary (apt-get install clickhouse-server)")
    try:
        server = start_clickhouse(tmp_path_factory.mktemp("clickhouse"))
    except Exception as exc:  # noqa: BLE001
        unavailable("clickhouse", str(exc))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def clickhouse_url(clickhouse_server: Any) -> str:
    """URL of the ClickHouse server under test."""
    return os.environ.get("COMPOSITE_STORE_CLICKHOUSE_URL") or clickhouse_server.url


#: URL of a current ClickHouse server, for the optional ``clickhouse-current`` backend.
CURRENT_CLICKHOUSE_URL = os.environ.get("COMPOSITE_STORE_CLICKHOUSE_CURRENT_URL")
#: URL given to stores on the in-process engine (never dialled: their client is chdb's).
CHDB_URL = "clickhouse://default:@in-process/default"


@pytest.fixture(scope="session")
def backend_url(backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A database URL for the backend under test."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('sqlite')}/test.db"
    if backend == "postgres":
        return request.getfixturevalue("postgres_url")
    if backend == "postgres-app":
        return request.getfixturevalue("postgres_url") + "?schema_name=app"
    if backend == "clickhouse-current":
        if not CURRENT_CLICKHOUSE_URL:
            pytest.skip("COMPOSITE_STORE_CLICKHOUSE_CURRENT_URL names no current (24.x+) ClickHouse server")
        return CURRENT_CLICKHOUSE_URL
    if backend == "clickhouse-chdb":
        return CHDB_URL
    return request.getfixturevalue("clickhouse_url")


@pytest.fixture(scope="session")
def chdb_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """An in-process current ClickHouse engine (one per test session: chdb allows one per process)."""
    chdb_session = pytest.importorskip("chdb.session", reason="chdb is not installed")
    engine = chdb_session.Session(str(tmp_path_factory.mktemp("chdb")))
    yield engine
    engine.close()


def open_store(backend: str, url: str, request: pytest.FixtureRequest) -> WholeStore:
    """A whole store for ``url``; on ``clickhouse-chdb`` its connections use the chdb engine."""
    store = store_for_url(url)
    if backend == "clickhouse-chdb":
        from tests.chdb_client import ChdbClient

        engine = request.getfixturevalue("chdb_engine")
        store.backend.database.client_factory = lambda **kwargs: ChdbClient(engine, **kwargs)
    return store


@pytest.fixture
def make_store(backend: str, backend_url: str, request: pytest.FixtureRequest) -> Iterator[Callable[..., WholeStore]]:
    """Factory of extra whole stores on the backend under test (closed after the test)."""
    made: list[WholeStore] = []

    def make(url: str | None = None) -> WholeStore:
        store = open_store(backend, url or backend_url, request)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture(scope="session")
def session_store(backend: str, backend_url: str, request: pytest.FixtureRequest) -> Iterator[WholeStore]:
    """One initialized whole store per backend, shared by the tests of a session."""
    store = open_store(backend, backend_url, request)
    store.init()
    yield store
    store.close()


@pytest.fixture
def store(session_store: WholeStore) -> WholeStore:
    """The backend's whole store (tables exist; domain fixtures clear what they use)."""
    return session_store


def domain_fixture(name: str) -> Callable[..., Any]:
    """A fixture giving domain ``name``'s repository of the store under test, emptied."""

    @pytest.fixture
    def fixture(store: WholeStore) -> Any:
        repository = store.get_store(name)
        assert repository is not None, f"{store!r} holds no {name} domain"
        repository.dangerously_clear_all()
        return repository

    fixture.__doc__ = f"The {name} repository of the backend under test, with empty tables."
    return fixture


memory = domain_fixture("memory")
workflows = domain_fixture("workflows")
scores = domain_fixture("scores")
observability = domain_fixture("observability")
agents = domain_fixture("agents")
datasets = domain_fixture("datasets")
experiments = domain_fixture("experiments")
