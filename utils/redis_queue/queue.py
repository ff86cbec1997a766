"""RedisTaskQueue: the queue's public class; producing and consuming live here, reading and
administering in admin.py, configuration and connections in core.py.

Every state transition is one Lua script (lua/*.lua) that checks everything before its
first write and reads time from the Redis server. These classes validate input, encode
JSON, call the scripts and turn their replies into RedisTask objects and exceptions.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from . import codec, telemetry
from .admin import QueueAdmin
from .connection import BLOCK_SLICE_SECONDS, redis_errors
from .core import MIN_BLOCK
from .errors import BulkEnqueueError, LeaseLost, QueueError, raise_for_code
from .keys import validate_task_type
from .models import ClaimBatch, RedisTask, Settlement, TaskPriority, TaskState
from .scripts import ScriptCall
from .spec import TaskSpec, build_spec, check_seconds, enqueued_task

__all__ = ["MAX_CLAIM", "RedisTaskQueue"]

_BULK = 1000  # tasks per enqueue script call: each call is all-or-nothing
_SETTLE_CHUNK = 200  # settlements per settle_many script call
MAX_CLAIM = 1000  # tasks per claim script call (MAX_BATCH in lua/include/common.lua)


class RedisTaskQueue(QueueAdmin):
    """A priority task queue in Redis with leases, fencing tokens, retries and a DLQ."""

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
        tracer = telemetry.tracer
        if tracer is None:
            return await self._enqueue_one(spec)
        return await tracer.send(self, [spec], False, lambda traced: self._enqueue_one(traced[0]))

    async def enqueue_many(self, tasks: Iterable[Mapping[str, Any]]) -> list[RedisTask]:
        """Enqueue many tasks, each a dict of enqueue()'s keyword arguments. Every task is
        validated before anything is sent; up to 1,000 tasks go in one all-or-nothing
        script call. Longer lists are sent 1,000 at a time: if a later chunk fails,
        BulkEnqueueError carries the tasks that were enqueued before it."""
        specs = [self._spec(**dict(t)) for t in tasks]
        tracer = telemetry.tracer
        if tracer is None or not specs:
            return await self._enqueue_specs(specs)
        return await tracer.send(self, specs, True, self._enqueue_specs)

    async def _enqueue_one(self, spec: TaskSpec) -> RedisTask:
        reply = await self.call_script(
            "enqueue", self._enqueue_keys(), [self.keys.base, *spec.args]
        )
        if reply[1] == 1:
            self.metrics.task_enqueued(self.queue_name, spec.task_type)
        return enqueued_task(spec, reply[1], int(reply[0]), self.max_retries)

    async def _enqueue_specs(self, specs: list[TaskSpec]) -> list[RedisTask]:
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
            created = Counter(s.task_type for s, r in zip(chunk, reply[1:], strict=True) if r == 1)
            for task_type, count in created.items():
                self.metrics.task_enqueued(self.queue_name, task_type, count)
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
        await self._settling(task_id, self.call_script(*call, task_id))

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
        call = self._fail_call(task_id, token, error, retry, delay)
        reply = await self._settling(task_id, self.call_script(*call, task_id))
        return _state_after_fail(reply)

    async def settle_many(self, settlements: Iterable[Settlement]) -> list[TaskState | QueueError]:
        """Complete or fail many tasks in one round trip and one script call per 200
        (how a Worker acknowledges). Returns, per settlement, the task's new state or the
        error (e.g. LeaseLost) that refused it; a result that is not JSON dead-letters its
        task with the reason."""
        items = list(settlements)
        tracer = telemetry.tracer
        if tracer is None:
            return await self._settle_items(items)
        return await tracer.settle(self, items, lambda: self._settle_items(items))

    async def _settle_items(self, items: list[Settlement]) -> list[TaskState | QueueError]:
        out: list[TaskState | QueueError] = []
        for start in range(0, len(items), _SETTLE_CHUNK):
            out.extend(await self._settle_chunk(items[start : start + _SETTLE_CHUNK]))
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
            jitter = self.retry_policy.jitter_multiplier()
            options = f"{int(retry)} 0 {jitter!r} {delay}"
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
            if not isinstance(out[-1], LeaseLost):
                self._leases.pop(s.task_id, None)
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
        keys = [self.keys.processing, self.keys.stats]
        call = self.call_script("release", keys, [self.keys.base, task_id, token], task_id)
        await self._settling(task_id, call)

    async def reap(self) -> None:
        """Promote due delayed tasks and reclaim expired leases (a bounded batch). Every
        claim does this too; call it when no worker is running."""
        await self.claim_ready("reaper", 0)

    # -- internals -------------------------------------------------------------------

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
        wait = max(MIN_BLOCK, min(seconds, BLOCK_SLICE_SECONDS))
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
        self,
        worker_id: str,
        count: int,
        *,
        task_types: Iterable[str] | None = None,
        suspects: bool = True,
    ) -> ClaimBatch:
        """One claim round trip, never blocking: up to `count` ready tasks of the given
        types (all types if None), each under a new lease, plus how long an idle caller
        may block before a delayed task comes due or a lease expires. A task that lost a
        lease before (it may be what killed its worker) comes alone in its batch; with
        `suspects` False (the caller runs one already) such tasks are left for others."""
        types = [validate_task_type(t) for t in task_types] if task_types is not None else []
        # The script takes at most MAX_CLAIM per call (no count may make it fail halfway);
        # a bigger claim is several calls, each atomic. Only the first may hand out a
        # suspect, which then comes alone.
        tasks: list[RedisTask] = []
        left, first = count, True
        while True:
            ask = min(left, MAX_CLAIM)
            batch = await self._claim_call(worker_id, ask, types, suspects and first)
            tasks.extend(batch.tasks)
            left, first = left - len(batch.tasks), False
            if left <= 0 or len(batch.tasks) < ask:  # drained, or a suspect came alone
                return ClaimBatch(tasks, batch.wait_hint, batch.task_types)

    async def _claim_call(
        self, worker_id: str, count: int, types: list[str], suspects: bool
    ) -> ClaimBatch:
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
            "1" if suspects else "0",
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
            self._remember_lease(task_id, int(token))
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

    def _enqueue_keys(self) -> list[str]:
        return [self.keys.delayed, self.keys.stats, self.keys.types]

    def _spec(self, *args: Any, **kwargs: Any) -> TaskSpec:
        return build_spec(self.max_retries, self.max_payload_bytes, *args, **kwargs)


def _state_after_fail(reply: list[Any]) -> TaskState:
    """fail.lua's outcome code as the task's new state."""
    outcome = int(reply[0])
    if outcome == 1:
        return TaskState.PENDING if int(reply[1]) <= 0 else TaskState.DELAYED
    return {2: TaskState.DEAD_LETTER, 3: TaskState.FAILED}.get(outcome, TaskState.CANCELLED)
