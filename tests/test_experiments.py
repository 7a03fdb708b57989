"""Experiments domain conformance suite (experiments.md §9), run on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import psycopg2
import pytest

from composite_store import CompositeStore, ConflictError, NotFoundError, NotSupportedError, ValidationError
from composite_store.clickhouse import ExperimentsClickHouse
from composite_store.jsonb import encode_jsonb
from composite_store.schemas import ExperimentResultSchema, ExperimentSchema

pytestmark = pytest.mark.backends("sqlite", "postgres")

BACKEND_IDS = {"sqlite": "SQLITE", "postgres": "PG"}
T0 = datetime(2026, 1, 1, 12, 0, 0, 123000, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def add(experiments, experiment_id, item_id="item-1", **fields):
    """add_experiment_result with the required arguments filled in."""
    fields.setdefault("input", {"question": "2+2"})
    fields.setdefault("started_at", T0)
    fields.setdefault("completed_at", at(1))
    return experiments.add_experiment_result(experiment_id=experiment_id, item_id=item_id, **fields)


def upsert(experiments, experiment_id, item_id="item-1", **fields):
    """upsert_experiment_result with the required arguments filled in."""
    fields.setdefault("input", {"question": "2+2"})
    fields.setdefault("started_at", T0)
    fields.setdefault("completed_at", at(1))
    return experiments.upsert_experiment_result(experiment_id=experiment_id, item_id=item_id, **fields)


def results_of(experiments, experiment_id, **filters):
    return experiments.list_experiment_results(experiment_id=experiment_id, per_page=False, **filters)


def table(repository, name: str) -> str:
    """The quoted (schema-qualified on PostgreSQL outside ``public``) table name for raw SQL."""
    schema = getattr(repository.backend, "schema_name", None)
    return f'"{schema}"."{name}"' if schema else f'"{name}"'


def run_sql(repository, sql: str, params: tuple = ()) -> list[tuple]:
    """Raw SQL on the repository's database (a client other than this library)."""
    database = repository.backend.database
    with repository.backend.connection():
        cursor = database.execute_sql(sql.replace("?", database.param), params)
        return cursor.fetchall() if cursor.description else []


@pytest.fixture
def fresh_store(backend, backend_url, make_store, tmp_path):
    """A whole store on an empty database of its own (PostgreSQL: a new schema), not initialized."""
    if backend == "sqlite":
        yield make_store(f"sqlite:///{tmp_path}/fresh.db")
        return
    schema = f"exp_{uuid.uuid4().hex[:10]}"
    yield make_store(f"{backend_url}?schema_name={schema}")
    connection = psycopg2.connect(backend_url)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    connection.close()


# --------------------------------------------------------------------------- experiments

def test_create_experiment_defaults(experiments):
    created = experiments.create_experiment(dataset_id="ds", dataset_version=1, target_type="agent",
                                            target_id="a1", total_items=10)
    assert isinstance(created["id"], str) and uuid.UUID(created["id"])
    assert created["status"] == "pending"
    assert (created["succeeded_count"], created["failed_count"], created["skipped_count"]) == (0, 0, 0)
    assert created["started_at"] is None and created["completed_at"] is None
    assert created["created_at"] == created["updated_at"] and created["created_at"].tzinfo is not None
    assert set(created) == set(ExperimentSchema._declared_fields)
    assert experiments.get_experiment_by_id(id=created["id"]) == created


def test_custom_id_and_duplicate_conflict(experiments, backend):
    first = experiments.create_experiment(id="exp-1", name="first", total_items=1)
    assert first["id"] == "exp-1"
    with pytest.raises(ConflictError) as info:
        experiments.create_experiment(id="exp-1", name="second", total_items=2)
    assert info.value.message == "Experiment already exists: exp-1"
    assert info.value.id == f"STORAGE_{BACKEND_IDS[backend]}_CREATE_EXPERIMENT_CONFLICT"
    assert info.value.domain == "experiments"
    assert experiments.get_experiment_by_id(id="exp-1") == first


def test_dataset_version_is_int(experiments):
    created = experiments.create_experiment(dataset_id="ds", dataset_version=5, total_items=1)
    assert created["dataset_version"] == 5 and type(created["dataset_version"]) is int
    fetched = experiments.get_experiment_by_id(id=created["id"])
    assert fetched["dataset_version"] == 5 and type(fetched["dataset_version"]) is int


def test_optional_fields_none_and_scorer_ids(experiments):
    created = experiments.create_experiment(dataset_id=None, dataset_version=None, target_type=None,
                                            target_id=None, scorer_ids=None, total_items=1)
    for key in ("dataset_id", "dataset_version", "target_type", "target_id", "scorer_ids"):
        assert created[key] is None
    scored = experiments.create_experiment(scorer_ids=["accuracy", "fluency"], total_items=1)
    assert experiments.get_experiment_by_id(id=scored["id"])["scorer_ids"] == ["accuracy", "fluency"]


def test_provenance_attestation_and_grouping_persist(experiments):
    provenance = {"source": "ci", "sourceId": "run-9", "sourceVersion": "1.2", "metadata": {"branch": "main"}}
    attestation = {"runnerId": "runner-1", "invocationId": "inv-1", "runnerVersion": "0.3"}
    created = experiments.create_experiment(total_items=1, provenance=provenance, runner_attestation=attestation,
                                            experiment_set_id="set-1", comparison_id="cmp-1", variant_id="v-a",
                                            trial_index=0)
    fetched = experiments.get_experiment_by_id(id=created["id"])
    assert fetched["provenance"] == provenance and fetched["runner_attestation"] == attestation
    assert (fetched["experiment_set_id"], fetched["comparison_id"], fetched["variant_id"]) == ("set-1", "cmp-1", "v-a")
    assert fetched["trial_index"] == 0


def test_records_are_isolated_from_callers(experiments):
    metadata = {"tags": ["x"], "nested": {"k": 1}}
    provenance = {"source": "ci", "metadata": {"a": [1]}}
    created = experiments.create_experiment(total_items=1, metadata=metadata, provenance=provenance)
    metadata["nested"]["k"] = 2
    provenance["metadata"]["a"].append(2)
    created["metadata"]["tags"].append("y")
    experiments.get_experiment_by_id(id=created["id"])["metadata"]["nested"]["k"] = 3
    experiments.list_experiments().items[0]["provenance"]["source"] = "changed"
    update_metadata = {"v": [1]}
    updated = experiments.update_experiment(id=created["id"], name="n", metadata=update_metadata)
    update_metadata["v"].append(2)
    updated["metadata"]["v"].append(3)
    fetched = experiments.get_experiment_by_id(id=created["id"])
    assert fetched["metadata"] == {"v": [1]}
    assert fetched["provenance"] == {"source": "ci", "metadata": {"a": [1]}}


def test_update_status_and_started_at(experiments):
    created = experiments.create_experiment(total_items=2)
    started = datetime(2026, 2, 3, 4, 5, 6, 789000, tzinfo=timezone.utc)
    updated = experiments.update_experiment(id=created["id"], status="running", started_at=started)
    assert updated["status"] == "running" and updated["started_at"] == started
    assert experiments.get_experiment_by_id(id=created["id"]) == updated


