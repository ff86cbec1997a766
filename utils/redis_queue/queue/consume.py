"""Consuming: claiming tasks under leases, settling, renewing and handing back leases
(waiting for work: waiting.py)."""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Iterable
from typing import Any

from .. import codec, scripts
from ..errors import LeaseLost, QueueError, RedisUnavailable, ServedTypesUnknown
from ..keys import QueueKeys, TaskTypes, validate_task_types
from ..models import ClaimBatch, RedisTask, Settlement, TaskState
from ..new_task import check_seconds
from .claim_check import collect_quietly, fetch_blobs, stored_result
from .waiting import Waiting

__all__ = ["MAX_CLAIM", "SETTLE_CHUNK", "Consumer"]

log = logging.getLogger("agentic.queue")

SETTLE_CHUNK = 200  # settlements per settle_many script call
MAX_CLAIM = 1000  # tasks per claim script call (MAX_BATCH in lua/include/common.lua)


def _event_at(now: float, batch: ClaimBatch) -> float:
    return float("inf") if batch.wait_hint is None else now + batch.wait_hint


class Consumer(Waiting):
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
        """Claim up to `count` ready tasks of the given types (all types if None), each
        under its own lease; one round trip per 1,000. Blocks up to `timeout` while none
        is ready."""
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

    async def claim_ready(
        self,
        worker_id: str,
        count: int,
        *,
        task_types: Iterable[str] | None = None,
        suspects: bool = True,
    ) -> ClaimBatch:
        """Never blocking: up to `count` ready tasks of the given types (all types if
        None), each under a new lease, plus how long an idle caller may block before a
        delayed task comes due or a lease expires. A task that lost a lease before (it
        may be what killed its worker) comes alone in its batch; with `suspects` False
        (the caller runs one already) such tasks are left for others. On a partitioned
        queue the claim goes to the partitions in priority order (partitions.py)."""
        types = validate_task_types(task_types if task_types is not None else ())
        if self.partitions > 1:
            return await self._claim_across(worker_id, count, types, suspects)
        return await self._claim_partition(self.keys, worker_id, count, types, suspects)

    async def _claim_partition(
        self,
        keys: QueueKeys,
        worker_id: str,
        count: int,
        types: TaskTypes,
        suspects: bool,
        max_score: int | None = None,
    ) -> ClaimBatch:
        # The script takes at most MAX_CLAIM per call (no count may make it fail halfway);
        # a bigger claim is several calls, each atomic. Only the first may hand out a
        # suspect, which then comes alone.
        tasks: list[RedisTask] = []
        left, first = count, True
        want_head = self.partitions > 1
        while True:
            ask = min(left, MAX_CLAIM)
            batch = await self._claim_call(
                keys, worker_id, ask, types, suspects and first, max_score, want_head
            )
            tasks.extend(batch.tasks)
            left, first = left - len(batch.tasks), False
            if left <= 0 or len(batch.tasks) < ask:  # drained, or a suspect came alone
                return ClaimBatch(
                    tasks, batch.wait_hint, batch.task_types, batch.head, batch.held_back
                )

    async def _claim_across(
        self, worker_id: str, count: int, types: TaskTypes, suspects: bool
    ) -> ClaimBatch:
        """A claim over every partition (see partitions.py). A partition whose Redis is
        unreachable (its primary failing over) is left out for a moment while the others
        are served; the error surfaces only when no partition could be reached."""
        loop = asyncio.get_running_loop()
        heads = self._partition_heads()
        tasks: list[RedisTask] = []
        served: set[str] = set()
        errors: list[QueueError] = []
        held_back: dict[str, int] = {}

        async def visit(index: int, ask: int, max_score: int | None = None) -> None:
            try:
                batch = await self._claim_partition(
                    self.layout.parts[index], worker_id, ask, types,
                    suspects and not tasks and ask > 0, max_score,
                )  # fmt: skip
            except RedisUnavailable as exc:
                heads.unreachable(index, loop.time())
                errors.append(exc)
                return
            heads.report(index, batch.head, _event_at(loop.time(), batch), loop.time())
            if batch.held_back:  # ready work a limit holds: not "nothing here", look again
                heads.stale(index)
            tasks.extend(batch.tasks)
            served.update(batch.task_types)
            for key, n in batch.held_back.items():
                held_back[key] = held_back.get(key, 0) + n

        stale = heads.stale_ones(loop.time())
        if count == 0 or len(stale) > 1:
            # Two partitions of unknown content cannot be ranked against each other:
            # ask each for its head first (all at once, so one round trip of latency),
            # which also promotes their due tasks and reaps their expired leases.
            todo = range(self.partitions) if count == 0 else stale
            await asyncio.gather(*(visit(i, 0) for i in todo))
        tried: set[int] = set()
        while count and len(tasks) < count:
            choice = heads.next_claim(loop.time(), tried)
            if choice is None:
                break
            index, max_score = choice
            tried.add(index)
            await visit(index, count - len(tasks), max_score)
            if any(t.lease_losses for t in tasks):  # a suspect comes alone
                break
        if errors and not tasks and heads.all_unreachable(loop.time()):
            raise errors[0]
        if not tasks:
            for key, n in self._gate_held_back().items():
                held_back.setdefault(key, n)
        wait = heads.wait_hint(loop.time())
        hint = self._gate_wait()
        if hint is not None:
            wait = hint if wait is None else min(wait, hint)
        return ClaimBatch(tasks, wait, sorted(served), held_back=held_back)

    async def _claim_call(
        self,
        keys: QueueKeys,
        worker_id: str,
        count: int,
        types: TaskTypes,
        suspects: bool,
        max_score: int | None,
        want_head: bool,
    ) -> ClaimBatch:
        request = os.urandom(8).hex() if count else ""

        def call(send_served: bool) -> scripts.ScriptCall:
            return scripts.claim(
                keys,
                worker_id=worker_id,
                lease_ms=int(self.lease_seconds * 1000),
                count=count,
                max_lease_losses=self.max_lease_losses,
                use_dlq=self.enable_dlq,
                suspects=suspects,
                task_types=types,
                max_score=max_score,
                want_head=want_head,
                request=request,
                blocked=self._gate_hint(),
                events=self.events_arg,
                send_served=send_served,
            )

        # A long type list is sent once per partition and then named by its digest.
        named = len(types) > scripts.SERVED_INLINE_MAX  # by digest (TaskTypes)
        sent = named and (keys.base, types.digest) in self._served_sent
        try:
            raw = await self.run(call(not sent))
        except ServedTypesUnknown:  # expired, or Redis restarted empty: send it again
            raw = await self.run(call(True))
        if named:
            self._served_sent.add((keys.base, types.digest))
        reply = scripts.claim_reply(raw)
        tasks = []
        for row in reply.rows:
            task_id, token, fields = row.task_id, row.token, row.fields(worker_id, reply.now_ms)
            try:
                if self.blob_store is not None:  # its payload may be in the store
                    await fetch_blobs(self, task_id, fields)
                task = codec.decode_task(task_id, fields, self.max_retries)
            except ValueError as exc:
                # A record the engine cannot read is dead-lettered with the reason, never
                # handed to the caller.
                await self.run(self._fail_call(task_id, str(token), str(exc), False, corrupt=True))
                continue
            self._remember_lease(task_id, token)
            tasks.append(task)
        wait: float | None = None
        if reply.next_event_ms >= 0:
            wait = max(0.0, (reply.next_event_ms - reply.now_ms) / 1000)
        held_back = dict(reply.held_back or {})
        if self.partitions > 1:  # its limits are in another slot: asked after the claim
            tasks = await self._gate_admit(tasks, held_back)
            hint = self._gate_wait()
            if hint is not None:
                wait = hint if wait is None else min(wait, hint)
        elif reply.held_back:
            self.telemetry.held_back(reply.held_back)
        served = list(types) if types else reply.served  # named, or reported when none
        return ClaimBatch(tasks, wait, served, reply.head, held_back)

    async def complete_task(
        self, task_id: str, result: Any = None, *, lease_token: int | None = None
    ) -> None:
        """Mark a processing task completed with its (JSON) result. Raises LeaseLost if
        this caller's lease expired and the task was reclaimed."""
        text = codec.dumps(result, "result", self.max_payload_bytes)
        text, blob = await stored_result(self, task_id, text)
        call = scripts.complete(
            self.keys_for(task_id),
            task_id=task_id,
            token=self._token_for(task_id, lease_token),
            keep_ms=self.task_ttl_seconds * 1000,
            result_text=text,
            result_blob=blob,
            events=self.events_arg,
        )
        await self._settling(task_id, self.run(call, task_id))
        await collect_quietly(self, self.keys_for(task_id))
        await self._gate_settled(task_id, TaskState.COMPLETED)

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
        reply = await self._settling(task_id, self.run(call, task_id))
        state = scripts.fail_state(reply)
        if state is TaskState.PENDING:  # retried at once: its partition has work again
            self._touched([task_id])
        await self._gate_settled(task_id, state)
        return state

    async def settle_many(self, settlements: Iterable[Settlement]) -> list[TaskState | QueueError]:
        """Complete or fail many tasks in one round trip and one script call per 200
        (how a Worker acknowledges). Returns, per settlement, the task's new state or the
        error (e.g. LeaseLost) that refused it; a result that is not JSON dead-letters its
        task with the reason."""
        items = list(settlements)
        return await self.telemetry.settle(items, lambda: self._settle_items(items))

    async def _settle_items(self, items: list[Settlement]) -> list[TaskState | QueueError]:
        out: list[TaskState | QueueError] = []
        for start in range(0, len(items), SETTLE_CHUNK):
            out.extend(await self._settle_chunk(items[start : start + SETTLE_CHUNK]))
        return out

    async def _settle_chunk(self, items: list[Settlement]) -> list[TaskState | QueueError]:
        if self.partitions == 1:
            return await self._settle_partition(self.keys, items)
        # One call per partition, all at once; replies go back in the callers' order.
        groups: dict[int, list[int]] = {}
        for position, s in enumerate(items):
            groups.setdefault(self.layout.index_of(s.task_id), []).append(position)
        replies = await asyncio.gather(
            *(
                self._settle_partition(self.layout.parts[index], [items[p] for p in positions])
                for index, positions in groups.items()
            ),
            return_exceptions=True,
        )
        out: list[TaskState | QueueError | None] = [None] * len(items)
        for positions, reply in zip(groups.values(), replies, strict=True):
            if isinstance(reply, BaseException):
                if not isinstance(reply, QueueError):
                    raise reply
                for p in positions:  # that partition's Redis failed: those are unsettled
                    out[p] = reply
                continue
            for p, state in zip(positions, reply, strict=True):
                out[p] = state
        settled = [o for o in out if o is not None]
        try:
            await self._gate_release(zip(items, settled, strict=True))
        except QueueError as exc:  # the slots expire with their leases; tokens stay spent
            log.warning("giving back limits after a settle failed: %s", exc)
        return settled

    async def _settle_partition(
        self, keys: QueueKeys, items: list[Settlement]
    ) -> list[TaskState | QueueError]:
        calls = []
        for s in items:
            token = self._token_for(s.task_id, s.lease_token)
            if s.pause is not None:  # a partitioned queue pauses in its limits' slot
                pause_ms = math.ceil(s.pause * 1000) if self.partitions == 1 else 0
                calls.append(
                    scripts.SettleItem(
                        s.task_id, token, pause_ms=pause_ms, pause_limits=s.pause_limits
                    )
                )
                continue
            used = s.tokens_used
            if s.error is None:
                try:
                    text = codec.dumps(s.result, "result", self.max_payload_bytes)
                except QueueError as exc:  # dead-lettered with the reason
                    error = codec.error_text(str(exc))
                    calls.append(
                        scripts.SettleItem(
                            s.task_id, token, error_text=error, retry=False, tokens_used=used
                        )
                    )
                else:
                    text, blob = await stored_result(self, s.task_id, text)
                    calls.append(
                        scripts.SettleItem(
                            s.task_id, token, result_text=text, result_blob=blob, tokens_used=used
                        )
                    )
                continue
            error = codec.error_text(s.error)
            calls.append(
                scripts.SettleItem(
                    s.task_id,
                    token,
                    error_text=error,
                    retry=s.retry,
                    delay=s.delay,
                    tokens_used=used,
                )
            )
        call = scripts.settle_many(
            keys,
            keep_ms=self.task_ttl_seconds * 1000,
            use_dlq=self.enable_dlq,
            policy=self.retry_policy,
            max_retries=self.max_retries,
            items=calls,
            events=self.events_arg,
        )
        if self.durable_settle:
            replies = await self.run_durable(call, [s.task_id for s in items])
        else:
            replies = await self.run(call)
        out: list[TaskState | QueueError] = []
        for s, reply in zip(items, replies, strict=True):
            out.append(scripts.settle_state(reply, s.task_id))
            if not isinstance(out[-1], LeaseLost):
                self._leases.pop(s.task_id, None)
            if out[-1] is TaskState.PENDING:  # retried at once: its partition has work again
                self._touched([s.task_id])
        await collect_quietly(self, keys)  # what the completions' trim deleted
        return out

    async def extend_lease(
        self, task_id: str, lease_token: int | None = None, seconds: float | None = None
    ) -> bool:
        """Heartbeat: extend the lease to `seconds` (default lease_seconds) from now.
        Returns True when a cancel was requested for the task. Raises LeaseLost."""
        call = scripts.extend(
            self.keys_for(task_id),
            task_id=task_id,
            token=self._token_for(task_id, lease_token),
            lease_ms=int((seconds or self.lease_seconds) * 1000),
        )
        return scripts.extend_cancel_requested(await self.run(call, task_id))

    heartbeat = extend_lease

    async def release_task(self, task_id: str, lease_token: int | None = None) -> None:
        """Hand a claimed task back to pending without counting the attempt (used on
        graceful shutdown). Raises LeaseLost."""
        token = self._token_for(task_id, lease_token)
        keys = self.keys_for(task_id)
        call = scripts.release(keys, task_id=task_id, token=token, events=self.events_arg)
        await self._settling(task_id, self.run(call, task_id))
        await self._gate_settled(task_id, TaskState.PENDING)
        self._touched([task_id])

    async def reap(self) -> None:
        """Promote due delayed tasks and reclaim expired leases (a bounded batch). Every
        claim does this too; call it when no worker is running."""
        await self.claim_ready("reaper", 0)

    def _fail_call(
        self,
        task_id: str,
        token: str,
        error: str,
        retry: bool,
        delay: float | None = None,
        corrupt: bool = False,
    ) -> scripts.ScriptCall:
        return scripts.fail(
            self.keys_for(task_id),
            task_id=task_id,
            token=token,
            retry=retry,
            use_dlq=self.enable_dlq,
            policy=self.retry_policy,
            delay=delay,
            max_retries=self.max_retries,
            corrupt=corrupt,
            error_text=codec.error_text(str(error)),
            events=self.events_arg,
        )
