"""Faults: database servers stopped, crashed and restarted under a running store, and a process
killed in the middle of a SQLite batch (README *Concurrency, faults, bad input*: "A dropped
connection (server restart) is reconnected on the next call; writes keyed by id are idempotent so
a retry never duplicates"; *Errors*: an unreachable database is a ``BackendUnavailableError``
whose message shows the URL with the password masked).

The PostgreSQL and ClickHouse servers here are the module's own (``tests/reliability/conftest.py``)
and are reached with a password, so masking is really exercised.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from composite_store import BackendUnavailableError
from composite_store.clickhouse import ClickHouseStore
from composite_store.postgres import PostgresStore
from composite_store.sqlite import SQLiteStore
from composite_store.stores import WholeStore
from tests.reliability import records as R
from tests.reliability.servers import APP_PASSWORD

pytestmark = pytest.mark.reliability

BATCH = 10
WRITERS = 4


# --------------------------------------------------------------------------- helpers

def assert_unavailable(exc: BaseException, store: WholeStore, backend_id: str, operation: str, domain: str) -> None:
    """``exc`` is the unreachable-database error of ``operation``, with the password masked."""
    assert isinstance(exc, BackendUnavailableError), f"{operation}: {type(exc).__name__}: {exc}"
    assert exc.id == f"STORAGE_{backend_id}_{operation}_FAILED"
    assert exc.domain == domain
    assert exc.category == "THIRD_PARTY"
    for text in (str(exc), repr(exc), repr(exc.details)):
        assert APP_PASSWORD not in text
    assert ":***@" in str(exc)
    assert store.backend.display_url in str(exc)
    assert exc.details["url"] == store.backend.display_url


def calls_per_domain(store: WholeStore, tag: str) -> list[tuple[str, str, Callable[[], Any]]]:
    """A read and a write of every domain the store holds: ``(domain, OPERATION, call)``."""
    memory, workflows = store.get_store("memory"), store.get_store("workflows")
    scores, observability = store.get_store("scores"), store.get_store("observability")
    calls = [
        ("memory", "GET_THREAD_BY_ID", lambda: memory.get_thread_by_id(thread_id=f"{tag}-thread")),
        ("memory", "SAVE_MESSAGES", lambda: memory.save_messages(
            messages=[R.message(f"{tag}-outage-message", f"{tag}-thread")])),
        ("workflows", "LOAD_WORKFLOW_SNAPSHOT", lambda: workflows.load_workflow_snapshot(
            workflow_name=tag, run_id="run-0")),
        ("workflows", "UPDATE_WORKFLOW_RESULTS", lambda: workflows.update_workflow_results(
            workflow_name=tag, run_id="run-0", step_id="outage", result={"status": "success", "payload": {}})),
        ("scores", "SAVE_SCORE", lambda: scores.save_score(score=R.score(f"{tag}-outage-score"))),
        ("scores", "LIST_SCORES_BY_RUN_ID", lambda: scores.list_scores_by_run_id(run_id=f"{tag}-run")),
        ("observability", "BATCH_CREATE_SPANS", lambda: observability.batch_create_spans(
            records=[R.span(f"{tag}-outage-trace", "root")])),
        ("observability", "LIST_TRACES", lambda: observability.list_traces()),
    ]
    if "agents" in store.domains:
        agents, datasets, experiments = store.get_store("agents"), store.get_store("datasets"), \
            store.get_store("experiments")
        calls += [
            ("agents", "CREATE_AGENT", lambda: agents.create_agent(agent=R.agent(f"{tag}-outage-agent"))),
            ("agents", "LIST_AGENTS", lambda: agents.list_agents()),
            ("datasets", "ADD_ITEM", lambda: datasets.add_item(dataset_id=f"{tag}-dataset", input={"q": "outage"})),
            ("datasets", "LIST_ITEMS", lambda: datasets.list_items(dataset_id=f"{tag}-dataset")),
            ("experiments", "INCREMENT_EXPERIMENT_COUNTERS", lambda: experiments.increment_experiment_counters(
                id=f"{tag}-experiment", succeeded=1)),
            ("experiments", "GET_EXPERIMENT_BY_ID", lambda: experiments.get_experiment_by_id(id=f"{tag}-experiment")),
        ]
    return calls


def write_records(store: WholeStore, tag: str) -> None:
    """Acknowledged writes in every domain, checked by :func:`check_records` after a restart."""
    store.get_store("memory").save_thread(thread=R.thread(f"{tag}-thread"))
    store.get_store("memory").save_messages(messages=[R.message(f"{tag}-m{k}", f"{tag}-thread") for k in range(BATCH)])
    store.get_store("workflows").persist_workflow_snapshot(workflow_name=tag, run_id="run-0",
                                                           snapshot=R.snapshot("run-0"))
    store.get_store("scores").save_scores(scores=[R.score(f"{tag}-s{k}", run_id=f"{tag}-run") for k in range(BATCH)])
    store.get_store("observability").batch_create_spans(
        records=[R.span(f"{tag}-trace", f"s{k}", None if k == 0 else "s0") for k in range(BATCH)])
    if "agents" in store.domains:
        store.get_store("agents").create_agent(agent=R.agent(f"{tag}-agent"))
        store.get_store("datasets").create_dataset(**R.dataset(f"{tag}-dataset"))
        store.get_store("datasets").batch_insert_items(dataset_id=f"{tag}-dataset",
                                                       items=[R.item(external_id=f"x{k}") for k in range(BATCH)])
        store.get_store("experiments").create_experiment(**R.experiment(f"{tag}-experiment"))


def check_records(store: WholeStore, tag: str) -> None:
    """Everything :func:`write_records` wrote is there, exactly once."""
    memory = store.get_store("memory")
    assert memory.get_thread_by_id(thread_id=f"{tag}-thread") is not None
    assert memory.list_messages(thread_id=f"{tag}-thread", per_page=0).total == BATCH
    assert store.get_store("workflows").load_workflow_snapshot(workflow_name=tag, run_id="run-0")["runId"] == "run-0"
    assert store.get_store("scores").list_scores_by_run_id(run_id=f"{tag}-run", per_page=0).total == BATCH
    assert len(store.get_store("observability").get_trace(trace_id=f"{tag}-trace")["spans"]) == BATCH
    if "agents" in store.domains:
        assert store.get_store("agents").get_agent_by_id(id=f"{tag}-agent") is not None
        assert store.get_store("datasets").list_items(dataset_id=f"{tag}-dataset", per_page=0).total == BATCH
        assert store.get_store("experiments").get_experiment_by_id(id=f"{tag}-experiment") is not None


def retry_batches(store: WholeStore, tag: str) -> None:
    """Send the id-keyed batches of :func:`write_records` again."""
    store.get_store("memory").save_messages(messages=[R.message(f"{tag}-m{k}", f"{tag}-thread") for k in range(BATCH)])
    store.get_store("scores").save_scores(scores=[R.score(f"{tag}-s{k}", run_id=f"{tag}-run") for k in range(BATCH)])
    store.get_store("observability").batch_create_spans(
        records=[R.span(f"{tag}-trace", f"s{k}", None if k == 0 else "s0") for k in range(BATCH)])
    if "agents" in store.domains:
        store.get_store("datasets").batch_insert_items(dataset_id=f"{tag}-dataset",
                                                       items=[R.item(external_id=f"x{k}") for k in range(BATCH)])


def outage_then_restart(store: WholeStore, backend_id: str, stop: Callable[[], None], start: Callable[[], None]) -> None:
    """Acknowledged writes; stop the server; every call fails as unavailable; restart; every call
    succeeds on the same store object, the writes are all there, retried batches add nothing."""
    store.init()
    tag = f"outage-{time.time_ns()}"
    write_records(store, tag)
    rows_before = {domain: store.get_store(domain).count_rows() for domain in store.domains}
    stop()
    try:
        for domain, operation, call in calls_per_domain(store, tag):
            with pytest.raises(BackendUnavailableError) as caught:
                call()
            assert_unavailable(caught.value, store, backend_id, operation, domain)
    finally:
        start()
    # The same store object, without any new setup: every call works again.
    check_records(store, tag)
    assert {domain: store.get_store(domain).count_rows() for domain in store.domains} == rows_before
    retry_batches(store, tag)
    assert {domain: store.get_store(domain).count_rows() for domain in store.domains} == rows_before
    # The calls that failed during the outage now succeed.
    for _domain, _operation, call in calls_per_domain(store, tag):
        call()


# --------------------------------------------------------------------------- a run through a crash

@dataclass
class Batch:
    """One id-keyed write of a writer thread."""

    kind: str
    writer: int
    number: int
    started: float = 0.0
    error: BaseException | None = None

    def ids(self, tag: str) -> list[str]:
        return [f"{tag}-w{self.writer}-b{self.number}-{k}" for k in range(BATCH)]

    def key(self, tag: str) -> str:
        """The run id (scores) or trace id (spans) of this batch alone."""
        return f"{tag}-w{self.writer}-b{self.number}"


@dataclass
class Run:
    """Writer threads that keep sending id-keyed batches while the server goes down and up."""

    store: WholeStore
    tag: str
    acked: list[Batch] = field(default_factory=list)
    failed: list[Batch] = field(default_factory=list)
    stop_writing: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    KINDS = ("messages", "scores", "spans")

    def send(self, batch: Batch) -> None:
        ids, key = batch.ids(self.tag), batch.key(self.tag)
        if batch.kind == "messages":
            self.store.get_store("memory").save_messages(
                messages=[R.message(i, f"{self.tag}-thread-{batch.writer}") for i in ids])
        elif batch.kind == "scores":
            self.store.get_store("scores").save_scores(scores=[R.score(i, run_id=key) for i in ids])
        else:
            self.store.get_store("observability").batch_create_spans(
                records=[R.span(key, i, None if n == 0 else ids[0], root_entity_id=self.tag)
                         for n, i in enumerate(ids)])

    def present(self, batch: Batch) -> int:
        """How many rows of ``batch`` are stored."""
        if batch.kind == "messages":
            return len(self.store.get_store("memory").list_messages_by_id(message_ids=batch.ids(self.tag)))
        if batch.kind == "scores":
            return self.store.get_store("scores").list_scores_by_run_id(run_id=batch.key(self.tag), per_page=0).total
        trace = self.store.get_store("observability").get_trace(trace_id=batch.key(self.tag))
        return 0 if trace is None else len(trace["spans"])

    def writer(self, writer: int) -> None:
        number = 0
        while not self.stop_writing.is_set():
            batch = Batch(self.KINDS[number % len(self.KINDS)], writer, number, time.monotonic())
            number += 1
            try:
                self.send(batch)
            except Exception as exc:  # noqa: BLE001 - checked by the test
                batch.error = exc
                time.sleep(0.1)  # an outage: do not spin
            with self.lock:
                (self.failed if batch.error else self.acked).append(batch)

    def acks_since(self, moment: float) -> int:
        with self.lock:
            return sum(batch.started >= moment for batch in self.acked)

    def wait_for(self, condition: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "the writers made no progress"
            time.sleep(0.01)


def crash_in_the_middle_of_a_run(store: WholeStore, backend_id: str, crash: Callable[[], None],
                                 start: Callable[[], None]) -> None:
    """Writers run; the server crashes and comes back; afterwards every acknowledged batch is
    there, no batch is partial, every failure was "unavailable", calls started after the restart
    all succeeded, and retrying the failed batches adds each row exactly once."""
    store.init()
    tag = f"crash-{time.time_ns()}"
    memory = store.get_store("memory")
    for writer in range(WRITERS):
        memory.save_thread(thread=R.thread(f"{tag}-thread-{writer}"))
    scores_before = store.get_store("scores").count_rows()["mastra_scorers"]
    spans = R.span_table(store.get_store("observability"))
    spans_before = store.get_store("observability").count_rows()[spans]
    run = Run(store, tag)
    threads = [threading.Thread(target=run.writer, args=(w,), daemon=True) for w in range(WRITERS)]
    for thread in threads:
        thread.start()
    try:
        run.wait_for(lambda: run.acks_since(0) >= 3 * WRITERS)
        crash()
        crashed = time.monotonic()
        run.wait_for(lambda: sum(batch.started >= crashed for batch in run.failed) >= WRITERS)
        start()
        restarted = time.monotonic()
        run.wait_for(lambda: run.acks_since(restarted) >= 3 * WRITERS)
    finally:
        run.stop_writing.set()
        for thread in threads:
            thread.join(60)

    for batch in run.failed:
        operation = {"messages": ("SAVE_MESSAGES", "memory"), "scores": ("SAVE_SCORES", "scores"),
                     "spans": ("BATCH_CREATE_SPANS", "observability")}[batch.kind]
        assert_unavailable(batch.error, store, backend_id, *operation)
        assert batch.started < restarted, f"a call started after the restart failed: {batch.error!r}"
    for batch in run.acked:
        assert run.present(batch) == BATCH, f"acknowledged {batch} is missing rows"
    for batch in run.failed:
        assert run.present(batch) in (0, BATCH), f"{batch} is partially stored"
    # Retrying every failed batch (and, once more, the last acknowledged ones) converges on one copy.
    for batch in run.failed + run.acked[-3 * WRITERS:]:
        run.send(batch)
    totals = {"messages": 0, "scores": 0, "spans": 0}
    for batch in run.failed + run.acked:
        assert run.present(batch) == BATCH
        totals[batch.kind] += BATCH
    assert sum(memory.list_messages(thread_id=f"{tag}-thread-{w}", per_page=0).total
               for w in range(WRITERS)) == totals["messages"]
    assert store.get_store("scores").count_rows()["mastra_scorers"] == scores_before + totals["scores"]
    traces = store.get_store("observability").list_traces(filters={"root_entity_id": tag}, per_page=0)
    assert traces.total * BATCH == totals["spans"]
    assert store.get_store("observability").count_rows()[spans] == spans_before + totals["spans"]


# --------------------------------------------------------------------------- PostgreSQL

def test_postgres_outage_is_unavailable_with_masked_password_then_recovers(postgres_cluster):
    """Server stopped: every call of every domain raises BackendUnavailableError (password
    masked); restarted: the same store works, acknowledged writes are there, retries add nothing."""
    with PostgresStore(connection_string=postgres_cluster.url) as store:
        outage_then_restart(store, "PG", lambda: postgres_cluster.stop("fast"), postgres_cluster.start)


def test_postgres_crash_in_the_middle_of_a_run(postgres_cluster):
    """Writers keep going through a crash (``pg_ctl stop -m immediate``) and restart."""
    with PostgresStore(connection_string=postgres_cluster.url, max_connections=WRITERS) as store:
        crash_in_the_middle_of_a_run(store, "PG", lambda: postgres_cluster.stop("immediate"), postgres_cluster.start)


def test_postgres_restart_between_calls_is_invisible(postgres_cluster):
    """Pooled connections left dead by a restart are replaced: the next call just works."""
    with PostgresStore(connection_string=postgres_cluster.url) as store:
        store.init()
        tag = f"between-{time.time_ns()}"
        write_records(store, tag)  # leaves idle connections in the pool
        postgres_cluster.stop("fast")
        postgres_cluster.start()
        check_records(store, tag)


# --------------------------------------------------------------------------- ClickHouse

def test_clickhouse_restart_between_calls_reconnects_and_detects_again(fault_clickhouse):
    """The thread's connection, dead after a restart, reconnects on the next call, and the
    server's features are detected again (a restart may have upgraded it)."""
    with ClickHouseStore(url=fault_clickhouse.app_url) as store:
        store.init()
        tag = f"between-{time.time_ns()}"
        write_records(store, tag)
        detected = store.backend.server_features
        fault_clickhouse.stop()
        fault_clickhouse.start()
        check_records(store, tag)
        assert store.backend.server_features is not detected
        assert store.backend.server_features.version == detected.version
        assert store.backend.server_features.columns == detected.columns


