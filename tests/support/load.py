"""Producing load with a seeded mix, and waiting for the system to go quiet."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

from tests.support.ledger import LedgerWriter
from utils.redis_queue import BulkEnqueueError, QueueError, RedisTaskQueue


def payloads(seed: int, count: int, prefix: str, **fixed: Any) -> list[tuple[str, dict[str, Any]]]:
    """`count` tasks `<prefix>-<i>` sleeping 5-50 ms (seeded), plus `fixed` fields."""
    rng = random.Random(seed)
    return [(f"{prefix}-{i}", {"ms": rng.randint(5, 50), **fixed}) for i in range(count)]


async def enqueue_all(
    queue: RedisTaskQueue,
    writer: LedgerWriter,
    tasks: list[tuple[str, dict[str, Any]]],
    *,
    chunk: int = 100,
) -> int:
    """Enqueue in chunks, recording what Redis acknowledged; returns how many."""
    acked = 0
    for start in range(0, len(tasks), chunk):
        part = tasks[start : start + chunk]
        ids: list[str] = []
        try:
            done = await queue.enqueue_many(
                {"task_id": i, "task_type": "work", "payload": p} for i, p in part
            )
            ids = [t.task_id for t in done]
        except BulkEnqueueError as exc:
            ids = [t.task_id for t in exc.enqueued]
        except QueueError:
            ids = []
        writer.ack(ids)
        acked += len(ids)
    return acked


class Producer:
    """Enqueues one task at a time in the background while faults happen; every enqueue
    that Redis acknowledged is in the ledger, every refusal is counted (with its time)."""

    def __init__(
        self, queue: RedisTaskQueue, writer: LedgerWriter, seed: int, prefix: str = "p"
    ) -> None:
        self.queue, self.writer, self.prefix = queue, writer, prefix
        self.rng = random.Random(seed)
        self.acked = 0
        self.refused: list[tuple[float, float, str]] = []  # (started, seconds, error)
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def start(self, rate: float = 200.0) -> None:
        self._task = asyncio.create_task(self._run(1.0 / rate))

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _run(self, interval: float) -> None:
        i = 0
        while not self._stop.is_set():
            task_id = f"{self.prefix}-{i}"
            i += 1
            started = time.monotonic()
            try:
                await self.queue.enqueue(task_id, "work", {"ms": self.rng.randint(5, 50)})
            except QueueError as exc:
                self.refused.append((started, time.monotonic() - started, str(exc)))
            else:
                self.writer.ack([task_id])
                self.acked += 1
            await asyncio.sleep(interval)


async def poll(check: Callable[[], Any], timeout: float, interval: float = 0.1) -> bool:
    """Poll a condition on other processes' progress until true or the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if await check():
                return True
        except QueueError:
            pass  # Redis still away
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)


async def value(v: object) -> object:
    """An awaitable of a plain value, for poll() on conditions that need no Redis."""
    return v


async def drained(queue: RedisTaskQueue, expected_final: int, timeout: float) -> bool:
    """True once nothing is pending, delayed or processing and at least `expected_final`
    tasks are final; False at the deadline (the checker then shows what is left)."""

    async def quiet() -> bool:
        s = await queue.get_queue_size()
        final = s["completed"] + s["dlq"] + s["failed"] + s["cancelled"]
        return s["pending"] + s["delayed"] + s["processing"] == 0 and final >= expected_final

    return await poll(quiet, timeout)
