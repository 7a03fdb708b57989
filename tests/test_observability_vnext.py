"""The current ("vNext") observability layout on ClickHouse: the tracing scenarios of
observability-vnext.md §13 (numbers in the docstrings), on Debian's 18.16 server (the downgraded
layout of §4) and on the current engine (the exact layout of §3.2), plus the layout option.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from composite_store import NotSupportedError, ValidationError
from composite_store.clickhouse import ClickHouseStore, ObservabilityClickHouse
from composite_store.models.observability_vnext import SPAN_COLUMNS
from composite_store.observability import SPAN_KEYS
from composite_store.observability.records import LIGHT_LIST_KEYS, LIGHT_SPAN_KEYS

pytestmark = pytest.mark.requires(family="clickhouse")
CURRENT_ONLY = pytest.mark.requires(family="clickhouse", current_clickhouse=True)
OLD_ONLY = pytest.mark.requires(family="clickhouse", current_clickhouse=False)

UTC = timezone.utc
BASE = datetime(2026, 1, 2, 12, tzinfo=UTC)
TRACING_TABLES = ("mastra_span_events", "mastra_trace_roots", "mastra_trace_branches")


def at(seconds: float) -> datetime:
    return BASE + timedelta(seconds=seconds)


def span(span_id: str, trace_id: str | None = None, **overrides) -> dict:
    """A root named after its span id: ``agent_run`` from BASE to BASE+1s (§13's ``span``)."""
    record = {"trace_id": trace_id or f"trace-{span_id}", "span_id": span_id, "parent_span_id": None,
              "name": span_id, "span_type": "agent_run", "is_event": False, "started_at": BASE, "ended_at": at(1)}
    record.update(overrides)
    return record


def child(parent: dict, span_id: str, **overrides) -> dict:
    return span(span_id, parent["trace_id"], parent_span_id=parent["span_id"], **overrides)


def ids(page, key: str = "trace_id") -> list[str]:
    return [row[key] for row in page.items]


def raw_sql(repository, sql: str) -> list:
    """Run SQL on the repository's own connection (a server or the in-process engine)."""
    with repository.backend.connection():
        return repository.backend.database.connection().client.execute(sql)


@pytest.fixture(scope="session")
def vnext_repository(backend_url):
    repository = ObservabilityClickHouse(url=backend_url, layout="vnext")
    repository.init()
    yield repository
    repository.close()


@pytest.fixture
def vnext(vnext_repository):
    """The vNext observability repository of the ClickHouse backend under test, emptied."""
    vnext_repository.dangerously_clear_all()
    return vnext_repository


# --------------------------------------------------------------------------- the layout option

def test_layout_option(backend_url):
    """§1: layout by keyword or URL, fixed per object, shown in repr; unknown values refused."""
    joiner = "&" if "?" in backend_url else "?"
    vnext = ObservabilityClickHouse(url=backend_url, layout="vnext")
    legacy = ObservabilityClickHouse(url=backend_url + f"{joiner}layout=legacy")
    assert (vnext.layout, legacy.layout) == ("vnext", "legacy")
    assert "layout='vnext'" in repr(vnext) and "layout='legacy'" in repr(legacy)
    assert isinstance(vnext, ObservabilityClickHouse) and isinstance(legacy, ObservabilityClickHouse)
    with pytest.raises(ValidationError) as error:
        ObservabilityClickHouse(url=backend_url, layout="v2")
    assert error.value.id == "STORAGE_CLICKHOUSE_INIT_INVALID_INPUT" and "layout" in error.value.fields
    store = ClickHouseStore(url=backend_url + f"{joiner}layout=vnext")
    try:
        assert store.get_store("observability").layout == "vnext"
    finally:
        store.close()
    for repository in (vnext, legacy):
        repository.close()


# --------------------------------------------------------------------------- strategy and capabilities

def test_strategy_features_and_updates(vnext):
    """1."""
    assert vnext.observability_strategy == {"preferred": "insert-only", "supported": ["insert-only"]}
    features = vnext.get_features()
    assert features == ("metrics", "logs", "entity-type-discovery", "entity-name-discovery",
                        "service-name-discovery", "environment-discovery", "tag-discovery", "metric-discovery")
    assert "delta-polling" not in features and vnext.get_features() is not vnext.observability_strategy
    with pytest.raises(NotSupportedError) as error:
        vnext.update_span(trace_id="t", span_id="s", updates={"name": "x"})
    assert str(error.value).startswith("This storage provider does not support updating spans")
    assert error.value.id == "STORAGE_CLICKHOUSE_UPDATE_SPAN_NOT_SUPPORTED" and "legacy" in error.value.details["hint"]
    with pytest.raises(NotSupportedError) as error:
        vnext.batch_update_spans(records=[])
    assert "does not support batch updating spans" in str(error.value)
    assert error.value.id == "STORAGE_CLICKHOUSE_BATCH_UPDATE_SPANS_NOT_SUPPORTED"
    assert vnext.supports_concurrent_updates() is False
    with pytest.raises(NotSupportedError):
        vnext.prune(policies={"spans": {"max_age": "1d"}})


# --------------------------------------------------------------------------- tracing

def test_span_without_end_reads_ended_at_its_start(vnext):
    """2."""
    root = span("root-span", span_type="workflow_run", name="workflow-run", ended_at=None)
    vnext.batch_create_spans(records=[root, child(root, "child-span", started_at=at(0.5), ended_at=at(0.7))])
    trace = vnext.get_trace(trace_id=root["trace_id"])
    assert [s["span_id"] for s in trace["spans"]] == ["root-span", "child-span"]
    found = vnext.get_root_span(trace_id=root["trace_id"])
    assert found["name"] == "workflow-run" and found["parent_span_id"] is None
    assert found["ended_at"] == found["started_at"] == BASE
    listed = vnext.list_traces()
    assert listed.total >= 1 and listed.items[0]["status"] == "success"


def test_span_keys_timestamps_events_and_tags(vnext):
    """3."""
    root = span("r", tags=[" a ", "a", "", "b"])
    event = child(root, "e", is_event=True, started_at=at(2), ended_at=at(9), span_type="generic")
    vnext.batch_create_spans(records=[root, event])
    for stored in vnext.get_trace(trace_id="trace-r")["spans"]:
        assert tuple(stored) == SPAN_KEYS and len(stored) == 42
        assert stored["created_at"] == stored["started_at"] and stored["updated_at"] is None
    assert vnext.get_span(trace_id="trace-r", span_id="r")["tags"] == ["a", "b"]
    assert vnext.get_span(trace_id="trace-r", span_id="e")["ended_at"] == at(2)
    assert vnext.get_span(trace_id="trace-r", span_id="missing") is None
    with pytest.raises(ValidationError):
        vnext.create_span(span=span("bad", tags=[3]))


def test_metadata_round_trip_and_filters(vnext):
    """4."""
    metadata = {"priority": " high ", "tier": 2, "userId": "u"}
    vnext.create_span(span=span("m", metadata=metadata))
    assert vnext.get_span(trace_id="trace-m", span_id="m")["metadata"] == metadata
    assert ids(vnext.list_traces(filters={"metadata": {"priority": "high"}})) == ["trace-m"]
    assert ids(vnext.list_traces(filters={"metadata": {"userId": "u"}})) == []
    assert ids(vnext.list_traces(filters={"metadata": {"priority": "low"}})) == []
    with pytest.raises(ValidationError) as error:
        vnext.list_traces(filters={"metadata": {"tier": 2}})
    assert error.value.status == "INVALID_METADATA_VALUE"
    assert 'Metadata filter value for key "tier" must be a string' in str(error.value.fields)


def test_filters_on_the_root(vnext):
    """5."""
    a = span("A", environment="production", tags=["keep"], started_at=BASE, ended_at=at(60))
    b = span("B", environment="staging", tags=["skip"], started_at=at(1800), ended_at=at(2100))
    vnext.batch_create_spans(records=[a, b])
    assert ids(vnext.list_traces(filters={"environment": "production", "started_at": {"start": BASE}})) == ["trace-A"]
    assert ids(vnext.list_traces(filters={"tags": ["keep"]})) == ["trace-A"]
    for filters in ({"started_at": {"end": at(600)}, "ended_at": {"end": at(3600)}},
                    {"ended_at": {"end": at(3600)}, "started_at": {"end": at(600)}}):
        assert ids(vnext.list_traces(filters=filters)) == ["trace-A"]
    assert ids(vnext.list_traces(filters={"started_at": {"start": BASE, "start_exclusive": True}})) == ["trace-B"]


def test_scope_source_and_every_equality_filter(vnext):
    """§7 list filters: scope members (README metadata semantics), source (executionSource) and
    the context columns, each on the root row."""
    context = {"user_id": "u", "organization_id": "o", "resource_id": "r", "run_id": "run", "session_id": "s",
               "thread_id": "th", "request_id": "req", "service_name": "svc", "experiment_id": "exp",
               "entity_type": "agent", "entity_id": "e", "entity_version_id": "v1",
               "parent_entity_type": "workflow_run", "root_entity_name": "root-name"}
    kept = span("kept", scope={"package": "core", "level": 2}, source="cloud", **context)
    other = span("other", scope={"package": "core", "level": 3}, source="local", started_at=at(1))
    vnext.batch_create_spans(records=[kept, other])
    assert ids(vnext.list_traces(filters={"scope": {"package": "core", "level": 2}})) == ["trace-kept"]
    assert ids(vnext.list_traces(filters={"source": "cloud"})) == ["trace-kept"]
    assert vnext.get_span(trace_id="trace-kept", span_id="kept")["source"] == "cloud"
    assert ids(vnext.list_traces(filters=context)) == ["trace-kept"]
    for key, value in context.items():
        assert ids(vnext.list_traces(filters={key: value})) == ["trace-kept"], key
    with pytest.raises(ValidationError):
        vnext.list_traces(filters={"colour": "red"})


def test_order_status_and_child_errors(vnext):
    """6."""
    first, second = span("x1", started_at=BASE), span("x2", started_at=at(5))
    tie_b, tie_a = span("tb", trace_id="tie-b", started_at=at(9)), span("ta", trace_id="tie-a", started_at=at(9))
    vnext.batch_create_spans(records=[first, second, tie_b, tie_a])
    assert ids(vnext.list_traces()) == ["tie-a", "tie-b", "trace-x2", "trace-x1"]
    assert ids(vnext.list_traces(order_by={"direction": "ASC"})) == ["trace-x1", "trace-x2", "tie-a", "tie-b"]
    vnext.dangerously_clear_all()
    failed_root = span("f", error={"message": "boom"})
    clean = span("c", started_at=at(1))
    failed_child_root = span("p", started_at=at(2))
    vnext.batch_create_spans(records=[failed_root, clean, failed_child_root,
                                      child(failed_child_root, "p-child", error={"message": "child"})])
    assert ids(vnext.list_traces(filters={"status": "error"})) == ["trace-f"]
    assert ids(vnext.list_traces(filters={"status": "success"})) == ["trace-p", "trace-c"]
    assert ids(vnext.list_traces(filters={"status": "running"})) == []
    assert ids(vnext.list_traces(filters={"has_child_error": True})) == ["trace-p"]
    assert ids(vnext.list_traces(filters={"has_child_error": "false"})) == ["trace-c", "trace-f"]


def test_light_reads_and_input_preview(vnext):
    """7."""
    root = span("l", entity_name="Observer", input={"q": 1}, output={"a": 2}, attributes={"k": 1},
                metadata={"team": "a"}, tags=["t"])
    vnext.create_span(span=root)
    light = vnext.get_trace_light(trace_id="trace-l")
    assert tuple(light["spans"][0]) == LIGHT_SPAN_KEYS and light["spans"][0]["entity_name"] == "Observer"
    assert light == vnext.get_structure(trace_id="trace-l")
    previews = {"p1": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "x"}],
                "p2": "y" * 150, "p3": "hi"}
    vnext.batch_create_spans(records=[span(key, input=value, started_at=at(index + 1))
                                      for index, (key, value) in enumerate(previews.items())])
    rows = {row["span_id"]: row for row in vnext.list_traces_light(per_page=False).items}
    assert all(tuple(row) == LIGHT_LIST_KEYS for row in rows.values())
    assert rows["p1"]["input_preview"] == "hello" and rows["p3"]["input_preview"] == "hi"
    assert rows["p2"]["input_preview"] == "y" * 100 + "…"
    assert rows["l"]["metadata"] == {"team": "a"} and rows["l"]["status"] == "success"