def test_update_keeps_untouched_fields(experiments):
    created = experiments.create_experiment(total_items=10, name="run", description="d", metadata={"m": 1})
    completed = datetime(2026, 2, 3, 5, 0, tzinfo=timezone.utc)
    updated = experiments.update_experiment(id=created["id"], status="completed", succeeded_count=8,
                                            failed_count=2, completed_at=completed)
    assert (updated["status"], updated["succeeded_count"], updated["failed_count"]) == ("completed", 8, 2)
    assert updated["completed_at"] == completed
    assert (updated["name"], updated["description"], updated["metadata"]) == ("run", "d", {"m": 1})
    assert updated["skipped_count"] == 0
    assert updated["updated_at"] > created["updated_at"]
    assert experiments.get_experiment_by_id(id=created["id"]) == updated


def test_update_total_items_and_clearing(experiments):
    created = experiments.create_experiment(total_items=0, name="run", metadata={"m": 1})
    assert created["total_items"] == 0
    updated = experiments.update_experiment(id=created["id"], total_items=10, name=None, metadata=None,
                                            started_at=None)
    assert updated["total_items"] == 10 and updated["name"] is None and updated["metadata"] is None


def test_update_null_status_or_counter_is_invalid(experiments):
    created = experiments.create_experiment(total_items=1)
    with pytest.raises(ValidationError) as info:
        experiments.update_experiment(id=created["id"], status=None, failed_count=None)
    assert info.value.fields == {"status": ["Field may not be null."], "failed_count": ["Field may not be null."]}
    assert experiments.get_experiment_by_id(id=created["id"]) == created


def test_update_missing_experiment(experiments, backend):
    with pytest.raises(NotFoundError) as info:
        experiments.update_experiment(id="missing", name="x")
    assert info.value.message == "Experiment not found: missing"
    assert info.value.id == f"STORAGE_{BACKEND_IDS[backend]}_UPDATE_EXPERIMENT_NOT_FOUND"


def test_get_missing_experiment(experiments):
    assert experiments.get_experiment_by_id(id="missing") is None


def test_list_and_dataset_filter(experiments):
    experiments.create_experiment(dataset_id="ds-1", total_items=1)
    experiments.create_experiment(dataset_id="ds-2", total_items=1)
    page = experiments.list_experiments()
    assert len(page.items) == 2 and page.total == 2
    only = experiments.list_experiments(dataset_id="ds-1")
    assert only.total == 1 and only.items[0]["dataset_id"] == "ds-1"


def test_grouping_filters(experiments):
    target = experiments.create_experiment(total_items=1, experiment_set_id="set", comparison_id="cmp",
                                           variant_id="variant-a", trial_index=0)
    experiments.create_experiment(total_items=1, experiment_set_id="set", comparison_id="cmp",
                                  variant_id="variant-a", trial_index=1)
    experiments.create_experiment(total_items=1, experiment_set_id="set", comparison_id="cmp",
                                  variant_id="variant-b", trial_index=0)
    experiments.create_experiment(total_items=1, experiment_set_id="other", comparison_id="cmp",
                                  variant_id="variant-a", trial_index=0)
    experiments.create_experiment(total_items=1)
    page = experiments.list_experiments(experiment_set_id="set", comparison_id="cmp", variant_id="variant-a",
                                        trial_index=0)
    assert page.total == 1 and [e["id"] for e in page.items] == [target["id"]]


def test_list_other_exact_filters(experiments):
    agent = experiments.create_experiment(total_items=1, target_type="agent", target_id="a1", agent_version="v1")
    experiments.create_experiment(total_items=1, target_type="workflow", target_id="w1")
    running = experiments.create_experiment(total_items=1)
    experiments.update_experiment(id=running["id"], status="running")
    assert [e["id"] for e in experiments.list_experiments(target_type="agent").items] == [agent["id"]]
    assert [e["id"] for e in experiments.list_experiments(target_id="a1", agent_version="v1").items] == [agent["id"]]
    assert [e["id"] for e in experiments.list_experiments(status="running").items] == [running["id"]]


def test_list_order_and_pages(experiments):
    ids = []
    for index in range(3):
        ids.append(experiments.create_experiment(total_items=1, name=f"e{index}")["id"])
        time.sleep(0.003)
    assert [e["id"] for e in experiments.list_experiments().items] == ids[::-1]
    ascending = experiments.list_experiments(order_by={"field": "created_at", "direction": "asc"})
    assert [e["id"] for e in ascending.items] == ids
    three = experiments.list_experiments(per_page=2)
    assert len(three.items) == 2 and three.total == 3 and three.has_more is True
    for index in range(2):
        experiments.create_experiment(total_items=1, name=f"e{index + 3}")
    first = experiments.list_experiments(per_page=2)
    second = experiments.list_experiments(page=1, per_page=2)
    last = experiments.list_experiments(page=2, per_page=2)
    assert (len(first.items), first.total, len(second.items), len(last.items)) == (2, 5, 2, 1)
    assert last.has_more is False
    seen = [e["id"] for page in (first, second, last) for e in page.items]
    assert len(set(seen)) == 5


def test_list_order_by_status(experiments):
    pending = experiments.create_experiment(total_items=1)
    running = experiments.create_experiment(total_items=1)
    experiments.update_experiment(id=running["id"], status="running")
    completed = experiments.create_experiment(total_items=1)
    experiments.update_experiment(id=completed["id"], status="completed")
    page = experiments.list_experiments(order_by={"field": "status", "direction": "ASC"})
    assert [e["id"] for e in page.items] == [completed["id"], pending["id"], running["id"]]


def test_delete_experiment_cascades(experiments):
    kept = experiments.create_experiment(total_items=1)
    add(experiments, kept["id"])
    doomed = experiments.create_experiment(total_items=2)
    first = add(experiments, doomed["id"], "item-1")
    add(experiments, doomed["id"], "item-2")
    assert experiments.delete_experiment(id=doomed["id"]) is None
    assert experiments.get_experiment_by_id(id=doomed["id"]) is None
    assert experiments.get_experiment_result_by_id(id=first["id"]) is None
    assert results_of(experiments, doomed["id"]).total == 0
    assert results_of(experiments, kept["id"]).total == 1
    experiments.delete_experiment(id=doomed["id"])  # missing: silent


def test_increment_counters(experiments, backend):
    created = experiments.create_experiment(total_items=10)
    once = experiments.increment_experiment_counters(id=created["id"], succeeded=2, failed=1)
    twice = experiments.increment_experiment_counters(id=created["id"], succeeded=2, failed=1)
    assert (twice["succeeded_count"], twice["failed_count"], twice["skipped_count"]) == (4, 2, 0)
    assert twice["status"] == "pending"
    assert created["updated_at"] < once["updated_at"] < twice["updated_at"]
    assert experiments.get_experiment_by_id(id=created["id"]) == twice
    with pytest.raises(NotFoundError) as info:
        experiments.increment_experiment_counters(id="missing", skipped=1)
    assert info.value.id == f"STORAGE_{BACKEND_IDS[backend]}_INCREMENT_EXPERIMENT_COUNTERS_NOT_FOUND"


