"""Administering: cancel, the DLQ's retry and purge, cleanup of finished tasks."""

from __future__ import annotations

import os
from functools import partial

from .. import scripts
from ..errors import TaskNotFound
from ..keys import QueueKeys, validate_task_id
from ..models import RedisTask, TaskState
from .inspect import Inspector

__all__ = ["Administrator"]


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
