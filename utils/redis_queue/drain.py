"""The worker's stop: what runs when a Worker is told to stop (SIGTERM/SIGINT, or
request_stop()): running tasks finish and are acknowledged within the grace period; the
rest are handed back (release.lua), so they run again elsewhere without counting an
attempt. `Draining` is the part of Worker that does it (worker.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from ..aio import cancel_all
from . import handler_run
from .crash_hook import CrashHook
from .errors import QueueError
from .models import RedisTask, Settlement
from .queue import RedisTaskQueue
from .settler import Settler

__all__ = ["Draining", "Running", "WorkerStats"]

log = logging.getLogger("agentic.worker")


@dataclass(slots=True)
class WorkerStats:
    done: int = 0  # completed
    failed: int = 0  # failed attempts (retried, dead-lettered or cancelled)
    lost: int = 0  # leases lost: the result was not recorded
    released: int = 0  # handed back on shutdown
    abandoned: int = 0  # handler coroutines that ignored their cancellation
    rate_limited: int = 0  # handed back because the provider said "too many requests"


@dataclass(slots=True)
class Running:
    """One attempt this worker runs."""

    task: RedisTask
    handle: asyncio.Task[Settlement | None]
    started: float  # monotonic, for the run-time histogram
    stop_reason: str | None = None  # "cancel", "lost" or "shutdown"


class Draining:
    """The drain on stop; the Worker it is part of provides these."""

    queue: RedisTaskQueue
    stats: WorkerStats
    shutdown_grace: float
    _running: dict[str, Running]
    _settler: Settler
    _slot_free: asyncio.Event
    _crash: CrashHook | None

    async def _wait_for(self, *awaitables: Awaitable[Any]) -> None:
        raise NotImplementedError

    def _abandoned_coroutine(self, inner: asyncio.Future[Any]) -> None:
        raise NotImplementedError

    async def _drain(self) -> None:
        """Let running tasks finish and be acknowledged within the grace period; hand
        back the rest. What cannot be acknowledged in time (Redis down) is abandoned:
        those leases expire and the tasks run again elsewhere."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.shutdown_grace
        handles = [r.handle for r in self._running.values()]
        if handles:
            log.info("draining %d running tasks (grace %.1f s)", len(handles), self.shutdown_grace)
            await asyncio.wait(handles, timeout=self.shutdown_grace)
        leftovers = [r for r in self._running.values() if not r.handle.done()]
        for running in leftovers:
            running.stop_reason = "shutdown"
        stubborn = await cancel_all([r.handle for r in leftovers], handler_run.CANCEL_GRACE)
        if stubborn:
            log.error(
                "%d running handler(s) ignored the shutdown's cancellation; abandoned them",
                len(stubborn),
            )
            for handle in stubborn:
                self._abandoned_coroutine(handle)
        for running in leftovers:
            try:
                if self._crash:
                    self._crash.reached("release.before")
                await self.queue.release_task(running.task.task_id, running.task.lease_token)
                if self._crash:
                    self._crash.reached("release.after")
                self.stats.released += 1
            except QueueError as exc:  # the lease then expires and the task is reclaimed
                log.warning("could not hand back %s: %s", running.task.task_id, exc)
        while self._settler.unsettled and (remaining := deadline - loop.time()) > 0:
            await self._wait_for(self._slot_free.wait(), asyncio.sleep(remaining))
            self._slot_free.clear()
        if self._settler.unsettled:
            log.warning("abandoning %d unacknowledged results at the end of the grace period",
                        self._settler.unsettled)  # fmt: skip
            self._settler.abandon.set()
            while self._settler.unsettled:  # the settle loop gives up promptly now
                await self._wait_for(self._slot_free.wait())
                self._slot_free.clear()
