"""The seed's snippets (../shared/seed/redis-queue-design.md) run as written.

Each test copies one snippet of the seed as literally as the test harness allows:
`queue` is a connected RedisTaskQueue from the fixture (or constructed exactly as the
seed does, on this test's Redis and queue name), and every test then asserts what the
snippet left in Redis. The DistributedPipelineManager snippet imports
EnhancedPipelineManager from `pipeline`, as ARCHITECTURE.md says (utils never imports
the pipeline layer); the rest of it is the seed's text.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.support.redis_server import RedisServer, free_port
from tests.support.state import assert_single_state
from utils.redis_queue import (
    LeaseLost,
    RedisTask,
    RedisTaskQueue,
    RedisUnavailable,
    TaskFailed,
    TaskPriority,
    TaskState,
)

QueueFactory = Callable[..., RedisTaskQueue]


async def _stats_hash(raw: Redis, queue: RedisTaskQueue) -> dict[str, str]:
    raw_stats = await raw.hgetall(queue.keys.stats)
    return {k.decode(): v.decode() for k, v in raw_stats.items()}


async def _stop(worker_task: asyncio.Task[Any]) -> None:
    """Cancel the seed's `while True` worker and wait until it has really stopped.

    On CPython 3.11, asyncio.wait_for() drops a cancel that arrives just as its inner
    future finishes (gh-86296, fixed in 3.12), and redis-py sends every command through
    wait_for() when a socket timeout is set; so one cancel() can be lost and the loop
    runs on. Re-cancel until the task is done; each round waits at most one second.
    """
    while not worker_task.done():
        worker_task.cancel()
        await asyncio.wait({worker_task}, timeout=1)
    with contextlib.suppress(asyncio.CancelledError):
        await worker_task


# -- Key Components ---------------------------------------------------------------------


def test_seed_redis_task_has_every_field_the_seed_lists() -> None:
    seed_fields = {
        "task_id": str,
        "task_type": str,
        "payload": dict,
        "priority": int,
        "state": str,
        "retry_count": int,
        "max_retries": int,
        "created_at": str,
        "started_at": str | None,
        "completed_at": str | None,
        "worker_id": str | None,
        "error": str | None,
    }
    fields = {f.name for f in dataclasses.fields(RedisTask)}
    assert set(seed_fields) <= fields


@pytest.mark.usefixtures("make_queue")  # its teardown deletes this queue name's keys
async def test_seed_constructor_and_connect_reach_redis(
    redis_url: str, queue_name: str, raw_redis: Redis
) -> None:
    queue = RedisTaskQueue(
        queue_name=queue_name,  # the seed's "agentic_ai", made unique per test
        redis_url=redis_url,
        max_retries=3,
        task_ttl_seconds=3600,
        enable_dlq=True,
    )

    await queue.connect()

    try:
        assert await queue.redis.ping() is True
        assert queue.max_retries == 3 and queue.enable_dlq is True
        assert queue.dlq_key.startswith(f"agentic:{{{queue_name}}}:")
        task = await queue.enqueue("c1", "dev", {})
        assert task.max_retries == 3
        assert await raw_redis.hget(queue.keys.task("c1"), "state") == b"pending"
        stored = await queue.get_task("c1")
        assert stored is not None and stored.max_retries == 3
    finally:
        await queue.close()


@pytest.mark.usefixtures("make_queue")
async def test_seed_production_configuration_sets_retries_and_ttl(
    redis_url: str, queue_name: str, raw_redis: Redis
) -> None:
    queue = RedisTaskQueue(
        queue_name=queue_name,  # Queue namespace (the seed's "production")
        redis_url=redis_url,  # Redis connection
        max_retries=5,  # Increase for production
        task_ttl_seconds=86400,  # 24 hour TTL
        enable_dlq=True,  # Always enable in production
    )
    await queue.connect()
    try:
        await queue.enqueue("prod1", "deploy", {"env": "prod"})
        stored = await queue.get_task("prod1")
        assert stored is not None and stored.max_retries == 5
        assert await raw_redis.zscore(queue.keys.pending("deploy"), "prod1") is not None
        assert queue.task_ttl_seconds == 86400
    finally:
        await queue.close()


# -- Basic Operations -----------------------------------------------------------------


async def test_seed_enqueue_with_high_priority_stores_a_pending_task(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    # Enqueue with priority
    task = await queue.enqueue(
        task_id="dev_main_py",
        task_type="dev",
        payload={"file": "main.py", "requirements": "Create Flask app"},
        priority=TaskPriority.HIGH.value,
    )

    assert task.task_id == "dev_main_py" and task.task_type == "dev"
    assert task.priority == 2 and task.state == TaskState.PENDING
    assert task.payload == {"file": "main.py", "requirements": "Create Flask app"}
    assert task.retry_count == 0 and task.max_retries == 3 and task.created_at
    await assert_single_state(raw_redis, queue, "dev_main_py", "pending")
    assert await raw_redis.hget(queue.keys.task("dev_main_py"), "type") == b"dev"
    assert (await _stats_hash(raw_redis, queue))["enqueued"] == "1"
    stored = await queue.get_task("dev_main_py")
    assert stored is not None and stored.payload == task.payload
    assert stored.priority == 2 and stored.task_type == "dev" and stored.max_retries == 3
    # HIGH sorts ahead of NORMAL work enqueued later
    await queue.enqueue("later_normal", "dev", {}, priority=TaskPriority.NORMAL.value)
    pending = await raw_redis.zrange(queue.keys.pending("dev"), 0, -1)
    assert pending == [b"dev_main_py", b"later_normal"]


async def test_seed_worker_loop_completes_tasks_and_retries_failures(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    attempts: dict[str, int] = {}

    async def process_task(task: RedisTask) -> dict[str, Any]:
        attempts[task.task_id] = attempts.get(task.task_id, 0) + 1
        if task.payload.get("flaky") and attempts[task.task_id] == 1:
            raise RuntimeError("flaky the first time")
        if task.payload.get("broken"):
            raise RuntimeError("always broken")
        return {"done": task.payload["file"], "by": task.worker_id}

    async def worker(worker_id):
        while True:
            # Blocking dequeue with timeout
            task = await queue.dequeue(worker_id, timeout=5.0)

            if not task:
                continue

            try:
                # Process task
                result = await process_task(task)
                await queue.complete_task(task.task_id, result)
            except Exception as e:
                # Fail with retry
                await queue.fail_task(task.task_id, str(e), retry=True)

    await queue.enqueue("ok1", "dev", {"file": "a.py"}, priority=TaskPriority.HIGH.value)
    await queue.enqueue("ok2", "qa", {"file": "b.py"})
    await queue.enqueue("flaky", "fix", {"file": "c.py", "flaky": True})
    await queue.enqueue("broken", "dev", {"file": "d.py", "broken": True})
    workers = [asyncio.create_task(worker(f"worker-{i}")) for i in (1, 2)]
    try:
        ok1 = await queue.wait_for_result("ok1", timeout=10)
        ok2 = await queue.wait_for_result("ok2", timeout=10)
        flaky = await queue.wait_for_result("flaky", timeout=10)
        with pytest.raises(TaskFailed) as failed:
            await queue.wait_for_result("broken", timeout=10)
    finally:
        for w in workers:
            await _stop(w)
    assert ok1["done"] == "a.py" and ok1["by"] in {"worker-1", "worker-2"}
    assert ok2["done"] == "b.py" and flaky["done"] == "c.py"
    assert failed.value.state == TaskState.DEAD_LETTER and failed.value.error == "always broken"
    assert attempts == {"ok1": 1, "ok2": 1, "flaky": 2, "broken": 4}  # 1 run + 3 retries

    for task_id in ("ok1", "ok2", "flaky"):
        await assert_single_state(raw_redis, queue, task_id, "completed")
    await assert_single_state(raw_redis, queue, "broken", "dead_letter")
    flaky_task = await queue.get_task("flaky")
    assert flaky_task is not None and flaky_task.retry_count == 1 and flaky_task.error is None
    broken_task = await queue.get_task("broken")
    assert broken_task is not None and broken_task.retry_count == 3
    stats = await _stats_hash(raw_redis, queue)
    assert stats["completed"] == "3" and stats["failed"] == "1" and stats["retried"] == "4"
    assert stats["dead_lettered"] == "1"


async def test_seed_monitoring_reports_sizes_and_success_rate_percent(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    for i in range(6):
        await queue.enqueue(f"m{i}", "dev", {"i": i})
    for i in range(5):
        task = await queue.dequeue("w", timeout=1)
        assert task is not None and task.task_id == f"m{i}"
    for i in range(3):
        await queue.complete_task(f"m{i}", {"i": i})
    await queue.fail_task("m3", "Invalid task", retry=False)
    # m4 stays processing, m5 stays pending

    # Get queue sizes
    sizes = await queue.get_queue_size()
    print(f"Pending: {sizes['pending']}")
    print(f"Processing: {sizes['processing']}")
    print(f"DLQ: {sizes['dlq']}")

    # Get statistics
    stats = await queue.get_statistics()
    print(f"Success Rate: {stats['success_rate']}%")

    assert sizes["pending"] == 1 == await raw_redis.zcard(queue.keys.pending("dev"))
    assert sizes["processing"] == 1 == await raw_redis.zcard(queue.keys.processing)
    assert sizes["dlq"] == 1 == await raw_redis.scard(queue.keys.dlq)
    assert sizes["completed"] == 3 == await raw_redis.zcard(queue.keys.completed)
    assert stats["success_rate"] == 75.0  # 3 completed of 4 finished, in percent
    assert stats["pending"] == 1 and stats["processing"] == 1 and stats["dlq"] == 1
    counters = await _stats_hash(raw_redis, queue)
    assert counters["completed"] == "3" and counters["failed"] == "1"


# -- Priority Levels --------------------------------------------------------------------


def test_seed_priority_levels_are_the_seed_ints() -> None:
    assert issubclass(TaskPriority, int)
    assert [(p.name, p.value) for p in TaskPriority] == [
        ("LOW", 0),
        ("NORMAL", 1),
        ("HIGH", 2),
        ("CRITICAL", 3),
    ]


async def test_seed_priority_order_is_critical_high_normal_low_and_fifo_within(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    for round_ in (1, 2):
        for p in (TaskPriority.LOW, TaskPriority.NORMAL, TaskPriority.HIGH, TaskPriority.CRITICAL):
            await queue.enqueue(f"{p.name.lower()}-{round_}", "dev", {}, priority=p.value)
    stats = await queue.get_statistics()
    assert stats["pending_by_priority"] == {"low": 2, "normal": 2, "high": 2, "critical": 2}

    order = []
    while (task := await queue.dequeue("w", timeout=0)) is not None:
        order.append(task.task_id)
        assert task.priority == TaskPriority[task.task_id.split("-")[0].upper()].value

    assert order == [
        "critical-1",
        "critical-2",
        "high-1",
        "high-2",
        "normal-1",
        "normal-2",
        "low-1",
        "low-2",
    ]
    assert await raw_redis.zcard(queue.keys.pending("dev")) == 0
    assert await raw_redis.zcard(queue.keys.processing) == 8


async def test_seed_priority_orders_across_task_types(queue: RedisTaskQueue) -> None:
    await queue.enqueue("qa-low", "qa", {}, priority=TaskPriority.LOW.value)
    await queue.enqueue("dev-normal", "dev", {}, priority=TaskPriority.NORMAL.value)
    await queue.enqueue("fix-critical", "fix", {}, priority=TaskPriority.CRITICAL.value)
    await queue.enqueue("deploy-high", "deploy", {}, priority=TaskPriority.HIGH.value)
    order = []
    while (task := await queue.dequeue("w", timeout=0)) is not None:
        order.append(task.task_id)
    assert order == ["fix-critical", "deploy-high", "dev-normal", "qa-low"]


# -- Retry Logic ------------------------------------------------------------------------


async def test_seed_fail_with_retry_backs_off_then_dead_letters(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.enqueue("flaky", "dev", {})
    task_id = "flaky"
    outcomes = []
    for attempt in range(1, 5):
        # a delayed retry comes due while dequeue blocks in Redis (FAST_RETRY: 50-200 ms)
        task = await queue.dequeue("w", timeout=2)
        assert task is not None and task.task_id == task_id and task.attempts == attempt

        # Fail with retry
        state = await queue.fail_task(task_id, error="Temporary failure", retry=True)

        due = await raw_redis.zscore(queue.keys.delayed, task_id)
        seconds, micros = await raw_redis.time()
        wait_ms = None if due is None else due - (seconds * 1000 + micros // 1000)
        outcomes.append((state, wait_ms))
        stored = await queue.get_task(task_id)
        assert stored is not None and stored.error == "Temporary failure"
        assert stored.retry_count == min(attempt, 3)

    assert outcomes[0] == (TaskState.PENDING, None)  # attempt 1: immediate retry
    assert outcomes[1][0] == TaskState.DELAYED and 0 < outcomes[1][1] <= 50
    assert outcomes[2][0] == TaskState.DELAYED and 50 < outcomes[2][1] <= 100
    assert outcomes[3] == (TaskState.DEAD_LETTER, None)  # after max retries: DLQ
    await assert_single_state(raw_redis, queue, task_id, "dead_letter")
    stats = await _stats_hash(raw_redis, queue)
    assert stats["retried"] == "3" and stats["dead_lettered"] == "1"


async def test_seed_fail_without_retry_dead_letters_at_once(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.enqueue("bad", "dev", {})
    task = await queue.dequeue("w", timeout=1)
    assert task is not None
    task_id = task.task_id

    # Fail permanently (no retry)
    state = await queue.fail_task(task_id, error="Invalid task", retry=False)

    assert state == TaskState.DEAD_LETTER
    await assert_single_state(raw_redis, queue, "bad", "dead_letter")
    stored = await queue.get_task("bad")
    assert stored is not None and stored.retry_count == 0 and stored.error == "Invalid task"
    assert stored.completed_at is not None
    assert await raw_redis.hget(queue.keys.task("bad"), "state") == b"dead_letter"


# -- Dead Letter Queue ------------------------------------------------------------------


async def test_seed_dlq_loop_lists_dead_letters_and_retries_the_chosen_ones(
    queue: RedisTaskQueue, raw_redis: Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    for task_id in ("dlq-temp", "dlq-perm"):
        await queue.enqueue(task_id, "dev", {"id": task_id}, priority=TaskPriority.HIGH.value)
    for task_id, error in (("dlq-temp", "Temporary failure"), ("dlq-perm", "Invalid task")):
        task = await queue.dequeue("w", timeout=1)
        assert task is not None and task.task_id == task_id
        await queue.fail_task(task_id, error=error, retry=False)

    def should_retry(task: RedisTask) -> bool:
        return "Temporary" in (task.error or "")

    # List DLQ tasks
    dlq_tasks = await queue.list_tasks(state=TaskState.DEAD_LETTER)

    for task in dlq_tasks:
        print(f"Failed: {task.task_id}, Error: {task.error}")

        # Fix and retry manually
        if should_retry(task):
            await queue.retry_dlq_task(task.task_id)

    assert sorted(capsys.readouterr().out.splitlines()) == [
        "Failed: dlq-perm, Error: Invalid task",
        "Failed: dlq-temp, Error: Temporary failure",
    ]
    await assert_single_state(raw_redis, queue, "dlq-temp", "pending")
    await assert_single_state(raw_redis, queue, "dlq-perm", "dead_letter")
    retried = await queue.get_task("dlq-temp")
    assert retried is not None and retried.retry_count == 0 and retried.error is None
    assert retried.priority == TaskPriority.HIGH.value  # keeps its priority
    assert await raw_redis.smembers(queue.dlq_key) == {b"dlq-perm"}
    again = await queue.dequeue("w", timeout=1)
    assert again is not None and again.task_id == "dlq-temp" and again.payload == {"id": "dlq-temp"}


# -- Monitoring & Operations ------------------------------------------------------------


async def test_seed_health_check_is_healthy_with_the_seed_fields(
    queue: RedisTaskQueue,
) -> None:
    await queue.enqueue("h1", "dev", {})
    await queue.enqueue("h2", "dev", {})
    await queue.dequeue("w", timeout=1)

    async def health_check():
        """Check queue health."""
        try:
            await queue.redis.ping()
            stats = await queue.get_statistics()

            return {
                "status": "healthy",
                "pending": stats["pending"],
                "processing": stats["processing"],
                "dlq_size": stats["dlq"],
                "success_rate": stats["success_rate"],
            }
        except Exception as e:
            return {"status": "unhealthy", "error": str(e)}

    assert await health_check() == {
        "status": "healthy",
        "pending": 1,
        "processing": 1,
        "dlq_size": 0,
        "success_rate": 100.0,
    }


async def test_seed_health_check_is_unhealthy_when_redis_is_gone(
    private_redis: RedisServer,
) -> None:
    queue = RedisTaskQueue(
        queue_name="health", redis_url=private_redis.url, socket_timeout=1, connect_timeout=1
    )
    await queue.connect()

    async def health_check():
        """Check queue health."""
        try:
            await queue.redis.ping()
            stats = await queue.get_statistics()

            return {
                "status": "healthy",
                "pending": stats["pending"],
                "processing": stats["processing"],
                "dlq_size": stats["dlq"],
                "success_rate": stats["success_rate"],
            }
        except Exception as e:
            return {"status": "unhealthy", "error": str(e)}

    try:
        assert (await health_check())["status"] == "healthy"
        private_redis.kill()
        health = await asyncio.wait_for(health_check(), timeout=5)
        assert health["status"] == "unhealthy" and health["error"]
    finally:
        await queue.close()


async def test_seed_cleanup_clears_old_completed_tasks_only(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.enqueue("done1", "dev", {})
    await queue.enqueue("still-pending", "dev", {})
    task = await queue.dequeue("w", timeout=1)
    assert task is not None and task.task_id == "done1"
    await queue.complete_task("done1", {"ok": True})

    # Clear old completed tasks (daily)
    removed = await queue.clear_completed(older_than_seconds=86400)

    assert removed == 0  # finished just now: not older than a day
    assert await raw_redis.exists(queue.keys.task("done1")) == 1
    assert await raw_redis.zscore(queue.keys.completed, "done1") is not None

    removed = await queue.clear_completed(older_than_seconds=0)

    assert removed == 1
    assert await raw_redis.exists(queue.keys.task("done1")) == 0
    assert await raw_redis.zcard(queue.keys.completed) == 0
    await assert_single_state(raw_redis, queue, "still-pending", "pending")


async def test_seed_dlq_size_alert_fires_above_100(queue: RedisTaskQueue) -> None:
    alerts = []

    def alert(message: str) -> None:
        alerts.append(message)

    await queue.enqueue_many(
        {"task_id": f"d{i}", "task_type": "dev", "payload": {}} for i in range(101)
    )
    for task in await queue.claim("w", 101):
        await queue.fail_task(task.task_id, error="Invalid task", retry=False)

    # Monitor DLQ size
    dlq_size = await queue.redis.scard(queue.dlq_key)
    if dlq_size > 100:
        alert("DLQ threshold exceeded")

    assert dlq_size == 101
    assert alerts == ["DLQ threshold exceeded"]


async def test_seed_queue_growth_check_reads_pending_from_statistics(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.enqueue_many(
        {"task_id": f"g{i}", "task_type": "dev", "payload": {"i": i}} for i in range(1001)
    )
    scaled_up = False

    # Check worker capacity
    stats = await queue.get_statistics()
    if stats["pending"] > 1000:
        # Scale up workers or increase worker pool
        scaled_up = True

    assert scaled_up and stats["pending"] == 1001
    assert await raw_redis.zcard(queue.keys.pending("dev")) == 1001


# -- Troubleshooting --------------------------------------------------------------------


async def test_seed_check_stale_tasks_fails_tasks_of_a_dead_worker(
    queue: RedisTaskQueue, make_queue: QueueFactory, raw_redis: Redis
) -> None:
    crashed_worker = make_queue()  # another process that took a task, then hung
    await crashed_worker.connect()
    await queue.enqueue("stuck", "dev", {"file": "main.py"})
    stuck = await crashed_worker.dequeue("worker-crashed", timeout=1)
    assert stuck is not None and stuck.started_at is not None

    # Implement worker heartbeat
    # Mark stale tasks as failed after timeout
    async def check_stale_tasks(timeout_seconds=300):
        processing = await queue.list_tasks(state=TaskState.PROCESSING)
        for task in processing:
            if task.started_at:
                started = datetime.fromisoformat(task.started_at)
                if datetime.now() - started > timedelta(seconds=timeout_seconds):
                    await queue.fail_task(task.task_id, "Worker timeout", retry=True)

    await check_stale_tasks()  # started just now: not stale after 300 s
    await assert_single_state(raw_redis, queue, "stuck", "processing")

    await check_stale_tasks(timeout_seconds=0)

    await assert_single_state(raw_redis, queue, "stuck", "pending")  # first retry: immediate
    task = await queue.get_task("stuck")
    assert task is not None and task.error == "Worker timeout" and task.retry_count == 1
    # The hung worker wakes up later: its completion is fenced off, not applied.
    with pytest.raises(LeaseLost):
        await crashed_worker.complete_task("stuck", {"late": True})
    await assert_single_state(raw_redis, queue, "stuck", "pending")


async def test_seed_connect_with_retry_returns_on_first_success(
    queue: RedisTaskQueue,
) -> None:
    await queue.close()

    # Implement connection retry
    async def connect_with_retry(max_attempts=5):
        for attempt in range(max_attempts):
            try:
                await queue.connect()
                return
            except Exception:
                if attempt < max_attempts - 1:
                    await asyncio.sleep(2**attempt)
                else:
                    raise

    await asyncio.wait_for(connect_with_retry(), timeout=2)  # no backoff taken
    assert await queue.redis.ping() is True


async def test_seed_connect_with_retry_reraises_after_the_last_attempt() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    queue = RedisTaskQueue(queue_name="nowhere", redis_url=url, connect_timeout=1)

    async def connect_with_retry(max_attempts=5):
        for attempt in range(max_attempts):
            try:
                await queue.connect()
                return
            except Exception:
                if attempt < max_attempts - 1:
                    await asyncio.sleep(2**attempt)
                else:
                    raise

    with pytest.raises(RedisUnavailable, match=r"127\.0\.0\.1"):
        await connect_with_retry(max_attempts=1)


async def test_seed_connect_with_retry_survives_a_redis_that_starts_late(
    private_redis: RedisServer,
) -> None:
    private_redis.kill()
    first_failure = asyncio.Event()

    class CountingQueue(RedisTaskQueue):
        attempts = 0

        async def connect(self) -> None:
            CountingQueue.attempts += 1
            try:
                await super().connect()
            except RedisUnavailable:
                first_failure.set()
                raise

    queue = CountingQueue(queue_name="late", redis_url=private_redis.url, connect_timeout=1)

    async def connect_with_retry(max_attempts=5):
        for attempt in range(max_attempts):
            try:
                await queue.connect()
                return
            except Exception:
                if attempt < max_attempts - 1:
                    await asyncio.sleep(2**attempt)
                else:
                    raise

    connecting = asyncio.create_task(connect_with_retry(max_attempts=3))
    try:
        await first_failure.wait()
        await asyncio.to_thread(private_redis.start)  # during the seed's 1 s backoff
        await asyncio.wait_for(connecting, timeout=5)
        assert CountingQueue.attempts == 2
        await queue.enqueue("after-start", "dev", {})
        assert await queue.redis.hget(queue.keys.task("after-start"), "state") == b"pending"
    finally:
        connecting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await connecting
        await queue.close()


# The seed's "EnhancedPipelineManager + Redis" snippet, as written but for the import.
from pipeline import EnhancedPipelineManager  # noqa: E402 - next to the snippet it serves


class SeedDistributedPipelineManager(EnhancedPipelineManager):
    """Pipeline with Redis-backed distributed queue."""

    def __init__(self, redis_url="redis://localhost:6379", **kwargs):  # type: ignore[no-untyped-def]
        super().__init__(**kwargs)
        self.redis_queue = RedisTaskQueue(redis_url=redis_url)

    async def start(self):  # type: ignore[no-untyped-def]
        """Start pipeline with Redis queue."""
        await self.redis_queue.connect()
        await super().start()

    async def submit_dev_task(self, task_id, subtask, **kwargs):  # type: ignore[no-untyped-def]
        """Submit via Redis instead of local queue."""
        await self.redis_queue.enqueue(
            task_id=task_id,
            task_type="dev",
            payload={"subtask": subtask, **kwargs},
            priority=self.priority_assigner.assign_priority(subtask),
        )


@pytest.mark.parametrize("which", ["seed's subclass", "shipped class"])
async def test_seed_distributed_pipeline_manager_sends_dev_subtasks_with_their_priority(
    redis_url: str, raw_redis: Redis, which: str
) -> None:
    from pipeline import DistributedPipelineManager

    manager_class: Any = (
        SeedDistributedPipelineManager if which == "seed's subclass" else DistributedPipelineManager
    )
    manager = manager_class(redis_url=redis_url)
    task_id = f"seed-pipeline-{uuid.uuid4().hex[:8]}"
    subtask = {"id": "calc", "stage": "dev", "description": "calculator", "critical_path": True}
    await manager.start()
    try:
        await manager.submit_dev_task(task_id, subtask, run_id="r-1")
        task = await manager.redis_queue.get_task(task_id)
    finally:
        await manager.stop()
        await manager.redis_queue.close()
        # the seed's default queue "agentic_ai": remove only the task this test made
        keys = manager.redis_queue.keys
        await raw_redis.zrem(keys.pending("dev"), task_id)
        await raw_redis.delete(keys.task(task_id))
    assert task is not None and task.state == TaskState.PENDING and task.task_type == "dev"
    assert task.priority == TaskPriority.HIGH  # dev, on the critical path
    assert task.payload == {"subtask": subtask, "run_id": "r-1"}
