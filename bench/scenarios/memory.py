"""Scenario F: used_memory per pending task, against a plain LPUSH list and an
id-addressable SET + ZADD layout; and per completed task (kept for its result), with what
one task's keys cost by MEMORY USAGE."""

from __future__ import annotations

import gc
import json
from collections.abc import Awaitable, Callable
from typing import Any

from bench.harness.config import TASK_TYPE
from bench.harness.context import Bench, Row, clear_keys
from bench.harness.payloads import chunks, payload_bytes, task_dicts
from bench.harness.probe import used_memory
from bench.scenarios.common import warm_up
from bench.scenarios.targets import TARGET_F_BYTES
from utils.redis_queue import RedisTaskQueue, Settlement


async def memory_delta(bench: Bench, fill: Callable[[], Awaitable[None]]) -> float:
    """used_memory growth in bytes while `fill()` runs; the keys are deleted after."""
    gc.collect()
    before = await used_memory(bench.admin)
    await fill()
    after = await used_memory(bench.admin)
    await clear_keys(bench.admin, bench.queue_name)
    return float(after - before)


async def plain_lpush(bench: Bench, data: list[bytes]) -> None:
    key = bench.raw_key("memory")
    for chunk in chunks(data, bench.sizes.chunk):
        async with bench.admin.pipeline(transaction=False) as pipe:
            pipe.lpush(key, *chunk)
            await pipe.execute()


async def string_per_task(bench: Bench, specs: list[dict[str, Any]]) -> None:
    """arq's layout, as a lean id-addressable floor: SET <job key> <payload> + ZADD <id>."""
    zkey = bench.raw_key("pending")
    for chunk in chunks(specs, bench.sizes.chunk):
        async with bench.admin.pipeline(transaction=False) as pipe:
            for i, spec in enumerate(chunk):
                body = json.dumps(spec["payload"], separators=(",", ":"))
                pipe.set(bench.raw_key(f"task:{spec['task_id']}"), body)
                pipe.zadd(zkey, {spec["task_id"]: i})
            await pipe.execute()


async def sample_task_usage(bench: Bench, queue: RedisTaskQueue) -> dict[str, Any]:
    """MEMORY USAGE of one task hash and its fields, for the report."""
    pending = await queue.list_tasks("pending", limit=1)
    if not pending:
        return {}
    key = queue.keys.task(pending[0].task_id)
    fields = await bench.admin.hgetall(key)
    return {
        "task_hash_bytes": await bench.admin.memory_usage(key, samples=0),
        "task_hash_fields": len(fields),
        "task_hash_encoding": (await bench.admin.object("encoding", key)).decode(),
        "pending_zset_bytes": await bench.admin.memory_usage(
            queue.keys.pending(TASK_TYPE), samples=0
        ),
    }


async def complete_all(queue: RedisTaskQueue, specs: list[dict[str, Any]], chunk: int) -> str:
    """Enqueue, claim and complete every task (result: a small JSON number); returns one
    completed task's id."""
    for part in chunks(specs, chunk):
        await queue.enqueue_many(part)
    last = ""
    while (batch := await queue.claim_ready("f-worker", chunk)).tasks:
        await queue.settle_many(Settlement(t.task_id, t.lease_token, 1) for t in batch.tasks)
        last = batch.tasks[-1].task_id
    return last


async def completed_usage(bench: Bench, queue: RedisTaskQueue, task_id: str) -> dict[str, Any]:
    key = queue.keys.task(task_id)
    done = await bench.admin.memory_usage(queue.keys.done(task_id), samples=0)
    return {
        "completed_hash_bytes": await bench.admin.memory_usage(key, samples=0),
        "completed_hash_fields": len(await bench.admin.hgetall(key)),
        "done_list_bytes": done or 0,  # the result waiters' list, for DONE_TTL (60 s)
    }


async def scenario_f(bench: Bench) -> Row:
    n = bench.sizes.memory
    specs = task_dicts(n)
    sample: dict[str, Any] = {}
    async with bench.queue() as queue:
        await warm_up(bench, queue)

        async def fill_queue() -> None:
            for chunk in chunks(specs, bench.sizes.chunk):
                await queue.enqueue_many(chunk)
            sample.update(await sample_task_usage(bench, queue))

        engine = await memory_delta(bench, fill_queue) / n
    raw = [payload_bytes(i) for i in range(n)]
    floor = await memory_delta(bench, lambda: plain_lpush(bench, raw)) / n
    keyed = await memory_delta(bench, lambda: string_per_task(bench, specs)) / n
    async with bench.queue() as queue:
        await warm_up(bench, queue)

        async def fill_completed() -> None:
            last = await complete_all(queue, task_dicts(n), bench.sizes.chunk)
            sample.update(await completed_usage(bench, queue, last))

        completed = await memory_delta(bench, fill_completed) / n
    if sample.get("pending_zset_bytes"):
        sample["pending_zset_bytes_per_task"] = sample["pending_zset_bytes"] / n
    return Row(
        key="F",
        name="used_memory per pending task",
        measured=f"{engine:,.0f} B/task pending; {completed:,.0f} B/task completed",
        baseline=f"LPUSH {floor:,.0f} B; SET+ZADD {keyed:,.0f} B",
        ratio=f"{engine / floor:.1f}x",
        target=f"<= {TARGET_F_BYTES:,.0f} B",
        hit=engine <= TARGET_F_BYTES,
        data={
            "n": n,
            "bytes_per_task": engine,
            "completed_bytes_per_task": completed,
            "lpush_floor_bytes": floor,
            "set_zadd_floor_bytes": keyed,
            **sample,
        },
    )
