"""Workflows domain model: ``mastra_workflow_snapshot``, one snapshot per workflow run."""

from __future__ import annotations

from types import SimpleNamespace

import peewee

from .base import ClickHouseTable, Index, TableKey, base_model
from .fields import JSONField, TextField, TimestampField

TABLE = "mastra_workflow_snapshot"

#: The run's thread id (workflows.md §3.2) as PostgreSQL computes it for the thread index: the
#: first suspended step's stream-state thread id, else the input's message-list thread id.
PG_THREAD_ID_SQL = (
    "COALESCE(jsonb_path_query_first(snapshot::jsonb, '$.\"context\".*?(@.\"status\" == \"suspended\")"
    ".\"suspendPayload\".\"__streamState\".\"messageList\".\"memoryInfo\".\"threadId\"') #>> '{}', "
    "snapshot::jsonb #>> '{context,input,messageListState,memoryInfo,threadId}')"
)


def build_workflow_models(database: peewee.DatabaseProxy) -> SimpleNamespace:
    """Declare the workflow snapshot model bound to ``database``; returns ``snapshot``.

    A run is keyed by ``(workflow_name, run_id)``: on SQLite and PostgreSQL a unique constraint
    (the tables are created by the repository, not from this declaration, because they have no
    primary key), on ClickHouse the sorting key.  Only ClickHouse tables have the ``id`` column
    (field ``row_id``: written as the run id, never read).
    """
    Base = base_model(database)

    class WorkflowSnapshot(Base):
        workflow_name = TextField(column_name="workflow_name")
        run_id = TextField(column_name="run_id")
        resource_id = TextField(column_name="resourceId", null=True)
        snapshot = JSONField()
        created_at = TimestampField(column_name="createdAt")
        updated_at = TimestampField(column_name="updatedAt")

        class Meta:
            table_name = TABLE
            primary_key = peewee.CompositeKey("workflow_name", "run_id")
            postgres_indexes = (
                Index("mastra_workflow_snapshot_name_createdat_idx", 'workflow_name, "createdAt" DESC'),
                Index("mastra_workflow_snapshot_name_status_createdat_idx",
                      "workflow_name, (snapshot::jsonb ->> 'status'), \"createdAt\" DESC"),
                Index("mastra_workflow_snapshot_threadid_idx", f"({PG_THREAD_ID_SQL})"),
            )
            table_key = TableKey(("workflow_name", "run_id"),
                                 name="{schema}_mastra_workflow_snapshot_workflow_name_run_id_key",
                                 sqlite_constraint="UNIQUE (workflow_name, run_id)",
                                 sqlite_index="mastra_workflow_snapshot_workflow_name_run_id_key",
                                 replica_identity=True)
            sqlite_all_nullable = True  # the reference layout
            clickhouse = ClickHouseTable(order_by=("createdAt", "run_id", "workflow_name"),
                                         text_columns={"row_id": "id"}, shard_key=("run_id",))

    return SimpleNamespace(snapshot=WorkflowSnapshot)
