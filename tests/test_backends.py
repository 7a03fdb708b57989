"""Write primitives of the backends, checked against what a read of the same row gives back."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from composite_store.values import JSONText, truncate_ms


@pytest.mark.backends("sqlite", "postgres", "clickhouse")
def test_insert_returning_gives_the_row_as_a_read_gives_it(memory) -> None:
    backend, Thread = memory.backend, memory.models.thread
    created = datetime(2025, 3, 1, 9, 30, 15, 123456, tzinfo=timezone.utc)  # sub-millisecond digits
    metadata = {"zeta": 1, "alpha": [1.5, "é", None], "nested": {"b": True, "a": {}}}
    row = {"id": "t-returning", "resource_id": "alice", "title": "Order 1042", "metadata": metadata,
           "created_at": created, "updated_at": created}
    with backend.connection(), backend.write():
        returned = backend.insert_returning(Thread, row)
    with backend.connection():
        read = backend.select(Thread).where(Thread.id == "t-returning").get()
    assert returned == read
    assert returned["created_at"] == truncate_ms(created) and returned["metadata"] == metadata


@pytest.mark.backends("sqlite", "postgres", "clickhouse")
def test_insert_returning_decodes_stored_json_text_and_fills_columns_not_given(memory) -> None:
    backend, Resource = memory.backend, memory.models.resource
    stamp = datetime(2025, 3, 1, 9, 30, tzinfo=timezone.utc)
    with backend.connection(), backend.write():
        returned = backend.insert_returning(Resource, {"id": "r-returning", "metadata": JSONText('{"tier":"gold"}'),
                                                       "created_at": stamp, "updated_at": stamp})
    with backend.connection():
        read = backend.select(Resource).where(Resource.id == "r-returning").get()
    assert returned == read
    assert returned["metadata"] == {"tier": "gold"} and returned["working_memory"] is None


def _resource(id: str) -> dict:
    stamp = datetime(2025, 3, 1, 9, 30, tzinfo=timezone.utc)
    return {"id": id, "metadata": {"k": 1}, "created_at": stamp, "updated_at": stamp}


@pytest.mark.backends("sqlite", "postgres")
def test_write_undoes_everything_on_an_error_and_a_nested_write_only_its_own_rows(memory) -> None:
    backend, Resource = memory.backend, memory.models.resource
    with backend.connection():
        with pytest.raises(RuntimeError):
            with backend.write():
                backend.insert(Resource, [_resource("r-undone")])
                raise RuntimeError("undo")
        assert not backend.database.in_transaction()
        with backend.write():
            assert backend.database.in_transaction()
            backend.insert(Resource, [_resource("r-kept")])
            with pytest.raises(RuntimeError):
                with backend.write():
                    backend.insert(Resource, [_resource("r-inner")])
                    raise RuntimeError("undo the inner write only")
        assert not backend.database.in_transaction()
        stored = {row["id"] for row in backend.select(Resource).where(Resource.id.startswith("r-"))}
    assert stored == {"r-kept"}


@pytest.mark.backends("sqlite")
def test_sqlite_write_is_one_begin_immediate_and_commit_with_savepoints_inside(memory) -> None:
    backend, Resource = memory.backend, memory.models.resource
    with backend.connection(), backend.counting_statements() as log:
        with backend.write():
            backend.insert(Resource, [_resource("r-outer")])
            with backend.write():
                backend.insert(Resource, [_resource("r-nested")])
    assert log.statements[0] == "BEGIN IMMEDIATE" and log.statements[-1] == "COMMIT", log.statements
    assert sum(statement.startswith("SAVEPOINT") for statement in log.statements) == 1, log.statements
    assert log.count == 6, log.statements  # BEGIN, INSERT, SAVEPOINT, INSERT, RELEASE, COMMIT


@pytest.mark.backends("sqlite")
def test_prepared_reads_convert_values_as_the_fields_do(memory) -> None:
    """Prepared statements and pages convert with SQLite's direct value readers
    (:meth:`StoredFormats.value_reader`); peewee's own reader calls the fields' ``python_value``:
    both give the same records, for stored JSON text, JSON that does not parse, NULL and timestamps."""
    from composite_store.backends.base import fetch_all

    backend, Thread = memory.backend, memory.models.thread
    stamp = datetime(2025, 3, 1, 9, 30, 15, 123000, tzinfo=timezone.utc)
    metadata = {"not json": JSONText("{broken"), "null": None, "object": {"a": [1, 2.5, "é"]}, "text": "plain"}
    with backend.connection():
        for name, value in metadata.items():
            backend.insert(Thread, [{"id": f"t-read-{name}", "resource_id": "r", "title": "t", "metadata": value,
                                     "created_at": stamp, "updated_at": stamp}])
        query = backend.select(Thread).where(Thread.id.startswith("t-read-")).order_by(Thread.id)
        by_fields = list(query.clone())  # peewee's reader: python_value per value
        direct = fetch_all(backend.database, query)

        def build():
            return backend.select(Thread).where(Thread.id == backend.param("id")).limit(1)

        prepared = [backend.prepared(Thread, build).first(id=row["id"]) for row in by_fields]
    assert direct == by_fields == prepared
    assert [row["metadata"] for row in direct] == ["{broken", None, {"a": [1, 2.5, "é"]}, "plain"]
    assert all(row["created_at"] == stamp for row in direct)
