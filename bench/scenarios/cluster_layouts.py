"""G's three layouts of one queue, and what runs on each: (1) the bench's own Redis, one
partition; (2) a 3-primary cluster, one partition (every key in one slot); (3) the same
cluster, 6 partitions. Here: the Layout (its queue, clients, nodes and worker settings),
and the `agentic worker` drains on a layout, timed from server-side completion scores."""

from __future__ import annotations

import asyncio
import gc
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from bench.harness.context import Bench, clear_keys
from bench.harness.nodes import Node, NodeCpu
from bench.harness.payloads import chunks
from bench.harness.processes import (
    WORKER_START_TIMEOUT,
    agentic_worker,
    cpu_delta,
    per_task_us,
)
from utils.redis_queue import RedisTaskQueue

POLL_S = 0.05  # completion polling of the drain's tail (the rate comes from server times)


@dataclass
class Layout:
    key: str  # "1", "2", "3"
    label: str
    url: str
    cluster: bool
    partitions: int
    queue_name: str
    admin: Redis | RedisCluster  # routes any key of the queue to its node
    clock: Redis  # a plain client of one node: TIME for worker spawn stamps
    nodes: list[Node]
    worker_env: dict[str, str] = field(default_factory=dict)

    def queue(self) -> RedisTaskQueue:
        return RedisTaskQueue(
            self.queue_name, self.url, cluster=self.cluster, partitions=self.partitions
        )

    def worker_bench(self, bench: Bench) -> Bench:
        """What agentic_worker() reads: the URL, the queue name and a TIME client."""
        return Bench(self.url, self.clock, self.queue_name, bench.sizes, None)

    async def clear(self, bench: Bench) -> None:
        """The bench's own keys on a Redis it may share; everything on the private cluster
        (FLUSHALL on each primary: the cluster is this scenario's alone)."""
        if not self.cluster:
            await clear_keys(bench.admin, self.queue_name)
            return
        await asyncio.gather(*(n.client.flushall() for n in self.nodes if n.role == "primary"))


async def completed_count(layout: Layout, queue: RedisTaskQueue) -> int:
    counts = await asyncio.gather(*(layout.admin.zcard(p.completed) for p in queue.layout.parts))
    return sum(int(c) for c in counts)


async def completion_span(layout: Layout, queue: RedisTaskQueue) -> tuple[int, float, float]:
    """(count, first, last) completion time in ms over every partition's `completed` set
    (server-time scores written by the complete script)."""
    count, first, last = 0, math.inf, -math.inf
    for part in queue.layout.parts:
        count += int(await layout.admin.zcard(part.completed))
        head = await layout.admin.zrange(part.completed, 0, 0, withscores=True)
        tail = await layout.admin.zrange(part.completed, -1, -1, withscores=True)
        if head:
            first, last = min(first, float(head[0][1])), max(last, float(tail[0][1]))
    return count, first, last


async def wait_all_completed(
    layout: Layout, queue: RedisTaskQueue, ids: Sequence[str], timeout: float
) -> None:
    """Block in Redis on the last task enqueued to each partition, then poll the completed
    counts for the few still running then."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: dict[int, str] = {queue.layout.index_of(i): i for i in ids}
    for task_id in last.values():
        await queue.wait_for_result(task_id, timeout=max(1.0, deadline - loop.time()))
    while await completed_count(layout, queue) < len(ids):
        if loop.time() > deadline:
            raise RuntimeError(f"G {layout.key}: not all {len(ids)} tasks completed")
        await asyncio.sleep(POLL_S)


async def enqueue_all(queue: RedisTaskQueue, specs: list[dict[str, Any]], chunk: int) -> None:
    for part in chunks(specs, chunk):
        await queue.enqueue_many(part)


async def drain(
    bench: Bench, layout: Layout, specs: list[dict[str, Any]], processes: int
) -> dict[str, Any]:
    """`processes` worker processes drain the pre-enqueued `specs`: the rate between the
    first and last completion (server time), Redis CPU per task per node and the
    workers' CPU per task over the same window (first result to the last)."""
    n = len(specs)
    ids = [s["task_id"] for s in specs]
    node_cpu = NodeCpu(layout.nodes)
    async with layout.queue() as queue:
        await enqueue_all(queue, specs, bench.sizes.chunk)
        gc.collect()
        wb = layout.worker_bench(bench)
        async with agentic_worker(wb, processes, env=layout.worker_env) as workers:
            await queue.wait_for_result(ids[0], timeout=WORKER_START_TIMEOUT)
            cpu0 = workers.cpu()
            async with node_cpu:
                done0 = await completed_count(layout, queue)
                await wait_all_completed(layout, queue, ids, timeout=120 + n / 100)
            cpu1 = workers.cpu()
        count, first_ms, last_ms = await completion_span(layout, queue)
    if count != n:
        raise RuntimeError(f"G {layout.key}: {count} of {n} tasks completed")
    span_s = (last_ms - first_ms) / 1000
    window = max(1, n - done0)
    cpu = cpu_delta(cpu0, cpu1)
    return {
        "n": n,
        "processes": processes,
        "tasks_per_s": (n - 1) / span_s if span_s > 0 else math.inf,
        "startup_ms": first_ms - workers.spawn_ms,
        "window_tasks": window,
        "window_s": node_cpu.wall_s,
        "node_cpu": node_cpu,
        "worker_cpu_us_per_task": per_task_us(cpu, window),
        "worker_exit": workers.returncode,
    }


