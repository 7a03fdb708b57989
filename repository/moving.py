"""Moving data between backends (issue 21): :func:`copy_domains`, :func:`export_domain` and
:func:`import_file`, one code path for all three.

A domain moves part by part.  A *part* is one table when both sides lay the domain out the same
way (every domain but observability across its layouts): its rows are read with
:meth:`Backend.iterate` and written with the target's bulk inserts, field by field, so ids,
timestamps, versions and links arrive exactly as stored.  Observability between its legacy
table and ClickHouse's current layout moves as one part, ``spans``: records read with
``iter_spans`` and written with ``batch_create_spans``.  Between two sides of the current
("vNext") layout its four signal tables (logs, metrics, score events, feedback) move too, each
as records read with its ``iter_*`` method and written as its batch writes write them (the
discovery tables are derived from these rows: the target refreshes them at the end).

A JSON Lines file is one more side: exporting copies into it, importing copies out of it (the
same chunked writes, :func:`copy_part`), after a first pass that checks every line and writes
nothing if one is bad.  Observability is exported as span records (``spans``), which either
layout imports; a vNext source adds its signal tables, which a vNext target imports.

Re-running a copy finishes an interrupted one: a target row equal to the source's is skipped;
a different one under the same key is a conflict, handled by ``on_conflict``: ``fail`` (the
default: a :class:`ConflictError` naming the keys), ``skip`` (keep the target's) or
``overwrite``.
"""

from __future__ import annotations

import functools
import itertools
import logging
import operator
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from typing import IO, Any, Callable, Iterable, Iterator, Sequence

import marshmallow
import peewee

from .models.datasets import JSONTextField
from .models.fields import JSONField, TimestampField

from .backends.base import ITER_CHUNK, primary_key_names
from .base import DomainRepository, operation_scope
from .composite import store_for_url
from .errors import ConflictError, NotSupportedError, StorageError, ValidationError
from .observability.signals import DEFAULT_REVIEW_STATUS, SIGNAL_KINDS, SignalKind, SignalsMixin, signal_row
from .schemas.base import Timestamp, flatten_errors
from .stores import DOMAINS, unknown_domain
from .validation import Problems
from .values import chunks, format_iso, json_dumps, json_loads

logger = logging.getLogger("composite_store")

#: What a copy does with a target row that differs from the source's under the same key.
ON_CONFLICT = ("fail", "skip", "overwrite")
#: Rows per write (and per lookup of the target's rows when it may hold some already).
WRITE_CHUNK = 1000
#: The ``format`` of an export file's header line.
FILE_FORMAT = "composite-store-export"
#: The part observability moves as across its table layouts.
SPANS = "spans"

#: ``progress(part, done, total)``: called when a part starts (``done == 0``), after each
#: chunk written, and when it ends (``part.finished``).
Progress = Callable[["PartReport", int, "int | None"], None]


@dataclass
class PartReport:
    """What happened to one part (a table) of a domain: rows read, written, skipped because the
    target held them already (equal, or with ``on_conflict="skip"``), overwritten; then the row
    counts of both sides."""

    domain: str
    table: str
    read: int = 0
    written: int = 0
    skipped: int = 0
    overwritten: int = 0
    source_rows: int | None = None
    target_rows: int | None = None
    finished: bool = False

    @property
    def counts_match(self) -> bool:
        """Whether the target holds as many rows of this table as the source."""
        return self.source_rows == self.target_rows

    def summary(self) -> str:
        """One line: ``memory.mastra_messages: 1,200 read, 1,200 written, … source 1,200 = target 1,200``."""
        compared = "=" if self.counts_match else "≠"
        return (f"{self.domain}.{self.table}: {self.read:,} read, {self.written:,} written, {self.skipped:,} skipped, "
                f"{self.overwritten:,} overwritten; rows: source {_count(self.source_rows)} {compared} "
                f"target {_count(self.target_rows)}")


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


# --------------------------------------------------------------------------- store sides

def portable_fields(repository: DomainRepository) -> dict[str, list[str]]:
    """Table name → the field names every backend declares for it (what moves): the domain's
    models built afresh, before a backend adds its own columns (PostgreSQL's ``…Z`` timestamps,
    ClickHouse's versions)."""
    models = repository.build_models(peewee.DatabaseProxy())
    return {model._meta.table_name: [field.name for field in model._meta.sorted_fields]
            for model in vars(models).values()}


