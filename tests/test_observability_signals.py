"""Observability signals of the current ("vNext") layout on every backend: logs, metrics, score
events and feedback (observability-vnext.md §2.2–2.6, §3.3, §4–§6, §8.1–8.3, §10.1, §11; the
scenario numbers of §13 in the docstrings).  The tables ``init()`` makes are compared with the
spec's DDL through each database's catalog.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from composite_store import NotFoundError, NotSupportedError, ValidationError
from composite_store.clickhouse import ObservabilityClickHouse
from composite_store.models.observability_signals import (CH_BLOOM_COLUMNS, CH_COLUMNS, CH_NULLABLE_KEY, CH_ORDER_BY,
                                                          ID_COLUMNS, PG_COLUMNS, PG_CURSOR, PG_INDEXES, sqlite_type)
from composite_store.observability.signals import SIGNAL_KINDS
from composite_store.observability.signals_clickhouse import signal_type
from composite_store.postgres import ObservabilityPG
from composite_store.sqlite import ObservabilitySQLite
from tests.conftest import MATRIX, clickhouse_client, database_url
from tests.test_hostile_calls import HOSTILE, LIBRARY_ERRORS

UTC = timezone.utc
BASE = datetime(2026, 1, 2, 12, tzinfo=UTC)
SIGNAL_TABLES = tuple(ID_COLUMNS)


def at(minutes: float) -> datetime:
    return BASE + timedelta(minutes=minutes)


@pytest.fixture(scope="module")
def signals_repository(backend, own_url):
    """The vNext observability repository of the backend under test, on a database of this
    module's own (its signal tables are created there only)."""
    family = MATRIX[backend].family
    if family == "sqlite":
        repository = ObservabilitySQLite(url=own_url, layout="vnext")
    elif family == "postgres":
        repository = ObservabilityPG(connection_string=own_url, layout="vnext")
    else:
        repository = ObservabilityClickHouse(url=own_url, layout="vnext")
    repository.init()
    yield repository
    repository.close()


@pytest.fixture
def obs(signals_repository):
    """The repository with empty tables."""
    signals_repository.dangerously_clear_all()
    return signals_repository


def family(repository) -> str:
    return {"SQLITE": "sqlite", "PG": "postgres", "CLICKHOUSE": "clickhouse"}[repository.backend.name]


def raw(repository, sql: str, params=()) -> list[tuple]:
    """Rows of raw SQL on the repository's own connection."""
    with repository.backend.connection():
        return list(repository.backend.database.execute_sql(sql, params).fetchall())


def log(log_id: str, minutes: float = 0, **fields) -> dict:
    return {"log_id": log_id, "timestamp": at(minutes), "level": "info", "message": log_id, **fields}


def ids(page, key: str) -> list[str]:
    return [item[key] for item in page.items]


# --------------------------------------------------------------------------- the layout

