"""Scores domain conformance suite (scores.md §5), run on every backend, plus ``save_scores``.

Each test runs on every default backend of the matrix in ``tests/conftest.py``: SQLite,
PostgreSQL, ClickHouse (the session's server, Debian's 18.16 here) and a current ClickHouse
(``clickhouse-current``: the server of ``COMPOSITE_STORE_CLICKHOUSE_CURRENT_URL``, else the engine
in-process), unless its markers narrow that. Scenario numbers from scores.md §5 are given in the
docstrings.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import sqlite3
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from composite_store import Page, ValidationError
from composite_store.composite import store_for_url
from composite_store.clickhouse import ScoresClickHouse
from composite_store.errors import BackendUnavailableError, NotSupportedError
from composite_store.jsonb import encode_jsonb
from composite_store.postgres import ScoresPG
from composite_store.schemas import ScoreSchema
from composite_store.scores import fast_prepare_score
from composite_store.sqlite import ScoresSQLite
from composite_store.validation import Problems
from composite_store.values import json_loads
from tests.conftest import MATRIX, clickhouse_client, database_url

UTC = timezone.utc
#: Scenarios about ClickHouse's own tables.
CLICKHOUSE_ONLY = pytest.mark.requires(family="clickhouse")

#: The 35 keys of a score (scores.md §2.1).
SCORE_KEYS = {
    "id", "scorer_id", "trace_id", "span_id", "run_id", "scorer", "preprocess_step_result", "extract_step_result",
    "analyze_step_result", "score", "reason", "metadata", "preprocess_prompt", "extract_prompt",
    "generate_score_prompt", "generate_reason_prompt", "analyze_prompt", "reason_prompt", "input", "output",
    "additional_context", "request_context", "entity_type", "entity", "entity_id", "source", "resource_id",
    "thread_id", "organization_id", "project_id", "batch_id", "dataset_id", "dataset_item_id", "created_at",
    "updated_at",
}


# --------------------------------------------------------------------------- helpers

def sample(scorer_id: str = "sc-1", **overrides) -> dict:
    """The valid payload of scores.md §5, with ``overrides``."""
    payload = {
        "scorer_id": scorer_id, "entity_id": "eval-agent", "entity_type": "AGENT", "source": "LIVE",
        "run_id": str(uuid.uuid4()), "score": 0.8, "reason": "correct",
        "scorer": {"id": scorer_id, "name": "my-eval", "description": "checks answers"},
        "entity": {"id": "eval-agent", "name": "Eval Agent"},
        "input": [{"role": "user", "content": "2+2?"}], "output": {"text": "4"},
        "preprocess_step_result": {"facts": ["2+2=4"]}, "preprocess_prompt": "extract",
        "analyze_step_result": {"verdict": "yes"}, "analyze_prompt": "judge", "generate_score_prompt": "score",
        "generate_reason_prompt": "explain", "request_context": {},
        "metadata": {"scorerVersion": "1.0.0", "customField": "test-value"},
    }
    payload.update(overrides)
    return payload


def error_id(backend: str, operation: str, status: str = "INVALID_INPUT") -> str:
    """``STORAGE_<B>_<OPERATION>_<STATUS>`` for the backend under test."""
    return f"STORAGE_{MATRIX[backend].error_name}_{operation}_{status}"


def info(page: Page) -> tuple:
    """A page's page info: ``(total, page, per_page, has_more)``."""
    return page.total, page.page, page.per_page, page.has_more


def ids(page: Page) -> list[str]:
    return [item["id"] for item in page.items]


def total_rows(scores) -> int:
    return scores.count_rows()["mastra_scorers"]


def sqlite_path(url: str) -> str:
    return url[len("sqlite:///"):]


def pg_query(url: str, sql: str, params: tuple = ()) -> list[tuple]:
    """Run one statement on PostgreSQL with psycopg2 (committed); returns its rows, if any."""
    import psycopg2

    connection = psycopg2.connect(url.split("?", 1)[0])
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall() if cursor.description else []
        connection.commit()
        return rows
    finally:
        connection.close()


@pytest.fixture
def clickhouse_database(backend: str, backend_url: str):
    """A fresh ClickHouse database on the server under test: ``(url, raw client)``; dropped after."""
    client = clickhouse_client(backend_url)
    name = f"scores_{secrets.token_hex(4)}"
    client.execute(f"CREATE DATABASE {name}")
    url = database_url(backend_url, name)
    yield url, clickhouse_client(url)
    client.execute(f"DROP DATABASE IF EXISTS {name}")
    client.disconnect()


def clickhouse_supports_ttl(client) -> bool:
    version = client.execute("SELECT version()")[0][0]
    return tuple(int(part) for part in version.split(".")[:2]) >= (19, 6)


# --------------------------------------------------------------------------- listing by scorer

def test_list_by_scorer_returns_every_saved_score(scores):
    """Scenario 1."""
    saved = [scores.save_score(score=sample("sc-1")) for _ in range(3)]
    page = scores.list_scores_by_scorer_id(scorer_id="sc-1", per_page=10)
    assert len(page.items) == 3 and page.total == 3
    assert {item["run_id"] for item in page.items} == {score["run_id"] for score in saved}
    assert all(item["scorer_id"] == "sc-1" for item in page.items)


def test_list_by_unknown_scorer_is_an_empty_page(scores):
    """Scenario 2."""
    page = scores.list_scores_by_scorer_id(scorer_id="nobody")
    assert page.items == [] and info(page) == (0, 0, 100, False)


def test_pages_are_newest_first(scores):
    """Scenario 3."""
    saved = []
    for _ in range(3):
        saved.append(scores.save_score(score=sample("sc-1")))
        time.sleep(0.02)
    newest_first = [s["id"] for s in reversed(saved)]
    for number in range(3):
        page = scores.list_scores_by_scorer_id(scorer_id="sc-1", page=number, per_page=1)
        assert ids(page) == [newest_first[number]]
        assert page.total == 3 and page.has_more is (number < 2)


def test_round_trip_keeps_every_given_key(scores):
    """Scenario 4."""
    payload = sample("sc-1")
    scores.save_score(score=payload)
    [item] = scores.list_scores_by_scorer_id(scorer_id="sc-1").items
    assert set(item) == SCORE_KEYS
    for key, value in payload.items():
        if key == "score":
            assert abs(item["score"] - value) < 1e-9 and isinstance(item["score"], float)
        else:
            assert item[key] == value, key
    assert item["id"] and item["created_at"] and item["updated_at"]
    untouched = SCORE_KEYS - set(payload) - {"id", "created_at", "updated_at"}
    assert all(item[key] is None for key in untouched)


def test_list_by_scorer_filters_by_source(scores):
    """Scenario 5."""
    test = scores.save_score(score=sample("sc-1", source="TEST"))
    live = scores.save_score(score=sample("sc-1", source="LIVE"))
    assert ids(scores.list_scores_by_scorer_id(scorer_id="sc-1", source="TEST")) == [test["id"]]
    assert ids(scores.list_scores_by_scorer_id(scorer_id="sc-1", source="LIVE")) == [live["id"]]


def test_list_by_scorer_filters_by_entity(scores):
    """Scenario 6."""
    for entity_id, entity_type in (("agent-1", "AGENT"), ("agent-2", "AGENT"), ("wf-1", "WORKFLOW")):
        scores.save_score(score=sample("sc-1", entity_id=entity_id, entity_type=entity_type))
    assert scores.list_scores_by_scorer_id(scorer_id="sc-1", entity_type="AGENT").total == 2
    assert scores.list_scores_by_scorer_id(scorer_id="sc-1", entity_id="wf-1").total == 1
    assert scores.list_scores_by_scorer_id(scorer_id="sc-1", entity_id="agent-1", entity_type="WORKFLOW").total == 0


# --------------------------------------------------------------------------- run, entity, id

