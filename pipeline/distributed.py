"""DistributedPipelineManager: the same stage flow, with every subtask sent through
RedisTaskQueue and every run's state kept in Redis.

Workers anywhere (`agentic worker --app agents.app:registry`) run the subtasks; the
manager awaits each result in Redis (no polling). Runs hold a lock the manager keeps
renewing; a manager that starts resumes the runs whose manager is gone, replaying their
recorded results, so finished subtasks are not run again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from utils.redis_queue import HandlerRegistry, RedisTaskQueue

from .enhanced import EnhancedPipelineManager
from .errors import RunStoreError
from .events import RunEventLog
from .executors import QueueExecutor, StageExecutor
from .store import RedisRunStore

__all__ = ["DistributedPipelineManager"]

log = logging.getLogger("agentic.pipeline")


class DistributedPipelineManager(EnhancedPipelineManager):
    """Pipeline with Redis-backed distributed queue (a QueueExecutor).

    `handlers`, when given, are also served by a Worker in this process (handy for one
    machine); without them the subtasks wait for `agentic worker` processes.
    `resume`: drive, on start(), the runs whose manager is gone."""

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        queue: RedisTaskQueue | None = None,
        handlers: HandlerRegistry | Mapping[str, Any] | None = None,
        resume: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(handlers, **kwargs)
        if queue is None:
            overrides = {"redis_url": redis_url} if redis_url else {}
            overrides["queue_name"] = self.settings.pipeline_queue_name()
            queue = RedisTaskQueue.from_settings(self.settings, **overrides)
        self.redis_queue = queue
        if kwargs.get("store") is None:
            self.store = RedisRunStore(queue, ttl_seconds=self.settings.pipeline.run_ttl_seconds)
        self.resume = resume
        self._renewer: asyncio.Task[None] | None = None
        # every run's events, in its event stream: the one source its readers share
        self.events = RunEventLog(queue, ttl_seconds=self.settings.pipeline.run_ttl_seconds)
        self.add_listener(self.events)

    async def start(self) -> None:
        """Start pipeline with Redis queue."""
        try:
            await self.redis_queue.connect()
            await super().start()
            self._renewer = asyncio.create_task(self._renew_locks(), name="pipeline-run-locks")
            if self.resume:
                await self.resume_runs()
        except BaseException:
            await self.stop()  # nothing started stays behind (worker, renewer, connections)
            raise

    async def stop(self) -> None:
        """Stop driving runs and hand them back (their locks are released, so another
        manager may resume them at once), then close the queue."""
        driven = list(self._drivers)
        await super().stop()
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
        with contextlib.suppress(Exception):  # best effort: the locks expire anyway
            for run_id in driven:
                await self.store.release(run_id, self.manager_id)
        await self.events.aclose()  # the last events (a run's "ended") are written
        await self.redis_queue.close()

    async def resume_runs(self) -> list[str]:
        """Start driving every unfinished run nobody drives; returns their ids."""
        return [run_id for run_id in await self.store.active_ids() if await self.resume_run(run_id)]

    async def resume_run(self, run_id: str) -> bool:
        """Start driving one unfinished run if nobody drives it (its manager is gone or
        stopped); False when another manager holds it, it ended or cannot be read."""
        if run_id in self._drivers:
            return False
        if not await self.store.acquire(run_id, self.manager_id, self._lock_ms):
            return False  # its manager is alive
        try:
            run = await self.store.load(run_id)
        except RunStoreError as exc:  # one unreadable run must not stop the others
            log.error("cannot resume: %s", exc)
            await self.store.release(run_id, self.manager_id)
            return False
        if run is None or run.status.is_final:
            await self.store.release(run_id, self.manager_id)
            return False
        log.info("resuming pipeline run %s at stage %s", run_id, run.stage)
        self._drive_in_background(run, resumed=True)
        return True

    async def held_runs(self) -> list[tuple[str, str, float]]:
        """Unfinished runs another manager's lock still holds: (run id, manager, seconds
        left). A killed manager's runs are here until their lock expires."""
        held = []
        for run_id in await self.store.active_ids():
            if run_id in self._drivers:
                continue
            holder = await self.store.holder(run_id)
            if holder is not None and holder[0] != self.manager_id:
                held.append((run_id, *holder))
        return held

    # -- subtasks through Redis ----------------------------------------------------------

    def _make_executor(self) -> StageExecutor:
        return QueueExecutor(
            self.redis_queue,
            handlers=self._handlers,
            worker_id=f"{self.manager_id}:worker",
            concurrency=self._workers,
            shutdown_grace=self.settings.worker.grace_seconds,
        )

    async def _renew_locks(self) -> None:
        interval = self._lock_ms / 3000
        while True:
            await asyncio.sleep(interval)  # a lease heartbeat, not a poll for work
            for run_id, driver in list(self._drivers.items()):
                try:
                    held = await self.store.renew(run_id, self.manager_id, self._lock_ms)
                except Exception as exc:  # Redis down: keep going, the next beat retries
                    log.warning("cannot renew the lock of run %s: %s", run_id, exc)
                    continue
                if not held:
                    log.warning("run %s was taken over by another manager; stopping", run_id)
                    self._taken_over.add(run_id)
                    driver.cancel()