@pytest.mark.requires(cluster=False)  # one server's layout (the cluster's: tests/test_cluster.py)
def test_tables_equal_the_spec_ddl(obs):
    """§3.3/§4/§5/§6 (scenario 34's column part): the signal tables init() made, read from the
    catalog, have the spec's columns in order with their types, keys and indexes."""
    kind = family(obs)
    if kind == "clickhouse":
        current = obs.backend.server_features.bool_type
        for table, columns in CH_COLUMNS.items():
            expected = []
            for column, column_type in columns:
                stored = signal_type(table, column, column_type, current).split(" DEFAULT ")[0]
                if stored.startswith("Nested"):
                    expected += [(f"{column}.keys", "Array(String)"), (f"{column}.values", "Array(String)")]
                else:
                    expected.append((column, stored))
            # system.columns lists a table's columns in order (18.16 has no position column).
            assert raw(obs, "SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = %s",
                       [table]) == expected, table
            engine, sorting_key, partition_key = raw(
                obs, "SELECT engine, sorting_key, partition_key FROM system.tables WHERE database = currentDatabase() "
                     "AND name = %s", [table])[0]
            assert engine == "ReplacingMergeTree"
            assert sorting_key.replace(" ", "") == ",".join(CH_ORDER_BY[table])
            assert partition_key.replace(" ", "") == ("toDate(timestamp)" if current else "intDiv(timestamp,86400000)")
            create = raw(obs, "SELECT create_table_query FROM system.tables WHERE database = currentDatabase() "
                              "AND name = %s", [table])[0][0]
            assert ("allow_nullable_key = 1" in create) == (current and table in CH_NULLABLE_KEY)
            if current:
                indexes = raw(obs, "SELECT name, type, expr FROM system.data_skipping_indices WHERE "
                                   "database = currentDatabase() AND table = %s ORDER BY name", [table])
                assert indexes == sorted((f"idx_{column}", "bloom_filter", column)
                                         for column in CH_BLOOM_COLUMNS.get(table, ()))
    elif kind == "postgres":
        schema = obs.backend.schema_name or "public"
        udt = {"text": "text", "timestamptz": "timestamptz", "double precision": "float8", "jsonb": "jsonb",
               "text[]": "_text", "bigserial": "int8", "xid8": "xid8"}
        for table, columns in PG_COLUMNS.items():
            expected = [(column, udt[spec.split(" DEFAULT ")[0].rstrip("?")],
                         "YES" if spec.split(" DEFAULT ")[0].endswith("?") else "NO")
                        for column, spec in (*PG_CURSOR, *columns)]
            assert raw(obs, "SELECT column_name, udt_name, is_nullable FROM information_schema.columns WHERE "
                            "table_schema = %s AND table_name = %s ORDER BY ordinal_position",
                       [schema, table]) == expected, table
            key = raw(obs, "SELECT a.attname FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n "
                           "ON n.oid = c.relnamespace JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = "
                           "ANY(i.indkey) WHERE i.indisprimary AND n.nspname = %s AND c.relname = %s", [schema, table])
            assert sorted(row[0] for row in key) == sorted([ID_COLUMNS[table], "timestamp"])
            indexes = {row[0] for row in raw(obs, "SELECT indexname FROM pg_indexes WHERE schemaname = %s AND "
                                                  "tablename = %s", [schema, table])}
            assert indexes >= {f"{table}_{suffix}" for suffix, _, _ in PG_INDEXES[table]}
    else:
        for table, columns in PG_COLUMNS.items():
            expected = [("cursorId", "INTEGER", 0)] + [
                (column, sqlite_type(spec).split(" NOT NULL")[0].split(" DEFAULT")[0], int(" NOT NULL" in sqlite_type(spec)))
                for column, spec in columns]
            assert [(row[1], row[2], row[3]) for row in raw(obs, f'PRAGMA table_info("{table}")')] == expected, table
            indexes = {row[1] for row in raw(obs, f'PRAGMA index_list("{table}")') if not row[1].startswith("sqlite_")}
            assert indexes == {f"{table}_{suffix}" for suffix, _, method in PG_INDEXES[table]
                               if method is None and not suffix.endswith("cursor_idx")}
            unique = [row for row in raw(obs, f'PRAGMA index_list("{table}")') if row[2] and row[3] == "u"]
            assert [[column[2] for column in raw(obs, f'PRAGMA index_info("{unique[0][1]}")')]] == \
                   [[ID_COLUMNS[table], "timestamp"]]


def test_init_is_idempotent(obs):
    """init() again changes nothing and keeps the rows."""
    obs.batch_create_logs(logs=[log("kept")])
    obs.init()
    assert ids(obs.list_logs(), "log_id") == ["kept"]


# --------------------------------------------------------------------------- logs (scenario 14)

def test_logs_levels_order_and_retries(obs):
    """14: two levels; a level or a list of levels; default timestamp DESC, ASC reverses; the same
    log_id sent again reads once without a merge; the deprecated source record key."""
    obs.batch_create_logs(logs=[log("a", 0), {**log("b", 1), "level": "error", "message": "Error occurred",
                                                 "source": "cloud"}])
    obs.batch_create_logs(logs=[log("a", 0)])
    page = obs.list_logs()
    assert (page.total, ids(page, "log_id")) == (2, ["b", "a"])
    assert ids(obs.list_logs(filters={"level": "error"}), "message") == ["Error occurred"]
    assert obs.list_logs(filters={"level": ["info", "error"]}).total == 2
    assert ids(obs.list_logs(order_by={"direction": "ASC"}), "log_id") == ["a", "b"]
    assert obs.list_logs(filters={"level": "error"}).items[0]["execution_source"] == "cloud"
    with pytest.raises(ValidationError) as error:
        obs.list_logs(filters={"source": "x"})
    assert "execution_source" in str(error.value.fields["filters.source"])


def test_logs_every_common_filter(obs):
    """14: two logs differing in every common field; all common filters at once find one."""
    common = {"trace_id": "t1", "span_id": "s1", "entity_type": "agent", "entity_name": "n", "entity_version_id": "v",
              "parent_entity_version_id": "pv", "root_entity_version_id": "rv", "user_id": "u",
              "organization_id": "o", "experiment_id": "e", "service_name": "svc", "environment": "prod",
              "parent_entity_type": "workflow_run", "parent_entity_name": "pn", "root_entity_type": "workflow_run",
              "root_entity_name": "rn", "resource_id": "r", "run_id": "run", "session_id": "ses", "thread_id": "th",
              "request_id": "req", "execution_source": "cloud"}
    other = {key: ("tool" if key.endswith("entity_type") else value + "-x") for key, value in common.items()}
    obs.batch_create_logs(logs=[log("kept", tags=["keep"], **common), log("other", tags=["other"], **other)])
    filters = {**common, "tags": ["keep"], "timestamp": {"start": at(-1), "end": at(1)}}
    assert ids(obs.list_logs(filters=filters), "log_id") == ["kept"]
    record = obs.list_logs(filters=filters).items[0]
    assert {key: record[key] for key in common} == common and record["tags"] == ["keep"]


