"""Scenarios A, enqueue() one at a time, and B, enqueue_many() in chunks."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from bench.harness.config import TASK_TYPE
from bench.harness.context import Bench, Row, fmt_rate
from bench.harness.payloads import chunks, payload_bytes, percentile, task_dicts
from bench.harness.probe import Probe
from bench.scenarios.common import warm_up
from bench.scenarios.targets import TARGET_A_RATIO, TARGET_B_RATE
from utils.redis_queue import RedisTaskQueue


async def lpush_each(client: Redis, key: str, items: Sequence[bytes]) -> None:
    for item in items:
        await client.lpush(key, item)


async def enqueue_each(
    queue: RedisTaskQueue, specs: Sequence[dict[str, Any]], latencies: list[float]
) -> None:
    for spec in specs:
        t0 = time.perf_counter()
        await queue.enqueue(spec["task_id"], TASK_TYPE, spec["payload"])
        latencies.append(time.perf_counter() - t0)


async def scenario_a(bench: Bench) -> Row:
    """enqueue() one at a time, in blocks that alternate with blocks of raw LPUSH, so the
    ratio compares both under the same machine load (baseline (a) ran minutes before)."""
    specs = task_dicts(bench.sizes.enqueue_one)
    raw = [payload_bytes(i) for i in range(len(specs))]
    block = max(1, len(specs) // 10)
    latencies: list[float] = []
    probe, raw_probe = bench.probe("A"), Probe(bench.admin)
    client = Redis.from_url(bench.url)
    try:
        async with bench.queue() as queue:
            await warm_up(bench, queue)
            for specs_block, raw_block in zip(
                chunks(specs, block), chunks(raw, block), strict=True
            ):
                async with raw_probe:
                    await lpush_each(client, bench.raw_key("paired"), raw_block)
                async with probe:
                    await enqueue_each(queue, specs_block, latencies)
    finally:
        await client.aclose()
    rate, raw_rate = len(specs) / probe.wall_s, len(raw) / raw_probe.wall_s
    ratio = rate / raw_rate
    p50, p99 = percentile(latencies, 50) * 1e3, percentile(latencies, 99) * 1e3
    return Row(
        key="A",
        name="enqueue(), awaited one at a time",
        measured=f"{fmt_rate(rate, 'tasks')}; p50 {p50:.3f} ms, p99 {p99:.3f} ms",
        baseline=f"(a) interleaved {fmt_rate(raw_rate, 'ops')}",
        ratio=f"{ratio:.2f}x",
        target=f">= {TARGET_A_RATIO}x (a)",
        hit=ratio >= TARGET_A_RATIO,
        cost=probe.cost(len(specs)),
        data={
            "n": len(specs),
            "tasks_per_s": rate,
            "ratio": ratio,
            "p50_ms": p50,
            "p99_ms": p99,
            "raw_interleaved_ops_per_s": raw_rate,
            "ratio_to_standalone_a": rate / bench.raw_rate,
        },
    )


async def scenario_b(bench: Bench) -> Row:
    specs = task_dicts(bench.sizes.enqueue_many)
    latencies: list[float] = []
    async with bench.queue() as queue:
        await warm_up(bench, queue)
        async with bench.probe("B") as probe:
            for chunk in chunks(specs, bench.sizes.chunk):
                t0 = time.perf_counter()
                await queue.enqueue_many(chunk)
                latencies.append(time.perf_counter() - t0)
    rate = len(specs) / probe.wall_s
    ratio = rate / bench.raw_pipelined_rate
    p50 = percentile(latencies, 50) * 1e3
    return Row(
        key="B",
        name=f"enqueue_many(), chunks of {bench.sizes.chunk:,}",
        measured=f"{fmt_rate(rate, 'tasks')}; {p50:.1f} ms per chunk (p50)",
        baseline=f"(b) {fmt_rate(bench.raw_pipelined_rate, 'ops')}",
        ratio=f"{ratio:.2f}x",
        target=f">= {TARGET_B_RATE:,.0f} tasks/s",
        hit=rate >= TARGET_B_RATE,
        cost=probe.cost(len(specs)),
        data={"n": len(specs), "tasks_per_s": rate, "ratio": ratio, "chunk_p50_ms": p50},
    )
