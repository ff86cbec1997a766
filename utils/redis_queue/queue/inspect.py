"""Inspecting: reading tasks, sizes and statistics, waiting for results, health."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.exceptions import OutOfMemoryError

from ...aio import raise_if_cancelled
from .. import codec, scripts
from ..connection import BLOCK_SLICE_SECONDS
from ..errors import ResultTimeout, TaskCancelled, TaskFailed, TaskNotFound
from ..keys import BLOB_NAMES, BlobName, validate_task_id
from ..models import RedisTask, TaskState
from ..new_task import check_seconds
from ..snapshot import QueueSnapshot, merge_snapshots
from .claim_check import collect_partition, fetch_blobs
from .client import MIN_BLOCK, QueueClient

__all__ = ["Inspector", "blob_names", "finished_result"]

RUNNING = object()  # finished_result(): the task has not finished yet


def finished_result(task_id: str, task: RedisTask | None) -> Any:
    """A finished task's result (its failure, cancel or absence raised), or RUNNING: what
    a wait for a result decides after each read (the async and the sync client's)."""
    if task is None:
        raise TaskNotFound(task_id)
    if task.state == TaskState.COMPLETED:
        return task.result
    if task.state == TaskState.CANCELLED:
        raise TaskCancelled(task_id, task.attempts)
    if task.state in (TaskState.DEAD_LETTER, TaskState.FAILED):
        raise TaskFailed(task_id, task.state, task.error, task.attempts)
    return RUNNING


def blob_names(fields: dict[str, str]) -> list[BlobName]:
    """The payload and result a task hash keeps in its blob keys (not in a BlobStore)."""
    return [n for n in BLOB_NAMES if f"{n}.blob" in fields and f"{n}.ext" not in fields]


class Inspector(QueueClient):
    async def get_task(self, task_id: str, *, blobs: bool = True) -> RedisTask | None:
        """The task as stored now, or None. A corrupt record raises QueueError. A payload
        or result stored claim-check is fetched too (one more round trip), unless `blobs`
        is False: then it stays in Redis (payload {}, result None) and RedisTask.blobs
        gives its size, which is what a page or a listing shows."""
        validate_task_id(task_id)
        async with self._command():
            flat = await self.redis.hgetall(self.keys_for(task_id).task(task_id))
        if blobs:
            flat = await self._with_blobs(task_id, flat)
        return self._decode(task_id, flat, whole=blobs)

    async def _with_blobs(self, task_id: str, flat: Any) -> Any:
        """A task hash (as read) with its claim-checked payload and result put back as the
        `payload` / `result` fields; {} when the task was deleted in between."""
        if not flat:
            return flat
        fields = codec.text_fields(flat)
        await fetch_blobs(self, task_id, fields)  # those in the queue's BlobStore
        names = blob_names(fields)
        if not names:
            return fields
        keys = self.keys_for(task_id)
        async with self._command():
            values = await self.redis.mget([keys.blob(task_id, name) for name in names])
            if None in values and not await self.redis.exists(keys.task(task_id)):
                return {}  # deleted with its blobs after the read above
        for name, value in zip(names, values, strict=True):
            if value is not None:
                fields[name] = codec.as_text(value)
        return fields

    async def collect_blobs(self) -> int:
        """Deletes from the queue's BlobStore the blobs of deleted tasks (the deleting
        scripts list them; deletions through this client and every settle collect them
        too). Returns how many keys were taken; 0 without a store."""
        total = 0
        for keys in self.layout.parts:
            total += await collect_partition(self, keys)
        return total

    async def wait_for_result(self, task_id: str, timeout: float = 30.0) -> Any:
        """Block (in Redis, no polling) until the task finishes; return its result.
        Raises TaskFailed (dead-lettered or failed), TaskCancelled, ResultTimeout or
        TaskNotFound."""
        validate_task_id(task_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + check_seconds("timeout", timeout)
        done_key = self.keys_for(task_id).done(task_id)
        task = await self.get_task(task_id)
        while True:
            result = finished_result(task_id, task)
            if result is not RUNNING:
                return result
            assert task is not None  # finished_result raised otherwise
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ResultTimeout(f"task {task_id!r} is still {task.state} after {timeout} s")
            # The done list is written in the same script as the final state, so a
            # finish between the read above and this wait is not missed. BLMOVE onto
            # itself leaves the token in place for every other waiter; the read that
            # follows it rides in the same pipeline, saving a round trip.
            wait = max(MIN_BLOCK, min(remaining, BLOCK_SLICE_SECONDS))
            async with self._blocking_command():
                try:
                    token, flat = await self._wait_done(task_id, wait, keep_token=True)
                except OutOfMemoryError:
                    # Redis refuses BLMOVE (it may write) when out of memory, not BLPOP.
                    # Taking the token is harmless: later waiters read the final state.
                    token, flat = await self._wait_done(task_id, wait, keep_token=False)
            raise_if_cancelled()  # a cancel redis-py swallowed ends the wait after one slice
            task = self._decode(task_id, await self._with_blobs(task_id, flat))
            if token is not None and task is not None and not TaskState(task.state).is_final:
                # A token left by an earlier task of the same id (deleted by hand): drop
                # it, or every later wait would return at once.
                async with self._command():
                    await self.redis.delete(done_key)

    async def _wait_done(self, task_id: str, wait: float, *, keep_token: bool) -> list[Any]:
        keys = self.keys_for(task_id)
        done_key = keys.done(task_id)
        async with self._blocking_client.pipeline(transaction=False) as pipe:
            if keep_token:
                pipe.blmove(done_key, done_key, wait)  # type: ignore[arg-type]
            else:
                pipe.blpop([done_key], wait)
            pipe.hgetall(keys.task(task_id))
            token, flat = await pipe.execute()
        return [token, flat]

    async def get_queue_size(self) -> dict[str, int]:
        """Task counts per state: pending, delayed, processing, completed, failed,
        cancelled and dlq."""
        return (await self._snapshot()).sizes

    async def get_statistics(self) -> dict[str, Any]:
        """Sizes, pending counts per priority and type, lifetime counters and the
        success rate (completed / finished, in percent; 100.0 before anything finished)."""
        snap = await self._snapshot()
        counters = snap.counters
        completed, failed = counters.get("completed", 0), counters.get("failed", 0)
        finished = completed + failed
        return {
            **snap.sizes,
            "pending_by_priority": snap.pending_by_priority,
            "pending_by_type": snap.pending_by_type,
            "total_enqueued": counters.get("enqueued", 0),
            "total_completed": completed,
            "total_failed": failed,
            "total_retried": counters.get("retried", 0),
            "total_dead_lettered": counters.get("dead_lettered", 0),
            "total_cancelled": counters.get("cancelled", 0),
            "total_reclaimed": counters.get("reclaimed", 0),
            "total_corrupt": counters.get("corrupt", 0),
            "success_rate": round(100.0 * completed / finished, 2) if finished else 100.0,
        }

    async def has_delayed(self) -> bool:
        """Whether any partition holds a delayed task (one ZCARD each, no script)."""
        async with self._command():
            for keys in self.layout.parts:
                if await self.redis.zcard(keys.delayed):
                    return True
        return False

    async def health_check(self) -> dict[str, Any]:
        """The seed's health check: never raises; 'unhealthy' with the error instead."""
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            async with self._command():
                await self.redis.ping()
            latency_ms = (loop.time() - started) * 1000
            stats = await self.get_statistics()
            return {
                "status": "healthy",
                "pending": stats["pending"],
                "processing": stats["processing"],
                "dlq_size": stats["dlq"],
                "success_rate": stats["success_rate"],
                "redis_url": self.url,
                "ping_ms": round(latency_ms, 3),
            }
        except Exception as exc:
            return {"status": "unhealthy", "error": str(exc), "redis_url": self.url}

    async def _snapshot(self) -> QueueSnapshot:
        parts = await asyncio.gather(*(self.run(scripts.sizes(keys)) for keys in self.layout.parts))
        return merge_snapshots([scripts.sizes_reply(reply) for reply in parts])
