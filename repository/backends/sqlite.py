"""SQLite: WAL, busy timeout, one connection per thread, ``BEGIN IMMEDIATE`` for writes."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, ContextManager, Iterator, Sequence

import peewee

from ..models.fields import JSONField, TimestampField

from ..errors import BackendUnavailableError, ValidationError
from ..jsonb import jsonb_to_json_text
from ..values import JSONText, format_iso, json_dumps, json_loads, parse_iso, to_utc
from .base import Backend, BackendFeatures, StoredFormats, driver_values, first_line

#: How long a connection waits for another writer before SQLite reports "database is locked".
BUSY_TIMEOUT_S = 30.0

#: Bytes of a database file that reads map into memory: SQLite's default compile-time cap
#: (SQLITE_MAX_MMAP_SIZE, 0x7fff0000; a larger value is cut to it).  At 1 GB, counts over a
#: 1.9 GB file read its tail through read() and ran 12-17% slower than mapped whole.
MMAP_SIZE = 0x7FFF0000

#: Name of the SQL function, registered on every connection, that turns a JSONB blob into text.
JSON_TEXT_FUNCTION = "cs_json"


def parse_sqlite_url(url: str) -> str:
    """``sqlite:///path``, ``sqlite:///:memory:``, ``file:./path`` → a path or ``:memory:``."""
    if not isinstance(url, str) or not url:
        raise ValidationError(fields={"url": ["url must be a non-empty string"]})
    if url.startswith("sqlite://"):
        path = url[len("sqlite://"):]
        if path.startswith("/"):
            path = path[1:]  # sqlite:///rel → rel, sqlite:////abs → /abs
        path = path.split("?", 1)[0]
    elif url.startswith("file:"):
        path = url[len("file:"):].split("?", 1)[0]
        if path.startswith("//"):
            path = path[2:]
    else:
        raise ValidationError(fields={"url": [f"unsupported SQLite URL: {url!r} "
                                              "(use sqlite:///path, sqlite:///:memory: or file:./path)"]})
    if not path:
        raise ValidationError(fields={"url": ["url must name a database file or :memory:"]})
    return path


def _timestamp_text(value: Any) -> str:
    return value if isinstance(value, str) else format_iso(to_utc(value))


def _timestamp_from_text(value: Any) -> Any:
    """:meth:`SQLiteDatabase.timestamp_from_db` of a value (``None`` stays ``None``)."""
    return parse_iso(value) if isinstance(value, str) else value


class SQLiteDatabase(StoredFormats, peewee.SqliteDatabase):
    """peewee's SQLite database with this library's stored formats."""

    # Extends (not replaces) peewee's SQLite types, so booleans stay INTEGER.
    field_types = {**peewee.SqliteDatabase.field_types, "TIMESTAMP": "TEXT", "TIMESTAMPTZ": "TEXT", "JSON": "TEXT"}

    def _set_pragmas(self, conn: sqlite3.Connection) -> None:
        # Switching a new file to WAL needs an exclusive lock, and SQLite reports "database is
        # locked" at once (without calling the busy handler) when another connection holds one,
        # e.g. several stores opening one new file together; retry within the busy timeout.
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        for pragma, value in self._pragmas:
            while True:
                try:
                    conn.execute(f"PRAGMA {pragma} = {value};")
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)

    def timestamp_to_db(self, field: peewee.Field, value: Any) -> Any:
        return format_iso(to_utc(value)) if not isinstance(value, str) else value

    def timestamp_converter(self, field: peewee.Field) -> Callable[[Any], Any]:
        return _timestamp_text

    def timestamp_from_db(self, field: peewee.Field, value: Any) -> Any:
        return _timestamp_from_text(value)

    def value_reader(self, field: peewee.Field) -> Callable[[Any], Any] | None:
        # Both python_values map None to None, as these do.
        python_value = type(field).python_value
        if python_value is TimestampField.python_value:
            return _timestamp_from_text
        if python_value is JSONField.python_value:
            return json_loads
        return None

    def json_to_db(self, field: peewee.Field, value: Any) -> Any:
        return json_dumps(value)

    def json_from_db(self, field: peewee.Field, value: Any) -> Any:
        return json_loads(value)


class ImmediateTransaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on an exception): what peewee's
    ``atomic(lock_type="IMMEDIATE")`` sends at the outermost level, at a third of its Python cost
    (16 µs, as much as the statements of a small write).  It is pushed on peewee's transaction
    stack like peewee's own, so ``in_transaction()`` sees it and a nested ``atomic()`` inside it
    becomes a savepoint."""

    __slots__ = ("database",)

    def __init__(self, database: peewee.Database) -> None:
        self.database = database

    def __enter__(self) -> "ImmediateTransaction":
        database = self.database
        with peewee.__exception_wrapper__:
            database.cursor().execute("BEGIN IMMEDIATE")
        database.push_transaction(self)
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, traceback: Any) -> None:
        database = self.database
        database.pop_transaction()
        if exc_type is not None:
            self.end("ROLLBACK")
            return
        try:
            self.end("COMMIT")
        except Exception:
            self.end("ROLLBACK")
            raise
        database._run_commit_callbacks()

    def end(self, statement: str) -> None:
        """Send ``COMMIT`` or ``ROLLBACK``."""
        database = self.database
        if statement == "ROLLBACK":
            database._clear_commit_callbacks()
            if database.is_closed():
                return  # the connection is gone, and its transaction with it
        with peewee.__exception_wrapper__:
            database.cursor().execute(statement)


class SQLiteBackend(Backend):
    """A SQLite file (or a private in-memory database)."""

    name = "SQLITE"
    # RETURNING since SQLite 3.35; json_patch merges JSON objects (merges_json_members says which).
    features = BackendFeatures(returning=True, json_object_merge=True)

    def __init__(self, *, url: str) -> None:
        super().__init__(url)
        self.path = parse_sqlite_url(url)
        self.in_memory = self.path == ":memory:"
        pragmas = {"busy_timeout": int(BUSY_TIMEOUT_S * 1000), "foreign_keys": 0}
        if not self.in_memory:
            # Memory-mapped reads: index-driven lookups of scattered rows (counting filtered
            # trace roots at a million spans) run several times faster than through read().
            pragmas.update({"journal_mode": "wal", "synchronous": "normal", "mmap_size": MMAP_SIZE})
        # :memory: is one database per store: every thread shares its single connection,
        # serialized by a lock (thread_safe=False keeps one connection state for all threads).
        self.database = SQLiteDatabase(self.path, pragmas=pragmas, timeout=BUSY_TIMEOUT_S,
                                       thread_safe=not self.in_memory, check_same_thread=False)
        self.database.register_function(jsonb_to_json_text, JSON_TEXT_FUNCTION, 1, deterministic=True)
        self._memory_lock = threading.RLock() if self.in_memory else None

    def connection(self) -> ContextManager[None]:
        # A file database needs nothing beyond the shared scope (no extra layer on hot calls).
        return super().connection() if self._memory_lock is None else self._serialized_connection()

    @contextmanager
    def _serialized_connection(self) -> Iterator[None]:
        """The scope of a call on ``:memory:``: its single connection, one thread at a time."""
        with self._memory_lock, super().connection():
            yield

    def unavailable(self, exc: BaseException) -> BackendUnavailableError:
        """A file that cannot be opened: the error shows the path resolved to absolute, says when
        its folder is missing, and explains ``sqlite:///relative`` vs ``sqlite:////absolute`` when
        a relative path looks like it meant an absolute one (``sqlite:///tmp/x.db``)."""
        if self.in_memory:
            return super().unavailable(exc)
        path = os.path.abspath(self.path)
        message = f"Cannot open SQLite database {self.display_url} at {path}: {first_line(exc)}"
        folder = os.path.dirname(path)
        if not os.path.isdir(folder):
            message += f" (the folder {folder} does not exist)"
        top = self.path.split("/", 1)[0]
        if self.display_url.startswith("sqlite:///") and not os.path.isabs(self.path) \
                and top not in ("", ".", "..") and os.path.isdir(os.path.join(os.sep, top)):
            message += (f"; three slashes make the path relative to the current folder {os.getcwd()}: "
                        f"for the absolute path /{self.path} write sqlite:////{self.path} (four slashes)")
        return BackendUnavailableError(message, details={"url": self.display_url, "path": path,
                                                         "code": "CANNOT_CONNECT"})

    def close(self) -> None:
        if self._memory_lock is None:
            super().close()
            return
        with self._memory_lock:
            super().close()

    # -- DDL -----------------------------------------------------------------------------

    def prepare_models(self, models) -> None:
        for model in models:
            if getattr(model._meta, "sqlite_all_nullable", False):  # the table Mastra creates here
                for field in model._meta.sorted_fields:
                    field.null = field.null or not field.primary_key
        super().prepare_models(models)

    # SQLite's table key is always a UNIQUE constraint, and an older table gets a unique index.

    def has_key(self, model: type[peewee.Model], key: Any) -> bool:
        return super().has_key(model, dataclasses.replace(key, primary=False))

    def key_constraint(self, key: Any) -> str:
        return key.sqlite_constraint

    def add_key(self, model: type[peewee.Model], key: Any) -> None:
        columns = ", ".join(f'"{column}"' for column in key.columns)
        self.database.execute_sql(f'CREATE UNIQUE INDEX IF NOT EXISTS "{key.sqlite_index}" '
                                  f'ON {self.table_sql(model)} ({columns})')

    def create_tables(self, models: Sequence[type[peewee.Model]]) -> None:
        with self.write():
            for model in models:
                self.create_table(model)
                existing = {c.name for c in self.database.get_columns(model._meta.table_name)}
                for field in model._meta.sorted_fields:
                    if field.column_name not in existing:
                        self.database.execute_sql(
                            f'ALTER TABLE "{model._meta.table_name}" ADD COLUMN "{field.column_name}" '
                            f'{self.database._field_types.get(field.field_type, field.field_type)}')
                for index in getattr(model._meta, "sqlite_indexes", ()):
                    unique = "UNIQUE " if index.unique else ""
                    self.create_index(index, f'CREATE {unique}INDEX IF NOT EXISTS "{index.name}" '
                                             f'ON "{model._meta.table_name}" ({index.columns})'
                                             + (f" WHERE {index.where}" if index.where else ""))
                for name in getattr(model._meta, "dropped_indexes", ()):
                    self.database.execute_sql(f'DROP INDEX IF EXISTS "{name}"')

    # -- transactions --------------------------------------------------------------------

    def write(self, *lock_keys: Any) -> ContextManager[Any]:
        # BEGIN IMMEDIATE takes the write lock up front, so read-then-write transactions never
        # fail with "database is locked" half-way (the busy timeout makes them wait instead).
        if self.database.in_transaction():
            return self.database.atomic()  # a savepoint inside the running transaction
        return ImmediateTransaction(self.database)

    # -- writes --------------------------------------------------------------------------

    def insert_returning(self, model: type[peewee.Model], row: dict[str, Any]) -> dict[str, Any]:
        # SQLite keeps exactly the values it is given, so the row as read back is known without
        # RETURNING (which costs a tenth of a millisecond per call here): each value as its field
        # reads its driver value back; JSON values are the objects given (their text decodes to
        # equal ones).
        names = tuple(row)
        fields, converters = self.columns(model, names)
        values = driver_values(converters, row.values())
        self.execute_rows(self.insert_statement(model, names, "error"), [tuple(values)])
        record = dict.fromkeys(model._meta.fields)
        for field, given, value in zip(fields, row.values(), values):
            as_given = given is None or (isinstance(field, JSONField) and type(given) is not JSONText)
            record[field.name] = given if as_given else field.python_value(value)
        return record

    # -- JSON filters --------------------------------------------------------------------

    def json_text(self, column: Any) -> peewee.Node:
        """The column as JSON text (JSONB blobs converted), or NULL when it is not valid JSON."""
        # Only blobs go through the Python function: text, the common case, stays in C.
        text = peewee.Case(None, [(peewee.fn.typeof(column) == "blob", peewee.fn.cs_json(column))], column)
        return peewee.Case(None, [(peewee.fn.json_valid(text) == 1, text)], None)

    def json_members_equal(self, field: Any, filters: dict[str, Any], path: str = "$", *,
                           scalars_first: bool = False) -> peewee.Node | None:
        if not filters or any(isinstance(value, str) and "\x00" in value for value in filters.values()):
            return None  # json_extract cuts a string at U+0000: such a filter is decided in Python
        document = self.json_text(field)
        condition = None
        for key, value in filters.items():
            key_path = f"{path}.{key}"
            kind = peewee.fn.json_type(document, key_path)
            if isinstance(value, str) and not value.startswith(("{", "[")):
                # json_extract gives a string member as its text, other scalars as numbers or
                # NULL, objects and arrays as JSON text starting with "{" or "[": for any other
                # string the comparison alone is the typed equality (no json_type parse per row).
                term = peewee.fn.json_extract(document, key_path) == value
            elif value is True:
                term = kind == "true"
            elif value is False:
                term = kind == "false"
            elif value is None:
                term = kind == "null"
            elif isinstance(value, str):
                term = (kind == "text") & (peewee.fn.json_extract(document, key_path) == value)
            else:
                term = kind.in_(["integer", "real"]) & (peewee.fn.json_extract(document, key_path) == value)
            condition = term if condition is None else condition & term
        return condition

    def json_array_contains_all(self, field: Any, values: Sequence[str]) -> peewee.Node:
        document = self.json_text(field)  # JSONB blobs of other clients as text
        condition = peewee.fn.json_type(document) == "array"  # json_each also walks objects
        for value in values:
            condition &= peewee.NodeList((
                peewee.SQL("EXISTS (SELECT 1 FROM json_each("), document,
                peewee.SQL(") AS element WHERE element.type = 'text' AND element.value = ?)", [value]),
            ), glue="")
        return condition

    def merges_json_members(self, members: dict[str, Any]) -> bool:
        # json_patch is RFC 7396's merge: a null member deletes the key and an object member is
        # merged into the stored one, where Python's {**stored, **members} sets them as given.
        return all(value is not None and type(value) is not dict for value in members.values())

    def json_object_merge(self, field: Any, members: peewee.Node) -> peewee.Node:
        # json_patch keeps the stored keys in place and appends new ones, as a dict merge does.
        text = self.json_text(field)
        stored = peewee.Case(None, [(peewee.fn.json_type(text) == "object", text)], "{}")
        return peewee.fn.json_patch(stored, members)

    def json_present(self, field: Any) -> peewee.Node:
        # json_type of text that is not JSON is NULL: such a value is present.
        return field.is_null(False) & (peewee.fn.coalesce(peewee.fn.json_type(self.json_text(field)), "") != "null")
