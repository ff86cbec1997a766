"""G's enqueue workloads, each as streams measured in interleaved blocks: round r runs
block r of every stream (the order rotating each round), so the layouts and the raw
baselines all meet the same machine load. A stream sums its wall time, this process's
CPU, per-call latencies and (when given nodes) each Redis node's CPU over its blocks."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from bench.harness.config import TASK_TYPE
from bench.harness.nodes import NodeCpu
from bench.harness.payloads import chunks, percentile
from utils.redis_queue import RedisTaskQueue

Block = Callable[[Sequence[Any], list[float]], Awaitable[None]]


@dataclass
class Stream:
    """One measured sequence of calls: `run(items, latencies)` does one block of them
    (a latency per call: per task, or per chunk of enqueue_many)."""

    key: str  # "a", "a'", "1", "2", "3", "3d", ...
    run: Block
    items: Sequence[Any]
    nodes: NodeCpu | None = None
    wall_s: float = 0.0
    client_cpu_s: float = 0.0
    latencies: list[float] = field(default_factory=list)

    async def block(self, items: Sequence[Any]) -> None:
        if self.nodes is None:
            await self._timed(items)
            return
        async with self.nodes:
            await self._timed(items)

    async def _timed(self, items: Sequence[Any]) -> None:
        cpu0, t0 = time.process_time(), time.perf_counter()
        await self.run(items, self.latencies)
        self.wall_s += time.perf_counter() - t0
        self.client_cpu_s += time.process_time() - cpu0

    def summary(self, idle: dict[str, float]) -> dict[str, Any]:
        n = len(self.items)
        out: dict[str, Any] = {
            "n": n,
            "tasks_per_s": n / self.wall_s,
            "p50_ms": percentile(self.latencies, 50) * 1e3,
            "p99_ms": percentile(self.latencies, 99) * 1e3,
            "client_cpu_us_per_task": self.client_cpu_s / n * 1e6,
        }
        if self.nodes is not None:
            out.update(node_summary(self.nodes, n, idle))
        return out


def node_summary(nodes: NodeCpu, n: int, idle: dict[str, float]) -> dict[str, Any]:
    """Redis CPU per task: on each primary (net of its idle CPU), their sum, the replicas'
    sum, each primary's share, and the gross figures (idle included) for the record."""
    net, gross = nodes.per_task_us(n, idle), nodes.per_task_us(n)
    primaries = nodes.primaries()
    return {
        "redis_cpu_us_per_task": sum(net[p] for p in primaries),
        "primary_cpu_us_per_task": {p: net[p] for p in primaries},
        "replica_cpu_us_per_task": sum(v for k, v in net.items() if k not in primaries),
        "primary_share": nodes.shares(n, idle),
        "gross_cpu_us_per_task": gross,
    }


async def interleave(streams: list[Stream], rounds: int) -> None:
    """Round r runs the r-th of `rounds` equal blocks of every stream."""
    blocks = [list(chunks(s.items, max(1, -(-len(s.items) // rounds)))) for s in streams]
    for r in range(max(len(b) for b in blocks)):
        shift = r % len(streams)
        for i in [*range(shift, len(streams)), *range(shift)]:
            if r < len(blocks[i]):
                await streams[i].block(blocks[i][r])


def lpush_each(client: Redis | RedisCluster, key: str) -> Block:
    async def run(items: Sequence[Any], latencies: list[float]) -> None:
        for item in items:
            t0 = time.perf_counter()
            await client.lpush(key, item)
            latencies.append(time.perf_counter() - t0)

    return run


def lpush_pipelined(client: Redis | RedisCluster, key: str) -> Block:
    async def run(items: Sequence[Any], latencies: list[float]) -> None:
        t0 = time.perf_counter()
        async with client.pipeline(transaction=False) as pipe:
            for item in items:
                pipe.lpush(key, item)
            await pipe.execute()
        latencies.append(time.perf_counter() - t0)

    return run


def enqueue_each(queue: RedisTaskQueue, durable: bool | None = None) -> Block:
    async def run(items: Sequence[Any], latencies: list[float]) -> None:
        for spec in items:
            t0 = time.perf_counter()
            await queue.enqueue(spec["task_id"], TASK_TYPE, spec["payload"], durable=durable)
            latencies.append(time.perf_counter() - t0)

    return run


def enqueue_chunk(queue: RedisTaskQueue) -> Block:
    async def run(items: Sequence[Any], latencies: list[float]) -> None:
        t0 = time.perf_counter()
        await queue.enqueue_many(items)
        latencies.append(time.perf_counter() - t0)

    return run
