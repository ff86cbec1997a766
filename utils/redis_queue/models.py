"""The queue's value types: priorities, states, the retry policy, RedisTask, and what the
queue's history holds (MinuteCounts, AttemptRecord)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import Enum, StrEnum
from typing import Any

from .errors import InvalidPriority

__all__ = [
    "AttemptRecord",
    "ClaimBatch",
    "MinuteCounts",
    "RedisTask",
    "RetryPolicy",
    "Settlement",
    "TaskPriority",
    "TaskState",
    "coerce_priority",
]


class TaskPriority(int, Enum):
    LOW = 0  # Background tasks
    NORMAL = 1  # Regular tasks
    HIGH = 2  # Critical path tasks
    CRITICAL = 3  # System critical tasks


class TaskState(StrEnum):
    PENDING = "pending"
    DELAYED = "delayed"  # waiting for a retry backoff or a scheduled time
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"  # final failure when the DLQ is disabled
    DEAD_LETTER = "dead_letter"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in _FINAL_STATES


_FINAL_STATES = frozenset(
    {TaskState.COMPLETED, TaskState.FAILED, TaskState.DEAD_LETTER, TaskState.CANCELLED}
)


def coerce_priority(priority: object) -> int:
    """Accept a TaskPriority, its int value, its name in any case ("high", "HIGH") or its
    value as text ("2"); reject anything else."""
    if isinstance(priority, TaskPriority):
        return int(priority)
    if isinstance(priority, str):
        text = priority.strip()
        if text.isdigit() and len(text) == 1 and int(text) <= 3:
            return int(text)
        try:
            return int(TaskPriority[text.upper()])
        except KeyError:
            pass
    elif isinstance(priority, int) and not isinstance(priority, bool) and 0 <= priority <= 3:
        return priority
    raise InvalidPriority(
        f"invalid priority {priority!r}: use TaskPriority or 0-3 (LOW, NORMAL, HIGH, CRITICAL)"
    )


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Delay before retry n (1-based): 0 for the first when `first_immediate`, then
    base, base*factor, base*factor**2, ... capped at `cap_seconds`. `jitter` (0-1) shortens
    each delay by a random fraction up to that much, so retries of a burst spread out.
    The default is the seed's schedule: immediate, 2 s, 4 s, then the DLQ (max_retries=3)."""

    first_immediate: bool = True
    base_seconds: float = 2.0
    factor: float = 2.0
    cap_seconds: float = 300.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.base_seconds < 0 or self.factor < 1 or self.cap_seconds < 0:
            raise ValueError("retry policy needs base_seconds >= 0, factor >= 1, cap_seconds >= 0")
        if not 0 <= self.jitter < 1:
            raise ValueError("retry policy jitter must be in [0, 1)")

    def delay(self, retry: int) -> float:
        """Seconds before retry number `retry` (1-based), computed in Python for
        in-process queues; fail.lua computes the same in Redis."""
        if retry <= 1 and self.first_immediate:
            return 0.0
        steps = retry - 2 if self.first_immediate else retry - 1
        raw = min(self.cap_seconds, self.base_seconds * self.factor ** max(0, steps))
        return raw * self.jitter_multiplier()

    def jitter_multiplier(self) -> float:
        """A fresh multiplier in (1 - jitter, 1] for one retry's delay."""
        return 1.0 - self.jitter * random.random() if self.jitter else 1.0


@dataclass(slots=True)
class RedisTask:
    """A task and its whole lifecycle, as stored in Redis. Timestamps are naive ISO
    strings in the local time zone, taken from the Redis server's clock."""

    task_id: str  # Unique identifier
    task_type: str  # dev, qa, fix, deploy
    payload: dict[str, Any]  # Task data
    priority: int  # 0-3 (LOW to CRITICAL)
    state: str  # pending, processing, completed, failed, dead_letter (+ delayed, cancelled)
    retry_count: int = 0  # Current retry attempt
    max_retries: int = 3  # Maximum retry attempts
    created_at: str = ""  # ISO timestamp
    started_at: str | None = None  # When worker started processing
    completed_at: str | None = None  # When task completed (or finally failed)
    worker_id: str | None = None  # Worker processing the task
    error: str | None = None  # Error message if failed
    result: Any = None  # Handler's result, once completed
    attempts: int = 0  # Times the task was handed to a worker
    lease_token: int | None = None  # Fencing token of the current lease
    lease_losses: int = 0  # Times a worker lost the lease (died or stalled)
    cancel_requested: bool = False
    timeout: float | None = None  # Execution timeout for this task (seconds), if set
    meta: dict[str, str] = field(default_factory=dict)  # e.g. trace context
    limits: list[str] = field(default_factory=list)  # limit keys it listed (its type's applies too)
    cost_tokens: int | None = None  # tokens it expects to use, reserved from token limits
    group: str | None = None  # fairness group: groups take turns within a priority
    # Claim-check: "payload"/"result" stored in a key of its own -> its JSON size in bytes
    # (keys.QueueKeys.blob). A task read without its blobs (a listing) has payload {}.
    blobs: dict[str, int] = field(default_factory=dict)
    progress: float | None = None  # what its handler last reported (ctx.progress), 0..1
    progress_message: str | None = None  # and what it said it was doing

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Settlement:
    """How a claimed task ended, for RedisTaskQueue.settle_many: `error` None means it
    completed with `result`; otherwise it failed, retried per `retry` / `delay`. With
    `pause` (seconds) its handler was rate limited: the task goes back to pending without
    counting the attempt, and `pause_limits` (none: every limit it is bound by) admit
    nothing for that long, fleet-wide."""

    task_id: str
    lease_token: int | None
    result: Any = None
    error: str | None = None
    retry: bool = True
    delay: float | None = None
    meta: Mapping[str, str] | None = None  # the task's meta: its settle span joins its trace
    tokens_used: int | None = None  # what the handler reported: token limits reconcile to it
    pause: float | None = None
    pause_limits: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ClaimBatch:
    """Tasks one claim call handed out, and how long an idle caller may block before a
    delayed task comes due or a lease expires (None: nothing is scheduled)."""

    tasks: list[RedisTask]
    wait_hint: float | None
    task_types: list[str] = field(default_factory=list)  # the types the claim considered
    head: int | None = None  # best pending score left in the partition, when asked for
    held_back: dict[str, int] = field(default_factory=dict)  # limit key -> tasks it held back

    def wait_limit(self, seconds: float) -> float:
        return seconds if self.wait_hint is None else min(seconds, self.wait_hint)


@dataclass(frozen=True, slots=True)
class MinuteCounts:
    """What one minute of a queue counted (server time; every partition summed): tasks
    created, completed, failed for good, retried, dead-lettered and cancelled. `minute`
    is the minute's start in epoch seconds."""

    minute: int
    enqueued: int = 0
    completed: int = 0
    failed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    cancelled: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One attempt of a task that ended in an error (a failure, a timeout, a lost lease):
    its number (1 = the first run), the error as stored, when it ended (naive ISO, server
    clock, like RedisTask's timestamps), the worker that ran it and the tokens its handler
    reported spending before it failed (TaskContext.report_tokens)."""

    attempt: int
    error: str
    at: str | None
    worker_id: str | None
    tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
