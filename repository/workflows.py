"""The workflows domain: one snapshot per workflow run, so suspended runs resume after a restart
(spec: workflows.md)."""

from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import Any, Callable, Iterable, Iterator

import marshmallow
import peewee

from .models.workflows import build_workflow_models

from .base import ITER_CHUNK, DomainRepository, Keyset, check_chunk_size, fetch_page, operation, streaming
from .errors import ConflictError
from .page import Page
from .retention import Prunable, RetentionTable
from .schemas.base import JSONObject, JSONValue, Timestamp, flatten_errors, load_into
from .schemas.workflows import WorkflowRunSchema
from .validation import Problems, check_id, check_page
from .values import UNSET, JSONText, deep_copy_json, encoded_json_object, epoch_ms, is_storable_text, utc_now

logger = logging.getLogger("composite_store")

_RUN_SCHEMA = WorkflowRunSchema()
_OBJECT_FIELD = JSONObject(allow_none=True)
_VALUE_FIELD = JSONValue(allow_none=True)
_TIMESTAMP_FIELD = Timestamp()

#: Where a suspended step keeps the thread id of its agent stream (under ``context.<step>``).
SUSPENDED_THREAD_PATH = ("suspendPayload", "__streamState", "messageList", "memoryInfo", "threadId")
#: Where the run's input keeps its thread id (under ``context``).
INPUT_THREAD_PATH = ("input", "messageListState", "memoryInfo", "threadId")

#: The slot value that marks a list-output slot whose step has not finished yet.
PENDING_KEY = "__mastra_pending__"


# --------------------------------------------------------------------------- snapshot logic

def empty_snapshot(run_id: str, now_ms: int) -> dict[str, Any]:
    """The snapshot a run starts from when ``update_workflow_results`` finds no row (§3.2)."""
    return {"runId": run_id, "status": "pending", "value": {}, "context": {}, "serializedStepGraph": [],
            "activePaths": [], "activeStepsPath": {}, "suspendedPaths": {}, "resumeLabels": {},
            "waitingPaths": {}, "requestContext": {}, "timestamp": now_ms}


def _dig(value: Any, path: Iterable[str]) -> Any:
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def run_thread_matches(snapshot: Any, thread_id: str) -> bool:
    """Whether the run's thread id (§3.2) is ``thread_id``: at a suspended step's stream state or
    at the input's message list."""
    context = snapshot.get("context") if isinstance(snapshot, dict) else None
    if not isinstance(context, dict):
        return False
    for step in context.values():
        if isinstance(step, dict) and step.get("status") == "suspended" \
                and _dig(step, SUSPENDED_THREAD_PATH) == thread_id:
            return True
    return _dig(context, INPUT_THREAD_PATH) == thread_id


def _is_pending(slot: Any) -> bool:
    return isinstance(slot, dict) and len(slot) == 1 and slot.get(PENDING_KEY) is True


def _is_suspended(slot: Any) -> bool:
    return isinstance(slot, dict) and slot.get("status") == "suspended" \
        and ("suspendPayload" in slot or "suspendedAt" in slot)


def _add_step_result(snapshot: dict[str, Any], step_id: str, result: dict[str, Any],
                     request_context: dict[str, Any] | None) -> dict[str, Any]:
    """``snapshot`` (a valid one, changed in place and returned) with ``result`` stored as step
    ``step_id``'s (:func:`merge_step_result`) and ``request_context`` merged into its
    ``requestContext`` (§4.4)."""
    context = snapshot["context"]
    context[step_id] = merge_step_result(context.get(step_id), result)
    stored = snapshot.get("requestContext")
    snapshot["requestContext"] = {**(stored if isinstance(stored, dict) else {}), **(request_context or {})}
    return snapshot


def merge_step_result(stored: Any, result: dict[str, Any]) -> dict[str, Any]:
    """The new ``context[step_id]`` after storing ``result`` over ``stored`` (§4.4 step 4).

    Two list outputs merge slot by slot (steps that run once per list item); anything else is
    replaced by ``result``.
    """
    if not (isinstance(stored, dict) and isinstance(stored.get("output"), list)
            and isinstance(result.get("output"), list)):
        return result
    old, incoming = stored["output"], result["output"]
    pending = any(_is_pending(slot) for slot in incoming)
    merged = []
    for index, slot in enumerate(incoming):
        has_old = index < len(old)
        kept = old[index] if has_old else None
        if _is_pending(slot):
            merged.append(None if not has_old or kept is None or _is_pending(kept) or _is_suspended(kept) else kept)
        elif slot is not None and not pending:
            merged.append(slot)
        else:
            merged.append(kept)
    merged.extend(old[len(incoming):])
    if pending:
        # A pending marker means "not finished": the rest of the incoming result is ignored.
        return {**stored, "output": merged}
    return {**stored, **result, "output": merged}