def test_list_by_run(scores):
    """Scenario 7."""
    saved = scores.save_score(score=sample())
    page = scores.list_scores_by_run_id(run_id=saved["run_id"], per_page=10)
    assert ids(page) == [saved["id"]] and info(page) == (1, 0, 10, False)


def test_run_list_is_newest_first(scores):
    """Scenario 8."""
    run_id = str(uuid.uuid4())
    saved = []
    for scorer_id in ("X", "Y", "Z"):
        saved.append(scores.save_score(score=sample(scorer_id, run_id=run_id)))
        time.sleep(0.003)
    assert [item["scorer_id"] for item in scores.list_scores_by_run_id(run_id=run_id).items] == ["Z", "Y", "X"]


def test_save_returns_uuid4_and_get_returns_the_same(scores):
    """Scenario 9."""
    saved = scores.save_score(score=sample())
    assert uuid.UUID(saved["id"]).version == 4
    assert scores.get_score_by_id(id=saved["id"]) == saved


def test_get_missing_and_empty_id(scores, backend):
    """Scenario 10."""
    assert scores.get_score_by_id(id="missing") is None
    with pytest.raises(ValidationError) as caught:
        scores.get_score_by_id(id="")
    assert caught.value.id == error_id(backend, "GET_SCORE_BY_ID") and "id" in caught.value.fields


def test_list_by_entity(scores):
    """Scenario 11."""
    saved = scores.save_score(score=sample())
    page = scores.list_scores_by_entity_id(entity_id="eval-agent", entity_type="AGENT", per_page=10)
    assert ids(page) == [saved["id"]] and info(page) == (1, 0, 10, False)
    assert scores.list_scores_by_entity_id(entity_id="eval-agent", entity_type="WORKFLOW", per_page=10).items == []


# --------------------------------------------------------------------------- span

def save_on_span(scores, trace_id: str, span_id: str, count: int) -> list[str]:
    return [item["id"] for item in scores.save_scores(scores=[sample(trace_id=trace_id, span_id=span_id)
                                                               for _ in range(count)])]


def test_list_by_span_one_score(scores):
    """Scenario 12."""
    save_on_span(scores, "t-1", "s-1", 1)
    page = scores.list_scores_by_span(trace_id="t-1", span_id="s-1")
    assert len(page.items) == 1 and page.total == 1 and page.has_more is False


def test_list_by_span_three_scores(scores):
    """Scenario 13."""
    save_on_span(scores, "t-1", "s-1", 3)
    page = scores.list_scores_by_span(trace_id="t-1", span_id="s-1")
    assert len(page.items) == 3 and page.total == 3


def test_list_by_span_pages(scores):
    """Scenarios 14, 15 and 16."""
    target = set(save_on_span(scores, "t-1", "s-1", 5))
    for trace_id, span_id in (("t-1", "s-2"), ("t-2", "s-1"), ("t-2", "s-2")):
        save_on_span(scores, trace_id, span_id, 1)
    first = scores.list_scores_by_span(trace_id="t-1", span_id="s-1", per_page=2, page=0)
    assert len(first.items) == 2 and info(first) == (5, 0, 2, True)
    assert all((item["trace_id"], item["span_id"]) == ("t-1", "s-1") for item in first.items)
    second = scores.list_scores_by_span(trace_id="t-1", span_id="s-1", per_page=2, page=1)
    assert len(second.items) == 2 and info(second) == (5, 1, 2, True)
    save_on_span(scores, "t-1", "s-2", 2)
    save_on_span(scores, "t-3", "s-1", 1)
    third = scores.list_scores_by_span(trace_id="t-1", span_id="s-1", per_page=2, page=2)
    assert len(third.items) == 1 and info(third) == (5, 2, 2, False)
    seen = ids(first) + ids(second) + ids(third)
    assert sorted(seen) == sorted(target)


# --------------------------------------------------------------------------- every score

def test_list_scores_returns_every_score_newest_first(scores):
    """``list_scores``: all scores of every scorer, run and entity; newest first, ties by id."""
    saved = scores.save_scores(scores=[sample("sc-a"), sample("sc-b", entity_id="other", entity_type="WORKFLOW")])
    saved += [scores.save_score(score=sample("sc-c", trace_id="t", span_id="s")) for _ in range(3)]
    newest_first = [item["id"] for item in sorted(saved, key=lambda item: (-item["created_at"].timestamp(), item["id"]))]
    page = scores.list_scores()
    assert ids(page) == newest_first and info(page) == (5, 0, 100, False)
    assert page.items == [scores.get_score_by_id(id=score_id) for score_id in newest_first]
    first, second, third = (scores.list_scores(page=number, per_page=2) for number in range(3))
    assert (info(first), info(second), info(third)) == ((5, 0, 2, True), (5, 1, 2, True), (5, 2, 2, False))
    assert ids(first) + ids(second) + ids(third) == newest_first
    assert ids(scores.list_scores(per_page=False)) == newest_first
    assert scores.list_scores(per_page=0).items == [] and scores.list_scores(per_page=0).total == 5


def test_list_scores_order_by(scores):
    """``list_scores(order_by=...)``: by score, created_at or updated_at in either direction, ties by id."""
    saved = scores.save_scores(scores=[sample(score=value) for value in (0.5, 0.1, 0.9, 0.5)])
    by_score = sorted(saved, key=lambda item: (item["score"], item["id"]))
    assert ids(scores.list_scores(order_by={"field": "score", "direction": "asc"})) == [i["id"] for i in by_score]
    descending = sorted(saved, key=lambda item: (-item["score"], item["id"]))
    assert ids(scores.list_scores(order_by={"field": "score"})) == [item["id"] for item in descending]
    oldest_first = sorted(saved, key=lambda item: (item["created_at"], item["id"]))
    assert ids(scores.list_scores(order_by={"direction": "ASC"})) == [item["id"] for item in oldest_first]
    assert ids(scores.list_scores(order_by={"field": "updated_at", "direction": "ASC"})) == \
        [item["id"] for item in sorted(saved, key=lambda item: (item["updated_at"], item["id"]))]


def test_list_scores_honours_tenancy(scores, tenants):
    """``list_scores(filters=...)``: the tenancy scope narrows all scores."""
    assert scores.list_scores().total == 3
    assert scores.list_scores(filters={"organization_id": "org-a"}).total == 2
    page = scores.list_scores(filters={"organization_id": "org-a", "project_id": "proj-1"})
    assert ids(page) == [tenants[("org-a", "proj-1")]["id"]]
    assert scores.list_scores(filters={"project_id": "proj-1"}).total == 2
    assert scores.list_scores(filters={"organization_id": "org-c"}).items == []


def test_list_scores_rejects_bad_arguments_before_any_query(unreachable_scores, backend):
    """``list_scores``: every bad argument in one validation error; no query runs."""
    with pytest.raises(ValidationError) as caught:
        unreachable_scores.list_scores(page=-1, filters={"tenant": "x"},
                                       order_by={"field": "reason", "direction": "UP", "nulls": "last"})
    assert caught.value.id == error_id(backend, "LIST_SCORES", "INVALID_PAGE")
    assert caught.value.fields == {
        "page": caught.value.fields["page"], "filters.tenant": ["Unknown field."],
        "order_by.field": ["order_by.field must be one of created_at, updated_at, score"],
        "order_by.direction": ["order_by.direction must be ASC or DESC"], "order_by.nulls": ["Unknown field."]}
    with pytest.raises(ValidationError) as caught:
        unreachable_scores.list_scores(order_by="score")
    assert caught.value.id == error_id(backend, "LIST_SCORES") and set(caught.value.fields) == {"order_by"}
    with pytest.raises(TypeError):
        unreachable_scores.list_scores({"organization_id": "org-a"})
    with pytest.raises(BackendUnavailableError):
        unreachable_scores.list_scores()


