"""Producing: enqueue and enqueue_many."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from .. import codec, scripts, telemetry
from ..errors import BulkEnqueueError, InvalidTaskError, QueueError
from ..keys import QueueKeys, QueueLayout
from ..models import RedisTask, TaskPriority
from ..new_task import NewTask, enqueued_task, new_task
from ..windows import WINDOW_ARGS, with_windows
from .claim_check import put_payloads
from .client import QueueClient

__all__ = ["BULK", "Producer", "chunks", "merge_partitions", "partition_groups"]

BULK = 1000  # tasks per enqueue script call: each call is all-or-nothing
# Payload bytes per enqueue script call (a task larger goes alone): Redis refuses a
# command over client-query-buffer-limit (1 GB), and 1,000 tasks of 16 MiB are 16 GB.
BULK_BYTES = 64 * 1024 * 1024


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
        durable: bool | None = None,
        limits: Sequence[str] | None = None,
        cost_tokens: int | None = None,
        group: str | None = None,
        unique_for: float | None = None,
        unique_key: str | None = None,
        debounce: float | None = None,
    ) -> RedisTask:
        """Add a task. `task_id` is the idempotency key: if a task with that id exists
        (in any state, until it is cleared), nothing changes and that task is returned.
        `delay` schedules it that many seconds ahead; `timeout` overrides the worker's
        execution timeout for this task. `durable` (default: the queue's) returns only
        once min_replicas replicas have the task, else raises DurabilityError.
        `limits` names limit keys that bind it besides its type's (a key with no limit
        set binds nothing until one is set); `cost_tokens` is what it expects to use,
        reserved from its token limits at claim and reconciled with what it reports.
        Tasks that share a `group` (a tenant, say) take turns with other groups within
        their priority, so one group's backlog does not starve another's few tasks.
        Windows (equal = same type and `unique_key`, which defaults to the payload):
        `unique_for` seconds, an equal task is not enqueued again, even after the first
        finished - the first one is returned (DuplicateTask when its record is cleared);
        `debounce` seconds, the task is held delayed and an equal enqueue within the
        hold replaces it (same id, the last payload and options, due `debounce` from the
        last call) - the held task is returned. On a partitioned queue the id may get a
        suffix "@<n>" that puts it in its window's partition: use the returned id."""
        task = self._plain_task(
            task_id,
            task_type,
            payload,
            priority,
            delay,
            max_retries,
            meta,
            timeout,
            limits,
            cost_tokens,
            group,
        )
        if unique_for is not None or unique_key is not None or debounce is not None:
            task = with_windows(
                task, self.layout, unique_for=unique_for, unique_key=unique_key, debounce=debounce
            )
        if task.blob and self.blob_store is not None:
            (task,) = await put_payloads(self, [task])
        wait = self.durable if durable is None else durable
        if telemetry.tracer is None and not wait:  # the hot path: skip the hook's closure
            return await self._enqueue_one(task)
        sent = await self.telemetry.send(
            [task], False, lambda tasks: self._enqueue_all(tasks, wait)
        )
        return sent[0]

    async def enqueue_many(
        self, tasks: Iterable[Mapping[str, Any]], *, durable: bool | None = None
    ) -> list[RedisTask]:
        """Enqueue many tasks, each a dict of enqueue()'s keyword arguments. Every task is
        validated before anything is sent; up to 1,000 tasks go in one all-or-nothing
        script call (per partition: a partitioned queue sends each partition's share at
        the same time). Longer lists are sent 1,000 at a time: if a chunk fails,
        BulkEnqueueError carries the tasks that were enqueued. `durable` as in enqueue()."""
        new = await put_payloads(self, [self._bulk_item(i, t) for i, t in enumerate(tasks)])
        wait = self.durable if durable is None else durable
        return await self.telemetry.send(new, True, lambda batch: self._enqueue_all(batch, wait))

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
        reply = await self.run(
            scripts.enqueue(self.keys_for(task.task_id), [task], events=self.events_arg)
        )
        out: list[RedisTask] = []
        self._landed([task], reply, out)
        return out[0]

    async def _enqueue_all(self, tasks: list[NewTask], durable: bool = False) -> list[RedisTask]:
        if self.partitions == 1:
            done: list[RedisTask] = []
            await self._enqueue_partition(self.keys, tasks, durable, done)
            return done
        groups = partition_groups(self.layout, tasks)
        results: dict[int, list[RedisTask]] = {index: [] for index in groups}
        failures = await asyncio.gather(
            *(
                self._enqueue_partition(
                    self.layout.parts[index], [tasks[p] for p in positions], durable, results[index]
                )
                for index, positions in groups.items()
            ),
            return_exceptions=True,
        )
        return merge_partitions(groups, results, failures)

    async def _enqueue_partition(
        self, keys: QueueKeys, tasks: list[NewTask], durable: bool, out: list[RedisTask]
    ) -> None:
        """Send one partition's tasks, 1,000 per call, appending each chunk's RedisTasks
        to `out` as it lands (so a failure leaves `out` holding what is enqueued)."""
        for chunk in chunks(tasks):
            call = scripts.enqueue(keys, chunk, events=self.events_arg)
            try:
                if durable:
                    reply = await self.run_durable(call, [t.task_id for t in chunk])
                else:
                    reply = await self.run(call)
            except QueueError as exc:
                if not out or self.partitions > 1:
                    raise
                raise BulkEnqueueError(list(out), exc) from exc
            self._landed(chunk, reply, out)

    def _landed(self, chunk: list[NewTask], reply: Any, out: list[RedisTask]) -> None:
        """A chunk's enqueue reply: counted, and its RedisTasks appended to `out`."""
        now_ms, outcomes = scripts.enqueue_reply(reply)
        if len(chunk) == 1:  # enqueue(): no Counter for one task
            if outcomes[0] == 1:
                self.telemetry.enqueued(chunk[0].task_type)
                self._touched([chunk[0].task_id])
        else:
            created = Counter(t.task_type for t, r in zip(chunk, outcomes, strict=True) if r == 1)
            for task_type, count in created.items():
                self.telemetry.enqueued(task_type, count)
            if created:  # a chunk is one partition's: its first id names it
                self._touched([chunk[0].task_id])
        created_at = codec.iso_from_ms(str(now_ms)) or ""
        out.extend(
            enqueued_task(t, r, created_at, self.max_retries)
            for t, r in zip(chunk, outcomes, strict=True)
        )

    def _new_task(self, *args: Any, **kwargs: Any) -> NewTask:
        if kwargs.keys().isdisjoint(WINDOW_ARGS):  # most tasks: no window to pop and apply
            return self._plain_task(*args, **kwargs)
        windows = {name: kwargs.pop(name, None) for name in WINDOW_ARGS}
        task = self._plain_task(*args, **kwargs)
        return with_windows(task, self.layout, **windows)

    def _plain_task(self, *args: Any, **kwargs: Any) -> NewTask:
        return new_task(
            self.max_retries,
            self.max_payload_bytes,
            *args,
            blob_threshold=self.blob_threshold_bytes,
            **kwargs,
        )


