"""Analytics and discovery over observability signals (observability-vnext.md §8.4, §8.5): the
scenarios of §13 (numbers in the docstrings) on every backend of the matrix — SQLite and
PostgreSQL with ``layout="vnext"``, ClickHouse 18.16 (the downgraded layout) and the current
engine — plus the checks of the arguments and the interpolation of SQLite's percentiles.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from composite_store import ValidationError
from composite_store.clickhouse import ObservabilityClickHouse
from composite_store.observability.analytics import interpolated
from composite_store.postgres import ObservabilityPG
from composite_store.sqlite import ObservabilitySQLite

UTC = timezone.utc
BASE = datetime(2026, 1, 2, 12, tzinfo=UTC)
DAY = {"start": datetime(2026, 1, 2, tzinfo=UTC), "end": datetime(2026, 1, 3, tzinfo=UTC)}


def at(minutes: float = 0, days: int = 0) -> datetime:
    return BASE + timedelta(minutes=minutes, days=days)


def open_vnext(family: str, url: str, **options):
    """The vNext observability repository of a backend of the matrix."""
    if family == "postgres":
        return ObservabilityPG(connection_string=url, layout="vnext", **options)
    return {"sqlite": ObservabilitySQLite, "clickhouse": ObservabilityClickHouse}[family](
        url=url, layout="vnext", **options)


@pytest.fixture(scope="module")
def analytics_repository(backend_spec, own_url):
    """SQLite and PostgreSQL keep their vNext tables in a database of this module's own, apart
    from the shared database's legacy layout."""
    repository = open_vnext(backend_spec.family, own_url)
    repository.init()
    yield repository
    repository.close()


@pytest.fixture
def obs(analytics_repository):
    """The vNext observability repository of the backend under test, emptied."""
    analytics_repository.dangerously_clear_all()
    return analytics_repository


def metric(value: float, name: str = "mastra_agent_duration_ms", minutes: float = 0, **fields) -> dict:
    record = {"timestamp": at(minutes), "name": name, "value": value}
    record.update(fields)
    return record


def costed(value: float, **fields) -> dict:
    """A metric costing value / 1000 USD."""
    return metric(value, estimated_cost=value / 1000, cost_unit="usd", **fields)


def values(groups: list[dict]) -> list[tuple]:
    return [(tuple(group["dimensions"].values()), pytest.approx(group["value"])) for group in groups]


# --------------------------------------------------------------------------- metrics

CONTEXT = {"trace_id": "trace-1", "span_id": "span-1", "entity_type": "agent", "entity_name": "agent-a",
           "entity_version_id": "v1", "parent_entity_version_id": "pv1", "root_entity_version_id": "rv1",
           "user_id": "user-1", "organization_id": "org-1", "experiment_id": "exp-1", "service_name": "api",
           "environment": "production", "parent_entity_type": "workflow_run", "parent_entity_name": "flow",
           "root_entity_type": "workflow_run", "root_entity_name": "root-flow", "resource_id": "res-1",
           "run_id": "run-1", "session_id": "session-1", "thread_id": "thread-1", "request_id": "req-1",
           "execution_source": "cloud"}


