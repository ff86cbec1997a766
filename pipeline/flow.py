"""The stage flow of a pipeline run, shared by both managers.

    dev subtasks (in dependency order, independent ones in parallel)
        -> qa -> [fix -> qa] x up to max_fix_rounds -> deploy

Every subtask is submitted with the priority PriorityAssigner gives it and its result
is recorded in the run's state, which is saved after every change. The flow is a pure
function of the recorded results, so a run can be driven again from its saved state
(DistributedPipelineManager resumes runs that way) without re-running finished subtasks.
Where subtasks run is the executor's business (executors.py): the manager's
`submit_task` sends each subtask to it, the flow awaits, cancels and forgets them there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from typing import Any, NoReturn

from utils import tracing
from utils.config import Settings
from utils.metrics import PipelineMetrics
from utils.redaction import first_line, redact_secrets
from utils.redis_queue import RedisUnavailable, ResultTimeout, TaskCancelled, TaskFailed

from .approval import decision, new_approval
from .budget import (
    BUDGET_EXCEEDED,
    agent_budget,
    budget_warning,
    over_budget,
    seconds_left,
    subtask_budget,
    subtask_over_budget,
)
from .dag import dependants
from .errors import RunInterrupted, RunOwnershipLost
from .executors import StageExecutor
from .runs import (
    EventHandler,
    PipelineResult,
    RunEvent,
    RunState,
    RunStatus,
    Stage,
    SubtaskRecord,
    SubtaskState,
    Usage,
)
from .stages import fix_subtask, qa_reason, qa_subtask, stage_row
from .store import RunStore

__all__ = ["StageFlow"]

OUTAGE_FIRST_PAUSE = 0.5  # seconds before a run retries after Redis went away; doubles
OUTAGE_MAX_PAUSE = 10.0
log = logging.getLogger("agentic.pipeline")


class _StageFailed(Exception):
    """The run cannot go on: the reason is the exception's message."""


class _BudgetExceeded(_StageFailed):
    """The run used more than its budget: it ends with this reason alone."""


class _RunCancelled(Exception):
    pass


