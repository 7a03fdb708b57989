"""The demo scenario: one afternoon of a customer-support agent application.

:func:`run_demo` writes, through the public API only, what such an application produces: users
chatting in threads with working memory (memory), a refund workflow that suspends for a human
approval and is resumed from its snapshot (workflows), a trace of every run with model and tool
spans (observability), scorer verdicts on the answers (scores), a stored agent with two versions
(agents), a small dataset (datasets) and an experiment over it (experiments).  It returns a
:class:`DemoReport` that :func:`render_report` turns into readable text.

Every run uses fresh ids, so the demo can run again on the same database.  A domain that the
store does not provide is skipped (and named in the report).
"""

from __future__ import annotations

import logging
import random
import textwrap
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable

from .composite import CompositeStore
from .stores import DOMAINS

logger = logging.getLogger("composite_store.demo")

#: Database of ``composite-store demo`` without ``--url``: a file in the current directory.
DEMO_URL = "sqlite:///composite-store-demo.db"

#: The parts of the scenario, in the order they run (``on_section`` is called after each).
SECTIONS = ("agent", "conversations", "workflow", "dataset", "experiment")

UTC = timezone.utc
SERVICE = "support-app"


# --------------------------------------------------------------------------- the script

@dataclass(frozen=True)
class Turn:
    """One question and answer; ``tool`` is ``(name, arguments, result)`` when the agent used one."""

    question: str
    answer: str
    tool: tuple[str, dict[str, Any], Any] | None = None


@dataclass(frozen=True)
class Conversation:
    """One thread of one user."""

    user: str
    title: str
    turns: tuple[Turn, ...]


USERS = {
    "alice": "# Alice\n- prefers short answers\n- open order: #1042 (headphones)",
    "bob": "# Bob\n- business customer, invoices to bob@example.com",
    "carol": "# Carol\n- writes in English, lives in Lisbon",
}

CONVERSATIONS = (
    Conversation("alice", "Order #1042 has not arrived", (
        Turn("Hi! My order #1042 should have arrived yesterday. Where is it?",
             "Order #1042 is in transit with DHL and should reach you tomorrow before noon.",
             ("lookup_order", {"order_id": "1042"}, {"status": "in_transit", "carrier": "DHL", "eta": "tomorrow"})),
        Turn("Can I get a refund if it is late again?",
             "Yes: if it is not there by tomorrow evening, I can start a refund of 59.90 EUR for you."),
        Turn("It did not come. Please refund it.",
             "I have started the refund of 59.90 EUR; a supervisor approves refunds above 50 EUR.",
             ("start_refund", {"order_id": "1042", "amount": 59.9}, {"workflow": "refund-approval"})),
    )),
    Conversation("bob", "Invoice for March", (
        Turn("I need the invoice for my March orders.",
             "I found 3 orders in March and sent one combined invoice to bob@example.com.",
             ("send_invoice", {"month": "2026-03", "email": "bob@example.com"}, {"orders": 3, "sent": True})),
        Turn("Thanks. Can it show our VAT number?",
             "Yes. Add the VAT number in your account settings and I will send the invoice again."),
    )),
    Conversation("carol", "Shipping to Portugal", (
        Turn("Do you ship to Portugal?",
             "Yes, we ship to Portugal; delivery takes 3 to 5 working days.",
             ("shipping_rates", {"country": "PT"}, {"days": "3-5", "price_eur": 6.5})),
        Turn("How much does it cost?", "Shipping to Portugal costs 6.50 EUR, and it is free above 50 EUR."),
    )),
    Conversation("carol", "Change delivery address", (
        Turn("Can I change the address of order #2077?",
             "Order #2077 has not shipped yet, so I changed its address to the one you gave me.",
             ("update_address", {"order_id": "2077"}, {"updated": True})),
    )),
)

FAQ = (
    ("How long does shipping to Portugal take?", "3 to 5 working days", "3 to 5 working days."),
    ("Is shipping free above 50 EUR?", "Yes", "Yes, shipping is free above 50 EUR."),
    ("Can I change my delivery address after ordering?", "Yes, before the order ships",
     "Yes, as long as the order has not shipped."),
    ("Who approves refunds above 50 EUR?", "A supervisor", None),  # the agent times out on this one
)

SCORERS = {
    "answer-relevancy": ("Answer relevancy", "How well the answer addresses the question (0-1)."),
    "toxicity": ("Toxicity", "Share of the answer that is toxic (0-1, lower is better)."),
    "tool-call-accuracy": ("Tool call accuracy", "1 when the agent called the right tool."),
    "answer-correctness": ("Answer correctness", "Agreement with the dataset's ground truth (0-1)."),
}


