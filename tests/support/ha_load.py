"""A steady load through a queue while a fault strikes its Redis (a failover, a killed
primary, a slot migration), and what became of every acknowledged task afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from utils.redis_queue import QueueError, RedisTaskQueue, TaskState
from utils.redis_queue.handlers import HandlerRegistry, TaskContext
from utils.redis_queue.worker import Worker

__all__ = ["LoadResult", "run_under_fault"]

log = logging.getLogger("tests.ha_load")


@dataclass
class LoadResult:
    acked: list[str] = field(default_factory=list)  # enqueue returned: the task was accepted
    refused: int = 0  # enqueue raised (Redis away, DurabilityError): not acknowledged
    runs: Counter[str] = field(default_factory=Counter)  # handler runs per task id
    final: dict[str, str] = field(default_factory=dict)  # state at the end ('' = no record)
    lease_losses: dict[str, int] = field(default_factory=dict)  # of the tasks run twice

    @property
    def lost(self) -> list[str]:
        """Acknowledged, and no record of it is left."""
        return [t for t in self.acked if self.final.get(t, "") == ""]

    @property
    def stuck(self) -> list[str]:
        """Acknowledged, still there, but not completed by the deadline."""
        return [t for t in self.acked if self.final.get(t, "") not in ("", TaskState.COMPLETED)]

    @property
    def duplicated(self) -> list[str]:
        return [t for t, n in self.runs.items() if n > 1]

    def summary(self) -> str:
        return (
            f"{len(self.acked)} acknowledged, {self.refused} refused, {len(self.lost)} lost, "
            f"{len(self.stuck)} stuck, {len(self.duplicated)} run twice"
        )


async def run_under_fault(
    make_queue: Callable[..., RedisTaskQueue],
    fault: Callable[[], Any],
    *,
    produce_seconds: float = 6.0,
    fault_after: float = 2.0,
    workers: int = 2,
    durable: bool = False,
    settle_deadline: float = 60.0,
) -> LoadResult:
    """Enqueue one task at a time for `produce_seconds` while `workers` in-process workers
    (each with its own queue object and lease keeper) run them; `fault()` (blocking, run
    in a thread) strikes after `fault_after` seconds. Then wait until every acknowledged
    task completed or `settle_deadline` passed, and read each one's final state."""
    result = LoadResult()
    registry = HandlerRegistry()

    @registry.handler("work")
    async def work(ctx: TaskContext) -> Any:
        result.runs[ctx.task_id] += 1
        return ctx.task_id

    queues = [make_queue() for _ in range(workers)]
    pool = [Worker(q, registry, concurrency=8) for q in queues]
    serving = [asyncio.create_task(w.run()) for w in pool]
    producer = make_queue(durable=durable)
    await producer.connect()
    stop_at = time.monotonic() + produce_seconds
    fault_task = asyncio.create_task(_after(fault_after, fault))
    n = 0
    while time.monotonic() < stop_at:
        task_id = f"p{n}"
        n += 1
        try:
            await producer.enqueue(task_id, "work", {"n": n})
        except QueueError as exc:
            result.refused += 1
            log.info("enqueue of %s refused: %s", task_id, exc)
            await asyncio.sleep(0.05)  # Redis is away: do not spin
            continue
        result.acked.append(task_id)
    await fault_task
    deadline = time.monotonic() + settle_deadline
    pending = set(result.acked)
    while pending and time.monotonic() < deadline:
        for task_id in list(pending):
            try:
                task = await producer.get_task(task_id)
            except QueueError:
                break  # Redis still away: try again shortly
            result.final[task_id] = "" if task is None else str(task.state)
            if task is not None and task.state == TaskState.COMPLETED:
                pending.discard(task_id)
        if pending:
            await asyncio.sleep(0.2)  # waiting on workers and lease expiry, not on a signal
    for task_id in pending:
        try:
            task = await producer.get_task(task_id)
        except QueueError:
            result.final[task_id] = "unreadable"
            continue
        result.final[task_id] = "" if task is None else str(task.state)
    for task_id in result.duplicated:
        with contextlib.suppress(QueueError):
            task = await producer.get_task(task_id)
            result.lease_losses[task_id] = task.lease_losses if task else -1
    for w in pool:
        w.request_stop()
    await asyncio.gather(*serving, return_exceptions=True)
    for q in [*queues, producer]:
        await q.close()
    return result


async def _after(seconds: float, fault: Callable[[], Any]) -> None:
    await asyncio.sleep(seconds)  # let the load reach a steady state first
    await asyncio.to_thread(fault)
