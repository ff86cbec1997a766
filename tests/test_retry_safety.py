"""Every transition is safe to send twice. redis-py re-sends a command when its connection
drops after the command went out, and Redis may already have run it; a proxy in front of
a real Redis drops exactly there, and each test checks what Redis holds afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis

from tests.support.dropping_proxy import DroppingProxy
from utils.redis_queue import RedisTaskQueue, TaskState
from utils.redis_queue.models import Settlement
from utils.redis_queue.scripts import SCRIPTS, script_sha, script_source

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[DroppingProxy]:
    async with DroppingProxy(urlsplit(redis_url).port or 6379) as p:
        yield p


@pytest.fixture
async def q(
    make_queue: Callable[..., RedisTaskQueue], proxy: DroppingProxy, raw_redis: Redis
) -> AsyncIterator[RedisTaskQueue]:
    # Cached first, so the dropped reply is the script's own, not a NOSCRIPT.
    for name in SCRIPTS:
        await raw_redis.script_load(script_source(name))
    queue = make_queue(redis_url=proxy.url)
    await queue.connect()
    yield queue


def _sha(name: str) -> bytes:
    return script_sha(name).encode()


async def _stats(raw: Redis, q: RedisTaskQueue) -> dict[bytes, bytes]:
    return await raw.hgetall(q.keys.stats)


async def test_a_completion_sent_twice_is_recorded_once_and_not_called_lost(
    q: RedisTaskQueue, proxy: DroppingProxy, raw_redis: Redis
) -> None:
    await q.enqueue("a", "t", {})
    await q.claim("w", 1)
    proxy.drop_reply_to(_sha("complete"))
    await q.complete_task("a", {"ok": 1})  # no LeaseLost although the first send ran
    assert proxy.dropped == 1
    done = await q.get_task("a")
    assert done is not None and done.state == TaskState.COMPLETED and done.result == {"ok": 1}
    assert (await _stats(raw_redis, q))[b"completed"] == b"1"
    assert await raw_redis.zcard(q.keys.processing) == 0


async def test_a_settle_batch_sent_twice_reports_every_outcome_as_it_happened(
    q: RedisTaskQueue, proxy: DroppingProxy, raw_redis: Redis
) -> None:
    await q.enqueue_many([{"task_id": f"s{i}", "task_type": "t", "payload": {}} for i in range(6)])
    claimed = await q.claim("w", 6)
    items = [
        Settlement(t.task_id, t.lease_token, result=i)
        if i % 3 == 0
        else Settlement(t.task_id, t.lease_token, error="x", retry=i % 3 == 1)
        for i, t in enumerate(claimed)
    ]
    proxy.drop_reply_to(_sha("settle_many"))
    states = await q.settle_many(items)
    assert proxy.dropped == 1
    expected = [TaskState.COMPLETED, TaskState.PENDING, TaskState.DEAD_LETTER] * 2
    assert states == expected
    stats = await _stats(raw_redis, q)
    assert stats[b"completed"] == b"2" and stats[b"retried"] == b"2"
    assert stats[b"dead_lettered"] == b"2"
    retried = [await q.get_task(t.task_id) for t in claimed[1::3]]
    assert [t.retry_count for t in retried if t] == [1, 1]


async def test_a_failure_sent_twice_counts_one_retry(
    q: RedisTaskQueue, proxy: DroppingProxy
) -> None:
    await q.enqueue("f", "t", {})
    await q.claim("w", 1)
    proxy.drop_reply_to(_sha("fail"))
    assert await q.fail_task("f", "boom", retry=True) == TaskState.PENDING
    task = await q.get_task("f")
    assert task is not None and task.retry_count == 1 and task.state == TaskState.PENDING


async def test_a_claim_sent_twice_hands_back_the_same_tasks_and_leases_no_more(
    q: RedisTaskQueue, proxy: DroppingProxy, raw_redis: Redis
) -> None:
    await q.enqueue_many([{"task_id": f"c{i}", "task_type": "t", "payload": {}} for i in range(10)])
    proxy.drop_reply_to(_sha("claim"))
    claimed = await q.claim("w", 4)
    assert proxy.dropped == 1
    assert len(claimed) == 4
    # no task is leased to a caller who never heard of it
    assert await raw_redis.zcard(q.keys.processing) == 4
    assert (await q.get_queue_size())["pending"] == 6
    for task in claimed:
        await q.complete_task(task.task_id, None)
    assert await raw_redis.zcard(q.keys.processing) == 0


async def test_a_release_sent_twice_hands_the_task_back_once(
    q: RedisTaskQueue, proxy: DroppingProxy
) -> None:
    await q.enqueue("r", "t", {})
    await q.claim("w", 1)
    proxy.drop_reply_to(_sha("release"))
    await q.release_task("r")
    task = await q.get_task("r")
    assert task is not None and task.state == TaskState.PENDING and task.attempts == 0


async def test_a_cancel_sent_twice_answers_cancelled_not_already_finished(
    q: RedisTaskQueue, proxy: DroppingProxy, raw_redis: Redis
) -> None:
    await q.enqueue("x", "t", {})
    proxy.drop_reply_to(_sha("cancel"))
    assert await q.cancel("x") == TaskState.CANCELLED
    assert proxy.dropped == 1
    assert (await _stats(raw_redis, q))[b"cancelled"] == b"1"


async def test_an_enqueue_sent_twice_makes_one_task(
    q: RedisTaskQueue, proxy: DroppingProxy, raw_redis: Redis
) -> None:
    proxy.drop_reply_to(_sha("enqueue"))
    task = await q.enqueue("e", "t", {"x": 1})
    assert proxy.dropped == 1 and task.task_id == "e" and task.payload == {"x": 1}
    assert (await q.get_queue_size())["pending"] == 1
    assert (await _stats(raw_redis, q))[b"enqueued"] == b"1"


async def test_a_late_copy_of_an_old_completion_cannot_touch_the_next_attempt(
    q: RedisTaskQueue, raw_redis: Redis
) -> None:
    await q.enqueue("late", "t", {})
    (first,) = await q.claim("w1", 1)
    await q.fail_task("late", "retry me", retry=True, lease_token=first.lease_token)
    (second,) = await q.claim("w2", 1)
    assert second.lease_token != first.lease_token
    # the first attempt's settle, arriving again: it answers as it did, and changes nothing
    assert await q.fail_task("late", "retry me", lease_token=first.lease_token) == TaskState.PENDING
    task = await q.get_task("late")
    assert task is not None and task.state == TaskState.PROCESSING and task.retry_count == 1
    await q.complete_task("late", 1, lease_token=second.lease_token)
