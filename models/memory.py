"""Memory domain models: ``mastra_threads``, ``mastra_messages``, ``mastra_resources``."""

from __future__ import annotations

from types import SimpleNamespace

import peewee

from .base import ClickHouseTable, Index, base_model
from .fields import JSONField, TextField, TimestampField


def build_memory_models(database: peewee.DatabaseProxy) -> SimpleNamespace:
    """Declare the memory models bound to ``database``; returns ``thread``, ``message``, ``resource``."""
    Base = base_model(database)

    class Thread(Base):
        id = TextField(primary_key=True)
        resource_id = TextField(column_name="resourceId")
        title = TextField()
        metadata = JSONField(null=True)
        created_at = TimestampField(column_name="createdAt")
        updated_at = TimestampField(column_name="updatedAt")

        class Meta:
            table_name = "mastra_threads"
            # Mastra's on PostgreSQL; the library's on SQLite (a resource's threads, newest first).
            sqlite_indexes = (Index("idx_threads_resource_created_at", '"resourceId", "createdAt"'),)
            postgres_indexes = (Index("mastra_threads_resourceid_createdat_idx", '"resourceId", "createdAt" DESC'),)
            clickhouse = ClickHouseTable(order_by=("createdAt", "id"), defaults={"metadata": "'{}'"},
                                         shard_key=("id",))

    class Message(Base):
        id = TextField(primary_key=True)
        thread_id = TextField(column_name="thread_id")
        content = TextField()
        role = TextField()
        type = TextField()
        created_at = TimestampField(column_name="createdAt")
        resource_id = TextField(column_name="resourceId", null=True)

        class Meta:
            table_name = "mastra_messages"
            # Mastra's, then the library's for list_messages_by_resource_id (a resource's messages
            # in order, and their count from the index alone).
            sqlite_indexes = (
                Index("idx_messages_thread_created_at", 'thread_id, "createdAt"'),
                Index("idx_messages_thread_resource_created_at", 'thread_id, "resourceId", "createdAt"'),
                Index("idx_messages_resource_created_at", '"resourceId", "createdAt"'),
            )
            postgres_indexes = (
                Index("mastra_messages_thread_id_createdat_idx", 'thread_id, "createdAt" DESC'),
                Index("mastra_messages_resourceid_createdat_idx", '"resourceId", "createdAt" DESC'),
            )
            # A thread's messages on one shard: its message list reads one shard's rows.
            clickhouse = ClickHouseTable(order_by=("createdAt", "id"), shard_key=("thread_id",))

    class Resource(Base):
        id = TextField(primary_key=True)
        working_memory = TextField(column_name="workingMemory", null=True)
        metadata = JSONField(null=True)
        created_at = TimestampField(column_name="createdAt")
        updated_at = TimestampField(column_name="updatedAt")

        class Meta:
            table_name = "mastra_resources"
            clickhouse = ClickHouseTable(order_by=("createdAt", "id"), defaults={"metadata": "'{}'"},
                                         shard_key=("id",))

    return SimpleNamespace(thread=Thread, message=Message, resource=Resource)
