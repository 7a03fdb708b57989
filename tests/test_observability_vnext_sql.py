"""The current ("vNext") observability layout on PostgreSQL and SQLite (observability-vnext.md §5–§7,
§10.2, §11, §13 scenarios by number): the layout option, the tables init() creates against the
spec's DDL, event-sourced tracing (running traces visible), PostgreSQL's daily partitions (native
and pg_partman, created ahead and on demand) and prune().

The tracing scenarios that read alike under insert-only and event-sourced writes are ClickHouse's
own tests (tests/test_observability_vnext.py), imported here: they run on this module's ``vnext``
fixture, on SQLite and PostgreSQL.  Each backend's vnext tables live in a database (PostgreSQL: a
schema) of this module's own (``own_url``), apart from the legacy layout of the shared database.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from composite_store import NotSupportedError, ValidationError
from composite_store.models.observability_vnext_sql import SPAN_EVENT_COLUMNS, SPAN_EVENT_INDEXES, pg_column_sql
from composite_store.observability import SPAN_KEYS
from composite_store.postgres import ObservabilityPG, PostgresStore
from composite_store.sqlite import ObservabilitySQLite, SQLiteStore
from composite_store.values import utc_now
from tests.servers import create_postgres_database
from tests.test_observability_vnext import (BASE, at, child, ids, span, test_batch_delete_traces,  # noqa: F401
                                            test_filters_on_the_root, test_get_branch, test_get_spans,
                                            test_light_reads_and_input_preview, test_list_branches,
                                            test_list_branches_pages_and_filters, test_metadata_round_trip_and_filters,
                                            test_order_status_and_child_errors,
                                            test_scope_source_and_every_equality_filter,
                                            test_span_keys_timestamps_events_and_tags)

pytestmark = pytest.mark.backends("sqlite", "postgres")
UTC = timezone.utc
SIGNAL_TABLES = ("mastra_metric_events", "mastra_log_events", "mastra_score_events", "mastra_feedback_events")


def open_vnext(url: str, **options):
    """The vnext observability repository of the backend of ``url``."""
    if url.startswith("sqlite"):
        return ObservabilitySQLite(url=url, layout="vnext", **options)
    return ObservabilityPG(connection_string=url, layout="vnext", **options)


def run_sql(repository, sql: str, params=()) -> list[tuple]:
    """Run SQL on the repository's own connection."""
    with repository.backend.connection():
        cursor = repository.backend.database.execute_sql(sql, params)
        return cursor.fetchall() if cursor.description else []


@pytest.fixture(scope="module")
def vnext_repository(own_url):
    repository = open_vnext(own_url)
    repository.init()
    yield repository
    repository.close()


@pytest.fixture
def vnext(vnext_repository):
    """The vnext observability repository of the backend under test, emptied."""
    vnext_repository.dangerously_clear_all()
    return vnext_repository


@pytest.fixture
def postgres(vnext):
    """:func:`vnext`, on PostgreSQL only."""
    if vnext.backend.name != "PG":
        pytest.skip("PostgreSQL only")
    return vnext


# --------------------------------------------------------------------------- the layout option (§1)

