"""OpenTelemetry spans of the queue engine, asserted by value: producer -> consumer linkage
in-process and across processes (a real `agentic worker`), retries, batches, the OTLP
exporter over real HTTP, and nothing at all while tracing is off."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind, StatusCode
from redis.asyncio import Redis

from tests.support.processes import ROOT, agentic_argv, agentic_env, wait_exit, worker_processes
from tests.support.worker_apps import registry
from utils import tracing
from utils.redis_queue import RedisTaskQueue, TaskPriority, telemetry
from utils.redis_queue.handlers import HandlerRegistry, TaskContext
from utils.redis_queue.worker import Worker

QueueFactory = Callable[..., RedisTaskQueue]


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def ids(context: SpanContext | None) -> tuple[int, int]:
    assert context is not None
    return context.trace_id, context.span_id


def traceparent(span: ReadableSpan) -> str:
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


async def stored_meta(raw_redis: Redis, queue: RedisTaskQueue, task_id: str) -> Any:
    """The task's meta as stored: chunks of at most 64 bytes (`meta`, `meta.1`, ...)."""
    fields = await raw_redis.hgetall(queue.keys.task(task_id))
    if b"meta" not in fields:
        return None
    assert all(len(v) <= 64 for v in fields.values())  # the hash stays a compact listpack
    parts, i = [fields[b"meta"]], 1
    while (part := fields.get(f"meta.{i}".encode())) is not None:
        parts.append(part)
        i += 1
    return json.loads(b"".join(parts))


def queue_attributes(queue: RedisTaskQueue, operation: str) -> dict[str, Any]:
    host, port = queue.redis_url.split("//")[1].split("/")[0].split(":")
    return {
        "messaging.system": "agentic",
        "messaging.destination.name": queue.queue_name,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "server.address": host,
        "server.port": int(port),
    }


