"""A Flask app on composite-store: one store for the whole process, shared by every request thread.

Run it (the store's URL comes from ``COMPOSITE_STORE_URL``; default: a SQLite file)::

    COMPOSITE_STORE_URL=postgresql://app:secret@localhost/app flask --app examples/flask_app.py run
    python examples/flask_app.py            # the same, with Flask's development server

JSON endpoints, in Mastra's wire form (camelCase keys, ISO-8601 ``...Z`` timestamps), which the
marshmallow schemas of :mod:`repository.schemas` load and dump:

=======  ===============================  ==================================================
GET      /threads                         threads, newest first (``resourceId``, ``page``,
                                          ``perPage`` query parameters)
POST     /threads                         create or replace a thread
GET      /threads/<thread_id>             one thread
PATCH    /threads/<thread_id>             ``{"title": ..., "metadata": {...}}`` (metadata merged)
DELETE   /threads/<thread_id>             the thread and its messages
GET      /threads/<thread_id>/messages    messages, oldest first (``page``, ``perPage``)
POST     /threads/<thread_id>/messages    one message or a list of messages
GET      /traces                          root spans, newest first (filters as query parameters)
GET      /traces/<trace_id>               every span of one trace
POST     /spans                           a list of spans, written as one batch
=======  ===============================  ==================================================

Errors come back as ``{"error": {"id": ..., "message": ..., "fields": {...}}}`` with status 400
(bad input), 404 (not found), 409 (conflict), 503 (database unreachable) or 500.
"""

from __future__ import annotations

import os
from typing import Any

import marshmallow
from flask import Flask, Response, abort, jsonify, request

from composite_store import (BackendUnavailableError, CompositeStore, ConflictError, NotFoundError, NotSupportedError,
                        Page, StorageError, ValidationError)
from composite_store.schemas import MessageSchema, SpanSchema, ThreadSchema, flatten_errors

#: Where the store lives when ``COMPOSITE_STORE_URL`` is not set.
DEFAULT_URL = "sqlite:///flask-app.db"

#: ``list_traces`` filters that can be given as query parameters (snake_case or camelCase).
TRACE_FILTERS = ("trace_id", "span_type", "entity_type", "entity_id", "entity_name", "user_id",
                 "organization_id", "resource_id", "run_id", "session_id", "thread_id", "request_id",
                 "environment", "source", "service_name", "experiment_id", "status")

THREAD_SCHEMA = ThreadSchema()
MESSAGE_SCHEMA = MessageSchema()
SPAN_SCHEMA = SpanSchema()


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _arg(name: str, default: Any = None) -> Any:
    """A query parameter by its camelCase or snake_case name."""
    return request.args.get(_camel(name), request.args.get(name, default))


def _int_arg(name: str, default: int | bool) -> Any:
    """An integer query parameter; text that is not a number goes to the library, which rejects it."""
    value = _arg(name)
    if value is None:
        return default
    if value == "false":
        return False
    try:
        return int(value)
    except ValueError:
        return value


def _page(page: Page, schema: marshmallow.Schema) -> dict[str, Any]:
    return {"items": schema.dump(page.items, many=True), "total": page.total, "page": page.page,
            "perPage": page.per_page, "hasMore": page.has_more}


def _body() -> Any:
    """The JSON request body (a 400 response when there is none)."""
    data = request.get_json(silent=True)
    if data is None:
        abort(_error(400, "REQUEST_INVALID_INPUT", "The request body must be JSON"))
    return data


def _error(status: int, error_id: str | None, message: str, fields: dict[str, list[str]] | None = None) -> Response:
    body: dict[str, Any] = {"id": error_id, "message": message}
    if fields:
        body["fields"] = fields
    response = jsonify({"error": body})
    response.status_code = status
    return response


