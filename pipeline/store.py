"""Where run state lives: in memory (EnhancedPipelineManager) or in Redis
(DistributedPipelineManager), behind one small interface.

In Redis, next to the queue's keys (utils/redis_queue/keys.py):

    run:<id>        hash   state (the RunState JSON), cancel ("1" once requested)
    run_lock:<id>   string the manager driving the run, with a TTL it keeps renewing
    runs            zset   every run id by creation time (ms), for `list`
    active_runs     set    runs not ended: what a restarted manager resumes
"""

from __future__ import annotations

from typing import Protocol

from pydantic import ValidationError
from redis.exceptions import WatchError

from utils.redis_queue import QueueError, RedisTaskQueue
from utils.redis_queue.connection import redis_errors

from .runs import RunState

__all__ = ["MemoryRunStore", "RedisRunStore", "RunStore", "RunStoreError"]


class RunStoreError(QueueError):
    """A stored run that cannot be read back (corrupt or from an incompatible version)."""


class RunStore(Protocol):
    async def save(self, run: RunState) -> None: ...
    async def load(self, run_id: str) -> RunState | None: ...
    async def recent(self, limit: int) -> list[RunState]: ...
    async def active_ids(self) -> list[str]: ...
    async def request_cancel(self, run_id: str) -> None: ...
    async def cancel_requested(self, run_id: str) -> bool: ...
    async def acquire(self, run_id: str, owner: str, ttl_ms: int) -> bool: ...
    async def renew(self, run_id: str, owner: str, ttl_ms: int) -> bool: ...
    async def release(self, run_id: str, owner: str) -> None: ...


class MemoryRunStore:
    """Run state of one process: gone when it exits."""

    def __init__(self) -> None:
        self._runs: dict[str, str] = {}
        self._cancel: set[str] = set()
        self._owners: dict[str, str] = {}

    async def save(self, run: RunState) -> None:
        self._runs[run.run_id] = run.model_dump_json()

    async def load(self, run_id: str) -> RunState | None:
        raw = self._runs.get(run_id)
        return None if raw is None else RunState.model_validate_json(raw)

    async def recent(self, limit: int) -> list[RunState]:
        runs = [RunState.model_validate_json(raw) for raw in self._runs.values()]
        return sorted(runs, key=lambda r: r.created_at, reverse=True)[:limit]

    async def active_ids(self) -> list[str]:
        return [r.run_id for r in await self.recent(len(self._runs)) if not r.status.is_final]

    async def request_cancel(self, run_id: str) -> None:
        self._cancel.add(run_id)

    async def cancel_requested(self, run_id: str) -> bool:
        return run_id in self._cancel

    async def acquire(self, run_id: str, owner: str, ttl_ms: int) -> bool:
        return self._owners.setdefault(run_id, owner) == owner

    async def renew(self, run_id: str, owner: str, ttl_ms: int) -> bool:
        return self._owners.get(run_id) == owner

    async def release(self, run_id: str, owner: str) -> None:
        if self._owners.get(run_id) == owner:
            del self._owners[run_id]


class RedisRunStore:
    """Run state in the Redis of `queue` (connected), under the queue's keys."""

    def __init__(self, queue: RedisTaskQueue, *, ttl_seconds: int = 7 * 86400) -> None:
        self._queue = queue
        self._keys = queue.keys
        self._ttl = ttl_seconds
        self._url = queue.redis_url

    async def save(self, run: RunState) -> None:
        key = self._keys.run(run.run_id)
        async with redis_errors(self._url):
            pipe = self._queue.redis.pipeline(transaction=True)
            pipe.hset(key, "state", run.model_dump_json())
            pipe.zadd(self._keys.runs, {run.run_id: int(run.created_at * 1000)})
            if run.status.is_final:
                pipe.srem(self._keys.active_runs, run.run_id)
                pipe.expire(key, self._ttl)
            else:
                pipe.sadd(self._keys.active_runs, run.run_id)
            await pipe.execute()

    async def load(self, run_id: str) -> RunState | None:
        async with redis_errors(self._url):
            raw = await self._queue.redis.hget(self._keys.run(run_id), "state")
        return None if raw is None else _decode(run_id, raw)

    async def recent(self, limit: int) -> list[RunState]:
        async with redis_errors(self._url):
            ids = [
                _text(i) for i in await self._queue.redis.zrevrange(self._keys.runs, 0, limit - 1)
            ]
            pipe = self._queue.redis.pipeline(transaction=False)
            for run_id in ids:
                pipe.hget(self._keys.run(run_id), "state")
            raws = await pipe.execute()
            expired = [i for i, raw in zip(ids, raws, strict=True) if raw is None]
            if expired:  # finished runs whose state outlived its TTL
                await self._queue.redis.zrem(self._keys.runs, *expired)
        return [_decode(i, raw) for i, raw in zip(ids, raws, strict=True) if raw is not None]

    async def active_ids(self) -> list[str]:
        async with redis_errors(self._url):
            members = await self._queue.redis.smembers(self._keys.active_runs)
        return sorted(_text(m) for m in members)

    async def request_cancel(self, run_id: str) -> None:
        async with redis_errors(self._url):
            await self._queue.redis.hset(self._keys.run(run_id), "cancel", "1")

    async def cancel_requested(self, run_id: str) -> bool:
        async with redis_errors(self._url):
            return await self._queue.redis.hget(self._keys.run(run_id), "cancel") == b"1"

    async def acquire(self, run_id: str, owner: str, ttl_ms: int) -> bool:
        key = self._keys.run_lock(run_id)
        async with redis_errors(self._url):
            if await self._queue.redis.set(key, owner, nx=True, px=ttl_ms):
                return True
            return await self._queue.redis.get(key) == owner.encode()

    async def renew(self, run_id: str, owner: str, ttl_ms: int) -> bool:
        return await self._if_owner(run_id, owner, ttl_ms)

    async def release(self, run_id: str, owner: str) -> None:
        await self._if_owner(run_id, owner, None)

    async def _if_owner(self, run_id: str, owner: str, ttl_ms: int | None) -> bool:
        """Renew (ttl_ms) or delete (None) the lock only while `owner` holds it."""
        key = self._keys.run_lock(run_id)
        async with redis_errors(self._url), self._queue.redis.pipeline() as pipe:
            try:
                await pipe.watch(key)
                if await pipe.get(key) != owner.encode():
                    return False
                pipe.multi()  # type: ignore[no-untyped-call]
                if ttl_ms is None:
                    pipe.delete(key)
                else:
                    pipe.set(key, owner, px=ttl_ms)
                await pipe.execute()
                return True
            except WatchError:  # taken over between the read and the write
                return False


def _decode(run_id: str, raw: bytes | str) -> RunState:
    try:
        return RunState.model_validate_json(raw)
    except ValidationError as exc:
        raise RunStoreError(
            f"run {run_id!r} is stored in a form this version cannot read: "
            f"{exc.error_count()} errors, first: {exc.errors()[0]['msg']}"
        ) from exc


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
