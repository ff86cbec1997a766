"""RedisTaskQueue: the producer, consumer and admin API of one queue.

Every state transition is one Lua script (lua/*.lua) that checks everything before its
first write and reads time from the Redis server. This class validates input, encodes
JSON, calls the scripts and turns their replies into RedisTask objects and exceptions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from redis.asyncio import Redis
from redis.exceptions import RedisError

from . import codec
from .connection import (
    BLOCK_SLICE_SECONDS,
    make_client,
    mask_url,
    redis_errors,
    translate_error,
)
from .errors import (
    BulkEnqueueError,
    NotConnected,
    QueueError,
    ResultTimeout,
    TaskCancelled,
    TaskFailed,
    TaskNotFound,
    raise_for_code,
)
from .keys import QueueKeys, validate_queue_name, validate_task_id, validate_task_type
from .models import ClaimBatch, RedisTask, RetryPolicy, Settlement, TaskPriority, TaskState
from .scripts import ScriptCall, Scripts
from .snapshot import QueueSnapshot, ids_in_state, parse_sizes
from .spec import TaskSpec, build_spec, check_seconds, enqueued_task

__all__ = ["RedisTaskQueue"]

if TYPE_CHECKING:
    from utils.config import Settings

_BATCH = 500  # items per call of the chunked admin scripts
_BULK = 1000  # tasks per enqueue script call: each call is all-or-nothing
_SETTLE_BATCH = 200  # settlements per settle_many script call
_MIN_BLOCK = 0.01  # BLPOP treats 0 as "forever"


class RedisTaskQueue:
    """A priority task queue in Redis with leases, fencing tokens, retries and a DLQ."""

    def __init__(
        self,
        queue_name: str = "agentic_ai",
        redis_url: str = "redis://localhost:6379",
        max_retries: int = 3,
        task_ttl_seconds: int = 3600,
        enable_dlq: bool = True,
        *,
        lease_seconds: float = 30.0,
        max_lease_losses: int = 3,
        retry_policy: RetryPolicy | None = None,
        key_prefix: str = "agentic",
        max_payload_bytes: int = 1_048_576,
        socket_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        password: str | None = None,
    ) -> None:
        if max_retries < 0 or task_ttl_seconds <= 0 or lease_seconds <= 0 or max_lease_losses < 0:
            raise ValueError(
                "max_retries and max_lease_losses must be >= 0; "
                "task_ttl_seconds and lease_seconds must be > 0"
            )
        self.queue_name = validate_queue_name(queue_name)
        self.redis_url = redis_url
        self.max_retries = max_retries
        self.task_ttl_seconds = task_ttl_seconds
        self.enable_dlq = enable_dlq
        self.lease_seconds = lease_seconds
        self.max_lease_losses = max_lease_losses
        self.retry_policy = retry_policy or RetryPolicy()
        self.max_payload_bytes = max_payload_bytes
        self.keys = QueueKeys(validate_queue_name(key_prefix), self.queue_name)
        self._password = password
        self._socket_timeout = socket_timeout
        self._connect_timeout = connect_timeout
        self._redis: Redis | None = None
        self._blocking: Redis | None = None
        self._scripts: Scripts | None = None
        # Fencing tokens of the leases this instance was granted, so the seed's
        # complete_task(task_id, result) needs no token argument.
        self._leases: dict[str, int] = {}

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> Self:
        """A queue configured from Settings (environment), with optional overrides."""
        return cls(**{**settings.queue_kwargs(), **overrides})

    # -- lifecycle -----------------------------------------------------------------

    async def connect(self) -> None:
        """Open the connections and check that Redis answers (RedisUnavailable if not)."""
        if self._redis is not None:
            return
        options = {
            "password": self._password,
            "socket_timeout": self._socket_timeout,
            "connect_timeout": self._connect_timeout,
        }
        redis = make_client(self.redis_url, **options)  # type: ignore[arg-type]
        blocking = make_client(self.redis_url, blocking=True, **options)  # type: ignore[arg-type]
        try:
            async with redis_errors(self.redis_url):
                await redis.ping()
        except BaseException:
            await redis.aclose()
            await blocking.aclose()
            raise
        self._redis, self._blocking, self._scripts = redis, blocking, Scripts(redis)

    async def close(self) -> None:
        redis, blocking = self._redis, self._blocking
        self._redis = self._blocking = self._scripts = None
        for client in (redis, blocking):
            if client is not None:
                await client.aclose()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def redis(self) -> Redis:
        """The underlying redis.asyncio client (responses are bytes)."""
        if self._redis is None:
            raise NotConnected("call `await queue.connect()` first")
        return self._redis

    @property
    def dlq_key(self) -> str:
        return self.keys.dlq

    @property
    def password(self) -> str | None:
        """The password given to the constructor (for processes this queue starts)."""
        return self._password

    @property
    def url(self) -> str:
        """The Redis URL with any password masked."""
        return mask_url(self.redis_url)

    # -- producing -----------------------------------------------------------------

    async def enqueue(
        self,
        task_id: str,
        task_type: str,
        payload: Mapping[str, Any],
        priority: int | TaskPriority | str = TaskPriority.NORMAL,
        *,
        delay: float | None = None,
        max_retries: int | None = None,
        meta: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> RedisTask:
        """Add a task. `task_id` is the idempotency key: if a task with that id exists
        (in any state, until it is cleared), nothing changes and that task is returned.
        `delay` schedules it that many seconds ahead; `timeout` overrides the worker's
        execution timeout for this task."""
        spec = self._spec(task_id, task_type, payload, priority, delay, max_retries, meta, timeout)
        reply = await self.call_script(
            "enqueue", self._enqueue_keys(), [self.keys.base, *spec.args]
        )
        return enqueued_task(spec, reply[1], int(reply[0]), self.max_retries)

    async def enqueue_many(self, tasks: Iterable[Mapping[str, Any]]) -> list[RedisTask]:
        """Enqueue many tasks, each a dict of enqueue()'s keyword arguments. Every task is
        validated before anything is sent; up to 1,000 tasks go in one all-or-nothing
        script call. Longer lists are sent 1,000 at a time: if a later chunk fails,
        BulkEnqueueError carries the tasks that were enqueued before it."""
        specs = [self._spec(**dict(t)) for t in tasks]
        out: list[RedisTask] = []
        for start in range(0, len(specs), _BULK):
            chunk = specs[start : start + _BULK]
            args: list[Any] = [self.keys.base]
            for spec in chunk:
                args.extend(spec.args)
            try:
                reply = await self.call_script("enqueue", self._enqueue_keys(), args)
            except QueueError as exc:
                if not out:
                    raise
                raise BulkEnqueueError(out, exc) from exc
            now_ms = int(reply[0])
            out.extend(
                enqueued_task(s, r, now_ms, self.max_retries)
                for s, r in zip(chunk, reply[1:], strict=True)
            )
        return out

    # -- consuming -----------------------------------------------------------------

    async def dequeue(self, worker_id: str, timeout: float = 5.0) -> RedisTask | None:
        """Claim the highest-priority ready task, blocking in Redis up to `timeout`
        seconds for one to arrive. Returns None on timeout."""
        tasks = await self.claim(worker_id, 1, timeout=timeout)
        return tasks[0] if tasks else None

    async def claim(
        self,
        worker_id: str,
        count: int = 1,
        *,
        task_types: Iterable[str] | None = None,
        timeout: float = 0.0,
    ) -> list[RedisTask]:
        """Claim up to `count` ready tasks of the given types (all types if None) in one
        round trip, each under its own lease. Blocks up to `timeout` while none is ready."""
        types = list(task_types) if task_types is not None else None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + check_seconds("timeout", timeout)
        while True:
            batch = await self.claim_ready(worker_id, count, task_types=types)
            if batch.tasks:
                return batch.tasks
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            await self.wait_for_work(types, batch.wait_limit(remaining), batch.task_types)

    async def complete_task(
        self, task_id: str, result: Any = None, *, lease_token: int | None = None
    ) -> None:
        """Mark a processing task completed with its (JSON) result. Raises LeaseLost if
        this caller's lease expired and the task was reclaimed."""
        text = codec.dumps(result, "result", self.max_payload_bytes)
        call = self._complete_call(task_id, self._token_for(task_id, lease_token), text)
        try:
            await self.call_script(*call, task_id)
        finally:
            self._leases.pop(task_id, None)

    async def fail_task(
        self,
        task_id: str,
        error: str,
        retry: bool = True,
        *,
        lease_token: int | None = None,
        delay: float | None = None,
    ) -> TaskState:
        """Record a failure. With `retry`, the task runs again after the retry policy's
        delay (or `delay` seconds) while retries remain; otherwise it is dead-lettered.
        Returns the task's new state."""
        token = self._token_for(task_id, lease_token)
        try:
            reply = await self.call_script(
                *self._fail_call(task_id, token, error, retry, delay), task_id
            )
        finally:
            self._leases.pop(task_id, None)
        return _state_after_fail(reply)

    async def settle_many(self, settlements: Iterable[Settlement]) -> list[TaskState | QueueError]:
        """Complete or fail many tasks in one round trip and one script call per 200
        (how a Worker acknowledges). Returns, per settlement, the task's new state or the
        error (e.g. LeaseLost) that refused it; a result that is not JSON dead-letters its
        task with the reason."""
        items = list(settlements)
        out: list[TaskState | QueueError] = []
        for start in range(0, len(items), _SETTLE_BATCH):
            out.extend(await self._settle_chunk(items[start : start + _SETTLE_BATCH]))
        return out

    async def _settle_chunk(self, items: list[Settlement]) -> list[TaskState | QueueError]:
        k = self.keys
        keys = [k.processing, k.completed, k.cancelled, k.delayed, k.dlq, k.failed, k.stats]
        policy = self.retry_policy.script_args()
        args: list[Any] = [
            k.base,
            self.task_ttl_seconds * 1000,
            "1" if self.enable_dlq else "0",
            *policy[:4],
            self.max_retries,
        ]
        for s in items:
            token = self._token_for(s.task_id, s.lease_token)
            self._leases.pop(s.task_id, None)
            error, retry = s.error, s.retry
            if error is None:
                try:
                    text = codec.dumps(s.result, "result", self.max_payload_bytes)
                except QueueError as exc:
                    error, retry = str(exc), False
                else:
                    args += ["c", s.task_id, token, text]
                    continue
            delay = "-" if s.delay is None else str(max(0, int(s.delay * 1000)))
            options = f"{int(retry)} 0 {self.retry_policy.script_args()[4]} {delay}"
            args += ["f", s.task_id, token, options, codec.error_text(error)]
        replies = await self.call_script("settle_many", keys, args)
        out: list[TaskState | QueueError] = []
        for s, reply in zip(items, replies, strict=True):
            code = int(reply[0])
            if code < 0:
                try:
                    raise_for_code(reply, s.task_id, "settle")
                except QueueError as exc:
                    out.append(exc)
            elif len(reply) == 2 and code == 0:
                out.append(TaskState.COMPLETED)
            else:
                out.append(_state_after_fail(reply))
        return out

    async def extend_lease(
        self, task_id: str, lease_token: int | None = None, seconds: float | None = None
    ) -> bool:
        """Heartbeat: extend the lease to `seconds` (default lease_seconds) from now.
        Returns True when a cancel was requested for the task. Raises LeaseLost."""
        token = self._token_for(task_id, lease_token)
        lease_ms = int((seconds or self.lease_seconds) * 1000)
        reply = await self.call_script(
            "extend", [self.keys.processing], [self.keys.base, task_id, token, lease_ms], task_id
        )
        return int(reply[2]) == 1

    heartbeat = extend_lease

    async def release_task(self, task_id: str, lease_token: int | None = None) -> None:
        """Hand a claimed task back to pending without counting the attempt (used on
        graceful shutdown). Raises LeaseLost."""
        token = self._token_for(task_id, lease_token)
        try:
            await self.call_script(
                "release",
                [self.keys.processing, self.keys.stats],
                [self.keys.base, task_id, token],
                task_id,
            )
        finally:
            self._leases.pop(task_id, None)

    async def reap(self) -> None:
        """Promote due delayed tasks and reclaim expired leases (a bounded batch). Every
        claim does this too; call it when no worker is running."""
        await self.claim_ready("reaper", 0)

    # -- inspecting and administering ------------------------------------------------

    async def get_task(self, task_id: str) -> RedisTask | None:
        """The task as stored now, or None. A corrupt record raises QueueError."""
        validate_task_id(task_id)
        async with redis_errors(self.redis_url):
            flat = await self.redis.hgetall(self.keys.task(task_id))
        return self._decode(task_id, flat)

    def _decode(self, task_id: str, flat: Any) -> RedisTask | None:
        if not flat:
            return None
        try:
            return codec.decode_task(task_id, codec.text_fields(flat), self.max_retries)
        except ValueError as exc:
            raise QueueError(str(exc)) from exc

    async def wait_for_result(self, task_id: str, timeout: float = 30.0) -> Any:
        """Block (in Redis, no polling) until the task finishes; return its result.
        Raises TaskFailed (dead-lettered or failed), TaskCancelled, ResultTimeout or
        TaskNotFound."""
        validate_task_id(task_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + check_seconds("timeout", timeout)
        done_key = self.keys.done(task_id)
        task = await self.get_task(task_id)
        while True:
            if task is None:
                raise TaskNotFound(task_id)
            if task.state == TaskState.COMPLETED:
                return task.result
            if task.state == TaskState.CANCELLED:
                raise TaskCancelled(task_id)
            if task.state in (TaskState.DEAD_LETTER, TaskState.FAILED):
                raise TaskFailed(task_id, task.state, task.error)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ResultTimeout(f"task {task_id!r} is still {task.state} after {timeout} s")
            # The done list is written in the same script as the final state, so a
            # finish between the read above and this wait is not missed. BLMOVE onto
            # itself leaves the token in place for every other waiter; the read that
            # follows it rides in the same pipeline, saving a round trip.
            wait = max(_MIN_BLOCK, min(remaining, BLOCK_SLICE_SECONDS))
            pipe = self._blocking_client.pipeline(transaction=False)
            async with redis_errors(self.redis_url), pipe:
                pipe.blmove(done_key, done_key, wait)  # type: ignore[arg-type]
                pipe.hgetall(self.keys.task(task_id))
                token, flat = await pipe.execute()
            task = self._decode(task_id, flat)
            if token is not None and task is not None and not TaskState(task.state).is_final:
                # A token left by an earlier task of the same id (deleted by hand): drop
                # it, or every later wait would return at once.
                async with redis_errors(self.redis_url):
                    await self.redis.delete(done_key)

    async def cancel(self, task_id: str) -> TaskState:
        """Cancel a task. A pending or delayed task is cancelled at once (returns
        CANCELLED); a running one is flagged and its worker told (returns PROCESSING).
        Raises TaskNotFound, or TaskStateError if it already finished."""
        validate_task_id(task_id)
        keys = [self.keys.delayed, self.keys.cancelled, self.keys.stats]
        reply = await self.call_script("cancel", keys, [self.keys.base, task_id], task_id)
        return TaskState.CANCELLED if int(reply[0]) == 1 else TaskState.PROCESSING

    async def retry_dlq_task(self, task_id: str) -> RedisTask:
        """Move a dead-lettered (or failed) task back to pending with its retry count reset."""
        validate_task_id(task_id)
        keys = [self.keys.dlq, self.keys.failed, self.keys.stats]
        await self.call_script("retry_dlq", keys, [self.keys.base, task_id], task_id)
        task = await self.get_task(task_id)
        if task is None:  # deleted in between by someone else
            raise TaskNotFound(task_id)
        return task

    async def purge_dlq(self) -> int:
        """Delete every dead-lettered task; returns how many."""
        return await self._chunked("purge_dlq", [self.keys.dlq], [self.keys.base, _BATCH])

    async def clear_completed(self, older_than_seconds: float = 86400) -> int:
        """Delete completed and cancelled tasks that finished more than
        `older_than_seconds` ago (server time); returns how many."""
        age_ms = max(0, int(older_than_seconds * 1000))
        keys = [self.keys.completed, self.keys.cancelled]
        return await self._chunked("clear_finished", keys, [self.keys.base, age_ms, _BATCH])

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

    async def list_tasks(
        self, state: TaskState | str | None = None, limit: int = 100
    ) -> list[RedisTask]:
        """Up to `limit` tasks in `state` (pending ones in dequeue order, finished ones
        oldest first). Records that cannot be decoded are skipped."""
        wanted = TaskState(state) if state else TaskState.PENDING
        async with redis_errors(self.redis_url):
            ids = await ids_in_state(self.redis, self.keys, wanted, limit)
            async with self.redis.pipeline(transaction=False) as pipe:
                for task_id in ids:
                    pipe.hgetall(self.keys.task(task_id))
                rows = await pipe.execute()
        tasks = []
        for task_id, flat in zip(ids, rows, strict=True):
            if flat:
                try:
                    tasks.append(
                        codec.decode_task(task_id, codec.text_fields(flat), self.max_retries)
                    )
                except ValueError:
                    continue
        return tasks

    async def health_check(self) -> dict[str, Any]:
        """The seed's health check: never raises; 'unhealthy' with the error instead."""
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            async with redis_errors(self.redis_url):
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

    # -- internals -------------------------------------------------------------------

    @property
    def _blocking_client(self) -> Redis:
        if self._blocking is None:
            raise NotConnected("call `await queue.connect()` first")
        return self._blocking

    async def call_script(
        self, name: str, keys: list[str], args: list[Any], task_id: str = ""
    ) -> Any:
        """Run one of lua/*.lua; negative replies raise (for this package's modules)."""
        if self._scripts is None:
            raise NotConnected("call `await queue.connect()` first")
        try:
            reply = await self._scripts.call(name, keys, args)
        except RedisError as exc:  # the hot path: no context manager
            raise translate_error(self.redis_url, exc) from exc
        if reply and isinstance(reply[0], int) and reply[0] < 0:
            raise_for_code(reply, task_id, name.replace("_", " "))
        return reply

    async def _chunked(self, name: str, keys: list[str], args: list[Any]) -> int:
        total = 0
        while True:
            removed = int((await self.call_script(name, keys, args))[0])
            total += removed
            if removed < _BATCH:
                return total

    async def wait_for_work(
        self,
        task_types: Iterable[str] | None,
        seconds: float,
        known_types: Iterable[str] = (),
    ) -> None:
        """Block in Redis until work of these types may be ready, or `seconds` pass.
        With task_types None (every type), it watches the `known_types` a claim reported
        plus the key that announces new types. Returns early on a wake-up token; the
        caller then claims."""
        if task_types is not None:
            wake_keys = [self.keys.wake(validate_task_type(t)) for t in task_types]
        else:
            wake_keys = [self.keys.wake(), *(self.keys.wake(t) for t in known_types)]
        wait = max(_MIN_BLOCK, min(seconds, BLOCK_SLICE_SECONDS))
        try:
            async with redis_errors(self.redis_url):
                await self._blocking_client.blpop(wake_keys, timeout=wait)
        except QueueError as exc:
            if "WRONGTYPE" not in str(exc):
                raise
            await self._repair_wake_keys(wake_keys)

    async def _repair_wake_keys(self, wake_keys: list[str]) -> None:
        """Wake keys carry no data: one that something overwrote is deleted (the
        scripts push a fresh token to it when work arrives)."""
        async with redis_errors(self.redis_url):
            for key in wake_keys:
                if await self.redis.type(key) not in (b"list", b"none"):
                    await self.redis.delete(key)

    async def claim_ready(
        self, worker_id: str, count: int, *, task_types: Iterable[str] | None = None
    ) -> ClaimBatch:
        """One claim round trip, never blocking: up to `count` ready tasks of the given
        types (all types if None), each under a new lease, plus how long an idle caller
        may block before a delayed task comes due or a lease expires."""
        types = [validate_task_type(t) for t in task_types] if task_types is not None else []
        keys = [
            self.keys.processing,
            self.keys.delayed,
            self.keys.stats,
            self.keys.types,
            self.keys.dlq,
            self.keys.failed,
            self.keys.cancelled,
        ]
        args = [
            self.keys.base,
            worker_id,
            int(self.lease_seconds * 1000),
            count,
            self.max_lease_losses,
            "1" if self.enable_dlq else "0",
            *types,
        ]
        reply = await self.call_script("claim", keys, args)
        now_ms, next_event_ms = int(reply[0]), int(reply[1])
        served = [codec.as_text(t) for t in reply[2]]
        tasks = []
        for raw_id, token, flat in reply[3:]:
            task_id = raw_id.decode()
            try:
                task = codec.decode_task(task_id, codec.text_fields(flat), self.max_retries)
            except ValueError as exc:
                # A record the engine cannot read is dead-lettered with the reason, never
                # handed to the caller.
                call = self._fail_call(task_id, str(token), str(exc), False, None, corrupt=True)
                await self.call_script(*call, task_id)
                continue
            self._leases[task_id] = int(token)
            tasks.append(task)
        wait_hint = None if next_event_ms < 0 else max(0.0, (next_event_ms - now_ms) / 1000)
        return ClaimBatch(tasks, wait_hint, served)

    def _complete_call(self, task_id: str, token: str, result_text: str) -> ScriptCall:
        k = self.keys
        keys = [k.processing, k.completed, k.cancelled, k.stats]
        args = [k.base, task_id, token, self.task_ttl_seconds * 1000]
        return "complete", keys, [*args, result_text]

    def _fail_call(
        self,
        task_id: str,
        token: str,
        error: str,
        retry: bool,
        delay: float | None,
        corrupt: bool = False,
    ) -> ScriptCall:
        k = self.keys
        keys = [k.processing, k.delayed, k.dlq, k.failed, k.cancelled, k.stats]
        args = [
            k.base,
            task_id,
            token,
            "1" if retry else "0",
            "1" if self.enable_dlq else "0",
            *self.retry_policy.script_args(),
            "" if delay is None else str(max(0, int(delay * 1000))),
            self.max_retries,
            "1" if corrupt else "0",
            codec.error_text(str(error)),
        ]
        return "fail", keys, args

    def _token_for(self, task_id: str, lease_token: int | None) -> str:
        validate_task_id(task_id)
        if lease_token is None:
            lease_token = self._leases.get(task_id)
        return "" if lease_token is None else str(lease_token)

    def _enqueue_keys(self) -> list[str]:
        return [self.keys.delayed, self.keys.stats, self.keys.types]

    def _spec(self, *args: Any, **kwargs: Any) -> TaskSpec:
        return build_spec(self.max_retries, self.max_payload_bytes, *args, **kwargs)

    async def _snapshot(self) -> QueueSnapshot:
        k = self.keys
        keys = [
            k.processing,
            k.delayed,
            k.completed,
            k.failed,
            k.cancelled,
            k.dlq,
            k.stats,
            k.types,
        ]
        return parse_sizes(await self.call_script("sizes", [*keys, k.types], [k.base]))


def _state_after_fail(reply: list[Any]) -> TaskState:
    """fail.lua's outcome code as the task's new state."""
    outcome = int(reply[0])
    if outcome == 1:
        return TaskState.PENDING if int(reply[1]) <= 0 else TaskState.DELAYED
    return {2: TaskState.DEAD_LETTER, 3: TaskState.FAILED}.get(outcome, TaskState.CANCELLED)
