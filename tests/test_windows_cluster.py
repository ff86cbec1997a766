"""Dedup and debounce windows, delete, purge and cancel by type on a real Redis Cluster
(3 primaries, 6 partitions): each window key is in its task's slot, so every transition is
one script on one node (a CROSSSLOT error would fail these)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from tests.support.topologies import ClusterGroup
from utils.redis_queue import RedisTaskQueue, TaskState
from utils.redis_queue.keys import QueueKeys
from utils.redis_queue.windows import digest_of

pytestmark = pytest.mark.timeout(180)
PARTS = 6


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterGroup]:
    with ClusterGroup() as group:
        yield group


@pytest.fixture
async def cq(cluster: ClusterGroup) -> AsyncIterator[Callable[..., RedisTaskQueue]]:
    name = f"w-{uuid.uuid4().hex[:10]}"
    made: list[RedisTaskQueue] = []

    def factory() -> RedisTaskQueue:
        q = RedisTaskQueue(name, cluster.url, cluster=True, partitions=PARTS)
        made.append(q)
        return q

    yield factory
    for q in made:
        await q.close()


async def _record_ids(q: RedisTaskQueue) -> list[str]:
    ids: list[str] = []
    for keys in q.layout.parts:
        async for key in q.redis.scan_iter(match=f"{keys.base}task:*", count=1000):
            text = key.decode() if isinstance(key, bytes) else key
            ids.append(text[len(keys.task("")) :])
    return ids


async def test_windows_and_bulk_actions_on_a_cluster(
    cluster: ClusterGroup, cq: Callable[..., RedisTaskQueue]
) -> None:
    producers = [cq() for _ in range(20)]
    await asyncio.gather(*(p.connect() for p in producers))
    q = producers[0]
    tasks = await asyncio.gather(
        *(p.enqueue(f"u{i}", "report", {"d": 1}, unique_for=60) for i, p in enumerate(producers))
    )
    assert len({t.task_id for t in tasks}) == 1
    unique_id = tasks[0].task_id
    held = await asyncio.gather(
        *(
            p.enqueue(f"d{i}", "index", {"v": i}, debounce=60, unique_key="doc")
            for i, p in enumerate(producers)
        )
    )
    assert len({t.task_id for t in held}) == 1
    assert sorted(await _record_ids(q)) == sorted({unique_id, held[0].task_id})
    keys: QueueKeys = q.keys_for(unique_id)
    window = keys.unique("report", digest_of("report", {"d": 1}, None))
    assert await q.redis.get(window) in (unique_id, unique_id.encode())
    assert cluster.node_for_key(window) == cluster.node_for_key(keys.task(unique_id))

    await q.enqueue_many(
        [{"task_id": f"p{i}", "task_type": "bulk", "payload": {}} for i in range(3_000)]
    )
    await q.enqueue_many(
        [{"task_id": f"l{i}", "task_type": "bulk", "payload": {}, "delay": 600} for i in range(500)]
    )
    assert await q.cancel_by_type("bulk") == 3_500
    assert await q.purge("cancelled") == 3_500
    assert await q.delete_task(unique_id) == TaskState.PENDING
    assert await q.delete_task(held[0].task_id) == TaskState.DELAYED
    assert await _record_ids(q) == []
    again: Any = await q.enqueue("u-new", "report", {"d": 1}, unique_for=60)
    assert again.task_id.startswith("u-new")  # the window went with the deleted task
