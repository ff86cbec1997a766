"""Fairness groups: tasks that share a group take turns with other groups within their
priority, so one tenant's backlog does not starve another's few tasks."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from utils.redis_queue import InvalidTaskError, RedisTaskQueue, TaskPriority

pytestmark = pytest.mark.timeout(60)


def _grouped(prefix: str, group: str, count: int, **extra: object) -> list[dict[str, object]]:
    return [
        {"task_id": f"{prefix}{i}", "task_type": "dev", "payload": {}, "group": group, **extra}
        for i in range(count)
    ]


async def _drain(queue: RedisTaskQueue, batch: int = 5) -> list[str]:
    order: list[str] = []
    while claimed := (await queue.claim_ready("w", batch)).tasks:
        order += [t.task_id for t in claimed]
    return order


async def test_a_small_group_is_served_within_its_share_of_a_big_ones_backlog(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.enqueue_many(_grouped("big", "tenant:big", 1000))
    await queue.enqueue_many(_grouped("small", "tenant:small", 10))
    order = await _drain(queue)
    assert len(order) == 1010
    last_small = max(order.index(f"small{i}") for i in range(10))
    assert last_small < 25  # turns: about every other task, not after the 1,000
    assert [t for t in order if t.startswith("big")] == [f"big{i}" for i in range(1000)]
    assert await raw_redis.zcard(queue.keys.base + "groups") <= 2  # served places pruned


async def test_a_group_arriving_late_joins_at_the_point_served(queue: RedisTaskQueue) -> None:
    await queue.enqueue_many(_grouped("big", "tenant:big", 200))
    first = [t.task_id for t in (await queue.claim_ready("w", 100)).tasks]
    assert first == [f"big{i}" for i in range(100)]
    await queue.enqueue_many(_grouped("late", "tenant:late", 5))
    nxt = [t.task_id for t in (await queue.claim_ready("w", 12)).tasks]
    assert {f"late{i}" for i in range(5)} <= set(nxt)


async def test_groups_take_turns_within_a_priority_not_across(queue: RedisTaskQueue) -> None:
    await queue.enqueue_many(_grouped("a", "A", 5, priority=TaskPriority.HIGH))
    await queue.enqueue_many(_grouped("b", "B", 5, priority=TaskPriority.NORMAL))
    order = await _drain(queue, 100)
    assert order[:5] == [f"a{i}" for i in range(5)]  # HIGH first, whatever the groups


async def test_ungrouped_tasks_stay_fifo(queue: RedisTaskQueue) -> None:
    await queue.enqueue_many(
        {"task_id": f"t{i}", "task_type": "dev", "payload": {}} for i in range(50)
    )
    assert await _drain(queue, 7) == [f"t{i}" for i in range(50)]


async def test_many_groups_each_get_a_turn(queue: RedisTaskQueue) -> None:
    await queue.enqueue_many(_grouped("hog", "hog", 500))
    tenants = [f"tenant:{i}" for i in range(100)]
    await queue.enqueue_many(
        [{"task_id": f"t{i}", "task_type": "dev", "payload": {}, "group": g}
         for i, g in enumerate(tenants)]
    )  # fmt: skip
    order = await _drain(queue, 50)
    assert max(order.index(f"t{i}") for i in range(100)) < 210


@pytest.mark.parametrize("group", ["", "a b", "{x}", "x" * 129, 5])
async def test_a_bad_group_is_refused_before_redis(
    queue: RedisTaskQueue, raw_redis: Redis, group: object
) -> None:
    with pytest.raises(InvalidTaskError, match="group"):
        await queue.enqueue("t", "dev", {}, group=group)  # type: ignore[arg-type]
    assert not await raw_redis.exists(queue.keys.task("t"))


async def test_the_group_is_stored_with_the_task(queue: RedisTaskQueue) -> None:
    created = await queue.enqueue("t", "dev", {}, group="tenant:acme")
    stored = await queue.get_task("t")
    assert created.group == "tenant:acme" and stored is not None and stored.group == "tenant:acme"
