"""The datasets domain: evaluation datasets with versioned items (spec: datasets.md).

``repository.py`` holds the repository; ``payload.py`` the strict JSON-value check, JSON equality
and the stored text of item payloads; ``validators.py`` the JSON Schema checks of items.
"""

from .repository import DatasetsRepository

__all__ = ["DatasetsRepository"]