def test_layout_option(own_url, backend):
    """Keyword or URL, whole stores pass it, legacy by default, repr shows it; vnext-only
    keywords with the legacy layout and bad values are validation errors naming them."""
    joiner = "&" if "?" in own_url else "?"
    public = ObservabilitySQLite if backend == "sqlite" else ObservabilityPG
    key = "url" if backend == "sqlite" else "connection_string"
    vnext = public(**{key: own_url}, layout="vnext")
    by_url = public(**{key: own_url + f"{joiner}layout=vnext"})
    legacy = public(**{key: own_url})
    assert (vnext.layout, by_url.layout, legacy.layout) == ("vnext", "vnext", "legacy")
    assert all(isinstance(repository, public) for repository in (vnext, by_url, legacy))
    assert repr(vnext).startswith(f"{public.__name__}(") and "layout='vnext'" in repr(vnext)
    assert "layout='legacy'" in repr(legacy)
    store_class = SQLiteStore if backend == "sqlite" else PostgresStore
    store = store_class(**{key: own_url + f"{joiner}layout=vnext"})
    assert store.get_store("observability").layout == "vnext"
    error_name = "SQLITE" if backend == "sqlite" else "PG"
    with pytest.raises(ValidationError) as error:
        public(**{key: own_url}, layout="v2")
    assert error.value.id == f"STORAGE_{error_name}_INIT_INVALID_INPUT" and "layout" in error.value.fields
    with pytest.raises(ValidationError) as error:
        public(**{key: own_url}, delta_polling=True)
    assert "delta_polling" in error.value.fields and error.value.id == f"STORAGE_{error_name}_INIT_INVALID_INPUT"
    if backend == "postgres":
        with pytest.raises(ValidationError) as error:
            public(**{key: own_url}, partitioning={"mode": "native"})
        assert "partitioning" in error.value.fields
        with pytest.raises(ValidationError) as error:
            public(**{key: own_url}, layout="vnext", partitioning={"mode": "daily", "future_days": -1, "x": 1})
        assert set(error.value.fields) == {"partitioning.mode", "partitioning.future_days", "partitioning.x"}
    else:
        with pytest.raises(ValidationError) as error:
            public(**{key: own_url}, layout="vnext", partitioning={"mode": "native"})
        assert "partitioning" in error.value.fields
    for repository in (vnext, by_url, legacy, store):
        repository.close()


def test_strategy_features_and_updates(vnext):
    """1 (S/P): event-sourced strategy, features of §11 (fresh objects), updates refused."""
    assert vnext.observability_strategy == {"preferred": "event-sourced", "supported": ["event-sourced"]}
    assert vnext.observability_strategy is not vnext.observability_strategy
    assert vnext.get_features() == ("metrics", "logs", "entity-type-discovery", "entity-name-discovery",
                                    "service-name-discovery", "environment-discovery", "tag-discovery",
                                    "metric-discovery", "feedback")
    name = vnext.backend.name
    with pytest.raises(NotSupportedError) as error:
        vnext.update_span(trace_id="t", span_id="s", updates={"name": "x"})
    assert str(error.value) == "This storage provider does not support updating spans"
    assert error.value.id == f"STORAGE_{name}_UPDATE_SPAN_NOT_SUPPORTED"
    with pytest.raises(NotSupportedError) as error:
        vnext.batch_update_spans(records=[])
    assert error.value.id == f"STORAGE_{name}_BATCH_UPDATE_SPANS_NOT_SUPPORTED"
    assert vnext.supports_concurrent_updates() is True


# --------------------------------------------------------------------------- event-sourced tracing

def test_running_trace_is_visible(vnext):
    """2 (S/P): a root without an end reads unended and ``running``, its child listed."""
    root = span("root-span", span_type="workflow_run", name="workflow-run", ended_at=None)
    vnext.batch_create_spans(records=[root, child(root, "child-span", started_at=at(0.5), ended_at=at(0.7))])
    assert [s["span_id"] for s in vnext.get_trace(trace_id=root["trace_id"])["spans"]] == ["root-span", "child-span"]
    found = vnext.get_root_span(trace_id=root["trace_id"])
    assert (found["name"], found["parent_span_id"], found["ended_at"]) == ("workflow-run", None, None)
    listed = vnext.list_traces()
    assert listed.total == 1 and listed.items[0]["status"] == "running" and listed.items[0]["ended_at"] is None
    assert ids(vnext.list_traces(filters={"status": "running"})) == [root["trace_id"]]
    assert ids(vnext.list_traces(filters={"status": "success"})) == []
    assert ids(vnext.list_traces(filters={"ended_at": {"start": BASE}})) == []  # no end to match
    assert vnext.get_trace_light(trace_id=root["trace_id"])["spans"][0]["ended_at"] is None


