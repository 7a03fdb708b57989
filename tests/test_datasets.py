"""Datasets domain conformance suite (datasets.md §11), on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from composite_store import CompositeStore, ConflictError, NotFoundError, NotSupportedError, StorageError, ValidationError
from composite_store.jsonb import encode_jsonb
from composite_store.schemas import DatasetItemSchema, DatasetSchema
from composite_store.sqlite import DatasetsSQLite, ExperimentsSQLite, SQLiteStore

pytestmark = pytest.mark.backends("sqlite", "postgres")

BACKEND_IDS = {"sqlite": "SQLITE", "postgres": "PG"}


def run_threads(count, func):
    """Run ``func(index)`` in ``count`` threads at once; returns the results in index order."""
    barrier = threading.Barrier(count)

    def call(index):
        barrier.wait()
        return func(index)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(call, range(count)))


def same_json(left, right):
    """Equal as values *and* types all the way down (``0`` is not ``False``, ``1`` not ``1.0``)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(same_json(left[k], right[k]) for k in left)
    if isinstance(left, list):
        return len(left) == len(right) and all(same_json(a, b) for a, b in zip(left, right))
    return left == right


def version_of(datasets, dataset_id):
    return datasets.get_dataset_by_id(id=dataset_id)["version"]


# --------------------------------------------------------------------------- datasets

def test_create_dataset_echoes_fields_at_version_0(datasets):
    dataset = datasets.create_dataset(name="d", description="x", metadata={"a": 1})
    assert len(dataset["id"]) == 36
    assert (dataset["name"], dataset["description"], dataset["metadata"], dataset["version"]) == ("d", "x", {"a": 1}, 0)
    assert dataset["created_at"].tzinfo is not None and dataset["created_at"] == dataset["updated_at"]
    assert datasets.get_dataset_by_id(id=dataset["id"]) == dataset


def test_concurrent_creates_of_one_id_store_one_row(datasets):
    results = run_threads(20, lambda _: datasets.create_dataset(id="ds-1", name="d", organization_id="org"))
    assert len({r["created_at"] for r in results}) == 1
    assert datasets.list_datasets().total == 1


def test_create_with_existing_id_returns_stored_record_unchanged(datasets):
    datasets.create_dataset(id="ds-1", name="d", organization_id="org")
    renamed = datasets.update_dataset(id="ds-1", name="renamed")
    again = datasets.create_dataset(id="ds-1", name="other", organization_id="org", project_id=None)
    assert again == renamed
    assert again["name"] == "renamed" and again["version"] == 0 and again["updated_at"] == renamed["updated_at"]


def test_create_with_conflicting_or_empty_id(datasets, backend):
    datasets.create_dataset(id="ds-1", name="d", organization_id="org")
    with pytest.raises(ConflictError) as info:
        datasets.create_dataset(id="ds-1", name="d", organization_id="other")
    assert info.value.id == f"STORAGE_{BACKEND_IDS[backend]}_CREATE_DATASET_CONFLICT"
    assert info.value.details["code"] == "ID_CONFLICT"
    assert info.value.details["reason"] == "IMMUTABLE_FIELDS_MISMATCH"
    assert info.value.details["fields"] == ["organization_id"]
    with pytest.raises(ValidationError) as info:
        datasets.create_dataset(id="", name="d")
    assert info.value.id == f"STORAGE_{BACKEND_IDS[backend]}_CREATE_DATASET_INVALID_INPUT"
    assert info.value.details["code"] == "INVALID_ID"
    assert info.value.message == "Caller-defined dataset ID must not be empty"


def test_deleted_dataset_id_is_free_again(datasets):
    first = datasets.create_dataset(id="ds-1", name="d")
    datasets.add_item(dataset_id="ds-1", input=1)
    datasets.delete_dataset(id="ds-1")
    second = datasets.create_dataset(id="ds-1", name="second")
    assert second["created_at"] > first["created_at"] and second["version"] == 0 and second["name"] == "second"


def test_get_dataset_missing_or_out_of_scope_is_none(datasets):
    datasets.create_dataset(id="ds-1", name="d", organization_id="org")
    assert datasets.get_dataset_by_id(id="missing") is None
    assert datasets.get_dataset_by_id(id="ds-1", filters={"organization_id": "wrong"}) is None
    assert datasets.get_dataset_by_id(id="ds-1", filters={"organization_id": "org"})["id"] == "ds-1"
    assert datasets.get_dataset_by_id(id="ds-1")["id"] == "ds-1"


def test_update_dataset_changes_fields_and_bumps_updated_at(datasets):
    dataset = datasets.create_dataset(name="d")
    datasets.add_item(dataset_id=dataset["id"], input=1)
    updated = datasets.update_dataset(id=dataset["id"], name="new", description="desc")
    assert (updated["name"], updated["description"], updated["version"]) == ("new", "desc", 1)
    assert updated["updated_at"] > dataset["updated_at"]
    assert datasets.get_dataset_by_id(id=dataset["id"]) == updated
    with pytest.raises(NotFoundError, match="Dataset not found: missing"):
        datasets.update_dataset(id="missing", name="x")


def test_scoped_update(datasets):
    dataset = datasets.create_dataset(name="d", organization_id="org", project_id="p")
    with pytest.raises(NotFoundError, match="Dataset not found"):
        datasets.update_dataset(id=dataset["id"], filters={"organization_id": "wrong"}, name="x")
    assert datasets.get_dataset_by_id(id=dataset["id"]) == dataset
    updated = datasets.update_dataset(id=dataset["id"], filters={"organization_id": "org", "project_id": "p"},
                                      name="x")
    assert updated["name"] == "x"


def test_delete_dataset_and_scoped_delete(datasets):
    dataset = datasets.create_dataset(name="d", organization_id="org", project_id="p")
    datasets.add_item(dataset_id=dataset["id"], input=1)
    assert datasets.delete_dataset(id=dataset["id"], filters={"organization_id": "wrong"}) is None
    assert datasets.delete_dataset(id=dataset["id"], filters={"project_id": "wrong"}) is None
    assert datasets.get_dataset_by_id(id=dataset["id"]) is not None
    assert datasets.list_items(dataset_id=dataset["id"]).total == 1
    assert datasets.delete_dataset(id=dataset["id"]) is None
    assert datasets.get_dataset_by_id(id=dataset["id"]) is None
    assert datasets.list_items(dataset_id=dataset["id"]).total == 0
    assert datasets.list_dataset_versions(dataset_id=dataset["id"]).total == 0
    assert datasets.delete_dataset(id="missing") is None


def test_list_datasets_pages(datasets):
    for index in range(5):
        datasets.create_dataset(name=f"d{index}")
    pages = [datasets.list_datasets(page=p, per_page=2) for p in range(3)]
    assert [len(p.items) for p in pages] == [2, 2, 1]
    assert [p.has_more for p in pages] == [True, True, False]
    assert all(p.total == 5 for p in pages)
    assert len({d["id"] for p in pages for d in p.items}) == 5


def test_list_datasets_filters(datasets):
    datasets.create_dataset(id="ds-a", name="agent-prod-alpha", target_type="agent", target_ids=["a1", "a2"],
                            organization_id="org-1", candidate_key="ck", candidate_id="c1")
    datasets.create_dataset(id="ds-b", name="prod-tickets", target_type="agent", target_ids=["a2", "a3"],
                            organization_id="org-1", candidate_key="ck", candidate_id="c2")
    datasets.create_dataset(id="ds-c", name="support-tickets", target_type="workflow", target_ids=["a4"],
                            organization_id="org-2")

    def ids(**filters):
        return sorted(d["id"] for d in datasets.list_datasets(filters=filters).items)

    assert ids(target_type="agent") == ["ds-a", "ds-b"]
    assert ids(target_ids=["a2"]) == ["ds-a", "ds-b"]
    assert ids(target_ids=["a1", "a4"]) == ["ds-a", "ds-c"]
    assert ids(target_ids=["zzz"]) == []
    assert ids(target_ids=[]) == ["ds-a", "ds-b", "ds-c"]
    assert len(ids(name="PROD")) == 2 and len(ids(name="tickets")) == 2
    assert ids(target_type="agent", target_ids=["a1"], name="prod") == ["ds-a"]
    assert ids(candidate_key="ck") == ["ds-a", "ds-b"]
    assert ids(candidate_key="ck", candidate_id="c1") == ["ds-a"]
    assert ids(organization_id="org-1") == ["ds-a", "ds-b"]
    assert ids(name="%") == [] and ids(name="_") == []  # LIKE wildcards are literal
    assert datasets.list_datasets(filters={"target_ids": ["a2"]}, per_page=1).total == 2


