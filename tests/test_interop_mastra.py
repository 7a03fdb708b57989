"""Both directions with the framework itself (issue 19 item 6; fidelity-1.71.md §1–§4).

The library shares its tables with Mastra, so these tests run Mastra 1.71's own packages
(``@mastra/core`` 1.71.0, ``@mastra/libsql`` 1.23.1, ``@mastra/pg`` 1.27.1, pinned in
``tests/interop/package.json``, installed by ``scripts/setup-test-env.sh``) through
``tests/interop/mastra.mjs`` on SQLite (``LibSQLStore``, a ``file:`` URL) and PostgreSQL
(``PostgresStore``).  One scenario, :data:`SCENARIO`, holds every value 1.71 added (message role
``signal``, the new score entity types, ``mcp_server_request`` / ``mcp_server`` /
``classifier_evaluation`` / ``tool_result_processor`` spans, workflow status ``skipped``) and the
records of the new methods' tables (a thread moved with ``update_thread_resource_id``, copies made
with ``copy_thread``, agent versions read with ``get_versions``, favourites in
``mastra_favorites``):

* the framework writes it (it also creates the tables) → the library reads every record back equal
  to what the framework itself reads;
* the library writes it (and creates the tables) → the framework reads every record back equal to
  what the library reads.

Each direction is one node process per backend (all records in one go).  Records are compared
field by field after one normalization (:func:`as_record`): camelCase keys of the framework's
records become the library's snake_case names, timestamps become ISO text to the millisecond, and
a field set to ``None`` counts as absent (the framework leaves out what it read as NULL).  Where the
two legitimately differ, the spec's rule is asserted instead (comments say where): light spans
(§2.1 [Δ]: libsql's getTraceLight returns more than the 14 keys), Mastra pg's getTrace (it reads 31
of the 42 span columns), the order of ``get_versions`` (§4.4 [I]) and favourites (§4.5: only
Mastra writes them).  A stored message ``type`` of ``"v2"`` reads as absent on both sides.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

from composite_store.composite import store_for_url
from composite_store.stores import WholeStore
from tests.conftest import unavailable
from tests.servers import DEFAULT_POSTGRES_URL, create_postgres_database

pytestmark = [pytest.mark.interop, pytest.mark.backends("sqlite", "postgres")]

INTEROP_DIR = Path(__file__).parent / "interop"
SCRIPT = INTEROP_DIR / "mastra.mjs"
#: The framework's packages and the versions the spec was written against.
PACKAGES = {"@mastra/core": "1.71.0", "@mastra/libsql": "1.23.1", "@mastra/pg": "1.27.1"}
#: The oldest node they run on here: they declare >= 22.13, 20 runs all these tests use, 18 lacks
#: the global ``crypto`` of ES modules (libsql's copyThread fails).
NODE_MIN_MAJOR = 20
#: Seconds one node process may take (it starts in about one).
NODE_TIMEOUT = 120

#: The span columns Mastra pg 1.27.1's ``getTrace`` selects (31 of the 42: it leaves out the
#: parent and root entity columns, the entity version ids, ``experimentId`` and ``requestContext``).
PG_TRACE_SPAN_KEYS = {"trace_id", "span_id", "parent_span_id", "name", "entity_type", "entity_id", "entity_name",
                      "user_id", "organization_id", "resource_id", "run_id", "session_id", "thread_id",
                      "request_id", "environment", "source", "service_name", "scope", "span_type", "attributes",
                      "metadata", "tags", "links", "input", "output", "error", "is_event", "started_at",
                      "ended_at", "created_at", "updated_at"}
#: The 14 keys of a light span (fidelity-1.71.md §2.1).
LIGHT_SPAN_KEYS = {"trace_id", "span_id", "parent_span_id", "name", "span_type", "is_event", "started_at",
                   "ended_at", "error", "entity_type", "entity_id", "entity_name", "created_at", "updated_at"}


def _text(text: str) -> dict:
    return {"format": 2, "parts": [{"type": "text", "text": text}]}


#: Every record, in the framework's wire form (camelCase, ISO timestamps), written by one side and
#: read by the other.  The library's own calls take the same records (its schemas accept the wire
#: form) and, for keyword arguments, their snake_case names.
SCENARIO: dict[str, list[dict]] = {
    "threads": [
        {"id": "th-1", "resourceId": "res-a", "title": "Support chat", "metadata": {"topic": "billing", "tier": 2},
         "createdAt": "2026-01-02T03:04:05.006Z", "updatedAt": "2026-01-02T03:04:05.006Z"},
    ],
    "messages": [
        {"id": "msg-1", "threadId": "th-1", "resourceId": "res-a", "role": "user", "type": "v2",
         "content": _text("My invoice is wrong"), "createdAt": "2026-01-02T03:04:06.000Z"},
        {"id": "msg-2", "threadId": "th-1", "resourceId": "res-a", "role": "assistant", "type": "v2",
         "content": _text("Let me check"), "createdAt": "2026-01-02T03:04:07.000Z"},
        # role "signal" (V3): new in 1.71.
        {"id": "msg-3", "threadId": "th-1", "resourceId": "res-a", "role": "signal", "type": "v2",
         "content": {**_text("user went idle"), "metadata": {"signal": "idle"}},
         "createdAt": "2026-01-02T03:04:08.000Z"},
    ],
    # update_thread_resource_id (M1): the thread and its messages move to res-b.
    "moves": [{"threadId": "th-1", "resourceId": "res-b"}],
    # copy_thread (M2): a title of "" counts as not given; the copies belong to the new thread's resource.
    "copies": [
        {"sourceThreadId": "th-1", "newThreadId": "th-copy", "title": "", "options": {"messageLimit": 2}},
        {"sourceThreadId": "th-1", "newThreadId": "th-archive", "resourceId": "res-c", "title": "Archived",
         "metadata": {"reason": "audit"}},
    ],
    # One score per score entity type 1.71 added (V2).
    "scores": [
        {"id": f"score-{entity_type}", "scorerId": "helpfulness", "entityId": "agent-1", "runId": "run-s",
         "entityType": entity_type, "entity": {"id": "agent-1"}, "scorer": {"id": "helpfulness", "name": "H"},
         "source": "LIVE", "score": 0.5 + index / 10, "reason": f"because {index}",
         "input": {"q": "hi"}, "output": {"a": "hello"}, "metadata": {"n": index},
         "traceId": "trace-mcp", "spanId": "span-mcp"}
        for index, entity_type in enumerate(("TRAJECTORY", "STEP", "EXTERNAL", "classifier_evaluation",
                                             "mcp_server_request"))
    ] + [
        # A score saved again under its id replaces the row, created_at included (S1).
        {"id": "score-TRAJECTORY", "scorerId": "helpfulness", "entityId": "agent-1", "runId": "run-s",
         "entityType": "TRAJECTORY", "entity": {"id": "agent-1"}, "scorer": {"id": "helpfulness"},
         "source": "TEST", "score": 0.95, "output": {"a": "re-scored"}},
    ],
    # The span and entity types 1.71 added (V1), in one trace.
    "spans": [
        {"traceId": "trace-mcp", "spanId": "span-root", "name": "agent run", "spanType": "agent_run",
         "entityType": "agent", "entityId": "agent-1", "entityName": "Support", "isEvent": False,
         "startedAt": "2026-01-02T03:04:05.000Z", "endedAt": "2026-01-02T03:04:09.000Z",
         "input": {"messages": [{"role": "user", "content": "hi"}]}, "output": {"text": "hello"},
         "attributes": {"agentId": "agent-1"}, "metadata": {"priority": "high"}, "tags": ["prod"],
         "resourceId": "res-a", "threadId": "th-1"},
        {"traceId": "trace-mcp", "spanId": "span-mcp", "parentSpanId": "span-root", "name": "mcp request",
         "spanType": "mcp_server_request", "entityType": "mcp_server", "entityId": "mcp-docs",
         "parentEntityType": "agent", "parentEntityId": "agent-1", "rootEntityType": "agent",
         "rootEntityId": "agent-1", "isEvent": False, "startedAt": "2026-01-02T03:04:06.000Z",
         "endedAt": "2026-01-02T03:04:07.000Z", "attributes": {"method": "tools/call"}},
        {"traceId": "trace-mcp", "spanId": "span-classify", "parentSpanId": "span-mcp", "name": "classify",
         "spanType": "classifier_evaluation", "entityType": "tool_result_processor", "entityId": "redactor",
         "parentEntityType": "mcp_server", "isEvent": False, "startedAt": "2026-01-02T03:04:06.500Z",
         "endedAt": "2026-01-02T03:04:06.600Z", "error": {"message": "label missing", "id": "E1"}},
        # A trace without any error, for has_child_error=False (B1).
        {"traceId": "trace-ok", "spanId": "span-run", "name": "billing-flow", "spanType": "workflow_run",
         "entityType": "workflow_run", "entityId": "billing-flow", "isEvent": False,
         "startedAt": "2026-01-02T03:05:00.000Z", "endedAt": "2026-01-02T03:05:01.000Z", "runId": "run-1"},
    ],
    "agents": [
        {"id": f"agent-{n}", "name": f"Agent {n}", "instructions": f"Be helpful, {n}",
         "model": {"provider": "openai", "name": "gpt-4o-mini"}, "metadata": {"team": "support"},
         "authorId": "author-1", "visibility": "public"}
        for n in (1, 2, 3)
    ],
    "versions": [
        {"id": "agent-1-v2", "agentId": "agent-1", "versionNumber": 2, "name": "Agent 1",
         "instructions": [{"type": "text", "content": "Be brief"}],
         "model": {"provider": "openai", "name": "gpt-4o"}, "changedFields": ["instructions", "model"],
         "changeMessage": "shorter"},
        {"id": "agent-3-v2", "agentId": "agent-3", "versionNumber": 2, "name": "Agent 3b",
         "instructions": "Be formal", "model": {"provider": "anthropic", "name": "claude"},
         "skillsFormat": "markdown"},
    ],
    # Rows of mastra_favorites (A2): only the framework writes them (the library reads them).
    "favorites": [{"userId": "u1", "entityType": "agent", "entityId": "agent-2"}],
    # Workflow run status "skipped" and step statuses (V4).
    "workflowRuns": [
        {"workflowName": "billing-flow", "runId": "run-1", "resourceId": "res-a",
         "snapshot": {"runId": "run-1", "status": "skipped", "value": {}, "context": {
             "input": {"n": 1}, "check": {"status": "skipped"}, "notify": {"status": "canceled"}},
             "activePaths": [], "serializedStepGraph": [], "suspendedPaths": {}, "waitingPaths": {},
             "timestamp": 1767323045000}},
        {"workflowName": "billing-flow", "runId": "run-2", "resourceId": "res-a",
         "snapshot": {"runId": "run-2", "status": "running", "value": {}, "context": {"input": {"n": 2}},
                      "activePaths": [0], "serializedStepGraph": [], "suspendedPaths": {}, "waitingPaths": {},
                      "timestamp": 1767323046000}},
    ],
}

#: What both sides read back, by id.
READ = {
    "threads": ["th-1", "th-copy", "th-archive"],
    "resources": ["res-a", "res-b", "res-c"],
    "scores": list(dict.fromkeys(score["id"] for score in SCENARIO["scores"])),
    "scoreEntityId": "agent-1",
    "scoreEntityTypes": ["TRAJECTORY", "STEP", "EXTERNAL", "classifier_evaluation", "mcp_server_request"],
    "traces": ["trace-mcp", "trace-ok"],
    "agents": [agent["id"] for agent in SCENARIO["agents"]],
    "favoriteUsers": ["u1"],
    "workflowRuns": [run["runId"] for run in SCENARIO["workflowRuns"]],
    "workflowStatuses": ["skipped", "running"],
}


# ---------------------------------------------------------------------------- the framework's side


def framework_ready() -> str | None:
    """Why the framework cannot run here (``None`` when it can)."""
    if shutil.which("node") is None:
        return "the interop tests need node (bash scripts/setup-test-env.sh installs it)"
    version = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    if int(version.lstrip("v").split(".")[0] or 0) < NODE_MIN_MAJOR:
        return f"the interop tests need node >= {NODE_MIN_MAJOR}, found {version}"
    for package, version in PACKAGES.items():
        manifest = INTEROP_DIR / "node_modules" / package / "package.json"
        if not manifest.is_file():
            return (f"the interop tests need {package} in tests/interop/node_modules "
                    "(bash scripts/setup-test-env.sh runs npm ci there)")
        found = json.loads(manifest.read_text())["version"]
        if found != version:
            return f"the interop tests need {package} {version}, tests/interop has {found} (run npm ci there)"
    return None


def run_framework(url: str, *, write: dict, read: dict) -> dict:
    """One node process: the framework writes ``write``, then reads ``read`` back (its "view")."""
    completed = subprocess.run(["node", str(SCRIPT), url], input=json.dumps({"write": write, "read": read}),
                               capture_output=True, text=True, timeout=NODE_TIMEOUT, cwd=INTEROP_DIR)
    assert completed.returncode == 0, f"the framework failed:\n{completed.stderr[-4000:]}"
    return json.loads(completed.stdout)


def snake(key: str) -> str:
    """``resourceId`` → ``resource_id``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def stamp(value: Any) -> Any:
    """Timestamps as the framework prints them: ISO text in UTC to the millisecond."""
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    return value


