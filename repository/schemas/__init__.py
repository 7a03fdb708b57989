"""marshmallow schemas, one per record type: ``load`` validates input (wire or snake_case form)
and returns a record dict; ``dump`` gives the wire form (Mastra's camelCase JSON)."""

from .base import JSONObject, JSONValue, NonEmptyString, RecordSchema, Timestamp, flatten_errors
from .agents import AgentSchema, AgentVersionSchema
from .datasets import DatasetItemSchema, DatasetSchema
from .experiments import ExperimentResultSchema, ExperimentSchema
from .memory import MessageSchema, ResourceSchema, ThreadSchema
from .observability import SpanSchema
from .scores import ScoreSchema
from .workflows import WorkflowRunSchema

__all__ = [
    "RecordSchema", "NonEmptyString", "Timestamp", "JSONValue", "JSONObject", "flatten_errors",
    "ThreadSchema", "MessageSchema", "ResourceSchema",
    "ScoreSchema",
    "SpanSchema",
    "WorkflowRunSchema",
    "ExperimentSchema", "ExperimentResultSchema",
    "AgentSchema", "AgentVersionSchema",
    "DatasetSchema", "DatasetItemSchema",
]
