"""Agents domain models: ``mastra_agents`` (the mutable agent record) and
``mastra_agent_versions`` (immutable configuration snapshots), in Mastra 1.71's layout."""

from __future__ import annotations

from types import SimpleNamespace

import peewee

from .base import Index, base_model
from .fields import JSONField, TextField, TimestampField

#: The configuration fields of a version, in the table's column order: (field name, column name).
CONFIG_COLUMNS = (
    ("name", "name"),
    ("description", "description"),
    ("instructions", "instructions"),
    ("model", "model"),
    ("tools", "tools"),
    ("default_options", "defaultOptions"),
    ("workflows", "workflows"),
    ("agents", "agents"),
    ("integration_tools", "integrationTools"),
    ("tool_providers", "toolProviders"),
    ("input_processors", "inputProcessors"),
    ("output_processors", "outputProcessors"),
    ("memory", "memory"),
    ("scorers", "scorers"),
    ("mcp_clients", "mcpClients"),
    ("request_context_schema", "requestContextSchema"),
    ("workspace", "workspace"),
    ("skills", "skills"),
    ("skills_format", "skillsFormat"),
    ("durable", "durable"),
    ("browser", "browser"),
)

#: The library's addition to Mastra's layout (agents.md §6.1); ``init`` goes on without it when
#: stored rows violate it (then ``create_version``'s locked check alone keeps numbers unique).
UNIQUE_VERSION_NUMBER = Index("idx_agent_versions_agent_version", '"agentId", "versionNumber"',
                              unique=True, best_effort=True)


def build_agents_models(database: peewee.DatabaseProxy) -> SimpleNamespace:
    """Declare the agents models bound to ``database``; returns ``agent`` and ``version``."""
    Base = base_model(database)

    class Agent(Base):
        id = TextField(primary_key=True)
        status = TextField()
        active_version_id = TextField(column_name="activeVersionId", null=True)
        author_id = TextField(column_name="authorId", null=True)
        visibility = TextField(null=True)
        metadata = JSONField(null=True)
        favorite_count = peewee.IntegerField(column_name="favoriteCount", null=True)
        created_at = TimestampField(column_name="createdAt")
        updated_at = TimestampField(column_name="updatedAt")

        class Meta:
            table_name = "mastra_agents"

    class Version(Base):
        id = TextField(primary_key=True)
        agent_id = TextField(column_name="agentId")
        version_number = peewee.IntegerField(column_name="versionNumber")
        name = TextField()
        description = TextField(null=True)
        # A string, or a list of instruction blocks stored as its JSON text (agents.md §5).
        instructions = TextField()
        model = JSONField()
        tools = JSONField(null=True)
        default_options = JSONField(column_name="defaultOptions", null=True)
        workflows = JSONField(null=True)
        agents = JSONField(null=True)
        integration_tools = JSONField(column_name="integrationTools", null=True)
        tool_providers = JSONField(column_name="toolProviders", null=True)
        input_processors = JSONField(column_name="inputProcessors", null=True)
        output_processors = JSONField(column_name="outputProcessors", null=True)
        memory = JSONField(null=True)
        scorers = JSONField(null=True)
        mcp_clients = JSONField(column_name="mcpClients", null=True)
        request_context_schema = JSONField(column_name="requestContextSchema", null=True)
        workspace = JSONField(null=True)
        skills = JSONField(null=True)
        skills_format = TextField(column_name="skillsFormat", null=True)
        durable = JSONField(null=True)
        browser = JSONField(null=True)
        changed_fields = JSONField(column_name="changedFields", null=True)
        change_message = TextField(column_name="changeMessage", null=True)
        created_at = TimestampField(column_name="createdAt")

        class Meta:
            table_name = "mastra_agent_versions"
            sqlite_indexes = (UNIQUE_VERSION_NUMBER,)
            postgres_indexes = (UNIQUE_VERSION_NUMBER,)

    return SimpleNamespace(agent=Agent, version=Version)
