"""Large payloads and results (claim-check): stored once in a string key of their own,
written with the task, fetched with the claim and by get_task, deleted with the task."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from tests.support.dashboard import dashboard_settings, drop_prefix, serve
from tests.support.processes import (
    ROOT,
    WorkerProcesses,
    agentic_argv,
    agentic_env,
    eventually,
    ledger_lines,
    wait_exit,
    worker_processes,
)
from utils.redis_queue import PayloadTooLarge, RedisTaskQueue, TaskState, Worker
from utils.redis_queue.handlers import HandlerRegistry, TaskContext
from utils.redis_queue.queue import produce

QueueFactory = Callable[..., RedisTaskQueue]
pytestmark = pytest.mark.timeout(120)

MIB = 1024 * 1024


def _data(size: int, seed: str = "x") -> str:
    """`size` characters of ASCII that do not repeat in 64-byte steps."""
    unit = hashlib.sha256(seed.encode()).hexdigest()  # 64 characters
    return (unit * (size // 64 + 1))[:size]


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def _keys_of(raw: Redis, queue: RedisTaskQueue, task_id: str) -> list[str]:
    """Every key in the queue's namespace that names `task_id` (SCAN, not a guess)."""
    pattern = f"{queue.layout.prefix}:{{{queue.queue_name}*}}:*{task_id}*"
    return sorted([k.decode() async for k in raw.scan_iter(match=pattern, count=1000)])


async def _digest(ctx: TaskContext) -> Any:
    data = str(ctx.payload["data"])
    out: dict[str, Any] = {"sha256": _sha(data), "attempt": ctx.attempt}
    if ctx.payload.get("echo"):
        out["data"] = data
    return out


REGISTRY = HandlerRegistry({"digest": _digest})


async def test_10_mib_payload_and_result_round_trip_through_blob_keys(
    queue: RedisTaskQueue, raw_redis: Redis
) -> None:
    data = _data(10 * MIB)
    await queue.enqueue("big", "digest", {"data": data, "echo": True})
    keys = queue.keys_for("big")
    payload_key, result_key = keys.blob("big", "payload"), keys.blob("big", "result")
    # Stored once, as one string; the hash holds a reference, not 163,841 chunks.
    assert await raw_redis.type(payload_key) == b"string"
    size = await raw_redis.strlen(payload_key)
    assert size == len(data) + len('{"data":"","echo":true}')
    fields = await raw_redis.hgetall(keys.task("big"))
    assert fields[b"payload.blob"] == str(size).encode()
    assert b"payload" not in fields and b"payload.1" not in fields and len(fields) < 10
    assert await raw_redis.memory_usage(keys.task("big")) < 512  # type: ignore[operator]

    stats = await Worker(queue, REGISTRY, burst=True).run()
    assert stats.done == 1
    assert await raw_redis.type(result_key) == b"string"
    fields = await raw_redis.hgetall(keys.task("big"))
    assert int(fields[b"result.blob"]) == await raw_redis.strlen(result_key) > 10 * MIB
    assert b"result" not in fields and b"result.1" not in fields

    task = await queue.get_task("big")
    assert task is not None and task.state == TaskState.COMPLETED
    assert task.payload["data"] == data
    assert task.result == {"sha256": _sha(data), "attempt": 1, "data": data}
    assert task.blobs == {"payload": size, "result": int(fields[b"result.blob"])}
    assert (await queue.wait_for_result("big", timeout=5))["data"] == data

    # A page or a listing reads the reference and the size, not 20 MiB.
    light = await queue.get_task("big", blobs=False)
    assert light is not None and light.payload == {} and light.result is None
    assert light.blobs == task.blobs

    assert await queue.clear_completed(older_than_seconds=0) == 1
    assert await _keys_of(raw_redis, queue, "big") == []


@pytest.mark.parametrize("size", [1024, 16 * 1024, 64 * 1024, MIB])
async def test_memory_per_pending_task_stays_near_its_payload_size(
    make_queue: QueueFactory, raw_redis: Redis, size: int
) -> None:
    queue = make_queue()  # the default threshold: 64 KiB
    await queue.connect()
    count = 20
    await queue.enqueue_many(
        {"task_id": f"m{i}", "task_type": "t", "payload": {"d": _data(size, str(i))}}
        for i in range(count)
    )
    used = 0
    for i in range(count):
        keys = queue.keys_for(f"m{i}")
        for key in (keys.task(f"m{i}"), keys.blob(f"m{i}", "payload")):
            used += await raw_redis.memory_usage(key) or 0
    per_task = used / count
    # Was 2.36 MB for 1 MiB (16,388 hash fields of 64 B). Now: the payload's bytes, the
    # allocator's rounding (at most 25 %) and a few hundred bytes of task record.
    assert per_task <= size * 1.25 + 600, (size, per_task)
    task = await queue.get_task("m7")
    assert task is not None and task.payload == {"d": _data(size, "7")}


