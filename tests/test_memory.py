"""Memory domain conformance suite (memory.md §6), run on every backend.

Each test runs on every default backend of the matrix in ``tests/conftest.py`` (SQLite,
PostgreSQL, the session's ClickHouse server — Debian's 18.16 here — and a current ClickHouse,
scenario 64, in-process when no server URL is given) unless its markers narrow that;
``postgres-app`` (PostgreSQL with ``schema_name="app"``, scenario 65) runs a representative
subset of the scenarios.

Scenario numbers from memory.md §6 are given in the test docstrings.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from composite_store import UNSET, ConflictError, NotFoundError, Page, ValidationError
from composite_store.composite import store_for_url
from composite_store.jsonb import encode_jsonb
from composite_store.postgres import PostgresStore
from composite_store.schemas import MessageSchema, ResourceSchema, ThreadSchema
from composite_store.values import truncate_ms, utc_now
from tests.conftest import DEFAULT_BACKENDS, MATRIX, clickhouse_client, database_url

UTC = timezone.utc

#: Scenarios also checked on PostgreSQL with ``schema_name="app"`` (scenario 65).
WITH_APP_SCHEMA = pytest.mark.backends(*DEFAULT_BACKENDS, "postgres-app")
#: Scenarios of concurrent read-modify-write, which the spec makes atomic where there are transactions.
TRANSACTIONS = pytest.mark.requires(transactions=True)
#: Scenarios about ClickHouse's own tables and stored formats.
CLICKHOUSE = pytest.mark.requires(family="clickhouse")

THREAD_KEYS = {"id", "resource_id", "title", "metadata", "created_at", "updated_at"}
MESSAGE_KEYS = {"id", "thread_id", "resource_id", "role", "type", "content", "created_at"}
ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


# --------------------------------------------------------------------------- helpers

def error_id(backend: str, operation: str, status: str) -> str:
    """``STORAGE_<B>_<OPERATION>_<STATUS>`` for the backend under test."""
    return f"STORAGE_{MATRIX[backend].error_name}_{operation}_{status}"


def make_thread(**overrides):
    """Thread T of §6 (fresh ids), with ``overrides``."""
    thread = {"id": f"thread-{uuid.uuid4()}", "resource_id": f"resource-{uuid.uuid4()}", "title": "Test Thread",
              "metadata": {"key": "value"}}
    thread.update(overrides)
    return thread


def v2_content(text: str, **extra):
    """Format-2 content with one text part."""
    return {"format": 2, "parts": [{"type": "text", "text": text}], "content": text, **extra}


def make_message(message_id: str, thread: dict, *, at: datetime | None = None, text: str | None = None,
                 resource_id: str | None = None, role: str = "user", **extra):
    """A v2 message of §6 in ``thread`` (its resource unless given)."""
    message = {"id": message_id, "thread_id": thread["id"], "resource_id": resource_id or thread["resource_id"],
               "role": role, "content": v2_content(text or f"text of {message_id}")}
    if at is not None:
        message["created_at"] = at
    message.update(extra)
    return message


def ids(items) -> list[str]:
    """Ids of a page's items (or of a list of records)."""
    return [item["id"] for item in (items.items if isinstance(items, Page) else items)]


def stored(message: dict) -> dict:
    """What a saved message reads back as: every key, ``type`` ``None`` when not given."""
    return {"type": None, **message, "created_at": truncate_ms(message["created_at"])}


def parallel(count: int, func) -> list:
    """Run ``func(i)`` for ``i`` in ``range(count)`` on ``count`` real threads; re-raise any error."""
    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(func, range(count)))


def insert_raw_messages(memory, rows: list[dict]) -> None:
    """Write message rows as another client would (no validation, content given as stored text)."""
    with memory.backend.connection(), memory.backend.write():
        memory.backend.insert(memory.models.message, rows)


@pytest.fixture
def base_time() -> datetime:
    """A millisecond-precision "now" that the scenario's timestamps count from."""
    return utc_now()


@pytest.fixture
def conversation(memory, base_time):
    """Thread 1 with Messages 1–5 at now+1…+5 s; thread 2 with one message at now+6 s."""
    thread = memory.save_thread(thread=make_thread())
    thread2 = memory.save_thread(thread=make_thread())
    messages = [make_message(f"msg-{i}", thread, at=base_time + timedelta(seconds=i), text=f"Message {i}")
                for i in range(1, 6)]
    other = make_message("msg-6", thread2, at=base_time + timedelta(seconds=6), text="Message 6")
    memory.save_messages(messages=messages + [other])
    return SimpleNamespace(thread=thread, thread2=thread2, messages=messages, other=other, base=base_time)


# =========================================================================== Threads

@WITH_APP_SCHEMA
def test_save_thread_returns_it_with_defaults_and_get_returns_equal(memory):
    """Scenario 1."""
    thread = make_thread()
    before = utc_now()
    saved = memory.save_thread(thread=thread)
    assert set(saved) == THREAD_KEYS
    assert {key: saved[key] for key in thread} == thread
    assert before <= saved["created_at"] <= utc_now()
    assert saved["created_at"].utcoffset() == timedelta(0) and saved["created_at"].microsecond % 1000 == 0
    assert saved["updated_at"] == saved["created_at"]
    assert memory.get_thread_by_id(thread_id=thread["id"]) == saved

    bare = memory.save_thread(thread={"id": f"thread-{uuid.uuid4()}", "resource_id": "r"})
    assert bare["title"] == "" and bare["metadata"] == {}
    assert memory.get_thread_by_id(thread_id=bare["id"]) == bare


def test_save_thread_replaces_everything_including_created_at(memory):
    """§4.2: ``save_thread`` is an upsert by id with full replacement; messages are untouched."""
    thread = memory.save_thread(thread=make_thread(created_at=datetime(2024, 1, 1, tzinfo=UTC)))
    memory.save_messages(messages=[make_message("m-1", thread)])
    replaced = memory.save_thread(thread={"id": thread["id"], "resource_id": "new-owner",
                                          "created_at": datetime(2025, 1, 1, tzinfo=UTC)})
    assert replaced == {"id": thread["id"], "resource_id": "new-owner", "title": "", "metadata": {},
                        "created_at": datetime(2025, 1, 1, tzinfo=UTC), "updated_at": datetime(2025, 1, 1, tzinfo=UTC)}
    assert memory.get_thread_by_id(thread_id=thread["id"]) == replaced
    listed = memory.list_threads()
    assert (listed.total, listed.items) == (1, [replaced])
    assert ids(memory.list_messages(thread_id=thread["id"])) == ["m-1"]


def test_numeric_string_ids_and_timestamps_round_trip(memory):
    """Scenario 2."""
    created = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    updated = datetime(2024, 5, 7, 1, 2, 3, 999999, tzinfo=UTC)
    saved = memory.save_thread(thread={"id": "1346362547862769664", "resource_id": "532374164040974346",
                                       "title": "t", "created_at": created, "updated_at": updated})
    got = memory.get_thread_by_id(thread_id="1346362547862769664")
    assert got == saved
    assert got["id"] == "1346362547862769664" and got["resource_id"] == "532374164040974346"
    assert got["created_at"] == datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)
    assert got["updated_at"] == datetime(2024, 5, 7, 1, 2, 3, 999000, tzinfo=UTC)
    listed = memory.list_threads(resource_id="532374164040974346")
    assert listed.items == [got]


@WITH_APP_SCHEMA
def test_get_thread_by_id_honours_resource(memory):
    """Scenario 3."""
    thread = memory.save_thread(thread=make_thread())
    assert memory.get_thread_by_id(thread_id="missing") is None
    assert memory.get_thread_by_id(thread_id=thread["id"], resource_id=thread["resource_id"]) == thread
    assert memory.get_thread_by_id(thread_id=thread["id"], resource_id="another-resource") is None
    assert memory.get_thread_by_id(thread_id=thread["id"]) == thread


@WITH_APP_SCHEMA
def test_update_thread_changes_title_and_merges_metadata(memory):
    """Scenario 4."""
    thread = memory.save_thread(thread=make_thread())
    updated = memory.update_thread(id=thread["id"], title="Updated Title", metadata={"newKey": "newValue"})
    assert updated["title"] == "Updated Title"
    assert updated["metadata"] == {"key": "value", "newKey": "newValue"}
    assert updated["created_at"] == thread["created_at"]
    assert memory.get_thread_by_id(thread_id=thread["id"]) == updated


def test_update_thread_metadata_only_keeps_title(memory):
    """Scenario 5."""
    thread = memory.save_thread(thread=make_thread(title="Generated title", metadata={"a": 1}))
    updated = memory.update_thread(id=thread["id"], metadata={"b": 2})
    assert updated["title"] == "Generated title" and updated["metadata"] == {"a": 1, "b": 2}
    assert memory.get_thread_by_id(thread_id=thread["id"]) == updated


def test_update_thread_overwrites_keys_but_never_removes_them(memory):
    """Scenario 5 (merge rule): keys can be overwritten, never removed; ``""`` is a valid title."""
    thread = memory.save_thread(thread=make_thread(metadata={"a": 1, "b": 2}))
    updated = memory.update_thread(id=thread["id"], title="", metadata={"a": "one"})
    assert updated["title"] == "" and updated["metadata"] == {"a": "one", "b": 2}
    same = memory.update_thread(id=thread["id"])
    assert same["metadata"] == {"a": "one", "b": 2} and same["updated_at"] >= updated["updated_at"]


def test_update_thread_rejects_none(memory, backend):
    """``None`` for title or metadata is a validation error and changes nothing (§4.2)."""
    thread = memory.save_thread(thread=make_thread())
    with pytest.raises(ValidationError) as info:
        memory.update_thread(id=thread["id"], title=None, metadata=None)
    assert info.value.fields == {"title": ["Field may not be null."], "metadata": ["Field may not be null."]}
    assert info.value.id == error_id(backend, "UPDATE_THREAD", "INVALID_INPUT")
    assert memory.get_thread_by_id(thread_id=thread["id"]) == thread


def test_update_reports_the_same_timestamps_everywhere(memory):
    """Scenario 6."""
    thread = memory.save_thread(thread=make_thread())
    time.sleep(0.05)
    updated = memory.update_thread(id=thread["id"], title="Later")
    got = memory.get_thread_by_id(thread_id=thread["id"])
    listed = memory.list_threads(resource_id=thread["resource_id"]).items[0]
    assert updated == got == listed
    assert got["created_at"] == thread["created_at"]
    assert got["updated_at"] > got["created_at"]


@WITH_APP_SCHEMA
def test_update_missing_thread_raises_not_found(memory, backend):
    """Scenario 7."""
    with pytest.raises(NotFoundError) as info:
        memory.update_thread(id="missing", title="x")
    assert info.value.message == "Thread missing not found"
    assert info.value.id == error_id(backend, "UPDATE_THREAD", "NOT_FOUND")
    assert info.value.details == {"thread_id": "missing"} and info.value.domain == "memory"
    assert info.value.category == "USER"
    assert memory.get_thread_by_id(thread_id="missing") is None
    assert memory.list_threads().total == 0


@WITH_APP_SCHEMA
def test_delete_thread_removes_it_and_its_messages(memory):
    """Scenario 8."""
    thread = memory.save_thread(thread=make_thread())
    keep = memory.save_thread(thread=make_thread())
    memory.save_messages(messages=[make_message("m-1", thread), make_message("m-2", thread),
                                   make_message("m-keep", keep)])
    assert memory.delete_thread(thread_id=thread["id"]) is None
    assert memory.get_thread_by_id(thread_id=thread["id"]) is None
    page = memory.list_messages(thread_id=thread["id"])
    assert page.items == [] and page.total == 0
    assert memory.list_messages_by_id(message_ids=["m-1", "m-2"]) == []
    assert ids(memory.list_messages(thread_id=keep["id"])) == ["m-keep"]
    assert memory.delete_thread(thread_id="missing") is None


def test_saving_a_message_bumps_the_thread(memory):
    """Scenario 9."""
    thread = memory.save_thread(thread=make_thread())
    time.sleep(0.01)
    memory.save_messages(messages=[make_message("m-1", thread)])
    assert memory.get_thread_by_id(thread_id=thread["id"])["updated_at"] > thread["updated_at"]


def test_json_looking_content_string_stays_a_string(memory):
    """Scenario 10."""
    thread = memory.save_thread(thread=make_thread())
    memory.save_messages(messages=[make_message("m-1", thread, text='{"a": 1}')])
    content = memory.list_messages(thread_id=thread["id"]).items[0]["content"]
    assert content["content"] == '{"a": 1}' and content["parts"][0]["text"] == '{"a": 1}'
    assert content["format"] == 2 and isinstance(content["parts"], list)


@WITH_APP_SCHEMA
def test_list_threads_pagination(memory):
    """Scenario 11."""
    resource = f"resource-{uuid.uuid4()}"
    for _ in range(17):
        memory.save_thread(thread=make_thread(resource_id=resource))
    first = memory.list_threads(resource_id=resource, per_page=7)
    assert (len(first.items), first.total, first.has_more, first.page, first.per_page) == (7, 17, True, 0, 7)
    last = memory.list_threads(resource_id=resource, page=2, per_page=7)
    assert (len(last.items), last.total, last.has_more) == (3, 17, False)
    middle = memory.list_threads(resource_id=resource, page=1, per_page=7)
    assert len(set(ids(first)) | set(ids(middle)) | set(ids(last))) == 17

    single = memory.save_thread(thread=make_thread())
    page = memory.list_threads(resource_id=single["resource_id"], per_page=100)
    assert (page.items, page.total, page.has_more) == ([single], 1, False)

    pair_resource = f"resource-{uuid.uuid4()}"
    pair = [memory.save_thread(thread=make_thread(resource_id=pair_resource)) for _ in range(2)]
    assert sorted(ids(memory.list_threads(resource_id=pair_resource, per_page=10))) == sorted(ids(pair))


def test_thread_values_round_trip_and_concurrent_updates_succeed(memory):
    """Scenario 12."""
    metadata = {"items": [{"index": i, "name": f"item {i}", "tags": ["a", "b"], "score": i / 3} for i in range(10)]}
    title = 'A "quoted" title with \'single\' quotes and an emoji 🚀'
    thread = memory.save_thread(thread=make_thread(title=title, metadata=metadata))
    got = memory.get_thread_by_id(thread_id=thread["id"])
    assert got["title"] == title and got["metadata"] == metadata

    results = parallel(5, lambda i: memory.update_thread(id=thread["id"], metadata={f"update{i}": i}))
    assert len(results) == 5
    final = memory.get_thread_by_id(thread_id=thread["id"])
    assert final is not None and final["metadata"]["items"] == metadata["items"]


def test_list_threads_sorting(memory, base_time):
    """Scenario 13."""
    resource = f"resource-{uuid.uuid4()}"
    threads = [memory.save_thread(thread=make_thread(
        id=f"sort-{i}", resource_id=resource, created_at=base_time + timedelta(minutes=i),
        updated_at=base_time + timedelta(minutes=10 - i * 2 if i != 2 else 20))) for i in range(5)]
    by_created = [t["id"] for t in sorted(threads, key=lambda t: t["created_at"])]
    by_updated = [t["id"] for t in sorted(threads, key=lambda t: t["updated_at"])]
    assert by_created != by_updated and by_created != by_updated[::-1]

    assert ids(memory.list_threads(resource_id=resource)) == by_created[::-1]
    assert ids(memory.list_threads(resource_id=resource, order_by={"field": "updated_at"})) == by_updated[::-1]
    assert ids(memory.list_threads(resource_id=resource, order_by={"direction": "ASC"})) == by_created
    assert ids(memory.list_threads(resource_id=resource, order_by={"field": "updated_at", "direction": "asc"})) \
        == by_updated
    for order_by in (None, {"direction": "ASC"}, {"field": "updated_at", "direction": "DESC"}):
        whole = ids(memory.list_threads(resource_id=resource, order_by=order_by))
        pages = [ids(memory.list_threads(resource_id=resource, order_by=order_by, page=p, per_page=2))
                 for p in range(3)]
        assert sum(pages, []) == whole

    tied = f"resource-{uuid.uuid4()}"
    for thread_id in ("tie-b", "tie-c", "tie-a"):
        memory.save_thread(thread=make_thread(id=thread_id, resource_id=tied, created_at=base_time,
                                              updated_at=base_time))
    for direction in ("DESC", "ASC"):
        for field in ("created_at", "updated_at"):
            order_by = {"field": field, "direction": direction}
            pages = [ids(memory.list_threads(resource_id=tied, order_by=order_by, page=p, per_page=1))
                     for p in range(3)]
            assert sum(pages, []) == ["tie-a", "tie-b", "tie-c"]


def test_paging_visits_each_tied_thread_once_despite_updates(memory, base_time):
    """Scenario 14."""
    resource = f"resource-{uuid.uuid4()}"
    for i in range(205):
        memory.save_thread(thread=make_thread(id=f"t-{i:03d}", resource_id=resource, created_at=base_time))
    seen = []
    for page in range(5):
        result = memory.list_threads(resource_id=resource, page=page, per_page=50,
                                     order_by={"field": "created_at"})
        seen += ids(result)
        if page == 1:
            memory.update_thread(id="t-150", title="changed between pages")
    assert len(seen) == 205 and set(seen) == {f"t-{i:03d}" for i in range(205)}