# --------------------------------------------------------------------------- results

def test_add_result_with_all_fields(experiments):
    experiment = experiments.create_experiment(total_items=1, organization_id="org", project_id="p")
    result = add(experiments, experiment["id"], "item-1", id="res-1", item_dataset_version=3,
                 input={"q": "hi"}, output={"a": "hello"}, ground_truth="hello", metadata={"m": 1},
                 retry_count=1, attempt=2, trace_id="trace-1", status="needs-review", tags=["a"],
                 tool_mock_report={"served": [], "unconsumed": [], "liveCalls": [], "failure": None})
    assert result["id"] == "res-1" and result["experiment_id"] == experiment["id"]
    assert result["item_dataset_version"] == 3 and result["input"] == {"q": "hi"} and result["output"] == {"a": "hello"}
    assert (result["ground_truth"], result["retry_count"], result["attempt"]) == ("hello", 1, 2)
    assert (result["trace_id"], result["status"], result["tags"], result["comment"]) == ("trace-1", "needs-review",
                                                                                          ["a"], None)
    assert (result["started_at"], result["completed_at"]) == (T0, at(1))
    assert set(result) == set(ExperimentResultSchema._declared_fields)
    assert experiments.get_experiment_result_by_id(id="res-1") == result
    version_42 = add(experiments, experiment["id"], "item-2", item_dataset_version=42)
    assert version_42["item_dataset_version"] == 42 and type(version_42["item_dataset_version"]) is int
    unversioned = add(experiments, experiment["id"], "item-3", item_dataset_version=None, input=None)
    assert unversioned["item_dataset_version"] is None and unversioned["input"] is None


def test_result_error_stored_as_given(experiments):
    experiment = experiments.create_experiment(total_items=1)
    result = add(experiments, experiment["id"], error={"message": "Agent timeout", "code": "TIMEOUT"}, output=None,
                 retry_count=2)
    fetched = experiments.get_experiment_result_by_id(id=result["id"])
    assert fetched["error"] == {"message": "Agent timeout", "code": "TIMEOUT"}
    assert fetched["output"] is None and fetched["retry_count"] == 2


def test_add_same_item_and_attempt_conflicts(experiments, backend):
    experiment = experiments.create_experiment(total_items=1)
    first = add(experiments, experiment["id"], "item-1")
    with pytest.raises(ConflictError) as info:
        add(experiments, experiment["id"], "item-1", output="again")
    assert info.value.message == "Experiment result already exists for item item-1, attempt 0"
    assert info.value.id == f"STORAGE_{BACKEND_IDS[backend]}_ADD_EXPERIMENT_RESULT_CONFLICT"
    with pytest.raises(ConflictError) as info:
        add(experiments, experiment["id"], "item-2", id=first["id"])
    assert info.value.message == f"Experiment result already exists: {first['id']}"
    second = add(experiments, experiment["id"], "item-1", attempt=1)
    assert second["attempt"] == 1
    assert results_of(experiments, experiment["id"]).total == 2


def test_added_record_is_what_a_read_returns(experiments):
    # SQLite builds the returned record from what it wrote: it must equal the stored record.
    experiment = experiments.create_experiment(total_items=1, organization_id="org")
    values = [None, "é ü 漢字 😀", 1.5, -0.0, 1e20, 10**20, 0.1, True, [], {}, {"b": 1, "a": [None, 2.5, "x"]},
              [{"z": {"y": [1, 2, {"x": False}]}}]]
    for index, value in enumerate(values):
        added = add(experiments, experiment["id"], f"item-{index}", input=value, output=value, ground_truth=value,
                    metadata={"v": value}, error={"message": "m", "stack": None, "extra": value},
                    tags=["t", "é"], started_at=datetime(2026, 1, 1, 12, 0, 0, 123456),
                    completed_at="2026-01-01T12:00:01Z")
        stored = experiments.get_experiment_result_by_id(id=added["id"])
        assert added == stored and list(added) == list(stored)
        assert repr(added["input"]) == repr(stored["input"]) and repr(added["metadata"]) == repr(stored["metadata"])
    assert added["started_at"] == datetime(2026, 1, 1, 12, 0, 0, 123000, tzinfo=timezone.utc)


def test_add_reports_every_bad_field_and_writes_nothing(experiments):
    experiment = experiments.create_experiment(total_items=1)
    with pytest.raises(ValidationError) as info:
        add(experiments, experiment["id"], "", input={"a": float("nan")}, attempt=-1, status="bogus",
            tags=["ok", 1], trace_id="nul\x00", error={"code": "E"}, started_at="yesterday")
    assert set(info.value.fields) >= {"item_id", "input.a", "attempt", "status", "tags[1]", "trace_id",
                                                 "error.message", "started_at"}
    assert results_of(experiments, experiment["id"]).total == 0


def test_add_key_conflict_is_reported_before_id_conflict(experiments):
    experiment = experiments.create_experiment(total_items=1)
    first = add(experiments, experiment["id"], "item-1", id="r-1")
    with pytest.raises(ConflictError) as info:
        add(experiments, experiment["id"], "item-1", id="r-1")
    assert info.value.message == "Experiment result already exists for item item-1, attempt 0"
    assert experiments.get_experiment_result_by_id(id="r-1") == first


def test_upsert_converges_on_one_row(experiments):
    experiment = experiments.create_experiment(total_items=1)
    first = upsert(experiments, experiment["id"], output="first", tags=["t"])
    assert first["attempt"] == 0
    time.sleep(0.025)
    second = upsert(experiments, experiment["id"], output="second")
    assert second["output"] == "second" and second["tags"] is None
    assert (second["id"], second["created_at"]) == (first["id"], first["created_at"])
    assert results_of(experiments, experiment["id"]).total == 1


def test_upsert_without_attempt_then_attempt_zero(experiments):
    experiment = experiments.create_experiment(total_items=1)
    upsert(experiments, experiment["id"])
    upsert(experiments, experiment["id"], attempt=0, output="x")
    page = results_of(experiments, experiment["id"])
    assert page.total == 1 and page.items[0]["output"] == "x"
    upsert(experiments, experiment["id"], attempt=1)
    assert results_of(experiments, experiment["id"]).total == 2


def test_comment_survives_upsert(experiments):
    experiment = experiments.create_experiment(total_items=1)
    result = upsert(experiments, experiment["id"])
    experiments.update_experiment_result(id=result["id"], comment="looks wrong")
    again = upsert(experiments, experiment["id"], output="fixed")
    assert again["comment"] == "looks wrong" and again["output"] == "fixed"


def test_tool_mock_report_round_trips(experiments):
    experiment = experiments.create_experiment(total_items=1)
    report = {"served": [{"mockIndex": 0, "toolName": "t", "args": {}}], "unconsumed": [], "liveCalls": []}
    result = add(experiments, experiment["id"], tool_mock_report=report)
    assert experiments.get_experiment_result_by_id(id=result["id"])["tool_mock_report"] == report


