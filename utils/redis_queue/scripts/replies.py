"""Script replies parsed into typed values, and the one place an error reply becomes an
exception."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NoReturn

from .. import codec
from ..errors import (
    CorruptQueue,
    LeaseLost,
    QueueError,
    ServedTypesUnknown,
    TaskNotFound,
    TaskNotProcessing,
    TaskStateError,
)
from ..models import TaskPriority, TaskState
from ..snapshot import QueueSnapshot
from .contract import BACKED_OFF, CancelOutcome, Code, FailOutcome

# Pending scores (lua/include/common.lua): a task of priority p scores in
# [-p * BAND, (1 - p) * BAND), so each priority is one score band of its type's set.
PENDING_BAND = 10**15


def pending_band(priority: int) -> tuple[int, int]:
    """The [low, high) score range of one priority in a pending set."""
    return -priority * PENDING_BAND, (1 - priority) * PENDING_BAND


def enqueue_reply(reply: list[Any]) -> tuple[int, list[Any]]:
    """(now_ms, per task: 1 created, or the existing task's flat HGETALL)."""
    return int(reply[0]), reply[1:]


def fail_state(reply: list[Any]) -> TaskState:
    """A fail reply's outcome as the task's new state."""
    outcome = FailOutcome(int(reply[0]))
    if outcome is FailOutcome.RETRIED:
        return TaskState.PENDING if int(reply[1]) <= 0 else TaskState.DELAYED
    return {
        FailOutcome.DEAD_LETTERED: TaskState.DEAD_LETTER,
        FailOutcome.FAILED: TaskState.FAILED,
        FailOutcome.CANCELLED: TaskState.CANCELLED,
    }[outcome]


def settle_state(reply: list[Any], task_id: str) -> TaskState | QueueError:
    """One settle_many item's reply: the new state, or the error that refused it."""
    if int(reply[0]) < 0:
        try:
            raise_for_code(reply, task_id, "settle")
        except QueueError as exc:
            return exc
    if len(reply) == 2 and int(reply[0]) == 0:  # complete: {0, now_ms}
        return TaskState.COMPLETED
    if int(reply[0]) == BACKED_OFF:
        return TaskState.PENDING
    return fail_state(reply)


@dataclass(frozen=True, slots=True)
class ClaimedRow:
    task_id: str
    token: int
    flat: list[Any]  # HGETALL: before the claim wrote it when `attempt` is set, else after
    attempt: bytes | None  # a fresh claim's attempt number; None: a replayed claim

    def fields(self, worker_id: str, now_ms: int) -> dict[str, str]:
        """The task's fields as the claim left them (claim.lua writes state, worker,
        started, lease and attempts, and does not send them back)."""
        fields = codec.text_fields(self.flat)
        if self.attempt is not None:
            fields["state"] = "processing"
            fields["worker"] = worker_id
            fields["started"] = str(now_ms)
            fields["lease"] = str(self.token)
            fields["attempts"] = self.attempt.decode()
        return fields


@dataclass(frozen=True, slots=True)
class ClaimReply:
    now_ms: int
    next_event_ms: int  # earliest delayed due time or lease deadline; -1 = none
    served: list[str]  # the task types the claim considered
    rows: list[ClaimedRow]
    head: int | None = None  # best pending score left (when asked for); None = none left
    held_back: dict[str, int] | None = None  # limit key -> tasks it held back


def claim_reply(reply: list[Any]) -> ClaimReply:
    rows = [
        ClaimedRow(row[0].decode(), int(row[1]), row[2], None if len(row) < 4 else row[3])
        for row in reply[5:]
    ]
    served = [codec.as_text(t) for t in reply[2]]
    head = int(reply[3]) if reply[3] else None
    flat = reply[4]
    held = {codec.as_text(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}
    return ClaimReply(int(reply[0]), int(reply[1]), served, rows, head, held or None)


@dataclass(frozen=True, slots=True)
class PermitReply:
    retry_in_ms: int | None  # when a limit that held a task back admits again (None: unknown)
    held_back: dict[str, int]
    held: list[str | None]  # per task: the limit keys it holds, or None when not admitted


def permit_reply(reply: list[Any]) -> PermitReply:
    flat = reply[0]
    held_back = {codec.as_text(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}
    held = [None if isinstance(r, int) else codec.as_text(r) for r in reply[2:]]
    retry = int(reply[1])
    return PermitReply(None if retry < 0 else retry, held_back, held)  # ms from now


def cancel_outcome(reply: list[Any]) -> CancelOutcome:
    return CancelOutcome(int(reply[0]))


def sizes_reply(reply: list[Any]) -> QueueSnapshot:
    """sizes' {processing, delayed, completed, failed, cancelled, dlq, per type, stats}."""
    processing, delayed, completed, failed, cancelled, dlq = (int(v) for v in reply[:6])
    by_priority = {p.name.lower(): 0 for p in TaskPriority}
    by_type: dict[str, int] = {}
    per_type = reply[6]  # type, pending, then one count per priority, LOW first
    for i in range(0, len(per_type), 6):
        by_type[codec.as_text(per_type[i])] = int(per_type[i + 1])
        for p in TaskPriority:
            by_priority[p.name.lower()] += int(per_type[i + 2 + p.value])
    counters = {key: int(value) for key, value in codec.text_fields(reply[7]).items()}
    sizes = {
        "pending": sum(by_type.values()),
        "delayed": delayed,
        "processing": processing,
        "completed": completed,
        "failed": failed,
        "cancelled": cancelled,
        "dlq": dlq,
    }
    return QueueSnapshot(sizes, by_priority, by_type, counters)


def extend_cancel_requested(reply: list[Any]) -> bool:
    """extend's reply {0, deadline_ms, cancel}: whether a cancel was requested."""
    return int(reply[2]) == 1


def removed_count(reply: list[Any]) -> int:
    """clear_finished's and purge_dlq's {removed}."""
    return int(reply[0])


def raise_for_code(reply: list[Any], task_id: str, action: str) -> NoReturn:
    """The one place a script's error reply becomes an exception."""
    code = int(reply[0])
    detail = [codec.as_text(v) for v in reply[1:]]
    state = detail[0] if detail else ""
    if code == Code.NOT_FOUND:
        raise TaskNotFound(task_id)
    if code == Code.NOT_PROCESSING:
        message = f"cannot {action} task {task_id!r}: it is {state or 'gone'}, not processing"
        raise TaskNotProcessing(task_id, state, message)
    if code == Code.LEASE_LOST:
        raise LeaseLost(
            task_id,
            state,
            f"cannot {action} task {task_id!r}: its lease was lost "
            f"(state {state or 'unknown'}, current lease {detail[1] if len(detail) > 1 else '-'})",
        )
    if code == Code.BAD_STATE:
        raise TaskStateError(task_id, state, f"cannot {action} task {task_id!r} in state {state!r}")
    if code == Code.WRONGTYPE:
        raise CorruptQueue(f"key {detail[0]!r} holds a {detail[1]}, not what the queue expects")
    if code == Code.SERVED_UNKNOWN:
        raise ServedTypesUnknown(f"{action}: the served task types {detail[0]!r} are not in Redis")
    if code == Code.BAD_ARGUMENT:
        raise QueueError(f"{action} refused a malformed argument {detail[0]}={detail[1]!r}")
    raise QueueError(f"unexpected reply {reply!r} to {action} of {task_id!r}")