def test_list_datasets_order(datasets):
    for name in ("b", "c", "a"):
        datasets.create_dataset(name=name)
    names = [d["name"] for d in datasets.list_datasets(order_by={"field": "name", "direction": "asc"}).items]
    assert names == ["a", "b", "c"]
    listed = datasets.list_datasets().items
    assert [d["id"] for d in listed] == [d["id"] for d in sorted(sorted(listed, key=lambda d: d["id"]),
                                                                 key=lambda d: d["created_at"], reverse=True)]
    with pytest.raises(ValidationError) as info:
        datasets.list_datasets(order_by={"field": "version"})
    assert info.value.fields == {"order_by.field": ["order_by.field must be one of created_at, updated_at, name"]}


def test_tenancy_and_configuration_fields_persist(datasets):
    created = datasets.create_dataset(name="d", organization_id="org", candidate_key="ck", description="",
                                      metadata={}, tags=[], target_ids=[], scorer_ids=[])
    assert created["project_id"] is None and created["candidate_id"] is None
    for key in ("input_schema", "ground_truth_schema", "request_context_schema", "target_type"):
        assert key not in created
    fetched = datasets.get_dataset_by_id(id=created["id"])
    listed = datasets.list_datasets().items[0]
    for record in (created, fetched, listed):
        assert (record["organization_id"], record["candidate_key"]) == ("org", "ck")
        assert (record["description"], record["metadata"], record["tags"], record["target_ids"],
                record["scorer_ids"]) == ("", {}, [], [], [])
        assert "input_schema" not in record
    updated = datasets.update_dataset(id=created["id"], name="renamed")
    assert (updated["organization_id"], updated["candidate_key"], updated["description"], updated["tags"]) == \
        ("org", "ck", "", [])
    cleared = datasets.update_dataset(id=created["id"], metadata=None, description="")
    assert "metadata" not in cleared and cleared["description"] == ""
    assert "metadata" not in datasets.get_dataset_by_id(id=created["id"])


def test_dataset_schema_wire_form(datasets):
    dataset = datasets.create_dataset(name="d", target_type="agent", organization_id="org")
    wire = DatasetSchema().dump(dataset)
    assert wire["targetType"] == "agent" and wire["organizationId"] == "org"
    assert wire["createdAt"].endswith("Z") and "inputSchema" not in wire
    assert DatasetSchema().load(wire) == dataset


# --------------------------------------------------------------------------- items and versions

def test_add_item_echoes_fields_and_steps_version(datasets):
    dataset = datasets.create_dataset(name="d")
    item = datasets.add_item(dataset_id=dataset["id"], input={"q": 1}, ground_truth={"a": 2}, metadata={"m": 1})
    assert (item["input"], item["ground_truth"], item["metadata"], item["dataset_version"]) == \
        ({"q": 1}, {"a": 2}, {"m": 1}, 1)
    stored = datasets.get_dataset_by_id(id=dataset["id"])
    assert stored["version"] == 1 and stored["updated_at"] == dataset["updated_at"]
    assert DatasetItemSchema().load(DatasetItemSchema().dump(item)) == item


def test_each_add_is_a_version(datasets):
    dataset = datasets.create_dataset(name="d")
    for n in range(3):
        datasets.add_item(dataset_id=dataset["id"], input=n)
    assert version_of(datasets, dataset["id"]) == 3
    all_versions = datasets.list_dataset_versions(dataset_id=dataset["id"], per_page=False)
    assert [v["version"] for v in all_versions.items] == [3, 2, 1]
    first = datasets.list_dataset_versions(dataset_id=dataset["id"], per_page=2)
    second = datasets.list_dataset_versions(dataset_id=dataset["id"], page=1, per_page=2)
    assert [v["version"] for v in first.items] == [3, 2] and first.has_more
    assert [v["version"] for v in second.items] == [1] and not second.has_more
    assert set(all_versions.items[0]) == {"id", "dataset_id", "version", "created_at"}


def test_new_item_history_is_one_row(datasets):
    dataset = datasets.create_dataset(name="d")
    item = datasets.add_item(dataset_id=dataset["id"], input=1)
    history = datasets.get_item_history(item_id=item["id"])
    assert len(history) == 1
    assert (history[0]["valid_to"], history[0]["is_deleted"], history[0]["dataset_version"]) == (None, False, 1)
    assert datasets.get_item_history(item_id="unknown") == []


def test_update_then_delete_keeps_history(datasets):
    dataset = datasets.create_dataset(name="d")
    item = datasets.add_item(dataset_id=dataset["id"], input={"n": 1}, scorer_ids=["quality"])
    updated = datasets.update_item(id=item["id"], dataset_id=dataset["id"], input={"n": 2})
    assert updated["created_at"] == item["created_at"] and updated["scorer_ids"] == ["quality"]
    history = datasets.get_item_history(item_id=item["id"])
    assert [(h["dataset_version"], h["input"], h["valid_to"]) for h in history] == [(2, {"n": 2}, None),
                                                                                    (1, {"n": 1}, 2)]
    datasets.delete_item(id=item["id"], dataset_id=dataset["id"])
    history = datasets.get_item_history(item_id=item["id"])
    tombstone = history[0]
    assert (tombstone["dataset_version"], tombstone["is_deleted"], tombstone["valid_to"]) == (3, True, None)
    assert tombstone["input"] == {"n": 2} and tombstone["scorer_ids"] == ["quality"]
    assert [(h["dataset_version"], h["valid_to"], h["is_deleted"]) for h in history[1:]] == [(2, 3, False),
                                                                                            (1, 2, False)]
    assert datasets.get_item_by_id(id=item["id"]) is None


def test_get_item_by_id_as_of_version(datasets):
    dataset = datasets.create_dataset(name="d")
    item = datasets.add_item(dataset_id=dataset["id"], input="a1")  # v1
    other = datasets.add_item(dataset_id=dataset["id"], input="b")  # v2
    datasets.update_item(id=item["id"], dataset_id=dataset["id"], input="a3")  # v3
    datasets.delete_item(id=item["id"], dataset_id=dataset["id"])  # v4
    assert datasets.get_item_by_id(id=item["id"], dataset_version=0) is None
    assert datasets.get_item_by_id(id=item["id"], dataset_version=2)["input"] == "a1"
    assert datasets.get_item_by_id(id=item["id"], dataset_version=3)["input"] == "a3"
    assert datasets.get_item_by_id(id=item["id"], dataset_version=4) is None
    assert datasets.get_item_by_id(id=other["id"], dataset_version=99) == datasets.get_item_by_id(id=other["id"])


def test_get_items_by_version(datasets):
    dataset = datasets.create_dataset(name="d")
    item = datasets.add_item(dataset_id=dataset["id"], input={"n": 1})
    datasets.update_item(id=item["id"], dataset_id=dataset["id"], input={"n": 2})
    datasets.delete_item(id=item["id"], dataset_id=dataset["id"])

    def inputs(version):
        return [i["input"] for i in datasets.get_items_by_version(dataset_id=dataset["id"], version=version)]

    assert (inputs(1), inputs(2), inputs(3), inputs(0)) == ([{"n": 1}], [{"n": 2}], [], [])
    assert [h["dataset_version"] for h in datasets.get_item_history(item_id=item["id"])] == [3, 2, 1]
    assert datasets.get_items_by_version(dataset_id="unknown", version=1) == []


