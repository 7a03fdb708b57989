"""The ``list_traces`` filters of the observability domain (§3.8): which exist, their checks,
and the shape of a filter set that decides its SQL (the key of its prepared statements)."""

from __future__ import annotations

from typing import Any

import marshmallow

from ..base import check_chunk_size
from ..schemas.base import Timestamp
from ..schemas.observability import ENTITY_TYPES, SPAN_TYPES
from ..validation import Problems, check_metadata_filter, check_order_by, check_page, one_of
from .records import ENTITY_TYPE_KEYS

_TIMESTAMP_FIELD = Timestamp()

STATUSES = ("success", "error", "running")
LIST_ORDER_FIELDS = ("started_at", "ended_at")
#: Equality filters of ``list_traces`` taking any string, and those limited to a value list.
TEXT_FILTERS = (
    "trace_id", "entity_id", "entity_name", "parent_entity_id", "parent_entity_name", "root_entity_id",
    "root_entity_name", "entity_version_id", "parent_entity_version_id", "root_entity_version_id", "experiment_id",
    "user_id", "organization_id", "resource_id", "run_id", "session_id", "thread_id", "request_id",
    "environment", "source", "service_name",
)
CHOICE_FILTERS = {"span_type": SPAN_TYPES, **{key: ENTITY_TYPES for key in ENTITY_TYPE_KEYS}}
RANGE_KEYS = ("start", "end", "start_exclusive", "end_exclusive")
RANGE_FILTERS = ("started_at", "ended_at")
FILTER_KEYS = frozenset({*TEXT_FILTERS, *CHOICE_FILTERS, *RANGE_FILTERS, "status", "has_child_error",
                         "tags", "metadata", "scope"})
#: Filters of ``list_branches``: each applies to the anchor span itself.
BRANCH_FILTER_KEYS = FILTER_KEYS - {"has_child_error"}
#: Filters whose values ``list_traces`` binds as parameters of statements rendered once per
#: shape; tags, metadata and scope build conditions around their values, so they are rendered.
PREPARED_FILTERS = FILTER_KEYS - {"tags", "metadata", "scope"}


def filter_shape(name: str, value: Any) -> Any:
    """What of a ``list_traces`` filter decides the SQL of its conditions (the rest is bound)."""
    if name in RANGE_FILTERS:
        return (name, "start" in value, "end" in value, bool(value.get("start_exclusive")),
                bool(value.get("end_exclusive")))
    if name in ("status", "has_child_error"):
        return (name, value)
    return name



def check_filters(problems: Problems, filters: Any, *, keys: frozenset[str] = FILTER_KEYS) -> dict[str, Any]:
    """Validated ``list_traces`` filters (keys with ``None`` and empty lists/dicts dropped);
    ``keys`` are the filters allowed (``list_branches`` takes all but ``has_child_error``)."""
    if filters is None:
        return {}
    if not isinstance(filters, dict):
        problems.add("filters", "Not a valid mapping type.")
        return {}
    checked: dict[str, Any] = {}
    for key, value in filters.items():
        path = f"filters.{key}"
        if key not in keys:
            problems.add(path, "Unknown field.")
        elif key in ("metadata", "scope"):
            members = check_metadata_filter(problems, path, value)
            if members:
                checked[key] = members
        elif value is None:
            continue
        elif key in TEXT_FILTERS:
            if isinstance(value, str):
                checked[key] = value
            else:
                problems.add(path, "Not a valid string.")
        elif key in CHOICE_FILTERS or key == "status":
            choices = CHOICE_FILTERS.get(key, STATUSES)
            if isinstance(value, str) and value in choices:
                checked[key] = value
            else:
                problems.add(path, one_of(choices))
        elif key in ("started_at", "ended_at"):
            bounds = _check_range(problems, path, value)
            if bounds:
                checked[key] = bounds
        elif key == "has_child_error":
            flag = {True: True, False: False, "true": True, "false": False}.get(value) \
                if isinstance(value, (bool, str)) else None
            if flag is None:
                problems.add(path, "Not a valid boolean.")
            else:
                checked[key] = flag
        elif key == "tags":
            if not isinstance(value, (list, tuple)):
                problems.add(path, "Not a valid list.")
            else:
                for index, tag in enumerate(value):
                    if not isinstance(tag, str):
                        problems.add(f"{path}[{index}]", "Not a valid string.")
                if value:
                    checked[key] = list(dict.fromkeys(value))
    return checked


