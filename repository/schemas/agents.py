"""Schemas of the agents domain: agent records (and resolved agents) and agent versions
(agents.md §3)."""

from __future__ import annotations

from typing import Any

import marshmallow
from marshmallow import fields, validate

from ..validation import one_of
from .base import JSONObject, JSONValue, NonEmptyString, RecordSchema, StrictInteger, StrictString, Timestamp

AGENT_STATUSES = ("draft", "published", "archived")
VISIBILITIES = ("private", "public")
SKILLS_FORMATS = ("xml", "json", "markdown")
INSTRUCTION_BLOCK_TYPES = ("text", "prompt_block_ref", "prompt_block")

#: The string member each instruction block type requires.
_BLOCK_REQUIRED = {"text": "content", "prompt_block_ref": "id", "prompt_block": "content"}

MISSING = "Missing data for required field."
NOT_STRING = "Not a valid string."
NOT_MAPPING = "Not a valid mapping type."


def _variant_list_errors(value: list) -> Any:
    """Problems of a variant list: a non-empty list of ``{"value": ..., "rules": ...}`` dicts."""
    if not value:
        return ["Must be a non-empty list of variants."]
    errors: dict[int, Any] = {}
    for index, variant in enumerate(value):
        if not isinstance(variant, dict):
            errors[index] = [NOT_MAPPING]
            continue
        problems = {key: ["Unknown field."] for key in variant if key not in ("value", "rules")}
        if "value" not in variant:
            problems["value"] = [MISSING]
        if problems:
            errors[index] = problems
    return errors


class ConfigValue(JSONValue):
    """A configuration value: its plain form (a JSON object unless a subclass says otherwise)
    or a variant list, which is checked for its shape only and stored verbatim."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        result = super()._deserialize(value, attr, data, **kwargs)
        errors = _variant_list_errors(result) if isinstance(result, list) else self.plain_errors(result)
        if errors:
            raise marshmallow.ValidationError(errors)
        return result

    def plain_errors(self, value: Any) -> Any:
        """Problems of a value that is not a variant list (empty when it is fine)."""
        return [] if isinstance(value, dict) else [NOT_MAPPING]


class ModelConfig(ConfigValue):
    """The model: ``{"provider": str, "name": str, ...other keys free}`` or a variant list."""

    def plain_errors(self, value: Any) -> Any:
        if not isinstance(value, dict):
            return ["Must be a dict with string provider and name, or a variant list."]
        errors = {}
        for key in ("provider", "name"):
            if key not in value:
                errors[key] = [MISSING]
            elif not isinstance(value[key], str):
                errors[key] = [NOT_STRING]
        return errors


class ToolsConfig(ConfigValue):
    """Tools: ``{tool key: options dict}`` or a variant list."""

    def plain_errors(self, value: Any) -> Any:
        if not isinstance(value, dict):
            return [NOT_MAPPING]
        return {key: [NOT_MAPPING] for key, options in value.items() if not isinstance(options, dict)}


class Instructions(JSONValue):
    """A string, or a list of instruction blocks (``text``, ``prompt_block_ref``, ``prompt_block``)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        result = super()._deserialize(value, attr, data, **kwargs)
        if isinstance(result, str):
            return result
        if not isinstance(result, list):
            raise marshmallow.ValidationError("Must be a string or a list of instruction blocks.")
        errors = {index: problems for index, block in enumerate(result) if (problems := _block_errors(block))}
        if errors:
            raise marshmallow.ValidationError(errors)
        return result


def _block_errors(block: Any) -> Any:
    if not isinstance(block, dict):
        return [NOT_MAPPING]
    if "type" not in block:
        return {"type": [MISSING]}
    kind = block["type"]
    if not isinstance(kind, str) or kind not in INSTRUCTION_BLOCK_TYPES:
        return {"type": [one_of(INSTRUCTION_BLOCK_TYPES)]}
    required = _BLOCK_REQUIRED[kind]
    if required not in block:
        return {required: [MISSING]}
    if not isinstance(block[required], str):
        return {required: [NOT_STRING]}
    return {}


