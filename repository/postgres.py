"""PostgreSQL classes: the whole store and one class per domain.

Options: ``connection_string`` (``postgresql://user:pass@host:port/db``, ``?schema_name=app``
allowed), ``schema_name=None`` (``public``), ``max_connections=10``, ``prepared_statements=True``
(``False`` behind a pooler in transaction mode).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import uuid4

import peewee

from .agents import AgentsRepository
from .backends.base import driver_values, kept_values, value_columns
from .backends.postgres import PostgresBackend
from .datasets import DatasetsRepository
from .errors import ValidationError
from .experiments import ExperimentsRepository
from .memory import MemoryRepository
from .observability import ObservabilityRepository
from .observability.repository import LayoutChoice
from .scores import ScoresRepository
from .stores import WholeStore
from .values import json_dumps
from .workflows import WorkflowsRepository


class MemoryPG(MemoryRepository):
    """The memory domain on PostgreSQL."""

    backend_class = PostgresBackend

    def _write_messages(self, batch: dict[str, dict[str, Any]], now: datetime) -> None:
        """``save_messages``' write in one autocommit statement, whatever the batch size, for
        messages that stay in their threads (or are new): a data-modifying CTE locks the stored
        messages and then the threads (each in id order, as :meth:`_bump_threads` does), and only
        when every thread was found and no stored message is in another thread, bumps the
        threads and upserts the messages, returning each message's stored ``created_at``.

        The rows travel as one array parameter per column (``unnest``): one statement text for
        every batch size, and a handful of parameters where a ``VALUES`` list would bind eight
        per message.  One message (a chat turn, the common call) binds its values as scalars
        instead: key equalities, which the statement's generic plan serves through the primary
        keys whatever the tables' statistics say (the arrays' generic plan scanned a growing,
        not yet analyzed messages table: 0.45 ms a call at 3,000 rows).  The locks are taken by
        key lists alone (the arrays): a row locked after a concurrent update is re-checked
        against those, where a lock through a join could drop it; the threads' lock waits for
        the count of the stored messages, so their locks come first.  No row back (a missing
        thread, a message moving between threads) takes the transaction, which tells which and
        acts on it."""
        Thread, Message, backend = self.models.thread, self.models.message, self.backend
        rows = backend.prepare_rows(Message, list(batch.values()))
        names = tuple(rows[0])
        fields, converters = backend.columns(Message, names)
        bump = backend.prepare_rows(Thread, [{"updated_at": now}])[0]
        bump_fields, bump_converters = backend.columns(Thread, tuple(bump))
        kept = Message.created_at_z  # what records read (as_records prefers the zoned twin)
        single = len(rows) == 1

        def build() -> peewee.ModelInsert:
            if single:
                named = backend.typed_param(Thread.id, "threads")
                stored_ones = Message.id == backend.typed_param(Message.id, "id")
                in_named, outside, wanted = Thread.id == named, named, 1
                values = peewee.Select(columns=[backend.typed_param(field, field.name) for field in fields])
            else:
                named = backend.array_param(Thread.id, "threads")
                # IN (SELECT unnest(…)), not = ANY(…): the planner estimates = ANY element by element
                # (50 ms for 10,000 ids), and a set of key values re-checks a locked row as a list does.
                stored_ones = Message.id.in_(peewee.Select(columns=[peewee.fn.unnest(
                    backend.array_param(Message.id, "id"))]))
                in_named, outside = Thread.id == peewee.fn.ANY(named), peewee.fn.ALL(named)
                wanted = peewee.fn.cardinality(named)
                values = peewee.Select([peewee.fn.unnest(*(backend.array_param(field, field.name)
                                                           for field in fields))], [peewee.SQL("*")])
            stored = (Message.select(Message.thread_id).where(stored_ones).order_by(Message.id).for_update()
                      .cte("stored"))
            counted = peewee.Select([stored], [peewee.fn.COUNT(peewee.SQL("*"))])
            locked = (Thread.select(Thread.id).where(in_named, counted >= 0)
                      .order_by(Thread.id).for_update().cte("locked"))
            found = peewee.Select([locked], [peewee.fn.COUNT(peewee.SQL("*"))])
            moving = peewee.Select([stored], [peewee.SQL("1")]).where(stored.c.thread_id != outside)
            plain = (found == wanted) & ~peewee.fn.EXISTS(moving)
            bumped = (Thread.update({field: backend.param(f"set_{field.name}") for field in bump_fields})
                      .where(in_named, plain).cte("bumped"))
            return (Message.insert_from(values.where(plain), fields)
                    .on_conflict(conflict_target=[Message.id],
                                 preserve=[field for field in fields if field.name not in {"id", "created_at",
                                                                                          "created_at_z"}])
                    .returning(Message.id, kept).with_cte(stored, locked, bumped))

        columns = dict(zip(names, value_columns(backend, fields, rows, converters=converters)))
        threads = list(dict.fromkeys(columns["thread_id"]))
        bound = {name: values[0] for name, values in columns.items()} if single else columns
        written = backend.prepared((Message, names, single), build).fetch(
            **bound, threads=threads[0] if single else threads,
            **{f"set_{field.name}": value for field, value in zip(bump_fields, driver_values(bump_converters,
                                                                                           bump.values()))})
        if not written:
            super()._write_messages(batch, now)
            return
        for message_id, created_at in kept_values(kept, dict(zip(columns["id"], columns[kept.name])),
                                                  written).items():
            batch[message_id]["created_at"] = created_at


class ExperimentsPG(ExperimentsRepository):
    """The experiments domain on PostgreSQL."""

    backend_class = PostgresBackend


class AgentsPG(AgentsRepository):
    """The agents domain on PostgreSQL."""

    backend_class = PostgresBackend


class WorkflowsPG(WorkflowsRepository):
    """The workflows domain on PostgreSQL."""

    backend_class = PostgresBackend


class ScoresPG(ScoresRepository):
    """The scores domain on PostgreSQL."""

    backend_class = PostgresBackend


class DatasetsPG(DatasetsRepository):
    """The datasets domain on PostgreSQL."""

    backend_class = PostgresBackend

    def _write_new_item(self, dataset_id: str, scope: dict[str, Any] | None, item: dict[str, Any],
                        now: datetime) -> dict[str, Any] | None:
        """One autocommit statement instead of a five-statement transaction: the item is checked
        against the dataset's schemas as the last locked read found them (``_item_checks``),
        then a data-modifying CTE steps the version only while those schemas are unchanged (and
        the dataset in ``scope``), inserts the item and logs the version.  ``None`` (no checked
        values yet, an item they reject, or no row stepped) leaves the call to the locked
        read-check-write, whose answer is authoritative and which remembers the values."""
        known = self._item_checks.get(dataset_id)
        if known is None:
            return None
        try:
            self._check_schemas(known, item, index=None, prefix="item")
        except ValidationError:
            return None
        Dataset, Item, Version, backend = self.models.dataset, self.models.item, self.models.version, self.backend
        scoped = tuple(scope or ())
        (row,) = self._plan_identities(known, [item], now)[1]  # no external_id: no read
        row = backend.prepare_rows(Item, [{k: v for k, v in row.items() if k != "dataset_version"}])[0]
        item_fields, item_converters = backend.columns(Item, tuple(row))
        log = backend.prepare_rows(Version, [{"id": str(uuid4()), "created_at": now}])[0]
        log_fields, log_converters = backend.columns(Version, tuple(log))
        schemas = (Dataset.input_schema, Dataset.ground_truth_schema)

        def build() -> peewee.ModelInsert:
            unchanged = [peewee.Expression(field, "IS NOT DISTINCT FROM",
                                           peewee.Cast(backend.param(field.name), "jsonb")) for field in schemas]
            bumped = (Dataset.update({Dataset.version: Dataset.version + 1})
                      .where(Dataset.id == backend.param("id"), *unchanged,
                             *(getattr(Dataset, name) == backend.param(f"scope_{name}") for name in scoped))
                      .returning(Dataset.id, Dataset.version).cte("bumped"))
            inserted = Item.insert_from(
                peewee.Select([bumped], [*(backend.param(f"item_{f.name}") for f in item_fields), bumped.c.version]),
                [*item_fields, Item.dataset_version]).cte("item")
            logged = Version.insert_from(
                peewee.Select([bumped], [*(backend.param(f"log_{f.name}") for f in log_fields), bumped.c.id,
                                         bumped.c.version]),
                [*log_fields, Version.dataset_id, Version.version])
            return logged.returning(Version.version).with_cte(bumped, inserted).dicts()

        values = {"id": dataset_id, **{f"scope_{name}": value for name, value in (scope or {}).items()},
                  **{field.name: None if known[field.name] is None else json_dumps(known[field.name])
                     for field in schemas},
                  **{f"item_{f.name}": value for f, value in zip(item_fields, driver_values(item_converters,
                                                                                         row.values()))},
                  **{f"log_{f.name}": value for f, value in zip(log_fields, driver_values(log_converters,
                                                                                       log.values()))}}
        stepped = backend.prepared((Dataset, scoped, tuple(row)), build).first(**values)
        if stepped is None:
            return None
        return self._item_record({**row, "dataset_version": stepped["version"]}, payload=item)


class ObservabilityPG(LayoutChoice, ObservabilityRepository):
    """The observability domain (traces and spans) on PostgreSQL; ``layout="vnext"`` (or
    ``?layout=vnext`` in the URL) gives the current layout, with ``partitioning``, ``discovery``
    and ``delta_polling`` (observability-vnext.md §1)."""

    backend_class = PostgresBackend
    vnext_keywords = ("partitioning", "discovery", "delta_polling")


class PostgresStore(WholeStore):
    """All seven domains on one PostgreSQL database (one connection pool)."""

    backend_class = PostgresBackend
    domain_classes = {"memory": MemoryPG, "scores": ScoresPG, "workflows": WorkflowsPG, "experiments": ExperimentsPG, "agents": AgentsPG,
                      "datasets": DatasetsPG, "observability": ObservabilityPG}


__all__ = ["PostgresStore", "MemoryPG", "WorkflowsPG", "ExperimentsPG", "AgentsPG", "ScoresPG", "DatasetsPG", "ObservabilityPG"]
