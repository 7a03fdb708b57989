"""Servers that fault tests may stop, kill and restart without disturbing the rest of the suite.

* :class:`PostgresCluster`: a PostgreSQL cluster of the test's own (``initdb`` into a temporary
  directory, ``pg_ctl`` on a free port), with an application role that logs in over TCP with a
  password (SCRAM), so password masking in errors is really exercised.
* :class:`PasswordClickHouseServer`: the shared throwaway ClickHouse server of
  :mod:`tests.servers` with one more user that has a password.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.servers import ClickHouseServer, ClickHouseServerError

#: Login of the application role of a :class:`PostgresCluster` (and of the ClickHouse user).
APP_USER = "cs_app"
#: Its password: distinctive, so a test can assert it never appears in an error message.
APP_PASSWORD = "Pw-n0t-in-logs-4417"


class ServerSetupError(RuntimeError):
    """A test server could not be created or started."""


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def find_postgres_bindir() -> str | None:
    """Directory holding ``initdb`` and ``pg_ctl`` (Debian keeps them out of ``PATH``)."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return str(Path(on_path).parent)
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0)
    return str(Path(candidates[-1]).parent) if candidates else None


class PostgresCluster:
    """A private PostgreSQL cluster: created by :meth:`create`, then started, stopped, killed.

    The superuser ``postgres`` connects over the cluster's Unix socket (trust); :data:`APP_USER`
    connects over TCP with :data:`APP_PASSWORD` (``scram-sha-256``) and owns database ``app``.
    Running as root, the server runs as the ``postgres`` system user (``initdb`` refuses root).
    """

    def __init__(self, bindir: str) -> None:
        self.bindir = bindir
        self.workdir = Path(tempfile.mkdtemp(prefix="cs-reliability-pg-"))
        self.datadir = self.workdir / "data"
        self.logfile = self.workdir / "server.log"
        self.port = free_port()

    @property
    def url(self) -> str:
        """The application's URL, password included."""
        return f"postgresql://{APP_USER}:{APP_PASSWORD}@127.0.0.1:{self.port}/app"

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(Path(self.bindir) / argv[0]), *argv[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, cwd=self.workdir, stdin=subprocess.DEVNULL, capture_output=True,
                                text=True, timeout=120)
        if check and result.returncode != 0:
            raise ServerSetupError(f"{' '.join(command)} failed ({result.returncode}): "
                                   f"{result.stderr.strip() or result.stdout.strip()}\n{self.log_tail()}")
        return result

    def create(self) -> "PostgresCluster":
        """``initdb``, start, and create the application role and database."""
        if os.geteuid() == 0:
            shutil.chown(self.workdir, user="postgres")
        self._run("initdb", "-D", str(self.datadir), "-U", "postgres", "-E", "UTF8", "--locale=C.UTF-8", "-N",
                  "--auth-local=trust", "--auth-host=scram-sha-256")
        self.start()
        import psycopg2

        conn = psycopg2.connect(host=str(self.workdir), port=self.port, user="postgres", dbname="postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f"CREATE ROLE {APP_USER} LOGIN PASSWORD %s", (APP_PASSWORD,))
                cur.execute(f"CREATE DATABASE app OWNER {APP_USER} TEMPLATE template0 ENCODING 'UTF8'")
        finally:
            conn.close()
        return self

    def start(self) -> None:
        """Start the server (same port, same data) and wait until it accepts connections."""
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.workdir} "
                   "-c fsync=off -c max_connections=60 -c shared_buffers=16MB")
        self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile), "-o", options, "-w", "-t", "60",
                  "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (clients are disconnected) or ``immediate`` (a crash)."""
        self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "-t", "60", "stop")

    def is_running(self) -> bool:
        """Whether the postmaster is alive."""
        return self._run("pg_ctl", "-D", str(self.datadir), "status", check=False).returncode == 0

    def destroy(self) -> None:
        """Stop the server if it runs and delete everything."""
        if self.datadir.exists() and self.is_running():
            self.stop("immediate")
        shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        """The end of the server log (for error messages)."""
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class PasswordClickHouseServer(ClickHouseServer):
    """A throwaway ClickHouse server that also has user :data:`APP_USER` with :data:`APP_PASSWORD`."""

    @property
    def app_url(self) -> str:
        """URL of the password user."""
        return f"clickhouse://{APP_USER}:{APP_PASSWORD}@{self.host}:{self.tcp_port}/default"

    def write_config(self) -> None:
        super().write_config()
        path = self.workdir / "users.xml"
        root = ET.parse(path).getroot()
        user = ET.SubElement(root.find("users"), APP_USER)
        for tag, text in (("password", APP_PASSWORD), ("profile", "default"), ("quota", "default")):
            ET.SubElement(user, tag).text = text
        networks = ET.SubElement(user, "networks")
        ET.SubElement(networks, "ip").text = "127.0.0.1"
        ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def start_password_clickhouse(workdir: Path, attempts: int = 3) -> PasswordClickHouseServer:
    """Start a :class:`PasswordClickHouseServer` in ``workdir`` (new ports on a port clash)."""
    for attempt in range(1, attempts + 1):
        server = PasswordClickHouseServer(workdir)
        try:
            return server.start()
        except ClickHouseServerError as exc:
            if "(address already in use)" not in str(exc) or attempt == attempts:
                raise
            time.sleep(0.1)
    raise AssertionError("unreachable")
