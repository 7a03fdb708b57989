"""``Page.to_dataframe``: a page of real records (scores on SQLite) as a pandas DataFrame."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import datetime, timezone

import pytest

from composite_store import Page, ValidationError
from composite_store.sqlite import ScoresSQLite

pandas = pytest.importorskip("pandas")


@pytest.fixture
def scores(tmp_path):
    repository = ScoresSQLite(url=f"sqlite:///{tmp_path}/page.db")
    repository.init()
    yield repository
    repository.close()


def save(scores, value: float, **extra) -> dict:
    return scores.save_score(score={
        "scorer_id": "sc", "run_id": "run", "entity_id": "agent", "entity_type": "AGENT", "source": "LIVE",
        "score": value, "scorer": {"id": "sc"}, "entity": {"id": "agent"}, "output": {"text": "4"}, **extra})


def test_all_none_columns_are_dropped_and_values_kept(scores):
    first = save(scores, 0.25, reason="ok")
    second = save(scores, 0.75, metadata={"k": [1, 2]})
    frame = scores.list_scores(order_by={"field": "score", "direction": "ASC"}).to_dataframe()
    assert list(frame["id"]) == [first["id"], second["id"]] and list(frame["score"]) == [0.25, 0.75]
    # A score has 35 keys; the ones unset in every row (trace_id, batch_id, ...) are left out.
    assert "trace_id" not in frame.columns and "batch_id" not in frame.columns
    assert len(frame.columns) < 35 and list(frame.columns)[:2] == ["id", "scorer_id"]
    # A column set in some rows stays, missing where unset; nested values stay Python objects.
    assert frame["reason"].iloc[0] == "ok" and frame["reason"].isna().tolist() == [False, True]
    assert frame["metadata"].tolist()[1] == {"k": [1, 2]}
    assert str(frame["created_at"].dtype).startswith("datetime64") and str(frame["created_at"].dt.tz) == "UTC"
    assert frame["created_at"].iloc[0] == pandas.Timestamp(first["created_at"])
    assert len(scores.list_scores().to_dataframe(drop_empty=False).columns) == 35


def test_columns_choose_and_order_and_keep_empty_ones(scores):
    saved = save(scores, 0.5)
    frame = scores.list_scores().to_dataframe(columns=["score", "trace_id", "id"])
    assert list(frame.columns) == ["score", "trace_id", "id"]
    assert frame["score"].tolist() == [0.5] and frame["id"].tolist() == [saved["id"]]
    assert frame["trace_id"].isna().all()
    with pytest.raises(ValidationError) as caught:
        scores.list_scores().to_dataframe(columns=["score", "scroe"])
    assert "scroe" in caught.value.fields["columns"][0]


def test_empty_page():
    assert Page().to_dataframe().empty and list(Page().to_dataframe(columns=["a", "b"]).columns) == ["a", "b"]
    at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    frame = Page([{"id": "x", "at": at, "none": None}], 1, 0, 10, False).to_dataframe()
    assert list(frame.columns) == ["id", "at"]


def test_without_pandas_the_error_names_the_extra():
    """A process in which ``import pandas`` fails: one StorageError with the install command."""
    script = textwrap.dedent("""
        import sys
        sys.modules["pandas"] = None  # makes "import pandas" raise ImportError
        from composite_store import Page, StorageError
        try:
            Page(items=[{"id": "x"}], total=1).to_dataframe()
        except StorageError as error:
            print(error)
        else:
            print("no error")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "pip install 'composite-store[pandas]'" in result.stdout and "pandas" in result.stdout.split(";")[0]