def test_list_items_by_version_and_current(datasets):
    dataset = datasets.create_dataset(name="d")
    first = datasets.add_item(dataset_id=dataset["id"], input=1)
    second = datasets.add_item(dataset_id=dataset["id"], input=2)
    assert datasets.list_items(dataset_id=dataset["id"], version=1).total == 1
    assert datasets.list_items(dataset_id=dataset["id"], version=2).total == 2
    datasets.delete_item(id=first["id"], dataset_id=dataset["id"])
    assert [i["id"] for i in datasets.list_items(dataset_id=dataset["id"]).items] == [second["id"]]
    assert datasets.list_items(dataset_id="unknown").total == 0


def test_search_reads_the_requested_version(datasets):
    dataset = datasets.create_dataset(name="d")
    x = datasets.add_item(dataset_id=dataset["id"], input={"text": "alpha-original"})
    datasets.add_item(dataset_id=dataset["id"], input={"text": "beta"})
    datasets.update_item(id=x["id"], dataset_id=dataset["id"], input={"text": "alpha-updated"})

    def found(search, version=None):
        page = datasets.list_items(dataset_id=dataset["id"], search=search, version=version)
        return [i["input"]["text"] for i in page.items]

    assert found("updated") == ["alpha-updated"]
    assert found("alpha-original", version=2) == ["alpha-original"]
    assert found("ALPHA") == ["alpha-updated"] and found("ALPHA", version=2) == ["alpha-original"]
    assert found("%") == [] and found("a_p") == []  # LIKE wildcards are literal
    assert sorted(found("")) == ["alpha-updated", "beta"]


def test_search_looks_at_ground_truth(datasets):
    dataset = datasets.create_dataset(name="d")
    datasets.add_item(dataset_id=dataset["id"], input="q", ground_truth={"answer": "Needle"})
    datasets.add_item(dataset_id=dataset["id"], input="other")
    assert [i["input"] for i in datasets.list_items(dataset_id=dataset["id"], search="needle").items] == ["q"]


def test_list_items_pages(datasets):
    dataset = datasets.create_dataset(name="d")
    for n in range(5):
        datasets.add_item(dataset_id=dataset["id"], input=n)
    page = datasets.list_items(dataset_id=dataset["id"], per_page=2)
    assert (len(page.items), page.total, page.has_more) == (2, 5, True)
    historical = datasets.list_items(dataset_id=dataset["id"], version=3, per_page=2, page=1)
    assert (len(historical.items), historical.total, historical.has_more) == (1, 3, False)
    everything = datasets.list_items(dataset_id=dataset["id"], per_page=False)
    assert sorted(i["input"] for i in everything.items) == [0, 1, 2, 3, 4]
    ascending = datasets.list_items(dataset_id=dataset["id"], order_by={"field": "updated_at", "direction": "ASC"})
    assert [i["updated_at"] for i in ascending.items] == sorted(i["updated_at"] for i in ascending.items)


def test_item_errors_for_missing_or_foreign_items(datasets):
    dataset = datasets.create_dataset(name="d")
    other = datasets.create_dataset(name="other")
    item = datasets.add_item(dataset_id=dataset["id"], input=1)
    with pytest.raises(NotFoundError, match="Item not found: missing"):
        datasets.update_item(id="missing", dataset_id=dataset["id"], input=2)
    with pytest.raises(ValidationError, match="does not belong to dataset") as info:
        datasets.update_item(id=item["id"], dataset_id=other["id"], input=2)
    assert info.value.details["code"] == "DATASET_MISMATCH"
    assert datasets.delete_item(id="missing", dataset_id=dataset["id"]) is None
    assert version_of(datasets, dataset["id"]) == 1
    with pytest.raises(ValidationError, match="does not belong to dataset"):
        datasets.delete_item(id=item["id"], dataset_id=other["id"])
    assert version_of(datasets, other["id"]) == 0 and datasets.get_item_by_id(id=item["id"]) is not None


def test_item_writes_on_missing_or_out_of_scope_dataset(datasets):
    dataset = datasets.create_dataset(name="d", organization_id="org")
    with pytest.raises(NotFoundError, match="Dataset not found: missing"):
        datasets.add_item(dataset_id="missing", input=1)
    with pytest.raises(NotFoundError, match="Dataset not found"):
        datasets.add_item(dataset_id=dataset["id"], input=1, filters={"organization_id": "other"})
    with pytest.raises(NotFoundError, match="Dataset not found"):
        datasets.delete_item(id="x", dataset_id="missing")
    assert datasets.delete_item(id="x", dataset_id="missing", filters={"organization_id": "org"}) is None
    item = datasets.add_item(dataset_id=dataset["id"], input=1, filters={"organization_id": "org"})
    assert datasets.delete_item(id=item["id"], dataset_id=dataset["id"], filters={"organization_id": "other"}) is None
    assert datasets.batch_delete_items(dataset_id=dataset["id"], item_ids=[item["id"]],
                                       filters={"organization_id": "other"}) is None
    assert datasets.get_item_by_id(id=item["id"]) is not None and version_of(datasets, dataset["id"]) == 1


def test_scorer_ids_lifecycle(datasets):
    dataset = datasets.create_dataset(name="d")
    item = datasets.add_item(dataset_id=dataset["id"], input=1, scorer_ids=["quality", "safety"])
    kept = datasets.update_item(id=item["id"], dataset_id=dataset["id"], metadata={"m": 1})
    assert kept["scorer_ids"] == ["quality", "safety"]
    datasets.update_item(id=item["id"], dataset_id=dataset["id"], scorer_ids=["relevance"])
    assert datasets.update_item(id=item["id"], dataset_id=dataset["id"], scorer_ids=[])["scorer_ids"] == []
    assert "scorer_ids" not in datasets.update_item(id=item["id"], dataset_id=dataset["id"], scorer_ids=None)
    history = datasets.get_item_history(item_id=item["id"])
    assert [h.get("scorer_ids", "absent") for h in history] == \
        ["absent", [], ["relevance"], ["quality", "safety"], ["quality", "safety"]]


def test_tool_mocks_and_policy_round_trip(datasets):
    dataset = datasets.create_dataset(name="d")
    mocks = [{"toolName": "search", "args": {"q": "x"}, "output": {"hits": [1]}, "matchArgs": "strict"}]
    item = datasets.add_item(dataset_id=dataset["id"], input=1, tool_mocks=mocks, unmocked_tool_policy="deny")
    assert item["tool_mocks"] == mocks and item["unmocked_tool_policy"] == "deny"
    assert datasets.get_item_by_id(id=item["id"]) == item
    after = datasets.update_item(id=item["id"], dataset_id=dataset["id"], metadata={"m": 1})
    assert after["tool_mocks"] == mocks and after["unmocked_tool_policy"] == "deny"
    replaced = [{"toolName": "lookup", "args": {}, "output": None}]
    after = datasets.update_item(id=item["id"], dataset_id=dataset["id"], tool_mocks=replaced,
                                 unmocked_tool_policy="allow")
    assert after["tool_mocks"] == replaced and after["unmocked_tool_policy"] == "allow"
    assert datasets.get_item_by_id(id=item["id"]) == after


def test_batch_insert_and_batch_delete(datasets):
    dataset = datasets.create_dataset(name="d", organization_id="org", project_id="proj")
    items = datasets.batch_insert_items(dataset_id=dataset["id"], items=[
        {"input": 1, "scorer_ids": ["quality"]}, {"input": 2, "scorer_ids": []}, {"input": 3}])
    assert version_of(datasets, dataset["id"]) == 1
    assert [i["dataset_version"] for i in items] == [1, 1, 1]
    assert [i.get("scorer_ids", "absent") for i in items] == [["quality"], [], "absent"]
    stored = {i["id"]: i for i in datasets.list_items(dataset_id=dataset["id"]).items}
    assert [stored[i["id"]].get("scorer_ids", "absent") for i in items] == [["quality"], [], "absent"]
    datasets.batch_delete_items(dataset_id=dataset["id"], item_ids=[items[0]["id"], items[1]["id"], items[0]["id"],
                                                                    "unknown"])
    assert version_of(datasets, dataset["id"]) == 2
    for item in items[:2]:
        tombstone = datasets.get_item_history(item_id=item["id"])[0]
        assert tombstone["is_deleted"] and tombstone["dataset_version"] == 2
        assert (tombstone["organization_id"], tombstone["project_id"]) == ("org", "proj")
    assert [i["id"] for i in datasets.list_items(dataset_id=dataset["id"]).items] == [items[2]["id"]]