def test_metric_aggregate_with_comparison(obs):
    """16: sum with previous_period, every context filter, provider, model, cost_unit."""
    tagged = {**CONTEXT, "provider": "openai", "model": "gpt-4o", "tags": ["prod"]}
    obs.batch_create_metrics(metrics=[
        costed(100, **tagged), costed(50, minutes=30, **tagged), costed(80, minutes=0, **tagged) | {"timestamp": at(days=-1)},
        costed(1000, **{**tagged, "organization_id": "org-2"}), costed(7, name="other", **tagged)])
    filters = {"timestamp": DAY, **CONTEXT, "tags": ["prod"], "provider": "openai", "model": "gpt-4o",
               "cost_unit": "usd"}
    result = obs.get_metric_aggregate(name=["mastra_agent_duration_ms"], aggregation="sum",
                                      compare_period="previous_period", filters=filters)
    assert result["value"] == pytest.approx(150) and result["previous_value"] == pytest.approx(80)
    assert result["estimated_cost"] == pytest.approx(0.15) and result["previous_estimated_cost"] == pytest.approx(0.08)
    assert result["cost_unit"] == "usd"
    assert result["change_percent"] == pytest.approx(87.5) and result["cost_change_percent"] == pytest.approx(87.5)
    week = obs.get_metric_aggregate(name=["mastra_agent_duration_ms"], aggregation="sum",
                                    compare_period="previous_week", filters=filters)
    assert week["previous_value"] is None and week["change_percent"] is None
    assert set(obs.get_metric_aggregate(name=["mastra_agent_duration_ms"], aggregation="sum")) == {
        "value", "estimated_cost", "cost_unit"}


def test_metric_breakdown_series_percentiles(obs):
    """17: breakdown by entity_name, a 1h series, p50."""
    obs.batch_create_metrics(metrics=[
        costed(100, entity_name="agent-a", organization_id="org-1", tags=["prod"]),
        costed(900, entity_name="agent-b", organization_id="org-2", tags=["prod"]),
        costed(25, name="latency", minutes=10, service_name="api", tags=["prod"]),
        costed(70, name="latency", minutes=20, service_name="api", tags=["dev"]),
        metric(42, name="p", minutes=5, thread_id="thread-1"), metric(99, name="p", minutes=5, thread_id="thread-2")])
    breakdown = obs.get_metric_breakdown(name=["mastra_agent_duration_ms"], group_by=["entity_name"],
                                         aggregation="sum", filters={"organization_id": "org-1", "tags": ["prod"]})
    assert breakdown == {"groups": [{"dimensions": {"entity_name": "agent-a"}, "value": pytest.approx(100),
                                     "estimated_cost": pytest.approx(0.1), "cost_unit": "usd"}]}
    series = obs.get_metric_time_series(name=["latency"], interval="1h", aggregation="sum",
                                        filters={"service_name": "api", "tags": ["prod"]})["series"]
    assert len(series) == 1 and series[0]["name"] == "latency" and series[0]["cost_unit"] == "usd"
    assert series[0]["points"] == [{"timestamp": BASE, "value": pytest.approx(25),
                                    "estimated_cost": pytest.approx(0.025)}]
    percentiles = obs.get_metric_percentiles(name="p", percentiles=[0.5], interval="1h",
                                             filters={"thread_id": "thread-1"})
    assert percentiles == {"series": [{"percentile": 0.5, "points": [{"timestamp": BASE, "value": 42}]}]}


def test_metric_aggregations_and_labels(obs):
    """18: sums, count_distinct, breakdowns by entity and by label, order and limit."""
    obs.batch_create_metrics(metrics=[
        costed(100, entity_name="weatherAgent", labels={"status": "ok"}),
        costed(200, entity_name="weatherAgent", labels={"status": "ok"}, minutes=1),
        costed(500, entity_name="codeAgent", labels={"status": "error"}, minutes=2),
        costed(1, name="mastra_tool_calls", entity_name="tool")])
    name = ["mastra_agent_duration_ms"]
    total = obs.get_metric_aggregate(name=name, aggregation="sum")
    assert total["value"] == pytest.approx(800) and total["estimated_cost"] == pytest.approx(0.8)
    assert total["cost_unit"] == "usd"
    assert obs.get_metric_aggregate(name=name, aggregation="count_distinct", distinct_column="entity_name") == {
        "value": 2.0, "estimated_cost": pytest.approx(0.8), "cost_unit": "usd"}
    with pytest.raises(ValidationError) as error:
        obs.get_metric_aggregate(name=name, aggregation="count_distinct")
    assert "distinct_column" in error.value.fields
    average = obs.get_metric_breakdown(name=name, group_by=["entity_name"], aggregation="avg")["groups"]
    assert values(average) == [(("codeAgent",), 500), (("weatherAgent",), 150)]
    assert average[1]["estimated_cost"] == pytest.approx(0.3)
    smallest = obs.get_metric_breakdown(name=name, group_by=["entity_name"], aggregation="sum",
                                        order_direction="ASC", limit=1)["groups"]
    assert values(smallest) == [(("weatherAgent",), 300)]
    by_status = obs.get_metric_breakdown(name=name, group_by=["status"], aggregation="count")["groups"]
    assert values(by_status) == [(("ok",), 2), (("error",), 1)]
    assert by_status[0]["estimated_cost"] == pytest.approx(0.3)
    latest = obs.get_metric_aggregate(name=name, aggregation="last")
    assert latest["value"] == pytest.approx(500)
    assert obs.get_metric_aggregate(name=name, aggregation="max")["value"] == pytest.approx(500)
    assert obs.get_metric_aggregate(name=name, aggregation="min")["value"] == pytest.approx(100)