@pytest.fixture
def filtered_threads(memory):
    """Four threads over two resources with ``{category, priority, status?}`` metadata."""
    a, b = f"resource-a-{uuid.uuid4()}", f"resource-b-{uuid.uuid4()}"
    specs = [("t1", a, {"category": "tech", "priority": "high", "status": "open"}),
             ("t2", a, {"category": "general", "priority": "low"}),
             ("t3", b, {"category": "tech", "priority": "low", "status": "closed"}),
             ("t4", b, {"category": "general", "priority": "high", "status": "open"})]
    for thread_id, resource, metadata in specs:
        memory.save_thread(thread=make_thread(id=thread_id, resource_id=resource, metadata=metadata))
    return a, b


@WITH_APP_SCHEMA
def test_list_threads_filters(memory, filtered_threads):
    """Scenario 15."""
    a, b = filtered_threads

    def listed(**kwargs):
        return sorted(ids(memory.list_threads(**kwargs)))

    assert listed(resource_id=a) == ["t1", "t2"]
    assert listed(metadata={"category": "tech"}) == ["t1", "t3"]
    assert listed(metadata={"category": "tech", "priority": "high"}) == ["t1"]
    assert listed(resource_id=b, metadata={"category": "tech"}) == ["t3"]
    assert listed() == ["t1", "t2", "t3", "t4"]
    assert listed(resource_id="", metadata={}) == ["t1", "t2", "t3", "t4"]
    unknown = memory.list_threads(metadata={"category": "unknown"})
    assert (unknown.items, unknown.total, unknown.has_more) == ([], 0, False)
    assert memory.list_threads(resource_id="no-such-resource").total == 0
    assert listed(metadata={"category": "tech", "priority": "high", "extra": "x"}) == []
    first = memory.list_threads(metadata={"category": "tech"}, per_page=1)
    second = memory.list_threads(metadata={"category": "tech"}, page=1, per_page=1)
    assert (first.total, first.has_more, second.total, second.has_more) == (2, True, 2, False)
    assert ids(first) != ids(second)
    everything = memory.list_threads(metadata={"category": "tech"}, per_page=False)
    assert sorted(ids(everything)) == ["t1", "t3"] and everything.per_page is False and not everything.has_more
    assert listed(metadata={"status": "open"}) == ["t1", "t4"]


def test_metadata_filters_respect_json_types(memory):
    """Scenario 16."""
    resource = f"resource-{uuid.uuid4()}"
    specs = {"flag-true": {"flag": True}, "flag-one": {"flag": 1}, "n-int": {"n": 1}, "n-float": {"n": 1.0},
             "n-string": {"n": "1"}, "x-null": {"x": None}, "none": {}, "n-false": {"n": False}}
    for thread_id, metadata in specs.items():
        memory.save_thread(thread=make_thread(id=thread_id, resource_id=resource, metadata=metadata))
    memory.save_thread(thread=make_thread(id="null-metadata", resource_id=resource, metadata=None))

    def listed(metadata):
        return sorted(ids(memory.list_threads(resource_id=resource, metadata=metadata)))

    assert listed({"flag": True}) == ["flag-true"]
    assert listed({"flag": 1}) == ["flag-one"]
    assert listed({"n": 1}) == ["n-float", "n-int"]
    assert listed({"n": 1.0}) == ["n-float", "n-int"]
    assert listed({"n": "1"}) == ["n-string"]
    assert listed({"n": False}) == ["n-false"]
    assert listed({"x": None}) == ["x-null"]


# =========================================================================== Messages

@WITH_APP_SCHEMA
def test_list_messages_returns_v2_messages_in_order(memory, conversation):
    """Scenario 17."""
    page = memory.list_messages(thread_id=conversation.thread["id"])
    assert page.items == [stored(m) for m in conversation.messages]
    assert (page.total, page.has_more, page.page, page.per_page) == (5, False, 0, 40)
    assert all(set(m) == MESSAGE_KEYS and m["content"]["format"] == 2 for m in page.items)
    descending = memory.list_messages(thread_id=conversation.thread["id"], order_by={"direction": "DESC"})
    assert ids(descending) == ids(page)[::-1]


def test_token_estimate_in_provider_metadata_survives(memory):
    """Scenario 17: ``parts[0].providerMetadata.mastra.tokenEstimate``."""
    thread = memory.save_thread(thread=make_thread())
    content = {"format": 2, "parts": [{"type": "text", "text": "hello",
                                       "providerMetadata": {"mastra": {"tokenEstimate": 42}}}], "content": "hello"}
    memory.save_messages(messages=[make_message("m-1", thread, content=content)])
    assert memory.list_messages(thread_id=thread["id"]).items[0]["content"] == content
    assert memory.list_messages_by_id(message_ids=["m-1"])[0]["content"]["parts"][0]["providerMetadata"] == \
        {"mastra": {"tokenEstimate": 42}}


@WITH_APP_SCHEMA
def test_list_messages_pagination(memory, conversation):
    """Scenario 18."""
    thread_id = conversation.thread["id"]
    pages = [memory.list_messages(thread_id=thread_id, page=p, per_page=2) for p in range(3)]
    assert [len(p.items) for p in pages] == [2, 2, 1]
    assert [p.has_more for p in pages] == [True, True, False]
    assert [p.total for p in pages] == [5, 5, 5]
    assert sum((ids(p) for p in pages), []) == [f"msg-{i}" for i in range(1, 6)]
    past_end = memory.list_messages(thread_id=thread_id, page=9, per_page=2)
    assert (past_end.items, past_end.total, past_end.has_more) == ([], 5, False)


def test_list_messages_per_page_false_returns_everything(memory, base_time):
    """Scenario 19."""
    thread = memory.save_thread(thread=make_thread())
    memory.save_messages(messages=[make_message(f"m-{i:02d}", thread, at=base_time + timedelta(milliseconds=i))
                                   for i in range(55)])
    page = memory.list_messages(thread_id=thread["id"], per_page=False)
    assert (len(page.items), page.total, page.has_more) == (55, 55, False)
    assert page.per_page is False and ids(page) == [f"m-{i:02d}" for i in range(55)]


def test_list_messages_resource_filter(memory, conversation):
    """Scenario 20."""
    thread = conversation.thread
    memory.save_messages(messages=[make_message("msg-foreign", thread, resource_id="another-resource",
                                                at=conversation.base + timedelta(seconds=7))])
    assert memory.list_messages(thread_id=thread["id"]).total == 6
    scoped = memory.list_messages(thread_id=thread["id"], resource_id=thread["resource_id"])
    assert scoped.total == 5 and "msg-foreign" not in ids(scoped)
    assert memory.list_messages(thread_id=thread["id"], resource_id="").total == 6


def test_list_messages_without_total(memory, conversation):
    """§4.3 step 6: ``include_total=False`` skips the count; one extra row tells ``has_more``."""
    thread_id = conversation.thread["id"]
    first = memory.list_messages(thread_id=thread_id, per_page=2, include_total=False)
    assert (ids(first), first.total, first.has_more) == (["msg-1", "msg-2"], 2, True)
    last = memory.list_messages(thread_id=thread_id, page=2, per_page=2, include_total=False)
    assert (ids(last), last.total, last.has_more) == (["msg-5"], 5, False)
    exact = memory.list_messages(thread_id=thread_id, page=1, per_page=2, include_total=False,
                                 order_by={"direction": "DESC"}, include=[{"id": "msg-6"}])
    assert (ids(exact), exact.total, exact.has_more) == (["msg-6", "msg-3", "msg-2"], 4, True)
    everything = memory.list_messages(thread_id=thread_id, per_page=False, include_total=False)
    assert (len(everything.items), everything.total, everything.has_more) == (5, 5, False)
    filtered = memory.list_messages(thread_id=thread_id, per_page=4, include_total=False,
                                    date_range={"start": conversation.messages[2]["created_at"]})
    assert (ids(filtered), filtered.total, filtered.has_more) == (["msg-3", "msg-4", "msg-5"], 3, False)
    with pytest.raises(ValidationError) as info:
        memory.list_messages(thread_id=thread_id, include_total="no")
    assert list(info.value.fields) == ["include_total"]


def test_include_windows_inside_the_page(memory, conversation):
    """Scenario 21."""
    thread_id = conversation.thread["id"]
    expected = [f"msg-{i}" for i in range(1, 6)]
    for entry in ({"id": "msg-3", "with_previous_messages": 2}, {"id": "msg-2", "with_next_messages": 2},
                  {"id": "msg-3", "with_previous_messages": 1, "with_next_messages": 1}):
        assert ids(memory.list_messages(thread_id=thread_id, include=[entry])) == expected


def test_include_message_of_another_thread(memory, conversation):
    """Scenario 22."""
    thread_id = conversation.thread["id"]
    expected = [f"msg-{i}" for i in range(1, 7)]
    assert ids(memory.list_messages(thread_id=thread_id, include=[{"id": "msg-6"}])) == expected
    named = [{"id": "msg-6", "thread_id": conversation.thread2["id"]}]
    page = memory.list_messages(thread_id=thread_id, include=named)
    assert ids(page) == expected and page.total == 5
    created = [m["created_at"] for m in page.items]
    assert created == sorted(created)


def test_include_extends_a_small_page(memory, conversation):
    """Scenarios 23 and 24."""
    thread_id = conversation.thread["id"]
    page = memory.list_messages(thread_id=thread_id, per_page=2,
                                include=[{"id": "msg-3", "with_previous_messages": 1}])
    assert ids(page) == ["msg-1", "msg-2", "msg-3"]
    page = memory.list_messages(thread_id=thread_id, per_page=3, include=[{"id": "msg-1", "with_next_messages": 10}])
    assert (ids(page), page.total, page.has_more) == ([f"msg-{i}" for i in range(1, 6)], 5, False)


def test_include_edge_cases(memory, conversation, base_time):
    """Scenario 25."""
    thread_id = conversation.thread["id"]
    page = memory.list_messages(thread_id=thread_id, per_page=2, include=[{"id": "no-such-message"}])
    assert (ids(page), page.total, page.has_more) == (["msg-1", "msg-2"], 5, True)

    empty = memory.save_thread(thread=make_thread())
    page = memory.list_messages(thread_id=empty["id"])
    assert (page.items, page.total, page.has_more) == ([], 0, False)

    short = memory.save_thread(thread=make_thread())
    memory.save_messages(messages=[make_message(f"s-{i}", short, at=base_time + timedelta(seconds=i))
                                   for i in range(3)])
    for per_page in (0, 1, 40):
        page = memory.list_messages(thread_id=short["id"], per_page=per_page,
                                    include=[{"id": "s-0", "with_next_messages": 30}])
        assert ids(page) == ["s-0", "s-1", "s-2"]
    page = memory.list_messages(thread_id=short["id"], per_page=0,
                                include=[{"id": "s-2", "with_previous_messages": 30, "with_next_messages": 30}])
    assert ids(page) == ["s-0", "s-1", "s-2"]


def test_per_page_zero_returns_only_include_windows(memory, conversation):
    """Scenario 26."""
    thread_id = conversation.thread["id"]
    page = memory.list_messages(thread_id=thread_id, per_page=0)
    assert (page.items, page.total, page.has_more) == ([], 5, True)
    window = [{"id": "msg-3", "with_previous_messages": 1, "with_next_messages": 1}]
    page = memory.list_messages(thread_id=thread_id, per_page=0, include=window)
    assert ids(page) == ["msg-2", "msg-3", "msg-4"] and page.total == 5
    page = memory.list_messages(thread_id=thread_id, per_page=0, include=window, order_by={"direction": "DESC"})
    assert ids(page) == ["msg-4", "msg-3", "msg-2"]
    overlapping = [{"id": "msg-2", "with_next_messages": 1}, {"id": "msg-3", "with_previous_messages": 1}]
    assert ids(memory.list_messages(thread_id=thread_id, per_page=0, include=overlapping)) == ["msg-2", "msg-3"]


def test_many_include_windows_in_a_long_thread(memory, base_time):
    """Scenario 27."""
    thread = memory.save_thread(thread=make_thread())
    memory.save_messages(messages=[make_message(f"m-{i:03d}", thread, at=base_time + timedelta(seconds=i))
                                   for i in range(200)])
    positions = (10, 50, 100, 150, 190)
    include = [{"id": f"m-{p:03d}", "with_previous_messages": 2, "with_next_messages": 2} for p in positions]
    page = memory.list_messages(thread_id=thread["id"], per_page=0, include=include)
    expected = [f"m-{i:03d}" for p in positions for i in range(p - 2, p + 3)]
    assert ids(page) == expected and page.total == 200


def test_included_messages_interleave_chronologically(memory, conversation):
    """Scenario 28."""
    other = memory.save_thread(thread=make_thread())
    memory.save_messages(messages=[make_message("between", other, at=conversation.base + timedelta(seconds=2.5))])
    page = memory.list_messages(thread_id=conversation.thread["id"], include=[{"id": "between"}])
    assert ids(page) == ["msg-1", "msg-2", "between", "msg-3", "msg-4", "msg-5"]
    created = [m["created_at"] for m in page.items]
    assert all(a < b for a, b in zip(created, created[1:]))


def test_descending_page_with_window_from_another_thread(memory, base_time):
    """Scenario 29."""
    first, second = memory.save_thread(thread=make_thread()), memory.save_thread(thread=make_thread())
    memory.save_messages(messages=[make_message(name, first if name in "ABC" else second,
                                                at=base_time + timedelta(seconds=i))
                                   for i, name in enumerate("ABCDEF")])
    page = memory.list_messages(thread_id=first["id"], per_page=2, order_by={"direction": "DESC"},
                                include=[{"id": "E", "with_previous_messages": 1, "with_next_messages": 1}])
    assert ids(page) == ["F", "E", "D", "C", "B"]
    assert page.total == 3 and page.has_more is True


def test_date_range_filters(memory, conversation, base_time):
    """Scenario 30."""
    dated = memory.save_thread(thread=make_thread())
    memory.save_messages(messages=[make_message("two-days-ago", dated, at=base_time - timedelta(days=2)),
                                   make_message("yesterday", dated, at=base_time - timedelta(days=1)),
                                   make_message("now", dated, at=base_time)])
    page = memory.list_messages(thread_id=dated["id"], date_range={"start": base_time - timedelta(days=1)})
    assert (ids(page), page.total) == (["yesterday", "now"], 2)

    thread_id = conversation.thread["id"]
    start, end = conversation.messages[1]["created_at"], conversation.messages[3]["created_at"]

    def listed(**date_range):
        return ids(memory.list_messages(thread_id=thread_id, date_range=date_range))

    assert listed(start=start, end=end) == ["msg-2", "msg-3", "msg-4"]
    assert listed(start=start, end=end, start_exclusive=True) == ["msg-3", "msg-4"]
    assert listed(start=start, end=end, end_exclusive=True) == ["msg-2", "msg-3"]
    assert listed(start=start, end=end, start_exclusive=True, end_exclusive=True) == ["msg-3"]
    iso = start.isoformat().replace("+00:00", "Z")
    assert listed(start=iso, end=end.isoformat()) == ["msg-2", "msg-3", "msg-4"]
    assert listed(end=end) == ["msg-1", "msg-2", "msg-3", "msg-4"]
    future = memory.list_messages(thread_id=thread_id, date_range={"start": base_time + timedelta(days=1)})
    assert (future.items, future.total, future.has_more) == ([], 0, False)


def test_date_range_is_exact_to_the_millisecond(memory, base_time):
    """Scenario 31."""
    thread = memory.save_thread(thread=make_thread())
    memory.save_messages(messages=[make_message(f"ms-{i}", thread, at=base_time + timedelta(milliseconds=i))
                                   for i in range(5)])
    bounds = {"start": base_time + timedelta(milliseconds=1), "end": base_time + timedelta(milliseconds=3)}
    assert ids(memory.list_messages(thread_id=thread["id"], date_range=bounds)) == ["ms-1", "ms-2", "ms-3"]
    exclusive = {**bounds, "start_exclusive": True, "end_exclusive": True}
    page = memory.list_messages(thread_id=thread["id"], date_range=exclusive)
    assert (ids(page), page.total) == (["ms-2"], 1)


def test_cursor_paging_with_an_exclusive_end(memory, base_time):
    """Scenario 32."""
    thread = memory.save_thread(thread=make_thread())
    memory.save_messages(messages=[make_message(f"m-{i:02d}", thread, at=base_time + timedelta(seconds=i))
                                   for i in range(1, 11)])
    newest = memory.list_messages(thread_id=thread["id"], per_page=5, order_by={"direction": "DESC"})
    assert ids(newest) == [f"m-{i:02d}" for i in range(10, 5, -1)]
    memory.save_messages(messages=[make_message(f"m-{i:02d}", thread, at=base_time + timedelta(seconds=i))
                                   for i in (11, 12)])
    cursor = newest.items[-1]["created_at"]
    older = memory.list_messages(thread_id=thread["id"], per_page=5, order_by={"direction": "DESC"},
                                 date_range={"end": cursor, "end_exclusive": True})
    assert ids(older) == [f"m-{i:02d}" for i in range(5, 0, -1)]
    assert (older.total, older.has_more) == (5, False)