def test_get_spans(vnext):
    """8."""
    root = span("a", trace_id="gs-1", input={"full": True})
    vnext.batch_create_spans(records=[root, child(root, "b", started_at=at(0.1)),
                                      child(root, "c", started_at=at(0.2), input="text")])
    found = vnext.get_spans(trace_id="gs-1", span_ids=["c", "a", "zz"])
    assert [s["span_id"] for s in found["spans"]] == ["a", "c"]
    assert found["spans"][0]["input"] == {"full": True} and found["spans"][1]["input"] == "text"
    assert vnext.get_spans(trace_id="nope", span_ids=["a"]) == {"trace_id": "nope", "spans": []}
    with pytest.raises(ValidationError):
        vnext.get_spans(trace_id="gs-1", span_ids=[])


def test_get_branch(vnext):
    """9."""
    root = span("root", trace_id="br")
    a, b = child(root, "A", started_at=at(1)), child(root, "B", started_at=at(2))
    a1, a2 = child(a, "A1", started_at=at(3)), child(a, "A2", started_at=at(4))
    b1 = child(b, "B1", started_at=at(5))
    b1a = child(b1, "B1a", started_at=at(6))
    vnext.batch_create_spans(records=[root, a, b, a1, a2, b1, b1a])

    def branch(span_id, depth=None):
        return [s["span_id"] for s in vnext.get_branch(trace_id="br", span_id=span_id, depth=depth)["spans"]]

    assert branch("A") == ["A", "A1", "A2"]
    assert branch("A", 0) == ["A"]
    assert branch("B", 1) == ["B", "B1"]
    assert branch("B", 2) == ["B", "B1", "B1a"]
    assert len(branch("root")) == 7 and branch("root")[0] == "root"
    assert vnext.get_branch(trace_id="missing", span_id="A") is None
    assert vnext.get_branch(trace_id="br", span_id="missing") is None
    with pytest.raises(ValidationError):
        vnext.get_branch(trace_id="br", span_id="A", depth=-1)


