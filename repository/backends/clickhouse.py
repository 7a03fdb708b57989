"""ClickHouse over the native protocol (clickhouse-driver), from server 18.16 to current ones.

There is no maintained peewee dialect for ClickHouse, so this module has a small peewee
``Database`` over one ``clickhouse_driver.Client`` per thread: client-side parameter
substitution, no transactions, and capability detection once per connection.  Rows are
versioned (``ReplacingMergeTree(_version)`` plus ``_deleted``): updates re-insert the whole row
with a higher version, deletes insert tombstones, reads use ``FINAL`` and ``_deleted = 0``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import operator
import re
import threading
import time
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import datetime
from typing import Any, Callable, Iterator, Sequence
from urllib.parse import parse_qs, unquote, urlsplit

import peewee

from ..models.base import ClickHouseTable
from ..models.fields import DeletedField, JSONField, TextField, TimestampField, VersionField

from ..errors import BackendUnavailableError, NotSupportedError, StorageError, ValidationError
from ..values import UTC, VERSION_CLOCK, JSONText, chunks, epoch_ms, format_iso, from_epoch_ms, json_dumps, json_loads, to_utc, truncate_ms
from .base import (ITER_CHUNK, Backend, BackendFeatures, StoredFormats, mask_password, primary_key_names, require_driver,
                   row_reader, value_tuples)
from .chdb import ChdbClient, is_chdb_url, parse_chdb_url

logger = logging.getLogger("composite_store.clickhouse")

#: Placeholder some clients write for a missing value; it reads as ``None``.
NULL_PLACEHOLDER = "_null_"
#: Seconds between polls of ``system.mutations``.
MUTATION_POLL_S = 0.05
#: Rows per native insert block.
INSERT_BLOCK = 100_000
#: Keys per ``IN`` list when reading stored rows before a write.
STORED_READ_CHUNK = 1000
#: ZooKeeper path of a replicated table on a cluster: ``{shard}`` is each server's macro;
#: ``{database}`` and ``{table}`` are filled in here (18.16 has no such macros).
DEFAULT_ZOOKEEPER_PATH = "/clickhouse/tables/{shard}/{database}/{table}"
#: Replica name of a replicated table: each server's ``{replica}`` macro.
DEFAULT_REPLICA_NAME = "{replica}"
#: On a cluster, a logical table ``t`` is the ``Distributed`` table ``t`` over the replicated
#: table ``t_local`` on every server, which holds the rows of its shard.
LOCAL_SUFFIX = "_local"
#: Session settings on a cluster: inserts return once every shard has its rows (else the
#: ``Distributed`` table queues them and a read right after misses them); a subquery on a
#: ``Distributed`` table inside a distributed query is run once and sent along (``GLOBAL IN``:
#: right whichever keys the two tables are sharded by); each shard's reads and writes go to its
#: first live replica, so a read sees the writes before it.
CLUSTER_SETTINGS = {"insert_distributed_sync": 1, "distributed_product_mode": "global",
                    "load_balancing": "in_order"}
#: Server codes of a distributed query that could not reach a shard: ALL_CONNECTION_TRIES_FAILED,
#: NETWORK_ERROR, SOCKET_TIMEOUT, and the "all replicas are stale/unavailable" ones.
SHARD_UNREACHABLE_CODES = frozenset({279, 210, 209, 369})
#: ``host:port`` in a server's message about a shard it could not reach.
_SHARD_ADDRESS = re.compile(r"\((\[?[\w.:-]+?\]?:\d+)\)")
#: Names a cluster may have (it is written into DDL).
_CLUSTER_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def url_option(url: Any, name: str) -> str | None:
    """The value of option ``name`` in a ClickHouse URL's query (``?cluster=analytics``), else ``None``."""
    if not isinstance(url, str):
        return None
    values = parse_qs(urlsplit(url).query).get(name)
    return values[-1] if values else None


def parse_clickhouse_url(url: str) -> dict[str, Any]:
    """``clickhouse://user:pass@host:port/db`` → ``clickhouse_driver.Client`` keyword arguments."""
    if not isinstance(url, str) or not url.startswith("clickhouse://"):
        raise ValidationError(fields={"url": ["url must be a clickhouse:// URL (or chdb:// for the in-process engine)"]})
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # urllib's "Port could not be cast to integer value"
        raise ValidationError(fields={"url": ["url has an invalid port"]}) from None
    return {
        "host": parts.hostname or "localhost",
        "port": port or 9000,
        "user": unquote(parts.username) if parts.username else "default",
        "password": unquote(parts.password) if parts.password else "",
        "database": unquote(parts.path.lstrip("/")) or "default",
    }


def connection_params(url: str) -> dict[str, Any]:
    """``ClickHouseDatabase`` arguments (``database`` included) for a ``clickhouse://`` server URL,
    or for a ``chdb://`` URL: the in-process engine (:mod:`~composite_store.backends.chdb`)."""
    if not is_chdb_url(url):
        return parse_clickhouse_url(url)
    # chdb's client is run by this module's backend; clickhouse-driver's error classes are still
    # the ones it handles, so the chdb extra installs both.
    require_driver("clickhouse_driver", extra="chdb")
    path, database = parse_chdb_url(url)
    return {"database": database, "client_factory": functools.partial(ChdbClient, path=path)}


# --------------------------------------------------------------------------- capabilities

#: What every ClickHouse server offers, known without connecting.  No transactions:
#: read-modify-writes are serialized per record inside one store object only; JSON objects are
#: written scalars first for 18.16's ``visitParam*`` functions; a page and its total are read
#: by statements of their own (``FINAL`` reads, and each domain's own counting paths).
DECLARED_FEATURES = BackendFeatures(concurrent_updates=False, json_scalars_first=True, total_in_page=False)


@dataclass(kw_only=True)
class ClickHouseFeatures(BackendFeatures):
    """What the connected server supports, read once per connection: the flags every ClickHouse
    backend declares (:data:`DECLARED_FEATURES`) and what is probed from the server."""

    version: tuple[int, ...]
    datetime64: bool
    ttl: bool
    add_column_if_not_exists: bool
    timezone: str
    #: Whether ``JSONExtractString`` and friends exist (19.8+; 18.16 has only ``visitParam*``).
    json_functions: bool = False
    #: Whether the ``Bool`` type exists (21.12+); boolean columns are ``UInt8`` without it.
    bool_type: bool = False
    #: ``{table: {column: type}}`` of the current database, refreshed after DDL.
    columns: dict[str, dict[str, str]] = dataclass_field(default_factory=dict)
    #: ``{table: (engine, engine_full)}``.
    tables: dict[str, tuple[str, str]] = dataclass_field(default_factory=dict)

    def timestamp_type(self) -> str:
        """Column type of a new timestamp column on this server."""
        return "DateTime64(3, 'UTC')" if self.datetime64 else "Int64"


