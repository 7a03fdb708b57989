"""Whole stores: every domain a backend supports, on one database, sharing its connections."""

from __future__ import annotations

import difflib
import threading
from typing import Any, ClassVar

from .backends.base import Backend
from .base import DomainRepository
from .errors import StorageError, ValidationError
from .retention import prune_domains, validated_retention

#: Every domain key, in the order stores list them.
DOMAINS = ("memory", "workflows", "scores", "observability", "agents", "datasets", "experiments")


def unknown_domain(key: Any) -> str:
    """The message for a key that is not one of :data:`DOMAINS`, naming the nearest key if any."""
    nearest = difflib.get_close_matches(key, DOMAINS, n=1) if isinstance(key, str) else []
    hint = f" (did you mean {nearest[0]!r}?)" if nearest else ""
    return f"Unknown domain {key!r}{hint}; domains are {', '.join(DOMAINS)}"


def check_domain_key(key: Any, *, backend: str) -> None:
    """Raise ``ValidationError`` ``STORAGE_<backend>_GET_STORE_INVALID_INPUT`` unless ``key`` is a
    domain key: a typo must fail here, not later as an ``AttributeError`` on ``None``."""
    if key not in DOMAINS:
        message = unknown_domain(key)
        raise ValidationError(message, fields={"key": [message]}, id=f"STORAGE_{backend}_GET_STORE_INVALID_INPUT")


class WholeStore:
    """All the domains of one backend on one database.

    Subclasses set ``backend_class`` and ``domain_classes`` (domain key → repository class).
    ``retention`` (``{<domain key>: {<table key>: policy}}``) is what :meth:`prune` applies.
    """

    backend_class: ClassVar[type[Backend]]
    domain_classes: ClassVar[dict[str, type[DomainRepository]]] = {}

    def __init__(self, *, id: str = "store", retention: dict | None = None, **options: Any) -> None:
        if not isinstance(id, str) or not id:
            raise ValidationError(fields={"id": ["id must be a non-empty string"]},
                                  id=f"STORAGE_{self.backend_class.name}_INIT_INVALID_INPUT")
        self.id = id
        self.retention = validated_retention(retention,
                                             error_id=f"STORAGE_{self.backend_class.name}_INIT_INVALID_INPUT")
        try:
            self.backend = self.backend_class(**options)
        except StorageError as exc:
            raise exc.bind(backend=self.backend_class.name, operation="INIT", domain=None)
        except TypeError as exc:
            if "unexpected keyword argument" not in str(exc):
                raise
            raise ValidationError(str(exc), id=f"STORAGE_{self.backend_class.name}_INIT_INVALID_INPUT") from None
        self._repositories = {key: cls(store=self) for key, cls in self.domain_classes.items()}
        try:  # again against each repository's own layout (observability's vNext keys need it)
            validated_retention(retention, error_id=f"STORAGE_{self.backend_class.name}_INIT_INVALID_INPUT",
                                get_store=self._repositories.get)
        except ValidationError:
            self.backend.close()
            raise

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, url={self.backend.display_url!r})"

    @property
    def domains(self) -> tuple[str, ...]:
        """The domain keys this store holds."""
        return tuple(key for key in DOMAINS if key in self._repositories)

    def get_store(self, key: str) -> DomainRepository | None:
        """The repository of domain ``key``, or ``None`` when this store does not hold it.

        A ``key`` that is not one of the seven domain keys raises :class:`ValidationError`
        listing them.
        """
        check_domain_key(key, backend=self.backend_class.name)
        return self._repositories.get(key)

    def init(self) -> None:
        """Create every domain's missing tables (idempotent, thread-safe)."""
        for repository in self._repositories.values():
            repository.init()

    def dangerously_clear_all(self) -> None:
        """Delete every row of every domain's tables (for tests)."""
        for repository in self._repositories.values():
            repository.dangerously_clear_all()

    def prune(self, *, retention: dict | None = None, max_batches: int | None = None, max_rows: int | None = None,
              pause_ms: int = 0, stop: threading.Event | None = None) -> list[dict]:
        """Apply ``retention`` (for this call), else the store's, domain by domain: the results of
        each domain's ``prune`` in order.  Nothing is pruned on ClickHouse (its tables expire rows
        by ``ttl_days``); a failing domain is logged and the others still run."""
        return prune_domains(self._repositories.get, self.retention, retention=retention, max_batches=max_batches,
                             max_rows=max_rows, pause_ms=pause_ms, stop=stop,
                             error_id=f"STORAGE_{self.backend_class.name}_PRUNE_INVALID_INPUT")

    def close(self) -> None:
        """Close the database connections."""
        self.backend.close()

    def __enter__(self) -> "WholeStore":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
