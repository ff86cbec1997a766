"""The worker runtime, `agentic worker` subprocesses: C (one process) and D (two) drain
pre-enqueued tasks, E times round trips through an idle one."""

from __future__ import annotations

import asyncio
import gc
import math

from bench.harness.context import Bench, Row, fmt_rate
from bench.harness.payloads import chunks, percentile, task_dicts
from bench.harness.probe import Probe
from bench.harness.processes import (
    WORKER_CONCURRENCY,
    WORKER_START_TIMEOUT,
    agentic_worker,
    cpu_delta,
    per_task_us,
    until_quiet,
)
from bench.scenarios.common import round_trip, warm_up
from bench.scenarios.targets import TARGET_C_RATE, TARGET_E_P50_MS, TARGET_E_P99_MS
from utils.redis_queue import RedisTaskQueue


async def wait_until_completed(
    bench: Bench, queue: RedisTaskQueue, last_id: str, n: int, timeout: float
) -> None:
    """Until all n tasks are completed: block in Redis on the last task's result, then
    poll ZCARD every 50 ms for the few that were still running then (at most the
    workers' slots). Benchmark-driver polling of a short tail only; the rate is taken
    from server-side completion times, so the polling period does not enter it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    await queue.wait_for_result(last_id, timeout=timeout)
    while await bench.admin.zcard(queue.keys.completed) < n:
        if loop.time() > deadline:
            sizes = await queue.get_queue_size()
            raise RuntimeError(f"{n} tasks not completed after {timeout} s: {sizes}")
        await asyncio.sleep(0.05)


async def completion_times(bench: Bench, queue: RedisTaskQueue) -> tuple[int, float, float]:
    """(count, first, last) completion times in ms (Redis server time): the scores of the
    queue's `completed` set, written by complete.lua."""
    key = queue.keys.completed
    async with bench.admin.pipeline(transaction=False) as pipe:
        pipe.zcard(key)
        pipe.zrange(key, 0, 0, withscores=True)
        pipe.zrange(key, -1, -1, withscores=True)
        count, first, last = await pipe.execute()
    return int(count), float(first[0][1]), float(last[0][1])


async def worker_drain(bench: Bench, key: str, processes: int) -> Row:
    """C and D: `processes` worker processes drain n pre-enqueued no-op tasks."""
    n = bench.sizes.worker_drain
    specs = task_dicts(n)
    first_id, last_id = specs[0]["task_id"], specs[-1]["task_id"]
    probe = Probe(bench.admin, collect=False)
    profile_to = bench.worker_profile(key) if processes == 1 else None
    async with bench.queue() as queue:
        await warm_up(bench, queue)
        for chunk in chunks(specs, bench.sizes.chunk):
            await queue.enqueue_many(chunk)
        gc.collect()
        async with agentic_worker(bench, processes, profile_to) as workers:
            # The first task enqueued is claimed first: its result marks the end of start-up.
            await queue.wait_for_result(first_id, timeout=WORKER_START_TIMEOUT)
            cpu0 = workers.cpu()
            async with probe:
                done0 = await bench.admin.zcard(queue.keys.completed)
                await wait_until_completed(bench, queue, last_id, n, timeout=120 + n / 100)
            cpu1 = workers.cpu()
        count, first_ms, last_ms = await completion_times(bench, queue)
        sizes = await queue.get_queue_size()
    if count != n or sizes["completed"] != n:
        raise RuntimeError(f"scenario {key}: {count} of {n} tasks completed: {sizes}")
    span_s = (last_ms - first_ms) / 1000
    rate = (n - 1) / span_s if span_s > 0 else math.inf
    startup_ms = first_ms - workers.spawn_ms
    rate_incl = n / ((last_ms - workers.spawn_ms) / 1000)
    window = max(1, n - done0)
    cpu = cpu_delta(cpu0, cpu1)
    ratio = rate / bench.raw_rate
    label = (
        "one `agentic worker` process"
        if processes == 1
        else f"{processes} worker processes (--processes {processes})"
    )
    if processes == 1:
        target, hit = f">= {TARGET_C_RATE:,.0f} tasks/s", rate >= TARGET_C_RATE
    elif "C" in bench.rows:
        c_rate = float(bench.rows["C"].data["tasks_per_s"])
        target, hit = f"> C ({c_rate:,.0f} tasks/s)", rate > c_rate
    else:
        target, hit = "> C (C not run)", None
    return Row(
        key=key,
        name=f"{label}, --concurrency {WORKER_CONCURRENCY}, no-op",
        measured=(
            f"{fmt_rate(rate, 'tasks')}; start-up {startup_ms:,.0f} ms, "
            f"{fmt_rate(rate_incl, 'tasks')} with it"
        ),
        baseline=f"(a) {fmt_rate(bench.raw_rate, 'ops')}",
        ratio=f"{ratio:.2f}x",
        target=target,
        hit=hit,
        cost=probe.cost(window, window / rate, sum(cpu.values())),
        data={
            "n": n,
            "processes": processes,
            "concurrency": WORKER_CONCURRENCY,
            "tasks_per_s": rate,
            "ratio": ratio,
            "first_to_last_ms": last_ms - first_ms,
            "startup_ms": startup_ms,
            "tasks_per_s_with_startup": rate_incl,
            "cpu_window_tasks": window,
            "process_cpu_us_per_task": per_task_us(cpu, window),
            "worker_exit": workers.returncode,
            "worker_stop_s": workers.stop_s,
            "worker_profile": str(profile_to) if profile_to else None,
        },
    )


