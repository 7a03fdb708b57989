"""What every backend shares: connection scoping, error translation, the SQL write primitives."""

from __future__ import annotations

import contextvars
import functools
import importlib
import itertools
import logging
import operator
import re
import threading
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterable, Iterator, Sequence

import peewee

from ..models.fields import JSONField, TextField, TimestampField, ZonedTimestampField

from ..errors import BackendUnavailableError, ConflictError, StorageError
from ..values import ID_CHUNK, JSONText, chunks, clean_text, is_storable_text

logger = logging.getLogger("composite_store")

#: Rows per multi-row INSERT on SQLite and PostgreSQL.
CHUNK_SIZE = 500

#: Rows per chunk of :meth:`Backend.iterate`: large enough that a chunk's statement costs little
#: per row, small enough that a chunk of big rows (spans) stays a few MiB.
ITER_CHUNK = 2000


def mask_password(url: str) -> str:
    """``scheme://user:secret@host`` → ``scheme://user:***@host``."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text (its class name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def require_driver(module: str, *, extra: str) -> None:
    """Import a backend's driver, or raise one :class:`StorageError` naming the extra that installs it.

    The import error is left out of the chain (its text is in the message): a missing package
    needs an install command, not three tracebacks.
    """
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise StorageError(f"The {module} package cannot be imported ({exc}); install it with: "
                           f"pip install 'composite-store[{extra}]'",
                           details={"code": "DRIVER_MISSING", "driver": module, "extra": extra}) from None


#: Whether the running repository call belongs to a domain that refuses text the databases cannot
#: hold (agents, datasets, experiments) instead of stripping it (:func:`rejecting_unstorable_text`).
_rejecting = contextvars.ContextVar("rejecting_unstorable_text", default=False)


class UnstorableText(Exception):
    """Raised by a statement's parameters holding U+0000 or an unpaired surrogate inside
    :func:`rejecting_unstorable_text`; ``@operation`` turns it into a validation error naming the
    arguments that hold such text."""


@contextmanager
def rejecting_unstorable_text() -> Iterator[None]:
    """Inside this, a statement whose parameters hold U+0000 or an unpaired surrogate raises
    :class:`UnstorableText` instead of having them removed."""
    token = _rejecting.set(True)
    try:
        yield
    finally:
        _rejecting.reset(token)


#: The statement logs of the running :meth:`Backend.counting_statements` blocks (innermost last).
_statement_logs: contextvars.ContextVar[tuple["StatementLog", ...]] = contextvars.ContextVar(
    "statement_logs", default=())


class StatementLog:
    """The statements one :meth:`Backend.counting_statements` block sent, in order.

    ``statements`` holds each statement's SQL text (``BEGIN``, ``COMMIT`` and ``SAVEPOINT``
    included); ``count`` is their number.  A batch sent with the driver's ``executemany`` counts
    once; ``execute_values`` counts once per page it sends.
    """

    def __init__(self) -> None:
        self.statements: list[str] = []

    @property
    def count(self) -> int:
        """How many statements were sent."""
        return len(self.statements)

    def __repr__(self) -> str:
        return f"StatementLog({self.statements!r})"


class _CountingCursor:
    """A driver cursor that adds each statement it runs to the open :class:`StatementLog` logs."""

    __slots__ = ("_cursor", "_logs")

    def __init__(self, cursor: Any, logs: tuple[StatementLog, ...]) -> None:
        self._cursor = cursor
        self._logs = logs

    def _record(self, sql: Any) -> None:
        text = sql.decode() if isinstance(sql, bytes) else str(sql)
        for log in self._logs:
            log.statements.append(text)

    def execute(self, sql: Any, params: Any = ()) -> Any:
        self._record(sql)
        return self._cursor.execute(sql, params)

    def executemany(self, sql: Any, rows: Any) -> Any:
        self._record(sql)
        return self._cursor.executemany(sql, rows)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._cursor)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


class _CallScope:
    """:meth:`Backend.connection` as a plain object: every call enters it, and a generator-based
    context manager costs it a few microseconds more, a tenth of a SQLite statement's time."""

    __slots__ = ("backend", "opened_here")

    def __init__(self, backend: "Backend") -> None:
        self.backend = backend

    def __enter__(self) -> None:
        self.opened_here = self.backend.database.is_closed()

    def __exit__(self, exc_type: Any, exc: BaseException | None, traceback: Any) -> None:
        backend = self.backend
        try:
            if (isinstance(exc, Exception) and not isinstance(exc, StorageError)
                    and backend.is_connection_failure(exc)):
                backend.discard_connection()
                logger.debug("Connecting to %s failed: %s: %s", backend.display_url, type(exc).__name__,
                             mask_password(first_line(exc)))
                raise backend.unavailable(exc) from exc
        finally:
            if self.opened_here:
                backend.release_connection()


