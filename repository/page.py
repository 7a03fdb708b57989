"""The page object every list method returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Page:
    """One page of a list: ``items`` (record dicts), ``total``, ``page``, ``per_page``, ``has_more``.

    ``per_page`` is echoed as given: ``False`` stays ``False`` (all rows).
    """

    items: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0
    page: int = 0
    per_page: int | bool = 0
    has_more: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The page as a plain dict (``items`` are the same record dicts)."""
        return {"items": self.items, "total": self.total, "page": self.page,
                "per_page": self.per_page, "has_more": self.has_more}
