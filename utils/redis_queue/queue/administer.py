"""Administering: cancel (one task, or every queued task of a type), delete, the DLQ's
retry and purge, purge by state, cleanup of finished tasks."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from functools import partial

from .. import codec, scripts
from ..errors import (
    InvalidTaskError,
    QueueError,
    RedisUnavailable,
    TaskNotFound,
    TaskStateError,
)
from ..keys import QueueKeys, validate_task_id, validate_task_type
from ..models import RedisTask, TaskState
from ..scripts import bulk
from .inspect import Inspector

__all__ = ["Administrator"]

log = logging.getLogger("agentic.queue")

BULK_BATCH = 1000  # entries per purge / cancel_type call (the scripts' MAX_BATCH)
PURGEABLE = ("pending", "delayed", "completed", "failed", "cancelled", "dead_letter")


class Administrator(Inspector):
    async def cancel(self, task_id: str) -> TaskState:
        """Cancel a task. A pending or delayed task is cancelled at once (returns
        CANCELLED); a running one is flagged and its worker told (returns PROCESSING).
        Raises TaskNotFound, or TaskStateError if it already finished."""
        validate_task_id(task_id)
        keys, request = self.keys_for(task_id), os.urandom(8).hex()
        call = scripts.cancel(keys, task_id=task_id, request=request, events=self.events_arg)
        reply = await self.run(call, task_id)
        if scripts.cancel_outcome(reply) is scripts.CancelOutcome.CANCELLED:
            return TaskState.CANCELLED
        return TaskState.PROCESSING

    async def delete_task(self, task_id: str, *, force: bool = False) -> TaskState:
        """Delete a task and every key kept for it (record, state entry, done list, blob
        and output keys, its unique_for window and debounce hold); returns the state it
        was in. A running task raises TaskStateError unless `force`: then its worker is
        told to stop, its settle finds no task and its limit slots are given back (on a
        partitioned queue they free at their deadline). Raises TaskNotFound."""
        validate_task_id(task_id)
        keys = self.keys_for(task_id)
        call = bulk.delete(keys, task_id=task_id, force=force, events=self.events_arg)
        state = bulk.delete_reply(await self.run(call, task_id))
        await self._collect_if_stored()
        return state

    async def purge(self, state: TaskState | str) -> int:
        """Delete every task in `state` (pending, delayed, completed, failed, cancelled,
        dead_letter or "dlq"), each with every key kept for it, BULK_BATCH per script call
        in every partition; returns how many. Tasks that enter the state meanwhile may be
        deleted too. A running task is never purged (delete_task with force)."""
        name = "dead_letter" if state == "dlq" else str(getattr(state, "value", state))
        if name not in PURGEABLE:
            raise InvalidTaskError(
                f"cannot purge state {state!r}: use one of {', '.join(PURGEABLE)} or dlq"
            )
        target = TaskState(name)
        total = 0
        for keys in self.layout.parts:
            while True:
                call = bulk.purge(keys, state=target, limit=BULK_BATCH, events=self.events_arg)
                deleted, taken = bulk.purge_reply(await self.run(call))
                total += deleted
                if taken < BULK_BATCH:
                    break
        await self._collect_if_stored()
        return total

    async def cancel_by_type(self, task_type: str) -> int:
        """Cancel every queued (pending or delayed) task of `task_type`, as cancel() does
        one, BULK_BATCH per script call in every partition; returns how many. Running
        tasks are left alone (cancel() them one by one)."""
        validate_task_type(task_type)
        total = 0
        for keys in self.layout.parts:
            total += await self._cancel_queued(keys, task_type, delayed=False)
            total += await self._cancel_queued(keys, task_type, delayed=True)
            # Delayed tasks promoted while the delayed set was walked are pending now.
            total += await self._cancel_queued(keys, task_type, delayed=False)
        return total

    async def _cancel_queued(self, keys: QueueKeys, task_type: str, *, delayed: bool) -> int:
        total, after = 0, "^"
        while after:
            call = bulk.cancel_type(
                keys,
                task_type=task_type,
                delayed=delayed,
                after=after,
                limit=BULK_BATCH,
                events=self.events_arg,
            )
            reply = bulk.cancel_type_reply(await self.run(call))
            total += reply.cancelled
            after = reply.after if delayed else ("^" if reply.examined == BULK_BATCH else "")
        return total

    async def retry_dlq_task(self, task_id: str) -> RedisTask:
        """Move a dead-lettered (or failed) task back to pending with its retry count reset."""
        validate_task_id(task_id)
        call = scripts.retry_dlq(self.keys_for(task_id), task_id=task_id, events=self.events_arg)
        await self.run(call, task_id)
        self._touched([task_id])
        task = await self.get_task(task_id)
        if task is None:  # deleted in between by someone else
            raise TaskNotFound(task_id)
        return task

    async def retry_all_dlq(self, on_progress: Callable[[int, int], None] | None = None) -> int:
        """Retry every dead-lettered task (one retry_dlq_task each, so each is one atomic
        transition); returns how many were retried. Ids are read with SSCAN first, so a
        record that cannot be decoded is retried too instead of ending the loop; an id
        retried or purged by someone else meanwhile is skipped. `on_progress(done, total)`
        is called after each one."""
        async with self._command():
            ids = [
                codec.as_text(member)
                for keys in self.layout.parts  # every partition's DLQ
                async for member in self.redis.sscan_iter(keys.dlq, count=500)
            ]
        done = 0
        for task_id in ids:
            try:
                await self.retry_dlq_task(task_id)
            except (TaskStateError, TaskNotFound):  # retried or purged meanwhile
                continue
            except RedisUnavailable:
                raise
            except QueueError as exc:  # moved, but its record cannot be read back
                log.warning("retried %s, but: %s", task_id, exc)
            done += 1
            if on_progress is not None:
                on_progress(done, len(ids))
        return done

    async def purge_dlq(self) -> int:
        """Delete every dead-lettered task; returns how many."""
        total = 0
        for keys in self.layout.parts:
            total += await self._chunked(partial(_purge_dlq_call, keys, self.events_arg))
        await self._collect_if_stored()
        return total

    async def clear_completed(self, older_than_seconds: float = 86400) -> int:
        """Delete completed and cancelled tasks that finished more than
        `older_than_seconds` ago (server time); returns how many."""
        age_ms = max(0, int(older_than_seconds * 1000))
        total = 0
        for keys in self.layout.parts:
            total += await self._chunked(partial(_clear_finished_call, keys, age_ms))
        await self._collect_if_stored()
        return total

    async def _collect_if_stored(self) -> None:
        # Blobs in a user-supplied store go with the tasks just deleted (blobs.py).
        if self.blob_store is not None:
            await self.collect_blobs()


def _purge_dlq_call(keys: QueueKeys, events: int, limit: int) -> scripts.ScriptCall:
    return scripts.purge_dlq(keys, limit=limit, events=events)


def _clear_finished_call(keys: QueueKeys, age_ms: int, limit: int) -> scripts.ScriptCall:
    return scripts.clear_finished(keys, age_ms=age_ms, limit=limit)
