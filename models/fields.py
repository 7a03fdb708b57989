"""Field types whose stored form differs per database.

The conversion itself is asked of the bound database (``timestamp_to_db`` and friends on each
backend's peewee ``Database``), so a model is declared once and works on SQLite, PostgreSQL and
ClickHouse.
"""

from __future__ import annotations

from typing import Any

import peewee


class TimestampField(peewee.Field):
    """A UTC timestamp with millisecond precision.

    Stored as ISO text with ``Z`` on SQLite, ``timestamp`` (UTC) on PostgreSQL (plus a
    ``timestamptz`` companion column, see :class:`ZonedTimestampField`), and ``DateTime64(3,
    'UTC')`` or ``Int64`` epoch milliseconds on ClickHouse.  Python values are aware datetimes.
    """

    field_type = "TIMESTAMP"

    def db_value(self, value: Any) -> Any:
        return None if value is None else self.model._meta.database.timestamp_to_db(self, value)

    def python_value(self, value: Any) -> Any:
        return None if value is None else self.model._meta.database.timestamp_from_db(self, value)


class ZonedTimestampField(peewee.Field):
    """PostgreSQL's ``timestamptz DEFAULT now()`` companion of a :class:`TimestampField`."""

    field_type = "TIMESTAMPTZ"

    def __init__(self, plain: TimestampField | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("null", True)
        kwargs.setdefault("constraints", [peewee.SQL("DEFAULT now()")])
        super().__init__(**kwargs)
        self.plain = plain

    def db_value(self, value: Any) -> Any:
        return None if value is None else self.model._meta.database.zoned_timestamp_to_db(self, value)

    def python_value(self, value: Any) -> Any:
        return None if value is None else self.model._meta.database.zoned_timestamp_from_db(self, value)


class JSONField(peewee.Field):
    """A JSON value: compact text on SQLite (JSONB blobs are read too), ``jsonb`` on PostgreSQL,
    ``String`` on ClickHouse.  Text that does not parse reads back as the raw string."""

    field_type = "JSON"

    def db_value(self, value: Any) -> Any:
        return None if value is None else self.model._meta.database.json_to_db(self, value)

    def python_value(self, value: Any) -> Any:
        return None if value is None else self.model._meta.database.json_from_db(self, value)


class TextField(peewee.TextField):
    """Text; on ClickHouse the placeholder ``_null_`` written by other clients reads as ``None``."""

    def python_value(self, value: Any) -> Any:
        # Only the database that declares a placeholder (ClickHouse) maps it; elsewhere "_null_" is text.
        # The database is asked only for that text: every read converts every text value here.
        if value != "_null_":
            return value
        return None if value == getattr(self.model._meta.database, "null_placeholder", None) else value


class VersionField(peewee.BigIntegerField):
    """ClickHouse ``_version``: the row version of ``ReplacingMergeTree(_version)``."""

    field_type = "ROW_VERSION"


class DeletedField(peewee.SmallIntegerField):
    """ClickHouse ``_deleted``: 1 marks a tombstone."""

    field_type = "ROW_DELETED"
