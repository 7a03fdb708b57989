"""The documentation runs as written: every code example of README.md and docs/ is executed.

* **Python**: README's ```python fences, ``.. code-block:: python`` and ``::`` literal blocks that
  parse as Python.  The blocks of one page run in order in one namespace (a block may use what an
  earlier one defined), in a fresh temporary directory, so ``sqlite:///app.db`` is a new file.
  Every namespace starts with ``storage``, a composite store on ``sqlite:///app.db`` (the quick
  start's): the domain pages continue the quick start.
* **Commands**: the ``composite-store ...`` commands of README's ```sh fences and of
  ``$``-prompted ``.. code-block:: console`` blocks run as subprocesses in the page's directory.
  A console block's output lines are compared with what the command printed (whitespace
  collapsed, ``...`` stands for any lines); ``$ echo $?`` followed by a number is the exit status
  the command before it must end with (else 0).

URLs of the example hosts (:data:`EXAMPLE_HOSTS`) are rewritten before a block runs: PostgreSQL
URLs to a fresh database of the page's own on this run's server (its ``?schema_name=`` kept) and
ClickHouse URLs to a database of the page's own on this run's server, so those examples run on
the real servers, not on SQLite, and leave nothing in the databases other tests share.  ``chdb://`` URLs of Python blocks are pointed at the run's chdb
directory (``chdb_url``: chdb opens one directory per process), in a database of the page's own;
commands run in child processes and keep theirs.  ``$DATABASE_URL`` is set to the page's PostgreSQL
database.  Other URLs (the unreachable ``127.0.0.1:1`` of an error example) run as written.  A
block that cannot run is a documentation bug: fix the page, never skip the block.
"""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys
import textwrap
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import pytest

from composite_store import CompositeStore
from composite_store.backends.base import mask_password
from composite_store.stores import WholeStore
from tests.conftest import clickhouse_client, database_url
from tests.servers import create_postgres_database

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted(path for path in (ROOT / "docs").rglob("*.rst") if "_build" not in path.parts)]

#: Hosts the examples use for "your server": their URLs are pointed at this run's servers.
EXAMPLE_HOSTS = {"localhost", "db", "db.internal", "clickhouse.internal"}
#: Languages of code blocks that are shown, not run (a block in any other language fails the test,
#: so a misspelt ``pyhton`` cannot hide an example from it).
DISPLAY_ONLY = {"text"}
URL = re.compile(r"\b(?:postgres|postgresql|clickhouse)://[^\s\"'`]+")
CHDB_URL = re.compile(r"\bchdb://[^\s\"'`]+")


@dataclass
class Command:
    """One ``composite-store`` command line of a page, with what its example shows."""

    argv: list[str]
    expected_output: list[str] = field(default_factory=list)
    expected_status: int = 0


@dataclass
class Block:
    """One code example: ``python`` source, or ``shell`` commands."""

    page: Path
    line: int
    language: str
    text: str

    def where(self) -> str:
        """``docs/x.rst:12``, for failure messages."""
        return f"{self.page.relative_to(ROOT)}:{self.line}"


# ----------------------------------------------------------------------------- extraction

def markdown_blocks(page: Path) -> list[Block]:
    """The ```python and ```sh fences of a Markdown page."""
    blocks = []
    for match in re.finditer(r"^```(\w*)\n(.*?)^```", page.read_text(), flags=re.S | re.M):
        line = page.read_text()[:match.start()].count("\n") + 2
        language = {"python": "python", "sh": "shell"}.get(match.group(1), match.group(1) or "text")
        blocks.append(Block(page, line, language, match.group(2)))
    return blocks


def rst_blocks(page: Path) -> list[Block]:
    """The ``code-block`` directives and ``::`` literal blocks of a reStructuredText page."""
    lines = page.read_text().splitlines()
    blocks = []
    for number, line in enumerate(lines):
        directive = re.match(r"^(\s*)\.\. code-block::\s*(\S+)\s*$", line)
        if directive:
            language = {"python": "python", "console": "shell"}.get(directive.group(2), directive.group(2))
        elif line.rstrip().endswith("::") and not line.lstrip().startswith(".."):
            language = "literal"
        else:
            continue
        indent = len(line) - len(line.lstrip())
        start = number + 1
        while start < len(lines) and (not lines[start].strip() or re.match(r"^\s+:[\w-]+:", lines[start])):
            start += 1                                   # the blank line and the directive's options
        end = start
        while end < len(lines) and (not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent):
            end += 1
        text = textwrap.dedent("\n".join(lines[start:end])).strip("\n") + "\n"
        if language == "literal":
            language = "python" if parses(text) else "text"
        blocks.append(Block(page, start + 1, language, text))
    return blocks


