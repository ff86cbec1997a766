"""The worker runtime, `agentic worker` subprocesses: C (one process) and D (two) drain
pre-enqueued tasks, E times round trips through an idle one."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness.breakdown import ScriptLog, cpu_breakdown, server_breakdown
from bench.harness.context import Bench, Row, clear_keys, fmt_rate
from bench.harness.payloads import chunks, percentile, task_dicts
from bench.harness.probe import Probe
from bench.harness.processes import (
    WORKER_CONCURRENCY,
    WORKER_START_TIMEOUT,
    WorkerProcs,
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


@dataclass
class Drain:
    """One drain of n pre-enqueued tasks by `agentic worker` processes."""

    n: int
    rate: float  # tasks/s between the first and the last completion
    first_ms: float
    last_ms: float
    window: int  # tasks completed while the CPU was measured
    cpu: dict[str, float]  # CPU seconds per role over the window
    probe: Probe
    workers: WorkerProcs
    commands: dict[str, tuple[int, int]] | None = None  # SLOWLOG: name -> (calls, usec)
    log_full: bool = False


async def drain_once(
    bench: Bench,
    processes: int,
    profile_to: Path | None = None,
    slowlog: bool = False,
    timing_to: Path | None = None,
) -> Drain:
    """`processes` worker processes drain n pre-enqueued no-op tasks; with `slowlog`
    (a private server only) the script calls' server time is logged meanwhile."""
    n = bench.sizes.worker_drain
    specs = task_dicts(n)
    first_id, last_id = specs[0]["task_id"], specs[-1]["task_id"]
    probe = Probe(bench.admin, collect=False)
    log = ScriptLog(bench.admin, capacity=n + 10_000) if slowlog else None
    async with bench.queue() as queue:
        await warm_up(bench, queue)
        for chunk in chunks(specs, bench.sizes.chunk):
            await queue.enqueue_many(chunk)
        gc.collect()
        async with agentic_worker(bench, processes, profile_to, timing_to=timing_to) as workers:
            # The first task enqueued is claimed first: its result marks the end of start-up.
            await queue.wait_for_result(first_id, timeout=WORKER_START_TIMEOUT)
            async with contextlib.AsyncExitStack() as stack:
                if log is not None:
                    await stack.enter_async_context(log)
                cpu0 = workers.cpu()
                async with probe:
                    done0 = await bench.admin.zcard(queue.keys.completed)
                    await wait_until_completed(bench, queue, last_id, n, timeout=120 + n / 100)
                cpu1 = workers.cpu()
                commands, full = await log.by_command() if log is not None else (None, False)
        count, first_ms, last_ms = await completion_times(bench, queue)
        sizes = await queue.get_queue_size()
        await clear_keys(bench.admin, bench.queue_name)
    if count != n or sizes["completed"] != n:
        raise RuntimeError(f"{count} of {n} tasks completed: {sizes}")
    span_s = (last_ms - first_ms) / 1000
    rate = (n - 1) / span_s if span_s > 0 else math.inf
    window = max(1, n - done0)
    cpu = cpu_delta(cpu0, cpu1)
    return Drain(n, rate, first_ms, last_ms, window, cpu, probe, workers, commands, full)


async def worker_drain(bench: Bench, key: str, processes: int) -> Row:
    """C and D: `processes` worker processes drain n pre-enqueued no-op tasks. C with
    --profile-workers: the same again with the worker's CPU timed by piece."""
    timing_to = bench.worker_profile("C-timing") if key == "C" else None
    run = await drain_once(bench, processes, slowlog=timing_to is not None and bench.own_server)
    n, rate, workers = run.n, run.rate, run.workers
    startup_ms = run.first_ms - workers.spawn_ms
    rate_incl = n / ((run.last_ms - workers.spawn_ms) / 1000)
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
    data: dict[str, Any] = {
        "n": n,
        "processes": processes,
        "concurrency": WORKER_CONCURRENCY,
        "tasks_per_s": rate,
        "ratio": ratio,
        "first_to_last_ms": run.last_ms - run.first_ms,
        "startup_ms": startup_ms,
        "tasks_per_s_with_startup": rate_incl,
        "cpu_window_tasks": run.window,
        "process_cpu_us_per_task": per_task_us(run.cpu, run.window),
        "worker_exit": workers.returncode,
        "worker_stop_s": workers.stop_s,
        "worker_profile": None,
    }
    if timing_to is not None:
        timing_to = timing_to.with_suffix(".json")
        timed = await drain_once(bench, processes, timing_to=timing_to)
        data["breakdown"] = breakdown_data(run, timed, timing_to)
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
        cost=run.probe.cost(run.window, run.window / rate, sum(run.cpu.values())),
        data=data,
    )


def breakdown_data(run: Drain, timed: Drain, timing: Path) -> dict[str, Any]:
    """Per task, by piece: the worker's CPU (the timed run's shares x the untimed run's
    worker CPU), the keeper's CPU, and Redis's time by script (the untimed run's SLOWLOG)."""
    if timed.workers.returncode != 0 or not timing.exists():
        return {"error": f"the timed worker exited with {timed.workers.returncode}"}
    cpu = cpu_breakdown(timing, timed.n)
    worker_us = run.cpu.get("worker", 0.0) / run.window * 1e6
    out: dict[str, Any] = {
        "worker_cpu_us": worker_us,
        "keeper_cpu_us": run.cpu.get("keeper", 0.0) / run.window * 1e6,
        "worker_us": {p: share * worker_us for p, share in cpu.shares().items()},
        "timed_us": cpu.timed_us,
        "timed_rate": timed.rate,
        "timing": str(timing),
        "server_us": None,
    }
    if run.commands is not None:
        pieces, detail = server_breakdown(run.commands, run.probe.commands, run.window)
        out.update(server_us=pieces, server_commands=detail, slowlog_full=run.log_full)
    return out


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