def test_include_with_a_date_filter(memory, base_time):
    """Scenario 33."""
    thread = memory.save_thread(thread=make_thread())
    memory.save_messages(messages=[make_message(f"m{i}", thread, at=base_time + timedelta(minutes=i))
                                   for i in range(10)])
    date_range = {"start": base_time + timedelta(minutes=4)}

    def listed(page, include):
        return memory.list_messages(thread_id=thread["id"], date_range=date_range, page=page, per_page=2,
                                    include=[{"id": f"m{i}"} for i in include])

    first = listed(0, range(4))
    assert (ids(first), first.total, first.has_more) == ([f"m{i}" for i in range(6)], 6, True)
    last = listed(2, [0])
    assert (ids(last), last.total, last.has_more) == (["m0", "m8", "m9"], 6, False)
    covering = listed(0, range(6, 10))
    assert (ids(covering), covering.total, covering.has_more) == ([f"m{i}" for i in range(4, 10)], 6, False)


def test_message_metadata_filter(memory, base_time):
    """Scenario 34."""
    thread = memory.save_thread(thread=make_thread())
    messages = [make_message("x-1", thread, at=base_time + timedelta(seconds=1),
                             content=v2_content("a", metadata={"topic": "x"})),
                make_message("y-1", thread, at=base_time + timedelta(seconds=2),
                             content=v2_content("b", metadata={"topic": "y"})),
                make_message("none", thread, at=base_time + timedelta(seconds=3)),
                make_message("x-2", thread, at=base_time + timedelta(seconds=4),
                             content=v2_content("c", metadata={"topic": "x", "n": 1}))]
    memory.save_messages(messages=messages)
    insert_raw_messages(memory, [
        {"id": f"legacy-{i}", "thread_id": thread["id"], "resource_id": thread["resource_id"], "role": "user",
         "type": "v2", "content": text, "created_at": base_time + timedelta(seconds=5 + i)}
        for i, text in enumerate(["plain text, not JSON", '"a JSON string"', "[1, 2]", "{broken"])])
    page = memory.list_messages(thread_id=thread["id"], metadata={"topic": "x"})
    assert (ids(page), page.total, page.has_more) == (["x-1", "x-2"], 2, False)
    page = memory.list_messages(thread_id=thread["id"], metadata={"topic": "x"}, per_page=1)
    assert (ids(page), page.total, page.has_more) == (["x-1"], 2, True)
    assert ids(memory.list_messages(thread_id=thread["id"], metadata={"topic": "x", "n": 1})) == ["x-2"]
    assert ids(memory.list_messages_by_resource_id(resource_id=thread["resource_id"], metadata={"topic": "y"})) \
        == ["y-1"]
    everything = memory.list_messages(thread_id=thread["id"])
    assert everything.total == 8
    legacy = {m["id"]: m["content"] for m in everything.items if m["id"].startswith("legacy")}
    assert legacy["legacy-0"] == v2_content("plain text, not JSON")
    assert legacy["legacy-1"] == v2_content("a JSON string")
    assert legacy["legacy-2"] == v2_content("[1, 2]")
    assert legacy["legacy-3"] == v2_content("{broken")


@WITH_APP_SCHEMA
def test_list_messages_validation(memory, backend):
    """Scenario 35."""
    for bad in ("", "   ", [], ["a", ""], ["a", "  "], 5, None):
        with pytest.raises(ValidationError) as info:
            memory.list_messages(thread_id=bad)
        assert info.value.fields == {
            "thread_id": ["thread_id must be a non-empty string or a list of non-empty strings"]}
        assert info.value.id == error_id(backend, "LIST_MESSAGES", "INVALID_INPUT")
    cases = [({"per_page": -5}, {"per_page": ["per_page must be >= 0"]}),
             ({"page": -1}, {"page": ["page must be >= 0"]}),
             ({"per_page": False, "page": 1}, {"page": ["page must be 0 when per_page is False"]}),
             ({"per_page": True}, {"per_page": ["per_page must be False or an integer"]})]
    for kwargs, fields in cases:
        with pytest.raises(ValidationError) as info:
            memory.list_messages(thread_id="t", **kwargs)
        assert info.value.fields == fields
        assert info.value.id == error_id(backend, "LIST_MESSAGES", "INVALID_PAGE")
    with pytest.raises(ValidationError) as info:
        memory.list_messages(thread_id="", page=-1, order_by={"field": "title", "direction": "up", "x": 1},
                             include=[{"id": "m", "with_previous_messages": -1}])
    assert set(info.value.fields) == {"thread_id", "page", "order_by.field", "order_by.direction", "order_by.x",
                                      "include[0].with_previous_messages"}
    assert info.value.fields["order_by.field"] == ["order_by.field must be one of created_at"]
    assert info.value.id == error_id(backend, "LIST_MESSAGES", "INVALID_PAGE")
    with pytest.raises(ValidationError) as info:
        memory.list_messages(thread_id="t", date_range={"start": "nope", "end": 5, "start_exclusive": "yes", "x": 1},
                             include=[{"id": "", "with_next_messages": True, "colour": 1}], metadata={"k": [1]})
    assert info.value.fields == {
        "date_range.start": ["Not a valid datetime."], "date_range.end": ["Not a valid datetime."],
        "date_range.start_exclusive": ["Not a valid boolean."], "date_range.x": ["Unknown field."],
        "include[0].id": ["include[0].id must be a non-empty string"],
        "include[0].with_next_messages": ["with_next_messages must be an integer >= 0"],
        "include[0].colour": ["Unknown field."],
        "metadata": ['Metadata filter value for key "k" must be a string, number, boolean or None']}
    assert info.value.id == error_id(backend, "LIST_MESSAGES", "INVALID_METADATA_VALUE")


@pytest.fixture
def two_resources(memory, base_time):
    """Resource A: thread A1 (a1, a2, a3), thread A2 (a4); resource B: thread B1 (b1)."""
    a, b = f"resource-a-{uuid.uuid4()}", f"resource-b-{uuid.uuid4()}"
    a1 = memory.save_thread(thread=make_thread(resource_id=a))
    a2 = memory.save_thread(thread=make_thread(resource_id=a))
    b1 = memory.save_thread(thread=make_thread(resource_id=b))
    placement = [("a1", a1), ("a2", a1), ("a3", a1), ("a4", a2), ("b1", b1)]
    memory.save_messages(messages=[make_message(name, thread, at=base_time + timedelta(seconds=i))
                                   for i, (name, thread) in enumerate(placement)])
    return {"A": a, "B": b, "A1": a1["id"], "A2": a2["id"], "B1": b1["id"]}


def test_include_windows_are_scoped_to_the_resource(memory, two_resources):
    """Scenario 36."""
    r = two_resources
    page = memory.list_messages(thread_id=r["B1"], resource_id=r["B"],
                                include=[{"id": "a2", "with_previous_messages": 2, "with_next_messages": 2}])
    assert ids(page) == ["b1"]
    around_a2 = [{"id": "a2", "with_previous_messages": 1, "with_next_messages": 1}]
    assert ids(memory.list_messages(thread_id=r["A2"], resource_id=r["A"], include=around_a2)) == \
        ["a1", "a2", "a3", "a4"]
    assert ids(memory.list_messages(thread_id=r["B1"], include=around_a2)) == ["a1", "a2", "a3", "b1"]
    misnamed = [{"id": "a2", "thread_id": r["B1"], "with_previous_messages": 1, "with_next_messages": 1}]
    assert ids(memory.list_messages(thread_id=r["A2"], resource_id=r["A"], include=misnamed)) == \
        ["a1", "a2", "a3", "a4"]
    assert ids(memory.list_messages(thread_id=[r["A1"], r["B1"]])) == ["a1", "a2", "a3", "b1"]


@WITH_APP_SCHEMA
def test_list_messages_by_resource_id(memory, two_resources, backend):
    """Scenario 37."""
    r = two_resources
    page = memory.list_messages_by_resource_id(resource_id=r["A"])
    assert (ids(page), page.total, page.has_more) == (["a1", "a2", "a3", "a4"], 4, False)
    unknown = memory.list_messages_by_resource_id(resource_id="no-such-resource")
    assert (unknown.items, unknown.total) == ([], 0)
    page = memory.list_messages_by_resource_id(resource_id=r["A"], per_page=2)
    assert (ids(page), page.total, page.has_more) == (["a1", "a2"], 4, True)
    page = memory.list_messages_by_resource_id(resource_id=r["B"], per_page=0,
                                               include=[{"id": "a2"}, {"id": "b1"}])
    assert (ids(page), page.total) == (["b1"], 1)
    for bad in ("", "  ", None):
        with pytest.raises(ValidationError) as info:
            memory.list_messages_by_resource_id(resource_id=bad)
        assert info.value.fields == {"resource_id": ["resource_id must be a non-empty string"]}
        assert info.value.id == error_id(backend, "LIST_MESSAGES_BY_RESOURCE_ID", "INVALID_INPUT")


def test_list_messages_by_id(memory, two_resources):
    """Scenario 38."""
    assert memory.list_messages_by_id(message_ids=[]) == []
    found = memory.list_messages_by_id(message_ids=["b1", "a4", "a1", "unknown", "a3", "a2", "a1"])
    assert ids(found) == ["a1", "a2", "a3", "a4", "b1"]
    assert {m["thread_id"] for m in found} == {two_resources["A1"], two_resources["A2"], two_resources["B1"]}
    created = [m["created_at"] for m in found]
    assert created == sorted(created)


# =========================================================================== Saving, updating, deleting

@WITH_APP_SCHEMA
def test_save_messages_returns_them_as_stored(memory):
    """Scenario 39."""
    thread = memory.save_thread(thread=make_thread())
    before = utc_now()
    given = [make_message("m-1", thread), make_message("m-2", thread, role="assistant", type="custom")]
    saved = memory.save_messages(messages=given)
    assert [set(m) for m in saved] == [MESSAGE_KEYS, MESSAGE_KEYS]
    for message, original in zip(saved, given):
        assert {key: message[key] for key in original} == original
        assert before <= message["created_at"] <= utc_now()
    assert saved[0]["type"] is None and saved[1]["type"] == "custom"
    assert memory.list_messages(thread_id=thread["id"]).items == sorted(saved, key=lambda m: (m["created_at"], m["id"]))
    assert memory.save_messages(messages=[]) == []

    ordered = memory.save_thread(thread=make_thread())
    for name in ("First", "Second", "Third"):
        memory.save_messages(messages=[make_message(name, ordered, text=name)])
        time.sleep(0.002)
    assert ids(memory.list_messages(thread_id=ordered["id"])) == ["First", "Second", "Third"]


def test_one_clock_reading_per_call(memory):
    """README *Input values*: "now" is one clock reading per call, used for every row it writes."""
    thread = memory.save_thread(thread=make_thread())
    saved = memory.save_messages(messages=[make_message(f"m-{i}", thread) for i in range(30)])
    assert len({m["created_at"] for m in saved}) == 1
    assert memory.get_thread_by_id(thread_id=thread["id"])["updated_at"] == saved[0]["created_at"]
    clone = memory.clone_thread(source_thread_id=thread["id"])["thread"]
    assert clone["metadata"]["clone"]["clonedAt"] == ThreadSchema().dump(clone)["createdAt"]


def test_plain_string_content_is_stored_as_v2(memory):
    """§3.4: a plain ``str`` content becomes one text part."""
    thread = memory.save_thread(thread=make_thread())
    saved = memory.save_messages(messages=[make_message("m-1", thread, content="hello")])
    assert saved[0]["content"] == v2_content("hello")
    assert memory.list_messages_by_id(message_ids=["m-1"])[0]["content"] == v2_content("hello")


@WITH_APP_SCHEMA
def test_invalid_batch_writes_nothing(memory, backend):
    """Scenario 40."""
    thread = memory.save_thread(thread=make_thread())
    with pytest.raises(ValidationError) as info:
        memory.save_messages(messages=[make_message("m-1", thread), {**make_message("m-2", thread),
                                                                     "resource_id": None}])
    assert list(info.value.fields) == ["messages[1].resource_id"]
    assert info.value.id == error_id(backend, "SAVE_MESSAGES", "INVALID_INPUT")
    assert memory.list_messages(thread_id=thread["id"]).total == 0

    with pytest.raises(ValidationError) as info:
        memory.save_messages(messages=[
            make_message("m-1", thread, role="robot"),
            {"id": "", "thread_id": thread["id"], "resource_id": "r", "role": "user", "content": {"format": 1},
             "colour": "red"},
            make_message("m-3", thread, created_at="yesterday")])
    assert set(info.value.fields) == {"messages[0].role", "messages[1].id", "messages[1].content.format",
                                      "messages[1].content.parts", "messages[1].colour", "messages[2].created_at"}
    assert info.value.fields["messages[1].colour"] == ["Unknown field."]
    assert info.value.fields["messages[2].created_at"] == ["Not a valid datetime."]
    assert memory.list_messages(thread_id=thread["id"]).total == 0


@WITH_APP_SCHEMA
def test_batch_naming_a_missing_thread_writes_nothing(memory, backend):
    """Scenario 41."""
    thread = memory.save_thread(thread=make_thread())
    with pytest.raises(NotFoundError) as info:
        memory.save_messages(messages=[make_message("m-1", thread),
                                       make_message("m-2", {"id": "no-such-thread", "resource_id": "r"})])
    assert info.value.message == "Thread no-such-thread not found"
    assert info.value.details == {"thread_id": "no-such-thread"}
    assert info.value.id == error_id(backend, "SAVE_MESSAGES", "NOT_FOUND")
    assert memory.list_messages_by_id(message_ids=["m-1", "m-2"]) == []
    assert memory.get_thread_by_id(thread_id=thread["id"]) == thread


def test_saving_an_existing_id_replaces_it_and_keeps_created_at(memory, base_time):
    """Scenario 42."""
    thread = memory.save_thread(thread=make_thread())
    original = memory.save_messages(messages=[make_message("m-1", thread, at=base_time, text="old")])[0]
    again = memory.save_messages(messages=[make_message("m-1", thread, at=base_time + timedelta(hours=1),
                                                        text="new", role="assistant")])[0]
    assert again["created_at"] == original["created_at"] == base_time
    assert again["content"] == v2_content("new") and again["role"] == "assistant"
    page = memory.list_messages(thread_id=thread["id"])
    assert page.total == 1 and page.items == [again]


def test_duplicate_ids_in_one_batch(memory, base_time):
    """§4.3: the last occurrence's fields win, the first occurrence's ``created_at`` is used."""
    thread = memory.save_thread(thread=make_thread())
    saved = memory.save_messages(messages=[
        make_message("dup", thread, at=base_time, text="first"),
        make_message("other", thread, at=base_time + timedelta(seconds=1)),
        make_message("dup", thread, at=base_time + timedelta(seconds=5), text="last")])
    assert ids(saved) == ["dup", "other"]
    assert saved[0]["content"] == v2_content("last") and saved[0]["created_at"] == base_time
    assert memory.list_messages(thread_id=thread["id"]).items == saved


def test_saving_an_existing_id_into_another_thread_moves_it(memory):
    """Scenario 43."""
    first, second = memory.save_thread(thread=make_thread()), memory.save_thread(thread=make_thread())
    original = memory.save_messages(messages=[make_message("m-1", first, text="old")])[0]
    before = {t["id"]: memory.get_thread_by_id(thread_id=t["id"])["updated_at"] for t in (first, second)}
    time.sleep(0.01)
    moved = memory.save_messages(messages=[make_message("m-1", second, text="new")])[0]
    assert memory.list_messages(thread_id=first["id"]).total == 0
    assert memory.list_messages(thread_id=second["id"]).items == [moved]
    assert moved["content"] == v2_content("new") and moved["created_at"] == original["created_at"]
    for thread_id, updated_at in before.items():
        assert memory.get_thread_by_id(thread_id=thread_id)["updated_at"] > updated_at


def test_update_messages_role_and_content_patches(memory):
    """Scenario 44."""
    thread = memory.save_thread(thread=make_thread())
    memory.save_messages(messages=[make_message("m-1", thread, text="hello"),
                                   make_message("m-2", thread, content=v2_content("x", metadata={"initial": True}))])
    updated = memory.update_messages(messages=[{"id": "m-1", "role": "assistant"}])
    assert [m["role"] for m in updated] == ["assistant"]
    assert memory.list_messages_by_id(message_ids=["m-1"])[0]["role"] == "assistant"

    patched = memory.update_messages(messages=[{"id": "m-1", "content": {"metadata": {"k": 1}}}])[0]
    assert patched["content"] == v2_content("hello", metadata={"k": 1})
    patched = memory.update_messages(messages=[{"id": "m-1", "content": {"content": "new"}}])[0]
    assert patched["content"] == {**v2_content("hello", metadata={"k": 1}), "content": "new"}
    merged = memory.update_messages(messages=[{"id": "m-2", "content": {"metadata": {"updated": True}}}])[0]
    assert merged["content"]["metadata"] == {"initial": True, "updated": True}
    assert memory.list_messages_by_id(message_ids=["m-1", "m-2"]) == [patched, merged]
    parts = memory.update_messages(messages=[{"id": "m-2", "content": {"parts": [{"type": "text", "text": "y"}]}}])
    assert parts[0]["content"]["parts"] == [{"type": "text", "text": "y"}]
    assert parts[0]["content"]["metadata"] == {"initial": True, "updated": True}
    typed = memory.update_messages(messages=[{"id": "m-1", "type": "custom", "resource_id": "other"}])[0]
    assert (typed["type"], typed["resource_id"]) == ("custom", "other")
    assert memory.update_messages(messages=[{"id": "m-1", "type": None}])[0]["type"] is None
    assert memory.update_messages(messages=[]) == []