def test_update_result_review_fields(experiments):
    experiment = experiments.create_experiment(total_items=1)
    result = add(experiments, experiment["id"], output="o")
    updated = experiments.update_experiment_result(id=result["id"], status="reviewed", tags=["a"], comment="ok")
    assert (updated["status"], updated["tags"], updated["comment"]) == ("reviewed", ["a"], "ok")
    later = experiments.update_experiment_result(id=result["id"], experiment_id=experiment["id"], comment="later")
    assert (later["status"], later["tags"], later["comment"]) == ("reviewed", ["a"], "later")
    cleared = experiments.update_experiment_result(id=result["id"], comment=None)
    assert cleared["comment"] is None
    fetched = experiments.get_experiment_result_by_id(id=result["id"])
    assert fetched["comment"] is None and fetched["output"] == "o"
    assert experiments.update_experiment_result(id=result["id"]) == fetched


def test_update_result_not_found_cases(experiments, backend):
    experiment = experiments.create_experiment(total_items=1)
    other = experiments.create_experiment(total_items=1)
    result = add(experiments, experiment["id"])
    with pytest.raises(NotFoundError) as info:
        experiments.update_experiment_result(id="missing", status="reviewed")
    assert info.value.message == "Experiment result not found: missing"
    assert info.value.id == f"STORAGE_{BACKEND_IDS[backend]}_UPDATE_EXPERIMENT_RESULT_NOT_FOUND"
    with pytest.raises(NotFoundError) as info:
        experiments.update_experiment_result(id=result["id"], experiment_id=other["id"], status="reviewed")
    assert info.value.message == f"Experiment result {result['id']} does not belong to experiment {other['id']}"
    assert experiments.get_experiment_result_by_id(id=result["id"])["status"] is None


def test_get_missing_result(experiments):
    assert experiments.get_experiment_result_by_id(id="missing") is None


def test_list_results_order_and_pages(experiments):
    experiment = experiments.create_experiment(total_items=3)
    for item, start in (("i3", at(3)), ("i1", at(1)), ("i2", at(2))):
        add(experiments, experiment["id"], item, started_at=start)
    page = experiments.list_experiment_results(experiment_id=experiment["id"])
    assert [r["item_id"] for r in page.items] == ["i1", "i2", "i3"]
    first = experiments.list_experiment_results(experiment_id=experiment["id"], per_page=2)
    assert len(first.items) == 2 and first.total == 3 and first.has_more is True
    by_created = experiments.list_experiment_results(experiment_id=experiment["id"],
                                                     order_by={"field": "created_at", "direction": "DESC"})
    assert by_created.total == 3
    unknown = experiments.list_experiment_results(experiment_id="unknown")
    assert unknown.total == 0 and unknown.items == []


def test_list_results_filters(experiments):
    experiment = experiments.create_experiment(total_items=3)
    add(experiments, experiment["id"], "i1", tags=["a", "b"], status="needs-review", trace_id="t1")
    add(experiments, experiment["id"], "i2", tags=["a"], status="reviewed", trace_id="t2")
    add(experiments, experiment["id"], "i3", tags=None)
    assert results_of(experiments, experiment["id"], tags=["a"]).total == 2
    assert [r["item_id"] for r in results_of(experiments, experiment["id"], tags=["a", "b"]).items] == ["i1"]
    assert results_of(experiments, experiment["id"], tags=[]).total == 3
    assert results_of(experiments, experiment["id"], tags=["c"]).total == 0
    assert [r["item_id"] for r in results_of(experiments, experiment["id"], status="needs-review").items] == ["i1"]
    assert [r["item_id"] for r in results_of(experiments, experiment["id"], trace_id="t2").items] == ["i2"]


def test_delete_results_keeps_experiment(experiments):
    experiment = experiments.create_experiment(total_items=2)
    add(experiments, experiment["id"], "i1")
    add(experiments, experiment["id"], "i2")
    experiments.delete_experiment_results(experiment_id=experiment["id"])
    assert results_of(experiments, experiment["id"]).total == 0
    assert experiments.get_experiment_by_id(id=experiment["id"]) is not None


def test_review_summary(experiments):
    e1 = experiments.create_experiment(id="e1", total_items=4)
    e2 = experiments.create_experiment(id="e2", total_items=1)
    experiments.create_experiment(id="e3", total_items=0)
    for item, status in (("i1", "needs-review"), ("i2", "reviewed"), ("i3", "complete"), ("i4", None)):
        add(experiments, e1["id"], item, status=status)
    add(experiments, e2["id"], "i1", status="reviewed")
    assert experiments.get_review_summary() == [
        {"experiment_id": "e1", "total": 4, "needs_review": 1, "reviewed": 1, "complete": 1},
        {"experiment_id": "e2", "total": 1, "needs_review": 0, "reviewed": 1, "complete": 0},
    ]


def test_result_for_missing_experiment(experiments, backend):
    with pytest.raises(NotFoundError) as info:
        add(experiments, "missing")
    assert info.value.message == "Experiment not found: missing"
    assert info.value.id == f"STORAGE_{BACKEND_IDS[backend]}_ADD_EXPERIMENT_RESULT_NOT_FOUND"
    with pytest.raises(NotFoundError):
        upsert(experiments, "missing")
    assert results_of(experiments, "missing").total == 0
    assert experiments.get_review_summary() == []


# --------------------------------------------------------------------------- tenancy

def test_tenancy_persisted_and_listed(experiments):
    experiments.create_experiment(total_items=1, organization_id="org1", project_id="p1")
    experiments.create_experiment(total_items=1, organization_id="org1", project_id="p2")
    plain = experiments.create_experiment(total_items=1)
    assert plain["organization_id"] is None and plain["project_id"] is None
    assert experiments.list_experiments(filters={"organization_id": "org1"}).total == 2
    assert experiments.list_experiments(filters={"organization_id": "org1", "project_id": "p1"}).total == 1
    assert experiments.list_experiments(filters={"organization_id": None}).total == 3


def test_results_inherit_tenancy(experiments):
    experiment = experiments.create_experiment(total_items=1, organization_id="org1", project_id="p1")
    inherited = add(experiments, experiment["id"], "i1")
    assert (inherited["organization_id"], inherited["project_id"]) == ("org1", "p1")
    explicit = add(experiments, experiment["id"], "i2", organization_id=None, project_id="p9")
    assert (explicit["organization_id"], explicit["project_id"]) == (None, "p9")
    assert results_of(experiments, experiment["id"], filters={"organization_id": "other"}).total == 0
    assert results_of(experiments, experiment["id"], filters={"organization_id": "org1"}).total == 1
    assert results_of(experiments, experiment["id"], filters={"project_id": "p9"}).total == 1


def test_get_with_tenancy_scope(experiments):
    experiment = experiments.create_experiment(total_items=1, organization_id="org1", project_id="p1")
    result = add(experiments, experiment["id"])
    for getter, record_id in ((experiments.get_experiment_by_id, experiment["id"]),
                              (experiments.get_experiment_result_by_id, result["id"])):
        assert getter(id=record_id, filters={"organization_id": "org1", "project_id": "p1"}) is not None
        assert getter(id=record_id, filters={"organization_id": "org2"}) is None
        assert getter(id=record_id, filters={"organization_id": "org1", "project_id": "p2"}) is None
        assert getter(id=record_id) is not None


