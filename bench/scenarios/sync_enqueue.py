"""Scenario S: scenario A's row for synchronous code. SyncRedisTaskQueue.enqueue() one at
a time against redis-py's sync client doing raw LPUSH one at a time, in alternating
blocks in the same run (so both see the same machine load), as A does for the async pair.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from redis import Redis as SyncRedis

from bench.harness.config import TASK_TYPE
from bench.harness.context import Bench, Row, clear_keys, fmt_rate
from bench.harness.payloads import chunks, payload_bytes, percentile, task_dicts
from bench.harness.probe import Probe
from bench.scenarios.targets import TARGET_A_RATIO
from utils.redis_queue import SyncRedisTaskQueue


def lpush_each(client: SyncRedis, key: str, items: Sequence[bytes]) -> None:
    for item in items:
        client.lpush(key, item)


def enqueue_each(
    queue: SyncRedisTaskQueue, specs: Sequence[dict[str, Any]], latencies: list[float]
) -> None:
    for spec in specs:
        t0 = time.perf_counter()
        queue.enqueue(spec["task_id"], TASK_TYPE, spec["payload"])
        latencies.append(time.perf_counter() - t0)


async def scenario_s(bench: Bench) -> Row:
    specs = task_dicts(bench.sizes.enqueue_one)
    raw = [payload_bytes(i) for i in range(len(specs))]
    block = max(1, len(specs) // 10)
    latencies: list[float] = []
    probe, raw_probe = bench.probe("S"), Probe(bench.admin)
    client = SyncRedis.from_url(bench.url)
    queue = SyncRedisTaskQueue(
        queue_name=bench.queue_name, redis_url=bench.url, events=bench.events, metrics=bench.metrics
    )
    try:
        # warm-up: the scripts registered, the connections open; then forgotten
        enqueue_each(queue, task_dicts(bench.sizes.warmup), [])
        lpush_each(client, bench.raw_key("sync"), raw[: bench.sizes.warmup])
        await clear_keys(bench.admin, bench.queue_name)
        for specs_block, raw_block in zip(chunks(specs, block), chunks(raw, block), strict=True):
            async with raw_probe:
                lpush_each(client, bench.raw_key("sync"), raw_block)
            async with probe:
                enqueue_each(queue, specs_block, latencies)
    finally:
        queue.close()
        client.close()
    rate, raw_rate = len(specs) / probe.wall_s, len(raw) / raw_probe.wall_s
    ratio = rate / raw_rate
    p50, p99 = percentile(latencies, 50) * 1e3, percentile(latencies, 99) * 1e3
    async_a = bench.rows.get("A")
    return Row(
        key="S",
        name="A, sync: SyncRedisTaskQueue.enqueue() one at a time",
        measured=f"{fmt_rate(rate, 'tasks')}; p50 {p50:.3f} ms, p99 {p99:.3f} ms",
        baseline=f"sync LPUSH interleaved {fmt_rate(raw_rate, 'ops')}",
        ratio=f"{ratio:.2f}x",
        target=f">= {TARGET_A_RATIO}x sync LPUSH",
        hit=ratio >= TARGET_A_RATIO,
        cost=probe.cost(len(specs)),
        data={
            "n": len(specs),
            "tasks_per_s": rate,
            "ratio": ratio,
            "p50_ms": p50,
            "p99_ms": p99,
            "raw_sync_interleaved_ops_per_s": raw_rate,
            "async_a_tasks_per_s": async_a.data["tasks_per_s"] if async_a else None,
        },
    )
