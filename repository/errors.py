"""The library's exception hierarchy.

Every exception carries ``id`` (``STORAGE_<BACKEND>_<OPERATION>_<STATUS>``), ``domain``,
``category``, ``details`` and a message.  Code deep inside a repository usually raises with only a
``status``; the operation wrapper (:func:`repository.base.operation`) fills in the id and domain,
so the naming scheme lives in one place.
"""

from __future__ import annotations

from typing import Any

#: Order in which validation statuses win when one call has several problems.
VALIDATION_STATUS_ORDER = ("INVALID_PAGE", "INVALID_METADATA_KEY", "INVALID_METADATA_VALUE", "INVALID_INPUT")


class StorageError(Exception):
    """Base class of every error the library raises.

    Raised itself when the database rejects a statement (the driver error is kept as
    ``__cause__``), or with category ``SYSTEM`` when stored data is inconsistent.
    """

    default_category = "THIRD_PARTY"
    default_status = "FAILED"

    def __init__(
        self,
        message: str,
        *,
        id: str | None = None,
        domain: str | None = None,
        category: str | None = None,
        details: dict[str, Any] | None = None,
        status: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.id = id
        self.domain = domain
        self.category = category or self.default_category
        self.details = dict(details or {})
        self.status = status or self.default_status

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, message={self.message!r})"

    def bind(self, *, backend: str, operation: str, domain: str | None) -> "StorageError":
        """Fill in ``id`` and ``domain`` when the raiser did not know them."""
        if self.id is None:
            self.id = f"STORAGE_{backend}_{operation}_{self.status}"
        if self.domain is None:
            self.domain = domain
        return self


class ValidationError(StorageError):
    """Bad input; nothing was written.

    ``details["fields"]`` maps each bad field path (``messages[1].resource_id``) to a list of
    messages.
    """

    default_category = "USER"
    default_status = "INVALID_INPUT"

    def __init__(self, message: str | None = None, *, fields: dict[str, list[str]] | None = None, **kwargs: Any):
        fields = {path: list(msgs) for path, msgs in (fields or {}).items()}
        if message is None:
            message = "; ".join(f"{path}: {' '.join(msgs)}" for path, msgs in fields.items()) or "Invalid input"
        details = dict(kwargs.pop("details", None) or {})
        if fields:
            details["fields"] = fields
        super().__init__(message, details=details, **kwargs)

    @property
    def fields(self) -> dict[str, list[str]]:
        """The bad field paths and their messages."""
        return self.details.get("fields", {})


class ConflictError(ValidationError):
    """An id or key that must be new already exists, or the stored state forbids the change."""

    default_status = "CONFLICT"


class NotFoundError(StorageError):
    """The target of an update, or a record an operation requires, does not exist."""

    default_category = "USER"
    default_status = "NOT_FOUND"


class BackendUnavailableError(StorageError):
    """The database cannot be reached; the message shows its URL with the password masked."""


class NotSupportedError(StorageError):
    """The operation or domain is not available on this backend."""

    default_category = "SYSTEM"
    default_status = "NOT_SUPPORTED"


__all__ = [
    "StorageError",
    "ValidationError",
    "ConflictError",
    "NotFoundError",
    "BackendUnavailableError",
    "NotSupportedError",
]
