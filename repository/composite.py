"""The composite store: each domain on the backend of your choice."""

from __future__ import annotations

import logging
import threading
from typing import Any, Mapping

from .base import DomainRepository
from .errors import NotSupportedError, ValidationError
from .retention import prune_domains, validated_retention
from .stores import DOMAINS, WholeStore, check_domain_key, unknown_domain

logger = logging.getLogger(__name__)

#: Domains that ClickHouse does not hold yet.
CLICKHOUSE_LATER = ("agents", "datasets", "experiments")


def _invalid(message: str, domain: str | None) -> ValidationError:
    return ValidationError(message, fields={domain or "domains": [message]},
                           id="STORAGE_COMPOSITE_INIT_INVALID_INPUT", domain=domain)


def store_for_url(url: str, *, domain: str | None = None, id: str = "store") -> WholeStore:
    """The whole store for a URL, chosen by its scheme (``sqlite``/``file``, ``postgresql``, ``clickhouse``,
    ``chdb``: ClickHouse in-process)."""
    from .clickhouse import ClickHouseStore
    from .postgres import PostgresStore
    from .sqlite import SQLiteStore

    if not isinstance(url, str):
        raise _invalid(f"URL for {domain or 'default'} must be a string", domain)
    if url.startswith(("sqlite:", "file:")):
        return SQLiteStore(id=id, url=url)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(id=id, connection_string=url)
    if url.startswith(("clickhouse://", "chdb://")):
        return ClickHouseStore(id=id, url=url)
    scheme = url.split(":", 1)[0] if ":" in url else url
    raise _invalid(f"Unknown URL scheme {scheme!r} for {domain or 'default'}; use sqlite:///path, file:./path, "
                   "postgresql://…, clickhouse://… or chdb:///path/to/dir", domain)


class CompositeStore:
    """Maps each domain to a source store.

    ``default`` is the fallback for every domain not listed in ``domains``; ``domains`` maps a
    domain key to a domain repository (``MemorySQLite(...)``), a whole store, or ``False`` to
    disable that domain.  ``disable_init=True`` makes :meth:`init` a no-op.  ``retention``
    (``{<domain key>: {<table key>: policy}}``) is what :meth:`prune` applies.
    """

    def __init__(self, id: str = "composite", default: WholeStore | None = None,
                 domains: Mapping[str, Any] | None = None, disable_init: bool = False,
                 retention: dict | None = None) -> None:
        domains = dict(domains or {})
        for key, source in domains.items():
            if key not in DOMAINS:
                raise _invalid(unknown_domain(key), key)
            if source is not False and not isinstance(source, (DomainRepository, WholeStore)):
                raise _invalid(f"The source of {key} must be a domain repository, a whole store or False", key)
        if default is not None and not isinstance(default, WholeStore):
            raise _invalid("default must be a whole store (SQLiteStore, PostgresStore, ClickHouseStore)", None)
        if default is None and not any(source is not False for source in domains.values()):
            raise _invalid("A composite store needs a default store or at least one domain", None)
        self.retention = validated_retention(retention, error_id="STORAGE_COMPOSITE_INIT_INVALID_INPUT")
        self.id = id
        self.default = default
        self.disable_init = disable_init
        self._sources = domains
        # Again against each repository's own layout (observability's vNext keys need it).
        validated_retention(retention, error_id="STORAGE_COMPOSITE_INIT_INVALID_INPUT", get_store=self.get_store)
        self._init_lock = threading.Lock()
        self._link_datasets_to_experiments()

    def _link_datasets_to_experiments(self) -> None:
        """With datasets and experiments in different databases, deleting a dataset or purging an
        item must also reach the experiments repository (datasets.md §8): give the datasets
        repository a reference to it (in one database, the datasets transaction does that work)."""
        datasets, experiments = self.get_store("datasets"), self.get_store("experiments")
        if datasets is not None and experiments is not None and datasets.backend is not experiments.backend:
            datasets.link_experiments(experiments)

    @classmethod
    def from_urls(cls, default: str | None = None, *, id: str = "composite", disable_init: bool = False,
                  retention: dict | None = None, **domain_urls: str | bool) -> "CompositeStore":
        """Build from URLs: ``CompositeStore.from_urls(default="postgresql://…", memory="sqlite:///local.db")``.

        Domains with the same URL share one store (and its connections).
        """
        for key in domain_urls:
            if key not in DOMAINS:
                raise _invalid(unknown_domain(key), key)
        validated_retention(retention, error_id="STORAGE_COMPOSITE_INIT_INVALID_INPUT")  # before connecting
        stores: dict[str, WholeStore] = {}

        def store(url: str, domain: str | None) -> WholeStore:
            if url not in stores:
                stores[url] = store_for_url(url, domain=domain, id=f"{id}-{len(stores)}")
            return stores[url]

        default_store = store(default, None) if default is not None else None
        domains: dict[str, Any] = {}
        for key, url in domain_urls.items():
            if url is False or url is None:
                domains[key] = False if url is False else default_store or False
                continue
            source = store(url, key)
            if source.get_store(key) is None and key in CLICKHOUSE_LATER:
                raise NotSupportedError(
                    f"The {key} domain is not available on ClickHouse; use SQLite or PostgreSQL for it.",
                    id="STORAGE_CLICKHOUSE_INIT_NOT_SUPPORTED", domain=key)
            domains[key] = source
        return cls(id=id, default=default_store, domains=domains, disable_init=disable_init, retention=retention)

    def get_store(self, key: str) -> DomainRepository | None:
        """The repository that serves domain ``key``, or ``None`` when it is disabled or its
        source store does not hold it.

        A ``key`` that is not one of the seven domain keys raises :class:`ValidationError`
        ``STORAGE_COMPOSITE_GET_STORE_INVALID_INPUT`` listing them.
        """
        check_domain_key(key, backend="COMPOSITE")
        source = self._sources.get(key, self.default)
        if source is None or source is False:
            return None
        if isinstance(source, DomainRepository):
            return source if source.domain == key else None
        return source.get_store(key)

    def _repositories(self) -> list[DomainRepository]:
        seen: dict[int, DomainRepository] = {}
        for key in DOMAINS:
            repository = self.get_store(key)
            if repository is not None:
                seen.setdefault(id(repository), repository)
        return list(seen.values())

    def init(self) -> None:
        """Create every domain's missing tables; each repository's init runs once, thread-safe."""
        if self.disable_init:
            return
        with self._init_lock:
            for repository in self._repositories():
                logger.debug("init %s on %s", repository.domain, repository.backend.display_url)
                repository.init()

    def prune(self, *, retention: dict | None = None, max_batches: int | None = None, max_rows: int | None = None,
              pause_ms: int = 0, stop: threading.Event | None = None) -> list[dict]:
        """Apply ``retention`` (for this call), else the configured one, domain by domain in the
        mapping's order; see each domain's ``prune``.  A domain disabled, on ClickHouse (TTL) or
        with no policy is skipped; a failing domain is logged and the others still run."""
        return prune_domains(self.get_store, self.retention, retention=retention, max_batches=max_batches,
                             max_rows=max_rows, pause_ms=pause_ms, stop=stop,
                             error_id="STORAGE_COMPOSITE_PRUNE_INVALID_INPUT")

    def close(self) -> None:
        """Close each connection pool once."""
        backends = {id(repo.backend): repo.backend for repo in self._repositories()}
        if isinstance(self.default, WholeStore):
            backends.setdefault(id(self.default.backend), self.default.backend)
        for backend in backends.values():
            backend.close()

    def __enter__(self) -> "CompositeStore":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CompositeStore(id={self.id!r})"
