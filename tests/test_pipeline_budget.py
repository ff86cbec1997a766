"""A run's budget, on both managers: tokens and cost checked as results arrive, time as
a deadline on the whole flow; past it the run fails with the reason and what was queued
is cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agents.base import BudgetExceeded
from pipeline import DistributedPipelineManager, EnhancedPipelineManager, RunStatus
from pipeline.budget import budget_line
from tests.test_pipeline_dag import (
    Recorder,
    dag_spec,
)
from utils import tracing
from utils.metrics import PipelineMetrics
from utils.redis_queue.handlers import TaskContext

pytestmark = pytest.mark.timeout(60)
ManagerFactory = Callable[..., EnhancedPipelineManager]
CHAIN = {"a": [], "b": ["a"], "c": ["b"], "d": ["c"], "e": ["d"]}


class Spender(Recorder):
    """Dev subtasks that each report 1,000 tokens costing 0.01 USD."""

    async def dev(self, ctx: TaskContext) -> dict[str, Any]:
        result = await super().dev(ctx)
        usage = {"prompt_tokens": 600, "completion_tokens": 400, "cost_usd": 0.01}
        return {**result, "usage": usage}


class SpendsThenFailsOnce(Spender):
    """Each dev subtask's first attempt spends 700 tokens and fails; its retry succeeds."""

    async def dev(self, ctx: TaskContext) -> dict[str, Any]:
        if ctx.attempt == 1:
            ctx.report_tokens(700)
            raise RuntimeError("the reply could not be used")
        return await super().dev(ctx)


async def test_tokens_of_failed_attempts_count_in_the_totals_and_the_budget(
    pipeline_managers: ManagerFactory,
) -> None:
    async with pipeline_managers(SpendsThenFailsOnce(dev_seconds=0).registry()) as manager:
        result = await manager.run(dag_spec({"a": []}))
        over = await manager.run(dag_spec({"b": []}, budget={"max_tokens": 1500}))
        [record] = [r for r in result.subtasks if r.stage == "dev"]
        if isinstance(manager, DistributedPipelineManager):  # the queue keeps it per attempt
            attempts = await manager.redis_queue.get_attempts(record.task_id)
            assert [(a.attempt, a.tokens) for a in attempts] == [(1, 700)]
    assert result.status is RunStatus.SUCCEEDED, result.reasons
    assert result.usage.failed_attempt_tokens == 700
    assert result.usage.total_tokens == 1700
    assert record.attempts == 2 and record.failed_attempt_tokens == 700
    assert over.status is RunStatus.FAILED
    assert over.reasons == ["budget exceeded: 1,700 tokens used, 1,500 allowed"]


async def test_a_token_budget_stops_the_run_at_the_result_that_passes_it(
    pipeline_managers: ManagerFactory,
) -> None:
    spender = Spender(dev_seconds=0.01)
    async with pipeline_managers(spender.registry()) as manager:
        result = await manager.run(dag_spec(CHAIN, budget={"max_tokens": 2500}))
    assert result.status is RunStatus.FAILED
    assert result.reasons == ["budget exceeded: 3,000 tokens used, 2,500 allowed"]
    assert set(spender.spans) == {"a", "b", "c"}, "nothing ran past the result that passed it"
    assert result.usage.total_tokens == 3000
    assert not any(r.stage == "qa" for r in result.subtasks)


async def test_a_cost_budget_counts_usd(pipeline_managers: ManagerFactory) -> None:
    async with pipeline_managers(Spender(dev_seconds=0.01).registry()) as manager:
        result = await manager.run(dag_spec(CHAIN, budget={"max_cost_usd": 0.015}))
    assert result.status is RunStatus.FAILED
    assert result.reasons == ["budget exceeded: 0.0200 USD spent, 0.0150 allowed"]


async def test_a_time_budget_ends_the_run_and_cancels_what_was_queued(
    pipeline_managers: ManagerFactory,
) -> None:
    slow = Spender(dev_seconds=30)
    async with pipeline_managers(slow.registry()) as manager:
        started = asyncio.get_running_loop().time()
        result = await manager.run(dag_spec({"a": [], "b": []}, budget={"max_seconds": 0.5}))
        took = asyncio.get_running_loop().time() - started
        states = {
            r.subtask_id: r.state for r in (await manager.get_run(result.run_id)).subtasks.values()
        }
    assert result.status is RunStatus.FAILED
    assert result.reasons == ["budget exceeded: 0.5 s"]
    assert took < 10
    assert set(states) == {"a", "b"}


