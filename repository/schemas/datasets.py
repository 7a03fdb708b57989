"""Schemas of the datasets domain: datasets, their items (datasets.md §4) and the item input of
the write methods.

Item payload fields are only checked for their shape here and returned exactly as given; the
strict JSON-value check of datasets.md §7.1 runs afterwards (``repository.datasets.payload``), so
nothing inside an item payload is ever converted.
"""

from __future__ import annotations

from typing import Any, Mapping

import jsonschema
import marshmallow
from jsonschema.validators import validator_for
from marshmallow import fields, validate

from ..validation import one_of
from .base import (JSONObject, NonEmptyString, RecordSchema, StrictBoolean, StrictInteger, StrictString,
                   Timestamp)

TARGET_TYPES = ("agent", "workflow", "scorer", "processor")
SOURCE_TYPES = ("csv", "json", "trace", "llm", "experiment-result", "candidate-screener")
UNMOCKED_TOOL_POLICIES = ("allow", "deny")
MATCH_ARGS = ("strict", "ignore")

NOT_STRING = "Not a valid string."
NOT_MAPPING = "Not a valid mapping type."
NOT_LIST = "Not a valid list."


class StringList(fields.List):
    """A list of strings (a tuple is accepted and becomes a list)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(StrictString(), **kwargs)


def validator_class(schema: dict[str, Any]) -> type:
    """The ``jsonschema`` validator class of the draft named by ``$schema`` (Draft 7 without it)."""
    return validator_for(schema, default=jsonschema.Draft7Validator)


def schema_problem(schema: dict[str, Any]) -> str | None:
    """Why ``schema`` is not a valid JSON Schema of its draft, or ``None`` when it is."""
    try:
        validator_class(schema).check_schema(schema)
    except jsonschema.SchemaError as error:
        return f"Invalid JSON Schema: {error.message}"
    except TypeError:  # e.g. a "$schema" that is not a string
        return "Invalid JSON Schema: $schema must be a string"
    return None


class JSONSchemaDocument(JSONObject):
    """A JSON Schema (a dict that is a valid schema of its ``$schema`` draft, Draft 7 by default)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        schema = super()._deserialize(value, attr, data, **kwargs)
        problem = schema_problem(schema)
        if problem:
            raise marshmallow.ValidationError(problem)
        return schema


class DatasetSchema(RecordSchema):
    """A dataset (datasets.md §4.1); unset configuration fields are absent, not ``None``."""

    id = NonEmptyString()
    name = NonEmptyString(required=True)
    description = StrictString()
    metadata = JSONObject()
    input_schema = JSONSchemaDocument(data_key="inputSchema")
    ground_truth_schema = JSONSchemaDocument(data_key="groundTruthSchema")
    request_context_schema = JSONSchemaDocument(data_key="requestContextSchema")
    tags = StringList()
    target_type = StrictString(data_key="targetType", validate=validate.OneOf(TARGET_TYPES))
    target_ids = StringList(data_key="targetIds")
    scorer_ids = StringList(data_key="scorerIds")
    organization_id = StrictString(allow_none=True, data_key="organizationId")
    project_id = StrictString(allow_none=True, data_key="projectId")
    candidate_key = StrictString(allow_none=True, data_key="candidateKey")
    candidate_id = StrictString(allow_none=True, data_key="candidateId")
    version = StrictInteger(validate=validate.Range(min=0))
    created_at = Timestamp(data_key="createdAt")
    updated_at = Timestamp(data_key="updatedAt")


# --------------------------------------------------------------------------- item payload fields

class PayloadValue(fields.Raw):
    """Any value, returned unchanged (the JSON-value check comes later)."""


class PayloadObject(fields.Field):
    """A ``dict``, returned unchanged."""

    default_error_messages = {"invalid": NOT_MAPPING}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, dict):
            raise self.make_error("invalid")
        return value


def _shape_errors(value: Any, members: Mapping[str, Any]) -> dict[str, list[str]]:
    """Key and type errors of a small fixed-shape dict; ``members`` maps each key to
    ``(check, message, required)``."""
    errors: dict[str, list[str]] = {}
    for key in value:
        if key not in members:
            errors[str(key)] = ["Unknown field."]
    for key, (check, message, required) in members.items():
        if key not in value:
            if required:
                errors[key] = ["Missing data for required field."]
        elif not check(value[key]):
            errors[key] = [message]
    return errors


