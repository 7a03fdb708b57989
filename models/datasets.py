"""Datasets domain models: ``mastra_datasets``, ``mastra_dataset_items``, ``mastra_dataset_versions``.

SQLite and PostgreSQL only (ClickHouse does not hold this domain yet).  No foreign keys.
"""

from __future__ import annotations

from types import SimpleNamespace

import peewee

from .base import Index, base_model
from .fields import JSONField, TextField, TimestampField


class JSONTextField(peewee.Field):
    """A JSON column that the repository writes and reads as JSON *text*.

    Item payloads distinguish an explicit JSON ``null`` (the text ``null``) from an absent value
    (SQL NULL), which a decoding field cannot: both would become ``None``.  So values pass through
    unchanged (text in; stored text, or a SQLite JSONB blob, out) and the repository encodes and
    decodes them.  The column type is the JSON one (``TEXT`` on SQLite, ``jsonb`` on PostgreSQL).
    """

    field_type = "JSON"


def build_datasets_models(database: peewee.DatabaseProxy) -> SimpleNamespace:
    """Declare the datasets models bound to ``database``; returns ``dataset``, ``item``, ``version``."""
    Base = base_model(database)

    class Dataset(Base):
        id = TextField(primary_key=True)
        name = TextField()
        description = TextField(null=True)
        metadata = JSONField(null=True)
        input_schema = JSONField(column_name="inputSchema", null=True)
        ground_truth_schema = JSONField(column_name="groundTruthSchema", null=True)
        request_context_schema = JSONField(column_name="requestContextSchema", null=True)
        tags = JSONField(null=True)
        target_type = TextField(column_name="targetType", null=True)
        target_ids = JSONField(column_name="targetIds", null=True)
        scorer_ids = JSONField(column_name="scorerIds", null=True)
        organization_id = TextField(column_name="organizationId", null=True)
        project_id = TextField(column_name="projectId", null=True)
        candidate_key = TextField(column_name="candidateKey", null=True)
        candidate_id = TextField(column_name="candidateId", null=True)
        version = peewee.IntegerField()
        created_at = TimestampField(column_name="createdAt")
        updated_at = TimestampField(column_name="updatedAt")

        class Meta:
            table_name = "mastra_datasets"
            sqlite_indexes = (
                Index("idx_datasets_tenancy_candidate",
                      '"organizationId", "projectId", "candidateKey", "candidateId"'),
                Index("idx_datasets_tenancy_createdat", '"organizationId", "projectId", "createdAt", id'),
            )
            postgres_indexes = (
                Index("idx_datasets_candidate", '"candidateKey", "candidateId"'),
                Index("idx_datasets_org_project", '"organizationId", "projectId"'),
            )

    class DatasetItem(Base):
        id = TextField()
        dataset_id = TextField(column_name="datasetId")
        dataset_version = peewee.IntegerField(column_name="datasetVersion")
        external_id = TextField(column_name="externalId", null=True)
        organization_id = TextField(column_name="organizationId", null=True)
        project_id = TextField(column_name="projectId", null=True)
        valid_to = peewee.IntegerField(column_name="validTo", null=True)
        is_deleted = peewee.BooleanField(column_name="isDeleted")
        input = JSONTextField()
        ground_truth = JSONTextField(column_name="groundTruth", null=True)
        request_context = JSONTextField(column_name="requestContext", null=True)
        metadata = JSONTextField(null=True)
        source = JSONTextField(null=True)
        expected_trajectory = JSONTextField(column_name="expectedTrajectory", null=True)
        tool_mocks = JSONTextField(column_name="toolMocks", null=True)
        unmocked_tool_policy = TextField(column_name="unmockedToolPolicy", null=True)
        scorer_ids = JSONTextField(column_name="scorerIds", null=True)
        created_at = TimestampField(column_name="createdAt")
        updated_at = TimestampField(column_name="updatedAt")

        class Meta:
            table_name = "mastra_dataset_items"
            primary_key = peewee.CompositeKey("id", "dataset_version")
            sqlite_indexes = (
                Index("idx_dataset_items_dataset_externalid_version",
                      '"datasetId", "externalId", "datasetVersion"'),
                Index("idx_dataset_items_dataset_validto", '"datasetId", "validTo"'),
                Index("idx_dataset_items_dataset_validto_deleted", '"datasetId", "validTo", "isDeleted"'),
                Index("idx_dataset_items_dataset_version", '"datasetId", "datasetVersion"'),
                Index("idx_dataset_items_tenancy_list",
                      '"organizationId", "projectId", "datasetId", "validTo", "isDeleted"'),
            )
            postgres_indexes = (
                Index("idx_dataset_items_dataset_validto", '"datasetId", "validTo"'),
                Index("idx_dataset_items_dataset_validto_deleted", '"datasetId", "validTo", "isDeleted"'),
                Index("idx_dataset_items_dataset_version", '"datasetId", "datasetVersion"'),
                Index("idx_dataset_items_external_id_history", '"datasetId", "externalId", "datasetVersion"'),
                Index("idx_dataset_items_org_project", '"organizationId", "projectId"'),
            )

    class DatasetVersion(Base):
        id = TextField(primary_key=True)
        dataset_id = TextField(column_name="datasetId")
        version = peewee.IntegerField()
        created_at = TimestampField(column_name="createdAt")

        class Meta:
            table_name = "mastra_dataset_versions"
            sqlite_indexes = postgres_indexes = (
                Index("idx_dataset_versions_dataset_version", '"datasetId", version'),
                Index("idx_dataset_versions_dataset_version_unique", '"datasetId", version', unique=True),
            )

    return SimpleNamespace(dataset=Dataset, item=DatasetItem, version=DatasetVersion)