def test_delete_experiment_with_tenancy_scope(experiments):
    for filters in (None, {"organization_id": "org1", "project_id": "p1"}):
        experiment = experiments.create_experiment(total_items=1, organization_id="org1", project_id="p1")
        result = add(experiments, experiment["id"])
        for wrong in ({"organization_id": "org2"}, {"organization_id": "org1", "project_id": "p2"}):
            assert experiments.delete_experiment(id=experiment["id"], filters=wrong) is None
            assert experiments.get_experiment_by_id(id=experiment["id"]) is not None
            assert experiments.get_experiment_result_by_id(id=result["id"]) is not None
        experiments.delete_experiment(id=experiment["id"], filters=filters)
        assert experiments.get_experiment_by_id(id=experiment["id"]) is None
        assert experiments.get_experiment_result_by_id(id=result["id"]) is None


def test_delete_results_with_tenancy_scope(experiments):
    experiment = experiments.create_experiment(total_items=1, organization_id="org1", project_id="p1")
    add(experiments, experiment["id"])
    experiments.delete_experiment_results(experiment_id=experiment["id"], filters={"organization_id": "org2"})
    assert results_of(experiments, experiment["id"]).total == 1
    experiments.delete_experiment_results(experiment_id=experiment["id"], filters={"organization_id": "org1"})
    assert results_of(experiments, experiment["id"]).total == 0
    assert experiments.get_experiment_by_id(id=experiment["id"]) is not None


def test_tenancy_filter_validation(experiments):
    with pytest.raises(ValidationError) as info:
        experiments.list_experiments(filters={"tenant": "x", "organization_id": 5})
    assert set(info.value.fields) == {"filters.tenant", "filters.organization_id"}


# --------------------------------------------------------------------------- cross-domain: hooks

def test_detach_dataset_hook(experiments):
    on_dataset = experiments.create_experiment(dataset_id="ds", dataset_version=2, total_items=1)
    other = experiments.create_experiment(dataset_id="other", dataset_version=1, total_items=1)
    add(experiments, on_dataset["id"])
    kept = add(experiments, other["id"])
    assert experiments.detach_dataset(dataset_id="ds") == 1
    detached = experiments.get_experiment_by_id(id=on_dataset["id"])
    assert detached["dataset_id"] is None and detached["dataset_version"] is None
    assert results_of(experiments, on_dataset["id"]).total == 0
    assert experiments.get_experiment_result_by_id(id=kept["id"]) == kept
    assert experiments.get_experiment_by_id(id=other["id"])["dataset_id"] == "other"
    assert experiments.detach_dataset(dataset_id="ds") == 0  # safe to repeat


def test_redact_item_results_hook(experiments):
    experiment = experiments.create_experiment(dataset_id="ds", total_items=2)
    other = experiments.create_experiment(dataset_id="other", total_items=1)
    purged = add(experiments, experiment["id"], "item-1", output="secret", ground_truth="g", metadata={"m": 1},
                 error={"message": "e"}, tags=["t"], status="reviewed", trace_id="tr",
                 tool_mock_report={"served": []}, organization_id="org")
    experiments.update_experiment_result(id=purged["id"], comment="c")
    kept = add(experiments, experiment["id"], "item-2", output="visible")
    elsewhere = add(experiments, other["id"], "item-1", output="other dataset")
    when = datetime(2026, 3, 1, 8, 0, 0, 5000, tzinfo=timezone.utc)
    assert experiments.redact_item_results(dataset_id="ds", item_id="item-1", purged_at=when) == 1
    redacted = experiments.get_experiment_result_by_id(id=purged["id"])
    for key in ("input", "output", "ground_truth", "error", "tags", "tool_mock_report", "comment"):
        assert redacted[key] is None, key
    assert redacted["metadata"] == {"__purged": True, "purgedAt": "2026-03-01T08:00:00.005Z"}
    for key in ("id", "experiment_id", "item_id", "started_at", "completed_at", "retry_count", "attempt",
                "trace_id", "organization_id", "status", "created_at"):
        assert redacted[key] == purged[key], key
    assert experiments.get_experiment_result_by_id(id=kept["id"])["output"] == "visible"
    assert experiments.get_experiment_result_by_id(id=elsewhere["id"])["output"] == "other dataset"
    # The review status can still change; tags and comment stay cleared.
    after = experiments.update_experiment_result(id=purged["id"], status="complete", tags=["x"], comment="x")
    assert (after["status"], after["tags"], after["comment"]) == ("complete", None, None)
    assert experiments.redact_item_results(dataset_id="ds", item_id="item-1") == 1  # safe to repeat


def _create_reference_dataset_items(repository) -> None:
    """``mastra_dataset_items`` as the reference system lays it out (datasets.md §9)."""
    if repository.backend.name == "SQLITE":
        run_sql(repository, 'CREATE TABLE IF NOT EXISTS "mastra_dataset_items" ("id" TEXT NOT NULL, '
                            '"datasetId" TEXT NOT NULL, "datasetVersion" INTEGER NOT NULL, "externalId" TEXT, '
                            '"organizationId" TEXT, "projectId" TEXT, "validTo" INTEGER, '
                            '"isDeleted" INTEGER NOT NULL, "input" TEXT NOT NULL, "groundTruth" TEXT, '
                            '"requestContext" TEXT, "metadata" TEXT, "source" TEXT, "expectedTrajectory" TEXT, '
                            '"toolMocks" TEXT, "unmockedToolPolicy" TEXT, "scorerIds" TEXT, '
                            '"createdAt" TEXT NOT NULL, "updatedAt" TEXT NOT NULL)')
    else:
        run_sql(repository, f'CREATE TABLE IF NOT EXISTS {table(repository, "mastra_dataset_items")} ('
                            '"id" text NOT NULL, "datasetId" text NOT NULL, "datasetVersion" integer NOT NULL, '
                            '"externalId" text, "organizationId" text, "projectId" text, "validTo" integer, '
                            '"isDeleted" boolean NOT NULL, "input" jsonb NOT NULL, "groundTruth" jsonb, '
                            '"requestContext" jsonb, "metadata" jsonb, "source" jsonb, "expectedTrajectory" jsonb, '
                            '"toolMocks" jsonb, "unmockedToolPolicy" text, "scorerIds" jsonb, '
                            '"createdAt" timestamp NOT NULL, "updatedAt" timestamp NOT NULL, '
                            '"createdAtZ" timestamptz DEFAULT now(), "updatedAtZ" timestamptz DEFAULT now(), '
                            'PRIMARY KEY ("id", "datasetVersion"))')


def _insert_item_row(repository, item_id: str, metadata, *, version: int = 1) -> None:
    deleted = 0 if repository.backend.name == "SQLITE" else False
    stamp = "2026-01-01T00:00:00.000Z" if repository.backend.name == "SQLITE" else "2026-01-01 00:00:00"
    run_sql(repository, f'INSERT INTO {table(repository, "mastra_dataset_items")} ("id", "datasetId", '
                        '"datasetVersion", "isDeleted", "input", "metadata", "createdAt", "updatedAt") '
                        'VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
            (item_id, "ds", version, deleted, "null", metadata, stamp, stamp))


