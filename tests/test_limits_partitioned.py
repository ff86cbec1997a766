"""Limits of a partitioned queue are global: they live under the queue-wide tag and are
checked after each partition's claim (queue/gate.py), so every check here spans partitions.
On one Redis here (the same code path; tests/test_cluster.py runs it on a real cluster)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.support.processes import WorkerProcesses, most_at_once, wait_exit, worker_processes
from utils.redis_queue import RedisTaskQueue, Settlement, TaskState

QueueFactory = Callable[..., RedisTaskQueue]
pytestmark = pytest.mark.timeout(60)
PARTS = 3


async def _queue(make_queue: QueueFactory, **kwargs: object) -> RedisTaskQueue:
    queue = make_queue(partitions=PARTS, **kwargs)
    await queue.connect()
    return queue


def _tasks(n: int, task_type: str = "dev", **extra: object) -> list[dict[str, object]]:
    return [
        {"task_id": f"{task_type}{i}", "task_type": task_type, "payload": {}, **extra}
        for i in range(n)
    ]


async def _claim_all(queue: RedisTaskQueue, worker: str = "w", count: int = 50) -> list[str]:
    return [t.task_id for t in (await queue.claim_ready(worker, count)).tasks]


async def test_concurrency_is_global_across_partitions_and_clients(
    make_queue: QueueFactory, raw_redis: Redis
) -> None:
    a, b = await _queue(make_queue), await _queue(make_queue)
    await a.set_limit("dev", concurrency=2)
    await a.enqueue_many(_tasks(30))
    assert {a.layout.index_of(f"dev{i}") for i in range(30)} == set(range(PARTS))
    first = await _claim_all(a)
    second = await _claim_all(b)
    assert len(first) + len(second) == 2
    assert await raw_redis.zcard(a.layout.wide.limit_held("dev")) == 2
    sizes = await a.get_queue_size()
    assert (sizes["pending"], sizes["processing"]) == (28, 2)
    for i in range(30):  # the refused ones were handed back untouched
        if f"dev{i}" not in first + second:
            fields = await raw_redis.hmget(
                a.keys_for(f"dev{i}").task(f"dev{i}"), "state", "attempts"
            )
            assert fields[0] == b"pending" and fields[1] in (None, b"0")
    running = first[0] if first else second[0]
    owner = a if first else b
    assert await owner.settle_many([Settlement(running, None, {"ok": 1})]) == [TaskState.COMPLETED]
    assert await raw_redis.zcard(a.layout.wide.limit_held("dev")) == 1
    await asyncio.sleep(1.05)  # past the hint: the claims ask the limits again
    assert len(await _claim_all(b) + await _claim_all(a)) == 1


async def test_a_saturated_type_does_not_stop_other_types(make_queue: QueueFactory) -> None:
    queue = await _queue(make_queue)
    await queue.set_limit("dev", concurrency=1)
    await queue.enqueue_many(_tasks(100, "dev", priority=3) + _tasks(20, "qa", priority=0))
    claimed: list[str] = []
    for _ in range(6):
        claimed += await _claim_all(queue, count=10)
    assert sum(1 for t in claimed if t.startswith("dev")) == 1
    assert sum(1 for t in claimed if t.startswith("qa")) == 20


async def test_a_rate_is_global(make_queue: QueueFactory) -> None:
    a, b = await _queue(make_queue), await _queue(make_queue)
    await a.set_limit("dev", rate=5, per=1, burst=3)
    await a.enqueue_many(_tasks(20))
    got = await _claim_all(a) + await _claim_all(b)
    assert len(got) == 3
    batch = await a.claim_ready("w", 10)
    assert batch.tasks == [] and batch.held_back.get("dev", 0) > 0
    assert batch.wait_hint is not None and batch.wait_hint <= 1.0


async def test_back_off_pauses_every_partition_and_refunds(
    make_queue: QueueFactory, raw_redis: Redis
) -> None:
    a, b = await _queue(make_queue), await _queue(make_queue)
    await a.set_limit("openai", concurrency=10, tokens=1000, per=3600)
    await a.enqueue_many(_tasks(12, limits=["openai"], cost_tokens=100))
    claimed = (await a.claim_ready("w", 1)).tasks
    assert len(claimed) == 1
    task = claimed[0]
    assert await a.back_off_task(task.task_id, task.lease_token, 0.4) == 0.4
    stored = await a.get_task(task.task_id)
    assert stored is not None and stored.state == "pending" and stored.attempts == 0
    status = (await a.get_limits())["openai"]
    assert status.paused_for > 0.3 and status.running == 0
    assert status.tokens_available == pytest.approx(1000, abs=1)  # the reservation came back
    await asyncio.sleep(0)
    assert await _claim_all(b) == []  # another client, any partition: paused
    await asyncio.sleep(0.45)
    await b.claim_ready("w", 0)  # (a fresh look)
    b._gate_woken()
    assert len(await _claim_all(b, count=20)) == 10  # the pause is over: concurrency 10


async def test_a_slot_comes_back_when_its_lease_expires(make_queue: QueueFactory) -> None:
    crashed = await _queue(make_queue, lease_seconds=0.3)
    await crashed.set_limit("dev", concurrency=1)
    await crashed.enqueue_many(_tasks(3))
    assert len(await _claim_all(crashed, "dead")) == 1  # never settled
    other = await _queue(make_queue)
    assert await _claim_all(other) == []
    await asyncio.sleep(1.1)  # the lease (0.3 s) and the hint (1 s) are over
    assert len(await _claim_all(other)) == 1


@pytest.fixture
def workers(redis_url: str, queue_name: str) -> Iterator[WorkerProcesses]:
    with worker_processes(redis_url, queue_name) as procs:
        yield procs


async def test_worker_processes_keep_a_partitioned_limit_and_renew_its_slots(
    make_queue: QueueFactory, workers: WorkerProcesses, tmp_path: Path
) -> None:
    """Concurrency 1 over two worker processes of a 3-partition queue, with tasks that run
    three times longer than the lease: the keeper renews the slot with the lease, so two
    never run at once."""
    queue = await _queue(make_queue)
    ledger = tmp_path / "ledger"
    await queue.set_limit("stamp", concurrency=1)
    await queue.enqueue_many(
        {
            "task_id": f"s{i}",
            "task_type": "stamp",
            "payload": {"ledger": str(ledger), "seconds": 1.5},
        }
        for i in range(3)
    )
    env = {"AGENTIC_PARTITIONS": str(PARTS)}
    procs = [workers.start("--burst", "--concurrency", "2", lease=0.5, **env) for _ in range(2)]
    assert [await wait_exit(p, 50) for p in procs] == [0, 0]
    assert most_at_once(ledger) == (1, 6)
    assert (await queue.get_limits())["stamp"].running == 0
