"""SQLite classes: the whole store and one class per domain.

``url`` is ``sqlite:///path``, ``sqlite:///:memory:`` (a private database per store object) or
Mastra's ``file:./path``.
"""

from __future__ import annotations

from .backends.sqlite import SQLiteBackend
from .memory import MemoryRepository
from .stores import WholeStore


class MemorySQLite(MemoryRepository):
    """The memory domain on SQLite: ``MemorySQLite(url=...)`` or ``MemorySQLite(store=...)``."""

    backend_class = SQLiteBackend


class SQLiteStore(WholeStore):
    """All seven domains on one SQLite database: ``SQLiteStore(id="local", url="file:./app.db")``."""

    backend_class = SQLiteBackend
    domain_classes = {"memory": MemorySQLite}


__all__ = ["SQLiteStore", "MemorySQLite"]