# --------------------------------------------------------------------------- tenancy and provenance

def test_tenancy_fields_round_trip(scores):
    """Scenario 17."""
    saved = scores.save_score(score=sample(organization_id="org-a", project_id="proj-1"))
    assert (saved["organization_id"], saved["project_id"]) == ("org-a", "proj-1")
    stored = scores.get_score_by_id(id=saved["id"])
    assert (stored["organization_id"], stored["project_id"]) == ("org-a", "proj-1")


def test_provenance_fields_round_trip(scores):
    """Scenario 18."""
    saved = scores.save_score(score=sample(batch_id="b-1", dataset_id="ds-1", dataset_item_id="item-1"))
    stored = scores.get_score_by_id(id=saved["id"])
    assert (stored["batch_id"], stored["dataset_id"], stored["dataset_item_id"]) == ("b-1", "ds-1", "item-1")


@pytest.fixture
def tenants(scores):
    """Rows (org-a, proj-1), (org-a, proj-2), (org-b, proj-1): one scorer, entity, run and span."""
    run_id = str(uuid.uuid4())
    return {(org, project): scores.save_score(score=sample("sc-t", organization_id=org, project_id=project,
                                                           run_id=run_id, trace_id="t-t", span_id="s-t"))
            for org, project in (("org-a", "proj-1"), ("org-a", "proj-2"), ("org-b", "proj-1"))}


def test_scorer_list_honours_tenancy(scores, tenants):
    """Scenario 19."""
    assert scores.list_scores_by_scorer_id(scorer_id="sc-t", filters={"organization_id": "org-a"}).total == 2
    assert scores.list_scores_by_scorer_id(
        scorer_id="sc-t", filters={"organization_id": "org-a", "project_id": "proj-1"}).total == 1
    assert scores.list_scores_by_scorer_id(scorer_id="sc-t", filters={}).total == 3
    assert scores.list_scores_by_scorer_id(scorer_id="sc-t", filters=None).total == 3


def test_entity_list_honours_tenancy(scores, tenants):
    """Scenario 20."""
    page = scores.list_scores_by_entity_id(entity_id="eval-agent", entity_type="AGENT",
                                           filters={"organization_id": "org-b"})
    assert ids(page) == [tenants[("org-b", "proj-1")]["id"]]


def test_run_and_span_lists_honour_tenancy(scores, tenants):
    """Scenario 21."""
    expected = [tenants[("org-a", "proj-2")]["id"]]
    run_id = tenants[("org-a", "proj-2")]["run_id"]
    assert ids(scores.list_scores_by_run_id(run_id=run_id, filters={"project_id": "proj-2"})) == expected
    assert ids(scores.list_scores_by_span(trace_id="t-t", span_id="s-t", filters={"project_id": "proj-2"})) == expected


# --------------------------------------------------------------------------- upsert

def test_save_with_same_id_replaces(scores):
    """Scenario 22 as fidelity-1.71.md §3.2 (S1) amends it: the re-saved row has ``created_at``
    equal to ``updated_at``, both not earlier than the second call's start."""
    first = scores.save_score(score=sample("sc-u", id="score-1", score=0.2, source="LIVE"))
    time.sleep(0.002)
    second_call = datetime.now(UTC)
    second = scores.save_score(score=sample("sc-u", id="score-1", score=0.9, source="TEST"))
    stored = scores.get_score_by_id(id="score-1")
    assert (stored["score"], stored["source"]) == (0.9, "TEST")
    assert scores.list_scores_by_scorer_id(scorer_id="sc-u").total == 1
    assert stored["created_at"] == stored["updated_at"] == second["created_at"]
    assert stored["created_at"] > first["created_at"]
    assert stored["created_at"] >= second_call - timedelta(milliseconds=1)  # stored to the millisecond
    assert second == stored


def test_save_scores_resets_created_at_of_stored_ids(scores):
    """fidelity-1.71.md §3.2: ``save_scores`` follows the same rule; newest-first lists then put
    the re-saved score first, as Mastra 1.71's clients see it."""
    scores.save_scores(scores=[sample("sc-many", id="m-1"), sample("sc-many", id="m-2")])
    time.sleep(0.002)
    again = scores.save_scores(scores=[sample("sc-many", id="m-1", score=0.1)])[0]
    stored = scores.get_score_by_id(id="m-1")
    assert stored["created_at"] == stored["updated_at"] == again["created_at"]
    assert stored["score"] == 0.1
    assert ids(scores.list_scores_by_scorer_id(scorer_id="sc-many")) == ["m-1", "m-2"]


def test_retrying_a_save_with_an_id_leaves_one_row(scores, backend, backend_url):
    """Scenario 23."""
    payload = sample("sc-r", id="score-2")
    scores.save_score(score=payload)
    scores.save_score(score=payload)

    def check():
        assert ids(scores.list_scores_by_scorer_id(scorer_id="sc-r")) == ["score-2"]
        assert ids(scores.list_scores_by_run_id(run_id=payload["run_id"])) == ["score-2"]
        assert ids(scores.list_scores_by_entity_id(entity_id="eval-agent", entity_type="AGENT")) == ["score-2"]
        assert scores.get_score_by_id(id="score-2")["run_id"] == payload["run_id"]

    check()
    if MATRIX[backend].family == "clickhouse" and not MATRIX[backend].cluster:  # (a Distributed table has no OPTIMIZE)
        clickhouse_client(backend_url).execute("OPTIMIZE TABLE mastra_scorers FINAL")
        check()


def test_saving_without_id_twice_creates_two_rows(scores):
    """Scenario 24."""
    payload = sample("sc-twice")
    first, second = scores.save_score(score=payload), scores.save_score(score=payload)
    assert first["id"] != second["id"]
    assert scores.list_scores_by_scorer_id(scorer_id="sc-twice").total == 2


def test_save_replaces_instead_of_merging(scores):
    """Scenario 25."""
    scores.save_score(score=sample(id="score-3", reason="a"))
    payload = sample(id="score-3")
    del payload["reason"]
    scores.save_score(score=payload)
    assert scores.get_score_by_id(id="score-3")["reason"] is None


def test_a_returned_record_can_be_saved_again(scores):
    """Scenario 26."""
    saved = scores.save_score(score=sample("sc-again"))
    stored = scores.get_score_by_id(id=saved["id"])
    time.sleep(0.002)
    again = scores.save_score(score=stored)
    assert scores.list_scores_by_scorer_id(scorer_id="sc-again").total == 1
    assert again["created_at"] == again["updated_at"] > saved["created_at"]  # fidelity-1.71.md §3.2
    assert scores.get_score_by_id(id=saved["id"]) == again


def test_wire_form_round_trip(scores):
    """§2.4: the schema dumps camelCase with ISO ``…Z`` timestamps; the dump can be saved again."""
    saved = scores.save_score(score=sample("sc-wire", structured_output=True))
    wire = ScoreSchema().dump(saved)
    assert wire["scorerId"] == "sc-wire" and wire["createdAt"].endswith("Z") and "scorer_id" not in wire
    assert "structuredOutput" not in wire and "structured_output" not in saved
    again = scores.save_score(score=wire)
    assert again["created_at"] == again["updated_at"] >= saved["created_at"]  # fidelity-1.71.md §3.2
    stamps = ("created_at", "updated_at")
    assert {k: v for k, v in again.items() if k not in stamps} == {k: v for k, v in saved.items() if k not in stamps}


# --------------------------------------------------------------------------- bad input

def test_missing_scorer_id(scores, backend):
    """Scenario 27."""
    before = total_rows(scores)
    payload = sample(trace_id="t-9", span_id="s-9")
    del payload["scorer_id"]
    with pytest.raises(ValidationError) as caught:
        scores.save_score(score=payload)
    error = caught.value
    assert error.id == error_id(backend, "SAVE_SCORE") and error.category == "USER" and error.domain == "scores"
    assert error.details["fields"] == {"scorer_id": ["Missing data for required field."]}
    assert (error.details["entity_id"], error.details["entity_type"]) == ("eval-agent", "AGENT")
    assert (error.details["trace_id"], error.details["span_id"]) == ("t-9", "s-9")
    assert "scorer_id" not in error.details
    assert total_rows(scores) == before


