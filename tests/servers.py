"""Helpers that give the test suite real database servers.

* :func:`start_clickhouse` starts a throwaway ``clickhouse-server`` whose
  configuration, data and logs all live in a temporary directory, listening
  on free ports on 127.0.0.1.  The returned :class:`ClickHouseServer` can be
  stopped and started again on the same ports and data directory, which is
  what restart-in-the-middle fault tests need.
* :func:`create_postgres_database` creates a fresh, uniquely named database on
  an already running PostgreSQL server and returns a function that drops it.
* :func:`postgres_reachable` tells whether a PostgreSQL server answers.

Nothing here imports pytest; fixtures in ``conftest.py`` can build on it.

Notes on ClickHouse 18.16 (Debian's ``clickhouse-server`` package):

* the binary is ``/usr/sbin/clickhouse-server`` (not on a non-root user's
  ``PATH``), so :func:`find_clickhouse_binary` also looks in ``/usr/sbin``;
* it runs fine as root (no "effective user does not match data owner" check
  in this version), so no ``setpriv``/``runuser`` is needed;
* it exits with status 70 and logs ``Address already in use`` when a port is
  taken; :func:`start_clickhouse` then retries with new ports.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from typing import Self

log = logging.getLogger(__name__)

#: URL of the PostgreSQL server used when none is given (the CI setup script
#: makes sure it exists, with trust authentication for ``postgres``).
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

#: Environment variable that may name the ClickHouse server binary explicitly.
CLICKHOUSE_BINARY_ENV = "CLICKHOUSE_SERVER_BINARY"

CLICKHOUSE_HOST = "127.0.0.1"
DEFAULT_STARTUP_TIMEOUT = 60.0
DEFAULT_STOP_TIMEOUT = 30.0

_EXTRA_BINARY_DIRS = ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin", "/sbin", "/bin")


# --------------------------------------------------------------------------
# ClickHouse
# --------------------------------------------------------------------------


class ClickHouseServerError(RuntimeError):
    """Raised when a throwaway ClickHouse server cannot be started."""


def find_clickhouse_binary() -> str | None:
    """Return the path of a ClickHouse server executable, or ``None``.

    Looks, in order, at ``$CLICKHOUSE_SERVER_BINARY``, ``clickhouse-server``
    and then the single-binary ``clickhouse`` (run as ``clickhouse server``),
    searching ``PATH`` plus the usual system directories (Debian installs
    ``clickhouse-server`` into ``/usr/sbin``, which is not on a normal user's
    ``PATH``).  Use :func:`clickhouse_server_command` to get the argv prefix
    that starts a server with the returned path.
    """
    override = os.environ.get(CLICKHOUSE_BINARY_ENV)
    if override:
        if os.path.isfile(override) and os.access(override, os.X_OK):
            return override
        log.warning("%s=%r is not an executable file; ignoring it", CLICKHOUSE_BINARY_ENV, override)
    search_path = os.pathsep.join([os.environ.get("PATH", ""), *_EXTRA_BINARY_DIRS])
    for name in ("clickhouse-server", "clickhouse"):
        found = shutil.which(name, path=search_path)
        if found:
            return found
    return None


def clickhouse_server_command(binary: str | None = None) -> list[str] | None:
    """Return the argv prefix that runs a ClickHouse server, or ``None``.

    ``["/usr/sbin/clickhouse-server"]`` for the classic binary, or
    ``["/usr/bin/clickhouse", "server"]`` for the single multi-tool binary.
    """
    binary = binary or find_clickhouse_binary()
    if binary is None:
        return None
    if os.path.basename(binary) == "clickhouse":
        return [binary, "server"]
    return [binary]


def _free_ports(count: int, host: str = CLICKHOUSE_HOST) -> list[int]:
    """Return ``count`` distinct currently free TCP ports on ``host``.

    All sockets are held open until every port is chosen so the ports differ;
    another process may still grab one before the server binds it (callers
    retry in that case).
    """
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _tail(path: Path, lines: int = 40) -> str:
    """Return the last ``lines`` lines of a text file ('' if unreadable)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def _sub(parent: ET.Element, tag: str, text: str | int | os.PathLike[str] | None = None) -> ET.Element:
    element = ET.SubElement(parent, tag)
    if text is not None:
        element.text = os.fspath(text) if isinstance(text, os.PathLike) else str(text)
    return element


