"""SQLite classes: the whole store and one class per domain.

``url`` is ``sqlite:///path``, ``sqlite:///:memory:`` (a private database per store object) or
Mastra's ``file:./path``.
"""

from __future__ import annotations

from .agents import AgentsRepository
from .backends.sqlite import SQLiteBackend
from .datasets import DatasetsRepository
from .experiments import ExperimentsRepository
from .memory import MemoryRepository
from .observability import ObservabilityRepository
from .observability.repository import LayoutChoice
from .scores import ScoresRepository
from .stores import WholeStore
from .workflows import WorkflowsRepository


class MemorySQLite(MemoryRepository):
    """The memory domain on SQLite: ``MemorySQLite(url=...)`` or ``MemorySQLite(store=...)``."""

    backend_class = SQLiteBackend


class ExperimentsSQLite(ExperimentsRepository):
    """The experiments domain on SQLite."""

    backend_class = SQLiteBackend


class AgentsSQLite(AgentsRepository):
    """The agents domain on SQLite."""

    backend_class = SQLiteBackend


class WorkflowsSQLite(WorkflowsRepository):
    """The workflows domain on SQLite."""

    backend_class = SQLiteBackend


class ScoresSQLite(ScoresRepository):
    """The scores domain on SQLite."""

    backend_class = SQLiteBackend


class DatasetsSQLite(DatasetsRepository):
    """The datasets domain on SQLite."""

    backend_class = SQLiteBackend


class ObservabilitySQLite(LayoutChoice, ObservabilityRepository):
    """The observability domain (traces and spans) on SQLite; ``layout="vnext"`` (or
    ``?layout=vnext`` in the URL) gives the current layout, with ``delta_polling``
    (observability-vnext.md §1)."""

    backend_class = SQLiteBackend


class SQLiteStore(WholeStore):
    """All seven domains on one SQLite database: ``SQLiteStore(id="local", url="file:./app.db")``."""

    backend_class = SQLiteBackend
    domain_classes = {"memory": MemorySQLite, "scores": ScoresSQLite, "workflows": WorkflowsSQLite, "experiments": ExperimentsSQLite, "agents": AgentsSQLite,
                      "datasets": DatasetsSQLite, "observability": ObservabilitySQLite}


__all__ = ["SQLiteStore", "MemorySQLite", "WorkflowsSQLite", "ExperimentsSQLite", "AgentsSQLite", "ScoresSQLite", "DatasetsSQLite",
           "ObservabilitySQLite"]