def test_every_bad_field_is_reported_at_once(scores):
    """Scenario 28."""
    with pytest.raises(ValidationError) as caught:
        scores.save_score(score=sample(score="high", source="PROD", entity="x"))
    assert set(caught.value.fields) == {"score", "source", "entity"}
    assert caught.value.fields["source"] == ["Must be one of: LIVE, TEST."]
    assert caught.value.details["scorer_id"] == "sc-1"
    assert total_rows(scores) == 0


@pytest.mark.parametrize("value", [float("nan"), float("inf"), True, "0.8", None])
def test_bad_score_values(scores, value):
    """Scenario 29 (and: numeric strings are not coerced, ``None`` is not a score)."""
    with pytest.raises(ValidationError) as caught:
        scores.save_score(score=sample(score=value))
    assert list(caught.value.fields) == ["score"]


def test_integer_score_is_returned_as_float(scores):
    saved = scores.save_score(score=sample(score=1))
    assert saved["score"] == 1.0 and isinstance(saved["score"], float)
    assert isinstance(scores.get_score_by_id(id=saved["id"])["score"], float)


def test_unknown_key_unserializable_metadata_and_bad_entity_type(scores):
    """Scenario 30."""
    with pytest.raises(ValidationError) as caught:
        scores.save_score(score=sample(foo=1))
    assert caught.value.fields == {"foo": ["Unknown field."]}
    with pytest.raises(ValidationError) as caught:
        scores.save_score(score=sample(metadata={"s": {1, 2}}))
    assert caught.value.fields == {"metadata.s": ["Not JSON-serializable."]}
    with pytest.raises(ValidationError) as caught:
        scores.save_score(score=sample(entity_type="agent_runner"))
    assert list(caught.value.fields) == ["entity_type"]
    assert caught.value.fields["entity_type"][0].startswith("Must be one of: AGENT, WORKFLOW, TRAJECTORY, STEP, EXTERNAL, agent_run,")
    assert total_rows(scores) == 0


def test_span_types_are_accepted_entity_types(scores):
    """§2.2: any span type of observability.md §2.3 is an entity type."""
    saved = scores.save_score(score=sample(entity_type="tool_call"))
    assert scores.get_score_by_id(id=saved["id"])["entity_type"] == "tool_call"


@pytest.mark.parametrize("entity_type", ["TRAJECTORY", "STEP", "EXTERNAL", "classifier_evaluation",
                                         "mcp_server_request"])
def test_mastra_1_71_entity_types_are_accepted(scores, entity_type):
    """fidelity-1.71.md §1 (V2): the three new kinds and the two new span types, on both write paths."""
    saved = scores.save_score(score=sample("sc-v2", entity_type=entity_type))
    many = scores.save_scores(scores=[sample("sc-v2", entity_type=entity_type)])[0]
    assert scores.get_score_by_id(id=saved["id"])["entity_type"] == entity_type
    assert scores.get_score_by_id(id=many["id"])["entity_type"] == entity_type
    page = scores.list_scores_by_scorer_id(scorer_id="sc-v2", entity_type=entity_type)
    assert sorted(ids(page)) == sorted([saved["id"], many["id"]])
    assert scores.list_scores_by_entity_id(entity_id="eval-agent", entity_type=entity_type).total == 2


def test_entity_types_stay_case_sensitive(scores):
    """fidelity-1.71.md §1: validation stays case-sensitive; nothing is written."""
    with pytest.raises(ValidationError) as caught:
        scores.save_scores(scores=[sample(entity_type="trajectory")])
    assert list(caught.value.fields) == ["scores[0].entity_type"]
    assert total_rows(scores) == 0


@pytest.mark.parametrize("field,value", [
    ("id", ""), ("run_id", ""), ("entity_id", 5), ("reason", b"bytes"), ("scorer", None), ("entity", [1]),
    ("metadata", "text"), ("trace_id", 1), ("structured_output", "yes"),
])
def test_wrong_types_are_rejected(scores, field, value):
    """§2.1: values of the wrong type are rejected, never coerced."""
    with pytest.raises(ValidationError) as caught:
        scores.save_score(score=sample(**{field: value}))
    assert list(caught.value.fields) == [field]


@pytest.fixture
def unreachable_scores(backend, tmp_path):
    """The scores repository of a store whose database cannot be reached."""
    url = {"sqlite": f"sqlite:///{tmp_path}/missing/dir/x.db",
           "postgres": "postgresql://postgres@127.0.0.1:1/nowhere",
           }.get(backend, "clickhouse://default:@127.0.0.1:1/default")
    store = store_for_url(url)
    yield store.get_store("scores")
    store.close()


@pytest.mark.parametrize("arguments,field", [
    ({"page": -1}, "page"), ({"per_page": -5}, "per_page"), ({"per_page": True}, "per_page"),
    ({"per_page": False, "page": 1}, "page"), ({"filters": {"tenant": "x"}}, "filters.tenant"),
    ({"source": "PROD"}, "source"), ({"scorer_id": ""}, "scorer_id"), ({"entity_type": ""}, "entity_type"),
    ({"filters": {"organization_id": 1}}, "filters.organization_id"),
])
def test_bad_list_arguments_are_rejected_before_any_query(unreachable_scores, arguments, field):
    """Scenario 31: the database is unreachable, so any query would fail differently."""
    with pytest.raises(ValidationError) as caught:
        unreachable_scores.list_scores_by_scorer_id(**{"scorer_id": "sc-1", **arguments})
    assert field in caught.value.fields
    with pytest.raises(BackendUnavailableError):
        unreachable_scores.list_scores_by_scorer_id(scorer_id="sc-1")


def test_page_statuses(unreachable_scores, backend):
    """Scenario 31: pagination problems have status INVALID_PAGE."""
    with pytest.raises(ValidationError) as caught:
        unreachable_scores.list_scores_by_run_id(run_id="r", page=-1, filters={"tenant": "x"})
    assert caught.value.id == error_id(backend, "LIST_SCORES_BY_RUN_ID", "INVALID_PAGE")
    assert set(caught.value.fields) == {"page", "filters.tenant"}
    for call in (lambda: unreachable_scores.list_scores_by_entity_id(entity_id="", entity_type=None),
                 lambda: unreachable_scores.list_scores_by_span(trace_id=None, span_id=""),
                 lambda: unreachable_scores.get_score_by_id(id=5)):
        with pytest.raises(ValidationError):
            call()


def test_per_page_false_and_zero(scores):
    """Scenario 32."""
    scores.save_scores(scores=[sample("sc-p") for _ in range(3)])
    everything = scores.list_scores_by_scorer_id(scorer_id="sc-p", per_page=False)
    assert len(everything.items) == 3 and info(everything) == (3, 0, False, False)
    none = scores.list_scores_by_scorer_id(scorer_id="sc-p", per_page=0)
    assert none.items == [] and info(none) == (3, 0, 0, True)
    assert info(scores.list_scores_by_scorer_id(scorer_id="nobody", per_page=0)) == (0, 0, 0, False)


def test_page_past_the_end(scores):
    """Scenario 33."""
    scores.save_scores(scores=[sample("sc-p") for _ in range(5)])
    page = scores.list_scores_by_scorer_id(scorer_id="sc-p", page=10, per_page=2)
    assert page.items == [] and info(page) == (5, 10, 2, False)


# --------------------------------------------------------------------------- stored forms

