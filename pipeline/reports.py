"""The documents an operator reads about a queue, shared by the CLI's --json output and the
dashboard's /api/ endpoints, so both always say the same thing."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from utils.redis_queue import MinuteCounts, RedisTaskQueue, codec
from utils.redis_queue.connection import redis_errors
from utils.redis_queue.registry import WorkerInfo, list_workers
from utils.redis_queue.scores import band_bounds, queued_at_us

__all__ = ["gather_info", "oldest_waiting_seconds", "queue_overview", "worker_rows"]

# Types whose heads are read to find the oldest waiting task: enough for any real queue,
# and a bound on the reads (4 per type) when a queue has thousands of types.
OLDEST_TYPES_READ = 500
HISTORY_MINUTES = 60
CURRENT_TASKS_READ = 1000  # running tasks read to show what each worker does


async def gather_info(
    queue: RedisTaskQueue, history: Sequence[MinuteCounts] | None = None
) -> dict[str, Any]:
    """`agentic info --json`: sizes and counters, workers, limits, and the last hour
    (`history`: the last HISTORY_MINUTES as read already, e.g. a few seconds ago)."""
    (stats, workers, limits, oldest, read), (paused, schedules) = await asyncio.gather(
        asyncio.gather(
            queue.get_statistics(),
            list_workers(queue),
            queue.get_limits(),
            oldest_waiting_seconds(queue),
            _last_hour(queue) if history is None else _given(history),
        ),
        asyncio.gather(queue.get_paused(), queue.list_schedules()),
    )
    history = read
    minutes = [m.to_dict() for m in history]
    completed = sum(m["completed"] for m in minutes)
    failed = sum(m["failed"] for m in minutes)
    return {
        "queue": queue.queue_name,
        "partitions": queue.partitions,
        "statistics": stats,
        "oldest_waiting_seconds": oldest,
        "last_hour": {
            "enqueued": sum(m["enqueued"] for m in minutes),
            "completed": completed,
            "failed": failed,
            "retried": sum(m["retried"] for m in minutes),
            "failure_rate": round(failed / (completed + failed), 4) if completed + failed else 0.0,
            "per_minute": minutes,
        },
        "workers": [w.to_dict() for w in workers],
        "limits": [status.as_dict() for status in limits.values()],
        "_limits": limits,
        # "*": the whole queue, else a task type; the time (UTC) it was paused
        "paused": {name: at.isoformat() for name, at in sorted(paused.items())},
        "schedules": [s.to_dict() for s in schedules],
    }


def queue_overview(info: dict[str, Any]) -> dict[str, Any]:
    """The short form of gather_info() the overview of every queue shows."""
    stats = info["statistics"]
    return {
        "queue": info["queue"],
        "partitions": info["partitions"],
        "sizes": {
            state: stats[state]
            for state in (
                "pending",
                "delayed",
                "processing",
                "completed",
                "failed",
                "cancelled",
                "dlq",
            )
        },
        "oldest_waiting_seconds": info["oldest_waiting_seconds"],
        "last_hour": {k: v for k, v in info["last_hour"].items() if k != "per_minute"},
        "paused": sorted(info.get("paused", {})),  # "*" (the whole queue) or task types
        "workers_alive": sum(1 for w in info["workers"] if w["alive"]),
        "workers_silent": sum(1 for w in info["workers"] if not w["alive"]),
    }


async def _last_hour(queue: RedisTaskQueue) -> Sequence[MinuteCounts]:
    return await queue.get_history(HISTORY_MINUTES)


async def _given(history: Sequence[MinuteCounts]) -> Sequence[MinuteCounts]:
    return history


async def oldest_waiting_seconds(queue: RedisTaskQueue) -> float | None:
    """How long the longest-waiting pending task has waited (server time), or None when
    nothing is pending: the head of each priority band of each type is the oldest of that
    band, so 4 reads per type (pipelined, one round trip per partition)."""
    async with redis_errors(queue.redis_url):
        seconds, micros = await queue.redis.time()
        now_us = seconds * 1_000_000 + micros
        oldest: int | None = None
        for keys in queue.layout.parts:
            types = sorted(codec.as_text(t) for t in await queue.redis.smembers(keys.types))
            if not types:
                continue
            async with queue.redis.pipeline(transaction=False) as pipe:
                for task_type in types[:OLDEST_TYPES_READ]:
                    for priority in range(4):
                        low, high = band_bounds(priority)
                        pipe.zrange(
                            keys.pending(task_type),
                            low,
                            f"({high}",
                            byscore=True,
                            offset=0,
                            num=1,
                            withscores=True,
                        )
                heads = await pipe.execute()
            for rows in heads:
                for _, score in rows:
                    at = queued_at_us(score)
                    oldest = at if oldest is None else min(oldest, at)
    if oldest is None:
        return None
    return round(max(0, now_us - oldest) / 1_000_000, 3)


async def worker_rows(queue: RedisTaskQueue) -> list[dict[str, Any]]:
    """Every registered worker with the tasks it is running now (from the processing
    list: up to CURRENT_TASKS_READ of them, each with its type and start time)."""
    workers: list[WorkerInfo] = await list_workers(queue)
    page = await queue.page_tasks("processing", limit=CURRENT_TASKS_READ)
    running: dict[str, list[dict[str, Any]]] = {}
    for task in page.tasks:
        if task.worker_id:
            running.setdefault(task.worker_id, []).append(
                {
                    "task_id": task.task_id,
                    "task_type": task.task_type,
                    "started_at": task.started_at,
                }
            )
    rows = []
    for worker in workers:
        row = worker.to_dict()
        row["current"] = running.get(worker.worker_id, [])
        rows.append(row)
    return rows