async def scenario_c(bench: Bench) -> Row:
    return await worker_drain(bench, "C", processes=1)


async def scenario_d(bench: Bench) -> Row:
    return await worker_drain(bench, "D", processes=2)


async def scenario_e(bench: Bench) -> Row:
    """Sequential enqueue -> wait_for_result trips through an idle `agentic worker`."""
    n = bench.sizes.round_trips
    totals: list[float] = []
    enqueues: list[float] = []
    profile_to = bench.worker_profile("E")
    async with bench.queue() as queue:
        await warm_up(bench, queue)
        async with agentic_worker(bench, 1, profile_to) as workers:
            # The first warm-up trip also waits for the worker to start.
            await round_trip(queue, 0, timeout=WORKER_START_TIMEOUT)
            for i in range(1, bench.sizes.warmup):
                await round_trip(queue, i)
            await until_quiet(workers)  # the trips then compete with no start-up work
            cpu0 = workers.cpu()
            async with bench.probe("E") as probe:
                for i in range(n):
                    enqueue_s, total_s = await round_trip(queue, i)
                    enqueues.append(enqueue_s)
                    totals.append(total_s)
            cpu1 = workers.cpu()
    cpu = cpu_delta(cpu0, cpu1)
    p50, p99 = percentile(totals, 50) * 1e3, percentile(totals, 99) * 1e3
    ratio = p50 / bench.raw_p50_ms
    return Row(
        key="E",
        name="enqueue -> wait_for_result via `agentic worker`",
        measured=f"p50 {p50:.3f} ms, p99 {p99:.3f} ms",
        baseline=f"(a) one command p50 {bench.raw_p50_ms:.3f} ms",
        ratio=f"{ratio:.1f}x",
        target=f"p50 <= {TARGET_E_P50_MS} ms, p99 <= {TARGET_E_P99_MS:g} ms",
        hit=p50 <= TARGET_E_P50_MS and p99 <= TARGET_E_P99_MS,
        cost=probe.cost(n, client_cpu_s=probe.client_cpu_s + sum(cpu.values())),
        data={
            "n": n,
            "warmup": bench.sizes.warmup,
            "p50_ms": p50,
            "p90_ms": percentile(totals, 90) * 1e3,
            "p99_ms": p99,
            "max_ms": max(totals) * 1e3,
            "enqueue_p50_ms": percentile(enqueues, 50) * 1e3,
            "trips_per_s": n / probe.wall_s,
            "ratio_to_raw_p50": ratio,
            "process_cpu_us_per_task": {
                "driver": probe.client_cpu_s / n * 1e6,
                **per_task_us(cpu, n),
            },
            "worker_exit": workers.returncode,
            "worker_stop_s": workers.stop_s,
            "worker_profile": str(profile_to) if profile_to else None,
        },
    )