# --------------------------------------------------------------------------- persist's row

def _is_id(value: Any, strip_nul: bool) -> bool:
    """A non-empty ``str`` stored as it is (nothing for :meth:`Backend.clean` to remove)."""
    return type(value) is str and value != "" and (
        not strip_nul and value.isascii() or is_storable_text(value, strip_nul))


def fast_run_row(*, workflow_name: Any, run_id: Any, snapshot: Any, resource_id: Any,
                 strip_nul: bool) -> dict[str, Any] | None:
    """The row ``persist_workflow_snapshot`` writes (without timestamps) for the common, valid
    call, checked the quick way; ``None`` when not vouched for (then :func:`schema_run_row`).

    The snapshot is encoded once (:func:`encoded_json_object`), and that text is stored.  Gives
    exactly what :func:`schema_run_row` gives (a property test checks it).
    """
    if not (_is_id(workflow_name, strip_nul) and _is_id(run_id, strip_nul)):
        return None
    if resource_id is not None and not _is_id(resource_id, strip_nul):
        return None
    encoded = encoded_json_object(snapshot, strip_nul)
    if encoded is None:
        return None
    row = {"workflow_name": workflow_name, "run_id": run_id, "snapshot": encoded[0]}
    if resource_id is not None:
        row["resource_id"] = resource_id
    return row


def schema_run_row(problems: Problems, clean: Callable[[Any], Any], *, workflow_name: Any, run_id: Any,
                   snapshot: Any, resource_id: Any, created_at: Any = None,
                   updated_at: Any = None) -> dict[str, Any] | None:
    """The row ``persist_workflow_snapshot`` writes, through :class:`WorkflowRunSchema`; every
    problem goes to ``problems`` (then ``None``).  Timestamps only when given."""
    data = {"workflow_name": workflow_name, "run_id": run_id, "snapshot": snapshot, "resource_id": resource_id}
    for name, value in (("created_at", created_at), ("updated_at", updated_at)):
        if value is not None:
            data[name] = value
    run = load_into(problems, _RUN_SCHEMA, data)
    if run is None:
        return None
    row = {"workflow_name": clean(run["workflow_name"]), "run_id": clean(run["run_id"]),
           "snapshot": clean(run["snapshot"])}
    for name in ("created_at", "updated_at"):
        if run.get(name):
            row[name] = run[name]
    if run["resource_id"] is not None:
        # Left out of the row when None, so an existing run keeps its stored resource id.
        row["resource_id"] = clean(run["resource_id"])
    return row


# --------------------------------------------------------------------------- per-backend SQL

class _Dialect:
    """What this domain's SQL looks like on one backend: the two JSON filters (the table and its
    key, ``Meta.table_key``, are the backend's).

    A filter returns ``None`` when the backend cannot evaluate it; the repository then filters
    the decoded snapshots itself.
    """

    def status_condition(self, repository: "WorkflowsRepository", status: str) -> peewee.Node | None:
        """The snapshot's top-level ``status`` is the string ``status``."""
        return None

    def thread_condition(self, repository: "WorkflowsRepository", thread_id: str) -> peewee.Node | None:
        """The run's thread id (§3.2) is ``thread_id`` (see :func:`run_thread_matches`)."""
        return None

    def step_key(self, step_id: str) -> str | None:
        """How :meth:`with_step_result` names step ``step_id`` (a bound parameter), or ``None``
        where this database cannot set it in SQL: :meth:`update_workflow_results` then reads,
        merges and writes the snapshot."""
        return None

    def with_step_result(self, snapshot: Any, step_key: peewee.Node, result: peewee.Node,
                         request_context: peewee.Node) -> peewee.Node:
        """The valid ``snapshot`` (:meth:`has_context`) with the JSON text ``result`` stored as
        step ``step_key``'s (:meth:`step_key`, in place where the step exists, else last) and the
        members of the JSON object text ``request_context`` set on its ``requestContext`` (an
        empty object where it holds anything else), as :func:`_add_step_result` changes it for a
        result whose output is not a list (which replaces the stored step)."""
        raise NotImplementedError

    def has_context(self, snapshot: Any) -> peewee.Node:
        """``snapshot`` is a JSON object with a ``context`` object (:meth:`_stored_snapshot`)."""
        raise NotImplementedError