def test_update_messages_patches_legacy_content(memory, base_time):
    """§4.3: stored content that is not a JSON object is converted before the patch."""
    thread = memory.save_thread(thread=make_thread())
    insert_raw_messages(memory, [{"id": "legacy", "thread_id": thread["id"], "resource_id": thread["resource_id"],
                                  "role": "user", "type": "v2", "content": "plain", "created_at": base_time}])
    updated = memory.update_messages(messages=[{"id": "legacy", "content": {"metadata": {"k": 1}}}])[0]
    assert updated["content"] == v2_content("plain", metadata={"k": 1})


def test_write_back_full_content_keeps_parts_and_metadata(memory):
    """Scenario 45."""
    thread = memory.save_thread(thread=make_thread())
    content = {"format": 2, "content": "see file",
               "parts": [{"type": "text", "text": "see file"},
                         {"type": "file", "mimeType": "image/png", "data": "iVBORw0KGgo="}],
               "metadata": {"source": "upload", "mastra": {"existing": 1}}}
    memory.save_messages(messages=[make_message("m-1", thread, content=content)])
    read = memory.list_messages_by_id(message_ids=["m-1"])[0]["content"]
    read["metadata"]["mastra"] = {**read["metadata"]["mastra"], "observed": True, "tokens": 12}
    updated = memory.update_messages(messages=[{"id": "m-1", "content": read}])[0]["content"]
    assert updated["parts"] == content["parts"]
    assert updated["metadata"] == {"source": "upload", "mastra": {"existing": 1, "observed": True, "tokens": 12}}
    assert memory.list_messages(thread_id=thread["id"]).items[0]["content"] == updated


def test_update_messages_bumps_and_moves(memory):
    """Scenario 46."""
    first, second = memory.save_thread(thread=make_thread()), memory.save_thread(thread=make_thread())
    memory.save_messages(messages=[make_message("m-1", first), make_message("m-2", first)])
    before = memory.get_thread_by_id(thread_id=first["id"])["updated_at"]
    time.sleep(0.01)
    updated = memory.update_messages(messages=[{"id": "m-1", "role": "assistant"},
                                               {"id": "m-2", "content": {"content": "changed"}}])
    assert ids(updated) == ["m-1", "m-2"]
    assert updated[0]["role"] == "assistant" and updated[1]["content"]["content"] == "changed"
    after = memory.get_thread_by_id(thread_id=first["id"])["updated_at"]
    assert after > before

    second_before = memory.get_thread_by_id(thread_id=second["id"])["updated_at"]
    time.sleep(0.01)
    moved = memory.update_messages(messages=[{"id": "m-1", "thread_id": second["id"]},
                                             {"id": "m-2", "thread_id": second["id"]}])
    assert [m["thread_id"] for m in moved] == [second["id"], second["id"]]
    assert memory.get_thread_by_id(thread_id=first["id"])["updated_at"] > after
    assert memory.get_thread_by_id(thread_id=second["id"])["updated_at"] > second_before
    assert memory.list_messages(thread_id=first["id"]).total == 0
    assert ids(memory.list_messages(thread_id=second["id"])) == ["m-1", "m-2"]

    untouched = memory.list_messages(thread_id=second["id"]).items
    thread_before = memory.get_thread_by_id(thread_id=second["id"])
    time.sleep(0.002)
    assert memory.update_messages(messages=[{"id": "no-such-message", "role": "assistant"}]) == []
    assert memory.update_messages(messages=[{"id": "m-1"}]) == [untouched[0]]
    assert memory.list_messages(thread_id=second["id"]).items == untouched
    assert memory.get_thread_by_id(thread_id=second["id"]) == thread_before


def test_update_messages_move_to_missing_thread_raises(memory, backend):
    """§4.3: the target of a move must exist; nothing changes."""
    thread = memory.save_thread(thread=make_thread())
    memory.save_messages(messages=[make_message("m-1", thread)])
    with pytest.raises(NotFoundError) as info:
        memory.update_messages(messages=[{"id": "m-1", "role": "assistant"},
                                         {"id": "m-1", "thread_id": "no-such-thread"}])
    assert info.value.message == "Thread no-such-thread not found"
    assert info.value.id == error_id(backend, "UPDATE_MESSAGES", "NOT_FOUND")
    message = memory.list_messages_by_id(message_ids=["m-1"])[0]
    assert (message["thread_id"], message["role"]) == (thread["id"], "user")


def test_update_messages_cannot_change_created_at(memory, backend, base_time):
    """Scenario 47."""
    thread = memory.save_thread(thread=make_thread())
    saved = memory.save_messages(messages=[make_message("m-1", thread, at=base_time)])
    with pytest.raises(ValidationError) as info:
        memory.update_messages(messages=[{"id": "m-1", "role": "assistant"},
                                         {"id": "m-1", "created_at": base_time + timedelta(days=1)},
                                         {"id": "m-1", "colour": "red"}])
    assert info.value.fields == {"messages[1].created_at": ["created_at cannot be updated"],
                                 "messages[2].colour": ["Unknown field."]}
    assert info.value.id == error_id(backend, "UPDATE_MESSAGES", "INVALID_INPUT")
    assert memory.list_messages_by_id(message_ids=["m-1"]) == saved


@WITH_APP_SCHEMA
def test_delete_messages(memory, base_time):
    """Scenario 48."""
    thread = memory.save_thread(thread=make_thread())
    memory.save_messages(messages=[make_message(f"m-{i}", thread, at=base_time + timedelta(seconds=i))
                                   for i in range(1, 6)])
    before = memory.get_thread_by_id(thread_id=thread["id"])["updated_at"]
    time.sleep(0.01)
    assert memory.delete_messages(message_ids=["m-1", "m-2", "m-4"]) is None
    assert ids(memory.list_messages(thread_id=thread["id"])) == ["m-3", "m-5"]
    assert memory.get_thread_by_id(thread_id=thread["id"])["updated_at"] > before
    assert memory.delete_messages(message_ids=[]) is None
    assert memory.delete_messages(message_ids=["unknown"]) is None
    assert ids(memory.list_messages(thread_id=thread["id"])) == ["m-3", "m-5"]

    other = memory.save_thread(thread=make_thread())
    memory.save_messages(messages=[make_message(f"o-{i}", other, at=base_time + timedelta(seconds=i))
                                   for i in range(1, 4)])
    memory.delete_messages(message_ids=["m-3", "o-2"])
    assert ids(memory.list_messages(thread_id=thread["id"])) == ["m-5"]
    assert ids(memory.list_messages(thread_id=other["id"])) == ["o-1", "o-3"]

    long = memory.save_thread(thread=make_thread())
    memory.save_messages(messages=[make_message(f"l-{i:03d}", long, at=base_time + timedelta(seconds=i))
                                   for i in range(100)])
    memory.delete_messages(message_ids=[f"l-{i:03d}" for i in range(50, 100)])
    page = memory.list_messages(thread_id=long["id"], per_page=False)
    assert ids(page) == [f"l-{i:03d}" for i in range(50)]


# =========================================================================== Cloning

@WITH_APP_SCHEMA
def test_clone_thread(memory, conversation):
    """Scenario 49."""
    source = conversation.thread
    source_messages = memory.list_messages(thread_id=source["id"]).items
    source_before = memory.get_thread_by_id(thread_id=source["id"])
    before = utc_now()
    result = memory.clone_thread(source_thread_id=source["id"])
    assert set(result) == {"thread", "cloned_messages", "message_id_map"}
    clone = result["thread"]
    assert set(clone) == THREAD_KEYS and clone["id"] != source["id"]
    assert clone["title"] == "Clone of Test Thread" and clone["resource_id"] == source["resource_id"]
    info = clone["metadata"]["clone"]
    assert info["sourceThreadId"] == source["id"] and info["lastMessageId"] == "msg-5"
    assert ISO_Z.match(info["clonedAt"])
    assert before <= clone["created_at"] == clone["updated_at"] <= utc_now()
    assert clone["metadata"] == {"clone": info}
    assert memory.get_thread_by_id(thread_id=clone["id"]) == clone

    copies = result["cloned_messages"]
    assert len(copies) == 5 and not set(ids(copies)) & set(ids(source_messages))
    assert result["message_id_map"] == {orig["id"]: copy["id"] for orig, copy in zip(source_messages, copies)}
    for original, copy in zip(source_messages, copies):
        assert {**copy, "id": original["id"], "thread_id": source["id"]} == original
    assert memory.list_messages(thread_id=clone["id"]).items == copies
    assert memory.get_thread_by_id(thread_id=source["id"]) == source_before
    assert memory.list_messages(thread_id=source["id"]).items == source_messages


def test_clone_thread_options_and_errors(memory, conversation, backend):
    """Scenario 50."""
    source = conversation.thread
    limited = memory.clone_thread(source_thread_id=source["id"], message_limit=2)
    assert list(limited["message_id_map"]) == ["msg-4", "msg-5"]
    assert limited["thread"]["metadata"]["clone"]["lastMessageId"] == "msg-5"
    unlimited = memory.clone_thread(source_thread_id=source["id"], message_limit=0)
    assert len(unlimited["cloned_messages"]) == 5

    start, end = conversation.messages[1]["created_at"], conversation.messages[3]["created_at"]
    dated = memory.clone_thread(source_thread_id=source["id"], start_date=start, end_date=end)
    assert list(dated["message_id_map"]) == ["msg-2", "msg-3", "msg-4"]
    assert list(memory.clone_thread(source_thread_id=source["id"], start_date=end.isoformat())
                ["message_id_map"]) == ["msg-4", "msg-5"]
    picked = memory.clone_thread(source_thread_id=source["id"], message_ids=["msg-3", "msg-1", "msg-6"],
                                 message_limit=5)
    assert list(picked["message_id_map"]) == ["msg-1", "msg-3"]
    nothing = memory.clone_thread(source_thread_id=source["id"], message_ids=[])
    assert nothing["cloned_messages"] == [] and "lastMessageId" not in nothing["thread"]["metadata"]["clone"]

    custom = memory.clone_thread(source_thread_id=source["id"], new_thread_id="my-clone", resource_id="new-owner",
                                 title="Custom", metadata={"purpose": "test"}, message_limit=1)
    assert custom["thread"]["id"] == "my-clone" and custom["thread"]["title"] == "Custom"
    assert custom["thread"]["resource_id"] == "new-owner"
    assert custom["thread"]["metadata"]["purpose"] == "test" and "clone" in custom["thread"]["metadata"]
    assert [m["resource_id"] for m in custom["cloned_messages"]] == ["new-owner"]

    counts = (memory.list_threads().total, memory.list_messages_by_resource_id(resource_id="new-owner").total)
    with pytest.raises(ConflictError) as info:
        memory.clone_thread(source_thread_id=source["id"], new_thread_id="my-clone")
    assert info.value.message == "Thread with id my-clone already exists"
    assert info.value.id == error_id(backend, "CLONE_THREAD", "CONFLICT")
    assert (memory.list_threads().total, memory.list_messages_by_resource_id(resource_id="new-owner").total) \
        == counts
    assert memory.get_thread_by_id(thread_id="my-clone") == custom["thread"]

    with pytest.raises(NotFoundError) as info:
        memory.clone_thread(source_thread_id="no-such-thread")
    assert info.value.message == "Source thread with id no-such-thread not found"
    assert info.value.id == error_id(backend, "CLONE_THREAD", "NOT_FOUND")
    assert memory.list_threads().total == counts[0]

    untitled = memory.save_thread(thread=make_thread(title=""))
    assert memory.clone_thread(source_thread_id=untitled["id"])["thread"]["title"] == ""
    with pytest.raises(ValidationError) as info:
        memory.clone_thread(source_thread_id=source["id"], message_limit=-1)
    assert list(info.value.fields) == ["message_limit"]


# =========================================================================== Mastra 1.71 (fidelity-1.71.md §1, §4.1–4.3)

@WITH_APP_SCHEMA
def test_signal_role_is_accepted_and_other_roles_are_not(memory, backend):
    """fidelity-1.71.md §1 (V3): ``signal`` on both write paths (the fast path and the schema's
    wire form) and on ``update_messages``; ``robot`` is still refused and nothing is written."""
    thread = memory.save_thread(thread=make_thread())
    fast = make_message("m-signal", thread, role="signal")
    wire = MessageSchema().dump({**make_message("m-wire", thread, role="signal"), "type": None,
                                 "created_at": utc_now()})
    memory.save_messages(messages=[fast, wire, make_message("m-user", thread)])
    memory.update_messages(messages=[{"id": "m-user", "role": "signal"}])
    assert [m["role"] for m in memory.list_messages_by_id(message_ids=["m-signal", "m-wire", "m-user"])] \
        == ["signal"] * 3
    with pytest.raises(ValidationError) as info:
        memory.save_messages(messages=[make_message("m-robot", thread, role="robot")])
    assert info.value.fields == {"messages[0].role": ["Must be one of: system, user, assistant, tool, signal."]}
    with pytest.raises(ValidationError) as info:
        memory.update_messages(messages=[{"id": "m-user", "role": "robot"}])
    assert list(info.value.fields) == ["messages[0].role"]
    assert memory.list_messages_by_id(message_ids=["m-robot"]) == []
    assert memory.list_messages_by_id(message_ids=["m-user"])[0]["role"] == "signal"


@WITH_APP_SCHEMA
def test_update_thread_resource_id_moves_the_thread_and_its_messages(memory, base_time):
    """fidelity-1.71.md §4.1 (M1), the acceptance example."""
    thread = memory.save_thread(thread=make_thread(id="t-move", resource_id="res-a"))
    memory.save_messages(messages=[make_message(f"mv-{i}", thread, at=base_time + timedelta(seconds=i))
                                   for i in range(3)])
    bystander = memory.save_thread(thread=make_thread(resource_id="res-a"))
    memory.save_messages(messages=[make_message("by-1", bystander)])
    time.sleep(0.002)
    moved = memory.update_thread_resource_id(thread_id="t-move", resource_id="res-b")
    assert moved == memory.get_thread_by_id(thread_id="t-move")
    assert moved["resource_id"] == "res-b" and moved["created_at"] == thread["created_at"]
    assert moved["updated_at"] > thread["updated_at"]
    assert (moved["title"], moved["metadata"]) == (thread["title"], thread["metadata"])
    assert memory.list_messages(thread_id="t-move", resource_id="res-b").total == 3
    assert memory.list_messages_by_resource_id(resource_id="res-b").total == 3
    assert [m["created_at"] for m in memory.list_messages(thread_id="t-move").items] == \
        [base_time + timedelta(seconds=i) for i in range(3)]
    assert ids(memory.list_threads(resource_id="res-a")) == [bystander["id"]]
    assert ids(memory.list_messages_by_resource_id(resource_id="res-a")) == ["by-1"]
    assert memory.get_resource_by_id(resource_id="res-b") is None  # resources are neither created nor checked

    again = memory.update_thread_resource_id(thread_id="t-move", resource_id="res-b")
    assert again == moved  # nothing written: updated_at unchanged
    memory.update_thread_resource_id(thread_id=bystander["id"], resource_id="res-b")
    assert memory.list_threads(resource_id="res-a").total == 0


def test_update_thread_resource_id_bad_input_and_missing_thread(memory, backend):
    """fidelity-1.71.md §4.1: validation first (both arguments), a missing thread is NOT_FOUND;
    neither writes anything."""
    thread = memory.save_thread(thread=make_thread())
    with pytest.raises(ValidationError) as info:
        memory.update_thread_resource_id(thread_id="", resource_id=5)
    assert info.value.fields == {"thread_id": ["thread_id must be a non-empty string"],
                                 "resource_id": ["resource_id must be a non-empty string"]}
    assert info.value.id == error_id(backend, "UPDATE_THREAD_RESOURCE_ID", "INVALID_INPUT")
    with pytest.raises(NotFoundError) as info:
        memory.update_thread_resource_id(thread_id="no-such-thread", resource_id="r")
    assert info.value.message == "Thread no-such-thread not found"
    assert info.value.details["thread_id"] == "no-such-thread"
    assert info.value.id == error_id(backend, "UPDATE_THREAD_RESOURCE_ID", "NOT_FOUND")
    assert memory.list_threads().total == 1 and memory.get_thread_by_id(thread_id=thread["id"]) == thread