def test_calls_that_change_nothing_make_no_version(datasets):
    dataset = datasets.create_dataset(name="d")
    assert datasets.batch_insert_items(dataset_id=dataset["id"], items=[]) == []
    datasets.batch_delete_items(dataset_id=dataset["id"], item_ids=["unknown", "other"])
    datasets.batch_delete_items(dataset_id=dataset["id"], item_ids=[])
    assert version_of(datasets, dataset["id"]) == 0
    assert datasets.list_dataset_versions(dataset_id=dataset["id"]).total == 0
    item = datasets.add_item(dataset_id=dataset["id"], input=1)
    datasets.delete_item(id=item["id"], dataset_id=dataset["id"])
    datasets.delete_item(id=item["id"], dataset_id=dataset["id"])  # already deleted
    datasets.batch_delete_items(dataset_id=dataset["id"], item_ids=[item["id"]])
    assert version_of(datasets, dataset["id"]) == 2


def test_update_item_without_changes_is_still_a_version(datasets):
    dataset = datasets.create_dataset(name="d")
    item = datasets.add_item(dataset_id=dataset["id"], input=1)
    again = datasets.update_item(id=item["id"], dataset_id=dataset["id"])
    assert again["dataset_version"] == 2 and again["input"] == 1 and version_of(datasets, dataset["id"]) == 2


def test_candidate_screener_source(datasets):
    dataset = datasets.create_dataset(name="d")
    source = {"type": "candidate-screener", "referenceId": "r1"}
    item = datasets.add_item(dataset_id=dataset["id"], input=1, source=source)
    assert item["source"] == source and datasets.get_item_by_id(id=item["id"])["source"] == source


def test_item_rows_carry_the_dataset_tenancy(datasets):
    dataset = datasets.create_dataset(name="d", organization_id="org", project_id="proj")
    item = datasets.add_item(dataset_id=dataset["id"], input=1)
    datasets.update_item(id=item["id"], dataset_id=dataset["id"], input=2)
    batch = datasets.batch_insert_items(dataset_id=dataset["id"], items=[{"input": 3}, {"input": 4}])
    datasets.delete_item(id=batch[0]["id"], dataset_id=dataset["id"])
    datasets.batch_delete_items(dataset_id=dataset["id"], item_ids=[batch[1]["id"]])
    rows = [row for i in (item, *batch) for row in datasets.get_item_history(item_id=i["id"])]
    assert len(rows) == 6
    assert all((row["organization_id"], row["project_id"]) == ("org", "proj") for row in rows)
    assert datasets.list_items(dataset_id=dataset["id"], filters={"organization_id": "org"}).total == 1
    assert datasets.list_items(dataset_id=dataset["id"], filters={"organization_id": "other"}).total == 0
    assert datasets.list_items(dataset_id=dataset["id"], filters={"project_id": "proj"}).total == 1


FIDELITY_VALUES = [None, False, 0, "", "null", "false", "42", "[]", '{"x":1}', '"quoted"', [], {},
                   {"nested": [None, False, 0, ""]}]


@pytest.mark.parametrize("value", FIDELITY_VALUES, ids=repr)
def test_payload_values_come_back_exactly(datasets, value):
    dataset = datasets.create_dataset(name="d")
    payload = {"input": value, "ground_truth": value, "expected_trajectory": value}
    item = datasets.add_item(dataset_id=dataset["id"], external_id="e", **payload)

    def check(record):
        assert record is not None
        for key in payload:
            assert same_json(record[key], value), (key, record[key])

    check(item)
    check(datasets.get_item_by_id(id=item["id"]))
    retry = datasets.batch_insert_items(dataset_id=dataset["id"], items=[{"external_id": "e", **payload}])
    assert retry[0]["id"] == item["id"]
    check(retry[0])
    check(datasets.update_item(id=item["id"], dataset_id=dataset["id"], metadata={"m": 1}))
    check(datasets.get_item_by_id(id=item["id"], dataset_version=1))
    check(datasets.get_items_by_version(dataset_id=dataset["id"], version=1)[0])
    check(datasets.list_items(dataset_id=dataset["id"]).items[0])
    datasets.delete_item(id=item["id"], dataset_id=dataset["id"])
    history = datasets.get_item_history(item_id=item["id"])
    assert len(history) == 3
    for row in history:
        check(row)


def test_absent_versus_null(datasets):
    dataset = datasets.create_dataset(name="d")
    absent = datasets.add_item(dataset_id=dataset["id"], input=1)
    null = datasets.add_item(dataset_id=dataset["id"], input=2, ground_truth=None)
    assert "ground_truth" not in absent and null["ground_truth"] is None
    absent = datasets.update_item(id=absent["id"], dataset_id=dataset["id"], metadata={"m": 1})
    null = datasets.update_item(id=null["id"], dataset_id=dataset["id"], metadata={"m": 1})
    assert "ground_truth" not in absent and null["ground_truth"] is None
    datasets.batch_delete_items(dataset_id=dataset["id"], item_ids=[absent["id"], null["id"]])
    assert "ground_truth" not in datasets.get_item_history(item_id=absent["id"])[0]
    assert datasets.get_item_history(item_id=null["id"])[0]["ground_truth"] is None


# --------------------------------------------------------------------------- identity

def test_external_id_retry_returns_the_same_item(datasets):
    dataset = datasets.create_dataset(name="d")
    first = datasets.add_item(dataset_id=dataset["id"], external_id="e1", input={"q": 1})
    second = datasets.add_item(dataset_id=dataset["id"], external_id="e1", input={"q": 1.0})
    assert second == first and first["external_id"] == "e1"
    assert "valid_to" not in first and "is_deleted" not in first
    assert len(datasets.get_item_history(item_id=first["id"])) == 1
    assert version_of(datasets, dataset["id"]) == 1


def test_retry_with_none_or_omitted_field_keeps_first_representation(datasets):
    dataset = datasets.create_dataset(name="d")
    first = datasets.add_item(dataset_id=dataset["id"], external_id="e1", input=1, ground_truth=None)
    retry = datasets.add_item(dataset_id=dataset["id"], external_id="e1", input=1)
    assert retry["id"] == first["id"] and retry["ground_truth"] is None
    other = datasets.add_item(dataset_id=dataset["id"], external_id="e2", input=1)
    retry = datasets.add_item(dataset_id=dataset["id"], external_id="e2", input=1, ground_truth=None,
                              scorer_ids=None, unmocked_tool_policy=None)
    assert retry["id"] == other["id"] and "ground_truth" not in retry
    assert version_of(datasets, dataset["id"]) == 2
    assert datasets.update_item(id=other["id"], dataset_id=dataset["id"], ground_truth=None)["ground_truth"] is None
    assert datasets.get_item_by_id(id=other["id"])["ground_truth"] is None


def test_retry_with_other_payload_conflicts(datasets, backend):
    dataset = datasets.create_dataset(name="d")
    item = datasets.add_item(dataset_id=dataset["id"], external_id="e1", input=1, scorer_ids=["a"])
    with pytest.raises(ConflictError) as info:
        datasets.add_item(dataset_id=dataset["id"], external_id="e1", input=1, scorer_ids=["b"])
    error = info.value
    assert error.id == f"STORAGE_{BACKEND_IDS[backend]}_ADD_ITEM_CONFLICT"
    assert error.details["code"] == "ITEM_IDENTITY_CONFLICT"
    assert error.message == "One or more dataset item identities conflict with previously accepted items."
    assert error.details["conflicts"] == [{"index": 0, "external_id": "e1", "existing_item_id": item["id"],
                                           "reason": "payload_mismatch"}]
    assert version_of(datasets, dataset["id"]) == 1