class StoredFormats:
    """How values look in one database: the conversions the field types of :mod:`models.fields`
    ask of the bound peewee ``Database`` (each backend's ``Database`` implements them)."""

    #: Whether text loses U+0000 before it reaches the database (PostgreSQL cannot hold it).
    strips_nul = False

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        """peewee's cursor; inside :meth:`Backend.counting_statements`, one that logs what it runs."""
        cursor = super().cursor(*args, **kwargs)
        logs = _statement_logs.get()
        return _CountingCursor(cursor, logs) if logs else cursor

    def execute_sql(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        """Run one statement.  Its string parameters are mapped as every write maps stored text
        (README *Characters that cannot be stored*): an id or filter value holding U+0000 or an
        unpaired surrogate finds what the write stored instead of failing in the driver; in a
        call of a domain that refuses such text, :class:`UnstorableText` is raised instead.
        (Bulk writes bind their rows without this: the domains have cleaned them already.)"""
        return self.execute_storable(sql, self.storable_params(sql, params))

    def execute_storable(self, sql: str, params: Sequence[Any] | None) -> Any:
        """:meth:`execute_sql` of parameters that :meth:`storable_params` has mapped already."""
        return super().execute_sql(sql, params)

    def execute_prepared(self, sql: str, params: Sequence[Any] | None) -> Any:
        """:meth:`execute_storable` of a statement that runs again and again (a
        :class:`PreparedQuery`'s): PostgreSQL plans it once per connection."""
        return self.execute_storable(sql, params)

    def storable_params(self, sql: str, params: Sequence[Any] | None) -> Sequence[Any] | None:
        """``params`` of ``sql`` with their strings mapped as :meth:`execute_sql` maps them (for
        a statement run on a cursor of its own)."""
        if params:
            rejecting = _rejecting.get()
            strips_nul = self.strips_nul or rejecting
            # Most parameters are ASCII text without U+0000: all of it decided at once, in C.
            texts = "".join([p for p in params if type(p) is str])
            if texts.isascii() and "\x00" not in texts:
                return params
            if all(type(p) is not str or is_storable_text(p, strips_nul) for p in params):
                return params
            if rejecting:
                raise UnstorableText(sql)
            params = [clean_text(p, strip_nul=strips_nul) if type(p) is str else p for p in params]
        return params

    def timestamp_to_db(self, field: peewee.Field, value: Any) -> Any:
        """An aware datetime (or ISO text) as this database stores ``field``."""
        raise NotImplementedError

    def value_reader(self, field: peewee.Field) -> Callable[[Any], Any] | None:
        """A function doing exactly what ``field.python_value`` does to a fetched value, in one
        call instead of the field's, the model's database proxy's and this database's (a point
        read converts a handful of values, and those layers cost more than the conversion);
        ``None``: use ``python_value``."""
        return None

    def timestamp_converter(self, field: peewee.Field) -> Any:
        """A function converting many values of ``field`` (bulk writes pick it once per call)."""
        return functools.partial(self.timestamp_to_db, field)

    def timestamp_from_db(self, field: peewee.Field, value: Any) -> Any:
        """A stored timestamp as an aware UTC datetime with millisecond precision."""
        raise NotImplementedError

    def json_to_db(self, field: peewee.Field, value: Any) -> Any:
        """A JSON value as this database stores it (compact text, or text cast to ``jsonb``)."""
        raise NotImplementedError

    def json_from_db(self, field: peewee.Field, value: Any) -> Any:
        """A stored JSON value decoded (text that does not parse comes back as the raw string)."""
        raise NotImplementedError


@dataclass(kw_only=True)
class BackendFeatures:
    """What a database can do, for the code that is generic over backends (Django's
    ``connection.features``): a domain module asks these flags, never which database it runs on.

    SQLite and PostgreSQL declare theirs; ClickHouse's extend them with what is probed from the
    server (:class:`~composite_store.backends.clickhouse.ClickHouseFeatures`).
    """

    #: Read-modify-write operations are atomic across concurrent callers (Mastra's
    #: ``supportsConcurrentUpdates``); without it they are serialized by in-process locks only.
    concurrent_updates: bool = True
    #: Strings lose U+0000 before they are written (PostgreSQL's text and jsonb cannot hold it).
    strips_nul: bool = False
    #: JSON objects are stored with their top-level scalar members first, so that a server
    #: whose only JSON functions find the first occurrence of a key (ClickHouse 18.16's
    #: ``visitParam*``) finds the top-level one.
    json_scalars_first: bool = False
    #: ``INSERT … ON CONFLICT … RETURNING`` and ``UPDATE … RETURNING`` (:meth:`Backend.upsert_returning`,
    #: :meth:`Backend.update_returning`): a write reports what it changed, so a read-modify-write
    #: needs no read of its own.
    returning: bool = False
    #: :meth:`Backend.json_object_merge`: an ``UPDATE`` merges members into a stored JSON object
    #: (PostgreSQL's ``jsonb ||``; SQLite's ``json_patch`` for the members
    #: :meth:`Backend.merges_json_members` accepts), so merging needs no read first.
    json_object_merge: bool = False
    #: Every write of a row gives it a new :meth:`Backend.row_version` (PostgreSQL's ``xmin``):
    #: a read-modify-write may read without a lock and write only if the row is unchanged.
    row_versions: bool = False
    #: A list page can read its total in the same statement as its rows (a scalar subquery
    #: counting the filter's rows; :func:`~composite_store.base.fetch_page`).
    total_in_page: bool = True
    #: A page far from the start is cheaper read as the keys the offset lands on (skipped in the
    #: index alone), then their rows: PostgreSQL fetches every skipped row otherwise.
    deep_offset_by_key: bool = False


class Backend:
    """One configured database.

    A backend owns the peewee ``Database`` (``self.database``) and offers the handful of
    operations whose SQL differs between databases.  Domain repositories are written against
    these methods, so they read the same on every database.
    """

    #: ``SQLITE``, ``PG`` or ``CLICKHOUSE``: the backend part of error ids.
    name = ""
    #: What this database can do (ClickHouse: probed from the server, per connection).
    features = BackendFeatures()

    #: The driver module this backend needs and the ``pip install 'composite-store[<extra>]'``
    #: extra that provides it (empty: the standard library has it).
    driver_module = ""
    driver_extra = ""

    def __init__(self, display_url: str) -> None:
        if self.driver_module:
            require_driver(self.driver_module, extra=self.driver_extra)
        self.display_url = mask_password(display_url)
        self._init_lock = threading.Lock()
        self._initialized: set[str] = set()
        self._closed = False
        self._prepared: dict[Any, PreparedQuery] = {}
        #: Rendered single-table writes: write_rows' (model, field names, on_conflict, preserve) and
        #: replace's (model, field names, "replace") → SQL.
        self._write_statements: dict[tuple, str] = {}
        #: (model, field names) → the fields and their value converters (:meth:`columns`).
        self._columns: dict[tuple, tuple[list[peewee.Field], list[Any]]] = {}

    # -- connections ---------------------------------------------------------------------

    def connection(self) -> ContextManager[None]:
        """Scope of one repository call.

        The database connects lazily on first use, so input validation never needs the server.
        A connection that cannot be opened, or is lost, becomes :class:`BackendUnavailableError`
        and is discarded, so the next call reconnects.
        """
        return _CallScope(self)

    @contextmanager
    def counting_statements(self) -> Iterator[StatementLog]:
        """Log the statements this thread sends inside the block (round trips of SQLite and
        PostgreSQL; ClickHouse's native inserts bypass the log).

        Example, the one ``INSERT`` of a score saved with a new id::

            with scores.backend.counting_statements() as log:
                scores.save_score(score=payload)
            assert log.count == 1, log.statements

        Blocks nest: each logs what runs inside it.  Outside them, statements are not wrapped.
        """
        log = StatementLog()
        token = _statement_logs.set((*_statement_logs.get(), log))
        try:
            yield log
        finally:
            _statement_logs.reset(token)

    def is_connection_failure(self, exc: BaseException) -> bool:
        """Whether ``exc`` means the database cannot be reached (as opposed to a bad statement)."""
        return isinstance(exc, (peewee.OperationalError, peewee.InterfaceError)) and self.database.is_closed()

    def discard_connection(self) -> None:
        """Forget this thread's connection after a failure."""
        try:
            self.database.close()
        except Exception:  # noqa: BLE001 - the connection is broken anyway
            self.database._state.reset()

    def release_connection(self) -> None:
        """End of a call that opened the connection (pools take it back)."""

    def close(self) -> None:
        """Close this thread's connection (pools: every idle connection)."""
        if not self.database.is_closed():
            self.database.close()

    def unavailable(self, exc: BaseException) -> BackendUnavailableError:
        """The error for a database that cannot be reached, or whose server refused the login.

        ``details["code"]`` tells them apart: ``CANNOT_CONNECT`` (nothing listening, unknown host)
        or ``LOGIN_REFUSED`` (the server answered: unknown database or role, wrong password).
        """
        refusal = self.login_refusal(exc)
        if refusal is not None:
            return BackendUnavailableError(
                f"Connected to {self.display_url}, but the server refused the login: {mask_password(refusal)}",
                details={"url": self.display_url, "code": "LOGIN_REFUSED"})
        return BackendUnavailableError(f"Cannot reach database {self.display_url}: {mask_password(first_line(exc))}",
                                       details={"url": self.display_url, "code": "CANNOT_CONNECT"})

    def login_refusal(self, exc: BaseException) -> str | None:
        """The server's reason when ``exc`` means it answered but refused this database, user or
        password; ``None`` when the server could not be reached at all."""
        return None

    def translate_error(self, exc: BaseException) -> StorageError | None:
        """Turn a driver error into a :class:`StorageError`; ``None`` for non-database errors."""
        if isinstance(exc, peewee.PeeweeException) or type(exc).__module__.split(".")[0] in ("sqlite3", "psycopg2"):
            if isinstance(exc, peewee.InterfaceError) and "must be initialized" in str(exc):
                return StorageError(str(exc), category="SYSTEM")
            return StorageError(mask_password(str(exc)) or type(exc).__name__, details={"error": type(exc).__name__})
        return None

    # -- models and DDL ------------------------------------------------------------------

    def prepare_models(self, models: Iterable[type[peewee.Model]]) -> None:
        """Adjust freshly declared models to this database (extra columns, schema)."""

    def create_tables(self, models: Sequence[type[peewee.Model]]) -> None:
        """Create missing tables, columns and indexes; never drop or retype anything."""
        raise NotImplementedError

    def create_table(self, model: type[peewee.Model]) -> None:
        """Create the table of ``model`` if it is missing (with its declared key, see
        :meth:`create_keyed_table`)."""
        if getattr(model._meta, "table_key", None) is None:
            model.create_table(safe=True)
        else:
            self.create_keyed_table(model)

    def create_keyed_table(self, model: type[peewee.Model]) -> None:
        """Create the table of ``model`` with the key its ``Meta.table_key`` declares, or give an
        existing table that lacks that key the key (a :class:`~composite_store.models.base.TableKey`
        with ``duplicates_code`` first refuses a table whose rows repeat a key, changing nothing)."""
        key, table = model._meta.table_key, model._meta.table_name
        if not self.database.table_exists(table, model._meta.schema):
            context = self.database.get_sql_context()
            columns, _ = context.sql(peewee.CommaNodeList([field.ddl(context) for field in model._meta.sorted_fields])
                                     ).query()
            self.database.execute_sql(f"CREATE TABLE IF NOT EXISTS {self.table_sql(model)} "
                                      f"({columns}, {self.key_constraint(key)})")
            self.key_added(model, key)
            return
        if self.has_key(model, key):
            return
        if key.duplicates_code:
            count = self.repeated_keys(model, key)
            if count:
                remedy = f"; {key.duplicates_remedy}" if key.duplicates_remedy else ""
                raise ConflictError(f"Cannot add the unique key of {table}: {count} ({', '.join(key.columns)}) "
                                    f"keys are stored more than once{remedy}",
                                    details={"code": key.duplicates_code, "duplicates": count})
        self.add_key(model, key)

    def repeated_keys(self, model: type[peewee.Model], key: Any) -> int:
        """How many values of ``key`` more than one row of the table holds."""
        quoted = ", ".join(f'"{column}"' for column in key.columns)
        return self.database.execute_sql(f"SELECT count(*) FROM (SELECT 1 FROM {self.table_sql(model)} "
                                         f"GROUP BY {quoted} HAVING count(*) > 1) AS repeated").fetchone()[0]

    def has_key(self, model: type[peewee.Model], key: Any) -> bool:
        """Whether the table has a primary key, or a unique index that is not partial, on exactly
        the key's columns (under any name: older databases name it differently)."""
        table, schema, wanted = model._meta.table_name, model._meta.schema, set(key.columns)
        if set(self.database.get_primary_keys(table, schema)) == wanted:
            return True
        return not key.primary and any(
            index.unique and set(index.columns) == wanted and " WHERE " not in (index.sql or "").upper()
            for index in self.database.get_indexes(table, schema))

    def key_constraint(self, key: Any) -> str:
        """The table constraint of ``key`` in a ``CREATE TABLE``."""
        raise NotImplementedError

    def add_key(self, model: type[peewee.Model], key: Any) -> None:
        """Give an existing table ``key``."""
        raise NotImplementedError

    def key_added(self, model: type[peewee.Model], key: Any) -> None:
        """What follows a new key (PostgreSQL: the table's replica identity)."""

    def create_index(self, index: Any, sql: str) -> None:
        """Run one ``CREATE INDEX`` for ``index`` (a :class:`models.base.Index`).

        A ``best_effort`` index that stored rows violate is logged and skipped; it is built in a
        savepoint, so the rest of the surrounding DDL transaction goes on.
        """
        if not getattr(index, "best_effort", False):
            self.database.execute_sql(sql)
            return
        try:
            with self.database.atomic():
                self.database.execute_sql(sql)
        except peewee.IntegrityError as exc:
            logger.warning("Index %s was not created (%s); continuing without it", index.name, first_line(exc))

    def run_once(self, key: str, func) -> None:
        """Run ``func`` once per backend for ``key`` (an init), serialized across threads."""
        with self._init_lock:
            if key in self._initialized:
                return
            func()
            self._initialized.add(key)

    def clear(self, models: Sequence[type[peewee.Model]]) -> None:
        """Delete every row of these tables."""
        with self.write():
            for model in models:
                model.delete().execute()

    # -- values --------------------------------------------------------------------------

    def clean(self, value: Any) -> Any:
        """Remove characters the driver cannot store from a string or JSON value."""
        if isinstance(value, str):
            strips_nul = self.features.strips_nul
            if value.isascii() and not (strips_nul and "\x00" in value):
                return value  # the common case, without a call (bulk paths clean every id)
            return clean_text(value, strip_nul=strips_nul)
        if isinstance(value, (dict, list)):
            if self.features.strips_nul:
                return _strip_nul_deep(value)
            return value
        return value

    # -- reads ---------------------------------------------------------------------------

    def select(self, model: type[peewee.Model], *fields: Any) -> peewee.ModelSelect:
        """``SELECT`` of live rows (ClickHouse: ``FINAL`` and ``_deleted = 0``)."""
        return self.as_records(model.select(*fields), model, fields)

    def as_records(self, query: Any, model: type[peewee.Model], fields: Sequence[Any] = ()) -> Any:
        """``query`` (selecting or returning ``fields`` of ``model``, or all of them) reading its
        rows as records: dicts keyed by field name, values converted by the fields."""
        return query.dicts()

    @contextmanager
    def read(self) -> Iterator[None]:
        """A consistent read (count and rows in one transaction where there are transactions)."""
        if self.database.in_transaction():
            # Already consistent: a nested atomic() would only add a SAVEPOINT round trip.
            yield
            return
        with self.database.atomic():
            yield

    def iterate(self, query: peewee.ModelSelect, order: Sequence[peewee.Field] | None = None, *,
                chunk_size: int = ITER_CHUNK) -> Iterator[dict[str, Any]]:
        """Every row of ``query`` (a :meth:`select`) in ascending order of ``order`` (default:
        :meth:`iteration_order` of the query's model), fetched ``chunk_size`` rows at a time:
        constant memory for any number of rows.

        Keyset pagination (:func:`keyset_chunks`): each chunk is its own short statement, so no
        transaction or cursor stays open between chunks and the caller may write to the
        database while iterating.
        """
        order = list(order or self.iteration_order(query.model))

        def fetch(after: peewee.Node | None, limit: int) -> list[dict[str, Any]]:
            chunk = query.order_by(*order).limit(limit)
            with self.connection():
                return fetch_all(self.database, chunk if after is None else chunk.where(after))

        return keyset_chunks(fetch, order, chunk_size)

    def iteration_order(self, model: type[peewee.Model]) -> list[peewee.Field]:
        """The unique key :meth:`iterate` walks a table in: its key (``Meta.table_key`` or the
        primary key); ClickHouse: its sorting key, which its reads deduplicate on."""
        key = getattr(model._meta, "table_key", None)
        if key is None:
            return _primary_key_fields(model)
        by_column = {field.column_name: field for field in model._meta.sorted_fields}
        return [by_column[column] for column in key.columns]

    def count(self, query: peewee.ModelSelect, *, bitmap: bool = False) -> int:
        """The number of rows ``query`` selects (``fetch_page``'s total).  ``bitmap`` asks for
        bitmap scans where the database has them (PostgreSQL), for filtered counts."""
        with self.bitmap_scans(bitmap):
            return query.count()

    def bitmap_scans(self, enabled: bool) -> ContextManager[None]:
        """Inside this, when ``enabled``, counts use bitmap scans where the database has them
        (PostgreSQL): filtered counts of big tables; it must run inside a read or write."""
        return nullcontext()

    def for_update(self, query: peewee.ModelSelect) -> peewee.ModelSelect:
        """Lock the selected rows until the transaction ends, where the database can."""
        return query

    def param(self, name: str) -> peewee.Node:
        """A named parameter of a :meth:`prepared` query (``Model.id == backend.param("id")``);
        its value is sent to the driver as given (no field conversion)."""
        return peewee.SQL(self.database.param, [Param(name)])

    def prepared(self, shape: Any, build: Callable[[], peewee.SelectBase]) -> "PreparedQuery":
        """The query ``build()`` returns, rendered to SQL once per call site, ``shape`` and backend.

        Rendering a peewee query costs ~50-200 µs, several times what SQLite needs to run a
        lookup by key, so the hot point reads render once and then only bind values.  The cache
        entry is :func:`statement_key` of ``build`` and ``shape``: the call site (the code of
        ``build``) comes with it, so ``shape`` only holds what changes the SQL at that site: the
        model (each repository has its own model classes) and the flags or counts the SQL
        depends on.  Every varying value is a :meth:`param`.
        """
        key = statement_key(build, shape)
        statement = self._prepared.get(key)
        if statement is None:
            statement = self._prepared[key] = PreparedQuery(self.database, build())
        return statement

    @contextmanager
    def write(self, *lock_keys: Any) -> Iterator[None]:
        """A write transaction; ``lock_keys`` name the records a read-modify-write touches
        (used where there are no transactions to serialize writers)."""
        with self.database.atomic():
            yield

    def write_statement(self, *lock_keys: Any) -> ContextManager[None]:
        """The scope of a write that sends one statement: where the database has transactions
        the statement is atomic by itself and runs in autocommit (a ``BEGIN`` and a ``COMMIT``
        would double its round trips); elsewhere (ClickHouse) it is :meth:`write`, whose record
        locks serialize the writers.  Inside a running transaction it simply joins it."""
        return nullcontext() if self.features.concurrent_updates else self.write(*lock_keys)

    @contextmanager
    def ddl(self) -> Iterator[None]:
        """The transaction (and lock) that ``init()``'s DDL runs in; a domain with DDL of its own
        (constraints, hand-written tables) runs it inside, so concurrent inits never race."""
        with self.write():
            yield

    def json_as_text(self, column: Any) -> Any:
        """``column`` as it is selected to read a JSON value exactly: its stored JSON text, so JSON
        ``null`` (the text ``null``) stays distinct from SQL NULL (PostgreSQL's driver would decode
        ``jsonb`` and turn both into ``None``)."""
        return column

    def json_text(self, column: Any) -> Any:
        """``column`` as JSON text for SQL conditions (``LIKE`` searches)."""
        return column

    # JSON predicates, written once per database (peewee's json_methods): each returns an SQL
    # condition, or None where the server cannot decide it exactly (the repository then filters
    # in Python with composite_store.validation.json_matches).

    def json_members_equal(self, field: Any, filters: dict[str, Any], path: str = "$", *,
                           scalars_first: bool = False) -> peewee.Node | None:
        """Every top-level member ``key`` of the JSON object at ``path`` in ``field`` equals the
        scalar ``filters[key]`` (:func:`~composite_store.validation.check_metadata_filter`;
        type-aware: ``1`` is not ``"1"``, ``None`` is JSON ``null``).
        ``scalars_first``: the column's objects were written with top-level scalars first
        (:attr:`BackendFeatures.json_scalars_first`)."""
        return None

    def json_array_contains_all(self, field: Any, values: Sequence[str]) -> peewee.Node:
        """The JSON array in ``field`` holds every one of the strings ``values``."""
        raise NotImplementedError

    def row_version(self, model: type[peewee.Model]) -> peewee.Node:
        """The value that changes on every write of a row of ``model``, selected as
        ``row_version`` beside a row read for :meth:`replace` with ``unchanged``
        (where :attr:`BackendFeatures.row_versions`)."""
        raise NotImplementedError

    def json_object_merge(self, field: Any, members: peewee.Node) -> peewee.Node:
        """The JSON object in ``field`` (an empty one where it holds anything else) with the
        top-level members of the JSON object text ``members`` set on it, as Python's
        ``{**stored, **members}``, computed by the database in an ``UPDATE`` (where
        :attr:`BackendFeatures.json_object_merge`)."""
        raise NotImplementedError

    def merges_json_members(self, members: dict[str, Any]) -> bool:
        """Whether :meth:`json_object_merge` sets exactly ``members`` (so an ``UPDATE`` merges
        them without a read first): where :attr:`BackendFeatures.json_object_merge`, for any."""
        return self.features.json_object_merge

    def json_present(self, field: Any) -> peewee.Node:
        """``field`` holds a value: neither SQL ``NULL`` nor JSON ``null``."""
        raise NotImplementedError

    # -- writes --------------------------------------------------------------------------

    def prepare_rows(self, model: type[peewee.Model], rows: Sequence[dict[str, Any]]) -> Sequence[dict[str, Any]]:
        """Complete rows before they are written (PostgreSQL fills the ``…Z`` timestamp columns)."""
        return rows

    def insert(self, model: type[peewee.Model], rows: Sequence[dict[str, Any]]) -> None:
        """Insert new rows (dicts keyed by field name, all with the same keys)."""
        self.write_rows(model, rows, on_conflict="error")

    def insert_if_absent(self, model: type[peewee.Model], rows: Sequence[dict[str, Any]]) -> None:
        """Insert the rows whose primary key is not stored yet; leave stored ones alone."""
        self.write_rows(model, rows, on_conflict="ignore")

    def upsert(self, model: type[peewee.Model], rows: Sequence[dict[str, Any]], *,
               preserve: Sequence[str] = (), stored: dict[tuple, dict[str, Any]] | None = None) -> None:
        """Insert rows or replace the stored ones with the same primary key, keeping the fields
        named in ``preserve`` as stored.  When one key appears twice, the last row wins.

        ``stored``: the stored rows of these keys (primary-key tuple → whole row from
        :meth:`select`), when the caller has just read them inside this write; ClickHouse then
        skips reading them again.  The databases with ``ON CONFLICT`` do not need them."""
        self.write_rows(model, rows, on_conflict="update", preserve=preserve)

    # The fast path of every multi-row write: one prepared statement, the driver's executemany
    # (SQLite) or execute_values (PostgreSQL), values converted by per-column functions picked once.

    def columns(self, model: type[peewee.Model], names: tuple[str, ...]) -> tuple[list[peewee.Field], list[Any]]:
        """The fields of ``model`` named ``names`` and their :func:`value_converter`s, looked up
        once per shape: a single-row write would otherwise spend more on them than the database
        spends on the insert."""
        columns = self._columns.get((model, names))
        if columns is None:
            fields = [model._meta.fields[name] for name in names]
            columns = self._columns[(model, names)] = (fields, Converters(value_converter(self, f) for f in fields))
        return columns

    def write_rows(self, model: type[peewee.Model], rows: Sequence[dict[str, Any]], *, on_conflict: str,
                   preserve: Sequence[str] = ()) -> None:
        """``INSERT`` rows; ``on_conflict`` is ``"error"``, ``"ignore"`` or ``"update"``."""
        if not rows:
            return
        if on_conflict == "update":
            rows = last_row_per_key(model, rows)
        rows = self.prepare_rows(model, rows)
        names = tuple(rows[0])
        fields, converters = self.columns(model, names)
        # One row's values are in the order of its fields already (they are its keys).
        values = ([tuple(driver_values(converters, rows[0].values()))] if len(rows) == 1
                  else value_tuples(self, fields, rows, converters=converters))
        self.execute_rows(self.insert_statement(model, names, on_conflict, tuple(preserve)), values)

    def insert_statement(self, model: type[peewee.Model], names: tuple[str, ...], on_conflict: str,
                         preserve: tuple[str, ...] = (), *, rows: int | None = None,
                         returning: str | None = None) -> str:
        """:meth:`insert_sql` for rows of the fields ``names``, rendered once per shape."""
        key = (model, names, on_conflict, preserve, rows, returning)
        sql = self._write_statements.get(key)
        if sql is None:
            fields, _ = self.columns(model, names)
            sql = self._write_statements[key] = self.insert_sql(model, fields, on_conflict, preserve, rows=rows,
                                                                returning=returning)
        return sql

    def insert_returning(self, model: type[peewee.Model], row: dict[str, Any]) -> dict[str, Any]:
        """Insert one new row and return it as :meth:`select` reads it back: the database's own
        form of what it stored (PostgreSQL's ``jsonb`` orders keys and rewrites numbers), from
        one ``INSERT … RETURNING`` rendered once per shape instead of an insert and a read.
        JSON values may be the objects given (SQLite): copy them before handing them out."""
        row = self.prepare_rows(model, [row])[0]
        names = tuple(row)
        fields, converters = self.columns(model, names)

        def build() -> peewee.ModelInsert:
            insert = model.insert({field: self.param(field.name) for field in fields})
            return self.as_records(insert.returning(*model._meta.sorted_fields), model)

        statement = self.prepared((model, names), build)
        return statement.first(**dict(zip(names, driver_values(converters, row.values()))))

    def upsert_keeping(self, model: type[peewee.Model], rows: Sequence[dict[str, Any]], *,
                       keep: str) -> dict[Any, Any]:
        """:meth:`upsert` keeping the stored value of the field ``keep`` (a ``created_at``), and
        telling which rows kept one: primary key → stored value, for the rows whose stored value
        differs from the one given.  Known from the write itself (``INSERT … ON CONFLICT …
        RETURNING`` the key and that field, :data:`CHUNK_SIZE` rows per statement): a row another
        writer inserted just before is reported too.  The returned pairs are compared as the
        driver fetched them, so only kept values are converted (a batch of new rows converts
        none).  Single-column keys; needs :attr:`BackendFeatures.returning`."""
        rows = self.prepare_rows(model, last_row_per_key(model, rows))
        if not rows:
            return {}
        names = tuple(rows[0])
        fields, converters = self.columns(model, names)
        kept = model._meta.fields[keep]
        kept = getattr(kept, "zoned", None) or kept  # PostgreSQL reads the zoned twin (as records do)
        key_at, kept_at = names.index(model._meta.primary_key.name), names.index(kept.name)
        # One row's values are in the order of its fields already (they are its keys).
        values = ([tuple(driver_values(converters, rows[0].values()))] if len(rows) == 1
                  else value_tuples(self, fields, rows, converters=converters))
        stored: dict[Any, Any] = {}
        for chunk in chunks(values, size=CHUNK_SIZE):
            sql = self.insert_statement(model, names, "update", (keep,), rows=len(chunk), returning=kept.name)
            # The rows are cleaned already (as every bulk write's): bound as they are.
            cursor = self.database.execute_storable(sql, list(itertools.chain.from_iterable(chunk)))
            stored.update(kept_values(kept, {row[key_at]: row[kept_at] for row in chunk}, cursor.fetchall()))
            cursor.close()
        return stored

    def update_returning(self, model: type[peewee.Model], where: Callable[[], peewee.Expression],
                         values: dict[str, Any], returning: Sequence[peewee.Field], *, shape: Any = None,
                         params: dict[str, Any] | None = None,
                         computed: Callable[[], dict[peewee.Field, peewee.Node]] | None = None) -> list[dict[str, Any]]:
        """``UPDATE … SET values WHERE where() RETURNING returning``: the records of the changed
        rows (needs :attr:`BackendFeatures.returning`).  ``values`` (field name → Python value)
        are converted as :meth:`update` converts them; ``where()`` builds the condition, and
        ``computed()`` SQL values of more fields (:meth:`json_object_merge`), with
        :meth:`param`\\ s bound from ``params``.  Rendered once per call site of ``where`` and
        ``shape`` (what else changes the SQL there, as for :meth:`prepared`)."""
        values = self.prepare_rows(model, [values])[0]
        names = tuple(values)
        fields, converters = self.columns(model, names)

        def build() -> peewee.ModelUpdate:
            sets = {field: self.param(f"set_{field.name}") for field in fields}
            update = model.update({**sets, **(computed() if computed else {})}).where(where())
            return self.as_records(update.returning(*returning), model, returning)

        statement = self.prepared((statement_key(where, shape), names), build)
        return statement.rows(**(params or {}), **{f"set_{name}": value for name, value in
                                                   zip(names, driver_values(converters, values.values()))})

    def table_sql(self, model: type[peewee.Model]) -> str:
        """The quoted table name as SQL."""
        return f'"{model._meta.table_name}"'

    def row_placeholder(self, count: int) -> str:
        """The ``VALUES`` part for one row."""
        return "(" + ", ".join([self.database.param] * count) + ")"

    def insert_sql(self, model: type[peewee.Model], fields: Sequence[peewee.Field], on_conflict: str,
                   preserve: Sequence[str] = (), *, rows: int | None = None, returning: str | None = None) -> str:
        """``INSERT INTO … VALUES … [ON CONFLICT (pk) DO NOTHING | DO UPDATE SET …]``: the
        ``VALUES`` of one row for the driver's batch call (:meth:`execute_rows`), or with
        ``rows``, that many rows of plain parameters for one ``execute``; ``returning`` adds
        ``RETURNING`` of the primary key and that field."""
        columns = ", ".join(f'"{f.column_name}"' for f in fields)
        if rows is None:
            values = self.row_placeholder(len(fields))
        else:
            values = ", ".join(["(" + ", ".join([self.database.param] * len(fields)) + ")"] * rows)
        sql = f"INSERT INTO {self.table_sql(model)} ({columns}) VALUES {values}"
        pk = _primary_key_fields(model)
        if on_conflict != "error":
            target = ", ".join(f'"{f.column_name}"' for f in pk)
            kept = set(preserve) | {f"{name}_z" for name in preserve}
            # Compared by name: ``field in list`` would use peewee's overloaded ``==`` (always truthy).
            kept |= {f.name for f in pk}
            sets = [f'"{f.column_name}" = excluded."{f.column_name}"' for f in fields
                    if f.name not in kept] if on_conflict == "update" else []
            sql += f" ON CONFLICT ({target}) " + (f"DO UPDATE SET {', '.join(sets)}" if sets else "DO NOTHING")
        if returning is not None:
            sql += " RETURNING " + ", ".join(f'"{f.column_name}"' for f in [*pk, model._meta.fields[returning]])
        return sql

    def execute_rows(self, sql: str, rows: list[tuple]) -> None:
        """Run one ``INSERT`` for many rows with the driver's batch call."""
        self.database.cursor().executemany(sql, rows)

    def update(self, model: type[peewee.Model], where: peewee.Expression, values: dict[str, Any]) -> int:
        """Set ``values`` (field name → Python value) on the rows matching ``where``."""
        values = self.prepare_rows(model, [values])[0]
        return model.update({model._meta.fields[k]: v for k, v in values.items()}).where(where).execute()

    def replace(self, model: type[peewee.Model], stored: dict[str, Any], values: dict[str, Any], *,
                unchanged: bool = False) -> bool:
        """Change one stored row (as read inside this write) to carry ``values``.

        ``unchanged``: only if the row still has the ``row_version`` read with it (a read
        without a lock, :attr:`BackendFeatures.row_versions`); returns whether it was changed."""
        values = self.prepare_rows(model, [values])[0]
        names, pk_names = tuple(values), tuple(primary_key_names(model))
        fields, converters = self.columns(model, names)
        pk, pk_converters = self.columns(model, pk_names)
        # Rendered once per shape (peewee renders an UPDATE in ~100 µs, more than SQLite runs it).
        key = (model, names, "replace", unchanged)
        sql = self._write_statements.get(key)
        if sql is None:
            param = self.database.param
            sets = ", ".join(f'"{f.column_name}" = {param}' for f in fields)
            where = " AND ".join(f'"{f.column_name}" = {param}' for f in pk)
            if unchanged:
                context = self.database.get_sql_context()
                version, _ = context.sql(self.row_version(model)).query()
                where += f" AND {version} = {param}"
            sql = self._write_statements[key] = f"UPDATE {self.table_sql(model)} SET {sets} WHERE {where}"
        params = driver_values([*converters, *pk_converters], [*values.values(), *(stored[name] for name in pk_names)])
        cursor = self.database.execute_sql(sql, [*params, stored["row_version"]] if unchanged else params)
        return cursor.rowcount == 1

    def replace_many(self, model: type[peewee.Model], changes: Sequence[tuple[dict[str, Any], dict[str, Any]]]) -> None:
        """:meth:`replace` for several rows: each change is (stored row as read inside this
        write, values).  ClickHouse writes all the new versions in one insert."""
        for stored, values in changes:
            self.replace(model, stored, values)

    def delete(self, model: type[peewee.Model], where: peewee.Expression) -> int:
        """Delete the rows matching ``where``."""
        return model.delete().where(where).execute()

    def delete_bulk(self, model: type[peewee.Model], where: peewee.Expression, *, operation: str = "DELETE") -> int:
        """Delete many rows at once (ClickHouse: an awaited mutation instead of tombstones)."""
        return self.delete(model, where)

    def delete_bulk_each(self, deletions: Sequence[tuple[type[peewee.Model], peewee.Expression]], *,
                         operation: str = "DELETE") -> None:
        """:meth:`delete_bulk` for each ``(model, where)`` (ClickHouse: every mutation sent
        before any is awaited, so they run side by side)."""
        for model, where in deletions:
            self.delete_bulk(model, where, operation=operation)

    def copy_rows(self, model: type[peewee.Model], key_map: dict[Any, Any], values: dict[str, Any]) -> None:
        """Insert a copy of each stored row whose (single-column) primary key is a key of
        ``key_map``, under the mapped new key, with the text fields named in ``values`` set to
        those values. The rows never leave the database: one ``WITH keys AS (VALUES …) INSERT …
        SELECT`` per chunk of keys, so a copy of any size costs the caller only its keys."""
        values = self.prepare_rows(model, [values])[0]
        pk = model._meta.primary_key
        param = self.database.param
        columns = ", ".join(f'"{f.column_name}"' for f in model._meta.sorted_fields)
        chosen = ", ".join('"copy_keys"."new_key"' if f.name == pk.name else param if f.name in values
                           else f'"source"."{f.column_name}"' for f in model._meta.sorted_fields)
        constants = [values[f.name] for f in model._meta.sorted_fields if f.name in values]
        for chunk in chunks(list(key_map.items()), size=ID_CHUNK // 2):  # two parameters per key
            pairs = ", ".join([f"({param}, {param})"] * len(chunk))
            self.database.execute_sql(
                f'WITH "copy_keys" ("old_key", "new_key") AS (VALUES {pairs}) '
                f"INSERT INTO {self.table_sql(model)} ({columns}) SELECT {chosen} "
                f'FROM {self.table_sql(model)} AS "source" JOIN "copy_keys" ON "source"."{pk.column_name}" = '
                '"copy_keys"."old_key"', [*(key for pair in chunk for key in pair), *constants])


def keyset_chunks(fetch: Callable[[peewee.Node | None, int], list[dict[str, Any]]], order: Sequence[peewee.Field],
                  chunk_size: int) -> Iterator[dict[str, Any]]:
    """The keyset loop of :meth:`Backend.iterate`: ``fetch(after, limit)`` reads up to ``limit``
    rows in ascending ``order`` that satisfy ``after`` (``None`` for the first chunk, then
    :func:`keyset_after` the last key read); rows are yielded until a chunk comes back short.

    ``order`` is a unique key whose values read back exactly (ids, numbers, ClickHouse's
    millisecond timestamps), so the next chunk starts right after the last row: never
    ``OFFSET``, which rescans what it skips.  Rows written meanwhile behind the position are
    not seen; ahead of it, they are.
    """
    # The rows of each chunk are handed on in C (no generator step per row).
    return itertools.chain.from_iterable(_keyset_chunk_lists(fetch, order, chunk_size))


def _keyset_chunk_lists(fetch: Callable[[peewee.Node | None, int], list[dict[str, Any]]],
                        order: Sequence[peewee.Field], chunk_size: int) -> Iterator[list[dict[str, Any]]]:
    after: peewee.Node | None = None
    while True:
        rows = fetch(after, chunk_size)
        yield rows
        if len(rows) < chunk_size:
            return
        after = keyset_after(order, [rows[-1][field.name] for field in order])
        del rows  # the next chunk replaces this one instead of joining it


def fetch_all(database: peewee.Database, query: peewee.SelectBase) -> list[Any]:
    """Every row of ``query``, converted as the query reads them, fetched in one driver call
    (peewee's own reader fetches and wraps them one by one: a third of a scan's time)."""
    cursor = database.execute(query)
    try:
        reader = query._get_cursor_wrapper(cursor)
        if not cursor.description:
            return list(reader)
        reader.initialize()
        return list(map(row_reader(reader), cursor.fetchall()))
    finally:
        cursor.close()


def row_reader(reader: Any) -> Callable[[Sequence[Any]], Any]:
    """``reader.process_row`` (an initialized peewee reader of a ``dicts()`` or
    ``objects(constructor)`` query) for scans: the record built in one C call, and only the
    columns whose values the driver does not already give in their Python form converted.

    peewee calls every field's ``python_value`` on every row; for text and integer fields
    those return the driver's value unchanged, and in a scan those calls cost more than the
    driver's own fetch."""
    if not isinstance(reader, peewee.ModelDictCursorWrapper) or getattr(reader, "is_model", False):
        return reader.process_row
    database = reader.model._meta.database
    database = getattr(database, "obj", None) or database  # the database behind a DatabaseProxy
    null_placeholder = getattr(database, "null_placeholder", None)
    names = reader.unique_columns
    converting = [(index, names[index], _value_reader(database, reader.fields[index], reader.converters[index]))
                  for index in reader.convert if not _as_fetched(reader.fields[index], None)]
    # Text columns whose only conversion is the placeholder of NULL (ClickHouse): one test of
    # the whole row (in C) instead of a call per value; only a row holding it is looked at.
    placeholders = [(index, names[index]) for index in reader.convert if null_placeholder is not None
                    and _as_fetched(reader.fields[index], None)
                    and not _as_fetched(reader.fields[index], null_placeholder)]
    constructor = getattr(reader, "constructor", None)

    def process_row(row: Sequence[Any]) -> Any:
        record = dict(zip(names, row))
        for index, name, convert in converting:
            record[name] = convert(row[index])
        if placeholders and null_placeholder in row:
            for index, name in placeholders:
                if row[index] == null_placeholder:
                    record[name] = None
        return record if constructor is None else constructor(**record)

    return process_row


def _value_reader(database: Any, field: peewee.Field | None, convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``convert`` (a column's converter), or where it is ``field``'s ``python_value`` and the
    database reads the field's values directly (:meth:`StoredFormats.value_reader`), that."""
    if field is None or convert != field.python_value:
        return convert
    value_reader = getattr(database, "value_reader", None)
    return (value_reader(field) if value_reader is not None else None) or convert


def _as_fetched(field: peewee.Field | None, null_placeholder: str | None) -> bool:
    """Whether ``field``'s ``python_value`` returns every value a driver fetches for it as it
    is: peewee's own text and integer fields (``str``/``int`` in, the same out), and this
    library's text field where the database declares no placeholder for ``NULL``."""
    if field is None:
        return False
    python_value = type(field).python_value
    if python_value is peewee.Field.python_value:
        return isinstance(field, (peewee._StringField, peewee.IntegerField))
    return python_value is TextField.python_value and null_placeholder is None


def keyset_after(order: Sequence[peewee.Field], values: Sequence[Any]) -> peewee.Expression:
    """Rows after ``values`` in ascending ``order``: ``a >= x AND (a > x OR (a = x AND b > y))``.

    Spelled out instead of a row-value comparison so every database (ClickHouse 18.16 too)
    understands it and each value goes through its field's conversion; the leading ``a >= x``
    lets an index on the key start its range there."""
    first, value = order[0], values[0]
    if len(order) == 1:
        return first > value
    return (first >= value) & ((first > value) | ((first == value) & keyset_after(order[1:], values[1:])))


class Param:
    """The placeholder of a named parameter in a :class:`PreparedQuery`."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


def statement_key(build: Callable[..., Any], shape: Any) -> tuple[Any, ...]:
    """The cache key of a prepared statement (:meth:`Backend.prepared`): the code object of
    ``build``, the function that builds the query, and ``shape``.

    Every function written in the source has a code object of its own, so two call sites never
    share a statement whatever ``shape`` they pass.  The code is compared by identity (two sites
    with the same code text are still two sites); it is kept in the key, so its id is never reused.
    """
    code = build.__code__
    return (id(code), code, shape)


class PreparedQuery:
    """A ``SELECT`` rendered once (:meth:`Backend.prepared`); each run binds its parameters and
    reads rows exactly as the query itself would (same converters and row type)."""

    def __init__(self, database: peewee.Database, query: peewee.SelectBase) -> None:
        self.database = database
        self.query = query
        self.sql, self.params = database.get_sql_context().parse(query)
        # The parameters as a template: the query's own constants (checked here, once), and the
        # positions and names of the Params each run fills in (only those are checked per run).
        self._template = database.storable_params(self.sql, [None if type(p) is Param else p for p in self.params])
        self._named = [(index, p.name) for index, p in enumerate(self.params) if type(p) is Param]
        #: The row converter of peewee's reader initialized on the first result's columns
        #: (:func:`row_reader`); the same SQL always has the same columns, so later results
        #: reuse it without a reader of their own.
        self._process: Callable[[Sequence[Any]], Any] | None = None

    def _execute(self, values: dict[str, Any]) -> Any:
        """The cursor of a run with ``values`` bound to the named parameters."""
        database = self.database
        params = database.storable_params(self.sql, [values[name] for _, name in self._named])
        if len(params) != len(self._template):  # constants too: the given values go in their places
            params, given = list(self._template), params
            for (index, _), value in zip(self._named, given):
                params[index] = value
        return database.execute_prepared(self.sql, params)

    def fetch(self, **values: Any) -> list[tuple]:
        """Every row as the driver fetched it (no conversion), with ``values`` bound: for a bulk
        write's ``RETURNING``, which the caller compares with what it sent."""
        cursor = self._execute(values)
        rows = cursor.fetchall()
        cursor.close()
        return rows

    def rows(self, **values: Any) -> list[Any]:
        """Every row, with ``values`` bound to the named parameters."""
        cursor = self._execute(values)
        process = self._process
        if process is None:
            if not cursor.description:
                return list(self.query._get_cursor_wrapper(cursor))
            reader = self.query._get_cursor_wrapper(cursor)
            reader.initialize()
            process = self._process = row_reader(reader)
        # Converted directly (peewee's reader would fetch the rows one by one).
        rows = list(map(process, cursor.fetchall()))
        cursor.close()
        return rows

    def first(self, **values: Any) -> Any:
        """The first row, or ``None`` (build the query with ``.limit(1)``)."""
        rows = self.rows(**values)
        return rows[0] if rows else None


def value_converter(backend: Backend, field: peewee.Field) -> Any:
    """The function that turns a Python value into the driver value of ``field`` (``None``: as is)."""
    database = backend.database
    if isinstance(field, TimestampField):
        return database.timestamp_converter(field)
    if isinstance(field, ZonedTimestampField):
        return functools.partial(database.zoned_timestamp_to_db, field)
    if isinstance(field, JSONField):
        return functools.partial(database.json_to_db, field)
    if isinstance(field, peewee.TextField) and type(field).db_value is peewee.TextField.db_value:
        return None  # validated strings go to the driver as they are
    return field.db_value


def value_tuples(backend: Backend, fields: Sequence[peewee.Field], rows: Sequence[dict[str, Any]],
                 defaults: dict[str, Any] | None = None, *, converters: Sequence[Any] | None = None) -> list[tuple]:
    """Rows as tuples of driver values, in the order of ``fields``; ``defaults`` (field name →
    value) fill the keys a row lacks; ``converters`` are the fields' :func:`value_converter`s,
    when the caller keeps them."""
    if converters is None:
        converters = [value_converter(backend, field) for field in fields]
    if len(rows) == 1:  # a single-row write: no per-column machinery
        row, defaults = rows[0], defaults or {}
        return [tuple(driver_values(converters, [row[f.name] if f.name in row else defaults.get(f.name)
                                                 for f in fields]))]
    return list(zip(*value_columns(backend, fields, rows, defaults, converters=converters)))


def value_columns(backend: Backend, fields: Sequence[peewee.Field], rows: Sequence[dict[str, Any]],
                  defaults: dict[str, Any] | None = None, *, converters: Sequence[Any] | None = None) -> list[list]:
    """:func:`value_tuples` column by column: one list of driver values per field (what an
    array parameter per column sends)."""
    if converters is None:
        converters = [value_converter(backend, field) for field in fields]
    # One converter per column and C-level loops over the rows.
    columns = []
    for field, convert in zip(fields, converters):
        name = field.name
        try:
            values = list(map(operator.itemgetter(name), rows))
        except KeyError:  # some rows lack the key
            default = defaults.get(name) if defaults else None
            values = [row.get(name, default) for row in rows]
        if convert is None:
            pass
        elif isinstance(field, JSONField):  # JSONText is stored JSON already (sent as a plain str)
            values = [None if value is None else _plain_str(value) if type(value) is JSONText else convert(value)
                      for value in values]
        else:
            if isinstance(field, (TimestampField, ZonedTimestampField)):
                convert = _memoized(convert)  # the rows of one write usually share one "now"
            values = [None if value is None else convert(value) for value in values]
        columns.append(values)
    return columns


class Converters(list):
    """The value converters (:func:`value_converter`) of a shape's fields (:meth:`Backend.columns`),
    and where they are not ``None``: a row of a wide table (35 score columns) is mostly text sent
    as it is, which :func:`driver_values` then skips."""

    __slots__ = ("converting",)

    def __init__(self, converters: Iterable[Any]) -> None:
        super().__init__(converters)
        #: (position, converter) of the converters that are not ``None``.
        self.converting = [(index, convert) for index, convert in enumerate(self) if convert is not None]


def driver_values(converters: Sequence[Any], values: Iterable[Any]) -> list[Any]:
    """One row's ``values`` converted by the matching :func:`value_converter`s (``None`` stays
    NULL; a :class:`JSONText` is sent as the plain text it holds)."""
    converting = converters.converting if type(converters) is Converters else Converters(converters).converting
    values = list(values)
    for index, convert in converting:
        value = values[index]
        if value is not None:
            values[index] = _plain_str(value) if type(value) is JSONText else convert(value)
    return values


_plain_str = str.__str__  # a str subclass as an exact str: drivers bind those without adaptation


def _memoized(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``convert`` with its results remembered per (hashable) input value."""
    results: dict[Any, Any] = {}

    def converted(value: Any) -> Any:
        result = results.get(value)  # a miss is common (start times): no exception for it
        if result is None:
            result = results[value] = convert(value)
        return result

    return converted


def kept_values(field: peewee.Field, sent: dict[Any, Any], returned: Iterable[Sequence[Any]]) -> dict[Any, Any]:
    """What an upsert's ``RETURNING`` of (key, ``field``) pairs, as fetched, says the rows kept:
    key → the stored value as a record holds it, for the rows where it differs from the driver
    value ``sent`` for that key (a new row returns what it was sent; nothing to convert)."""
    return {key: field.python_value(value) for key, value in returned if value != sent[key]}


def last_row_per_key(model: type[peewee.Model], rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per primary key, the last occurrence winning (PostgreSQL cannot upsert a key twice
    in one statement)."""
    if len(rows) < 2:  # (a single-row write, the common case: nothing to compare)
        return list(rows)
    names = primary_key_names(model)
    unique = {tuple(row[n] for n in names): row for row in rows}
    return list(unique.values()) if len(unique) != len(rows) else list(rows)


def _primary_key_fields(model: type[peewee.Model]) -> list[peewee.Field]:
    pk = model._meta.primary_key
    if isinstance(pk, peewee.CompositeKey):
        return [model._meta.fields[name] for name in pk.field_names]
    return [pk]


def primary_key_names(model: type[peewee.Model]) -> list[str]:
    """Field names of the model's primary key."""
    return [field.name for field in _primary_key_fields(model)]


def _strip_nul_deep(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, dict):
        return {_strip_nul_deep(k): _strip_nul_deep(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip_nul_deep(v) for v in value]
    return value


def timestamp_fields(model: type[peewee.Model]) -> list[TimestampField]:
    """The model's :class:`TimestampField`s."""
    return [f for f in model._meta.sorted_fields if isinstance(f, TimestampField)]
