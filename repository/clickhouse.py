"""ClickHouse classes: the whole store (memory, workflows, scores, observability) and one class
per domain.

Options: ``url`` (``clickhouse://user:pass@host:port/db``, native protocol, port 9000 by
default), ``ttl_days=None`` (retention of scores and observability rows),
``mutation_timeout_s=300``.  agents, datasets and experiments are not available on ClickHouse:
their classes raise :class:`~repository.errors.NotSupportedError` when constructed.
"""

from __future__ import annotations

from .backends.clickhouse import ClickHouseBackend
from .base import UnsupportedOnClickHouse
from .datasets import DatasetsRepository
from .experiments import ExperimentsRepository
from .memory import MemoryRepository
from .observability import ObservabilityRepository
from .scores import ScoresRepository
from .stores import WholeStore
from .workflows import WorkflowsRepository


class MemoryClickHouse(MemoryRepository):
    """The memory domain on ClickHouse."""

    backend_class = ClickHouseBackend


class WorkflowsClickHouse(WorkflowsRepository):
    """The workflows domain on ClickHouse (read-modify-writes serialized inside one store object)."""

    backend_class = ClickHouseBackend


class ExperimentsClickHouse(UnsupportedOnClickHouse, ExperimentsRepository):
    """Not available yet: constructing it raises :class:`~repository.errors.NotSupportedError`."""

    backend_class = ClickHouseBackend


class AgentsClickHouse(UnsupportedOnClickHouse):
    """Not available yet: constructing it raises :class:`~repository.errors.NotSupportedError`."""

    domain = "agents"


class DatasetsClickHouse(UnsupportedOnClickHouse, DatasetsRepository):
    """Not available yet: constructing it raises :class:`~repository.errors.NotSupportedError`."""

    backend_class = ClickHouseBackend


class ScoresClickHouse(ScoresRepository):
    """The scores domain on ClickHouse; ``ttl_days=N`` makes scores expire N days after ``created_at``."""

    backend_class = ClickHouseBackend


class ObservabilityClickHouse(ObservabilityRepository):
    """The observability domain on ClickHouse; ``ttl_days=N`` makes spans expire N days after
    ``created_at``."""

    backend_class = ClickHouseBackend


class ClickHouseStore(WholeStore):
    """The four ClickHouse domains on one ClickHouse database."""

    backend_class = ClickHouseBackend
    domain_classes = {"memory": MemoryClickHouse, "scores": ScoresClickHouse, "workflows": WorkflowsClickHouse,
                      "observability": ObservabilityClickHouse}


__all__ = ["ClickHouseStore", "MemoryClickHouse", "WorkflowsClickHouse", "ExperimentsClickHouse", "AgentsClickHouse", "ScoresClickHouse", "DatasetsClickHouse",
           "ObservabilityClickHouse"]