def _check_range(problems: Problems, path: str, value: Any) -> dict[str, Any]:
    """A ``{"start", "end", "start_exclusive", "end_exclusive"}`` range of datetimes."""
    if not isinstance(value, dict):
        problems.add(path, "Not a valid mapping type.")
        return {}
    bounds: dict[str, Any] = {}
    for key, item in value.items():
        if key not in RANGE_KEYS:
            problems.add(f"{path}.{key}", "Unknown field.")
        elif item is None:
            continue
        elif key in ("start", "end"):
            try:
                bounds[key] = _TIMESTAMP_FIELD.deserialize(item)
            except marshmallow.ValidationError:
                problems.add(f"{path}.{key}", "Not a valid datetime.")
        elif not isinstance(item, bool):
            problems.add(f"{path}.{key}", "Not a valid boolean.")
        else:
            bounds[key] = item
    if "start" in bounds and "end" in bounds and bounds["start"] > bounds["end"]:
        problems.add(path, "start must not be later than end")
    return bounds


def check_trace_deletion(problems: Problems, trace_ids: Any, organization_id: Any, resource_id: Any) -> None:
    """The arguments of ``batch_delete_traces``: a list of non-empty ids and optional tenant strings."""
    if not isinstance(trace_ids, (list, tuple)) or not all(isinstance(t, str) and t for t in trace_ids):
        problems.add("trace_ids", "trace_ids must be a list of non-empty strings")
    for name, value in (("organization_id", organization_id), ("resource_id", resource_id)):
        if value is not None and not isinstance(value, str):
            problems.add(name, "Not a valid string.")


def check_depth(problems: Problems, depth: Any) -> None:
    """``get_branch``'s ``depth``: an integer >= 0, or ``None`` for the whole subtree."""
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 0):
        problems.add("depth", "depth must be an integer >= 0")


def range_conditions(field: Any, value: dict[str, Any]) -> list[Any]:
    """The conditions of a checked range (:data:`RANGE_KEYS`) on ``field``: a bound is
    inclusive unless its ``*_exclusive`` flag is set."""
    conditions = []
    if "start" in value:
        conditions.append(field > value["start"] if value.get("start_exclusive") else field >= value["start"])
    if "end" in value:
        conditions.append(field < value["end"] if value.get("end_exclusive") else field <= value["end"])
    return conditions


#: The modes of the vNext lists (observability-vnext.md §9).
LIST_MODES = ("page", "delta")


def check_list_mode(problems: Problems, mode: Any, *, page: Any, per_page: Any, order_by: Any, after: Any,
                    limit: Any) -> None:
    """The arguments of a vNext list's ``mode`` (§9): ``page`` or ``delta``; delta mode refuses
    ``page``, ``per_page`` and ``order_by``, page mode ``after`` and ``limit``; ``after`` a
    non-empty string, ``limit`` an integer from 1 to 100."""
    if mode not in LIST_MODES:
        problems.add("mode", one_of(LIST_MODES))
    elif mode == "delta":
        for name, value in (("page", page), ("per_page", per_page), ("order_by", order_by)):
            if value is not None:
                problems.add(name, f"{name} is not allowed in delta mode")
        if after is not None and (not isinstance(after, str) or not after):
            problems.add("after", "after must be a non-empty string")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100):
            problems.add("limit", "limit must be an integer from 1 to 100")
    else:
        for name, value in (("after", after), ("limit", limit)):
            if value is not None:
                problems.add(name, f"{name} is only allowed in delta mode")


def check_trace_filters(problems: Problems, filters: Any, *, roots: bool) -> dict[str, Any]:
    """The filters of a vNext trace list (``roots``) or branch list, checked (§7): metadata
    values are strings there."""
    checked = check_filters(problems, filters, keys=FILTER_KEYS if roots else BRANCH_FILTER_KEYS)
    for key, value in checked.get("metadata", {}).items():
        if not isinstance(value, str):
            problems.add(f"filters.metadata.{key}", f'Metadata filter value for key "{key}" must be a string',
                         "INVALID_METADATA_VALUE")
    return checked


def check_trace_list(filters: Any, page: Any, per_page: Any, order_by: Any, mode: Any, after: Any, limit: Any, *,
                     roots: bool) -> tuple[Any, dict[str, Any], Any]:
    """The arguments of a vNext trace or branch list (§7, §9), checked together: raises one
    :class:`ValidationError` naming every bad one, else returns the page request, the checked
    filters (of traces when ``roots``, else of branches) and the ordering."""
    problems = Problems()
    check_list_mode(problems, mode, page=page, per_page=per_page, order_by=order_by, after=after, limit=limit)
    request = check_page(problems, page, per_page, default_per_page=10)
    checked = check_trace_filters(problems, filters, roots=roots)
    ordering = check_order_by(problems, order_by, allowed=LIST_ORDER_FIELDS, default_field="started_at",
                              default_direction="DESC")
    problems.raise_if_any()
    return request, checked, ordering


def check_trace_iteration(filters: Any, chunk_size: Any) -> dict[str, Any]:
    """The arguments of a vNext ``iter_traces``, checked together: raises one
    :class:`ValidationError` naming every bad one, else returns the checked trace filters."""
    problems = Problems()
    check_chunk_size(problems, chunk_size)
    checked = check_trace_filters(problems, filters, roots=True)
    problems.raise_if_any()
    return checked
