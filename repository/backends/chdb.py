"""ClickHouse without a server: ``chdb://`` URLs run the ClickHouse backend on chdb, the current
ClickHouse engine embedded in the Python process (the ``chdb`` extra).

It is the embedded analytics store for notebooks and single-machine jobs, as SQLite is for the
other domains: every ClickHouse domain (memory, workflows, scores, observability) works on it,
with the tables, types and SQL of a current ClickHouse server.

URL forms (everything between ``chdb://`` and ``?`` is the data directory, created if missing):

* ``chdb:///abs/path/to/dir``: an absolute directory;
* ``chdb://./relative/dir`` (or ``chdb://relative/dir``): relative to the working directory when
  the store is built;
* ``chdb://:memory:`` (or ``chdb:///:memory:``): a temporary directory chdb removes at exit;
* ``?database=name``: the ClickHouse database inside the directory (``default`` unless given),
  created on first use.

chdb's limits, which this module turns into clear errors (:class:`BackendUnavailableError`):
a process runs **one** engine, on one directory (the first one it opens, until it exits), and a
directory is opened by **one process at a time** (the engine locks it).  Stores of any number, in
any thread, may share that engine: :func:`open_engine` keeps the process's one session, opened
lazily by the first query (constructors never open it), and runs its queries one at a time.

:class:`ChdbClient` is the part of ``clickhouse_driver.Client`` the ClickHouse backend uses, over
that session: native-insert rows are sent as JSON lines, parameters substituted with the
backend's own escaping, results read as typed JSON, and the engine's errors raised as the driver
raises a server's (``ServerException`` with its code), so the backend handles both alike.
"""

from __future__ import annotations

import fcntl
import functools
import io
import json
import os
import re
import sys
import tempfile
import threading
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Callable, Iterator
from urllib.parse import parse_qs, unquote
from zoneinfo import ZoneInfo

from ..errors import BackendUnavailableError, ValidationError
from .base import first_line

#: The scheme of the URLs this module serves.
SCHEME = "chdb://"
#: The path of chdb's temporary engine.
MEMORY = ":memory:"
#: The forms a URL may take, for error messages.
URL_FORMS = "chdb:///abs/dir, chdb://./relative/dir or chdb://:memory: (optionally ?database=name)"


def is_chdb_url(url: Any) -> bool:
    """Whether ``url`` names the in-process engine rather than a ClickHouse server."""
    return isinstance(url, str) and url.startswith(SCHEME)


def parse_chdb_url(url: str) -> tuple[str, str]:
    """``chdb://<dir>?database=<name>`` → (absolute directory or ``:memory:``, database name)."""
    location, _, query = url[len(SCHEME):].partition("?")
    path = unquote(location)
    if not path:
        raise ValidationError(fields={"url": [f"a chdb URL names a data directory: {URL_FORMS}"]})
    path = MEMORY if path in (MEMORY, "/" + MEMORY) else os.path.abspath(path)
    options = parse_qs(query, keep_blank_values=True)
    database = options.get("database", ["default"])[-1]
    if not database:
        raise ValidationError(fields={"url": ["database= of a chdb URL must not be empty"]})
    return path, database


def quote_name(name: str) -> str:
    """A database name as a ClickHouse identifier."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


class Engine:
    """The process's chdb session on one directory.

    ``USE`` switches the database of the whole session, so each query runs under one lock after
    switching to its client's database.
    """

    def __init__(self, path: str, session: Any) -> None:
        self.path = path
        self.session = session
        self.lock = threading.Lock()
        self.current_database = "default"

    def query(self, database: str, sql: str, output_format: str = "CSV") -> Any:
        """Run ``sql`` in ``database``; an engine error becomes the driver's ``ServerException``."""
        from clickhouse_driver.errors import ServerException

        try:
            with self.lock:
                if self.current_database != database:
                    self.session.query(f"USE {quote_name(database)}")
                    self.current_database = database
                return self.session.query(sql, output_format)
        except Exception as exc:  # chdb raises one class for every engine error
            code = re.match(r"Code: (\d+)\. ", str(exc))
            if code is None:
                raise
            raise ServerException(str(exc)[code.end():], code=int(code.group(1))) from exc


_engine: Engine | None = None
_engine_lock = threading.Lock()


def open_engine(path: str) -> Engine:
    """The process's engine on ``path``, started by the first call.

    Raises :class:`BackendUnavailableError` when the process already runs the engine on another
    directory (chdb runs one per process), or when another process has ``path`` open.
    """
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = Engine(path, _start_session(path))
        elif _engine.path != path:
            raise BackendUnavailableError(
                f"Cannot open {SCHEME}{path}: this process already runs chdb on {_engine.path}, and chdb "
                "runs one engine per process; use one chdb directory per process",
                details={"url": SCHEME + path, "code": "CHDB_ENGINE_ON_OTHER_DIRECTORY", "open": _engine.path})
        return _engine


def _start_session(path: str) -> Any:
    import chdb.session

    try:
        with _native_stderr() as printed:
            session = chdb.session.Session(path)
    except Exception as exc:  # chdb raises one class for every failure
        owner = _locking_process(path)
        if owner is not None:
            raise BackendUnavailableError(
                f"Cannot open {SCHEME}{path}: process {owner} has this chdb directory open, and one "
                "process opens a chdb directory at a time", details={"url": SCHEME + path,
                                                                       "code": "CHDB_DIRECTORY_IN_USE"}) from None
        # The exception says little ("Error initializing EmbeddedServer"); the engine printed why.
        reason = (printed.getvalue().strip().splitlines() or [first_line(exc)])[0]
        raise BackendUnavailableError(f"Cannot open {SCHEME}{path}: {reason}",
                                      details={"url": SCHEME + path, "code": "CANNOT_CONNECT"}) from exc
    sys.stderr.write(printed.getvalue())
    # NaN and infinities as "nan"/"inf" (JSON output writes them as null otherwise); timestamps
    # of inserted rows read with their offset, whatever the column's or the engine's time zone.
    session.query("SET output_format_json_quote_denormals = 1, date_time_input_format = 'best_effort'")
    return session


