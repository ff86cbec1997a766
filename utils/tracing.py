"""Every OpenTelemetry span of agentic-pipeline, in one place.

- `setup_tracing()`: tracing is off unless OTEL_TRACES_EXPORTER names an exporter
  (`console`, `otlp`; `none` is off) or the caller passes a TracerProvider. It installs
  `QueueTracing` as the engine's tracing hook (utils/redis_queue/telemetry.py); while none
  is installed the engine pays one `is None` check per hook and this module is not even
  imported. Nothing calls it implicitly: the `agentic` CLI calls it at start-up when
  OTEL_TRACES_EXPORTER is set, and an application that uses the library calls it once.
- `QueueTracing`: the spans of the engine's three choke points, after the OpenTelemetry
  messaging conventions (messaging.system "agentic"):

      send <queue>     PRODUCER  enqueue(); its context is the task's creation context
      create <queue>   PRODUCER  enqueue_many(): one per task, its creation context
      send <queue>     CLIENT    enqueue_many(): the script calls, linked to the creates
      process <queue>  CONSUMER  one handler run: child of the creation context, and
                                 linked to it; a retry is another process span
      settle <queue>   CLIENT    settle_many(): one per task, in the task's trace (a child
                                 of its creation context), with its new state as an event

  With setup_tracing(create_spans=False) enqueue_many makes no create spans; its send span
  is then a PRODUCER span whose context every task of the call gets. The creation context
  travels in the task's meta as W3C `traceparent` / `tracestate` (`inject()` /
  `extract()`); a traceparent the caller put in meta is kept (and the send span links to it).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from typing import IO, TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode

from utils.redis_queue import telemetry
from utils.redis_queue.models import TaskState
from utils.redis_queue.telemetry import QueueIdentity

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

    from utils.redis_queue.errors import QueueError
    from utils.redis_queue.models import RedisTask, Settlement
    from utils.redis_queue.new_task import NewTask

__all__ = [
    "ATTEMPT",
    "BATCH_MESSAGE_COUNT",
    "BUDGET_EXCEEDED_EVENT",
    "CLIENT_ID",
    "CREATE",
    "DEFAULT_SERVICE_NAME",
    "DESTINATION_NAME",
    "ERROR_TYPE",
    "INSTRUMENTATION",
    "MESSAGE_ID",
    "OPERATION_NAME",
    "OPERATION_TYPE",
    "PIPELINE_RUN",
    "PIPELINE_STAGE",
    "PRIORITY",
    "PROCESS",
    "REASON",
    "RUN_COST_USD",
    "RUN_ID",
    "RUN_TOKENS",
    "SEND",
    "SERVER_ADDRESS",
    "SERVER_PORT",
    "SETTLE",
    "SETTLED_EVENT",
    "STAGE",
    "SYSTEM",
    "SYSTEM_NAME",
    "TASK_STATE",
    "TASK_TYPE",
    "TRACES_FILE_ENV",
    "QueueTracing",
    "extract",
    "inject",
    "pipeline_span",
    "setup_tracing",
    "shutdown_tracing",
    "span_name",
]

log = logging.getLogger("agentic.tracing")
T = TypeVar("T")

INSTRUMENTATION = "agentic-pipeline"
SYSTEM_NAME = "agentic"  # no well-known messaging.system fits: a custom value
DEFAULT_SERVICE_NAME = "agentic-pipeline"
# With OTEL_TRACES_EXPORTER=console, write spans to this file (a JSON object a line)
# instead of stdout.
TRACES_FILE_ENV = "AGENTIC_TRACES_FILE"

# Operations: each is both messaging.operation.type and .name; spans are "<op> <queue>".
SEND = "send"
CREATE = "create"
PROCESS = "process"
SETTLE = "settle"

# Attribute keys (semantic conventions, then this system's own under messaging.agentic).
SYSTEM = "messaging.system"
DESTINATION_NAME = "messaging.destination.name"
OPERATION_TYPE = "messaging.operation.type"
OPERATION_NAME = "messaging.operation.name"
MESSAGE_ID = "messaging.message.id"
BATCH_MESSAGE_COUNT = "messaging.batch.message_count"
CLIENT_ID = "messaging.client.id"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"
TASK_TYPE = "messaging.agentic.task_type"
PRIORITY = "messaging.agentic.priority"  # 0 (LOW) to 3 (CRITICAL)
ATTEMPT = "messaging.agentic.attempt"  # 1 for the first run
TASK_STATE = "messaging.agentic.task_state"  # on settle events: the task's new state

SETTLED_EVENT = "settled"  # one per task on a settle span

# Pipeline spans (pipeline/): "pipeline.run <name>" is a run's root, "pipeline.stage <stage>"
# its children; the subtasks' send spans are children of the stage span.
PIPELINE_RUN = "pipeline.run"
PIPELINE_STAGE = "pipeline.stage"
RUN_ID = "agentic.pipeline.run_id"
STAGE = "agentic.pipeline.stage"
RUN_TOKENS = "agentic.pipeline.tokens"  # on a run's span when it ends: what it used
RUN_COST_USD = "agentic.pipeline.cost_usd"
REASON = "agentic.pipeline.reason"
BUDGET_EXCEEDED_EVENT = "budget exceeded"  # on a run's span, with REASON

_owned: TracerProvider | None = None  # the provider setup_tracing built (it shuts it down)
_traces_file: IO[str] | None = None


def span_name(operation: str, queue: str) -> str:
    return f"{operation} {queue}"


def inject(context: Context | None = None) -> dict[str, str]:
    """The W3C trace context (traceparent, tracestate; baggage if any) of `context`
    (default: the current one), as a task's meta carries it."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=context)
    return carrier