def create_app(url: str | None = None, *, storage: CompositeStore | None = None) -> Flask:
    """The app, with its store: ``storage`` if given, else one built from ``url``,
    ``$COMPOSITE_STORE_URL`` or :data:`DEFAULT_URL`.  The tables are created at start-up."""
    app = Flask(__name__)
    if storage is None:
        storage = CompositeStore.from_urls(default=url or os.environ.get("COMPOSITE_STORE_URL", DEFAULT_URL))
    storage.init()
    app.extensions["composite_store"] = storage
    memory = storage.get_store("memory")
    observability = storage.get_store("observability")

    @app.errorhandler(StorageError)
    def storage_error(error: StorageError) -> Response:
        if isinstance(error, ConflictError):
            status = 409
        elif isinstance(error, ValidationError):
            status = 400
        elif isinstance(error, NotFoundError):
            status = 404
        elif isinstance(error, BackendUnavailableError):
            status = 503
        elif isinstance(error, NotSupportedError):
            status = 501
        else:
            status = 500
            app.logger.error("storage failure %s: %s", error.id, error.message)
        return _error(status, error.id, error.message, error.details.get("fields"))

    @app.errorhandler(marshmallow.ValidationError)
    def schema_error(error: marshmallow.ValidationError) -> Response:
        return _error(400, "REQUEST_INVALID_INPUT", "The request body is not valid", flatten_errors(error.messages))

    # ------------------------------------------------------------------ threads (memory)

    @app.get("/threads")
    def list_threads() -> Any:
        page = memory.list_threads(resource_id=_arg("resource_id"), page=_int_arg("page", 0),
                                   per_page=_int_arg("per_page", 100))
        return _page(page, THREAD_SCHEMA)

    @app.post("/threads")
    def save_thread() -> Any:
        thread = memory.save_thread(thread=THREAD_SCHEMA.load(_body()))
        return THREAD_SCHEMA.dump(thread), 201

    @app.get("/threads/<thread_id>")
    def get_thread(thread_id: str) -> Any:
        thread = memory.get_thread_by_id(thread_id=thread_id)
        if thread is None:
            return _error(404, "THREAD_NOT_FOUND", f"Thread {thread_id} not found")
        return THREAD_SCHEMA.dump(thread)

    @app.patch("/threads/<thread_id>")
    def update_thread(thread_id: str) -> Any:
        changes = _body()
        if not isinstance(changes, dict):
            return _error(400, "REQUEST_INVALID_INPUT", "The request body must be a JSON object")
        unknown = sorted(set(changes) - {"title", "metadata"})
        if unknown:
            return _error(400, "REQUEST_INVALID_INPUT", "Only title and metadata can be changed",
                          {key: ["Unknown field."] for key in unknown})
        return THREAD_SCHEMA.dump(memory.update_thread(id=thread_id, **changes))

    @app.delete("/threads/<thread_id>")
    def delete_thread(thread_id: str) -> Any:
        memory.delete_thread(thread_id=thread_id)
        return "", 204

    @app.get("/threads/<thread_id>/messages")
    def list_messages(thread_id: str) -> Any:
        page = memory.list_messages(thread_id=thread_id, page=_int_arg("page", 0), per_page=_int_arg("per_page", 40))
        return _page(page, MESSAGE_SCHEMA)

    @app.post("/threads/<thread_id>/messages")
    def save_messages(thread_id: str) -> Any:
        body = _body()
        wire = body if isinstance(body, list) else [body]
        if not all(isinstance(item, dict) for item in wire):
            return _error(400, "REQUEST_INVALID_INPUT", "Messages must be JSON objects")
        records = MESSAGE_SCHEMA.load([{"threadId": thread_id, **item} for item in wire], many=True)
        saved = memory.save_messages(messages=records)
        return jsonify(MESSAGE_SCHEMA.dump(saved, many=True)), 201

    # ------------------------------------------------------------------ traces (observability)

    if observability is not None:  # the store may keep no traces (domains={"observability": False})
        @app.get("/traces")
        def list_traces() -> Any:
            filters: dict[str, Any] = {key: _arg(key) for key in TRACE_FILTERS if _arg(key) is not None}
            if request.args.getlist("tag"):
                filters["tags"] = request.args.getlist("tag")
            page = observability.list_traces(filters=filters or None, page=_int_arg("page", 0),
                                             per_page=_int_arg("per_page", 10))
            return _page(page, SPAN_SCHEMA)

        @app.get("/traces/<trace_id>")
        def get_trace(trace_id: str) -> Any:
            trace = observability.get_trace(trace_id=trace_id)
            if trace is None:
                return _error(404, "TRACE_NOT_FOUND", f"Trace {trace_id} not found")
            return {"traceId": trace["trace_id"], "spans": SPAN_SCHEMA.dump(trace["spans"], many=True)}

        @app.post("/spans")
        def create_spans() -> Any:
            body = _body()
            if not isinstance(body, list):
                return _error(400, "REQUEST_INVALID_INPUT", "The request body must be a list of spans")
            records = SPAN_SCHEMA.load(body, many=True)
            observability.batch_create_spans(records=records)
            return {"created": len(records)}, 201

    return app


if __name__ == "__main__":
    application = create_app()
    try:
        application.run(threaded=True)
    finally:
        application.extensions["composite_store"].close()
