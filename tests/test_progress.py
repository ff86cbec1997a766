"""Task progress (ctx.progress) and `agentic task tail`: what the handler reports is on the
task (get_task, `agentic task show`), in its output stream, and printed as it arrives."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from tests.support.processes import ROOT, agentic_argv, agentic_env
from utils.redis_queue import (
    HandlerRegistry,
    LeaseLost,
    RedisTaskQueue,
    TaskContext,
    TaskState,
    Worker,
)

pytestmark = pytest.mark.timeout(60)


async def _first(queue: RedisTaskQueue, task_id: str, kind: str) -> None:
    async for chunk in queue.stream_output(task_id):
        if chunk.kind == kind:
            return


async def test_progress_is_on_the_task_while_it_runs_and_in_its_stream(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    release = asyncio.Event()

    async def build(ctx: TaskContext) -> str:
        await ctx.progress(0.4, "running tests")
        await release.wait()
        await ctx.progress(1, "done")
        return "ok"

    await queue.enqueue("p1", "build", {})
    running = asyncio.create_task(
        Worker(queue, HandlerRegistry({"build": build}), burst=True).run()
    )
    await asyncio.wait_for(_first(queue, "p1", "progress"), 10)
    task = await queue.get_task("p1")
    assert task is not None and task.state == TaskState.PROCESSING
    assert (task.progress, task.progress_message) == (0.4, "running tests")
    assert task.to_dict()["progress"] == 0.4
    fields = await raw_redis.hmget(
        queue.keys_for("p1").task("p1"), "progress", "progress.msg", "progress.att"
    )
    assert fields == [b"0.4", b"running tests", b"1"]
    release.set()
    await running
    done = await queue.get_task("p1")
    assert done is not None and done.state == TaskState.COMPLETED
    assert (done.progress, done.progress_message) == (1.0, "done")  # the last report stays
    chunks = [c async for c in queue.stream_output("p1")]
    assert [(c.kind, c.fraction, c.text) for c in chunks] == [
        ("progress", 0.4, "running tests"),
        ("progress", 1.0, "done"),
        ("end", None, "completed"),
    ]


async def test_bad_progress_is_refused_before_anything_is_written(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    await queue.enqueue("p2", "t", {})
    (task,) = await queue.claim("w", 1)
    ctx = TaskContext(task, "w", queue.queue_name, task.lease_token or 0, output=queue)
    for fraction in (-0.01, 1.0001, math.nan, math.inf, True, "0.5", None):
        with pytest.raises(ValueError, match="fraction"):
            await ctx.progress(fraction, "x")  # type: ignore[arg-type]
    for kind in ("", "end", "k" * 33):
        with pytest.raises(ValueError, match="kind"):
            await ctx.emit("x", kind=kind)
    assert await raw_redis.exists(queue.keys_for("p2").output("p2")) == 0
    assert await raw_redis.hget(queue.keys_for("p2").task("p2"), "progress") is None
    # A long message is cut to 64 bytes, on a character boundary.
    await ctx.progress(0, "é" * 100)
    stored = await queue.get_task("p2")
    assert stored is not None and stored.progress_message == "é" * 32


async def test_a_stale_worker_cannot_report_progress(
    make_queue: Callable[..., RedisTaskQueue], raw_redis: Redis
) -> None:
    first, second = make_queue(lease_seconds=0.2), make_queue()
    await first.connect()
    await second.connect()
    await first.enqueue("p3", "t", {})
    (stale,) = await first.claim("w1", 1)
    ctx = TaskContext(stale, "w1", first.queue_name, stale.lease_token or 0, output=first)
    await ctx.progress(0.2, "mine")
    await asyncio.sleep(0.3)  # the lease runs out: only time can do that
    (current,) = await second.claim("w2", 1)
    with pytest.raises(LeaseLost):
        await ctx.progress(0.9, "stale")
    task = await second.get_task("p3")
    assert task is not None and task.attempts == 2
    assert (task.progress, task.progress_message) == (0.2, "mine")
    assert await raw_redis.hget(first.keys_for("p3").task("p3"), "progress.att") == b"1"
    assert current.lease_token != stale.lease_token


async def test_a_context_without_a_queue_takes_output_and_writes_nothing() -> None:
    """The in-process pipeline's context (no queue behind it): emit and progress are no-ops."""
    from utils.redis_queue import RedisTask

    ctx = TaskContext(RedisTask("x", "t", {}, 1, "processing"), "w", "local", 1)
    await ctx.emit("hello")
    await ctx.progress(0.5, "half")


async def test_task_tail_prints_output_as_it_arrives_and_exits_with_the_outcome(
    queue: RedisTaskQueue, redis_url: str, queue_name: str
) -> None:
    release = asyncio.Event()

    async def talk(ctx: TaskContext) -> None:
        await ctx.emit("hello ")
        await ctx.emit("world\n")
        await ctx.progress(0.5, "half way")
        await release.wait()
        await ctx.emit("bye", kind="log")

    await queue.enqueue("p4", "talk", {})
    running = asyncio.create_task(Worker(queue, HandlerRegistry({"talk": talk}), burst=True).run())
    proc = await asyncio.create_subprocess_exec(
        *agentic_argv("task", "tail", "p4", "--json"),
        cwd=ROOT,
        env=agentic_env(redis_url, queue_name),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    lines = [json.loads(await asyncio.wait_for(proc.stdout.readline(), 20)) for _ in range(3)]
    task = await queue.get_task("p4")
    assert task is not None and task.state == TaskState.PROCESSING  # printed before the end
    assert [line["text"] for line in lines] == ["hello ", "world\n", "half way"]
    assert lines[2]["fraction"] == 0.5 and all(line["attempt"] == 1 for line in lines)
    release.set()
    await running
    rest, _ = await asyncio.wait_for(proc.communicate(), 20)
    tail = [json.loads(line) for line in rest.decode().splitlines()]
    assert [(t["kind"], t["text"]) for t in tail] == [("log", "bye"), ("end", "completed")]
    assert proc.returncode == 0
    # Human output of the settled task, read again from the stream; a failed one exits 1.
    human = await asyncio.create_subprocess_exec(
        *agentic_argv("task", "tail", "p4"),
        cwd=ROOT,
        env=agentic_env(redis_url, queue_name),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(human.communicate(), 20)
    assert out.decode().splitlines() == [
        "hello world",
        "[ 50%] half way",
        "bye",
        "-- completed (attempt 1) --",
    ]
    await queue.enqueue("p5", "t", {}, max_retries=0)
    (failing,) = await queue.claim("w", 1)
    await queue.fail_task("p5", "boom", lease_token=failing.lease_token)
    missing = await asyncio.create_subprocess_exec(
        *agentic_argv("task", "tail", "p5"), cwd=ROOT, env=agentic_env(redis_url, queue_name)
    )
    assert await asyncio.wait_for(missing.wait(), 20) == 1