def partition_groups(layout: QueueLayout, tasks: Sequence[NewTask]) -> dict[int, list[int]]:
    """The positions in `tasks` of each partition's tasks, in order."""
    groups: dict[int, list[int]] = {}
    for position, task in enumerate(tasks):
        groups.setdefault(layout.index_of(task.task_id), []).append(position)
    return groups


def merge_partitions(
    groups: dict[int, list[int]],
    results: dict[int, list[RedisTask]],
    failures: Sequence[BaseException | None],
) -> list[RedisTask]:
    """What the partitions' sends enqueued, in the order given (partition_groups), or the
    first failure: BulkEnqueueError carrying what was enqueued when some tasks were."""
    by_position: dict[int, RedisTask] = {}
    for (index, positions), failure in zip(groups.items(), failures, strict=True):
        if failure is not None and not isinstance(failure, QueueError):
            raise failure
        by_position.update(zip(positions, results[index], strict=False))
    errors = [f for f in failures if isinstance(f, QueueError)]
    out = [by_position[p] for p in sorted(by_position)]
    if errors:
        if not out:
            raise errors[0]
        raise BulkEnqueueError(out, errors[0]) from errors[0]
    return out


def chunks(tasks: list[NewTask]) -> Iterator[list[NewTask]]:
    """`tasks` in order, in runs of at most BULK tasks and BULK_BYTES of payload."""
    chunk: list[NewTask] = []
    size = 0
    for task in tasks:
        sent = 0 if task.blob_ref is not None else len(task.payload_text)
        if chunk and (len(chunk) == BULK or size + sent > BULK_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(task)
        size += sent
    if chunk:
        yield chunk
