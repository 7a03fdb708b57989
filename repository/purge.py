"""The purge contract between the datasets and experiments domains, in one place both import
(neither domain imports the other).

The contract (spec: ``datasets.md`` §5.12 and §8, ``experiments.md`` §5.8, §5.15 and §6):

* **The purge mark.**  ``purge_item`` leaves every history row of the item with
  ``metadata = {"__purged": true, "purgedAt": "<ISO-8601 ms Z>"}`` (:func:`purge_mark`);
  :func:`is_purged` recognizes it and :func:`purge_time` reads its time back.
* **Redaction.**  Every result of that item in experiments on its dataset is redacted
  (:func:`redacted_result_values`): content cleared, ids, timing, tenancy and review status kept.
* **Cascades.**  ``delete_dataset`` detaches the experiments on the dataset and deletes their
  results (:func:`detach_dataset_rows`); ``purge_item`` redacts the item's results
  (:func:`redact_item_result_rows`).  When the experiments tables are in the datasets
  repository's own database, the datasets repository runs these inside its own transaction; the
  experiments repository's ``detach_dataset`` / ``redact_item_results`` hooks run the same row
  work for a composite store whose experiments live in another database.
* **The purge barrier.**  When the datasets tables are in the experiments repository's database,
  ``add_experiment_result`` and ``upsert_experiment_result`` look, inside their transaction, for a
  row of the item in the experiment's dataset carrying the purge mark
  (:func:`purge_barrier`), and store the redacted form when there is one.  Each domain finds the
  other's tables through :class:`LinkedTables`.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any, Callable

import peewee

from .models.datasets import build_datasets_models
from .models.experiments import build_experiments_models

from .backends.base import Backend
from .base import DomainRepository
from .values import format_iso, json_loads, to_utc, utc_now


# --------------------------------------------------------------------------- the purge mark

def purge_mark(purged_at: str) -> dict[str, Any]:
    """The ``metadata`` of a purged item row or redacted result (``purged_at``: ISO text)."""
    return {"__purged": True, "purgedAt": purged_at}


def is_purged(metadata: Any) -> bool:
    """Whether decoded ``metadata`` is a purge mark."""
    return isinstance(metadata, dict) and metadata.get("__purged") is True


def purge_time(metadata: Any) -> str:
    """The ``purgedAt`` of a stored purge mark (raw JSON text, a JSONB blob or decoded); now
    when another client wrote the mark without one."""
    stored = json_loads(metadata)
    stamp = stored.get("purgedAt") if isinstance(stored, dict) else None
    return stamp if isinstance(stamp, str) else format_iso(utc_now())


def redacted_result_values(purged_at: datetime | str | None = None) -> dict[str, Any]:
    """The field values of a redacted result (experiments.md §6); timing, ids, tenancy and review
    status are not among them, so they are kept."""
    stamp = purged_at if isinstance(purged_at, str) else format_iso(to_utc(purged_at or utc_now()))
    return {"input": None, "output": None, "ground_truth": None, "error": None, "tags": None,
            "tool_mock_report": None, "comment": None, "metadata": purge_mark(stamp)}


# --------------------------------------------------------------------------- the other domain's tables

class LinkedTables:
    """The other domain's models bound to a repository's own database, built (and prepared for
    its backend) on first use, and handed out once the domain's ``table`` exists there."""

    def __init__(self, build_models: Callable[[peewee.DatabaseProxy], Any], table: str) -> None:
        self._build_models = build_models
        self._table = table
        self._lock = threading.Lock()
        self._models: Any = None
        self._seen = False

    @classmethod
    def datasets(cls) -> "LinkedTables":
        """The datasets tables, present when ``mastra_dataset_items`` is (``.item`` is its model)."""
        return cls(build_datasets_models, "item")

    @classmethod
    def experiments(cls) -> "LinkedTables":
        """The experiments tables, present when ``mastra_experiments`` is (``.experiment``, ``.result``)."""
        return cls(build_experiments_models, "experiment")

    def get(self, repository: DomainRepository) -> Any | None:
        """The models on ``repository``'s database, or ``None`` while the table is missing there
        (whichever store creates it later)."""
        with self._lock:
            if self._models is None:
                models = self._build_models(repository._proxy)
                repository.backend.prepare_models(list(vars(models).values()))
                self._models = models
        # Tables are never dropped by this library, so a table once seen is remembered.
        if not self._seen:
            self._seen = getattr(self._models, self._table).table_exists()
        return self._models if self._seen else None


