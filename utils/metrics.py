"""Every Prometheus metric of agentic-pipeline, in one place.

- `QueueMetrics`: counters and histograms that the engine updates at two choke points
  (enqueue, and a worker acknowledging a task), through the MetricsSink hook of
  utils/redis_queue/telemetry.py; until a process installs one, the hook does nothing.
- `RedisQueueCollector` (utils/queue_collector.py): gauges read from Redis at scrape time
  (depth per state and priority, DLQ depth, age of the oldest pending task, live workers,
  tasks in flight, each limit's capacity and use), so they never drift; a scrape never
  raises, and counts its own errors.
- `serve_metrics(port)`: the /metrics HTTP endpoint.

Names follow Prometheus conventions: the `agentic_` prefix, base units (seconds), `_total`
for counters, and labels only from queue / task_type / priority / outcome / state.
"""

from __future__ import annotations

import os
import threading
import weakref
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector

from utils.queue_collector import RedisQueueCollector

__all__ = [
    "DURATION_BUCKETS",
    "OUTCOMES",
    "PipelineMetrics",
    "QueueMetrics",
    "RedisQueueCollector",
    "aggregating_registry",
    "multiprocess_dir",
    "serve_metrics",
]

# Agent subtasks run for seconds to many minutes: buckets reach an hour.
DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip
OUTCOMES = (
    *("completed", "failed", "retried", "dead_lettered", "cancelled", "lease_lost"),
    "rate_limited",
)