@WITH_APP_SCHEMA
def test_copy_thread_copies_without_returning_messages(memory, conversation, backend):
    """fidelity-1.71.md §4.2 (M2), the acceptance example; errors carry copy_thread's ids."""
    source = conversation.thread
    copied = memory.copy_thread(source_thread_id=source["id"], new_thread_id="c", message_limit=2)
    assert set(copied) == {"thread", "message_id_map"}
    assert list(copied["message_id_map"]) == ["msg-4", "msg-5"]
    assert copied["thread"] == memory.get_thread_by_id(thread_id="c")
    assert copied["thread"]["title"] == "Clone of Test Thread"
    assert copied["thread"]["metadata"]["clone"]["lastMessageId"] == "msg-5"
    copies = memory.list_messages(thread_id="c").items
    assert ids(copies) == list(copied["message_id_map"].values())
    for original, copy in zip(conversation.messages[3:], copies):
        assert copy == {**stored(original), "id": copied["message_id_map"][original["id"]], "thread_id": "c"}

    whole = memory.copy_thread(source_thread_id=source["id"])
    assert list(whole["message_id_map"]) == [f"msg-{i}" for i in range(1, 6)]
    assert memory.list_messages(thread_id=whole["thread"]["id"]).total == 5

    with pytest.raises(ConflictError) as info:
        memory.copy_thread(source_thread_id=source["id"], new_thread_id="c")
    assert info.value.message == "Thread with id c already exists"
    assert info.value.id == error_id(backend, "COPY_THREAD", "CONFLICT")
    with pytest.raises(NotFoundError) as info:
        memory.copy_thread(source_thread_id="nope")
    assert info.value.message == "Source thread with id nope not found"
    assert info.value.id == error_id(backend, "COPY_THREAD", "NOT_FOUND")
    threads = memory.list_threads().total
    with pytest.raises(ValidationError) as info:
        memory.copy_thread(source_thread_id=source["id"], message_limit=True, title=3, message_ids="msg-1")
    assert set(info.value.fields) == {"message_limit", "title", "message_ids"}
    assert info.value.id == error_id(backend, "COPY_THREAD", "INVALID_INPUT")
    assert memory.list_threads().total == threads
    assert memory.list_messages(thread_id="c").total == 2


@pytest.mark.parametrize("method", ["copy_thread", "clone_thread"])
def test_copies_belong_to_the_new_threads_resource_and_empty_title_is_none(memory, base_time, method):
    """fidelity-1.71.md §4.2, the two fixes: each copy's ``resource_id`` is the new thread's (the
    given one, else the source thread's), whatever the original message's; a title of ``""``
    counts as not given."""
    thread = memory.save_thread(thread=make_thread(resource_id="owner", title="Notes"))
    memory.save_messages(messages=[make_message("own", thread, at=base_time),
                                   make_message("foreign", thread, resource_id="someone-else",
                                                at=base_time + timedelta(seconds=1))])
    insert_raw_messages(memory, [{"id": "legacy", "thread_id": thread["id"], "resource_id": None, "role": "user",
                                  "type": "v2", "content": json.dumps(v2_content("old")),
                                  "created_at": base_time + timedelta(seconds=2)}])
    copy = getattr(memory, method)
    kept = copy(source_thread_id=thread["id"], title="")
    assert kept["thread"]["title"] == "Clone of Notes"
    assert [m["resource_id"] for m in memory.list_messages(thread_id=kept["thread"]["id"]).items] == ["owner"] * 3
    moved = copy(source_thread_id=thread["id"], resource_id="new-owner")
    assert [m["resource_id"] for m in memory.list_messages(thread_id=moved["thread"]["id"]).items] \
        == ["new-owner"] * 3
    if method == "clone_thread":
        assert [m["resource_id"] for m in moved["cloned_messages"]] == ["new-owner"] * 3


def test_patch_thread_is_update_thread_with_its_own_ids(memory, backend):
    """fidelity-1.71.md §4.3 (M3)."""
    assert memory.supports_partial_thread_update is True
    thread = memory.save_thread(thread=make_thread(id="t", metadata={"a": 1}))
    patched = memory.patch_thread(id="t", metadata={"k": 1})
    assert patched == memory.get_thread_by_id(thread_id="t")
    assert patched["title"] == thread["title"] and patched["metadata"] == {"a": 1, "k": 1}
    assert memory.patch_thread(id="t", title="New")["title"] == "New"
    with pytest.raises(NotFoundError) as info:
        memory.patch_thread(id="missing", title="x")
    assert info.value.id == error_id(backend, "PATCH_THREAD", "NOT_FOUND")
    with pytest.raises(ValidationError) as info:
        memory.patch_thread(id="t", title=None, metadata="x")
    assert set(info.value.fields) == {"title", "metadata"}
    assert info.value.id == error_id(backend, "PATCH_THREAD", "INVALID_INPUT")
    assert memory.get_thread_by_id(thread_id="t")["metadata"] == {"a": 1, "k": 1}


#: Messages of the copy that must never sit in Python memory (fidelity-1.71.md §4.2).
LARGE_THREAD = 100_000


@pytest.mark.backends("sqlite", "postgres")
def test_copy_thread_of_100000_messages_keeps_them_in_the_database(memory, base_time):
    """fidelity-1.71.md §4.2: SQLite and PostgreSQL copy the rows with ``INSERT … SELECT``; the
    traced Python peak of the call stays far below the thread's ~100 MB of content (the ids and
    their map are what it holds)."""
    import tracemalloc

    thread = memory.save_thread(thread=make_thread(id="big"))
    content = json.dumps(v2_content("x" * 1000))
    for start in range(0, LARGE_THREAD, 10_000):
        insert_raw_messages(memory, [{"id": f"big-{i:06d}", "thread_id": "big", "resource_id": thread["resource_id"],
                                      "role": "user", "type": "v2", "content": content,
                                      "created_at": base_time + timedelta(milliseconds=i)}
                                     for i in range(start, start + 10_000)])
    tracemalloc.start()
    try:
        copied = memory.copy_thread(source_thread_id="big", new_thread_id="big-copy")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    print(f"copy_thread of {LARGE_THREAD} messages: Python peak {peak / 2**20:.1f} MiB")
    assert len(copied["message_id_map"]) == LARGE_THREAD
    assert peak < 40 * 2**20  # the content alone is ~100 MB
    page = memory.list_messages(thread_id="big-copy", per_page=2)
    assert page.total == LARGE_THREAD
    assert [m["content"]["content"] for m in page.items] == ["x" * 1000] * 2
    assert ids(page) == [copied["message_id_map"]["big-000000"], copied["message_id_map"]["big-000001"]]


# =========================================================================== Resources and working memory

@WITH_APP_SCHEMA
def test_save_and_get_resource(memory):
    """Scenario 51."""
    resource = {"id": f"resource-{uuid.uuid4()}", "working_memory": "# About the user", "metadata": {"plan": "pro"}}
    saved = memory.save_resource(resource=resource)
    assert {key: saved[key] for key in resource} == resource
    assert set(saved) == {"id", "working_memory", "metadata", "created_at", "updated_at"}
    assert saved["updated_at"] == saved["created_at"]
    assert memory.get_resource_by_id(resource_id=resource["id"]) == saved

    fixed = {"id": "resource-2023", "working_memory": None, "metadata": {},
             "created_at": datetime(2023, 3, 4, 5, 6, 7, 890000, tzinfo=UTC),
             "updated_at": datetime(2023, 6, 7, 8, 9, 10, 111000, tzinfo=UTC)}
    assert memory.save_resource(resource=fixed) == fixed
    assert memory.get_resource_by_id(resource_id="resource-2023") == fixed
    assert memory.get_resource_by_id(resource_id="unknown") is None


def test_save_resource_replaces_everything(memory):
    """§4.5: upsert by id, full replacement including ``created_at``."""
    first = memory.save_resource(resource={"id": "r", "working_memory": "a", "metadata": {"a": 1},
                                           "created_at": datetime(2024, 1, 1, tzinfo=UTC)})
    second = memory.save_resource(resource={"id": "r", "created_at": datetime(2025, 1, 1, tzinfo=UTC)})
    assert second == {"id": "r", "working_memory": None, "metadata": {},
                      "created_at": datetime(2025, 1, 1, tzinfo=UTC), "updated_at": datetime(2025, 1, 1, tzinfo=UTC)}
    assert memory.get_resource_by_id(resource_id="r") == second != first


@WITH_APP_SCHEMA
def test_update_resource(memory):
    """Scenario 52."""
    memory.save_resource(resource={"id": "r", "working_memory": "old", "metadata": {"a": 1}})
    both = memory.update_resource(resource_id="r", working_memory="new", metadata={"b": 2})
    assert (both["working_memory"], both["metadata"]) == ("new", {"a": 1, "b": 2})
    memory_only = memory.update_resource(resource_id="r", working_memory="newer")
    assert (memory_only["working_memory"], memory_only["metadata"]) == ("newer", {"a": 1, "b": 2})
    metadata_only = memory.update_resource(resource_id="r", metadata={"a": 3})
    assert (metadata_only["working_memory"], metadata_only["metadata"]) == ("newer", {"a": 3, "b": 2})
    cleared = memory.update_resource(resource_id="r", working_memory=None)
    assert cleared["working_memory"] is None and cleared["metadata"] == {"a": 3, "b": 2}
    assert memory.get_resource_by_id(resource_id="r") == cleared
    with pytest.raises(ValidationError) as info:
        memory.update_resource(resource_id="r", metadata=None, working_memory=5)
    assert set(info.value.fields) == {"metadata", "working_memory"}
    assert memory.get_resource_by_id(resource_id="r") == cleared


def test_update_resource_creates_a_missing_one(memory):
    """Scenario 53."""
    before = utc_now()
    created = memory.update_resource(resource_id="new", working_memory="# Notes")
    assert (created["id"], created["working_memory"], created["metadata"]) == ("new", "# Notes", {})
    assert before <= created["created_at"] == created["updated_at"] <= utc_now()
    assert memory.get_resource_by_id(resource_id="new") == created
    with_metadata = memory.update_resource(resource_id="other", metadata={"k": "v"})
    assert (with_metadata["working_memory"], with_metadata["metadata"]) == (None, {"k": "v"})
    assert memory.get_resource_by_id(resource_id="other") == with_metadata
    assert memory.update_resource(resource_id="bare")["metadata"] == {}


def test_working_memory_and_metadata_values_round_trip(memory):
    """Scenario 54."""
    memory.save_resource(resource={"id": "empty", "working_memory": ""})
    assert memory.get_resource_by_id(resource_id="empty")["working_memory"] == ""
    memory.save_resource(resource={"id": "absent"})
    absent = memory.get_resource_by_id(resource_id="absent")
    assert absent["working_memory"] is None and absent["metadata"] == {}
    memory.save_resource(resource={"id": "empty-metadata", "metadata": {}})
    assert memory.get_resource_by_id(resource_id="empty-metadata")["metadata"] == {}
    nested = {"list": [1, 2.5, -3, True, False, None, "s", {"deep": {"deeper": [[], {}]}}], "zero": 0,
              "unicode": "héllo wörld ✓", "empty": "", "null": None}
    memory.save_resource(resource={"id": "nested", "metadata": nested})
    assert memory.get_resource_by_id(resource_id="nested")["metadata"] == nested
    big = "# Working memory\n" + "x" * 10_240
    memory.update_resource(resource_id="big", working_memory=big)
    assert memory.get_resource_by_id(resource_id="big")["working_memory"] == big
    memory.update_resource(resource_id="empty", working_memory="")
    assert memory.get_resource_by_id(resource_id="empty")["working_memory"] == ""


def test_update_resource_bumps_updated_at_and_keeps_created_at(memory):
    """Scenario 55."""
    saved = memory.save_resource(resource={"id": "r", "working_memory": "a"})
    time.sleep(0.01)
    updated = memory.update_resource(resource_id="r", working_memory="b")
    assert updated["created_at"] == saved["created_at"] and updated["updated_at"] > saved["updated_at"]
    assert memory.get_resource_by_id(resource_id="r") == updated


@WITH_APP_SCHEMA
def test_thread_scoped_working_memory(memory):
    """Scenario 56."""
    thread = memory.save_thread(thread=make_thread(metadata={"key": "value", "other": [1]}))
    memory.update_thread(id=thread["id"], metadata={"workingMemory": "# Notes"})
    got = memory.get_thread_by_id(thread_id=thread["id"])
    assert got["metadata"] == {"key": "value", "other": [1], "workingMemory": "# Notes"}
    memory.update_thread_metadata(id=thread["id"], update=lambda t: {"workingMemory": "# Notes v2"})
    assert memory.get_thread_by_id(thread_id=thread["id"])["metadata"]["workingMemory"] == "# Notes v2"


def test_update_thread_metadata(memory):
    """§4.2: the callback's dict is merged; ``None`` writes nothing; its errors propagate."""
    thread = memory.save_thread(thread=make_thread(metadata={"a": 1}))
    seen = []

    def add(current):
        seen.append(current)
        current["metadata"]["mutated"] = True  # a copy: must not leak into storage
        return {"b": current["metadata"]["a"] + 1}

    updated = memory.update_thread_metadata(id=thread["id"], update=add)
    assert updated["metadata"] == {"a": 1, "b": 2} and updated["updated_at"] >= thread["updated_at"]
    assert seen[0]["id"] == thread["id"] and seen[0]["title"] == thread["title"]
    assert memory.get_thread_by_id(thread_id=thread["id"]) == updated

    assert memory.update_thread_metadata(id=thread["id"], update=lambda t: None) == updated
    assert memory.update_thread_metadata(id="missing", update=lambda t: {"x": 1}) is None
    assert memory.update_thread_metadata(id=thread["id"], resource_id="other", update=lambda t: {"x": 1}) is None

    class Boom(Exception):
        pass

    def fail(current):
        raise Boom()

    with pytest.raises(Boom):
        memory.update_thread_metadata(id=thread["id"], update=fail)
    assert memory.get_thread_by_id(thread_id=thread["id"]) == updated


# =========================================================================== Concurrency

@TRANSACTIONS
def test_concurrent_updates_keep_every_key(memory):
    """Scenario 57."""
    thread = memory.save_thread(thread=make_thread(metadata={}))
    parallel(8, lambda i: memory.update_thread(id=thread["id"], metadata={f"k{i}": i}))
    assert memory.get_thread_by_id(thread_id=thread["id"])["metadata"] == {f"k{i}": i for i in range(8)}

    resource_id = f"resource-{uuid.uuid4()}"
    parallel(8, lambda i: memory.update_resource(resource_id=resource_id, metadata={f"k{i}": i}))
    assert memory.get_resource_by_id(resource_id=resource_id)["metadata"] == {f"k{i}": i for i in range(8)}


@TRANSACTIONS
def test_concurrent_read_modify_write_of_thread_metadata(memory):
    """Scenario 58."""
    thread = memory.save_thread(thread=make_thread(metadata={"n": 0}))

    def increment(_):
        return memory.update_thread_metadata(id=thread["id"], update=lambda t: {"n": t["metadata"]["n"] + 1})

    parallel(8, increment)
    assert memory.get_thread_by_id(thread_id=thread["id"])["metadata"]["n"] == 8


def test_same_process_read_modify_writes_are_serialized_on_every_backend(memory):
    """Scenarios 57 and 58 within one store object, which ClickHouse serializes in-process too."""
    thread = memory.save_thread(thread=make_thread(metadata={"n": 0}))
    parallel(8, lambda i: memory.update_thread_metadata(id=thread["id"],
                                                        update=lambda t: {"n": t["metadata"]["n"] + 1, f"k{i}": i}))
    metadata = memory.get_thread_by_id(thread_id=thread["id"])["metadata"]
    assert metadata == {"n": 8, **{f"k{i}": i for i in range(8)}}


def test_thread_bumps_never_lose_concurrent_metadata_updates(memory):
    """§5.3: thread bumps are serialized with ``update_thread`` by the per-record lock (ClickHouse)."""
    thread = memory.save_thread(thread=make_thread(metadata={}))
    other = memory.save_thread(thread=make_thread())
    memory.save_messages(messages=[make_message(f"m-{i}", thread) for i in range(12)])

    def work(i):
        for round_ in range(3):
            if i % 4 == 0:
                memory.update_thread(id=thread["id"], metadata={f"k{i}-{round_}": round_})
            elif i % 4 == 1:
                memory.update_messages(messages=[{"id": f"m-{i}", "role": "assistant"}])
            elif i % 4 == 2:
                memory.save_messages(messages=[make_message(f"m-{i}", other if round_ % 2 == 0 else thread)])
            else:
                memory.delete_messages(message_ids=[f"m-{i}-{round_}", f"m-{i + round_}"])

    parallel(8, work)
    metadata = memory.get_thread_by_id(thread_id=thread["id"])["metadata"]
    assert metadata == {f"k{i}-{r}": r for i in (0, 4) for r in range(3)}


def test_concurrent_message_saves(memory, base_time):
    """Scenario 59."""
    threads = [memory.save_thread(thread=make_thread()) for _ in range(8)]

    def save(i):
        thread = threads[i]
        for batch in range(10):
            memory.save_messages(messages=[
                make_message(f"w{i}-{batch}-{n}", thread, at=base_time + timedelta(milliseconds=batch * 5 + n))
                for n in range(5)])

    parallel(8, save)
    for thread in threads:
        assert memory.list_messages(thread_id=thread["id"], per_page=0).total == 50
    assert memory.list_messages(thread_id=[t["id"] for t in threads], per_page=False).total == 400