def test_resave_of_a_score_without_input(scores):
    """A re-saved id whose stored row holds JSON null in a required JSON column (no input): the
    replacement (a new createdAt, so a tombstone on ClickHouse) writes that null back."""
    payload = sample(id="s-null")
    del payload["input"]
    scores.save_score(score=payload)
    scores.save_scores(scores=[{**payload, "score": 0.1}, sample(id="s-other")])
    stored = scores.get_score_by_id(id="s-null")
    assert stored["score"] == 0.1 and stored["input"] is None
    assert scores.list_scores_by_run_id(run_id=payload["run_id"]).total == 1
    assert scores.get_score_by_id(id="s-other") is not None


def test_save_without_input(scores, backend, backend_url):
    """Scenario 34 (and §2.3: a ``None`` output)."""
    payload = sample(output=None)
    del payload["input"]
    saved = scores.save_score(score=payload)
    stored = scores.get_score_by_id(id=saved["id"])
    assert stored["input"] is None and stored["output"] is None and stored == saved
    if backend == "postgres":
        assert pg_query(backend_url, 'SELECT input IS NULL, jsonb_typeof(input), jsonb_typeof(output) '
                                     'FROM mastra_scorers WHERE id = %s', (saved["id"],)) == [(False, "null", "null")]
    elif backend == "sqlite":
        with sqlite3.connect(sqlite_path(backend_url)) as connection:
            row = connection.execute('SELECT input, output FROM mastra_scorers WHERE id = ?', (saved["id"],))
            assert row.fetchone() == (None, None)
    else:
        rows = clickhouse_client(backend_url).execute(
            "SELECT input, output, reason FROM mastra_scorers WHERE id = %(id)s", {"id": saved["id"]})
        assert rows == [("null", "null", "correct")]


def test_json_values_keep_their_types(scores):
    """Scenario 35."""
    metadata = {"mark": "✓", "n": {"a": [1, 2.5, None, True]}}
    saved = scores.save_score(score=sample(output="plain string", metadata=metadata))
    stored = scores.get_score_by_id(id=saved["id"])
    assert stored["output"] == "plain string" and stored["metadata"] == metadata
    values = stored["metadata"]["n"]["a"]
    assert type(values[0]) is int and type(values[1]) is float and values[3] is True


def test_timestamps_are_aware_utc_milliseconds(scores):
    """Scenario 36."""
    saved = scores.save_score(score=sample())
    for record in (saved, scores.get_score_by_id(id=saved["id"])):
        for key in ("created_at", "updated_at"):
            assert record[key].utcoffset().total_seconds() == 0 and record[key].microsecond % 1000 == 0


def test_values_are_fresh_objects(scores):
    """README: returned records are fresh; mutating them or the input changes nothing stored."""
    payload = sample("sc-fresh")
    saved = scores.save_score(score=payload)
    payload["metadata"]["customField"] = "changed"
    saved["scorer"]["name"] = "changed"
    stored = scores.get_score_by_id(id=saved["id"])
    assert stored["metadata"]["customField"] == "test-value" and stored["scorer"]["name"] == "my-eval"


def test_unstorable_characters_are_removed(scores, backend):
    """README: unpaired surrogates are removed everywhere, U+0000 on PostgreSQL."""
    saved = scores.save_score(score=sample(reason="a\ud800b\x00c", metadata={"k\udc00": ["x\x00y\ud800"]}))
    stored = scores.get_score_by_id(id=saved["id"])
    nul = "" if MATRIX[backend].strips_nul else "\x00"
    assert stored["reason"] == f"ab{nul}c" and stored["metadata"] == {"k": [f"x{nul}y"]}
    assert stored == saved


def test_nested_dates_and_tuples_are_normalized(scores):
    """README: tuples become lists; nested datetimes and dates become ISO strings."""
    at = datetime(2026, 1, 31, 9, 5, 1, 123456, tzinfo=UTC)
    saved = scores.save_score(score=sample(metadata={"at": at, "day": date(2026, 1, 31), "pair": (1, 2)}))
    expected = {"at": "2026-01-31T09:05:01.123Z", "day": "2026-01-31", "pair": [1, 2]}
    assert saved["metadata"] == expected and scores.get_score_by_id(id=saved["id"])["metadata"] == expected


REFERENCE = {
    "id": "ref-1", "scorerId": "sc-ref", "runId": "run-ref", "entityId": "ref-agent", "entityType": "AGENT",
    "source": "LIVE", "score": 0.5, "scorer": {"id": "sc-ref", "name": "ref"}, "entity": {"id": "ref-agent"},
    "input": [{"role": "user", "content": "hi"}], "output": {"text": "hello"},
}
REFERENCE_AT = datetime(2026, 1, 31, 9, 5, 1, 123000, tzinfo=UTC)


def insert_reference_row(backend: str, url: str) -> None:
    """One score written as another client (Mastra) writes it, with raw SQL."""
    columns = list(REFERENCE)
    values = [json.dumps(v, separators=(",", ":")) if isinstance(v, (dict, list)) else v for v in REFERENCE.values()]
    quoted = ", ".join(f'"{c}"' for c in columns)
    if backend == "sqlite":
        with sqlite3.connect(sqlite_path(url)) as connection:
            connection.execute(
                f'INSERT INTO mastra_scorers ({quoted}, "createdAt", "updatedAt") VALUES '
                f'({", ".join("?" * (len(columns) + 2))})', [*values, "2026-01-31T09:05:01.123Z", "2026-01-31T09:05:01.123Z"])
    elif backend == "postgres":
        json_columns = {"scorer", "entity", "input", "output"}
        holders = ", ".join("%s::jsonb" if c in json_columns else "%s" for c in columns)
        naive = REFERENCE_AT.replace(tzinfo=None)
        pg_query(url, f'INSERT INTO mastra_scorers ({quoted}, "createdAt", "updatedAt", "createdAtZ", "updatedAtZ") '
                      f'VALUES ({holders}, %s, %s, %s, %s)', (*values, naive, naive, REFERENCE_AT, REFERENCE_AT))
    else:
        client = clickhouse_client(url)
        types = dict(client.execute("SELECT name, type FROM system.columns WHERE database = currentDatabase() "
                                    "AND table = 'mastra_scorers'"))
        stamp = REFERENCE_AT if "DateTime" in types["createdAt"] else 1769850301123
        placeholders = [name for name, type_ in types.items()
                        if type_.startswith("Nullable") and name not in REFERENCE]
        all_columns = columns + placeholders + ["createdAt", "updatedAt"]
        row = values + ["_null_"] * len(placeholders) + [stamp, stamp]
        client.execute(f'INSERT INTO mastra_scorers ({", ".join(f"`{c}`" for c in all_columns)}) VALUES', [row])


def test_rows_written_by_the_reference_system_are_readable(scores, backend, backend_url):
    """Scenario 37."""
    insert_reference_row(backend, backend_url)
    stored = scores.get_score_by_id(id="ref-1")
    assert stored is not None and set(stored) == SCORE_KEYS
    assert (stored["scorer_id"], stored["run_id"], stored["score"]) == ("sc-ref", "run-ref", 0.5)
    assert stored["scorer"] == REFERENCE["scorer"] and stored["input"] == REFERENCE["input"]
    assert stored["output"] == {"text": "hello"} and stored["created_at"] == REFERENCE_AT
    for key in ("trace_id", "reason", "metadata", "request_context", "dataset_item_id", "extract_step_result"):
        assert stored[key] is None, key
    assert ids(scores.list_scores_by_scorer_id(scorer_id="sc-ref")) == ["ref-1"]
    assert ids(scores.list_scores_by_entity_id(entity_id="ref-agent", entity_type="AGENT")) == ["ref-1"]
    assert ids(scores.list_scores_by_run_id(run_id="run-ref")) == ["ref-1"]