#: A character a step id quoted in a JSON path cannot hold as written (:meth:`_SQLiteDialect.step_key`).
_UNQUOTABLE_KEY = re.compile(r'[\x00-\x1f"\\]')


def _json_path(*keys: str) -> str:
    return "$." + ".".join(f'"{key}"' for key in keys)


class _SQLiteDialect(_Dialect):
    def status_condition(self, repository: "WorkflowsRepository", status: str) -> peewee.Node:
        document = repository.backend.json_text(repository.models.snapshot.snapshot)
        return peewee.fn.json_extract(document, "$.status") == status

    def thread_condition(self, repository: "WorkflowsRepository", thread_id: str) -> peewee.Node:
        document = repository.backend.json_text(repository.models.snapshot.snapshot)
        # json_extract raises on text that is not JSON, so only object steps are looked into.
        suspended = peewee.NodeList((
            peewee.SQL("EXISTS (SELECT 1 FROM json_each("), document,
            peewee.SQL(", ?) AS step WHERE json_extract(CASE WHEN step.type = 'object' THEN step.value END, ?) = ? "
                       "AND json_extract(CASE WHEN step.type = 'object' THEN step.value END, ?) = ?)",
                       ["$.context", "$.status", "suspended", _json_path(*SUSPENDED_THREAD_PATH), thread_id]),
        ), glue="")
        from_input = peewee.fn.json_extract(document, _json_path("context", *INPUT_THREAD_PATH)) == thread_id
        return peewee.NodeList((peewee.SQL("("), suspended, peewee.SQL(" OR "), from_input, peewee.SQL(")")),
                               glue="")

    def step_key(self, step_id: str) -> str | None:
        # A JSON path: a quoted label cannot hold '"', and it matches a key's text as written, so
        # keys the JSON text escapes ('\\', control characters) are left to the Python merge.
        if _UNQUOTABLE_KEY.search(step_id):
            return None
        return _json_path("context", step_id)

    def with_step_result(self, snapshot: Any, step_key: peewee.Node, result: peewee.Node,
                         request_context: peewee.Node) -> peewee.Node:
        # json_patch is a shallow merge for the members merges_json_members accepts.
        stored = peewee.Case(None, [(peewee.fn.json_type(snapshot, "$.requestContext") == "object",
                                     peewee.fn.json_extract(snapshot, "$.requestContext"))], "{}")
        return peewee.fn.json_set(snapshot, step_key, peewee.fn.json(result),
                                  "$.requestContext", peewee.fn.json_patch(stored, request_context))

    def has_context(self, snapshot: Any) -> peewee.Node:
        # json_type raises on text that is not JSON: only valid text is looked into.
        return peewee.Case(None, [(peewee.fn.json_valid(snapshot), peewee.fn.json_type(snapshot, "$.context"))],
                           None) == "object"


class _PostgresDialect(_Dialect):
    SUSPENDED_THREAD = ('$."context".* ? (@."status" == "suspended").'
                        + ".".join(f'"{key}"' for key in SUSPENDED_THREAD_PATH) + " ? (@ == $thread)")
    INPUT_THREAD = _json_path("context", *INPUT_THREAD_PATH) + " ? (@ == $thread)"

    @staticmethod
    def _document(repository: "WorkflowsRepository") -> peewee.Node:
        # The cast is a no-op on jsonb and parses older databases' text snapshots.
        return peewee.Cast(repository.models.snapshot.snapshot, "jsonb")

    def status_condition(self, repository: "WorkflowsRepository", status: str) -> peewee.Node:
        return peewee.Expression(self._document(repository), "->>", peewee.Value("status")) == status

    def step_key(self, step_id: str) -> list[str]:
        return ["context", step_id]  # a text[] path names any key

    def with_step_result(self, snapshot: Any, step_key: peewee.Node, result: peewee.Node,
                         request_context: peewee.Node) -> peewee.Node:
        # jsonb_set replaces or adds the member; jsonb's || on two objects is the shallow merge.
        document = peewee.Cast(snapshot, "jsonb")
        stored = peewee.Expression(document, "->", peewee.Value("requestContext"))
        stored = peewee.Case(None, [(peewee.fn.jsonb_typeof(stored) == "object", stored)],
                             peewee.Cast(peewee.Value("{}", converter=str), "jsonb"))
        with_step = peewee.fn.jsonb_set(document, peewee.Cast(step_key, "text[]"), peewee.Cast(result, "jsonb"))
        return peewee.fn.jsonb_set(with_step, peewee.Cast(peewee.Value("{requestContext}", converter=str), "text[]"),
                                   peewee.Expression(stored, "||", peewee.Cast(request_context, "jsonb")))

    def has_context(self, snapshot: Any) -> peewee.Node:
        # Every stored snapshot casts to jsonb (an index of init() reads it as jsonb); -> is NULL
        # on anything but an object.
        context = peewee.Expression(peewee.Cast(snapshot, "jsonb"), "->", peewee.Value("context"))
        return peewee.fn.jsonb_typeof(context) == "object"

    def thread_condition(self, repository: "WorkflowsRepository", thread_id: str) -> peewee.Node:
        variables = peewee.fn.jsonb_build_object("thread", peewee.Cast(peewee.Value(thread_id), "text"))
        document = self._document(repository)
        return (peewee.fn.jsonb_path_exists(document, peewee.Cast(peewee.Value(self.SUSPENDED_THREAD), "jsonpath"),
                                            variables)
                | peewee.fn.jsonb_path_exists(document, peewee.Cast(peewee.Value(self.INPUT_THREAD), "jsonpath"),
                                              variables))