class StageFlow:
    """Drives runs through the stages; EnhancedPipelineManager supplies the rest."""

    settings: Settings
    store: RunStore
    metrics: PipelineMetrics | None
    manager_id: str
    _drivers: dict[str, asyncio.Task[PipelineResult]]
    _cancelling: set[str]
    _taken_over: set[str]
    _budget_warned: set[str]  # runs that had their budget_warning event
    _listeners: list[EventHandler]

    # -- what the manager provides ------------------------------------------------------

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
        raise NotImplementedError

    def priority_for(self, stage: Stage | str, subtask: Any) -> int:
        raise NotImplementedError

    @property
    def executor(self) -> StageExecutor:
        raise NotImplementedError

    @property
    def _subtask_timeout(self) -> float:
        return self.settings.pipeline.subtask_timeout_seconds

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
                if isinstance(exc, _BudgetExceeded):
                    span.add_event(tracing.BUDGET_EXCEEDED_EVENT, {tracing.REASON: str(exc)})
                    if self.metrics:
                        self.metrics.budget_exceeded.inc()
                await self._end(run, RunStatus.FAILED, str(exc))
            except Exception as exc:  # a bug or an outage: the run ends, it is not lost
                log.exception("pipeline run %s failed", run.run_id)
                await self._end(run, RunStatus.FAILED, f"{type(exc).__name__}: {exc}")
            else:
                await self._end(run, RunStatus.SUCCEEDED, None)
            used = run.usage()
            span.set_attribute(tracing.RUN_TOKENS, used.total_tokens)
            span.set_attribute(tracing.RUN_COST_USD, used.cost_usd)
        return run.to_result()

    async def _interrupted(self, run: RunState, exc: BaseException) -> PipelineResult:
        """The driver was stopped (stop(), or the lock renewer saw a takeover) or a save
        found another owner. A run in memory cannot be resumed: it ends cancelled. One in
        Redis stays as saved, for a manager that starts to resume."""
        taken_over = isinstance(exc, RunOwnershipLost) or run.run_id in self._taken_over
        if not taken_over and not self.store.durable:
            await self._end(run, RunStatus.CANCELLED, "the manager stopped")  # counts it ended
            return run.to_result()
        if self.metrics:
            self.metrics.active.dec()  # not ended here: no longer driven here either
        if taken_over:
            self._taken_over.discard(run.run_id)
            raise RunInterrupted(run.run_id, "another manager drives it now") from None
        raise RunInterrupted(run.run_id, "its manager stopped; it resumes when one starts")

    async def _flow_through_outages(self, run: RunState) -> None:
        """Run the flow; when Redis goes away, wait and run it again from the run's
        state (the flow replays what is recorded, and enqueue is idempotent), so an
        outage delays a run instead of failing it. Cancel or stop() end the wait."""
        pause = OUTAGE_FIRST_PAUSE
        while True:
            try:
                await self._flow_within_budget(run)
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

    async def _check_budget(self, run: RunState, subtask_reason: str | None = None) -> None:
        reason = subtask_reason or over_budget(run)
        if reason is not None:
            await self._cancel_queued(run)
            raise _BudgetExceeded(reason)
        warning = budget_warning(run)
        if warning is not None and run.run_id not in self._budget_warned:
            self._budget_warned.add(run.run_id)  # once per run and manager
            self._emit(run, "budget_warning", run.stage, message=warning)

    async def _cancel_queued(self, run: RunState) -> None:
        for record in run.subtasks.values():
            if record.state == SubtaskState.QUEUED:
                await self.executor.cancel(record.task_id)

    async def _flow_within_budget(self, run: RunState) -> None:
        await self._check_budget(run)  # a resumed run may be past it already
        left = seconds_left(run)
        if left is None:
            return await self._flow(run)
        try:
            async with asyncio.timeout(max(0.0, left)):
                return await self._flow(run)
        except TimeoutError:
            await self._cancel_queued(run)
            budget = run.spec.budget
            assert budget is not None and budget.max_seconds is not None
            raise _BudgetExceeded(f"budget exceeded: {budget.max_seconds:g} s") from None

    async def _flow(self, run: RunState) -> None:
        async with self._stage(run, Stage.DEV):
            outcomes = await self._dev_graph(run)
        for outcome in outcomes:  # cancel, takeover, outage or a bug: not a dev failure
            if isinstance(outcome, BaseException) and not isinstance(outcome, _StageFailed):
                raise outcome
        for outcome in outcomes:  # the budget's reason alone, not the cancels it caused
            if isinstance(outcome, _BudgetExceeded):
                raise outcome
        failed = [str(o) for o in outcomes if isinstance(o, _StageFailed)]
        if failed:
            raise _StageFailed("; ".join(failed))
        fix_round = 0
        qa: dict[str, Any] | None = None
        while True:
            if fix_round == 0:
                await self._gate(run, Stage.QA, None)
            async with self._stage(run, Stage.QA):
                qa = await self._step(run, Stage.QA, qa_subtask(fix_round), round=fix_round)
            if qa.get("passed"):
                break
            if fix_round >= run.max_fix_rounds:
                raise _StageFailed(
                    f"QA still fails after {fix_round} fix round(s): {qa_reason(qa)}"
                )
            fix_round += 1
            run.fix_rounds = fix_round
            if fix_round == 1:
                await self._gate(run, Stage.FIX, qa)
            async with self._stage(run, Stage.FIX):
                failure = str(qa.get("output") or qa.get("summary") or "")
                await self._step(
                    run, Stage.FIX, fix_subtask(fix_round), round=fix_round, failure=failure
                )
        await self._gate(run, Stage.DEPLOY, qa)
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

    async def _gate(self, run: RunState, stage: Stage, qa: dict[str, Any] | None) -> None:
        """Wait before `stage` for the approval the spec asks for (pipeline/approval.py);
        a run resumed at its gate waits on until the same deadline."""
        wanted = run.spec.approval
        if wanted is None or wanted.stage != stage:
            return
        gate = run.approval
        if gate is None or gate.stage != stage:
            timeout = wanted.timeout_seconds or self.settings.pipeline.approval_timeout_seconds
            gate = run.approval = new_approval(run, stage, timeout, wanted.on_timeout, qa)
        if gate.decision is None:
            run.status = RunStatus.AWAITING_APPROVAL
            await self._save(run, ())
            hint = f"agentic pipeline approve|reject {run.run_id}"
            self._emit(run, "approval", stage, message=f"awaiting approval to {stage}: {hint}")
            left = None if gate.deadline is None else max(0.0, gate.deadline - time.time())
            decided = await self.store.await_decision(run.run_id, left)
            if decided is None:  # recorded like a decision, unless one came just now
                late = "approved" if gate.on_timeout == "approve" else "timed_out"
                decided = await self.store.decide(run.run_id, decision(late, "timeout"))
            if decided.get("decision") == "cancelled":
                raise _RunCancelled
            gate.decision, gate.decided_by = str(decided["decision"]), decided.get("by")
            gate.decided_at, gate.comment = decided.get("at"), decided.get("comment")
            run.status = RunStatus.RUNNING
            await self._save(run, ())
            self._emit(run, gate.decision, stage, message=f"by {gate.decided_by}")
        if gate.decision != "approved":
            why = f": {gate.comment}" if gate.comment else ""
            raise _StageFailed(
                f"{stage} was {gate.decision.replace('_', ' ')} by {gate.decided_by}{why}"
            )

    async def _dev_graph(self, run: RunState) -> list[Any]:
        """Every dev subtask, each started once all it depends on passed (pipeline/dag.py):
        independent ones at once. A subtask whose dependency failed fails with that
        reason, unsubmitted; returns each subtask's result or exception, in spec order."""
        edges = run.spec.edges()
        waiting_on_it = dependants(edges)
        steps: dict[str, asyncio.Future[dict[str, Any]]] = {}

        async def dev(spec: dict[str, Any]) -> dict[str, Any]:
            needs = [steps[need] for need in edges[spec["id"]]]
            await asyncio.gather(*needs, return_exceptions=True)
            for need, step in zip(edges[spec["id"]], needs, strict=True):
                problem = step.exception()
                if isinstance(problem, _BudgetExceeded):
                    raise problem
                if isinstance(problem, _StageFailed):
                    await self._blocked(run, spec, need)
                if problem is not None:  # cancel, takeover, outage: the same for this one
                    raise problem
            dependants_of = {"dependants": waiting_on_it[spec["id"]]}
            return await self._step(run, Stage.DEV, {**spec, "stage": "dev", **dependants_of})

        for subtask in run.spec.subtasks:  # a dependency is always created first (acyclic)
            spec = subtask.model_dump(mode="json", exclude_none=True)
            steps[subtask.id] = asyncio.ensure_future(dev(spec))
        try:
            return list(await asyncio.gather(*steps.values(), return_exceptions=True))
        finally:
            for step in steps.values():  # the driver was cancelled: no step outlives it
                step.cancel()

    async def _blocked(self, run: RunState, spec: dict[str, Any], need: str) -> NoReturn:
        """Record a dev subtask that cannot run because `need` failed, and fail it."""
        subtask_id = spec["id"]
        task_id = f"{run.run_id}:{Stage.DEV}:{subtask_id}"
        reason = f"its dependency {need} failed"
        record = run.subtasks.get(task_id) or SubtaskRecord(
            task_id=task_id,
            stage=Stage.DEV,
            subtask_id=subtask_id,
            priority=self.priority_for(Stage.DEV, spec),
        )
        record.state, record.error, record.finished_at = SubtaskState.FAILED, reason, time.time()
        run.subtasks[task_id] = record
        await self._save(run, (task_id,))
        self._emit(run, "failed", Stage.DEV, subtask_id, reason)
        raise _StageFailed(f"dev subtask {subtask_id} was not run: {reason}")

    async def _step(
        self, run: RunState, stage: Stage, subtask: dict[str, Any], **extra: Any
    ) -> dict[str, Any]:
        """Run one subtask, or return its recorded result if it already ran."""
        task_id = f"{run.run_id}:{stage}:{subtask['id']}"
        record = run.subtasks.get(task_id)
        if record is not None and record.state == SubtaskState.COMPLETED:
            return dict(record.result)
        if record is None:
            record = SubtaskRecord(
                task_id=task_id,
                stage=stage,
                subtask_id=subtask["id"],
                priority=self.priority_for(stage, subtask),
            )
            run.subtasks[task_id] = record
            await self._save(run, (task_id,))
        await self._raise_if_cancelled(run)
        payload: dict[str, Any] = {"run_id": run.run_id, "workspace": run.workspace, **extra}
        if run.spec.model:
            payload["model"] = run.spec.model
        own_budget = subtask_budget(subtask)
        allowance = agent_budget(run, own_budget)
        if allowance is not None:  # what the agents check before each model call
            payload["budget"] = allowance
        limits: tuple[str, ...] = ()
        cost: int | None = None
        row, model_limits = stage_row(stage), run.spec.model_limits
        if model_limits is not None and row is not None and row.uses_model:
            await self.executor.apply_limits(model_limits)
            limits, cost = (model_limits.key,), model_limits.tokens_per_call
        await self.submit_task(stage, task_id, subtask, limits=limits, cost_tokens=cost, **payload)
        if await self.store.cancel_requested(run.run_id):  # a cancel raced the submit
            await self.executor.cancel(task_id)
        self._emit(
            run, "submitted", stage, subtask["id"], f"priority {record.priority}",
            {"task_id": task_id},  # its queue task: where its output streams (--follow)
        )  # fmt: skip
        timeout = self._subtask_timeout
        if own_budget is not None and own_budget.max_seconds is not None:
            timeout = min(timeout, own_budget.max_seconds)
        try:
            result, attempts = await self.executor.outcome(task_id, timeout)
        except TaskCancelled as exc:
            record.state, record.finished_at = SubtaskState.CANCELLED, time.time()
            record.attempts = exc.attempts
            await self._save(run, (task_id,))
            await self._raise_if_cancelled(run)
            raise _StageFailed(f"{stage} subtask {subtask['id']} was cancelled") from None
        except (TaskFailed, ResultTimeout) as exc:
            if isinstance(exc, ResultTimeout):  # nobody will want its result any more
                await self.executor.cancel(task_id)
            record.state, record.finished_at = SubtaskState.FAILED, time.time()
            detail = getattr(exc, "error", None) or str(exc)
            # One line for the run (its reason, status, progress); a traceback stays in the
            # task's detail (`agentic task show`) and the worker's log.
            record.error = first_line(redact_secrets(detail), 500)
            record.attempts = getattr(exc, "attempts", record.attempts)
            record.failed_attempt_tokens = await self.executor.failed_attempt_tokens(task_id)
            await self._save(run, (task_id,))
            self._emit(run, "failed", stage, subtask["id"], record.error)
            reason = f"{stage} subtask {subtask['id']}"
            if isinstance(exc, ResultTimeout) and timeout < self._subtask_timeout:
                await self._cancel_queued(run)
                why = f"{BUDGET_EXCEEDED}: {reason} ran past {timeout:g} s"
                raise _BudgetExceeded(why) from None
            said = record.error.removeprefix("PermanentFailure: ")
            if said.startswith(BUDGET_EXCEEDED):  # an agent stopped before a model call
                await self._cancel_queued(run)
                detail = said.removeprefix(BUDGET_EXCEEDED).lstrip(": ")
                raise _BudgetExceeded(f"{BUDGET_EXCEEDED}: {reason}: {detail}") from exc
            raise _StageFailed(f"{reason} failed: {record.error}") from exc
        if not isinstance(result, dict):
            result = {"ok": True, "summary": "", "value": result}
        record.state, record.result = SubtaskState.COMPLETED, result
        record.attempts, record.finished_at = attempts, time.time()
        if attempts > 1:  # only a retried subtask can have spent tokens in a failed attempt
            record.failed_attempt_tokens = await self.executor.failed_attempt_tokens(task_id)
        await self._save(run, (task_id,))
        if self.metrics:
            used = Usage(failed_attempt_tokens=record.failed_attempt_tokens)
            used.add(result.get("usage"))
            self.metrics.subtask_used(str(stage), used.total_tokens, used.cost_usd)
        self._emit(run, "finished", stage, subtask["id"], str(result.get("summary", "")), result)
        await self._check_budget(run, subtask_over_budget(record, own_budget))
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
        self.executor.forget(list(run.subtasks))
        if self.metrics:
            self.metrics.run_ended(str(status))
        self._emit(run, "ended", message=str(status), data={"reasons": run.reasons})

    async def _save(self, run: RunState, changed: Collection[str] | None = None) -> None:
        """Save the run's header and the subtask records `changed` (None: every one, for
        the first save and the last), so a save costs the same at any width."""
        run.updated_at = time.time()
        await self.store.save(run, self.manager_id, changed)

    def _emit(
        self,
        run: RunState,
        kind: str,
        stage: Stage | None = None,
        subtask_id: str | None = None,
        message: str = "",
        data: dict[str, Any] | None = None,
    ) -> None:
        self._publish(RunEvent(run.run_id, kind, stage, subtask_id, message, data or {}))

    def _publish(self, event: RunEvent) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # a display must not break a run
                log.exception("pipeline event listener failed")
