"""JSON Schema checks of item payloads (datasets.md §7.2) with the ``jsonschema`` library."""

from __future__ import annotations

import functools
from typing import Any

import jsonschema
import referencing.exceptions

from ..errors import ValidationError
from ..schemas.datasets import validator_class
from ..values import json_dumps, json_loads

#: At most this many errors are reported per failing value.
MAX_ERRORS = 5
#: The message quotes this many of them.
QUOTED_ERRORS = 3


@functools.lru_cache(maxsize=512)
def _compiled(dataset_id: str, schema_text: str) -> Any:
    """One compiled validator per dataset and schema text; ``format`` is not enforced."""
    schema = json_loads(schema_text)
    return validator_class(schema)(schema)


def _pointer(path: Any) -> str:
    """A JSON pointer for a jsonschema error path (``/`` for the root)."""
    parts = [str(part).replace("~", "~0").replace("/", "~1") for part in path]
    return "/" + "/".join(parts)


def schema_errors(dataset_id: str, schema: dict[str, Any], value: Any) -> list[dict[str, str]]:
    """Up to :data:`MAX_ERRORS` errors of ``value`` against ``schema``:
    ``{"path": JSON pointer, "code": failing keyword, "message": ...}``; ``[]`` when it is valid."""
    validator = _compiled(dataset_id, json_dumps(schema))
    errors = []
    try:
        for error in validator.iter_errors(value):
            errors.append({"path": _pointer(error.absolute_path), "code": str(error.validator),
                           "message": error.message})
            if len(errors) == MAX_ERRORS:
                break
    except jsonschema.exceptions.UnknownType as error:
        errors.append({"path": "/", "code": "type", "message": f"Unknown type {error.type!r} in the schema"})
    except referencing.exceptions.Unresolvable as error:
        # A "$ref" the schema cannot resolve (remote references are never fetched).
        errors.append({"path": "/", "code": "$ref", "message": f"Unresolvable reference: {error}"})
    return errors


def schema_failure(field: str, errors: list[dict[str, str]], *, index: int | None, path: str) -> ValidationError:
    """The ``SCHEMA_VALIDATION_FAILED`` error of one payload field (``index``: batch position)."""
    message = f"Validation failed for {field}: " + "; ".join(e["message"] for e in errors[:QUOTED_ERRORS])
    if index is not None:
        message = f"items[{index}]: {message}"
    return ValidationError(message, fields={path: [e["message"] for e in errors]},
                           details={"code": "SCHEMA_VALIDATION_FAILED", "field": field, "index": index,
                                    "errors": errors})
