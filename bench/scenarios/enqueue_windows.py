"""Scenario Q: what a dedup or debounce window adds to enqueue(), one call at a time from
one client, against plain enqueue() in the same run (the cases take turns in blocks, so
machine noise falls on all of them alike).

    plain        distinct tasks, no window (the baseline)
    unique_for   distinct tasks, each opening a unique_for window of its own
    debounce     distinct tasks, each held in a debounce window of its own
    duplicate    equal tasks: the first opens a unique_for window, the rest are refused
                 by it (the first task is returned)
    replace      equal tasks under one unique_key: each replaces the held debounced task
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.harness.config import QUICK, TASK_TYPE
from bench.harness.context import Bench, Row, clear_keys
from bench.scenarios.common import warm_up
from utils.redis_queue import RedisTaskQueue

WINDOW_S = 600.0
BLOCKS = 10

Call = Callable[[RedisTaskQueue, int], Awaitable[Any]]


async def plain(q: RedisTaskQueue, i: int) -> Any:
    return await q.enqueue(f"q-plain-{i}", TASK_TYPE, {"i": i})


async def unique(q: RedisTaskQueue, i: int) -> Any:
    return await q.enqueue(f"q-unique-{i}", TASK_TYPE, {"i": i}, unique_for=WINDOW_S)


async def debounce(q: RedisTaskQueue, i: int) -> Any:
    return await q.enqueue(f"q-debounce-{i}", "q-held", {"i": i}, debounce=WINDOW_S)


async def duplicate(q: RedisTaskQueue, i: int) -> Any:
    return await q.enqueue(f"q-dup-{i}", "q-dup", {"i": 0}, unique_for=WINDOW_S)


async def replace(q: RedisTaskQueue, i: int) -> Any:
    return await q.enqueue(
        f"q-replace-{i}", "q-replace", {"i": i}, debounce=WINDOW_S, unique_key="one"
    )


CASES: dict[str, Call] = {
    "plain": plain,
    "unique_for": unique,
    "debounce": debounce,
    "duplicate": duplicate,
    "replace": replace,
}


async def check_state(bench: Bench, queue: RedisTaskQueue, n: int) -> None:
    """The windows did what they promise: one duplicate-window task, one held task."""
    if await bench.admin.exists(queue.keys.task("q-dup-1")):
        raise RuntimeError("a duplicate enqueue inside its unique_for window was stored")
    replaced = await queue.list_tasks("delayed", limit=10, task_type="q-replace")
    if len(replaced) != 1 or replaced[0].payload != {"i": n - 1}:
        raise RuntimeError(f"debounce kept {len(replaced)} tasks, expected the last one")


async def scenario_q(bench: Bench) -> Row:
    n = 500 if bench.sizes == QUICK else 5_000
    block = n // BLOCKS
    seconds = dict.fromkeys(CASES, 0.0)
    async with bench.queue() as queue:
        await warm_up(bench, queue)
        for start in range(0, n, block):
            for name, call in CASES.items():
                t0 = time.perf_counter()
                for i in range(start, start + block):
                    await call(queue, i)
                seconds[name] += time.perf_counter() - t0
        await check_state(bench, queue, n)
    await clear_keys(bench.admin, bench.queue_name)
    us = {name: s / n * 1e6 for name, s in seconds.items()}
    ratios = {name: us[name] / us["plain"] for name in CASES}
    windows = [name for name in CASES if name != "plain"]
    return Row(
        key="Q",
        name=f"enqueue() with a window, {n:,} each",
        measured=", ".join(f"{name} {us[name]:,.0f} us" for name in windows),
        baseline=f"plain enqueue() {us['plain']:,.0f} us",
        ratio=", ".join(f"{ratios[name]:.2f}x" for name in windows),
        data={"n": n, "us_per_call": us, "ratio_to_plain": ratios},  # no goal set
    )
