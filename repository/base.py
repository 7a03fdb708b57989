"""The base of every domain repository: construction, ``init``, and the operation wrapper that
scopes connections and turns failures into the library's errors with the right ids."""

from __future__ import annotations

import functools
import gc
import logging
import re
import threading
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Callable, ClassVar, Iterator, Sequence, TypeVar

import peewee

# ITER_CHUNK: the default chunk_size of the domains' iter_* methods, which import it from here.
from .backends.base import ITER_CHUNK, Backend, UnstorableText, rejecting_unstorable_text, statement_key  # noqa: F401
from .backends.base import fetch_all, keyset_after
from .errors import NotSupportedError, StorageError, ValidationError
from .models.fields import TimestampField, ZonedTimestampField
from .page import decode_cursor, encode_cursor
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


class operation_scope:
    """The scope of one repository call (:func:`operation`): the backend's connection, and the
    library's errors, named after ``name``, for what fails inside.

    A plain object rather than a generator-based context manager: every call enters it, and on
    SQLite its few microseconds are a visible part of a single-row write.
    """

    __slots__ = ("repository", "name", "kwargs", "connection", "rejecting")

    def __init__(self, repository: "DomainRepository", name: str, kwargs: dict[str, Any]) -> None:
        self.repository, self.name, self.kwargs = repository, name, kwargs

    def __enter__(self) -> None:
        self.connection = self.repository.backend.connection()
        self.connection.__enter__()
        self.rejecting = rejecting_unstorable_text() if self.repository.rejects_unstorable_text else None
        if self.rejecting is not None:
            self.rejecting.__enter__()

    def __exit__(self, exc_type: Any, exc: BaseException | None, traceback: Any) -> None:
        raised = None
        try:
            try:
                if self.rejecting is not None:
                    self.rejecting.__exit__(exc_type, exc, traceback)
            finally:
                self.connection.__exit__(exc_type, exc, traceback)
        except BaseException as error:  # the connection scope's BackendUnavailableError
            exc = raised = error
        if isinstance(exc, Exception):
            self.translate(exc)
        if raised is not None:
            raise raised

    def translate(self, exc: Exception) -> None:
        """Raise ``exc`` as the library's error of this operation; return for a non-database
        error (one raised by a user callback), which then propagates unchanged."""
        repository, backend, name = self.repository, self.repository.backend, self.name
        if isinstance(exc, UnstorableText):
            try:
                check_arguments_text(self.kwargs)
            except ValidationError as error:
                raise error.bind(backend=backend.name, operation=name, domain=repository.domain) from None
            raise StorageError("A stored value holds U+0000 or an unpaired surrogate", category="SYSTEM").bind(
                backend=backend.name, operation=name, domain=repository.domain) from exc
        if isinstance(exc, StorageError):
            raise exc.bind(backend=backend.name, operation=name, domain=repository.domain)
        error = backend.translate_error(exc)
        if error is None:
            return
        logger.debug("%s.%s failed: %s", type(repository).__name__, name.lower(), error)
        raise error.bind(backend=backend.name, operation=name, domain=repository.domain) from exc


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
        return self.iter_query(query, record, chunk_size, order=order)

    def iter_query(self, query: peewee.ModelSelect, record: Callable[[dict], dict], chunk_size: int, *,
                   predicate: Callable[[dict], bool] | None = None,
                   order: Sequence[peewee.Field] | None = None) -> Iterator[dict]:
        """The records of the rows of ``query`` (a list method's filtered select) that pass
        ``predicate`` (the part of its filter a backend checks in Python, as :func:`fetch_page`
        takes it), read ``chunk_size`` at a time in ``order`` (:meth:`Backend.iterate`)."""
        rows = self.backend.iterate(query, order, chunk_size=chunk_size)
        return map(record, rows if predicate is None else filter(predicate, rows))

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