def test_text_that_cannot_be_stored(obs):
    """§2.6, README *Characters that cannot be stored*: unpaired surrogates are removed
    everywhere, U+0000 on PostgreSQL; the rest of the text is kept."""
    obs.batch_create_logs(logs=[log("odd", message="a\x00b\ud800c", tags=["t\ud800"], data={"k": "v\ud800"})])
    stored = obs.list_logs().items[0]
    assert stored["message"] == ("abc" if obs.backend.name == "PG" else "a\x00bc")
    assert (stored["tags"], stored["data"]) == (["t"], {"k": "v"})


def batch_and_single_records():
    """Records of every signal with values a write normalises: ints as floats, ISO text and
    sub-millisecond timestamps, tags and labels to clean, text that cannot be stored, JSON, a
    missing id, feedback values of both kinds."""
    return {
        "logs": [log("plain", tags=["a", " a ", ""], data={"k": [1, "x"]}),
                 log("odd", 1, message="a\x00b\ud800c", tags=["t\ud800"], entity_type="agent", service_name="é"),
                 {"timestamp": "2026-01-02T12:05:00.123456Z", "level": "error", "message": "no id", "tags": None}],
        "metrics": [{"metric_id": "m1", "timestamp": at(0), "name": "n", "value": 3, "labels": {" b ": " x ", "c": ""}},
                    {"metric_id": "m2", "timestamp": at(1) + timedelta(microseconds=1500), "name": "n", "value": 2.5,
                     "labels": None, "estimated_cost": 1, "provider": "p\ud800"},
                    {"timestamp": at(2), "name": "n\x00", "value": 1.0, "tags": ("x",)}],
        "scores": [{"score_id": "s1", "timestamp": at(0), "scorer_id": "r", "score": 1, "metadata": {"a": None}},
                   {"score_id": "s2", "timestamp": at(1), "scorer_id": "r", "score": 0.5, "trace_id": None}],
        "feedback": [{"feedback_id": "f1", "timestamp": at(0), "feedback_type": "t", "value": 3,
                      "review_status": "reviewed"},
                     {"feedback_id": "f2", "timestamp": at(1), "feedback_type": "t", "value": "good",
                      "feedback_source": None}],
    }


WRITERS = {"logs": ("batch_create_logs", "logs", "list_logs"),
           "metrics": ("batch_create_metrics", "metrics", "list_metrics"),
           "scores": ("batch_create_scores", "scores", "list_scores"),
           "feedback": ("batch_create_feedback", "feedbacks", "list_feedback")}


def test_batches_store_what_single_records_store(obs):
    """§2.6: a batch (checked column by column when every value is plainly valid) stores each
    record as a batch of one (checked record by record) does."""
    def stored(signal, suffix=""):
        items = getattr(obs, WRITERS[signal][2])(per_page=False, order_by={"direction": "ASC"}).items
        id_key = SIGNAL_KINDS[signal].id_key
        # Generated ids (UUIDs) differ between the two writes; given ones carry the write's suffix.
        return [{**item, id_key: None if len(item[id_key]) == 36 else item[id_key].removesuffix(suffix)}
                for item in items]

    for signal, records in batch_and_single_records().items():
        method, argument, _ = WRITERS[signal]
        id_key = SIGNAL_KINDS[signal].id_key
        getattr(obs, method)(**{argument: [{**record, id_key: record[id_key] + "-b"} if id_key in record else record
                                           for record in records]})
        in_batch = stored(signal, "-b")
        # Other ids than the batch's: a cluster's replicas drop an insert block equal to an earlier one.
        obs.dangerously_clear_all()
        for record in records:
            getattr(obs, method)(**{argument: [record]})
        single = stored(signal)
        assert in_batch == single, [(signal, index, key, mine.get(key), theirs.get(key))
                                    for index, (mine, theirs) in enumerate(zip(in_batch, single))
                                    for key in {*mine, *theirs} if mine.get(key) != theirs.get(key)]
        assert len(in_batch) == len(records)
        obs.dangerously_clear_all()


def test_timestamp_ranges(obs):
    """§8.2: inclusive bounds by default, exclusive on request."""
    obs.batch_create_logs(logs=[log("a", 0), log("b", 1), log("c", 2)])
    assert ids(obs.list_logs(filters={"timestamp": {"start": at(1)}}), "log_id") == ["c", "b"]
    assert ids(obs.list_logs(filters={"timestamp": {"start": at(0), "end": at(2), "start_exclusive": True,
                                                    "end_exclusive": True}}), "log_id") == ["b"]