def test_purge_barrier_with_dataset_items_in_same_database(fresh_store):
    fresh_store.init()
    experiments = fresh_store.get_store("experiments")
    _create_reference_dataset_items(experiments)
    _insert_item_row(experiments, "purged", '{"__purged":true,"purgedAt":"2026-02-02T10:00:00.000Z"}')
    _insert_item_row(experiments, "alive", '{"__purged":false}')
    if experiments.backend.name == "SQLITE":  # another client's JSONB blob is understood too
        _insert_item_row(experiments, "purged-blob", encode_jsonb({"__purged": True}))
    experiment = experiments.create_experiment(dataset_id="ds", total_items=3)
    stored = add(experiments, experiment["id"], "purged", output="secret", tags=["t"], status="needs-review")
    assert stored["input"] is None and stored["output"] is None and stored["tags"] is None
    assert stored["metadata"] == {"__purged": True, "purgedAt": "2026-02-02T10:00:00.000Z"}
    assert stored["status"] == "needs-review"
    upserted = upsert(experiments, experiment["id"], "purged", attempt=1, output="secret")
    assert upserted["output"] is None and upserted["metadata"]["__purged"] is True
    alive = add(experiments, experiment["id"], "alive", output="visible")
    assert alive["output"] == "visible" and alive["metadata"] is None
    if experiments.backend.name == "SQLITE":
        assert add(experiments, experiment["id"], "purged-blob", output="secret")["output"] is None
    # Experiments on another dataset (or none) are not affected.
    unrelated = experiments.create_experiment(dataset_id="other", total_items=1)
    assert add(experiments, unrelated["id"], "purged", output="kept")["output"] == "kept"


def test_no_purge_barrier_without_dataset_items_table(fresh_store):
    experiments = fresh_store.get_store("experiments")
    experiments.init()  # only the experiments tables: the datasets domain lives elsewhere
    experiment = experiments.create_experiment(dataset_id="ds", total_items=1)
    assert add(experiments, experiment["id"], output="visible")["output"] == "visible"


def _datasets_or_skip(store):
    datasets = store.get_store("datasets")
    if datasets is None:
        pytest.skip("the datasets domain is not registered yet")
    return datasets


def test_deleting_dataset_detaches_experiments(store, experiments):
    datasets = _datasets_or_skip(store)
    datasets.dangerously_clear_all()
    dataset = datasets.create_dataset(name="qa")
    experiment = experiments.create_experiment(dataset_id=dataset["id"], dataset_version=1, total_items=1)
    add(experiments, experiment["id"])
    datasets.delete_dataset(id=dataset["id"])
    detached = experiments.get_experiment_by_id(id=experiment["id"])
    assert detached is not None and detached["dataset_id"] is None and detached["dataset_version"] is None
    assert results_of(experiments, experiment["id"]).total == 0


def test_deleting_dataset_in_other_database_detaches_experiments(backend, tmp_path, backend_url):
    urls = {"default": f"sqlite:///{tmp_path}/datasets.db", "experiments": f"sqlite:///{tmp_path}/experiments.db"}
    if backend == "postgres":
        urls["default"] = backend_url
    with CompositeStore.from_urls(**urls) as composite:
        composite.init()
        datasets = _datasets_or_skip(composite)
        experiments = composite.get_store("experiments")
        assert experiments.backend is not datasets.backend
        dataset = datasets.create_dataset(name=f"qa-{uuid.uuid4()}")
        experiment = experiments.create_experiment(dataset_id=dataset["id"], dataset_version=1, total_items=1)
        add(experiments, experiment["id"])
        datasets.delete_dataset(id=dataset["id"])
        detached = experiments.get_experiment_by_id(id=experiment["id"])
        assert detached["dataset_id"] is None and detached["dataset_version"] is None
        assert results_of(experiments, experiment["id"]).total == 0


def test_purging_item_redacts_results(store, experiments):
    datasets = _datasets_or_skip(store)
    datasets.dangerously_clear_all()
    dataset = datasets.create_dataset(name="qa")
    item = datasets.add_item(dataset_id=dataset["id"], input={"q": "secret"})
    experiment = experiments.create_experiment(dataset_id=dataset["id"], dataset_version=1, total_items=1)
    result = add(experiments, experiment["id"], item["id"], output="secret", status="needs-review")
    datasets.purge_item(id=item["id"], dataset_id=dataset["id"])
    redacted = experiments.get_experiment_result_by_id(id=result["id"])
    assert redacted["input"] is None and redacted["output"] is None
    assert redacted["metadata"]["__purged"] is True and redacted["status"] == "needs-review"
    later = upsert(experiments, experiment["id"], item["id"], attempt=1, output="secret again")
    assert later["output"] is None and later["input"] is None and later["metadata"]["__purged"] is True
    assert experiments.update_experiment_result(id=result["id"], comment="x")["comment"] is None


# --------------------------------------------------------------------------- concurrency

def run_threads(count: int, work) -> None:
    errors: list[BaseException] = []

    def runner(index: int) -> None:
        try:
            work(index)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=runner, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_concurrent_counter_increments_are_exact(experiments):
    experiment = experiments.create_experiment(total_items=800)

    def work(index: int) -> None:
        for _ in range(100):
            experiments.increment_experiment_counters(id=experiment["id"], succeeded=1, skipped=index % 2)

    run_threads(8, work)
    stored = experiments.get_experiment_by_id(id=experiment["id"])
    assert (stored["succeeded_count"], stored["failed_count"], stored["skipped_count"]) == (800, 0, 400)
    assert stored["status"] == "pending"


def test_concurrent_upserts_of_one_key_make_one_row(experiments):
    experiment = experiments.create_experiment(total_items=1)
    submitted = {f"out-{thread}-{n}" for thread in range(8) for n in range(20)}

    def work(index: int) -> None:
        for n in range(20):
            upsert(experiments, experiment["id"], "item-1", attempt=0, output=f"out-{index}-{n}")

    run_threads(8, work)
    page = results_of(experiments, experiment["id"])
    assert page.total == 1 and page.items[0]["output"] in submitted


def test_concurrent_adds_of_distinct_items(experiments):
    experiment = experiments.create_experiment(total_items=800)

    def work(index: int) -> None:
        for n in range(100):
            add(experiments, experiment["id"], f"item-{index}-{n}")

    run_threads(8, work)
    assert experiments.list_experiment_results(experiment_id=experiment["id"], per_page=0).total == 800


def test_supports_concurrent_updates(experiments):
    assert experiments.supports_concurrent_updates() is True


# --------------------------------------------------------------------------- ClickHouse

def test_experiments_not_available_on_clickhouse():
    with pytest.raises(NotSupportedError) as info:
        ExperimentsClickHouse(url="clickhouse://default:@localhost:9000/default")
    error = info.value
    assert error.id == "STORAGE_CLICKHOUSE_INIT_NOT_SUPPORTED" and error.category == "SYSTEM"
    assert error.domain == "experiments"
    assert error.message == ("The experiments domain is not available on ClickHouse; "
                             "use SQLite or PostgreSQL for it.")
    with pytest.raises(NotSupportedError) as info:
        CompositeStore.from_urls(default="sqlite:///:memory:",
                                 experiments="clickhouse://default:@localhost:9000/default")
    assert info.value.domain == "experiments"


