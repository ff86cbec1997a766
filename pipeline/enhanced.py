"""EnhancedPipelineManager: the stage flow of a pipeline run, on an in-process queue.

    dev subtasks (in parallel) -> qa -> [fix -> qa] x up to max_fix_rounds -> deploy

Every subtask is submitted with the priority PriorityAssigner gives it and its result
is recorded in the run's state, which is saved after every change. The flow is a pure
function of the recorded results, so a run can be driven again from its saved state
(DistributedPipelineManager resumes runs that way) without re-running finished subtasks.

Subclasses change where subtasks run by overriding `submit_task`, `_outcome` and
`_cancel_subtask` (and `start` / `stop`); the flow stays here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from utils import tracing
from utils.config import Settings
from utils.metrics import PipelineMetrics
from utils.redis_queue import (
    QueueError,
    RedisUnavailable,
    ResultTimeout,
    TaskCancelled,
    TaskFailed,
)
from utils.redis_queue.handlers import HandlerRegistry, as_registry
from utils.redis_queue.telemetry import tracing_from_environment

from .errors import RunInterrupted, RunNotFound, RunOwnershipLost
from .local import LocalExecutor
from .priority import PriorityAssigner
from .runs import (
    EventHandler,
    PipelineResult,
    RunEvent,
    RunState,
    RunStatus,
    Stage,
    SubtaskRecord,
    Usage,
)
from .spec import PipelineSpec, load_spec
from .store import MemoryRunStore, RunStore

__all__ = ["DEFAULT_APP", "EnhancedPipelineManager"]

DEFAULT_APP = "agents.app:registry"  # the agents, named (pipeline never imports agents)
OUTAGE_FIRST_PAUSE = 0.5  # seconds before a run retries after Redis went away; doubles
OUTAGE_MAX_PAUSE = 10.0
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
log = logging.getLogger("agentic.pipeline")


class _StageFailed(Exception):
    """The run cannot go on: the reason is the exception's message."""


class _RunCancelled(Exception):
    pass


