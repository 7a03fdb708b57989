"""Shared fixtures: one store per backend of the test matrix, on real databases.

The matrix (:data:`MATRIX`) is defined here once: each entry names a database and the capabilities
tests select it by.

* ``sqlite``: a file in a temporary directory.
* ``postgres``: ``COMPOSITE_STORE_POSTGRES_URL`` (a server URL), else 127.0.0.1:5432 user
  ``postgres``; each test run works in a fresh database it creates and drops.
* ``postgres-app``: the same database with ``schema_name="app"`` (only for tests that name it).
* ``clickhouse``: ``COMPOSITE_STORE_CLICKHOUSE_URL``, else a throwaway ``clickhouse-server``
  (Debian's 18.16 here) started in a temporary directory on free ports and stopped at the end.
* ``clickhouse-current``: a current (24.x+) ClickHouse: the server named by
  ``COMPOSITE_STORE_CLICKHOUSE_CURRENT_URL`` when it is set, else the current engine in-process
  through the library's own ``chdb:///<dir>`` URL (the session fixture ``chdb_url``: chdb opens
  one directory per process, so every in-process test of a run uses that one).
* ``clickhouse-cluster``: a ClickHouse 18.16 cluster (ZooKeeper and three servers: shard 1 with
  two replicas, shard 2 with one; tests/servers.py ``ClickHouseCluster``) reached through
  ``?cluster=``, started once, on first use.  Not a default backend: it runs the domains'
  conformance suites (:data:`CLUSTER_SUITES`) and tests naming it; its tests carry the marker
  ``cluster`` (``-m "not cluster"`` leaves them out).  Required whenever ``clickhouse`` is.

``COMPOSITE_STORE_REQUIRED_BACKENDS`` (``sqlite,postgres,clickhouse``) lists the backends that
must run: a required backend that cannot be reached fails the run; any other is skipped.

A test that takes the ``backend`` fixture (directly or through ``store`` / a domain fixture)
runs once per default backend of the matrix.  ``@pytest.mark.requires(transactions=True)`` keeps
the backends with those capabilities (Django's ``skipUnlessDBFeature``); ``@pytest.mark.backends(
"postgres", "postgres-app")`` names backends, for tests about one database's own layout.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, fields
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from composite_store.backends.chdb import ChdbClient, is_chdb_url, parse_chdb_url
from composite_store.backends.clickhouse import CLUSTER_SETTINGS, parse_clickhouse_url
from composite_store.composite import store_for_url
from composite_store.stores import WholeStore
from tests.servers import (DEFAULT_POSTGRES_URL, ClickHouseCluster, create_postgres_database, find_clickhouse_binary,
                           start_clickhouse)

REQUIRED = {name.strip() for name in os.environ.get("COMPOSITE_STORE_REQUIRED_BACKENDS", "").split(",")
            if name.strip()}
#: URL of a current ClickHouse server for ``clickhouse-current`` (else the in-process engine).
CURRENT_CLICKHOUSE_URL = os.environ.get("COMPOSITE_STORE_CLICKHOUSE_CURRENT_URL")


@dataclass(frozen=True)
class BackendSpec:
    """One database of the test matrix and the capabilities tests select it by."""

    name: str
    #: ``sqlite``, ``postgres`` or ``clickhouse``: the dialect of a test's raw SQL.
    family: str
    #: Read-modify-write operations are atomic across callers (``supports_concurrent_updates``).
    transactions: bool
    #: Stored text loses U+0000 (PostgreSQL).
    strips_nul: bool = False
    #: A current ClickHouse (``DateTime64``, ``Bool``, JSON functions, TTL) whatever the environment.
    current_clickhouse: bool = False
    #: Text ``_null_`` that other clients wrote reads as ``None`` (ClickHouse's stored format).
    null_placeholder: bool = False
    #: Runs for the tests that name no backends.
    default: bool = True
    #: A ClickHouse cluster (sharded, replicated) behind ``?cluster=``.
    cluster: bool = False

    @property
    def error_name(self) -> str:
        """The backend part of error ids (``STORAGE_<NAME>_...``)."""
        return {"sqlite": "SQLITE", "postgres": "PG", "clickhouse": "CLICKHOUSE"}[self.family]


#: Every backend the suites can run on, by name.
MATRIX = {spec.name: spec for spec in (
    BackendSpec("sqlite", "sqlite", transactions=True),
    BackendSpec("postgres", "postgres", transactions=True, strips_nul=True),
    BackendSpec("postgres-app", "postgres", transactions=True, strips_nul=True, default=False),
    BackendSpec("clickhouse", "clickhouse", transactions=False, null_placeholder=True),
    BackendSpec("clickhouse-current", "clickhouse", transactions=False, null_placeholder=True,
                current_clickhouse=True),
    BackendSpec("clickhouse-cluster", "clickhouse", transactions=False, null_placeholder=True, default=False,
                cluster=True),
)}
#: The test modules (the domains' conformance suites) that also run on the cluster backend.
CLUSTER_SUITES = ("test_memory", "test_workflows", "test_scores", "test_observability", "test_observability_vnext",
                  "test_observability_signals")
#: The backends a test runs on when it names none.
DEFAULT_BACKENDS = tuple(name for name, spec in MATRIX.items() if spec.default)
CAPABILITIES = {field.name for field in fields(BackendSpec)} - {"name"}


def unavailable(backend: str, reason: str) -> None:
    """Fail when ``backend`` is required (the cluster: whenever ``clickhouse`` is), else skip."""
    if backend in REQUIRED or (MATRIX[backend].cluster and "clickhouse" in REQUIRED):
        pytest.fail(f"{backend} is required but unavailable: {reason}", pytrace=False)
    pytest.skip(f"{backend} unavailable: {reason}")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "requires(**capabilities): run only on the backends of the matrix "
                                       "with these capabilities (tests/conftest.py BackendSpec)")
    config.addinivalue_line("markers", "cluster: runs on the ClickHouse cluster (ZooKeeper and three servers, "
                                       "started once per session when such a test is selected)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A test on the cluster backend is a cluster test, so -m "not cluster" can leave them out.
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and MATRIX.get(callspec.params.get("backend"), MATRIX["sqlite"]).cluster:
            item.add_marker(pytest.mark.cluster)


def selected_backends(item: Any) -> list[str]:
    """The backends a test runs on: those its ``backends`` marker names (else the defaults),
    narrowed by every ``requires`` marker."""
    marker = item.get_closest_marker("backends")
    names = list(marker.args) if marker else list(DEFAULT_BACKENDS)
    if not marker and item.module.__name__.rpartition(".")[2] in CLUSTER_SUITES:
        names += [name for name, spec in MATRIX.items() if spec.cluster]
    unknown = [name for name in names if name not in MATRIX]
    if unknown:
        raise pytest.UsageError(f"{item.nodeid}: unknown backends {unknown}; the matrix has {sorted(MATRIX)}")
    for requires in item.iter_markers("requires"):
        wrong = set(requires.kwargs) - CAPABILITIES
        if wrong:
            raise pytest.UsageError(f"{item.nodeid}: unknown capabilities {sorted(wrong)}; "
                                    f"known: {sorted(CAPABILITIES)}")
        names = [name for name in names
                 if all(getattr(MATRIX[name], key) == value for key, value in requires.kwargs.items())]
    return names


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", selected_backends(metafunc.definition), indirect=True, scope="session")


@pytest.fixture(scope="session")
def backend(request: pytest.FixtureRequest) -> str:
    """The name of the backend under test (a key of :data:`MATRIX`)."""
    return request.param


@pytest.fixture(scope="session")
def backend_spec(backend: str) -> BackendSpec:
    """The matrix entry of the backend under test."""
    return MATRIX[backend]


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


@pytest.fixture(scope="session")
def clickhouse_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseCluster]:
    """The ClickHouse cluster of the ``clickhouse-cluster`` backend, started on first use."""
    if find_clickhouse_binary() is None:
        unavailable("clickhouse-cluster", "no clickhouse-server binary (apt-get install clickhouse-server)")
    cluster = ClickHouseCluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
    except Exception as exc:  # noqa: BLE001
        unavailable("clickhouse-cluster", str(exc))
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def cluster_url(clickhouse_cluster: ClickHouseCluster) -> str:
    """``clickhouse://…?cluster=`` of the cluster's database ``cs_test`` (made on every server),
    through the second shard's server, so stopping a replica of shard 1 keeps it reachable."""
    server = clickhouse_cluster.shards[1][0]
    clickhouse_client(clickhouse_cluster.url(server)).execute(
        f"CREATE DATABASE IF NOT EXISTS cs_test ON CLUSTER {clickhouse_cluster.name}")
    return clickhouse_cluster.url(server, database="cs_test")


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
        return CURRENT_CLICKHOUSE_URL or request.getfixturevalue("chdb_url")
    if backend == "clickhouse-cluster":
        return request.getfixturevalue("cluster_url")
    return request.getfixturevalue("clickhouse_url")


