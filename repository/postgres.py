"""PostgreSQL classes: the whole store and one class per domain.

Options: ``connection_string`` (``postgresql://user:pass@host:port/db``, ``?schema_name=app``
allowed), ``schema_name=None`` (``public``), ``max_connections=10``.
"""

from __future__ import annotations

from .backends.postgres import PostgresBackend
from .memory import MemoryRepository
from .stores import WholeStore


class MemoryPG(MemoryRepository):
    """The memory domain on PostgreSQL."""

    backend_class = PostgresBackend


class PostgresStore(WholeStore):
    """All seven domains on one PostgreSQL database (one connection pool)."""

    backend_class = PostgresBackend
    domain_classes = {"memory": MemoryPG}


__all__ = ["PostgresStore", "MemoryPG"]