def test_end_rows_replace_running_ones(vnext):
    """13 (S/P): a running root then its ended version reads ended, one ``success`` row; a
    zero-duration span written pending then ended reads ended; a resent batch reads once."""
    vnext.create_span(span=span("late", ended_at=None))
    vnext.create_span(span=span("late", ended_at=at(30)))
    assert vnext.get_span(trace_id="trace-late", span_id="late")["ended_at"] == at(30)
    page = vnext.list_traces()
    assert page.total == 1 and [(row["status"], row["ended_at"]) for row in page.items] == [("success", at(30))]
    vnext.create_span(span=span("zero", ended_at=None))
    vnext.create_span(span=span("zero", ended_at=BASE))  # same key (endedAt = startedAt)
    assert vnext.get_span(trace_id="trace-zero", span_id="zero")["ended_at"] == BASE
    assert vnext.list_traces(filters={"trace_id": "trace-zero"}).items[0]["status"] == "success"
    # In one batch the ended row of a key beats its pending row, whatever the order.
    vnext.batch_create_spans(records=[span("both", ended_at=BASE), span("both", ended_at=None)])
    assert vnext.get_span(trace_id="trace-both", span_id="both")["ended_at"] == BASE
    # Otherwise the first stored row of a key wins (§7 duplicates).
    vnext.batch_create_spans(records=[span("dup", name="first"), span("dup", name="second")])
    vnext.create_span(span=span("dup", name="third"))
    assert vnext.get_span(trace_id="trace-dup", span_id="dup")["name"] == "first"


def test_same_batch_twice_reads_once(vnext):
    """13: the same 1,000-span batch twice, each span once; totals unchanged."""
    root = span("big", trace_id="big")
    batch = [root] + [child(root, f"s{n:04}", span_type="generic", started_at=at(n / 1000)) for n in range(1, 1000)]
    vnext.batch_create_spans(records=batch)
    vnext.batch_create_spans(records=batch)
    assert len(vnext.get_trace(trace_id="big")["spans"]) == 1000
    assert vnext.list_traces().total == 1 and vnext.list_branches().total == 1
    assert run_sql(vnext, 'SELECT count(*) FROM ' + vnext.table("mastra_span_events"))[0][0] == 1000
    assert vnext.count_rows()["mastra_span_events"] == 1000
    iterated = list(vnext.iter_spans(trace_id="big", chunk_size=300))
    assert len(iterated) == 1000 and tuple(iterated[0]) == SPAN_KEYS
    assert [trace["trace_id"] for trace in vnext.iter_traces()] == ["big"]


def test_current_root_is_the_latest(vnext):
    """§5: a trace's root is its root row written last (a resumed run opens a new root row)."""
    vnext.create_span(span=span("first-root", trace_id="resumed", ended_at=at(5)))
    vnext.create_span(span=span("second-root", trace_id="resumed", started_at=at(10), ended_at=None))
    assert vnext.get_root_span(trace_id="resumed")["span_id"] == "second-root"
    page = vnext.list_traces()
    assert page.total == 1 and page.items[0]["span_id"] == "second-root" and page.items[0]["status"] == "running"


def test_order_by_ended_at_ranks_running_roots(vnext):
    """§7: ``ended_at`` DESC lists running roots first, ASC last; ties by trace id."""
    vnext.batch_create_spans(records=[span("a", ended_at=at(5)), span("b", ended_at=None), span("c", ended_at=at(9))])
    assert ids(vnext.list_traces(order_by={"field": "ended_at", "direction": "DESC"})) == [
        "trace-b", "trace-c", "trace-a"]
    assert ids(vnext.list_traces(order_by={"field": "ended_at", "direction": "ASC"})) == [
        "trace-a", "trace-c", "trace-b"]


