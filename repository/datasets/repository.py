"""The datasets repository: datasets, their versioned items and the version log
(spec: datasets.md).  SQLite and PostgreSQL only."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Iterator

import peewee

from ..models.datasets import JSONTextField, build_datasets_models

from ..base import ITER_CHUNK, DomainRepository, check_chunk_size, fetch_page, operation, order_terms, streaming
from ..errors import VALIDATION_STATUS_ORDER, ConflictError, NotFoundError, StorageError, ValidationError
from ..page import Page
from ..purge import (LinkedTables, detach_dataset_rows, is_purged, purge_mark, purge_time,
                     redact_item_result_rows)
from ..schemas.base import load_into
from ..schemas.datasets import DatasetSchema, ItemInputSchema, ItemPayloadSchema
from ..validation import Problems, check_id, check_order_by, check_page, check_tenancy, check_text
from ..values import UNSET, chunks, format_iso, json_dumps, later_than, random_id, utc_now
from .payload import (
    ABSENT,
    NONE_IS_ABSENT,
    PAYLOAD_FIELDS,
    PayloadError,
    checked_payload,
    decode_payload,
    encode_payload,
    json_equal,
    stored_text,
)
from .validators import schema_errors, schema_failure

_DATASET_SCHEMA = DatasetSchema()
_ITEM_INPUT_SCHEMA = ItemInputSchema()
_ITEM_PAYLOAD_SCHEMA = ItemPayloadSchema()

#: Dataset fields that are absent (key omitted) when unset.
_CONFIGURATION = ("description", "metadata", "input_schema", "ground_truth_schema", "request_context_schema",
                  "tags", "target_type", "target_ids", "scorer_ids")
#: Dataset fields fixed at creation; a caller-id create must repeat them.
_IMMUTABLE = ("organization_id", "project_id", "candidate_key", "candidate_id")
#: Extra ``filters`` keys of ``list_datasets`` besides the tenancy ones.
_LIST_FILTERS = ("candidate_key", "candidate_id", "target_type", "target_ids", "name")

#: ``update_dataset`` reports at most this many failing items in ``details["failures"]``.
MAX_SCHEMA_UPDATE_FAILURES = 10
#: Ids per ``IN (...)`` list.

EMPTY_DATASET_ID = "Caller-defined dataset ID must not be empty"
IDENTITY_CONFLICT_MESSAGE = "One or more dataset item identities conflict with previously accepted items."
#: What a new item takes from its dataset: its tenancy (immutable) and the schemas it is checked
#: against (``update_dataset`` may change them: a one-statement write re-checks them).
ITEM_CHECKED = ("id", "organization_id", "project_id", "input_schema", "ground_truth_schema")
#: Datasets whose :data:`ITEM_CHECKED` values a repository keeps at most (then it starts over).
MAX_ITEM_CHECKS = 1024


# --------------------------------------------------------------------------- helpers

def _raise_problems(problems: Problems, *, code: str | None = None, message: str | None = None) -> None:
    """Raise the collected problems as one :class:`ValidationError` carrying ``details["code"]``."""
    if not problems:
        return
    status = next(s for s in VALIDATION_STATUS_ORDER if s in problems.statuses)
    raise ValidationError(message, fields=problems.fields, status=status,
                          details={"code": code} if code else None)


def _check_ids(problems: Problems, **ids: Any) -> None:
    """Id arguments: non-empty strings that can be stored."""
    for name, value in ids.items():
        check_id(problems, name, value)
        check_text(problems, name, value)


def _check_version(problems: Problems, name: str, value: Any, *, required: bool) -> None:
    if value is None and not required:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        problems.add(name, f"{name} must be an integer >= 0")


def _scope_conditions(model: type[peewee.Model], scope: dict[str, Any]) -> list[peewee.Expression]:
    return [getattr(model, key) == value for key, value in scope.items()]


#: Item keys whose checks :func:`_fast_item` makes itself (the others go through the schema).
_FAST_ITEM_KEYS = frozenset({"input", "ground_truth", "expected_trajectory", "request_context", "metadata",
                             "external_id"})


def _fast_item(item: Any) -> dict[str, Any] | None:
    """``ItemInputSchema().load(item)`` for the common snake_case item, without marshmallow (adding
    items is a bulk path); ``None`` for anything else, which the schema then loads (and reports)."""
    if type(item) is not dict or "input" not in item or not item.keys() <= _FAST_ITEM_KEYS:
        return None
    if any(item.get(key) is not None and not isinstance(item[key], dict) for key in ("request_context", "metadata")):
        return None
    external_id = item.get("external_id")
    if external_id is not None and (not isinstance(external_id, str) or not external_id):
        return None
    return dict(item)


def _not_found_dataset(dataset_id: str) -> NotFoundError:
    return NotFoundError(f"Dataset not found: {dataset_id}", details={"dataset_id": dataset_id})


def _not_found_item(item_id: str) -> NotFoundError:
    return NotFoundError(f"Item not found: {item_id}", details={"item_id": item_id})


def _dataset_mismatch(item_id: str, dataset_id: str) -> ValidationError:
    message = f"Item {item_id} does not belong to dataset {dataset_id}"
    return ValidationError(message, fields={"dataset_id": [message]},
                           details={"code": "DATASET_MISMATCH", "item_id": item_id, "dataset_id": dataset_id})


class DatasetsRepository(DomainRepository):
    """Evaluation datasets with versioned items.

    Every call that changes items (add, update, delete, batch insert or delete) is one version
    step of the dataset; old item rows are kept, so the items of any version can be read back.

    Example::

        datasets = storage.get_store("datasets")
        dataset = datasets.create_dataset(name="support-questions",
                                          input_schema={"type": "object", "required": ["question"]})
        item = datasets.add_item(dataset_id=dataset["id"], input={"question": "Where is my order?"},
                                 ground_truth={"answer": "In transit"}, external_id="q-1")
        datasets.get_items_by_version(dataset_id=dataset["id"], version=1)
    """

    domain = "datasets"
    rejects_unstorable_text = True

    def __init__(self, *, store: Any = None, **options: Any) -> None:
        super().__init__(store=store, **options)
        self._experiments = LinkedTables.experiments()
        self._linked_experiments: Any = None
        #: Per dataset id, what a new item takes from its dataset (:data:`ITEM_CHECKED`) as the
        #: last locked read found it: what :meth:`_write_new_item` validates against.
        self._item_checks: dict[str, dict[str, Any]] = {}

    def build_models(self, database: peewee.DatabaseProxy) -> Any:
        return build_datasets_models(database)

    # ------------------------------------------------------------------ experiments (datasets.md §8)

    def link_experiments(self, experiments: Any) -> None:
        """Have deletes and purges also reach ``experiments``, an experiments repository in another
        database (its ``detach_dataset`` / ``redact_item_results`` hooks run right after this
        repository's transaction commits).  The composite store links them; ``None`` unlinks."""
        self._linked_experiments = experiments

    def _local_experiments(self) -> Any:
        """The experiments models on this repository's own database when ``mastra_experiments``
        exists there (whichever store created it), else ``None``."""
        return self._experiments.get(self)

    # ------------------------------------------------------------------ records

    @staticmethod
    def _dataset_record(row: dict[str, Any]) -> dict[str, Any]:
        record = {"id": row["id"], "name": row["name"]}
        for key in _CONFIGURATION:
            if row.get(key) is not None:
                record[key] = row[key]
        for key in _IMMUTABLE:
            record[key] = row.get(key)
        record.update(version=row["version"], created_at=row["created_at"], updated_at=row["updated_at"])
        return record

    @staticmethod
    def _item_record(row: dict[str, Any], *, history: bool = False,
                     payload: dict[str, Any] | None = None) -> dict[str, Any]:
        """The record of an item row; ``payload``, for a row just written from it, holds the
        checked payload values (fresh copies), so the JSON text need not be decoded again."""
        record = {"id": row["id"], "dataset_id": row["dataset_id"], "dataset_version": row["dataset_version"],
                  "external_id": row["external_id"], "organization_id": row["organization_id"],
                  "project_id": row["project_id"]}
        for field in PAYLOAD_FIELDS:
            if payload is None:
                value = decode_payload(field, row[field])
            else:  # what decoding the encoded value gives
                value = payload.get(field, ABSENT)
                if value is None and field in NONE_IS_ABSENT:
                    value = ABSENT
            if value is ABSENT:
                if field != "input":
                    continue
                value = None  # input is required; a NULL written elsewhere reads as JSON null
            record[field] = value
        record.update(created_at=row["created_at"], updated_at=row["updated_at"])
        if history:
            record.update(valid_to=row["valid_to"], is_deleted=bool(row["is_deleted"]))
        return record

    @staticmethod
    def _version_record(row: dict[str, Any]) -> dict[str, Any]:
        return {"id": row["id"], "dataset_id": row["dataset_id"], "version": row["version"],
                "created_at": row["created_at"]}

    # ------------------------------------------------------------------ reads

    def _datasets(self, dataset_id: str, scope: dict[str, Any] | None = None) -> peewee.ModelSelect:
        Dataset = self.models.dataset
        return self.backend.select(Dataset).where(Dataset.id == dataset_id,
                                                  *_scope_conditions(Dataset, scope or {}))

    def _locked_dataset(self, dataset_id: str, scope: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """The dataset row, locked until the transaction ends, or ``None`` (missing or out of scope)."""
        Dataset, backend, names = self.models.dataset, self.backend, tuple(scope or ())

        def build() -> peewee.ModelSelect:
            query = backend.select(Dataset).where(Dataset.id == backend.param("id"),
                                                  *(getattr(Dataset, name) == backend.param(name) for name in names))
            return backend.for_update(query).limit(1)

        # A prepared statement: every item write starts with this read.
        return backend.prepared((Dataset, names), build).first(id=dataset_id, **(scope or {}))

    def _bumped_dataset(self, dataset_id: str, scope: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """:meth:`_locked_dataset` with its ``version`` already raised by one: the version step's
        ``UPDATE`` whose ``RETURNING`` is the locked read (one statement instead of two), for a
        write sure to make a version (:meth:`_version_step` with ``bumped``)."""
        Dataset, backend, names = self.models.dataset, self.backend, tuple(scope or ())

        def where() -> peewee.Expression:
            condition = Dataset.id == backend.param("id")
            for name in names:
                condition &= getattr(Dataset, name) == backend.param(name)
            return condition

        rows = backend.update_returning(Dataset, where, {}, Dataset._meta.sorted_fields, shape=(Dataset, names),
                                        params={"id": dataset_id, **(scope or {})},
                                        computed=lambda: {Dataset.version: Dataset.version + 1})
        return rows[0] if rows else None

    def _dataset_for_items(self, dataset_id: str, scope: dict[str, Any], filters: Any) -> dict[str, Any] | None:
        """The locked dataset of an item delete or purge: ``None`` (a silent no-op) when it is missing
        or out of scope and ``filters`` were given, :class:`NotFoundError` without ``filters``."""
        dataset = self._locked_dataset(dataset_id, scope)
        if dataset is None and filters is None:
            raise _not_found_dataset(dataset_id)
        return dataset

    def _items(self) -> peewee.ModelSelect:
        """``SELECT`` of item rows with the payload columns as stored JSON text (JSON ``null`` stays
        distinct from SQL NULL)."""
        Item = self.models.item
        columns = [self.backend.json_as_text(field).alias(field.name) if isinstance(field, JSONTextField) else field
                   for field in Item._meta.sorted_fields]
        return self.backend.select(Item, *columns)

    def _current(self) -> peewee.Expression:
        Item = self.models.item
        return Item.valid_to.is_null() & (Item.is_deleted == False)  # noqa: E712 - SQL, not Python

    def _visible_at(self, version: int) -> peewee.Expression:
        Item = self.models.item
        return ((Item.dataset_version <= version) & (Item.valid_to.is_null() | (Item.valid_to > version))
                & (Item.is_deleted == False))  # noqa: E712

    def _newest_first(self) -> list[Any]:
        Item = self.models.item
        return order_terms(Item.created_at, True, Item.id)

    def _current_row(self, item_id: str) -> dict[str, Any] | None:
        Item = self.models.item
        return self._items().where(Item.id == item_id, self._current()).order_by(Item.dataset_version.desc()).first()

    # ------------------------------------------------------------------ version step (datasets.md §3)

    def _version_step(self, dataset: dict[str, Any], closed_ids: list[str], new_rows: list[dict[str, Any]],
                      now: datetime, *, bumped: bool = False) -> int:
        """One version ``V = version + 1`` inside the caller's write transaction: stores ``V`` on the
        dataset, closes the current rows of ``closed_ids`` (``valid_to = V``), inserts ``new_rows``
        as of ``V`` and logs the version.  Returns ``V``.  ``bumped``: the dataset was read with
        ``V`` already stored (:meth:`_bumped_dataset`)."""
        Dataset, Item, Version = self.models.dataset, self.models.item, self.models.version
        version = dataset["version"] if bumped else dataset["version"] + 1
        if not bumped:
            self.backend.replace(Dataset, dataset, {"version": version})  # read (locked) in this transaction
        for chunk in chunks(closed_ids):
            self.backend.update(Item, (Item.dataset_id == dataset["id"]) & Item.id.in_(chunk) & self._current(),
                                {"valid_to": version})
        for row in new_rows:
            row["dataset_version"] = version
        self.backend.insert(Item, new_rows)
        self.backend.insert(Version, [{"id": random_id(), "dataset_id": dataset["id"], "version": version,
                                       "created_at": now}])
        dataset["version"] = version
        return version

    @staticmethod
    def _item_row(dataset: dict[str, Any], item_id: str, external_id: str | None, payload: dict[str, Any], *,
                  created_at: datetime, now: datetime, deleted: bool = False) -> dict[str, Any]:
        """A new item row; ``payload`` maps every payload field to its stored JSON text (or NULL)."""
        return {"id": item_id, "dataset_id": dataset["id"], "dataset_version": None, "external_id": external_id,
                "organization_id": dataset["organization_id"], "project_id": dataset["project_id"],
                "valid_to": None, "is_deleted": deleted, **payload, "created_at": created_at, "updated_at": now}

    def _tombstone(self, dataset: dict[str, Any], current: dict[str, Any], now: datetime) -> dict[str, Any]:
        """The last row of a deleted item: the closed row's payload, ``external_id`` and ``created_at``."""
        payload = {field: stored_text(field, current[field]) for field in PAYLOAD_FIELDS}
        return self._item_row(dataset, current["id"], current["external_id"], payload,
                              created_at=current["created_at"], now=now, deleted=True)

    # ------------------------------------------------------------------ datasets

    def _load_dataset_fields(self, problems: Problems, values: dict[str, Any], *, partial: bool) -> dict[str, Any]:
        """Validate dataset fields; ``None`` means unset (except for ``name``, which may not be null)."""
        for key, value in values.items():
            check_text(problems, key, value)
        given = {key: value for key, value in values.items() if value is not None or key == "name"}
        loaded = load_into(problems, _DATASET_SCHEMA, given, partial=partial) or {}
        return {key: loaded.get(key) for key in values}

    @operation
    def create_dataset(self, *, name: str, id: str | None = None, description: str | None = None,
                       metadata: dict | None = None, input_schema: dict | None = None,
                       ground_truth_schema: dict | None = None, request_context_schema: dict | None = None,
                       tags: list[str] | None = None, target_type: str | None = None,
                       target_ids: list[str] | None = None, scorer_ids: list[str] | None = None,
                       organization_id: str | None = None, project_id: str | None = None,
                       candidate_key: str | None = None, candidate_id: str | None = None) -> dict:
        """Create a dataset at version 0.

        With a caller-defined ``id`` that exists, the stored record is returned unchanged when its
        tenancy and candidate fields equal the given ones, else :class:`ConflictError`
        (``ID_CONFLICT``).
        """
        problems = Problems()
        if id == "":
            problems.add("id", EMPTY_DATASET_ID)
        elif id is not None:
            _check_ids(problems, id=id)
        values = self._load_dataset_fields(problems, {
            "name": name, "description": description, "metadata": metadata, "input_schema": input_schema,
            "ground_truth_schema": ground_truth_schema, "request_context_schema": request_context_schema,
            "tags": tags, "target_type": target_type, "target_ids": target_ids, "scorer_ids": scorer_ids,
            "organization_id": organization_id, "project_id": project_id, "candidate_key": candidate_key,
            "candidate_id": candidate_id}, partial=False)
        if id == "":
            only = problems.fields == {"id": [EMPTY_DATASET_ID]}
            _raise_problems(problems, code="INVALID_ID", message=EMPTY_DATASET_ID if only else None)
        _raise_problems(problems)

        now = utc_now()
        row = {"id": id or random_id(), **values, "version": 0, "created_at": now, "updated_at": now}
        Dataset = self.models.dataset
        with self.backend.write(("dataset", row["id"])):
            if id is None:
                self.backend.insert(Dataset, [row])
                self._remember_item_checks(row)
                return self._dataset_record(row)
            # Concurrent identical creates: one insert wins, every caller reads the stored row.
            self.backend.insert_if_absent(Dataset, [row])
            stored = self._locked_dataset(id)
        differing = [key for key in _IMMUTABLE if stored.get(key) != row[key]]
        if differing:
            raise ConflictError(f"Dataset {id} already exists with different {', '.join(differing)}",
                                details={"code": "ID_CONFLICT", "id": id, "reason": "IMMUTABLE_FIELDS_MISMATCH",
                                         "fields": differing})
        return self._dataset_record(stored)

    @operation
    def get_dataset_by_id(self, *, id: str, filters: dict | None = None) -> dict | None:
        """The dataset, or ``None`` when it is missing or outside the ``filters`` tenancy scope."""
        problems = Problems()
        _check_ids(problems, id=id)
        scope = check_tenancy(problems, filters)
        check_text(problems, "filters", scope)
        _raise_problems(problems)
        row = self._datasets(id, scope).first()
        return None if row is None else self._dataset_record(row)

    @operation
    def update_dataset(self, *, id: str, filters: dict | None = None, name: str = UNSET,
                       description: str | None = UNSET, metadata: dict | None = UNSET,
                       input_schema: dict | None = UNSET, ground_truth_schema: dict | None = UNSET,
                       request_context_schema: dict | None = UNSET, tags: list[str] | None = UNSET,
                       target_type: str | None = UNSET, target_ids: list[str] | None = UNSET,
                       scorer_ids: list[str] | None = UNSET) -> dict:
        """Change the given fields (``None`` unsets one; ``metadata`` is replaced whole).

        A changed ``input_schema`` or ``ground_truth_schema`` must accept every current item, else
        :class:`ValidationError` (``SCHEMA_UPDATE_VALIDATION_FAILED``) and nothing changes.
        Tenancy, candidate fields and ``version`` never change here.
        """
        problems = Problems()
        _check_ids(problems, id=id)
        scope = check_tenancy(problems, filters)
        check_text(problems, "filters", scope)
        given = {key: value for key, value in {
            "name": name, "description": description, "metadata": metadata, "input_schema": input_schema,
            "ground_truth_schema": ground_truth_schema, "request_context_schema": request_context_schema,
            "tags": tags, "target_type": target_type, "target_ids": target_ids,
            "scorer_ids": scorer_ids}.items() if value is not UNSET}
        values = self._load_dataset_fields(problems, given, partial=True)
        _raise_problems(problems)

        Dataset = self.models.dataset
        with self.backend.write(("dataset", id)):
            row = self._locked_dataset(id, scope)
            if row is None:
                raise _not_found_dataset(id)
            self._check_schema_change(row, values)
            values["updated_at"] = later_than(row["updated_at"], utc_now())
            self.backend.update(Dataset, Dataset.id == id, values)
        self._remember_item_checks({**row, **values})
        return self._dataset_record({**row, **values})

    def _check_schema_change(self, dataset: dict[str, Any], values: dict[str, Any]) -> None:
        """Every current item must pass the schemas the dataset would have after the update."""
        changed = [key for key in ("input_schema", "ground_truth_schema")
                   if key in values and not json_equal(values[key], dataset[key])]
        if not changed:
            return
        schemas = {"input": values.get("input_schema", dataset["input_schema"]),
                   "ground_truth": values.get("ground_truth_schema", dataset["ground_truth_schema"])}
        schemas = {field: schema for field, schema in schemas.items() if isinstance(schema, dict)}
        if not schemas:
            return
        Item = self.models.item
        items = self._items().where(Item.dataset_id == dataset["id"], self._current()).order_by(*self._newest_first())
        failing, failures = 0, []
        for index, item in enumerate(items.iterator()):
            failed = False
            for field, schema in schemas.items():
                value = decode_payload(field, item[field])
                if value is ABSENT:
                    if field != "input":
                        continue
                    value = None
                errors = schema_errors(dataset["id"], schema, value)
                if errors:
                    failed = True
                    if len(failures) < MAX_SCHEMA_UPDATE_FAILURES:
                        failures.append({"item_id": item["id"], "index": index, "field": field, "errors": errors})
            failing += failed
        if failing:
            message = f"Cannot update schema: {failing} existing item(s) would fail validation"
            raise ValidationError(message, fields={key: [message] for key in changed},
                                  details={"code": "SCHEMA_UPDATE_VALIDATION_FAILED", "failures": failures})

    @operation
    def delete_dataset(self, *, id: str, filters: dict | None = None) -> None:
        """Delete the dataset with all its items, their history and its versions; experiments on it
        are detached (kept, with ``dataset_id``/``dataset_version`` ``None``) and lose their
        results.  A missing or out-of-scope dataset is a silent no-op."""
        problems = Problems()
        _check_ids(problems, id=id)
        scope = check_tenancy(problems, filters)
        check_text(problems, "filters", scope)
        _raise_problems(problems)
        Dataset, Item, Version = self.models.dataset, self.models.item, self.models.version
        with self.backend.write(("dataset", id)):
            if self._locked_dataset(id, scope) is None:
                return
            experiments = self._local_experiments()
            if experiments is not None:
                detach_dataset_rows(self.backend, experiments, id)
            self.backend.delete(Version, Version.dataset_id == id)
            self.backend.delete(Item, Item.dataset_id == id)
            self.backend.delete(Dataset, Dataset.id == id)
        if self._linked_experiments is not None:
            # Experiments in another database: a second, non-atomic step (safe to repeat).
            self._linked_experiments.detach_dataset(dataset_id=id)

    @operation
    def list_datasets(self, *, page: int = 0, per_page: int | bool = 100, filters: dict | None = None,
                      order_by: dict | None = None) -> Page:
        """Datasets, newest first by default.

        ``filters``: ``organization_id``, ``project_id``, ``candidate_key``, ``candidate_id``,
        ``target_type`` (exact); ``target_ids`` (any of them among the dataset's); ``name``
        (case-insensitive substring).
        """
        problems = Problems()
        request = check_page(problems, page, per_page, default_per_page=100)
        ordering = check_order_by(problems, order_by, allowed=("created_at", "updated_at", "name"),
                                  default_field="created_at", default_direction="DESC")
        query, predicate = self._matching_datasets(problems, filters)
        _raise_problems(problems)
        Dataset = self.models.dataset
        order = order_terms(getattr(Dataset, ordering.field), ordering.descending, Dataset.id)
        rows, total, has_more = fetch_page(self.backend, query, order, request, predicate=predicate)
        return Page([self._dataset_record(r) for r in rows], total, request.page, request.per_page, has_more)

    # ------------------------------------------------------------------ item writes

    @operation
    def add_item(self, *, dataset_id: str, input: Any, external_id: str | None = None, ground_truth: Any = UNSET,
                 expected_trajectory: Any = UNSET, tool_mocks: list | None = UNSET,
                 unmocked_tool_policy: str | None = UNSET, scorer_ids: list[str] | None = UNSET,
                 request_context: dict | None = UNSET, metadata: dict | None = UNSET, source: dict | None = UNSET,
                 filters: dict | None = None) -> dict:
        """Add one item (one version step), or return the existing item for an exact retry of its
        ``external_id``.  ``input`` may be ``None`` (JSON null); a payload field left at ``UNSET``
        is absent."""
        item = {key: value for key, value in {
            "input": input, "ground_truth": ground_truth, "expected_trajectory": expected_trajectory,
            "tool_mocks": tool_mocks, "unmocked_tool_policy": unmocked_tool_policy, "scorer_ids": scorer_ids,
            "request_context": request_context, "metadata": metadata, "source": source}.items()
            if value is not UNSET}
        if external_id is not None:
            item["external_id"] = external_id
        return self._insert_items(dataset_id, [item], filters, single=True)[0]

    @operation
    def batch_insert_items(self, *, dataset_id: str, items: list[dict], filters: dict | None = None) -> list[dict]:
        """Add items in one version step; returns one item per input position (retries of a stored
        ``external_id`` return that item's current row).  All or nothing."""
        return self._insert_items(dataset_id, items, filters, single=False)

    def _insert_items(self, dataset_id: str, items: Any, filters: Any, *, single: bool) -> list[dict]:
        def prefix(index: int) -> str:
            return "item" if single else f"items[{index}]"

        problems = Problems()
        _check_ids(problems, dataset_id=dataset_id)
        scope = check_tenancy(problems, filters)
        check_text(problems, "filters", scope)
        loaded: list[dict[str, Any]] = []
        empty_external_id = False
        if not isinstance(items, list):
            problems.add("items", "items must be a list")
        else:
            for index, item in enumerate(items):
                loaded.append(_fast_item(item) or load_into(problems, _ITEM_INPUT_SCHEMA, item, prefix(index)) or {})
                if isinstance(item, dict) and "" in (item.get("external_id"), item.get("externalId")):
                    empty_external_id = True
        _raise_problems(problems, code="ITEM_EXTERNAL_ID_INVALID" if empty_external_id else None)
        for index, item in enumerate(loaded):
            for field in PAYLOAD_FIELDS:
                if field in item:
                    item[field] = self._checked(item[field], lambda: f"{prefix(index)}.{field}")

        now = utc_now()
        # Items without an external id are all new: the write makes a version for sure, so the
        # locked read can be the version's UPDATE (a failed check rolls it back).
        bumped = bool(loaded) and not any(item.get("external_id") for item in loaded)
        if bumped and len(loaded) == 1:
            record = self._write_new_item(dataset_id, scope, loaded[0], now)
            if record is not None:
                return [record]
        with self.backend.write(("dataset", dataset_id)):
            dataset = (self._bumped_dataset if bumped else self._locked_dataset)(dataset_id, scope)
            if dataset is None:
                raise _not_found_dataset(dataset_id)
            self._remember_item_checks(dataset)
            if not loaded:
                return []
            for index, item in enumerate(loaded):
                self._check_schemas(dataset, item, index=None if single else index, prefix=prefix(index))
            positions, new_rows = self._plan_identities(dataset, loaded, now)
            if new_rows:
                self._version_step(dataset, [], new_rows, now, bumped=bumped)
        written = {id(row) for row in new_rows}
        return [self._item_record(row, payload=item if id(row) in written else None)
                for row, item in zip(positions, loaded)]

    def _remember_item_checks(self, dataset: dict[str, Any]) -> None:
        """Keep the :data:`ITEM_CHECKED` values of a dataset row just read or written."""
        if len(self._item_checks) >= MAX_ITEM_CHECKS:
            self._item_checks.clear()  # datasets no longer written drop out
        self._item_checks[dataset["id"]] = {name: dataset[name] for name in ITEM_CHECKED}

    def _write_new_item(self, dataset_id: str, scope: dict[str, Any] | None, item: dict[str, Any],
                        now: datetime) -> dict[str, Any] | None:
        """The record of ``item`` (no ``external_id``) added in one statement, where the database
        can check, bump and insert in one (PostgreSQL's data-modifying CTE); ``None`` leaves the
        write to the locked read-check-write transaction: here always."""
        return None

    @staticmethod
    def _checked(value: Any, path: str | Callable[[], str]) -> Any:
        """The JSON-value check of datasets.md §7.1: a fresh copy, or the validation error
        (``path``: as :func:`checked_payload` takes it)."""
        try:
            return checked_payload(value, path)
        except PayloadError as error:
            raise error.to_validation_error() from None

    @staticmethod
    def _check_schemas(dataset: dict[str, Any], payload: dict[str, Any], *, index: int | None, prefix: str) -> None:
        """``input`` against the dataset's ``input_schema``; ``ground_truth``, when given, against its
        ``ground_truth_schema``."""
        for field, schema_key in (("input", "input_schema"), ("ground_truth", "ground_truth_schema")):
            schema = dataset[schema_key]
            if field in payload and isinstance(schema, dict):
                errors = schema_errors(dataset["id"], schema, payload[field])
                if errors:
                    raise schema_failure(field, errors, index=index, path=f"{prefix}.{field}")

    def _identity_histories(self, dataset_id: str, external_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """Every stored row of these ``external_id``s in the dataset, oldest version first."""
        Item = self.models.item
        histories: dict[str, list[dict[str, Any]]] = {}
        for chunk in chunks(external_ids):
            query = (self._items().where(Item.dataset_id == dataset_id, Item.external_id.in_(chunk))
                     .order_by(Item.external_id, Item.dataset_version))
            for row in query:
                histories.setdefault(row["external_id"], []).append(row)
        return histories

    def _plan_identities(self, dataset: dict[str, Any], items: list[dict[str, Any]],
                         now: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Item identity (datasets.md §6): the row each input position maps to (a stored current row
        or a planned new one) and the new rows to insert.  Any conflict raises and writes nothing."""
        external_ids = list(dict.fromkeys(item["external_id"] for item in items if item.get("external_id")))
        histories = self._identity_histories(dataset["id"], external_ids)
        planned: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}  # external_id → (new row, payload)
        positions: list[dict[str, Any]] = []
        new_rows: list[dict[str, Any]] = []
        conflicts: list[dict[str, Any]] = []

        def conflict(index: int, external_id: str, existing_id: str, reason: str) -> None:
            conflicts.append({"index": index, "external_id": external_id, "existing_item_id": existing_id,
                              "reason": reason})

        for index, item in enumerate(items):
            external_id = item.get("external_id")
            if external_id in histories:
                rows = histories[external_id]
                if len({row["id"] for row in rows}) > 1:
                    raise StorageError(f"Dataset item identity history is corrupt for external_id: {external_id}",
                                       category="SYSTEM", details={"code": "IDENTITY_HISTORY_CORRUPT",
                                                                   "external_id": external_id})
                current = next((row for row in rows if row["valid_to"] is None and not row["is_deleted"]), None)
                if current is None:
                    conflict(index, external_id, rows[0]["id"], "deleted")
                elif not _same_payload(item, _stored_payload(rows[0])):
                    conflict(index, external_id, rows[0]["id"], "payload_mismatch")
                else:
                    positions.append(current)
            elif external_id in planned:
                row, payload = planned[external_id]
                if _same_payload(item, payload):
                    positions.append(row)
                else:
                    conflict(index, external_id, row["id"], "payload_mismatch")
            else:
                # Only the given fields are encoded: the others are absent (NULL).
                payload = dict.fromkeys(PAYLOAD_FIELDS)
                payload.update((field, encode_payload(field, item[field])) for field in PAYLOAD_FIELDS
                               if field in item)
                row = self._item_row(dataset, random_id(), external_id, payload, created_at=now, now=now)
                new_rows.append(row)
                positions.append(row)
                if external_id:
                    planned[external_id] = (row, item)
        if conflicts:
            raise ConflictError(IDENTITY_CONFLICT_MESSAGE,
                                details={"code": "ITEM_IDENTITY_CONFLICT", "conflicts": conflicts})
        return positions, new_rows

    @operation
    def update_item(self, *, id: str, dataset_id: str, filters: dict | None = None, input: Any = UNSET,
                    ground_truth: Any = UNSET, expected_trajectory: Any = UNSET, tool_mocks: list | None = UNSET,
                    unmocked_tool_policy: str | None = UNSET, scorer_ids: list[str] | None = UNSET,
                    request_context: dict | None = UNSET, metadata: dict | None = UNSET,
                    source: dict | None = UNSET) -> dict:
        """Replace the given payload fields of the current item (one version step; ``None`` per
        datasets.md §4.2).  Returns the new current item."""
        problems = Problems()
        _check_ids(problems, id=id, dataset_id=dataset_id)
        scope = check_tenancy(problems, filters)
        check_text(problems, "filters", scope)
        given = {key: value for key, value in {
            "input": input, "ground_truth": ground_truth, "expected_trajectory": expected_trajectory,
            "tool_mocks": tool_mocks, "unmocked_tool_policy": unmocked_tool_policy, "scorer_ids": scorer_ids,
            "request_context": request_context, "metadata": metadata, "source": source}.items()
            if value is not UNSET}
        changes = load_into(problems, _ITEM_PAYLOAD_SCHEMA, given, "item") or {}
        _raise_problems(problems)
        changes = {field: self._checked(value, f"item.{field}") for field, value in changes.items()}

        now = utc_now()
        with self.backend.write(("dataset", dataset_id)):
            dataset = self._locked_dataset(dataset_id, scope)
            if dataset is None:
                raise _not_found_dataset(dataset_id)
            self._check_schemas(dataset, changes, index=None, prefix="item")
            current = self._current_row(id)
            if current is None:
                raise _not_found_item(id)
            if current["dataset_id"] != dataset_id:
                raise _dataset_mismatch(id, dataset_id)
            if is_purged(decode_payload("metadata", current["metadata"])):
                raise ConflictError(f"Item {id} has been purged and cannot be updated",
                                    details={"code": "ITEM_PURGED", "item_id": id})
            payload = {field: encode_payload(field, changes[field]) if field in changes
                       else stored_text(field, current[field]) for field in PAYLOAD_FIELDS}
            row = self._item_row(dataset, id, current["external_id"], payload, created_at=current["created_at"],
                                 now=now)
            self._version_step(dataset, [id], [row], now)
        return self._item_record(row)

    @operation
    def delete_item(self, *, id: str, dataset_id: str, filters: dict | None = None) -> None:
        """Delete the item (one version step writing a tombstone); a missing or already deleted
        item is a no-op.  With ``filters``, a missing or out-of-scope dataset is a no-op too."""
        problems = Problems()
        _check_ids(problems, id=id, dataset_id=dataset_id)
        scope = check_tenancy(problems, filters)
        check_text(problems, "filters", scope)
        _raise_problems(problems)
        now = utc_now()
        with self.backend.write(("dataset", dataset_id)):
            dataset = self._dataset_for_items(dataset_id, scope, filters)
            if dataset is None:
                return
            current = self._current_row(id)
            if current is None:
                return
            if current["dataset_id"] != dataset_id:
                raise _dataset_mismatch(id, dataset_id)
            self._version_step(dataset, [id], [self._tombstone(dataset, current, now)], now)

    @operation
    def batch_delete_items(self, *, dataset_id: str, item_ids: list[str], filters: dict | None = None) -> None:
        """Delete these items in one version step; ids that are missing, already deleted, in another
        dataset or repeated are skipped.  Nothing is written when none is deletable."""
        problems = Problems()
        _check_ids(problems, dataset_id=dataset_id)
        scope = check_tenancy(problems, filters)
        check_text(problems, "filters", scope)
        if not isinstance(item_ids, list) or not all(isinstance(i, str) and i for i in item_ids):
            problems.add("item_ids", "item_ids must be a list of non-empty strings")
        else:
            check_text(problems, "item_ids", item_ids)
        _raise_problems(problems)
        wanted = list(dict.fromkeys(item_ids))
        Item = self.models.item
        now = utc_now()
        with self.backend.write(("dataset", dataset_id)):
            dataset = self._dataset_for_items(dataset_id, scope, filters)
            if dataset is None:
                return
            current: dict[str, dict[str, Any]] = {}
            for chunk in chunks(wanted):
                for row in self._items().where(Item.dataset_id == dataset_id, Item.id.in_(chunk), self._current()):
                    current[row["id"]] = row
            deletable = [item_id for item_id in wanted if item_id in current]
            if deletable:
                self._version_step(dataset, deletable,
                                   [self._tombstone(dataset, current[i], now) for i in deletable], now)

    @operation
    def purge_item(self, *, id: str, dataset_id: str, filters: dict | None = None) -> None:
        """Irreversibly remove the item's content from every row of its history (no version step):
        ``input`` becomes JSON null, the other payload fields absent, ``metadata`` records the
        purge.  Results of experiments on the dataset for this item are redacted too."""
        problems = Problems()
        _check_ids(problems, id=id, dataset_id=dataset_id)
        scope = check_tenancy(problems, filters)
        check_text(problems, "filters", scope)
        _raise_problems(problems)
        Item = self.models.item
        with self.backend.write(("dataset", dataset_id)):
            dataset = self._dataset_for_items(dataset_id, scope, filters)
            if dataset is None:
                return
            rows = list(self._items().where(Item.id == id, Item.dataset_id == dataset_id))
            if not rows:
                raise _not_found_item(id)
            marks = [decode_payload("metadata", row["metadata"]) for row in rows]
            if all(is_purged(mark) for mark in marks):
                purged_at = purge_time(marks[0])  # purging again is a no-op
            else:
                purged_at = format_iso(utc_now())
                values: dict[str, Any] = {field: None for field in PAYLOAD_FIELDS}
                values.update(input=json_dumps(None), metadata=json_dumps(purge_mark(purged_at)))
                self.backend.update(Item, (Item.id == id) & (Item.dataset_id == dataset_id), values)
                experiments = self._local_experiments()
                if experiments is not None:
                    redact_item_result_rows(self.backend, experiments, dataset_id, id, purged_at)
        if self._linked_experiments is not None:
            # Experiments in another database: a second, non-atomic step (safe to repeat).
            self._linked_experiments.redact_item_results(dataset_id=dataset_id, item_id=id, purged_at=purged_at)

    # ------------------------------------------------------------------ item reads

    @operation
    def get_item_by_id(self, *, id: str, dataset_version: int | None = None) -> dict | None:
        """The current item, or with ``dataset_version=N`` the row visible at version ``N``; ``None``
        when there is none."""
        problems = Problems()
        _check_ids(problems, id=id)
        _check_version(problems, "dataset_version", dataset_version, required=False)
        _raise_problems(problems)
        Item = self.models.item
        if dataset_version is None:
            row = self._current_row(id)
        else:
            row = (self._items().where(Item.id == id, self._visible_at(dataset_version))
                   .order_by(Item.dataset_version.desc()).first())
        return None if row is None else self._item_record(row)

    @operation
    def get_items_by_version(self, *, dataset_id: str, version: int) -> list[dict]:
        """Every item visible at ``version``, newest ``created_at`` first (``[]`` at version 0)."""
        problems = Problems()
        _check_ids(problems, dataset_id=dataset_id)
        _check_version(problems, "version", version, required=True)
        _raise_problems(problems)
        Item = self.models.item
        query = self._items().where(Item.dataset_id == dataset_id, self._visible_at(version))
        return [self._item_record(row) for row in query.order_by(*self._newest_first())]

    @operation
    def get_item_history(self, *, item_id: str) -> list[dict]:
        """Every row of the item, tombstones included, newest version first, as history rows (items
        plus ``valid_to`` and ``is_deleted``)."""
        problems = Problems()
        _check_ids(problems, item_id=item_id)
        _raise_problems(problems)
        Item = self.models.item
        query = self._items().where(Item.id == item_id).order_by(Item.dataset_version.desc())
        return [self._item_record(row, history=True) for row in query]

    @operation
    def list_items(self, *, dataset_id: str, version: int | None = None, search: str | None = None,
                   filters: dict | None = None, page: int = 0, per_page: int | bool = 100,
                   order_by: dict | None = None) -> Page:
        """The current items (or those visible at ``version``), newest first by default.

        ``search`` keeps items whose ``input`` or ``ground_truth`` JSON text contains it,
        case-insensitively; ``filters`` scope the item rows by tenancy.
        """
        problems = Problems()
        request = check_page(problems, page, per_page, default_per_page=100)
        ordering = check_order_by(problems, order_by, allowed=("created_at", "updated_at"),
                                  default_field="created_at", default_direction="DESC")
        query = self._matching_items(problems, dataset_id=dataset_id, version=version, search=search,
                                     filters=filters)
        _raise_problems(problems)
        Item = self.models.item
        order = order_terms(getattr(Item, ordering.field), ordering.descending, Item.id)
        rows, total, has_more = fetch_page(self.backend, query, order, request)
        return Page([self._item_record(r) for r in rows], total, request.page, request.per_page, has_more)

    @streaming
    def iter_datasets(self, *, filters: dict | None = None, chunk_size: int = ITER_CHUNK) -> Iterator[dict]:
        """Every dataset matching the ``filters`` of :meth:`list_datasets` as it gives them, in
        id order, read ``chunk_size`` at a time (constant memory)."""
        problems = Problems()
        check_chunk_size(problems, chunk_size)
        query, predicate = self._matching_datasets(problems, filters)
        _raise_problems(problems)
        return self.iter_query(query, self._dataset_record, chunk_size, predicate=predicate)

    def _matching_datasets(self, problems: Problems, filters: Any
                           ) -> tuple[peewee.ModelSelect | None, Callable[[dict], bool] | None]:
        """The ``filters`` of :meth:`list_datasets` (and :meth:`iter_datasets`) checked into
        ``problems``; when every check so far passed, the select of the matching datasets and
        the predicate of ``target_ids`` (checked in Python)."""
        conditions = check_tenancy(problems, filters, extra=_LIST_FILTERS)
        for key in ("candidate_key", "candidate_id", "target_type", "name"):
            if key in conditions and not isinstance(conditions[key], str):
                problems.add(f"filters.{key}", "Not a valid string.")
        target_ids = conditions.pop("target_ids", [])
        if not isinstance(target_ids, (list, tuple)) or not all(isinstance(t, str) for t in target_ids):
            problems.add("filters.target_ids", "Not a valid list of strings.")
        check_text(problems, "filters", {**conditions, "target_ids": target_ids})
        if problems:
            return None, None
        Dataset = self.models.dataset
        name = conditions.pop("name", "")
        query = self.backend.select(Dataset)
        for condition in _scope_conditions(Dataset, conditions):
            query = query.where(condition)
        if name:
            query = query.where(Dataset.name.contains(name))
        predicate = None
        if target_ids:
            wanted = set(target_ids)
            predicate = lambda row: isinstance(row["target_ids"], list) and not wanted.isdisjoint(  # noqa: E731
                t for t in row["target_ids"] if isinstance(t, str))
        return query, predicate

    @streaming
    def iter_dataset_items(self, *, dataset_id: str, version: int | None = None, search: str | None = None,
                           filters: dict | None = None, chunk_size: int = ITER_CHUNK) -> Iterator[dict]:
        """The current items of a dataset (or those visible at ``version``) matching ``search``
        and the tenancy ``filters`` (those of :meth:`list_items`) as it gives them, in key order,
        read ``chunk_size`` at a time (constant memory)."""
        problems = Problems()
        check_chunk_size(problems, chunk_size)
        query = self._matching_items(problems, dataset_id=dataset_id, version=version, search=search,
                                     filters=filters)
        _raise_problems(problems)
        return self.iter_query(query, self._item_record, chunk_size)

    def _matching_items(self, problems: Problems, *, dataset_id: Any, version: Any, search: Any,
                        filters: Any) -> peewee.ModelSelect | None:
        """The filters of :meth:`list_items` (and :meth:`iter_dataset_items`) checked into
        ``problems``; the select of the matching items when every check so far passed."""
        _check_ids(problems, dataset_id=dataset_id)
        _check_version(problems, "version", version, required=False)
        if search is not None:
            if not isinstance(search, str):
                problems.add("search", "Not a valid string.")
            else:
                check_text(problems, "search", search)
        scope = check_tenancy(problems, filters)
        check_text(problems, "filters", scope)
        if problems:
            return None
        Item = self.models.item
        visible = self._current() if version is None else self._visible_at(version)
        query = self._items().where(Item.dataset_id == dataset_id, visible, *_scope_conditions(Item, scope))
        if search:
            query = query.where(self.backend.json_text(Item.input).contains(search)
                                | self.backend.json_text(Item.ground_truth).contains(search))
        return query

    # ------------------------------------------------------------------ versions

    @operation
    def create_dataset_version(self, *, dataset_id: str, version: int) -> dict:
        """Insert one version row without touching the dataset or its items (low level: the item
        methods log their own versions)."""
        problems = Problems()
        _check_ids(problems, dataset_id=dataset_id)
        _check_version(problems, "version", version, required=True)
        _raise_problems(problems)
        Version = self.models.version
        row = {"id": random_id(), "dataset_id": dataset_id, "version": version, "created_at": utc_now()}
        with self.backend.write(("dataset", dataset_id)):
            if self._locked_dataset(dataset_id) is None:
                raise _not_found_dataset(dataset_id)
            taken = self.backend.select(Version, Version.id).where(Version.dataset_id == dataset_id,
                                                                   Version.version == version).first()
            if taken is not None:
                raise ConflictError(f"Version {version} of dataset {dataset_id} already exists",
                                    details={"dataset_id": dataset_id, "version": version})
            self.backend.insert(Version, [row])
        return self._version_record(row)

    @operation
    def list_dataset_versions(self, *, dataset_id: str, page: int = 0, per_page: int | bool = 100) -> Page:
        """The dataset's version rows, highest version first."""
        problems = Problems()
        request = check_page(problems, page, per_page, default_per_page=100)
        _check_ids(problems, dataset_id=dataset_id)
        _raise_problems(problems)
        Version = self.models.version
        query = self.backend.select(Version).where(Version.dataset_id == dataset_id)
        order = order_terms(Version.version, True, Version.id)
        rows, total, has_more = fetch_page(self.backend, query, order, request)
        return Page([self._version_record(r) for r in rows], total, request.page, request.per_page, has_more)


# --------------------------------------------------------------------------- identity helpers

def _stored_payload(row: dict[str, Any]) -> dict[str, Any]:
    """The payload of a stored item row, absent fields as ``None`` (for identity comparison)."""
    payload = {}
    for field in PAYLOAD_FIELDS:
        value = decode_payload(field, row[field])
        payload[field] = None if value is ABSENT else value
    return payload


def _same_payload(item: dict[str, Any], other: dict[str, Any]) -> bool:
    """Whether two payloads are equal as JSON values, absent fields counting as ``None``."""
    return all(json_equal(item.get(field), other.get(field)) for field in PAYLOAD_FIELDS)