# --------------------------------------------------------------------------- bad input

def _count_rows(experiments) -> tuple[int, int]:
    experiment_count = experiments.list_experiments(per_page=0).total
    result_count = sum(row["total"] for row in experiments.get_review_summary())
    return experiment_count, result_count


@pytest.mark.parametrize("call, field", [
    (lambda x, e: x.create_experiment(total_items=-1), "total_items"),
    (lambda x, e: x.update_experiment(id=e, status="done"), "status"),
    (lambda x, e: x.create_experiment(total_items=1, trial_index="0"), "trial_index"),
    (lambda x, e: x.create_experiment(total_items=1, trial_index=True), "trial_index"),
    (lambda x, e: x.create_experiment(total_items=1, target_type="robot"), "target_type"),
    (lambda x, e: x.create_experiment(total_items=1, runner_attestation={"runnerId": "r"}),
     "runner_attestation.invocationId"),
    (lambda x, e: x.create_experiment(total_items=1, id=""), "id"),
    (lambda x, e: x.create_experiment(total_items=1, metadata=[1]), "metadata"),
    (lambda x, e: add(x, e, started_at="yesterday"), "started_at"),
    (lambda x, e: add(x, e, attempt=-1), "attempt"),
    (lambda x, e: add(x, e, error={"msg": "x"}), "error.message"),
    (lambda x, e: add(x, e, tags=["a", 1]), "tags[1]"),
    (lambda x, e: add(x, e, output={1, 2}), "output"),
    (lambda x, e: add(x, e, status="done"), "status"),
    (lambda x, e: add(x, e, item_id=""), "item_id"),
    (lambda x, e: upsert(x, e, retry_count=1.5), "retry_count"),
    (lambda x, e: x.update_experiment_result(id="r", status="nope"), "status"),
])
def test_bad_input_writes_nothing(experiments, backend, call, field):
    experiment = experiments.create_experiment(id="exp-bad", total_items=1)
    before = _count_rows(experiments)
    with pytest.raises(ValidationError) as info:
        call(experiments, experiment["id"])
    assert field in info.value.fields
    assert info.value.id.startswith(f"STORAGE_{BACKEND_IDS[backend]}_") and info.value.id.endswith("_INVALID_INPUT")
    assert _count_rows(experiments) == before
    assert experiments.get_experiment_by_id(id="exp-bad") == experiment


def test_every_bad_field_reported_at_once(experiments):
    with pytest.raises(ValidationError) as info:
        experiments.create_experiment(total_items="ten", target_type="robot", scorer_ids=["a", 2],
                                      metadata={"bad": float("nan")})
    assert set(info.value.fields) == {"total_items", "target_type", "scorer_ids[1]", "metadata.bad"}
    assert info.value.fields["metadata.bad"] == ["Not JSON-serializable."]
    assert experiments.list_experiments().total == 0


def test_unstorable_characters_are_rejected(experiments):
    with pytest.raises(ValidationError) as info:
        experiments.create_experiment(total_items=1, name="a\x00b", metadata={"k": "\ud800", "\ud800x": 1})
    assert set(info.value.fields) == {"name", "metadata.k", "metadata.\ud800x"}
    experiment = experiments.create_experiment(total_items=1)
    with pytest.raises(ValidationError) as info:
        add(experiments, experiment["id"], input={"q": ["ok", "nul\x00"]}, tags=["\udfff"])
    assert set(info.value.fields) == {"input.q[1]", "tags[0]"}
    with pytest.raises(ValidationError) as info:
        experiments.update_experiment(id=experiment["id"], description="\x00")
    assert set(info.value.fields) == {"description"}
    assert experiments.list_experiments().total == 1 and results_of(experiments, experiment["id"]).total == 0


def test_naive_datetime_and_tuple_output(experiments):
    experiment = experiments.create_experiment(total_items=1)
    result = add(experiments, experiment["id"], started_at=datetime(2024, 1, 1), completed_at="2024-01-01T00:00:01",
                 output=("a", ("b", 1)))
    fetched = experiments.get_experiment_result_by_id(id=result["id"])
    assert fetched["started_at"] == datetime(2024, 1, 1, tzinfo=timezone.utc)
    assert fetched["started_at"].tzinfo is not None
    assert fetched["completed_at"] == datetime(2024, 1, 1, 0, 0, 1, tzinfo=timezone.utc)
    assert fetched["output"] == ["a", ["b", 1]] and result["output"] == ["a", ["b", 1]]


def test_bad_order_page_and_amounts(experiments, backend):
    experiment = experiments.create_experiment(total_items=1)
    with pytest.raises(ValidationError) as info:
        experiments.list_experiments(order_by={"field": "name"})
    assert info.value.fields == {"order_by.field": ["order_by.field must be one of created_at, status"]}
    with pytest.raises(ValidationError) as info:
        experiments.list_experiment_results(experiment_id=experiment["id"], per_page=-1)
    assert info.value.id == f"STORAGE_{BACKEND_IDS[backend]}_LIST_EXPERIMENT_RESULTS_INVALID_PAGE"
    with pytest.raises(ValidationError) as info:
        experiments.increment_experiment_counters(id=experiment["id"], succeeded=-1, failed=1.0, skipped=True)
    assert set(info.value.fields) == {"succeeded", "failed", "skipped"}
    assert experiments.get_experiment_by_id(id=experiment["id"]) == experiment


def test_dangerously_clear_all(experiments):
    experiment = experiments.create_experiment(total_items=1)
    add(experiments, experiment["id"])
    experiments.dangerously_clear_all()
    assert experiments.list_experiments().total == 0
    assert experiments.get_review_summary() == []


# --------------------------------------------------------------------------- compatibility

def test_rows_written_by_other_clients(experiments):
    name_experiments = table(experiments, "mastra_experiments")
    name_results = table(experiments, "mastra_experiment_results")
    sqlite = experiments.backend.name == "SQLITE"
    stamp = "2026-01-01T00:00:00.000Z" if sqlite else "2026-01-01 00:00:00"
    run_sql(experiments, f'INSERT INTO {name_experiments} ("id", "status", "totalItems", "succeededCount", '
                         '"failedCount", "skippedCount", "datasetId", "createdAt", "updatedAt") '
                         'VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)', ("raw-exp", "running", 2, 1, 0, 0, "ds", stamp, stamp))
    run_sql(experiments, f'INSERT INTO {name_results} ("id", "experimentId", "itemId", "input", "startedAt", '
                         '"completedAt", "retryCount", "createdAt") VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
            ("raw-res", "raw-exp", "item-1", '{"q":1}', stamp, stamp, 0, stamp))
    experiment = experiments.get_experiment_by_id(id="raw-exp")
    assert experiment["completed_at"] is None and experiment["started_at"] is None
    assert (experiment["status"], experiment["succeeded_count"]) == ("running", 1)
    result = experiments.get_experiment_result_by_id(id="raw-res")
    assert result["attempt"] == 0 and result["input"] == {"q": 1}
    replaced = upsert(experiments, "raw-exp", "item-1", attempt=0, output="new")
    assert replaced["id"] == "raw-res" and replaced["attempt"] == 0 and replaced["output"] == "new"
    assert results_of(experiments, "raw-exp").total == 1
    with pytest.raises(ConflictError):
        add(experiments, "raw-exp", "item-1")
    stored_attempt = run_sql(experiments, f'SELECT "attempt" FROM {name_results} WHERE "id" = ?', ("raw-res",))
    assert stored_attempt == [(0,)]


