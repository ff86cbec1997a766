"""Worker: serves handlers for some task types from one queue.

The loop claims as many tasks as it has free slots in one round trip, runs each handler
under its own timeout, and acknowledges finished tasks in batches (one pipeline). Leases
are renewed by a keeper process (lease_keeper.py), so a handler that blocks the event loop
does not lose its task. Cancel requests arrive by pub/sub. On stop (SIGTERM/SIGINT): claim
nothing more, let running tasks finish within the grace period, hand the rest back.

Its pieces: settler.py acknowledges, lease_keeper.py renews leases, cancels.py listens
for cancel requests, registry.py beats the worker registry, scheduler.py runs the periodic
schedules (unless scheduler=False), drain.py is the stop, crash_hook.py injects the fault
suite's crashes; expired leases are reaped by every claim (lua/claim.lua).
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import logging
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..aio import cancel_all, wait_first
from . import telemetry
from .cancels import listen_for_cancels
from .connection import BLOCK_SLICE_SECONDS
from .crash_hook import CRASH_EXIT_CODE, CRASH_STEPS, crash_hook_from_env
from .drain import Draining, Running, WorkerStats
from .errors import LeaseLost, QueueError
from .handler_run import describe, run_async_handler
from .handlers import (
    HandlerRegistry,
    PermanentFailure,
    RateLimited,
    RegisteredHandler,
    Retry,
    TaskContext,
)
from .lease_keeper import LeaseKeeper
from .limits import check_pause
from .models import RedisTask, Settlement, TaskState
from .queue import RedisTaskQueue
from .registry import WorkerInfo, beat_forever, join_registry, remove_worker
from .scheduler import run_scheduler
from .settler import Settler
from .startup import connect_waiting, server_time_iso
from .telemetry import NULL_METRICS, outcome_label, wait_seconds

__all__ = ["CRASH_EXIT_CODE", "CRASH_STEPS", "Worker", "WorkerStats"]

log = logging.getLogger("agentic.worker")

# Unacknowledged results a worker keeps per slot before it stops claiming: 2 lets one
# batch's settle be in flight while the next batch runs (with 1, a worker of quick tasks
# alternated claim and settle round trips: C 3,200 -> 6,700 tasks/s, 87 -> 66 us of CPU
# per task, bench --quick, same machine). A crash re-runs at most this many results more.
UNSETTLED_PER_SLOT = 2


class Worker(Draining):
    """Runs handlers for tasks of `task_types` (default: every type in `handlers`)."""

    def __init__(
        self,
        queue: RedisTaskQueue,
        handlers: HandlerRegistry,
        *,
        worker_id: str | None = None,
        concurrency: int = 10,
        task_types: list[str] | None = None,
        default_timeout: float | None = None,
        shutdown_grace: float = 30.0,
        beat_interval: float = 5.0,
        burst: bool = False,
        exit_on_unavailable: bool = False,
        scheduler: bool = True,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.queue = queue
        self.handlers = handlers
        self.task_types = list(task_types or handlers)
        missing = [t for t in self.task_types if t not in handlers]
        if missing or not self.task_types:
            raise ValueError(f"no handler for task types {missing or '(none given)'}")
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.concurrency = concurrency
        self.default_timeout = default_timeout
        self.shutdown_grace = shutdown_grace
        self.beat_interval = beat_interval
        self.burst = burst
        self.exit_on_unavailable = exit_on_unavailable
        self.scheduler = scheduler  # run the queue's periodic schedules (scheduler.py)
        self.stats = WorkerStats()
        self._running: dict[str, Running] = {}
        self._slot_free = asyncio.Event()
        self._stop = asyncio.Event()
        # utilisation: slot-seconds busy, integrated at every start and end of a handler
        self._busy_seconds = 0.0
        self._busy_since = time.monotonic()
        self._reported_at, self._reported_busy = self._busy_since, 0.0  # for worker_time
        self._stuck = 0  # handlers that outlived their attempt: threads, abandoned coroutines
        # (task id, lease token) -> (task, run seconds) until its settlement is counted
        self._timings: dict[tuple[str, int | None], tuple[RedisTask, float | None]] = {}
        self._executor = ThreadPoolExecutor(concurrency, thread_name_prefix="agentic-handler")
        self._keeper: LeaseKeeper | None = None
        self._started_at = ""
        # A running task that lost a lease before (see claim.lua): while it runs, this
        # worker takes no other such task, so a poison task cannot keep taking good
        # tasks down with it.
        self._suspect: tuple[str, int | None] | None = None
        self._stuck_suspect: tuple[str, int | None] | None = None  # its thread still runs
        self._crash = crash_hook_from_env()
        self._settler = Settler(queue, self._count, self._slot_free.set, self._crash)

    # -- control --------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop claiming now; run() then drains within the grace period and returns."""
        self._stop.set()
        self._slot_free.set()  # a claim loop waiting for a slot sees the stop

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def still_running(self) -> int:
        """Handlers that outlived their attempt and run on: sync handlers whose thread
        cannot be stopped, coroutines that ignored their cancellation."""
        return self._stuck

    async def run(self) -> WorkerStats:
        """Serve until request_stop() (or, in burst mode, until nothing is left to do).
        While Redis is unreachable at start-up it waits, retrying with backoff (RedisUnavailable
        at once with `exit_on_unavailable`)."""
        if not await connect_waiting(self.queue, self._stop, self.exit_on_unavailable):
            return self.stats
        self._started_at = await server_time_iso(self.queue)
        await join_registry(self.queue, self._describe())  # WorkerIdInUse: nothing to undo
        self._keeper = LeaseKeeper(
            redis_url=self.queue.redis_url,
            password=self.queue.password,
            key_prefix=self.queue.keys.prefix,
            queue_name=self.queue.queue_name,
            lease_seconds=self.queue.lease_seconds,
            on_event=self._on_keeper_event,
            cluster=self.queue.cluster,
            partitions=self.queue.partitions,
        )
        await self._keeper.start()
        subscribed = asyncio.Event()
        helpers = [
            asyncio.create_task(self._settler.run(), name="settle"),
            asyncio.create_task(
                listen_for_cancels(
                    self.queue, subscribed, lambda: list(self._running), self._cancel_requested
                ),
                name="cancels",
            ),
            asyncio.create_task(
                beat_forever(self.queue, self._describe, self.beat_interval), name="beat"
            ),
        ]
        if self.scheduler:
            helpers.append(asyncio.create_task(run_scheduler(self.queue), name="scheduler"))
        try:
            # Claims wait for the cancel listener, so no request goes unheard; while Redis
            # is away it keeps retrying, and a stop request ends the wait.
            await self._wait_for(subscribed.wait())
            await self._claim_loop()
            await self._drain()
        finally:
            await cancel_all(helpers)
            await self._keeper.stop()
            self._executor.shutdown(wait=False, cancel_futures=True)
            try:
                await remove_worker(self.queue, self.worker_id)
            except QueueError:
                log.warning("could not remove worker %s from the registry", self.worker_id)
        return self.stats

    # -- claiming -------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        backoff = 0.1
        while not self.stopping:
            free = self.concurrency - len(self._running) - self._stuck
            # A slot frees when its handler returns, so claiming overlaps acknowledging:
            # results wait for acknowledgement up to two slots' worth each, so the next
            # claim need not wait for the settle round trip of the last batch.
            if free <= 0 or self._settler.unsettled >= UNSETTLED_PER_SLOT * self.concurrency:
                # Once per claimed batch: the event alone (request_stop() sets it too),
                # not _wait_for()'s two tasks and their cancellation.
                await self._slot_free.wait()
                self._slot_free.clear()
                continue
            settled_before = self._settler.batches
            if self._crash:
                self._crash.reached("claim.before")
            try:
                batch = await self.queue.claim_ready(
                    self.worker_id,
                    free,
                    task_types=self.task_types,
                    suspects=self._suspect is None,
                )
            except QueueError as exc:  # Redis down, or a queue key overwritten by hand
                log.warning("claim failed, retrying in %.1f s: %s", backoff, exc)
                await self._wait_for(asyncio.sleep(backoff))  # back off while Redis is down
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            if self._crash and batch.tasks:
                self._crash.reached("claim.after")
            for task in batch.tasks:
                self._start(task)
            if batch.tasks:
                # Leases are registered with the keeper before any handler can block.
                self._keeper_flush()
                continue
            if (
                self.burst
                and not batch.held_back  # ready work waits for a limit: not drained yet
                and not self._running
                and not self._settler.unsettled
                # an acknowledgement during the claim may have made a retry pending
                and self._settler.batches == settled_before
                and not await self.queue.has_delayed()
            ):
                return
            waits: list[Any] = [
                self.queue.wait_for_work(self.task_types, batch.wait_limit(BLOCK_SLICE_SECONDS))
            ]
            if self.burst or self._suspect is not None:  # claim again when it ends
                waits.append(self._slot_free.wait())
            await self._wait_for(*waits)
            self._slot_free.clear()

    async def _wait_for(self, *awaitables: Any) -> None:
        """Wait for the first of `awaitables` or a stop request; cancel the rest."""
        done = await wait_first(*awaitables, self._stop.wait())
        for finished in done:
            if not finished.cancelled() and finished.exception() is not None:
                log.warning("waiting for work failed: %s", finished.exception())
                await asyncio.sleep(0.5)  # e.g. Redis down: do not spin on the error

    # -- running ---------------------------------------------------------------------------

    def _start(self, task: RedisTask) -> None:
        handler = self.handlers[task.task_type]
        timeout = self._timeout_for(task, handler)
        assert self._keeper is not None
        # The keeper stops renewing a little after the timeout even if this loop is stuck.
        hard_limit = timeout + self.queue.lease_seconds if timeout else None
        held = self.queue.permit_of(task.task_id)  # a partitioned queue's limit slots
        self._keeper.add(task.task_id, task.lease_token or 0, hard_limit, held)
        if task.lease_losses:
            self._suspect = (task.task_id, task.lease_token)
        self._mark_busy()
        handle = asyncio.create_task(
            self._execute(task, handler, timeout), name=f"task:{task.task_id}"
        )
        self._running[task.task_id] = Running(task, handle, time.monotonic())
        handle.add_done_callback(lambda finished: self._finished(task, finished))

    def _timeout_for(self, task: RedisTask, handler: RegisteredHandler) -> float | None:
        return task.timeout or handler.timeout or self.default_timeout

    async def _execute(
        self, task: RedisTask, handler: RegisteredHandler, timeout: float | None
    ) -> Settlement | None:
        token = task.lease_token or 0
        assert self._keeper is not None
        ctx = TaskContext(task, self.worker_id, self.queue.queue_name, token, output=self.queue)
        try:
            if telemetry.tracer is None:  # no span to open: one coroutine less per task
                result = await self._run_handler(handler, ctx, timeout)
            else:
                run = functools.partial(self._run_handler, handler, ctx, timeout)
                result = await self.queue.telemetry.process(task, self.worker_id, run)
            return Settlement(task.task_id, token, result=result, tokens_used=ctx.tokens_used)
        except TimeoutError:
            error = f"timed out after {timeout} s"
            return Settlement(task.task_id, token, error=error, tokens_used=ctx.tokens_used)
        except Retry as exc:
            error = f"Retry: {exc}"
            used = ctx.tokens_used
            return Settlement(task.task_id, token, error=error, delay=exc.delay, tokens_used=used)
        except PermanentFailure as exc:
            error, used = f"PermanentFailure: {exc}", ctx.tokens_used
            return Settlement(task.task_id, token, error=error, retry=False, tokens_used=used)
        except RateLimited as exc:
            pause = check_pause(exc.retry_after)
            return Settlement(task.task_id, token, pause=pause, pause_limits=exc.limits)
        except asyncio.CancelledError:
            running = self._running.get(task.task_id)
            reason = running.stop_reason if running is not None else None
            if reason == "cancel":  # fail.lua sees the cancel flag and ends it cancelled
                return Settlement(task.task_id, token, error="cancelled on request")
            if reason in ("lost", "shutdown"):
                return None
            raise
        except (Exception, SystemExit, KeyboardInterrupt) as exc:  # a sync handler's exit
            error = describe(exc, with_traceback=True)
            return Settlement(task.task_id, token, error=error, tokens_used=ctx.tokens_used)
        finally:
            self._keeper.remove(task.task_id)

    async def _run_handler(
        self, handler: RegisteredHandler, ctx: TaskContext, timeout: float | None
    ) -> Any:
        if handler.is_async:
            return await run_async_handler(
                handler.func(ctx), timeout, ctx.task_id, self._abandoned_coroutine
            )
        # A sync handler sees this task's context variables (e.g. the current span).
        func = contextvars.copy_context().run
        future = asyncio.get_running_loop().run_in_executor(self._executor, func, handler.func, ctx)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except BaseException:
            if not future.done():
                # A thread cannot be stopped: it keeps its pool thread, so it keeps its
                # slot too, or the next sync tasks would time out waiting for a thread.
                # A suspect's code still runs, so it stays this worker's one suspect.
                self._stuck += 1
                key = (ctx.task_id, ctx.task.lease_token)
                held = key if self._suspect == key else None
                if held is not None:
                    self._stuck_suspect = held
                future.add_done_callback(functools.partial(self._thread_released, held))
            raise

    def _abandoned_coroutine(self, inner: asyncio.Future[Any]) -> None:
        """A handler that ignored its cancellation (at its timeout, or at shutdown) keeps
        its slot until it returns; `still_running` counts it meanwhile."""
        self._stuck += 1
        self.stats.abandoned += 1
        inner.add_done_callback(self._coroutine_released)

    def _coroutine_released(self, inner: asyncio.Future[Any]) -> None:
        if not inner.cancelled():
            inner.exception()  # retrieved: its outcome no longer matters
        self._thread_released(None, inner)

    def _thread_released(self, suspect: tuple[str, int | None] | None, _future: Any) -> None:
        self._stuck -= 1
        if suspect is not None and self._stuck_suspect == suspect:
            self._stuck_suspect = None
            if self._suspect == suspect:
                self._suspect = None
        self._slot_free.set()

    def _finished(self, task: RedisTask, handle: asyncio.Task[Settlement | None]) -> None:
        running = self._running.get(task.task_id)
        run_seconds = time.monotonic() - running.started if running is not None else None
        settlement = None if handle.cancelled() else handle.result()
        if settlement is not None and task.meta:
            settlement = dataclasses.replace(settlement, meta=task.meta)
        if settlement is not None:
            self._timings[(task.task_id, task.lease_token)] = (task, run_seconds)
            self._settler.add(settlement)
        else:
            if running is not None and running.stop_reason == "lost":
                self.stats.lost += 1
                self._report(task, "lease_lost", run_seconds)
                log.warning("lease lost on %s: another worker may run it", task.task_id)
            self._keeper_flush()
        self._free_slot(task.task_id, task.lease_token)

    def _keeper_flush(self) -> None:
        if self._keeper is not None:
            self._keeper.flush()

    def _free_slot(self, task_id: str, token: int | None) -> None:
        # By token: the same id may already run again under a new lease (an immediate
        # retry claimed while this attempt's settlement was in flight).
        running = self._running.get(task_id)
        if running is not None and running.task.lease_token == token:
            self._mark_busy()
            del self._running[task_id]
            if self._suspect == (task_id, token) and self._stuck_suspect != (task_id, token):
                self._suspect = None
            self._slot_free.set()

    def _mark_busy(self) -> None:
        now = time.monotonic()
        self._busy_seconds += len(self._running) * (now - self._busy_since)
        self._busy_since = now

    def _interrupt(self, task_id: str, reason: str, token: int | None = None) -> None:
        """Stop a running attempt; with `token`, only the attempt under that lease (the
        same id may already run again under a newer one)."""
        running = self._running.get(task_id)
        if running is None or (token is not None and running.task.lease_token != token):
            return
        if running.stop_reason is None and not running.handle.done():
            running.stop_reason = reason
            running.handle.cancel()

    def _on_keeper_event(self, event: str, task_id: str, token: int | None) -> None:
        if event in ("lost", "cancel"):
            self._interrupt(task_id, event, token)
        elif event == "expired":
            log.warning("task %s passed its hard limit; its lease is no longer renewed", task_id)

    # -- acknowledging ------------------------------------------------------------------------

    def _count(self, settlement: Settlement, outcome: TaskState | QueueError | None) -> None:
        """The settler's report on one settlement; None: it could not be recorded (the
        lease expires and the task runs again)."""
        task, run_seconds = self._timings.pop((settlement.task_id, settlement.lease_token))
        if outcome is None:
            return
        if isinstance(outcome, LeaseLost):
            self.stats.lost += 1
            log.warning("result of %s rejected: %s", settlement.task_id, outcome)
        elif isinstance(outcome, QueueError):
            log.error("acknowledging %s failed: %s", settlement.task_id, outcome)
            return
        elif outcome == TaskState.COMPLETED:
            self.stats.done += 1
        elif settlement.pause is not None:
            self.stats.rate_limited += 1
            self._report(task, "rate_limited", run_seconds)
            return
        else:
            self.stats.failed += 1
            # The whole error (a traceback, for a handler's bug) goes to the log; the task
            # keeps it too (`task show`), and a pipeline's run shows its first line.
            log.warning(
                "task %s (%s) attempt %d failed, now %s: %s",
                task.task_id, task.task_type, task.attempts, outcome, settlement.error,
            )  # fmt: skip
        label = "lease_lost" if isinstance(outcome, LeaseLost) else outcome_label(outcome)
        self._report(task, label, run_seconds)

    def _report(self, task: RedisTask, outcome: str, run_seconds: float | None) -> None:
        sink = self.queue.telemetry
        if sink.metrics is NULL_METRICS:  # metrics off: no timestamps to parse per task
            return
        sink.finished(task.task_type, outcome, run_seconds, wait_seconds(task))

    # -- cancels, registry, shutdown ----------------------------------------------------------

    def _cancel_requested(self, task_id: str) -> None:
        self._interrupt(task_id, "cancel")

    def _describe(self) -> WorkerInfo:
        """This worker as the registry shows it; also reports its utilisation since the
        last beat (the registry's beat is the metric's period)."""
        self._mark_busy()
        now = time.monotonic()
        slot_seconds = self.concurrency * (now - self._reported_at)
        self.queue.telemetry.worker_time(self._busy_seconds - self._reported_busy, slot_seconds)
        self._reported_at, self._reported_busy = now, self._busy_seconds
        return WorkerInfo(
            worker_id=self.worker_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            task_types=self.task_types,
            concurrency=self.concurrency,
            started_at=self._started_at or "",
            beat_interval=self.beat_interval,
            in_flight=len(self._running),
            done=self.stats.done,
            failed=self.stats.failed,
        )
