"""The nine invariants of ARCHITECTURE.md, each pinned against a real Redis."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.support.state import assert_single_state, command_calls, queue_keys_dump
from utils.redis_queue import (
    LeaseLost,
    RedisTaskQueue,
    RetryPolicy,
    TaskPriority,
    TaskState,
)

QueueFactory = Callable[..., RedisTaskQueue]


async def _connected(make_queue: QueueFactory, **kwargs: object) -> RedisTaskQueue:
    q = make_queue(**kwargs)
    await q.connect()
    return q


# 1. One state at a time ------------------------------------------------------------


async def test_every_transition_leaves_the_task_in_exactly_one_state(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.enqueue("walk", "dev", {"n": 1})
    await assert_single_state(raw_redis, queue, "walk", "pending")

    task = await queue.dequeue("w1", timeout=1)
    assert task is not None and task.state == TaskState.PROCESSING
    await assert_single_state(raw_redis, queue, "walk", "processing")

    assert await queue.fail_task("walk", "first failure") == TaskState.PENDING  # immediate
    await assert_single_state(raw_redis, queue, "walk", "pending")

    await queue.dequeue("w1", timeout=1)
    assert await queue.fail_task("walk", "second failure") == TaskState.DELAYED  # backoff
    await assert_single_state(raw_redis, queue, "walk", "delayed")

    task = await queue.dequeue("w1", timeout=2)  # blocks in Redis until the retry is due
    assert task is not None and task.task_id == "walk"
    await assert_single_state(raw_redis, queue, "walk", "processing")

    assert await queue.fail_task("walk", "give up", retry=False) == TaskState.DEAD_LETTER
    await assert_single_state(raw_redis, queue, "walk", "dead_letter")

    await queue.retry_dlq_task("walk")
    await assert_single_state(raw_redis, queue, "walk", "pending")

    assert await queue.cancel("walk") == TaskState.CANCELLED
    await assert_single_state(raw_redis, queue, "walk", "cancelled")

    await queue.enqueue("walk2", "dev", {})
    await queue.dequeue("w1", timeout=1)
    await queue.complete_task("walk2", {"ok": 1})
    await assert_single_state(raw_redis, queue, "walk2", "completed")


async def test_final_failure_without_dlq_is_state_failed(
    make_queue: QueueFactory, raw_redis: Redis
) -> None:
    q = await _connected(make_queue, enable_dlq=False, max_retries=0)
    await q.enqueue("f", "dev", {})
    await q.dequeue("w", timeout=1)
    assert await q.fail_task("f", "boom") == TaskState.FAILED
    await assert_single_state(raw_redis, q, "f", "failed")
    assert (await q.get_queue_size())["failed"] == 1


async def test_release_hands_the_task_back_without_counting_an_attempt(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.enqueue("r", "dev", {})
    await queue.dequeue("w", timeout=1)
    await queue.release_task("r")
    await assert_single_state(raw_redis, queue, "r", "pending")
    task = await queue.get_task("r")
    assert task is not None and task.attempts == 0 and task.retry_count == 0


# 2. Server time only ----------------------------------------------------------------


async def test_timestamps_and_deadlines_come_from_the_redis_clock(
    queue: RedisTaskQueue, raw_redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker whose wall clock is an hour ahead must not move any timing decision.
    skewed = time.time() + 3600
    monkeypatch.setattr(time, "time", lambda: skewed)
    server_now, _ = await raw_redis.time()
    task = await queue.enqueue("clock", "dev", {})
    created = time.mktime(time.strptime(task.created_at.split(".")[0], "%Y-%m-%dT%H:%M:%S"))
    assert abs(created - server_now) < 5
    await queue.dequeue("w", timeout=1)
    deadline_ms = await raw_redis.zscore(queue.keys.processing, "clock")
    assert deadline_ms is not None
    assert abs(deadline_ms / 1000 - (server_now + queue.lease_seconds)) < 5


# 3. Leases with fencing ------------------------------------------------------------


async def test_stale_completion_is_rejected_after_lease_expiry(
    make_queue: QueueFactory, raw_redis: Redis
) -> None:
    worker_a = await _connected(make_queue, lease_seconds=0.2)
    worker_b = await _connected(make_queue, lease_seconds=5)
    await worker_a.enqueue("fenced", "dev", {"x": 1})
    first = await worker_a.dequeue("a", timeout=1)
    assert first is not None and first.lease_token is not None

    # B blocks until A's lease deadline, reclaims the task and is granted a new lease.
    second = await worker_b.dequeue("b", timeout=3)
    assert second is not None and second.task_id == "fenced"
    assert second.lease_token is not None and second.lease_token > first.lease_token
    before = await queue_keys_dump(raw_redis, worker_b)

    with pytest.raises(LeaseLost):
        await worker_a.complete_task("fenced", {"stale": True}, lease_token=first.lease_token)
    with pytest.raises(LeaseLost):
        await worker_a.fail_task("fenced", "stale", lease_token=first.lease_token)
    with pytest.raises(LeaseLost):
        await worker_a.extend_lease("fenced", first.lease_token)
    with pytest.raises(LeaseLost):
        await worker_a.release_task("fenced", first.lease_token)
    assert await queue_keys_dump(raw_redis, worker_b) == before

    await worker_b.complete_task("fenced", {"fresh": True})
    assert await worker_b.wait_for_result("fenced", timeout=1) == {"fresh": True}
    task = await worker_b.get_task("fenced")
    assert task is not None and task.lease_losses == 1 and task.worker_id == "b"


async def test_seed_style_completion_uses_the_lease_this_instance_holds(
    make_queue: QueueFactory,
) -> None:
    worker_a = await _connected(make_queue, lease_seconds=0.2)
    worker_b = await _connected(make_queue)
    await worker_a.enqueue("implicit", "dev", {})
    await worker_a.dequeue("a", timeout=1)
    assert await worker_b.dequeue("b", timeout=3) is not None
    # complete_task(task_id, result) as in the seed: A's own (stale) token is used.
    with pytest.raises(LeaseLost):
        await worker_a.complete_task("implicit", {"late": True})
    await worker_b.complete_task("implicit", {"b": True})
    assert await worker_b.wait_for_result("implicit", 1) == {"b": True}


async def test_heartbeat_keeps_the_lease_alive(make_queue: QueueFactory, raw_redis: Redis) -> None:
    holder = await _connected(make_queue, lease_seconds=0.3)
    rival = await _connected(make_queue)
    await holder.enqueue("beat", "dev", {})
    task = await holder.dequeue("h", timeout=1)
    assert task is not None
    for _ in range(4):
        await holder.extend_lease("beat")
        # The rival blocks only until the next event (the extended deadline) and finds
        # nothing to reclaim.
        assert await rival.dequeue("r", timeout=0.15) is None
    await assert_single_state(raw_redis, holder, "beat", "processing")
    await holder.complete_task("beat", None)


# 4. Reaper ------------------------------------------------------------------------------


async def test_reaper_reclaims_an_expired_lease_and_requeues_the_task(
    make_queue: QueueFactory, raw_redis: Redis
) -> None:
    q = await _connected(make_queue, lease_seconds=0.1)
    await q.enqueue("orphan", "dev", {})
    await q.dequeue("dead-worker", timeout=1)
    rescued = await q.dequeue("rescuer", timeout=2)
    assert rescued is not None and rescued.task_id == "orphan"
    assert rescued.lease_losses == 1 and rescued.attempts == 2
    assert (await q.get_statistics())["total_reclaimed"] == 1


async def test_task_that_keeps_losing_its_lease_is_dead_lettered(
    make_queue: QueueFactory, raw_redis: Redis
) -> None:
    q = await _connected(make_queue, lease_seconds=0.1, max_lease_losses=1)
    await q.enqueue("poison", "dev", {})
    assert await q.dequeue("w1", timeout=1) is not None
    assert await q.dequeue("w2", timeout=2) is not None  # first loss: reclaimed
    assert await q.dequeue("w3", timeout=0.5) is None  # second loss: dead-lettered
    await assert_single_state(raw_redis, q, "poison", "dead_letter")
    task = await q.get_task("poison")
    assert task is not None and task.error is not None and "lease lost 2 times" in task.error


# 5. Idempotent enqueue -----------------------------------------------------------------


async def test_enqueue_is_idempotent_by_task_id_in_every_state(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    first = await queue.enqueue("same", "dev", {"v": 1}, TaskPriority.LOW)
    again = await queue.enqueue("same", "qa", {"v": 2}, TaskPriority.HIGH)
    assert again.payload == {"v": 1} and again.task_type == "dev" and first.created_at
    await queue.dequeue("w", timeout=1)
    assert (await queue.enqueue("same", "dev", {"v": 3})).state == TaskState.PROCESSING
    await queue.complete_task("same", 1)
    assert (await queue.enqueue("same", "dev", {"v": 4})).state == TaskState.COMPLETED
    await assert_single_state(raw_redis, queue, "same", "completed")
    assert (await queue.get_statistics())["total_enqueued"] == 1


async def test_concurrent_enqueues_of_one_id_create_one_task(
    make_queue: QueueFactory, raw_redis: Redis
) -> None:
    producers = [await _connected(make_queue) for _ in range(5)]
    await asyncio.gather(*(producers[i % 5].enqueue("dup", "dev", {"i": i}) for i in range(200)))
    q = producers[0]
    assert (await q.get_queue_size())["pending"] == 1
    assert (await q.get_statistics())["total_enqueued"] == 1
    await assert_single_state(raw_redis, q, "dup", "pending")


async def test_cleared_task_id_can_be_enqueued_again(queue: RedisTaskQueue) -> None:
    await queue.enqueue("reuse", "dev", {"v": 1})
    await queue.dequeue("w", timeout=1)
    await queue.complete_task("reuse", None)
    assert await queue.clear_completed(older_than_seconds=0) == 1
    task = await queue.enqueue("reuse", "dev", {"v": 2})
    assert task.state == TaskState.PENDING and task.payload == {"v": 2}


# 6. Atomic claim --------------------------------------------------------------------------


@pytest.mark.timeout(120)
async def test_twenty_racing_dequeuers_get_every_task_exactly_once(
    make_queue: QueueFactory,
) -> None:
    producer = await _connected(make_queue)
    await producer.enqueue_many(
        {"task_id": f"t{i}", "task_type": "dev", "payload": {"i": i}} for i in range(2000)
    )
    workers = [await _connected(make_queue) for _ in range(20)]
    seen: Counter[str] = Counter()

    async def drain(q: RedisTaskQueue, worker_id: str) -> None:
        while (task := await q.dequeue(worker_id, timeout=0)) is not None:
            seen[task.task_id] += 1
            await q.complete_task(task.task_id, None)

    await asyncio.gather(*(drain(q, f"w{i}") for i, q in enumerate(workers)))
    assert len(seen) == 2000 and set(seen.values()) == {1}
    sizes = await producer.get_queue_size()
    assert sizes["completed"] == 2000 and sizes["pending"] == sizes["processing"] == 0


# 7. No polling -----------------------------------------------------------------------------


async def test_idle_dequeue_blocks_in_redis_instead_of_polling(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    claims, pops = (
        await command_calls(raw_redis, "evalsha"),
        await command_calls(raw_redis, "blpop"),
    )
    assert await queue.dequeue("idle", timeout=0.5) is None
    assert await command_calls(raw_redis, "evalsha") - claims <= 2
    assert await command_calls(raw_redis, "blpop") - pops == 1


async def test_blocked_worker_wakes_within_milliseconds_of_an_enqueue(
    make_queue: QueueFactory, raw_redis: Redis
) -> None:
    worker, producer = await _connected(make_queue), await _connected(make_queue)
    waiting = asyncio.create_task(worker.dequeue("w", timeout=5))
    while not any(c.get("cmd") == "blpop" for c in await raw_redis.client_list()):
        await asyncio.sleep(0)  # yield until the worker's BLPOP is parked in Redis
    started = time.perf_counter()
    await producer.enqueue("wake-me", "dev", {})
    task = await waiting
    assert task is not None and task.task_id == "wake-me"
    assert time.perf_counter() - started < 0.1


async def test_result_waiter_blocks_in_redis_and_gets_the_result(
    make_queue: QueueFactory, raw_redis: Redis
) -> None:
    worker, caller = await _connected(make_queue), await _connected(make_queue)
    await caller.enqueue("answer", "dev", {})
    waiting = asyncio.create_task(caller.wait_for_result("answer", timeout=5))
    while not any(c.get("cmd") == "blmove" for c in await raw_redis.client_list()):
        await asyncio.sleep(0)
    hgetalls = await command_calls(raw_redis, "hgetall")
    await worker.dequeue("w", timeout=1)
    await worker.complete_task("answer", {"value": 42})
    assert await waiting == {"value": 42}
    # One HGETALL inside the claim script, one read by the waiter after it woke: no polls.
    assert await command_calls(raw_redis, "hgetall") - hgetalls == 2


# 8. JSON only -------------------------------------------------------------------------------


async def test_payload_and_result_round_trip_as_json(queue: RedisTaskQueue) -> None:
    payload = {"text": "héllo ✓ " + "x" * 300, "n": 2**60, "f": 0.1, "l": [None, True, {}]}
    await queue.enqueue("json", "dev", payload)
    task = await queue.dequeue("w", timeout=1)
    assert task is not None and task.payload == payload
    await queue.complete_task("json", {"echo": payload})
    assert await queue.wait_for_result("json", 1) == {"echo": payload}


def test_no_pickle_anywhere_in_the_product() -> None:
    root = Path(__file__).resolve().parents[1]
    for package in ("utils", "pipeline", "agents"):
        for source in (root / package).rglob("*.py"):
            assert "pickle" not in source.read_text(), source


# 9. Bounded scripts -------------------------------------------------------------------------


async def test_housekeeping_promotes_and_reaps_in_bounded_batches(
    make_queue: QueueFactory, raw_redis: Redis
) -> None:
    q = await _connected(make_queue)
    await q.enqueue_many(
        {"task_id": f"d{i}", "task_type": "dev", "payload": {}, "delay": 60} for i in range(250)
    )
    # Make all 250 due at once instead of waiting out the schedule.
    await raw_redis.zadd(q.keys.delayed, {f"d{i}": 0 for i in range(250)})
    await q.reap()
    sizes = await q.get_queue_size()
    assert sizes["pending"] == 100 and sizes["delayed"] == 150
    await q.reap()
    await q.reap()
    assert (await q.get_queue_size())["pending"] == 250


async def test_clear_completed_works_in_chunks(make_queue: QueueFactory, raw_redis: Redis) -> None:
    q = await _connected(make_queue)
    await q.enqueue_many(
        {"task_id": f"c{i}", "task_type": "dev", "payload": {}} for i in range(1200)
    )
    while tasks := await q.claim("w", 200):
        for task in tasks:
            await q.complete_task(task.task_id, None)
    calls = await command_calls(raw_redis, "evalsha")
    assert await q.clear_completed(older_than_seconds=0) == 1200
    assert await command_calls(raw_redis, "evalsha") - calls >= 3  # 500 per script call
    assert (await q.get_queue_size())["completed"] == 0
    assert not [k async for k in raw_redis.scan_iter(match=f"{q.keys.base}task:*")]


# Retry policy -------------------------------------------------------------------------------


async def test_default_retry_schedule_is_immediate_then_2s_then_4s_then_dlq(
    make_queue: QueueFactory, raw_redis: Redis
) -> None:
    q = await _connected(make_queue, retry_policy=RetryPolicy())
    await q.enqueue("sched", "dev", {})
    delays = []
    for _ in range(4):
        task = await q.dequeue("w", timeout=1)
        assert task is not None
        state = await q.fail_task("sched", "again")
        seconds, micros = await raw_redis.time()
        server_ms = seconds * 1000 + micros / 1000
        due = await raw_redis.zscore(q.keys.delayed, "sched")
        delays.append((state, None if due is None else round((due - server_ms) / 1000)))
        if due is not None:  # make the backoff due now instead of waiting through it
            await raw_redis.zadd(q.keys.delayed, {"sched": 0})
    assert delays == [
        (TaskState.PENDING, None),
        (TaskState.DELAYED, 2),
        (TaskState.DELAYED, 4),
        (TaskState.DEAD_LETTER, None),
    ]
    task = await q.get_task("sched")
    assert task is not None and task.retry_count == 3 and task.error == "again"


def test_retry_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(factor=0.5)
    with pytest.raises(ValueError):
        RetryPolicy(jitter=1.5)


async def test_explicit_retry_delay_overrides_the_policy(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.enqueue("later", "dev", {})
    await queue.dequeue("w", timeout=1)
    assert await queue.fail_task("later", "not yet", delay=30) == TaskState.DELAYED
    due = await raw_redis.zscore(queue.keys.delayed, "later")
    now_s = (await raw_redis.time())[0]
    assert due is not None and 28 <= due / 1000 - now_s <= 31


async def test_seed_loop_fail_after_a_refused_complete_is_refused_too(
    make_queue: QueueFactory, raw_redis: Redis
) -> None:
    # The seed's loop calls fail_task(task_id, ...) without a token when complete_task
    # raised: that call must not override the lease the rescuing worker now holds.
    stale = await _connected(make_queue, lease_seconds=0.2)
    rescuer = await _connected(make_queue)
    await stale.enqueue("contested", "dev", {})
    await stale.dequeue("a", timeout=1)
    assert await rescuer.dequeue("b", timeout=3) is not None
    with pytest.raises(LeaseLost):
        await stale.complete_task("contested", {"late": True})
    with pytest.raises(LeaseLost):
        await stale.fail_task("contested", "complete failed", retry=True)
    await assert_single_state(raw_redis, rescuer, "contested", "processing")
    await rescuer.complete_task("contested", "fresh")
    task = await rescuer.get_task("contested")
    assert task is not None and task.retry_count == 0 and task.result == "fresh"


async def test_a_repeated_id_inside_one_enqueue_many_is_a_duplicate(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    first, second = await queue.enqueue_many(
        [
            {"task_id": "twice", "task_type": "dev", "payload": {"v": "x" * 200}, "delay": 60},
            {"task_id": "twice", "task_type": "dev", "payload": {"v": 2}},
        ]
    )
    assert first.state == TaskState.DELAYED and second.state == TaskState.DELAYED
    assert second.payload == first.payload
    await assert_single_state(raw_redis, queue, "twice", "delayed")
    assert (await queue.get_statistics())["total_enqueued"] == 1
