"""Pause and periodic schedules on a Redis Cluster: a queue of 6 partitions over 3
primaries; the pause is written to every partition's slot, the schedules live in the
queue-wide slot and each tick is enqueued in its own partition's."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster

from tests.support.topologies import ClusterGroup
from utils.redis_queue import RedisTaskQueue
from utils.redis_queue.scheduler import run_scheduler
from utils.redis_queue.schedules import tick_id

pytestmark = pytest.mark.timeout(120)
PARTS = 6


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterGroup]:
    with ClusterGroup() as group:
        yield group


@pytest.fixture
async def cq(cluster: ClusterGroup) -> AsyncIterator[Callable[..., RedisTaskQueue]]:
    name = f"c-{uuid.uuid4().hex[:10]}"
    made: list[RedisTaskQueue] = []

    def factory(**kwargs: Any) -> RedisTaskQueue:
        q = RedisTaskQueue(name, cluster.url, cluster=True, partitions=PARTS, **kwargs)
        made.append(q)
        return q

    yield factory
    for q in made:
        await q.close()


async def test_pause_and_resume_hold_on_every_partition_of_a_cluster(
    cq: Callable[..., RedisTaskQueue], cluster: ClusterGroup
) -> None:
    queue = cq()
    await queue.connect()
    await queue.enqueue_many(
        {"task_id": f"t{i}", "task_type": "noop", "payload": {}} for i in range(600)
    )
    await queue.pause()
    raw = RedisCluster.from_url(cluster.url)
    try:
        for keys in queue.layout.parts:
            assert await raw.hexists(keys.paused, "*")
        assert await queue.claim("w", 1000, timeout=0.3) == []
        assert (await queue.get_queue_size())["pending"] == 600
        waiting = asyncio.create_task(queue.claim("w", 1000, timeout=20))
        await asyncio.sleep(0.3)  # let it block on every partition's wake key
        await queue.resume()
        claimed = await asyncio.wait_for(waiting, 5)
        assert claimed
        for keys in queue.layout.parts:
            assert await raw.exists(keys.paused) == 0
    finally:
        await raw.aclose()


async def test_schedulers_on_a_cluster_enqueue_each_tick_once(
    cq: Callable[..., RedisTaskQueue], cluster: ClusterGroup
) -> None:
    admin, a, b = cq(), cq(), cq()
    for q in (admin, a, b):
        await q.connect()
    info = await admin.schedule("tick", every=0.2, task_type="noop")
    loops = [asyncio.create_task(run_scheduler(q, poll=0.05)) for q in (a, b)]
    try:
        while (await admin.get_queue_size())["pending"] < 10:
            assert not all(loop.done() for loop in loops), [loop.exception() for loop in loops]
            await asyncio.sleep(0.05)  # a test's poll of a count that only grows
    finally:
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
    last = (await admin.list_schedules())[0].last_due_ms
    assert info.next_due_ms is not None and last is not None
    dues = range(info.next_due_ms, last + 1, 200)
    for due in dues:  # every tick is there, each in its own partition's slot
        assert await admin.get_task(tick_id("tick", due)) is not None
    # (a scheduler cancelled between its enqueue and its advance may leave one tick more)
    assert len(dues) <= (await admin.get_queue_size())["pending"] <= len(dues) + 1
