"""Pause and resume: claim.lua reads the `paused` hash in the claim's own atomic step, so
no claim hands out a paused task; enqueue, promotion and reaping go on; resume wakes the
blocked workers at once; the pause is in Redis and outlives every worker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from tests.support.processes import (
    WorkerProcesses,
    eventually,
    ledger_lines,
    worker_processes,
)
from utils.metrics import RedisQueueCollector
from utils.redis_queue import InvalidTaskType, RedisTaskQueue

pytestmark = pytest.mark.timeout(60)


async def test_a_paused_queue_hands_out_nothing_and_enqueue_still_works(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.enqueue("a", "dev", {})
    assert await queue.pause() is True
    assert await queue.pause() is False  # already paused: its time stays
    await queue.enqueue("b", "dev", {})  # enqueue goes on
    await queue.enqueue("c", "dev", {}, delay=0.01)
    await asyncio.sleep(0.05)  # let c come due: the claim promotes it while paused
    batch = await queue.claim_ready("w", 10)
    assert batch.tasks == []
    assert batch.task_types == ["dev"]  # still reported: the caller watches its wake key
    assert set(await raw_redis.hkeys(queue.keys.paused)) == {b"*"}
    assert await raw_redis.zcard(queue.keys.pending("dev")) == 3  # c promoted
    assert await raw_redis.zcard(queue.keys.processing) == 0
    assert set(await queue.get_paused()) == {"*"}
    assert await queue.resume() is True
    assert await queue.resume() is False
    assert await raw_redis.exists(queue.keys.paused) == 0
    claimed = await queue.claim("w", 10)
    assert sorted(t.task_id for t in claimed) == ["a", "b", "c"]


async def test_pausing_one_type_leaves_the_others_claimable(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.enqueue_many(
        {"task_id": f"{t}{i}", "task_type": t, "payload": {}}
        for t in ("dev", "qa")
        for i in range(5)
    )
    await queue.pause("dev")
    got = await queue.claim("w", 20)  # every type
    assert sorted(t.task_type for t in got) == ["qa"] * 5
    assert await queue.claim("w", 20, task_types=["dev"]) == []
    assert await raw_redis.zcard(queue.keys.pending("dev")) == 5
    # A queue-wide pause and a type's are lifted each on its own.
    await queue.pause()
    await queue.resume()
    assert await queue.claim("w", 20, task_types=["dev"]) == []
    assert set(await queue.get_paused()) == {"dev"}
    await queue.resume("dev")
    assert len(await queue.claim("w", 20, task_types=["dev"])) == 5
    with pytest.raises(InvalidTaskType):
        await queue.pause("no{tags}")


async def test_pause_holds_on_every_partition(
    make_queue: Callable[..., RedisTaskQueue], raw_redis: Redis
) -> None:
    queue = make_queue(partitions=4)
    await queue.connect()
    await queue.enqueue_many(
        {"task_id": f"t{i}", "task_type": "dev", "payload": {}} for i in range(400)
    )
    await queue.pause()
    for keys in queue.layout.parts:
        assert await raw_redis.hexists(keys.paused, "*")
    assert (await queue.claim_ready("w", 1000)).tasks == []
    assert await queue.claim("w", 1000, timeout=0.2) == []
    assert await queue.resume() is True
    for keys in queue.layout.parts:
        assert await raw_redis.exists(keys.paused) == 0
    claimed = await queue.claim("w", 1000)
    assert len(claimed) == 400


async def test_no_claim_slips_past_a_pause_under_twenty_concurrent_claimers(
    make_queue: Callable[..., RedisTaskQueue], raw_redis: Redis
) -> None:
    admin = make_queue()
    await admin.connect()
    await admin.enqueue_many(
        {"task_id": f"t{i}", "task_type": "dev", "payload": {}} for i in range(5000)
    )
    claimers = [make_queue() for _ in range(20)]
    for q in claimers:
        await q.connect()
    stop = asyncio.Event()
    claimed: list[int] = []

    async def claim_forever(q: RedisTaskQueue, n: int) -> None:
        while not stop.is_set():
            batch = await q.claim_ready(f"w{n}", 5)
            claimed.append(len(batch.tasks))
            await asyncio.sleep(0)

    loops = [asyncio.create_task(claim_forever(q, n)) for n, q in enumerate(claimers)]
    await eventually(lambda: _async(sum(claimed) >= 500))
    await admin.pause()
    after_pause = len(claimed)
    await eventually(lambda: _async(len(claimed) >= after_pause + 200))  # they go on claiming
    stop.set()
    await asyncio.gather(*loops)
    paused_ms = int(await raw_redis.hget(admin.keys.paused, "*"))
    leased = await raw_redis.zrange(admin.keys.processing, 0, -1)
    started = [int(await raw_redis.hget(admin.keys.task(i.decode()), "started")) for i in leased]
    assert 500 <= len(started) < 5000
    assert max(started) <= paused_ms  # every lease was granted before the pause
    assert sum(claimed[after_pause + 20 :]) == 0  # every claim sent after it got nothing
    assert await raw_redis.zcard(admin.keys.pending("dev")) == 5000 - len(started)


async def test_the_scrape_shows_what_is_paused(
    make_queue: Callable[..., RedisTaskQueue], redis_url: str, queue_name: str
) -> None:
    queue = make_queue(partitions=3)
    await queue.connect()
    await queue.enqueue("a", "dev", {})
    await queue.pause()
    await queue.pause("qa")
    registry = CollectorRegistry()
    collector = RedisQueueCollector(redis_url, [queue_name], partitions=3)
    registry.register(collector)
    try:
        for target in ("*", "qa"):
            labels = {"queue": queue_name, "task_type": target}
            assert registry.get_sample_value("agentic_queue_paused", labels) == 1
        await queue.resume()
        labels = {"queue": queue_name, "task_type": "*"}
        assert registry.get_sample_value("agentic_queue_paused", labels) is None
    finally:
        collector.close()


async def test_resume_wakes_a_blocked_claimer_at_once(
    make_queue: Callable[..., RedisTaskQueue],
) -> None:
    admin, worker = make_queue(), make_queue()
    await admin.connect()
    await worker.connect()
    await admin.pause("dev")
    await admin.enqueue("a", "dev", {})
    # The claimer blocks on the wake key (up to 10 s per slice) until the resume's token.
    claiming = asyncio.create_task(worker.claim("w", 1, task_types=["dev"], timeout=20))
    await eventually(lambda: _blocked_clients(admin))
    assert not claiming.done()
    started = time.monotonic()
    await admin.resume("dev")
    tasks = await asyncio.wait_for(claiming, 5)
    assert [t.task_id for t in tasks] == ["a"]
    assert time.monotonic() - started < 1.0  # not the 10 s its blocking wait would take


async def _blocked_clients(queue: RedisTaskQueue) -> bool:
    clients = await queue.redis.client_list()
    return any(c.get("cmd") in ("blpop", "blmove") for c in clients)


# -- a fleet of real worker processes -------------------------------------------------------


@pytest.fixture
def workers(redis_url: str, queue_name: str) -> Iterator[WorkerProcesses]:
    with worker_processes(redis_url, queue_name) as procs:
        yield procs


def _starts(ledger: Path) -> list[float]:
    return [float(line[2]) for line in ledger_lines(ledger) if line[0] == "start"]


async def test_pause_stops_three_worker_processes_within_a_second_and_outlives_them(
    queue: RedisTaskQueue, raw_redis: Redis, workers: WorkerProcesses, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    total = 300
    await queue.enqueue_many(
        {
            "task_id": f"t{i}",
            "task_type": "stamp",
            "payload": {"ledger": str(ledger), "seconds": 0.1},
        }
        for i in range(total)
    )
    fleet = [workers.start("--concurrency", "2") for _ in range(3)]
    await eventually(lambda: _async(len(_starts(ledger)) >= 12))
    await queue.pause()
    paused_at = time.time()
    # In-flight tasks finish; nothing is claimed after the pause.
    await eventually(lambda: _none_processing(raw_redis, queue), timeout=5)
    settled_at = time.time()
    late = [s for s in _starts(ledger) if s > paused_at + 1.0]
    assert late == [], f"{len(late)} tasks started more than 1 s after the pause"
    waiting = await raw_redis.zcard(queue.keys.pending("stamp"))
    assert 0 < waiting < total
    # Watch a while: the pending set stays as it is (an observation window, nothing to await).
    await asyncio.sleep(1.0)
    assert await raw_redis.zcard(queue.keys.pending("stamp")) == waiting
    assert [s for s in _starts(ledger) if s > settled_at] == []
    assert all(p.poll() is None for p in fleet)  # idle, not exited
    # The pause outlives the workers: a new fleet claims nothing either.
    assert await workers.stop_all() == [0, 0, 0]
    fresh = [workers.start("--concurrency", "2") for _ in range(3)]
    await eventually(lambda: _registered(queue, 3))
    await asyncio.sleep(1.0)  # observation window again
    assert await raw_redis.zcard(queue.keys.pending("stamp")) == waiting
    resumed_at = time.time()
    await queue.resume()
    await eventually(lambda: _completed(queue, total), timeout=30)
    first_after = min(s for s in _starts(ledger) if s > resumed_at)
    assert first_after - resumed_at < 1.0  # woken (their blocking waits last up to 10 s)
    assert await workers.stop_all() == [0, 0, 0]
    assert fresh


async def _async(value: object) -> object:
    return value


async def _none_processing(raw_redis: Redis, queue: RedisTaskQueue) -> bool:
    return await raw_redis.zcard(queue.keys.processing) == 0


async def _registered(queue: RedisTaskQueue, count: int) -> bool:
    return await queue.redis.hlen(queue.keys.workers) >= count


async def _completed(queue: RedisTaskQueue, count: int) -> bool:
    return (await queue.get_queue_size())["completed"] == count
