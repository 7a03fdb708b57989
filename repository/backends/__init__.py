"""Database backends: connection set-up, URL parsing, capabilities and the operations each
database spells differently (upsert, JSON filters, row versioning, DDL).

:class:`~repository.backends.base.Backend` holds what SQLite and PostgreSQL share; each module
overrides only what its database really does differently.
"""