async def test_threshold_is_exclusive_and_configurable(
    make_queue: QueueFactory, raw_redis: Redis
) -> None:
    queue = make_queue(blob_threshold_bytes=100)
    await queue.connect()
    at = {"d": "a" * (100 - len('{"d":""}'))}  # exactly 100 bytes of JSON: inline
    await queue.enqueue("at", "t", at)
    await queue.enqueue("over", "t", {"d": "a" * 93})  # 101 bytes: claim-check
    keys = queue.keys_for("at")
    assert not await raw_redis.exists(keys.blob("at", "payload"))
    assert await raw_redis.hexists(keys.task("at"), "payload")
    assert await raw_redis.strlen(keys.blob("over", "payload")) == 101
    assert not await raw_redis.hexists(keys.task("over"), "payload")
    for task_id, payload in (("at", at), ("over", {"d": "a" * 93})):
        task = await queue.get_task(task_id)
        assert task is not None and task.payload == payload
    # An enqueue of an existing id returns the task as stored, its blob included.
    again = await queue.enqueue("over", "t", {"other": 1})
    assert again.payload == {"d": "a" * 93}
    assert await raw_redis.strlen(keys.blob("over", "payload")) == 101


async def test_payload_above_max_is_refused_and_nothing_is_written(
    make_queue: QueueFactory, raw_redis: Redis
) -> None:
    queue = make_queue(max_payload_bytes=2 * MIB, blob_threshold_bytes=1024)
    await queue.connect()
    await queue.enqueue("before", "t", {"d": _data(4096)})
    before = await _keys_of(raw_redis, queue, "")
    with pytest.raises(PayloadTooLarge):
        await queue.enqueue("huge", "t", {"d": _data(2 * MIB)})
    with pytest.raises(PayloadTooLarge):  # a batch is refused whole
        await queue.enqueue_many(
            [
                {"task_id": "ok", "task_type": "t", "payload": {"d": _data(2048)}},
                {"task_id": "huge2", "task_type": "t", "payload": {"d": _data(3 * MIB)}},
            ]
        )
    assert await _keys_of(raw_redis, queue, "") == before


async def test_dead_lettered_blob_task_is_purged_with_its_blob(
    make_queue: QueueFactory, raw_redis: Redis
) -> None:
    queue = make_queue(blob_threshold_bytes=1024, max_retries=0)
    await queue.connect()

    async def broken(ctx: TaskContext) -> Any:
        raise RuntimeError(f"no good: {len(ctx.payload['d'])}")

    await queue.enqueue("dead", "broken", {"d": _data(50_000)})
    await Worker(queue, HandlerRegistry({"broken": broken}), burst=True).run()
    task = await queue.get_task("dead")
    assert task is not None and task.state == TaskState.DEAD_LETTER
    assert task.error is not None and "no good: 50000" in task.error
    assert task.payload == {"d": _data(50_000)}
    # Retried from the DLQ, the blob is still there for the next attempt.
    await queue.retry_dlq_task("dead")
    await Worker(queue, HandlerRegistry({"broken": broken}), burst=True).run()
    assert await raw_redis.exists(queue.keys_for("dead").blob("dead", "payload"))
    assert await queue.purge_dlq() == 1
    assert await _keys_of(raw_redis, queue, "dead") == []


async def test_cleanup_by_completion_trim_deletes_result_blobs(
    make_queue: QueueFactory, raw_redis: Redis
) -> None:
    # Every 10th completion deletes finished tasks past task_ttl_seconds (the trim in
    # include/settle.lua): their blob keys go with them.
    queue = make_queue(blob_threshold_bytes=200, task_ttl_seconds=1)
    await queue.connect()
    await queue.enqueue_many(
        {"task_id": f"r{i}", "task_type": "digest", "payload": {"data": _data(300), "echo": True}}
        for i in range(9)
    )
    await Worker(queue, REGISTRY, burst=True).run()
    assert len(await _keys_of(raw_redis, queue, "blob:r")) == 18  # payloads and results
    await raw_redis.zadd(  # age them past the TTL
        queue.keys.completed, {f"r{i}": 1 for i in range(9)}
    )
    await queue.enqueue("tenth", "digest", {"data": "small"})
    await Worker(queue, REGISTRY, burst=True).run()
    assert await _keys_of(raw_redis, queue, "blob:") == []
    assert await raw_redis.exists(queue.keys.task("tenth"))