def test_ten_thousand_spans_in_one_call(vnext):
    """100 traces of 100 spans in one call, sent twice: all or nothing, each once."""
    batch = []
    for trace in range(100):
        root = span(f"root-{trace}", trace_id=f"bulk-{trace}", started_at=at(trace))
        batch += [root] + [child(root, f"s-{trace}-{n}", span_type="model_step", started_at=at(trace + n / 100))
                           for n in range(1, 100)]
    vnext.batch_create_spans(records=batch)
    vnext.batch_create_spans(records=batch)
    assert vnext.list_traces(per_page=False).total == 100
    assert vnext.count_rows() == {"mastra_span_events": 10_000, "mastra_log_events": 0, "mastra_metric_events": 0,
                                  "mastra_score_events": 0, "mastra_feedback_events": 0}
    with pytest.raises(ValidationError):
        vnext.batch_create_spans(records=[span("ok-1"), {"trace_id": "x"}])
    assert vnext.get_span(trace_id="trace-ok-1", span_id="ok-1") is None


def test_batch_delete_traces_reaches_the_signals(vnext):
    """12: logs, metrics, scores and feedback of the listed traces go with the spans, in scope."""
    if not hasattr(vnext, "batch_create_logs"):
        pytest.skip("the signal methods are not part of this build")
    vnext.batch_create_spans(records=[span("t-root", trace_id="t", organization_id="org-1"),
                                      span("o-root", trace_id="other")])
    when = utc_now()
    vnext.batch_create_logs(logs=[{"timestamp": when, "level": "info", "message": "m", "trace_id": trace_id,
                                   "organization_id": org} for trace_id, org in
                                  (("t", "org-1"), ("t", "org-2"), ("other", None), (None, None))])
    vnext.batch_create_metrics(metrics=[{"timestamp": when, "name": "n", "value": 1, "trace_id": "t",
                                         "organization_id": "org-1"}])
    vnext.batch_delete_traces(trace_ids=["t"], organization_id="org-1")
    assert vnext.get_trace(trace_id="t") is None and vnext.get_trace(trace_id="other") is not None
    assert sorted((row["trace_id"] or "", row["organization_id"] or "") for row in
                  vnext.list_logs(per_page=False).items) == [("", ""), ("other", ""), ("t", "org-2")]
    assert vnext.list_metrics().total == 0


# --------------------------------------------------------------------------- the tables init() creates

def _pg_columns(repository, table: str) -> list[str]:
    """The columns of a table as the framework's DDL writes them, from the catalog."""
    rows = run_sql(repository, """
        SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid)
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum""",
                   (repository.backend.schema_name or "public", table))
    columns = []
    for name, kind, not_null, default in rows:
        if kind == "bigint" and default and default.startswith("nextval("):
            kind, default = "bigserial", None  # how the catalog shows a bigserial
        kind = {"text[]": "text[]", "timestamp with time zone": "timestamptz"}.get(kind, kind)
        columns.append(f'"{name}" {kind}' + (" NOT NULL" if not_null else "")
                       + (f" DEFAULT {default}" if default else ""))
    return columns