def test_list_branches(vnext):
    """10."""
    root = span("wf", trace_id="bt", span_type="workflow_run")
    observer = child(root, "obs", span_type="agent_run", entity_name="Observer", started_at=at(1))
    tool = child(observer, "tool", span_type="tool_call", started_at=at(2))
    step = child(observer, "step", span_type="model_step", started_at=at(3))
    vnext.batch_create_spans(records=[root, observer, tool, step])
    page = vnext.list_branches()
    assert page.total == 3 and ids(page, "span_id") == ["tool", "obs", "wf"]
    assert all(row["status"] == "success" for row in page.items)
    vnext.create_span(span=child(root, "obs-2", span_type="agent_run", entity_name="Observer", started_at=at(4)))
    assert ids(vnext.list_traces(filters={"entity_name": "Observer"})) == []
    assert ids(vnext.list_branches(filters={"entity_name": "Observer"}), "span_id") == ["obs-2", "obs"]
    with pytest.raises(ValidationError):
        vnext.list_branches(filters={"has_child_error": True})


def test_list_branches_pages_and_filters(vnext):
    """11."""
    a = span("A", started_at=at(1), thread_id="thread-1", tags=["prod"])
    b = span("B", started_at=at(2), span_type="tool_call", tags=["prod", "beta"])
    c = span("C", started_at=at(3), thread_id="thread-1")
    vnext.batch_create_spans(records=[a, b, c])
    first = vnext.list_branches(per_page=2)
    assert ids(first, "span_id") == ["C", "B"] and (first.total, first.page, first.per_page, first.has_more) == (
        3, 0, 2, True)
    second = vnext.list_branches(per_page=2, page=1)
    assert ids(second, "span_id") == ["A"] and second.has_more is False
    assert ids(vnext.list_branches(filters={"span_type": "tool_call"}), "span_id") == ["B"]
    assert vnext.list_branches(filters={"span_type": "model_step"}).items == []
    assert ids(vnext.list_branches(filters={"thread_id": "thread-1"}), "span_id") == ["C", "A"]
    assert ids(vnext.list_branches(filters={"tags": ["prod", "beta"]}), "span_id") == ["B"]


