"""The worker's acknowledgements: finished attempts are settled in batches, one
settle_many round trip per batch, kept and retried while Redis is unreachable."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..aio import wait_first
from .crash_hook import CrashHook
from .errors import QueueError, RedisUnavailable
from .models import Settlement, TaskState
from .queue import RedisTaskQueue

__all__ = ["Settler"]

log = logging.getLogger("agentic.worker")

SETTLE_BATCH = 200
SETTLE_REFUSALS = 5  # retries of an acknowledgement Redis refused (not unreachable)

Outcome = TaskState | QueueError


class Settler:
    """`add()` a settlement; `run()` (a background task) acknowledges them. After each
    batch `on_outcome` sees every settlement with its outcome (or with the error that
    kept the batch from being recorded) and `on_batch` is called."""

    def __init__(
        self,
        queue: RedisTaskQueue,
        on_outcome: Callable[[Settlement, Outcome | None], None],
        on_batch: Callable[[], None],
        crash: CrashHook | None = None,
    ) -> None:
        self.queue = queue
        self._on_outcome = on_outcome
        self._on_batch = on_batch
        self._crash = crash
        self._pending: asyncio.Queue[Settlement] = asyncio.Queue()
        self.unsettled = 0  # added, not yet acknowledged (or given up)
        self.batches = 0  # batches done, for callers that must notice one happened
        self.abandon = asyncio.Event()  # set: stop retrying, give the results up

    def add(self, settlement: Settlement) -> None:
        self.unsettled += 1
        self._pending.put_nowait(settlement)

    async def run(self) -> None:
        while True:
            batch = [await self._pending.get()]
            while len(batch) < SETTLE_BATCH and not self._pending.empty():
                batch.append(self._pending.get_nowait())
            try:
                if self._crash:
                    self._crash.reached("settle.before")
                outcomes = await self._settle_with_retry(batch)
                if self._crash:
                    self._crash.reached("settle.after")
                for settlement, outcome in zip(batch, outcomes, strict=True):
                    self._on_outcome(settlement, outcome)
            except Exception as exc:  # this loop must outlive any one batch
                log.error(
                    "could not acknowledge %d tasks (their leases expire and they run again): %s",
                    len(batch),
                    exc,
                )
                for settlement in batch:
                    self._on_outcome(settlement, None)
            finally:
                self.unsettled -= len(batch)
                self.batches += 1
                self._on_batch()

    async def _settle_with_retry(self, batch: list[Settlement]) -> list[Outcome]:
        """Keep the results while Redis is unreachable or refuses for a moment (a failover
        in progress, a busy script): once it answers they are recorded, or refused with
        LeaseLost if the leases ran out meanwhile (the tasks then run again). On a
        partitioned queue the settlements of a partition whose Redis is away are kept
        and sent again while the others are recorded (sending one twice is safe: the
        scripts know the settle they already applied). Gives up once `abandon` is set
        (the worker's grace period is over)."""
        outcomes: dict[int, Outcome] = {}
        todo = list(range(len(batch)))
        backoff, refusals = 0.1, 0
        while True:
            try:
                answers = await self.queue.settle_many([batch[i] for i in todo])
            except QueueError as exc:
                if not isinstance(exc, RedisUnavailable):
                    refusals += 1
                    if refusals > SETTLE_REFUSALS:
                        raise
                if self.abandon.is_set():
                    raise
                log.warning("acknowledging %d tasks failed, retrying: %s", len(todo), exc)
            else:
                left = []
                for i, answer in zip(todo, answers, strict=True):
                    if isinstance(answer, RedisUnavailable) and not self.abandon.is_set():
                        left.append(i)
                    else:
                        outcomes[i] = answer
                if not left:
                    return [outcomes[i] for i in range(len(batch))]
                log.warning(
                    "acknowledging %d tasks failed, retrying: their Redis is away", len(left)
                )
                todo = left
            await wait_first(asyncio.sleep(backoff), self.abandon.wait())
            backoff = min(backoff * 2, 5.0)