# =========================================================================== Bad input

@WITH_APP_SCHEMA
def test_save_thread_validation(memory, backend):
    """Scenario 60."""
    with pytest.raises(ValidationError) as info:
        memory.save_thread(thread={"id": "", "resource_id": 5})
    assert set(info.value.fields) == {"id", "resource_id"}
    assert info.value.id == error_id(backend, "SAVE_THREAD", "INVALID_INPUT")
    assert info.value.domain == "memory" and info.value.category == "USER"
    assert memory.list_threads().total == 0

    with pytest.raises(ValidationError) as info:
        memory.save_thread(thread={"resource_id": "r", "title": 7, "metadata": [1], "created_at": "soon",
                                   "colour": "red"})
    assert info.value.fields == {"id": ["Missing data for required field."], "title": ["Not a valid string."],
                                 "metadata": ["Not a valid mapping type."],
                                 "created_at": ["Not a valid datetime."], "colour": ["Unknown field."]}
    assert memory.list_threads().total == 0
    with pytest.raises(TypeError):
        memory.save_thread()
    with pytest.raises(TypeError):
        memory.get_thread_by_id("positional")


@WITH_APP_SCHEMA
def test_list_threads_validation(memory, backend):
    """Scenario 61."""
    key_message = ('Invalid metadata key: "{}". Keys must start with a letter or underscore and contain only '
                   'letters, digits and underscores.')
    for key in ("bad-key", "x' OR 1=1 --", "1abc", "__proto__", "constructor", ""):
        with pytest.raises(ValidationError) as info:
            memory.list_threads(metadata={key: 1})
        assert info.value.id == error_id(backend, "LIST_THREADS", "INVALID_METADATA_KEY")
        assert info.value.fields == {"metadata": [key_message.format(key)]}
    long_key = "k" * 129
    with pytest.raises(ValidationError) as info:
        memory.list_threads(metadata={long_key: 1})
    assert info.value.fields == {"metadata": [f'Metadata key "{long_key}" exceeds maximum length of 128 characters.']}
    assert memory.list_threads(metadata={"k" * 128: 1}).total == 0
    for value in ({"a": 1}, [1], float("nan"), float("inf")):
        with pytest.raises(ValidationError) as info:
            memory.list_threads(metadata={"k": value})
        assert info.value.id == error_id(backend, "LIST_THREADS", "INVALID_METADATA_VALUE")
        assert info.value.fields == {
            "metadata": ['Metadata filter value for key "k" must be a string, number, boolean or None']}
    with pytest.raises(ValidationError) as info:
        memory.list_threads(metadata={"bad-key": 1, "k": {"a": 1}}, per_page=-1, order_by={"field": "title"})
    assert info.value.id == error_id(backend, "LIST_THREADS", "INVALID_PAGE")
    assert set(info.value.fields) == {"metadata", "per_page", "order_by.field"}
    assert info.value.fields["order_by.field"] == ["order_by.field must be one of created_at, updated_at"]
    with pytest.raises(ValidationError) as info:
        memory.list_threads(order_by={"direction": "sideways"})
    assert info.value.fields == {"order_by.direction": ["order_by.direction must be ASC or DESC"]}
    assert info.value.id == error_id(backend, "LIST_THREADS", "INVALID_INPUT")


def test_id_arguments_must_be_non_empty_strings(memory, backend):
    """§4.1: id arguments must be non-empty strings."""
    cases = [(memory.get_thread_by_id, {"thread_id": ""}, "thread_id", "GET_THREAD_BY_ID"),
             (memory.delete_thread, {"thread_id": 5}, "thread_id", "DELETE_THREAD"),
             (memory.get_resource_by_id, {"resource_id": ""}, "resource_id", "GET_RESOURCE_BY_ID"),
             (memory.update_resource, {"resource_id": None}, "resource_id", "UPDATE_RESOURCE"),
             (memory.clone_thread, {"source_thread_id": ""}, "source_thread_id", "CLONE_THREAD")]
    for method, kwargs, field, operation in cases:
        with pytest.raises(ValidationError) as info:
            method(**kwargs)
        assert info.value.fields == {field: [f"{field} must be a non-empty string"]}
        assert info.value.id == error_id(backend, operation, "INVALID_INPUT")


# =========================================================================== Input values (README)

def test_unstorable_characters_are_removed(memory, backend):
    """README *Input values*: unpaired surrogates go everywhere, U+0000 on PostgreSQL only."""
    postgres = MATRIX[backend].strips_nul
    thread = memory.save_thread(thread=make_thread(title="a\ud800b\x00c",
                                                   metadata={"k\udc00ey": {"v": "x\ud800y", "n": "nul\x00!"}}))
    got = memory.get_thread_by_id(thread_id=thread["id"])
    assert got == thread
    assert got["title"] == ("abc" if postgres else "ab\x00c")
    assert got["metadata"] == {"key": {"v": "xy", "n": "nul!" if postgres else "nul\x00!"}}

    memory.save_messages(messages=[make_message("m-1", thread, text="t\ud83dext\x00end",
                                                content=v2_content("t\ud83dext\x00end", metadata={"a\x00": 1}))])
    content = memory.list_messages_by_id(message_ids=["m-1"])[0]["content"]
    # Message content is JSON text: U+0000 is the escape \u0000 there and is kept on every backend.
    assert content == v2_content("text\x00end", metadata={"a\x00": 1})

    memory.update_resource(resource_id="r", working_memory="w\ud800m\x00", metadata={"s": "\udfff"})
    resource = memory.get_resource_by_id(resource_id="r")
    assert resource["working_memory"] == ("wm" if postgres else "wm\x00") and resource["metadata"] == {"s": ""}


def test_datetime_inputs(memory):
    """README *Input values*: naive is UTC, offsets converted, sub-ms truncated, ISO strings parsed."""
    naive = memory.save_thread(thread=make_thread(created_at=datetime(2024, 1, 1, 12, 0, 0, 999999)))
    assert naive["created_at"] == datetime(2024, 1, 1, 12, 0, 0, 999000, tzinfo=UTC)
    assert memory.get_thread_by_id(thread_id=naive["id"])["created_at"] == naive["created_at"]
    offset = memory.save_thread(thread=make_thread(
        created_at=datetime(2024, 1, 1, 14, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2))),
        updated_at="2024-01-01T12:30:00.5+00:00"))
    got = memory.get_thread_by_id(thread_id=offset["id"])
    assert got["created_at"] == datetime(2024, 1, 1, 12, 0, 0, 123000, tzinfo=UTC)
    assert got["updated_at"] == datetime(2024, 1, 1, 12, 30, 0, 500000, tzinfo=UTC)
    assert got["created_at"].utcoffset() == timedelta(0)
    no_offset = memory.save_thread(thread=make_thread(created_at="2024-02-03T04:05:06.789"))
    assert no_offset["created_at"] == datetime(2024, 2, 3, 4, 5, 6, 789000, tzinfo=UTC)
    thread = memory.save_thread(thread=make_thread())
    saved = memory.save_messages(messages=[make_message("m-1", thread, at=datetime(2024, 1, 1, 0, 0, 0, 1999))])
    assert saved[0]["created_at"] == datetime(2024, 1, 1, 0, 0, 0, 1000, tzinfo=UTC)
    assert memory.list_messages_by_id(message_ids=["m-1"]) == saved


def test_json_values_are_normalized(memory):
    """README *Input values*: tuples become lists, nested datetimes ISO strings."""
    metadata = {"t": (1, (2, 3)), "when": datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
                "naive": datetime(2024, 1, 2, 3, 4, 5), "day": datetime(2024, 1, 2).date()}
    expected = {"t": [1, [2, 3]], "when": "2024-01-02T03:04:05.678Z", "naive": "2024-01-02T03:04:05.000Z",
                "day": "2024-01-02"}
    thread = memory.save_thread(thread=make_thread(metadata=metadata))
    assert thread["metadata"] == expected
    assert memory.get_thread_by_id(thread_id=thread["id"])["metadata"] == expected
    memory.save_messages(messages=[make_message("m-1", thread, content=v2_content("x", metadata=metadata))])
    assert memory.list_messages_by_id(message_ids=["m-1"])[0]["content"]["metadata"] == expected
    resource = memory.update_resource(resource_id="r", metadata={"pair": ("a", "b")})
    assert resource["metadata"] == {"pair": ["a", "b"]}


def test_bad_json_values_are_reported_under_their_path(memory, backend):
    """README *Input values*: ``Not JSON-serializable.`` under the path of each bad value."""
    thread = memory.save_thread(thread=make_thread())
    cyclic: dict = {}
    cyclic["self"] = cyclic
    with pytest.raises(ValidationError) as info:
        memory.save_thread(thread=make_thread(id="bad", metadata={
            "s": {1, 2}, "ok": 1, "nested": {"b": b"x", "list": [1, float("nan")]}, 3: "int key", "c": cyclic}))
    assert info.value.fields == {
        "metadata.s": ["Not JSON-serializable."], "metadata.nested.b": ["Not JSON-serializable."],
        "metadata.nested.list[1]": ["Not JSON-serializable."], "metadata.3": ["Not JSON-serializable."],
        "metadata.c.self": ["Not JSON-serializable."]}
    assert info.value.id == error_id(backend, "SAVE_THREAD", "INVALID_INPUT")
    assert memory.get_thread_by_id(thread_id="bad") is None

    with pytest.raises(ValidationError) as info:
        memory.update_thread(id=thread["id"], metadata={"s": object()})
    assert info.value.fields == {"metadata.s": ["Not JSON-serializable."]}
    with pytest.raises(ValidationError) as info:
        memory.save_messages(messages=[make_message("m-1", thread), make_message(
            "m-2", thread, content=v2_content("x", metadata={"when": float("inf")}))])
    assert info.value.fields == {"messages[1].content.metadata.when": ["Not JSON-serializable."]}
    with pytest.raises(ValidationError) as info:
        memory.update_resource(resource_id="r", metadata={"d": {"x": {1}}})
    assert info.value.fields == {"metadata.d.x": ["Not JSON-serializable."]}
    with pytest.raises(ValidationError) as info:
        memory.update_messages(messages=[{"id": "m-1", "content": {"metadata": {"s": {1}}}}])
    assert info.value.fields == {"messages[0].content.metadata.s": ["Not JSON-serializable."]}
    assert memory.list_messages(thread_id=thread["id"]).total == 0
    assert memory.get_resource_by_id(resource_id="r") is None
    assert memory.get_thread_by_id(thread_id=thread["id"]) == thread


def test_returned_records_are_fresh_objects(memory):
    """README *Public API shape*: mutating records in or out never changes stored data."""
    metadata = {"nested": {"list": [1, 2]}}
    given = make_thread(metadata=metadata)
    saved = memory.save_thread(thread=given)
    metadata["nested"]["list"].append(3)
    given["title"] = "changed input"
    saved["metadata"]["nested"]["list"].append(4)
    got = memory.get_thread_by_id(thread_id=given["id"])
    assert got["metadata"] == {"nested": {"list": [1, 2]}} and got["title"] == "Test Thread"
    got["metadata"]["nested"]["x"] = 1
    assert memory.get_thread_by_id(thread_id=given["id"])["metadata"] == {"nested": {"list": [1, 2]}}
    updated = memory.update_thread(id=given["id"], metadata={"k": [1]})
    updated["metadata"]["k"].append(2)
    assert memory.list_threads(resource_id=given["resource_id"]).items[0]["metadata"]["k"] == [1]

    content = v2_content("x", metadata={"k": [1]})
    message = make_message("m-1", given, content=content)
    saved_messages = memory.save_messages(messages=[message])
    content["parts"].append({"type": "text", "text": "injected"})
    saved_messages[0]["content"]["metadata"]["k"].append(2)
    assert memory.list_messages_by_id(message_ids=["m-1"])[0]["content"] == v2_content("x", metadata={"k": [1]})
    resource = memory.update_resource(resource_id="r", metadata={"k": [1]})
    resource["metadata"]["k"].append(2)
    assert memory.get_resource_by_id(resource_id="r")["metadata"] == {"k": [1]}


def test_unset_keeps_values(memory):
    """README *Input values*: ``UNSET`` is "not given"."""
    memory.save_resource(resource={"id": "r", "working_memory": "keep", "metadata": {"a": 1}})
    result = memory.update_resource(resource_id="r", working_memory=UNSET, metadata=UNSET)
    assert (result["working_memory"], result["metadata"]) == ("keep", {"a": 1})
    thread = memory.save_thread(thread=make_thread())
    assert memory.update_thread(id=thread["id"], title=UNSET, metadata=UNSET)["title"] == "Test Thread"


# =========================================================================== Wire form

def test_wire_form_round_trip(memory):
    """README *Public API shape*: camelCase, ``...Z`` timestamps, ``type``/``resourceId`` omitted when None."""
    thread = memory.save_thread(thread=make_thread(created_at=datetime(2024, 1, 2, 3, 4, 5, 6000, tzinfo=UTC)))
    wire = ThreadSchema().dump(thread)
    assert wire == {"id": thread["id"], "resourceId": thread["resource_id"], "title": "Test Thread",
                    "metadata": {"key": "value"}, "createdAt": "2024-01-02T03:04:05.006Z",
                    "updatedAt": "2024-01-02T03:04:05.006Z"}
    assert json.loads(json.dumps(wire)) == wire
    assert ThreadSchema().load(wire) == thread
    assert memory.save_thread(thread=wire) == thread

    saved = memory.save_messages(messages=[make_message("m-1", thread, at=datetime(2024, 1, 2, tzinfo=UTC)),
                                           make_message("m-2", thread, type="custom")])
    wire = MessageSchema().dump(saved[0])
    assert wire == {"id": "m-1", "threadId": thread["id"], "resourceId": thread["resource_id"], "role": "user",
                    "content": saved[0]["content"], "createdAt": "2024-01-02T00:00:00.000Z"}
    assert MessageSchema().load(wire) == {key: value for key, value in saved[0].items() if key != "type"}
    assert MessageSchema().dump(saved[1])["type"] == "custom"
    legacy = {**saved[0], "resource_id": None}
    assert "resourceId" not in MessageSchema().dump(legacy) and "type" not in MessageSchema().dump(legacy)
    assert memory.save_messages(messages=[wire]) == [saved[0]]

    resource = memory.save_resource(resource={"id": "r", "working_memory": "wm"})
    wire = ResourceSchema().dump(resource)
    assert wire["workingMemory"] == "wm" and wire["createdAt"].endswith("Z") and "working_memory" not in wire
    assert ResourceSchema().load(wire) == resource


# =========================================================================== Maintenance

@pytest.fixture
def fresh_database(backend, backend_url, tmp_path):
    """``(url, run)``: an empty database on the backend under test; ``run(sql)`` executes raw SQL there."""
    if backend == "sqlite":
        path = tmp_path / "fresh.db"

        def run_sqlite(sql):
            with sqlite3.connect(path) as connection:
                connection.executescript(sql)

        yield f"sqlite:///{path}", run_sqlite
    elif backend.startswith("postgres"):
        import psycopg2

        server_url = backend_url.split("?", 1)[0]
        schema = f"fresh_{uuid.uuid4().hex[:8]}"
        connection = psycopg2.connect(server_url)
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE SCHEMA "{schema}"')

        def run_postgres(sql):
            with connection.cursor() as cursor:
                cursor.execute(f'SET search_path TO "{schema}"')
                cursor.execute(sql)

        yield f"{server_url}?schema_name={schema}", run_postgres
        with connection.cursor() as cursor:
            cursor.execute(f'DROP SCHEMA "{schema}" CASCADE')
        connection.close()
    else:
        name = f"fresh_{uuid.uuid4().hex[:8]}"
        admin = clickhouse_client(backend_url)
        admin.execute(f"CREATE DATABASE {name}")
        url = database_url(backend_url, name)
        client = clickhouse_client(url)
        yield url, client.execute
        client.disconnect()
        admin.execute(f"DROP DATABASE {name}")
        admin.disconnect()


OLD_MESSAGES_DDL = {
    "sqlite": 'CREATE TABLE mastra_messages ("id" TEXT NOT NULL PRIMARY KEY, "thread_id" TEXT NOT NULL, '
              '"content" TEXT NOT NULL, "role" TEXT NOT NULL, "type" TEXT NOT NULL, "createdAt" TEXT NOT NULL, '
              '"legacyExtra" TEXT)',
    "postgres": 'CREATE TABLE mastra_messages (id text NOT NULL PRIMARY KEY, thread_id text NOT NULL, '
                'content text NOT NULL, role text NOT NULL, type text NOT NULL, "createdAt" timestamp NOT NULL, '
                '"createdAtZ" timestamptz DEFAULT now(), "legacyExtra" text)',
    "clickhouse": 'CREATE TABLE mastra_messages (id String, thread_id String, content String, role String, '
                  'type String, createdAt Int64, legacyExtra String) ENGINE = ReplacingMergeTree() '
                  'ORDER BY (createdAt, id)',
}
OLD_MESSAGE_ROW = {
    "sqlite": "INSERT INTO mastra_messages VALUES ('old', 't', 'old text', 'user', 'v2', "
              "'2024-01-01T00:00:00.000Z', 'kept')",
    "postgres": "INSERT INTO mastra_messages VALUES ('old', 't', 'old text', 'user', 'v2', '2024-01-01 00:00:00', "
                "'2024-01-01 00:00:00+00', 'kept')",
    # INSERT … VALUES with inline values hangs on 18.16 through clickhouse-driver; INSERT … SELECT does not.
    "clickhouse": "INSERT INTO mastra_messages SELECT 'old', 't', 'old text', 'user', 'v2', toInt64(1704067200000), "
                  "'kept'",
}