def as_record(row: dict | None) -> dict | None:
    """A record of either side in one form: snake_case top-level keys (nested JSON is the
    caller's data and stays as it is), timestamps as ISO text, fields that are ``None`` left out."""
    if row is None:
        return None
    return {snake(key): stamp(value) for key, value in row.items() if value is not None}


def as_records(rows: list[dict]) -> list[dict]:
    """:func:`as_record` of each row."""
    return [as_record(row) for row in rows]


def framework_view(view: dict) -> dict:
    """The framework's view (:func:`run_framework`) in the comparable form."""
    def trace(found: dict | None) -> dict | None:
        return None if found is None else {"trace_id": found["traceId"], "spans": as_records(found["spans"])}

    return {
        "threads": {key: as_record(row) for key, row in view["threads"].items()},
        "messages": {key: as_records(rows) for key, rows in view["messages"].items()},
        "threads_by_resource": view["threadsByResource"],
        "scores": {key: as_record(row) for key, row in view["scores"].items()},
        "score_ids_by_entity_type": view["scoreIdsByEntityType"],
        "traces": {key: trace(found) for key, found in view["traces"].items()},
        "trace_structures": {key: trace(found) for key, found in view["traceStructures"].items()},
        "trace_ids_by_child_error": {key == "true": ids for key, ids in view["traceIdsByChildError"].items()},
        "agents": {key: as_record(row) for key, row in view["agents"].items()},
        "versions": as_records(view["versions"]),
        "agents_pinned": view["agentsPinned"],
        "agents_favorited_only": view["agentsFavoritedOnly"],
        "workflow_runs": {key: as_record(row) for key, row in view["workflowRuns"].items()},
        "workflow_run_ids_by_status": view["workflowRunIdsByStatus"],
    }