class _ClickHouseDialect(_Dialect):
    def status_condition(self, repository: "WorkflowsRepository", status: str) -> peewee.Node | None:
        # Snapshots are not written scalars first: 18.16 leaves the filter to Python.
        return repository.backend.json_members_equal(repository.models.snapshot.snapshot, {"status": status})


_DIALECTS: dict[str, _Dialect] = {"SQLITE": _SQLiteDialect(), "PG": _PostgresDialect(),
                                  "CLICKHOUSE": _ClickHouseDialect()}


# --------------------------------------------------------------------------- the repository

class WorkflowsRepository(Prunable, DomainRepository):
    """Workflow run snapshots: persist, load, list, and atomic step/state updates.

    Example::

        workflows = storage.get_store("workflows")
        workflows.persist_workflow_snapshot(workflow_name="wf", run_id="run-1",
                                            snapshot={"status": "running", "context": {}})
        context = workflows.update_workflow_results(workflow_name="wf", run_id="run-1",
                                                    step_id="step-1", result={"status": "success"})
        page = workflows.list_workflow_runs(workflow_name="wf", status="running")
    """

    domain = "workflows"
    #: Retention (fidelity-1.71 §5): runs by ``updatedAt``, whatever their status.
    retention_tables = (RetentionTable(key="workflow_snapshot", model="snapshot", anchor="updated_at",
                                       aliases=("workflowSnapshot",)),)

    def build_models(self, database: peewee.DatabaseProxy) -> Any:
        return build_workflow_models(database)

    @property
    def _dialect(self) -> _Dialect:
        return _DIALECTS[self.backend.name]

    # ------------------------------------------------------------------ rows and records

    @staticmethod
    def _lock_key(workflow_name: str, run_id: str) -> tuple[str, str, str]:
        return ("workflow_run", workflow_name, run_id)

    def _row(self, values: dict[str, Any]) -> dict[str, Any]:
        """A row to write; ClickHouse's ``id`` column holds the run id."""
        if "row_id" in self.models.snapshot._meta.fields:
            values["row_id"] = values["run_id"]
        return values

    def full_row(self, model: type[peewee.Model], row: dict[str, Any]) -> dict[str, Any]:
        return self._row(row) if model is self.models.snapshot else row

    def _run_row(self, workflow_name: str, run_id: str, *, lock: bool = False,
                 versioned: bool = False) -> dict[str, Any] | None:
        """The run's row, locked (``lock``) or with its ``row_version`` (``versioned``)."""
        Run, backend = self.models.snapshot, self.backend

        def build() -> peewee.ModelSelect:
            query = backend.select(Run).where((Run.workflow_name == backend.param("workflow_name"))
                                              & (Run.run_id == backend.param("run_id")))
            if versioned:
                query = query.select_extend(backend.row_version(Run).alias("row_version"))
            return (backend.for_update(query) if lock else query).limit(1)

        # A prepared statement: loading a snapshot is a hot point read.
        return backend.prepared((Run, lock, versioned), build).first(workflow_name=workflow_name, run_id=run_id)

    @staticmethod
    def _snapshot(row: dict[str, Any]) -> Any:
        snapshot = row["snapshot"]
        if isinstance(snapshot, str):
            logger.warning("Snapshot of workflow run %s/%s is not valid JSON; returning it as text.",
                           row["workflow_name"], row["run_id"])
        return snapshot

    @classmethod
    def _run_record(cls, row: dict[str, Any]) -> dict[str, Any]:
        return {"workflow_name": row["workflow_name"], "run_id": row["run_id"], "resource_id": row["resource_id"],
                "snapshot": cls._snapshot(row), "created_at": row["created_at"], "updated_at": row["updated_at"]}

    def _check_key(self, problems: Problems, workflow_name: Any, run_id: Any) -> None:
        check_id(problems, "workflow_name", workflow_name)
        check_id(problems, "run_id", run_id)

    def _json(self, problems: Problems, name: str, value: Any, *, objects_only: bool = False) -> Any:
        """A JSON value (or object) argument, checked, copied and cleaned for storage."""
        if value is None:  # both fields allow None, which needs no schema walk (hot optional arguments)
            return None
        try:
            return self.backend.clean((_OBJECT_FIELD if objects_only else _VALUE_FIELD).load(value))
        except marshmallow.ValidationError as error:
            problems.merge(flatten_errors(error.messages), name)
            return None

    # ------------------------------------------------------------------ writing and reading

    @operation
    def persist_workflow_snapshot(self, *, workflow_name: str, run_id: str, snapshot: dict,
                                  resource_id: str | None = None, created_at: Any = None,
                                  updated_at: Any = None) -> None:
        """Insert or replace the run's snapshot; an existing run keeps its ``created_at`` and,
        when ``resource_id`` is ``None``, its resource id."""
        row = None
        if created_at is None and updated_at is None:
            row = fast_run_row(workflow_name=workflow_name, run_id=run_id, snapshot=snapshot,
                               resource_id=resource_id, strip_nul=self.backend.features.strips_nul)
        if row is None:
            problems = Problems()
            row = schema_run_row(problems, self.backend.clean, workflow_name=workflow_name, run_id=run_id,
                                 snapshot=snapshot, resource_id=resource_id, created_at=created_at,
                                 updated_at=updated_at)
            problems.raise_if_any()
        now = utc_now()
        row.setdefault("created_at", now)
        row.setdefault("updated_at", now)
        with self.backend.write_statement(self._lock_key(row["workflow_name"], row["run_id"])):
            self.backend.upsert(self.models.snapshot, [self._row(row)], preserve=("created_at",))

    @operation
    def load_workflow_snapshot(self, *, workflow_name: str, run_id: str) -> dict | None:
        """The stored snapshot (a fresh object), or ``None`` when the run does not exist."""
        problems = Problems()
        self._check_key(problems, workflow_name, run_id)
        problems.raise_if_any()
        Run, backend = self.models.snapshot, self.backend

        def build() -> peewee.ModelSelect:
            # Only the columns the answer needs: peewee's row reader converts every selected value.
            return backend.select(Run, Run.workflow_name, Run.run_id, Run.snapshot).where(
                (Run.workflow_name == backend.param("workflow_name")) & (Run.run_id == backend.param("run_id"))
            ).limit(1)

        row = backend.prepared(Run, build).first(workflow_name=backend.clean(workflow_name),
                                                                run_id=backend.clean(run_id))
        return None if row is None else self._snapshot(row)

    @operation
    def get_workflow_run_by_id(self, *, run_id: str, workflow_name: str | None = None) -> dict | None:
        """The run with this id (and workflow name, when given), or ``None``; of several
        workflows sharing the run id, the one created last."""
        problems = Problems()
        check_id(problems, "run_id", run_id)
        if workflow_name is not None:
            check_id(problems, "workflow_name", workflow_name)
        problems.raise_if_any()
        Run = self.models.snapshot
        query = self.backend.select(Run).where(Run.run_id == self.backend.clean(run_id))
        if workflow_name is not None:
            query = query.where(Run.workflow_name == self.backend.clean(workflow_name))
        row = query.order_by(Run.created_at.desc(), Run.workflow_name.asc()).first()
        return None if row is None else self._run_record(row)

    @operation
    def delete_workflow_run_by_id(self, *, run_id: str, workflow_name: str) -> None:
        """Delete that run; no error when it does not exist."""
        problems = Problems()
        self._check_key(problems, workflow_name, run_id)
        problems.raise_if_any()
        Run = self.models.snapshot
        workflow_name, run_id = self.backend.clean(workflow_name), self.backend.clean(run_id)
        with self.backend.write(self._lock_key(workflow_name, run_id)):
            self.backend.delete(Run, (Run.workflow_name == workflow_name) & (Run.run_id == run_id))

    # ------------------------------------------------------------------ listing

    @operation
    def list_workflow_runs(self, *, workflow_name: str | None = None, status: str | None = None,
                           resource_id: str | None = None, thread_id: str | None = None, from_date: Any = None,
                           to_date: Any = None, page: int = 0, per_page: int | bool = False,
                           after: str | None = None) -> Page:
        """Runs matching every given filter, newest first (then workflow name, run id).

        ``after=`` the ``cursor`` of a page gives the page that follows it, read by key however
        deep (``page`` must then be 0); ``total`` still counts every matching run.
        """
        problems = Problems()
        request = check_page(problems, page, per_page, default_per_page=False)
        Run = self.models.snapshot
        keyset = Keyset(Run.created_at, True, Run.workflow_name, Run.run_id)
        following = keyset.after(problems, after, request)
        given, bounds = self._check_run_filters(problems, workflow_name=workflow_name, status=status,
                                                resource_id=resource_id, thread_id=thread_id, from_date=from_date,
                                                to_date=to_date)
        problems.raise_if_any()
        query, predicate = self._matching_runs(given, bounds)
        rows, total, has_more = fetch_page(self.backend, query, keyset.order, request, predicate=predicate,
                                           after=following)
        return Page([self._run_record(row) for row in rows], total, request.page, request.per_page, has_more,
                    keyset.cursor(rows))

    def _check_run_filters(self, problems: Problems, **arguments: Any) -> tuple[dict[str, str], dict[str, Any]]:
        """The filters of :meth:`list_workflow_runs` (and :meth:`iter_workflow_runs`), checked
        into ``problems``: ``(the text filters given, cleaned; the date bounds)``."""
        filters = {name: arguments[name] for name in ("workflow_name", "status", "resource_id", "thread_id")}
        for name, value in filters.items():
            if value is not None and not isinstance(value, str):
                problems.add(name, f"{name} must be a string")
        bounds = {}
        for name in ("from_date", "to_date"):
            if arguments[name] is not None:
                try:
                    bounds[name] = _TIMESTAMP_FIELD.deserialize(arguments[name])
                except marshmallow.ValidationError:
                    problems.add(name, "Not a valid datetime.")
        given = {name: self.backend.clean(value) for name, value in filters.items() if value and isinstance(value, str)}
        return given, bounds

    def _matching_runs(self, given: dict[str, str], bounds: dict[str, Any]
                       ) -> tuple[peewee.ModelSelect, Callable[[dict], bool] | None]:
        """The select of the runs matching checked filters and the predicate of the part a
        backend checks in Python (:func:`fetch_page`'s)."""
        Run = self.models.snapshot
        query = self.backend.select(Run)
        if "workflow_name" in given:
            query = query.where(Run.workflow_name == given["workflow_name"])
        if "resource_id" in given:
            query = query.where(Run.resource_id == given["resource_id"])
        if "from_date" in bounds:
            query = query.where(Run.created_at >= bounds["from_date"])
        if "to_date" in bounds:
            query = query.where(Run.created_at <= bounds["to_date"])
        checks: list[Callable[[Any], bool]] = []
        if "status" in given:
            wanted_status = given["status"]
            condition = self._dialect.status_condition(self, wanted_status)
            if condition is None:
                checks.append(lambda snapshot: isinstance(snapshot, dict) and snapshot.get("status") == wanted_status)
            else:
                query = query.where(condition)
        if "thread_id" in given:
            wanted_thread = given["thread_id"]
            condition = self._dialect.thread_condition(self, wanted_thread)
            if condition is None:
                checks.append(lambda snapshot: run_thread_matches(snapshot, wanted_thread))
            else:
                query = query.where(condition)
        predicate = (lambda row: all(check(row["snapshot"]) for check in checks)) if checks else None
        return query, predicate

    @streaming
    def iter_workflow_runs(self, *, workflow_name: str | None = None, status: str | None = None,
                           resource_id: str | None = None, thread_id: str | None = None, from_date: Any = None,
                           to_date: Any = None, chunk_size: int = ITER_CHUNK) -> Iterator[dict]:
        """Every run matching the filters :meth:`list_workflow_runs` takes, as it gives them,
        in key order, read ``chunk_size`` at a time (constant memory)."""
        problems = Problems()
        check_chunk_size(problems, chunk_size)
        given, bounds = self._check_run_filters(problems, workflow_name=workflow_name, status=status,
                                                resource_id=resource_id, thread_id=thread_id, from_date=from_date,
                                                to_date=to_date)
        problems.raise_if_any()
        query, predicate = self._matching_runs(given, bounds)
        return self.iter_query(query, self._run_record, chunk_size, predicate=predicate)

    # ------------------------------------------------------------------ atomic updates

    def _stored_snapshot(self, row: dict[str, Any], run_id: str) -> dict[str, Any]:
        """The stored snapshot, which must be an object with a ``context`` object."""
        snapshot = row["snapshot"]
        if not isinstance(snapshot, dict) or not isinstance(snapshot.get("context"), dict):
            raise ConflictError(f"Snapshot not found for runId {run_id}", details={"code": "INVALID_SNAPSHOT"})
        return snapshot

    @operation
    def update_workflow_results(self, *, workflow_name: str, run_id: str, step_id: str, result: dict,
                                request_context: dict | None = None) -> dict:
        """Store one step's result in the run's context (creating the run when missing) and
        merge ``request_context`` into its ``requestContext``; returns the whole new context."""
        problems = Problems()
        self._check_key(problems, workflow_name, run_id)
        check_id(problems, "step_id", step_id)
        # The common result is checked, copied and encoded in one go; the text is what's stored.
        encoded = encoded_json_object(result, self.backend.features.strips_nul)
        if encoded is not None:
            result_text, result = encoded
        elif result is None:
            problems.add("result", "Field may not be null.")
        else:
            result = self._json(problems, "result", result, objects_only=True)
        request_context = self._json(problems, "request_context", request_context, objects_only=True)
        problems.raise_if_any()
        clean = self.backend.clean
        workflow_name, run_id, step_id = clean(workflow_name), clean(run_id), clean(step_id)
        Run = self.models.snapshot
        now = utc_now()
        step_key = self._dialect.step_key(step_id)
        if (step_key is not None and not isinstance(result.get("output"), list)
                and self.backend.merges_json_members(request_context or {})):
            context = self._add_step_result_in_place(workflow_name, run_id, step_key,
                                                     result_text if encoded else result, request_context, now)
            if context is not None:
                return context
        if self.backend.features.row_versions:
            context = self._add_step_result_unlocked(workflow_name, run_id, step_id, result, request_context, now)
            if context is not None:
                return context
        with self.backend.write(self._lock_key(workflow_name, run_id)):
            row = self._run_row(workflow_name, run_id, lock=True)
            if row is None:
                # Insert-if-absent first, so callers racing to create the run all find one row.
                self.backend.insert_if_absent(Run, [self._row({
                    "workflow_name": workflow_name, "run_id": run_id, "resource_id": None,
                    "snapshot": empty_snapshot(run_id, epoch_ms(now)), "created_at": now, "updated_at": now})])
                row = self._run_row(workflow_name, run_id, lock=True)
            snapshot = _add_step_result(self._stored_snapshot(row, run_id), step_id, result, request_context)
            self.backend.replace(Run, row, {"snapshot": snapshot, "updated_at": now})
        # No copy: the snapshot was decoded from its row by this call and the result and request
        # context are the validated copies, so the context shares nothing with the caller.
        return snapshot["context"]

    def _add_step_result_in_place(self, workflow_name: str, run_id: str, step_key: str,
                                  result: dict[str, Any] | JSONText, request_context: dict[str, Any] | None,
                                  now: datetime) -> dict[str, Any] | None:
        """:meth:`update_workflow_results` as one ``UPDATE … RETURNING`` in autocommit where the
        database sets the step's result itself (SQLite's ``json_set``, PostgreSQL's ``jsonb_set``):
        atomic without a transaction, and nothing read first.  ``None`` when no row changed (the
        run is missing or its snapshot not valid): the other paths then create it or refuse.
        ``result`` may be its stored text already (:func:`encoded_json_object`)."""
        Run, backend, dialect = self.models.snapshot, self.backend, self._dialect
        to_text = backend.database.json_to_db
        rows = backend.update_returning(
            Run, lambda: ((Run.workflow_name == backend.param("workflow_name"))
                          & (Run.run_id == backend.param("run_id")) & dialect.has_context(Run.snapshot)),
            {"updated_at": now}, [Run.snapshot], shape=Run,
            params={"workflow_name": workflow_name, "run_id": run_id, "step_key": step_key,
                    "result": to_text(Run.snapshot, result),
                    "request_context": to_text(Run.snapshot, request_context or {})},
            computed=lambda: {Run.snapshot: dialect.with_step_result(
                Run.snapshot, backend.param("step_key"), backend.param("result"), backend.param("request_context"))})
        return rows[0]["snapshot"]["context"] if rows else None

    def _add_step_result_unlocked(self, workflow_name: str, run_id: str, step_id: str, result: dict[str, Any],
                                  request_context: dict[str, Any] | None, now: datetime) -> dict[str, Any] | None:
        """:meth:`update_workflow_results` where rows carry versions (PostgreSQL), in two statements
        in autocommit instead of BEGIN, SELECT … FOR UPDATE, UPDATE, COMMIT: the run read without
        a lock and written back only if unchanged since, or a missing run inserted with the
        result.  ``None`` when that did not work out (the run changed or was created in between,
        or its snapshot is not valid): the locked path then does the work."""
        Run = self.models.snapshot
        row = self._run_row(workflow_name, run_id, versioned=True)
        if row is None:
            snapshot = _add_step_result(empty_snapshot(run_id, epoch_ms(now)), step_id, result, request_context)
            try:
                self.backend.insert_returning(Run, self._row({
                    "workflow_name": workflow_name, "run_id": run_id, "resource_id": None, "snapshot": snapshot,
                    "created_at": now, "updated_at": now}))
            except peewee.IntegrityError:
                return None
        else:
            snapshot = row["snapshot"]
            if not (isinstance(snapshot, dict) and isinstance(snapshot.get("context"), dict)):
                return None
            _add_step_result(snapshot, step_id, result, request_context)
            if not self.backend.replace(Run, row, {"snapshot": snapshot, "updated_at": now}, unchanged=True):
                return None
        return deep_copy_json(snapshot["context"])

    @operation
    def update_workflow_state(self, *, workflow_name: str, run_id: str, status: str, result: Any = UNSET,
                              error: Any = UNSET, suspended_paths: Any = UNSET, waiting_paths: Any = UNSET,
                              resume_labels: Any = UNSET, active_paths: Any = UNSET,
                              active_steps_path: Any = UNSET, tracing_context: Any = UNSET,
                              expected_status: str | list[str] | None = None) -> dict | None:
        """Change run-level fields of the snapshot (a shallow merge) and return the new snapshot;
        ``None`` when the run does not exist or its status is not one of ``expected_status``."""
        problems = Problems()
        self._check_key(problems, workflow_name, run_id)
        if not isinstance(status, str) or not status:
            problems.add("status", "status must be a non-empty string")
        changes: dict[str, Any] = {"status": status}
        arguments = (
            ("result", "result", result, None),
            ("error", "error", error, None),
            ("suspended_paths", "suspendedPaths", suspended_paths, _is_path_map),
            ("waiting_paths", "waitingPaths", waiting_paths, _is_path_map),
            ("active_steps_path", "activeStepsPath", active_steps_path, _is_path_map),
            ("active_paths", "activePaths", active_paths, _is_path),
            ("resume_labels", "resumeLabels", resume_labels, _is_label_map),
            ("tracing_context", "tracingContext", tracing_context, lambda value: isinstance(value, dict)),
        )
        for name, key, value, shape in arguments:
            if value is UNSET:
                continue
            if value is not None and shape is not None and not shape(value):
                problems.add(name, _SHAPE_MESSAGES[name])
                continue
            changes[key] = self._json(problems, name, value)
        expected = _check_expected_status(problems, expected_status)
        problems.raise_if_any()
        workflow_name, run_id = self.backend.clean(workflow_name), self.backend.clean(run_id)
        changes["status"] = self.backend.clean(status)
        with self.backend.write(self._lock_key(workflow_name, run_id)):
            row = self._run_row(workflow_name, run_id, lock=True)
            if row is None:
                return None
            snapshot = self._stored_snapshot(row, run_id)
            if expected is not None and snapshot.get("status") not in expected:
                return None
            snapshot = {**snapshot, **changes}
            self.backend.replace(self.models.snapshot, row, {"snapshot": snapshot, "updated_at": utc_now()})
        return deep_copy_json(snapshot)


# --------------------------------------------------------------------------- argument shapes

def _is_path(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in value)


def _is_path_map(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and _is_path(v) for k, v in value.items())


def _is_label_map(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, dict) for k, v in value.items())


_SHAPE_MESSAGES = {
    "suspended_paths": "suspended_paths must be a dict of step ids to lists of integers",
    "waiting_paths": "waiting_paths must be a dict of step ids to lists of integers",
    "active_steps_path": "active_steps_path must be a dict of step ids to lists of integers",
    "active_paths": "active_paths must be a list of integers",
    "resume_labels": "resume_labels must be a dict of labels to objects",
    "tracing_context": "tracing_context must be a dict",
}


def _check_expected_status(problems: Problems, value: Any) -> list[str] | None:
    """``None``, a non-empty string or a non-empty list of them → the allowed statuses."""
    if value is None:
        return None
    statuses = [value] if isinstance(value, str) else value
    if not isinstance(statuses, (list, tuple)) or not statuses \
            or not all(isinstance(s, str) and s for s in statuses):
        problems.add("expected_status", "expected_status must be a non-empty string or a non-empty list of them")
        return None
    return list(statuses)
