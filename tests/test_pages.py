"""Pages read by key and pages in one round trip (issue 20 items 2 and 5).

``after=`` the ``cursor`` of a page gives the page that follows it, on every backend the list
methods run on: walking a list that way visits every row once, in the list's order, with the
exact ``total`` on each page.  On SQLite and PostgreSQL a page and its total are one statement,
and ``init()`` gives existing tables the indexes the pages read through.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import pytest

from composite_store import Page, ValidationError
from composite_store.page import encode_cursor

SAME_TIME = datetime(2025, 5, 1, 12, 0, tzinfo=timezone.utc)
SQL = pytest.mark.requires(transactions=True)


def walk(list_page: Callable[..., Page], per_page: int, **arguments: Any) -> list[Page]:
    """Every page of a list, each read ``after=`` the cursor of the one before."""
    pages = [list_page(per_page=per_page, **arguments)]
    while pages[-1].has_more:
        assert len(pages) < 100, "the walk does not end"
        pages.append(list_page(per_page=per_page, after=pages[-1].cursor, **arguments))
    return pages


def item_key(item: dict[str, Any]) -> Any:
    """A listed record's key: its id, or a workflow run's workflow name and run id."""
    return item["id"] if "id" in item else (item["workflow_name"], item["run_id"])


def assert_walks_all(list_page: Callable[..., Page], per_page: int, **arguments: Any) -> list[Any]:
    """Walking by cursor gives the rows of ``per_page=False``, in order, each page with the total."""
    everything = list_page(per_page=False, **arguments)
    pages = walk(list_page, per_page, **arguments)
    walked = [item_key(item) for page in pages for item in page.items]
    assert walked == [item_key(item) for item in everything.items]
    assert all(page.total == everything.total for page in pages)
    assert [len(page.items) for page in pages[:-1]] == [per_page] * (len(pages) - 1)
    assert pages[-1].has_more is False and 0 < len(pages[-1].items) <= per_page
    assert all(page.page == 0 and page.cursor for page in pages)
    return walked


def save_messages(memory: Any, thread: str, resource: str, count: int, *, tied: int = 0) -> None:
    """``count`` messages a second apart; the first ``tied`` share one timestamp (ties go by id)."""
    memory.save_thread(thread={"id": thread, "resource_id": resource, "title": thread})
    memory.save_messages(messages=[{
        "id": f"{thread}-m{n:02d}", "thread_id": thread, "resource_id": resource, "role": "user",
        "content": {"format": 2, "parts": [{"type": "text", "text": f"message {n}"}]},
        "created_at": SAME_TIME if n < tied else SAME_TIME + timedelta(seconds=n)} for n in range(count)])


def save_scores(scores: Any, count: int, **extra: Any) -> list[dict]:
    return scores.save_scores(scores=[{
        "scorer_id": "sc-1", "run_id": f"run-{n % 2}", "entity_id": "agent-1", "entity_type": "AGENT",
        "trace_id": "t-1", "span_id": "s-1", "source": "LIVE", "score": n % 3 / 2, "scorer": {"id": "sc-1"},
        "entity": {"id": "agent-1"}, "output": {"text": str(n)}, **extra} for n in range(count)])


# --------------------------------------------------------------------------- after= on every backend

def test_list_messages_after(memory):
    save_messages(memory, "th-1", "res-1", 11, tied=4)
    save_messages(memory, "th-2", "res-1", 5)
    walked = assert_walks_all(memory.list_messages, 3, thread_id="th-1")
    assert walked[:4] == ["th-1-m00", "th-1-m01", "th-1-m02", "th-1-m03"]  # a tie goes by id
    assert_walks_all(memory.list_messages, 4, thread_id="th-1", order_by={"direction": "DESC"})
    assert_walks_all(memory.list_messages, 2, thread_id=["th-1", "th-2"], date_range={"start": SAME_TIME})
    assert_walks_all(memory.list_messages, 5, thread_id="th-1", include_total=True)


def test_list_messages_by_resource_id_after(memory):
    save_messages(memory, "th-1", "res-1", 6, tied=3)
    save_messages(memory, "th-2", "res-1", 7, tied=2)
    save_messages(memory, "th-3", "res-2", 3)
    walked = assert_walks_all(memory.list_messages_by_resource_id, 4, resource_id="res-1")
    assert len(walked) == 13
    assert_walks_all(memory.list_messages_by_resource_id, 3, resource_id="res-1", order_by={"direction": "DESC"})


def test_list_threads_after(memory):
    for n in range(9):
        memory.save_thread(thread={"id": f"th-{n}", "resource_id": "res-1" if n < 7 else "res-2",
                                   "title": "t", "created_at": SAME_TIME + timedelta(minutes=n // 3)})
    walked = assert_walks_all(memory.list_threads, 2, resource_id="res-1")
    assert walked == ["th-6", "th-3", "th-4", "th-5", "th-0", "th-1", "th-2"]  # newest first, ties by id
    assert_walks_all(memory.list_threads, 4, order_by={"field": "updated_at", "direction": "ASC"})
    assert_walks_all(memory.list_threads, 3, metadata={})


def test_list_scores_after(scores):
    save_scores(scores, 12)
    save_scores(scores, 2, scorer_id="sc-2", entity_id="agent-2")
    assert len(assert_walks_all(scores.list_scores_by_scorer_id, 5, scorer_id="sc-1")) == 12
    assert_walks_all(scores.list_scores_by_scorer_id, 4, scorer_id="sc-1", entity_id="agent-1", source="LIVE")
    assert_walks_all(scores.list_scores_by_entity_id, 5, entity_id="agent-1", entity_type="AGENT")
    assert_walks_all(scores.list_scores_by_run_id, 2, run_id="run-0")
    assert_walks_all(scores.list_scores_by_span, 7, trace_id="t-1", span_id="s-1")
    # Orders with many ties (a score's value) walk by id within them.
    assert_walks_all(scores.list_scores, 3, order_by={"field": "score", "direction": "ASC"})
    assert_walks_all(scores.list_scores, 5, order_by={"field": "score", "direction": "DESC"})


def save_runs(workflows: Any) -> None:
    """Runs of two workflows and two resources, several created at each moment: ties go by
    workflow name, then run id (two key columns; run ids repeat across the workflows)."""
    snapshot = {"status": "success", "context": {"input": {}}, "value": {}, "activePaths": [],
                "serializedStepGraph": [], "suspendedPaths": {}, "timestamp": 0}
    for n in range(11):
        for workflow in (("wf-b", "wf-a") if n % 3 else ("wf-a",)):
            workflows.persist_workflow_snapshot(
                workflow_name=workflow, run_id=f"run-{n:02d}",
                snapshot={**snapshot, "status": "running" if n % 2 else "success"},
                resource_id=f"res-{n % 2}", created_at=SAME_TIME + timedelta(seconds=n // 4))


def test_list_workflow_runs_after(workflows):
    save_runs(workflows)
    walked = assert_walks_all(workflows.list_workflow_runs, 3)
    everything = workflows.list_workflow_runs().items
    assert len(walked) == len(set(walked)) == 11 + 7
    # Newest first, ties by workflow name then run id (the newest second holds both workflows).
    newest = [item_key(run) for run in everything if run["created_at"] == everything[0]["created_at"]]
    assert newest == sorted(newest) and {name for name, _ in newest} == {"wf-a", "wf-b"}
    assert_walks_all(workflows.list_workflow_runs, 2, workflow_name="wf-b")
    assert_walks_all(workflows.list_workflow_runs, 4, resource_id="res-1")
    assert_walks_all(workflows.list_workflow_runs, 1, status="running")  # a predicate in Python on some backends
    assert_walks_all(workflows.list_workflow_runs, 5, from_date=SAME_TIME + timedelta(seconds=1))
    # The cursor of a page read by number continues it; a score's cursor is not a run's.
    numbered = workflows.list_workflow_runs(per_page=4, page=1)
    following = workflows.list_workflow_runs(per_page=4, after=numbered.cursor)
    assert following.items == workflows.list_workflow_runs(per_page=4, page=2).items and following.total == 18
    with pytest.raises(ValidationError) as raised:
        workflows.list_workflow_runs(per_page=4, after=encode_cursor(["created_at DESC", "2025-05-01", "run-1"]))
    assert set(raised.value.fields) == {"after"}
    with pytest.raises(ValidationError) as raised:
        workflows.list_workflow_runs(per_page=4, page=1, after=numbered.cursor)
    assert set(raised.value.fields) == {"page"}


def test_cursor_pages_match_numbered_pages(scores):
    save_scores(scores, 10)
    numbered = [scores.list_scores_by_scorer_id(scorer_id="sc-1", page=n, per_page=3) for n in range(4)]
    cursor_pages = walk(scores.list_scores_by_scorer_id, 3, scorer_id="sc-1")
    assert [page.items for page in cursor_pages] == [page.items for page in numbered]
    assert [page.has_more for page in cursor_pages] == [page.has_more for page in numbered] == [True] * 3 + [False]
    # The cursor of a page read by number continues it, as the one of a page read by cursor.
    following = scores.list_scores_by_scorer_id(scorer_id="sc-1", per_page=3, after=numbered[1].cursor)
    assert following.items == numbered[2].items and following.total == 10


def test_deep_page_numbers(scores):
    """Pages from the offset where PostgreSQL reads them by key (``DEEP_OFFSET``) hold the
    same rows as every other way of reading the list."""
    from composite_store.base import DEEP_OFFSET

    save_scores(scores, DEEP_OFFSET + 15)
    everything = [s["id"] for s in scores.list_scores_by_scorer_id(scorer_id="sc-1", per_page=False).items]
    deep = scores.list_scores_by_scorer_id(scorer_id="sc-1", page=DEEP_OFFSET // 10, per_page=10)
    assert [s["id"] for s in deep.items] == everything[DEEP_OFFSET:DEEP_OFFSET + 10]
    assert (deep.total, deep.has_more) == (DEEP_OFFSET + 15, True)
    last = scores.list_scores_by_scorer_id(scorer_id="sc-1", page=DEEP_OFFSET // 10 + 1, per_page=10)
    assert [s["id"] for s in last.items] == everything[DEEP_OFFSET + 10:] and last.has_more is False
    by_score = [s["id"] for s in scores.list_scores(per_page=False, order_by={"field": "score"}).items]
    deep = scores.list_scores(page=DEEP_OFFSET // 5, per_page=5, order_by={"field": "score"})
    assert [s["id"] for s in deep.items] == by_score[DEEP_OFFSET:DEEP_OFFSET + 5] and deep.has_more is True


def test_after_the_last_row(scores):
    save_scores(scores, 3)
    last = scores.list_scores_by_scorer_id(scorer_id="sc-1", per_page=3)
    assert last.has_more is False and last.cursor
    beyond = scores.list_scores_by_scorer_id(scorer_id="sc-1", per_page=3, after=last.cursor)
    assert (beyond.items, beyond.total, beyond.has_more, beyond.cursor) == ([], 3, False, None)
    rest = scores.list_scores_by_scorer_id(scorer_id="sc-1", per_page=False, after=last.cursor)
    assert (rest.items, rest.total, rest.per_page) == ([], 3, False)
    counted = scores.list_scores_by_scorer_id(scorer_id="sc-1", per_page=0, after=last.cursor)
    assert (counted.items, counted.total) == ([], 3)


def test_after_without_total(memory):
    save_messages(memory, "th-1", "res-1", 5)
    first = memory.list_messages(thread_id="th-1", per_page=2, include_total=False)
    second = memory.list_messages(thread_id="th-1", per_page=2, include_total=False, after=first.cursor)
    assert [m["id"] for m in second.items] == ["th-1-m02", "th-1-m03"]
    assert second.has_more is True and second.total == 2  # offset 0 plus the rows returned


def test_after_with_include_windows(memory):
    save_messages(memory, "th-1", "res-1", 8)
    first = memory.list_messages(thread_id="th-1", per_page=3)
    page = memory.list_messages(thread_id="th-1", per_page=2, after=first.cursor,
                                include=[{"id": "th-1-m07", "with_previous_messages": 1}])
    assert [m["id"] for m in page.items] == ["th-1-m03", "th-1-m04", "th-1-m06", "th-1-m07"]
    assert page.has_more is True and page.total == 8
    # The cursor is the page's own last row, not a window's.
    following = memory.list_messages(thread_id="th-1", per_page=2, after=page.cursor)
    assert [m["id"] for m in following.items] == ["th-1-m05", "th-1-m06"]


@pytest.mark.parametrize("after", ["not a cursor", "", "e30", 7, ["created_at DESC"]])
def test_bad_cursor(scores, backend_spec, after):
    with pytest.raises(ValidationError) as raised:
        scores.list_scores_by_scorer_id(scorer_id="sc-1", after=after)
    assert raised.value.fields == {"after": ["after must be the cursor of a page of this list in the same order"]}
    assert raised.value.id == f"STORAGE_{backend_spec.error_name}_LIST_SCORES_BY_SCORER_ID_INVALID_INPUT"


def test_cursor_of_another_order_or_list(memory, scores):
    save_scores(scores, 2)
    save_messages(memory, "th-1", "res-1", 2)
    newest = scores.list_scores(per_page=1)
    with pytest.raises(ValidationError) as raised:
        scores.list_scores(per_page=1, after=newest.cursor, order_by={"direction": "ASC"})
    assert set(raised.value.fields) == {"after"}
    with pytest.raises(ValidationError):
        scores.list_scores(per_page=1, after=newest.cursor, order_by={"field": "score"})
    messages = memory.list_messages(thread_id="th-1", per_page=1)  # created_at ASC: not a score cursor
    with pytest.raises(ValidationError):
        scores.list_scores_by_scorer_id(scorer_id="sc-1", after=messages.cursor)


def test_after_needs_page_zero(memory, backend_spec):
    save_messages(memory, "th-1", "res-1", 3)
    cursor = memory.list_messages(thread_id="th-1", per_page=1).cursor
    with pytest.raises(ValidationError) as raised:
        memory.list_messages(thread_id="th-1", per_page=1, page=1, after=cursor)
    assert raised.value.fields == {"page": ["page must be 0 when after is given"]}
    assert raised.value.id == f"STORAGE_{backend_spec.error_name}_LIST_MESSAGES_INVALID_PAGE"


def test_page_to_dict_has_the_cursor(scores):
    save_scores(scores, 2)
    page = scores.list_scores(per_page=1)
    assert page.to_dict()["cursor"] == page.cursor
    assert scores.list_scores(per_page=0).cursor is None


# --------------------------------------------------------------------------- one round trip

@SQL
def test_a_page_and_its_total_are_one_statement(memory, scores):
    save_scores(scores, 5)
    save_messages(memory, "th-1", "res-1", 5)
    cursor = scores.list_scores(per_page=1).cursor
    calls = {
        "list_scores_by_scorer_id": lambda: scores.list_scores_by_scorer_id(scorer_id="sc-1", per_page=2),
        "list_scores_by_entity_id": lambda: scores.list_scores_by_entity_id(entity_id="agent-1", entity_type="AGENT"),
        "list_scores, after=": lambda: scores.list_scores(per_page=2, after=cursor),
        "list_messages": lambda: memory.list_messages(thread_id="th-1", per_page=2),
        "list_messages_by_resource_id": lambda: memory.list_messages_by_resource_id(resource_id="res-1"),
        "list_threads": lambda: memory.list_threads(resource_id="res-1"),
    }
    for name, call in calls.items():
        with scores.backend.counting_statements() as log:
            page = call()
        assert page.total and page.items, name
        assert log.count == 1, (name, log.statements)


@SQL
def test_an_empty_page_counts_apart(scores):
    save_scores(scores, 3)
    with scores.backend.counting_statements() as log:
        past = scores.list_scores_by_scorer_id(scorer_id="sc-1", page=5, per_page=2)
    assert (past.items, past.total, past.has_more) == ([], 3, False)
    assert log.count == 2, log.statements
    with scores.backend.counting_statements() as log:
        counted = scores.list_scores_by_scorer_id(scorer_id="sc-1", per_page=0)
    assert (counted.total, counted.has_more, log.count) == (3, True, 1)


# --------------------------------------------------------------------------- indexes

SCORE_PAGE_INDEXES = ["mastra_scorers_scorer_id_created_at_id_idx", "mastra_scorers_entity_created_at_id_idx"]
PAGE_INDEXES = {
    "sqlite": {"mastra_threads": ["idx_threads_resource_created_at"],
               "mastra_messages": ["idx_messages_resource_created_at"], "mastra_scorers": SCORE_PAGE_INDEXES},
    "postgres": {"mastra_messages": ["mastra_messages_resourceid_createdat_idx"],
                 "mastra_scorers": [*SCORE_PAGE_INDEXES, "mastra_scorers_scorer_id_idx", "mastra_scorers_entity_idx"]},
}


@pytest.mark.backends("sqlite", "postgres")
def test_init_adds_the_page_indexes_to_existing_tables(backend, own_url, make_store):
    """Tables made before these indexes existed (here: the indexes dropped) get them from init()."""
    store = make_store(own_url)
    store.init()
    memory = store.get_store("memory")
    database, schema = memory.backend.database, memory.models.message._meta.schema

    def names(table: str) -> set[str]:
        return {index.name for index in database.get_indexes(table, schema)}

    prefix = f'"{schema}".' if schema else ""
    for table, indexes in PAGE_INDEXES[backend].items():
        for name in indexes:
            full = f"{schema}_{name}" if schema and backend == "postgres" else name
            database.execute_sql(f'DROP INDEX {prefix}"{full}"')
            assert full not in names(table)
    save_messages(memory, "th-1", "res-1", 3)
    save_scores(store.get_store("scores"), 2)
    make_store(own_url).init()
    for table, indexes in PAGE_INDEXES[backend].items():
        expected = {f"{schema}_{name}" if schema and backend == "postgres" else name for name in indexes}
        assert expected <= names(table)
    assert memory.list_messages_by_resource_id(resource_id="res-1").total == 3
    assert store.get_store("scores").list_scores_by_scorer_id(scorer_id="sc-1").total == 2
