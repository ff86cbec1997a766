"""How a handler's bug is reported: the whole traceback in the worker's log and the task's
detail, one line in a pipeline run's record, reason and progress."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from pipeline import DistributedPipelineManager, EnhancedPipelineManager, RunStatus
from tests.support.worker_apps import registry
from tests.test_pipeline_dag import Recorder, dag_spec
from utils.redis_queue import RedisTaskQueue, TaskState
from utils.redis_queue.handlers import TaskContext
from utils.redis_queue.worker import Worker

pytestmark = pytest.mark.timeout(60)
ManagerFactory = Callable[..., EnhancedPipelineManager]


def _nested_bug(depth: int) -> None:
    if depth:
        _nested_bug(depth - 1)
    raise ValueError("the parser choked on line 3")


class Buggy(Recorder):
    async def dev(self, ctx: TaskContext) -> dict[str, Any]:
        _nested_bug(20)  # a traceback of a few kB
        raise AssertionError("unreachable")


async def test_a_failed_task_logs_its_traceback_and_keeps_it_in_its_detail(
    queue: RedisTaskQueue, caplog: pytest.LogCaptureFixture
) -> None:
    await queue.enqueue("bug", "flaky", {"failures": 5}, max_retries=1)
    with caplog.at_level(logging.WARNING, logger="agentic.worker"):
        await Worker(queue, registry, burst=True).run()
    failures = [r.getMessage() for r in caplog.records if "attempt" in r.getMessage()]
    assert len(failures) == 2, failures  # the retry and the dead letter, one line each
    assert "task bug (flaky) attempt 1 failed, now pending" in failures[0]
    assert "attempt 2 failed, now dead_letter" in failures[1]
    assert all("Traceback" in f and "RuntimeError: failure on attempt" in f for f in failures)
    task = await queue.get_task("bug")
    assert task is not None and task.state == TaskState.DEAD_LETTER
    assert "Traceback" in (task.error or "")


async def test_a_run_shows_one_line_of_a_subtask_bug(
    pipeline_managers: ManagerFactory, raw_redis: Redis
) -> None:
    async with pipeline_managers(
        Buggy().registry(), settings_overrides={"max_retries": 0}
    ) as manager:
        result = await manager.run(dag_spec({"a": []}))
        [record] = result.subtasks
        detail = None
        if isinstance(manager, DistributedPipelineManager):
            task = await manager.redis_queue.get_task(record.task_id)
            detail = task.error if task else None
    assert result.status is RunStatus.FAILED
    [reason] = result.reasons
    assert "ValueError: the parser choked on line 3" in reason
    assert "\n" not in reason and "Traceback" not in reason and len(reason) < 700
    assert record.error is not None and "\n" not in record.error
    if detail is not None:  # the queue's task keeps the whole of it
        assert "Traceback" in detail and "_nested_bug" in detail
