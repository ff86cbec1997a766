"""Claim-check through a user-supplied BlobStore (DirectoryBlobStore, a real one on disk):
the blob is put before the task is written, read back with the claim and by get_task,
and deleted from the store when its task is deleted, whichever way."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from utils.redis_queue import (
    BlobStore,
    DirectoryBlobStore,
    RedisTaskQueue,
    TaskState,
    Worker,
)
from utils.redis_queue.handlers import HandlerRegistry, TaskContext

QueueFactory = Callable[..., RedisTaskQueue]
pytestmark = pytest.mark.timeout(60)


def _data(size: int, seed: str = "x") -> str:
    unit = hashlib.sha256(seed.encode()).hexdigest()
    return (unit * (size // 64 + 1))[:size]


async def _echo(ctx: TaskContext) -> Any:
    return {"data": ctx.payload["data"], "attempt": ctx.attempt}


REGISTRY = HandlerRegistry({"echo": _echo})


async def _redis_keys(raw: Redis, queue: RedisTaskQueue, part: str) -> list[str]:
    pattern = f"{queue.layout.prefix}:{{{queue.queue_name}*}}:*{part}*"
    return sorted([k.decode() async for k in raw.scan_iter(match=pattern, count=1000)])


def _files(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if not p.name.startswith("."))


async def test_payload_and_result_go_to_the_store_and_leave_with_their_task(
    make_queue: QueueFactory, raw_redis: Redis, tmp_path: Path
) -> None:
    store = DirectoryBlobStore(tmp_path / "blobs")
    assert isinstance(store, BlobStore)
    queue = make_queue(blob_threshold_bytes=1000, blob_store=store)
    await queue.connect()
    data = _data(2 * 1024 * 1024)
    await queue.enqueue("big", "echo", {"data": data})
    keys = queue.keys_for("big")
    fields = await raw_redis.hgetall(keys.task("big"))
    assert fields[b"payload.ext"] == keys.blob("big", "payload").encode()
    assert int(fields[b"payload.blob"]) == len(data) + len('{"data":""}')
    assert b"payload" not in fields
    assert await _redis_keys(raw_redis, queue, "blob") == []  # nothing of it in Redis
    assert len(_files(tmp_path / "blobs")) == 1

    await Worker(queue, REGISTRY, burst=True).run()
    task = await queue.get_task("big")
    assert task is not None and task.state == TaskState.COMPLETED
    assert task.payload == {"data": data} and task.result == {"data": data, "attempt": 1}
    assert set(task.blobs) == {"payload", "result"}
    assert len(_files(tmp_path / "blobs")) == 2
    assert await queue.wait_for_result("big", timeout=5) == {"data": data, "attempt": 1}

    assert await queue.clear_completed(older_than_seconds=0) == 1
    assert _files(tmp_path / "blobs") == []
    assert await _redis_keys(raw_redis, queue, "big") == []
    assert not await raw_redis.exists(keys.blob_gc)


async def test_deleted_purged_and_trimmed_tasks_take_their_store_blobs(
    make_queue: QueueFactory, raw_redis: Redis, tmp_path: Path
) -> None:
    store = DirectoryBlobStore(tmp_path)
    queue = make_queue(partitions=3, blob_threshold_bytes=100, blob_store=store, task_ttl_seconds=1)
    await queue.connect()
    await queue.enqueue_many(
        {"task_id": f"q{i}", "task_type": "held", "payload": {"data": _data(500, str(i))}}
        for i in range(20)
    )
    assert len(_files(tmp_path)) == 20
    await queue.delete_task("q0")
    assert len(_files(tmp_path)) == 19
    assert await queue.purge("pending") == 19
    assert _files(tmp_path) == []

    # The completion trim (every 10th completion deletes finished tasks past their TTL)
    # runs inside a settle: the worker's settle collects what it deleted.
    await queue.enqueue_many(
        {"task_id": f"t{i}", "task_type": "echo", "payload": {"data": _data(300, str(i))}}
        for i in range(12)
    )
    await Worker(queue, REGISTRY, burst=True).run()
    assert len(_files(tmp_path)) == 24  # payloads and results
    for keys in queue.layout.parts:  # age them past the TTL
        ids = [m.decode() for m in await raw_redis.zrange(keys.completed, 0, -1)]
        if ids:
            await raw_redis.zadd(keys.completed, dict.fromkeys(ids, 1))
    await queue.enqueue_many(
        {"task_id": f"n{i}", "task_type": "echo", "payload": {"data": "small"}} for i in range(30)
    )
    await Worker(queue, REGISTRY, burst=True).run()
    assert _files(tmp_path) == []
    for keys in queue.layout.parts:
        assert not await raw_redis.exists(keys.blob_gc)


class FlakyStore(DirectoryBlobStore):
    """A directory store whose deletes fail while `down` is set."""

    down = False

    async def delete(self, keys: Sequence[str]) -> None:
        if self.down:
            raise OSError("store unavailable")
        await super().delete(keys)


async def test_a_failed_store_delete_is_retried_by_the_next_collection(
    make_queue: QueueFactory, raw_redis: Redis, tmp_path: Path
) -> None:
    store = FlakyStore(tmp_path)
    queue = make_queue(blob_threshold_bytes=100, blob_store=store)
    await queue.connect()
    await queue.enqueue("gone", "held", {"data": _data(500)})
    store.down = True
    with pytest.raises(OSError):
        await queue.delete_task("gone")  # deleted in Redis; its blob key waits in blob_gc
    assert await raw_redis.lrange(queue.keys.blob_gc, 0, -1) == [
        queue.keys.blob("gone", "payload").encode()
    ]
    assert len(_files(tmp_path)) == 1
    store.down = False
    assert await queue.collect_blobs() == 1
    assert _files(tmp_path) == [] and not await raw_redis.exists(queue.keys.blob_gc)


async def test_a_blob_missing_from_the_store_dead_letters_the_task_as_corrupt(
    make_queue: QueueFactory, tmp_path: Path
) -> None:
    store = DirectoryBlobStore(tmp_path)
    queue = make_queue(blob_threshold_bytes=100, blob_store=store)
    await queue.connect()
    await queue.enqueue("lost", "echo", {"data": _data(500)})
    await store.delete([queue.keys.blob("lost", "payload")])
    await Worker(queue, REGISTRY, burst=True).run()
    task = await queue.get_task("lost", blobs=False)
    assert task is not None and task.state == TaskState.DEAD_LETTER
    assert task.error is not None and "claim-check" in task.error