def test_postgres_tables_equal_the_spec(postgres):
    """34 P / §5: span_events' columns (names, types, NOT NULL, defaults, order), key, partition
    key and the 14 named indexes; the discovery cache; the signal tables partitioned alike."""
    expected = [pg_column_sql(column) for column in SPAN_EVENT_COLUMNS]
    expected = [text.replace("'{}'", "'{}'::text[]") if text.startswith('"tags"') else text for text in expected]
    assert _pg_columns(postgres, "mastra_span_events") == expected
    schema = postgres.backend.schema_name
    key = run_sql(postgres, """SELECT pg_get_constraintdef(o.oid) FROM pg_constraint o
        JOIN pg_class c ON c.oid = o.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %s AND c.relname = 'mastra_span_events' AND o.contype = 'p'""", (schema,))
    assert key == [('PRIMARY KEY ("traceId", "spanId", "endedAt")',)]
    partition_keys = dict(run_sql(postgres, """SELECT c.relname, pg_get_partkeydef(c.oid) FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'p'""", (schema,)))
    assert partition_keys["mastra_span_events"] == 'RANGE ("endedAt")'
    for table in SIGNAL_TABLES:
        if table in partition_keys:
            assert partition_keys[table] == "RANGE (\"timestamp\")", table
    indexes = dict(run_sql(postgres, "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s "
                                     "AND tablename = 'mastra_span_events'", (schema,)))
    for index in SPAN_EVENT_INDEXES:
        definition = indexes[index.name]
        expected_sql = (f'CREATE INDEX {index.name} ON ONLY {schema}.mastra_span_events USING {index.using or "btree"} '
                        + index.columns + (f" WHERE ({index.where})" if index.where else ""))
        assert definition.replace('"', "") == expected_sql.replace('"', ""), definition  # PG quotes as needed
    assert set(indexes) == {index.name for index in SPAN_EVENT_INDEXES} | {"mastra_span_events_pkey"}
    assert _pg_columns(postgres, "mastra_observability_discovery") == [
        '"cacheKey" text NOT NULL', '"refreshedAt" timestamptz NOT NULL',
        "\"values\" jsonb NOT NULL DEFAULT '[]'::jsonb"]


def test_sqlite_tables_mirror_postgres(vnext):
    """§6: same names and column order, SQLite types, the key as UNIQUE, the btree indexes."""
    if vnext.backend.name != "SQLITE":
        pytest.skip("SQLite only")
    columns = run_sql(vnext, 'PRAGMA table_info("mastra_span_events")')
    expected = [column for column in SPAN_EVENT_COLUMNS if column.pg_type != "xid8"]
    assert [row[1] for row in columns] == [column.name for column in expected]
    types = {row[1]: (row[2], bool(row[3]), row[4]) for row in columns}
    assert types["cursorId"][0] == "INTEGER" and types["isPending"] == ("INTEGER", True, "0")
    assert types["startedAt"] == ("TEXT", True, None) and types["tags"] == ("TEXT", True, "'[]'")
    assert types["metadataSearch"] == ("TEXT", True, "'{}'") and types["input"] == ("TEXT", False, None)
    sql = run_sql(vnext, "SELECT sql FROM sqlite_master WHERE name = 'mastra_span_events'")[0][0]
    assert '"cursorId" INTEGER PRIMARY KEY AUTOINCREMENT' in sql and 'UNIQUE ("traceId", "spanId", "endedAt")' in sql
    indexes = {row[0] for row in run_sql(vnext, "SELECT name FROM sqlite_master WHERE type = 'index' AND "
                                                "tbl_name = 'mastra_span_events' AND sql IS NOT NULL")}
    assert indexes == {index.name for index in SPAN_EVENT_INDEXES
                       if index.using != "gin" and not index.name.endswith("_cursor_idx")}


# --------------------------------------------------------------------------- partitions (PostgreSQL) and prune

def _partitions(repository, table: str) -> list[str]:
    return sorted(row[0] for row in run_sql(repository, """SELECT c.relname FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
        JOIN pg_namespace n ON n.oid = p.relnamespace WHERE n.nspname = %s AND p.relname = %s""",
                                            (repository.backend.schema_name or "public", table)))