def timestamp_kind(column_type: str | None, features: ClickHouseFeatures) -> str:
    """How a timestamp column stores its values: ``datetime64``, ``datetime`` or ``ms``."""
    if column_type is None:
        return "datetime64" if features.datetime64 else "ms"
    inner = column_type.removeprefix("Nullable(").rstrip(")") if column_type.startswith("Nullable(") else column_type
    if inner.startswith("DateTime64"):
        return "datetime64"
    if inner.startswith("DateTime"):
        return "datetime"
    return "ms"


_ESCAPES = {"\\": "\\\\", "'": "\\'", "\b": "\\b", "\f": "\\f", "\r": "\\r", "\n": "\\n", "\t": "\\t", "\0": "\\0"}
_ESCAPE_RE = re.compile(r"[\\'\b\f\r\n\t\0]")


#: Bytes of rows the server sorts in memory for one :meth:`ClickHouseBackend.iterate` stream
#: before it sorts on disk.
ITER_SORT_BYTES = 256 * 2**20


def escape(value: Any) -> str:
    """A Python value as a ClickHouse SQL literal (client-side parameter substitution)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return "'" + _ESCAPE_RE.sub(lambda m: _ESCAPES[m.group()], value) + "'"
    if isinstance(value, datetime):
        return f"toDateTime64('{format_iso(value)[:-1].replace('T', ' ')}', 3, 'UTC')"
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(escape(v) for v in value) + ")"
    raise TypeError(f"cannot send {type(value).__name__} to ClickHouse")


class ClickHouseCursor:
    """The little of the DB-API cursor that peewee uses."""

    def __init__(self, connection: "ClickHouseConnection") -> None:
        self.connection = connection
        self.description: list[tuple] | None = None
        self.rowcount = -1
        self.lastrowid = None
        self._rows: list[tuple] = []
        self._index = 0

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        if params:
            sql = sql % tuple(escape(p) for p in params)
        rows, columns = self.connection.client.execute(sql, with_column_types=True)
        self.connection.detect_again_after_reconnect()
        self.description = [(name, type_, None, None, None, None, None) for name, type_ in columns] or None
        self._rows = rows
        self._index = 0
        self.rowcount = len(rows)

    def fetchone(self) -> tuple | None:
        if self._index >= len(self._rows):
            return None
        row = self._rows[self._index]
        self._index += 1
        return row

    def fetchall(self) -> list[tuple]:
        rows, self._rows, self._index = self._rows[self._index:], [], 0
        return rows

    def fetchmany(self, size: int = 100) -> list[tuple]:
        rows = self._rows[self._index:self._index + size]
        self._index += len(rows)
        return rows

    def close(self) -> None:
        self._rows = []


class ClickHouseConnection:
    """One ``clickhouse_driver.Client`` (not thread-safe: one per thread) and its features."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.features = detect_features(client)
        self._server_info = _server_info(client)

    def detect_again_after_reconnect(self) -> None:
        """Detect the server's features again when the driver has reconnected.

        clickhouse-driver pings before each query and silently reconnects after a server
        restart; the restarted server may be another version, so what it supports is read again.
        """
        server_info = _server_info(self.client)
        if server_info is self._server_info:
            return
        had_schema = bool(self.features.columns or self.features.tables)
        self.features = detect_features(self.client)
        self._server_info = server_info
        if had_schema:
            self.refresh_schema()

    def cursor(self) -> ClickHouseCursor:
        return ClickHouseCursor(self)

    def close(self) -> None:
        self.client.disconnect()

    def refresh_schema(self) -> None:
        """Re-read tables and columns of the current database."""
        self.features.columns = {}
        for table, name, type_ in self.client.execute(
                "SELECT table, name, type FROM system.columns WHERE database = currentDatabase()"):
            self.features.columns.setdefault(table, {})[name] = type_
        self.features.tables = {name: (engine, full) for name, engine, full in self.client.execute(
            "SELECT name, engine, engine_full FROM system.tables WHERE database = currentDatabase()")}


def _server_info(client: Any) -> Any:
    """The driver's record of the current server connection (a new object after each connect)."""
    return getattr(getattr(client, "connection", None), "server_info", None)


def detect_features(client: Any) -> ClickHouseFeatures:
    """Ask the server what it supports (never assume one kind of server)."""
    version_text, timezone = client.execute("SELECT version(), timezone()")[0]
    version = tuple(int(part) for part in re.findall(r"\d+", version_text)[:3])
    families = {row[0] for row in client.execute("SELECT name FROM system.data_type_families")}
    json_functions = client.execute("SELECT count() FROM system.functions WHERE name = 'JSONExtractString'")[0][0] > 0
    features = ClickHouseFeatures(
        **dataclasses.asdict(DECLARED_FEATURES),
        version=version,
        datetime64="DateTime64" in families,
        ttl=version >= (19, 6),
        add_column_if_not_exists=version >= (19, 3),
        timezone=timezone,
        json_functions=json_functions,
        bool_type="Bool" in families,
    )
    return features