def test_batch_delete_traces(vnext):
    """12 (tracing tables): spans, roots and branches of the listed traces go, the rest stay."""
    t = span("t-root", trace_id="t", organization_id="org-1")
    other = span("o-root", trace_id="other", organization_id="org-2")
    vnext.batch_create_spans(records=[t, child(t, "t-tool", span_type="tool_call", organization_id="org-1"), other])
    vnext.batch_delete_traces(trace_ids=["t"])
    assert vnext.get_span(trace_id="t", span_id="t-root") is None
    assert ids(vnext.list_traces()) == ["other"] and ids(vnext.list_branches()) == ["other"]
    with pytest.raises(ValidationError):
        vnext.batch_delete_traces(trace_ids=[f"id-{n}" for n in range(1001)])
    assert vnext.batch_delete_traces(trace_ids=[]) is None
    two = span("two", trace_id="shared", organization_id="org-1")
    vnext.batch_create_spans(records=[two, child(two, "theirs", organization_id="org-2")])
    vnext.batch_delete_traces(trace_ids=["shared", "other"], organization_id="org-1")
    assert [s["span_id"] for s in vnext.get_trace(trace_id="shared")["spans"]] == ["theirs"]
    assert vnext.get_trace(trace_id="other") is not None


def test_same_batch_twice_reads_once(vnext):
    """13: read-time dedupe, without OPTIMIZE; the later end wins."""
    root = span("big", trace_id="big")
    batch = [root] + [child(root, f"s{n:04}", span_type="generic", started_at=at(n / 1000)) for n in range(1, 1000)]
    vnext.batch_create_spans(records=batch)
    vnext.batch_create_spans(records=batch)
    assert len(vnext.get_trace(trace_id="big")["spans"]) == 1000
    assert vnext.list_traces().total == 1 and vnext.list_branches().total == 1
    # A cluster's replicated tables drop a block inserted again (insert deduplication).
    assert raw_sql(vnext, "SELECT count() FROM mastra_span_events")[0][0] == (1000 if vnext.backend.cluster else 2000)
    vnext.create_span(span=span("late", ended_at=None))
    vnext.create_span(span=span("late", ended_at=at(30)))
    assert vnext.get_span(trace_id="trace-late", span_id="late")["ended_at"] == at(30)
    assert vnext.get_root_span(trace_id="trace-late")["ended_at"] == at(30)
    assert [row["ended_at"] for row in vnext.list_traces(filters={"trace_id": "trace-late"}).items] == [at(30)]


