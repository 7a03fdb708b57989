"""Retention: ``prune()`` deletes rows older than a policy's age in batches (fidelity-1.71 §5).

A domain declares only what it prunes: one :class:`RetentionTable` per policy key (the table,
its anchor column, the rows deleted with it).  :class:`Prunable` gives the domain the
``prune`` operation, and everything else lives here once: the policy checks, the batching loop
(interruptible by ``max_batches``, ``max_rows`` and ``stop``; each batch its own transaction),
the anchor index, and the SQL of one batch per database (:data:`RETENTION_DIALECTS`).
ClickHouse keeps its TTL (``ttl_days``) and answers ``prune`` with ``NotSupportedError``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, ClassVar, Iterable, Mapping

import peewee

from .backends.base import first_line
from .base import DomainRepository, operation
from .errors import NotSupportedError, StorageError, ValidationError
from .validation import Problems
from .values import utc_now

logger = logging.getLogger("composite_store")

#: Rows (or, for whole units, parents) one batch deletes unless the policy says otherwise.
DEFAULT_BATCH_SIZE = 1000
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
#: The policy keys, snake_case and as Mastra's clients spell them.
_POLICY_KEYS = {"max_age": "max_age", "maxAge": "max_age", "batch_size": "batch_size", "batchSize": "batch_size"}
NOT_ON_CLICKHOUSE = "prune() is not available on ClickHouse; use ttl_days."


@dataclass(frozen=True)
class Cascade:
    """Rows of another table deleted with each pruned parent (in the same transaction)."""

    #: The child model's attribute in the domain's ``models`` namespace.
    model: str
    #: The child's field holding the parent's id.
    parent_field: str


@dataclass(frozen=True)
class RetentionTable:
    """One policy key of a domain: which rows it deletes, by which timestamp."""

    #: The policy key (``"messages"``); also how PostgreSQL names the anchor index.
    key: str
    #: The model's attribute in the domain's ``models`` namespace.
    model: str
    #: The anchor timestamp field: rows whose anchor is older than the cutoff are deleted.
    anchor: str
    #: Whether PostgreSQL compares the ``…Z`` (timestamptz) companion of the anchor (Mastra's
    #: choice per table; experiments compare the plain column).
    zoned_on_postgres: bool = True
    #: Other accepted spellings of the key (Mastra's camelCase).
    aliases: tuple[str, ...] = ()
    #: Child rows deleted with each parent: then parents are picked by id and each batch
    #: deletes whole units (limits count parents).
    cascade: Cascade | None = None


@dataclass(frozen=True)
class _Plan:
    table: RetentionTable
    max_age_ms: float
    batch_size: int


# --------------------------------------------------------------------------- validation


def parse_duration(value: Any) -> float | None:
    """Milliseconds of a retention age (``int``/``float`` ms, ``timedelta``, ``"30d"``), or ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if value >= 0 and value == value and value != float("inf") else None
    if isinstance(value, timedelta):
        return value.total_seconds() * 1000 if value >= timedelta(0) else None
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNIT_MS[match.group(2)]
    return None


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _table_of(tables: Iterable[RetentionTable], key: Any) -> RetentionTable | None:
    return next((table for table in tables if key == table.key or key in table.aliases), None)


def check_policies(problems: Problems, path: str, policies: Any,
                   tables: tuple[RetentionTable, ...]) -> list[_Plan]:
    """The plans of a domain's ``policies`` in the domain's table order; problems recorded."""
    if not isinstance(policies, Mapping):
        problems.add(path, "Not a valid mapping type.")
        return []
    chosen: dict[str, _Plan] = {}
    for key, policy in policies.items():
        table = _table_of(tables, key)
        where = f"{path}.{key}"
        if table is None:
            problems.add(where, "Unknown field.")
            continue
        if not isinstance(policy, Mapping):
            problems.add(where, "Not a valid mapping type.")
            continue
        values: dict[str, Any] = {}
        for name, value in policy.items():
            field = _POLICY_KEYS.get(name)
            if field is None:
                problems.add(f"{where}.{name}", "Unknown field.")
            else:
                values[field] = value
        max_age = parse_duration(values.get("max_age"))
        if "max_age" not in values:
            problems.add(f"{where}.max_age", "Missing data for required field.")
        elif max_age is None:
            problems.add(f"{where}.max_age", f'Invalid retention duration: "{values["max_age"]}". Expected a '
                                             'number of milliseconds or a "<number><unit>" string (ms, s, m, h, d, w).')
        batch_size = values.get("batch_size", DEFAULT_BATCH_SIZE)
        if not _positive_int(batch_size):
            problems.add(f"{where}.batch_size", "batch_size must be a positive integer")
        if max_age is not None and _positive_int(batch_size):
            chosen[table.key] = _Plan(table, max_age, batch_size)
    return [chosen[table.key] for table in tables if table.key in chosen]


