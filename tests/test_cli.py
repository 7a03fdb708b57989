"""The ``composite-store`` command line: init, demo and stats, on real databases."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner, Result

from composite_store import CompositeStore
from composite_store.cli import cli
from composite_store.composite import store_for_url
from composite_store.stores import DOMAINS

UNREACHABLE_PG = "postgresql://u:secret@127.0.0.1:1/db"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def available_domains(url: str) -> list[str]:
    """The domains a composite store on ``url`` provides in this installation."""
    with CompositeStore.from_urls(default=url) as storage:
        return [key for key in DOMAINS if storage.get_store(key) is not None]


def subprocess_env() -> dict[str, str]:
    """The environment of a ``python -m composite_store`` child (the package is installed, editable)."""
    return dict(os.environ)


def row_counts(output: str) -> dict[str, int]:
    """``stats`` output → ``{table: rows}``."""
    counts = {}
    for line in output.splitlines():
        match = re.match(r"^\w+\s+(mastra_\w+)\s+([\d,]+)$", line)
        if match:
            counts[match.group(1)] = int(match.group(2).replace(",", ""))
    return counts


# ---------------------------------------------------------------------------- init

def test_init_creates_every_table_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path}/app.db"
    result = run("init", "--default", url)
    assert result.exit_code == 0, result.stderr
    assert "Tables are ready." in result.stdout
    with store_for_url(url) as store:
        for key in store.domains:
            assert None not in store.get_store(key).count_rows().values(), key


def test_init_puts_each_domain_on_its_own_url(tmp_path):
    default, memory = f"sqlite:///{tmp_path}/default.db", f"sqlite:///{tmp_path}/memory.db"
    result = run("init", "--default", default, "--memory", memory)
    assert result.exit_code == 0, result.stderr
    assert re.search(r"^memory\s+sqlite:///.*memory\.db$", result.stdout, re.M)
    with store_for_url(memory) as store:
        assert None not in store.get_store("memory").count_rows().values()


def test_init_on_postgres(postgres_url):
    result = run("init", "--default", postgres_url)
    assert result.exit_code == 0, result.stderr
    result = run("init", "--default", postgres_url)  # idempotent
    assert result.exit_code == 0, result.stderr
    with store_for_url(postgres_url) as store:
        assert None not in store.get_store("memory").count_rows().values()


def test_init_on_clickhouse(clickhouse_url, tmp_path):
    result = run("init", "--default", f"sqlite:///{tmp_path}/rest.db", "--memory", clickhouse_url,
                 "--observability", clickhouse_url)
    assert result.exit_code == 0, result.stderr
    assert re.search(r"^memory\s+clickhouse://", result.stdout, re.M)
    with store_for_url(clickhouse_url) as store:
        assert None not in store.get_store("memory").count_rows().values()


def test_init_with_a_clickhouse_default_leaves_out_the_later_domains(clickhouse_url):
    result = run("init", "--default", clickhouse_url)
    assert result.exit_code == 0, result.stderr
    for key in ("agents", "datasets", "experiments"):
        assert re.search(rf"^{key}\s+\(not available\)$", result.stdout, re.M)


def test_init_refuses_agents_on_clickhouse(clickhouse_url, tmp_path):
    result = run("init", "--default", f"sqlite:///{tmp_path}/a.db", "--agents", clickhouse_url)
    assert result.exit_code == 1
    assert result.stderr.startswith("STORAGE_CLICKHOUSE_INIT_NOT_SUPPORTED: The agents domain is not available")


def test_init_unknown_scheme_exits_1_with_the_error_id():
    result = run("init", "--default", "mysql://u:secret@localhost/db")
    assert result.exit_code == 1
    assert result.stderr.startswith("STORAGE_COMPOSITE_INIT_INVALID_INPUT: Unknown URL scheme 'mysql'")
    assert result.stdout == ""


def test_init_without_any_url_exits_1():
    result = run("init")
    assert result.exit_code == 1
    assert result.stderr.startswith("STORAGE_COMPOSITE_INIT_INVALID_INPUT: ")


def test_init_unreachable_postgres_exits_1_and_masks_the_password():
    result = run("init", "--default", UNREACHABLE_PG)
    assert result.exit_code == 1
    assert result.stderr.startswith("STORAGE_PG_INIT_FAILED: Cannot reach database postgresql://u:***@127.0.0.1:1/db")
    assert "secret" not in result.output


def test_init_of_a_missing_postgres_database_says_the_server_answered(postgres_url):
    url = postgres_url.rsplit("/", 1)[0] + "/no_such_database_cli"
    result = run("init", "--default", url)
    assert result.exit_code == 1
    assert result.stderr == (f"STORAGE_PG_INIT_FAILED: Connected to {url}, but the server refused the login: "
                             'database "no_such_database_cli" does not exist\n')


def test_verbose_levels_are_documented_in_the_help():
    result = run("--help")
    assert "-vv: debug, -vvv: also the drivers' and peewee's debug lines" in " ".join(result.output.split())


# ---------------------------------------------------------------------------- stats

def test_stats_counts_rows_per_domain_and_table(tmp_path):
    url = f"sqlite:///{tmp_path}/stats.db"
    with CompositeStore.from_urls(default=url) as storage:
        storage.init()
        memory = storage.get_store("memory")
        for index in range(3):
            memory.save_thread(thread={"id": f"t-{index}", "resource_id": "alice"})
        memory.save_messages(messages=[{"id": "m-1", "thread_id": "t-0", "resource_id": "alice", "role": "user",
                                        "content": "hello"}])
    result = run("stats", url)
    assert result.exit_code == 0, result.stderr
    counts = row_counts(result.stdout)
    assert counts["mastra_threads"] == 3
    assert counts["mastra_messages"] == 1
    assert counts["mastra_resources"] == 0
    assert re.search(r"^total\s+4$", result.stdout, re.M)
    with store_for_url(url) as store:
        expected = {table for key in store.domains for table in store.get_store(key).count_rows()}
    assert set(counts) == expected


def test_stats_marks_missing_tables_and_creates_nothing(tmp_path):
    url = f"sqlite:///{tmp_path}/empty.db"
    with store_for_url(url) as store:
        store.get_store("memory").count_rows()  # opens (creates) the file, no tables
    result = run("stats", url)
    assert result.exit_code == 0, result.stderr
    assert "mastra_threads" in result.stdout and "table missing" in result.stdout
    with store_for_url(url) as store:
        assert set(store.get_store("memory").count_rows().values()) == {None}


def test_stats_of_a_missing_sqlite_file_is_an_error(tmp_path):
    result = run("stats", f"sqlite:///{tmp_path}/nothing-here.db")
    assert result.exit_code == 1
    assert result.stderr.startswith("STORAGE_SQLITE_COUNT_ROWS_NOT_FOUND: ")
    assert not (tmp_path / "nothing-here.db").exists()


def test_stats_of_a_missing_relative_sqlite_file_shows_the_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("stats", "sqlite:///nothing-here.db")
    assert result.exit_code == 1
    assert result.stderr == f"STORAGE_SQLITE_COUNT_ROWS_NOT_FOUND: No SQLite database at {tmp_path}/nothing-here.db\n"


def test_stats_on_postgres_schema(postgres_url):
    url = f"{postgres_url}?schema_name=cli_stats"
    with CompositeStore.from_urls(default=url) as storage:
        storage.init()
        storage.get_store("memory").save_thread(thread={"id": "t-stats", "resource_id": "bob"})
    result = run("stats", url)
    assert result.exit_code == 0, result.stderr
    assert row_counts(result.stdout)["mastra_threads"] == 1


def test_stats_on_clickhouse(clickhouse_url):
    with CompositeStore.from_urls(default=clickhouse_url) as storage:
        storage.init()
        memory = storage.get_store("memory")
        memory.save_thread(thread={"id": "t-stats-ch", "resource_id": "carol"})
        expected = memory.list_threads(per_page=0).total
    result = run("stats", clickhouse_url)
    assert result.exit_code == 0, result.stderr
    assert row_counts(result.stdout)["mastra_threads"] == expected


def test_stats_unknown_scheme_exits_1():
    result = run("stats", "redis://localhost")
    assert result.exit_code == 1
    assert result.stderr.startswith("STORAGE_COMPOSITE_INIT_INVALID_INPUT: ")


def test_stats_unreachable_postgres_exits_1_and_masks_the_password():
    result = run("stats", UNREACHABLE_PG)
    assert result.exit_code == 1
    assert result.stderr.startswith("STORAGE_PG_COUNT_ROWS_FAILED: Cannot reach database postgresql://u:***@")
    assert "secret" not in result.output


@pytest.mark.parametrize("url, error_id", [
    ("postgresql://u:secret@localhost:notaport/db", "STORAGE_PG_INIT_INVALID_INPUT"),
    ("clickhouse://u:secret@localhost:xx/db", "STORAGE_CLICKHOUSE_INIT_INVALID_INPUT"),
    ("sqlite://", "STORAGE_SQLITE_INIT_INVALID_INPUT"),
])
def test_stats_bad_url_exits_1_with_the_error_id(url, error_id):
    result = run("stats", url)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"{error_id}: ")
    assert "secret" not in result.output


def test_stats_unreachable_clickhouse_prints_one_line_without_the_password():
    completed = subprocess.run([sys.executable, "-m", "composite_store", "stats", "clickhouse://u:secret@127.0.0.1:1/db"],
                               env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert completed.returncode == 1
    assert completed.stdout == ""
    lines = completed.stderr.splitlines()
    assert len(lines) == 1, completed.stderr  # no driver traceback
    assert lines[0].startswith("STORAGE_CLICKHOUSE_COUNT_ROWS_FAILED: Cannot reach database "
                               "clickhouse://u:***@127.0.0.1:1/db: ")
    assert "secret" not in completed.stderr


# ---------------------------------------------------------------------------- demo

def check_demo_output(output: str, domains: list[str]) -> None:
    """The summary has a section for every domain the store provides."""
    assert output.startswith("composite-store demo: an afternoon of a support agent")
    assert "Conversation: \"Order #1042 has not arrived\"" in output
    assert "Working memory:" in output and "refund of #1042 requested" in output
    if "observability" in domains:
        trace = output.split("\nTrace ", 1)[1].split("\n\n", 1)[0].splitlines()
        assert trace[2].startswith("agent_run  agent run: 'support-agent-")
        assert any(line.startswith("├─ model_generation") for line in trace)
        assert any(line.startswith("├─ tool_call") for line in trace)
        assert any(line.startswith("└─ model_generation") for line in trace)
        assert all(re.search(r"\d+\.\d{3} s$", line) for line in trace[2:])
    if "scores" in domains:
        assert re.search(r"^answer-relevancy\s+8\s+0\.\d{3}", output, re.M)
        assert re.search(r"^tool-call-accuracy\s+5\s+1\.000", output, re.M)
        assert re.search(r"^answer-correctness\s+3\s", output, re.M)
    if "workflows" in domains:
        assert "Workflow run refund-approval" in output and "now success" in output
        assert "human-approval (success)" in output
    if "agents" in domains:
        assert re.search(r"^v1: gpt-4o-mini with no tools; \"Initial version\"$", output, re.M)
        assert re.search(r"^v2: gpt-4o with 5 tools; .*<- active$", output, re.M)
    if "datasets" in domains:
        assert "version 2 with 4 items; versions: 1, 2" in output
    if "experiments" in domains:
        assert "3 succeeded, 1 failed, 0 skipped of 4 items" in output
        assert "timed out" in output and "[needs-review]" in output
    skipped = [key for key in DOMAINS if key not in domains]
    if skipped:
        assert f"skipped (domain not available here): {', '.join(skipped)}" in output
    else:
        assert "skipped (domain" not in output


def test_demo_runs_on_the_default_sqlite_file_and_again(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = run("demo")
    assert first.exit_code == 0, first.stderr
    url = "sqlite:///composite-store-demo.db"
    assert (tmp_path / "composite-store-demo.db").exists()
    domains = available_domains(url)
    assert domains == list(DOMAINS)
    check_demo_output(first.stdout, domains)

    second = run("demo")  # same file, fresh ids
    assert second.exit_code == 0, second.stderr
    check_demo_output(second.stdout, domains)
    with CompositeStore.from_urls(default=url) as storage:
        assert storage.get_store("memory").list_threads(per_page=0).total == 8


def test_demo_on_postgres(postgres_url):
    url = f"{postgres_url}?schema_name=cli_demo"
    result = run("demo", "--url", url)
    assert result.exit_code == 0, result.stderr
    assert "postgresql://" in result.stdout
    check_demo_output(result.stdout, list(DOMAINS))


def test_demo_on_clickhouse_skips_the_later_domains(clickhouse_url):
    result = run("demo", "--url", clickhouse_url)
    assert result.exit_code == 0, result.stderr
    assert available_domains(clickhouse_url) == ["memory", "workflows", "scores", "observability"]
    check_demo_output(result.stdout, ["memory", "workflows", "scores", "observability"])


def test_demo_unreachable_database_exits_1_and_masks_the_password():
    result = run("demo", "--url", UNREACHABLE_PG)
    assert result.exit_code == 1
    assert result.stderr.startswith("STORAGE_PG_INIT_FAILED: ")
    assert "secret" not in result.output


def test_python_dash_m_repository_demo(tmp_path):
    completed = subprocess.run([sys.executable, "-m", "composite_store", "demo"], cwd=tmp_path, env=subprocess_env(),
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("composite-store demo: an afternoon of a support agent, stored in "
                                       "sqlite:///composite-store-demo.db")
    assert (tmp_path / "composite-store-demo.db").exists()


def test_help_names_the_commands():
    result = run("--help")
    assert result.exit_code == 0
    for command in ("init", "demo", "stats"):
        assert re.search(rf"^\s+{command}\s", result.stdout, re.M)
