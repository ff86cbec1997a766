"""Pausing: stop and restart claiming from the whole queue or one task type. The pause is
a field of each partition's `paused` hash, read by lua/claim.lua in the claim's own atomic
step (so no claim slips past it) and kept in Redis (it outlives every worker). Enqueue,
delayed promotion, lease reaping and settling go on while paused."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from .. import codec, scripts
from ..keys import validate_task_type
from .client import QueueClient

__all__ = ["WHOLE_QUEUE", "Pausing"]

WHOLE_QUEUE = "*"  # the `paused` field (and get_paused() key) of a whole-queue pause


def _target(task_type: str | None) -> str:
    return WHOLE_QUEUE if task_type is None else validate_task_type(task_type)


class Pausing(QueueClient):
    async def pause(self, task_type: str | None = None) -> bool:
        """Stop claiming tasks of `task_type` (every type when None): the next claim of
        any worker skips them; tasks already running finish. Returns False when it was
        paused already (its pause time stays)."""
        target = _target(task_type)
        replies = await asyncio.gather(
            *(self.run(scripts.pause(keys, target=target)) for keys in self.layout.parts)
        )
        return any(int(reply[0]) == 1 for reply in replies)

    async def resume(self, task_type: str | None = None) -> bool:
        """Lift a pause made by pause(task_type) (the same argument: resuming the whole
        queue leaves a type paused on its own paused) and wake the blocked workers, so
        they claim at once. Returns False when it was not paused."""
        target = _target(task_type)
        replies = await asyncio.gather(
            *(self.run(scripts.resume(keys, target=target)) for keys in self.layout.parts)
        )
        if self._heads is not None:  # this client's own claims saw the partitions as empty
            for index in range(self.partitions):
                self._heads.stale(index)
        return any(int(reply[0]) == 1 for reply in replies)

    async def get_paused(self) -> dict[str, datetime]:
        """What is paused, "*" for the whole queue or a task type, with when (UTC)."""
        out: dict[str, datetime] = {}
        async with self._command():
            for keys in self.layout.parts:
                for field, value in (await self.redis.hgetall(keys.paused)).items():
                    at = datetime.fromtimestamp(int(value) / 1000, UTC)
                    name = codec.as_text(field)
                    out[name] = min(at, out.get(name, at))
        return out
