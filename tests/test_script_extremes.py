"""Every script at the extremes of its inputs, then invariant 1 over every task.

Invariant 9 (ARCHITECTURE.md): no input size may make a script fail after its first write.
Each test drives one script (through the public API, and where the API caps or chunks a
list, straight at the script too) with counts, lengths and numbers of task types far past
what the demo uses, and then reads the whole queue: every task in exactly the structure
its state names, a lease exactly while processing, nothing lost.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.support.processes import ROOT, agentic_argv, agentic_env, wait_exit
from tests.support.state import assert_every_task_in_one_state
from utils.redis_queue import RedisTaskQueue, Settlement, TaskPriority, TaskState, scripts
from utils.redis_queue.codec import MAX_ERROR_CHARS
from utils.redis_queue.handlers import HandlerRegistry
from utils.redis_queue.queue import MAX_CLAIM
from utils.redis_queue.registry import WorkerInfo, list_workers, record_worker
from utils.redis_queue.worker import Worker

QueueFactory = Callable[..., RedisTaskQueue]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

MANY = 10_000
MANY_TYPES = 2_500  # more than the script's unpack() slice and the validator's type cache


def _tasks(n: int, types: int = 1, **extra: Any) -> list[dict[str, Any]]:
    return [
        {
            "task_id": f"x{i}",
            "task_type": f"type{i % types}",
            "payload": {"i": i},
            "priority": i % 4,
            **extra,
        }
        for i in range(n)
    ]


async def _states(queue: RedisTaskQueue, raw: Redis) -> dict[str, int]:
    view = await assert_every_task_in_one_state(raw, queue)
    counts: dict[str, int] = {}
    for record in view.records.values():
        counts[record["state"]] = counts.get(record["state"], 0) + 1
    return counts


async def test_one_claim_of_ten_thousand_tasks_leases_every_task_it_takes(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.enqueue_many(_tasks(MANY))
    claimed = await queue.claim("w", MANY)
    assert len(claimed) == MANY and len({t.task_id for t in claimed}) == MANY
    assert await _states(queue, raw_redis) == {"processing": MANY}
    assert (await queue.get_queue_size())["processing"] == MANY
    # Priority order holds across the script calls the claim was split into.
    priorities = [t.priority for t in claimed]
    assert priorities == sorted(priorities, reverse=True)


async def test_the_claim_script_caps_any_count_instead_of_failing(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.enqueue_many(_tasks(3 * MAX_CLAIM))
    for count in (10**9, 10**6, MAX_CLAIM + 1):
        batch = await queue._claim_call(queue.keys, "w", count, [], True, None, False)  # uncapped
        assert len(batch.tasks) == MAX_CLAIM
    assert await _states(queue, raw_redis) == {"processing": 3 * MAX_CLAIM}


async def test_claim_across_thousands_of_types_keeps_priority_order(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.enqueue_many(_tasks(2 * MANY_TYPES, types=MANY_TYPES))
    served = [f"type{i}" for i in range(MANY_TYPES)]
    first = await queue.claim("w", 3 * MAX_CLAIM // 2, task_types=served)
    rest = await queue.claim("w", MANY)  # every type, found through the types set
    claimed = first + rest
    assert len({t.task_id for t in claimed}) == 2 * MANY_TYPES
    priorities = [t.priority for t in first]
    assert priorities == sorted(priorities, reverse=True)
    # Within a priority, FIFO across types: enqueue order is the id's number.
    for batch in (first, rest):
        order = [(-t.priority, int(t.task_id[1:])) for t in batch]
        assert order == sorted(order)
    assert await _states(queue, raw_redis) == {"processing": 2 * MANY_TYPES}
    sizes = await queue.get_statistics()
    assert sizes["processing"] == 2 * MANY_TYPES and sizes["pending"] == 0


async def test_one_enqueue_script_call_with_thousands_of_new_types(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    new = [queue._new_task(**t) for t in _tasks(MANY_TYPES, types=MANY_TYPES)]
    reply = await queue.run(
        scripts.enqueue(queue.keys, new, events=queue.events_arg)
    )  # one call, > 1,000 types
    assert reply[1:] == [1] * MANY_TYPES
    assert await raw_redis.scard(queue.keys.types) == MANY_TYPES
    assert await _states(queue, raw_redis) == {"pending": MANY_TYPES}
    stats = await queue.get_statistics()
    assert stats["pending"] == MANY_TYPES and len(stats["pending_by_type"]) == MANY_TYPES


async def test_largest_payload_result_and_error_settle_whole(
    make_queue: QueueFactory, raw_redis: Redis
) -> None:
    limit = 1_048_576
    queue = make_queue(max_payload_bytes=limit)
    await queue.connect()
    big = "p" * (limit - 100)
    await queue.enqueue("big", "dev", {"blob": big}, priority=3, meta={"m": "v" * 10_000})
    await queue.enqueue_many(_tasks(3))
    task = await queue.dequeue("w", timeout=1)
    assert task is not None and task.payload == {"blob": big}
    await queue.fail_task("big", "e" * limit, retry=True)  # stored cut to MAX_ERROR_CHARS
    task = await queue.dequeue("w", timeout=1)
    assert task is not None and task.task_id == "big"
    assert task.error == "e" * MAX_ERROR_CHARS + "... [truncated]"
    await queue.complete_task("big", {"r": big})
    stored = await queue.get_task("big")
    assert stored is not None and stored.result == {"r": big} and stored.error is None
    await _states(queue, raw_redis)


async def test_settle_many_of_thousands_with_every_outcome(
    make_queue: QueueFactory, raw_redis: Redis
) -> None:
    queue = make_queue(max_retries=1)  # finished tasks kept: no trim mid-test
    await queue.connect()
    await queue.enqueue_many(_tasks(MANY, types=7))
    claimed = await queue.claim("w", MANY)
    settlements = []
    for i, task in enumerate(claimed):
        kind = i % 5
        if kind == 0:
            settlements.append(Settlement(task.task_id, task.lease_token, result={"i": i}))
        elif kind == 1:
            settlements.append(Settlement(task.task_id, task.lease_token, error="again"))
        elif kind == 2:
            settlements.append(Settlement(task.task_id, task.lease_token, error="x", retry=False))
        elif kind == 3:
            settlements.append(Settlement(task.task_id, (task.lease_token or 0) + 10**9, result=1))
        else:
            settlements.append(Settlement(task.task_id, task.lease_token, error="d", delay=3600))
    outcomes = await queue.settle_many(settlements)
    kinds = [type(o).__name__ if not isinstance(o, TaskState) else o.value for o in outcomes]
    assert kinds.count("completed") == MANY // 5
    assert kinds.count("dead_letter") == MANY // 5
    assert kinds.count("LeaseLost") == MANY // 5
    assert kinds.count("pending") == MANY // 5 and kinds.count("delayed") == MANY // 5
    assert await _states(queue, raw_redis) == {
        "completed": MANY // 5,
        "pending": MANY // 5,
        "dead_letter": MANY // 5,
        "processing": MANY // 5,  # the refused (stale) settlements left their lease alone
        "delayed": MANY // 5,
    }


async def test_admin_scripts_over_ten_thousand_tasks(
    make_queue: QueueFactory, raw_redis: Redis
) -> None:
    queue = make_queue(max_retries=0)
    await queue.connect()
    await queue.enqueue_many(_tasks(MANY, types=3))
    claimed = await queue.claim("w", MANY)
    half = MANY // 2
    await queue.settle_many(
        Settlement(t.task_id, t.lease_token, result=None)
        if i < half
        else Settlement(t.task_id, t.lease_token, error="no")
        for i, t in enumerate(claimed)
    )
    assert await _states(queue, raw_redis) == {"completed": half, "dead_letter": half}
    for task_id in [t.task_id for t in claimed[half : half + 1500]]:
        await queue.retry_dlq_task(task_id)
    for task_id in [t.task_id for t in claimed[half : half + 500]]:
        assert await queue.cancel(task_id) == TaskState.CANCELLED
    assert await _states(queue, raw_redis) == {
        "completed": half,
        "dead_letter": half - 1500,
        "pending": 1000,
        "cancelled": 500,
    }
    assert await queue.purge_dlq() == half - 1500
    assert await queue.clear_completed(older_than_seconds=0) == half + 500
    assert await _states(queue, raw_redis) == {"pending": 1000}
    assert await queue.get_queue_size() == {
        "pending": 1000,
        "delayed": 0,
        "processing": 0,
        "completed": 0,
        "failed": 0,
        "cancelled": 0,
        "dlq": 0,
    }
    # The chunked scripts cap any limit they are handed.
    assert await queue.run(scripts.clear_finished(queue.keys, age_ms=0, limit=10**9)) == [0]
    assert await queue.run(scripts.purge_dlq(queue.keys, limit=10**9, events=0)) == [0]


async def test_extend_and_release_of_thousands_of_leases(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.enqueue_many(_tasks(3000, types=MANY_TYPES))
    claimed = await queue.claim("w", 3000)
    for task in claimed[:1500]:
        assert await queue.extend_lease(task.task_id, seconds=10**6) is False
    for task in claimed[1500:]:
        await queue.release_task(task.task_id)
    assert await _states(queue, raw_redis) == {"processing": 1500, "pending": 1500}


async def test_worker_registry_with_a_thousand_workers(queue: RedisTaskQueue) -> None:
    for i in range(1000):
        info = WorkerInfo(f"w{i}", f"h{i}", i, ["t" * 64] * 50, 5000, "2026-01-01T00:00:00Z", 5)
        await record_worker(queue, info)
    assert len(await list_workers(queue)) == 1000


async def test_worker_with_concurrency_five_thousand_drains_ten_thousand_tasks(
    make_queue: QueueFactory, raw_redis: Redis
) -> None:
    queue = make_queue()
    await queue.connect()
    await queue.enqueue_many(_tasks(MANY, priority=TaskPriority.LOW.value))
    handlers = HandlerRegistry()

    @handlers.handler("type0")
    async def noop(ctx: Any) -> None:
        return None

    stats = await Worker(queue, handlers, concurrency=5000, burst=True).run()
    assert stats.done == MANY
    assert await _states(queue, raw_redis) == {"completed": MANY}


async def test_cli_burst_worker_with_concurrency_five_thousand(
    queue: RedisTaskQueue, raw_redis: Redis, redis_url: str
) -> None:
    await queue.enqueue_many(
        {"task_id": f"c{i}", "task_type": "noop", "payload": {}} for i in range(MANY)
    )
    argv = agentic_argv(
        "worker", "--app", "tests.support.worker_apps:registry", "--burst", "--concurrency", "5000"
    )
    proc = subprocess.Popen(argv, cwd=ROOT, env=agentic_env(redis_url, queue.queue_name))
    try:
        assert await wait_exit(proc, 150) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert await _states(queue, raw_redis) == {"completed": MANY}
