"""Input checks shared by every domain: pagination, ordering, metadata filters, ids, tenancy.

A :class:`Problems` collects every problem of one call, so a :class:`ValidationError` can report
them all at once with the right status.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .errors import VALIDATION_STATUS_ORDER, ValidationError
from .values import find_bad_text


class Problems:
    """Collects ``(path, message, status)`` triples and raises one :class:`ValidationError`."""

    def __init__(self) -> None:
        self.fields: dict[str, list[str]] = {}
        self.statuses: set[str] = set()

    def add(self, path: str, message: str, status: str = "INVALID_INPUT") -> None:
        """Record one problem."""
        self.fields.setdefault(path, []).append(message)
        self.statuses.add(status)

    def merge(self, fields: Mapping[str, list[str]], prefix: str = "", status: str = "INVALID_INPUT") -> None:
        """Record the field messages of a nested validation under ``prefix``."""
        for path, messages in fields.items():
            full = join_path(prefix, path)
            for message in messages:
                self.add(full, message, status)

    def __bool__(self) -> bool:
        return bool(self.fields)

    def raise_if_any(self) -> None:
        """Raise the collected problems, if any, as one :class:`ValidationError`."""
        if self.fields:
            status = next(s for s in VALIDATION_STATUS_ORDER if s in self.statuses)
            raise ValidationError(fields=self.fields, status=status)


def join_path(prefix: str, path: str) -> str:
    """``messages[1]`` + ``resource_id`` → ``messages[1].resource_id``; ``rows`` + ``[3]`` → ``rows[3]``."""
    if not prefix:
        return path
    if not path:
        return prefix
    return prefix + path if path.startswith("[") else f"{prefix}.{path}"


def check_id(problems: Problems, field: str, value: Any) -> None:
    """Id arguments must be non-empty strings."""
    if not isinstance(value, str) or not value:
        problems.add(field, f"{field} must be a non-empty string")


def one_of(choices: Iterable[str]) -> str:
    """The message of a value outside ``choices`` (marshmallow's ``OneOf`` wording)."""
    return f"Must be one of: {', '.join(choices)}."


def require_id(field: str, value: Any) -> None:
    """Raise at once when one id argument is not a non-empty string."""
    problems = Problems()
    check_id(problems, field, value)
    problems.raise_if_any()


#: Message for a string that no driver can store (agents, datasets and experiments reject it).
BAD_TEXT = "Contains U+0000 or an unpaired surrogate, which cannot be stored."


def check_text(problems: Problems, path: str, value: Any) -> None:
    """Report every string in ``value`` (dict keys included) that holds U+0000 or an unpaired
    surrogate, under its own path (``metadata.notes``, ``instructions[0].content``)."""
    for bad_path in find_bad_text(value, path):
        problems.add(bad_path, BAD_TEXT)


def check_arguments_text(arguments: Mapping[str, Any]) -> None:
    """Raise one :class:`ValidationError` naming every argument path (``id``,
    ``filters.organization_id``) whose text holds U+0000 or an unpaired surrogate, if any."""
    problems = Problems()
    for name, value in arguments.items():
        check_text(problems, name, value)
    problems.raise_if_any()


# --------------------------------------------------------------------------- pagination

@dataclass(frozen=True)
class PageRequest:
    """Validated pagination arguments."""

    page: int
    per_page: int | bool

    @property
    def offset(self) -> int:
        """Rows skipped before the page (0 when ``per_page`` is ``False``)."""
        return 0 if self.per_page is False else self.page * self.per_page

    @property
    def limit(self) -> int | None:
        """Rows to fetch, or ``None`` for all of them."""
        return None if self.per_page is False else self.per_page

    def has_more(self, total: int) -> bool:
        """Whether rows follow this page, given the ``total`` of matching rows."""
        return False if self.per_page is False else self.offset + self.per_page < total


def check_page(problems: Problems, page: Any, per_page: Any, *, default_per_page: int | bool) -> PageRequest:
    """Validate ``page``/``per_page`` in the spec's order; ``None`` means the method's default."""
    page = 0 if page is None else page
    per_page = default_per_page if per_page is None else per_page
    per_page_ok = True
    if per_page is not False and (isinstance(per_page, bool) or not isinstance(per_page, int)):
        problems.add("per_page", "per_page must be False or an integer", "INVALID_PAGE")
        per_page_ok = False
    elif per_page is not False and per_page < 0:
        problems.add("per_page", "per_page must be >= 0", "INVALID_PAGE")
        per_page_ok = False
    if per_page is False and page != 0 and not isinstance(page, bool):
        problems.add("page", "page must be 0 when per_page is False", "INVALID_PAGE")
    elif isinstance(page, bool) or not isinstance(page, int) or page < 0:
        problems.add("page", "page must be >= 0", "INVALID_PAGE")
    if not per_page_ok or "page" in problems.fields:
        return PageRequest(0, 0)
    return PageRequest(page, per_page)


# --------------------------------------------------------------------------- ordering

@dataclass(frozen=True)
class Ordering:
    """A validated ``order_by``: snake_case field and ``"ASC"``/``"DESC"``."""

    field: str
    direction: str

    @property
    def descending(self) -> bool:
        """Whether the direction is ``DESC``."""
        return self.direction == "DESC"


def check_order_by(problems: Problems, order_by: Any, *, allowed: Iterable[str], default_field: str,
                   default_direction: str) -> Ordering:
    """Validate ``order_by`` against the method's allowed fields."""
    allowed = list(allowed)
    field, direction = default_field, default_direction
    if order_by is None:
        return Ordering(field, direction)
    if not isinstance(order_by, Mapping):
        problems.add("order_by", "order_by must be a dict with optional field and direction")
        return Ordering(field, direction)
    for key, value in order_by.items():
        if key == "field":
            if value is None:
                continue
            if value not in allowed:
                problems.add("order_by.field", f"order_by.field must be one of {', '.join(allowed)}")
            else:
                field = value
        elif key == "direction":
            if value is None:
                continue
            if not isinstance(value, str) or value.upper() not in ("ASC", "DESC"):
                problems.add("order_by.direction", "order_by.direction must be ASC or DESC")
            else:
                direction = value.upper()
        else:
            problems.add(f"order_by.{key}", "Unknown field.")
    return Ordering(field, direction)


# --------------------------------------------------------------------------- metadata filters

_METADATA_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FORBIDDEN_KEYS = {"__proto__", "prototype", "constructor"}


def check_metadata_filter(problems: Problems, field: str, value: Any) -> dict[str, Any]:
    """Validate a top-level metadata filter; returns ``{}`` for ``None``/``{}``."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problems.add(field, f"{field} must be a dict")
        return {}
    for key, item in value.items():
        if not isinstance(key, str) or not _METADATA_KEY_RE.match(key) or key in _FORBIDDEN_KEYS:
            problems.add(field, f'Invalid metadata key: "{key}". Keys must start with a letter or underscore '
                                "and contain only letters, digits and underscores.", "INVALID_METADATA_KEY")
        elif len(key) > 128:
            problems.add(field, f'Metadata key "{key}" exceeds maximum length of 128 characters.',
                         "INVALID_METADATA_KEY")
        elif not is_filter_scalar(item):
            problems.add(field, f'Metadata filter value for key "{key}" must be a string, number, boolean or None',
                         "INVALID_METADATA_VALUE")
    return dict(value)


def is_filter_scalar(value: Any) -> bool:
    """``str``, ``int``, finite ``float``, ``bool`` or ``None``."""
    if value is None or isinstance(value, (str, bool, int)):
        return True
    return isinstance(value, float) and math.isfinite(value)


def json_matches(obj: Any, filters: Mapping[str, Any]) -> bool:
    """Python evaluation of a metadata filter, with JSON types respected (``True`` is not ``1``)."""
    if not filters:
        return True
    if not isinstance(obj, dict):
        return False
    for key, expected in filters.items():
        if key not in obj:
            return False
        actual = obj[key]
        if isinstance(expected, bool) or isinstance(actual, bool) or expected is None or actual is None:
            if not (type(actual) is type(expected) and actual == expected):
                return False
        elif isinstance(expected, str) or isinstance(actual, str):
            if not (isinstance(actual, str) and isinstance(expected, str) and actual == expected):
                return False
        elif not (isinstance(actual, (int, float)) and actual == expected):
            return False
    return True


# --------------------------------------------------------------------------- tenancy

def check_tenancy(problems: Problems, filters: Any, *, extra: Iterable[str] = ()) -> dict[str, str]:
    """``filters`` of tenancy-scoped methods: ``organization_id``/``project_id`` strings or ``None``."""
    if filters is None:
        return {}
    if not isinstance(filters, Mapping):
        problems.add("filters", "filters must be a dict")
        return {}
    allowed = {"organization_id", "project_id", *extra}
    scope = {}
    for key, value in filters.items():
        if key not in allowed:
            problems.add(f"filters.{key}", "Unknown field.")
        elif value is None:
            continue
        elif key in ("organization_id", "project_id") and not isinstance(value, str):
            problems.add(f"filters.{key}", "Not a valid string.")
        else:
            scope[key] = value
    return scope
