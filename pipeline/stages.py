"""The stage table: every stage of a run, the task type its subtasks run as, the base of
its priority (PriorityAssigner's rule 3) and the agent that runs it.

The flow (pipeline/flow.py) decides when a stage runs; this table says what it is. The
worker side builds its handlers from it (agents/app.py imports each row's agent), so a
new stage is one row here, one agent, and the place in the flow that submits it. The QA
and fix subtasks the flow sends are built here too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from utils.redis_queue import TaskPriority

from .runs import Stage

__all__ = [
    "STAGES",
    "StageRow",
    "fix_subtask",
    "qa_reason",
    "qa_subtask",
    "stage_row",
    "task_type_for",
]


@dataclass(frozen=True, slots=True)
class StageRow:
    stage: Stage
    task_type: str  # the queue's task type; workers route on it
    base_priority: TaskPriority
    agent: str  # "module:Class" of the agent (in the agents layer, above this one)
    summary: str
    uses_model: bool = False  # its agent calls the model: the spec's model_limits bind it


STAGES: tuple[StageRow, ...] = (
    StageRow(Stage.DEV, "dev", TaskPriority.NORMAL, "agents.dev:DevAgent", "write code", True),
    # qa, fix and deploy finish work already started, so they outrank new dev work
    StageRow(Stage.QA, "qa", TaskPriority.HIGH, "agents.qa:QAAgent", "compile and run the tests"),
    StageRow(
        Stage.FIX, "fix", TaskPriority.HIGH, "agents.fix:FixAgent", "make failing tests pass", True
    ),
    StageRow(Stage.DEPLOY, "deploy", TaskPriority.HIGH, "agents.deploy:DeployAgent", "pack it"),
)
_BY_NAME = {str(row.stage): row for row in STAGES}


def stage_row(stage: Stage | str) -> StageRow | None:
    """The row of `stage`; None for a name the table does not have (submit_task accepts
    any stage name: it then runs as a task type of that name at the default priority)."""
    return _BY_NAME.get(str(stage))


def task_type_for(stage: Stage | str) -> str:
    row = stage_row(stage)
    return row.task_type if row is not None else str(stage)


def qa_subtask(fix_round: int) -> dict[str, Any]:
    """The QA subtask of a fix round (0: the first QA, after the dev stage)."""
    return {
        "id": f"qa-{fix_round}",
        "stage": "qa",
        "description": "Compile the workspace and run its tests",
    }


def fix_subtask(fix_round: int) -> dict[str, Any]:
    """The fix subtask of round `fix_round` (1 is the first)."""
    return {
        "id": f"fix-{fix_round}",
        "stage": "fix",
        "description": "Make the failing tests pass",
        "blocking": True,  # it blocks the deploy
        "retries": fix_round - 1,
    }


def qa_reason(qa: Mapping[str, Any]) -> str:
    """One line on why QA failed: its summary and the last line of its output."""
    summary = str(qa.get("summary") or "tests failed")
    output = str(qa.get("output") or "").strip().splitlines()
    return summary if not output else f"{summary} ({output[-1][:200]})"
