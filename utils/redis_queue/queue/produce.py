"""Producing: enqueue and enqueue_many."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from .. import scripts, telemetry
from ..errors import BulkEnqueueError, InvalidTaskError, QueueError
from ..models import RedisTask, TaskPriority
from ..new_task import NewTask, enqueued_task, new_task
from .client import QueueClient

__all__ = ["BULK", "Producer"]

BULK = 1000  # tasks per enqueue script call: each call is all-or-nothing


class Producer(QueueClient):
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
        task = self._new_task(
            task_id, task_type, payload, priority, delay, max_retries, meta, timeout
        )
        if telemetry.tracer is None:  # the hot path: skip the hook's closure
            return await self._enqueue_one(task)
        sent = await self.telemetry.send([task], False, self._enqueue_all)
        return sent[0]

    async def enqueue_many(self, tasks: Iterable[Mapping[str, Any]]) -> list[RedisTask]:
        """Enqueue many tasks, each a dict of enqueue()'s keyword arguments. Every task is
        validated before anything is sent; up to 1,000 tasks go in one all-or-nothing
        script call. Longer lists are sent 1,000 at a time: if a later chunk fails,
        BulkEnqueueError carries the tasks that were enqueued before it."""
        new = [self._bulk_item(i, t) for i, t in enumerate(tasks)]
        return await self.telemetry.send(new, True, self._enqueue_all)

    def _bulk_item(self, index: int, item: Any) -> NewTask:
        """One enqueue_many item, or InvalidTaskError naming it (nothing is sent then)."""
        if not isinstance(item, Mapping):
            raise InvalidTaskError(
                f"enqueue_many item {index} is a {type(item).__name__}, not a dict of "
                "enqueue() arguments"
            )
        try:
            return self._new_task(**item)
        except TypeError as exc:  # a missing or unknown argument
            if isinstance(exc, QueueError):  # SerializationError is a TypeError too
                raise
            raise InvalidTaskError(f"enqueue_many item {index}: {exc}") from None

    async def _enqueue_one(self, task: NewTask) -> RedisTask:
        now_ms, (outcome,) = scripts.enqueue_reply(
            await self.run(scripts.enqueue(self.keys, [task]))
        )
        if outcome == 1:
            self.telemetry.enqueued(task.task_type)
        return enqueued_task(task, outcome, now_ms, self.max_retries)

    async def _enqueue_all(self, tasks: list[NewTask]) -> list[RedisTask]:
        out: list[RedisTask] = []
        for start in range(0, len(tasks), BULK):
            chunk = tasks[start : start + BULK]
            try:
                reply = await self.run(scripts.enqueue(self.keys, chunk))
            except QueueError as exc:
                if not out:
                    raise
                raise BulkEnqueueError(out, exc) from exc
            now_ms, outcomes = scripts.enqueue_reply(reply)
            created = Counter(t.task_type for t, r in zip(chunk, outcomes, strict=True) if r == 1)
            for task_type, count in created.items():
                self.telemetry.enqueued(task_type, count)
            out.extend(
                enqueued_task(t, r, now_ms, self.max_retries)
                for t, r in zip(chunk, outcomes, strict=True)
            )
        return out

    def _new_task(self, *args: Any, **kwargs: Any) -> NewTask:
        return new_task(self.max_retries, self.max_payload_bytes, *args, **kwargs)
