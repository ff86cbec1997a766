"""Steps several scenarios share: a warm-up, and one enqueue -> result round trip."""

from __future__ import annotations

import time
import uuid
from typing import Any

from bench.harness.config import TASK_TYPE
from bench.harness.context import Bench, clear_keys
from bench.harness.payloads import payload, task_dicts
from utils.redis_queue import RedisTaskQueue


async def warm_up(bench: Bench, queue: RedisTaskQueue) -> None:
    """Load the scripts and open the connections, then forget the warm-up tasks."""
    for spec in task_dicts(bench.sizes.warmup):
        await queue.enqueue(spec["task_id"], TASK_TYPE, spec["payload"])
    await clear_keys(bench.admin, bench.queue_name)


async def round_trip(
    queue: RedisTaskQueue, i: int, expected: Any = None, timeout: float = 5.0
) -> tuple[float, float]:
    """One enqueue -> wait_for_result trip; returns (enqueue seconds, total seconds)."""
    task_id = uuid.uuid4().hex
    t0 = time.perf_counter()
    await queue.enqueue(task_id, TASK_TYPE, payload(i))
    t1 = time.perf_counter()
    result = await queue.wait_for_result(task_id, timeout=timeout)
    t2 = time.perf_counter()
    if result != expected:
        raise RuntimeError(f"unexpected result {result!r}")
    return t1 - t0, t2 - t0