def backend_kind(backend: str) -> str:
    """``sqlite``, ``postgres`` or ``clickhouse``: the dialect of raw SQL on ``backend``."""
    return MATRIX[backend].family


@pytest.mark.requires(cluster=False)  # one server's layout (the cluster's: tests/test_cluster.py)
def test_init_completes_an_old_layout(memory, backend, fresh_database, make_store):
    """§4.6: ``init`` adds ``resourceId`` to an old messages table; rows and extra columns stay."""
    url, run = fresh_database
    kind = backend_kind(backend)
    run(OLD_MESSAGES_DDL[kind])
    run(OLD_MESSAGE_ROW[kind])
    store = make_store(url)
    store.get_store("memory").init()
    store.get_store("memory").init()  # idempotent
    fresh = store.get_store("memory")
    old = fresh.list_messages_by_id(message_ids=["old"])
    assert old == [{"id": "old", "thread_id": "t", "resource_id": None, "role": "user", "type": None,
                    "content": v2_content("old text"), "created_at": datetime(2024, 1, 1, tzinfo=UTC)}]
    fresh.save_thread(thread={"id": "t", "resource_id": "r"})
    fresh.save_messages(messages=[make_message("new", {"id": "t", "resource_id": "r"})])
    assert [m["resource_id"] for m in fresh.list_messages(thread_id="t").items] == [None, "r"]
    if kind == "clickhouse":
        columns = dict(run("SELECT name, type FROM system.columns WHERE database = currentDatabase() "
                           "AND table = 'mastra_messages'"))
        assert columns["resourceId"] == "Nullable(String)" and columns["legacyExtra"] == "String"
        assert columns["_version"] == "UInt64" and columns["_deleted"] == "UInt8"
        assert run("SELECT legacyExtra FROM mastra_messages WHERE id = 'old'") == [("kept",)]


@pytest.mark.requires(cluster=False)  # one server's layout (the cluster's: tests/test_cluster.py)
@CLICKHOUSE
def test_init_refuses_tables_that_cannot_be_read_with_final(memory, fresh_database, make_store):
    """README *ClickHouse rows*: a non-``ReplacingMergeTree`` table makes ``init`` raise and change nothing."""
    from composite_store import NotSupportedError

    url, run = fresh_database
    run("CREATE TABLE mastra_resources (id String, createdAt Int64) ENGINE = MergeTree() ORDER BY id")
    store = make_store(url)
    with pytest.raises(NotSupportedError) as info:
        store.get_store("memory").init()
    assert info.value.id == "STORAGE_CLICKHOUSE_INIT_NOT_SUPPORTED"
    assert "mastra_resources" in info.value.message and "MergeTree" in info.value.message
    columns = [row[0] for row in run("SELECT name FROM system.columns WHERE database = currentDatabase() "
                                     "AND table = 'mastra_resources'")]
    assert columns == ["id", "createdAt"]


@pytest.mark.requires(cluster=False)  # one server's layout (the cluster's: tests/test_cluster.py)
def test_concurrent_init_of_several_stores(memory, fresh_database, make_store):
    """README *Public API shape*: ``init`` is safe from many threads and several store objects at once."""
    url, _ = fresh_database
    stores = [make_store(url) for _ in range(4)]
    parallel(8, lambda i: stores[i % 4].get_store("memory").init())
    fresh = stores[0].get_store("memory")
    thread = fresh.save_thread(thread=make_thread())
    assert stores[3].get_store("memory").get_thread_by_id(thread_id=thread["id"]) == thread


@pytest.mark.requires(cluster=False)  # one server's layout (the cluster's: tests/test_cluster.py)
def test_dangerously_clear_all_leaves_other_tables(memory, backend, fresh_database, make_store):
    """§4.6: every row of the three memory tables goes; other tables are untouched."""
    url, run = fresh_database
    kind = backend_kind(backend)
    run("CREATE TABLE other_table (name String) ENGINE = Memory" if kind == "clickhouse"
        else "CREATE TABLE other_table (name text)")
    run("INSERT INTO other_table SELECT 'kept'")
    store = make_store(url)
    fresh = store.get_store("memory")
    fresh.init()
    thread = fresh.save_thread(thread=make_thread())
    fresh.save_messages(messages=[make_message("m-1", thread)])
    fresh.update_resource(resource_id="r", working_memory="x")
    fresh.dangerously_clear_all()
    assert fresh.list_threads().total == 0 and fresh.list_messages_by_id(message_ids=["m-1"]) == []
    assert fresh.get_resource_by_id(resource_id="r") is None
    if kind == "clickhouse":
        assert run("SELECT name FROM other_table") == [("kept",)]
    elif kind == "sqlite":
        with sqlite3.connect(url[len("sqlite:///"):]) as connection:
            assert connection.execute("SELECT name FROM other_table").fetchall() == [("kept",)]
    else:
        with fresh.backend.connection():
            cursor = fresh.backend.database.execute_sql(
                f'SELECT name FROM "{fresh.backend.schema_name}".other_table')
            assert cursor.fetchall() == [("kept",)]


def test_supports_concurrent_updates(memory, backend):
    """README *Concurrency*: ``True`` on SQLite and PostgreSQL, ``False`` on ClickHouse."""
    assert memory.supports_concurrent_updates() is (backend_kind(backend) != "clickhouse")


@pytest.mark.requires(null_placeholder=False)
def test_placeholder_text_is_ordinary_text_outside_clickhouse(memory):
    """README *Stored formats*: only ClickHouse reads ``_null_`` as ``None``."""
    thread = memory.save_thread(thread=make_thread(title="_null_", metadata={"v": "_null_"}))
    assert memory.get_thread_by_id(thread_id=thread["id"]) == thread
    memory.update_resource(resource_id="r", working_memory="_null_")
    assert memory.get_resource_by_id(resource_id="r")["working_memory"] == "_null_"


@CLICKHOUSE
def test_clickhouse_null_placeholder_reads_as_none(memory, backend_url, base_time):
    """README *Stored formats*: on ClickHouse, ``_null_`` written by other clients reads as ``None``."""
    thread = memory.save_thread(thread=make_thread())
    insert_raw_messages(memory, [{"id": "placeholder", "thread_id": thread["id"], "resource_id": "_null_",
                                  "role": "user", "type": "v2", "content": json.dumps(v2_content("x")),
                                  "created_at": base_time}])
    memory.save_resource(resource={"id": "r", "working_memory": "_null_"})
    client = clickhouse_client(backend_url)
    try:
        client.execute("INSERT INTO mastra_threads (id, resourceId, title, metadata, createdAt, updatedAt) "
                       "SELECT 'raw', 'r', 'raw', '_null_', createdAt, updatedAt FROM mastra_threads FINAL "
                       "WHERE id = %(id)s", {"id": thread["id"]})
    finally:
        client.disconnect()
    assert memory.list_messages_by_id(message_ids=["placeholder"])[0]["resource_id"] is None
    # Scans test a row for the placeholder once (backends/base.py row_reader): the same answer.
    assert [message["resource_id"] for message in memory.iter_messages(thread_id=thread["id"])] == [None]
    assert memory.get_resource_by_id(resource_id="r")["working_memory"] is None
    assert memory.get_thread_by_id(thread_id="raw")["metadata"] == {}


# =========================================================================== Compatibility

def test_two_stores_on_different_databases_side_by_side(tmp_path, postgres_url):
    """Foundation: one process, one thread id in a SQLite store and a PostgreSQL store."""
    sqlite_store = store_for_url(f"sqlite:///{tmp_path}/side.db")
    postgres_store = store_for_url(postgres_url)
    try:
        sqlite_store.init()
        postgres_store.init()
        local, remote = sqlite_store.get_store("memory"), postgres_store.get_store("memory")
        thread_id = f"shared-{uuid.uuid4()}"
        local.save_thread(thread={"id": thread_id, "resource_id": "r", "title": "in SQLite"})
        remote.save_thread(thread={"id": thread_id, "resource_id": "r", "title": "in PostgreSQL"})
        local.save_messages(messages=[{"id": f"{thread_id}-m", "thread_id": thread_id, "resource_id": "r",
                                       "role": "user", "content": "local"}])
        assert local.get_thread_by_id(thread_id=thread_id)["title"] == "in SQLite"
        assert remote.get_thread_by_id(thread_id=thread_id)["title"] == "in PostgreSQL"
        assert local.list_messages(thread_id=thread_id).total == 1
        assert remote.list_messages(thread_id=thread_id).total == 0
        remote.delete_thread(thread_id=thread_id)
        assert local.get_thread_by_id(thread_id=thread_id)["title"] == "in SQLite"
    finally:
        sqlite_store.close()
        postgres_store.close()


@pytest.mark.backends("sqlite")
def test_sqlite_layout(memory, backend_url):
    """§5.1: tables, columns and indexes as Mastra's."""
    with sqlite3.connect(backend_url[len("sqlite:///"):]) as connection:
        columns = {table: [(name, kind, notnull, pk) for _, name, kind, notnull, _, pk in
                           connection.execute(f'PRAGMA table_info("{table}")')]
                   for table in ("mastra_threads", "mastra_messages", "mastra_resources")}
        indexes = {row[0]: row[1] for row in connection.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'mastra_messages' "
            "AND sql IS NOT NULL")}
    assert columns["mastra_threads"] == [("id", "TEXT", 1, 1), ("resourceId", "TEXT", 1, 0), ("title", "TEXT", 1, 0),
                                         ("metadata", "TEXT", 0, 0), ("createdAt", "TEXT", 1, 0),
                                         ("updatedAt", "TEXT", 1, 0)]
    assert columns["mastra_messages"] == [("id", "TEXT", 1, 1), ("thread_id", "TEXT", 1, 0),
                                          ("content", "TEXT", 1, 0), ("role", "TEXT", 1, 0), ("type", "TEXT", 1, 0),
                                          ("createdAt", "TEXT", 1, 0), ("resourceId", "TEXT", 0, 0)]
    assert columns["mastra_resources"] == [("id", "TEXT", 1, 1), ("workingMemory", "TEXT", 0, 0),
                                           ("metadata", "TEXT", 0, 0), ("createdAt", "TEXT", 1, 0),
                                           ("updatedAt", "TEXT", 1, 0)]
    assert re.sub(r"\s+", " ", indexes["idx_messages_thread_created_at"]).endswith('(thread_id, "createdAt")')
    assert re.sub(r"\s+", " ", indexes["idx_messages_thread_resource_created_at"]).endswith(
        '(thread_id, "resourceId", "createdAt")')


@pytest.mark.backends("postgres", "postgres-app")
def test_postgres_layout(memory, backend_url):
    """§5.2: columns in order, primary keys and indexes."""
    import psycopg2

    schema = "app" if "schema_name=app" in backend_url else "public"
    prefix = "app_" if schema == "app" else ""
    connection = psycopg2.connect(backend_url.split("?", 1)[0])
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT table_name, column_name, data_type, is_nullable, column_default "
                           "FROM information_schema.columns WHERE table_schema = %s AND table_name IN "
                           "('mastra_threads', 'mastra_messages', 'mastra_resources') "
                           "ORDER BY table_name, ordinal_position", (schema,))
            columns = {}
            for table, name, kind, nullable, default in cursor.fetchall():
                columns.setdefault(table, []).append((name, kind, nullable, default))
            cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s", (schema,))
            indexes = dict(cursor.fetchall())
    finally:
        connection.close()
    text, plain, zoned = "text", "timestamp without time zone", "timestamp with time zone"
    assert columns["mastra_threads"] == [
        ("id", text, "NO", None), ("resourceId", text, "NO", None), ("title", text, "NO", None),
        ("metadata", "jsonb", "YES", None), ("createdAt", plain, "NO", None), ("updatedAt", plain, "NO", None),
        ("createdAtZ", zoned, "YES", "now()"), ("updatedAtZ", zoned, "YES", "now()")]
    assert columns["mastra_messages"] == [
        ("id", text, "NO", None), ("thread_id", text, "NO", None), ("content", text, "NO", None),
        ("role", text, "NO", None), ("type", text, "NO", None), ("createdAt", plain, "NO", None),
        ("resourceId", text, "YES", None), ("createdAtZ", zoned, "YES", "now()")]
    assert columns["mastra_resources"] == [
        ("id", text, "NO", None), ("workingMemory", text, "YES", None), ("metadata", "jsonb", "YES", None),
        ("createdAt", plain, "NO", None), ("updatedAt", plain, "NO", None), ("createdAtZ", zoned, "YES", "now()"),
        ("updatedAtZ", zoned, "YES", "now()")]
    for table in ("mastra_threads", "mastra_messages", "mastra_resources"):
        assert indexes[f"{table}_pkey"].endswith("USING btree (id)")
    assert indexes[f"{prefix}mastra_threads_resourceid_createdat_idx"].endswith(
        'USING btree ("resourceId", "createdAt" DESC)')
    assert indexes[f"{prefix}mastra_messages_thread_id_createdat_idx"].endswith(
        'USING btree (thread_id, "createdAt" DESC)')


SQLITE_REFERENCE_DDL = """
CREATE TABLE mastra_threads ("id" TEXT NOT NULL PRIMARY KEY, "resourceId" TEXT NOT NULL, "title" TEXT NOT NULL,
    "metadata" TEXT, "createdAt" TEXT NOT NULL, "updatedAt" TEXT NOT NULL);
CREATE TABLE mastra_messages ("id" TEXT NOT NULL PRIMARY KEY, "thread_id" TEXT NOT NULL, "content" TEXT NOT NULL,
    "role" TEXT NOT NULL, "type" TEXT NOT NULL, "createdAt" TEXT NOT NULL, "resourceId" TEXT);
CREATE TABLE mastra_resources ("id" TEXT NOT NULL PRIMARY KEY, "workingMemory" TEXT, "metadata" TEXT,
    "createdAt" TEXT NOT NULL, "updatedAt" TEXT NOT NULL);
CREATE INDEX idx_messages_thread_created_at ON mastra_messages (thread_id, "createdAt");
"""

REFERENCE_CONTENT = json.dumps(v2_content("hello from Mastra"))
REFERENCE_TOPIC_CONTENT = json.dumps(v2_content("on topic", metadata={"topic": "x"}))


def sqlite_rows(path) -> dict:
    """Every row of the three memory tables, raw."""
    with sqlite3.connect(path) as connection:
        return {table: connection.execute(f'SELECT * FROM "{table}" ORDER BY id').fetchall()
                for table in ("mastra_threads", "mastra_messages", "mastra_resources")}