def test_metric_label_keys_series_and_trace_ids(obs):
    """19: a label key with a dash, grouped series kept apart under one display name, trace_ids,
    avg/count and provider/model filters."""
    obs.batch_create_metrics(metrics=[
        metric(10, name="m", labels={"foo-bar": "alpha", "segmentA": "a", "segmentB": "b|c"}, trace_id="trace-a"),
        metric(20, name="m", labels={"foo-bar": "beta", "segmentA": "a|b", "segmentB": "c"}, trace_id="trace-b",
               minutes=61),
        metric(30, name="m", provider="openai", model="gpt-4o", estimated_cost=0.3, cost_unit="usd",
               trace_id="trace-c", minutes=1),
        metric(300, name="n", provider="openai", model="gpt-4o", estimated_cost=0.3, cost_unit="usd"),
        metric(500, name="n", provider="anthropic", model="claude")])
    groups = obs.get_metric_breakdown(name=["m"], group_by=["foo-bar"], aggregation="count")["groups"]
    assert values(groups) == [(("alpha",), 1), (("beta",), 1)]
    series = obs.get_metric_time_series(name=["m"], interval="1h", aggregation="sum",
                                        group_by=["segmentA", "segmentB"])["series"]
    assert [item["name"] for item in series] == ["a|b|c", "a|b|c"]
    assert [[point["value"] for point in item["points"]] for item in series] == [[10], [20]]
    assert [item["points"][0]["timestamp"] for item in series] == [BASE, BASE + timedelta(hours=1)]
    by_trace = obs.get_metric_breakdown(name=["m"], group_by=["trace_id"], aggregation="sum",
                                        filters={"trace_ids": ["trace-a", "trace-c"]}, order_direction="ASC")
    assert values(by_trace["groups"]) == [(("trace-a",), 10), (("trace-c",), 30)]
    assert obs.get_metric_aggregate(name=["m", "n"], aggregation="avg", filters={"provider": "openai"}) \
        ["value"] == pytest.approx(165)
    assert obs.get_metric_aggregate(name=["n", "m"], aggregation="count")["value"] == 5.0
    assert obs.get_metric_aggregate(name=["n"], aggregation="avg")["value"] == pytest.approx(400)
    filtered = obs.get_metric_aggregate(name=["n"], aggregation="sum", filters={"provider": "openai",
                                                                                  "model": "gpt-4o"})
    assert filtered["value"] == pytest.approx(300) and filtered["estimated_cost"] == pytest.approx(0.3)
    mixed = obs.get_metric_time_series(name=["n", "m"], interval="1d", aggregation="sum")["series"]
    assert mixed[0]["name"] == "n|m" and mixed[0]["cost_unit"] == "usd"
    assert mixed[0]["points"][0]["timestamp"] == datetime(2026, 1, 2, tzinfo=UTC)