def extract(meta: Mapping[str, str]) -> Context:
    """The context carried in a task's meta (an empty Context when there is none)."""
    return propagate.extract(meta)


@contextmanager
def pipeline_span(
    operation: str,
    target: str,
    *,
    parent: Mapping[str, str] | None = None,
    attributes: Mapping[str, str | int] | None = None,
) -> Iterator[trace.Span]:
    """A span of the pipeline (PIPELINE_RUN or PIPELINE_STAGE), current inside the block.
    `parent`: a stored W3C context to continue (a resumed run keeps its trace). It goes
    where the engine's spans go; with tracing off it is a no-op span."""
    hook = telemetry.tracer
    tracer = hook.tracer if isinstance(hook, QueueTracing) else trace.get_tracer(INSTRUMENTATION)
    with tracer.start_as_current_span(
        f"{operation} {target}",
        context=extract(parent) if parent else None,
        attributes=dict(attributes or {}),
    ) as span:
        yield span


def setup_tracing(
    service_name: str | None = None,
    *,
    tracer_provider: trace.TracerProvider | None = None,
    create_spans: bool = True,
) -> bool:
    """Trace the queue engine of this process; returns whether tracing is on.

    With `tracer_provider`, spans go there (nothing global changes). Otherwise the
    standard environment decides: OTEL_TRACES_EXPORTER (`console`, `otlp` over
    HTTP/protobuf, comma-separated; unset or `none`: off), OTEL_SDK_DISABLED, and what
    the SDK reads itself (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER,
    OTEL_EXPORTER_OTLP_*). A provider the application already made global is used as it
    is; else one is built (service.name: `service_name`, OTEL_SERVICE_NAME or
    "agentic-pipeline") and made global, so handlers' own spans join the traces.

    `create_spans=False` drops enqueue_many's create span per task (about 25 us each): its
    send span then is every task's creation context."""
    provider = tracer_provider
    if provider is None:
        provider = _provider_from_environment(service_name)
    if provider is None:
        telemetry.install_tracer(None)
        return False
    tracer = provider.get_tracer(INSTRUMENTATION, _version())
    telemetry.install_tracer(QueueTracing(tracer, create_spans=create_spans))
    return True


def shutdown_tracing() -> None:
    """Turn tracing off; flush and shut down the provider setup_tracing() built."""
    global _owned, _traces_file
    telemetry.install_tracer(None)
    provider, _owned = _owned, None
    if provider is not None:
        provider.shutdown()
    if _traces_file is not None:
        _traces_file.close()
        _traces_file = None


