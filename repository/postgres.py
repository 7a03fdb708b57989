"""PostgreSQL classes: the whole store and one class per domain.

Options: ``connection_string`` (``postgresql://user:pass@host:port/db``, ``?schema_name=app``
allowed), ``schema_name=None`` (``public``), ``max_connections=10``.
"""

from __future__ import annotations

from .agents import AgentsRepository
from .backends.postgres import PostgresBackend
from .datasets import DatasetsRepository
from .experiments import ExperimentsRepository
from .memory import MemoryRepository
from .observability import ObservabilityRepository
from .observability.repository import LayoutChoice
from .scores import ScoresRepository
from .stores import WholeStore
from .workflows import WorkflowsRepository


class MemoryPG(MemoryRepository):
    """The memory domain on PostgreSQL."""

    backend_class = PostgresBackend


class ExperimentsPG(ExperimentsRepository):
    """The experiments domain on PostgreSQL."""

    backend_class = PostgresBackend


class AgentsPG(AgentsRepository):
    """The agents domain on PostgreSQL."""

    backend_class = PostgresBackend


class WorkflowsPG(WorkflowsRepository):
    """The workflows domain on PostgreSQL."""

    backend_class = PostgresBackend


class ScoresPG(ScoresRepository):
    """The scores domain on PostgreSQL."""

    backend_class = PostgresBackend


class DatasetsPG(DatasetsRepository):
    """The datasets domain on PostgreSQL."""

    backend_class = PostgresBackend


class ObservabilityPG(LayoutChoice, ObservabilityRepository):
    """The observability domain (traces and spans) on PostgreSQL; ``layout="vnext"`` (or
    ``?layout=vnext`` in the URL) gives the current layout, with ``partitioning``, ``discovery``
    and ``delta_polling`` (observability-vnext.md §1)."""

    backend_class = PostgresBackend
    vnext_keywords = ("partitioning", "discovery", "delta_polling")


class PostgresStore(WholeStore):
    """All seven domains on one PostgreSQL database (one connection pool)."""

    backend_class = PostgresBackend
    domain_classes = {"memory": MemoryPG, "scores": ScoresPG, "workflows": WorkflowsPG, "experiments": ExperimentsPG, "agents": AgentsPG,
                      "datasets": DatasetsPG, "observability": ObservabilityPG}


__all__ = ["PostgresStore", "MemoryPG", "WorkflowsPG", "ExperimentsPG", "AgentsPG", "ScoresPG", "DatasetsPG", "ObservabilityPG"]