def test_paging_and_ties(obs):
    """Pages, totals and has_more; equal timestamps ordered by the record key."""
    obs.batch_create_logs(logs=[log(name, 0) for name in ("c", "a", "b")])
    page = obs.list_logs(per_page=2, order_by={"direction": "ASC"})
    assert (ids(page, "log_id"), page.total, page.has_more) == (["a", "b"], 3, True)
    page = obs.list_logs(page=1, per_page=2, order_by={"direction": "ASC"})
    assert (ids(page, "log_id"), page.has_more) == (["c"], False)
    assert ids(obs.list_logs(per_page=False, order_by={"direction": "DESC"}), "log_id") == ["a", "b", "c"]
    assert obs.list_logs(per_page=0).items == [] and obs.list_logs(per_page=0).total == 3


# --------------------------------------------------------------------------- metrics (15, 19)

def test_metric_filters_and_labels(obs):
    """15, 19: context filters and tags; labels cleaned on write, filtered pair by pair;
    trace_ids, provider and model."""
    obs.batch_create_metrics(metrics=[
        {"timestamp": at(0), "name": "latency", "value": 10, "trace_id": "trace-a", "organization_id": "org-1",
         "thread_id": "thread-1", "tags": ["prod"], "labels": {" b ": " x ", "c": ""}, "provider": "openai",
         "model": "gpt", "estimated_cost": 0.01, "cost_unit": "usd", "cost_metadata": {"in": 1}},
        {"timestamp": at(1), "name": "latency", "value": 20, "trace_id": "trace-b", "labels": {"b": "y"}},
        {"timestamp": at(2), "name": "tokens", "value": 30, "trace_id": "trace-c"},
    ])
    found = obs.list_metrics(filters={"trace_id": "trace-a", "organization_id": "org-1", "thread_id": "thread-1",
                                      "tags": ["prod"]}).items
    assert [item["value"] for item in found] == [10]
    assert found[0]["labels"] == {"b": "x"} and found[0]["cost_metadata"] == {"in": 1}
    assert found[0]["estimated_cost"] == 0.01 and found[0]["cost_unit"] == "usd"
    assert [item["value"] for item in obs.list_metrics(filters={"labels": {"b": "y"}}).items] == [20]
    assert [item["value"] for item in obs.list_metrics(filters={"trace_ids": ["trace-a", "trace-c"]},
                                                       order_by={"direction": "ASC"}).items] == [10, 30]
    assert obs.list_metrics(filters={"name": ["latency"]}).total == 2
    assert obs.list_metrics(filters={"provider": "openai", "model": "gpt", "cost_unit": "usd"}).total == 1
    with pytest.raises(ValidationError) as error:
        obs.batch_create_metrics(metrics=[{"timestamp": at(0), "name": "m", "value": 1, "labels": {"a": 1}}])
    assert "metrics[0].labels.a" in error.value.fields
    with pytest.raises(ValidationError) as error:
        obs.list_metrics(filters={"trace_ids": [], "name": []})
    assert set(error.value.fields) == {"filters.trace_ids", "filters.name"}


# --------------------------------------------------------------------------- scores (20, 21, 24)

def score(score_id: str, value: float = 0.5, minutes: float = 0, **fields) -> dict:
    return {"score_id": score_id, "timestamp": at(minutes), "scorer_id": "relevance", "score": value, **fields}


def test_scores_list_get_and_aliases(obs):
    """20: list, scorer_id as a value or a list, 101 in one batch, get_score_by_id, trace_id None,
    the deprecated source, ignored keys."""
    obs.create_score(score=score("s-a", 0.85, source="manual", scorer_name="Relevance", id="x", created_at=BASE))
    obs.create_score(score={**score("s-b", 0.2), "scorer_id": "toxicity"})
    assert obs.list_scores().total == 2
    assert [item["score"] for item in obs.list_scores(filters={"scorer_id": "relevance"}).items] == [0.85]
    assert obs.list_scores(filters={"scorer_id": ["relevance", "toxicity"]}).total == 2
    first = obs.get_score_by_id(score_id="s-a")
    assert first["score_source"] == "manual" and first["execution_source"] == "manual"
    assert first["trace_id"] is None and "scorer_name" not in first and "id" not in first
    obs.batch_create_scores(scores=[score(f"score-{index}", index / 100, trace_id="t") for index in range(101)])
    assert obs.get_score_by_id(score_id="score-100")["score"] == 1.0
    assert obs.get_score_by_id(score_id="missing") is None
    assert [item["score"] for item in obs.list_scores(order_by={"field": "score"}, per_page=1).items] == [1.0]


def test_score_metadata_deep_equal(obs):
    """21: type-aware scalars, nested objects regardless of key order (18.16: only as stored),
    no partial match, {} no filter, rows without metadata never match."""
    obs.batch_create_scores(scores=[
        score("strings", metadata={"env": "prod", "region": "us"}),
        score("typed", metadata={"count": 5, "active": True, "note": None}),
        score("nested", metadata={"config": {"retries": 2, "mode": "fast"}}),
        score("none"),
    ])

    def found(metadata):
        return sorted(ids(obs.list_scores(filters={"metadata": metadata}), "score_id"))

    assert found({"env": "prod"}) == ["strings"]
    assert found({"env": "prod", "region": "us"}) == ["strings"]
    assert found({"count": 5}) == found({"active": True}) == found({"note": None}) == ["typed"]
    assert found({"count": 6}) == found({"count": "5"}) == found({"active": 1}) == []
    assert found({"config": {"retries": 2, "mode": "fast"}}) == ["nested"]
    if obs.backend.name != "CLICKHOUSE" or obs.backend.server_features.json_functions:
        assert found({"config": {"mode": "fast", "retries": 2}}) == ["nested"]
    assert found({"config": {"retries": 2}}) == []
    assert found({}) == ["nested", "none", "strings", "typed"]


