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
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from utils.aio import cancellable
from utils.redis_queue import HandlerRegistry, RedisTaskQueue, TaskNotFound, TaskStateError, Worker

if TYPE_CHECKING:
    from .spec import ModelLimits

__all__ = ["QueueExecutor", "StageExecutor"]


class StageExecutor(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def submit(
        self,
        task_id: str,
        task_type: str,
        payload: dict[str, Any],
        priority: int,
        *,
        limits: Sequence[str] = (),
        cost_tokens: int | None = None,
    ) -> None:
        """Queue one task; an id already submitted is left as it is (idempotent). `limits`
        and `cost_tokens` bind it to the queue's fleet-wide limits."""

    async def apply_limits(self, limits: ModelLimits) -> None:
        """Make the provider's limits the queue's (an in-process executor has no fleet)."""

    async def outcome(self, task_id: str, timeout: float) -> tuple[Any, int]:
        """The task's result and how many attempts it took; raises TaskFailed,
        TaskCancelled, ResultTimeout or TaskNotFound, like wait_for_result."""
        ...

    async def failed_attempt_tokens(self, task_id: str) -> int:
        """The tokens its failed attempts reported spending (TaskContext.report_tokens):
        part of the run's totals and budget, though no result carries them."""
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
        self._applied: dict[str, ModelLimits] = {}

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
        self,
        task_id: str,
        task_type: str,
        payload: dict[str, Any],
        priority: int,
        *,
        limits: Sequence[str] = (),
        cost_tokens: int | None = None,
    ) -> None:
        await self.queue.enqueue(
            task_id,
            task_type,
            payload,
            priority,
            limits=limits or None,
            cost_tokens=cost_tokens if limits else None,
        )

    async def apply_limits(self, limits: ModelLimits) -> None:
        if self._applied.get(limits.key) == limits:
            return
        if limits.rpm is not None:
            await self.queue.set_limit(limits.key, rate=limits.rpm, per=60)
        if limits.tpm is not None:
            await self.queue.set_limit(limits.key, tokens=limits.tpm, per=60)
        if limits.concurrency is not None:
            await self.queue.set_limit(limits.key, concurrency=limits.concurrency)
        self._applied[limits.key] = limits

    async def outcome(self, task_id: str, timeout: float) -> tuple[Any, int]:
        # cancellable: stop() and cancel_run() must not wait out a swallowed cancel
        return await cancellable(self._wait_for(task_id, timeout))

    async def _wait_for(self, task_id: str, timeout: float) -> tuple[Any, int]:
        result = await self.queue.wait_for_result(task_id, timeout)
        task = await self.queue.get_task(task_id)
        return result, task.attempts if task is not None else 0

    async def failed_attempt_tokens(self, task_id: str) -> int:
        try:
            return sum(attempt.tokens for attempt in await self.queue.get_attempts(task_id))
        except TaskNotFound:  # expired or deleted: its tokens are beyond reach
            return 0

    async def cancel(self, task_id: str) -> None:
        with contextlib.suppress(TaskNotFound, TaskStateError):  # not sent yet, or ended
            await self.queue.cancel(task_id)

    def forget(self, task_ids: list[str]) -> None:
        return None  # finished tasks expire in Redis (task_ttl_seconds)
