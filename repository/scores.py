"""The scores domain: evaluation results, one row per scorer verdict (spec: scores.md).

Bulk path. Batch evaluation jobs write thousands of scores per call (:meth:`save_scores`), and a
marshmallow ``load`` of this 35-field record costs ~90 µs, more than the database insert. So
validation has two routes with one outcome: :func:`fast_prepare_score` is a hand-written check of
the common, valid payload (~17 µs) that encodes every JSON value once (the text that is then
stored) and takes the record's fresh copies from that text; anything it does not vouch for (any
invalid value, but also tuples, nested datetimes, unpaired surrogates) goes through
:class:`~repository.schemas.ScoreSchema`, which also produces the error messages. Both routes give
the same record and row (a property test checks it), so ``save_scores`` and ``save_score`` accept,
store and return exactly the same things.
"""

from __future__ import annotations

import functools

import json
import math
import operator
from typing import Any, Iterator, Mapping

import peewee

from .models.fields import JSONField
from .models.scores import build_scores_models

from .base import ITER_CHUNK, DomainRepository, Keyset, fetch_page, gc_paused, operation, streaming
from .errors import ValidationError
from .page import Page
from .retention import Prunable, RetentionTable
from .schemas.base import load_into
from .schemas.scores import SCORE_ENTITY_TYPES, SCORE_KEYS, SCORE_SOURCES, ScoreSchema
from .validation import Ordering, Problems, check_id, check_order_by, check_page, check_tenancy, one_of
from .values import JSON_NULL, JSONText, is_storable_text, json_dumps, random_id, utc_now

_SCORE_SCHEMA = ScoreSchema()

#: Keys a payload may carry that ``save_score`` accepts and ignores (wire and snake_case forms).
IGNORED_KEYS = frozenset({"created_at", "createdAt", "updated_at", "updatedAt"})

#: Payload keys copied into ``details`` of a validation error, so a batch job can log the score.
DETAIL_KEYS = ("scorer_id", "entity_id", "entity_type", "trace_id", "span_id")

#: Fields ``list_scores`` may order by; every list's default order is the first, newest first.
LIST_ORDER_FIELDS = ("created_at", "updated_at", "score")
_NEWEST_FIRST = Ordering("created_at", "DESC")


# --------------------------------------------------------------------------- fast validation

# The schema's rules, hand-written for the valid case, by group of fields.
_TEXT_FIELDS = ("trace_id", "span_id", "reason", "preprocess_prompt", "extract_prompt", "generate_score_prompt",
                "generate_reason_prompt", "analyze_prompt", "reason_prompt", "resource_id", "thread_id",
                "organization_id", "project_id", "batch_id", "dataset_id", "dataset_item_id")  # str or None
#: The values of the text fields, and a test of "not None", both run in C: a payload sets few of
#: its 16 text fields, and looking at each by name was a fifth of ``save_score``'s Python.
_text_values = operator.itemgetter(*_TEXT_FIELDS)
_is_set = functools.partial(operator.is_not, None)
_ID_FIELDS = ("scorer_id", "run_id", "entity_id")  # required non-empty str
_OBJECT_FIELDS = ("preprocess_step_result", "extract_step_result", "analyze_step_result", "metadata",
                  "additional_context", "request_context")  # dict or None
_REQUIRED = frozenset({*_ID_FIELDS, "scorer", "entity", "score", "source", "output"})
_ENTITY_TYPE_SET = frozenset(SCORE_ENTITY_TYPES)
_SOURCE_SET = frozenset(SCORE_SOURCES)

# Payload keys: snake_case field names, and their wire-form (camelCase) spellings.
_SNAKE_KEYS = frozenset(_SCORE_SCHEMA.fields)
_KEY_NAMES = {**{name: name for name in _SCORE_SCHEMA.fields},
              **{field.data_key: name for name, field in _SCORE_SCHEMA.fields.items() if field.data_key}}
_EMPTY_RECORD = dict.fromkeys(SCORE_KEYS)
_decode_json = json.JSONDecoder().decode


