"""The seed's own loop (dequeue + complete_task): C0 drains a pre-filled queue with it in
this process, E0 times round trips through it in bench/queue_worker.py."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import uuid
from collections.abc import AsyncIterator

from bench.harness.config import ROOT
from bench.harness.context import Bench, Row, fmt_rate
from bench.harness.payloads import chunks, percentile, task_dicts
from bench.queue_worker import STOP_TYPE
from bench.scenarios.common import round_trip, warm_up
from bench.scenarios.targets import TARGET_E_P50_MS
from utils.redis_queue import RedisTaskQueue

WORKER_SCRIPT = ROOT / "bench" / "queue_worker.py"


async def drain(queue: RedisTaskQueue, workers: int) -> tuple[int, float]:
    """The seed loop in `workers` coroutines until dequeue() times out. Returns the tasks
    completed and the perf_counter time of the last completion."""
    done = 0
    last = time.perf_counter()

    async def worker(worker_id: str) -> None:
        nonlocal done, last
        while True:
            task = await queue.dequeue(worker_id, timeout=1.0)
            if task is None:
                return
            await queue.complete_task(task.task_id, {"ok": True})
            done += 1
            last = time.perf_counter()

    await asyncio.gather(*(worker(f"bench-w{i}") for i in range(workers)))
    return done, last


async def scenario_c0(bench: Bench) -> Row:
    n, workers = bench.sizes.drain, bench.sizes.workers
    async with bench.queue() as queue:
        await warm_up(bench, queue)
        for chunk in chunks(task_dicts(n), bench.sizes.chunk):
            await queue.enqueue_many(chunk)
        async with bench.probe("C0") as probe:
            start = time.perf_counter()
            done, last = await drain(queue, workers)
    if done != n:
        raise RuntimeError(f"scenario C0 completed {done} of {n} tasks")
    elapsed = last - start  # excludes the final 1 s dequeue timeout of idle workers
    rate = n / elapsed
    ratio = rate / bench.raw_rate
    return Row(
        key="C0",
        name=f"seed loop: dequeue()+complete_task(), {workers} coroutines",
        measured=fmt_rate(rate, "tasks"),
        baseline=f"(a) {fmt_rate(bench.raw_rate, 'ops')}",
        ratio=f"{ratio:.2f}x",
        target="print only",
        cost=probe.cost(n, elapsed),
        data={"n": n, "workers": workers, "tasks_per_s": rate, "ratio": ratio},
    )


@contextlib.asynccontextmanager
async def worker_process(bench: Bench) -> AsyncIterator[asyncio.subprocess.Process]:
    """bench/queue_worker.py (the seed loop, for E0) on the benchmark's queue, ready when
    this yields."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER_SCRIPT),
        "--redis-url",
        bench.url,
        "--queue",
        bench.queue_name,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
        if line.strip() != b"ready":
            raise RuntimeError(f"worker did not start: {line!r}")
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def stop_worker(queue: RedisTaskQueue, proc: asyncio.subprocess.Process) -> None:
    stop_id = uuid.uuid4().hex
    await queue.enqueue(stop_id, STOP_TYPE, {})
    await queue.wait_for_result(stop_id, timeout=10)
    await asyncio.wait_for(proc.wait(), timeout=10)


async def scenario_e0(bench: Bench) -> Row:
    n = bench.sizes.round_trips
    totals: list[float] = []
    enqueues: list[float] = []
    seed_result = {"ok": True}
    async with bench.queue() as queue, worker_process(bench) as proc:
        for i in range(bench.sizes.warmup):
            await round_trip(queue, i, seed_result)
        async with bench.probe("E0") as probe:
            for i in range(n):
                enqueue_s, total_s = await round_trip(queue, i, seed_result)
                enqueues.append(enqueue_s)
                totals.append(total_s)
        await stop_worker(queue, proc)
    p50, p99 = percentile(totals, 50) * 1e3, percentile(totals, 99) * 1e3
    enqueue_p50 = percentile(enqueues, 50) * 1e3
    ratio = p50 / bench.raw_p50_ms
    return Row(
        key="E0",
        name="seed loop: enqueue -> wait_for_result (process)",
        measured=f"p50 {p50:.3f} ms, p99 {p99:.3f} ms",
        baseline=f"(a) one command p50 {bench.raw_p50_ms:.3f} ms",
        ratio=f"{ratio:.1f}x",
        target=f"p50 <= {TARGET_E_P50_MS} ms",
        hit=p50 <= TARGET_E_P50_MS,
        cost=probe.cost(n),
        data={
            "n": n,
            "warmup": bench.sizes.warmup,
            "p50_ms": p50,
            "p99_ms": p99,
            "enqueue_p50_ms": enqueue_p50,
            "trips_per_s": n / probe.wall_s,
            "ratio_to_raw_p50": ratio,
        },
    )
