"""Output streams on a real Redis Cluster: each task's stream lives in its partition's
slot (its node), written under the lease and read as it arrives."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest

from tests.support.topologies import ClusterGroup
from utils.redis_queue import HandlerRegistry, LeaseLost, RedisTaskQueue, TaskContext, Worker
from utils.redis_queue.scripts import OutputEntry

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterGroup]:
    with ClusterGroup() as group:
        yield group


async def test_streams_on_a_cluster_follow_their_tasks_slots(cluster: ClusterGroup) -> None:
    queue = RedisTaskQueue(f"c-{uuid.uuid4().hex[:8]}", cluster.url, cluster=True, partitions=6)
    async with queue:

        async def talk(ctx: TaskContext) -> None:
            await ctx.progress(0.5, "half")
            await ctx.emit(f"hello from {ctx.task_id}")

        ids = [f"t{i}" for i in range(24)]
        for task_id in ids:
            await queue.enqueue(task_id, "talk", {})
        readers = [asyncio.create_task(_texts(queue, task_id)) for task_id in ids]
        await Worker(queue, HandlerRegistry({"talk": talk}), concurrency=8, burst=True).run()
        outputs = await asyncio.wait_for(asyncio.gather(*readers), 30)
        for task_id, texts in zip(ids, outputs, strict=True):
            assert texts == ["half", f"hello from {task_id}", "completed"]
        nodes = set()
        for task_id in ids:
            key = queue.keys_for(task_id).output(task_id)
            assert await queue.redis.xlen(key) == 3
            nodes.add(queue.redis.get_node_from_key(key).name)  # type: ignore[attr-defined]
        assert len(nodes) == 3  # spread over the three primaries
        # a stale lease is refused there too
        await queue.enqueue("late", "talk", {})
        (task,) = await queue.claim("w", 1)
        await queue.complete_task("late", None, lease_token=task.lease_token)
        with pytest.raises(LeaseLost):
            await queue.emit_output("late", task.lease_token or 0, [OutputEntry("text", "x")])


async def _texts(queue: RedisTaskQueue, task_id: str) -> list[str]:
    return [chunk.text async for chunk in queue.stream_output(task_id)]