@pytest.mark.backends("sqlite")
def test_sqlite_jsonb_metadata_is_decoded(scores, backend_url):
    """Scenario 38."""
    saved = scores.save_score(score=sample())
    metadata = {"scorerVersion": "2.0.0", "nested": {"list": [1, 2.5, None, True, "✓"]}}
    with sqlite3.connect(sqlite_path(backend_url)) as connection:
        connection.execute("UPDATE mastra_scorers SET metadata = ? WHERE id = ?", (encode_jsonb(metadata), saved["id"]))
    assert scores.get_score_by_id(id=saved["id"])["metadata"] == metadata


# --------------------------------------------------------------------------- bulk, concurrency, lifecycle

def test_five_thousand_scores_list_and_page(scores):
    """Scenario 39 (the 5,000 scores are written with one ``save_scores`` call to keep the suite
    fast; single saves are exercised by scenario 40)."""
    saved = scores.save_scores(scores=[sample("sc-bulk") for _ in range(5000)])
    everything = scores.list_scores_by_scorer_id(scorer_id="sc-bulk", per_page=False)
    assert len(everything.items) == 5000 and everything.total == 5000
    order = [(-item["created_at"].timestamp(), item["id"]) for item in everything.items]
    assert order == sorted(order)
    visited = []
    for number in range(5):
        page = scores.list_scores_by_scorer_id(scorer_id="sc-bulk", page=number, per_page=1000)
        visited += ids(page)
        assert page.has_more is (number < 4)
    assert len(visited) == 5000 and set(visited) == {item["id"] for item in saved}


