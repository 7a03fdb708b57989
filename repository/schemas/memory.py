"""Schemas of the memory domain: threads, messages, resources."""

from __future__ import annotations

from typing import Any, Mapping

import marshmallow
from marshmallow import validate

from .base import JSONObject, NonEmptyString, RecordSchema, StrictString, Timestamp

#: Message roles accepted by ``save_messages`` and ``update_messages`` (memory.md §3.3;
#: fidelity-1.71.md §1, V3): Mastra 1.71's ``MastraDBMessage`` roles plus v1's ``tool``.
MESSAGE_ROLES = ("system", "user", "assistant", "tool", "signal")


class ThreadSchema(RecordSchema):
    """A conversation thread (memory.md §3.1)."""

    id = NonEmptyString(required=True)
    resource_id = NonEmptyString(required=True, data_key="resourceId")
    title = StrictString()
    metadata = JSONObject(allow_none=True)
    created_at = Timestamp(data_key="createdAt")
    updated_at = Timestamp(data_key="updatedAt")


class ResourceSchema(RecordSchema):
    """A resource (the user owning threads) and its working memory (memory.md §3.2)."""

    id = NonEmptyString(required=True)
    working_memory = StrictString(allow_none=True, data_key="workingMemory")
    metadata = JSONObject(allow_none=True)
    created_at = Timestamp(data_key="createdAt")
    updated_at = Timestamp(data_key="updatedAt")


class MessageContent(JSONObject):
    """Message content in format 2; a plain string becomes a one-text-part message."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, str):
            value = {"format": 2, "parts": [{"type": "text", "text": value}], "content": value}
        content = super()._deserialize(value, attr, data, **kwargs)
        problems = {}
        if content.get("format") != 2 or isinstance(content.get("format"), bool):
            problems["format"] = ["format must be 2"]
        if not isinstance(content.get("parts"), list):
            problems["parts"] = ["parts must be a list"]
        if problems:
            raise marshmallow.ValidationError(problems)
        return content


class MessageSchema(RecordSchema):
    """A message (memory.md §3.3); the wire form omits ``type`` and ``resourceId`` when ``None``."""

    id = NonEmptyString(required=True)
    thread_id = NonEmptyString(required=True, data_key="threadId")
    resource_id = NonEmptyString(required=True, data_key="resourceId")
    role = StrictString(required=True, validate=validate.OneOf(MESSAGE_ROLES))
    type = StrictString(allow_none=True)
    content = MessageContent(required=True)
    created_at = Timestamp(data_key="createdAt")

    @marshmallow.post_dump
    def _omit_empty(self, data: Mapping[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {k: v for k, v in data.items() if not (k in ("type", "resourceId") and v is None)}


class MessageUpdateSchema(RecordSchema):
    """One item of ``update_messages``: ``id`` plus the fields to change."""

    id = NonEmptyString(required=True)
    thread_id = NonEmptyString(data_key="threadId")
    resource_id = NonEmptyString(allow_none=True, data_key="resourceId")
    role = StrictString(validate=validate.OneOf(MESSAGE_ROLES))
    type = StrictString(allow_none=True)
    content = JSONObject()
