"""The agents domain: stored, versioned agent configurations (spec: agents.md).

An agent is a small mutable record (``mastra_agents``) plus an append-only list of immutable
versions (``mastra_agent_versions``), each a complete copy of the configuration.  Readers ask for
a *resolved* agent: the record merged with the configuration of the version that applies.
"""

from __future__ import annotations

import json
import logging
from itertools import islice
from typing import Any, Callable, Iterator, Mapping
from uuid import uuid4

import peewee

from .models.agents import CONFIG_COLUMNS, build_agents_models

from .base import (ITER_CHUNK, DomainRepository, check_chunk_size, fetch_page, filter_by_metadata, operation,
                   order_terms, streaming)
from .errors import ConflictError, NotFoundError, NotSupportedError, StorageError, ValidationError
from .page import Page
from .schemas.agents import AGENT_STATUSES, VISIBILITIES, AgentInputSchema, AgentUpdateSchema, AgentVersionSchema
from .schemas.base import load_into
from .validation import Problems, check_id, check_metadata_filter, check_order_by, check_page, check_text, one_of
from .values import ID_CHUNK, UNSET, chunks, json_dumps, json_loads, later_than, normalize_json, utc_now

logger = logging.getLogger("composite_store.agents")

#: The configuration keys (agents.md §3.2), in the table's column order.
CONFIG_KEYS = tuple(name for name, _ in CONFIG_COLUMNS)

_INPUT_SCHEMA = AgentInputSchema()
_UPDATE_SCHEMA = AgentUpdateSchema()
_VERSION_SCHEMA = AgentVersionSchema(exclude=("created_at",))
#: Wire (camelCase) key → snake_case key of ``create``'s input, for error paths.
_SNAKE_KEYS = {field.data_key: name for name, field in _INPUT_SCHEMA.fields.items() if field.data_key}


# --------------------------------------------------------------------------- stored formats

def decode_instructions(stored: Any) -> Any:
    """Instructions as stored (agents.md §5): a JSON array of typed blocks is a block list,
    any other text is the string it is."""
    if isinstance(stored, (bytes, bytearray, memoryview)):  # a JSONB blob another client wrote
        stored = json_loads(stored)
        if not isinstance(stored, str):
            stored = json_dumps(stored)
    if not isinstance(stored, str) or not stored.lstrip().startswith("["):
        return stored
    try:
        blocks = json.loads(stored)
    except ValueError:
        return stored
    if isinstance(blocks, list) and all(isinstance(b, dict) and isinstance(b.get("type"), str) for b in blocks):
        return blocks
    return stored


def encode_instructions(instructions: Any) -> str:
    """A string as it is; a block list as its JSON text."""
    return instructions if isinstance(instructions, str) else json_dumps(instructions)


def decode_tools(stored: Any) -> Any:
    """Older clients stored a list of tool names: read it as ``{name: {}}`` (the row stays)."""
    if isinstance(stored, list) and all(isinstance(name, str) for name in stored):
        return {name: {} for name in stored}
    return stored


def _agent_record(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "status": row["status"], "active_version_id": row["active_version_id"],
            "author_id": row["author_id"], "visibility": row["visibility"], "metadata": row["metadata"],
            "favorite_count": row["favorite_count"] or 0, "created_at": row["created_at"],
            "updated_at": row["updated_at"]}


def _configuration(row: Mapping[str, Any] | None) -> dict[str, Any]:
    if row is None:
        return dict.fromkeys(CONFIG_KEYS)
    config = {key: row[key] for key in CONFIG_KEYS}
    config["instructions"] = decode_instructions(config["instructions"])
    config["tools"] = decode_tools(config["tools"])
    return config


def _version_record(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "agent_id": row["agent_id"], "version_number": row["version_number"],
            **_configuration(row), "changed_fields": row["changed_fields"], "change_message": row["change_message"],
            "created_at": row["created_at"]}


