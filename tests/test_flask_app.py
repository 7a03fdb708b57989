"""The Flask recipe (examples/flask_app.py): one store shared by every request thread.

Each test drives the app with Flask's test client from 8 threads at once.
"""

from __future__ import annotations

import importlib.util
import threading
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import pytest

from composite_store import CompositeStore

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "flask_app.py"
WORKERS = 8


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("flask_app_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def app(make_store):
    """The example app on a store of the backend under test."""
    return load_example().create_app(storage=CompositeStore(default=make_store()))


def in_threads(work: Callable[[int], None]) -> None:
    """Run ``work(index)`` in WORKERS threads that start together; re-raise the first failure."""
    barrier = threading.Barrier(WORKERS)
    failures: list[BaseException] = []

    def target(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            work(index)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=target, args=(index,)) for index in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a worker hung"
    if failures:
        raise failures[0]


@pytest.mark.backends("sqlite", "postgres", "clickhouse")
def test_threads_and_messages_from_8_request_threads(app):
    run = uuid.uuid4().hex[:8]
    shared = f"shared-{run}"
    client = app.test_client()
    response = client.post("/threads", json={"id": shared, "resourceId": f"team-{run}", "title": "Shared"})
    assert response.status_code == 201

    def work(index: int) -> None:
        client = app.test_client()  # one client per thread, one store behind all of them
        resource, thread = f"user-{run}-{index}", f"thread-{run}-{index}"
        response = client.post("/threads", json={"id": thread, "resourceId": resource, "title": f"Chat {index}",
                                                 "metadata": {"worker": index}})
        assert response.status_code == 201, response.json
        assert response.json["resourceId"] == resource and response.json["createdAt"].endswith("Z")
        start = datetime(2026, 1, 31, 9, 0, tzinfo=timezone.utc)
        for turn in range(5):
            role = "user" if turn % 2 == 0 else "assistant"
            response = client.post(f"/threads/{thread}/messages", json={
                "id": f"{thread}-m{turn}", "resourceId": resource, "role": role, "content": f"message {turn}",
                "createdAt": (start + timedelta(seconds=turn)).isoformat()})
            assert response.status_code == 201, response.json
        # Every worker adds its own key to the shared thread's metadata: none may be lost.
        response = client.patch(f"/threads/{shared}", json={"metadata": {f"worker_{index}": True}})
        assert response.status_code == 200, response.json

        messages = client.get(f"/threads/{thread}/messages?perPage=3").json
        assert messages["total"] == 5 and messages["hasMore"] is True
        assert [m["content"]["content"] for m in messages["items"]] == ["message 0", "message 1", "message 2"]
        assert messages["items"][0]["createdAt"] == "2026-01-31T09:00:00.000Z"
        threads = client.get(f"/threads?resourceId={resource}").json
        assert [t["id"] for t in threads["items"]] == [thread]
        assert threads["items"][0]["metadata"] == {"worker": index}

    in_threads(work)
    metadata = client.get(f"/threads/{shared}").json["metadata"]
    assert metadata == {f"worker_{index}": True for index in range(WORKERS)}
    assert client.get(f"/threads?resourceId=team-{run}").json["total"] == 1


@pytest.mark.backends("sqlite", "postgres")
def test_errors_map_to_http_statuses(app):
    client = app.test_client()
    response = client.post("/threads", json={"id": "", "resourceId": 5})
    assert response.status_code == 400
    assert set(response.json["error"]["fields"]) == {"id", "resource_id"}
    response = client.post("/threads/no-such-thread/messages",
                           json={"id": "m-1", "resourceId": "u", "role": "user", "content": "hi"})
    assert response.status_code == 404
    assert response.json["error"]["id"].endswith("_SAVE_MESSAGES_NOT_FOUND")
    response = client.get("/threads?perPage=many")
    assert response.status_code == 400
    assert response.json["error"]["id"].endswith("_LIST_THREADS_INVALID_PAGE")
    response = client.patch("/threads/no-such-thread", json={"title": "x"})
    assert response.status_code == 404
    assert client.get("/threads/no-such-thread").status_code == 404
    assert client.post("/threads", data="not json").status_code == 400


def make_trace(run: str, index: int) -> list[dict[str, Any]]:
    """A root agent run with a model call and a tool call, in the wire form."""
    trace_id = f"{run}{index:024x}"
    start = datetime(2026, 1, 31, 14, 0, index, tzinfo=timezone.utc)

    def at(ms: int) -> str:
        return (start + timedelta(milliseconds=ms)).isoformat().replace("+00:00", "Z")

    common = {"traceId": trace_id, "entityType": "agent", "entityId": f"agent-{run}"}
    return [
        {**common, "spanId": "root", "name": "agent run", "spanType": "agent_run", "startedAt": at(0),
         "endedAt": at(900), "tags": ["flask", f"worker-{index}"]},
        {**common, "spanId": "llm", "parentSpanId": "root", "name": "llm", "spanType": "model_generation",
         "startedAt": at(10), "endedAt": at(600), "attributes": {"model": "gpt-4o-mini"}},
        {**common, "spanId": "tool", "parentSpanId": "root", "name": "tool", "spanType": "tool_call",
         "startedAt": at(610), "endedAt": at(880)},
    ]


@pytest.mark.backends("sqlite", "postgres", "clickhouse")
def test_traces_from_8_request_threads(app):
    run = uuid.uuid4().hex[:8]

    def work(index: int) -> None:
        client = app.test_client()
        response = client.post("/spans", json=make_trace(run, index))
        assert response.status_code == 201, response.json
        trace = client.get(f"/traces/{run}{index:024x}").json
        assert [span["spanId"] for span in trace["spans"]] == ["root", "llm", "tool"]
        assert trace["spans"][1]["attributes"] == {"model": "gpt-4o-mini"}
        page = client.get(f"/traces?entityId=agent-{run}&tag=worker-{index}").json
        assert page["total"] == 1 and page["items"][0]["status"] == "success"

    in_threads(work)
    client = app.test_client()
    page = client.get(f"/traces?entityId=agent-{run}&perPage=5").json
    assert page["total"] == WORKERS and len(page["items"]) == 5 and page["hasMore"] is True
    assert client.get(f"/traces/{run}-missing").status_code == 404
    response = client.post("/spans", json=[{"traceId": "t", "spanId": "s", "name": "x", "spanType": "nope",
                                            "startedAt": "2026-01-31T14:00:00Z"}])
    assert response.status_code == 400