def test_threads_share_one_store(scores, backend):
    """Scenario 40: 8 threads x 250 saves. On ClickHouse 8 x 20: every single save is one INSERT,
    which on 18.16 writes a new part of ~140 files (10-30 saves/s on the test machines), so the
    full 2,000 would add minutes to the suite without checking anything more."""
    per_thread = 20 if MATRIX[backend].family == "clickhouse" else 250

    def work(worker: int) -> list[str]:
        return [scores.save_score(score=sample("sc-threads", run_id=f"w{worker}"))["id"] for _ in range(per_thread)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        saved = [score_id for chunk in pool.map(work, range(8)) for score_id in chunk]
    page = scores.list_scores_by_scorer_id(scorer_id="sc-threads", per_page=False)
    assert page.total == 8 * per_thread and sorted(ids(page)) == sorted(saved) and len(set(saved)) == 8 * per_thread


def test_clear_all(scores):
    """Scenario 41."""
    saved = scores.save_score(score=sample("sc-c", trace_id="t", span_id="s"))
    scores.dangerously_clear_all()
    assert scores.list_scores_by_scorer_id(scorer_id="sc-c").total == 0
    assert scores.list_scores_by_run_id(run_id=saved["run_id"]).total == 0
    assert scores.list_scores_by_entity_id(entity_id="eval-agent", entity_type="AGENT").total == 0
    assert scores.list_scores_by_span(trace_id="t", span_id="s").total == 0
    assert scores.get_score_by_id(id=saved["id"]) is None
    scores.save_score(score=sample("sc-c"))
    assert scores.list_scores_by_scorer_id(scorer_id="sc-c").total == 1


def table_layout(backend: str, url: str) -> list:
    """Columns (and indexes) of ``mastra_scorers`` as the database reports them."""
    if backend == "sqlite":
        with sqlite3.connect(sqlite_path(url)) as connection:
            return [connection.execute("PRAGMA table_info(mastra_scorers)").fetchall(),
                    sorted(connection.execute("PRAGMA index_list(mastra_scorers)").fetchall())]
    if backend == "postgres":
        return [pg_query(url, "SELECT column_name, data_type, is_nullable, column_default FROM "
                              "information_schema.columns WHERE table_name = 'mastra_scorers' "
                              "AND table_schema = 'public' ORDER BY ordinal_position"),
                pg_query(url, "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'mastra_scorers' "
                              "AND schemaname = 'public' ORDER BY indexname")]
    return clickhouse_client(url).execute("SHOW CREATE TABLE mastra_scorers")


def test_init_twice_changes_nothing(backend, backend_url, make_store):
    """Scenario 42: a second init on an existing table."""
    store = make_store()
    store.get_store("scores").init()  # the table exists whichever tests ran before (or none)
    before = table_layout(backend, backend_url)
    store.get_store("scores").init()
    make_store().get_store("scores").init()
    assert table_layout(backend, backend_url) == before
    if backend == "sqlite":
        assert {index[1] for index in before[1]} >= {
            "mastra_scores_trace_id_span_id_created_at_idx", "mastra_scorers_scorer_id_created_at_idx",
            "mastra_scorers_run_id_created_at_idx", "mastra_scorers_entity_created_at_idx"}
    elif backend == "postgres":
        assert {name for name, _ in before[1]} == {
            "mastra_scorers_pkey", "mastra_scores_trace_id_span_id_created_at_idx",
            "mastra_scorers_scorer_id_created_at_idx", "mastra_scorers_run_id_created_at_idx",
            "mastra_scorers_entity_created_at_idx", "mastra_scorers_scorer_id_created_at_id_idx",
            "mastra_scorers_entity_created_at_id_idx", "mastra_scorers_scorer_id_idx", "mastra_scorers_entity_idx"}


@pytest.mark.requires(cluster=False)  # one server's layout (the cluster's: tests/test_cluster.py)
def test_init_from_many_threads_and_store_objects(backend, backend_url, tmp_path, request):
    """§3.10: init is idempotent and safe from several threads (and store objects) at once."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path}/threads.db"
    elif backend == "postgres":
        url = f"{backend_url}?schema_name=threads_{secrets.token_hex(4)}"
    else:
        url, _ = request.getfixturevalue("clickhouse_database")
    stores = [store_for_url(url) for _ in range(4)]
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda index: stores[index % 4].get_store("scores").init(), range(8)))
        saved = stores[0].get_store("scores").save_score(score=sample())
        assert stores[3].get_store("scores").get_score_by_id(id=saved["id"]) == saved
    finally:
        for store in stores:
            store.close()
        if backend == "postgres":
            pg_query(backend_url, f'DROP SCHEMA "{url.rsplit("=", 1)[1]}" CASCADE')


#: Mastra's columns before ``datasetItemId`` existed, plus a column this library does not know.
LEGACY_COLUMNS = [
    "scorerId", "traceId", "spanId", "runId", "scorer", "preprocessStepResult", "extractStepResult",
    "analyzeStepResult", "score", "reason", "metadata", "preprocessPrompt", "extractPrompt",
    "generateScorePrompt", "generateReasonPrompt", "analyzePrompt", "reasonPrompt", "input", "output",
    "additionalContext", "requestContext", "entityType", "entity", "entityId", "source", "resourceId",
    "threadId", "organizationId", "projectId", "batchId", "datasetId",
]


@pytest.mark.backends("sqlite")
def test_init_upgrades_a_mastra_sqlite_table(tmp_path):
    """Scenario 42 on SQLite: extra column kept, rows readable, ``datasetItemId`` added."""
    path = tmp_path / "mastra.db"
    with sqlite3.connect(path) as connection:
        columns = ", ".join(f'"{c}" TEXT' if c != "score" else '"score" REAL' for c in LEGACY_COLUMNS)
        connection.execute(f'CREATE TABLE mastra_scorers (id TEXT NOT NULL PRIMARY KEY, {columns}, '
                           '"createdAt" TEXT, "updatedAt" TEXT, "legacyNote" TEXT)')
        connection.execute('INSERT INTO mastra_scorers (id, "scorerId", "runId", score, scorer, output, entity, '
                           '"entityId", source, "createdAt", "updatedAt", "legacyNote") VALUES '
                           "('old', 'sc-old', 'run-old', 1, '{}', '\"x\"', '{}', 'e', 'LIVE', "
                           "'2026-01-31T09:05:01.123Z', '2026-01-31T09:05:01.123Z', 'kept')")
    scores = ScoresSQLite(url=f"sqlite:///{path}")
    scores.init()
    with sqlite3.connect(path) as connection:
        names = [row[1] for row in connection.execute("PRAGMA table_info(mastra_scorers)")]
        assert "legacyNote" in names and "datasetItemId" in names
        assert connection.execute('SELECT "legacyNote" FROM mastra_scorers').fetchall() == [("kept",)]
    old = scores.get_score_by_id(id="old")
    assert old["output"] == "x" and old["score"] == 1.0 and old["dataset_item_id"] is None
    scores.save_score(score=sample("sc-old", dataset_item_id="item-1"))
    assert scores.list_scores_by_scorer_id(scorer_id="sc-old").total == 2
    scores.close()


@pytest.mark.backends("postgres")
def test_init_upgrades_a_mastra_postgres_table(backend_url):
    """Scenario 42 on PostgreSQL (in a schema of its own): extra column kept, ``datasetItemId`` added."""
    schema = f"legacy_{secrets.token_hex(4)}"
    json_columns = {"scorer", "preprocessStepResult", "extractStepResult", "analyzeStepResult", "metadata", "input",
                    "output", "additionalContext", "requestContext", "entity"}
    columns = ", ".join(f'"{c}" ' + ("jsonb" if c in json_columns else "double precision" if c == "score" else "text")
                        for c in LEGACY_COLUMNS)
    pg_query(backend_url, f'CREATE SCHEMA "{schema}"; CREATE TABLE "{schema}".mastra_scorers '
                          f'(id text NOT NULL CONSTRAINT mastra_scorers_pkey PRIMARY KEY, {columns}, '
                          '"createdAt" timestamp NOT NULL, "updatedAt" timestamp NOT NULL, '
                          '"createdAtZ" timestamptz DEFAULT now(), "updatedAtZ" timestamptz DEFAULT now(), '
                          '"legacyNote" text)')
    pg_query(backend_url, f'INSERT INTO "{schema}".mastra_scorers (id, "scorerId", "runId", score, scorer, input, '
                          'output, entity, "entityId", source, "createdAt", "updatedAt", "createdAtZ", "updatedAtZ", '
                          '"legacyNote") VALUES '
                          "('old', 'sc-old', 'run-old', 1, '{}', 'null', '\"x\"', '{}', 'e', 'LIVE', "
                          "'2026-01-31 09:05:01.123', '2026-01-31 09:05:01.123', '2026-01-31 09:05:01.123Z', "
                          "'2026-01-31 09:05:01.123Z', 'kept')")
    scores = ScoresPG(connection_string=backend_url, schema_name=schema)
    try:
        scores.init()
        names = [row[0] for row in pg_query(backend_url, "SELECT column_name FROM information_schema.columns "
                                                         "WHERE table_schema = %s AND table_name = 'mastra_scorers'",
                                            (schema,))]
        assert "legacyNote" in names and "datasetItemId" in names
        old = scores.get_score_by_id(id="old")
        assert old["output"] == "x" and old["input"] is None and old["created_at"] == REFERENCE_AT
        scores.save_score(score=sample("sc-old", dataset_item_id="item-1"))
        assert scores.list_scores_by_scorer_id(scorer_id="sc-old").total == 2
        indexes = {row[0] for row in pg_query(backend_url, "SELECT indexname FROM pg_indexes WHERE schemaname = %s",
                                              (schema,))}
        assert f"{schema}_mastra_scorers_run_id_created_at_idx" in indexes
    finally:
        scores.close()
        pg_query(backend_url, f'DROP SCHEMA "{schema}" CASCADE')


@pytest.mark.requires(cluster=False)  # one server's layout (the cluster's: tests/test_cluster.py)
@CLICKHOUSE_ONLY
def test_init_on_a_clickhouse_table_with_an_extra_and_a_missing_column(clickhouse_database):
    """Scenario 42 on ClickHouse: a table this library created, with an unknown column added and
    ``datasetItemId`` dropped."""
    url, client = clickhouse_database
    scores = ScoresClickHouse(url=url)
    scores.init()
    saved = scores.save_score(score=sample("sc-old"))
    client.execute("ALTER TABLE mastra_scorers ADD COLUMN legacyNote Nullable(String)")
    client.execute("ALTER TABLE mastra_scorers DROP COLUMN datasetItemId")
    scores.close()
    again = ScoresClickHouse(url=url)
    again.init()
    columns = {name for name, in client.execute("SELECT name FROM system.columns WHERE database = currentDatabase() "
                                                "AND table = 'mastra_scorers'")}
    assert {"legacyNote", "datasetItemId"} <= columns
    assert again.get_score_by_id(id=saved["id"])["run_id"] == saved["run_id"]
    again.close()


@pytest.mark.requires(cluster=False)  # one server's layout (the cluster's: tests/test_cluster.py)
@CLICKHOUSE_ONLY
def test_init_refuses_a_plain_merge_tree(clickhouse_database):
    """Scenario 42: Mastra's own ClickHouse table (a plain MergeTree) cannot be read with FINAL."""
    url, client = clickhouse_database
    client.execute("CREATE TABLE mastra_scorers (id String, scorerId String, createdAt Int64) "
                   "ENGINE = MergeTree() ORDER BY (createdAt, id)")
    before = client.execute("SHOW CREATE TABLE mastra_scorers")
    scores = ScoresClickHouse(url=url)
    with pytest.raises(NotSupportedError) as caught:
        scores.init()
    assert caught.value.id == "STORAGE_CLICKHOUSE_INIT_NOT_SUPPORTED" and caught.value.domain == "scores"
    assert client.execute("SHOW CREATE TABLE mastra_scorers") == before
    scores.close()


def test_supports_concurrent_updates(scores, backend):
    """Scenario 43."""
    assert scores.supports_concurrent_updates() is MATRIX[backend].transactions


@pytest.mark.requires(cluster=False)  # one server's layout (the cluster's: tests/test_cluster.py)
@pytest.mark.requires(family="clickhouse", current_clickhouse=False)
def test_clickhouse_18_table_and_ttl_warning(clickhouse_database, caplog):
    """Scenario 44: Int64 timestamps, ReplacingMergeTree(_version), monthly partitions, no TTL;
    ``ttl_days`` only logs one warning on a server without TTL."""
    url, client = clickhouse_database
    if clickhouse_supports_ttl(client):
        pytest.skip("the ClickHouse under test supports TTL (scenario 45 covers it)")
    scores = ScoresClickHouse(url=url, ttl_days=30)
    with caplog.at_level(logging.WARNING, logger="composite_store.clickhouse"):
        scores.init()
    warnings = [r for r in caplog.records if r.name == "composite_store.clickhouse" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "ttl_days=30" in warnings[0].getMessage()
    [[ddl]] = client.execute("SHOW CREATE TABLE mastra_scorers")
    assert "ReplacingMergeTree(_version)" in ddl and "TTL" not in ddl
    assert "createdAt Int64" in ddl and "updatedAt Int64" in ddl
    assert "PARTITION BY toYYYYMM(toDateTime(intDiv(createdAt, 1000)))" in ddl
    assert "ORDER BY (createdAt, id)" in ddl and "index_granularity = 8192" in ddl
    assert "metadata Nullable(String) DEFAULT CAST('{}'" in ddl or "metadata Nullable(String) DEFAULT '{}'" in ddl
    saved = scores.save_score(score=sample())
    assert scores.get_score_by_id(id=saved["id"]) == saved
    scores.close()


@pytest.mark.requires(current_clickhouse=True)
def test_current_clickhouse_ttl(clickhouse_database):
    """Scenario 45: ``DateTime64`` columns, monthly partitions and the TTL; a second ``init()`` issues
    no ``ALTER``."""
    url, client = clickhouse_database
    ScoresClickHouse(url=url, ttl_days=30).init()
    [[ddl]] = client.execute("SHOW CREATE TABLE mastra_scorers")
    assert "DateTime64(3, 'UTC')" in ddl and "PARTITION BY toYYYYMM(createdAt)" in ddl
    assert "TTL" in ddl and "toIntervalDay(30)" in ddl.replace("INTERVAL 30 DAY", "toIntervalDay(30)")
    second = ScoresClickHouse(url=url, ttl_days=30)
    statements = spy_statements(second)
    second.init()
    assert not [sql for sql in statements if sql.lstrip().upper().startswith("ALTER")]


def spy_statements(scores) -> list[str]:
    """Record the SQL a repository sends (the statements still run on the real server)."""
    statements: list[str] = []
    database = scores.backend.database
    execute_sql = database.execute_sql

    def recording(sql, params=None, *args, **kwargs):
        statements.append(sql)
        return execute_sql(sql, params, *args, **kwargs)

    database.execute_sql = recording
    return statements


# --------------------------------------------------------------------------- save_scores

def test_save_scores_lands_every_score_exactly_once(scores):
    """5,000 scores in one call, saved again with their ids: 5,000 rows, each once."""
    payloads = [sample("sc-many", id=f"many-{i}") if i % 2 else sample("sc-many") for i in range(5000)]
    saved = scores.save_scores(scores=payloads)
    assert len(saved) == 5000 and len({item["id"] for item in saved}) == 5000
    assert scores.save_scores(scores=[{**p, "id": s["id"]} for p, s in zip(payloads, saved)])
    page = scores.list_scores_by_scorer_id(scorer_id="sc-many", per_page=False)
    assert page.total == 5000 and sorted(ids(page)) == sorted(item["id"] for item in saved)
    assert total_rows(scores) == 5000


def test_save_scores_returns_what_get_returns(scores):
    saved = scores.save_scores(scores=[sample("sc-get"), sample("sc-get", id="given", input=None),
                                       sample("sc-get", output="text", metadata=None)])
    assert [scores.get_score_by_id(id=item["id"]) for item in saved] == saved
    assert all(set(item) == SCORE_KEYS for item in saved)


def test_one_invalid_score_fails_the_whole_batch(scores, backend):
    payloads = [sample("sc-batch") for _ in range(1000)]
    payloads[517] = sample("sc-batch", score="high", trace_id="t-517")
    with pytest.raises(ValidationError) as caught:
        scores.save_scores(scores=payloads)
    error = caught.value
    assert error.id == error_id(backend, "SAVE_SCORES")
    assert error.fields == {"scores[517].score": ["Not a valid number."]}
    assert error.details["index"] == 517 and error.details["trace_id"] == "t-517"
    assert total_rows(scores) == 0


def test_save_scores_reports_every_bad_item(scores):
    payloads = [sample(), sample(source="PROD"), "not a dict", sample(extra=1)]
    with pytest.raises(ValidationError) as caught:
        scores.save_scores(scores=payloads)
    assert set(caught.value.fields) == {"scores[1].source", "scores[2]", "scores[3].extra"}
    assert caught.value.fields["scores[2]"] == ["Invalid input type."]
    assert caught.value.details["index"] == 1
    assert total_rows(scores) == 0


def test_a_payload_that_is_not_a_dict(scores):
    with pytest.raises(ValidationError) as caught:
        scores.save_score(score=["not", "a", "dict"])
    assert caught.value.fields == {"score": ["Invalid input type."]}


def test_save_scores_argument_and_empty_batch(scores):
    with pytest.raises(ValidationError) as caught:
        scores.save_scores(scores={"not": "a list"})
    assert list(caught.value.fields) == ["scores"]
    assert scores.save_scores(scores=[]) == []


def test_save_scores_repeated_id_behaves_like_successive_saves(scores):
    first = scores.save_score(score=sample("sc-dup", id="dup", score=0.1))
    last = sample("sc-dup", id="dup", score=0.3)
    del last["reason"]
    saved = scores.save_scores(scores=[sample("sc-dup", id="dup", score=0.2, reason="a"), last])
    stored = scores.get_score_by_id(id="dup")
    assert stored["score"] == 0.3 and stored["reason"] is None
    assert stored["created_at"] == stored["updated_at"] >= first["created_at"]  # fidelity-1.71.md §3.2
    assert [item["score"] for item in saved] == [0.2, 0.3] and saved[1] == stored
    assert scores.list_scores_by_scorer_id(scorer_id="sc-dup").total == 1


def test_save_scores_from_many_threads(scores):
    def work(worker: int) -> int:
        return len(scores.save_scores(scores=[sample("sc-tb") for _ in range(200)]))

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert sum(pool.map(work, range(4))) == 800
    assert scores.list_scores_by_scorer_id(scorer_id="sc-tb", per_page=0).total == 800


# --------------------------------------------------------------------------- the two validation routes

REPOSITORIES = {
    "sqlite": lambda: ScoresSQLite(url="sqlite:///:memory:"),
    "postgres": lambda: ScoresPG(connection_string="postgresql://nobody@127.0.0.1:1/none"),
    "clickhouse": lambda: ScoresClickHouse(url="clickhouse://default:@127.0.0.1:1/default"),
}


def both_routes(repository, payload):
    """``(fast route result or None, schema route result, schema problems)`` for one payload."""
    fast = fast_prepare_score(payload, strip_nul=repository.backend.features.strips_nul,
                              json_null=repository._json_null_names)
    problems = Problems()
    slow = repository._prepare_with_schema(problems, payload)
    return fast, slow, problems.fields


def comparable(row: dict) -> dict:
    """A row with its JSON texts decoded (the schema route leaves JSON values as objects)."""
    return {key: json_loads(value) if isinstance(value, str) and type(value) is not str else value
            for key, value in row.items()}


ODD_VALUES = [
    None, "", "✓", "a\ud800", "nul\x00", 0, 1, -1.5, 10 ** 30, 10 ** 400, float("nan"), float("inf"), True, b"x",
    (1, 2), [1, (2,)], {"k": 1}, {1: "a"}, {"k": {1, 2}}, datetime(2026, 1, 1, tzinfo=UTC), date(2026, 1, 1),
    {"d": datetime(2026, 1, 1)}, {"k\ud800": 1}, {"n": "\x00"}, "AGENT", "LIVE", "tool_call", "agent",
]
FIELDS = sorted(SCORE_KEYS - {"created_at", "updated_at"}) + ["structured_output", "createdAt", "scorerId",
                                                              "entityType", "unknown"]


@pytest.mark.backends("sqlite", "postgres", "clickhouse")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.dictionaries(st.sampled_from(FIELDS), st.sampled_from(ODD_VALUES), max_size=4),
       removed=st.sets(st.sampled_from(sorted(SCORE_KEYS)), max_size=2))
def test_fast_route_agrees_with_the_schema(backend, changes, removed):
    """The hand-written check accepts only what the schema accepts, with identical results."""
    repository = REPOSITORIES[backend]()
    payload = {key: value for key, value in sample(**changes).items() if key not in removed}
    fast, (record, row), problems = both_routes(repository, payload)
    if record is None:
        assert fast is None and problems
    elif fast is not None:
        assert fast[0] == record
        assert comparable(fast[1]) == comparable(row)
        for key, value in record.items():
            assert type(value) is type(fast[0][key]), key
            if isinstance(value, float) and math.isnan(value):
                pytest.fail("NaN accepted")


@pytest.mark.backends("sqlite", "postgres", "clickhouse")
def test_fast_route_takes_the_common_payload(backend):
    repository = REPOSITORIES[backend]()
    for payload in (sample(), ScoreSchema().dump({**sample(), "id": "x", "created_at": None, "updated_at": None}),
                    sample(input="text", output=None, structured_output=False, created_at="anything")):
        fast, (record, _), _ = both_routes(repository, payload)
        assert fast is not None and fast[0] == record
