"""What the dashboard reads and does, as plain documents: one place for the pages and
their /api/ twins, and every action a call of the engine's or the pipeline's public API
(nothing here writes to Redis itself)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from pipeline.cli.progress import run_row
from pipeline.distributed import DistributedPipelineManager
from pipeline.errors import RunNotFound
from pipeline.reports import HISTORY_MINUTES, gather_info, queue_overview, worker_rows
from pipeline.runs import RunState
from pipeline.spec import secret_like
from utils.config import Settings
from utils.redaction import redact_secrets
from utils.redis_queue import (
    InvalidTaskError,
    MinuteCounts,
    RedisTaskQueue,
    TaskState,
    TaskStateError,
    codec,
)
from utils.redis_queue.keys import BLOB_NAMES, QueueKeys, validate_queue_name

__all__ = ["Console", "UnknownQueue", "redact", "timeline"]

log = logging.getLogger("agentic.dashboard")
REDACTED = "[redacted]"
MAX_QUEUES = 200  # queues shown; a registry larger than this is cut, in name order
HISTORY_REUSE_SECONDS = 10.0


# The states a purge takes (running tasks only go one by one, forced).
PURGEABLE = ("pending", "delayed", "completed", "failed", "cancelled", "dead_letter")
OUTPUT_ENTRIES = 200  # the newest entries of a task's output stream its page shows
RUN_EVENTS = 200  # the newest events of a run its page shows


def render_output(chunks: list[dict[str, Any]]) -> str:
    """A task's output as a reader sees it: model text flowing, other entries a line each
    ([log] ..., [40%] ...), a marker where another attempt starts, the end's state."""
    out: list[str] = []
    attempt = 0
    for chunk in chunks:
        if attempt and chunk["attempt"] != attempt and chunk["kind"] != "end":
            out.append(f"\n-- attempt {chunk['attempt']} --\n")
        attempt = chunk["attempt"]
        if chunk["kind"] == "text":
            out.append(chunk["text"])
        elif chunk["kind"] == "progress":
            out.append(f"\n[{round((chunk['fraction'] or 0) * 100)}%] {chunk['text']}\n")
        elif chunk["kind"] == "end":
            out.append(f"\n-- {chunk['text']} --\n")
        else:
            out.append(f"\n[{chunk['kind']}] {chunk['text']}\n")
    return "".join(out).replace("\n\n\n", "\n\n").strip("\n")


class UnknownQueue(LookupError):
    """A queue name the dashboard does not serve."""