def test_native_partitions_on_demand_and_prune(postgres):
    """33 P: children yesterday … today+14 (16 per table), a span ended in 2024 stored on demand,
    prune drops only partitions wholly older than the cutoff and counts their rows, in batches."""
    today = utc_now()
    expected = [f"mastra_span_events_p{today + timedelta(days=offset):%Y%m%d}" for offset in range(-1, 15)]
    assert set(expected) <= set(_partitions(postgres, "mastra_span_events"))
    signal_tables = [row[0] for row in run_sql(postgres, "SELECT tablename FROM pg_tables WHERE schemaname = %s",
                                               (postgres.backend.schema_name,)) if row[0] in SIGNAL_TABLES]
    for table in signal_tables:
        assert len([name for name in _partitions(postgres, table) if name.startswith(table + "_p")]) >= 16, table
    old = datetime(2024, 3, 1, 10, tzinfo=UTC)
    postgres.batch_create_spans(records=[span("old-1", started_at=old, ended_at=old + timedelta(minutes=1)),
                                         span("old-2", started_at=old, ended_at=old + timedelta(days=1))])
    postgres.create_span(span=span("new", started_at=today, ended_at=today))
    assert "mastra_span_events_p20240301" in _partitions(postgres, "mastra_span_events")
    assert postgres.get_span(trace_id="trace-old-1", span_id="old-1")["ended_at"] == old + timedelta(minutes=1)
    first = postgres.prune(policies={"spans": {"max_age": "1d"}}, max_batches=1)
    assert first == [{"domain": "observability", "table": "mastra_span_events", "deleted": 1, "done": False}]
    assert postgres.get_span(trace_id="trace-old-1", span_id="old-1") is None
    rest = postgres.prune(policies={"spans": {"max_age": "1d"}})
    assert rest[0]["deleted"] == 1 and rest[0]["done"] is True
    assert postgres.get_span(trace_id="trace-new", span_id="new") is not None
    partitions = _partitions(postgres, "mastra_span_events")
    assert "mastra_span_events_p20240301" not in partitions and expected[1] in partitions
    ahead = today + timedelta(days=40)  # beyond the days made ahead: made on demand too
    postgres.create_span(span=span("ahead", started_at=ahead, ended_at=ahead))
    assert f"mastra_span_events_p{ahead:%Y%m%d}" in _partitions(postgres, "mastra_span_events")
    postgres.batch_create_metrics(metrics=[{"timestamp": old, "name": "latency", "value": 1.0},
                                           {"timestamp": today, "name": "latency", "value": 2.0}])
    assert "mastra_metric_events_p20240301" in _partitions(postgres, "mastra_metric_events")
    assert postgres.prune(policies={"metrics": {"max_age": "1d"}}) == [
        {"domain": "observability", "table": "mastra_metric_events", "deleted": 1, "done": True}]
    assert [row["value"] for row in postgres.list_metrics().items] == [2.0]
    with pytest.raises(ValidationError):
        postgres.prune(policies={"traces": {"max_age": "1d"}})


def test_sqlite_prune_deletes_in_batches(vnext):
    """33 S: prune deletes rows older than the cutoff, 1,000 per transaction."""
    if vnext.backend.name != "SQLITE":
        pytest.skip("SQLite only")
    old = datetime(2024, 3, 1, tzinfo=UTC)
    vnext.batch_create_spans(records=[span(f"o{n}", started_at=old, ended_at=old) for n in range(1500)]
                             + [span("fresh", started_at=utc_now(), ended_at=utc_now())])
    assert vnext.prune(policies={"spans": {"max_age": "1d"}}, max_batches=1) == [
        {"domain": "observability", "table": "mastra_span_events", "deleted": 1000, "done": False}]
    assert vnext.prune(policies={"spans": {"max_age": "1d"}, "logs": {"max_age": "1d"}}) == [
        {"domain": "observability", "table": "mastra_span_events", "deleted": 500, "done": True},
        {"domain": "observability", "table": "mastra_log_events", "deleted": 0, "done": True}]
    assert vnext.list_traces().total == 1