def check_limits(problems: Problems, *, max_batches: Any, max_rows: Any, pause_ms: Any, stop: Any) -> None:
    """The interruption arguments of ``prune``."""
    for name, value in (("max_batches", max_batches), ("max_rows", max_rows)):
        if value is not None and not _positive_int(value):
            problems.add(name, f"{name} must be a positive integer or None")
    if isinstance(pause_ms, bool) or not isinstance(pause_ms, int) or pause_ms < 0:
        problems.add("pause_ms", "pause_ms must be an integer >= 0")
    if stop is not None and not callable(getattr(stop, "is_set", None)):
        problems.add("stop", "stop must be a threading.Event or None")


# --------------------------------------------------------------------------- SQL per database


class RetentionDialect:
    """The anchor index and the ``DELETE`` of one batch on one database."""

    def column(self, repository: DomainRepository, table: RetentionTable) -> peewee.Field:
        """The compared anchor column."""
        return getattr(getattr(repository.models, table.model), table.anchor)

    def create_index(self, repository: DomainRepository, table: RetentionTable) -> None:
        """Create the anchor index if missing (best effort)."""
        raise NotImplementedError

    def row_id(self) -> str:
        """The physical row address the batch deletes by (``rowid``, ``ctid``)."""
        raise NotImplementedError

    def delete_sql(self, repository: DomainRepository, table: RetentionTable) -> str:
        """``DELETE`` of at most ``limit`` rows whose anchor is older than the cutoff; two
        parameters: the cutoff and the limit."""
        model = getattr(repository.models, table.model)
        name, column = repository.backend.table_sql(model), self.column(repository, table).column_name
        param = repository.backend.database.param
        row_id = self.row_id()
        return (f"DELETE FROM {name} WHERE {row_id} IN (SELECT {row_id} FROM {name} "
                f'WHERE "{column}" < {param} LIMIT {param})')

    def pick_sql(self, repository: DomainRepository, table: RetentionTable) -> str:
        """``SELECT`` of the ids of at most ``limit`` parents older than the cutoff (whole units)."""
        model = getattr(repository.models, table.model)
        param = repository.backend.database.param
        return (f'SELECT "{model._meta.primary_key.column_name}" FROM {repository.backend.table_sql(model)} '
                f'WHERE "{self.column(repository, table).column_name}" < {param} LIMIT {param}')


class _SQLiteRetention(RetentionDialect):
    def row_id(self) -> str:
        return "rowid"

    def create_index(self, repository: DomainRepository, table: RetentionTable) -> None:
        model = getattr(repository.models, table.model)
        name, column = model._meta.table_name, self.column(repository, table).column_name
        with repository.backend.write():
            repository.backend.database.execute_sql(
                f'CREATE INDEX IF NOT EXISTS "idx_retention_{name}_{column}" ON "{name}" ("{column}")')


class _PostgresRetention(RetentionDialect):
    def row_id(self) -> str:
        return "ctid"

    def column(self, repository: DomainRepository, table: RetentionTable) -> peewee.Field:
        field = super().column(repository, table)
        return field.zoned if table.zoned_on_postgres else field

    def create_index(self, repository: DomainRepository, table: RetentionTable) -> None:
        backend = repository.backend
        name = f"mastra_{table.key}_retention_idx".lower()
        if backend.schema_name:
            name = f"{backend.schema_name}_{name}"
        model = getattr(repository.models, table.model)
        # CONCURRENTLY: writers go on while a big table is indexed; it cannot run in a
        # transaction, and the connection is in autocommit outside one.
        backend.database.execute_sql(f'CREATE INDEX CONCURRENTLY IF NOT EXISTS "{name}" ON {backend.table_sql(model)} '
                                     f'("{self.column(repository, table).column_name}")')

    def pick_sql(self, repository: DomainRepository, table: RetentionTable) -> str:
        # A concurrent prune skips the units this one is deleting instead of waiting for them.
        return super().pick_sql(repository, table) + " FOR UPDATE SKIP LOCKED"