class Console:
    """The queues under the configured prefix (those registered in Redis, the configured
    ones and the pipeline's), each opened once with its stored partition count, and one
    pipeline manager for runs (it drives only the runs resumed from here)."""

    def __init__(self, settings: Settings, extra_queues: tuple[str, ...] = ()) -> None:
        self.settings = settings
        self.pipeline_queue = settings.pipeline_queue_name()
        self._configured = {settings.queue_name, self.pipeline_queue, *extra_queues}
        self._queues: dict[str, RedisTaskQueue] = {}
        self._lock = asyncio.Lock()
        self._manager: DistributedPipelineManager | None = None
        self._hours: dict[str, tuple[float, list[MinuteCounts]]] = {}

    async def close(self) -> None:
        if self._manager is not None:
            await self._manager.stop()
        for queue in self._queues.values():
            with contextlib.suppress(Exception):
                await queue.close()
        self._queues.clear()

    # -- queues --------------------------------------------------------------------------

    async def queue_names(self) -> list[str]:
        home = await self._open(self.settings.queue_name)
        names = set(self._configured) | set(await home.queue_names())
        return sorted(names)[:MAX_QUEUES]

    async def queue(self, name: str) -> RedisTaskQueue:
        try:
            validate_queue_name(name)
        except ValueError as exc:
            raise UnknownQueue(name) from exc
        if name not in self._queues and name not in await self.queue_names():
            raise UnknownQueue(name)
        return await self._open(name)

    async def _open(self, name: str) -> RedisTaskQueue:
        async with self._lock:
            queue = self._queues.get(name)
            if queue is None:
                partitions = await self._stored_partitions(name)
                queue = RedisTaskQueue.from_settings(
                    self.settings, queue_name=name, partitions=partitions
                )
                await queue.connect()
                self._queues[name] = queue
            return queue

    async def _stored_partitions(self, name: str) -> int:
        """The partition count the queue's clients agreed on (its meta hash), so a queue
        partitioned differently from the settings is still shown."""
        home = self._queues.get(self.settings.queue_name)
        if home is None:
            return self.settings.partitions if name == self.settings.queue_name else 1
        meta = QueueKeys(self.settings.key_prefix, name).meta
        stored = await home.redis.hget(meta, "partitions")
        text = codec.as_text(stored) if stored is not None else "1"
        return int(text) if text.isdigit() else 1

    # -- reading -------------------------------------------------------------------------

    async def overview(self) -> dict[str, Any]:
        names = await self.queue_names()
        infos = await asyncio.gather(*(self.queue_info(name) for name in names))
        return {"queues": [queue_overview(info) for info in infos]}

    async def queue_info(self, name: str) -> dict[str, Any]:
        queue = await self.queue(name)
        info = await gather_info(queue, await self._last_hour(queue))
        info.pop("_limits", None)
        return info

    async def _last_hour(self, queue: RedisTaskQueue) -> list[MinuteCounts]:
        """The last hour per minute, read at most every HISTORY_REUSE_SECONDS per queue:
        an open page refreshes every 2 s, and these counters are per minute (60 reads a
        queue, the bulk of a refresh's Redis work otherwise)."""
        now = time.monotonic()
        cached = self._hours.get(queue.queue_name)
        if cached is not None and now - cached[0] < HISTORY_REUSE_SECONDS:
            return cached[1]
        minutes = await queue.get_history(HISTORY_MINUTES)
        self._hours[queue.queue_name] = (now, minutes)
        return minutes

    async def history(self, name: str, minutes: int) -> list[dict[str, Any]]:
        queue = await self.queue(name)
        return [m.to_dict() for m in await queue.get_history(minutes)]

    async def tasks(
        self, name: str, state: str, task_type: str | None, cursor: str | None, limit: int
    ) -> dict[str, Any]:
        queue = await self.queue(name)
        page = await queue.page_tasks(state, task_type=task_type, cursor=cursor, limit=limit)
        return page.to_dict()

    async def search(
        self, name: str, text: str, state: str | None, task_type: str | None, scan_limit: int
    ) -> dict[str, Any]:
        queue = await self.queue(name)
        found = await queue.search_tasks(
            text, state=state, task_type=task_type, scan_limit=scan_limit
        )
        return {**found.to_dict(), "scan_limit": scan_limit}

    async def task(self, name: str, task_id: str) -> dict[str, Any] | None:
        queue = await self.queue(name)
        # A claim-checked payload or result (megabytes, maybe) stays in Redis: the page
        # shows its size and its key (RedisTask.blobs).
        task = await queue.get_task(task_id, blobs=False)
        if task is None:
            return None
        doc = task.to_dict()
        keys = queue.keys_for(task_id)
        doc["blob_keys"] = {n: keys.blob(task_id, n) for n in BLOB_NAMES if n in task.blobs}
        doc["attempt_history"] = [a.to_dict() for a in await queue.get_attempts(task_id)]
        doc["payload"] = redact(doc["payload"])
        doc["result"] = redact(doc["result"])
        doc["trace_id"] = trace_id_of(task.meta)
        run_id = task.payload.get("run_id")
        doc["run_id"] = run_id if isinstance(run_id, str) else None
        chunks = await queue.read_output(task_id, last=OUTPUT_ENTRIES)
        doc["output"] = [{**c.to_dict(), "text": redact_secrets(c.text)} for c in chunks]
        doc["output_text"] = render_output(doc["output"])
        return doc

    async def workers(self, name: str) -> list[dict[str, Any]]:
        return await worker_rows(await self.queue(name))

    async def limits(self, name: str) -> list[dict[str, Any]]:
        queue = await self.queue(name)
        return [status.as_dict() for status in (await queue.get_limits()).values()]

    async def runs(self, limit: int) -> list[dict[str, Any]]:
        manager = await self.manager()
        return [run_row(run) for run in await manager.list_runs(limit)]

    async def run_events(self, run_id: str) -> list[dict[str, Any]]:
        """The run's newest events from its event stream (the one its CLI reads)."""
        manager = await self.manager()
        return await manager.events.recent(run_id, RUN_EVENTS)

    async def run(self, run_id: str) -> RunState | None:
        manager = await self.manager()
        try:
            return await manager.get_run(run_id)
        except RunNotFound:
            return None

    async def run_holder(self, run_id: str) -> dict[str, Any] | None:
        manager = await self.manager()
        holder = await manager.store.holder(run_id)
        if holder is None:
            return None
        return {"manager": holder[0], "seconds_left": round(holder[1], 1)}

    # -- acting (each one call of the public API) ----------------------------------------

    async def retry(self, name: str, task_id: str) -> str:
        task = await (await self.queue(name)).retry_dlq_task(task_id)
        return f"task {task.task_id} is {task.state} again"

    async def cancel(self, name: str, task_id: str) -> str:
        outcome = await (await self.queue(name)).cancel(task_id)
        if outcome == TaskState.CANCELLED:
            return f"task {task_id} cancelled"
        return f"task {task_id} is running: its worker was asked to stop it"

    async def retry_all(self, name: str) -> str:
        count = await (await self.queue(name)).retry_all_dlq()
        return f"retried {count} dead-lettered task(s)"

    async def purge(self, name: str) -> str:
        count = await (await self.queue(name)).purge_dlq()
        return f"purged {count} dead-lettered task(s)"

    async def delete(self, name: str, task_id: str, force: bool) -> str:
        try:
            was = await (await self.queue(name)).delete_task(task_id, force=force)
        except TaskStateError as exc:
            raise TaskStateError(
                task_id,
                exc.state,
                f"task {task_id} is running: delete it with force=yes "
                "(its worker is told to stop and its result is dropped)",
            ) from exc
        return f"task {task_id} deleted (was {was.value})"

    async def count_state(self, name: str, state: str) -> int:
        """How many tasks a purge of `state` would delete now (for its confirmation)."""
        if state not in PURGEABLE:
            raise InvalidTaskError(f"cannot purge state {state!r}: use one of {PURGEABLE}")
        sizes = await (await self.queue(name)).get_queue_size()
        return sizes["dlq" if state == "dead_letter" else state]

    async def purge_state(self, name: str, state: str) -> str:
        if state not in PURGEABLE:
            raise InvalidTaskError(f"cannot purge state {state!r}: use one of {PURGEABLE}")
        count = await (await self.queue(name)).purge(state)
        return f"purged {count} {state} task(s)"

    async def count_type(self, name: str, task_type: str) -> tuple[int, int]:
        """How many pending and delayed tasks of `task_type` a cancel would take: pending
        from its per-type index, delayed by paging the delayed set (no such index)."""
        queue = await self.queue(name)
        page = await queue.page_tasks("pending", task_type=task_type, limit=1)
        delayed, cursor = 0, None
        while True:
            found = await queue.page_tasks(
                "delayed", task_type=task_type, cursor=cursor, limit=1000
            )
            delayed += len(found.tasks)
            cursor = found.next_cursor
            if cursor is None:
                return page.total or 0, delayed

    async def cancel_type(self, name: str, task_type: str) -> str:
        count = await (await self.queue(name)).cancel_by_type(task_type)
        return f"cancelled {count} queued {task_type} task(s)"

    async def pause(self, name: str, task_type: str | None) -> str:
        changed = await (await self.queue(name)).pause(task_type)
        what = "queue" if task_type is None else f"task type {task_type}"
        return f"{what} paused" if changed else f"{what} was paused already"

    async def resume(self, name: str, task_type: str | None) -> str:
        changed = await (await self.queue(name)).resume(task_type)
        what = "queue" if task_type is None else f"task type {task_type}"
        return f"{what} resumed" if changed else f"{what} was not paused"

    async def cancel_run(self, run_id: str) -> str:
        status = await (await self.manager()).cancel_run(run_id)
        if not status.is_final:
            return f"run {run_id}: cancel requested; the manager driving it ends it"
        return f"run {run_id}: {status}"

    async def decide_run(self, run_id: str, approve: bool, text: str | None, by: str) -> str:
        manager = await self.manager()
        if approve:
            standing = await manager.approve_run(run_id, by=by, comment=text)
        else:
            standing = await manager.reject_run(run_id, text or "rejected", by=by)
        return f"run {run_id}: {standing['decision']} by {standing.get('by')}"

    async def resume_run(self, run_id: str) -> str:
        if await (await self.manager()).resume_run(run_id):
            return f"run {run_id} resumed: this dashboard drives it now"
        holder = await self.run_holder(run_id)
        if holder is not None:
            return (
                f"run {run_id} is driven by {holder['manager']} "
                f"(its lock has {holder['seconds_left']} s left)"
            )
        return f"run {run_id} has ended or cannot be read"

    async def manager(self) -> DistributedPipelineManager:
        """A manager that reads, cancels and resumes on request (never on start)."""
        async with self._lock:
            if self._manager is None:
                manager = DistributedPipelineManager(settings=self.settings, resume=False)
                await manager.start()
                self._manager = manager
            return self._manager


