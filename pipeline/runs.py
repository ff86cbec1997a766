"""The state of a pipeline run, what a run reports, and the events it emits.

A RunState is a JSON document: a manager saves it after every change, so a restarted
manager can replay the stage flow from the results already recorded and run only what
is missing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from .spec import PipelineSpec

__all__ = [
    "Approval",
    "PipelineResult",
    "RunEvent",
    "RunState",
    "RunStatus",
    "Stage",
    "SubtaskRecord",
    "SubtaskState",
    "Usage",
]


class RunStatus(StrEnum):
    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"  # stopped before a gated stage (spec `approval`)
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self not in (RunStatus.RUNNING, RunStatus.AWAITING_APPROVAL)


class Stage(StrEnum):
    """The stages, in flow order; each is also the task type its subtasks run as."""

    DEV = "dev"
    QA = "qa"
    FIX = "fix"
    DEPLOY = "deploy"


class Usage(BaseModel):
    """Tokens and cost of a run's (or a subtask's) results, plus the tokens its failed
    attempts spent: those count in total_tokens and against a budget, but no price is
    known for them (their split into prompt and completion is not recorded)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    failed_attempt_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens + self.failed_attempt_tokens

    def add(self, reported: Any) -> None:
        """Add an agent result's `usage` (ignored when absent or malformed)."""
        if not isinstance(reported, dict):
            return
        self.prompt_tokens += _number(reported.get("prompt_tokens"), int)
        self.completion_tokens += _number(reported.get("completion_tokens"), int)
        self.cost_usd += _number(reported.get("cost_usd"), float)


class SubtaskState(StrEnum):
    """Where a run's subtask stands, as the run records it (not the queue task's state:
    a subtask is queued from its submit until its outcome arrives)."""

    QUEUED = "queued"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class SubtaskRecord(BaseModel):
    """One subtask of a run: its queue task and, once it ended, its result or error."""

    task_id: str
    stage: Stage
    subtask_id: str
    priority: int
    state: SubtaskState = SubtaskState.QUEUED
    attempts: int = 0
    submitted_at: float = Field(default_factory=time.time)
    finished_at: float | None = None
    result: Any = None
    error: str | None = None
    failed_attempt_tokens: int = 0  # spent by attempts that failed (Usage)

    @property
    def duration_seconds(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.submitted_at


class Approval(BaseModel):
    """A run's approval gate: what was asked (when, before which stage, what is to ship,
    until when) and, once given, the decision: approved, rejected or timed_out, by whom,
    when and why."""

    stage: Stage
    requested_at: float
    deadline: float | None = None  # server-independent wall time; None: waits for ever
    on_timeout: str = "fail"  # or "approve"
    summary: dict[str, Any] = Field(default_factory=dict)
    decision: str | None = None
    decided_by: str | None = None
    decided_at: float | None = None
    comment: str | None = None


class RunState(BaseModel):
    run_id: str
    spec: PipelineSpec
    status: RunStatus = RunStatus.RUNNING
    stage: Stage = Stage.DEV
    max_fix_rounds: int
    fix_rounds: int = 0
    workspace: str
    deploy_dir: str
    subtasks: dict[str, SubtaskRecord] = Field(default_factory=dict)
    reasons: list[str] = Field(default_factory=list)
    artifact: str | None = None
    trace_context: dict[str, str] = Field(default_factory=dict)
    trace_id: str | None = None
    approval: Approval | None = None
    # read in the form that kept the subtasks inside the run's document: its next save
    # writes every record apart (not part of the document itself)
    stored_whole: bool = Field(False, exclude=True)
    # its spec is stored (apart from the header, once: a wide spec would make every
    # save cost as much as the run is wide); not part of the document either
    spec_stored: bool = Field(False, exclude=True)
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)
    finished_at: float | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def usage(self) -> Usage:
        total = Usage()
        for record in self.subtasks.values():
            if isinstance(record.result, dict):
                total.add(record.result.get("usage"))
            total.failed_attempt_tokens += record.failed_attempt_tokens
        return total

    def to_result(self) -> PipelineResult:
        return PipelineResult(
            run_id=self.run_id,
            name=self.name,
            status=self.status,
            stages=[s for s in Stage if any(r.stage is s for r in self.subtasks.values())],
            fix_rounds=self.fix_rounds,
            subtasks=list(self.subtasks.values()),
            reasons=list(self.reasons),
            artifact=self.artifact,
            usage=self.usage(),
            trace_id=self.trace_id,
            duration_seconds=(self.finished_at or time.time()) - self.created_at,
        )


class PipelineResult(BaseModel):
    """What `run(spec)` returns: how the run ended and every subtask's result."""

    run_id: str
    name: str
    status: RunStatus
    stages: list[Stage]
    fix_rounds: int
    subtasks: list[SubtaskRecord]
    reasons: list[str]
    artifact: str | None
    usage: Usage
    trace_id: str | None
    duration_seconds: float

    @property
    def succeeded(self) -> bool:
        return self.status is RunStatus.SUCCEEDED

    def results(self, stage: Stage | str) -> list[Any]:
        """The results of one stage's subtasks, in submission order."""
        return [r.result for r in self.subtasks if r.stage == stage]


@dataclass(frozen=True, slots=True)
class RunEvent:
    """Progress of a run, for a live display: `kind` is started, submitted, finished,
    failed, stage (a stage began) or ended (the run ended)."""

    run_id: str
    kind: str
    stage: Stage | None = None
    subtask_id: str | None = None
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)


EventHandler = Callable[[RunEvent], None]


def _number(value: Any, kind: type[int] | type[float]) -> Any:
    return kind(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0