class Durable(JSONValue):
    """``durable``: a bool, or a dict of options (``maxSteps``, ``cleanupTimeoutMs``)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        result = super()._deserialize(value, attr, data, **kwargs)
        if not isinstance(result, (bool, dict)):
            raise marshmallow.ValidationError("Must be a bool or a dict of options.")
        return result


class VersionNumber(fields.Field):
    """A version number: an ``int`` (not a ``bool``) of at least 1."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise marshmallow.ValidationError("version_number must be an integer >= 1")
        return value


class AgentConfigSchema(RecordSchema):
    """The configuration an agent version holds (agents.md §3.2); ``name``, ``instructions`` and
    ``model`` are required, every other field may be ``None``."""

    name = NonEmptyString(required=True)
    description = StrictString(allow_none=True)
    instructions = Instructions(required=True)
    model = ModelConfig(required=True)
    tools = ToolsConfig(allow_none=True)
    default_options = ConfigValue(allow_none=True, data_key="defaultOptions")
    workflows = ConfigValue(allow_none=True)
    agents = ConfigValue(allow_none=True)
    integration_tools = ConfigValue(allow_none=True, data_key="integrationTools")
    tool_providers = ConfigValue(allow_none=True, data_key="toolProviders")
    input_processors = JSONValue(allow_none=True, data_key="inputProcessors")
    output_processors = JSONValue(allow_none=True, data_key="outputProcessors")
    memory = ConfigValue(allow_none=True)
    scorers = ConfigValue(allow_none=True)
    mcp_clients = ConfigValue(allow_none=True, data_key="mcpClients")
    request_context_schema = JSONObject(allow_none=True, data_key="requestContextSchema")
    workspace = ConfigValue(allow_none=True)
    skills = ConfigValue(allow_none=True)
    skills_format = StrictString(allow_none=True, data_key="skillsFormat",
                                  validate=validate.OneOf(SKILLS_FORMATS))
    durable = Durable(allow_none=True)
    browser = ConfigValue(allow_none=True)


class AgentVersionSchema(AgentConfigSchema):
    """An agent version (agents.md §3.3): the configuration plus its bookkeeping keys."""

    id = NonEmptyString()
    agent_id = NonEmptyString(required=True, data_key="agentId")
    version_number = VersionNumber(required=True, data_key="versionNumber")
    changed_fields = fields.List(StrictString(), allow_none=True, data_key="changedFields")
    change_message = StrictString(allow_none=True, data_key="changeMessage")
    created_at = Timestamp(data_key="createdAt")


class AgentUpdateSchema(RecordSchema):
    """The record fields ``update`` changes (its configuration keys are checked as JSON values)."""

    author_id = StrictString(allow_none=True)
    visibility = StrictString(allow_none=True, validate=validate.OneOf(VISIBILITIES))
    metadata = JSONObject(allow_none=True)
    active_version_id = NonEmptyString(allow_none=True)
    status = StrictString(validate=validate.OneOf(AGENT_STATUSES))


class AgentInputSchema(AgentConfigSchema):
    """The input of ``create``: the record fields a caller sets plus the configuration of version 1."""

    id = NonEmptyString(required=True)
    author_id = StrictString(allow_none=True, data_key="authorId")
    visibility = StrictString(allow_none=True, validate=validate.OneOf(VISIBILITIES))
    metadata = JSONObject(allow_none=True)


class AgentSchema(AgentInputSchema):
    """An agent record (agents.md §3.1), or a resolved agent (§3.4: the record, every
    configuration key and ``resolved_version_id``)."""

    name = NonEmptyString(allow_none=True)
    instructions = Instructions(allow_none=True)
    model = ModelConfig(allow_none=True)
    status = StrictString(validate=validate.OneOf(AGENT_STATUSES))
    active_version_id = StrictString(allow_none=True, data_key="activeVersionId")
    favorite_count = StrictInteger(allow_none=True, data_key="favoriteCount")
    created_at = Timestamp(data_key="createdAt")
    updated_at = Timestamp(data_key="updatedAt")
    resolved_version_id = StrictString(allow_none=True, data_key="resolvedVersionId")