def trace_id_of(meta: dict[str, str]) -> str | None:
    """The trace id of a W3C traceparent (version-traceid-spanid-flags)."""
    parts = meta.get("traceparent", "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


def redact(value: Any) -> Any:
    """`value` with the values of secret-looking keys (api_key, password, token, ...)
    replaced, at any depth: a payload is user input and may carry credentials."""
    if isinstance(value, dict):
        return {k: REDACTED if secret_like(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value


def timeline(run: RunState) -> dict[str, Any]:
    """A run's subtasks in submission order, each placed on the run's time axis (seconds
    since the run started) with its tokens, cost and result, for the timeline view."""
    start = run.created_at
    end = run.finished_at or max(
        [run.updated_at, *(r.finished_at or r.submitted_at for r in run.subtasks.values())]
    )
    span = max(end - start, 0.001)
    rows = []
    for record in sorted(run.subtasks.values(), key=lambda r: r.submitted_at):
        usage = record.result.get("usage") if isinstance(record.result, dict) else None
        usage = usage if isinstance(usage, dict) else {}
        finished = record.finished_at
        rows.append(
            {
                "task_id": record.task_id,
                "stage": str(record.stage),
                "subtask_id": record.subtask_id,
                "state": str(record.state),
                "priority": record.priority,
                "attempts": record.attempts,
                "start_seconds": round(record.submitted_at - start, 3),
                "duration_seconds": None
                if finished is None
                else round(finished - start, 3) - round(record.submitted_at - start, 3),
                "offset_pct": round(100 * (record.submitted_at - start) / span, 2),
                "width_pct": round(
                    max(0.5, 100 * ((finished or end) - record.submitted_at) / span), 2
                ),
                "tokens": int(usage.get("prompt_tokens", 0) or 0)
                + int(usage.get("completion_tokens", 0) or 0),
                "cost_usd": float(usage.get("cost_usd", 0.0) or 0.0),
                "result": redact(record.result),
                "error": record.error,
            }
        )
    return {"span_seconds": round(span, 3), "subtasks": rows}
