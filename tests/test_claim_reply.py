"""What claim.lua hands back and what settle_many.lua counts, against what Redis holds.

A claim replies with each task's hash as it read it *before* writing the claim's fields,
and the client applies those fields itself (scripts/replies.py ClaimedRow); completions
are counted once per settle call and trimmed once per TRIM_EVERY passed
(include/settle.lua end_completions). Both must leave nothing different from what a
second read of Redis gives.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from utils.redis_queue import RedisTaskQueue, Settlement, TaskState

pytestmark = pytest.mark.timeout(60)

QueueFactory = Callable[..., RedisTaskQueue]


async def test_every_claimed_task_is_the_task_redis_holds_after_the_claim(
    make_queue: QueueFactory, raw_redis: Redis
) -> None:
    """A fresh task, one retried after a failure (its old worker, start and attempts are
    overwritten), one holding a concurrency slot (`held`, not reported), a claim-checked
    payload, and one with every option set, in one claim."""
    q = make_queue(blob_threshold_bytes=200, max_retries=2)
    await q.connect()
    await q.set_limit("tenant:a", concurrency=5)
    await q.enqueue("retried", "dev", {"n": 1})
    first = await q.claim("old-worker", 1)
    assert await q.fail_task(first[0].task_id, "boom\nline 2") is TaskState.PENDING
    await q.enqueue("plain", "dev", {"n": 2})
    await q.enqueue("limited", "dev", {"n": 3}, limits=["tenant:a"], cost_tokens=7)
    await q.enqueue("big", "dev", {"text": "x" * 1_000})
    await q.enqueue(
        "options", "dev", {"n": 4}, priority=3, meta={"k": "v"}, timeout=30, group="g1",
        max_retries=1,
    )  # fmt: skip
    claimed = await q.claim("w-2", 10)
    assert {t.task_id for t in claimed} == {"retried", "plain", "limited", "big", "options"}
    for task in claimed:
        stored = await q.get_task(task.task_id)
        assert stored is not None
        assert task == stored, task.task_id
        assert task.state is TaskState.PROCESSING and task.worker_id == "w-2"
        assert task.lease_token == int(await raw_redis.hget(q.keys.task(task.task_id), "lease"))
    by_id = {t.task_id: t for t in claimed}
    assert by_id["retried"].attempts == 2 and by_id["retried"].error is not None
    assert by_id["big"].payload == {"text": "x" * 1_000}
    assert await raw_redis.hget(q.keys.task("limited"), "held") == b"tenant:a"


async def test_a_claim_of_a_thousand_hands_back_each_task_as_stored(
    queue: RedisTaskQueue,
) -> None:
    await queue.enqueue_many(
        {"task_id": f"t{i}", "task_type": f"k{i % 7}", "payload": {"i": i}} for i in range(1_000)
    )
    claimed = await queue.claim("w", 1_000)
    assert len(claimed) == 1_000
    for task in claimed[::97]:
        assert task == await queue.get_task(task.task_id)
    assert len({t.lease_token for t in claimed}) == 1_000  # every lease its own token


@pytest.mark.parametrize("batches", [[1, 1, 1], [25], [3, 17, 10, 1], [9, 1]])
async def test_completions_are_counted_once_per_call_and_trimmed_every_ten(
    make_queue: QueueFactory, raw_redis: Redis, batches: list[int]
) -> None:
    q = make_queue(task_ttl_seconds=1)
    await q.connect()
    total = sum(batches)
    await q.enqueue_many(
        {"task_id": f"t{i}", "task_type": "dev", "payload": {}} for i in range(total)
    )
    await raw_redis.zadd(q.keys.completed, {"old": 0})  # finished long ago
    await raw_redis.hset(q.keys.task("old"), mapping={"state": "completed", "type": "dev"})
    done = 0
    for size in batches:
        claimed = await q.claim("w", size)
        states = await q.settle_many(Settlement(t.task_id, t.lease_token, done) for t in claimed)
        assert states == [TaskState.COMPLETED] * size
        done += size
        stats = await raw_redis.hget(q.keys.stats, "completed")
        assert int(stats or 0) == done
        # the trim runs when the count passes a multiple of ten, in that same call
        trimmed = await raw_redis.exists(q.keys.task("old")) == 0
        assert trimmed == (done >= 10), (batches, done)
    left = await raw_redis.zscore(q.keys.completed, "old")
    assert (left is None) == (total >= 10)
    assert await raw_redis.zcard(q.keys.completed) == total + (left is not None)
    history = await q.get_history(minutes=5)
    assert sum(point.completed for point in history) == total