def test_reads_across_days_and_parts(vnext):
    """Trace and page reads bound by the rows' ``endedAt`` (18.16): a trace whose spans end on
    several days (partitions), written in several inserts (parts), reads whole; a root whose end
    row lands days after its start row reads with the later end, in a trace, a root and a page."""
    day = 86_400
    root = span("root", trace_id="spread", ended_at=at(3 * day))
    vnext.batch_create_spans(records=[root, child(root, "a", started_at=at(1), ended_at=at(10))])
    vnext.batch_create_spans(records=[child(root, "b", started_at=at(day), ended_at=at(day + 5))])
    vnext.batch_create_spans(records=[child(root, "c", started_at=at(2 * day), ended_at=at(2 * day + 5))])
    for number in range(4):  # other traces' parts on the same days, below and above the trace ids
        vnext.create_span(span=span(f"other-{number}", trace_id=f"{'a' if number % 2 else 'z'}-{number}",
                                    started_at=at(number * day), ended_at=at(number * day + 1)))
    vnext.create_span(span=span("late", trace_id="m-late", started_at=at(5), ended_at=None))
    vnext.create_span(span=span("late", trace_id="m-late", started_at=at(5), ended_at=at(2 * day + 9)))
    assert [row["span_id"] for row in vnext.get_trace(trace_id="spread")["spans"]] == ["root", "a", "b", "c"]
    assert [row["span_id"] for row in vnext.get_spans(trace_id="spread", span_ids=["c", "a"])["spans"]] == ["a", "c"]
    assert vnext.get_trace(trace_id="m-late")["spans"][0]["ended_at"] == at(2 * day + 9)
    assert vnext.get_root_span(trace_id="m-late")["ended_at"] == at(2 * day + 9)
    pages = [vnext.list_traces(page=page, per_page=2, order_by={"field": "started_at", "direction": "ASC"})
             for page in range(3)]
    assert [page.total for page in pages] == [6, 6, 6]
    assert [ids(page) for page in pages] == [["spread", "z-0"], ["m-late", "a-1"], ["z-2", "a-3"]]
    assert pages[1].items[0]["ended_at"] == at(2 * day + 9)
    by_end = vnext.list_traces(per_page=3, order_by={"field": "ended_at", "direction": "DESC"})
    assert ids(by_end) == ["a-3", "spread", "m-late"]


