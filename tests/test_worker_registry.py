"""The worker registry's join: one live holder per worker id, checked and written atomically."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys

import pytest
from redis.asyncio import Redis

from utils.redis_queue import RedisTaskQueue, WorkerIdInUse
from utils.redis_queue.registry import WorkerInfo, join_registry, list_workers

pytestmark = pytest.mark.timeout(30)


def _info(worker_id: str, *, host: str, pid: int) -> WorkerInfo:
    return WorkerInfo(worker_id, host, pid, ["noop"], 1, "2026-12-07T00:00:00Z", beat_interval=5)


async def test_of_twenty_workers_joining_under_one_id_at_once_exactly_one_joins(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    racers = [_info("w", host="elsewhere", pid=1000 + i) for i in range(20)]
    outcomes = await asyncio.gather(
        *(join_registry(queue, info) for info in racers), return_exceptions=True
    )
    joined = [info for info, out in zip(racers, outcomes, strict=True) if out is None]
    refused = [out for out in outcomes if isinstance(out, WorkerIdInUse)]
    assert len(joined) == 1 and len(refused) == 19
    stored = json.loads(await raw_redis.hget(queue.keys.workers, "w"))
    assert stored["pid"] == joined[0].pid  # the refused ones wrote nothing
    assert all(exc.pid == joined[0].pid for exc in refused)
    assert await raw_redis.zcard(queue.keys.worker_beats) == 1


async def test_an_entry_of_a_dead_process_of_this_host_is_taken_over_and_a_live_one_is_not(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    here = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    await join_registry(queue, _info("crashed", host=here, pid=dead.pid))
    await join_registry(queue, _info("crashed", host=here, pid=4242424))
    assert json.loads(await raw_redis.hget(queue.keys.workers, "crashed"))["pid"] == 4242424

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        await join_registry(queue, _info("busy", host=here, pid=live.pid))
        with pytest.raises(WorkerIdInUse, match=str(live.pid)):
            await join_registry(queue, _info("busy", host=here, pid=4242425))
        assert json.loads(await raw_redis.hget(queue.keys.workers, "busy"))["pid"] == live.pid
    finally:
        live.kill()
        live.wait()
    ids = {w.worker_id for w in await list_workers(queue)}
    assert ids == {"crashed", "busy"}


async def test_a_worker_rejoining_under_its_own_id_is_not_refused(queue: RedisTaskQueue) -> None:
    me = _info("self", host="elsewhere", pid=77)
    await join_registry(queue, me)
    await join_registry(queue, me)  # a restart of the same process: its own entry
    assert [w.pid for w in await list_workers(queue)] == [77]