def _resolved_record(agent: Mapping[str, Any], version: Mapping[str, Any] | None) -> dict[str, Any]:
    """The agent record + the version's configuration (never its bookkeeping keys)."""
    return {**_agent_record(agent), **_configuration(version),
            "resolved_version_id": None if version is None else version["id"]}


def _check_id(problems: Problems, field: str, value: Any) -> None:
    """An id argument: a non-empty string that the databases can store."""
    check_id(problems, field, value)
    if isinstance(value, str):
        check_text(problems, field, value)


def _check_ids(problems: Problems, field: str, values: Any) -> None:
    """A list (or tuple) of ids, each as :func:`_check_id` wants it (``[i]`` in the path)."""
    if not isinstance(values, (list, tuple)):
        problems.add(field, f"{field} must be a list of non-empty strings")
        return
    for index, value in enumerate(values):
        _check_id(problems, f"{field}[{index}]", value)


class AgentsRepository(DomainRepository):
    """Stored agent configurations, versioned and editable at runtime.

    Example::

        agents = storage.get_store("agents")
        agents.create(agent={"id": "helper", "name": "Helper", "instructions": "Be brief",
                             "model": {"provider": "openai", "name": "gpt-4o"}})
        latest = agents.get_latest_version(agent_id="helper")
        v2 = agents.create_version(agent_id="helper", version_number=latest["version_number"] + 1,
                                   name="Helper", instructions="Be very brief",
                                   model={"provider": "openai", "name": "gpt-4o"})
        agents.update(id="helper", active_version_id=v2["id"], status="published")
        resolved = agents.get_by_id_resolved(id="helper")

    Every method also answers to Mastra's longer name (``create_agent``, ``update_agent``, …),
    which error ids use.
    """

    domain = "agents"
    rejects_unstorable_text = True

    def build_models(self, database: peewee.DatabaseProxy) -> Any:
        return build_agents_models(database)

    # ------------------------------------------------------------------ tables

    @operation
    def init(self) -> None:
        """Create missing tables, columns and the version-number index; refuse the older
        single-table layout (a ``name`` column on ``mastra_agents``, a ``snapshot`` column on
        ``mastra_agent_versions``) with :class:`NotSupportedError`, changing nothing."""
        self.backend.run_once(self.domain, self._create_tables)

    def _create_tables(self) -> None:
        for model, legacy_column in ((self.models.agent, "name"), (self.models.version, "snapshot")):
            table = model._meta.table_name
            columns = {c.name for c in self.backend.database.get_columns(table, model._meta.schema)}
            if legacy_column in columns:
                raise NotSupportedError(
                    f"Table {table} uses an older layout (it has a {legacy_column} column) that must be "
                    "migrated first; init does not migrate it.", details={"table": table})
        self.backend.create_tables(self.tables)

    # ------------------------------------------------------------------ single-row reads

    def _agent_row(self, agent_id: str, *, lock: bool = False) -> dict[str, Any] | None:
        Agent = self.models.agent
        query = self.backend.select(Agent).where(Agent.id == agent_id)
        if lock:
            query = self.backend.for_update(query)
        return query.first()

    def _version_row(self, version_id: str) -> dict[str, Any] | None:
        Version = self.models.version
        return self.backend.select(Version).where(Version.id == version_id).first()

    def _version_of_agent(self, agent_id: str, version_id: str, field: str) -> dict[str, Any]:
        """The version ``version_id``, which must belong to ``agent_id``."""
        version = self._version_row(version_id)
        if version is None:
            message = f"Agent version not found: {version_id}"
            if field == "version_id":
                raise NotFoundError(message, details={"version_id": version_id})
            raise ValidationError(message, fields={field: [message]})
        if version["agent_id"] != agent_id:
            message = f"Agent version {version_id} does not belong to agent {agent_id}"
            raise ValidationError(message, fields={field: [message]})
        return version

    # ------------------------------------------------------------------ agents: writes

    @operation
    def create_agent(self, *, agent: dict) -> dict:
        """Create an agent record and its version 1 in one transaction; returns the record
        (``status="draft"``, not yet published)."""
        problems = Problems()
        if not isinstance(agent, Mapping):
            problems.add("agent", "Not a valid mapping type.")
            problems.raise_if_any()
        for key, value in agent.items():
            check_text(problems, _SNAKE_KEYS.get(key, str(key)), value)
        data = load_into(problems, _INPUT_SCHEMA, agent)
        problems.raise_if_any()

        agent_id, author_id, now = data["id"], data.get("author_id"), utc_now()
        visibility = data.get("visibility")
        if visibility is None and author_id is not None:
            visibility = "private"
        record = {"id": agent_id, "status": "draft", "active_version_id": None, "author_id": author_id,
                  "visibility": visibility, "metadata": data.get("metadata"), "favorite_count": 0,
                  "created_at": now, "updated_at": now}
        config = {key: data.get(key) for key in CONFIG_KEYS}
        version = self._new_version_row(
            str(uuid4()), agent_id, 1, config, created_at=now, change_message="Initial version",
            changed_fields=[column for key, column in CONFIG_COLUMNS if config[key] is not None])
        try:
            with self.backend.write(("agent", agent_id)):
                if self._agent_row(agent_id) is not None:
                    raise _agent_exists(agent_id)
                self.backend.insert(self.models.agent, [record])
                self.backend.insert(self.models.version, [version])
        except StorageError:
            raise
        except Exception as exc:
            # PostgreSQL: a concurrent create committed the same id first (its primary key won).
            if self._agent_row(agent_id) is not None:
                raise _agent_exists(agent_id) from exc
            raise
        return _agent_record(record)

    @staticmethod
    def _new_version_row(version_id: str, agent_id: str, version_number: int, config: Mapping[str, Any], *,
                         created_at: Any, change_message: str | None,
                         changed_fields: list[str] | None) -> dict[str, Any]:
        row = {"id": version_id, "agent_id": agent_id, "version_number": version_number,
               **{key: config.get(key) for key in CONFIG_KEYS},
               "changed_fields": changed_fields, "change_message": change_message, "created_at": created_at}
        row["instructions"] = encode_instructions(row["instructions"])
        return row

    @operation
    def update_agent(self, *, id: str, author_id: str | None = UNSET, visibility: str | None = UNSET,
                     metadata: dict | None = UNSET, active_version_id: str | None = UNSET, status: str = UNSET,
                     **config: Any) -> dict:
        """Change the agent record; ``metadata`` is merged key by key into the stored one.

        Configuration keys are accepted (validated as JSON values) and ignored: new
        configuration is stored with :meth:`create_version`, then activated here with
        ``active_version_id``.  Returns the record as stored.
        """
        problems = Problems()
        _check_id(problems, "id", id)
        given = {name: value for name, value in (("author_id", author_id), ("visibility", visibility),
                                                 ("metadata", metadata), ("active_version_id", active_version_id),
                                                 ("status", status)) if value is not UNSET}
        for key, value in {**given, **config}.items():
            check_text(problems, key, value)
        changes = load_into(problems, _UPDATE_SCHEMA, given) or {}
        for key, value in config.items():
            if key not in CONFIG_KEYS:
                problems.add(key, "Unknown field.")
            else:
                errors: dict[str, list[str]] = {}
                normalize_json(value, key, errors)
                problems.merge(errors)
        problems.raise_if_any()

        Agent = self.models.agent
        now = utc_now()
        with self.backend.write(("agent", id)):
            row = self._agent_row(id, lock=True)
            if row is None:
                raise NotFoundError(f"Agent not found: {id}", details={"id": id})
            if changes.get("active_version_id") is not None:
                self._version_of_agent(id, changes["active_version_id"], "active_version_id")
            if changes.get("metadata") is not None:
                stored = row["metadata"] if isinstance(row["metadata"], dict) else {}
                changes["metadata"] = {**stored, **changes["metadata"]}
            # updated_at strictly increases, even for two updates within one millisecond.
            changes["updated_at"] = later_than(row["updated_at"], now)
            self.backend.replace(Agent, row, changes)
        return _agent_record({**row, **changes})

    @operation
    def delete_agent(self, *, id: str) -> None:
        """Delete the agent and all its versions; a missing id is a no-op."""
        problems = Problems()
        _check_id(problems, "id", id)
        problems.raise_if_any()
        Agent, Version = self.models.agent, self.models.version
        with self.backend.write(("agent", id)):
            self.backend.delete_bulk(Version, Version.agent_id == id, operation="DELETE_AGENT")
            self.backend.delete(Agent, Agent.id == id)

    # ------------------------------------------------------------------ agents: reads

    @operation
    def get_agent_by_id(self, *, id: str) -> dict | None:
        """The agent record (no configuration keys), or ``None``."""
        problems = Problems()
        _check_id(problems, "id", id)
        problems.raise_if_any()
        row = self._agent_row(id)
        return None if row is None else _agent_record(row)

    @operation
    def get_agent_by_id_resolved(self, *, id: str, status: str | None = None,
                                 version_id: str | None = None) -> dict | None:
        """The agent merged with one version's configuration, or ``None`` when it does not exist.

        ``version_id`` picks that version; ``status="draft"`` the latest one; otherwise the
        active version, falling back (with a logged warning when it is gone) to the latest.
        """
        problems = Problems()
        _check_id(problems, "id", id)
        if status is not None and status not in AGENT_STATUSES:
            problems.add("status", one_of(AGENT_STATUSES))
        if version_id is not None:
            _check_id(problems, "version_id", version_id)
            if status is not None:
                problems.add("version_id", "Pass either status or version_id, not both.")
        problems.raise_if_any()
        with self.backend.read():
            row = self._agent_row(id)
            if row is None:
                return None
            if version_id is not None:
                return _resolved_record(row, self._version_of_agent(id, version_id, "version_id"))
            return self._resolve([row], latest=status == "draft")[0]

    def _resolve(self, rows: list[dict[str, Any]], *, latest: bool) -> list[dict[str, Any]]:
        """Resolve agents with their latest version (``latest``) or active-or-latest version."""
        Version = self.models.version
        chosen: dict[str, dict[str, Any]] = {}
        if not latest:
            active = {row["id"]: row["active_version_id"] for row in rows if row["active_version_id"]}
            if active:
                found = self._versions_by_id(list(dict.fromkeys(active.values())))
                for agent_id, version_id in active.items():
                    version = found.get(version_id)
                    if version is not None and version["agent_id"] == agent_id:
                        chosen[agent_id] = version
                    else:
                        logger.warning("Active version %s of agent %s does not exist; using the latest version",
                                       version_id, agent_id)
        rest = [row["id"] for row in rows if row["id"] not in chosen]
        if rest:
            chosen.update(self._latest_versions(rest))
        return [_resolved_record(row, chosen.get(row["id"])) for row in rows]

    def _versions_by_id(self, version_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Version id → stored row, of the distinct ``version_ids`` that exist (any agent)."""
        Version = self.models.version
        found: dict[str, dict[str, Any]] = {}
        for chunk in chunks(version_ids):
            found.update((row["id"], row) for row in self.backend.select(Version).where(Version.id.in_(chunk)))
        return found

    def _latest_versions(self, agent_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Agent id → its version with the highest number (agents without versions are absent)."""
        Version = self.models.version
        highest = (Version.select(Version.agent_id, peewee.fn.MAX(Version.version_number))
                   .where(Version.agent_id.in_(agent_ids)).group_by(Version.agent_id))
        # Where stored rows repeat a number (no unique index), the lowest id wins, as in get_latest_version.
        query = (self.backend.select(Version)
                 .where(peewee.Tuple(Version.agent_id, Version.version_number).in_(highest))
                 .order_by(Version.id.desc()))
        return {row["agent_id"]: row for row in query}

    def _list_page(self, page: Any, per_page: Any, order_by: Any, status: Any, author_id: Any, visibility: Any,
                   metadata: Any, entity_ids: Any, pin_favorited_for: Any,
                   favorited_only: Any) -> tuple[list[dict[str, Any]], int, bool, Any]:
        """Validate ``list``'s arguments and read one page of agent rows."""
        problems = Problems()
        request = check_page(problems, page, per_page, default_per_page=100)
        ordering = check_order_by(problems, order_by, allowed=("created_at", "updated_at"),
                                  default_field="created_at", default_direction="DESC")
        query, predicate = self._matching_agents(problems, status, author_id, visibility, metadata, entity_ids,
                                                 pin_favorited_for, favorited_only)
        problems.raise_if_any()
        if query is None:
            return [], 0, False, request

        Agent = self.models.agent
        order = order_terms(getattr(Agent, ordering.field), ordering.descending, Agent.id)
        if pin_favorited_for is not None and not favorited_only:
            Favorite = self.models.favorite
            query = query.join(Favorite, peewee.JOIN.LEFT_OUTER, on=self._favourite_of(pin_favorited_for))
            order = [Favorite.user_id.is_null().asc(), *order]  # favourited first
        rows, total, has_more = fetch_page(self.backend, query, order, request, predicate=predicate)
        return rows, total, has_more, request

    def _matching_agents(self, problems: Problems, status: Any, author_id: Any, visibility: Any, metadata: Any,
                         entity_ids: Any, pin_favorited_for: Any, favorited_only: Any
                         ) -> tuple[peewee.ModelSelect | None, Callable[[dict], bool] | None]:
        """The filters of :meth:`list_agents` (and :meth:`iter_agents`) checked into ``problems``;
        when every check so far passed and some agent can match, the select of the matching
        agents (``favorited_only``: joined to the user's favourites) and the predicate of the
        ``metadata`` filter where the backend checks it in Python; else ``(None, None)``.

        Pinning (``pin_favorited_for`` alone) orders a list and filters nothing: it is the
        list's to add."""
        filters = check_metadata_filter(problems, "metadata", metadata)
        check_text(problems, "metadata", metadata)
        if status is not None and status not in AGENT_STATUSES:
            problems.add("status", one_of(AGENT_STATUSES))
        if visibility is not None and visibility not in VISIBILITIES:
            problems.add("visibility", one_of(VISIBILITIES))
        if author_id is not None:
            _check_id(problems, "author_id", author_id)
        if entity_ids is not None:
            _check_ids(problems, "entity_ids", entity_ids)
        if pin_favorited_for is not None:
            _check_id(problems, "pin_favorited_for", pin_favorited_for)
        if not isinstance(favorited_only, bool):
            problems.add("favorited_only", "favorited_only must be a boolean")
        if problems or entity_ids is not None and not entity_ids or favorited_only and pin_favorited_for is None:
            return None, None  # Mastra: favourites of nobody match no agent

        Agent = self.models.agent
        query = self.backend.select(Agent)
        for field, value in ((Agent.status, status), (Agent.author_id, author_id), (Agent.visibility, visibility)):
            if value is not None:
                query = query.where(field == value)
        if entity_ids:
            query = query.where(Agent.id.in_(list(dict.fromkeys(entity_ids))))
        if favorited_only:
            query = query.join(self.models.favorite, on=self._favourite_of(pin_favorited_for))
        return filter_by_metadata(self.backend, query, Agent.metadata, filters)

    def _favourite_of(self, user_id: str) -> peewee.Expression:
        """The join condition of an agent and ``user_id``'s favourite of it: the key
        (userId, entityType, entityId) matches at most one row per agent."""
        Agent, Favorite = self.models.agent, self.models.favorite
        return (Favorite.entity_type == "agent") & (Favorite.entity_id == Agent.id) & (Favorite.user_id == user_id)

    @operation
    def list_agents(self, *, page: int = 0, per_page: int | bool = 100, order_by: dict | None = None,
                    status: str | None = None, author_id: str | None = None, visibility: str | None = None,
                    metadata: dict | None = None, entity_ids: list[str] | None = None,
                    pin_favorited_for: str | None = None, favorited_only: bool = False) -> Page:
        """Agent records, newest first by default; the filters are ANDed.

        ``pin_favorited_for`` (a user id) puts the agents that user favourited (rows of
        ``mastra_favorites``, which Mastra writes) first, then the ``order_by`` order; with
        ``favorited_only=True`` only those agents are listed (``total`` counts them), and without
        a user the page is empty.

        Example::

            agents.list_agents(pin_favorited_for="user-1", favorited_only=True)
        """
        rows, total, has_more, request = self._list_page(page, per_page, order_by, status, author_id, visibility,
                                                         metadata, entity_ids, pin_favorited_for, favorited_only)
        return Page([_agent_record(row) for row in rows], total, request.page, request.per_page, has_more)

    @operation
    def list_agents_resolved(self, *, page: int = 0, per_page: int | bool = 100, order_by: dict | None = None,
                             status: str | None = None, author_id: str | None = None,
                             visibility: str | None = None, metadata: dict | None = None,
                             entity_ids: list[str] | None = None, pin_favorited_for: str | None = None,
                             favorited_only: bool = False) -> Page:
        """:meth:`list_agents` (the same arguments), each agent resolved: with its latest version
        when ``status="draft"``, else with its active version (or the latest); the page's active
        versions are read in one query."""
        with self.backend.read():
            rows, total, has_more, request = self._list_page(page, per_page, order_by, status, author_id,
                                                             visibility, metadata, entity_ids, pin_favorited_for,
                                                             favorited_only)
            items = self._resolve(rows, latest=status == "draft") if rows else []
        return Page(items, total, request.page, request.per_page, has_more)

    # ------------------------------------------------------------------ versions: writes

    @operation
    def create_version(self, *, agent_id: str, version_number: int, name: str, instructions: Any, model: Any,
                       id: str | None = None, changed_fields: list[str] | None = None,
                       change_message: str | None = None, **config: Any) -> dict:
        """Store a new immutable version of an existing agent; the agent record is untouched.

        ``version_number`` must be unused for the agent (usually the latest number + 1).
        """
        problems = Problems()
        given = {"agent_id": agent_id, "version_number": version_number, "name": name,
                 "instructions": instructions, "model": model, "changed_fields": changed_fields,
                 "change_message": change_message}
        if id is not None:
            given["id"] = id
        for key, value in config.items():
            if key in CONFIG_KEYS:
                given[key] = value
            else:
                problems.add(key, "Unknown field.")
        for key, value in given.items():
            check_text(problems, key, value)
        data = load_into(problems, _VERSION_SCHEMA, given)
        problems.raise_if_any()

        version_id = data.get("id") or str(uuid4())
        row = self._new_version_row(version_id, agent_id, version_number, data, created_at=utc_now(),
                                    change_message=data.get("change_message"),
                                    changed_fields=data.get("changed_fields"))
        try:
            with self.backend.write(("agent", agent_id)):
                if self._agent_row(agent_id, lock=True) is None:
                    raise NotFoundError(f"Agent not found: {agent_id}", details={"agent_id": agent_id})
                conflict = self._version_conflict(agent_id, version_number, id)
                if conflict is not None:
                    raise conflict
                self.backend.insert(self.models.version, [row])
        except StorageError:
            raise
        except Exception as exc:
            # The unique index or the primary key caught a race the locked checks could not see.
            conflict = self._version_conflict(agent_id, version_number, id)
            if conflict is not None:
                raise conflict from exc
            raise
        return _version_record(row)

    def _version_conflict(self, agent_id: str, version_number: int, version_id: str | None) -> ConflictError | None:
        """The conflict a new version would have with stored ones, or ``None``."""
        Version = self.models.version
        taken = (self.backend.select(Version, Version.id)
                 .where((Version.agent_id == agent_id) & (Version.version_number == version_number)).first())
        if taken is not None:
            return ConflictError(f"Version number {version_number} already exists for agent {agent_id}",
                                 details={"agent_id": agent_id, "version_number": version_number})
        if version_id is not None and self._version_row(version_id) is not None:
            return ConflictError(f"Agent version already exists: {version_id}", details={"version_id": version_id})
        return None

    @operation
    def delete_version(self, *, version_id: str) -> None:
        """Delete one version (also the active one: the agent then resolves to its latest);
        a missing id is a no-op."""
        problems = Problems()
        _check_id(problems, "version_id", version_id)
        problems.raise_if_any()
        Version = self.models.version
        with self.backend.write(("agent_version", version_id)):
            self.backend.delete(Version, Version.id == version_id)

    @operation
    def delete_versions_by_parent_id(self, *, agent_id: str) -> None:
        """Delete every version of the agent; the record stays as it is."""
        problems = Problems()
        _check_id(problems, "agent_id", agent_id)
        problems.raise_if_any()
        Version = self.models.version
        with self.backend.write(("agent", agent_id)):
            self.backend.delete_bulk(Version, Version.agent_id == agent_id, operation="DELETE_VERSIONS_BY_PARENT_ID")

    # ------------------------------------------------------------------ versions: reads

    @operation
    def get_version(self, *, version_id: str) -> dict | None:
        """The version, or ``None``."""
        problems = Problems()
        _check_id(problems, "version_id", version_id)
        problems.raise_if_any()
        row = self._version_row(version_id)
        return None if row is None else _version_record(row)

    @operation
    def get_versions(self, *, version_ids: list[str]) -> list[dict]:
        """The versions with these ids, of any agent, each once, in the order of their first
        occurrence in ``version_ids``; unknown ids are left out (``[]`` reads nothing).

        Example::

            agents.get_versions(version_ids=["v2", "v1"])
        """
        problems = Problems()
        _check_ids(problems, "version_ids", version_ids)
        problems.raise_if_any()
        wanted = list(dict.fromkeys(version_ids))
        found = self._versions_by_id(wanted) if wanted else {}
        return [_version_record(found[version_id]) for version_id in wanted if version_id in found]

    @operation
    def get_version_by_number(self, *, agent_id: str, version_number: int) -> dict | None:
        """The agent's version with this number, or ``None``."""
        problems = Problems()
        _check_id(problems, "agent_id", agent_id)
        if isinstance(version_number, bool) or not isinstance(version_number, int) or version_number < 1:
            problems.add("version_number", "version_number must be an integer >= 1")
        problems.raise_if_any()
        Version = self.models.version
        row = (self.backend.select(Version)
               .where((Version.agent_id == agent_id) & (Version.version_number == version_number))
               .order_by(Version.id).first())
        return None if row is None else _version_record(row)

    @operation
    def get_latest_version(self, *, agent_id: str) -> dict | None:
        """The agent's version with the highest number, or ``None``."""
        problems = Problems()
        _check_id(problems, "agent_id", agent_id)
        problems.raise_if_any()
        Version = self.models.version
        row = (self.backend.select(Version).where(Version.agent_id == agent_id)
               .order_by(Version.version_number.desc(), Version.id).first())
        return None if row is None else _version_record(row)

    @operation
    def count_versions(self, *, agent_id: str) -> int:
        """How many versions the agent has (``0`` for an unknown agent)."""
        problems = Problems()
        _check_id(problems, "agent_id", agent_id)
        problems.raise_if_any()
        Version = self.models.version
        return self.backend.select(Version).where(Version.agent_id == agent_id).count()

    @operation
    def list_versions(self, *, agent_id: str, page: int = 0, per_page: int | bool = 20,
                      order_by: dict | None = None) -> Page:
        """The agent's versions, highest number first by default."""
        problems = Problems()
        _check_id(problems, "agent_id", agent_id)
        request = check_page(problems, page, per_page, default_per_page=20)
        ordering = check_order_by(problems, order_by, allowed=("version_number", "created_at"),
                                  default_field="version_number", default_direction="DESC")
        problems.raise_if_any()
        Version = self.models.version
        query = self.backend.select(Version).where(Version.agent_id == agent_id)
        order = order_terms(getattr(Version, ordering.field), ordering.descending, Version.id)
        rows, total, has_more = fetch_page(self.backend, query, order, request)
        return Page([_version_record(row) for row in rows], total, request.page, request.per_page, has_more)

    # ------------------------------------------------------------------ streaming reads

    @streaming
    def iter_agents(self, *, status: str | None = None, author_id: str | None = None, visibility: str | None = None,
                    metadata: dict | None = None, entity_ids: list[str] | None = None,
                    pin_favorited_for: str | None = None, favorited_only: bool = False, with_versions: bool = False,
                    chunk_size: int = ITER_CHUNK) -> Iterator[dict]:
        """Every agent matching the filters of :meth:`list_agents` (checked as it checks them) as
        it gives them, in id order, read ``chunk_size`` at a time (constant memory);
        ``with_versions=True`` adds ``versions``: the agent's versions as :meth:`list_versions`
        gives them, by version number.

        ``pin_favorited_for`` orders nothing here (the order is the id's); with
        ``favorited_only=True`` only that user's favourited agents are read, as the list lists them.

        Example::

            for agent in agents.iter_agents(status="published", with_versions=True):
                archive(agent)
        """
        problems = Problems()
        check_chunk_size(problems, chunk_size)
        if not isinstance(with_versions, bool):
            problems.add("with_versions", "Not a valid boolean.")
        query, predicate = self._matching_agents(problems, status, author_id, visibility, metadata, entity_ids,
                                                 pin_favorited_for, favorited_only)
        problems.raise_if_any()
        if query is None:
            return iter(())
        agents = self.iter_query(query, _agent_record, chunk_size, predicate=predicate)
        return self._with_versions(agents, min(chunk_size, ID_CHUNK)) if with_versions else agents

    def _with_versions(self, agents: Iterator[dict[str, Any]], batch_size: int) -> Iterator[dict[str, Any]]:
        """``agents`` with their ``versions``, read by one query per ``batch_size`` agents (not
        one per agent)."""
        Version = self.models.version
        while batch := list(islice(agents, batch_size)):
            versions: dict[str, list[dict[str, Any]]] = {agent["id"]: [] for agent in batch}
            query = (self.backend.select(Version).where(Version.agent_id.in_(list(versions)))
                     .order_by(Version.agent_id, Version.version_number, Version.id))
            with self.backend.connection():
                for row in query:
                    versions[row["agent_id"]].append(_version_record(row))
            for agent in batch:
                agent["versions"] = versions[agent["id"]]
                yield agent

    @streaming
    def iter_versions(self, *, agent_id: str | None = None, chunk_size: int = ITER_CHUNK) -> Iterator[dict]:
        """Every version (of one agent, or of all) as :meth:`list_versions` gives them, in id
        order, read ``chunk_size`` at a time (constant memory)."""
        return self.iter_matching(Problems(), self.models.version, _version_record, chunk_size, agent_id=agent_id)

    # ------------------------------------------------------------------ short names (agents.md §4.15)

    create = create_agent
    get_by_id = get_agent_by_id
    update = update_agent
    delete = delete_agent
    get_by_id_resolved = get_agent_by_id_resolved
    list_resolved = list_agents_resolved
    list = list_agents


def _agent_exists(agent_id: str) -> ConflictError:
    return ConflictError(f"Agent already exists: {agent_id}", details={"id": agent_id})