@contextmanager
def _native_stderr() -> Iterator[io.StringIO]:
    """What the engine writes to file descriptor 2 while starting (it prints why a start fails
    there itself): kept for the error, so a failing command still prints one line."""
    sys.stderr.flush()
    printed, saved = io.StringIO(), os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield printed
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            printed.write(captured.read().decode(errors="replace"))


def _locking_process(path: str) -> str | None:
    """The process holding the engine's lock on ``path`` (its ``status`` file), if any."""
    try:
        with open(os.path.join(path, "status")) as status:
            try:
                fcntl.flock(status, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = re.search(r"PID: (\d+)", status.read())
                return pid.group(1) if pid else "another process"
            fcntl.flock(status, fcntl.LOCK_UN)
    except OSError:
        pass
    return None


def _json_value(value: Any) -> Any:
    """What ``json`` cannot encode of an inserted row: timestamps, as ISO text with their offset."""
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot send {type(value).__name__} to ClickHouse")


@functools.lru_cache(maxsize=256)
def _decoder(type_: str) -> Callable[[Any], Any] | None:
    """How a non-null value of typed JSON output of ``type_`` becomes what the driver returns
    (``None``: as it is).  Built once per type: every row of a result has its columns' types."""
    for wrapper in ("Nullable(", "LowCardinality("):
        if type_.startswith(wrapper):
            return _decoder(type_[len(wrapper):-1])
    if type_.startswith(("Int", "UInt")):
        return int
    if type_.startswith("Float"):
        return float
    if type_.startswith("DateTime"):
        # Microseconds at most; aware in the column's time zone, else naive in the engine's (as
        # the driver returns them).
        zone = re.search(r"'([^']+)'", type_)
        if zone is None:
            return lambda value: datetime.fromisoformat(value[:26])
        tzinfo = ZoneInfo(zone.group(1))
        return lambda value: datetime.fromisoformat(value[:26]).replace(tzinfo=tzinfo)
    if type_.startswith("Array("):
        item = _decoder(type_[len("Array("):-1])
        if item is None:
            return None  # JSON arrays are lists already
        return lambda value: [None if element is None else item(element) for element in value]
    return None


def _decoded_rows(rows: list[list[Any]], types: list[str]) -> list[tuple]:
    """Rows of typed JSON output as the driver returns them: tuples of its values."""
    decoders = [(index, decode) for index, decode in enumerate(map(_decoder, types)) if decode is not None]
    for row in rows:
        for index, decode in decoders:
            value = row[index]
            if value is not None:
                row[index] = decode(value)
    return list(map(tuple, rows))


class ChdbClient:
    """The part of ``clickhouse_driver.Client`` the ClickHouse backend uses, on the process's chdb
    engine on ``path``, in ``database``.  The driver's connection options (host, timeouts,
    settings) mean nothing in-process and are ignored."""

    def __init__(self, *, path: str, database: str = "default", **_driver_options: Any) -> None:
        self.path = path
        self.database = database
        self.engine: Engine | None = None

    @property
    def connection(self) -> "ChdbClient":
        """The object the backend calls ``connect()`` on (the driver's ``Connection``)."""
        return self

    def connect(self) -> Engine:
        """Join (or start) the process's engine and create this client's database if missing."""
        if self.engine is None:
            engine = open_engine(self.path)
            if self.database != "default":
                engine.query("default", f"CREATE DATABASE IF NOT EXISTS {quote_name(self.database)}")
            self.engine = engine
        return self.engine

    def execute(self, query: str, params: Any = None, with_column_types: bool = False, **_: Any) -> Any:
        """Run ``query``: with a list of row tuples, a native insert (``INSERT … VALUES``); with a
        dict, ``%(name)s`` parameters substituted; rows (and column names and types) returned."""
        from .clickhouse import escape  # (that module builds this client: imported when it runs)

        engine = self.connect()
        if isinstance(params, list):
            if params:
                # The rows as data (JSON lines), not VALUES literals: the engine parses literals
                # such as toDateTime64(…) or map(…) as expressions, tens of times slower.
                head = query.rstrip()
                if not head.upper().endswith("VALUES"):
                    raise ValueError(f"a native insert ends with VALUES: {query!r}")
                rows = "\n".join(json.dumps(row, default=_json_value, ensure_ascii=False) for row in params)
                engine.query(self.database, f"{head[:-len('VALUES')]}FORMAT JSONCompactEachRow\n{rows}")
            return []
        if isinstance(params, dict):
            query = query % {key: escape(value) for key, value in params.items()}
        result = engine.query(self.database, query, "JSONCompactEachRowWithNamesAndTypes")
        lines = [json.loads(line) for line in result.bytes().decode().splitlines() if line.strip()]
        if not lines:
            return ([], []) if with_column_types else []
        names, types, rows = lines[0], lines[1], lines[2:]
        rows = _decoded_rows(rows, types)
        return (rows, list(zip(names, types))) if with_column_types else rows

    def disconnect(self) -> None:
        """Nothing to close: the engine serves every client of the process until it exits."""
