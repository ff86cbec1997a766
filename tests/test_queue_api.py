"""The API beyond the seed: scheduling, cancel, waiting for results, cleanup, stats."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from tests.support.state import assert_single_state
from utils.redis_queue import (
    RedisTaskQueue,
    ResultTimeout,
    TaskCancelled,
    TaskFailed,
    TaskPriority,
    TaskState,
)

QueueFactory = Callable[..., RedisTaskQueue]


async def test_scheduled_task_waits_for_its_delay_on_the_server_clock(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    task = await queue.enqueue("soon", "dev", {}, delay=0.3)
    assert task.state == TaskState.DELAYED
    await assert_single_state(raw_redis, queue, "soon", "delayed")
    started = time.perf_counter()
    got = await queue.dequeue("w", timeout=0.1)
    assert got is None
    got = await queue.dequeue("w", timeout=2)
    assert got is not None and got.task_id == "soon"
    assert time.perf_counter() - started >= 0.25


async def test_cancel_of_a_queued_task_is_immediate_and_notifies_waiters(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.enqueue("c1", "dev", {})
    waiter = asyncio.create_task(queue.wait_for_result("c1", timeout=5))
    await asyncio.sleep(0)
    assert await queue.cancel("c1") == TaskState.CANCELLED
    with pytest.raises(TaskCancelled):
        await waiter
    await assert_single_state(raw_redis, queue, "c1", "cancelled")
    assert await queue.dequeue("w", timeout=0) is None
    assert (await queue.get_statistics())["total_cancelled"] == 1


async def test_cancel_of_a_running_task_flags_it_and_its_failure_ends_cancelled(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.enqueue("c2", "dev", {})
    await queue.dequeue("w", timeout=1)
    pubsub = raw_redis.pubsub()
    await pubsub.subscribe(queue.keys.cancel_channel)
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    assert await queue.cancel("c2") == TaskState.PROCESSING
    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
    assert message is not None and message["data"] == b"c2"
    await pubsub.aclose()
    assert await queue.extend_lease("c2") is True  # the heartbeat learns of it too
    await assert_single_state(raw_redis, queue, "c2", "processing")
    assert await queue.fail_task("c2", "cancelled by request") == TaskState.CANCELLED
    await assert_single_state(raw_redis, queue, "c2", "cancelled")


async def test_wait_for_result_reports_dead_letter_and_timeout(queue: RedisTaskQueue) -> None:
    await queue.enqueue("bad", "dev", {})
    await queue.dequeue("w", timeout=1)
    await queue.fail_task("bad", "exploded", retry=False)
    with pytest.raises(TaskFailed) as failure:
        await queue.wait_for_result("bad", timeout=1)
    assert failure.value.state == TaskState.DEAD_LETTER and failure.value.error == "exploded"

    await queue.enqueue("slow", "dev", {})
    started = time.perf_counter()
    with pytest.raises(ResultTimeout):
        await queue.wait_for_result("slow", timeout=0.2)
    assert 0.15 < time.perf_counter() - started < 1.0


async def test_many_waiters_on_one_task_all_wake(make_queue: QueueFactory) -> None:
    waiters = [make_queue() for _ in range(5)]
    for w in waiters:
        await w.connect()
    await waiters[0].enqueue("shared", "dev", {})
    pending = [asyncio.create_task(w.wait_for_result("shared", timeout=5)) for w in waiters]
    await asyncio.sleep(0.05)  # let every waiter reach its blocking call
    await waiters[0].dequeue("w", timeout=1)
    await waiters[0].complete_task("shared", "done")
    assert await asyncio.gather(*pending) == ["done"] * 5


async def test_enqueue_many_is_ordered_by_priority_then_fifo(queue: RedisTaskQueue) -> None:
    specs = [
        {"task_id": f"p{i}", "task_type": "dev", "payload": {"i": i}, "priority": i % 4}
        for i in range(40)
    ]
    created = await queue.enqueue_many(specs)
    assert [t.task_id for t in created] == [s["task_id"] for s in specs]
    order = [t.task_id for t in await queue.claim("w", 40)]
    expected = sorted(specs, key=lambda s: (-s["priority"], s["payload"]["i"]))
    assert order == [s["task_id"] for s in expected]


async def test_claim_serves_only_the_given_types_and_others_wait(queue: RedisTaskQueue) -> None:
    await queue.enqueue("d", "dev", {}, TaskPriority.LOW)
    await queue.enqueue("q", "qa", {}, TaskPriority.CRITICAL)
    got = await queue.claim("dev-worker", 5, task_types=["dev"])
    assert [t.task_id for t in got] == ["d"]
    assert (await queue.get_statistics())["pending_by_type"] == {"dev": 0, "qa": 1}


async def test_statistics_count_outcomes_and_success_rate(queue: RedisTaskQueue) -> None:
    for i in range(4):
        await queue.enqueue(f"s{i}", "dev", {}, TaskPriority(i))
    for _ in range(3):
        task = await queue.dequeue("w", timeout=1)
        assert task is not None
        await queue.complete_task(task.task_id, None)
    task = await queue.dequeue("w", timeout=1)
    assert task is not None
    await queue.fail_task(task.task_id, "no", retry=False)
    stats = await queue.get_statistics()
    assert stats["total_completed"] == 3 and stats["total_failed"] == 1
    assert stats["total_dead_lettered"] == 1 and stats["success_rate"] == 75.0
    assert stats["completed"] == 3 and stats["dlq"] == 1 and stats["pending"] == 0


async def test_purge_dlq_deletes_dead_letters_and_their_records(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    for i in range(3):
        await queue.enqueue(f"x{i}", "dev", {})
        await queue.dequeue("w", timeout=1)
        await queue.fail_task(f"x{i}", "dead", retry=False)
    assert await raw_redis.scard(queue.dlq_key) == 3
    assert await queue.purge_dlq() == 3
    assert await raw_redis.scard(queue.dlq_key) == 0
    assert await queue.get_task("x0") is None


async def test_finished_tasks_past_their_ttl_are_trimmed_by_later_completions(
    make_queue: QueueFactory, raw_redis: Redis
) -> None:
    q = make_queue(task_ttl_seconds=1)
    await q.connect()
    await q.enqueue("old", "dev", {})
    await q.dequeue("w", timeout=1)
    await q.complete_task("old", None)
    await raw_redis.zadd(q.keys.completed, {"old": 0})  # finished long ago
    for i in range(9):  # trimming runs every 10th completion
        await q.enqueue(f"new{i}", "dev", {})
        await q.dequeue("w", timeout=1)
        await q.complete_task(f"new{i}", None)
    assert await q.get_task("old") is None
    assert await raw_redis.zscore(q.keys.completed, "old") is None


async def test_health_check_reports_the_seed_fields(queue: RedisTaskQueue) -> None:
    await queue.enqueue("h", "dev", {})
    health = await queue.health_check()
    assert health["status"] == "healthy" and health["pending"] == 1
    assert {"processing", "dlq_size", "success_rate"} <= health.keys()


async def test_health_check_of_an_unreachable_redis_is_unhealthy_not_an_exception(
    make_queue: QueueFactory,
) -> None:
    from tests.support.redis_server import free_port

    q = make_queue(redis_url=f"redis://:secret@127.0.0.1:{free_port()}/0", connect_timeout=1)
    with pytest.raises(Exception):  # noqa: B017 - any failure to connect
        await q.connect()
    health = await q.health_check()
    assert health["status"] == "unhealthy" and "secret" not in str(health)


async def test_async_with_connects_and_closes(make_queue: QueueFactory) -> None:
    async with make_queue() as q:
        await q.enqueue("ctx", "dev", {})
        assert (await q.get_queue_size())["pending"] == 1
    with pytest.raises(Exception):  # noqa: B017 - NotConnected after close
        _ = q.redis


async def test_settle_many_applies_each_outcome_with_its_own_fencing(
    make_queue: QueueFactory, raw_redis: Redis
) -> None:
    from utils.redis_queue import LeaseLost, Settlement

    q = make_queue(max_retries=1)
    await q.connect()
    for task_id in ("ok", "retry", "dead", "stale"):
        await q.enqueue(task_id, "dev", {})
    claimed = {t.task_id: t for t in await q.claim("w", 4)}
    outcomes = await q.settle_many(
        [
            Settlement("ok", claimed["ok"].lease_token, result={"v": 1}),
            Settlement("retry", claimed["retry"].lease_token, error="flaky", delay=60),
            Settlement("dead", claimed["dead"].lease_token, error="fatal", retry=False),
            Settlement("stale", 999_999, result="late"),
        ]
    )
    assert outcomes[:3] == [TaskState.COMPLETED, TaskState.DELAYED, TaskState.DEAD_LETTER]
    assert isinstance(outcomes[3], LeaseLost)
    await assert_single_state(raw_redis, q, "ok", "completed")
    await assert_single_state(raw_redis, q, "retry", "delayed")
    await assert_single_state(raw_redis, q, "dead", "dead_letter")
    await assert_single_state(raw_redis, q, "stale", "processing")  # untouched
    assert await q.wait_for_result("ok", 1) == {"v": 1}


async def test_a_new_earliest_delayed_task_wakes_a_blocked_worker(
    make_queue: QueueFactory,
) -> None:
    worker, producer = make_queue(), make_queue()
    await worker.connect()
    await producer.connect()
    waiting = asyncio.create_task(worker.dequeue("w", timeout=8))
    await asyncio.sleep(0.1)  # let the worker block with nothing scheduled
    started = time.perf_counter()
    await producer.enqueue("soon", "dev", {}, delay=0.3)
    task = await asyncio.wait_for(waiting, 5)
    assert task is not None and task.task_id == "soon"
    assert time.perf_counter() - started < 1.5  # due in 0.3 s, not at the 8 s timeout


async def test_a_claim_passes_the_wake_up_on_to_workers_of_other_types(
    make_queue: QueueFactory,
) -> None:
    both, dev_only, producer = make_queue(), make_queue(), make_queue()
    for q in (both, dev_only, producer):
        await q.connect()
    serves_both = asyncio.create_task(both.claim("a", 1, task_types=["dev", "fix"], timeout=8))
    serves_dev = asyncio.create_task(dev_only.claim("b", 1, task_types=["dev"], timeout=8))
    await asyncio.sleep(0.1)  # both block
    started = time.perf_counter()
    await producer.enqueue_many(
        [
            {"task_id": "urgent-fix", "task_type": "fix", "payload": {}, "priority": 3},
            {"task_id": "dev-work", "task_type": "dev", "payload": {}, "priority": 0},
        ]
    )
    got_dev = await asyncio.wait_for(serves_dev, 5)
    got_both = await asyncio.wait_for(serves_both, 5)
    assert [t.task_id for t in got_dev] == ["dev-work"]
    assert [t.task_id for t in got_both] == ["urgent-fix"]
    assert time.perf_counter() - started < 1.5


async def test_cancelling_a_result_wait_takes_effect_whenever_it_arrives(
    queue: RedisTaskQueue,
) -> None:
    """redis-py (with a socket timeout, on Python 3.11) can swallow a cancellation that
    arrives inside a command; the wait must end cancelled anyway, within one block slice,
    not run on to its timeout."""
    await queue.enqueue("never-done", "noop", {})
    for delay in range(16):  # cancel after 0, 1, 2, ... loop iterations: every await point
        waiter = asyncio.create_task(queue.wait_for_result("never-done", timeout=0.5))
        for _ in range(delay):
            await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter


async def test_payloads_and_results_up_to_the_size_limit_round_trip(
    make_queue: Callable[..., RedisTaskQueue],
) -> None:
    """A near-limit blob is tens of thousands of 64-byte chunks: more than one Lua
    unpack() can pass, so every script writes them in slices."""
    from utils.redis_queue import Settlement

    queue = make_queue(max_payload_bytes=2_000_000)
    await queue.connect()
    big = {"text": "x" * 1_500_000}
    await queue.enqueue("big-in", "noop", big)
    await queue.enqueue_many(
        {"task_id": f"b{i}", "task_type": "noop", "payload": {}} for i in range(4)
    )
    assert (await queue.get_task("big-in")).payload == big  # type: ignore[union-attr]

    claimed = await queue.claim("w", 5, task_types=["noop"])
    settlements = [
        Settlement(t.task_id, t.lease_token, result=big if t.task_id == "b1" else {"ok": i})
        for i, t in enumerate(claimed)
    ]
    states = await queue.settle_many(settlements)
    assert states == [TaskState.COMPLETED] * 5
    assert await queue.wait_for_result("b1", timeout=1) == big
    assert (await queue.get_task("big-in")).result == {"ok": 0}  # type: ignore[union-attr]