class EnhancedPipelineManager:
    """Runs pipelines in this process. `handlers` are the agents by task type (a
    HandlerRegistry or dict); by default `agents.app:registry` is loaded at start()."""

    def __init__(
        self,
        handlers: HandlerRegistry | Mapping[str, Any] | None = None,
        *,
        settings: Settings | None = None,
        priority_assigner: PriorityAssigner | None = None,
        store: RunStore | None = None,
        metrics: PipelineMetrics | None = None,
        on_event: EventHandler | None = None,
        workers: int | None = None,
        app: str = DEFAULT_APP,
    ) -> None:
        self.settings = settings or Settings()
        self.priority_assigner = priority_assigner or PriorityAssigner()
        self.store: RunStore = store or MemoryRunStore()
        self.metrics = metrics
        self.manager_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._handlers = as_registry(handlers) if handlers is not None else None
        self._app = app
        self._workers = workers or self.settings.pipeline.local_workers
        self._listeners: list[EventHandler] = [on_event] if on_event else []
        self._executor: LocalExecutor | None = None
        self._drivers: dict[str, asyncio.Task[PipelineResult]] = {}
        self._cancelling: set[str] = set()
        self._taken_over: set[str] = set()  # runs whose lock another manager holds now

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Start the local worker coroutines (and tracing when OTEL_* asks for it)."""
        tracing_from_environment()
        await self._start_executor()

    async def stop(self) -> None:
        """Stop driving runs (they stay resumable where their state is durable) and
        stop the local workers."""
        drivers = list(self._drivers.values())
        for driver in drivers:
            driver.cancel()
        await asyncio.gather(*drivers, return_exceptions=True)
        await self._stop_executor()

    async def __aenter__(self) -> EnhancedPipelineManager:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def add_listener(self, listener: EventHandler) -> None:
        self._listeners.append(listener)

    # -- submitting subtasks (the seed's API) -----------------------------------------

    async def submit_dev_task(self, task_id: str, subtask: Any, **kwargs: Any) -> str:
        return await self.submit_task(Stage.DEV, task_id, subtask, **kwargs)

    async def submit_qa_task(self, task_id: str, subtask: Any, **kwargs: Any) -> str:
        return await self.submit_task(Stage.QA, task_id, subtask, **kwargs)

    async def submit_fix_task(self, task_id: str, subtask: Any, **kwargs: Any) -> str:
        return await self.submit_task(Stage.FIX, task_id, subtask, **kwargs)

    async def submit_deploy_task(self, task_id: str, subtask: Any, **kwargs: Any) -> str:
        return await self.submit_task(Stage.DEPLOY, task_id, subtask, **kwargs)

    async def submit_task(
        self, stage: Stage | str, task_id: str, subtask: Any, **kwargs: Any
    ) -> str:
        """Queue one subtask as task type `stage` with payload {"subtask": ..., **kwargs}
        and the assigned priority. Submitting an id again changes nothing."""
        priority = self.priority_for(stage, subtask)
        self._local().submit(task_id, str(stage), {"subtask": subtask, **kwargs}, priority)
        return task_id

    async def collect_result(self, task_id: str, timeout: float | None = None) -> Any:
        """The subtask's result once it finished. Raises TaskFailed, TaskCancelled or
        ResultTimeout."""
        result, _ = await self._outcome(task_id, timeout or self._subtask_timeout)
        return result

    def priority_for(self, stage: Stage | str, subtask: Any) -> int:
        if isinstance(subtask, Mapping) and "stage" not in subtask:
            subtask = {"stage": str(stage), **subtask}
        return self.priority_assigner.assign_priority(subtask)

    # -- runs ----------------------------------------------------------------------

    async def run(self, spec: PipelineSpec | Mapping[str, Any] | str | Path) -> PipelineResult:
        """Run a pipeline to its end and return what happened."""
        return await self.wait_run(await self.start_run(spec))

    async def start_run(
        self, spec: PipelineSpec | Mapping[str, Any] | str | Path, *, run_id: str | None = None
    ) -> str:
        """Create a run and start driving it in the background; returns its id."""
        spec = _as_spec(spec)
        run_id = run_id or f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        if not _RUN_ID.fullmatch(run_id):
            raise ValueError(f"invalid run id {run_id!r}: use 1-100 of A-Z a-z 0-9 _ . -")
        settings = self.settings.pipeline
        max_rounds = spec.max_fix_rounds
        workspace = (settings.workspace_root / run_id).resolve()
        workspace.mkdir(parents=True, exist_ok=False)
        run = RunState(
            run_id=run_id,
            spec=spec,
            max_fix_rounds=settings.max_fix_rounds if max_rounds is None else max_rounds,
            workspace=str(workspace),
            deploy_dir=str(settings.deploy_dir.resolve()),
        )
        if not await self.store.acquire(run_id, self.manager_id, self._lock_ms):
            raise QueueError(f"run {run_id!r} is already driven by another manager")
        await self._save(run)
        self._drive_in_background(run, resumed=False)
        return run_id

    async def wait_run(self, run_id: str) -> PipelineResult:
        """Wait for a run this manager drives; for any other, its state as stored now."""
        driver = self._drivers.get(run_id)
        if driver is not None:
            return await asyncio.shield(driver)
        run = await self.store.load(run_id)
        if run is None:
            raise RunNotFound(run_id)
        return run.to_result()

    async def get_run(self, run_id: str) -> RunState:
        run = await self.store.load(run_id)
        if run is None:
            raise RunNotFound(run_id)
        return run

    async def list_runs(self, limit: int = 20) -> list[RunState]:
        return await self.store.recent(limit)

    async def cancel_run(self, run_id: str) -> RunStatus:
        """Cancel a run: its queued subtasks are cancelled and its running ones stopped.
        Returns the run's status afterwards (CANCELLED, or how it had already ended)."""
        run = await self.get_run(run_id)
        if run.status.is_final:
            return run.status
        self._cancelling.add(run_id)
        await self.store.request_cancel(run_id)
        run = await self.get_run(run_id)  # after the flag: a subtask saved later sees it
        for record in run.subtasks.values():
            if record.state == "queued":
                await self._cancel_subtask(record.task_id)
        driver = self._drivers.get(run_id)
        if driver is not None:
            return (await asyncio.shield(driver)).status
        if not await self.store.acquire(run_id, self.manager_id, self._lock_ms):
            return RunStatus.RUNNING  # its manager sees the flag and ends it
        # Nobody drives it (its manager is gone, or it just ended): read it again under
        # the lock, so a run that ended meanwhile is not overwritten.
        run = await self.get_run(run_id)
        if run.status.is_final:
            await self.store.release(run_id, self.manager_id)
            return run.status
        for record in run.subtasks.values():
            if record.state == "queued":
                record.state, record.finished_at = "cancelled", time.time()
        await self._end(run, RunStatus.CANCELLED, "cancelled while no manager drove it")
        return RunStatus.CANCELLED

    # -- the flow --------------------------------------------------------------------

    def _drive_in_background(self, run: RunState, *, resumed: bool) -> None:
        driver = asyncio.create_task(self._drive(run, resumed), name=f"pipeline-{run.run_id}")
        self._drivers[run.run_id] = driver
        driver.add_done_callback(lambda _: self._drivers.pop(run.run_id, None))

    async def _drive(self, run: RunState, resumed: bool) -> PipelineResult:
        if self.metrics:
            self.metrics.run_started()
        attributes = {tracing.RUN_ID: run.run_id}
        with tracing.pipeline_span(
            tracing.PIPELINE_RUN, run.name, parent=run.trace_context or None, attributes=attributes
        ) as span:
            context = span.get_span_context()
            if not run.trace_context and context.is_valid:
                run.trace_context = tracing.inject()
                run.trace_id = format(context.trace_id, "032x")
            self._emit(run, "started", message="resumed" if resumed else "")
            try:
                await self._flow_through_outages(run)
            except (asyncio.CancelledError, RunOwnershipLost) as exc:
                return await self._interrupted(run, exc)
            except _RunCancelled:
                await self._end(run, RunStatus.CANCELLED, "cancelled")
            except _StageFailed as exc:
                await self._end(run, RunStatus.FAILED, str(exc))
            except Exception as exc:  # a bug or an outage: the run ends, it is not lost
                log.exception("pipeline run %s failed", run.run_id)
                await self._end(run, RunStatus.FAILED, f"{type(exc).__name__}: {exc}")
            else:
                await self._end(run, RunStatus.SUCCEEDED, None)
        return run.to_result()

    async def _interrupted(self, run: RunState, exc: BaseException) -> PipelineResult:
        """The driver was stopped (stop(), or the lock renewer saw a takeover) or a save
        found another owner. A run in memory cannot be resumed: it ends cancelled. One in
        Redis stays as saved, for a manager that starts to resume."""
        if self.metrics:
            self.metrics.active.dec()
        if isinstance(exc, RunOwnershipLost) or run.run_id in self._taken_over:
            self._taken_over.discard(run.run_id)
            raise RunInterrupted(run.run_id, "another manager drives it now") from None
        if not self.store.durable:
            if self.metrics:
                self.metrics.active.inc()  # _end counts the run as ended
            await self._end(run, RunStatus.CANCELLED, "the manager stopped")
            return run.to_result()
        raise RunInterrupted(run.run_id, "its manager stopped; it resumes when one starts")

    async def _flow_through_outages(self, run: RunState) -> None:
        """Run the flow; when Redis goes away, wait and run it again from the run's
        state (the flow replays what is recorded, and enqueue is idempotent), so an
        outage delays a run instead of failing it. Cancel or stop() end the wait."""
        pause = OUTAGE_FIRST_PAUSE
        while True:
            try:
                await self._flow(run)
                return
            except RedisUnavailable as exc:
                log.warning(
                    "run %s waits for Redis (%s); retrying in %.1f s", run.run_id, exc, pause
                )
                self._emit(run, "waiting", run.stage, message=f"Redis unavailable: {exc}")
            await asyncio.sleep(pause)  # a backoff while Redis is down, not a poll for work
            pause = min(pause * 2, OUTAGE_MAX_PAUSE)
            if run.run_id in self._cancelling:
                raise _RunCancelled

    async def _flow(self, run: RunState) -> None:
        async with self._stage(run, Stage.DEV):
            dev = [s.model_dump(mode="json", exclude_none=True) for s in run.spec.subtasks]
            steps = [self._step(run, Stage.DEV, {**s, "stage": "dev"}) for s in dev]
            outcomes = await asyncio.gather(*steps, return_exceptions=True)
        for outcome in outcomes:  # cancel, takeover, outage or a bug: not a dev failure
            if isinstance(outcome, BaseException) and not isinstance(outcome, _StageFailed):
                raise outcome
        failed = [str(o) for o in outcomes if isinstance(o, _StageFailed)]
        if failed:
            raise _StageFailed("; ".join(failed))
        fix_round = 0
        while True:
            async with self._stage(run, Stage.QA):
                qa = await self._step(run, Stage.QA, _qa_subtask(fix_round), round=fix_round)
            if qa.get("passed"):
                break
            if fix_round >= run.max_fix_rounds:
                raise _StageFailed(
                    f"QA still fails after {fix_round} fix round(s): {_qa_reason(qa)}"
                )
            fix_round += 1
            run.fix_rounds = fix_round
            async with self._stage(run, Stage.FIX):
                failure = str(qa.get("output") or qa.get("summary") or "")
                await self._step(
                    run, Stage.FIX, _fix_subtask(fix_round), round=fix_round, failure=failure
                )
        async with self._stage(run, Stage.DEPLOY):
            deploy = await self._step(
                run,
                Stage.DEPLOY,
                {"id": "deploy", "stage": "deploy", "description": "Build the release artifact"},
                deploy_dir=run.deploy_dir,
                name=run.spec.name,
                version=run.spec.version,
                qa_evidence=qa,
            )
        run.artifact = deploy.get("artifact")

    async def _step(
        self, run: RunState, stage: Stage, subtask: dict[str, Any], **extra: Any
    ) -> dict[str, Any]:
        """Run one subtask, or return its recorded result if it already ran."""
        task_id = f"{run.run_id}:{stage}:{subtask['id']}"
        record = run.subtasks.get(task_id)
        if record is not None and record.state == "completed":
            return dict(record.result)
        if record is None:
            record = SubtaskRecord(
                task_id=task_id,
                stage=stage,
                subtask_id=subtask["id"],
                priority=self.priority_for(stage, subtask),
            )
            run.subtasks[task_id] = record
            await self._save(run)
        await self._raise_if_cancelled(run)
        payload: dict[str, Any] = {"run_id": run.run_id, "workspace": run.workspace, **extra}
        if run.spec.model:
            payload["model"] = run.spec.model
        await self.submit_task(stage, task_id, subtask, **payload)
        if await self.store.cancel_requested(run.run_id):  # a cancel raced the submit
            await self._cancel_subtask(task_id)
        self._emit(run, "submitted", stage, subtask["id"], f"priority {record.priority}")
        try:
            result, attempts = await self._outcome(task_id, self._subtask_timeout)
        except TaskCancelled:
            record.state, record.finished_at = "cancelled", time.time()
            await self._save(run)
            await self._raise_if_cancelled(run)
            raise _StageFailed(f"{stage} subtask {subtask['id']} was cancelled") from None
        except (TaskFailed, ResultTimeout) as exc:
            if isinstance(exc, ResultTimeout):  # nobody will want its result any more
                await self._cancel_subtask(task_id)
            record.state, record.finished_at = "failed", time.time()
            record.error = getattr(exc, "error", None) or str(exc)
            await self._save(run)
            self._emit(run, "failed", stage, subtask["id"], record.error)
            raise _StageFailed(f"{stage} subtask {subtask['id']} failed: {record.error}") from exc
        if not isinstance(result, dict):
            result = {"ok": True, "summary": "", "value": result}
        record.state, record.result = "completed", result
        record.attempts, record.finished_at = attempts, time.time()
        await self._save(run)
        if self.metrics:
            used = Usage()
            used.add(result.get("usage"))
            self.metrics.subtask_used(str(stage), used.total_tokens, used.cost_usd)
        self._emit(run, "finished", stage, subtask["id"], str(result.get("summary", "")), result)
        if stage is not Stage.QA and result.get("ok") is False:
            raise _StageFailed(f"{stage} subtask {subtask['id']}: {result.get('summary')}")
        return result

    @asynccontextmanager
    async def _stage(self, run: RunState, stage: Stage) -> AsyncIterator[None]:
        run.stage = stage
        self._emit(run, "stage", stage)
        started = time.perf_counter()
        attributes = {tracing.RUN_ID: run.run_id, tracing.STAGE: str(stage)}
        with tracing.pipeline_span(tracing.PIPELINE_STAGE, str(stage), attributes=attributes):
            yield
        if self.metrics:
            self.metrics.stage_finished(str(stage), time.perf_counter() - started)

    async def _raise_if_cancelled(self, run: RunState) -> None:
        if run.run_id in self._cancelling or await self.store.cancel_requested(run.run_id):
            raise _RunCancelled

    async def _end(self, run: RunState, status: RunStatus, reason: str | None) -> None:
        run.status = status
        if reason:
            run.reasons.append(reason)
        run.finished_at = time.time()
        pause = OUTAGE_FIRST_PAUSE
        while True:  # the end of a run is not dropped for an outage
            try:
                await self._save(run)
                await self.store.release(run.run_id, self.manager_id)
                break
            except RedisUnavailable as exc:
                log.warning("run %s ended %s; saving waits for Redis (%s)", run.run_id, status, exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, OUTAGE_MAX_PAUSE)
        self._cancelling.discard(run.run_id)
        self._forget_subtasks(list(run.subtasks))
        if self.metrics:
            self.metrics.run_ended(str(status))
        self._emit(run, "ended", message=str(status), data={"reasons": run.reasons})

    async def _save(self, run: RunState) -> None:
        run.updated_at = time.time()
        await self.store.save(run, self.manager_id)

    def _emit(
        self,
        run: RunState,
        kind: str,
        stage: Stage | None = None,
        subtask_id: str | None = None,
        message: str = "",
        data: dict[str, Any] | None = None,
    ) -> None:
        event = RunEvent(run.run_id, kind, stage, subtask_id, message, data or {})
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # a display must not break a run
                log.exception("pipeline event listener failed")

    # -- where subtasks run (overridden by DistributedPipelineManager) -------------

    async def _start_executor(self) -> None:
        if self._executor is None:
            self._executor = LocalExecutor(
                self._handlers or _load_app(self._app),
                workers=self._workers,
                max_retries=self.settings.max_retries,
                retry_policy=self.settings.queue_kwargs()["retry_policy"],
            )
        await self._executor.start()

    async def _stop_executor(self) -> None:
        if self._executor is not None:
            await self._executor.stop()

    def _forget_subtasks(self, task_ids: list[str]) -> None:
        if self._executor is not None:  # the run's results are in its state now
            self._executor.forget(task_ids)

    async def _outcome(self, task_id: str, timeout: float) -> tuple[Any, int]:
        return await self._local().outcome(task_id, timeout)

    async def _cancel_subtask(self, task_id: str) -> None:
        self._local().cancel(task_id)

    def _local(self) -> LocalExecutor:
        if self._executor is None:
            raise RuntimeError("call `await manager.start()` first")
        return self._executor

    @property
    def _subtask_timeout(self) -> float:
        return self.settings.pipeline.subtask_timeout_seconds

    @property
    def _lock_ms(self) -> int:
        return int(self.settings.pipeline.run_lock_seconds * 1000)


def _as_spec(spec: PipelineSpec | Mapping[str, Any] | str | Path) -> PipelineSpec:
    if isinstance(spec, PipelineSpec):
        return spec
    if isinstance(spec, str | Path):
        return load_spec(spec)
    return PipelineSpec.model_validate(dict(spec))


def _load_app(app: str) -> HandlerRegistry:
    from importlib import import_module

    module, _, attribute = app.partition(":")
    return as_registry(getattr(import_module(module), attribute or "registry"))


def _qa_subtask(fix_round: int) -> dict[str, Any]:
    return {
        "id": f"qa-{fix_round}",
        "stage": "qa",
        "description": "Compile the workspace and run its tests",
    }


def _fix_subtask(fix_round: int) -> dict[str, Any]:
    return {
        "id": f"fix-{fix_round}",
        "stage": "fix",
        "description": "Make the failing tests pass",
        "blocking": True,  # it blocks the deploy
        "retries": fix_round - 1,
    }


def _qa_reason(qa: Mapping[str, Any]) -> str:
    summary = str(qa.get("summary") or "tests failed")
    output = str(qa.get("output") or "").strip().splitlines()
    return summary if not output else f"{summary} ({output[-1][:200]})"