class ClickHouseDatabase(StoredFormats, peewee.Database):
    """A peewee ``Database`` for ClickHouse's native protocol.

    ``atomic()`` and transactions are accepted and do nothing: ClickHouse has no transactions.
    """

    param = "%s"
    quote = '""'
    #: Text that reads as ``None`` in text columns (:class:`models.fields.TextField`).
    null_placeholder = NULL_PLACEHOLDER
    field_types = {"TIMESTAMP": "Int64", "JSON": "String", "TEXT": "String"}

    def __init__(self, database: str, *, client_factory: Callable[..., Any] | None = None,
                 settings: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(database, **kwargs)
        #: Builds the client of a new connection: clickhouse-driver's ``Client``, or for ``chdb://``
        #: URLs :class:`~composite_store.backends.chdb.ChdbClient` (the same ``execute`` interface).
        self.client_factory = client_factory
        #: Server settings of every query of this database's connections (a cluster's).
        self.settings = dict(settings or {})

    def _connect(self) -> ClickHouseConnection:
        from clickhouse_driver import Client

        factory = self.client_factory or Client
        client = factory(database=self.database, connect_timeout=10, send_receive_timeout=300,
                         settings={"use_numpy": False, **self.settings}, **self.connect_params)
        client.connection.connect()
        return ClickHouseConnection(client)

    def _close(self, conn: ClickHouseConnection) -> None:
        conn.close()

    @property
    def features(self) -> ClickHouseFeatures:
        """Capabilities of this thread's connection (connects if needed)."""
        return self.connection().features

    # No transactions: make atomic() nest as a no-op.
    def atomic(self, *args: Any, **kwargs: Any):
        return nullcontext()

    transaction = savepoint = atomic

    def begin(self, *args: Any, **kwargs: Any) -> None:
        pass

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass

    def in_transaction(self) -> bool:
        return False

    def last_insert_id(self, cursor: Any, query_type: Any = None) -> Any:
        return None

    def rows_affected(self, cursor: Any) -> int:
        return cursor.rowcount

    def get_tables(self, schema: str | None = None) -> list[str]:
        """Names of the tables in this database (peewee's ``table_exists`` uses it)."""
        return [name for name, in self.execute_sql(
            "SELECT name FROM system.tables WHERE database = currentDatabase() ORDER BY name").fetchall()]

    # -- stored formats ------------------------------------------------------------------

    def _timestamp_kind(self, field: peewee.Field) -> str:
        features = self.features
        column_type = features.columns.get(field.model._meta.table_name, {}).get(field.column_name)
        return timestamp_kind(column_type, features)

    def timestamp_to_db(self, field: peewee.Field, value: Any) -> Any:
        value = to_utc(value)
        kind = self._timestamp_kind(field)
        if kind == "ms":
            return epoch_ms(value)
        return value

    def timestamp_converter(self, field: peewee.Field) -> Any:
        """Converter for many values of one column (the column's kind is looked up once)."""
        if self._timestamp_kind(field) == "ms":
            return lambda value: epoch_ms(to_utc(value))
        return to_utc

    def timestamp_from_db(self, field: peewee.Field, value: Any) -> Any:
        if isinstance(value, datetime):
            if value.tzinfo is None:
                import pytz

                value = pytz.timezone(self.features.timezone).localize(value)
            return truncate_ms(value.astimezone(UTC))
        if isinstance(value, int):
            return from_epoch_ms(value)
        return value

    def value_reader(self, field: peewee.Field) -> Callable[[Any], Any] | None:
        # Epoch-millisecond columns (18.16) read in one call per value; python_value maps None to None too.
        if type(field).python_value is TimestampField.python_value and self._timestamp_kind(field) == "ms":
            return _timestamp_from_ms
        return None

    def json_to_db(self, field: peewee.Field, value: Any) -> Any:
        return json_dumps(value)

    def json_from_db(self, field: peewee.Field, value: Any) -> Any:
        return None if value == NULL_PLACEHOLDER else json_loads(value)


_JSON_NULL = JSONText("null")


def _timestamp_from_ms(value: Any) -> Any:
    """A stored epoch-millisecond timestamp as an aware UTC datetime (``timestamp_from_db``)."""
    return from_epoch_ms(value) if isinstance(value, int) else value


def _rewritable(model: type[peewee.Model], row: dict[str, Any]) -> dict[str, Any]:
    """``row`` (read back, then changed) as it is written again: a JSON ``null`` that a NOT NULL
    JSON column holds reads as ``None`` and is written back as the JSON text ``null``."""
    for field in model._meta.sorted_fields:
        if isinstance(field, JSONField) and not field.null and row.get(field.name, _JSON_NULL) is None:
            row[field.name] = _JSON_NULL
    return row


def _defaults(fields: Sequence[peewee.Field]) -> dict[str, Any]:
    return {f.name: f.default for f in fields if f.default is not None and not callable(f.default)}


class Final(peewee.Node):
    """``"table" AS "t1" FINAL``: read the newest version of each row, before any merge."""

    def __init__(self, model: type[peewee.Model]) -> None:
        self.model = model

    def __sql__(self, ctx: peewee.Context) -> peewee.Context:
        ctx.sql(self.model)
        return ctx.literal(" FINAL")


def driver_reason(exc: Any) -> str:
    """The words of a clickhouse-driver error, without its code line and the server's stack trace:
    "DB::Exception: Database x doesn't exist. Stack trace: …" → "Database x doesn't exist"."""
    lines = (getattr(exc, "message", None) or "").strip().splitlines()
    return (lines[0] if lines else "").removeprefix("DB::Exception: ").split(". Stack trace:", 1)[0].rstrip(".")


_STRIPES = 256

#: Server error codes of a column another process added first (current servers: 15, 18.16: 44).
DUPLICATE_COLUMN_CODES = (15, 44)

#: Server codes of a refused login: UNKNOWN_DATABASE, UNKNOWN_USER, WRONG_PASSWORD,
#: REQUIRED_PASSWORD, DATABASE_ACCESS_DENIED, AUTHENTICATION_FAILED (newer servers).
LOGIN_REFUSED_CODES = frozenset({81, 192, 193, 194, 291, 516})


class ClickHouseBackend(Backend):
    """A ClickHouse database; one connection per thread.

    With ``cluster="name"`` (or ``?cluster=name`` in the URL) the database spans the servers of
    that cluster of the server's ``remote_servers``: :meth:`init` runs its DDL ``ON CLUSTER``,
    each table is a ``Replicated…MergeTree`` ``<table>_local`` on every server (ZooKeeper path
    ``zookeeper_path``, replica ``replica_name``; ``{shard}``/``{replica}`` are the servers'
    macros, ``{database}``/``{table}`` filled in here) under a ``Distributed`` table of the
    table's name, sharded by the model's ``shard_key``, that reads and writes go through.
    """

    name = "CLICKHOUSE"
    #: Known without connecting; :attr:`server_features` adds what the connected server supports.
    features = DECLARED_FEATURES
    driver_module = "clickhouse_driver"
    driver_extra = "clickhouse"

    def __init__(self, *, url: str, ttl_days: int | None = None, mutation_timeout_s: float = 300,
                 cluster: str | None = None, zookeeper_path: str = DEFAULT_ZOOKEEPER_PATH,
                 replica_name: str = DEFAULT_REPLICA_NAME) -> None:
        if is_chdb_url(url):
            self.driver_module = self.driver_extra = "chdb"
        super().__init__(url)
        params = connection_params(url)
        #: The cluster the database spans (``None``: one server).
        self.cluster = cluster if cluster is not None else url_option(url, "cluster")
        self.zookeeper_path = zookeeper_path
        self.replica_name = replica_name
        self._check_cluster_options(url)
        if self.cluster:
            params["settings"] = CLUSTER_SETTINGS
        if ttl_days is not None and (isinstance(ttl_days, bool) or not isinstance(ttl_days, int) or ttl_days < 1):
            raise ValidationError(fields={"ttl_days": ["ttl_days must be a positive integer or None"]})
        if isinstance(mutation_timeout_s, bool) or not isinstance(mutation_timeout_s, (int, float)) \
                or mutation_timeout_s <= 0:
            raise ValidationError(fields={"mutation_timeout_s": ["mutation_timeout_s must be a positive number"]})
        self.ttl_days = ttl_days
        self.mutation_timeout_s = mutation_timeout_s
        database = params.pop("database")
        self.database = ClickHouseDatabase(database, **params)
        # Read-modify-writes are serialized per record inside this store object.
        self._record_locks = [threading.RLock() for _ in range(_STRIPES)]
        self._ddl_lock = threading.Lock()

    def _check_cluster_options(self, url: str) -> None:
        problems: dict[str, list[str]] = {}
        if self.cluster is not None and (not isinstance(self.cluster, str) or not _CLUSTER_NAME.match(self.cluster)):
            problems["cluster"] = ["cluster must be the name of a cluster of the server's remote_servers "
                                   "(letters, digits, _ . -)"]
        elif self.cluster is not None and is_chdb_url(url):
            problems["cluster"] = ["cluster needs clickhouse:// servers (the in-process engine is one server)"]
        for name in ("zookeeper_path", "replica_name"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                problems[name] = [f"{name} must be a non-empty string"]
        if problems:
            raise ValidationError(fields=problems)

    # -- connections and errors ----------------------------------------------------------

    def is_connection_failure(self, exc: BaseException) -> bool:
        from clickhouse_driver import errors as ch_errors

        return isinstance(exc, (ch_errors.NetworkError, ch_errors.SocketTimeoutError,
                                ch_errors.UnexpectedPacketFromServerError, EOFError, ConnectionError, OSError)) \
            or self.login_refusal(exc) is not None or self.unreachable_shard(exc) is not None

    def unreachable_shard(self, exc: BaseException) -> str | None:
        """``host:port`` of the shard a cluster query could not reach (``exc`` is the server's
        error), else ``None``."""
        from clickhouse_driver import errors as ch_errors

        if not (self.cluster and isinstance(exc, ch_errors.ServerException) and exc.code in SHARD_UNREACHABLE_CODES):
            return None
        found = _SHARD_ADDRESS.search(getattr(exc, "message", "") or "")
        return found.group(1) if found else "unknown"

    def unavailable(self, exc: BaseException) -> BackendUnavailableError:
        shard = self.unreachable_shard(exc)
        if shard is None:
            return super().unavailable(exc)
        # The server we talk to answered; a shard of its cluster did not.
        return BackendUnavailableError(
            f"Cannot reach shard {shard} of cluster {self.cluster} through {self.display_url}: "
            f"{mask_password(driver_reason(exc).splitlines()[0])}",
            details={"url": self.display_url, "code": "SHARD_UNAVAILABLE", "shard": shard, "cluster": self.cluster})

    def login_refusal(self, exc: BaseException) -> str | None:
        from clickhouse_driver import errors as ch_errors

        # The server answers the handshake with one of these codes; once connected, a query's
        # "unknown database" is a statement error, not a refused login.
        if not (isinstance(exc, ch_errors.ServerException) and exc.code in LOGIN_REFUSED_CODES
                and self.database.is_closed()):
            return None
        return f"{driver_reason(exc)} (code {exc.code})"

    def discard_connection(self) -> None:
        # The client is unusable: drop it so the next call reconnects (and detects again).
        conn = self.database._state.conn
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - it is broken anyway
                pass
        self.database._state.reset()

    def translate_error(self, exc: BaseException) -> StorageError | None:
        from clickhouse_driver import errors as ch_errors

        if isinstance(exc, ch_errors.Error):
            code = getattr(exc, "code", None)
            reason = driver_reason(exc) or type(exc).__name__
            message = f"{reason} (code {code})" if code is not None else reason
            return StorageError(message, details={"error": type(exc).__name__, "server_code": code})
        return super().translate_error(exc)

    @property
    def server_features(self) -> ClickHouseFeatures:
        """What the connected server supports (probed once per connection; reading it connects)."""
        return self.database.features

    # -- models and DDL ------------------------------------------------------------------

    def prepare_models(self, models) -> None:
        for model in models:
            table = model._meta.clickhouse
            for name, column in table.text_columns.items():
                model._meta.add_field(name, TextField(column_name=column))
            for field in model._meta.sorted_fields:
                if field.column_name in table.not_null:
                    field.null = False
            if not table.insert_only:
                model._meta.add_field("row_version", VersionField(column_name="_version", default=0))
                model._meta.add_field("row_deleted", DeletedField(column_name="_deleted", default=0))

    def column_type(self, field: peewee.Field, table: ClickHouseTable) -> str:
        """ClickHouse type of a new column for ``field``."""
        if isinstance(field, VersionField):
            return "UInt64 DEFAULT 0"
        if isinstance(field, DeletedField):
            return "UInt8 DEFAULT 0"
        if isinstance(field, TimestampField):
            base = self.server_features.timestamp_type()
        elif isinstance(field, (peewee.BooleanField,)):
            base = "Bool" if self.server_features.bool_type else "UInt8"
        elif isinstance(field, (peewee.IntegerField, peewee.BigIntegerField)):
            base = "Int64"
        elif isinstance(field, (peewee.FloatField, peewee.DoubleField)):
            base = "Float64"
        else:
            base = "String"
        if field.null and field.column_name not in table.order_by:
            base = f"Nullable({base})"
        default = table.defaults.get(field.column_name)
        return f"{base} DEFAULT {default}" if default else base

    def _ttl_clause(self, model: type[peewee.Model], table: ClickHouseTable) -> str | None:
        if self.ttl_days is None or table.ttl_column is None:
            return None
        return f"{self.ttl_moment(model._meta.table_name, table.ttl_column)} + toIntervalDay({self.ttl_days})"

    def ttl_moment(self, table: str, column: str, *, as_stored: bool = False) -> str:
        """The moment a TTL counts from, of the timestamp ``column`` of ``table``: ``DateTime``
        (which every server with TTL takes), or with ``as_stored`` the column itself unless it
        holds epoch milliseconds (the framework's ``endedAt + toIntervalDay(N)``)."""
        column_type = self.server_features.columns.get(table, {}).get(column)
        quoted = f'"{column}"'
        if timestamp_kind(column_type, self.server_features) == "ms":
            return f"toDateTime(intDiv({quoted}, 1000))"
        return quoted if as_stored else f"toDateTime({quoted})"

    def ttl_supported(self, setting: str, tables: Sequence[str]) -> bool:
        """Whether the server has TTL; if not, one warning that ``setting`` is ignored for ``tables``."""
        if self.server_features.ttl:
            return True
        logger.warning("ClickHouse %s has no TTL support: %s is ignored for %s.",
                       ".".join(map(str, self.server_features.version)), setting, ", ".join(tables))
        return False

    def table_ttl(self, table: str) -> str | None:
        """The table's TTL expression as the server shows it (``engine_full``), or ``None``."""
        _, full = self.server_features.tables.get(self.storage_table(table), ("", ""))
        found = re.search(r"\bTTL (.+?)(?: SETTINGS .*)?$", full)
        return found.group(1) if found else None

    def reconcile_ttl(self, table: str, ttl: str | None, *, fallback: str | None = None) -> None:
        """Make ``table``'s TTL ``ttl`` (``None``: no TTL) with ``ALTER TABLE … MODIFY TTL`` or
        ``REMOVE TTL``, only when the server's differs; ``fallback`` is the expression tried when
        the server refuses ``ttl`` (a TTL on ``DateTime64``) and is accepted as already set."""
        from clickhouse_driver.errors import ServerException

        current = self.table_ttl(table)
        if ttl is None:
            if current is not None:
                self.alter_storage(table, "REMOVE TTL")
            return
        if current is not None and _same_ttl(current) in {_same_ttl(ttl), _same_ttl(fallback or ttl)}:
            return
        try:
            self.alter_storage(table, f"MODIFY TTL {ttl}")
        except ServerException:
            if fallback is None:
                raise
            self.alter_storage(table, f"MODIFY TTL {fallback}")

    def create_tables(self, models: Sequence[type[peewee.Model]]) -> None:
        connection = self.database.connection()
        self.check_cluster_tables([model._meta.table_name for model in models])
        features = self.server_features
        for model in models:
            table: ClickHouseTable = model._meta.clickhouse
            name = model._meta.table_name
            storage = self.storage_table(name)
            if storage in features.tables:
                self._check_existing(storage, features.tables[storage])
            else:
                columns = ", ".join(f'"{f.column_name}" {self.column_type(f, table)}' for f in model._meta.sorted_fields)
                partition_sql = table.partition_by
                if table.partition_by_month:
                    partition_sql = self._month_of(table.partition_by_month, features.timestamp_type())
                self.create_table(name, columns, engine='ReplacingMergeTree("_version")', order_by=table.order_by,
                                  partition_by=partition_sql, ttl=self._ttl_clause(model, table) if features.ttl else None,
                                  settings="index_granularity = 8192")
            for field in model._meta.sorted_fields:
                self.add_column(name, field.column_name, self.column_type(field, table))
            connection.refresh_schema()
            self._apply_ttl(model, table)
            self.create_distributed(name, table.shard_key or table.order_by)
        connection.refresh_schema()

    # -- the DDL of one server or of a cluster -------------------------------------------
    # Every statement that creates or changes a table goes through these.  On a cluster a table
    # is each server's replicated <table>_local under a Distributed <table>: CREATE and DROP run
    # ON CLUSTER (on every server), ALTERs on one replica of each shard.

    def storage_table(self, name: str) -> str:
        """The table holding the rows of logical table ``name``: itself, or on a cluster each
        server's ``<name>_local`` (what ``ALTER``, ``TRUNCATE``, TTLs and ``system.parts`` name)."""
        return f"{name}{LOCAL_SUFFIX}" if self.cluster else name

    def ddl_table(self, name: str) -> str:
        """``name`` quoted for DDL, with its database on a cluster (servers run ``ON CLUSTER``
        statements in their own default database)."""
        return f'"{self.database.database}"."{name}"' if self.cluster else f'"{name}"'

    @property
    def on_cluster(self) -> str:
        """`` ON CLUSTER "<name>"`` on a cluster, else nothing."""
        return f' ON CLUSTER "{self.cluster}"' if self.cluster else ""

    def execute_ddl(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run a statement of :meth:`init` or a table-wide write (``TRUNCATE``, ``ALTER``); on a
        cluster one at a time in this process (18.16's DDL queue was seen stuck by statements
        on replicated tables: :meth:`on_each_shard`)."""
        with self._ddl_lock if self.cluster else nullcontext():
            self.database.execute_sql(sql, params)

    def check_cluster_tables(self, names: Sequence[str]) -> None:
        """On a cluster, refuse (before any DDL) a logical table name held by a table of one
        server (rows written before the cluster): it is never dropped to make the ``Distributed``
        table."""
        self.database.connection().refresh_schema()
        for name in names if self.cluster else ():
            engine = self.server_features.tables.get(name, ("", ""))[0]
            if engine and engine != "Distributed":
                raise NotSupportedError(
                    f'Table "{name}" is a {engine} table; on cluster {self.cluster} "{name}" must be the Distributed '
                    f'table over "{self.storage_table(name)}": copy its rows into a database that init() lays out '
                    "for the cluster.", status="NOT_SUPPORTED", details={"table": name, "engine": engine},
                    id="STORAGE_CLICKHOUSE_INIT_NOT_SUPPORTED")

    def create_table(self, name: str, columns: str, *, engine: str, order_by: Sequence[str],
                     partition_by: str | None = None, ttl: str | None = None, settings: str | None = None) -> None:
        """``CREATE TABLE IF NOT EXISTS`` of the table holding logical table ``name``'s rows:
        ``engine`` (``ReplacingMergeTree("_version")``) or on a cluster its ``Replicated`` twin
        on every server (:meth:`create_distributed` adds the table reads and writes go through)."""
        storage = self.storage_table(name)
        if self.cluster:
            kind, _, arguments = engine.partition("(")
            path = self.zookeeper_path.replace("{database}", self.database.database).replace("{table}", name)
            replicated = [escape(path), escape(self.replica_name)]
            arguments = arguments.rstrip(")")
            engine = f"Replicated{kind}({', '.join([*replicated, *([arguments] if arguments else [])])})"
        sql = f"CREATE TABLE IF NOT EXISTS {self.ddl_table(storage)}{self.on_cluster} ({columns}) ENGINE = {engine}"
        if partition_by:
            sql += f" PARTITION BY {partition_by}"
        sql += " ORDER BY ({})".format(", ".join(f'"{column}"' for column in order_by))
        if ttl:
            sql += f" TTL {ttl}"
        if settings:
            sql += f" SETTINGS {settings}"
        self.execute_ddl(sql)
        self.database.connection().refresh_schema()

    def create_materialized_view(self, name: str, target: str, source: str, select: str) -> None:
        """A materialized view ``name`` writing into logical table ``target`` what ``select`` (a
        query with ``{source}`` where its table goes) makes of the rows inserted into logical
        table ``source``; on a cluster one per server, between the local tables (a shard's
        inserts feed its own target rows, which replication copies)."""
        query = select.replace("{source}", self.ddl_table(self.storage_table(source)))
        self.execute_ddl(f"CREATE MATERIALIZED VIEW IF NOT EXISTS {self.ddl_table(name)}{self.on_cluster} "
                         f"TO {self.ddl_table(self.storage_table(target))} AS {query}")

    def create_distributed(self, name: str, shard_key: Sequence[str]) -> None:
        """On a cluster, the ``Distributed`` table ``name`` over ``<name>_local`` sharded by the
        hash of ``shard_key``; made again when the local table has columns it lacks (18.16 cannot
        ``ALTER`` a ``Distributed`` table ``ON CLUSTER``; it holds no rows: inserts are
        synchronous).  Nothing without a cluster."""
        if not self.cluster:
            return
        columns = self.server_features.columns
        storage = self.storage_table(name)
        if name in columns and columns[name] == columns.get(storage):
            return
        if name in columns:
            self.execute_ddl(f"DROP TABLE IF EXISTS {self.ddl_table(name)}{self.on_cluster}")
        key = ", ".join(f'"{column}"' for column in shard_key)
        self.execute_ddl(
            f"CREATE TABLE IF NOT EXISTS {self.ddl_table(name)}{self.on_cluster} AS {self.ddl_table(storage)} "
            f"ENGINE = Distributed({escape(self.cluster)}, {escape(self.database.database)}, {escape(storage)}, "
            f"cityHash64({key}))")
        self.database.connection().refresh_schema()

    def add_column(self, name: str, column: str, column_type: str) -> None:
        """Add ``column`` to logical table ``name`` unless it has it (another process may add it
        at the same moment: its error is taken as done).  Call :meth:`create_distributed` after."""
        from clickhouse_driver.errors import ServerException

        if column in self.server_features.columns.get(self.storage_table(name), {}):
            return
        try:
            self.alter_storage(name, f'ADD COLUMN "{column}" {column_type}')
        except ServerException as exc:
            if exc.code not in DUPLICATE_COLUMN_CODES:
                raise

    def alter_storage(self, name: str, clause: str, params: Sequence[Any] = ()) -> None:
        """``ALTER TABLE <table holding name's rows> <clause>``; on a cluster on one replica of
        each shard (:meth:`on_each_shard`), which replicates it to the others."""
        sql = f"ALTER TABLE {self.ddl_table(self.storage_table(name))} {clause}"
        if self.cluster:
            self.on_each_shard(sql, params)
        else:
            self.execute_ddl(sql, params)

    def on_each_shard(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run ``sql`` on one replica of every shard of the cluster (the first that answers).

        Not ``ON CLUSTER``: 18.16 runs an ``ALTER`` of a replicated table through its DDL queue
        once per shard, and two replicas racing for that left the queue of one stuck ("Node
        exists" in ZooKeeper) until ``distributed_ddl_task_timeout``; its ``TRUNCATE`` on a
        replica that is not the table's leader waited on the leader, which waited on it.  A
        replicated table replicates an ``ALTER`` made on one replica by itself."""
        from clickhouse_driver import Client
        from clickhouse_driver import errors as ch_errors

        params = self.database.storable_params(sql, params)  # as execute_sql maps them
        if params:
            sql = sql % tuple(escape(p) for p in params)
        shards: dict[int, list[tuple[str, int]]] = {}
        for shard, host, port in self.database.execute_sql(
                "SELECT shard_num, host_address, port FROM system.clusters WHERE cluster = %s "
                "ORDER BY shard_num, replica_num", [self.cluster]).fetchall():
            shards.setdefault(shard, []).append((host, port))
        login = {key: self.database.connect_params[key] for key in ("user", "password")
                 if key in self.database.connect_params}
        with self._ddl_lock:
            for (host, port), *others in shards.values():
                client = Client(host=host, port=port, alt_hosts=",".join(f"{h}:{p}" for h, p in others) or None,
                                database=self.database.database, connect_timeout=10, send_receive_timeout=300,
                                **login)
                try:
                    client.execute(sql)
                except (ch_errors.NetworkError, ch_errors.SocketTimeoutError, EOFError, OSError) as exc:
                    raise BackendUnavailableError(
                        f"Cannot reach shard {host}:{port} of cluster {self.cluster} (nor its other replicas): "
                        f"{mask_password(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)}",
                        details={"url": self.display_url, "code": "SHARD_UNAVAILABLE", "shard": f"{host}:{port}",
                                 "cluster": self.cluster}) from exc
                finally:
                    client.disconnect()

    def _month_of(self, column: str, column_type: str) -> str:
        """``toYYYYMM`` of a timestamp column stored as ``column_type`` (epoch ms: via seconds)."""
        if timestamp_kind(column_type, self.server_features) == "ms":
            return f'toYYYYMM(toDateTime(intDiv("{column}", 1000)))'
        return f'toYYYYMM("{column}")'

    def _check_existing(self, name: str, engine: tuple[str, str]) -> None:
        kind, full = engine
        # Replicated…/Shared… variants (a cluster's tables, ClickHouse Cloud) read alike.
        if not kind.endswith("ReplacingMergeTree"):
            raise NotSupportedError(
                f'Table "{name}" uses engine {kind}; only ReplacingMergeTree tables can be read with FINAL.',
                status="NOT_SUPPORTED", details={"table": name, "engine": kind}, id="STORAGE_CLICKHOUSE_INIT_NOT_SUPPORTED")
        if "_version" not in full:
            logger.warning("Table %s is a %s without the _version column as its version; using it as it is.",
                           name, full)

    def _apply_ttl(self, model: type[peewee.Model], table: ClickHouseTable) -> None:
        if self.ttl_days is None or table.ttl_column is None:
            return
        if self.ttl_supported(f"ttl_days={self.ttl_days}", [model._meta.table_name]):
            self.reconcile_ttl(model._meta.table_name, self._ttl_clause(model, table))

    def clear(self, models: Sequence[type[peewee.Model]]) -> None:
        self.clear_tables([model._meta.table_name for model in models])

    def clear_tables(self, names: Sequence[str]) -> None:
        """Delete every row of these logical tables (those that exist)."""
        if not self.cluster:
            for name in names:
                self.execute_ddl(f'TRUNCATE TABLE IF EXISTS "{name}"')
            return
        # Not TRUNCATE ON CLUSTER: on 18.16 a replica that is not its table's leader hands a
        # TRUNCATE to the leader and waits, and the leader waits for that replica to apply it:
        # seen hanging until distributed_ddl_task_timeout.  A mutation needs no leader.
        # Only tables holding rows, every mutation sent before waiting for any.
        self.database.connection().refresh_schema()
        names = [name for name in names if self.storage_table(name) in self.server_features.tables
                 and self.database.execute_sql(f'SELECT count() FROM "{name}"').fetchone()[0]]
        self.mutate_side_by_side([(name, "DELETE WHERE 1", ()) for name in names], "CLEAR")

    # -- reads ---------------------------------------------------------------------------

    def select(self, model: type[peewee.Model], *fields: Any) -> peewee.ModelSelect:
        return model.select(*fields).from_(Final(model)).where(model.row_deleted == 0).dicts()

    def iterate(self, query: peewee.ModelSelect, order: Sequence[peewee.Field] | None = None, *,
                chunk_size: int = ITER_CHUNK) -> Iterator[dict[str, Any]]:
        # A server: one statement, streamed in blocks of chunk_size rows and read once.  Keyset
        # chunks (the base class) make 18.16, which cannot read in the sorting key's order and
        # stop at a LIMIT, sort every remaining row for each chunk: a scan read the table once
        # per chunk (0.07x the driver's rows/s over 200,000 messages).  The in-process engine has
        # no streaming reads and does read in order and stop: it keeps the keyset chunks.
        if self.database.client_factory is not None:
            return super().iterate(query, order, chunk_size=chunk_size)
        return self._stream(query.order_by(*(order or self.iteration_order(query.model))), chunk_size)

    def _stream(self, query: peewee.ModelSelect, chunk_size: int) -> Iterator[dict[str, Any]]:
        """The rows of ``query`` as records, streamed (``execute_iter``) on a connection of its
        own: the caller's connection stays free for the queries and writes it makes while
        iterating; the server sorts beyond :data:`ITER_SORT_BYTES` on disk, so its memory stays
        bounded too.  Closing the generator early closes the connection."""
        sql, params = self.database.get_sql_context().parse(query)
        params = self.database.storable_params(sql, params)  # mapped as execute_sql maps them
        if params:
            sql = sql % tuple(escape(param) for param in params)
        connection = None
        try:
            connection = self.database._connect()
            rows = connection.client.execute_iter(sql, with_column_types=True, settings={
                "max_block_size": chunk_size, "max_bytes_before_external_sort": ITER_SORT_BYTES})
            columns = next(rows, None)  # the first item is the columns and their types
            if columns is None:
                return
            cursor = ClickHouseCursor(connection)
            cursor.description = [(name, type_, None, None, None, None, None) for name, type_ in columns]
            reader = query._get_cursor_wrapper(cursor)
            reader.initialize()
            yield from map(row_reader(reader), rows)
        except Exception as exc:
            if self.is_connection_failure(exc):
                raise self.unavailable(exc) from exc
            raise
        finally:
            if connection is not None:
                connection.close()

    def read(self):
        return nullcontext()

    @contextmanager
    def write(self, *lock_keys: Any) -> Iterator[None]:
        # Striped in-process locks, always taken in index order so writers never deadlock.
        stripes = sorted({hash(key) % _STRIPES for key in lock_keys})
        with ExitStack() as stack:
            for index in stripes:
                stack.enter_context(self._record_locks[index])
            yield

    # -- JSON predicates -----------------------------------------------------------------
    # Current servers have JSONExtract*; 18.16 only visitParam*, which find the first occurrence
    # of a key at any depth: exact only for objects written scalars first, and only at the top.

    #: Texts other clients write for "no value" in a JSON column (README *Stored formats*).
    NO_JSON_VALUE = ("", "null", "_null_")

    def json_members_equal(self, field: Any, filters: dict[str, Any], path: str = "$", *,
                           scalars_first: bool = False) -> peewee.Node | None:
        if not filters:
            return None
        keys = path.split(".")[1:]  # "$.metadata" → ["metadata"]: JSONExtract's key arguments
        if self.server_features.json_functions:
            member = functools.partial(_json_member_equals, field, keys)
        elif scalars_first and not keys:
            member = functools.partial(_visit_param_equals, field)
        else:
            return None
        return functools.reduce(operator.and_, (member(key, value) for key, value in filters.items()))

    def json_array_contains_all(self, field: Any, values: Sequence[str]) -> peewee.Node:
        terms = []
        for value in values:
            if self.server_features.json_functions:
                # JSONExtract cannot return a Nullable array: a NULL column reads as no values.
                terms.append(peewee.fn.has(peewee.fn.JSONExtract(peewee.fn.ifNull(field, "[]"), "Array(String)"),
                                           value))
            else:
                # Exact for compact JSON: the encoded value between "[" or "," and "," or "]".
                encoded = json_dumps(value)
                terms.append(functools.reduce(operator.or_, (
                    peewee.fn.position(field, text) > 0
                    for text in (f"[{encoded},", f"[{encoded}]", f",{encoded},", f",{encoded}]"))))
        return functools.reduce(operator.and_, terms) if terms else peewee.SQL("1")

    def json_present(self, field: Any) -> peewee.Node:
        # The texts are compared as stored, not encoded as JSON like values of the column.
        return field.is_null(False) & field.not_in([peewee.Value(text, converter=str) for text in self.NO_JSON_VALUE])

    # -- writes: versions and tombstones -------------------------------------------------

    def iteration_order(self, model: type[peewee.Model]) -> list[peewee.Field]:
        # The sorting key: unique among live rows (reads deduplicate on it) and the order the
        # parts are stored in, so each chunk starts by a primary-index lookup.
        return [model._meta.fields[name] for name in self._sort_key(model)]

    def _sort_key(self, model: type[peewee.Model]) -> list[str]:
        by_column = {f.column_name: f.name for f in model._meta.sorted_fields}
        return [by_column[c] for c in model._meta.clickhouse.order_by]

    def insert_rows(self, model: type[peewee.Model], rows: Sequence[dict[str, Any]]) -> None:
        """Native block insert of complete rows (field name → Python value)."""
        if not rows:
            return
        fields = model._meta.sorted_fields
        columns = ", ".join(f'"{f.column_name}"' for f in fields)
        sql = f'INSERT INTO "{model._meta.table_name}" ({columns}) VALUES'
        self.execute_rows(sql, value_tuples(self, fields, rows, defaults=_defaults(fields)))

    def execute_rows(self, sql: str, rows: list[tuple]) -> None:
        """Native block inserts of ``rows`` (``sql`` ends with ``VALUES``), a block per
        :data:`INSERT_BLOCK` rows."""
        client = self.database.connection().client
        for start in range(0, len(rows), INSERT_BLOCK):
            client.execute(sql, rows[start:start + INSERT_BLOCK])

    def insert(self, model: type[peewee.Model], rows: Sequence[dict[str, Any]]) -> None:
        version = VERSION_CLOCK.next()
        self.insert_rows(model, [{**row, "row_version": version, "row_deleted": 0} for row in rows])

    def _row_key(self, model: type[peewee.Model]) -> list[str]:
        """The fields that place a row: its sorting key and, on a cluster, its shard key (a new
        version that changes them lands elsewhere, so the old one needs a tombstone)."""
        table: ClickHouseTable = model._meta.clickhouse
        if not self.cluster:
            return self._sort_key(model)
        by_column = {f.column_name: f.name for f in model._meta.sorted_fields}
        return list(dict.fromkeys([*self._sort_key(model), *(by_column[c] for c in table.shard_key)]))

    def _replace(self, model: type[peewee.Model], pairs: list[tuple[dict[str, Any] | None, dict[str, Any]]]) -> None:
        """Write new versions: each pair is (stored row or None, new row)."""
        sort_key = self._row_key(model)
        tombstones, fresh = [], []
        for old, new in pairs:
            above = old["row_version"] if old else 0
            if old is not None and any(old.get(k) != new.get(k) for k in sort_key):
                tombstones.append(_rewritable(model, {**old, "row_version": VERSION_CLOCK.next(above),
                                                      "row_deleted": 1}))
            fresh.append(_rewritable(model, {**new, "row_version": VERSION_CLOCK.next(above), "row_deleted": 0}))
        # One block: a reader never sees the row gone (tombstone written, new row not yet) when
        # the sort key changes (a re-saved score's createdAt).
        self.insert_rows(model, tombstones + fresh)

    def _stored(self, model: type[peewee.Model], rows: Sequence[dict[str, Any]],
                fields: Sequence[str] = ()) -> dict[tuple, dict[str, Any]]:
        """The stored rows with the keys of ``rows`` (only the named ``fields``, when given)."""
        pk = primary_key_names(model)
        selected = [model._meta.fields[name] for name in fields]
        keys = list({tuple(row[k] for k in pk) for row in rows})
        found: dict[tuple, dict[str, Any]] = {}
        first = model._meta.fields[pk[0]]
        if len(pk) > 1 and model._meta.clickhouse.order_by[0] == first.column_name:
            # The first key column leads the sorting key (spans: traceId): a short list of its
            # values lets the primary index find the rows; the exact keys are picked here, which
            # is much cheaper than sending and parsing a thousand key tuples.
            wanted = set(keys)
            for chunk in peewee.chunked(list({key[0] for key in keys}), STORED_READ_CHUNK):
                for row in self.select(model, *selected).where(first.in_(list(chunk))):
                    key = tuple(row[k] for k in pk)
                    if key in wanted:
                        found[key] = row
            return found
        # Chunks keep each query under the server's max_query_size (256 KiB by default).
        columns = ", ".join(f'"{model._meta.fields[k].column_name}"' for k in pk)
        for chunk in peewee.chunked(keys, STORED_READ_CHUNK):
            # The key list is one parameter (peewee renders a thousand tuples node by node slowly).
            condition = peewee.SQL(f"({columns}) IN %s", [list(chunk)])
            found.update((tuple(row[k] for k in pk), row) for row in self.select(model, *selected).where(condition))
        return found

    def upsert(self, model, rows, *, preserve=(), stored=None) -> None:
        pk = primary_key_names(model)
        # Complete rows of a table sorted by its key replace stored rows whole and never need a
        # tombstone: the stored key, version and kept fields suffice (a much lighter FINAL read).
        complete = bool(rows) and set(self._row_key(model)) <= set(pk) and all(
            field.name in rows[0] for field in model._meta.sorted_fields
            if field.name not in ("row_version", "row_deleted"))
        if stored is None:
            stored = self._stored(model, rows, [*pk, *preserve, "row_version"] if complete else ())
        pairs = []
        for row in rows:
            old = stored.get(tuple(row[k] for k in pk))
            new = {**old, **row} if old else row  # _replace copies it
            if old:
                new.update({name: old[name] for name in preserve})
            pairs.append((old, new))
        self._replace(model, pairs)

    def insert_if_absent(self, model, rows) -> None:
        # The caller holds the record lock, so check-then-insert does not race in this process.
        stored = self._stored(model, rows)
        pk = primary_key_names(model)
        self.insert(model, [row for row in rows if tuple(row[k] for k in pk) not in stored])

    def insert_returning(self, model, row) -> dict[str, Any]:
        # No RETURNING: read the new version back by its key.
        self.insert(model, [row])
        return self.select(model).where(*(getattr(model, name) == row[name]
                                          for name in primary_key_names(model))).get()

    def replace(self, model, stored, values) -> None:
        self._replace(model, [(stored, {**stored, **values})])

    def replace_many(self, model, changes) -> None:
        self._replace(model, [(stored, {**stored, **values}) for stored, values in changes])

    def update(self, model, where, values) -> int:
        rows = list(self.select(model).where(where))
        self._replace(model, [(row, {**row, **values}) for row in rows])
        return len(rows)

    def delete(self, model, where) -> int:
        rows = list(self.select(model).where(where))
        self.insert_rows(model, [_rewritable(model, {**row, "row_version": VERSION_CLOCK.next(row["row_version"]),
                                                     "row_deleted": 1}) for row in rows])
        return len(rows)

    def delete_bulk(self, model: type[peewee.Model], where: peewee.Expression, *, operation: str = "DELETE") -> int:
        """Remove every version of the matching rows with an awaited ``ALTER TABLE … DELETE``."""
        self.delete_bulk_each([(model, where)], operation=operation)
        return -1

    def delete_bulk_each(self, deletions: Sequence[tuple[type[peewee.Model], peewee.Expression]], *,
                         operation: str = "DELETE") -> None:
        alterations = []
        for model, where in deletions:
            table = model._meta.table_name
            sql, params = model.delete().where(where).sql()
            # ALTER … DELETE wants unqualified column names.
            condition = sql.split(" WHERE ", 1)[1].replace(f'"{table}".', "")
            alterations.append((table, f"DELETE WHERE {condition}", params))
        self.mutate_side_by_side(alterations, operation)

    def mutate_side_by_side(self, alterations: Sequence[tuple[str, str, Sequence[Any]]], operation: str) -> None:
        """``ALTER TABLE`` each ``(table, clause, params)`` (:meth:`alter_storage`), every
        mutation sent before any is awaited, so the server runs them side by side."""
        for table, clause, params in alterations:
            self.alter_storage(table, clause, params)
        for table in dict.fromkeys(table for table, _, _ in alterations):
            self.wait_for_mutations(table, operation)

    def copy_rows(self, model, key_map, values) -> None:
        # No INSERT … SELECT that could give each row its new key: read and re-insert at most
        # 1,000 rows at a time (fidelity-1.71.md §4.2), each read well under max_query_size.
        pk = model._meta.primary_key
        for chunk in chunks(list(key_map), size=STORED_READ_CHUNK, max_chars=64_000):
            self.insert(model, [{**row, **values, pk.name: key_map[row[pk.name]]}
                                for row in self.select(model).where(pk.in_(chunk))])

    def wait_for_mutations(self, table: str, operation: str) -> None:
        """Poll ``system.mutations`` until every mutation of ``table`` known now is done (on a
        cluster: on every server of it)."""
        client = self.database.connection().client
        mutations = "system.mutations"
        if self.cluster:
            mutations = f"cluster({escape(self.cluster)}, system, mutations)"
            table = self.storage_table(table)
        query = (f"SELECT DISTINCT mutation_id FROM {mutations} WHERE database = %(database)s "
                 "AND table = %(table)s AND is_done = 0")
        names = {"database": self.database.database, "table": table}
        pending = {row[0] for row in client.execute(query, names)}
        deadline = time.monotonic() + self.mutation_timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise StorageError(f"Mutations on {table} did not finish within {self.mutation_timeout_s} s",
                                   id=f"STORAGE_CLICKHOUSE_{operation}_FAILED",
                                   details={"code": "MUTATION_TIMEOUT", "mutation_ids": sorted(pending)})
            time.sleep(MUTATION_POLL_S)
            pending &= {row[0] for row in client.execute(query, names)}


def _same_ttl(expression: str) -> str:
    """A TTL expression in one spelling: no quotes or spaces, ``INTERVAL N DAY`` as the server
    shows it (``toIntervalDay(N)``)."""
    expression = re.sub(r"INTERVAL\s+(\d+)\s+DAY", r"toIntervalDay(\1)", expression, flags=re.IGNORECASE)
    return re.sub(r'["`\s]', "", expression)


def _json_member_equals(field: Any, keys: list[str], key: str, value: Any) -> peewee.Node:
    """The member ``key`` of the object at ``keys`` in ``field`` equals the scalar ``value``."""
    path = (*keys, key)
    kind = peewee.fn.JSONType(field, *path)
    has = peewee.fn.JSONHas(field, *path) == 1
    if value is None:
        return has & (kind == "Null")
    if isinstance(value, bool):
        return has & (kind == "Bool") & (peewee.fn.JSONExtractBool(field, *path) == int(value))
    if isinstance(value, str):
        return has & (kind == "String") & (peewee.fn.JSONExtractString(field, *path) == value)
    return has & kind.in_(["Int64", "UInt64", "Double"]) & (peewee.fn.JSONExtractFloat(field, *path) == value)


def _visit_param_equals(field: Any, key: str, value: Any) -> peewee.Node:
    """18.16: the top-level member ``key`` of an object written scalars first equals ``value``."""
    raw = peewee.fn.visitParamExtractRaw(field, key)
    has = peewee.fn.visitParamHas(field, key) == 1
    if value is None:
        return has & (raw == "null")
    if isinstance(value, bool):
        return has & (raw == ("true" if value else "false"))
    first = peewee.fn.substring(raw, 1, 1)
    if isinstance(value, str):
        return has & (first == '"') & (peewee.fn.visitParamExtractString(field, key) == value)
    return has & first.not_in(['"', "t", "f", "n", "{", "["]) & (peewee.fn.visitParamExtractFloat(field, key) == value)