def test_score_retries_rewrites_and_deletes(obs):
    """24: a re-sent score_id reads once; rewritten with a later timestamp reads as the new row;
    delete by ids, with tenant scope, unknown ids and [] (no-ops), more than 1,000 refused."""
    obs.batch_create_scores(scores=[score("s1", 0.1), score("s1", 0.1), score("s2", 0.2, organization_id="org-1"),
                                    score("s3", 0.3, organization_id="org-2")])
    obs.batch_create_scores(scores=[score("s1", 0.1)])
    assert obs.list_scores().total == 3
    obs.create_score(score=score("s1", 0.9, minutes=5))
    assert obs.list_scores().total == 3
    assert obs.get_score_by_id(score_id="s1")["score"] == 0.9
    obs.delete_scores(score_ids=["s2", "s3"], organization_id="org-1")
    assert sorted(ids(obs.list_scores(), "score_id")) == ["s1", "s3"]
    obs.delete_scores(score_ids=["unknown"])
    obs.delete_scores(score_ids=[])
    obs.delete_scores(score_ids=["s1"])
    assert ids(obs.list_scores(), "score_id") == ["s3"]
    with pytest.raises(ValidationError) as error:
        obs.delete_scores(score_ids=[f"id-{index}" for index in range(1001)])
    assert "score_ids" in error.value.fields


# --------------------------------------------------------------------------- feedback (25, 27)

def feedback(feedback_id: str, value, minutes: float = 0, **fields) -> dict:
    return {"feedback_id": feedback_id, "timestamp": at(minutes), "feedback_type": "rating", "value": value, **fields}


def test_feedback_values_sources_and_actor(obs):
    """25: values numbers or strings, feedback_source and its source alias, the legacy user_id
    actor, trace_id None, a re-sent id reads once, deletes as for scores."""
    obs.create_feedback(feedback=feedback("f1", 1, feedback_source="user", source_id="source-1"))
    obs.create_feedback(feedback=feedback("f2", "great", minutes=1, source="system", user_id="u"))
    assert obs.list_feedback().total == 2
    user = obs.list_feedback(filters={"feedback_source": "user"}).items
    assert [(item["value"], item["source_id"], item["trace_id"]) for item in user] == [(1, "source-1", None)]
    second = obs.list_feedback(filters={"feedback_user_id": "u"}).items[0]
    assert (second["value"], second["feedback_source"], second["execution_source"]) == ("great", "system", "system")
    assert (second["feedback_user_id"], second["user_id"]) == ("u", None)
    assert obs.list_feedback(filters={"user_id": "u"}).total == 1  # the legacy actor filter
    obs.batch_create_feedback(feedbacks=[feedback("f3", 4, minutes=2, span_id="sp", comment="ok",
                                                  metadata={"k": "v"}), feedback("f3", 4, minutes=2)])
    obs.create_feedback(feedback=feedback("f1", 1, feedback_source="user", source_id="source-1"))
    page = obs.list_feedback(order_by={"direction": "ASC"})
    assert ids(page, "feedback_id") == ["f1", "f2", "f3"]
    obs.delete_feedback(feedback_ids=["f1", "f2"], resource_id="none")
    assert obs.list_feedback().total == 3
    obs.delete_feedback(feedback_ids=["f1", "f2"])
    assert ids(obs.list_feedback(), "feedback_id") == ["f3"]


def test_feedback_review_status(obs):
    """27: needs-review by default; updated to reviewed and found by the filter (SQL databases);
    unknown id NotFoundError, bad status a validation error; ClickHouse: NotSupportedError."""
    obs.create_feedback(feedback=feedback("f1", 5))
    assert obs.list_feedback().items[0]["review_status"] == "needs-review"
    with pytest.raises(ValidationError) as error:
        obs.update_feedback_review_status(feedback_id="f1", review_status="done")
    assert error.value.fields["review_status"] == ["reviewStatus must be one of: needs-review, reviewed"]
    if obs.backend.name == "CLICKHOUSE":
        with pytest.raises(NotSupportedError):
            obs.update_feedback_review_status(feedback_id="f1", review_status="reviewed")
        assert obs.list_feedback(filters={"review_status": "reviewed"}).total == 0
        assert obs.list_feedback(filters={"review_status": "needs-review"}).total == 1
        return
    updated = obs.update_feedback_review_status(feedback_id="f1", review_status="reviewed")
    assert (updated["feedback_id"], updated["review_status"]) == ("f1", "reviewed")
    assert ids(obs.list_feedback(filters={"review_status": "reviewed"}), "feedback_id") == ["f1"]
    with pytest.raises(NotFoundError) as error:
        obs.update_feedback_review_status(feedback_id="missing", review_status="reviewed")
    assert error.value.details == {"feedback_id": "missing"}