class QueueTracing:
    """The engine's spans (a telemetry.QueueTracer). Exceptions are recorded on the span
    with status ERROR and `error.type` (the exception's class), then re-raised."""

    def __init__(self, tracer: trace.Tracer, *, create_spans: bool = True) -> None:
        self._tracer = tracer
        self._create_spans = create_spans

    @property
    def tracer(self) -> trace.Tracer:
        return self._tracer

    async def send(
        self,
        queue: QueueIdentity,
        tasks: list[NewTask],
        batch: bool,
        enqueue: Callable[[list[NewTask]], Awaitable[T]],
    ) -> T:
        with self.sending(queue, tasks, batch) as sent:
            return await enqueue(sent)

    @contextmanager
    def sending(
        self, queue: QueueIdentity, tasks: list[NewTask], batch: bool
    ) -> Iterator[list[NewTask]]:
        """The send span around an enqueue (async or sync): yields the tasks, each with
        its creation context in meta; an exception is recorded on the span."""
        common = _queue_attributes(queue.queue_name, queue.redis_url)
        creates = batch and self._create_spans
        links: list[Link] = []
        traced: list[NewTask | None] = []  # None: gets the send span's context
        for task in tasks:
            given = _creation_context(task.meta)
            if given is not None:  # the caller's creation context is kept, and linked
                links.append(Link(given))
                traced.append(task)
            elif creates:
                # The conventions' batch pattern: a create span per task gives it its own
                # creation context; the send span links to them all.
                create = self._tracer.start_span(
                    span_name(CREATE, queue.queue_name),
                    kind=SpanKind.PRODUCER,
                    attributes={**common, **_operation(CREATE), **_message(task)},
                )
                create.end()
                links.append(Link(create.get_span_context()))
                traced.append(task.with_meta(inject(trace.set_span_in_context(create))))
            else:
                traced.append(None)
        attributes = {**common, **_operation(SEND)}
        attributes.update({BATCH_MESSAGE_COUNT: len(tasks)} if batch else _message(tasks[0]))
        # PRODUCER when its context is a creation context, else CLIENT (the conventions)
        own = any(t is None for t in traced)
        with self._tracer.start_as_current_span(
            span_name(SEND, queue.queue_name),
            kind=SpanKind.PRODUCER if own else SpanKind.CLIENT,
            attributes=attributes,
            links=links,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            carrier = inject() if own else {}
            sent = [
                s.with_meta(carrier) if t is None else t for s, t in zip(tasks, traced, strict=True)
            ]
            try:
                yield sent
            except BaseException as exc:
                _failed(span, exc)
                raise

    async def process(
        self, queue: QueueIdentity, task: RedisTask, worker_id: str, run: Callable[[], Awaitable[T]]
    ) -> T:
        parent = extract(task.meta) if task.meta else Context()
        creation = trace.get_current_span(parent).get_span_context()
        attributes = {
            **_queue_attributes(queue.queue_name, queue.redis_url),
            **_operation(PROCESS),
            MESSAGE_ID: task.task_id,
            TASK_TYPE: task.task_type,
            PRIORITY: task.priority,
            ATTEMPT: task.attempts,
            CLIENT_ID: worker_id,
        }
        with self._tracer.start_as_current_span(
            span_name(PROCESS, queue.queue_name),
            context=parent,  # a task run alone: its creation context is the parent ...
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=[Link(creation)] if creation.is_valid else None,  # ... and a link
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                return await run()
            except BaseException as exc:
                _failed(span, exc)
                raise

    async def settle(
        self,
        queue: QueueIdentity,
        settlements: list[Settlement],
        run: Callable[[], Awaitable[list[TaskState | QueueError]]],
    ) -> list[TaskState | QueueError]:
        """One settle span per task, in the task's own trace (a child of its creation
        context, from its meta), spanning the batch call that settled it."""
        attributes = {
            **_queue_attributes(queue.queue_name, queue.redis_url),
            **_operation(SETTLE),
            BATCH_MESSAGE_COUNT: len(settlements),
        }
        name = span_name(SETTLE, queue.queue_name)
        spans = [
            self._tracer.start_span(
                name,
                context=extract(s.meta) if s.meta else None,
                kind=SpanKind.CLIENT,
                attributes=attributes,
                record_exception=False,
                set_status_on_exception=False,
            )
            for s in settlements
        ]
        try:
            outcomes = await run()
        except BaseException as exc:
            for span in spans:
                _failed(span, exc)
                span.end()
            raise
        for span, settlement, outcome in zip(spans, settlements, outcomes, strict=True):
            if span.is_recording():
                span.add_event(
                    SETTLED_EVENT,
                    {MESSAGE_ID: settlement.task_id, TASK_STATE: outcome.value}
                    if isinstance(outcome, TaskState)
                    else {MESSAGE_ID: settlement.task_id, ERROR_TYPE: type(outcome).__name__},
                )
            span.end()
        return outcomes


def _operation(operation: str) -> dict[str, str]:
    return {OPERATION_TYPE: operation, OPERATION_NAME: operation}


def _message(task: NewTask) -> dict[str, str | int]:
    return {MESSAGE_ID: task.task_id, TASK_TYPE: task.task_type, PRIORITY: task.priority}


@lru_cache(maxsize=64)
def _queue_attributes(queue_name: str, redis_url: str) -> dict[str, str | int]:
    """Attributes every span of a queue carries (set at start, so samplers see them)."""
    attributes: dict[str, str | int] = {SYSTEM: SYSTEM_NAME, DESTINATION_NAME: queue_name}
    url = urlsplit(redis_url)
    if url.scheme == "unix":
        attributes[SERVER_ADDRESS] = url.path
    elif url.hostname:
        attributes[SERVER_ADDRESS] = url.hostname
        attributes[SERVER_PORT] = url.port or 6379
    return attributes


def _creation_context(meta: Mapping[str, str]) -> SpanContext | None:
    """A creation context the caller put in a task's meta (then it is not replaced)."""
    if "traceparent" not in meta:
        return None
    context = trace.get_current_span(extract(meta)).get_span_context()
    return context if context.is_valid else None


def _failed(span: trace.Span, exc: BaseException) -> None:
    if span.is_recording():
        name = type(exc).__qualname__
        span.record_exception(exc)
        span.set_attribute(ERROR_TYPE, name)
        span.set_status(Status(StatusCode.ERROR, f"{name}: {exc}"))


def _provider_from_environment(service_name: str | None) -> trace.TracerProvider | None:
    global _owned
    if _owned is not None:
        return _owned
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    names = [n.strip().lower() for n in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",")]
    names = [n for n in names if n and n != "none"]
    if not names:
        return None
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current  # the application set OpenTelemetry up: its exporters apply
    exporters = [(name, _exporter(name)) for name in names]
    if not any(exporter for _, exporter in exporters):
        return None
    name = service_name or os.environ.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    for kind, exporter in exporters:
        if exporter is not None:
            # console is for looking at: written at once; otlp is batched off the loop
            processor = SimpleSpanProcessor if kind == "console" else BatchSpanProcessor
            provider.add_span_processor(processor(exporter))
    if isinstance(current, trace.ProxyTracerProvider):
        trace.set_tracer_provider(provider)
    _owned = provider
    return provider


def _exporter(name: str) -> SpanExporter | None:
    global _traces_file
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        path = os.environ.get(TRACES_FILE_ENV)
        if not path:
            return ConsoleSpanExporter()
        _traces_file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives with the exporter
        return ConsoleSpanExporter(out=_traces_file, formatter=_json_line)
    if name == "otlp":
        protocol = os.environ.get(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        )
        if protocol not in (None, "", "http/protobuf"):
            log.warning("OTLP protocol %r is not supported; use http/protobuf", protocol)
            return None
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            log.warning("OTEL_TRACES_EXPORTER=otlp needs opentelemetry-exporter-otlp-proto-http")
            return None
        return OTLPSpanExporter()  # endpoint, headers, timeout: OTEL_EXPORTER_OTLP_*
    log.warning("OTEL_TRACES_EXPORTER=%s is not supported (console, otlp or none)", name)
    return None


def _json_line(span: ReadableSpan) -> str:
    return f"{span.to_json(indent=None)}\n"  # to_json is untyped


def _version() -> str:
    try:
        return version("agentic-pipeline")
    except PackageNotFoundError:
        return "unknown"
