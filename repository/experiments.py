"""The experiments domain: experiment runs over a dataset and their per-item results
(spec: experiments.md).  SQLite and PostgreSQL only.

What this domain shares with the datasets domain (the purge mark, redaction, the cascades of
its hooks and the purge barrier) lives in :mod:`composite_store.purge`.
"""

from __future__ import annotations

import functools
import logging
from datetime import datetime
from typing import Any, Iterator

import marshmallow
import peewee

from .models.experiments import build_experiments_models

from .backends.base import driver_values
from .base import (ITER_CHUNK, DomainRepository, check_chunk_size, fetch_page, matching, operation, order_terms,
                   streaming)
from .errors import ConflictError, NotFoundError
from .page import Page
from .schemas.base import Timestamp, load_into
from .schemas.experiments import (EXPERIMENT_STATUSES, RESULT_STATUSES, TARGET_TYPES, ExperimentResultSchema,
                                  ExperimentSchema)
from .purge import (LinkedTables, detach_dataset_rows, is_purged, purge_barrier, purge_time,
                    redact_item_result_rows, redacted_result_values)
from .retention import Cascade, Prunable, RetentionTable
from .validation import Problems, check_id, check_order_by, check_page, check_tenancy, check_text, one_of
from .values import (JSON_NULL, UNSET, NotStorable, deep_copy_json, is_storable_text, later_than,
                     random_id, storable_json_copy, to_utc, utc_now)

logger = logging.getLogger("composite_store.experiments")

_EXPERIMENT_SCHEMA = ExperimentSchema()
_RESULT_SCHEMA = ExperimentResultSchema()
_TIMESTAMP_FIELD = Timestamp()

_EXPERIMENT_JSON = ("metadata", "provenance", "runner_attestation", "scorer_ids")

#: Experiment fields set by ``create_experiment`` from its arguments.
_CREATE_FIELDS = ("name", "description", "metadata", "provenance", "runner_attestation", "experiment_set_id",
                  "comparison_id", "variant_id", "trial_index", "dataset_id", "dataset_version", "target_type",
                  "target_id", "scorer_ids", "agent_version", "total_items", "organization_id", "project_id")

#: Result fields a submission (add or upsert) sets; ``id``, ``created_at`` and ``comment`` are not.
_PAYLOAD_FIELDS = ("experiment_id", "item_id", "item_dataset_version", "input", "output", "ground_truth",
                   "metadata", "error", "started_at", "completed_at", "retry_count", "attempt", "trace_id",
                   "status", "tags", "tool_mock_report", "organization_id", "project_id")


# --------------------------------------------------------------------------- helpers

def _load(problems: Problems, schema: ExperimentSchema | ExperimentResultSchema, values: dict[str, Any],
          *, partial: bool = False) -> dict[str, Any]:
    """Validate arguments with ``schema``; strings that cannot be stored are refused too."""
    check_text(problems, "", values)
    return load_into(problems, schema, values, partial=partial) or {}


# --------------------------------------------------------------------------- fast validation

_RESULT_STATUS_SET = frozenset(RESULT_STATUSES)
#: Submission keys the quick route checks, by rule.
_QUICK_IDS = ("experiment_id", "item_id")  # required non-empty str
_QUICK_TEXTS = ("trace_id", "organization_id", "project_id")  # str or None
_QUICK_COUNTS = ("retry_count", "attempt")  # int >= 0
_QUICK_VALUES = ("input", "output", "ground_truth")  # any JSON value
_QUICK_OBJECTS = ("metadata", "tool_mock_report")  # JSON object or None
_QUICK_KEYS = frozenset({*_QUICK_IDS, *_QUICK_TEXTS, *_QUICK_COUNTS, *_QUICK_VALUES, *_QUICK_OBJECTS, "id",
                         "item_dataset_version", "error", "started_at", "completed_at", "status", "tags"})
_QUICK_REQUIRED = frozenset({*_QUICK_IDS, "input", "started_at", "completed_at"})
#: JSON nested deeper takes the schema route (which has no limit of its own).
_QUICK_MAX_DEPTH = 256


def _storable(text: str) -> bool:
    """No U+0000 and no unpaired surrogate (what :func:`find_bad_text` looks for)."""
    return "\x00" not in text and is_storable_text(text, False)


def fast_load_result(given: dict[str, Any]) -> dict[str, Any] | None:
    """``ExperimentResultSchema().load(given)`` (plus the storable-text check) for the common
    valid snake_case submission, without marshmallow; ``None`` for anything else, which the
    schema route then loads and reports.  ``add_experiment_result`` is a per-call hot path."""
    if not given.keys() <= _QUICK_KEYS or not _QUICK_REQUIRED <= given.keys():
        return None
    loaded = dict(given)
    try:
        for name in _QUICK_IDS:
            value = given[name]
            if type(value) is not str or not value or not _storable(value):
                return None
        if "id" in given:
            value = given["id"]
            if type(value) is not str or not value or not _storable(value):
                return None
        for name in _QUICK_TEXTS:
            value = given.get(name)
            if value is not None and (type(value) is not str or not _storable(value)):
                return None
        for name in _QUICK_COUNTS:
            value = given.get(name, 0)
            if type(value) is not int or value < 0:
                return None
        value = given.get("item_dataset_version")
        if value is not None and (type(value) is not int or value < 0):
            return None
        for name in ("started_at", "completed_at"):
            if type(given[name]) is not datetime:
                return None
            loaded[name] = to_utc(given[name])
        status = given.get("status")
        if status is not None and (type(status) is not str or status not in _RESULT_STATUS_SET):
            return None
        tags = given.get("tags")
        if tags is not None:
            if type(tags) is not list or not all(type(tag) is str and _storable(tag) for tag in tags):
                return None
            loaded["tags"] = list(tags)
        for name in _QUICK_VALUES:
            if name in given:
                loaded[name] = storable_json_copy(given[name], _QUICK_MAX_DEPTH)
        for name in _QUICK_OBJECTS:
            value = given.get(name)
            if value is not None:
                if type(value) is not dict:
                    return None
                loaded[name] = storable_json_copy(value, _QUICK_MAX_DEPTH)
        error = given.get("error")
        if error is not None:
            if type(error) is not dict or type(error.get("message")) is not str \
                    or any(error.get(key) is not None and type(error[key]) is not str for key in ("stack", "code")):
                return None
            loaded["error"] = storable_json_copy(error, _QUICK_MAX_DEPTH)
    except NotStorable:
        return None
    return loaded


