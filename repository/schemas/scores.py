"""Schema of the scores domain: one score (scores.md §2)."""

from __future__ import annotations

from typing import Any

from marshmallow import validate

from .base import (FiniteNumber, JSONObject, JSONValue, NonEmptyString, RecordSchema, StrictBoolean, StrictString,
                   Timestamp)
from .observability import SPAN_TYPES

#: Accepted ``source`` values (scores.md §2.2).
SCORE_SOURCES = ("LIVE", "TEST")

#: Accepted ``entity_type`` values on save (scores.md §2.2; fidelity-1.71.md §1, V2), case-sensitive:
#: Mastra 1.71's ``scoringEntityTypeSchema`` — the five scored-entity kinds, then a span type of
#: observability.md §2.3 when one span was scored.
SCORE_ENTITY_TYPES = ("AGENT", "WORKFLOW", "TRAJECTORY", "STEP", "EXTERNAL", *SPAN_TYPES)


def _text(data_key: str | None = None) -> StrictString:
    return StrictString(allow_none=True, data_key=data_key)


def _object(data_key: str | None = None, **kwargs: Any) -> JSONObject:
    return JSONObject(allow_none=True, data_key=data_key, **kwargs)


class ScoreSchema(RecordSchema):
    """One score (scores.md §2.1): ``load`` validates a payload (wire or snake_case form) and
    returns a snake_case dict; ``dump`` gives the wire form (camelCase keys, ISO ``…Z``
    timestamps).

    ``created_at``/``updated_at`` load as timestamps (``save_score`` ignores them) and
    ``structured_output`` (a ``bool``) is accepted but not part of a stored score.
    """

    id = NonEmptyString(allow_none=True)
    scorer_id = NonEmptyString(required=True, data_key="scorerId")
    trace_id = _text("traceId")
    span_id = _text("spanId")
    run_id = NonEmptyString(required=True, data_key="runId")
    scorer = JSONObject(required=True)
    preprocess_step_result = _object("preprocessStepResult")
    extract_step_result = _object("extractStepResult")
    analyze_step_result = _object("analyzeStepResult")
    score = FiniteNumber(required=True)
    reason = _text()
    metadata = _object()
    preprocess_prompt = _text("preprocessPrompt")
    extract_prompt = _text("extractPrompt")
    generate_score_prompt = _text("generateScorePrompt")
    generate_reason_prompt = _text("generateReasonPrompt")
    analyze_prompt = _text("analyzePrompt")
    reason_prompt = _text("reasonPrompt")
    input = JSONValue(allow_none=True)
    output = JSONValue(required=True, allow_none=True)
    additional_context = _object("additionalContext")
    request_context = _object("requestContext")
    entity_type = StrictString(allow_none=True, data_key="entityType", validate=validate.OneOf(SCORE_ENTITY_TYPES))
    entity = JSONObject(required=True)
    entity_id = NonEmptyString(required=True, data_key="entityId")
    source = StrictString(required=True, validate=validate.OneOf(SCORE_SOURCES))
    resource_id = _text("resourceId")
    thread_id = _text("threadId")
    organization_id = _text("organizationId")
    project_id = _text("projectId")
    batch_id = _text("batchId")
    dataset_id = _text("datasetId")
    dataset_item_id = _text("datasetItemId")
    created_at = Timestamp(allow_none=True, data_key="createdAt")
    updated_at = Timestamp(allow_none=True, data_key="updatedAt")
    structured_output = StrictBoolean(allow_none=True, load_only=True, data_key="structuredOutput")


#: Snake-case keys of a stored score, in the table's column order (scores.md §2.1).
SCORE_KEYS = tuple(name for name, field in ScoreSchema().fields.items() if not field.load_only)

__all__ = ["SCORE_ENTITY_TYPES", "SCORE_KEYS", "SCORE_SOURCES", "SPAN_TYPES", "ScoreSchema"]