class StoreSide:
    """One domain of a store, as a source or a target of a copy."""

    def __init__(self, repository: DomainRepository, *, dataset_id: str | None = None) -> None:
        self.repository = repository
        self.backend = repository.backend
        self.layout = getattr(repository, "layout", "default")
        self.fields = portable_fields(repository)
        self.models = {model._meta.table_name: model for model in repository.tables}
        self.dataset_id = dataset_id
        #: Signal table → its kind, on the current observability layout (which holds signals).
        self.signals: dict[str, SignalKind] = ({kind.table: kind for kind in SIGNAL_KINDS.values()}
                                               if isinstance(repository, SignalsMixin) else {})

    @property
    def domain(self) -> str:
        """The domain key."""
        return self.repository.domain

    def scope(self, name: str) -> Any:
        """The operation scope (connection, errors named ``STORAGE_<BACKEND>_COPY_…``)."""
        return operation_scope(self.repository, name, {})

    def parts(self, other_layout: str) -> list[str]:
        """The parts this domain moves as, towards or from a side of ``other_layout`` (``file``
        for an export): table by table between two sides of one layout, else observability as
        span records, and signal records where both sides hold signals."""
        if self.domain != "observability" or self.layout == other_layout != "vnext":
            return list(self.fields)
        return [SPANS, *(self.signals if other_layout in ("vnext", "file") else ())]

    def is_record_part(self, part: str) -> bool:
        """Whether ``part`` moves as records (spans, signals) rather than table rows."""
        return part == SPANS or part in self.signals

    def count(self, part: str) -> int | None:
        """Rows of ``part`` (``None``: its table does not exist)."""
        with self.scope("COUNT_ROWS"):
            if part == SPANS:
                table = next(iter(self.fields))  # the span table comes first in both layouts
                return self.repository.count_rows()[table]
            if part in self.signals:
                return self.repository.count_signal_rows()[part]
            model = self.models[part]
            if not self.backend.database.table_exists(part, model._meta.schema):
                return None
            return self._select(model).count()

    def _select(self, model: type[peewee.Model]) -> peewee.ModelSelect:
        # JSON text columns are read as text, so JSON null stays distinct from SQL NULL.
        columns = [self.backend.json_as_text(field).alias(field.name) if isinstance(field, JSONTextField) else field
                   for field in model._meta.sorted_fields]
        query = self.backend.select(model, *columns)
        if self.dataset_id is not None:
            key = model.dataset_id if "dataset_id" in model._meta.fields else model.id
            query = query.where(key == self.dataset_id)
        return query

    def rows(self, part: str, *, chunk_size: int = ITER_CHUNK) -> Iterator[dict[str, Any]]:
        """The rows of ``part``: dicts of its portable fields (span records for ``spans``)."""
        if part == SPANS:
            yield from self.repository.iter_spans(chunk_size=chunk_size)
            return
        if part in self.signals:
            yield from getattr(self.repository, f"iter_{self.signals[part].name}")(chunk_size=chunk_size)
            return
        names = self.fields[part]
        with self.scope("COPY_DOMAINS"):
            for row in self.backend.iterate(self._select(self.models[part]), chunk_size=chunk_size):
                yield {name: row[name] for name in names}

    def prepare(self) -> None:
        """Create the domain's tables (a target)."""
        self.repository.init()

    def finish(self) -> None:
        """After a copy into this side: bring what is derived from the copied rows up to date
        (observability's discovery values on the current layout)."""
        refresh = getattr(self.repository, "refresh_discovery", None)
        if refresh is not None:
            refresh()

    def write(self, part: str, rows: list[dict[str, Any]], *, on_conflict: str, report: PartReport,
              may_hold: bool) -> None:
        """Write one chunk; ``may_hold``: the target may hold some of these keys already (else
        the lookup is skipped)."""
        with self.scope("COPY_DOMAINS"):
            if part == SPANS:
                self._write_spans(rows, on_conflict, report, may_hold)
                return
            if part in self.signals:
                self._write_signals(self.signals[part], rows, on_conflict, report, may_hold)
                return
            model = self.models[part]
            keys = primary_key_names(model)
            stored = self._stored(model, keys, rows) if may_hold else {}
            new, changed = split_chunk(rows, stored, keys, comparable=lambda row: self._comparable(model, row),
                                       on_conflict=on_conflict, report=report, part=f"{self.domain}.{part}")
            full_row = self.repository.full_row
            with self.backend.write():
                if new:
                    self.backend.insert(model, [full_row(model, row) for row in new])
                if changed:
                    self.backend.upsert(model, [full_row(model, row) for row in changed])

    def _comparable(self, model: type[peewee.Model], row: dict[str, Any]) -> dict[str, Any]:
        """A row as compared with another database's: JSON text decoded (each database spells
        it its own way); spans without the times PostgreSQL's span table stamps itself on insert
        (Mastra's trigger), which no copy can keep."""
        if self.domain == "observability":
            row = _span_content(row)
        return {name: json_loads(value) if isinstance(value, str) and isinstance(model._meta.fields.get(name),
                                                                                 JSONTextField)
                else value for name, value in row.items()}

    def _stored(self, model: type[peewee.Model], keys: list[str], rows: list[dict[str, Any]]) -> dict[tuple, dict]:
        """The target's rows under the keys of ``rows``: looked up by the key's first field, the
        other key fields matched here."""
        first = keys[0]
        wanted = {tuple(row[name] for name in keys) for row in rows}
        names = self.fields[model._meta.table_name]
        stored = {}
        for values in chunks(sorted({row[first] for row in rows})):
            for row in self._select(model).where(getattr(model, first).in_(values)):
                key = tuple(row[name] for name in keys)
                if key in wanted:
                    stored[key] = {name: row[name] for name in names}
        return stored

    def _write_spans(self, records: list[dict[str, Any]], on_conflict: str, report: PartReport,
                     may_hold: bool) -> None:
        keys = ["trace_id", "span_id"]
        stored = {}
        if may_hold:
            for trace_id in sorted({record["trace_id"] for record in records}):
                for span in self.repository.iter_spans(trace_id=trace_id):
                    stored[(span["trace_id"], span["span_id"])] = span
        new, changed = split_chunk(records, stored, keys, comparable=_span_content, on_conflict=on_conflict,
                                   report=report, part=f"{self.domain}.{SPANS}")
        if new or changed:
            # Both layouts take a span again: the legacy table replaces it, the current layout
            # keeps the latest row per span.
            self.repository.batch_create_spans(records=new + changed)


    def _write_signals(self, kind: SignalKind, records: list[dict[str, Any]], on_conflict: str,
                       report: PartReport, may_hold: bool) -> None:
        """Signal records written as the signal's batch writes write them, keyed as this side's
        reads keep one row (id and timestamp; the id where one row per id is read)."""
        repository = self.repository
        sql, model = repository._signal_sql, repository._signal_model(kind)
        key_fields = sql.iteration_key(model, kind)
        keys = [field.name for field in key_fields]
        stored = {}
        if may_hold:
            id_field = getattr(model, kind.id_key)
            for values in chunks(sorted({record[kind.id_key] for record in records})):
                rows, _ = sql.page(model, kind, [id_field.in_(values)], f'"{id_field.column_name}"', None, 0,
                                   counted=False)
                for row in rows:
                    held = repository._signal_record(kind, row)
                    stored[tuple(held[name] for name in keys)] = held
        comparable = functools.partial(_signal_content, review_status=sql.holds_review_status)
        new, changed = split_chunk(records, stored, keys, comparable=comparable, on_conflict=on_conflict,
                                   report=report, part=f"{self.domain}.{kind.table}")
        if changed:
            # Logs and metrics keep the first row of a key: the rows to overwrite go first.
            sql.delete(model, functools.reduce(operator.or_, (
                functools.reduce(operator.and_, (field == record[field.name] for field in key_fields))
                for record in changed)), "COPY_DOMAINS")
        if new or changed:
            repository._write_signal_batch(kind, new + changed, kind.name)


