"""The memory domain: threads, messages, resources and working memory (spec: memory.md)."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from datetime import datetime, timedelta
from itertools import zip_longest
from typing import Any, Callable, Iterable, Iterator
from uuid import uuid4

import marshmallow
import peewee

from .models.memory import build_memory_models

from .base import (ITER_CHUNK, DomainRepository, Keyset, check_chunk_size, fetch_page, fetch_prepared_page,
                   filter_by_metadata, matching, operation, streaming)
from .errors import ConflictError, NotFoundError, ValidationError
from .page import Page
from .retention import Prunable, RetentionTable
from .schemas.base import JSONObject, Timestamp, flatten_errors, load_into
from .schemas.memory import MESSAGE_ROLES, MessageSchema, MessageUpdateSchema, ResourceSchema, ThreadSchema
from .validation import (Problems, check_id, check_metadata_filter, check_order_by, check_page, json_matches,
                         require_id)
from .values import (UNSET, chunks, deep_copy_json, format_iso, json_dumps, json_loads, normalize_json, to_utc,
                     utc_now)

_THREAD_SCHEMA = ThreadSchema()
_MESSAGE_SCHEMA = MessageSchema()
_MESSAGE_UPDATE_SCHEMA = MessageUpdateSchema()
_RESOURCE_SCHEMA = ResourceSchema()
_OBJECT_FIELD = JSONObject()
_TIMESTAMP_FIELD = Timestamp()

#: Stored ``type`` of messages saved without one; read back as ``None``.
DEFAULT_MESSAGE_TYPE = "v2"

#: Longest ``thread_id`` list whose ``list_messages`` query is prepared (one statement per length).
PREPARED_THREAD_IDS = 16
#: Largest batch whose stored-message read is prepared (one statement per batch size).
PREPARED_IDS = 100

_ONE_MS = timedelta(milliseconds=1)
_NO_TIME = timedelta(0)


def _text_content(text: str) -> dict[str, Any]:
    return {"format": 2, "parts": [{"type": "text", "text": text}], "content": text}


def decode_content(stored: Any) -> dict[str, Any]:
    """Message content as format 2, also for rows older clients wrote as plain text (§3.4)."""
    value = json_loads(stored)
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        return _text_content(value)
    return _text_content(stored if isinstance(stored, str) else json_dumps(value))


def _thread_ids(problems: Problems, thread_id: Any) -> list[str]:
    """The ``thread_id`` filter of the message lists (one id or a list of them) as a list."""
    thread_ids = [thread_id] if isinstance(thread_id, str) else thread_id
    if not isinstance(thread_ids, list) or not thread_ids or not all(
            isinstance(t, str) and t.strip() for t in thread_ids):
        problems.add("thread_id", "thread_id must be a non-empty string or a list of non-empty strings")
        return []
    return thread_ids


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


_MESSAGE_KEYS = frozenset({"id", "thread_id", "resource_id", "role", "type", "content", "created_at"})
_ROLES = frozenset(MESSAGE_ROLES)


def _fast_message(message: Any) -> dict[str, Any] | None:
    """``MessageSchema().load(message)`` for the common valid snake_case message, without
    marshmallow (~5x faster: ``save_messages`` is a bulk path); ``None`` for anything else, which
    the schema then loads (and reports)."""
    if type(message) is not dict or not message.keys() <= _MESSAGE_KEYS:
        return None
    # Spelled out, not a loop over the fields: this runs for every message of a bulk write.
    message_id, thread_id, resource_id = message.get("id"), message.get("thread_id"), message.get("resource_id")
    if type(message_id) is not str or type(thread_id) is not str or type(resource_id) is not str \
            or not (message_id and thread_id and resource_id):
        return None
    role, kind = message.get("role"), message.get("type")
    if type(role) is not str or role not in _ROLES or (kind is not None and type(kind) is not str):
        return None
    content = message.get("content")
    if type(content) is str:
        content = _text_content(content)
    elif type(content) is not dict:
        return None
    errors: dict[str, list[str]] = {}
    content = normalize_json(content, "", errors)
    if errors or content.get("format") != 2 or type(content["format"]) is bool \
            or not isinstance(content.get("parts"), list):
        return None
    loaded = {**message, "content": content}
    if "created_at" in message:
        if not isinstance(message["created_at"], datetime):
            return None
        loaded["created_at"] = to_utc(message["created_at"])
    return loaded


def _check_ids(problems: Problems, field: str, value: Any) -> list[str]:
    """A list of non-empty string ids."""
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        problems.add(field, f"{field} must be a list of non-empty strings")
        return []
    return list(dict.fromkeys(value))


class MemoryRepository(Prunable, DomainRepository):
    """Threads, messages and resources of AI-agent conversations.

    Example::

        memory = storage.get_store("memory")
        memory.save_thread(thread={"id": "t-1", "resource_id": "user-1", "title": "Hello"})
        memory.save_messages(messages=[{"id": "m-1", "thread_id": "t-1", "resource_id": "user-1",
                                        "role": "user", "content": "Hi!"}])
        page = memory.list_messages(thread_id="t-1")
    """

    domain = "memory"
    #: Retention (fidelity-1.71 §5): each table on its own ``createdAt``, in Mastra's order.
    retention_tables = (RetentionTable(key="messages", model="message", anchor="created_at"),
                        RetentionTable(key="resources", model="resource", anchor="created_at"),
                        RetentionTable(key="threads", model="thread", anchor="created_at"))

    def build_models(self, database: peewee.DatabaseProxy) -> Any:
        return build_memory_models(database)

    # ------------------------------------------------------------------ record conversion

    @staticmethod
    def _thread_record(row: dict[str, Any]) -> dict[str, Any]:
        return {"id": row["id"], "resource_id": row["resource_id"], "title": row["title"] or "",
                "metadata": _object(row["metadata"]), "created_at": row["created_at"],
                "updated_at": row["updated_at"]}

    @staticmethod
    def _message_record(row: dict[str, Any], content: dict[str, Any] | None = None) -> dict[str, Any]:
        """The record of a stored row; ``content``, when given, is the decoded content already."""
        return {"id": row["id"], "thread_id": row["thread_id"], "resource_id": row["resource_id"],
                "role": row["role"], "type": None if row["type"] in (DEFAULT_MESSAGE_TYPE, None) else row["type"],
                "content": decode_content(row["content"]) if content is None else content,
                "created_at": row["created_at"]}

    @staticmethod
    def _resource_record(row: dict[str, Any]) -> dict[str, Any]:
        working_memory = row["working_memory"]
        if working_memory is not None and not isinstance(working_memory, str):
            working_memory = json_dumps(working_memory)
        return {"id": row["id"], "working_memory": working_memory, "metadata": _object(row["metadata"]),
                "created_at": row["created_at"], "updated_at": row["updated_at"]}

    def _clean(self, record: dict[str, Any]) -> dict[str, Any]:
        return {key: self.backend.clean(value) for key, value in record.items()}

    # ------------------------------------------------------------------ reads of single rows

    def _thread_row(self, thread_id: str, resource_id: str | None = None, *, lock: bool = False) -> dict | None:
        Thread, backend = self.models.thread, self.backend
        scoped = resource_id is not None

        def build() -> peewee.ModelSelect:
            query = backend.select(Thread).where(Thread.id == backend.param("id"))
            if scoped:
                query = query.where(Thread.resource_id == backend.param("resource_id"))
            return (backend.for_update(query) if lock else query).limit(1)

        # A prepared statement: every thread read-modify-write and get_thread_by_id start here.
        return backend.prepared((Thread, scoped, lock), build).first(id=backend.clean(thread_id),
                                                                    resource_id=backend.clean(resource_id))

    def _touch_threads(self, thread_ids: Iterable[str], now: datetime) -> None:
        """Set ``updated_at = now`` on these threads (those that exist): one statement per
        :data:`~composite_store.values.ID_CHUNK` threads, not one per thread.  Where writes
        return what they changed (SQLite, PostgreSQL) it is :meth:`_bump_threads`' ``UPDATE``,
        which locks the threads in id order; ClickHouse reads the threads once and re-inserts
        them in one block."""
        Thread = self.models.thread
        for chunk in chunks(sorted(set(thread_ids))):
            if self.backend.features.returning:
                self._bump_threads(chunk, [], now)
            else:
                self.backend.update(Thread, Thread.id.in_(chunk), {"updated_at": now})

    # ------------------------------------------------------------------ threads

    @operation
    def get_thread_by_id(self, *, thread_id: str, resource_id: str | None = None) -> dict | None:
        """The thread, or ``None``; with ``resource_id`` it must also belong to that resource."""
        problems = Problems()
        check_id(problems, "thread_id", thread_id)
        if resource_id is not None:
            check_id(problems, "resource_id", resource_id)
        problems.raise_if_any()
        row = self._thread_row(thread_id, resource_id)
        return None if row is None else self._thread_record(row)

    @operation
    def save_thread(self, *, thread: dict) -> dict:
        """Insert or fully replace a thread (``created_at`` included); messages are untouched."""
        problems = Problems()
        data = load_into(problems, _THREAD_SCHEMA, thread)
        problems.raise_if_any()
        created_at = data.get("created_at") or utc_now()
        row = self._clean({"id": data["id"], "resource_id": data["resource_id"], "title": data.get("title", ""),
                           "metadata": data.get("metadata"), "created_at": created_at,
                           "updated_at": data.get("updated_at") or created_at})
        with self.backend.write_statement(("thread", row["id"])):
            self.backend.upsert(self.models.thread, [row])
        return self._thread_record(row)

    @property
    def supports_partial_thread_update(self) -> bool:
        """Always ``True``: :meth:`update_thread` changes only the fields it is given (Mastra's
        ``supportsPartialThreadUpdate``)."""
        return True

    @operation
    def update_thread(self, *, id: str, title: str = UNSET, metadata: dict = UNSET) -> dict:
        """Change the title and/or merge ``metadata`` into the stored metadata; bumps ``updated_at``."""
        return self._update_thread(id, title, metadata)

    @operation
    def patch_thread(self, *, id: str, title: str = UNSET, metadata: dict = UNSET) -> dict:
        """Exactly :meth:`update_thread` (Mastra's ``patchThread``, for callers written against
        stores whose ``updateThread`` is not partial), with its own error ids.

        Example::

            memory.patch_thread(id="t-1", metadata={"pinned": True})  # the title is kept
        """
        return self._update_thread(id, title, metadata)

    def _update_thread(self, id: Any, title: Any, metadata: Any) -> dict:
        problems = Problems()
        check_id(problems, "id", id)
        if title is not UNSET:
            if title is None:
                problems.add("title", "Field may not be null.")
            elif not isinstance(title, str):
                problems.add("title", "Not a valid string.")
        if metadata is not UNSET:
            metadata = self._load_object(problems, "metadata", metadata)
        problems.raise_if_any()
        values: dict[str, Any] = {}
        if title is not UNSET:
            values["title"] = self.backend.clean(title)
        patch = metadata if metadata is not UNSET else {}
        if self.backend.merges_json_members(patch):
            return self._update_thread_in_place(id, values, patch)
        return self._merge_into_thread(id, None, lambda thread: metadata if metadata is not UNSET else {},
                                       values, missing=lambda: NotFoundError(f"Thread {id} not found",
                                                                             details={"thread_id": id}))

    @operation
    def update_thread_resource_id(self, *, thread_id: str, resource_id: str) -> dict:
        """Move a thread and all its messages to another resource; returns the thread as
        :meth:`get_thread_by_id` now returns it.

        Atomic on SQLite and PostgreSQL (the thread row locked, then one ``UPDATE`` of its
        messages); ClickHouse re-inserts the rows under the thread's lock (a retry converges).
        A thread already of that resource is returned unchanged, ``updated_at`` included.
        Resources are neither created nor checked. A missing thread is a ``NotFoundError``.

        Example::

            memory.update_thread_resource_id(thread_id="t-1", resource_id="user-2")
        """
        problems = Problems()
        check_id(problems, "thread_id", thread_id)
        check_id(problems, "resource_id", resource_id)
        problems.raise_if_any()
        Thread, Message = self.models.thread, self.models.message
        resource_id = self.backend.clean(resource_id)
        with self.backend.write(("thread", thread_id)):
            row = self._thread_row(thread_id, lock=True)
            if row is None:
                raise NotFoundError(f"Thread {thread_id} not found", details={"thread_id": thread_id})
            thread = self._thread_record(row)
            if row["resource_id"] == resource_id:
                return thread
            values = {"resource_id": resource_id, "updated_at": utc_now()}
            self.backend.replace(Thread, row, values)
            self.backend.update(Message, Message.thread_id == thread_id, {"resource_id": resource_id})
        return {**thread, **values}

    @operation
    def update_thread_metadata(self, *, id: str, update: Callable[[dict], dict | None],
                               resource_id: str | None = None) -> dict | None:
        """Atomic read-modify-write of a thread's metadata.

        ``update`` gets a copy of the thread; a returned dict is merged into the metadata,
        ``None`` leaves the thread unchanged.  Returns ``None`` when the thread is missing.
        """
        problems = Problems()
        check_id(problems, "id", id)
        if resource_id is not None:
            check_id(problems, "resource_id", resource_id)
        if not callable(update):
            problems.add("update", "update must be callable")
        problems.raise_if_any()

        def patch(thread: dict) -> dict | None:
            result = update(deep_copy_json(thread))
            if result is None:
                return None
            checks = Problems()
            result = self._load_object(checks, "metadata", result)
            checks.raise_if_any()
            return result

        return self._merge_into_thread(id, resource_id, patch, {}, missing=lambda: None)

    def _update_thread_in_place(self, thread_id: str, values: dict[str, Any], patch: dict[str, Any]) -> dict:
        """:meth:`update_thread` as one ``UPDATE … RETURNING`` where the database merges JSON
        objects itself (PostgreSQL; SQLite for members neither null nor objects): atomic without
        a transaction, one round trip."""
        Thread, backend = self.models.thread, self.backend
        rows = backend.update_returning(
            Thread, lambda: Thread.id == backend.param("id"), {**values, "updated_at": utc_now()},
            Thread._meta.sorted_fields, shape=(Thread, tuple(values)),
            params={"id": thread_id, "patch": backend.database.json_to_db(Thread.metadata, patch)},
            computed=lambda: {Thread.metadata: backend.json_object_merge(Thread.metadata, backend.param("patch"))})
        if not rows:
            raise NotFoundError(f"Thread {thread_id} not found", details={"thread_id": thread_id})
        return self._thread_record(rows[0])

    def _merge_into_thread(self, thread_id: str, resource_id: str | None,
                           patch: Callable[[dict], dict | None], values: dict[str, Any],
                           missing: Callable[[], Any]) -> Any:
        Thread = self.models.thread
        with self.backend.write(("thread", thread_id)):
            row = self._thread_row(thread_id, resource_id, lock=True)
            if row is None:
                result = missing()
                if isinstance(result, Exception):
                    raise result
                return result
            thread = self._thread_record(row)
            metadata = patch(thread)
            if metadata is None:
                return thread
            values = {**values, "metadata": {**thread["metadata"], **metadata}, "updated_at": utc_now()}
            self.backend.replace(Thread, row, values)
        return {**thread, **values}

    def _load_object(self, problems: Problems, field: str, value: Any) -> Any:
        if value is None:
            problems.add(field, "Field may not be null.")
            return None
        try:
            return self.backend.clean(_OBJECT_FIELD.load(value))
        except marshmallow.ValidationError as error:
            problems.merge(flatten_errors(error.messages), field)
            return None

    @operation
    def delete_thread(self, *, thread_id: str) -> None:
        """Delete the thread and all its messages; no error when it does not exist."""
        require_id("thread_id", thread_id)
        Thread, Message = self.models.thread, self.models.message
        with self.backend.write(("thread", thread_id)):
            self.backend.delete_bulk(Message, Message.thread_id == thread_id, operation="DELETE_THREAD")
            self.backend.delete(Thread, Thread.id == thread_id)

    @operation
    def list_threads(self, *, resource_id: str | None = None, metadata: dict | None = None, page: int = 0,
                     per_page: int | bool = 100, order_by: dict | None = None, after: str | None = None) -> Page:
        """Threads filtered by resource and metadata, newest first by default; ``after=`` the
        ``cursor`` of a page gives the page that follows it (read by key, however deep)."""
        problems = Problems()
        request = check_page(problems, page, per_page, default_per_page=100)
        filters = check_metadata_filter(problems, "metadata", metadata)
        if resource_id not in (None, "") and not isinstance(resource_id, str):
            problems.add("resource_id", "resource_id must be a non-empty string")
        ordering = check_order_by(problems, order_by, allowed=("created_at", "updated_at"),
                                  default_field="created_at", default_direction="DESC")
        Thread = self.models.thread
        keyset = Keyset(getattr(Thread, ordering.field), ordering.descending, Thread.id)
        following = keyset.after(problems, after, request)
        problems.raise_if_any()
        query = self.backend.select(Thread)
        if resource_id:
            query = query.where(Thread.resource_id == resource_id)
        query, predicate = filter_by_metadata(self.backend, query, Thread.metadata, filters)
        rows, total, has_more = fetch_page(self.backend, query, keyset.order, request, predicate=predicate,
                                           after=following)
        return Page([self._thread_record(r) for r in rows], total, request.page, request.per_page, has_more,
                    keyset.cursor(rows))

    # ------------------------------------------------------------------ streaming reads

    @streaming
    def iter_threads(self, *, resource_id: str | None = None, metadata: dict | None = None,
                     chunk_size: int = ITER_CHUNK) -> Iterator[dict]:
        """Every thread (of ``resource_id``, matching ``metadata``) as :meth:`list_threads`
        gives them, in id order, read ``chunk_size`` at a time (constant memory)."""
        problems = Problems()
        filters = check_metadata_filter(problems, "metadata", metadata)
        check_chunk_size(problems, chunk_size)
        Thread = self.models.thread
        query = matching(problems, self.backend.select(Thread), Thread, resource_id=resource_id)
        problems.raise_if_any()
        query, predicate = filter_by_metadata(self.backend, query, Thread.metadata, filters)
        return self.iter_query(query, self._thread_record, chunk_size, predicate=predicate)

    @streaming
    def iter_messages(self, *, thread_id: str | list[str] | None = None, resource_id: str | None = None,
                      date_range: dict | None = None, metadata: dict | None = None,
                      chunk_size: int = ITER_CHUNK) -> Iterator[dict]:
        """Every message (of threads, a resource, or all; in ``date_range``, matching
        ``metadata``: the filters of :meth:`list_messages`) as it gives them, in id order, read
        ``chunk_size`` at a time (constant memory)."""
        problems = Problems()
        thread_ids = None if thread_id is None else _thread_ids(problems, thread_id)
        if resource_id is not None:
            check_id(problems, "resource_id", resource_id)
        filters = check_metadata_filter(problems, "metadata", metadata)
        _, bounds = self._check_list_arguments(problems, None, date_range)
        check_chunk_size(problems, chunk_size)
        problems.raise_if_any()
        query, predicate = self._matching_messages(thread_ids, resource_id, bounds, filters)
        return self.iter_query(query, self._message_record, chunk_size, predicate=predicate)

    @streaming
    def iter_resources(self, *, chunk_size: int = ITER_CHUNK) -> Iterator[dict]:
        """Every resource as :meth:`get_resource_by_id` gives it, in id order, read
        ``chunk_size`` at a time (constant memory)."""
        return self.iter_matching(Problems(), self.models.resource, self._resource_record, chunk_size)

    # ------------------------------------------------------------------ messages: reads

    def _check_list_arguments(self, problems: Problems, include: Any, date_range: Any) -> tuple[list, dict]:
        windows = []
        if include is not None:
            if not isinstance(include, list):
                problems.add("include", "include must be a list")
            else:
                for index, entry in enumerate(include):
                    path = f"include[{index}]"
                    if not isinstance(entry, dict):
                        problems.add(path, "Not a valid mapping type.")
                        continue
                    for key in entry:
                        if key not in ("id", "thread_id", "with_previous_messages", "with_next_messages"):
                            problems.add(f"{path}.{key}", "Unknown field.")
                    check_id(problems, f"{path}.id", entry.get("id"))
                    counts = []
                    for key in ("with_previous_messages", "with_next_messages"):
                        count = entry.get(key, 0)
                        count = 0 if count is None else count
                        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                            problems.add(f"{path}.{key}", f"{key} must be an integer >= 0")
                        counts.append(count)
                    windows.append((entry.get("id"), *counts))
        bounds: dict[str, Any] = {}
        if date_range is not None:
            if not isinstance(date_range, dict):
                problems.add("date_range", "Not a valid mapping type.")
            else:
                for key, value in date_range.items():
                    path = f"date_range.{key}"
                    if key in ("start", "end"):
                        if value is not None:
                            try:
                                bounds[key] = _TIMESTAMP_FIELD.deserialize(value)
                            except marshmallow.ValidationError:
                                problems.add(path, "Not a valid datetime.")
                    elif key in ("start_exclusive", "end_exclusive"):
                        if not isinstance(value, bool):
                            problems.add(path, "Not a valid boolean.")
                        bounds[key] = value
                    else:
                        problems.add(path, "Unknown field.")
        return windows, bounds

    @staticmethod
    def _date_limits(bounds: dict[str, Any]) -> dict[str, datetime]:
        """The date range as ``created_at >= start`` and ``created_at < end``.

        Comparisons are exact to the millisecond, also for rows other clients stored with
        microseconds (read back truncated): "> start" is ">= start + 1 ms", "<= end" is "< end + 1 ms".
        """
        limits = {}
        if "start" in bounds:
            limits["start"] = bounds["start"] + (_ONE_MS if bounds.get("start_exclusive") else _NO_TIME)
        if "end" in bounds:
            limits["end"] = bounds["end"] + (_NO_TIME if bounds.get("end_exclusive") else _ONE_MS)
        return limits

    def _date_conditions(self, bounds: dict[str, Any]) -> list[Any]:
        created = self.models.message.created_at
        limits = self._date_limits(bounds)
        return ([created >= limits["start"]] if "start" in limits else []) + (
            [created < limits["end"]] if "end" in limits else [])

    @staticmethod
    def _in_date_range(created_at: datetime, bounds: dict[str, Any]) -> bool:
        start, end = bounds.get("start"), bounds.get("end")
        if start is not None and (created_at <= start if bounds.get("start_exclusive") else created_at < start):
            return False
        if end is not None and (created_at >= end if bounds.get("end_exclusive") else created_at > end):
            return False
        return True

    @operation
    def list_messages(self, *, thread_id: str | list[str], resource_id: str | None = None,
                      include: list[dict] | None = None, date_range: dict | None = None,
                      metadata: dict | None = None, page: int = 0, per_page: int | bool = 40,
                      order_by: dict | None = None, include_total: bool = True, after: str | None = None) -> Page:
        """Messages of one or more threads, oldest first by default, plus include windows;
        ``after=`` the ``cursor`` of a page gives the page that follows it (read by key)."""
        problems = Problems()
        thread_ids = _thread_ids(problems, thread_id)
        if resource_id not in (None, "") and not isinstance(resource_id, str):
            problems.add("resource_id", "resource_id must be a non-empty string")
        return self._list_messages(problems, thread_ids=thread_ids, resource_id=resource_id or None,
                                   include=include, date_range=date_range, metadata=metadata, page=page,
                                   per_page=per_page, order_by=order_by, include_total=include_total, after=after)

    @operation
    def list_messages_by_resource_id(self, *, resource_id: str, include: list[dict] | None = None,
                                     date_range: dict | None = None, metadata: dict | None = None,
                                     page: int = 0, per_page: int | bool = 40, order_by: dict | None = None,
                                     include_total: bool = True, after: str | None = None) -> Page:
        """Messages of one resource across all its threads; include windows scoped to it;
        ``after=`` as in :meth:`list_messages`."""
        problems = Problems()
        if not isinstance(resource_id, str) or not resource_id.strip():
            problems.add("resource_id", "resource_id must be a non-empty string")
        return self._list_messages(problems, thread_ids=None, resource_id=resource_id, include=include,
                                   date_range=date_range, metadata=metadata, page=page, per_page=per_page,
                                   order_by=order_by, include_total=include_total, after=after)

    def _list_messages(self, problems: Problems, *, thread_ids: list[str] | None, resource_id: str | None,
                       include: Any, date_range: Any, metadata: Any, page: Any, per_page: Any, order_by: Any,
                       include_total: Any, after: Any) -> Page:
        request = check_page(problems, page, per_page, default_per_page=40)
        filters = check_metadata_filter(problems, "metadata", metadata)
        windows, bounds = self._check_list_arguments(problems, include, date_range)
        ordering = check_order_by(problems, order_by, allowed=("created_at",), default_field="created_at",
                                  default_direction="ASC")
        if not isinstance(include_total, bool):
            problems.add("include_total", "Not a valid boolean.")
        Message = self.models.message
        keyset = Keyset(Message.created_at, ordering.descending, Message.id)
        following = keyset.after(problems, after, request)
        problems.raise_if_any()

        # Without a metadata filter or cursor (and with a short thread list) the query's shape is
        # fixed by which arguments are given: a prepared page.
        prepared = not filters and following is None and (thread_ids is None or len(thread_ids) <= PREPARED_THREAD_IDS)
        predicate = query = None
        if not prepared:
            query, predicate = self._matching_messages(thread_ids, resource_id, bounds, filters)

        def in_main_filter(row: dict[str, Any]) -> bool:
            return ((thread_ids is None or row["thread_id"] in thread_ids)
                    and (not resource_id or row["resource_id"] == resource_id)
                    and self._in_date_range(row["created_at"], bounds)
                    and (not filters or json_matches(_object(decode_content(row["content"]).get("metadata")), filters)))

        # The page alone is one statement (rows and total together); windows read in its transaction.
        with self.backend.read() if windows else nullcontext():
            if prepared:
                rows, total, has_more = self._prepared_page(thread_ids, resource_id, bounds, ordering.descending,
                                                            request, include_total)
            else:
                rows, total, has_more = fetch_page(self.backend, query, keyset.order, request, predicate=predicate,
                                                   include_total=include_total, after=following)
            cursor = keyset.cursor(rows)
            items = {row["id"]: row for row in rows}
            for target_id, earlier, later in windows:
                for row in self._window(target_id, earlier, later, resource_id):
                    items.setdefault(row["id"], row)
        ordered = sorted(items.values(), key=lambda r: r["id"])
        ordered.sort(key=lambda r: r["created_at"], reverse=ordering.descending)
        if windows and include_total and request.per_page is not False:
            # Without windows every item is a main-filter match and fetch_page's has_more is exact.
            matched = sum(1 for row in ordered if in_main_filter(row))
            has_more = has_more and matched < total
        return Page([self._message_record(r) for r in ordered], total, request.page, request.per_page, has_more,
                    cursor)

    def _matching_messages(self, thread_ids: list[str] | None, resource_id: str | None, bounds: dict[str, Any],
                           filters: dict[str, Any]) -> tuple[peewee.ModelSelect, Callable[[dict], bool] | None]:
        """The select of the messages matching checked list filters, and the predicate of the
        part of a metadata filter a backend checks in Python (:func:`fetch_page`'s)."""
        Message = self.models.message
        query = self.backend.select(Message)
        if thread_ids is not None:
            query = query.where(Message.thread_id.in_(thread_ids))
        if resource_id:
            query = query.where(Message.resource_id == resource_id)
        for condition in self._date_conditions(bounds):
            query = query.where(condition)
        return filter_by_metadata(self.backend, query, Message.content, filters, path="$.metadata",
                                  document=lambda row: _object(decode_content(row["content"]).get("metadata")))

    def _prepared_page(self, thread_ids: list[str] | None, resource_id: str | None, bounds: dict[str, Any],
                       descending: bool, request: Any, include_total: bool) -> tuple[list[dict], int, bool]:
        """The page of a list without metadata filter: its shape is fixed by which arguments are
        given, so its SQL is rendered once per shape (reading a thread's latest messages is hot)."""
        Message, backend = self.models.message, self.backend
        created = Message.created_at
        values: dict[str, Any] = {f"thread_{i}": thread_id for i, thread_id in enumerate(thread_ids or ())}
        if resource_id:
            values["resource_id"] = resource_id
        limits = self._date_limits(bounds)
        values.update((name, created.db_value(limit)) for name, limit in limits.items())

        def build() -> peewee.ModelSelect:
            query = backend.select(Message)
            if thread_ids is not None:
                query = query.where(Message.thread_id.in_([backend.param(f"thread_{i}")
                                                           for i in range(len(thread_ids))]))
            if resource_id:
                query = query.where(Message.resource_id == backend.param("resource_id"))
            if "start" in limits:
                query = query.where(created >= backend.param("start"))
            if "end" in limits:
                query = query.where(created < backend.param("end"))
            return query

        key = (Message, None if thread_ids is None else len(thread_ids), bool(resource_id), tuple(limits), descending)
        return fetch_prepared_page(backend, key, build, Keyset(created, descending, Message.id).order, request,
                                   values, include_total=include_total)

    def _window(self, target_id: str, before: int, after: int, resource_id: str | None) -> list[dict]:
        """The target message and its neighbours in its own thread (§4.3, step 3)."""
        Message = self.models.message
        target = self.backend.select(Message).where(Message.id == target_id).first()
        if target is None or (resource_id and target["resource_id"] != resource_id):
            return []
        thread = self.backend.select(Message).where(Message.thread_id == target["thread_id"])
        if resource_id:
            thread = thread.where(Message.resource_id == resource_id)
        created, ident = Message.created_at, Message.id
        rows = [target]
        if before:
            earlier = (created < target["created_at"]) | ((created == target["created_at"]) & (ident < target_id))
            rows += list(thread.where(earlier).order_by(created.desc(), ident.desc()).limit(before))
        if after:
            later = (created > target["created_at"]) | ((created == target["created_at"]) & (ident > target_id))
            rows += list(thread.where(later).order_by(created.asc(), ident.asc()).limit(after))
        return rows

    @operation
    def list_messages_by_id(self, *, message_ids: list[str]) -> list[dict]:
        """The messages with these ids, from any thread, ascending by ``(created_at, id)``."""
        problems = Problems()
        ids = _check_ids(problems, "message_ids", message_ids)
        problems.raise_if_any()
        if not ids:
            return []
        Message = self.models.message
        rows = self.backend.select(Message).where(Message.id.in_(ids)).order_by(Message.created_at, Message.id)
        return [self._message_record(r) for r in rows]

    # ------------------------------------------------------------------ messages: writes

    def _require_threads(self, thread_ids: Iterable[str]) -> None:
        Thread, backend = self.models.thread, self.backend
        wanted = list(dict.fromkeys(thread_ids))
        if not wanted:
            return
        if len(wanted) > PREPARED_IDS:
            found = {row["id"] for row in backend.select(Thread, Thread.id).where(Thread.id.in_(wanted))}
        else:  # every save_messages checks its threads: prepared, one statement per count
            statement = backend.prepared((Thread, len(wanted)), lambda: backend.select(Thread, Thread.id).where(
                Thread.id.in_([backend.param(f"id_{i}") for i in range(len(wanted))])))
            found = {row["id"] for row in statement.rows(**{f"id_{i}": value for i, value in enumerate(wanted)})}
        for thread_id in wanted:
            if thread_id not in found:
                raise NotFoundError(f"Thread {thread_id} not found", details={"thread_id": thread_id})

    def _stored_messages(self, ids: Iterable[str], *, lock: bool = False) -> dict[str, dict[str, Any]]:
        Message, backend = self.models.message, self.backend
        ids = list(ids)
        if not ids:
            return {}

        def build(count: int | None = None) -> peewee.ModelSelect:
            wanted = ids if count is None else [backend.param(f"id_{i}") for i in range(count)]
            query = backend.select(Message).where(Message.id.in_(wanted))
            if lock:  # in id order, so concurrent writers lock rows in one order
                query = backend.for_update(query.order_by(Message.id))
            return query

        if len(ids) > PREPARED_IDS:
            return {row["id"]: row for row in build()}
        # Every save reads its ids first: prepared, one statement per batch size.
        statement = backend.prepared((Message, len(ids), lock), lambda: build(len(ids)))
        return {row["id"]: row for row in statement.rows(**{f"id_{i}": value for i, value in enumerate(ids)})}

    @contextmanager
    def _message_write(self, message_ids: Iterable[str], thread_ids: Iterable[str] = (), *,
                       exclusive: bool = True) -> Iterator[dict[str, dict[str, Any]]]:
        """The write of a call that changes these messages and bumps threads; yields their stored rows.

        Where the database does not serialize writers (ClickHouse), every bumped thread must be held
        by its in-process record lock, as ``update_thread`` holds it: the messages' current threads
        are read and the write starts again holding them too, until no message moved in between.
        ``exclusive`` also takes the lock of the message read-modify-writes.
        """
        message_ids = list(message_ids)
        wanted = {("thread", t) for t in thread_ids} | ({("messages",)} if exclusive else set())
        keys = set(wanted)
        while True:
            with self.backend.write(*keys):
                stored = self._stored_messages(message_ids, lock=True)
                needed = wanted | {("thread", row["thread_id"]) for row in stored.values()}
                if self.backend.features.concurrent_updates or needed <= keys:
                    yield stored
                    return
            keys = needed

    @operation
    def save_messages(self, *, messages: list[dict]) -> list[dict]:
        """Insert or update messages by id, all or nothing; bumps the threads involved.

        An existing id keeps its stored ``created_at``; a new ``thread_id`` moves it.
        """
        if not isinstance(messages, list):
            raise ValidationError(fields={"messages": ["messages must be a list"]})
        problems = Problems()
        loaded = [_fast_message(m) or load_into(problems, _MESSAGE_SCHEMA, m, f"messages[{i}]")
                  for i, m in enumerate(messages)]
        problems.raise_if_any()
        if not loaded:
            return []
        now = utc_now()
        batch: dict[str, dict[str, Any]] = {}
        # The validated content is a fresh copy, equal to what its stored JSON text decodes to.
        contents: dict[str, dict[str, Any]] = {}
        clean = self.backend.clean
        for data in loaded:
            # Keyed by the stored (cleaned) id, as the stored rows read back are; a repeated id
            # keeps the first one's created_at.  (Built in one literal: a bulk path's rows.)
            message_id = clean(data["id"])
            first = batch.get(message_id)
            content = contents[message_id] = data["content"]
            # The content needs no cleaning: it is the JSON text of a cleaned copy (NUL escaped).
            batch[message_id] = {"id": message_id, "thread_id": clean(data["thread_id"]),
                                 "resource_id": clean(data["resource_id"]), "role": clean(data["role"]),
                                 "type": clean(data.get("type") or DEFAULT_MESSAGE_TYPE),
                                 "content": json_dumps(content),
                                 "created_at": first["created_at"] if first else data.get("created_at") or now}
        if self.backend.features.returning:
            self._write_messages(batch, now)
            return [self._message_record(row, contents[message_id]) for message_id, row in batch.items()]
        thread_ids = {row["thread_id"] for row in batch.values()}
        with self._message_write(batch, thread_ids, exclusive=False) as stored:
            self._require_threads(row["thread_id"] for row in batch.values())
            for message_id, old in stored.items():
                batch[message_id]["created_at"] = old["created_at"]
            self.backend.upsert(self.models.message, list(batch.values()), preserve=("created_at",),
                                stored={(message_id,): row for message_id, row in stored.items()})
            moved_from = {old["thread_id"] for old in stored.values()}
            self._touch_threads(thread_ids | moved_from, now)
        return [self._message_record(row, contents[message_id]) for message_id, row in batch.items()]

    def _write_messages(self, batch: dict[str, dict[str, Any]], now: datetime) -> None:
        """:meth:`save_messages`' write where writes return what they changed (SQLite,
        PostgreSQL): in one transaction, the bump of the threads (whose ``RETURNING`` says which
        of the wanted ones exist), then the upsert of the messages (whose ``RETURNING`` gives
        the ``created_at`` a stored message keeps): no reads of their own, two statements for a
        batch of up to 500 messages and threads.  Sets each row's ``created_at`` as stored."""
        wanted = list(dict.fromkeys(row["thread_id"] for row in batch.values()))
        with self.backend.write():
            found: set[str] = set()
            for thread_ids, message_ids in zip_longest(chunks(wanted), chunks(list(batch)), fillvalue=[]):
                found |= self._bump_threads(thread_ids, message_ids, now)
            missing = [thread_id for thread_id in wanted if thread_id not in found]
            if missing:
                # Asked once more, by key alone, before a thread is called missing: under
                # concurrent bumps of the same thread PostgreSQL's UPDATE with the locking
                # subquery returned no row for an existing thread once (8 writers, loaded
                # machine); a new statement, with its own snapshot, finds it.  Costs nothing
                # when every thread was found.
                found |= self._bump_threads(missing, [], now)
            for thread_id in wanted:
                if thread_id not in found:
                    raise NotFoundError(f"Thread {thread_id} not found", details={"thread_id": thread_id})
            kept = self.backend.upsert_keeping(self.models.message, list(batch.values()), keep="created_at")
            for message_id, created_at in kept.items():
                batch[message_id]["created_at"] = created_at

    def _bump_threads(self, thread_ids: list[str], message_ids: list[str], now: datetime) -> set[str]:
        """Set ``updated_at = now`` on the threads ``thread_ids`` and on those the stored messages
        ``message_ids`` are in (the threads they leave); returns the ids of the threads bumped.

        Where the database has row locks, each writer takes them in one order, as
        :meth:`update_messages` does: the stored messages first, then the threads, each in id
        order (``SELECT … ORDER BY id FOR UPDATE`` subqueries); an ``UPDATE`` alone would lock
        the threads in whatever order its plan meets them, and two writers could deadlock.  The
        ids are one ``IN (… UNION ALL …)`` list, so the threads are found by their key (an ``OR``
        of two ``IN`` conditions makes PostgreSQL scan the whole table)."""
        Thread, Message, backend = self.models.thread, self.models.message, self.backend

        def where() -> peewee.Expression:
            ids: Any = [backend.param(f"thread_{i}") for i in range(len(thread_ids))]
            if message_ids:
                current = backend.for_update(Message.select(Message.thread_id).where(Message.id.in_(
                    [backend.param(f"message_{i}") for i in range(len(message_ids))])).order_by(Message.id))
                stored = [peewee.SQL('SELECT "thread_id" FROM'), current, peewee.SQL('AS "stored"')]
                if ids:  # VALUES names its column column1 on both databases
                    stored = [peewee.SQL('SELECT "column1" FROM (VALUES'),
                              peewee.CommaNodeList([peewee.EnclosedNodeList([param]) for param in ids]),
                              peewee.SQL(') AS "named" UNION ALL'), *stored]
                ids = peewee.NodeList(stored, parens=True)
            locked = Thread.alias("locked")
            return Thread.id.in_(backend.for_update(locked.select(locked.id).where(locked.id.in_(ids))
                                                    .order_by(locked.id)))

        params = {**{f"thread_{i}": value for i, value in enumerate(thread_ids)},
                  **{f"message_{i}": value for i, value in enumerate(message_ids)}}
        rows = backend.update_returning(Thread, where, {"updated_at": now}, [Thread.id],
                                        shape=(Thread, len(thread_ids), len(message_ids)), params=params)
        return {row["id"] for row in rows}

    @operation
    def update_messages(self, *, messages: list[dict]) -> list[dict]:
        """Partially update messages; ``content`` is merged as a patch; unknown ids are ignored."""
        if not isinstance(messages, list):
            raise ValidationError(fields={"messages": ["messages must be a list"]})
        problems = Problems()
        patches = []
        for index, item in enumerate(messages):
            prefix = f"messages[{index}]"
            if isinstance(item, dict) and ("created_at" in item or "createdAt" in item):
                problems.add(f"{prefix}.created_at", "created_at cannot be updated")
                item = {k: v for k, v in item.items() if k not in ("created_at", "createdAt")}
            patches.append(load_into(problems, _MESSAGE_UPDATE_SCHEMA, item, prefix))
        problems.raise_if_any()
        if not patches:
            return []
        now = utc_now()
        Message = self.models.message
        targets = {p["thread_id"] for p in patches if "thread_id" in p}
        with self._message_write((p["id"] for p in patches), targets) as stored:
            self._require_threads(p["thread_id"] for p in patches if "thread_id" in p and p["id"] in stored)
            current = {mid: dict(row) for mid, row in stored.items()}
            touched: set[str] = set()
            for patch in patches:
                row = current.get(patch["id"])
                if row is None or len(patch) == 1:  # unknown id, or only the id: nothing changes
                    continue
                touched.add(row["thread_id"])
                for key in ("thread_id", "resource_id", "role"):
                    if key in patch:
                        row[key] = self.backend.clean(patch[key])
                if "type" in patch:
                    row["type"] = patch["type"] or DEFAULT_MESSAGE_TYPE
                if "content" in patch:
                    content = decode_content(row["content"])
                    change = self.backend.clean(patch["content"])
                    merged = {**content, **change}
                    if isinstance(content.get("metadata"), dict) and isinstance(change.get("metadata"), dict):
                        merged["metadata"] = {**content["metadata"], **change["metadata"]}
                    row["content"] = json_dumps(merged)
                touched.add(row["thread_id"])
            self.backend.replace_many(Message, [(stored[message_id], row) for message_id, row in current.items()
                                                if row != stored[message_id]])
            self._touch_threads(touched, now)
            order = [p["id"] for p in patches if p["id"] in current]
            fresh = self._stored_messages(order)
        return [self._message_record(fresh[mid]) for mid in dict.fromkeys(order) if mid in fresh]

    @operation
    def delete_messages(self, *, message_ids: list[str]) -> None:
        """Delete these messages (unknown ids ignored); bumps the threads that lost one."""
        problems = Problems()
        ids = _check_ids(problems, "message_ids", message_ids)
        problems.raise_if_any()
        if not ids:
            return
        Message = self.models.message
        now = utc_now()
        with self._message_write(ids) as stored:
            if stored:
                self.backend.delete(Message, Message.id.in_(list(stored)))
                self._touch_threads({row["thread_id"] for row in stored.values()}, now)

    # ------------------------------------------------------------------ copying

    @operation
    def copy_thread(self, *, source_thread_id: str, new_thread_id: str | None = None,
                    resource_id: str | None = None, title: str | None = None, metadata: dict | None = None,
                    message_limit: int | None = None, start_date: Any = None, end_date: Any = None,
                    message_ids: list[str] | None = None) -> dict:
        """Copy a thread and (a selection of) its messages under new ids, without reading the
        messages: returns ``{"thread": <new thread>, "message_id_map": {source id: new id}}``.

        The selection: the source's messages created in ``[start_date, end_date]``, among
        ``message_ids`` when given, the latest ``message_limit`` of them (0 or ``None``: all).
        The new thread gets ``new_thread_id`` (else a UUID), ``resource_id`` (else the source's),
        ``title`` (``None`` or ``""``: ``"Clone of <source title>"``), ``metadata`` plus a
        ``clone`` entry; every copy belongs to the new thread and its resource. SQLite and
        PostgreSQL copy the message rows inside the database in the thread's transaction (a
        100,000-message thread costs the caller its ids only); ClickHouse reads and re-inserts
        1,000 rows at a time.

        Example::

            copied = memory.copy_thread(source_thread_id="t-1", new_thread_id="t-1-copy", message_limit=10)
            copied["thread"]["metadata"]["clone"]["sourceThreadId"]  # "t-1"
        """
        return self._copy_thread(source_thread_id, new_thread_id, resource_id, title, metadata, message_limit,
                                 start_date, end_date, message_ids)

    @operation
    def clone_thread(self, *, source_thread_id: str, new_thread_id: str | None = None,
                     resource_id: str | None = None, title: str | None = None, metadata: dict | None = None,
                     message_limit: int | None = None, start_date: Any = None, end_date: Any = None,
                     message_ids: list[str] | None = None) -> dict:
        """:meth:`copy_thread`, then the copies read back in ``(created_at, id)`` order.

        Returns ``{"thread": ..., "cloned_messages": [...], "message_id_map": {source: new}}``.
        """
        copied = self._copy_thread(source_thread_id, new_thread_id, resource_id, title, metadata, message_limit,
                                   start_date, end_date, message_ids)
        Message = self.models.message
        query = self.backend.select(Message).where(Message.thread_id == copied["thread"]["id"])
        copies = [self._message_record(row) for row in query.order_by(Message.created_at, Message.id)]
        return {"thread": copied["thread"], "cloned_messages": copies, "message_id_map": copied["message_id_map"]}

    def _copy_thread(self, source_thread_id: Any, new_thread_id: Any, resource_id: Any, title: Any, metadata: Any,
                     message_limit: Any, start_date: Any, end_date: Any, message_ids: Any) -> dict:
        """The work of :meth:`copy_thread` (and of :meth:`clone_thread`, under its own name)."""
        problems = Problems()
        check_id(problems, "source_thread_id", source_thread_id)
        for name, value in (("new_thread_id", new_thread_id), ("resource_id", resource_id)):
            if value is not None:
                check_id(problems, name, value)
        if title is not None and not isinstance(title, str):
            problems.add("title", "Not a valid string.")
        if metadata is not None:
            metadata = self._load_object(problems, "metadata", metadata)
        if message_limit is not None and (isinstance(message_limit, bool) or not isinstance(message_limit, int)
                                          or message_limit < 0):
            problems.add("message_limit", "message_limit must be an integer >= 0")
        bounds = {}
        for name, value in (("start", start_date), ("end", end_date)):
            if value is not None:
                try:
                    bounds[name] = _TIMESTAMP_FIELD.deserialize(value)
                except marshmallow.ValidationError:
                    problems.add(f"{name}_date", "Not a valid datetime.")
        wanted = _check_ids(problems, "message_ids", message_ids) if message_ids is not None else None
        problems.raise_if_any()

        Thread, Message = self.models.thread, self.models.message
        # The copied rows are bulk-written with these ids: stored as every write stores text.
        new_id, resource_id = self.backend.clean(new_thread_id) or str(uuid4()), self.backend.clean(resource_id)
        now = utc_now()
        with self.backend.write(("thread", new_id)):
            source = self._thread_row(source_thread_id)
            if source is None:
                raise NotFoundError(f"Source thread with id {source_thread_id} not found",
                                    details={"thread_id": source_thread_id})
            if new_thread_id and self._thread_row(new_thread_id) is not None:
                raise ConflictError(f"Thread with id {new_thread_id} already exists",
                                    details={"thread_id": new_thread_id})
            # Only the ids are read: the payloads stay in the database (copy_rows).
            query = self.backend.select(Message, Message.id).where(Message.thread_id == source_thread_id,
                                                                    *self._date_conditions(bounds))
            if wanted is not None:
                query = query.where(Message.id.in_(wanted or [""]))
            if message_limit:  # the latest ones, in (created_at, id) order
                latest = query.order_by(Message.created_at.desc(), Message.id.desc()).limit(message_limit)
                source_ids = [message_id for (message_id,) in latest.tuples().iterator()][::-1]
            else:
                ordered = query.order_by(Message.created_at, Message.id)
                source_ids = [message_id for (message_id,) in ordered.tuples().iterator()]
            id_map = {message_id: str(uuid4()) for message_id in source_ids}
            del source_ids
            source_title = source["title"] or ""
            # The stored id: the argument may hold characters the column could not store (an
            # unpaired surrogate that the lookup mapped as writes map stored text).
            clone_info = {"sourceThreadId": source["id"], "clonedAt": format_iso(now)}
            if id_map:
                clone_info["lastMessageId"] = next(reversed(id_map))
            thread_row = self._clean({
                "id": new_id, "resource_id": resource_id or source["resource_id"],
                # An empty title counts as none (Mastra 1.71 libsql/pg).
                "title": title or (f"Clone of {source_title}" if source_title else ""),
                "metadata": {**(metadata or {}), "clone": clone_info}, "created_at": now, "updated_at": now})
            self.backend.insert(Thread, [thread_row])
            # Every copy belongs to the new thread's resource, not its original's (Mastra 1.71).
            self.backend.copy_rows(Message, id_map, {"thread_id": new_id, "resource_id": thread_row["resource_id"]})
        return {"thread": self._thread_record(thread_row), "message_id_map": id_map}

    # ------------------------------------------------------------------ resources

    @operation
    def get_resource_by_id(self, *, resource_id: str) -> dict | None:
        """The resource with its working memory, or ``None``."""
        require_id("resource_id", resource_id)
        Resource = self.models.resource
        row = self.backend.select(Resource).where(Resource.id == resource_id).first()
        return None if row is None else self._resource_record(row)

    @operation
    def save_resource(self, *, resource: dict) -> dict:
        """Insert or fully replace a resource."""
        problems = Problems()
        data = load_into(problems, _RESOURCE_SCHEMA, resource)
        problems.raise_if_any()
        created_at = data.get("created_at") or utc_now()
        row = self._clean({"id": data["id"], "working_memory": data.get("working_memory"),
                           "metadata": data.get("metadata"), "created_at": created_at,
                           "updated_at": data.get("updated_at") or created_at})
        with self.backend.write(("resource", row["id"])):
            self.backend.upsert(self.models.resource, [row])
        return self._resource_record(row)

    @operation
    def update_resource(self, *, resource_id: str, working_memory: str | None = UNSET,
                        metadata: dict = UNSET) -> dict:
        """Replace the working memory and/or merge metadata; creates the resource when missing."""
        problems = Problems()
        check_id(problems, "resource_id", resource_id)
        if working_memory is not UNSET and working_memory is not None and not isinstance(working_memory, str):
            problems.add("working_memory", "Not a valid string.")
        if metadata is not UNSET:
            metadata = self._load_object(problems, "metadata", metadata)
        problems.raise_if_any()
        Resource = self.models.resource
        now = utc_now()
        values: dict[str, Any] = {"updated_at": now}
        if working_memory is not UNSET:
            values["working_memory"] = self.backend.clean(working_memory)
        with self.backend.write(("resource", resource_id)):
            def locked_row() -> dict | None:
                return self.backend.for_update(self.backend.select(Resource).where(Resource.id == resource_id)).first()

            row = locked_row()
            if row is None:
                # Insert-if-absent first, so concurrent first calls never hit a duplicate key.
                self.backend.insert_if_absent(Resource, [{
                    "id": resource_id, "working_memory": values.get("working_memory"),
                    "metadata": metadata if metadata is not UNSET else {}, "created_at": now, "updated_at": now}])
                row = locked_row()
            if metadata is not UNSET:
                values["metadata"] = {**_object(row["metadata"]), **metadata}
            self.backend.replace(Resource, row, values)
        return self._resource_record({**row, **values})