def purge_barrier(backend: Backend, Item: type[peewee.Model],
                  dataset_id: peewee.Node | None = None) -> list[peewee.Node]:
    """The conditions of the purge barrier on the dataset items table: a row of the item bound
    as parameter ``item_id``, in the dataset ``dataset_id`` (default: bound as parameter
    ``dataset_id``), carries the purge mark."""
    columns = Item._meta.columns
    dataset = backend.param("dataset_id") if dataset_id is None else dataset_id
    return [columns["id"] == backend.param("item_id"), columns["datasetId"] == dataset,
            backend.json_members_equal(columns["metadata"], {"__purged": True})]


# --------------------------------------------------------------------------- cascades

def _lock_dataset_experiments(backend: Backend, models: Any, dataset_id: str) -> list[str]:
    """Lock (PostgreSQL) the experiments on a dataset, in id order; returns their ids.

    Where rows have versions, the locked rows also get new ones (an unchanged value written):
    a one-statement ``add_experiment_result`` that waited for this lock reads its statement's
    snapshot, older than this transaction's purge mark, and tells by the changed row version
    that it must not write (it takes the locked path, whose later statements see the mark)."""
    Experiment = models.experiment
    query = backend.select(Experiment, Experiment.id).where(Experiment.dataset_id == dataset_id)
    ids = [row["id"] for row in backend.for_update(query.order_by(Experiment.id))]
    if ids and backend.features.row_versions:
        backend.update(Experiment, Experiment.dataset_id == dataset_id, {"dataset_id": dataset_id})
    return ids


def detach_dataset_rows(backend: Backend, models: Any, dataset_id: str) -> int:
    """Delete the results of every experiment on ``dataset_id`` and set those experiments'
    ``dataset_id``/``dataset_version`` to ``None``; returns how many experiments were detached.

    Runs inside the caller's write transaction (``backend.write()``); ``models`` is the namespace
    of :func:`~composite_store.models.experiments.build_experiments_models` bound to ``backend``'s
    database.
    """
    Experiment, Result = models.experiment, models.result
    experiment_ids = _lock_dataset_experiments(backend, models, dataset_id)
    if not experiment_ids:
        return 0
    on_dataset = Experiment.select(Experiment.id).where(Experiment.dataset_id == dataset_id)
    backend.delete_bulk(Result, Result.experiment_id.in_(on_dataset))
    backend.update(Experiment, Experiment.dataset_id == dataset_id, {"dataset_id": None, "dataset_version": None})
    return len(experiment_ids)


def redact_item_result_rows(backend: Backend, models: Any, dataset_id: str, item_id: str,
                            purged_at: datetime | str | None) -> int:
    """Redact (experiments.md §6) every result for ``item_id`` in experiments on ``dataset_id``;
    returns how many results were redacted.  ``purged_at`` (``None``: now) is recorded in the
    redacted metadata.  Runs inside the caller's write transaction, like
    :func:`detach_dataset_rows`.
    """
    Experiment, Result = models.experiment, models.result
    if not _lock_dataset_experiments(backend, models, dataset_id):
        return 0
    on_dataset = Experiment.select(Experiment.id).where(Experiment.dataset_id == dataset_id)
    where = (Result.item_id == item_id) & Result.experiment_id.in_(on_dataset)
    return backend.update(Result, where, redacted_result_values(purged_at))
