"""Experiments domain models: ``mastra_experiments`` and ``mastra_experiment_results``.

SQLite and PostgreSQL only (ClickHouse does not hold this domain yet).  No foreign keys: the
repository does the cascades.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import peewee

from .base import Index, base_model
from .fields import JSONField, TextField, TimestampField

#: The unique natural key of results.  Best effort: rows stored by other clients may violate it,
#: and then ``init`` warns and goes on without it (the write paths keep the key unique anyway).
RESULT_NATURAL_KEY_INDEX = Index("idx_experiment_results_exp_item_attempt", '"experimentId", "itemId", "attempt"',
                                 unique=True, best_effort=True)

#: A unique index of older releases on (experimentId, itemId) that forbids several attempts per
#: item; ``init`` drops it.
LEGACY_RESULT_INDEX = "idx_experiment_results_exp_item"


class JSONValueField(JSONField):
    """A required JSON column where ``None`` is a value: it is stored as JSON ``null``."""

    def db_value(self, value: Any) -> Any:
        return self.model._meta.database.json_to_db(self, value)


def build_experiments_models(database: peewee.DatabaseProxy) -> SimpleNamespace:
    """Declare the experiments models bound to ``database``; returns ``experiment``, ``result``."""
    Base = base_model(database)

    class Experiment(Base):
        id = TextField(primary_key=True)
        name = TextField(null=True)
        description = TextField(null=True)
        metadata = JSONField(null=True)
        provenance = JSONField(null=True)
        runner_attestation = JSONField(column_name="runnerAttestation", null=True)
        experiment_set_id = TextField(column_name="experimentSetId", null=True)
        comparison_id = TextField(column_name="comparisonId", null=True)
        variant_id = TextField(column_name="variantId", null=True)
        trial_index = peewee.IntegerField(column_name="trialIndex", null=True)
        dataset_id = TextField(column_name="datasetId", null=True)
        dataset_version = peewee.IntegerField(column_name="datasetVersion", null=True)
        target_type = TextField(column_name="targetType", null=True)
        target_id = TextField(column_name="targetId", null=True)
        scorer_ids = JSONField(column_name="scorerIds", null=True)
        status = TextField()
        total_items = peewee.IntegerField(column_name="totalItems")
        succeeded_count = peewee.IntegerField(column_name="succeededCount")
        failed_count = peewee.IntegerField(column_name="failedCount")
        skipped_count = peewee.IntegerField(column_name="skippedCount")
        started_at = TimestampField(column_name="startedAt", null=True)
        completed_at = TimestampField(column_name="completedAt", null=True)
        agent_version = TextField(column_name="agentVersion", null=True)
        organization_id = TextField(column_name="organizationId", null=True)
        project_id = TextField(column_name="projectId", null=True)
        created_at = TimestampField(column_name="createdAt")
        updated_at = TimestampField(column_name="updatedAt")

        class Meta:
            table_name = "mastra_experiments"
            sqlite_indexes = postgres_indexes = (
                Index("idx_experiments_datasetid", '"datasetId"'),
                Index("idx_experiments_grouping", '"experimentSetId", "comparisonId", "variantId", "trialIndex"'),
                Index("idx_experiments_org_project", '"organizationId", "projectId"'),
            )

    class ExperimentResult(Base):
        id = TextField(primary_key=True)
        experiment_id = TextField(column_name="experimentId")
        item_id = TextField(column_name="itemId")
        item_dataset_version = peewee.IntegerField(column_name="itemDatasetVersion", null=True)
        input = JSONValueField()
        output = JSONField(null=True)
        ground_truth = JSONField(column_name="groundTruth", null=True)
        metadata = JSONField(null=True)
        error = JSONField(null=True)
        started_at = TimestampField(column_name="startedAt")
        completed_at = TimestampField(column_name="completedAt")
        retry_count = peewee.IntegerField(column_name="retryCount")
        attempt = peewee.IntegerField(null=True)
        trace_id = TextField(column_name="traceId", null=True)
        status = TextField(null=True)
        tags = JSONField(null=True)
        comment = TextField(null=True)
        tool_mock_report = JSONField(column_name="toolMockReport", null=True)
        organization_id = TextField(column_name="organizationId", null=True)
        project_id = TextField(column_name="projectId", null=True)
        created_at = TimestampField(column_name="createdAt")

        class Meta:
            table_name = "mastra_experiment_results"
            dropped_indexes = (LEGACY_RESULT_INDEX,)  # it would forbid several attempts per item
            sqlite_indexes = (
                Index("idx_experiment_results_experimentid", '"experimentId"'),
                RESULT_NATURAL_KEY_INDEX,
                Index("idx_experiment_results_org_project", '"organizationId", "projectId"'),
            )
            postgres_indexes = sqlite_indexes + (
                Index("idx_experiment_results_tags_gin", "tags", method="gin"),
            )

    return SimpleNamespace(experiment=Experiment, result=ExperimentResult)