def test_retry_after_update_and_after_delete(datasets):
    dataset = datasets.create_dataset(name="d")
    item = datasets.add_item(dataset_id=dataset["id"], external_id="e1", input={"v": 1})
    updated = datasets.update_item(id=item["id"], dataset_id=dataset["id"], input={"v": 2})
    assert datasets.add_item(dataset_id=dataset["id"], external_id="e1", input={"v": 1}) == updated
    assert version_of(datasets, dataset["id"]) == 2
    datasets.delete_item(id=item["id"], dataset_id=dataset["id"])
    with pytest.raises(ConflictError) as info:
        datasets.add_item(dataset_id=dataset["id"], external_id="e1", input={"v": 1})
    assert info.value.details["conflicts"][0]["reason"] == "deleted"
    assert version_of(datasets, dataset["id"]) == 3


def test_batch_with_a_conflict_writes_nothing(datasets):
    dataset = datasets.create_dataset(name="d")
    datasets.add_item(dataset_id=dataset["id"], external_id="e1", input=1)
    with pytest.raises(ConflictError) as info:
        datasets.batch_insert_items(dataset_id=dataset["id"], items=[{"input": "new"},
                                                                     {"external_id": "e1", "input": 2}])
    assert info.value.id.endswith("_BATCH_INSERT_ITEMS_CONFLICT")
    assert [c["index"] for c in info.value.details["conflicts"]] == [1]
    assert version_of(datasets, dataset["id"]) == 1
    assert datasets.list_items(dataset_id=dataset["id"]).total == 1


def test_repeated_external_ids_within_one_batch(datasets):
    dataset = datasets.create_dataset(name="d")
    results = datasets.batch_insert_items(dataset_id=dataset["id"], items=[
        {"external_id": "e2", "input": "p"}, {"external_id": "e3", "input": "q"}, {"external_id": "e2", "input": "p"}])
    assert len(results) == 3 and results[0] == results[2] and results[0] is not results[2]
    assert datasets.list_items(dataset_id=dataset["id"]).total == 2
    empty = datasets.create_dataset(name="empty")
    with pytest.raises(ConflictError) as info:
        datasets.batch_insert_items(dataset_id=empty["id"], items=[{"external_id": "e4", "input": "p"},
                                                                   {"external_id": "e4", "input": "q"}])
    conflict = info.value.details["conflicts"][0]
    assert (conflict["index"], conflict["reason"]) == (1, "payload_mismatch") and conflict["existing_item_id"]
    assert version_of(datasets, empty["id"]) == 0


def test_external_id_is_per_dataset(datasets):
    first = datasets.create_dataset(name="a")
    second = datasets.create_dataset(name="b")
    one = datasets.add_item(dataset_id=first["id"], external_id="e", input=1)
    two = datasets.add_item(dataset_id=second["id"], external_id="e", input=1)
    assert one["id"] != two["id"]


def test_concurrent_retries_of_one_external_id(datasets):
    dataset = datasets.create_dataset(name="d")
    results = run_threads(8, lambda _: datasets.add_item(dataset_id=dataset["id"], external_id="e9", input={"q": 1}))
    assert len({r["id"] for r in results}) == 1
    assert version_of(datasets, dataset["id"]) == 1


def test_corrupt_identity_history_is_reported(datasets):
    dataset = datasets.create_dataset(name="d")
    first = datasets.add_item(dataset_id=dataset["id"], external_id="e1", input=1)
    second = datasets.add_item(dataset_id=dataset["id"], input=2)
    Item = datasets.models.item
    with datasets.backend.connection():
        Item.update(external_id="e1").where(Item.id == second["id"]).execute()
    with pytest.raises(StorageError) as info:
        datasets.add_item(dataset_id=dataset["id"], external_id="e1", input=1)
    assert info.value.category == "SYSTEM" and info.value.id.endswith("_ADD_ITEM_FAILED")
    assert info.value.details["code"] == "IDENTITY_HISTORY_CORRUPT"
    assert info.value.message == "Dataset item identity history is corrupt for external_id: e1"
    assert first["id"] != second["id"]


# --------------------------------------------------------------------------- payload and schema checks

def test_datetime_payload_is_refused_iso_string_accepted(datasets):
    dataset = datasets.create_dataset(name="d")
    with pytest.raises(ValidationError) as info:
        datasets.add_item(dataset_id=dataset["id"], input={"when": datetime.now()})
    assert info.value.details["code"] == "PAYLOAD_NOT_SERIALIZABLE"
    assert info.value.details["path"] == "item.input.when"
    assert info.value.message == ("Dataset item payload must be JSON-serializable: "
                                  "datetime at item.input.when is not a JSON value.")
    when = datetime.now(timezone.utc).isoformat()
    first = datasets.add_item(dataset_id=dataset["id"], external_id="e", input={"when": when})
    again = datasets.add_item(dataset_id=dataset["id"], external_id="e", input={"when": when})
    assert first["id"] == again["id"] and datasets.list_items(dataset_id=dataset["id"]).total == 1


class Opaque:
    pass


@pytest.mark.parametrize("bad, path, reason_part", [
    ({1, 2}, "item.input.v", "set at item.input.v"),
    ((1, 2), "item.input.v", "tuple at item.input.v"),
    (lambda: 1, "item.input.v", "function at item.input.v"),
    (float("inf"), "item.input.v", "non-finite number inf at item.input.v"),
    (float("nan"), "item.input.v", "non-finite number nan at item.input.v"),
    (Decimal("1"), "item.input.v", "Decimal at item.input.v"),
    (Opaque(), "item.input.v", "Opaque at item.input.v"),
    ({3: "x"}, "item.input.v", "dict key 3 at item.input.v is not a string"),
    ("a\x00b", "item.input.v", "string at item.input.v contains U+0000"),
    ("a\ud800", "item.input.v", "string at item.input.v contains an unpaired surrogate"),
    ({"my key": b"x"}, 'item.input.v["my key"]', 'bytes at item.input.v["my key"]'),
], ids=lambda v: repr(v)[:20])
def test_update_item_refuses_values_that_are_not_json(datasets, bad, path, reason_part):
    dataset = datasets.create_dataset(name="d")
    item = datasets.add_item(dataset_id=dataset["id"], input={"v": 1})
    with pytest.raises(ValidationError) as info:
        datasets.update_item(id=item["id"], dataset_id=dataset["id"], input={"v": bad})
    assert info.value.details["code"] == "PAYLOAD_NOT_SERIALIZABLE"
    assert info.value.details["path"] == path
    assert reason_part in info.value.details["reason"] and reason_part in info.value.message
    assert datasets.get_item_by_id(id=item["id"]) == item and version_of(datasets, dataset["id"]) == 1


def test_circular_reference_is_refused(datasets):
    dataset = datasets.create_dataset(name="d")
    context = {"a": 1}
    context["self"] = context
    with pytest.raises(ValidationError) as info:
        datasets.batch_insert_items(dataset_id=dataset["id"], items=[{"input": 1},
                                                                     {"input": 2, "request_context": context}])
    assert "items[1].request_context.self refers back to items[1].request_context" in info.value.message
    assert datasets.list_items(dataset_id=dataset["id"]).total == 0


def test_nesting_limit(datasets):
    dataset = datasets.create_dataset(name="d")

    def nested(depth):
        value = "leaf"
        for _ in range(depth):
            value = [value]
        return value

    item = datasets.add_item(dataset_id=dataset["id"], input=nested(256))
    assert datasets.get_item_by_id(id=item["id"])["input"] == nested(256)
    with pytest.raises(ValidationError) as info:
        datasets.add_item(dataset_id=dataset["id"], input=nested(257))
    assert info.value.details["path"] == "item.input" + "[0]" * 256
    assert "nesting deeper than 256 levels" in info.value.message


NAME_SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}


