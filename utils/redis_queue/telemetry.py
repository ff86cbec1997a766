"""The engine's one telemetry hook point, and the defaults that do nothing.

Every metric and span the queue and the worker emit goes through a queue's `Telemetry`
(`queue.telemetry`): enqueue, a handler run, settle, a finished task, worker time. It
forwards to the queue's MetricsSink (`RedisTaskQueue(metrics=...)`, utils.metrics) and to
the process's QueueTracer (`tracer`, utils.tracing), and costs one `is None` check per
hook while tracing is off.

Nothing here turns telemetry on: the application (or the `agentic` CLI) calls
utils.tracing.setup_tracing() once, which installs the tracer; this package never imports
utils.tracing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from .errors import QueueError
    from .models import RedisTask, Settlement, TaskState
    from .new_task import NewTask

__all__ = [
    "NULL_METRICS",
    "MetricsSink",
    "QueueIdentity",
    "QueueTracer",
    "Telemetry",
    "install_tracer",
    "outcome_label",
    "wait_seconds",
]

T = TypeVar("T")


class QueueIdentity(Protocol):
    """What a span needs to know of the queue it describes."""

    @property
    def queue_name(self) -> str: ...

    @property
    def redis_url(self) -> str: ...


class MetricsSink(Protocol):
    """Receives the engine's metrics (utils.metrics.QueueMetrics)."""

    def task_enqueued(self, queue: str, task_type: str, count: int = 1) -> None: ...

    def worker_time(self, queue: str, busy_seconds: float, slot_seconds: float) -> None:
        """Since the last call: slot-seconds spent running handlers, and slot-seconds
        available (concurrency x wall time); their ratio is the worker's utilisation."""

    def task_finished(
        self,
        queue: str,
        task_type: str,
        outcome: str,
        run_seconds: float | None,
        wait_seconds: float | None,
    ) -> None: ...

    def limit_held_back(self, queue: str, limit: str, count: int) -> None:
        """A claim left `count` ready tasks pending because `limit` admitted no more."""


class _NullMetrics:
    def task_enqueued(self, queue: str, task_type: str, count: int = 1) -> None:
        return None

    def worker_time(self, queue: str, busy_seconds: float, slot_seconds: float) -> None:
        return None

    def task_finished(
        self,
        queue: str,
        task_type: str,
        outcome: str,
        run_seconds: float | None,
        wait_seconds: float | None,
    ) -> None:
        return None

    def limit_held_back(self, queue: str, limit: str, count: int) -> None:
        return None


NULL_METRICS: MetricsSink = _NullMetrics()


class QueueTracer(Protocol):
    """Wraps the engine's choke points in spans (utils.tracing.QueueTracing)."""

    async def send(
        self,
        queue: QueueIdentity,
        tasks: list[NewTask],
        batch: bool,
        enqueue: Callable[[list[NewTask]], Awaitable[T]],
    ) -> T:
        """enqueue(tasks), each task given its creation context in meta."""
        ...

    def sending(
        self, queue: QueueIdentity, tasks: list[NewTask], batch: bool
    ) -> AbstractContextManager[list[NewTask]]:
        """send()'s span for a synchronous enqueue (SyncRedisTaskQueue): yields the tasks
        to send."""
        ...

    async def process(
        self, queue: QueueIdentity, task: RedisTask, worker_id: str, run: Callable[[], Awaitable[T]]
    ) -> T:
        """run() (one handler run) with its span current."""
        ...

    async def settle(
        self,
        queue: QueueIdentity,
        settlements: list[Settlement],
        run: Callable[[], Awaitable[list[TaskState | QueueError]]],
    ) -> list[TaskState | QueueError]:
        """run() (a settle_many call), recording each task's outcome."""
        ...


tracer: QueueTracer | None = None  # None: tracing is off


def install_tracer(new: QueueTracer | None) -> None:
    """Turn tracing on with `new`, or off with None (for utils.tracing)."""
    global tracer
    tracer = new


class Telemetry:
    """One queue's hook point: the engine calls these, nothing else."""

    __slots__ = ("metrics", "queue")

    def __init__(self, queue: QueueIdentity, metrics: MetricsSink | None = None) -> None:
        self.queue = queue
        self.metrics = metrics or NULL_METRICS

    async def send(
        self,
        tasks: list[NewTask],
        batch: bool,
        enqueue: Callable[[list[NewTask]], Awaitable[T]],
    ) -> T:
        """enqueue(tasks) inside the send span, when tracing is on."""
        current = tracer
        if current is None or not tasks:
            return await enqueue(tasks)
        return await current.send(self.queue, tasks, batch, enqueue)

    def send_sync(
        self, tasks: list[NewTask], batch: bool, enqueue: Callable[[list[NewTask]], T]
    ) -> T:
        """send() for synchronous code."""
        current = tracer
        if current is None or not tasks:
            return enqueue(tasks)
        with current.sending(self.queue, tasks, batch) as sent:
            return enqueue(sent)

    def enqueued(self, task_type: str, count: int = 1) -> None:
        self.metrics.task_enqueued(self.queue.queue_name, task_type, count)

    async def process(self, task: RedisTask, worker_id: str, run: Callable[[], Awaitable[T]]) -> T:
        current = tracer
        if current is None:
            return await run()
        return await current.process(self.queue, task, worker_id, run)

    async def settle(
        self,
        settlements: list[Settlement],
        run: Callable[[], Awaitable[list[TaskState | QueueError]]],
    ) -> list[TaskState | QueueError]:
        current = tracer
        if current is None:
            return await run()
        return await current.settle(self.queue, settlements, run)

    def finished(
        self, task_type: str, outcome: str, run_seconds: float | None, wait_seconds: float | None
    ) -> None:
        self.metrics.task_finished(
            self.queue.queue_name, task_type, outcome, run_seconds, wait_seconds
        )

    def worker_time(self, busy_seconds: float, slot_seconds: float) -> None:
        self.metrics.worker_time(self.queue.queue_name, busy_seconds, slot_seconds)

    def held_back(self, counts: dict[str, int]) -> None:
        for limit, count in counts.items():
            self.metrics.limit_held_back(self.queue.queue_name, limit, count)


_OUTCOME_LABELS = {
    "completed": "completed",
    "pending": "retried",
    "delayed": "retried",
    "dead_letter": "dead_lettered",
    "failed": "failed",
    "cancelled": "cancelled",
}


def outcome_label(state: TaskState) -> str:
    """The agentic_tasks_finished_total outcome of an attempt that left the task in `state`."""
    return _OUTCOME_LABELS[str(state)]


def wait_seconds(task: RedisTask) -> float | None:
    """Enqueue to start of this attempt, from the task's server timestamps."""
    if not task.started_at or not task.created_at:
        return None
    started = datetime.fromisoformat(task.started_at)
    return max(0.0, (started - datetime.fromisoformat(task.created_at)).total_seconds())