def test_stored_formats(experiments):
    experiment = experiments.create_experiment(total_items=1, metadata={"ü": "ö"})
    result = add(experiments, experiment["id"], input=None)
    rows = run_sql(experiments, f'SELECT "metadata", "createdAt" FROM {table(experiments, "mastra_experiments")}')
    results = run_sql(experiments, f'SELECT "input"::text FROM {table(experiments, "mastra_experiment_results")}'
                      if experiments.backend.name == "PG" else
                      f'SELECT "input" FROM {table(experiments, "mastra_experiment_results")}')
    if experiments.backend.name == "SQLITE":
        assert rows[0] == ('{"ü":"ö"}', experiment["created_at"].strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z")
    else:
        zoned = run_sql(experiments, f'SELECT "createdAtZ" FROM {table(experiments, "mastra_experiments")}')
        assert zoned[0][0] == experiment["created_at"]
        assert rows[0][0] == {"ü": "ö"}
    assert results == [("null",)] and result["input"] is None


def test_sqlite_reads_jsonb_blobs(experiments, backend):
    if backend != "sqlite":
        pytest.skip("JSONB blobs are a SQLite format")
    stamp = "2026-01-01T00:00:00.000Z"
    run_sql(experiments, 'INSERT INTO "mastra_experiments" ("id", "status", "totalItems", "succeededCount", '
                         '"failedCount", "skippedCount", "metadata", "createdAt", "updatedAt") '
                         'VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
            ("blob-exp", "pending", 1, 0, 0, 0, encode_jsonb({"k": [1, 2]}), stamp, stamp))
    run_sql(experiments, 'INSERT INTO "mastra_experiment_results" ("id", "experimentId", "itemId", "input", '
                         '"startedAt", "completedAt", "retryCount", "attempt", "tags", "createdAt") '
                         'VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
            ("blob-res", "blob-exp", "i", encode_jsonb({"q": 1}), stamp, stamp, 0, 0, encode_jsonb(["x", "y"]),
             stamp))
    assert experiments.get_experiment_by_id(id="blob-exp")["metadata"] == {"k": [1, 2]}
    result = experiments.get_experiment_result_by_id(id="blob-res")
    assert result["input"] == {"q": 1} and result["tags"] == ["x", "y"]
    assert [r["id"] for r in results_of(experiments, "blob-exp", tags=["y", "x"]).items] == ["blob-res"]


def _create_reference_results_table(experiments) -> None:
    """An older ``mastra_experiment_results`` (fewer columns) for ``init`` to complete."""
    text, integer, stamp = ("TEXT", "INTEGER", "TEXT") if experiments.backend.name == "SQLITE" else (
        "text", "integer", "timestamp")
    run_sql(experiments, f'CREATE TABLE {table(experiments, "mastra_experiment_results")} ('
                         f'"id" {text} NOT NULL PRIMARY KEY, "experimentId" {text} NOT NULL, '
                         f'"itemId" {text} NOT NULL, "input" {text} NOT NULL, "startedAt" {stamp} NOT NULL, '
                         f'"completedAt" {stamp} NOT NULL, "retryCount" {integer} NOT NULL, "attempt" {integer}, '
                         f'"createdAt" {stamp} NOT NULL)')


def test_init_drops_legacy_index(fresh_store):
    experiments = fresh_store.get_store("experiments")
    results = table(experiments, "mastra_experiment_results")
    schema = getattr(experiments.backend, "schema_name", None)
    if schema:
        run_sql(experiments, f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    _create_reference_results_table(experiments)
    legacy = f"{schema}_idx_experiment_results_exp_item" if schema else "idx_experiment_results_exp_item"
    run_sql(experiments, f'CREATE UNIQUE INDEX "{legacy}" ON {results} ("experimentId", "itemId")')
    when = "2026-01-01 00:00:00"
    for row_id, item in (("r1", "i1"), ("r2", "i2")):
        run_sql(experiments, f'INSERT INTO {results} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
                (row_id, "e", item, '"x"', when, when, 0, 0, when))
    fresh_store.init()
    if experiments.backend.name == "SQLITE":
        names = {row[0] for row in run_sql(experiments, "SELECT name FROM sqlite_master WHERE type = 'index'")}
    else:
        names = {row[0] for row in run_sql(experiments, "SELECT indexname FROM pg_indexes WHERE schemaname = ?",
                                           (schema,))}
    assert legacy not in names
    natural = "idx_experiment_results_exp_item_attempt"
    natural = f"{schema}_{natural}" if schema else natural
    assert natural in names
    # With the legacy index gone, several attempts per item are allowed.
    experiment = experiments.create_experiment(id="e", total_items=1)
    assert add(experiments, experiment["id"], "i1", attempt=1)["attempt"] == 1


def test_init_warns_when_stored_rows_repeat_a_natural_key(fresh_store, caplog):
    experiments = fresh_store.get_store("experiments")
    results = table(experiments, "mastra_experiment_results")
    schema = getattr(experiments.backend, "schema_name", None)
    if schema:
        run_sql(experiments, f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    _create_reference_results_table(experiments)
    when = "2026-01-01 00:00:00"
    for row_id in ("r1", "r2"):  # the same (experimentId, itemId, attempt) twice
        run_sql(experiments, f'INSERT INTO {results} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
                (row_id, "e", "i1", '"x"', when, when, 0, 0, when))
    with caplog.at_level(logging.WARNING):
        fresh_store.init()
    assert any("idx_experiment_results_exp_item_attempt" in record.getMessage() for record in caplog.records)
    # init went on: the other tables and columns exist, the rows are untouched.
    experiment = experiments.create_experiment(id="e", total_items=1)
    assert results_of(experiments, experiment["id"]).total == 2
    with pytest.raises(ConflictError):
        add(experiments, experiment["id"], "i1")


# --------------------------------------------------------------------------- schemas

def test_schemas_dump_wire_form_and_load_either_form(experiments):
    experiment = experiments.create_experiment(total_items=2, dataset_id="ds", organization_id="org")
    wire = ExperimentSchema().dump(experiment)
    assert wire["totalItems"] == 2 and wire["datasetId"] == "ds" and wire["organizationId"] == "org"
    assert wire["createdAt"].endswith("Z") and wire["startedAt"] is None
    assert ExperimentSchema().load(wire) == experiment
    result = add(experiments, experiment["id"], tool_mock_report={"liveCalls": []})
    result_wire = ExperimentResultSchema().dump(result)
    assert result_wire["experimentId"] == experiment["id"] and result_wire["toolMockReport"] == {"liveCalls": []}
    assert ExperimentResultSchema().load(result_wire) == result
    assert ExperimentResultSchema().load({**result, "input": None})["input"] is None
