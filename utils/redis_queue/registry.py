"""The worker registry in Redis: who is serving a queue, and who stopped beating."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from . import codec, scripts
from .connection import redis_errors
from .errors import QueueError, WorkerIdInUse
from .queue import RedisTaskQueue

log = logging.getLogger("agentic.worker")

__all__ = [
    "WorkerInfo",
    "beat_forever",
    "join_registry",
    "list_workers",
    "record_worker",
    "remove_worker",
    "workers_from",
]

# A worker silent for this many beat intervals is shown as dead; after PRUNE_SECONDS of
# silence it is dropped from the registry.
DEAD_AFTER_BEATS = 3
PRUNE_SECONDS = 3600


@dataclass(slots=True)
class WorkerInfo:
    worker_id: str
    host: str
    pid: int
    task_types: list[str]
    concurrency: int
    started_at: str
    beat_interval: float
    in_flight: int = 0
    done: int = 0
    failed: int = 0
    last_beat_at: str = ""
    alive: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


async def record_worker(queue: RedisTaskQueue, info: WorkerInfo) -> None:
    await queue.run(_beat(queue, info, mode="beat"))


async def join_registry(queue: RedisTaskQueue, info: WorkerInfo) -> None:
    """Record a starting worker's first beat; WorkerIdInUse if a live worker holds its id.
    The check and the write are one script, so of two workers started under one id at the
    same instant exactly one joins. An entry left by a dead process of this host (a crashed
    child its supervisor restarts under the same id) is taken over at once rather than
    after its beats lapse: the script names the holder, this host checks its pid, and the
    second call takes over only that holder's entry."""
    takeover: int | None = None
    for _ in range(2):
        reply = await queue.run(_beat(queue, info, mode="join", takeover_pid=takeover))
        holder = codec.as_text(reply[1]) if len(reply) > 1 else ""
        if not holder:
            return
        other = _parse(holder)
        if other is None or not _is_gone(other, info):
            host, pid = (other.host, other.pid) if other else ("?", 0)
            raise WorkerIdInUse(info.worker_id, host, pid)
        takeover = other.pid
    raise WorkerIdInUse(info.worker_id, "?", 0)  # the id changed hands twice while joining


def _beat(
    queue: RedisTaskQueue, info: WorkerInfo, *, mode: str, takeover_pid: int | None = None
) -> scripts.ScriptCall:
    data = info.to_dict()
    del data["last_beat_at"], data["alive"]
    return scripts.worker_beat(
        queue.keys,
        worker_id=info.worker_id,
        info=json.dumps(data),
        prune_ms=PRUNE_SECONDS * 1000,
        mode=mode,
        dead_after=DEAD_AFTER_BEATS,
        takeover_pid=takeover_pid,
    )


def _parse(raw: str) -> WorkerInfo | None:
    try:
        return WorkerInfo(**json.loads(raw))
    except (TypeError, ValueError):
        return None


def _is_gone(other: WorkerInfo, me: WorkerInfo) -> bool:
    """The holder is this process, or a process of this host that no longer exists."""
    if other.host != me.host or other.host != socket.gethostname():
        return False
    if other.pid == me.pid:
        return True
    try:
        os.kill(other.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, another user's
        return False
    return False


async def beat_forever(
    queue: RedisTaskQueue, describe: Callable[[], WorkerInfo], interval: float
) -> None:
    """Record `describe()` every `interval` seconds, forever; a failed beat is logged and
    the next one tries again."""
    while True:
        try:
            await record_worker(queue, describe())
        except QueueError as exc:
            log.warning("worker registry beat failed: %s", exc)
        await asyncio.sleep(interval)  # the registry's heartbeat period


async def remove_worker(queue: RedisTaskQueue, worker_id: str) -> None:
    call = scripts.worker_beat(
        queue.keys, worker_id=worker_id, info="", prune_ms=PRUNE_SECONDS * 1000, mode="leave"
    )
    await queue.run(call)


async def list_workers(queue: RedisTaskQueue) -> list[WorkerInfo]:
    """Every registered worker, marked alive or not by its last beat (server time)."""
    async with redis_errors(queue.redis_url):
        async with queue.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(queue.keys.workers)
            pipe.zrange(queue.keys.worker_beats, 0, -1, withscores=True)
            raw, beats = await pipe.execute()
        # not pipelined: a cluster pipeline refuses keyless commands
        seconds, micros = await queue.redis.time()
    return workers_from(raw, beats, seconds * 1000 + micros // 1000)


def workers_from(raw: Any, beats: Any, now_ms: int) -> list[WorkerInfo]:
    """The registry as read (HGETALL of workers, ZRANGE WITHSCORES of beats, server ms),
    each worker marked alive or not; entries that do not parse are skipped. Shared with
    the metrics collector, which reads with a sync client."""
    last_beat = {codec.as_text(member): int(score) for member, score in beats}
    workers = []
    for key, value in codec.text_fields(raw).items():
        info = _parse(value)
        if info is None:
            continue
        beat_ms = last_beat.get(key, 0)
        info.last_beat_at = codec.iso_from_ms(str(beat_ms)) or ""
        info.alive = now_ms - beat_ms <= DEAD_AFTER_BEATS * info.beat_interval * 1000
        workers.append(info)
    return sorted(workers, key=lambda w: w.worker_id)