async def test_process_span_is_a_child_of_the_send_span_and_links_to_it(
    spans: InMemorySpanExporter, queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    q = queue.queue_name
    task = await queue.enqueue("t1", "noop", {"value": 1}, TaskPriority.HIGH)
    await Worker(queue, registry, worker_id="w1", burst=True).run()

    (send,) = named(spans, f"send {q}")
    (process,) = named(spans, f"process {q}")
    (settle,) = named(spans, f"settle {q}")
    assert send.kind is SpanKind.PRODUCER and send.parent is None
    assert dict(send.attributes or {}) == {
        **queue_attributes(queue, "send"),
        "messaging.message.id": "t1",
        "messaging.agentic.task_type": "noop",
        "messaging.agentic.priority": 2,
    }
    # The send span's context is the task's creation context, stored in its meta.
    assert task.meta == {"traceparent": traceparent(send)}
    assert await stored_meta(raw_redis, queue, "t1") == {"traceparent": traceparent(send)}

    assert process.kind is SpanKind.CONSUMER
    assert process.context.trace_id == send.context.trace_id
    assert process.parent is not None and process.parent.span_id == send.context.span_id
    assert [ids(link.context) for link in process.links] == [ids(send.context)]
    assert dict(process.attributes or {}) == {
        **queue_attributes(queue, "process"),
        "messaging.message.id": "t1",
        "messaging.agentic.task_type": "noop",
        "messaging.agentic.priority": 2,
        "messaging.agentic.attempt": 1,
        "messaging.client.id": "w1",
    }
    assert process.status.status_code is StatusCode.UNSET

    assert settle.kind is SpanKind.CLIENT
    # the settle span belongs to the task's trace, a child of its creation context
    assert settle.context.trace_id == send.context.trace_id
    assert settle.parent is not None and settle.parent.span_id == send.context.span_id
    assert dict(settle.attributes or {}) == {
        **queue_attributes(queue, "settle"),
        "messaging.batch.message_count": 1,
    }
    assert [(e.name, dict(e.attributes or {})) for e in settle.events] == [
        ("settled", {"messaging.message.id": "t1", "messaging.agentic.task_state": "completed"})
    ]


async def test_a_retry_is_a_second_process_span_in_the_same_trace(
    spans: InMemorySpanExporter, queue: RedisTaskQueue
) -> None:
    q = queue.queue_name
    await queue.enqueue("flaky", "flaky", {"failures": 1})
    # Served until the result is in, then stopped (which waits for the acknowledgements):
    # a burst worker can miss an immediate retry that lands while its last claim is in flight.
    worker = Worker(queue, registry)
    serving = asyncio.create_task(worker.run())
    try:
        assert await queue.wait_for_result("flaky", 10) == {"attempt": 2}
    finally:
        worker.request_stop()
        await asyncio.wait_for(serving, 10)

    (send,) = named(spans, f"send {q}")
    first, second = sorted(named(spans, f"process {q}"), key=lambda s: s.start_time or 0)
    for run, attempt in ((first, 1), (second, 2)):
        assert run.context.trace_id == send.context.trace_id
        assert run.parent is not None and run.parent.span_id == send.context.span_id
        assert [ids(link.context) for link in run.links] == [ids(send.context)]
        assert (run.attributes or {})["messaging.agentic.attempt"] == attempt
    assert first.status.status_code is StatusCode.ERROR
    assert first.status.description == "RuntimeError: failure on attempt 1"
    assert (first.attributes or {})["error.type"] == "RuntimeError"
    (event,) = first.events
    assert event.name == "exception"
    assert (event.attributes or {})["exception.type"] == "RuntimeError"
    assert second.status.status_code is StatusCode.UNSET
    assert "error.type" not in (second.attributes or {})
    states = [
        (e.attributes or {})["messaging.agentic.task_state"]
        for s in named(spans, f"settle {q}")
        for e in s.events
    ]
    assert states == ["pending", "completed"]  # an immediate retry, then done


async def test_enqueue_many_gives_each_task_a_create_span_that_the_send_span_links(
    spans: InMemorySpanExporter, queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    q = queue.queue_name
    task_ids = ["b0", "b1", "b2"]
    await queue.enqueue_many(
        {"task_id": i, "task_type": "noop", "payload": {}, "priority": "low"} for i in task_ids
    )
    await Worker(queue, registry, burst=True).run()

    (send,) = named(spans, f"send {q}")
    creates = {(s.attributes or {})["messaging.message.id"]: s for s in named(spans, f"create {q}")}
    processes = {
        (s.attributes or {})["messaging.message.id"]: s for s in named(spans, f"process {q}")
    }
    assert sorted(creates) == sorted(processes) == task_ids
    assert send.kind is SpanKind.CLIENT  # its context is not the creation context
    assert dict(send.attributes or {}) == {
        **queue_attributes(queue, "send"),
        "messaging.batch.message_count": 3,
    }
    assert [ids(link.context) for link in send.links] == [ids(creates[i].context) for i in task_ids]
    for task_id in task_ids:
        create, process = creates[task_id], processes[task_id]
        assert create.kind is SpanKind.PRODUCER
        assert dict(create.attributes or {}) == {
            **queue_attributes(queue, "create"),
            "messaging.message.id": task_id,
            "messaging.agentic.task_type": "noop",
            "messaging.agentic.priority": 0,
        }
        assert await stored_meta(raw_redis, queue, task_id) == {"traceparent": traceparent(create)}
        assert process.context.trace_id == create.context.trace_id
        assert process.parent is not None and process.parent.span_id == create.context.span_id
        assert [ids(link.context) for link in process.links] == [ids(create.context)]


async def test_without_create_spans_the_batch_send_span_is_every_tasks_creation_context(
    spans: InMemorySpanExporter, provider: TracerProvider, queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    assert tracing.setup_tracing(tracer_provider=provider, create_spans=False)
    q = queue.queue_name
    await queue.enqueue_many(
        {"task_id": f"c{i}", "task_type": "noop", "payload": {}} for i in range(3)
    )
    await Worker(queue, registry, burst=True).run()

    assert named(spans, f"create {q}") == []
    (send,) = named(spans, f"send {q}")
    assert send.kind is SpanKind.PRODUCER and not send.links
    assert (send.attributes or {})["messaging.batch.message_count"] == 3
    processes = named(spans, f"process {q}")
    assert len(processes) == 3
    for process in processes:
        task_id = (process.attributes or {})["messaging.message.id"]
        assert await stored_meta(raw_redis, queue, task_id) == {"traceparent": traceparent(send)}
        assert process.parent is not None and process.parent.span_id == send.context.span_id
        assert [ids(link.context) for link in process.links] == [ids(send.context)]


async def test_a_trace_context_the_caller_put_in_meta_is_kept(
    spans: InMemorySpanExporter, queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    q = queue.queue_name
    given = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    await queue.enqueue("mine", "noop", {}, meta={"traceparent": given, "run": "r1"})
    await Worker(queue, registry, burst=True).run()

    assert await stored_meta(raw_redis, queue, "mine") == {"traceparent": given, "run": "r1"}
    (send,) = named(spans, f"send {q}")
    (process,) = named(spans, f"process {q}")
    assert send.kind is SpanKind.CLIENT  # its context is not the creation context
    assert [f"{link.context.span_id:016x}" for link in send.links] == ["b7ad6b7169203331"]
    assert f"{process.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert process.parent is not None and f"{process.parent.span_id:016x}" == "b7ad6b7169203331"


async def test_handler_spans_nest_under_the_process_span_in_async_and_sync_handlers(
    spans: InMemorySpanExporter, provider: TracerProvider, queue: RedisTaskQueue
) -> None:
    inner = provider.get_tracer("handlers")

    async def async_handler(ctx: TaskContext) -> str:
        with inner.start_as_current_span("inside async"):
            await asyncio.sleep(0)
        return "ok"

    def sync_handler(ctx: TaskContext) -> str:  # runs in the worker's thread pool
        with inner.start_as_current_span("inside sync"):
            return "ok"

    handlers = HandlerRegistry({"a": async_handler, "s": sync_handler})
    await queue.enqueue("ta", "a", {})
    await queue.enqueue("ts", "s", {})
    await Worker(queue, handlers, burst=True).run()

    processes = {
        (s.attributes or {})["messaging.message.id"]: s
        for s in named(spans, f"process {queue.queue_name}")
    }
    for task_id, name in (("ta", "inside async"), ("ts", "inside sync")):
        (span,) = named(spans, name)
        assert span.parent is not None
        assert span.parent.span_id == processes[task_id].context.span_id


async def test_tracing_off_stores_no_meta_and_makes_no_spans(
    provider: TracerProvider, queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    assert tracing.setup_tracing(tracer_provider=provider)
    tracing.shutdown_tracing()
    assert telemetry.tracer is None

    task = await queue.enqueue("quiet", "noop", {})
    await queue.enqueue_many([{"task_id": "quiet2", "task_type": "noop", "payload": {}}])
    await Worker(queue, registry, burst=True).run()

    assert task.meta == {}
    for task_id in ("quiet", "quiet2"):
        assert not await raw_redis.hexists(queue.keys.task(task_id), "meta")
    assert exporter.get_finished_spans() == ()
    assert trace.get_current_span().get_span_context().is_valid is False


def test_setup_tracing_is_off_without_an_exporter(monkeypatch: pytest.MonkeyPatch) -> None:
    for value in (None, "", "none"):
        if value is None:
            monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
        else:
            monkeypatch.setenv("OTEL_TRACES_EXPORTER", value)
        assert tracing.setup_tracing() is False
        assert telemetry.tracer is None
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert tracing.setup_tracing() is False
    assert telemetry.tracer is None


def test_inject_and_extract_round_trip_the_w3c_context(provider: TracerProvider) -> None:
    with provider.get_tracer("t").start_as_current_span("here") as span:
        carrier = tracing.inject()
    assert carrier == {"traceparent": traceparent(span)}
    extracted = trace.get_current_span(tracing.extract(carrier)).get_span_context()
    assert extracted.trace_id == span.get_span_context().trace_id
    assert extracted.span_id == span.get_span_context().span_id and extracted.is_remote
    assert tracing.inject() == {}  # no current span
    assert not trace.get_current_span(tracing.extract({})).get_span_context().is_valid


@pytest.mark.timeout(60)
async def test_an_agentic_worker_process_continues_the_producers_trace(
    spans: InMemorySpanExporter,
    queue: RedisTaskQueue,
    redis_url: str,
    queue_name: str,
    tmp_path: Path,
) -> None:
    exported = tmp_path / "worker-spans.jsonl"
    await queue.enqueue("remote", "noop", {"value": 3})
    (send,) = named(spans, f"send {queue_name}")
    with worker_processes(redis_url, queue_name) as workers:
        proc = workers.start(
            "--burst",
            "--worker-id",
            "remote-worker",
            OTEL_TRACES_EXPORTER="console",
            OTEL_SERVICE_NAME="traced-worker",
            **{tracing.TRACES_FILE_ENV: str(exported)},
        )
        assert await wait_exit(proc, 30) == 0
    assert await queue.wait_for_result("remote", 1) == {"echo": 3}

    worker_spans = [json.loads(line) for line in exported.read_text().splitlines()]
    (process,) = [s for s in worker_spans if s["name"] == f"process {queue_name}"]
    assert process["kind"] == "SpanKind.CONSUMER"
    assert process["context"]["trace_id"] == f"0x{send.context.trace_id:032x}"
    assert process["parent_id"] == f"0x{send.context.span_id:016x}"
    assert [link["context"]["span_id"] for link in process["links"]] == [
        f"0x{send.context.span_id:016x}"
    ]
    assert process["attributes"]["messaging.message.id"] == "remote"
    assert process["attributes"]["messaging.client.id"] == "remote-worker"
    assert process["resource"]["attributes"]["service.name"] == "traced-worker"
    assert any(s["name"] == f"settle {queue_name}" for s in worker_spans)


class _Collector(BaseHTTPRequestHandler):
    bodies: list[tuple[str, bytes]]

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        self.bodies.append((self.path, self.rfile.read(length)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return None


async def test_otlp_exporter_sends_the_enqueue_span_of_an_agentic_process(
    redis_url: str, queue_name: str, queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    handler = type("Collector", (_Collector,), {"bodies": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = agentic_env(
            redis_url,
            queue_name,
            OTEL_TRACES_EXPORTER="otlp",
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{server.server_address[1]}",
            OTEL_SERVICE_NAME="traced-producer",
        )
        out = await asyncio.to_thread(
            subprocess.run,
            agentic_argv("enqueue", "noop", "--id", "via-otlp"),
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
    finally:
        server.shutdown()
        server.server_close()
    assert [path for path, _ in handler.bodies] == ["/v1/traces"]
    request = ExportTraceServiceRequest()
    request.ParseFromString(handler.bodies[0][1])
    (resource_spans,) = request.resource_spans
    resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert resource["service.name"] == "traced-producer"
    (span,) = [s for scope in resource_spans.scope_spans for s in scope.spans]
    assert span.name == f"send {queue_name}"
    attributes = {a.key: a.value for a in span.attributes}
    assert attributes["messaging.message.id"].string_value == "via-otlp"
    meta = await stored_meta(raw_redis, queue, "via-otlp")
    assert meta["traceparent"].split("-")[1:3] == [span.trace_id.hex(), span.span_id.hex()]