def test_input_schema_checks_items(datasets):
    dataset = datasets.create_dataset(name="d", input_schema=NAME_SCHEMA)
    assert datasets.add_item(dataset_id=dataset["id"], input={"name": "x"})["input"] == {"name": "x"}
    with pytest.raises(ValidationError) as info:
        datasets.add_item(dataset_id=dataset["id"], input={"name": 123})
    error = info.value
    assert error.details["code"] == "SCHEMA_VALIDATION_FAILED"
    assert error.message.startswith("Validation failed for input")
    assert (error.details["field"], error.details["index"]) == ("input", None)
    assert [(e["path"], e["code"]) for e in error.details["errors"]] == [("/name", "type")]
    with pytest.raises(ValidationError) as info:
        datasets.add_item(dataset_id=dataset["id"], input={})
    assert [(e["path"], e["code"]) for e in info.value.details["errors"]] == [("/", "required")]
    assert version_of(datasets, dataset["id"]) == 1


def test_ground_truth_schema_checks_given_ground_truth_only(datasets):
    schema = {"type": "object", "properties": {"score": {"type": "number"}}}
    dataset = datasets.create_dataset(name="d", ground_truth_schema=schema)
    datasets.add_item(dataset_id=dataset["id"], input=1, ground_truth={"score": 0.9})
    with pytest.raises(ValidationError, match="Validation failed for ground_truth") as info:
        datasets.add_item(dataset_id=dataset["id"], input=1, ground_truth={"score": "high"})
    assert info.value.details["field"] == "ground_truth"
    assert "ground_truth" not in datasets.add_item(dataset_id=dataset["id"], input=1)


def test_update_item_is_checked_against_the_schema(datasets):
    dataset = datasets.create_dataset(name="d", input_schema=NAME_SCHEMA)
    item = datasets.add_item(dataset_id=dataset["id"], input={"name": "x"})
    with pytest.raises(ValidationError) as info:
        datasets.update_item(id=item["id"], dataset_id=dataset["id"], input={"name": 1})
    assert info.value.details["code"] == "SCHEMA_VALIDATION_FAILED"
    assert datasets.get_item_by_id(id=item["id"]) == item and version_of(datasets, dataset["id"]) == 1


def test_batch_schema_failure_names_the_position(datasets):
    dataset = datasets.create_dataset(name="d", input_schema=NAME_SCHEMA)
    with pytest.raises(ValidationError) as info:
        datasets.batch_insert_items(dataset_id=dataset["id"], items=[{"input": {"name": "a"}},
                                                                     {"input": {"name": "b"}}, {"input": {}}])
    assert info.value.message.startswith("items[2]: Validation failed for input")
    assert info.value.details["index"] == 2
    assert datasets.list_items(dataset_id=dataset["id"]).total == 0


def test_schema_update_is_checked_against_current_items(datasets):
    dataset = datasets.create_dataset(name="d")
    datasets.add_item(dataset_id=dataset["id"], input={"name": "ok"})
    bad = datasets.add_item(dataset_id=dataset["id"], input={"other": 1})
    with pytest.raises(ValidationError) as info:
        datasets.update_dataset(id=dataset["id"], input_schema=NAME_SCHEMA)
    error = info.value
    assert error.details["code"] == "SCHEMA_UPDATE_VALIDATION_FAILED"
    assert error.message == "Cannot update schema: 1 existing item(s) would fail validation"
    assert [(f["item_id"], f["field"]) for f in error.details["failures"]] == [(bad["id"], "input")]
    assert "input_schema" not in datasets.get_dataset_by_id(id=dataset["id"])
    datasets.delete_item(id=bad["id"], dataset_id=dataset["id"])
    assert datasets.update_dataset(id=dataset["id"], input_schema=NAME_SCHEMA)["input_schema"] == NAME_SCHEMA
    empty = datasets.create_dataset(name="empty")
    assert datasets.update_dataset(id=empty["id"], input_schema=NAME_SCHEMA)["input_schema"] == NAME_SCHEMA


def test_invalid_json_schema_is_refused(datasets):
    with pytest.raises(ValidationError) as info:
        datasets.create_dataset(name="d", input_schema={"type": "nonsense"})
    assert "input_schema" in info.value.fields
    assert datasets.list_datasets().total == 0


# --------------------------------------------------------------------------- purge, cascade, concurrency, misc

def _experiment_with_result(experiments, dataset_id, item_id):
    experiment = experiments.create_experiment(total_items=1, dataset_id=dataset_id, dataset_version=1)
    now = datetime.now(timezone.utc)
    experiments.add_experiment_result(experiment_id=experiment["id"], item_id=item_id, input={"q": 1},
                                      output={"a": 1}, started_at=now, completed_at=now, status="needs-review")
    return experiment


def test_purge_item_redacts_history_and_results(datasets, experiments):
    dataset = datasets.create_dataset(name="d")
    item = datasets.add_item(dataset_id=dataset["id"], input={"secret": 1}, ground_truth="g", metadata={"m": 1},
                             source={"type": "csv"}, scorer_ids=["s"])
    datasets.update_item(id=item["id"], dataset_id=dataset["id"], input={"secret": 2})
    experiment = _experiment_with_result(experiments, dataset["id"], item["id"])
    before = datasets.get_item_history(item_id=item["id"])
    datasets.purge_item(id=item["id"], dataset_id=dataset["id"])
    after = datasets.get_item_history(item_id=item["id"])
    assert [(r["dataset_version"], r["valid_to"], r["is_deleted"]) for r in after] == \
        [(r["dataset_version"], r["valid_to"], r["is_deleted"]) for r in before]
    for row in after:
        assert row["input"] is None and row["metadata"]["__purged"] is True
        assert not {"ground_truth", "source", "scorer_ids", "tool_mocks", "request_context"} & set(row)
    assert version_of(datasets, dataset["id"]) == 2
    with pytest.raises(ConflictError) as info:
        datasets.update_item(id=item["id"], dataset_id=dataset["id"], input=3)
    assert info.value.details["code"] == "ITEM_PURGED"
    assert info.value.message == f"Item {item['id']} has been purged and cannot be updated"
    result = experiments.list_experiment_results(experiment_id=experiment["id"]).items[0]
    assert result["input"] is None and result.get("output") is None and result["status"] == "needs-review"
    datasets.purge_item(id=item["id"], dataset_id=dataset["id"])  # again: a no-op
    assert datasets.get_item_history(item_id=item["id"]) == after
    datasets.delete_item(id=item["id"], dataset_id=dataset["id"])
    assert datasets.get_item_by_id(id=item["id"]) is None
    with pytest.raises(NotFoundError, match="Item not found: missing"):
        datasets.purge_item(id="missing", dataset_id=dataset["id"])


def test_purged_external_id_is_a_payload_mismatch(datasets):
    dataset = datasets.create_dataset(name="d")
    item = datasets.add_item(dataset_id=dataset["id"], external_id="e", input=1)
    datasets.purge_item(id=item["id"], dataset_id=dataset["id"])
    with pytest.raises(ConflictError) as info:
        datasets.add_item(dataset_id=dataset["id"], external_id="e", input=1)
    assert info.value.details["conflicts"][0]["reason"] == "payload_mismatch"


def test_delete_dataset_detaches_experiments(datasets, experiments):
    dataset = datasets.create_dataset(name="d")
    item = datasets.add_item(dataset_id=dataset["id"], input=1)
    experiment = _experiment_with_result(experiments, dataset["id"], item["id"])
    datasets.delete_dataset(id=dataset["id"])
    kept = experiments.get_experiment_by_id(id=experiment["id"])
    assert kept is not None and kept["dataset_id"] is None and kept["dataset_version"] is None
    assert experiments.list_experiment_results(experiment_id=experiment["id"]).total == 0
    assert datasets.get_item_history(item_id=item["id"]) == []
    assert datasets.list_dataset_versions(dataset_id=dataset["id"]).total == 0