@pytest.mark.backends("postgres")
def test_partman_mode(backend_url):
    """§5: with pg_partman installed in the database, ``auto`` registers every table with partman
    (Debian's postgresql-15-partman; 4.x: ``p_type := 'native'``); writes and reads work."""
    url, drop = create_postgres_database(backend_url.rsplit("/", 1)[0] + "/postgres", prefix="cs_partman")
    try:
        import psycopg2

        with psycopg2.connect(url) as connection, connection.cursor() as cursor:
            try:
                cursor.execute("CREATE SCHEMA partman; CREATE EXTENSION pg_partman SCHEMA partman")
            except psycopg2.Error as exc:
                pytest.skip(f"pg_partman is not installed: {exc}")
        repository = ObservabilityPG(connection_string=url, layout="vnext")
        try:
            repository.init()
            assert repository.partitions.mode == "partman"
            registered = {row[0] for row in run_sql(repository, "SELECT parent_table FROM partman.part_config")}
            assert "public.mastra_span_events" in registered
            assert len(_partitions(repository, "mastra_span_events")) >= 2
            now = utc_now()
            repository.create_span(span=span("p", started_at=now, ended_at=now))
            assert repository.list_traces().total == 1
        finally:
            repository.close()
    finally:
        drop()


# --------------------------------------------------------------------------- delta polling (§9)

@pytest.fixture(scope="module")
def delta_repository(own_url):
    repository = open_vnext(own_url, delta_polling=True)
    repository.init()
    yield repository
    repository.close()


@pytest.fixture
def delta(delta_repository):
    delta_repository.dangerously_clear_all()
    return delta_repository


def settled(read, count: int):
    """``read()`` once it returns ``count`` items: on PostgreSQL a delta read passes rows only of
    transactions older than every running one on the server (§9), and other clients' transactions
    (the shared test server) hold new rows back for a moment."""
    deadline = time.monotonic() + 30
    found = read()
    while len(found.items) < count and time.monotonic() < deadline:
        time.sleep(0.1)
        found = read()
    return found


def test_delta_polling_off(vnext):
    """29 (S/P): without the flag no cursor, and delta mode is not supported."""
    assert "delta-polling" not in vnext.get_features() and vnext.list_traces().delta_cursor is None
    with pytest.raises(NotSupportedError) as error:
        vnext.list_traces(mode="delta")
    assert "does not support observability delta polling" in str(error.value)


def test_delta_traces(delta):
    """30 (S/P): an empty filtered page gives a cursor; delta without ``after`` is empty at the
    head; a new root comes from both cursors, a child of a known trace never, a filtered one not;
    a trace seen running comes again when it ends."""
    assert "delta-polling" in delta.get_features()
    page_cursor = delta.list_traces(filters={"environment": "production"}).delta_cursor
    head = delta.list_traces(mode="delta")
    assert (head.items, head.limit, head.has_more) == ([], 10, False) and head.delta_cursor
    root = span("trace-1", trace_id="trace-1", environment="production", ended_at=None)
    delta.create_span(span=root)
    for cursor in (page_cursor, head.delta_cursor):
        found = settled(lambda: delta.list_traces(mode="delta", after=cursor, filters={"environment": "production"}), 1)
        assert ids(found) == ["trace-1"] and found.items[0]["status"] == "running"
    after_root = found.delta_cursor
    delta.create_span(span=child(root, "kid", started_at=at(1), environment="production"))
    delta.create_span(span=span("staging", environment="staging"))
    delta.create_span(span={**root, "ended_at": at(9)})
    # Once the end row (written last) passes, the child and the staging root have too: neither came.
    again = settled(lambda: delta.list_traces(mode="delta", after=after_root, filters={"environment": "production"}), 1)
    assert ids(again) == ["trace-1"] and again.items[0]["status"] == "success"