# --------------------------------------------------------------------------- bad input

def test_bad_records_name_every_field_and_write_nothing(obs):
    """§2: a batch with bad records raises one ValidationError naming each bad field; nothing
    is written."""
    with pytest.raises(ValidationError) as error:
        obs.batch_create_logs(logs=[log("good"), {"timestamp": "yesterday", "level": "loud", "message": 3,
                                                  "tags": [3], "colour": "red"}])
    assert set(error.value.fields) == {"logs[1].timestamp", "logs[1].level", "logs[1].message", "logs[1].tags[0]",
                                       "logs[1].colour"}
    with pytest.raises(ValidationError) as error:
        obs.batch_create_metrics(metrics=[{"timestamp": at(0), "name": "m", "value": float("nan")}])
    assert set(error.value.fields) == {"metrics[0].value"}
    with pytest.raises(ValidationError) as error:
        obs.create_score(score={"timestamp": at(0), "score": True, "entity_type": "planet"})
    assert set(error.value.fields) == {"score", "scorer_id", "entity_type"}
    with pytest.raises(ValidationError) as error:
        obs.create_feedback(feedback={"timestamp": at(0), "feedback_type": "rating", "value": [1],
                                      "review_status": "done"})
    assert set(error.value.fields) == {"value", "review_status"}
    assert obs.list_logs().total == obs.list_metrics().total == obs.list_scores().total == 0
    with pytest.raises(ValidationError) as error:
        obs.list_scores(filters={"colour": "red", "source": "x"}, order_by={"field": "value"}, mode="page", limit=5)
    assert set(error.value.fields) == {"filters.colour", "filters.source", "order_by.field", "limit"}
    assert "score_source or execution_source" in error.value.fields["filters.source"][0]


# --------------------------------------------------------------------------- iteration (issue 21)

def by_key(records: list[dict], key: str) -> list[dict]:
    """Records in the iteration's order: by id, then ``timestamp`` (the rows of one id on
    PostgreSQL and SQLite)."""
    return sorted(records, key=lambda record: (record[key], record["timestamp"]))


@pytest.mark.parametrize("chunk_size", [3, 5])
def test_iteration_over_ids_written_several_times(obs, chunk_size):
    """Issue 21: iterating equals the list (``per_page=False``) in id order, with and without
    filters, where ids have several rows (written again with later timestamps, never merged;
    one id has nine): on ClickHouse the first ``chunk_size`` rows after a position then hold
    fewer ids than a chunk, yet only the last chunk comes back short."""
    run = uuid.uuid4().hex[:8]  # new ids each time: a cluster's replicas drop an insert block equal to an earlier one
    obs.batch_create_logs(logs=[log(f"{run}{index:02d}", 0, tags=["even" if index % 2 == 0 else "odd"])
                                for index in range(20)])
    obs.batch_create_logs(logs=[log(f"{run}{index:02d}", 1, level="error" if index % 4 == 1 else "info",
                                    message=f"again {index}") for index in range(20) if index % 3])
    obs.batch_create_logs(logs=[log(f"{run}07", minutes, message=f"late {minutes}") for minutes in range(2, 9)])
    for filters in (None, {"level": "error"}, {"tags": ["even"]}, {"level": "info", "timestamp": {"end": at(1)}}):
        listed = by_key(obs.list_logs(filters=filters, per_page=False).items, "log_id")
        assert listed, filters
        assert list(obs.iter_logs(filters=filters, chunk_size=chunk_size)) == listed, filters
    obs.batch_create_metrics(metrics=[
        {"metric_id": f"{run}{index:02d}", "timestamp": at(minutes), "name": "latency", "value": index + minutes,
         "labels": {"zone": "a" if (index + minutes) % 2 else "b"}}
        for minutes in (0, 1, 2) for index in range(12)])
    for filters in (None, {"labels": {"zone": "a"}}):
        listed = by_key(obs.list_metrics(filters=filters, per_page=False).items, "metric_id")
        assert list(obs.iter_metrics(filters=filters, chunk_size=chunk_size)) == listed, filters


@pytest.fixture(scope="module")
def delta_repository(backend, own_url):
    """The repository with ``delta_polling=True`` (on the module's database)."""
    family = MATRIX[backend].family
    if family == "sqlite":
        repository = ObservabilitySQLite(url=own_url, layout="vnext", delta_polling=True)
    elif family == "postgres":
        repository = ObservabilityPG(connection_string=own_url, layout="vnext", delta_polling=True)
    else:
        repository = ObservabilityClickHouse(url=own_url, layout="vnext", delta_polling=True)
    repository.init()
    yield repository
    repository.close()


