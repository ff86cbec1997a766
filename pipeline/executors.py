"""Where a run's subtasks execute: one interface, two executors.

    LocalExecutor  (pipeline/local.py) an in-memory priority queue and worker coroutines
                   in this process: EnhancedPipelineManager
    QueueExecutor  (here)              RedisTaskQueue, with workers anywhere (and, when
                   handlers are given, a Worker in this process): DistributedPipelineManager

The stage flow (pipeline/flow.py) talks to an executor only: submit a subtask as a task
of its stage's type with its priority, await its outcome, cancel it, forget it once its
result is in the run's state.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

from utils.aio import cancellable
from utils.redis_queue import HandlerRegistry, RedisTaskQueue, TaskNotFound, TaskStateError, Worker

__all__ = ["QueueExecutor", "StageExecutor"]


class StageExecutor(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def submit(
        self, task_id: str, task_type: str, payload: dict[str, Any], priority: int
    ) -> None:
        """Queue one task; an id already submitted is left as it is (idempotent)."""

    async def outcome(self, task_id: str, timeout: float) -> tuple[Any, int]:
        """The task's result and how many attempts it took; raises TaskFailed,
        TaskCancelled, ResultTimeout or TaskNotFound, like wait_for_result."""
        ...

    async def cancel(self, task_id: str) -> None:
        """Cancel it if it has not finished (a no-op otherwise)."""

    def forget(self, task_ids: list[str]) -> None:
        """Its result is recorded elsewhere now: drop what the executor keeps of it."""


class QueueExecutor:
    """Subtasks through RedisTaskQueue; results awaited in Redis (no polling)."""

    def __init__(
        self,
        queue: RedisTaskQueue,
        *,
        handlers: HandlerRegistry | None = None,
        worker_id: str = "",
        concurrency: int = 4,
        shutdown_grace: float = 30.0,
    ) -> None:
        self.queue = queue
        self._handlers = handlers
        self._worker_options = {
            "worker_id": worker_id or None,
            "concurrency": concurrency,
            "shutdown_grace": shutdown_grace,
        }
        self._worker: Worker | None = None
        self._worker_task: asyncio.Task[Any] | None = None

    async def start(self) -> None:
        """Connect, and serve the handlers (when given) with a Worker in this process."""
        await self.queue.connect()
        if self._handlers is None or self._worker is not None:
            return
        self._worker = Worker(self.queue, self._handlers, **self._worker_options)  # type: ignore[arg-type]
        self._worker_task = asyncio.create_task(self._worker.run(), name="pipeline-worker")

    async def stop(self) -> None:
        if self._worker is not None and self._worker_task is not None:
            self._worker.request_stop()
            await asyncio.gather(self._worker_task, return_exceptions=True)
            self._worker = self._worker_task = None

    async def submit(
        self, task_id: str, task_type: str, payload: dict[str, Any], priority: int
    ) -> None:
        await self.queue.enqueue(task_id, task_type, payload, priority)

    async def outcome(self, task_id: str, timeout: float) -> tuple[Any, int]:
        # cancellable: stop() and cancel_run() must not wait out a swallowed cancel
        return await cancellable(self._wait_for(task_id, timeout))

    async def _wait_for(self, task_id: str, timeout: float) -> tuple[Any, int]:
        result = await self.queue.wait_for_result(task_id, timeout)
        task = await self.queue.get_task(task_id)
        return result, task.attempts if task is not None else 0

    async def cancel(self, task_id: str) -> None:
        with contextlib.suppress(TaskNotFound, TaskStateError):  # not sent yet, or ended
            await self.queue.cancel(task_id)

    def forget(self, task_ids: list[str]) -> None:
        return None  # finished tasks expire in Redis (task_ttl_seconds)
