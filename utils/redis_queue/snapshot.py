"""Reading a queue's sizes and listing its tasks by state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import codec
from .keys import QueueKeys
from .models import TaskState

__all__ = ["QueueSnapshot", "ids_in_state"]


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    sizes: dict[str, int]  # pending, delayed, processing, completed, failed, cancelled, dlq
    pending_by_priority: dict[str, int]
    pending_by_type: dict[str, int]
    counters: dict[str, int]  # lifetime counters from the stats hash


async def ids_in_state(redis: Any, keys: QueueKeys, state: TaskState, limit: int) -> list[str]:
    """Up to `limit` ids in `state`: pending ones in dequeue order, others oldest first
    (the DLQ is a set, so a sample of it, sorted)."""
    if state == TaskState.PENDING:
        heads: list[tuple[float, str]] = []
        for raw_type in await redis.smembers(keys.types):
            pending = keys.pending(codec.as_text(raw_type))
            rows = await redis.zrange(pending, 0, limit - 1, withscores=True)
            heads.extend((float(score), codec.as_text(member)) for member, score in rows)
        return [task_id for _, task_id in sorted(heads)[:limit]]
    if state == TaskState.DEAD_LETTER:
        return sorted(codec.as_text(m) for m in await redis.srandmember(keys.dlq, limit))
    zset = {
        TaskState.DELAYED: keys.delayed,
        TaskState.PROCESSING: keys.processing,
        TaskState.COMPLETED: keys.completed,
        TaskState.FAILED: keys.failed,
        TaskState.CANCELLED: keys.cancelled,
    }[state]
    return [codec.as_text(m) for m in await redis.zrange(zset, 0, limit - 1)]