def test_ten_thousand_spans_in_one_call(vnext):
    """observability.md §5 45-46 on this layout: 100 traces of 100 spans, sent twice."""
    batch = []
    for trace in range(100):
        root = span(f"root-{trace}", trace_id=f"bulk-{trace}", started_at=at(trace))
        batch += [root] + [child(root, f"s-{trace}-{n}", span_type="model_step", started_at=at(trace + n / 100))
                           for n in range(1, 100)]
    vnext.batch_create_spans(records=batch)
    vnext.batch_create_spans(records=batch)
    traces = vnext.list_traces(per_page=False)
    assert traces.total == 100 and len(traces.items) == 100
    assert sum(len(vnext.get_trace(trace_id=f"bulk-{trace}")["spans"]) for trace in (0, 42, 99)) == 300
    assert vnext.count_rows() == {"mastra_span_events": 10_000, "mastra_trace_roots": 100,
                                  "mastra_trace_branches": 100, "mastra_log_events": 0, "mastra_metric_events": 0,
                                  "mastra_score_events": 0, "mastra_feedback_events": 0}


def test_ingest_is_one_insert_without_a_read(vnext):
    """Deliverable 2: a batch is one native insert into mastra_span_events, nothing read before it."""
    with vnext.backend.connection():
        client = vnext.backend.database.connection().client
        sent = []
        execute = client.execute

        def recording(query, *args, **kwargs):
            sent.append(query)
            return execute(query, *args, **kwargs)

        client.execute = recording
        try:
            vnext.batch_create_spans(records=[span(f"i{n}") for n in range(50)])
        finally:
            del client.execute
    assert len(sent) == 1 and sent[0].startswith('INSERT INTO "mastra_span_events"')
    assert vnext.list_traces().total == 50


# --------------------------------------------------------------------------- the tables init() creates

#: §3.2 DDL: engine, partition and sorting keys of the three tables.
SORTING_KEYS = {"mastra_span_events": "traceId, endedAt, spanId, dedupeKey",
                "mastra_trace_roots": "startedAt, traceId, dedupeKey",
                "mastra_trace_branches": "spanType, startedAt, traceId, dedupeKey"}


@CURRENT_ONLY
def test_current_layout_equals_the_spec(vnext):
    """34 C: column names and types in order, engine, partition and sorting keys, and the views."""
    expected = [(column, column_type.split(" DEFAULT ")[0]) for column, _, column_type in SPAN_COLUMNS]
    for table, sorting_key in SORTING_KEYS.items():
        columns = raw_sql(vnext, f"SELECT name, type FROM system.columns WHERE database = currentDatabase() "
                                 f"AND table = '{table}' ORDER BY position")
        assert [tuple(column) for column in columns] == expected, table
        defaults = dict(raw_sql(vnext, f"SELECT name, default_expression FROM system.columns WHERE "
                                       f"database = currentDatabase() AND table = '{table}'"))
        assert (defaults["isEvent"], defaults["tags"], defaults["metadataSearch"]) == ("false", "[]", "map()")
        engine, key, partition = raw_sql(vnext, f"SELECT engine, sorting_key, partition_key FROM system.tables "
                                                f"WHERE database = currentDatabase() AND name = '{table}'")[0]
        assert (engine, key, partition) == ("ReplacingMergeTree", sorting_key, "toDate(endedAt)")
        full = raw_sql(vnext, f"SELECT engine_full FROM system.tables WHERE database = currentDatabase() "
                              f"AND name = '{table}'")[0][0]
        assert full.startswith("ReplacingMergeTree PARTITION BY")  # no version column
    views = dict(raw_sql(vnext, "SELECT name, create_table_query FROM system.tables WHERE database = "
                                "currentDatabase() AND engine = 'MaterializedView'"))
    assert set(views) >= {"mastra_mv_trace_roots", "mastra_mv_trace_branches"}
    assert "TO default.mastra_trace_roots" in views["mastra_mv_trace_roots"].replace("`", "") or \
        ".mastra_trace_roots" in views["mastra_mv_trace_roots"]
    assert "parentSpanId IS NULL" in views["mastra_mv_trace_roots"]
    assert "'mcp_tool_call'" in views["mastra_mv_trace_branches"] and \
        "'mcp_server_request'" not in views["mastra_mv_trace_branches"]