# ---------------------------------------------------------------------------- the library's side


def library_write(store: WholeStore) -> dict:
    """Write :data:`SCENARIO` (but the favourites, which only Mastra writes) through the library."""
    memory, scores, observability, agents, workflows = (
        store.get_store(key) for key in ("memory", "scores", "observability", "agents", "workflows"))
    for thread in SCENARIO["threads"]:
        memory.save_thread(thread=thread)
    memory.save_messages(messages=SCENARIO["messages"])
    for move in SCENARIO["moves"]:
        memory.update_thread_resource_id(thread_id=move["threadId"], resource_id=move["resourceId"])
    copies = {}
    for request in SCENARIO["copies"]:
        options = request.get("options", {})
        arguments = {snake(key): value for key, value in request.items() if key != "options"}
        copied = memory.copy_thread(**arguments, message_limit=options.get("messageLimit"))
        copies[copied["thread"]["id"]] = copied["message_id_map"]
    for score in SCENARIO["scores"]:
        scores.save_score(score=score)
    for span in SCENARIO["spans"]:
        observability.create_span(span=span)
    for agent in SCENARIO["agents"]:
        agents.create_agent(agent=agent)
    for version in SCENARIO["versions"]:
        agents.create_version(**{snake(key): value for key, value in version.items()})
    for run in SCENARIO["workflowRuns"]:
        workflows.persist_workflow_snapshot(**{snake(key): value for key, value in run.items()})
    return copies