def test_delta_branches_and_arguments(delta):
    """31 (S/P): a new nested anchor comes once, a model step never; bad arguments refused."""
    cursor = delta.list_branches(mode="delta").delta_cursor
    root = span("wf", trace_id="bt", span_type="workflow_run")
    delta.batch_create_spans(records=[root, child(root, "agent", span_type="agent_run", started_at=at(1)),
                                      child(root, "step", span_type="model_step", started_at=at(2))])
    settled(lambda: delta.list_branches(mode="delta", after=cursor), 2)
    found = delta.list_branches(mode="delta", after=cursor, limit=1)
    assert len(found.items) == 1 and found.has_more is True
    rest = delta.list_branches(mode="delta", after=found.delta_cursor)
    assert sorted(ids(found, "span_id") + ids(rest, "span_id")) == ["agent", "wf"] and rest.has_more is False
    with pytest.raises(ValidationError) as error:
        delta.list_traces(mode="delta", after="abc")
    assert error.value.fields["after"] == ["Invalid observability delta cursor"]
    with pytest.raises(ValidationError) as error:
        delta.list_traces(mode="delta", page=1)
    assert error.value.fields["page"] == ["page is not allowed in delta mode"]
    with pytest.raises(ValidationError) as error:
        delta.list_traces(mode="page", limit=5)
    assert error.value.fields["limit"] == ["limit is only allowed in delta mode"]


@pytest.mark.backends("postgres")
def test_partitioning_options(own_url):
    """§5: ``future_days`` and ``include_yesterday`` set the days ``init()`` makes ahead; bad
    values name their key."""
    repository = open_vnext(own_url + "_options", partitioning={"mode": "native", "future_days": 2,
                                                                "include_yesterday": False})
    try:
        repository.init()
        today = utc_now()
        days = [f"mastra_span_events_p{today + timedelta(days=offset):%Y%m%d}" for offset in range(3)]
        assert _partitions(repository, "mastra_span_events") == days
        assert repository.partitions.mode == "native"
    finally:
        repository.close()
    with pytest.raises(ValidationError) as error:
        open_vnext(own_url, partitioning={"include_yesterday": "yes"}, discovery={"ttl_seconds": -1})
    assert set(error.value.fields) == {"partitioning.include_yesterday", "discovery.ttl_seconds"}


def test_copy_from_the_legacy_layout(own_url, vnext):
    """Moving data (issue 21) between the layouts of one database: the legacy table's spans copy
    into the current layout (a running span stays running), once; a re-run skips them."""
    from composite_store.composite import store_for_url
    from composite_store.moving import copy_domains

    joiner = "&" if "?" in own_url else "?"
    legacy, current = store_for_url(own_url), store_for_url(own_url + f"{joiner}layout=vnext")
    try:
        legacy.init()
        spans = legacy.get_store("observability")
        spans.dangerously_clear_all()
        spans.batch_create_spans(records=[span("moved"), child(span("moved"), "kid", ended_at=None)])
        first = copy_domains(legacy, current, ["observability"])
        assert [(report.read, report.written) for report in first] == [(2, 2)]
        trace = vnext.get_trace(trace_id="trace-moved")["spans"]
        assert [(s["span_id"], s["ended_at"]) for s in trace] == [("kid", None), ("moved", at(1))]  # same start
        assert [(report.written, report.skipped) for report in copy_domains(legacy, current, ["observability"])] == [
            (0, 2)]
    finally:
        legacy.close()
        current.close()


def test_concurrent_writers_of_a_missing_day(postgres, own_url):
    """§5: writers racing to create the same missing day's partition all succeed, each span once."""
    import threading

    day = datetime(2023, 5, 17, 8, tzinfo=UTC)
    writers = [open_vnext(own_url) for _ in range(4)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(writers))

    def write(index: int) -> None:
        try:
            start.wait()
            writers[index].create_span(span=span(f"w{index}", started_at=day, ended_at=day))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(index,)) for index in range(len(writers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for writer in writers:
        writer.close()
    assert errors == []
    assert postgres.list_traces().total == 4
    assert "mastra_span_events_p20230517" in _partitions(postgres, "mastra_span_events")