def eventually(read, done, timeout: float = 60):
    """``read()`` until ``done(result)``: PostgreSQL shows a row to delta polling once every
    transaction older than it has ended, and other tests' transactions run on the same server."""
    deadline = time.monotonic() + timeout
    result = read()
    while not done(result) and time.monotonic() < deadline:
        time.sleep(0.2)
        result = read()
    return result


def test_delta_polling(delta_repository):
    """29-31 (signal parts): the page's cursor and the head; a delta page per limit in write
    order with has_more; filters honoured for each signal; bad cursors and arguments.  18.16:
    not supported (no delta tables)."""
    obs = delta_repository
    obs.dangerously_clear_all()
    if obs.backend.name == "CLICKHOUSE" and not obs.backend.server_features.bool_type:
        assert "delta-polling" not in obs.get_features() and obs.list_logs().delta_cursor is None
        with pytest.raises(NotSupportedError):
            obs.list_logs(mode="delta")
        return
    assert "delta-polling" in obs.get_features()
    cursor = obs.list_metrics(filters={"name": ["m"]}).delta_cursor
    head = obs.list_metrics(mode="delta")
    assert (head.items, head.limit, head.has_more, isinstance(head.delta_cursor, str)) == ([], 10, False, True)
    for value in (10, 20):
        obs.batch_create_metrics(metrics=[{"timestamp": at(0), "name": "m", "value": value}])
        time.sleep(0.01)  # ClickHouse's fallback cursor orders by the millisecond of ingest first
    obs.batch_create_metrics(metrics=[{"timestamp": at(0), "name": "other", "value": 30}])
    eventually(lambda: obs.list_metrics(mode="delta", after=cursor, filters={"name": ["m"]}),
               lambda page: len(page.items) == 2)  # both writes' transactions below the horizon
    first = obs.list_metrics(mode="delta", after=cursor, limit=1, filters={"name": ["m"]})
    assert ([item["value"] for item in first.items], first.has_more) == ([10], True)
    second = obs.list_metrics(mode="delta", after=first.delta_cursor, limit=1, filters={"name": ["m"]})
    assert ([item["value"] for item in second.items], second.has_more) == ([20], False)

    start = {name: getattr(obs, f"list_{name}")().delta_cursor for name in ("logs", "scores", "feedback")}
    obs.batch_create_logs(logs=[log("info"), {**log("bad"), "level": "error"}])
    obs.batch_create_scores(scores=[score("s1"), {**score("s2"), "scorer_id": "toxicity"}])
    obs.batch_create_feedback(feedbacks=[feedback("f1", 1), {**feedback("f2", 0), "feedback_type": "thumbs"}])
    expected = {"logs": ({"level": "error"}, "log_id", ["bad"]), "scores": ({"scorer_id": "relevance"}, "score_id", ["s1"]),
                "feedback": ({"feedback_type": "thumbs"}, "feedback_id", ["f2"])}
    for name, (filters, key, found) in expected.items():
        page = eventually(lambda: getattr(obs, f"list_{name}")(mode="delta", after=start[name], filters=filters),
                          lambda page: len(page.items) == len(found))
        assert ids(page, key) == found, name
    with pytest.raises(ValidationError) as error:
        obs.list_logs(mode="delta", after="abc")
    assert error.value.fields == {"after": ["Invalid observability delta cursor"]}
    with pytest.raises(ValidationError) as error:
        obs.list_logs(mode="delta", page=1, limit=101)
    assert set(error.value.fields) == {"page", "limit"}
    with pytest.raises(ValidationError) as error:
        obs.list_logs(mode="page", limit=5)
    assert error.value.fields == {"limit": ["limit is only allowed in delta mode"]}


def test_delta_mode_without_delta_polling(obs):
    """29: delta polling is off: mode="delta" is not supported."""
    with pytest.raises(NotSupportedError) as error:
        obs.list_logs(mode="delta")
    assert "does not support observability delta polling" in str(error.value)


# --------------------------------------------------------------------------- traces and retention

def test_batch_delete_traces_removes_their_signals(obs):
    """12 (signals part): deleting a trace removes its signals, leaves other traces' and
    trace-less signals."""
    obs.batch_create_logs(logs=[log("in-t", trace_id="t"), log("other", trace_id="u"), log("no-trace")])
    obs.batch_create_metrics(metrics=[{"timestamp": at(0), "name": "m", "value": 1, "trace_id": "t"}])
    obs.batch_create_scores(scores=[score("in-t", trace_id="t"), score("kept", trace_id="u")])
    obs.create_feedback(feedback=feedback("in-t", 1, trace_id="t"))
    obs.batch_delete_traces(trace_ids=["t"])
    assert sorted(ids(obs.list_logs(), "log_id")) == ["no-trace", "other"]
    assert obs.list_metrics().total == obs.list_feedback().total == 0
    assert ids(obs.list_scores(), "score_id") == ["kept"]