def test_metric_series_buckets_and_empty_results(obs):
    """UTC-aligned buckets of every interval; no rows: value None (count 0), an empty series."""
    obs.batch_create_metrics(metrics=[metric(1, minutes=7.5), metric(2, minutes=17), metric(4, minutes=61)])
    name = ["mastra_agent_duration_ms"]
    expected = {"1m": [7, 17, 61], "5m": [5, 15, 60], "15m": [0, 15, 60], "1h": [0, 0, 60], "1d": [-720] * 3}
    for interval, starts in expected.items():
        points = obs.get_metric_time_series(name=name, interval=interval, aggregation="sum")["series"][0]["points"]
        assert [point["timestamp"] for point in points] == [at(minutes) for minutes in dict.fromkeys(starts)]
    assert obs.get_metric_aggregate(name=["absent"], aggregation="sum")["value"] is None
    assert obs.get_metric_aggregate(name=["absent"], aggregation="count")["value"] == 0.0
    assert obs.get_metric_time_series(name=["absent"], interval="1h", aggregation="avg")["series"] == [
        {"name": "absent", "points": [], "cost_unit": None}]
    assert obs.get_metric_percentiles(name="absent", percentiles=[0.5], interval="1h")["series"] == [
        {"percentile": 0.5, "points": []}]


def test_metric_percentiles_interpolate(obs):
    """Percentiles per bucket in request order; exact interpolation up to 8192 values a bucket."""
    obs.batch_create_metrics(metrics=[metric(value, minutes=value % 3) for value in range(1, 11)]
                             + [metric(100, minutes=90)])
    result = obs.get_metric_percentiles(name="mastra_agent_duration_ms", percentiles=[0.5, 0, 1, 0.25],
                                        interval="1h")["series"]
    assert [item["percentile"] for item in result] == [0.5, 0, 1, 0.25]
    assert [[point["value"] for point in item["points"]] for item in result] == [
        [pytest.approx(5.5), 100], [1, 100], [10, 100], [pytest.approx(3.25), 100]]
    assert [point["timestamp"] for point in result[0]["points"]] == [BASE, at(60)]


# --------------------------------------------------------------------------- scores

def score(value: float, scorer_id: str = "relevance", minutes: float = 0, **fields) -> dict:
    record = {"timestamp": at(minutes), "scorer_id": scorer_id, "score": value}
    record.update(fields)
    return record


def test_score_analytics(obs):
    """22: avg, breakdown by experiment, series and p50 of one scorer and source; last."""
    obs.batch_create_scores(scores=[
        score(0.8, score_source="manual", experiment_id="exp-1"),
        score(0.6, score_source="manual", experiment_id="exp-2", minutes=10),
        score(0.1, scorer_id="toxicity", score_source="manual"), score(0.2, score_source="automated")])
    identity = {"scorer_id": "relevance", "score_source": "manual"}
    assert obs.get_score_aggregate(**identity, aggregation="avg") == {"value": pytest.approx(0.7)}
    groups = obs.get_score_breakdown(**identity, group_by=["experiment_id"], aggregation="avg")["groups"]
    assert values(groups) == [(("exp-1",), 0.8), (("exp-2",), 0.6)]
    series = obs.get_score_time_series(**identity, interval="1h", aggregation="avg")["series"]
    assert series == [{"name": "relevance|manual", "points": [{"timestamp": BASE, "value": pytest.approx(0.7)}]}]
    p50 = obs.get_score_percentiles(**identity, percentiles=[0.5], interval="1h")["series"]
    assert p50[0]["points"][0]["value"] == pytest.approx(0.7)

    obs.dangerously_clear_all()
    obs.batch_create_scores(scores=[score(0.3, minutes=30), score(0.9, minutes=45), score(0.1, minutes=15)])
    assert obs.get_score_aggregate(scorer_id="relevance", aggregation="last")["value"] == pytest.approx(0.9)
    assert values(obs.get_score_breakdown(scorer_id="relevance", group_by=["scorer_id"], aggregation="last")
                  ["groups"]) == [(("relevance",), 0.9)]
    series = obs.get_score_time_series(scorer_id="relevance", interval="1h", aggregation="last")["series"]
    assert series[0]["name"] == "relevance" and series[0]["points"][0]["value"] == pytest.approx(0.9)


