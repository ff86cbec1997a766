"""EnhancedPipelineManager: pipeline runs in one process, on an in-memory priority queue
served by local worker coroutines (LocalExecutor, pipeline/local.py). The stage flow
itself is pipeline/flow.py; a subclass changes where subtasks run by giving another
StageExecutor (`_make_executor`, see executors.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from utils.config import Settings
from utils.metrics import PipelineMetrics
from utils.redis_queue.handlers import HandlerRegistry, as_registry, load_app
from utils.redis_queue.scripts import OutputEntry

from .approval import decision
from .errors import PipelineError, RunAlreadyDriven, RunNotFound
from .executors import StageExecutor
from .flow import StageFlow
from .local import LocalExecutor
from .priority import PriorityAssigner
from .runs import (
    EventHandler,
    PipelineResult,
    RunEvent,
    RunState,
    RunStatus,
    Stage,
    SubtaskState,
)
from .spec import PipelineSpec, load_spec, parse_spec
from .stages import task_type_for
from .store import MemoryRunStore, RunStore

__all__ = ["DEFAULT_APP", "EnhancedPipelineManager"]

DEFAULT_APP = "agents.app:registry"  # the agents, named (pipeline never imports agents)
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
log = logging.getLogger("agentic.pipeline")


class EnhancedPipelineManager(StageFlow):
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
        self._executor: StageExecutor | None = None
        self._started = False
        self._drivers: dict[str, asyncio.Task[PipelineResult]] = {}
        self._cancelling: set[str] = set()
        self._budget_warned: set[str] = set()
        self._taken_over: set[str] = set()  # runs whose lock another manager holds now

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Start the executor (here: the local worker coroutines)."""
        await self.executor.start()
        self._started = True

    async def stop(self) -> None:
        """Stop driving runs (they stay resumable where their state is durable) and
        stop the local workers."""
        drivers = list(self._drivers.values())
        for driver in drivers:
            driver.cancel()
        await asyncio.gather(*drivers, return_exceptions=True)
        self._started = False
        if self._executor is not None:
            await self._executor.stop()

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
        self,
        stage: Stage | str,
        task_id: str,
        subtask: Any,
        *,
        limits: Sequence[str] = (),
        cost_tokens: int | None = None,
        **kwargs: Any,
    ) -> str:
        """Queue one subtask as task type `stage` with payload {"subtask": ..., **kwargs}
        and the assigned priority, bound by the queue limits `limits` (reserving
        `cost_tokens`). Submitting an id again changes nothing."""
        if not self._started:
            raise RuntimeError("call `await manager.start()` first")
        priority = self.priority_for(stage, subtask)
        payload = {"subtask": subtask, **kwargs}
        await self.executor.submit(
            task_id,
            task_type_for(stage),
            payload,
            priority,
            limits=limits,
            cost_tokens=cost_tokens,
        )
        return task_id

    async def collect_result(self, task_id: str, timeout: float | None = None) -> Any:
        """The subtask's result once it finished. Raises TaskFailed, TaskCancelled or
        ResultTimeout."""
        result, _ = await self.executor.outcome(task_id, timeout or self._subtask_timeout)
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
            raise RunAlreadyDriven(run_id)
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

    async def approve_run(
        self, run_id: str, *, by: str | None = None, comment: str | None = None
    ) -> dict[str, Any]:
        """Approve the run at its approval gate (or ahead of it); returns the decision that
        stands: this one, or one given before (the first decision stands)."""
        return await self._decide(run_id, decision("approved", by, comment))

    async def reject_run(
        self, run_id: str, reason: str, *, by: str | None = None
    ) -> dict[str, Any]:
        """Reject the run at its approval gate: it ends failed with `reason`."""
        return await self._decide(run_id, decision("rejected", by, reason))

    async def _decide(self, run_id: str, given: dict[str, Any]) -> dict[str, Any]:
        run = await self.get_run(run_id)
        if run.spec.approval is None:
            raise PipelineError(f"run {run_id} has no approval gate (its spec has no approval)")
        if run.status.is_final:
            raise PipelineError(f"run {run_id} has ended ({run.status})")
        return await self.store.decide(run_id, given)

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
            if record.state == SubtaskState.QUEUED:
                await self.executor.cancel(record.task_id)
        driver = self._drivers.get(run_id)
        if driver is not None:
            return (await asyncio.shield(driver)).status
        if not await self.store.acquire(run_id, self.manager_id, self._lock_ms):
            return run.status  # its manager sees the flag and ends it
        # Nobody drives it (its manager is gone, or it just ended): read it again under
        # the lock, so a run that ended meanwhile is not overwritten.
        run = await self.get_run(run_id)
        if run.status.is_final:
            await self.store.release(run_id, self.manager_id)
            return run.status
        for record in run.subtasks.values():
            if record.state == SubtaskState.QUEUED:
                record.state, record.finished_at = SubtaskState.CANCELLED, time.time()
        await self._end(run, RunStatus.CANCELLED, "cancelled while no manager drove it")
        return RunStatus.CANCELLED

    # -- where subtasks run (DistributedPipelineManager gives a QueueExecutor) --------

    @property
    def executor(self) -> StageExecutor:
        if self._executor is None:
            self._executor = self._make_executor()
        return self._executor

    def _make_executor(self) -> StageExecutor:
        return LocalExecutor(
            self._handlers or load_app(self._app),
            workers=self._workers,
            max_retries=self.settings.max_retries,
            retry_policy=self.settings.queue_kwargs()["retry_policy"],
            on_output=self._local_output,
        )

    def _local_output(self, task_id: str, attempt: int, entries: Sequence[OutputEntry]) -> None:
        """A subtask's output in this process, as "output" run events: what the queue's
        output streams carry for the distributed manager (one event per entry)."""
        run_id, stage, subtask_id = task_id.rsplit(":", 2)
        for entry in entries:
            data = {"kind": entry.kind, "attempt": attempt, "fraction": entry.fraction}
            self._publish(RunEvent(run_id, "output", Stage(stage), subtask_id, entry.text, data))

    @property
    def _lock_ms(self) -> int:
        return int(self.settings.pipeline.run_lock_seconds * 1000)


def _as_spec(spec: PipelineSpec | Mapping[str, Any] | str | Path) -> PipelineSpec:
    if isinstance(spec, PipelineSpec):
        return spec
    if isinstance(spec, str | Path):
        return load_spec(spec)
    return parse_spec(dict(spec))