def test_clickhouse_outage_is_unavailable_with_masked_password_then_recovers(fault_clickhouse):
    """As for PostgreSQL, on a ClickHouse server stopped and started again."""
    with ClickHouseStore(url=fault_clickhouse.app_url) as store:
        outage_then_restart(store, "CLICKHOUSE", fault_clickhouse.stop, fault_clickhouse.start)


def test_clickhouse_crash_in_the_middle_of_a_run(fault_clickhouse):
    """Writers keep going through a SIGKILL of the server and its restart."""
    with ClickHouseStore(url=fault_clickhouse.app_url) as store:
        crash_in_the_middle_of_a_run(store, "CLICKHOUSE", fault_clickhouse.kill, fault_clickhouse.start)


# --------------------------------------------------------------------------- SQLite: a killed process

#: The child process: open the store, build one big batch, report, write it, report.
CHILD = r"""
import sys
from composite_store.sqlite import SQLiteStore
from tests.reliability import records as R

url, kind, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = SQLiteStore(url=url)
if kind == "messages":
    batch = [R.message(f"big-{k}", "big-thread", content="x" * 200) for k in range(size)]
    write = lambda: store.get_store("memory").save_messages(messages=batch)
elif kind == "scores":
    batch = [R.score(f"big-{k}", reason="x" * 200) for k in range(size)]
    write = lambda: store.get_store("scores").save_scores(scores=batch)
else:
    batch = [R.span("big-trace", f"big-{k}", None if k == 0 else "big-0", input="x" * 200) for k in range(size)]
    write = lambda: store.get_store("observability").batch_create_spans(records=batch)
print("writing", flush=True)
write()
print("done", flush=True)
"""