def library_view(store: WholeStore) -> dict:
    """What the library reads of :data:`READ`, through its public API, in the comparable form."""
    memory, scores, observability, agents, workflows = (
        store.get_store(key) for key in ("memory", "scores", "observability", "agents", "workflows"))

    def trace(found: dict | None) -> dict | None:
        return None if found is None else {"trace_id": found["trace_id"], "spans": as_records(found["spans"])}

    version_ids = []
    for agent_id in READ["agents"]:
        page = agents.list_versions(agent_id=agent_id, per_page=False)
        version_ids += sorted(version["id"] for version in page.items)
    # Unknown ids are left out, each version comes once, in the order asked for (§4.4).
    versions = agents.get_versions(version_ids=[*version_ids, "no-such-version", version_ids[0]])
    assert [version["id"] for version in versions] == version_ids

    def pinned(user: str) -> list[str]:
        page = agents.list_agents(pin_favorited_for=user, per_page=False, order_by={"field": "created_at",
                                                                                  "direction": "ASC"})
        return [agent["id"] for agent in page.items]

    def favorited_only(user: str) -> dict:
        page = agents.list_agents(pin_favorited_for=user, favorited_only=True, per_page=False)
        return {"ids": [agent["id"] for agent in page.items], "total": page.total}

    return {
        "threads": {key: as_record(memory.get_thread_by_id(thread_id=key)) for key in READ["threads"]},
        "messages": {key: as_records(memory.list_messages(thread_id=key, per_page=False).items)
                     for key in READ["threads"]},
        "threads_by_resource": {key: [thread["id"] for thread in memory.list_threads(resource_id=key,
                                                                                     per_page=False).items]
                                for key in READ["resources"]},
        "scores": {key: as_record(scores.get_score_by_id(id=key)) for key in READ["scores"]},
        "score_ids_by_entity_type": {key: [score["id"] for score in scores.list_scores_by_entity_id(
            entity_id=READ["scoreEntityId"], entity_type=key).items] for key in READ["scoreEntityTypes"]},
        "traces": {key: trace(observability.get_trace(trace_id=key)) for key in READ["traces"]},
        "trace_structures": {key: trace(observability.get_structure(trace_id=key)) for key in READ["traces"]},
        "trace_ids_by_child_error": {flag: [root["trace_id"] for root in observability.list_traces(
            filters={"has_child_error": flag}, per_page=100).items] for flag in (True, False)},
        "agents": {key: as_record(agents.get_agent_by_id(id=key)) for key in READ["agents"]},
        "versions": as_records(versions),
        "agents_pinned": {user: pinned(user) for user in READ["favoriteUsers"]},
        "agents_favorited_only": {user: favorited_only(user) for user in READ["favoriteUsers"]},
        "workflow_runs": {key: as_record(workflows.get_workflow_run_by_id(run_id=key))
                          for key in READ["workflowRuns"]},
        "workflow_run_ids_by_status": {key: [run["run_id"] for run in workflows.list_workflow_runs(status=key).items]
                                       for key in READ["workflowStatuses"]},
    }


