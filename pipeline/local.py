"""LocalExecutor: EnhancedPipelineManager's in-memory priority queue and the worker
coroutines that run handlers on it, with the queue's retry rules and outcomes (a
StageExecutor, see executors.py).

Highest priority first, FIFO within a priority. A handler's exception retries it after
the RetryPolicy's delay (a timer, not a sleeping worker) up to `max_retries`; Retry and
PermanentFailure mean what they mean to a Worker. Nothing survives the process.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from utils.redis_queue import (
    LeaseLost,
    RedisTask,
    ResultTimeout,
    RetryPolicy,
    TaskCancelled,
    TaskFailed,
    TaskNotFound,
    TaskState,
)
from utils.redis_queue.handlers import HandlerRegistry, PermanentFailure, Retry, TaskContext
from utils.redis_queue.scripts import OutputEntry

if TYPE_CHECKING:
    from .spec import ModelLimits

__all__ = ["LocalExecutor", "OutputListener"]

OutputListener = Callable[[str, int, Sequence[OutputEntry]], None]
"""(task id, attempt, entries): what a task's handler emitted (ctx.emit, ctx.progress)."""

log = logging.getLogger("agentic.pipeline")


class LocalExecutor:
    def __init__(
        self,
        handlers: HandlerRegistry,
        *,
        workers: int = 4,
        max_retries: int = 3,
        retry_policy: RetryPolicy | None = None,
        on_output: OutputListener | None = None,
    ) -> None:
        self.handlers = handlers
        self._on_output = on_output
        self.workers = workers
        self.max_retries = max_retries
        self.retry_policy = retry_policy or RetryPolicy()
        self._ready: asyncio.PriorityQueue[tuple[int, int, str]] = asyncio.PriorityQueue()
        self._order = itertools.count()
        self._tasks: dict[str, RedisTask] = {}
        self._done: dict[str, asyncio.Future[Any]] = {}
        self._running: dict[str, asyncio.Task[Any]] = {}
        self._failed_tokens: dict[str, int] = {}  # task id -> tokens its failed attempts spent
        self._loops: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        if not self._loops:
            self._loops = [
                asyncio.create_task(self._work(f"local-{n}"), name=f"local-worker-{n}")
                for n in range(self.workers)
            ]

    async def stop(self) -> None:
        loops, self._loops = self._loops, []
        running = list(self._running.values())
        for task in [*loops, *running]:
            task.cancel()
        await asyncio.gather(*loops, *running, return_exceptions=True)

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
        """Queue a task; an id already known is left as it is (idempotent, like enqueue).
        Limits bind a fleet: one process running its own tasks ignores them."""
        if task_id in self._tasks:
            return
        self._tasks[task_id] = RedisTask(
            task_id=task_id,
            task_type=task_type,
            payload=payload,
            priority=priority,
            state=TaskState.PENDING,
            max_retries=self.max_retries,
            created_at=_now(),
        )
        self._done[task_id] = asyncio.get_running_loop().create_future()
        self._push(task_id)

    async def outcome(self, task_id: str, timeout: float) -> tuple[Any, int]:
        """The task's result and how many attempts it took; raises like
        RedisTaskQueue.wait_for_result."""
        done = self._done.get(task_id)
        if done is None:
            raise TaskNotFound(task_id)
        try:
            result = await asyncio.wait_for(asyncio.shield(done), timeout)
        except TimeoutError:
            state = self._tasks[task_id].state
            raise ResultTimeout(f"task {task_id!r} is still {state} after {timeout} s") from None
        return result, self._tasks[task_id].attempts

    async def emit_output(
        self, task_id: str, lease_token: int, entries: Sequence[OutputEntry]
    ) -> str:
        """ctx.emit()'s sink (handlers.OutputSink): the entries go to the on_output
        listener while `lease_token` is the task's running attempt; an attempt that was
        cancelled or timed out (a retry runs now) gets LeaseLost, as from Redis."""
        task = self._tasks.get(task_id)
        if task is None or task.state != TaskState.PROCESSING or task.attempts != lease_token:
            state = "gone" if task is None else str(task.state)
            raise LeaseLost(task_id, state, f"attempt {lease_token} of {task_id!r} has ended")
        if self._on_output is not None:
            self._on_output(task_id, lease_token, entries)
        return f"{lease_token}-{len(entries)}"

    async def apply_limits(self, limits: ModelLimits) -> None:
        return None  # one process, its own concurrency: nothing fleet-wide to limit

    async def cancel(self, task_id: str) -> None:
        task = self._tasks.get(task_id)
        if task is None or TaskState(task.state).is_final:
            return
        running = self._running.get(task_id)
        if running is not None:
            running.cancel()  # _run settles it as cancelled
        else:
            self._finish(task, TaskState.CANCELLED, error=TaskCancelled(task_id))

    def forget(self, task_ids: list[str]) -> None:
        """Drop finished tasks (a long-lived manager would otherwise keep every one)."""
        for task_id in task_ids:
            task = self._tasks.get(task_id)
            if task is not None and TaskState(task.state).is_final:
                del self._tasks[task_id]
                del self._done[task_id]
                self._failed_tokens.pop(task_id, None)

    def _push(self, task_id: str) -> None:
        priority = self._tasks[task_id].priority
        self._ready.put_nowait((-priority, next(self._order), task_id))

    async def _work(self, worker_id: str) -> None:
        while True:
            _, _, task_id = await self._ready.get()
            task = self._tasks.get(task_id)
            if task is None or task.state != TaskState.PENDING:
                continue  # cancelled (or forgotten) while it waited
            run = asyncio.create_task(self._run(task, worker_id))
            self._running[task_id] = run
            try:
                await asyncio.shield(run)
            finally:
                self._running.pop(task_id, None)

    async def _run(self, task: RedisTask, worker_id: str) -> None:
        task.state = TaskState.PROCESSING
        task.attempts += 1
        task.worker_id = worker_id
        task.started_at = _now()
        spec = self.handlers.get(task.task_type)
        if spec is None:
            reason = f"no handler for task type {task.task_type!r}"
            failed = TaskFailed(task.task_id, "failed", reason, task.attempts)
            self._finish(task, TaskState.FAILED, error=failed)
            return
        output = self if self._on_output is not None else None
        ctx = TaskContext(task, worker_id, "local", task.attempts, output=output)
        try:
            call = spec.func(ctx) if spec.is_async else asyncio.to_thread(spec.func, ctx)
            result = await asyncio.wait_for(call, spec.timeout)
        except asyncio.CancelledError:
            self._finish(
                task, TaskState.CANCELLED, error=TaskCancelled(task.task_id, task.attempts)
            )
        except PermanentFailure as exc:
            self._count_failed_tokens(task.task_id, ctx)
            self._give_up(task, f"PermanentFailure: {exc}")
        except Exception as exc:
            self._count_failed_tokens(task.task_id, ctx)
            reason = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, TimeoutError):
                reason = f"timed out after {spec.timeout} s"
            if task.retry_count >= task.max_retries:
                self._give_up(task, reason)
                return
            task.retry_count += 1
            task.state = TaskState.DELAYED
            task.error = reason
            delay = exc.delay if isinstance(exc, Retry) and exc.delay is not None else None
            if delay is None:
                delay = self.retry_policy.delay(task.retry_count)
            log.info(
                "task %s failed (%s); retry %d in %.1f s",
                task.task_id,
                reason,
                task.retry_count,
                delay,
            )
            asyncio.get_running_loop().call_later(delay, self._retry, task.task_id)
        else:
            task.result = result
            self._finish(task, TaskState.COMPLETED, result=result)

    def _count_failed_tokens(self, task_id: str, ctx: TaskContext) -> None:
        if ctx.tokens_used:
            self._failed_tokens[task_id] = self._failed_tokens.get(task_id, 0) + ctx.tokens_used

    async def failed_attempt_tokens(self, task_id: str) -> int:
        return self._failed_tokens.get(task_id, 0)

    def _retry(self, task_id: str) -> None:
        task = self._tasks[task_id]
        if task.state == TaskState.DELAYED:
            task.state = TaskState.PENDING
            self._push(task_id)

    def _give_up(self, task: RedisTask, reason: str) -> None:
        error = TaskFailed(task.task_id, TaskState.DEAD_LETTER, reason, task.attempts)
        self._finish(task, TaskState.DEAD_LETTER, error=error)

    def _finish(
        self,
        task: RedisTask,
        state: TaskState,
        *,
        result: Any = None,
        error: Exception | None = None,
    ) -> None:
        task.state = state
        task.completed_at = _now()
        if error is not None:
            task.error = str(error)
        done = self._done[task.task_id]
        if not done.done():
            if error is None:
                done.set_result(result)
            else:
                done.set_exception(error)
                done.exception()  # retrieved: nobody may be waiting on it


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")