def test_score_aggregations_and_errors(obs):
    """23: quality scores by source, environment, entity; grouped series; two percentiles;
    metadata groups and count_distinct refused."""
    obs.batch_create_scores(scores=[
        score(0.8, "quality", score_source="automated", environment="production", entity_name="agent-a"),
        score(0.6, "quality", score_source="automated", environment="production", entity_name="agent-a",
              minutes=70),
        score(0.9, "quality", score_source="automated", environment="staging", entity_name="agent-b"),
        score(0.5, "factuality", score_source="manual")])
    assert obs.get_score_aggregate(scorer_id="quality", aggregation="avg")["value"] == pytest.approx(0.7667, abs=1e-4)
    assert obs.get_score_aggregate(scorer_id="quality", aggregation="sum")["value"] == pytest.approx(2.3)
    assert obs.get_score_aggregate(scorer_id="quality", aggregation="count")["value"] == 3.0
    assert obs.get_score_aggregate(scorer_id="quality", score_source="automated", aggregation="count")["value"] == 3
    assert obs.get_score_aggregate(scorer_id="factuality", score_source="manual", aggregation="count")["value"] == 1
    assert obs.get_score_aggregate(scorer_id="quality", aggregation="count",
                                   filters={"environment": "production"})["value"] == 2
    groups = obs.get_score_breakdown(scorer_id="quality", group_by=["entity_name"], aggregation="avg")["groups"]
    assert values(groups) == [(("agent-b",), 0.9), (("agent-a",), 0.7)]
    series = obs.get_score_time_series(scorer_id="quality", interval="1h", aggregation="avg",
                                       group_by=["entity_name"])["series"]
    assert [item["name"] for item in series] == ["agent-a", "agent-b"]
    percentiles = obs.get_score_percentiles(scorer_id="quality", percentiles=[0.5, 0.99], interval="1d")
    assert [item["percentile"] for item in percentiles["series"]] == [0.5, 0.99]
    assert percentiles["series"][0]["points"][0]["value"] == pytest.approx(0.8)
    with pytest.raises(ValidationError) as error:
        obs.get_score_breakdown(scorer_id="quality", group_by=["metadata"], aggregation="avg")
    assert error.value.fields["group_by"] == ["Invalid groupBy column(s): metadata"]
    with pytest.raises(ValidationError) as error:
        obs.get_score_aggregate(scorer_id="quality", aggregation="count_distinct")
    assert "aggregation" in error.value.fields


def test_score_rewrite_counts_once(obs):
    """A re-sent score reads once in aggregates, as in lists (§8.3)."""
    obs.batch_create_scores(scores=[score(0.5, score_id="s-1"), score(0.7, score_id="s-2")])
    obs.batch_create_scores(scores=[score(0.5, score_id="s-1")])
    assert obs.get_score_aggregate(scorer_id="relevance", aggregation="count")["value"] == 2.0
    assert obs.get_score_aggregate(scorer_id="relevance", aggregation="sum")["value"] == pytest.approx(1.2)


# --------------------------------------------------------------------------- feedback

def feedback(value, feedback_type: str = "rating", minutes: float = 0, **fields) -> dict:
    record = {"timestamp": at(minutes), "feedback_type": feedback_type, "value": value}
    record.update(fields)
    return record


