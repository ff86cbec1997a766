"""Where run state lives: in memory (EnhancedPipelineManager) or in Redis
(DistributedPipelineManager), behind one small interface.

In Redis, next to the queue's keys (utils/redis_queue/keys.py):

    run:<id>        hash   state (the RunState JSON but its subtasks), s:<task id> (each
                           subtask's record, written only when it changes), cancel ("1")
    run_lock:<id>   string the manager driving the run, with a TTL it keeps renewing
    runs            zset   every run id by creation time (ms), for `list`
    run_decision:<id> list the approval decision of a run at its gate (JSON), or a cancel
    active_runs     set    runs not ended: what a restarted manager resumes
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Collection, Mapping
from typing import Any, ClassVar, Protocol

from pydantic import ValidationError
from redis.exceptions import WatchError

from utils.redis_queue import RedisTaskQueue
from utils.redis_queue.connection import BLOCK_SLICE_SECONDS

from .errors import RunOwnershipLost, RunStoreError
from .runs import RunState, SubtaskRecord

__all__ = ["MemoryRunStore", "RedisRunStore", "RunStore"]

log = logging.getLogger("agentic.pipeline")
KEEP_FINISHED_IN_MEMORY = 1000  # runs a MemoryRunStore keeps after they ended
CANCELLED: dict[str, Any] = {"decision": "cancelled"}  # a cancel, as an approval gate sees it


class RunStore(Protocol):
    durable: ClassVar[bool]  # whether a run outlives the process (can be resumed)

    async def save(self, run: RunState, owner: str, only: Collection[str] | None = None) -> None:
        """Save while `owner` holds the run's lock, else raise RunOwnershipLost: the run's
        header and, with `only`, just those subtask records (None: every one), so a save
        costs the same whether the run has 10 subtasks or 10,000."""

    async def load(self, run_id: str) -> RunState | None: ...
    async def recent(self, limit: int) -> list[RunState]: ...
    async def active_ids(self) -> list[str]: ...
    async def request_cancel(self, run_id: str) -> None: ...
    async def cancel_requested(self, run_id: str) -> bool: ...
    async def acquire(self, run_id: str, owner: str, ttl_ms: int) -> bool: ...
    async def renew(self, run_id: str, owner: str, ttl_ms: int) -> bool: ...
    async def release(self, run_id: str, owner: str) -> None: ...
    async def holder(self, run_id: str) -> tuple[str, float] | None:
        """The manager holding the run's lock and the seconds its lock has left."""
        ...

    async def decide(self, run_id: str, decision: dict[str, Any]) -> dict[str, Any]:
        """Record a run's approval decision unless one stands; returns the one standing."""
        ...

    async def await_decision(self, run_id: str, timeout: float | None) -> dict[str, Any] | None:
        """The run's decision, waited for up to `timeout` s (None: for ever); None if none
        came. It stays recorded, for a manager that resumes the run."""
        ...


