"""H: flow control's cost when limits are configured but do not bind.

Drains like C (one `agentic worker` process, --concurrency 10, no-op tasks), in rounds of
this order so drift on a noisy machine hits every variant alike: no limits; the task
type's own limit; tasks listing 1, 3 and 10 limit keys; and one more unlimited drain at
the end. Each variant's rate is the median of its rounds. Every limit key has all three
kinds (rate, concurrency, tokens), each far above what the drain uses, and each task
reserves 10 tokens, so every claim checks and charges every kind and every settle gives
slots and tokens back. The ratio of each drain to the mean of the two unlimited drains
is the throughput cost; the in-process claim + settle micro-benchmark gives the cost per
task of each key count without the worker runtime around it.
"""

from __future__ import annotations

import gc
import statistics
import time
from typing import Any

from bench.harness.config import TASK_TYPE
from bench.harness.context import Bench, Row, clear_keys, fmt_rate
from bench.harness.payloads import chunks, task_dicts
from bench.harness.processes import WORKER_START_TIMEOUT, agentic_worker
from bench.scenarios.workers import completion_times, wait_until_completed
from utils.redis_queue import RedisTaskQueue, Settlement

TARGET_RATIO = 0.9
VARIANTS = (  # (label, limit keys per task, does the type's own limit exist)
    ("none", 0, False),
    ("type", 0, True),
    ("1 key", 1, False),
    ("3 keys", 3, False),
    ("10 keys", 10, False),
)
ROUNDS = 3
_CLAIM_BATCH = 10


async def _configure(queue: RedisTaskQueue, keys: int, type_limit: bool) -> list[str]:
    names = [f"bench-limit-{i}" for i in range(keys)] + ([TASK_TYPE] if type_limit else [])
    for name in names:
        await queue.set_limit(name, rate=1_000_000, per=1, burst=1_000_000, concurrency=100_000)
        await queue.set_limit(name, tokens=1_000_000_000, per=60)
    return [n for n in names if n != TASK_TYPE]


def _specs(n: int, listed: list[str]) -> list[dict[str, Any]]:
    specs = task_dicts(n)
    if listed:
        for spec in specs:
            spec["limits"] = listed
            spec["cost_tokens"] = 10
    return specs


async def _drain(bench: Bench, keys: int, type_limit: bool) -> float:
    n = bench.sizes.worker_drain
    await clear_keys(bench.admin, bench.queue_name)
    async with bench.queue() as queue:
        listed = await _configure(queue, keys, type_limit)
        specs = _specs(n, listed)
        for chunk in chunks(specs, bench.sizes.chunk):
            await queue.enqueue_many(chunk)
        gc.collect()
        async with agentic_worker(bench, 1):
            await queue.wait_for_result(specs[0]["task_id"], timeout=WORKER_START_TIMEOUT)
            await wait_until_completed(bench, queue, specs[-1]["task_id"], n, 120 + n / 100)
        count, first_ms, last_ms = await completion_times(bench, queue)
        if count != n:
            raise RuntimeError(f"scenario H: {count} of {n} tasks completed")
        status = await queue.get_limits()
        if any(s.running or s.waiting for s in status.values()):
            raise RuntimeError(f"scenario H: a limit bound or kept a slot: {status}")
    return (n - 1) / ((last_ms - first_ms) / 1000)


async def _claim_cost_us(bench: Bench, keys: int) -> float:
    """Client wall time per task of claim_ready(10) + settle_many over a filled queue."""
    n = max(1_000, bench.sizes.worker_drain // 4)
    await clear_keys(bench.admin, bench.queue_name)
    async with bench.queue() as queue:
        listed = await _configure(queue, keys, False)
        for chunk in chunks(_specs(n, listed), bench.sizes.chunk):
            await queue.enqueue_many(chunk)
        started, done = time.perf_counter(), 0
        while batch := (await queue.claim_ready("bench", _CLAIM_BATCH)).tasks:
            await queue.settle_many(Settlement(t.task_id, t.lease_token) for t in batch)
            done += len(batch)
        took = time.perf_counter() - started
    if done != n:
        raise RuntimeError(f"scenario H: claimed {done} of {n}")
    return took / n * 1e6


async def scenario_h(bench: Bench) -> Row:
    runs: dict[str, list[float]] = {label: [] for label, _, _ in VARIANTS}
    for _ in range(ROUNDS if bench.sizes.worker_drain >= 10_000 else 1):
        for label, keys, typed in VARIANTS:
            runs[label].append(await _drain(bench, keys, typed))
    runs["none"].append(await _drain(bench, 0, False))
    rates = {label: statistics.median(values) for label, values in runs.items()}
    unlimited = rates["none"]
    ratios = {label: rate / unlimited for label, rate in rates.items()}
    claim_us = {keys: await _claim_cost_us(bench, keys) for keys in (0, 1, 3, 10)}
    await clear_keys(bench.admin, bench.queue_name)
    worst = min(ratios["type"], ratios["1 key"])
    return Row(
        key="H",
        name="C with limits configured, not binding (type limit; 1, 3, 10 keys per task)",
        measured=(
            f"none {fmt_rate(unlimited, 'tasks')}; "
            + ", ".join(f"{k} {ratios[k]:.2f}x" for k in ("type", "1 key", "3 keys", "10 keys"))
            + "; claim+settle "
            + ", ".join(f"{k} keys {us:.0f} us" for k, us in claim_us.items())
        ),
        baseline="the unlimited drains of the same run",
        ratio=f"{worst:.2f}x",
        target=f">= {TARGET_RATIO}x with one limit (type or 1 key)",
        hit=worst >= TARGET_RATIO,
        data={
            "n": bench.sizes.worker_drain,
            "tasks_per_s": rates,
            "runs_tasks_per_s": runs,
            "ratio_to_unlimited": ratios,
            "claim_settle_us_per_task": {str(k): v for k, v in claim_us.items()},
            "claim_batch": _CLAIM_BATCH,
        },
    )
