"""The raw redis-py baselines: (a) LPUSH awaited one at a time, (b) LPUSH in pipelines."""

from __future__ import annotations

import time

from redis.asyncio import Redis

from bench.harness.context import Bench, Row, fmt_rate
from bench.harness.payloads import chunks, payload_bytes, percentile


async def baseline_single(bench: Bench, client: Redis) -> Row:
    key = bench.raw_key("single")
    data = [payload_bytes(i) for i in range(bench.sizes.raw_single)]
    for item in data[: bench.sizes.warmup]:
        await client.lpush(key, item)
    latencies: list[float] = []
    async with bench.probe("a") as probe:
        for item in data:
            t0 = time.perf_counter()
            await client.lpush(key, item)
            latencies.append(time.perf_counter() - t0)
    await client.delete(key)
    rate = len(data) / probe.wall_s
    p50, p99 = percentile(latencies, 50) * 1e3, percentile(latencies, 99) * 1e3
    return Row(
        key="a",
        name="raw LPUSH, awaited one at a time",
        measured=f"{fmt_rate(rate, 'ops')}; p50 {p50:.3f} ms, p99 {p99:.3f} ms",
        cost=probe.cost(len(data)),
        data={"n": len(data), "ops_per_s": rate, "p50_ms": p50, "p99_ms": p99},
    )


async def baseline_pipelined(bench: Bench, client: Redis) -> Row:
    key = bench.raw_key("pipelined")
    data = [payload_bytes(i) for i in range(bench.sizes.raw_pipelined)]
    async with bench.probe("b") as probe:
        for chunk in chunks(data, bench.sizes.chunk):
            async with client.pipeline(transaction=False) as pipe:
                for item in chunk:
                    pipe.lpush(key, item)
                await pipe.execute()
    await client.delete(key)
    rate = len(data) / probe.wall_s
    return Row(
        key="b",
        name=f"raw LPUSH, pipelines of {bench.sizes.chunk:,}",
        measured=fmt_rate(rate, "ops"),
        cost=probe.cost(len(data)),
        data={"n": len(data), "ops_per_s": rate},
    )


async def run_baselines(bench: Bench) -> list[Row]:
    client = Redis.from_url(bench.url)
    try:
        rows = [await baseline_single(bench, client), await baseline_pipelined(bench, client)]
    finally:
        await client.aclose()
    bench.baselines = {row.key: row for row in rows}
    return rows
