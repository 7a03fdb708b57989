"""PostgreSQL: a connection pool, optional schema, ``TimeZone = 'UTC'``, timestamp pairs."""

from __future__ import annotations

import functools
import itertools
import re
import select
import threading
import weakref
import zlib
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Callable, Iterator, Sequence
from urllib.parse import parse_qs, unquote, urlsplit

import peewee
from playhouse.pool import PooledPostgresqlDatabase

from ..models.fields import JSONField, TimestampField, ZonedTimestampField

from ..errors import ValidationError
from ..values import UTC, json_dumps, json_loads, to_utc, truncate_ms
from .base import ITER_CHUNK, Backend, BackendFeatures, StoredFormats, first_line, logger, row_reader, timestamp_fields

#: Seconds a call waits for a free pooled connection before failing.
POOL_WAIT_S = 30.0
#: The spellings of ``?prepared_statements=`` in a URL.
_BOOLEAN_WORDS = {"true": True, "1": True, "on": True, "yes": True, "false": False, "0": False, "off": False,
                  "no": False}
#: SQLSTATEs of a ``PREPARE`` refused for good: a parameter whose type the server cannot infer
#: (a statement the driver's literals could still run).
UNPREPARABLE = ("42P18", "42P08", "42804")
#: SQLSTATE of a ``PREPARE`` of a name the connection holds already.
DUPLICATE_PREPARED_STATEMENT = "42P05"
#: SQLSTATE of ``EXECUTE`` of a statement whose result columns changed type since it was
#: prepared ("cached plan must not change result type").
RESULT_TYPE_CHANGED = "0A000"
#: SQLSTATE of ``EXECUTE`` naming a statement this connection has not prepared.
INVALID_STATEMENT_NAME = "26000"
#: The driver's parameter marks and escaped percent signs in peewee's SQL.
_PARAM_MARK = re.compile("%[%s]")


def parse_postgres_url(url: str) -> tuple[dict[str, Any], str | None]:
    """``postgresql://user:pass@host:port/db?schema_name=app`` → (connect kwargs, schema); a
    ``prepared_statements`` parameter comes back among the kwargs as a bool."""
    if not isinstance(url, str) or not url.startswith(("postgresql://", "postgres://")):
        raise ValidationError(fields={"connection_string": ["connection_string must be a postgresql:// URL"]})
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    schema = query.pop("schema_name", None)
    query.pop("layout", None)  # the observability domain's table layout, not a connection option
    if "prepared_statements" in query:
        text = query.pop("prepared_statements").lower()
        if text not in _BOOLEAN_WORDS:
            raise ValidationError(fields={"connection_string": ["prepared_statements must be true or false"]})
        query["prepared_statements"] = _BOOLEAN_WORDS[text]
    kwargs: dict[str, Any] = {"database": unquote(parts.path.lstrip("/")) or "postgres"}
    if parts.hostname:
        kwargs["host"] = parts.hostname
    try:
        port = parts.port
    except ValueError:  # urllib's "Port could not be cast to integer value"
        raise ValidationError(fields={"connection_string": ["connection_string has an invalid port"]}) from None
    if port:
        kwargs["port"] = port
    if parts.username:
        kwargs["user"] = unquote(parts.username)
    if parts.password:
        kwargs["password"] = unquote(parts.password)
    kwargs.update(query)  # e.g. sslmode, connect_timeout
    return kwargs, schema


def _naive_utc(value: Any) -> datetime:
    return to_utc(value).replace(tzinfo=None)


def _decode_jsonb(text: str | None, cursor: Any) -> Any:
    """A ``jsonb`` value as psycopg2 hands it to its typecaster, decoded by the C scanner
    (:func:`json_loads`) instead of ``json.loads``' Python layers: a scan decodes several per row."""
    return None if text is None else json_loads(text)


@functools.cache
def _jsonb_typecaster() -> Any:
    """The typecaster of :func:`_decode_jsonb` for ``jsonb`` (its fixed OID), made once."""
    import psycopg2.extensions
    return psycopg2.extensions.new_type((3802,), "COMPOSITE_STORE_JSONB", _decode_jsonb)


def _register_jsonb(conn: Any) -> None:
    # psycopg2 is imported here, not with this module: a missing driver is reported where it is needed.
    import psycopg2.extensions
    psycopg2.extensions.register_type(_jsonb_typecaster(), conn)