#: The retention SQL of each backend that prunes, by ``Backend.name`` (ClickHouse has TTL).
RETENTION_DIALECTS: dict[str, RetentionDialect] = {"SQLITE": _SQLiteRetention(), "PG": _PostgresRetention()}


def prunes(repository: Any) -> bool:
    """Whether ``repository`` is a domain with retention on a backend that prunes."""
    return isinstance(repository, Prunable) and repository.backend.name in RETENTION_DIALECTS


# --------------------------------------------------------------------------- the domain operation


class Prunable:
    """Mixin of the domains with retention: declare :attr:`retention_tables`, get ``prune``.

    List it before :class:`~repository.base.DomainRepository` in the domain's bases.
    """

    #: The domain's policy keys in the order ``prune`` runs them (Mastra's).
    retention_tables: ClassVar[tuple[RetentionTable, ...]] = ()

    @operation
    def prune(self, *, policies: dict, max_batches: int | None = None, max_rows: int | None = None,
              pause_ms: int = 0, stop: threading.Event | None = None) -> list[dict]:
        """Delete rows older than each policy's ``max_age``, in batches of ``batch_size``.

        ``policies`` maps a table key (see :attr:`retention_tables`) to ``{"max_age": "30d",
        "batch_size": 1000}``; ``max_age`` is milliseconds, a ``timedelta`` or
        ``"<number><unit>"`` (ms, s, m, h, d, w).  Each batch is committed on its own; per table
        ``max_batches`` and ``max_rows`` bound the work, ``stop`` (a ``threading.Event``) ends it
        before the next batch, and ``pause_ms`` sleeps between batches.  Returns one
        ``{"domain", "table", "deleted", "done"}`` per table (``done``: nothing old is left).
        """
        dialect = RETENTION_DIALECTS.get(self.backend.name)
        if dialect is None:
            raise NotSupportedError(NOT_ON_CLICKHOUSE)
        problems = Problems()
        plans = check_policies(problems, "policies", policies, self.retention_tables)
        check_limits(problems, max_batches=max_batches, max_rows=max_rows, pause_ms=pause_ms, stop=stop)
        problems.raise_if_any()
        now = utc_now()  # one clock reading: every table shares the cutoff's origin
        results = []
        for plan in plans:
            cutoff = now - timedelta(milliseconds=plan.max_age_ms)
            results.extend(self._prune_table(dialect, plan, cutoff, max_batches=max_batches, max_rows=max_rows,
                                             pause_ms=pause_ms, stop=stop))
        return results

    def _prune_table(self, dialect: RetentionDialect, plan: _Plan, cutoff: datetime, *, max_batches: int | None,
                     max_rows: int | None, pause_ms: int, stop: Any) -> list[dict]:
        """The batching loop of one table: each batch its own transaction."""
        table = plan.table
        if stop is None or not stop.is_set():
            try:
                dialect.create_index(self, table)
            except Exception as exc:  # noqa: BLE001 - best effort: pruning works without it, slower
                logger.warning("The retention index of %s was not created (%s); pruning without it",
                               table.key, first_line(exc))
        delete = self._batch_deleter(dialect, table, cutoff)
        deleted = [0] * (2 if table.cascade else 1)
        batches, done = 0, False
        while True:
            if batches and pause_ms:
                if stop is not None:
                    stop.wait(pause_ms / 1000)
                else:
                    time.sleep(pause_ms / 1000)
            limit = plan.batch_size
            if max_rows is not None:
                limit = min(limit, max_rows - deleted[-1])
            if (stop is not None and stop.is_set()) or (max_batches is not None and batches >= max_batches) \
                    or limit <= 0:
                break
            counts = delete(limit)
            batches += 1
            deleted = [total + count for total, count in zip(deleted, counts)]
            if counts[-1] < limit:
                done = True
                break
        names = [getattr(self.models, table.cascade.model)._meta.table_name] if table.cascade else []
        names.append(getattr(self.models, table.model)._meta.table_name)
        return [{"domain": self.domain, "table": name, "deleted": count, "done": done}
                for name, count in zip(names, deleted)]

    def _batch_deleter(self, dialect: RetentionDialect, table: RetentionTable,
                       cutoff: datetime) -> Callable[[int], list[int]]:
        """``delete(limit)`` runs one batch in its own transaction and returns the rows deleted
        (children first when the table cascades, then the table's own)."""
        backend = self.backend
        column = dialect.column(self, table)
        bound = column.db_value(cutoff)
        database = backend.database
        if table.cascade is None:
            sql = dialect.delete_sql(self, table)

            def delete(limit: int) -> list[int]:
                with backend.write():
                    return [database.execute_sql(sql, (bound, limit)).rowcount]

            return delete
        pick = dialect.pick_sql(self, table)
        parent = getattr(self.models, table.model)
        child = getattr(self.models, table.cascade.model)
        child_field = getattr(child, table.cascade.parent_field)

        def delete_units(limit: int) -> list[int]:
            with backend.write():
                ids = [row[0] for row in database.execute_sql(pick, (bound, limit)).fetchall()]
                if not ids:
                    return [0, 0]
                children = child.delete().where(child_field.in_(ids)).execute()
                parents = parent.delete().where(parent._meta.primary_key.in_(ids)).execute()
                return [children, parents]

        return delete_units


