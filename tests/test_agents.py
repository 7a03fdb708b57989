"""Agents domain conformance suite (agents.md §8), run on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from composite_store import CompositeStore, ConflictError, NotFoundError, NotSupportedError, ValidationError
from composite_store.agents import CONFIG_KEYS
from composite_store.clickhouse import AgentsClickHouse, ClickHouseStore
from composite_store.jsonb import encode_jsonb
from composite_store.postgres import AgentsPG
from composite_store.schemas import AgentSchema, AgentVersionSchema
from composite_store.sqlite import AgentsSQLite

pytestmark = pytest.mark.backends("sqlite", "postgres")

BACKEND_IDS = {"sqlite": "SQLITE", "postgres": "PG"}
MODEL = {"provider": "openai", "name": "gpt-4o"}
RECORD_KEYS = {"id", "status", "active_version_id", "author_id", "visibility", "metadata", "favorite_count",
               "created_at", "updated_at"}


def sample(**overrides):
    """The spec's sample agent."""
    agent = {"id": "a1", "name": "Helper", "instructions": "Be brief", "model": dict(MODEL)}
    agent.update(overrides)
    return agent


def full_sample(agent_id="full"):
    """An agent with every configuration field set."""
    return {
        "id": agent_id, "name": "Full", "description": "Every field",
        "instructions": [{"type": "text", "content": "Be brief"}, {"type": "prompt_block_ref", "id": "pb-1"},
                         {"type": "prompt_block", "content": "Extra", "rules": {"all": []}}],
        "model": {"provider": "openai", "name": "gpt-4o", "topP": 0.9},
        "tools": {"search": {"description": "web"}},
        "default_options": {"maxSteps": 3},
        "workflows": {"wf": {}},
        "agents": {"helper": {}},
        "integration_tools": {"slack": {"send": {}}},
        "tool_providers": {"composio": {"apps": ["gh"]}},
        "input_processors": ["moderation"],
        "output_processors": [{"id": "pii"}],
        "memory": {"lastMessages": 10},
        "scorers": {"relevance": {"sampling": {"type": "ratio", "rate": 0.5}}},
        "mcp_clients": {"fs": {"tools": {}}},
        "request_context_schema": {"type": "object", "properties": {"tenant": {"type": "string"}}},
        "workspace": [{"value": {"root": "/a"}, "rules": {"tenant": "x"}}, {"value": {"root": "/b"}}],
        "skills": {"sql": {}},
        "skills_format": "xml",
        "durable": {"maxSteps": 5},
        "browser": {"headless": True},
    }


def version_args(agent_id="a1", number=2, **overrides):
    args = {"agent_id": agent_id, "version_number": number, "name": f"Version {number}",
            "instructions": f"Instructions {number}", "model": dict(MODEL)}
    args.update(overrides)
    return args


def error_id(backend, operation, status):
    return f"STORAGE_{BACKEND_IDS[backend]}_{operation}_{status}"


def run_sql(repository, sql, params=()):
    """Run raw SQL (``?`` placeholders) in its own transaction, as another client would."""
    database = repository.backend.database
    with database.connection_context(), database.atomic():
        cursor = database.execute_sql(sql.replace("?", database.param), params)
        return cursor.fetchall() if cursor.description else None