@pytest.fixture(scope="session")
def chdb_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """``chdb:///<dir>``: the in-process current engine's directory for the whole run (chdb runs one
    engine per process, on one directory: every in-process test of the run uses this one)."""
    try:
        import chdb  # noqa: F401 - only asked whether it is installed
    except ImportError:
        unavailable("clickhouse-current", "COMPOSITE_STORE_CLICKHOUSE_CURRENT_URL is not set and chdb is "
                                          "not installed (pip install -e '.[dev]')")
    return f"chdb://{tmp_path_factory.mktemp('chdb')}"


def clickhouse_client(url: str) -> Any:
    """A raw client for a ClickHouse URL of the matrix: clickhouse-driver's, or the in-process engine's."""
    if is_chdb_url(url):
        path, database = parse_chdb_url(url)
        return ChdbClient(path=path, database=database)
    from clickhouse_driver import Client

    # A cluster's URL: the library's session settings, so raw reads see what the store wrote.
    settings = CLUSTER_SETTINGS if "cluster=" in urlsplit(url).query else {}
    return Client(**parse_clickhouse_url(url), settings=settings)


def database_url(url: str, name: str) -> str:
    """The URL of database ``name`` on the ClickHouse server (or chdb directory) of ``url``."""
    if is_chdb_url(url):
        return f"{url.partition('?')[0]}?database={name}"
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