async def test_a_run_within_its_budget_is_not_disturbed(pipeline_managers: ManagerFactory) -> None:
    budget = {"max_tokens": 10_000, "max_cost_usd": 1.0, "max_seconds": 60}
    async with pipeline_managers(Spender(dev_seconds=0.01).registry()) as manager:
        result = await manager.run(dag_spec(CHAIN, budget=budget))
    assert result.status is RunStatus.SUCCEEDED, result.reasons
    assert result.usage.total_tokens == 5000


class Frugal(Spender):
    """Records the budget each dev subtask's payload was sent with."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sent: dict[str, Any] = {}

    async def dev(self, ctx: TaskContext) -> dict[str, Any]:
        self.sent[ctx.payload["subtask"]["id"]] = ctx.payload.get("budget")
        return await super().dev(ctx)


async def test_each_subtask_is_sent_what_is_left_of_the_budget(
    pipeline_managers: ManagerFactory,
) -> None:
    frugal = Frugal(dev_seconds=0.01)
    spec = dag_spec({"a": [], "b": ["a"]}, budget={"max_tokens": 2500, "max_seconds": 60})
    spec["subtasks"][1]["budget"] = {"max_tokens": 1200, "max_cost_usd": 0.5}
    async with pipeline_managers(frugal.registry()) as manager:
        result = await manager.run(spec)
    assert result.status is RunStatus.SUCCEEDED, result.reasons
    a, b = frugal.sent["a"], frugal.sent["b"]
    assert a["max_tokens"] == 2500 and b["max_tokens"] == 1200  # b: its own, below 1,500 left
    assert b["max_cost_usd"] == 0.5
    assert a["deadline"] == b["deadline"]  # the run's: it started before both


async def test_a_subtask_past_its_own_token_budget_fails_the_run(
    pipeline_managers: ManagerFactory,
) -> None:
    spec = dag_spec({"a": [], "b": ["a"]})
    spec["subtasks"][0]["budget"] = {"max_tokens": 500}
    spender = Spender(dev_seconds=0.01)
    async with pipeline_managers(spender.registry()) as manager:
        result = await manager.run(spec)
    assert result.status is RunStatus.FAILED
    assert result.reasons == ["budget exceeded: dev subtask a used 1,000 tokens, 500 allowed"]
    assert set(spender.spans) == {"a"}, "its dependant never ran"


async def test_a_subtask_past_its_own_time_budget_is_cancelled_and_fails_the_run(
    pipeline_managers: ManagerFactory,
) -> None:
    spec = dag_spec({"a": []})
    spec["subtasks"][0]["budget"] = {"max_seconds": 0.5}
    async with pipeline_managers(Spender(dev_seconds=30).registry()) as manager:
        started = asyncio.get_running_loop().time()
        result = await manager.run(spec)
        took = asyncio.get_running_loop().time() - started
    assert result.status is RunStatus.FAILED
    assert result.reasons == ["budget exceeded: dev subtask a ran past 0.5 s"]
    assert took < 10


class RefusedByItsAgent(Spender):
    async def dev(self, ctx: TaskContext) -> dict[str, Any]:
        raise BudgetExceeded("budget exceeded: 1,000 tokens used, 900 allowed")


async def test_an_agent_refusing_a_model_call_ends_the_run_on_its_budget(
    pipeline_managers: ManagerFactory,
) -> None:
    async with pipeline_managers(RefusedByItsAgent().registry()) as manager:
        result = await manager.run(dag_spec({"a": [], "b": []}, budget={"max_tokens": 900}))
    assert result.status is RunStatus.FAILED
    assert result.reasons[0].startswith("budget exceeded: dev subtask ")
    assert result.reasons[0].endswith(": 1,000 tokens used, 900 allowed")


async def test_budget_use_is_in_the_status_the_metrics_and_the_runs_trace(
    pipeline_managers: ManagerFactory, spans: InMemorySpanExporter
) -> None:
    metrics = PipelineMetrics()
    budget = {"max_tokens": 2500, "max_cost_usd": 1.0, "max_seconds": 60}
    async with pipeline_managers(Spender(dev_seconds=0.01).registry(), metrics=metrics) as m:
        result = await m.run(dag_spec(CHAIN, budget=budget))
        state = await m.get_run(result.run_id)
    assert result.status is RunStatus.FAILED
    line = budget_line(state)
    assert line is not None and line.startswith("3,000 of 2,500 tokens, 0.0300 of 1.0000 USD, ")
    assert line.endswith(" of 60 s")
    assert metrics.registry.get_sample_value("agentic_pipeline_budget_exceeded_total") == 1
    [root] = [s for s in spans.get_finished_spans() if s.name.startswith("pipeline.run ")]
    assert root.attributes is not None and root.attributes[tracing.RUN_TOKENS] == 3000
    [event] = [e for e in root.events if e.name == tracing.BUDGET_EXCEEDED_EVENT]
    assert event.attributes is not None
    assert event.attributes[tracing.REASON] == result.reasons[0]