# ---------------------------------------------------------------------------- the comparison


def only(spans: list[dict], keys: set[str]) -> list[dict]:
    """The spans with only these fields."""
    return [{key: value for key, value in span.items() if key in keys} for span in spans]


def assert_same(library: dict, framework: dict, *, backend: str) -> None:
    """Every record the two sides read of one database is equal, field by field."""
    library, framework = copy.deepcopy(library), copy.deepcopy(framework)
    if backend == "postgres":
        # Mastra pg's getTrace reads fewer columns than the span has (PG_TRACE_SPAN_KEYS): the
        # traces are compared on those; assert_scenario checks the others against SCENARIO.
        for found in library["traces"].values():
            found["spans"] = only(found["spans"], PG_TRACE_SPAN_KEYS)
    # get_structure returns exactly the 14 keys of a light span (§2.1); libsql's getTraceLight
    # returns every column but the payloads ([Δ] §2.1), so the framework's light spans are
    # compared on those 14 keys.
    for found in library["trace_structures"].values():
        for span in found["spans"]:
            assert set(span) <= LIGHT_SPAN_KEYS, sorted(set(span) - LIGHT_SPAN_KEYS)
    for found in framework["trace_structures"].values():
        found["spans"] = only(found["spans"], LIGHT_SPAN_KEYS)
    # get_versions: the library keeps the order of the ids asked for (§4.4 [I]); Mastra's order is
    # unspecified, so its versions are compared by id.
    order = [version["id"] for version in library["versions"]]
    assert sorted(version["id"] for version in framework["versions"]) == sorted(order)
    framework["versions"].sort(key=lambda version: order.index(version["id"]))
    differences = [f"{path}: library {mine!r} != framework {theirs!r}"
                   for path, mine, theirs in differing("", library, framework)]
    assert not differences, "\n".join(differences)


