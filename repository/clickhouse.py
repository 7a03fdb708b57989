"""ClickHouse classes: the whole store (memory, workflows, scores, observability) and one class
per domain.

Options: ``url`` (``clickhouse://user:pass@host:port/db``, native protocol, port 9000 by
default), ``ttl_days=None`` (retention of scores and observability rows),
``mutation_timeout_s=300``.  agents, datasets and experiments are not available on ClickHouse:
their classes raise :class:`~repository.errors.NotSupportedError` when constructed.
"""

from __future__ import annotations

from .backends.clickhouse import ClickHouseBackend
from .memory import MemoryRepository
from .stores import WholeStore


class MemoryClickHouse(MemoryRepository):
    """The memory domain on ClickHouse."""

    backend_class = ClickHouseBackend


class ClickHouseStore(WholeStore):
    """The four ClickHouse domains on one ClickHouse database."""

    backend_class = ClickHouseBackend
    domain_classes = {"memory": MemoryClickHouse}


__all__ = ["ClickHouseStore", "MemoryClickHouse"]
