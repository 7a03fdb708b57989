"""What every backend shares: connection scoping, error translation, the SQL write primitives."""

from __future__ import annotations

import functools
import logging
import operator
import re
import threading
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Sequence

import peewee

from models.fields import TimestampField

from ..errors import BackendUnavailableError, StorageError
from ..values import clean_text

logger = logging.getLogger("repository")

#: Rows per multi-row INSERT on SQLite and PostgreSQL.
CHUNK_SIZE = 500


def mask_password(url: str) -> str:
    """``scheme://user:secret@host`` → ``scheme://user:***@host``."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


class Backend:
    """One configured database.

    A backend owns the peewee ``Database`` (``self.database``) and offers the handful of
    operations whose SQL differs between databases.  Domain repositories are written against
    these methods, so they read the same on every database.
    """

    #: ``SQLITE``, ``PG`` or ``CLICKHOUSE``: the backend part of error ids.
    name = ""
    #: Whether read-modify-write operations are atomic across concurrent callers.
    supports_concurrent_updates = True
    #: Whether strings must lose U+0000 before they are written (PostgreSQL).
    strips_nul = False
    #: Whether metadata filters run in SQL (else the repository evaluates them in Python).
    sql_json_filters = True

    def __init__(self, display_url: str) -> None:
        self.display_url = mask_password(display_url)
        self._init_lock = threading.Lock()
        self._initialized: set[str] = set()
        self._closed = False

    # -- connections ---------------------------------------------------------------------

    @contextmanager
    def connection(self) -> Iterator[None]:
        """Scope of one repository call; the database connects lazily on first use."""
        yield

    def close(self) -> None:
        """Close this thread's connection (pools: every idle connection)."""
        if not self.database.is_closed():
            self.database.close()

    def unavailable(self, exc: BaseException) -> BackendUnavailableError:
        """The error for a database that cannot be reached."""
        reason = mask_password(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        return BackendUnavailableError(f"Cannot reach database {self.display_url}: {reason}",
                                       details={"url": self.display_url})

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
            return clean_text(value, strip_nul=self.strips_nul)
        if isinstance(value, (dict, list)):
            if self.strips_nul:
                return _strip_nul_deep(value)
            return value
        return value

    # -- reads ---------------------------------------------------------------------------

    def select(self, model: type[peewee.Model], *fields: Any) -> peewee.ModelSelect:
        """``SELECT`` of live rows (ClickHouse: ``FINAL`` and ``_deleted = 0``)."""
        return model.select(*fields).dicts()

    @contextmanager
    def read(self) -> Iterator[None]:
        """A consistent read (count and rows in one transaction where there are transactions)."""
        with self.database.atomic():
            yield

    def for_update(self, query: peewee.ModelSelect) -> peewee.ModelSelect:
        """Lock the selected rows until the transaction ends, where the database can."""
        return query

    @contextmanager
    def write(self, *lock_keys: Any) -> Iterator[None]:
        """A write transaction; ``lock_keys`` name the records a read-modify-write touches
        (used where there are no transactions to serialize writers)."""
        with self.database.atomic():
            yield

    def metadata_condition(self, field: Any, filters: dict[str, Any], path: str = "$") -> peewee.Expression | None:
        """SQL condition for a metadata filter on the JSON object at ``path`` in ``field``, or
        ``None`` when the repository must evaluate it in Python
        (:func:`repository.validation.json_matches`)."""
        return None

    # -- writes --------------------------------------------------------------------------

    def prepare_rows(self, model: type[peewee.Model], rows: Sequence[dict[str, Any]]) -> Sequence[dict[str, Any]]:
        """Complete rows before they are written (PostgreSQL fills the ``…Z`` timestamp columns)."""
        return rows

    def insert(self, model: type[peewee.Model], rows: Sequence[dict[str, Any]]) -> None:
        """Insert new rows (dicts keyed by field name), in multi-row chunks."""
        for chunk in peewee.chunked(self.prepare_rows(model, rows), CHUNK_SIZE):
            model.insert_many(chunk).execute()

    def insert_if_absent(self, model: type[peewee.Model], rows: Sequence[dict[str, Any]]) -> None:
        """Insert the rows whose primary key is not stored yet; leave stored ones alone."""
        for chunk in peewee.chunked(self.prepare_rows(model, rows), CHUNK_SIZE):
            model.insert_many(chunk).on_conflict_ignore().execute()

    def upsert(self, model: type[peewee.Model], rows: Sequence[dict[str, Any]], *,
               preserve: Sequence[str] = ()) -> None:
        """Insert rows or replace the stored ones with the same primary key, keeping the fields
        named in ``preserve`` as stored."""
        pk = _primary_key_fields(model)
        fields = model._meta.fields
        kept = set(preserve) | {f"{name}_z" for name in preserve}
        for chunk in peewee.chunked(self.prepare_rows(model, rows), CHUNK_SIZE):
            update = {fields[name]: peewee.EXCLUDED[fields[name].column_name]
                      for name in chunk[0] if name not in kept and fields[name] not in pk}
            query = model.insert_many(chunk)
            query = query.on_conflict(conflict_target=pk, update=update) if update else query.on_conflict_ignore()
            query.execute()

    def update(self, model: type[peewee.Model], where: peewee.Expression, values: dict[str, Any]) -> int:
        """Set ``values`` (field name → Python value) on the rows matching ``where``."""
        values = self.prepare_rows(model, [values])[0]
        return model.update({model._meta.fields[k]: v for k, v in values.items()}).where(where).execute()

    def replace(self, model: type[peewee.Model], stored: dict[str, Any], values: dict[str, Any]) -> None:
        """Change one stored row (as read inside this write) to carry ``values``."""
        pk = _primary_key_fields(model)
        where = functools.reduce(operator.and_, [field == stored[field.name] for field in pk])
        self.update(model, where, values)

    def delete(self, model: type[peewee.Model], where: peewee.Expression) -> int:
        """Delete the rows matching ``where``."""
        return model.delete().where(where).execute()

    def delete_bulk(self, model: type[peewee.Model], where: peewee.Expression, *, operation: str = "DELETE") -> int:
        """Delete many rows at once (ClickHouse: an awaited mutation instead of tombstones)."""
        return self.delete(model, where)


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