def table_prefix(repository):
    """``"schema".`` for a PostgreSQL store outside ``public`` (created here), else nothing."""
    schema = repository.models.agent._meta.schema
    if not schema:
        return ""
    run_sql(repository, f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    return f'"{schema}".'


@pytest.fixture
def fresh_url(backend, backend_url, tmp_path):
    """A URL of an empty database (SQLite file) or schema (PostgreSQL) of the backend under test."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path}/fresh.db"
    return f"{backend_url}?schema_name=agents_{uuid.uuid4().hex[:10]}"


# --------------------------------------------------------------------------- create and get


def test_create_returns_a_draft_record_with_version_1(agents):
    record = agents.create(agent=sample(author_id="u1", metadata={"k": 1}))
    assert set(record) == RECORD_KEYS
    assert record["status"] == "draft" and record["active_version_id"] is None
    assert record["visibility"] == "private" and record["favorite_count"] == 0
    assert record["metadata"] == {"k": 1} and record["author_id"] == "u1"
    assert record["created_at"] == record["updated_at"]
    assert record["created_at"].tzinfo is not None and record["created_at"].microsecond % 1000 == 0
    assert agents.count_versions(agent_id="a1") == 1
    assert agents.get_by_id(id="a1") == record


def test_version_1_records_the_initial_configuration(agents):
    agents.create(agent=sample(author_id="u1", metadata={"k": 1}))
    latest = agents.get_latest_version(agent_id="a1")
    assert latest["version_number"] == 1 and latest["agent_id"] == "a1"
    assert latest["change_message"] == "Initial version"
    assert latest["changed_fields"] == ["name", "instructions", "model"]
    assert uuid.UUID(latest["id"]).version == 4


def test_changed_fields_of_version_1_are_column_names_in_table_order(agents):
    agents.create(agent=sample(default_options={"x": 1}, description="d", tools={"t": {}}, memory=None))
    assert agents.get_latest_version(agent_id="a1")["changed_fields"] == [
        "name", "description", "instructions", "model", "tools", "defaultOptions"]


def test_visibility_defaults_and_round_trips(agents):
    assert agents.create(agent=sample(id="anon"))["visibility"] is None
    agents.create(agent=sample(id="pub", author_id="u1", visibility="public",
                               metadata={"team": "platform", "tier": 2}))
    stored = agents.get_by_id(id="pub")
    assert stored["visibility"] == "public" and stored["metadata"] == {"team": "platform", "tier": 2}
    resolved = agents.get_by_id_resolved(id="pub")
    assert resolved["visibility"] == "public" and resolved["metadata"] == {"team": "platform", "tier": 2}


def test_create_with_an_existing_id_conflicts_and_changes_nothing(agents, backend):
    first = agents.create(agent=sample())
    version = agents.get_latest_version(agent_id="a1")
    with pytest.raises(ConflictError) as info:
        agents.create(agent=sample(name="Other", metadata={"x": 1}))
    assert info.value.message == "Agent already exists: a1"
    assert info.value.id == error_id(backend, "CREATE_AGENT", "CONFLICT")
    assert info.value.domain == "agents" and info.value.category == "USER"
    assert agents.get_by_id(id="a1") == first
    assert agents.count_versions(agent_id="a1") == 1
    assert agents.get_latest_version(agent_id="a1") == version


def test_get_by_id_of_missing_is_none_and_never_has_configuration(agents):
    assert agents.get_by_id(id="missing") is None
    agents.create(agent=sample())
    record = agents.get_by_id(id="a1")
    assert not {"name", "instructions", "model"} & set(record)


def test_resolved_fresh_agent_uses_version_1(agents):
    agents.create(agent=sample())
    version = agents.get_latest_version(agent_id="a1")
    resolved = agents.get_by_id_resolved(id="a1")
    assert resolved["id"] == "a1" and resolved["name"] == "Helper"
    assert resolved["instructions"] == "Be brief" and resolved["model"] == MODEL
    assert resolved["resolved_version_id"] == version["id"]
    assert set(resolved) == RECORD_KEYS | set(CONFIG_KEYS) | {"resolved_version_id"}
    assert resolved["created_at"] == agents.get_by_id(id="a1")["created_at"]


def test_every_configuration_field_round_trips(agents):
    full = full_sample()
    agents.create(agent=full)
    resolved = agents.get_by_id_resolved(id="full")
    for key in CONFIG_KEYS:
        assert resolved[key] == full[key], key
    agents.create(agent=sample(id="minimal"))
    minimal = agents.get_by_id_resolved(id="minimal")
    assert minimal["description"] is None and minimal["tools"] is None
    assert all(minimal[key] is None for key in CONFIG_KEYS if key not in ("name", "instructions", "model"))


def test_model_keys_are_stored_verbatim(agents):
    agents.create(agent=sample(model={"provider": "openai", "name": "gpt-4o", "topP": 0.9}))
    assert agents.get_by_id_resolved(id="a1")["model"] == {"provider": "openai", "name": "gpt-4o", "topP": 0.9}


def test_returned_records_are_fresh_objects(agents):
    metadata = {"k": [1]}
    record = agents.create(agent=sample(metadata=metadata))
    metadata["k"].append(2)
    record["metadata"]["k"].append(3)
    resolved = agents.get_by_id_resolved(id="a1")
    resolved["model"]["name"] = "changed"
    assert agents.get_by_id(id="a1")["metadata"] == {"k": [1]}
    assert agents.get_by_id_resolved(id="a1")["model"] == MODEL


# --------------------------------------------------------------------------- update


def test_update_merges_metadata_shallowly(agents):
    agents.create(agent=sample(metadata={"key1": "a", "key2": "b"}))
    updated = agents.update(id="a1", metadata={"key2": "updated", "key3": "c"})
    assert updated["metadata"] == {"key1": "a", "key2": "updated", "key3": "c"}
    assert agents.get_by_id(id="a1") == updated
    assert agents.count_versions(agent_id="a1") == 1


def test_update_metadata_none_clears_and_merging_into_none_starts_empty(agents):
    agents.create(agent=sample(metadata={"a": 1}))
    assert agents.update(id="a1", metadata=None)["metadata"] is None
    assert agents.update(id="a1", metadata={"b": 2})["metadata"] == {"b": 2}


def test_update_ignores_configuration(agents):
    agents.create(agent=sample())
    updated = agents.update(id="a1", name="X", instructions="Y")
    assert updated["status"] == "draft"
    assert agents.count_versions(agent_id="a1") == 1
    assert agents.get_by_id_resolved(id="a1")["name"] == "Helper"


def test_mixed_update_merges_metadata_and_ignores_configuration(agents):
    agents.create(agent=sample(metadata={"a": 0}))
    updated = agents.update(id="a1", metadata={"m": 1}, name="X", model={"provider": "x", "name": "y"},
                            memory=None, browser=None)
    assert updated["metadata"] == {"a": 0, "m": 1}
    resolved = agents.get_by_id_resolved(id="a1")
    assert resolved["name"] == "Helper" and resolved["model"] == MODEL
    assert agents.count_versions(agent_id="a1") == 1


def test_setting_the_active_version_keeps_the_status(agents):
    agents.create(agent=sample())
    v2 = agents.create_version(**version_args())
    updated = agents.update(id="a1", active_version_id=v2["id"])
    assert updated["active_version_id"] == v2["id"] and updated["status"] == "draft"
    published = agents.update(id="a1", status="published")
    assert published["status"] == "published" and published["active_version_id"] == v2["id"]


def test_update_sets_and_clears_record_fields(agents):
    agents.create(agent=sample())
    v1 = agents.get_latest_version(agent_id="a1")
    updated = agents.update(id="a1", author_id="u2", visibility="public", active_version_id=v1["id"],
                            status="archived")
    assert (updated["author_id"], updated["visibility"], updated["active_version_id"], updated["status"]) == \
        ("u2", "public", v1["id"], "archived")
    cleared = agents.update(id="a1", author_id=None, visibility=None, active_version_id=None)
    assert (cleared["author_id"], cleared["visibility"], cleared["active_version_id"]) == (None, None, None)
    assert agents.get_by_id(id="a1") == cleared


def test_request_context_schema_is_configuration(agents):
    schema = {"type": "object", "properties": {"tenant": {"type": "string"}}}
    agents.create(agent=sample(request_context_schema=schema))
    assert agents.get_by_id_resolved(id="a1")["request_context_schema"] == schema
    other = {"type": "object"}
    v2 = agents.create_version(**version_args(request_context_schema=other))
    assert agents.get_version(version_id=v2["id"])["request_context_schema"] == other
    agents.update(id="a1", request_context_schema={"type": "string"})
    assert agents.count_versions(agent_id="a1") == 2
    assert agents.get_version(version_id=v2["id"])["request_context_schema"] == other


def test_updated_at_strictly_increases(agents):
    created = agents.create(agent=sample())
    first = agents.update(id="a1", metadata={"n": 1})
    second = agents.update(id="a1", metadata={"n": 2})
    assert created["updated_at"] < first["updated_at"] < second["updated_at"]
    assert second["created_at"] == created["created_at"]


def test_updated_at_moves_past_a_stored_value_in_the_future(agents):
    agents.create(agent=sample())
    future = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=1)
    stored = future.replace(tzinfo=None) if agents.backend.name == "PG" else future.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    run_sql(agents, 'UPDATE mastra_agents SET "updatedAt" = ? WHERE id = ?', (stored, "a1"))
    if agents.backend.name == "PG":
        run_sql(agents, 'UPDATE mastra_agents SET "updatedAtZ" = ? WHERE id = ?', (future, "a1"))
    assert agents.update(id="a1", metadata={"n": 1})["updated_at"] == future + timedelta(milliseconds=1)


# --------------------------------------------------------------------------- delete


def test_delete_removes_the_agent_and_its_versions(agents):
    agents.create(agent=sample())
    agents.create(agent=sample(id="other"))
    for number in (2, 3):
        agents.create_version(**version_args(number=number))
    assert agents.delete(id="a1") is None
    assert agents.get_by_id(id="a1") is None and agents.count_versions(agent_id="a1") == 0
    assert agents.delete(id="a1") is None
    assert agents.delete(id="never-existed") is None
    assert agents.count_versions(agent_id="other") == 1


# --------------------------------------------------------------------------- list


def test_list_of_an_empty_store(agents):
    page = agents.list()
    assert (page.items, page.total, page.has_more, page.page, page.per_page) == ([], 0, False, 0, 100)


def test_list_pages(agents):
    for index in range(15):
        agents.create(agent=sample(id=f"d{index:02d}"))
    seen = []
    for page_number, has_more in ((0, True), (1, True), (2, False)):
        page = agents.list(status="draft", per_page=5, page=page_number)
        assert len(page.items) == 5 and page.has_more is has_more and page.total == 15
        seen += [item["id"] for item in page.items]
    assert sorted(seen) == [f"d{index:02d}" for index in range(15)]
    everything = agents.list(status="draft", per_page=False)
    assert len(everything.items) == 15 and everything.per_page is False and everything.has_more is False
    assert agents.list(status="published").total == 0


def test_list_resolved_orders_by_created_at(agents):
    for index, name in enumerate(("First", "Second", "Third")):
        agents.create(agent=sample(id=f"o{index}", name=name))
        time.sleep(0.003)
    page = agents.list_resolved(status="draft")
    assert [item["name"] for item in page.items] == ["Third", "Second", "First"]
    ascending = agents.list_resolved(status="draft", order_by={"field": "created_at", "direction": "ASC"})
    assert [item["name"] for item in ascending.items] == ["First", "Second", "Third"]
    by_update = agents.list(order_by={"field": "updated_at", "direction": "asc"})
    assert [item["id"] for item in by_update.items] == ["o0", "o1", "o2"]


def test_list_ties_are_broken_by_id(agents):
    for agent_id in ("c", "a", "b"):
        agents.create(agent=sample(id=agent_id))
    stamp = "2024-01-01T00:00:00.000Z" if agents.backend.name == "SQLITE" else datetime(2024, 1, 1)
    run_sql(agents, 'UPDATE mastra_agents SET "createdAt" = ?', (stamp,))
    assert [item["id"] for item in agents.list().items] == ["a", "b", "c"]


def test_list_filters(agents):
    agents.create(agent=sample(id="a1", author_id="u1", visibility="public", metadata={"team": "platform", "tier": 2}))
    agents.create(agent=sample(id="a2", author_id="u2", metadata={"team": "research", "tier": 2}))
    agents.create(agent=sample(id="a3"))
    assert [a["id"] for a in agents.list(author_id="u1").items] == ["a1"]
    assert [a["id"] for a in agents.list(visibility="public").items] == ["a1"]
    assert {a["id"] for a in agents.list(visibility="private").items} == {"a2"}
    assert [a["id"] for a in agents.list(metadata={"team": "platform"}).items] == ["a1"]
    assert {a["id"] for a in agents.list(metadata={"tier": 2}).items} == {"a1", "a2"}
    assert agents.list(metadata={"tier": "2"}).total == 0
    assert agents.list(metadata={"tier": 2.0}).total == 2
    assert agents.list(metadata={"missing": None}).total == 0
    empty = agents.list(entity_ids=[])
    assert empty.items == [] and empty.total == 0
    assert [a["id"] for a in agents.list(entity_ids=["a1", "zz"]).items] == ["a1"]
    assert [a["id"] for a in agents.list(entity_ids=["a1", "a2"], author_id="u2").items] == ["a2"]
    assert [a["id"] for a in agents.list_resolved(metadata={"team": "platform"}).items] == ["a1"]


def test_list_resolved_uses_the_active_version_unless_draft(agents):
    agents.create(agent=sample(id="a1"))
    agents.create(agent=sample(id="a2", name="Two"))
    v2 = agents.create_version(**version_args(number=2, name="Active"))
    agents.create_version(**version_args(number=3, name="Latest"))
    agents.update(id="a1", active_version_id=v2["id"], status="published")
    published = {a["id"]: a["name"] for a in agents.list_resolved().items}
    assert published == {"a1": "Active", "a2": "Two"}
    drafts = agents.list_resolved(status="draft")
    assert [a["name"] for a in drafts.items] == ["Two"]
    assert agents.list_resolved(status="published").items[0]["name"] == "Active"
    paged = agents.list_resolved(per_page=1, page=1)
    assert paged.total == 2 and paged.has_more is False and len(paged.items) == 1


# --------------------------------------------------------------------------- resolution


def test_resolution_without_active_version_uses_the_latest(agents):
    agents.create(agent=sample())
    agents.create_version(**version_args(number=2))
    v3 = agents.create_version(**version_args(number=3, name="Latest Version Name",
                                              model={"provider": "openai", "name": "gpt-4"}))
    resolved = agents.get_by_id_resolved(id="a1")
    assert resolved["name"] == "Latest Version Name" and resolved["model"]["name"] == "gpt-4"
    assert resolved["resolved_version_id"] == v3["id"]


def test_resolution_selectors(agents):
    agents.create(agent=sample())
    v1 = agents.get_latest_version(agent_id="a1")
    v2 = agents.create_version(**version_args(number=2))
    v3 = agents.create_version(**version_args(number=3))
    agents.update(id="a1", active_version_id=v2["id"])
    assert agents.get_by_id_resolved(id="a1")["resolved_version_id"] == v2["id"]
    assert agents.get_by_id_resolved(id="a1", status="published")["resolved_version_id"] == v2["id"]
    assert agents.get_by_id_resolved(id="a1", status="archived")["resolved_version_id"] == v2["id"]
    assert agents.get_by_id_resolved(id="a1", status="draft")["resolved_version_id"] == v3["id"]
    by_id = agents.get_by_id_resolved(id="a1", version_id=v1["id"])
    assert by_id["resolved_version_id"] == v1["id"] and by_id["name"] == "Helper"
    assert by_id["id"] == "a1" and "agent_id" not in by_id and "version_number" not in by_id


def test_deleted_active_version_falls_back_to_the_latest_with_a_warning(agents, caplog):
    agents.create(agent=sample())
    v2 = agents.create_version(**version_args(number=2))
    v3 = agents.create_version(**version_args(number=3))
    agents.update(id="a1", active_version_id=v2["id"])
    agents.delete_version(version_id=v2["id"])
    with caplog.at_level(logging.WARNING, logger="composite_store.agents"):
        resolved = agents.get_by_id_resolved(id="a1")
    assert resolved["resolved_version_id"] == v3["id"]
    assert resolved["active_version_id"] == v2["id"]
    assert any(v2["id"] in record.getMessage() for record in caplog.records)
    assert agents.delete_version(version_id="missing") is None
    assert agents.count_versions(agent_id="a1") == 2


def test_agent_without_versions_resolves_to_empty_configuration(agents):
    agents.create(agent=sample(metadata={"k": 1}))
    agents.create_version(**version_args(number=2))
    assert agents.delete_versions_by_parent_id(agent_id="a1") is None
    assert agents.count_versions(agent_id="a1") == 0
    assert agents.get_by_id(id="a1")["metadata"] == {"k": 1}
    resolved = agents.get_by_id_resolved(id="a1")
    assert all(resolved[key] is None for key in CONFIG_KEYS)
    assert resolved["resolved_version_id"] is None and resolved["id"] == "a1"
    assert agents.list_resolved().items[0]["resolved_version_id"] is None
    assert agents.delete_versions_by_parent_id(agent_id="unknown") is None


def test_resolution_errors(agents, backend):
    agents.create(agent=sample())
    agents.create(agent=sample(id="b1"))
    other = agents.get_latest_version(agent_id="b1")
    with pytest.raises(ValidationError) as info:
        agents.get_by_id_resolved(id="a1", version_id=other["id"])
    assert info.value.message == f"Agent version {other['id']} does not belong to agent a1"
    assert info.value.id == error_id(backend, "GET_AGENT_BY_ID_RESOLVED", "INVALID_INPUT")
    with pytest.raises(NotFoundError) as missing:
        agents.get_by_id_resolved(id="a1", version_id="nope")
    assert missing.value.message == "Agent version not found: nope"
    assert missing.value.id == error_id(backend, "GET_AGENT_BY_ID_RESOLVED", "NOT_FOUND")
    with pytest.raises(ValidationError) as both:
        agents.get_by_id_resolved(id="a1", status="draft", version_id=other["id"])
    assert "version_id" in both.value.fields
    assert agents.get_by_id_resolved(id="missing") is None
    assert agents.get_by_id_resolved(id="missing", version_id=other["id"]) is None


# --------------------------------------------------------------------------- versions


def test_list_versions(agents):
    agents.create(agent=sample())
    for number in (2, 3):
        time.sleep(0.002)  # distinct created_at values, so the created_at order is 1, 2, 3
        agents.create_version(**version_args(number=number))
    page = agents.list_versions(agent_id="a1")
    assert [v["version_number"] for v in page.items] == [3, 2, 1]
    assert (page.per_page, page.total, page.has_more) == (20, 3, False)
    ascending = agents.list_versions(agent_id="a1", order_by={"field": "created_at", "direction": "ASC"})
    assert [v["version_number"] for v in ascending.items] == [1, 2, 3]
    second = agents.list_versions(agent_id="a1", per_page=2, page=1)
    assert [v["version_number"] for v in second.items] == [1] and second.total == 3
    unknown = agents.list_versions(agent_id="unknown")
    assert unknown.items == [] and unknown.total == 0
    with pytest.raises(ValidationError) as info:
        agents.list_versions(agent_id="a1", order_by={"field": "name"})
    assert info.value.fields == {"order_by.field": ["order_by.field must be one of version_number, created_at"]}


def test_version_reads(agents):
    agents.create(agent=sample())
    v2 = agents.create_version(**version_args(number=2, change_message="Tuned", changed_fields=["instructions"]))
    assert agents.get_version_by_number(agent_id="a1", version_number=2) == v2
    assert agents.get_version(version_id=v2["id"]) == v2
    assert v2["change_message"] == "Tuned" and v2["changed_fields"] == ["instructions"]
    assert v2["created_at"].tzinfo is not None
    assert agents.get_version_by_number(agent_id="a1", version_number=9) is None
    assert agents.get_latest_version(agent_id="a1") == v2
    assert agents.get_latest_version(agent_id="unknown") is None
    assert agents.count_versions(agent_id="unknown") == 0
    assert agents.get_version(version_id="missing") is None


def test_create_version_does_not_touch_the_agent(agents):
    record = agents.create(agent=sample())
    agents.create_version(**version_args(number=5))
    assert agents.get_by_id(id="a1") == record
    assert agents.get_latest_version(agent_id="a1")["version_number"] == 5


def test_create_version_with_an_explicit_id_and_full_configuration(agents):
    agents.create(agent=sample())
    full = full_sample()
    config = {key: full[key] for key in CONFIG_KEYS if key not in ("name", "instructions", "model")}
    version = agents.create_version(id="v-explicit", agent_id="a1", version_number=2, name="Full",
                                    instructions=full["instructions"], model=full["model"], **config)
    assert version["id"] == "v-explicit"
    stored = agents.get_version(version_id="v-explicit")
    assert stored == version
    for key in CONFIG_KEYS:
        assert stored[key] == full[key], key


def test_create_version_conflicts(agents, backend):
    agents.create(agent=sample())
    agents.create(agent=sample(id="b1"))
    other = agents.get_latest_version(agent_id="b1")
    with pytest.raises(ConflictError) as number:
        agents.create_version(**version_args(number=1))
    assert number.value.message == "Version number 1 already exists for agent a1"
    assert number.value.id == error_id(backend, "CREATE_VERSION", "CONFLICT")
    with pytest.raises(ConflictError) as used:
        agents.create_version(**version_args(number=2, id=other["id"]))
    assert used.value.message == f"Agent version already exists: {other['id']}"
    assert agents.get_version(version_id=other["id"]) == other
    assert agents.count_versions(agent_id="a1") == 1
    with pytest.raises(NotFoundError) as missing:
        agents.create_version(**version_args(agent_id="missing"))
    assert missing.value.message == "Agent not found: missing"
    assert missing.value.id == error_id(backend, "CREATE_VERSION", "NOT_FOUND")


# --------------------------------------------------------------------------- stored formats


def test_instructions_round_trip(agents):
    blocks = [{"type": "text", "content": "hi"}]
    agents.create(agent=sample(id="blocks", instructions=blocks))
    agents.create(agent=sample(id="broken", instructions="[not json"))
    agents.create(agent=sample(id="plain", instructions="plain"))
    agents.create(agent=sample(id="numbers", instructions="[1, 2]"))
    assert agents.get_by_id_resolved(id="blocks")["instructions"] == blocks
    assert agents.get_by_id_resolved(id="broken")["instructions"] == "[not json"
    assert agents.get_by_id_resolved(id="plain")["instructions"] == "plain"
    assert agents.get_by_id_resolved(id="numbers")["instructions"] == "[1, 2]"
    stored = run_sql(agents, 'SELECT instructions FROM mastra_agent_versions WHERE "agentId" = ?', ("blocks",))
    assert stored == [('[{"type":"text","content":"hi"}]',)]


def test_unusual_values_round_trip(agents):
    model = {"provider": "openai", "name": "gpt-4o",
             "options": {"deep": {"deeper": {"deepest": [1, 2.5, True, None, {"x": "y"}]}}}}
    instructions = "Sois bref 🙂 — 简洁回答 ✅"
    metadata = {"items": list(range(50)), "nested": {"a": [{"b": "c"}]}}
    tools = {"search": {"description": "web"}}
    agents.create(agent=sample(model=model, instructions=instructions, metadata=metadata, tools=tools))
    resolved = agents.get_by_id_resolved(id="a1")
    assert resolved["model"] == model and resolved["instructions"] == instructions
    assert resolved["metadata"] == metadata and resolved["tools"] == tools


def test_tools_stored_as_a_list_of_names_read_as_a_dict(agents):
    agents.create(agent=sample())
    run_sql(agents, 'UPDATE mastra_agent_versions SET tools = ? WHERE "agentId" = ?', ('["search", "calc"]', "a1"))
    assert agents.get_by_id_resolved(id="a1")["tools"] == {"search": {}, "calc": {}}
    assert run_sql(agents, 'SELECT tools FROM mastra_agent_versions WHERE "agentId" = ?', ("a1",))[0][0] in (
        '["search", "calc"]', ["search", "calc"])


def test_rows_written_by_other_clients_are_read(agents):
    if agents.backend.name == "SQLITE":
        run_sql(agents, 'INSERT INTO mastra_agents (id, status, "activeVersionId", "authorId", visibility, metadata, '
                        '"favoriteCount", "createdAt", "updatedAt") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
                ("ext", "published", "ext-v1", "u9", "public", encode_jsonb({"team": "platform"}), None,
                 "2024-05-01T10:00:00.123Z", "2024-05-01 10:00:01.5"))
        run_sql(agents, 'INSERT INTO mastra_agent_versions (id, "agentId", "versionNumber", name, instructions, model, '
                        'tools, "changedFields", "createdAt") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
                ("ext-v1", "ext", 1, "External", "Hello", encode_jsonb({"provider": "openai", "name": "gpt-4o"}),
                 encode_jsonb({"search": {}}), '["name"]', "2024-05-01T10:00:00.123Z"))
    else:
        run_sql(agents, 'INSERT INTO mastra_agents (id, status, "activeVersionId", "authorId", visibility, metadata, '
                        '"favoriteCount", "createdAt", "createdAtZ", "updatedAt", "updatedAtZ") VALUES '
                        "(?, ?, ?, ?, ?, ?::jsonb, ?, ?, ?, ?, ?)",
                ("ext", "published", "ext-v1", "u9", "public", '{"team": "platform"}', None,
                 datetime(2024, 5, 1, 10, 0, 0, 123456), datetime(2024, 5, 1, 10, 0, 0, 123456, timezone.utc),
                 datetime(2024, 5, 1, 10, 0, 1, 500000), datetime(2024, 5, 1, 10, 0, 1, 500000, timezone.utc)))
        run_sql(agents, 'INSERT INTO mastra_agent_versions (id, "agentId", "versionNumber", name, instructions, model, '
                        'tools, "changedFields", "createdAt", "createdAtZ") VALUES '
                        "(?, ?, ?, ?, ?, ?::jsonb, ?::jsonb, ?::jsonb, ?, ?)",
                ("ext-v1", "ext", 1, "External", "Hello", '{"provider": "openai", "name": "gpt-4o"}',
                 '{"search": {}}', '["name"]', datetime(2024, 5, 1, 10, 0, 0, 123000),
                 datetime(2024, 5, 1, 10, 0, 0, 123000, timezone.utc)))
    resolved = agents.get_by_id_resolved(id="ext")
    assert resolved["status"] == "published" and resolved["metadata"] == {"team": "platform"}
    assert resolved["favorite_count"] == 0 and resolved["visibility"] == "public"
    assert resolved["created_at"] == datetime(2024, 5, 1, 10, 0, 0, 123000, timezone.utc)
    assert resolved["updated_at"] == datetime(2024, 5, 1, 10, 0, 1, 500000, timezone.utc)
    assert resolved["name"] == "External" and resolved["model"] == MODEL and resolved["tools"] == {"search": {}}
    assert resolved["resolved_version_id"] == "ext-v1"
    assert agents.get_version(version_id="ext-v1")["changed_fields"] == ["name"]
    assert [a["id"] for a in agents.list(metadata={"team": "platform"}).items] == ["ext"]
    assert agents.update(id="ext", metadata={"more": 1})["metadata"] == {"team": "platform", "more": 1}


# --------------------------------------------------------------------------- concurrency


def test_concurrent_metadata_updates_lose_nothing(agents):
    agents.create(agent=sample())
    errors = []

    def work(thread):
        try:
            for step in range(10):
                agents.update(id="a1", metadata={f"t{thread}-{step}": step})
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    metadata = agents.get_by_id(id="a1")["metadata"]
    assert metadata == {f"t{i}-{j}": j for i in range(8) for j in range(10)}


def test_concurrent_create_version_with_the_same_number(agents):
    agents.create(agent=sample())
    rounds, barrier = 20, threading.Barrier(2)
    outcomes = [[] for _ in range(rounds)]

    def work():
        for round_number in range(rounds):
            barrier.wait()
            try:
                agents.create_version(**version_args(number=round_number + 2))
                outcomes[round_number].append("ok")
            except ConflictError:
                outcomes[round_number].append("conflict")
            except Exception as exc:  # noqa: BLE001 - reported below
                outcomes[round_number].append(repr(exc))

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(sorted(outcome) == ["conflict", "ok"] for outcome in outcomes), outcomes
    numbers = [v["version_number"] for v in agents.list_versions(agent_id="a1", per_page=False).items]
    assert sorted(numbers) == list(range(1, rounds + 2))


def test_eight_threads_creating_versions_get_unique_numbers(agents):
    agents.create(agent=sample())
    per_thread, errors, created = 5, [], []

    def work():
        try:
            made = 0
            while made < per_thread:
                latest = agents.get_latest_version(agent_id="a1")
                try:
                    version = agents.create_version(**version_args(number=latest["version_number"] + 1))
                except ConflictError:
                    continue
                created.append(version["version_number"])
                made += 1
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(created) == list(range(2, 8 * per_thread + 2))
    numbers = [v["version_number"] for v in agents.list_versions(agent_id="a1", per_page=False).items]
    assert sorted(numbers) == list(range(1, 8 * per_thread + 2))


def test_concurrent_creates_of_one_id_conflict(agents):
    barrier, outcomes = threading.Barrier(4), []

    def work():
        barrier.wait()
        try:
            agents.create(agent=sample())
            outcomes.append("ok")
        except ConflictError:
            outcomes.append("conflict")
        except Exception as exc:  # noqa: BLE001 - reported below
            outcomes.append(repr(exc))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["conflict"] * 3 + ["ok"]
    assert agents.count_versions(agent_id="a1") == 1


# --------------------------------------------------------------------------- bad input


def test_create_validation_names_each_bad_field(agents, backend):
    with pytest.raises(ValidationError) as info:
        agents.create(agent={"id": "a1", "instructions": "x", "model": MODEL})
    assert info.value.fields == {"name": ["Missing data for required field."]}
    assert info.value.id == error_id(backend, "CREATE_AGENT", "INVALID_INPUT")
    assert agents.get_by_id(id="a1") is None
    with pytest.raises(ValidationError) as many:
        agents.create(agent=sample(model="gpt-4o", metadata={"s": {1, 2}}, instructions=[{"type": "nope"}],
                                   status="published", colour="red"))
    assert set(many.value.fields) == {"model", "metadata.s", "instructions[0].type", "status", "colour"}
    assert many.value.fields["metadata.s"] == ["Not JSON-serializable."]
    assert many.value.fields["colour"] == ["Unknown field."]
    assert agents.get_by_id(id="a1") is None


def test_create_validates_configuration_shapes(agents):
    bad = sample(model={"provider": "openai"}, tools={"search": "yes"}, memory=[], workflows=[{"rules": {}}],
                 skills_format="yaml", durable="always", visibility="team", request_context_schema=[1],
                 instructions=[{"type": "text"}, {"type": "prompt_block_ref", "id": 5}, "block"], name="")
    with pytest.raises(ValidationError) as info:
        agents.create(agent=bad)
    assert set(info.value.fields) == {
        "model.name", "tools.search", "memory", "workflows[0].value", "skills_format", "durable", "visibility",
        "request_context_schema", "instructions[0].content", "instructions[1].id", "instructions[2]", "name"}
    assert agents.get_by_id(id="a1") is None


def test_variant_lists_are_accepted_and_stored_verbatim(agents):
    variants = [{"value": {"provider": "openai", "name": "gpt-4o"}, "rules": {"tier": "pro"}},
                {"value": {"provider": "openai", "name": "gpt-4o-mini"}}]
    agents.create(agent=sample(model=variants, tools=[{"value": {"search": {}}}]))
    resolved = agents.get_by_id_resolved(id="a1")
    assert resolved["model"] == variants and resolved["tools"] == [{"value": {"search": {}}}]


def test_unstorable_characters_are_rejected(agents):
    with pytest.raises(ValidationError) as info:
        agents.create(agent=sample(name="bad\ud800", metadata={"note": "nul\x00", "ok": 1},
                                   instructions=[{"type": "text", "content": "\x00"}]))
    assert set(info.value.fields) == {"name", "metadata.note", "instructions[0].content"}
    assert agents.get_by_id(id="a1") is None
    agents.create(agent=sample())
    with pytest.raises(ValidationError) as update:
        agents.update(id="a1", metadata={"k": "\ud800"}, author_id="\x00")
    assert set(update.value.fields) == {"metadata.k", "author_id"}
    with pytest.raises(ValidationError) as version:
        agents.create_version(**version_args(change_message="\x00", tools={"t\ud800": {}}))
    assert set(version.value.fields) == {"change_message", "tools.t\ud800"}
    with pytest.raises(ValidationError) as read:
        agents.get_by_id(id="a\x00")
    assert set(read.value.fields) == {"id"}
    assert agents.count_versions(agent_id="a1") == 1 and agents.get_by_id(id="a1")["metadata"] is None


def test_update_validation(agents, backend):
    agents.create(agent=sample(metadata={"k": 1}))
    agents.create(agent=sample(id="b1"))
    before = agents.get_by_id(id="a1")
    with pytest.raises(ValidationError) as status:
        agents.update(id="a1", status="live", metadata={"k": 2})
    assert set(status.value.fields) == {"status"}
    with pytest.raises(ValidationError) as null_status:
        agents.update(id="a1", status=None)
    assert null_status.value.fields == {"status": ["Field may not be null."]}
    other = agents.get_latest_version(agent_id="b1")
    with pytest.raises(ValidationError) as foreign:
        agents.update(id="a1", active_version_id=other["id"], metadata={"k": 3})
    assert set(foreign.value.fields) == {"active_version_id"}
    with pytest.raises(ValidationError) as unknown_version:
        agents.update(id="a1", active_version_id="nope")
    assert set(unknown_version.value.fields) == {"active_version_id"}
    with pytest.raises(ValidationError) as colour:
        agents.update(id="a1", colour="red", model={"bad": {1}})
    assert colour.value.fields == {"colour": ["Unknown field."], "model.bad": ["Not JSON-serializable."]}
    assert colour.value.id == error_id(backend, "UPDATE_AGENT", "INVALID_INPUT")
    assert agents.get_by_id(id="a1") == before
    with pytest.raises(NotFoundError) as missing:
        agents.update(id="missing", metadata={"k": 1})
    assert missing.value.message == "Agent not found: missing"
    assert missing.value.id == error_id(backend, "UPDATE_AGENT", "NOT_FOUND")


def test_list_validation(agents, backend):
    def fields_of(**arguments):
        with pytest.raises(ValidationError) as info:
            agents.list(**arguments)
        return info.value

    assert fields_of(per_page=-1).fields == {"per_page": ["per_page must be >= 0"]}
    assert fields_of(page=1, per_page=False).fields == {"page": ["page must be 0 when per_page is False"]}
    value = fields_of(metadata={"x": {"a": 1}})
    assert value.id == error_id(backend, "LIST_AGENTS", "INVALID_METADATA_VALUE")
    assert set(value.fields) == {"metadata"} and '"x"' in value.fields["metadata"][0]
    assert fields_of(metadata={"a-b": 1}).id == error_id(backend, "LIST_AGENTS", "INVALID_METADATA_KEY")
    order = fields_of(order_by={"field": "name"})
    assert order.fields == {"order_by.field": ["order_by.field must be one of created_at, updated_at"]}
    assert set(fields_of(status="live", visibility="team", entity_ids="a1").fields) == {
        "status", "visibility", "entity_ids"}
    with pytest.raises(ValidationError) as resolved:
        agents.list_resolved(per_page=True)
    assert resolved.value.id == error_id(backend, "LIST_AGENTS_RESOLVED", "INVALID_PAGE")


def test_version_argument_validation(agents):
    agents.create(agent=sample())
    with pytest.raises(ValidationError) as info:
        agents.create_version(agent_id="a1", version_number=0, name="n", instructions="i", model=MODEL,
                              created_at="2024-01-01", colour="red", changed_fields="name")
    assert set(info.value.fields) == {"version_number", "created_at", "colour", "changed_fields"}
    with pytest.raises(ValidationError):
        agents.create_version(**version_args(number=True))
    with pytest.raises(ValidationError):
        agents.get_version_by_number(agent_id="a1", version_number="2")
    with pytest.raises(TypeError):
        agents.create_version(agent_id="a1", version_number=2, name="n", instructions="i")
    assert agents.count_versions(agent_id="a1") == 1


# --------------------------------------------------------------------------- housekeeping


def test_dangerously_clear_all(agents):
    agents.create(agent=sample())
    version = agents.get_latest_version(agent_id="a1")
    agents.dangerously_clear_all()
    assert agents.list().total == 0
    assert agents.get_version(version_id=version["id"]) is None


def test_supports_concurrent_updates(agents):
    assert agents.supports_concurrent_updates() is True


def test_long_names_are_the_same_methods(agents, backend):
    cls = type(agents)
    for short, long in (("create", "create_agent"), ("get_by_id", "get_agent_by_id"), ("update", "update_agent"),
                        ("delete", "delete_agent"), ("list", "list_agents"),
                        ("get_by_id_resolved", "get_agent_by_id_resolved"), ("list_resolved", "list_agents_resolved")):
        assert getattr(cls, short) is getattr(cls, long)
    agents.create_agent(agent=sample())
    assert agents.get_agent_by_id(id="a1")["id"] == "a1"
    assert agents.list_agents().total == 1 and agents.list_agents_resolved().items[0]["name"] == "Helper"
    assert agents.update_agent(id="a1", status="published")["status"] == "published"
    assert agents.get_agent_by_id_resolved(id="a1")["name"] == "Helper"
    agents.delete_agent(id="a1")
    assert agents.get_by_id(id="a1") is None


def test_store_classes_and_schemas(agents, backend):
    assert isinstance(agents, {"sqlite": AgentsSQLite, "postgres": AgentsPG}[backend])
    assert agents.domain == "agents"
    agents.create(agent=full_sample("wire"))
    record = agents.get_by_id(id="wire")
    wire = AgentSchema().dump(record)
    assert wire["activeVersionId"] is None and wire["favoriteCount"] == 0
    assert wire["createdAt"].endswith("Z") and "name" not in wire
    resolved = AgentSchema().dump(agents.get_by_id_resolved(id="wire"))
    assert resolved["defaultOptions"] == {"maxSteps": 3} and resolved["resolvedVersionId"]
    version = agents.get_latest_version(agent_id="wire")
    version_wire = AgentVersionSchema().dump(version)
    assert version_wire["agentId"] == "wire" and version_wire["versionNumber"] == 1
    assert version_wire["changedFields"][:4] == ["name", "description", "instructions", "model"]
    loaded = AgentVersionSchema().load(version_wire)
    assert loaded == version
    assert AgentSchema().load(AgentSchema().dump(record)) == record


def test_create_accepts_the_wire_form(agents):
    agents.create(agent={"id": "w", "name": "W", "instructions": "i", "model": MODEL, "authorId": "u1",
                         "defaultOptions": {"x": 1}})
    resolved = agents.get_by_id_resolved(id="w")
    assert resolved["author_id"] == "u1" and resolved["default_options"] == {"x": 1}


# --------------------------------------------------------------------------- Mastra 1.71: get_versions, favourites


def test_get_versions_of_any_agent_in_first_occurrence_order(agents):
    """fidelity-1.71.md §4.4 (A1), the acceptance example."""
    agents.create(agent=sample(id="a1"))
    agents.create(agent=sample(id="a2"))
    v1 = agents.get_latest_version(agent_id="a1")
    v2 = agents.create_version(**version_args(agent_id="a2", number=2))
    found = agents.get_versions(version_ids=["v-unknown", v2["id"], "x", v1["id"], v2["id"]])
    assert found == [agents.get_version(version_id=v2["id"]), v1]
    assert agents.get_versions(version_ids=(v1["id"],)) == [v1]
    assert agents.get_versions(version_ids=[]) == []
    assert agents.get_versions(version_ids=["x"]) == []


@pytest.mark.parametrize("version_ids,fields", [
    ("v1", {"version_ids": ["version_ids must be a list of non-empty strings"]}),
    (None, {"version_ids": ["version_ids must be a list of non-empty strings"]}),
    (["v1", "", 3], {"version_ids[1]": ["version_ids[1] must be a non-empty string"],
                     "version_ids[2]": ["version_ids[2] must be a non-empty string"]}),
])
def test_get_versions_rejects_bad_ids(agents, backend, version_ids, fields):
    with pytest.raises(ValidationError) as info:
        agents.get_versions(version_ids=version_ids)
    assert info.value.fields == fields
    assert info.value.id == error_id(backend, "GET_VERSIONS", "INVALID_INPUT")


def favourite(agents, user_id, entity_id, entity_type="agent"):
    """A row of ``mastra_favorites`` as Mastra writes it (the library never writes one)."""
    run_sql(agents, f'INSERT INTO {table_prefix(agents)}mastra_favorites ("userId", "entityType", "entityId", '
                    '"createdAt") VALUES (?, ?, ?, ?)', (user_id, entity_type, entity_id, "2026-01-01T00:00:00.000Z"))


@pytest.fixture
def favourited(agents):
    """Agents a1..a4 created in that order; u1 favourited a1 and a3 (and a skill named a2), u2 a2."""
    for number in range(1, 5):
        agents.create(agent=sample(id=f"a{number}"))
        time.sleep(0.002)
    favourite(agents, "u1", "a1")
    favourite(agents, "u1", "a3")
    favourite(agents, "u1", "a2", entity_type="skill")
    favourite(agents, "u2", "a2")
    return agents


def ids_of(page):
    return [item["id"] for item in page.items]


def test_pin_favorited_for_puts_the_users_favourites_first(favourited):
    """fidelity-1.71.md §4.5 (A2): favourited first, then ``order_by``, then id; filters and
    ``total`` unchanged; another user's or a skill's favourites do not count."""
    agents = favourited
    assert ids_of(agents.list_agents(pin_favorited_for="u1")) == ["a3", "a1", "a4", "a2"]
    oldest = {"field": "created_at", "direction": "ASC"}
    assert ids_of(agents.list_agents(pin_favorited_for="u1", order_by=oldest)) == ["a1", "a3", "a2", "a4"]
    assert ids_of(agents.list_agents(pin_favorited_for="u2")) == ["a2", "a4", "a3", "a1"]
    assert ids_of(agents.list_agents(pin_favorited_for="nobody")) == ["a4", "a3", "a2", "a1"]
    paged = agents.list_agents(pin_favorited_for="u1", per_page=3, page=1)
    assert (ids_of(paged), paged.total, paged.has_more) == (["a2"], 4, False)
    filtered = agents.list_agents(pin_favorited_for="u1", entity_ids=["a2", "a3"])
    assert (ids_of(filtered), filtered.total) == (["a3", "a2"], 2)
    resolved = agents.list_agents_resolved(pin_favorited_for="u1")
    assert ids_of(resolved) == ["a3", "a1", "a4", "a2"] and resolved.items[0]["name"] == "Helper"


def test_favorited_only_lists_only_the_users_favourites(favourited):
    """fidelity-1.71.md §4.5: ``favorited_only`` with a user keeps that user's favourited agents;
    without one the page is empty, with no error."""
    agents = favourited
    only = agents.list_agents(pin_favorited_for="u1", favorited_only=True)
    assert (ids_of(only), only.total) == (["a3", "a1"], 2)
    assert ids_of(agents.list_agents_resolved(pin_favorited_for="u1", favorited_only=True,
                                              order_by={"field": "created_at", "direction": "ASC"})) == ["a1", "a3"]
    assert agents.list_agents(pin_favorited_for="u1", favorited_only=True, status="published").total == 0
    nobody = agents.list_agents(favorited_only=True)
    assert (nobody.items, nobody.total, nobody.has_more) == ([], 0, False)
    assert agents.list_agents_resolved(favorited_only=True).total == 0
    assert agents.list_agents(pin_favorited_for="u1", favorited_only=False).total == 4


def test_the_acceptance_example_of_favourites(agents):
    """fidelity-1.71.md §4.5, as written: a1..a3 created in order, u1 favourited a1."""
    for number in range(1, 4):
        agents.create(agent=sample(id=f"a{number}"))
        time.sleep(0.002)
    favourite(agents, "u1", "a1")
    assert ids_of(agents.list_agents(pin_favorited_for="u1")) == ["a1", "a3", "a2"]
    only = agents.list_agents(pin_favorited_for="u1", favorited_only=True)
    assert (ids_of(only), only.total) == (["a1"], 1)
    assert agents.list_agents(favorited_only=True).total == 0


@pytest.mark.parametrize("arguments,fields", [
    ({"pin_favorited_for": 5}, {"pin_favorited_for": ["pin_favorited_for must be a non-empty string"]}),
    ({"pin_favorited_for": ""}, {"pin_favorited_for": ["pin_favorited_for must be a non-empty string"]}),
    ({"favorited_only": "yes"}, {"favorited_only": ["favorited_only must be a boolean"]}),
    ({"favorited_only": None, "pin_favorited_for": "u1"}, {"favorited_only": ["favorited_only must be a boolean"]}),
])
@pytest.mark.parametrize("method", ["list_agents", "list_agents_resolved"])
def test_favourite_arguments_are_validated(agents, backend, method, arguments, fields):
    agents.create(agent=sample())
    with pytest.raises(ValidationError) as info:
        getattr(agents, method)(**arguments)
    assert info.value.fields == fields
    assert info.value.id == error_id(backend, method.upper(), "INVALID_INPUT")
    assert run_sql(agents, f"SELECT count(*) FROM {table_prefix(agents)}mastra_favorites") == [(0,)]


def test_init_creates_mastra_favorites_as_mastra_lays_it_out(agents, backend):
    """fidelity-1.71.md §4.5: the DDL of Mastra 1.71's ``mastra_favorites``, read from the catalog."""
    if backend == "sqlite":
        rows = dict(run_sql(agents, "SELECT name, sql FROM sqlite_master WHERE tbl_name = 'mastra_favorites' "
                                    "AND sql IS NOT NULL"))
        assert rows == {
            "mastra_favorites": 'CREATE TABLE "mastra_favorites" ("userId" TEXT NOT NULL, "entityType" TEXT NOT NULL, '
                                '"entityId" TEXT NOT NULL, "createdAt" TEXT NOT NULL, '
                                'PRIMARY KEY ("userId", "entityType", "entityId"))',
            "idx_favorites_entity": 'CREATE INDEX "idx_favorites_entity" ON "mastra_favorites" '
                                    '("entityType", "entityId")'}
        return
    schema = agents.models.favorite._meta.schema or "public"
    columns = run_sql(agents, "SELECT column_name, data_type, is_nullable, column_default FROM "
                              "information_schema.columns WHERE table_schema = ? AND table_name = 'mastra_favorites' "
                              "ORDER BY ordinal_position", (schema,))
    assert columns == [("userId", "text", "NO", None), ("entityType", "text", "NO", None),
                       ("entityId", "text", "NO", None), ("createdAt", "timestamp without time zone", "NO", None),
                       ("createdAtZ", "timestamp with time zone", "YES", "now()")]
    table = f'"{schema}"."mastra_favorites"'
    constraints = run_sql(agents, "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                                  "WHERE conrelid = ?::regclass", (table,))
    assert constraints == [("mastra_favorites_pkey", 'PRIMARY KEY ("userId", "entityType", "entityId")')]
    index = "idx_favorites_entity" if schema == "public" else f"{schema}_idx_favorites_entity"
    indexes = run_sql(agents, "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = ? "
                              "AND tablename = 'mastra_favorites' AND indexname <> 'mastra_favorites_pkey'", (schema,))
    assert indexes == [(index, f'CREATE INDEX {index} ON {schema}.mastra_favorites USING btree '
                               '("entityType", "entityId")')]


# --------------------------------------------------------------------------- init and tables


def test_init_refuses_the_older_single_table_layout(backend, fresh_url, make_store):
    store = make_store(fresh_url)
    agents = store.get_store("agents")
    run_sql(agents, f'CREATE TABLE {table_prefix(agents)}mastra_agents '
                    '(id TEXT PRIMARY KEY, name TEXT, "createdAt" TEXT)')
    with pytest.raises(NotSupportedError) as info:
        agents.init()
    assert info.value.id == error_id(backend, "INIT", "NOT_SUPPORTED")
    assert info.value.category == "SYSTEM" and info.value.domain == "agents"
    assert "older layout" in info.value.message and "mastra_agents" in info.value.message
    columns = {c.name for c in agents.backend.database.get_columns("mastra_agents", agents.models.agent._meta.schema)}
    assert columns == {"id", "name", "createdAt"}
    assert not agents.backend.database.table_exists("mastra_agent_versions", agents.models.version._meta.schema)
    with pytest.raises(NotSupportedError):
        agents.init()


def test_init_refuses_versions_with_a_snapshot_column(backend, fresh_url, make_store):
    store = make_store(fresh_url)
    agents = store.get_store("agents")
    run_sql(agents, f"CREATE TABLE {table_prefix(agents)}mastra_agent_versions (id TEXT PRIMARY KEY, snapshot TEXT)")
    with pytest.raises(NotSupportedError) as info:
        agents.init()
    assert "mastra_agent_versions" in info.value.message


def test_init_goes_on_without_the_unique_index_when_rows_violate_it(backend, fresh_url, make_store, caplog):
    store = make_store(fresh_url)
    agents = store.get_store("agents")
    prefix = table_prefix(agents)
    json_type, timestamp_type = ("jsonb", "timestamp") if backend == "postgres" else ("TEXT", "TEXT")
    run_sql(agents, f'CREATE TABLE {prefix}mastra_agent_versions (id TEXT NOT NULL PRIMARY KEY, '
                    '"agentId" TEXT NOT NULL, "versionNumber" INTEGER NOT NULL, name TEXT NOT NULL, '
                    'instructions TEXT NOT NULL, '
                    f'model {json_type} NOT NULL, "createdAt" {timestamp_type} NOT NULL)')
    for version_id in ("dup-1", "dup-2"):
        run_sql(agents, f'INSERT INTO {prefix}mastra_agent_versions (id, "agentId", "versionNumber", name, '
                        'instructions, model, "createdAt") VALUES (?, ?, ?, ?, ?, ?, ?)',
                (version_id, "a1", 1, "Dup", "i", '{"provider": "p", "name": "n"}', "2024-01-01T00:00:00.000Z"))
    with caplog.at_level(logging.WARNING):
        store.init()
    assert any("idx_agent_versions_agent_version" in r.getMessage() for r in caplog.records)
    assert agents.count_versions(agent_id="a1") == 2
    agents.create(agent=sample(id="a2"))
    agents.create_version(**version_args(agent_id="a2", number=2))
    with pytest.raises(ConflictError):
        agents.create_version(**version_args(agent_id="a2", number=2))
    assert agents.count_versions(agent_id="a2") == 2


def test_init_creates_the_reference_layout(backend, fresh_url, make_store):
    store = make_store(fresh_url)
    store.init()
    store.init()
    agents = store.get_store("agents")
    database, schema = agents.backend.database, agents.models.agent._meta.schema
    agent_columns = [c.name for c in database.get_columns("mastra_agents", schema)]
    version_columns = [c.name for c in database.get_columns("mastra_agent_versions", schema)]
    expected_versions = ["id", "agentId", "versionNumber", "name", "description", "instructions", "model", "tools",
                         "defaultOptions", "workflows", "agents", "integrationTools", "toolProviders",
                         "inputProcessors", "outputProcessors", "memory", "scorers", "mcpClients",
                         "requestContextSchema", "workspace", "skills", "skillsFormat", "durable", "browser",
                         "changedFields", "changeMessage", "createdAt"]
    expected_agents = ["id", "status", "activeVersionId", "authorId", "visibility", "metadata", "favoriteCount",
                       "createdAt", "updatedAt"]
    indexes = {index.name: index for index in database.get_indexes("mastra_agent_versions", schema)}
    if backend == "sqlite":
        assert agent_columns == expected_agents and version_columns == expected_versions
        assert indexes["idx_agent_versions_agent_version"].unique
        assert indexes["idx_agent_versions_agent_version"].columns == ["agentId", "versionNumber"]
    else:
        assert agent_columns == expected_agents + ["createdAtZ", "updatedAtZ"]
        assert version_columns == expected_versions + ["createdAtZ"]
        types = {c.name: c.data_type for c in database.get_columns("mastra_agent_versions", schema)}
        assert types["model"] == "jsonb" and types["instructions"] == "text"
        assert types["createdAt"] == "timestamp without time zone"
        assert types["createdAtZ"] == "timestamp with time zone"
        assert f"{schema}_idx_agent_versions_agent_version" in indexes
        primary = run_sql(agents, "SELECT conname FROM pg_constraint WHERE contype = 'p' AND "
                                  "conrelid = ?::regclass", (f'"{schema}"."mastra_agents"',))
        assert primary == [("mastra_agents_pkey",)]


def test_init_adds_missing_columns_and_keeps_rows(backend, fresh_url, make_store):
    store = make_store(fresh_url)
    agents = store.get_store("agents")
    prefix = table_prefix(agents)
    timestamp_type = "timestamp" if backend == "postgres" else "TEXT"
    run_sql(agents, f'CREATE TABLE {prefix}mastra_agents (id TEXT NOT NULL PRIMARY KEY, status TEXT NOT NULL, '
                    f'"createdAt" {timestamp_type} NOT NULL, "updatedAt" {timestamp_type} NOT NULL, extra TEXT)')
    run_sql(agents, f'INSERT INTO {prefix}mastra_agents (id, status, "createdAt", "updatedAt", extra) '
                    "VALUES (?, ?, ?, ?, ?)", ("old", "draft", "2024-01-01T00:00:00.000Z",
                                               "2024-01-01T00:00:00.000Z", "kept"))
    agents.init()
    columns = {c.name for c in agents.backend.database.get_columns("mastra_agents", agents.models.agent._meta.schema)}
    assert {"activeVersionId", "metadata", "favoriteCount", "extra"} <= columns
    record = agents.get_by_id(id="old")
    assert record["favorite_count"] == 0 and record["metadata"] is None
    assert record["created_at"] == datetime(2024, 1, 1, tzinfo=timezone.utc)
    assert agents.get_by_id_resolved(id="old")["resolved_version_id"] is None
    assert run_sql(agents, f"SELECT extra FROM {prefix}mastra_agents") == [("kept",)]


# --------------------------------------------------------------------------- ClickHouse (not available yet)


def test_agents_clickhouse_is_not_supported_without_connecting():
    with pytest.raises(NotSupportedError) as info:
        AgentsClickHouse(url="clickhouse://default:@127.0.0.1:9/default")
    error = info.value
    assert error.id == "STORAGE_CLICKHOUSE_INIT_NOT_SUPPORTED"
    assert error.category == "SYSTEM" and error.domain == "agents"
    assert error.message == "The agents domain is not available on ClickHouse; use SQLite or PostgreSQL for it."
    assert ClickHouseStore(url="clickhouse://default:@127.0.0.1:9/default").get_store("agents") is None


def test_from_urls_with_clickhouse_agents_is_not_supported(tmp_path):
    with pytest.raises(NotSupportedError) as info:
        CompositeStore.from_urls(default=f"sqlite:///{tmp_path}/app.db",
                                 agents="clickhouse://default:@127.0.0.1:9/default")
    assert info.value.id == "STORAGE_CLICKHOUSE_INIT_NOT_SUPPORTED"
    assert info.value.category == "SYSTEM" and info.value.domain == "agents"
    assert "SQLite or PostgreSQL" in info.value.message

