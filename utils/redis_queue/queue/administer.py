"""Administering: cancel, the DLQ's retry and purge, cleanup of finished tasks."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from functools import partial

from .. import codec, scripts
from ..errors import QueueError, RedisUnavailable, TaskNotFound, TaskStateError
from ..keys import QueueKeys, validate_task_id
from ..models import RedisTask, TaskState
from .inspect import Inspector

__all__ = ["Administrator"]

log = logging.getLogger("agentic.queue")


class Administrator(Inspector):
    async def cancel(self, task_id: str) -> TaskState:
        """Cancel a task. A pending or delayed task is cancelled at once (returns
        CANCELLED); a running one is flagged and its worker told (returns PROCESSING).
        Raises TaskNotFound, or TaskStateError if it already finished."""
        validate_task_id(task_id)
        call = scripts.cancel(self.keys_for(task_id), task_id=task_id, request=os.urandom(8).hex())
        reply = await self.run(call, task_id)
        if scripts.cancel_outcome(reply) is scripts.CancelOutcome.CANCELLED:
            return TaskState.CANCELLED
        return TaskState.PROCESSING

    async def retry_dlq_task(self, task_id: str) -> RedisTask:
        """Move a dead-lettered (or failed) task back to pending with its retry count reset."""
        validate_task_id(task_id)
        await self.run(scripts.retry_dlq(self.keys_for(task_id), task_id=task_id), task_id)
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
            total += await self._chunked(partial(_purge_dlq_call, keys))
        return total

    async def clear_completed(self, older_than_seconds: float = 86400) -> int:
        """Delete completed and cancelled tasks that finished more than
        `older_than_seconds` ago (server time); returns how many."""
        age_ms = max(0, int(older_than_seconds * 1000))
        total = 0
        for keys in self.layout.parts:
            total += await self._chunked(partial(_clear_finished_call, keys, age_ms))
        return total


def _purge_dlq_call(keys: QueueKeys, limit: int) -> scripts.ScriptCall:
    return scripts.purge_dlq(keys, limit=limit)


def _clear_finished_call(keys: QueueKeys, age_ms: int, limit: int) -> scripts.ScriptCall:
    return scripts.clear_finished(keys, age_ms=age_ms, limit=limit)
