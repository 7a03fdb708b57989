"""Scores domain model: ``mastra_scorers`` (one row per scorer verdict)."""

from __future__ import annotations

from types import SimpleNamespace

import peewee

from .base import ClickHouseTable, Index, base_model
from .fields import JSONField, TextField, TimestampField

# Secondary indexes (scores.md §4.1/§4.2): Mastra creates the trace/span one on PostgreSQL; the
# library adds the others on SQLite and PostgreSQL.
_TRACE_SPAN_INDEX = Index("mastra_scores_trace_id_span_id_created_at_idx", '"traceId", "spanId", "createdAt" DESC')
_INDEXES = (
    _TRACE_SPAN_INDEX,
    Index("mastra_scorers_scorer_id_created_at_idx", '"scorerId", "createdAt" DESC'),
    Index("mastra_scorers_run_id_created_at_idx", '"runId", "createdAt" DESC'),
    Index("mastra_scorers_entity_created_at_idx", '"entityId", "entityType", "createdAt" DESC'),
    # The pages of the big lists (issue 20): the whole order, ties by id included, so a page (or
    # the page after a cursor) reads only its own rows.  A batch of scores shares one createdAt:
    # without the id, a first page read and sorted every score of the scorer's latest batch.
    Index("mastra_scorers_scorer_id_created_at_id_idx", '"scorerId", "createdAt" DESC, id'),
    Index("mastra_scorers_entity_created_at_id_idx", '"entityId", "entityType", "createdAt" DESC, id'),
)
# The totals of those pages on PostgreSQL (issue 20): a count reads every index entry of the
# scorer or entity, and an index on the filter columns alone is deduplicated (one key, a list of
# row ids) where the ones above hold a key per score.  At 100,000 scores of a scorer with
# distinct createdAt: 89 buffers against 496, count p50 14.8 ms against 30.2 ms (loaded machine,
# alternating).  SQLite has no deduplication: its count costs the same instructions either way.
_POSTGRES_INDEXES = _INDEXES + (
    Index("mastra_scorers_scorer_id_idx", '"scorerId"'),
    Index("mastra_scorers_entity_idx", '"entityId", "entityType"'),
)


def build_scores_models(database: peewee.DatabaseProxy) -> SimpleNamespace:
    """Declare the scores model bound to ``database``; returns ``score``.

    Nullability follows PostgreSQL and ClickHouse (required columns ``NOT NULL``); on SQLite
    (``Meta.sqlite_all_nullable``) every column but ``id`` is nullable, as in the table Mastra
    creates there.
    Fields are declared in the spec's ``CREATE TABLE`` column order.
    """
    Base = base_model(database)

    class Score(Base):
        id = TextField(primary_key=True)
        scorer_id = TextField(column_name="scorerId")
        trace_id = TextField(column_name="traceId", null=True)
        span_id = TextField(column_name="spanId", null=True)
        run_id = TextField(column_name="runId")
        scorer = JSONField(column_name="scorer")
        preprocess_step_result = JSONField(column_name="preprocessStepResult", null=True)
        extract_step_result = JSONField(column_name="extractStepResult", null=True)
        analyze_step_result = JSONField(column_name="analyzeStepResult", null=True)
        score = peewee.DoubleField(column_name="score")
        reason = TextField(column_name="reason", null=True)
        metadata = JSONField(column_name="metadata", null=True)
        preprocess_prompt = TextField(column_name="preprocessPrompt", null=True)
        extract_prompt = TextField(column_name="extractPrompt", null=True)
        generate_score_prompt = TextField(column_name="generateScorePrompt", null=True)
        generate_reason_prompt = TextField(column_name="generateReasonPrompt", null=True)
        analyze_prompt = TextField(column_name="analyzePrompt", null=True)
        reason_prompt = TextField(column_name="reasonPrompt", null=True)
        input = JSONField(column_name="input")
        output = JSONField(column_name="output")
        additional_context = JSONField(column_name="additionalContext", null=True)
        request_context = JSONField(column_name="requestContext", null=True)
        entity_type = TextField(column_name="entityType", null=True)
        entity = JSONField(column_name="entity", null=True)
        entity_id = TextField(column_name="entityId", null=True)
        source = TextField(column_name="source")
        resource_id = TextField(column_name="resourceId", null=True)
        thread_id = TextField(column_name="threadId", null=True)
        organization_id = TextField(column_name="organizationId", null=True)
        project_id = TextField(column_name="projectId", null=True)
        batch_id = TextField(column_name="batchId", null=True)
        dataset_id = TextField(column_name="datasetId", null=True)
        dataset_item_id = TextField(column_name="datasetItemId", null=True)
        created_at = TimestampField(column_name="createdAt")
        updated_at = TimestampField(column_name="updatedAt")

        class Meta:
            table_name = "mastra_scorers"
            sqlite_all_nullable = True
            sqlite_indexes = _INDEXES
            postgres_indexes = _POSTGRES_INDEXES
            clickhouse = ClickHouseTable(order_by=("createdAt", "id"), partition_by_month="createdAt",
                                         defaults={"metadata": "'{}'"}, ttl_column="createdAt", shard_key=("id",))

    return SimpleNamespace(score=Score)