async def test_partitioned_queue_keeps_each_blob_in_its_tasks_slot(
    make_queue: QueueFactory, raw_redis: Redis
) -> None:
    queue = make_queue(partitions=4, blob_threshold_bytes=1024)
    await queue.connect()
    ids = [f"p{i}" for i in range(40)]
    await queue.enqueue_many(
        {"task_id": i, "task_type": "digest", "payload": {"data": _data(5000, i), "echo": True}}
        for i in ids
    )
    for task_id in ids:
        keys = queue.keys_for(task_id)
        slot = key_slot(keys.task(task_id).encode())
        assert key_slot(keys.blob(task_id, "payload").encode()) == slot
        assert await raw_redis.strlen(keys.blob(task_id, "payload")) > 5000
    stats = await Worker(queue, REGISTRY, concurrency=8, burst=True).run()
    assert stats.done == 40
    for task_id in ids:
        task = await queue.get_task(task_id)
        assert task is not None and task.result["sha256"] == _sha(_data(5000, task_id))
        assert task.result["data"] == _data(5000, task_id)
    assert await queue.clear_completed(older_than_seconds=0) == 40
    left = await _keys_of(raw_redis, queue, "")
    assert [k for k in left if ":blob:" in k or ":task:" in k] == [], left


async def test_missing_blob_is_dead_lettered_as_corrupt_not_handed_out(
    make_queue: QueueFactory, raw_redis: Redis
) -> None:
    queue = make_queue(blob_threshold_bytes=100)
    await queue.connect()
    await queue.enqueue("lost", "digest", {"data": _data(500)})
    await raw_redis.delete(queue.keys_for("lost").blob("lost", "payload"))
    ran: list[str] = []

    async def record(ctx: TaskContext) -> None:
        ran.append(ctx.task_id)

    await Worker(queue, HandlerRegistry({"digest": record}), burst=True).run()
    assert ran == []
    task = await queue.get_task("lost", blobs=False)
    assert task is not None and task.state == TaskState.DEAD_LETTER
    assert task.error is not None and "claim-check" in task.error


@pytest.fixture
def workers(redis_url: str, queue_name: str) -> Iterator[WorkerProcesses]:
    with worker_processes(redis_url, queue_name) as procs:
        yield procs