@pytest.fixture
def make_store(backend_url: str) -> Iterator[Callable[..., WholeStore]]:
    """Factory of extra whole stores on the backend under test (closed after the test)."""
    made: list[WholeStore] = []

    def make(url: str | None = None) -> WholeStore:
        store = store_for_url(url or backend_url)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture(scope="session")
def session_store(backend_url: str) -> Iterator[WholeStore]:
    """One initialized whole store per backend, shared by the tests of a session."""
    store = store_for_url(backend_url)
    store.init()
    yield store
    store.close()


@pytest.fixture(scope="module")
def own_url(backend: str, backend_url: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A database of the requesting module's own on the backend under test, for tests that leave
    schema behind (``prune()``'s anchor indexes) which the shared database's layout tests must not
    find."""
    name = f"own_{uuid.uuid4().hex[:8]}"
    family = MATRIX[backend].family
    if family == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp(name)}/own.db"
    if family == "postgres":
        return f"{backend_url}{'&' if '?' in backend_url else '?'}schema_name={name}"
    cluster = urlsplit(backend_url).query.partition("cluster=")[2]
    clickhouse_client(backend_url).execute(f"CREATE DATABASE IF NOT EXISTS {name}"
                                           + (f" ON CLUSTER {cluster}" if cluster else ""))
    return database_url(backend_url, name)


@pytest.fixture(scope="module")
def own_store(own_url: str) -> Iterator[WholeStore]:
    """An initialized whole store on :func:`own_url`."""
    store = store_for_url(own_url)
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


@pytest.fixture(scope="session")
def legacy_observability(backend: str, session_store: WholeStore, backend_url: str) -> Iterator[Any]:
    """The observability repository of the legacy layout (``mastra_ai_spans``): the store's own,
    except on ClickHouse, whose default is the current layout (tests/test_observability_vnext.py):
    there ``layout="legacy"`` on the same database, initialized once."""
    if MATRIX[backend].family != "clickhouse":
        yield session_store.get_store("observability")
        return
    from composite_store.clickhouse import ObservabilityClickHouse

    repository = ObservabilityClickHouse(url=backend_url, layout="legacy")
    repository.init()
    yield repository
    repository.close()


@pytest.fixture
def observability(legacy_observability: Any) -> Any:
    """The observability repository (legacy layout, which the conformance suite and the backend
    tests are about) of the backend under test, with empty tables."""
    legacy_observability.dangerously_clear_all()
    return legacy_observability
agents = domain_fixture("agents")
datasets = domain_fixture("datasets")
experiments = domain_fixture("experiments")
