"""A task's output stream: writing it under the lease (emit_output, what a handler's
ctx.emit() and ctx.progress() end in) and reading it (read_output, stream_output)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from .. import scripts
from ..codec import as_text
from ..errors import TaskNotFound
from ..keys import validate_task_id
from ..models import TaskState
from ..output import OutputChunk
from ..scripts import OutputEntry
from .client import QueueClient

__all__ = ["Output"]

# How long one XREAD blocks before the reader checks whether a task that never wrote
# output has settled (a task that wrote some ends its stream with an 'end' entry, which
# wakes the reader at once).
_IDLE_CHECK_SECONDS = 1.0
_READ_COUNT = 1000


class Output(QueueClient):
    """Bounded by output_max_entries (XADD MAXLEN ~: a little more may stay until Redis
    can drop a whole node of entries); it expires output_ttl_seconds after its last write,
    so a settled task's output stays that long (it is not deleted with the task)."""

    async def emit_output(
        self, task_id: str, lease_token: int, entries: Sequence[OutputEntry]
    ) -> str:
        """Appends `entries` to the task's output stream if `lease_token` is its current
        lease (LeaseLost otherwise: nothing is written); returns the last entry's id."""
        if not entries:
            raise ValueError("no entries to emit")
        call = scripts.emit(
            self.keys_for(task_id),
            task_id=task_id,
            token=str(lease_token),
            max_len=self.output_max_entries,
            ttl_ms=self.output_ttl_seconds * 1000,
            entries=entries,
        )
        reply = await self.run(call, task_id)
        return as_text(reply[1])

    async def read_output(
        self, task_id: str, *, last: int = 100, after: str = "-"
    ) -> list[OutputChunk]:
        """The newest `last` entries of the task's output (oldest first), or, with `after`
        an entry id, up to `last` entries after it. [] when it has none (or they expired)."""
        validate_task_id(task_id)
        if last < 1:
            raise ValueError("last must be >= 1")
        key = self.keys_for(task_id).output(task_id)
        async with self._command():
            if after == "-":
                raw: list[Any] = list(reversed(await self.redis.xrevrange(key, count=last) or []))
            else:
                raw = list(await self.redis.xrange(key, min=f"({after}", count=last) or [])
        return [_chunk(entry_id, fields) for entry_id, fields in raw]

    async def stream_output(
        self, task_id: str, *, after: str = "0-0"
    ) -> AsyncIterator[OutputChunk]:
        """Every entry of the task's output from `after` on (the start by default), as it
        arrives (XREAD BLOCK), ending after the 'end' entry the settle writes, or, for a
        task that wrote nothing, once it is seen settled. TaskNotFound when the task does
        not exist when the reading starts."""
        validate_task_id(task_id)
        keys = self.keys_for(task_id)
        key, task_key = keys.output(task_id), keys.task(task_id)
        state = await self._state(task_key)
        if state is None:
            raise TaskNotFound(task_id)
        position = after
        while True:
            block = None if state is not None and state.is_final else _IDLE_CHECK_SECONDS
            entries = await self._xread(key, position, block)
            for entry_id, fields in entries:
                chunk = _chunk(entry_id, fields)
                position = chunk.entry_id
                if chunk.is_end:
                    # An 'end' of an earlier life (the task was retried from the DLQ since)
                    # is skipped: the task runs again.
                    state = await self._state(task_key)
                    if state is None or state.is_final:
                        yield chunk
                        return
                    continue
                yield chunk
            if entries and len(entries) >= _READ_COUNT:
                continue
            if block is None:  # settled before we read, and the stream has no more
                return
            if not entries:
                state = await self._state(task_key)
                if state is None:
                    return  # deleted while we read

    async def _state(self, task_key: str) -> TaskState | None:
        async with self._command():
            raw = await self.redis.hget(task_key, "state")
        return None if raw is None else TaskState(as_text(raw))

    async def _xread(self, key: str, position: str, block: float | None) -> list[Any]:
        reply: Any
        if block is None:
            async with self._command():
                reply = await self.redis.xread({key: position}, count=_READ_COUNT)
        else:
            async with self._blocking_command():
                reply = await self._blocking_client.xread(
                    {key: position}, count=_READ_COUNT, block=int(block * 1000)
                )
        # RESP2: [[key, [(id, fields), ...]]], one stream here
        return [entry for _, stream in reply or () for entry in stream]


def _chunk(entry_id: Any, fields: Any) -> OutputChunk:
    return OutputChunk.from_fields(
        as_text(entry_id), {as_text(k): as_text(v) for k, v in dict(fields).items()}
    )
