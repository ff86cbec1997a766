"""--tracing and --metrics: the queue's telemetry on during a run, to measure what each
costs (A, S and B against the same run's raw baselines, as without them).

Tracing is a real OpenTelemetry SDK provider with a batch span processor, as an
application would run it, whose exporter drops the spans: what is measured is making
the spans (and the processor's thread), not shipping them. Metrics are the queue's
Prometheus counters (utils.metrics.QueueMetrics) in a registry of their own.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry

from utils.metrics import QueueMetrics
from utils.redis_queue.telemetry import MetricsSink
from utils.tracing import setup_tracing, shutdown_tracing

__all__ = ["bench_metrics", "bench_tracing"]


class _Dropped(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


@contextmanager
def bench_tracing(on: bool) -> Iterator[None]:
    """The engine's tracing on for the block (when `on`), then off again."""
    if not on:
        yield
        return
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_Dropped()))
    setup_tracing(tracer_provider=provider)
    try:
        yield
    finally:
        shutdown_tracing()
        provider.shutdown()


def bench_metrics(on: bool) -> MetricsSink | None:
    return QueueMetrics(CollectorRegistry()) if on else None