def test_concurrent_adds_make_each_version_once(datasets):
    dataset = datasets.create_dataset(name="d")

    def add_many(thread):
        return [datasets.add_item(dataset_id=dataset["id"], input={"t": thread, "n": n}) for n in range(25)]

    added = [item for items in run_threads(8, add_many) for item in items]
    assert version_of(datasets, dataset["id"]) == 200
    versions = datasets.list_dataset_versions(dataset_id=dataset["id"], per_page=False).items
    assert sorted(v["version"] for v in versions) == list(range(1, 201))
    items = datasets.list_items(dataset_id=dataset["id"], per_page=False).items
    assert len(items) == 200 and len({i["dataset_version"] for i in items}) == 200
    assert {i["id"] for i in items} == {i["id"] for i in added}


def test_concurrent_updates_and_adds(datasets):
    dataset = datasets.create_dataset(name="d")
    items = datasets.batch_insert_items(dataset_id=dataset["id"], items=[{"input": n} for n in range(4)])

    def work(thread):
        for n in range(20):
            if thread < 4:
                datasets.update_item(id=items[thread]["id"], dataset_id=dataset["id"], input={"n": n})
            else:
                datasets.add_item(dataset_id=dataset["id"], input={"thread": thread, "n": n})

    run_threads(8, work)
    assert version_of(datasets, dataset["id"]) == 161
    current = datasets.list_items(dataset_id=dataset["id"], per_page=False).items
    assert len(current) == 84 and len({i["id"] for i in current}) == 84
    for item in items:
        history = datasets.get_item_history(item_id=item["id"])
        assert len(history) == 21 and sum(1 for h in history if h["valid_to"] is None) == 1


def test_datasets_on_clickhouse_are_not_supported():
    from composite_store.clickhouse import DatasetsClickHouse

    with pytest.raises(NotSupportedError) as info:
        DatasetsClickHouse(url="clickhouse://default:@127.0.0.1:1/default")
    error = info.value
    assert (error.id, error.category, error.domain) == ("STORAGE_CLICKHOUSE_INIT_NOT_SUPPORTED", "SYSTEM", "datasets")
    assert "SQLite or PostgreSQL" in error.message
    with pytest.raises(NotSupportedError) as info:
        CompositeStore.from_urls(default="sqlite:///:memory:", datasets="clickhouse://default:@127.0.0.1:1/default")
    assert (info.value.id, info.value.domain) == ("STORAGE_CLICKHOUSE_INIT_NOT_SUPPORTED", "datasets")


def test_bad_input_writes_nothing(datasets):
    dataset = datasets.create_dataset(name="d")
    datasets.add_item(dataset_id=dataset["id"], input=1)

    def fields_of(call, **kwargs):
        with pytest.raises(ValidationError) as info:
            call(**kwargs)
        return info.value

    error = fields_of(datasets.add_item, dataset_id=dataset["id"], input=1, tool_mocks=[{"args": {}}])
    assert set(error.fields) == {"item.tool_mocks[0].toolName", "item.tool_mocks[0].output"}
    assert "item.unmocked_tool_policy" in fields_of(datasets.add_item, dataset_id=dataset["id"], input=1,
                                                    unmocked_tool_policy="maybe").fields
    assert "item.source.type" in fields_of(datasets.add_item, dataset_id=dataset["id"], input=1,
                                           source={"type": "fax"}).fields
    error = fields_of(datasets.add_item, dataset_id=dataset["id"], input=1, external_id="")
    assert "item.external_id" in error.fields and error.details["code"] == "ITEM_EXTERNAL_ID_INVALID"
    error = fields_of(datasets.batch_insert_items, dataset_id=dataset["id"],
                      items=[{"input": 1, "colour": "red"}, {"ground_truth": 1}, {"input": 1, "scorer_ids": "x"}])
    assert set(error.fields) == {"items[0].colour", "items[1].input", "items[2].scorer_ids"}
    assert "version" in fields_of(datasets.list_items, dataset_id=dataset["id"], version=-1).fields
    assert "filters.tenant" in fields_of(datasets.list_items, dataset_id=dataset["id"], filters={"tenant": "x"}).fields
    assert "filters.tenant" in fields_of(datasets.list_datasets, filters={"tenant": "x"}).fields
    assert "name" in fields_of(datasets.create_dataset, name="a\x00b").fields
    assert "metadata.k" in fields_of(datasets.create_dataset, name="d", metadata={"k": "\ud800"}).fields
    assert "name" in fields_of(datasets.update_dataset, id=dataset["id"], name=None).fields
    error = fields_of(datasets.list_items, dataset_id=dataset["id"], page=-1, per_page="x")
    assert error.id.endswith("_LIST_ITEMS_INVALID_PAGE")
    assert version_of(datasets, dataset["id"]) == 1
    assert datasets.list_items(dataset_id=dataset["id"]).total == 1
    assert datasets.list_datasets().total == 1


def test_missing_required_argument_is_a_type_error(datasets):
    with pytest.raises(TypeError):
        datasets.add_item(dataset_id="d")  # no input


def test_create_dataset_version_low_level(datasets):
    dataset = datasets.create_dataset(name="d")
    row = datasets.create_dataset_version(dataset_id=dataset["id"], version=5)
    assert (row["dataset_id"], row["version"]) == (dataset["id"], 5)
    assert version_of(datasets, dataset["id"]) == 0
    with pytest.raises(ConflictError):
        datasets.create_dataset_version(dataset_id=dataset["id"], version=5)
    with pytest.raises(NotFoundError):
        datasets.create_dataset_version(dataset_id="missing", version=1)
    assert [v["version"] for v in datasets.list_dataset_versions(dataset_id=dataset["id"]).items] == [5]


def test_supports_concurrent_updates_and_clear_all(datasets):
    assert datasets.supports_concurrent_updates() is True
    dataset = datasets.create_dataset(name="d")
    item = datasets.add_item(dataset_id=dataset["id"], input=1)
    datasets.dangerously_clear_all()
    assert datasets.list_datasets().total == 0
    assert datasets.get_item_history(item_id=item["id"]) == []
    assert datasets.list_dataset_versions(dataset_id=dataset["id"]).total == 0


def test_returned_records_are_fresh_objects(datasets):
    dataset = datasets.create_dataset(name="d", metadata={"a": [1]})
    payload = {"q": [1]}
    item = datasets.add_item(dataset_id=dataset["id"], input=payload)
    payload["q"].append(2)
    item["input"]["q"].append(3)
    dataset["metadata"]["a"].append(2)
    assert datasets.get_item_by_id(id=item["id"])["input"] == {"q": [1]}
    assert datasets.get_dataset_by_id(id=dataset["id"])["metadata"] == {"a": [1]}


# --------------------------------------------------------------------------- compatibility

MASTRA_SQLITE_DDL = [
    """CREATE TABLE mastra_datasets (id TEXT NOT NULL PRIMARY KEY, name TEXT NOT NULL, description TEXT,
       metadata TEXT, inputSchema TEXT, groundTruthSchema TEXT, requestContextSchema TEXT, tags TEXT,
       targetType TEXT, targetIds TEXT, scorerIds TEXT, organizationId TEXT, projectId TEXT, candidateKey TEXT,
       candidateId TEXT, version INTEGER NOT NULL, createdAt TEXT NOT NULL, updatedAt TEXT NOT NULL)""",
    """CREATE TABLE mastra_dataset_items (id TEXT NOT NULL, datasetId TEXT NOT NULL, datasetVersion INTEGER NOT NULL,
       externalId TEXT, organizationId TEXT, projectId TEXT, validTo INTEGER, isDeleted INTEGER NOT NULL,
       input TEXT NOT NULL, groundTruth TEXT, requestContext TEXT, metadata TEXT, source TEXT,
       expectedTrajectory TEXT, toolMocks TEXT, unmockedToolPolicy TEXT, scorerIds TEXT, createdAt TEXT NOT NULL,
       updatedAt TEXT NOT NULL)""",
    """CREATE TABLE mastra_dataset_versions (id TEXT NOT NULL PRIMARY KEY, datasetId TEXT NOT NULL,
       version INTEGER NOT NULL, createdAt TEXT NOT NULL)""",
]


