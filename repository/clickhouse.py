"""ClickHouse classes: the whole store (memory, workflows, scores, observability) and one class
per domain.

Options: ``url`` (``clickhouse://user:pass@host:port/db``, native protocol, port 9000 by
default; or ``chdb:///path/to/dir``, the current engine in-process, see
:mod:`~composite_store.backends.chdb`), ``ttl_days=None`` (retention of scores and observability rows),
``mutation_timeout_s=300``; observability also takes ``layout`` (``"vnext"`` or ``"legacy"``;
``?layout=`` in URLs, which whole stores pass to their observability domain) and, in the vnext
layout, ``retention={"tracing": days, …}`` (a TTL per signal; ``ttl_days`` is its shorthand).  agents, datasets
and experiments are not available on ClickHouse: their classes raise
:class:`~repository.errors.NotSupportedError` when constructed.

On a ClickHouse cluster every class takes ``cluster="name"`` (or ``?cluster=name`` in the URL:
a cluster of the servers' ``remote_servers``), and optionally ``zookeeper_path`` (default
``"/clickhouse/tables/{shard}/{database}/{table}"``) and ``replica_name`` (``"{replica}"``):
``init()`` then creates replicated local tables on every server under a ``Distributed`` table
per table (:class:`~composite_store.backends.clickhouse.ClickHouseBackend`; docs: *Scaling out*).
"""

from __future__ import annotations

from typing import Any

from .backends.clickhouse import ClickHouseBackend
from .base import DomainRepository, UnsupportedOnClickHouse
from .datasets import DatasetsRepository
from .experiments import ExperimentsRepository
from .memory import MemoryRepository
from .errors import ValidationError
from .observability import ObservabilityRepository, VNextObservabilityRepository
from .observability.repository import url_layout
from .observability.vnext_clickhouse import retention_days
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


#: The table layouts of observability on ClickHouse (observability-vnext.md §1) and the default.
LAYOUTS = ("vnext", "legacy")
DEFAULT_LAYOUT = "vnext"


class ObservabilityClickHouse(DomainRepository):
    """The observability domain on ClickHouse, in one of two table layouts fixed per object.

    ``layout="vnext"`` (the current layout: insert-only ``mastra_span_events`` with
    ``mastra_trace_roots``/``mastra_trace_branches`` fed by materialized views; spec
    observability-vnext.md) or ``layout="legacy"`` (the versioned ``mastra_ai_spans`` table; spec
    observability.md, with ``ttl_days=N`` expiring spans N days after ``created_at``).  Without
    ``layout=``, the URL's ``?layout=`` decides (for ``store=``, the store's URL), else
    :data:`DEFAULT_LAYOUT`.  The object is an instance of the layout's class, a subclass of this
    one; ``repr`` shows the layout.

    Retention of the vnext layout (observability-vnext.md §10.1): ``retention={"tracing": 30}``
    gives the tracing tables ``TTL endedAt + toIntervalDay(30)`` at :meth:`init` (``None`` removes
    the TTL; a signal left out keeps its TTL; ``logs``, ``metrics``, ``scores`` and ``feedback``
    are accepted but have no tables yet); ``ttl_days=N`` stands for every signal.  Servers without
    TTL (18.16) log one warning and keep every row.  ``delta_polling=True`` (vnext, current
    servers) creates the delta tables and views of §3.3 at :meth:`init` and lets the signal
    lists run in ``mode="delta"`` (§9).
    """

    backend_class = ClickHouseBackend
    domain = "observability"
    #: ``"vnext"`` or ``"legacy"``.
    layout: str

    def __new__(cls, *, layout: str | None = None, store: Any = None, **options: Any) -> "ObservabilityClickHouse":
        if cls is ObservabilityClickHouse:
            if layout is None:
                url = options.get("url") if store is None else getattr(getattr(store, "backend", None),
                                                                        "display_url", None)
                layout = url_layout(url) or DEFAULT_LAYOUT
            if layout not in LAYOUTS:
                raise ValidationError(fields={"layout": [f"layout must be one of {', '.join(LAYOUTS)}"]},
                                      id="STORAGE_CLICKHOUSE_INIT_INVALID_INPUT", domain=cls.domain)
            cls = _LAYOUT_CLASSES[layout]
        return super().__new__(cls)

    def __init__(self, *, layout: str | None = None, retention: dict | None = None, delta_polling: bool = False,
                 **options: Any) -> None:
        # The layout was chosen by __new__ (it is this object's class).
        super().__init__(**options)
        try:
            if retention is not None and self.layout != "vnext":
                raise ValidationError(fields={"retention": ['retention applies to layout="vnext"; the legacy '
                                                            "layout takes ttl_days"]})
            if not isinstance(delta_polling, bool) or (delta_polling and self.layout != "vnext"):
                raise ValidationError(fields={"delta_polling": ['delta_polling is a boolean and applies to '
                                                                'layout="vnext"']})
            #: Whether the signal lists follow changes (``mode="delta"``, observability-vnext.md §9).
            self.delta_polling = delta_polling
            #: Days kept per signal (``None``: no TTL), applied by ``init()``.
            self.retention_days = retention_days(retention, self.backend.ttl_days)
        except ValidationError as exc:
            raise exc.bind(backend=self.backend_class.name, operation="INIT", domain=self.domain) from None

    def __repr__(self) -> str:
        return f"ObservabilityClickHouse({self.backend.display_url!r}, layout={self.layout!r})"


class _LegacyObservabilityClickHouse(ObservabilityRepository, ObservabilityClickHouse):
    """Observability on ClickHouse in the legacy layout (``mastra_ai_spans``)."""

    layout = "legacy"


class _VNextObservabilityClickHouse(VNextObservabilityRepository, ObservabilityClickHouse):
    """Observability on ClickHouse in the current layout (span events, roots and branches)."""


_LAYOUT_CLASSES = {"vnext": _VNextObservabilityClickHouse, "legacy": _LegacyObservabilityClickHouse}


class ClickHouseStore(WholeStore):
    """The four ClickHouse domains on one ClickHouse database."""

    backend_class = ClickHouseBackend
    domain_classes = {"memory": MemoryClickHouse, "scores": ScoresClickHouse, "workflows": WorkflowsClickHouse,
                      "observability": ObservabilityClickHouse}


__all__ = ["ClickHouseStore", "MemoryClickHouse", "WorkflowsClickHouse", "ExperimentsClickHouse", "AgentsClickHouse", "ScoresClickHouse", "DatasetsClickHouse",
           "ObservabilityClickHouse"]
