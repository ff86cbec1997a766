"""History: the queue's per-minute counters and each task's failed attempts, for charts and
a task's detail page that survive a restart of whoever draws them.

The scripts write both in the transitions that count or end an attempt
(lua/include/common.lua: tally/flush_history, add_attempt); this reads them with plain
commands, each touching one partition's slot, so it works on a cluster too.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .. import codec
from ..errors import TaskNotFound
from ..keys import QueueKeys, validate_task_id
from ..models import AttemptRecord, MinuteCounts
from .client import QueueClient

__all__ = ["ATTEMPTS_KEPT", "COUNTERS", "MAX_HISTORY_MINUTES", "History"]

MAX_HISTORY_MINUTES = 24 * 60  # what keys.HISTORY_TTL_SECONDS keeps, with an hour to spare
ATTEMPTS_KEPT = 10  # lua/include/common.lua ATTEMPTS_KEPT: failed attempts a task keeps
COUNTERS = ("enqueued", "completed", "failed", "retried", "dead_lettered", "cancelled")


class History(QueueClient):
    async def get_history(self, minutes: int = 60) -> list[MinuteCounts]:
        """The last `minutes` minutes' counters (1 to 1,440), oldest first, ending with the
        current minute of the server's clock; every partition summed, zeros for a minute
        in which nothing happened."""
        if isinstance(minutes, bool) or not isinstance(minutes, int):
            raise ValueError(f"minutes must be a whole number, not {minutes!r}")
        if not 1 <= minutes <= MAX_HISTORY_MINUTES:
            raise ValueError(f"minutes must be from 1 to {MAX_HISTORY_MINUTES}, not {minutes}")
        async with self._command():
            seconds, _ = await self.redis.time()
        last = int(seconds) // 60
        span = range(last - minutes + 1, last + 1)
        totals = [[0] * len(COUNTERS) for _ in span]
        parts = await asyncio.gather(*(self._minutes(keys, span) for keys in self.layout.parts))
        for rows in parts:
            for total, row in zip(totals, rows, strict=True):
                for i, value in enumerate(row):
                    if value is not None:
                        total[i] += int(value)
        return [
            MinuteCounts(minute * 60, *total) for minute, total in zip(span, totals, strict=True)
        ]

    async def _minutes(self, keys: QueueKeys, span: range) -> list[list[Any]]:
        """One partition's counters for each minute of `span` (one pipeline, one slot)."""
        async with self._command():
            pipe = self.redis.pipeline(transaction=False)
            for minute in span:
                pipe.hmget(keys.history(minute), *COUNTERS)
            return list(await pipe.execute())

    async def get_attempts(self, task_id: str) -> list[AttemptRecord]:
        """The task's attempts that ended in an error (a failure, a timeout, a lost lease),
        oldest first: the last ATTEMPTS_KEPT of them. Raises TaskNotFound."""
        validate_task_id(task_id)
        key = self.keys_for(task_id).task(task_id)
        async with self._command():
            pipe = self.redis.pipeline(transaction=False)
            pipe.exists(key)
            pipe.hget(key, "att.n")
            exists, last = await pipe.execute()
        if not exists:
            raise TaskNotFound(task_id)
        numbers = range(max(1, int(last or 0) - ATTEMPTS_KEPT + 1), int(last or 0) + 1)
        if not numbers:
            return []
        # Each record's header, first chunk and chunk count, then the longer errors' rest.
        names = [name for s in numbers for name in (f"att.{s}", f"err.{s}", f"err.{s}.count")]
        async with self._command():
            heads = await self.redis.hmget(key, names)
        counts = [int(heads[3 * i + 2] or 1) for i in range(len(numbers))]
        more = [f"err.{s}.{c}" for s, n in zip(numbers, counts, strict=True) for c in range(1, n)]
        tails: dict[str, Any] = {}
        if more:
            async with self._command():
                tails = dict(zip(more, await self.redis.hmget(key, more), strict=True))
        records = []
        for i, s in enumerate(numbers):
            header = heads[3 * i]
            if header is None:  # pushed out by an attempt that ended meanwhile
                continue
            chunks = [heads[3 * i + 1]] + [tails[f"err.{s}.{c}"] for c in range(1, counts[i])]
            error = "".join(codec.as_text(c) for c in chunks if c is not None)
            records.append(_record(codec.as_text(header), error))
        return records


def _record(header: str, error: str) -> AttemptRecord:
    """A record from its `att.<s>` header ("<attempt> <server ms> <worker id>[ t=<tokens>]")."""
    attempt, at_ms, worker = [*header.split(" ", 2), "", ""][:3]
    tokens = 0
    head, _, last = worker.rpartition(" ")
    if last.startswith("t=") and last[2:].isdigit():
        worker, tokens = head, int(last[2:])
    elif worker.startswith("t=") and worker[2:].isdigit():  # no worker id
        worker, tokens = "", int(worker[2:])
    return AttemptRecord(
        attempt=int(attempt) if attempt.isdigit() else 0,
        error=error,
        at=codec.iso_from_ms(at_ms if at_ms.isdigit() else None),
        worker_id=worker or None,
        tokens=tokens,
    )
