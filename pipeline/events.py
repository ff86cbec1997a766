"""A run's events in one place: every RunEvent a manager emits (started, stage, submitted,
finished, failed, approval, budget_warning, ended, ...) is appended to the run's event
stream in Redis (`QueueKeys.run_events`), which the CLI's progress lines, `agentic
pipeline events` and the tests read, instead of each working out its own.

Appending is a listener (`RunEventLog.__call__`): events are buffered and written in
order by one background flush per manager, so a run never waits on its display; a write
that fails is logged and dropped (a display must not break a run). The stream is bounded
(XADD MAXLEN ~) and expires with the run's record (run_ttl_seconds after its last event).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from utils.redis_queue import QueueError, RedisTaskQueue
from utils.redis_queue.codec import as_text

from .runs import RunEvent, Stage

__all__ = ["MAX_EVENT_DATA", "RunEventLog", "decode_event", "encode_event", "event_dict"]

log = logging.getLogger("agentic.pipeline")

MAX_EVENT_DATA = 65_536  # bytes of an event's data JSON; past it only its summary fields
_SUMMARY_FIELDS = ("ok", "passed", "summary", "usage", "reasons", "agent")
_IDLE_CHECK_SECONDS = 5.0
_STAGES = {str(stage) for stage in Stage}


def encode_event(event: RunEvent) -> dict[str, str]:
    data = json.dumps(event.data, default=str, separators=(",", ":"))
    if len(data) > MAX_EVENT_DATA:
        kept = {k: event.data[k] for k in _SUMMARY_FIELDS if k in event.data}
        data = json.dumps({**kept, "truncated": True}, default=str)[:MAX_EVENT_DATA]
    return {
        "k": event.kind,
        "s": str(event.stage) if event.stage is not None else "",
        "t": event.subtask_id or "",
        "m": event.message,
        "d": data,
    }


def decode_event(run_id: str, fields: dict[str, str]) -> RunEvent:
    try:
        data = json.loads(fields.get("d") or "{}")
    except ValueError:
        data = {}
    stage = fields.get("s", "")
    return RunEvent(
        run_id,
        fields.get("k", ""),
        Stage(stage) if stage in _STAGES else None,
        fields.get("t") or None,
        fields.get("m", ""),
        data if isinstance(data, dict) else {},
    )


class RunEventLog:
    """The event streams of the runs on `queue`: a listener that appends, and readers."""

    def __init__(
        self, queue: RedisTaskQueue, *, ttl_seconds: int = 7 * 86400, max_len: int = 10_000
    ) -> None:
        self.queue, self.ttl_seconds, self.max_len = queue, ttl_seconds, max_len
        self._buffer: list[RunEvent] = []
        self._flusher: asyncio.Task[None] | None = None

    def key(self, run_id: str) -> str:
        return self.queue.keys.run_events(run_id)

    # -- writing ------------------------------------------------------------------------

    def __call__(self, event: RunEvent) -> None:
        self._buffer.append(event)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        while self._buffer:
            batch, self._buffer = self._buffer, []
            try:
                async with self.queue.bounded():
                    pipe = self.queue.redis.pipeline(transaction=False)
                    for event in batch:
                        key = self.key(event.run_id)
                        pipe.xadd(key, encode_event(event), maxlen=self.max_len, approximate=True)  # type: ignore[arg-type]
                        pipe.expire(key, self.ttl_seconds)
                    await pipe.execute()
            except Exception as exc:  # logged and dropped: a display must not break a run
                log.warning("could not record %d run event(s): %s", len(batch), exc)

    async def aclose(self) -> None:
        """Waits until every event emitted so far is written."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    # -- reading ------------------------------------------------------------------------

    async def read(self, run_id: str, *, after: str = "0-0", count: int = 1000) -> list[Any]:
        """Up to `count` (entry id, RunEvent) pairs after `after`, oldest first."""
        async with self.queue.bounded():
            raw = await self.queue.redis.xrange(self.key(run_id), min=f"({after}", count=count)
        return [(as_text(i), decode_event(run_id, _text_fields(f))) for i, f in raw or []]

    async def recent(self, run_id: str, count: int = 200) -> list[dict[str, Any]]:
        """The newest `count` events, oldest first, as plain data with the server time
        each was written (`at`, seconds), for a page or an API."""
        async with self.queue.bounded():
            raw = await self.queue.redis.xrevrange(self.key(run_id), count=count)
        rows = []
        for entry_id, fields in reversed(raw or []):
            event = decode_event(run_id, _text_fields(fields))
            at = int(as_text(entry_id).split("-", 1)[0]) / 1000
            rows.append({**event_dict(event), "at": at})
        return rows

    async def follow(self, run_id: str, *, after: str = "0-0") -> AsyncIterator[RunEvent]:
        """Every event of the run from `after` on, as it is written (XREAD BLOCK), until
        its "ended" event; also ends when the run's record is gone or no longer active
        and nothing more comes (a manager that died mid-run: resume it)."""
        key, position = self.key(run_id), after
        while True:
            reply: Any
            async with self.queue.bounded(blocking=True):
                reply = await self.queue.blocking_redis.xread(
                    {key: position}, count=1000, block=int(_IDLE_CHECK_SECONDS * 1000)
                )
            entries = [entry for _, stream in reply or () for entry in stream]
            for entry_id, fields in entries:
                position = as_text(entry_id)
                event = decode_event(run_id, _text_fields(fields))
                yield event
                if event.kind == "ended":
                    return
            if not entries and not await self._active(run_id):
                return

    async def _active(self, run_id: str) -> bool:
        try:
            async with self.queue.bounded():
                return bool(await self.queue.redis.sismember(self.queue.keys.active_runs, run_id))
        except QueueError:
            return False


def event_dict(event: RunEvent) -> dict[str, Any]:
    """An event as plain data (what `pipeline events --json` prints)."""
    return {
        "run_id": event.run_id,
        "kind": event.kind,
        "stage": str(event.stage) if event.stage is not None else None,
        "subtask_id": event.subtask_id,
        "message": event.message,
        "data": event.data,
    }


def _text_fields(raw: Any) -> dict[str, str]:
    return {as_text(k): as_text(v) for k, v in dict(raw).items()}