async def test_blob_payload_survives_a_killed_worker_and_is_deleted_with_its_task(
    queue: RedisTaskQueue, raw_redis: Redis, workers: WorkerProcesses, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    data = _data(3 * MIB)
    payload = {"data": data, "sleep_first": True, "ledger": str(ledger)}
    await queue.enqueue("crash", "digest", payload)
    victim = workers.start(lease=1.0)

    async def started() -> bool:
        return any(line[:2] == ["start", "crash"] for line in ledger_lines(ledger))

    await eventually(started)
    os.killpg(victim.pid, signal.SIGKILL)  # kill -9, mid-task
    await wait_exit(victim, 5)
    blob_key = queue.keys_for("crash").blob("crash", "payload")
    assert await raw_redis.strlen(blob_key) > 3 * MIB  # still there for the next attempt
    rescuer = workers.start(lease=1.0)
    result = await queue.wait_for_result("crash", timeout=30)
    assert result == {"sha256": _sha(data), "attempt": 2, "pid": rescuer.pid}
    task = await queue.get_task("crash")
    assert task is not None and task.lease_losses == 1 and task.payload == payload
    assert await queue.clear_completed(older_than_seconds=0) == 1
    assert await _keys_of(raw_redis, queue, "crash") == []


async def test_task_show_prints_the_size_and_key_unless_asked_for_the_blob(
    make_queue: QueueFactory, redis_url: str, queue_name: str
) -> None:
    queue = make_queue(blob_threshold_bytes=1000)
    await queue.connect()
    data = _data(200_000)
    await queue.enqueue("shown", "t", {"data": data})
    key = queue.keys_for("shown").blob("shown", "payload")
    env = agentic_env(redis_url, queue_name, AGENTIC_BLOB_THRESHOLD_BYTES="1000")

    def agentic(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            agentic_argv(*args), cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
        )

    brief = agentic("task", "show", "shown")
    assert brief.returncode == 0, brief.stderr
    assert f"claim-check: 200,011 bytes in {key}" in brief.stdout and data not in brief.stdout
    doc = json.loads(agentic("task", "show", "shown", "--json").stdout)
    assert doc["blobs"] == {"payload": 200_011} and doc["blob_keys"] == {"payload": key}
    whole = json.loads(agentic("task", "show", "shown", "--json", "--blobs").stdout)
    assert whole["payload"] == {"data": data}


async def test_dashboard_task_page_shows_a_reference_not_the_blob(
    tmp_path: Path, redis_url: str
) -> None:
    config = dashboard_settings(tmp_path, redis_url)
    queue = RedisTaskQueue.from_settings(config)
    data = _data(1 * MIB)
    try:
        async with queue:
            await queue.enqueue("paged", "t", {"data": data})
            key = queue.keys_for("paged").blob("paged", "payload")
            async with (
                serve(config) as url,
                httpx.AsyncClient(base_url=url, timeout=10) as site,
            ):
                api = (await site.get("/api/queues/jobs/tasks/paged")).json()
                page = await site.get("/queues/jobs/tasks/paged")
        assert api["blobs"] == {"payload": len(data) + 11}
        assert api["blob_keys"] == {"payload": key} and api["payload"] == {}
        assert page.status_code == 200 and len(page.text) < 100_000
        assert f"{len(data) + 11:,} bytes in <code>{key}</code>" in page.text
    finally:
        await drop_prefix(redis_url, config.key_prefix)


async def test_delete_purge_and_a_debounce_replacement_remove_blob_keys(
    make_queue: QueueFactory, raw_redis: Redis
) -> None:
    queue = make_queue(partitions=3, blob_threshold_bytes=100)
    await queue.connect()
    await queue.enqueue_many(
        {"task_id": f"d{i}", "task_type": "t", "payload": {"d": _data(1000, str(i))}}
        for i in range(30)
    )
    assert len(await _keys_of(raw_redis, queue, "blob:d")) == 30
    await queue.delete_task("d0")
    assert await _keys_of(raw_redis, queue, "d0") == []
    assert await queue.purge("pending") == 29
    assert await _keys_of(raw_redis, queue, "blob:") == []
    # A debounced enqueue replaces the held task: its payload blob is the last one.
    # (On a partitioned queue the id may get a suffix: the returned one is used.)
    first = await queue.enqueue("deb", "t", {"d": _data(500, "a")}, debounce=60, unique_key="k")
    held = await queue.enqueue("deb", "t", {"d": _data(800, "b")}, debounce=60, unique_key="k")
    assert held.task_id == first.task_id
    blob_key = queue.keys_for(held.task_id).blob(held.task_id, "payload")
    assert await raw_redis.strlen(blob_key) == 808
    task = await queue.get_task(held.task_id)
    assert task is not None and task.payload == {"d": _data(800, "b")}
    await queue.delete_task(held.task_id)
    left = await _keys_of(raw_redis, queue, "")
    assert [k for k in left if ":blob:" in k or ":task:" in k] == [], left


async def test_enqueue_many_sends_at_most_bulk_bytes_of_payload_per_call(
    make_queue: QueueFactory, raw_redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Redis refuses a command past client-query-buffer-limit (1 GB): a batch of large
    # payloads goes in several calls. Scaled down here: 10 KB a call.
    monkeypatch.setattr(produce, "BULK_BYTES", 10_000)
    queue = make_queue(blob_threshold_bytes=1000)
    await queue.connect()

    async def evalsha_calls() -> int:
        stats = await raw_redis.info("commandstats")
        return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))

    before = await evalsha_calls()
    sent = await queue.enqueue_many(
        {"task_id": f"c{i}", "task_type": "t", "payload": {"d": _data(2000, str(i))}}
        for i in range(20)
    )
    assert [t.task_id for t in sent] == [f"c{i}" for i in range(20)]
    assert await evalsha_calls() - before == 5  # 4 x 2,008 bytes fit in 10,000
    alone = await queue.enqueue_many(
        [{"task_id": "huge", "task_type": "t", "payload": {"d": _data(30_000)}}]
    )
    assert alone[0].task_id == "huge" and await evalsha_calls() - before == 6
    assert len(await _keys_of(raw_redis, queue, "blob:")) == 21