class Keyset:
    """A list's order, ``field`` in one direction then the ``ties`` (the key: an id, or the
    columns of a composite key) ascending, and the cursors that page it by key: ``after=`` the
    :attr:`Page.cursor` of a page reads the rows that follow its last item through the index of
    the order, as fast at row 50,000 as at row 0, where an offset reads and drops every row
    before the page.
    """

    def __init__(self, field: peewee.Field, descending: bool, *ties: peewee.Field) -> None:
        self.field, self.descending, self.ties = field, descending, ties
        # Named after the order, so a cursor of another order (or list) is refused, not misread.
        self.name = f"{field.name} {'DESC' if descending else 'ASC'}"

    @property
    def order(self) -> list[Any]:
        """The ``ORDER BY`` terms (:func:`order_terms`)."""
        return order_terms(self.field, self.descending, *self.ties)

    def cursor(self, rows: Sequence[dict[str, Any]]) -> str | None:
        """The cursor after the last of ``rows`` (``None`` without rows)."""
        if not rows:
            return None
        last = rows[-1]
        return encode_cursor([self.name, last[self.field.name], *(last[tie.name] for tie in self.ties)])

    def after(self, problems: Problems, cursor: Any, request: Any) -> peewee.Expression | None:
        """The condition selecting the rows behind ``cursor`` (``None``: no cursor).  A page read
        ``after=`` a cursor starts there, so ``page`` must be 0; problems go to ``problems``."""
        if cursor is None:
            return None
        if request.page:
            problems.add("page", "page must be 0 when after is given", "INVALID_PAGE")
        values = decode_cursor(cursor)
        if (values is None or len(values) != 2 + len(self.ties) or values[0] != self.name
                or not all(isinstance(key, str) for key in values[2:])
                or not isinstance(values[1], (str, int, float)) or isinstance(values[1], bool)):
            problems.add("after", "after must be the cursor of a page of this list in the same order")
            return None
        value, last_key = values[1], values[2:]
        if isinstance(self.field, (TimestampField, ZonedTimestampField)):
            try:
                value = datetime.fromisoformat(str(value))
            except ValueError:
                problems.add("after", "after must be the cursor of a page of this list in the same order")
                return None
        field = self.field
        following = keyset_after(self.ties, last_key)  # the key after the cursor's, column by column
        # The range alone (<= / >=) is what an index on the order column serves; the rest drops
        # the rows of the cursor's own value up to and including its key.
        if self.descending:
            return (field <= value) & ((field < value) | following)
        return (field >= value) & ((field > value) | following)


def count_query(query: peewee.SelectBase) -> peewee.Select:
    """``SELECT COUNT(*)`` of the rows of ``query`` wrapped in a subquery (as peewee's ``count()``
    words it), to be run alone or embedded as a scalar subquery.  ``COUNT(*)``, not peewee's
    ``COUNT(1)``: SQLite evaluates and tests the ``1`` for every row (a scorer's 100,000 index
    entries: 41.2M instructions against 44.9M, callgrind)."""
    wrapped = query.order_by()
    if wrapped._group_by is None and wrapped._having is None and not wrapped._distinct:
        wrapped = wrapped.select(peewee.SQL("1"))
    return peewee.Select([wrapped.alias("_wrapped")], [peewee.fn.COUNT(peewee.SQL("*"))])


#: The offset from which a backend with ``features.deep_offset_by_key`` reads a page by its keys.
DEEP_OFFSET = 1_000

#: The column a page's rows carry the total in, when it is read with them (:func:`fetch_page`).
TOTAL_COLUMN = "_total"


def _split_total(rows: list[dict[str, Any]]) -> int | None:
    """The total the rows of a page read with it carry (each row loses the column); ``None`` without rows."""
    total = None
    for row in rows:
        total = row.pop(TOTAL_COLUMN)
    return total


def fetch_page(backend: Backend, query: peewee.ModelSelect, order: list[Any], request: Any, *,
               predicate: Callable[[dict[str, Any]], bool] | None = None,
               include_total: bool = True, bitmap_count: bool = False,
               count: Callable[[peewee.ModelSelect], int] | None = None,
               after: peewee.Expression | None = None) -> tuple[list[dict[str, Any]], int, bool]:
    """One page of ``query`` in ``order``: ``(rows, total, has_more)``.

    ``predicate`` is a filter the database cannot evaluate (metadata filters on ClickHouse); then
    every candidate row is read and the page is cut in Python.  With ``include_total=False`` the
    count is skipped: one extra row says whether there is more, and ``total`` is ``offset`` plus
    the rows returned.  ``bitmap_count`` counts with bitmap scans (:meth:`Backend.count`), for
    filtered lists of big tables; ``count(query)``, when given, computes the total instead (a
    domain that knows which of its indexes can answer the count).  ``after`` (a
    :meth:`Keyset.after` condition) starts the page behind a cursor instead of at the offset;
    ``total`` still counts every row of ``query`` and one extra row says whether more follow.

    Where the backend can (``features.total_in_page``), the total rides along the page's rows as
    a scalar subquery: one statement (one snapshot, so no transaction around it) in which the
    count still reads only the filter's index and the page only its rows.  A window
    ``COUNT(*) OVER ()`` reads every matching row instead (measured for 100 of a scorer's
    100,000 scores: 1.1 s against 30 ms on PostgreSQL, 2.1 s against 35 ms on SQLite, where
    the separate count and page took 36 and 37 ms).  A page without rows (past the end, or
    nothing matches) counts in a statement of its own.
    """
    offset, limit = request.offset, request.limit
    narrowed = query if after is None else query.where(after)
    fetch = narrowed.order_by(*order).offset(offset or None)
    # One extra row says whether more follow where the total cannot (no total, or a cursor).
    extra = 1 if after is not None or not include_total else 0
    if limit is not None:
        fetch = fetch.limit(limit + extra)
    key = query.model._meta.primary_key
    if offset >= DEEP_OFFSET and backend.features.deep_offset_by_key and isinstance(key, peewee.Field):
        # Skip the offset in the index (the keys alone), then read only the page's rows: page
        # 5,000 of a scorer's scores in 53 ms instead of 1.4 s on PostgreSQL at 1M scores.
        fetch = query.where(key.in_(fetch.select(key))).order_by(*order)

    def cut(rows: list[dict[str, Any]], total: int) -> tuple[list[dict[str, Any]], int, bool]:
        if after is None:
            return rows, total, request.has_more(total)
        return (rows, total, False) if limit is None else (rows[:limit], total, len(rows) > limit)

    alone = predicate is None and include_total and count is None and not bitmap_count
    if alone and limit == 0:  # the count is the whole page
        total = backend.count(query)
        return [], total, request.has_more(total)
    if alone and backend.features.total_in_page:
        rows = fetch_all(backend.database, fetch.select_extend(count_query(query).alias(TOTAL_COLUMN)))
        total = _split_total(rows)
        if total is None:  # no rows: the total alone, unless rows came in between
            total = backend.count(query)
            if after is not None or offset >= total:
                return [], total, request.has_more(total) if after is None else False
        else:
            return cut(rows, total)
    with backend.read():
        if predicate is not None:
            rows = [row for row in narrowed.order_by(*order) if predicate(row)]
            page = rows[offset:] if limit is None else rows[offset:offset + limit]
            more = limit is not None and len(rows) > offset + limit
            if not include_total:
                return page, offset + len(page), more
            total = len(rows) if after is None else sum(1 for row in query if predicate(row))
            return page, total, more
        if not include_total:
            rows = fetch_all(backend.database, fetch)
            page = rows if limit is None else rows[:limit]
            return page, offset + len(page), limit is not None and len(rows) > limit
        total = count(query) if count is not None else backend.count(query, bitmap=bitmap_count)
        if limit == 0 or (after is None and offset >= total):
            return [], total, request.has_more(total)
        return cut(fetch_all(backend.database, fetch), total)


