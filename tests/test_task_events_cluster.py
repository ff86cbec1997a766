"""Task events on a real Redis Cluster: each partition's stream lives in its partition's
slot (its node), and one follower reads them all (one XREAD per partition)."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Iterator

import pytest

from tests.support.topologies import ClusterGroup
from utils.redis_queue import HandlerRegistry, RedisTaskQueue, TaskContext, TaskEvent, Worker

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterGroup]:
    with ClusterGroup() as group:
        yield group


async def test_a_follower_on_a_cluster_sees_every_partitions_tasks_in_order(
    cluster: ClusterGroup,
) -> None:
    queue = RedisTaskQueue(f"c-{uuid.uuid4().hex[:8]}", cluster.url, cluster=True, partitions=6)
    async with queue:
        n = 120
        completed: set[str] = set()

        async def follow() -> list[TaskEvent]:
            seen = []
            async for event in queue.events("0"):
                seen.append(event)
                if event.event == "completed":
                    completed.add(event.task_id)
                    if len(completed) == n:
                        return seen
            return seen

        async def work(ctx: TaskContext) -> str:
            return "ok"

        follower = asyncio.create_task(follow())
        await queue.enqueue_many(
            [{"task_id": f"t{i}", "task_type": "w", "payload": {}} for i in range(n)]
        )
        await Worker(queue, HandlerRegistry({"w": work}), concurrency=8, burst=True).run()
        seen = await asyncio.wait_for(follower, 30)
        per_task: dict[str, list[str]] = defaultdict(list)
        for event in seen:
            per_task[event.task_id].append(event.event)
        assert len(per_task) == n
        assert all(e == ["enqueued", "started", "completed"] for e in per_task.values())
        nodes = set()
        for part in queue.layout.parts:
            assert await queue.redis.xlen(part.events) > 0
            nodes.add(queue.redis.get_node_from_key(part.events).name)  # type: ignore[attr-defined]
        assert len(nodes) == 3  # the streams spread over the three primaries

        # A new event reaches a blocked follower at once, not after the other
        # partitions' blocking reads time out.
        caught_up = asyncio.Event()

        async def late() -> float:
            count = 0
            async for event in queue.events("0"):
                count += 1
                if count == len(seen):
                    caught_up.set()
                if event.task_id == "late":
                    return loop.time()
            return 0.0

        loop = asyncio.get_running_loop()
        waiting = asyncio.create_task(late())
        await asyncio.wait_for(caught_up.wait(), 10)
        await asyncio.sleep(0.2)  # let every partition's read block
        sent = loop.time()
        await queue.enqueue("late", "w", {})
        assert await asyncio.wait_for(waiting, 10) - sent < 2.0
