"""Declarations shared by the domain model modules."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import peewee


@dataclass(frozen=True)
class ClickHouseTable:
    """ClickHouse table settings, kept in a model's ``Meta.clickhouse`` (ignored elsewhere).

    ``order_by`` lists the sorting-key columns (never ``Nullable``); ``partition_by`` is an SQL
    expression; ``partition_by_month`` names a timestamp column whose month partitions the table
    (the backend writes ``toYYYYMM(...)`` for the column's stored type); ``defaults`` maps column
    names to SQL default expressions; ``ttl_column`` names the timestamp that ``ttl_days``
    retention counts from (``None``: no retention).  Layout differences from the other
    databases' tables: ``text_columns`` maps field names to the columns only the ClickHouse table
    has (text); ``not_null`` names columns that are plain there although nullable elsewhere.
    The ClickHouse backend applies both in ``prepare_models``.  ``insert_only`` tables (the
    current observability layout) are never versioned: no ``_version``/``_deleted`` columns, and
    their domain reads them without ``FINAL``.  ``shard_key`` names the columns whose hash picks a
    row's shard on a cluster (``cluster=``): every row of one logical key (a thread's messages, a
    trace's spans) on one shard, so ``FINAL``, tombstones and deletes see all its versions there;
    empty: the sorting key.
    """

    order_by: tuple[str, ...]
    partition_by: str | None = None
    partition_by_month: str | None = None
    defaults: dict[str, str] = field(default_factory=dict)
    ttl_column: str | None = None
    text_columns: dict[str, str] = field(default_factory=dict)
    not_null: tuple[str, ...] = ()
    insert_only: bool = False
    shard_key: tuple[str, ...] = ()


@dataclass(frozen=True)
class TableKey:
    """The key of a table whose reference layout keys it otherwise than peewee's primary key would
    (``Meta.table_key``; SQLite and PostgreSQL, ClickHouse's key is its sorting key).

    ``columns`` as the reference DDL lists them.  ``primary``: on PostgreSQL a primary key, else a
    unique constraint, named ``name`` (``{schema}`` stands for the schema name, ``public``
    included).  On SQLite the key is the table constraint ``sqlite_constraint``, verbatim as the
    reference DDL writes it, and an older table gets the unique index ``sqlite_index`` (SQLite
    cannot add a constraint).
    ``duplicates_code``: an older table without the key whose rows repeat one is refused with a
    ``ConflictError`` carrying this ``details["code"]`` and left unchanged (else the key is added as
    it is).  ``replica_identity``: PostgreSQL's ``REPLICA IDENTITY`` uses the key's index.
    """

    columns: tuple[str, ...]
    name: str
    primary: bool = False
    sqlite_constraint: str = ""
    sqlite_index: str = ""
    duplicates_code: str | None = None
    #: What the refusal tells the user to do about the repeated keys.
    duplicates_remedy: str = ""
    replica_identity: bool = False


@dataclass(frozen=True)
class Index:
    """One secondary index: name and column SQL (e.g. ``'thread_id, "createdAt" DESC'``).

    ``schema_prefixed`` says whether the name gets ``<schema_name>_`` outside ``public`` on
    PostgreSQL (constraints named by the spec keep their name).  ``method`` is the PostgreSQL
    index method (``"gin"``); ``None`` means the default (btree).  A ``best_effort`` index that
    cannot be built (stored rows violate its uniqueness) is skipped with a logged warning.
    ``where`` is the predicate of a partial index (``'"parentSpanId" IS NULL'``).  ``include``
    lists PostgreSQL ``INCLUDE`` columns (stored, not keyed: they let a filtered count be an
    index-only scan); only PostgreSQL reads it.
    """

    name: str
    columns: str
    unique: bool = False
    schema_prefixed: bool = True
    method: str | None = None
    best_effort: bool = False
    where: str | None = None
    include: str | None = None


def base_model(database: peewee.DatabaseProxy) -> type[peewee.Model]:
    """A fresh abstract base model bound to ``database``."""

    class BaseModel(peewee.Model):
        class Meta:
            legacy_table_names = False

    BaseModel._meta.database = database
    return BaseModel


def named(model: type[peewee.Model], suffix: Any) -> type[peewee.Model]:
    """Give a factory-built model a unique class name (peewee keys some internals by name)."""
    model.__name__ = model.__qualname__ = f"{model.__name__}_{suffix}"
    return model
