"""Reading a queue's sizes and listing its tasks by state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import codec
from .keys import QueueKeys
from .models import TaskState

__all__ = ["QueueSnapshot", "ids_in_state", "merge_snapshots"]


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    sizes: dict[str, int]  # pending, delayed, processing, completed, failed, cancelled, dlq
    pending_by_priority: dict[str, int]
    pending_by_type: dict[str, int]
    counters: dict[str, int]  # lifetime counters from the stats hash


def merge_snapshots(parts: list[QueueSnapshot]) -> QueueSnapshot:
    """One snapshot of a partitioned queue: every count summed over its partitions."""
    if len(parts) == 1:
        return parts[0]

    def total(dicts: list[dict[str, int]]) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in dicts:
            for key, value in d.items():
                out[key] = out.get(key, 0) + value
        return out

    counters = total(
        [{k: v for k, v in p.counters.items() if k not in ("clock", "fence")} for p in parts]
    )
    return QueueSnapshot(
        total([p.sizes for p in parts]),
        total([p.pending_by_priority for p in parts]),
        total([p.pending_by_type for p in parts]),
        counters,
    )


async def ids_in_state(
    redis: Any, keys: QueueKeys, state: TaskState, limit: int
) -> list[tuple[float, str]]:
    """Up to `limit` (rank, id) pairs in `state` in one partition: pending ones in dequeue
    order (rank = score), others oldest first (rank = time); the DLQ is a set, so a
    sample of it, by id."""
    if state == TaskState.PENDING:
        heads: list[tuple[float, str]] = []
        for raw_type in await redis.smembers(keys.types):
            pending = keys.pending(codec.as_text(raw_type))
            rows = await redis.zrange(pending, 0, limit - 1, withscores=True)
            heads.extend((float(score), codec.as_text(member)) for member, score in rows)
        return sorted(heads)[:limit]
    if state == TaskState.DEAD_LETTER:
        ids = sorted(codec.as_text(m) for m in await redis.srandmember(keys.dlq, limit))
        return [(0.0, task_id) for task_id in ids]
    zset = {
        TaskState.DELAYED: keys.delayed,
        TaskState.PROCESSING: keys.processing,
        TaskState.COMPLETED: keys.completed,
        TaskState.FAILED: keys.failed,
        TaskState.CANCELLED: keys.cancelled,
    }[state]
    rows = await redis.zrange(zset, 0, limit - 1, withscores=True)
    return [(float(score), codec.as_text(member)) for member, score in rows]