def parses(text: str) -> bool:
    """Whether ``text`` is Python source."""
    try:
        ast.parse(text)
    except SyntaxError:
        return False
    return True


def page_blocks(page: Path) -> list[Block]:
    """Every code block of ``page``, in order."""
    return markdown_blocks(page) if page.suffix == ".md" else rst_blocks(page)


def commands(block: Block) -> list[Command]:
    """The ``composite-store`` commands of a shell block, with their shown output and status."""
    prompted = block.page.suffix == ".rst"
    found: list[Command] = []
    pending = ""
    for line in block.text.splitlines():
        if pending or not prompted or line.startswith("$ "):
            text = pending + (line[2:] if line.startswith("$ ") and not pending else line)
            if text.endswith("\\"):
                pending = text[:-1] + " "
                continue
            pending = ""
            for part in text.split("&&"):
                words = shlex.split(part, comments=True)
                if words[:1] == ["composite-store"]:
                    found.append(Command(words[1:]))
                elif words == ["echo", "$?"]:
                    found.append(Command([]))            # its output is the status of the last command
        elif found:
            found[-1].expected_output.append(line)
    for command in found:                                # the blank line before the next prompt
        while command.expected_output and not command.expected_output[-1].strip():
            command.expected_output.pop()
    for echo, command in zip(found[1:], found):
        if not echo.argv:
            command.expected_status = int(echo.expected_output[0])
    return [command for command in found if command.argv]


# ----------------------------------------------------------------------------- running

