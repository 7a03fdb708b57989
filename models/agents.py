"""Agents domain models: ``mastra_agents`` (the mutable agent record),
``mastra_agent_versions`` (immutable configuration snapshots) and ``mastra_favorites`` (which user
favourited which agent or skill; read only here), in Mastra 1.71's layout."""

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


#: Favourites of one entity (fidelity-1.71.md §4.5), as Mastra 1.71 names it.
FAVORITES_BY_ENTITY = Index("idx_favorites_entity", '"entityType", "entityId"')


def build_agents_models(database: peewee.DatabaseProxy) -> SimpleNamespace:
    """Declare the agents models bound to ``database``; returns ``agent``, ``version`` and
    ``favorite``."""
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

    class Favorite(Base):
        # Mastra 1.71 writes these rows (its favourites API); the library only reads them, to pin
        # or keep a user's favourited agents in list_agents (fidelity-1.71.md §4.5).
        user_id = TextField(column_name="userId")
        entity_type = TextField(column_name="entityType")  # "agent" or "skill"
        entity_id = TextField(column_name="entityId")
        created_at = TimestampField(column_name="createdAt")

        class Meta:
            table_name = "mastra_favorites"
            primary_key = peewee.CompositeKey("user_id", "entity_type", "entity_id")
            sqlite_indexes = (FAVORITES_BY_ENTITY,)
            postgres_indexes = (FAVORITES_BY_ENTITY,)

    return SimpleNamespace(agent=Agent, version=Version, favorite=Favorite)