def fast_prepare_score(payload: Any, *, strip_nul: bool = False,
                       json_null: frozenset[str] = frozenset()) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The common, valid payload checked and converted the quick way: ``(record, row)`` or ``None``.

    ``record`` is the score as ``save_score`` returns it, with all 35 keys (``id`` ``None`` when
    not given; ``created_at``/``updated_at`` ``None``): exactly what the schema route gives
    (``ScoreSchema().load`` plus :meth:`Backend.clean`). ``row`` is the same with every JSON value
    as its stored text (:class:`JSONText`) and ``None`` of the fields in ``json_null`` as JSON
    ``null``. ``None`` means "not vouched for": the payload is invalid, or holds a value the
    schema route must normalize or clean (a tuple, a nested datetime, an unpaired surrogate, or
    U+0000 when ``strip_nul``).
    """
    if type(payload) is not dict:
        return None
    keys = payload.keys()
    if not keys <= _SNAKE_KEYS:  # wire form (or unknown keys)
        if not keys <= _KEY_NAMES.keys():
            return None
        payload = {_KEY_NAMES[key]: value for key, value in payload.items()}
        if len(payload) != len(keys):  # both spellings of one field
            return None
    if not _REQUIRED <= payload.keys():
        return None
    record = _EMPTY_RECORD.copy()
    record.update(payload)
    flag = record.pop("structured_output", None)  # accepted, never stored
    if flag is not None and type(flag) is not bool:
        return None
    record["created_at"] = record["updated_at"] = None  # accepted and ignored

    for value in filter(_is_set, _text_values(record)):
        if type(value) is not str or (strip_nul or not value.isascii()) and not is_storable_text(value, strip_nul):
            return None
    value = record["id"]
    if value is not None and (type(value) is not str or not value or
                              (strip_nul or not value.isascii()) and not is_storable_text(value, strip_nul)):
        return None
    for name in _ID_FIELDS:
        value = record[name]
        if type(value) is not str or not value or (strip_nul or not value.isascii()) and not is_storable_text(value, strip_nul):
            return None
    score = record["score"]
    if type(score) is not float:
        if type(score) is not int:
            return None
        try:
            score = record["score"] = float(score)
        except OverflowError:  # an int too large for a float
            return None
    if not math.isfinite(score):
        return None
    entity_type, source = record["entity_type"], record["source"]
    if entity_type is not None and (type(entity_type) is not str or entity_type not in _ENTITY_TYPE_SET):
        return None
    if type(source) is not str or source not in _SOURCE_SET:
        return None

    if type(record["scorer"]) is not dict or type(record["entity"]) is not dict:
        return None
    json_names = ["scorer", "entity"]
    for name in _OBJECT_FIELDS:
        value = record[name]
        if value is not None:
            if type(value) is not dict:
                return None
            json_names.append(name)
    for name in ("input", "output"):
        if record[name] is not None:
            json_names.append(name)
    try:
        texts = [json_dumps(record[name]) for name in json_names]
    except (TypeError, ValueError, RecursionError):  # not JSON, or needs normalizing (datetimes)
        return None
    joined = "[" + ",".join(texts) + "]"
    if not is_storable_text(joined, False) or (strip_nul and "\\u0000" in joined):
        return None
    row = record.copy()
    # One decode gives fresh copies of every value; a copy that differs from its original
    # means json.dumps converted something (a tuple, a non-string key) the schema treats.
    for name, text, copy in zip(json_names, texts, _decode_json(joined)):
        if copy != record[name]:
            return None
        record[name] = copy
        row[name] = JSONText(text)
    for name in json_null:
        if row[name] is None:
            row[name] = JSON_NULL
    return record, row


# --------------------------------------------------------------------------- repository

class ScoresRepository(Prunable, DomainRepository):
    """Evaluation scores: save one or many, read by id, list all or by scorer, run, entity or span.

    Example::

        scores = storage.get_store("scores")
        saved = scores.save_score(score={
            "scorer_id": "answer-relevancy", "run_id": "run-1", "entity_id": "support-agent",
            "entity_type": "AGENT", "source": "LIVE", "score": 0.8,
            "scorer": {"id": "answer-relevancy", "name": "Answer relevancy"},
            "entity": {"id": "support-agent", "name": "Support agent"},
            "input": [{"role": "user", "content": "2+2?"}], "output": {"text": "4"},
        })
        page = scores.list_scores_by_run_id(run_id="run-1")
    """

    domain = "scores"
    #: Retention (fidelity-1.71 §5) on SQLite/PostgreSQL; ClickHouse keeps ``ttl_days``.
    retention_tables = (RetentionTable(key="scorers", model="score", anchor="created_at"),)

    def build_models(self, database: peewee.DatabaseProxy) -> Any:
        return build_scores_models(database)

    @functools.cached_property
    def _json_null_names(self) -> frozenset[str]:
        """JSON columns declared NOT NULL, which store JSON null for ``None`` (PostgreSQL,
        ClickHouse; Mastra's SQLite table leaves every column but id nullable, and validation
        enforces the rest)."""
        return frozenset(field.name for field in self.models.score._meta.sorted_fields
                         if isinstance(field, JSONField) and not field.null)

    # ------------------------------------------------------------------ conversion

    @staticmethod
    def _record(row: dict[str, Any]) -> dict[str, Any]:
        """A stored row as a score dict with all 35 keys."""
        record = {key: row.get(key) for key in SCORE_KEYS}
        if isinstance(record["score"], int):
            record["score"] = float(record["score"])
        return record

    def _prepare(self, problems: Problems, payload: Any, prefix: str = "") -> tuple[Any, Any]:
        """Validate one payload: ``(record, row)`` (``id`` ``None`` when not given, timestamps
        unset), or ``(None, None)`` with its problems recorded under ``prefix``."""
        fast = fast_prepare_score(payload, strip_nul=self.backend.features.strips_nul, json_null=self._json_null_names)
        return fast if fast is not None else self._prepare_with_schema(problems, payload, prefix)

    def _prepare_with_schema(self, problems: Problems, payload: Any, prefix: str = "") -> tuple[Any, Any]:
        """The schema route of :meth:`_prepare`: ``(record, row)``, or ``(None, None)`` if invalid."""
        if not isinstance(payload, Mapping):
            problems.add(prefix or "score", "Invalid input type.")  # marshmallow's wording
            return None, None
        data = {key: value for key, value in payload.items() if key not in IGNORED_KEYS}
        values = load_into(problems, _SCORE_SCHEMA, data, prefix)
        if values is None:
            return None, None
        record = {name: self.backend.clean(values.get(name)) for name in SCORE_KEYS}
        record["created_at"] = record["updated_at"] = None
        row = dict(record)
        for name in self._json_null_names:
            if row[name] is None:
                row[name] = JSON_NULL
        return record, row

    @staticmethod
    def _raise(problems: Problems, payload: Any, **details: Any) -> None:
        """Raise the collected problems with the payload's identifying fields in ``details``."""
        try:
            problems.raise_if_any()
        except ValidationError as error:
            if isinstance(payload, Mapping):
                for name in DETAIL_KEYS:
                    key = name if name in payload else _SCORE_SCHEMA.fields[name].data_key
                    if isinstance(payload.get(key), str):
                        error.details[name] = payload[key]
            error.details.update(details)
            raise

    def _store(self, records: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Write prepared scores in one transaction and return their records as stored."""
        Score = self.models.score
        now = utc_now()
        generated, given = [], []
        for record, row in zip(records, rows):
            row["created_at"] = row["updated_at"] = record["created_at"] = record["updated_at"] = now
            if record["id"] is None:
                record["id"] = row["id"] = random_id()
                generated.append(row)
            else:
                given.append(row)
        given_ids = list(dict.fromkeys(row["id"] for row in given))
        # One score is one statement, atomic without a transaction around it (autocommit).
        scope = self.backend.write_statement if len(rows) == 1 else self.backend.write
        with scope(*(("score", score_id) for score_id in given_ids)):
            # Generated ids are new: a plain insert, no read of stored rows.
            self.backend.insert(Score, generated)
            # A given id replaces any stored row whole, created_at included (fidelity-1.71.md
            # §3.2, S1): one INSERT … ON CONFLICT DO UPDATE of every column, so no reader sees the
            # row missing; ClickHouse writes the stored row's tombstone and the new row in one block.
            self.backend.upsert(Score, given)
        return records

    # ------------------------------------------------------------------ writes

    @operation
    def save_score(self, *, score: dict) -> dict:
        """Validate and store one score; returns it as :meth:`get_score_by_id` now would.

        Without ``id`` (or with ``id=None``) a UUID4 is generated. With an id the save is an
        upsert: a stored score is replaced as a whole (absent optional fields become ``None``)
        and, as Mastra 1.71 leaves it, ``created_at`` and ``updated_at`` are both now.
        """
        problems = Problems()
        record, row = self._prepare(problems, score)
        if record is None:
            self._raise(problems, score)
        return self._store([record], [row])[0]

    @operation
    def save_scores(self, *, scores: list[dict]) -> list[dict]:
        """Store many scores at once; an addition to Mastra's API for batch evaluation jobs.

        Same validation and result as calling :meth:`save_score` for each item in order (a
        returned record per item, an id repeated in the batch ends as its last item), but all or
        nothing: any invalid item fails the whole call before anything is written, with every
        problem reported under ``scores[<index>].<field>`` and ``details["index"]`` (plus the
        identifying fields) of the first bad item. Written with one multi-row upsert in one
        transaction (SQLite, PostgreSQL) or one native block insert (ClickHouse).
        """
        if not isinstance(scores, list):
            raise ValidationError(fields={"scores": ["scores must be a list"]})
        problems = Problems()
        records: list[dict[str, Any]] = []
        rows: list[dict[str, Any]] = []
        first_bad: int | None = None
        with gc_paused():
            for index, payload in enumerate(scores):
                record, row = self._prepare(problems, payload, f"scores[{index}]")
                if record is None:
                    first_bad = index if first_bad is None else first_bad
                else:
                    records.append(record)
                    rows.append(row)
            if first_bad is not None:
                self._raise(problems, scores[first_bad], index=first_bad)
            self._store(records, rows)
            del rows  # written: freed now, so the resumed collector never scans them
        return records

    # ------------------------------------------------------------------ reads

    @operation
    def get_score_by_id(self, *, id: str) -> dict | None:
        """The score with that id, or ``None``."""
        problems = Problems()
        check_id(problems, "id", id)
        problems.raise_if_any()
        Score = self.models.score
        row = self.backend.select(Score).where(Score.id == id).first()
        return None if row is None else self._record(row)

    def _list(self, problems: Problems, conditions: list[Any], filters: Any, page: Any, per_page: Any,
              after: Any, ordering: Ordering = _NEWEST_FIRST) -> Page:
        """One page of the scores matching ``conditions`` and the tenancy ``filters`` in ``ordering``
        (ties by id), at ``page`` or behind the cursor ``after``."""
        request = check_page(problems, page, per_page, default_per_page=100)
        scope = check_tenancy(problems, filters)
        Score = self.models.score
        keyset = Keyset(getattr(Score, ordering.field), ordering.descending, Score.id)
        following = keyset.after(problems, after, request)
        problems.raise_if_any()
        if "organization_id" in scope:
            conditions.append(Score.organization_id == scope["organization_id"])
        if "project_id" in scope:
            conditions.append(Score.project_id == scope["project_id"])
        query = self.backend.select(Score)
        if conditions:  # list_scores may have none
            query = query.where(*conditions)
        rows, total, has_more = fetch_page(self.backend, query, keyset.order, request, after=following)
        return Page([self._record(row) for row in rows], total, request.page, request.per_page, has_more,
                    keyset.cursor(rows))

    @operation
    def list_scores(self, *, filters: dict | None = None, page: int = 0, per_page: int | bool = 100,
                    order_by: dict | None = None, after: str | None = None) -> Page:
        """Every score, narrowed by the tenancy ``filters``; newest first unless ``order_by`` names a
        field of ``created_at``, ``updated_at``, ``score`` and a direction (ties by id).
        ``after=`` the ``cursor`` of a page gives the page that follows it, read by key however
        deep (every list of scores takes it).

        Example: the 50 best scores as a DataFrame::

            scores.list_scores(per_page=50, order_by={"field": "score", "direction": "DESC"}).to_dataframe()
        """
        problems = Problems()
        ordering = check_order_by(problems, order_by, allowed=LIST_ORDER_FIELDS, default_field="created_at",
                                  default_direction="DESC")
        return self._list(problems, [], filters, page, per_page, after, ordering)

    @operation
    def list_scores_by_scorer_id(self, *, scorer_id: str, entity_id: str | None = None,
                                 entity_type: str | None = None, source: str | None = None,
                                 filters: dict | None = None, page: int = 0, per_page: int | bool = 100,
                                 after: str | None = None) -> Page:
        """Scores of one scorer, optionally narrowed by entity and source; newest first."""
        problems = Problems()
        check_id(problems, "scorer_id", scorer_id)
        for name, value in (("entity_id", entity_id), ("entity_type", entity_type)):
            if value is not None:
                check_id(problems, name, value)
        _check_source(problems, source)
        Score = self.models.score
        conditions = [Score.scorer_id == scorer_id]
        if entity_id is not None:
            conditions.append(Score.entity_id == entity_id)
        if entity_type is not None:
            conditions.append(Score.entity_type == entity_type)
        if source is not None:
            conditions.append(Score.source == source)
        return self._list(problems, conditions, filters, page, per_page, after)

    @operation
    def list_scores_by_run_id(self, *, run_id: str, filters: dict | None = None, page: int = 0,
                              per_page: int | bool = 100, after: str | None = None) -> Page:
        """Scores of one agent or workflow run; newest first."""
        problems = Problems()
        check_id(problems, "run_id", run_id)
        Score = self.models.score
        return self._list(problems, [Score.run_id == run_id], filters, page, per_page, after)

    @operation
    def list_scores_by_entity_id(self, *, entity_id: str, entity_type: str, filters: dict | None = None,
                                 page: int = 0, per_page: int | bool = 100, after: str | None = None) -> Page:
        """Scores of one entity (``entity_id`` and ``entity_type`` both match); newest first."""
        problems = Problems()
        check_id(problems, "entity_id", entity_id)
        check_id(problems, "entity_type", entity_type)
        Score = self.models.score
        return self._list(problems, [Score.entity_id == entity_id, Score.entity_type == entity_type],
                          filters, page, per_page, after)

    @operation
    def list_scores_by_span(self, *, trace_id: str, span_id: str, filters: dict | None = None, page: int = 0,
                            per_page: int | bool = 100, after: str | None = None) -> Page:
        """Scores attached to one span (``trace_id`` and ``span_id`` both match); newest first."""
        problems = Problems()
        check_id(problems, "trace_id", trace_id)
        check_id(problems, "span_id", span_id)
        Score = self.models.score
        return self._list(problems, [Score.trace_id == trace_id, Score.span_id == span_id], filters, page, per_page,
                          after)

    @streaming
    def iter_scores(self, *, scorer_id: str | None = None, run_id: str | None = None, entity_id: str | None = None,
                    entity_type: str | None = None, trace_id: str | None = None, span_id: str | None = None,
                    source: str | None = None, filters: dict | None = None,
                    chunk_size: int = ITER_CHUNK) -> Iterator[dict]:
        """Every score matching the given ids (a scorer, a run, an entity, a span, or all), the
        ``source`` and the tenancy ``filters`` (the list methods' filters), as the list methods
        give them, in key order, read ``chunk_size`` at a time (constant memory)."""
        problems = Problems()
        scope = check_tenancy(problems, filters)
        _check_source(problems, source)
        return self.iter_matching(problems, self.models.score, self._record, chunk_size, scorer_id=scorer_id,
                                  run_id=run_id, entity_id=entity_id, entity_type=entity_type, trace_id=trace_id,
                                  span_id=span_id, source=source if isinstance(source, str) else None, **scope)


def _check_source(problems: Problems, source: Any) -> None:
    """The ``source`` filter of the score lists: ``None`` (any) or one of the score sources."""
    if source is not None and (not isinstance(source, str) or source not in _SOURCE_SET):
        problems.add("source", one_of(SCORE_SOURCES))


__all__ = ["ScoresRepository", "fast_prepare_score"]
