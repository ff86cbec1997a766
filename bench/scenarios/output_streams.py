"""Scenario O: a task's output stream (ctx.emit) against raw XADD on the same server.

    sequential   `await ctx.emit(...)` one at a time (one script call each)  vs  XADD
                 awaited one at a time
    concurrent   N emits of one task gathered at once (the writer's group commit)  vs
                 the same N XADDs in one pipeline
    latency      emit -> a `stream_output` reader, 1 ms apart  vs  XADD -> XREAD BLOCK
    memory       MEMORY USAGE of the N-entry stream  vs  a raw stream of the same fields

The entries are short ("token <i> "), as model tokens are. Each phase writes the stream of
a task of its own, claimed by this process (the lease fences the writes).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from bench.harness.config import QUICK, TASK_TYPE
from bench.harness.context import Bench, Row, clear_keys
from bench.harness.payloads import percentile
from utils.redis_queue import RedisTaskQueue, TaskContext

LATENCY_GAP_S = 0.001


def counts(bench: Bench) -> tuple[int, int]:
    """(entries per rate phase, entries timed for latency)."""
    return (1_000, 200) if bench.sizes == QUICK else (10_000, 1_000)


async def claimed_context(queue: RedisTaskQueue, task_id: str) -> TaskContext:
    await queue.enqueue(task_id, TASK_TYPE, {})
    tasks = await queue.claim("bench-o", 1)
    if len(tasks) != 1 or tasks[0].task_id != task_id:
        raise RuntimeError(f"expected to claim {task_id}, got {tasks!r}")
    task = tasks[0]
    return TaskContext(task, "bench-o", queue.queue_name, task.lease_token or 0, output=queue)


async def rate(n: int, step: Callable[[int], Awaitable[object]]) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        await step(i)
    return n / (time.perf_counter() - t0)


async def raw_rates(bench: Bench, n: int) -> tuple[float, float, int]:
    """(XADD one at a time per s, XADD pipelined per s, MEMORY USAGE of n entries)."""
    key = bench.raw_key("stream")
    client = bench.admin
    one = await rate(n, lambda i: client.xadd(key, {"a": "1", "k": "text", "t": f"token {i} "}))
    memory = int(await client.memory_usage(key, samples=0) or 0)
    await client.delete(key)
    t0 = time.perf_counter()
    async with client.pipeline(transaction=False) as pipe:
        for i in range(n):
            pipe.xadd(key, {"a": "1", "k": "text", "t": f"token {i} "})
        await pipe.execute()
    piped = n / (time.perf_counter() - t0)
    await client.delete(key)
    return one, piped, memory


async def raw_latency(bench: Bench, n: int) -> list[float]:
    """XADD -> XREAD BLOCK on a second connection, `n` entries 1 ms apart."""
    key = bench.raw_key("latency")
    reader_client = Redis.from_url(bench.url)
    sent: dict[str, float] = {}
    got: list[float] = []

    async def reader() -> None:
        position = "0-0"
        while len(got) < n:
            reply = await reader_client.xread({key: position}, count=1_000, block=1_000)
            for _, entries in reply or ():
                for entry_id, fields in entries:
                    got.append(time.perf_counter() - sent[fields[b"t"].decode()])
                    position = entry_id

    try:
        task = asyncio.create_task(reader())
        await asyncio.sleep(0.05)
        for i in range(n):
            sent[str(i)] = time.perf_counter()
            await bench.admin.xadd(key, {"t": str(i)})
            await asyncio.sleep(LATENCY_GAP_S)
        await asyncio.wait_for(task, 30)
    finally:
        await reader_client.aclose()
        await bench.admin.delete(key)
    return got


async def engine_latency(
    queue: RedisTaskQueue, reader_queue: RedisTaskQueue, n: int
) -> list[float]:
    ctx = await claimed_context(queue, "o-latency")
    sent: dict[str, float] = {}
    got: list[float] = []

    async def reader() -> None:
        async for chunk in reader_queue.stream_output("o-latency"):
            if chunk.kind == "text":
                got.append(time.perf_counter() - sent[chunk.text])
            if len(got) == n:
                return

    task = asyncio.create_task(reader())
    await asyncio.sleep(0.05)
    for i in range(n):
        sent[str(i)] = time.perf_counter()
        await ctx.emit(str(i))
        await asyncio.sleep(LATENCY_GAP_S)
    await asyncio.wait_for(task, 30)
    return got


async def scenario_o(bench: Bench) -> Row:
    n, n_latency = counts(bench)
    raw_one, raw_piped, raw_memory = await raw_rates(bench, n)
    raw_lat = await raw_latency(bench, n_latency)
    async with bench.queue() as queue, bench.queue() as reader_queue:
        seq_ctx = await claimed_context(queue, "o-sequential")
        one = await rate(n, lambda i: seq_ctx.emit(f"token {i} "))
        stream = queue.keys_for("o-sequential").output("o-sequential")
        entries = int(await bench.admin.xlen(stream))
        memory = int(await bench.admin.memory_usage(stream, samples=0) or 0)
        con_ctx = await claimed_context(queue, "o-concurrent")
        t0 = time.perf_counter()
        await asyncio.gather(*(con_ctx.emit(f"token {i} ") for i in range(n)))
        grouped = n / (time.perf_counter() - t0)
        con_stream = queue.keys_for("o-concurrent").output("o-concurrent")
        if int(await bench.admin.xlen(con_stream)) != n or entries != n:
            raise RuntimeError("an emitted entry is missing from its stream")
        lat = await engine_latency(queue, reader_queue, n_latency)
    await clear_keys(bench.admin, bench.queue_name)
    p50, p99 = percentile(lat, 50) * 1e3, percentile(lat, 99) * 1e3
    raw_p50, raw_p99 = percentile(raw_lat, 50) * 1e3, percentile(raw_lat, 99) * 1e3
    return Row(
        key="O",
        name=f"task output stream: emit, {n:,} entries",
        measured=f"{one:,.0f}/s one by one, {grouped:,.0f}/s {n:,} concurrent;"
        f" to reader p50 {p50:.2f} ms, p99 {p99:.2f} ms; {memory / 1e6:.2f} MB",
        baseline=f"XADD {raw_one:,.0f}/s, pipelined {raw_piped:,.0f}/s;"
        f" XREAD p50 {raw_p50:.2f} ms, p99 {raw_p99:.2f} ms; {raw_memory / 1e6:.2f} MB",
        ratio=f"{one / raw_one:.2f}x, {grouped / raw_piped:.2f}x; mem {memory / raw_memory:.2f}x",
        data={
            "n": n,
            "emits_per_s_sequential": one,
            "emits_per_s_concurrent": grouped,
            "latency_n": n_latency,
            "latency_p50_ms": p50,
            "latency_p99_ms": p99,
            "latency_max_ms": max(lat) * 1e3,
            "stream_entries": entries,
            "stream_bytes": memory,
            "raw_xadd_per_s": raw_one,
            "raw_xadd_pipelined_per_s": raw_piped,
            "raw_latency_p50_ms": raw_p50,
            "raw_latency_p99_ms": raw_p99,
            "raw_stream_bytes": raw_memory,
        },
    )