def differing(path: str, mine: Any, theirs: Any) -> Iterator[tuple[str, Any, Any]]:
    """The paths where two views differ, down to the fields of each record."""
    if isinstance(mine, dict) and isinstance(theirs, dict):
        for key in sorted(mine.keys() | theirs.keys()):
            yield from differing(f"{path}.{key}", mine.get(key, "<absent>"), theirs.get(key, "<absent>"))
    elif isinstance(mine, list) and isinstance(theirs, list) and len(mine) == len(theirs):
        for index, (one, other) in enumerate(zip(mine, theirs)):
            yield from differing(f"{path}[{index}]", one, other)
    elif mine != theirs:
        yield path, mine, theirs


def assert_scenario(view: dict, copies: dict[str, dict[str, str]]) -> None:
    """The values of :data:`SCENARIO` that 1.71 added, as the spec says they read back."""
    moved = view["threads"]["th-1"]
    assert moved["resource_id"] == "res-b"
    assert moved["created_at"] == "2026-01-02T03:04:05.006Z"  # kept by the move (§4.1)
    assert [message["role"] for message in view["messages"]["th-1"]] == ["user", "assistant", "signal"]
    assert {message["resource_id"] for message in view["messages"]["th-1"]} == {"res-b"}
    assert all("type" not in message for message in view["messages"]["th-1"])  # stored "v2" reads as absent
    assert view["threads_by_resource"] == {"res-a": [], "res-b": ["th-copy", "th-1"], "res-c": ["th-archive"]}

    copied, archive = view["threads"]["th-copy"], view["threads"]["th-archive"]
    assert copied["title"] == "Clone of Support chat"  # a title of "" counts as not given (§4.2)
    assert copied["resource_id"] == "res-b"
    assert copied["metadata"]["clone"]["sourceThreadId"] == "th-1"
    assert archive["title"] == "Archived" and archive["metadata"]["reason"] == "audit"
    assert copies["th-copy"].keys() == {"msg-2", "msg-3"}  # the latest two
    assert [message["id"] for message in view["messages"]["th-copy"]] == [copies["th-copy"]["msg-2"],
                                                                           copies["th-copy"]["msg-3"]]
    assert len(copies["th-archive"]) == 3
    # Every copy belongs to the new thread's resource (the clone fix of §4.2).
    assert {message["resource_id"] for message in view["messages"]["th-archive"]} == {"res-c"}
    assert [message["role"] for message in view["messages"]["th-archive"]] == ["user", "assistant", "signal"]

    # Every field written of a score, a span or a version reads back as written.
    for kind, records, key in (("scores", view["scores"].values(), "id"),
                               ("spans", [span for found in view["traces"].values() for span in found["spans"]],
                                "span_id"),
                               ("versions", view["versions"], "id")):
        found = {record[key]: record for record in records}
        last = {given[key]: given for given in map(as_record, SCENARIO[kind])}  # the last save of an id wins
        for record_id, given in last.items():
            assert {field: found[record_id].get(field) for field in given} == given, (kind, record_id)
    assert view["trace_ids_by_child_error"] == {True: ["trace-mcp"], False: ["trace-ok"]}  # B1
    resaved = view["scores"]["score-TRAJECTORY"]
    assert resaved["created_at"] == resaved["updated_at"]  # the re-save reset created_at (S1)
    assert sorted(version["version_number"] for version in view["versions"]) == [1, 1, 1, 2, 2]
    assert view["agents_pinned"] == {"u1": ["agent-2", "agent-1", "agent-3"]}
    assert view["agents_favorited_only"] == {"u1": {"ids": ["agent-2"], "total": 1}}
    assert view["agents"]["agent-2"]["favorite_count"] == 1  # kept by the framework's favorite()

    run = view["workflow_runs"]["run-1"]
    assert run["snapshot"]["status"] == "skipped" and run["resource_id"] == "res-a"
    assert view["workflow_run_ids_by_status"] == {"skipped": ["run-1"], "running": ["run-2"]}
    assert view["score_ids_by_entity_type"] == {entity_type: [f"score-{entity_type}"]
                                                for entity_type in READ["scoreEntityTypes"]}


