"""Reading a queue's sizes and listing its tasks by state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import codec
from .keys import QueueKeys
from .models import TaskPriority, TaskState

__all__ = ["QueueSnapshot", "ids_in_state", "parse_sizes"]


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    sizes: dict[str, int]  # pending, delayed, processing, completed, failed, cancelled, dlq
    pending_by_priority: dict[str, int]
    pending_by_type: dict[str, int]
    counters: dict[str, int]  # lifetime counters from the stats hash


def parse_sizes(reply: list[Any]) -> QueueSnapshot:
    """sizes.lua's reply as a QueueSnapshot."""
    processing, delayed, completed, failed, cancelled, dlq = (int(v) for v in reply[:6])
    by_priority = {p.name.lower(): 0 for p in TaskPriority}
    by_type: dict[str, int] = {}
    per_type = reply[6]
    for i in range(0, len(per_type), 6):
        by_type[codec.as_text(per_type[i])] = int(per_type[i + 1])
        for p in TaskPriority:
            by_priority[p.name.lower()] += int(per_type[i + 2 + p.value])
    counters = {key: int(value) for key, value in codec.text_fields(reply[7]).items()}
    sizes = {
        "pending": sum(by_type.values()),
        "delayed": delayed,
        "processing": processing,
        "completed": completed,
        "failed": failed,
        "cancelled": cancelled,
        "dlq": dlq,
    }
    return QueueSnapshot(sizes, by_priority, by_type, counters)


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