def _write_xml(root: ET.Element, path: Path) -> None:
    ET.indent(root)
    path.write_bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n")


_PR_SET_PDEATHSIG = 1


def _set_parent_death_signal() -> None:  # pragma: no cover - runs in the child
    """Ask Linux to SIGTERM the server if the process that started it dies."""
    with contextlib.suppress(Exception):  # best effort; no logging between fork and exec
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


# Strong references: a running server must not be forgotten by garbage collection.
_live_servers: set[ClickHouseServer] = set()


@atexit.register
def _stop_leftover_servers() -> None:
    for server in list(_live_servers):
        try:
            server.stop(timeout=10)
        except Exception:
            log.exception("could not stop ClickHouse server %s", server)


class ClickHouseServer:
    """A throwaway ``clickhouse-server`` living entirely in ``workdir``.

    Layout of ``workdir``: ``config.xml``, ``users.xml``, ``data/`` (the
    server's ``path``), ``tmp/``, ``user_files/``, ``format_schemas/`` and
    ``log/`` (``clickhouse-server.log``, ``clickhouse-server.err.log`` and
    ``stdout.log`` with the process's own stdout/stderr).

    Ports are chosen once, at construction, and kept across :meth:`stop` /
    :meth:`start` cycles, as is the data directory, so a restarted server
    serves the same data at the same :attr:`url`.

    Usually created through :func:`start_clickhouse`; usable as a context
    manager (starts on enter if not running, stops on exit).
    """

    host: str = CLICKHOUSE_HOST

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        binary: str | None = None,
        tcp_port: int | None = None,
        http_port: int | None = None,
        interserver_port: int | None = None,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
        extra_config: Callable[[ET.Element], None] | None = None,
    ) -> None:
        """Prepare (but do not start) a server in ``workdir``.

        Ports left as ``None`` are picked among currently free ports.
        ``extra_config`` adds elements to ``config.xml``'s root each time it is
        written (a cluster's ``remote_servers``, ``macros`` and ``zookeeper``).
        Raises :class:`ClickHouseServerError` if no server binary is found.
        """
        command = clickhouse_server_command(binary)
        if command is None:
            raise ClickHouseServerError(
                "no ClickHouse server binary found (looked for clickhouse-server / clickhouse on PATH "
                f"and in {', '.join(_EXTRA_BINARY_DIRS)}; set ${CLICKHOUSE_BINARY_ENV} or run "
                "scripts/setup-test-env.sh)"
            )
        self._command = command
        self.workdir = Path(workdir).resolve()
        self.startup_timeout = startup_timeout
        free = iter(_free_ports(3))
        self.tcp_port: int = tcp_port or next(free)
        self.http_port: int = http_port or next(free)
        self.interserver_port: int = interserver_port or next(free)
        self.extra_config = extra_config
        self._process: subprocess.Popen[bytes] | None = None
        self._argv: list[str] = []
        self._lock = threading.Lock()

    # -- paths and addresses ------------------------------------------------

    @property
    def port(self) -> int:
        """The native-protocol TCP port (what clickhouse_driver talks to)."""
        return self.tcp_port

    @property
    def url(self) -> str:
        """``clickhouse://default:@127.0.0.1:<tcp port>/default``."""
        return f"clickhouse://default:@{self.host}:{self.tcp_port}/default"

    @property
    def config_path(self) -> Path:
        """Path of the generated ``config.xml``."""
        return self.workdir / "config.xml"

    @property
    def data_dir(self) -> Path:
        """The server's data directory (``<path>`` in config.xml)."""
        return self.workdir / "data"

    @property
    def log_dir(self) -> Path:
        """Directory holding the server's log files."""
        return self.workdir / "log"

    @property
    def log_path(self) -> Path:
        """The server's main log (level ``warning``)."""
        return self.log_dir / "clickhouse-server.log"

    @property
    def error_log_path(self) -> Path:
        """The server's error log."""
        return self.log_dir / "clickhouse-server.err.log"

    @property
    def stdout_path(self) -> Path:
        """Where the server process's stdout and stderr go (appended)."""
        return self.log_dir / "stdout.log"

    @property
    def pid(self) -> int | None:
        """PID of the running server process, or ``None``."""
        return self._process.pid if self.is_running else None  # type: ignore[union-attr]

    @property
    def is_running(self) -> bool:
        """Whether the server process is alive (not necessarily ready)."""
        return self._process is not None and self._process.poll() is None

    def __repr__(self) -> str:
        state = f"pid={self._process.pid}" if self.is_running else "stopped"  # type: ignore[union-attr]
        return f"<ClickHouseServer {self.host}:{self.tcp_port} {state} {self.workdir}>"

    # -- configuration ------------------------------------------------------

    def write_config(self) -> None:
        """(Re)write ``config.xml`` and ``users.xml`` and create directories."""
        for directory in ("data", "tmp", "user_files", "format_schemas", "log"):
            (self.workdir / directory).mkdir(parents=True, exist_ok=True)

        root = ET.Element("yandex")
        logger = _sub(root, "logger")
        _sub(logger, "level", "warning")
        _sub(logger, "log", self.log_path)
        _sub(logger, "errorlog", self.error_log_path)
        _sub(logger, "size", "100M")
        _sub(logger, "count", 1)
        _sub(root, "listen_host", self.host)
        _sub(root, "tcp_port", self.tcp_port)
        _sub(root, "http_port", self.http_port)
        _sub(root, "interserver_http_port", self.interserver_port)
        _sub(root, "interserver_http_host", self.host)
        # ClickHouse wants trailing slashes on these directory settings.
        _sub(root, "path", f"{self.data_dir}/")
        _sub(root, "tmp_path", f"{self.workdir / 'tmp'}/")
        _sub(root, "user_files_path", f"{self.workdir / 'user_files'}/")
        _sub(root, "format_schema_path", f"{self.workdir / 'format_schemas'}/")
        _sub(root, "users_config", "users.xml")
        _sub(root, "default_profile", "default")
        _sub(root, "default_database", "default")
        _sub(root, "timezone", "UTC")
        _sub(root, "mark_cache_size", 64 * 1024 * 1024)
        _sub(root, "uncompressed_cache_size", 64 * 1024 * 1024)
        _sub(root, "mlock_executable", "false")
        _sub(root, "max_concurrent_queries", 100)
        _sub(root, "max_connections", 1024)
        _sub(root, "keep_alive_timeout", 3)
        _sub(root, "builtin_dictionaries_reload_interval", 3600)
        # Let tests drop tables of any size.
        _sub(root, "max_table_size_to_drop", 0)
        _sub(root, "max_partition_size_to_drop", 0)
        if self.extra_config is not None:
            self.extra_config(root)
        _write_xml(root, self.config_path)

        users = ET.Element("yandex")
        profiles = _sub(users, "profiles")
        # Idle client connections notice a graceful stop after poll_interval seconds (default 10).
        _sub(_sub(profiles, "default"), "poll_interval", 1)
        user_list = _sub(users, "users")
        default = _sub(user_list, "default")
        _sub(default, "password", "")
        networks = _sub(default, "networks")
        _sub(networks, "ip", "127.0.0.1")
        _sub(networks, "ip", "::1")
        _sub(default, "profile", "default")
        _sub(default, "quota", "default")
        quotas = _sub(users, "quotas")
        interval = _sub(_sub(quotas, "default"), "interval")
        _sub(interval, "duration", 3600)
        for limit in ("queries", "errors", "result_rows", "read_rows", "execution_time"):
            _sub(interval, limit, 0)
        _write_xml(users, self.workdir / "users.xml")

    # -- lifecycle ----------------------------------------------------------

    def start(self, timeout: float | None = None) -> ClickHouseServer:
        """Start the server and wait until it answers ``SELECT 1``.

        Reuses the ports and data directory of any previous run.  Raises
        :class:`ClickHouseServerError` (with the tail of the server's logs)
        if the process exits or is not ready within ``timeout`` seconds
        (default: :attr:`startup_timeout`); the process is killed then.
        """
        with self._lock:
            if self.is_running:
                raise ClickHouseServerError(f"{self!r} is already running")
            timeout = self.startup_timeout if timeout is None else timeout
            self.write_config()
            err_log_offset = self.error_log_path.stat().st_size if self.error_log_path.exists() else 0
            argv = self._argv = [*self._command, f"--config-file={self.config_path}"]
            log.debug("starting ClickHouse: %s", " ".join(argv))
            env = dict(os.environ, TZ="UTC")
            # Only tie the server's life to ours from the main thread: Linux
            # sends the parent-death signal when the *thread* that forked exits.
            on_main_thread = threading.current_thread() is threading.main_thread()
            started = time.monotonic()
            with open(self.stdout_path, "ab") as out:
                self._process = subprocess.Popen(
                    argv,
                    cwd=self.workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    # Only sets a signal via prctl; safe enough despite threads.
                    preexec_fn=_set_parent_death_signal if on_main_thread else None,  # noqa: PLW1509
                )
            _live_servers.add(self)
            try:
                self._wait_ready(started + timeout, err_log_offset)
            except BaseException:
                self._terminate(timeout=5)
                raise
            log.info(
                "ClickHouse ready on %s:%d (pid %d) after %.2fs",
                self.host,
                self.tcp_port,
                self._process.pid,
                time.monotonic() - started,
            )
            return self

    def _wait_ready(self, deadline: float, err_log_offset: int) -> None:
        try:
            from clickhouse_driver import Client
        except ImportError as exc:  # pragma: no cover - dev dependency
            raise ClickHouseServerError("clickhouse-driver is not installed (pip install clickhouse-driver)") from exc
        assert self._process is not None
        last_error: Exception | None = None
        while True:
            code = self._process.poll()
            if code is not None:
                raise ClickHouseServerError(
                    f"clickhouse-server exited with status {code} during startup"
                    f"{self._address_in_use_hint(err_log_offset)}; command: {' '.join(self._argv)}"
                    f"\n{self.log_tail()}"
                )
            # Probe the port with a bare socket first: clickhouse_driver logs
            # a WARNING with a traceback for every refused connection.
            try:
                socket.create_connection((self.host, self.tcp_port), timeout=1).close()
            except OSError as exc:
                last_error = exc
                if time.monotonic() >= deadline:
                    raise ClickHouseServerError(
                        f"clickhouse-server did not open {self.host}:{self.tcp_port} in time "
                        f"(last error: {last_error!r})\n{self.log_tail()}"
                    ) from None
                time.sleep(0.05)
                continue
            client = Client(
                host=self.host,
                port=self.tcp_port,
                user="default",
                password="",
                database="default",
                connect_timeout=1,
                send_receive_timeout=3,
                sync_request_timeout=3,
            )
            try:
                if client.execute("SELECT 1") == [(1,)]:
                    return
            except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
                last_error = exc
            finally:
                client.disconnect()
            if time.monotonic() >= deadline:
                raise ClickHouseServerError(
                    f"clickhouse-server did not answer SELECT 1 on {self.host}:{self.tcp_port} in time "
                    f"(last error: {last_error!r})\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def _address_in_use_hint(self, err_log_offset: int) -> str:
        try:
            with open(self.error_log_path, "rb") as fh:
                fh.seek(err_log_offset)
                new = fh.read()
        except OSError:
            return ""
        return " (address already in use)" if b"Address already in use" in new else ""

    def log_tail(self, lines: int = 40) -> str:
        """Return the last lines of the error log and of stdout/stderr."""
        parts = []
        for path in (self.error_log_path, self.stdout_path):
            text = _tail(path, lines)
            parts.append(f"--- tail of {path} ---\n{text or '(empty or missing)'}")
        return "\n".join(parts)

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Stop the server gracefully (SIGTERM); SIGKILL it after ``timeout`` s.

        Does nothing if it is not running.  Data stays for a later
        :meth:`start`.
        """
        with self._lock:
            self._terminate(timeout)

    def kill(self) -> None:
        """Kill the server with SIGKILL (simulates a crash) and reap it."""
        with self._lock:
            process = self._process
            if process is None or process.poll() is not None:
                return
            log.info("killing ClickHouse pid %d", process.pid)
            process.kill()
            process.wait()
            _live_servers.discard(self)

    def restart(self, timeout: float | None = None) -> ClickHouseServer:
        """:meth:`stop` then :meth:`start` (same ports, same data)."""
        self.stop()
        return self.start(timeout)

    def _terminate(self, timeout: float) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            log.debug("stopping ClickHouse pid %d", process.pid)
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("ClickHouse pid %d ignored SIGTERM for %ss; killing it", process.pid, timeout)
                process.kill()
                process.wait()
        _live_servers.discard(self)

    def __enter__(self) -> Self:
        if not self.is_running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_clickhouse(
    tmpdir: str | os.PathLike[str],
    *,
    binary: str | None = None,
    timeout: float = DEFAULT_STARTUP_TIMEOUT,
    attempts: int = 3,
) -> ClickHouseServer:
    """Start a throwaway ClickHouse server in ``tmpdir`` and return it, ready.

    The server listens on 127.0.0.1 on free ports (native, HTTP and
    interserver), keeps everything inside ``tmpdir`` and accepts user
    ``default`` with an empty password; see :attr:`ClickHouseServer.url`.
    If a chosen port is grabbed by someone else before the server binds it,
    new ports are picked (up to ``attempts`` tries).  Raises
    :class:`ClickHouseServerError` if no binary is found or it won't start.
    """
    for attempt in range(1, attempts + 1):
        server = ClickHouseServer(tmpdir, binary=binary, startup_timeout=timeout)
        try:
            return server.start()
        except ClickHouseServerError as exc:
            if "(address already in use)" not in str(exc) or attempt == attempts:
                raise
            log.warning("ClickHouse port clash (attempt %d/%d); retrying with new ports", attempt, attempts)
    raise AssertionError("unreachable")  # pragma: no cover


# --------------------------------------------------------------------------
# ZooKeeper and a ClickHouse cluster
# --------------------------------------------------------------------------

#: Where Debian's ``zookeeper`` package puts the server's jar (its manifest names the others).
ZOOKEEPER_JAR = "/usr/share/java/zookeeper.jar"


class ZooKeeperServer:
    """A throwaway standalone ZooKeeper (Debian's ``zookeeper`` package) in ``workdir``, on a free
    loopback port, for the replicated tables and ``ON CLUSTER`` DDL of a ClickHouse cluster."""

    host: str = CLICKHOUSE_HOST

    def __init__(self, workdir: str | os.PathLike[str], *, startup_timeout: float = DEFAULT_STARTUP_TIMEOUT) -> None:
        java = shutil.which("java")
        if java is None or not os.path.isfile(ZOOKEEPER_JAR):
            raise ClickHouseServerError(f"ZooKeeper needs java and {ZOOKEEPER_JAR} (apt-get install zookeeper; "
                                        "scripts/setup-test-env.sh installs it)")
        self._java = java
        self.workdir = Path(workdir).resolve()
        self.startup_timeout = startup_timeout
        self.port: int = _free_ports(1)[0]
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"<ZooKeeperServer {self.host}:{self.port} {self.workdir}>"

    def start(self) -> ZooKeeperServer:
        """Start it and wait until it answers the ``srvr`` command."""
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        config = self.workdir / "zoo.cfg"
        config.write_text(f"tickTime=500\ndataDir={self.workdir / 'data'}\nclientPort={self.port}\n"
                          f"clientPortAddress={self.host}\nmaxClientCnxns=0\nadmin.enableServer=false\nforceSync=no\n")
        argv = [self._java, "-Xmx256m", "-cp", ZOOKEEPER_JAR, "org.apache.zookeeper.server.ZooKeeperServerMain",
                str(config)]
        on_main_thread = threading.current_thread() is threading.main_thread()
        with open(self.workdir / "stdout.log", "ab") as out:
            self._process = subprocess.Popen(argv, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=out,
                                             stderr=subprocess.STDOUT,
                                             preexec_fn=_set_parent_death_signal if on_main_thread else None)  # noqa: PLW1509
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._process.poll() is not None:
                raise ClickHouseServerError(f"ZooKeeper exited with status {self._process.returncode}\n"
                                            f"{_tail(self.workdir / 'stdout.log')}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as sock:
                    sock.sendall(b"srvr")
                    if b"Mode:" in sock.recv(4096):
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise ClickHouseServerError(f"ZooKeeper did not answer on {self.host}:{self.port} in time\n"
                                            f"{_tail(self.workdir / 'stdout.log')}")
            time.sleep(0.1)

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Stop it (SIGTERM, then SIGKILL after ``timeout`` s)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class ClickHouseCluster:
    """A ClickHouse cluster on loopback ports in ``workdir``: ZooKeeper and one
    :class:`ClickHouseServer` per replica, ``replicas[i]`` servers in shard ``i + 1``.

    The default ``(2, 1)`` is shard 1 with two replicas (``a`` and ``b``) and shard 2 with one
    (``a``).  Every server's ``config.xml`` gets ``remote_servers`` (cluster :attr:`name`, with
    ``internal_replication``: a ``Distributed`` table writes one replica and replication copies
    it), ``macros`` (``shard`` ``01``…, ``replica`` ``a``…), ``zookeeper`` and
    ``distributed_ddl``, and ``users.d`` the user :attr:`user` with :attr:`password`.  Servers are :attr:`shards` ``[shard][replica]``; each can be stopped
    and started again on its ports and data (fault tests).
    """

    #: A user of every server with a password (besides ``default`` without one).
    user, password = "app", "s3cret"

    def __init__(self, workdir: str | os.PathLike[str], *, name: str = "test_cluster",
                 replicas: tuple[int, ...] = (2, 1)) -> None:
        self.workdir = Path(workdir).resolve()
        self.name = name
        self.zookeeper = ZooKeeperServer(self.workdir / "zookeeper")
        self.shards: list[list[ClickHouseServer]] = [
            [ClickHouseServer(self.workdir / f"shard{shard + 1}{chr(ord('a') + replica)}",
                              extra_config=functools.partial(self._configure, shard, replica))
             for replica in range(count)]
            for shard, count in enumerate(replicas)]

    @property
    def servers(self) -> list[ClickHouseServer]:
        """Every server, shard by shard."""
        return [server for shard in self.shards for server in shard]

    def _configure(self, shard: int, replica: int, root: ET.Element) -> None:
        clusters = _sub(_sub(root, "remote_servers"), self.name)
        for servers in self.shards:
            element = _sub(clusters, "shard")
            _sub(element, "internal_replication", "true")
            for server in servers:
                address = _sub(element, "replica")
                _sub(address, "host", server.host)
                _sub(address, "port", server.tcp_port)
        macros = _sub(root, "macros")
        _sub(macros, "shard", f"{shard + 1:02d}")
        _sub(macros, "replica", chr(ord("a") + replica))
        node = _sub(_sub(root, "zookeeper"), "node")
        _sub(node, "host", self.zookeeper.host)
        _sub(node, "port", self.zookeeper.port)
        _sub(_sub(root, "distributed_ddl"), "path", "/clickhouse/task_queue/ddl")
        # A user with a password too (users.d is merged into users.xml), for the tests of masking.
        users = ET.Element("yandex")
        user = _sub(_sub(users, "users"), self.user)
        _sub(user, "password", self.password)
        _sub(_sub(user, "networks"), "ip", "127.0.0.1")
        _sub(user, "profile", "default")
        _sub(user, "quota", "default")
        users_dir = self.shards[shard][replica].workdir / "users.d"
        users_dir.mkdir(parents=True, exist_ok=True)
        _write_xml(users, users_dir / f"{self.user}.xml")

    def start(self) -> ClickHouseCluster:
        """Start ZooKeeper, then every server (stops what started when one fails)."""
        try:
            self.zookeeper.start()
            for server in self.servers:
                server.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every server, then ZooKeeper."""
        for server in self.servers:
            server.stop()
        self.zookeeper.stop()

    def url(self, server: ClickHouseServer | None = None, database: str = "default") -> str:
        """``clickhouse://…/<database>?cluster=<name>`` of ``server`` (default: the first)."""
        server = server or self.servers[0]
        return f"clickhouse://default:@{server.host}:{server.tcp_port}/{database}?cluster={self.name}"


# --------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------


def _libpq_url(url: str) -> str:
    """Turn a SQLAlchemy-style ``postgresql+driver://`` URL into a libpq one."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in ("postgresql", "postgres"):
        raise ValueError(f"not a PostgreSQL URL: {url!r}")
    return urlunsplit(parts._replace(scheme=scheme))


def _with_database(url: str, dbname: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{dbname}"))


def _connect(url: str, connect_timeout: float) -> Any:
    import psycopg2

    return psycopg2.connect(_libpq_url(url), connect_timeout=max(1, round(connect_timeout)))


def postgres_reachable(url: str = DEFAULT_POSTGRES_URL, timeout: float = 3.0) -> str | None:
    """Return ``None`` if ``url`` accepts a connection and ``SELECT 1``.

    Otherwise return a one-line reason (suitable for ``pytest.skip`` or an
    error message), e.g. ``"OperationalError: connection refused ..."``.
    """
    try:
        import psycopg2  # noqa: F401
    except ImportError as exc:
        return f"psycopg2 is not installed: {exc}"
    try:
        conn = _connect(url, timeout)
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchone()
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    finally:
        conn.close()
    return None


def create_postgres_database(
    base_url: str = DEFAULT_POSTGRES_URL,
    prefix: str = "cstest",
    timeout: float = 10.0,
) -> tuple[str, Callable[[], None]]:
    """Create a fresh database on the server of ``base_url``.

    ``base_url`` points at any database the user may connect to (normally
    ``postgres``) and needs the ``CREATEDB`` privilege.  The new database is
    named ``<prefix>_<pid>_<random hex>``, created from ``template0`` with
    UTF8 encoding.  Returns ``(url, drop)``: ``url`` is ``base_url`` with the
    database replaced (same scheme, so ``postgresql+psycopg2://`` stays), and
    ``drop()`` terminates remaining connections to it and drops it; calling
    ``drop()`` again is harmless.
    """
    from psycopg2 import sql

    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    ident = sql.Identifier(name)
    conn = _connect(base_url, timeout)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            try:
                cur.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(ident))
            except Exception as exc:  # noqa: BLE001 - e.g. non-UTF8 cluster locale
                log.warning("CREATE DATABASE %s with UTF8 failed (%s); using the server defaults", name, exc)
                cur.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    finally:
        conn.close()
    log.info("created PostgreSQL database %s", name)

    def drop() -> None:
        """Terminate connections to the test database and drop it."""
        conn = _connect(base_url, timeout)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = %s AND pid <> pg_backend_pid()",
                    (name,),
                )
                if conn.server_version >= 130000:
                    cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
                else:
                    cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(ident))
        finally:
            conn.close()
        log.info("dropped PostgreSQL database %s", name)

    return _with_database(base_url, name), drop
