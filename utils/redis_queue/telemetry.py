"""The engine's telemetry hook: what the queue and the worker report, and the default
sink that does nothing (so nothing is paid until a process installs utils.metrics)."""

from __future__ import annotations

from typing import Protocol

__all__ = ["NULL_METRICS", "MetricsSink"]


class MetricsSink(Protocol):
    """Called at the engine's two choke points: enqueue, and a worker acknowledging."""

    def task_enqueued(self, queue: str, task_type: str, count: int = 1) -> None: ...

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