def split_chunk(rows: list[dict[str, Any]], stored: dict[tuple, dict[str, Any]], keys: Sequence[str], *,
                comparable: Callable[[dict[str, Any]], Any], on_conflict: str, report: PartReport,
                part: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(new rows, rows to overwrite)`` of a chunk against the target's ``stored`` rows; equal
    rows are skipped (a re-run); different ones follow ``on_conflict`` (``fail`` raises before
    anything of the chunk is written)."""
    new, changed, conflicts = [], [], []
    for row in rows:
        key = tuple(row[name] for name in keys)
        held = stored.get(key)
        if held is None:
            new.append(row)
        elif comparable(held) == comparable(row):
            report.skipped += 1
        else:
            conflicts.append(key)
            changed.append(row)
    if conflicts and on_conflict == "fail":
        shown = ", ".join("/".join(map(str, key)) for key in conflicts[:5])
        raise ConflictError(f"{part}: the target holds different rows under {len(conflicts)} of the same keys "
                            f"({shown}{', …' if len(conflicts) > 5 else ''}); copy again with "
                            "on_conflict='skip' to keep them or 'overwrite' to replace them",
                            details={"code": "COPY_CONFLICT", "table": part, "keys": [list(k) for k in conflicts]})
    if on_conflict == "skip":
        report.skipped += len(changed)
        changed = []
    report.written += len(new)
    report.overwritten += len(changed)
    return new, changed


def _signal_content(record: dict[str, Any], *, review_status: bool) -> dict[str, Any]:
    """A signal record as a side holds it: feedback's review status only where it is kept."""
    if review_status or "review_status" not in record:
        return record
    return {**record, "review_status": DEFAULT_REVIEW_STATUS}


def _span_content(record: dict[str, Any]) -> dict[str, Any]:
    """A span record as both layouts hold it: without the bookkeeping times each layout sets
    itself, no tags as an empty list (the current layout's array column)."""
    content = {key: value for key, value in record.items() if key not in ("created_at", "updated_at")}
    content["tags"] = content.get("tags") or []
    return content


# --------------------------------------------------------------------------- files

def header(side: StoreSide, parts: list[str]) -> dict[str, Any]:
    """The first line of an export: domain, table layout, library version, and its parts with
    their columns."""
    return {"format": FILE_FORMAT, "domain": side.domain, "layout": side.layout,
            "library_version": metadata.version("composite-store"),
            "tables": {part: ([] if side.is_record_part(part) else [column_of(side.models[part], name)
                                                                    for name in side.fields[part]])
                       for part in parts}}


def column_of(model: type[peewee.Model], name: str) -> str:
    """The column name of field ``name``."""
    return model._meta.fields[name].column_name


def to_wire(model: type[peewee.Model] | None, row: dict[str, Any]) -> dict[str, Any]:
    """A row (or a span or signal record, ``model`` ``None``) as a JSON object: column names as
    keys, timestamps ISO-8601, JSON text decoded; a JSON text column left NULL is left out."""
    if model is None:
        return {key: format_iso(value) if isinstance(value, datetime) else value for key, value in row.items()}
    out = {}
    for name, value in row.items():
        field = model._meta.fields[name]
        if isinstance(field, JSONTextField):
            if value is None:
                continue
            value = json_loads(value)
        elif isinstance(field, TimestampField) and value is not None:
            value = format_iso(value)
        out[field.column_name] = value
    return out


_TIMESTAMP = Timestamp()


def from_wire(model: type[peewee.Model] | None, names: Sequence[str], values: Any,
              problems: list[str]) -> dict[str, Any] | None:
    """The row of one file line (of the fields ``names`` of ``model``), checked as the columns
    require (known columns, required ones present, text, numbers, timestamps, JSON); problems
    are appended to ``problems``."""
    if not isinstance(values, dict):
        problems.append("row must be a JSON object")
        return None
    if model is None:
        return values  # a record: its batch write checks it (first pass: _check_spans, _check_signal)
    fields = [model._meta.fields[name] for name in names]
    by_column = {field.column_name: field for field in fields}
    row: dict[str, Any] = {}
    for column, value in values.items():
        field = by_column.get(column)
        if field is None:
            problems.append(f"{column}: Unknown field.")
            continue
        row[field.name] = _wire_value(field, column, value, problems)
    for field in fields:
        if field.name not in row:
            if not field.null and field.default is None:
                problems.append(f"{field.column_name}: Missing data for required field.")
            row[field.name] = None
    return row


def _wire_value(field: peewee.Field, column: str, value: Any, problems: list[str]) -> Any:
    if isinstance(field, JSONTextField):
        return json_dumps(value)  # null here is JSON null; SQL NULL is a column left out
    if value is None:
        if not field.null and not isinstance(field, JSONField):
            problems.append(f"{column}: Field may not be null.")
        return None
    if isinstance(field, JSONField):
        return value
    if isinstance(field, TimestampField):
        try:
            return _TIMESTAMP.deserialize(value)
        except Exception:  # noqa: BLE001 - marshmallow's error: the message below says it
            problems.append(f"{column}: Not a valid datetime.")
            return None
    expected = {peewee.IntegerField: int, peewee.BigIntegerField: int, peewee.BooleanField: bool,
                peewee.FloatField: (int, float), peewee.DoubleField: (int, float)}
    for kind, types in expected.items():
        if isinstance(field, kind):
            if not isinstance(value, types) or (kind is not peewee.BooleanField and isinstance(value, bool)):
                problems.append(f"{column}: Not a valid {kind.__name__.removesuffix('Field').lower()}.")
            return value
    if not isinstance(value, str):
        problems.append(f"{column}: Not a valid string.")
    return value


# --------------------------------------------------------------------------- the copy loop

def copy_part(source_rows: Iterable[dict[str, Any]], target: StoreSide, part: str, *, on_conflict: str,
              report: PartReport, total: int | None, progress: Progress | None) -> None:
    """Write ``source_rows`` into ``part`` of ``target`` in chunks, reporting progress."""
    may_hold = bool(target.count(part))  # an empty table cannot conflict: no lookups
    if progress:
        progress(report, 0, total)
    iterator = iter(source_rows)
    while chunk := list(itertools.islice(iterator, WRITE_CHUNK)):
        report.read += len(chunk)
        target.write(part, chunk, on_conflict=on_conflict, report=report, may_hold=may_hold)
        if progress:
            progress(report, report.read, total)


def _check_on_conflict(on_conflict: Any) -> None:
    if on_conflict not in ON_CONFLICT:
        raise ValidationError(fields={"on_conflict": [f"Must be one of: {', '.join(ON_CONFLICT)}."]},
                              id="STORAGE_COMPOSITE_COPY_DOMAINS_INVALID_INPUT")


def _store(value: Any, *, role: str) -> tuple[Any, bool]:
    """A composite or whole store, or a URL opened as one (``True``: opened here, to close)."""
    if isinstance(value, str):
        return store_for_url(value, id=role), True
    if not callable(getattr(value, "get_store", None)):
        raise ValidationError(fields={role: [f"{role} must be a composite store, a whole store or a database URL"]},
                              id="STORAGE_COMPOSITE_COPY_DOMAINS_INVALID_INPUT")
    return value, False


def _domains(requested: Iterable[str] | None, source: Any, target: Any) -> list[str]:
    """The domains to copy: those named (each must be known, in the source and holdable by the
    target), or every domain both hold."""
    if requested is None:
        return [key for key in DOMAINS if source.get_store(key) is not None and target.get_store(key) is not None]
    requested = list(requested)
    unknown = [key for key in requested if key not in DOMAINS]
    if unknown:
        raise ValidationError(fields={"domains": [unknown_domain(key) for key in unknown]},
                              id="STORAGE_COMPOSITE_COPY_DOMAINS_INVALID_INPUT")
    for key in requested:
        if source.get_store(key) is None:
            raise NotSupportedError(f"The source does not hold the {key} domain", domain=key,
                                    id="STORAGE_COMPOSITE_COPY_DOMAINS_NOT_SUPPORTED")
        if target.get_store(key) is None:
            raise NotSupportedError(f"The target cannot hold the {key} domain (ClickHouse holds memory, workflows, "
                                    "scores and observability); use SQLite or PostgreSQL for it", domain=key,
                                    id="STORAGE_COMPOSITE_COPY_DOMAINS_NOT_SUPPORTED")
    return list(dict.fromkeys(requested))


def copy_domains(source: Any, target: Any, domains: Iterable[str] | None = None, progress: Progress | None = None,
                 *, on_conflict: str = "fail", chunk_size: int = ITER_CHUNK) -> list[PartReport]:
    """Copy ``domains`` (default: every domain both sides hold) from ``source`` to ``target``
    (composite or whole stores, or database URLs), keeping ids, timestamps, versions and links.

    Streams the source chunk by chunk and writes with the target's bulk inserts; the target's
    tables are created first.  Running it again after an interruption finishes the job without
    duplicates; a target row that differs from the source's under the same key follows
    ``on_conflict`` (``fail``, ``skip``, ``overwrite``).  Returns one :class:`PartReport` per
    table, with both sides' row counts compared at the end.

    Example::

        from composite_store import copy_domains

        for part in copy_domains("sqlite:///app.db", "postgresql://…/app", domains=["memory"]):
            print(part.summary())
    """
    _check_on_conflict(on_conflict)
    source_store, close_source = _store(source, role="source")
    try:
        target_store, close_target = _store(target, role="target")
    except StorageError:
        if close_source:
            source_store.close()
        raise
    try:
        reports = []
        for domain in _domains(domains, source_store, target_store):
            reports.extend(_copy_domain(StoreSide(source_store.get_store(domain)),
                                        StoreSide(target_store.get_store(domain)), on_conflict=on_conflict,
                                        progress=progress, chunk_size=chunk_size))
        return reports
    finally:
        for store, opened in ((source_store, close_source), (target_store, close_target)):
            if opened:
                store.close()


def _copy_domain(source: StoreSide, target: StoreSide, *, on_conflict: str, progress: Progress | None,
                 chunk_size: int) -> list[PartReport]:
    target.prepare()
    parts = source.parts(target.layout)
    # Signals of the current layout towards the legacy one, which has no table for them.
    left = [part for part in source.signals if part not in parts and source.count(part)]
    if left:
        logger.warning("%s: the target's %s layout cannot hold %s; they stay in the source", source.domain,
                       target.layout, ", ".join(left))
    reports = []
    for part in parts:
        total = source.count(part)
        report = PartReport(source.domain, part)
        if total is not None:
            copy_part(source.rows(part, chunk_size=chunk_size), target, part, on_conflict=on_conflict,
                      report=report, total=total, progress=progress)
        report.source_rows, report.target_rows = total or 0, target.count(part) or 0
        report.finished = True
        if progress:
            progress(report, report.read, total)
        reports.append(report)
    target.finish()
    return reports


# --------------------------------------------------------------------------- export and import

def export_domain(url: Any, domain: str, out: IO[str], *, dataset_id: str | None = None,
                  progress: Progress | None = None, chunk_size: int = ITER_CHUNK) -> list[PartReport]:
    """Write ``domain`` of the store at ``url`` (or a store) to ``out`` as JSON Lines: a header
    line (domain, table layout, library version, tables and their columns), then one line per
    row.  ``dataset_id`` (the datasets domain) exports that dataset only: its row, items and
    versions."""
    store, opened = _store(url, role="source")
    try:
        [domain] = _domains([domain], store, store)
        if dataset_id is not None and domain != "datasets":
            raise ValidationError(fields={"dataset_id": ["dataset_id applies to the datasets domain only"]},
                                  id="STORAGE_COMPOSITE_EXPORT_INVALID_INPUT")
        side = StoreSide(store.get_store(domain), dataset_id=dataset_id)
        parts = side.parts("file")
        out.write(json_dumps(header(side, parts)) + "\n")
        reports = []
        for part in parts:
            total = side.count(part)
            report = PartReport(domain, part, source_rows=total or 0)
            if progress:
                progress(report, 0, total)
            model = None if side.is_record_part(part) else side.models[part]
            for row in (side.rows(part, chunk_size=chunk_size) if total is not None else ()):
                out.write(json_dumps({"table": part, "row": to_wire(model, row)}) + "\n")
                report.read += 1
                report.written += 1
                if progress and report.read % WRITE_CHUNK == 0:
                    progress(report, report.read, total)
            report.target_rows, report.finished = report.written, True
            if progress:
                progress(report, report.read, total)
            reports.append(report)
        return reports
    finally:
        if opened:
            store.close()


def import_file(url: Any, lines: Callable[[], Iterable[str]], *, on_conflict: str = "fail",
                progress: Progress | None = None) -> list[PartReport]:
    """Copy an export file into the store at ``url`` (or a store).  ``lines()`` gives the file's
    lines afresh (it is read twice): the first pass checks every line (header, tables, every
    row as the columns require; spans as ``batch_create_spans`` checks them) and raises one
    :class:`ValidationError` naming the bad line numbers, having written nothing; the second
    pass writes, as :func:`copy_domains` does."""
    _check_on_conflict(on_conflict)
    store, opened = _store(url, role="target")
    try:
        first = next(iter(lines()), None)
        file_header = _read_header(first)
        [domain] = _domains([file_header["domain"]], store, store)
        target = StoreSide(store.get_store(domain))
        parts = list(file_header["tables"])
        expected = target.parts("file")
        if not set(parts) <= set(expected):
            raise _file_error({"1": [f"tables {parts} are not tables of {domain} here ({', '.join(expected)})"]})
        counts = _check_file(target, lines(), set(parts))
        target.prepare()
        reports = {part: PartReport(domain, part, source_rows=counts.get(part, 0)) for part in parts}
        for part, group in itertools.groupby(_entries(lines()), key=lambda entry: entry[0]):
            model = None if target.is_record_part(part) else target.models[part]
            names = target.fields.get(part, ())
            rows = (_record_times(values) if model is None else from_wire(model, names, values, [])
                    for _, values in group)
            copy_part(rows, target, part, on_conflict=on_conflict, report=reports[part], total=counts[part],
                      progress=progress)
        for report in reports.values():
            report.target_rows, report.finished = target.count(report.table) or 0, True
            if progress:
                progress(report, report.read, report.source_rows)
        target.finish()
        return list(reports.values())
    finally:
        if opened:
            store.close()


def _file_error(fields: dict[str, list[str]]) -> ValidationError:
    lines = ", ".join(sorted(fields, key=int)[:10])
    return ValidationError(f"The file has bad lines ({lines}{', …' if len(fields) > 10 else ''}); nothing was "
                           "imported", fields={f"line {number}": messages for number, messages in fields.items()},
                           id="STORAGE_COMPOSITE_IMPORT_INVALID_INPUT")


def _read_header(line: str | None) -> dict[str, Any]:
    try:
        value = json_loads(line) if line is not None else None
    except ValueError:
        value = None
    if not isinstance(value, dict) or value.get("format") != FILE_FORMAT or not isinstance(value.get("tables"), dict):
        raise _file_error({"1": [f"not a header line of a composite-store export (format {FILE_FORMAT!r})"]})
    if value.get("domain") not in DOMAINS:
        raise _file_error({"1": [unknown_domain(value.get("domain"))]})
    return value


def _parse_line(line: str, problems: list[str]) -> tuple[str, Any] | None:
    try:
        entry = json_loads(line)
    except ValueError:
        entry = None
    if not isinstance(entry, dict) or not isinstance(entry.get("table"), str) or "row" not in entry:
        problems.append('not a JSON object {"table": …, "row": {…}}')
        return None
    return entry["table"], entry["row"]


def _check_file(target: StoreSide, lines: Iterable[str], parts: set[str]) -> dict[str, int]:
    """Check every row line (its columns, then its record as the domain's writes check it);
    raise one error naming every bad line; return rows per part."""
    bad: dict[str, list[str]] = {}
    counts: dict[str, int] = {}
    spans: list[tuple[int, dict]] = []
    checks = _record_checks()
    for number, line in enumerate(lines, start=1):
        if number == 1 or not line.strip():
            continue
        problems: list[str] = []
        entry = _parse_line(line, problems)
        if entry is not None:
            part, values = entry
            if part not in parts:
                problems.append(f"table {part!r} is not in the header")
            else:
                record_part = target.is_record_part(part)
                row = from_wire(None if record_part else target.models[part], target.fields.get(part, ()),
                                values, problems)
                if row is not None and part in target.signals:
                    _check_signal(target, target.signals[part], row, problems)
                elif row is not None and not record_part and not problems:
                    _check_record(target, part, row, problems, checks)
                if part == SPANS and row is not None:
                    spans.append((number, row))
                    if len(spans) >= WRITE_CHUNK:
                        _check_spans(target, spans, bad)
                counts[part] = counts.get(part, 0) + 1
        if problems:
            bad[str(number)] = problems
    _check_spans(target, spans, bad)
    if bad:
        raise _file_error(bad)
    return counts


def _record_checks() -> dict[str, tuple[Callable[[Any, dict[str, Any]], dict[str, Any]], Any]]:
    """Table → (the record the domain makes of a row, as its ``iter_*`` method gives it; the
    schema its write methods load such a record with): an imported row is checked as a write
    checks its record.  Tables without a record of their own (versions, favourites) are checked
    by their columns only."""
    from . import agents
    from .schemas import (AgentSchema, AgentVersionSchema, DatasetItemSchema, DatasetSchema, ExperimentResultSchema,
                          ExperimentSchema, MessageSchema, ResourceSchema, ScoreSchema, SpanSchema, ThreadSchema,
                          WorkflowRunSchema)

    return {
        "mastra_threads": (lambda repository, row: repository._thread_record(row), ThreadSchema()),
        "mastra_messages": (lambda repository, row: repository._message_record(row), MessageSchema()),
        "mastra_resources": (lambda repository, row: repository._resource_record(row), ResourceSchema()),
        "mastra_workflow_snapshot": (lambda repository, row: repository._run_record(row), WorkflowRunSchema()),
        "mastra_scorers": (lambda repository, row: repository._record(row), ScoreSchema()),
        "mastra_ai_spans": (lambda repository, row: repository._span_record(row), SpanSchema()),
        "mastra_agents": (lambda repository, row: agents._agent_record(row), AgentSchema()),
        "mastra_agent_versions": (lambda repository, row: agents._version_record(row), AgentVersionSchema()),
        "mastra_datasets": (lambda repository, row: repository._dataset_record(row), DatasetSchema()),
        "mastra_dataset_items": (lambda repository, row: repository._item_record(row, history=True),
                                 DatasetItemSchema()),
        "mastra_experiments": (lambda repository, row: repository._experiment_record(row), ExperimentSchema()),
        "mastra_experiment_results": (lambda repository, row: repository._result_record(row),
                                      ExperimentResultSchema()),
    }


def _check_record(target: StoreSide, part: str, row: dict[str, Any], problems: list[str],
                  checks: dict[str, Any]) -> None:
    """``row`` of ``part`` checked as the domain's write methods check its record."""
    check = checks.get(part)
    if check is None:
        return
    record_of, schema = check
    try:
        schema.load(record_of(target.repository, row))
    except marshmallow.ValidationError as error:
        problems.extend(f"{path}: {'; '.join(messages)}" if path else "; ".join(messages)
                        for path, messages in flatten_errors(error.messages).items())
    except (TypeError, ValueError, KeyError) as error:  # a value the record cannot be made of
        problems.append(f"not a {part} row: {error}")


def _check_signal(target: StoreSide, kind: SignalKind, record: dict[str, Any], problems: list[str]) -> None:
    """A signal line checked as its batch write checks the record (nothing written)."""
    found = Problems()
    signal_row(found, kind, record, clean=target.backend.clean)
    problems.extend(f"{field}: {'; '.join(messages)}" if field else "; ".join(messages)
                    for field, messages in found.fields.items())


def _check_spans(target: StoreSide, spans: list[tuple[int, dict]], bad: dict[str, list[str]]) -> None:
    """Span lines checked as ``batch_create_spans`` checks them (its validation, nothing written)."""
    from .observability.records import SpanRows

    rows = SpanRows(strip_nul=target.backend.features.strips_nul, scalars_first=False, clean=target.backend.clean)
    for number, record in spans:
        problems = Problems()
        rows.row(problems, record, "")
        if problems:
            bad[str(number)] = [f"{field}: {'; '.join(messages)}" if field else "; ".join(messages)
                                for field, messages in problems.fields.items()]
    spans.clear()


def _entries(lines: Iterable[str]) -> Iterator[tuple[str, Any]]:
    """``(table, row)`` of every row line (of a file :func:`_check_file` accepted)."""
    for number, line in enumerate(lines, start=1):
        if number > 1 and line.strip():
            entry = _parse_line(line, [])
            if entry is not None:
                yield entry


def _record_times(record: dict[str, Any]) -> dict[str, Any]:
    """A span or signal record read from a file: its ISO timestamps (``…_at``, ``timestamp``)
    as datetimes, as the source's iteration gave them."""
    return {key: _TIMESTAMP.deserialize(value) if (key.endswith("_at") or key == "timestamp")
            and isinstance(value, str) else value for key, value in record.items()}