# --------------------------------------------------------------------------- stores


def retention_tables_by_domain() -> dict[str, tuple[RetentionTable, ...]]:
    """The policy keys of every domain with retention (the others take none), in any of its
    layouts: observability's vNext layout adds ``metrics``, ``logs``, ``scores`` and
    ``feedback`` to ``spans`` (which repository takes which: :func:`check_retention`)."""
    # Imported here: the domain modules import this one.
    from .experiments import ExperimentsRepository
    from .memory import MemoryRepository
    from .observability import ObservabilityRepository
    from .observability.vnext import VNextObservabilityRepository
    from .scores import ScoresRepository
    from .workflows import WorkflowsRepository

    tables = {cls.domain: cls.retention_tables for cls in (
        MemoryRepository, WorkflowsRepository, ScoresRepository, ObservabilityRepository, ExperimentsRepository)}
    legacy = tables["observability"]
    tables["observability"] = (*legacy, *(table for table in VNextObservabilityRepository.retention_tables
                                          if _table_of(legacy, table.key) is None))
    return tables


def check_retention(problems: Problems, path: str, retention: Any,
                    get_store: Callable[[str], Any] | None = None) -> dict[str, dict]:
    """A store's ``retention`` (``{domain: {table key: policy}}``), checked; problems recorded.
    With ``get_store`` (domain key → repository or ``None``), a domain's policies are checked
    against the keys of its repository's layout (``metrics`` only on observability's vNext
    layout); without it, against the keys of any layout (before a store connects)."""
    if retention is None:
        return {}
    if not isinstance(retention, Mapping):
        problems.add(path, "Not a valid mapping type.")
        return {}
    tables = retention_tables_by_domain()
    for domain, policies in retention.items():
        if domain not in tables:
            problems.add(f"{path}.{domain}", "Unknown field.")
            continue
        repository = get_store(domain) if get_store is not None else None
        check_policies(problems, f"{path}.{domain}", policies,
                       repository.retention_tables if isinstance(repository, Prunable) else tables[domain])
    return dict(retention)


def validated_retention(retention: Any, *, error_id: str,
                        get_store: Callable[[str], Any] | None = None) -> dict[str, dict]:
    """``retention`` checked (see :func:`check_retention`), or ``ValidationError`` with
    ``error_id`` (a store's constructor)."""
    problems = Problems()
    checked = check_retention(problems, "retention", retention, get_store)
    if problems:
        raise ValidationError(fields=problems.fields, id=error_id)
    return checked


def prune_domains(get_store: Callable[[str], Any], configured: dict[str, dict], *, retention: Any,
                  max_batches: int | None, max_rows: int | None, pause_ms: int, stop: Any,
                  error_id: str) -> list[dict]:
    """A store's ``prune``: each domain of ``retention`` (else ``configured``) in order.

    Everything is validated first (``ValidationError`` with ``error_id``); a domain the store
    does not hold, one on ClickHouse, or one with no policy is skipped; a ``StorageError`` of one
    domain is logged and the others still run.
    """
    problems = Problems()
    plan = check_retention(problems, "retention", retention, get_store) if retention is not None else configured
    check_limits(problems, max_batches=max_batches, max_rows=max_rows, pause_ms=pause_ms, stop=stop)
    if problems:
        raise ValidationError(fields=problems.fields, id=error_id)
    results: list[dict] = []
    for domain, policies in plan.items():
        repository = get_store(domain)
        if not policies or not prunes(repository):
            continue
        try:
            results.extend(repository.prune(policies=policies, max_batches=max_batches, max_rows=max_rows,
                                            pause_ms=pause_ms, stop=stop))
        except StorageError as error:
            logger.error("prune of %s failed: %s: %s", domain, error.id, error.message)
    return results
