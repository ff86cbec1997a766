"""delete_task, purge by state and cancel_by_type against a real Redis: every key of a
task goes, batches at 50k scale, partitioned queues, and the one-state invariant after."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from tests.support.state import read_queue, single_state_violations
from utils.redis_queue import (
    InvalidTaskError,
    RedisTaskQueue,
    TaskNotFound,
    TaskState,
    TaskStateError,
)
from utils.redis_queue.windows import digest_of

QueueFactory = Callable[..., RedisTaskQueue]


async def _keys_of(raw: Redis, q: RedisTaskQueue) -> set[str]:
    found: set[str] = set()
    for keys in q.layout.parts:
        async for key in raw.scan_iter(match=f"{keys.base}*", count=1000):
            found.add(key.decode()[len(keys.base) :])
    return found


async def _assert_invariants(raw: Redis, q: RedisTaskQueue) -> None:
    for keys in q.layout.parts:
        violations = single_state_violations(await read_queue(raw, keys))
        assert not violations, violations[:5]


async def _fill(q: RedisTaskQueue, n: int, task_type: str, prefix: str, **extra: object) -> None:
    items = [
        {"task_id": f"{prefix}{i}", "task_type": task_type, "payload": {"i": i}, **extra}
        for i in range(n)
    ]
    await q.enqueue_many(items)


async def test_delete_task_removes_every_key_of_the_task(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.enqueue("keep", "dev", {})
    await queue.enqueue("gone", "dev", {"x": 1}, unique_for=300)
    await queue.enqueue("held", "dev", {"y": 1}, debounce=300, unique_key="k")
    before = await _keys_of(raw_redis, queue)
    assert "task:gone" in before and f"unique:dev:{digest_of('dev', {'x': 1}, None)}" in before
    assert await queue.delete_task("gone") == TaskState.PENDING
    assert await queue.delete_task("held") == TaskState.DELAYED
    after = await _keys_of(raw_redis, queue)
    assert not {k for k in after if "gone" in k or "held" in k or k.startswith("unique:")}
    assert not {k for k in after if k.startswith("debounce:")}
    assert await raw_redis.zrange(queue.keys.pending("dev"), 0, -1) == [b"keep"]
    assert await raw_redis.zcard(queue.keys.delayed) == 0
    # The window went with it: an equal task is enqueued again.
    assert (await queue.enqueue("again", "dev", {"x": 1}, unique_for=300)).task_id == "again"
    with pytest.raises(TaskNotFound):
        await queue.delete_task("gone")
    await _assert_invariants(raw_redis, queue)


async def test_delete_task_refuses_a_running_task_unless_forced(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.enqueue("run", "dev", {})
    assert await queue.dequeue("w", timeout=1) is not None
    with pytest.raises(TaskStateError):
        await queue.delete_task("run")
    assert await raw_redis.zscore(queue.keys.processing, "run") is not None
    async with raw_redis.pubsub() as pubsub:
        await pubsub.subscribe(queue.keys.cancel_channel)
        await pubsub.get_message(timeout=1)  # the subscribe confirmation
        assert await queue.delete_task("run", force=True) == TaskState.PROCESSING
        message = await pubsub.get_message(timeout=2)
    assert message is not None and message["data"] == b"run"
    assert await raw_redis.zcard(queue.keys.processing) == 0
    assert await raw_redis.exists(queue.keys.task("run")) == 0
    with pytest.raises(TaskNotFound):
        await queue.complete_task("run", None)  # the worker's settle finds no task


async def test_delete_task_of_every_finished_state(queue: RedisTaskQueue, raw_redis: Redis) -> None:
    for task_id in ("c", "d", "x"):
        await queue.enqueue(task_id, "dev", {})
    await queue.dequeue("w", timeout=1)
    await queue.complete_task("c", 1)
    await queue.dequeue("w", timeout=1)
    await queue.fail_task("d", "no", retry=False)
    await queue.cancel("x")
    assert await queue.delete_task("c") == TaskState.COMPLETED
    assert await queue.delete_task("d") == TaskState.DEAD_LETTER
    assert await queue.delete_task("x") == TaskState.CANCELLED
    view = await read_queue(raw_redis, queue.keys)
    assert view.records == {} and view.structures == {} and view.dlq_order == []


@pytest.mark.timeout(180)
async def test_purge_of_50k_pending_tasks_runs_in_batches_in_bounded_time(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await _fill(queue, 50_000, "bulk", "p")
    await _fill(queue, 300, "other", "o")
    await _fill(queue, 1_500, "later", "l", delay=600)
    started = time.perf_counter()
    assert await queue.purge("pending") == 50_300
    elapsed = time.perf_counter() - started
    print(f"purged 50,300 pending tasks in {elapsed:.2f} s")
    assert elapsed < 30
    assert await raw_redis.zcard(queue.keys.pending("bulk")) == 0
    assert await raw_redis.zcard(queue.keys.delayed) == 1_500
    keys = await _keys_of(raw_redis, queue)
    assert sum(k.startswith("task:") for k in keys) == 1_500
    assert await queue.purge(TaskState.DELAYED) == 1_500
    assert not any(k.startswith("task:") for k in await _keys_of(raw_redis, queue))
    assert (await raw_redis.hget(queue.keys.stats, "deleted")) == b"51800"


async def test_purge_by_state_leaves_other_states_and_invariants(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await _fill(queue, 2_500, "dev", "t")
    batch = await queue.claim("w", count=1_000)
    for task in batch[:600]:
        await queue.complete_task(task.task_id, None)
    for task in batch[600:900]:
        await queue.fail_task(task.task_id, "x", retry=False)
    for task_id in [f"t{i}" for i in range(2_000, 2_200)]:
        await queue.cancel(task_id)
    assert await queue.purge("dlq") == 300
    assert await queue.purge("completed") == 600
    assert await queue.purge("cancelled") == 200
    assert await queue.purge("failed") == 0
    sizes = await queue.get_queue_size()
    assert sizes["processing"] == 100 and sizes["pending"] == 1_300
    assert sizes["completed"] == sizes["dlq"] == sizes["cancelled"] == 0
    await _assert_invariants(raw_redis, queue)
    with pytest.raises(InvalidTaskError):
        await queue.purge("processing")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("partitions", [1, 4])
async def test_cancel_by_type_cancels_every_queued_task_of_the_type(
    make_queue: QueueFactory, raw_redis: Redis, partitions: int
) -> None:
    q = make_queue(partitions=partitions)
    await q.connect()
    await _fill(q, 2_500, "a", "ap")
    await _fill(q, 2_200, "a", "ad", delay=600)
    await _fill(q, 700, "b", "bp")
    await _fill(q, 1_300, "b", "bd", delay=600)
    assert await q.cancel_by_type("a") == 4_700
    sizes = await q.get_queue_size()
    assert sizes["cancelled"] == 4_700 and sizes["pending"] == 700 and sizes["delayed"] == 1_300
    task = await q.get_task("ad7")
    assert task is not None and task.state == TaskState.CANCELLED
    assert await q.cancel_by_type("a") == 0
    stats = await q.get_statistics()
    assert stats["total_cancelled"] == 4_700
    await _assert_invariants(raw_redis, q)


async def test_cancel_by_type_leaves_running_tasks(queue: RedisTaskQueue, raw_redis: Redis) -> None:
    await _fill(queue, 3, "a", "t")
    assert await queue.dequeue("w", timeout=1) is not None
    assert await queue.cancel_by_type("a") == 2
    assert await raw_redis.zcard(queue.keys.processing) == 1
    await _assert_invariants(raw_redis, queue)


@pytest.mark.parametrize("partitions", [1, 4])
async def test_purge_and_delete_on_a_partitioned_queue(
    make_queue: QueueFactory, raw_redis: Redis, partitions: int
) -> None:
    q = make_queue(partitions=partitions)
    await q.connect()
    await _fill(q, 3_000, "dev", "t")
    assert await q.delete_task("t5") == TaskState.PENDING
    assert await q.purge("pending") == 2_999
    assert not any(k.startswith("task:") for k in await _keys_of(raw_redis, q))


@pytest.mark.timeout(240)
async def test_cancel_by_type_of_50k_queued_tasks_runs_in_bounded_time(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await _fill(queue, 30_000, "a", "ap")
    await _fill(queue, 20_000, "a", "ad", delay=600)
    await _fill(queue, 10_000, "b", "bd", delay=600)
    started = time.perf_counter()
    assert await queue.cancel_by_type("a") == 50_000
    elapsed = time.perf_counter() - started
    print(f"cancelled 50,000 tasks of one type (10,000 delayed of another) in {elapsed:.2f} s")
    assert elapsed < 60
    assert await raw_redis.zcard(queue.keys.cancelled) == 50_000
    assert await raw_redis.zcard(queue.keys.delayed) == 10_000
    assert await raw_redis.zcard(queue.keys.pending("a")) == 0
    started = time.perf_counter()
    assert await queue.purge("cancelled") == 50_000
    print(f"purged 50,000 cancelled tasks in {time.perf_counter() - started:.2f} s")
    await _assert_invariants(raw_redis, queue)


async def test_forced_delete_gives_back_the_concurrency_slot_it_held(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.set_limit("dev", concurrency=1)
    await _fill(queue, 2, "dev", "t")
    first = await queue.dequeue("w", timeout=1)
    assert first is not None
    assert await raw_redis.zcard(queue.keys.limit_held("dev")) == 1
    assert await queue.claim("w", count=1) == []  # the one slot is taken
    await queue.delete_task(first.task_id, force=True)
    assert await raw_redis.zcard(queue.keys.limit_held("dev")) == 0
    second = await queue.claim("w", count=1)
    assert [t.task_id for t in second] == ["t1"]
