"""Shared marshmallow pieces: the base schema (wire or snake_case input) and the value fields."""

from __future__ import annotations

import math
from datetime import datetime
from collections.abc import Mapping
from typing import Any

import marshmallow
from marshmallow import fields

from ..validation import Problems, join_path
from ..values import NotPlainJSON, deep_copy_json, format_iso, normalize_json, plain_json_copy, to_utc

NOT_DATETIME = "Not a valid datetime."


class RecordSchema(marshmallow.Schema):
    """Base of every record schema.

    ``load`` accepts the wire form (camelCase) or the snake_case form and returns a snake_case
    record dict; ``dump`` gives the wire form (camelCase, ISO-8601 ``…Z`` timestamps).
    Unknown keys are errors (``<key>: Unknown field.``).
    """

    class Meta:
        unknown = marshmallow.RAISE

    @marshmallow.pre_load
    def _accept_snake_case(self, data: Any, **kwargs: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        renamed = dict(data)
        for name, field in self.fields.items():
            if field.data_key and field.data_key != name and name in renamed and field.data_key not in renamed:
                renamed[field.data_key] = renamed.pop(name)
        return renamed

    def handle_error(self, error: marshmallow.ValidationError, data: Any, **kwargs: Any) -> None:
        # Report snake_case paths whichever form came in.
        raise marshmallow.ValidationError(_snake_paths(error.messages, self), error.data, error.valid_data)


def _snake_paths(messages: Any, schema: marshmallow.Schema) -> Any:
    if not isinstance(messages, dict):
        return messages
    by_key = {field.data_key or name: name for name, field in schema.fields.items()}
    return {by_key.get(key, key) if isinstance(key, str) else key: value for key, value in messages.items()}


def flatten_errors(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """marshmallow's nested error dict → ``{"messages[1].resource_id": [...]}``."""
    out: dict[str, list[str]] = {}
    if isinstance(messages, dict):
        for key, value in messages.items():
            if key == "_schema":
                path = prefix
            elif isinstance(key, int):
                path = f"{prefix}[{key}]"
            else:
                path = join_path(prefix, str(key))
            for sub, msgs in flatten_errors(value, path).items():
                out.setdefault(sub, []).extend(msgs)
    elif isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        out[prefix] = list(messages)
    elif isinstance(messages, list):
        for item in messages:
            for sub, msgs in flatten_errors(item, prefix).items():
                out.setdefault(sub, []).extend(msgs)
    else:
        out[prefix] = [str(messages)]
    return out


def load_into(problems: Problems, schema: marshmallow.Schema, data: Any, prefix: str = "",
              **kwargs: Any) -> dict[str, Any] | None:
    """``schema.load(data)``; problems are recorded under ``prefix`` and ``None`` returned."""
    try:
        return schema.load(data, **kwargs)
    except marshmallow.ValidationError as error:
        problems.merge(flatten_errors(error.messages), prefix)
        return None


# --------------------------------------------------------------------------- fields

class StrictString(fields.String):
    """A ``str`` and nothing else (marshmallow's ``String`` would decode ``bytes``)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if not isinstance(value, str):
            raise self.make_error("invalid")
        return value


class StrictInteger(fields.Integer):
    """An ``int`` (``bool`` and numeric strings are refused)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.make_error("invalid")
        return int(value)


class StrictBoolean(fields.Boolean):
    """A real ``bool`` (marshmallow's ``Boolean`` would accept ``1`` or ``"yes"``)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class FiniteNumber(fields.Float):
    """An ``int`` or ``float`` (never ``bool`` or a numeric string) that is finite; loads as ``float``."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.make_error("invalid")
        try:
            number = float(value)
        except OverflowError:
            raise self.make_error("too_large") from None
        if not math.isfinite(number):
            raise self.make_error("special")
        return number


class NonEmptyString(fields.String):
    """A non-empty string (ids): ``<field> must be a non-empty string``."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if not isinstance(value, str) or not value:
            raise marshmallow.ValidationError(f"{self.name} must be a non-empty string")
        return value


class Timestamp(fields.Field):
    """An aware UTC datetime with millisecond precision; accepts datetimes and ISO strings."""

    default_error_messages = {"invalid": NOT_DATETIME}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        if isinstance(value, bool):
            raise self.make_error("invalid")
        try:
            return to_utc(value)
        except (TypeError, ValueError, OverflowError):
            raise self.make_error("invalid") from None

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        return None if value is None else format_iso(to_utc(value))


class JSONValue(fields.Field):
    """Any JSON value; bad members are reported under their path (``metadata.s``)."""

    #: The exact types :meth:`load` copies without marshmallow's steps.
    plain_types: tuple[type, ...] = (dict, list)

    def load(self, value: Any) -> Any:
        """``deserialize(value)``: the same value or ``ValidationError``.  A value of plain JSON
        types (the usual argument) is copied directly: marshmallow's checks around
        ``_deserialize`` cost as much Python as a hot call's SQL takes (issue 20)."""
        if type(value) in self.plain_types and not self.validators:
            try:
                return plain_json_copy(value, True)
            except (NotPlainJSON, RecursionError):
                pass  # datetimes, subclasses, bad members, cycles: the field reports them
        return self.deserialize(value)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        errors: dict[str, list[str]] = {}
        result = normalize_json(value, "", errors)
        if errors:
            if "" in errors:
                raise marshmallow.ValidationError(errors[""])
            raise marshmallow.ValidationError(errors)
        return result

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return deep_copy_json(value)


class JSONObject(JSONValue):
    """A JSON object (``dict`` with ``str`` keys)."""

    default_error_messages = {"invalid": "Not a valid mapping type."}
    plain_types = (dict,)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, Mapping):
            raise self.make_error("invalid")
        return super()._deserialize(dict(value), attr, data, **kwargs)
