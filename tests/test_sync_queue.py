"""SyncRedisTaskQueue: the producer API for synchronous code, against real Redis. Each
test checks what the sync client wrote in Redis, and that the async client and a real
Worker read it as their own (the same scripts, keys and errors)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from redis.asyncio import Redis

from tests.conftest import FAST_RETRY
from tests.support.state import assert_single_state
from utils.redis_queue import (
    BulkEnqueueError,
    DirectoryBlobStore,
    DurabilityError,
    InvalidTaskError,
    InvalidTaskId,
    PayloadTooLarge,
    RedisTaskQueue,
    RedisUnavailable,
    ResultTimeout,
    SyncRedisTaskQueue,
    TaskCancelled,
    TaskFailed,
    TaskNotFound,
    TaskPriority,
    TaskState,
    TaskStateError,
    TopologyError,
    Worker,
)
from utils.redis_queue.handlers import HandlerRegistry, TaskContext
from utils.redis_queue.keys import partition_of, queue_index

QueueFactory = Callable[..., RedisTaskQueue]
SyncFactory = Callable[..., SyncRedisTaskQueue]
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def make_sync(redis_url: str, queue_name: str) -> Iterator[SyncFactory]:
    made: list[SyncRedisTaskQueue] = []

    def factory(**kwargs: Any) -> SyncRedisTaskQueue:
        options: dict[str, Any] = {
            "queue_name": queue_name,
            "redis_url": redis_url,
            "retry_policy": FAST_RETRY,
        }
        q = SyncRedisTaskQueue(**{**options, **kwargs})
        made.append(q)
        return q

    yield factory
    for q in made:
        q.close()


@pytest.fixture
def sq(make_sync: SyncFactory) -> Iterator[SyncRedisTaskQueue]:
    with make_sync() as q:
        yield q


async def _echo(ctx: TaskContext) -> Any:
    if ctx.payload.get("fail"):
        raise RuntimeError("asked to fail")
    return {"echo": ctx.payload, "type": ctx.task.task_type}


async def _drain(queue: RedisTaskQueue, *types: str) -> None:
    registry = HandlerRegistry({t: _echo for t in types})
    await Worker(queue, registry, burst=True).run()


async def test_sync_enqueue_writes_the_records_the_async_client_writes(
    sq: SyncRedisTaskQueue, queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    task = sq.enqueue("s1", "dev", {"n": 1}, TaskPriority.HIGH, meta={"who": "view"})
    assert task.state == TaskState.PENDING and task.priority == TaskPriority.HIGH
    await assert_single_state(raw_redis, queue, "s1", "pending")
    again = sq.enqueue("s1", "dev", {"n": 2})  # the id is the idempotency key
    assert again.payload == {"n": 1}
    assert await raw_redis.zcard(queue.keys.pending("dev")) == 1
    read = await queue.get_task("s1")
    assert read is not None and read.payload == {"n": 1} and read.meta == {"who": "view"}
    assert sq.get_task("s1") == read
    assert sq.get_task("nope") is None

    delayed = sq.enqueue("s2", "dev", {}, delay=30)
    assert delayed.state == TaskState.DELAYED
    await assert_single_state(raw_redis, queue, "s2", "delayed")
    stats = await queue.get_statistics()
    assert stats["total_enqueued"] == 2 and stats["pending"] == 1 and stats["delayed"] == 1
    # connect made the async client's checks, which register the queue's name
    assert await raw_redis.sismember(queue_index(sq.layout.prefix), sq.queue_name)


async def test_sync_enqueue_many_sends_thousands_in_order_all_validated_first(
    sq: SyncRedisTaskQueue, queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    specs = [
        {"task_id": f"m{i}", "task_type": "dev", "payload": {"i": i}, "priority": i % 4}
        for i in range(2_500)  # three script calls of up to 1,000
    ]
    made = sq.enqueue_many(specs)
    assert [t.task_id for t in made] == [s["task_id"] for s in specs]
    assert await raw_redis.zcard(queue.keys.pending("dev")) == 2_500
    first = await queue.dequeue("w", timeout=1)
    assert first is not None and first.task_id == "m3"  # CRITICAL (3) first, then FIFO

    with pytest.raises(InvalidTaskError, match="item 1"):
        sq.enqueue_many([{"task_id": "ok", "task_type": "dev", "payload": {}}, "bad"])  # type: ignore[list-item]
    assert await raw_redis.exists(queue.keys.task("ok")) == 0  # nothing was sent


async def test_errors_are_the_async_clients_types(
    sq: SyncRedisTaskQueue, queue: RedisTaskQueue, make_sync: SyncFactory
) -> None:
    with pytest.raises(InvalidTaskId):
        sq.enqueue("", "dev", {})
    with pytest.raises(PayloadTooLarge):
        make_sync(max_payload_bytes=100).enqueue("big", "dev", {"x": "y" * 200})
    with pytest.raises(TaskNotFound):
        sq.cancel("missing")
    with pytest.raises(TaskNotFound):
        sq.wait_for_result("missing", timeout=0.1)
    sq.enqueue("done", "dev", {})
    await queue.dequeue("w", timeout=1)
    await queue.complete_task("done", {"ok": True})
    with pytest.raises(TaskStateError):
        sq.cancel("done")
    with pytest.raises(RedisUnavailable):
        SyncRedisTaskQueue("x", "redis://127.0.0.1:1", connect_timeout=0.5).connect()
    # the sync client stores nothing the async one could not: the same error for the same call
    for call in (lambda q: q.cancel("missing"), lambda q: q.cancel("done")):
        with pytest.raises(QueueErrorTypes) as sync_error:
            call(sq)
        with pytest.raises(QueueErrorTypes) as async_error:
            await call(queue)
        assert type(sync_error.value) is type(async_error.value)
        assert str(sync_error.value) == str(async_error.value)


QueueErrorTypes = (TaskNotFound, TaskStateError)


async def test_sync_enqueue_async_worker_sync_wait_for_result(
    sq: SyncRedisTaskQueue, queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    sq.enqueue("ok", "dev", {"n": 7})
    sq.enqueue("bad", "dev", {"fail": True}, max_retries=0)
    # the waits block in Redis before the worker runs; they wake when it settles
    waits = [asyncio.to_thread(sq.wait_for_result, i, 10) for i in ("ok", "bad")]
    waiting = asyncio.gather(*waits, return_exceptions=True)
    await asyncio.sleep(0.1)
    await _drain(queue, "dev")
    result, failure = await waiting
    assert result == {"echo": {"n": 7}, "type": "dev"}
    assert isinstance(failure, TaskFailed) and failure.state == TaskState.DEAD_LETTER
    await assert_single_state(raw_redis, queue, "ok", "completed")
    await assert_single_state(raw_redis, queue, "bad", "dead_letter")
    assert sq.wait_for_result("ok", timeout=0) == result  # finished: no wait at all


async def test_sync_wait_times_out_and_sees_a_cancel(
    sq: SyncRedisTaskQueue, queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    sq.enqueue("slow", "dev", {})
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ResultTimeout):
        await asyncio.to_thread(sq.wait_for_result, "slow", 0.2)
    assert 0.15 < loop.time() - started < 1.5
    waiter = asyncio.ensure_future(asyncio.to_thread(sq.wait_for_result, "slow", 10))
    await asyncio.sleep(0.05)
    assert sq.cancel("slow") == TaskState.CANCELLED
    with pytest.raises(TaskCancelled):
        await waiter
    await assert_single_state(raw_redis, queue, "slow", "cancelled")

    sq.enqueue("running", "dev", {})
    await queue.dequeue("w", timeout=1)
    assert sq.cancel("running") == TaskState.PROCESSING  # flagged; its worker is told
    assert await raw_redis.hget(queue.keys.task("running"), "cancel") is not None


async def test_one_client_from_eight_threads(
    sq: SyncRedisTaskQueue, queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    per_thread = 300
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def produce(n: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                sq.enqueue(f"t{n}-{i}", "dev", {"n": n, "i": i})
            sq.enqueue_many(
                {"task_id": f"b{n}-{i}", "task_type": "dev", "payload": {}} for i in range(500)
            )
            assert sq.get_task(f"t{n}-0") is not None
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=produce, args=(n,)) for n in range(8)]
    await asyncio.to_thread(_run_all, threads)
    assert errors == []
    assert await raw_redis.zcard(queue.keys.pending("dev")) == 8 * (per_thread + 500)
    assert (await queue.get_statistics())["total_enqueued"] == 8 * (per_thread + 500)

    # eight threads waiting at once on eight tasks, all woken by one worker
    ids = [f"t{n}-0" for n in range(8)]
    waits = asyncio.gather(*(asyncio.to_thread(sq.wait_for_result, i, 20) for i in ids))
    await asyncio.sleep(0.1)
    await _drain(queue, "dev")
    assert [r["echo"]["n"] for r in await waits] == list(range(8))


def _run_all(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)


async def test_partitioned_queue_from_the_sync_client(
    make_sync: SyncFactory, make_queue: QueueFactory, raw_redis: Redis, queue_name: str
) -> None:
    parts = 6
    aq = make_queue(partitions=parts)
    await aq.connect()
    with make_sync(partitions=parts) as sq:
        ids = [f"p{i}" for i in range(1_200)]
        made = sq.enqueue_many({"task_id": i, "task_type": "dev", "payload": {}} for i in ids)
        assert [t.task_id for t in made] == ids  # the caller's order across partitions
        for i in ids[:50]:
            key = aq.layout.parts[partition_of(i, parts)].task(i)
            assert await raw_redis.hget(key, "state") == b"pending"
        counts = [await raw_redis.zcard(k.pending("dev")) for k in aq.layout.parts]
        assert sum(counts) == 1_200 and all(c > 0 for c in counts)
        assert sq.cancel("p5") == TaskState.CANCELLED
        cancelled = aq.layout.parts[partition_of("p5", parts)].cancelled
        assert await raw_redis.zscore(cancelled, "p5") is not None
        task = sq.get_task("p5")
        assert task is not None and task.state == TaskState.CANCELLED
        sq.enqueue("last", "other", {"x": 1})
        waiting = asyncio.ensure_future(asyncio.to_thread(sq.wait_for_result, "last", 10))
        await _drain(aq, "other")
        assert (await waiting)["echo"] == {"x": 1}
    with pytest.raises(TopologyError):
        make_sync(partitions=2).connect()  # every client of a queue uses its count


async def test_large_payloads_and_results_go_claim_check(
    make_sync: SyncFactory, queue: RedisTaskQueue, raw_redis: Redis, tmp_path: Path
) -> None:
    data = "z" * (3 * 1024 * 1024)
    with make_sync(blob_threshold_bytes=1024) as sq:
        sq.enqueue("big", "dev", {"data": data})
        assert len(await raw_redis.hget(queue.keys.task("big"), "payload") or b"") == 0
        assert await raw_redis.strlen(queue.keys.blob("big", "payload")) > len(data)
        got = sq.get_task("big")
        assert got is not None and got.payload == {"data": data}
        assert sq.get_task("big", blobs=False).payload == {}  # type: ignore[union-attr]
        waiting = asyncio.ensure_future(asyncio.to_thread(sq.wait_for_result, "big", 20))
        await _drain(queue, "dev")
        assert (await waiting)["echo"]["data"] == data  # the result was claim-checked too
        assert await raw_redis.exists(queue.keys.blob("big", "result")) == 1

    store = DirectoryBlobStore(tmp_path)
    with make_sync(blob_threshold_bytes=1024, blob_store=store) as sq:
        sq.enqueue("ext", "dev", {"data": data})
        assert await raw_redis.exists(queue.keys.blob("ext", "payload")) == 0
        assert len(list(tmp_path.iterdir())) == 1  # the payload went to the store
        got = sq.get_task("ext")
        assert got is not None and got.payload == {"data": data}


async def test_a_durable_enqueue_without_replicas_raises_durability_error(
    make_sync: SyncFactory, queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    with make_sync(durable=True, durable_timeout_ms=50) as sq:
        with pytest.raises(DurabilityError) as failure:
            sq.enqueue("d1", "dev", {})
        assert failure.value.task_ids == ["d1"]
        await assert_single_state(raw_redis, queue, "d1", "pending")  # on the primary
        with pytest.raises(DurabilityError):
            sq.enqueue_many(
                [{"task_id": f"d{i}", "task_type": "dev", "payload": {}} for i in (2, 3)]
            )
        assert sq.enqueue("d4", "dev", {}, durable=False).state == TaskState.PENDING


async def test_a_failed_chunk_reports_what_was_enqueued(
    sq: SyncRedisTaskQueue, queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await raw_redis.set(queue.keys.pending("late"), "not a zset")  # enqueue.lua's WRONGTYPE
    specs = [{"task_id": f"c{i}", "task_type": "dev", "payload": {}} for i in range(1_000)]
    specs.append({"task_id": "c-late", "task_type": "late", "payload": {}})
    with pytest.raises(BulkEnqueueError) as failure:
        sq.enqueue_many(specs)
    assert len(failure.value.enqueued) == 1_000
    assert await raw_redis.zcard(queue.keys.pending("dev")) == 1_000
    assert await raw_redis.exists(queue.keys.task("c-late")) == 0


async def test_sync_enqueue_is_traced_like_the_async_one(
    spans: InMemorySpanExporter, sq: SyncRedisTaskQueue, queue: RedisTaskQueue
) -> None:
    """A Flask view's enqueue starts the task's trace: a send span whose context the task
    carries, the worker's process span its child; a batch gets create spans it links."""
    name = sq.queue_name
    task = sq.enqueue("one", "dev", {"n": 1})
    batch = sq.enqueue_many(
        {"task_id": f"b{i}", "task_type": "dev", "payload": {}} for i in range(3)
    )
    await _drain(queue, "dev")
    sends = [s for s in spans.get_finished_spans() if s.name == f"send {name}"]
    creates = [s for s in spans.get_finished_spans() if s.name == f"create {name}"]
    processes = {
        dict(s.attributes or {})["messaging.message.id"]: s
        for s in spans.get_finished_spans()
        if s.name == f"process {name}"
    }
    assert len(sends) == 2 and len(creates) == 3
    single, bulk = sends
    assert single.kind is SpanKind.PRODUCER and single.parent is None
    ctx = single.get_span_context()
    assert task.meta == {
        "traceparent": f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"
    }
    assert processes["one"].parent is not None
    assert processes["one"].parent.span_id == ctx.span_id
    assert {link.context.span_id for link in bulk.links} == {
        c.get_span_context().span_id for c in creates
    }
    for created in batch:
        assert processes[created.task_id].context.trace_id in {
            c.get_span_context().trace_id for c in creates
        }


async def test_sixteen_threads_share_max_connections_connections(
    make_sync: SyncFactory, raw_redis: Redis
) -> None:
    """max_connections bounds the sync client as it bounds the async one: more threads
    wait their turn instead of opening a connection each."""
    before = len(await raw_redis.client_list())
    sq = make_sync(max_connections=2)
    errors: list[BaseException] = []
    barrier = threading.Barrier(16)

    def produce(n: int) -> None:
        try:
            barrier.wait()
            for i in range(50):
                sq.enqueue(f"c{n}-{i}", "dev", {})
                assert sq.get_task(f"c{n}-{i}") is not None
        except BaseException as exc:
            errors.append(exc)

    await asyncio.to_thread(
        _run_all, [threading.Thread(target=produce, args=(n,)) for n in range(16)]
    )
    assert errors == []
    assert await raw_redis.zcard(sq.keys.pending("dev")) == 16 * 50
    opened = len(await raw_redis.client_list()) - before
    assert opened <= 2, f"{opened} connections for max_connections=2"
