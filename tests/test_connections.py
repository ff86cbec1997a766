"""One queue object under many concurrent calls: they wait for a connection from a bounded
pool instead of failing, and blocking waiters cannot starve everyone else."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from utils.redis_queue import RedisTaskQueue

pytestmark = pytest.mark.timeout(60)


async def test_a_thousand_concurrent_enqueues_share_a_small_pool_and_all_land(
    make_queue: Callable[..., RedisTaskQueue], raw_redis: Redis
) -> None:
    q = make_queue(max_connections=8)
    await q.connect()
    results = await asyncio.gather(
        *(q.enqueue(f"e{i}", "t", {"i": i}) for i in range(1000)), return_exceptions=True
    )
    assert not [r for r in results if isinstance(r, BaseException)]
    assert (await q.get_queue_size())["pending"] == 1000
    pool = q.redis.connection_pool
    assert len(pool._available_connections) + len(pool._in_use_connections) <= 8


async def test_many_blocked_waiters_queue_for_connections_and_leave_others_theirs(
    make_queue: Callable[..., RedisTaskQueue],
) -> None:
    q = make_queue(max_connections=4, max_blocking_connections=5)
    await q.connect()
    ids = [f"w{i}" for i in range(200)]
    await q.enqueue_many([{"task_id": i, "task_type": "t", "payload": {}} for i in ids])
    waiters = [asyncio.create_task(q.wait_for_result(i, timeout=30)) for i in ids]
    await asyncio.sleep(0.2)  # the first five hold the blocking connections now
    # ordinary calls do not wait behind the blocked ones
    sizes = await asyncio.wait_for(q.get_queue_size(), 2.0)
    assert sizes["pending"] == 200
    claimed = await q.claim("worker", 200)
    for task in claimed:
        await q.complete_task(task.task_id, {"id": task.task_id})
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert results == [{"id": i} for i in ids]
    assert len(q._blocking_client.connection_pool._in_use_connections) == 0