class Page:
    """Runs the blocks of one page in ``directory`` with one namespace."""

    def __init__(self, page: Path, directory: Path, fixture: Callable[[str], Any]) -> None:
        self.page, self.directory, self.fixture = page, directory, fixture
        self.urls: dict[str, str] = {}
        self.namespace: dict[str, Any] = {"__name__": "__docs__"}
        self.chdb_database = f"docs_{uuid.uuid4().hex[:8]}"
        #: This page's own databases by kind (``postgres``, ``clickhouse``) and how to drop them:
        #: the examples init, write, copy and prune, which the run's shared databases must not see.
        self.databases: dict[str, str] = {}
        self.drops: list[Callable[[], Any]] = []

    def database(self, kind: str) -> str:
        """The URL of this page's own database on the run's server of ``kind``, created on first use."""
        if kind not in self.databases:
            if kind == "postgres":
                url, drop = create_postgres_database(self.fixture("postgres_url"), prefix="cstest_docs")
            else:
                server, name = self.fixture("clickhouse_url"), f"docs_{uuid.uuid4().hex[:8]}"
                clickhouse_client(server).execute(f"CREATE DATABASE {name}")
                url = database_url(server, name)

                def drop() -> None:
                    clickhouse_client(server).execute(f"DROP DATABASE IF EXISTS {name}")
            self.databases[kind] = url
            self.drops.append(drop)
        return self.databases[kind]

    def rewrite(self, text: str) -> str:
        """``text`` with every example-host URL pointed at this run's server of its kind."""
        return URL.sub(lambda match: self.real_url(match.group(0)), text)

    def real_url(self, url: str) -> str:
        parts = urlsplit(url)
        if parts.hostname not in EXAMPLE_HOSTS:
            return url
        if url.startswith("clickhouse"):
            real = self.database("clickhouse")
        else:
            real = self.database("postgres") + (f"?{parts.query}" if parts.query else "")
        self.urls[mask_password(url)] = mask_password(real)
        return real

    def in_this_process(self, text: str) -> str:
        """``text`` with its chdb URLs pointed at the run's chdb directory, in this page's database
        (their other query parameters kept)."""
        def real(match: re.Match) -> str:
            options = [part for part in urlsplit(match.group(0)).query.split("&") if part
                       and not part.startswith("database=")]
            return f"{self.fixture('chdb_url')}?" + "&".join([f"database={self.chdb_database}", *options])

        return CHDB_URL.sub(real, text)

    def run_python(self, block: Block) -> None:
        tree = ast.parse(self.rewrite(self.in_this_process(block.text)), filename=str(block.page))
        ast.increment_lineno(tree, block.line - 1)       # tracebacks name the page's own lines
        try:
            exec(compile(tree, str(block.page), "exec"), self.namespace)
        except Exception as error:
            raise AssertionError(f"{block.where()}: the example raised {error!r}") from error

    def run_shell(self, block: Block) -> None:
        for command in commands(block):
            argv = [self.rewrite(word) for word in command.argv]
            result = subprocess.run([sys.executable, "-m", "composite_store", *argv], cwd=self.directory,
                                    stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
            shown = f"{block.where()}: composite-store {shlex.join(argv)}"
            assert result.returncode == command.expected_status, f"{shown}\n{result.stdout}{result.stderr}"
            expected = [self.masked(line) for line in command.expected_output]
            assert not expected or matches(expected, (result.stdout + result.stderr).splitlines()), (
                f"{shown} printed\n{result.stdout}{result.stderr}\nthe page shows\n" + "\n".join(expected))

    def masked(self, line: str) -> str:
        """An output line of the page with its example URLs as the command prints the real ones."""
        for shown, real in self.urls.items():
            line = line.replace(shown, real)
        return line

    def close(self) -> None:
        """Close the stores the examples left open and drop the page's databases."""
        for value in self.namespace.values():
            if isinstance(value, (CompositeStore, WholeStore)):
                value.close()
        for drop in self.drops:
            drop()


def matches(expected: list[str], actual: list[str]) -> bool:
    """Whether ``actual`` lines fit ``expected`` (whitespace collapsed; ``...`` is any lines)."""
    pattern = "".join(".*?" if line.strip() == "..." else re.escape(" ".join(line.split())) + "\n"
                      for line in expected)
    return re.fullmatch(pattern, "".join(" ".join(line.split()) + "\n" for line in actual), flags=re.S) is not None


# ----------------------------------------------------------------------------- tests

def test_every_code_block_is_found_and_in_a_known_language():
    blocks = [block for page in PAGES for block in page_blocks(page)]
    unknown = [f"{block.where()} ({block.language})" for block in blocks
               if block.language not in {"python", "shell", *DISPLAY_ONLY}]
    assert not unknown, f"code blocks this test would not run: {unknown}"
    assert sum(block.language == "python" for block in blocks) >= 25
    assert sum(len(commands(block)) for block in blocks if block.language == "shell") >= 6


def runnable(page: Path) -> list[Block]:
    """The blocks of ``page`` this test runs."""
    return [block for block in page_blocks(page) if block.language in {"python", "shell"}]


RUNNABLE_PAGES = [page for page in PAGES if runnable(page)]


@pytest.mark.parametrize("page", RUNNABLE_PAGES, ids=[str(page.relative_to(ROOT)) for page in RUNNABLE_PAGES])
def test_page_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                           request: pytest.FixtureRequest) -> None:
    blocks = runnable(page)
    monkeypatch.chdir(tmp_path)
    runner = Page(page, tmp_path, request.getfixturevalue)
    if any("DATABASE_URL" in block.text for block in blocks):
        monkeypatch.setenv("DATABASE_URL", runner.database("postgres"))
    with CompositeStore.from_urls(default="sqlite:///app.db") as storage:
        storage.init()
        runner.namespace["storage"] = storage
        try:
            for block in blocks:
                (runner.run_python if block.language == "python" else runner.run_shell)(block)
        finally:
            runner.close()


def test_readme_names_every_environment_variable_the_tests_and_benchmarks_read():
    sources = [path.read_text() for folder in ("tests", "benchmarks") for path in (ROOT / folder).rglob("*.py")]
    names = {name for text in sources
             for name in re.findall(r'"(COMPOSITE_STORE_[A-Z0-9_]+)"|_ENV = "([A-Z0-9_]+)"', text) for name in name if name}
    assert "CLICKHOUSE_SERVER_BINARY" in names
    readme = (ROOT / "README.md").read_text()
    assert not sorted(name for name in names if name not in readme)