@pytest.mark.backends("sqlite")
def test_sqlite_database_created_by_the_reference_system(tmp_path, make_store):
    """Scenario 62 on SQLite: spec DDL, JSONB blobs, other timestamp formats."""
    path = tmp_path / "mastra.db"
    blob_metadata = {"category": "tech", "nested": {"a": [1, 2.5, True, None]}, "text": "héllo"}
    with sqlite3.connect(path) as connection:
        connection.executescript(SQLITE_REFERENCE_DDL)
        connection.executemany('INSERT INTO mastra_threads VALUES (?, ?, ?, ?, ?, ?)', [
            ("t-blob", "res-1", "Blob thread", encode_jsonb(blob_metadata), "2024-03-01 10:00:00.123",
             "2024-03-01T10:05:00.456+00:00"),
            ("t-text", "res-1", "Text thread", '{"category":"general"}', "2024-03-01T09:00:00.000Z",
             "2024-03-01T09:00:00.000Z"),
            ("t-null", "res-2", "", None, "2024-03-02 08:00:00", "2024-03-02 08:00:00")])
        connection.executemany('INSERT INTO mastra_messages VALUES (?, ?, ?, ?, ?, ?, ?)', [
            ("m-1", "t-blob", REFERENCE_CONTENT, "user", "v2", "2024-03-01 10:00:01.000", "res-1"),
            ("m-2", "t-blob", "legacy plain text", "assistant", "text", "2024-03-01T10:00:02.500+00:00", None),
            ("m-3", "t-blob", REFERENCE_TOPIC_CONTENT, "signal", "v2", "2024-03-01T10:00:03.000Z", "res-1")])
        connection.executemany('INSERT INTO mastra_resources VALUES (?, ?, ?, ?, ?)', [
            ("res-1", "# Notes", encode_jsonb({"plan": "pro"}), "2024-01-01 00:00:00.000", "2024-01-02 00:00:00")])
    before = sqlite_rows(path)

    store = make_store(f"sqlite:///{path}")
    store.init()
    memory = store.get_store("memory")
    assert sqlite_rows(path) == before

    thread = memory.get_thread_by_id(thread_id="t-blob")
    assert thread == {"id": "t-blob", "resource_id": "res-1", "title": "Blob thread", "metadata": blob_metadata,
                      "created_at": datetime(2024, 3, 1, 10, 0, 0, 123000, tzinfo=UTC),
                      "updated_at": datetime(2024, 3, 1, 10, 5, 0, 456000, tzinfo=UTC)}
    assert memory.get_thread_by_id(thread_id="t-null")["metadata"] == {}
    assert ids(memory.list_threads(metadata={"category": "tech"})) == ["t-blob"]
    assert ids(memory.list_threads(metadata={"category": "general"})) == ["t-text"]
    assert sorted(ids(memory.list_threads(resource_id="res-1"))) == ["t-blob", "t-text"]
    messages = memory.list_messages(thread_id="t-blob").items
    assert ids(messages) == ["m-1", "m-2", "m-3"]
    assert messages[0]["type"] is None and messages[0]["content"] == v2_content("hello from Mastra")
    assert messages[1] == {"id": "m-2", "thread_id": "t-blob", "resource_id": None, "role": "assistant",
                           "type": "text", "content": v2_content("legacy plain text"),
                           "created_at": datetime(2024, 3, 1, 10, 0, 2, 500000, tzinfo=UTC)}
    assert messages[2]["role"] == "signal"
    assert ids(memory.list_messages(thread_id="t-blob", metadata={"topic": "x"})) == ["m-3"]
    resource = memory.get_resource_by_id(resource_id="res-1")
    assert resource["metadata"] == {"plan": "pro"} and resource["working_memory"] == "# Notes"
    assert resource["updated_at"] == datetime(2024, 1, 2, tzinfo=UTC)
    assert sqlite_rows(path) == before  # reads never rewrite a blob

    # Rows this library writes are in the reference formats.
    updated = memory.update_thread(id="t-blob", metadata={"extra": 1})
    assert updated["metadata"] == {**blob_metadata, "extra": 1}
    memory.save_messages(messages=[{"id": "m-new", "thread_id": "t-text", "resource_id": "res-1",
                                    "role": "user", "content": "written by Python"}])
    memory.update_resource(resource_id="res-1", working_memory="# Updated", metadata={"seats": 3})
    with sqlite3.connect(path) as connection:
        connection.row_factory = sqlite3.Row
        thread_row = connection.execute('SELECT * FROM mastra_threads WHERE id = ?', ("t-blob",)).fetchone()
        message_row = connection.execute('SELECT * FROM mastra_messages WHERE id = ?', ("m-new",)).fetchone()
        touched = connection.execute('SELECT * FROM mastra_threads WHERE id = ?', ("t-text",)).fetchone()
        resource_row = connection.execute('SELECT * FROM mastra_resources WHERE id = ?', ("res-1",)).fetchone()
        valid = connection.execute("SELECT json_valid(metadata) FROM mastra_threads WHERE id = 't-blob'").fetchone()
    assert thread_row["createdAt"] == "2024-03-01 10:00:00.123" and ISO_Z.match(thread_row["updatedAt"])
    assert thread_row["metadata"] == json.dumps({**blob_metadata, "extra": 1}, separators=(",", ":"),
                                                ensure_ascii=False)
    assert valid[0] == 1
    assert ISO_Z.match(message_row["createdAt"]) and message_row["type"] == "v2"
    assert json.loads(message_row["content"]) == v2_content("written by Python")
    assert message_row["resourceId"] == "res-1" and message_row["thread_id"] == "t-text"
    assert ISO_Z.match(touched["updatedAt"]) and touched["updatedAt"] > "2024-03-01T09:00:00.000Z"
    assert resource_row["workingMemory"] == "# Updated"
    assert json.loads(resource_row["metadata"]) == {"plan": "pro", "seats": 3}
    assert ISO_Z.match(resource_row["updatedAt"]) and resource_row["createdAt"] == "2024-01-01 00:00:00.000"
    assert sqlite_rows(path)["mastra_messages"][:3] == before["mastra_messages"]


POSTGRES_REFERENCE_DDL = """
CREATE TABLE mastra_threads (id text NOT NULL, "resourceId" text NOT NULL, title text NOT NULL, metadata jsonb,
    "createdAt" timestamp NOT NULL, "updatedAt" timestamp NOT NULL, "createdAtZ" timestamptz DEFAULT now(),
    "updatedAtZ" timestamptz DEFAULT now(), CONSTRAINT mastra_threads_pkey PRIMARY KEY (id));
CREATE TABLE mastra_messages (id text NOT NULL, thread_id text NOT NULL, content text NOT NULL, role text NOT NULL,
    type text NOT NULL, "createdAt" timestamp NOT NULL, "resourceId" text, "createdAtZ" timestamptz DEFAULT now(),
    CONSTRAINT mastra_messages_pkey PRIMARY KEY (id));
CREATE TABLE mastra_resources (id text NOT NULL, "workingMemory" text, metadata jsonb,
    "createdAt" timestamp NOT NULL, "updatedAt" timestamp NOT NULL, "createdAtZ" timestamptz DEFAULT now(),
    "updatedAtZ" timestamptz DEFAULT now(), CONSTRAINT mastra_resources_pkey PRIMARY KEY (id));
"""


@pytest.fixture
def reference_postgres_database(postgres_url):
    """A fresh PostgreSQL database (its URL) for a layout built by raw DDL."""
    from tests.servers import create_postgres_database

    url, drop = create_postgres_database(postgres_url)
    yield url
    drop()


def postgres_rows(connection) -> dict:
    """Every row of the three memory tables as JSON text (exact values, microseconds included)."""
    with connection.cursor() as cursor:
        result = {}
        for table in ("mastra_threads", "mastra_messages", "mastra_resources"):
            cursor.execute(f'SELECT row_to_json(t)::text FROM "{table}" t ORDER BY id')
            result[table] = [row[0] for row in cursor.fetchall()]
        return result


@pytest.mark.backends("postgres")
def test_postgres_database_created_by_the_reference_system(reference_postgres_database, make_store):
    """Scenario 62 on PostgreSQL: §5.2 DDL, rows with NULL ``…Z`` columns and microseconds."""
    import psycopg2

    url = reference_postgres_database
    connection = psycopg2.connect(url)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute("SET TimeZone = 'UTC'")
            cursor.execute(POSTGRES_REFERENCE_DDL)
            cursor.execute("""INSERT INTO mastra_threads VALUES
                ('t-z', 'res-1', 'Zoned', '{"category": "tech"}', '2024-03-01 10:00:00.123456',
                 '2024-03-01 10:05:00.456789', '2024-03-01 10:00:00.123456+00', '2024-03-01 10:05:00.456789+00'),
                ('t-plain', 'res-1', 'Plain', NULL, '2024-03-01 09:00:00.5', '2024-03-01 09:00:00.5', NULL, NULL)""")
            cursor.execute("""INSERT INTO mastra_messages VALUES
                ('m-1', 't-z', %s, 'user', 'v2', '2024-03-01 10:00:01.000001', 'res-1', NULL),
                ('m-2', 't-z', 'legacy text', 'assistant', 'text', '2024-03-01 10:00:02.999999', NULL,
                 '2024-03-01 10:00:02.999999+00'),
                ('m-3', 't-z', %s, 'signal', 'v2', '2024-03-01 10:00:03', 'res-1', NULL)""",
                           (REFERENCE_CONTENT, REFERENCE_TOPIC_CONTENT))
            cursor.execute("""INSERT INTO mastra_resources VALUES
                ('res-1', '# Notes', '{"plan": "pro"}', '2024-01-01 00:00:00.000001', '2024-01-02 00:00:00',
                 NULL, NULL)""")
        before = postgres_rows(connection)

        store = make_store(url)
        store.init()
        memory = store.get_store("memory")
        assert postgres_rows(connection) == before
        with connection.cursor() as cursor:
            cursor.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")
            indexes = {row[0] for row in cursor.fetchall()}
        assert {"mastra_threads_resourceid_createdat_idx", "mastra_messages_thread_id_createdat_idx"} <= indexes

        assert memory.get_thread_by_id(thread_id="t-z") == {
            "id": "t-z", "resource_id": "res-1", "title": "Zoned", "metadata": {"category": "tech"},
            "created_at": datetime(2024, 3, 1, 10, 0, 0, 123000, tzinfo=UTC),
            "updated_at": datetime(2024, 3, 1, 10, 5, 0, 456000, tzinfo=UTC)}
        plain = memory.get_thread_by_id(thread_id="t-plain")
        assert plain["created_at"] == datetime(2024, 3, 1, 9, 0, 0, 500000, tzinfo=UTC) and plain["metadata"] == {}
        assert ids(memory.list_threads(metadata={"category": "tech"})) == ["t-z"]
        messages = memory.list_messages(thread_id="t-z").items
        assert ids(messages) == ["m-1", "m-2", "m-3"]
        assert [m["created_at"] for m in messages] == [
            datetime(2024, 3, 1, 10, 0, 1, 0, tzinfo=UTC), datetime(2024, 3, 1, 10, 0, 2, 999000, tzinfo=UTC),
            datetime(2024, 3, 1, 10, 0, 3, tzinfo=UTC)]
        assert messages[0]["type"] is None and messages[1]["content"] == v2_content("legacy text")
        assert messages[1]["resource_id"] is None and messages[2]["role"] == "signal"
        assert ids(memory.list_messages(thread_id="t-z", metadata={"topic": "x"})) == ["m-3"]
        window = memory.list_messages(thread_id="t-z", per_page=0, date_range={
            "start": datetime(2024, 3, 1, 10, 0, 1, tzinfo=UTC), "start_exclusive": True},
            include=[{"id": "m-2", "with_previous_messages": 1}])
        assert ids(window) == ["m-1", "m-2"] and window.total == 2
        assert memory.get_resource_by_id(resource_id="res-1")["metadata"] == {"plan": "pro"}
        assert postgres_rows(connection) == before

        # Rows this library writes are in the reference formats.
        saved = memory.save_messages(messages=[{"id": "m-new", "thread_id": "t-plain", "resource_id": "res-1",
                                                "role": "user", "content": "written by Python"}])[0]
        memory.update_thread(id="t-plain", metadata={"k": "v"})
        with connection.cursor() as cursor:
            cursor.execute('SELECT "createdAt", "createdAtZ", content, type, "resourceId" FROM mastra_messages '
                           "WHERE id = 'm-new'")
            created, created_z, content, kind, resource_id = cursor.fetchone()
            cursor.execute('SELECT metadata, "createdAt", "createdAtZ", "updatedAt", "updatedAtZ" FROM mastra_threads '
                           "WHERE id = 't-plain'")
            metadata, thread_created, thread_created_z, updated, updated_z = cursor.fetchone()
        assert created.tzinfo is None and created.replace(tzinfo=UTC) == saved["created_at"] == created_z
        assert json.loads(content) == v2_content("written by Python") and kind == "v2" and resource_id == "res-1"
        assert metadata == {"k": "v"}
        assert thread_created == datetime(2024, 3, 1, 9, 0, 0, 500000) and thread_created_z is None
        assert updated.replace(tzinfo=UTC) == updated_z and updated.microsecond % 1000 == 0
        assert postgres_rows(connection)["mastra_messages"][:3] == before["mastra_messages"]
    finally:
        connection.close()


@pytest.mark.requires(cluster=False)  # one server's layout (the cluster's: tests/test_cluster.py)
@pytest.mark.requires(family="clickhouse", current_clickhouse=False)
def test_clickhouse_tables_on_an_old_server(memory, backend_url):
    """Scenario 63: ``ReplacingMergeTree(_version)`` with ``Int64`` timestamps; versions and deletes."""
    client = clickhouse_client(backend_url)
    try:
        version = client.execute("SELECT version()")[0][0]
        if client.execute("SELECT count() FROM system.data_type_families WHERE name = 'DateTime64'")[0][0]:
            pytest.skip(f"ClickHouse {version} has DateTime64; scenario 63 is about 18.16")
        engines = dict(client.execute(
            "SELECT name, engine_full FROM system.tables WHERE database = currentDatabase() AND name IN "
            "('mastra_threads', 'mastra_messages', 'mastra_resources')"))
        assert set(engines) == {"mastra_threads", "mastra_messages", "mastra_resources"}
        for table, engine in engines.items():
            assert engine.startswith("ReplacingMergeTree(_version)"), (table, engine)
            assert "ORDER BY (createdAt, id)" in engine and "index_granularity = 8192" in engine
        columns = {}
        for table, name, kind, default in client.execute(
                "SELECT table, name, type, default_expression FROM system.columns WHERE database = currentDatabase() "
                "AND table IN ('mastra_threads', 'mastra_messages', 'mastra_resources')"):
            # 18.16 shows a default as CAST(<expression>, '<type>').
            default = re.sub(r"^CAST\((.*), '[^']*'\)$", r"\1", default)
            columns.setdefault(table, []).append((name, kind, default))
        versions = [("_version", "UInt64", "0"), ("_deleted", "UInt8", "0")]
        assert columns["mastra_threads"] == [
            ("id", "String", ""), ("resourceId", "String", ""), ("title", "String", ""),
            ("metadata", "Nullable(String)", "'{}'"), ("createdAt", "Int64", ""), ("updatedAt", "Int64", ""),
            *versions]
        assert columns["mastra_messages"] == [
            ("id", "String", ""), ("thread_id", "String", ""), ("content", "String", ""), ("role", "String", ""),
            ("type", "String", ""), ("createdAt", "Int64", ""), ("resourceId", "Nullable(String)", ""), *versions]
        assert columns["mastra_resources"] == [
            ("id", "String", ""), ("workingMemory", "Nullable(String)", ""),
            ("metadata", "Nullable(String)", "'{}'"), ("createdAt", "Int64", ""), ("updatedAt", "Int64", ""),
            *versions]

        client.execute("SYSTEM STOP MERGES")
        try:
            thread = memory.save_thread(thread=make_thread())
            memory.update_thread(id=thread["id"], title="first update")
            memory.update_thread(id=thread["id"], title="second update", metadata={"n": 2})
            versions = client.execute("SELECT count() FROM mastra_threads WHERE id = %(id)s", {"id": thread["id"]})
            assert versions[0][0] == 3  # no merge has happened: the read below must pick the newest version
            got = memory.get_thread_by_id(thread_id=thread["id"])
            assert got["title"] == "second update" and got["metadata"] == {"key": "value", "n": 2}
            assert ids(memory.list_threads(resource_id=thread["resource_id"])) == [thread["id"]]
        finally:
            client.execute("SYSTEM START MERGES")  # mutations (the delete below) need the merge machinery

        memory.save_messages(messages=[make_message(f"m-{i}", thread) for i in range(3)])
        memory.delete_thread(thread_id=thread["id"])
        assert memory.get_thread_by_id(thread_id=thread["id"]) is None
        assert memory.list_messages(thread_id=thread["id"]).total == 0
        visible = client.execute("SELECT count() FROM mastra_messages FINAL WHERE thread_id = %(id)s "
                                 "AND _deleted = 0", {"id": thread["id"]})
        assert visible[0][0] == 0
    finally:
        client.disconnect()


@pytest.mark.requires(current_clickhouse=True)
def test_clickhouse_tables_on_a_current_server(memory):
    """Scenario 64: ``DateTime64(3, 'UTC')`` timestamps (the other scenarios run on this backend too)."""
    with memory.backend.connection():
        memory.backend.database.connection().refresh_schema()
        features = memory.backend.server_features
    assert features.datetime64
    for table in ("mastra_threads", "mastra_resources"):
        assert features.columns[table]["createdAt"] == features.columns[table]["updatedAt"] == "DateTime64(3, 'UTC')"
        assert features.tables[table][0] == "ReplacingMergeTree" and "_version" in features.tables[table][1]
    assert features.columns["mastra_messages"]["createdAt"] == "DateTime64(3, 'UTC')"
    thread = memory.save_thread(thread=make_thread(created_at=datetime(2024, 1, 2, 3, 4, 5, 678999, tzinfo=UTC)))
    assert memory.get_thread_by_id(thread_id=thread["id"])["created_at"] == \
        datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


@pytest.mark.backends("postgres-app")
def test_postgres_schema_name(memory, postgres_url):
    """Scenario 65: tables and prefixed indexes in schema ``app``; a direct ``schema_name=`` store too."""
    import psycopg2

    connection = psycopg2.connect(postgres_url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'app'")
            tables = {row[0] for row in cursor.fetchall()}
            cursor.execute("SELECT indexname, tablename FROM pg_indexes WHERE schemaname = 'app'")
            indexes = dict(cursor.fetchall())
    finally:
        connection.close()
    assert {"mastra_threads", "mastra_messages", "mastra_resources"} <= tables
    assert indexes["app_mastra_threads_resourceid_createdat_idx"] == "mastra_threads"
    assert indexes["app_mastra_messages_thread_id_createdat_idx"] == "mastra_messages"

    thread = memory.save_thread(thread=make_thread())
    direct = PostgresStore(id="app", connection_string=postgres_url, schema_name="app")
    public = store_for_url(postgres_url)
    try:
        public.init()
        assert direct.get_store("memory").get_thread_by_id(thread_id=thread["id"]) == thread
        assert public.get_store("memory").get_thread_by_id(thread_id=thread["id"]) is None
    finally:
        direct.close()
        public.close()
