"""composite-store: storage for AI-agent applications (memory, workflows, scores, traces,
agents, datasets, experiments) on SQLite, PostgreSQL and ClickHouse, in Mastra's table layout.

Quick start::

    from composite_store import CompositeStore

    with CompositeStore.from_urls(default="sqlite:///app.db") as storage:
        storage.init()
        memory = storage.get_store("memory")
"""

from .composite import CompositeStore
from .moving import copy_domains
from .errors import (BackendUnavailableError, ConflictError, NotFoundError, NotSupportedError, StorageError,
                     ValidationError)
from .page import Page
from .values import UNSET

__all__ = [
    "CompositeStore", "Page", "UNSET", "StorageError", "ValidationError", "ConflictError", "NotFoundError",
    "BackendUnavailableError", "NotSupportedError", "copy_domains",
]
