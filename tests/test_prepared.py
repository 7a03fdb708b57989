"""Prepared statements (``Backend.prepared``) are cached per call site and shape: a statement
rendered for one query never serves another, whatever key its caller writes.  Run on every
backend, with the spans table of the observability domain."""

from __future__ import annotations

from typing import Any

from composite_store.base import count_prepared, fetch_prepared_page
from composite_store.backends.base import statement_key
from composite_store.validation import PageRequest


def spans(observability: Any) -> None:
    """Three spans: two of trace ``t-1`` (``s-1``, ``s-2``), one of trace ``t-2`` (``s-3``)."""
    observability.batch_create_spans(records=[
        {"trace_id": trace_id, "span_id": span_id, "name": span_id, "span_type": "agent_run",
         "started_at": f"2026-01-31T09:05:0{index}Z"}
        for index, (trace_id, span_id) in enumerate((("t-1", "s-1"), ("t-1", "s-2"), ("t-2", "s-3")))])


def span_ids(statement: Any, **values: Any) -> list[str]:
    return sorted(row["span_id"] for row in statement.rows(**values))


def test_two_call_sites_with_the_same_key_get_their_own_statements(observability):
    spans(observability)
    backend, Span = observability.backend, observability.models.span
    by_trace = backend.prepared("same key", lambda: backend.select(Span, Span.span_id).where(
        Span.trace_id == backend.param("value")))
    by_span = backend.prepared("same key", lambda: backend.select(Span, Span.span_id).where(
        Span.span_id == backend.param("value")))
    assert by_trace is not by_span
    assert by_trace.sql != by_span.sql
    assert span_ids(by_trace, value="t-1") == ["s-1", "s-2"]
    assert span_ids(by_span, value="s-3") == ["s-3"]


def lookup(backend: Any, Span: Any, column: str) -> Any:
    """One call site whose SQL depends on ``column``: the shape names it."""
    return backend.prepared((Span, column), lambda: backend.select(Span, Span.span_id).where(
        getattr(Span, column) == backend.param("value")))


def test_one_call_site_has_one_statement_per_shape(observability):
    spans(observability)
    backend, Span = observability.backend, observability.models.span
    assert lookup(backend, Span, "trace_id") is lookup(backend, Span, "trace_id")  # rendered once
    by_trace, by_span = lookup(backend, Span, "trace_id"), lookup(backend, Span, "span_id")
    assert by_trace is not by_span
    assert span_ids(by_trace, value="t-2") == ["s-3"]
    assert span_ids(by_span, value="s-2") == ["s-2"]


def test_paged_and_counted_queries_keep_the_callers_apart(observability):
    """``fetch_prepared_page`` and ``count_prepared`` wrap the caller's query in statements of
    their own: two callers passing the same key still get their own page and count."""
    spans(observability)
    backend, Span = observability.backend, observability.models.span

    def of_trace() -> Any:
        return backend.select(Span).where(Span.trace_id == backend.param("trace_id"))

    def other_traces() -> Any:
        return backend.select(Span).where(Span.trace_id != backend.param("trace_id"))

    values = {"trace_id": "t-1"}
    assert count_prepared(backend, "same key", of_trace, values) == 2
    assert count_prepared(backend, "same key", other_traces, values) == 1
    request = PageRequest(page=0, per_page=10)
    order = [Span.span_id.asc()]
    first = fetch_prepared_page(backend, "same key", of_trace, order, request, values)
    second = fetch_prepared_page(backend, "same key", other_traces, order, request, values)
    assert [row["span_id"] for row in first[0]] == ["s-1", "s-2"] and first[1] == 2
    assert [row["span_id"] for row in second[0]] == ["s-3"] and second[1] == 1


def test_statement_key_names_the_call_site_by_identity():
    """Two functions with the same code text at the same line (as two modules may have) are two
    call sites; one function with two shapes has two keys."""
    sites = []
    for filename in ("one.py", "two.py"):
        namespace: dict[str, Any] = {}
        exec(compile("def build():\n    return 1\n", filename, "exec"), namespace)
        sites.append(namespace["build"])
    first, second = sites
    assert first.__code__ == second.__code__  # equal code objects ...
    assert statement_key(first, "shape") != statement_key(second, "shape")  # ... but two sites
    assert statement_key(first, "shape") == statement_key(first, "shape")
    assert statement_key(first, "shape") != statement_key(first, "other shape")
