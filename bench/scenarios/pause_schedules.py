"""Scenario P: pause and resume as `agentic worker` processes see them, and the cost of
a scheduler step.

    pause        3 worker processes x concurrency 10 drain 50-ms `stamp` tasks (each
                 writes its wall-clock start to a ledger file); each round, pause() the
                 queue, hold it, and count the tasks whose handler started after pause()
                 returned, and of those the ones claimed after the pause's server time
                 (the task's `started` field, set by the claim): the guarantee is on claims
    resume       then resume() and time the first start after it returned
    idle step    run_due_schedules() with no schedule due  vs  raw PING, one at a time
    due at once  one run_due_schedules() with 1,000 schedules due  vs  enqueue_many() of
                 1,000 tasks (what the step enqueues), in the same run
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.apps import STAMP_TYPE
from bench.harness.config import QUICK, TASK_TYPE
from bench.harness.context import Bench, Row, clear_keys
from bench.harness.payloads import chunks, payload
from bench.harness.processes import agentic_worker
from utils.redis_queue import RedisTaskQueue

TASK_SECONDS = 0.05
PROCESSES = 3
WARM_STARTS = 50  # starts seen before the first round: every process serves tasks
START_TIMEOUT = 60.0  # spawn -> WARM_STARTS, on a loaded machine
WAKE_TIMEOUT = 10.0


@dataclass(frozen=True)
class Plan:
    tasks: int
    rounds: int
    hold_s: float
    idle_steps: int
    due: int


FULL_PLAN = Plan(20_000, 5, 1.5, 200, 1_000)
QUICK_PLAN = Plan(2_000, 2, 0.5, 50, 200)


@dataclass
class Ledger:
    """The start times the `stamp` tasks append, read incrementally."""

    path: Path
    offset: int = 0
    starts: list[float] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)

    def read(self) -> list[float]:
        if self.path.exists():
            with self.path.open() as f:
                f.seek(self.offset)
                text = f.read()
            done = text.rfind("\n") + 1  # a line being written is read next time
            self.offset += done
            for line in text[:done].splitlines():
                task_id, at = line.split()
                self.ids.append(task_id)
                self.starts.append(float(at))
        return self.starts

    async def until(self, check: Any, timeout: float, poll: float = 0.002) -> None:
        """Polls the file (another process writes it: nothing to await)."""
        deadline = time.monotonic() + timeout
        while not check(self.read()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.path}: {len(self.starts)} starts")
            await asyncio.sleep(poll)


async def claimed_since(
    bench: Bench, queue: RedisTaskQueue, task_ids: list[str], since_ms: int
) -> int:
    """How many of `task_ids` were claimed at or after `since_ms` (server time); a task
    whose record is gone counts as claimed after."""
    count = 0
    for task_id in task_ids:
        started = await bench.admin.hget(queue.keys_for(task_id).task(task_id), "started")
        count += started is None or int(started) >= since_ms
    return count


async def pause_rounds(bench: Bench, queue: RedisTaskQueue, plan: Plan) -> dict[str, Any]:
    ledger = Ledger(Path(tempfile.mkdtemp(prefix="bench-p-")) / "ledger")
    body = {"ledger": str(ledger.path), "seconds": TASK_SECONDS}
    specs = [
        {"task_id": f"p{i}", "task_type": STAMP_TYPE, "payload": body} for i in range(plan.tasks)
    ]
    for chunk in chunks(specs, bench.sizes.chunk):
        await queue.enqueue_many(chunk)
    late: list[float] = []  # per round: latest start minus pause() return (< 0: none after)
    after: list[int] = []  # per round: starts after pause() returned
    claimed_after: list[int] = []  # of those, claimed after the pause (server time)
    wake: list[float] = []  # per round: first start after resume() returned
    async with agentic_worker(bench, processes=PROCESSES) as workers:
        await ledger.until(lambda s: len(s) >= WARM_STARTS, START_TIMEOUT)
        for _ in range(plan.rounds):
            await asyncio.sleep(0.5)
            await queue.pause()
            paused_at = time.time()
            paused_ms = int(await bench.admin.hget(queue.keys.paused, "*") or 0)
            await asyncio.sleep(plan.hold_s)
            starts = ledger.read()
            late.append(max(starts) - paused_at)
            late_ids = [ledger.ids[i] for i, s in enumerate(starts) if s > paused_at]
            after.append(len(late_ids))
            claimed_after.append(await claimed_since(bench, queue, late_ids, paused_ms))
            count = len(starts)
            await queue.resume()
            resumed_at = time.time()
            await ledger.until(lambda s, c=count: len(s) > c, WAKE_TIMEOUT)
            wake.append(min(s for s in ledger.starts[count:]) - resumed_at)
        exit_code = await workers.stop()
    return {
        "rounds": plan.rounds,
        "tasks": plan.tasks,
        "hold_s": plan.hold_s,
        "starts_after_pause": after,
        "claimed_after_pause": claimed_after,
        "latest_start_after_pause_ms": [x * 1e3 for x in late],
        "first_start_after_resume_ms": [x * 1e3 for x in wake],
        "started": len(ledger.starts),
        "worker_exit": exit_code,
    }


async def scheduler_costs(bench: Bench, queue: RedisTaskQueue, plan: Plan) -> dict[str, Any]:
    await queue.run_due_schedules()  # scripts loaded
    t0 = time.perf_counter()
    for _ in range(plan.idle_steps):
        await queue.run_due_schedules()
    idle = (time.perf_counter() - t0) / plan.idle_steps
    t0 = time.perf_counter()
    for _ in range(plan.idle_steps):
        await bench.admin.ping()
    ping = (time.perf_counter() - t0) / plan.idle_steps
    for i in range(plan.due):
        await queue.schedule(f"s{i}", every=3600, task_type=TASK_TYPE)
    await bench.admin.zadd(queue.keys.schedule_due, {f"s{i}": 0 for i in range(plan.due)})
    t0 = time.perf_counter()
    step = await queue.run_due_schedules()
    due_s = time.perf_counter() - t0
    if step.enqueued != plan.due or (await queue.get_queue_size())["pending"] != plan.due:
        raise RuntimeError(f"{plan.due} due schedules, the step enqueued {step.enqueued}")
    await clear_keys(bench.admin, bench.queue_name)
    specs = [
        {"task_id": f"e{i}", "task_type": TASK_TYPE, "payload": payload(i)} for i in range(plan.due)
    ]
    t0 = time.perf_counter()
    await queue.enqueue_many(specs)
    many_s = time.perf_counter() - t0
    await clear_keys(bench.admin, bench.queue_name)
    return {"idle_step_ms": idle * 1e3, "ping_ms": ping * 1e3, "due": plan.due,
            "due_step_s": due_s, "enqueue_many_s": many_s}  # fmt: skip


async def scenario_p(bench: Bench) -> Row:
    plan = QUICK_PLAN if bench.sizes == QUICK else FULL_PLAN
    async with bench.queue() as queue:
        sched = await scheduler_costs(bench, queue, plan)
        pause = await pause_rounds(bench, queue, plan)
    await clear_keys(bench.admin, bench.queue_name)
    wake = pause["first_start_after_resume_ms"]
    after = sum(pause["starts_after_pause"])
    claimed = sum(pause["claimed_after_pause"])
    latest = max(pause["latest_start_after_pause_ms"])
    return Row(
        key="P",
        name=f"pause/resume ({PROCESSES} workers x 10), scheduler step",
        measured=f"{claimed} claims after pause(); {after} handler starts after it"
        f" returned (latest {latest:+.0f} ms);"
        f" resume -> first start {min(wake):.1f}-{max(wake):.1f} ms;"
        f" idle step {sched['idle_step_ms']:.2f} ms;"
        f" {plan.due:,} due {sched['due_step_s']:.2f} s",
        baseline=f"PING {sched['ping_ms']:.2f} ms;"
        f" enqueue_many({plan.due:,}) {sched['enqueue_many_s']:.2f} s",
        ratio=f"{sched['idle_step_ms'] / sched['ping_ms']:.1f}x,"
        f" {sched['due_step_s'] / sched['enqueue_many_s']:.1f}x",
        target="0 claims after pause()",
        hit=claimed == 0,
        data={"pause": pause, "scheduler": sched},
    )
