"""Schemas of the experiments domain: experiments and their per-item results (experiments.md §3)."""

from __future__ import annotations

from typing import Any, Mapping

import marshmallow
from marshmallow import fields, validate

from .base import JSONObject, JSONValue, NonEmptyString, RecordSchema, StrictString, Timestamp

EXPERIMENT_STATUSES = ("pending", "running", "completed", "failed")
TARGET_TYPES = ("agent", "workflow", "scorer", "processor")
RESULT_STATUSES = ("needs-review", "reviewed", "complete")


class Count(fields.Field):
    """An ``int`` ≥ 0 (``bool`` and numeric strings are refused)."""

    default_error_messages = {"invalid": "Not a valid integer.", "negative": "Must be greater than or equal to 0."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.make_error("invalid")
        if value < 0:
            raise self.make_error("negative")
        return int(value)


class ShapedObject(JSONObject):
    """A JSON object with some typed members (other members are kept verbatim).

    ``members`` maps a member key to ``(kind, required)``; ``kind`` is ``str`` or ``dict``.
    """

    def __init__(self, members: Mapping[str, tuple[type, bool]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.members = dict(members)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        obj = super()._deserialize(value, attr, data, **kwargs)
        problems: dict[str, list[str]] = {}
        for key, (kind, required) in self.members.items():
            if key not in obj:
                if required:
                    problems[key] = ["Missing data for required field."]
            elif obj[key] is None:
                if required:
                    problems[key] = ["Field may not be null."]
            elif not isinstance(obj[key], kind):
                problems[key] = ["Not a valid string." if kind is str else "Not a valid mapping type."]
        if problems:
            raise marshmallow.ValidationError(problems)
        return obj


def provenance_field(**kwargs: Any) -> ShapedObject:
    """Where an experiment came from: ``source``, ``sourceId``, ``sourceVersion``, ``metadata``."""
    return ShapedObject({"source": (str, False), "sourceId": (str, False), "sourceVersion": (str, False),
                         "metadata": (dict, False)}, **kwargs)


def runner_attestation_field(**kwargs: Any) -> ShapedObject:
    """Who ran an experiment: ``runnerId`` and ``invocationId`` (required), ``runnerVersion``."""
    return ShapedObject({"runnerId": (str, True), "invocationId": (str, True), "runnerVersion": (str, False)},
                        **kwargs)


def error_field(**kwargs: Any) -> ShapedObject:
    """A result's error: ``message`` (required), ``stack``, ``code``."""
    return ShapedObject({"message": (str, True), "stack": (str, False), "code": (str, False)}, **kwargs)


class ExperimentSchema(RecordSchema):
    """An experiment run (experiments.md §3.1)."""

    id = NonEmptyString()
    name = StrictString(allow_none=True)
    description = StrictString(allow_none=True)
    metadata = JSONObject(allow_none=True)
    provenance = provenance_field(allow_none=True)
    runner_attestation = runner_attestation_field(allow_none=True, data_key="runnerAttestation")
    experiment_set_id = StrictString(allow_none=True, data_key="experimentSetId")
    comparison_id = StrictString(allow_none=True, data_key="comparisonId")
    variant_id = StrictString(allow_none=True, data_key="variantId")
    trial_index = Count(allow_none=True, data_key="trialIndex")
    dataset_id = NonEmptyString(allow_none=True, data_key="datasetId")
    dataset_version = Count(allow_none=True, data_key="datasetVersion")
    target_type = StrictString(allow_none=True, validate=validate.OneOf(TARGET_TYPES), data_key="targetType")
    target_id = StrictString(allow_none=True, data_key="targetId")
    scorer_ids = fields.List(StrictString(), allow_none=True, data_key="scorerIds")
    agent_version = StrictString(allow_none=True, data_key="agentVersion")
    status = StrictString(validate=validate.OneOf(EXPERIMENT_STATUSES))
    total_items = Count(required=True, data_key="totalItems")
    succeeded_count = Count(data_key="succeededCount")
    failed_count = Count(data_key="failedCount")
    skipped_count = Count(data_key="skippedCount")
    organization_id = StrictString(allow_none=True, data_key="organizationId")
    project_id = StrictString(allow_none=True, data_key="projectId")
    started_at = Timestamp(allow_none=True, data_key="startedAt")
    completed_at = Timestamp(allow_none=True, data_key="completedAt")
    created_at = Timestamp(data_key="createdAt")
    updated_at = Timestamp(data_key="updatedAt")


class ExperimentResultSchema(RecordSchema):
    """One execution of one dataset item in an experiment (experiments.md §3.2)."""

    id = NonEmptyString()
    experiment_id = NonEmptyString(required=True, data_key="experimentId")
    item_id = NonEmptyString(required=True, data_key="itemId")
    item_dataset_version = Count(allow_none=True, data_key="itemDatasetVersion")
    input = JSONValue(required=True, allow_none=True)
    output = JSONValue(allow_none=True)
    ground_truth = JSONValue(allow_none=True, data_key="groundTruth")
    metadata = JSONObject(allow_none=True)
    error = error_field(allow_none=True)
    started_at = Timestamp(required=True, data_key="startedAt")
    completed_at = Timestamp(required=True, data_key="completedAt")
    retry_count = Count(data_key="retryCount")
    attempt = Count()
    trace_id = StrictString(allow_none=True, data_key="traceId")
    status = StrictString(allow_none=True, validate=validate.OneOf(RESULT_STATUSES))
    tags = fields.List(StrictString(), allow_none=True)
    comment = StrictString(allow_none=True)
    tool_mock_report = JSONObject(allow_none=True, data_key="toolMockReport")
    organization_id = StrictString(allow_none=True, data_key="organizationId")
    project_id = StrictString(allow_none=True, data_key="projectId")
    created_at = Timestamp(data_key="createdAt")