def assert_tracing_reads(store: WholeStore) -> None:
    """The tracing reads 1.71 added (§2), on the spans of :data:`SCENARIO` as the database holds
    them (Mastra's legacy adapters offer only getTraceLight of these, compared in assert_same)."""
    observability = store.get_store("observability")

    def ids(spans: list[dict]) -> list[str]:
        return [span["span_id"] for span in spans]

    assert ids(observability.get_spans(trace_id="trace-mcp", span_ids=["span-classify", "nope", "span-root"])
               ["spans"]) == ["span-root", "span-classify"]
    assert ids(observability.get_branch(trace_id="trace-mcp", span_id="span-mcp")["spans"]) == [
        "span-mcp", "span-classify"]
    assert ids(observability.get_branch(trace_id="trace-mcp", span_id="span-mcp", depth=0)["spans"]) == ["span-mcp"]
    # Branch anchors: agent_run, mcp_server_request (new in 1.71) and workflow_run; not classifier_evaluation.
    assert sorted(ids(observability.list_branches().items)) == ["span-mcp", "span-root", "span-run"]
    (branch,) = observability.list_branches(filters={"span_type": "mcp_server_request"}).items
    assert (branch["span_id"], branch["entity_type"], branch["status"]) == ("span-mcp", "mcp_server", "success")
    light = {row["trace_id"]: row for row in observability.list_traces_light().items}
    assert light.keys() == {"trace-mcp", "trace-ok"}
    assert len(light["trace-mcp"]) == 17 and light["trace-mcp"]["input_preview"] == "hi"
    assert light["trace-mcp"]["metadata"] == {"priority": "high"}


# ---------------------------------------------------------------------------- the tests


@pytest.fixture
def database(backend: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A new, empty database of the backend: ``(library URL, framework URL)``."""
    reason = framework_ready()
    if reason is not None:
        unavailable(backend, reason)
    if backend == "sqlite":
        path = tmp_path / "shared.db"
        yield f"sqlite:///{path}", f"file:{path}"
        return
    server = os.environ.get("COMPOSITE_STORE_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    try:
        url, drop = create_postgres_database(server, prefix="csinterop")
    except Exception as exc:  # noqa: BLE001 - any failure means "unreachable"
        unavailable("postgres", str(exc))
    try:
        yield url, url
    finally:
        drop()


@pytest.fixture
def open_store() -> Iterator[Any]:
    """Opens library stores, closed after the test."""
    opened: list[WholeStore] = []

    def open_(url: str) -> WholeStore:
        store = store_for_url(url)
        opened.append(store)
        store.init()
        return store

    yield open_
    for store in opened:
        store.close()


def test_framework_writes_library_reads(backend: str, database: tuple[str, str], open_store: Any) -> None:
    """Mastra creates the tables and writes every record; the library (whose ``init()`` opens
    the tables Mastra laid out) reads each back equal to what Mastra reads."""
    library_url, framework_url = database
    framework = run_framework(framework_url, write=SCENARIO, read=READ)
    copies = framework["written"]["copies"]
    store = open_store(library_url)

    library = library_view(store)
    assert_same(library, framework_view(framework), backend=backend)
    assert_scenario(library, copies)
    assert_tracing_reads(store)


def test_library_writes_framework_reads(backend: str, database: tuple[str, str], open_store: Any) -> None:
    """The library creates the tables and writes every record; Mastra (whose ``init()`` opens
    the tables the library laid out, ``mastra_favorites`` included) reads each back equal to what
    the library reads.  The favourite row is Mastra's own write: the library never writes
    favourites (§4.5), so Mastra adds it to the table the library created, before reading."""
    library_url, framework_url = database
    store = open_store(library_url)
    copies = library_write(store)

    framework = run_framework(framework_url, write={"favorites": SCENARIO["favorites"]}, read=READ)
    library = library_view(store)
    assert_same(library, framework_view(framework), backend=backend)
    assert_scenario(library, copies)
    assert_tracing_reads(store)