def _utc_timestamp(value: Any) -> Any:
    """A fetched timestamp (naive UTC, or zoned) as an aware UTC datetime with millisecond precision."""
    if isinstance(value, datetime):
        return truncate_ms(value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC))
    return value


class PostgresDatabase(StoredFormats, PooledPostgresqlDatabase):
    """peewee's pooled PostgreSQL database with this library's stored formats."""

    strips_nul = True  # neither text nor jsonb holds U+0000

    # Extends (not replaces) peewee's PostgreSQL types, so booleans stay BOOLEAN and doubles DOUBLE PRECISION.
    field_types = {**PooledPostgresqlDatabase.field_types, "TIMESTAMP": "TIMESTAMP", "TIMESTAMPTZ": "TIMESTAMPTZ",
                   "JSON": "JSONB"}

    def _is_closed(self, conn: Any) -> bool:
        # No ping (peewee's SELECT 1 on every connection it takes from the pool, a round trip per
        # call).  A pooled connection is idle with nothing to read: a server that stopped or
        # restarted has left its goodbye (or EOF) on the socket, and such a connection is
        # dropped here; one that died silently fails its first statement, which then runs once
        # more on a new connection (:meth:`retrying`).
        if not conn.closed and conn.info.transaction_status == self._adapter.txn_idle:
            poller = select.poll()
            poller.register(conn.fileno(), select.POLLIN)
            if not poller.poll(0):
                return False
        self._close_raw(conn)
        return True

    def __init__(self, *args: Any, prepared_statements: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Whether :meth:`execute_prepared` plans statements once per connection (off behind a
        #: pooler that hands each statement to another server connection).
        self.prepared_statements = prepared_statements
        #: SQL → its server-side name (the same on every connection) and ``EXECUTE`` text;
        #: ``None`` once the server refused to prepare it.
        self._statements: dict[str, tuple[str, str] | None] = {}
        #: Connection → the names prepared on it (a connection that is gone takes its set along).
        self._prepared_on: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()
        self._names_lock = threading.Lock()

    def execute_prepared(self, sql: str, params: Sequence[Any] | None) -> Any:
        # PREPARE once per connection, then EXECUTE: the server skips parsing and, after a few
        # runs, planning, which for the data-modifying CTEs of the writes costs more than running
        # them.  Only outside a transaction, the single-statement calls: there an EXECUTE whose
        # statement the connection lost (a reconnect, DEALLOCATE or DISCARD by a pooler) fails
        # alone and is prepared again; inside one it would end the transaction.
        if not self.prepared_statements or not params or self.in_transaction():
            return self.execute_storable(sql, params)
        try:
            statement = self._statements[sql]
        except KeyError:
            with self._names_lock:
                name = f"composite_store_{len(self._statements)}"
                call = f"EXECUTE {name}({', '.join(['%s'] * len(params))})"
                statement = self._statements.setdefault(sql, (name, call))
        if statement is None:  # the server refused it once: plain from then on
            return self.execute_storable(sql, params)
        name, call = statement
        prepared = self._prepared_on.get(self.connection())
        if prepared is not None and name in prepared:
            try:
                return self.execute_storable(call, params)
            except peewee.DatabaseError as exc:
                code = getattr(exc.__context__, "pgcode", None)
                if code == INVALID_STATEMENT_NAME:
                    # Lost with the others (or a new connection replaced a dead one): prepare anew.
                    self._prepared_on.pop(self.connection(), None)
                elif code == RESULT_TYPE_CHANGED:  # a column of its result changed type (ALTER TABLE)
                    self.execute_storable(f"DEALLOCATE {name}", None)
                    prepared.discard(name)
                else:
                    raise
        if not self._prepare(sql, name):
            return self.execute_storable(sql, params)
        return self.execute_storable(call, params)

    def _prepare(self, sql: str, name: str) -> bool:
        """``PREPARE`` ``sql`` as ``name`` on this thread's connection; ``False`` when the
        server refuses it (a parameter whose type it cannot infer)."""
        numbers = itertools.count(1)
        text = _PARAM_MARK.sub(lambda mark: "%" if mark.group() == "%%" else f"${next(numbers)}", sql)
        try:
            self.execute_storable(f"PREPARE {name} AS {text}", None)
        except peewee.DatabaseError as exc:
            code = getattr(exc.__context__, "pgcode", None)
            if code != DUPLICATE_PREPARED_STATEMENT:  # (else only others were lost: this one is there)
                if self.is_closed() or self.connection().closed:
                    raise
                logger.debug("PostgreSQL did not prepare %s: %s", name, first_line(exc))
                if code in UNPREPARABLE:
                    self._statements[sql] = None
                return False
        self._prepared_on.setdefault(self.connection(), set()).add(name)
        return True

    def _connect(self) -> Any:
        conn = super()._connect()
        _register_jsonb(conn)  # per connection: an application's own psycopg2 connections keep theirs
        # A connection from the pool (or a new one) that has not run a statement yet.
        self._state.unproven = conn
        return conn

    def retrying(self, run: Callable[[], Any]) -> Any:
        """``run()``, which sends one statement; when it is the first statement on a connection
        just taken from the pool and fails because that connection is dead, the connection is
        dropped and ``run()`` runs once more on a new one (the dead one never delivered it)."""
        state = self._state
        if getattr(state, "unproven", None) is not state.conn:
            return run()
        try:
            result = run()
        except Exception as exc:  # peewee's errors, or the driver's (execute_values)
            if state.conn is None or not state.conn.closed:
                raise
            logger.debug("A pooled connection to PostgreSQL was dead (%s); running the statement on a new one",
                         first_line(exc))
            self.manual_close()
            self.connect()
            state.unproven = None  # once
            return run()
        state.unproven = None
        return result

    def _execute_cursor(self, sql: str, params: Any, **options: Any) -> Any:
        return self.retrying(lambda: super(PostgresDatabase, self)._execute_cursor(sql, params, **options))

    def begin(self, *args: Any, **kwargs: Any) -> None:
        self.retrying(lambda: super(PostgresDatabase, self).begin(*args, **kwargs))

    def timestamp_to_db(self, field: peewee.Field, value: Any) -> Any:
        return to_utc(value).replace(tzinfo=None)

    def timestamp_converter(self, field: peewee.Field) -> Callable[[Any], Any]:
        return _naive_utc

    def timestamp_from_db(self, field: peewee.Field, value: Any) -> Any:
        return _utc_timestamp(value)

    def zoned_timestamp_to_db(self, field: peewee.Field, value: Any) -> Any:
        return to_utc(value)

    zoned_timestamp_from_db = timestamp_from_db

    def value_reader(self, field: peewee.Field) -> Callable[[Any], Any] | None:
        # What the fields' python_values end in (both map None to None, as these do), without
        # their layers: a score page converts ten values per row.
        python_value = type(field).python_value
        if python_value in (TimestampField.python_value, ZonedTimestampField.python_value):
            return _utc_timestamp
        if python_value is JSONField.python_value:
            return json_loads
        return None

    def json_to_db(self, field: peewee.Field, value: Any) -> Any:
        return json_dumps(value)

    def json_from_db(self, field: peewee.Field, value: Any) -> Any:
        return json_loads(value)


class PostgresBackend(Backend):
    """A PostgreSQL database reached through a pool of ``max_connections`` connections."""

    name = "PG"
    features = BackendFeatures(strips_nul=PostgresDatabase.strips_nul, returning=True, json_object_merge=True,
                               deep_offset_by_key=True,
                               row_versions=True)
    driver_module = "psycopg2"
    driver_extra = "postgres"

    def __init__(self, *, connection_string: str, schema_name: str | None = None,
                 max_connections: int = 10, prepared_statements: bool | None = None) -> None:
        super().__init__(connection_string)
        kwargs, url_schema = parse_postgres_url(connection_string)
        url_prepared = kwargs.pop("prepared_statements", True)
        if prepared_statements is not None and not isinstance(prepared_statements, bool):
            raise ValidationError(fields={"prepared_statements": ["prepared_statements must be true or false"]})
        schema_name = schema_name or url_schema
        if schema_name is not None and (not isinstance(schema_name, str) or not schema_name):
            raise ValidationError(fields={"schema_name": ["schema_name must be a non-empty string"]})
        if isinstance(max_connections, bool) or not isinstance(max_connections, int) or max_connections < 1:
            raise ValidationError(fields={"max_connections": ["max_connections must be a positive integer"]})
        self.schema_name = schema_name if schema_name and schema_name != "public" else None
        kwargs.setdefault("connect_timeout", 10)
        options = kwargs.pop("options", "")
        self.database = PostgresDatabase(kwargs.pop("database"), max_connections=max_connections,
                                         timeout=POOL_WAIT_S, stale_timeout=300,
                                         prepared_statements=url_prepared if prepared_statements is None
                                         else prepared_statements,
                                         options=f"{options} -c TimeZone=UTC".strip(), **kwargs)
        self._schema_lock = threading.Lock()
        #: :meth:`execute_rows`' statement of many rows → its statement of one.
        self._one_row_statements: dict[str, str] = {}

    def is_connection_failure(self, exc: BaseException) -> bool:
        if not isinstance(exc, (peewee.OperationalError, peewee.InterfaceError)):
            return False
        conn = self.database._state.conn
        return conn is None or getattr(conn, "closed", 0) != 0

    def login_refusal(self, exc: BaseException) -> str | None:
        # libpq reports what the server answered as "FATAL:  database "x" does not exist" (also
        # role, password, pg_hba); a failure to reach the server has no FATAL part.  With several
        # addresses for one host the answer may follow a refused address, so the whole text counts.
        text = str(exc)
        if "FATAL:" not in text:
            return None
        return text.split("FATAL:", 1)[1].strip().splitlines()[0]

    def discard_connection(self) -> None:
        # A broken connection must not go back to the pool.
        try:
            self.database.manual_close()
        except Exception:  # noqa: BLE001 - it is broken anyway
            self.database._state.reset()

    def release_connection(self) -> None:
        # Each call returns its pooled connection when it ends, so idle threads pin no slot.
        if not self.database.is_closed() and not self.database.in_transaction():
            self.database.close()

    def close(self) -> None:
        self.database.close_all()

    # -- models and DDL ------------------------------------------------------------------

    def prepare_models(self, models) -> None:
        for model in models:
            if self.schema_name:
                model._meta.schema = self.schema_name
            for field in timestamp_fields(model):
                zoned = ZonedTimestampField(plain=field, column_name=f"{field.column_name}Z")
                model._meta.add_field(f"{field.name}_z", zoned)
                field.zoned = zoned

    @contextmanager
    def ddl(self) -> Iterator[None]:
        with self.database.atomic():
            # Processes starting together must not race on DDL (PostgreSQL fails even with
            # IF NOT EXISTS), so init holds a transaction-level advisory lock.
            self.database.execute_sql("SELECT pg_advisory_xact_lock(%s)",
                                      (zlib.crc32(f"composite-store:{self.schema_name}".encode()),))
            if self.schema_name:
                self.database.execute_sql(f'CREATE SCHEMA IF NOT EXISTS "{self.schema_name}"')
            yield

    def key_constraint(self, key: Any) -> str:
        columns = ", ".join(f'"{column}"' for column in key.columns)
        kind = "PRIMARY KEY" if key.primary else "UNIQUE"
        return f'CONSTRAINT "{key.name.format(schema=self.schema_name or "public")}" {kind} ({columns})'

    def add_key(self, model: type[peewee.Model], key: Any) -> None:
        self.database.execute_sql(f"ALTER TABLE {self.table_sql(model)} ADD {self.key_constraint(key)}")
        self.key_added(model, key)

    def key_added(self, model: type[peewee.Model], key: Any) -> None:
        if key.replica_identity:
            name = key.name.format(schema=self.schema_name or "public")
            self.database.execute_sql(f'ALTER TABLE {self.table_sql(model)} REPLICA IDENTITY USING INDEX "{name}"')

    def create_tables(self, models: Sequence[type[peewee.Model]]) -> None:
        with self.ddl():
            schema = self.schema_name or "public"
            for model in models:
                table = model._meta.table_name
                self.create_table(model)
                existing = {column.name for column in self.database.get_columns(table, schema)}
                for field in model._meta.sorted_fields:
                    if field.column_name not in existing:
                        ddl = self.database._field_types.get(field.field_type, field.field_type)
                        self.database.execute_sql(f'ALTER TABLE "{schema}"."{table}" ADD COLUMN IF NOT EXISTS '
                                                  f'"{field.column_name}" {ddl}')
                        if isinstance(field, ZonedTimestampField):
                            # Set the default only now: ADD COLUMN … DEFAULT now() would stamp existing
                            # rows with the time of this ALTER, which reads would prefer to their own.
                            self.database.execute_sql(f'ALTER TABLE "{schema}"."{table}" ALTER COLUMN '
                                                      f'"{field.column_name}" SET DEFAULT now()')
                for index in getattr(model._meta, "postgres_indexes", ()):
                    name = f"{self.schema_name}_{index.name}" if self.schema_name and index.schema_prefixed else index.name
                    unique = "UNIQUE " if index.unique else ""
                    using = f" USING {index.method}" if index.method else ""
                    self.create_index(index, f'CREATE {unique}INDEX IF NOT EXISTS "{name}" '
                                             f'ON "{schema}"."{table}"{using} ({index.columns})'
                                             + (f" INCLUDE ({index.include})" if index.include else "")
                                             + (f" WHERE {index.where}" if index.where else ""))
                for name in getattr(model._meta, "dropped_indexes", ()):
                    name = f"{self.schema_name}_{name}" if self.schema_name else name
                    self.database.execute_sql(f'DROP INDEX IF EXISTS "{schema}"."{name}"')

    # -- reads and locks -----------------------------------------------------------------

    def as_records(self, query: Any, model: type[peewee.Model], fields: Sequence[Any] = ()) -> Any:
        zoned = [f for f in timestamp_fields(model) if not fields or any(f is g for g in fields)]
        return query.objects(lambda **row: _prefer_zoned(row, zoned))

    @contextmanager
    def bitmap_scans(self, enabled: bool) -> Iterator[None]:
        # A filtered count needs no row order: with plain index scans off (for this statement,
        # inside the read transaction) bitmap scans combine the filters' indexes and visit each
        # table page once, where the planner would otherwise walk an index correlated with the
        # table order (trace roots by start time) and fetch every row it lists: 10x slower at
        # 1M spans.  (The switch also disables index-only scans, hence only when asked.)
        if not enabled:
            yield
            return
        self.database.execute_sql("SET LOCAL enable_indexscan = off")
        yield
        self.database.execute_sql("SET LOCAL enable_indexscan = on")

    def iterate(self, query: peewee.ModelSelect, order: Sequence[peewee.Field] | None = None, *,
                chunk_size: int = ITER_CHUNK) -> Iterator[dict[str, Any]]:
        # One statement read through a named (server-side) cursor, chunk_size rows per round
        # trip: the server keeps the position, so nothing is re-planned or re-scanned per chunk.
        # It runs on a connection of its own from the pool, in a read-only transaction of its
        # own: writes the caller makes while iterating go through its usual connection and
        # commit as they always do.  Closing the generator early returns the connection.
        order = list(order or self.iteration_order(query.model))
        sql, params = self.database.get_sql_context().parse(query.order_by(*order))
        params = self.database.storable_params(sql, params)
        conn = self._iteration_connection()
        try:
            conn.autocommit = False  # a named cursor lives inside a transaction
            conn.set_session(readonly=True)
            with conn.cursor(name=f"composite_store_iter_{next(_cursor_numbers)}") as cursor:
                cursor.itersize = chunk_size
                cursor.execute(sql, params)
                reader = None
                while rows := cursor.fetchmany(chunk_size):
                    if reader is None:
                        reader = query._get_cursor_wrapper(cursor)
                        reader.initialize()
                        process = row_reader(reader)
                    yield from map(process, rows)
                    del rows
            conn.rollback()
        except Exception as exc:
            if self.is_connection_failure(exc) or getattr(conn, "closed", 0):
                self.database._close(conn, close_conn=True)
                conn = None
                raise self.unavailable(exc) from exc
            raise
        finally:
            if conn is not None:
                self._return_iteration_connection(conn)

    def _iteration_connection(self) -> Any:
        """A pooled connection outside this thread's peewee state (:meth:`iterate`)."""
        try:
            conn = self.database._connect()
        except Exception as exc:
            if isinstance(exc, peewee.PeeweeException) or type(exc).__module__.startswith("psycopg2"):
                raise self.unavailable(exc) from exc
            raise
        if self.database.server_version is None:
            self.database._set_server_version(conn)
        return conn

    def _return_iteration_connection(self, conn: Any) -> None:
        try:
            if not conn.closed:
                conn.rollback()  # also ends a transaction a generator closed mid-chunk left open
                conn.set_session(readonly=False)
                conn.autocommit = True  # as peewee hands connections out
        except Exception:  # noqa: BLE001 - a broken connection is dropped below
            self.database._close(conn, close_conn=True)
            return
        self.database._close(conn, close_conn=bool(conn.closed))

    def for_update(self, query: peewee.ModelSelect) -> peewee.ModelSelect:
        return query.for_update()

    def array_param(self, field: peewee.Field, name: str) -> peewee.Node:
        """The :meth:`param` ``name`` bound to a list of ``field``'s driver values, as an array
        of the field's column type (for ``unnest`` and ``= ANY``): a batch travels as one
        parameter per column, in one statement text for every batch size."""
        return peewee.Cast(self.param(name), f"{self._column_type(field)}[]")

    def typed_param(self, field: peewee.Field, name: str) -> peewee.Node:
        """The :meth:`param` ``name`` bound to one of ``field``'s driver values, cast to the
        field's column type (where nothing around it tells a prepared statement its type)."""
        return peewee.Cast(self.param(name), self._column_type(field))

    def _column_type(self, field: peewee.Field) -> str:
        return self.database._field_types.get(field.field_type, field.field_type)

    def json_as_text(self, column: Any) -> Any:
        return peewee.Cast(column, "text")

    def json_text(self, column: Any) -> Any:
        return peewee.Cast(column, "text")

    def json_members_equal(self, field: Any, filters: dict[str, Any], path: str = "$", *,
                           scalars_first: bool = False) -> peewee.Node | None:
        if not filters or path != "$":
            return None  # only jsonb columns filter in SQL; JSON held in text columns is filtered in Python
        # Cleaned as stored values are: JSON text escapes U+0000, which jsonb refuses to parse.
        filters = self.clean(filters)
        # Filter values are scalars (validation.check_metadata_filter): containment of
        # {key: scalar} is the type-aware equality of that top-level member (a nested array never
        # contains a bare scalar), and a GIN index on the column serves it.
        return _contains(field, dict(filters))

    def json_array_contains_all(self, field: Any, values: Sequence[str]) -> peewee.Node:
        # A top-level array contains the array of the wanted strings; a GIN index serves it.
        return _contains(field, self.clean(list(values)))  # U+0000 removed, as json_members_equal

    def json_present(self, field: Any) -> peewee.Node:
        return field.is_null(False) & (field != peewee.Cast(peewee.Value("null", converter=str), "jsonb"))

    def row_version(self, model: type[peewee.Model]) -> peewee.Node:
        # The transaction that wrote the row's current version: new on every UPDATE.  Compared
        # as text (the driver reads the xid type as a string).
        return peewee.SQL("xmin::text")

    def json_object_merge(self, field: Any, members: peewee.Node) -> peewee.Node:
        # jsonb's || on two objects is the shallow merge, the right side winning.
        stored = peewee.Case(None, [(peewee.fn.jsonb_typeof(field) == "object", field)],
                             peewee.Cast(peewee.Value("{}", converter=str), "jsonb"))
        return peewee.Expression(stored, "||", peewee.Cast(members, "jsonb"))

    def table_sql(self, model) -> str:
        schema = f'"{self.schema_name}".' if self.schema_name else ""
        return f'{schema}"{model._meta.table_name}"'

    def row_placeholder(self, count: int) -> str:
        return "%s"  # execute_values expands it to many rows

    def execute_rows(self, sql: str, rows: list[tuple]) -> None:
        from psycopg2.extras import execute_values

        if len(rows) == 1:  # one row (save_score): a statement of its own, planned once per connection
            one_row = self._one_row_statements.get(sql)
            if one_row is None:
                marks = ", ".join(["%s"] * len(rows[0]))
                one_row = self._one_row_statements[sql] = sql.replace(" VALUES %s", f" VALUES ({marks})", 1)
            self.database.execute_prepared(one_row, rows[0])
            return

        def send() -> None:
            execute_values(self.database.cursor(), sql, rows, page_size=1000)

        if len(rows) <= 1000:  # one statement, which may run again on a new connection (retrying)
            self.database.retrying(send)
        else:
            send()

    def prepare_rows(self, model, rows):
        # Every timestamp is written into both columns of its pair, from the same instant.
        return _with_zoned(model, rows)


#: Names of named cursors: unique within the process (one connection never holds two at once,
#: but a name must not repeat within a transaction either).
_cursor_numbers = itertools.count(1)


def _with_zoned(model: type[peewee.Model], rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    names = [f.name for f in timestamp_fields(model)]
    out = []
    for row in rows:
        row = dict(row)
        for name in names:
            if name in row:
                row[f"{name}_z"] = row[name]
        out.append(row)
    return out


def _prefer_zoned(row: dict[str, Any], fields: list[TimestampField]) -> dict[str, Any]:
    for field in fields:
        zoned = row.pop(f"{field.name}_z", None)
        if row.get(field.name) is not None and zoned is not None:
            row[field.name] = zoned
    return row


def _contains(field: Any, value: Any) -> peewee.Node:
    """``field @> value::jsonb``, the JSON text bound as a parameter."""
    return peewee.Expression(field, "@>", peewee.Cast(peewee.Value(json_dumps(value), converter=str), "jsonb"))
