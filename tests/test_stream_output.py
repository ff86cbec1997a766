"""A task's output stream: written only by the lease holder, every entry tagged with its
attempt, bounded, read as it arrives and ended when the task settles."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from utils.redis_queue import (
    HandlerRegistry,
    LeaseLost,
    OutputChunk,
    RedisTaskQueue,
    TaskContext,
    TaskState,
    Worker,
)
from utils.redis_queue.scripts import OutputEntry

pytestmark = pytest.mark.timeout(30)


async def _collect(queue: RedisTaskQueue, task_id: str) -> list[OutputChunk]:
    return [chunk async for chunk in queue.stream_output(task_id)]


async def test_a_reader_sees_chunks_before_the_task_completes_in_order(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    release = asyncio.Event()

    async def talk(ctx: TaskContext) -> str:
        for i in range(50):
            await ctx.emit(f"token {i} ")
        await release.wait()
        await ctx.emit("after release", kind="log")
        return "done"

    await queue.enqueue("s1", "talk", {})
    worker = Worker(queue, HandlerRegistry({"talk": talk}), burst=True)
    running = asyncio.create_task(worker.run())
    seen: list[OutputChunk] = []
    async for chunk in queue.stream_output("s1"):
        seen.append(chunk)
        if len(seen) == 50:
            task = await queue.get_task("s1")  # still running: the reader is ahead of it
            assert task is not None and task.state == TaskState.PROCESSING
            release.set()
    await running
    assert [c.text for c in seen[:50]] == [f"token {i} " for i in range(50)]
    assert (seen[50].kind, seen[50].text) == ("log", "after release")
    assert (seen[-1].kind, seen[-1].text) == ("end", "completed")
    assert len(seen) == 52 and all(c.attempt == 1 for c in seen)
    assert [c.entry_id for c in seen] == sorted(seen_ids := [c.entry_id for c in seen]) and len(
        set(seen_ids)
    ) == 52
    # In Redis: one stream with every entry and the attempt on each, and a TTL.
    key = queue.keys_for("s1").output("s1")
    raw = await raw_redis.xrange(key)
    assert len(raw) == 52 and all(fields[b"a"] == b"1" for _, fields in raw)
    assert 0 < await raw_redis.ttl(key) <= queue.output_ttl_seconds


async def test_a_stale_worker_cannot_write_into_the_stream_of_the_attempt_that_replaced_it(
    make_queue: Callable[..., RedisTaskQueue], raw_redis: Redis
) -> None:
    first, second = make_queue(lease_seconds=0.2), make_queue(lease_seconds=30)
    await first.connect()
    await second.connect()
    await first.enqueue("s2", "t", {})
    (stale,) = await first.claim("w1", 1)
    stale_ctx = TaskContext(stale, "w1", first.queue_name, stale.lease_token or 0, output=first)
    await stale_ctx.emit("from attempt 1")
    await stale_ctx.progress(0.5, "halfway")
    key = first.keys_for("s2").output("s2")
    await asyncio.sleep(0.3)  # the lease runs out: only time can do that
    (current,) = await second.claim("w2", 1)  # reaps the expired lease, then claims again
    assert current.attempts == 2 and current.lease_token != stale.lease_token
    current_ctx = TaskContext(current, "w2", second.queue_name, current.lease_token or 0)
    current_ctx.output = second
    await current_ctx.emit("from attempt 2")
    before = await raw_redis.xrange(key)
    with pytest.raises(LeaseLost):
        await stale_ctx.emit("late write from attempt 1")
    with pytest.raises(LeaseLost):
        await stale_ctx.progress(0.9, "stale")
    with pytest.raises(LeaseLost):  # the queue API refuses it the same way
        await first.emit_output("s2", stale.lease_token or 0, [OutputEntry("text", "x")])
    assert await raw_redis.xrange(key) == before  # nothing written
    assert [(f[b"a"], f[b"t"]) for _, f in before] == [
        (b"1", b"from attempt 1"),
        (b"1", b"halfway"),
        (b"2", b"from attempt 2"),
    ]
    task = await second.get_task("s2")
    assert task is not None and task.progress == 0.5 and task.progress_message == "halfway"
    await second.complete_task("s2", "ok", lease_token=current.lease_token)
    with pytest.raises(LeaseLost):  # a settled task takes no more output, even its own
        await current_ctx.emit("after the end")
    chunks = await _collect(second, "s2")
    assert [c.text for c in chunks] == ["from attempt 1", "halfway", "from attempt 2", "completed"]
    assert [c.attempt for c in chunks] == [1, 1, 2, 2]


async def test_the_stream_is_bounded_and_long_text_is_cut(
    make_queue: Callable[..., RedisTaskQueue], raw_redis: Redis
) -> None:
    queue = make_queue(output_max_entries=100)
    await queue.connect()
    await queue.enqueue("s3", "t", {})
    (task,) = await queue.claim("w", 1)
    token = task.lease_token or 0
    for start in range(0, 20_000, 1000):  # 20,000 entries, 1,000 per call
        batch = [OutputEntry("text", str(i)) for i in range(start, start + 1000)]
        await queue.emit_output("s3", token, batch)
    key = queue.keys_for("s3").output("s3")
    length = await raw_redis.xlen(key)
    # MAXLEN ~ drops whole nodes (100 entries each by default): a little over the bound
    assert 100 <= length <= 300
    newest = await queue.read_output("s3", last=1)
    assert newest[0].text == "19999"
    ctx = TaskContext(task, "w", queue.queue_name, token, output=queue)
    await ctx.emit("x" * 1_000_000)
    (big,) = await queue.read_output("s3", last=1)
    assert len(big.text) == 65_536 and big.text.endswith("...[cut]")
    assert await raw_redis.memory_usage(key) < 2_000_000


async def test_a_reader_of_a_task_that_wrote_nothing_ends_when_it_settles(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.enqueue("s4", "t", {})
    reader = asyncio.create_task(_collect(queue, "s4"))
    (task,) = await queue.claim("w", 1)
    await queue.complete_task("s4", 1, lease_token=task.lease_token)
    assert await asyncio.wait_for(reader, 5) == []
    assert await raw_redis.exists(queue.keys_for("s4").output("s4")) == 0  # none was made
    assert await _collect(queue, "s4") == []  # and a reader after the end returns at once


async def test_every_final_state_ends_the_stream(queue: RedisTaskQueue) -> None:
    for task_id in ("dead", "cancelled"):
        await queue.enqueue(task_id, "t", {}, max_retries=0)
        (task,) = await queue.claim("w", 1)
        await queue.emit_output(task_id, task.lease_token or 0, [OutputEntry("log", "hi")])
    await queue.fail_task("dead", "boom", lease_token=(await queue.get_task("dead")).lease_token)  # type: ignore[union-attr]
    await queue.cancel("cancelled")
    dead = await _collect(queue, "dead")
    assert [(c.kind, c.text) for c in dead] == [("log", "hi"), ("end", "dead_letter")]
    # A running task asked to cancel keeps its lease until its worker stops; the reader
    # waits for the end its settle writes.
    reader = asyncio.create_task(_collect(queue, "cancelled"))
    task = await queue.get_task("cancelled")
    assert task is not None and task.cancel_requested
    await queue.fail_task("cancelled", "cancelled on request", lease_token=task.lease_token)
    chunks = await asyncio.wait_for(reader, 5)
    assert [(c.kind, c.text) for c in chunks] == [("log", "hi"), ("end", "cancelled")]


async def test_many_concurrent_emits_of_one_task_go_in_few_calls_and_keep_their_order(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.enqueue("s5", "t", {})
    (task,) = await queue.claim("w", 1)
    calls = 0
    real = queue.emit_output

    async def counting(*args: object, **kwargs: object) -> str:
        nonlocal calls
        calls += 1
        return await real(*args, **kwargs)  # type: ignore[arg-type]

    queue.emit_output = counting  # type: ignore[method-assign]
    ctx = TaskContext(task, "w", queue.queue_name, task.lease_token or 0, output=queue)
    await asyncio.gather(*(ctx.emit(str(i)) for i in range(2000)))
    raw = await raw_redis.xrange(queue.keys_for("s5").output("s5"))
    assert [f[b"t"] for _, f in raw] == [str(i).encode() for i in range(2000)]
    assert calls <= 20, calls  # group commits: the first alone, then what queued meanwhile


async def test_streams_work_on_a_partitioned_queue(
    make_queue: Callable[..., RedisTaskQueue], raw_redis: Redis
) -> None:
    queue = make_queue(partitions=4)
    await queue.connect()

    async def talk(ctx: TaskContext) -> None:
        await ctx.emit(f"hello from {ctx.task_id}")

    ids = [f"p{i}" for i in range(16)]
    for task_id in ids:
        await queue.enqueue(task_id, "talk", {})
    readers = [asyncio.create_task(_collect(queue, task_id)) for task_id in ids]
    await Worker(queue, HandlerRegistry({"talk": talk}), concurrency=8, burst=True).run()
    outputs = await asyncio.wait_for(asyncio.gather(*readers), 10)
    for task_id, chunks in zip(ids, outputs, strict=True):
        assert [c.text for c in chunks] == [f"hello from {task_id}", "completed"]
    slots = {queue.keys_for(t).base for t in ids}
    assert len(slots) == 4  # they did spread over the partitions
    for task_id in ids:
        assert await raw_redis.xlen(queue.keys_for(task_id).output(task_id)) == 2


async def test_the_stream_is_deleted_with_its_task(queue: RedisTaskQueue, raw_redis: Redis) -> None:
    await queue.enqueue("gone", "t", {})
    (task,) = await queue.claim("w", 1)
    await queue.emit_output("gone", task.lease_token or 0, [OutputEntry("log", "bye")])
    await queue.complete_task("gone", None, lease_token=task.lease_token)
    key = queue.keys_for("gone").output("gone")
    assert await raw_redis.xlen(key) == 2  # the line and the end
    assert await queue.clear_completed(older_than_seconds=0) == 1
    assert await raw_redis.exists(key, queue.keys_for("gone").task("gone")) == 0