# --------------------------------------------------------------------------- the report

@dataclass
class DemoReport:
    """What one demo run wrote and read back; :func:`render_report` prints it."""

    database: str
    written: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    conversation: dict[str, Any] | None = None
    trace: dict[str, Any] | None = None
    scores: list[dict[str, Any]] | None = None
    workflow: dict[str, Any] | None = None
    agent: dict[str, Any] | None = None
    dataset: dict[str, Any] | None = None
    experiment: dict[str, Any] | None = None


# --------------------------------------------------------------------------- helpers

class Clock:
    """Simulated time: the afternoon starts at 13:00 UTC of the latest day on which that is past."""

    def __init__(self, rng: random.Random) -> None:
        now = datetime.now(UTC)
        start = now.replace(hour=13, minute=0, second=0, microsecond=0)
        self.now = start if start < now - timedelta(hours=1) else start - timedelta(days=1)
        self.rng = rng

    def advance(self, low: float, high: float | None = None) -> datetime:
        """Move on by ``low`` seconds (or a random time between ``low`` and ``high``)."""
        seconds = low if high is None else self.rng.uniform(low, high)
        self.now += timedelta(milliseconds=int(seconds * 1000))
        return self.now


def _hex(bits: int) -> str:
    return uuid.uuid4().hex[: bits // 4]


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _text(message: dict[str, Any]) -> str:
    content = message["content"]
    if isinstance(content.get("content"), str):
        return content["content"]
    return " ".join(part.get("text", "") for part in content.get("parts", []) if isinstance(part, dict))


class Demo:
    """One run of the scenario against a composite store."""

    def __init__(self, storage: CompositeStore, tag: str) -> None:
        self.tag = tag
        self.rng = random.Random(tag)
        self.clock = Clock(self.rng)
        self.memory = storage.get_store("memory")
        self.workflows = storage.get_store("workflows")
        self.scores = storage.get_store("scores")
        self.observability = storage.get_store("observability")
        self.agents = storage.get_store("agents")
        self.datasets = storage.get_store("datasets")
        self.experiments = storage.get_store("experiments")
        any_store = next(repo for repo in (self.memory, self.workflows, self.scores, self.observability,
                                           self.agents, self.datasets, self.experiments) if repo is not None)
        self.report = DemoReport(database=any_store.backend.display_url)
        for key in DOMAINS:
            if getattr(self, key) is None:
                self.report.skipped.append(key)
        # The agent as the application runs it (stored in the agents domain when there is one).
        self.agent_id = f"support-agent-{tag}"
        self.agent_name = "Support agent"
        self.agent_version_id: str | None = None
        self.model = {"provider": "openai", "name": "gpt-4o-mini"}
        self.run_ids: list[str] = []
        # The FAQ as the experiment sees it: built-in, or the stored dataset items once written.
        self.faq_items: list[dict[str, Any]] = [
            {"id": f"faq-{index}", "input": {"question": question}, "ground_truth": {"answer": truth},
             "dataset_version": None}
            for index, (question, truth, _) in enumerate(FAQ, start=1)]
        self.dataset_id: str | None = None
        self.dataset_version: int | None = None
        self.span_count = 0
        self.trace_count = 0
        self.score_count = 0

    def user_id(self, name: str) -> str:
        """The resource id of a user in this run."""
        return f"{name}-{self.tag}"

    # ----------------------------------------------------------------------- agents

    def agent(self) -> None:
        """Store the support agent, add a second version and publish it."""
        if self.agents is None:
            return
        instructions = "You are the support agent of a web shop. Be brief and friendly."
        self.agents.create(agent={
            "id": self.agent_id, "name": self.agent_name, "instructions": instructions,
            "model": {"provider": "openai", "name": "gpt-4o-mini"}, "author_id": "demo",
            "metadata": {"team": "support", "demo_run": self.tag},
        })
        second = self.agents.create_version(
            agent_id=self.agent_id, version_number=2, name=self.agent_name,
            instructions=[{"type": "text", "content": instructions},
                          {"type": "text", "content": "Use the order tools before answering about an order."}],
            model={"provider": "openai", "name": "gpt-4o", "temperature": 0.2},
            tools={name: {} for name in ("lookup_order", "start_refund", "send_invoice", "shipping_rates",
                                         "update_address")},
            changed_fields=["instructions", "model", "tools"], change_message="Bigger model and the order tools")
        self.agents.update(id=self.agent_id, active_version_id=second["id"], status="published")
        resolved = self.agents.get_by_id_resolved(id=self.agent_id)
        self.agent_version_id = resolved["resolved_version_id"]
        self.model = {"provider": resolved["model"]["provider"], "name": resolved["model"]["name"]}
        versions = self.agents.list_versions(agent_id=self.agent_id, order_by={"field": "version_number",
                                                                               "direction": "ASC"})
        self.report.agent = {
            "id": self.agent_id, "status": resolved["status"], "active_version_id": resolved["active_version_id"],
            "versions": [{"number": v["version_number"], "id": v["id"], "model": v["model"]["name"],
                          "tools": sorted(v["tools"] or {}), "message": v["change_message"]}
                         for v in versions.items],
        }
        self.report.written["agents"] = f"1 agent, {versions.total} versions"

    # ----------------------------------------------------------------------- traces

    def _span(self, trace_id: str, parent: str | None, name: str, span_type: str, started: datetime,
              ended: datetime, **extra: Any) -> dict[str, Any]:
        span = {"trace_id": trace_id, "span_id": _hex(64), "parent_span_id": parent, "name": name,
                "span_type": span_type, "started_at": started, "ended_at": ended, "environment": "demo",
                "service_name": SERVICE}
        span.update(extra)
        return span

    def _agent_run_spans(self, *, question: str, answer: str | None, tool: tuple | None,
                         correlation: dict[str, Any], error: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """The spans of one agent run starting now: model call, optional tool call, model call."""
        trace_id = _hex(128)
        started = self.clock.now
        root = self._span(trace_id, None, f"agent run: '{self.agent_id}'", "agent_run", started, started,
                          entity_type="agent", entity_id=self.agent_id, entity_name=self.agent_name,
                          entity_version_id=self.agent_version_id, input=question, output=answer,
                          tags=["demo", self.tag], metadata={"demo_run": self.tag}, **correlation)
        entity = {"parent_entity_type": "agent", "parent_entity_id": self.agent_id,
                  "root_entity_type": "agent", "root_entity_id": self.agent_id}
        spans = [root]

        def model_call(output: Any) -> None:
            begin = self.clock.advance(0.005, 0.02)
            end = self.clock.advance(0.6, 1.8)
            usage = {"inputTokens": self.rng.randint(250, 900), "outputTokens": self.rng.randint(20, 90)}
            spans.append(self._span(trace_id, root["span_id"], f"llm: '{self.model['name']}'", "model_generation",
                                    begin, end, attributes={"model": self.model["name"],
                                                            "provider": self.model["provider"], "usage": usage},
                                    input=question, output=output, **entity))

        if tool is not None:
            name, arguments, result = tool
            model_call({"toolCalls": [{"toolName": name, "args": arguments}]})
            begin = self.clock.advance(0.005, 0.02)
            end = self.clock.advance(0.05, 0.4) if error is None else self.clock.advance(30)
            spans.append(self._span(trace_id, root["span_id"], f"tool: '{name}'", "tool_call", begin, end,
                                    entity_type="tool", entity_id=name, entity_name=name,
                                    attributes={"toolType": "function"}, input=arguments,
                                    output=result if error is None else None, error=error, **entity))
        if error is None:
            model_call(answer)
        root["ended_at"] = self.clock.advance(0.01, 0.03)
        root["error"] = error
        self._write_trace(spans)
        return spans

    def _write_trace(self, spans: list[dict[str, Any]]) -> None:
        """Write a trace the way the backend prefers: complete spans, or created then completed."""
        if self.observability is None:
            return
        if self.observability.observability_strategy["preferred"] == "insert-only":
            self.observability.batch_create_spans(records=spans)
        else:
            finals = ("ended_at", "output", "error")
            self.observability.batch_create_spans(
                records=[{k: v for k, v in span.items() if k not in finals} for span in spans])
            self.observability.batch_update_spans(records=[
                {"trace_id": span["trace_id"], "span_id": span["span_id"],
                 "updates": {k: span[k] for k in finals if span.get(k) is not None}} for span in spans])
        self.span_count += len(spans)
        self.trace_count += 1

    # ----------------------------------------------------------------------- scores

    def _score(self, scorer_id: str, value: float, reason: str, *, root: dict[str, Any], question: str,
               answer: str | None, source: str = "LIVE", **extra: Any) -> None:
        if self.scores is None:
            return
        name, description = SCORERS[scorer_id]
        self.scores.save_score(score={
            "id": str(uuid.uuid4()), "scorer_id": scorer_id,
            "scorer": {"id": scorer_id, "name": name, "description": description},
            "run_id": root["run_id"], "trace_id": root["trace_id"], "span_id": root["span_id"],
            "entity_type": "AGENT", "entity_id": self.agent_id,
            "entity": {"id": self.agent_id, "name": self.agent_name},
            "source": source, "score": round(value, 3), "reason": reason,
            "input": {"question": question}, "output": answer, "metadata": {"demo_run": self.tag}, **extra,
        })
        self.score_count += 1

    # ----------------------------------------------------------------------- memory

    def conversations(self) -> None:
        """Users chat with the agent: threads, messages, working memory, a trace and scores per turn."""
        threads: list[dict[str, Any]] = []
        message_count = 0
        for user, working_memory in USERS.items():
            if self.memory is not None:
                self.memory.update_resource(resource_id=self.user_id(user), working_memory=working_memory,
                                            metadata={"display_name": user.title()})
        for conversation in CONVERSATIONS:
            resource_id = self.user_id(conversation.user)
            thread_id = f"thread-{_hex(64)}-{self.tag}"
            self.clock.advance(300, 1500)
            if self.memory is not None:
                threads.append(self.memory.save_thread(thread={
                    "id": thread_id, "resource_id": resource_id, "title": conversation.title,
                    "metadata": {"channel": "web", "demo_run": self.tag}, "created_at": self.clock.now}))
            for turn in conversation.turns:
                asked = self.clock.advance(20, 90)
                run_id = str(uuid.uuid4())
                self.run_ids.append(run_id)
                correlation = {"run_id": run_id, "thread_id": thread_id, "resource_id": resource_id,
                               "user_id": resource_id, "session_id": f"session-{thread_id}"}
                spans = self._agent_run_spans(question=turn.question, answer=turn.answer, tool=turn.tool,
                                              correlation=correlation)
                answered = spans[0]["ended_at"]
                if self.memory is not None:
                    self.memory.save_messages(messages=[
                        {"id": str(uuid.uuid4()), "thread_id": thread_id, "resource_id": resource_id,
                         "role": "user", "content": turn.question, "created_at": asked},
                        {"id": str(uuid.uuid4()), "thread_id": thread_id, "resource_id": resource_id,
                         "role": "assistant", "content": {
                             "format": 2, "content": turn.answer,
                             "parts": [{"type": "text", "text": turn.answer}],
                             "metadata": {"run_id": run_id, "trace_id": spans[0]["trace_id"]}},
                         "created_at": answered},
                    ])
                    message_count += 2
                relevancy = self.rng.uniform(0.72, 0.99)
                self._score("answer-relevancy", relevancy, "The answer addresses the question directly.",
                            root=spans[0], question=turn.question, answer=turn.answer, thread_id=thread_id,
                            resource_id=resource_id)
                self._score("toxicity", self.rng.uniform(0.0, 0.04), "No toxic language found.",
                            root=spans[0], question=turn.question, answer=turn.answer, thread_id=thread_id,
                            resource_id=resource_id)
                if turn.tool is not None:
                    self._score("tool-call-accuracy", 1.0, f"Called {turn.tool[0]} as expected.",
                                root=spans[0], question=turn.question, answer=turn.answer, thread_id=thread_id,
                                resource_id=resource_id)
                if self.report.trace is None and turn.tool is not None and self.observability is not None:
                    self.report.trace = self.observability.get_trace(trace_id=spans[0]["trace_id"])
            if self.memory is not None and conversation.user == "alice":
                # What the agent learned goes into the user's working memory (resource scope).
                self.memory.update_resource(resource_id=resource_id,
                                            working_memory=USERS["alice"] + "\n- refund of #1042 requested")
        if self.memory is not None:
            first = threads[0]
            page = self.memory.list_messages(thread_id=first["id"], per_page=False)
            resource = self.memory.get_resource_by_id(resource_id=first["resource_id"])
            user_threads = self.memory.list_threads(resource_id=first["resource_id"])
            self.report.conversation = {"thread": first, "messages": page.items,
                                        "working_memory": resource["working_memory"],
                                        "threads_of_user": user_threads.total}
            self.report.written["memory"] = (f"{len(USERS)} users with working memory, {len(threads)} threads, "
                                             f"{message_count} messages")

    # ----------------------------------------------------------------------- workflows

    def workflow(self) -> None:
        """Alice's refund: the workflow suspends for a supervisor and is resumed from its snapshot."""
        name, run_id = "refund-approval", str(uuid.uuid4())
        resource_id = self.user_id("alice")
        self.clock.advance(30)
        if self.workflows is None:
            self._workflow_trace(run_id, ("check-order", "human-approval"))
            self.clock.advance(3600)
            self._workflow_trace(run_id, ("human-approval", "issue-refund"))
            return
        order = {"orderId": "1042", "amount": 59.9, "currency": "EUR"}
        started = self.clock.now
        self.workflows.persist_workflow_snapshot(workflow_name=name, run_id=run_id, resource_id=resource_id, snapshot={
            "runId": run_id, "status": "running", "value": {}, "context": {"input": order},
            "serializedStepGraph": [{"type": "step", "step": {"id": step}}
                                    for step in ("check-order", "human-approval", "issue-refund")],
            "activePaths": [0], "activeStepsPath": {"check-order": [0]}, "suspendedPaths": {}, "waitingPaths": {},
            "resumeLabels": {}, "requestContext": {"userId": resource_id}, "timestamp": _ms(started),
        }, created_at=started, updated_at=started)
        self._workflow_trace(run_id, ("check-order", "human-approval"))
        check_start, check_end = started, self.clock.advance(0.2, 0.6)
        self.workflows.update_workflow_results(workflow_name=name, run_id=run_id, step_id="check-order", result={
            "status": "success", "payload": order, "output": {"refundable": True, "reason": "late delivery"},
            "startedAt": _ms(check_start), "endedAt": _ms(check_end)})
        suspended_at = self.clock.advance(0.05, 0.1)
        self.workflows.update_workflow_results(workflow_name=name, run_id=run_id, step_id="human-approval", result={
            "status": "suspended", "payload": order, "startedAt": _ms(suspended_at), "suspendedAt": _ms(suspended_at),
            "suspendPayload": {"reason": "refunds above 50 EUR need a supervisor"}})
        self.workflows.update_workflow_state(workflow_name=name, run_id=run_id, status="suspended",
                                             suspended_paths={"human-approval": [1]}, active_paths=[],
                                             resume_labels={"approve": {"stepId": "human-approval"}})

        # An hour later, after a restart: the engine finds the suspended run and resumes it.
        self.clock.advance(3600)
        waiting = self.workflows.list_workflow_runs(workflow_name=name, status="suspended", resource_id=resource_id)
        snapshot = self.workflows.load_workflow_snapshot(workflow_name=name, run_id=waiting.items[0]["run_id"])
        step_id = next(iter(snapshot["suspendedPaths"]))
        resumed_at = self.clock.advance(0.01)
        self._workflow_trace(run_id, ("human-approval", "issue-refund"))
        self.workflows.update_workflow_results(workflow_name=name, run_id=run_id, step_id=step_id, result={
            **snapshot["context"][step_id], "status": "success", "resumedAt": _ms(resumed_at),
            "resumePayload": {"approved": True, "by": "supervisor-7"}, "output": {"approved": True},
            "endedAt": _ms(self.clock.advance(0.05, 0.1))})
        refund_start = self.clock.now
        self.workflows.update_workflow_results(workflow_name=name, run_id=run_id, step_id="issue-refund", result={
            "status": "success", "payload": order, "output": {"refundId": f"rf-{self.tag}", "amount": 59.9},
            "startedAt": _ms(refund_start), "endedAt": _ms(self.clock.advance(0.3, 0.9))})
        final = self.workflows.update_workflow_state(
            workflow_name=name, run_id=run_id, status="success", result={"refundId": f"rf-{self.tag}"},
            suspended_paths={}, expected_status="suspended")
        run = self.workflows.get_workflow_run_by_id(run_id=run_id, workflow_name=name)
        self.report.workflow = {
            "name": name, "run_id": run_id, "status": final["status"], "result": final["result"],
            "created_at": run["created_at"], "updated_at": run["updated_at"], "suspended_at": suspended_at,
            "resumed_at": resumed_at, "steps": [(step, final["context"][step]["status"])
                                                for step in ("check-order", "human-approval", "issue-refund")],
        }
        self.report.written["workflows"] = "1 run: suspended for approval, resumed an hour later"

    def _workflow_trace(self, run_id: str, steps: Iterable[str]) -> None:
        trace_id = _hex(128)
        started = self.clock.now
        root = self._span(trace_id, None, "workflow run: 'refund-approval'", "workflow_run", started, started,
                          entity_type="workflow_run", entity_id="refund-approval", entity_name="refund-approval",
                          run_id=run_id, resource_id=self.user_id("alice"), tags=["demo", self.tag],
                          metadata={"demo_run": self.tag})
        spans = [root]
        for step in steps:
            begin = self.clock.advance(0.005, 0.02)
            end = self.clock.advance(0.1, 0.5)
            spans.append(self._span(trace_id, root["span_id"], f"workflow step: '{step}'", "workflow_step", begin,
                                    end, entity_type="workflow_step", entity_id=step, entity_name=step,
                                    run_id=run_id))
        root["ended_at"] = self.clock.advance(0.01)
        self._write_trace(spans)

    # ----------------------------------------------------------------------- datasets

    def dataset(self) -> None:
        """A small FAQ dataset; one ground truth is corrected, which makes version 2."""
        if self.datasets is None:
            return
        dataset = self.datasets.create_dataset(
            name="Support FAQ", description="Questions customers ask, with the expected answers.",
            metadata={"demo_run": self.tag}, target_type="agent", target_ids=[self.agent_id],
            scorer_ids=["answer-correctness"],
            input_schema={"type": "object", "properties": {"question": {"type": "string"}},
                          "required": ["question"]},
            ground_truth_schema={"type": "object", "properties": {"answer": {"type": "string"}}})
        items = self.datasets.batch_insert_items(dataset_id=dataset["id"], items=[
            {"external_id": f"faq-{index}", "input": item["input"],
             "ground_truth": {"answer": "3 to 7 working days"} if index == 1 else item["ground_truth"],
             "source": {"type": "json", "referenceId": "faq.json"}}
            for index, item in enumerate(self.faq_items, start=1)])
        # The first answer was wrong: fix it (every item change is a new dataset version).
        fixed = self.datasets.update_item(id=items[0]["id"], dataset_id=dataset["id"],
                                          ground_truth=self.faq_items[0]["ground_truth"])
        items[0] = fixed
        current = self.datasets.get_dataset_by_id(id=dataset["id"])
        self.dataset_id, self.dataset_version = dataset["id"], current["version"]
        self.faq_items = [{"id": item["id"], "input": item["input"], "ground_truth": item["ground_truth"],
                           "dataset_version": item["dataset_version"]} for item in items]
        versions = self.datasets.list_dataset_versions(dataset_id=dataset["id"])
        self.report.dataset = {"id": dataset["id"], "name": current["name"], "version": current["version"],
                               "corrected": fixed["input"]["question"],
                               "items": len(self.datasets.get_items_by_version(dataset_id=dataset["id"],
                                                                               version=current["version"])),
                               "versions": [v["version"] for v in versions.items]}
        self.report.written["datasets"] = f"1 dataset, {len(items)} items, {versions.total} versions"

    # ----------------------------------------------------------------------- experiments

    def experiment(self) -> None:
        """Run the agent over the dataset: one result, trace and correctness score per item."""
        experiment_id = f"exp-{self.tag}"
        self.clock.advance(1800)
        if self.experiments is not None:
            self.experiments.create_experiment(
                id=experiment_id, name="FAQ regression, agent v2", total_items=len(self.faq_items),
                dataset_id=self.dataset_id, dataset_version=self.dataset_version, target_type="agent",
                target_id=self.agent_id, agent_version=self.agent_version_id, scorer_ids=["answer-correctness"],
                metadata={"demo_run": self.tag})
            self.experiments.update_experiment(id=experiment_id, status="running", started_at=self.clock.now)
        for item, (question, _, answer) in zip(self.faq_items, FAQ, strict=True):
            run_id = str(uuid.uuid4())
            self.run_ids.append(run_id)
            started = self.clock.advance(0.1, 0.5)
            error = None if answer is not None else {"message": "Tool 'lookup_policy' timed out after 30 s",
                                                     "code": "TOOL_TIMEOUT"}
            tool = None if answer is not None else ("lookup_policy", {"topic": "refunds"}, None)
            spans = self._agent_run_spans(question=question, answer=answer, tool=tool, error=error,
                                          correlation={"run_id": run_id, "experiment_id": experiment_id})
            correctness = None
            if answer is not None:
                correctness = round(self.rng.uniform(0.8, 1.0), 3)
                self._score("answer-correctness", correctness, "Matches the expected answer.", root=spans[0],
                            question=question, answer=answer, source="TEST", dataset_id=self.dataset_id,
                            dataset_item_id=item["id"] if self.dataset_id else None)
            if self.experiments is None:
                continue
            self.experiments.add_experiment_result(
                experiment_id=experiment_id, item_id=item["id"], item_dataset_version=item["dataset_version"],
                input=item["input"], output=None if answer is None else {"answer": answer},
                ground_truth=item["ground_truth"], error=error, started_at=started,
                completed_at=spans[0]["ended_at"], trace_id=spans[0]["trace_id"],
                status="needs-review" if answer is None else None,
                metadata=None if correctness is None else {"correctness": correctness})
            self.experiments.increment_experiment_counters(id=experiment_id, succeeded=int(answer is not None),
                                                           failed=int(answer is None))
        if self.experiments is None:
            return
        self.experiments.update_experiment(id=experiment_id, status="completed", completed_at=self.clock.now)
        record = self.experiments.get_experiment_by_id(id=experiment_id)
        results = self.experiments.list_experiment_results(experiment_id=experiment_id, per_page=False)
        self.report.experiment = {"record": record, "results": results.items}
        self.report.written["experiments"] = f"1 experiment, {results.total} results"

    # ----------------------------------------------------------------------- scores summary

    def summarize(self) -> None:
        """Totals of what was written, and the score table read back per run."""
        if self.observability is not None:
            self.report.written["observability"] = f"{self.trace_count} traces, {self.span_count} spans"
        if self.scores is None:
            return
        by_scorer: dict[str, list[float]] = {}
        for run_id in self.run_ids:
            for score in self.scores.list_scores_by_run_id(run_id=run_id, per_page=False).items:
                by_scorer.setdefault(score["scorer_id"], []).append(score["score"])
        self.report.scores = [{"scorer_id": scorer_id, "name": SCORERS[scorer_id][0], "count": len(values),
                               "mean": sum(values) / len(values), "min": min(values), "max": max(values)}
                              for scorer_id, values in sorted(by_scorer.items())]
        self.report.written["scores"] = f"{self.score_count} scores from {len(by_scorer)} scorers"


def run_demo(storage: CompositeStore, *, on_section: Callable[[str], None] | None = None) -> DemoReport:
    """Run the scenario on ``storage`` (already initialized) and return the report.

    ``on_section`` is called with each name of :data:`SECTIONS` when that part is done.
    """
    demo = Demo(storage, tag=uuid.uuid4().hex[:8])
    logger.info("demo run %s on %s", demo.tag, demo.report.database)
    for name in SECTIONS:
        getattr(demo, name)()
        if on_section is not None:
            on_section(name)
    demo.summarize()
    return demo.report


# --------------------------------------------------------------------------- rendering

def _clock(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%H:%M:%S")


def _seconds(start: datetime, end: datetime | None) -> str:
    return "running" if end is None else f"{(end - start).total_seconds():.3f} s"


def _heading(title: str) -> list[str]:
    return ["", title, "-" * len(title)]


def _render_conversation(conversation: dict[str, Any]) -> list[str]:
    thread = conversation["thread"]
    lines = _heading(f"Conversation: \"{thread['title']}\" ({thread['resource_id']}, "
                     f"{conversation['threads_of_user']} thread(s))")
    for message in conversation["messages"]:
        wrapped = textwrap.wrap(_text(message), width=78) or [""]
        lines.append(f"{_clock(message['created_at'])}  {message['role']:<9}  {wrapped[0]}")
        lines.extend(f"{'':<21}{line}" for line in wrapped[1:])
    lines.append("Working memory:")
    lines.extend(f"    {line}" for line in (conversation["working_memory"] or "").splitlines())
    return lines


def _render_trace(trace: dict[str, Any]) -> list[str]:
    spans = trace["spans"]
    children: dict[str | None, list[dict[str, Any]]] = {}
    for span in spans:
        children.setdefault(span["parent_span_id"], []).append(span)
    lines = _heading(f"Trace {trace['trace_id']} ({len(spans)} spans)")
    rows: list[tuple[str, str]] = []

    def walk(span: dict[str, Any], prefix: str, last: bool, depth: int) -> None:
        branch = "" if depth == 0 else ("└─ " if last else "├─ ")
        label = f"{span['span_type']}  {span['name']}"
        usage = (span.get("attributes") or {}).get("usage")
        if usage:
            label += f"  [{usage['inputTokens']} → {usage['outputTokens']} tokens]"
        if span.get("error"):
            label += "  ERROR"
        rows.append((prefix + branch + label, _seconds(span["started_at"], span["ended_at"])))
        kids = children.get(span["span_id"], [])
        for index, kid in enumerate(kids):
            walk(kid, prefix + ("" if depth == 0 else ("   " if last else "│  ")), index == len(kids) - 1,
                 depth + 1)

    for root in children.get(None, []):
        walk(root, "", True, 0)
    width = max(len(label) for label, _ in rows)
    lines.extend(f"{label:<{width}}  {duration:>10}" for label, duration in rows)
    return lines


def _render_scores(scores: list[dict[str, Any]]) -> list[str]:
    lines = _heading("Scores per scorer")
    lines.append(f"{'scorer':<22} {'scores':>6} {'mean':>6} {'min':>6} {'max':>6}")
    for row in scores:
        lines.append(f"{row['scorer_id']:<22} {row['count']:>6} {row['mean']:>6.3f} {row['min']:>6.3f} "
                     f"{row['max']:>6.3f}")
    return lines


def _render_workflow(workflow: dict[str, Any]) -> list[str]:
    lines = _heading(f"Workflow run {workflow['name']} / {workflow['run_id']}")
    lines.append(f"started {_clock(workflow['created_at'])}, suspended {_clock(workflow['suspended_at'])} "
                 f"(waiting for a supervisor), resumed {_clock(workflow['resumed_at'])}, "
                 f"now {workflow['status']}")
    lines.append("steps: " + ", ".join(f"{step} ({status})" for step, status in workflow["steps"]))
    lines.append(f"result: {workflow['result']}")
    return lines


def _render_agent(agent: dict[str, Any]) -> list[str]:
    lines = _heading(f"Stored agent {agent['id']} ({agent['status']})")
    for version in agent["versions"]:
        active = "  <- active" if version["id"] == agent["active_version_id"] else ""
        tools = f"{len(version['tools'])} tools" if version["tools"] else "no tools"
        lines.append(f"v{version['number']}: {version['model']} with {tools}; \"{version['message']}\"{active}")
    return lines


def _render_dataset(dataset: dict[str, Any]) -> list[str]:
    lines = _heading(f"Dataset \"{dataset['name']}\" ({dataset['id']})")
    lines.append(f"version {dataset['version']} with {dataset['items']} items; versions: "
                 + ", ".join(str(v) for v in sorted(dataset["versions"])))
    lines.append(f"version 2 corrected the expected answer of \"{dataset['corrected']}\"")
    return lines


def _render_experiment(experiment: dict[str, Any]) -> list[str]:
    record = experiment["record"]
    lines = _heading(f"Experiment \"{record['name']}\" ({record['status']})")
    lines.append(f"{record['succeeded_count']} succeeded, {record['failed_count']} failed, "
                 f"{record['skipped_count']} skipped of {record['total_items']} items")
    lines.append(f"{'question':<50} {'correct':>7} {'latency':>10}  outcome")
    for result in experiment["results"]:
        question = str((result["input"] or {}).get("question", ""))
        question = question if len(question) <= 50 else question[:47] + "..."
        correctness = (result["metadata"] or {}).get("correctness")
        outcome = result["error"]["message"] if result["error"] else (result["output"] or {}).get("answer", "")
        if result["status"]:
            outcome += f" [{result['status']}]"
        lines.append(f"{question:<50} {'-' if correctness is None else f'{correctness:.3f}':>7} "
                     f"{_seconds(result['started_at'], result['completed_at']):>10}  {outcome}")
    return lines


def render_report(report: DemoReport) -> str:
    """The report as text: what was written, then one section per domain."""
    lines = [f"composite-store demo: an afternoon of a support agent, stored in {report.database}", ""]
    for key in DOMAINS:
        if key in report.written:
            lines.append(f"  {key:<14} {report.written[key]}")
    if report.skipped:
        lines.append(f"  skipped (domain not available here): {', '.join(report.skipped)}")
    if report.conversation:
        lines += _render_conversation(report.conversation)
    if report.trace:
        lines += _render_trace(report.trace)
    if report.scores:
        lines += _render_scores(report.scores)
    if report.workflow:
        lines += _render_workflow(report.workflow)
    if report.agent:
        lines += _render_agent(report.agent)
    if report.dataset:
        lines += _render_dataset(report.dataset)
    if report.experiment:
        lines += _render_experiment(report.experiment)
    return "\n".join(lines)


__all__ = ["DEMO_URL", "SECTIONS", "DemoReport", "run_demo", "render_report"]
