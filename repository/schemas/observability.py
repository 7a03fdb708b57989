"""Schema of the observability domain: spans (observability.md §2)."""

from __future__ import annotations

from typing import Any, Mapping

import marshmallow
from marshmallow import validate

from .base import JSONObject, JSONValue, NonEmptyString, RecordSchema, StrictBoolean, StrictString, Timestamp

#: Span types accepted on write and as the ``span_type`` filter (§2.3; fidelity-1.71.md §1, V1):
#: Mastra 1.71's ``SpanType``, in its order, case-sensitive (``skill_resolution`` is deprecated
#: there and still valid).
SPAN_TYPES = (
    "agent_run", "scorer_run", "classifier_evaluation", "scorer_step", "generic",
    "model_generation", "model_step", "model_inference", "model_chunk",
    "mcp_tool_call", "mcp_server_request", "processor_run",
    "tool_call", "client_tool_call", "provider_tool_call",
    "workflow_run", "workflow_step", "workflow_conditional", "workflow_conditional_eval", "workflow_parallel",
    "workflow_loop", "workflow_sleep", "workflow_wait_event",
    "memory_operation", "workspace_action",
    "rag_ingestion", "rag_embedding", "rag_vector_operation", "rag_action", "graph_action",
    "mapping", "skill_resolution", "skill_action", "agent_signal",
)

#: Entity types accepted on write (§2.4; fidelity-1.71.md §1, V1) for ``entity_type``,
#: ``parent_entity_type`` and ``root_entity_type``: Mastra 1.71's ``EntityType``, in its order.
ENTITY_TYPES = (
    "agent", "scorer", "rag_ingestion", "trajectory", "input_processor", "input_step_processor",
    "output_processor", "output_step_processor", "tool_result_processor", "workflow_step", "tool",
    "mcp_server", "workflow_run", "memory",
)

#: Keys a caller may send that are accepted and ignored (so returned rows can be written back).
IGNORED_KEYS = ("created_at", "updated_at", "status")

PARENT_IS_SELF = "parent_span_id must differ from span_id"


class JSONArray(JSONValue):
    """A JSON array (``list``; a ``tuple`` is stored as a list)."""

    default_error_messages = {"invalid": "Not a valid list."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, (list, tuple)):
            raise self.make_error("invalid")
        return super()._deserialize(list(value), attr, data, **kwargs)


class TagList(JSONArray):
    """A list of strings (a bare string is not a list); bad items are reported as ``[i]``."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        tags = super()._deserialize(value, attr, data, **kwargs)
        bad = {index: ["Not a valid string."] for index, tag in enumerate(tags) if not isinstance(tag, str)}
        if bad:
            raise marshmallow.ValidationError(bad)
        return tags


def _optional_text(data_key: str | None = None, **kwargs: Any) -> StrictString:
    return StrictString(allow_none=True, data_key=data_key, **kwargs)


def _entity_type(data_key: str) -> StrictString:
    return StrictString(allow_none=True, data_key=data_key, validate=validate.OneOf(ENTITY_TYPES))


class SpanSchema(RecordSchema):
    """A span (observability.md §2.2).

    ``load`` validates a span as written (wire or snake_case form): unknown keys are errors except
    ``created_at``, ``updated_at`` and ``status``, which are ignored; ``""`` as ``parent_span_id``
    becomes ``None``; an event span without ``ended_at`` ends when it starts.  Keys not given stay
    absent (the repository stores them as ``None``).  ``load(data, partial=True)`` checks the
    fields of an update.  ``dump`` gives the wire form: camelCase keys equal to the column names,
    ISO-8601 ``…Z`` timestamps, and ``status`` unchanged when the record has one.
    """

    trace_id = NonEmptyString(required=True, data_key="traceId")
    span_id = NonEmptyString(required=True, data_key="spanId")
    parent_span_id = _optional_text("parentSpanId")
    name = StrictString(required=True)
    span_type = StrictString(required=True, data_key="spanType", validate=validate.OneOf(SPAN_TYPES))
    is_event = StrictBoolean(data_key="isEvent")
    started_at = Timestamp(required=True, data_key="startedAt")
    ended_at = Timestamp(allow_none=True, data_key="endedAt")
    entity_type = _entity_type("entityType")
    entity_id = _optional_text("entityId")
    entity_name = _optional_text("entityName")
    parent_entity_type = _entity_type("parentEntityType")
    parent_entity_id = _optional_text("parentEntityId")
    parent_entity_name = _optional_text("parentEntityName")
    root_entity_type = _entity_type("rootEntityType")
    root_entity_id = _optional_text("rootEntityId")
    root_entity_name = _optional_text("rootEntityName")
    user_id = _optional_text("userId")
    organization_id = _optional_text("organizationId")
    resource_id = _optional_text("resourceId")
    run_id = _optional_text("runId")
    session_id = _optional_text("sessionId")
    thread_id = _optional_text("threadId")
    request_id = _optional_text("requestId")
    environment = _optional_text()
    service_name = _optional_text("serviceName")
    scope = JSONObject(allow_none=True)
    entity_version_id = _optional_text("entityVersionId")
    parent_entity_version_id = _optional_text("parentEntityVersionId")
    root_entity_version_id = _optional_text("rootEntityVersionId")
    experiment_id = _optional_text("experimentId")
    source = _optional_text()
    metadata = JSONObject(allow_none=True)
    tags = TagList(allow_none=True)
    attributes = JSONObject(allow_none=True)
    links = JSONArray(allow_none=True)
    input = JSONValue(allow_none=True)
    output = JSONValue(allow_none=True)
    error = JSONObject(allow_none=True)
    request_context = JSONObject(allow_none=True, data_key="requestContext")
    created_at = Timestamp(data_key="createdAt", dump_only=True)
    updated_at = Timestamp(data_key="updatedAt", dump_only=True)
    status = StrictString(dump_only=True)

    @marshmallow.pre_load
    def _drop_ignored(self, data: Any, **kwargs: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        ignored = {"createdAt", "updatedAt", *IGNORED_KEYS}
        return {key: value for key, value in data.items() if key not in ignored}

    @marshmallow.validates_schema
    def _check_parent(self, data: dict[str, Any], **kwargs: Any) -> None:
        parent = data.get("parent_span_id")
        if parent and parent == data.get("span_id"):
            raise marshmallow.ValidationError(PARENT_IS_SELF, "parent_span_id")

    @marshmallow.post_load
    def _complete(self, data: dict[str, Any], *, partial: Any = None, **kwargs: Any) -> dict[str, Any]:
        if data.get("parent_span_id") == "":
            data["parent_span_id"] = None
        if not partial and data.get("is_event") and data.get("ended_at") is None:
            data["ended_at"] = data["started_at"]
        return data