_TOOL_MOCK_MEMBERS = {
    "toolName": (lambda v: isinstance(v, str), NOT_STRING, True),
    "args": (lambda v: isinstance(v, dict), NOT_MAPPING, True),
    "output": (lambda v: True, "", True),
    "matchArgs": (lambda v: v in MATCH_ARGS, one_of(MATCH_ARGS), False),
}

_SOURCE_MEMBERS = {
    "type": (lambda v: isinstance(v, str) and v in SOURCE_TYPES, one_of(SOURCE_TYPES), True),
    "referenceId": (lambda v: isinstance(v, str), NOT_STRING, False),
}


class ToolMocks(fields.Field):
    """A list of tool mocks: ``{"toolName": str, "args": dict, "output": any, "matchArgs"?:
    "strict" | "ignore"}``; returned unchanged."""

    default_error_messages = {"invalid": NOT_LIST}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, list):
            raise self.make_error("invalid")
        errors: dict[Any, Any] = {}
        for index, mock in enumerate(value):
            if not isinstance(mock, dict):
                errors[index] = [NOT_MAPPING]
            else:
                problems = _shape_errors(mock, _TOOL_MOCK_MEMBERS)
                if problems:
                    errors[index] = problems
        if errors:
            raise marshmallow.ValidationError(errors)
        return value


class Source(fields.Field):
    """Where an item came from: ``{"type": one of SOURCE_TYPES, "referenceId"?: str}``."""

    default_error_messages = {"invalid": NOT_MAPPING}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, dict):
            raise self.make_error("invalid")
        problems = _shape_errors(value, _SOURCE_MEMBERS)
        if problems:
            raise marshmallow.ValidationError(problems)
        return value


class ScorerIds(fields.Field):
    """A list of scorer ids (``[]`` means "no scorers"), returned unchanged."""

    default_error_messages = {"invalid": "Not a valid list of strings."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.make_error("invalid")
        return value


class ExternalId(fields.Field):
    """A caller-chosen item identity: a non-empty string, or ``None``."""

    default_error_messages = {"invalid": NOT_STRING, "empty": "external_id must not be empty"}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, str):
            raise self.make_error("invalid")
        if not value:
            raise self.make_error("empty")
        return value


class ItemPayloadSchema(RecordSchema):
    """The payload fields of an item (datasets.md §4.2), all optional: ``update_item``'s input."""

    input = PayloadValue(allow_none=True)
    ground_truth = PayloadValue(allow_none=True, data_key="groundTruth")
    expected_trajectory = PayloadValue(allow_none=True, data_key="expectedTrajectory")
    tool_mocks = ToolMocks(allow_none=True, data_key="toolMocks")
    unmocked_tool_policy = StrictString(allow_none=True, data_key="unmockedToolPolicy",
                                         validate=validate.OneOf(UNMOCKED_TOOL_POLICIES))
    scorer_ids = ScorerIds(allow_none=True, data_key="scorerIds")
    request_context = PayloadObject(allow_none=True, data_key="requestContext")
    metadata = PayloadObject(allow_none=True)
    source = Source(allow_none=True)


class ItemInputSchema(ItemPayloadSchema):
    """One element of ``batch_insert_items``: the payload (``input`` required) and an optional
    ``external_id``."""

    input = PayloadValue(required=True, allow_none=True)
    external_id = ExternalId(allow_none=True, data_key="externalId")


class DatasetItemSchema(ItemPayloadSchema):
    """A dataset item (datasets.md §4.2), or a history row when ``valid_to`` and ``is_deleted`` are
    present (§4.3).  Absent payload fields are omitted; ``None`` is JSON ``null``."""

    id = NonEmptyString(required=True)
    dataset_id = NonEmptyString(required=True, data_key="datasetId")
    dataset_version = StrictInteger(required=True, data_key="datasetVersion", validate=validate.Range(min=0))
    external_id = ExternalId(allow_none=True, data_key="externalId")
    organization_id = StrictString(allow_none=True, data_key="organizationId")
    project_id = StrictString(allow_none=True, data_key="projectId")
    input = PayloadValue(required=True, allow_none=True)
    created_at = Timestamp(required=True, data_key="createdAt")
    updated_at = Timestamp(required=True, data_key="updatedAt")
    valid_to = StrictInteger(allow_none=True, data_key="validTo")
    is_deleted = StrictBoolean(data_key="isDeleted")


class DatasetVersionSchema(RecordSchema):
    """One dataset version row (datasets.md §4.3)."""

    id = NonEmptyString(required=True)
    dataset_id = NonEmptyString(required=True, data_key="datasetId")
    version = StrictInteger(required=True, validate=validate.Range(min=0))
    created_at = Timestamp(required=True, data_key="createdAt")