#: A result record's keys, in the schema's order.
_RESULT_KEYS = tuple(ExperimentResultSchema._declared_fields)


@functools.lru_cache(maxsize=64)
def _result_params(names: tuple[str, ...]) -> tuple[str, ...]:
    """The parameter names of a new result's columns in :meth:`ExperimentsRepository._insert_plain_result`'s
    statement, built once per shape (spelled per call, they cost as much as the row's values)."""
    return tuple(f"result_{name}" for name in names)


def _storable_result(row: dict[str, Any]) -> dict[str, Any]:
    """A new result row as the backends insert it: their inserts send ``None`` as SQL NULL, so
    a ``None`` input is JSON null (the column is NOT NULL)."""
    return {**row, "input": JSON_NULL} if row["input"] is None else row


def _check_amount(problems: Problems, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        problems.add(name, f"{name} must be a non-negative integer")


def _check_string(problems: Problems, name: str, value: Any) -> None:
    if value is not None and not isinstance(value, str):
        problems.add(name, "Not a valid string.")


def _check_choice(problems: Problems, name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value is not None and value not in choices:
        problems.add(name, one_of(choices))


class ExperimentsRepository(Prunable, DomainRepository):
    """Experiment runs and their per-item results.

    Example::

        experiments = storage.get_store("experiments")
        run = experiments.create_experiment(dataset_id="ds-1", dataset_version=3, total_items=2)
        experiments.update_experiment(id=run["id"], status="running", started_at=datetime.now(timezone.utc))
        experiments.add_experiment_result(experiment_id=run["id"], item_id="item-1", input={"q": "2+2"},
                                          output="4", started_at=t0, completed_at=t1)
        experiments.increment_experiment_counters(id=run["id"], succeeded=1)
    """

    domain = "experiments"
    #: Retention (fidelity-1.71 §5): whole finished experiments with their results, by the plain
    #: ``completedAt`` on PostgreSQL too (Mastra's); running ones (no ``completedAt``) are kept.
    retention_tables = (RetentionTable(key="experiments", model="experiment", anchor="completed_at",
                                       zoned_on_postgres=False,
                                       cascade=Cascade(model="result", parent_field="experiment_id")),)
    rejects_unstorable_text = True

    def __init__(self, *, store: Any = None, **options: Any) -> None:
        super().__init__(store=store, **options)
        self._datasets = LinkedTables.datasets()

    def build_models(self, database: peewee.DatabaseProxy) -> Any:
        return build_experiments_models(database)

    # ------------------------------------------------------------------ init

    # ------------------------------------------------------------------ record conversion

    @staticmethod
    def _experiment_record(row: dict[str, Any]) -> dict[str, Any]:
        record = {name: row.get(name) for name in ExperimentSchema._declared_fields}  # the order of §3.1
        for name in _EXPERIMENT_JSON:
            record[name] = deep_copy_json(record[name])
        return record

    @staticmethod
    def _result_record(row: dict[str, Any]) -> dict[str, Any]:
        # The row's JSON values are fresh (decoded from the database, or the validated copies
        # just written), so the record takes them as they are.
        # (zip/map: built in C, the record has ~25 keys and this is a hot call's return)
        record = dict(zip(_RESULT_KEYS, map(row.get, _RESULT_KEYS)))
        if record["attempt"] is None:
            record["attempt"] = 0  # rows written by older clients
        return record

    # ------------------------------------------------------------------ row access

    def _scope(self, model: type[peewee.Model], scope: dict[str, str]) -> list[peewee.Expression]:
        """Tenancy conditions on ``model``'s own organization and project columns."""
        return [getattr(model, key) == value for key, value in scope.items()]

    # The point reads below are prepared statements (Backend.prepared): adding a result runs
    # several of them, and rendering each with peewee cost more than running it.

    def _by_id(self, model: type[peewee.Model], record_id: str, scope: dict[str, str] | None,
               lock: bool, fields: tuple[str, ...] = ()) -> dict[str, Any] | None:
        """The row (only ``fields``, when named) with this id and scope, locked when asked."""
        backend, names = self.backend, tuple(scope or ())

        def build() -> peewee.ModelSelect:
            query = backend.select(model, *(getattr(model, name) for name in fields))
            query = query.where(model.id == backend.param("id"),
                                *(getattr(model, name) == backend.param(name) for name in names))
            return (backend.for_update(query) if lock else query).limit(1)

        return backend.prepared((model, names, lock, fields), build).first(id=record_id, **(scope or {}))

    def _experiment_row(self, experiment_id: str, scope: dict[str, str] | None = None, *,
                        lock: bool = False) -> dict[str, Any] | None:
        return self._by_id(self.models.experiment, experiment_id, scope, lock)

    def _result_row(self, result_id: str, scope: dict[str, str] | None = None, *,
                    lock: bool = False) -> dict[str, Any] | None:
        return self._by_id(self.models.result, result_id, scope, lock)

    def _result_by_key(self, experiment_id: str, item_id: str, attempt: int) -> dict[str, Any] | None:
        """The result stored under a natural key, locked; a NULL ``attempt`` counts as 0."""
        Result, backend = self.models.result, self.backend

        def build() -> peewee.ModelSelect:
            query = (backend.select(Result)
                     .where(Result.experiment_id == backend.param("experiment_id"),
                            Result.item_id == backend.param("item_id"),
                            peewee.fn.COALESCE(Result.attempt, 0) == backend.param("attempt"))
                     .order_by(Result.attempt.is_null(), Result.id))
            return backend.for_update(query).limit(1)

        return backend.prepared(Result, build).first(experiment_id=experiment_id, item_id=item_id,
                                                                 attempt=attempt)

    def _require_experiment(self, experiment_id: str) -> dict[str, Any]:
        """What a result takes from its experiment (dataset and tenancy), the row locked."""
        # Only these columns: every result write starts here, and the whole row costs more to
        # send and decode than the lookup itself.
        row = self._by_id(self.models.experiment, experiment_id, None, True,
                          ("dataset_id", "organization_id", "project_id"))
        if row is None:
            raise NotFoundError(f"Experiment not found: {experiment_id}", details={"experiment_id": experiment_id})
        return row

    def _insert_result(self, row: dict[str, Any]) -> dict[str, Any]:
        """Insert a new result row; returns it as stored."""
        return self.backend.insert_returning(self.models.result, _storable_result(row))

    def _new_result_row(self, data: dict[str, Any], experiment: dict[str, Any], result_id: str,
                        purged_at: str | None) -> dict[str, Any]:
        """The row ``add_experiment_result`` inserts (``purged_at``: what its purge check found)."""
        values = self._result_values(data, experiment, purge_checked=True, purged_at=purged_at)
        return {"id": result_id, **values, "comment": None, "created_at": utc_now()}

    def _insert_plain_result(self, data: dict[str, Any], result_id: str) -> dict[str, Any] | None:
        """``add_experiment_result``'s stored result from one autocommit ``INSERT … SELECT … ON
        CONFLICT DO NOTHING RETURNING`` (SQLite, PostgreSQL) instead of a five-statement
        transaction; ``None`` (no row back: a missing experiment, a purged item, a taken key,
        or on ClickHouse) leaves the call to the locked path, which tells which and acts on it.

        Its ``WITH`` reads the experiment (dataset, tenancy), locked where rows are locked, and
        the row is inserted only when its natural key is free and no row of the item carries the
        purge mark (the purge barrier).  SQLite runs a writing statement holding the write lock from its start, so it
        reads the latest state.  PostgreSQL reads as of the statement's start, which may
        precede a purge it waited for: the insert also needs the locked experiment's row
        version to be the one the statement's snapshot holds (a purge writes the experiments it
        locks, ``purge._lock_dataset_experiments``)."""
        Experiment, Result, backend = self.models.experiment, self.models.result, self.backend
        if not backend.features.returning:
            return None
        tables = self._datasets.get(self)
        Item = None if tables is None else tables.item
        versions = backend.features.row_versions
        inherited = tuple(key for key in ("organization_id", "project_id") if key not in data)
        row = self._new_result_row(data, dict.fromkeys(("dataset_id", "organization_id", "project_id")),
                                   result_id, None)
        for key in inherited:  # (a fresh dict) the statement takes these from the experiment's row
            del row[key]
        row = backend.prepare_rows(Result, [_storable_result(row)])[0]
        names = tuple(row)
        fields, converters = backend.columns(Result, names)

        def build() -> peewee.ModelInsert:
            experiment = Experiment.id == backend.param("experiment_id")
            columns = [Experiment.dataset_id, *(getattr(Experiment, key) for key in inherited)]
            if versions:
                columns.append(backend.row_version(Experiment).alias("row_version"))
            locked = backend.for_update(Experiment.select(*columns).where(experiment)).cte("locked")
            # The natural key is free (the unique index may be missing where stored rows repeat
            # a key: init() warns and goes on).
            taken = Result.select(peewee.SQL("1")).where(
                Result.experiment_id == backend.param("result_experiment_id"),
                Result.item_id == backend.param("result_item_id"),
                peewee.fn.COALESCE(Result.attempt, 0) == backend.param("result_attempt"))
            conditions = [~peewee.fn.EXISTS(taken)]
            if versions:
                conditions.append(locked.c.row_version == Experiment.select(backend.row_version(Experiment))
                                  .where(experiment))
            if Item is not None:
                barrier = purge_barrier(backend, Item, dataset_id=locked.c[Experiment.dataset_id.column_name])
                conditions.append(~peewee.fn.EXISTS(Item.select(peewee.SQL("1")).where(*barrier)))
            source = peewee.Select([locked], [*map(backend.param, _result_params(names)),
                                             *(locked.c[getattr(Experiment, key).column_name] for key in inherited)])
            # (The WHERE also tells SQLite's parser that the ON CONFLICT is the upsert's.)
            insert = Result.insert_from(source.where(*conditions),
                                        [*fields, *(getattr(Result, key) for key in inherited)])
            return backend.as_records(insert.on_conflict_ignore().returning(*Result._meta.sorted_fields)
                                      .with_cte(locked), Result)

        values = dict(zip(_result_params(names), driver_values(converters, row.values())))
        stored = backend.prepared((Result, inherited, names, Item), build).first(
            **values, experiment_id=data["experiment_id"], item_id=data["item_id"])
        return None if stored is None else self._result_record(stored)

    # ------------------------------------------------------------------ purge barrier

    def _dataset_items(self, dataset_id: str | None) -> type[peewee.Model] | None:
        """The datasets domain's item model on this database when the experiment has a dataset
        and ``mastra_dataset_items`` exists here (the purge barrier applies), else ``None``."""
        tables = self._datasets.get(self) if dataset_id is not None else None
        return None if tables is None else tables.item

    def _purge_time(self, dataset_id: str | None, item_id: str) -> str | None:
        """When the item's rows in this database say it was purged, the purge time (ISO text)."""
        Item = self._dataset_items(dataset_id)
        if Item is None:
            return None
        backend, metadata = self.backend, Item._meta.columns["metadata"]
        row = backend.prepared(Item, lambda: backend.select(Item, metadata).where(
            *purge_barrier(backend, Item)).limit(1)).first(item_id=item_id, dataset_id=dataset_id)
        return None if row is None else purge_time(row[metadata.name])

    def _add_checks(self, dataset_id: str | None, values: dict[str, Any],
                    result_id: str | None) -> tuple[bool, bool, str | None]:
        """What ``add_experiment_result`` must know before it inserts, in one statement (one
        round trip instead of three): whether the natural key is taken, whether ``result_id``
        (when given) is taken, and the purge time of the item when its dataset rows say it was
        purged (as :meth:`_purge_time`).  Runs after the experiment row is locked."""
        Result, backend = self.models.result, self.backend
        Item = self._dataset_items(dataset_id)
        with_id = result_id is not None

        def build() -> peewee.Select:
            taken = (Result.select(peewee.SQL("1"))
                     .where(Result.experiment_id == backend.param("experiment_id"),
                            Result.item_id == backend.param("item_id"),
                            peewee.fn.COALESCE(Result.attempt, 0) == backend.param("attempt")).limit(1))
            columns = [taken.alias("key_taken")]
            if with_id:
                columns.append(Result.select(peewee.SQL("1")).where(Result.id == backend.param("id"))
                               .limit(1).alias("id_taken"))
            if Item is not None:
                columns.append(Item.select(Item._meta.columns["metadata"]).where(*purge_barrier(backend, Item))
                               .limit(1).alias("purged_metadata"))
            return peewee.Select(columns=columns).dicts()

        key = (Result, with_id, Item)
        row = backend.prepared(key, build).first(
            experiment_id=values["experiment_id"], item_id=values["item_id"], attempt=values["attempt"],
            id=result_id, dataset_id=dataset_id)
        purged_at = None if row.get("purged_metadata") is None else purge_time(row["purged_metadata"])
        return row["key_taken"] is not None, bool(with_id and row["id_taken"] is not None), purged_at

    # ------------------------------------------------------------------ experiments

    @operation
    def create_experiment(self, *, total_items: int, dataset_id: str | None = None, dataset_version: int | None = None,
                          target_type: str | None = None, target_id: str | None = None, id: str | None = None,
                          name: str | None = None, description: str | None = None, metadata: dict | None = None,
                          provenance: dict | None = None, runner_attestation: dict | None = None,
                          experiment_set_id: str | None = None, comparison_id: str | None = None,
                          variant_id: str | None = None, trial_index: int | None = None,
                          agent_version: str | None = None, scorer_ids: list[str] | None = None,
                          organization_id: str | None = None, project_id: str | None = None) -> dict:
        """Create an experiment: ``status "pending"``, counters 0, no start or completion time.

        The dataset is not looked up (it may live in another database).  An existing ``id`` is a
        :class:`ConflictError`.
        """
        arguments = {"name": name, "description": description, "metadata": metadata, "provenance": provenance,
                     "runner_attestation": runner_attestation, "experiment_set_id": experiment_set_id,
                     "comparison_id": comparison_id, "variant_id": variant_id, "trial_index": trial_index,
                     "dataset_id": dataset_id, "dataset_version": dataset_version, "target_type": target_type,
                     "target_id": target_id, "scorer_ids": scorer_ids, "agent_version": agent_version,
                     "total_items": total_items, "organization_id": organization_id, "project_id": project_id}
        if id is not None:
            arguments["id"] = id
        problems = Problems()
        data = _load(problems, _EXPERIMENT_SCHEMA, arguments)
        problems.raise_if_any()
        now = utc_now()
        row = {"id": data.get("id") or random_id(), **{name: data.get(name) for name in _CREATE_FIELDS},
               "status": "pending", "succeeded_count": 0, "failed_count": 0, "skipped_count": 0,
               "started_at": None, "completed_at": None, "created_at": now, "updated_at": now}
        conflict = ConflictError(f"Experiment already exists: {row['id']}", details={"id": row["id"]})
        with self.backend.write(("experiment", row["id"])):
            if self._experiment_row(row["id"]) is not None:
                raise conflict
            try:
                self.backend.insert(self.models.experiment, [row])
            except peewee.IntegrityError:
                raise conflict from None
        return self._experiment_record(row)

    @operation
    def update_experiment(self, *, id: str, name: str | None = UNSET, description: str | None = UNSET,
                          metadata: dict | None = UNSET, status: str = UNSET, total_items: int = UNSET,
                          succeeded_count: int = UNSET, failed_count: int = UNSET, skipped_count: int = UNSET,
                          started_at: datetime | str | None = UNSET,
                          completed_at: datetime | str | None = UNSET) -> dict:
        """Replace the given fields (``metadata`` whole); ``None`` clears the nullable ones.

        Bumps ``updated_at`` strictly; returns the complete stored record.
        """
        given = {key: value for key, value in {
            "name": name, "description": description, "metadata": metadata, "status": status,
            "total_items": total_items, "succeeded_count": succeeded_count, "failed_count": failed_count,
            "skipped_count": skipped_count, "started_at": started_at, "completed_at": completed_at,
        }.items() if value is not UNSET}
        problems = Problems()
        check_id(problems, "id", id)
        data = _load(problems, _EXPERIMENT_SCHEMA, given, partial=True)
        problems.raise_if_any()
        Experiment = self.models.experiment
        with self.backend.write(("experiment", id)):
            stored = self._experiment_row(id, lock=True)
            if stored is None:
                raise NotFoundError(f"Experiment not found: {id}", details={"id": id})
            values = {**data, "updated_at": later_than(stored["updated_at"], utc_now())}
            self.backend.update(Experiment, Experiment.id == id, values)
            return self._experiment_record(self._experiment_row(id))

    @operation
    def increment_experiment_counters(self, *, id: str, succeeded: int = 0, failed: int = 0,
                                      skipped: int = 0) -> dict:
        """Atomically add to the succeeded / failed / skipped counters; bumps ``updated_at``.

        Safe for many worker threads (and processes) counting results at once; never changes
        ``status``.
        """
        problems = Problems()
        check_id(problems, "id", id)
        for name, amount in (("succeeded", succeeded), ("failed", failed), ("skipped", skipped)):
            _check_amount(problems, name, amount)
        problems.raise_if_any()
        Experiment = self.models.experiment
        with self.backend.write(("experiment", id)):
            stored = self._experiment_row(id, lock=True)
            if stored is None:
                raise NotFoundError(f"Experiment not found: {id}", details={"id": id})
            # Additions in SQL: the row lock (PostgreSQL) or BEGIN IMMEDIATE (SQLite) already
            # serializes callers, and the database does the arithmetic on the latest value.
            self.backend.update(Experiment, Experiment.id == id, {
                "succeeded_count": Experiment.succeeded_count + succeeded,
                "failed_count": Experiment.failed_count + failed,
                "skipped_count": Experiment.skipped_count + skipped,
                "updated_at": later_than(stored["updated_at"], utc_now())})
            return self._experiment_record(self._experiment_row(id))

    @operation
    def get_experiment_by_id(self, *, id: str, filters: dict | None = None) -> dict | None:
        """The experiment, or ``None`` when missing or outside the ``filters`` tenancy scope."""
        problems = Problems()
        check_id(problems, "id", id)
        scope = check_tenancy(problems, filters)
        problems.raise_if_any()
        row = self._experiment_row(id, scope)
        return None if row is None else self._experiment_record(row)

    @operation
    def list_experiments(self, *, page: int = 0, per_page: int | bool = 100, dataset_id: str | None = None,
                         target_type: str | None = None, target_id: str | None = None,
                         agent_version: str | None = None, status: str | None = None,
                         experiment_set_id: str | None = None, comparison_id: str | None = None,
                         variant_id: str | None = None, trial_index: int | None = None,
                         filters: dict | None = None, order_by: dict | None = None) -> Page:
        """Experiments matching every given filter; newest first unless ``order_by`` says
        otherwise (``created_at`` or ``status``), ties by ``id``."""
        problems = Problems()
        request = check_page(problems, page, per_page, default_per_page=100)
        ordering = check_order_by(problems, order_by, allowed=("created_at", "status"),
                                  default_field="created_at", default_direction="DESC")
        query = self._matching_experiments(problems, dataset_id=dataset_id, target_type=target_type,
                                           target_id=target_id, agent_version=agent_version, status=status,
                                           experiment_set_id=experiment_set_id, comparison_id=comparison_id,
                                           variant_id=variant_id, trial_index=trial_index, filters=filters)
        problems.raise_if_any()
        Experiment = self.models.experiment
        order = order_terms(getattr(Experiment, ordering.field), ordering.descending, Experiment.id)
        rows, total, has_more = fetch_page(self.backend, query, order, request)
        return Page([self._experiment_record(r) for r in rows], total, request.page, request.per_page, has_more)

    @operation
    def delete_experiment(self, *, id: str, filters: dict | None = None) -> None:
        """Delete the experiment and all its results in one transaction.  Missing or out of scope:
        nothing happens."""
        problems = Problems()
        check_id(problems, "id", id)
        scope = check_tenancy(problems, filters)
        problems.raise_if_any()
        Experiment, Result = self.models.experiment, self.models.result
        with self.backend.write(("experiment", id)):
            if self._experiment_row(id, scope, lock=True) is None:
                return
            self.backend.delete_bulk(Result, Result.experiment_id == id)
            self.backend.delete(Experiment, Experiment.id == id)

    # ------------------------------------------------------------------ results

    def _submission(self, problems: Problems, arguments: dict[str, Any]) -> dict[str, Any]:
        """Validate the arguments of an add or upsert; tenancy left at ``UNSET`` stays out."""
        given = {key: value for key, value in arguments.items() if value is not UNSET}
        if given.get("id") is None:
            given.pop("id", None)
        return fast_load_result(given) or _load(problems, _RESULT_SCHEMA, given)

    def _result_values(self, data: dict[str, Any], experiment: dict[str, Any], *,
                       purge_checked: bool = False, purged_at: str | None = None) -> dict[str, Any]:
        """The payload columns of a submission, with defaults and the experiment's tenancy,
        redacted when the item was purged (``purge_checked``: the caller already looked, and
        ``purged_at`` is what it found)."""
        values = dict(zip(_PAYLOAD_FIELDS, map(data.get, _PAYLOAD_FIELDS)))
        values["retry_count"] = data.get("retry_count", 0)
        values["attempt"] = data.get("attempt", 0)
        for key in ("organization_id", "project_id"):
            values[key] = data[key] if key in data else experiment[key]
        if not purge_checked:
            purged_at = self._purge_time(experiment["dataset_id"], values["item_id"])
        if purged_at is not None:
            values.update(redacted_result_values(purged_at))
        return values

    @operation
    def add_experiment_result(self, *, experiment_id: str, item_id: str, input: Any, started_at: datetime | str,
                              completed_at: datetime | str, id: str | None = None,
                              item_dataset_version: int | None = None, output: Any = None,
                              ground_truth: Any = None, metadata: dict | None = None, error: dict | None = None,
                              retry_count: int = 0, attempt: int = 0, trace_id: str | None = None,
                              status: str | None = None, tags: list[str] | None = None,
                              tool_mock_report: dict | None = None, organization_id: str | None = UNSET,
                              project_id: str | None = UNSET) -> dict:
        """Store a new result.  The experiment must exist; (``experiment_id``, ``item_id``,
        ``attempt``) and ``id`` must be new (use :meth:`upsert_experiment_result` for retries).
        Tenancy defaults to the experiment's.  A purged item's result is stored redacted."""
        problems = Problems()
        data = self._submission(problems, {
            "id": id, "experiment_id": experiment_id, "item_id": item_id, "input": input, "started_at": started_at,
            "completed_at": completed_at, "item_dataset_version": item_dataset_version, "output": output,
            "ground_truth": ground_truth, "metadata": metadata, "error": error, "retry_count": retry_count,
            "attempt": attempt, "trace_id": trace_id, "status": status, "tags": tags,
            "tool_mock_report": tool_mock_report, "organization_id": organization_id, "project_id": project_id})
        problems.raise_if_any()
        result_id = data.get("id") or random_id()
        record = self._insert_plain_result(data, result_id)
        if record is not None:
            return record

        def key_conflict() -> ConflictError:
            attempt = data.get("attempt", 0)
            return ConflictError(f"Experiment result already exists for item {data['item_id']}, attempt {attempt}",
                                 details={"experiment_id": experiment_id, "item_id": data["item_id"],
                                          "attempt": attempt})

        with self.backend.write(("experiment", experiment_id)):
            experiment = self._require_experiment(experiment_id)
            # A new random id is unique: only a given id is looked up.
            key_taken, id_taken, purged_at = self._add_checks(
                experiment["dataset_id"], {**data, "attempt": data.get("attempt", 0)},
                result_id if "id" in data else None)
            if key_taken:
                raise key_conflict()
            if id_taken:
                raise ConflictError(f"Experiment result already exists: {result_id}", details={"id": result_id})
            row = self._new_result_row(data, experiment, result_id, purged_at)
            try:
                return self._result_record(self._insert_result(row))
            except peewee.IntegrityError:
                # The unique natural-key index (or the primary key) caught a concurrent writer.
                if "id" in data:
                    raise ConflictError(f"Experiment result already exists: {result_id}",
                                        details={"id": result_id}) from None
                raise key_conflict() from None

    @operation
    def upsert_experiment_result(self, *, experiment_id: str, item_id: str, input: Any,
                                 started_at: datetime | str, completed_at: datetime | str,
                                 item_dataset_version: int | None = None, output: Any = None,
                                 ground_truth: Any = None, metadata: dict | None = None, error: dict | None = None,
                                 retry_count: int = 0, attempt: int = 0, trace_id: str | None = None,
                                 status: str | None = None, tags: list[str] | None = None,
                                 tool_mock_report: dict | None = None, organization_id: str | None = UNSET,
                                 project_id: str | None = UNSET) -> dict:
        """Insert a result, or replace every payload field of the one stored under the same
        (``experiment_id``, ``item_id``, ``attempt``), keeping its ``id``, ``created_at`` and
        ``comment``.  Retried submissions converge on one row; the last to commit wins."""
        problems = Problems()
        data = self._submission(problems, {
            "experiment_id": experiment_id, "item_id": item_id, "input": input, "started_at": started_at,
            "completed_at": completed_at, "item_dataset_version": item_dataset_version, "output": output,
            "ground_truth": ground_truth, "metadata": metadata, "error": error, "retry_count": retry_count,
            "attempt": attempt, "trace_id": trace_id, "status": status, "tags": tags,
            "tool_mock_report": tool_mock_report, "organization_id": organization_id, "project_id": project_id})
        problems.raise_if_any()
        Result = self.models.result
        with self.backend.write(("experiment", experiment_id)):
            experiment = self._require_experiment(experiment_id)
            values = self._result_values(data, experiment)
            stored = self._result_by_key(experiment_id, values["item_id"], values["attempt"])
            if stored is None:
                result_id = random_id()
                self._insert_result({"id": result_id, **values, "comment": None, "created_at": utc_now()})
            else:
                result_id = stored["id"]
                self.backend.update(Result, Result.id == result_id, values)
            return self._result_record(self._result_row(result_id))

    @operation
    def update_experiment_result(self, *, id: str, experiment_id: str | None = None, status: str | None = UNSET,
                                 tags: list[str] | None = UNSET, comment: str | None = UNSET) -> dict:
        """Set or clear the review fields of a result (``UNSET`` keeps, ``None`` clears).

        With ``experiment_id``, the result must belong to that experiment.  A purged result keeps
        ``tags`` and ``comment`` at ``None``.
        """
        given = {key: value for key, value in {"status": status, "tags": tags, "comment": comment}.items()
                 if value is not UNSET}
        problems = Problems()
        check_id(problems, "id", id)
        if experiment_id is not None:
            check_id(problems, "experiment_id", experiment_id)
            check_text(problems, "experiment_id", experiment_id)  # compared in Python, never bound
        data = _load(problems, _RESULT_SCHEMA, given, partial=True)
        problems.raise_if_any()
        Result = self.models.result
        with self.backend.write(("result", id)):
            row = self._result_row(id)
            if row is not None:
                # PostgreSQL: the experiment row is locked before its results (as every writer does).
                self._experiment_row(row["experiment_id"], lock=True)
                row = self._result_row(id, lock=True)
            if row is None:
                raise NotFoundError(f"Experiment result not found: {id}", details={"id": id})
            if experiment_id is not None and row["experiment_id"] != experiment_id:
                raise NotFoundError(f"Experiment result {id} does not belong to experiment {experiment_id}",
                                    details={"id": id, "experiment_id": experiment_id})
            if is_purged(row["metadata"]):
                data = {key: value for key, value in data.items() if key == "status"}
            if not data:
                return self._result_record(row)
            self.backend.update(Result, Result.id == id, data)
            return self._result_record(self._result_row(id))

    @operation
    def get_experiment_result_by_id(self, *, id: str, filters: dict | None = None) -> dict | None:
        """The result, or ``None`` when missing or outside the ``filters`` scope (the result
        row's own tenancy)."""
        problems = Problems()
        check_id(problems, "id", id)
        scope = check_tenancy(problems, filters)
        problems.raise_if_any()
        row = self._result_row(id, scope)
        return None if row is None else self._result_record(row)

    @operation
    def list_experiment_results(self, *, experiment_id: str, page: int = 0, per_page: int | bool = 100,
                                trace_id: str | None = None, status: str | None = None,
                                tags: list[str] | None = None, filters: dict | None = None,
                                order_by: dict | None = None) -> Page:
        """Results of one experiment in execution order (``started_at`` ASC) unless ``order_by``
        says otherwise (``started_at`` or ``created_at``), ties by ``id``.

        ``tags``: a result must hold all of them.  An unknown experiment gives an empty page.
        """
        problems = Problems()
        request = check_page(problems, page, per_page, default_per_page=100)
        check_id(problems, "experiment_id", experiment_id)
        ordering = check_order_by(problems, order_by, allowed=("started_at", "created_at"),
                                  default_field="started_at", default_direction="ASC")
        conditions = self._result_conditions(problems, trace_id=trace_id, status=status, tags=tags, filters=filters)
        problems.raise_if_any()
        Result = self.models.result
        query = self.backend.select(Result).where(Result.experiment_id == experiment_id, *conditions)
        order = order_terms(getattr(Result, ordering.field), ordering.descending, Result.id)
        rows, total, has_more = fetch_page(self.backend, query, order, request)
        return Page([self._result_record(r) for r in rows], total, request.page, request.per_page, has_more)

    @streaming
    def iter_experiments(self, *, dataset_id: str | None = None, target_type: str | None = None,
                         target_id: str | None = None, agent_version: str | None = None, status: str | None = None,
                         experiment_set_id: str | None = None, comparison_id: str | None = None,
                         variant_id: str | None = None, trial_index: int | None = None, filters: dict | None = None,
                         chunk_size: int = ITER_CHUNK) -> Iterator[dict]:
        """Every experiment matching the filters of :meth:`list_experiments` as it gives them,
        in id order, read ``chunk_size`` at a time (constant memory)."""
        problems = Problems()
        check_chunk_size(problems, chunk_size)
        query = self._matching_experiments(problems, dataset_id=dataset_id, target_type=target_type,
                                           target_id=target_id, agent_version=agent_version, status=status,
                                           experiment_set_id=experiment_set_id, comparison_id=comparison_id,
                                           variant_id=variant_id, trial_index=trial_index, filters=filters)
        problems.raise_if_any()
        return self.iter_query(query, self._experiment_record, chunk_size)

    def _matching_experiments(self, problems: Problems, *, trial_index: Any, filters: Any,
                              **exact: Any) -> peewee.ModelSelect | None:
        """The filters of :meth:`list_experiments` (and :meth:`iter_experiments`) checked into
        ``problems``; the select of the matching experiments when every check so far passed."""
        for name, value in exact.items():
            _check_string(problems, name, value)
        _check_choice(problems, "target_type", exact["target_type"], TARGET_TYPES)
        _check_choice(problems, "status", exact["status"], EXPERIMENT_STATUSES)
        if trial_index is not None:
            _check_amount(problems, "trial_index", trial_index)
            exact["trial_index"] = trial_index
        scope = check_tenancy(problems, filters)
        if problems:
            return None
        Experiment = self.models.experiment
        conditions = [getattr(Experiment, name) == value for name, value in exact.items() if value is not None]
        conditions += self._scope(Experiment, scope)
        query = self.backend.select(Experiment)
        return query.where(*conditions) if conditions else query

    @streaming
    def iter_experiment_results(self, *, experiment_id: str | None = None, trace_id: str | None = None,
                                status: str | None = None, tags: list[str] | None = None,
                                filters: dict | None = None, chunk_size: int = ITER_CHUNK) -> Iterator[dict]:
        """Every result (of one experiment, or of all) matching the filters of
        :meth:`list_experiment_results` (``trace_id``, ``status``, every one of ``tags``, the
        tenancy ``filters``) as it gives them, in id order, read ``chunk_size`` at a time
        (constant memory)."""
        problems = Problems()
        check_chunk_size(problems, chunk_size)
        query = matching(problems, self.backend.select(self.models.result), self.models.result,
                         experiment_id=experiment_id)
        conditions = self._result_conditions(problems, trace_id=trace_id, status=status, tags=tags, filters=filters)
        problems.raise_if_any()
        return self.iter_query(query.where(*conditions) if conditions else query, self._result_record, chunk_size)

    def _result_conditions(self, problems: Problems, *, trace_id: Any, status: Any, tags: Any,
                           filters: Any) -> list[peewee.Node]:
        """The filters of :meth:`list_experiment_results` (and :meth:`iter_experiment_results`)
        checked into ``problems``, and their conditions once every check so far passed."""
        _check_string(problems, "trace_id", trace_id)
        _check_choice(problems, "status", status, RESULT_STATUSES)
        if tags is not None and (not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) for t in tags)):
            problems.add("tags", "tags must be a list of strings")
        check_text(problems, "tags", tags)  # matched inside JSON text, which escapes U+0000
        scope = check_tenancy(problems, filters)
        if problems:
            return []
        Result = self.models.result
        conditions = list(self._scope(Result, scope))
        if trace_id is not None:
            conditions.append(Result.trace_id == trace_id)
        if status is not None:
            conditions.append(Result.status == status)
        if tags:
            conditions.append(self.backend.json_array_contains_all(Result.tags, list(dict.fromkeys(tags))))
        return conditions

    @operation
    def delete_experiment_results(self, *, experiment_id: str, filters: dict | None = None) -> None:
        """Delete every result of the experiment and keep the experiment.  With ``filters``, only
        when the experiment is in that scope; otherwise nothing happens."""
        problems = Problems()
        check_id(problems, "experiment_id", experiment_id)
        scope = check_tenancy(problems, filters)
        problems.raise_if_any()
        Result = self.models.result
        with self.backend.write(("experiment", experiment_id)):
            if self._experiment_row(experiment_id, scope, lock=True) is None and scope:
                return
            self.backend.delete_bulk(Result, Result.experiment_id == experiment_id)

    @operation
    def get_review_summary(self) -> list[dict]:
        """Per experiment with results: ``total`` results and how many are ``needs_review``,
        ``reviewed`` and ``complete``; ordered by ``experiment_id``."""
        Result = self.models.result

        def count(status: str) -> peewee.Node:
            return peewee.fn.SUM(peewee.Case(None, [(Result.status == status, 1)], 0))

        query = (Result.select(Result.experiment_id, peewee.fn.COUNT(Result.id).alias("total"),
                               count("needs-review").alias("needs_review"), count("reviewed").alias("reviewed"),
                               count("complete").alias("complete"))
                 .group_by(Result.experiment_id).order_by(Result.experiment_id).dicts())
        with self.backend.read():
            return [{"experiment_id": row["experiment_id"], "total": int(row["total"]),
                     "needs_review": int(row["needs_review"] or 0), "reviewed": int(row["reviewed"] or 0),
                     "complete": int(row["complete"] or 0)} for row in query]

    # ------------------------------------------------------------------ hooks of the datasets domain

    @operation
    def detach_dataset(self, *, dataset_id: str) -> int:
        """Delete the results of every experiment on ``dataset_id`` and clear those experiments'
        ``dataset_id`` and ``dataset_version``, in one transaction; returns how many experiments
        were detached.  Safe to repeat."""
        problems = Problems()
        check_id(problems, "dataset_id", dataset_id)
        problems.raise_if_any()
        with self.backend.write(("dataset", dataset_id)):
            return detach_dataset_rows(self.backend, self.models, dataset_id)

    @operation
    def redact_item_results(self, *, dataset_id: str, item_id: str, purged_at: datetime | str | None = None) -> int:
        """Redact every result for ``item_id`` in experiments on ``dataset_id`` (its content is
        cleared; ids, timing, tenancy and review status stay); returns the count.  Safe to repeat."""
        problems = Problems()
        check_id(problems, "dataset_id", dataset_id)
        check_id(problems, "item_id", item_id)
        if purged_at is not None:
            try:
                purged_at = _TIMESTAMP_FIELD.deserialize(purged_at)
            except marshmallow.ValidationError as error:
                problems.add("purged_at", error.messages[0])
        problems.raise_if_any()
        with self.backend.write(("dataset", dataset_id)):
            return redact_item_result_rows(self.backend, self.models, dataset_id, item_id, purged_at)