def test_feedback_analytics(obs):
    """26: numeric feedback only; ratings per source and entity; thumbs."""
    obs.batch_create_feedback(feedbacks=[
        feedback(5, feedback_source="user", entity_name="agent-a"),
        feedback(4, feedback_source="user", entity_name="agent-b", minutes=5),
        feedback(1, feedback_source="system"), feedback("needs-review", feedback_source="user"),
        feedback(1, "thumbs", environment="production", entity_name="agent-a"),
        feedback(0, "thumbs", environment="production", entity_name="agent-b"),
        feedback(1, "thumbs", environment="staging", entity_name="agent-b")])
    identity = {"feedback_type": "rating", "feedback_source": "user"}
    assert obs.get_feedback_aggregate(**identity, aggregation="avg")["value"] == pytest.approx(4.5)
    assert values(obs.get_feedback_breakdown(**identity, group_by=["entity_name"], aggregation="avg")["groups"]) \
        == [(("agent-a",), 5), (("agent-b",), 4)]
    series = obs.get_feedback_time_series(**identity, interval="1h", aggregation="avg")["series"]
    assert series == [{"name": "rating|user", "points": [{"timestamp": BASE, "value": pytest.approx(4.5)}]}]
    p50 = obs.get_feedback_percentiles(**identity, percentiles=[0.5], interval="1h")["series"][0]["points"]
    assert p50[0]["value"] == pytest.approx(4.5)
    thumbs = {"feedback_type": "thumbs"}
    assert obs.get_feedback_aggregate(**thumbs, aggregation="sum")["value"] == 2
    assert obs.get_feedback_aggregate(**thumbs, aggregation="count")["value"] == 3
    assert obs.get_feedback_aggregate(**thumbs, aggregation="avg")["value"] == pytest.approx(0.667, abs=1e-3)
    assert obs.get_feedback_aggregate(**thumbs, aggregation="count",
                                      filters={"environment": "production"})["value"] == 2
    assert values(obs.get_feedback_breakdown(**thumbs, group_by=["entity_name"], aggregation="avg")["groups"]) \
        == [(("agent-a",), 1.0), (("agent-b",), 0.5)]


def test_feedback_review_status_dimension(obs):
    """§8.3, §8.4: ``review_status`` groups breakdowns and time series; on ClickHouse, whose
    feedback has no reviewStatus column, every record reads (and so groups) as needs-review."""
    obs.batch_create_feedback(feedbacks=[feedback(5, entity_name="a"), feedback(3, review_status="reviewed"),
                                         feedback(4, minutes=70, entity_name="a")])
    stored = obs.backend.name != "CLICKHOUSE"
    groups = obs.get_feedback_breakdown(feedback_type="rating", group_by=["review_status"], aggregation="avg")
    assert values(groups["groups"]) == ([(("needs-review",), 4.5), (("reviewed",), 3)] if stored
                                        else [(("needs-review",), 4)])
    series = obs.get_feedback_time_series(feedback_type="rating", interval="1h", aggregation="sum",
                                          group_by=["review_status", "entity_name"])["series"]
    points = {(item["name"], point["timestamp"]): point["value"] for item in series for point in item["points"]}
    assert points == ({("needs-review|a", BASE): 5, ("needs-review|a", at(60)): 4, ("reviewed|", BASE): 3} if stored
                      else {("needs-review|a", BASE): 5, ("needs-review|a", at(60)): 4, ("needs-review|", BASE): 3})


# --------------------------------------------------------------------------- arguments

def test_bad_arguments_name_each_field(obs, backend_spec):
    """Every bad argument is named at once, with the spec's messages; nothing is read."""
    with pytest.raises(ValidationError) as error:
        obs.get_metric_breakdown(name=[], group_by=[], aggregation="median", limit=0, order_direction="up",
                                 distinct_column="value", filters={"source": "x"})
    assert error.value.id == f"STORAGE_{backend_spec.error_name}_GET_METRIC_BREAKDOWN_INVALID_INPUT"
    assert {"name", "group_by", "aggregation", "limit", "order_direction", "distinct_column"} <= set(
        error.value.fields)
    assert any("execution_source" in message for messages in error.value.fields.values() for message in messages)
    with pytest.raises(ValidationError) as error:
        obs.get_metric_percentiles(name="m", percentiles=[0.5, 1.5, float("nan")], interval="2h")
    assert error.value.fields["percentiles[1]"] == ["Percentile value must be a finite number between 0 and 1, "
                                                    "got 1.5"]
    assert {"percentiles[2]", "interval"} <= set(error.value.fields)
    with pytest.raises(ValidationError) as error:
        obs.get_score_aggregate(scorer_id="", aggregation="avg", compare_period="yesterday")
    assert {"scorer_id", "compare_period"} <= set(error.value.fields)
    with pytest.raises(ValidationError) as error:
        obs.get_feedback_time_series(feedback_type="rating", interval="1h", aggregation="sum", group_by=["x"])
    assert error.value.fields["group_by"] == ["Invalid groupBy column(s): x"]


