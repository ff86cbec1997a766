"""A run's budget, on both managers: tokens and cost checked as results arrive, time as
a deadline on the whole flow; past it the run fails with the reason and what was queued
is cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from pipeline import DistributedPipelineManager, EnhancedPipelineManager, RunStatus
from tests.test_pipeline_dag import (
    Recorder,
    dag_spec,
)
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
