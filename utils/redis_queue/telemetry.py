"""The engine's telemetry hooks: what the queue and the worker report, and the defaults
that do nothing (so nothing is paid until a process installs utils.metrics or
utils.tracing).

Metrics: a MetricsSink per queue (`RedisTaskQueue(metrics=...)`).
Tracing: one QueueTracer per process in `tracer`, None while tracing is off; the engine
checks it at its three choke points (enqueue, a handler run, settle) before doing any
work. utils.tracing.setup_tracing() installs one; so does the first connect() when
OTEL_TRACES_EXPORTER asks for an exporter.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from .errors import QueueError
    from .models import RedisTask, Settlement, TaskState
    from .new_task import NewTask
    from .queue import QueueClient

__all__ = [
    "NULL_METRICS",
    "MetricsSink",
    "QueueTracer",
    "install_tracer",
    "tracing_from_environment",
]

T = TypeVar("T")


class MetricsSink(Protocol):
    """Called at the engine's two choke points: enqueue, and a worker acknowledging."""

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


NULL_METRICS: MetricsSink = _NullMetrics()


class QueueTracer(Protocol):
    """Wraps the engine's choke points in spans (utils.tracing.QueueTracing)."""

    async def send(
        self,
        queue: QueueClient,
        specs: list[NewTask],
        batch: bool,
        enqueue: Callable[[list[NewTask]], Awaitable[T]],
    ) -> T:
        """enqueue(specs), each spec given its creation context in meta."""
        ...

    async def process(
        self, queue: QueueClient, task: RedisTask, worker_id: str, run: Callable[[], Awaitable[T]]
    ) -> T:
        """run() (one handler run) with its span current."""
        ...

    async def settle(
        self,
        queue: QueueClient,
        settlements: list[Settlement],
        run: Callable[[], Awaitable[list[TaskState | QueueError]]],
    ) -> list[TaskState | QueueError]:
        """run() (a settle_many call), recording each task's outcome."""
        ...


tracer: QueueTracer | None = None  # None: tracing is off, and costs one check per hook
_environment_checked = False


def install_tracer(new: QueueTracer | None) -> None:
    """Turn tracing on with `new`, or off with None (for utils.tracing)."""
    global tracer, _environment_checked
    tracer = new
    _environment_checked = True  # a choice made in code wins over the environment


def tracing_from_environment() -> None:
    """Once per process: set tracing up from the OTEL_* environment when
    OTEL_TRACES_EXPORTER names an exporter and nothing installed a tracer before."""
    global _environment_checked
    if _environment_checked:
        return
    _environment_checked = True
    if os.environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower() in ("", "none"):
        return
    try:
        from utils.tracing import setup_tracing  # loaded only when asked for

        setup_tracing()
    except Exception as exc:  # e.g. an unwritable AGENTIC_TRACES_FILE: run, untraced
        logging.getLogger("agentic.tracing").warning("tracing is off: %s", exc)