def test_interpolation():
    """SQLite's final step: linear interpolation between the ranks around (n − 1) × p."""
    ranked = {0: 1.0, 1: 2.0, 2: 4.0, 3: 8.0}
    assert interpolated(ranked, 4, 0) == 1.0 and interpolated(ranked, 4, 1) == 8.0
    assert interpolated(ranked, 4, 0.5) == pytest.approx(3.0)
    assert interpolated({0: 5.0}, 1, 0.99) == 5.0


# --------------------------------------------------------------------------- discovery

def test_discovery(obs):
    """28: metric names (prefix, limit), label keys and values, entity types and names, services,
    environments and tags from metrics, a log and a span; a prefix is literal."""
    now = datetime.now(UTC).replace(microsecond=0)
    labels = {"agent": "weather", "status": "ok", "tool": "search"}
    obs.batch_create_metrics(metrics=[
        {"timestamp": now, "name": "mastra_agent_runs", "value": 1, "labels": labels, "entity_type": "agent",
         "entity_name": "weather", "service_name": "metric-service", "environment": "production", "tags": ["prod"]},
        {"timestamp": now, "name": "mastra_tool_calls", "value": 1, "labels": {"status": "error"},
         "entity_type": "tool", "entity_name": "search", "tags": ["beta"]},
        {"timestamp": now, "name": "mastra%other", "value": 1}])
    obs.batch_create_logs(logs=[{"timestamp": now, "level": "info", "message": "m", "entity_type": "input_processor",
                                 "entity_name": "guard", "service_name": "log-service", "environment": "log-env"}])
    obs.batch_create_spans(records=[{
        "trace_id": "t-1", "span_id": "s-1", "name": "run", "span_type": "agent_run", "started_at": now,
        "ended_at": now, "entity_type": "agent", "entity_name": "planner", "service_name": "span-service",
        "environment": "staging", "tags": ["v1", "experiment"]}])
    obs.refresh_discovery()
    assert obs.get_metric_names() == ["mastra%other", "mastra_agent_runs", "mastra_tool_calls"]
    assert obs.get_metric_names(prefix="mastra_agent", limit=1) == ["mastra_agent_runs"]
    assert obs.get_metric_names(prefix="mastra_", limit=1) == ["mastra_agent_runs"]
    assert obs.get_metric_names(prefix="mastra%") == ["mastra%other"]
    assert obs.get_metric_label_keys(metric_name="mastra_agent_runs") == ["agent", "status", "tool"]
    assert obs.get_metric_label_values(metric_name="mastra_agent_runs", label_key="status") == ["ok"]
    assert obs.get_metric_label_values(metric_name="mastra_tool_calls", label_key="status", prefix="e") == ["error"]
    assert obs.get_entity_types() == ["agent", "input_processor", "tool"]
    assert obs.get_entity_names(entity_type="agent") == ["planner", "weather"]
    assert obs.get_entity_names() == ["guard", "planner", "search", "weather"]
    assert obs.get_service_names() == ["log-service", "metric-service", "span-service"]
    assert obs.get_environments() == ["log-env", "production", "staging"]
    assert obs.get_tags() == ["beta", "experiment", "prod", "v1"]
    assert obs.get_tags(entity_type="agent") == ["experiment", "prod", "v1"]
    with pytest.raises(ValidationError) as error:
        obs.get_metric_label_values(metric_name="", label_key=None, limit=0)
    assert set(error.value.fields) == {"metric_name", "label_key", "limit"}


