"""Reading the task lifecycle events (queue.events): every partition's events stream,
merged, from a starting point, and with follow=True as they are written (XREAD BLOCK)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection
from datetime import datetime
from typing import Any

from ..codec import as_text
from ..connection import BLOCK_SLICE_SECONDS
from ..lifecycle import TaskEvent, since_position
from .client import QueueClient

__all__ = ["Events"]

_READ_COUNT = 1000  # entries per stream per XREAD


class Events(QueueClient):
    """The writer side is the transition scripts (events, events_max_len)."""

    async def events(
        self,
        since: str | float | datetime = "$",
        *,
        follow: bool = True,
        task_types: Collection[str] = (),
        names: Collection[str] = (),
    ) -> AsyncIterator[TaskEvent]:
        """The task events written after `since` (lifecycle.since_position: "$" = from
        now on, "0" = the oldest kept, a stream id, or a time), in every partition, each
        partition's in the order written (so each task's in order: a task lives in one
        partition); what one read returns is ordered by stream id across partitions. With
        `follow` it waits for more and never ends (break out of it); without, it ends once
        it has read what is there. `task_types` and `names` (event names) filter."""
        position = since_position(since)
        keys = [part.events for part in self.layout.parts]
        positions = await self._start_positions(keys, position)
        types, wanted = set(task_types), set(names)
        batches = (
            self._cluster_follow(keys, positions)
            if follow and self.cluster
            else self._reads(keys, positions, follow)
        )
        async for batch in batches:
            for event in sorted(batch, key=lambda e: e.sort_key):
                if (not types or event.task_type in types) and (
                    not wanted or event.event in wanted
                ):
                    yield event

    async def _reads(
        self, keys: list[str], positions: list[str], follow: bool
    ) -> AsyncIterator[list[TaskEvent]]:
        while True:
            batch = await self._read_events(keys, positions, None)
            if not batch:
                if not follow:
                    return
                batch = await self._read_events(keys, positions, BLOCK_SLICE_SECONDS)
            yield batch

    async def _cluster_follow(
        self, keys: list[str], positions: list[str]
    ) -> AsyncIterator[list[TaskEvent]]:
        """Following on a cluster: the partitions' slots differ, so one blocking XREAD
        each, all in flight at once; a partition's next read starts once its last one
        returned, so whichever has news is read without waiting on the others."""
        reads: dict[asyncio.Task[Any], int] = {}
        try:
            while True:
                running = set(reads.values())
                for i, key in enumerate(keys):
                    if i not in running:
                        call = self._xread_events({key: positions[i]}, BLOCK_SLICE_SECONDS)
                        reads[asyncio.ensure_future(call)] = i
                done, _ = await asyncio.wait(reads, return_when=asyncio.FIRST_COMPLETED)
                batch: list[TaskEvent] = []
                for read in done:
                    reads.pop(read)
                    batch += self._parse(read.result(), keys, positions)
                if batch:
                    yield batch
        finally:
            for read in reads:
                read.cancel()
            await asyncio.gather(*reads, return_exceptions=True)

    async def _start_positions(self, keys: list[str], position: str) -> list[str]:
        if position != "$":
            return [position] * len(keys)
        # "$" is resolved once, to each stream's last id: passing "$" again on the next
        # read would skip what was written in between.
        out = []
        for key in keys:
            async with self._command():
                last = await self.redis.xrevrange(key, count=1)
            out.append(as_text(last[0][0]) if last else "0-0")
        return out

    async def _read_events(
        self, keys: list[str], positions: list[str], block: float | None
    ) -> list[TaskEvent]:
        """One read of every stream after its position (advanced in place)."""
        replies: list[Any]
        if not self.cluster:  # one XREAD over all partitions
            replies = [await self._xread_events(dict(zip(keys, positions, strict=True)), block)]
        else:  # each partition in its own slot: one XREAD each, at once
            replies = await asyncio.gather(
                *(self._xread_events({k: p}, block) for k, p in zip(keys, positions, strict=True))
            )
        return [e for reply in replies for e in self._parse(reply, keys, positions)]

    @staticmethod
    def _parse(reply: Any, keys: list[str], positions: list[str]) -> list[TaskEvent]:
        """An XREAD reply's events; each stream's position advanced to its last entry."""
        out: list[TaskEvent] = []
        for raw_key, entries in reply or ():
            i = keys.index(as_text(raw_key))
            for entry_id, fields in entries:
                text = {as_text(k): as_text(v) for k, v in dict(fields).items()}
                out.append(TaskEvent.from_fields(as_text(entry_id), i, text))
            if entries:
                positions[i] = as_text(entries[-1][0])
        return out

    async def _xread_events(self, streams: dict[str, str], block: float | None) -> Any:
        if block is None:
            async with self._command():
                return await self.redis.xread(streams, count=_READ_COUNT)  # type: ignore[arg-type]
        async with self._blocking_command():
            return await self._blocking_client.xread(
                streams,  # type: ignore[arg-type]
                count=_READ_COUNT,
                block=int(block * 1000),
            )