@pytest.mark.backends("sqlite")
def test_reads_and_extends_a_sqlite_database_laid_out_by_mastra(backend, tmp_path):
    path = tmp_path / "mastra.db"
    connection = sqlite3.connect(path)
    for ddl in MASTRA_SQLITE_DDL:
        connection.execute(ddl)
    connection.execute("INSERT INTO mastra_datasets VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                       ("ds", "mastra", None, encode_jsonb({"team": "qa"}), encode_jsonb({"type": "object"}), None,
                        None, encode_jsonb(["t"]), "agent", encode_jsonb(["a1"]), None, "org", None, None, None, 1,
                        "2026-01-31T09:05:01.123Z", "2026-01-31 09:05:01.123"))
    connection.execute("INSERT INTO mastra_dataset_items VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                       ("it", "ds", 1, "ext", "org", None, None, 0, encode_jsonb({"text": "Hello"}),
                        encode_jsonb(None), None, encode_jsonb({"m": 1}), None, None, None, None,
                        encode_jsonb(["s"]), "2026-01-31T09:05:01.123Z", "2026-01-31T09:05:01.123+00:00"))
    connection.execute("INSERT INTO mastra_dataset_versions VALUES (?,?,?,?)",
                       ("v1", "ds", 1, "2026-01-31T09:05:01.123Z"))
    connection.commit()
    connection.close()

    store = SQLiteStore(url=f"sqlite:///{path}")
    try:
        store.init()
        datasets = store.get_store("datasets")
        dataset = datasets.get_dataset_by_id(id="ds")
        assert (dataset["metadata"], dataset["input_schema"], dataset["tags"], dataset["target_ids"]) == \
            ({"team": "qa"}, {"type": "object"}, ["t"], ["a1"])
        assert dataset["updated_at"] == datetime(2026, 1, 31, 9, 5, 1, 123000, tzinfo=timezone.utc)
        assert [d["id"] for d in datasets.list_datasets(filters={"target_ids": ["a1"]}).items] == ["ds"]
        item = datasets.get_item_by_id(id="it")
        assert (item["input"], item["ground_truth"], item["metadata"], item["scorer_ids"]) == \
            ({"text": "Hello"}, None, {"m": 1}, ["s"])
        assert datasets.list_items(dataset_id="ds", search="hello").total == 1
        assert datasets.add_item(dataset_id="ds", external_id="ext", input={"text": "Hello"}, ground_truth=None,
                                 metadata={"m": 1}, scorer_ids=["s"])["id"] == "it"
        updated = datasets.update_item(id="it", dataset_id="ds", metadata={"m": 2})
        assert updated["dataset_version"] == 2 and updated["input"] == {"text": "Hello"}
        added = datasets.add_item(dataset_id="ds", input={"name": "new"})
        assert added["dataset_version"] == 3 and datasets.list_items(dataset_id="ds").total == 2
        assert [v["version"] for v in datasets.list_dataset_versions(dataset_id="ds").items] == [3, 2, 1]
    finally:
        store.close()
    raw = sqlite3.connect(path)
    try:
        # Rows this library writes hold JSON text; the blob written by the other client is left alone.
        texts = raw.execute('SELECT typeof(input) FROM mastra_dataset_items ORDER BY "datasetVersion"').fetchall()
        assert texts == [("blob",), ("text",), ("text",)]
    finally:
        raw.close()


@pytest.mark.backends("postgres")
def test_reads_rows_written_by_another_postgres_client(datasets):
    database = datasets.backend.database
    with datasets.backend.connection(), database.atomic():
        database.execute_sql(
            'INSERT INTO mastra_datasets (id, name, metadata, "targetIds", "organizationId", version, '
            '"createdAt", "createdAtZ", "updatedAt", "updatedAtZ") VALUES '
            "('ds', 'pg', '{\"a\": 1}'::jsonb, '[\"a1\"]'::jsonb, 'org', 1, "
            "'2026-01-31 09:05:01.123456', '2026-01-31 09:05:01.123456+00', '2026-01-31 09:05:01.5', NULL)")
        database.execute_sql(
            'INSERT INTO mastra_dataset_items (id, "datasetId", "datasetVersion", "isDeleted", input, "groundTruth", '
            '"createdAt", "updatedAt", "createdAtZ", "updatedAtZ") VALUES '
            "('it', 'ds', 1, false, '{\"text\": \"Hello\"}'::jsonb, 'null'::jsonb, "
            "'2026-01-31 09:05:01.123', '2026-01-31 09:05:01.123', now(), now())")
        database.execute_sql('INSERT INTO mastra_dataset_versions (id, "datasetId", version, "createdAt") '
                             "VALUES ('v1', 'ds', 1, '2026-01-31 09:05:01.123')")
    dataset = datasets.get_dataset_by_id(id="ds")
    assert dataset["created_at"] == datetime(2026, 1, 31, 9, 5, 1, 123000, tzinfo=timezone.utc)
    assert dataset["updated_at"] == datetime(2026, 1, 31, 9, 5, 1, 500000, tzinfo=timezone.utc)
    assert dataset["metadata"] == {"a": 1} and dataset["target_ids"] == ["a1"]
    item = datasets.get_item_by_id(id="it")
    assert item["input"] == {"text": "Hello"} and item["ground_truth"] is None and "metadata" not in item
    assert item["external_id"] is None
    added = datasets.add_item(dataset_id="ds", input={"x": 1})
    assert added["dataset_version"] == 2 and datasets.list_items(dataset_id="ds").total == 2


# --------------------------------------------------------------------------- experiments in another database

def test_composite_store_reaches_experiments_in_another_database(tmp_path):
    datasets_store = SQLiteStore(url=f"sqlite:///{tmp_path}/datasets.db")
    experiments_repo = ExperimentsSQLite(url=f"sqlite:///{tmp_path}/experiments.db")
    storage = CompositeStore(domains={"datasets": datasets_store, "experiments": experiments_repo})
    try:
        storage.init()
        datasets, experiments = storage.get_store("datasets"), storage.get_store("experiments")
        dataset = datasets.create_dataset(name="d")
        item = datasets.add_item(dataset_id=dataset["id"], input={"secret": 1})
        kept = datasets.add_item(dataset_id=dataset["id"], input={"other": 1})
        experiment = _experiment_with_result(experiments, dataset["id"], item["id"])
        now = datetime.now(timezone.utc)
        experiments.add_experiment_result(experiment_id=experiment["id"], item_id=kept["id"], input={"o": 1},
                                          output="x", started_at=now, completed_at=now)

        datasets.purge_item(id=item["id"], dataset_id=dataset["id"])
        results = {r["item_id"]: r for r in experiments.list_experiment_results(experiment_id=experiment["id"]).items}
        assert results[item["id"]]["input"] is None and results[item["id"]]["metadata"]["__purged"] is True
        assert results[item["id"]]["status"] == "needs-review"
        purged_at = datasets.get_item_by_id(id=item["id"])["metadata"]["purgedAt"]
        assert results[item["id"]]["metadata"]["purgedAt"] == purged_at
        assert results[kept["id"]]["output"] == "x"

        datasets.delete_dataset(id=dataset["id"])
        detached = experiments.get_experiment_by_id(id=experiment["id"])
        assert detached["dataset_id"] is None and detached["dataset_version"] is None
        assert experiments.list_experiment_results(experiment_id=experiment["id"]).total == 0
    finally:
        storage.close()


def test_datasets_without_experiments_domain(tmp_path):
    repository = DatasetsSQLite(url=f"sqlite:///{tmp_path}/only-datasets.db")
    try:
        repository.init()
        dataset = repository.create_dataset(name="d")
        item = repository.add_item(dataset_id=dataset["id"], input=1)
        repository.purge_item(id=item["id"], dataset_id=dataset["id"])
        repository.delete_dataset(id=dataset["id"])
        assert repository.get_dataset_by_id(id=dataset["id"]) is None
    finally:
        repository.close()