BIG_BATCHES = {"messages": ("memory", "mastra_messages", 50_000), "scores": ("scores", "mastra_scorers", 20_000),
               "spans": ("observability", "mastra_ai_spans", 20_000)}


@pytest.mark.parametrize("kind", list(BIG_BATCHES))
def test_sigkill_during_a_sqlite_batch_leaves_no_partial_batch(kind, tmp_path):
    """A process killed (SIGKILL) while it writes one big batch leaves the database as it was
    before the batch: SQLite's WAL discards the uncommitted frames."""
    domain, table, size = BIG_BATCHES[kind]
    path = tmp_path / "killed.db"
    url = f"sqlite:///{path}"
    with SQLiteStore(url=url) as store:
        store.init()
        store.get_store("memory").save_thread(thread=R.thread("big-thread"))
        store.get_store("memory").save_messages(messages=[R.message(f"small-{k}", "big-thread") for k in range(3)])
        store.get_store("scores").save_scores(scores=[R.score(f"small-{k}") for k in range(3)])
        store.get_store("observability").batch_create_spans(records=[R.span("small", f"s{k}") for k in range(3)])
        before = store.get_store(domain).count_rows()
    wal = Path(f"{path}-wal")
    root = Path(__file__).resolve().parents[2]
    child = subprocess.Popen([sys.executable, "-c", CHILD, url, kind, str(size)], cwd=root,
                             env={**os.environ, "PYTHONPATH": str(root)}, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "writing"
        wal_at_start = wal.stat().st_size if wal.exists() else 0
        # The transaction spills pages to the WAL long before it commits: kill once it has.
        deadline = time.monotonic() + 120
        while (wal.stat().st_size if wal.exists() else 0) < wal_at_start + 2_000_000:
            assert child.poll() is None, "the child finished before it could be killed; use a bigger batch"
            assert time.monotonic() < deadline, "the batch never reached the WAL"
            time.sleep(0.002)
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        rest = child.stdout.read()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert "done" not in rest, "the batch committed before the kill"
    assert wal.stat().st_size > wal_at_start, "uncommitted frames were written"
    with SQLiteStore(url=url) as store:
        assert store.get_store(domain).count_rows() == before
        # The database is healthy: the same batch can be written afterwards.
        store.get_store("memory").save_messages(messages=[R.message("after", "big-thread")])
        assert store.get_store("memory").list_messages_by_id(message_ids=["after"])[0]["id"] == "after"
    assert table in before