@pytest.mark.backends("postgres")
def test_postgres_discovery_cache(backend_spec, own_url):
    """§8.5 PostgreSQL: answers come from rows newer than the lookback, are cached, served while
    fresh, served stale and recomputed in the background once the ttl has passed; a missing
    row (after ``refresh_discovery``) is computed at once."""
    repository = open_vnext(backend_spec.family, own_url, discovery={"ttl_seconds": 300, "lookback_seconds": 3600})
    repository.init()
    repository.dangerously_clear_all()
    now = datetime.now(UTC)
    try:
        repository.batch_create_metrics(metrics=[{"timestamp": now, "name": "a", "value": 1},
                                                 {"timestamp": now - timedelta(hours=2), "name": "old", "value": 1}])
        assert repository.get_metric_names() == ["a"]
        repository.batch_create_metrics(metrics=[{"timestamp": now, "name": "b", "value": 1}])
        assert repository.get_metric_names() == ["a"]  # fresh: served from the cache
        with repository.backend.connection(), repository.backend.write():
            cache = repository.backend.table_sql(repository.models.discovery)
            repository.backend.database.execute_sql(
                f'UPDATE {cache} SET "refreshedAt" = NOW() - INTERVAL \'1 hour\'')
        assert repository.get_metric_names() == ["a"]  # stale: served, refreshed behind
        deadline = datetime.now(UTC) + timedelta(seconds=10)
        while repository.get_metric_names() != ["a", "b"] and datetime.now(UTC) < deadline:
            pass
        assert repository.get_metric_names() == ["a", "b"]
        repository.batch_create_metrics(metrics=[{"timestamp": now, "name": "c", "value": 1}])
        repository.refresh_discovery()
        assert repository.get_metric_names(prefix="c") == ["c"]
    finally:
        repository.close()


@pytest.mark.requires(family="clickhouse")
def test_clickhouse_discovery_layout(obs, backend_spec):
    """§3.3/§4: the two discovery tables (ReplacingMergeTree); current servers fill them with the
    framework's refreshable views (APPEND), 18.16 with insert-time views per source table."""
    with obs.backend.connection():
        tables = dict(obs.backend.database.execute_sql(
            "SELECT name, engine_full FROM system.tables WHERE database = currentDatabase() "
            "AND name LIKE 'mastra_%discovery%'").fetchall())
    assert tables["mastra_discovery_values"].startswith("ReplacingMergeTree")
    assert tables["mastra_discovery_pairs"].startswith("ReplacingMergeTree")
    views = {name for name in tables if name.startswith("mastra_mv_discovery") or "_mastra_" in name}
    if backend_spec.current_clickhouse:
        assert views == {"mastra_mv_discovery_values", "mastra_mv_discovery_pairs"}
    else:
        assert views == {f"{target}_{source}" for target in ("mastra_discovery_values", "mastra_discovery_pairs")
                         for source in ("mastra_span_events", "mastra_metric_events", "mastra_log_events")}


def test_signals_benchmark_runs_at_smoke_size(monkeypatch):
    """``python -m benchmarks signals`` at a few thousand events on SQLite and PostgreSQL: the
    raw writers, the server-side loads and the captured reads all run.  Timings are the
    benchmark's business."""
    from benchmarks import bench_signals

    monkeypatch.setenv("COMPOSITE_STORE_BENCH_BACKENDS", "sqlite,postgres")
    rows = bench_signals.main(["--events", "3000", "--ingest", "2000"])
    assert {row["backend"] for row in rows} >= {"sqlite"}
    assert all(row["library"] > 0 and row["raw"] > 0 for row in rows) and len(rows) % 4 == 0