def fetch_prepared_page(backend: Backend, key: Any, build: Callable[[], peewee.ModelSelect], order: list[Any],
                        request: Any, values: dict[str, Any], *, include_total: bool = True,
                        count: Callable[[], int] | None = None) -> tuple[list[dict[str, Any]], int, bool]:
    """:func:`fetch_page` of a query whose shape is fixed, rendered to SQL once.

    ``build()`` gives the query with every varying value as :meth:`Backend.param` (bound from
    ``values``, already in their stored form); ``key`` (the ``shape`` of :meth:`Backend.prepared`)
    must determine the SQL of ``build()`` at its call site and of ``order``.  The count and the
    page are :meth:`Backend.prepared` statements: a short page of a hot list (a thread's latest
    messages) costs a third less than when peewee renders it.  As in :func:`fetch_page`, the
    total rides along the rows in one statement where the backend can.
    ``count()``, when given, computes the total instead (with :func:`count_prepared` too).
    """
    offset, limit = request.offset, request.limit
    bounds = {"offset": offset, "limit": None if limit is None else limit + (0 if include_total else 1)}

    def page(with_total: bool) -> Callable[[], peewee.ModelSelect]:
        def build_page() -> peewee.ModelSelect:
            query = build().order_by(*order)
            if with_total:
                query = query.select_extend(count_query(build()).alias(TOTAL_COLUMN))
            query = query if not offset else query.offset(backend.param("offset"))
            return query if limit is None else query.limit(backend.param("limit"))
        return build_page

    def rows(with_total: bool = False) -> list[dict[str, Any]]:
        page_key = (statement_key(build, key), bool(offset), limit is None, with_total)
        return backend.prepared(page_key, page(with_total)).rows(**values, **bounds)

    if include_total and limit == 0 and count is None:  # the count is the whole page
        total = count_prepared(backend, key, build, values)
        return [], total, request.has_more(total)
    if include_total and count is None and backend.features.total_in_page:
        found = rows(with_total=True)
        total = _split_total(found)
        if total is None:  # no rows: the total alone, unless rows came in between
            total = count_prepared(backend, key, build, values)
            if offset >= total:
                return [], total, request.has_more(total)
        else:
            return found, total, request.has_more(total)
    with backend.read():
        if not include_total:
            found = rows()
            return found[:limit], offset + len(found[:limit]), limit is not None and len(found) > limit
        total = count() if count is not None else count_prepared(backend, key, build, values)
        if limit == 0 or offset >= total:
            return [], total, request.has_more(total)
        return rows(), total, request.has_more(total)


def count_prepared(backend: Backend, key: Any, build: Callable[[], peewee.ModelSelect], values: dict[str, Any]) -> int:
    """The number of rows of ``build()``, a query of fixed shape as :func:`fetch_prepared_page`
    takes it; the count statement is rendered once per call site of ``build`` and ``key``."""
    statement = backend.prepared(statement_key(build, key), lambda: count_query(build()).tuples())
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