async def rank_run(
    bench: Bench, layout: Layout, specs: list[dict[str, Any]], processes: int
) -> dict[str, Any]:
    """Enqueue `specs` (mixed priorities) before any worker runs, drain them with
    `processes` worker processes, then rank the start order (each task's `started`, server
    time in ms, as list_tasks reads it back)."""
    ids = [s["task_id"] for s in specs]
    async with layout.queue() as queue:
        await enqueue_all(queue, specs, bench.sizes.chunk)
        wb = layout.worker_bench(bench)
        async with agentic_worker(wb, processes, env=layout.worker_env) as workers:
            timeout = WORKER_START_TIMEOUT + len(ids) / 100
            await wait_all_completed(layout, queue, ids, timeout)
        tasks = await queue.list_tasks("completed", limit=len(ids))
    if len(tasks) != len(ids):
        raise RuntimeError(f"G {layout.key}: {len(tasks)} of {len(ids)} tasks read back")
    starts = [(started_ms(t.started_at), t.priority) for t in tasks]
    return {**rank_stats(starts), "processes": processes, "worker_exit": workers.returncode}


def started_ms(started_at: str | None) -> float:
    """RedisTask.started_at (a naive local ISO time from the server's ms) back in ms."""
    if started_at is None:
        raise RuntimeError("a completed task without a start time")
    return float(round(datetime.fromisoformat(started_at).timestamp() * 1000))


def rank_stats(starts: Sequence[tuple[float, int]]) -> dict[str, Any]:
    """How far a start order is from priority order, every task enqueued before the
    first start. A task is out of rank when some task of strictly higher priority started
    strictly later; one that shares its start millisecond with a higher-priority task
    (mostly one claim call taking the end of one band and the start of the next) counts
    only in the upper bound `rank_error_with_ties`. `pairs` counts (earlier, later) start
    pairs whose later one has the higher priority."""
    ordered = sorted(starts)
    later = [0, 0, 0, 0]  # tasks per priority that started strictly later
    out_of_rank = tied = pairs = 0
    by_priority = [0, 0, 0, 0]
    end = len(ordered)
    while end > 0:
        begin = end - 1
        while begin > 0 and ordered[begin - 1][0] == ordered[end - 1][0]:
            begin -= 1
        group = ordered[begin:end]
        top = max(prio for _, prio in group)
        for _, prio in group:
            above = sum(later[prio + 1 :])
            if above:
                out_of_rank += 1
                by_priority[prio] += 1
                pairs += above
            elif prio < top:
                tied += 1
        for _, prio in group:
            later[prio] += 1
        end = begin
    n = len(ordered)
    counts = [sum(1 for _, p in ordered if p == q) for q in range(4)]
    differing = (n * n - sum(c * c for c in counts)) // 2
    return {
        "n": n,
        "out_of_rank": out_of_rank,
        "rank_error": out_of_rank / n if n else 0.0,
        "out_of_rank_by_priority": by_priority,
        "tied_with_higher": tied,
        "rank_error_with_ties": (out_of_rank + tied) / n if n else 0.0,
        "tasks_by_priority": counts,
        "pairs_out_of_order": pairs,
        "pairs_differing": differing,
        "pair_error": pairs / differing if differing else 0.0,
    }
