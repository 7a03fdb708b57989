"""Schema of the workflows domain: workflow runs (workflows.md §3.1)."""

from __future__ import annotations

from .base import JSONObject, NonEmptyString, RecordSchema, Timestamp


class WorkflowRunSchema(RecordSchema):
    """A workflow run: its key, owner, snapshot document and timestamps.

    ``dump`` gives the wire form (``workflowName``, ``runId``, ``resourceId``, ``snapshot``,
    ``createdAt``, ``updatedAt``); a snapshot stored as text that is not JSON dumps as that text.
    """

    workflow_name = NonEmptyString(required=True, data_key="workflowName")
    run_id = NonEmptyString(required=True, data_key="runId")
    resource_id = NonEmptyString(allow_none=True, data_key="resourceId")
    snapshot = JSONObject(required=True)
    created_at = Timestamp(data_key="createdAt")
    updated_at = Timestamp(data_key="updatedAt")
