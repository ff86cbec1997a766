"""A partitioned queue on one Redis: where tasks live, priority across partitions, every
report summed over partitions, the stored partition count, workers draining it all.
(tests/test_cluster.py runs the same layout on a real Redis Cluster.)"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.support.processes import ROOT, agentic_argv, agentic_env
from tests.support.worker_apps import registry
from utils.redis_queue import (
    RedisTaskQueue,
    TaskPriority,
    TaskState,
    TopologyError,
)
from utils.redis_queue.keys import partition_of
from utils.redis_queue.models import Settlement
from utils.redis_queue.worker import Worker

pytestmark = pytest.mark.timeout(60)
PARTS = 6


@pytest.fixture
async def pq(make_queue: Callable[..., RedisTaskQueue]) -> AsyncIterator[RedisTaskQueue]:
    q = make_queue(partitions=PARTS)
    await q.connect()
    yield q


def _ids_in(partition: int, count: int, prefix: str = "t") -> list[str]:
    """`count` task ids that live in `partition`."""
    out, i = [], 0
    while len(out) < count:
        task_id = f"{prefix}{i}"
        if partition_of(task_id, PARTS) == partition:
            out.append(task_id)
        i += 1
    return out


def _tasks(ids: list[str], priority: Any = TaskPriority.NORMAL) -> list[dict[str, Any]]:
    return [{"task_id": i, "task_type": "noop", "payload": {}, "priority": priority} for i in ids]


async def test_tasks_live_in_the_partition_their_id_names(
    pq: RedisTaskQueue, raw_redis: Redis, queue_name: str
) -> None:
    ids = [f"t{i}" for i in range(600)]
    await pq.enqueue_many(_tasks(ids))
    tags = set()
    async for key in raw_redis.scan_iter(match=f"agentic:{{{queue_name}:*}}:task:*"):
        tags.add(key.split(b"}")[0])
    assert len(tags) == PARTS
    for task_id in ids:
        assert await raw_redis.exists(pq.keys_for(task_id).task(task_id))
    # nothing of a task is under the queue-wide tag
    assert not [k async for k in raw_redis.scan_iter(match=f"agentic:{{{queue_name}}}:task:*")]
    sizes = await pq.get_queue_size()
    assert sizes["pending"] == 600
    stats = await pq.get_statistics()
    assert stats["total_enqueued"] == 600 and stats["pending_by_priority"]["normal"] == 600


async def test_re_enqueue_of_an_id_finds_the_task_in_its_partition(pq: RedisTaskQueue) -> None:
    first = await pq.enqueue("same", "noop", {"n": 1})
    again = await pq.enqueue("same", "noop", {"n": 2})
    assert again.payload == first.payload == {"n": 1}
    assert (await pq.get_queue_size())["pending"] == 1
    many = await pq.enqueue_many(_tasks(["same", "other"]))
    assert [t.task_id for t in many] == ["same", "other"] and many[0].payload == {"n": 1}
    assert (await pq.get_statistics())["total_enqueued"] == 2


async def test_enqueue_many_keeps_the_callers_order_across_partitions(pq: RedisTaskQueue) -> None:
    ids = [f"o{i}" for i in range(2500)]  # several chunks in some partitions
    random.Random(3).shuffle(ids)
    out = await pq.enqueue_many(_tasks(ids))
    assert [t.task_id for t in out] == ids


async def test_get_wait_cancel_and_the_dlq_work_across_partitions(pq: RedisTaskQueue) -> None:
    ids = [_ids_in(p, 1, "x")[0] for p in range(PARTS)]
    await pq.enqueue_many(_tasks(ids))
    claimed = await pq.claim("w", PARTS)
    assert sorted(t.task_id for t in claimed) == sorted(ids)
    done, dead, running, *_ = ids
    await pq.complete_task(done, {"ok": done})
    assert await pq.wait_for_result(done, timeout=5) == {"ok": done}
    assert await pq.fail_task(dead, "boom", retry=False) == TaskState.DEAD_LETTER
    assert await pq.cancel(running) == TaskState.PROCESSING
    sizes = await pq.get_queue_size()
    assert sizes["dlq"] == 1 and sizes["completed"] == 1 and sizes["processing"] == PARTS - 2
    retried = await pq.retry_dlq_task(dead)
    assert retried.state == TaskState.PENDING
    (again,) = await pq.claim("w", 1, timeout=5)
    assert again.task_id == dead
    await pq.fail_task(dead, "boom", retry=False)
    assert [t.task_id for t in await pq.list_tasks(TaskState.DEAD_LETTER)] == [dead]
    assert await pq.purge_dlq() == 1
    assert (await pq.get_queue_size())["dlq"] == 0


async def test_a_claim_takes_the_best_priority_of_any_partition(pq: RedisTaskQueue) -> None:
    await pq.enqueue_many(_tasks([f"low{i}" for i in range(60)], TaskPriority.LOW))
    urgent = _ids_in(4, 1, "urgent")[0]
    await pq.enqueue(urgent, "noop", {}, priority=TaskPriority.CRITICAL)
    (first,) = await pq.claim("w", 1)
    assert first.task_id == urgent
    high = [f"high{i}" for i in range(12)]  # spread over the partitions
    await pq.enqueue_many(_tasks(high, TaskPriority.HIGH))
    batch = await pq.claim("w", 12)
    assert sorted(t.task_id for t in batch) == sorted(high)


async def test_one_consumer_claims_in_priority_order_with_no_inversion(
    pq: RedisTaskQueue,
) -> None:
    rng = random.Random(7)
    priorities = {f"r{i}": rng.choice(list(TaskPriority)) for i in range(2000)}
    await pq.enqueue_many(
        [
            {"task_id": i, "task_type": "noop", "payload": {}, "priority": p}
            for i, p in priorities.items()
        ]
    )
    remaining = dict(priorities)
    inversions = 0
    while remaining:
        for task in await pq.claim("w", rng.randint(1, 25)):
            best_left = max(remaining.values())
            inversions += priorities[task.task_id] < best_left
            del remaining[task.task_id]
    assert inversions == 0


async def test_a_busy_consumer_sees_urgent_work_that_arrives_in_another_partition(
    pq: RedisTaskQueue,
) -> None:
    await pq.enqueue_many(_tasks(_ids_in(0, 300, "bulk")))
    assert len(await pq.claim("w", 10)) == 10  # the heads are now known
    urgent = _ids_in(3, 1, "urgent")[0]
    await pq.enqueue(urgent, "noop", {}, priority=TaskPriority.CRITICAL)
    # the consumer was not waiting, so it saw no wake-up: its view of partition 3 goes
    # stale within HEAD_TTL and the next claims look there again
    seen: list[str] = []
    for _ in range(50):
        seen.extend(t.task_id for t in await pq.claim("w", 5))
        if urgent in seen:
            break
        await asyncio.sleep(0.02)  # let the cached view age (HEAD_TTL = 0.1 s)
    assert urgent in seen and len(seen) <= 40


async def test_a_waiting_consumer_wakes_for_work_in_any_partition(pq: RedisTaskQueue) -> None:
    for partition in (0, 5, 2):
        waiting = asyncio.create_task(pq.wait_for_work(["noop"], 8.0))
        await asyncio.sleep(0.05)  # let the BLPOP reach Redis
        await pq.enqueue(_ids_in(partition, 1, f"w{partition}-")[0], "noop", {})
        await asyncio.wait_for(waiting, 3.0)
        assert len(await pq.claim("w", 5)) == 1


async def test_settle_many_across_partitions_answers_in_the_callers_order(
    pq: RedisTaskQueue,
) -> None:
    ids = [f"s{i}" for i in range(500)]
    await pq.enqueue_many(_tasks(ids))
    claimed = await pq.claim("w", 500)
    settlements = [
        Settlement(t.task_id, t.lease_token, result={"i": t.task_id})
        if n % 2
        else Settlement(t.task_id, t.lease_token, error="no", retry=False)
        for n, t in enumerate(claimed)
    ]
    states = await pq.settle_many(settlements)
    assert states == [TaskState.COMPLETED if n % 2 else TaskState.DEAD_LETTER for n in range(500)]
    sizes = await pq.get_queue_size()
    assert sizes["completed"] == 250 and sizes["dlq"] == 250 and sizes["processing"] == 0


async def test_list_tasks_merges_the_partitions_in_dequeue_order(pq: RedisTaskQueue) -> None:
    for i in range(6):  # one call each: FIFO across partitions follows the calls' order
        await pq.enqueue(f"n{i}", "noop", {})
    await pq.enqueue_many(_tasks([f"c{i}" for i in range(5)], TaskPriority.CRITICAL))
    listed = [t.task_id for t in await pq.list_tasks(TaskState.PENDING, limit=8)]
    assert sorted(listed[:5]) == [f"c{i}" for i in range(5)]
    assert listed[5:] == ["n0", "n1", "n2"]


async def test_workers_drain_a_partitioned_queue_with_none_lost_or_run_twice(
    make_queue: Callable[..., RedisTaskQueue],
) -> None:
    producer = make_queue(partitions=PARTS)
    await producer.connect()
    ids = [f"d{i}" for i in range(1500)]
    await producer.enqueue_many(_tasks(ids))
    workers = []
    for _ in range(3):
        q = make_queue(partitions=PARTS)
        workers.append(Worker(q, registry, concurrency=20, burst=True))
    stats = await asyncio.gather(*(w.run() for w in workers))
    assert sum(s.done for s in stats) == 1500
    sizes = await producer.get_queue_size()
    assert sizes["completed"] == 1500 and sizes["pending"] == sizes["processing"] == 0
    attempts = [t.attempts for t in await producer.list_tasks(TaskState.COMPLETED, limit=2000)]
    assert len(attempts) == 1500 and set(attempts) == {1}


async def test_leases_of_long_tasks_are_renewed_in_every_partition(
    make_queue: Callable[..., RedisTaskQueue],
) -> None:
    q = make_queue(partitions=PARTS, lease_seconds=0.6)
    await q.connect()
    ids = [_ids_in(p, 1, "long")[0] for p in range(PARTS)]
    for task_id in ids:
        await q.enqueue(task_id, "sleep", {"seconds": 1.5})
    serving = asyncio.create_task(Worker(q, registry, concurrency=PARTS, burst=True).run())
    reaper = make_queue(partitions=PARTS)
    await reaper.connect()
    while not serving.done():  # claims meanwhile: a lapsed lease would be reclaimed
        await reaper.reap()
        await asyncio.sleep(0.2)  # a reaper's pace
    assert (await serving).done == PARTS
    for task_id in ids:
        task = await q.get_task(task_id)
        assert task is not None and task.attempts == 1 and task.lease_losses == 0


async def test_every_client_of_a_queue_must_use_its_partition_count(
    make_queue: Callable[..., RedisTaskQueue],
) -> None:
    await make_queue(partitions=PARTS).connect()
    for other in (1, 3):
        with pytest.raises(TopologyError, match="6 partition"):
            await make_queue(partitions=other).connect()


async def test_a_single_partition_queue_keeps_the_original_layout(
    queue: RedisTaskQueue, raw_redis: Redis, queue_name: str
) -> None:
    await queue.enqueue("a", "noop", {})
    keys = {k async for k in raw_redis.scan_iter(match=f"agentic:*{queue_name}*")}
    assert keys and all(k.startswith(f"agentic:{{{queue_name}}}:".encode()) for k in keys)
    assert f"agentic:{{{queue_name}}}:meta".encode() not in keys  # nothing stored for it


@pytest.mark.parametrize("count", [0, -1, 257, True, 2.0, "6"])
def test_a_partition_count_out_of_range_is_refused(count: object) -> None:
    with pytest.raises(ValueError, match="partitions must be"):
        RedisTaskQueue("q", partitions=count)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "argv", [("--partitions", "0"), ("--partitions", "257"), ("--partitions", "x")]
)
def test_the_cli_refuses_a_partition_count_out_of_range(argv: tuple[str, ...]) -> None:
    out = subprocess.run(
        agentic_argv(*argv, "info"), env=agentic_env("redis://127.0.0.1:1/0", "q"), cwd=ROOT,
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 2 and "--partitions" in out.stderr and "Traceback" not in out.stderr


def test_a_partition_count_from_the_environment_is_checked_too() -> None:
    env = agentic_env("redis://127.0.0.1:1/0", "q", AGENTIC_PARTITIONS="0")
    out = subprocess.run(
        agentic_argv("info"), env=env, cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 2 and "partitions" in out.stderr and "Traceback" not in out.stderr


async def test_the_dlq_commands_cover_every_partition(pq: RedisTaskQueue, redis_url: str) -> None:
    ids = [f"dead{i}" for i in range(30)]
    await pq.enqueue_many(_tasks(ids))
    for task in await pq.claim("w", 30):
        await pq.fail_task(task.task_id, "boom", retry=False)
    env = agentic_env(redis_url, pq.queue_name)
    argv = ("--partitions", str(PARTS), "dlq")
    listed = subprocess.run(
        agentic_argv(*argv, "list", "--limit", "100", "--json"), env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    page = json.loads(listed.stdout)
    assert sorted(t["task_id"] for t in page["tasks"]) == sorted(ids) and page["total"] == 30
    retried = subprocess.run(
        agentic_argv(*argv, "retry", "--all"), env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert retried.returncode == 0 and "retried 30 task(s)" in retried.stdout, retried.stderr
    sizes = await pq.get_queue_size()
    assert sizes["dlq"] == 0 and sizes["pending"] == 30
