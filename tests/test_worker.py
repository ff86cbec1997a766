"""The Worker in-process: outcomes, threads, timeouts, cancel, routing, drain, registry."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.support.processes import eventually
from tests.support.state import assert_single_state
from tests.support.worker_apps import registry
from utils.redis_queue import RedisTaskQueue, TaskCancelled, TaskState
from utils.redis_queue.handlers import HandlerRegistry, TaskContext, as_registry
from utils.redis_queue.registry import list_workers
from utils.redis_queue.worker import Worker

QueueFactory = Callable[..., RedisTaskQueue]


async def test_handler_outcomes_map_to_task_states(queue: RedisTaskQueue, raw_redis: Redis) -> None:
    await queue.enqueue("ok", "noop", {"value": 7})
    await queue.enqueue("flaky", "flaky", {"failures": 1})
    await queue.enqueue("later", "retry_later", {"delay": 0.1})
    await queue.enqueue("perm", "permanent", {})
    await queue.enqueue("crashy", "flaky", {"failures": 5}, max_retries=0)
    await queue.enqueue("bad-result", "unserializable", {})
    stats = await Worker(queue, registry, burst=True).run()

    assert await queue.wait_for_result("ok", 1) == {"echo": 7}
    assert await queue.wait_for_result("flaky", 1) == {"attempt": 2}
    assert await queue.wait_for_result("later", 1) == "ready"
    for task_id, reason in (("perm", "PermanentFailure: invalid input"), ("bad-result", "JSON")):
        await assert_single_state(raw_redis, queue, task_id, "dead_letter")
        task = await queue.get_task(task_id)
        assert task is not None and task.error is not None and reason in task.error
    flaky = await queue.get_task("flaky")
    assert flaky is not None and flaky.retry_count == 1 and flaky.error is None
    crashy = await queue.get_task("crashy")
    assert crashy is not None and crashy.state == TaskState.DEAD_LETTER
    assert "RuntimeError: failure on attempt 1" in (crashy.error or "")
    assert "Traceback" in (crashy.error or "")
    assert stats.done == 3 and stats.failed == 5


async def test_sync_handlers_run_in_threads_without_blocking_the_loop(
    queue: RedisTaskQueue,
) -> None:
    await queue.enqueue_many(
        {"task_id": f"s{i}", "task_type": "sync_sleep", "payload": {"seconds": 1.0}}
        for i in range(4)
    )
    started = time.perf_counter()
    stats = await Worker(queue, registry, concurrency=4, burst=True).run()
    assert stats.done == 4
    # 4 x 1 s side by side: ~1 s; one after another (a blocked loop) would be 4 s. The
    # margin is for a loaded CI host.
    assert time.perf_counter() - started < 2.5


async def test_concurrency_limit_is_respected(queue: RedisTaskQueue) -> None:
    running = peak = 0

    async def track(ctx: TaskContext) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1

    await queue.enqueue_many(
        {"task_id": f"c{i}", "task_type": "t", "payload": {}} for i in range(30)
    )
    stats = await Worker(queue, HandlerRegistry({"t": track}), concurrency=3, burst=True).run()
    assert stats.done == 30 and peak == 3


async def test_timeout_fails_the_task_with_retry(
    make_queue: QueueFactory, raw_redis: Redis
) -> None:
    queue = make_queue(max_retries=1)
    await queue.connect()
    await queue.enqueue("slow", "sleep", {"seconds": 5})
    await queue.enqueue("slow-own", "sleep", {"seconds": 5}, timeout=0.1)
    started = time.perf_counter()
    await Worker(queue, registry, default_timeout=0.2, burst=True).run()
    assert time.perf_counter() - started < 3
    for task_id, limit in (("slow", 0.2), ("slow-own", 0.1)):
        task = await queue.get_task(task_id)
        assert task is not None and task.state == TaskState.DEAD_LETTER
        assert task.retry_count == 1 and f"timed out after {limit} s" in (task.error or "")


async def test_cancel_reaches_the_running_task_within_a_second(
    make_queue: QueueFactory, raw_redis: Redis
) -> None:
    queue, caller = make_queue(), make_queue()
    await caller.connect()
    await caller.enqueue("long", "sleep", {"seconds": 30})
    worker = Worker(queue, registry)
    serving = asyncio.create_task(worker.run())

    async def processing() -> bool:
        task = await caller.get_task("long")
        return task is not None and task.state == TaskState.PROCESSING

    await eventually(processing)
    started = time.perf_counter()
    assert await caller.cancel("long") == TaskState.PROCESSING
    with pytest.raises(TaskCancelled):
        await caller.wait_for_result("long", timeout=5)
    assert time.perf_counter() - started < 1.0
    await assert_single_state(raw_redis, caller, "long", "cancelled")
    task = await caller.get_task("long")
    assert task is not None and task.retry_count == 0  # cancelled, not retried
    worker.request_stop()
    await serving


async def test_worker_serves_only_its_types_and_others_wait(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.enqueue("mine", "noop", {})
    await queue.enqueue("theirs", "sleep", {"seconds": 0})
    stats = await Worker(queue, registry, task_types=["noop"], burst=True).run()
    assert stats.done == 1
    await assert_single_state(raw_redis, queue, "theirs", "pending")


async def test_graceful_stop_hands_back_what_did_not_finish_in_the_grace_period(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.enqueue("quick", "sleep", {"seconds": 0.05})
    await queue.enqueue("endless", "sleep", {"seconds": 60})
    worker = Worker(queue, registry, shutdown_grace=0.3)
    serving = asyncio.create_task(worker.run())

    async def both_running() -> bool:
        return (await queue.get_queue_size())["processing"] == 2

    await eventually(both_running)
    worker.request_stop()
    stats = await asyncio.wait_for(serving, 5)
    assert stats.done == 1 and stats.released == 1
    await assert_single_state(raw_redis, queue, "quick", "completed")
    await assert_single_state(raw_redis, queue, "endless", "pending")
    task = await queue.get_task("endless")
    assert task is not None and task.attempts == 0 and task.retry_count == 0


async def test_worker_appears_in_the_registry_while_it_runs(queue: RedisTaskQueue) -> None:
    worker = Worker(queue, registry, worker_id="registered-1", beat_interval=0.2)
    serving = asyncio.create_task(worker.run())

    async def listed() -> list[Any]:
        return [w for w in await list_workers(queue) if w.worker_id == "registered-1"]

    (info,) = await eventually(listed)
    assert info.alive and info.concurrency == 10 and "noop" in info.task_types
    worker.request_stop()
    await serving
    assert not await listed()


def test_as_registry_accepts_dicts_registries_and_objects() -> None:
    from tests.support import worker_apps

    assert set(as_registry(worker_apps.handlers)) == {"noop", "sleep"}
    assert as_registry(registry) is registry
    assert as_registry(worker_apps) is registry  # a module with a `registry` attribute
    with pytest.raises(TypeError):
        as_registry(42)


def test_worker_rejects_types_without_handlers(queue: RedisTaskQueue) -> None:
    with pytest.raises(ValueError, match="no handler"):
        Worker(queue, registry, task_types=["nope"])


async def test_settle_loop_outlives_a_batch_redis_refuses(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.enqueue("refused", "sleep", {"seconds": 0.2})
    worker = Worker(queue, registry, shutdown_grace=5)
    serving = asyncio.create_task(worker.run())

    async def processing() -> bool:
        return (await queue.get_queue_size())["processing"] == 1

    await eventually(processing)
    await raw_redis.set(queue.keys.completed, "clobbered")  # every settle is refused now
    await queue.enqueue("after", "noop", {})

    async def both_attempted() -> bool:
        return not worker._settler.unsettled and not worker._running and worker.stats.done == 0

    await eventually(both_attempted, timeout=15)  # refused 5 times each, then given up
    await raw_redis.delete(queue.keys.completed)
    await queue.enqueue("healthy", "noop", {})
    assert await queue.wait_for_result("healthy", timeout=5) == {"echo": None}
    worker.request_stop()
    await asyncio.wait_for(serving, 10)


async def test_stop_with_redis_down_ends_within_the_grace_period(private_redis: Any) -> None:
    queue = RedisTaskQueue(
        queue_name="down", redis_url=private_redis.url, socket_timeout=1, connect_timeout=1
    )
    await queue.connect()
    await queue.enqueue("stranded", "sleep", {"seconds": 0.2})
    worker = Worker(queue, registry, shutdown_grace=1.5)
    serving = asyncio.create_task(worker.run())

    async def processing() -> bool:
        return bool(worker._running)

    await eventually(processing)
    private_redis.kill()
    worker.request_stop()
    started = time.perf_counter()
    await asyncio.wait_for(serving, 15)
    assert time.perf_counter() - started < 6  # grace, then no endless retrying
    await queue.close()


async def test_timed_out_sync_handlers_keep_their_slot_until_their_thread_ends(
    make_queue: QueueFactory,
) -> None:
    queue = make_queue(max_retries=0)
    await queue.connect()
    for i in range(2):
        await queue.enqueue(f"hang{i}", "sync_sleep", {"seconds": 1.5}, timeout=0.2)
    for i in range(3):
        await queue.enqueue(f"quick{i}", "sync_sleep", {"seconds": 0}, timeout=0.5)
    stats = await Worker(queue, registry, concurrency=2, burst=True).run()
    for i in range(3):  # they waited for a free thread instead of timing out in the queue
        assert await queue.wait_for_result(f"quick{i}", 1) == "slept in a thread"
    assert stats.done == 3 and stats.failed == 2


async def test_a_timed_out_sync_suspect_stays_the_workers_one_suspect_until_its_thread_ends(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    """A suspect (a task that lost its lease twice) may be what kills workers; while its
    code still runs in a thread after its timeout, the worker takes no other suspect."""
    release = threading.Event()
    started: list[str] = []

    def stuck(ctx: TaskContext) -> None:  # sync: its thread outlives the timeout
        started.append(ctx.task_id)
        release.wait(10)

    await queue.enqueue_many(
        {"task_id": f"sus{i}", "task_type": "stuck", "payload": {}} for i in range(2)
    )
    for i in range(2):
        await raw_redis.hset(queue.keys.task(f"sus{i}"), "lease_losses", 2)
    handlers = HandlerRegistry()
    handlers.register("stuck", stuck, timeout=0.1)
    worker = Worker(queue, handlers, concurrency=4)
    serving = asyncio.create_task(worker.run())
    try:
        first = await eventually(lambda: _retried(queue, "sus0"))
        assert first.retry_count == 1  # the attempt timed out; its thread still runs
        await asyncio.sleep(0.3)  # room for a wrong claim: nothing can signal its absence
        assert started == ["sus0"]
        release.set()  # the thread ends: the worker may take a suspect again

        async def another_started() -> bool:
            return len(started) > 1

        await eventually(another_started)
    finally:
        release.set()
        worker.request_stop()
        await serving


async def _retried(queue: RedisTaskQueue, task_id: str) -> Any:
    task = await queue.get_task(task_id)
    return task if task is not None and task.retry_count >= 1 else None