class QueueMetrics:
    """Counters and histograms of enqueued and finished tasks, in `registry` (a
    MetricsSink: pass it as RedisTaskQueue(metrics=...))."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.enqueued = Counter(
            "agentic_tasks_enqueued",
            "Tasks accepted by enqueue (duplicates of an existing id are not counted).",
            ["queue", "task_type"],
            registry=self.registry,
        )
        self.finished = Counter(
            "agentic_tasks_finished",
            "Task attempts that ended, by outcome: completed, failed (final, DLQ off), "
            "retried, dead_lettered, cancelled, lease_lost (the result was refused), "
            "rate_limited (handed back by a RateLimited handler, no attempt counted).",
            ["queue", "task_type", "outcome"],
            registry=self.registry,
        )
        self.run_seconds = Histogram(
            "agentic_task_run_seconds",
            "Time a handler ran, per attempt.",
            ["queue", "task_type"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.wait_seconds = Histogram(
            "agentic_task_wait_seconds",
            "Time from enqueue to the start of an attempt (server clock).",
            ["queue", "task_type"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.busy_seconds = Counter(
            "agentic_worker_busy_seconds",
            "Slot-seconds workers spent running handlers.",
            ["queue"],
            registry=self.registry,
        )
        self.slot_seconds = Counter(
            "agentic_worker_slot_seconds",
            "Slot-seconds workers had (concurrency x wall time); busy / slot = utilisation.",
            ["queue"],
            registry=self.registry,
        )
        self.limit_held_back_total = Counter(
            "agentic_limit_deferred",
            "Ready tasks a claim left pending because a limit admitted no more (labels: "
            "the configured limit keys only).",
            ["queue", "limit"],
            registry=self.registry,
        )
        # A gauge rather than an Info metric, which multiprocess mode cannot aggregate.
        Gauge(
            "agentic_build_info",
            "agentic-pipeline build; the value is always 1.",
            ["version"],
            registry=self.registry,
            multiprocess_mode="max",
        ).labels(_version()).set(1)

    def task_enqueued(self, queue: str, task_type: str, count: int = 1) -> None:
        self.enqueued.labels(queue, task_type).inc(count)

    def worker_time(self, queue: str, busy_seconds: float, slot_seconds: float) -> None:
        self.busy_seconds.labels(queue).inc(busy_seconds)
        self.slot_seconds.labels(queue).inc(slot_seconds)

    def limit_held_back(self, queue: str, limit: str, count: int) -> None:
        self.limit_held_back_total.labels(queue, limit).inc(count)

    def task_finished(
        self,
        queue: str,
        task_type: str,
        outcome: str,
        run_seconds: float | None,
        wait_seconds: float | None,
    ) -> None:
        self.finished.labels(queue, task_type, outcome).inc()
        if run_seconds is not None:
            self.run_seconds.labels(queue, task_type).observe(run_seconds)
        if wait_seconds is not None:
            self.wait_seconds.labels(queue, task_type).observe(wait_seconds)


class PipelineMetrics:
    """Pipeline runs by outcome and stage durations, in `registry`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.runs = Counter(
            "agentic_pipeline_runs",
            "Pipeline runs that ended, by outcome: succeeded, failed, cancelled.",
            ["outcome"],
            registry=self.registry,
        )
        self.active = Gauge(
            "agentic_pipeline_runs_active",
            "Pipeline runs this manager is driving now.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.stage_seconds = Histogram(
            "agentic_pipeline_stage_seconds",
            "Time one pipeline stage took (a QA round, the parallel dev subtasks, ...).",
            ["task_type"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )

        # Per run they are in the run's result; here, summed by the stage that used them.
        self.tokens = Counter(
            "agentic_pipeline_tokens",
            "Model tokens (prompt + completion) of the subtask results a manager collected.",
            ["task_type"],
            registry=self.registry,
        )
        self.cost_dollars = Counter(
            "agentic_pipeline_cost_dollars",
            "Model cost in USD of the subtask results a manager collected.",
            ["task_type"],
            registry=self.registry,
        )

        self.budget_exceeded = Counter(
            "agentic_pipeline_budget_exceeded",
            "Pipeline runs ended failed because they went past their budget.",
            registry=self.registry,
        )

    def run_started(self) -> None:
        self.active.inc()

    def subtask_used(self, stage: str, tokens: int, cost_dollars: float) -> None:
        if tokens:
            self.tokens.labels(stage).inc(tokens)
        if cost_dollars:
            self.cost_dollars.labels(stage).inc(cost_dollars)

    def run_ended(self, outcome: str) -> None:
        self.active.dec()
        self.runs.labels(outcome).inc()

    def stage_finished(self, stage: str, seconds: float) -> None:
        self.stage_seconds.labels(stage).observe(seconds)


def _version() -> str:
    try:
        return version("agentic-pipeline")
    except PackageNotFoundError:
        return "unknown"


def serve_metrics(
    port: int, registry: CollectorRegistry, addr: str = "0.0.0.0"
) -> tuple[Any, threading.Thread]:
    """Serve `registry` on http://addr:port/metrics from a daemon thread; returns the
    server (read .server_port when port is 0) and its thread."""
    server, thread = start_http_server(port, addr=addr, registry=registry)
    return server, thread


def multiprocess_dir() -> str | None:
    """Set (by the supervisor, for its children) when several processes share metrics."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def aggregating_registry(path: str) -> CollectorRegistry:
    """A registry that reads the per-process files that workers write into `path`
    (prometheus_client multiprocess mode), for the one process that serves /metrics."""
    registry = CollectorRegistry(support_collectors_without_names=True)
    MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return registry


# --- Model usage of the agents ------------------------------------------------------------
# Tokens and dollars the agents' model calls cost, by task type. Agents call
# record_model_usage() after each call; it does nothing until a process installs the
# counters on its registry with install_model_metrics(registry) (the worker: on the
# registry of its QueueMetrics, so one /metrics shows both).

__all__ += ["ModelMetrics", "install_model_metrics", "record_model_usage"]


class ModelMetrics:
    """Prompt and completion tokens and cost in USD of model calls, in `registry`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.prompt_tokens = Counter(
            "agentic_model_prompt_tokens",
            "Prompt tokens sent to the model by agents.",
            ["task_type"],
            registry=self.registry,
        )
        self.completion_tokens = Counter(
            "agentic_model_completion_tokens",
            "Completion tokens the model returned to agents.",
            ["task_type"],
            registry=self.registry,
        )
        self.cost_dollars = Counter(
            "agentic_model_cost_dollars",
            "What the agents' model calls cost, in USD, at the configured prices.",
            ["task_type"],
            registry=self.registry,
        )

    def model_used(
        self, task_type: str, prompt_tokens: int, completion_tokens: int, cost_usd: float
    ) -> None:
        self.prompt_tokens.labels(task_type).inc(prompt_tokens)
        self.completion_tokens.labels(task_type).inc(completion_tokens)
        self.cost_dollars.labels(task_type).inc(cost_usd)


_model_metrics: ModelMetrics | None = None
_model_metrics_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, ModelMetrics] = (
    weakref.WeakKeyDictionary()
)


def install_model_metrics(registry: CollectorRegistry | None) -> ModelMetrics | None:
    """Count model usage in `registry` from now on, or stop counting with None. Installing
    on a registry again reuses its counters (a registry refuses duplicate names)."""
    global _model_metrics
    if registry is None:
        _model_metrics = None
        return None
    metrics = _model_metrics_by_registry.get(registry)
    if metrics is None:
        metrics = _model_metrics_by_registry[registry] = ModelMetrics(registry)
    _model_metrics = metrics
    return metrics


def record_model_usage(
    task_type: str, prompt_tokens: int, completion_tokens: int, cost_usd: float
) -> None:
    """Count one model call of a `task_type` agent (one check while metrics are off)."""
    metrics = _model_metrics
    if metrics is not None:
        metrics.model_used(task_type, prompt_tokens, completion_tokens, cost_usd)
