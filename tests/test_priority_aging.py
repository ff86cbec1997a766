"""Priority aging: off means strict priority; on, a task that waited a whole window ranks
one priority higher (older first within a rank), so LOW work is not starved."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from utils.redis_queue import InvalidTaskError, RedisTaskQueue, TaskPriority

QueueFactory = Callable[..., RedisTaskQueue]
pytestmark = pytest.mark.timeout(30)


async def _order(queue: RedisTaskQueue, **kwargs: object) -> list[str]:
    batch = await queue.claim_ready("w", 100, **kwargs)  # type: ignore[arg-type]
    return [t.task_id for t in batch.tasks]


async def test_without_aging_priority_is_strict(queue: RedisTaskQueue) -> None:
    await queue.enqueue("old-low", "dev", {}, TaskPriority.LOW)
    await asyncio.sleep(0.15)
    await queue.enqueue("new-normal", "dev", {}, TaskPriority.NORMAL)
    assert await queue.get_priority_aging() is None
    assert await _order(queue) == ["new-normal", "old-low"]


@pytest.mark.parametrize("types", [["dev"], ["dev", "qa"]])
async def test_a_low_task_past_the_window_goes_before_newer_normal_tasks(
    queue: RedisTaskQueue, types: list[str]
) -> None:
    await queue.set_priority_aging(0.1)
    assert await queue.get_priority_aging() == 0.1
    await queue.enqueue("old-low", "dev", {}, TaskPriority.LOW)
    await asyncio.sleep(0.12)  # one window: LOW now ranks as NORMAL, and it is older
    for i, task_type in enumerate(["dev", "qa", "dev"]):
        await queue.enqueue(f"normal{i}", task_type, {}, TaskPriority.NORMAL)
    await queue.enqueue("high", types[-1], {}, TaskPriority.HIGH)  # still outranks it
    order = await _order(queue, task_types=types)
    expected = ["high", "old-low", "normal0", "normal1", "normal2"]
    assert order == [t for t in expected if t != "normal1" or "qa" in types]


async def test_aging_climbs_a_rank_per_window_up_to_critical(queue: RedisTaskQueue) -> None:
    await queue.set_priority_aging(0.1)
    await queue.enqueue("ancient-low", "dev", {}, TaskPriority.LOW)
    await asyncio.sleep(0.35)  # three windows: it ranks as CRITICAL, and is the oldest
    await queue.enqueue("critical", "dev", {}, TaskPriority.CRITICAL)
    await queue.enqueue("high", "dev", {}, TaskPriority.HIGH)
    assert await _order(queue) == ["ancient-low", "critical", "high"]


async def test_turning_aging_off_restores_strict_priority(queue: RedisTaskQueue) -> None:
    await queue.set_priority_aging(0.05)
    await queue.enqueue("old-low", "dev", {}, TaskPriority.LOW)
    await asyncio.sleep(0.1)
    await queue.enqueue("normal", "dev", {}, TaskPriority.NORMAL)
    await queue.set_priority_aging(None)
    assert await _order(queue) == ["normal", "old-low"]


@pytest.mark.parametrize("window", [-1, float("nan"), float("inf"), "soon", True])
async def test_a_bad_window_is_refused(queue: RedisTaskQueue, window: object) -> None:
    with pytest.raises(InvalidTaskError):
        await queue.set_priority_aging(window)  # type: ignore[arg-type]
    assert await queue.get_priority_aging() is None


async def test_aging_on_a_partitioned_queue_applies_in_every_partition(
    make_queue: QueueFactory,
) -> None:
    queue = make_queue(partitions=3)
    await queue.connect()
    await queue.set_priority_aging(0.1)
    await queue.enqueue_many(
        {"task_id": f"low{i}", "task_type": "dev", "payload": {}, "priority": 0} for i in range(6)
    )
    await asyncio.sleep(0.12)
    await queue.enqueue_many(
        {"task_id": f"normal{i}", "task_type": "dev", "payload": {}, "priority": 1}
        for i in range(6)
    )
    order: list[str] = []
    while len(order) < 12:
        batch = await queue.claim_ready("w", 12)
        assert batch.tasks, "partitions stopped handing out tasks"
        order += [t.task_id for t in batch.tasks]
    by_partition: dict[int, list[str]] = {}
    for task_id in order:
        by_partition.setdefault(queue.layout.index_of(task_id), []).append(task_id)
    for ids in by_partition.values():  # aged LOW before newer NORMAL, in every partition
        kinds = [i.rstrip("0123456789") for i in ids]
        assert kinds == sorted(kinds), ids
