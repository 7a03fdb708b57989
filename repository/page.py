"""The page object every list method returns."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Sequence

from .errors import ValidationError

if TYPE_CHECKING:  # pandas is optional: imported when a page is converted
    import pandas


@dataclass(frozen=True)
class Page:
    """One page of a list: ``items`` (record dicts), ``total``, ``page``, ``per_page``, ``has_more``,
    and ``cursor``.

    ``per_page`` is echoed as given: ``False`` stays ``False`` (all rows).  ``cursor`` marks the
    position after the last item, for the ``after=`` argument of the lists that take it (the next
    page, read by a key instead of an offset); ``None`` on a page without items.
    ``delta_cursor`` (observability signal lists with delta polling on, observability-vnext.md §9):
    the position of the change stream when the page was read, for ``mode="delta", after=``;
    ``None`` elsewhere.
    """

    items: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0
    page: int = 0
    per_page: int | bool = 0
    has_more: bool = False
    cursor: str | None = None
    delta_cursor: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The page as a plain dict (``items`` are the same record dicts)."""
        return {"items": self.items, "total": self.total, "page": self.page,
                "per_page": self.per_page, "has_more": self.has_more, "cursor": self.cursor,
                "delta_cursor": self.delta_cursor}

    def to_dataframe(self, *, columns: Sequence[str] | None = None, drop_empty: bool = True) -> "pandas.DataFrame":
        """The items as a pandas ``DataFrame``, one row per item (needs the ``pandas`` extra:
        ``pip install 'composite-store[pandas]'``).

        ``columns`` chooses the columns and their order; they are kept even when empty.  Without
        it, every key of the items is a column in record order and, with ``drop_empty``, the keys
        that are ``None`` in every item are left out (a score has 35 keys, most often unset).
        Nested values (dicts, lists) stay Python objects; timestamps become UTC datetimes.

        Example::

            frame = scores.list_scores(per_page=False).to_dataframe(columns=["scorer_id", "score"])
        """
        from .backends.base import require_driver

        require_driver("pandas", extra="pandas")
        import pandas

        if columns is None:
            names = list(dict.fromkeys(key for item in self.items for key in item))
            if drop_empty:
                names = [name for name in names if any(item.get(name) is not None for item in self.items)]
        else:
            names = list(columns)
            known = {key for item in self.items for key in item}
            unknown = [name for name in names if self.items and name not in known]
            if unknown:
                raise ValidationError(fields={"columns": [f"Unknown column(s): {', '.join(map(str, unknown))}; "
                                                          f"the items have: {', '.join(sorted(known))}"]})
        return pandas.DataFrame([[item.get(name) for name in names] for item in self.items], columns=names)


@dataclass(frozen=True)
class DeltaPage:
    """What a list returns in ``mode="delta"`` (observability-vnext.md §9): the rows that became
    visible after the ``after`` cursor, in stream order, at most ``limit``; ``has_more`` when
    more follow; ``delta_cursor`` the position to continue from."""

    items: list[dict[str, Any]] = field(default_factory=list)
    limit: int = 10
    has_more: bool = False
    delta_cursor: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The page as a plain dict (``items`` are the same record dicts)."""
        return {"items": self.items, "limit": self.limit, "has_more": self.has_more,
                "delta_cursor": self.delta_cursor}


def encode_cursor(values: Sequence[Any]) -> str:
    """An opaque, URL-safe cursor holding ``values`` (JSON scalars; datetimes as ISO text)."""
    plain = [value.isoformat() if isinstance(value, datetime) else value for value in values]
    return base64.urlsafe_b64encode(json.dumps(plain, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: Any) -> list[Any] | None:
    """The values of a cursor made by :func:`encode_cursor`; ``None`` when ``cursor`` is not one."""
    if not isinstance(cursor, str) or not cursor:
        return None
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):  # not base64, not UTF-8 or not JSON
        return None
    return values if isinstance(values, list) else None