@CURRENT_ONLY
def test_rows_written_in_the_frameworks_format_read_back(vnext):
    """34 C: a span the framework's own store inserted (its SQL, its values) reads back as written,
    its root copied into mastra_trace_roots by the view."""
    raw_sql(vnext, """INSERT INTO mastra_span_events (dedupeKey, traceId, spanId, parentSpanId, entityType,
        entityName, executionSource, name, spanType, isEvent, startedAt, endedAt, tags, metadataSearch,
        attributes, input, metadataRaw) VALUES ('mt:ms', 'mt', 'ms', NULL, 'agent', 'Helper', 'cloud', 'agent run',
        'agent_run', false, '2026-01-02 12:00:00.000', '2026-01-02 12:00:01.500', ['x', 'y'], map('team', 'a'),
        '{"model":"m"}', '{"q":"hi"}', '{"team":" a ","userId":"u"}')""")
    stored = vnext.get_span(trace_id="mt", span_id="ms")
    assert {key: stored[key] for key in ("parent_span_id", "entity_type", "entity_name", "source", "name",
                                          "span_type", "is_event", "tags", "attributes", "input", "metadata")} == {
        "parent_span_id": None, "entity_type": "agent", "entity_name": "Helper", "source": "cloud",
        "name": "agent run", "span_type": "agent_run", "is_event": False, "tags": ["x", "y"],
        "attributes": {"model": "m"}, "input": {"q": "hi"}, "metadata": {"team": " a ", "userId": "u"}}
    assert (stored["started_at"], stored["ended_at"]) == (BASE, at(1.5))
    assert ids(vnext.list_traces(filters={"metadata": {"team": "a"}})) == ["mt"]
    assert raw_sql(vnext, "SELECT count() FROM mastra_trace_roots")[0][0] == 1


@OLD_ONLY
@pytest.mark.requires(cluster=False)  # one server's layout (the cluster's: tests/test_cluster.py)
def test_downgraded_layout_on_18_16(vnext):
    """34 O: Int64 timestamps, UInt8 isEvent, metadataSearch.keys/values, day partitions by integer."""
    columns = dict(raw_sql(vnext, "SELECT name, type FROM system.columns WHERE database = currentDatabase() "
                                  "AND table = 'mastra_span_events'"))
    assert (columns["startedAt"], columns["endedAt"], columns["isEvent"]) == ("Int64", "Int64", "UInt8")
    assert columns["metadataSearch.keys"] == columns["metadataSearch.values"] == "Array(String)"
    assert columns["tags"] == "Array(String)" and columns["entityType"] == "Nullable(String)"
    for table in TRACING_TABLES:
        full = raw_sql(vnext, f"SELECT engine_full FROM system.tables WHERE database = currentDatabase() "
                              f"AND name = '{table}'")[0][0]
        assert full.startswith("ReplacingMergeTree PARTITION BY intDiv(endedAt, 86400000) ORDER BY")


@pytest.mark.requires(cluster=False)  # one server's layout (the cluster's: tests/test_cluster.py)
def test_init_is_idempotent_and_adds_version_columns(backend_url, vnext):
    """§3.2 additive migrations: tables of a version without the entity version ids get them."""
    for view in ("mastra_mv_trace_roots", "mastra_mv_trace_branches"):  # current servers: views pin columns
        raw_sql(vnext, f"DROP TABLE {view}")
    for table in TRACING_TABLES:
        raw_sql(vnext, f"ALTER TABLE {table} DROP COLUMN rootEntityVersionId")
    again = ObservabilityClickHouse(url=backend_url, layout="vnext")
    try:
        again.init()
        again.init()
        for table in TRACING_TABLES:
            columns = [row[0] for row in raw_sql(again, f"SELECT name FROM system.columns WHERE database = "
                                                        f"currentDatabase() AND table = '{table}'")]
            assert columns[-1] == "rootEntityVersionId", table
        again.create_span(span=span("after"))
        assert again.list_traces().total == 1 and again.list_branches().total == 1
    finally:
        again.close()
