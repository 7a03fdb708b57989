"""The base of every domain repository: construction, ``init``, and the operation wrapper that
scopes connections and turns failures into the library's errors with the right ids."""

from __future__ import annotations

import functools
import gc
import logging
import re
import threading
from contextlib import contextmanager, nullcontext
from typing import Any, Callable, ClassVar, Iterator, Sequence, TypeVar

import peewee

# ITER_CHUNK: the default chunk_size of the domains' iter_* methods, which import it from here.
from .backends.base import ITER_CHUNK, Backend, UnstorableText, rejecting_unstorable_text, statement_key  # noqa: F401
from .errors import NotSupportedError, StorageError, ValidationError
from .validation import Problems, check_arguments_text, check_id, json_matches

logger = logging.getLogger("composite_store")

F = TypeVar("F", bound=Callable[..., Any])


def operation(func: F) -> F:
    """Wrap a public repository method.

    The call runs inside the backend's connection scope; a :class:`StorageError` raised inside
    gets the id ``STORAGE_<BACKEND>_<METHOD>_<STATUS>`` and the domain; a driver error becomes
    a :class:`StorageError` (``…_FAILED``) with the driver error as ``__cause__``.  Any other
    exception (for example one raised by a user callback) propagates unchanged.

    In a domain that ``rejects_unstorable_text``, an argument holding U+0000 or an unpaired
    surrogate that reaches a statement unchecked (an id or filter value of a read) becomes a
    :class:`ValidationError` naming it; elsewhere the backend maps it as writes map stored text.
    """
    name = func.__name__.upper()

    @functools.wraps(func)
    def wrapper(self: "DomainRepository", *args: Any, **kwargs: Any) -> Any:
        with operation_scope(self, name, kwargs):
            return func(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def streaming(func: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
    """Wrap a public ``iter_*`` method, which validates its arguments and returns the records'
    iterator (over :meth:`Backend.iterate`).

    The arguments are checked at the call, as :func:`operation` does; the rows are read as the
    caller advances, each step inside the operation's scope, so a failure while iterating is
    the same :class:`StorageError` (``STORAGE_<BACKEND>_ITER_…``) a list method raises.
    """
    name = func.__name__.upper()

    @functools.wraps(func)
    def wrapper(self: "DomainRepository", *args: Any, **kwargs: Any) -> Iterator[Any]:
        with operation_scope(self, name, kwargs):
            records = func(self, *args, **kwargs)
        return _scoped_steps(self, name, kwargs, records)

    return wrapper


def _scoped_steps(repository: "DomainRepository", name: str, kwargs: dict[str, Any],
                  records: Iterator[Any]) -> Iterator[Any]:
    with operation_scope(repository, name, kwargs):
        yield from records


@contextmanager
def operation_scope(self: "DomainRepository", name: str, kwargs: dict[str, Any]) -> Iterator[None]:
    """The scope of one repository call (:func:`operation`): the backend's connection, and the
    library's errors, named after ``name``, for what fails inside."""
    backend = self.backend
    try:
        with backend.connection(), rejecting_unstorable_text() if self.rejects_unstorable_text else nullcontext():
            yield
    except UnstorableText as exc:
        try:
            check_arguments_text(kwargs)
        except ValidationError as error:
            raise error.bind(backend=backend.name, operation=name, domain=self.domain) from None
        raise StorageError("A stored value holds U+0000 or an unpaired surrogate", category="SYSTEM").bind(
            backend=backend.name, operation=name, domain=self.domain) from exc
    except StorageError as exc:
        raise exc.bind(backend=backend.name, operation=name, domain=self.domain)
    except Exception as exc:
        error = backend.translate_error(exc)
        if error is None:
            raise
        logger.debug("%s.%s failed: %s", type(self).__name__, name.lower(), error)
        raise error.bind(backend=backend.name, operation=name, domain=self.domain) from exc


class DomainRepository:
    """Base of the seven domain repositories.

    Built with either connection settings for a new backend (``**options``, passed to
    ``backend_class``) or ``store=`` a whole store of the same backend whose connections it then
    shares.  Constructors validate their arguments but never connect.
    """

    #: The domain key (``"memory"``, ``"workflows"``, …).
    domain: ClassVar[str] = ""
    #: Whether text the databases cannot hold (U+0000, unpaired surrogates) is refused with a
    #: validation error (agents, datasets, experiments) instead of removed (README *Characters
    #: that cannot be stored*); reads follow the same rule as writes.
    rejects_unstorable_text: ClassVar[bool] = False
    #: The backend class this repository runs on; set by the per-backend subclasses.
    backend_class: ClassVar[type[Backend]]

    def __init__(self, *, store: Any = None, **options: Any) -> None:
        try:
            if store is not None:
                if options:
                    raise ValidationError(fields={k: ["not allowed together with store="] for k in options})
                backend = getattr(store, "backend", None)
                if not isinstance(backend, self.backend_class):
                    raise ValidationError(fields={"store": [f"store must be a whole store of the "
                                                            f"{self.backend_class.name} backend"]})
                self.backend = backend
            else:
                self.backend = self.backend_class(**options)
        except TypeError as exc:
            error = _constructor_error(self, exc)
            if error is exc:
                raise
            raise error from None
        except StorageError as exc:
            raise exc.bind(backend=self.backend_class.name, operation="INIT", domain=self.domain)
        self._proxy = peewee.DatabaseProxy()
        self._proxy.initialize(self.backend.database)
        self.models = self.build_models(self._proxy)
        self.tables = list(vars(self.models).values())
        self.backend.prepare_models(self.tables)

    def build_models(self, database: peewee.DatabaseProxy) -> Any:
        """Declare this domain's models bound to ``database``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.backend.display_url!r})"

    @operation
    def init(self) -> None:
        """Create missing tables, columns and indexes; idempotent and safe from many threads."""
        self.backend.run_once(self.domain, lambda: self.backend.create_tables(self.tables))

    @operation
    def dangerously_clear_all(self) -> None:
        """Delete every row of this domain's tables (for tests); other tables are untouched."""
        self.backend.clear(self.tables)

    @operation
    def count_rows(self) -> dict[str, int | None]:
        """Live rows per table of this domain (``None`` for a table that does not exist yet).

        Counts read like every other read (ClickHouse: ``FINAL`` and ``_deleted = 0``); nothing
        is created.
        """
        counts: dict[str, int | None] = {}
        for model in self.tables:
            exists = self.backend.database.table_exists(model._meta.table_name, model._meta.schema)
            counts[model._meta.table_name] = self.backend.select(model).count() if exists else None
        return counts

    def full_row(self, model: type[peewee.Model], row: dict[str, Any]) -> dict[str, Any]:
        """``row`` of ``model`` (the fields every backend declares) with the columns only this
        backend's table has filled in as the domain's own writes fill them (copies write rows
        read from another database through this)."""
        return row

    def iter_matching(self, problems: Problems, model: type[peewee.Model], record: Callable[[dict], dict],
                      chunk_size: Any, order: Sequence[peewee.Field] | None = None,
                      **equals: Any) -> Iterator[dict]:
        """The body every ``iter_*`` method shares: the records (``record(row)``) of the rows of
        ``model`` whose fields equal ``equals`` (``None``: any), read ``chunk_size`` at a time in
        ``order`` (:meth:`Backend.iterate`).  ``problems`` holds the method's own checks; every
        problem is raised before anything is read."""
        check_chunk_size(problems, chunk_size)
        query = matching(problems, self.backend.select(model), model, **equals)
        problems.raise_if_any()
        return map(record, self.backend.iterate(query, order, chunk_size=chunk_size))

    def supports_concurrent_updates(self) -> bool:
        """Whether read-modify-write methods are atomic across concurrent callers."""
        return self.backend.features.concurrent_updates

    def close(self) -> None:
        """Close the backend's connections (shared with the store this repository came from)."""
        self.backend.close()


def _constructor_error(repository: DomainRepository, exc: TypeError) -> Exception:
    """An unknown option is a validation error; a missing one stays Python's ``TypeError``."""
    match = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
    if match:
        return ValidationError(fields={match.group(1): ["Unknown field."]},
                               id=f"STORAGE_{repository.backend_class.name}_INIT_INVALID_INPUT",
                               domain=repository.domain)
    return exc


class UnsupportedOnClickHouse:
    """Mixin for domains that ClickHouse does not hold yet: construction raises at once.

    List it before the domain's repository class; ``domain`` comes from that class (declared
    here without a value, so it does not shadow the repository's).
    """

    domain: ClassVar[str]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotSupportedError(
            f"The {self.domain} domain is not available on ClickHouse; use SQLite or PostgreSQL for it.",
            id="STORAGE_CLICKHOUSE_INIT_NOT_SUPPORTED", domain=self.domain)


def fetch_page(backend: Backend, query: peewee.ModelSelect, order: list[Any], request: Any, *,
               predicate: Callable[[dict[str, Any]], bool] | None = None,
               include_total: bool = True, bitmap_count: bool = False,
               count: Callable[[peewee.ModelSelect], int] | None = None) -> tuple[list[dict[str, Any]], int, bool]:
    """One page of ``query`` in ``order``: ``(rows, total, has_more)``.

    ``predicate`` is a filter the database cannot evaluate (metadata filters on ClickHouse); then
    every candidate row is read and the page is cut in Python.  With ``include_total=False`` the
    count is skipped: one extra row says whether there is more, and ``total`` is ``offset`` plus
    the rows returned.  ``bitmap_count`` counts with bitmap scans (:meth:`Backend.count`), for
    filtered lists of big tables; ``count(query)``, when given, computes the total instead (a
    domain that knows which of its indexes can answer the count).
    """
    offset, limit = request.offset, request.limit
    with backend.read():
        if predicate is not None:
            rows = [row for row in query.order_by(*order) if predicate(row)]
            page = rows[offset:] if limit is None else rows[offset:offset + limit]
            if include_total:
                return page, len(rows), request.has_more(len(rows))
            return page, offset + len(page), limit is not None and len(rows) > offset + limit
        if not include_total:
            fetch = query.order_by(*order).offset(offset or None)
            rows = list(fetch if limit is None else fetch.limit(limit + 1))
            page = rows if limit is None else rows[:limit]
            return page, offset + len(page), limit is not None and len(rows) > limit
        total = count(query) if count is not None else backend.count(query, bitmap=bitmap_count)
        if limit == 0 or offset >= total:
            return [], total, request.has_more(total)
        fetch = query.order_by(*order).offset(offset or None)
        rows = list(fetch if limit is None else fetch.limit(limit))
        return rows, total, request.has_more(total)


def fetch_prepared_page(backend: Backend, key: Any, build: Callable[[], peewee.ModelSelect], order: list[Any],
                        request: Any, values: dict[str, Any], *, include_total: bool = True,
                        count: Callable[[], int] | None = None) -> tuple[list[dict[str, Any]], int, bool]:
    """:func:`fetch_page` of a query whose shape is fixed, rendered to SQL once.

    ``build()`` gives the query with every varying value as :meth:`Backend.param` (bound from
    ``values``, already in their stored form); ``key`` (the ``shape`` of :meth:`Backend.prepared`)
    must determine the SQL of ``build()`` at its call site and of ``order``.  The count and the
    page are :meth:`Backend.prepared` statements: a short page of a hot list (a thread's latest
    messages) costs a third less than when peewee renders it.
    ``count()``, when given, computes the total instead (with :func:`count_prepared` too).
    """
    offset, limit = request.offset, request.limit
    bounds = {"offset": offset, "limit": None if limit is None else limit + (0 if include_total else 1)}

    def page() -> peewee.ModelSelect:
        query = build().order_by(*order)
        query = query if not offset else query.offset(backend.param("offset"))
        return query if limit is None else query.limit(backend.param("limit"))

    page_key = (statement_key(build, key), bool(offset), limit is None)
    with backend.read():
        if not include_total:
            rows = backend.prepared(page_key, page).rows(**values, **bounds)
            return rows[:limit], offset + len(rows[:limit]), limit is not None and len(rows) > limit
        total = count() if count is not None else count_prepared(backend, key, build, values)
        if limit == 0 or offset >= total:
            return [], total, request.has_more(total)
        return backend.prepared(page_key, page).rows(**values, **bounds), total, request.has_more(total)


def count_prepared(backend: Backend, key: Any, build: Callable[[], peewee.ModelSelect], values: dict[str, Any]) -> int:
    """The number of rows of ``build()``, a query of fixed shape as :func:`fetch_prepared_page`
    takes it; the count statement is rendered once per call site of ``build`` and ``key``."""
    statement = backend.prepared(statement_key(build, key), lambda: peewee.Select(
        [build().order_by().select(peewee.SQL("1")).alias("_wrapped")], [peewee.fn.COUNT(peewee.SQL("1"))]).tuples())
    return statement.first(**values)[0]


def matching(problems: Problems, query: peewee.ModelSelect, model: type[peewee.Model],
             **values: Any) -> peewee.ModelSelect:
    """``query`` narrowed to the rows whose fields equal the given ids (``None``: any); each id
    is checked as :func:`~composite_store.validation.check_id` checks one (the ``iter_*`` filters)."""
    for name, value in values.items():
        if value is not None:
            check_id(problems, name, value)
            query = query.where(getattr(model, name) == value)
    return query


def check_chunk_size(problems: Problems, chunk_size: Any) -> None:
    """``chunk_size`` of an ``iter_*`` method: a positive integer."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        problems.add("chunk_size", "chunk_size must be a positive integer")


def filter_by_metadata(backend: Backend, query: peewee.ModelSelect, field: peewee.Field, filters: dict[str, Any],
                       *, path: str = "$", document: Callable[[dict[str, Any]], Any] | None = None
                       ) -> tuple[peewee.ModelSelect, Callable[[dict[str, Any]], bool] | None]:
    """Apply a metadata filter on the JSON object at ``path`` in ``field``: in SQL where the
    backend can, else as a Python predicate for :func:`fetch_page`.

    Returns ``(query, predicate)``; ``document(row)`` gives the filtered object of a row (default:
    the field's value).
    """
    if not filters:
        return query, None
    condition = backend.json_members_equal(field, filters, path)
    if condition is not None:
        return query.where(condition), None
    document = document or (lambda row: row[field.name])
    return query, lambda row: json_matches(document(row), filters)


def order_terms(field: peewee.Field, descending: bool, *tie_breakers: peewee.Field) -> list[Any]:
    """``field`` in the requested direction, then the tie-breaker key columns ascending."""
    return [field.desc() if descending else field.asc(), *(tie.asc() for tie in tie_breakers)]


_gc_pause_lock = threading.Lock()
_gc_pauses = 0


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for a bulk conversion (thread-safe, nestable).

    Converting a batch of thousands of records allocates hundreds of thousands of acyclic
    containers (record dicts, JSON copies), which triggers full collections that traverse the
    whole heap (measured: 0.4 s of 1.5 s for 20,000 scores). Paused, reference counting still
    frees everything, and one young collection scans the survivors when the pause ends: free
    what is no longer needed (rows already written) before that. The collector is re-enabled
    when the last pause ends, and left alone if it was disabled before the first one.
    """
    global _gc_pauses
    with _gc_pause_lock:
        if _gc_pauses == 0 and not gc.isenabled():
            paused = False  # disabled by someone else: not ours to touch
        else:
            paused = True
            _gc_pauses += 1
            gc.disable()
    try:
        yield
    finally:
        if paused:
            with _gc_pause_lock:
                _gc_pauses -= 1
                if _gc_pauses == 0:
                    gc.enable()
