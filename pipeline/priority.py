"""PriorityAssigner: the queue priority of each pipeline subtask, from documented rules.

Rules, in order (the result is clamped to LOW..CRITICAL):

1. An explicit `priority` on the subtask wins.
2. `background` work is LOW.
3. The stage sets the base (the stage table, stages.py): dev NORMAL; qa, fix and deploy
   HIGH, because they finish work already started, so a fix that blocks a deploy
   outranks new dev work.
4. +1 when the subtask is `blocking` or on the `critical_path`.
5. +1 when its `deadline` is within `deadline_window_seconds` (or past).
6. +1 when it has already been retried `retry_boost_after` times (`retries` key).
7. +1 when at least `dependants_boost_at` other subtasks wait on it, directly or through
   others (`dependants` key, counted by the flow from the spec's `depends_on`): work that
   holds up much of the graph goes first. Rules 4-7 add up, then the clamp.

A subtask is any mapping (or object with those attributes); missing keys are false.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from utils.redis_queue import TaskPriority

from .stages import STAGES

__all__ = ["PriorityAssigner", "PriorityRules"]


@dataclass(frozen=True, slots=True)
class PriorityRules:
    stage_base: Mapping[str, int] = field(
        default_factory=lambda: {str(row.stage): row.base_priority for row in STAGES}
    )
    default_base: int = TaskPriority.NORMAL  # a stage not in stage_base
    deadline_window_seconds: float = 600.0
    retry_boost_after: int = 2
    dependants_boost_at: int = 2


class PriorityAssigner:
    def __init__(self, rules: PriorityRules | None = None) -> None:
        self.rules = rules or PriorityRules()

    def assign_priority(self, subtask: Any) -> int:
        """The TaskPriority value (0-3) for `subtask`."""
        get = _getter(subtask)
        explicit = get("priority")
        if explicit is not None:
            return _clamp(_parse(explicit))
        if get("background"):
            return int(TaskPriority.LOW)
        stage = get("stage")
        priority = int(self.rules.stage_base.get(str(stage), self.rules.default_base))
        if get("blocking") or get("critical_path"):
            priority += 1
        if self._deadline_near(get("deadline")):
            priority += 1
        retries = get("retries") or 0
        if self.rules.retry_boost_after and int(retries) >= self.rules.retry_boost_after:
            priority += 1
        waiting = get("dependants") or 0
        if self.rules.dependants_boost_at and int(waiting) >= self.rules.dependants_boost_at:
            priority += 1
        return _clamp(priority)

    def _deadline_near(self, deadline: Any) -> bool:
        if deadline is None:
            return False
        if isinstance(deadline, str):
            deadline = datetime.fromisoformat(deadline)
        if not isinstance(deadline, datetime):
            raise TypeError(f"deadline must be a datetime or ISO string, not {deadline!r}")
        if deadline.tzinfo is None:
            deadline = deadline.replace(tzinfo=UTC)
        left = (deadline - datetime.now(UTC)).total_seconds()
        return bool(left <= self.rules.deadline_window_seconds)


def _getter(subtask: Any) -> Any:
    if isinstance(subtask, Mapping):
        return subtask.get
    return lambda name: getattr(subtask, name, None)


def _parse(priority: Any) -> int:
    if isinstance(priority, str) and not priority.isdigit():
        try:
            return int(TaskPriority[priority.upper()])
        except KeyError:
            raise ValueError(
                f"unknown priority {priority!r}: LOW, NORMAL, HIGH or CRITICAL"
            ) from None
    return int(priority)


def _clamp(priority: int) -> int:
    return max(int(TaskPriority.LOW), min(int(TaskPriority.CRITICAL), priority))