class MemoryRunStore:
    """Run state of one process: gone when it exits."""

    durable: ClassVar[bool] = False

    def __init__(self) -> None:
        # header, subtask records, spec
        self._runs: dict[str, tuple[str, dict[str, str], str]] = {}
        self._cancel: set[str] = set()
        self._owners: dict[str, str] = {}
        self._decisions: dict[str, dict[str, Any]] = {}
        self._decided: dict[str, asyncio.Event] = {}

    async def save(self, run: RunState, owner: str, only: Collection[str] | None = None) -> None:
        if self._owners.get(run.run_id, owner) != owner:
            raise RunOwnershipLost(run.run_id)
        _, records, spec = self._runs.get(run.run_id, ("", {}, ""))
        records.update(_records(run, only))
        self._runs[run.run_id] = (_header(run), records, spec or _spec(run))
        if run.status.is_final and len(self._runs) > KEEP_FINISHED_IN_MEMORY:
            self._forget_oldest_finished()

    def _forget_oldest_finished(self) -> None:
        finished = [r for r in self._states() if r.status.is_final]
        for run in sorted(finished, key=lambda r: r.created_at)[:-KEEP_FINISHED_IN_MEMORY]:
            del self._runs[run.run_id]
            self._cancel.discard(run.run_id)
            self._decisions.pop(run.run_id, None)
            self._decided.pop(run.run_id, None)

    def _states(self) -> list[RunState]:
        return [_assemble(i, *stored) for i, stored in self._runs.items()]

    async def load(self, run_id: str) -> RunState | None:
        stored = self._runs.get(run_id)
        return None if stored is None else _assemble(run_id, *stored)

    async def recent(self, limit: int) -> list[RunState]:
        return sorted(self._states(), key=lambda r: r.created_at, reverse=True)[:limit]

    async def active_ids(self) -> list[str]:
        return [r.run_id for r in await self.recent(len(self._runs)) if not r.status.is_final]

    async def request_cancel(self, run_id: str) -> None:
        self._cancel.add(run_id)
        await self.decide(run_id, CANCELLED)  # wakes a run waiting at its approval gate

    async def cancel_requested(self, run_id: str) -> bool:
        return run_id in self._cancel

    async def decide(self, run_id: str, decision: dict[str, Any]) -> dict[str, Any]:
        standing = self._decisions.setdefault(run_id, decision)
        self._decided.setdefault(run_id, asyncio.Event()).set()
        return standing

    async def await_decision(self, run_id: str, timeout: float | None) -> dict[str, Any] | None:
        decided = self._decided.setdefault(run_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(decided.wait(), timeout)
        return self._decisions.get(run_id)

    async def acquire(self, run_id: str, owner: str, ttl_ms: int) -> bool:
        return self._owners.setdefault(run_id, owner) == owner

    async def renew(self, run_id: str, owner: str, ttl_ms: int) -> bool:
        return self._owners.get(run_id) == owner

    async def release(self, run_id: str, owner: str) -> None:
        if self._owners.get(run_id) == owner:
            del self._owners[run_id]

    async def holder(self, run_id: str) -> tuple[str, float] | None:
        owner = self._owners.get(run_id)
        return None if owner is None else (owner, float("inf"))


class RedisRunStore:
    """Run state in the Redis of `queue` (connected), under the queue's keys."""

    durable: ClassVar[bool] = True

    def __init__(self, queue: RedisTaskQueue, *, ttl_seconds: int = 7 * 86400) -> None:
        self._queue = queue
        self._keys = queue.keys
        self._ttl = ttl_seconds

    async def save(self, run: RunState, owner: str, only: Collection[str] | None = None) -> None:
        key, lock = self._keys.run(run.run_id), self._keys.run_lock(run.run_id)
        fields: dict[Any, Any] = {"state": _header(run), **_records(run, only)}
        if not run.spec_stored:
            fields[SPEC_FIELD] = _spec(run)
        async with self._queue.bounded(), self._queue.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(lock)  # fencing: no write once another manager took over
                    if await pipe.get(lock) != owner.encode():
                        raise RunOwnershipLost(run.run_id)
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.hset(key, mapping=fields)
                    pipe.zadd(self._keys.runs, {run.run_id: int(run.created_at * 1000)})
                    if run.status.is_final:
                        pipe.srem(self._keys.active_runs, run.run_id)
                        pipe.expire(key, self._ttl)
                    else:
                        pipe.sadd(self._keys.active_runs, run.run_id)
                    await pipe.execute()
                    run.spec_stored = True
                    return
                except WatchError:  # the lock changed meanwhile: look again
                    continue

    async def load(self, run_id: str) -> RunState | None:
        async with self._queue.bounded():
            raw = await self._queue.redis.hgetall(self._keys.run(run_id))
        return _from_hash(run_id, raw)

    async def recent(self, limit: int) -> list[RunState]:
        async with self._queue.bounded():
            ids = [
                _text(i) for i in await self._queue.redis.zrevrange(self._keys.runs, 0, limit - 1)
            ]
            pipe = self._queue.redis.pipeline(transaction=False)
            for run_id in ids:
                pipe.hgetall(self._keys.run(run_id))
            raws = await pipe.execute()
            expired = [i for i, raw in zip(ids, raws, strict=True) if not raw]
            if expired:  # finished runs whose state outlived its TTL
                await self._queue.redis.zrem(self._keys.runs, *expired)
        runs = []
        for run_id, raw in zip(ids, raws, strict=True):
            try:
                run = _from_hash(run_id, raw)
            except RunStoreError as exc:  # one bad record must not hide the others
                log.error("%s", exc)
                continue
            if run is not None:
                runs.append(run)
        return runs

    async def active_ids(self) -> list[str]:
        async with self._queue.bounded():
            members = await self._queue.redis.smembers(self._keys.active_runs)
        return sorted(_text(m) for m in members)

    async def request_cancel(self, run_id: str) -> None:
        async with self._queue.bounded():
            await self._queue.redis.hset(self._keys.run(run_id), "cancel", "1")
        await self.decide(run_id, CANCELLED)  # wakes a run waiting at its approval gate

    async def decide(self, run_id: str, decision: dict[str, Any]) -> dict[str, Any]:
        key = self._keys.run_decision(run_id)
        async with self._queue.bounded(), self._queue.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    standing = await pipe.lindex(key, 0)
                    if standing is not None:
                        return dict(json.loads(standing))
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.rpush(key, json.dumps(decision))
                    pipe.expire(key, self._ttl)
                    await pipe.execute()
                    return decision
                except WatchError:  # decided by someone else meanwhile: read theirs
                    continue

    async def await_decision(self, run_id: str, timeout: float | None) -> dict[str, Any] | None:
        # Blocks in Redis (no polling), a slice at a time; BLMOVE of the list onto itself
        # leaves the decision in place for a manager that resumes the run later.
        key = self._keys.run_decision(run_id)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        client = self._queue.blocking_redis
        while True:
            wait = BLOCK_SLICE_SECONDS if deadline is None else deadline - loop.time()
            if wait <= 0:
                return None
            async with self._queue.bounded(blocking=True):
                seconds = max(0.01, min(wait, BLOCK_SLICE_SECONDS))
                found = await client.blmove(key, key, seconds)  # type: ignore[arg-type]
            if found is not None:
                return dict(json.loads(found))

    async def cancel_requested(self, run_id: str) -> bool:
        async with self._queue.bounded():
            return await self._queue.redis.hget(self._keys.run(run_id), "cancel") == b"1"

    async def acquire(self, run_id: str, owner: str, ttl_ms: int) -> bool:
        key = self._keys.run_lock(run_id)
        async with self._queue.bounded():
            if await self._queue.redis.set(key, owner, nx=True, px=ttl_ms):
                return True
            return await self._queue.redis.get(key) == owner.encode()

    async def renew(self, run_id: str, owner: str, ttl_ms: int) -> bool:
        """Extend the lock; a lock that expired (an outage longer than its TTL) is taken
        again. False only when another manager holds it."""
        return await self._if_owner(run_id, owner, ttl_ms)

    async def release(self, run_id: str, owner: str) -> None:
        await self._if_owner(run_id, owner, None)

    async def holder(self, run_id: str) -> tuple[str, float] | None:
        key = self._keys.run_lock(run_id)
        async with self._queue.bounded(), self._queue.redis.pipeline(transaction=True) as pipe:
            pipe.get(key)
            pipe.pttl(key)
            owner, ttl_ms = await pipe.execute()
        if owner is None or ttl_ms < 0:
            return None
        return _text(owner), ttl_ms / 1000

    async def _if_owner(self, run_id: str, owner: str, ttl_ms: int | None) -> bool:
        """Renew (ttl_ms; also when the key is gone) or delete (None) the lock, unless
        another manager holds it."""
        key = self._keys.run_lock(run_id)
        async with self._queue.bounded(), self._queue.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                holder = await pipe.get(key)
                if holder != owner.encode() and (holder is not None or ttl_ms is None):
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


SUBTASK_FIELD = "s:"  # hash field of one subtask record: s:<task id>
SPEC_FIELD = "spec"  # hash field of the run's spec, written once


def _header(run: RunState) -> str:
    """What changes as a run goes: without its subtask records and its spec (each
    stored apart), so a save costs the same however wide the run."""
    return run.model_dump_json(exclude={"subtasks", "spec"})


def _spec(run: RunState) -> str:
    return run.spec.model_dump_json()


def _records(run: RunState, only: Collection[str] | None) -> dict[str, str]:
    """The subtask records to write, by hash field: `only` those (every one with None, or
    when the run was read in the old one-document form and has never been split)."""
    if run.stored_whole:
        only = None
    ids = run.subtasks.keys() if only is None else [i for i in only if i in run.subtasks]
    run.stored_whole = False
    return {SUBTASK_FIELD + i: run.subtasks[i].model_dump_json() for i in ids}


def _from_hash(run_id: str, raw: Mapping[Any, Any]) -> RunState | None:
    fields = {_text(k): v for k, v in raw.items()}
    header = fields.get("state")
    if header is None:
        return None
    records = {
        k[len(SUBTASK_FIELD) :]: _text(v) for k, v in fields.items() if k.startswith(SUBTASK_FIELD)
    }
    spec = fields.get(SPEC_FIELD)
    return _assemble(run_id, _text(header), records, "" if spec is None else _text(spec))


def _assemble(run_id: str, header: str, records: Mapping[str, str], spec: str = "") -> RunState:
    """A run from its header, its subtask records (in submission order) and its spec. A
    header that still holds its subtasks or its spec (the forms before they were kept
    apart) is read as it is."""
    run = _decode(run_id, header, spec)
    if run.subtasks:
        run.stored_whole = True  # its next save writes every record apart
    try:
        parsed = [SubtaskRecord.model_validate_json(text) for text in records.values()]
    except ValidationError as exc:
        raise RunStoreError(
            f"run {run_id!r} has a subtask record this version cannot read"
        ) from exc
    for record in sorted(parsed, key=lambda r: (r.submitted_at, r.task_id)):
        run.subtasks[record.task_id] = record
    return run


def _decode(run_id: str, raw: bytes | str, spec: str = "") -> RunState:
    try:
        if not spec:
            return RunState.model_validate_json(raw)
        document = json.loads(raw)
        document["spec"] = json.loads(spec)
        run = RunState.model_validate(document)
        run.spec_stored = True
        return run
    except ValidationError as exc:
        raise RunStoreError(
            f"run {run_id!r} is stored in a form this version cannot read: "
            f"{exc.error_count()} errors, first: {exc.errors()[0]['msg']}"
        ) from exc
    except (ValueError, TypeError) as exc:  # not JSON, or not an object
        raise RunStoreError(f"run {run_id!r} is stored in a form this version cannot read") from exc


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