@pytest.mark.requires(family="clickhouse", current_clickhouse=True)
def test_retention_ttl_on_signal_tables(own_url):
    """32 (signals part): retention={"logs": 3, "scores": 5} gives those tables TTL timestamp + N
    days; signals left out keep no TTL."""
    repository = ObservabilityClickHouse(url=own_url, layout="vnext", retention={"logs": 3, "scores": 5})
    try:
        repository.init()
        queries = {row[0]: row[1] for row in raw(repository, "SELECT name, create_table_query FROM system.tables "
                                                             "WHERE database = currentDatabase()")}
        assert "TTL timestamp + toIntervalDay(3)" in queries["mastra_log_events"]
        assert "TTL timestamp + toIntervalDay(5)" in queries["mastra_score_events"]
        assert "TTL" not in queries["mastra_metric_events"]
    finally:
        ObservabilityClickHouse(url=own_url, layout="vnext", retention={"logs": None, "scores": None}).init()
        repository.close()


def test_features(obs):
    """§11: get_features() lists metrics and logs first; no delta polling unless asked for."""
    features = obs.get_features()
    assert features[:2] == ("metrics", "logs")
    if not obs.delta_polling:
        assert "delta-polling" not in features


@pytest.mark.requires(family="clickhouse")
@pytest.mark.requires(cluster=False)  # one server's layout (the cluster's: tests/test_cluster.py)
def test_signal_tables_of_another_engine_need_migration(backend_url):
    """35 (signals part): a MergeTree mastra_log_events makes init() raise MIGRATION_REQUIRED;
    migrate_spans() copies it into the current layout (empty ids filled) and init() passes."""
    name = f"sig_migration_{uuid.uuid4().hex[:8]}"
    client = clickhouse_client(backend_url)
    client.execute(f"CREATE DATABASE {name}")
    url = database_url(backend_url, name)
    try:
        repository = ObservabilityClickHouse(url=url, layout="vnext")
        kind = "DateTime64(3, 'UTC')" if "chdb" in url or repository_is_current(repository) else "Int64"
        raw(repository, f"CREATE TABLE mastra_log_events (timestamp {kind}, logId String, level String, message String) "
                        "ENGINE = MergeTree ORDER BY timestamp")
        stamp = "toDateTime64('2026-01-02 12:00:00', 3, 'UTC')" if kind != "Int64" else "1767355200000"
        # INSERT … SELECT: the driver waits for the data of an INSERT … VALUES.
        raw(repository, f"INSERT INTO mastra_log_events SELECT {stamp}, 'kept', 'info', 'old' "
                        f"UNION ALL SELECT {stamp}, '', 'warn', 'no id'")
        with pytest.raises(NotSupportedError) as error:
            repository.init()
        assert error.value.details["code"] == "MIGRATION_REQUIRED"
        assert error.value.details["tables"] == [{"table": "mastra_log_events", "engine": "MergeTree"}]
        repository.migrate_spans()
        repository.init()
        logs = repository.list_logs(order_by={"direction": "ASC"}).items
        assert sorted(item["message"] for item in logs) == ["no id", "old"]
        assert all(item["log_id"] for item in logs) and "kept" in [item["log_id"] for item in logs]
        repository.close()
    finally:
        client.execute(f"DROP DATABASE IF EXISTS {name}")


def repository_is_current(repository) -> bool:
    with repository.backend.connection():
        return repository.backend.server_features.bool_type


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_strings(obs, text):
    """README *Concurrency, faults, bad input*: a hostile string in any id, filter, label key or
    record value gets the library's own answer (or success), never a bare database failure."""
    calls = [
        lambda: obs.batch_create_logs(logs=[log(text, message=text, tags=[text], data={text: text}, trace_id=text)]),
        lambda: obs.batch_create_metrics(metrics=[{"timestamp": at(0), "name": text, "value": 1, "labels": {text: text},
                                                   "model": text}]),
        lambda: obs.create_score(score=score(text, scorer_id=text, metadata={text: text, "n": {text: [text]}})),
        lambda: obs.create_feedback(feedback=feedback(text, text, comment=text, feedback_user_id=text)),
        lambda: obs.list_logs(filters={"trace_id": text, "tags": [text], "level": "info", "user_id": text}),
        lambda: obs.list_metrics(filters={"labels": {text: text}, "name": [text], "trace_ids": [text]}),
        lambda: obs.list_scores(filters={"metadata": {text: text, "n": {text: [text]}}, "scorer_id": text}),
        lambda: obs.list_feedback(filters={"feedback_user_id": text, "feedback_type": [text]}),
        lambda: obs.get_score_by_id(score_id=text),
        lambda: obs.update_feedback_review_status(feedback_id=text, review_status="reviewed"),
        lambda: obs.delete_scores(score_ids=[text], organization_id=text),
        lambda: obs.delete_feedback(feedback_ids=[text], resource_id=text),
    ]
    for call in calls:
        try:
            call()
        except LIBRARY_ERRORS:
            pass
